//! Fault settings ([`Faults`]) and their validated, ready-to-use form.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::SimError;

/// Default size of an oversized body: 2 MiB.
pub const DEFAULT_OVERSIZED_BYTES: usize = 2 * 1024 * 1024;
/// Largest accepted `oversized_bytes`: 256 MiB.
pub const MAX_OVERSIZED_BYTES: usize = 256 * 1024 * 1024;
/// Longest accepted duration in a fault setting: 365 days.
pub const MAX_FAULT_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The faults the simulator injects into `/users/{id}` answers.
///
/// All fields are optional in JSON (`{}` means no faults) and unknown fields are
/// rejected. Durations are humantime strings such as `"50ms"`, `"2s"`, `"5m"`. Rates are
/// per-request probabilities in `0..=1`.
///
/// The checks run in this order: latency (always first, with the slow tail's extra delay
/// for the share `slow_rate` of requests), authentication, `outage`, `always_429`,
/// `quota`, `fail_first` (the first calls of each id fail), then one draw decides
/// `drop_rate` / `error_rate`, then ids
/// starting with `missing` answer 404, then one draw picks at most one body fault, in
/// the order `malformed_rate`, `not_object_rate`, `wrong_id_rate`, `oversized_rate`,
/// `trickle_rate`, `reset_rate` (if their sum exceeds 1 the earlier ones win).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Delay added before every `/users` answer, e.g. `"50ms"`.
    pub latency: Option<String>,
    /// Share of requests answered `500` with a JSON problem body.
    pub error_rate: f64,
    /// Every `/users` request answers `503` for this long, counted from when the
    /// faults were set.
    pub outage: Option<String>,
    /// Requests allowed per `quota_window`; the rest answer `429` with `Retry-After`
    /// and `RateLimit-Policy` / `RateLimit` headers.
    pub quota: Option<u32>,
    /// The quota window; `"1s"` when absent.
    pub quota_window: Option<String>,
    /// When set, every `/users` request answers `429` with `Retry-After` of this many
    /// seconds.
    pub always_429: Option<u64>,
    /// Share of requests answered `200` with a body that is not JSON.
    pub malformed_rate: f64,
    /// Share of requests answered `200` with a JSON array instead of an object.
    pub not_object_rate: f64,
    /// Share of requests answered `200` with a user whose `id` is not the requested one.
    pub wrong_id_rate: f64,
    /// Share of requests answered `200` with a valid user padded to `oversized_bytes`.
    pub oversized_rate: f64,
    /// Size of an oversized body; 2 MiB when absent.
    pub oversized_bytes: Option<usize>,
    /// Share of requests answered `200` whose body then trickles one byte every 100 ms,
    /// forever.
    pub trickle_rate: f64,
    /// Share of requests answered `200` with a `Content-Length` larger than what is
    /// sent, after which the connection is aborted.
    pub reset_rate: f64,
    /// Share of requests whose connection is closed without any response.
    pub drop_rate: f64,
    /// Share of requests delayed by `slow_latency` more (a slow tail).
    pub slow_rate: f64,
    /// The slow tail's extra delay, e.g. `"2s"`; required when `slow_rate` is set.
    pub slow_latency: Option<String>,
    /// The first this many requests for each id fail (counted from when the faults were
    /// set), as `fail_first_status` says; 0 is off.
    pub fail_first: u32,
    /// How those requests fail: an HTTP status (`503` when absent), or `0` to close the
    /// connection without an answer.
    pub fail_first_status: Option<u16>,
    /// Those requests wait this long more before they fail, e.g. `"10s"` (an attempt
    /// that hangs, then fails).
    pub fail_first_delay: Option<String>,
    /// When true, a user answer carries an `ETag` and a `Last-Modified` of its version,
    /// and a request whose `If-None-Match` names the current tag (or whose
    /// `If-Modified-Since` is not older than its version) gets `304` without a body.
    /// It still counts against `quota`.
    pub etags: bool,
}

/// Most ids whose requests `fail_first` counts; requests for ids past it are not failed.
pub const MAX_FAIL_FIRST_IDS: usize = 1_000_000;

impl Faults {
    /// Checks every field: rates in `0..=1`, durations parse and are at most 365 days,
    /// `quota_window` is not zero, `oversized_bytes` is at most 256 MiB.
    pub fn validate(&self) -> Result<(), SimError> {
        ActiveFaults::compile(self.clone(), Instant::now()).map(drop)
    }
}

/// A body fault: the answer is `200` but its body is wrong in one way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyFault {
    Malformed,
    NotObject,
    WrongId,
    Oversized,
    Trickle,
    Reset,
}

/// How the first requests of an id fail (`fail_first`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailFirst {
    /// Answer with this status.
    Status(http::StatusCode),
    /// Close the connection without an answer.
    Drop,
}

/// What the first draw decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EarlyFault {
    Drop,
    Error,
}

/// The fixed-window quota.
#[derive(Debug)]
pub(crate) struct Quota {
    pub(crate) limit: u32,
    pub(crate) window: Duration,
    anchor: Instant,
    state: Mutex<QuotaState>,
}

#[derive(Debug, Default)]
struct QuotaState {
    window_index: u64,
    used: u32,
}

/// The outcome of a quota check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct QuotaDecision {
    /// Whether the request is admitted.
    pub(crate) allowed: bool,
    /// Requests still allowed in the current window after this one.
    pub(crate) remaining: u32,
    /// Time until the current window ends.
    pub(crate) reset: Duration,
}

impl Quota {
    pub(crate) fn new(limit: u32, window: Duration, anchor: Instant) -> Self {
        Self {
            limit,
            window,
            anchor,
            state: Mutex::new(QuotaState::default()),
        }
    }

    /// Admits or rejects one request at `now`. Windows are fixed, back to back from
    /// the moment the faults were set; rejected requests use no budget.
    pub(crate) fn check(&self, now: Instant) -> QuotaDecision {
        let window_ns = self.window.as_nanos().max(1);
        let elapsed_ns = now.saturating_duration_since(self.anchor).as_nanos();
        let index = elapsed_ns / window_ns;
        let reset_ns = (index + 1) * window_ns - elapsed_ns;
        let reset = Duration::from_nanos(u64::try_from(reset_ns).unwrap_or(u64::MAX));
        let index = u64::try_from(index).unwrap_or(u64::MAX);

        let mut state = self.state.lock();
        if state.window_index != index {
            state.window_index = index;
            state.used = 0;
        }
        let allowed = state.used < self.limit;
        if allowed {
            state.used += 1;
        }
        QuotaDecision {
            allowed,
            remaining: self.limit - state.used,
            reset,
        }
    }
}

/// [`Faults`] validated and turned into what the request path needs.
#[derive(Debug)]
pub(crate) struct ActiveFaults {
    pub(crate) spec: Faults,
    pub(crate) latency: Option<Duration>,
    pub(crate) outage_until: Option<Instant>,
    pub(crate) always_429: Option<u64>,
    pub(crate) quota: Option<Quota>,
    drop_below: f64,
    error_below: f64,
    /// Cumulative thresholds, in precedence order.
    body: Vec<(f64, BodyFault)>,
    pub(crate) oversized_bytes: usize,
    /// Requests seen since these faults were set; feeds the per-request draws.
    sequence: AtomicU64,
    seed: u64,
    /// The slow tail: its share and its extra delay.
    slow: Option<(f64, Duration)>,
    /// Requests drawn for the slow tail so far.
    slow_sequence: AtomicU64,
    /// `fail_first` and how.
    fail_first: Option<(u32, FailFirst)>,
    /// `fail_first_delay`.
    pub(crate) fail_first_delay: Duration,
    /// Requests seen per id, while `fail_first` is on.
    seen: Mutex<std::collections::HashMap<String, u32>>,
}

impl Default for ActiveFaults {
    fn default() -> Self {
        Self {
            spec: Faults::default(),
            latency: None,
            outage_until: None,
            always_429: None,
            quota: None,
            drop_below: 0.0,
            error_below: 0.0,
            body: Vec::new(),
            oversized_bytes: DEFAULT_OVERSIZED_BYTES,
            sequence: AtomicU64::new(0),
            seed: 0,
            slow: None,
            slow_sequence: AtomicU64::new(0),
            fail_first: None,
            fail_first_delay: Duration::ZERO,
            seen: Mutex::default(),
        }
    }
}

fn rate(field: &'static str, value: f64) -> Result<f64, SimError> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(SimError::InvalidRate { field, value })
    }
}

fn duration(field: &'static str, value: &str) -> Result<Duration, SimError> {
    let invalid = |reason: String| SimError::InvalidDuration {
        field,
        value: value.to_owned(),
        reason,
    };
    let parsed = humantime::parse_duration(value).map_err(|e| invalid(e.to_string()))?;
    if parsed > MAX_FAULT_DURATION {
        return Err(invalid("longer than 365 days".to_owned()));
    }
    Ok(parsed)
}

impl ActiveFaults {
    /// Validates `spec`; an outage starts at `now`.
    pub(crate) fn compile(spec: Faults, now: Instant) -> Result<Self, SimError> {
        let latency = spec
            .latency
            .as_deref()
            .map(|v| duration("latency", v))
            .transpose()?;
        let outage = spec
            .outage
            .as_deref()
            .map(|v| duration("outage", v))
            .transpose()?;
        let quota_window = spec
            .quota_window
            .as_deref()
            .map(|v| duration("quota_window", v))
            .transpose()?
            .unwrap_or(Duration::from_secs(1));
        if quota_window.is_zero() {
            return Err(SimError::InvalidValue {
                field: "quota_window",
                reason: "must be longer than zero".to_owned(),
            });
        }
        let oversized_bytes = spec.oversized_bytes.unwrap_or(DEFAULT_OVERSIZED_BYTES);
        if oversized_bytes > MAX_OVERSIZED_BYTES {
            return Err(SimError::InvalidValue {
                field: "oversized_bytes",
                reason: format!("{oversized_bytes} is more than {MAX_OVERSIZED_BYTES}"),
            });
        }
        let slow_rate = rate("slow_rate", spec.slow_rate)?;
        let slow_latency = spec
            .slow_latency
            .as_deref()
            .map(|v| duration("slow_latency", v))
            .transpose()?;
        let slow = match (slow_rate > 0.0, slow_latency) {
            (false, _) => None,
            (true, Some(d)) => Some((slow_rate, d)),
            (true, None) => {
                return Err(SimError::InvalidValue {
                    field: "slow_latency",
                    reason: "is required when slow_rate is set".to_owned(),
                })
            }
        };
        let fail_first = match spec.fail_first_status.unwrap_or(503) {
            _ if spec.fail_first == 0 => None,
            0 => Some((spec.fail_first, FailFirst::Drop)),
            code => match http::StatusCode::from_u16(code) {
                Ok(status) if (400..=599).contains(&code) => {
                    Some((spec.fail_first, FailFirst::Status(status)))
                }
                _ => {
                    return Err(SimError::InvalidValue {
                        field: "fail_first_status",
                        reason: format!("{code} is neither 0 (drop) nor a status from 400 to 599"),
                    })
                }
            },
        };
        let fail_first_delay = spec
            .fail_first_delay
            .as_deref()
            .map(|v| duration("fail_first_delay", v))
            .transpose()?
            .unwrap_or_default();
        let drop_rate = rate("drop_rate", spec.drop_rate)?;
        let error_rate = rate("error_rate", spec.error_rate)?;
        let body_rates = [
            ("malformed_rate", spec.malformed_rate, BodyFault::Malformed),
            (
                "not_object_rate",
                spec.not_object_rate,
                BodyFault::NotObject,
            ),
            ("wrong_id_rate", spec.wrong_id_rate, BodyFault::WrongId),
            ("oversized_rate", spec.oversized_rate, BodyFault::Oversized),
            ("trickle_rate", spec.trickle_rate, BodyFault::Trickle),
            ("reset_rate", spec.reset_rate, BodyFault::Reset),
        ];
        let mut body = Vec::new();
        let mut cumulative = 0.0;
        for (field, value, fault) in body_rates {
            let value = rate(field, value)?;
            if value > 0.0 {
                cumulative += value;
                body.push((cumulative, fault));
            }
        }
        Ok(Self {
            latency,
            outage_until: outage.map(|d| now + d),
            always_429: spec.always_429,
            quota: spec.quota.map(|limit| Quota::new(limit, quota_window, now)),
            drop_below: drop_rate,
            error_below: drop_rate + error_rate,
            body,
            oversized_bytes,
            sequence: AtomicU64::new(0),
            seed: 0,
            slow,
            slow_sequence: AtomicU64::new(0),
            fail_first,
            fail_first_delay,
            seen: Mutex::default(),
            spec,
        })
    }

    /// The slow tail's extra delay for the next request, when it falls in the tail.
    /// Every request is drawn in turn, so exactly the share `slow_rate` is delayed
    /// over a long run, spread evenly (the n-th request gets the same draw for a seed).
    pub(crate) fn slow_delay(&self) -> Option<Duration> {
        let (share, delay) = self.slow?;
        let n = self.slow_sequence.fetch_add(1, Ordering::Relaxed);
        let draw = unit(splitmix64(
            self.seed ^ 0x3 ^ n.wrapping_mul(0xA076_1D64_78BD_642F),
        ));
        (draw < share).then_some(delay)
    }

    /// How this request for `id` fails, when it is among the first `fail_first` of its id
    /// (`id` is the path segment as sent). Counted when the request arrives.
    pub(crate) fn fail_first(&self, id: &str) -> Option<FailFirst> {
        let (first, how) = self.fail_first?;
        let mut seen = self.seen.lock();
        if !seen.contains_key(id) && seen.len() >= MAX_FAIL_FIRST_IDS {
            return None;
        }
        let count = seen.entry(id.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        (*count <= first).then_some(how)
    }

    /// Sets the seed of the per-request draws.
    pub(crate) fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Whether any fault that needs a random draw is on.
    fn needs_draws(&self) -> bool {
        self.error_below > 0.0 || !self.body.is_empty()
    }

    /// The draws for the next request: `(early, body)`, both uniform in `[0, 1)`.
    /// The n-th request after the faults were set always gets the same draws for a
    /// given seed.
    pub(crate) fn next_draws(&self) -> Draws {
        if !self.needs_draws() {
            return Draws::NONE;
        }
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let base = self.seed ^ n.wrapping_mul(0xA076_1D64_78BD_642F);
        Draws {
            early: unit(splitmix64(base ^ 0x1)),
            body: unit(splitmix64(base ^ 0x2)),
        }
    }

    /// Drop or 500, decided by the early draw.
    pub(crate) fn early_fault(&self, draws: Draws) -> Option<EarlyFault> {
        if draws.early < self.drop_below {
            Some(EarlyFault::Drop)
        } else if draws.early < self.error_below {
            Some(EarlyFault::Error)
        } else {
            None
        }
    }

    /// The body fault, decided by the body draw.
    pub(crate) fn body_fault(&self, draws: Draws) -> Option<BodyFault> {
        self.body
            .iter()
            .find(|(below, _)| draws.body < *below)
            .map(|(_, fault)| *fault)
    }
}

/// Two uniform draws in `[0, 1)` for one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Draws {
    early: f64,
    body: f64,
}

impl Draws {
    /// Draws that trigger no fault (every threshold is compared with `<`).
    const NONE: Self = Self {
        early: 1.0,
        body: 1.0,
    };
}

/// SplitMix64: a fast, well-mixed 64-bit permutation.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Maps 64 random bits to `[0, 1)`.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Whole seconds until `d` has passed, at least 1 (the `Retry-After` rule).
pub(crate) fn whole_seconds_at_least_one(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(f: Faults) -> Result<ActiveFaults, SimError> {
        ActiveFaults::compile(f, Instant::now())
    }

    #[test]
    fn default_faults_are_valid_and_inject_nothing() {
        let active = compile(Faults::default()).expect("valid");
        assert!(!active.needs_draws());
        let d = active.next_draws();
        assert_eq!(active.early_fault(d), None);
        assert_eq!(active.body_fault(d), None);
        assert_eq!(active.oversized_bytes, DEFAULT_OVERSIZED_BYTES);
    }

    #[test]
    fn rates_outside_zero_to_one_are_rejected_naming_the_field() {
        for (field, faults) in [
            (
                "error_rate",
                Faults {
                    error_rate: 1.5,
                    ..Faults::default()
                },
            ),
            (
                "drop_rate",
                Faults {
                    drop_rate: -0.1,
                    ..Faults::default()
                },
            ),
            (
                "reset_rate",
                Faults {
                    reset_rate: f64::NAN,
                    ..Faults::default()
                },
            ),
        ] {
            let err = faults.validate().expect_err("must be rejected");
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }
        let edge = Faults {
            error_rate: 1.0,
            malformed_rate: 0.0,
            ..Faults::default()
        };
        assert!(edge.validate().is_ok());
    }

    #[test]
    fn durations_must_parse_and_be_sane() {
        let bad = Faults {
            latency: Some("fast".into()),
            ..Faults::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(SimError::InvalidDuration {
                field: "latency",
                ..
            })
        ));
        let zero_window = Faults {
            quota: Some(1),
            quota_window: Some("0s".into()),
            ..Faults::default()
        };
        assert!(matches!(
            zero_window.validate(),
            Err(SimError::InvalidValue {
                field: "quota_window",
                ..
            })
        ));
        let too_long = Faults {
            outage: Some("400days".into()),
            ..Faults::default()
        };
        assert!(too_long.validate().is_err());
        let huge = Faults {
            oversized_bytes: Some(MAX_OVERSIZED_BYTES + 1),
            ..Faults::default()
        };
        assert!(huge.validate().is_err());
    }

    #[test]
    fn outage_starts_at_compile_time() {
        let now = Instant::now();
        let active = ActiveFaults::compile(
            Faults {
                outage: Some("30s".into()),
                ..Faults::default()
            },
            now,
        )
        .expect("valid");
        assert_eq!(active.outage_until, Some(now + Duration::from_secs(30)));
    }

    #[test]
    fn quota_admits_limit_per_window_then_resets() {
        let t0 = Instant::now();
        let quota = Quota::new(2, Duration::from_secs(10), t0);
        let a = quota.check(t0);
        assert!(a.allowed);
        assert_eq!(a.remaining, 1);
        assert!(quota.check(t0 + Duration::from_secs(1)).allowed);
        let rejected = quota.check(t0 + Duration::from_millis(2500));
        assert!(!rejected.allowed);
        assert_eq!(rejected.remaining, 0);
        assert_eq!(rejected.reset, Duration::from_millis(7500));
        assert_eq!(whole_seconds_at_least_one(rejected.reset), 8);
        // Rejections use no budget; the next window starts fresh.
        let next = quota.check(t0 + Duration::from_secs(10));
        assert!(next.allowed);
        assert_eq!(next.reset, Duration::from_secs(10));
    }

    #[test]
    fn zero_quota_rejects_everything() {
        let t0 = Instant::now();
        let quota = Quota::new(0, Duration::from_secs(1), t0);
        assert!(!quota.check(t0).allowed);
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(whole_seconds_at_least_one(Duration::ZERO), 1);
        assert_eq!(whole_seconds_at_least_one(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds_at_least_one(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds_at_least_one(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn draws_are_reproducible_per_seed_and_follow_rates() {
        let faults = Faults {
            error_rate: 0.25,
            drop_rate: 0.25,
            malformed_rate: 0.5,
            ..Faults::default()
        };
        let run = |seed| {
            let active = compile(faults.clone()).expect("valid").with_seed(seed);
            (0..4000)
                .map(|_| {
                    let d = active.next_draws();
                    (active.early_fault(d), active.body_fault(d))
                })
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        let drops = a.iter().filter(|x| x.0 == Some(EarlyFault::Drop)).count();
        let errors = a.iter().filter(|x| x.0 == Some(EarlyFault::Error)).count();
        let malformed = a
            .iter()
            .filter(|x| x.1 == Some(BodyFault::Malformed))
            .count();
        assert!((800..1200).contains(&drops), "drops {drops}");
        assert!((800..1200).contains(&errors), "errors {errors}");
        assert!((1800..2200).contains(&malformed), "malformed {malformed}");
    }

    #[test]
    fn body_faults_take_precedence_in_order() {
        let active = compile(Faults {
            malformed_rate: 1.0,
            reset_rate: 1.0,
            ..Faults::default()
        })
        .expect("valid");
        for _ in 0..100 {
            let d = active.next_draws();
            assert_eq!(active.body_fault(d), Some(BodyFault::Malformed));
        }
        let only_reset = compile(Faults {
            reset_rate: 1.0,
            ..Faults::default()
        })
        .expect("valid");
        assert_eq!(
            only_reset.body_fault(only_reset.next_draws()),
            Some(BodyFault::Reset)
        );
    }

    #[test]
    fn the_first_calls_of_each_id_fail_and_the_rest_do_not() {
        let active = compile(Faults {
            fail_first: 2,
            ..Faults::default()
        })
        .expect("valid");
        let status = Some(FailFirst::Status(http::StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(active.fail_first("a"), status);
        assert_eq!(active.fail_first("b"), status);
        assert_eq!(active.fail_first("a"), status);
        assert_eq!(active.fail_first("a"), None);
        assert_eq!(active.fail_first("b"), status);
        assert_eq!(active.fail_first("b"), None);
        let drop = compile(Faults {
            fail_first: 1,
            fail_first_status: Some(0),
            ..Faults::default()
        })
        .expect("valid");
        assert_eq!(drop.fail_first("a"), Some(FailFirst::Drop));
        for bad in [200, 99, 600] {
            let err = Faults {
                fail_first: 1,
                fail_first_status: Some(bad),
                ..Faults::default()
            }
            .validate()
            .expect_err("refused");
            assert!(err.to_string().contains("fail_first_status"), "{err}");
        }
    }

    #[test]
    fn the_slow_tail_delays_its_share_of_requests() {
        let active = compile(Faults {
            slow_rate: 0.05,
            slow_latency: Some("2s".into()),
            ..Faults::default()
        })
        .expect("valid");
        let slow = (0..10_000)
            .filter_map(|_| active.slow_delay())
            .inspect(|d| assert_eq!(*d, Duration::from_secs(2)))
            .count();
        assert!((400..600).contains(&slow), "{slow}");
        let missing = Faults {
            slow_rate: 0.05,
            ..Faults::default()
        }
        .validate()
        .expect_err("needs slow_latency");
        assert!(missing.to_string().contains("slow_latency"), "{missing}");
        assert!(Faults {
            slow_rate: 1.5,
            slow_latency: Some("1s".into()),
            ..Faults::default()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn faults_json_rejects_unknown_fields_and_accepts_empty() {
        let empty: Faults = serde_json::from_str("{}").expect("empty is valid");
        assert_eq!(empty, Faults::default());
        assert!(serde_json::from_str::<Faults>(r#"{"error_rat": 0.5}"#).is_err());
        let f: Faults =
            serde_json::from_str(r#"{"quota": 5, "quota_window": "2s"}"#).expect("valid");
        assert_eq!(f.quota, Some(5));
    }
}
