//! The HTTP application: one axum [`Router`] answers every request.
//!
//! Around the routes, outermost first: a caller's `x-request-id` is kept only when it is
//! sane (1–128 visible ASCII characters), tower-http sets a new one when there is none
//! and copies it onto the answer; each answer is counted by route and status, and API
//! requests are tracked in flight for the shutdown drain; CORS applies when configured.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::metrics::Route;
use crate::problem::Problem;
use crate::routes;
pub use crate::state::AppState;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether a caller's request id may be echoed (and logged) as it is.
fn acceptable_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

/// Drops a caller's request id that is not sane, so that a new one is made for it.
async fn sane_request_id(mut request: Request) -> Request {
    if request
        .headers()
        .get(&X_REQUEST_ID)
        .is_some_and(|v| !acceptable_request_id(v))
    {
        request.headers_mut().remove(&X_REQUEST_ID);
    }
    request
}

/// The route of a matched path, as a metric label.
fn route_of(matched: Option<&str>) -> Route {
    match matched {
        Some("/v1/users/{id}" | "/v1/users/") => Route::User,
        Some("/v1/users") => Route::Batch,
        Some("/healthz") => Route::Healthz,
        Some("/readyz") => Route::Readyz,
        Some("/metrics") => Route::Metrics,
        Some(p) if p.starts_with("/admin/") => Route::Admin,
        _ => Route::Other,
    }
}

/// Counts the answer by route and status; an API request counts as in flight until it
/// is answered or dropped.
async fn count(
    State(state): State<AppState>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    let route = route_of(matched.as_ref().map(MatchedPath::as_str));
    let in_flight = matches!(route, Route::User | Route::Batch).then(|| state.track());
    let response = next.run(request).await;
    state.metrics().http(route, response.status().as_u16());
    drop(in_flight);
    response
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                X_REQUEST_ID.clone(),
            ])
            .expose_headers([
                routes::users::X_CACHE.clone(),
                X_REQUEST_ID.clone(),
                header::RETRY_AFTER,
            ])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

async fn fallback(request: Request) -> Response {
    Problem::no_route(request.uri().path()).into_response()
}

async fn method_not_allowed() -> Response {
    Problem::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this endpoint does not take that method",
    )
    .into_response()
}

/// The edge service: its routes, behind CORS (when configured), counting, and request ids.
pub fn app(state: AppState) -> Router {
    let router = Router::new()
        .route("/v1/users/{id}", get(routes::users::get_user))
        .route("/v1/users/", get(routes::users::empty_id))
        .route("/v1/users", get(routes::users::get_batch))
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
        .route("/admin/status", get(routes::admin::status))
        .route(
            "/admin/circuit-breaker/{action}",
            post(routes::admin::breaker),
        )
        .route("/admin/cache/purge", post(routes::admin::purge))
        .route("/admin/rate-limit/resume", post(routes::admin::resume))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed);
    let router = match cors(&state.0.config.server.cors_allowed_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(
            X_REQUEST_ID.clone(),
            MakeRequestUuid,
        ))
        .layer(middleware::map_request(sane_request_id))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_labelled_by_the_path_the_router_matched() {
        for (matched, route) in [
            (Some("/v1/users/{id}"), Route::User),
            (Some("/v1/users/"), Route::User),
            (Some("/v1/users"), Route::Batch),
            (Some("/healthz"), Route::Healthz),
            (Some("/readyz"), Route::Readyz),
            (Some("/metrics"), Route::Metrics),
            (Some("/admin/status"), Route::Admin),
            (Some("/admin/circuit-breaker/{action}"), Route::Admin),
            (None, Route::Other),
        ] {
            assert_eq!(route_of(matched), route, "{matched:?}");
        }
    }

    #[tokio::test]
    async fn only_sane_request_ids_are_kept() {
        let ok = HeaderValue::from_static("req-42");
        assert!(acceptable_request_id(&ok));
        for bad in ["", "has space", &"x".repeat(129)] {
            let v = HeaderValue::from_str(bad).unwrap();
            assert!(!acceptable_request_id(&v), "{bad:?}");
        }
        let request = Request::builder()
            .header("x-request-id", "a b")
            .body(axum::body::Body::empty())
            .unwrap();
        let kept = sane_request_id(request).await;
        assert!(kept.headers().get("x-request-id").is_none());
    }
}
