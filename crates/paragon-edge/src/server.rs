//! Starting and stopping the service.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use paragon_layers::Clock;
use paragon_sim::{SimConfig, SimHandle, Simulator};
use tokio::net::TcpListener;

use crate::app::app;
use crate::client_limit::ClientLimiter;
use crate::config::{Config, ConfigError, Settings};
use crate::conn::{self, ConnLimits};
use crate::metrics::Metrics;
use crate::stack::{self, BuildError};
use crate::state::AppState;

/// A built edge: its state, and the embedded simulator when no `upstream.base_url` is set.
pub struct Edge {
    /// What the handlers serve from.
    pub state: AppState,
    /// The in-process ParagoN simulator, when it is the upstream.
    pub simulator: Option<SimHandle>,
}

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The stack cannot be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The embedded simulator cannot start.
    #[error("cannot start the embedded ParagoN simulator: {0}")]
    Simulator(std::io::Error),
}

/// Builds the stack of `settings` (starting the embedded simulator when no upstream is
/// set).
pub async fn build(settings: Settings, clock: Clock) -> Result<Edge, StartError> {
    let metrics = Arc::new(Metrics::new(clock.clone()));
    let (base_url, simulator) = match settings.base_url.clone() {
        Some(url) => (url, None),
        None => {
            let sim = Simulator::new(SimConfig::default())
                .spawn(([127, 0, 0, 1], 0).into())
                .await
                .map_err(StartError::Simulator)?;
            let url = sim.base_url().parse().map_err(|e| {
                StartError::Simulator(std::io::Error::other(format!("simulator address: {e}")))
            })?;
            tracing::info!(
                upstream = %sim.base_url(),
                "no upstream.base_url set: serving from the embedded ParagoN simulator"
            );
            (url, Some(sim))
        }
    };
    if settings.config.server.cors_allowed_origins.is_empty() {
        tracing::info!(
            "CORS is off: browsers on other origins cannot call this edge \
             (server.cors_allowed_origins, e.g. PARAGON_EDGE__SERVER__CORS_ALLOWED_ORIGINS=http://localhost:3000)"
        );
    }
    let upstream = crate::config::redact_url(base_url.as_str());
    let stack = stack::build(&settings, base_url, clock.clone(), metrics.clone())?;
    let (config, origin) = (settings.config, settings.origin);
    if let Some(link) = &stack.redis {
        // Give Redis a moment so the first requests already use the fleet's state.
        if link.wait_up(Duration::from_secs(1)).await {
            tracing::info!(
                mode = link.mode(),
                prefix = link.prefix(),
                "fleet mode: sharing state through Redis"
            );
        }
    }
    let client_limit = if config.client_limit.enabled {
        let key = settings.client_key;
        // With the fleet's budget in Redis, each client's share of it is the fleet's too.
        let fleet = stack
            .redis
            .clone()
            .filter(|_| config.rate_limit.backend == crate::config::Backend::Redis);
        Some(ClientLimiter::new(
            &config.client_limit,
            key,
            &config.rate_limit,
            clock,
            fleet,
        ))
    } else {
        None
    };
    let state = AppState::new(
        stack,
        config,
        metrics,
        upstream,
        simulator.is_some(),
        client_limit,
        origin,
    );
    Ok(Edge { state, simulator })
}

/// Serves `state` on `listener` until `shutdown` resolves, then drains.
///
/// On shutdown `/readyz` turns 503 at once while the server keeps answering, so load
/// balancers see it; once no API request is in flight (or `grace` has passed) it stops
/// accepting, lets open requests finish, and returns. Nothing waits longer than `grace`.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_state = state.clone();
    tokio::spawn(async move {
        shutdown.await;
        drain_state.begin_shutdown();
        let _ = stopping_tx.send(());
        tracing::info!(
            in_flight = drain_state.in_flight(),
            "shutting down: draining in-flight requests"
        );
        if tokio::time::timeout(grace, drain_state.idle())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = drain_state.in_flight(),
                "shutdown grace passed with requests in flight"
            );
        }
        let _ = stop_tx.send(true);
    });
    let server = conn::serve(
        listener,
        app(state.clone()),
        conn_limits(&state.config()),
        state.metrics().clone(),
        state.0.client_limit.is_some(),
        stop_rx,
    );
    let deadline = async move {
        if stopping_rx.await.is_ok() {
            // The drain above uses `grace`; the connections get a moment more to write out.
            tokio::time::sleep(grace.saturating_add(Duration::from_millis(500))).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = server => Ok(()),
        () = deadline => {
            tracing::warn!("connections still open after the shutdown grace; closing them");
            Ok(())
        }
    }
}

/// The connection limits of `config`'s `[server]`.
pub fn conn_limits(config: &Config) -> ConnLimits {
    let s = &config.server;
    ConnLimits {
        header_read_timeout: s.header_read_timeout.0,
        idle_timeout: s.idle_timeout.0,
        max_head_bytes: s.max_request_head_bytes,
        max_connections: s.max_connections,
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not
/// when it is first polled, so a signal that arrives during start-up is not lost.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => tracing::info!("SIGINT received"),
                        _ = term.recv() => tracing::info!("SIGTERM received"),
                    }
                }
                _ => {
                    tracing::warn!("cannot install signal handlers; stop with SIGKILL");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("interrupt received");
    }
}
