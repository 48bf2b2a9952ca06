//! The code API's relay: an algorithm's requests (start an algorithm, start a sub-pipeline,
//! stop them) go to the engine through its task's reporter, and the answers back to its
//! sidecar. Every backend's workers use it.

use serde_json::Value;
use tokio::sync::mpsc;
use wrapper::link::{CodeApiReply, CodeApiRequest, ToSidecar};

use crate::engine::{SubPipeline, TaskOutcome, TaskReporter};

/// Carries out one request of a running task; the reply goes to its sidecar.
pub(crate) fn relay(
    reporter: TaskReporter,
    request_id: u64,
    request: CodeApiRequest,
    to_sidecar: mpsc::UnboundedSender<ToSidecar>,
) {
    if let CodeApiRequest::Stop { reason } = request {
        reporter.stop_children(reason);
        return;
    }
    tokio::spawn(async move {
        let reply = code_api(reporter, request).await;
        let _ = to_sidecar.send(ToSidecar::CodeApiReply { request_id, reply });
    });
}

/// Carries out a code-API request through the engine and turns the answer into a reply.
async fn code_api(reporter: TaskReporter, request: CodeApiRequest) -> CodeApiReply {
    match request {
        CodeApiRequest::StartAlgorithm {
            algorithm_name,
            input,
            include_result,
        } => match reporter.start_algorithm(algorithm_name, input).await {
            Ok(TaskOutcome::Succeeded(output)) => CodeApiReply::Done {
                response: if include_result { output } else { Value::Null },
            },
            Ok(TaskOutcome::Failed(error) | TaskOutcome::Crashed(error)) => {
                CodeApiReply::Error { error }
            }
            Err(_) => CodeApiReply::Error {
                error: "the engine has shut down".into(),
            },
        },
        CodeApiRequest::StartStoredSubPipeline {
            name,
            flow_input,
            include_result,
        } => {
            sub_pipeline(
                reporter,
                SubPipeline::Stored { name, flow_input },
                include_result,
            )
            .await
        }
        CodeApiRequest::StartRawSubPipeline {
            pipeline,
            include_result,
        } => sub_pipeline(reporter, SubPipeline::Raw(pipeline), include_result).await,
        // Handled before a reply is awaited; nothing to answer.
        CodeApiRequest::Stop { .. } => CodeApiReply::Error {
            error: "a stop has no answer".into(),
        },
    }
}

/// Storage v1 semantics: the reply carries the sub-pipeline's results themselves.
async fn sub_pipeline(
    reporter: TaskReporter,
    request: SubPipeline,
    include_result: bool,
) -> CodeApiReply {
    match reporter.start_sub_pipeline(request).await {
        Ok(Ok(result)) => match result.get("status").and_then(Value::as_str) {
            Some("completed") => CodeApiReply::Done {
                response: if include_result {
                    result.get("data").cloned().unwrap_or(Value::Null)
                } else {
                    Value::Null
                },
            },
            Some("stopped") => CodeApiReply::Stopped {
                reason: result
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("stopped")
                    .to_string(),
            },
            _ => CodeApiReply::Error {
                error: result
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("the sub-pipeline failed")
                    .to_string(),
            },
        },
        Ok(Err(error)) => CodeApiReply::Error {
            error: error.to_string(),
        },
        Err(_) => CodeApiReply::Error {
            error: "the engine has shut down".into(),
        },
    }
}
