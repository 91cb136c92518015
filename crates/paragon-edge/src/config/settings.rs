//! A configuration checked once and parsed once: [`Settings`].
//!
//! [`Config`] is the file as read (every key of the contract, with its default), which
//! the status page and `check-config` print. [`Settings::new`] is the one place that
//! checks it: each value is parsed into the type its user takes (an address, a URL, each
//! layer's config through the layer's own builder, the Redis target and link options),
//! so nothing downstream parses or checks again. The layers' builders check their own
//! ranges; this module checks only what no layer owns (server limits, upstream, client
//! limit), and every error names its `section.key`.
//!
//! Settings also remember where they came from ([`Origin`]), so that a reload
//! (`POST /admin/config/reload`, SIGHUP) reads the same file and environment again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use paragon_layers::cache::CacheConfig;
use paragon_layers::circuit_breaker::BreakerConfig;
use paragon_layers::fleet::{LinkOptions, RedisTarget};
use paragon_layers::rate_limit::RateLimitConfig;
use paragon_layers::retry::RetryConfig;
use url::Url;

use super::{ClientKey, Config, ConfigError};

/// A checked configuration: the file as read ([`Config`]), and each value parsed once
/// into the type its user takes. [`Settings::new`] is the one check.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The configuration as read, for display and for the values used as they are.
    pub config: Config,
    /// `server.listen`.
    pub listen: SocketAddr,
    /// `upstream.base_url`; `None` means the embedded simulator.
    pub base_url: Option<Url>,
    /// `[cache]` as the cache layer takes it.
    pub cache: CacheConfig,
    /// `[rate_limit]` as the limiter takes it.
    pub rate_limit: RateLimitConfig,
    /// `[circuit_breaker]` as the breaker takes it.
    pub breaker: BreakerConfig,
    /// `[retry]` and `upstream.deadline` as the retry layer takes them (with `[retry]`
    /// off: one attempt per call, within the deadline).
    pub retry: RetryConfig,
    /// `client_limit.key`.
    pub client_key: ClientKey,
    /// `[redis]`: where Redis is and how to reach it.
    pub redis: (RedisTarget, LinkOptions),
    /// Where the configuration was read from.
    pub origin: Origin,
}

/// Where a configuration came from, and so what a reload reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The defaults, this file (if any) and the environment ([`Settings::load`]): a
    /// reload reads them again.
    Loaded(Option<PathBuf>),
    /// Given whole by the program ([`Settings::new`]): there is nothing to read again.
    Given,
}

impl Settings {
    /// Checks `config`; the error names the first key that cannot be used.
    pub fn new(config: Config) -> Result<Settings, ConfigError> {
        let listen = config.listen_addr()?;
        config.check()?;
        let base_url = config.base_url()?;
        let cache = layer("cache", cache_builder(&config).build())?;
        let rate_limit = layer("rate_limit", rate_limit_builder(&config).build())?;
        let breaker = layer("circuit_breaker", breaker_builder(&config).build())?;
        // `[retry]` is checked whether it is on or not, as every section is.
        let retry = layer("retry", retry_builder(&config).build())?;
        let retry = if config.retry.enabled {
            retry
        } else {
            layer(
                "retry",
                retry_builder(&config)
                    .max_attempts(1)
                    .hedge_after(Duration::ZERO)
                    .build(),
            )?
        };
        let client_key = config.client_limit.client_key()?;
        let redis = config.redis.checked()?;
        Ok(Settings {
            config,
            listen,
            base_url,
            cache,
            rate_limit,
            breaker,
            retry,
            client_key,
            redis,
            origin: Origin::Given,
        })
    }

    /// Reads the defaults, `file` (if any) and the environment, then checks.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut settings = Settings::new(Config::load(file)?)?;
        settings.origin = Origin::Loaded(file.map(Path::to_path_buf));
        Ok(settings)
    }

    /// Parses a TOML document (no environment), then checks.
    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        Settings::new(Config::from_toml(text)?)
    }
}

/// A layer's refusal, named as the key of its section.
fn layer<T>(
    section: &'static str,
    built: Result<T, paragon_layers::ConfigError>,
) -> Result<T, ConfigError> {
    built.map_err(|e| ConfigError::Layer { section, source: e })
}

fn cache_builder(config: &Config) -> paragon_layers::cache::CacheConfigBuilder {
    let c = &config.cache;
    CacheConfig::builder(c.ttl.0)
        .max_entries(c.max_entries)
        .max_bytes(c.max_bytes)
        .stale_if_error(c.stale_if_error.0)
        .negative_ttl(c.negative_ttl.0)
        .ttl_jitter(c.ttl_jitter)
        .stale_while_revalidate(c.stale_while_revalidate.0)
        .revalidate(c.revalidate)
}

fn rate_limit_builder(config: &Config) -> paragon_layers::rate_limit::RateLimitConfigBuilder {
    let r = &config.rate_limit;
    RateLimitConfig::builder(r.max_requests, r.window.0)
        .burst(r.burst)
        .max_wait(r.max_wait.0)
        .max_pause(r.max_pause.0)
        .follow_upstream(r.follow_upstream)
        .background_reserve(r.background_reserve)
}

fn breaker_builder(config: &Config) -> paragon_layers::circuit_breaker::BreakerConfigBuilder {
    let b = &config.circuit_breaker;
    BreakerConfig::builder()
        .failure_threshold(b.failure_threshold)
        .failure_rate(b.failure_rate)
        .window(b.window.0)
        .minimum_calls(b.minimum_calls)
        .open_for(b.open_for.0)
        .half_open_max_calls(b.half_open_max_calls)
        .slow_call(b.slow_call.0)
}

fn retry_builder(config: &Config) -> paragon_layers::retry::RetryConfigBuilder {
    let r = &config.retry;
    RetryConfig::builder()
        .deadline(config.upstream.deadline.0)
        .max_attempts(r.max_attempts)
        .backoff(r.backoff.0)
        .budget_ratio(r.budget_ratio)
        .budget_min_per_sec(r.budget_min_per_sec)
        .hedge_after(r.hedge_after.0)
}
