//! The upstream's advertised quota, carried back from the bottom of the stack to the
//! rate limiter in the request.
//!
//! The upstream may say on any answer (a success, a 404, a 429) how many calls remain of
//! its own quota and when it resets. The client at the bottom of the stack reads that
//! from the answer's headers and leaves it in the call's [`QuotaReport`]; the limiter,
//! which attached the report before handing the request on, reads it when the call
//! returns and paces the next calls by it. As with the
//! [`WaitLedger`](crate::WaitLedger), the report travels in the request, so it survives
//! any layer between the two (a buffer, a retry that clones the request), and the
//! answers the cache keeps hold nothing extra.
//!
//! A report is bookkeeping about one call, not part of what is asked: every report equals
//! every other and adds nothing to a hash.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// What the upstream advertised of its own quota on one answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpstreamQuota {
    /// Calls left before the reset.
    pub remaining: u64,
    /// Time until the reset.
    pub reset: Duration,
}

/// Where the bottom of the stack leaves the quota the upstream advertised on one call's
/// answer. The default report records nothing and allocates nothing; the limiter attaches
/// a recording one when it follows the upstream's quota.
#[derive(Clone, Debug, Default)]
pub struct QuotaReport(Option<Arc<Mutex<Option<UpstreamQuota>>>>);

impl QuotaReport {
    /// A report that keeps what is recorded in it.
    pub fn recording() -> Self {
        QuotaReport(Some(Arc::default()))
    }

    /// Whether this report records; the default one does not.
    pub fn is_recording(&self) -> bool {
        self.0.is_some()
    }

    /// Records what the upstream advertised (the last answer's word wins).
    pub fn record(&self, quota: UpstreamQuota) {
        if let Some(cell) = &self.0 {
            *cell.lock() = Some(quota);
        }
    }

    /// What was recorded, taken out.
    pub fn take(&self) -> Option<UpstreamQuota> {
        self.0.as_ref().and_then(|cell| cell.lock().take())
    }
}

/// Every report is equal to every other: a report is not part of what a request asks.
impl PartialEq for QuotaReport {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for QuotaReport {}

/// A report adds nothing to a hash, as it changes nothing in equality.
impl Hash for QuotaReport {
    fn hash<H: Hasher>(&self, _state: &mut H) {}
}

/// A request that carries the [`QuotaReport`] of its call. The rate limiter attaches a
/// recording one; the client at the bottom of the stack records in it.
pub trait CarriesQuotaReport {
    /// The report of this call.
    fn quota_report(&mut self) -> &mut QuotaReport;
}
