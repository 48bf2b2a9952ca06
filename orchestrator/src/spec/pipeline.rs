//! The pipeline descriptor (reference §1) as typed values, with HKube's defaults filled in.
//!
//! A [`Pipeline`] is only ever made by [`super::parse_pipeline`] and friends, which run HKube's
//! schema checks first: the types here hold values that already passed them. Unknown keys are
//! kept (`extra`) and written back, as HKube accepts and stores them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pipeline {
    pub name: String,
    #[serde(default)]
    pub kind: PipelineKind,
    #[serde(default = "default_experiment")]
    pub experiment_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub nodes: Vec<Node>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_input: Option<Value>,
    #[serde(default)]
    pub options: Options,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<Webhooks>,
    #[serde(default = "default_priority")]
    pub priority: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Triggers>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streaming: Option<Streaming>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<Edge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_job_id: Option<String>,
    /// Keys HKube's schema does not name; accepted and kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Pipeline {
    /// Whether this pipeline runs when `parent` completes (`triggers.pipelines`).
    pub fn is_triggered_by(&self, parent: &str) -> bool {
        self.triggers
            .as_ref()
            .is_some_and(|t| t.pipelines.iter().any(|name| name == parent))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PipelineKind {
    #[default]
    Batch,
    Stream,
}

impl PipelineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineKind::Batch => "batch",
            PipelineKind::Stream => "stream",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub node_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm_name: Option<String>,
    /// The raw input items; [`super::InputExpr::parse`] gives their meaning.
    #[serde(default)]
    pub input: Vec<Value>,
    #[serde(default)]
    pub kind: NodeKind,
    /// Per-task time limit in seconds from the algorithm's start; `None` or 0: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_operation: Option<BatchOperation>,
    /// HKube's engine reads the plural; its schema names the singular. Either one set to `true`
    /// puts the node in the results (docs/semantics.md, Q1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_in_results: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_in_result: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_type: Option<StateType>,
    #[serde(default)]
    pub min_stateless_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_stateless_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Value>,
    /// hkube's result cache: a task whose algorithm version already ran on the same input
    /// takes that result instead of running (docs/semantics.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Node {
    pub fn in_results_flag(&self) -> bool {
        self.include_in_results == Some(true) || self.include_in_result == Some(true)
    }

    pub fn batch_operation(&self) -> BatchOperation {
        self.batch_operation.unwrap_or_default()
    }

    /// The name of the stored pipeline a `kind: pipeline` node inlines (`spec.name`).
    pub fn spec_name(&self) -> Option<&str> {
        self.spec.as_ref()?.get("name")?.as_str()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeKind {
    #[default]
    Algorithm,
    Pipeline,
    Debug,
    DataSource,
    Gateway,
    Output,
    HyperparamsTuner,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BatchOperation {
    #[default]
    Indexed,
    Cartesian,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StateType {
    Stateless,
    Stateful,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    #[serde(default)]
    pub policy: RetryPolicy,
    #[serde(default = "default_retry_limit")]
    pub limit: u32,
}

impl Default for Retry {
    /// What a node without `retry` gets: HKube's worker default policy and queue default limit.
    fn default() -> Self {
        Retry {
            policy: RetryPolicy::OnCrash,
            limit: default_retry_limit(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetryPolicy {
    Never,
    Always,
    OnError,
    #[default]
    OnCrash,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Options {
    /// Seconds from submission; 0 disables.
    #[serde(default = "default_ttl")]
    pub ttl: u64,
    /// Seconds from the moment the job became active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_ttl: Option<u64>,
    #[serde(default = "default_batch_tolerance")]
    pub batch_tolerance: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_pipelines: Option<ConcurrentPipelines>,
    #[serde(default)]
    pub progress_verbosity_level: Level,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub debug_override: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ttl: default_ttl(),
            active_ttl: None,
            batch_tolerance: default_batch_tolerance(),
            concurrent_pipelines: None,
            progress_verbosity_level: Level::Info,
            debug_override: Vec::new(),
            extra: Map::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrentPipelines {
    pub amount: u32,
    #[serde(default = "default_true")]
    pub reject_on_failure: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Level {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
    Critical,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhooks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Triggers {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pipelines: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<Cron>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cron {
    pub pattern: String,
    #[serde(default)]
    pub enabled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Streaming {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_flow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    pub source: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
}

fn default_experiment() -> String {
    "main".to_string()
}
fn default_priority() -> u8 {
    3
}
fn default_ttl() -> u64 {
    3600
}
fn default_batch_tolerance() -> u32 {
    80
}
fn default_retry_limit() -> u32 {
    3
}
fn default_true() -> bool {
    true
}
