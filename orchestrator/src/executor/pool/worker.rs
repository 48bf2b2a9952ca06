//! The pool's view of one worker and of one queued task.

use std::collections::HashMap;
use std::sync::Arc;

/// A map looked up once or more per task: foldhash rather than std's SipHash, whose
/// resistance to chosen keys these keys (task ids and sequence numbers hkube makes) don't
/// need, and which showed at about 2 % of the CPU of microsecond tasks.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use tokio::sync::mpsc;
use tokio::time::Instant;
use wrapper::link::{Assignment, ToSidecar};

use crate::engine::{TaskKey, TaskReporter};
use crate::executor::child::{Exit, Supervised};
use crate::scheduler::Placement;

/// How many lines of a dead worker's output go into the task's error.
const CRASH_LINES: usize = 10;

/// A task waiting for, or running on, a worker.
pub(super) struct Task {
    pub priority: u8,
    /// Arrival order in the pool; also the task's id in the scheduler's snapshot.
    pub seq: u64,
    /// When it entered the pool (ms on the pool's clock), for the scheduler's aging.
    pub entered_ms: u64,
    pub key: TaskKey,
    pub reporter: TaskReporter,
    /// Boxed: a task moves at each step (queue, a round's heads, a worker's map), and a small
    /// `Task` moves cheaply (the assignment's strings stay put).
    pub assignment: Arc<Assignment>,
    /// The engine cancelled it while a worker held it: a stop was sent for it.
    pub cancelled: bool,
    /// Its worker was preempted for a more urgent task: whatever it ends with, it goes back
    /// to the queue (neither failed nor a used attempt).
    pub preempted: bool,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(super) enum State {
    /// Launched; its algorithm has not connected yet.
    Starting,
    Ready,
    /// Asked to exit (idle, retired, freed for others, shutdown): takes no task.
    Exiting,
}

pub(super) struct Worker {
    /// Index of its algorithm in the pool.
    pub algorithm: usize,
    pub state: State,
    pub to_sidecar: Option<mpsc::UnboundedSender<ToSidecar>>,
    pub child: Option<Supervised>,
    /// The tasks it holds, by task id. Changed only through `hold`, `release`, `cancel` and
    /// `release_all`, which keep `cancelled_held` true.
    pub running: FastMap<String, Task>,
    /// How many held tasks are cancelled: `stopping` is asked for every worker in every round
    /// and refill, and counting here keeps it from walking a window of tasks each time.
    pub cancelled_held: usize,
    /// Crashed tasks, reported once the process's exit is known.
    pub crashed: Vec<(Task, String)>,
    pub gone: Option<String>,
    pub exited: Option<Exit>,
    pub launched_at: Instant,
    pub idle_since: Instant,
    /// When its current task began: its dispatch to an idle worker, or the previous task's end
    /// (tasks in one message run one after another).
    pub busy_since: Instant,
    /// What the scheduler granted it: cpu, memory, GPU devices.
    pub held: Placement,
    /// Where: its node's index in the pool's nodes.
    pub node: crate::scheduler::NodeIx,
    /// Its algorithm changed: it exits once its tasks end.
    pub retired: bool,
    /// Stopped for a more urgent task: it exits once its tasks are stopped.
    pub preempted: bool,
}

impl Worker {
    /// A stop is in progress: it holds a task the engine cancelled, which its sidecar has not
    /// reported ended yet. Such a worker gets no new task, and counts as on its way out.
    pub fn stopping(&self) -> bool {
        self.cancelled_held > 0
    }

    /// Takes `task` to run.
    pub fn hold(&mut self, task: Task) {
        if task.cancelled {
            self.cancelled_held += 1;
        }
        if let Some(old) = self.running.insert(task.assignment.task_id.clone(), task) {
            self.cancelled_held -= usize::from(old.cancelled);
        }
    }

    /// The held task `task_id`, no longer held.
    pub fn release(&mut self, task_id: &str) -> Option<Task> {
        let task = self.running.remove(task_id)?;
        self.cancelled_held -= usize::from(task.cancelled);
        Some(task)
    }

    /// Every held task, no longer held.
    pub fn release_all(&mut self) -> impl Iterator<Item = Task> + '_ {
        self.cancelled_held = 0;
        self.running.drain().map(|(_, task)| task)
    }

    /// Marks the held task in `slot` cancelled; its id, when this worker holds it.
    pub fn cancel(&mut self, slot: impl Fn(&Task) -> bool) -> Option<String> {
        let (task_id, task) = self.running.iter_mut().find(|(_, t)| slot(t))?;
        if !task.cancelled {
            task.cancelled = true;
            self.cancelled_held += 1;
        }
        Some(task_id.clone())
    }

    /// On its way out: it takes no task and the scheduler sees it as stopping (it holds its
    /// resources until it is gone, and does not count toward `maxWorkers`).
    pub fn leaving(&self) -> bool {
        self.state == State::Exiting || self.retired || self.preempted || self.stopping()
    }

    /// Tells the algorithm to exit (once): it takes no more tasks.
    pub fn ask_to_exit(&mut self) {
        if self.state == State::Exiting {
            return;
        }
        self.state = State::Exiting;
        if let Some(to_sidecar) = &self.to_sidecar {
            let _ = to_sidecar.send(ToSidecar::Exit { exit_code: 0 });
        }
    }

    pub fn last_lines(&self) -> Vec<String> {
        self.child
            .as_ref()
            .and_then(|c| c.log.lock().ok().map(|log| log.tail(CRASH_LINES)))
            .unwrap_or_default()
    }

    pub fn report_for(&self, reason: &str) -> String {
        super::report::crash_report(reason, self.exited.as_ref(), &self.last_lines())
    }

    pub fn start_failure_report(&self) -> String {
        let exit = self
            .exited
            .as_ref()
            .map_or("ended".to_string(), ToString::to_string);
        let reason = format!("the algorithm's process {exit} before connecting to its sidecar");
        super::report::crash_report(&reason, None, &self.last_lines())
    }
}
