//! A project folder: a pipeline with its algorithms beside it, as `hkube run` reads it.
//!
//! The convention: every `algorithm.yml` (or `.yaml`, `.json`) under the folder describes one
//! algorithm in `hkubectl algorithm apply`'s shape (reference §4.4): `name`, `env`,
//! `code.path` (relative to the file, default its folder) and `code.entryPoint`, plus any field
//! of the algorithm descriptor (`minHotWorkers`, `maxWorkers`, `cpu`, `mem`, ...).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::executor::local::{Language, LocalAlgorithm};
use crate::executor::wasm::WasmAlgorithm;
use crate::spec::{self, Algorithm};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {reason}")]
    Algorithm { path: PathBuf, reason: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{first} and {second} both define algorithm {name}")]
    Duplicate {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
}

/// One algorithm found in a project: its descriptor and how to run it locally.
#[derive(Debug, Clone)]
pub struct ProjectAlgorithm {
    pub file: PathBuf,
    pub descriptor: Algorithm,
    pub runner: Runner,
    /// Fields of the file that nothing reads (typos, most often): see
    /// [`spec::algorithm_warnings`].
    pub warnings: Vec<String>,
}

/// Which executor runs a project's algorithm.
#[derive(Debug, Clone)]
pub enum Runner {
    /// A process (python, nodejs, java) behind a sidecar: the local executor's pools.
    Local(LocalAlgorithm),
    /// A WebAssembly module in process: the WASM executor.
    Wasm(WasmAlgorithm),
}

impl ProjectAlgorithm {
    /// The process to run, for an algorithm that is not a wasm module.
    pub fn local(&self) -> Option<&LocalAlgorithm> {
        match &self.runner {
            Runner::Local(local) => Some(local),
            Runner::Wasm(_) => None,
        }
    }
}

/// The names an algorithm file may have.
pub const FILE_NAMES: [&str; 3] = ["algorithm.yml", "algorithm.yaml", "algorithm.json"];

/// Finds every algorithm under `dir`, sorted by name. Hidden folders, `node_modules` and
/// `target` are not searched.
pub fn find_algorithms(dir: &Path) -> Result<Vec<ProjectAlgorithm>, Error> {
    let mut files = Vec::new();
    collect(dir, &mut files, 0)?;
    files.sort();
    let mut found: Vec<ProjectAlgorithm> = Vec::new();
    for file in files {
        let algorithm = read_algorithm(&file)?;
        if let Some(other) = found
            .iter()
            .find(|a| a.descriptor.name == algorithm.descriptor.name)
        {
            return Err(Error::Duplicate {
                name: algorithm.descriptor.name,
                first: other.file.clone(),
                second: file,
            });
        }
        found.push(algorithm);
    }
    found.sort_by(|a, b| a.descriptor.name.cmp(&b.descriptor.name));
    Ok(found)
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>, depth: usize) -> Result<(), Error> {
    if depth > 8 {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if path.is_dir() {
            if !name.starts_with('.') && name != "node_modules" && name != "target" {
                collect(&path, files, depth + 1)?;
            }
        } else if FILE_NAMES.contains(&name.as_str()) {
            files.push(path);
        }
    }
    Ok(())
}

/// Reads one `algorithm.yml`.
pub fn read_algorithm(file: &Path) -> Result<ProjectAlgorithm, Error> {
    let fail = |reason: String| Error::Algorithm {
        path: file.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(file).map_err(|source| Error::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let mut value = spec::read_document(&text).map_err(|e| fail(e.to_string()))?;
    let warnings = spec::algorithm_warnings(&value);
    let Some(map) = value.as_object_mut() else {
        return Err(fail(
            "an algorithm file must hold an object with name, env and code".into(),
        ));
    };
    let code = map.remove("code").unwrap_or(Value::Null);
    let folder = file.parent().unwrap_or(Path::new("."));
    let code_dir = match code.get("path").and_then(Value::as_str) {
        Some(path) => folder.join(path),
        None => folder.to_path_buf(),
    };
    let code_dir = code_dir
        .canonicalize()
        .map_err(|e| fail(format!("code.path {}: {e}", code_dir.display())))?;
    let env = map
        .get("env")
        .and_then(Value::as_str)
        .ok_or_else(|| fail("env is missing: write env: python, nodejs, java or wasm".into()))?
        .to_string();
    if env == "wasm" {
        return read_wasm_algorithm(file, value, &code, code_dir, warnings);
    }
    let language = Language::parse(&env).ok_or_else(|| {
        fail(format!(
            "env {env} is not one of python, nodejs, java, wasm"
        ))
    })?;
    let entry_point = code
        .get("entryPoint")
        .or_else(|| map.get("entryPoint"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| language.default_entry_point().to_string());
    if entry_point.is_empty() {
        return Err(fail("code.entryPoint is missing: for java, name the class implementing io.hkube.rs.Algorithm".into()));
    }
    // An algorithm with its own command (x-hkube.command) finds its entry point its own way.
    let own_command = map
        .get(spec::HKUBE_EXTENSION)
        .is_some_and(|extension| extension.get("command").is_some());
    if language != Language::Java && !own_command && !code_dir.join(&entry_point).is_file() {
        return Err(fail(format!(
            "code.entryPoint {entry_point} is not a file in {}",
            code_dir.display()
        )));
    }
    map.insert("entryPoint".into(), json!(entry_point));
    if !map.contains_key("algorithmImage") {
        // A local algorithm has no image; this marks it runnable, as a finished build would.
        let name = map
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        map.insert(
            "algorithmImage".into(),
            json!(format!("hkube-local/{name}")),
        );
    }
    let descriptor = spec::parse_algorithm(value).map_err(|e| fail(e.to_string()))?;
    let request = crate::scheduler::Request::for_algorithm(&descriptor).map_err(&fail)?;
    let (env, not_plain) = descriptor.plain_env();
    if let Some(name) = not_plain.first() {
        return Err(fail(format!(
            "algorithmEnv.{name}: only plain values (strings, numbers, booleans) can be set for a local process; valueFrom (secrets, config maps) needs Kubernetes"
        )));
    }
    let local = LocalAlgorithm {
        name: descriptor.name.clone(),
        language,
        code_dir,
        entry_point,
        min_hot_workers: descriptor.min_hot_workers as usize,
        max_workers: descriptor.max_workers.unwrap_or(0) as usize,
        request,
        classpath: None,
        container: None,
        prepared: None,
        command: descriptor.local_command(),
        env,
    };
    Ok(ProjectAlgorithm {
        file: file.to_path_buf(),
        descriptor,
        runner: Runner::Local(local),
        warnings,
    })
}

/// An `env: wasm` algorithm: `code.entryPoint` names its module. The module may not be built
/// yet: that is found when the algorithm is registered (a pipeline that does not use it runs).
fn read_wasm_algorithm(
    file: &Path,
    mut value: Value,
    code: &Value,
    code_dir: PathBuf,
    warnings: Vec<String>,
) -> Result<ProjectAlgorithm, Error> {
    let fail = |reason: String| Error::Algorithm {
        path: file.to_path_buf(),
        reason,
    };
    let Some(map) = value.as_object_mut() else {
        return Err(fail("an algorithm file must hold an object".into()));
    };
    let entry_point = code
        .get("entryPoint")
        .or_else(|| map.get("entryPoint"))
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            fail("code.entryPoint is missing: for wasm, name the module, e.g. multiply.wasm".into())
        })?
        .to_string();
    map.insert("entryPoint".into(), json!(entry_point));
    if !map.contains_key("algorithmImage") {
        let name = map.get("name").and_then(Value::as_str).unwrap_or_default();
        map.insert(
            "algorithmImage".into(),
            json!(format!("hkube-local/{name}")),
        );
    }
    let descriptor = spec::parse_algorithm(value).map_err(|e| fail(e.to_string()))?;
    let wasm = crate::executor::wasm::wasm_algorithm(&descriptor, &code_dir.join(&entry_point))
        .map_err(fail)?;
    Ok(ProjectAlgorithm {
        file: file.to_path_buf(),
        descriptor,
        runner: Runner::Wasm(wasm),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_numbers_example() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/numbers");
        let found = find_algorithms(&dir).unwrap();
        let names: Vec<&str> = found.iter().map(|a| a.descriptor.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "multiply",
                "multiply-java",
                "multiply-wasm",
                "multiply-wasm-fn",
                "range",
                "reduce"
            ]
        );
        let reduce = &found[5];
        let local = reduce.local().unwrap();
        assert_eq!(local.language, Language::Nodejs);
        assert_eq!(local.entry_point, "index.js");
        let Runner::Wasm(multiply) = &found[2].runner else {
            panic!("multiply-wasm is a wasm algorithm");
        };
        assert!(multiply.module.ends_with("multiply-wasm/multiply.wasm"));
        assert_eq!(
            reduce.descriptor.algorithm_image.as_deref(),
            Some("hkube-local/reduce")
        );
    }

    #[test]
    fn problems_name_the_file() {
        let dir = tempfile_dir();
        let file = dir.join("algorithm.yml");
        std::fs::write(&file, "name: bad\nenv: cobol\n").unwrap();
        let error = read_algorithm(&file).unwrap_err().to_string();
        assert!(
            error.contains("algorithm.yml: env cobol is not one of python, nodejs, java, wasm"),
            "{error}"
        );
        std::fs::write(
            &file,
            "name: bad\nenv: python\ncode:\n  entryPoint: nope.py\n",
        )
        .unwrap();
        let error = read_algorithm(&file).unwrap_err().to_string();
        assert!(
            error.contains("code.entryPoint nope.py is not a file"),
            "{error}"
        );
        std::fs::write(
            &file,
            "name: Bad_Name\nenv: python\ncode:\n  entryPoint: algorithm.yml\n",
        )
        .unwrap();
        let error = read_algorithm(&file).unwrap_err().to_string();
        assert!(
            error.contains("algorithm name must contain only lower-case alphanumeric"),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_wasm_algorithm_names_its_module() {
        let dir = tempfile_dir().join("wasm");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("algorithm.yml");
        std::fs::write(&file, "name: wasm-one\nenv: wasm\n").unwrap();
        let error = read_algorithm(&file).unwrap_err().to_string();
        assert!(
            error.contains("code.entryPoint is missing: for wasm, name the module"),
            "{error}"
        );
        // The module need not be built yet: registering it says so.
        std::fs::write(
            &file,
            "name: wasm-one\nenv: wasm\nmem: 32Mi\ncode:\n  entryPoint: w.wasm\n",
        )
        .unwrap();
        let found = read_algorithm(&file).unwrap();
        let Runner::Wasm(wasm) = &found.runner else {
            panic!("a wasm algorithm");
        };
        assert_eq!(wasm.module, dir.canonicalize().unwrap().join("w.wasm"));
        assert_eq!((wasm.mem.as_str(), wasm.mem_mib), ("32Mi", 32));
        assert!(found.local().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hkube-project-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
