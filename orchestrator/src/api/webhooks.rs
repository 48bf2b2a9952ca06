//! `POST /api/v1/builds/webhook/github|gitlab`: a push rebuilds the algorithms that follow the
//! pushed branch or tag, from the pushed head commit.
//!
//! Unlike HKube, a configured secret is checked (`X-Hub-Signature-256`, `X-Gitlab-Token`) and a
//! bad or missing one gets 401; with a secret the bearer token is not asked for (GitHub and
//! GitLab cannot send one). GitHub's JSON and form-encoded bodies are both read; the branch is
//! the whole name after `refs/heads/`; the head commit is the pushed head, not `commits[0]`.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use builder::webhook::{self, Push, WebhookError};
use serde_json::{json, Value};

use super::store::build_error;
use super::{ApiError, ApiState, RawBody};

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn refused(error: WebhookError) -> ApiError {
    match error {
        WebhookError::MissingSignature(_)
        | WebhookError::MalformedSignature { .. }
        | WebhookError::BadSignature(_) => ApiError::Unauthorized,
        other => ApiError::bad_request(other.to_string()),
    }
}

/// `POST /builds/webhook/github`.
pub async fn github(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    if let Some(secret) = &state.webhook_secret {
        webhook::verify_github(
            secret.as_bytes(),
            &body,
            header(&headers, "x-hub-signature-256"),
        )
        .map_err(refused)?;
    }
    if header(&headers, "x-github-event") == Some("ping") {
        return Ok(Json(json!({"message": "pong"})));
    }
    let push =
        webhook::parse_github_push(header(&headers, "content-type"), &body).map_err(refused)?;
    rebuild(&state, &push).await
}

/// `POST /builds/webhook/gitlab`.
pub async fn gitlab(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    if let Some(secret) = &state.webhook_secret {
        webhook::verify_gitlab(secret.as_bytes(), header(&headers, "x-gitlab-token"))
            .map_err(refused)?;
    }
    let push = webhook::parse_gitlab_push(&body).map_err(refused)?;
    rebuild(&state, &push).await
}

/// `{builds: [{algorithmName, buildId?, messages}]}`; 404 when no algorithm follows the push.
async fn rebuild(state: &ApiState, push: &Push) -> Result<Json<Value>, ApiError> {
    let Some(builds) = &state.builds else {
        return Err(ApiError::bad_request(
            "this server builds no code: start it with --executor docker",
        ));
    };
    let planned = builds.on_push(push).await.map_err(build_error)?;
    if planned.is_empty() {
        let url = push.repository_urls.first().cloned().unwrap_or_default();
        let reference = push
            .branch
            .as_ref()
            .map(|b| format!("branch {b}"))
            .or_else(|| push.tag.as_ref().map(|t| format!("tag {t}")))
            .unwrap_or_else(|| "this ref".into());
        return Err(ApiError::NotFound(format!(
            "no algorithm builds from {url} {reference}"
        )));
    }
    let answers: Vec<Value> = planned
        .into_iter()
        .map(|p| {
            json!({
                "algorithmName": p.algorithm.name,
                "buildId": p.build_id,
                "messages": p.messages,
            })
        })
        .collect();
    Ok(Json(json!({ "builds": answers })))
}
