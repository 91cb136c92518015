//! The HTTP application: one axum [`Router`] answers every request.
//!
//! Around it, outermost first: a caller's `x-request-id` is kept only when it is sane
//! (1–128 visible ASCII characters), tower-http sets a new one when there is none and
//! copies it onto the answer; each answer is counted by route and status, API requests
//! are tracked in flight for the shutdown drain, every log line about a request is
//! written in a span that names its request id, and (with `server.access_log`) one line
//! per request says what it was and how it ended; CORS applies when configured.
//!
//! These wrap the router as a whole (`ServiceBuilder`), not each route
//! (`Router::layer`): a layer given to the router wraps every route in a boxed service
//! that is cloned for each request, and with four of them a cache hit cost about 25 %
//! more CPU (16.4 against 12.8 µs a request, `bench/compare.sh`). For the same reason
//! the count is a small tower service with a concrete future rather than
//! `axum::middleware::from_fn`, which boxes the rest of the stack on every request; it
//! labels a request by its path the way the routes below match it (a unit test keeps
//! the two in step). The span and the access log live in the same service (rather than
//! tower-http's `TraceLayer`, which would be one more layer and future per request).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::HttpBody;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use tower::util::MapRequestLayer;
use tower::{Service, ServiceBuilder};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::metrics::Route;
use crate::problem::Problem;
use crate::routes;
pub use crate::state::AppState;
use crate::state::InFlight;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether a caller's request id may be echoed (and logged) as it is.
fn acceptable_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

/// Drops a caller's request id that is not sane, so that a new one is made for it.
fn sane_request_id<B>(mut request: http::Request<B>) -> http::Request<B> {
    if request
        .headers()
        .get(&X_REQUEST_ID)
        .is_some_and(|v| !acceptable_request_id(v))
    {
        request.headers_mut().remove(&X_REQUEST_ID);
    }
    request
}

/// The route of a request path, as a metric label: the route of [`app`] that answers it
/// (`{id}` is one segment), or `Other` for the fallback.
fn route_of(path: &str) -> Route {
    if let Some(rest) = path.strip_prefix("/v1/users") {
        return match rest {
            "" => Route::Batch,
            r if r.starts_with('/') && !r[1..].contains('/') => Route::User,
            _ => Route::Other,
        };
    }
    match path {
        "/healthz" => Route::Healthz,
        "/readyz" => Route::Readyz,
        "/metrics" => Route::Metrics,
        "/admin/status"
        | "/admin/cache/purge"
        | "/admin/rate-limit/resume"
        | "/admin/config/reload" => Route::Admin,
        "/admin/ui" => Route::Admin,
        "/openapi.json" => Route::Docs,
        p if p
            .strip_prefix("/admin/circuit-breaker/")
            .is_some_and(|action| !action.is_empty() && !action.contains('/')) =>
        {
            Route::Admin
        }
        _ => Route::Other,
    }
}

/// The route pattern of a label, for the access log.
fn pattern(route: Route) -> &'static str {
    match route {
        Route::User => "/v1/users/{id}",
        Route::Batch => "/v1/users",
        Route::Healthz => "/healthz",
        Route::Readyz => "/readyz",
        Route::Metrics => "/metrics",
        Route::Admin => "/admin",
        Route::Docs => "/openapi.json",
        Route::Other => "none",
    }
}

/// Counts each answer by route and status; an API request counts as in flight until it
/// is answered or dropped. The request is served inside a span that carries its request
/// id, so every line logged about it names it (a cache fill on a task of its own takes
/// the span along); with `server.access_log` one line at info (target
/// `paragon_edge::access`) says what the request was and how it ended. A `/v1` answer
/// that did not go through the stack gets the `Server-Timing` that says so.
#[derive(Clone)]
pub struct Count<S> {
    inner: S,
    state: AppState,
}

/// What the access log line of a request says besides its answer.
struct Access {
    method: Method,
    uri: http::Uri,
    request_id: Option<HeaderValue>,
    started: paragon_layers::Timestamp,
}

impl<S, B> Service<http::Request<B>> for Count<S>
where
    S: Service<http::Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let route = route_of(request.uri().path());
        let in_flight = matches!(route, Route::User | Route::Batch).then(|| self.state.track());
        let request_id = request
            .headers()
            .get(&X_REQUEST_ID)
            .filter(|v| !holds_a_secret(&self.state, v));
        // At info, the level of the access log: under the default filter every line about
        // the request (the access line, an upstream failure, a breaker transition) names
        // it. A stricter filter (`RUST_LOG=warn`) drops the per-request logging whole, span
        // included: making the span costs about 2,000 instructions a request, 8 % of a
        // cache hit (callgrind, `bench/run.sh --only instr`).
        let span = tracing::info_span!("request", request_id = %text(request_id));
        let access_log = self.state.read_config(|c| c.server.access_log)
            && tracing::enabled!(target: "paragon_edge::access", tracing::Level::INFO);
        let access = access_log.then(|| {
            Box::new(Access {
                method: request.method().clone(),
                uri: request.uri().clone(),
                request_id: request_id.cloned(),
                started: self.state.stack().clock.now(),
            })
        });
        let inner = span.in_scope(|| self.inner.call(request));
        Counted {
            inner,
            route,
            span,
            access,
            state: Some((self.state.clone(), in_flight)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Count`].
    pub struct Counted<F> {
        #[pin]
        inner: F,
        route: Route,
        span: tracing::Span,
        access: Option<Box<Access>>,
        state: Option<(AppState, Option<InFlight>)>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Counted<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let polled = {
            let _entered = this.span.enter();
            this.inner.poll(cx)
        };
        let Ok(mut response) = std::task::ready!(polled);
        let route = *this.route;
        if matches!(route, Route::User | Route::Batch) {
            if let http::header::Entry::Vacant(v) = response
                .headers_mut()
                .entry(&crate::server_timing::SERVER_TIMING)
            {
                v.insert(crate::server_timing::LOCAL);
            }
        }
        if let Some((state, _in_flight)) = this.state.take() {
            let status = response.status().as_u16();
            state.metrics().http(route, status);
            if let Some(access) = this.access.take() {
                log_access(&state, route, &access, &response);
            }
        }
        Poll::Ready(Ok(response))
    }
}

/// Whether a caller's request id contains the API key or the admin token. The caller
/// gets its own id back, but it is not logged: secrets never reach a log line.
fn holds_a_secret(state: &AppState, id: &HeaderValue) -> bool {
    let id = id.as_bytes();
    state.read_config(|config| {
        [
            config.upstream.api_key.expose(),
            config.server.admin_token.expose(),
        ]
        .into_iter()
        .any(|secret| {
            !secret.is_empty() && id.windows(secret.len()).any(|w| w == secret.as_bytes())
        })
    })
}

/// A header's text for a log line, `-` when absent (or not logged).
fn text(v: Option<&HeaderValue>) -> &str {
    v.and_then(|v| v.to_str().ok()).unwrap_or("-")
}

/// The access log line of one answered request.
fn log_access(state: &AppState, route: Route, access: &Access, response: &Response) {
    let took = state.stack().clock.now().since(access.started);
    tracing::info!(
        target: "paragon_edge::access",
        method = %access.method,
        route = pattern(route),
        path = access.uri.path(),
        status = response.status().as_u16(),
        duration_ms = took.as_secs_f64() * 1000.0,
        x_cache = text(response.headers().get(&routes::users::X_CACHE)),
        request_id = %text(access.request_id.as_ref()),
        "request"
    );
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
            // The API frontends call is read-only; the admin actions (POST) are for
            // operators, from the edge's own page or a shell, not from other origins.
            .allow_methods([Method::GET])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                X_REQUEST_ID.clone(),
                header::IF_NONE_MATCH,
                axum::http::HeaderName::from_static("purpose"),
            ])
            .expose_headers([
                routes::users::X_CACHE.clone(),
                X_REQUEST_ID.clone(),
                header::RETRY_AFTER,
                crate::server_timing::SERVER_TIMING.clone(),
                header::ETAG,
                crate::problem::RATELIMIT.clone(),
                crate::problem::RATELIMIT_POLICY.clone(),
            ])
            .max_age(std::time::Duration::from_secs(600))
            // Answers differ by `Origin` only: the allowed methods and headers are fixed
            // lists, not echoes of the preflight's request headers.
            .vary([header::ORIGIN]),
    )
}

async fn fallback(request: Request) -> Response {
    Problem::no_route(request.uri().path()).into_response()
}

async fn method_not_allowed(method: Method, headers: http::HeaderMap) -> Response {
    // A browser's CORS preflight reaches the routes only when CORS is off (otherwise the
    // CORS layer answers it): say how to turn it on instead of a bare refusal.
    let preflight =
        method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let detail = if preflight {
        "this is a browser's CORS preflight, and CORS is off on this edge: allow the page's \
         origin with server.cors_allowed_origins (or the environment, e.g. \
         PARAGON_EDGE__SERVER__CORS_ALLOWED_ORIGINS=http://localhost:3000)"
    } else {
        "this endpoint does not take that method"
    };
    Problem::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        detail,
    )
    .into_response()
}

/// The edge service: its routes, behind CORS (when configured), counting, and request ids.
pub fn app<B>(
    state: AppState,
) -> impl Service<
    http::Request<B>,
    Response = Response,
    Error = Infallible,
    Future = impl Future<Output = Result<Response, Infallible>> + Send + 'static,
> + Clone
       + Send
       + 'static
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
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
        .route("/admin/config/reload", post(routes::reload::reload))
        .route("/admin/ui", get(routes::docs::admin_ui))
        .route("/openapi.json", get(routes::docs::openapi))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    let cors = cors(&state.config().server.cors_allowed_origins);
    ServiceBuilder::new()
        .layer(MapRequestLayer::new(sane_request_id::<B>))
        .layer(SetRequestIdLayer::new(
            X_REQUEST_ID.clone(),
            MakeRequestUuid,
        ))
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID.clone()))
        .layer(tower::layer::layer_fn(move |inner| Count {
            inner,
            state: state.clone(),
        }))
        .option_layer(cors)
        .service(router)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_labelled_as_the_router_matches_them() {
        for (path, route) in [
            ("/v1/users/u1", Route::User),
            ("/v1/users/a%2Fb", Route::User),
            ("/v1/users/", Route::User),
            ("/v1/users", Route::Batch),
            ("/v1/users/a/b", Route::Other),
            ("/v1/usersx", Route::Other),
            ("/healthz", Route::Healthz),
            ("/readyz", Route::Readyz),
            ("/metrics", Route::Metrics),
            ("/admin/status", Route::Admin),
            ("/admin/circuit-breaker/open", Route::Admin),
            ("/admin/cache/purge", Route::Admin),
            ("/admin/rate-limit/resume", Route::Admin),
            ("/admin/config/reload", Route::Admin),
            ("/admin/ui", Route::Admin),
            ("/openapi.json", Route::Docs),
            ("/admin/nothing", Route::Other),
            ("/admin/circuit-breaker/a/b", Route::Other),
            ("/", Route::Other),
            ("/v2/users/u1", Route::Other),
        ] {
            assert_eq!(route_of(path), route, "{path}");
        }
    }

    /// Every labelled path reaches a route of the router, and the others its fallback.
    #[tokio::test]
    async fn the_labels_agree_with_the_router() {
        use tower::ServiceExt;
        let settings = crate::config::Settings::from_toml("").expect("defaults");
        let edge = crate::server::build(settings, paragon_layers::Clock::tokio())
            .await
            .expect("the edge builds over its embedded simulator");
        let service = app::<axum::body::Body>(edge.state.clone());
        for path in [
            "/v1/users/u1",
            "/v1/users/",
            "/v1/users?ids=u1",
            "/v1/users/a/b",
            "/healthz",
            "/admin/status",
            "/admin/ui",
            "/openapi.json",
            "/admin/nothing",
            "/admin/circuit-breaker/a/b",
        ] {
            let uri: http::Uri = path.parse().unwrap();
            let routed = route_of(uri.path());
            let request = Request::builder()
                .uri(path)
                .body(axum::body::Body::empty())
                .unwrap();
            let Ok(response) = service.clone().oneshot(request).await;
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let fallback = String::from_utf8_lossy(&body).contains("no-route");
            assert_eq!(fallback, routed == Route::Other, "{path}: {body:?}");
        }
    }

    #[test]
    fn only_sane_request_ids_are_kept() {
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
        let kept = sane_request_id(request);
        assert!(kept.headers().get("x-request-id").is_none());
    }
}
