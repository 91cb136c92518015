//! `paragon-sim`: runs the simulated ParagoN API.
//!
//! ```text
//! paragon-sim --listen 127.0.0.1:9090 --latency 50ms --error-rate 0.1
//! ```
//!
//! Faults can be changed while it runs with `PUT /_sim/faults` (or only some keys with
//! `PATCH /_sim/faults`; a user's next version with `POST /_sim/users/{id}/change`); counters are at
//! `GET /_sim/stats`. Logs follow `RUST_LOG` (default `info`).

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use paragon_sim::{Faults, SimConfig, Simulator};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// The simulated ParagoN API, with fault injection.
#[derive(Debug, Parser)]
#[command(
    name = "paragon-sim",
    version,
    about,
    after_help = "Control endpoint (no authentication, not counted):\n  \
        GET /_sim/stats                  what was served, by path and status, and how many were conditional\n  \
        POST /_sim/reset                 zero the counters\n  \
        GET|PUT /_sim/faults             read or replace the faults (JSON of the flags above, snake_case)\n  \
        PATCH /_sim/faults               change only the keys given (PUT clears every key it omits)\n  \
        POST /_sim/users/{id}/change     the user's next version (new body, ETag, Last-Modified)\n\n\
Fault keys of /_sim/faults (each flag above, in snake_case): latency, error_rate, outage, quota,\n\
quota_window, always_429, malformed_rate, not_object_rate, wrong_id_rate, oversized_rate,\n\
oversized_bytes, trickle_rate, reset_rate, drop_rate, slow_rate, slow_latency, fail_first,\n\
fail_first_status, fail_first_delay, etags.\n\n\
Example: curl -X PATCH localhost:9090/_sim/faults -d '{\"error_rate\": 0.5}'\n\n\
Logs follow RUST_LOG (default info)."
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// Require `Authorization: Bearer <KEY>` on /users requests.
    #[arg(long, env = "PARAGON_SIM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Seed of the per-request fault draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Delay added before every /users answer, e.g. 50ms.
    #[arg(long, value_parser = duration)]
    latency: Option<String>,
    /// Share of requests answered 500.
    #[arg(long, value_parser = rate, default_value_t = 0.0)]
    error_rate: f64,
    /// Answer every /users request 503 for this long from start, e.g. 30s.
    #[arg(long, value_parser = duration)]
    outage: Option<String>,
    /// Requests allowed per --quota-window; the rest answer 429 with Retry-After.
    #[arg(long)]
    quota: Option<u32>,
    /// The quota window, e.g. 1s.
    #[arg(long, value_parser = duration, requires = "quota")]
    quota_window: Option<String>,
    /// Answer every /users request 429 with `Retry-After: SECS`.
    #[arg(long, value_name = "SECS")]
    always_429: Option<u64>,
    /// Share of requests answered 200 with a body that is not JSON.
    #[arg(long, value_parser = rate, default_value_t = 0.0)]
    malformed_rate: f64,
    /// Share of requests answered 200 with a JSON array.
    #[arg(long, value_parser = rate, default_value_t = 0.0)]
    not_object_rate: f64,
    /// Share of requests answered 200 with a user whose id is not the requested one.
    #[arg(long, value_parser = rate, default_value_t = 0.0)]
    wrong_id_rate: f64,
    /// Share of requests answered 200 with an oversized (padded) user.
    #[arg(long, value_parser = rate, default_value_t = 0.0)]
    oversized_rate: f64,
    /// Size of an oversized body in bytes (default 2 MiB).
    #[arg(long)]
    oversized_bytes: Option<usize>,
    /// Share of requests whose body trickles one byte every 100ms, forever.
    #[arg(long, value_parser = rate, default_value_t = 0.0)]
    trickle_rate: f64,
    /// Share of requests cut off mid-body.
    #[arg(long, value_parser = rate, default_value_t = 0.0)]
    reset_rate: f64,
    /// Share of requests whose connection is closed without an answer.
    #[arg(long, value_parser = rate, default_value_t = 0.0)]
    drop_rate: f64,
    /// Share of requests delayed by --slow-latency more (a slow tail).
    #[arg(long, value_parser = rate, default_value_t = 0.0, requires = "slow_latency")]
    slow_rate: f64,
    /// The slow tail's extra delay, e.g. 2s.
    #[arg(long, value_parser = duration)]
    slow_latency: Option<String>,
    /// The first N requests for each id fail (0 = off).
    #[arg(long, value_name = "N", default_value_t = 0)]
    fail_first: u32,
    /// How they fail: an HTTP status from 400 to 599 (default 503), or 0 to close the
    /// connection without an answer.
    #[arg(long, value_name = "STATUS")]
    fail_first_status: Option<u16>,
    /// Those requests wait this long more before they fail, e.g. 10s.
    #[arg(long, value_parser = duration)]
    fail_first_delay: Option<String>,
    /// Send ETag and Last-Modified on users, and answer 304 to a conditional request
    /// whose user has not changed (change one with POST /_sim/users/{id}/change).
    #[arg(long)]
    etags: bool,
}

fn rate(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is not in 0..=1"))
    }
}

fn duration(text: &str) -> Result<String, String> {
    humantime::parse_duration(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("{text:?} is not a duration such as 250ms or 2s: {e}"))
}

impl Cli {
    fn config(self) -> (SocketAddr, SimConfig) {
        let faults = Faults {
            latency: self.latency,
            error_rate: self.error_rate,
            outage: self.outage,
            quota: self.quota,
            quota_window: self.quota_window,
            always_429: self.always_429,
            malformed_rate: self.malformed_rate,
            not_object_rate: self.not_object_rate,
            wrong_id_rate: self.wrong_id_rate,
            oversized_rate: self.oversized_rate,
            oversized_bytes: self.oversized_bytes,
            trickle_rate: self.trickle_rate,
            reset_rate: self.reset_rate,
            drop_rate: self.drop_rate,
            slow_rate: self.slow_rate,
            slow_latency: self.slow_latency,
            fail_first: self.fail_first,
            fail_first_status: self.fail_first_status,
            fail_first_delay: self.fail_first_delay,
            etags: self.etags,
        };
        let config = SimConfig {
            api_key: self.api_key,
            faults,
            seed: self.seed,
        };
        (self.listen, config)
    }
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Colours only for a person at a terminal: escape codes in a file or a log
    // collector are noise.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("paragon-sim: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("paragon-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (listen, config) = cli.config();
    let sim = Simulator::try_new(config).context("invalid fault flags")?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    println!("paragon-sim listening on http://{addr}");
    tracing::info!(%addr, faults = ?sim.faults(), "paragon-sim listening");
    sim.serve(listener, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
