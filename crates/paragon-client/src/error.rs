//! Everything a ParagoN call can end with, and what each outcome means to each layer.
//!
//! One error type for the whole stack: each layer's rejection converts into it, and it
//! implements the layers' questions (`Classify` for the breaker, `UpstreamThrottle` for
//! the limiter, `CachePolicy` for the cache), so the layers stay generic and the meaning
//! of a ParagoN failure is decided here, once.

use std::time::Duration;

use paragon_layers::cache::{CachePolicy, FillAborted};
use paragon_layers::circuit_breaker::{CircuitOpen, Classify, Verdict};
use paragon_layers::rate_limit::{RateLimitCause, RateLimited, UpstreamThrottle};
use paragon_layers::retry::{DeadlineExceeded, RetryClass, Retryable};

use crate::{InvalidUserId, UserDecodeError};

/// Everything a ParagoN call can end in, other than an answer.
///
/// Messages never contain the API key. Cheap to clone, so one failure can be handed to
/// every caller waiting on the same fill.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The id is not valid; nothing was sent.
    #[error("invalid user id: {0}")]
    InvalidId(#[from] InvalidUserId),
    /// ParagoN says there is no such user (404).
    #[error("ParagoN has no such user")]
    NotFound,
    /// ParagoN's own rate limit (429), with its `Retry-After`.
    #[error("ParagoN is rate limiting us; retry after {}s", retry_after.as_secs())]
    UpstreamRateLimited {
        /// From `Retry-After` (seconds or an HTTP date) or the rate-limit headers.
        retry_after: Duration,
    },
    /// ParagoN answered with a status that is neither success nor one of the above.
    #[error("ParagoN answered with status {status}")]
    UpstreamStatus {
        /// The HTTP status.
        status: u16,
    },
    /// ParagoN did not answer completely within the request timeout.
    #[error("ParagoN did not answer within {}ms", timeout.as_millis())]
    Timeout {
        /// The timeout in force.
        timeout: Duration,
    },
    /// No connection to ParagoN could be made.
    #[error("cannot connect to ParagoN: {0}")]
    Connect(String),
    /// The call's `upstream.deadline` passed before any attempt answered; the attempts
    /// still out were cancelled.
    #[error("ParagoN did not answer within the request's deadline of {}ms", .0.deadline.as_millis())]
    DeadlineExceeded(#[from] DeadlineExceeded),
    /// The connection failed while the answer was being sent.
    #[error("the connection to ParagoN failed: {0}")]
    Transport(String),
    /// The answer was not a valid document for the request.
    #[error("ParagoN sent a malformed answer: {0}")]
    Malformed(#[from] UserDecodeError),
    /// The answer was larger than allowed; reading stopped at the limit.
    #[error("ParagoN's answer is larger than {limit} bytes")]
    BodyTooLarge {
        /// `max_response_bytes`.
        limit: usize,
    },
    /// Our own rate limiter refused the call (budget spent, or ParagoN's 429 pause).
    #[error("rate limited; retry after {}ms", .0.retry_after.as_millis())]
    RateLimited(#[from] RateLimited),
    /// The circuit breaker is open; nothing was sent.
    #[error("circuit open: ParagoN is failing; retry after {}ms", .0.retry_after.as_millis())]
    CircuitOpen(#[from] CircuitOpen),
    /// Too many calls to ParagoN are in flight already (`upstream.max_concurrency`).
    #[error("too many calls to ParagoN are in flight; try again shortly")]
    Overloaded,
    /// This process ran out of a resource of its own (file descriptors, sockets) before
    /// ParagoN was reached; nothing is known about ParagoN.
    #[error("a local resource is exhausted: {0}")]
    Local(String),
    /// A shared fill ended without an answer (its task was cancelled).
    #[error("the shared request ended without an answer")]
    FillAborted(#[from] FillAborted),
    /// The stack answered something that does not match the request.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The time after which a retry may succeed, for the errors that have one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::UpstreamRateLimited { retry_after } => Some(*retry_after),
            Error::RateLimited(r) => Some(r.retry_after),
            Error::CircuitOpen(c) => Some(c.retry_after),
            Error::Overloaded | Error::Local(_) => Some(Duration::from_secs(1)),
            _ => None,
        }
    }

    /// Whether this is a failure of ParagoN itself (what the breaker counts).
    ///
    /// A body for another id is malformed but not counted: a client chooses the ids, and a
    /// ParagoN that normalises them (answers `abcd` for `ABCD`) would otherwise let any
    /// client open the breaker. Local resource errors are ours, not ParagoN's.
    pub fn is_upstream_failure(&self) -> bool {
        match self {
            Error::Malformed(UserDecodeError::WrongId { .. }) => false,
            Error::UpstreamStatus { status } => *status >= 500,
            // A deadline that passed in our own limiter's queue says nothing of ParagoN.
            Error::DeadlineExceeded(d) => !d.in_local_wait,
            Error::Timeout { .. }
            | Error::Connect(_)
            | Error::Transport(_)
            | Error::Malformed(_)
            | Error::BodyTooLarge { .. } => true,
            _ => false,
        }
    }

    /// ParagoN's HTTP status when this error is its answer (`404`, `429`, another
    /// status); `None` when ParagoN sent no usable status line or was never reached.
    pub fn upstream_status(&self) -> Option<u16> {
        match self {
            Error::NotFound => Some(404),
            Error::UpstreamRateLimited { .. } => Some(429),
            Error::UpstreamStatus { status } => Some(*status),
            _ => None,
        }
    }

    /// A short, stable name of the kind, for metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidId(_) => "invalid_id",
            Error::NotFound => "not_found",
            Error::UpstreamRateLimited { .. } => "upstream_rate_limited",
            Error::UpstreamStatus { .. } => "upstream_status",
            Error::Timeout { .. } => "timeout",
            Error::DeadlineExceeded(_) => "deadline",
            Error::Connect(_) => "connect",
            Error::Transport(_) => "transport",
            Error::Malformed(_) => "malformed",
            Error::BodyTooLarge { .. } => "body_too_large",
            Error::RateLimited(r) if r.cause == RateLimitCause::UpstreamPause => "upstream_pause",
            Error::RateLimited(r) if r.cause == RateLimitCause::UpstreamQuota => "upstream_quota",
            Error::RateLimited(_) => "rate_limited",
            Error::CircuitOpen(_) => "circuit_open",
            Error::FillAborted(_) => "fill_aborted",
            Error::Overloaded => "overloaded",
            Error::Local(_) => "local",
            Error::Internal(_) => "internal",
        }
    }
}

impl Classify for Error {
    fn verdict(&self) -> Verdict {
        if self.is_upstream_failure() {
            Verdict::Failure
        } else {
            match self {
                // ParagoN answered properly: it is up.
                Error::NotFound | Error::UpstreamStatus { .. } => Verdict::Success,
                _ => Verdict::Ignore,
            }
        }
    }
}

/// What the retry layer may try again (CONTRACT §5 "Retry"): connection errors, timeouts
/// and ParagoN's 502, 503 and 504. ParagoN's other answers (404 and other 4xx, its 429,
/// other 5xx, malformed bodies) are final; our own refusals (rate limit, open breaker,
/// no upstream slot, a local resource) are never retried.
impl Retryable for Error {
    fn retry_class(&self) -> RetryClass {
        match self {
            Error::Timeout { .. } | Error::Connect(_) | Error::Transport(_) => {
                RetryClass::Transient
            }
            Error::UpstreamStatus { status: 502..=504 } => RetryClass::Transient,
            Error::RateLimited(_)
            | Error::CircuitOpen(_)
            | Error::Overloaded
            | Error::Local(_)
            | Error::FillAborted(_) => RetryClass::Refused,
            _ => RetryClass::Final,
        }
    }
}

impl UpstreamThrottle for Error {
    fn upstream_retry_after(&self) -> Option<Duration> {
        match self {
            Error::UpstreamRateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    fn with_upstream_retry_after(self, pause: Duration) -> Self {
        match self {
            Error::UpstreamRateLimited { retry_after } => Error::UpstreamRateLimited {
                retry_after: retry_after.min(pause),
            },
            other => other,
        }
    }
}

impl CachePolicy for Error {
    fn is_negative(&self) -> bool {
        matches!(self, Error::NotFound)
    }

    fn serve_stale(&self) -> bool {
        !matches!(self, Error::NotFound | Error::InvalidId(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_counts_exactly_the_contract_failures() {
        let failures = [
            Error::UpstreamStatus { status: 500 },
            Error::UpstreamStatus { status: 503 },
            Error::Timeout {
                timeout: Duration::from_secs(2),
            },
            Error::Connect("refused".into()),
            Error::Transport("reset".into()),
            Error::Malformed(UserDecodeError::NotObject),
            Error::BodyTooLarge { limit: 10 },
        ];
        for e in failures {
            assert_eq!(e.verdict(), Verdict::Failure, "{e:?}");
        }
        assert_eq!(
            Error::DeadlineExceeded(DeadlineExceeded {
                deadline: Duration::from_secs(5),
                in_local_wait: false,
            })
            .verdict(),
            Verdict::Failure,
            "ParagoN did not answer in time"
        );
        let never = [
            Error::DeadlineExceeded(DeadlineExceeded {
                deadline: Duration::from_secs(5),
                in_local_wait: true,
            }),
            Error::Malformed(UserDecodeError::WrongId {
                expected: "ABCD".into(),
                found: "abcd".into(),
            }),
            Error::Local("Too many open files (os error 24)".into()),
            Error::Overloaded,
            Error::NotFound,
            Error::UpstreamStatus { status: 400 },
            Error::UpstreamStatus { status: 401 },
            Error::UpstreamRateLimited {
                retry_after: Duration::from_secs(2),
            },
            Error::RateLimited(RateLimited {
                retry_after: Duration::from_secs(1),
                cause: RateLimitCause::Budget,
            }),
            Error::CircuitOpen(CircuitOpen {
                retry_after: Duration::from_secs(1),
            }),
        ];
        for e in never {
            assert_ne!(e.verdict(), Verdict::Failure, "{e:?}");
        }
        // A proper answer says ParagoN is up; our own refusals say nothing of it.
        for e in [Error::NotFound, Error::UpstreamStatus { status: 400 }] {
            assert_eq!(e.verdict(), Verdict::Success, "{e:?}");
        }
        for e in [
            Error::Overloaded,
            Error::CircuitOpen(CircuitOpen {
                retry_after: Duration::from_secs(1),
            }),
        ] {
            assert_eq!(e.verdict(), Verdict::Ignore, "{e:?}");
        }
    }

    #[test]
    fn only_the_contract_failures_are_retried() {
        let transient = [
            Error::UpstreamStatus { status: 502 },
            Error::UpstreamStatus { status: 503 },
            Error::UpstreamStatus { status: 504 },
            Error::Timeout {
                timeout: Duration::from_secs(2),
            },
            Error::Connect("refused".into()),
            Error::Transport("reset".into()),
        ];
        for e in transient {
            assert_eq!(e.retry_class(), RetryClass::Transient, "{e:?}");
        }
        let never = [
            Error::NotFound,
            Error::UpstreamStatus { status: 500 },
            Error::UpstreamStatus { status: 400 },
            Error::UpstreamRateLimited {
                retry_after: Duration::from_secs(2),
            },
            Error::RateLimited(RateLimited {
                retry_after: Duration::from_secs(1),
                cause: RateLimitCause::Budget,
            }),
            Error::CircuitOpen(CircuitOpen {
                retry_after: Duration::from_secs(1),
            }),
            Error::Overloaded,
            Error::Local("Too many open files (os error 24)".into()),
            Error::Malformed(UserDecodeError::NotObject),
            Error::DeadlineExceeded(DeadlineExceeded {
                deadline: Duration::from_secs(5),
                in_local_wait: false,
            }),
        ];
        for e in never {
            let class = e.retry_class();
            assert_ne!(class, RetryClass::Transient, "{e:?}");
            // Our own refusals are told apart from ParagoN's final answers.
            let ours = matches!(
                e,
                Error::RateLimited(_) | Error::CircuitOpen(_) | Error::Overloaded | Error::Local(_)
            );
            let wanted = if ours {
                RetryClass::Refused
            } else {
                RetryClass::Final
            };
            assert_eq!(class, wanted, "{e:?}");
        }
    }

    #[test]
    fn only_paragons_429_pauses_the_limiter() {
        let e = Error::UpstreamRateLimited {
            retry_after: Duration::from_secs(2),
        };
        assert_eq!(e.upstream_retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(Error::NotFound.upstream_retry_after(), None);
        assert!(Error::NotFound.is_negative());
        assert!(!Error::NotFound.serve_stale());
        assert!(Error::Connect(String::new()).serve_stale());
    }

    #[test]
    fn retry_after_is_the_wait_each_refusal_names() {
        let secs = Duration::from_secs;
        let cases = [
            (
                Error::UpstreamRateLimited {
                    retry_after: secs(7),
                },
                Some(secs(7)),
            ),
            (
                Error::RateLimited(RateLimited {
                    retry_after: secs(3),
                    cause: RateLimitCause::Budget,
                }),
                Some(secs(3)),
            ),
            (
                Error::CircuitOpen(CircuitOpen {
                    retry_after: secs(11),
                }),
                Some(secs(11)),
            ),
            (Error::Overloaded, Some(secs(1))),
            (Error::Local("EMFILE".into()), Some(secs(1))),
            (Error::NotFound, None),
            (Error::UpstreamStatus { status: 503 }, None),
            (Error::Connect("refused".into()), None),
        ];
        for (e, wanted) in cases {
            assert_eq!(e.retry_after(), wanted, "{e:?}");
        }
    }

    #[test]
    fn each_error_has_its_own_stable_kind() {
        let limited = |cause| {
            Error::RateLimited(RateLimited {
                retry_after: Duration::from_secs(1),
                cause,
            })
        };
        let cases = [
            (Error::NotFound, "not_found"),
            (
                Error::UpstreamRateLimited {
                    retry_after: Duration::from_secs(1),
                },
                "upstream_rate_limited",
            ),
            (Error::UpstreamStatus { status: 500 }, "upstream_status"),
            (
                Error::Timeout {
                    timeout: Duration::from_secs(1),
                },
                "timeout",
            ),
            (
                Error::DeadlineExceeded(DeadlineExceeded {
                    deadline: Duration::from_secs(5),
                    in_local_wait: false,
                }),
                "deadline",
            ),
            (Error::Connect(String::new()), "connect"),
            (Error::Transport(String::new()), "transport"),
            (Error::Malformed(UserDecodeError::NotObject), "malformed"),
            (Error::BodyTooLarge { limit: 1 }, "body_too_large"),
            (limited(RateLimitCause::UpstreamPause), "upstream_pause"),
            (limited(RateLimitCause::UpstreamQuota), "upstream_quota"),
            (limited(RateLimitCause::Budget), "rate_limited"),
            (
                Error::CircuitOpen(CircuitOpen {
                    retry_after: Duration::from_secs(1),
                }),
                "circuit_open",
            ),
            (Error::Overloaded, "overloaded"),
            (Error::Local(String::new()), "local"),
            (Error::Internal(String::new()), "internal"),
        ];
        let mut seen = std::collections::HashSet::new();
        for (e, kind) in cases {
            assert_eq!(e.kind(), kind, "{e:?}");
            assert!(seen.insert(kind), "{kind} twice");
        }
    }
}
