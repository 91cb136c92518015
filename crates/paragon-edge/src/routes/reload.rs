//! `POST /admin/config/reload`: an admin action (the same bearer token as the others)
//! that reloads the configuration through [`crate::reload::reload`], as SIGHUP does.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::problem::Problem;
use crate::routes::admin::authorize;
use crate::state::AppState;

/// `200 {"changed": [dotted keys]}`, or a problem saying why nothing changed.
#[utoipa::path(post, path = "/admin/config/reload", tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The file and environment were read again and are in force: `changed` lists the dotted key of every setting that changed, sorted (`[]` when none did)", body = Object, content_type = "application/json"),
        (status = 400, description = "Nothing was changed: the configuration is invalid, or changes a key that needs a restart; the detail names the key", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid `Authorization: Bearer <server.admin_token>`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Admin actions are off: `server.admin_token` is not set", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The configuration was not read from a file and the environment: nothing to reload", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn reload(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return *r;
    }
    match crate::reload::reload(&state) {
        Ok(changed) => Json(json!({ "changed": changed })).into_response(),
        Err(e) => e.problem().into_response(),
    }
}
