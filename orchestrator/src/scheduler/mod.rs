//! The scheduler: which workers to start, reuse or stop, and which queued task goes to which
//! worker, from the queue, the workers and the inventory of nodes.
//!
//! Pure: a [`Snapshot`] goes in, [`Decisions`] come out. No clock (the time is a field of the
//! snapshot), no IO, no channels; an executor's pool applies the decisions through its
//! launcher and calls [`schedule`] again when something changed (a task queued or ended, a
//! worker ready or gone). It must never name a backend: a node is a machine or a cluster node.
//!
//! One round, in order:
//! 1. The queue is ordered by effective priority (1 is highest), then entrance time, then batch
//!    index. Aging is bounded: a task rises one level per `aging_step_ms` waited and never
//!    above 1, so a low-priority task always runs, and never overtakes a top-priority task
//!    that waited longer (HKube's aging is unbounded; reference §7.1).
//! 2. Each task in that order, across all algorithms (HKube loses cross-algorithm priority,
//!    §8.12):
//!    - takes an idle worker of its algorithm (several short tasks go in one message, see
//!      [`dispatch_window`]);
//!    - or waits for a worker of its algorithm that is starting;
//!    - or starts a worker on the node that fits it (bounded by `maxWorkers` and the free
//!      resources; tasks measured to be short do not start workers they would finish before,
//!      nor more workers than the nodes have cores);
//!    - or, if nothing fits, frees room: idle workers of other algorithms first, then workers
//!      busy with lower-priority tasks (preempted: stopped, their task is queued again);
//!    - or waits with a reason ("waiting for gpu: requested 1, free 0 of 2").
//! 3. `minHotWorkers` are started where room is left; idle workers beyond them stop after the
//!    idle timeout.
//!
//! A request no node could hold even when empty is refused at once with the resource named
//! ([`resources::never_fits`]); requested == free fits (HKube's GPU off-by-one, §8.11).

pub mod resources;

#[cfg(test)]
mod tests;

use std::cmp::Reverse;

pub use resources::{Free, Gpu, GpuGrant, Node, Placement, Request, Resource};

/// Index of an algorithm in [`Snapshot::algorithms`].
pub type AlgorithmIx = usize;
/// Index of a node in [`Snapshot::nodes`].
pub type NodeIx = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkerId(pub u64);

/// One algorithm (one version of it) as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlgorithmPolicy {
    pub name: String,
    pub request: Request,
    pub min_hot: u32,
    /// `None`: no cap.
    pub max_workers: Option<u32>,
    /// Recent mean time of one task, when measured (microseconds).
    pub mean_task_us: Option<u64>,
    /// What starting a worker costs before it takes a task (milliseconds; measured or a
    /// default).
    pub start_cost_ms: u64,
    /// The longest a task of it has been running now (µs): a lower bound of its duration,
    /// which overrides a shorter mean (the tasks changed) and stands in for an unknown one.
    /// Until a task of unknown duration runs, one worker starts and the rest wait to see.
    pub running_for_us: Option<u64>,
    /// Tasks in one message, at most (0: no cap beyond [`dispatch_window`]): a pool ramps its
    /// windows up after a pause, so a changed task time shows before many tasks travel.
    pub max_window: usize,
    /// Tasks of it queued beyond those in [`Snapshot::queue`] (a pool may pass only the head
    /// of a long queue): they count toward whether more workers are worth starting.
    pub queued_beyond: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedTask {
    pub id: TaskId,
    pub algorithm: AlgorithmIx,
    /// The pipeline's priority, 1 (highest) to 5.
    pub priority: u8,
    pub entered_ms: u64,
    pub batch_index: u32,
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Launched, not ready yet.
    Starting,
    Idle {
        since_ms: u64,
    },
    /// Running a task of this priority.
    Busy {
        priority: u8,
    },
    /// Told to stop; it still holds its resources until it is gone.
    Stopping,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    pub id: WorkerId,
    pub algorithm: AlgorithmIx,
    pub node: NodeIx,
    pub state: WorkerState,
    pub held: Placement,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// An idle worker beyond `minHotWorkers` stops after this long.
    pub idle_timeout_ms: u64,
    /// A waiting task rises one priority level per this long.
    pub aging_step_ms: u64,
    /// Workers started in one round, at most.
    pub max_starts_per_round: usize,
    /// Whether workers busy with lower-priority tasks may be stopped for higher ones.
    pub preempt_busy: bool,
    /// An algorithm that already has workers stops other algorithms' idle workers to start
    /// more only once they have been idle this long, or when the start saves it more than
    /// starting the stopped one again will cost. One with no worker takes that room at once.
    /// Without it, a scale-up that saved a few ms stopped the idle workers of a pipeline's
    /// other steps, and its next run paid their starts again.
    pub evict_idle_after_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            idle_timeout_ms: 60_000,
            aging_step_ms: 120_000,
            max_starts_per_round: 64,
            preempt_busy: true,
            evict_idle_after_ms: 5_000,
        }
    }
}

/// Everything one round looks at.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub now_ms: u64,
    pub algorithms: Vec<AlgorithmPolicy>,
    pub queue: Vec<QueuedTask>,
    pub workers: Vec<WorkerView>,
    pub nodes: Vec<Node>,
    pub options: Options,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub worker: WorkerId,
    /// In the order the worker should run them.
    pub tasks: Vec<TaskId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub algorithm: AlgorithmIx,
    pub node: NodeIx,
    pub placement: Placement,
    /// Started for `minHotWorkers`, not for a task.
    pub hot: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Idle longer than the idle timeout and not needed as a hot worker.
    Idle,
    /// Its resources go to a task of another algorithm (the worker was idle).
    FreeForOthers,
    /// It runs a lower-priority task that goes back to the queue.
    Preempted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub worker: WorkerId,
    pub reason: StopReason,
}

/// Why an algorithm's tasks still wait after this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub algorithm: AlgorithmIx,
    /// Tasks of the algorithm left waiting.
    pub waiting: usize,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decisions {
    pub assign: Vec<Assignment>,
    pub start: Vec<Start>,
    pub stop: Vec<Stop>,
    pub pending: Vec<Pending>,
    /// Algorithms whose request no node could ever hold, with the reason; their queued tasks
    /// fail.
    pub refused: Vec<(AlgorithmIx, String)>,
}

/// Microseconds of work one dispatch message should carry: tasks shorter than this travel
/// several to a message, longer ones one at a time.
pub const DISPATCH_BUDGET_US: u64 = 2_000;
/// Tasks in one message, at most.
pub const MAX_WINDOW: usize = 64;

/// What a refill between rounds looks at: one ready worker with room, and its algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefillView {
    /// The algorithm's dispatch window now (its ramp included).
    pub window: usize,
    /// Tasks the worker holds, and the most it may hold.
    pub held: usize,
    pub per_worker: usize,
    /// Tasks of its algorithm queued.
    pub queued: usize,
    /// Whether any other algorithm has tasks queued.
    pub others_queued: bool,
}

/// The steady state of short tasks between rounds: how many of its algorithm's queued tasks
/// a worker that has room for half a window takes now, in the queue's order (the number a
/// round would send it), or `None` when a round must decide. A round is needed when other
/// algorithms have tasks queued (priorities across algorithms), and for tasks that go one at
/// a time (they spread over workers); starts, stops and pending reasons are a round's too, so
/// the pool still runs rounds while it refills.
pub fn refill(view: RefillView) -> Option<usize> {
    if view.window <= 1 || view.queued == 0 || view.others_queued {
        return None;
    }
    let room = view.per_worker.saturating_sub(view.held);
    Some(view.window.min(room).min(view.queued)).filter(|n| *n > 0)
}

/// How many tasks go to a worker in one message, from the algorithm's measured task time:
/// one when unknown or long (so they spread over workers), up to [`MAX_WINDOW`] for
/// microsecond tasks (the message costs more than the work).
pub fn dispatch_window(mean_task_us: Option<u64>) -> usize {
    match mean_task_us {
        None => 1,
        Some(mean) => (DISPATCH_BUDGET_US / mean.max(1)).clamp(1, MAX_WINDOW as u64) as usize,
    }
}

/// A task's priority after waiting: one level up per `aging_step_ms`, never above 1.
pub fn effective_priority(task: &QueuedTask, now_ms: u64, aging_step_ms: u64) -> u8 {
    let waited = now_ms.saturating_sub(task.entered_ms);
    let levels = waited.checked_div(aging_step_ms).unwrap_or(0);
    let raised = u64::from(task.priority.max(1)).saturating_sub(levels);
    raised.max(1) as u8
}

/// The queue in the order tasks are served.
pub fn order(snapshot: &Snapshot) -> Vec<usize> {
    let step = snapshot.options.aging_step_ms;
    let mut keyed: Vec<(u8, u64, u32, TaskId, usize)> = snapshot
        .queue
        .iter()
        .enumerate()
        .map(|(ix, task)| {
            (
                effective_priority(task, snapshot.now_ms, step),
                task.entered_ms,
                task.batch_index,
                task.id,
                ix,
            )
        })
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|k| k.4).collect()
}

/// Per-algorithm bookkeeping during one round.
#[derive(Debug, Default, Clone)]
struct AlgorithmRound {
    /// Idle workers not yet given work this round.
    idle: Vec<WorkerId>,
    /// Starting workers no task has claimed yet.
    unclaimed_starting: usize,
    /// Workers that count against `maxWorkers` (all but stopping ones), plus starts decided.
    workers: u32,
    /// Set once a task of this algorithm could not be served: later ones wait too (they ask
    /// the same), so the round stays linear in the queue.
    blocked: Option<String>,
    waiting: usize,
    /// Queued tasks of this algorithm not yet served in this round.
    queued_left: usize,
    /// The open multi-task assignment (index into `assign`) and room left in it.
    open: Option<(usize, usize)>,
}

/// One scheduling round.
pub fn schedule(snapshot: &Snapshot) -> Decisions {
    let mut decisions = Decisions::default();
    let nodes = &snapshot.nodes;
    let algorithms = &snapshot.algorithms;

    // Refused outright: no node could hold the request even empty.
    let mut refused = vec![false; algorithms.len()];
    for (ix, algorithm) in algorithms.iter().enumerate() {
        if let Some(why) = resources::never_fits(&algorithm.name, &algorithm.request, nodes) {
            refused[ix] = true;
            decisions.refused.push((ix, why));
        }
    }

    // What is free on each node now, and what stopping workers will give back.
    let mut free: Vec<Free> = nodes.iter().map(Free::of).collect();
    let mut freeing: Vec<Free> = nodes
        .iter()
        .map(|n| Free {
            cpu_millis: 0,
            mem_mib: 0,
            gpu_used: vec![0; n.gpus.len()],
        })
        .collect();
    let mut rounds = vec![AlgorithmRound::default(); algorithms.len()];
    for worker in &snapshot.workers {
        let Some(node) = nodes.get(worker.node) else {
            continue;
        };
        free[worker.node].take(node, &worker.held);
        let Some(round) = rounds.get_mut(worker.algorithm) else {
            continue;
        };
        match worker.state {
            WorkerState::Stopping => {
                // Recorded as "used" in `freeing`: what this node gets back soon.
                freeing[worker.node].take(node, &worker.held);
                continue;
            }
            WorkerState::Idle { .. } => round.idle.push(worker.id),
            WorkerState::Starting => round.unclaimed_starting += 1,
            WorkerState::Busy { .. } => {}
        }
        round.workers += 1;
    }
    for round in &mut rounds {
        // Pop from the end: the lowest id (the oldest worker) is used first.
        round.idle.sort_unstable_by_key(|id| Reverse(*id));
    }
    for task in &snapshot.queue {
        if let Some(round) = rounds.get_mut(task.algorithm) {
            round.queued_left += 1;
        }
    }
    for (round, algorithm) in rounds.iter_mut().zip(algorithms) {
        round.queued_left += algorithm.queued_beyond;
    }

    // The best (lowest) effective priority each algorithm has queued: an idle worker of an
    // algorithm with work waiting is only taken for a task that outranks that work.
    let mut best_queued: Vec<Option<u8>> = vec![None; algorithms.len()];
    for task in &snapshot.queue {
        if let Some(best) = best_queued.get_mut(task.algorithm) {
            let p = effective_priority(task, snapshot.now_ms, snapshot.options.aging_step_ms);
            *best = Some(best.map_or(p, |b| b.min(p)));
        }
    }

    // Short tasks keep a worker's core busy: more of their workers than cores only share them.
    let cores = nodes
        .iter()
        .map(|n| n.cpu_millis.div_ceil(1000))
        .sum::<u32>()
        .max(1);
    let mut stopped = vec![false; snapshot.workers.len()];
    let mut starts = 0usize;
    for ix in order(snapshot) {
        let task = &snapshot.queue[ix];
        let a = task.algorithm;
        if a >= algorithms.len() || refused[a] {
            continue;
        }
        let algorithm = &algorithms[a];
        let round = &mut rounds[a];
        round.queued_left = round.queued_left.saturating_sub(1);
        if round.blocked.is_some() {
            round.waiting += 1;
            continue;
        }
        // 1. A multi-task message being filled for this algorithm.
        if let Some((at, room)) = round.open {
            if room > 0 {
                decisions.assign[at].tasks.push(task.id);
                round.open = (room > 1).then_some((at, room - 1));
                continue;
            }
        }
        // 2. An idle worker.
        if let Some(worker) = round.idle.pop() {
            let mut window = dispatch_window(algorithm.mean_task_us);
            if algorithm.max_window > 0 {
                window = window.min(algorithm.max_window);
            }
            decisions.assign.push(Assignment {
                worker,
                tasks: vec![task.id],
            });
            round.open = (window > 1).then_some((decisions.assign.len() - 1, window - 1));
            continue;
        }
        // 3. A worker on its way.
        if round.unclaimed_starting > 0 {
            round.unclaimed_starting -= 1;
            continue;
        }
        // 4. Short tasks already have workers that will finish them before a new one starts;
        //    tasks of unknown duration wait until one has run longer than a start.
        if round.workers > 0 && !worth_a_new_worker(algorithm, round, cores) {
            round.blocked = Some(if algorithm.mean_task_us.is_none() {
                format!(
                    "waiting for a free worker of {} ({} started; more start once its first task has run longer than a worker's start)",
                    algorithm.name, round.workers
                )
            } else {
                format!(
                    "waiting for a free worker of {} ({} running; its tasks are short, so no more are started)",
                    algorithm.name, round.workers
                )
            });
            round.waiting += 1;
            continue;
        }
        // 5. maxWorkers.
        if let Some(max) = algorithm.max_workers.filter(|m| *m > 0) {
            if round.workers >= max {
                round.blocked = Some(format!(
                    "waiting for a free worker of {}: maxWorkers {max} are running",
                    algorithm.name
                ));
                round.waiting += 1;
                continue;
            }
        }
        if starts >= snapshot.options.max_starts_per_round {
            round.blocked = Some("waiting for the next round: enough workers are starting".into());
            round.waiting += 1;
            continue;
        }
        // 6. A node with room.
        if let Some((node, placement)) = best_fit(nodes, &free, &algorithm.request) {
            free[node].take(&nodes[node], &placement);
            decisions.start.push(Start {
                algorithm: a,
                node,
                placement,
                hot: false,
            });
            starts += 1;
            round.workers += 1;
            continue;
        }
        // 7. Room that stopping workers are about to give back: wait for it.
        if fits_once_freed(nodes, &free, &freeing, &algorithm.request) {
            round.blocked = Some(format!(
                "waiting for resources that stopping workers are releasing ({})",
                shortfall_text(nodes, &free, &algorithm.request)
            ));
            round.waiting += 1;
            continue;
        }
        // 8. Make room: idle workers of other algorithms, then lower-priority busy ones.
        let priority = effective_priority(task, snapshot.now_ms, snapshot.options.aging_step_ms);
        // What one more worker saves this algorithm, against what stopping an idle worker of
        // another costs (its next task starts it again).
        let gain_ms = match rounds[a].workers {
            0 => u64::MAX,
            workers => scaling_gain_ms(algorithm, &rounds[a], workers),
        };
        if let Some(victims) = make_room(
            snapshot,
            &free,
            &stopped,
            &best_queued,
            (a, priority, gain_ms),
        ) {
            for (worker_ix, reason) in victims {
                stopped[worker_ix] = true;
                let worker = &snapshot.workers[worker_ix];
                let node = &nodes[worker.node];
                freeing[worker.node].take(node, &worker.held);
                if let Some(other) = rounds.get_mut(worker.algorithm) {
                    other.idle.retain(|id| *id != worker.id);
                    other.workers = other.workers.saturating_sub(1);
                }
                decisions.stop.push(Stop {
                    worker: worker.id,
                    reason,
                });
            }
            let round = &mut rounds[a];
            round.blocked = Some(format!(
                "waiting for resources being freed for it ({})",
                shortfall_text(nodes, &free, &algorithm.request)
            ));
            round.waiting += 1;
            continue;
        }
        let round = &mut rounds[a];
        round.blocked = Some(format!(
            "waiting for {}",
            shortfall_text(nodes, &free, &algorithm.request)
        ));
        round.waiting += 1;
    }

    // Hot workers: started where room is left; idle ones beyond them stop after the timeout.
    for (a, algorithm) in algorithms.iter().enumerate() {
        if refused[a] {
            continue;
        }
        while rounds[a].workers < algorithm.min_hot
            && starts < snapshot.options.max_starts_per_round
        {
            let Some((node, placement)) = best_fit(nodes, &free, &algorithm.request) else {
                break;
            };
            free[node].take(&nodes[node], &placement);
            decisions.start.push(Start {
                algorithm: a,
                node,
                placement,
                hot: true,
            });
            starts += 1;
            rounds[a].workers += 1;
        }
    }
    for (worker_ix, worker) in snapshot.workers.iter().enumerate() {
        let WorkerState::Idle { since_ms } = worker.state else {
            continue;
        };
        let Some(algorithm) = algorithms.get(worker.algorithm) else {
            continue;
        };
        let round = &mut rounds[worker.algorithm];
        let still_idle = round.idle.contains(&worker.id);
        let timed_out =
            snapshot.now_ms.saturating_sub(since_ms) >= snapshot.options.idle_timeout_ms;
        // Replacements started while workers were stopping may leave more than maxWorkers
        // once the stops end: idle ones beyond it go at once.
        let over_max = algorithm
            .max_workers
            .filter(|m| *m > 0)
            .is_some_and(|max| round.workers > max.max(algorithm.min_hot));
        if still_idle
            && !stopped[worker_ix]
            && (timed_out || over_max)
            && round.workers > algorithm.min_hot
        {
            round.workers -= 1;
            round.idle.retain(|id| *id != worker.id);
            decisions.stop.push(Stop {
                worker: worker.id,
                reason: StopReason::Idle,
            });
        }
    }

    for (a, round) in rounds.into_iter().enumerate() {
        if let Some(reason) = round.blocked {
            decisions.pending.push(Pending {
                algorithm: a,
                waiting: round.waiting,
                reason,
            });
        }
    }
    decisions
}

/// Whether the tasks of `algorithm` still queued justify one more worker: yes when the queue
/// would keep each running worker busy longer than a start costs. While their duration is
/// unknown, twice the longest a task has run so far stands for it, and before any
/// has run no second worker starts: a burst of microsecond tasks then starts one worker, and
/// a batch of long ones spreads as soon as its first task has outlasted a start.
///
/// Tasks measured shorter than a start get at most one worker per core (`cores`, of all
/// nodes): their time is mostly the runtime's and the messages', on a core; a worker beyond
/// the cores only takes a share of one, and measured under that contention each task looks
/// longer, which asked for more workers still (10,000 no-op tasks on 2 cores started 20
/// workers and ran at a fifth of the rate of two). The price: short tasks that wait rather
/// than compute (a 50 ms sleep) also get one worker per core. Tasks of unknown duration are
/// not capped: they spread by how long the first has run.
fn worth_a_new_worker(algorithm: &AlgorithmPolicy, round: &AlgorithmRound, cores: u32) -> bool {
    let Some(mean_us) = expected_task_us(algorithm) else {
        return false;
    };
    let start_us = algorithm.start_cost_ms.saturating_mul(1000);
    if algorithm.mean_task_us.is_some() && mean_us < start_us && round.workers >= cores {
        return false;
    }
    // This task and those behind it, shared by the running workers, each of which first
    // finishes the task it holds (taken at its full mean: nothing says it is near its end).
    // Without that term, 4 one-second tasks behind 12 busy workers looked like 0.33 s of
    // work each and started nobody, and the batch took 2 s instead of 1 s plus a start.
    let backlog_us = (round.queued_left as u64 + 1).saturating_mul(mean_us);
    let per_worker_us = backlog_us / u64::from(round.workers.max(1)) + mean_us;
    per_worker_us > start_us
}

/// What a task of `algorithm` is expected to take (µs): its measured mean, or twice what its
/// running task has run when that is longer (a task that has run for r is expected to run
/// about as long again: nothing says it is near its end); `None` when nothing is known.
fn expected_task_us(algorithm: &AlgorithmPolicy) -> Option<u64> {
    match (algorithm.mean_task_us, algorithm.running_for_us) {
        (Some(mean), Some(running)) => Some(mean.max(running.saturating_mul(2))),
        (Some(mean), None) => Some(mean),
        (None, Some(running)) => Some(running.saturating_mul(2)),
        (None, None) => None,
    }
}

/// How much sooner an algorithm's backlog ends with one worker more than its `workers`, in
/// ms: the backlog (as [`worth_a_new_worker`] counts it) shared by one more.
fn scaling_gain_ms(algorithm: &AlgorithmPolicy, round: &AlgorithmRound, workers: u32) -> u64 {
    let Some(mean_us) = expected_task_us(algorithm) else {
        return 0;
    };
    let backlog_us = (round.queued_left as u64 + 1).saturating_mul(mean_us);
    let workers = u64::from(workers);
    (backlog_us / workers - backlog_us / (workers + 1)) / 1000
}

/// The node `request` fits best: for GPU requests the one with the fewest free whole GPUs that
/// suffices (big GPU nodes stay free for big requests); else the one with the most free cpu
/// among those without GPUs first (GPU nodes stay free for GPU work).
fn best_fit(nodes: &[Node], free: &[Free], request: &Request) -> Option<(NodeIx, Placement)> {
    let wants_gpu = request.gpu_hundredths > 0;
    let mut best: Option<(NodeIx, Placement, (u32, i64))> = None;
    for (ix, node) in nodes.iter().enumerate() {
        let Some(placement) = free[ix].fit(node, request) else {
            continue;
        };
        let rank = if wants_gpu {
            (free[ix].whole_free_gpus(), -free[ix].cpu_millis)
        } else {
            (node.gpus.len() as u32, -free[ix].cpu_millis)
        };
        if best.as_ref().is_none_or(|(_, _, r)| rank < *r) {
            best = Some((ix, placement, rank));
        }
    }
    best.map(|(ix, placement, _)| (ix, placement))
}

/// Whether `request` fits some node once its stopping workers are gone.
fn fits_once_freed(nodes: &[Node], free: &[Free], freeing: &[Free], request: &Request) -> bool {
    nodes.iter().enumerate().any(|(ix, node)| {
        let mut after = free[ix].clone();
        after.cpu_millis -= freeing[ix].cpu_millis;
        after.mem_mib -= freeing[ix].mem_mib;
        for (used, released) in after.gpu_used.iter_mut().zip(&freeing[ix].gpu_used) {
            *used = used.saturating_sub(*released);
        }
        after.fit(node, request).is_some()
    })
}

/// Workers to stop so that `request` of algorithm `a` fits one node: per node, idle workers of
/// other algorithms with nothing queued first, then (if allowed) workers busy with, or idle
/// while their algorithm has queued, work of lower priority than `priority`, lowest priority
/// first. The node needing the fewest preemptions, then the fewest stops, wins. An idle worker
/// counts only once idle for `evict_idle_after_ms`, or when `gain_ms` (what the start saves
/// `a`: unbounded for its first worker) exceeds its own algorithm's start cost.
fn make_room(
    snapshot: &Snapshot,
    free: &[Free],
    stopped: &[bool],
    best_queued: &[Option<u8>],
    (a, priority, gain_ms): (AlgorithmIx, u8, u64),
) -> Option<Vec<(usize, StopReason)>> {
    let request = &snapshot.algorithms[a].request;
    let mut best: Option<Vec<(usize, StopReason)>> = None;
    for (node_ix, node) in snapshot.nodes.iter().enumerate() {
        let mut candidates: Vec<(u8, usize, StopReason)> = snapshot
            .workers
            .iter()
            .enumerate()
            .filter(|(ix, w)| w.node == node_ix && w.algorithm != a && !stopped[*ix])
            .filter_map(|(ix, w)| {
                // Lowest priority (largest number) first, after idle workers nobody waits for.
                let lower = |theirs: u8| 1 + 5u8.saturating_sub(theirs.min(5));
                match w.state {
                    // A worker idle only briefly is taken for a scale-up that saves more than
                    // the start its own next task would pay again.
                    WorkerState::Idle { since_ms }
                        if snapshot.now_ms.saturating_sub(since_ms)
                            < snapshot.options.evict_idle_after_ms
                            && gain_ms <= snapshot.algorithms[w.algorithm].start_cost_ms =>
                    {
                        None
                    }
                    WorkerState::Idle { .. } => {
                        match best_queued.get(w.algorithm).copied().flatten() {
                            None => Some((0, ix, StopReason::FreeForOthers)),
                            Some(theirs) if theirs > priority => {
                                Some((lower(theirs), ix, StopReason::FreeForOthers))
                            }
                            Some(_) => None,
                        }
                    }
                    WorkerState::Busy { priority: theirs }
                        if snapshot.options.preempt_busy && theirs > priority =>
                    {
                        Some((lower(theirs), ix, StopReason::Preempted))
                    }
                    _ => None,
                }
            })
            .collect();
        candidates.sort_unstable_by_key(|(rank, ix, _)| (*rank, *ix));
        let mut after = free[node_ix].clone();
        let mut chosen = Vec::new();
        for (_, ix, reason) in candidates {
            if after.fit(node, request).is_some() {
                break;
            }
            after.give(node, &snapshot.workers[ix].held);
            chosen.push((ix, reason));
        }
        if chosen.is_empty() || after.fit(node, request).is_none() {
            continue;
        }
        let better = best.as_ref().is_none_or(|b| {
            let busy = |v: &Vec<(usize, StopReason)>| {
                v.iter()
                    .filter(|(_, r)| *r == StopReason::Preempted)
                    .count()
            };
            (busy(&chosen), chosen.len()) < (busy(b), b.len())
        });
        if better {
            best = Some(chosen);
        }
    }
    best
}

/// "gpu: requested 1, free 0 of 2" for the node closest to holding `request`.
fn shortfall_text(nodes: &[Node], free: &[Free], request: &Request) -> String {
    let mut best: Option<(Resource, String, f64)> = None;
    for (ix, node) in nodes.iter().enumerate() {
        let Some(resource) = free[ix].shortfall(node, request) else {
            continue;
        };
        let (have, total, free_amount) = match resource {
            Resource::Gpu => {
                let have = if request.whole_gpus() > 0 {
                    f64::from(free[ix].whole_free_gpus())
                } else {
                    free[ix]
                        .gpu_used
                        .iter()
                        .map(|u| f64::from(100 - (*u).min(100)) / 100.0)
                        .fold(0.0, f64::max)
                };
                (resources::amount(have), node.gpus.len().to_string(), have)
            }
            Resource::Cpu => {
                let have = free[ix].cpu_millis.max(0) as f64 / 1000.0;
                (
                    resources::amount(have),
                    resources::amount(f64::from(node.cpu_millis) / 1000.0),
                    have,
                )
            }
            Resource::Memory => {
                let have = free[ix].mem_mib.max(0);
                (
                    format!("{have}Mi"),
                    format!("{}Mi", node.mem_mib),
                    have as f64,
                )
            }
        };
        let text = format!(
            "{resource}: requested {}, free {have} of {total}",
            resources::requested(resource, request)
        );
        // The node that lacks the least important resource, then has the most of it.
        let closer = best
            .as_ref()
            .is_none_or(|(r, _, amount)| (rank(resource), -free_amount) > (rank(*r), -*amount));
        if closer {
            best = Some((resource, text, free_amount));
        }
    }
    best.map(|(_, text, _)| text)
        .unwrap_or_else(|| "resources".to_string())
}

/// GPUs are the scarcest: a node lacking only memory is closer than one lacking GPUs.
fn rank(resource: Resource) -> u8 {
    match resource {
        Resource::Gpu => 0,
        Resource::Cpu => 1,
        Resource::Memory => 2,
    }
}
