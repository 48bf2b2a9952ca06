//! `DELETE /api/v1/cache`: empties hkube's result cache (nodes with `cache: true`, see
//! [`crate::cache`]). Retention empties it by age on its own.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, ApiState};

pub async fn clear(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let deleted = state.store.clear_result_cache()?;
    Ok(Json(json!({"message": "OK", "deleted": deleted})))
}
