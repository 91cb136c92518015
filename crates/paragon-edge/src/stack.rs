//! The one place that composes the protective layers, in the contract's order:
//! cache → circuit breaker → rate limiter → (bounded, instrumented) HTTP transport.
//! A disabled layer is absent from the stack, not a pass-through.

use std::sync::Arc;

use paragon_client::{
    ApiKey, Error, HttpTransport, ParagonClient, ParagonRequest, ParagonResponse, TransportConfig,
};
use paragon_layers::cache::{Cache, CacheConfig, CacheHandle, CacheLayer};
use paragon_layers::circuit_breaker::{
    BreakerConfig, BreakerHandle, CircuitBreaker, CircuitBreakerLayer,
};
use paragon_layers::rate_limit::{
    MemoryStore, RateLimit, RateLimitConfig, RateLimitHandle, RateLimitLayer,
};
use paragon_layers::Clock;
use tower::util::Either;
use tower::Layer;
use url::Url;

use crate::config::Config;
use crate::metrics::{Instrumented, Metrics};

/// The transport with its concurrency bound and counters.
pub type Upstream = Instrumented<HttpTransport>;
/// Upstream, behind the rate limiter when it is on.
pub type Limited = Either<RateLimit<Upstream, MemoryStore>, Upstream>;
/// Limited, behind the breaker when it is on.
pub type Guarded = Either<CircuitBreaker<Limited>, Limited>;
/// The whole stack: Guarded, behind the cache when it is on.
pub type EdgeService = Either<Cache<Guarded, ParagonRequest, ParagonResponse, Error>, Guarded>;
/// The cache's handle type.
pub type EdgeCacheHandle = CacheHandle<ParagonRequest, ParagonResponse, Error>;

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
    pub limiter: Option<RateLimitHandle<MemoryStore>>,
}

/// Why the stack cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The transport (base URL, key, TLS) cannot be set up.
    #[error(transparent)]
    Transport(#[from] paragon_client::TransportError),
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
pub fn cache_config(config: &Config) -> CacheConfig {
    let c = &config.cache;
    CacheConfig::new(c.ttl.0, c.max_entries)
        .stale_if_error(c.stale_if_error.0)
        .negative_ttl(c.negative_ttl.0)
}

/// The breaker settings of a validated [`Config`].
pub fn breaker_config(config: &Config) -> Result<BreakerConfig, BuildError> {
    let b = &config.circuit_breaker;
    let bc = BreakerConfig {
        failure_threshold: b.failure_threshold,
        failure_rate: b.failure_rate,
        window: b.window.0,
        minimum_calls: b.minimum_calls,
        open_for: b.open_for.0,
        half_open_max_calls: std::num::NonZeroU32::new(b.half_open_max_calls)
            .unwrap_or(std::num::NonZeroU32::MIN),
        slow_call: (!b.slow_call.0.is_zero()).then_some(b.slow_call.0),
    };
    bc.validate().map_err(|source| BuildError::Layer {
        section: "circuit_breaker",
        source,
    })?;
    Ok(bc)
}

/// The limiter settings of a validated [`Config`].
pub fn rate_limit_config(config: &Config) -> Result<RateLimitConfig, BuildError> {
    let r = &config.rate_limit;
    Ok(RateLimitConfig::new(r.max_requests, r.window.0)
        .map_err(|source| BuildError::Layer {
            section: "rate_limit",
            source,
        })?
        .burst(r.burst)
        .max_wait(r.max_wait.0))
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
        api_key: ApiKey::new(u.api_key.expose()),
        timeout: u.timeout.0,
        connect_timeout: u.connect_timeout.0,
        max_response_bytes: u.max_response_bytes,
    })?;
    let upstream = Instrumented::new(transport, metrics.clone(), u.max_concurrency, u.timeout.0);

    let (limited, limiter): (Limited, _) = if config.rate_limit.enabled {
        let layer = RateLimitLayer::memory(rate_limit_config(config)?, clock.clone());
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
        let layer = CacheLayer::new(cache_config(config), clock);
        (Either::Left(layer.layer(guarded)), Some(layer.handle()))
    } else {
        (Either::Right(guarded), None)
    };

    Ok(Stack {
        client: ParagonClient::new(service),
        cache,
        breaker,
        limiter,
    })
}
