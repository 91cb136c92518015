use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::service::{Retry, RetryHandle, Shared};
use crate::{Clock, ConfigError};

/// Validated retry settings, made with [`RetryConfig::builder`] (or `default()`).
/// Outside this crate they can be read but not built field by field.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts per call, the first included, retries and hedges included. 1 turns
    /// retries and hedges off and leaves the deadline.
    pub max_attempts: NonZeroU32,
    /// Base of the exponential backoff (full jitter) before a retry.
    pub backoff: Duration,
    /// Extra attempts (retries and hedges) at most this share of first attempts over
    /// the last 10 s, in `0.0..=1.0`.
    pub budget_ratio: f64,
    /// ... plus this many per second, as a reserve of `budget_min_per_sec` × 10.
    pub budget_min_per_sec: u32,
    /// Send one more attempt when none has answered after this long; `None` is off.
    pub hedge_after: Option<Duration>,
    /// Time one call may take, every attempt and wait included.
    pub deadline: Duration,
}

impl Default for RetryConfig {
    /// The documented defaults: 2 attempts, 50 ms backoff, budget of 10 % plus 1 per
    /// second, no hedging, a 5 s deadline.
    fn default() -> Self {
        RetryConfig {
            max_attempts: NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN),
            backoff: Duration::from_millis(50),
            budget_ratio: 0.1,
            budget_min_per_sec: 1,
            hedge_after: None,
            deadline: Duration::from_secs(5),
        }
    }
}

impl RetryConfig {
    /// Settings starting from the defaults; [`build`](RetryConfigBuilder::build) checks
    /// them.
    pub fn builder() -> RetryConfigBuilder {
        let d = RetryConfig::default();
        RetryConfigBuilder {
            max_attempts: d.max_attempts.get(),
            backoff: d.backoff,
            budget_ratio: d.budget_ratio,
            budget_min_per_sec: d.budget_min_per_sec,
            hedge_after: Duration::ZERO,
            deadline: d.deadline,
        }
    }
}

/// Collects retry settings; [`build`](Self::build) checks them, so an unusable setting
/// is an error that names it.
#[derive(Clone, Copy, Debug, PartialEq)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct RetryConfigBuilder {
    max_attempts: u32,
    backoff: Duration,
    budget_ratio: f64,
    budget_min_per_sec: u32,
    hedge_after: Duration,
    deadline: Duration,
}

impl RetryConfigBuilder {
    /// Attempts per call, the first included (at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Base of the exponential backoff.
    pub fn backoff(mut self, d: Duration) -> Self {
        self.backoff = d;
        self
    }

    /// Share of first attempts that extra attempts may add, in `0.0..=1.0`.
    pub fn budget_ratio(mut self, ratio: f64) -> Self {
        self.budget_ratio = ratio;
        self
    }

    /// Extra attempts allowed per second whatever the ratio allows.
    pub fn budget_min_per_sec(mut self, n: u32) -> Self {
        self.budget_min_per_sec = n;
        self
    }

    /// Hedge after this long without an answer; zero turns hedging off.
    pub fn hedge_after(mut self, d: Duration) -> Self {
        self.hedge_after = d;
        self
    }

    /// Time one call may take in all (longer than zero).
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = d;
        self
    }

    /// The settings, or an error naming the first one that cannot be used.
    pub fn build(self) -> Result<RetryConfig, ConfigError> {
        let max_attempts = NonZeroU32::new(self.max_attempts)
            .ok_or_else(|| ConfigError::new("max_attempts", "must be at least 1"))?;
        if !(0.0..=1.0).contains(&self.budget_ratio) {
            return Err(ConfigError::new(
                "budget_ratio",
                format!("{} is not between 0 and 1", self.budget_ratio),
            ));
        }
        if self.deadline.is_zero() {
            return Err(ConfigError::new("deadline", "must be longer than zero"));
        }
        let hedge_after = (!self.hedge_after.is_zero()).then_some(self.hedge_after);
        if hedge_after.is_some() && max_attempts.get() < 2 {
            return Err(ConfigError::new(
                "hedge_after",
                "a hedge is a second attempt: it needs max_attempts of at least 2",
            ));
        }
        Ok(RetryConfig {
            max_attempts,
            backoff: self.backoff,
            budget_ratio: self.budget_ratio,
            budget_min_per_sec: self.budget_min_per_sec,
            hedge_after,
            deadline: self.deadline,
        })
    }
}

/// Wraps a service in a [`Retry`]. Every service made by one layer shares one budget.
#[derive(Clone)]
pub struct RetryLayer {
    shared: Arc<Shared>,
}

impl RetryLayer {
    /// A layer with a fresh budget.
    pub fn new(config: RetryConfig, clock: Clock) -> Self {
        RetryLayer {
            shared: Arc::new(Shared::new(config, clock, None)),
        }
    }

    /// A layer whose hedges are sent only while `allow_hedge` says yes: the composition
    /// that knows the layers around the retry (a breaker that is half-open, an upstream
    /// that asked for a pause) says when a hedge would be unwelcome.
    pub fn with_hedge_gate(
        config: RetryConfig,
        clock: Clock,
        allow_hedge: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        RetryLayer {
            shared: Arc::new(Shared::new(config, clock, Some(Box::new(allow_hedge)))),
        }
    }

    /// A handle for statistics and the budget.
    pub fn handle(&self) -> RetryHandle {
        RetryHandle::new(self.shared.clone())
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(inner, self.shared.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_names_its_setting() {
        let cases = [
            (RetryConfig::builder().max_attempts(0), "max_attempts"),
            (RetryConfig::builder().budget_ratio(1.5), "budget_ratio"),
            (RetryConfig::builder().budget_ratio(-0.1), "budget_ratio"),
            (
                RetryConfig::builder().budget_ratio(f64::NAN),
                "budget_ratio",
            ),
            (RetryConfig::builder().deadline(Duration::ZERO), "deadline"),
            (
                RetryConfig::builder()
                    .max_attempts(1)
                    .hedge_after(Duration::from_millis(10)),
                "hedge_after",
            ),
        ];
        for (builder, field) in cases {
            assert_eq!(builder.build().unwrap_err().field, field, "{builder:?}");
        }
        let ok = RetryConfig::builder()
            .hedge_after(Duration::from_millis(30))
            .build()
            .unwrap();
        assert_eq!(ok.hedge_after, Some(Duration::from_millis(30)));
        assert_eq!(
            RetryConfig::builder().build().unwrap(),
            RetryConfig::default()
        );
    }
}
