//! The HTTP application: `app(state) -> EdgeApp`, and the state it serves from.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Notify;
use tower::Service;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::client_limit::ClientLimiter;
use crate::config::Config;
use crate::metrics::{LayerFigures, Metrics, Route};
use crate::problem::Problem;
use crate::routes;
use crate::routes::users::{user_answer, UserAnswer};
use crate::stack::Stack;

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) stack: Stack,
    pub(crate) client_limit: Option<ClientLimiter>,
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
        client_limit: Option<ClientLimiter>,
    ) -> Self {
        AppState(Arc::new(Inner {
            stack,
            client_limit,
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

    /// The client of `request` for `[client_limit]`, when it is on.
    pub fn client_of<B>(&self, request: &http::Request<B>) -> Option<String> {
        let limiter = self.0.client_limit.as_ref()?;
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Some(limiter.client_of(request.headers(), peer))
    }

    /// Charges `client` (when client limits are on) `requests` edge requests and
    /// `misses` upstream calls; the answer to send instead when refused.
    pub fn admit_client(
        &self,
        client: Option<&str>,
        requests: u32,
        misses: u32,
    ) -> Result<(), Problem> {
        let (Some(limiter), Some(client)) = (&self.0.client_limit, client) else {
            return Ok(());
        };
        limiter.admit(client, requests, misses).map_err(|refusal| {
            self.0.metrics.client_limited();
            Problem::client_limited(refusal)
        })
    }

    /// Whether a request would be answered from a fresh local cache entry.
    pub fn is_cached(&self, request: &paragon_client::ParagonRequest) -> bool {
        self.0
            .stack
            .cache
            .as_ref()
            .is_some_and(|c| c.is_fresh(request))
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

/// The route of a request path, as a metric label. The paths are matched as the router
/// matches them (`{id}` is one segment), so the label never disagrees with the handler.
fn route_of(path: &str) -> Route {
    if user_segment(path).is_some() {
        return Route::User;
    }
    if let Some(rest) = path.strip_prefix("/v1/users") {
        return if rest.is_empty() {
            Route::Batch
        } else {
            Route::Other
        };
    }
    match path {
        "/healthz" => Route::Healthz,
        "/readyz" => Route::Readyz,
        "/metrics" => Route::Metrics,
        p if p.starts_with("/admin/") => Route::Admin,
        _ => Route::Other,
    }
}

/// The `{id}` segment of `/v1/users/{id}` as sent (still percent-encoded), when `path`
/// is that route.
fn user_segment(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/users/")
        .filter(|segment| !segment.contains('/'))
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn acceptable_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

/// A new request id: a random (v4) UUID.
fn new_request_id() -> HeaderValue {
    let mut buf = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// The edge service as served: the router behind one hand-written front layer that
/// gives every answer an `x-request-id` (the caller's when it is sane, else a new one),
/// counts requests by route and status, and tracks API requests in flight for the
/// shutdown drain. Its future is a concrete type, so the front costs no allocation per
/// request.
///
/// The front also answers the hot route, `GET /v1/users/{id}`, itself when no CORS layer
/// is configured: it has already matched the path for its metrics, so it decodes the id
/// as the router does and calls the same [`user_answer`] as the router's handler. That
/// skips the router's second match, its capture list and boxed handler future: about a
/// quarter of the user-space instructions of a cache hit. Every other request, and every
/// request when CORS is on, goes through the router.
#[derive(Clone)]
pub struct EdgeApp {
    router: Router,
    state: AppState,
    direct_users: bool,
}

impl EdgeApp {
    /// The front's answer to `request`: the hot route directly, the rest by the router.
    fn dispatch(&mut self, route: Route, request: Request) -> Front {
        if self.direct_users && route == Route::User && request.method() == Method::GET {
            if let Some(segment) = user_segment(request.uri().path()) {
                let id = percent_encoding::percent_decode_str(segment).decode_utf8();
                let client = self.state.client_of(&request);
                return Front::User {
                    answer: user_answer(&self.state, id.as_deref().ok(), client.as_deref()),
                };
            }
        }
        Front::Router {
            future: self.router.call(request),
        }
    }
}

type RouterFuture = <Router as Service<Request>>::Future;

impl Service<Request> for EdgeApp {
    type Response = Response;
    type Error = Infallible;
    type Future = Tracked;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        <Router as Service<Request>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = route_of(request.uri().path());
        let id = match request.headers().get(&X_REQUEST_ID) {
            Some(v) if acceptable_request_id(v) => v.clone(),
            _ => new_request_id(),
        };
        let api = matches!(route, Route::User | Route::Batch);
        if api {
            self.state.0.in_flight.fetch_add(1, Ordering::SeqCst);
        }
        Tracked {
            inner: self.dispatch(route, request),
            done: Some(Done {
                tracker: Tracker {
                    state: self.state.clone(),
                    api,
                },
                route,
                id,
            }),
        }
    }
}

/// Counts an API request in flight until dropped (also when the connection is dropped
/// before the answer is written).
struct Tracker {
    state: AppState,
    api: bool,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        // Only a shutdown drain waits for idleness, and it starts after `ready` turns
        // false (both sequentially consistent): a request that still reads `ready` as
        // true ended before the drain's first look at the count.
        if self.api
            && self.state.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && !self.state.is_ready()
        {
            self.state.0.idle.notify_waiters();
        }
    }
}

pin_project_lite::pin_project! {
    // Who answers a request: the front itself (`GET /v1/users/{id}`) or the router.
    #[project = FrontProj]
    enum Front {
        User {
            #[pin]
            answer: UserAnswer,
        },
        Router {
            #[pin]
            future: RouterFuture,
        },
    }
}

impl Future for Front {
    type Output = Result<Response, Infallible>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            FrontProj::User { answer } => answer.poll(cx).map(Ok),
            FrontProj::Router { future } => future.poll(cx),
        }
    }
}

/// What the front does once the answer is there.
struct Done {
    tracker: Tracker,
    route: Route,
    id: HeaderValue,
}

pin_project_lite::pin_project! {
    /// The future of [`EdgeApp`]: the router's, then the request id and the counts.
    pub struct Tracked {
        #[pin]
        inner: Front,
        done: Option<Done>,
    }
}

impl Future for Tracked {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = std::task::ready!(this.inner.poll(cx));
        if let Some(done) = this.done.take() {
            let state = &done.tracker.state;
            state.0.metrics.http(done.route, response.status().as_u16());
            response.headers_mut().insert(X_REQUEST_ID.clone(), done.id);
        }
        Poll::Ready(Ok(response))
    }
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

/// The edge service: its routes behind CORS (when configured) and the front layer.
pub fn app(state: AppState) -> EdgeApp {
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
    let cors = cors(&state.0.config.server.cors_allowed_origins);
    let direct_users = cors.is_none();
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    EdgeApp {
        router: router.with_state(state.clone()),
        state,
        direct_users,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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
            ("/", Route::Other),
            ("/v2/users/u1", Route::Other),
        ] {
            assert_eq!(route_of(path), route, "{path}");
        }
    }

    /// Status, headers but the request id and date, and body of one answer of `app`.
    /// `content-length` is left to the body: the router writes it into the headers, while
    /// hyper writes it from the body's exact size when the headers have none.
    async fn answer_of(app: &EdgeApp, method: Method, target: &str) -> (u16, Vec<String>, Bytes) {
        use tower::ServiceExt;
        let head = method == Method::HEAD;
        let request = Request::builder()
            .method(method)
            .uri(target)
            .body(axum::body::Body::empty())
            .expect("a valid test request");
        let Ok(response) = app.clone().oneshot(request).await;
        let status = response.status().as_u16();
        let mut headers: Vec<String> = response
            .headers()
            .iter()
            .filter(|(name, _)| {
                ![&X_REQUEST_ID, &header::DATE, &header::CONTENT_LENGTH].contains(name)
            })
            .map(|(name, value)| format!("{name}: {value:?}"))
            .collect();
        headers.sort();
        let length = response.headers().get(header::CONTENT_LENGTH).cloned();
        let exact = axum::body::HttpBody::size_hint(response.body()).exact();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("the body reads");
        if !head {
            assert_eq!(
                exact,
                Some(body.len() as u64),
                "{target}: a body of known size"
            );
            if let Some(length) = length {
                assert_eq!(length.to_str().ok(), Some(body.len().to_string().as_str()));
            }
        }
        (status, headers, body)
    }

    #[tokio::test]
    async fn the_direct_user_route_answers_exactly_as_the_router() {
        let config = Config::from_toml("").expect("the default configuration");
        let edge = crate::server::build(config, paragon_layers::Clock::tokio())
            .await
            .expect("the edge builds over its embedded simulator");
        let direct = app(edge.state.clone());
        assert!(
            direct.direct_users,
            "no CORS configured: the front answers users"
        );
        let mut routed = direct.clone();
        routed.direct_users = false;
        let long = format!("/v1/users/{}", "a".repeat(129));
        let targets = [
            "/v1/users/u1",
            "/v1/users/u1?fields=name",
            "/v1/users/a.b~c_d-e",
            "/v1/users/%41bc",
            "/v1/users/missing-7",
            "/v1/users/",
            "/v1/users/a%2Fb",
            "/v1/users/%FF",
            "/v1/users/%zz",
            "/v1/users/%C3%BC",
            "/v1/users/..",
            "/v1/users/.",
            long.as_str(),
        ];
        for target in targets {
            for method in [Method::GET, Method::HEAD, Method::POST] {
                // The router's answer fills the cache first, so both then answer alike.
                answer_of(&routed, method.clone(), target).await;
                let by_router = answer_of(&routed, method.clone(), target).await;
                let by_front = answer_of(&direct, method.clone(), target).await;
                assert_eq!(by_front, by_router, "{method} {target}");
            }
        }
        let ok = answer_of(&direct, Method::GET, "/v1/users/u1").await;
        assert_eq!(ok.0, 200);
        assert!(ok.1.contains(&"x-cache: \"HIT\"".to_owned()), "{:?}", ok.1);
    }

    #[test]
    fn generated_request_ids_are_distinct_uuids() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        for v in [a, b] {
            let text = v.to_str().unwrap();
            assert_eq!(uuid::Uuid::parse_str(text).unwrap().get_version_num(), 4);
            assert!(acceptable_request_id(&v));
        }
    }
}
