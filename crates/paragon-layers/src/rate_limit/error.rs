//! The limiter's rejection: over budget, or the upstream's 429 pause, with when to retry.

use std::time::Duration;

/// Why a call was not let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimitCause {
    /// Our own budget is spent.
    Budget,
    /// The upstream answered 429 and its `Retry-After` has not passed yet.
    UpstreamPause,
    /// The upstream's advertised quota holds the call back: no more calls remain before
    /// its reset, or the next one's turn has not come.
    UpstreamQuota,
}

/// A call refused by the rate limiter, with the time after which one would be admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rate limited ({cause:?}); retry after {retry_after:?}")]
pub struct RateLimited {
    /// Time after which a call would be admitted.
    pub retry_after: Duration,
    /// Which limit refused the call.
    pub cause: RateLimitCause,
}
