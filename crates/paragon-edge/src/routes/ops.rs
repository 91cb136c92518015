//! `/healthz`, `/readyz`, `/metrics`.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// `200` while the process runs.
pub async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// `200` while serving, `503` while shutting down.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

/// Prometheus text (version 0.0.4), the format the Prometheus server scrapes by default.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics().render(&state.layer_figures());
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    r
}
