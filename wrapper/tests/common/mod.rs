//! What the sidecar's integration tests share.

use serde_json::Value;
use wrapper::link::Assignment;

/// A task of job `job1`, node `A`, algorithm `alg`.
pub fn task(id: &str, input: Vec<Value>) -> std::sync::Arc<Assignment> {
    std::sync::Arc::new(Assignment {
        job_id: "job1".into(),
        task_id: id.into(),
        node_name: "A".into(),
        algorithm_name: "alg".into(),
        pipeline_name: "p".into(),
        batch_index: None,
        input,
        extra_data: None,
        root_job_id: "job1".into(),
        parent_node_name: None,
    })
}
