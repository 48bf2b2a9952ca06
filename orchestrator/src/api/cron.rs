//! `/api/v1/cron/...` (reference §5.7) and HKube's internal `POST /exec/stored/cron`: the cron
//! triggers of stored pipelines. The schedule itself is [`crate::triggers`]'s; these routes
//! read and write `triggers.cron` in the store and tell the cron service to read it again.

use std::collections::HashMap;

use axum::extract::{Query, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use axum::Json;
use serde_json::{json, Value};

use super::jobs::{parse_sort, results_of, statuses_of};
use super::{no_extra_keys, required_string, ApiError, ApiState, JsonBody};
use crate::engine::{now_ms, ExecRequest};
use crate::spec::{Cron, Pipeline};
use crate::triggers::cron::{next_run, Schedule, DEFAULT_PATTERN};
use crate::triggers::NEXT_RUN_KEY;

type Answer = Result<Json<Value>, ApiError>;

/// `GET /cron/list?sort=asc|desc&limit`: the stored pipelines with a cron trigger, by name,
/// each `{name, cron: {pattern, enabled}}`, and `nextRun` (ms since the epoch) when enabled.
pub async fn list(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    // By name, A to Z unless `sort=desc`.
    let ascending = match query.get("sort") {
        None => true,
        Some(sort) => parse_sort(Some(sort))?,
    };
    let limit = match query.get("limit") {
        None => usize::MAX,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| ApiError::bad_request("data.limit should be integer >= 1"))?,
    };
    let now = now_ms();
    let mut entries: Vec<Value> = state
        .store
        .pipelines()?
        .into_iter()
        .filter_map(|pipeline| {
            let cron = pipeline.triggers?.cron?;
            let mut entry = json!({
                "name": pipeline.name,
                "cron": {"pattern": cron.pattern, "enabled": cron.enabled},
            });
            if cron.enabled {
                entry["nextRun"] = json!(next_run(&cron.pattern, now));
            }
            Some(entry)
        })
        .collect();
    if !ascending {
        entries.reverse();
    }
    entries.truncate(limit);
    Ok(Json(Value::Array(entries)))
}

/// `GET /cron/results?name&experimentName=main&sort=desc&limit=1`: the results of the jobs
/// the pipeline's cron started.
pub async fn results(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    results_of(&state, &query, Some("cron"), "cron results").await
}

/// `GET /cron/status?name&experimentName=main&sort=desc&limit=1`.
pub async fn status(
    State(state): State<ApiState>,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    statuses_of(&state, &query, Some("cron"), "cron status").await
}

fn stored(state: &ApiState, name: &str) -> Result<Pipeline, ApiError> {
    state
        .store
        .pipeline(name)
        .ok_or_else(|| ApiError::NotFound(format!("pipeline {name} Not Found")))
}

/// `POST /cron/start {name, pattern?}`: enables the pipeline's cron with the given pattern,
/// else its stored one, else `0 * * * *`.
pub async fn start(State(state): State<ApiState>, JsonBody(body): JsonBody) -> Answer {
    no_extra_keys(&body, &["name", "pattern"])?;
    let name = required_string(&body, "name")?;
    let given = match body.get("pattern") {
        None => None,
        Some(Value::String(pattern)) => {
            // HKube's text first, then what the parser found wrong.
            Schedule::parse(pattern).map_err(|error| {
                ApiError::bad_request(format!(
                    "data.pattern should match format \"cron\": {error}"
                ))
            })?;
            Some(pattern.clone())
        }
        Some(_) => return Err(ApiError::bad_request("data.pattern should be string")),
    };
    let mut pipeline = stored(&state, &name)?;
    let triggers = pipeline.triggers.get_or_insert_with(Default::default);
    let pattern = given
        .or_else(|| triggers.cron.as_ref().map(|c| c.pattern.clone()))
        .unwrap_or_else(|| DEFAULT_PATTERN.to_string());
    triggers.cron = Some(Cron {
        pattern,
        enabled: true,
    });
    state.store.replace_pipeline(pipeline)?;
    Ok(Json(json!({"message": "OK"})))
}

/// `POST /cron/stop {name}`: disables the pipeline's cron (its pattern is kept).
pub async fn stop(State(state): State<ApiState>, JsonBody(body): JsonBody) -> Answer {
    no_extra_keys(&body, &["name"])?;
    let name = required_string(&body, "name")?;
    let mut pipeline = stored(&state, &name)?;
    if let Some(cron) = pipeline.triggers.as_mut().and_then(|t| t.cron.as_mut()) {
        cron.enabled = false;
        state.store.replace_pipeline(pipeline)?;
    }
    Ok(Json(json!({"message": "OK"})))
}

/// `POST /internal/v1/exec/stored/cron {name}`: what a cron tick does, on demand: the stored
/// pipeline runs with types `["stored", "internal", "cron"]`.
pub async fn exec(State(state): State<ApiState>, JsonBody(body): JsonBody) -> Answer {
    no_extra_keys(&body, &["name"])?;
    let name = required_string(&body, "name")?;
    let job_id = state
        .engine
        .exec(ExecRequest::Cron(json!({ "name": name })))
        .await?;
    Ok(Json(json!({ "jobId": job_id })))
}

/// A stored pipeline document with its cron's next fire time (`cronNextRun`), when enabled.
pub(super) fn with_next_run(mut doc: Value) -> Value {
    let pattern = doc
        .pointer("/triggers/cron")
        .filter(|cron| cron["enabled"] == true)
        .and_then(|cron| cron["pattern"].as_str())
        .map(str::to_string);
    if let (Some(pattern), Value::Object(map)) = (pattern, &mut doc) {
        if let Some(next) = next_run(&pattern, now_ms()) {
            map.insert(NEXT_RUN_KEY.into(), json!(next));
        }
    }
    doc
}

/// After a successful write to stored pipelines (the store and cron routes; a forced
/// algorithm delete removes pipelines too), the cron service reads them again, so a change
/// takes effect without a restart.
pub(super) async fn reload_after_writes(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let writes = request.method() != Method::GET
        && (path.starts_with("/api/v1/store/") || path.starts_with("/api/v1/cron/"));
    let response = next.run(request).await;
    if writes && response.status().is_success() {
        if let Some(cron) = &state.cron {
            cron.reload();
        }
    }
    response
}
