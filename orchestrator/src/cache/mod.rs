//! hkube's result cache: a task of a node with `cache: true` whose algorithm version already
//! ran on the same resolved input takes the kept output, and its algorithm does not run.
//!
//! [`CachingExecutor`] sits in front of the real executor: the engine knows only that a task
//! may come back as cached (`TaskReporter::finish_cached`, counted as `data.cached` in the
//! job's status). The key is [`key`]'s digest; outputs are kept in the [`Store`] (SQLite for
//! a server), which deletes them at retention. Lookups and writes run off the engine loop.

pub mod key;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use sha2::{Digest, Sha256};

use crate::engine::{Executor, TaskKey, TaskOutcome, TaskSpec};
use crate::store::Store;

/// An [`Executor`] that answers cached tasks from the store and passes the rest on.
pub struct CachingExecutor {
    inner: Arc<dyn Executor>,
    store: Arc<dyn Store>,
    /// Digests of code registered from folders, by algorithm name ([`folder_digest`]).
    code_digests: RwLock<HashMap<String, String>>,
    /// Tasks whose cache lookup is under way; a task cancelled meanwhile is not passed on.
    looking: Arc<Mutex<HashSet<TaskKey>>>,
}

impl std::fmt::Debug for CachingExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingExecutor").finish_non_exhaustive()
    }
}

impl CachingExecutor {
    pub fn new(inner: Arc<dyn Executor>, store: Arc<dyn Store>) -> CachingExecutor {
        CachingExecutor {
            inner,
            store,
            code_digests: RwLock::new(HashMap::new()),
            looking: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// The code of `algorithm` is the folder with this digest: an edit of the folder is a new
    /// version for the cache (a stored descriptor alone does not change with it).
    pub fn set_code_digest(&self, algorithm: &str, digest: String) {
        if let Ok(mut digests) = self.code_digests.write() {
            digests.insert(algorithm.to_string(), digest);
        }
    }

    fn code_digest(&self, algorithm: &str) -> Option<String> {
        self.code_digests.read().ok()?.get(algorithm).cloned()
    }
}

/// A task's key, from its stored algorithm and its input; `None` when the algorithm is not
/// stored (the task then runs, and fails, as it would without the cache).
fn key_of(
    store: &dyn Store,
    algorithm: &str,
    input: &[serde_json::Value],
    code_digest: Option<&str>,
) -> Option<String> {
    let descriptor = serde_json::to_value(store.algorithm(algorithm)?).ok()?;
    let version = key::algorithm_digest(&descriptor, code_digest);
    Some(key::task_key(&version, input))
}

impl Executor for CachingExecutor {
    fn submit(&self, mut task: TaskSpec) {
        if !task.cache {
            return self.inner.submit(task);
        }
        let code = self.code_digest(&task.algorithm_name);
        let (store, inner, looking) =
            (self.store.clone(), self.inner.clone(), self.looking.clone());
        if let Ok(mut looking) = looking.lock() {
            looking.insert(task.key);
        }
        // The algorithm and the cache are read from the database: never on the caller's
        // thread, which is the engine loop's.
        tokio::spawn(async move {
            let (algorithm, input) = (task.algorithm_name.clone(), task.input.clone());
            let lookup = {
                let store = store.clone();
                tokio::task::spawn_blocking(move || {
                    let cache_key = key_of(store.as_ref(), &algorithm, &input, code.as_deref());
                    let hit = cache_key.as_deref().and_then(|k| store.cached_result(k));
                    (cache_key, hit)
                })
            };
            // A failed lookup runs the task.
            let (cache_key, hit) = lookup.await.unwrap_or((None, None));
            let still_wanted = looking
                .lock()
                .map(|mut l| l.remove(&task.key))
                .unwrap_or(false);
            if !still_wanted {
                return;
            }
            if let Some(output) = hit {
                task.reporter.finish_cached(output);
                return;
            }
            let Some(cache_key) = cache_key else {
                return inner.submit(task);
            };
            let job_id = task.job_id.to_string();
            task.reporter = task
                .reporter
                .clone()
                .with_finish_hook(Arc::new(move |outcome| {
                    if let TaskOutcome::Succeeded(output) = outcome {
                        if key::keepable(output) {
                            let (store, cache_key, job_id, output) = (
                                store.clone(),
                                cache_key.clone(),
                                job_id.clone(),
                                output.clone(),
                            );
                            // Kept off the reporting thread; a failure costs only a later rerun.
                            std::thread::spawn(move || {
                                if let Err(error) =
                                    store.put_cached_result(&cache_key, &job_id, &output)
                                {
                                    eprintln!(
                                        "hkube: result cache: an output was not kept: {error}"
                                    );
                                }
                            });
                        }
                    }
                }));
            inner.submit(task);
        });
    }

    fn cancel(&self, key: TaskKey) {
        let was_looking = self
            .looking
            .lock()
            .map(|mut l| l.remove(&key))
            .unwrap_or(false);
        if !was_looking {
            self.inner.cancel(key);
        }
    }

    fn job_ended(&self, job_id: &str, keep: &[String]) {
        self.inner.job_ended(job_id, keep);
    }
}

/// The digest of one code file (a wasm module): its bytes. `None` when it cannot be read.
pub fn file_digest(file: &Path) -> Option<String> {
    let bytes = std::fs::read(file).ok()?;
    Some(
        Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// The digest of a code folder: every file's path and bytes, in path order (links are not
/// followed). `None` when the folder cannot be read.
pub fn folder_digest(folder: &Path) -> Option<String> {
    fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if kind.is_dir() {
                // Dependency environments and caches are not the algorithm's code.
                let name = entry.file_name();
                if [".git", "__pycache__", "node_modules", ".venv"]
                    .iter()
                    .any(|skip| name == *skip)
                {
                    continue;
                }
                walk(&path, files)?;
            } else if kind.is_file() {
                files.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(folder, &mut files).ok()?;
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let relative = file.strip_prefix(folder).ok()?;
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(std::fs::read(&file).ok()?);
        hasher.update([0]);
    }
    Some(
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::{json, Value};

    use super::*;
    use crate::engine::{Engine, InProcessExecutor, Run};
    use crate::store::MemoryStore;

    /// Runs a one-node pipeline of the counting algorithm to its end: (result, status).
    async fn run(engine: &crate::engine::Handle, input: Value, cache: bool) -> (Value, Value) {
        let pipeline = json!({"name": "c", "nodes": [
            {"nodeName": "A", "algorithmName": "count", "input": [input], "cache": cache}
        ]});
        let job = engine.exec_raw(pipeline).await.unwrap();
        let result = engine.wait(&job).await.unwrap();
        (result, engine.status(&job).await.unwrap())
    }

    #[tokio::test]
    async fn a_cached_node_runs_its_algorithm_once_per_input_and_version() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let mut inner = InProcessExecutor::default();
        inner.register(
            "count",
            Arc::new(move |task| {
                counted.fetch_add(1, Ordering::SeqCst);
                Run::Now(TaskOutcome::Succeeded(json!({"got": task.input.clone()})))
            }),
        );
        let store = Arc::new(MemoryStore::new());
        let algorithm = |image: &str| {
            crate::spec::parse_algorithm(json!({"name": "count", "algorithmImage": image})).unwrap()
        };
        store.put_algorithm(algorithm("count:1")).unwrap();
        let executor = Arc::new(CachingExecutor::new(Arc::new(inner), store.clone()));
        let engine = Engine::spawn(executor, store.clone());

        let (first, status) = run(&engine, json!(1), true).await;
        assert_eq!(first["data"][0]["result"], json!({"got": [1]}), "{first}");
        assert!(status["data"].get("cached").is_none(), "{status}");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Kept from a thread of its own: wait until it is there.
        // Outputs are kept from a thread of their own: wait until one is there.
        let kept = |image: &str, input: Value| {
            let version =
                key::algorithm_digest(&serde_json::to_value(algorithm(image)).unwrap(), None);
            let key = key::task_key(&version, &[input]);
            let store = store.clone();
            async move {
                for _ in 0..200 {
                    if store.cached_result(&key).is_some() {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                panic!("the output was not kept");
            }
        };
        kept("count:1", json!(1)).await;
        let (second, status) = run(&engine, json!(1), true).await;
        assert_eq!(second["data"], first["data"]);
        assert_eq!(status["data"]["cached"], 1, "{status}");
        assert_eq!(status["status"], "completed");
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "the second run took the cache"
        );

        // Another input, no cache asked for, another version: it runs.
        run(&engine, json!(2), true).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        run(&engine, json!(1), false).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        store.put_algorithm(algorithm("count:2")).unwrap();
        run(&engine, json!(1), true).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        kept("count:1", json!(2)).await;
        kept("count:2", json!(1)).await;
        assert_eq!(store.clear_result_cache().unwrap(), 3);
    }

    #[test]
    fn a_folder_digest_follows_its_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("main.py"),
            "def start(a, h):\n    return 1\n",
        )
        .unwrap();
        let before = folder_digest(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join("__pycache__")).unwrap();
        std::fs::write(dir.path().join("__pycache__/main.pyc"), "x").unwrap();
        assert_eq!(folder_digest(dir.path()).unwrap(), before);
        std::fs::write(
            dir.path().join("main.py"),
            "def start(a, h):\n    return 2\n",
        )
        .unwrap();
        assert_ne!(folder_digest(dir.path()).unwrap(), before);
    }
}
