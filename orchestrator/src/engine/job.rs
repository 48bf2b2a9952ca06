//! One job as a state machine: events in (a task started or ended, a timer fired, stop, pause,
//! resume), actions out (dispatch a task, cancel one, set a timer, the job ended).
//!
//! No IO and no clock: wall-clock times come in as arguments, timers go out as durations. The
//! driver owns the channels and the timers; this file owns the semantics of reference §2–§3.
//!
//! Memory per task is kept small ([`TaskRun`] is 72 bytes plus its output): task inputs are not
//! stored but built when the task is dispatched, from the node's parsed inputs and its batch
//! lists.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::{json, Map, Value};
use wrapper::storage::reference;

use super::executor::{TaskKey, TaskOutcome, TaskRequest};
use super::ids::TaskId;
use super::journal::RecordedOutcome;
use super::status::{self, JobStatus, StateCounts, TaskStatus};
use crate::dag::{self, is_batch_leaf, BatchPlan, Graph, NodeId};
use crate::spec::{InputExpr, NodeKind, Pipeline, Reference, Retry, RetryPolicy, Sign, Source};

/// The most tasks one node may fan out to; a cartesian product of large lists is refused with
/// a clear error rather than exhausting memory.
pub const MAX_TASKS_PER_NODE: usize = 50_000_000;

/// Something the driver must do for the job.
#[derive(Debug)]
pub enum Action {
    /// Hand a task to the executor (the driver attaches its reporter).
    Dispatch(TaskRequest),
    Cancel(TaskKey),
    Timer {
        after: Duration,
        timer: Timer,
    },
    /// A code-API algorithm execution ended: answer whoever asked.
    AlgorithmDone {
        key: TaskKey,
        outcome: TaskOutcome,
    },
    /// A task reached its final state (sub-pipelines it started must be stopped).
    TaskEnded {
        key: TaskKey,
    },
    /// The job reached a final state; its result is ready.
    Finished,
    /// A task of the graph finished (succeeded or tolerated failure): journal it.
    Record(Box<TaskRecordData>),
}

/// A finished task, as the journal keeps it (the driver adds the job id).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecordData {
    pub node: String,
    pub group: u32,
    pub batch_index: u32,
    pub task_id: TaskId,
    pub outcome: RecordedOutcome,
}

/// A recorded outcome waiting to be replayed after a restart.
#[derive(Debug, Clone)]
pub struct Replay {
    pub task_id: TaskId,
    pub outcome: RecordedOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// `options.ttl`, from submission.
    JobTtl,
    /// `options.activeTtl`, from activation.
    ActiveTtl,
    /// A node's `ttl`, from the algorithm's start.
    TaskTtl(TaskKey),
}

/// Tasks `next..end` of one node, queued for dispatch.
#[derive(Debug, Clone, Copy)]
struct ReadyRun {
    node: u32,
    next: u32,
    end: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for parents.
    Waiting,
    /// Tasks created (or, for waitAny nodes, being created as parent items finish).
    Running,
    Done,
}

/// One task: where it stands and what it produced.
#[derive(Debug, Clone)]
pub struct TaskRun {
    pub id: TaskId,
    pub status: TaskStatus,
    /// Runs started so far.
    attempts: u8,
    /// For a waitAny node: the 1-based index of the parent items this task consumes; else 0.
    pub group: u32,
    /// 1-based position in its batch; 0 for a task that is not part of a batch.
    pub batch_index: u32,
    pub output: Option<Value>,
    pub error: Option<Box<str>>,
}

impl TaskRun {
    /// A task of an ended job as the journal recorded it (for a run from one of its nodes).
    pub fn recorded(id: TaskId, group: u32, batch_index: u32, outcome: RecordedOutcome) -> Self {
        let (status, output, error) = match outcome {
            RecordedOutcome::Succeeded { output } => (TaskStatus::Succeed, Some(output), None),
            RecordedOutcome::Failed { error } => {
                (TaskStatus::Failed, None, Some(error.into_boxed_str()))
            }
        };
        TaskRun {
            id,
            status,
            attempts: 1,
            group,
            batch_index,
            output,
            error,
        }
    }
}

#[derive(Debug, Clone)]
enum BatchList {
    Values(Vec<Value>),
    /// The array at `path` of the job's flowInput.
    FlowInput {
        path: Vec<String>,
        len: usize,
    },
    /// The array at `path` of a single-task node's output.
    NodeArray {
        node: NodeId,
        path: Vec<String>,
        len: usize,
    },
    /// One element per present output of a batch node's items (failed items are dropped).
    NodeItems {
        node: NodeId,
        path: Vec<String>,
        items: Vec<u32>,
    },
}

impl BatchList {
    fn len(&self) -> usize {
        match self {
            BatchList::Values(values) => values.len(),
            BatchList::FlowInput { len, .. } | BatchList::NodeArray { len, .. } => *len,
            BatchList::NodeItems { items, .. } => items.len(),
        }
    }
}

#[derive(Debug)]
struct NodeRun {
    node_name: Arc<str>,
    algorithm_name: Arc<str>,
    phase: Phase,
    tasks: Vec<TaskRun>,
    lists: Vec<BatchList>,
    plan: Option<BatchPlan>,
    unfinished: usize,
    failed: usize,
    skipped: bool,
    /// Taken from an earlier job (run from node): not run, not counted, not in the results.
    cached: bool,
    /// Parents this node waits for completely, not done yet.
    waiting_all: usize,
    /// waitAny parents not done yet.
    waiting_any: usize,
    /// For each parent item (by position): how many waitAny parents have finished it;
    /// `u32::MAX` once its tasks are created.
    any_ready: Vec<u32>,
    /// For code-API algorithm executions: the input given by the caller.
    given_input: Option<Vec<Value>>,
}

impl NodeRun {
    fn new(node_name: Arc<str>, algorithm_name: Arc<str>) -> Self {
        NodeRun {
            node_name,
            algorithm_name,
            phase: Phase::Waiting,
            tasks: Vec::new(),
            lists: Vec::new(),
            plan: None,
            unfinished: 0,
            failed: 0,
            skipped: false,
            cached: false,
            waiting_all: 0,
            waiting_any: 0,
            any_ready: Vec::new(),
            given_input: None,
        }
    }
}

/// Everything needed to start a job, prepared (validated, expanded) by the submission step.
#[derive(Debug)]
pub struct JobPlan {
    pub pipeline: Pipeline,
    /// The pipeline as the user submitted it, when expansion changed it (kept for rerun);
    /// `None` when it is `pipeline` itself, so a large flowInput is not held twice.
    pub user_pipeline: Option<Pipeline>,
    pub graph: Graph,
    pub types: Vec<&'static str>,
    pub root_job_id: Option<String>,
    /// Node outputs taken from an earlier job (run from node).
    pub cached: Vec<(NodeId, Vec<TaskRun>)>,
}

/// The outcome fields of a finished job.
#[derive(Debug, Clone, Default)]
struct Ending {
    error: Option<String>,
    node_name: Option<String>,
    reason: Option<String>,
    timestamp: u64,
}

/// A job's status as of one moment: what [`StatusView::doc`] builds HKube's status document
/// from (reference §3.5).
#[derive(Debug, Clone)]
pub struct StatusView {
    id: Arc<str>,
    pipeline: String,
    status: JobStatus,
    counts: StateCounts,
    unexpanded: u64,
    /// Why tasks wait for a worker: (node, algorithm, reason), by node.
    pending: Vec<(Arc<str>, Arc<str>, String)>,
    ending: Ending,
    start_time: u64,
    active_time: Option<u64>,
    /// Tasks answered from the result cache, when any were.
    pub cached: Option<u64>,
}

impl StatusView {
    pub fn is_final(&self) -> bool {
        self.status.is_final()
    }

    /// The status document; a running job's times are taken up to `now_ms`.
    pub fn doc(&self, now_ms: u64) -> Value {
        let progress = status::progress(&self.counts, self.unexpanded);
        let states: Map<String, Value> = self
            .counts
            .iter()
            .map(|(status, count)| (status.as_str().to_string(), json!(count)))
            .collect();
        let mut doc = json!({
            "jobId": self.id.as_ref(),
            "pipeline": self.pipeline,
            "status": self.status.as_str(),
            "level": match self.status {
                JobStatus::Failed => "error",
                _ => "info",
            },
            "timestamp": if self.status.is_final() { self.ending.timestamp } else { now_ms },
            "data": {
                "progress": progress,
                "states": states,
                "details": status::details(progress, &self.counts),
            },
        });
        if !self.pending.is_empty() {
            // hkube's addition: why tasks wait for a worker, per node (docs/semantics.md).
            let pending: Vec<Value> = self
                .pending
                .iter()
                .map(|(node, algorithm, reason)| {
                    json!({
                        "nodeName": node.as_ref(),
                        "algorithmName": algorithm.as_ref(),
                        "reason": reason,
                    })
                })
                .collect();
            doc["data"]["pending"] = Value::Array(pending);
        }
        if let (Some(count), Some(Value::Object(data))) = (self.cached, doc.get_mut("data")) {
            data.insert("cached".into(), json!(count));
        }
        let map = doc.as_object_mut().expect("a json! object literal");
        if let Some(error) = &self.ending.error {
            map.insert("error".into(), json!(error));
        }
        if let Some(node_name) = &self.ending.node_name {
            map.insert("nodeName".into(), json!(node_name));
        }
        if let Some(reason) = &self.ending.reason {
            map.insert("reason".into(), json!(reason));
        }
        let end = if self.status.is_final() {
            self.ending.timestamp
        } else {
            now_ms
        };
        if let Some(active) = self.active_time {
            map.insert("activeTime".into(), json!(active));
            map.insert("netTimeTook".into(), json!(seconds_between(active, end)));
        }
        map.insert(
            "grossTimeTook".into(),
            json!(seconds_between(self.start_time, end)),
        );
        doc
    }
}

#[derive(Debug)]
pub struct Job {
    pub key: u64,
    pub id: Arc<str>,
    pub root_job_id: Arc<str>,
    pub pipeline: Pipeline,
    pub user_pipeline: Option<Pipeline>,
    pub types: Vec<&'static str>,
    pub graph: Graph,
    pipeline_name: Arc<str>,
    extra_data: Vec<Option<Arc<Value>>>,
    nodes: Vec<NodeRun>,
    status: JobStatus,
    counts: StateCounts,
    /// Graph nodes whose tasks do not exist yet (each counts as one task in the progress).
    unexpanded: u64,
    /// Graph nodes not done yet.
    nodes_left: usize,
    /// Tasks waiting for a dispatch slot (or for resume), as runs of consecutive tasks of one
    /// node: a million-item batch is one entry, not a million.
    ready: VecDeque<ReadyRun>,
    /// Tasks handed to the executor and not finished.
    in_flight: usize,
    max_in_flight: usize,
    pub start_time: u64,
    pub active_time: Option<u64>,
    ending: Ending,
    scratch: Vec<Option<usize>>,
    /// Emit [`Action::Record`] for finished tasks.
    journaled: bool,
    /// Outcomes recorded before a restart, by (node, group, batch index): applied instead of
    /// running the task.
    replay: HashMap<(u32, u32, u32), Replay>,
    /// Why a node's tasks wait for a worker, as the executor last said (node → the task it
    /// said it for, the reason); gone when that task starts or ends.
    pending: HashMap<u32, (u32, String)>,
}

impl Job {
    pub(crate) fn new(
        key: u64,
        id: String,
        plan: JobPlan,
        now_ms: u64,
        max_in_flight: usize,
    ) -> Job {
        let JobPlan {
            pipeline,
            user_pipeline,
            graph,
            types,
            root_job_id,
            cached,
        } = plan;
        let id: Arc<str> = id.into();
        let root_job_id: Arc<str> = root_job_id.map(Arc::from).unwrap_or_else(|| id.clone());
        let mut nodes: Vec<NodeRun> = graph
            .nodes
            .iter()
            .map(|node| {
                NodeRun::new(
                    node.name.as_str().into(),
                    node.algorithm_name.as_str().into(),
                )
            })
            .collect();
        for (id, node) in graph.nodes.iter().enumerate() {
            nodes[id].waiting_all = node
                .parents
                .iter()
                .filter(|p| p.relation.waits_for_all())
                .count();
            nodes[id].waiting_any = node.parents.iter().filter(|p| p.relation.wait_any).count();
        }
        let mut unexpanded = graph.len() as u64;
        let mut nodes_left = graph.len();
        for (id, tasks) in cached {
            let node = &mut nodes[id];
            node.cached = true;
            node.skipped = tasks.len() == 1 && tasks[0].status == TaskStatus::Skipped;
            node.tasks = tasks;
            unexpanded -= 1;
            nodes_left -= 1;
        }
        let extra_data = pipeline
            .nodes
            .iter()
            .map(|node| node.extra_data.clone().map(Arc::new))
            .collect();
        Job {
            key,
            pipeline_name: pipeline.name.as_str().into(),
            id,
            root_job_id,
            extra_data,
            pipeline,
            user_pipeline,
            types,
            graph,
            nodes,
            status: JobStatus::Pending,
            counts: StateCounts::default(),
            unexpanded,
            nodes_left,
            ready: VecDeque::new(),
            in_flight: 0,
            max_in_flight: max_in_flight.max(1),
            start_time: now_ms,
            active_time: None,
            ending: Ending::default(),
            scratch: Vec::new(),
            journaled: false,
            replay: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    /// Journal this job's finished tasks.
    pub fn journal(&mut self) {
        self.journaled = true;
    }

    /// Outcomes recorded before a restart; the job applies them instead of running those
    /// tasks again. Records naming unknown nodes are ignored.
    pub fn restore(&mut self, start_time: u64, records: Vec<(String, u32, u32, Replay)>) {
        self.start_time = start_time;
        for (node, group, batch_index, replay) in records {
            if let Some(id) = self.graph.id(&node) {
                self.replay.insert((id as u32, group, batch_index), replay);
            }
        }
    }

    pub fn status(&self) -> JobStatus {
        self.status
    }

    pub fn name(&self) -> &str {
        &self.pipeline.name
    }

    pub fn priority(&self) -> u8 {
        self.pipeline.priority
    }

    /// The timers a job needs from submission on (what is left of them, for a job restored
    /// after a restart).
    pub fn submitted(&self, now_ms: u64, out: &mut Vec<Action>) {
        if self.pipeline.options.ttl > 0 {
            let elapsed = Duration::from_millis(now_ms.saturating_sub(self.start_time));
            out.push(Action::Timer {
                after: Duration::from_secs(self.pipeline.options.ttl).saturating_sub(elapsed),
                timer: Timer::JobTtl,
            });
        }
    }

    /// The driver took the job: entry nodes run now.
    pub fn activate(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        if self.status != JobStatus::Pending {
            return;
        }
        self.status = JobStatus::Active;
        self.active_time = Some(now_ms);
        if let Some(active_ttl) = self.pipeline.options.active_ttl.filter(|&ttl| ttl > 0) {
            out.push(Action::Timer {
                after: Duration::from_secs(active_ttl),
                timer: Timer::ActiveTtl,
            });
        }
        // Cached nodes are done already: let their children know, parents first.
        for id in self.graph.topological_order() {
            if self.nodes[id].cached {
                self.nodes[id].phase = Phase::Done;
                for position in 0..self.nodes[id].tasks.len() {
                    self.item_finished(id, position, now_ms, out);
                }
                self.propagate_done(id, now_ms, out);
            }
        }
        for id in 0..self.graph.len() {
            let node = &self.nodes[id];
            if node.phase == Phase::Waiting && node.waiting_all == 0 && !node.cached {
                self.parents_done(id, now_ms, out);
            }
        }
        self.pump(now_ms, out);
        self.check_complete(now_ms, out);
    }

    // ----- events -----------------------------------------------------------------------

    /// The executor cannot place the task yet: `reason` shows in the status until it starts.
    pub fn task_pending(&mut self, key: TaskKey, reason: String) {
        if self.status.is_final() || self.live_task(key).is_none() {
            return;
        }
        self.pending.insert(key.node, (key.task, reason));
    }

    /// A task the executor said was waiting started or ended.
    fn clear_pending(&mut self, key: TaskKey) {
        if self
            .pending
            .get(&key.node)
            .is_some_and(|(task, _)| *task == key.task)
        {
            self.pending.remove(&key.node);
        }
    }

    pub fn task_started(&mut self, key: TaskKey, out: &mut Vec<Action>) {
        if self.status.is_final() {
            return;
        }
        self.clear_pending(key);
        let Some(task) = self.live_task(key) else {
            return;
        };
        if task.status != TaskStatus::Creating && task.status != TaskStatus::Pending {
            return;
        }
        self.set_status(key.node as usize, key.task as usize, TaskStatus::Active);
        let ttl = self
            .pipeline
            .nodes
            .get(key.node as usize)
            .and_then(|node| node.ttl)
            .filter(|&ttl| ttl > 0);
        if let Some(ttl) = ttl {
            out.push(Action::Timer {
                after: Duration::from_secs(ttl),
                timer: Timer::TaskTtl(key),
            });
        }
    }

    pub fn task_finished(
        &mut self,
        key: TaskKey,
        outcome: TaskOutcome,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        if self.status.is_final() || self.live_task(key).is_none() {
            return;
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        self.clear_pending(key);
        self.apply_outcome(key, outcome, now_ms, out);
        self.pump(now_ms, out);
    }

    /// A live task's outcome: output, error or crash (the latter two by the retry policy).
    fn apply_outcome(
        &mut self,
        key: TaskKey,
        outcome: TaskOutcome,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        let (node, position) = (key.node as usize, key.task as usize);
        match outcome {
            TaskOutcome::Succeeded(output) => {
                // Only a code-API caller needs its own copy of the output.
                let reply =
                    (node >= self.graph.len()).then(|| TaskOutcome::Succeeded(output.clone()));
                self.nodes[node].tasks[position].output = Some(output);
                self.set_status(node, position, TaskStatus::Succeed);
                self.task_final(key, reply, now_ms, out);
            }
            TaskOutcome::Failed(error) => self.task_failed(key, error, false, now_ms, out),
            TaskOutcome::Crashed(error) => self.task_failed(key, error, true, now_ms, out),
        }
    }

    pub fn timer_fired(&mut self, timer: Timer, now_ms: u64, out: &mut Vec<Action>) {
        if self.status.is_final() {
            return;
        }
        match timer {
            Timer::JobTtl => self.stop("pipeline expired", now_ms, out),
            Timer::ActiveTtl => self.stop("pipeline active TTL expired", now_ms, out),
            Timer::TaskTtl(key) => {
                let active = self
                    .live_task(key)
                    .is_some_and(|task| task.status == TaskStatus::Active);
                if active {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    out.push(Action::Cancel(key));
                    // A TTL is a verdict on this run, not a crash: no retry.
                    self.fail_task(key, "Algorithm TTL expired".to_string(), now_ms, out);
                    self.pump(now_ms, out);
                }
            }
        }
    }

    /// Stops the job: running tasks are cancelled, the result says why.
    pub fn stop(&mut self, reason: &str, now_ms: u64, out: &mut Vec<Action>) {
        if self.status.is_final() {
            return;
        }
        self.ending.reason = Some(reason.to_string());
        self.finish(JobStatus::Stopped, now_ms, out);
    }

    /// No new task is dispatched until [`Job::resume`]; running tasks go on and their
    /// outcomes are recorded.
    pub fn pause(&mut self) -> Result<(), JobStatus> {
        match self.status {
            JobStatus::Active | JobStatus::Pending | JobStatus::Resumed => {
                self.status = JobStatus::Paused;
                Ok(())
            }
            other => Err(other),
        }
    }

    pub fn resume(&mut self, now_ms: u64, out: &mut Vec<Action>) -> Result<(), JobStatus> {
        if self.status != JobStatus::Paused {
            return Err(self.status);
        }
        if self.active_time.is_none() {
            self.status = JobStatus::Pending;
            self.activate(now_ms, out);
        } else {
            self.status = JobStatus::Active;
        }
        self.pump(now_ms, out);
        self.check_complete(now_ms, out);
        Ok(())
    }

    /// Code API: one more task of `algorithm`, as node `<parent node>:<algorithm>`. Its
    /// outcome goes back to the caller ([`Action::AlgorithmDone`]), never into the results,
    /// and its failure does not fail the job.
    pub fn start_algorithm(
        &mut self,
        parent: TaskKey,
        algorithm: &str,
        input: Vec<Value>,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) -> Result<TaskKey, String> {
        if self.status.is_final() {
            return Err(format!("job {} has ended", self.id));
        }
        let Some(parent_node) = self.nodes.get(parent.node as usize) else {
            return Err("unknown parent task".to_string());
        };
        let name = format!("{}:{}", parent_node.node_name, algorithm);
        let mut node = NodeRun::new(name.into(), algorithm.into());
        node.given_input = Some(input);
        node.phase = Phase::Running;
        let id = self.nodes.len();
        self.nodes.push(node);
        self.extra_data.push(None);
        self.create_task(id, 0, 0);
        self.dispatch(id, 0, out);
        self.pump(now_ms, out);
        Ok(self.key_of(id, 0))
    }

    /// Code API: stop an algorithm execution (a task of a node `<parent>:<algorithm>`); its
    /// caller is answered with the reason.
    pub fn stop_execution(
        &mut self,
        node: usize,
        position: usize,
        reason: &str,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        if node < self.graph.len() || self.status.is_final() {
            return;
        }
        let Some(task) = self.nodes.get(node).and_then(|n| n.tasks.get(position)) else {
            return;
        };
        if task.status.is_final() {
            return;
        }
        let dispatched = task.attempts > 0 && task.status != TaskStatus::Warning;
        let key = self.key_of(node, position);
        if dispatched {
            self.in_flight = self.in_flight.saturating_sub(1);
            out.push(Action::Cancel(key));
        }
        self.set_status(node, position, TaskStatus::Stopped);
        out.push(Action::TaskEnded { key });
        out.push(Action::AlgorithmDone {
            key,
            outcome: TaskOutcome::Failed(format!("stopped: {reason}")),
        });
        self.pump(now_ms, out);
    }

    pub fn node_name(&self, id: usize) -> Option<&str> {
        self.nodes.get(id).map(|node| node.node_name.as_ref())
    }

    // ----- queries ----------------------------------------------------------------------

    /// HKube's status document (reference §3.5).
    pub fn status_doc(&self, now_ms: u64) -> Value {
        self.status_view().doc(now_ms)
    }

    /// What the status document is built from, taken cheaply (counters and names): the loop
    /// puts one on the board after each burst of messages, and a reader builds the document.
    pub fn status_view(&self) -> StatusView {
        let mut pending = Vec::new();
        if !self.pending.is_empty() && !self.status.is_final() {
            let mut waiting: Vec<(&u32, &(u32, String))> = self.pending.iter().collect();
            waiting.sort_unstable_by_key(|(node, _)| **node);
            pending = waiting
                .into_iter()
                .filter_map(|(node, (_, reason))| {
                    let run = self.nodes.get(*node as usize)?;
                    Some((
                        run.node_name.clone(),
                        run.algorithm_name.clone(),
                        reason.clone(),
                    ))
                })
                .collect();
        }
        StatusView {
            id: self.id.clone(),
            pipeline: self.pipeline.name.clone(),
            status: self.status,
            counts: self.counts.clone(),
            unexpanded: self.unexpanded,
            pending,
            ending: self.ending.clone(),
            start_time: self.start_time,
            active_time: self.active_time,
            cached: None,
        }
    }

    /// The results document (reference §3.4), once the job has ended.
    pub fn result_doc(&self) -> Option<Value> {
        if !self.status.is_final() {
            return None;
        }
        serde_json::to_value(ResultView(self)).ok()
    }

    /// The results document as JSON text, written straight from the tasks: the same document
    /// as [`Job::result_doc`] without building its tree first (for a million-item batch the
    /// tree takes about 500 bytes an entry, the text about 80).
    pub fn result_json(&self) -> Option<String> {
        if !self.status.is_final() {
            return None;
        }
        serde_json::to_string(&ResultView(self)).ok()
    }

    /// Where the results document points into storage (large results): what must outlive the
    /// job's other stored values. Empty unless the job completed.
    pub fn result_references(&self) -> Vec<String> {
        if self.status != JobStatus::Completed {
            return Vec::new();
        }
        let mut paths = Vec::new();
        for (id, _) in self.result_nodes() {
            for task in &self.nodes[id].tasks {
                if let Some((path, _)) = task.output.as_ref().and_then(reference::as_reference) {
                    paths.push(path.to_string());
                }
            }
        }
        paths
    }

    /// The tasks of a graph node, for run-from-node.
    pub fn node_tasks(&self, id: NodeId) -> &[TaskRun] {
        &self.nodes[id].tasks
    }

    pub fn node_done(&self, id: NodeId) -> bool {
        self.nodes[id].phase == Phase::Done
    }

    /// Finished jobs keep outputs and the graph (for results, run-from-node), not the batch
    /// lists, which can be as large as the batch.
    pub fn release_plans(&mut self) {
        for node in &mut self.nodes {
            node.lists = Vec::new();
            node.plan = None;
            node.any_ready = Vec::new();
        }
        self.ready = VecDeque::new();
        self.replay = HashMap::new();
        self.scratch = Vec::new();
    }

    // ----- internals --------------------------------------------------------------------

    /// The task this key names, if the key is for its current attempt and it is still going.
    fn live_task(&self, key: TaskKey) -> Option<&TaskRun> {
        let task = self
            .nodes
            .get(key.node as usize)?
            .tasks
            .get(key.task as usize)?;
        // A task waiting for its retry (`warning`) has no live run.
        let live = !task.status.is_final() && task.status != TaskStatus::Warning;
        (task.attempts as u32 == key.attempt && live).then_some(task)
    }

    fn set_status(&mut self, node: usize, position: usize, status: TaskStatus) {
        let task = &mut self.nodes[node].tasks[position];
        self.counts.remove(task.status);
        task.status = status;
        self.counts.add(status);
    }

    fn is_collection(&self, id: NodeId) -> bool {
        id < self.graph.len() && (self.graph.nodes[id].is_batch || self.graph.nodes[id].wait_any)
    }

    fn retry_of(&self, node: usize) -> Retry {
        self.pipeline
            .nodes
            .get(node)
            .and_then(|n| n.retry)
            .unwrap_or_default()
    }

    fn task_failed(
        &mut self,
        key: TaskKey,
        error: String,
        crashed: bool,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        let (node, position) = (key.node as usize, key.task as usize);
        let retry = self.retry_of(node);
        let retryable = match retry.policy {
            RetryPolicy::Never => false,
            RetryPolicy::Always => true,
            RetryPolicy::OnError => !crashed,
            RetryPolicy::OnCrash => crashed,
        };
        let attempts = self.nodes[node].tasks[position].attempts as u32;
        if retryable && attempts < retry.limit.min(u8::MAX as u32) {
            self.set_status(node, position, TaskStatus::Warning);
            self.dispatch(node, position, out);
            return;
        }
        let error = if retryable {
            let name = &self.nodes[node].node_name;
            format!(
                "node {name} is in CrashLoopBackOff, attempts: {attempts}/{}, last error: {error}",
                retry.limit
            )
        } else {
            error
        };
        self.fail_task(key, error, now_ms, out);
    }

    fn fail_task(&mut self, key: TaskKey, error: String, now_ms: u64, out: &mut Vec<Action>) {
        let (node, position) = (key.node as usize, key.task as usize);
        self.nodes[node].tasks[position].error = Some(error.clone().into_boxed_str());
        self.set_status(node, position, TaskStatus::Failed);
        self.nodes[node].failed += 1;
        if node >= self.graph.len() {
            self.task_final(key, Some(TaskOutcome::Failed(error)), now_ms, out);
            return;
        }
        if !self.is_collection(node) {
            self.ending.error = Some(error);
            self.ending.node_name = Some(self.nodes[node].node_name.to_string());
            out.push(Action::TaskEnded { key });
            self.finish(JobStatus::Failed, now_ms, out);
            return;
        }
        let failed = self.nodes[node].failed as u64;
        let total = self.nodes[node].tasks.len() as u64;
        let percent = status::percent(failed, total);
        let tolerance = self.pipeline.options.batch_tolerance as u64;
        if percent >= tolerance {
            self.ending.error = Some(format!(
                "{failed}/{total} ({percent}%) failed tasks, batch tolerance is {tolerance}%, error: {error}"
            ));
            self.ending.node_name = Some(self.nodes[node].node_name.to_string());
            out.push(Action::TaskEnded { key });
            self.finish(JobStatus::Failed, now_ms, out);
            return;
        }
        self.task_final(key, None, now_ms, out);
    }

    /// A task reached succeed or (tolerated) failed: children may go on.
    fn task_final(
        &mut self,
        key: TaskKey,
        outcome: Option<TaskOutcome>,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        let (node, position) = (key.node as usize, key.task as usize);
        out.push(Action::TaskEnded { key });
        if node >= self.graph.len() {
            if let Some(outcome) = outcome {
                out.push(Action::AlgorithmDone { key, outcome });
            }
            return;
        }
        self.nodes[node].unfinished -= 1;
        if self.journaled {
            let task = &self.nodes[node].tasks[position];
            let outcome = match (&task.output, &task.error) {
                (Some(output), _) => Some(RecordedOutcome::Succeeded {
                    output: output.clone(),
                }),
                (None, Some(error)) => Some(RecordedOutcome::Failed {
                    error: error.to_string(),
                }),
                (None, None) => None,
            };
            if let Some(outcome) = outcome {
                out.push(Action::Record(Box::new(TaskRecordData {
                    node: self.nodes[node].node_name.to_string(),
                    group: task.group,
                    batch_index: task.batch_index,
                    task_id: task.id,
                    outcome,
                })));
            }
        }
        self.item_finished(node, position, now_ms, out);
        if self.status.is_final() {
            return;
        }
        self.maybe_node_done(node, now_ms, out);
        self.check_complete(now_ms, out);
    }

    /// Item `position` of `parent` is final: waitAny children count it.
    fn item_finished(
        &mut self,
        parent: NodeId,
        position: usize,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        if self.nodes[parent].tasks[position].status == TaskStatus::Skipped {
            return;
        }
        for index in 0..self.graph.nodes[parent].children.len() {
            let child = self.graph.nodes[parent].children[index];
            let waits_any = self.graph.nodes[child]
                .parents
                .iter()
                .any(|p| p.node == parent && p.relation.wait_any);
            if !waits_any {
                continue;
            }
            let ready = &mut self.nodes[child].any_ready;
            if ready.len() <= position {
                ready.resize(position + 1, 0);
            }
            if ready[position] == u32::MAX {
                continue;
            }
            ready[position] += 1;
            let needed = self.graph.nodes[child]
                .parents
                .iter()
                .filter(|p| p.relation.wait_any)
                .count() as u32;
            if ready[position] == needed && self.nodes[child].phase == Phase::Running {
                self.fire_group(child, position, out);
            }
            let _ = now_ms;
        }
    }

    /// All of a waitAny node's parents have item `position`: create its task(s).
    fn fire_group(&mut self, id: NodeId, position: usize, out: &mut Vec<Action>) {
        self.nodes[id].any_ready[position] = u32::MAX;
        let group = position as u32 + 1;
        let first = self.nodes[id].tasks.len();
        if self.graph.nodes[id].is_batch {
            let count = self.nodes[id].plan.as_ref().map_or(0, BatchPlan::count);
            for index in 0..count {
                self.create_task(id, group, index as u32 + 1);
            }
        } else {
            self.create_task(id, group, group);
        }
        for position in first..self.nodes[id].tasks.len() {
            self.dispatch(id, position, out);
        }
    }

    fn create_task(&mut self, node: NodeId, group: u32, batch_index: u32) {
        let task = TaskRun {
            id: TaskId::random(&mut rand::rng()),
            status: TaskStatus::Creating,
            attempts: 0,
            group,
            batch_index,
            output: None,
            error: None,
        };
        self.counts.add(TaskStatus::Creating);
        let run = &mut self.nodes[node];
        run.tasks.push(task);
        run.unfinished += 1;
    }

    /// Every parent this node waits for completely is done: build its batch lists and, unless
    /// it waits for items (waitAny), its tasks.
    fn parents_done(&mut self, id: NodeId, now_ms: u64, out: &mut Vec<Action>) {
        self.nodes[id].phase = Phase::Running;
        self.unexpanded -= 1;
        if self.pipeline.nodes[id].kind == NodeKind::Output {
            // The output node is the engine's own: its result is its resolved input.
            self.create_task(id, 0, 0);
            let input = self.build_input(id, 0);
            self.nodes[id].tasks[0].attempts = 1;
            self.nodes[id].tasks[0].output = Some(Value::Array(input));
            self.set_status(id, 0, TaskStatus::Succeed);
            let key = self.key_of(id, 0);
            self.task_final(key, None, now_ms, out);
            return;
        }
        if self.graph.nodes[id].is_batch {
            let lists = self.batch_lists(id);
            let plan = dag::combine(
                lists.iter().map(BatchList::len).collect(),
                self.pipeline.nodes[id].batch_operation(),
            );
            self.nodes[id].lists = lists;
            if plan.count() > MAX_TASKS_PER_NODE {
                self.ending.error = Some(format!(
                    "node \"{}\" would run {} tasks, more than the limit of {MAX_TASKS_PER_NODE}; \
                     use batchOperation \"indexed\" or smaller batch inputs",
                    self.nodes[id].node_name,
                    plan.count()
                ));
                self.ending.node_name = Some(self.nodes[id].node_name.to_string());
                self.nodes[id].plan = Some(plan);
                self.finish(JobStatus::Failed, now_ms, out);
                return;
            }
            self.nodes[id].plan = Some(plan);
        }
        if self.graph.nodes[id].wait_any {
            let needed = self.nodes[id].waiting_any_total(&self.graph, id);
            let ready: Vec<usize> = self.nodes[id]
                .any_ready
                .iter()
                .enumerate()
                .filter(|&(_, &count)| count == needed)
                .map(|(position, _)| position)
                .collect();
            for position in ready {
                self.fire_group(id, position, out);
            }
            self.maybe_node_done(id, now_ms, out);
            return;
        }
        let count = match &self.nodes[id].plan {
            Some(plan) => plan.count(),
            None => 1,
        };
        if count == 0 {
            self.skip(id);
            self.maybe_node_done(id, now_ms, out);
            return;
        }
        let batch = self.graph.nodes[id].is_batch;
        self.nodes[id].tasks.reserve_exact(count);
        for index in 0..count {
            self.create_task(id, 0, if batch { index as u32 + 1 } else { 0 });
        }
        for position in 0..count {
            self.dispatch(id, position, out);
        }
    }

    /// The node runs no task: one pseudo-task `skipped`, batchIndex −1 (reference §2.4).
    fn skip(&mut self, id: NodeId) {
        self.create_task(id, 0, 0);
        self.nodes[id].skipped = true;
        self.nodes[id].unfinished -= 1;
        self.set_status(id, 0, TaskStatus::Skipped);
    }

    fn maybe_node_done(&mut self, id: NodeId, now_ms: u64, out: &mut Vec<Action>) {
        let node = &self.nodes[id];
        if node.phase != Phase::Running
            || node.unfinished > 0
            || node.waiting_all > 0
            || node.waiting_any > 0
        {
            return;
        }
        if node.tasks.is_empty() {
            // A waitAny node whose parents had no matching items.
            self.skip(id);
        }
        self.nodes[id].phase = Phase::Done;
        self.nodes_left -= 1;
        self.propagate_done(id, now_ms, out);
    }

    fn propagate_done(&mut self, id: NodeId, now_ms: u64, out: &mut Vec<Action>) {
        for index in 0..self.graph.nodes[id].children.len() {
            let child = self.graph.nodes[id].children[index];
            let Some(relation) = self.graph.nodes[child]
                .parents
                .iter()
                .find(|p| p.node == id)
                .map(|p| p.relation)
            else {
                continue;
            };
            if self.nodes[child].cached {
                continue;
            }
            if relation.wait_any {
                self.nodes[child].waiting_any -= 1;
            }
            if relation.waits_for_all() {
                self.nodes[child].waiting_all -= 1;
                if self.nodes[child].waiting_all == 0 && self.nodes[child].phase == Phase::Waiting {
                    if self.status.is_final() {
                        return;
                    }
                    self.parents_done(child, now_ms, out);
                    continue;
                }
            }
            if self.nodes[child].phase == Phase::Running {
                self.maybe_node_done(child, now_ms, out);
            }
        }
    }

    fn check_complete(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        if self.nodes_left == 0 && !self.status.is_final() && self.status != JobStatus::Paused {
            self.finish(JobStatus::Completed, now_ms, out);
        }
    }

    fn finish(&mut self, status: JobStatus, now_ms: u64, out: &mut Vec<Action>) {
        self.status = status;
        self.ending.timestamp = now_ms;
        for node in 0..self.nodes.len() {
            for position in 0..self.nodes[node].tasks.len() {
                let task = &self.nodes[node].tasks[position];
                if task.status.is_final() {
                    continue;
                }
                let key = self.key_of(node, position);
                let dispatched = task.attempts > 0;
                self.set_status(node, position, TaskStatus::Stopped);
                if dispatched {
                    out.push(Action::Cancel(key));
                }
                out.push(Action::TaskEnded { key });
                if node >= self.graph.len() {
                    out.push(Action::AlgorithmDone {
                        key,
                        outcome: TaskOutcome::Failed(format!(
                            "job {} ended: {}",
                            self.id,
                            status.as_str()
                        )),
                    });
                }
            }
        }
        self.ready.clear();
        out.push(Action::Finished);
    }

    fn key_of(&self, node: usize, position: usize) -> TaskKey {
        TaskKey {
            job: self.key,
            node: node as u32,
            task: position as u32,
            attempt: self.nodes[node].tasks[position].attempts as u32,
        }
    }

    /// Queues a task for dispatch. Consecutive tasks of one node share one queue entry.
    fn dispatch(&mut self, node: usize, position: usize, _out: &mut Vec<Action>) {
        let (node, position) = (node as u32, position as u32);
        if let Some(last) = self.ready.back_mut() {
            if last.node == node && last.end == position {
                last.end += 1;
                return;
            }
        }
        self.ready.push_back(ReadyRun {
            node,
            next: position,
            end: position + 1,
        });
    }

    /// Hands queued tasks to the executor while the job may run and has free slots. Inputs are
    /// built here, at the last moment, so queued tasks cost 8 bytes per run of tasks.
    fn pump(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        loop {
            if !matches!(self.status, JobStatus::Active | JobStatus::Resumed) {
                return;
            }
            let mut replayed = Vec::new();
            while self.in_flight < self.max_in_flight {
                let Some(run) = self.ready.front_mut() else {
                    break;
                };
                let (node, position) = (run.node as usize, run.next as usize);
                run.next += 1;
                if run.next == run.end {
                    self.ready.pop_front();
                }
                let task = &self.nodes[node].tasks[position];
                if task.status.is_final() {
                    continue;
                }
                if !self.replay.is_empty() {
                    let slot = (node as u32, task.group, task.batch_index);
                    if let Some(replay) = self.replay.remove(&slot) {
                        replayed.push((node, position, replay));
                        continue;
                    }
                }
                self.in_flight += 1;
                self.send_task(node, position, out);
            }
            if replayed.is_empty() {
                return;
            }
            // Recorded outcomes stand in for runs; they may make more tasks ready.
            for (node, position, replay) in replayed {
                if self.status.is_final() {
                    return;
                }
                let task = &mut self.nodes[node].tasks[position];
                task.id = replay.task_id;
                task.attempts = 1;
                let key = self.key_of(node, position);
                let outcome = match replay.outcome {
                    RecordedOutcome::Succeeded { output } => TaskOutcome::Succeeded(output),
                    RecordedOutcome::Failed { error } => TaskOutcome::Failed(error),
                };
                // A recorded failure was final when recorded: no retry now.
                match outcome {
                    TaskOutcome::Failed(error) => self.fail_task(key, error, now_ms, out),
                    other => self.apply_outcome(key, other, now_ms, out),
                }
            }
        }
    }

    fn send_task(&mut self, node: usize, position: usize, out: &mut Vec<Action>) {
        let input = self.build_input(node, position);
        let run = &mut self.nodes[node];
        let task = &mut run.tasks[position];
        task.attempts = task.attempts.saturating_add(1);
        let key = TaskKey {
            job: self.key,
            node: node as u32,
            task: position as u32,
            attempt: task.attempts as u32,
        };
        let batch_index = (task.batch_index > 0).then_some(task.batch_index);
        let task_id = task.id;
        let (node_name, algorithm_name) = (run.node_name.clone(), run.algorithm_name.clone());
        self.set_status(node, position, TaskStatus::Creating);
        out.push(Action::Dispatch(TaskRequest {
            key,
            task_id,
            job_id: self.id.clone(),
            root_job_id: self.root_job_id.clone(),
            pipeline_name: self.pipeline_name.clone(),
            node_name,
            algorithm_name,
            input,
            batch_index,
            priority: self.pipeline.priority,
            extra_data: self.extra_data.get(node).cloned().flatten(),
            cache: node < self.graph.len()
                && self.pipeline.nodes.get(node).and_then(|n| n.cache) == Some(true),
        }));
    }

    // ----- data flow ----------------------------------------------------------------------

    fn batch_lists(&self, id: NodeId) -> Vec<BatchList> {
        let mut lists = Vec::with_capacity(self.graph.nodes[id].batch_tokens);
        for input in &self.graph.nodes[id].inputs {
            input.visit(&mut |leaf| {
                if !is_batch_leaf(leaf) {
                    return;
                }
                lists.push(match leaf {
                    InputExpr::RawBatch(values) => BatchList::Values(values.clone()),
                    InputExpr::Ref(reference) => self.batch_list_of(reference),
                    _ => BatchList::Values(Vec::new()),
                });
            });
        }
        lists
    }

    fn batch_list_of(&self, reference: &Reference) -> BatchList {
        let path = reference.path.clone();
        match &reference.source {
            Source::FlowInput => {
                let len = self
                    .flow_input()
                    .and_then(|root| dag::lookup(root, &path))
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                BatchList::FlowInput { path, len }
            }
            Source::DataSource => BatchList::Values(Vec::new()),
            Source::Node(name) => {
                let Some(node) = self.graph.id(name) else {
                    return BatchList::Values(Vec::new());
                };
                if self.nodes[node].skipped {
                    return BatchList::Values(Vec::new());
                }
                if self.is_collection(node) {
                    let items = self
                        .item_order(node)
                        .into_iter()
                        .filter(|&position| {
                            self.nodes[node].tasks[position as usize].output.is_some()
                        })
                        .collect();
                    BatchList::NodeItems { node, path, items }
                } else {
                    let len = self.nodes[node]
                        .tasks
                        .first()
                        .and_then(|task| task.output.as_ref())
                        .and_then(|output| dag::lookup(output, &path))
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len);
                    BatchList::NodeArray { node, path, len }
                }
            }
        }
    }

    fn list_element(&self, list: &BatchList, index: usize) -> Value {
        match list {
            BatchList::Values(values) => values.get(index).cloned().unwrap_or(Value::Null),
            BatchList::FlowInput { path, .. } => self
                .flow_input()
                .and_then(|root| dag::lookup(root, path))
                .and_then(|array| array.get(index))
                .cloned()
                .unwrap_or(Value::Null),
            BatchList::NodeArray { node, path, .. } => self.nodes[*node]
                .tasks
                .first()
                .and_then(|task| task.output.as_ref())
                .and_then(|output| dag::lookup(output, path))
                .and_then(|array| array.get(index))
                .cloned()
                .unwrap_or(Value::Null),
            BatchList::NodeItems { node, path, items } => items
                .get(index)
                .and_then(|&position| self.nodes[*node].tasks[position as usize].output.as_ref())
                .map(|output| dag::value_at(output, path))
                .unwrap_or(Value::Null),
        }
    }

    fn flow_input(&self) -> Option<&Value> {
        self.pipeline.flow_input.as_ref()
    }

    /// Task positions of a node in batchIndex order (creation order for plain batches; for
    /// waitAny nodes, by parent item, then batch position).
    fn item_order(&self, node: NodeId) -> Vec<u32> {
        let tasks = &self.nodes[node].tasks;
        let mut order: Vec<u32> = (0..tasks.len() as u32).collect();
        if self.graph.nodes.get(node).is_some_and(|n| n.wait_any) {
            order.sort_by_key(|&p| (tasks[p as usize].group, tasks[p as usize].batch_index));
        }
        order
    }

    /// What `@Node.path` resolves to (reference §2.3): the output (a batch node: the array of
    /// its items' outputs in batchIndex order, `null` for failed items; a skipped node: `[]`).
    fn node_value(&self, node: NodeId, path: &[String]) -> Value {
        let run = &self.nodes[node];
        if run.skipped {
            return Value::Array(Vec::new());
        }
        if self.is_collection(node) {
            return Value::Array(
                self.item_order(node)
                    .into_iter()
                    .map(|position| match &run.tasks[position as usize].output {
                        Some(output) => dag::value_at(output, path),
                        None => Value::Null,
                    })
                    .collect(),
            );
        }
        match run.tasks.first().and_then(|task| task.output.as_ref()) {
            Some(output) => dag::value_at(output, path),
            None => Value::Null,
        }
    }

    fn build_input(&mut self, id: usize, position: usize) -> Vec<Value> {
        if let Some(given) = &self.nodes[id].given_input {
            return given.clone();
        }
        let task = &self.nodes[id].tasks[position];
        let (group, batch_index) = (task.group, task.batch_index);
        let mut indices = std::mem::take(&mut self.scratch);
        match &self.nodes[id].plan {
            Some(plan) if batch_index > 0 => plan.indices(batch_index as usize - 1, &mut indices),
            _ => indices.clear(),
        }
        let mut token = 0;
        let graph_node = &self.graph.nodes[id];
        let input = graph_node
            .inputs
            .iter()
            .map(|expr| {
                expr.instantiate(&mut |leaf| {
                    if is_batch_leaf(leaf) {
                        let value = match (
                            indices.get(token).copied().flatten(),
                            self.nodes[id].lists.get(token),
                        ) {
                            (Some(index), Some(list)) => self.list_element(list, index),
                            _ => Value::Null,
                        };
                        token += 1;
                        return value;
                    }
                    let InputExpr::Ref(reference) = leaf else {
                        return Value::Null;
                    };
                    match (&reference.source, reference.sign) {
                        (Source::FlowInput, _) => match self.flow_input() {
                            Some(root) => dag::value_at(root, &reference.path),
                            None => Value::Null,
                        },
                        (Source::Node(name), Sign::WaitAny) => match self.graph.id(name) {
                            Some(parent) => self.item_value(parent, group, &reference.path),
                            None => Value::Null,
                        },
                        (Source::Node(name), _) => match self.graph.id(name) {
                            Some(parent) => self.node_value(parent, &reference.path),
                            None => Value::Null,
                        },
                        (Source::DataSource, _) => Value::Null,
                    }
                })
            })
            .collect();
        self.scratch = indices;
        input
    }

    /// `*@Parent.path` for item `group` (1-based): that item's output; `null` if it failed.
    fn item_value(&self, parent: NodeId, group: u32, path: &[String]) -> Value {
        let position = group.saturating_sub(1) as usize;
        match self.nodes[parent]
            .tasks
            .get(position)
            .and_then(|task| task.output.as_ref())
        {
            Some(output) => dag::value_at(output, path),
            None => Value::Null,
        }
    }

    /// The nodes whose tasks the results list (sinks and `includeInResults`), with whether
    /// they are collections (their entries carry a batchIndex).
    fn result_nodes(&self) -> impl Iterator<Item = (NodeId, bool)> + '_ {
        self.pipeline
            .nodes
            .iter()
            .enumerate()
            .filter(|(id, node)| {
                !self.nodes[*id].cached && (self.graph.is_sink(*id) || node.in_results_flag())
            })
            .map(|(id, _)| (id, self.is_collection(id)))
    }
}

/// The results document (reference §3.4) of an ended job, serialized from the job as it is:
/// one implementation for the tree ([`Job::result_doc`]) and the text ([`Job::result_json`]).
struct ResultView<'a>(&'a Job);

impl Serialize for ResultView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let job = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("jobId", job.id.as_ref())?;
        map.serialize_entry("startTime", &job.start_time)?;
        map.serialize_entry("pipeline", &job.pipeline.name)?;
        map.serialize_entry("status", job.status.as_str())?;
        if job.status == JobStatus::Completed {
            map.serialize_entry("data", &ResultEntries(job))?;
        }
        if let Some(error) = &job.ending.error {
            map.serialize_entry("error", error)?;
        }
        if let Some(node_name) = &job.ending.node_name {
            map.serialize_entry("nodeName", node_name)?;
        }
        if let Some(reason) = &job.ending.reason {
            map.serialize_entry("reason", reason)?;
        }
        map.serialize_entry("timestamp", &job.ending.timestamp)?;
        map.serialize_entry(
            "timeTook",
            &seconds_between(job.start_time, job.ending.timestamp),
        )?;
        map.end()
    }
}

/// The `data` array: one entry per task of each node in the results.
struct ResultEntries<'a>(&'a Job);

impl Serialize for ResultEntries<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let job = self.0;
        let mut seq = serializer.serialize_seq(None)?;
        for (id, batch) in job.result_nodes() {
            let run = &job.nodes[id];
            for task in &run.tasks {
                seq.serialize_element(&ResultEntry { run, task, batch })?;
            }
        }
        seq.end()
    }
}

struct ResultEntry<'a> {
    run: &'a NodeRun,
    task: &'a TaskRun,
    batch: bool,
}

impl Serialize for ResultEntry<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (run, task) = (self.run, self.task);
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("nodeName", run.node_name.as_ref())?;
        map.serialize_entry("algorithmName", run.algorithm_name.as_ref())?;
        if task.status == TaskStatus::Skipped {
            map.serialize_entry("batchIndex", &-1)?;
        } else if self.batch {
            map.serialize_entry("batchIndex", &task.batch_index)?;
        }
        if let Some(output) = &task.output {
            match reference::as_reference(output) {
                // A large result stays in storage; the entry says where (HKube's shape).
                Some((path, size)) => map.serialize_entry(
                    "info",
                    &json!({"path": path, "size": size, "isBigData": true,
                            "message": format!("data too large ({}), use the stream api", reference::pretty_size(size))}),
                )?,
                None => map.serialize_entry("result", output)?,
            }
        }
        if let Some(error) = &task.error {
            map.serialize_entry("error", error.as_ref())?;
        }
        map.end()
    }
}

impl NodeRun {
    fn waiting_any_total(&self, graph: &Graph, id: NodeId) -> u32 {
        graph.nodes[id]
            .parents
            .iter()
            .filter(|p| p.relation.wait_any)
            .count() as u32
    }
}

fn seconds_between(from_ms: u64, to_ms: u64) -> f64 {
    to_ms.saturating_sub(from_ms) as f64 / 1000.0
}
