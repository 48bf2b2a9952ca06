//! What the engine records so that a job survives a crash of the process that ran it.
//!
//! The engine writes three kinds of record: a job started (its prepared pipeline), a task
//! finished (succeeded or failed, with its output or error), a job ended (its result). After a
//! restart, every job without an end is rebuilt from its pipeline and replayed: tasks with a
//! record get their recorded outcome instead of running again, the rest run. Expansion is
//! deterministic (the same parent outputs give the same tasks in the same order), so a task is
//! found again by its node, its waitAny group and its batch index.
//!
//! The engine calls a journal from its loop: implementations must return at once (a database
//! implementation hands rows to a writer of its own).

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    pub job_id: String,
    /// The pipeline as the job runs it (defaults, overrides, expansion, flowInput).
    pub pipeline: Value,
    pub types: Vec<String>,
    pub root_job_id: Option<String>,
    /// Submission time, ms since the epoch.
    pub start_time: u64,
    /// The job whose end started this one through `triggers` (for `GET /exec/tree`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_job_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    pub job_id: String,
    pub node: String,
    /// The waitAny group (1-based parent item), 0 for other nodes.
    pub group: u32,
    /// 1-based batch position, 0 for a node that runs once.
    pub batch_index: u32,
    pub task_id: String,
    pub outcome: RecordedOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "status")]
pub enum RecordedOutcome {
    Succeeded {
        output: Value,
    },
    /// A tolerated failure (a batch item): it still counts against the batch tolerance.
    Failed {
        error: String,
    },
}

pub trait Journal: Send + Sync + 'static {
    fn job_started(&self, job: &JobRecord);
    fn task_finished(&self, task: &TaskRecord);
    fn job_finished(&self, job_id: &str, result: &Value);
    /// [`Journal::job_finished`] with the result as JSON text, as the engine writes it for a
    /// large job without building its tree (a database journal stores the text as it is).
    fn job_finished_json(&self, job_id: &str, result: String) {
        match serde_json::from_str::<Value>(&result) {
            Ok(value) => self.job_finished(job_id, &value),
            Err(error) => eprintln!("hkube: the result of job {job_id} is not JSON: {error}"),
        }
    }
    /// The job's last status document (reference §3.5), recorded just before its end, so that
    /// a job no longer in memory is answered as it was last seen.
    fn job_status(&self, _job_id: &str, _status: &Value) {}
    /// Jobs that started and never ended, with the tasks that finished, in recording order.
    fn unfinished(&self) -> Vec<(JobRecord, Vec<TaskRecord>)>;
}

/// A journal in memory: survives an engine, not the process. For tests, and to show the
/// contract a database journal keeps.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    jobs: Mutex<BTreeMap<String, Entry>>,
}

/// A job, its finished tasks, and its result once it ended.
type Entry = (JobRecord, Vec<TaskRecord>, Option<Value>);

impl MemoryJournal {
    pub fn new() -> Self {
        MemoryJournal::default()
    }

    /// The result recorded at a job's end, for tests.
    pub fn result(&self, job_id: &str) -> Option<Value> {
        self.jobs
            .lock()
            .ok()
            .and_then(|jobs| jobs.get(job_id).and_then(|(_, _, end)| end.clone()))
    }

    /// Finished-task records of a job, for tests.
    pub fn tasks(&self, job_id: &str) -> Vec<TaskRecord> {
        self.jobs
            .lock()
            .map(|jobs| {
                jobs.get(job_id)
                    .map(|(_, tasks, _)| tasks.clone())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }
}

impl Journal for MemoryJournal {
    fn job_started(&self, job: &JobRecord) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.entry(job.job_id.clone())
                .or_insert_with(|| (job.clone(), Vec::new(), None));
        }
    }

    fn task_finished(&self, task: &TaskRecord) {
        if let Ok(mut jobs) = self.jobs.lock() {
            if let Some((_, tasks, _)) = jobs.get_mut(&task.job_id) {
                tasks.push(task.clone());
            }
        }
    }

    fn job_finished(&self, job_id: &str, result: &Value) {
        if let Ok(mut jobs) = self.jobs.lock() {
            if let Some((_, _, end)) = jobs.get_mut(job_id) {
                *end = Some(result.clone());
            }
        }
    }

    fn unfinished(&self) -> Vec<(JobRecord, Vec<TaskRecord>)> {
        self.jobs
            .lock()
            .map(|jobs| {
                jobs.values()
                    .filter(|(_, _, end)| end.is_none())
                    .map(|(job, tasks, _)| (job.clone(), tasks.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}
