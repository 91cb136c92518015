//! Behaviour under stress, printed as one JSON object per scenario:
//!
//! - `overload` — 10× the rate budget of cold ids for a few seconds through the edge's
//!   stack (real HTTP transport to the simulator): upstream calls vs budget + burst;
//! - `stampede` — 500 concurrent requests for each of several cold keys (simulator
//!   latency 50 ms): upstream calls per key;
//! - `churn` — 1,000,000 distinct ids through a cache of `max_entries` 100,000: resident
//!   memory after, against the size of 100,000 cached users.
//!
//! ```text
//! stress overload|stampede|churn [--quick]
//! ```

#![allow(clippy::disallowed_methods, reason = "benchmarks measure wall time")]

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures_util::stream::{self, StreamExt};
use paragon_client::{Endpoint, Error, ParagonRequest, ParagonResponse, Resource, User, UserId};
use paragon_edge::config::{Config, Settings};
use paragon_layers::cache::{CacheConfig, CacheLayer};
use paragon_layers::Clock;
use paragon_sim::{Faults, SimConfig, Simulator};
use tower::{Layer, ServiceExt};

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// Shorter runs (for `bench/run.sh --quick`).
    #[arg(long, global = true)]
    quick: bool,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// 10× overload of the rate budget.
    Overload,
    /// Cold-key stampedes of 500 requests.
    Stampede,
    /// RSS after churning 1,000,000 ids through 100,000 entries.
    Churn,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.scenario {
        Scenario::Overload => rt.block_on(overload(cli.quick)),
        Scenario::Stampede => rt.block_on(stampede(cli.quick)),
        Scenario::Churn => rt.block_on(churn(cli.quick)),
    }
}

async fn edge_over(
    sim_faults: Faults,
    toml: &str,
) -> anyhow::Result<(paragon_edge::server::Edge, paragon_sim::SimHandle)> {
    let sim = Simulator::new(SimConfig {
        faults: sim_faults,
        ..SimConfig::default()
    })
    .spawn(([127, 0, 0, 1], 0).into())
    .await?;
    let mut config = Config::from_toml(toml)?;
    config.upstream.base_url = Some(sim.base_url().into());
    // The clock paragon-edge serves with: ticked by this runtime.
    let clock = Clock::coarse_on(&tokio::runtime::Handle::current());
    let edge = paragon_edge::server::build(Settings::new(config)?, clock).await?;
    Ok((edge, sim))
}

fn id(s: &str) -> UserId {
    UserId::parse(s).expect("valid id")
}

async fn overload(quick: bool) -> anyhow::Result<()> {
    let (max_requests, window_s, burst) = (100u32, 1u64, 20u32);
    let secs = if quick { 3 } else { 6 };
    let offered_per_s = u64::from(max_requests) * 10 / window_s;
    let toml = format!(
        "[rate_limit]\nmax_requests = {max_requests}\nwindow = \"{window_s}s\"\nburst = {burst}\n"
    );
    let (edge, sim) = edge_over(Faults::default(), &toml).await?;
    let client = edge.state.stack().client.clone();
    let total = offered_per_s * secs;
    let gap = Duration::from_nanos(1_000_000_000 / offered_per_s);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    let mut tick = tokio::time::interval(gap);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for n in 0..total {
        tick.tick().await;
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.fetch_user(&id(&format!("ov{n}"))).await
        }));
    }
    let mut ok = 0u64;
    let mut limited = 0u64;
    for t in tasks {
        match t.await? {
            Ok(_) => ok += 1,
            Err(Error::RateLimited(_)) => limited += 1,
            Err(_) => {}
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let upstream = sim.sim().served_total();
    // GCRA: in any span of t seconds at most rate·t + burst calls conform.
    let allowed =
        (f64::from(max_requests) / window_s as f64 * elapsed).floor() as u64 + u64::from(burst);
    println!(
        "{{\"scenario\":\"overload\",\"budget_per_s\":{},\"burst\":{burst},\"offered\":{total},\"seconds\":{elapsed:.3},\"admitted\":{ok},\"rejected\":{limited},\"upstream_calls\":{upstream},\"budget_plus_burst\":{allowed},\"ok\":{}}}",
        max_requests as f64 / window_s as f64,
        upstream <= allowed
    );
    sim.shutdown().await;
    Ok(())
}

async fn stampede(quick: bool) -> anyhow::Result<()> {
    let keys = if quick { 5 } else { 20 };
    let faults = Faults {
        latency: Some("50ms".into()),
        ..Faults::default()
    };
    let toml = "[rate_limit]\nmax_requests = 100000\nwindow = \"1s\"\n[upstream]\nmax_concurrency = 1024\n";
    let (edge, sim) = edge_over(faults, toml).await?;
    let client = edge.state.stack().client.clone();
    let mut per_key = Vec::new();
    let mut failed = 0u64;
    for k in 0..keys {
        let key = format!("cold{k}");
        let uid = id(&key);
        let results: Vec<_> = stream::iter(0..500)
            .map(|_| {
                let c = client.clone();
                let uid = uid.clone();
                tokio::spawn(async move { c.fetch_user(&uid).await.is_ok() })
            })
            .buffer_unordered(500)
            .collect()
            .await;
        failed += results.iter().filter(|r| !matches!(r, Ok(true))).count() as u64;
        per_key.push(sim.sim().served(&format!("/users/{key}")));
    }
    let max = per_key.iter().copied().max().unwrap_or(0);
    let min = per_key.iter().copied().min().unwrap_or(0);
    println!(
        "{{\"scenario\":\"stampede\",\"keys\":{keys},\"requests_per_key\":500,\"upstream_calls_per_key_min\":{min},\"upstream_calls_per_key_max\":{max},\"failed_requests\":{failed},\"ok\":{}}}",
        min == 1 && max == 1 && failed == 0
    );
    sim.shutdown().await;
    Ok(())
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = status
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

async fn churn(quick: bool) -> anyhow::Result<()> {
    let max_entries = 100_000usize;
    let total: u64 = if quick { 300_000 } else { 1_000_000 };
    // The upstream: the simulator's document for the id, decoded as the real client does.
    let upstream = tower::service_fn(|req: ParagonRequest| async move {
        let Endpoint::GetUser(uid) = req.endpoint else {
            return Err(Error::Internal("unexpected request".into()));
        };
        let raw = serde_json::to_vec(&paragon_sim::user_json(uid.as_str()))
            .map_err(|e| Error::Internal(e.to_string()))?;
        let user = User::decode(&uid, raw.into()).map_err(|e| Error::Internal(e.to_string()))?;
        Ok::<_, Error>(ParagonResponse::new(Resource::User(user)))
    });
    let cache = CacheLayer::<ParagonRequest, ParagonResponse, Error>::new(
        CacheConfig::builder(Duration::from_secs(300))
            .max_entries(max_entries)
            .build()
            .unwrap(),
        Clock::coarse(),
    );
    let handle = cache.handle();
    let svc = cache.layer(upstream);
    let drive = |from: u64, to: u64| {
        let svc = svc.clone();
        async move {
            stream::iter(from..to)
                .map(|n| {
                    let s = svc.clone();
                    async move {
                        s.oneshot(ParagonRequest::get_user(id(&format!("c{n}"))))
                            .await
                            .is_ok()
                    }
                })
                .buffer_unordered(64)
                .fold(0u64, |acc, ok| async move { acc + u64::from(!ok) })
                .await
        }
    };
    let base = rss_bytes();
    let mut failed = drive(0, max_entries as u64).await;
    let filled = rss_bytes();
    let users_size = filled.saturating_sub(base);
    let start = Instant::now();
    failed += drive(max_entries as u64, total).await;
    let secs = start.elapsed().as_secs_f64();
    let after = rss_bytes();
    let entries = handle.stats().entries;
    let limit = 2 * users_size + 32 * 1024 * 1024;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "{{\"scenario\":\"churn\",\"ids\":{total},\"max_entries\":{max_entries},\"entries_after\":{entries},\"failed\":{failed},\"rss_base_mib\":{:.1},\"rss_after_100k_mib\":{:.1},\"size_of_100k_users_mib\":{:.1},\"rss_after_churn_mib\":{:.1},\"limit_mib\":{:.1},\"churn_seconds\":{secs:.2},\"ok\":{}}}",
        mib(base), mib(filled), mib(users_size), mib(after), mib(limit),
        after <= limit && entries <= max_entries
    );
    Ok(())
}
