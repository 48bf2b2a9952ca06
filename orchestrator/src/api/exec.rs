//! `/api/v1/exec/...`: starting, stopping and querying jobs (reference §5.1).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde_json::{json, Value};

use super::{no_extra_keys, required_string, ApiError, ApiState, JsonBody};
use crate::engine::{Error as EngineError, ExecRequest, JobStatus, StopRequest};

type Answer = Result<Json<Value>, ApiError>;

fn job_id(job_id: String) -> Answer {
    Ok(Json(json!({ "jobId": job_id })))
}

pub async fn raw(State(state): State<ApiState>, JsonBody(body): JsonBody) -> Answer {
    let warnings = crate::spec::pipeline_warnings(&body);
    let started = state.engine.exec(ExecRequest::Raw(body)).await;
    log_warnings(&started, &warnings);
    job_id(started?)
}

pub async fn stored(State(state): State<ApiState>, JsonBody(body): JsonBody) -> Answer {
    let warnings = crate::spec::pipeline_warnings(&body);
    let started = state.engine.exec(ExecRequest::Stored(body)).await;
    log_warnings(&started, &warnings);
    job_id(started?)
}

/// Unknown fields are accepted, as HKube does, and logged with the job they came with (the
/// answer keeps HKube's shape); a refused request's warnings may explain its error.
fn log_warnings<E>(started: &Result<String, E>, warnings: &[String]) {
    let subject = match started {
        Ok(job) => format!("job {job}"),
        Err(_) => "refused pipeline".to_string(),
    };
    for warning in warnings {
        tracing::warn!("{subject}: {warning}");
    }
}

pub async fn algorithm(State(state): State<ApiState>, JsonBody(body): JsonBody) -> Answer {
    if body.get("debug").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::bad_request(
            "debug runs need hkubectl's debug tunnel, which is not available yet",
        ));
    }
    job_id(state.engine.exec(ExecRequest::Algorithm(body)).await?)
}

pub async fn rerun(State(state): State<ApiState>, JsonBody(body): JsonBody) -> Answer {
    no_extra_keys(&body, &["jobId"])?;
    let id = required_string(&body, "jobId")?;
    match state.engine.exec(ExecRequest::Rerun(id.clone())).await {
        // An ended job the engine no longer holds: rerun from the store's record.
        Err(EngineError::NotFound(message)) => match state.store.job_record(&id) {
            Some(record) => job_id(
                state
                    .engine
                    .exec(ExecRequest::RerunRecord(Box::new(record)))
                    .await?,
            ),
            None => Err(EngineError::NotFound(message).into()),
        },
        other => job_id(other?),
    }
}

pub async fn caching(State(state): State<ApiState>, JsonBody(body): JsonBody) -> Answer {
    no_extra_keys(&body, &["jobId", "nodeName", "debug"])?;
    let id = required_string(&body, "jobId")?;
    let node_name = required_string(&body, "nodeName")?;
    if body.get("debug").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::bad_request(
            "debug runs need hkubectl's debug tunnel, which is not available yet",
        ));
    }
    let request = ExecRequest::RunFromNode {
        job_id: id.clone(),
        node_name: node_name.clone(),
    };
    match state.engine.exec(request).await {
        // An ended job the engine no longer holds: its nodes' outputs from the store.
        Err(error) if state.engine.status(&id).await.is_err() => {
            let (Some(job), Ok(tasks)) = (state.store.ended_job(&id), state.store.job_tasks(&id))
            else {
                return Err(error.into());
            };
            let request = ExecRequest::RunFromRecord {
                record: Box::new(job.record),
                tasks,
                node_name,
            };
            job_id(state.engine.exec(request).await?)
        }
        other => job_id(other?),
    }
}

const STOPPABLE: &str = "active,pending,paused";

/// `statusToStop`: a status, a comma list, or an array of statuses.
fn statuses(value: &Value) -> Result<Vec<JobStatus>, ApiError> {
    let names: Vec<String> = match value {
        Value::String(text) => text.split(',').map(|s| s.trim().to_string()).collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| ApiError::bad_request("data.statusToStop should be string"))?,
        _ => return Err(ApiError::bad_request("data.statusToStop should be string")),
    };
    names
        .iter()
        .map(|name| {
            JobStatus::parse(name)
                .filter(|s| STOPPABLE.split(',').any(|ok| ok == s.as_str()))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "data.statusToStop should be equal to one of the allowed values ({STOPPABLE})"
                    ))
                })
        })
        .collect()
}

fn optional_string(body: &Value, field: &str) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(ApiError::bad_request(format!(
            "data.{field} should be string"
        ))),
    }
}

pub async fn stop(State(state): State<ApiState>, JsonBody(body): JsonBody) -> Answer {
    if !body.is_object() {
        return Err(ApiError::bad_request("data should be object"));
    }
    no_extra_keys(
        &body,
        &[
            "jobId",
            "pipelineName",
            "startTime",
            "statusToStop",
            "reason",
        ],
    )?;
    if body.get("startTime").is_some() {
        return Err(ApiError::bad_request(
            "stopping by startTime is not available yet: name a jobId or a pipelineName",
        ));
    }
    let request = StopRequest {
        job_id: optional_string(&body, "jobId")?,
        pipeline_name: optional_string(&body, "pipelineName")?,
        statuses: body.get("statusToStop").map(statuses).transpose()?,
        reason: optional_string(&body, "reason")?,
    };
    let stopped = state.engine.stop(request).await?;
    Ok(Json(json!({ "stoppedJobIds": stopped })))
}

pub async fn pause(State(state): State<ApiState>, JsonBody(body): JsonBody) -> Answer {
    let id = required_string(&body, "jobId")?;
    match state.engine.pause(&id).await {
        Err(EngineError::NotFound(message)) => Err(ended_refusal(&state, &id, "pause", message)),
        other => {
            other?;
            Ok(Json(json!({"message": "OK"})))
        }
    }
}

pub async fn resume(State(state): State<ApiState>, JsonBody(body): JsonBody) -> Answer {
    let id = required_string(&body, "jobId")?;
    match state.engine.resume(&id).await {
        Err(EngineError::NotFound(message)) => Err(ended_refusal(&state, &id, "resume", message)),
        other => {
            other?;
            Ok(Json(json!({"message": "OK"})))
        }
    }
}

/// Pausing or resuming a job the engine no longer holds: HKube's refusal for an ended job
/// when the store has it, else the engine's not-found.
fn ended_refusal(state: &ApiState, job_id: &str, verb: &str, not_found: String) -> ApiError {
    match state.store.ended_job(job_id) {
        Some(job) => EngineError::not_allowed(format!(
            "unable to {verb} pipeline {} because its in {} status",
            job.record.pipeline["name"].as_str().unwrap_or_default(),
            job.result["status"].as_str().unwrap_or("completed")
        ))
        .into(),
        None => EngineError::NotFound(not_found).into(),
    }
}

pub async fn status(State(state): State<ApiState>, Path(id): Path<String>) -> Answer {
    status_document(&state, &id).await.map(Json)
}

/// A job's status document, from the engine or, once it ended, the store; with `nodeTimes`
/// while the server holds its tasks.
pub(super) async fn status_document(state: &ApiState, id: &str) -> Result<Value, ApiError> {
    let mut status = match state.engine.status(id).await {
        // An ended job the engine no longer holds: its last status, as recorded (or rebuilt
        // from its result for a job recorded by an older version).
        Err(EngineError::NotFound(message)) => match state.store.job_status(id) {
            Some(status) => status,
            None => match state.store.job_result(id) {
                Some(result) => status_of_ended(&result),
                None => return Err(EngineError::NotFound(message).into()),
            },
        },
        other => other?,
    };
    // hkube's addition: per node, tasks per state and where their time went.
    if let Some(times) = super::observe::node_times(state, id) {
        status["nodeTimes"] = times;
    }
    Ok(status)
}

/// The status document of an ended job, rebuilt from its stored result.
pub(super) fn status_of_ended(result: &Value) -> Value {
    let mut status = json!({
        "jobId": result["jobId"],
        "pipeline": result["pipeline"],
        "status": result["status"],
        "level": if result["status"] == "failed" { "error" } else { "info" },
        "timestamp": result["timestamp"],
    });
    if let (Value::Object(map), Value::Object(source)) = (&mut status, result) {
        for key in ["error", "nodeName", "reason"] {
            if let Some(value) = source.get(key) {
                map.insert(key.into(), value.clone());
            }
        }
    }
    status
}

pub async fn results(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let mut result = match state.engine.result(&id).await {
        // An ended job the engine no longer holds: the stored text, passed on as it is (a
        // million-entry document is never built as a tree here).
        Err(EngineError::NotFound(message)) => {
            let text = state
                .store
                .job_result_json(&id)
                .ok_or(EngineError::NotFound(message))?;
            let module = json!(state.storage_module);
            let body = with_field(text, "storageModule", &module);
            return Ok((
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response());
        }
        other => other?,
    };
    if let Value::Object(map) = &mut result {
        map.insert("storageModule".into(), json!(state.storage_module));
    }
    Ok(Json(result).into_response())
}

/// A JSON object's text with one more field at its end (`text` holds no field `key`).
fn with_field(mut text: String, key: &str, value: &Value) -> String {
    let Some(end) = text.trim_end().strip_suffix('}').map(str::len) else {
        return text;
    };
    let empty = text[..end].trim_end().ends_with('{');
    text.truncate(end);
    if !empty {
        text.push(',');
    }
    text.push_str(&json!(key).to_string());
    text.push(':');
    text.push_str(&value.to_string());
    text.push('}');
    text
}

pub async fn pipeline(State(state): State<ApiState>, Path(id): Path<String>) -> Answer {
    match state.engine.pipeline(&id).await {
        // An ended job the engine no longer holds: the pipeline as the store recorded it, in
        // the engine's shape.
        Err(EngineError::NotFound(message)) => {
            let record = state
                .store
                .job_record(&id)
                .ok_or(EngineError::NotFound(message))?;
            let mut doc = serde_json::Map::new();
            doc.insert("jobId".into(), json!(record.job_id));
            if let Value::Object(fields) = record.pipeline {
                doc.extend(fields);
            }
            doc.insert("types".into(), json!(record.types));
            doc.insert("startTime".into(), json!(record.start_time));
            Ok(Json(Value::Object(doc)))
        }
        other => Ok(Json(other?)),
    }
}

/// `GET /exec/tree/{jobId}`: from the store when it keeps jobs (it knows every job started
/// and which job's end triggered it, also for jobs the engine no longer holds), else from the
/// engine.
pub async fn tree(State(state): State<ApiState>, Path(id): Path<String>) -> Answer {
    if let Some(record) = state.store.job_record(&id) {
        let name = record.pipeline["name"].as_str().unwrap_or_default();
        return Ok(Json(stored_tree(&state, &id, name)?));
    }
    Ok(Json(state.engine.tree(&id).await?))
}

fn stored_tree(state: &ApiState, job_id: &str, name: &str) -> Result<Value, ApiError> {
    let children = state
        .store
        .triggered_jobs(job_id)?
        .into_iter()
        .map(|(child, name)| stored_tree(state, &child, &name))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({"jobId": job_id, "name": name, "children": children}))
}

/// `GET /exec/jobs?status=a,b&raw=true`: default active and pending.
pub async fn jobs(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    let wanted = match query.get("status").filter(|s| !s.is_empty()) {
        None => vec![JobStatus::Active, JobStatus::Pending],
        Some(list) => list
            .split(',')
            .map(|name| {
                JobStatus::parse(name.trim()).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "data.status should be one of pending, active, completed, failed, stopped, paused (got {name})"
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let mut jobs = state.engine.jobs(Some(wanted.clone())).await?;
    // Ended jobs the engine no longer holds are in the store.
    if wanted.iter().any(|status| status.is_final()) {
        let held: std::collections::HashSet<String> =
            jobs.iter().map(|job| job.job_id.clone()).collect();
        for ended in state.store.ended_jobs()? {
            let status = ended.result["status"]
                .as_str()
                .and_then(JobStatus::parse)
                .unwrap_or(JobStatus::Failed);
            if wanted.contains(&status) && !held.contains(&ended.record.job_id) {
                jobs.push(crate::engine::JobSummary {
                    pipeline_name: ended.record.pipeline["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    job_id: ended.record.job_id,
                    status,
                    types: Vec::new(),
                });
            }
        }
    }
    if query.get("raw").is_some_and(|raw| raw == "true") {
        let ids: Vec<&str> = jobs.iter().map(|job| job.job_id.as_str()).collect();
        return Ok(Json(json!(ids)));
    }
    let list: Vec<Value> = jobs
        .iter()
        .map(|job| {
            json!({"jobId": job.job_id, "status": job.status.as_str(), "pipelineName": job.pipeline_name})
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

/// `GET /exec/pipeline/list`: `{jobId, ...pipeline}` of every unfinished job.
pub async fn pipeline_list(State(state): State<ApiState>) -> Answer {
    let unfinished = vec![JobStatus::Pending, JobStatus::Active, JobStatus::Paused];
    let mut list = Vec::new();
    for job in state.engine.jobs(Some(unfinished)).await? {
        // A job may be forgotten between the two questions; it is simply not listed.
        if let Ok(pipeline) = state.engine.pipeline(&job.job_id).await {
            list.push(pipeline);
        }
    }
    Ok(Json(Value::Array(list)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_is_added_to_the_end_of_an_object_text() {
        let module = json!("storage");
        let text = with_field(
            r#"{"jobId":"j","data":[{"result":"}"}]} "#.into(),
            "m",
            &module,
        );
        let value: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(value["m"], "storage");
        assert_eq!(value["data"][0]["result"], "}");
        let empty: Value =
            serde_json::from_str(&with_field("{ }".into(), "m", &module)).expect("JSON");
        assert_eq!(empty, json!({"m": "storage"}));
        assert_eq!(with_field("[1]".into(), "m", &module), "[1]");
    }
}
