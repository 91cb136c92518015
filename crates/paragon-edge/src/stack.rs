//! The one place that composes the protective layers, in the contract's order:
//! cache → circuit breaker → rate limiter → (bounded, instrumented) HTTP transport.
//! A disabled layer is absent from the stack, not a pass-through.

use std::sync::Arc;
use std::time::Duration;

use paragon_client::{
    Endpoint, Error, HttpTransport, ParagonClient, ParagonCodec, ParagonRequest, ParagonResponse,
    TransportConfig,
};
use paragon_layers::cache::{Cache, CacheConfig, CacheHandle, CacheLayer};
use paragon_layers::circuit_breaker::{
    BreakerConfig, BreakerHandle, CircuitBreaker, CircuitBreakerLayer,
};
use paragon_layers::fleet::{RedisLink, RedisRateStore, RedisTier};
use paragon_layers::rate_limit::gcra::Gcra;
use paragon_layers::rate_limit::{Acquire, BudgetState, RateStore};
use paragon_layers::rate_limit::{
    MemoryStore, RateLimit, RateLimitConfig, RateLimitHandle, RateLimitLayer,
};
use paragon_layers::Clock;
use tower::util::Either;
use tower::Layer;
use url::Url;

use crate::config::{Backend, Config};
use crate::metrics::{Instrumented, Metrics};

/// The transport with its concurrency bound and counters.
pub type Upstream = Instrumented<HttpTransport>;
/// Upstream, behind the rate limiter when it is on.
pub type Limited = Either<RateLimit<Upstream, EdgeStore>, Upstream>;
/// Limited, behind the breaker when it is on.
pub type Guarded = Either<CircuitBreaker<Limited>, Limited>;
/// The whole stack: Guarded, behind the cache when it is on.
pub type EdgeService = Either<Cache<Guarded, ParagonRequest, ParagonResponse, Error>, Guarded>;
/// The cache's handle type.
pub type EdgeCacheHandle = CacheHandle<Endpoint, ParagonResponse, Error>;

/// The built stack and handles to its layers.
#[derive(Clone)]
pub struct Stack {
    /// The façade over the whole stack.
    pub client: ParagonClient<EdgeService>,
    /// The cache, when enabled.
    pub cache: Option<EdgeCacheHandle>,
    /// The breaker, when enabled.
    pub breaker: Option<BreakerHandle>,
    /// The rate limiter, when enabled.
    pub limiter: Option<RateLimitHandle<EdgeStore>>,
    /// The Redis link, when a layer uses the `redis` backend.
    pub redis: Option<RedisLink>,
}

/// The limiter's store chosen by `rate_limit.backend`.
pub enum EdgeStore {
    /// One budget in this process.
    Memory(MemoryStore),
    /// One budget for the fleet, in Redis.
    Redis(Box<RedisRateStore>),
}

impl RateStore for EdgeStore {
    async fn acquire(&self, gcra: &Gcra, max_wait: Duration) -> Acquire {
        match self {
            EdgeStore::Memory(m) => m.acquire_now(gcra, max_wait),
            EdgeStore::Redis(r) => r.acquire(gcra, max_wait).await,
        }
    }

    async fn pause_for(&self, d: Duration) {
        match self {
            EdgeStore::Memory(m) => m.pause_now(d),
            EdgeStore::Redis(r) => r.pause_for(d).await,
        }
    }

    async fn state(&self, gcra: &Gcra) -> BudgetState {
        match self {
            EdgeStore::Memory(m) => m.state_now(gcra),
            EdgeStore::Redis(r) => r.state(gcra).await,
        }
    }

    async fn resume(&self) -> bool {
        match self {
            EdgeStore::Memory(m) => m.resume().await,
            EdgeStore::Redis(r) => r.resume().await,
        }
    }

    fn try_acquire_now(&self, gcra: &Gcra, max_wait: Duration) -> Option<Acquire> {
        match self {
            EdgeStore::Memory(m) => m.try_acquire_now(gcra, max_wait),
            EdgeStore::Redis(r) => r.try_acquire_now(gcra, max_wait),
        }
    }

    fn quota_sharers(&self) -> u32 {
        match self {
            EdgeStore::Memory(m) => m.quota_sharers(),
            EdgeStore::Redis(r) => r.quota_sharers(),
        }
    }
}

/// How long a fleet-wide cache fill claim is held: the upstream timeout and a margin.
fn fill_hold(config: &Config) -> Duration {
    config
        .upstream
        .timeout
        .0
        .saturating_add(Duration::from_secs(1))
}

/// Why the stack cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The transport (base URL, key, TLS) cannot be set up.
    #[error(transparent)]
    Transport(#[from] paragon_client::TransportError),
    /// Redis cannot be used (a malformed `[redis]` section; the message names the key).
    #[error("{0}")]
    Redis(String),
    /// A layer setting is out of range.
    #[error("{section}.{}", .source)]
    Layer {
        /// The config section.
        section: &'static str,
        /// The layer's own error, naming the key.
        source: paragon_layers::ConfigError,
    },
}

/// The layer settings of a validated [`Config`].
pub fn cache_config(config: &Config) -> Result<CacheConfig, BuildError> {
    let c = &config.cache;
    CacheConfig::builder(c.ttl.0)
        .max_entries(c.max_entries)
        .max_bytes(c.max_bytes)
        .stale_if_error(c.stale_if_error.0)
        .negative_ttl(c.negative_ttl.0)
        .ttl_jitter(c.ttl_jitter)
        .stale_while_revalidate(c.stale_while_revalidate.0)
        .revalidate(c.revalidate)
        .build()
        .map_err(|source| BuildError::Layer {
            section: "cache",
            source,
        })
}

/// The breaker settings of a validated [`Config`].
pub fn breaker_config(config: &Config) -> Result<BreakerConfig, BuildError> {
    let b = &config.circuit_breaker;
    BreakerConfig::builder()
        .failure_threshold(b.failure_threshold)
        .failure_rate(b.failure_rate)
        .window(b.window.0)
        .minimum_calls(b.minimum_calls)
        .open_for(b.open_for.0)
        .half_open_max_calls(b.half_open_max_calls)
        .slow_call(b.slow_call.0)
        .build()
        .map_err(|source| BuildError::Layer {
            section: "circuit_breaker",
            source,
        })
}

/// The limiter settings of a validated [`Config`].
pub fn rate_limit_config(config: &Config) -> Result<RateLimitConfig, BuildError> {
    let r = &config.rate_limit;
    RateLimitConfig::builder(r.max_requests, r.window.0)
        .burst(r.burst)
        .max_wait(r.max_wait.0)
        .max_pause(r.max_pause.0)
        .follow_upstream(r.follow_upstream)
        .background_reserve(r.background_reserve)
        .build()
        .map_err(|source| BuildError::Layer {
            section: "rate_limit",
            source,
        })
}

/// Builds the stack over ParagoN at `base_url`.
pub fn build(
    config: &Config,
    base_url: Url,
    clock: Clock,
    metrics: Arc<Metrics>,
) -> Result<Stack, BuildError> {
    let u = &config.upstream;
    let transport = HttpTransport::new(TransportConfig {
        base_url,
        api_key: u.api_key.clone(),
        timeout: u.timeout.0,
        connect_timeout: u.connect_timeout.0,
        max_response_bytes: u.max_response_bytes,
    })?;
    let upstream = Instrumented::new(transport, metrics.clone(), u.max_concurrency, u.timeout.0);

    let shared_limiter = config.rate_limit.enabled && config.rate_limit.backend == Backend::Redis;
    let shared_cache = config.cache.enabled && config.cache.backend == Backend::Redis;
    let redis = if shared_limiter || shared_cache {
        let options = config
            .redis
            .link_options()
            .map_err(|e| BuildError::Redis(e.to_string()))?;
        let link = RedisLink::open(&config.redis.target(), options)
            .map_err(|e| BuildError::Redis(format!("redis: {e}")))?;
        let m = metrics.clone();
        let mut up = link.subscribe();
        m.set_redis_up(*up.borrow());
        tokio::spawn(async move {
            while up.changed().await.is_ok() {
                let now_up = *up.borrow();
                m.set_redis_up(now_up);
            }
        });
        Some(link)
    } else {
        None
    };

    let (limited, limiter): (Limited, _) = if config.rate_limit.enabled {
        let rl = rate_limit_config(config)?;
        let store = match (&redis, shared_limiter) {
            (Some(link), true) => EdgeStore::Redis(Box::new(RedisRateStore::new(
                link.clone(),
                rl,
                clock.clone(),
            ))),
            _ => EdgeStore::Memory(MemoryStore::new(clock.clone())),
        };
        let layer = RateLimitLayer::with_store(rl, store, clock.clone());
        (Either::Left(layer.layer(upstream)), Some(layer.handle()))
    } else {
        (Either::Right(upstream), None)
    };

    let (guarded, breaker): (Guarded, _) = if config.circuit_breaker.enabled {
        let m = metrics.clone();
        let layer =
            CircuitBreakerLayer::with_listener(breaker_config(config)?, clock.clone(), move |t| {
                m.transition(t);
                tracing::warn!(
                    from = t.from.as_str(),
                    to = t.to.as_str(),
                    "circuit breaker changed state"
                );
            });
        (Either::Left(layer.layer(limited)), Some(layer.handle()))
    } else {
        (Either::Right(limited), None)
    };

    let (service, cache): (EdgeService, _) = if config.cache.enabled {
        let layer = match (&redis, shared_cache) {
            (Some(link), true) => {
                let tier = Arc::new(RedisTier::new(link.clone(), ParagonCodec));
                CacheLayer::with_tier(cache_config(config)?, clock, tier, fill_hold(config))
            }
            _ => CacheLayer::new(cache_config(config)?, clock),
        };
        (Either::Left(layer.layer(guarded)), Some(layer.handle()))
    } else {
        (Either::Right(guarded), None)
    };

    Ok(Stack {
        client: ParagonClient::new(service),
        cache,
        breaker,
        limiter,
        redis,
    })
}
