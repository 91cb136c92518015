//! The state every handler serves from: the built stack, the configuration, the
//! metrics, and whether the instance is still serving (for the shutdown drain).
//!
//! The configuration can be reloaded while the instance serves (`reload.rs`), so it sits
//! behind an atomic pointer (`arc-swap`): a handler reads it with [`AppState::config`]
//! and sees either the old or the new configuration whole; what runs on every request
//! reads it with [`AppState::read_config`] or [`AppState::cache_control`], one atomic
//! load and no reference count.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::ConnectInfo;
use axum::http::HeaderValue;
use tokio::sync::Notify;

use crate::client_limit::ClientLimiter;
use crate::config::{Config, Origin};
use crate::metrics::{LayerFigures, Metrics};
use crate::problem::{window_secs, Problem, RatePolicy};
use crate::stack::Stack;

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) stack: Stack,
    pub(crate) client_limit: Option<ClientLimiter>,
    /// The configuration in force; replaced whole by a reload.
    config: ArcSwap<Config>,
    /// Where the configuration came from: what a reload reads again.
    pub(crate) origin: Origin,
    /// Held while a reload runs, so two reloads apply one after the other.
    pub(crate) reloading: parking_lot::Mutex<()>,
    /// Reloads that changed something since start.
    pub(crate) reloads: AtomicU64,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) upstream: String,
    pub(crate) embedded: bool,
    /// `Cache-Control` of user answers: `private, ` and `server.browser_cache`.
    cache_control: ArcSwap<HeaderValue>,
    ready: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

impl AppState {
    /// State over a built stack. `upstream` is the base URL shown in status pages;
    /// `embedded` says whether it is the in-process simulator; `origin` is where
    /// `config` was read, which a reload reads again.
    pub fn new(
        stack: Stack,
        config: Config,
        metrics: Arc<Metrics>,
        upstream: String,
        embedded: bool,
        client_limit: Option<ClientLimiter>,
        origin: Origin,
    ) -> Self {
        AppState(Arc::new(Inner {
            cache_control: ArcSwap::from_pointee(cache_control(&config)),
            stack,
            client_limit,
            config: ArcSwap::from_pointee(config),
            origin,
            reloading: parking_lot::Mutex::new(()),
            reloads: AtomicU64::new(0),
            metrics,
            upstream,
            embedded,
            ready: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        }))
    }

    /// The configuration in force now. A handler may hold it across awaits: a reload
    /// meanwhile does not change what it reads.
    pub fn config(&self) -> Arc<Config> {
        self.0.config.load_full()
    }

    /// Reads the configuration in force without keeping it: one atomic load and no
    /// reference count, for what runs on every request.
    pub fn read_config<T>(&self, read: impl FnOnce(&Config) -> T) -> T {
        read(&self.0.config.load())
    }

    /// `Cache-Control` of user answers now.
    pub fn cache_control(&self) -> HeaderValue {
        HeaderValue::clone(&self.0.cache_control.load())
    }

    /// Puts a reloaded configuration in force for the handlers; the layers take
    /// theirs through their handles (`reload.rs`).
    pub(crate) fn set_config(&self, config: Config) {
        self.0.cache_control.store(Arc::new(cache_control(&config)));
        self.0.config.store(Arc::new(config));
    }

    /// Reloads that changed the configuration since start.
    pub fn reloads(&self) -> u64 {
        self.0.reloads.load(Ordering::Relaxed)
    }

    /// The stack served.
    pub fn stack(&self) -> &Stack {
        &self.0.stack
    }

    /// The instance's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }

    /// Marks the instance as shutting down: `/readyz` answers 503 from now on.
    pub fn begin_shutdown(&self) {
        self.0.ready.store(false, Ordering::SeqCst);
        self.0.idle.notify_waiters();
    }

    /// Whether the instance is serving (not shutting down).
    pub fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::SeqCst)
    }

    /// API requests being answered now.
    pub fn in_flight(&self) -> usize {
        self.0.in_flight.load(Ordering::SeqCst)
    }

    /// Resolves once no API request is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.0.idle.notified();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// The client of `request` for `[client_limit]`, when it is on.
    pub fn client_of<B>(&self, request: &http::Request<B>) -> Option<String> {
        let limiter = self.0.client_limit.as_ref()?;
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Some(limiter.client_of(request.headers(), peer))
    }

    /// Charges `client` (when client limits are on) `requests` edge requests and
    /// `misses` upstream calls; the answer to send instead when refused.
    pub async fn admit_client(
        &self,
        client: Option<&str>,
        requests: u32,
        misses: u32,
    ) -> Result<(), Problem> {
        let (Some(limiter), Some(client)) = (&self.0.client_limit, client) else {
            return Ok(());
        };
        limiter
            .admit(client, requests, misses)
            .await
            .map_err(|refusal| {
                self.0.metrics.client_limited();
                let config = self.config();
                let c = &config.client_limit;
                let requests = RatePolicy {
                    name: "client",
                    quota: c.max_requests,
                    window_secs: window_secs(c.window.0),
                };
                let share = self.upstream_policy().map(|p| RatePolicy {
                    name: "client-upstream",
                    quota: ((f64::from(p.quota) * c.max_upstream_share).floor() as u32).max(1),
                    ..p
                });
                Problem::client_limited(refusal, requests, share)
            })
    }

    /// The edge's budget of upstream calls, as a `429`'s `RateLimit-Policy` describes it;
    /// `None` when the rate limiter is off.
    pub fn upstream_policy(&self) -> Option<RatePolicy> {
        let config = self.config();
        let r = &config.rate_limit;
        r.enabled.then_some(RatePolicy {
            name: "upstream",
            quota: r.max_requests,
            window_secs: window_secs(r.window.0),
        })
    }

    /// Whether a request would be answered from a fresh local cache entry.
    pub fn is_cached(&self, request: &paragon_client::Endpoint) -> bool {
        self.0
            .stack
            .cache
            .as_ref()
            .is_some_and(|c| c.is_fresh(request))
    }

    /// Figures of the layers, read now.
    pub fn layer_figures(&self) -> LayerFigures {
        let s = &self.0.stack;
        LayerFigures {
            cache: s.cache.as_ref().map(|c| c.stats()),
            limiter: s.limiter.as_ref().map(|l| l.stats()),
            breaker: s.breaker.as_ref().map(|b| b.stats()),
            retry: Some(s.retry.stats()),
        }
    }
}

/// `Cache-Control` of user answers under `config`: `private, ` and `server.browser_cache`
/// (checked when the configuration was).
fn cache_control(config: &Config) -> HeaderValue {
    HeaderValue::try_from(format!("private, {}", config.server.browser_cache))
        .unwrap_or(HeaderValue::from_static("private, no-cache"))
}

/// Counts an API request in flight until dropped (also when the connection is dropped
/// before the answer is written).
pub struct InFlight(AppState);

impl AppState {
    /// Marks an API request in flight until the guard is dropped.
    pub fn track(&self) -> InFlight {
        self.0.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Only a shutdown drain waits for idleness, and it starts after `ready` turns
        // false (both sequentially consistent): a request that still reads `ready` as
        // true ended before the drain's first look at the count.
        let state = &self.0;
        if state.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 && !state.is_ready() {
            state.0.idle.notify_waiters();
        }
    }
}
