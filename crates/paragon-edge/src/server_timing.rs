//! `Server-Timing` of the `/v1` answers: what each layer did for the request, so that a
//! frontend developer sees in the browser's network panel why it was slow or refused.
//!
//! `cache;desc=MISS, breaker;desc=closed, limiter;dur=0.4, upstream;dur=12.1;desc=200,
//! retry;desc=1`: the cache's `x-cache` value; the breaker's state (when it is on); the
//! time the rate limiter held the call on purpose, in milliseconds (when it is on and a
//! call went out; `limiter;desc=refused` when it refused it); the upstream call's
//! duration and ParagoN's status, or the kind of failure (when a call went out); the
//! attempts it took (when retries are on). What the upstream gate saw travels back in
//! the request's `CallReport`; the attempts of an answer fetched for this request are the
//! answer's own (as for `x-upstream-attempts`).
//!
//! A cache hit, which makes no call, gets one of a few static values: no allocation on
//! the hit path beyond the report.

use std::fmt::Write;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use paragon_client::{CacheStatus, Error, UpstreamCall};
use paragon_layers::circuit_breaker::BreakerState;

use crate::state::AppState;

/// `server-timing`.
pub static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// The value of an answer that did not go through the stack (an invalid id, a client
/// over its own limit, a method that does not exist).
pub const LOCAL: HeaderValue = HeaderValue::from_static("edge;desc=local");

/// Which layers are on, and the breaker's state now.
#[derive(Clone, Copy, Debug)]
pub struct Layers {
    /// The cache is on.
    pub cache: bool,
    /// The breaker's state, when it is on.
    pub breaker: Option<BreakerState>,
    /// The rate limiter is on.
    pub limiter: bool,
    /// Retries are on.
    pub retry: bool,
}

impl Layers {
    /// The layers of `state`'s stack, and its breaker's state now.
    pub fn of(state: &AppState) -> Layers {
        let stack = state.stack();
        Layers {
            cache: stack.cache.is_some(),
            breaker: stack.breaker.as_ref().map(|b| b.state()),
            limiter: stack.limiter.is_some(),
            retry: state.read_config(|c| c.retry.enabled),
        }
    }
}

/// The static value of an answer the cache gave from its entry without a call. Each
/// value is a constant, checked once at compile time rather than byte by byte on every
/// hit (`HeaderValue::from_static` outside a constant: ~400 instructions a hit).
fn from_entry(status: CacheStatus, breaker: Option<BreakerState>) -> HeaderValue {
    use BreakerState::*;
    macro_rules! constant {
        ($v:literal) => {{
            const V: HeaderValue = HeaderValue::from_static($v);
            V
        }};
    }
    match (status, breaker) {
        (CacheStatus::Hit, None) => constant!("cache;desc=HIT"),
        (CacheStatus::Hit, Some(Closed)) => constant!("cache;desc=HIT, breaker;desc=closed"),
        (CacheStatus::Hit, Some(Open)) => constant!("cache;desc=HIT, breaker;desc=open"),
        (CacheStatus::Hit, Some(HalfOpen)) => {
            constant!("cache;desc=HIT, breaker;desc=half_open")
        }
        (CacheStatus::Hit, Some(ForcedOpen)) => {
            constant!("cache;desc=HIT, breaker;desc=forced_open")
        }
        (_, None) => constant!("cache;desc=UPDATING"),
        (_, Some(Closed)) => constant!("cache;desc=UPDATING, breaker;desc=closed"),
        (_, Some(Open)) => constant!("cache;desc=UPDATING, breaker;desc=open"),
        (_, Some(HalfOpen)) => constant!("cache;desc=UPDATING, breaker;desc=half_open"),
        (_, Some(ForcedOpen)) => constant!("cache;desc=UPDATING, breaker;desc=forced_open"),
    }
}

/// Milliseconds with one decimal.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// The value for one user's answer: `cache` is its `x-cache` (`None` for an error),
/// `attempts` the answer's own count of attempts (for an answer fetched by this request),
/// `call` what the upstream gate recorded, `error` what the request ended in.
pub fn for_user(
    layers: Layers,
    cache: Option<CacheStatus>,
    attempts: Option<u32>,
    call: Option<UpstreamCall>,
    error: Option<&Error>,
) -> HeaderValue {
    if let Some(status @ (CacheStatus::Hit | CacheStatus::Updating)) = cache {
        if layers.cache {
            return from_entry(status, layers.breaker);
        }
    }
    let mut v = String::with_capacity(112);
    if let (true, Some(status)) = (layers.cache, cache) {
        let _ = write!(v, "cache;desc={}, ", status.as_str());
    }
    if let Some(state) = layers.breaker {
        let _ = write!(v, "breaker;desc={}, ", state.as_str());
    }
    let refused = matches!(error, Some(Error::RateLimited(_)));
    match call {
        Some(call) => {
            if layers.limiter {
                let _ = write!(v, "limiter;dur={:.1}, ", millis(call.held));
            }
            let _ = write!(v, "upstream;dur={:.1};desc=", millis(call.duration));
            match (call.status, call.failure) {
                (Some(status), _) => {
                    let _ = write!(v, "{status}");
                }
                (None, failure) => v.push_str(failure.unwrap_or("error")),
            }
            v.push_str(", ");
            if layers.retry {
                let _ = write!(v, "retry;desc={}, ", attempts.unwrap_or(call.attempts));
            }
        }
        None if layers.limiter && refused => v.push_str("limiter;desc=refused, "),
        None => {}
    }
    finish(v)
}

/// Drops the last separator and makes the header value.
fn finish(mut v: String) -> HeaderValue {
    let len = v.trim_end_matches(", ").len();
    v.truncate(len);
    if v.is_empty() {
        return LOCAL;
    }
    HeaderValue::try_from(v).unwrap_or(LOCAL)
}

/// What the ids of a batch did, gathered into one value: the count of each cache status
/// (`cache;desc="HIT 3, MISS 1"`), the breaker's state, the longest limiter hold and
/// upstream call with the number of calls, and the attempts of them all.
#[derive(Debug, Default)]
pub struct Batch {
    /// Ids answered with each `x-cache` value, in [`CacheStatus`] order.
    statuses: [(Option<CacheStatus>, u32); 5],
    calls: u32,
    attempts: u32,
    longest_call: Duration,
    longest_hold: Duration,
    refused: u32,
}

impl Batch {
    /// Adds one id's outcome.
    pub fn add(
        &mut self,
        cache: Option<CacheStatus>,
        call: Option<UpstreamCall>,
        error: Option<&Error>,
    ) {
        if let Some(status) = cache {
            if let Some(slot) = self
                .statuses
                .iter_mut()
                .find(|(s, _)| s.is_none() || *s == Some(status))
            {
                slot.0 = Some(status);
                slot.1 += 1;
            }
        }
        if let Some(call) = call {
            self.calls += 1;
            self.attempts = self.attempts.saturating_add(call.attempts);
            self.longest_call = self.longest_call.max(call.duration);
            self.longest_hold = self.longest_hold.max(call.held);
        } else if matches!(error, Some(Error::RateLimited(_))) {
            self.refused += 1;
        }
    }

    /// The header value.
    pub fn value(&self, layers: Layers) -> HeaderValue {
        let mut v = String::with_capacity(128);
        if layers.cache {
            let mut first = true;
            for (status, n) in self
                .statuses
                .iter()
                .filter_map(|(s, n)| Some((s.as_ref()?, n)))
            {
                v.push_str(if first { "cache;desc=\"" } else { ", " });
                first = false;
                let _ = write!(v, "{} {n}", status.as_str());
            }
            if !first {
                v.push_str("\", ");
            }
        }
        if let Some(state) = layers.breaker {
            let _ = write!(v, "breaker;desc={}, ", state.as_str());
        }
        if layers.limiter {
            if self.calls > 0 {
                let _ = write!(v, "limiter;dur={:.1}, ", millis(self.longest_hold));
            } else if self.refused > 0 {
                v.push_str("limiter;desc=refused, ");
            }
        }
        if self.calls > 0 {
            let _ = write!(
                v,
                "upstream;dur={:.1};desc=\"{} calls\", ",
                millis(self.longest_call),
                self.calls
            );
            if layers.retry {
                let _ = write!(v, "retry;desc={}, ", self.attempts);
            }
        }
        finish(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers() -> Layers {
        Layers {
            cache: true,
            breaker: Some(BreakerState::Closed),
            limiter: true,
            retry: true,
        }
    }

    fn call(status: Option<u16>, failure: Option<&'static str>) -> UpstreamCall {
        UpstreamCall {
            attempts: 2,
            duration: Duration::from_micros(12_140),
            status,
            failure,
            held: Duration::from_micros(400),
        }
    }

    #[test]
    fn a_miss_says_what_each_layer_did() {
        let v = for_user(
            layers(),
            Some(CacheStatus::Miss),
            Some(2),
            Some(call(Some(200), None)),
            None,
        );
        assert_eq!(
            v,
            "cache;desc=MISS, breaker;desc=closed, limiter;dur=0.4, upstream;dur=12.1;desc=200, retry;desc=2"
        );
    }

    #[test]
    fn a_hit_is_a_static_value_and_disabled_layers_are_absent() {
        let v = for_user(layers(), Some(CacheStatus::Hit), Some(1), None, None);
        assert_eq!(v, "cache;desc=HIT, breaker;desc=closed");
        let bare = Layers {
            cache: false,
            breaker: None,
            limiter: false,
            retry: false,
        };
        let v = for_user(
            bare,
            Some(CacheStatus::Miss),
            Some(1),
            Some(call(Some(200), None)),
            None,
        );
        assert_eq!(v, "upstream;dur=12.1;desc=200");
    }

    #[test]
    fn errors_name_the_failure_or_the_refusal() {
        let timeout = Error::Timeout {
            timeout: Duration::from_secs(2),
        };
        let v = for_user(
            layers(),
            None,
            None,
            Some(call(None, Some("timeout"))),
            Some(&timeout),
        );
        assert_eq!(
            v,
            "breaker;desc=closed, limiter;dur=0.4, upstream;dur=12.1;desc=timeout, retry;desc=2"
        );
        let limited = Error::RateLimited(paragon_layers::rate_limit::RateLimited {
            retry_after: Duration::from_secs(1),
            cause: paragon_layers::rate_limit::RateLimitCause::Budget,
        });
        let v = for_user(layers(), None, None, None, Some(&limited));
        assert_eq!(v, "breaker;desc=closed, limiter;desc=refused");
        let bare = Layers {
            cache: false,
            breaker: None,
            limiter: false,
            retry: false,
        };
        assert_eq!(for_user(bare, None, None, None, Some(&limited)), LOCAL);
    }

    #[test]
    fn a_batch_counts_its_statuses_and_keeps_the_longest_call() {
        let mut b = Batch::default();
        b.add(Some(CacheStatus::Hit), None, None);
        b.add(Some(CacheStatus::Miss), Some(call(Some(200), None)), None);
        b.add(Some(CacheStatus::Hit), None, None);
        assert_eq!(
            b.value(layers()),
            "cache;desc=\"HIT 2, MISS 1\", breaker;desc=closed, limiter;dur=0.4, upstream;dur=12.1;desc=\"1 calls\", retry;desc=2"
        );
    }
}
