//! [`RateLimitConfig`] (built and checked by its builder) and [`RateLimitLayer`], over a
//! [`RateStore`](super::RateStore): memory for one instance, Redis for a fleet.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::gcra::Gcra;
use super::service::{RateLimit, RateLimitHandle, Shared};
use super::store::{MemoryStore, RateStore};
use crate::{Clock, ConfigError};

/// Validated rate-limit settings, made with [`RateLimitConfig::builder`]. Outside this
/// crate they can be read but not built field by field.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// Calls allowed per `window`.
    pub max_requests: NonZeroU32,
    /// The window of the budget.
    pub window: Duration,
    /// Calls allowed at once.
    pub burst: NonZeroU32,
    /// How long a call over budget may wait for a slot; zero rejects at once.
    pub max_wait: Duration,
    /// Longest pause one upstream 429 can impose, whatever its `Retry-After` says.
    pub max_pause: Duration,
    /// Also obey the quota the upstream advertises on its answers: never send more calls
    /// than it says remain before its reset, spread over the time left.
    pub follow_upstream: bool,
    /// Share of the burst (0 to 1) that background calls never take: one is admitted
    /// only while more than this share of the burst remains.
    pub background_reserve: f64,
}

/// The default of [`RateLimitConfig::max_pause`]: 15 minutes.
pub const DEFAULT_MAX_PAUSE: Duration = Duration::from_secs(15 * 60);

impl RateLimitConfig {
    /// A budget of `max_requests` per `window`, with a burst of `max_requests`, no
    /// waiting and [`DEFAULT_MAX_PAUSE`] until the builder says otherwise.
    pub fn builder(max_requests: u32, window: Duration) -> RateLimitConfigBuilder {
        RateLimitConfigBuilder {
            max_requests,
            window,
            burst: 0,
            max_wait: Duration::ZERO,
            max_pause: DEFAULT_MAX_PAUSE,
            follow_upstream: false,
            background_reserve: 0.0,
        }
    }

    /// The GCRA parameters of this budget.
    pub fn gcra(&self) -> Gcra {
        Gcra::new(self.max_requests.get(), self.window, self.burst.get())
    }

    /// The GCRA parameters of background calls: the same budget with the reserved share
    /// of the burst taken off its tolerance, so a background call conforms only while
    /// more than `background_reserve` of the burst remains.
    pub fn background_gcra(&self) -> Gcra {
        let gcra = self.gcra();
        let burst = f64::from(self.burst.get());
        let reserved = (burst * self.background_reserve).floor() as u64;
        Gcra {
            interval: gcra.interval,
            tolerance: gcra
                .tolerance
                .saturating_sub(reserved.saturating_mul(gcra.interval)),
        }
    }
}

/// Collects rate-limit settings; [`build`](Self::build) checks them, so an unusable
/// setting is an error that names it.
#[derive(Clone, Copy, Debug, PartialEq)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct RateLimitConfigBuilder {
    max_requests: u32,
    window: Duration,
    burst: u32,
    max_wait: Duration,
    max_pause: Duration,
    follow_upstream: bool,
    background_reserve: f64,
}

impl RateLimitConfigBuilder {
    /// Calls allowed at once; zero means `max_requests`.
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// How long a call over budget may wait for a slot; zero rejects at once.
    pub fn max_wait(mut self, d: Duration) -> Self {
        self.max_wait = d;
        self
    }

    /// Longest pause one upstream 429 can impose (longer than zero).
    pub fn max_pause(mut self, d: Duration) -> Self {
        self.max_pause = d;
        self
    }

    /// Whether to obey the quota the upstream advertises on its answers.
    pub fn follow_upstream(mut self, on: bool) -> Self {
        self.follow_upstream = on;
        self
    }

    /// The share of the burst (0 to 1) kept from background calls.
    pub fn background_reserve(mut self, share: f64) -> Self {
        self.background_reserve = share;
        self
    }

    /// The settings, or an error naming the first one that cannot be used.
    pub fn build(self) -> Result<RateLimitConfig, ConfigError> {
        if !(0.0..=1.0).contains(&self.background_reserve) {
            return Err(ConfigError::new(
                "background_reserve",
                format!("{} is not between 0 and 1", self.background_reserve),
            ));
        }
        let max_requests = NonZeroU32::new(self.max_requests)
            .ok_or_else(|| ConfigError::new("max_requests", "must be at least 1"))?;
        if self.window.is_zero() {
            return Err(ConfigError::new("window", "must be longer than zero"));
        }
        if self.max_pause.is_zero() {
            return Err(ConfigError::new("max_pause", "must be longer than zero"));
        }
        Ok(RateLimitConfig {
            max_requests,
            window: self.window,
            burst: NonZeroU32::new(self.burst).unwrap_or(max_requests),
            max_wait: self.max_wait,
            max_pause: self.max_pause,
            follow_upstream: self.follow_upstream,
            background_reserve: self.background_reserve,
        })
    }
}

/// Wraps a service in a [`RateLimit`]. Every service made by one layer draws from one budget.
pub struct RateLimitLayer<St> {
    shared: Arc<Shared<St>>,
}

impl<St> Clone for RateLimitLayer<St> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            shared: self.shared.clone(),
        }
    }
}

impl RateLimitLayer<MemoryStore> {
    /// A layer with a budget in this process.
    pub fn memory(config: RateLimitConfig, clock: Clock) -> Self {
        Self::with_store(config, MemoryStore::new(clock.clone()), clock)
    }
}

impl<St: RateStore> RateLimitLayer<St> {
    /// A layer on the given store.
    pub fn with_store(config: RateLimitConfig, store: St, clock: Clock) -> Self {
        RateLimitLayer {
            shared: Arc::new(Shared::new(config, store, clock)),
        }
    }

    /// A handle for statistics.
    pub fn handle(&self) -> RateLimitHandle<St> {
        RateLimitHandle::new(self.shared.clone())
    }
}

impl<S, St> Layer<S> for RateLimitLayer<St> {
    type Service = RateLimit<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.shared.clone())
    }
}
