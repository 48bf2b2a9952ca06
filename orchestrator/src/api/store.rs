//! `/api/v1/store/...`: stored pipelines and algorithms (reference §5.3, §5.4).
//!
//! Validation is `engine::submit::validate_for_store` for pipelines and
//! `spec::parse_algorithm` for algorithms; the [`Store`](crate::store::Store) only keeps what
//! passed.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::Json;
use serde_json::{json, Map, Value};

use super::{ApiError, ApiState, JsonBody};
use crate::engine::{now_ms, submit, version_id, JobStatus, StopRequest};
use crate::spec::{self, Algorithm, Pipeline};
use crate::store::AlgorithmVersion;

type Answer = Result<Json<Value>, ApiError>;

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::Internal(e.to_string()))
}

// ---- pipelines ----

pub async fn list_pipelines(State(state): State<ApiState>) -> Answer {
    let pipelines = state.store.pipelines()?;
    let docs = pipelines
        .iter()
        .map(|pipeline| to_json(pipeline).map(super::cron::with_next_run))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(Value::Array(docs)))
}

pub async fn get_pipeline(State(state): State<ApiState>, Path(name): Path<String>) -> Answer {
    let pipeline = state
        .store
        .pipeline(&name)
        .ok_or_else(|| ApiError::NotFound(format!("pipeline {name} Not Found")))?;
    Ok(Json(super::cron::with_next_run(to_json(&pipeline)?)))
}

fn validate_pipeline(state: &ApiState, body: Value) -> Result<Pipeline, ApiError> {
    let catalog: &dyn crate::engine::Catalog = &*state.store;
    // Unknown keys are stored, as HKube does; the server's log says which look like typos.
    let warnings = spec::pipeline_warnings(&body);
    let pipeline = submit::validate_for_store(body, catalog)?;
    log_warnings("pipeline", &pipeline.name, &warnings);
    Ok(pipeline)
}

fn log_warnings(kind: &str, name: &str, warnings: &[String]) {
    for warning in warnings {
        tracing::warn!("{kind} {name}: {warning}");
    }
}

/// `?overwrite=true` (HKube's store routes; hkubectl import sends it).
fn overwrite(query: &HashMap<String, String>) -> bool {
    query.get("overwrite").is_some_and(|o| o == "true")
}

/// Stores one pipeline; an existing one is replaced only with `overwrite`.
fn store_pipeline(state: &ApiState, body: Value, overwrite: bool) -> Result<Value, ApiError> {
    let pipeline = validate_pipeline(state, body)?;
    let stored = to_json(&pipeline)?;
    if overwrite && state.store.pipeline(&pipeline.name).is_some() {
        state.store.replace_pipeline(pipeline)?;
    } else {
        state.store.create_pipeline(pipeline)?;
    }
    Ok(stored)
}

/// `POST /store/pipelines`: 201 and the pipeline with its defaults; 409 when it exists. An
/// array (hkubectl import) stores each item: 201 and an array where a refused item is its
/// `{error: {code, message, name}}`.
pub async fn create_pipeline(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let overwrite = overwrite(&query);
    let answer = match body {
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| {
                    let name = item.get("name").cloned();
                    store_pipeline(&state, item, overwrite)
                        .unwrap_or_else(|error| error.into_item(name.as_ref()))
                })
                .collect(),
        ),
        body => store_pipeline(&state, body, overwrite)?,
    };
    Ok((StatusCode::CREATED, Json(answer)))
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

/// Stores one algorithm that has an image; an existing one is replaced (and becomes a new
/// current version) only with `overwrite`.
fn store_algorithm(state: &ApiState, body: Value, overwrite: bool) -> Result<Applied, ApiError> {
    let warnings = spec::algorithm_warnings(&body);
    let algorithm = spec::parse_algorithm(body)?;
    log_warnings("algorithm", &algorithm.name, &warnings);
    if algorithm.algorithm_image.is_none() {
        return Err(ApiError::bad_request(
            "cannot apply algorithm due to missing image url or build data",
        ));
    }
    let stored = state.store.algorithm(&algorithm.name);
    if stored.is_some() && !overwrite {
        return Err(ApiError::Conflict(format!(
            "algorithm {} already exists",
            algorithm.name
        )));
    }
    let name = algorithm.name.clone();
    let applied = apply_change(state, stored, algorithm, overwrite)?;
    if applied.codes.contains(&1023) {
        if let (Some(deployer), Some(current)) = (&state.deployer, state.store.algorithm(&name)) {
            deployer.deploy(&current);
        }
    }
    Ok(applied)
}

/// `POST /store/algorithms` (JSON): 201 and the algorithm with its defaults and its first
/// version. Errors are real 400s, not HKube's 201-with-an-error-body (reference Q4).
///
/// Also HKube's batch forms: an array of algorithms (201 and an array of the stored ones), and
/// `{payload: "<JSON of one algorithm or an array>", options: "{\"allowOverwrite\": bool}"}`
/// (hkubectl import), answered as applies are (`{messages, messagesCode, algorithm}`, an array
/// for an array). In both, a refused item is its `{error: {code, message, name}}` and the
/// others are stored; `?overwrite=true` or `allowOverwrite` replaces existing ones.
pub async fn create_algorithm(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut overwrite = overwrite(&query);
    let answer = match body {
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| {
                    let name = item.get("name").cloned();
                    store_algorithm(&state, item, overwrite)
                        .and_then(|applied| to_json(&applied.algorithm))
                        .unwrap_or_else(|error| error.into_item(name.as_ref()))
                })
                .collect(),
        ),
        Value::Object(map)
            if map.get("payload").is_some_and(Value::is_string) && !map.contains_key("name") =>
        {
            let text = |key: &str| map.get(key).and_then(Value::as_str).unwrap_or_default();
            let payload: Value = serde_json::from_str(text("payload"))
                .map_err(|e| ApiError::bad_request(format!("payload is not valid JSON: {e}")))?;
            if !text("options").is_empty() {
                let options: Value = serde_json::from_str(text("options")).map_err(|e| {
                    ApiError::bad_request(format!("options is not valid JSON: {e}"))
                })?;
                overwrite |= options["allowOverwrite"].as_bool().unwrap_or(false);
            }
            let apply_answer = |applied: Applied| -> Result<Value, ApiError> {
                Ok(json!({
                    "messages": applied.messages,
                    "messagesCode": applied.codes,
                    "algorithm": to_json(&applied.algorithm)?,
                }))
            };
            match payload {
                Value::Array(items) => Value::Array(
                    items
                        .into_iter()
                        .map(|item| {
                            let name = item.get("name").cloned();
                            store_algorithm(&state, item, overwrite)
                                .and_then(apply_answer)
                                .unwrap_or_else(|error| error.into_item(name.as_ref()))
                        })
                        .collect(),
                ),
                payload => apply_answer(store_algorithm(&state, payload, overwrite)?)?,
            }
        }
        body => to_json(&store_algorithm(&state, body, overwrite)?.algorithm)?,
    };
    Ok((StatusCode::CREATED, Json(answer)))
}

/// What an apply did: the candidate algorithm (with its new `version` when one was made) and
/// HKube's messages with their codes.
struct Applied {
    algorithm: Algorithm,
    messages: Vec<String>,
    codes: Vec<u16>,
}

/// HKube's `applyAlgorithm`, without builds (reference §4.2): an effective change of an
/// algorithm with an image makes a version (1024); the stored (current) definition is
/// written when the algorithm is new, or when `force_update` asks for it (1023). Otherwise
/// the new version waits for `POST /versions/algorithms/apply`.
fn apply_change(
    state: &ApiState,
    stored: Option<Algorithm>,
    mut candidate: Algorithm,
    force_update: bool,
) -> Result<Applied, ApiError> {
    let name = candidate.name.clone();
    let mut messages = Vec::new();
    let mut codes = Vec::new();
    let changed = stored.as_ref() != Some(&candidate);
    let version = (changed && candidate.algorithm_image.is_some()).then(|| {
        let id = version_id();
        candidate.extra.insert("version".into(), json!(id));
        AlgorithmVersion::new(id, candidate.clone(), now_ms())
    });
    if version.is_some() {
        messages.push(format!(
            "a new version of algorithm {name} has been created"
        ));
        codes.push(1024);
    }
    let pushed = match (&stored, version) {
        (None, version) => {
            // The algorithm first: when its name was just taken, no version is left behind.
            state.store.create_algorithm(candidate.clone())?;
            if let Some(version) = version {
                state.store.add_algorithm_version(version)?;
            }
            true
        }
        (Some(_), Some(version)) => {
            state.store.add_algorithm_version(version)?;
            if force_update {
                state.store.replace_algorithm(candidate.clone())?;
            }
            force_update
        }
        (Some(_), None) => false,
    };
    if pushed {
        messages.push(format!(
            "the algorithm {name} has been successfully pushed to hkube"
        ));
        codes.push(1023);
    }
    Ok(Applied {
        algorithm: candidate,
        messages,
        codes,
    })
}

/// The payload shallow-merged over the stored algorithm; `null` removes a key; `version`,
/// `created` and `modified` are the server's (reference §4.2).
fn merge_algorithm(stored: Option<&Algorithm>, payload: Value) -> Result<Algorithm, ApiError> {
    let warnings = spec::algorithm_warnings(&payload);
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
    let algorithm = spec::parse_algorithm(Value::Object(merged))?;
    log_warnings("algorithm", &algorithm.name, &warnings);
    Ok(algorithm)
}

/// `PUT /store/algorithms` (HKube's form: the name is in the body): merged over the stored
/// one. A change makes a version; the stored definition changes only with
/// `?forceStopAndApplyVersion=true` (HKube's forceUpdate). The answer is the candidate.
pub async fn replace_algorithm(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
    JsonBody(body): JsonBody,
) -> Answer {
    let name = super::required_string(&body, "name")?;
    let stored = state
        .store
        .algorithm(&name)
        .ok_or_else(|| ApiError::NotFound(format!("algorithm {name} Not Found")))?;
    let algorithm = merge_algorithm(Some(&stored), body)?;
    let force_update = query
        .get("forceStopAndApplyVersion")
        .is_some_and(|f| f == "true");
    let applied = apply_change(&state, Some(stored), algorithm, force_update)?;
    Ok(Json(to_json(&applied.algorithm)?))
}

pub async fn replace_named_algorithm(
    state: State<ApiState>,
    Path(name): Path<String>,
    query: Query<HashMap<String, String>>,
    JsonBody(mut body): JsonBody,
) -> Answer {
    name_from_path(&mut body, &name, "algorithm")?;
    replace_algorithm(state, query, JsonBody(body)).await
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
    let executions = state.engine.executions_using(&name).await?;
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
    if query.get("keepOldVersions").is_some_and(|k| k == "false") {
        state.store.delete_algorithm_versions(&name)?;
    }
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
    /// The uploaded code (an archive), when a non-empty `file` was sent.
    file: Option<Bytes>,
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
        .map_err(|e| super::body_error(e.status(), e.body_text()))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field
            .bytes()
            .await
            .map_err(|e| super::body_error(e.status(), e.body_text()))?;
        let text = || String::from_utf8_lossy(&bytes).into_owned();
        match name.as_str() {
            "payload" => apply.payload = Some(text()),
            "options" => apply.options = Some(text()),
            "file" if !bytes.is_empty() => apply.file = Some(bytes),
            _ => {}
        }
    }
    Ok(apply)
}

/// `POST /store/algorithms/apply`: `payload` (the algorithm as a JSON string), `options`
/// (`{forceUpdate, forceBuild}`), `file` (code, built into an image by the build service).
pub async fn apply_algorithm(State(state): State<ApiState>, request: Request) -> Answer {
    let apply = read_apply(request).await?;
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
    let force_build = options["forceBuild"].as_bool().unwrap_or(false);
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
    let mut algorithm = merge_algorithm(stored.as_ref(), payload)?;
    // Code to build: an upload, a git repository, or the upload a stored algorithm was built
    // from (a new base image rebuilds it).
    let brings_code = apply.file.is_some() || algorithm.git_repository.is_some();
    let stored_code = stored
        .as_ref()
        .is_some_and(|s| s.extra.contains_key("fileInfo"));
    let builds = match &state.builds {
        Some(builds) if brings_code || stored_code => Some(builds),
        None if apply.file.is_some()
            || (algorithm.git_repository.is_some() && algorithm.algorithm_image.is_none()) =>
        {
            return Err(ApiError::bad_request(
                "this server builds no code: start it with --executor docker (a container engine builds the image), or give algorithmImage",
            ));
        }
        _ => None,
    };
    if let Some(builds) = builds {
        let planned = builds
            .apply(
                stored.clone(),
                algorithm,
                apply.file.as_deref(),
                None,
                force_build,
            )
            .await
            .map_err(build_error)?;
        if planned.build_id.is_some() || apply.file.is_some() {
            let mut answer = json!({
                "messages": planned.messages,
                "messagesCode": planned.codes,
                "algorithm": to_json(&planned.algorithm)?,
            });
            if let Some(id) = planned.build_id {
                answer["buildId"] = json!(id);
            }
            return Ok(Json(answer));
        }
        // No file and nothing that rebuilds: an ordinary change of the built algorithm.
        algorithm = planned.algorithm;
    }
    if algorithm.algorithm_image.is_none() {
        return Err(ApiError::bad_request(
            "cannot apply algorithm due to missing image url or build data",
        ));
    }
    let applied = apply_change(&state, stored, algorithm, force_update)?;
    if applied.codes.contains(&1023) {
        if let (Some(deployer), Some(current)) = (&state.deployer, state.store.algorithm(&name)) {
            // Registered before the answer: a job started on it finds the algorithm's pool.
            if let Err(error) = deployer.register(&current).await {
                tracing::warn!("algorithm {name}: {error}");
            }
        }
    }
    Ok(Json(json!({
        "messages": applied.messages,
        "messagesCode": applied.codes,
        "algorithm": to_json(&applied.algorithm)?,
    })))
}

/// The build service's refusals in the API's words.
pub(super) fn build_error(error: crate::build::Error) -> ApiError {
    use crate::build::Error;
    match error {
        Error::NotFound(_) => ApiError::NotFound(error.to_string()),
        Error::BadUpload(_) | Error::NotStoppable(_) | Error::NotRerunnable(_) => {
            ApiError::bad_request(error.to_string())
        }
        Error::Store(store) => store.into(),
        Error::Io { .. } => ApiError::Internal(error.to_string()),
    }
}
