//! Added latency of the Redis-backed rate limiter per call, against the memory store.
//!
//! Starts its own `redis-server` on a free port of 127.0.0.1 (no persistence), builds
//! `RedisLink` + `RedisRateStore`, and times `RateStore::acquire` one call at a time
//! (median and p99 of each call), then the same for `MemoryStore`. Prints one JSON
//! object. Without `redis-server` on the PATH it says so and exits 0.
//!
//! ```text
//! redis_limiter [--calls 20000]
//! ```

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use paragon_layers::fleet::{LinkOptions, RedisLink, RedisRateStore};
use paragon_layers::rate_limit::{Acquire, MemoryStore, RateLimitConfig, RateStore};
use paragon_layers::Clock;

#[derive(Parser, Debug)]
struct Cli {
    /// Timed calls per store.
    #[arg(long, default_value_t = 20_000)]
    calls: usize,
}

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn time_store<S: RateStore>(
    store: &S,
    config: &RateLimitConfig,
    calls: usize,
) -> (Duration, Duration, usize) {
    let gcra = config.gcra();
    for _ in 0..calls / 10 {
        store.acquire(&gcra, Duration::ZERO).await;
    }
    let mut samples = Vec::with_capacity(calls);
    let mut admitted = 0;
    for _ in 0..calls {
        let start = Instant::now();
        let a = store.acquire(&gcra, Duration::ZERO).await;
        samples.push(start.elapsed());
        admitted += usize::from(matches!(a, Acquire::Admit { .. }));
    }
    samples.sort_unstable();
    (
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        admitted,
    )
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let port = free_port()?;
    let child = match Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => Redis(c),
        Err(e) => {
            println!("{{\"scenario\":\"redis_limiter\",\"skipped\":\"redis-server not available: {e}\"}}");
            return Ok(());
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let url = format!("redis://127.0.0.1:{port}");
        let config = RateLimitConfig::builder(1_000_000_000, Duration::from_secs(1)).build()?;
        let link = RedisLink::open(&url, LinkOptions { key_prefix: "bench:".into(), ..LinkOptions::default() })?;
        let mut up = false;
        for _ in 0..50 {
            if link.wait_up(Duration::from_millis(100)).await {
                up = true;
                break;
            }
        }
        anyhow::ensure!(up, "redis-server on port {port} did not come up");
        let redis_store = RedisRateStore::new(link, config, Clock::coarse());
        let (r50, r99, radm) = time_store(&redis_store, &config, cli.calls).await;
        let memory = MemoryStore::new(Clock::coarse());
        let (m50, m99, madm) = time_store(&memory, &config, cli.calls).await;
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!(
            "{{\"scenario\":\"redis_limiter\",\"calls\":{},\"redis_p50_us\":{:.2},\"redis_p99_us\":{:.2},\"memory_p50_us\":{:.3},\"memory_p99_us\":{:.3},\"added_p50_us\":{:.2},\"added_p99_us\":{:.2},\"redis_admitted\":{radm},\"memory_admitted\":{madm}}}",
            cli.calls, us(r50), us(r99), us(m50), us(m99), us(r50) - us(m50), us(r99) - us(m99)
        );
        drop(child);
        Ok(())
    })
}
