//! The build service: an apply with code becomes a build record, the build runs in the
//! background (one at a time), and a completed build becomes an algorithm version, current
//! by HKube's rule (the first version, or no running job uses the algorithm; otherwise the
//! algorithm gets error 901 and waits for `POST /versions/algorithms/apply`).
//!
//! HKube's vocabulary is kept: `pending` → `creating` (5) → `active` (20…95) → `completed`
//! (100) or `failed` (80), and `stopped`. Unlike HKube the log is kept whole, a failure says
//! why in one line, a build has a timeout, the entry point is checked before any image is
//! built, and the image's tag is a digest of its inputs: unchanged inputs reuse the image.

mod git;
mod trigger;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use builder::context::{Context, ImageInputs, Toolkit};
use builder::docker::{BuildEvent, DockerEngine};
use builder::env::{self, Env};
use builder::webhook::{Push, PushedCommit};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

pub use git::redacted;
pub use trigger::{sniff_extension, Decision};

use crate::engine::{build_id, now_ms, version_id, Handle};
use crate::spec::{Algorithm, AlgorithmType, CodeEnv};
use crate::store::{AlgorithmVersion, Store};

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

/// Makes an algorithm runnable by the executor once it has an image (or changes it).
pub trait Deployer: Send + Sync {
    fn deploy(&self, algorithm: &Algorithm);
}

/// How builds are made.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Uploads, unpacked code and build folders: `<dir>/<buildId>/`.
    pub dir: PathBuf,
    pub toolkit: Toolkit,
    /// The base image per env when the algorithm names none.
    pub base_images: HashMap<&'static str, String>,
    /// Images are tagged `<repository>/<algorithm>:<digest>`.
    pub repository: String,
    /// A build running longer fails with "build timed out after N s".
    pub timeout: Duration,
    pub limits: builder::Limits,
}

impl BuildOptions {
    /// HKube-like defaults under `dir`: the base images `scripts/base-images.sh` makes.
    pub fn new(dir: PathBuf, toolkit: Toolkit) -> BuildOptions {
        let base_images = Env::ALL
            .into_iter()
            .map(|env| (env.as_str(), format!("hkube/{env}:bookworm")))
            .collect();
        BuildOptions {
            dir,
            toolkit,
            base_images,
            repository: "hkube/algorithms".into(),
            timeout: Duration::from_secs(30 * 60),
            limits: builder::Limits::default(),
        }
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

struct Inner {
    options: BuildOptions,
    docker: DockerEngine,
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
        docker: DockerEngine,
        store: Arc<dyn Store>,
        engine: Handle,
        deployer: Arc<dyn Deployer>,
    ) -> BuildService {
        BuildService {
            inner: Arc::new(Inner {
                options,
                docker,
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
            run(&inner, &id).await;
            if let Ok(mut running) = inner.running.lock() {
                running.remove(&id);
            }
        });
        if let Ok(mut running) = self.inner.running.lock() {
            running.insert(build_id, task.abort_handle());
        }
    }
}

/// The record of a running build, written to the store at most every half second while the
/// log grows (and at every state change).
struct Progress<'a> {
    inner: &'a Inner,
    record: Value,
    log: String,
    flushed: Instant,
}

impl Progress<'_> {
    fn set(&mut self, status: &str, progress: u32) {
        self.record["status"] = json!(status);
        self.record["progress"] = json!(progress);
        self.flush();
    }

    fn line(&mut self, line: &str) {
        self.log.push_str(line);
        self.log.push('\n');
        if self.flushed.elapsed() > Duration::from_millis(500) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        self.record["result"]["data"] = json!(self.log);
        self.record["timestamp"] = json!(now_ms());
        let _ = self.inner.store.put_build(&self.record);
        self.flushed = Instant::now();
    }

    fn fail(&mut self, error: &str) {
        self.line(error);
        self.record["error"] = json!(error);
        self.record["result"]["errors"] = json!(error);
        self.record["endTime"] = json!(now_ms());
        self.set("failed", 80);
    }
}

async fn run(inner: &Inner, build_id: &str) {
    let Some(record) = inner.store.build(build_id) else {
        return;
    };
    if !unfinished(&record) {
        return;
    }
    let mut progress = Progress {
        inner,
        record,
        log: String::new(),
        flushed: Instant::now(),
    };
    progress.set("creating", 5);
    let timeout = inner.options.timeout;
    let outcome = tokio::time::timeout(timeout, build(inner, build_id, &mut progress)).await;
    match outcome {
        Ok(Ok((image, algorithm))) => {
            progress.record["algorithmImage"] = json!(image);
            progress.record["imageTag"] = json!(image.rsplit(':').next().unwrap_or_default());
            progress.record["endTime"] = json!(now_ms());
            progress.set("completed", 100);
            complete(inner, &mut progress, algorithm, build_id).await;
        }
        Ok(Err(error)) => progress.fail(&error),
        Err(_) => progress.fail(&format!("build timed out after {} s", timeout.as_secs())),
    }
}

/// Unpacks, checks, and makes the image; returns its tag and the algorithm to version.
async fn build(
    inner: &Inner,
    build_id: &str,
    progress: &mut Progress<'_>,
) -> Result<(String, Algorithm), String> {
    let folder = inner.options.dir.join(build_id);
    let code = folder.join("code");
    let _ = std::fs::remove_dir_all(&code);
    let mut algorithm: Algorithm = serde_json::from_value(progress.record["algorithm"].clone())
        .map_err(|e| format!("the build record's algorithm is unreadable: {e}"))?;
    progress.set("active", 20);
    match algorithm.git_repository.as_mut() {
        Some(repository) if progress.record["type"] == "Git" => {
            let (source, commit) =
                git::source_at(repository).ok_or("the build's gitRepository names no commit")?;
            progress.line(&format!("checking out {commit} of {}", source.url));
            let checkout = builder::git::checkout(&source, &commit, &code)
                .await
                .map_err(|e| format!("cannot check out the code: {e}"))?;
            progress.line(&format!(
                "commit {} ({}): {}",
                checkout.commit_id,
                checkout.timestamp,
                checkout.message.lines().next().unwrap_or_default()
            ));
            if let Some(commit) = repository.commit.as_mut() {
                commit["id"] = json!(checkout.commit_id);
                commit["message"] = json!(checkout.message);
                commit["timestamp"] = json!(checkout.timestamp);
            }
        }
        _ => {
            progress.line("unpacking the code");
            let (upload, target, limits) =
                (folder.join("upload"), code.clone(), inner.options.limits);
            let unpacked =
                tokio::task::spawn_blocking(move || builder::unpack(&upload, &target, limits))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("cannot unpack the code: {e}"))?;
            progress.line(&format!(
                "unpacked {} entries, {} bytes",
                unpacked.entries, unpacked.bytes
            ));
        }
    }
    progress.set("active", 40);
    let files: Vec<String> = builder::context::walk(&code)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(relative, _)| relative)
        .collect();
    let declared = algorithm.env.map(|env| env.as_str());
    let located = env::locate(declared, algorithm.entry_point.as_deref(), &files)
        .map_err(|e| e.to_string())?;
    let code_dir = match &located.folder {
        Some(top) => {
            progress.line(&format!(
                "the archive holds one folder, {top}/: building from it"
            ));
            code.join(top)
        }
        None => code.clone(),
    };
    let env = located.env;
    progress.line(&format!("env {env}, entry point {}", located.entry_point));
    algorithm.env = CodeEnv::parse(env.as_str());
    algorithm.entry_point = Some(located.entry_point);
    progress.set("active", 60);
    let inputs = ImageInputs {
        algorithm: algorithm.name.clone(),
        env,
        code_dir,
        base_image: algorithm.base_image.clone(),
        dependency_install_cmd: algorithm.dependency_install_cmd.clone(),
    };
    let default_base = inner
        .options
        .base_images
        .get(env.as_str())
        .cloned()
        .unwrap_or_default();
    let context = Context::assemble(&inner.options.toolkit, &inputs, &default_base)
        .map_err(|e| e.to_string())?;
    let tag = context.tag(&format!("{}/{}", inner.options.repository, algorithm.name));
    if inner
        .docker
        .image_id(&tag)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        progress.line(&format!(
            "image {tag} exists: same inputs, nothing to build"
        ));
        return Ok((tag, algorithm));
    }
    progress.line(&format!(
        "building image {tag} ({} files in the context)",
        context.len()
    ));
    let labels = vec![
        ("io.hkube.algorithm".to_string(), algorithm.name.clone()),
        ("io.hkube.build".to_string(), build_id.to_string()),
    ];
    // The engine's output reaches the record while the build runs.
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let running = inner.docker.build(&context, &tag, &labels, move |event| {
        let _ = tx.send(event);
    });
    let mut running = Box::pin(running);
    let on_event = |progress: &mut Progress<'_>, event| match event {
        BuildEvent::Line(line) => progress.line(&line),
        BuildEvent::Step { at, of } => {
            let percent = 60 + 35 * at / of.max(1);
            progress.set("active", percent.min(95));
        }
    };
    let result = loop {
        tokio::select! {
            result = &mut running => break result,
            Some(event) = events.recv() => on_event(progress, event),
        }
    };
    while let Ok(event) = events.try_recv() {
        on_event(progress, event);
    }
    drop(running);
    result.map_err(|e| e.to_string())?;
    Ok((tag, algorithm))
}

/// A completed build becomes a version; current when HKube's rule allows.
async fn complete(
    inner: &Inner,
    progress: &mut Progress<'_>,
    mut algorithm: Algorithm,
    build_id: &str,
) {
    let image = progress.record["algorithmImage"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = algorithm.name.clone();
    algorithm.algorithm_image = Some(image);
    algorithm.options.pending = false;
    let id = version_id();
    let mut version = AlgorithmVersion::new(id.clone(), algorithm.clone(), now_ms());
    version
        .algorithm
        .extra
        .insert("buildId".into(), json!(build_id));
    if let Err(error) = inner.store.add_algorithm_version(version) {
        progress.line(&format!("cannot record the version: {error}"));
        progress.flush();
        return;
    }
    algorithm.extra.insert("version".into(), json!(id));
    let first = inner
        .store
        .algorithm(&name)
        .is_none_or(|stored| stored.algorithm_image.is_none());
    let running = inner
        .engine
        .executions_using(&name)
        .await
        .unwrap_or_default();
    if first || running.is_empty() {
        algorithm.extra.remove("errors");
        if inner.store.put_algorithm(algorithm.clone()).is_ok() {
            inner.deployer.deploy(&algorithm);
            progress.line(&format!("version {id} of {name} is now current"));
        }
    } else if let Some(mut stored) = inner.store.algorithm(&name) {
        // HKube's 901: a newer version exists; applying it is the user's call.
        stored.extra.insert("errors".into(), json!([901]));
        let _ = inner.store.put_algorithm(stored);
        progress.line(&format!(
            "version {id} of {name} was created but not applied: {} running jobs use the algorithm",
            running.len()
        ));
    }
    progress.flush();
}
