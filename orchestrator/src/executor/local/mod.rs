//! The local executor, hkube's embedded default: algorithms run as processes on this machine,
//! each behind its own in-process sidecar.
//!
//! A pool per algorithm keeps warm workers (`minHotWorkers`), starts more while tasks wait (up
//! to `maxWorkers`, and while the machine's inventory has room for the algorithm's cpu and
//! memory request beside every other worker's), and stops workers that stay idle. How many
//! tasks go to a worker in one message follows the algorithm's measured task time
//! (`scheduler::dispatch_window`): one at a time while unknown or long, so a batch of real work
//! spreads over workers; a window of up to 64 for microsecond tasks (the sidecar batches them
//! to the runtime). Short tasks start no worker that would finish after they are done. A worker that dies
//! crashes its running task with the exit code or signal and the last lines of its output; the
//! engine's retry policy decides what happens next. Tasks the worker had not started go back to
//! the queue.
//!
//! A worker's life, as the pool sees it ([`State`] plus the tasks it holds):
//!
//! ```text
//! starting --its algorithm connected--> ready --exit asked (idle, retired, shutdown)--> exiting
//! ready: idle, or busy with up to `tasks_per_worker` tasks
//! ready + a held task was cancelled = stopping: no new task until its sidecar reports every
//!     cancelled task ended (the wrapper answered `stopped`); it does not count toward
//!     `maxWorkers`, so a waiting task gets a replacement worker at once
//! stopping --the wrapper never answered--> its sidecar ends, the process is killed at once
//!     (SIGTERM, then SIGKILL after the grace): a stuck algorithm is gone within
//!     `stop_timeout` plus the grace
//! any --the sidecar ended (Gone) and the process exited--> removed
//! ```
//!
//! A stop ends all the work the algorithm has (a fast-path batch as a whole): the tasks of it that
//! were not cancelled come back `Stopped` and go back to the queue.
//!
//! One task owns all the pools; [`LocalExecutor`] is a cheap handle to it.

mod deploy;
mod embedded;
pub mod inventory;
mod worker;

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use wrapper::link::{Assignment, CodeApiReply, CodeApiRequest, FromSidecar, Outcome, ToSidecar};

use builder::env::Env;
use builder::local::{LocalEnvs, Prepared};
use builder::process;
use wrapper::sidecar::{SidecarOptions, StorageAccess};
use wrapper::storage::FsStorage;

pub use deploy::{local_algorithm, CodeDeployer};
pub use worker::{crash_report, Language, LocalAlgorithm, Runtimes};

use crate::engine::{Executor, SubPipeline, TaskKey, TaskOutcome, TaskReporter, TaskSpec};
use crate::executor::child::{Exit, Supervised};
use crate::executor::docker::DockerLauncher;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start a worker: {0}")]
    Worker(String),
    #[error("cannot prepare algorithm {name}: {reason}")]
    Prepare { name: String, reason: String },
    #[error("cannot write hkube's language runtimes: {0}")]
    Runtimes(String),
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
    /// HKube's storage variables for the algorithms when the job's storage is not the folder
    /// (`DEFAULT_STORAGE=s3`, `S3_ENDPOINT_URL`, `AWS_*`): HKube's own wrappers then use it.
    pub storage_env: Vec<(String, String)>,
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
            storage_env: Vec::new(),
        }
    }
}

/// How many lines of a dead worker's output go into the task's error.
const CRASH_LINES: usize = 10;

type WorkerId = u64;

enum Cmd {
    Submit(Box<TaskSpec>),
    Cancel(TaskKey),
    Register(LocalAlgorithm),
    Worker(WorkerId, FromSidecar),
    WorkerStarted(WorkerId, Result<worker::Started, Error>),
    ChildExited(WorkerId, Exit),
    Shutdown(oneshot::Sender<()>),
}

/// A handle to the local executor's service.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    tx: mpsc::UnboundedSender<Cmd>,
    options: LocalOptions,
    /// Ended jobs whose stored objects are to be deleted, handled by one thread of its own.
    collector: std::sync::mpsc::Sender<(String, Vec<String>)>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
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
        let (tx, rx) = mpsc::unbounded_channel();
        let service = Service {
            options: options.clone(),
            tx: tx.clone(),
            algorithms: HashMap::new(),
            pools: HashMap::new(),
            workers: HashMap::new(),
            next_worker: 1,
            next_seq: 0,
        };
        tokio::spawn(service.run(rx));
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
            tx,
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
            algorithm = prepare_java(algorithm, &self.options).await?;
        }
        let _ = self.tx.send(Cmd::Register(algorithm));
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
        let (done, wait) = oneshot::channel();
        if self.tx.send(Cmd::Shutdown(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
        }
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
        if let Err(mpsc::error::SendError(Cmd::Submit(task))) =
            self.tx.send(Cmd::Submit(Box::new(task)))
        {
            task.reporter.finish(TaskOutcome::Crashed(
                "the local executor has shut down".into(),
            ));
        }
    }

    fn cancel(&self, key: TaskKey) {
        let _ = self.tx.send(Cmd::Cancel(key));
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

/// A task waiting for, or running on, a worker.
struct Pending {
    priority: u8,
    seq: u64,
    key: TaskKey,
    reporter: TaskReporter,
    assignment: Assignment,
    /// The engine cancelled it while a worker held it: a stop was sent for it.
    cancelled: bool,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    /// Most urgent first: priority 1 before 5, then oldest first (the heap pops the greatest).
    fn cmp(&self, other: &Self) -> Ordering {
        (Reverse(self.priority), Reverse(self.seq))
            .cmp(&(Reverse(other.priority), Reverse(other.seq)))
    }
}

#[derive(Default)]
struct Pool {
    queue: BinaryHeap<Pending>,
    workers: Vec<WorkerId>,
    /// The recent mean time of one task (µs), measured on its workers; `None` until one ends.
    mean_task_us: Option<u64>,
}

/// What starting one more worker costs before it takes a task, for the "short tasks start
/// no worker" rule (a Python worker's cold start here is about 0.1 s).
const WORKER_START_COST_MS: u64 = 150;

#[derive(Debug, PartialEq, Eq)]
enum State {
    Starting,
    Ready,
    Exiting,
}

struct Worker {
    algorithm: String,
    state: State,
    to_sidecar: Option<mpsc::UnboundedSender<ToSidecar>>,
    child: Option<Supervised>,
    running: HashMap<String, Pending>,
    /// Crashed tasks, reported once the process's exit is known.
    crashed: Vec<(Pending, String)>,
    gone: Option<String>,
    exited: Option<Exit>,
    idle_since: Instant,
    /// When its current task began: its dispatch to an idle worker, or the previous task's end
    /// (tasks in one message run one after another).
    busy_since: Instant,
    /// What it holds of the machine.
    request: crate::scheduler::Request,
    /// Its algorithm changed: it exits once its tasks end.
    retired: bool,
}

impl Worker {
    /// A stop is in progress: it holds a task the engine cancelled, which its sidecar has not
    /// reported ended yet. Such a worker gets no new task (see the module doc).
    fn stopping(&self) -> bool {
        self.running.values().any(|p| p.cancelled)
    }

    /// It can take tasks now.
    fn available(&self, per_worker: usize) -> bool {
        self.state == State::Ready
            && !self.retired
            && !self.stopping()
            && self.running.len() < per_worker
    }

    /// Tells the algorithm to exit (once): it takes no more tasks.
    fn ask_to_exit(&mut self) {
        if self.state == State::Exiting {
            return;
        }
        self.state = State::Exiting;
        if let Some(to_sidecar) = &self.to_sidecar {
            let _ = to_sidecar.send(ToSidecar::Exit { exit_code: 0 });
        }
    }
}

struct Service {
    options: LocalOptions,
    tx: mpsc::UnboundedSender<Cmd>,
    algorithms: HashMap<String, LocalAlgorithm>,
    pools: HashMap<String, Pool>,
    workers: HashMap<WorkerId, Worker>,
    next_worker: WorkerId,
    next_seq: u64,
}

impl Service {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        loop {
            let idle_deadline = self.next_idle_deadline();
            let command = match idle_deadline {
                Some(at) => tokio::select! {
                    command = rx.recv() => command,
                    () = tokio::time::sleep_until(at) => {
                        self.stop_idle_workers();
                        continue;
                    }
                },
                None => rx.recv().await,
            };
            let Some(command) = command else { return };
            match command {
                Cmd::Submit(task) => self.submit(*task),
                Cmd::Cancel(key) => self.cancel(key),
                Cmd::Register(algorithm) => self.register(algorithm),
                Cmd::Worker(id, message) => self.on_worker(id, message),
                Cmd::WorkerStarted(id, started) => self.worker_started(id, started),
                Cmd::ChildExited(id, exit) => self.child_exited(id, exit),
                Cmd::Shutdown(done) => {
                    self.shutdown().await;
                    let _ = done.send(());
                    return;
                }
            }
            publish_pools(&self.pools, &self.workers);
        }
    }

    fn register(&mut self, algorithm: LocalAlgorithm) {
        let name = algorithm.name.clone();
        let hot = algorithm.min_hot_workers;
        let changed = self.algorithms.get(&name).is_some_and(|known| {
            known.container != algorithm.container || known.code_dir != algorithm.code_dir
        });
        self.algorithms.insert(name.clone(), algorithm);
        if changed {
            self.retire_workers(&name);
        }
        let pool = self.pools.entry(name.clone()).or_default();
        let missing = hot.saturating_sub(pool.workers.len());
        for _ in 0..missing {
            self.spawn_worker(&name);
        }
    }

    /// The algorithm has new code or a new image: its workers take no more tasks, idle ones
    /// exit now and busy ones when their tasks end (running work is never killed for it).
    fn retire_workers(&mut self, name: &str) {
        let Some(pool) = self.pools.get(name) else {
            return;
        };
        for id in &pool.workers {
            if let Some(worker) = self.workers.get_mut(id) {
                worker.retired = true;
                if worker.running.is_empty() {
                    worker.ask_to_exit();
                }
            }
        }
    }

    fn submit(&mut self, task: TaskSpec) {
        let name = task.algorithm_name.to_string();
        let Some(algorithm) = self.algorithms.get(&name) else {
            task.reporter.finish(TaskOutcome::Failed(format!(
                "algorithm {name} has no local code: the local executor runs algorithms registered with a code folder"
            )));
            return;
        };
        // A request this machine could never hold fails at once, naming the resource, instead
        // of waiting forever (or, as before, running as if it had been granted).
        let inventory = std::slice::from_ref(&self.options.inventory);
        if let Some(why) =
            crate::scheduler::resources::never_fits(&name, &algorithm.request, inventory)
        {
            task.reporter.finish(TaskOutcome::Failed(why));
            return;
        }
        self.next_seq += 1;
        let pending = Pending {
            priority: task.priority,
            seq: self.next_seq,
            key: task.key,
            assignment: Assignment {
                job_id: task.job_id.to_string(),
                task_id: task.task_id.to_string(),
                node_name: task.node_name.to_string(),
                algorithm_name: name.clone(),
                pipeline_name: task.pipeline_name.to_string(),
                batch_index: task.batch_index,
                input: task.input,
                extra_data: task.extra_data.map(|v| (*v).clone()),
                root_job_id: task.root_job_id.to_string(),
                parent_node_name: None,
            },
            reporter: task.reporter,
            cancelled: false,
        };
        self.pools
            .entry(name.clone())
            .or_default()
            .queue
            .push(pending);
        self.pump(&name);
    }

    fn cancel(&mut self, key: TaskKey) {
        for pool in self.pools.values_mut() {
            if pool.queue.iter().any(|p| p.key.slot() == key.slot()) {
                let queue = std::mem::take(&mut pool.queue);
                pool.queue = queue
                    .into_iter()
                    .filter(|p| p.key.slot() != key.slot())
                    .collect();
                return;
            }
        }
        for worker in self.workers.values_mut() {
            if let Some((task_id, pending)) = worker
                .running
                .iter_mut()
                .find(|(_, p)| p.key.slot() == key.slot())
            {
                // The worker now counts as stopping: the waiting tasks go elsewhere.
                pending.cancelled = true;
                if let Some(to_sidecar) = &worker.to_sidecar {
                    let _ = to_sidecar.send(ToSidecar::Stop {
                        task_id: task_id.clone(),
                        force: true,
                    });
                }
                let name = worker.algorithm.clone();
                self.pump(&name);
                return;
            }
        }
    }

    /// Hands queued tasks of `name` to ready workers, starting workers while tasks wait and the
    /// machine has room.
    fn pump(&mut self, name: &str) {
        let (max_workers, request) = self.algorithms.get(name).map_or(
            (usize::MAX, crate::scheduler::Request::default()),
            |a| {
                let max = if a.max_workers == 0 {
                    usize::MAX
                } else {
                    a.max_workers
                };
                (max, a.request)
            },
        );
        loop {
            let Some(pool) = self.pools.get_mut(name) else {
                return;
            };
            if pool.queue.is_empty() {
                self.trim(name, max_workers);
                return;
            }
            let per_worker = crate::scheduler::dispatch_window(pool.mean_task_us)
                .min(self.options.tasks_per_worker.max(1));
            let mean_task_us = pool.mean_task_us;
            let target = pool
                .workers
                .iter()
                .filter_map(|id| self.workers.get(id).map(|w| (*id, w)))
                .filter(|(_, w)| w.available(per_worker))
                .min_by_key(|(_, w)| w.running.len())
                .map(|(id, _)| id);
            let Some(id) = target else {
                let live = live_workers(&self.workers, &pool.workers);
                let starting = pool
                    .workers
                    .iter()
                    .filter(|id| {
                        self.workers
                            .get(id)
                            .is_some_and(|w| w.state == State::Starting)
                    })
                    .count();
                // Start a worker while tasks wait beyond what starting workers will take, the
                // machine has room for it, and (for tasks measured short) the queue would keep
                // the running workers busy longer than a start takes.
                let waiting = pool.queue.len();
                let worth_it = match mean_task_us {
                    None => true,
                    Some(mean) => {
                        let per_worker_us =
                            (waiting as u64).saturating_mul(mean) / (live.max(1) as u64);
                        live == 0 || per_worker_us > WORKER_START_COST_MS * 1000
                    }
                };
                if live < max_workers && waiting > starting * per_worker && worth_it {
                    if self.machine_has_room(&request) {
                        self.spawn_worker(name);
                        continue;
                    }
                    // Idle workers of algorithms with nothing queued give their room up; this
                    // pool is pumped again when they are gone.
                    self.free_room_for(name, &request);
                }
                return;
            };
            let Some(worker) = self.workers.get_mut(&id) else {
                return;
            };
            let room = per_worker - worker.running.len();
            if worker.running.is_empty() {
                worker.busy_since = Instant::now();
            }
            let mut tasks = Vec::with_capacity(room.min(pool.queue.len()));
            while tasks.len() < room {
                let Some(pending) = pool.queue.pop() else {
                    break;
                };
                tasks.push(pending.assignment.clone());
                pending.reporter.placed();
                worker
                    .running
                    .insert(pending.assignment.task_id.clone(), pending);
            }
            route_output(worker);
            if let Some(to_sidecar) = &worker.to_sidecar {
                let _ = to_sidecar.send(ToSidecar::Run { tasks });
            }
        }
    }

    /// Replacements started while workers were stopping may leave more than `maxWorkers` once
    /// the stops end: idle ones beyond it (and beyond `minHotWorkers`) exit.
    fn trim(&mut self, name: &str, max_workers: usize) {
        let Some(pool) = self.pools.get(name) else {
            return;
        };
        let hot = self.algorithms.get(name).map_or(0, |a| a.min_hot_workers);
        let max_workers = max_workers.max(hot);
        let mut live = live_workers(&self.workers, &pool.workers);
        let mut extra = Vec::new();
        for id in &pool.workers {
            if live <= max_workers {
                break;
            }
            if self
                .workers
                .get(id)
                .is_some_and(|w| w.state == State::Ready && w.running.is_empty() && !w.retired)
            {
                extra.push(*id);
                live -= 1;
            }
        }
        for id in extra {
            if let Some(worker) = self.workers.get_mut(&id) {
                worker.ask_to_exit();
            }
        }
    }

    fn spawn_worker(&mut self, name: &str) {
        let Some(algorithm) = self.algorithms.get(name).cloned() else {
            return;
        };
        let id = self.next_worker;
        self.next_worker += 1;
        self.workers.insert(
            id,
            Worker {
                algorithm: name.to_string(),
                state: State::Starting,
                to_sidecar: None,
                child: None,
                running: HashMap::new(),
                crashed: Vec::new(),
                gone: None,
                exited: None,
                idle_since: Instant::now(),
                busy_since: Instant::now(),
                request: algorithm.request,
                retired: false,
            },
        );
        self.pools
            .entry(name.to_string())
            .or_default()
            .workers
            .push(id);
        let tx = self.tx.clone();
        let runtimes = self.options.runtimes.clone();
        let sidecar = self.options.sidecar.clone();
        let docker = self.options.docker.clone();
        let settings = worker::Settings {
            log_limit: self.options.log_limit,
            storage_dir: self.options.storage_dir.clone(),
            cluster: self.options.cluster.clone(),
            storage_env: self.options.storage_env.clone(),
        };
        tokio::spawn(async move {
            let started =
                worker::start(&runtimes, &algorithm, sidecar, &settings, docker.as_ref()).await;
            let _ = tx.send(Cmd::WorkerStarted(id, started));
        });
    }

    fn worker_started(&mut self, id: WorkerId, started: Result<worker::Started, Error>) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        match started {
            Ok(started) => {
                let worker::Started {
                    to_sidecar,
                    mut from_sidecar,
                    child,
                } = started;
                // Forward the sidecar's reports and the child's exit into this loop.
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    while let Some(message) = from_sidecar.recv().await {
                        if tx.send(Cmd::Worker(id, message)).is_err() {
                            return;
                        }
                    }
                });
                let tx = self.tx.clone();
                let exit = child.exit_watch();
                tokio::spawn(async move {
                    let exit = exit.await;
                    let _ = tx.send(Cmd::ChildExited(id, exit));
                });
                worker.to_sidecar = Some(to_sidecar);
                worker.child = Some(child);
            }
            Err(error) => {
                let algorithm = worker.algorithm.clone();
                self.remove_worker(id);
                self.fail_start(&algorithm, &error.to_string());
            }
        }
    }

    /// A worker could not start: the waiting tasks of its algorithm crash (the engine retries
    /// them by their policy, which bounds the attempts).
    fn fail_start(&mut self, algorithm: &str, reason: &str) {
        let Some(pool) = self.pools.get_mut(algorithm) else {
            return;
        };
        let waiting = std::mem::take(&mut pool.queue);
        let others = pool.workers.iter().any(|id| {
            self.workers
                .get(id)
                .is_some_and(|w| w.state != State::Exiting)
        });
        if others {
            // Another worker may still take them.
            pool.queue = waiting;
            return;
        }
        for pending in waiting {
            pending
                .reporter
                .finish(TaskOutcome::Crashed(reason.to_string()));
        }
    }

    fn on_worker(&mut self, id: WorkerId, message: FromSidecar) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        match message {
            FromSidecar::Ready => {
                if worker.state == State::Starting {
                    worker.state = State::Ready;
                    worker.idle_since = Instant::now();
                }
                let name = worker.algorithm.clone();
                self.pump(&name);
            }
            FromSidecar::Started { task_id } => {
                if let Some(pending) = worker.running.get(&task_id) {
                    pending.reporter.started();
                }
            }
            FromSidecar::Progress { .. } => {}
            FromSidecar::Log { task_id, text } => {
                if let Some(pending) = worker.running.get(&task_id) {
                    if let Some(watch) = pending.reporter.watch() {
                        watch.whole_output(&text);
                        return;
                    }
                    let file = self
                        .options
                        .log_dir
                        .join(&pending.assignment.job_id)
                        .join(format!("{task_id}.log"));
                    tokio::spawn(write_log(file, text));
                }
            }
            FromSidecar::Finished { task_id, outcome } => {
                let Some(pending) = worker.running.remove(&task_id) else {
                    return;
                };
                // The task's time on the worker: since its dispatch or the previous task's end.
                let now = Instant::now();
                let took_us = now.duration_since(worker.busy_since).as_micros() as u64;
                worker.busy_since = now;
                if let Some(pool) = self.pools.get_mut(&worker.algorithm) {
                    pool.mean_task_us = Some(match pool.mean_task_us {
                        None => took_us,
                        // A moving mean: recent tasks weigh most, one outlier does not swing it.
                        Some(mean) => (mean * 7 + took_us) / 8,
                    });
                }
                if worker.running.is_empty() {
                    worker.idle_since = Instant::now();
                    if worker.retired {
                        worker.ask_to_exit();
                    }
                }
                match outcome {
                    Outcome::Output { output } => {
                        pending.reporter.finish(TaskOutcome::Succeeded(output))
                    }
                    error @ Outcome::Error { .. } => {
                        // The type, message, place and traceback: in the task's error (and so
                        // the job's status and `hkube run`'s stderr) and in its log.
                        let text = error.error_text().unwrap_or_default();
                        if let Some(watch) = pending.reporter.watch() {
                            watch.error(&text);
                        } else {
                            let file = self
                                .options
                                .log_dir
                                .join(&pending.assignment.job_id)
                                .join(format!("{task_id}.log"));
                            tokio::spawn(write_log(file, format!("{text}\n")));
                        }
                        pending.reporter.finish(TaskOutcome::Failed(text))
                    }
                    // The engine asked for the stop and already recorded it.
                    Outcome::Stopped if pending.cancelled => {}
                    // Stopped with the rest of its batch, for another task: it runs again.
                    Outcome::Stopped => {
                        let name = worker.algorithm.clone();
                        if let Some(pool) = self.pools.get_mut(&name) {
                            pool.queue.push(pending);
                        }
                    }
                    Outcome::Crashed { reason } => worker.crashed.push((pending, reason)),
                }
                let name = worker.algorithm.clone();
                self.pump(&name);
            }
            FromSidecar::CodeApi {
                task_id,
                request_id,
                request,
            } => {
                let (Some(pending), Some(to_sidecar)) =
                    (worker.running.get(&task_id), worker.to_sidecar.clone())
                else {
                    return;
                };
                let reporter = pending.reporter.clone();
                if let CodeApiRequest::Stop { reason } = request {
                    reporter.stop_children(reason);
                    return;
                }
                tokio::spawn(async move {
                    let reply = code_api(reporter, request).await;
                    let _ = to_sidecar.send(ToSidecar::CodeApiReply { request_id, reply });
                });
            }
            FromSidecar::Gone { reason } => {
                worker.gone = Some(reason);
                worker.state = State::Exiting;
                // Tasks it had not started go back to the queue for another worker (but for
                // those the engine cancelled meanwhile).
                let unstarted: Vec<Pending> = worker
                    .running
                    .drain()
                    .map(|(_, p)| p)
                    .filter(|p| !p.cancelled)
                    .collect();
                if let Some(child) = &worker.child {
                    let (exit, stopper) = (child.exit_watch(), child.stop_handle());
                    if wrapper::sidecar::process_is_stuck(worker.gone.as_deref().unwrap_or("")) {
                        // It ignored a stop (or went silent): it will not leave on its own.
                        stopper.stop();
                    }
                    // A process that lost its sidecar is on its way out; give it a moment to
                    // exit on its own (its exit code explains the crash), then stop it.
                    tokio::spawn(async move {
                        if tokio::time::timeout(Duration::from_secs(2), exit)
                            .await
                            .is_err()
                        {
                            stopper.stop();
                        }
                    });
                }
                let name = worker.algorithm.clone();
                let finished = worker.exited.is_some();
                if let Some(pool) = self.pools.get_mut(&name) {
                    pool.queue.extend(unstarted);
                }
                if finished {
                    self.finalize(id);
                }
                self.pump(&name);
            }
        }
    }

    fn child_exited(&mut self, id: WorkerId, exit: Exit) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        worker.exited = Some(exit);
        if worker.gone.is_some() {
            self.finalize(id);
            return;
        }
        if worker.state == State::Starting {
            // It died before connecting: end its sidecar, and say why tasks cannot run.
            if let Some(to_sidecar) = &worker.to_sidecar {
                let _ = to_sidecar.send(ToSidecar::Exit { exit_code: 1 });
            }
            let report = start_failure_report(worker);
            let name = worker.algorithm.clone();
            self.remove_worker(id);
            self.fail_start(&name, &report);
            self.pump(&name);
        }
        // Otherwise the sidecar reports the disconnect (`Gone`) and finalizes.
    }

    /// The worker's process has ended and its sidecar is gone: report its crashed tasks with
    /// the exit and the last output lines, and forget it.
    fn finalize(&mut self, id: WorkerId) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        let crashed = std::mem::take(&mut worker.crashed);
        for (pending, reason) in crashed {
            let report = report_for(worker, &reason);
            pending.reporter.finish(TaskOutcome::Crashed(report));
        }
        let name = worker.algorithm.clone();
        self.remove_worker(id);
        self.pump(&name);
        // Its room may be what another algorithm's tasks wait for.
        self.pump_waiting();
    }

    /// Pumps every pool with queued tasks: room freed by one algorithm's worker may start
    /// another's.
    fn pump_waiting(&mut self) {
        let waiting: Vec<String> = self
            .pools
            .iter()
            .filter(|(_, pool)| !pool.queue.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        for name in waiting {
            self.pump(&name);
        }
    }

    /// Asks idle workers of other algorithms, whose queues are empty, to exit until their
    /// requests would make room for `request` (what the scheduler calls freeing room for
    /// others). Workers already exiting count as room on its way.
    fn free_room_for(&mut self, name: &str, request: &crate::scheduler::Request) {
        let inventory = &self.options.inventory;
        let (mut cpu, mut mem) = (0i64, 0i64);
        for worker in self.workers.values() {
            if worker.state != State::Exiting {
                cpu += i64::from(worker.request.cpu_millis);
                mem += worker.request.mem_mib as i64;
            }
        }
        let mut short_cpu = cpu + i64::from(request.cpu_millis) - i64::from(inventory.cpu_millis);
        let mut short_mem = mem + request.mem_mib as i64 - inventory.mem_mib as i64;
        if short_cpu <= 0 && short_mem <= 0 {
            return; // exiting workers already make the room
        }
        let idle: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.algorithm != name
                    && w.state == State::Ready
                    && w.running.is_empty()
                    && self
                        .pools
                        .get(&w.algorithm)
                        .is_none_or(|p| p.queue.is_empty())
            })
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            if short_cpu <= 0 && short_mem <= 0 {
                break;
            }
            if let Some(worker) = self.workers.get_mut(&id) {
                short_cpu -= i64::from(worker.request.cpu_millis);
                short_mem -= worker.request.mem_mib as i64;
                worker.ask_to_exit();
            }
        }
    }

    fn remove_worker(&mut self, id: WorkerId) {
        if let Some(worker) = self.workers.remove(&id) {
            if let Some(pool) = self.pools.get_mut(&worker.algorithm) {
                pool.workers.retain(|w| *w != id);
            }
            if let Some(child) = &worker.child {
                if worker.exited.is_none() {
                    child.stop();
                }
            }
        }
    }

    /// Whether the machine holds one more worker asking `request` beside the live ones (cpu
    /// and memory; GPUs are granted by the scheduler's placement, not here yet).
    fn machine_has_room(&self, request: &crate::scheduler::Request) -> bool {
        let (cpu, mem) = self
            .workers
            .values()
            .filter(|w| w.state != State::Exiting || w.exited.is_none())
            .fold((0u64, 0u64), |(cpu, mem), w| {
                (
                    cpu + u64::from(w.request.cpu_millis),
                    mem + w.request.mem_mib,
                )
            });
        let inventory = &self.options.inventory;
        cpu + u64::from(request.cpu_millis) <= u64::from(inventory.cpu_millis)
            && mem + request.mem_mib <= inventory.mem_mib
    }

    fn next_idle_deadline(&self) -> Option<Instant> {
        self.workers
            .values()
            .filter(|w| w.state == State::Ready && w.running.is_empty())
            .map(|w| w.idle_since + self.options.idle_timeout)
            .min()
    }

    fn stop_idle_workers(&mut self) {
        let now = Instant::now();
        let mut stopping = Vec::new();
        for (name, pool) in &self.pools {
            let hot = self.algorithms.get(name).map_or(0, |a| a.min_hot_workers);
            let mut live = live_workers(&self.workers, &pool.workers);
            for id in &pool.workers {
                let Some(worker) = self.workers.get(id) else {
                    continue;
                };
                let idle = worker.state == State::Ready
                    && worker.running.is_empty()
                    && worker.idle_since + self.options.idle_timeout <= now;
                if idle && live > hot {
                    stopping.push(*id);
                    live -= 1;
                }
            }
        }
        for id in stopping {
            if let Some(worker) = self.workers.get_mut(&id) {
                worker.ask_to_exit();
            }
        }
    }

    async fn shutdown(&mut self) {
        let mut children = Vec::new();
        for worker in self.workers.values_mut() {
            if let Some(to_sidecar) = &worker.to_sidecar {
                let _ = to_sidecar.send(ToSidecar::Exit { exit_code: 0 });
            }
            if let Some(child) = worker.child.take() {
                children.push(child);
            }
        }
        for child in children {
            if tokio::time::timeout(Duration::from_secs(2), child.wait())
                .await
                .is_err()
            {
                child.stop();
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            }
        }
    }
}

/// A worker running one task sends its output lines to that task's watch as they are read;
/// one running a window of short tasks cannot tell whose a line is, and its runtime's exact
/// capture per task comes with each outcome instead.
fn route_output(worker: &Worker) {
    let Some(child) = &worker.child else { return };
    let sink = match worker.running.values().next() {
        Some(pending) if worker.running.len() == 1 => {
            pending.reporter.watch().cloned().map(|watch| {
                crate::executor::child::LineSink(Arc::new(move |line: &str| watch.line(line)))
            })
        }
        _ => None,
    };
    if let Ok(mut log) = child.log.lock() {
        log.sink = sink;
    }
}

/// Sets the queue and worker gauges of `/metrics` from the pools.
fn publish_pools(pools: &HashMap<String, Pool>, workers: &HashMap<WorkerId, Worker>) {
    let metrics = &crate::telemetry::metrics::METRICS;
    for (name, pool) in pools {
        metrics
            .queue
            .with_label_values(&[name])
            .set(pool.queue.len() as i64);
        let mut counts = [0i64; 4];
        for worker in pool.workers.iter().filter_map(|id| workers.get(id)) {
            let at = match worker.state {
                State::Starting => 0,
                State::Exiting => 3,
                State::Ready if worker.running.is_empty() => 1,
                State::Ready => 2,
            };
            counts[at] += 1;
        }
        for (state, count) in ["starting", "idle", "busy", "exiting"].iter().zip(counts) {
            metrics
                .workers
                .with_label_values(&[name.as_str(), state])
                .set(count);
        }
    }
}

/// Appends a task's output to its log file.
async fn write_log(file: PathBuf, text: String) {
    use tokio::io::AsyncWriteExt;
    if let Some(folder) = file.parent() {
        let _ = tokio::fs::create_dir_all(folder).await;
    }
    let opened = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .await;
    match opened {
        Ok(mut log) => {
            let _ = log.write_all(text.as_bytes()).await;
        }
        Err(error) => tracing::warn!("cannot write the task log {}: {error}", file.display()),
    }
}

/// Workers of a pool that are not on their way out (a stopping worker is: it is done or gone
/// within the stop timeout, and must not hold back its replacement).
fn live_workers(workers: &HashMap<WorkerId, Worker>, pool: &[WorkerId]) -> usize {
    pool.iter()
        .filter(|id| {
            workers
                .get(id)
                .is_some_and(|w| w.state != State::Exiting && !w.retired && !w.stopping())
        })
        .count()
}

fn last_lines(worker: &Worker) -> Vec<String> {
    worker
        .child
        .as_ref()
        .and_then(|c| c.log.lock().ok().map(|log| log.tail(CRASH_LINES)))
        .unwrap_or_default()
}

fn report_for(worker: &Worker, reason: &str) -> String {
    crash_report(reason, worker.exited.as_ref(), &last_lines(worker))
}

fn start_failure_report(worker: &Worker) -> String {
    let exit = worker
        .exited
        .as_ref()
        .map_or("ended".to_string(), ToString::to_string);
    let reason = format!("the algorithm's process {exit} before connecting to its sidecar");
    crash_report(&reason, None, &last_lines(worker))
}

/// Carries out a code-API request through the engine and turns the answer into a reply.
async fn code_api(reporter: TaskReporter, request: CodeApiRequest) -> CodeApiReply {
    match request {
        CodeApiRequest::StartAlgorithm {
            algorithm_name,
            input,
            include_result,
        } => match reporter.start_algorithm(algorithm_name, input).await {
            Ok(TaskOutcome::Succeeded(output)) => CodeApiReply::Done {
                response: if include_result { output } else { Value::Null },
            },
            Ok(TaskOutcome::Failed(error) | TaskOutcome::Crashed(error)) => {
                CodeApiReply::Error { error }
            }
            Err(_) => CodeApiReply::Error {
                error: "the engine has shut down".into(),
            },
        },
        CodeApiRequest::StartStoredSubPipeline {
            name,
            flow_input,
            include_result,
        } => {
            sub_pipeline(
                reporter,
                SubPipeline::Stored { name, flow_input },
                include_result,
            )
            .await
        }
        CodeApiRequest::StartRawSubPipeline {
            pipeline,
            include_result,
        } => sub_pipeline(reporter, SubPipeline::Raw(pipeline), include_result).await,
        // Handled before a reply is awaited; nothing to answer.
        CodeApiRequest::Stop { .. } => CodeApiReply::Error {
            error: "a stop has no answer".into(),
        },
    }
}

/// Storage v1 semantics: the reply carries the sub-pipeline's results themselves.
async fn sub_pipeline(
    reporter: TaskReporter,
    request: SubPipeline,
    include_result: bool,
) -> CodeApiReply {
    match reporter.start_sub_pipeline(request).await {
        Ok(Ok(result)) => match result.get("status").and_then(Value::as_str) {
            Some("completed") => CodeApiReply::Done {
                response: if include_result {
                    result.get("data").cloned().unwrap_or(Value::Null)
                } else {
                    Value::Null
                },
            },
            Some("stopped") => CodeApiReply::Stopped {
                reason: result
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("stopped")
                    .to_string(),
            },
            _ => CodeApiReply::Error {
                error: result
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("the sub-pipeline failed")
                    .to_string(),
            },
        },
        Ok(Err(error)) => CodeApiReply::Error {
            error: error.to_string(),
        },
        Err(_) => CodeApiReply::Error {
            error: "the engine has shut down".into(),
        },
    }
}

/// Compiles a Java algorithm's sources against the runtime jar (built first when missing).
async fn prepare_java(
    mut algorithm: LocalAlgorithm,
    options: &LocalOptions,
) -> Result<LocalAlgorithm, Error> {
    let runtimes = &options.runtimes;
    let classes = options.work_dir.join(&algorithm.name).join("classes");
    let failed = |reason: String| Error::Prepare {
        name: algorithm.name.clone(),
        reason,
    };
    let jar = runtimes.java_jar();
    if !jar.exists() {
        let build = process::Spec::new("bash")
            .args([runtimes.dir.join("java/build.sh")])
            .inherit(process::RUNTIME_ENV);
        run_tool(build, "building the Java runtime")
            .await
            .map_err(failed)?;
    }
    let mut sources = Vec::new();
    collect_java_sources(&algorithm.code_dir, &mut sources)
        .map_err(|e| failed(format!("reading {}: {e}", algorithm.code_dir.display())))?;
    if sources.is_empty() {
        return Err(failed(format!(
            "no .java files in {}",
            algorithm.code_dir.display()
        )));
    }
    std::fs::create_dir_all(&classes)
        .map_err(|e| failed(format!("creating {}: {e}", classes.display())))?;
    let javac = process::Spec::new("javac")
        .args(["--release", "17", "-cp"])
        .args([jar.as_os_str(), "-d".as_ref(), classes.as_os_str()])
        .args(sources)
        .inherit(process::RUNTIME_ENV);
    run_tool(javac, "compiling the algorithm")
        .await
        .map_err(failed)?;
    algorithm.classpath = Some(classes);
    Ok(algorithm)
}

/// How long javac (or the Java runtime's build) may take before its group is stopped.
const TOOL_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Runs a build tool through the process runner (cleared environment, own process group,
/// [`TOOL_TIMEOUT`]); its output explains a failure.
async fn run_tool(spec: process::Spec, what: &str) -> Result<(), String> {
    let running = spec
        .timeout(Some(TOOL_TIMEOUT))
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let (exit, output) = running.output_tail(16 * 1024).await;
    match exit {
        process::Exit::Code(0) => Ok(()),
        process::Exit::Stopped { .. } => Err(format!(
            "{what} took longer than {} s and was stopped",
            TOOL_TIMEOUT.as_secs()
        )),
        other => Err(format!("{what} failed ({other}):\n{output}")),
    }
}

fn collect_java_sources(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_java_sources(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "java") {
            out.push(path);
        }
    }
    Ok(())
}
