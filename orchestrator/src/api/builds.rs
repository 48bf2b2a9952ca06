//! `/api/v1/builds/...` (reference §4.3, §5.6): the build service's records. Reading works on
//! any server (records live in the store); stop and rerun need the build service.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::store::build_error;
use super::{required_string, ApiError, ApiState, JsonBody};
use crate::build::redacted;

type Answer = Result<Json<Value>, ApiError>;

fn not_found(build_id: &str) -> ApiError {
    ApiError::NotFound(format!("build {build_id} Not Found"))
}

/// A build record as the API shows it: without git tokens.
fn record(state: &ApiState, build_id: &str) -> Result<Value, ApiError> {
    state
        .store
        .build(build_id)
        .map(redacted)
        .ok_or_else(|| not_found(build_id))
}

/// `GET /builds/status/{buildId}`.
pub async fn status(State(state): State<ApiState>, Path(build_id): Path<String>) -> Answer {
    Ok(Json(record(&state, &build_id)?))
}

/// `GET /builds/logs/{buildId}`: the log alone, as text.
pub async fn logs(
    State(state): State<ApiState>,
    Path(build_id): Path<String>,
) -> Result<Response, ApiError> {
    let record = record(&state, &build_id)?;
    let text = record["result"]["data"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok(text.into_response())
}

/// `GET /builds/list/{name}?sort=asc|desc&limit=n`: the algorithm's builds, newest first by
/// default (HKube's `sort=desc`).
pub async fn list(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    crate::spec::parse_algorithm(json!({ "name": name }))?;
    let sort = query.get("sort").map(String::as_str).unwrap_or("desc");
    if sort != "asc" && sort != "desc" {
        return Err(ApiError::bad_request(
            "data.sort should be equal to one of the allowed values (asc,desc)",
        ));
    }
    let limit = match query.get("limit") {
        Some(limit) => {
            let limit: i64 = limit
                .parse()
                .map_err(|_| ApiError::bad_request("data.limit should be integer"))?;
            if limit < 1 {
                return Err(ApiError::bad_request("data.limit should be >= 1"));
            }
            Some(limit as usize)
        }
        None => None,
    };
    let mut builds: Vec<Value> = state
        .store
        .builds(&name)?
        .into_iter()
        .map(redacted)
        .collect();
    if sort == "desc" {
        builds.reverse();
    }
    if let Some(limit) = limit {
        builds.truncate(limit);
    }
    Ok(Json(Value::Array(builds)))
}

fn service(state: &ApiState, build_id: &str) -> Result<crate::build::BuildService, ApiError> {
    record(state, build_id)?;
    state.builds.clone().ok_or_else(|| {
        ApiError::bad_request("this server runs no build service (start it with --executor docker)")
    })
}

/// `POST /builds/stop {buildId}`.
pub async fn stop(State(state): State<ApiState>, JsonBody(body): JsonBody) -> Answer {
    let build_id = required_string(&body, "buildId")?;
    service(&state, &build_id)?
        .stop(&build_id)
        .map_err(build_error)?;
    Ok(Json(json!({"message": "OK"})))
}

/// `POST /builds/rerun {buildId}`.
pub async fn rerun(State(state): State<ApiState>, JsonBody(body): JsonBody) -> Answer {
    let build_id = required_string(&body, "buildId")?;
    service(&state, &build_id)?
        .rerun(&build_id)
        .map_err(build_error)?;
    Ok(Json(json!({"message": "OK"})))
}
