//! The one place that composes the protective layers, in the contract's order:
//! cache → circuit breaker → retry → rate limiter → upstream gate (`upstream.rs`) → HTTP
//! transport. A disabled layer is absent from the stack, not a pass-through. The retry
//! layer is always there, as it keeps each request within `upstream.deadline`; with
//! `[retry]` off it makes one attempt.

use std::sync::Arc;
use std::time::Duration;

use paragon_client::{
    Endpoint, Error, HttpTransport, ParagonClient, ParagonCodec, ParagonRequest, ParagonResponse,
    TransportConfig,
};
use paragon_layers::cache::{Cache, CacheHandle, CacheLayer};
use paragon_layers::circuit_breaker::{
    BreakerHandle, BreakerState, CircuitBreaker, CircuitBreakerLayer, Transition,
};
use paragon_layers::fleet::{RedisLink, RedisRateStore, RedisTier};
use paragon_layers::rate_limit::gcra::Gcra;
use paragon_layers::rate_limit::{Acquire, BudgetState, RateLimitConfig, RateStore};
use paragon_layers::rate_limit::{MemoryStore, RateLimit, RateLimitHandle, RateLimitLayer};
use paragon_layers::retry::{Retry, RetryHandle, RetryLayer};
use paragon_layers::Clock;
use tower::util::Either;
use tower::Layer;
use url::Url;

use crate::config::{Backend, Config, Settings};
use crate::metrics::Metrics;
use crate::upstream::UpstreamGate;

/// The transport behind its gate: concurrency bound and counters.
pub type Upstream = UpstreamGate<HttpTransport>;
/// Upstream, behind the rate limiter when it is on.
pub type Limited = Either<RateLimit<Upstream, EdgeStore>, Upstream>;
/// Limited, behind the retry layer (attempts within `upstream.deadline`).
pub type Retried = Retry<Limited>;
/// Retried, behind the breaker when it is on.
pub type Guarded = Either<CircuitBreaker<Retried>, Retried>;
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
    /// The retry layer: its budget and counters.
    pub retry: RetryHandle,
    /// The Redis link, when a layer uses the `redis` backend.
    pub redis: Option<RedisLink>,
    /// The clock the layers read (the access log times requests with it too).
    pub clock: Clock,
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

    fn reconfigure(&self, old: &RateLimitConfig, new: &RateLimitConfig) {
        match self {
            EdgeStore::Memory(m) => m.reconfigure(old, new),
            EdgeStore::Redis(r) => r.reconfigure(old, new),
        }
    }
}

/// One line per change of the breaker's state: a warning when it opens (calls are
/// refused from now on), information when it half-opens or closes again.
fn log_transition(t: Transition) {
    let (from, to) = (t.from.as_str(), t.to.as_str());
    match t.to {
        BreakerState::Open | BreakerState::ForcedOpen => {
            tracing::warn!(
                from,
                to,
                "circuit breaker opened: ParagoN calls are refused"
            )
        }
        BreakerState::HalfOpen | BreakerState::Closed => {
            tracing::info!(from, to, "circuit breaker changed state")
        }
    }
}

/// How long a fleet-wide cache fill claim is held: the longest a fill can take (one
/// attempt, or the deadline of all of them) and a margin.
fn fill_hold(config: &Config) -> Duration {
    let u = &config.upstream;
    u.timeout
        .0
        .max(u.deadline.0)
        .saturating_add(Duration::from_secs(1))
}

/// Why the stack cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The transport (base URL, key, TLS) cannot be set up.
    #[error(transparent)]
    Transport(#[from] paragon_client::TransportError),
    /// Redis cannot be used.
    #[error("{0}")]
    Redis(String),
}

/// Builds the stack of `settings` over ParagoN at `base_url` (the settings' own, or
/// the embedded simulator's).
pub fn build(
    settings: &Settings,
    base_url: Url,
    clock: Clock,
    metrics: Arc<Metrics>,
) -> Result<Stack, BuildError> {
    let config = &settings.config;
    let u = &config.upstream;
    let transport = HttpTransport::new(TransportConfig {
        base_url,
        api_key: u.api_key.clone(),
        timeout: u.timeout.0,
        connect_timeout: u.connect_timeout.0,
        max_response_bytes: u.max_response_bytes,
    })?;
    let upstream = UpstreamGate::new(
        transport,
        metrics.clone(),
        u.max_concurrency,
        u.timeout.0,
        clock.clone(),
    );

    let shared_limiter = config.rate_limit.enabled && config.rate_limit.backend == Backend::Redis;
    let shared_cache = config.cache.enabled && config.cache.backend == Backend::Redis;
    let redis = if shared_limiter || shared_cache {
        let (target, options) = &settings.redis;
        let link = RedisLink::open(target, options.clone())
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
        let rl = settings.rate_limit;
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

    let breaker_layer = if config.circuit_breaker.enabled {
        let m = metrics.clone();
        Some(CircuitBreakerLayer::with_listener(
            settings.breaker,
            clock.clone(),
            move |t| {
                m.transition(t);
                log_transition(t);
            },
        ))
    } else {
        None
    };

    // No hedge while the breaker is half-open (its probe must not be doubled) or while
    // ParagoN's 429 pause is in force (the limiter would refuse the hedge anyway; a shared
    // store's pause is left to the limiter).
    let gate_breaker = breaker_layer.as_ref().map(CircuitBreakerLayer::handle);
    let gate_limiter = limiter.clone();
    let retry_layer = RetryLayer::with_hedge_gate(settings.retry, clock.clone(), move || {
        let half_open = gate_breaker
            .as_ref()
            .is_some_and(|b| b.state() == BreakerState::HalfOpen);
        let paused = gate_limiter.as_ref().is_some_and(|l| match l.store() {
            EdgeStore::Memory(m) => !m.state_now(&l.config().gcra()).paused_for.is_zero(),
            EdgeStore::Redis(_) => false,
        });
        !half_open && !paused
    });
    let retry = retry_layer.handle();
    let retried = retry_layer.layer(limited);

    let (guarded, breaker): (Guarded, _) = match breaker_layer {
        Some(layer) => (Either::Left(layer.layer(retried)), Some(layer.handle())),
        None => (Either::Right(retried), None),
    };

    let (service, cache): (EdgeService, _) = if config.cache.enabled {
        let layer = match (&redis, shared_cache) {
            (Some(link), true) => {
                let tier = Arc::new(RedisTier::new(link.clone(), ParagonCodec));
                CacheLayer::with_tier(
                    settings.cache.clone(),
                    clock.clone(),
                    tier,
                    fill_hold(config),
                )
            }
            _ => CacheLayer::new(settings.cache.clone(), clock.clone()),
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
        retry,
        redis,
        clock,
    })
}
