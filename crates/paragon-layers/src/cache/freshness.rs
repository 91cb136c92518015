//! The pure freshness rule: given when an entry was stored and `now`, may it be served?

use std::time::Duration;

use crate::Timestamp;

/// Lifetimes of one cached entry, fixed when it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    /// Served as a hit strictly before this instant.
    pub fresh_until: Timestamp,
    /// Served as stale (only when the upstream cannot answer) strictly before this instant.
    pub stale_until: Timestamp,
}

impl Lifetime {
    /// The lifetime of an entry stored at `stored` with the given TTL and stale window.
    pub fn new(stored: Timestamp, ttl: Duration, stale_if_error: Duration) -> Lifetime {
        let fresh_until = stored.after(ttl);
        Lifetime {
            fresh_until,
            stale_until: fresh_until.after(stale_if_error),
        }
    }

    /// What the entry is at `now`.
    #[inline]
    pub fn at(&self, now: Timestamp) -> Freshness {
        if now < self.fresh_until {
            Freshness::Fresh
        } else if now < self.stale_until {
            Freshness::Stale
        } else {
            Freshness::Dead
        }
    }
}

/// The state of an entry at some instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Within its TTL: a hit.
    Fresh,
    /// Past its TTL but within `stale_if_error`: served only when the upstream cannot answer.
    Stale,
    /// Past both: never served, may be dropped.
    Dead,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn expires_exactly_at_ttl_and_stale_stops_exactly_after_window() {
        let l = Lifetime::new(
            Timestamp(10 * S),
            Duration::from_secs(300),
            Duration::from_secs(600),
        );
        assert_eq!(l.at(Timestamp(10 * S)), Freshness::Fresh);
        assert_eq!(l.at(Timestamp(310 * S - 1)), Freshness::Fresh);
        assert_eq!(l.at(Timestamp(310 * S)), Freshness::Stale);
        assert_eq!(l.at(Timestamp(910 * S - 1)), Freshness::Stale);
        assert_eq!(l.at(Timestamp(910 * S)), Freshness::Dead);
    }

    #[test]
    fn zero_stale_window_goes_straight_to_dead() {
        let l = Lifetime::new(Timestamp(0), Duration::from_secs(1), Duration::ZERO);
        assert_eq!(l.at(Timestamp(S - 1)), Freshness::Fresh);
        assert_eq!(l.at(Timestamp(S)), Freshness::Dead);
    }

    proptest! {
        #[test]
        fn freshness_is_monotonic(stored in 0u64..1u64 << 50, ttl in 0u64..1u64 << 40,
                                  stale in 0u64..1u64 << 40, a in 0u64..1u64 << 52, b in 0u64..1u64 << 52) {
            let l = Lifetime::new(Timestamp(stored), Duration::from_nanos(ttl), Duration::from_nanos(stale));
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let rank = |f: Freshness| match f { Freshness::Fresh => 0, Freshness::Stale => 1, Freshness::Dead => 2 };
            prop_assert!(rank(l.at(Timestamp(lo))) <= rank(l.at(Timestamp(hi))));
            prop_assert_eq!(l.at(Timestamp(lo)) == Freshness::Fresh, lo < stored + ttl);
            prop_assert_eq!(l.at(Timestamp(lo)) == Freshness::Dead, lo >= stored + ttl + stale);
        }
    }
}
