//! The HKube-compatible REST API (reference §5): an axum [`Router`] over the engine's
//! [`Handle`] and a [`Store`].
//!
//! Every route is one entry of the table in [`openapi::routes`]: the router is built from it
//! and `GET /api/v1/openapi.json` is generated from it, so the two cannot drift. HTTP status
//! codes are decided in [`error`] only. The API does no job logic of its own: it parses
//! requests, calls the engine or the store, and shapes the answers as HKube does.

mod auth;
mod builds;
mod cron;
mod error;
mod exec;
mod guard;
mod jobs;
mod logs;
mod observe;
mod openapi;
mod result_cache;
mod storage;
mod store;
mod ui;
mod versions;
mod webhook_records;
mod webhooks;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

pub use error::ApiError;
pub use openapi::{routes, ApiRoute, Verb};

use crate::build::{BuildService, Deployer};
use crate::engine::Handle;
use crate::store::Store;
use crate::triggers::CronHandle;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    pub engine: Handle,
    pub store: Arc<dyn Store>,
    /// When set, every `/api` request needs `Authorization: Bearer <token>`.
    pub auth_token: Option<String>,
    /// Builds code uploads into images; none when the server has no container engine.
    pub builds: Option<BuildService>,
    /// Makes a stored algorithm with an image runnable (the Docker executor's pools).
    pub deployer: Option<Arc<dyn Deployer>>,
    /// Git push webhooks must be signed with this secret; they then need no bearer token.
    pub webhook_secret: Option<String>,
    /// Where stored results are, as results documents name it (`@hkube/fs-adapter`,
    /// `@hkube/s3-adapter`).
    pub storage_module: &'static str,
    /// The job storage the `/storage` routes browse; none where the server has none.
    pub storage: Option<JobStorage>,
    /// Host names a browser may reach this server by when it has no token, besides localhost
    /// and IP addresses (`hkube server --allowed-host`); see [`guard`].
    pub allowed_hosts: Vec<String>,
    /// The cron service, told to read the stored pipelines again after each write to them;
    /// none where no cron service runs.
    pub cron: Option<CronHandle>,
    /// The task board and task logs (`/exec/tasks`, `/exec/logs`, the UI's streams).
    pub telemetry: crate::telemetry::Telemetry,
}

/// The storage jobs' large values live in, and its key prefix (`<cluster>-hkube/...`).
#[derive(Clone, Debug)]
pub struct JobStorage {
    pub backend: Arc<dyn wrapper::storage::Storage>,
    /// `local` for the local executor.
    pub cluster: String,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("auth", &self.auth_token.is_some())
            .finish_non_exhaustive()
    }
}

/// Largest request body accepted (HKube allows 2000 MB; pipelines with large flowInputs are
/// the reason for a generous limit). A larger `Content-Length` is answered 413 before a byte
/// is read; a chunked body is cut off at this size while it is read.
const BODY_LIMIT: usize = 512 << 20;

/// The whole API: the routes of [`routes`], JSON 404 for unknown paths (reference Q17), 405
/// for a known path with another method, the request guards (body size, cross-site requests)
/// and bearer-token auth when configured. A trailing slash is ignored on every path, as HKube's
/// Express router does (hkubectl posts to `exec/raw/`).
pub fn router(state: ApiState) -> Router {
    let mut router: Router<ApiState> = Router::new();
    for route in routes() {
        router = router.route(route.path, route.into_method_router());
    }
    let routed = router
        .fallback(unknown_route)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cron::reload_after_writes,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::check_request,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state);
    // Routing happens inside `routed`, so the path is trimmed before it is matched.
    Router::new().fallback_service(routed.map_request(guard::trim_trailing_slash))
}

async fn unknown_route(request: Request) -> ApiError {
    ApiError::NotFound(format!(
        "Cannot {} {}",
        request.method(),
        request.uri().path()
    ))
}

async fn authorize(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.auth_token {
        // A signed webhook proves itself with its signature (checked by its handler).
        // The login route checks its password itself: it is how a client learns the token.
        let login = request.uri().path() == "/api/v1/auth/login";
        // HKube's in-cluster routes (`/internal/v1`) need the token as well, and `/metrics`
        // too: Prometheus sends a bearer token.
        let path = request.uri().path();
        if (path.starts_with("/api") || path.starts_with("/internal") || path == "/metrics")
            && !login
            && !guard::is_signed_webhook(&state, &request)
        {
            let given = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "));
            if !given.is_some_and(|given| same_secret(given.as_bytes(), token.as_bytes())) {
                return ApiError::Unauthorized.into_response();
            }
        }
    }
    next.run(request).await
}

/// Compares without stopping at the first difference, so timing does not reveal the token.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A body reader's refusal in the API's words: too large is 413, anything else 400.
fn body_error(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(format!(
            "the request body is larger than {} MB",
            BODY_LIMIT >> 20
        ))
    } else {
        ApiError::bad_request(text)
    }
}

/// A JSON request body; malformed JSON is a 400 that says where it broke. A body that is not
/// `application/json` is a 415: a browser can send a form or `text/plain` to any site without
/// asking it first, but not JSON.
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        guard::require_json(&request)?;
        let RawBody(bytes) = RawBody::from_request(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            // Express's body parser reads an empty body as `{}`.
            return Ok(JsonBody(Value::Object(Default::default())));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|error| {
                ApiError::bad_request(format!("the request body is not valid JSON: {error}"))
            })
    }
}

/// A request body as bytes, whatever its type (webhooks check their own).
#[derive(Debug)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(request, state)
            .await
            .map(RawBody)
            .map_err(|rejection| body_error(rejection.status(), rejection.body_text()))
    }
}

/// ajv's text for a missing required string field, HKube's for a wrong type.
fn required_string(body: &Value, field: &str) -> Result<String, ApiError> {
    match body.get(field) {
        Some(Value::String(value)) => Ok(value.clone()),
        Some(_) => Err(ApiError::bad_request(format!(
            "data.{field} should be string"
        ))),
        None if body.is_object() => Err(ApiError::bad_request(format!(
            "data should have required property '{field}'"
        ))),
        None => Err(ApiError::bad_request("data should be object")),
    }
}

/// ajv's `additionalProperties: false` text.
fn no_extra_keys(body: &Value, allowed: &[&str]) -> Result<(), ApiError> {
    if let Some(extra) = body
        .as_object()
        .and_then(|map| map.keys().find(|k| !allowed.contains(&k.as_str())))
    {
        return Err(ApiError::bad_request(format!(
            "data should NOT have additional properties ({extra})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
