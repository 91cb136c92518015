//! Memory per cached user, measured on the real `paragon-edge` binary.
//!
//! For each `--size`, starts `paragon-edge` (the one next to this binary, or `--edge`)
//! with its embedded simulator and no rate limit, tells the simulator to send users of
//! that many bytes, warms the process with 1,000 requests, then fills the cache with
//! `--users` distinct ids over HTTP. It prints one JSON line per size: the resident
//! memory (VmRSS of `/proc/PID/status`) after the fill minus the warmed, nearly empty
//! process, divided by the entries added, beside the mean body size. The target of
//! issue 15 is at most the body plus 256 bytes per user.
//!
//! ```text
//! cargo build --release -p paragon-edge -p paragon-bench --bin cache_memory
//! target/release/cache_memory            # --size 200 --size 2048 --users 100000
//! ```
//!
//! With `--external-sim` the simulator runs as its own process (`paragon-sim`, built
//! beside this binary), so the edge's RSS holds only what the edge itself keeps, as in
//! production; the embedded simulator's own short-lived buffers otherwise share (and
//! fragment) the edge's heap.
//!
//! The simulator's users are padded up to `--size`; a size below a plain user's length
//! (about 280 bytes) gives plain users, so the figure printed is the mean body actually
//! sent.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Cli {
    /// The edge binary; default: `paragon-edge` beside this binary.
    #[arg(long)]
    edge: Option<PathBuf>,
    /// Distinct users cached per run.
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Body size asked of the simulator; one run per value.
    #[arg(long = "size", default_values_t = [200usize, 2048])]
    sizes: Vec<usize>,
    /// Requests in flight during the fill.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Run the simulator as its own process (`paragon-sim` beside this binary) instead
    /// of the edge's embedded one, so that the edge's RSS holds only what the edge keeps.
    #[arg(long)]
    external_sim: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let edge = match &cli.edge {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("paragon-edge"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for &size in &cli.sizes {
        let line = rt.block_on(measure(&edge, size, &cli))?;
        println!("{line}");
    }
    Ok(())
}

/// A running edge process (and the simulator's, when it runs apart), killed when dropped.
struct EdgeProcess {
    child: Child,
    addr: SocketAddr,
    sim: String,
    sim_child: Option<Child>,
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.child).chain(self.sim_child.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Starts the edge on a free port and waits until it serves. Its upstream is `sim`, or
/// else its embedded simulator, whose address it learns from the startup log.
fn start(
    edge: &Path,
    max_entries: u64,
    sim: Option<(Child, String)>,
) -> anyhow::Result<EdgeProcess> {
    let addr = free_port()?;
    let mut command = Command::new(edge);
    command
        .args(["--log-format", "json", "serve"])
        .env("RUST_LOG", "info")
        .env("PARAGON_EDGE__SERVER__LISTEN", addr.to_string())
        .env("PARAGON_EDGE__RATE_LIMIT__ENABLED", "false")
        .env("PARAGON_EDGE__CACHE__MAX_ENTRIES", max_entries.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let (sim_child, mut sim_url) = match sim {
        Some((child, url)) => {
            command.env("PARAGON_EDGE__UPSTREAM__BASE_URL", &url);
            (Some(child), url)
        }
        None => (None, String::new()),
    };
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", edge.display()))?;
    let stderr = child.stderr.take().context("stderr is piped")?;
    let (tx, rx) = mpsc::channel();
    // Reads the log to its end, so that the edge never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut process = EdgeProcess {
        child,
        addr,
        sim: String::new(),
        sim_child,
    };
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| anyhow!("the edge did not start within 30 s"))?;
        let Ok(log) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let fields = &log["fields"];
        if let Some(url) = fields["upstream"].as_str() {
            sim_url = url.to_owned();
        }
        if fields["message"] == "paragon-edge serving" {
            break;
        }
    }
    if sim_url.is_empty() {
        bail!("the edge did not log its embedded simulator's address");
    }
    process.sim = sim_url;
    // Discards the rest of the log.
    std::thread::spawn(move || for _ in rx {});
    Ok(process)
}

/// Starts `paragon-sim` (beside this binary) on a free port and waits until it answers.
fn start_sim() -> anyhow::Result<(Child, String)> {
    let exe = std::env::current_exe()?.with_file_name("paragon-sim");
    let addr = free_port()?;
    let child = Command::new(&exe)
        .args(["--listen", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    for _ in 0..300 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok((child, format!("http://{addr}")));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("paragon-sim did not listen on {addr} within 3 s")
}

/// VmRSS of `pid`, in bytes.
fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(kb * 1024)
}

/// Requests `/v1/users/{prefix}{n}` for every `n` in `0..count`; the bytes of the bodies
/// of the `200`s and the number of other answers.
async fn fill(
    client: &reqwest::Client,
    addr: SocketAddr,
    prefix: &str,
    count: u64,
    concurrency: usize,
) -> (u64, u64) {
    stream::iter(0..count)
        .map(|n| {
            let url = format!("http://{addr}/v1/users/{prefix}{n}");
            async move {
                match client.get(url).send().await {
                    Ok(r) if r.status() == 200 => r.bytes().await.ok().map(|b| b.len()),
                    _ => None,
                }
            }
        })
        .buffer_unordered(concurrency)
        .fold((0u64, 0u64), |(bytes, failed), got| async move {
            match got {
                Some(len) => (bytes + len as u64, failed),
                None => (bytes, failed + 1),
            }
        })
        .await
}

async fn cache_status(client: &reqwest::Client, addr: SocketAddr) -> anyhow::Result<Value> {
    let status: Value = client
        .get(format!("http://{addr}/admin/status"))
        .send()
        .await?
        .json()
        .await?;
    Ok(status["cache"].clone())
}

async fn measure(edge: &Path, size: usize, cli: &Cli) -> anyhow::Result<String> {
    const WARM: u64 = 1_000;
    let sim = if cli.external_sim {
        Some(start_sim()?)
    } else {
        None
    };
    let process = start(edge, 2 * (cli.users + WARM), sim)?;
    let pid = process.child.id();
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(cli.concurrency)
        .timeout(Duration::from_secs(30))
        .build()?;
    let faults = json!({ "oversized_rate": 1.0, "oversized_bytes": size });
    let put = client
        .put(format!("{}/_sim/faults", process.sim))
        .json(&faults)
        .send()
        .await?;
    if !put.status().is_success() {
        bail!("the simulator refused {faults}: {}", put.status());
    }
    // Warm: the runtime's threads, the connections and the allocator's arenas exist
    // before the empty process is measured.
    let (_, failed) = fill(&client, process.addr, "warm", WARM, cli.concurrency).await;
    if failed > 0 {
        bail!("{failed} warm-up requests failed");
    }
    let before = cache_status(&client, process.addr).await?;
    let rss_empty = rss(pid)?;
    let (body_bytes, failed) = fill(&client, process.addr, "u", cli.users, cli.concurrency).await;
    let rss_full = rss(pid)?;
    let after = cache_status(&client, process.addr).await?;
    let entries = after["entries"].as_u64().unwrap_or(0) - before["entries"].as_u64().unwrap_or(0);
    if entries == 0 {
        bail!("nothing was cached");
    }
    let mean_body = body_bytes as f64 / (cli.users - failed).max(1) as f64;
    let per_user = rss_full.saturating_sub(rss_empty) as f64 / entries as f64;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    Ok(json!({
        "scenario": "cache_memory",
        "size_asked": size,
        "simulator": if cli.external_sim { "external" } else { "embedded" },
        "users": cli.users,
        "failed": failed,
        "entries_added": entries,
        "cache_bytes": after.get("bytes"),
        "mean_body_bytes": mean_body.round(),
        "rss_empty_mib": (mib(rss_empty) * 10.0).round() / 10.0,
        "rss_full_mib": (mib(rss_full) * 10.0).round() / 10.0,
        "rss_per_user_bytes": per_user.round(),
        "overhead_per_user_bytes": (per_user - mean_body).round(),
        "ok": per_user <= mean_body + 256.0,
    })
    .to_string())
}
