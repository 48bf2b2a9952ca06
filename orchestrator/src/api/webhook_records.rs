//! `GET /api/v1/webhooks/status|results|list/{jobId}` (reference §5.8): the records of a job's
//! webhook deliveries, as [`crate::notify::webhooks`] kept them.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, ApiState};

type Answer = Result<Json<Value>, ApiError>;

/// The job's records of one kind, oldest first.
fn records(state: &ApiState, job_id: &str, kind: &str) -> Result<Vec<Value>, ApiError> {
    Ok(state
        .store
        .webhook_records(job_id)?
        .into_iter()
        .filter(|(k, _)| k == kind)
        .map(|(_, record)| record)
        .collect())
}

fn latest(state: &ApiState, job_id: &str, kind: &str) -> Result<Option<Value>, ApiError> {
    Ok(records(state, job_id, kind)?.pop())
}

fn not_found(job_id: &str) -> ApiError {
    ApiError::NotFound(format!("webhook {job_id} Not Found"))
}

/// `GET /webhooks/status/{jobId}`: the latest progress delivery.
pub async fn status(State(state): State<ApiState>, Path(job_id): Path<String>) -> Answer {
    latest(&state, &job_id, "progress")?
        .map(Json)
        .ok_or_else(|| not_found(&job_id))
}

/// `GET /webhooks/results/{jobId}`: the result delivery.
pub async fn results(State(state): State<ApiState>, Path(job_id): Path<String>) -> Answer {
    latest(&state, &job_id, "result")?
        .map(Json)
        .ok_or_else(|| not_found(&job_id))
}

/// `GET /webhooks/list/{jobId}`: `{jobId, result, progress}` (the latest of each), and
/// hkube's `deliveries`: every delivery, oldest first.
pub async fn list(State(state): State<ApiState>, Path(job_id): Path<String>) -> Answer {
    let all = state.store.webhook_records(&job_id)?;
    if all.is_empty() {
        return Err(not_found(&job_id));
    }
    let last_of = |kind: &str| {
        all.iter()
            .rev()
            .find(|(k, _)| k == kind)
            .map(|(_, record)| record.clone())
            .unwrap_or(Value::Null)
    };
    Ok(Json(json!({
        "jobId": job_id,
        "result": last_of("result"),
        "progress": last_of("progress"),
        "deliveries": all.iter().map(|(kind, record)| {
            let mut record = record.clone();
            record["type"] = json!(kind);
            record
        }).collect::<Vec<_>>(),
    })))
}
