use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::gcra::Gcra;
use super::service::{RateLimit, RateLimitHandle, Shared};
use super::store::{MemoryStore, RateStore};
use crate::{Clock, ConfigError};

/// Validated rate-limit settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

/// The default of [`RateLimitConfig::max_pause`]: 15 minutes.
pub const DEFAULT_MAX_PAUSE: Duration = Duration::from_secs(15 * 60);

impl RateLimitConfig {
    /// `max_requests` per `window`, burst equal to `max_requests`, no waiting.
    pub fn new(max_requests: u32, window: Duration) -> Result<Self, ConfigError> {
        let max = NonZeroU32::new(max_requests)
            .ok_or_else(|| ConfigError::new("max_requests", "must be at least 1"))?;
        if window.is_zero() {
            return Err(ConfigError::new("window", "must be longer than zero"));
        }
        Ok(RateLimitConfig {
            max_requests: max,
            window,
            burst: max,
            max_wait: Duration::ZERO,
            max_pause: DEFAULT_MAX_PAUSE,
        })
    }

    /// Sets `burst`; zero means `max_requests`.
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = NonZeroU32::new(burst).unwrap_or(self.max_requests);
        self
    }

    /// Sets `max_wait`.
    pub fn max_wait(mut self, d: Duration) -> Self {
        self.max_wait = d;
        self
    }

    /// Sets `max_pause`; it must be longer than zero.
    pub fn max_pause(mut self, d: Duration) -> Result<Self, ConfigError> {
        if d.is_zero() {
            return Err(ConfigError::new("max_pause", "must be longer than zero"));
        }
        self.max_pause = d;
        Ok(self)
    }

    /// The GCRA parameters of this budget.
    pub fn gcra(&self) -> Gcra {
        Gcra::new(self.max_requests.get(), self.window, self.burst.get())
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
