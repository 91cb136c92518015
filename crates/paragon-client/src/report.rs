//! [`CallReport`]: what a request's trip to ParagoN was like, for the one who sent it.
//!
//! The edge tells a frontend what each layer did for its request (`Server-Timing`):
//! how long the upstream call took and what ParagoN answered, how long our own rate
//! limiter held it, how many attempts it took. The bottom of the stack (the edge's
//! upstream gate) knows the first and sees the rest in the request it is handed (its
//! [`WaitLedger`](paragon_layers::WaitLedger)), so it records them in the request's
//! report, and the sender reads the report once the call is over, answer or error.
//!
//! As with the wait ledger and the quota report, it travels in the request, so it
//! survives every layer between the two (a fill on its own task, a retry or a hedge that
//! clones the request: their attempts add up in the same report). A request the cache
//! answers never reaches the bottom, and its report stays empty. The default report
//! records nothing and allocates nothing.
//!
//! A report is bookkeeping about one call, not part of what is asked: every report equals
//! every other and adds nothing to a hash.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::{Error, ParagonResponse, Resource};

/// What the upstream calls of one request did, as the bottom of the stack saw them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamCall {
    /// Calls that went out to ParagoN (retries and hedges included).
    pub attempts: u32,
    /// How long the latest of them to end took.
    pub duration: Duration,
    /// ParagoN's HTTP status on that call, when it answered with one.
    pub status: Option<u16>,
    /// The kind of failure (as [`Error::kind`]) when that call ended without a usable
    /// answer.
    pub failure: Option<&'static str>,
    /// The time our own layers had held the request on purpose (the rate limiter's
    /// waits) when its latest call went out.
    pub held: Duration,
}

/// Where the bottom of the stack records the upstream calls of one request, for its
/// sender to read once the call is over. It travels in the request, so every layer
/// between the two (a fill on its own task, a retry or a hedge that clones the request)
/// keeps it; a request the cache answers leaves it empty. The default report records
/// nothing and allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct CallReport(Option<Arc<Mutex<Option<UpstreamCall>>>>);

impl CallReport {
    /// A report that keeps what is recorded in it.
    pub fn recording() -> Self {
        CallReport(Some(Arc::default()))
    }

    /// Whether this report records; the default one does not.
    pub fn is_recording(&self) -> bool {
        self.0.is_some()
    }

    /// Records one upstream call that ended with `result` after `duration`, when the
    /// request had been held `held` on purpose.
    pub fn record(
        &self,
        result: &Result<ParagonResponse, Error>,
        duration: Duration,
        held: Duration,
    ) {
        let Some(cell) = &self.0 else { return };
        let (status, failure) = match result {
            Ok(r) => match r.resource {
                Resource::NotModified => (Some(304), None),
                _ => (Some(200), None),
            },
            Err(e) => (e.upstream_status(), Some(e.kind())),
        };
        let mut slot = cell.lock();
        let attempts = slot.map_or(0, |c| c.attempts).saturating_add(1);
        *slot = Some(UpstreamCall {
            attempts,
            duration,
            status,
            failure,
            held,
        });
    }

    /// What was recorded: `None` when no call reached ParagoN.
    pub fn get(&self) -> Option<UpstreamCall> {
        self.0.as_ref().and_then(|cell| *cell.lock())
    }
}

/// Every report is equal to every other: a report is not part of what a request asks.
impl PartialEq for CallReport {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for CallReport {}

/// A report adds nothing to a hash, as it changes nothing in equality.
impl Hash for CallReport {
    fn hash<H: Hasher>(&self, _state: &mut H) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::User;

    fn user() -> ParagonResponse {
        let id = crate::UserId::parse("u1").unwrap();
        let user = User::decode(&id, bytes::Bytes::from_static(br#"{"id":"u1"}"#)).unwrap();
        ParagonResponse::new(Resource::User(user))
    }

    #[test]
    fn attempts_add_up_and_the_latest_call_is_kept() {
        let report = CallReport::recording();
        let clone = report.clone();
        assert_eq!(report.get(), None);
        clone.record(
            &Err(Error::UpstreamStatus { status: 503 }),
            Duration::from_millis(7),
            Duration::ZERO,
        );
        report.record(
            &Ok(user()),
            Duration::from_millis(3),
            Duration::from_millis(2),
        );
        assert_eq!(
            report.get(),
            Some(UpstreamCall {
                attempts: 2,
                duration: Duration::from_millis(3),
                status: Some(200),
                failure: None,
                held: Duration::from_millis(2),
            })
        );
        let timeout = CallReport::recording();
        timeout.record(
            &Err(Error::Timeout {
                timeout: Duration::from_secs(2),
            }),
            Duration::from_secs(2),
            Duration::ZERO,
        );
        let call = timeout.get().unwrap();
        assert_eq!((call.status, call.failure), (None, Some("timeout")));
    }

    #[test]
    fn a_304_and_paragons_own_error_statuses_are_recorded_as_sent() {
        let report = CallReport::recording();
        assert!(report.is_recording());
        let cases = [
            (Ok(ParagonResponse::new(Resource::NotModified)), Some(304)),
            (Err(Error::NotFound), Some(404)),
            (
                Err(Error::UpstreamRateLimited {
                    retry_after: Duration::from_secs(1),
                }),
                Some(429),
            ),
            (Err(Error::UpstreamStatus { status: 502 }), Some(502)),
            (Err(Error::Connect("refused".into())), None),
        ];
        for (result, status) in cases {
            report.record(&result, Duration::from_millis(1), Duration::ZERO);
            assert_eq!(report.get().and_then(|c| c.status), status, "{result:?}");
        }
    }

    #[test]
    fn the_default_report_records_nothing_and_reports_change_no_equality() {
        let off = CallReport::default();
        off.record(&Ok(user()), Duration::from_millis(1), Duration::ZERO);
        assert_eq!(off.get(), None);
        assert!(!off.is_recording());
        assert_eq!(off, CallReport::recording());
    }
}
