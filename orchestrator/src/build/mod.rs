//! The build service: an apply with code becomes a build record, the build runs in the
//! background (one at a time), and a completed build becomes an algorithm version, current
//! by HKube's rule (the first version, or no running job uses the algorithm; otherwise the
//! algorithm gets error 901 and waits for `POST /versions/algorithms/apply`).
//!
//! HKube's vocabulary is kept: `pending` → `creating` (5) → `active` (20…95) → `completed`
//! (100) or `failed` (80), and `stopped`. Unlike HKube the log is kept whole, a failure says
//! why in one line, a build has a timeout, the entry point is checked before any image is
//! built, and the image's tag is a digest of its inputs: unchanged inputs reuse the image.

mod folder;
mod git;
mod image;
mod local;
mod run;
mod trigger;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use builder::context::Toolkit;
use builder::docker::DockerEngine;
use builder::env::Env;
use builder::webhook::{Push, PushedCommit};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

pub use folder::wasm_folder_image;
pub use git::redacted;
pub use local::{code_folder, LOCAL_IMAGE};
pub use trigger::{sniff_extension, Decision};

use crate::engine::{build_id, now_ms, Handle};
use crate::spec::{Algorithm, AlgorithmType, CodeEnv};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadUpload(String),
    #[error("build {0} Not Found")]
    NotFound(String),
    #[error("unable to stop build because its in {0} status")]
    NotStoppable(String),
    #[error("unable to rerun build because its in {0} status")]
    NotRerunnable(String),
    #[error("{0}")]
    Store(#[from] crate::store::Error),
    #[error("cannot keep the upload in {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The file a bare uploaded module is kept as when the algorithm names no entry point.
pub const BARE_MODULE: &str = "main.wasm";

/// A build in one of these states has not ended: it may be stopped, not rerun.
const UNFINISHED: [&str; 3] = ["pending", "creating", "active"];

fn status_of(record: &Value) -> String {
    record["status"].as_str().unwrap_or_default().to_string()
}

fn unfinished(record: &Value) -> bool {
    record["status"]
        .as_str()
        .is_some_and(|status| UNFINISHED.contains(&status))
}

/// A registration under way: resolves once the executor can run the algorithm (a task it is
/// given afterwards finds its pool), or with why it cannot.
pub type Deployment =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// Makes an algorithm runnable by the executor once it has an image (or changes it).
pub trait Deployer: Send + Sync {
    /// Registers the algorithm with the executor; resolves at once with `Ok` when this
    /// deployer has nothing to run it from (no image, or code built for another executor).
    /// A server awaits this for every stored algorithm before the engine resumes jobs: a job
    /// resumed before its algorithm is registered would fail for want of code.
    fn register(&self, algorithm: &Algorithm) -> Deployment;

    /// [`Deployer::register`] in the background; a failure is logged.
    fn deploy(&self, algorithm: &Algorithm) {
        let name = algorithm.name.clone();
        let deployment = self.register(algorithm);
        tokio::spawn(async move {
            if let Err(error) = deployment.await {
                tracing::warn!("algorithm {name}: {error}");
            }
        });
    }
}

/// How builds are made.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Uploads, unpacked code and build folders: `<dir>/<buildId>/`.
    pub dir: PathBuf,
    /// Local backend: where built code lives (`<code_root>/<name>/<digest>/`, the algorithm's
    /// `algorithmImage` being `hkube-local/<name>:<digest>`).
    pub code_root: PathBuf,
    /// Local backend: the shared dependency environments (the local executor's own).
    pub envs_root: PathBuf,
    /// The base image per env when the algorithm names none.
    pub base_images: HashMap<&'static str, String>,
    /// Images are tagged `<repository>/<algorithm>:<digest>`.
    pub repository: String,
    /// Docker backend: the registry images are pushed to once built (their repository being
    /// the registry's, see [`BuildOptions::push_to`]); `None` keeps them in the engine only.
    pub registry: Option<builder::registry::Target>,
    /// A build running longer fails with "build timed out after N s".
    pub timeout: Duration,
    pub limits: builder::Limits,
    /// The cache of compiled modules (the WASM executor's own): a module checked at
    /// apply is compiled once, and its first task loads it.
    pub wasm_cache: Option<PathBuf>,
}

impl BuildOptions {
    /// HKube-like defaults for a server's `state_dir`: builds under `builds/`, local code under
    /// `local/`, environments under `work/envs/` (where the local executor looks), and the base
    /// images `scripts/base-images.sh` makes.
    pub fn new(state_dir: &Path) -> BuildOptions {
        let mut base_images: HashMap<&'static str, String> = Env::ALL
            .into_iter()
            .map(|env| (env.as_str(), format!("hkube/{env}:bookworm")))
            .collect();
        // A module's image needs no language: the sidecar on plain Debian runs it.
        base_images.insert(Env::Wasm.as_str(), "hkube/debian:bookworm".into());
        BuildOptions {
            dir: state_dir.join("builds"),
            code_root: state_dir.join("local"),
            envs_root: state_dir.join("work").join("envs"),
            base_images,
            repository: "hkube/algorithms".into(),
            registry: None,
            timeout: Duration::from_secs(30 * 60),
            limits: builder::Limits::default(),
            wasm_cache: Some(state_dir.join("wasm-cache")),
        }
    }

    /// Images are named under the registry (`HOST/PATH/<algorithm>:<digest>`) and pushed there
    /// after each build, so that the algorithm's `algorithmImage` is a reference a cluster can
    /// pull.
    pub fn push_to(&mut self, target: builder::registry::Target) {
        self.repository = target.registry.repository();
        self.registry = Some(target);
    }
}

/// The build service; cheap to clone.
#[derive(Clone)]
pub struct BuildService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BuildService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildService").finish_non_exhaustive()
    }
}

/// Where builds go.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Images, built by this Docker engine from the toolkit's templates, runtimes and sidecar
    /// (the Docker executor runs them).
    Docker(DockerEngine, Toolkit),
    /// A folder with the code and a prepared local environment (the local executor runs it):
    /// no container engine needed.
    Local,
}

struct Inner {
    options: BuildOptions,
    backend: Backend,
    store: Arc<dyn Store>,
    engine: Handle,
    deployer: Arc<dyn Deployer>,
    /// One build at a time: two image builds on two cores only slow each other down.
    slots: Semaphore,
    running: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

/// What an apply with code decided.
#[derive(Debug)]
pub struct Planned {
    pub build_id: Option<String>,
    pub messages: Vec<String>,
    pub codes: Vec<u16>,
    /// The algorithm as applied (with its `fileInfo`).
    pub algorithm: Algorithm,
}

impl BuildService {
    pub fn new(
        options: BuildOptions,
        backend: Backend,
        store: Arc<dyn Store>,
        engine: Handle,
        deployer: Arc<dyn Deployer>,
    ) -> BuildService {
        BuildService {
            inner: Arc::new(Inner {
                options,
                backend,
                store,
                engine,
                deployer,
                slots: Semaphore::new(1),
                running: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Builds that were pending or running when the server stopped start again.
    pub fn resume(&self) {
        let Ok(algorithms) = self.inner.store.algorithms() else {
            return;
        };
        for algorithm in algorithms {
            for record in self.inner.store.builds(&algorithm.name).unwrap_or_default() {
                if let (true, Some(id)) = (unfinished(&record), record["buildId"].as_str()) {
                    self.spawn(id.to_string());
                }
            }
        }
    }

    /// An apply that carries code (an upload, a stored upload to compare with, or a git
    /// repository, whose commit is resolved now or given by a push): decides whether to build
    /// (HKube's triggers), records the build and starts it.
    pub async fn apply(
        &self,
        stored: Option<Algorithm>,
        mut candidate: Algorithm,
        upload: Option<&[u8]>,
        pushed: Option<&PushedCommit>,
        force_build: bool,
    ) -> Result<Planned, Error> {
        let name = candidate.name.clone();
        if let Some(bytes) = upload {
            let file_info = trigger::file_info(bytes).map_err(Error::BadUpload)?;
            if file_info["fileExt"] == "wasm" {
                self.check_module(&mut candidate, bytes).await?;
            }
            candidate.extra.insert("fileInfo".into(), file_info);
            candidate.algorithm_type = Some(AlgorithmType::Code);
        } else if let Some(repository) = candidate.git_repository.as_mut() {
            git::choose_commit(repository, pushed).await?;
            candidate.algorithm_type = Some(AlgorithmType::Git);
        }
        let from_git = upload.is_none() && candidate.git_repository.is_some();
        let decision = trigger::decide(stored.as_ref(), &candidate, force_build);
        let mut messages = vec![decision.message(&name)];
        let mut codes = vec![decision.code()];
        if !decision.builds() {
            return Ok(Planned {
                build_id: None,
                messages,
                codes,
                algorithm: candidate,
            });
        }
        let id = build_id(&name);
        let folder = self.inner.options.dir.join(&id);
        let keep = |path: &Path, source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(&folder).map_err(|e| keep(&folder, e))?;
        let upload_path = folder.join("upload");
        match upload {
            Some(bytes) => {
                std::fs::write(&upload_path, bytes).map_err(|e| keep(&upload_path, e))?
            }
            // The code comes from git when the build runs.
            None if from_git => {}
            None => {
                // The code did not change (a new base image, say): build from the last upload.
                let previous = self.last_upload(&name).ok_or_else(|| {
                    Error::BadUpload(format!(
                        "algorithm {name} has no uploaded code to build: send a file"
                    ))
                })?;
                std::fs::copy(&previous, &upload_path).map_err(|e| keep(&upload_path, e))?;
            }
        }
        if stored.is_none() {
            // No image yet: schedulers must not try to run it (HKube's `options.pending`).
            candidate.options.pending = true;
            self.inner.store.create_algorithm(candidate.clone())?;
            messages.push(format!(
                "the algorithm {name} has been successfully pushed to hkube"
            ));
            codes.push(1023);
        }
        let record = json!({
            "buildId": id,
            "algorithmName": name,
            "env": candidate.env.map(|env| env.as_str()),
            "type": if from_git { "Git" } else { "Code" },
            "gitRepository": candidate.git_repository,
            "status": "pending",
            "progress": 0,
            "startTime": now_ms(),
            "timestamp": now_ms(),
            "fileExt": candidate.extra.get("fileInfo").map(|f| f["fileExt"].clone()),
            "baseImage": candidate.base_image,
            "dependencyInstallCmd": candidate.dependency_install_cmd,
            "algorithm": serde_json::to_value(&candidate).unwrap_or(Value::Null),
            "result": {"data": ""},
        });
        self.inner.store.put_build(&record)?;
        self.spawn(id.clone());
        Ok(Planned {
            build_id: Some(id),
            messages,
            codes,
            algorithm: candidate,
        })
    }

    /// A bare WebAssembly module is an `env: wasm` algorithm whose module must compile: one
    /// that does not is refused here, with wasmtime's message, before any build is recorded.
    async fn check_module(&self, candidate: &mut Algorithm, bytes: &[u8]) -> Result<(), Error> {
        match candidate.env {
            None => candidate.env = Some(CodeEnv::Wasm),
            Some(CodeEnv::Wasm) => {}
            Some(other) => {
                return Err(Error::BadUpload(format!(
                    "the uploaded file is a WebAssembly module but env is {}: set env to wasm, or send the {} code as an archive",
                    other.as_str(),
                    other.as_str()
                )))
            }
        }
        if candidate.entry_point.as_deref().is_none_or(str::is_empty) {
            candidate.entry_point = Some(BARE_MODULE.into());
        }
        let (module, cache) = (bytes.to_vec(), self.inner.options.wasm_cache.clone());
        tokio::task::spawn_blocking(move || {
            crate::executor::wasm::validate(&module, cache.as_deref())
        })
        .await
        .map_err(|e| Error::BadUpload(format!("checking the module failed: {e}")))?
        .map_err(|e| Error::BadUpload(format!("the uploaded WebAssembly module {e}")))
    }

    fn last_upload(&self, name: &str) -> Option<PathBuf> {
        let builds = self.inner.store.builds(name).ok()?;
        builds
            .iter()
            .rev()
            .filter_map(|b| b["buildId"].as_str())
            .map(|id| self.inner.options.dir.join(id).join("upload"))
            .find(|path| path.is_file())
    }

    pub fn status(&self, build_id: &str) -> Result<Value, Error> {
        self.inner
            .store
            .build(build_id)
            .ok_or_else(|| Error::NotFound(build_id.to_string()))
    }

    /// Rebuilds every algorithm that follows the pushed branch or tag, from the pushed head.
    /// Returns what each apply decided.
    pub async fn on_push(&self, push: &Push) -> Result<Vec<Planned>, Error> {
        let mut planned = Vec::new();
        for stored in self.inner.store.algorithms()? {
            let Some(repository) = &stored.git_repository else {
                continue;
            };
            if !push.matches(&git::source_of(repository)) {
                continue;
            }
            let candidate = stored.clone();
            planned.push(
                self.apply(
                    Some(stored),
                    candidate,
                    None,
                    push.head_commit.as_ref(),
                    false,
                )
                .await?,
            );
        }
        Ok(planned)
    }

    /// `POST /builds/stop`: only a pending, creating or active build stops.
    pub fn stop(&self, build_id: &str) -> Result<(), Error> {
        let mut record = self.status(build_id)?;
        if !unfinished(&record) {
            return Err(Error::NotStoppable(status_of(&record)));
        }
        if let Some(task) = self
            .inner
            .running
            .lock()
            .ok()
            .and_then(|mut r| r.remove(build_id))
        {
            // Dropping the build's connection makes the engine abandon it.
            task.abort();
        }
        record["status"] = json!("stopped");
        record["endTime"] = json!(now_ms());
        self.inner.store.put_build(&record)?;
        Ok(())
    }

    /// `POST /builds/rerun`: a build that ended runs again from its upload.
    pub fn rerun(&self, build_id: &str) -> Result<(), Error> {
        let mut record = self.status(build_id)?;
        if unfinished(&record) {
            return Err(Error::NotRerunnable(status_of(&record)));
        }
        record["status"] = json!("pending");
        record["progress"] = json!(0);
        record["result"] = json!({"data": ""});
        record["startTime"] = json!(now_ms());
        if let Some(map) = record.as_object_mut() {
            map.remove("endTime");
            map.remove("error");
        }
        self.inner.store.put_build(&record)?;
        self.spawn(build_id.to_string());
        Ok(())
    }

    fn spawn(&self, build_id: String) {
        let inner = self.inner.clone();
        let id = build_id.clone();
        let task = tokio::spawn(async move {
            let _slot = inner.slots.acquire().await;
            let began = std::time::Instant::now();
            run::run(&inner, &id).await;
            let ended = inner
                .store
                .build(&id)
                .map_or_else(|| "unknown".to_string(), |record| status_of(&record));
            crate::telemetry::metrics::build_ended(&ended, began.elapsed().as_secs_f64());
            if let Ok(mut running) = inner.running.lock() {
                running.remove(&id);
            }
        });
        if let Ok(mut running) = self.inner.running.lock() {
            running.insert(build_id, task.abort_handle());
        }
    }
}
