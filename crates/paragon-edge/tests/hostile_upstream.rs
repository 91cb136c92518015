//! A hostile upstream (SECURITY.md §2): bodies that trickle forever, are too large
//! (refused while reading, memory flat), are not JSON, not an object, carry another
//! user's id, stop mid-body; connections refused or dropped; and more. Each maps to its
//! CONTRACT status, counts for the breaker where the contract says so, and is never
//! cached: once the upstream behaves, every id is fetched afresh (`x-cache: MISS`).

#![allow(
    clippy::disallowed_methods,
    reason = "tests time real sockets and servers"
)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    assert_problem, closed_port, metric, start_edge_at, start_edge_with, start_sim, TestEdge,
};
use paragon_sim::{Faults, SimConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOML: &str = "[upstream]\ntimeout = \"1s\"\nmax_response_bytes = 65536\n\
                    [circuit_breaker]\nfailure_threshold = 1000\n";

async fn breaker_counts(edge: &TestEdge) -> (u64, u64) {
    let s = edge.status().await;
    let b = &s["circuit_breaker"];
    (
        b["failures"].as_u64().expect("failures"),
        b["successes"].as_u64().expect("successes"),
    )
}

async fn cache_entries(edge: &TestEdge) -> u64 {
    edge.status().await["cache"]["entries"]
        .as_u64()
        .expect("entries")
}

/// Fetches `id` expecting the problem `status`; checks that the breaker counted it as a
/// failure (or not) and that nothing was cached.
async fn expect_failure(edge: &TestEdge, id: &str, status: u16, counts: bool, what: &str) {
    let (failures, _) = breaker_counts(edge).await;
    let entries = cache_entries(edge).await;
    let started = Instant::now();
    let r = edge.get(&format!("/v1/users/{id}")).await;
    assert_eq!(r.status, status, "{what}: {}", r.text());
    assert_problem(&r, status);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{what}: answered only after {:?}",
        started.elapsed()
    );
    let (after, _) = breaker_counts(edge).await;
    assert_eq!(
        after - failures,
        u64::from(counts),
        "{what}: breaker failures {failures} -> {after}"
    );
    assert_eq!(
        cache_entries(edge).await,
        entries,
        "{what}: something was cached"
    );
}

/// After the upstream recovered: a fresh 200, fetched upstream (never cached).
async fn expect_fresh(edge: &TestEdge, id: &str) {
    let r = edge.get(&format!("/v1/users/{id}")).await;
    assert_eq!(r.status, 200, "{id}: {}", r.text());
    assert_eq!(
        r.header("x-cache").as_deref(),
        Some("MISS"),
        "{id} was cached"
    );
    assert_eq!(r.json(), paragon_sim::user_json(id), "{id}");
}

fn faults(f: impl FnOnce(&mut Faults)) -> Faults {
    let mut faults = Faults::default();
    f(&mut faults);
    faults
}

#[tokio::test]
async fn simulated_faults_map_to_the_contract_and_are_never_cached() {
    let edge = start_edge_with(TOML, SimConfig::default()).await;
    let sim = edge.sim.sim().clone();
    let cases: Vec<(&str, Faults, u16, &str)> = vec![
        (
            "trickle",
            faults(|f| f.trickle_rate = 1.0),
            504,
            "a body that trickles forever",
        ),
        (
            "oversized",
            faults(|f| f.oversized_rate = 1.0),
            502,
            "a body larger than max_response_bytes (announced)",
        ),
        (
            "malformed",
            faults(|f| f.malformed_rate = 1.0),
            502,
            "a body that is not JSON",
        ),
        (
            "notobject",
            faults(|f| f.not_object_rate = 1.0),
            502,
            "a JSON array, not an object",
        ),
        (
            "wrongid",
            faults(|f| f.wrong_id_rate = 1.0),
            502,
            "a 200 with another user's id",
        ),
        (
            "reset",
            faults(|f| f.reset_rate = 1.0),
            502,
            "the connection reset mid-body",
        ),
        (
            "dropped",
            faults(|f| f.drop_rate = 1.0),
            502,
            "the connection closed without an answer",
        ),
        ("error", faults(|f| f.error_rate = 1.0), 502, "a 500"),
        (
            "outage",
            faults(|f| f.outage = Some("1h".into())),
            502,
            "a 503 outage",
        ),
    ];
    for (id, f, status, what) in &cases {
        sim.set_faults(f.clone()).expect("valid faults");
        // A body for another id is not counted: clients choose the ids.
        let counts = *id != "wrongid";
        expect_failure(&edge, id, *status, counts, what).await;
    }
    let m = edge.metrics().await;
    for (outcome, n) in [
        ("timeout", 1.0),
        ("body_too_large", 1.0),
        ("malformed", 3.0),
        ("transport", 2.0),
        ("upstream_status", 2.0),
    ] {
        let got = metric(
            &m,
            &format!("paragon_edge_upstream_calls_total{{outcome=\"{outcome}\"}}"),
        );
        assert_eq!(got, n, "{outcome}\n{m}");
    }

    // ParagoN recovers: every id is fetched afresh, nothing bad was cached.
    sim.set_faults(Faults::default()).expect("valid faults");
    for (id, ..) in &cases {
        expect_fresh(&edge, id).await;
    }

    // ParagoN's 429 with an absurd Retry-After: passed on, capped, not a breaker
    // failure, not cached.
    sim.set_faults(faults(|f| f.always_429 = Some(1_000_000_000)))
        .expect("valid faults");
    let entries = cache_entries(&edge).await;
    let (failures, _) = breaker_counts(&edge).await;
    let r = edge.get("/v1/users/throttled").await;
    assert_problem(&r, 429);
    // The default rate_limit.max_pause (15 minutes) caps both the pause and the answer.
    assert_eq!(r.retry_after(), 900);
    assert_eq!(cache_entries(&edge).await, entries);
    assert_eq!(breaker_counts(&edge).await.0, failures);
}

/// Behaviours of [`Hostile`], chosen by the id's prefix.
async fn hostile_answer(mut stream: TcpStream, id: String, state: Arc<HostileState>) {
    let user = paragon_sim::user_json(&id).to_string();
    if state.healthy.load(Ordering::SeqCst) {
        let _ = stream
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{user}",
                    user.len()
                )
                .as_bytes(),
            )
            .await;
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    if id.starts_with("endless") {
        // A chunked body with no announced length that never ends.
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = format!("10000\r\n{}\r\n", "x".repeat(0x10000));
        while Instant::now() < deadline {
            match stream.write_all(chunk.as_bytes()).await {
                Ok(()) => {
                    state.endless_bytes.fetch_add(0x10000, Ordering::SeqCst);
                }
                Err(_) => break,
            }
        }
    } else if id.starts_with("nested") {
        let body = "[".repeat(200_000);
        let _ = stream
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
    } else if id.starts_with("numid") {
        let body = r#"{"id":7,"name":"x"}"#;
        let _ = stream
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
    } else if id.starts_with("redirect") {
        let _ = stream
            .write_all(
                format!(
                    "HTTP/1.1 302 Found\r\nLocation: http://{}/users/{id}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    state.elsewhere
                )
                .as_bytes(),
            )
            .await;
    } else if id.starts_with("garbage") {
        let _ = stream
            .write_all(b"SSH-2.0-OpenSSH_9.6\r\n\x00\xff\xfe garbage\r\n\r\n")
            .await;
    } else if id.starts_with("slowheaders") {
        // A status line, then header bytes one at a time, never finishing the head.
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            .await
            .is_err()
        {
            return;
        }
        while Instant::now() < deadline {
            if stream.write_all(b"a").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    } else if id.starts_with("hugeheader") {
        let _ = stream
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nX-Huge: {}\r\nContent-Length: 2\r\n\r\n{{}}",
                    "h".repeat(1 << 20)
                )
                .as_bytes(),
            )
            .await;
    } else if id.starts_with("lying") {
        // Announces a small body, sends far more: only the announced bytes count.
        let _ = stream
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{user}{}",
                    "y".repeat(100_000)
                )
                .as_bytes(),
            )
            .await;
    }
}

struct HostileState {
    healthy: AtomicBool,
    endless_bytes: AtomicU64,
    elsewhere: std::net::SocketAddr,
    requests: parking_lot::Mutex<Vec<String>>,
}

/// A raw TCP upstream that misbehaves in ways the simulator does not.
async fn start_hostile(elsewhere: std::net::SocketAddr) -> (String, Arc<HostileState>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = Arc::new(HostileState {
        healthy: AtomicBool::new(false),
        endless_bytes: AtomicU64::new(0),
        elsewhere,
        requests: parking_lot::Mutex::new(Vec::new()),
    });
    let s = state.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                s.requests.lock().push(line.clone());
                let id = line
                    .split(' ')
                    .nth(1)
                    .and_then(|t| t.strip_prefix("/users/"))
                    .unwrap_or("")
                    .to_owned();
                hostile_answer(stream, id, s).await;
            });
        }
    });
    (format!("http://{addr}"), state)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn raw_hostile_upstream_maps_to_the_contract_and_is_never_cached() {
    // The redirect target: a simulator that must never be asked anything.
    let elsewhere = start_sim(SimConfig::default()).await;
    let (base_url, hostile) = start_hostile(elsewhere.addr()).await;
    let edge = start_edge_at(TOML, start_sim(SimConfig::default()).await, base_url).await;

    // An endless body: refused while reading, long before the timeout, memory flat.
    let rss_before = rss_kib();
    expect_failure(&edge, "endless", 502, true, "an endless chunked body").await;
    let rss_growth_mib = rss_kib().saturating_sub(rss_before) / 1024;
    let written = hostile.endless_bytes.load(Ordering::SeqCst);
    assert!(
        written < 32 << 20,
        "the edge kept reading: the upstream wrote {written} bytes"
    );
    assert!(
        rss_growth_mib < 64,
        "memory grew by {rss_growth_mib} MiB reading a refused body"
    );
    let m = edge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "paragon_edge_upstream_calls_total{outcome=\"body_too_large\"}"
        ),
        1.0
    );

    let cases = [
        ("nested", 502, true, "200000 nested arrays"),
        ("numid", 502, true, "an object whose id is a number"),
        ("garbage", 502, true, "not HTTP at all"),
        ("slowheaders", 504, true, "headers that never end"),
        ("hugeheader", 502, true, "a 1 MiB response header"),
        ("lying", 502, true, "a Content-Length shorter than the body"),
        // A redirect is not followed (no other host is ever asked); ParagoN answered.
        ("redirect", 502, false, "a 302 to another host"),
    ];
    for (id, status, counts, what) in cases {
        expect_failure(&edge, id, status, counts, what).await;
    }
    assert_eq!(elsewhere.sim().served_total(), 0, "a redirect was followed");

    // The upstream behaves again: every id is fetched afresh.
    hostile.healthy.store(true, Ordering::SeqCst);
    for id in ["endless"].into_iter().chain(cases.iter().map(|c| c.0)) {
        expect_fresh(&edge, id).await;
    }
    // Every request reached only /users/{id}, once per failure and once on recovery.
    let requests = hostile.requests.lock().clone();
    assert!(
        requests
            .iter()
            .all(|l| l.starts_with("GET /users/") && l.ends_with(" HTTP/1.1")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn refused_connection_is_502_counts_for_the_breaker_and_is_never_cached() {
    let port = closed_port();
    let sim = start_sim(SimConfig::default()).await;
    let edge = start_edge_at(TOML, sim, format!("http://127.0.0.1:{port}")).await;
    expect_failure(&edge, "u1", 502, true, "a refused connection").await;
    let m = edge.metrics().await;
    assert_eq!(
        metric(&m, "paragon_edge_upstream_calls_total{outcome=\"connect\"}"),
        1.0
    );
    // ParagoN comes up on that port: the user is fetched afresh.
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the port is free again");
    let up = paragon_sim::Simulator::new(SimConfig::default());
    tokio::spawn(up.clone().serve(listener, std::future::pending()));
    expect_fresh(&edge, "u1").await;
    assert_eq!(up.served("/users/u1"), 1);
}
