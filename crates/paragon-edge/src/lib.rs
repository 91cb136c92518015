//! ParagoN Edge: the service frontends call instead of the ParagoN API.
//!
//! It serves users from a stack of protective layers (cache → circuit breaker → rate
//! limiter → HTTP transport, see [`stack`]) built once from checked [`config::Settings`].
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use paragon_edge::{config::Settings, server};
//! let settings = Settings::load(None)?;                  // defaults + environment, checked
//! let edge = server::build(settings, paragon_layers::Clock::coarse()).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! server::run(listener, edge.state, server::shutdown_signal(), std::time::Duration::from_secs(10)).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`] — the TOML/environment configuration, checked and parsed once;
//! - [`stack`] — the one composition of the layers;
//! - [`app`] — `app(state)`: the router, wrapped whole in request ids, counting and CORS;
//! - [`state`] — what every handler serves from;
//! - [`client_limit`] — per-client budgets (`[client_limit]`);
//! - [`routes`] — handlers: users, batch, health, metrics, admin;
//! - [`problem`] — errors as `application/problem+json`;
//! - [`metrics`] — counters and the Prometheus text;
//! - [`conn`] — frontend connections: the accept loop, its cap and the timeouts;
//! - [`server`] — build, run with graceful shutdown, signals;
//! - [`server_timing`] — the `Server-Timing` of `/v1` answers;
//! - [`reload`] — the configuration reloaded while serving (admin action, SIGHUP).

pub mod app;
pub mod client_limit;
pub mod config;
pub mod conn;
pub mod metrics;
pub mod problem;
pub mod reload;
pub mod routes;
pub mod server;
pub mod server_timing;
pub mod stack;
pub mod state;
pub mod upstream;
