//! `GET /api/v1/exec/logs/{jobId}`: what a job's tasks printed, as text, one line per line
//! printed, each prefixed `[<nodeName> <taskId>] `. `?node=` keeps one node's tasks,
//! `?taskId=` one task; `?follow=true` keeps the answer open (chunked) and streams new lines
//! until the job has ended.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;

use super::{ApiError, ApiState};
use crate::engine::{Error as EngineError, TaskId};

/// How often a follower checks whether the job has ended.
const END_CHECK: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
struct Filter {
    node: Option<String>,
    task: Option<TaskId>,
}

impl Filter {
    fn keeps(&self, task: TaskId, node: Option<&str>) -> bool {
        self.task.is_none_or(|wanted| wanted == task)
            && self
                .node
                .as_deref()
                .is_none_or(|wanted| node == Some(wanted))
    }
}

pub async fn logs(
    State(state): State<ApiState>,
    Path(job_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let task = match query.get("taskId") {
        None => None,
        Some(text) => Some(TaskId::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "taskId {text:?} is not a task id (8 characters of 0-9 and a-z; GET /api/v1/exec/tasks/{job_id} lists them)"
            ))
        })?),
    };
    let follow = match query.get("follow").map(String::as_str) {
        None | Some("false") => false,
        Some("true" | "") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "follow must be true or false, not {other:?}"
            )))
        }
    };
    let filter = Filter {
        node: query.get("node").cloned().filter(|n| !n.is_empty()),
        task,
    };
    let ended = match job_ended(&state, &job_id).await {
        Some(ended) => ended,
        None => {
            return Err(EngineError::NotFound(format!("jobId {job_id} Not Found")).into());
        }
    };
    // Subscribed before the texts are read: a line printed meanwhile is not lost (it may show
    // twice).
    let mut lines = state.telemetry.logs.follow();
    let mut text = String::new();
    // Only tasks that printed are read (a 10,000-task batch has few of those).
    let printed: std::collections::HashSet<TaskId> = state
        .telemetry
        .logs
        .tasks_with_logs(&job_id)
        .into_iter()
        .map(|(task, _)| task)
        .collect();
    for (task, node) in tasks_of(&state, &job_id) {
        if !printed.contains(&task) || !filter.keeps(task, node.as_deref()) {
            continue;
        }
        if let Some(log) = state.telemetry.logs.text(&job_id, task) {
            let prefix = format!("[{} {task}] ", node.as_deref().unwrap_or("?"));
            for line in log.lines() {
                text.push_str(&prefix);
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    let headers = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    if !follow || ended {
        return Ok((headers, text).into_response());
    }
    let job: Arc<str> = job_id.into();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        // A slow reader is waited for, not dropped lines; a gone one ends the loop.
        let send = |text: String| {
            let tx = tx.clone();
            async move { tx.send(Bytes::from(text)).await.is_ok() }
        };
        if !text.is_empty() && !send(text).await {
            return;
        }
        let mut check = tokio::time::interval(END_CHECK);
        loop {
            tokio::select! {
                line = lines.recv() => match line {
                    Ok(line) => {
                        if line.job_id != job || !filter.keeps(line.task_id, Some(&line.node_name)) {
                            continue;
                        }
                        if !send(format!("[{} {}] {}\n", line.node_name, line.task_id, line.text)).await {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        if !send(format!("[hkube: {missed} lines of this server's tasks were missed: the reader fell behind]\n")).await {
                            return;
                        }
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = check.tick() => {
                    if job_ended(&state, &job).await != Some(false) {
                        // The lines already printed still go out.
                        while let Ok(line) = lines.try_recv() {
                            if line.job_id == job
                                && filter.keeps(line.task_id, Some(&line.node_name))
                                && !send(format!("[{} {}] {}\n", line.node_name, line.task_id, line.text)).await
                            {
                                return;
                            }
                        }
                        return;
                    }
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    Ok((headers, Body::from_stream(stream)).into_response())
}

/// Whether the job has ended; `None` when no one knows it.
pub(super) async fn job_ended(state: &ApiState, job_id: &str) -> Option<bool> {
    match state.engine.status(job_id).await {
        Ok(doc) => Some(
            doc["status"]
                .as_str()
                .and_then(crate::engine::JobStatus::parse)
                .is_some_and(|s| s.is_final()),
        ),
        Err(_) => (state.store.job_status(job_id).is_some()
            || state.store.job_result(job_id).is_some())
        .then_some(true),
    }
}

/// A job's tasks with their nodes: the board's (in queueing order), the journal's, then any
/// log file of a task neither knows.
fn tasks_of(state: &ApiState, job_id: &str) -> Vec<(TaskId, Option<Arc<str>>)> {
    let mut tasks: Vec<(TaskId, Option<Arc<str>>)> = state
        .telemetry
        .board()
        .task_ids(job_id, None)
        .into_iter()
        .map(|(task, node)| (task, Some(node)))
        .collect();
    if tasks.is_empty() {
        if let Ok(records) = state.store.job_tasks(job_id) {
            for record in records {
                if let Some(task) = TaskId::parse(&record.task_id) {
                    tasks.push((task, Some(record.node.as_str().into())));
                }
            }
        }
    }
    let known: std::collections::HashSet<TaskId> = tasks.iter().map(|(task, _)| *task).collect();
    for (task, node) in state.telemetry.logs.tasks_with_logs(job_id) {
        if !known.contains(&task) {
            tasks.push((task, node));
        }
    }
    tasks
}
