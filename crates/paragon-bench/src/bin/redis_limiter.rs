//! Added latency of the fleet's Redis stores per call: the rate limiter's `acquire` and a
//! shared-tier (L2) cache hit, against a standalone Redis, a TLS Redis and a 3-master
//! Redis Cluster.
//!
//! Starts its own servers on free ports of 127.0.0.1 (no persistence, `paragon-testkit`),
//! builds `RedisLink` + `RedisRateStore` + `RedisTier` (feature `redis`) for each mode, and
//! times calls one at a time (median and p99 of each call): `RateStore::acquire`, then
//! `SharedTier::lookup` of an entry that is there. The memory store's `acquire` is timed
//! too, as the figure to subtract. Prints one JSON object per mode. Without `redis-server`
//! on the PATH it says so and exits 0.
//!
//! ```text
//! redis_limiter [--calls 20000] [--mode standalone|tls|cluster|all]
//! ```

#![allow(clippy::disallowed_methods, reason = "benchmarks measure wall time")]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use paragon_client::ParagonCodec;
use paragon_layers::cache::{CachedValue, Claim, SharedTier, TierEntry};
use paragon_layers::fleet::{LinkOptions, RedisLink, RedisRateStore, RedisTarget, RedisTier};
use paragon_layers::rate_limit::{Acquire, MemoryStore, RateLimitConfig, RateStore};
use paragon_layers::Clock;
use paragon_testkit::{RedisCluster, RedisServer, ServerOptions, TempDir, TlsFiles};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Standalone,
    Tls,
    Cluster,
    All,
}

#[derive(Parser, Debug)]
struct Cli {
    /// Timed calls per store.
    #[arg(long, default_value_t = 20_000)]
    calls: usize,
    /// Which deployment of Redis to time.
    #[arg(long, value_enum, default_value_t = Mode::All)]
    mode: Mode,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Median and p99 of `calls` sequential runs of `call` (after a tenth as warm-up).
async fn time<F, Fut>(calls: usize, mut call: F) -> (Duration, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..calls / 10 {
        call().await;
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        let ok = call().await;
        samples.push(start.elapsed());
        assert!(ok, "a timed call did not do what it should");
    }
    samples.sort_unstable();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

/// The servers of one mode, kept alive while it is timed.
enum Servers {
    Standalone(RedisServer),
    Tls {
        server: RedisServer,
        ca: Vec<u8>,
        /// Holds the certificates until the server stops.
        _dir: TempDir,
    },
    Cluster(RedisCluster),
}

fn start(mode: Mode) -> Servers {
    match mode {
        Mode::Standalone | Mode::All => Servers::Standalone(RedisServer::start()),
        Mode::Tls => {
            let dir = TempDir::new("bench-tls");
            let tls = TlsFiles::generate(dir.path());
            let ca = std::fs::read(&tls.ca_cert).expect("the CA was just written");
            let server = RedisServer::start_with(ServerOptions {
                tls: Some((&tls).into()),
                ..ServerOptions::default()
            });
            Servers::Tls {
                server,
                ca,
                _dir: dir,
            }
        }
        Mode::Cluster => Servers::Cluster(RedisCluster::start(3, 0)),
    }
}

impl Servers {
    fn target(&self) -> (RedisTarget, Option<Vec<u8>>) {
        match self {
            Servers::Standalone(s) => (RedisTarget::Standalone { url: s.url() }, None),
            Servers::Tls { server, ca, .. } => (
                RedisTarget::Standalone { url: server.url() },
                Some(ca.clone()),
            ),
            Servers::Cluster(c) => (RedisTarget::Cluster { nodes: c.urls() }, None),
        }
    }
}

async fn run(mode: Mode, calls: usize) -> anyhow::Result<String> {
    let servers = start(mode);
    let (target, tls_ca) = servers.target();
    let options = LinkOptions {
        key_prefix: "bench:".into(),
        tls_ca,
        ..LinkOptions::default()
    };
    let link = RedisLink::open(&target, options)?;
    anyhow::ensure!(
        link.wait_up(Duration::from_secs(10)).await,
        "Redis ({mode:?}) did not come up: {:?}",
        link.reason()
    );
    let config = RateLimitConfig::builder(1_000_000_000, Duration::from_secs(1)).build()?;
    let gcra = config.gcra();
    let store = RedisRateStore::new(link.clone(), config, Clock::coarse());
    let (l50, l99) = time(calls, || async {
        matches!(
            store.acquire(&gcra, Duration::ZERO).await,
            Acquire::Admit { .. }
        )
    })
    .await;
    let memory = MemoryStore::new(Clock::coarse());
    let (m50, m99) = time(calls, || async {
        matches!(
            memory.acquire(&gcra, Duration::ZERO).await,
            Acquire::Admit { .. }
        )
    })
    .await;

    // One entry in the shared tier, then lookups of it.
    let tier = Arc::new(RedisTier::new(link.clone(), ParagonCodec));
    let key = paragon_bench::request("bench-user").endpoint;
    let Claim::Leader(token) = tier.claim(&key, Duration::from_secs(5)).await else {
        anyhow::bail!("could not claim the bench entry");
    };
    let value = CachedValue::Value(paragon_bench::response("bench-user"));
    let ttl = Duration::from_secs(3600);
    tier.publish(&key, token, &value, ttl, Duration::ZERO).await;
    let (h50, h99) = time(calls, || async {
        matches!(tier.lookup(&key).await, TierEntry::Fresh { .. })
    })
    .await;
    drop(servers);

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Ok(format!(
        "{{\"scenario\":\"redis_limiter\",\"mode\":\"{}\",\"calls\":{calls},\"limiter_p50_us\":{:.2},\"limiter_p99_us\":{:.2},\"memory_p50_us\":{:.3},\"memory_p99_us\":{:.3},\"added_p50_us\":{:.2},\"added_p99_us\":{:.2},\"l2_hit_p50_us\":{:.2},\"l2_hit_p99_us\":{:.2}}}",
        format!("{mode:?}").to_lowercase(),
        us(l50),
        us(l99),
        us(m50),
        us(m99),
        us(l50) - us(m50),
        us(l99) - us(m99),
        us(h50),
        us(h99),
    ))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Err(e) = Command::new("redis-server").arg("--version").output() {
        println!(
            "{{\"scenario\":\"redis_limiter\",\"skipped\":\"redis-server not available: {e}\"}}"
        );
        return Ok(());
    }
    let modes = match cli.mode {
        Mode::All => vec![Mode::Standalone, Mode::Tls, Mode::Cluster],
        one => vec![one],
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for mode in modes {
        println!("{}", rt.block_on(run(mode, cli.calls))?);
    }
    Ok(())
}
