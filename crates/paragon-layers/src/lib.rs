//! Generic [tower] middleware that protects calls to a third-party API.
//!
//! Four layers, each usable on any [`tower::Service`] whose request can name a cache key
//! and whose error can say what kind of failure it is:
//!
//! - [`cache`] — TTL cache with a size bound, single-flight fills that survive the
//!   cancellation of the caller that started them, `stale_if_error` and negative caching;
//! - [`rate_limit`] — a GCRA budget of `max_requests` per `window` with `burst`, optional
//!   waiting up to `max_wait`, and a pause of every call when the upstream answers 429;
//! - [`circuit_breaker`] — consecutive-failure and failure-rate trips, slow calls,
//!   open → half-open → closed with a bounded number of probes;
//! - [`retry`] — retries of transient failures with backoff and full jitter, hedging of
//!   slow attempts, a retry budget, and a deadline per call that no attempt outlives.
//!
//! # Layout
//!
//! Each layer lives in its own folder: `layer.rs` holds the validated configuration,
//! `service.rs` the runtime state, a pure core (`freshness.rs`, `gcra.rs`,
//! `state_machine.rs`) takes `now` as an argument and does no I/O, and `error.rs` the
//! layer's own rejection type. Time comes only from a [`Clock`], so tests run on paused
//! tokio time or a manual clock and are exact. [`waits`] is how the limiter tells the
//! breaker above it how long it held a call on purpose, so that the breaker's slow-call
//! timing leaves that out: the request carries a [`WaitLedger`]. In the same way a request
//! carries its call's [`Deadline`], which the retry layer sets and keeps.
//!
//! With the `redis` feature, `fleet/` holds the stores a fleet of instances shares: a
//! rate budget and a second cache tier in Redis, and the self-healing link to it.
//!
//! # Composing
//!
//! The order that gives the documented semantics, outermost first, is
//! cache → circuit breaker → retry → rate limiter → the real client (the example leaves
//! the retry layer out; see [`retry`]):
//!
//! ```
//! use std::{borrow::Cow, time::Duration};
//! use paragon_layers::{CallPriority, CarriesWaits, Clock, Priority, WaitLedger, cache::*, circuit_breaker::*, rate_limit::*};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! // Any request that names its key and carries the ledger of its call's waits, any
//! // response that takes a cache status, any error that says what it means for each layer.
//! #[derive(Clone, PartialEq, Eq, Hash)]
//! struct Get(String, WaitLedger, QuotaReport);
//! impl CacheKey for Get {
//!     type Key = Get;
//!     fn cache_key(&self) -> Cow<'_, Get> { Cow::Borrowed(self) }
//! }
//! impl CarriesWaits for Get {
//!     fn wait_ledger(&mut self) -> &mut WaitLedger { &mut self.1 }
//! }
//! // Where the bottom of the stack leaves the quota the upstream advertised, if it does.
//! impl CarriesQuotaReport for Get {
//!     fn quota_report(&mut self) -> &mut QuotaReport { &mut self.2 }
//! }
//! // Whether someone waits for the call (a cache's background refresh does not).
//! impl CallPriority for Get {
//!     fn priority(&self) -> Priority { Priority::Interactive }
//!     fn set_priority(&mut self, _: Priority) {}
//! }
//! #[derive(Clone)]
//! struct Doc(String, CacheStatus);
//! impl CacheStatusSink for Doc { fn set_cache_status(&mut self, s: CacheStatus) { self.1 = s } }
//! // What an answer weighs, for the cache's bound on bytes.
//! impl CacheWeight for Doc { fn cache_weight(&self) -> usize { self.0.len() } }
//! // This toy has no ETag: a refill is never conditional, never "not modified".
//! impl Revalidate<Doc> for Get { fn revalidate_against(&mut self, _: &Doc) -> bool { false } }
//! impl NotModified for Doc { fn is_not_modified(&self) -> bool { false } }
//! #[derive(Clone, Debug)]
//! enum Fail { Upstream, Limited(RateLimited), Open(CircuitOpen), Aborted }
//! impl From<RateLimited> for Fail { fn from(e: RateLimited) -> Self { Fail::Limited(e) } }
//! impl From<CircuitOpen> for Fail { fn from(e: CircuitOpen) -> Self { Fail::Open(e) } }
//! impl From<FillAborted> for Fail { fn from(_: FillAborted) -> Self { Fail::Aborted } }
//! impl CachePolicy for Fail {
//!     fn is_negative(&self) -> bool { false }
//!     fn serve_stale(&self) -> bool { true }
//! }
//! impl Classify for Fail {
//!     fn verdict(&self) -> Verdict {
//!         if matches!(self, Fail::Upstream) { Verdict::Failure } else { Verdict::Ignore }
//!     }
//! }
//! impl UpstreamThrottle for Fail {
//!     fn upstream_retry_after(&self) -> Option<Duration> { None }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let clock = Clock::tokio();
//! let upstream = tower::service_fn(|Get(id, ..): Get| async move {
//!     Ok::<_, Fail>(Doc(format!("document {id}"), CacheStatus::Miss))
//! });
//! let cache = CacheLayer::new(CacheConfig::builder(Duration::from_secs(300)).max_entries(100_000).build().unwrap(), clock.clone());
//! let stack = ServiceBuilder::new()
//!     .layer(cache)
//!     .layer(CircuitBreakerLayer::new(BreakerConfig::default(), clock.clone()))
//!     .layer(RateLimitLayer::memory(RateLimitConfig::builder(100, Duration::from_secs(60)).build().unwrap(), clock))
//!     .service(upstream);
//! let first = stack.clone().oneshot(Get("a".into(), WaitLedger::default(), QuotaReport::default())).await.unwrap();
//! let second = stack.clone().oneshot(Get("a".into(), WaitLedger::default(), QuotaReport::default())).await.unwrap();
//! assert_eq!((first.1, second.1), (CacheStatus::Miss, CacheStatus::Hit));
//! # });
//! ```
//!
//! [tower]: https://docs.rs/tower

pub mod cache;
pub mod circuit_breaker;
mod clock;
pub mod deadline;
#[cfg(feature = "redis")]
pub mod fleet;
pub mod priority;
pub mod rate_limit;
pub mod retry;
pub mod waits;

pub use clock::{Clock, Timestamp};
pub use deadline::{CarriesDeadline, Deadline};
pub use priority::{CallPriority, Priority};
pub use waits::{CarriesWaits, WaitLedger};

/// A layer setting that cannot be used, naming the setting.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The setting, as named in the layer's config type.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            field,
            message: message.into(),
        }
    }
}
