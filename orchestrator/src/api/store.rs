//! `/api/v1/store/...`: stored pipelines and algorithms (reference §5.3, §5.4).
//!
//! Validation is `engine::submit::validate_for_store` for pipelines and
//! `spec::parse_algorithm` for algorithms; the [`Store`](crate::store::Store) only keeps what
//! passed.

use std::collections::HashMap;

use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::Json;
use serde_json::{json, Map, Value};

use super::{ApiError, ApiState, JsonBody};
use crate::engine::{submit, JobStatus, StopRequest};
use crate::spec::{self, Algorithm, Pipeline};

type Answer = Result<Json<Value>, ApiError>;

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::Internal(e.to_string()))
}

// ---- pipelines ----

pub async fn list_pipelines(State(state): State<ApiState>) -> Answer {
    Ok(Json(to_json(&state.store.pipelines()?)?))
}

pub async fn get_pipeline(State(state): State<ApiState>, Path(name): Path<String>) -> Answer {
    let pipeline = state
        .store
        .pipeline(&name)
        .ok_or_else(|| ApiError::NotFound(format!("pipeline {name} Not Found")))?;
    Ok(Json(to_json(&pipeline)?))
}

fn validate_pipeline(state: &ApiState, body: Value) -> Result<Pipeline, ApiError> {
    let catalog: &dyn crate::engine::Catalog = &*state.store;
    Ok(submit::validate_for_store(body, catalog)?)
}

/// `POST /store/pipelines`: 201 and the pipeline with its defaults; 409 when it exists.
pub async fn create_pipeline(
    State(state): State<ApiState>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if body.is_array() {
        return Err(ApiError::bad_request(
            "storing an array of pipelines is not available yet: send one pipeline per request",
        ));
    }
    let pipeline = validate_pipeline(&state, body)?;
    let stored = to_json(&pipeline)?;
    state.store.create_pipeline(pipeline)?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// `PUT /store/pipelines` (HKube's form: the name is in the body).
pub async fn replace_pipeline(State(state): State<ApiState>, JsonBody(body): JsonBody) -> Answer {
    let pipeline = validate_pipeline(&state, body)?;
    let stored = to_json(&pipeline)?;
    state.store.replace_pipeline(pipeline)?;
    Ok(Json(stored))
}

/// `PUT /store/pipelines/{name}`: the body's name, when given, must be the path's.
pub async fn replace_named_pipeline(
    state: State<ApiState>,
    Path(name): Path<String>,
    JsonBody(mut body): JsonBody,
) -> Answer {
    name_from_path(&mut body, &name, "pipeline")?;
    replace_pipeline(state, JsonBody(body)).await
}

fn name_from_path(body: &mut Value, name: &str, kind: &str) -> Result<(), ApiError> {
    let Value::Object(map) = body else {
        return Err(ApiError::bad_request("data should be object"));
    };
    match map.get("name") {
        None => {
            map.insert("name".into(), json!(name));
            Ok(())
        }
        Some(Value::String(given)) if given == name => Ok(()),
        Some(given) => Err(ApiError::bad_request(format!(
            "the {kind} name in the body ({given}) differs from the one in the path ({name})"
        ))),
    }
}

/// `DELETE /store/pipelines/{name}`: also stops the unfinished jobs started from it.
pub async fn delete_pipeline(State(state): State<ApiState>, Path(name): Path<String>) -> Answer {
    state.store.delete_pipeline(&name)?;
    let unfinished = vec![JobStatus::Pending, JobStatus::Active, JobStatus::Paused];
    let related: Vec<String> = state
        .engine
        .jobs(Some(unfinished))
        .await?
        .into_iter()
        .filter(|job| job.pipeline_name == name && job.types.contains(&"stored"))
        .map(|job| job.job_id)
        .collect();
    let mut message = format!("pipeline {name} successfully deleted from store");
    if !related.is_empty() {
        let mut stopped = 0;
        for job_id in &related {
            let request = StopRequest {
                job_id: Some(job_id.clone()),
                reason: Some("pipeline has been deleted".into()),
                ..StopRequest::default()
            };
            if state.engine.stop(request).await.is_ok() {
                stopped += 1;
            }
        }
        message.push_str(&format!(
            ", stopped related running pipelines {stopped}/{}",
            related.len()
        ));
    }
    Ok(Json(json!({ "message": message })))
}

// ---- algorithms ----

pub async fn list_algorithms(State(state): State<ApiState>) -> Answer {
    Ok(Json(to_json(&state.store.algorithms()?)?))
}

pub async fn get_algorithm(State(state): State<ApiState>, Path(name): Path<String>) -> Answer {
    let algorithm = state
        .store
        .algorithm(&name)
        .ok_or_else(|| ApiError::NotFound(format!("algorithm {name} Not Found")))?;
    Ok(Json(to_json(&algorithm)?))
}

/// `POST /store/algorithms` (JSON): 201 and the algorithm with its defaults. Errors are real
/// 400s, not HKube's 201-with-an-error-body (reference Q4).
pub async fn create_algorithm(
    State(state): State<ApiState>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if body.is_array() {
        return Err(ApiError::bad_request(
            "storing an array of algorithms is not available yet: send one algorithm per request",
        ));
    }
    let algorithm = spec::parse_algorithm(body)?;
    let stored = to_json(&algorithm)?;
    state.store.create_algorithm(algorithm)?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// The payload shallow-merged over the stored algorithm; `null` removes a key; `version`,
/// `created` and `modified` are the server's (reference §4.2).
fn merge_algorithm(stored: Option<&Algorithm>, payload: Value) -> Result<Algorithm, ApiError> {
    let Value::Object(payload) = payload else {
        return Err(ApiError::bad_request("data should be object"));
    };
    let mut merged: Map<String, Value> = match stored {
        Some(stored) => match to_json(stored)? {
            Value::Object(map) => map,
            _ => Map::new(),
        },
        None => Map::new(),
    };
    for (key, value) in payload {
        if ["version", "created", "modified"].contains(&key.as_str()) {
            continue;
        }
        if value.is_null() {
            merged.remove(&key);
        } else {
            merged.insert(key, value);
        }
    }
    Ok(spec::parse_algorithm(Value::Object(merged))?)
}

/// `PUT /store/algorithms` (HKube's form: the name is in the body): merged over the stored one.
pub async fn replace_algorithm(State(state): State<ApiState>, JsonBody(body): JsonBody) -> Answer {
    let name = super::required_string(&body, "name")?;
    let stored = state
        .store
        .algorithm(&name)
        .ok_or_else(|| ApiError::NotFound(format!("algorithm {name} Not Found")))?;
    let algorithm = merge_algorithm(Some(&stored), body)?;
    let answer = to_json(&algorithm)?;
    state.store.replace_algorithm(algorithm)?;
    Ok(Json(answer))
}

pub async fn replace_named_algorithm(
    state: State<ApiState>,
    Path(name): Path<String>,
    JsonBody(mut body): JsonBody,
) -> Answer {
    name_from_path(&mut body, &name, "algorithm")?;
    replace_algorithm(state, JsonBody(body)).await
}

/// `DELETE /store/algorithms/{name}?force=true`: refused while stored pipelines or
/// unfinished jobs use it, unless forced; forcing deletes those pipelines and stops the jobs.
pub async fn delete_algorithm(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    if state.store.algorithm(&name).is_none() {
        return Err(ApiError::NotFound(format!("algorithm {name} Not Found")));
    }
    let uses = |nodes: &[spec::Node]| {
        nodes
            .iter()
            .any(|node| node.algorithm_name.as_deref() == Some(name.as_str()))
    };
    let pipelines: Vec<String> = state
        .store
        .pipelines()?
        .into_iter()
        .filter(|p| uses(&p.nodes))
        .map(|p| p.name)
        .collect();
    let unfinished = vec![JobStatus::Pending, JobStatus::Active, JobStatus::Paused];
    let mut executions = Vec::new();
    for job in state.engine.jobs(Some(unfinished)).await? {
        let Ok(doc) = state.engine.pipeline(&job.job_id).await else {
            continue;
        };
        let used = doc["nodes"].as_array().is_some_and(|nodes| {
            nodes
                .iter()
                .any(|node| node["algorithmName"].as_str() == Some(name.as_str()))
        });
        if used {
            executions.push(job.job_id);
        }
    }
    let force = query.get("force").is_some_and(|f| f == "true");
    if !force && (!pipelines.is_empty() || !executions.is_empty()) {
        return Err(ApiError::BadRequest {
            message: format!(
                "algorithm {name} is stored in {} pipelines ({}), {} executions ({}). you must first delete all related data or use the force flag",
                pipelines.len(),
                pipelines.join(","),
                executions.len(),
                executions.join(",")
            ),
            details: Some(json!({"pipelines": pipelines, "executions": executions})),
        });
    }
    for pipeline in &pipelines {
        state.store.delete_pipeline(pipeline)?;
    }
    for job_id in &executions {
        let request = StopRequest {
            job_id: Some(job_id.clone()),
            reason: Some(format!("algorithm {name} has been deleted")),
            ..StopRequest::default()
        };
        let _ = state.engine.stop(request).await;
    }
    state.store.delete_algorithm(&name)?;
    let mut message = format!("algorithm {name} successfully deleted from store");
    if force {
        message.push_str(&format!(
            ". related data deleted: {} pipelines, {} executions stopped",
            pipelines.len(),
            executions.len()
        ));
    }
    Ok(Json(json!({ "message": message })))
}

/// The string fields of an apply request, from multipart or from a JSON body.
#[derive(Debug, Default)]
struct ApplyRequest {
    payload: Option<String>,
    options: Option<String>,
    file: bool,
}

async fn read_apply(request: Request) -> Result<ApplyRequest, ApiError> {
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let mut apply = ApplyRequest::default();
    if !is_multipart {
        let JsonBody(body) = JsonBody::from_request(request, &()).await?;
        let field = |name: &str| match body.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone()),
            // A JSON body may carry the objects themselves.
            Some(other) => Some(other.to_string()),
        };
        apply.payload = field("payload");
        apply.options = field("options");
        return Ok(apply);
    }
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| ApiError::bad_request(e.body_text()))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let text = || String::from_utf8_lossy(&bytes).into_owned();
        match name.as_str() {
            "payload" => apply.payload = Some(text()),
            "options" => apply.options = Some(text()),
            "file" => apply.file |= !bytes.is_empty(),
            _ => {}
        }
    }
    Ok(apply)
}

/// `POST /store/algorithms/apply`: `payload` (the algorithm as a JSON string), `options`
/// (`{forceUpdate, forceBuild}`), `file` (code: needs the build service, not here yet).
pub async fn apply_algorithm(State(state): State<ApiState>, request: Request) -> Answer {
    let apply = read_apply(request).await?;
    if apply.file {
        return Err(ApiError::bad_request(
            "uploading code needs the build service, which is not available yet",
        ));
    }
    let payload: Value = match apply.payload.as_deref() {
        None | Some("") => {
            return Err(ApiError::bad_request(
                "data should have required property 'payload'",
            ))
        }
        Some(text) => serde_json::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("payload is not valid JSON: {e}")))?,
    };
    let options: Value = match apply.options.as_deref() {
        None | Some("") => json!({}),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("options is not valid JSON: {e}")))?,
    };
    let force_update = options["forceUpdate"].as_bool().unwrap_or(false);
    let Some(name) = payload
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Err(ApiError::bad_request(
            "algorithm should have required property \"name\"",
        ));
    };
    let stored = state.store.algorithm(&name);
    let algorithm = merge_algorithm(stored.as_ref(), payload)?;
    if algorithm.algorithm_image.is_none() {
        return Err(ApiError::bad_request(
            "cannot apply algorithm due to missing image url or build data",
        ));
    }
    let answer = to_json(&algorithm)?;
    let (message, code) = match stored {
        None => {
            state.store.create_algorithm(algorithm)?;
            (format!("the algorithm {name} has been successfully pushed to hkube"), 1023)
        }
        Some(stored) if stored == algorithm => (
            format!("the algorithm {name} has not changed"),
            1025,
        ),
        Some(_) if force_update => {
            state.store.replace_algorithm(algorithm)?;
            (format!("the algorithm {name} has been successfully pushed to hkube"), 1023)
        }
        Some(_) => (
            format!(
                "algorithm versions are not available yet, so the stored algorithm {name} is unchanged; apply with options {{\"forceUpdate\": true}} to replace it"
            ),
            1024,
        ),
    };
    Ok(Json(json!({
        "messages": [message],
        "messagesCode": [code],
        "algorithm": answer,
    })))
}
