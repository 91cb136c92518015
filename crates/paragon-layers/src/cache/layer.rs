//! [`CacheConfig`] (built and checked by its builder) and [`CacheLayer`], which wraps
//! services in a [`Cache`](super::Cache) sharing one table.

use std::marker::PhantomData;
use std::num::{NonZeroU64, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::freshness::Grace;
use super::service::{Cache, CacheHandle, Shared, TierLink};
use super::tier::SharedTier;
use super::CacheKey;
use crate::{Clock, ConfigError};

/// Validated cache settings, made with [`CacheConfig::builder`].
#[derive(Clone, Debug, PartialEq)]
pub struct CacheConfig {
    /// How long an answer is fresh.
    pub ttl: Duration,
    /// Most entries held at once.
    pub max_entries: NonZeroUsize,
    /// Most bytes of answers held at once, as [`CacheWeight`](super::CacheWeight) weighs
    /// them. The table is split into shards and each holds its share of this bound (at
    /// least 4 MiB, or the whole bound when it is smaller than 8 MiB); an answer heavier
    /// than its shard's share is answered but not cached.
    pub max_bytes: NonZeroU64,
    /// After `ttl`, how long an entry may still be served when the upstream cannot answer.
    pub stale_if_error: Duration,
    /// How long "does not exist" answers are cached; zero never caches them.
    pub negative_ttl: Duration,
    /// Share of the TTL (0 to 1) by which each entry's TTL is shortened at random:
    /// an entry lives `ttl × (1 − U[0, ttl_jitter])`, so entries stored together do not
    /// expire together.
    pub ttl_jitter: f64,
    /// After `ttl`, how long an entry is still answered at once (as
    /// [`CacheStatus::Updating`](super::CacheStatus::Updating)) while one background
    /// refresh of it runs; zero refreshes only on a miss.
    pub stale_while_revalidate: Duration,
    /// Refill an expired entry with a request made conditional on it (see
    /// [`Revalidate`](super::Revalidate)), so an unchanged answer costs no body.
    pub revalidate: bool,
}

impl CacheConfig {
    /// The windows after the TTL, for the freshness rule.
    pub fn grace(&self) -> Grace {
        Grace {
            stale_while_revalidate: self.stale_while_revalidate,
            stale_if_error: self.stale_if_error,
        }
    }
}

impl CacheConfig {
    /// Most entries held, unless the builder is told otherwise.
    pub const DEFAULT_MAX_ENTRIES: usize = 100_000;
    /// Most bytes held, unless the builder is told otherwise: 256 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

    /// Settings of a cache whose answers are fresh for `ttl`, holding at most
    /// [`DEFAULT_MAX_ENTRIES`](Self::DEFAULT_MAX_ENTRIES) entries and
    /// [`DEFAULT_MAX_BYTES`](Self::DEFAULT_MAX_BYTES) bytes, with no stale serving and no
    /// negative caching until the builder says otherwise.
    pub fn builder(ttl: Duration) -> CacheConfigBuilder {
        CacheConfigBuilder {
            ttl,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            stale_if_error: Duration::ZERO,
            negative_ttl: Duration::ZERO,
            ttl_jitter: 0.0,
            stale_while_revalidate: Duration::ZERO,
            revalidate: false,
        }
    }
}

/// Collects cache settings; [`build`](Self::build) checks them, so an unusable setting is
/// an error that names it rather than a value silently changed.
#[derive(Clone, Debug, PartialEq)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct CacheConfigBuilder {
    ttl: Duration,
    max_entries: usize,
    max_bytes: u64,
    stale_if_error: Duration,
    negative_ttl: Duration,
    ttl_jitter: f64,
    stale_while_revalidate: Duration,
    revalidate: bool,
}

impl CacheConfigBuilder {
    /// Sets `revalidate`.
    pub fn revalidate(mut self, on: bool) -> Self {
        self.revalidate = on;
        self
    }

    /// Sets `ttl_jitter` (from 0 to 1).
    pub fn ttl_jitter(mut self, share: f64) -> Self {
        self.ttl_jitter = share;
        self
    }

    /// Sets `stale_while_revalidate`.
    pub fn stale_while_revalidate(mut self, d: Duration) -> Self {
        self.stale_while_revalidate = d;
        self
    }

    /// Sets `max_entries` (at least 1).
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n;
        self
    }

    /// Sets `max_bytes` (at least 1).
    pub fn max_bytes(mut self, n: u64) -> Self {
        self.max_bytes = n;
        self
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

    /// The settings, or an error naming the first one that cannot be used.
    pub fn build(self) -> Result<CacheConfig, ConfigError> {
        let at_least_one = |field| ConfigError::new(field, "must be at least 1");
        if self.ttl.is_zero() {
            return Err(ConfigError::new("ttl", "must be longer than zero"));
        }
        if !(0.0..=1.0).contains(&self.ttl_jitter) {
            return Err(ConfigError::new(
                "ttl_jitter",
                format!("{} is not between 0 and 1", self.ttl_jitter),
            ));
        }
        Ok(CacheConfig {
            ttl: self.ttl,
            max_entries: NonZeroUsize::new(self.max_entries)
                .ok_or_else(|| at_least_one("max_entries"))?,
            max_bytes: NonZeroU64::new(self.max_bytes).ok_or_else(|| at_least_one("max_bytes"))?,
            stale_if_error: self.stale_if_error,
            negative_ttl: self.negative_ttl,
            ttl_jitter: self.ttl_jitter,
            stale_while_revalidate: self.stale_while_revalidate,
            revalidate: self.revalidate,
        })
    }
}

/// Wraps a service in a [`Cache`]. Every service made by one layer shares one table.
pub struct CacheLayer<Req: CacheKey, R, E> {
    shared: Arc<Shared<Req::Key, R, E>>,
    _req: PhantomData<fn(Req)>,
}

impl<Req, R, E> CacheLayer<Req, R, E>
where
    Req: CacheKey,
    R: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_names_the_setting_it_refuses() {
        let ttl = Duration::from_secs(60);
        let err = CacheConfig::builder(ttl)
            .max_entries(0)
            .build()
            .unwrap_err();
        assert_eq!(err.field, "max_entries");
        let err = CacheConfig::builder(ttl).max_bytes(0).build().unwrap_err();
        assert_eq!(err.field, "max_bytes");
        let err = CacheConfig::builder(Duration::ZERO).build().unwrap_err();
        assert_eq!(err.field, "ttl");
        for bad in [-0.1, 1.5, f64::NAN] {
            let err = CacheConfig::builder(ttl)
                .ttl_jitter(bad)
                .build()
                .unwrap_err();
            assert_eq!(err.field, "ttl_jitter");
        }
        let c = CacheConfig::builder(ttl)
            .max_entries(7)
            .max_bytes(1000)
            .stale_if_error(ttl)
            .build()
            .unwrap();
        assert_eq!((c.max_entries.get(), c.max_bytes.get()), (7, 1000));
        assert_eq!(
            (c.ttl, c.stale_if_error, c.negative_ttl),
            (ttl, ttl, Duration::ZERO)
        );
        let d = CacheConfig::builder(ttl).build().unwrap();
        assert_eq!(d.max_bytes.get(), 268_435_456);
        assert_eq!(d.max_entries.get(), 100_000);
    }
}
