//! Time a call spent waiting on purpose in our own layers, carried by the request, so
//! that the circuit breaker's slow-call rule measures only the upstream.
//!
//! The rate limiter may hold a call for up to `max_wait` before it lets it through; the
//! breaker above it times the whole call. So that this wait does not make a fast upstream
//! look slow, the limiter adds every wait to the call's [`WaitLedger`] and the breaker
//! takes the total off the time it measured.
//!
//! The ledger travels in the request, and both layers say so in their signatures: each
//! asks for `Req: CarriesWaits`. The request is the one value that goes from the breaker
//! to the limiter through whatever stands between them: a `tower::buffer::Buffer` that
//! runs the call on another task, a retry or a hedge that clones the request (their waits
//! add up in the same ledger). A task-local, which this replaced, was lost at the first
//! hop to another task, and nothing in a type said the two layers depended on it.
//! Reporting the wait on the response and error types instead would need every answer
//! type to hold a duration that the cache must then clear before it stores an answer.
//!
//! A ledger is shared (an `Arc`) because the limiter adds to it after the breaker has
//! handed the request on. The default ledger is empty: it allocates nothing and records
//! nothing. The breaker attaches a recording ledger to a request that has none, and only
//! when its slow-call rule is on.
//!
//! A ledger is bookkeeping about one call, not part of what is asked: every ledger equals
//! every other and adds nothing to a hash, so a request that carries one still compares,
//! hashes and caches by what it asks.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::duration_nanos;

/// The time one call spent waiting on purpose in our own layers, shared by every clone
/// of its request. See the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct WaitLedger(Option<Arc<AtomicU64>>);

impl WaitLedger {
    /// A ledger that records what is added to it, starting at zero.
    pub fn recording() -> Self {
        WaitLedger(Some(Arc::new(AtomicU64::new(0))))
    }

    /// Whether this ledger records; the default ledger does not.
    pub fn is_recording(&self) -> bool {
        self.0.is_some()
    }

    /// Adds a wait; does nothing when the ledger does not record.
    pub fn add(&self, wait: Duration) {
        if let Some(nanos) = &self.0 {
            nanos.fetch_add(duration_nanos(wait), Ordering::Relaxed);
        }
    }

    /// The waits added so far; zero when the ledger does not record.
    pub fn total(&self) -> Duration {
        self.0.as_ref().map_or(Duration::ZERO, |nanos| {
            Duration::from_nanos(nanos.load(Ordering::Relaxed))
        })
    }
}

/// Every ledger is equal to every other: a ledger is not part of what a request asks.
impl PartialEq for WaitLedger {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for WaitLedger {}

/// A ledger adds nothing to a hash, as it changes nothing in equality.
impl Hash for WaitLedger {
    fn hash<H: Hasher>(&self, _state: &mut H) {}
}

/// A request that carries the [`WaitLedger`] of its call. The circuit breaker attaches
/// one; the rate limiter adds its waits to it.
pub trait CarriesWaits {
    /// The ledger of this request's call.
    fn wait_ledger(&mut self) -> &mut WaitLedger;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn hash_of(l: &WaitLedger) -> u64 {
        let mut h = DefaultHasher::new();
        l.hash(&mut h);
        h.finish()
    }

    #[test]
    fn clones_share_the_total_and_the_default_ledger_records_nothing() {
        let ledger = WaitLedger::recording();
        let clone = ledger.clone();
        clone.add(Duration::from_millis(5));
        ledger.add(Duration::from_millis(7));
        assert_eq!(ledger.total(), Duration::from_millis(12));
        assert_eq!(clone.total(), Duration::from_millis(12));

        let off = WaitLedger::default();
        off.add(Duration::from_secs(1));
        assert_eq!(off.total(), Duration::ZERO);
        assert!(!off.is_recording());
    }

    #[test]
    fn a_ledger_changes_nothing_in_equality_or_hashing() {
        let recording = WaitLedger::recording();
        recording.add(Duration::from_millis(3));
        let off = WaitLedger::default();
        assert_eq!(recording, off);
        assert_eq!(hash_of(&recording), hash_of(&off));
    }
}
