//! `POST /api/v1/auth/login`: HKube's Keycloak login, for hkubectl, which logs in before its
//! commands (`algorithm version`, `exec raw`, `config`) and reads `data.access_token`.
//!
//! hkube has no users: the password is the server's token. A server without a token answers
//! any login with an empty access token (it asks for none); a server with one gives it back to
//! whoever proves they know it, so a user can set `password` to the token in `.hkuberc`.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::{same_secret, ApiError, ApiState, JsonBody};

/// A day: hkubectl logs in again before this runs out.
const EXPIRES_IN_S: u64 = 86_400;

pub async fn login(
    State(state): State<ApiState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let access_token = match &state.auth_token {
        None => String::new(),
        Some(token) => {
            let given = body.get("password").and_then(Value::as_str).unwrap_or("");
            if !same_secret(given.as_bytes(), token.as_bytes()) {
                return Err(ApiError::Unauthorized);
            }
            token.clone()
        }
    };
    Ok(Json(json!({
        "data": {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": EXPIRES_IN_S,
            "refresh_token": "",
            "refresh_expires_in": 0,
        }
    })))
}
