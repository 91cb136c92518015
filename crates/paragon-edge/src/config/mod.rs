//! The configuration: TOML file, then `PARAGON_EDGE__SECTION__KEY` environment
//! overrides, then `PARAGON_API_KEY`. Unknown keys and values of the wrong type are
//! refused as the file is read ([`Config`]); [`Settings::new`] then checks every value
//! once. Every error names its key.

mod redis;
mod retry;
mod settings;
mod types;

use std::net::SocketAddr;
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use url::Url;

use types::comma_list;

pub use paragon_client::Secret;
pub use redis::{RedisConfig, RedisMode};
pub use retry::RetrySection;
pub use settings::{Origin, Settings};
pub use types::{redact_url, Backend, Dur, RedisUrl, SecretUrl};

/// The whole configuration, exactly the keys of the contract, with their defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[upstream]`
    pub upstream: UpstreamConfig,
    /// `[cache]`
    pub cache: CacheSection,
    /// `[rate_limit]`
    pub rate_limit: RateLimitSection,
    /// `[circuit_breaker]`
    pub circuit_breaker: BreakerSection,
    /// `[client_limit]`
    pub client_limit: ClientLimitSection,
    /// `[retry]`
    pub retry: RetrySection,
    /// `[redis]`
    pub redis: RedisConfig,
}

/// `[server]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Origins allowed by CORS; `["*"]` allows any; empty sends no CORS headers.
    #[serde(deserialize_with = "comma_list")]
    pub cors_allowed_origins: Vec<String>,
    /// Most ids in one batch request.
    pub max_batch_ids: usize,
    /// Most bytes of users in one batch answer; ids past it get a `too-large` error.
    pub max_batch_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Dur,
    /// Bearer token of the admin actions; empty turns them off.
    pub admin_token: Secret,
    /// One log line per request at info (target `paragon_edge::access`): method, route,
    /// path, status, duration, `x-cache` and request id.
    pub access_log: bool,
    /// A request head begun and not finished by then closes the connection.
    pub header_read_timeout: Dur,
    /// A connection with nothing to do this long (no request, no bytes read or written
    /// since accept or its last answer) is closed; so is one whose answer cannot be
    /// written for this long (a client that does not read).
    pub idle_timeout: Dur,
    /// Longest request line + headers; past it: 431 and the connection closed.
    pub max_request_head_bytes: usize,
    /// Connections open at once; past it new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// `Cache-Control` directives of user answers, after `private, `: `no-cache`, or
    /// e.g. `max-age=30`.
    pub browser_cache: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            cors_allowed_origins: Vec::new(),
            max_batch_ids: 100,
            max_batch_bytes: 8_388_608,
            shutdown_grace: Dur::secs(10),
            admin_token: Secret::default(),
            access_log: true,
            header_read_timeout: Dur::secs(10),
            idle_timeout: Dur::secs(60),
            max_request_head_bytes: 65_536,
            max_connections: 10_000,
            browser_cache: "no-cache".into(),
        }
    }
}

/// `[upstream]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// ParagoN's base URL; absent: the embedded simulator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<SecretUrl>,
    /// ParagoN API key (or env `PARAGON_API_KEY`).
    pub api_key: Secret,
    /// Limit on a whole upstream request (one attempt).
    pub timeout: Dur,
    /// Limit on one frontend request's upstream call, every attempt and wait included.
    pub deadline: Dur,
    /// Limit on connecting.
    pub connect_timeout: Dur,
    /// Largest upstream body accepted.
    pub max_response_bytes: usize,
    /// Upstream calls in flight at once.
    pub max_concurrency: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            base_url: None,
            api_key: Secret::default(),
            timeout: Dur::secs(2),
            deadline: Dur::secs(5),
            connect_timeout: Dur::millis(500),
            max_response_bytes: 1_048_576,
            max_concurrency: 256,
        }
    }
}

/// `[cache]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSection {
    /// Whether the cache layer is in the stack.
    pub enabled: bool,
    /// Freshness of an answer.
    pub ttl: Dur,
    /// Share of `ttl` (0 to 1) by which each entry's TTL is shortened at random.
    pub ttl_jitter: f64,
    /// Most entries held.
    pub max_entries: usize,
    /// Most bytes of cached bodies held (whichever of this and `max_entries` binds first).
    pub max_bytes: u64,
    /// Stale serving window after expiry, when the upstream cannot answer.
    pub stale_if_error: Dur,
    /// After expiry, answer at once from the old entry this long while one background
    /// refresh runs; 0 off.
    pub stale_while_revalidate: Dur,
    /// Refresh an entry that has ParagoN's validators with a conditional request.
    pub revalidate: bool,
    /// How long 404 answers are cached; 0 never.
    pub negative_ttl: Dur,
    /// `memory`, or `redis` as a shared second tier.
    pub backend: Backend,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection {
            enabled: true,
            ttl: Dur::secs(300),
            ttl_jitter: 0.1,
            max_entries: 100_000,
            max_bytes: 268_435_456,
            stale_if_error: Dur::secs(600),
            stale_while_revalidate: Dur::secs(0),
            revalidate: true,
            negative_ttl: Dur::secs(0),
            backend: Backend::Memory,
        }
    }
}

/// `[rate_limit]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSection {
    /// Whether the rate limiter is in the stack.
    pub enabled: bool,
    /// Upstream calls per window, for the whole fleet.
    pub max_requests: u32,
    /// The window.
    pub window: Dur,
    /// Calls at once; 0 means `max_requests`.
    pub burst: u32,
    /// How long a call may wait for a slot; 0 rejects at once.
    pub max_wait: Dur,
    /// Longest pause that one ParagoN 429 can impose.
    pub max_pause: Dur,
    /// Also obey the quota ParagoN advertises on its answers.
    pub follow_upstream: bool,
    /// Share of the burst (0 to 1) background calls never take.
    pub background_reserve: f64,
    /// `memory`, or `redis`: one budget for every instance.
    pub backend: Backend,
}

impl Default for RateLimitSection {
    fn default() -> Self {
        RateLimitSection {
            enabled: true,
            max_requests: 100,
            window: Dur::secs(60),
            burst: 0,
            max_wait: Dur::secs(0),
            max_pause: Dur::secs(900),
            follow_upstream: true,
            background_reserve: 0.2,
            backend: Backend::Memory,
        }
    }
}

/// `[client_limit]`: fairness between the frontend clients of the edge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientLimitSection {
    /// Whether clients are limited.
    pub enabled: bool,
    /// `ip`, or `header:NAME` (a request without that header is known by its IP).
    pub key: String,
    /// Edge requests per client per window (a batch counts 1 + its uncached ids).
    pub max_requests: u32,
    /// The window.
    pub window: Dur,
    /// Share of the upstream budget that one client's misses may take.
    pub max_upstream_share: f64,
}

impl Default for ClientLimitSection {
    fn default() -> Self {
        ClientLimitSection {
            enabled: false,
            key: "ip".into(),
            max_requests: 600,
            window: Dur::secs(60),
            max_upstream_share: 0.25,
        }
    }
}

/// How a client is known, from `client_limit.key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientKey {
    /// By the peer's IP address.
    Ip,
    /// By this request header, or the IP when it is absent.
    Header(axum::http::HeaderName),
}

impl ClientLimitSection {
    /// `key` parsed.
    pub fn client_key(&self) -> Result<ClientKey, ConfigError> {
        if self.key == "ip" {
            return Ok(ClientKey::Ip);
        }
        self.key
            .strip_prefix("header:")
            .and_then(|name| axum::http::HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .map(ClientKey::Header)
            .ok_or_else(|| {
                invalid(
                    "client_limit.key",
                    format!(
                        "{:?} is neither \"ip\" nor \"header:NAME\" with a valid header name",
                        self.key
                    ),
                )
            })
    }
}

/// `[circuit_breaker]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerSection {
    /// Whether the breaker is in the stack.
    pub enabled: bool,
    /// Consecutive failures that open it; 0 off.
    pub failure_threshold: u32,
    /// Failure share in `window` that opens it; 0 off.
    pub failure_rate: f64,
    /// The failure-rate window.
    pub window: Dur,
    /// Calls needed in `window` before `failure_rate` applies.
    pub minimum_calls: u32,
    /// Open period before half-open.
    pub open_for: Dur,
    /// Probes at once while half-open.
    pub half_open_max_calls: u32,
    /// A call slower than this counts as a failure; 0 off.
    pub slow_call: Dur,
}

impl Default for BreakerSection {
    fn default() -> Self {
        BreakerSection {
            enabled: true,
            failure_threshold: 5,
            failure_rate: 0.0,
            window: Dur::secs(10),
            minimum_calls: 20,
            open_for: Dur::secs(60),
            half_open_max_calls: 1,
            slow_call: Dur::secs(0),
        }
    }
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a key is unknown or of the wrong type.
    #[error("{0}")]
    Load(String),
    /// A layer's setting is out of range (the layer's builder said so).
    #[error("{section}.{source}")]
    Layer {
        /// The config section of the layer.
        section: &'static str,
        /// The layer's error, naming its setting.
        source: paragon_layers::ConfigError,
    },
    /// A value is out of range.
    #[error("{key}: {message}")]
    Invalid {
        /// `section.key`.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Environment prefix of overrides: `PARAGON_EDGE__UPSTREAM__BASE_URL` sets `upstream.base_url`.
pub const ENV_PREFIX: &str = "PARAGON_EDGE__";
/// Environment variable that may hold the API key.
pub const API_KEY_ENV: &str = "PARAGON_API_KEY";

impl Config {
    /// Reads the defaults, then `file` (if any), then the environment. Values are checked
    /// by [`Settings::new`].
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        // Defaults come from the types' `#[serde(default)]`: serializing them would redact secrets.
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // `PARAGON_API_KEY` is taken exactly as it is: figment's `Env` parses values, so
        // a numeric key would become a number (refused, or with its leading zeros lost).
        if let Some(key) = std::env::var_os(API_KEY_ENV) {
            figment = figment.merge(Serialized::default(
                "upstream.api_key",
                key.to_string_lossy().into_owned(),
            ));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        figment
            .extract()
            .map_err(|e| ConfigError::Load(describe(e)))
    }

    /// Parses a TOML document (no environment). Values are checked by [`Settings::new`].
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Figment::from(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Load(describe(e)))
    }

    /// Checks the values no layer's builder checks (see [`Settings::new`]); the error
    /// names the first offending key.
    fn check(&self) -> Result<(), ConfigError> {
        for origin in &self.server.cors_allowed_origins {
            if origin != "*" {
                let ok = Url::parse(origin).ok().is_some_and(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host().is_some()
                        && u.path() == "/"
                        && !origin.ends_with('/')
                });
                if !ok {
                    return Err(invalid(
                        "server.cors_allowed_origins",
                        format!("{origin:?} is not an origin such as \"http://localhost:3000\" or \"*\""),
                    ));
                }
            }
        }
        if self.server.max_batch_ids == 0 {
            return Err(invalid("server.max_batch_ids", "must be at least 1"));
        }
        if self.server.max_batch_bytes == 0 {
            return Err(invalid("server.max_batch_bytes", "must be at least 1"));
        }
        positive(
            "server.header_read_timeout",
            self.server.header_read_timeout,
        )?;
        positive("server.idle_timeout", self.server.idle_timeout)?;
        // hyper's read buffer cannot be smaller than 8 KiB, and that buffer is the bound.
        if !(8192..=16 << 20).contains(&self.server.max_request_head_bytes) {
            return Err(invalid(
                "server.max_request_head_bytes",
                format!(
                    "{} is outside 8192..=16777216 (the smallest head buffer is 8 KiB)",
                    self.server.max_request_head_bytes
                ),
            ));
        }
        if self.server.max_connections == 0
            || self.server.max_connections > tokio::sync::Semaphore::MAX_PERMITS
        {
            return Err(invalid(
                "server.max_connections",
                format!(
                    "must be between 1 and {}",
                    tokio::sync::Semaphore::MAX_PERMITS
                ),
            ));
        }
        check_browser_cache(&self.server.browser_cache)?;
        let key = self.upstream.api_key.expose();
        if key.chars().any(|c| c.is_control() || !c.is_ascii()) {
            return Err(invalid(
                "upstream.api_key",
                "holds characters that cannot be sent in a header",
            ));
        }
        positive("upstream.timeout", self.upstream.timeout)?;
        positive("upstream.deadline", self.upstream.deadline)?;
        positive("upstream.connect_timeout", self.upstream.connect_timeout)?;
        if self.upstream.max_response_bytes == 0 {
            return Err(invalid("upstream.max_response_bytes", "must be at least 1"));
        }
        if self.upstream.max_concurrency == 0 {
            return Err(invalid("upstream.max_concurrency", "must be at least 1"));
        }
        if self.upstream.max_concurrency > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(invalid(
                "upstream.max_concurrency",
                format!("must be at most {}", tokio::sync::Semaphore::MAX_PERMITS),
            ));
        }
        let cl = &self.client_limit;
        if cl.max_requests == 0 {
            return Err(invalid("client_limit.max_requests", "must be at least 1"));
        }
        positive("client_limit.window", cl.window)?;
        if !(cl.max_upstream_share > 0.0 && cl.max_upstream_share <= 1.0) {
            return Err(invalid(
                "client_limit.max_upstream_share",
                format!("{} is not in (0, 1]", cl.max_upstream_share),
            ));
        }
        Ok(())
    }

    /// `server.listen` as an address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|_| {
            invalid(
                "server.listen",
                format!(
                    "{:?} is not an address such as \"127.0.0.1:8080\"",
                    self.server.listen
                ),
            )
        })
    }

    /// `upstream.base_url` parsed; `None` means the embedded simulator.
    pub fn base_url(&self) -> Result<Option<Url>, ConfigError> {
        let Some(secret) = &self.upstream.base_url else {
            return Ok(None);
        };
        let shown = secret.redacted();
        let url = Url::parse(secret.expose())
            .map_err(|e| invalid("upstream.base_url", format!("{shown:?} is not a URL ({e})")))?;
        paragon_client::transport::check_base_url(&url)
            .map_err(|m| invalid("upstream.base_url", format!("{shown:?}: {m}")))?;
        Ok(Some(url))
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut text = String::new();
        if self.upstream.base_url.is_none() {
            text.push_str(
                "# upstream.base_url is not set: the embedded ParagoN simulator serves\n",
            );
        }
        text.push_str(
            &toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print: {e}\n")),
        );
        text
    }
}

/// `server.browser_cache`: comma-separated `Cache-Control` directives that make sense
/// for a private answer: `no-cache`, `no-store`, `must-revalidate`, `immutable`, and
/// `max-age`, `stale-while-revalidate`, `stale-if-error` with whole seconds.
fn check_browser_cache(value: &str) -> Result<(), ConfigError> {
    const KEY: &str = "server.browser_cache";
    if value.trim().is_empty() {
        return Err(invalid(
            KEY,
            "is empty; write e.g. \"no-cache\" or \"max-age=30\"",
        ));
    }
    for directive in value.split(',').map(str::trim) {
        let ok = match directive.split_once('=') {
            None => matches!(
                directive,
                "no-cache" | "no-store" | "must-revalidate" | "immutable"
            ),
            Some((name, secs)) => {
                matches!(
                    name,
                    "max-age" | "stale-while-revalidate" | "stale-if-error"
                ) && !secs.is_empty()
                    && secs.len() <= 10
                    && secs.bytes().all(|b| b.is_ascii_digit())
            }
        };
        if !ok {
            return Err(invalid(
                KEY,
                format!(
                    "{directive:?} is not a Cache-Control directive for a private answer \
                     (no-cache, no-store, must-revalidate, immutable, max-age=N, \
                     stale-while-revalidate=N, stale-if-error=N)"
                ),
            ));
        }
    }
    Ok(())
}

fn positive(key: &'static str, d: Dur) -> Result<(), ConfigError> {
    if d.0.is_zero() {
        Err(invalid(key, "must be longer than zero"))
    } else {
        Ok(())
    }
}

/// Figment's errors, one line each, naming the key as `section.key`.
fn describe(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let kind = e.kind.to_string();
            let source = e.metadata.as_ref().map(|m| m.name.to_string());
            match (key.is_empty(), source) {
                (true, Some(s)) => format!("{kind} (in {s})"),
                (true, None) => kind,
                (false, Some(s)) => format!("{key}: {kind} (in {s})"),
                (false, None) => format!("{key}: {kind}"),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(toml: &str) -> String {
        Settings::from_toml(toml).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_the_contract() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.cache.stale_if_error, Dur::secs(600));
        assert_eq!(c.cache.max_bytes, 268_435_456);
        assert_eq!(c.base_url().unwrap(), None);
    }

    #[test]
    fn the_example_file_documents_exactly_the_defaults() {
        let text = include_str!("../../../../config/paragon-edge.toml");
        assert_eq!(Config::from_toml(text).unwrap(), Config::default());
    }

    #[test]
    fn every_error_names_its_key() {
        let cases = [
            ("[cache]\nttll = \"1s\"", "ttll"),
            ("[cache]\nttl = \"0s\"", "cache.ttl"),
            ("[cache]\nttl = \"-5s\"", "cache.ttl"),
            ("[cache]\nttl = \"soon\"", "cache.ttl"),
            ("[cache]\nmax_bytes = 0", "cache.max_bytes"),
            ("[cache]\nmax_bytes = -1", "cache.max_bytes"),
            ("[cache]\nttl_jitter = 1.5", "cache.ttl_jitter"),
            ("[cache]\nttl_jitter = -0.1", "cache.ttl_jitter"),
            ("[cache]\nttl_jitter = \"lots\"", "cache.ttl_jitter"),
            (
                "[cache]\nstale_while_revalidate = \"soon\"",
                "cache.stale_while_revalidate",
            ),
            (
                "[cache]\nstale_while_revalidat = \"1s\"",
                "stale_while_revalidat",
            ),
            (
                "[circuit_breaker]\nfailure_rate = 1.5",
                "circuit_breaker.failure_rate",
            ),
            (
                "[circuit_breaker]\nfailure_rate = -0.1",
                "circuit_breaker.failure_rate",
            ),
            (
                "[circuit_breaker]\nopen_for = \"0s\"",
                "circuit_breaker.open_for",
            ),
            ("[upstream]\nbase_url = \"not a url\"", "upstream.base_url"),
            ("[upstream]\nbase_url = \"ftp://x\"", "upstream.base_url"),
            ("[upstream]\ntimeout = \"0ms\"", "upstream.timeout"),
            ("[rate_limit]\nmax_requests = 0", "rate_limit.max_requests"),
            ("[rate_limit]\nmax_requests = -1", "rate_limit.max_requests"),
            ("[rate_limit]\nbackend = \"etcd\"", "rate_limit.backend"),
            (
                "[rate_limit]\nbackground_reserve = 1.2",
                "rate_limit.background_reserve",
            ),
            (
                "[rate_limit]\nfollow_upstream = \"yes\"",
                "rate_limit.follow_upstream",
            ),
            ("[server]\nlisten = \"nowhere\"", "server.listen"),
            (
                "[server]\nbrowser_cache = \"public\"",
                "server.browser_cache",
            ),
            ("[server]\nbrowser_cache = \"\"", "server.browser_cache"),
            (
                "[server]\nbrowser_cache = \"max-age=ten\"",
                "server.browser_cache",
            ),
            (
                "[server]\nbrowser_cache = \"no-cache\\r\\nx: y\"",
                "server.browser_cache",
            ),
            (
                "[server]\ncors_allowed_origins = [\"localhost\"]",
                "server.cors_allowed_origins",
            ),
            ("[redis]\nurl = \"http://x\"", "redis.url"),
            ("[nope]\nx = 1", "nope"),
            ("[upstream]\ndeadline = \"0s\"", "upstream.deadline"),
            ("[upstream]\ndeadline = \"soon\"", "upstream.deadline"),
            ("[retry]\nmax_attempts = 0", "retry.max_attempts"),
            ("[retry]\nmax_attempts = -1", "retry.max_attempts"),
            ("[retry]\nbudget_ratio = 1.5", "retry.budget_ratio"),
            ("[retry]\nbudget_ratio = -0.1", "retry.budget_ratio"),
            ("[retry]\nbudget_ratio = nan", "retry.budget_ratio"),
            (
                "[retry]\nbudget_min_per_sec = -1",
                "retry.budget_min_per_sec",
            ),
            ("[retry]\nbackoff = \"fast\"", "retry.backoff"),
            (
                "[retry]\nmax_attempts = 1\nhedge_after = \"50ms\"",
                "retry.hedge_after",
            ),
            ("[retry]\nretries = 3", "retries"),
        ];
        for (toml, key) in cases {
            let e = err(toml);
            assert!(
                e.contains(key),
                "{toml:?} gave {e:?}, which does not name {key}"
            );
        }
    }

    #[test]
    fn redacted_output_hides_secrets() {
        let c = Config::from_toml(
            "[upstream]\napi_key = \"sk-very-secret\"\n[server]\nadmin_token = \"adm-secret\"\n[redis]\nurl = \"redis://:pw-secret@h:1\"",
        )
        .unwrap();
        let out = c.to_redacted_toml();
        for secret in ["sk-very-secret", "adm-secret", "pw-secret"] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(out.contains("<redacted>"));
        assert!(out.contains("redis://:redacted@h:1"));
        // What is printed is itself a valid configuration.
        let reparsed = Config::from_toml(&out).unwrap();
        assert_eq!(reparsed.cache, c.cache);
    }
}
