//! The moment by which one call must be answered, carried by the request.
//!
//! The retry layer stamps a [`Deadline`] on a request that has none (its configured
//! `deadline` from now) and keeps every attempt of the call inside it: no attempt starts
//! after it, and an attempt still out when it passes is cancelled. The deadline travels in
//! the request, like the [`WaitLedger`](crate::WaitLedger), so every layer below sees the
//! same moment through whatever stands between them (a `tower::buffer::Buffer`, the clones
//! a retry or a hedge sends), and the layers that depend on it say so in their signatures
//! (`Req: CarriesDeadline`).
//!
//! A deadline is a [`Timestamp`] of the stack's [`Clock`](crate::Clock): only the layers
//! that share that clock can read it.
//!
//! Like a ledger, a deadline is bookkeeping about one call, not part of what is asked:
//! every deadline equals every other and adds nothing to a hash, so a request that carries
//! one still compares, hashes and caches by what it asks.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use crate::Timestamp;

/// When one call must be answered by; none by default. See the [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct Deadline(Option<Timestamp>);

impl Deadline {
    /// A deadline at `at`, a timestamp of the stack's clock.
    pub fn at(at: Timestamp) -> Self {
        Deadline(Some(at))
    }

    /// The moment, when one is set.
    pub fn get(&self) -> Option<Timestamp> {
        self.0
    }

    /// The time left at `now`: `None` when no deadline is set, zero once it has passed.
    pub fn left(&self, now: Timestamp) -> Option<Duration> {
        self.0.map(|at| at.since(now))
    }
}

/// Every deadline is equal to every other: a deadline is not part of what a request asks.
impl PartialEq for Deadline {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for Deadline {}

/// A deadline adds nothing to a hash, as it changes nothing in equality.
impl Hash for Deadline {
    fn hash<H: Hasher>(&self, _state: &mut H) {}
}

/// A request that carries the [`Deadline`] of its call. The retry layer sets it when it is
/// not set and keeps every attempt within it.
pub trait CarriesDeadline {
    /// The deadline of this request's call.
    fn deadline(&mut self) -> &mut Deadline;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    #[test]
    fn a_deadline_tells_the_time_left_and_changes_nothing_in_equality() {
        let d = Deadline::at(Timestamp(5_000));
        assert_eq!(d.left(Timestamp(1_000)), Some(Duration::from_nanos(4_000)));
        assert_eq!(d.left(Timestamp(9_000)), Some(Duration::ZERO));
        assert_eq!(Deadline::default().left(Timestamp(1)), None);
        assert_eq!(d, Deadline::default());
        let hash = |d: &Deadline| {
            let mut h = DefaultHasher::new();
            d.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&d), hash(&Deadline::default()));
    }
}
