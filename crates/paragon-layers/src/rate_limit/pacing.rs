//! The pure pacing rule: never send more calls than the upstream says remain of its own
//! quota before its reset, spread evenly over the time left.
//!
//! The upstream may advertise on any answer that `remaining` calls are left for `reset`
//! (the IETF `RateLimit` fields, `RateLimit-Remaining`/`-Reset`, `X-RateLimit-*`). The
//! pacer keeps the end of that window, the calls left in it, and the earliest instant of
//! the next call; calls go at most one per `(time left) / (calls left)`, so the quota is
//! spread over the window instead of spent at its start. A window whose end has passed
//! is no constraint at all: a stale or bogus reset never stalls calls.
//!
//! Answers of one window may arrive out of order, and a reset given in whole seconds
//! rounds up: so within one window the pacer keeps the fewest calls left and the
//! earliest end it was told. A later window is recognised by a larger remainder, an end
//! clearly past the one known, or the known end having passed.
//!
//! All times are nanoseconds of the caller's clock.

/// How far past the known end an advertised end must be to start a new window: a reset
/// in whole seconds may read up to one second late.
const NEW_WINDOW_SLACK: u64 = 1_000_000_000;

/// What the upstream advertised of its own quota on one answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advertised {
    /// Calls left before the reset.
    pub remaining: u64,
    /// Nanoseconds until the reset.
    pub reset: u64,
}

/// The pacer's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pacing {
    /// End of the advertised window; no constraint from this instant on.
    pub window_end: u64,
    /// Calls left in the window.
    pub left: u64,
    /// Earliest instant of the next call.
    pub next_at: u64,
    /// Spacing of calls: the time left divided by the calls left, when last told.
    pub interval: u64,
}

/// The outcome of one pacing step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// The call may go after `wait` nanoseconds (zero: at once).
    Go {
        /// How long the call waits for its turn.
        wait: u64,
    },
    /// Not within the caller's `max_wait`; a call may go after `retry_after`.
    Hold {
        /// Nanoseconds until a call would go.
        retry_after: u64,
    },
}

impl Pacing {
    /// Takes in what the upstream advertised at `now`.
    pub fn advertise(&mut self, now: u64, ad: Advertised) {
        let end = now.saturating_add(ad.reset);
        let new_window = now >= self.window_end
            || ad.remaining > self.left
            || end > self.window_end.saturating_add(NEW_WINDOW_SLACK);
        if new_window {
            self.window_end = end;
            self.left = ad.remaining;
        } else {
            self.window_end = self.window_end.min(end);
            self.left = self.left.min(ad.remaining);
        }
        let time_left = self.window_end.saturating_sub(now);
        self.interval = time_left.checked_div(self.left).unwrap_or(0);
        // The next call is never later than it would be spaced from now.
        self.next_at = self.next_at.min(now.saturating_add(self.interval));
    }

    /// Whether a call at `now`, willing to wait `max_wait`, may go; changes nothing.
    pub fn step(&self, now: u64, max_wait: u64) -> Pace {
        if now >= self.window_end {
            return Pace::Go { wait: 0 };
        }
        let at = if self.left == 0 {
            // Nothing left: the next call goes when the window ends.
            self.window_end
        } else {
            self.next_at.max(now)
        };
        let wait = at - now;
        if wait <= max_wait {
            Pace::Go { wait }
        } else {
            Pace::Hold { retry_after: wait }
        }
    }

    /// Counts a call that goes at `at` (a `Go` of [`step`](Self::step)).
    ///
    /// The next turn is one interval after this call's own turn, not after the instant it
    /// came, when it came late by less than an interval: calls that arrive at discrete
    /// instants keep the pace instead of losing part of an interval each time. So at most
    /// two calls go back to back, never a burst.
    pub fn take(&mut self, at: u64) {
        if at >= self.window_end {
            return;
        }
        self.left = self.left.saturating_sub(1);
        self.next_at = self
            .next_at
            .max(at.saturating_sub(self.interval))
            .saturating_add(self.interval);
    }

    /// Gives back a call counted by [`take`](Self::take) that did not go after all
    /// (another limit refused it).
    pub fn give_back(&mut self, at: u64) {
        if at >= self.window_end {
            return;
        }
        self.left = self.left.saturating_add(1);
        self.next_at = self.next_at.saturating_sub(self.interval);
    }

    /// The advertised quota as known at `now`: calls left and time to the reset, or
    /// `None` when no window is in force.
    pub fn known(&self, now: u64) -> Option<(u64, u64)> {
        (now < self.window_end).then(|| (self.left, self.window_end - now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    #[test]
    fn calls_are_spread_evenly_over_the_time_left() {
        let mut p = Pacing::default();
        assert_eq!(
            p.step(0, 0),
            Pace::Go { wait: 0 },
            "nothing advertised: free"
        );
        p.advertise(
            0,
            Advertised {
                remaining: 10,
                reset: 10 * S,
            },
        );
        assert_eq!(p.step(0, 0), Pace::Go { wait: 0 });
        p.take(0);
        assert_eq!(p.step(0, 0), Pace::Hold { retry_after: S });
        assert_eq!(p.step(0, S), Pace::Go { wait: S });
        assert_eq!(p.step(S, 0), Pace::Go { wait: 0 });
    }

    #[test]
    fn nothing_left_holds_until_the_reset_and_a_past_reset_is_no_constraint() {
        let mut p = Pacing::default();
        p.advertise(
            0,
            Advertised {
                remaining: 0,
                reset: 5 * S,
            },
        );
        assert_eq!(p.step(S, 0), Pace::Hold { retry_after: 4 * S });
        assert_eq!(p.step(5 * S, 0), Pace::Go { wait: 0 });
        // A reset of zero (or one in the past) leaves calls free.
        let mut p = Pacing::default();
        p.advertise(
            7 * S,
            Advertised {
                remaining: 0,
                reset: 0,
            },
        );
        assert_eq!(p.step(7 * S, 0), Pace::Go { wait: 0 });
    }

    #[test]
    fn within_one_window_the_fewest_left_and_the_earliest_end_win() {
        let mut p = Pacing::default();
        p.advertise(
            0,
            Advertised {
                remaining: 10,
                reset: 10 * S,
            },
        );
        // A late answer of an earlier call says 9 with a reset read one second later.
        p.advertise(
            100 * MS,
            Advertised {
                remaining: 8,
                reset: 10 * S,
            },
        );
        assert_eq!((p.left, p.window_end), (8, 10 * S));
        // A new window: more remain than we had left.
        p.advertise(
            11 * S,
            Advertised {
                remaining: 10,
                reset: 10 * S,
            },
        );
        assert_eq!((p.left, p.window_end), (10, 21 * S));
    }

    #[test]
    fn a_call_given_back_is_counted_again() {
        let mut p = Pacing::default();
        p.advertise(
            0,
            Advertised {
                remaining: 4,
                reset: 4 * S,
            },
        );
        let before = p;
        p.take(0);
        p.give_back(0);
        assert_eq!(p.left, before.left);
        assert_eq!(p.step(0, 0), Pace::Go { wait: 0 });
    }

    proptest! {
        /// Whatever the arrivals and however often the upstream repeats its window,
        /// no more calls go before the reset than it said remained.
        #[test]
        fn never_sends_more_than_remain_before_the_reset(
            remaining in 0u64..50,
            reset_ms in 1u64..20_000,
            gaps in proptest::collection::vec(0u64..500 * MS, 1..300),
            readvertise_every in 1usize..20,
            max_wait_ms in 0u64..1_000,
        ) {
            let reset = reset_ms * MS;
            let mut p = Pacing::default();
            p.advertise(0, Advertised { remaining, reset });
            let mut now = 0;
            let mut sent = 0u64;
            for (i, gap) in gaps.into_iter().enumerate() {
                now += gap;
                if let Pace::Go { wait } = p.step(now, max_wait_ms * MS) {
                    prop_assert!(wait <= max_wait_ms * MS);
                    let at = now + wait;
                    p.take(at);
                    if at < reset {
                        sent += 1;
                    }
                }
                // The upstream repeats what is left of its window, as it would answer.
                if i % readvertise_every == 0 && now < reset {
                    let left = remaining.saturating_sub(sent);
                    p.advertise(now, Advertised { remaining: left, reset: reset - now });
                }
            }
            prop_assert!(sent <= remaining, "{sent} calls went, {remaining} remained");
        }

        /// Offered more than the quota, the pacer sends nearly all of it in the window.
        #[test]
        fn uses_the_quota_it_is_given(remaining in 1u64..200, reset_s in 1u64..120) {
            let reset = reset_s * S;
            let mut p = Pacing::default();
            p.advertise(0, Advertised { remaining, reset });
            // Offered twice the quota, evenly.
            let step = reset / (2 * remaining);
            let mut sent = 0;
            let mut now = 0;
            while now < reset {
                if let Pace::Go { wait: 0 } = p.step(now, 0) {
                    p.take(now);
                    sent += 1;
                }
                now += step.max(1);
            }
            prop_assert!(sent + 1 >= remaining, "{sent} of {remaining}");
            prop_assert!(sent <= remaining);
        }
    }
}
