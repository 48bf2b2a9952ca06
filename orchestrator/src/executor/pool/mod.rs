//! One worker pool for every backend, driven by the scheduler's rounds.
//!
//! The pool holds the queued tasks, the workers and their links. Whenever something changed (a
//! task queued, cancelled or ended, a worker ready or gone, a timer), it builds a
//! [`scheduler::Snapshot`], runs one [`scheduler::schedule`] round and applies the
//! [`scheduler::Decisions`]: tasks go to workers, workers start through the algorithm's
//! [`Launcher`] with what the scheduler granted, workers stop (idle, freed for others, or
//! preempted), and a task that cannot be placed yet hears why (`TaskReporter::pending`). The
//! pool decides nothing itself; it keeps the mechanism: links, crash reports, the code-API
//! relay, logs. Commands that arrive together are applied before one round runs.
//!
//! A worker's life, as the pool sees it ([`worker::State`] plus the tasks it holds):
//!
//! ```text
//! starting --its algorithm connected--> ready --exit asked (idle, freed, retired, shutdown)--> exiting
//! ready: idle, or busy with up to `tasks_per_worker` tasks
//! ready + a held task was cancelled = stopping: no new task until its sidecar reports every
//!     cancelled task ended (the wrapper answered `stopped`); it does not count toward
//!     `maxWorkers`, so a waiting task gets a replacement worker at once
//! ready --preempted--> its tasks get a stop, it exits once they end, and is killed after
//!     `preempt_grace`; its tasks go back to the queue (not failed, no attempt used)
//! stopping --the wrapper never answered--> its sidecar ends, the process is killed at once
//!     (SIGTERM, then SIGKILL after the grace): a stuck algorithm is gone within
//!     `stop_timeout` plus the grace
//! any --the sidecar ended (Gone) and the process exited--> removed
//! ```
//!
//! A worker that dies crashes its running task with the exit code or signal and the last lines
//! of its output; the engine's retry policy decides what happens next. Tasks the worker had not
//! started go back to the queue. A stop ends all the work the algorithm has (a fast-path batch
//! as a whole): the tasks of it that were not cancelled come back `Stopped` and are queued
//! again.
//!
//! While an algorithm's task time is unknown, the scheduler starts one worker and waits: the
//! running task's elapsed time is a lower bound of its duration, so once it has run longer
//! than a worker's start (measured), more workers start; microsecond tasks never start a
//! second worker they would finish before. The pool wakes for that moment (at one, two and
//! four times a start). After a pause, the first task of an algorithm travels alone; once it
//! took about the mean, windows of several tasks follow; a task far longer than the mean
//! (10× and 20 ms more) sends them back to one at a time: a change in the task time shows
//! before many tasks are committed to one worker.

mod nodes;
mod queue;
mod report;
mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::stream::{SelectAll, Stream};
use futures_util::{FutureExt, StreamExt};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use wrapper::link::{Assignment, FromSidecar, Outcome, ToSidecar};
use wrapper::sidecar::SidecarOptions;

pub use nodes::ClusterFeed;
pub use report::crash_report;

use crate::engine::{TaskKey, TaskOutcome, TaskSpec};
use crate::executor::algorithm::WorkerAlgorithm;
use crate::executor::child::Exit;
use crate::executor::code_api;
use crate::executor::launcher::{self, Launch, Launched, Launcher};
use crate::executor::limits::Limits;
use crate::scheduler::{self, Placement};
use queue::TaskQueue;
use worker::{FastMap, State, Task, Worker};

#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub sidecar: SidecarOptions,
    /// A worker idle this long is stopped (unless the pool is at `minHotWorkers`).
    pub idle_timeout: Duration,
    /// Tasks handed to one worker at once, at most (short tasks; long ones go one by one).
    pub tasks_per_worker: usize,
    /// The machine (or node) the workers share, as the scheduler sees it.
    pub inventory: scheduler::Node,
    /// A cluster's nodes instead, as they change (see [`ClusterFeed`]).
    pub cluster: Option<ClusterFeed>,
    /// Each task's output goes to `<log_dir>/<jobId>/<taskId>.log`.
    pub log_dir: PathBuf,
    /// Asked in order: the first that runs an algorithm starts its workers.
    pub launchers: Vec<Arc<dyn Launcher>>,
    /// A preempted worker has this long to stop its task before it is killed.
    pub preempt_grace: Duration,
    /// A worker's memory limit is this multiple of its request (0: no limit).
    pub memory_ratio: u64,
}

/// What starting a worker is taken to cost until one start was measured.
const DEFAULT_START_COST_MS: u64 = 150;

type WorkerId = u64;

enum Cmd {
    Submit(Box<TaskSpec>),
    Cancel(TaskKey),
    Register(WorkerAlgorithm),
    Worker(WorkerId, FromSidecar),
    WorkerStarted(WorkerId, Result<Launched, launcher::Error>),
    ChildExited(WorkerId, Exit),
    Nodes(Vec<scheduler::Node>),
    Shutdown(oneshot::Sender<()>),
}

/// The started workers' report streams, each tagged with its worker.
type Reports = SelectAll<Pin<Box<dyn Stream<Item = (WorkerId, FromSidecar)> + Send>>>;

/// A handle to a pool's service: cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkerPool {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

impl WorkerPool {
    /// Starts the pool's service on the current tokio runtime.
    pub fn start(options: PoolOptions) -> WorkerPool {
        let (tx, rx) = mpsc::unbounded_channel();
        let nodes = match &options.cluster {
            Some(cluster) => {
                // Each new inventory is a command: it is applied between rounds.
                let (mut feed, forward) = (cluster.nodes.clone(), tx.clone());
                tokio::spawn(async move {
                    while feed.changed().await.is_ok() {
                        let nodes = feed.borrow_and_update().clone();
                        if forward.send(Cmd::Nodes(nodes)).is_err() {
                            return;
                        }
                    }
                });
                cluster.nodes.borrow().clone()
            }
            None => vec![options.inventory.clone()],
        };
        let service = Service {
            nodes,
            options,
            tx: tx.clone(),
            epoch: Instant::now(),
            algorithms: Vec::new(),
            by_name: HashMap::new(),
            workers: HashMap::new(),
            next_worker: 1,
            next_seq: 0,
            reports: SelectAll::new(),
            dirty: false,
            last_round: Instant::now(),
            due: false,
            gauges_last: None,
            gauges_due: None,
        };
        tokio::spawn(service.run(rx));
        WorkerPool { tx }
    }

    /// Makes an algorithm runnable (or replaces its definition: its workers retire). Its
    /// `minHotWorkers` start.
    pub fn register(&self, algorithm: WorkerAlgorithm) {
        let _ = self.tx.send(Cmd::Register(algorithm));
    }

    /// Queues a task; reports go through its reporter.
    pub fn submit(&self, task: TaskSpec) {
        if let Err(mpsc::error::SendError(Cmd::Submit(task))) =
            self.tx.send(Cmd::Submit(Box::new(task)))
        {
            task.reporter
                .finish(TaskOutcome::Crashed("the executor has shut down".into()));
        }
    }

    pub fn cancel(&self, key: TaskKey) {
        let _ = self.tx.send(Cmd::Cancel(key));
    }

    /// Stops every worker (the algorithms get `exit`) and waits for them, at most a few seconds.
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Cmd::Shutdown(done)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
        }
    }
}

/// One algorithm in the pool.
struct Algorithm {
    def: WorkerAlgorithm,
    queue: TaskQueue,
    workers: Vec<WorkerId>,
    /// The recent mean time of one task (µs), measured on its workers; `None` until one ends.
    mean_task_us: Option<u64>,
    /// The recent mean time from launch to ready (ms); `None` until a worker was ready.
    start_cost_ms: Option<u64>,
    /// Tasks in one message at most, for now: 1 after a pause, the whole window once a task
    /// took about the mean, back to 1 when one takes far longer (the tasks changed). A batch
    /// of long tasks after a warm-up of empty ones so travels one by one and spreads.
    ramp: usize,
    /// The pending reason last reported, and to which task.
    reported: Option<(TaskKey, String)>,
    /// The last round found no node that could ever hold its request (a cluster's pool:
    /// its tasks wait for the pending timeout).
    refused: bool,
}

impl Algorithm {
    /// Tasks in one message to a worker now: from the measured task time, within the ramp and
    /// `per_worker`.
    fn window(&self, per_worker: usize) -> usize {
        scheduler::dispatch_window(self.mean_task_us)
            .min(self.ramp)
            .min(per_worker.max(1))
    }
}

struct Service {
    options: PoolOptions,
    /// The nodes the scheduler places workers on: this machine, or a cluster's.
    nodes: Vec<scheduler::Node>,
    tx: mpsc::UnboundedSender<Cmd>,
    /// Every started worker's reports, read by this loop itself. A relay task per worker
    /// forwarding them into `tx` cost a second task wake per report (two reports per task),
    /// a measurable share of a microsecond task's CPU. Only the links that have a report
    /// waiting are polled.
    reports: Reports,
    /// The pool's clock starts here (the scheduler's `now_ms`).
    epoch: Instant,
    algorithms: Vec<Algorithm>,
    by_name: HashMap<String, usize>,
    workers: HashMap<WorkerId, Worker>,
    next_worker: WorkerId,
    next_seq: u64,
    /// Something changed since the last round.
    dirty: bool,
    /// When the last round ran (refills stand in for rounds only shortly after one).
    last_round: Instant,
    /// Something changed that a round may act on, but not at once: a task queued behind
    /// others of its algorithm, a refill. A round runs [`REFILL_FOR`] after the last at the
    /// latest.
    due: bool,
    /// When the gauges were last published.
    gauges_last: Option<Instant>,
    /// Changes not published yet are published then.
    gauges_due: Option<Instant>,
}

/// The gauges of `/metrics` are set this often at most (a scrape every few seconds reads
/// them; setting them after every burst of commands cost a share of the no-op task rate).
const GAUGES_EVERY: Duration = Duration::from_millis(100);

/// Refills stand in for rounds this long after a round at most (see `Service::refill`).
const REFILL_FOR: Duration = Duration::from_millis(2);

/// Commands applied before a round runs, at most (a burst of submissions makes one round).
const COMMANDS_PER_ROUND: usize = 4096;

impl Service {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        // One timer for the service's life, moved only to an earlier wake. A later wake (an
        // idle worker's timeout, pushed back after every task) leaves it where it is: it fires
        // early, the round finds nothing due, and the next turn arms the new time. A timer
        // made and dropped every turn took a twentieth of the pool's time in a chain of no-op
        // tasks (the timer wheel's lock, twice a turn).
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            if let Some(wake) = self.next_wake() {
                if armed.is_none_or(|at| wake < at) {
                    timer.as_mut().reset(wake);
                    armed = Some(wake);
                }
            }
            let mut command = tokio::select! {
                command = rx.recv() => match command {
                    Some(command) => command,
                    None => return,
                },
                Some((id, message)) = self.reports.next(), if !self.reports.is_empty() => {
                    Cmd::Worker(id, message)
                }
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.round();
                    self.maybe_publish_gauges();
                    continue;
                }
            };
            let mut handled = 0;
            loop {
                if let Cmd::Shutdown(done) = command {
                    self.shutdown().await;
                    let _ = done.send(());
                    return;
                }
                self.handle(command);
                handled += 1;
                if handled >= COMMANDS_PER_ROUND {
                    break;
                }
                // Reports first: a task's end is applied before the commands that follow it
                // (a worker's exit among them).
                if let Some(Some((id, message))) = self.reports.next().now_or_never() {
                    command = Cmd::Worker(id, message);
                    continue;
                }
                match rx.try_recv() {
                    Ok(next) => command = next,
                    Err(_) => break,
                }
            }
            if self.dirty || (self.due && self.last_round.elapsed() >= REFILL_FOR) {
                self.round();
            }
            self.maybe_publish_gauges();
        }
    }

    /// Something may have changed: publishes the gauges if they were last published
    /// `GAUGES_EVERY` ago; else they are due then (`next_wake` comes back for them).
    fn maybe_publish_gauges(&mut self) {
        let now = Instant::now();
        let next = self.gauges_last.map_or(now, |last| last + GAUGES_EVERY);
        if now >= next {
            self.publish_gauges();
            self.gauges_last = Some(now);
            self.gauges_due = None;
        } else if self.gauges_due.is_none() {
            self.gauges_due = Some(next);
        }
    }

    fn handle(&mut self, command: Cmd) {
        match command {
            Cmd::Submit(task) => self.submit(*task),
            Cmd::Cancel(key) => self.cancel(key),
            Cmd::Register(algorithm) => self.register(algorithm),
            Cmd::Worker(id, message) => self.on_worker(id, message),
            Cmd::WorkerStarted(id, started) => self.worker_started(id, started),
            Cmd::ChildExited(id, exit) => self.child_exited(id, exit),
            Cmd::Nodes(nodes) => {
                for worker in self.workers.values_mut() {
                    worker.node = nodes::remap(&self.nodes, &nodes, worker.node);
                }
                self.nodes = nodes;
                self.dirty = true;
            }
            // The loop handles a shutdown itself, before it gets here.
            Cmd::Shutdown(done) => {
                let _ = done.send(());
            }
        }
    }

    /// Sets the queue and worker gauges of `/metrics` from the pool.
    fn publish_gauges(&self) {
        let metrics = &crate::telemetry::metrics::METRICS;
        for algorithm in &self.algorithms {
            let name = algorithm.def.name.as_str();
            metrics
                .queue
                .with_label_values(&[name])
                .set(algorithm.queue.len() as i64);
            let mut counts = [0i64; 4];
            for worker in algorithm
                .workers
                .iter()
                .filter_map(|id| self.workers.get(id))
            {
                let at = match worker.state {
                    State::Starting => 0,
                    State::Exiting => 3,
                    State::Ready if worker.running.is_empty() => 1,
                    State::Ready => 2,
                };
                counts[at] += 1;
            }
            for (state, count) in ["starting", "idle", "busy", "exiting"].iter().zip(counts) {
                metrics.workers.with_label_values(&[name, state]).set(count);
            }
        }
    }

    fn now_ms(&self) -> u64 {
        Instant::now().duration_since(self.epoch).as_millis() as u64
    }

    fn ms_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn register(&mut self, def: WorkerAlgorithm) {
        let name = def.name.clone();
        match self.by_name.get(&name) {
            Some(&ix) => {
                let known = &self.algorithms[ix].def;
                let changed = known.container != def.container || known.code_dir != def.code_dir;
                self.algorithms[ix].def = def;
                if changed {
                    self.retire_workers(ix);
                }
            }
            None => {
                self.algorithms.push(Algorithm {
                    def,
                    queue: TaskQueue::default(),
                    workers: Vec::new(),
                    mean_task_us: None,
                    start_cost_ms: None,
                    ramp: 1,
                    reported: None,
                    refused: false,
                });
                self.by_name.insert(name, self.algorithms.len() - 1);
            }
        }
        self.dirty = true;
    }

    /// The algorithm has new code or a new image: its workers take no more tasks, idle ones
    /// exit now and busy ones when their tasks end (running work is never killed for it).
    fn retire_workers(&mut self, ix: usize) {
        for id in &self.algorithms[ix].workers {
            if let Some(worker) = self.workers.get_mut(id) {
                worker.retired = true;
                if worker.running.is_empty() {
                    worker.ask_to_exit();
                }
            }
        }
    }

    fn submit(&mut self, task: TaskSpec) {
        let name = Arc::clone(&task.algorithm_name);
        let Some(&ix) = self.by_name.get(&*name) else {
            task.reporter.finish(TaskOutcome::Failed(format!(
                "algorithm {name} has no local code: the local executor runs algorithms registered with a code folder"
            )));
            return;
        };
        // A request this machine could never hold fails at once, naming the resource (a
        // cluster's waits for a node: see `apply`).
        let algorithm = &self.algorithms[ix];
        if self.options.cluster.is_none() {
            if let Some(why) =
                scheduler::resources::never_fits(&name, &algorithm.def.request, &self.nodes)
            {
                task.reporter.finish(TaskOutcome::Failed(why));
                return;
            }
        }
        self.next_seq += 1;
        let entered_ms = self.now_ms();
        let queued = Task {
            priority: task.priority,
            seq: self.next_seq,
            entered_ms,
            key: task.key,
            assignment: Arc::new(Assignment {
                job_id: task.job_id,
                task_id: task.task_id.to_string(),
                node_name: task.node_name,
                algorithm_name: task.algorithm_name,
                pipeline_name: task.pipeline_name,
                batch_index: task.batch_index,
                input: task.input,
                extra_data: task.extra_data,
                root_job_id: task.root_job_id,
                parent_node_name: None,
            }),
            reporter: task.reporter,
            cancelled: false,
            preempted: false,
        };
        // Behind a task of its algorithm at least as urgent, it changes nothing the last
        // round decided but the counts (an engine feeding a large batch submits one task per
        // task ended: a round each cost more than a microsecond task).
        let queue = &mut self.algorithms[ix].queue;
        let behind = queue
            .peek()
            .is_some_and(|head| head.priority <= queued.priority);
        queue.push(queued);
        if behind {
            self.due = true;
        } else {
            self.dirty = true;
        }
    }

    fn cancel(&mut self, key: TaskKey) {
        for algorithm in &mut self.algorithms {
            if algorithm.queue.iter().any(|t| t.key.slot() == key.slot()) {
                algorithm.queue.retain(|t| t.key.slot() != key.slot());
                self.dirty = true;
                return;
            }
        }
        for worker in self.workers.values_mut() {
            // The worker now counts as stopping: the waiting tasks go elsewhere.
            if let Some(task_id) = worker.cancel(|t| t.key.slot() == key.slot()) {
                if let Some(to_sidecar) = &worker.to_sidecar {
                    let _ = to_sidecar.send(ToSidecar::Stop {
                        task_id,
                        force: true,
                    });
                }
                self.dirty = true;
                return;
            }
        }
    }

    // ----- the round ------------------------------------------------------------------------

    /// How many tasks a worker of `algorithm` takes in one message now: from the measured
    /// task time, within the ramp. With the ramp at 1 (a new burst), a worker holding one task
    /// is busy, not a worker with room: a batch of long tasks after short ones went 2 and 3
    /// to a worker behind each other instead of starting workers for them (4.5 s, not 1 s,
    /// for 16 one-second tasks after a warm-up of empty ones).
    fn window(&self, algorithm: &Algorithm) -> usize {
        algorithm.window(self.options.tasks_per_worker)
    }

    /// One scheduling round over the pool's state, and its decisions applied.
    fn round(&mut self) {
        self.dirty = false;
        self.due = false;
        let now = Instant::now();
        self.last_round = now;
        let now_ms = self.ms_at(now);
        let options = scheduler::Options {
            idle_timeout_ms: self.options.idle_timeout.as_millis() as u64,
            ..scheduler::Options::default()
        };
        let mut workers = Vec::with_capacity(self.workers.len());
        let mut idle_count = vec![0usize; self.algorithms.len()];
        let mut starting_count = vec![0usize; self.algorithms.len()];
        let mut running_for = vec![None::<u64>; self.algorithms.len()];
        for (&id, worker) in &self.workers {
            let a = worker.algorithm;
            let window = self.window(&self.algorithms[a]);
            let state = if worker.leaving() {
                scheduler::WorkerState::Stopping
            } else {
                match worker.state {
                    State::Starting => {
                        starting_count[a] += 1;
                        scheduler::WorkerState::Starting
                    }
                    State::Exiting => scheduler::WorkerState::Stopping,
                    State::Ready if worker.running.is_empty() => {
                        idle_count[a] += 1;
                        scheduler::WorkerState::Idle {
                            since_ms: self.ms_at(worker.idle_since),
                        }
                    }
                    // A worker of short tasks with room for a window keeps its pipeline full.
                    State::Ready if window > 1 && worker.running.len() <= window / 2 => {
                        idle_count[a] += 1;
                        scheduler::WorkerState::Idle { since_ms: now_ms }
                    }
                    State::Ready => {
                        let took = now.duration_since(worker.busy_since).as_micros() as u64;
                        running_for[a] = Some(running_for[a].map_or(took, |t: u64| t.max(took)));
                        scheduler::WorkerState::Busy {
                            priority: worker
                                .running
                                .values()
                                .map(|t| t.priority)
                                .min()
                                .unwrap_or(5),
                        }
                    }
                }
            };
            workers.push(scheduler::WorkerView {
                id: scheduler::WorkerId(id),
                algorithm: a,
                node: worker.node,
                state,
                held: worker.held.clone(),
            });
        }
        workers.sort_unstable_by_key(|w| w.id);

        // The head of each queue: as many tasks as this round can place (idle workers' windows,
        // starting workers, new starts); the rest only count.
        let mut heads: Vec<Vec<Task>> = Vec::with_capacity(self.algorithms.len());
        let mut queue = Vec::new();
        let mut policies = Vec::with_capacity(self.algorithms.len());
        let mut busy = vec![false; self.algorithms.len()];
        for worker in self.workers.values() {
            busy[worker.algorithm] |= !worker.running.is_empty();
        }
        for (a, algorithm) in self.algorithms.iter_mut().enumerate() {
            if algorithm.queue.is_empty() && !busy[a] {
                // At rest: the next burst may be different work; its windows ramp up again.
                algorithm.ramp = 1;
            }
            let window = algorithm.window(self.options.tasks_per_worker);
            let take =
                idle_count[a] * window + starting_count[a] + options.max_starts_per_round + 1;
            let mut head = Vec::with_capacity(take.min(algorithm.queue.len()));
            while head.len() < take {
                let Some(task) = algorithm.queue.pop() else {
                    break;
                };
                queue.push(scheduler::QueuedTask {
                    id: scheduler::TaskId(task.seq),
                    algorithm: a,
                    priority: task.priority,
                    entered_ms: task.entered_ms,
                    batch_index: task.assignment.batch_index.unwrap_or(0),
                    attempts: task.key.attempt,
                });
                head.push(task);
            }
            let def = &algorithm.def;
            policies.push(scheduler::AlgorithmPolicy {
                name: def.name.clone(),
                request: def.request,
                min_hot: def.min_hot_workers as u32,
                max_workers: (def.max_workers > 0).then_some(def.max_workers as u32),
                mean_task_us: algorithm.mean_task_us,
                start_cost_ms: algorithm.start_cost_ms.unwrap_or(DEFAULT_START_COST_MS),
                running_for_us: running_for[a],
                max_window: window,
                queued_beyond: algorithm.queue.len(),
            });
            heads.push(head);
        }
        let snapshot = scheduler::Snapshot {
            now_ms,
            algorithms: policies,
            queue,
            workers,
            nodes: self.nodes.clone(),
            options,
        };
        let decisions = scheduler::schedule(&snapshot);
        self.apply(decisions, heads);
    }

    fn apply(&mut self, decisions: scheduler::Decisions, heads: Vec<Vec<Task>>) {
        let mut by_seq: FastMap<u64, Task> =
            FastMap::with_capacity_and_hasher(heads.iter().map(Vec::len).sum(), Default::default());
        let mut head_order: Vec<Vec<u64>> = Vec::with_capacity(heads.len());
        for head in heads {
            head_order.push(head.iter().map(|t| t.seq).collect());
            by_seq.extend(head.into_iter().map(|t| (t.seq, t)));
        }
        // Refused: no node could ever hold the request.
        if let Some(timeout) = self.options.cluster.as_ref().map(|c| c.pending_timeout) {
            // A cluster may grow: the tasks wait, and fail once they waited too long.
            for algorithm in &mut self.algorithms {
                algorithm.refused = false;
            }
            for (a, why) in &decisions.refused {
                self.refuse_later(*a, why, timeout, &head_order[*a], &mut by_seq);
            }
        }
        for (a, why) in &decisions.refused {
            if self.options.cluster.is_some() {
                break;
            }
            for seq in &head_order[*a] {
                if let Some(task) = by_seq.remove(seq) {
                    task.reporter.finish(TaskOutcome::Failed(why.clone()));
                }
            }
            for task in std::mem::take(&mut self.algorithms[*a].queue) {
                task.reporter.finish(TaskOutcome::Failed(why.clone()));
            }
        }
        for stop in decisions.stop {
            let id = stop.worker.0;
            match stop.reason {
                scheduler::StopReason::Preempted => self.preempt(id),
                scheduler::StopReason::Idle | scheduler::StopReason::FreeForOthers => {
                    if let Some(worker) = self.workers.get_mut(&id) {
                        if worker.running.is_empty() {
                            worker.ask_to_exit();
                        } else {
                            // Seen idle with room for a window: it leaves once its tasks end.
                            worker.retired = true;
                        }
                    }
                }
            }
        }
        for start in decisions.start {
            self.spawn_worker(start.algorithm, start.node, start.placement);
        }
        for assignment in decisions.assign {
            let id = assignment.worker.0;
            let Some(worker) = self.workers.get_mut(&id) else {
                continue;
            };
            let room = self
                .options
                .tasks_per_worker
                .max(1)
                .saturating_sub(worker.running.len());
            let tasks = assignment
                .tasks
                .iter()
                .take(room)
                .filter_map(|task_id| by_seq.remove(&task_id.0));
            dispatch(worker, tasks);
        }
        // What was not placed goes back to its queue, the last first: each goes to the front.
        for (a, order) in head_order.iter().enumerate() {
            for seq in order.iter().rev() {
                if let Some(task) = by_seq.remove(seq) {
                    self.algorithms[a].queue.push(task);
                }
            }
        }
        for pending in decisions.pending {
            let algorithm = &mut self.algorithms[pending.algorithm];
            let Some(head) = algorithm.queue.peek() else {
                continue;
            };
            let said = algorithm
                .reported
                .as_ref()
                .is_some_and(|(key, reason)| *key == head.key && *reason == pending.reason);
            if !said {
                head.reporter.pending(pending.reason.clone());
                algorithm.reported = Some((head.key, pending.reason));
            }
        }
    }

    /// When the pool must run a round though nothing arrives: an idle worker's timeout, or
    /// the moment a task of unknown duration has run longer than a worker's start.
    fn next_wake(&self) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut earliest = |at: Instant| {
            wake = Some(wake.map_or(at, |w| w.min(at)));
        };
        let now = Instant::now();
        if self.dirty {
            earliest(now);
        }
        if self.due {
            earliest(self.last_round + REFILL_FOR);
        }
        if let Some(cluster) = &self.options.cluster {
            // A request no node holds gives up at its oldest task's pending timeout.
            for algorithm in self.algorithms.iter().filter(|a| a.refused) {
                if let Some(oldest) = algorithm.queue.iter().map(|t| t.entered_ms).min() {
                    earliest(self.epoch + Duration::from_millis(oldest) + cluster.pending_timeout);
                }
            }
        }
        if let Some(due) = self.gauges_due {
            earliest(due);
        }
        for worker in self.workers.values() {
            if worker.state != State::Ready || worker.leaving() {
                continue;
            }
            if worker.running.is_empty() {
                // Past it, the round kept the worker (minHotWorkers): no wake until news.
                let at = worker.idle_since + self.options.idle_timeout;
                if at > now {
                    earliest(at);
                }
                continue;
            }
            // Tasks wait behind a running one: once it has run longer than a start (and twice,
            // and four times that), the round sees a longer lower bound and may start workers.
            let algorithm = &self.algorithms[worker.algorithm];
            if !algorithm.queue.is_empty() {
                let cost = algorithm.start_cost_ms.unwrap_or(DEFAULT_START_COST_MS);
                let probe = [1, 2, 4]
                    .into_iter()
                    .map(|k| worker.busy_since + Duration::from_millis(cost * k + 1))
                    .find(|at| *at > now);
                if let Some(at) = probe {
                    earliest(at);
                }
            }
        }
        wake
    }

    // ----- applying decisions ---------------------------------------------------------------

    /// A cluster's request no node could hold: its tasks that waited `timeout` fail with `why`;
    /// the others go back to the queue and the oldest hears why it waits. The flag is cleared
    /// by the next round that does not refuse it (a node joined).
    fn refuse_later(
        &mut self,
        a: usize,
        why: &str,
        timeout: Duration,
        head: &[u64],
        by_seq: &mut FastMap<u64, Task>,
    ) {
        let now_ms = self.now_ms();
        let timeout_ms = timeout.as_millis() as u64;
        let algorithm = &mut self.algorithms[a];
        algorithm.refused = true;
        for seq in head {
            if let Some(task) = by_seq.remove(seq) {
                algorithm.queue.push(task);
            }
        }
        let (expired, waiting): (Vec<Task>, Vec<Task>) = std::mem::take(&mut algorithm.queue)
            .into_iter()
            .partition(|t| now_ms.saturating_sub(t.entered_ms) >= timeout_ms);
        algorithm.queue = waiting.into_iter().collect();
        for task in expired {
            task.reporter
                .finish(TaskOutcome::Failed(nodes::gave_up_text(why, timeout)));
        }
        if let Some(head) = algorithm.queue.peek() {
            let reason = nodes::waiting_text(why, timeout);
            let said = algorithm
                .reported
                .as_ref()
                .is_some_and(|(key, said)| *key == head.key && *said == reason);
            if !said {
                head.reporter.pending(reason.clone());
                algorithm.reported = Some((head.key, reason));
            }
        }
    }

    fn spawn_worker(&mut self, a: usize, node: scheduler::NodeIx, grant: Placement) {
        let Some(algorithm) = self.algorithms.get_mut(a) else {
            return;
        };
        let def = algorithm.def.clone();
        let id = self.next_worker;
        self.next_worker += 1;
        let now = Instant::now();
        self.workers.insert(
            id,
            Worker {
                algorithm: a,
                state: State::Starting,
                to_sidecar: None,
                child: None,
                running: FastMap::default(),
                cancelled_held: 0,
                crashed: Vec::new(),
                gone: None,
                exited: None,
                launched_at: now,
                idle_since: now,
                busy_since: now,
                held: grant.clone(),
                node,
                retired: false,
                preempted: false,
            },
        );
        algorithm.workers.push(id);
        let tx = self.tx.clone();
        let launcher = self
            .options
            .launchers
            .iter()
            .find(|l| l.runs(&def))
            .cloned();
        let sidecar = self.options.sidecar.clone();
        let on = self.nodes.get(node).unwrap_or(&self.options.inventory);
        let limits = Limits::for_worker(&def.request, &grant.gpu, on, self.options.memory_ratio);
        let node_name = Some(on.name.clone());
        let Some(launcher) = launcher else {
            let started = Err(launcher::Error::Start(launcher::none_runs(&def)));
            let _ = tx.send(Cmd::WorkerStarted(id, started));
            return;
        };
        let at_once = launcher.launches_at_once();
        let mut launching = launcher.launch(Launch {
            worker: id,
            algorithm: def,
            grant,
            node: node_name,
            limits,
            sidecar,
        });
        if at_once {
            // A thread of this process: taken in this turn, its first tasks sent at once.
            // A failure still comes as a command: the round that started it has put its tasks
            // back in the queue by then, where the failure finds them.
            match (&mut launching).now_or_never() {
                Some(Ok(launched)) => return self.worker_started(id, Ok(launched)),
                Some(failed) => {
                    let _ = tx.send(Cmd::WorkerStarted(id, failed));
                    return;
                }
                None => {}
            }
        }
        tokio::spawn(async move {
            let started = launching.await;
            let _ = tx.send(Cmd::WorkerStarted(id, started));
        });
    }

    /// A lower-priority worker gives its room to a more urgent task: its tasks get a stop (and
    /// go back to the queue when they end), it exits, and it is killed after the grace.
    fn preempt(&mut self, id: WorkerId) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        worker.preempted = true;
        for (task_id, task) in &mut worker.running {
            task.preempted = true;
            if let Some(to_sidecar) = &worker.to_sidecar {
                let _ = to_sidecar.send(ToSidecar::Stop {
                    task_id: task_id.clone(),
                    force: false,
                });
            }
        }
        if worker.running.is_empty() {
            worker.ask_to_exit();
        }
        if let Some(child) = &worker.child {
            let (exit, stopper) = (child.exit_watch(), child.stop_handle());
            let grace = self.options.preempt_grace;
            tokio::spawn(async move {
                if tokio::time::timeout(grace, exit).await.is_err() {
                    stopper.stop();
                }
            });
        }
    }

    fn worker_started(&mut self, id: WorkerId, started: Result<Launched, launcher::Error>) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        match started {
            Ok(Launched {
                to_sidecar,
                mut from_sidecar,
                worker: child,
            }) => {
                // The sidecar's reports come into this loop's `reports`; the worker's exit
                // comes as a command.
                self.reports.push(Box::pin(futures_util::stream::poll_fn(
                    move |cx| -> Poll<Option<(WorkerId, FromSidecar)>> {
                        from_sidecar
                            .poll_recv(cx)
                            .map(|message| message.map(|message| (id, message)))
                    },
                )));
                let tx = self.tx.clone();
                let exit = child.exit_watch();
                tokio::spawn(async move {
                    let exit = exit.await;
                    let _ = tx.send(Cmd::ChildExited(id, exit));
                });
                if worker.state == State::Exiting {
                    // Asked to exit while it was starting (shutdown, a new version).
                    let _ = to_sidecar.send(ToSidecar::Exit { exit_code: 0 });
                }
                worker.to_sidecar = Some(to_sidecar);
                worker.child = Some(child);
            }
            Err(error) => {
                let algorithm = worker.algorithm;
                self.remove_worker(id);
                self.fail_start(algorithm, &error.to_string());
            }
        }
    }

    /// A worker could not start: the waiting tasks of its algorithm crash (the engine retries
    /// them by their policy, which bounds the attempts), unless another worker may take them.
    fn fail_start(&mut self, a: usize, reason: &str) {
        let others = self.algorithms[a].workers.iter().any(|id| {
            self.workers
                .get(id)
                .is_some_and(|w| w.state != State::Exiting)
        });
        self.dirty = true;
        if others {
            return;
        }
        for task in std::mem::take(&mut self.algorithms[a].queue) {
            task.reporter
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
                    let now = Instant::now();
                    worker.idle_since = now;
                    // Rounded up: a wasm worker (a thread) is ready within a millisecond, and
                    // a start taken as free made the scheduler start a worker per round for
                    // microsecond tasks, far more of them than cores.
                    let took = now
                        .duration_since(worker.launched_at)
                        .as_micros()
                        .div_ceil(1000) as u64;
                    let algorithm = &mut self.algorithms[worker.algorithm];
                    algorithm.start_cost_ms = Some(match algorithm.start_cost_ms {
                        None => took,
                        Some(mean) => (mean * 3 + took) / 4,
                    });
                }
                self.dirty = true;
            }
            FromSidecar::Started { task_id } => {
                if let Some(task) = worker.running.get(&task_id) {
                    task.reporter.started();
                }
            }
            FromSidecar::Progress { .. } => {}
            FromSidecar::Log { task_id, text } => {
                if let Some(task) = worker.running.get(&task_id) {
                    // Watched: the runtime's exact capture replaces the piped lines, and the
                    // task board writes the file when the task ends.
                    if let Some(watch) = task.reporter.watch() {
                        watch.whole_output(&text);
                        return;
                    }
                    let file = log_file(&self.options.log_dir, &task.assignment.job_id, &task_id);
                    tokio::spawn(write_log(file, text));
                }
            }
            FromSidecar::Finished { task_id, outcome } => {
                let Some(task) = worker.release(&task_id) else {
                    return;
                };
                // The task's time on the worker: since its dispatch or the previous task's end.
                let now = Instant::now();
                let took_us = now.duration_since(worker.busy_since).as_micros() as u64;
                worker.busy_since = now;
                let a = worker.algorithm;
                if !task.preempted && !task.cancelled {
                    let algorithm = &mut self.algorithms[a];
                    match algorithm.mean_task_us {
                        // Far longer than the mean: the tasks changed; start over from this one,
                        // one task at a time.
                        Some(mean) if took_us > mean.saturating_mul(10) + 20_000 => {
                            algorithm.mean_task_us = Some(took_us);
                            algorithm.ramp = 1;
                        }
                        // As expected: the whole window again. A moving mean: recent tasks
                        // weigh most, one outlier does not swing it.
                        Some(mean) => {
                            algorithm.mean_task_us = Some((mean * 7 + took_us) / 8);
                            algorithm.ramp = scheduler::MAX_WINDOW;
                        }
                        None => {
                            algorithm.mean_task_us = Some(took_us);
                            algorithm.ramp = scheduler::MAX_WINDOW;
                        }
                    }
                }
                if worker.running.is_empty() {
                    worker.idle_since = now;
                    if worker.retired || worker.preempted {
                        worker.ask_to_exit();
                    }
                }
                let (held, leaving) = (worker.running.len(), worker.leaving());
                match outcome {
                    Outcome::Output { output } => {
                        task.reporter.finish(TaskOutcome::Succeeded(output))
                    }
                    error @ Outcome::Error { .. } => {
                        // The type, message, place and traceback: in the task's error (and so
                        // the job's status and `hkube run`'s stderr) and in its log.
                        let text = error.error_text().unwrap_or_default();
                        if let Some(watch) = task.reporter.watch() {
                            watch.error(&text);
                        } else {
                            let file =
                                log_file(&self.options.log_dir, &task.assignment.job_id, &task_id);
                            tokio::spawn(write_log(file, format!("{text}\n")));
                        }
                        task.reporter.finish(TaskOutcome::Failed(text))
                    }
                    // The engine asked for the stop and already recorded it.
                    Outcome::Stopped if task.cancelled => {}
                    // Stopped with the rest of its batch, or preempted: it runs again.
                    Outcome::Stopped => self.requeue(a, task),
                    Outcome::Crashed { .. } if task.preempted => self.requeue(a, task),
                    Outcome::Crashed { reason } => worker.crashed.push((task, reason)),
                }
                // A round can change something only once the worker has room again; in the
                // steady state of short tasks a refill does what it would do.
                if leaving || (held <= self.window(&self.algorithms[a]) / 2 && !self.refill(id)) {
                    self.dirty = true;
                }
            }
            FromSidecar::CodeApi {
                task_id,
                request_id,
                request,
            } => {
                let (Some(task), Some(to_sidecar)) =
                    (worker.running.get(&task_id), worker.to_sidecar.clone())
                else {
                    return;
                };
                code_api::relay(task.reporter.clone(), request_id, request, to_sidecar);
            }
            FromSidecar::Gone { reason } => {
                worker.gone = Some(reason);
                worker.state = State::Exiting;
                // Tasks it had not started go back to the queue for another worker (but for
                // those the engine cancelled meanwhile).
                let unstarted: Vec<Task> = worker.release_all().filter(|t| !t.cancelled).collect();
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
                let a = worker.algorithm;
                let finished = worker.exited.is_some();
                for task in unstarted {
                    self.requeue(a, task);
                }
                if finished {
                    self.finalize(id);
                }
                self.dirty = true;
            }
        }
    }

    /// The steady state of short tasks without a round ([`scheduler::refill`] decides): a
    /// round costs a snapshot of every worker and a pass over the queue's head, which
    /// microsecond tasks (a round per half window) paid more for than for the tasks
    /// themselves. `false` leaves it to a round, and one still runs [`REFILL_FOR`] after the
    /// last while refills go on (`due`).
    fn refill(&mut self, id: WorkerId) -> bool {
        if self.last_round.elapsed() >= REFILL_FOR {
            return false;
        }
        let Some(worker) = self.workers.get(&id) else {
            return false;
        };
        let a = worker.algorithm;
        if worker.state != State::Ready || worker.leaving() || worker.to_sidecar.is_none() {
            return false;
        }
        let algorithm = &self.algorithms[a];
        if algorithm.refused {
            return false;
        }
        let view = scheduler::RefillView {
            window: self.window(algorithm),
            held: worker.running.len(),
            per_worker: self.options.tasks_per_worker.max(1),
            queued: algorithm.queue.len(),
            others_queued: (self.algorithms.iter().enumerate())
                .any(|(b, other)| b != a && !other.queue.is_empty()),
        };
        let Some(take) = scheduler::refill(view) else {
            return false;
        };
        let (Some(worker), queue) = (self.workers.get_mut(&id), &mut self.algorithms[a].queue)
        else {
            return false;
        };
        dispatch(worker, std::iter::from_fn(|| queue.pop()).take(take));
        self.due = true;
        true
    }

    /// A task that did not run to its end goes back to its queue, as it was.
    fn requeue(&mut self, a: usize, mut task: Task) {
        task.preempted = false;
        self.algorithms[a].queue.push(task);
        self.dirty = true;
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
            let report = worker.start_failure_report();
            let a = worker.algorithm;
            self.remove_worker(id);
            self.fail_start(a, &report);
        }
        // Otherwise the sidecar reports the disconnect (`Gone`) and finalizes.
    }

    /// The worker's process has ended and its sidecar is gone: report its crashed tasks with
    /// the exit and the last output lines (a preempted worker's go back to the queue), and
    /// forget it; its room is free for the next round.
    fn finalize(&mut self, id: WorkerId) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        let crashed = std::mem::take(&mut worker.crashed);
        let a = worker.algorithm;
        let mut requeued = Vec::new();
        for (task, reason) in crashed {
            if task.preempted {
                requeued.push(task);
                continue;
            }
            let report = worker.report_for(&reason);
            task.reporter.finish(TaskOutcome::Crashed(report));
        }
        for task in requeued {
            self.requeue(a, task);
        }
        self.remove_worker(id);
        self.dirty = true;
    }

    fn remove_worker(&mut self, id: WorkerId) {
        if let Some(worker) = self.workers.remove(&id) {
            if let Some(algorithm) = self.algorithms.get_mut(worker.algorithm) {
                algorithm.workers.retain(|w| *w != id);
            }
            if let Some(child) = &worker.child {
                if worker.exited.is_none() {
                    child.stop();
                }
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

/// Where a task's output goes.
/// A worker running one task sends its output lines to that task's watch as they are read;
/// one running a window of short tasks cannot tell whose a line is, and its runtime's exact
/// capture per task comes with each outcome instead.
/// Hands `tasks` to `worker` in one message: they are its running tasks from now on.
fn dispatch(worker: &mut Worker, tasks: impl Iterator<Item = Task>) {
    if worker.running.is_empty() {
        worker.busy_since = Instant::now();
    }
    let mut sent = Vec::with_capacity(tasks.size_hint().1.unwrap_or(0));
    for task in tasks {
        sent.push(Arc::clone(&task.assignment));
        task.reporter.placed();
        worker.hold(task);
    }
    if sent.is_empty() {
        return;
    }
    if let Some(to_sidecar) = &worker.to_sidecar {
        let _ = to_sidecar.send(ToSidecar::Run { tasks: sent });
    }
    route_output(worker);
}

fn route_output(worker: &Worker) {
    let Some(child) = &worker.child else { return };
    let sink = match worker.running.values().next() {
        Some(task) if worker.running.len() == 1 => task.reporter.watch().cloned().map(|watch| {
            crate::executor::child::LineSink(Arc::new(move |line: &str| watch.line(line)))
        }),
        _ => None,
    };
    if let Ok(mut log) = child.log.lock() {
        log.sink = sink;
    }
}

fn log_file(log_dir: &std::path::Path, job_id: &str, task_id: &str) -> PathBuf {
    log_dir.join(job_id).join(format!("{task_id}.log"))
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
        Err(error) => eprintln!(
            "hkube: cannot write the task log {}: {error}",
            file.display()
        ),
    }
}
