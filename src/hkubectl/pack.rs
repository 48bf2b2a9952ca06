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
use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// Always left out: version control and the usual caches, as hkubectl's template ignores them.
const ALWAYS_IGNORED: &[&str] = &[".git/", "node_modules/", "__pycache__/", "*.pyc"];

/// `.hkubeignore`'s rules, matched as git matches `.gitignore` (the `ignore` crate's matcher):
/// the last matching rule decides, `!` re-includes, a trailing `/` matches folders only, and a
/// slash before the end anchors a pattern to the folder's top.
#[derive(Debug)]
pub struct Ignore {
    matcher: Gitignore,
}

impl Ignore {
    /// The rules always applied, then `text`'s; `source` names where `text` comes from.
    pub fn parse(source: &str, text: &str) -> anyhow::Result<Ignore> {
        let mut builder = GitignoreBuilder::new("");
        for rule in ALWAYS_IGNORED {
            builder.add_line(None, rule)?;
        }
        for (number, line) in text.lines().enumerate() {
            builder
                .add_line(None, line)
                .with_context(|| format!("{source} line {}: {line}", number + 1))?;
        }
        let matcher = builder
            .build()
            .with_context(|| format!("reading the rules of {source}"))?;
        Ok(Ignore { matcher })
    }

    /// Whether `relative` (slash-separated, from the folder's top) is left out.
    pub fn ignores(&self, relative: &str, is_dir: bool) -> bool {
        self.matcher.matched(relative, is_dir).is_ignore()
    }
}

/// The folder as a tar.gz in memory, and the paths it holds.
pub fn pack(folder: &Path) -> anyhow::Result<(Vec<u8>, Vec<String>)> {
    let ignore_file = folder.join(".hkubeignore");
    let rules = if ignore_file.is_file() {
        std::fs::read_to_string(&ignore_file)
            .with_context(|| format!("reading {}", ignore_file.display()))?
    } else {
        String::new()
    };
    let ignore = Ignore::parse(&ignore_file.display().to_string(), &rules)?;
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
        let ignore = Ignore::parse(".hkubeignore", rules).unwrap();
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
                ("# comment", false, false),
            ],
        );
        // A trailing slash: folders only, at any depth.
        check(
            "build/\n",
            &[
                ("build", true, true),
                ("src/build", true, true),
                ("build", false, false),
            ],
        );
        // A slash at the start or in the middle anchors to the top.
        check(
            "/data\ndocs/*.md\n",
            &[
                ("data", true, true),
                ("x/data", true, false),
                ("docs/a.md", false, true),
                ("docs/deeper/a.md", false, false),
                ("x/docs/a.md", false, false),
            ],
        );
        // Negation: the last matching rule wins.
        check(
            "*.csv\n!keep.csv\n",
            &[("a.csv", false, true), ("keep.csv", false, false)],
        );
        check("!keep.csv\n*.csv\n", &[("keep.csv", false, true)]);
        check(
            "models/*\n!models/small.bin\n",
            &[
                ("models/big.bin", false, true),
                ("models/small.bin", false, false),
            ],
        );
        check(
            "a/**/z\nfile?.[ch]\n**/cache\nlogs/**\n",
            &[
                ("a/z", false, true),
                ("a/b/c/z", false, true),
                ("b/z", false, false),
                ("file1.c", false, true),
                ("file1.o", false, false),
                ("deep/down/cache", true, true),
                ("logs/x/y.txt", false, true),
            ],
        );
        // An escaped `!` or `#` is a name, trailing spaces are not.
        check(
            "\\!important\n\\#hash\nspaced   \n",
            &[
                ("!important", false, true),
                ("#hash", false, true),
                ("spaced", false, true),
            ],
        );
    }

    #[test]
    fn a_bad_rule_names_the_file_and_line() {
        let error = Ignore::parse("/code/.hkubeignore", "ok\n[z-a\n").unwrap_err();
        let text = format!("{error:#}");
        assert!(text.contains("/code/.hkubeignore line 2: [z-a"), "{text}");
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
