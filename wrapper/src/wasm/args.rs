//! The args object a module reads on stdin: what Python's `start(args)` receives.

use serde_json::Value;

use crate::link::Assignment;

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Args<'a> {
    pub input: &'a [Value],
    pub job_id: &'a str,
    pub task_id: &'a str,
    pub node_name: &'a str,
    pub algorithm_name: &'a str,
    pub pipeline_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_data: Option<&'a Value>,
}

impl Args<'_> {
    /// The JSON bytes for stdin. Values that came from JSON serialize again; an empty stdin
    /// would fail the module.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The args of a task that came over the task link.
pub fn of_assignment(task: &Assignment) -> Vec<u8> {
    Args {
        input: &task.input,
        job_id: &task.job_id,
        task_id: &task.task_id,
        node_name: &task.node_name,
        algorithm_name: &task.algorithm_name,
        pipeline_name: &task.pipeline_name,
        batch_index: task.batch_index,
        extra_data: task.extra_data.as_deref(),
    }
    .to_json()
}
