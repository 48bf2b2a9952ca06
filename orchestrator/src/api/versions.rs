//! `/api/v1/versions/algorithms/...`: an algorithm's versions, and applying one as the
//! current definition (a rollback) (reference §4.2, §5.5).
//!
//! Versions are made by the store routes ([`super::store`]) on every effective change; here
//! they are only read, applied and deleted.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{no_extra_keys, required_string, ApiError, ApiState, JsonBody};
use crate::spec;
use crate::store::AlgorithmVersion;

type Answer = Result<Json<Value>, ApiError>;

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::Internal(e.to_string()))
}

/// A version as the API shows it: HKube's current fields, plus `algorithmImage` and `buildId`
/// at the top, where hkubectl reads them (`algorithm version` lists `algorithmImage`; `apply`
/// finds the version its build made by `buildId`).
pub(super) fn version_doc(version: &AlgorithmVersion) -> Result<Value, ApiError> {
    let mut doc = to_json(version)?;
    if let Some(image) = &version.algorithm.algorithm_image {
        doc["algorithmImage"] = json!(image);
    }
    if let Some(build_id) = version.algorithm.extra.get("buildId") {
        doc["buildId"] = build_id.clone();
    }
    Ok(doc)
}

/// HKube's name check (the algorithm schema's first rule), for routes with only a name.
fn check_name(name: &str) -> Result<(), ApiError> {
    spec::parse_algorithm(json!({ "name": name }))?;
    Ok(())
}

/// The version, after HKube's two 404s: `algorithm <n> Not Found`, `version <v> Not Found`.
fn find(state: &ApiState, name: &str, version: &str) -> Result<AlgorithmVersion, ApiError> {
    if state.store.algorithm(name).is_none() {
        return Err(ApiError::NotFound(format!("algorithm {name} Not Found")));
    }
    state
        .store
        .algorithm_version(name, version)
        .ok_or_else(|| ApiError::NotFound(format!("version {version} Not Found")))
}

/// `GET /versions/algorithms/{name}`: newest first.
pub async fn list(State(state): State<ApiState>, Path(name): Path<String>) -> Answer {
    check_name(&name)?;
    let versions = state.store.algorithm_versions(&name)?;
    let docs = versions.iter().map(version_doc).collect::<Result<_, _>>()?;
    Ok(Json(Value::Array(docs)))
}

/// `GET /versions/algorithms/{name}/{version}`.
pub async fn get(
    State(state): State<ApiState>,
    Path((name, version)): Path<(String, String)>,
) -> Answer {
    Ok(Json(version_doc(&find(&state, &name, &version)?)?))
}

/// The version an apply names: `version`, or else the newest one whose image is `image`
/// (hkubectl's `algorithm version --setCurrent <image>` sends no version, and its `apply
/// --setCurrent` may send `version: null` with the built image).
fn named_version(state: &ApiState, body: &Value, name: &str) -> Result<String, ApiError> {
    let image = match body.get("image") {
        None | Some(Value::Null) => None,
        Some(Value::String(image)) => Some(image.as_str()),
        Some(_) => return Err(ApiError::bad_request("data.image should be string")),
    };
    match (body.get("version"), image) {
        (Some(Value::String(_)), _) | (None | Some(Value::Null), None) => {
            required_string(body, "version")
        }
        (None | Some(Value::Null), Some(image)) => {
            if state.store.algorithm(name).is_none() {
                return Err(ApiError::NotFound(format!("algorithm {name} Not Found")));
            }
            // Newest first: the latest build of an image wins.
            state
                .store
                .algorithm_versions(name)?
                .into_iter()
                .find(|v| v.algorithm.algorithm_image.as_deref() == Some(image))
                .map(|v| v.version)
                .ok_or_else(|| {
                    ApiError::NotFound(format!(
                        "no version of algorithm {name} has the image {image}"
                    ))
                })
        }
        (Some(_), _) => Err(ApiError::bad_request("data.version should be string")),
    }
}

/// `POST /versions/algorithms/apply {name, version | image, force?}`: the stored algorithm
/// becomes the version's snapshot; 201 and the version. Refused while unfinished jobs run the
/// algorithm, unless forced (they keep the definition they started with).
pub async fn apply(
    State(state): State<ApiState>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    no_extra_keys(&body, &["name", "version", "image", "force", "graceful"])?;
    let name = required_string(&body, "name")?;
    let version = named_version(&state, &body, &name)?;
    let force = match body.get("force") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(force)) => *force,
        Some(_) => return Err(ApiError::bad_request("data.force should be boolean")),
    };
    let found = find(&state, &name, &version)?;
    if !force {
        let running = state.engine.executions_using(&name).await?;
        if !running.is_empty() {
            let message = match running.len() {
                1 => format!("there is a running pipeline which depends on \"{name}\" algorithm"),
                n => {
                    format!("there are {n} running pipelines which depend on \"{name}\" algorithm")
                }
            };
            return Err(ApiError::BadRequest {
                message,
                details: Some(json!(running)),
            });
        }
    }
    let mut current = found.algorithm.clone();
    // The version is applied by hand: HKube's 901 ("a newer version waits") no longer holds.
    current.extra.remove("errors");
    state.store.replace_algorithm(current.clone())?;
    if let Some(deployer) = &state.deployer {
        // Registered before the answer: a job started on it finds the algorithm's pool.
        if let Err(error) = deployer.register(&current).await {
            tracing::warn!("algorithm {}: {error}", current.name);
        }
    }
    Ok((StatusCode::CREATED, Json(version_doc(&found)?)))
}

/// `DELETE /versions/algorithms/{name}/{version}`: `{deleted: 1}`; the current version
/// cannot be removed.
pub async fn delete(
    State(state): State<ApiState>,
    Path((name, version)): Path<(String, String)>,
) -> Answer {
    let algorithm = state
        .store
        .algorithm(&name)
        .ok_or_else(|| ApiError::NotFound(format!("algorithm {name} Not Found")))?;
    if algorithm.extra.get("version").and_then(Value::as_str) == Some(version.as_str()) {
        return Err(ApiError::bad_request(
            "unable to remove the currently used version",
        ));
    }
    state.store.delete_algorithm_version(&name, &version)?;
    Ok(Json(json!({"deleted": 1})))
}
