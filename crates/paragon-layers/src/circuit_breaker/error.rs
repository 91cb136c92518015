//! The breaker's rejection: the circuit is open (or half-open with no probe slot).

use std::time::Duration;

/// A call refused because the circuit is open (or half-open with no probe slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("circuit open; retry after {retry_after:?}")]
pub struct CircuitOpen {
    /// When a call may be let through again.
    pub retry_after: Duration,
}
