//! pyenv's choice of interpreter, made without running its shim.
//!
//! With pyenv, `python3` on PATH is a bash script (a "shim") that runs `pyenv exec`, which
//! reads version files and then execs the real interpreter. On this project's machines that
//! costs about 100 ms of bash per start, more than the interpreter's own start, and every
//! worker of a Python algorithm paid it. pyenv documents how it chooses (`pyenv help
//! version-name`): `PYENV_VERSION`, else the first `.python-version` from the working folder
//! up, else `$PYENV_ROOT/version`. When that choice is one plain version installed under
//! `$PYENV_ROOT/versions`, the worker starts that interpreter directly, with its `bin` first
//! on PATH as `pyenv exec` does. In any other case (several versions, `system`, a prefix
//! such as `3.11`, a missing install) the shim runs as before: it is slower, never wrong.

use std::path::{Path, PathBuf};

/// The interpreter the pyenv shim for `program` would run in `cwd`, with the folder to put
/// first on PATH; `None` when `program` is not a pyenv shim on PATH or pyenv's choice is not
/// one plain installed version.
pub fn resolve(program: &str, cwd: &Path) -> Option<(PathBuf, PathBuf)> {
    let env = Env {
        path: std::env::var_os("PATH")?,
        version: std::env::var("PYENV_VERSION").ok(),
        dir: std::env::var_os("PYENV_DIR").map(PathBuf::from),
    };
    resolve_in(program, cwd, &env)
}

/// The variables pyenv's choice reads.
struct Env {
    path: std::ffi::OsString,
    version: Option<String>,
    dir: Option<PathBuf>,
}

fn resolve_in(program: &str, cwd: &Path, env: &Env) -> Option<(PathBuf, PathBuf)> {
    if program.contains('/') {
        return None;
    }
    let found = std::env::split_paths(&env.path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())?;
    let shims = found.parent()?;
    if shims.file_name()? != "shims" {
        return None;
    }
    let root = shims.parent()?;
    if !root.join("versions").is_dir() || !is_shim(&found) {
        return None;
    }
    let text = match &env.version {
        Some(named) if !named.trim().is_empty() => named.clone(),
        _ => {
            let start = env.dir.as_deref().unwrap_or(cwd);
            let file = start
                .ancestors()
                .map(|dir| dir.join(".python-version"))
                .find(|file| file.is_file())
                .unwrap_or_else(|| root.join("version"));
            std::fs::read_to_string(file).ok()?
        }
    };
    let bin = root.join("versions").join(one_version(&text)?).join("bin");
    let interpreter = bin.join(program);
    interpreter.is_file().then_some((interpreter, bin))
}

/// A pyenv shim is a script that runs `pyenv`; anything else named like one is left alone.
fn is_shim(file: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 512];
    let Ok(read) = std::fs::File::open(file).and_then(|mut f| f.read(&mut head)) else {
        return false;
    };
    let head = &head[..read];
    head.starts_with(b"#!") && head.windows(5).any(|w| w == b"pyenv")
}

/// The version a version file or `PYENV_VERSION` names, when it names exactly one plain
/// version: words after the first, comments and blank lines as pyenv reads them; `system`,
/// several versions or a name with a path in it give `None` (the shim decides).
fn one_version(text: &str) -> Option<&str> {
    let mut versions = text
        .lines()
        .flat_map(|line| line.split(':'))
        .filter_map(|entry| entry.split_whitespace().next())
        .filter(|word| !word.starts_with('#'));
    let version = versions.next()?;
    let plain = version != "system" && version != ".." && !version.contains('/');
    (plain && versions.next().is_none()).then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_plain_version_is_chosen_and_anything_else_is_left_to_the_shim() {
        assert_eq!(one_version("3.11.7\n"), Some("3.11.7"));
        assert_eq!(one_version("# pinned\n\n  3.12.1  extra\n"), Some("3.12.1"));
        assert_eq!(one_version("3.11.7:3.10.13"), None);
        assert_eq!(one_version("3.11.7\n3.10.13\n"), None);
        assert_eq!(one_version("system"), None);
        assert_eq!(one_version("../../bin"), None);
        assert_eq!(one_version("\n# nothing\n"), None);
    }

    #[test]
    fn a_pyenv_layout_resolves_to_the_version_its_files_name() {
        let root = tempfile::tempdir().unwrap();
        let shims = root.path().join("shims");
        std::fs::create_dir_all(&shims).unwrap();
        let shim = "#!/usr/bin/env bash\nexec \"/r/libexec/pyenv\" exec \"$program\" \"$@\"\n";
        std::fs::write(shims.join("python3"), shim).unwrap();
        for version in ["3.11.7", "3.12.1"] {
            let bin = root.path().join("versions").join(version).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::write(bin.join("python3"), "").unwrap();
        }
        std::fs::write(root.path().join("version"), "3.11.7\n").unwrap();
        let project = root.path().join("project");
        let code = project.join("algorithm");
        std::fs::create_dir_all(&code).unwrap();
        let env = |version: Option<&str>| Env {
            path: std::env::join_paths(["/nowhere".into(), shims.clone()]).unwrap(),
            version: version.map(str::to_string),
            dir: None,
        };
        let chosen = |version: &str| {
            let bin = root.path().join("versions").join(version).join("bin");
            Some((bin.join("python3"), bin))
        };

        // The global version file.
        assert_eq!(resolve_in("python3", &code, &env(None)), chosen("3.11.7"));
        // A .python-version above the working folder wins over it.
        std::fs::write(project.join(".python-version"), "3.12.1\n").unwrap();
        assert_eq!(resolve_in("python3", &code, &env(None)), chosen("3.12.1"));
        // PYENV_VERSION wins over both.
        assert_eq!(
            resolve_in("python3", &code, &env(Some("3.11.7"))),
            chosen("3.11.7")
        );
        // Anything the shim must decide: not installed, several versions, a path.
        assert_eq!(resolve_in("python3", &code, &env(Some("3.9.1"))), None);
        assert_eq!(
            resolve_in("python3", &code, &env(Some("3.11.7:3.12.1"))),
            None
        );
        assert_eq!(resolve_in("./python3", &code, &env(None)), None);
        // A program that is not a pyenv shim is started as it is.
        std::fs::write(
            shims.join("python3"),
            "#!/bin/sh\nexec /usr/bin/python3 \"$@\"\n",
        )
        .unwrap();
        assert_eq!(resolve_in("python3", &code, &env(None)), None);
    }
}
