//! The pure GCRA (generic cell rate algorithm) step.
//!
//! State is one number, the theoretical arrival time (TAT). A budget of `max_requests`
//! per `window` gives an emission interval `T = window / max_requests`; `burst` calls may
//! go at once, so a call at `now` conforms when `max(TAT, now) + T - burst·T <= now`.
//! In any span of one `window` at most `max_requests + burst` calls conform.
//!
//! When the budget itself changes while it serves (a reloaded configuration),
//! [`Gcra::reprice`] carries the state over: `TAT - now` is the budget spent and not yet
//! earned back, in time at the old price `T`; kept as time, a lower rate would forget
//! calls already made and a higher one would count them more than once. So the spent
//! budget is kept as a number of calls, `(TAT - now) / T_old`, and priced anew at
//! `T_new`: the calls sent before a change count against the budget after it, neither
//! a fresh full bucket nor a lost debt.

use std::time::Duration;

use crate::clock::duration_nanos;

/// The GCRA parameters, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    /// Emission interval `T`.
    pub interval: u64,
    /// `burst · T`: how far ahead of `now` the TAT may run.
    pub tolerance: u64,
}

/// The outcome of one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Admitted after `wait` (zero: at once); the new TAT to store.
    Admit {
        /// The TAT after this call.
        new_tat: u64,
        /// How long the caller waits for its slot.
        wait: u64,
    },
    /// Not admitted; a call would conform after `retry_after`.
    Reject {
        /// Nanoseconds until a call would be admitted.
        retry_after: u64,
    },
}

impl Gcra {
    /// Parameters for `max_requests` per `window` with `burst` (both at least 1).
    pub fn new(max_requests: u32, window: Duration, burst: u32) -> Gcra {
        let interval = (duration_nanos(window) / u64::from(max_requests.max(1))).max(1);
        Gcra {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1))),
        }
    }

    /// One call at `now` against state `tat`, willing to wait up to `max_wait` ns.
    ///
    /// A call that waits reserves its slot now (the TAT moves), so waiting callers are
    /// admitted in order and never more than the budget.
    #[inline]
    pub fn step(&self, tat: u64, now: u64, max_wait: u64) -> Step {
        let new_tat = tat.max(now).saturating_add(self.interval);
        let allow_at = new_tat.saturating_sub(self.tolerance);
        if allow_at <= now {
            Step::Admit { new_tat, wait: 0 }
        } else if allow_at - now <= max_wait {
            Step::Admit {
                new_tat,
                wait: allow_at - now,
            }
        } else {
            Step::Reject {
                retry_after: allow_at - now,
            }
        }
    }

    /// The TAT under `self` that keeps the budget spent at `tat` under `old`: the same
    /// number of calls (fractions included) still to be earned back, at the new price.
    /// A TAT in the past (nothing spent) stays as it is.
    pub fn reprice(&self, old: &Gcra, tat: u64, now: u64) -> u64 {
        let Some(ahead) = tat.checked_sub(now) else {
            return tat;
        };
        let ahead = u128::from(ahead) * u128::from(self.interval) / u128::from(old.interval.max(1));
        now.saturating_add(u64::try_from(ahead).unwrap_or(u64::MAX))
    }

    /// Calls that could be admitted at once at `now`.
    pub fn available(&self, tat: u64, now: u64) -> u64 {
        let ahead = tat.saturating_sub(now);
        self.tolerance.saturating_sub(ahead) / self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn burst_then_steady_rate() {
        let g = Gcra::new(10, Duration::from_secs(1), 3);
        let mut tat = 0;
        for _ in 0..3 {
            match g.step(tat, 0, 0) {
                Step::Admit { new_tat, wait: 0 } => tat = new_tat,
                other => panic!("expected admit, got {other:?}"),
            }
        }
        assert_eq!(
            g.step(tat, 0, 0),
            Step::Reject {
                retry_after: 100 * MS
            }
        );
        assert!(matches!(
            g.step(tat, 100 * MS, 0),
            Step::Admit { wait: 0, .. }
        ));
        assert_eq!(
            g.step(tat, 40 * MS, 60 * MS),
            Step::Admit {
                new_tat: 400 * MS,
                wait: 60 * MS
            }
        );
    }

    #[test]
    fn available_counts_the_remaining_burst() {
        let g = Gcra::new(100, Duration::from_secs(60), 100);
        assert_eq!(g.available(0, 0), 100);
        let Step::Admit { new_tat, .. } = g.step(0, 0, 0) else {
            panic!()
        };
        assert_eq!(g.available(new_tat, 0), 99);
    }

    #[test]
    fn a_new_price_keeps_the_calls_spent() {
        let old = Gcra::new(100, Duration::from_secs(60), 100);
        let mut tat = 0;
        for _ in 0..60 {
            let Step::Admit { new_tat, .. } = old.step(tat, 0, 0) else {
                panic!("within the burst")
            };
            tat = new_tat;
        }
        assert_eq!(old.available(tat, 0), 40);
        // Half the rate and burst: the 60 calls made are more than the new burst of 50.
        let half = Gcra::new(50, Duration::from_secs(60), 50);
        let repriced = half.reprice(&old, tat, 0);
        assert_eq!(half.available(repriced, 0), 0, "no fresh bucket");
        assert_eq!(
            half.step(repriced, 0, 0),
            Step::Reject {
                retry_after: 10 * 1_200 * MS + 1_200 * MS
            },
            "the 10 calls over the new burst are a debt, and the next call waits for it"
        );
        // Twice the rate and burst: 200 - 60 remain, not 200 and not 200 - 120.
        let double = Gcra::new(200, Duration::from_secs(60), 200);
        assert_eq!(double.available(double.reprice(&old, tat, 0), 0), 140);
        // Nothing spent: nothing owed under any price.
        assert_eq!(double.reprice(&old, 0, 5 * MS), 0);
        // Later, what was earned back under the old price is not owed again.
        let now = 30 * 600 * MS; // 30 calls' time at the old price
        assert_eq!(double.available(double.reprice(&old, tat, now), now), 170);
    }

    proptest! {
        /// Repricing and pricing back gives the state again (up to one nanosecond a
        /// step of rounding), and never more budget than the calls spent allow.
        #[test]
        fn repricing_keeps_the_spent_calls(
            a in 1u32..1000, b in 1u32..1000, spent in 0u32..1000, now in 0u64..1_000_000 * MS,
        ) {
            let old = Gcra::new(a, Duration::from_secs(60), a);
            let new = Gcra::new(b, Duration::from_secs(60), b);
            let tat = now + u64::from(spent) * old.interval;
            let repriced = new.reprice(&old, tat, now);
            let calls_left = u64::from(b).saturating_sub(u64::from(spent));
            prop_assert!(new.available(repriced, now) <= calls_left);
            prop_assert!(new.available(repriced, now) + 1 >= calls_left);
            let back = old.reprice(&new, repriced, now);
            prop_assert!(tat.abs_diff(back) <= 2 + old.interval / new.interval);
        }

        /// Whatever the arrival pattern, no span of one window admits more than
        /// max_requests + burst calls, and waiting callers never exceed max_wait.
        #[test]
        fn never_admits_more_than_budget_plus_burst(
            max in 1u32..50, burst in 1u32..50, window_ms in 1u64..5_000,
            gaps in proptest::collection::vec(0u64..200 * MS, 1..400),
            max_wait_ms in 0u64..500,
        ) {
            let window = window_ms * MS;
            let g = Gcra::new(max, Duration::from_nanos(window), burst);
            let max_wait = max_wait_ms * MS;
            let mut tat = 0;
            let mut now = 0;
            let mut admitted_at = Vec::new();
            for gap in gaps {
                now += gap;
                if let Step::Admit { new_tat, wait } = g.step(tat, now, max_wait) {
                    prop_assert!(wait <= max_wait);
                    tat = new_tat;
                    admitted_at.push(now + wait);
                }
            }
            admitted_at.sort_unstable();
            for (i, start) in admitted_at.iter().enumerate() {
                let in_window = admitted_at[i..].iter().take_while(|t| **t < start + window).count();
                prop_assert!(in_window as u64 <= u64::from(max) + u64::from(burst),
                    "{in_window} calls in one window, budget {max} + burst {burst}");
            }
        }

        /// A rejected call is told a retry time at which it is in fact admitted.
        #[test]
        fn retry_after_is_exact(max in 1u32..50, burst in 1u32..10, calls in 1usize..100) {
            let g = Gcra::new(max, Duration::from_secs(1), burst);
            let mut tat = 0;
            for _ in 0..calls {
                if let Step::Admit { new_tat, .. } = g.step(tat, 0, 0) { tat = new_tat; }
            }
            if let Step::Reject { retry_after } = g.step(tat, 0, 0) {
                let admitted = matches!(g.step(tat, retry_after, 0), Step::Admit { .. });
                prop_assert!(admitted);
                let rejected = matches!(g.step(tat, retry_after - 1, 0), Step::Reject { .. });
                prop_assert!(rejected);
            }
        }
    }
}
