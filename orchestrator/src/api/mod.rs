//! The HKube-compatible REST API (reference §5): an axum [`Router`] over the engine's
//! [`Handle`] and a [`Store`].
//!
//! Every route is one entry of the table in [`openapi::routes`]: the router is built from it
//! and `GET /api/v1/openapi.json` is generated from it, so the two cannot drift. HTTP status
//! codes are decided in [`error`] only. The API does no job logic of its own: it parses
//! requests, calls the engine or the store, and shapes the answers as HKube does.

mod builds;
mod error;
mod exec;
mod jobs;
mod openapi;
mod store;
mod versions;
mod webhooks;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::Value;

pub use error::ApiError;
pub use openapi::{routes, ApiRoute, Verb};

use crate::build::{BuildService, Deployer};
use crate::engine::Handle;
use crate::store::Store;

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
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("auth", &self.auth_token.is_some())
            .finish_non_exhaustive()
    }
}

/// Largest request body accepted (HKube allows 2000 MB; pipelines with large flowInputs are
/// the reason for a generous limit).
const BODY_LIMIT: usize = 512 << 20;

/// The whole API: the routes of [`routes`], JSON 404 for unknown paths (reference Q17), 405
/// for a known path with another method, and bearer-token auth when configured.
pub fn router(state: ApiState) -> Router {
    let mut router: Router<ApiState> = Router::new();
    for route in routes() {
        router = router.route(route.path, route.into_method_router());
    }
    router
        .fallback(unknown_route)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
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
        let signed_webhook = state.webhook_secret.is_some()
            && request.uri().path().starts_with("/api/v1/builds/webhook/");
        if request.uri().path().starts_with("/api") && !signed_webhook {
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

/// A JSON request body; malformed JSON is a 400 that says where it broke.
#[derive(Debug)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
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
