//! The HTTP application: `app(state) -> Router`, and the state it serves from.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Notify;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::Config;
use crate::metrics::{LayerFigures, Metrics, Route};
use crate::problem::Problem;
use crate::routes;
use crate::stack::Stack;

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) stack: Stack,
    pub(crate) config: Config,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) upstream: String,
    pub(crate) embedded: bool,
    ready: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

impl AppState {
    /// State over a built stack. `upstream` is the base URL shown in status pages;
    /// `embedded` says whether it is the in-process simulator.
    pub fn new(
        stack: Stack,
        config: Config,
        metrics: Arc<Metrics>,
        upstream: String,
        embedded: bool,
    ) -> Self {
        AppState(Arc::new(Inner {
            stack,
            config,
            metrics,
            upstream,
            embedded,
            ready: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        }))
    }

    /// The stack served.
    pub fn stack(&self) -> &Stack {
        &self.0.stack
    }

    /// The instance's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }

    /// Marks the instance as shutting down: `/readyz` answers 503 from now on.
    pub fn begin_shutdown(&self) {
        self.0.ready.store(false, Ordering::SeqCst);
        self.0.idle.notify_waiters();
    }

    /// Whether the instance is serving (not shutting down).
    pub fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::SeqCst)
    }

    /// API requests being answered now.
    pub fn in_flight(&self) -> usize {
        self.0.in_flight.load(Ordering::SeqCst)
    }

    /// Resolves once no API request is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.0.idle.notified();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Figures of the layers, read now.
    pub fn layer_figures(&self) -> LayerFigures {
        let s = &self.0.stack;
        LayerFigures {
            cache: s.cache.as_ref().map(|c| c.stats()),
            limiter: s.limiter.as_ref().map(|l| l.stats()),
            breaker: s.breaker.as_ref().map(|b| b.stats()),
        }
    }
}

/// Counts an API request in flight until dropped.
struct InFlightGuard(AppState);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0 .0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0 .0.idle.notify_waiters();
        }
    }
}

fn route_of(path: Option<&MatchedPath>) -> Route {
    match path.map(MatchedPath::as_str) {
        Some("/v1/users/{id}") | Some("/v1/users/") => Route::User,
        Some("/v1/users") => Route::Batch,
        Some("/healthz") => Route::Healthz,
        Some("/readyz") => Route::Readyz,
        Some("/metrics") => Route::Metrics,
        Some(p) if p.starts_with("/admin") => Route::Admin,
        _ => Route::Other,
    }
}

/// Counts requests by route and status, and API requests in flight (for shutdown).
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = route_of(request.extensions().get::<MatchedPath>());
    let guard = matches!(route, Route::User | Route::Batch).then(|| {
        state.0.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(state.clone())
    });
    let response = next.run(request).await;
    state.0.metrics.http(route, response.status().as_u16());
    drop(guard);
    response
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn acceptable_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

/// Gives every answer an `x-request-id`: the caller's when it is sane, else a new one.
async fn request_id(mut request: Request, next: Next) -> Response {
    let id = match request.headers().get(&X_REQUEST_ID) {
        Some(v) if acceptable_request_id(v) => v.clone(),
        _ => {
            let v = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("0"));
            request
                .headers_mut()
                .insert(X_REQUEST_ID.clone(), v.clone());
            v
        }
    };
    let mut response = next.run(request).await;
    response.headers_mut().insert(X_REQUEST_ID.clone(), id);
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
                HeaderName::from_static("x-cache"),
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

/// The router of the edge service.
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
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), track));
    let router = match cors(&state.0.config.server.cors_allowed_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}
