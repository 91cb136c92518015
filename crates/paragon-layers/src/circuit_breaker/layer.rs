//! [`BreakerConfig`] (built and checked by its builder) and [`CircuitBreakerLayer`], with
//! a listener for state transitions (metrics, logs).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::service::{BreakerHandle, CircuitBreaker, Shared};
use super::state_machine::Transition;
use crate::{Clock, ConfigError};

/// Validated breaker settings, made with [`BreakerConfig::builder`] (or `default()`).
/// Outside this crate they can be read but not built field by field, so a value that
/// [`build`](BreakerConfigBuilder::build) would refuse cannot reach a breaker.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Consecutive failures that open it; 0 turns this rule off.
    pub failure_threshold: u32,
    /// Share of failed calls in `window` that opens it, in `0.0..=1.0`; 0 turns it off.
    pub failure_rate: f64,
    /// Span of the failure-rate window.
    pub window: Duration,
    /// Calls needed in `window` before `failure_rate` applies.
    pub minimum_calls: u32,
    /// How long it stays open before half-open.
    pub open_for: Duration,
    /// Probes admitted at once while half-open.
    pub half_open_max_calls: NonZeroU32,
    /// A call slower than this counts as a failure; `None` turns this off. The time the
    /// layers below held the call on purpose (its [`WaitLedger`](crate::WaitLedger)) is
    /// not counted.
    pub slow_call: Option<Duration>,
}

impl Default for BreakerConfig {
    /// The documented defaults: 5 consecutive failures, rate off, 10 s window, 20 minimum
    /// calls, open for 60 s, 1 probe, slow calls off.
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            failure_rate: 0.0,
            window: Duration::from_secs(10),
            minimum_calls: 20,
            open_for: Duration::from_secs(60),
            half_open_max_calls: NonZeroU32::MIN,
            slow_call: None,
        }
    }
}

impl BreakerConfig {
    /// Settings starting from the defaults; [`build`](BreakerConfigBuilder::build)
    /// checks them.
    pub fn builder() -> BreakerConfigBuilder {
        BreakerConfigBuilder {
            config: BreakerConfig::default(),
            zero_probes: false,
        }
    }

    /// Checks the values that the field types cannot.
    fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.failure_rate) || self.failure_rate.is_nan() {
            return Err(ConfigError::new("failure_rate", "must be between 0 and 1"));
        }
        if self.failure_rate > 0.0 && self.window.is_zero() {
            return Err(ConfigError::new("window", "must be longer than zero"));
        }
        if self.failure_rate > 0.0 && self.minimum_calls == 0 {
            return Err(ConfigError::new(
                "minimum_calls",
                "must be at least 1 when failure_rate is set",
            ));
        }
        if self.open_for.is_zero() {
            return Err(ConfigError::new("open_for", "must be longer than zero"));
        }
        Ok(())
    }
}

/// Collects breaker settings; [`build`](Self::build) checks them, so an unusable setting
/// is an error that names it.
#[derive(Clone, Copy, Debug, PartialEq)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct BreakerConfigBuilder {
    config: BreakerConfig,
    // `half_open_max_calls(0)` was asked for: refused by `build`.
    zero_probes: bool,
}

impl BreakerConfigBuilder {
    /// Consecutive failures that open it; 0 turns this rule off.
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.config.failure_threshold = n;
        self
    }

    /// Share of failed calls in `window` that opens it, in `0.0..=1.0`; 0 turns it off.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.config.failure_rate = rate;
        self
    }

    /// Span of the failure-rate window.
    pub fn window(mut self, d: Duration) -> Self {
        self.config.window = d;
        self
    }

    /// Calls needed in `window` before `failure_rate` applies.
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.config.minimum_calls = n;
        self
    }

    /// How long it stays open before half-open (longer than zero).
    pub fn open_for(mut self, d: Duration) -> Self {
        self.config.open_for = d;
        self
    }

    /// Probes admitted at once while half-open (at least 1).
    pub fn half_open_max_calls(mut self, n: u32) -> Self {
        self.zero_probes = n == 0;
        self.config.half_open_max_calls = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        self
    }

    /// A call slower than this counts as a failure; zero turns this off.
    pub fn slow_call(mut self, d: Duration) -> Self {
        self.config.slow_call = (!d.is_zero()).then_some(d);
        self
    }

    /// The settings, or an error naming the first one that cannot be used.
    pub fn build(self) -> Result<BreakerConfig, ConfigError> {
        if self.zero_probes {
            return Err(ConfigError::new(
                "half_open_max_calls",
                "must be at least 1",
            ));
        }
        self.config.validate()?;
        Ok(self.config)
    }
}

/// Wraps a service in a [`CircuitBreaker`]. Every service made by one layer shares one
/// breaker.
#[derive(Clone)]
pub struct CircuitBreakerLayer {
    shared: Arc<Shared>,
}

impl CircuitBreakerLayer {
    /// A closed breaker.
    pub fn new(config: BreakerConfig, clock: Clock) -> Self {
        Self::with_listener(config, clock, |_| {})
    }

    /// A closed breaker that calls `on_transition` on every change of state (for logs
    /// and metrics). The callback runs under the breaker's state lock: keep it short.
    pub fn with_listener(
        config: BreakerConfig,
        clock: Clock,
        on_transition: impl Fn(Transition) + Send + Sync + 'static,
    ) -> Self {
        CircuitBreakerLayer {
            shared: Arc::new(Shared::new(config, clock, Box::new(on_transition))),
        }
    }

    /// A handle to read and force the breaker.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(self.shared.clone())
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.shared.clone())
    }
}
