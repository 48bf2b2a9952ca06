//! What the server tells about the work it does: the task board (each task's id, node and
//! timing), the task logs, and the Prometheus metrics.
//!
//! [`Observed`] wraps the server's executor: every task it is handed gets a [`TaskWatch`]
//! through which its executor reports placement, start, output and end, so no executor keeps
//! this bookkeeping itself. The API reads [`Telemetry`]; nothing here decides anything about
//! jobs or tasks.

pub mod logs;
pub mod metrics;
pub mod storage;
pub mod tasks;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::engine::{now_ms, Executor, TaskId, TaskKey, TaskOutcome, TaskSpec, TaskWatch};
pub use logs::{LogLine, TaskLogs};
pub use tasks::{Board, NodeTimes, TaskRecord, TaskState};

/// The task board and the task logs of one server; cheap to clone.
#[derive(Debug, Clone)]
pub struct Telemetry {
    board: Arc<Mutex<Board>>,
    pub logs: Arc<TaskLogs>,
}

impl Telemetry {
    /// Task logs go to `<log_dir>/<jobId>/<taskId>.log`.
    pub fn new(log_dir: PathBuf) -> Telemetry {
        Telemetry {
            board: Arc::new(Mutex::new(Board::default())),
            logs: Arc::new(TaskLogs::new(log_dir)),
        }
    }

    /// The board, to read. A poisoned lock (a panic while holding it) still holds counts
    /// worth showing.
    pub fn board(&self) -> MutexGuard<'_, Board> {
        self.board
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the task gauges of `/metrics` from the board.
    pub fn publish_task_counts(&self) {
        let board = self.board();
        for (state, count) in board.counts() {
            metrics::METRICS
                .tasks
                .with_label_values(&[state.as_str()])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }
}

/// An executor whose tasks are watched: timing on the board, output in the logs.
pub struct Observed {
    inner: Arc<dyn Executor>,
    telemetry: Telemetry,
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed").finish_non_exhaustive()
    }
}

impl Observed {
    pub fn new(inner: Arc<dyn Executor>, telemetry: Telemetry) -> Observed {
        Observed { inner, telemetry }
    }
}

impl Executor for Observed {
    fn submit(&self, mut task: TaskSpec) {
        self.telemetry.board().queued(
            task.key,
            &task.job_id,
            task.task_id,
            &task.node_name,
            &task.algorithm_name,
            task.batch_index,
            now_ms(),
        );
        let watch = Arc::new(Watch {
            telemetry: self.telemetry.clone(),
            key: task.key,
            job_id: task.job_id.clone(),
            task_id: task.task_id,
            node_name: task.node_name.clone(),
            algorithm_name: task.algorithm_name.clone(),
            captured: AtomicBool::new(false),
        });
        task.reporter = task.reporter.watched(watch);
        self.inner.submit(task);
    }

    fn cancel(&self, key: TaskKey) {
        self.telemetry
            .board()
            .update(key, TaskState::Stopped, now_ms());
        self.inner.cancel(key);
    }

    fn job_ended(&self, job_id: &str, keep: &[String]) {
        self.telemetry.board().job_ended(job_id, now_ms());
        self.inner.job_ended(job_id, keep);
    }
}

/// One task's watch.
#[derive(Debug)]
struct Watch {
    telemetry: Telemetry,
    key: TaskKey,
    job_id: Arc<str>,
    task_id: TaskId,
    node_name: Arc<str>,
    algorithm_name: Arc<str>,
    /// The runtime's exact capture came, or the task ended: lines still read from the pipe
    /// after that are already in the text (or belong to no task) and are not added.
    captured: AtomicBool,
}

impl TaskWatch for Watch {
    fn placed(&self) {
        // A retry of a task whose earlier attempt's log was written takes lines again.
        self.telemetry.logs.reopen(&self.job_id, self.task_id);
        self.telemetry
            .board()
            .update(self.key, TaskState::Placed, now_ms());
    }

    fn started(&self) {
        self.telemetry
            .board()
            .update(self.key, TaskState::Active, now_ms());
    }

    fn line(&self, line: &str) {
        if self.captured.load(Ordering::Relaxed) {
            return;
        }
        self.telemetry
            .logs
            .line(&self.job_id, self.task_id, &self.node_name, line);
    }

    fn whole_output(&self, text: &str) {
        self.captured.store(true, Ordering::Relaxed);
        self.telemetry
            .logs
            .whole(&self.job_id, self.task_id, &self.node_name, text);
    }

    fn error(&self, text: &str) {
        for line in text.lines() {
            self.telemetry
                .logs
                .line(&self.job_id, self.task_id, &self.node_name, line);
        }
    }

    fn finished(&self, outcome: &TaskOutcome) {
        self.captured.store(true, Ordering::Relaxed);
        let state = match outcome {
            TaskOutcome::Succeeded(_) => TaskState::Succeeded,
            TaskOutcome::Failed(_) => TaskState::Failed,
            TaskOutcome::Crashed(_) => TaskState::Crashed,
        };
        let change = self.telemetry.board().update(self.key, state, now_ms());
        if change.is_some() {
            metrics::METRICS
                .tasks_ended
                .with_label_values(&[&self.algorithm_name, state.as_str()])
                .inc();
        }
        if let Some(ran_ms) = change.and_then(|c| c.ran_ms) {
            metrics::METRICS
                .task_duration
                .with_label_values(&[&self.algorithm_name])
                .observe(ran_ms as f64 / 1000.0);
        }
        self.telemetry.logs.finish(&self.job_id, self.task_id);
    }
}
