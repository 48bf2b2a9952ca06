//! What the dashboard and monitoring read: a job's tasks with their timing
//! (`/exec/tasks/{jobId}`), `GET /metrics`, and the server-sent event streams the web UI
//! follows (`/events/jobs`, `/events/jobs/{jobId}`).
//!
//! The streams are coalesced: each looks at its subject at most every [`JOB_TICK`] (a job) or
//! [`LIST_TICK`] (the list) and sends an event only when what it shows changed, with counts
//! per node, never one event per task: a 10,000-task batch costs a browser a few small events
//! a second.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{exec, ApiError, ApiState};
use crate::engine::{Error as EngineError, JobStatus};
use crate::telemetry::metrics;

/// How often a job's stream looks at the job.
const JOB_TICK: Duration = Duration::from_millis(400);
/// How often the jobs stream looks at the list.
const LIST_TICK: Duration = Duration::from_millis(1000);
/// Tasks one page of `/exec/tasks` lists at most.
const MAX_PAGE: usize = 10_000;

/// `GET /exec/tasks/{jobId}?node=&offset=&limit=`: the job's tasks in queueing order, with
/// their ids and their queued / placed / started / done times.
pub async fn tasks(
    State(state): State<ApiState>,
    Path(job_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let number = |name: &str, default: usize, max: usize| -> Result<usize, ApiError> {
        match query.get(name) {
            None => Ok(default),
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{name} must be a whole number from 0 to {max}, not {text:?}"
                    ))
                }),
        }
    };
    let offset = number("offset", 0, usize::MAX)?;
    let limit = number("limit", 1000, MAX_PAGE)?;
    let node = query.get("node").map(String::as_str);
    let listed = state.telemetry.board().tasks(&job_id, node, offset, limit);
    match listed {
        Some((tasks, total)) => Ok(Json(json!({
            "jobId": job_id,
            "total": total,
            "offset": offset,
            "tasks": tasks,
        }))),
        // A job the server knows but whose tasks it no longer holds (ended before a restart,
        // or beyond the latest ended jobs): its recorded tasks, without times.
        None => {
            if super::logs::job_ended(&state, &job_id).await.is_none() {
                return Err(EngineError::NotFound(format!("jobId {job_id} Not Found")).into());
            }
            let recorded: Vec<Value> = state
                .store
                .job_tasks(&job_id)
                .unwrap_or_default()
                .into_iter()
                .filter(|t| node.is_none_or(|n| t.node == n))
                .map(|t| {
                    json!({
                        "taskId": t.task_id,
                        "nodeName": t.node,
                        "batchIndex": (t.batch_index > 0).then_some(t.batch_index),
                        "status": match t.outcome {
                            crate::engine::RecordedOutcome::Succeeded { .. } => "succeeded",
                            crate::engine::RecordedOutcome::Failed { .. } => "failed",
                        },
                    })
                })
                .collect();
            let total = recorded.len();
            let page: Vec<Value> = recorded.into_iter().skip(offset).take(limit).collect();
            Ok(Json(json!({
                "jobId": job_id, "total": total, "offset": offset, "tasks": page,
            })))
        }
    }
}

/// `nodeTimes` of the status document: per node, task counts per state and where their time
/// went (absent when the server no longer holds the job's tasks).
pub(super) fn node_times(state: &ApiState, job_id: &str) -> Option<Value> {
    let nodes = state.telemetry.board().node_times(job_id)?;
    serde_json::to_value(nodes).ok()
}

/// `GET /metrics`: Prometheus's text format.
pub async fn metrics(State(state): State<ApiState>) -> Response {
    state.telemetry.publish_task_counts();
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(),
    )
        .into_response()
}

/// A job as its page shows it: the status document (with `nodeTimes`), and the results once
/// it ended.
async fn job_view(state: &ApiState, job_id: &str) -> Result<(Value, bool), ApiError> {
    let status = exec::status_document(state, job_id).await?;
    let ended = status["status"]
        .as_str()
        .and_then(JobStatus::parse)
        .is_some_and(JobStatus::is_final);
    Ok((status, ended))
}

/// `GET /events/jobs/{jobId}`: `status` events (the status document with `nodeTimes`) when
/// the job changes, at most every [`JOB_TICK`]; the last one is sent when the job has ended,
/// then the stream ends.
pub async fn job_events(
    State(state): State<ApiState>,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    // A job no one knows is a 404, not an empty stream.
    let first = job_view(&state, &job_id).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(4);
    tokio::spawn(async move {
        let mut last = String::new();
        let mut view = Some(first);
        let mut tick = tokio::time::interval(JOB_TICK);
        loop {
            let (status, ended) = match view.take() {
                Some(view) => view,
                None => {
                    tick.tick().await;
                    match job_view(&state, &job_id).await {
                        Ok(view) => view,
                        Err(_) => return,
                    }
                }
            };
            let data = status.to_string();
            if data != last {
                if tx
                    .send(Event::default().event("status").data(&data))
                    .await
                    .is_err()
                {
                    return;
                }
                last = data;
            }
            if ended {
                return;
            }
        }
    });
    Ok(sse(rx))
}

/// `GET /events/jobs`: `jobs` events with the unfinished jobs (`[{jobId, pipeline, status,
/// progress}]`) whenever that list or a progress changes, at most every [`LIST_TICK`].
pub async fn jobs_events(State(state): State<ApiState>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(4);
    tokio::spawn(async move {
        let mut last = String::new();
        let mut tick = tokio::time::interval(LIST_TICK);
        loop {
            tick.tick().await;
            let Ok(jobs) = state.engine.jobs(None).await else {
                return;
            };
            let mut list = Vec::with_capacity(jobs.len());
            for job in jobs {
                let progress = state
                    .engine
                    .status(&job.job_id)
                    .await
                    .ok()
                    .and_then(|doc| doc["data"]["progress"].as_f64());
                list.push(json!({
                    "jobId": job.job_id,
                    "pipeline": job.pipeline_name,
                    "status": job.status.as_str(),
                    "types": job.types,
                    "progress": progress,
                }));
            }
            let data = Value::Array(list).to_string();
            if data != last {
                if tx
                    .send(Event::default().event("jobs").data(&data))
                    .await
                    .is_err()
                {
                    return;
                }
                last = data;
            }
        }
    });
    sse(rx)
}

fn sse(rx: tokio::sync::mpsc::Receiver<Event>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
