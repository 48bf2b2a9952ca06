//! The WASM executor: `env: wasm` algorithms, WebAssembly modules run in process by wasmtime.
//!
//! No process starts per task and no module compiles per task. Registering an algorithm
//! compiles its module once (its code is kept on disk, see [`module`]) and
//! resolves its imports into an `InstancePre`; each task then gets a fresh instance with its
//! own store (its memory, its WASI context, its limits) on a thread of its own, so the
//! engine's loop never waits on wasm code. The ABI is a WASI command ([`task`]): the args
//! object on stdin, the result on stdout, the log on stderr.
//!
//! Where tasks run: `hkube server` and `hkube run` hand the executor to the worker pool
//! ([`WasmExecutor::placed_by`]), so a wasm algorithm's workers are placed by the scheduler
//! like any other's: each is a thread started by the [`launcher`], holding its algorithm's cpu
//! and memory request of the same inventory, its tasks queued by priority with pending
//! reasons. Without a pool (an embedding, most of the tests) the executor runs tasks on its
//! own threads, one per core.
//!
//! Limits per task: the memory `mem` allows (a module asking for more traps, saying so), the
//! algorithm's time limit, and a stop (the node's ttl, a stopped job) that ends the instance
//! at the next epoch tick. No directory is open to a module but those its algorithm declares;
//! a module has no sockets. A module that traps, loops or runs out of memory fails its own
//! task and nothing else: the thread goes on with the next task.
//!
//! [`route::Routed`] is the seam: the engine's one executor, sending the tasks of registered
//! wasm algorithms here and every other task to the process (or container) executor.

mod deploy;
pub mod launcher;
pub mod route;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::engine::{Executor, TaskKey, TaskOutcome, TaskSpec};
use crate::executor::algorithm::{Language, WorkerAlgorithm};
use crate::executor::launcher::Launcher;
use crate::executor::pool::WorkerPool;

pub use deploy::{wasm_algorithm, WasmDeployer};
use wrapper::wasm::module;
pub use wrapper::wasm::module::validate;
use wrapper::wasm::runner::Runner;
use wrapper::wasm::threads::Threads;
pub use wrapper::wasm::Preopen;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start the wasm executor: {0}")]
    Start(String),
    #[error("algorithm {name}: cannot read its module {path}: {reason}")]
    Read {
        name: String,
        path: PathBuf,
        reason: String,
    },
    #[error("algorithm {name}: x-hkube.dirs names {path}, which is not a folder: create it in the code folder, or remove it from dirs")]
    Dir { name: String, path: PathBuf },
    #[error("algorithm {name}: its module {path} {reason}")]
    Compile {
        name: String,
        path: PathBuf,
        reason: String,
    },
}

/// A wasm algorithm as the executor runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct WasmAlgorithm {
    pub name: String,
    /// The `.wasm` file (the code folder joined with `entryPoint`).
    pub module: PathBuf,
    /// `mem` as written (for messages) and in MiB: the most linear memory an instance may have.
    pub mem: String,
    pub mem_mib: u64,
    /// Longest a task may run; `None`: until it is stopped (the node's ttl stops it).
    pub time_limit: Option<Duration>,
    pub dirs: Vec<Preopen>,
    /// Environment variables the module sees (`algorithmEnv`'s plain values).
    pub env: Vec<(String, String)>,
    /// What one worker holds of the scheduler's inventory (cpu, `mem` with its reserve), and
    /// the pool's bounds: where the executor is placed by a pool ([`WasmExecutor::placed_by`]).
    pub request: crate::scheduler::Request,
    pub min_hot_workers: usize,
    /// 0: as many as the inventory holds.
    pub max_workers: usize,
}

impl WasmAlgorithm {
    /// What each task's store is given (the module runner's view of the algorithm).
    pub fn sandbox(&self) -> wrapper::wasm::Sandbox {
        wrapper::wasm::Sandbox {
            name: self.name.clone(),
            mem: self.mem.clone(),
            mem_mib: self.mem_mib,
            time_limit: self.time_limit,
            dirs: self.dirs.clone(),
            env: self.env.clone(),
        }
    }

    /// The algorithm as a worker pool places it: its workers are the wasm launcher's threads.
    fn worker_algorithm(&self) -> WorkerAlgorithm {
        let code_dir = self.module.parent().map(PathBuf::from).unwrap_or_default();
        let entry_point = self
            .module
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        WorkerAlgorithm {
            name: self.name.clone(),
            language: Language::Wasm,
            code_dir,
            entry_point,
            min_hot_workers: self.min_hot_workers,
            max_workers: self.max_workers,
            request: self.request,
            classpath: None,
            container: None,
            prepared: Some(Default::default()),
            command: None,
            env: self.env.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct WasmOptions {
    /// Where wasmtime keeps compiled modules; `None`: compile at each start.
    pub cache_dir: Option<PathBuf>,
    /// A task's stderr goes to `<log_dir>/<jobId>/<taskId>.log` (when it wrote any).
    pub log_dir: PathBuf,
    /// Threads running tasks when no pool places them; 0: one per core.
    pub threads: usize,
}

impl Default for WasmOptions {
    fn default() -> Self {
        WasmOptions {
            cache_dir: None,
            log_dir: std::env::temp_dir().join("hkube-local").join("logs"),
            threads: 0,
        }
    }
}

/// A registered algorithm, ready to instantiate.
type Loaded = wrapper::wasm::runner::Prepared;

/// One task waiting for a thread.
struct Job {
    loaded: Arc<Loaded>,
    task: TaskSpec,
    stop: Arc<AtomicBool>,
}

struct Shared {
    runtime: module::Runtime,
    options: WasmOptions,
    algorithms: RwLock<HashMap<String, Arc<Loaded>>>,
    /// The stop flag of every task submitted and not yet ended, by (job, node, task).
    running: Mutex<HashMap<(u64, u32, u32), Arc<AtomicBool>>>,
    /// Cranelift compiles still running behind Winch's code ([`WasmExecutor::settle`]).
    tiering: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// The threads the pool's wasm workers run on ([`launcher`]), one parked from the start.
    threads: Threads,
}

/// A handle to the WASM executor. Cheap to clone; its threads end when the last clone goes.
#[derive(Clone)]
pub struct WasmExecutor {
    shared: Arc<Shared>,
    queue: std::sync::mpsc::Sender<Job>,
    /// The pool that places this executor's workers, when it is placed by one: its tasks go
    /// there, and its own threads stay idle.
    pool: Option<WorkerPool>,
}

impl std::fmt::Debug for WasmExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WasmExecutor")
    }
}

impl WasmExecutor {
    /// Starts the executor's threads. Call it inside a tokio runtime: WASI's host calls run
    /// on it.
    pub fn start(options: WasmOptions) -> Result<WasmExecutor, Error> {
        let runtime = module::Runtime::new(options.cache_dir.as_deref()).map_err(Error::Start)?;
        let threads = match options.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let shared = Arc::new(Shared {
            runtime,
            options,
            algorithms: RwLock::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            tiering: Mutex::new(Vec::new()),
            // A worker's thread waits for the next worker when its own ends, up to one per
            // core: a worker's start is then a message to a thread, not a thread's creation.
            threads: Threads::new("hkube-wasm-worker", threads),
        });
        shared.threads.warm().map_err(Error::Start)?;
        let (queue, jobs) = std::sync::mpsc::channel::<Job>();
        let jobs = Arc::new(Mutex::new(jobs));
        let tokio = tokio::runtime::Handle::try_current().ok();
        for index in 0..threads {
            let (jobs, shared, tokio) = (Arc::clone(&jobs), Arc::clone(&shared), tokio.clone());
            std::thread::Builder::new()
                .name(format!("hkube-wasm-{index}"))
                .spawn(move || {
                    // WASI's host functions are async underneath; they run on this runtime.
                    let _entered = tokio.as_ref().map(|handle| handle.enter());
                    // A function-ABI module's instance, kept between this thread's tasks.
                    let mut runner = Runner::default();
                    loop {
                        let next = match jobs.lock() {
                            Ok(jobs) => jobs.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = next else { return };
                        shared.run(&mut runner, job);
                    }
                })
                .map_err(|e| Error::Start(format!("cannot start a thread: {e}")))?;
        }
        Ok(WasmExecutor {
            shared,
            queue,
            pool: None,
        })
    }

    /// The launcher a worker pool starts this executor's workers with (give it to the pool's
    /// options, `LocalOptions::launchers`, then [`WasmExecutor::placed_by`] that pool).
    pub fn launcher(&self) -> Arc<dyn Launcher> {
        Arc::new(launcher::WasmLauncher::new(Arc::clone(&self.shared)))
    }

    /// This executor with its tasks placed by `pool`, like any other algorithm's: a worker
    /// (a thread of this process, started by [`WasmExecutor::launcher`]) takes the cpu and
    /// memory its algorithm requests from the pool's inventory, tasks queue by priority and
    /// say why they wait. Algorithms registered from now on are registered with the pool too.
    pub fn placed_by(mut self, pool: WorkerPool) -> WasmExecutor {
        self.pool = Some(pool);
        self
    }

    /// Compiles the algorithm's module (or loads it from the cache) and makes it runnable;
    /// a version registered again replaces the previous one for the tasks that start after.
    pub async fn register(&self, algorithm: WasmAlgorithm) -> Result<(), Error> {
        let shared = Arc::clone(&self.shared);
        let compile = move || {
            if let Some(dir) = algorithm.dirs.iter().find(|dir| !dir.host.is_dir()) {
                return Err(Error::Dir {
                    name: algorithm.name.clone(),
                    path: dir.host.clone(),
                });
            }
            // A module file the cache has seen unchanged loads without being read or hashed.
            let tiered =
                shared
                    .runtime
                    .prepare_file(&algorithm.module)
                    .map_err(|error| match error {
                        module::FileError::Read(e) => Error::Read {
                            name: algorithm.name.clone(),
                            path: algorithm.module.clone(),
                            reason: e.to_string(),
                        },
                        module::FileError::Module(reason) => Error::Compile {
                            name: algorithm.name.clone(),
                            path: algorithm.module.clone(),
                            reason,
                        },
                    })?;
            let name = algorithm.name.clone();
            let worker = algorithm.worker_algorithm();
            let sandbox = algorithm.sandbox();
            let first = Arc::new(Loaded {
                sandbox: sandbox.clone(),
                pre: tiered.ready,
            });
            if let Ok(mut algorithms) = shared.algorithms.write() {
                algorithms.insert(name.clone(), Arc::clone(&first));
            }
            if let Some(optimized) = tiered.optimized {
                shared.tier_up(name, first, sandbox, optimized);
            }
            Ok(worker)
        };
        // On this thread: a cached module loads in a fraction of a millisecond, which a hop to
        // the blocking pool and back would double (a fresh thread's first allocations
        // included). `block_in_place` hands this worker's other tasks to another thread
        // meanwhile; only a current-thread runtime, which cannot, sends it to the pool.
        let worker = match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(compile)?
            }
            Ok(handle) => handle
                .spawn_blocking(compile)
                .await
                .map_err(|e| Error::Start(format!("the compile thread failed: {e}")))??,
            Err(_) => compile()?,
        };
        // After the module is loaded: a worker the pool starts finds it.
        if let Some(pool) = &self.pool {
            pool.register(worker);
        }
        Ok(())
    }

    /// The algorithm is no longer a wasm one (replaced by another kind, or deleted).
    pub fn forget(&self, name: &str) {
        if let Ok(mut algorithms) = self.shared.algorithms.write() {
            algorithms.remove(name);
        }
    }

    /// Whether `name`'s tasks run Cranelift's code (`false`: Winch's while Cranelift compiles,
    /// or not registered).
    pub fn runs_optimized(&self, name: &str) -> bool {
        let algorithms = self.shared.algorithms.read();
        algorithms.is_ok_and(|algorithms| {
            algorithms
                .get(name)
                .is_some_and(|loaded| self.shared.runtime.is_optimized(&loaded.pre))
        })
    }

    /// Waits up to `limit` for the Cranelift compiles still running behind Winch's code: their
    /// code reaches the module cache before they end, so a process about to exit (`hkube
    /// run`) leaves the next start optimised code to load. Says whether none is left.
    pub fn settle(&self, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = match self.shared.tiering.lock() {
                Ok(mut tiering) => {
                    tiering.retain(|waiter| !waiter.is_finished());
                    tiering.len()
                }
                Err(_) => return false,
            };
            if left == 0 {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether `name` is a registered wasm algorithm.
    pub fn runs(&self, name: &str) -> bool {
        self.shared
            .algorithms
            .read()
            .is_ok_and(|algorithms| algorithms.contains_key(name))
    }
}

impl Executor for WasmExecutor {
    fn submit(&self, task: TaskSpec) {
        if let Some(pool) = &self.pool {
            // Placed by the pool: queued there with every other algorithm's tasks.
            if self.runs(&task.algorithm_name) {
                pool.submit(task);
            } else {
                let why = format!(
                    "algorithm {} is not a registered wasm algorithm",
                    task.algorithm_name
                );
                task.reporter.finish(TaskOutcome::Crashed(why));
            }
            return;
        }
        let loaded = self
            .shared
            .algorithms
            .read()
            .ok()
            .and_then(|algorithms| algorithms.get(&*task.algorithm_name).cloned());
        let Some(loaded) = loaded else {
            let why = format!(
                "algorithm {} is not a registered wasm algorithm",
                task.algorithm_name
            );
            task.reporter.finish(TaskOutcome::Crashed(why));
            return;
        };
        let stop = Arc::new(AtomicBool::new(false));
        if let Ok(mut running) = self.shared.running.lock() {
            running.insert(task.key.slot(), Arc::clone(&stop));
        }
        if let Err(std::sync::mpsc::SendError(job)) = self.queue.send(Job { loaded, task, stop }) {
            job.task.reporter.finish(TaskOutcome::Crashed(
                "the wasm executor has shut down".into(),
            ));
        }
    }

    fn cancel(&self, key: TaskKey) {
        if !self.cancel_held(key) {
            if let Some(pool) = &self.pool {
                pool.cancel(key);
            }
        }
    }
}

impl WasmExecutor {
    /// Stops the task if this executor's own threads hold it (queued or running); says
    /// whether it did. A task placed by a pool is the pool's to stop.
    pub fn cancel_held(&self, key: TaskKey) -> bool {
        let Ok(running) = self.shared.running.lock() else {
            return false;
        };
        match running.get(&key.slot()) {
            Some(stop) => {
                stop.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }
}

impl Shared {
    /// Once Cranelift's code of `name`'s module is ready, it replaces Winch's (`first`) for
    /// the tasks that start after; unless the algorithm was registered again or forgotten
    /// meanwhile. A compile that fails leaves Winch's code running.
    fn tier_up(
        self: &Arc<Self>,
        name: String,
        first: Arc<Loaded>,
        sandbox: wrapper::wasm::Sandbox,
        optimized: std::thread::JoinHandle<Result<wrapper::wasm::abi::Ready, String>>,
    ) {
        let shared = Arc::clone(self);
        let waiter = std::thread::Builder::new()
            .name("hkube-wasm-tier-up".into())
            .spawn(move || {
                let Ok(Ok(pre)) = optimized.join() else {
                    return;
                };
                if let Ok(mut algorithms) = shared.algorithms.write() {
                    if let Some(current) = algorithms.get_mut(&name) {
                        if Arc::ptr_eq(current, &first) {
                            *current = Arc::new(Loaded { sandbox, pre });
                        }
                    }
                }
            });
        if let (Ok(waiter), Ok(mut tiering)) = (waiter, self.tiering.lock()) {
            tiering.retain(|waiter| !waiter.is_finished());
            tiering.push(waiter);
        }
    }

    fn run(&self, runner: &mut Runner, job: Job) {
        let Job { loaded, task, stop } = job;
        // A task stopped while it waited is not started: the engine has recorded its end.
        if !stop.load(Ordering::Relaxed) {
            task.reporter.started();
            let args = args_json(&task);
            let ran = runner.run(&loaded, args, &stop);
            if !ran.log.is_empty() {
                self.write_log(&task, &ran.log);
            }
            task.reporter.finish(match ran.result {
                Ok(value) => TaskOutcome::Succeeded(value),
                Err(error) => TaskOutcome::Failed(error),
            });
        }
        if let Ok(mut running) = self.running.lock() {
            // Only this attempt's flag: a retry of the same task may have been submitted.
            if running
                .get(&task.key.slot())
                .is_some_and(|flag| Arc::ptr_eq(flag, &stop))
            {
                running.remove(&task.key.slot());
            }
        }
    }

    fn write_log(&self, task: &TaskSpec, log: &[u8]) {
        // Job ids are ours ([0-9a-z]); anything else is not a folder name to use.
        if !task.job_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return;
        }
        let folder = self.options.log_dir.join(&*task.job_id);
        let _ = std::fs::create_dir_all(&folder);
        let _ = std::fs::write(folder.join(format!("{}.log", task.task_id)), log);
    }
}

fn args_json(task: &TaskSpec) -> Vec<u8> {
    wrapper::wasm::args::Args {
        input: &task.input,
        job_id: &task.job_id,
        task_id: task.task_id.as_str(),
        node_name: &task.node_name,
        algorithm_name: &task.algorithm_name,
        pipeline_name: &task.pipeline_name,
        batch_index: task.batch_index,
        extra_data: task.extra_data.as_deref(),
    }
    .to_json()
}
