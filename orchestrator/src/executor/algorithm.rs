//! What a worker pool runs: an algorithm's definition as its launchers need it. Shared by
//! every backend (the local processes, the Docker containers), so that none imports another.

use std::path::PathBuf;

use builder::local::Prepared;

use crate::executor::docker::ContainerSpec;

/// The languages hkube's runtimes speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Python,
    Nodejs,
    Java,
    /// A WebAssembly module (`env: wasm`), run in hkube's process by the wasm launcher
    /// (`executor::wasm::launcher`). [`Language::parse`] never gives it: an `env: wasm`
    /// algorithm is read and compiled by `executor::wasm`, which registers it with the pool.
    Wasm,
}

impl Language {
    pub fn parse(env: &str) -> Option<Language> {
        match env {
            "python" => Some(Language::Python),
            "nodejs" => Some(Language::Nodejs),
            "java" => Some(Language::Java),
            _ => None,
        }
    }

    pub fn default_entry_point(self) -> &'static str {
        match self {
            Language::Python => "main.py",
            Language::Nodejs => "index.js",
            Language::Java => "",
            Language::Wasm => "main.wasm",
        }
    }
}

/// An algorithm as a worker pool runs it: its code (a folder, or an image) and how to start
/// it, its resources and its pool's bounds. A launcher turns it into a running worker.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerAlgorithm {
    pub name: String,
    pub language: Language,
    /// The folder holding the user's code.
    pub code_dir: PathBuf,
    /// Python: a file (`main.py`); JavaScript: a file (`index.js`); Java: a class name.
    pub entry_point: String,
    pub min_hot_workers: usize,
    /// At most this many processes at once; 0: as many as the machine's resources hold.
    pub max_workers: usize,
    /// What each worker asks of the machine (cpu, memory with its reserve, gpu): workers start
    /// while the machine has room for it.
    pub request: crate::scheduler::Request,
    /// Java: where the compiled classes are (filled by the executor's javac step).
    pub classpath: Option<PathBuf>,
    /// Run in containers from this image (the Docker executor) instead of a local process.
    pub container: Option<ContainerSpec>,
    /// The dependencies prepared for it (a virtual environment, a node_modules); `None`: not
    /// yet, `register` prepares them.
    pub prepared: Option<Prepared>,
    /// Its own command (`x-hkube.command`): run in `code_dir` instead of hkube's runtime, as a
    /// custom image's entrypoint would be; it brings its own wrapper (HKube's official ones).
    pub command: Option<Vec<String>>,
    /// `algorithmEnv`'s plain values, set for its process; the sidecar's address and the
    /// storage variables hkube sets win over them.
    pub env: Vec<(String, String)>,
}

/// What only a pod uses of an algorithm's descriptor (the Kubernetes launcher): its memory split
/// between the two containers and the descriptor's Kubernetes fields, kept as written. The
/// pod's manifest (`executor::kubernetes::manifest`) reads them into Kubernetes' types, and
/// says which field is malformed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodSettings {
    /// `mem` in MiB: the algorithm container's memory request.
    pub mem_mib: f64,
    /// The reserved memory in MiB (`reservedMemory`, else 20 % of `mem`): the sidecar's, which
    /// holds the data cache.
    pub reserved_mib: f64,
    /// `algorithmEnv` as written: plain values and `{secretKeyRef: ...}`-style sources.
    pub algorithm_env: serde_json::Map<String, serde_json::Value>,
    /// `workerEnv` as written: the sidecar's variables.
    pub worker_env: serde_json::Map<String, serde_json::Value>,
    /// `nodeSelector`: a label and its value, or a list of values (any of them).
    pub node_selector: serde_json::Map<String, serde_json::Value>,
    /// `tolerations`, `volumes`, `volumeMounts` and `imagePullSecrets`: Kubernetes' shapes.
    pub tolerations: Option<serde_json::Value>,
    pub volumes: Option<serde_json::Value>,
    pub volume_mounts: Option<serde_json::Value>,
    pub image_pull_secrets: Option<serde_json::Value>,
    /// `labels` and `annotations`: added to the pod's (hkube's own labels win).
    pub labels: serde_json::Map<String, serde_json::Value>,
    pub annotations: serde_json::Map<String, serde_json::Value>,
    /// Descriptor fields set that a pod of hkube's does not carry out (`sideCars`, `mounts`,
    /// ...): its start is refused, naming them.
    pub unsupported: Vec<String>,
}
