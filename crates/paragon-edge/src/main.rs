//! `paragon-edge`: serve, or check a configuration.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use paragon_edge::config::Settings;
use paragon_edge::server;
use tracing_subscriber::EnvFilter;

/// The cache keeps bodies for minutes among each request's short-lived buffers of
/// similar sizes. glibc's allocator fragments its heap between the two: a cached 2 KB
/// user cost its body + ~530 B. mimalloc keeps sizes apart in pages of their own;
/// BENCHMARKS.md ("Memory per cached user") has the figures with each allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What `--help` adds after the options: what a first run needs to know.
const AFTER_HELP: &str = r#"First run: with no --config and no upstream.base_url, paragon-edge listens on
127.0.0.1:8080 and starts the simulated ParagoN in-process (it says so in its log):
    cargo run --release        then        curl localhost:8080/v1/users/42

Environment:
  PARAGON_API_KEY              ParagoN's API key (or upstream.api_key); never printed
  PARAGON_EDGE__SECTION__KEY   overrides one key, e.g. PARAGON_EDGE__UPSTREAM__BASE_URL;
                               a list is comma-separated, e.g.
                               PARAGON_EDGE__SERVER__CORS_ALLOWED_ORIGINS=http://localhost:3000
  RUST_LOG                     log filter (default info), e.g. paragon_edge=debug

Signals: SIGINT/SIGTERM stop gracefully (server.shutdown_grace); SIGHUP reloads the config.
Check a file first with: paragon-edge check-config --config FILE"#;

/// ParagoN Edge: a cached, rate-limited, circuit-broken ParagoN API for frontends.
#[derive(Parser, Debug)]
#[command(
    name = "paragon-edge",
    version,
    about,
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Configuration file (TOML). Environment overrides: PARAGON_EDGE__SECTION__KEY.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, env = "PARAGON_EDGE_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the edge service (the default).
    Serve,
    /// Validate the configuration and print it, secrets redacted.
    CheckConfig,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal: escape codes in a file or a log
    // collector are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let loaded = Settings::load(cli.config.as_deref());
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => match loaded {
            Ok(settings) => {
                print!("{}", settings.config.to_redacted_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: invalid configuration: {e}");
                ExitCode::from(2)
            }
        },
        Command::Serve => {
            let config = match loaded {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: invalid configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            init_tracing(cli.log_format);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let addr = settings.listen;
    let grace = settings.config.server.shutdown_grace.0;
    let shutdown = server::shutdown_signal();
    // Ticked by the serving runtime itself: no clock thread wakes the serving cores.
    let clock = paragon_layers::Clock::coarse_on(&tokio::runtime::Handle::current());
    let edge = server::build(settings, clock).await?;
    paragon_edge::reload::reload_on_hangup(edge.state.clone())
        .map_err(|e| anyhow::anyhow!("cannot install the SIGHUP handler: {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (server.listen): {e}"))?;
    tracing::info!(listen = %listener.local_addr()?, "paragon-edge serving");
    server::run(listener, edge.state, shutdown, grace).await?;
    tracing::info!("paragon-edge stopped");
    Ok(())
}
