//! One build, from its record to a version: the code (an upload unpacked, or a git checkout),
//! its language and entry point, the backend's step (an image, or a local environment), and
//! the version it becomes.

use std::time::{Duration, Instant};

use builder::env;
use serde_json::{json, Value};

use super::{git, image, local, unfinished, Backend, Inner};
use crate::engine::{now_ms, version_id};
use crate::spec::{Algorithm, CodeEnv};
use crate::store::AlgorithmVersion;

impl image::Report for Progress<'_> {
    fn line(&mut self, line: &str) {
        Progress::line(self, line);
    }

    fn set(&mut self, status: &str, progress: u32) {
        Progress::set(self, status, progress);
    }
}

/// The record of a running build, written to the store at most every half second while the
/// log grows (and at every state change).
pub(super) struct Progress<'a> {
    inner: &'a Inner,
    record: Value,
    log: String,
    flushed: Instant,
}

impl Progress<'_> {
    pub(super) fn set(&mut self, status: &str, progress: u32) {
        self.record["status"] = json!(status);
        self.record["progress"] = json!(progress);
        self.flush();
    }

    pub(super) fn line(&mut self, line: &str) {
        self.log.push_str(line);
        self.log.push('\n');
        if self.flushed.elapsed() > Duration::from_millis(500) {
            self.flush();
        }
    }

    pub(super) fn flush(&mut self) {
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

pub(super) async fn run(inner: &Inner, build_id: &str) {
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
            // "completed" is said once the version is recorded, current and registered and
            // old images are gone: a client that waits for it (`hkube algorithm apply`) and
            // then runs the algorithm or lists its images sees the build's whole effect.
            complete(inner, &mut progress, algorithm, build_id).await;
            progress.set("completed", 100);
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
            let upload = folder.join("upload");
            if is_module(&upload) {
                // A bare module: the code is that one file, named by the entry point.
                let entry = algorithm
                    .entry_point
                    .clone()
                    .unwrap_or_else(|| super::BARE_MODULE.into());
                let entry = builder::unpack::policy::entry_path(&entry)
                    .map_err(|e| format!("entryPoint {entry}: {e}"))?;
                let target = code.join(&entry);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                std::fs::copy(&upload, &target)
                    .map_err(|e| format!("keeping the module as {}: {e}", target.display()))?;
            } else {
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
    if env == env::Env::Wasm {
        // Refused here, with wasmtime's message, whatever runs it; its code is now in the cache.
        let module = code_dir.join(algorithm.entry_point.as_deref().unwrap_or_default());
        progress.line(&format!("compiling {} with wasmtime", module.display()));
        check_module(inner, module).await?;
    }
    let image = match &inner.backend {
        // On the Docker executor a module runs in a container like any algorithm: its image
        // is the module and the sidecar, which runs it (templates/wasm, docs/wasm.md).
        Backend::Docker(docker, toolkit) => {
            let step = image::Step {
                docker,
                toolkit,
                build_id,
            };
            image::build(&inner.options, step, &algorithm, env, code_dir, progress).await?
        }
        // The local executor runs a module in hkube's process: its code is kept as any code.
        Backend::Local => local::build(inner, &algorithm, env, &code_dir, progress).await?,
    };
    Ok((image, algorithm))
}

fn is_module(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok()
        && magic == super::trigger::WASM_MAGIC
}

/// The module compiles (wasmtime's message otherwise), and its code is now in the cache.
async fn check_module(inner: &Inner, module: std::path::PathBuf) -> Result<(), String> {
    let cache = inner.options.wasm_cache.clone();
    tokio::task::spawn_blocking(move || {
        let bytes =
            std::fs::read(&module).map_err(|e| format!("reading {}: {e}", module.display()))?;
        crate::executor::wasm::validate(&bytes, cache.as_deref())
            .map_err(|e| format!("the module {e}"))
    })
    .await
    .map_err(|e| e.to_string())?
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
            // Registered before the build is reported complete: a job started on the answer
            // finds the algorithm's pool.
            if let Err(error) = inner.deployer.register(&algorithm).await {
                progress.line(&format!("{name} cannot run yet: {error}"));
            }
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
    // Images of versions nobody can go back to any more (issue 17: 30 images after a round of
    // tests) go once the new version is recorded.
    if let Backend::Docker(docker, _) = &inner.backend {
        for tag in image::prune(inner, docker, &name).await {
            progress.line(&format!("removed the old image {tag}"));
        }
    }
    progress.flush();
}
