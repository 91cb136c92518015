//! The edge as a process under attack: out of file descriptors, and holding hundreds of
//! unfinished huge heads. These run the real binary, so its limits and its memory are
//! its own (`ulimit -n`, `/proc/PID/status`).

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use common::*;
use paragon_sim::SimConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_paragon-edge");

fn config_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("paragon-edge-resources-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The edge binary on `config`, under `ulimit -n fds`; killed on drop.
async fn spawn_edge(config: &std::path::Path, fds: u32) -> (Child, String) {
    let port = free_port();
    let child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -n {fds} && exec {BIN} serve --config {}",
            config.display()
        ))
        .env("PARAGON_EDGE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the edge starts");
    let addr = format!("127.0.0.1:{port}");
    let c = client();
    wait_until("the edge serves", || {
        let url = format!("http://{addr}/readyz");
        let c = c.clone();
        async move { c.get(url).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    (child, addr)
}

fn status_field(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// One request on its own connection; the status line, or `None` when refused or reset.
async fn get_on(stream: &mut TcpStream, path: &str) -> Option<String> {
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    Some(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_breaker_stays_closed_and_clients_are_served_again() {
    let sim = start_sim(SimConfig::default()).await;
    let config = config_file(
        "fds.toml",
        &format!(
            "[upstream]\nbase_url = \"{}\"\n[server]\nidle_timeout = \"1500ms\"\n\
             [circuit_breaker]\nfailure_threshold = 2\n",
            sim.base_url()
        ),
    );
    let (child, addr) = spawn_edge(&config, 96).await;
    let pid = child.id().expect("running");

    // A worker connection first, then idle ones until the process has no descriptor left.
    let mut worker = TcpStream::connect(&addr).await.expect("connect");
    let mut idle = Vec::new();
    for _ in 0..150 {
        match TcpStream::connect(&addr).await {
            Ok(s) => idle.push(s),
            Err(_) => break,
        }
    }
    wait_until("the edge runs out of descriptors", || async {
        open_fds(pid) >= 95
    })
    .await;

    // Every upstream call now fails for want of a socket: 503, not ParagoN's fault.
    for i in 0..4 {
        let answer = get_on(&mut worker, &format!("/v1/users/fd{i}"))
            .await
            .expect("the worker connection answers");
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("local-resource"), "{answer}");
    }
    assert_eq!(sim.sim().served_total(), 0);

    // The idle connections time out; new clients are served, and ParagoN was never
    // declared down.
    drop(worker);
    let c = client();
    let base = format!("http://{addr}");
    wait_until("a new client is served", || {
        let c = c.clone();
        let url = format!("{base}/v1/users/after");
        async move { c.get(url).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    let status: serde_json::Value = c
        .get(format!("{base}/admin/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["circuit_breaker"]["state"], "closed", "{status}");
    assert!(status["connections"]["closed_idle_timeout"].as_u64() >= Some(1));
    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metric(
            &metrics,
            "paragon_edge_upstream_calls_total{outcome=\"local\"}"
        ) >= 4.0,
        "{metrics}"
    );
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_unfinished_400_kb_heads_keep_the_process_under_80_mb() {
    let sim = start_sim(SimConfig::default()).await;
    let config = config_file(
        "heads.toml",
        &format!("[upstream]\nbase_url = \"{}\"\n", sim.base_url()),
    );
    let (child, addr) = spawn_edge(&config, 4096).await;
    let pid = child.id().expect("running");
    let head_start = b"GET /v1/users/u1 HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec();
    let chunk = vec![b'a'; 16 * 1024];
    let mut tasks = Vec::new();
    for _ in 0..300 {
        let addr = addr.clone();
        let head_start = head_start.clone();
        let chunk = chunk.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(&addr).await else {
                return;
            };
            if s.write_all(&head_start).await.is_err() {
                return;
            }
            // 400 KB of one header, never finished; the edge may close first.
            for _ in 0..25 {
                if s.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            // Hold the connection until the edge closes it.
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut sink)).await;
        }));
    }
    for t in tasks {
        let _ = tokio::time::timeout(WAIT * 2, t).await;
    }
    let peak_kb = status_field(pid, "VmHWM:");
    assert!(
        peak_kb < 80 * 1024,
        "peak RSS {peak_kb} kB with 300 unfinished 400 KB heads"
    );
    // And the edge still serves.
    let r = client()
        .get(format!("http://{addr}/v1/users/u1"))
        .send()
        .await
        .expect("served");
    assert_eq!(r.status(), 200);
}

#[test]
fn credentials_in_upstream_base_url_never_reach_an_error_or_the_printed_config() {
    // Credentials in the URL are refused (the key goes in upstream.api_key), and every
    // form of the refusal hides the password.
    for url in [
        "http://user:pw-secret@127.0.0.1:99999/",
        "ftp://user:pw-secret@paragon.example/",
        "http://user:pw-secret@bad host/",
        "https://user:pw-secret@paragon.example/v1",
    ] {
        let config = config_file("creds.toml", &format!("[upstream]\nbase_url = \"{url}\"\n"));
        for command in ["check-config", "serve"] {
            let out = std::process::Command::new(BIN)
                .args([command, "--config"])
                .arg(&config)
                .stdin(Stdio::null())
                .output()
                .expect("the binary runs");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!out.status.success(), "{command} {url}: {text}");
            assert!(!text.contains("pw-secret"), "{command} {url}: {text}");
            assert!(text.contains("upstream.base_url"), "{text}");
        }
    }
}
