//! The cache's own failure: a fill that ended without an answer.

/// A fill ended without an answer (its task was cancelled or panicked); waiters get this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the cache fill for this key ended without an answer")]
pub struct FillAborted;
