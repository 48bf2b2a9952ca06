//! The seam between the engine and whatever runs algorithms: local processes, Docker,
//! Kubernetes, or the in-process test algorithms.
//!
//! The engine hands a [`TaskSpec`] to [`Executor::submit`] and forgets it; the executor reports
//! back through the task's [`TaskReporter`], from any thread. An executor never blocks the
//! engine: `submit` and `cancel` must return at once and queue their work.
//!
//! Reports travel as [`Report`] values into a [`ReportSink`]: the driver is the sink (it wraps
//! them into its own loop messages), so this module, and the jobs that build tasks, name
//! nothing of the driver. A job hands out [`TaskRequest`]s; the driver attaches the reporter.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::oneshot;

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

/// A task as a job hands it out: a [`TaskSpec`] without its reporter, which the driver
/// attaches ([`TaskRequest::with_reporter`]).
#[derive(Debug)]
pub struct TaskRequest {
    pub key: TaskKey,
    pub task_id: TaskId,
    pub job_id: Arc<str>,
    pub root_job_id: Arc<str>,
    pub pipeline_name: Arc<str>,
    pub node_name: Arc<str>,
    pub algorithm_name: Arc<str>,
    pub input: Vec<Value>,
    pub batch_index: Option<u32>,
    pub priority: u8,
    pub extra_data: Option<Arc<Value>>,
    /// The node asks for hkube's result cache (`cache: true`).
    pub cache: bool,
}

impl TaskRequest {
    pub fn with_reporter(self, reporter: TaskReporter) -> TaskSpec {
        let TaskRequest {
            key,
            task_id,
            job_id,
            root_job_id,
            pipeline_name,
            node_name,
            algorithm_name,
            input,
            batch_index,
            priority,
            extra_data,
            cache,
        } = self;
        TaskSpec {
            key,
            task_id,
            job_id,
            root_job_id,
            pipeline_name,
            node_name,
            algorithm_name,
            input,
            batch_index,
            priority,
            extra_data,
            cache,
            reporter,
        }
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
    /// The node asks for hkube's result cache (`cache: true`).
    pub cache: bool,
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
#[derive(Clone)]
pub struct TaskReporter {
    key: TaskKey,
    sink: Arc<dyn ReportSink>,
    /// Sees the outcome before the engine does (the result cache keeps successes).
    on_finish: Option<FinishHook>,
    /// Who observes this task besides the engine (timing, live logs); none in most tests.
    watch: Option<Arc<dyn TaskWatch>>,
}

/// What sees a task's outcome before the engine does ([`TaskReporter::with_finish_hook`]).
pub type FinishHook = Arc<dyn Fn(&TaskOutcome) + Send + Sync>;

impl std::fmt::Debug for TaskReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskReporter")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// What an executor tells the engine about a task.
#[derive(Debug)]
pub enum Report {
    Started(TaskKey),
    /// The task waits for a worker, and why (the scheduler's reason); kept until it starts.
    Pending(TaskKey, String),
    Finished(TaskKey, TaskOutcome),
    /// The result cache had the task's output: it succeeded without running.
    Cached(TaskKey, Value),
    StartSubPipeline {
        parent: TaskKey,
        request: SubPipeline,
        reply: oneshot::Sender<Result<Value, super::Error>>,
    },
    StartAlgorithm {
        parent: TaskKey,
        algorithm: String,
        input: Vec<Value>,
        reply: oneshot::Sender<TaskOutcome>,
    },
    /// Code API: stop the sub-pipelines and algorithm executions a task started.
    StopChildren {
        parent: TaskKey,
        reason: String,
    },
}

/// Where reports go: the engine's loop. Gives the report back when the engine has shut down.
pub trait ReportSink: Send + Sync + 'static {
    fn report(&self, report: Report) -> Result<(), Box<Report>>;
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
    pub fn new(key: TaskKey, sink: Arc<dyn ReportSink>) -> Self {
        TaskReporter {
            key,
            sink,
            on_finish: None,
            watch: None,
        }
    }

    /// This reporter, with `hook` called with the outcome when the task finishes.
    pub fn with_finish_hook(mut self, hook: FinishHook) -> Self {
        self.on_finish = Some(hook);
        self
    }

    /// The task ends with an output the result cache had: the algorithm did not run, and the
    /// job's status counts the task as cached.
    pub fn finish_cached(&self, output: Value) {
        if let Some(watch) = &self.watch {
            watch.finished(&TaskOutcome::Succeeded(output.clone()));
        }
        let _ = self.sink.report(Report::Cached(self.key, output));
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
        let _ = self.sink.report(Report::Started(self.key));
    }

    /// The task waits for a worker: `reason` says why (per node, the resource short). The
    /// engine shows it in the job's status until the task starts.
    pub fn pending(&self, reason: String) {
        let _ = self.sink.report(Report::Pending(self.key, reason));
    }

    pub fn finish(&self, outcome: TaskOutcome) {
        if let Some(watch) = &self.watch {
            watch.finished(&outcome);
        }
        if let Some(hook) = &self.on_finish {
            hook(&outcome);
        }
        let _ = self.sink.report(Report::Finished(self.key, outcome));
    }

    /// Code API: run a pipeline as a child job of this task's job, and get its result document
    /// when it ends. Ending this task stops the child.
    pub fn start_sub_pipeline(
        &self,
        request: SubPipeline,
    ) -> oneshot::Receiver<Result<Value, super::Error>> {
        let (reply, result) = oneshot::channel();
        if let Err(report) = self.sink.report(Report::StartSubPipeline {
            parent: self.key,
            request,
            reply,
        }) {
            if let Report::StartSubPipeline { reply, .. } = *report {
                let _ = reply.send(Err(super::Error::Closed));
            }
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
        let _ = self.sink.report(Report::StartAlgorithm {
            parent: self.key,
            algorithm,
            input,
            reply,
        });
        result
    }

    /// Code API: stop the sub-pipelines and algorithm executions this task started.
    pub fn stop_children(&self, reason: String) {
        let _ = self.sink.report(Report::StopChildren {
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
