//! The service's metrics, rendered as Prometheus text.
//!
//! A fixed set of atomic counters per instance (no global registry, no label hashing on
//! the request path): several edges in one process keep separate figures, and counting a
//! request costs one uncontended-cache-line atomic add. Layer figures (cache, limiter,
//! breaker) are read from the layers' own handles when `/metrics` is scraped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::BoxFuture;
use paragon_client::{Error, ParagonRequest, ParagonResponse};
use paragon_layers::circuit_breaker::{BreakerState, Transition};
use tower::Service;

/// Routes, as metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /v1/users/{id}`
    User,
    /// `GET /v1/users?ids=`
    Batch,
    /// `/healthz`
    Healthz,
    /// `/readyz`
    Readyz,
    /// `/metrics`
    Metrics,
    /// `/admin/*`
    Admin,
    /// Anything else.
    Other,
}

/// Every route, in declaration order (`route as usize` indexes it).
const ROUTES: [Route; 7] = [
    Route::User,
    Route::Batch,
    Route::Healthz,
    Route::Readyz,
    Route::Metrics,
    Route::Admin,
    Route::Other,
];

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::User => "user",
            Route::Batch => "batch",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::Admin => "admin",
            Route::Other => "other",
        }
    }
}

/// Outcomes of an upstream call, as metric labels.
const OUTCOMES: [&str; 11] = [
    "ok",
    "not_found",
    "upstream_rate_limited",
    "upstream_status",
    "timeout",
    "connect",
    "transport",
    "malformed",
    "body_too_large",
    "local",
    "other",
];

fn outcome_index(result: &Result<ParagonResponse, Error>) -> usize {
    let kind = match result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    OUTCOMES
        .iter()
        .position(|o| *o == kind)
        .unwrap_or(OUTCOMES.len() - 1)
}

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

const STATES: [BreakerState; 4] = [
    BreakerState::Closed,
    BreakerState::Open,
    BreakerState::HalfOpen,
    BreakerState::ForcedOpen,
];

fn state_index(s: BreakerState) -> usize {
    STATES.iter().position(|x| *x == s).unwrap_or(0)
}

#[repr(align(128))]
struct Padded<T>(T);

/// Why the edge closed a frontend's connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// A request head was not finished within `server.header_read_timeout`.
    HeaderTimeout,
    /// Nothing happened for `server.idle_timeout` (or an answer was not read).
    Idle,
}

impl CloseReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::Idle => "idle_timeout",
        }
    }
}

/// Frontend connections.
#[derive(Default)]
struct Connections {
    open: AtomicI64,
    max: AtomicU64,
    at_cap: AtomicI64,
    closed_header_timeout: AtomicU64,
    closed_idle: AtomicU64,
}

/// Counters of one edge instance.
pub struct Metrics {
    http: Vec<Padded<Vec<AtomicU64>>>,
    upstream: Padded<Upstream>,
    transitions: [[AtomicU64; 4]; 4],
    redis_up: AtomicI64,
    connections: Padded<Connections>,
    client_limited: AtomicU64,
}

struct Upstream {
    calls: [AtomicU64; OUTCOMES.len()],
    buckets: [AtomicU64; BUCKETS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
    in_flight: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            http: ROUTES
                .iter()
                .map(|_| Padded((0..600).map(|_| AtomicU64::new(0)).collect()))
                .collect(),
            upstream: Padded(Upstream {
                calls: Default::default(),
                buckets: Default::default(),
                sum_micros: AtomicU64::new(0),
                count: AtomicU64::new(0),
                in_flight: AtomicI64::new(0),
            }),
            transitions: Default::default(),
            redis_up: AtomicI64::new(-1),
            connections: Padded(Connections::default()),
            client_limited: AtomicU64::new(0),
        }
    }
}

/// Figures read from the layers at scrape time.
#[derive(Default)]
pub struct LayerFigures {
    /// Cache counters, when a cache is in the stack.
    pub cache: Option<paragon_layers::cache::CacheStats>,
    /// Limiter counters, when a limiter is in the stack.
    pub limiter: Option<paragon_layers::rate_limit::RateLimitStats>,
    /// Breaker counters, when a breaker is in the stack.
    pub breaker: Option<paragon_layers::circuit_breaker::BreakerStats>,
}

impl Metrics {
    /// Counts one answered HTTP request.
    #[inline]
    pub fn http(&self, route: Route, status: u16) {
        // `ROUTES` lists the variants in declaration order, so the discriminant is the index.
        if let Some(c) = self.http[route as usize].0.get(usize::from(status)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one change of the breaker's state.
    pub fn transition(&self, t: Transition) {
        self.transitions[state_index(t.from)][state_index(t.to)].fetch_add(1, Ordering::Relaxed);
    }

    /// Records whether the shared store is reachable (fleet mode).
    pub fn set_redis_up(&self, up: bool) {
        self.redis_up.store(i64::from(up), Ordering::Relaxed);
    }

    /// Counts a request refused by `[client_limit]`.
    pub fn client_limited(&self) {
        self.client_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection accepted.
    pub fn connection_opened(&self) {
        self.connections.0.open.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection closed, for whatever reason.
    pub fn connection_ended(&self) {
        self.connections.0.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts a connection closed by one of the edge's timeouts.
    pub fn connection_closed(&self, reason: CloseReason) {
        let c = &self.connections.0;
        match reason {
            CloseReason::HeaderTimeout => &c.closed_header_timeout,
            CloseReason::Idle => &c.closed_idle,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Records `server.max_connections`.
    pub fn set_connection_cap(&self, max: usize) {
        self.connections.0.max.store(max as u64, Ordering::Relaxed);
    }

    /// Records whether the accept loop is holding new connections back.
    pub fn set_at_cap(&self, at_cap: bool) {
        self.connections
            .0
            .at_cap
            .store(i64::from(at_cap), Ordering::Relaxed);
    }

    /// Frontend connections open now, and the cap.
    pub fn connections(&self) -> (i64, u64) {
        let c = &self.connections.0;
        (
            c.open.load(Ordering::Relaxed),
            c.max.load(Ordering::Relaxed),
        )
    }

    /// Connections closed by the head timeout and by the idle timeout so far.
    pub fn connections_closed(&self) -> (u64, u64) {
        let c = &self.connections.0;
        (
            c.closed_header_timeout.load(Ordering::Relaxed),
            c.closed_idle.load(Ordering::Relaxed),
        )
    }

    /// Upstream calls in flight now.
    pub fn upstream_in_flight(&self) -> i64 {
        self.upstream.0.in_flight.load(Ordering::Relaxed)
    }

    /// Upstream calls made, whatever their outcome.
    pub fn upstream_calls(&self) -> u64 {
        self.upstream
            .0
            .calls
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    fn record_upstream(&self, result: &Result<ParagonResponse, Error>, started: Instant) {
        let u = &self.upstream.0;
        let secs = started.elapsed().as_secs_f64();
        u.calls[outcome_index(result)].fetch_add(1, Ordering::Relaxed);
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            u.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        u.sum_micros
            .fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        u.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition of everything.
    pub fn render(&self, layers: &LayerFigures) -> String {
        let mut out = String::with_capacity(4096);
        let w = &mut out;
        header(
            w,
            "paragon_edge_http_requests_total",
            "counter",
            "HTTP requests answered, by route and status.",
        );
        for (route, counters) in ROUTES.iter().zip(&self.http) {
            for (status, c) in counters.0.iter().enumerate() {
                let n = c.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        w,
                        "paragon_edge_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                        route.label()
                    );
                }
            }
        }

        let c = &self.connections.0;
        header(
            w,
            "paragon_edge_connections_open",
            "gauge",
            "Frontend connections open.",
        );
        let _ = writeln!(
            w,
            "paragon_edge_connections_open {}",
            c.open.load(Ordering::Relaxed)
        );
        header(
            w,
            "paragon_edge_connections_at_cap",
            "gauge",
            "1 while server.max_connections are open and new ones wait in the backlog.",
        );
        let _ = writeln!(
            w,
            "paragon_edge_connections_at_cap {}",
            c.at_cap.load(Ordering::Relaxed)
        );
        header(
            w,
            "paragon_edge_connections_closed_total",
            "counter",
            "Frontend connections closed by the edge's timeouts, by reason.",
        );
        let (head, idle) = self.connections_closed();
        let _ = writeln!(
            w,
            "paragon_edge_connections_closed_total{{reason=\"header_timeout\"}} {head}"
        );
        let _ = writeln!(
            w,
            "paragon_edge_connections_closed_total{{reason=\"idle_timeout\"}} {idle}"
        );

        header(
            w,
            "paragon_edge_client_limit_rejections_total",
            "counter",
            "Requests refused because their client was over its own limit.",
        );
        let _ = writeln!(
            w,
            "paragon_edge_client_limit_rejections_total {}",
            self.client_limited.load(Ordering::Relaxed)
        );

        let u = &self.upstream.0;
        header(
            w,
            "paragon_edge_upstream_calls_total",
            "counter",
            "Calls that reached ParagoN, by outcome.",
        );
        for (name, c) in OUTCOMES.iter().zip(&u.calls) {
            let _ = writeln!(
                w,
                "paragon_edge_upstream_calls_total{{outcome=\"{name}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        header(
            w,
            "paragon_edge_upstream_in_flight",
            "gauge",
            "Calls to ParagoN in flight.",
        );
        let _ = writeln!(
            w,
            "paragon_edge_upstream_in_flight {}",
            u.in_flight.load(Ordering::Relaxed)
        );
        header(
            w,
            "paragon_edge_upstream_latency_seconds",
            "histogram",
            "Latency of calls to ParagoN.",
        );
        let mut cumulative = 0;
        for (bound, c) in BUCKETS.iter().zip(&u.buckets) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(
                w,
                "paragon_edge_upstream_latency_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = u.count.load(Ordering::Relaxed);
        let _ = writeln!(
            w,
            "paragon_edge_upstream_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            w,
            "paragon_edge_upstream_latency_seconds_sum {}",
            u.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(w, "paragon_edge_upstream_latency_seconds_count {count}");

        if let Some(c) = &layers.cache {
            header(
                w,
                "paragon_edge_cache_hits_total",
                "counter",
                "Answers served from a fresh cache entry.",
            );
            let _ = writeln!(w, "paragon_edge_cache_hits_total {}", c.hits);
            header(
                w,
                "paragon_edge_cache_misses_total",
                "counter",
                "Cache misses (fills started).",
            );
            let _ = writeln!(w, "paragon_edge_cache_misses_total {}", c.misses);
            header(
                w,
                "paragon_edge_cache_stale_total",
                "counter",
                "Stale answers served while ParagoN could not answer.",
            );
            let _ = writeln!(w, "paragon_edge_cache_stale_total {}", c.stale);
            header(
                w,
                "paragon_edge_cache_entries",
                "gauge",
                "Entries in the cache.",
            );
            let _ = writeln!(w, "paragon_edge_cache_entries {}", c.entries);
            header(
                w,
                "paragon_edge_cache_bytes",
                "gauge",
                "Bytes of the bodies in the cache.",
            );
            let _ = writeln!(w, "paragon_edge_cache_bytes {}", c.bytes);
        }
        if let Some(l) = &layers.limiter {
            header(
                w,
                "paragon_edge_rate_limit_admitted_total",
                "counter",
                "Upstream calls admitted by the rate limiter.",
            );
            let _ = writeln!(w, "paragon_edge_rate_limit_admitted_total {}", l.admitted);
            header(
                w,
                "paragon_edge_rate_limit_rejections_total",
                "counter",
                "Calls refused by the rate limiter, by cause.",
            );
            let _ = writeln!(
                w,
                "paragon_edge_rate_limit_rejections_total{{cause=\"budget\"}} {}",
                l.rejected_budget
            );
            let _ = writeln!(
                w,
                "paragon_edge_rate_limit_rejections_total{{cause=\"upstream_pause\"}} {}",
                l.rejected_pause
            );
            header(
                w,
                "paragon_edge_rate_limit_upstream_429_total",
                "counter",
                "429 answers received from ParagoN.",
            );
            let _ = writeln!(
                w,
                "paragon_edge_rate_limit_upstream_429_total {}",
                l.upstream_429
            );
        }
        if let Some(b) = &layers.breaker {
            header(
                w,
                "paragon_edge_circuit_breaker_state",
                "gauge",
                "1 for the breaker's current state.",
            );
            for s in STATES {
                let _ = writeln!(
                    w,
                    "paragon_edge_circuit_breaker_state{{state=\"{}\"}} {}",
                    s.as_str(),
                    u8::from(b.state == s)
                );
            }
            header(
                w,
                "paragon_edge_circuit_breaker_transitions_total",
                "counter",
                "Changes of the breaker's state.",
            );
            for (i, from) in STATES.iter().enumerate() {
                for (j, to) in STATES.iter().enumerate() {
                    let n = self.transitions[i][j].load(Ordering::Relaxed);
                    if n > 0 {
                        let _ = writeln!(
                            w,
                            "paragon_edge_circuit_breaker_transitions_total{{from=\"{}\",to=\"{}\"}} {n}",
                            from.as_str(),
                            to.as_str()
                        );
                    }
                }
            }
            header(
                w,
                "paragon_edge_circuit_breaker_rejections_total",
                "counter",
                "Calls refused while the breaker was open.",
            );
            let _ = writeln!(
                w,
                "paragon_edge_circuit_breaker_rejections_total {}",
                b.rejected
            );
        }
        let redis = self.redis_up.load(Ordering::Relaxed);
        if redis >= 0 {
            header(
                w,
                "paragon_edge_redis_up",
                "gauge",
                "1 while the shared Redis store is reachable.",
            );
            let _ = writeln!(w, "paragon_edge_redis_up {redis}");
        }
        out
    }
}

fn header(w: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(w, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The bottom wrapper of the stack: bounds the calls in flight to ParagoN
/// (`upstream.max_concurrency`), and counts every call that reaches it, its outcome and
/// latency. A call that finds no free slot within `queue_timeout` fails with
/// [`Error::Overloaded`] instead of queueing without bound.
#[derive(Clone)]
pub struct Instrumented<S> {
    inner: S,
    metrics: Arc<Metrics>,
    slots: Arc<tokio::sync::Semaphore>,
    queue_timeout: std::time::Duration,
}

impl<S> Instrumented<S> {
    /// Wraps the transport.
    pub fn new(
        inner: S,
        metrics: Arc<Metrics>,
        max_concurrency: usize,
        queue_timeout: std::time::Duration,
    ) -> Self {
        Instrumented {
            inner,
            metrics,
            slots: Arc::new(tokio::sync::Semaphore::new(max_concurrency)),
            queue_timeout,
        }
    }
}

/// Keeps the in-flight gauge right even when a call is dropped half-way.
struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.upstream.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S> Service<ParagonRequest> for Instrumented<S>
where
    S: Service<ParagonRequest, Response = ParagonResponse, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = ParagonResponse;
    type Error = Error;
    type Future = BoxFuture<'static, Result<ParagonResponse, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: ParagonRequest) -> Self::Future {
        let metrics = self.metrics.clone();
        let slots = self.slots.clone();
        let queue_timeout = self.queue_timeout;
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let _permit = match slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => match tokio::time::timeout(queue_timeout, slots.acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => return Err(Error::Overloaded),
                },
            };
            metrics.upstream.0.in_flight.fetch_add(1, Ordering::Relaxed);
            let _in_flight = InFlight(metrics.clone());
            let started = Instant::now();
            let result = inner.call(req).await;
            metrics.record_upstream(&result, started);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_indexed_by_their_discriminant() {
        for (i, r) in ROUTES.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
        let m = Metrics::default();
        m.http(Route::Admin, 401);
        assert!(m
            .render(&LayerFigures::default())
            .contains("route=\"admin\",status=\"401\"} 1"));
    }
}
