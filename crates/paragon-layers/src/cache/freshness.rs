//! The pure freshness rule: given when an entry was stored and `now`, may it be served,
//! and how?
//!
//! An entry is *fresh* for its TTL. After that, for `stale_while_revalidate`, it is
//! *updating*: answered at once while one background refresh runs. For
//! `stale_if_error` after its TTL, it may stand in for an answer the upstream could not
//! give (*stale*). Past both it is *dead*. Both windows count from the end of the TTL.
//!
//! The TTL itself may be shortened at random ([`jittered_ttl`]), so entries stored at one
//! instant do not all expire at one instant.

use std::time::Duration;

use crate::Timestamp;

/// How long an expired entry stays useful, as configured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grace {
    /// After the TTL, answered at once while a background refresh runs.
    pub stale_while_revalidate: Duration,
    /// After the TTL, served when the upstream cannot answer.
    pub stale_if_error: Duration,
}

impl Grace {
    /// No use at all after the TTL.
    pub const NONE: Grace = Grace {
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
    };
}

/// Lifetimes of one cached entry, fixed when it is stored.
///
/// The windows after the TTL are kept in milliseconds beside the end of the TTL, so a
/// lifetime stays two words (a cache slot stays one cache line); a window longer than
/// `u32::MAX` ms (about 49 days) is cut to that, and a non-zero one shorter than a
/// millisecond is one millisecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    /// Served as a hit strictly before this instant.
    pub fresh_until: Timestamp,
    updating_ms: u32,
    stale_ms: u32,
}

fn window_ms(d: Duration) -> u32 {
    if d.is_zero() {
        0
    } else {
        u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
    }
}

impl Lifetime {
    /// The lifetime of an entry stored at `stored` with the given TTL and grace.
    pub fn new(stored: Timestamp, ttl: Duration, grace: Grace) -> Lifetime {
        Lifetime::until(stored.after(ttl), grace)
    }

    /// The lifetime of an entry fresh until `fresh_until`, then with `grace`.
    pub fn until(fresh_until: Timestamp, grace: Grace) -> Lifetime {
        Lifetime {
            fresh_until,
            updating_ms: window_ms(grace.stale_while_revalidate),
            stale_ms: window_ms(grace.stale_if_error),
        }
    }

    /// Served as stale (only when the upstream cannot answer) strictly before this instant.
    pub fn stale_until(&self) -> Timestamp {
        self.fresh_until
            .after(Duration::from_millis(u64::from(self.stale_ms)))
    }

    /// Answered at once while refreshed, strictly before this instant.
    pub fn updating_until(&self) -> Timestamp {
        self.fresh_until
            .after(Duration::from_millis(u64::from(self.updating_ms)))
    }

    /// Whether the entry is fresh at `now`: one comparison, the whole rule of a hit.
    #[inline(always)]
    pub fn is_fresh(&self, now: Timestamp) -> bool {
        now < self.fresh_until
    }

    /// What the entry is at `now`.
    #[inline]
    pub fn at(&self, now: Timestamp) -> Freshness {
        if now < self.fresh_until {
            Freshness::Fresh
        } else if now < self.updating_until() {
            Freshness::Updating
        } else if now < self.stale_until() {
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
    /// Past its TTL but within `stale_while_revalidate`: answered at once while one
    /// background refresh runs.
    Updating,
    /// Past its TTL (and `stale_while_revalidate`) but within `stale_if_error`: served
    /// only when the upstream cannot answer.
    Stale,
    /// Past every window: never served, may be dropped.
    Dead,
}

/// `ttl × (1 − jitter × u)`, with `u` in `[0, 1)` read from `draw` (any 64 random bits):
/// a TTL shortened by at most the share `jitter` (0 to 1), so entries stored together
/// expire spread over that share of the TTL.
pub fn jittered_ttl(ttl: Duration, jitter: f64, draw: u64) -> Duration {
    if jitter <= 0.0 || jitter.is_nan() {
        return ttl;
    }
    let u = (draw >> 11) as f64 / (1u64 << 53) as f64;
    ttl.mul_f64(1.0 - jitter.min(1.0) * u)
}

/// 64 well-mixed bits from `x` (SplitMix64): the draw of [`jittered_ttl`], taken from a
/// key's hash (seeded at random per table) and the time of the store.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a table lookup found: what the freshness rule lets the cache answer.
pub(crate) enum Lookup<V> {
    /// A fresh entry.
    Hit(V),
    /// An entry past its TTL, within its `stale_while_revalidate` window.
    Updating(V),
    /// Nothing that may be answered without the upstream.
    Miss,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    fn grace(swr: u64, sie: u64) -> Grace {
        Grace {
            stale_while_revalidate: Duration::from_secs(swr),
            stale_if_error: Duration::from_secs(sie),
        }
    }

    #[test]
    fn expires_exactly_at_ttl_and_stale_stops_exactly_after_window() {
        let l = Lifetime::new(Timestamp(10 * S), Duration::from_secs(300), grace(0, 600));
        assert_eq!(l.at(Timestamp(10 * S)), Freshness::Fresh);
        assert_eq!(l.at(Timestamp(310 * S - 1)), Freshness::Fresh);
        assert_eq!(l.at(Timestamp(310 * S)), Freshness::Stale);
        assert_eq!(l.at(Timestamp(910 * S - 1)), Freshness::Stale);
        assert_eq!(l.at(Timestamp(910 * S)), Freshness::Dead);
    }

    #[test]
    fn updating_comes_first_after_the_ttl_then_stale_then_dead() {
        let l = Lifetime::new(Timestamp(0), Duration::from_secs(10), grace(5, 60));
        assert_eq!(l.at(Timestamp(10 * S - 1)), Freshness::Fresh);
        assert_eq!(l.at(Timestamp(10 * S)), Freshness::Updating);
        assert_eq!(l.at(Timestamp(15 * S - 1)), Freshness::Updating);
        assert_eq!(l.at(Timestamp(15 * S)), Freshness::Stale);
        assert_eq!(l.at(Timestamp(70 * S)), Freshness::Dead);
        // A refresh window longer than the error window: updating to its end, then dead.
        let l = Lifetime::new(Timestamp(0), Duration::from_secs(10), grace(30, 5));
        assert_eq!(l.at(Timestamp(39 * S)), Freshness::Updating);
        assert_eq!(l.at(Timestamp(40 * S)), Freshness::Dead);
        assert_eq!(l.stale_until(), Timestamp(15 * S));
    }

    #[test]
    fn zero_stale_window_goes_straight_to_dead() {
        let l = Lifetime::new(Timestamp(0), Duration::from_secs(1), Grace::NONE);
        assert_eq!(l.at(Timestamp(S - 1)), Freshness::Fresh);
        assert_eq!(l.at(Timestamp(S)), Freshness::Dead);
    }

    #[test]
    fn windows_are_kept_to_the_millisecond_and_capped() {
        let tiny = Grace {
            stale_while_revalidate: Duration::from_nanos(1),
            stale_if_error: Duration::from_secs(u64::MAX / 4),
        };
        let l = Lifetime::new(Timestamp(0), Duration::ZERO, tiny);
        assert_eq!(l.updating_until(), Timestamp(1_000_000));
        assert_eq!(l.stale_until(), Timestamp(u64::from(u32::MAX) * 1_000_000));
    }

    #[test]
    fn jitter_shortens_the_ttl_by_at_most_its_share() {
        let ttl = Duration::from_secs(100);
        assert_eq!(jittered_ttl(ttl, 0.0, u64::MAX), ttl);
        assert_eq!(jittered_ttl(ttl, 0.1, 0), ttl);
        let shortest = jittered_ttl(ttl, 0.1, u64::MAX);
        assert!(shortest >= Duration::from_secs(90) && shortest < Duration::from_millis(90_001));
        assert_eq!(jittered_ttl(ttl, f64::NAN, u64::MAX), ttl);
    }

    #[test]
    fn jitter_of_a_thousand_keys_spreads_over_its_share() {
        let ttl = Duration::from_secs(300);
        let ttls: Vec<Duration> = (0..1000u64)
            .map(|k| jittered_ttl(ttl, 0.1, mix(k.wrapping_mul(0x9E37_79B9))))
            .collect();
        let (lo, hi) = (ttls.iter().min().unwrap(), ttls.iter().max().unwrap());
        // Spread over at least 9 % of the TTL, never past 10 %.
        assert!(*hi - *lo >= ttl.mul_f64(0.09), "{lo:?}..{hi:?}");
        assert!(*lo >= ttl.mul_f64(0.9) && *hi <= ttl);
    }

    proptest! {
        #[test]
        fn freshness_is_monotonic(stored in 0u64..1u64 << 50, ttl in 0u64..1u64 << 40,
                                  swr in 0u64..1u64 << 40, stale in 0u64..1u64 << 40,
                                  a in 0u64..1u64 << 52, b in 0u64..1u64 << 52) {
            let g = Grace {
                stale_while_revalidate: Duration::from_nanos(swr),
                stale_if_error: Duration::from_nanos(stale),
            };
            let l = Lifetime::new(Timestamp(stored), Duration::from_nanos(ttl), g);
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let rank = |f: Freshness| match f {
                Freshness::Fresh => 0, Freshness::Updating => 1, Freshness::Stale => 2, Freshness::Dead => 3,
            };
            prop_assert!(rank(l.at(Timestamp(lo))) <= rank(l.at(Timestamp(hi))));
            prop_assert_eq!(l.at(Timestamp(lo)) == Freshness::Fresh, lo < stored + ttl);
            prop_assert_eq!(l.is_fresh(Timestamp(lo)), lo < stored + ttl);
            let ms = |n: u64| if n == 0 { 0 } else { (n / 1_000_000).max(1) * 1_000_000 };
            let last = stored + ttl + ms(swr).max(ms(stale));
            prop_assert_eq!(l.at(Timestamp(lo)) == Freshness::Dead, lo >= last);
        }

        #[test]
        fn jitter_stays_within_its_share(ttl in 0u64..1u64 << 50, jitter in 0.0f64..=1.0, draw in any::<u64>()) {
            let ttl = Duration::from_nanos(ttl);
            let j = jittered_ttl(ttl, jitter, draw);
            prop_assert!(j <= ttl);
            prop_assert!(j.as_secs_f64() >= ttl.as_secs_f64() * (1.0 - jitter) - 1e-6);
        }
    }
}
