//! Makes stored algorithms whose code the build service kept for the local executor
//! (`algorithmImage: hkube-local/<name>:<digest>`) runnable as local processes.

use std::path::PathBuf;

use super::{Language, LocalAlgorithm, LocalExecutor};
use crate::build::{code_folder, Deployer, Deployment};
use crate::spec::Algorithm;

#[derive(Debug, Clone)]
pub struct CodeDeployer {
    pub executor: LocalExecutor,
    /// The build service's `code_root`.
    pub code_root: PathBuf,
}

/// The pool definition of a locally built algorithm; `None` for any other.
pub fn local_algorithm(
    code_root: &std::path::Path,
    algorithm: &Algorithm,
) -> Option<LocalAlgorithm> {
    let code_dir = code_folder(code_root, algorithm.algorithm_image.as_deref()?)?;
    let language = Language::parse(algorithm.env?.as_str())?;
    let (env, not_plain) = algorithm.plain_env();
    if !not_plain.is_empty() {
        tracing::warn!(
            "algorithm {}: algorithmEnv {} not set: only plain values can be set for a local process (valueFrom needs Kubernetes)",
            algorithm.name,
            not_plain.join(", ")
        );
    }
    Some(LocalAlgorithm {
        name: algorithm.name.clone(),
        language,
        entry_point: algorithm
            .entry_point
            .clone()
            .unwrap_or_else(|| language.default_entry_point().to_string()),
        code_dir,
        min_hot_workers: algorithm.min_hot_workers as usize,
        max_workers: algorithm.max_workers.unwrap_or(0) as usize,
        // A stored algorithm passed the schema, so its resources read; the defaults otherwise.
        request: crate::scheduler::Request::for_algorithm(algorithm).unwrap_or_default(),
        classpath: None,
        container: None,
        prepared: None,
        command: algorithm.local_command(),
        env,
    })
}

impl Deployer for CodeDeployer {
    fn register(&self, algorithm: &Algorithm) -> Deployment {
        let Some(local) = local_algorithm(&self.code_root, algorithm) else {
            return Box::pin(async { Ok(()) });
        };
        if !local.code_dir.is_dir() {
            let why = format!(
                "its built code {} is gone; apply it again",
                local.code_dir.display()
            );
            return Box::pin(async move { Err(why) });
        }
        let executor = self.executor.clone();
        Box::pin(async move { executor.register(local).await.map_err(|e| e.to_string()) })
    }
}
