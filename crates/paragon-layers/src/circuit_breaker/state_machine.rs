//! The pure decisions of the breaker. Nothing here reads a clock or touches shared state:
//! the service passes `now` and the counters in, and applies what comes back.

use std::time::Duration;

use super::layer::BreakerConfig;
use crate::Timestamp;

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail fast until the open period ends.
    Open,
    /// A bounded number of probes go through.
    HalfOpen,
    /// Held open by an operator until closed or reset.
    ForcedOpen,
}

impl BreakerState {
    pub(crate) fn code(self) -> u64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
            BreakerState::ForcedOpen => 3,
        }
    }

    pub(crate) fn from_code(code: u64) -> BreakerState {
        match code & 3 {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::ForcedOpen,
        }
    }

    /// `closed`, `open`, `half_open` or `forced_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::ForcedOpen => "forced_open",
        }
    }
}

/// One change of state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state left.
    pub from: BreakerState,
    /// The state entered.
    pub to: BreakerState,
}

/// Calls and failures seen in the failure-rate window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// Calls with a verdict (success or failure).
    pub calls: u64,
    /// Of which failures.
    pub failures: u64,
}

/// Whether a closed breaker must open after a failure.
pub fn should_trip(
    consecutive_failures: u32,
    window: WindowCounts,
    config: &BreakerConfig,
) -> bool {
    let by_count = config.failure_threshold > 0 && consecutive_failures >= config.failure_threshold;
    let by_rate = config.failure_rate > 0.0
        && window.calls >= u64::from(config.minimum_calls.max(1))
        && (window.failures as f64) >= config.failure_rate * (window.calls as f64);
    by_count || by_rate
}

/// What to do with a call arriving at `now` while the breaker is `state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Let it through as an ordinary call.
    Call,
    /// Let it through as a half-open probe.
    Probe,
    /// Move to half-open first, then decide again.
    ToHalfOpen,
    /// Refuse it; a call may succeed after `retry_after`.
    Reject {
        /// Time until a call may be let through.
        retry_after: Duration,
    },
}

/// Decides one arrival. `open_until` matters only when open; `probes` is the number of
/// probes in flight when half-open.
pub fn admit(
    state: BreakerState,
    now: Timestamp,
    open_until: Timestamp,
    probes: u32,
    config: &BreakerConfig,
) -> Admission {
    match state {
        BreakerState::Closed => Admission::Call,
        BreakerState::Open if now >= open_until => Admission::ToHalfOpen,
        BreakerState::Open => Admission::Reject {
            retry_after: open_until.since(now),
        },
        BreakerState::HalfOpen if probes < config.half_open_max_calls.get() => Admission::Probe,
        // Probes are out; the earliest news comes when one of them finishes.
        BreakerState::HalfOpen => Admission::Reject {
            retry_after: Duration::from_secs(1),
        },
        BreakerState::ForcedOpen => Admission::Reject {
            retry_after: config.open_for,
        },
    }
}

/// Whether a successful call took long enough to count as a failure.
pub fn is_slow(elapsed: Duration, config: &BreakerConfig) -> bool {
    config.slow_call.is_some_and(|limit| elapsed > limit)
}

/// Packing of one window bucket into a `u64`: epoch (32 bits), calls and failures
/// (16 bits each, saturating).
pub(crate) mod bucket {
    /// Buckets a window is split into.
    pub(crate) const COUNT: u64 = 10;

    pub(crate) fn pack(epoch: u64, calls: u64, failures: u64) -> u64 {
        ((epoch & 0xffff_ffff) << 32) | (calls.min(0xffff) << 16) | failures.min(0xffff)
    }

    pub(crate) fn unpack(word: u64) -> (u64, u64, u64) {
        (word >> 32, (word >> 16) & 0xffff, word & 0xffff)
    }

    /// Whether a bucket stamped `epoch` lies in the window ending in bucket `current`.
    pub(crate) fn live(epoch: u64, current: u64) -> bool {
        (current & 0xffff_ffff).wrapping_sub(epoch) & 0xffff_ffff < COUNT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            failure_rate: 0.5,
            minimum_calls: 4,
            half_open_max_calls: NonZeroU32::new(2).unwrap(),
            ..BreakerConfig::default()
        }
    }

    const ALL: [BreakerState; 4] = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
        BreakerState::ForcedOpen,
    ];

    #[test]
    fn a_state_code_reads_back_as_its_state_whatever_the_generation_above_it() {
        for state in ALL {
            assert!(state.code() < 4, "{state:?} fits the two low bits");
            // The service keeps the generation in the bits above the code.
            for generation in [0u64, 1, 2, 3, 0x1234_5678, u64::MAX >> 2] {
                let word = (generation << 2) | state.code();
                assert_eq!(
                    BreakerState::from_code(word),
                    state,
                    "generation {generation}"
                );
            }
        }
    }

    #[test]
    fn each_state_has_its_own_name() {
        let names = ALL.map(BreakerState::as_str);
        assert_eq!(names, ["closed", "open", "half_open", "forced_open"]);
    }

    #[test]
    fn trips_on_consecutive_failures_exactly_at_threshold() {
        let c = cfg();
        assert!(!should_trip(2, WindowCounts::default(), &c));
        assert!(should_trip(3, WindowCounts::default(), &c));
        let off = BreakerConfig {
            failure_threshold: 0,
            failure_rate: 0.0,
            ..c
        };
        assert!(!should_trip(
            1000,
            WindowCounts {
                calls: 100,
                failures: 100
            },
            &off
        ));
    }

    #[test]
    fn trips_on_failure_rate_only_with_minimum_calls() {
        let c = cfg();
        assert!(!should_trip(
            1,
            WindowCounts {
                calls: 3,
                failures: 3
            },
            &c
        ));
        assert!(should_trip(
            1,
            WindowCounts {
                calls: 4,
                failures: 2
            },
            &c
        ));
        assert!(!should_trip(
            1,
            WindowCounts {
                calls: 5,
                failures: 2
            },
            &c
        ));
    }

    #[test]
    fn admission_by_state() {
        let c = cfg();
        let t = Timestamp(10);
        assert_eq!(admit(BreakerState::Closed, t, t, 0, &c), Admission::Call);
        assert_eq!(
            admit(BreakerState::Open, Timestamp(4), t, 0, &c),
            Admission::Reject {
                retry_after: Duration::from_nanos(6)
            }
        );
        assert_eq!(
            admit(BreakerState::Open, t, t, 0, &c),
            Admission::ToHalfOpen
        );
        assert_eq!(admit(BreakerState::HalfOpen, t, t, 1, &c), Admission::Probe);
        assert!(matches!(
            admit(BreakerState::HalfOpen, t, t, 2, &c),
            Admission::Reject { .. }
        ));
        assert!(matches!(
            admit(BreakerState::ForcedOpen, t, t, 0, &c),
            Admission::Reject { .. }
        ));
    }

    #[test]
    fn slow_calls() {
        let mut c = cfg();
        assert!(!is_slow(Duration::from_secs(100), &c));
        c.slow_call = Some(Duration::from_millis(100));
        assert!(!is_slow(Duration::from_millis(100), &c));
        assert!(is_slow(Duration::from_millis(101), &c));
    }

    #[test]
    fn bucket_packing_round_trips_and_ages() {
        let w = bucket::pack(7, 3, 2);
        assert_eq!(bucket::unpack(w), (7, 3, 2));
        assert_eq!(
            bucket::unpack(bucket::pack(1, 1 << 20, 1 << 20)),
            (1, 0xffff, 0xffff)
        );
        assert!(bucket::live(7, 7));
        assert!(bucket::live(7, 16));
        assert!(!bucket::live(7, 17));
        assert!(bucket::live(0xffff_ffff, 0x1_0000_0003));
    }
}
