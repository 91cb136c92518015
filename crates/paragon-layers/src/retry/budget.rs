//! The retry budget, a pure core: what it decides depends only on the calls it was told
//! of and the `now` it is given.
//!
//! Over a sliding window of the last 10 seconds (ten buckets of one second), extra
//! attempts — retries and hedges — may number at most `ratio` × the first attempts in
//! the window, plus a reserve of `min_per_sec` × 10 so that a quiet service can still
//! retry. An extra attempt is counted when it is scheduled, before any backoff, so retries
//! waiting to start already hold their share and cannot all be released at once. An
//! extra attempt that is given up before it starts (its caller went away) is handed back
//! with [`RetryBudget::refund`].
//!
//! This is the budget of Finagle and Envoy: a load that fails entirely costs the upstream
//! at most `1 + ratio` times the calls it would cost without retries, plus the reserve.

use crate::Timestamp;

/// Buckets in the window.
pub const BUCKETS: u64 = 10;
/// Width of one bucket, in nanoseconds (one second).
const BUCKET_NANOS: u64 = 1_000_000_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Bucket {
    /// The second this bucket counts; a bucket of an older second is empty.
    second: u64,
    firsts: u64,
    extras: u64,
}

/// The retry budget of one instance; see the [module docs](self).
#[derive(Clone, Debug, PartialEq)]
pub struct RetryBudget {
    ratio: f64,
    reserve: u64,
    buckets: [Bucket; BUCKETS as usize],
}

impl RetryBudget {
    /// A budget of `ratio` × first attempts plus `min_per_sec` × 10, over 10 seconds.
    /// `ratio` is taken as given; the layer's configuration checks it.
    pub fn new(ratio: f64, min_per_sec: u32) -> Self {
        RetryBudget {
            ratio,
            reserve: u64::from(min_per_sec) * BUCKETS,
            buckets: [Bucket::default(); BUCKETS as usize],
        }
    }

    /// Takes a new ratio and reserve, keeping the attempts counted in the window.
    pub fn set_limits(&mut self, ratio: f64, min_per_sec: u32) {
        self.ratio = ratio;
        self.reserve = u64::from(min_per_sec) * BUCKETS;
    }

    fn bucket(&mut self, now: Timestamp) -> &mut Bucket {
        let second = now.0 / BUCKET_NANOS;
        let b = &mut self.buckets[(second % BUCKETS) as usize];
        if b.second != second {
            *b = Bucket {
                second,
                firsts: 0,
                extras: 0,
            };
        }
        b
    }

    /// First attempts and extra attempts in the window that ends at `now`.
    pub fn window(&self, now: Timestamp) -> (u64, u64) {
        let current = now.0 / BUCKET_NANOS;
        self.buckets
            .iter()
            .filter(|b| b.second <= current && current - b.second < BUCKETS)
            .fold((0, 0), |(f, e), b| (f + b.firsts, e + b.extras))
    }

    /// Extra attempts the window allows in all: the share of its first attempts and the
    /// reserve.
    fn allowance(&self, firsts: u64) -> u64 {
        // The float product of a count below 2^53 and a ratio is exact enough; `as`
        // saturates.
        ((self.ratio * firsts as f64).floor() as u64).saturating_add(self.reserve)
    }

    /// Counts a first attempt at `now`.
    pub fn record_first(&mut self, now: Timestamp) {
        let b = self.bucket(now);
        b.firsts = b.firsts.saturating_add(1);
    }

    /// Takes one extra attempt at `now` if the window allows it; `false` leaves the budget
    /// as it was.
    pub fn try_spend(&mut self, now: Timestamp) -> bool {
        if self.left(now) == 0 {
            return false;
        }
        let b = self.bucket(now);
        b.extras = b.extras.saturating_add(1);
        true
    }

    /// Hands back an extra attempt taken at `spent_at` that never started. Nothing
    /// happens once that second has left the window.
    pub fn refund(&mut self, spent_at: Timestamp) {
        let second = spent_at.0 / BUCKET_NANOS;
        let b = &mut self.buckets[(second % BUCKETS) as usize];
        if b.second == second {
            b.extras = b.extras.saturating_sub(1);
        }
    }

    /// Extra attempts that may still be taken at `now`.
    pub fn left(&self, now: Timestamp) -> u64 {
        let (firsts, extras) = self.window(now);
        self.allowance(firsts).saturating_sub(extras)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn at(ms: u64) -> Timestamp {
        Timestamp(0).after(Duration::from_millis(ms))
    }

    #[test]
    fn a_quiet_budget_has_its_reserve_and_no_more() {
        let mut b = RetryBudget::new(0.1, 1);
        assert_eq!(b.left(at(0)), 10);
        for _ in 0..10 {
            assert!(b.try_spend(at(500)));
        }
        assert!(!b.try_spend(at(900)));
        assert_eq!(b.left(at(900)), 0);
        // Ten seconds later the spent reserve has left the window.
        assert_eq!(b.left(at(10_500)), 10);
    }

    #[test]
    fn new_limits_keep_what_the_window_counted() {
        let mut b = RetryBudget::new(0.1, 1);
        for _ in 0..4 {
            assert!(b.try_spend(at(500)));
        }
        assert_eq!(b.left(at(500)), 6);
        b.set_limits(0.1, 2);
        assert_eq!(b.left(at(500)), 16, "twice the reserve, the 4 spent kept");
        for _ in 0..100 {
            b.record_first(at(600));
        }
        b.set_limits(0.5, 0);
        assert_eq!(
            b.left(at(600)),
            46,
            "half of 100 first attempts, less the 4 spent"
        );
    }

    #[test]
    fn first_attempts_earn_their_ratio() {
        let mut b = RetryBudget::new(0.1, 0);
        assert!(!b.try_spend(at(0)), "no reserve, no first attempts");
        for _ in 0..100 {
            b.record_first(at(100));
        }
        assert_eq!(b.left(at(100)), 10);
        for _ in 0..10 {
            assert!(b.try_spend(at(200)));
        }
        assert!(!b.try_spend(at(200)));
        // The first attempts leave the window with their second.
        assert_eq!(b.window(at(9_999)), (100, 10));
        assert_eq!(b.window(at(10_000)), (0, 0));
    }

    #[test]
    fn a_refund_gives_back_a_retry_that_never_started() {
        let mut b = RetryBudget::new(0.0, 1);
        assert!(b.try_spend(at(1_000)));
        assert_eq!(b.left(at(1_200)), 9);
        b.refund(at(1_000));
        assert_eq!(b.left(at(1_200)), 10);
        // A refund of a second that has left the window changes nothing, even where its
        // bucket now counts a later second.
        assert!(b.try_spend(at(12_000)));
        b.refund(at(2_000));
        assert_eq!(b.left(at(12_100)), 9);
    }

    #[test]
    fn old_buckets_are_reused_not_added() {
        let mut b = RetryBudget::new(1.0, 0);
        b.record_first(at(0));
        b.record_first(at(10_000)); // the same bucket, ten seconds later
        assert_eq!(b.window(at(10_000)), (1, 0));
    }

    proptest! {
        /// Whenever an extra attempt is granted, the extra attempts in the window do not
        /// exceed the ratio of its first attempts plus the reserve; and a budget refuses
        /// only when nothing is left.
        #[test]
        fn never_grants_past_the_budget(
            ratio in 0.0f64..=1.0,
            min_per_sec in 0u32..5,
            steps in proptest::collection::vec((0u64..700, 0u8..3), 1..400),
        ) {
            let mut b = RetryBudget::new(ratio, min_per_sec);
            let mut now = 0u64;
            for (dt, op) in steps {
                now += dt;
                let t = at(now);
                match op {
                    0 => b.record_first(t),
                    1 => {
                        let left = b.left(t);
                        let granted = b.try_spend(t);
                        prop_assert_eq!(granted, left > 0);
                        let (firsts, extras) = b.window(t);
                        if granted {
                            let allowed = (ratio * firsts as f64).floor() as u64
                                + u64::from(min_per_sec) * BUCKETS;
                            prop_assert!(extras <= allowed, "{} > {}", extras, allowed);
                        }
                    }
                    _ => {
                        let before = b.left(t);
                        if b.try_spend(t) {
                            b.refund(t);
                            prop_assert_eq!(b.left(t), before);
                        }
                    }
                }
            }
        }

        /// A steady load that fails entirely: over any whole number of windows the extra
        /// attempts stay within ratio × first attempts plus the reserve of each window.
        #[test]
        fn a_steady_failing_load_stays_within_ratio_and_reserve(
            per_sec in 1u64..600,
            ratio in 0.0f64..=0.5,
            min_per_sec in 0u32..3,
            windows in 1u64..7,
        ) {
            let mut b = RetryBudget::new(ratio, min_per_sec);
            let (mut firsts, mut extras) = (0u64, 0u64);
            let step = 1_000_000_000 / per_sec;
            for i in 0..per_sec * 10 * windows {
                let t = Timestamp(i * step);
                b.record_first(t);
                firsts += 1;
                if b.try_spend(t) {
                    extras += 1;
                }
            }
            let bound = (ratio * firsts as f64).ceil() as u64
                + u64::from(min_per_sec) * BUCKETS * windows
                + windows; // one rounding per window
            prop_assert!(extras <= bound, "{} > {}", extras, bound);
        }
    }
}
