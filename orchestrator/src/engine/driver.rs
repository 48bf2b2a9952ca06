//! The engine's event loop: one task owns every job and wakes only for a message (a request
//! from a [`Handle`], a report from an executor) or for the next timer. It never polls.
//!
//! The loop is IO at the edge of the pure [`Job`] state machine: it turns job actions into
//! executor calls, timers and replies, and it links jobs to each other (sub-pipelines,
//! triggers, concurrency limits).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::board::Board;
use super::catalog::Catalog;
use super::executor::{
    Executor, Report, ReportSink, SubPipeline, TaskKey, TaskOutcome, TaskReporter,
};
use super::ids::TaskId;
use super::job::{Action, Job, JobPlan, Replay, TaskRun, Timer};
use super::journal::{JobRecord, Journal, TaskRecord};
use super::status::JobStatus;
use super::submit::{self, Admission};
use super::{ids, Error};
use crate::dag::{FlowInputCheck, Graph};
use crate::notify::{self, Notification};
use crate::spec;

/// Messages into the engine loop.
#[derive(Debug)]
pub(crate) enum Msg {
    /// From an executor, through a task's reporter.
    Report(Report),
    Command(Command),
}

/// The loop's sender is where every task's reporter sends: executors see only
/// [`ReportSink`], never [`Msg`].
impl ReportSink for mpsc::UnboundedSender<Msg> {
    fn report(&self, report: Report) -> Result<(), Box<Report>> {
        match self.send(Msg::Report(report)) {
            Err(mpsc::error::SendError(Msg::Report(report))) => Err(Box::new(report)),
            _ => Ok(()),
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, Error>>;

#[derive(Debug)]
pub(crate) enum Command {
    Exec(ExecRequest, Reply<String>),
    Stop(StopRequest, Reply<Vec<String>>),
    Pause(String, Reply<()>),
    Resume(String, Reply<()>),
    Status(String, Reply<Value>),
    Result(String, Reply<Value>),
    Wait(String, Reply<Value>),
    Tree(String, Reply<Value>),
    Pipeline(String, Reply<Value>),
    Jobs(Option<Vec<JobStatus>>, oneshot::Sender<Vec<JobSummary>>),
    Shutdown(oneshot::Sender<()>),
    Detach(oneshot::Sender<()>),
}

/// The ways to start a job (reference §5.1).
#[derive(Debug, Clone, PartialEq)]
pub enum ExecRequest {
    Raw(Value),
    Stored(Value),
    /// A stored pipeline started by its cron trigger: `{name}`, types
    /// `["stored", "internal", "cron"]`.
    Cron(Value),
    Algorithm(Value),
    Rerun(String),
    /// A rerun of an ended job the engine no longer holds, from the journal's record.
    RerunRecord(Box<JobRecord>),
    RunFromNode {
        job_id: String,
        node_name: String,
    },
    /// A run from a node of an ended job the engine no longer holds, from the journal's
    /// record of the job and of its finished tasks.
    RunFromRecord {
        record: Box<JobRecord>,
        tasks: Vec<TaskRecord>,
        node_name: String,
    },
}

/// `POST /exec/stop`: which unfinished jobs to stop, and why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StopRequest {
    pub job_id: Option<String>,
    pub pipeline_name: Option<String>,
    /// Default: active, pending, paused.
    pub statuses: Option<Vec<JobStatus>>,
    /// Default: `stopped due to request`.
    pub reason: Option<String>,
}

/// One job in a listing (`GET /exec/jobs`): who it is and where it stands.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSummary {
    pub job_id: String,
    pub status: JobStatus,
    pub pipeline_name: String,
    /// How the job was started (`raw`, `stored`, `trigger`, ...).
    pub types: Vec<&'static str>,
}

/// A cheap, cloneable way to talk to the engine.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Msg>,
    board: Arc<Board>,
}

/// How long a status call waits for the loop before the board answers (see [`Board`]).
const STATUS_PATIENCE: std::time::Duration = std::time::Duration::from_millis(10);

impl Handle {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Command(make(reply)))
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Starts a job; returns its id once it is accepted (validation passed).
    pub async fn exec(&self, request: ExecRequest) -> Result<String, Error> {
        self.ask(|reply| Command::Exec(request, reply)).await
    }

    pub async fn exec_raw(&self, pipeline: Value) -> Result<String, Error> {
        self.exec(ExecRequest::Raw(pipeline)).await
    }

    pub async fn stop(&self, request: StopRequest) -> Result<Vec<String>, Error> {
        self.ask(|reply| Command::Stop(request, reply)).await
    }

    pub async fn pause(&self, job_id: &str) -> Result<(), Error> {
        self.ask(|reply| Command::Pause(job_id.to_string(), reply))
            .await
    }

    pub async fn resume(&self, job_id: &str) -> Result<(), Error> {
        self.ask(|reply| Command::Resume(job_id.to_string(), reply))
            .await
    }

    /// The status document (reference §3.5): from the loop, in order with everything sent to
    /// it before; from the board when the loop is busy for longer than [`STATUS_PATIENCE`].
    pub async fn status(&self, job_id: &str) -> Result<Value, Error> {
        let (reply, mut answer) = oneshot::channel();
        self.tx
            .send(Msg::Command(Command::Status(job_id.to_string(), reply)))
            .map_err(|_| Error::Closed)?;
        match tokio::time::timeout(STATUS_PATIENCE, &mut answer).await {
            Ok(result) => result.map_err(|_| Error::Closed)?,
            Err(_) => match self.board.status(job_id, now_ms()) {
                Some(doc) => Ok(doc),
                None => answer.await.map_err(|_| Error::Closed)?,
            },
        }
    }

    /// The results document; refused while the job runs (reference §3.4).
    pub async fn result(&self, job_id: &str) -> Result<Value, Error> {
        self.ask(|reply| Command::Result(job_id.to_string(), reply))
            .await
    }

    /// The results document, once the job has ended.
    pub async fn wait(&self, job_id: &str) -> Result<Value, Error> {
        self.ask(|reply| Command::Wait(job_id.to_string(), reply))
            .await
    }

    /// The jobs this job triggered, recursively (`GET /exec/tree/{jobId}`).
    pub async fn tree(&self, job_id: &str) -> Result<Value, Error> {
        self.ask(|reply| Command::Tree(job_id.to_string(), reply))
            .await
    }

    /// The pipeline as the job runs it (defaults, overrides, expansion), with its `jobId`
    /// (`GET /exec/pipelines/{jobId}`).
    pub async fn pipeline(&self, job_id: &str) -> Result<Value, Error> {
        self.ask(|reply| Command::Pipeline(job_id.to_string(), reply))
            .await
    }

    /// The jobs whose status is one of `statuses` (all jobs when `None`), oldest first. A
    /// `resumed` job counts as `active`, as stop's filter has it.
    /// The unfinished jobs whose pipeline runs the algorithm `name`, oldest first.
    pub async fn executions_using(&self, name: &str) -> Result<Vec<String>, Error> {
        let unfinished = vec![JobStatus::Pending, JobStatus::Active, JobStatus::Paused];
        let mut executions = Vec::new();
        for job in self.jobs(Some(unfinished)).await? {
            // A job may be forgotten between the two questions; it no longer counts.
            let Ok(doc) = self.pipeline(&job.job_id).await else {
                continue;
            };
            let used = doc["nodes"].as_array().is_some_and(|nodes| {
                nodes
                    .iter()
                    .any(|node| node["algorithmName"].as_str() == Some(name))
            });
            if used {
                executions.push(job.job_id);
            }
        }
        Ok(executions)
    }

    pub async fn jobs(&self, statuses: Option<Vec<JobStatus>>) -> Result<Vec<JobSummary>, Error> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Command(Command::Jobs(statuses, reply)))
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)
    }

    /// Ends the loop and leaves every job as it is: with a journal, unfinished jobs resume
    /// when an engine starts over the same journal (a server restart).
    pub async fn detach(&self) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Msg::Command(Command::Detach(reply))).is_ok() {
            let _ = done.await;
        }
    }

    /// Stops every unfinished job and ends the loop.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        if self.tx.send(Msg::Command(Command::Shutdown(reply))).is_ok() {
            let _ = done.await;
        }
    }
}

/// Settings of the engine loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EngineOptions {
    /// Tasks of one job handed to the executor at once. Further tasks wait in the job's queue
    /// as compact ranges, their inputs not built yet, so a million-item batch does not mean a
    /// million task descriptions in memory.
    pub max_in_flight_per_job: usize,
    /// With a journal, at most this many ended jobs stay in memory (the oldest go first);
    /// older ones are answered from the journal's store. `None` keeps them all.
    pub keep_finished_jobs: Option<usize>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_in_flight_per_job: 4096,
            keep_finished_jobs: None,
        }
    }
}

/// The longest chain of jobs started by triggers, one after the other. The store refuses
/// trigger cycles; this bounds a chain that got past it. A restart starts counting again.
pub const MAX_TRIGGER_DEPTH: u32 = 32;

/// The engine loop and everything it owns.
pub struct Engine {
    max_in_flight: usize,
    keep_finished: Option<usize>,
    /// Ended jobs, oldest first (for `keep_finished`).
    finished: std::collections::VecDeque<u64>,
    journal: Option<Arc<dyn Journal>>,
    executor: Arc<dyn Executor>,
    catalog: Arc<dyn Catalog>,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    /// Where every task's reporter sends (the loop's own sender).
    reports: Arc<dyn ReportSink>,
    jobs: HashMap<u64, Job>,
    /// Status documents for when the loop is busy; `dirty`: jobs changed since they were last
    /// put there, at `published`.
    board: Arc<Board>,
    dirty: Vec<u64>,
    published: Instant,
    ids: HashMap<String, u64>,
    next_key: u64,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_targets: HashMap<u64, (u64, Timer)>,
    next_timer: u64,
    waiters: HashMap<u64, Vec<Reply<Value>>>,
    /// Sub-pipelines started by a task, stopped when the task ends.
    sub_jobs: HashMap<(u64, u32, u32), Vec<u64>>,
    /// Who asked for a sub-pipeline, answered when it ends.
    sub_waiters: HashMap<u64, oneshot::Sender<Result<Value, Error>>>,
    algorithm_waiters: HashMap<(u64, u32, u32), oneshot::Sender<TaskOutcome>>,
    /// Which task started each algorithm execution (for the code API's stop).
    algorithm_parents: HashMap<(u64, u32, u32), (u64, u32, u32)>,
    /// Jobs started by triggers, by parent job.
    triggered: HashMap<u64, Vec<u64>>,
    /// How many triggers led to each unfinished triggered job (its parent's depth + 1).
    trigger_depth: HashMap<u64, u32>,
    /// Jobs held by `concurrentPipelines` (`rejectOnFailure: false`).
    held: Vec<u64>,
    /// Unfinished jobs per (experimentName, name).
    unfinished: HashMap<(String, String), usize>,
    /// Where the webhooks' notifications go (none: webhooks are not called).
    notifications: Option<mpsc::UnboundedSender<Notification>>,
    /// The last progress (status, data) notified per job with a progress webhook.
    progress_sent: HashMap<u64, (Value, Value)>,
    /// Tasks per job that took their output from the result cache.
    cached_tasks: HashMap<u64, u64>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("jobs", &self.jobs.len())
            .finish_non_exhaustive()
    }
}

/// How many messages the loop handles before it looks at its timers again.
const BATCH: usize = 1024;

/// While messages keep coming, how often the board is brought up to date.
const PUBLISH_EVERY: std::time::Duration = std::time::Duration::from_millis(2);

impl Engine {
    pub fn new(
        options: EngineOptions,
        executor: Arc<dyn Executor>,
        catalog: Arc<dyn Catalog>,
    ) -> Engine {
        let (tx, rx) = mpsc::unbounded_channel();
        Engine {
            max_in_flight: options.max_in_flight_per_job.max(1),
            keep_finished: options.keep_finished_jobs,
            finished: std::collections::VecDeque::new(),
            journal: None,
            executor,
            catalog,
            reports: Arc::new(tx.clone()),
            tx,
            rx,
            jobs: HashMap::new(),
            board: Arc::new(Board::default()),
            dirty: Vec::new(),
            published: Instant::now(),
            ids: HashMap::new(),
            next_key: 1,
            timers: BinaryHeap::new(),
            timer_targets: HashMap::new(),
            next_timer: 0,
            waiters: HashMap::new(),
            sub_jobs: HashMap::new(),
            sub_waiters: HashMap::new(),
            algorithm_waiters: HashMap::new(),
            algorithm_parents: HashMap::new(),
            triggered: HashMap::new(),
            trigger_depth: HashMap::new(),
            held: Vec::new(),
            unfinished: HashMap::new(),
            notifications: None,
            progress_sent: HashMap::new(),
            cached_tasks: HashMap::new(),
        }
    }

    /// Sends a notification here for each progress change and each result of a job whose
    /// pipeline has webhooks (`notify::Webhooks` delivers them).
    pub fn with_notifications(
        mut self,
        notifications: mpsc::UnboundedSender<Notification>,
    ) -> Self {
        self.notifications = Some(notifications);
        self
    }

    /// Records jobs and finished tasks in `journal`; when the loop starts, jobs the journal
    /// has not seen end are resumed.
    pub fn with_journal(mut self, journal: Arc<dyn Journal>) -> Engine {
        self.journal = Some(journal);
        self
    }

    pub fn handle(&self) -> Handle {
        Handle {
            tx: self.tx.clone(),
            board: self.board.clone(),
        }
    }

    /// Starts the loop on the current tokio runtime.
    pub fn spawn(executor: Arc<dyn Executor>, catalog: Arc<dyn Catalog>) -> Handle {
        Engine::spawn_with(EngineOptions::default(), executor, catalog)
    }

    pub fn spawn_with(
        options: EngineOptions,
        executor: Arc<dyn Executor>,
        catalog: Arc<dyn Catalog>,
    ) -> Handle {
        let engine = Engine::new(options, executor, catalog);
        let handle = engine.handle();
        tokio::spawn(engine.run());
        handle
    }

    /// Starts the loop on a thread of its own, on the current runtime (on a multi-thread
    /// runtime; elsewhere, tests for one, as a task). Its timers and channels stay the
    /// runtime's, and what it spawns runs on the runtime's workers; but the loop's long
    /// synchronous stretches (a batch of reports of a million-item job) no longer hold one of
    /// the few worker threads that answer the API: a status call waited up to 643 ms behind
    /// them on 2 cores.
    pub fn start(self) -> std::io::Result<()> {
        let runtime = tokio::runtime::Handle::current();
        if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            tokio::spawn(self.run());
            return Ok(());
        }
        std::thread::Builder::new()
            .name("hkube-engine".into())
            .spawn(move || runtime.block_on(self.run()))
            .map(drop)
    }

    pub async fn run(mut self) {
        self.recover();
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            let msg = match next_timer {
                Some(at) => tokio::select! {
                    msg = self.rx.recv() => msg,
                    _ = tokio::time::sleep_until(at) => {
                        self.fire_timers();
                        continue;
                    }
                },
                None => self.rx.recv().await,
            };
            let Some(msg) = msg else { return };
            if self.handle_msg(msg) {
                return;
            }
            let mut drained = false;
            for _ in 0..BATCH {
                match self.rx.try_recv() {
                    Ok(msg) => {
                        if self.handle_msg(msg) {
                            return;
                        }
                    }
                    Err(_) => {
                        drained = true;
                        break;
                    }
                }
            }
            // Before waiting, the board is brought up to date; while busy, every few ms.
            if drained || self.published.elapsed() >= PUBLISH_EVERY {
                self.publish();
            }
        }
    }

    /// Puts the changed jobs' status documents on the board.
    fn publish(&mut self) {
        self.published = Instant::now();
        if self.dirty.is_empty() {
            return;
        }
        self.dirty.sort_unstable();
        self.dirty.dedup();
        for key in std::mem::take(&mut self.dirty) {
            if let Some(job) = self.jobs.get(&key) {
                let mut view = job.status_view();
                view.cached = self.cached_tasks.get(&key).copied();
                self.board.publish(&job.id, view);
            }
        }
        self.board.prune();
    }

    /// Returns true when the loop must end.
    fn handle_msg(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Report(report) => self.handle_report(report),
            Msg::Command(command) => return self.handle_command(command),
        }
        false
    }

    fn handle_report(&mut self, report: Report) {
        match report {
            Report::Started(key) => {
                self.with_job(key.job, |job, _, out| job.task_started(key, out))
            }
            Report::Pending(key, reason) => {
                if let Some(job) = self.jobs.get_mut(&key.job) {
                    job.task_pending(key, reason);
                }
            }
            Report::Finished(key, outcome) => self.with_job(key.job, |job, now, out| {
                job.task_finished(key, outcome, now, out)
            }),
            Report::Cached(key, output) => {
                if self.jobs.contains_key(&key.job) {
                    *self.cached_tasks.entry(key.job).or_default() += 1;
                }
                self.with_job(key.job, |job, now, out| {
                    job.task_finished(key, TaskOutcome::Succeeded(output), now, out)
                })
            }
            Report::StartSubPipeline {
                parent,
                request,
                reply,
            } => self.start_sub_pipeline(parent, request, reply),
            Report::StartAlgorithm {
                parent,
                algorithm,
                input,
                reply,
            } => {
                let mut result = Err("the calling job has ended".to_string());
                self.with_job(parent.job, |job, now, out| {
                    result = job.start_algorithm(parent, &algorithm, input, now, out);
                });
                match result {
                    // The task's outcome arrives as a message, after this waiter is in place.
                    Ok(task) => {
                        self.algorithm_waiters
                            .insert((task.job, task.node, task.task), reply);
                        self.algorithm_parents.insert(task.slot(), parent.slot());
                    }
                    Err(error) => {
                        let _ = reply.send(TaskOutcome::Failed(error));
                    }
                }
            }
            Report::StopChildren { parent, reason } => self.stop_children(parent, &reason),
        }
    }

    /// Stops what a task started through the code API: its sub-pipelines and its algorithm
    /// executions (each caller gets its answer: stopped, or failed with the reason).
    fn stop_children(&mut self, parent: TaskKey, reason: &str) {
        for child in self.sub_jobs.remove(&parent.slot()).unwrap_or_default() {
            self.with_job(child, |job, now, out| job.stop(reason, now, out));
        }
        let executions: Vec<(u64, u32, u32)> = self
            .algorithm_parents
            .iter()
            .filter(|(_, p)| **p == parent.slot())
            .map(|(child, _)| *child)
            .collect();
        for (job, node, task) in executions {
            self.algorithm_parents.remove(&(job, node, task));
            self.with_job(job, |j, now, out| {
                j.stop_execution(node as usize, task as usize, reason, now, out)
            });
        }
    }

    fn handle_command(&mut self, command: Command) -> bool {
        match command {
            Command::Exec(request, reply) => {
                let result = self.exec(request);
                // On the board before anyone knows the job's id: a status call never waits
                // for a loop busy with the job's first tasks.
                self.publish();
                let _ = reply.send(result.map(|key| self.jobs[&key].id.to_string()));
            }
            Command::Stop(request, reply) => {
                let _ = reply.send(self.stop(request));
            }
            Command::Pause(job_id, reply) => {
                let result = self.find(&job_id, "jobId").and_then(|key| {
                    self.dirty.push(key);
                    let job = self.jobs.get_mut(&key).ok_or(Error::Closed)?;
                    job.pause().map_err(|status| {
                        Error::not_allowed(format!(
                            "unable to pause pipeline {} because its in {} status",
                            job.name(),
                            status.as_str()
                        ))
                    })
                });
                let _ = reply.send(result);
            }
            Command::Resume(job_id, reply) => {
                let result = self.find(&job_id, "jobId").and_then(|key| {
                    let mut outcome = Ok(());
                    self.with_job(key, |job, now, out| {
                        outcome = job.resume(now, out).map_err(|status| {
                            Error::not_allowed(format!(
                                "unable to resume pipeline {} because its in {} status",
                                job.name(),
                                status.as_str()
                            ))
                        });
                    });
                    outcome
                });
                let _ = reply.send(result);
            }
            Command::Status(job_id, reply) => {
                let result = self.find(&job_id, "status").map(|key| {
                    with_cached(
                        self.jobs[&key].status_doc(now_ms()),
                        self.cached_tasks.get(&key),
                    )
                });
                let _ = reply.send(result);
            }
            Command::Result(job_id, reply) => {
                let result = self.find(&job_id, "status").and_then(|key| {
                    let job = &self.jobs[&key];
                    job.result_doc().ok_or_else(|| {
                        Error::not_allowed(format!(
                            "unable to get results for pipeline {} because its in {} status",
                            job.name(),
                            job.status().as_str()
                        ))
                    })
                });
                let _ = reply.send(result);
            }
            Command::Wait(job_id, reply) => match self.find(&job_id, "status") {
                Err(error) => {
                    let _ = reply.send(Err(error));
                }
                Ok(key) => match self.jobs[&key].result_doc() {
                    Some(result) => {
                        let _ = reply.send(Ok(result));
                    }
                    None => self.waiters.entry(key).or_default().push(reply),
                },
            },
            Command::Tree(job_id, reply) => {
                let result = self.find(&job_id, "tree").map(|key| self.tree(key));
                let _ = reply.send(result);
            }
            Command::Pipeline(job_id, reply) => {
                let result = self.find(&job_id, "pipeline").and_then(|key| {
                    let job = &self.jobs[&key];
                    let mut doc = serde_json::Map::new();
                    doc.insert("jobId".into(), json!(job.id.as_ref()));
                    match serde_json::to_value(&job.pipeline) {
                        Ok(Value::Object(fields)) => doc.extend(fields),
                        Ok(_) | Err(_) => {
                            return Err(Error::Invalid("the pipeline cannot be shown".into()))
                        }
                    }
                    doc.insert("types".into(), json!(job.types));
                    doc.insert("startTime".into(), json!(job.start_time));
                    Ok(Value::Object(doc))
                });
                let _ = reply.send(result);
            }
            Command::Jobs(statuses, reply) => {
                let mut jobs: Vec<&Job> = self
                    .jobs
                    .values()
                    .filter(|job| {
                        let status = match job.status() {
                            JobStatus::Resumed => JobStatus::Active,
                            other => other,
                        };
                        statuses.as_ref().is_none_or(|s| s.contains(&status))
                    })
                    .collect();
                jobs.sort_unstable_by_key(|job| job.key);
                let summaries = jobs
                    .into_iter()
                    .map(|job| JobSummary {
                        job_id: job.id.to_string(),
                        status: job.status(),
                        pipeline_name: job.name().to_string(),
                        types: job.types.clone(),
                    })
                    .collect();
                let _ = reply.send(summaries);
            }
            Command::Detach(done) => {
                let _ = done.send(());
                return true;
            }
            Command::Shutdown(done) => {
                let keys: Vec<u64> = self.jobs.keys().copied().collect();
                for key in keys {
                    self.with_job(key, |job, now, out| {
                        job.stop("the engine is shutting down", now, out)
                    });
                }
                let _ = done.send(());
                return true;
            }
        }
        false
    }

    fn find(&self, job_id: &str, what: &str) -> Result<u64, Error> {
        self.ids
            .get(job_id)
            .copied()
            .ok_or_else(|| Error::not_found(what, job_id))
    }

    fn running_count(&self, experiment: &str, name: &str) -> usize {
        self.unfinished
            .get(&(experiment.to_string(), name.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Validates and starts a job.
    fn exec(&mut self, request: ExecRequest) -> Result<u64, Error> {
        let catalog = self.catalog.clone();
        let running = |experiment: &str, name: &str| self.running_count(experiment, name);
        let (plan, admission) = match request {
            ExecRequest::Raw(body) => submit::raw(body, catalog.as_ref(), &running)?,
            ExecRequest::Stored(body) => submit::stored(body, catalog.as_ref(), &running)?,
            ExecRequest::Cron(body) => submit::cron(body, catalog.as_ref(), &running)?,
            ExecRequest::Algorithm(body) => submit::algorithm(body, catalog.as_ref(), &running)?,
            ExecRequest::Rerun(job_id) => {
                let key = self.find(&job_id, "jobId")?;
                let old = &self.jobs[&key];
                let mut types = old.types.clone();
                if !types.contains(&"rerun") {
                    types.push("rerun");
                }
                let pipeline = old
                    .user_pipeline
                    .clone()
                    .unwrap_or_else(|| old.pipeline.clone());
                submit::prepare(pipeline, types, catalog.as_ref(), &running)?
            }
            ExecRequest::RerunRecord(record) => {
                let pipeline: spec::Pipeline =
                    serde_json::from_value(record.pipeline).map_err(|e| {
                        Error::Invalid(format!(
                            "the pipeline of job {} cannot be read back: {e}",
                            record.job_id
                        ))
                    })?;
                let mut types: Vec<&'static str> =
                    record.types.iter().map(|t| job_type(t)).collect();
                if !types.contains(&"rerun") {
                    types.push("rerun");
                }
                submit::prepare(pipeline, types, catalog.as_ref(), &running)?
            }
            ExecRequest::RunFromNode { job_id, node_name } => {
                let key =
                    self.ids.get(&job_id).copied().ok_or_else(|| {
                        Error::Invalid(format!("unable to find pipeline {job_id}"))
                    })?;
                let old = &self.jobs[&key];
                if old.pipeline.kind == spec::PipelineKind::Stream {
                    return Err(Error::Invalid(
                        "run node is not allowed in stream pipeline".into(),
                    ));
                }
                let plan = submit::run_from_node(&old.pipeline, &old.graph, &node_name, &|id| {
                    if old.node_done(id) {
                        old.node_tasks(id).to_vec()
                    } else {
                        Vec::new()
                    }
                })?;
                (plan, Admission::Run)
            }
            ExecRequest::RunFromRecord {
                record,
                tasks,
                node_name,
            } => {
                let pipeline: spec::Pipeline =
                    serde_json::from_value(record.pipeline).map_err(|e| {
                        Error::Invalid(format!(
                            "the pipeline of job {} cannot be read back: {e}",
                            record.job_id
                        ))
                    })?;
                if pipeline.kind == spec::PipelineKind::Stream {
                    return Err(Error::Invalid(
                        "run node is not allowed in stream pipeline".into(),
                    ));
                }
                let graph = Graph::build(&pipeline, FlowInputCheck::Skipped)?;
                let mut runs: HashMap<usize, Vec<TaskRun>> = HashMap::new();
                for task in tasks {
                    let (Some(node), Some(id)) =
                        (graph.id(&task.node), TaskId::parse(&task.task_id))
                    else {
                        continue;
                    };
                    runs.entry(node).or_default().push(TaskRun::recorded(
                        id,
                        task.group,
                        task.batch_index,
                        task.outcome,
                    ));
                }
                for tasks in runs.values_mut() {
                    tasks.sort_by_key(|task| (task.group, task.batch_index));
                }
                let plan = submit::run_from_node(&pipeline, &graph, &node_name, &|id| {
                    runs.get(&id).cloned().unwrap_or_default()
                })?;
                (plan, Admission::Run)
            }
        };
        Ok(self.start_job(plan, admission, None))
    }

    /// `parent`: the job whose end triggered this one.
    fn start_job(&mut self, plan: JobPlan, admission: Admission, parent: Option<u64>) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        let mut id = ids::job_id();
        while self.ids.contains_key(&id) {
            id = ids::job_id();
        }
        let mut job = Job::new(key, id.clone(), plan, now_ms(), self.max_in_flight);
        *self
            .unfinished
            .entry((job.pipeline.experiment_name.clone(), job.name().to_string()))
            .or_default() += 1;
        if let Some(journal) = &self.journal {
            job.journal();
            journal.job_started(&JobRecord {
                job_id: id.clone(),
                pipeline: serde_json::to_value(&job.pipeline).unwrap_or(Value::Null),
                types: job.types.iter().map(|t| t.to_string()).collect(),
                root_job_id: (*job.root_job_id != *id).then(|| job.root_job_id.to_string()),
                start_time: job.start_time,
                parent_job_id: parent
                    .and_then(|parent| self.jobs.get(&parent))
                    .map(|parent| parent.id.to_string()),
            });
        }
        self.ids.insert(id, key);
        self.jobs.insert(key, job);
        self.with_job(key, |job, now, out| job.submitted(now, out));
        match admission {
            Admission::Run => self.with_job(key, |job, now, out| job.activate(now, out)),
            Admission::Hold => self.held.push(key),
        }
        key
    }

    fn start_sub_pipeline(
        &mut self,
        parent: TaskKey,
        request: SubPipeline,
        reply: oneshot::Sender<Result<Value, Error>>,
    ) {
        let Some(parent_job) = self
            .jobs
            .get(&parent.job)
            .filter(|job| !job.status().is_final())
        else {
            let _ = reply.send(Err(Error::not_allowed("the calling job has ended")));
            return;
        };
        let root = parent_job.root_job_id.to_string();
        let experiment = parent_job.pipeline.experiment_name.clone();
        let catalog = self.catalog.clone();
        let running = |experiment: &str, name: &str| self.running_count(experiment, name);
        let prepared = match request {
            SubPipeline::Raw(mut body) => {
                if let Value::Object(map) = &mut body {
                    map.insert("experimentName".into(), json!(experiment));
                    map.insert("rootJobId".into(), json!(root));
                }
                spec::parse_pipeline(body)
                    .map_err(Error::from)
                    .and_then(|p| {
                        submit::prepare(
                            p,
                            vec!["internal", "raw", "sub-pipeline"],
                            catalog.as_ref(),
                            &running,
                        )
                    })
            }
            SubPipeline::Stored { name, flow_input } => {
                let mut body = json!({"name": name, "rootJobId": root});
                if let Some(flow_input) = flow_input {
                    body["flowInput"] = flow_input;
                }
                submit::merge_stored(body, catalog.as_ref()).and_then(|mut p| {
                    p.experiment_name = experiment;
                    submit::prepare(
                        p,
                        vec!["internal", "stored", "sub-pipeline"],
                        catalog.as_ref(),
                        &running,
                    )
                })
            }
        };
        match prepared {
            Ok((plan, admission)) => {
                let child = self.start_job(plan, admission, None);
                self.sub_jobs.entry(parent.slot()).or_default().push(child);
                match self.jobs[&child].result_doc() {
                    Some(result) => {
                        let _ = reply.send(Ok(result));
                    }
                    None => {
                        self.sub_waiters.insert(child, reply);
                    }
                }
            }
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }

    fn stop(&mut self, request: StopRequest) -> Result<Vec<String>, Error> {
        let statuses = request
            .statuses
            .clone()
            .unwrap_or_else(|| vec![JobStatus::Active, JobStatus::Pending, JobStatus::Paused]);
        let mut keys: Vec<u64> = self
            .jobs
            .values()
            .filter(|job| {
                let status = match job.status() {
                    JobStatus::Resumed => JobStatus::Active,
                    other => other,
                };
                !job.status().is_final()
                    && statuses.contains(&status)
                    && request.job_id.as_deref().is_none_or(|id| *job.id == *id)
                    && request
                        .pipeline_name
                        .as_deref()
                        .is_none_or(|name| job.name() == name)
            })
            .map(|job| job.key)
            .collect();
        keys.sort_unstable();
        if keys.is_empty() {
            let mut criteria = Vec::new();
            if let Some(id) = &request.job_id {
                criteria.push(format!("jobId: {id}"));
            }
            if let Some(name) = &request.pipeline_name {
                criteria.push(format!("pipelineName: {name}"));
            }
            let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
            criteria.push(format!("statuses: {}", names.join(",")));
            return Err(Error::NotFound(format!(
                "No jobs found matching criteria ({})",
                criteria.join(", ")
            )));
        }
        let reason = request
            .reason
            .unwrap_or_else(|| "stopped due to request".to_string());
        let mut stopped = Vec::with_capacity(keys.len());
        for key in keys {
            stopped.push(self.jobs[&key].id.to_string());
            self.with_job(key, |job, now, out| job.stop(&reason, now, out));
        }
        Ok(stopped)
    }

    /// Runs `f` on a job, then carries out the actions it produced.
    fn with_job(&mut self, key: u64, f: impl FnOnce(&mut Job, u64, &mut Vec<Action>)) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        self.dirty.push(key);
        let mut actions = Vec::new();
        f(job, now_ms(), &mut actions);
        self.apply(key, actions);
        self.notify_progress(key, false);
    }

    /// A progress notification when the job's status or progress changed since the last one
    /// and the pipeline's `progressVerbosityLevel` wants it: a status change at the status
    /// document's level (`error` for a failure, else `info`), any other change at `debug`.
    /// The final status is sent by [`Engine::job_finished`] (`at_end`), before the job may be
    /// forgotten.
    fn notify_progress(&mut self, key: u64, at_end: bool) {
        let Some(tx) = &self.notifications else {
            return;
        };
        let Some(job) = self.jobs.get(&key) else {
            return;
        };
        let Some(url) = job
            .pipeline
            .webhooks
            .as_ref()
            .and_then(|w| w.progress.clone())
        else {
            return;
        };
        if job.status().is_final() != at_end {
            return;
        }
        let doc = job.status_doc(now_ms());
        let seen = (doc["status"].clone(), doc["data"].clone());
        let last = self.progress_sent.get(&key);
        if last == Some(&seen) {
            return;
        }
        let level = if last.is_none_or(|(status, _)| *status != seen.0) {
            match doc["level"].as_str() {
                Some("error") => spec::Level::Error,
                _ => spec::Level::Info,
            }
        } else {
            spec::Level::Debug
        };
        let wanted = notify::progress_wanted(level, job.pipeline.options.progress_verbosity_level);
        let job_id = job.id.to_string();
        if at_end {
            self.progress_sent.remove(&key);
        } else {
            self.progress_sent.insert(key, seen);
        }
        if wanted {
            let _ = tx.send(Notification {
                kind: notify::Kind::Progress,
                job_id,
                url,
                body: doc,
            });
        }
    }

    fn apply(&mut self, key: u64, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Dispatch(task) => {
                    let reporter = TaskReporter::new(task.key, self.reports.clone());
                    self.executor.submit(task.with_reporter(reporter))
                }
                Action::Cancel(task) => self.executor.cancel(task),
                Action::Timer { after, timer } => {
                    // TTLs have no upper bound (`ttl: 18446744073709551615` passes the
                    // schema); a deadline the clock cannot represent never comes.
                    let Some(at) = Instant::now().checked_add(after) else {
                        continue;
                    };
                    let id = self.next_timer;
                    self.next_timer += 1;
                    self.timers.push(Reverse((at, id)));
                    self.timer_targets.insert(id, (key, timer));
                }
                Action::AlgorithmDone { key: task, outcome } => {
                    if let Some(reply) = self
                        .algorithm_waiters
                        .remove(&(task.job, task.node, task.task))
                    {
                        let _ = reply.send(outcome);
                    }
                }
                Action::TaskEnded { key: task } => {
                    if self.sub_jobs.is_empty() {
                        continue;
                    }
                    if let Some(children) = self.sub_jobs.remove(&task.slot()) {
                        let reason =
                            format!("parent algorithm {} ended", task_label(&self.jobs, task));
                        for child in children {
                            self.with_job(child, |job, now, out| job.stop(&reason, now, out));
                        }
                    }
                }
                Action::Finished => self.job_finished(key),
                Action::Record(data) => {
                    if let (Some(journal), Some(job)) = (&self.journal, self.jobs.get(&key)) {
                        journal.task_finished(&TaskRecord {
                            job_id: job.id.to_string(),
                            node: data.node,
                            group: data.group,
                            batch_index: data.batch_index,
                            task_id: data.task_id.to_string(),
                            outcome: data.outcome,
                        });
                    }
                }
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some((job, timer)) = self.timer_targets.remove(&id) {
                self.with_job(job, |j, now, out| j.timer_fired(timer, now, out));
            }
        }
    }

    fn job_finished(&mut self, key: u64) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        job.release_plans();
        crate::telemetry::metrics::job_ended(job.status().as_str());
        tracing::info!(job_id = %job.id, pipeline = job.name(), status = job.status().as_str(), "job ended");
        let result_hook = job
            .pipeline
            .webhooks
            .as_ref()
            .and_then(|w| w.result.clone());
        // The final status goes out before the result, as a receiver of both would expect.
        self.notify_progress(key, true);
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        let name_key = (job.pipeline.experiment_name.clone(), job.name().to_string());
        let completed = job.status() == JobStatus::Completed;
        let name = job.name().to_string();
        let tags = job.pipeline.tags.clone();
        let depth = self.trigger_depth.remove(&key).unwrap_or(0);
        let triggered = if completed {
            self.catalog.triggered_by(&name)
        } else {
            Vec::new()
        };
        // The results as a tree only for whoever takes one; the journal takes the text, written
        // straight from the tasks (a million entries as a tree would take about 500 MB).
        let wanted = self.waiters.contains_key(&key)
            || self.sub_waiters.contains_key(&key)
            || !triggered.is_empty()
            || result_hook.is_some();
        let result = if wanted {
            job.result_doc().unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        if let (Some(tx), Some(url)) = (&self.notifications, result_hook) {
            let _ = tx.send(Notification {
                kind: notify::Kind::Result,
                job_id: job.id.to_string(),
                url,
                body: result.clone(),
            });
        }
        let status = with_cached(job.status_doc(now_ms()), self.cached_tasks.get(&key));
        // On the board at once: the job may be forgotten below, before the next publishing.
        self.board.publish_ended(&job.id, status.clone());
        if let Some(journal) = &self.journal {
            journal.job_status(&job.id, &status);
            if wanted {
                journal.job_finished(&job.id, &result);
            } else if let Some(text) = job.result_json() {
                journal.job_finished_json(&job.id, text);
            }
        }
        // Large results of the job's tasks may go, except what its results point at.
        let keep = job.result_references();
        self.executor.job_ended(&job.id, &keep);
        if let Some(count) = self.unfinished.get_mut(&name_key) {
            *count = count.saturating_sub(1);
        }
        self.held.retain(|&held| held != key);
        for waiter in self.waiters.remove(&key).unwrap_or_default() {
            let _ = waiter.send(Ok(result.clone()));
        }
        if let Some(reply) = self.sub_waiters.remove(&key) {
            let _ = reply.send(Ok(result.clone()));
        }
        self.timer_targets.retain(|_, (job, _)| *job != key);
        self.finished.push_back(key);
        self.release_held();
        if completed {
            self.fire_triggers(key, depth, &name, &tags, triggered, &result);
        }
        // Last: the triggered jobs' records name this job as their parent.
        self.evict_finished();
    }

    /// Forgets the oldest ended jobs beyond `keep_finished`: their results stay in the journal's
    /// store, which the API asks for jobs the engine no longer holds.
    fn evict_finished(&mut self) {
        let (Some(keep), Some(_)) = (self.keep_finished, &self.journal) else {
            return;
        };
        while self.finished.len() > keep {
            let Some(key) = self.finished.pop_front() else {
                break;
            };
            let Some(job) = self.jobs.get(&key) else {
                continue;
            };
            if !job.status().is_final() || self.waiters.contains_key(&key) {
                continue;
            }
            if let Some(job) = self.jobs.remove(&key) {
                self.ids.remove(job.id.as_ref());
            }
            self.triggered.remove(&key);
            self.sub_jobs.retain(|(job, _, _), _| *job != key);
            self.algorithm_parents.retain(|(job, _, _), _| *job != key);
            self.cached_tasks.remove(&key);
        }
    }

    /// Held jobs start, most urgent first, as their pipeline's concurrency allows.
    fn release_held(&mut self) {
        let mut held = std::mem::take(&mut self.held);
        held.sort_by_key(|key| (self.jobs.get(key).map_or(u8::MAX, Job::priority), *key));
        let mut still_held = Vec::new();
        for key in held {
            let Some(job) = self.jobs.get(&key) else {
                continue;
            };
            let limit = job
                .pipeline
                .options
                .concurrent_pipelines
                .map_or(usize::MAX, |c| c.amount as usize);
            let experiment = job.pipeline.experiment_name.clone();
            let name = job.name().to_string();
            let active = self
                .jobs
                .values()
                .filter(|j| {
                    j.pipeline.experiment_name == experiment
                        && j.name() == name
                        && !j.status().is_final()
                        && j.active_time.is_some()
                })
                .count();
            if active < limit {
                self.with_job(key, |job, now, out| job.activate(now, out));
            } else {
                still_held.push(key);
            }
        }
        self.held.extend(still_held);
    }

    /// Stored pipelines that list this one in `triggers.pipelines` run now, with the parent's
    /// results as `flowInput.parent` (reference §1.5). `depth` is how many triggers led to the
    /// parent: beyond [`MAX_TRIGGER_DEPTH`] nothing starts, so a trigger cycle the store did
    /// not refuse (stored before that check, or built in a catalog) cannot run without end.
    fn fire_triggers(
        &mut self,
        parent: u64,
        depth: u32,
        name: &str,
        tags: &[String],
        triggered: Vec<spec::Pipeline>,
        result: &Value,
    ) {
        if depth >= MAX_TRIGGER_DEPTH && !triggered.is_empty() {
            let names: Vec<&str> = triggered.iter().map(|p| p.name.as_str()).collect();
            tracing::warn!(
                "pipeline {name} completed at the end of a chain of {depth} triggered \
                 jobs; not starting {} (at most {MAX_TRIGGER_DEPTH} triggers in a row, a cycle \
                 in triggers.pipelines?)",
                names.join(", ")
            );
            return;
        }
        let data = result
            .get("data")
            .cloned()
            .unwrap_or(Value::Array(Vec::new()));
        for stored in triggered {
            let mut flow_input = stored.flow_input.clone().unwrap_or_else(|| json!({}));
            submit::deep_merge(&mut flow_input, json!({ "parent": data.clone() }));
            let mut pipeline = stored;
            pipeline.flow_input = Some(flow_input);
            if !tags.is_empty() {
                pipeline.tags = tags.to_vec();
            }
            let catalog = self.catalog.clone();
            let running = |experiment: &str, name: &str| self.running_count(experiment, name);
            match submit::prepare(
                pipeline,
                vec!["internal", "stored", "trigger"],
                catalog.as_ref(),
                &running,
            ) {
                Ok((plan, admission)) => {
                    let child = self.start_job(plan, admission, Some(parent));
                    self.trigger_depth.insert(child, depth + 1);
                    // An ended job the engine no longer holds is answered from the journal.
                    if self.jobs.contains_key(&parent) {
                        self.triggered.entry(parent).or_default().push(child);
                    }
                }
                Err(error) => {
                    tracing::warn!("trigger of pipeline {name} could not start: {error}");
                }
            }
        }
    }

    /// Rebuilds the jobs the journal has not seen end and resumes them: recorded tasks are
    /// not run again.
    fn recover(&mut self) {
        let Some(journal) = self.journal.clone() else {
            return;
        };
        for (record, tasks) in journal.unfinished() {
            if let Err(why) = self.restore_job(&record, tasks) {
                tracing::warn!("cannot resume job {}: {why}", record.job_id);
                let result = json!({"jobId": record.job_id, "status": "failed",
                                    "error": format!("the job could not be resumed after a restart: {why}")});
                journal.job_finished(&record.job_id, &result);
            }
        }
    }

    fn restore_job(&mut self, record: &JobRecord, tasks: Vec<TaskRecord>) -> Result<(), String> {
        let pipeline: spec::Pipeline =
            serde_json::from_value(record.pipeline.clone()).map_err(|e| e.to_string())?;
        let graph = Graph::build(&pipeline, FlowInputCheck::Skipped).map_err(|e| e.to_string())?;
        let plan = JobPlan {
            pipeline,
            user_pipeline: None,
            graph,
            types: record.types.iter().map(|t| job_type(t)).collect(),
            root_job_id: record.root_job_id.clone(),
            cached: Vec::new(),
        };
        let key = self.next_key;
        self.next_key += 1;
        let mut job = Job::new(
            key,
            record.job_id.clone(),
            plan,
            record.start_time,
            self.max_in_flight,
        );
        job.journal();
        let replays = tasks
            .into_iter()
            .filter_map(|task| {
                let task_id = TaskId::parse(&task.task_id)?;
                Some((
                    task.node,
                    task.group,
                    task.batch_index,
                    Replay {
                        task_id,
                        outcome: task.outcome,
                    },
                ))
            })
            .collect();
        job.restore(record.start_time, replays);
        *self
            .unfinished
            .entry((job.pipeline.experiment_name.clone(), job.name().to_string()))
            .or_default() += 1;
        self.ids.insert(record.job_id.clone(), key);
        self.jobs.insert(key, job);
        self.with_job(key, |job, now, out| job.submitted(now, out));
        self.with_job(key, |job, now, out| job.activate(now, out));
        Ok(())
    }

    /// The job and the jobs its end triggered, as far as the engine still holds them (the
    /// journal's store answers for the rest).
    fn tree(&self, key: u64) -> Value {
        let Some(job) = self.jobs.get(&key) else {
            return Value::Null;
        };
        let children: Vec<Value> = self
            .triggered
            .get(&key)
            .map(|children| {
                children
                    .iter()
                    .filter(|child| self.jobs.contains_key(child))
                    .map(|&child| self.tree(child))
                    .collect()
            })
            .unwrap_or_default();
        json!({"jobId": job.id.as_ref(), "name": job.name(), "children": children})
    }
}

/// A status document with `data.cached`: how many of the job's tasks took their output from
/// the result cache instead of running (absent when none did).
fn with_cached(mut doc: Value, cached: Option<&u64>) -> Value {
    if let (Some(&count), Some(Value::Object(data))) = (cached, doc.get_mut("data")) {
        data.insert("cached".into(), json!(count));
    }
    doc
}

fn task_label(jobs: &HashMap<u64, Job>, key: TaskKey) -> String {
    jobs.get(&key.job)
        .and_then(|job| job.node_name(key.node as usize))
        .map(|name| name.to_string())
        .unwrap_or_default()
}

/// The `'static` name of a job type read back from a journal.
fn job_type(name: &str) -> &'static str {
    const KNOWN: [&str; 12] = [
        "raw",
        "stored",
        "algorithm",
        "rerun",
        "node",
        "internal",
        "sub-pipeline",
        "trigger",
        "cron",
        "debug",
        "dev-mode",
        "tensorboard",
    ];
    KNOWN
        .iter()
        .find(|known| **known == name)
        .copied()
        .unwrap_or("internal")
}

/// Milliseconds since the Unix epoch, the unit of every HKube timestamp.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
