//! Which language an upload is and where its entry point is, decided from the descriptor and
//! the list of files (pure: no IO; the caller lists the files).
//!
//! HKube requires `env` and never checks the entry point: a typo builds an image whose every
//! task fails. Here `env` is detected when absent (python from `requirements.txt` or `*.py`,
//! nodejs from `package.json` or `*.js`, java from `pom.xml` or `*.java`), and a missing entry
//! point fails the build with the candidates that do exist.

use std::fmt;

/// The languages a build can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Env {
    Python,
    Nodejs,
    Java,
    /// A WebAssembly module (a WASI command), run in process by hkube; not one of HKube's envs.
    Wasm,
}

impl Env {
    /// The languages that run behind a wrapper, each with a base image and a manifest. A wasm
    /// module has neither: it is chosen by `env: wasm` or by code holding only `.wasm` files.
    pub const ALL: [Env; 3] = [Env::Python, Env::Nodejs, Env::Java];

    pub fn parse(text: &str) -> Option<Env> {
        match text {
            "python" => Some(Env::Python),
            "nodejs" => Some(Env::Nodejs),
            "java" => Some(Env::Java),
            "wasm" => Some(Env::Wasm),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Env::Python => "python",
            Env::Nodejs => "nodejs",
            Env::Java => "java",
            Env::Wasm => "wasm",
        }
    }

    /// HKube's default entry point (Java has none: it names a class).
    pub fn default_entry_point(self) -> Option<&'static str> {
        match self {
            Env::Python => Some("main.py"),
            Env::Nodejs => Some("index.js"),
            Env::Java | Env::Wasm => None,
        }
    }

    /// The dependency manifests a standard install reads.
    pub fn manifests(self) -> &'static [&'static str] {
        match self {
            Env::Python => &["requirements.txt"],
            Env::Nodejs => &["package.json", "package-lock.json"],
            Env::Java => &["pom.xml"],
            Env::Wasm => &[],
        }
    }
}

impl fmt::Display for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("env {0:?} is not supported: use python, nodejs, java or wasm")]
    Unsupported(String),
    #[error("cannot tell the algorithm's language: the code has no requirements.txt, package.json, pom.xml, *.py, *.js or *.java file; set env to python, nodejs or java")]
    Undetected,
    #[error("cannot tell the algorithm's language: the code has {0}; set env to one of them")]
    Ambiguous(String),
    #[error("entry point {entry} not found in the code; {candidates}")]
    MissingEntryPoint { entry: String, candidates: String },
    #[error("a java algorithm needs an entry point: the fully qualified name of the class implementing the algorithm; {candidates}")]
    NoJavaEntryPoint { candidates: String },
}

/// The descriptor's `env`, or the one the files show. Manifests decide before source files:
/// a Python project with a small `build.js` helper is still Python.
pub fn detect(declared: Option<&str>, files: &[String]) -> Result<Env, Error> {
    if let Some(declared) = declared.filter(|d| !d.is_empty()) {
        return Env::parse(declared).ok_or_else(|| Error::Unsupported(declared.to_string()));
    }
    let top_level = |name: &str| files.iter().any(|f| f == name);
    let by_manifest: Vec<Env> = Env::ALL
        .into_iter()
        .filter(|env| top_level(env.manifests()[0]))
        .collect();
    let found = if by_manifest.is_empty() {
        Env::ALL
            .into_iter()
            .filter(|env| files.iter().any(|f| f.ends_with(source_suffix(*env))))
            .collect()
    } else {
        by_manifest
    };
    match found.as_slice() {
        [] if files.iter().any(|f| f.ends_with(".wasm")) => Ok(Env::Wasm),
        [] => Err(Error::Undetected),
        [one] => Ok(*one),
        many => Err(Error::Ambiguous(
            many.iter()
                .map(|env| format!("{env} files"))
                .collect::<Vec<_>>()
                .join(" and "),
        )),
    }
}

fn source_suffix(env: Env) -> &'static str {
    match env {
        Env::Python => ".py",
        Env::Nodejs => ".js",
        Env::Java => ".java",
        Env::Wasm => ".wasm",
    }
}

/// Checks the entry point against the files and returns it as the runtime wants it: a file
/// path for python and nodejs (`main` means `main.py`), a class name for java. `files` are
/// relative paths with `/` separators.
pub fn entry_point(env: Env, given: Option<&str>, files: &[String]) -> Result<String, Error> {
    let given = given.map(str::trim).filter(|g| !g.is_empty());
    match env {
        Env::Java => java_entry_point(given, files),
        Env::Wasm => wasm_entry_point(given, files),
        Env::Python | Env::Nodejs => {
            let suffix = source_suffix(env);
            let entry = given
                .or(env.default_entry_point())
                .unwrap_or_default()
                .trim_start_matches("./")
                .to_string();
            let with_suffix = if entry.ends_with(suffix) {
                entry.clone()
            } else {
                format!("{entry}{suffix}")
            };
            for candidate in [&entry, &with_suffix] {
                if files.iter().any(|f| f == candidate) {
                    return Ok(candidate.clone());
                }
            }
            Err(Error::MissingEntryPoint {
                entry,
                candidates: candidates_text(files, suffix),
            })
        }
    }
}

/// The module: the one given, or the only `.wasm` file at the top of the code.
fn wasm_entry_point(given: Option<&str>, files: &[String]) -> Result<String, Error> {
    let modules: Vec<&String> = files.iter().filter(|f| f.ends_with(".wasm")).collect();
    let entry = match given {
        Some(given) => given.trim_start_matches("./").to_string(),
        None => match modules.as_slice() {
            [only] if !only.contains('/') => return Ok(only.to_string()),
            _ => {
                return Err(Error::MissingEntryPoint {
                    entry: "(none given)".into(),
                    candidates: format!(
                        "name the module in entryPoint; {}",
                        candidates_text(files, ".wasm")
                    ),
                })
            }
        },
    };
    if files.contains(&entry) {
        return Ok(entry);
    }
    let with_suffix = format!("{entry}.wasm");
    if files.contains(&with_suffix) {
        return Ok(with_suffix);
    }
    Err(Error::MissingEntryPoint {
        entry,
        candidates: candidates_text(files, ".wasm"),
    })
}

fn java_entry_point(given: Option<&str>, files: &[String]) -> Result<String, Error> {
    let has_pom = files.iter().any(|f| f == "pom.xml");
    let Some(class) = given else {
        return Err(Error::NoJavaEntryPoint {
            candidates: java_candidates(files),
        });
    };
    // With a pom the sources may live anywhere Maven is told; without one they are compiled
    // from the tree, so `a.b.C` must be some `…a/b/C.java`.
    let path = format!("{}.java", class.replace('.', "/"));
    let found = files
        .iter()
        .any(|f| f == &path || f.ends_with(&format!("/{path}")));
    if found || has_pom {
        Ok(class.to_string())
    } else {
        Err(Error::MissingEntryPoint {
            entry: class.to_string(),
            candidates: java_candidates(files),
        })
    }
}

fn java_candidates(files: &[String]) -> String {
    let classes: Vec<String> = files
        .iter()
        .filter_map(|f| f.strip_suffix(".java"))
        .map(|f| {
            let f = f
                .strip_prefix("src/main/java/")
                .unwrap_or(f)
                .trim_start_matches('/');
            f.replace('/', ".")
        })
        .collect();
    if classes.is_empty() {
        "the code has no .java file".to_string()
    } else {
        format!("classes in the code: {}", shortlist(&classes))
    }
}

fn candidates_text(files: &[String], suffix: &str) -> String {
    let matching: Vec<String> = files
        .iter()
        .filter(|f| f.ends_with(suffix))
        .cloned()
        .collect();
    if matching.is_empty() {
        format!("the code has no {suffix} file")
    } else {
        format!("{suffix} files in the code: {}", shortlist(&matching))
    }
}

/// At most ten names, shortest paths first (top-level files are the likely entry points).
fn shortlist(names: &[String]) -> String {
    let mut names = names.to_vec();
    names.sort_by_key(|n| (n.matches('/').count(), n.clone()));
    let more = names.len().saturating_sub(10);
    names.truncate(10);
    let mut text = names.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

/// Where the code is inside the unpacked folder: archives made of one top-level folder (what
/// `tar czf alg.tgz alg/` or GitHub's zip download give) are entered, so the entry point is
/// found without the folder's name. Returns the folder's name, if any.
pub fn single_top_folder(files: &[String]) -> Option<String> {
    let mut tops = files
        .iter()
        .map(|f| f.split('/').next().unwrap_or_default());
    let first = tops.next()?;
    let nested = files.iter().all(|f| f.contains('/'));
    (nested && tops.all(|t| t == first)).then(|| first.to_string())
}

/// Where the code is and how it runs: decided at the archive's root, or inside its one
/// top-level folder when the root does not hold the entry point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The folder inside the archive the code is in (`None`: the root).
    pub folder: Option<String>,
    pub env: Env,
    pub entry_point: String,
}

pub fn locate(
    declared: Option<&str>,
    entry: Option<&str>,
    files: &[String],
) -> Result<Located, Error> {
    let decide = |files: &[String]| {
        let env = detect(declared, files)?;
        Ok::<_, Error>((env, entry_point(env, entry, files)?))
    };
    let root_error = match decide(files) {
        Ok((env, entry_point)) => {
            return Ok(Located {
                folder: None,
                env,
                entry_point,
            })
        }
        Err(error) => error,
    };
    let Some(top) = single_top_folder(files) else {
        return Err(root_error);
    };
    let prefix = format!("{top}/");
    let inside: Vec<String> = files
        .iter()
        .filter_map(|f| f.strip_prefix(&prefix).map(str::to_string))
        .collect();
    let (env, entry_point) = decide(&inside)?;
    Ok(Located {
        folder: Some(top),
        env,
        entry_point,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn detects_by_manifest_then_by_source() {
        let check = |list: &[&str], expected: Result<Env, Error>| {
            assert_eq!(detect(None, &files(list)), expected, "{list:?}");
        };
        check(&["main.py", "requirements.txt"], Ok(Env::Python));
        check(&["index.js", "package.json", "tools/x.py"], Ok(Env::Nodejs));
        check(&["pom.xml", "src/main/java/a/B.java"], Ok(Env::Java));
        check(&["a/b.py"], Ok(Env::Python));
        check(&["README.md"], Err(Error::Undetected));
        assert!(matches!(
            detect(None, &files(&["a.py", "b.js"])),
            Err(Error::Ambiguous(_))
        ));
        assert_eq!(detect(Some("java"), &files(&["a.py"])), Ok(Env::Java));
        assert_eq!(
            detect(Some("go"), &[]),
            Err(Error::Unsupported("go".into()))
        );
    }

    #[test]
    fn entry_points_are_checked_and_completed() {
        let code = files(&["main.py", "lib/util.py", "requirements.txt"]);
        assert_eq!(entry_point(Env::Python, None, &code).unwrap(), "main.py");
        assert_eq!(
            entry_point(Env::Python, Some("main"), &code).unwrap(),
            "main.py"
        );
        let error = entry_point(Env::Python, Some("app.py"), &code).unwrap_err();
        assert_eq!(
            error.to_string(),
            "entry point app.py not found in the code; .py files in the code: main.py, lib/util.py"
        );
        let java = files(&["example/Multiply.java"]);
        assert_eq!(
            entry_point(Env::Java, Some("example.Multiply"), &java).unwrap(),
            "example.Multiply"
        );
        assert_eq!(
            entry_point(Env::Java, Some("example.Add"), &java)
                .unwrap_err()
                .to_string(),
            "entry point example.Add not found in the code; classes in the code: example.Multiply"
        );
    }

    #[test]
    fn wasm_is_declared_or_the_only_kind_of_code() {
        assert_eq!(detect(None, &files(&["multiply.wasm"])), Ok(Env::Wasm));
        assert_eq!(
            detect(None, &files(&["multiply.wasm", "README.md"])),
            Ok(Env::Wasm)
        );
        // A Python project shipping a module as data stays Python.
        assert_eq!(
            detect(None, &files(&["main.py", "lib.wasm"])),
            Ok(Env::Python)
        );
        assert_eq!(detect(Some("wasm"), &[]), Ok(Env::Wasm));
        let code = files(&["multiply.wasm", "src/main.rs"]);
        assert_eq!(
            entry_point(Env::Wasm, None, &code).unwrap(),
            "multiply.wasm"
        );
        assert_eq!(
            entry_point(Env::Wasm, Some("multiply"), &code).unwrap(),
            "multiply.wasm"
        );
        assert_eq!(
            entry_point(Env::Wasm, Some("add.wasm"), &code)
                .unwrap_err()
                .to_string(),
            "entry point add.wasm not found in the code; .wasm files in the code: multiply.wasm"
        );
        let two = files(&["a.wasm", "b.wasm"]);
        assert_eq!(
            entry_point(Env::Wasm, None, &two).unwrap_err().to_string(),
            "entry point (none given) not found in the code; name the module in entryPoint; .wasm files in the code: a.wasm, b.wasm"
        );
    }

    #[test]
    fn code_in_one_top_folder_is_found() {
        let located = locate(Some("python"), None, &files(&["alg/main.py"])).unwrap();
        assert_eq!(located.folder.as_deref(), Some("alg"));
        assert_eq!(located.entry_point, "main.py");
        let at_root = locate(None, None, &files(&["main.py", "requirements.txt"])).unwrap();
        assert_eq!(at_root.folder, None);
        assert_eq!(at_root.env, Env::Python);
    }

    #[test]
    fn a_single_top_folder_is_entered() {
        assert_eq!(
            single_top_folder(&files(&["alg/main.py", "alg/x/y.py"])),
            Some("alg".into())
        );
        assert_eq!(single_top_folder(&files(&["alg/main.py", "b.py"])), None);
        assert_eq!(single_top_folder(&[]), None);
    }
}
