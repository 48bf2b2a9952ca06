//! Makes stored algorithms that have an image runnable by the Docker executor: each becomes a
//! pool of container pairs (see [`super`]) with the algorithm's resources and variables. An
//! `env: wasm` algorithm's image holds its module and the sidecar: its worker is one
//! container, the sidecar running the module (see [`super`]).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::ContainerSpec;
use crate::build::{Deployer, Deployment};
use crate::executor::algorithm::{Language, PodSettings, WorkerAlgorithm};
use crate::executor::pool::WorkerPool;
use crate::spec::{parse_memory_mi, Algorithm, CodeEnv};

/// Where an image keeps the algorithm's code (templates/<env>/Dockerfile).
const CODE_IN_IMAGE: &str = "/hkube/algorithm";

/// What the sidecar of an `env: wasm` algorithm's container runs: the module in its image and
/// each task's sandbox (`mem`, `x-hkube.ttl`, `x-hkube.dirs`, the plain `algorithmEnv`), as the
/// in-process executor would. `None` for other envs; `Err` names what cannot run.
pub fn container_module(
    algorithm: &Algorithm,
) -> Result<Option<wrapper::wasm::worker::ContainerModule>, String> {
    if algorithm.env != Some(CodeEnv::Wasm) {
        return Ok(None);
    }
    let entry_point = algorithm
        .entry_point
        .as_deref()
        .unwrap_or(Language::Wasm.default_entry_point());
    let module = Path::new(CODE_IN_IMAGE).join(entry_point);
    let wasm = crate::executor::wasm::wasm_algorithm(algorithm, &module)?;
    Ok(Some(wrapper::wasm::worker::ContainerModule {
        module,
        sandbox: wasm.sandbox(),
    }))
}

/// Registers algorithms with images into the executor's pools.
#[derive(Debug, Clone)]
pub struct ImageDeployer {
    pub pool: WorkerPool,
}

/// The pool definition of an algorithm that runs from its image; `None` without an image
/// (a code algorithm whose first build has not completed), or when its "image" is local code
/// (`hkube-local/…`: a project folder's algorithm, which `hkube server --algorithms`
/// registers from its folder, or code built for the local executor): no engine can run it.
pub fn container_algorithm(algorithm: &Algorithm) -> Option<WorkerAlgorithm> {
    let image = algorithm
        .algorithm_image
        .clone()
        .filter(|image| !image.starts_with(crate::build::LOCAL_IMAGE))?;
    let language = algorithm
        .env
        .and_then(|env| Language::parse(env.as_str()))
        .unwrap_or(Language::Python);
    // HKube's memory: `mem` plus the reserved memory (20 % of it unless given).
    let mem_mi = parse_memory_mi(&algorithm.mem).ok();
    let reserved_mi = algorithm
        .reserved_memory
        .as_deref()
        .and_then(|r| parse_memory_mi(r).ok())
        .or_else(|| mem_mi.map(|m| (m * 0.2).ceil()));
    let memory = mem_mi.map(|m| ((m + reserved_mi.unwrap_or(0.0)) * 1024.0 * 1024.0) as i64);
    let env = algorithm
        .algorithm_env
        .iter()
        .flatten()
        .map(|(key, value)| {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            (key.clone(), text)
        })
        .collect();
    Some(WorkerAlgorithm {
        name: algorithm.name.clone(),
        language,
        code_dir: PathBuf::from(CODE_IN_IMAGE),
        entry_point: algorithm
            .entry_point
            .clone()
            .or_else(|| language.default_entry_point().to_string().into())
            .unwrap_or_default(),
        min_hot_workers: algorithm.min_hot_workers as usize,
        max_workers: algorithm.max_workers.unwrap_or(0) as usize,
        request: crate::scheduler::Request::for_algorithm(algorithm).unwrap_or_default(),
        classpath: None,
        container: Some(ContainerSpec {
            image,
            cpu: algorithm.cpu,
            memory,
            gpu: algorithm.gpu.unwrap_or(0.0),
            env,
            pod: Box::new(pod_settings(algorithm, mem_mi, reserved_mi)),
            // Checked by the deployer, which refuses an algorithm whose module cannot run.
            wasm: container_module(algorithm).ok().flatten().map(Box::new),
        }),
        prepared: None,
        // The image's entrypoint is the algorithm's own command there.
        command: None,
        env: Vec::new(),
    })
}

/// HKube's pod fields hkube's pods do not carry out: a worker of an algorithm that sets one is
/// refused rather than started without it.
const UNSUPPORTED_IN_PODS: &[&str] = &[
    "sideCars",
    "mounts",
    "workerCustomResources",
    "kaiObject",
    "securityContext",
];

/// The descriptor's fields a pod needs (see [`PodSettings`]).
fn pod_settings(
    algorithm: &Algorithm,
    mem_mi: Option<f64>,
    reserved_mi: Option<f64>,
) -> PodSettings {
    let object =
        |value: Option<&serde_json::Map<String, Value>>| value.cloned().unwrap_or_default();
    let extra = |key: &str| algorithm.extra.get(key).cloned();
    let object_of = |key: &str| match algorithm.extra.get(key) {
        Some(Value::Object(map)) => map.clone(),
        _ => serde_json::Map::new(),
    };
    PodSettings {
        labels: object_of("labels"),
        annotations: object_of("annotations"),
        unsupported: UNSUPPORTED_IN_PODS
            .iter()
            .filter(|key| algorithm.extra.get(**key).is_some_and(|v| !v.is_null()))
            .map(|key| key.to_string())
            .collect(),
        mem_mib: mem_mi.unwrap_or(0.0),
        reserved_mib: reserved_mi.unwrap_or(0.0),
        algorithm_env: object(algorithm.algorithm_env.as_ref()),
        worker_env: object(algorithm.worker_env.as_ref()),
        node_selector: object_of("nodeSelector"),
        tolerations: extra("tolerations"),
        volumes: extra("volumes"),
        volume_mounts: extra("volumeMounts"),
        image_pull_secrets: extra("imagePullSecrets"),
    }
}

impl Deployer for ImageDeployer {
    fn register(&self, algorithm: &Algorithm) -> Deployment {
        if let Err(why) = container_module(algorithm) {
            let why = format!("algorithm {}: {why}", algorithm.name);
            return Box::pin(async move { Err(why) });
        }
        let Some(local) = container_algorithm(algorithm) else {
            return Box::pin(async { Ok(()) });
        };
        // An image needs no local preparation: the pool takes it as it is.
        self.pool.register(local);
        Box::pin(async { Ok(()) })
    }
}
