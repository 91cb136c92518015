//! Errors of the simulator.

/// A fault setting that cannot be applied.
///
/// Every variant names the offending field of [`Faults`](crate::Faults), so a message
/// such as ``fault `error_rate`: 1.5 is not a probability in 0..=1`` points straight at
/// the typo.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// A rate is not a probability.
    #[error("fault `{field}`: {value} is not a probability in 0..=1")]
    InvalidRate {
        /// The field of `Faults` that holds the rate.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// A duration does not parse or is out of range.
    #[error("fault `{field}`: {value:?} is not a valid duration: {reason}")]
    InvalidDuration {
        /// The field of `Faults` that holds the duration.
        field: &'static str,
        /// The rejected text.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Another value is out of range.
    #[error("fault `{field}`: {reason}")]
    InvalidValue {
        /// The field of `Faults` that holds the value.
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },
}

/// The request was answered by closing the connection without a response.
///
/// Returned by [`SimService`](crate::SimService) for the `drop_rate` fault; hyper
/// closes the connection when a service fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection dropped by fault injection")]
pub struct ConnectionDropped;

/// A response body was cut off on purpose (the `reset_rate` fault).
///
/// hyper aborts the connection when a body yields an error, so the client sees an
/// incomplete body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("response body aborted by fault injection")]
pub struct BodyAborted;
