use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::service::{Cache, CacheHandle, Shared, TierLink};
use super::tier::SharedTier;
use super::CacheKey;
use crate::Clock;

/// Validated cache settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// How long an answer is fresh.
    pub ttl: Duration,
    /// Most entries held at once.
    pub max_entries: NonZeroUsize,
    /// After `ttl`, how long an entry may still be served when the upstream cannot answer.
    pub stale_if_error: Duration,
    /// How long "does not exist" answers are cached; zero never caches them.
    pub negative_ttl: Duration,
}

impl CacheConfig {
    /// A cache of `max_entries` fresh for `ttl`, with no stale serving and no negative
    /// caching. A `max_entries` of zero is raised to one.
    pub fn new(ttl: Duration, max_entries: usize) -> CacheConfig {
        CacheConfig {
            ttl,
            max_entries: NonZeroUsize::new(max_entries).unwrap_or(NonZeroUsize::MIN),
            stale_if_error: Duration::ZERO,
            negative_ttl: Duration::ZERO,
        }
    }

    /// Sets `stale_if_error`.
    pub fn stale_if_error(mut self, d: Duration) -> Self {
        self.stale_if_error = d;
        self
    }

    /// Sets `negative_ttl`.
    pub fn negative_ttl(mut self, d: Duration) -> Self {
        self.negative_ttl = d;
        self
    }
}

/// Wraps a service in a [`Cache`]. Every service made by one layer shares one table.
pub struct CacheLayer<Req: CacheKey, R, E> {
    shared: Arc<Shared<Req::Key, R, E>>,
    _req: PhantomData<fn(Req)>,
}

impl<Req: CacheKey, R: Clone + 'static, E: Clone + 'static> CacheLayer<Req, R, E> {
    /// A layer with its own, empty table.
    pub fn new(config: CacheConfig, clock: Clock) -> Self {
        CacheLayer {
            shared: Arc::new(Shared::new(config, clock, None)),
            _req: PhantomData,
        }
    }

    /// A layer whose misses go to `tier` before the upstream. A fleet-wide fill claim is
    /// held at most `hold` (set it above the upstream timeout).
    pub fn with_tier(
        config: CacheConfig,
        clock: Clock,
        tier: Arc<dyn SharedTier<Req::Key, R, E>>,
        hold: Duration,
    ) -> Self {
        let link = TierLink { tier, hold };
        CacheLayer {
            shared: Arc::new(Shared::new(config, clock, Some(link))),
            _req: PhantomData,
        }
    }

    /// A handle for purging and statistics.
    pub fn handle(&self) -> CacheHandle<Req::Key, R, E> {
        CacheHandle::new(self.shared.clone())
    }
}

impl<Req: CacheKey, R, E> Clone for CacheLayer<Req, R, E> {
    fn clone(&self) -> Self {
        CacheLayer {
            shared: self.shared.clone(),
            _req: PhantomData,
        }
    }
}

impl<S, Req: CacheKey, R, E> Layer<S> for CacheLayer<Req, R, E> {
    type Service = Cache<S, Req, R, E>;

    fn layer(&self, inner: S) -> Self::Service {
        Cache::new(inner, self.shared.clone())
    }
}
