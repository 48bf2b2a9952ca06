//! The API's error type: THE one place HTTP status codes are decided.
//!
//! Every handler returns `Result<_, ApiError>`; the engine's and the store's errors convert
//! into it by class (HKube's classes, reference §5.0): invalid or not allowed → 400, not
//! found → 404, already exists → 409. The request guards of [`super`] answer 403 (cross-site),
//! 413 (too large) and 415 (not JSON). The body is HKube's
//! `{"error":{"code":<status>,"message":"…","details"?:…}}`, except 401, which is HKube's
//! `{"error":"Unauthorized"}`. Internal failures are logged and answered with a generic text:
//! they are not leaked.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::{engine, store};

#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed or not allowed now.
    BadRequest {
        message: String,
        details: Option<Value>,
    },
    /// 404 with HKube's whole text (`pipeline p Not Found`).
    NotFound(String),
    /// 404 with an empty body (HKube's `GET /exec/flowInput/{jobId}`, reference Q6).
    NotFoundEmpty,
    /// 409 `<type> <name> already exists`.
    Conflict(String),
    /// 401 `{"error":"Unauthorized"}`.
    Unauthorized,
    /// 403: a browser request from another site, or to a name that is not the server's, on a
    /// server without a token (cross-site requests, DNS rebinding).
    Forbidden(String),
    /// 413: the body is larger than the server reads.
    PayloadTooLarge(String),
    /// 415: a body that is not in a media type the route reads.
    UnsupportedMediaType(String),
    /// 405 `Method Not Allowed`.
    MethodNotAllowed,
    /// 503: the engine has shut down (the server is stopping).
    Unavailable,
    /// 500: logged; the client sees a generic text.
    Internal(String),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            details: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) | ApiError::NotFoundEmpty => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ApiError {
    /// One refused item of a request that stores many (`POST /store/pipelines` with an array):
    /// HKube's `{error: {code, message, name?}}`, in the answer's array instead of as the
    /// answer.
    pub fn into_item(self, name: Option<&Value>) -> Value {
        let code = self.status().as_u16();
        let message = match self {
            ApiError::BadRequest { message, .. }
            | ApiError::NotFound(message)
            | ApiError::Conflict(message)
            | ApiError::Forbidden(message)
            | ApiError::PayloadTooLarge(message)
            | ApiError::UnsupportedMediaType(message) => message,
            ApiError::Internal(reason) => {
                tracing::error!("internal error: {reason}");
                "internal error, see the server's log".to_string()
            }
            other => format!("{other:?}"),
        };
        let mut error = json!({"code": code, "message": message});
        if let Some(name) = name.filter(|n| n.is_string()) {
            error["name"] = name.clone();
        }
        json!({ "error": error })
    }
}

impl From<engine::Error> for ApiError {
    fn from(error: engine::Error) -> Self {
        match error {
            engine::Error::Invalid(message) => ApiError::bad_request(message),
            engine::Error::NotAllowed { message, details } => {
                ApiError::BadRequest { message, details }
            }
            engine::Error::NotFound(message) => ApiError::NotFound(message),
            engine::Error::Closed => ApiError::Unavailable,
        }
    }
}

impl From<store::Error> for ApiError {
    fn from(error: store::Error) -> Self {
        match error {
            store::Error::Exists { .. } => ApiError::Conflict(error.to_string()),
            store::Error::NotFound { .. } => ApiError::NotFound(error.to_string()),
            store::Error::Backend(reason) => ApiError::Internal(reason),
        }
    }
}

impl From<crate::spec::Error> for ApiError {
    fn from(error: crate::spec::Error) -> Self {
        ApiError::bad_request(error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (message, details) = match self {
            ApiError::Unauthorized => {
                let mut response = (status, Json(json!({"error": "Unauthorized"}))).into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                return response;
            }
            ApiError::NotFoundEmpty => return status.into_response(),
            ApiError::MethodNotAllowed => ("Method Not Allowed".to_string(), None),
            ApiError::BadRequest { message, details } => (message, details),
            ApiError::NotFound(message)
            | ApiError::Conflict(message)
            | ApiError::Forbidden(message)
            | ApiError::PayloadTooLarge(message)
            | ApiError::UnsupportedMediaType(message) => (message, None),
            ApiError::Unavailable => ("the server is shutting down".to_string(), None),
            ApiError::Internal(reason) => {
                tracing::error!("internal error: {reason}");
                ("internal error, see the server's log".to_string(), None)
            }
        };
        let mut error = json!({"code": status.as_u16(), "message": message});
        if let Some(details) = details {
            error["details"] = details;
        }
        (status, Json(json!({ "error": error }))).into_response()
    }
}
