//! From a stored or project algorithm to what the WASM executor runs, and the deployer that
//! registers built `env: wasm` algorithms with it (every other algorithm goes to the deployer
//! of the process or container executor).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::Duration;

use super::{Preopen, WasmAlgorithm, WasmExecutor};
use crate::build::{code_folder, Deployer, Deployment, LOCAL_IMAGE};
use crate::spec::{self, Algorithm, CodeEnv};

/// The executor's view of an `env: wasm` algorithm whose module is the file `module`.
pub fn wasm_algorithm(algorithm: &Algorithm, module: &Path) -> Result<WasmAlgorithm, String> {
    let mem_mib = spec::parse_memory_mi(&algorithm.mem).map_err(|e| format!("mem: {e}"))?;
    let (env, not_plain) = algorithm.plain_env();
    if let Some(name) = not_plain.first() {
        return Err(format!(
            "algorithmEnv.{name}: only plain values (strings, numbers, booleans) can be set for a wasm module; valueFrom (secrets, config maps) needs Kubernetes"
        ));
    }
    if algorithm.local_command().is_some() {
        return Err(
            "x-hkube.command is for process algorithms; a wasm algorithm is its module".into(),
        );
    }
    let code_dir = module.parent().unwrap_or(Path::new("."));
    let dirs = algorithm
        .wasm_dirs()
        .into_iter()
        .map(|(folder, writable)| Preopen {
            host: code_dir.join(&folder),
            guest: folder,
            writable,
        })
        .collect();
    Ok(WasmAlgorithm {
        name: algorithm.name.clone(),
        module: module.to_path_buf(),
        mem: algorithm.mem.clone(),
        // A module's memory grows by 64 KiB pages: at least one MiB is needed to start.
        mem_mib: (mem_mib.ceil() as u64).max(1),
        time_limit: algorithm.wasm_ttl().map(Duration::from_secs_f64),
        dirs,
        env,
        request: crate::scheduler::Request::for_algorithm(algorithm)?,
        min_hot_workers: algorithm.min_hot_workers as usize,
        max_workers: algorithm.max_workers.unwrap_or(0) as usize,
    })
}

/// Registers `env: wasm` algorithms built by the local backend (their kept code folder holds
/// the module) with the WASM executor, and hands every other algorithm to `other`: those of
/// the Docker backend too, whose image holds the module and runs it in a container.
pub struct WasmDeployer {
    pub wasm: WasmExecutor,
    /// The build service's `code_root`.
    pub code_root: PathBuf,
    pub other: Arc<dyn Deployer>,
}

impl std::fmt::Debug for WasmDeployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WasmDeployer")
    }
}

impl Deployer for WasmDeployer {
    fn register(&self, algorithm: &Algorithm) -> Deployment {
        if algorithm.env != Some(CodeEnv::Wasm) {
            // A name that was a wasm algorithm and is now another kind runs as the other kind.
            self.wasm.forget(&algorithm.name);
            return self.other.register(algorithm);
        }
        let Some(image) = algorithm.algorithm_image.as_deref() else {
            let why = "an env: wasm algorithm runs from uploaded code (a .wasm, or an archive holding one): apply it with its code".to_string();
            return Box::pin(async move { Err(why) });
        };
        let Some(code_dir) = code_folder(&self.code_root, image) else {
            if image.starts_with(LOCAL_IMAGE) {
                // A project folder's module (`hkube server --algorithms`, whose descriptor
                // names `hkube-local/<name>`, no built code): the server registered it from
                // its folder at start, and it stays so. Forgetting it here left its tasks
                // with no executor.
                return Box::pin(async { Ok(()) });
            }
            // Built into an image (the Docker backend): it runs in a container, its sidecar
            // running the module (executor::docker).
            self.wasm.forget(&algorithm.name);
            return self.other.register(algorithm);
        };
        let module = code_dir.join(algorithm.entry_point.as_deref().unwrap_or_default());
        let wasm = match wasm_algorithm(algorithm, &module) {
            Ok(wasm) => wasm,
            Err(why) => return Box::pin(async move { Err(why) }),
        };
        let executor = self.wasm.clone();
        Box::pin(async move { executor.register(wasm).await.map_err(|e| e.to_string()) })
    }
}
