//! A retry layer: transient failures are tried again, within a budget and a deadline, and
//! a slow attempt may be hedged.
//!
//! - **What is retried** is the error's [`Retryable::retry_class`]: a
//!   [`RetryClass::Transient`] failure (a connection error, a timeout, a 502/503/504) is
//!   retried; a [`RetryClass::Final`] answer (404 and other 4xx, the upstream's 429) and a
//!   [`RetryClass::Refused`] call (our own rate limit, an open breaker, a local resource
//!   error) are answered as they are. Only requests that say they are
//!   [`Idempotent`] are ever sent twice.
//! - **Backoff** before retry *n* is a uniform draw in `0 ..= backoff × 2^(n−1)` (full
//!   jitter, [`backoff::full_jitter`]).
//! - **Budget.** Retries and hedges together may number at most `budget_ratio` × the
//!   first attempts of the last 10 s, plus `budget_min_per_sec` × 10 ([`budget`]). An
//!   extra attempt is counted when it is scheduled, before its backoff; one whose call is
//!   dropped before it starts is handed back. Past the budget the failure is answered as
//!   it is.
//! - **Deadline.** A call's [`Deadline`](crate::Deadline) is set from `deadline` when the
//!   request carries none. No attempt starts after it (a retry whose backoff would end
//!   past it is not scheduled), and when it passes with attempts still out they are
//!   cancelled and the call fails with [`DeadlineExceeded`]. The time the layers below
//!   wait (a rate limiter's queue) is inside it; the error says when the deadline passed
//!   during such a wait (the request's [`WaitLedger`](crate::WaitLedger), which the layer
//!   makes recording), so that a breaker above need not blame the upstream.
//! - **Hedging** (`hedge_after`): when no attempt has answered after `hedge_after`, one
//!   more is sent while the first is still out; the first answer wins and the other is
//!   dropped, which cancels it. A hedge takes budget like a retry, passes the layers below
//!   like any attempt, counts against `max_attempts`, and is sent only while the layer's
//!   hedge gate allows it ([`RetryLayer::with_hedge_gate`]).
//! - **One outcome.** A layer above (a circuit breaker) sees one result per call,
//!   whatever the number of attempts; the response learns how many attempts it took
//!   ([`AttemptsSink`]).
//!
//! Dropping a call's future cancels every attempt it has out and returns any retry it had
//! scheduled to the budget.
//!
//! # Layout
//! `layer.rs` configuration and the layer, `service.rs` the service and its counters,
//! `budget.rs` the pure budget (`now` passed in), `backoff.rs` the pure backoff,
//! `error.rs` the deadline's error.

pub mod backoff;
pub mod budget;
mod error;
mod layer;
mod service;

pub use error::DeadlineExceeded;
pub use layer::{RetryConfig, RetryConfigBuilder, RetryLayer};
pub use service::{Retry, RetryFuture, RetryHandle, RetryStats};

/// What a failed attempt means for the retry layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryClass {
    /// A failure that another attempt may not meet: retried, within the budget.
    Transient,
    /// An answer: another attempt would get the same. Answered as it is.
    Final,
    /// A refusal by our own layers: nothing was learned of the upstream. Answered as it
    /// is; when another attempt of the same call is still out, that one may still answer.
    Refused,
}

/// An error that says whether another attempt could succeed.
pub trait Retryable {
    /// The class of this error.
    fn retry_class(&self) -> RetryClass;
}

/// A request that says whether it may be sent more than once.
pub trait Idempotent {
    /// Whether sending this request twice does what sending it once does.
    fn is_idempotent(&self) -> bool;
}

/// A response that learns how many attempts its call took.
pub trait AttemptsSink {
    /// Records the number of attempts started for the call, the first included.
    fn set_attempts(&mut self, attempts: u32);
}
