//! The local executor, hkube's embedded default: algorithms run as processes on this machine,
//! each behind its own in-process sidecar, in the one worker pool (`executor::pool`) driven by
//! the scheduler's rounds. With `--executor docker` the same pool also runs the workers of
//! algorithms that have an image, through the container launcher.
//!
//! What is local here: the pool's launchers ([`ProcessLauncher`], and the
//! [`ContainerLauncher`] when Docker is given), the machine as the scheduler's node
//! ([`inventory`]), an algorithm's preparation before its first worker (dependencies through
//! `builder::local`, Java compiled by [`java`]), and the job storage folder's cleanup.

mod deploy;
pub(crate) mod embedded;
pub mod inventory;
mod java;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use builder::env::Env;
use builder::local::{LocalEnvs, Prepared};
use wrapper::sidecar::{SidecarOptions, StorageAccess};
use wrapper::storage::FsStorage;

pub use crate::executor::algorithm::{Language, WorkerAlgorithm as LocalAlgorithm};
pub use crate::executor::launcher::process::{Runtimes, Settings};
pub use crate::executor::pool::crash_report;
pub use deploy::{local_algorithm, CodeDeployer};

use crate::engine::{Executor, TaskKey, TaskSpec};
use crate::executor::docker::DockerLauncher;
use crate::executor::kubernetes::PodLauncher;
use crate::executor::launcher::container::ContainerLauncher;
use crate::executor::launcher::process::ProcessLauncher;
use crate::executor::launcher::Launcher;
use crate::executor::limits::{LimitOptions, MemoryGuard};
use crate::executor::pool::{ClusterFeed, PoolOptions, WorkerPool};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot prepare algorithm {name}: {reason}")]
    Prepare { name: String, reason: String },
}

#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub runtimes: Runtimes,
    pub sidecar: SidecarOptions,
    /// A worker idle this long is stopped (unless the pool is at `minHotWorkers`).
    pub idle_timeout: Duration,
    /// Output bytes kept per worker, for crash reports.
    pub log_limit: usize,
    /// Tasks handed to one worker at once, at most (short tasks; long ones go one by one).
    pub tasks_per_worker: usize,
    /// The machine as the scheduler sees it: workers start while their requests fit.
    pub inventory: crate::scheduler::Node,
    /// Where compiled Java classes go.
    pub work_dir: PathBuf,
    /// The filesystem storage shared by sidecars and runtimes: large results (bytes) are
    /// written there and passed by reference, and storage-v3 wrappers read their inputs there.
    pub storage_dir: PathBuf,
    /// The storage key prefix (`<cluster>-hkube/...`).
    pub cluster: String,
    /// Each task's output (what its user code printed) goes to `<log_dir>/<jobId>/<taskId>.log`.
    pub log_dir: PathBuf,
    /// Starts the workers of algorithms that have an image (the Docker executor).
    pub docker: Option<DockerLauncher>,
    /// Starts every worker as a pod (the Kubernetes executor): no worker runs on this
    /// machine then, and `cluster` gives the nodes.
    pub kubernetes: Option<PodLauncher>,
    /// The cluster's nodes, replacing `inventory` (the Kubernetes executor).
    pub nodes: Option<ClusterFeed>,
    /// Launchers asked before the container and process ones: the wasm launcher
    /// (`executor::wasm::WasmExecutor::launcher`), whose workers are threads of this process.
    pub launchers: Vec<Arc<dyn Launcher>>,
    /// A worker preempted for a more urgent task has this long to stop it before it is
    /// killed.
    pub preempt_grace: Duration,
    /// HKube's storage variables for the algorithms when the job's storage is not the folder
    /// (`DEFAULT_STORAGE=s3`, `S3_ENDPOINT_URL`, `AWS_*`): HKube's own wrappers then use it.
    pub storage_env: Vec<(String, String)>,
    /// Workers' memory limits (a multiple of the request) and how they are enforced.
    pub limits: LimitOptions,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            runtimes: Runtimes::default(),
            sidecar: SidecarOptions {
                connect_timeout: Duration::from_secs(30),
                // HKube gives a pod 10 s; a local process that has not answered a stop within 3 s
                // is killed and replaced (docs/semantics.md).
                stop_timeout: Duration::from_secs(3),
                ..SidecarOptions::default()
            },
            idle_timeout: Duration::from_secs(60),
            log_limit: 64 * 1024,
            tasks_per_worker: crate::scheduler::MAX_WINDOW,
            inventory: inventory::local_node(&inventory::Overrides::default()),
            work_dir: std::env::temp_dir().join("hkube-local"),
            storage_dir: std::env::temp_dir().join("hkube-local").join("storage"),
            cluster: "local".into(),
            log_dir: std::env::temp_dir().join("hkube-local").join("logs"),
            docker: None,
            kubernetes: None,
            nodes: None,
            launchers: Vec::new(),
            preempt_grace: Duration::from_secs(3),
            storage_env: Vec::new(),
            limits: LimitOptions::default(),
        }
    }
}

/// A handle to the local executor: its worker pool and the local preparation steps.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    pool: WorkerPool,
    options: LocalOptions,
    /// Ended jobs whose stored objects are to be deleted, handled by one thread of its own.
    collector: std::sync::mpsc::Sender<(String, Vec<String>)>,
}

impl LocalExecutor {
    /// Starts the service on the current tokio runtime.
    pub fn start(mut options: LocalOptions) -> LocalExecutor {
        let folder: Arc<dyn wrapper::storage::Storage> =
            Arc::new(FsStorage::new(&options.storage_dir));
        match &mut options.sidecar.storage {
            None => {
                options.sidecar.storage = Some(StorageAccess {
                    storage: folder,
                    cluster: options.cluster.clone(),
                    encoding: wrapper::storage::Encoding::Msgpack,
                    spool: None,
                })
            }
            // The job's storage is elsewhere (S3): the runtimes' folder is bridged to it.
            Some(access) if access.spool.is_none() => access.spool = Some(folder),
            Some(_) => {}
        }
        // Our runtimes send JSON results inline; allow large ones (bytes go through storage).
        options.sidecar.max_message_bytes = options.sidecar.max_message_bytes.max(512 << 20);
        let settings = Settings {
            log_limit: options.log_limit,
            storage_dir: options.storage_dir.clone(),
            cluster: options.cluster.clone(),
            storage_env: options.storage_env.clone(),
            memory_guard: MemoryGuard::choose(options.limits.enforcement),
        };
        let mut launchers: Vec<Arc<dyn Launcher>> = options.launchers.clone();
        if let Some(docker) = &options.docker {
            launchers.push(Arc::new(ContainerLauncher {
                docker: docker.clone(),
                log_limit: options.log_limit,
            }));
        }
        match &options.kubernetes {
            // The scheduler's nodes are the cluster's: a local process would run elsewhere.
            Some(pods) => launchers.push(Arc::new(pods.clone())),
            None => launchers.push(Arc::new(ProcessLauncher {
                runtimes: options.runtimes.clone(),
                settings,
            })),
        }
        let pool = WorkerPool::start(PoolOptions {
            sidecar: options.sidecar.clone(),
            idle_timeout: options.idle_timeout,
            tasks_per_worker: options.tasks_per_worker,
            inventory: options.inventory.clone(),
            cluster: options.nodes.clone(),
            log_dir: options.log_dir.clone(),
            launchers,
            preempt_grace: options.preempt_grace,
            memory_ratio: options.limits.memory_ratio,
        });
        let (collector, ended) = std::sync::mpsc::channel::<(String, Vec<String>)>();
        let (storage, cluster) = (options.storage_dir.clone(), options.cluster.clone());
        // One thread deletes files for every ended job, rather than a blocking task per job.
        let _ = std::thread::Builder::new()
            .name("hkube-storage-collector".into())
            .spawn(move || {
                for (job_id, keep) in ended {
                    collect_job_storage(&storage, &cluster, &job_id, &keep);
                }
            });
        LocalExecutor {
            pool,
            options,
            collector,
        }
    }

    /// Makes an algorithm runnable: its dependencies are installed (a cached virtual
    /// environment or node_modules, see `builder::local`) and Java sources are compiled.
    pub async fn register(&self, mut algorithm: LocalAlgorithm) -> Result<(), Error> {
        if algorithm.container.is_none() && algorithm.prepared.is_none() {
            algorithm.prepared = Some(self.prepare_dependencies(&algorithm, |_| {}).await?);
        }
        // An algorithm with its own command brings its own (compiled) wrapper.
        if algorithm.language == Language::Java
            && algorithm.container.is_none()
            && algorithm.command.is_none()
        {
            algorithm = java::prepare_java(algorithm, &self.options).await?;
        }
        self.pool.register(algorithm);
        Ok(())
    }

    /// Installs what the algorithm's code declares (requirements.txt, package.json) into an
    /// environment shared by all code with the same manifests; `log` gets the installers' lines.
    pub async fn prepare_dependencies(
        &self,
        algorithm: &LocalAlgorithm,
        log: impl FnMut(&str),
    ) -> Result<Prepared, Error> {
        let env = match algorithm.language {
            Language::Python => Env::Python,
            Language::Nodejs => Env::Nodejs,
            Language::Java => Env::Java,
            // A module declares no dependencies: it is all in the .wasm.
            Language::Wasm => return Ok(Prepared::default()),
        };
        LocalEnvs::new(self.options.work_dir.join("envs"))
            .prepare(env, &algorithm.code_dir, log)
            .await
            .map_err(|e| Error::Prepare {
                name: algorithm.name.clone(),
                reason: e.to_string(),
            })
    }

    /// Stops every worker (the algorithms get `exit`) and waits for them, at most a few seconds.
    pub async fn shutdown(&self) {
        self.pool.shutdown().await;
    }

    /// The worker pool, for registering algorithms that need no local preparation (images).
    pub fn pool(&self) -> &WorkerPool {
        &self.pool
    }
}

/// Deletes what a job's tasks stored under `<storage>/<cluster>-hkube/<jobId>/`, except `keep`.
fn collect_job_storage(storage_dir: &Path, cluster: &str, job_id: &str, keep: &[String]) {
    let folder = storage_dir.join(format!("{cluster}-hkube")).join(job_id);
    let Ok(entries) = std::fs::read_dir(&folder) else {
        return;
    };
    let kept: Vec<PathBuf> = keep.iter().map(|path| storage_dir.join(path)).collect();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_file() && !kept.contains(&path) {
            let _ = std::fs::remove_file(&path);
        }
    }
    let _ = std::fs::remove_dir(&folder);
}

impl Executor for LocalExecutor {
    fn submit(&self, task: TaskSpec) {
        self.pool.submit(task);
    }

    fn cancel(&self, key: TaskKey) {
        self.pool.cancel(key);
    }

    fn job_ended(&self, job_id: &str, keep: &[String]) {
        // Job ids are ours (12 characters of [0-9a-z]); anything else is not a folder to touch.
        if job_id.is_empty() || !job_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return;
        }
        let _ = self.collector.send((job_id.to_string(), keep.to_vec()));
        // The job's objects in a remote storage (S3) go too, but for those kept.
        if let Some(access) = self
            .options
            .sidecar
            .storage
            .clone()
            .filter(|a| a.spool.is_some())
        {
            let prefix = format!("{}-hkube/{job_id}/", access.cluster);
            let keep = keep.to_vec();
            tokio::spawn(async move {
                let Ok(paths) = access.storage.list(&prefix).await else {
                    return;
                };
                for path in paths.iter().filter(|p| !keep.contains(p)) {
                    let _ = access.storage.delete(path).await;
                }
            });
        }
    }
}
