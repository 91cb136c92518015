use std::time::Duration;

/// A call whose deadline passed before any attempt answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no answer within the call's deadline of {deadline:?}")]
pub struct DeadlineExceeded {
    /// The time the call was given, from its start to its deadline.
    pub deadline: Duration,
}
