//! A circuit-breaker layer: fail fast while the upstream is down, probe it, recover.
//!
//! - **Closed**: calls go through. It opens after `failure_threshold` consecutive
//!   failures, or when at least `minimum_calls` calls in the last `window` saw a failure
//!   share of `failure_rate` or more.
//! - **Open**: calls fail at once with [`CircuitOpen`] (no inner call) until `open_for`
//!   has passed; then **half-open**.
//! - **Half-open**: at most `half_open_max_calls` probes at once; the rest fail fast. A
//!   probe success closes it, a probe failure opens it again.
//!
//! What counts is the error's [`Classify::verdict`]: failures (connection errors,
//! timeouts, 5xx, malformed answers) trip it; answers that prove the upstream healthy
//! (404 and other 4xx) count as successes; our own rate-limit rejections and the
//! upstream's 429 count as nothing. A success slower than `slow_call` counts as a failure;
//! the time the layers below waited on purpose, which they add to the request's
//! [`WaitLedger`](crate::WaitLedger), is left out of that timing.
//!
//! The closed path takes no lock: admission is one atomic load, outcomes go to atomic
//! counters; the lock is taken only to change state and while half-open.
//!
//! # Layout
//! `layer.rs` configuration and the layer, `service.rs` the service and shared state,
//! `state_machine.rs` the pure decisions (`now` passed in), `error.rs` the rejection.

mod error;
mod layer;
mod service;
pub mod state_machine;

pub use error::CircuitOpen;
pub use layer::{BreakerConfig, BreakerConfigBuilder, CircuitBreakerLayer};
pub use service::{BreakerFuture, BreakerHandle, BreakerStats, CircuitBreaker};
pub use state_machine::{BreakerState, Transition};

/// What one outcome means for the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The upstream is unwell.
    Failure,
    /// The upstream answered properly.
    Success,
    /// Says nothing about the upstream (our own rejection, the upstream's 429).
    Ignore,
}

/// An error that says what it means for the breaker.
pub trait Classify {
    /// The verdict on this error.
    fn verdict(&self) -> Verdict;
}
