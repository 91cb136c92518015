//! Reloading the configuration while the instance serves: `POST /admin/config/reload`
//! and SIGHUP both call [`reload`].
//!
//! A reload reads the same file and environment the instance started from
//! ([`Settings::load`], so the same checks), and then either changes nothing or applies
//! the whole new configuration:
//!
//! - an invalid configuration is refused with the error that names its key;
//! - a configuration that changes a key read only at start ([`needs_restart`]) is
//!   refused whole, naming every such key;
//! - otherwise each layer takes its new settings in place through its handle (an atomic
//!   swap of its settings; the cache keeps its entries, the breaker its state, the
//!   limiter the budget spent, repriced to the new rate), the handlers see the new
//!   configuration, and the answer lists the dotted keys of every leaf that changed.
//!
//! Why refuse rather than rebuild: turning a layer on or off changes the stack's type
//! and shape (`stack.rs`), and the connection limits, the transport and the Redis link
//! are set up once at start. Refusing such a file whole keeps one rule simple for
//! operators: a reload that answers 200 has put every changed key in force.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use serde_json::Value;

use crate::config::{Config, ConfigError, Origin, Settings};
use crate::problem::Problem;
use crate::state::AppState;

/// Keys read only at start, with why; a key ending in `.` stands for its whole section.
/// The contract names `server.listen`, `redis.*` and the backends; the others are set up
/// once by this implementation (the stack's shape, the transport, the connection
/// limits, the router's CORS layer, the per-client limiter).
const RESTART_KEYS: &[(&str, &str)] = &[
    ("server.listen", "the listening socket is bound at start"),
    ("redis.", "the Redis link is opened at start"),
    ("cache.backend", "the cache's store is chosen at start"),
    (
        "rate_limit.backend",
        "the limiter's store is chosen at start",
    ),
    ("cache.enabled", "it adds or removes a layer of the stack"),
    (
        "rate_limit.enabled",
        "it adds or removes a layer of the stack",
    ),
    (
        "circuit_breaker.enabled",
        "it adds or removes a layer of the stack",
    ),
    (
        "client_limit.enabled",
        "the per-client limiter is built at start",
    ),
    (
        "client_limit.key",
        "the per-client limiter is built at start",
    ),
    ("cache.max_entries", "it sizes the cache's table"),
    ("cache.max_bytes", "it sizes the cache's table"),
    (
        "upstream.base_url",
        "the upstream transport is built at start",
    ),
    (
        "upstream.api_key",
        "the upstream transport is built at start",
    ),
    (
        "upstream.timeout",
        "the upstream transport is built at start",
    ),
    (
        "upstream.connect_timeout",
        "the upstream transport is built at start",
    ),
    (
        "upstream.max_response_bytes",
        "the upstream transport is built at start",
    ),
    (
        "upstream.max_concurrency",
        "the upstream gate is built at start",
    ),
    (
        "server.cors_allowed_origins",
        "the CORS layer is built at start",
    ),
    ("server.shutdown_grace", "it is read at start"),
    (
        "server.header_read_timeout",
        "the connection limits are set at start",
    ),
    (
        "server.idle_timeout",
        "the connection limits are set at start",
    ),
    (
        "server.max_request_head_bytes",
        "the connection limits are set at start",
    ),
    (
        "server.max_connections",
        "the connection limits are set at start",
    ),
];

/// Keys that take effect at once on reload: the handlers read them through
/// `AppState::config`, and the layers take theirs through their handles. A key in
/// neither list is treated as needing a restart, and a unit test fails until every key
/// of [`Config`] is in one of them, so a new key is never claimed live by accident.
const LIVE_KEYS: &[&str] = &[
    "server.admin_token",
    "server.max_batch_ids",
    "server.max_batch_bytes",
    "server.browser_cache",
    "server.access_log",
    "upstream.deadline",
    "cache.ttl",
    "cache.ttl_jitter",
    "cache.stale_if_error",
    "cache.stale_while_revalidate",
    "cache.revalidate",
    "cache.negative_ttl",
    "rate_limit.max_requests",
    "rate_limit.window",
    "rate_limit.burst",
    "rate_limit.max_wait",
    "rate_limit.max_pause",
    "rate_limit.follow_upstream",
    "rate_limit.background_reserve",
    "client_limit.max_requests",
    "client_limit.window",
    "client_limit.max_upstream_share",
    "retry.enabled",
    "retry.max_attempts",
    "retry.backoff",
    "retry.budget_ratio",
    "retry.budget_min_per_sec",
    "retry.hedge_after",
    "circuit_breaker.failure_threshold",
    "circuit_breaker.failure_rate",
    "circuit_breaker.window",
    "circuit_breaker.minimum_calls",
    "circuit_breaker.open_for",
    "circuit_breaker.half_open_max_calls",
    "circuit_breaker.slow_call",
];

/// Why a key cannot change without a restart, or `None` when it takes effect at once.
pub fn needs_restart(key: &str) -> Option<&'static str> {
    let restart = RESTART_KEYS.iter().find(|(k, _)| {
        if k.ends_with('.') {
            key.starts_with(k)
        } else {
            key == *k
        }
    });
    match restart {
        Some((_, why)) => Some(why),
        None if LIVE_KEYS.contains(&key) => None,
        None => Some("it is not known to take effect while serving"),
    }
}

/// The dotted keys of every leaf that differs between `old` and `new`, sorted. A list is
/// one leaf. Secrets print redacted, so they are compared as values.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    leaves(
        "",
        &serde_json::to_value(old).unwrap_or(Value::Null),
        &mut a,
    );
    leaves(
        "",
        &serde_json::to_value(new).unwrap_or(Value::Null),
        &mut b,
    );
    let mut changed: BTreeSet<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    let secrets = [
        (
            "server.admin_token",
            old.server.admin_token != new.server.admin_token,
        ),
        (
            "upstream.api_key",
            old.upstream.api_key != new.upstream.api_key,
        ),
        (
            "upstream.base_url",
            old.upstream.base_url != new.upstream.base_url,
        ),
        ("redis.url", old.redis.url != new.redis.url),
        ("redis.nodes", old.redis.nodes != new.redis.nodes),
        (
            "redis.sentinels",
            old.redis.sentinels != new.redis.sentinels,
        ),
    ];
    for (key, differs) in secrets {
        if differs {
            changed.insert(key.to_owned());
        }
    }
    changed.into_iter().collect()
}

fn leaves(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&key, v, out);
            }
        }
        leaf => {
            out.insert(prefix.to_owned(), leaf.clone());
        }
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The configuration was given whole by the program, not read from a file and the
    /// environment: there is nothing to read again.
    #[error("this instance's configuration was not read from a file and the environment; there is nothing to reload")]
    NotReloadable,
    /// The configuration read is not usable; the message names the key.
    #[error("invalid configuration: {0}; nothing was changed")]
    Invalid(#[from] ConfigError),
    /// Keys changed that need a restart (each with why); nothing was changed.
    #[error("{}; nothing was changed", describe_restart(.0))]
    NeedsRestart(Vec<(String, &'static str)>),
    /// A layer refused its new settings (not expected: every key a layer cannot take
    /// in place is a restart key); nothing was changed.
    #[error("{0}; nothing was changed")]
    Refused(String),
}

fn describe_restart(keys: &[(String, &'static str)]) -> String {
    keys.iter()
        .map(|(key, why)| format!("{key} cannot change without a restart ({why})"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ReloadError {
    /// The answer to `POST /admin/config/reload`.
    pub fn problem(&self) -> Problem {
        let (status, kind, title) = match self {
            ReloadError::NotReloadable => {
                (StatusCode::CONFLICT, "not-reloadable", "Nothing to reload")
            }
            ReloadError::Invalid(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-config",
                "Invalid configuration",
            ),
            ReloadError::NeedsRestart(_) => {
                (StatusCode::BAD_REQUEST, "needs-restart", "Needs a restart")
            }
            ReloadError::Refused(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-config",
                "Invalid configuration",
            ),
        };
        Problem::new(status, kind, title, self.to_string())
    }
}

/// Reads the file and environment the instance started from again and puts the new
/// configuration in force, or changes nothing; the dotted keys that changed, sorted.
/// Every outcome is logged.
pub fn reload(state: &AppState) -> Result<Vec<String>, ReloadError> {
    let outcome = apply(state);
    match &outcome {
        Ok(changed) if changed.is_empty() => {
            tracing::info!("configuration reloaded: nothing changed");
        }
        Ok(changed) => tracing::warn!(?changed, "configuration reloaded"),
        Err(e) => tracing::error!(error = %e, "configuration reload refused"),
    }
    outcome
}

fn apply(state: &AppState) -> Result<Vec<String>, ReloadError> {
    let Origin::Loaded(file) = &state.0.origin else {
        return Err(ReloadError::NotReloadable);
    };
    let _one_at_a_time = state.0.reloading.lock();
    let settings = Settings::load(file.as_deref())?;
    let current = state.config();
    let changed = changed_keys(&current, &settings.config);
    let refused: Vec<(String, &'static str)> = changed
        .iter()
        .filter_map(|key| needs_restart(key).map(|why| (key.clone(), why)))
        .collect();
    if !refused.is_empty() {
        return Err(ReloadError::NeedsRestart(refused));
    }
    if changed.is_empty() {
        return Ok(changed);
    }
    drop(current);
    let stack = state.stack();
    // The one setter that can refuse goes first, so a refusal changes nothing.
    if let Some(cache) = &stack.cache {
        cache
            .reconfigure(settings.cache.clone())
            .map_err(|e| ReloadError::Refused(format!("cache.{e}")))?;
    }
    if let Some(limiter) = &stack.limiter {
        limiter.reconfigure(settings.rate_limit);
    }
    if let Some(breaker) = &stack.breaker {
        breaker.reconfigure(settings.breaker);
    }
    if stack.retry.config() != settings.retry {
        stack.retry.reconfigure(settings.retry);
    }
    if let Some(clients) = &state.0.client_limit {
        clients.reconfigure(&settings.config.client_limit, &settings.config.rate_limit);
    }
    state.set_config(settings.config);
    state
        .0
        .reloads
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(changed)
}

/// Reloads on every SIGHUP for as long as the runtime runs (a no-op off Unix). Installed
/// before the instance serves, so a SIGHUP never finds the default action (which ends
/// the process) in place.
pub fn reload_on_hangup(state: AppState) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP received: reloading the configuration");
                let _ = reload(&state);
            }
        });
    }
    #[cfg(not(unix))]
    let _ = state;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        Config::from_toml(toml).expect("a valid test configuration")
    }

    #[test]
    fn changed_keys_are_the_dotted_leaves_sorted() {
        let old = config("");
        let new = config(
            "[rate_limit]\nmax_requests = 7\n[cache]\nttl = \"1s\"\n[server]\ncors_allowed_origins = [\"*\"]\nadmin_token = \"t\"\n",
        );
        assert_eq!(
            changed_keys(&old, &new),
            [
                "cache.ttl",
                "rate_limit.max_requests",
                "server.admin_token",
                "server.cors_allowed_origins",
            ]
        );
        assert!(changed_keys(&new, &new.clone()).is_empty());
        // The same duration written another way is no change.
        assert!(changed_keys(
            &config("[cache]\nttl = \"60s\""),
            &config("[cache]\nttl = \"1m\"")
        )
        .is_empty());
    }

    #[test]
    fn a_changed_secret_is_seen_though_it_prints_redacted() {
        let old = config("[upstream]\napi_key = \"a\"\n[redis]\nurl = \"redis://:pw1@h:1\"");
        let new = config("[upstream]\napi_key = \"b\"\n[redis]\nurl = \"redis://:pw2@h:1\"");
        assert_eq!(changed_keys(&old, &new), ["redis.url", "upstream.api_key"]);
    }

    /// Every key of the configuration is either live or needs a restart, not both: a
    /// key added to `Config` fails here until it is put in one of the two lists.
    #[test]
    fn every_key_is_either_live_or_needs_a_restart() {
        let mut keys = BTreeMap::new();
        leaves(
            "",
            &serde_json::to_value(Config::default()).expect("serializable"),
            &mut keys,
        );
        // Not printed while unset.
        keys.insert("upstream.base_url".to_owned(), Value::Null);
        for key in keys.keys() {
            let restart = RESTART_KEYS.iter().any(|(k, _)| {
                if k.ends_with('.') {
                    key.starts_with(k)
                } else {
                    key == k
                }
            });
            let live = LIVE_KEYS.contains(&key.as_str());
            assert!(
                restart != live,
                "{key}: put it in exactly one of LIVE_KEYS and RESTART_KEYS (live: {live}, restart: {restart})"
            );
        }
        for key in LIVE_KEYS {
            assert!(keys.contains_key(*key), "{key} is not a key of Config");
        }
        assert_eq!(
            needs_restart("server.some_new_key"),
            Some("it is not known to take effect while serving")
        );
    }

    #[test]
    fn restart_keys_are_the_contracts_and_the_ones_set_up_at_start() {
        for key in [
            "server.listen",
            "redis.url",
            "redis.key_prefix",
            "cache.backend",
            "rate_limit.backend",
            "cache.enabled",
            "cache.max_entries",
        ] {
            assert!(needs_restart(key).is_some(), "{key}");
        }
        for key in [
            "rate_limit.max_requests",
            "rate_limit.window",
            "circuit_breaker.failure_threshold",
            "cache.ttl",
            "retry.enabled",
            "upstream.deadline",
            "server.admin_token",
            "server.browser_cache",
            "server.max_batch_ids",
        ] {
            assert_eq!(needs_restart(key), None, "{key}");
        }
    }
}
