//! The service's metrics, as Prometheus text, through the `prometheus-client` crate.
//!
//! Each edge owns its own [`Registry`], so several edges in one process keep separate
//! figures. The counters the request path touches are resolved once and kept at hand,
//! so counting a request is an atomic add. Figures the layers keep themselves (cache,
//! limiter, breaker) and Redis reachability are read when `/metrics` is scraped, and
//! exposed as constant samples after the registry's own.
//!
//! For the live figures of `/admin/status` and `/admin/ui`, it also keeps what a
//! cumulative counter cannot show: the latencies of the recent upstream calls (for their
//! p50 and p99 now) and the breaker's recent transitions with their times.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use paragon_client::{Error, ParagonResponse};
use paragon_layers::circuit_breaker::{BreakerState, Transition};
use paragon_layers::{Clock, Timestamp};
use parking_lot::Mutex;
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`Metrics::render`] writes: Prometheus text, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

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
    /// `/openapi.json`
    Docs,
}

/// Every route, in declaration order (`route as usize` indexes it).
const ROUTES: [Route; 8] = [
    Route::User,
    Route::Batch,
    Route::Healthz,
    Route::Readyz,
    Route::Metrics,
    Route::Admin,
    Route::Other,
    Route::Docs,
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
            Route::Docs => "openapi",
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    from: &'static str,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

/// Statuses below this have a slot in the table of request counters.
const STATUS_SLOTS: usize = 600;

/// The metrics of one edge instance.
pub struct Metrics {
    registry: Registry,
    http: Family<HttpLabels, Counter>,
    /// The counter of each (route, status) pair, filled the first time the pair is
    /// counted. A `Family` lookup takes a read lock and hashes the labels; the table makes
    /// counting a request one atomic load and one atomic add, and a pair still appears in
    /// `/metrics` only once it has been counted.
    http_slots: Vec<Box<[OnceLock<Counter>]>>,
    upstream_calls: [Counter; OUTCOMES.len()],
    upstream_latency: Histogram,
    upstream_in_flight: Gauge,
    connections_open: Gauge,
    connections_at_cap: Gauge,
    connections_closed: [Counter; 2],
    connections_max: AtomicU64,
    client_limited: Counter,
    /// Exposed only with a breaker in the stack, as its other figures are.
    transitions: Family<TransitionLabels, Counter>,
    /// -1 outside fleet mode, where the gauge is not exposed; else 0 or 1.
    redis_up: AtomicI64,
    /// Where the times of [`Metrics::recent`] are read.
    clock: Clock,
    /// The latest upstream latencies and breaker transitions, with their times.
    recent: Mutex<Recent>,
}

/// Upstream latencies kept for the live quantiles: the last this many calls...
const LATENCY_SAMPLES: usize = 1024;
/// ...that ended within this long.
pub const LATENCY_WINDOW: Duration = Duration::from_secs(60);
/// Breaker transitions kept for the status page.
const TRANSITIONS_KEPT: usize = 50;

/// What [`Metrics`] keeps of the latest events, for the live status.
#[derive(Default)]
struct Recent {
    /// When each of the latest upstream calls ended, and how long it took.
    latencies: VecDeque<(Timestamp, Duration)>,
    /// The latest breaker transitions and when they happened, oldest first.
    transitions: VecDeque<(Timestamp, Transition)>,
}

/// Upstream latency quantiles of the recent calls.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatencyQuantiles {
    /// The median.
    pub p50: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// How many calls they are computed over.
    pub samples: usize,
}

/// A breaker transition and how long ago it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecentTransition {
    /// The change of state.
    pub transition: Transition,
    /// Time since it happened.
    pub ago: Duration,
}

/// The `q` quantile (0 to 1) of `sorted` by the nearest-rank method.
fn nearest_rank(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl Default for Metrics {
    /// Metrics whose recent events are timed by a manual clock, which stands still: use
    /// [`Metrics::new`] with the stack's clock in a server.
    fn default() -> Self {
        Metrics::new(Clock::manual())
    }
}

impl Metrics {
    /// Metrics whose recent latencies and transitions are timed by `clock`.
    pub fn new(clock: Clock) -> Self {
        let mut registry = Registry::default();
        let http = Family::<HttpLabels, Counter>::default();
        registry.register(
            "paragon_edge_http_requests",
            "HTTP requests answered, by route and status",
            http.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "paragon_edge_connections_open",
            "Frontend connections open",
            connections_open.clone(),
        );
        let connections_at_cap = Gauge::default();
        registry.register(
            "paragon_edge_connections_at_cap",
            "1 while server.max_connections are open and new ones wait in the backlog",
            connections_at_cap.clone(),
        );
        let closed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "paragon_edge_connections_closed",
            "Frontend connections closed by the edge's timeouts, by reason",
            closed.clone(),
        );
        let connections_closed = [CloseReason::HeaderTimeout, CloseReason::Idle]
            .map(|r| closed.get_or_create_owned(&ReasonLabels { reason: r.label() }));
        let client_limited = Counter::default();
        registry.register(
            "paragon_edge_client_limit_rejections",
            "Requests refused because their client was over its own limit",
            client_limited.clone(),
        );
        let calls = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "paragon_edge_upstream_calls",
            "Calls that reached ParagoN, by outcome",
            calls.clone(),
        );
        let upstream_calls =
            OUTCOMES.map(|outcome| calls.get_or_create_owned(&OutcomeLabels { outcome }));
        let upstream_in_flight = Gauge::default();
        registry.register(
            "paragon_edge_upstream_in_flight",
            "Calls to ParagoN in flight",
            upstream_in_flight.clone(),
        );
        let upstream_latency = Histogram::new(BUCKETS);
        registry.register(
            "paragon_edge_upstream_latency_seconds",
            "Latency of calls to ParagoN",
            upstream_latency.clone(),
        );
        Metrics {
            registry,
            http,
            http_slots: ROUTES
                .iter()
                .map(|_| (0..STATUS_SLOTS).map(|_| OnceLock::new()).collect())
                .collect(),
            upstream_calls,
            upstream_latency,
            upstream_in_flight,
            connections_open,
            connections_at_cap,
            connections_closed,
            connections_max: AtomicU64::new(0),
            client_limited,
            transitions: Family::default(),
            redis_up: AtomicI64::new(-1),
            clock,
            recent: Mutex::new(Recent::default()),
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
    /// Retry counters.
    pub retry: Option<paragon_layers::retry::RetryStats>,
}

impl Metrics {
    /// Counts one answered HTTP request.
    #[inline]
    pub fn http(&self, route: Route, status: u16) {
        let labels = || HttpLabels {
            route: route.label(),
            status,
        };
        // `ROUTES` lists the variants in declaration order, so the discriminant is the index.
        match self.http_slots[route as usize].get(usize::from(status)) {
            Some(slot) => slot
                .get_or_init(|| self.http.get_or_create_owned(&labels()))
                .inc(),
            None => self.http.get_or_create(&labels()).inc(),
        };
    }

    /// Counts one change of the breaker's state.
    pub fn transition(&self, t: Transition) {
        let labels = TransitionLabels {
            from: t.from.as_str(),
            to: t.to.as_str(),
        };
        self.transitions.get_or_create(&labels).inc();
        let now = self.clock.now();
        let mut recent = self.recent.lock();
        if recent.transitions.len() == TRANSITIONS_KEPT {
            recent.transitions.pop_front();
        }
        recent.transitions.push_back((now, t));
    }

    /// The latest breaker transitions (at most 50), oldest first, with how long ago each
    /// happened.
    pub fn recent_transitions(&self) -> Vec<RecentTransition> {
        let now = self.clock.now();
        self.recent
            .lock()
            .transitions
            .iter()
            .map(|&(at, transition)| RecentTransition {
                transition,
                ago: now.since(at),
            })
            .collect()
    }

    /// The p50 and p99 latency of the upstream calls that ended within the last minute
    /// (the latest 1,024 of them at most); `None` when there were none.
    pub fn upstream_latency(&self) -> Option<LatencyQuantiles> {
        let now = self.clock.now();
        let mut took: Vec<Duration> = self
            .recent
            .lock()
            .latencies
            .iter()
            .filter(|(at, _)| now.since(*at) <= LATENCY_WINDOW)
            .map(|&(_, d)| d)
            .collect();
        took.sort_unstable();
        Some(LatencyQuantiles {
            p50: nearest_rank(&took, 0.5)?,
            p99: nearest_rank(&took, 0.99)?,
            samples: took.len(),
        })
    }

    /// Answers to `/v1` requests (single and batch) with `status` so far.
    pub fn answers(&self, status: u16) -> u64 {
        [Route::User, Route::Batch]
            .iter()
            .filter_map(|r| self.http_slots[*r as usize].get(usize::from(status)))
            .filter_map(OnceLock::get)
            .map(Counter::get)
            .sum()
    }

    /// Answers to `/v1` requests (single and batch) so far, whatever their status.
    pub fn answers_total(&self) -> u64 {
        [Route::User, Route::Batch]
            .iter()
            .flat_map(|r| self.http_slots[*r as usize].iter())
            .filter_map(OnceLock::get)
            .map(Counter::get)
            .sum()
    }

    /// Records whether the shared store is reachable (fleet mode).
    pub fn set_redis_up(&self, up: bool) {
        self.redis_up.store(i64::from(up), Ordering::Relaxed);
    }

    /// Counts a request refused by `[client_limit]`.
    pub fn client_limited(&self) {
        self.client_limited.inc();
    }

    /// Counts a connection accepted.
    pub fn connection_opened(&self) {
        self.connections_open.inc();
    }

    /// Counts a connection closed, for whatever reason.
    pub fn connection_ended(&self) {
        self.connections_open.dec();
    }

    /// Counts a connection closed by one of the edge's timeouts.
    pub fn connection_closed(&self, reason: CloseReason) {
        // The array is in declaration order, so the discriminant is the index.
        self.connections_closed[reason as usize].inc();
    }

    /// Records `server.max_connections`.
    pub fn set_connection_cap(&self, max: usize) {
        self.connections_max.store(max as u64, Ordering::Relaxed);
    }

    /// Records whether the accept loop is holding new connections back.
    pub fn set_at_cap(&self, at_cap: bool) {
        self.connections_at_cap.set(i64::from(at_cap));
    }

    /// Frontend connections open now, and the cap.
    pub fn connections(&self) -> (i64, u64) {
        (
            self.connections_open.get(),
            self.connections_max.load(Ordering::Relaxed),
        )
    }

    /// Connections closed by the head timeout and by the idle timeout so far.
    pub fn connections_closed(&self) -> (u64, u64) {
        let [head, idle] = &self.connections_closed;
        (head.get(), idle.get())
    }

    /// Upstream calls in flight now.
    pub fn upstream_in_flight(&self) -> i64 {
        self.upstream_in_flight.get()
    }

    /// Upstream calls made, whatever their outcome.
    pub fn upstream_calls(&self) -> u64 {
        self.upstream_calls.iter().map(Counter::get).sum()
    }

    /// One more upstream call in flight.
    pub(crate) fn upstream_started(&self) {
        self.upstream_in_flight.inc();
    }

    /// One upstream call fewer in flight.
    pub(crate) fn upstream_ended(&self) {
        self.upstream_in_flight.dec();
    }

    /// Counts one upstream call, its outcome and how long it took.
    pub(crate) fn record_upstream(&self, result: &Result<ParagonResponse, Error>, took: Duration) {
        self.upstream_calls[outcome_index(result)].inc();
        // The histogram takes a short lock per observation, which is nothing next to the
        // network call it times.
        self.upstream_latency.observe(took.as_secs_f64());
        let now = self.clock.now();
        let mut recent = self.recent.lock();
        if recent.latencies.len() == LATENCY_SAMPLES {
            recent.latencies.pop_front();
        }
        recent.latencies.push_back((now, took));
    }

    /// Prometheus text exposition of everything: the registry's metrics, then the layers'
    /// figures and Redis reachability as they are now.
    pub fn render(&self, layers: &LayerFigures) -> String {
        let mut now = Registry::default();
        if let Some(c) = &layers.cache {
            let r = &mut now;
            counter(
                r,
                "paragon_edge_cache_hits",
                "Answers served from a fresh cache entry",
                c.hits,
            );
            counter(
                r,
                "paragon_edge_cache_misses",
                "Cache misses (fills started)",
                c.misses,
            );
            counter(
                r,
                "paragon_edge_cache_stale",
                "Stale answers served while ParagoN could not answer",
                c.stale,
            );
            counter(
                r,
                "paragon_edge_cache_updating",
                "Expired entries answered at once while refreshed (stale_while_revalidate)",
                c.updating,
            );
            counter(
                r,
                "paragon_edge_cache_refreshes",
                "Background refreshes of expired entries started",
                c.refreshes,
            );
            counter(
                r,
                "paragon_edge_cache_revalidated",
                "Refills ParagoN answered 304 Not Modified: entries renewed without a body",
                c.revalidated,
            );
            r.register(
                "paragon_edge_cache_entries",
                "Entries in the cache",
                ConstGauge::new(c.entries),
            );
            r.register(
                "paragon_edge_cache_bytes",
                "Bytes of the bodies in the cache",
                ConstGauge::new(c.bytes),
            );
        }
        if let Some(l) = &layers.limiter {
            counter(
                &mut now,
                "paragon_edge_rate_limit_admitted",
                "Upstream calls admitted by the rate limiter",
                l.admitted,
            );
            let rejections = Family::<CauseLabels, Counter>::default();
            for (cause, n) in [
                ("budget", l.rejected_budget),
                ("upstream_pause", l.rejected_pause),
                ("upstream_quota", l.rejected_quota),
            ] {
                rejections.get_or_create(&CauseLabels { cause }).inc_by(n);
            }
            now.register(
                "paragon_edge_rate_limit_rejections",
                "Calls refused by the rate limiter, by cause",
                rejections,
            );
            counter(
                &mut now,
                "paragon_edge_rate_limit_background_rejections",
                "Background calls (refreshes, prefetches) refused to keep background_reserve of the burst for interactive ones",
                l.rejected_background,
            );
            counter(
                &mut now,
                "paragon_edge_rate_limit_upstream_429",
                "429 answers received from ParagoN",
                l.upstream_429,
            );
        }
        if let Some(b) = &layers.breaker {
            let state = Family::<StateLabels, Gauge>::default();
            for s in STATES {
                state
                    .get_or_create(&StateLabels { state: s.as_str() })
                    .set(i64::from(b.state == s));
            }
            now.register(
                "paragon_edge_circuit_breaker_state",
                "1 for the breaker's current state",
                state,
            );
            now.register(
                "paragon_edge_circuit_breaker_transitions",
                "Changes of the breaker's state",
                self.transitions.clone(),
            );
            counter(
                &mut now,
                "paragon_edge_circuit_breaker_rejections",
                "Calls refused while the breaker was open",
                b.rejected,
            );
        }
        if let Some(r) = &layers.retry {
            let attempts = Family::<KindLabels, Counter>::default();
            for (kind, n) in [
                ("first", r.firsts),
                ("retry", r.retries),
                ("hedge", r.hedges),
            ] {
                attempts.get_or_create(&KindLabels { kind }).inc_by(n);
            }
            now.register(
                "paragon_edge_upstream_attempts",
                "Upstream attempts started, by kind (first, retry, hedge)",
                attempts,
            );
            counter(
                &mut now,
                "paragon_edge_retry_budget_exhausted",
                "Retries and hedges not sent because the retry budget was spent",
                r.budget_exhausted,
            );
            counter(
                &mut now,
                "paragon_edge_upstream_deadline_exceeded",
                "Requests whose upstream.deadline passed before ParagoN answered",
                r.deadline_exceeded,
            );
        }
        let redis = self.redis_up.load(Ordering::Relaxed);
        if redis >= 0 {
            now.register(
                "paragon_edge_redis_up",
                "1 while the shared Redis store is reachable",
                ConstGauge::new(redis),
            );
        }
        let mut out = String::with_capacity(4096);
        // Writing into a `String` cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        let _ = prometheus_text::encode(&mut out, &now);
        out
    }
}

/// Registers a counter whose value was read from a layer.
fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    registry.register(name, help, ConstCounter::new(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let ms = |v: u64| Duration::from_millis(v);
        assert_eq!(nearest_rank(&[], 0.5), None);
        assert_eq!(nearest_rank(&[ms(7)], 0.5), Some(ms(7)));
        assert_eq!(nearest_rank(&[ms(7)], 0.99), Some(ms(7)));
        let hundred: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(nearest_rank(&hundred, 0.5), Some(ms(50)));
        assert_eq!(nearest_rank(&hundred, 0.99), Some(ms(99)));
        assert_eq!(nearest_rank(&hundred, 1.0), Some(ms(100)));
        assert_eq!(nearest_rank(&hundred, 0.0), Some(ms(1)));
    }

    #[test]
    fn latency_quantiles_cover_the_last_minute_only() {
        let clock = Clock::manual();
        let m = Metrics::new(clock.clone());
        assert_eq!(m.upstream_latency(), None, "no call yet");
        let ok: Result<ParagonResponse, Error> = Err(Error::NotFound);
        for v in 1..=100 {
            m.record_upstream(&ok, Duration::from_millis(v));
        }
        let q = m.upstream_latency().expect("quantiles");
        assert_eq!(
            (q.p50, q.p99, q.samples),
            (Duration::from_millis(50), Duration::from_millis(99), 100)
        );
        clock.advance(LATENCY_WINDOW + Duration::from_millis(1));
        m.record_upstream(&ok, Duration::from_millis(500));
        let q = m.upstream_latency().expect("quantiles");
        assert_eq!(
            (q.p50, q.p99, q.samples),
            (Duration::from_millis(500), Duration::from_millis(500), 1),
            "the older calls left the window"
        );
        for _ in 0..LATENCY_SAMPLES + 10 {
            m.record_upstream(&ok, Duration::from_millis(2));
        }
        assert_eq!(
            m.upstream_latency().expect("quantiles").samples,
            LATENCY_SAMPLES
        );
    }

    #[test]
    fn recent_transitions_are_timed_and_bounded() {
        let clock = Clock::manual();
        let m = Metrics::new(clock.clone());
        let open = Transition {
            from: BreakerState::Closed,
            to: BreakerState::Open,
        };
        let half = Transition {
            from: BreakerState::Open,
            to: BreakerState::HalfOpen,
        };
        m.transition(open);
        clock.advance(Duration::from_secs(60));
        m.transition(half);
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            m.recent_transitions(),
            [
                RecentTransition {
                    transition: open,
                    ago: Duration::from_secs(61)
                },
                RecentTransition {
                    transition: half,
                    ago: Duration::from_secs(1)
                },
            ]
        );
        for _ in 0..TRANSITIONS_KEPT {
            m.transition(open);
        }
        let kept = m.recent_transitions();
        assert_eq!(kept.len(), TRANSITIONS_KEPT);
        assert!(
            kept.iter().all(|r| r.transition == open),
            "the oldest went first"
        );
    }

    #[test]
    fn answers_count_the_v1_routes_only() {
        let m = Metrics::default();
        m.http(Route::User, 502);
        m.http(Route::User, 502);
        m.http(Route::Batch, 502);
        m.http(Route::Batch, 200);
        m.http(Route::Admin, 502);
        m.http(Route::Docs, 200);
        assert_eq!(m.answers(502), 3);
        assert_eq!(m.answers(503), 0);
        assert_eq!(m.answers_total(), 4);
    }

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
