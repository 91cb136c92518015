use std::time::Duration;

/// A call whose deadline passed before any attempt answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no answer within the call's deadline of {deadline:?}")]
pub struct DeadlineExceeded {
    /// The time the call was given, from its start to its deadline.
    pub deadline: Duration,
    /// Whether the deadline passed while a layer below held the call on purpose (a rate
    /// limiter's wait, as the request's [`WaitLedger`](crate::WaitLedger) records it), or
    /// before any attempt was made: then nothing says the upstream was slow, and a
    /// circuit breaker should not count it against the upstream.
    pub in_local_wait: bool,
}
