//! The task board: every task an executor was handed, with its id, node and the four moments
//! of its life (queued → placed → started → done), per job. It answers "where did this step's
//! time go" (`GET /exec/tasks/{jobId}`, the status's `nodeTimes`, the UI) and "which task ids
//! does this job have" (the names of the log files).
//!
//! Pure bookkeeping under one lock: no IO, no clock (callers pass the time). Bounded: a job
//! keeps at most [`MAX_RECORDS_PER_JOB`] task records (beyond that only counts), and only the
//! [`KEEP_ENDED_JOBS`] most recently ended jobs stay.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::Serialize;

use crate::engine::{TaskId, TaskKey};

/// Task records one job keeps; a larger batch is counted, not listed, beyond this.
pub const MAX_RECORDS_PER_JOB: usize = 200_000;
/// Ended jobs whose boards stay in memory (older ones are answered from the store and the
/// log files only).
pub const KEEP_ENDED_JOBS: usize = 200;

/// Where a task stands, as its executor reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
#[repr(u8)]
pub enum TaskState {
    /// Handed to the executor, waiting for a worker.
    Queued,
    /// A worker holds it; the algorithm has not started it yet.
    Placed,
    Active,
    Succeeded,
    Failed,
    Crashed,
    /// Cancelled by the engine (a stop, a ttl, a failed job).
    Stopped,
}

impl TaskState {
    pub const ALL: [TaskState; 7] = [
        TaskState::Queued,
        TaskState::Placed,
        TaskState::Active,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Crashed,
        TaskState::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Placed => "placed",
            TaskState::Active => "active",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Crashed => "crashed",
            TaskState::Stopped => "stopped",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Crashed | TaskState::Stopped
        )
    }
}

/// One task as the board keeps it (times in ms since the epoch).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    #[serde(serialize_with = "task_id_text")]
    pub task_id: TaskId,
    #[serde(serialize_with = "shared_text")]
    pub node_name: Arc<str>,
    #[serde(serialize_with = "shared_text")]
    pub algorithm_name: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_index: Option<u32>,
    pub status: TaskState,
    /// Runs of this task so far (a retry is a new attempt of the same task id).
    pub attempts: u32,
    pub queued: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done: Option<u64>,
}

fn shared_text<S: serde::Serializer>(text: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(text)
}

fn task_id_text<S: serde::Serializer>(id: &TaskId, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(id.as_str())
}

/// A node's tasks summed up: counts per state, and where their time went (ms, over the runs
/// that reached each step: a retried task's earlier attempts count too). Kept up to date as
/// tasks move, so a status call reads it at once, whatever the size of the job (a scan of a
/// million-item job's records under the board's lock, on every status call, cost 10–20 ms
/// each and held up every task report meanwhile).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeTimes {
    pub node_name: String,
    pub algorithm_name: String,
    pub tasks: u64,
    /// Non-zero counts per [`TaskState`].
    pub states: std::collections::BTreeMap<&'static str, u64>,
    /// queued → placed: waiting for a worker.
    pub waiting: Span,
    /// placed → started: the worker handing it to the algorithm.
    pub starting: Span,
    /// started → done: the algorithm's run.
    pub running: Span,
    /// The first task's queueing and the last task's end: the node's wall-clock span.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_queued: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_done: Option<u64>,
}

/// Durations of one step over a node's tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    pub count: u64,
    pub total_ms: u64,
    pub max_ms: u64,
}

impl Span {
    fn add(&mut self, from: Option<u64>, to: Option<u64>) {
        if let (Some(from), Some(to)) = (from, to) {
            let took = to.saturating_sub(from);
            self.count += 1;
            self.total_ms += took;
            self.max_ms = self.max_ms.max(took);
        }
    }
}

#[derive(Debug, Default)]
struct JobBoard {
    tasks: Vec<TaskRecord>,
    /// Per node, in the order its first task was queued; `node_at` finds a node's entry.
    nodes: Vec<NodeTimes>,
    node_at: HashMap<u32, usize>,
    /// (node, position) → index in `tasks`.
    index: HashMap<(u32, u32), usize>,
    /// Tasks seen beyond [`MAX_RECORDS_PER_JOB`].
    untracked: u64,
    ended: bool,
    /// Bumped on every change: a watcher compares it to skip unchanged jobs.
    version: u64,
}

/// The board. Not thread-safe itself: [`super::Telemetry`] holds it under a lock.
#[derive(Debug, Default)]
pub struct Board {
    jobs: HashMap<Arc<str>, JobBoard>,
    /// Engine job keys → job ids, for the tasks' events (which carry keys).
    keys: HashMap<u64, Arc<str>>,
    ended: VecDeque<Arc<str>>,
    /// Tasks in each state, over every job on the board (for `/metrics`).
    counts: [u64; TaskState::ALL.len()],
}

/// What [`Board::update`] changed, for metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    pub from: TaskState,
    pub to: TaskState,
    /// The run's duration, when the task just ended after a start.
    pub ran_ms: Option<u64>,
}

impl NodeTimes {
    fn count(&mut self, state: TaskState, delta: i64) {
        let slot = self.states.entry(state.as_str()).or_default();
        *slot = slot.saturating_add_signed(delta);
        if *slot == 0 {
            self.states.remove(state.as_str());
        }
    }

    /// `record` moved from `from` to its status now, at `now`: the counts and the step's span.
    fn moved(&mut self, record: &TaskRecord, from: TaskState, now: u64) {
        self.count(from, -1);
        self.count(record.status, 1);
        match record.status {
            TaskState::Queued => {}
            TaskState::Placed => self.waiting.add(Some(record.queued), Some(now)),
            TaskState::Active => self.starting.add(record.placed, Some(now)),
            _ => {
                self.running.add(record.started, Some(now));
                self.last_done = Some(self.last_done.map_or(now, |d| d.max(now)));
            }
        }
    }
}

impl JobBoard {
    /// Where the sums of the node of the record at `at` are (made on its first task).
    fn node_ix(&mut self, node: u32, at: usize) -> usize {
        let next = self.nodes.len();
        let ix = *self.node_at.entry(node).or_insert(next);
        if ix == next {
            let record = &self.tasks[at];
            self.nodes.push(NodeTimes {
                node_name: record.node_name.to_string(),
                algorithm_name: record.algorithm_name.to_string(),
                ..NodeTimes::default()
            });
        }
        ix
    }
}

impl Board {
    /// A task reached the executor (again, for a retry).
    #[allow(clippy::too_many_arguments)]
    pub fn queued(
        &mut self,
        key: TaskKey,
        job_id: &Arc<str>,
        task_id: TaskId,
        node_name: &Arc<str>,
        algorithm_name: &Arc<str>,
        batch_index: Option<u32>,
        now: u64,
    ) {
        self.keys.entry(key.job).or_insert_with(|| job_id.clone());
        let job = self.jobs.entry(job_id.clone()).or_default();
        job.version += 1;
        if let Some(&at) = job.index.get(&(key.node, key.task)) {
            let record = &mut job.tasks[at];
            let from = record.status;
            self.counts[from as usize] = self.counts[from as usize].saturating_sub(1);
            record.status = TaskState::Queued;
            record.attempts += 1;
            record.queued = now;
            record.placed = None;
            record.started = None;
            record.done = None;
            let ix = job.node_ix(key.node, at);
            job.nodes[ix].moved(&job.tasks[at], from, now);
        } else if job.tasks.len() < MAX_RECORDS_PER_JOB {
            let at = job.tasks.len();
            job.index.insert((key.node, key.task), at);
            job.tasks.push(TaskRecord {
                task_id,
                node_name: node_name.clone(),
                algorithm_name: algorithm_name.clone(),
                batch_index,
                status: TaskState::Queued,
                attempts: 1,
                queued: now,
                placed: None,
                started: None,
                done: None,
            });
            let ix = job.node_ix(key.node, at);
            let node = &mut job.nodes[ix];
            node.tasks += 1;
            node.count(TaskState::Queued, 1);
            node.first_queued = Some(node.first_queued.map_or(now, |q| q.min(now)));
        } else {
            job.untracked += 1;
            return;
        }
        self.counts[TaskState::Queued as usize] += 1;
    }

    /// A task moved on; `None` when the board does not know it (or it already ended).
    pub fn update(&mut self, key: TaskKey, to: TaskState, now: u64) -> Option<Change> {
        let job_id = self.keys.get(&key.job)?;
        let job = self.jobs.get_mut(job_id)?;
        let &at = job.index.get(&(key.node, key.task))?;
        let record = &mut job.tasks[at];
        let from = record.status;
        // An ended task stays ended (a late report of a stopped run).
        if from.is_final() || from == to {
            return None;
        }
        match to {
            TaskState::Queued => record.queued = now,
            TaskState::Placed => record.placed = Some(now),
            TaskState::Active => record.started = Some(now),
            _ => record.done = Some(now),
        }
        record.status = to;
        job.version += 1;
        self.counts[from as usize] = self.counts[from as usize].saturating_sub(1);
        self.counts[to as usize] += 1;
        let ran_ms = match (to.is_final(), record.started) {
            (true, Some(started)) => Some(now.saturating_sub(started)),
            _ => None,
        };
        let ix = job.node_ix(key.node, at);
        job.nodes[ix].moved(&job.tasks[at], from, now);
        Some(Change { from, to, ran_ms })
    }

    /// The job ended: its unfinished tasks count as stopped, and it is kept among the
    /// [`KEEP_ENDED_JOBS`] latest.
    pub fn job_ended(&mut self, job_id: &str, now: u64) {
        let Some((id, job)) = self.jobs.get_key_value(job_id) else {
            return;
        };
        if job.ended {
            return;
        }
        let id = id.clone();
        let job = self.jobs.get_mut(&id).expect("looked up just above");
        job.ended = true;
        job.version += 1;
        let JobBoard {
            tasks,
            nodes,
            node_at,
            index,
            ..
        } = job;
        for (&(node, _), &at) in index.iter() {
            let record = &mut tasks[at];
            if !record.status.is_final() {
                let from = record.status;
                self.counts[from as usize] = self.counts[from as usize].saturating_sub(1);
                record.status = TaskState::Stopped;
                record.done = Some(now);
                self.counts[TaskState::Stopped as usize] += 1;
                if let Some(&ix) = node_at.get(&node) {
                    nodes[ix].moved(record, from, now);
                }
            }
        }
        self.keys.retain(|_, job| *job != id);
        self.ended.push_back(id);
        while self.ended.len() > KEEP_ENDED_JOBS {
            if let Some(old) = self.ended.pop_front() {
                if let Some(gone) = self.jobs.remove(&old) {
                    for record in gone.tasks {
                        let slot = &mut self.counts[record.status as usize];
                        *slot = slot.saturating_sub(1);
                    }
                }
            }
        }
    }

    /// The job's tasks in the order they were queued, filtered by node, one page of them;
    /// `None` when the board does not know the job.
    pub fn tasks(
        &self,
        job_id: &str,
        node: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Option<(Vec<TaskRecord>, usize)> {
        let job = self.jobs.get(job_id)?;
        let matching = job
            .tasks
            .iter()
            .filter(|t| node.is_none_or(|node| &*t.node_name == node));
        let total = matching.clone().count();
        Some((matching.skip(offset).take(limit).cloned().collect(), total))
    }

    /// The task ids of a job's node (all nodes when `None`), with their node names.
    pub fn task_ids(&self, job_id: &str, node: Option<&str>) -> Vec<(TaskId, Arc<str>)> {
        self.jobs.get(job_id).map_or_else(Vec::new, |job| {
            job.tasks
                .iter()
                .filter(|t| node.is_none_or(|node| &*t.node_name == node))
                .map(|t| (t.task_id, t.node_name.clone()))
                .collect()
        })
    }

    /// Per-node sums, nodes in the order their first task was queued.
    pub fn node_times(&self, job_id: &str) -> Option<Vec<NodeTimes>> {
        Some(self.jobs.get(job_id)?.nodes.clone())
    }

    /// The job's change counter (0 when unknown) and whether it ended.
    pub fn version(&self, job_id: &str) -> (u64, bool) {
        self.jobs
            .get(job_id)
            .map_or((0, false), |job| (job.version, job.ended))
    }

    /// Tasks in each state over the jobs on the board.
    pub fn counts(&self) -> impl Iterator<Item = (TaskState, u64)> + '_ {
        TaskState::ALL
            .iter()
            .map(|&state| (state, self.counts[state as usize]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(task: u32) -> TaskKey {
        TaskKey {
            job: 1,
            node: 0,
            task,
            attempt: 0,
        }
    }

    fn board_with(tasks: u32) -> Board {
        let mut board = Board::default();
        let (job, node, algorithm): (Arc<str>, Arc<str>, Arc<str>) =
            ("job-1".into(), "square".into(), "sq".into());
        for task in 0..tasks {
            let id = TaskId::parse(&format!("task{task:04}")).expect("a valid id");
            board.queued(key(task), &job, id, &node, &algorithm, Some(task + 1), 1000);
        }
        board
    }

    #[test]
    fn the_four_moments_and_the_node_sums() {
        let mut board = board_with(2);
        board.update(key(0), TaskState::Placed, 1010);
        board.update(key(0), TaskState::Active, 1030);
        let change = board.update(key(0), TaskState::Succeeded, 1130);
        assert_eq!(change.and_then(|c| c.ran_ms), Some(100));
        // A late report of an ended task changes nothing.
        assert_eq!(board.update(key(0), TaskState::Failed, 1200), None);
        let (tasks, total) = board.tasks("job-1", Some("square"), 0, 10).expect("known");
        assert_eq!(total, 2);
        assert_eq!(tasks[0].task_id.as_str(), "task0000");
        assert_eq!(
            (
                tasks[0].queued,
                tasks[0].placed,
                tasks[0].started,
                tasks[0].done
            ),
            (1000, Some(1010), Some(1030), Some(1130))
        );
        let nodes = board.node_times("job-1").expect("known");
        assert_eq!(nodes[0].tasks, 2);
        assert_eq!(nodes[0].states.get("succeeded"), Some(&1));
        assert_eq!(nodes[0].states.get("queued"), Some(&1));
        assert_eq!(nodes[0].running.total_ms, 100);
        assert_eq!(nodes[0].waiting.max_ms, 10);
        board.job_ended("job-1", 2000);
        let nodes = board.node_times("job-1").expect("known");
        assert_eq!(nodes[0].states.get("stopped"), Some(&1));
        assert_eq!(nodes[0].states.get("queued"), None);
        assert_eq!(nodes[0].last_done, Some(2000));
        let counts: HashMap<_, _> = board.counts().collect();
        assert_eq!(counts[&TaskState::Stopped], 1);
        assert_eq!(counts[&TaskState::Queued], 0);
        assert!(board.version("job-1").1);
    }

    #[test]
    fn a_retry_is_a_new_attempt_of_the_same_record() {
        let mut board = board_with(1);
        board.update(key(0), TaskState::Active, 1001);
        board.update(key(0), TaskState::Crashed, 1002);
        board.queued(
            key(0),
            &"job-1".into(),
            TaskId::parse("task0000").expect("valid"),
            &"square".into(),
            &"sq".into(),
            Some(1),
            1003,
        );
        let (tasks, _) = board.tasks("job-1", None, 0, 10).expect("known");
        assert_eq!((tasks.len(), tasks[0].attempts), (1, 2));
        assert_eq!(tasks[0].status, TaskState::Queued);
        // One task, queued again; the crashed attempt's run still counts where time went.
        let nodes = board.node_times("job-1").expect("known");
        assert_eq!(nodes[0].tasks, 1);
        assert_eq!(
            nodes[0].states.iter().collect::<Vec<_>>(),
            vec![(&"queued", &1)]
        );
        assert_eq!((nodes[0].running.count, nodes[0].running.total_ms), (1, 1));
    }

    #[test]
    fn only_the_latest_ended_jobs_stay() {
        let mut board = Board::default();
        for n in 0..(KEEP_ENDED_JOBS as u64 + 5) {
            let job: Arc<str> = format!("job-{n}").into();
            let id = TaskId::parse("abcdefgh").expect("valid");
            let k = TaskKey {
                job: n,
                node: 0,
                task: 0,
                attempt: 0,
            };
            board.queued(k, &job, id, &"a".into(), &"a".into(), None, 1);
            board.job_ended(&job, 2);
        }
        assert!(board.tasks("job-0", None, 0, 1).is_none());
        assert!(board
            .tasks(&format!("job-{}", KEEP_ENDED_JOBS + 4), None, 0, 1)
            .is_some());
        assert_eq!(
            board.counts().map(|(_, n)| n).sum::<u64>(),
            KEEP_ENDED_JOBS as u64
        );
    }
}
