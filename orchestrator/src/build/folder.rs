//! The image of a project folder's `env: wasm` algorithm (`hkube server --algorithms DIR` on the
//! Docker or Kubernetes executor): the same image an apply of its code builds
//! (`templates/wasm`), so a folder's module runs in a container as an applied one does.
//!
//! Only the module and the folders it declares (`x-hkube.dirs`) go into the image: a project
//! folder also holds the module's sources and its build output (examples/numbers/multiply-wasm
//! has a cargo `target/`), which the image does not need.

use std::path::{Path, PathBuf};

use builder::context::Toolkit;
use builder::docker::DockerEngine;
use builder::env::Env;

use super::image::{self, Report};
use super::BuildOptions;
use crate::spec::Algorithm;

/// The build label of images made from project folders (an apply's are its build id).
const FOLDER_BUILD: &str = "project-folder";

/// A build's lines, to the caller's log.
struct Lines<F>(F);

impl<F: FnMut(&str) + Send> Report for Lines<F> {
    fn line(&mut self, line: &str) {
        (self.0)(line);
    }
}

/// Checks that the module compiles (wasmtime's message otherwise; its code lands in the
/// cache), then builds (or finds) the image of `algorithm`, whose module is the file `module`
/// in its project folder; returns the image's tag, pushed where `options` push.
pub async fn wasm_folder_image(
    docker: &DockerEngine,
    toolkit: &Toolkit,
    options: &BuildOptions,
    algorithm: &Algorithm,
    module: &Path,
    log: impl FnMut(&str) + Send,
) -> Result<String, String> {
    let (bytes_of, cache) = (module.to_path_buf(), options.wasm_cache.clone());
    tokio::task::spawn_blocking(move || {
        let bytes =
            std::fs::read(&bytes_of).map_err(|e| format!("reading {}: {e}", bytes_of.display()))?;
        crate::executor::wasm::validate(&bytes, cache.as_deref())
            .map_err(|e| format!("{} {e}", bytes_of.display()))
    })
    .await
    .map_err(|e| e.to_string())??;
    let staged = options.dir.join(FOLDER_BUILD).join(&algorithm.name);
    stage(algorithm, module, &staged)
        .map_err(|e| format!("gathering the module's files in {}: {e}", staged.display()))?;
    let step = image::Step {
        docker,
        toolkit,
        build_id: FOLDER_BUILD,
    };
    image::build(options, step, algorithm, Env::Wasm, staged, &mut Lines(log)).await
}

/// Fills `staged` with what the image needs: the module at its entry point, and each declared
/// folder beside it.
fn stage(algorithm: &Algorithm, module: &Path, staged: &Path) -> std::io::Result<()> {
    let code_dir = module.parent().unwrap_or(Path::new("."));
    if staged.exists() {
        std::fs::remove_dir_all(staged)?;
    }
    let entry = algorithm
        .entry_point
        .as_deref()
        .map(PathBuf::from)
        .or_else(|| module.file_name().map(PathBuf::from))
        .unwrap_or_default();
    let target = staged.join(&entry);
    std::fs::create_dir_all(target.parent().unwrap_or(staged))?;
    std::fs::copy(module, &target)?;
    for (folder, _) in algorithm.wasm_dirs() {
        copy_folder(&code_dir.join(&folder), &staged.join(&folder))?;
    }
    Ok(())
}

/// Copies the files under `from` to `to` (regular files and folders; links followed).
fn copy_folder(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_folder(&path, &target)?;
        } else if path.is_file() {
            std::fs::copy(&path, &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_the_module_and_its_declared_folders_are_staged() {
        let project = tempfile::tempdir().unwrap();
        let code = project.path();
        std::fs::write(code.join("m.wasm"), b"\0asm").unwrap();
        std::fs::create_dir_all(code.join("tables/deep")).unwrap();
        std::fs::write(code.join("tables/deep/t.csv"), b"1,2").unwrap();
        std::fs::create_dir_all(code.join("target/release")).unwrap();
        std::fs::write(code.join("target/release/big"), b"build output").unwrap();
        std::fs::write(code.join("main.rs"), b"fn main() {}").unwrap();
        let algorithm = crate::spec::parse_algorithm(serde_json::json!({
            "name": "lookup", "env": "wasm", "entryPoint": "m.wasm",
            "x-hkube": {"dirs": ["tables"]}
        }))
        .unwrap();
        let staged = code.join("staged");
        stage(&algorithm, &code.join("m.wasm"), &staged).unwrap();
        let mut files: Vec<String> = builder::context::walk(&staged)
            .unwrap()
            .into_iter()
            .map(|(relative, _)| relative)
            .collect();
        files.sort();
        assert_eq!(files, vec!["m.wasm", "tables/deep/t.csv"]);
        // Staged again from scratch: nothing of the previous staging is left.
        std::fs::write(staged.join("stale"), b"x").unwrap();
        stage(&algorithm, &code.join("m.wasm"), &staged).unwrap();
        assert!(!staged.join("stale").exists());
    }
}
