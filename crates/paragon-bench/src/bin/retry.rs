//! Retries, hedging and deadlines under load, over real sockets: a load of frontend
//! requests over HTTP to the edge, the edge over HTTP to the simulator. Prints one JSON
//! object per run.
//!
//! - `outage` — ParagoN answers 503 to everything; `--rate` requests a second for
//!   `--secs` seconds, each for a new id, with retries on (3 attempts): upstream attempts
//!   against (1 + `budget_ratio`) × first attempts + `budget_min_per_sec` × seconds, with
//!   the breaker off (the budget alone), then with the breaker on (it opens as without
//!   retries);
//! - `hang` — ParagoN never answers; `upstream.deadline = "1s"`: percentiles of the time
//!   to answer;
//! - `tail` — 5 % of ParagoN's calls take 2 s more: percentiles of the time to answer
//!   without hedging, then with `hedge_after` just past the fast calls' p95, and the
//!   extra upstream calls hedging cost.
//!
//! ```text
//! retry outage|hang|tail [--rate N] [--secs N]
//! ```

#![allow(clippy::disallowed_methods, reason = "benchmarks measure wall time")]

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use paragon_edge::config::{Config, Settings};
use paragon_layers::Clock;
use paragon_sim::{Faults, SimConfig, SimHandle, Simulator};
use tokio::net::TcpListener;

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Frontend requests per second offered.
    #[arg(long, global = true)]
    rate: Option<u64>,
    /// Seconds of load.
    #[arg(long, global = true)]
    secs: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// ParagoN at 100 % 503.
    Outage,
    /// ParagoN never answers; deadline 1 s.
    Hang,
    /// 5 % of ParagoN's calls 2 s slower; with and without hedging.
    Tail,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.scenario {
        Scenario::Outage => rt.block_on(outage(cli.rate.unwrap_or(500), cli.secs.unwrap_or(60))),
        Scenario::Hang => rt.block_on(hang(cli.rate.unwrap_or(200), cli.secs.unwrap_or(10))),
        Scenario::Tail => rt.block_on(tail(cli.rate.unwrap_or(200), cli.secs.unwrap_or(20))),
    }
}

/// An edge serving on a socket of 127.0.0.1 in front of a simulator with `faults`.
struct Running {
    base: String,
    _edge: paragon_edge::server::Edge,
    sim: SimHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn serve(faults: Faults, toml: &str) -> anyhow::Result<Running> {
    let sim = Simulator::new(SimConfig {
        faults,
        ..SimConfig::default()
    })
    .spawn(([127, 0, 0, 1], 0).into())
    .await?;
    let mut config = Config::from_toml(toml)?;
    config.upstream.base_url = Some(sim.base_url().into());
    let clock = Clock::coarse_on(&tokio::runtime::Handle::current());
    let edge = paragon_edge::server::build(Settings::new(config)?, clock).await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(paragon_edge::server::run(
        listener,
        edge.state.clone(),
        async move {
            let _ = rx.await;
        },
        Duration::from_secs(1),
    ));
    Ok(Running {
        base,
        _edge: edge,
        sim,
        stop: Some(tx),
    })
}

impl Running {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.sim.shutdown().await;
    }

    async fn status(&self) -> anyhow::Result<serde_json::Value> {
        Ok(reqwest::get(format!("{}/admin/status", self.base))
            .await?
            .json()
            .await?)
    }
}

/// Offers `rate` requests a second for `secs` seconds, each for a new id; the status and
/// time to answer of each.
async fn load(base: &str, prefix: &str, rate: u64, secs: u64) -> Vec<(u16, Duration)> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(4096)
        .build()
        .expect("client");
    let total = rate * secs;
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        tick.tick().await;
        let c = client.clone();
        let url = format!("{base}/v1/users/{prefix}{n}");
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let status = match c.get(&url).send().await {
                Ok(r) => {
                    let s = r.status().as_u16();
                    let _ = r.bytes().await;
                    s
                }
                Err(_) => 0,
            };
            (status, t.elapsed())
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(x) = t.await {
            out.push(x);
        }
    }
    out
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn latencies(answers: &[(u16, Duration)]) -> Vec<Duration> {
    let mut d: Vec<Duration> = answers.iter().map(|(_, t)| *t).collect();
    d.sort_unstable();
    d
}

fn count(answers: &[(u16, Duration)], status: u16) -> usize {
    answers.iter().filter(|(s, _)| *s == status).count()
}

async fn outage(rate: u64, secs: u64) -> anyhow::Result<()> {
    let faults = || Faults {
        outage: Some("1h".into()),
        ..Faults::default()
    };
    let retry = "[retry]\nenabled = true\nmax_attempts = 3\nbackoff = \"50ms\"\nbudget_ratio = 0.1\nbudget_min_per_sec = 1\n[rate_limit]\nenabled = false\n[cache]\nenabled = false\n[upstream]\nmax_concurrency = 4096\n";
    for (breaker, toml) in [
        (
            "off",
            format!("{retry}[circuit_breaker]\nfailure_threshold = 0\n"),
        ),
        (
            "on",
            format!("{retry}[circuit_breaker]\nfailure_threshold = 5\nopen_for = \"60s\"\n"),
        ),
    ] {
        let run = serve(faults(), &toml).await?;
        let started = Instant::now();
        let answers = load(&run.base, "o", rate, secs).await;
        let seconds = started.elapsed().as_secs_f64();
        let status = run.status().await?;
        let firsts = status["retry"]["first_attempts"].as_u64().unwrap_or(0);
        let attempts = run.sim.sim().served_total();
        let bound = 1.1 * firsts as f64 + 1.0 * seconds.ceil();
        println!(
            "{{\"scenario\":\"outage\",\"breaker\":\"{breaker}\",\"offered_per_s\":{rate},\"seconds\":{seconds:.1},\"requests\":{},\"first_attempts\":{firsts},\"retries\":{},\"budget_exhausted\":{},\"upstream_attempts\":{attempts},\"bound\":{bound:.0},\"answers_502\":{},\"answers_503\":{},\"breaker_state\":{},\"ok\":{}}}",
            answers.len(),
            status["retry"]["retries"],
            status["retry"]["budget_exhausted"],
            count(&answers, 502),
            count(&answers, 503),
            status["circuit_breaker"]["state"],
            attempts as f64 <= bound
        );
        run.stop().await;
    }
    Ok(())
}

async fn hang(rate: u64, secs: u64) -> anyhow::Result<()> {
    let faults = Faults {
        latency: Some("1h".into()),
        ..Faults::default()
    };
    // The breaker off: every request meets the hanging upstream, none is refused fast.
    let toml = "[upstream]\ndeadline = \"1s\"\nmax_concurrency = 4096\n[retry]\nenabled = true\n[rate_limit]\nenabled = false\n[cache]\nenabled = false\n[circuit_breaker]\nfailure_threshold = 0\n";
    let run = serve(faults, toml).await?;
    let answers = load(&run.base, "h", rate, secs).await;
    let d = latencies(&answers);
    let p999 = percentile(&d, 0.999);
    println!(
        "{{\"scenario\":\"hang\",\"deadline_ms\":1000,\"offered_per_s\":{rate},\"requests\":{},\"answers_504\":{},\"p50_ms\":{:.1},\"p99_ms\":{:.1},\"p99_9_ms\":{p999:.1},\"max_ms\":{:.1},\"upstream_attempts\":{},\"ok\":{}}}",
        d.len(),
        count(&answers, 504),
        percentile(&d, 0.5),
        percentile(&d, 0.99),
        percentile(&d, 1.0),
        run.sim.sim().served_total(),
        p999 <= 1020.0
    );
    run.stop().await;
    Ok(())
}

async fn tail(rate: u64, secs: u64) -> anyhow::Result<()> {
    let faults = || Faults {
        latency: Some("20ms".into()),
        slow_rate: 0.05,
        slow_latency: Some("2s".into()),
        ..Faults::default()
    };
    let base = "[upstream]\nmax_concurrency = 4096\n[rate_limit]\nenabled = false\n[cache]\nenabled = false\n[retry]\nenabled = true\nmax_attempts = 2\n";
    for hedge in ["0s", "30ms"] {
        let run = serve(faults(), &format!("{base}hedge_after = \"{hedge}\"\n")).await?;
        let answers = load(&run.base, "t", rate, secs).await;
        let d = latencies(&answers);
        let status = run.status().await?;
        let firsts = status["retry"]["first_attempts"].as_u64().unwrap_or(0);
        let upstream = run.sim.sim().served_total();
        let extra = (upstream as f64 - firsts as f64) / firsts.max(1) as f64;
        let (p50, p99) = (percentile(&d, 0.5), percentile(&d, 0.99));
        println!(
            "{{\"scenario\":\"tail\",\"hedge_after\":\"{hedge}\",\"offered_per_s\":{rate},\"requests\":{},\"answers_200\":{},\"p50_ms\":{p50:.1},\"p95_ms\":{:.1},\"p99_ms\":{p99:.1},\"p99_9_ms\":{:.1},\"first_attempts\":{firsts},\"hedges\":{},\"upstream_calls\":{upstream},\"extra_upstream_share\":{extra:.4},\"p99_over_p50\":{:.2},\"ok\":{}}}",
            d.len(),
            count(&answers, 200),
            percentile(&d, 0.95),
            percentile(&d, 0.999),
            status["retry"]["hedges"],
            p99 / p50.max(f64::MIN_POSITIVE),
            hedge == "0s" || (p99 <= 3.0 * p50 && extra <= 0.08)
        );
        run.stop().await;
    }
    Ok(())
}
