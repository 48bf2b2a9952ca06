//! The seam between the engine and whatever runs algorithms: local processes, Docker,
//! Kubernetes, or the in-process test algorithms.
//!
//! The engine hands a [`TaskSpec`] to [`Executor::submit`] and forgets it; the executor reports
//! back through the task's [`TaskReporter`], from any thread. An executor never blocks the
//! engine: `submit` and `cancel` must return at once and queue their work.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::driver::Msg;
use super::ids::TaskId;

/// Identifies one attempt of one task within the engine. Events carrying an older attempt are
/// ignored, so a late report from a cancelled or retried run cannot overwrite a newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskKey {
    pub job: u64,
    pub node: u32,
    pub task: u32,
    pub attempt: u32,
}

impl TaskKey {
    /// The task without its attempt number.
    pub fn slot(&self) -> (u64, u32, u32) {
        (self.job, self.node, self.task)
    }
}

/// One task to run: everything an algorithm receives (reference §2.8).
#[derive(Debug)]
pub struct TaskSpec {
    pub key: TaskKey,
    pub task_id: TaskId,
    pub job_id: Arc<str>,
    pub root_job_id: Arc<str>,
    pub pipeline_name: Arc<str>,
    pub node_name: Arc<str>,
    pub algorithm_name: Arc<str>,
    /// The resolved input array: references replaced by values, batch tokens by the element.
    pub input: Vec<Value>,
    /// 1-based position in a batch; `None` for a node that runs once.
    pub batch_index: Option<u32>,
    /// 1 (most urgent) to 5; schedulers pop the lowest first.
    pub priority: u8,
    pub extra_data: Option<Arc<Value>>,
    pub reporter: TaskReporter,
}

/// How a task ended, as the executor saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    /// The algorithm returned this output.
    Succeeded(Value),
    /// The algorithm raised an error: its message (and traceback, when there is one).
    Failed(String),
    /// The worker died or lost the algorithm: exit code, signal, last log lines.
    Crashed(String),
}

/// The executor's side of a running task. Cheap to clone; every method may be called from any
/// thread. Reports after the task's end are ignored.
#[derive(Debug, Clone)]
pub struct TaskReporter {
    key: TaskKey,
    engine: mpsc::UnboundedSender<Msg>,
    /// Who observes this task besides the engine (timing, live logs); none in most tests.
    watch: Option<Arc<dyn TaskWatch>>,
}

/// Observes one task's life as its executor reports it: when it reached a worker, started,
/// printed and ended. Implemented by `telemetry`; every method must return at once.
pub trait TaskWatch: Send + Sync + std::fmt::Debug {
    /// A worker took the task.
    fn placed(&self);
    fn started(&self);
    /// One line the task printed, as it printed it.
    fn line(&self, line: &str);
    /// Everything the task printed, as its runtime captured it exactly: it replaces the lines
    /// seen so far (which, read from a shared pipe, may miss the last ones).
    fn whole_output(&self, text: &str);
    /// The task's error (type, message, traceback): added to its log, after what it printed.
    fn error(&self, text: &str);
    fn finished(&self, outcome: &TaskOutcome);
}

/// A sub-pipeline request from a running algorithm (the code API).
#[derive(Debug, Clone, PartialEq)]
pub enum SubPipeline {
    /// A whole descriptor: `{name, nodes, options, webhooks, flowInput}`.
    Raw(Value),
    /// A stored pipeline by name, with an optional flowInput replacing the stored one.
    Stored {
        name: String,
        flow_input: Option<Value>,
    },
}

impl TaskReporter {
    pub(super) fn new(key: TaskKey, engine: mpsc::UnboundedSender<Msg>) -> Self {
        TaskReporter {
            key,
            engine,
            watch: None,
        }
    }

    /// This reporter, also telling `watch` what happens to the task.
    pub fn watched(mut self, watch: Arc<dyn TaskWatch>) -> Self {
        self.watch = Some(watch);
        self
    }

    /// The task's watch, when something watches it.
    pub fn watch(&self) -> Option<&Arc<dyn TaskWatch>> {
        self.watch.as_ref()
    }

    /// A worker took the task (no engine event: only watchers care).
    pub fn placed(&self) {
        if let Some(watch) = &self.watch {
            watch.placed();
        }
    }

    pub fn key(&self) -> TaskKey {
        self.key
    }

    /// The algorithm started running: the task is `active` and its node `ttl` starts now.
    pub fn started(&self) {
        if let Some(watch) = &self.watch {
            watch.started();
        }
        let _ = self.engine.send(Msg::TaskStarted(self.key));
    }

    pub fn finish(&self, outcome: TaskOutcome) {
        if let Some(watch) = &self.watch {
            watch.finished(&outcome);
        }
        let _ = self.engine.send(Msg::TaskFinished(self.key, outcome));
    }

    /// Code API: run a pipeline as a child job of this task's job, and get its result document
    /// when it ends. Ending this task stops the child.
    pub fn start_sub_pipeline(
        &self,
        request: SubPipeline,
    ) -> oneshot::Receiver<Result<Value, super::Error>> {
        let (reply, result) = oneshot::channel();
        if let Err(mpsc::error::SendError(Msg::StartSubPipeline { reply, .. })) =
            self.engine.send(Msg::StartSubPipeline {
                parent: self.key,
                request,
                reply,
            })
        {
            let _ = reply.send(Err(super::Error::Closed));
        }
        result
    }

    /// Code API: run one more task of `algorithm` inside this job (node
    /// `<thisNode>:<algorithm>`), and get its outcome.
    pub fn start_algorithm(
        &self,
        algorithm: String,
        input: Vec<Value>,
    ) -> oneshot::Receiver<TaskOutcome> {
        let (reply, result) = oneshot::channel();
        let _ = self.engine.send(Msg::StartAlgorithm {
            parent: self.key,
            algorithm,
            input,
            reply,
        });
        result
    }

    /// Code API: stop the sub-pipelines and algorithm executions this task started.
    pub fn stop_children(&self, reason: String) {
        let _ = self.engine.send(Msg::StopChildren {
            parent: self.key,
            reason,
        });
    }
}

/// Runs tasks. Implementations: the local process executor (the default), Docker, Kubernetes,
/// and [`super::InProcessExecutor`] for tests and benchmarks.
pub trait Executor: Send + Sync + 'static {
    /// Queues a task. Must not block; report through `task.reporter`.
    fn submit(&self, task: TaskSpec);

    /// Stops a task that is queued or running. The engine has already recorded the task as
    /// stopped or failed; the executor only needs to free what the task holds.
    fn cancel(&self, key: TaskKey);

    /// A job ended: what its tasks stored may go, except the objects its results document
    /// points at (`keep`, storage paths).
    fn job_ended(&self, _job_id: &str, _keep: &[String]) {}
}
