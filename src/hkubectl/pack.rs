//! An algorithm's code folder as the archive `algorithm apply` uploads: a tar.gz of the
//! folder's files, paths relative to it, leaving out what `.hkubeignore` names (hkubectl's
//! file, gitignore's syntax).
//!
//! Symbolic links are archived as links, never followed, so nothing outside the folder is
//! read.

use std::path::{Path, PathBuf};

use anyhow::Context;
use flate2::write::GzEncoder;
use flate2::Compression;

/// Always left out: version control and the usual caches, as hkubectl's template ignores them.
const ALWAYS_IGNORED: &[&str] = &[".git/", "node_modules/", "__pycache__/", "*.pyc"];

/// gitignore-style rules, in order; the last matching rule decides.
#[derive(Debug, Default)]
pub struct Ignore {
    rules: Vec<Rule>,
}

#[derive(Debug)]
struct Rule {
    /// Path segments of the pattern (`**` matches any number of segments); a pattern with
    /// no slash before its end starts with `**`, so it matches at any depth.
    segments: Vec<String>,
    directory_only: bool,
    negated: bool,
}

impl Ignore {
    pub fn parse(text: &str) -> Ignore {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negated, line) = match line.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let directory_only = line.ends_with('/');
            let pattern = line.trim_end_matches('/');
            let anchored =
                pattern.trim_start_matches('/').contains('/') || pattern.starts_with('/');
            let pattern = pattern.trim_start_matches('/');
            if pattern.is_empty() {
                continue;
            }
            let mut segments: Vec<String> = pattern.split('/').map(str::to_string).collect();
            if !anchored {
                segments.insert(0, "**".to_string());
            }
            rules.push(Rule {
                segments,
                directory_only,
                negated,
            });
        }
        Ignore { rules }
    }

    /// Whether `relative` (slash-separated, from the folder's top) is left out.
    pub fn ignores(&self, relative: &str, is_dir: bool) -> bool {
        let path: Vec<&str> = relative.split('/').filter(|s| !s.is_empty()).collect();
        let mut ignored = false;
        for rule in &self.rules {
            if rule.directory_only && !is_dir {
                continue;
            }
            if segments_match(&rule.segments, &path) {
                ignored = !rule.negated;
            }
        }
        ignored
    }
}

fn segments_match(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| segments_match(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((segment, path_rest)) => {
                glob(first.as_bytes(), segment.as_bytes()) && segments_match(rest, path_rest)
            }
            None => false,
        },
    }
}

/// `*`, `?` and `[…]` within one path segment.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((b'[', rest)) => {
            let Some(close) = rest.iter().position(|&c| c == b']') else {
                return text.first() == Some(&b'[') && glob(rest, &text[1..]);
            };
            let Some((&c, text_rest)) = text.split_first() else {
                return false;
            };
            let (negate, class) = match rest[..close].split_first() {
                Some((b'!' | b'^', class)) => (true, class),
                _ => (false, &rest[..close]),
            };
            let mut found = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    found |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    found |= class[i] == c;
                    i += 1;
                }
            }
            found != negate && glob(&rest[close + 1..], text_rest)
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            text.first() == Some(&rest[0]) && glob(&rest[1..], &text[1..])
        }
        Some((&c, rest)) => text.first() == Some(&c) && glob(rest, &text[1..]),
    }
}

/// The folder as a tar.gz in memory, and the paths it holds.
pub fn pack(folder: &Path) -> anyhow::Result<(Vec<u8>, Vec<String>)> {
    let mut rules = ALWAYS_IGNORED.join("\n");
    let ignore_file = folder.join(".hkubeignore");
    if ignore_file.is_file() {
        rules.push('\n');
        rules.push_str(
            &std::fs::read_to_string(&ignore_file)
                .with_context(|| format!("reading {}", ignore_file.display()))?,
        );
    }
    let ignore = Ignore::parse(&rules);
    let mut files = Vec::new();
    collect(folder, folder, &ignore, &mut files)?;
    files.sort();
    let mut archive = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    archive.follow_symlinks(false);
    let mut names = Vec::new();
    for file in files {
        let relative = relative_name(folder, &file);
        archive
            .append_path_with_name(&file, &relative)
            .with_context(|| format!("archiving {}", file.display()))?;
        names.push(relative);
    }
    let bytes = archive
        .into_inner()
        .and_then(GzEncoder::finish)
        .context("compressing the code")?;
    Ok((bytes, names))
}

fn relative_name(folder: &Path, file: &Path) -> String {
    file.strip_prefix(folder)
        .unwrap_or(file)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn collect(
    root: &Path,
    dir: &Path,
    ignore: &Ignore,
    files: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .with_context(|| format!("reading {}", path.display()))?;
        let relative = relative_name(root, &path);
        if ignore.ignores(&relative, kind.is_dir()) {
            continue;
        }
        if kind.is_dir() {
            collect(root, &path, ignore, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn check(rules: &str, cases: &[(&str, bool, bool)]) {
        let ignore = Ignore::parse(rules);
        for &(path, is_dir, expected) in cases {
            assert_eq!(
                ignore.ignores(path, is_dir),
                expected,
                "{rules:?} on {path} (dir: {is_dir})"
            );
        }
    }

    #[test]
    fn gitignore_rules() {
        check(
            "# comment\n*.log\n",
            &[
                ("a.log", false, true),
                ("deep/b.log", false, true),
                ("a.txt", false, false),
            ],
        );
        check(
            "build/\n",
            &[
                ("build", true, true),
                ("src/build", true, true),
                ("build", false, false),
            ],
        );
        check(
            "/data\ndocs/*.md\n",
            &[
                ("data", true, true),
                ("x/data", true, false),
                ("docs/a.md", false, true),
                ("x/docs/a.md", false, false),
            ],
        );
        check(
            "*.csv\n!keep.csv\n",
            &[("a.csv", false, true), ("keep.csv", false, false)],
        );
        check(
            "a/**/z\nfile?.[ch]\n",
            &[
                ("a/z", false, true),
                ("a/b/c/z", false, true),
                ("b/z", false, false),
                ("file1.c", false, true),
                ("file1.o", false, false),
            ],
        );
    }

    #[test]
    fn packs_the_folder_minus_what_is_ignored() {
        let dir = std::env::temp_dir().join(format!("hkube-pack-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("src/__pycache__")).unwrap();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("main.py"), "print(1)\n").unwrap();
        std::fs::write(dir.join("src/util.py"), "x = 1\n").unwrap();
        std::fs::write(dir.join("src/__pycache__/util.pyc"), "").unwrap();
        std::fs::write(dir.join("data/big.bin"), "0000").unwrap();
        std::fs::write(dir.join(".hkubeignore"), "data/\n").unwrap();
        let (bytes, names) = pack(&dir).unwrap();
        assert_eq!(names, [".hkubeignore", "main.py", "src/util.py"]);
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let mut found = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            found.push((name, text));
        }
        assert_eq!(found[1], ("main.py".to_string(), "print(1)\n".to_string()));
        assert_eq!(found.len(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
