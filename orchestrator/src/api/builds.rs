//! `/api/v1/builds/...` (reference §4.3, §5.6). Builds need the build service, which has not
//! landed: no build exists, and these routes say so in HKube's words (an unknown build is
//! `build <id> Not Found`; an algorithm's list is empty) instead of pretending.

use std::collections::HashMap;

use axum::extract::{Path, Query};
use axum::Json;
use serde_json::{json, Value};

use super::{required_string, ApiError, JsonBody};

type Answer = Result<Json<Value>, ApiError>;

fn not_found(build_id: &str) -> ApiError {
    ApiError::NotFound(format!("build {build_id} Not Found"))
}

/// `GET /builds/status/{buildId}`.
pub async fn status(Path(build_id): Path<String>) -> Answer {
    Err(not_found(&build_id))
}

/// `GET /builds/list/{name}?sort=asc|desc&limit=n`: the algorithm's builds (none yet). The
/// query is checked as HKube checks it; like HKube, a valid limit does not cut the list
/// (reference Q13).
pub async fn list(
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    crate::spec::parse_algorithm(json!({ "name": name }))?;
    if let Some(sort) = query.get("sort") {
        if sort != "asc" && sort != "desc" {
            return Err(ApiError::bad_request(
                "data.sort should be equal to one of the allowed values (asc,desc)",
            ));
        }
    }
    if let Some(limit) = query.get("limit") {
        let limit: i64 = limit
            .parse()
            .map_err(|_| ApiError::bad_request("data.limit should be integer"))?;
        if limit < 1 {
            return Err(ApiError::bad_request("data.limit should be >= 1"));
        }
    }
    Ok(Json(json!([])))
}

/// `POST /builds/stop {buildId}`.
pub async fn stop(JsonBody(body): JsonBody) -> Answer {
    Err(not_found(&required_string(&body, "buildId")?))
}

/// `POST /builds/rerun {buildId}`.
pub async fn rerun(JsonBody(body): JsonBody) -> Answer {
    Err(not_found(&required_string(&body, "buildId")?))
}
