//! The task link: the small protocol between the orchestrator and a worker's sidecar.
//!
//! The orchestrator hands tasks to the sidecar and the sidecar reports how they went, and relays
//! the algorithm's code-API requests. For the local executor both ends live in one process and
//! the link is a pair of channels; for containers the same messages travel as JSON over a
//! network connection. Only these types cross the link.
//!
//! Versioned by [`LINK_VERSION`]; a peer with another version is refused.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const LINK_VERSION: u32 = 1;

/// One task for the algorithm: what it receives as `args` (HKube's `initialize` payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    // The names a task shares with its job and node are shared, not copied: a batch of
    // 200,000 wasm items would otherwise allocate five strings per item on the pool's thread
    // and free them wherever the last holder of the assignment drops it.
    pub job_id: Arc<str>,
    pub task_id: String,
    pub node_name: Arc<str>,
    pub algorithm_name: Arc<str>,
    pub pipeline_name: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_index: Option<u32>,
    /// The resolved input array.
    pub input: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_data: Option<Arc<Value>>,
    pub root_job_id: Arc<str>,
    /// For a code-API algorithm execution: the node that asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_node_name: Option<String>,
}

impl Assignment {
    /// The `initialize` / `run` payload HKube's wrappers expect (reference §2.4, §9.1).
    pub fn to_job_data(&self) -> Value {
        let mut data = serde_json::json!({
            "jobId": self.job_id,
            "taskId": self.task_id,
            "nodeName": self.node_name,
            "algorithmName": self.algorithm_name,
            "pipelineName": self.pipeline_name,
            "input": self.input,
            "kind": "batch",
            "info": {
                "rootJobId": self.root_job_id,
                "extraData": self.extra_data,
                "savePaths": [],
            },
        });
        if let Some(map) = data.as_object_mut() {
            if let Some(index) = self.batch_index {
                map.insert("batchIndex".into(), Value::from(index));
            }
            if let Some(parent) = &self.parent_node_name {
                map.insert("parentNodeName".into(), Value::from(parent.as_str()));
            }
        }
        data
    }
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "kind"
)]
pub enum Outcome {
    /// The algorithm returned this output.
    Output { output: Value },
    /// The algorithm raised an error: HKube's `message` and `details` (a traceback or stack
    /// as text), and what hkube's runtimes add: the exception's type and where in the user's
    /// code it was raised (`main.py:5`).
    Error {
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        details: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exception: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        location: Option<String>,
    },
    /// The task stopped on request.
    Stopped,
    /// The algorithm's process or connection was lost: why.
    Crashed { reason: String },
}

impl Outcome {
    /// An error with only a message (the sidecar's own failures).
    pub fn error(message: impl Into<String>) -> Outcome {
        Outcome::Error {
            message: message.into(),
            details: None,
            exception: None,
            location: None,
        }
    }

    /// An error as the user reads it in the task's error, the job's status and the task log:
    /// a first line with the exception's type, its message and where it was raised
    /// (`KeyError: 'missing-key' (at main.py:5)`), then the traceback. `None` for other ends.
    pub fn error_text(&self) -> Option<String> {
        let Outcome::Error {
            message,
            details,
            exception,
            location,
        } = self
        else {
            return None;
        };
        let mut text = match exception.as_deref().filter(|e| !e.is_empty()) {
            // Java's `toString()` (HKube's message) and a load error's text already name it.
            Some(exception) if !message.contains(exception) => {
                if message.is_empty() {
                    exception.to_string()
                } else {
                    format!("{exception}: {message}")
                }
            }
            _ => message.clone(),
        };
        if let Some(location) = location.as_deref().filter(|l| !l.is_empty()) {
            text.push_str(&format!(" (at {location})"));
        }
        if let Some(details) = details.as_deref().map(str::trim_end) {
            if !details.is_empty() {
                text.push('\n');
                text.push_str(details);
            }
        }
        Some(text)
    }
}

/// Code-API requests from a running algorithm (reference wrapper-protocol §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "kind"
)]
pub enum CodeApiRequest {
    StartAlgorithm {
        algorithm_name: String,
        input: Vec<Value>,
        include_result: bool,
    },
    StartStoredSubPipeline {
        name: String,
        flow_input: Option<Value>,
        include_result: bool,
    },
    StartRawSubPipeline {
        pipeline: Value,
        include_result: bool,
    },
    /// Stop the sub-pipelines and algorithm executions the task started (HKube's
    /// `stopSubPipeline` / `stopAlgorithmExecution`). No reply: each stopped request is
    /// answered as stopped (or failed with the reason).
    Stop { reason: String },
}

/// The answer to a code-API request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "kind"
)]
pub enum CodeApiReply {
    Done {
        response: Value,
    },
    Error {
        error: String,
    },
    /// A sub-pipeline was stopped.
    Stopped {
        reason: String,
    },
}

/// From the orchestrator to a sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "type"
)]
pub enum ToSidecar {
    /// Run these tasks, in order. Several at once let the sidecar batch them to the algorithm.
    /// Shared with the pool, which keeps each task while it runs: the message is never a copy.
    Run { tasks: Vec<Arc<Assignment>> },
    /// Stop a task (queued or running).
    Stop { task_id: String, force: bool },
    CodeApiReply {
        request_id: u64,
        reply: CodeApiReply,
    },
    /// Let the algorithm clean up and end.
    Exit { exit_code: i32 },
}

/// From a sidecar to the orchestrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "type"
)]
pub enum FromSidecar {
    /// The algorithm connected: the worker can take tasks.
    Ready,
    Started {
        task_id: String,
    },
    Progress {
        task_id: String,
        progress: f64,
    },
    /// What the task printed, sent before its outcome (hkube's runtimes only).
    Log {
        task_id: String,
        text: String,
    },
    Finished {
        task_id: String,
        outcome: Outcome,
    },
    CodeApi {
        task_id: String,
        request_id: u64,
        request: CodeApiRequest,
    },
    /// The sidecar is done: the algorithm disconnected or exited, or it never connected.
    Gone {
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The error text from (message, details, type, location).
    fn check_error_text(
        message: &str,
        details: Option<&str>,
        exception: Option<&str>,
        location: Option<&str>,
        expected: &str,
    ) {
        let outcome = Outcome::Error {
            message: message.into(),
            details: details.map(Into::into),
            exception: exception.map(Into::into),
            location: location.map(Into::into),
        };
        assert_eq!(outcome.error_text().as_deref(), Some(expected));
    }

    #[test]
    fn error_texts_name_type_message_place_then_traceback() {
        // hkube's Python runtime: HKube's message is only str(exc).
        check_error_text(
            "'missing-key'",
            Some("Traceback (most recent call last):\n  File \"main.py\", line 2\nKeyError: 'missing-key'\n"),
            Some("KeyError"),
            Some("main.py:2"),
            "KeyError: 'missing-key' (at main.py:2)\nTraceback (most recent call last):\n  File \"main.py\", line 2\nKeyError: 'missing-key'",
        );
        // Java's message is the exception's toString(): the type is not repeated.
        check_error_text(
            "java.lang.IllegalStateException: no input",
            None,
            Some("java.lang.IllegalStateException"),
            Some("Fails.java:10"),
            "java.lang.IllegalStateException: no input (at Fails.java:10)",
        );
        // HKube's own wrappers send a message only.
        check_error_text("division by zero", None, None, None, "division by zero");
        check_error_text("", Some("  "), Some("StopIteration"), None, "StopIteration");
        assert_eq!(Outcome::Stopped.error_text(), None);
    }

    #[test]
    fn messages_round_trip_as_json() {
        let run = ToSidecar::Run {
            tasks: vec![Arc::new(Assignment {
                job_id: "j".into(),
                task_id: "t".into(),
                node_name: "A".into(),
                algorithm_name: "alg".into(),
                pipeline_name: "p".into(),
                batch_index: Some(2),
                input: vec![json!(1)],
                extra_data: None,
                root_job_id: "j".into(),
                parent_node_name: None,
            })],
        };
        let text = serde_json::to_string(&run).unwrap();
        assert!(
            text.starts_with(r#"{"type":"run","tasks":[{"jobId":"j""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<ToSidecar>(&text).unwrap(), run);
        let finished = FromSidecar::Finished {
            task_id: "t".into(),
            outcome: Outcome::error("boom"),
        };
        let text = serde_json::to_string(&finished).unwrap();
        assert_eq!(
            text,
            r#"{"type":"finished","taskId":"t","outcome":{"kind":"error","message":"boom"}}"#
        );
        assert_eq!(
            serde_json::from_str::<FromSidecar>(&text).unwrap(),
            finished
        );
    }

    #[test]
    fn job_data_has_hkube_fields() {
        let assignment = Assignment {
            job_id: "j".into(),
            task_id: "t".into(),
            node_name: "A".into(),
            algorithm_name: "alg".into(),
            pipeline_name: "p".into(),
            batch_index: Some(3),
            input: vec![json!([1, 2])],
            extra_data: Some(Arc::new(json!({"x": 1}))),
            root_job_id: "r".into(),
            parent_node_name: None,
        };
        let data = assignment.to_job_data();
        assert_eq!(data["batchIndex"], 3);
        assert_eq!(data["info"]["rootJobId"], "r");
        assert_eq!(data["info"]["extraData"], json!({"x": 1}));
        assert_eq!(data["input"], json!([[1, 2]]));
    }
}
