//! A rate-limit layer: a GCRA budget shared by every call, and a pause of all calls when
//! the upstream answers 429.
//!
//! - A budget of `max_requests` per `window`, `burst` of them at once ([`gcra`]).
//! - Over budget, a call waits up to `max_wait` for a reserved slot; otherwise it fails at
//!   once with [`RateLimited`] carrying the time after which a call would be admitted.
//!   The wait is added to the request's [`WaitLedger`](crate::WaitLedger), so that a
//!   circuit breaker above does not take it for a slow upstream.
//! - When the inner service reports the upstream's own 429
//!   ([`UpstreamThrottle::upstream_retry_after`]), every call is refused until its
//!   `Retry-After` has passed.
//! - With `follow_upstream`, the quota the upstream advertises on its answers (carried
//!   back in the request's [`QuotaReport`]) paces the calls ([`pacing`]): never more than
//!   it says remain before its reset, spread over the time left. A call it holds back
//!   is refused like one over budget ([`RateLimitCause::UpstreamQuota`]), or waits
//!   within `max_wait`.
//! - Background calls ([`Priority::Background`](crate::Priority)) are admitted only while
//!   more than `background_reserve` of the burst remains.
//! - The state lives in a [`RateStore`]: [`MemoryStore`] for one process; a shared store
//!   gives one budget to a fleet.
//!
//! # Layout
//! `layer.rs` configuration and the layer, `service.rs` the service, `gcra.rs` the pure
//! step, `pacing.rs` the pure pacing by the upstream's quota, `report.rs` how that quota
//! comes back in the request, `store.rs` the store trait and the memory store,
//! `error.rs` the rejection.

mod error;
pub mod gcra;
mod layer;
pub mod pacing;
mod report;
mod service;
mod store;

pub use error::{RateLimitCause, RateLimited};
pub use layer::{RateLimitConfig, RateLimitConfigBuilder, RateLimitLayer, DEFAULT_MAX_PAUSE};
pub use report::{CarriesQuotaReport, QuotaReport, UpstreamQuota};
pub use service::{RateLimit, RateLimitFuture, RateLimitHandle, RateLimitStats};
pub use store::{Acquire, BudgetState, MemoryStore, RateStore};

use std::time::Duration;

/// An error that may carry the upstream's own "too many requests" answer.
pub trait UpstreamThrottle {
    /// The upstream's `Retry-After` when this error is its 429, else `None`.
    fn upstream_retry_after(&self) -> Option<Duration>;

    /// This 429 with its `Retry-After` shortened to `pause`, the pause the limiter
    /// actually imposes (its `max_pause`), so callers are told the truth. The default
    /// leaves the error as it is.
    fn with_upstream_retry_after(self, pause: Duration) -> Self
    where
        Self: Sized,
    {
        let _ = pause;
        self
    }
}
