//! Every message that crosses the algorithm socket, in both directions, as typed Rust values.
//!
//! On the wire each message is an envelope `{command, data?}`; `errorMessage` carries its payload
//! under a top-level `error` instead (see `PROTOCOL.md`). [`Envelope`] is that raw shape;
//! [`ToAlgorithm`] (worker → wrapper) and [`FromAlgorithm`] (wrapper → worker) are the typed views,
//! converted with `to_envelope` / `from_envelope` and (de)serialized through the envelope so their
//! JSON is exactly HKube's. Payload structs keep fields the reference does not name in a flattened
//! `extra` map, so a message that is decoded and re-encoded loses nothing.
//!
//! Arbitrary user values (inputs, outputs, code-API responses) are `serde_json::Value`; a binary
//! value from a BSON or msgpack peer is the tagged object described in [`super::codec`].
//!
//! This file must stay pure data: no IO, no state; ordering rules live in [`super::session`].

use std::collections::BTreeMap;

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::Error;

/// A JSON object: the type of every `extra` map and of free-form maps such as `storage`.
pub type Object = Map<String, Value>;

/// The raw protocol envelope: `{command, data?, error?}`.
///
/// `data: null` on the wire reads as `None`, so `{"command":"initialized","data":null}` (what the
/// BSON example in the reference shows) and `{"command":"initialized"}` are the same message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

impl Envelope {
    /// An envelope with only a command (`{"command":"alive"}`).
    pub fn bare(command: &str) -> Self {
        Self {
            command: command.to_owned(),
            data: None,
            error: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Worker → wrapper
// ---------------------------------------------------------------------------------------------

/// A message the worker (our sidecar) sends to the algorithm's wrapper.
#[derive(Debug, Clone, PartialEq)]
pub enum ToAlgorithm {
    /// `initialize`: a task was accepted; carries the job data.
    Initialize(Box<JobData>),
    /// `start`: run the user's `start` now.
    Start(StartPayload),
    /// `stop`: stop the running task.
    Stop(StopPayload),
    /// `exit`: terminate the wrapper process.
    Exit(ExitPayload),
    /// `serviceDiscoveryUpdate`: streaming parents appeared or went away.
    ServiceDiscoveryUpdate(Vec<DiscoveryChange>),
    /// `algorithmExecutionDone`: a child algorithm (code API) succeeded.
    AlgorithmExecutionDone(ExecutionDone),
    /// `algorithmExecutionError`: a child algorithm was rejected or failed.
    AlgorithmExecutionError(ExecutionError),
    /// `subPipelineStarted`: the worker accepted a sub-pipeline request (wrappers ignore it).
    SubPipelineStarted(SubPipelineStarted),
    /// `subPipelineDone`: a sub-pipeline completed.
    SubPipelineDone(SubPipelineDone),
    /// `subPipelineError`: a sub-pipeline was rejected or failed.
    SubPipelineError(SubPipelineError),
    /// `subPipelineStopped`: a sub-pipeline was stopped.
    SubPipelineStopped(SubPipelineStopped),
    /// `dataSourceResponse`: reply to `dataSourceRequest`.
    DataSourceResponse(DataSourceResponse),
    /// hkube extension `run` (fast path only): run one task; answered by exactly one `result` or
    /// `errorMessage`.
    Run(Box<JobData>),
    /// hkube extension `runBatch` (fast path only): run several tasks; answered by one `results`.
    RunBatch(RunBatch),
    /// A command this version does not know; the receiver ignores it.
    Unknown { command: String },
}

/// Job data: the payload of `initialize` (and of the fast-path `run`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobData {
    pub job_id: String,
    pub task_id: String,
    pub node_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_index: Option<u64>,
    /// Node input; may hold `"$$<key>"` storage references at any depth (storage v3).
    #[serde(default)]
    pub input: Vec<Value>,
    /// Storage links by reference key: `{storageInfo, discovery?, taskId?, path?}` or, for a
    /// batch link, a list of `{discovery, tasks}`. Always sent (possibly empty).
    #[serde(default)]
    pub storage: Object,
    /// Dotted input path → value; `null` in storage v1 (the key is always sent, as HKube does).
    #[serde(default)]
    pub flat_input: Option<Object>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_cache: Option<bool>,
    /// `batch` or `stream`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `stateful` or `stateless` (streaming only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub childs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parents: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parsed_flow: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_flow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<JobInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Set on code-API children: the node that started them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_node_name: Option<String>,
    /// Set on code-API children: the parent's `execId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_id: Option<String>,
    /// Tracing carrier, e.g. `{"uber-trace-id": "..."}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<Value>,
    /// Everything else (`status`, `isScaled`, `priority`, `ttl`, `metrics`, `spec`, ...).
    #[serde(flatten)]
    pub extra: Object,
}

impl JobData {
    /// Whether this is a streaming task (`kind: "stream"`).
    pub fn is_stream(&self) -> bool {
        self.kind.as_deref() == Some("stream")
    }
}

/// `initialize.info`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_data: Option<Value>,
    /// `"<nodeName>.<path>"` of this node's output that children read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_paths: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_job_id: Option<String>,
    #[serde(flatten)]
    pub extra: Object,
}

/// `initialize.retry`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// `Never`, `OnError`, `Always` or `OnCrash`.
    pub policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(flatten)]
    pub extra: Object,
}

/// `start`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartPayload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<Value>,
    #[serde(flatten)]
    pub extra: Object,
}

/// `stop`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopPayload {
    /// `true` except on scale-down, where the wrapper may drain first.
    #[serde(default)]
    pub force_stop: bool,
    #[serde(flatten)]
    pub extra: Object,
}

/// `exit`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitPayload {
    #[serde(default)]
    pub exit_code: i32,
    #[serde(flatten)]
    pub extra: Object,
}

/// One entry of `serviceDiscoveryUpdate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryChange {
    pub node_name: String,
    pub address: Address,
    #[serde(rename = "type")]
    pub change: ChangeKind,
    #[serde(flatten)]
    pub extra: Object,
}

/// `Add` or `Del` in `serviceDiscoveryUpdate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    Add,
    Del,
}

/// A host and port, as in `discovery` and `serviceDiscoveryUpdate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    pub host: String,
    pub port: Port,
}

/// A TCP port. Java sends `discovery.port` as a string; it is read from either form and always
/// written as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(u16),
            Text(String),
        }
        match Either::deserialize(deserializer) {
            Ok(Either::Number(port)) => Ok(Port(port)),
            Ok(Either::Text(text)) => {
                text.trim().parse().map(Port).map_err(|_| {
                    D::Error::custom(format!("port `{text}` is not a number 0..=65535"))
                })
            }
            Err(_) => Err(D::Error::custom(
                "port must be a number 0..=65535 or a numeric string",
            )),
        }
    }
}

/// `algorithmExecutionDone`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionDone {
    pub exec_id: String,
    /// v3: the child's `storing` payload (a link); v1: the child's decoded output.
    #[serde(default)]
    pub response: Value,
    #[serde(flatten)]
    pub extra: Object,
}

/// `algorithmExecutionError`. `execId` is absent when the request itself had none (case 23).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_id: Option<String>,
    pub error: String,
    #[serde(flatten)]
    pub extra: Object,
}

/// `subPipelineStarted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubPipelineStarted {
    pub sub_pipeline_id: String,
    #[serde(flatten)]
    pub extra: Object,
}

/// `subPipelineDone`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubPipelineDone {
    pub sub_pipeline_id: String,
    /// v3: the job result link `{storageInfo:{path}}`; v1: the result list.
    #[serde(default)]
    pub response: Value,
    #[serde(flatten)]
    pub extra: Object,
}

/// `subPipelineError`. `subPipelineId` is absent when the request itself had none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubPipelineError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_pipeline_id: Option<String>,
    pub error: String,
    #[serde(flatten)]
    pub extra: Object,
}

/// `subPipelineStopped`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubPipelineStopped {
    pub sub_pipeline_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(flatten)]
    pub extra: Object,
}

/// `dataSourceResponse`: exactly one of `response` and `error` is normally set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataSourceResponse {
    pub request_id: String,
    /// `{name, files:[{...fileMeta, path}]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten)]
    pub extra: Object,
}

/// hkube extension `runBatch`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunBatch {
    pub tasks: Vec<JobData>,
}

// ---------------------------------------------------------------------------------------------
// Wrapper → worker
// ---------------------------------------------------------------------------------------------

/// A message the algorithm's wrapper sends to the worker (our sidecar).
#[derive(Debug, Clone, PartialEq)]
pub enum FromAlgorithm {
    /// `initialized`: user `init` returned.
    Initialized,
    /// `started`: user `start` is about to run (informational).
    Started,
    /// `storing`: where the output is (storage v3).
    Storing(StoringPayload),
    /// `done`: task finished. v3: no data (Java sends `{}`); v1: the output itself.
    Done(Option<Value>),
    /// `stopping`: still draining after `stop`; extends the stop timer.
    Stopping,
    /// `stopped`: the stop completed.
    Stopped,
    /// `errorMessage`: user code failed. The fast path adds `data: {taskId}`.
    ErrorMessage {
        error: ErrorInfo,
        task_id: Option<String>,
        /// hkube extension: what the task printed (fast path, `data.log`).
        log: Option<String>,
    },
    /// `alive`: heartbeat while a task runs (Python).
    Alive,
    /// `servingStatus`: the peer data server recently served a request.
    ServingStatus(bool),
    /// `streamingStatistics`: per-child streaming counters.
    StreamingStatistics(Vec<StreamingStatistic>),
    /// `progress`: debug log only.
    Progress(Progress),
    /// `startAlgorithmExecution` (code API).
    StartAlgorithmExecution(StartAlgorithmExecution),
    /// `stopAlgorithmExecution` (code API).
    StopAlgorithmExecution(StopAlgorithmExecution),
    /// `startStoredSubPipeline` (code API).
    StartStoredSubPipeline(StartStoredSubPipeline),
    /// `startRawSubPipeline` (code API).
    StartRawSubPipeline(StartRawSubPipeline),
    /// `stopSubPipeline` (code API).
    StopSubPipeline(StopSubPipeline),
    /// `dataSourceRequest` (code API).
    DataSourceRequest(DataSourceRequest),
    /// `startSpan`: open a tracing span (Java).
    StartSpan(StartSpan),
    /// `finishSpan`: close the current tracing span (Java).
    FinishSpan(FinishSpan),
    /// `logData`: captured stdout lines (debug relay).
    LogData(Vec<Value>),
    /// `exited`: Java, after `exit`.
    Exited,
    /// hkube extension `result` (fast path only): the output of one `run`.
    Result(TaskResult),
    /// hkube extension `taskLog`: what the running task printed (HKube's exchange, sent just
    /// before `done` or `errorMessage`).
    TaskLog(TaskLog),
    /// hkube extension `results` (fast path only): the outcomes of one `runBatch`, in task order.
    Results(BatchResults),
    /// A command this version does not know (`streamingOutMessage`, a future command, ...); the
    /// worker ignores it.
    Unknown { command: String },
}

/// `storing`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoringPayload {
    pub storage_info: StorageInfo,
    /// Save path → type information; `{type:"array", size:n}` drives wait-batch fan-out.
    #[serde(default)]
    pub metadata: BTreeMap<String, PathMetadata>,
    /// Set when the output sits in the wrapper's peer data server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(flatten)]
    pub extra: Object,
}

/// `storageInfo`: where an object is in storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageInfo {
    /// `<cluster>-hkube/<jobId>/<taskId>`.
    pub path: String,
    /// Encoded payload bytes, header excluded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(flatten)]
    pub extra: Object,
}

/// One entry of `storing.metadata`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathMetadata {
    /// Type name; only `array` (with `size`) has a meaning to the pipeline driver.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(flatten)]
    pub extra: Object,
}

/// The `error` object of `errorMessage` (and of a failed fast-path batch entry).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorInfo {
    /// `Failed` from every known wrapper.
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    #[serde(flatten)]
    pub extra: Object,
}

impl ErrorInfo {
    /// `{code: "Failed", message}`, what every HKube wrapper sends for a thrown exception.
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: "Failed".to_owned(),
            message: message.into(),
            ..Self::default()
        }
    }

    /// hkube's runtimes: the exception's type (`type`: `KeyError`, `SyntaxError`,
    /// `java.lang.IllegalStateException`). HKube's wrappers do not send it.
    pub fn exception(&self) -> Option<&str> {
        self.extra
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
    }

    /// hkube's runtimes: where in the user's code the error was raised, `file:line` (from
    /// `file` and `line`; a line alone means nothing and is dropped).
    pub fn location(&self) -> Option<String> {
        let file = self
            .extra
            .get("file")
            .and_then(Value::as_str)
            .filter(|f| !f.is_empty())?;
        Some(match self.extra.get("line") {
            Some(Value::Number(line)) => format!("{file}:{line}"),
            Some(Value::String(line)) if !line.is_empty() => format!("{file}:{line}"),
            _ => file.to_owned(),
        })
    }
}

/// One entry of `streamingStatistics`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamingStatistic {
    pub node_name: String,
    #[serde(default)]
    pub sent: u64,
    #[serde(default)]
    pub queue_size: u64,
    #[serde(default)]
    pub dropped: u64,
    #[serde(default)]
    pub responses: u64,
    #[serde(default)]
    pub durations: Vec<f64>,
    #[serde(default)]
    pub net_durations: Vec<f64>,
    #[serde(default)]
    pub queue_durations: Vec<f64>,
    #[serde(flatten)]
    pub extra: Object,
}

/// `progress`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Value>,
    #[serde(flatten)]
    pub extra: Object,
}

/// `startAlgorithmExecution`. v3 wrappers send `storageInput` + `storage`; v1 sends `input`.
/// Java sends `resultAsRaw` instead of `includeResult`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartAlgorithmExecution {
    pub exec_id: String,
    pub algorithm_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_input: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Object>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_result: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_as_raw: Option<bool>,
    #[serde(flatten)]
    pub extra: Object,
}

/// `stopAlgorithmExecution`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopAlgorithmExecution {
    pub exec_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(flatten)]
    pub extra: Object,
}

/// `startStoredSubPipeline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartStoredSubPipeline {
    pub sub_pipeline_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_result: Option<bool>,
    pub sub_pipeline: StoredSubPipeline,
    #[serde(flatten)]
    pub extra: Object,
}

/// `startStoredSubPipeline.subPipeline`: a stored pipeline by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredSubPipeline {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_input: Option<Value>,
    #[serde(flatten)]
    pub extra: Object,
}

/// `startRawSubPipeline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartRawSubPipeline {
    pub sub_pipeline_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_result: Option<bool>,
    pub sub_pipeline: RawSubPipeline,
    #[serde(flatten)]
    pub extra: Object,
}

/// `startRawSubPipeline.subPipeline`: a pipeline given inline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawSubPipeline {
    pub name: String,
    /// Pipeline nodes as in a pipeline descriptor (`{nodeName, algorithmName, input}`).
    #[serde(default)]
    pub nodes: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_input: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Value>,
    #[serde(flatten)]
    pub extra: Object,
}

/// `stopSubPipeline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopSubPipeline {
    pub sub_pipeline_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(flatten)]
    pub extra: Object,
}

/// `dataSourceRequest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataSourceRequest {
    pub request_id: String,
    pub data_source: DataSourceRef,
    #[serde(flatten)]
    pub extra: Object,
}

/// `{dataSourceId}` or `{snapshotId}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataSourceRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_source_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    #[serde(flatten)]
    pub extra: Object,
}

/// `startSpan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartSpan {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Value>,
    #[serde(flatten)]
    pub extra: Object,
}

/// `finishSpan`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinishSpan {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    #[serde(flatten)]
    pub extra: Object,
}

/// hkube extension `result`: the output of one fast-path task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskResult {
    pub task_id: String,
    #[serde(default)]
    pub output: Value,
    /// What the task printed (the last 64 KiB), when it printed anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
}

/// hkube extension `taskLog`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskLog {
    pub task_id: String,
    pub log: String,
}

/// hkube extension `results`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResults {
    pub results: Vec<TaskOutcome>,
}

/// One entry of `results`: `{taskId, error}` or `{taskId, output}` (an entry with both is a
/// failure).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TaskOutcome {
    Failed {
        #[serde(rename = "taskId")]
        task_id: String,
        error: ErrorInfo,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log: Option<String>,
    },
    Succeeded {
        #[serde(rename = "taskId")]
        task_id: String,
        #[serde(default)]
        output: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log: Option<String>,
    },
}

impl TaskOutcome {
    pub fn task_id(&self) -> &str {
        match self {
            Self::Failed { task_id, .. } | Self::Succeeded { task_id, .. } => task_id,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Envelope conversion
// ---------------------------------------------------------------------------------------------

/// The `data` payload of a command, read as `T`. Missing or `null` data reads as `absent` (an
/// empty object for struct payloads, an empty list for list payloads), so a struct whose fields are
/// all optional accepts a bare command.
fn payload<T: DeserializeOwned>(
    command: &str,
    data: Option<Value>,
    absent: Value,
) -> Result<T, Error> {
    let data = data.unwrap_or(absent);
    T::deserialize(&data).map_err(|e| Error::InvalidPayload {
        command: command.to_owned(),
        reason: e.to_string(),
        data: Box::new(data),
    })
}

fn object<T: DeserializeOwned>(command: &str, data: Option<Value>) -> Result<T, Error> {
    payload(command, data, Value::Object(Object::new()))
}

fn list<T: DeserializeOwned>(command: &str, data: Option<Value>) -> Result<Vec<T>, Error> {
    payload(command, data, Value::Array(Vec::new()))
}

fn with_data<T: Serialize>(command: &str, data: &T) -> Result<Envelope, serde_json::Error> {
    Ok(Envelope {
        command: command.to_owned(),
        data: Some(serde_json::to_value(data)?),
        error: None,
    })
}

impl ToAlgorithm {
    /// The wire command name.
    pub fn command(&self) -> &str {
        match self {
            Self::Initialize(_) => "initialize",
            Self::Start(_) => "start",
            Self::Stop(_) => "stop",
            Self::Exit(_) => "exit",
            Self::ServiceDiscoveryUpdate(_) => "serviceDiscoveryUpdate",
            Self::AlgorithmExecutionDone(_) => "algorithmExecutionDone",
            Self::AlgorithmExecutionError(_) => "algorithmExecutionError",
            Self::SubPipelineStarted(_) => "subPipelineStarted",
            Self::SubPipelineDone(_) => "subPipelineDone",
            Self::SubPipelineError(_) => "subPipelineError",
            Self::SubPipelineStopped(_) => "subPipelineStopped",
            Self::DataSourceResponse(_) => "dataSourceResponse",
            Self::Run(_) => "run",
            Self::RunBatch(_) => "runBatch",
            Self::Unknown { command } => command,
        }
    }

    /// Whether this is an hkube extension (fast path) that HKube's wrappers never see.
    pub fn is_extension(&self) -> bool {
        matches!(self, Self::Run(_) | Self::RunBatch(_))
    }

    /// The typed message of an envelope. Unknown commands give [`ToAlgorithm::Unknown`].
    pub fn from_envelope(envelope: Envelope) -> Result<Self, Error> {
        let Envelope { command, data, .. } = envelope;
        let c = command.as_str();
        Ok(match c {
            "initialize" => Self::Initialize(Box::new(object(c, data)?)),
            "start" => Self::Start(object(c, data)?),
            "stop" => Self::Stop(object(c, data)?),
            "exit" => Self::Exit(object(c, data)?),
            "serviceDiscoveryUpdate" => Self::ServiceDiscoveryUpdate(list(c, data)?),
            "algorithmExecutionDone" => Self::AlgorithmExecutionDone(object(c, data)?),
            "algorithmExecutionError" => Self::AlgorithmExecutionError(object(c, data)?),
            "subPipelineStarted" => Self::SubPipelineStarted(object(c, data)?),
            "subPipelineDone" => Self::SubPipelineDone(object(c, data)?),
            "subPipelineError" => Self::SubPipelineError(object(c, data)?),
            "subPipelineStopped" => Self::SubPipelineStopped(object(c, data)?),
            "dataSourceResponse" => Self::DataSourceResponse(object(c, data)?),
            "run" => Self::Run(Box::new(object(c, data)?)),
            "runBatch" => Self::RunBatch(object(c, data)?),
            _ => Self::Unknown { command },
        })
    }

    /// The envelope this message is sent as.
    pub fn to_envelope(&self) -> Result<Envelope, serde_json::Error> {
        let c = self.command();
        match self {
            Self::Initialize(data) | Self::Run(data) => with_data(c, data),
            Self::Start(data) => with_data(c, data),
            Self::Stop(data) => with_data(c, data),
            Self::Exit(data) => with_data(c, data),
            Self::ServiceDiscoveryUpdate(data) => with_data(c, data),
            Self::AlgorithmExecutionDone(data) => with_data(c, data),
            Self::AlgorithmExecutionError(data) => with_data(c, data),
            Self::SubPipelineStarted(data) => with_data(c, data),
            Self::SubPipelineDone(data) => with_data(c, data),
            Self::SubPipelineError(data) => with_data(c, data),
            Self::SubPipelineStopped(data) => with_data(c, data),
            Self::DataSourceResponse(data) => with_data(c, data),
            Self::RunBatch(data) => with_data(c, data),
            Self::Unknown { command } => Ok(Envelope::bare(command)),
        }
    }
}

impl FromAlgorithm {
    /// The wire command name.
    pub fn command(&self) -> &str {
        match self {
            Self::Initialized => "initialized",
            Self::Started => "started",
            Self::Storing(_) => "storing",
            Self::Done(_) => "done",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::ErrorMessage { .. } => "errorMessage",
            Self::Alive => "alive",
            Self::ServingStatus(_) => "servingStatus",
            Self::StreamingStatistics(_) => "streamingStatistics",
            Self::Progress(_) => "progress",
            Self::StartAlgorithmExecution(_) => "startAlgorithmExecution",
            Self::StopAlgorithmExecution(_) => "stopAlgorithmExecution",
            Self::StartStoredSubPipeline(_) => "startStoredSubPipeline",
            Self::StartRawSubPipeline(_) => "startRawSubPipeline",
            Self::StopSubPipeline(_) => "stopSubPipeline",
            Self::DataSourceRequest(_) => "dataSourceRequest",
            Self::StartSpan(_) => "startSpan",
            Self::FinishSpan(_) => "finishSpan",
            Self::LogData(_) => "logData",
            Self::Exited => "exited",
            Self::Result(_) => "result",
            Self::Results(_) => "results",
            Self::TaskLog(_) => "taskLog",
            Self::Unknown { command } => command,
        }
    }

    /// Whether this is an hkube extension (fast path) that HKube's wrappers never send.
    pub fn is_extension(&self) -> bool {
        matches!(self, Self::Result(_) | Self::Results(_) | Self::TaskLog(_))
    }

    /// The typed message of an envelope. Unknown commands give [`FromAlgorithm::Unknown`].
    pub fn from_envelope(envelope: Envelope) -> Result<Self, Error> {
        let Envelope {
            command,
            data,
            error,
        } = envelope;
        let c = command.as_str();
        Ok(match c {
            "initialized" => Self::Initialized,
            "started" => Self::Started,
            "storing" => Self::Storing(object(c, data)?),
            "done" => Self::Done(data),
            "stopping" => Self::Stopping,
            "stopped" => Self::Stopped,
            "errorMessage" => {
                // An error report must never be lost to a shape quibble: a bare string `error` is
                // its message, and a `data` without a string `taskId` is ignored.
                let task_id = data
                    .as_ref()
                    .and_then(|data| data.get("taskId"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let log = data
                    .as_ref()
                    .and_then(|data| data.get("log"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let error = match error {
                    Some(Value::String(message)) => ErrorInfo::failed(message),
                    error => object(c, error)?,
                };
                Self::ErrorMessage {
                    error,
                    task_id,
                    log,
                }
            }
            "alive" => Self::Alive,
            // The worker treats every `servingStatus` as "served recently"; HKube sends `true`.
            "servingStatus" => Self::ServingStatus(payload(c, data, Value::Bool(true))?),
            "streamingStatistics" => Self::StreamingStatistics(list(c, data)?),
            "progress" => Self::Progress(object(c, data)?),
            "startAlgorithmExecution" => Self::StartAlgorithmExecution(object(c, data)?),
            "stopAlgorithmExecution" => Self::StopAlgorithmExecution(object(c, data)?),
            "startStoredSubPipeline" => Self::StartStoredSubPipeline(object(c, data)?),
            "startRawSubPipeline" => Self::StartRawSubPipeline(object(c, data)?),
            "stopSubPipeline" => Self::StopSubPipeline(object(c, data)?),
            "dataSourceRequest" => Self::DataSourceRequest(object(c, data)?),
            "startSpan" => Self::StartSpan(object(c, data)?),
            "finishSpan" => Self::FinishSpan(object(c, data)?),
            "logData" => Self::LogData(list(c, data)?),
            "exited" => Self::Exited,
            "result" => Self::Result(object(c, data)?),
            "results" => Self::Results(object(c, data)?),
            "taskLog" => Self::TaskLog(object(c, data)?),
            _ => Self::Unknown { command },
        })
    }

    /// The envelope this message is sent as.
    pub fn to_envelope(&self) -> Result<Envelope, serde_json::Error> {
        let c = self.command();
        match self {
            Self::Initialized
            | Self::Started
            | Self::Stopping
            | Self::Stopped
            | Self::Alive
            | Self::Exited
            | Self::Done(None) => Ok(Envelope::bare(c)),
            Self::Unknown { command } => Ok(Envelope::bare(command)),
            Self::Done(Some(data)) => with_data(c, data),
            Self::Storing(data) => with_data(c, data),
            Self::ErrorMessage {
                error,
                task_id,
                log,
            } => {
                let mut data = serde_json::Map::new();
                if let Some(id) = task_id {
                    data.insert("taskId".into(), Value::from(id.as_str()));
                }
                if let Some(log) = log {
                    data.insert("log".into(), Value::from(log.as_str()));
                }
                Ok(Envelope {
                    command: c.to_owned(),
                    data: (!data.is_empty()).then_some(Value::Object(data)),
                    error: Some(serde_json::to_value(error)?),
                })
            }
            Self::ServingStatus(data) => with_data(c, data),
            Self::StreamingStatistics(data) => with_data(c, data),
            Self::Progress(data) => with_data(c, data),
            Self::StartAlgorithmExecution(data) => with_data(c, data),
            Self::StopAlgorithmExecution(data) => with_data(c, data),
            Self::StartStoredSubPipeline(data) => with_data(c, data),
            Self::StartRawSubPipeline(data) => with_data(c, data),
            Self::StopSubPipeline(data) => with_data(c, data),
            Self::DataSourceRequest(data) => with_data(c, data),
            Self::StartSpan(data) => with_data(c, data),
            Self::FinishSpan(data) => with_data(c, data),
            Self::LogData(data) => with_data(c, data),
            Self::Result(data) => with_data(c, data),
            Self::Results(data) => with_data(c, data),
            Self::TaskLog(data) => with_data(c, data),
        }
    }
}

/// A message with data, borrowed: `{"command": …, "data": …}` as the envelope writes it.
#[derive(Serialize)]
struct WithData<'a, T: Serialize> {
    command: &'a str,
    data: &'a T,
}

impl Serialize for ToAlgorithm {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let command = self.command();
        match self {
            // Every task passes here: its data is written as it is, with no value tree built
            // in between (the same text as the envelope's).
            Self::Initialize(data) | Self::Run(data) => {
                WithData { command, data }.serialize(serializer)
            }
            Self::RunBatch(data) => WithData { command, data }.serialize(serializer),
            _ => self
                .to_envelope()
                .map_err(serde::ser::Error::custom)?
                .serialize(serializer),
        }
    }
}

impl Serialize for FromAlgorithm {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_envelope()
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

macro_rules! deserialize_via_envelope {
    ($ty:ty) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                Self::from_envelope(Envelope::deserialize(deserializer)?).map_err(D::Error::custom)
            }
        }
    };
}

deserialize_via_envelope!(ToAlgorithm);
deserialize_via_envelope!(FromAlgorithm);

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    /// §2.6 of the reference plus the hkube fast-path shapes, worker → wrapper.
    pub(crate) const TO_ALGORITHM_EXAMPLES: &[&str] = &[
        r#"{"command":"initialize","data":{"jobId":"main:simple:ab12","taskId":"green:t1","nodeName":"green","algorithmName":"green-alg","pipelineName":"simple","kind":"batch","input":["$$q1w2e3r4",5],"flatInput":{"0":"$$q1w2e3r4","1":5},"storage":{"q1w2e3r4":{"storageInfo":{"path":"local-hkube/main:simple:ab12/yellow:t0","size":12},"discovery":{"host":"10.0.0.7","port":9020},"taskId":"yellow:t0"}},"useCache":false,"childs":["red"],"info":{"savePaths":["green"],"rootJobId":"main:simple:ab12"},"retry":{"policy":"OnCrash","limit":3},"spanId":{"uber-trace-id":"1:2:3:1"}}}"#,
        r#"{"command":"start","data":{"spanId":{"uber-trace-id":"1:2:3:1"}}}"#,
        r#"{"command":"stop","data":{"forceStop":true}}"#,
        r#"{"command":"exit","data":{"exitCode":0}}"#,
        r#"{"command":"algorithmExecutionDone","data":{"execId":"1","response":{"storageInfo":{"path":"local-hkube/main:simple:ab12/green:eval-alg:t7","size":3},"metadata":{}}}}"#,
        r#"{"command":"subPipelineError","data":{"subPipelineId":"2","error":"pipeline sub not found"}}"#,
        r#"{"command":"serviceDiscoveryUpdate","data":[{"nodeName":"A","address":{"host":"10.0.0.9","port":9022},"type":"Add"}]}"#,
        // §13 cases 20–23.
        r#"{"command":"subPipelineStarted","data":{"subPipelineId":"1"}}"#,
        r#"{"command":"subPipelineDone","data":{"subPipelineId":"1","response":{"storageInfo":{"path":"local-hkube-results/sub:1/result.json"}}}}"#,
        r#"{"command":"subPipelineError","data":{"subPipelineId":"1","error":"x"}}"#,
        r#"{"command":"subPipelineStopped","data":{"subPipelineId":"1","reason":"r"}}"#,
        r#"{"command":"algorithmExecutionDone","data":{"execId":"2","response":{"storageInfo":{"path":"local-hkube/j1/t9"}}}}"#,
        r#"{"command":"algorithmExecutionError","data":{"execId":"2","error":"algorithm eval not found"}}"#,
        r#"{"command":"algorithmExecutionError","data":{"error":"execId must be a non-empty string"}}"#,
        r#"{"command":"dataSourceResponse","data":{"requestId":"3","response":{"name":"ds","files":[{"name":"a.csv","path":"dataSources-in-use/ds/1/ds/data/a.csv"}]}}}"#,
        r#"{"command":"dataSourceResponse","data":{"requestId":"4","error":"snapshot s not found"}}"#,
        // hkube fast path.
        r#"{"command":"run","data":{"jobId":"j1","taskId":"t1","nodeName":"green","input":[1,2],"storage":{},"flatInput":null}}"#,
        r#"{"command":"runBatch","data":{"tasks":[{"jobId":"j1","taskId":"t1","nodeName":"green","input":[1],"storage":{},"flatInput":null},{"jobId":"j1","taskId":"t2","nodeName":"green","input":[2],"storage":{},"flatInput":null}]}}"#,
    ];

    /// §2.6 of the reference plus the hkube fast-path shapes, wrapper → worker.
    pub(crate) const FROM_ALGORITHM_EXAMPLES: &[&str] = &[
        r#"{"command":"initialized"}"#,
        r#"{"command":"started"}"#,
        r#"{"command":"storing","data":{"storageInfo":{"path":"local-hkube/main:simple:ab12/green:t1","size":9},"metadata":{"green":{"type":"array","size":2}},"discovery":{"host":"10.0.0.8","port":9020},"taskId":"green:t1"}}"#,
        r#"{"command":"done"}"#,
        r#"{"command":"done","data":[1,2]}"#,
        r#"{"command":"errorMessage","error":{"code":"Failed","message":"division by zero"}}"#,
        r#"{"command":"stopping"}"#,
        r#"{"command":"stopped"}"#,
        r#"{"command":"alive"}"#,
        r#"{"command":"servingStatus","data":true}"#,
        r#"{"command":"startAlgorithmExecution","data":{"execId":"1","algorithmName":"eval-alg","storageInput":["$$kzqpwmxa"],"storage":{"kzqpwmxa":{"storageInfo":{"path":"local-hkube/main:simple:ab12/kzqpwmxa"}}},"includeResult":true}}"#,
        r#"{"command":"startRawSubPipeline","data":{"subPipelineId":"2","includeResult":true,"subPipeline":{"name":"sub","nodes":[{"nodeName":"d1","algorithmName":"green-alg","input":["@flowInput.foo"]}],"flowInput":{"foo":3},"options":{},"webhooks":{}}}}"#,
        r#"{"command":"dataSourceRequest","data":{"requestId":"3","dataSource":{"dataSourceId":"ds-1"}}}"#,
        r#"{"command":"streamingStatistics","data":[{"nodeName":"B","sent":120,"queueSize":3,"dropped":0,"responses":118,"durations":[2.1],"netDurations":[1.7],"queueDurations":[0.4]}]}"#,
        // §13 cases 5, 6, 13, 20, 22, 25.
        r#"{"command":"storing","data":{"storageInfo":{"path":"local-hkube/j1/t1","size":17},"metadata":{}}}"#,
        r#"{"command":"done","data":{"x":1}}"#,
        r#"{"command":"errorMessage","error":{"code":"Failed","message":"boom"}}"#,
        r#"{"command":"startStoredSubPipeline","data":{"subPipelineId":"1","includeResult":true,"subPipeline":{"name":"simple","flowInput":{"x":1}}}}"#,
        r#"{"command":"startAlgorithmExecution","data":{"execId":"2","algorithmName":"eval","storageInput":["$$k"],"storage":{"k":{"storageInfo":{"path":"local-hkube/j1/k"}}},"includeResult":true}}"#,
        r#"{"command":"dataSourceRequest","data":{"requestId":"3","dataSource":{"snapshotId":"s"}}}"#,
        // Remaining commands of §2.3.
        r#"{"command":"progress","data":{"progress":50}}"#,
        r#"{"command":"stopAlgorithmExecution","data":{"execId":"2","reason":"not needed"}}"#,
        r#"{"command":"stopSubPipeline","data":{"subPipelineId":"1","reason":"user"}}"#,
        r#"{"command":"startSpan","data":{"name":"load","tags":{"k":"v"}}}"#,
        r#"{"command":"finishSpan","data":{"tags":{"k":"v"}}}"#,
        r#"{"command":"logData","data":["line 1","line 2"]}"#,
        r#"{"command":"exited"}"#,
        r#"{"command":"errorMessage","error":{"code":"Failed","message":"boom","details":{"trace":["a.py:1"]}}}"#,
        // hkube fast path.
        r#"{"command":"result","data":{"taskId":"t1","output":{"sum":3}}}"#,
        r#"{"command":"errorMessage","error":{"code":"Failed","message":"boom"},"data":{"taskId":"t1"}}"#,
        r#"{"command":"results","data":{"results":[{"taskId":"t1","output":1},{"taskId":"t2","error":{"code":"Failed","message":"boom"}}]}}"#,
    ];

    /// Parses `json` as `T`, checks the command was recognised and that re-serializing gives the
    /// same JSON value.
    fn check_roundtrip<T>(json: &str, command: impl Fn(&T) -> String)
    where
        T: Serialize + DeserializeOwned + std::fmt::Debug,
    {
        let original: Value = serde_json::from_str(json).unwrap();
        let message: T = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(command(&message), original["command"], "{json}");
        assert_eq!(
            serde_json::to_value(&message).unwrap(),
            original,
            "{json} → {message:?}"
        );
    }

    #[test]
    fn worker_examples_round_trip() {
        for json in TO_ALGORITHM_EXAMPLES {
            check_roundtrip::<ToAlgorithm>(json, |m| {
                assert!(
                    !matches!(m, ToAlgorithm::Unknown { .. }),
                    "{json} decoded as unknown"
                );
                m.command().to_owned()
            });
        }
    }

    #[test]
    fn wrapper_examples_round_trip() {
        for json in FROM_ALGORITHM_EXAMPLES {
            check_roundtrip::<FromAlgorithm>(json, |m| {
                assert!(
                    !matches!(m, FromAlgorithm::Unknown { .. }),
                    "{json} decoded as unknown"
                );
                m.command().to_owned()
            });
        }
    }

    #[test]
    fn initialize_fields_are_typed_and_unknown_fields_kept() {
        let json = json!({"command": "initialize", "data": {
            "jobId": "j1", "taskId": "t1", "nodeName": "green", "batchIndex": 2, "input": [1, 2],
            "info": {"savePaths": [], "extraData": {"a": 1}, "lastRunResult": null, "rootJobId": "j0", "x": 1},
            "kind": "stream", "stateType": "stateless", "parentNodeName": "p", "execId": "7",
            "priority": 3, "ttl": 0, "status": "active", "metrics": {"m": 1}
        }});
        let ToAlgorithm::Initialize(job) = serde_json::from_value(json.clone()).unwrap() else {
            panic!("not initialize")
        };
        assert_eq!(
            (
                job.job_id.as_str(),
                job.task_id.as_str(),
                job.node_name.as_str()
            ),
            ("j1", "t1", "green")
        );
        assert_eq!(job.batch_index, Some(2));
        assert_eq!(job.input, vec![json!(1), json!(2)]);
        assert!(job.is_stream());
        assert_eq!(job.exec_id.as_deref(), Some("7"));
        let info = job.info.as_ref().unwrap();
        assert_eq!(info.save_paths.as_deref(), Some(&[][..]));
        assert_eq!(info.root_job_id.as_deref(), Some("j0"));
        assert_eq!(info.extra["x"], json!(1));
        assert_eq!(job.extra["priority"], json!(3));
        assert_eq!(job.extra["metrics"], json!({"m": 1}));
        // Re-encoding loses nothing; `storage` and `flatInput` are always sent, as HKube does.
        // An optional field sent as `null` reads as absent.
        let mut expected = json;
        expected["data"]["info"]
            .as_object_mut()
            .unwrap()
            .remove("lastRunResult");
        expected["data"]["storage"] = json!({});
        expected["data"]["flatInput"] = Value::Null;
        assert_eq!(
            serde_json::to_value(ToAlgorithm::Initialize(job)).unwrap(),
            expected
        );
    }

    #[test]
    fn lenient_shapes_from_wrappers() {
        // (frame, expected message)
        let cases: Vec<(Value, FromAlgorithm)> = vec![
            // The BSON example of §1.4 carries `data: null`.
            (
                json!({"command": "initialized", "data": null}),
                FromAlgorithm::Initialized,
            ),
            // Java's v3 `done` carries `{}`.
            (
                json!({"command": "done", "data": {}}),
                FromAlgorithm::Done(Some(json!({}))),
            ),
            (
                json!({"command": "done", "data": null}),
                FromAlgorithm::Done(None),
            ),
            (
                json!({"command": "errorMessage", "error": "plain text"}),
                FromAlgorithm::ErrorMessage {
                    error: ErrorInfo::failed("plain text"),
                    task_id: None,
                    log: None,
                },
            ),
            (
                json!({"command": "errorMessage", "error": {"message": "m"}, "data": 5}),
                FromAlgorithm::ErrorMessage {
                    error: ErrorInfo {
                        message: "m".into(),
                        ..ErrorInfo::default()
                    },
                    task_id: None,
                    log: None,
                },
            ),
            (
                json!({"command": "servingStatus"}),
                FromAlgorithm::ServingStatus(true),
            ),
            (
                json!({"command": "fooBar", "data": [1]}),
                FromAlgorithm::Unknown {
                    command: "fooBar".into(),
                },
            ),
        ];
        for (frame, expected) in cases {
            let message: FromAlgorithm = serde_json::from_value(frame.clone()).unwrap();
            assert_eq!(message, expected, "{frame}");
        }
    }

    #[test]
    fn java_string_port_is_read_as_number() {
        let json = json!({"command": "storing", "data": {
            "storageInfo": {"path": "p", "size": 1}, "metadata": {"n": {"type": "bytearray", "size": 4}},
            "discovery": {"host": "10.0.0.1", "port": "9020"}, "taskId": "t"
        }});
        let FromAlgorithm::Storing(storing) = serde_json::from_value(json).unwrap() else {
            panic!()
        };
        assert_eq!(storing.discovery.unwrap().port, Port(9020));
        assert_eq!(storing.metadata["n"].size, Some(4));
    }

    #[test]
    fn unknown_commands_are_kept_by_name() {
        // Case 30: `fooBar` from the wrapper, `cleanup` from the worker.
        let from: FromAlgorithm = serde_json::from_str(r#"{"command":"fooBar"}"#).unwrap();
        assert_eq!(
            from,
            FromAlgorithm::Unknown {
                command: "fooBar".into()
            }
        );
        let to: ToAlgorithm = serde_json::from_str(r#"{"command":"cleanup"}"#).unwrap();
        assert_eq!(
            to,
            ToAlgorithm::Unknown {
                command: "cleanup".into()
            }
        );
        assert_eq!(
            serde_json::to_string(&to).unwrap(),
            r#"{"command":"cleanup"}"#
        );
    }

    #[test]
    fn invalid_payloads_name_the_command_and_the_field() {
        // (envelope, text the error must contain)
        let cases = [
            (
                json!({"command": "storing", "data": {"metadata": {}}}),
                "invalid `storing` payload: missing field `storageInfo`",
            ),
            // Case 23: the sidecar still gets the payload to answer `algorithmExecutionError`.
            (
                json!({"command": "startAlgorithmExecution", "data": {"algorithmName": "eval"}}),
                "invalid `startAlgorithmExecution` payload: missing field `execId`",
            ),
            (
                json!({"command": "startStoredSubPipeline", "data": {"subPipelineId": "1"}}),
                "missing field `subPipeline`",
            ),
            (
                json!({"command": "dataSourceRequest", "data": []}),
                "invalid `dataSourceRequest` payload",
            ),
            (
                json!({"command": "streamingStatistics", "data": {"a": 1}}),
                "invalid `streamingStatistics` payload",
            ),
            (
                json!({"command": "result", "data": {"output": 1}}),
                "missing field `taskId`",
            ),
            (
                json!({"command": "storing", "data": {"storageInfo": {"path": "p"}, "discovery": {"host": "h", "port": 70000}}}),
                "port",
            ),
        ];
        for (frame, expected) in cases {
            let envelope: Envelope = serde_json::from_value(frame.clone()).unwrap();
            let error = FromAlgorithm::from_envelope(envelope).unwrap_err();
            assert!(error.to_string().contains(expected), "{frame}: {error}");
            let Error::InvalidPayload { data, .. } = error else {
                panic!("{error:?}")
            };
            assert_eq!(*data, frame["data"]);
        }
        let error = ToAlgorithm::from_envelope(Envelope::bare("initialize")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid `initialize` payload: missing field `jobId`"
        );
    }

    #[test]
    fn batch_outcomes_prefer_error() {
        let outcome: TaskOutcome =
            serde_json::from_value(json!({"taskId": "t", "output": 1, "error": {"message": "m"}}))
                .unwrap();
        assert!(matches!(outcome, TaskOutcome::Failed { .. }));
        assert_eq!(outcome.task_id(), "t");
    }
}
