//! Freshness without waiting and pacing, measured end to end over real sockets (an edge
//! in front of the simulator, both in this process), printed as one JSON object per
//! scenario:
//!
//! - `swr` — a hot user at about 1,000 requests a second crossing its TTL, with and
//!   without `stale_while_revalidate`: p99 latency of plain hits against the p99 in the
//!   second around each expiry, and the upstream calls;
//! - `revalidate` — 500 unchanged users refreshed after their TTL, with and without
//!   `revalidate`: share of 304s, and body bytes from ParagoN per refresh;
//! - `pacing` — 1.5 × ParagoN's advertised quota of uncached users, the simulator
//!   enforcing the quota: its 429s after the first answer, and the share of its quota used;
//! - `priority` — 2 × the budget, half of it prefetch: what each kind got.
//!
//! ```text
//! freshness swr|revalidate|pacing|priority [--seconds N]
//! ```

#![allow(clippy::disallowed_methods, reason = "benchmarks measure wall time")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use paragon_edge::config::{Config, Settings};
use paragon_layers::Clock;
use paragon_sim::{Faults, SimConfig, SimHandle, Simulator};
use parking_lot::Mutex;
use serde_json::json;

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// How long the load runs (pacing: default 60 s; priority: 20 s).
    #[arg(long, global = true)]
    seconds: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// A hot key crossing its TTL, with and without stale_while_revalidate.
    Swr,
    /// Refreshes of unchanged users, with and without revalidate.
    Revalidate,
    /// 1.5 × ParagoN's advertised quota.
    Pacing,
    /// 2 × the budget, half prefetch.
    Priority,
}

async fn sim(faults: Faults) -> SimHandle {
    Simulator::new(SimConfig {
        faults,
        ..SimConfig::default()
    })
    .spawn("127.0.0.1:0".parse().expect("address"))
    .await
    .expect("the simulator binds")
}

/// An edge configured by `toml` in front of `sim`; its base URL.
async fn edge(toml: &str, sim: &SimHandle) -> String {
    let mut config = Config::from_toml(toml).expect("a valid configuration");
    config.upstream.base_url = Some(sim.base_url().into());
    let settings = Settings::new(config).expect("a valid configuration");
    let edge = paragon_edge::server::build(settings, Clock::coarse())
        .await
        .expect("the edge builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(paragon_edge::server::run(
        listener,
        edge.state,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    base
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client")
}

fn p99(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * 0.99) as usize).min(v.len() - 1)]
}

/// A hot key at ~1,000 requests a second for `secs`, TTL 2 s, ParagoN answering in 50 ms.
async fn swr_run(window: &str, secs: u64) -> serde_json::Value {
    let sim = sim(Faults {
        latency: Some("50ms".into()),
        ..Faults::default()
    })
    .await;
    let base = edge(
        &format!(
            "[cache]\nttl = \"2s\"\nttl_jitter = 0.0\nstale_while_revalidate = \"{window}\"\n[rate_limit]\nmax_requests = 100000\nwindow = \"1s\""
        ),
        &sim,
    )
    .await;
    let client = client();
    let url = format!("{base}/v1/users/hot");
    client
        .get(&url)
        .send()
        .await
        .expect("warm")
        .bytes()
        .await
        .ok();
    let start = Instant::now();
    // (when, latency ms, x-cache)
    let samples = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    // 20 workers at 50 requests a second each.
    for w in 0..20u64 {
        let (client, url, samples) = (client.clone(), url.clone(), samples.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tokio::time::sleep(Duration::from_millis(w)).await;
            while start.elapsed() < Duration::from_secs(secs) {
                tick.tick().await;
                let t0 = Instant::now();
                let r = client.get(&url).send().await.expect("answer");
                let cache = r.headers()["x-cache"].to_str().unwrap_or("").to_owned();
                r.bytes().await.ok();
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                samples
                    .lock()
                    .push((t0.duration_since(start).as_secs_f64(), ms, cache));
            }
        }));
    }
    for t in tasks {
        t.await.ok();
    }
    let samples = std::mem::take(&mut *samples.lock());
    // The instants the entry expired: each answer that was not a hit marks one.
    let mut expiries: Vec<f64> = Vec::new();
    for (at, _, cache) in &samples {
        if cache != "HIT" && expiries.last().is_none_or(|last| at - last > 1.0) {
            expiries.push(*at);
        }
    }
    let near = |at: f64| expiries.iter().any(|e| (at - e).abs() <= 0.5);
    let hits: Vec<f64> = samples
        .iter()
        .filter(|(at, _, c)| c == "HIT" && !near(*at))
        .map(|s| s.1)
        .collect();
    let around: Vec<f64> = samples
        .iter()
        .filter(|(at, _, _)| near(*at))
        .map(|s| s.1)
        .collect();
    let (hit_p99, around_p99) = (p99(hits), p99(around));
    json!({
        "stale_while_revalidate": window,
        "requests": samples.len(),
        "rate_per_s": samples.len() as f64 / secs as f64,
        "expiries": expiries.len(),
        "upstream_calls": sim.sim().served("/users/hot"),
        "hit_p99_ms": hit_p99,
        "expiry_second_p99_ms": around_p99,
        "ratio": around_p99 / hit_p99,
    })
}

async fn revalidate_run(revalidate: bool) -> serde_json::Value {
    let sim = sim(Faults {
        etags: true,
        ..Faults::default()
    })
    .await;
    let base = edge(
        &format!(
            "[cache]\nttl = \"1s\"\nttl_jitter = 0.0\nrevalidate = {revalidate}\n[rate_limit]\nmax_requests = 100000\nwindow = \"1s\""
        ),
        &sim,
    )
    .await;
    let client = client();
    let n = 500;
    let body_len = paragon_sim::user_json("user-0").to_string().len();
    for i in 0..n {
        client
            .get(format!("{base}/v1/users/user-{i}"))
            .send()
            .await
            .expect("warm")
            .bytes()
            .await
            .ok();
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sim.sim().reset_stats();
    let mut body_bytes = 0;
    for i in 0..n {
        let r = client
            .get(format!("{base}/v1/users/user-{i}"))
            .send()
            .await
            .expect("refresh");
        let _ = r.bytes().await;
    }
    let stats = sim.sim().stats();
    let ok = stats.by_status.get(&200).copied().unwrap_or(0);
    let not_modified = stats.by_status.get(&304).copied().unwrap_or(0);
    body_bytes += ok as usize * body_len;
    json!({
        "revalidate": revalidate,
        "refreshes": stats.total,
        "answered_304": not_modified,
        "answered_200": ok,
        "share_304": not_modified as f64 / stats.total.max(1) as f64,
        "body_bytes_from_paragon_per_refresh": body_bytes as f64 / stats.total.max(1) as f64,
    })
}

async fn pacing_run(secs: u64) -> serde_json::Value {
    // ParagoN: 600 calls a minute, advertised on every answer and enforced.
    let quota = 600;
    let sim = sim(Faults {
        quota: Some(quota),
        quota_window: Some("60s".into()),
        ..Faults::default()
    })
    .await;
    let base = edge(
        "[rate_limit]\nmax_requests = 100000\nwindow = \"1s\"\nmax_pause = \"1s\"",
        &sim,
    )
    .await;
    let client = client();
    // 1.5 × the quota: 15 uncached users a second.
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / 15));
    let (mut edge_429, mut first_answer_429s) = (0u64, None);
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        let r = client
            .get(format!("{base}/v1/users/paced-{n}"))
            .send()
            .await
            .expect("answer");
        if r.status() == 429 {
            edge_429 += 1;
        }
        r.bytes().await.ok();
        if first_answer_429s.is_none() {
            first_answer_429s = Some(sim.sim().stats().by_status.get(&429).copied().unwrap_or(0));
        }
        n += 1;
    }
    let stats = sim.sim().stats();
    let paragon_429 =
        stats.by_status.get(&429).copied().unwrap_or(0) - first_answer_429s.unwrap_or(0);
    let accepted = stats.by_status.get(&200).copied().unwrap_or(0);
    // The quota in force over the run: 600 per started minute of it.
    let allowed = u64::from(quota) * secs.div_ceil(60);
    json!({
        "seconds": secs,
        "offered": n,
        "paragon_429_after_first_answer": paragon_429,
        "paragon_accepted": accepted,
        "quota_in_run": allowed,
        "share_of_quota_used": accepted as f64 / allowed as f64,
        "edge_429": edge_429,
    })
}

async fn priority_run(secs: u64) -> serde_json::Value {
    let sim = sim(Faults::default()).await;
    // 10 calls a second, burst 10, 20 % kept from background calls.
    let base = edge(
        "[rate_limit]\nmax_requests = 10\nwindow = \"1s\"\nbackground_reserve = 0.2",
        &sim,
    )
    .await;
    let client = client();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut got = [[0u64; 2]; 2]; // [interactive, prefetch] × [offered, admitted]
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        let prefetch = n % 2 == 1;
        let mut rb = client.get(format!("{base}/v1/users/prio-{n}"));
        if prefetch {
            rb = rb.header("sec-purpose", "prefetch");
        }
        let r = rb.send().await.expect("answer");
        let kind = usize::from(prefetch);
        got[kind][0] += 1;
        if r.status() == 200 {
            got[kind][1] += 1;
        }
        r.bytes().await.ok();
        n += 1;
    }
    let budget = 10 * secs + 10;
    json!({
        "seconds": secs,
        "budget_calls": budget,
        "interactive_offered": got[0][0],
        "interactive_admitted": got[0][1],
        "interactive_share_of_what_the_budget_allows_them": got[0][1] as f64 / got[0][0].min(budget) as f64,
        "prefetch_offered": got[1][0],
        "prefetch_admitted": got[1][1],
    })
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let out = match cli.scenario {
        Scenario::Swr => {
            let secs = cli.seconds.unwrap_or(7);
            json!([swr_run("0s", secs).await, swr_run("30s", secs).await])
        }
        Scenario::Revalidate => json!([revalidate_run(false).await, revalidate_run(true).await]),
        Scenario::Pacing => pacing_run(cli.seconds.unwrap_or(60)).await,
        Scenario::Priority => priority_run(cli.seconds.unwrap_or(20)).await,
    };
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}
