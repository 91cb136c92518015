//! `POST /admin/config/reload`: an admin action (the same bearer token as the others)
//! that reloads the configuration through [`crate::reload::reload`], as SIGHUP does.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::routes::admin::authorize;
use crate::state::AppState;

/// `200 {"changed": [dotted keys]}`, or a problem saying why nothing changed.
pub async fn reload(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return *r;
    }
    match crate::reload::reload(&state) {
        Ok(changed) => Json(json!({ "changed": changed })).into_response(),
        Err(e) => e.problem().into_response(),
    }
}
