//! The edge against clients and upstream answers of the open internet: slow heads, idle
//! and unread connections, huge heads, a connection cap, greedy clients, a ParagoN that
//! normalises ids, and an endless 429 pause ended by an operator. Each test fails on an
//! edge without the protection it names.

#![allow(
    clippy::disallowed_methods,
    reason = "tests time real sockets and servers"
)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use paragon_sim::{Faults, SimConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "adm-open-internet";

/// Reads until the peer closes (or resets) the connection; the bytes read before.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the edge never closed the connection");
    all
}

async fn connect(edge: &TestEdge) -> TcpStream {
    TcpStream::connect(edge.addr).await.expect("connect")
}

#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_cut_at_header_read_timeout() {
    let edge =
        start_edge("[server]\nheader_read_timeout = \"400ms\"\nidle_timeout = \"30s\"").await;
    let mut stream = connect(&edge).await;
    let started = Instant::now();
    let head = b"GET /v1/users/u1 HTTP/1.1\r\nhost: x\r\nx-slow: ";
    let writer = async {
        // A slowloris: one byte every 50 ms, never the end of the head.
        for b in head.iter().chain(std::iter::repeat(&b'a')) {
            if stream.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            if started.elapsed() > WAIT {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, writer)
        .await
        .expect("the writes fail once the edge closes the connection");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "not closed before the timeout"
    );
    let text = edge.metrics().await;
    assert_eq!(
        metric(
            &text,
            "paragon_edge_connections_closed_total{reason=\"header_timeout\"}"
        ),
        1.0
    );
    assert_eq!(edge.served_total(), 0);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_idle_timeout() {
    let edge = start_edge("[server]\nheader_read_timeout = \"5s\"\nidle_timeout = \"300ms\"").await;
    let mut silent = connect(&edge).await;
    let started = Instant::now();
    assert!(read_until_closed(&mut silent).await.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(300));
    let closed = edge.state.metrics().connections_closed();
    assert_eq!(closed, (0, 1), "(header, idle) closes");
}

#[tokio::test]
async fn a_busy_keep_alive_connection_is_never_cut_and_an_idle_one_is() {
    // Short timeouts; requests every 100 ms on one connection for well past both.
    let edge =
        start_edge("[server]\nheader_read_timeout = \"250ms\"\nidle_timeout = \"400ms\"").await;
    let mut stream = connect(&edge).await;
    for _ in 0..12 {
        stream
            .write_all(b"GET /v1/users/u1 HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("the connection is still open");
        let mut buf = vec![0u8; 8192];
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("an answer")
            .expect("read");
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            &buf[..n.min(64)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(edge.state.metrics().connections_closed(), (0, 0));
    // Then silence: the idle timeout (not the head timeout) closes it.
    read_until_closed(&mut stream).await;
    assert_eq!(edge.state.metrics().connections_closed(), (0, 1));
}

#[tokio::test]
async fn a_head_past_max_request_head_bytes_gets_431_and_the_connection_closes() {
    let edge = start_edge("[server]\nmax_request_head_bytes = 16384").await;
    let mut stream = connect(&edge).await;
    let mut head = b"GET /v1/users/u1 HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 400 * 1024));
    // The edge may close while this is still being written.
    let _ = stream.write_all(&head).await;
    let answer = read_until_closed(&mut stream).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(80)])
    );
    // A head within the bound is served.
    let ok = edge
        .get_with("/v1/users/u1", &[("x-big", &"a".repeat(8000))])
        .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn at_max_connections_new_clients_wait_and_are_served_once_one_closes() {
    let edge = start_edge("[server]\nmax_connections = 2\nidle_timeout = \"30s\"").await;
    let first = connect(&edge).await;
    let second = connect(&edge).await;
    wait_until("two connections open", || async {
        edge.state.metrics().connections().0 == 2
    })
    .await;
    // The third connects (the kernel's backlog holds it) but is not served.
    let mut third = connect(&edge).await;
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write to the backlog");
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await;
    assert!(early.is_err(), "the third connection is held back");
    let text = edge.state.metrics().render(&Default::default());
    assert_eq!(metric(&text, "paragon_edge_connections_at_cap"), 1.0);
    assert_eq!(metric(&text, "paragon_edge_connections_open"), 2.0);
    // One closes: the third is accepted and answered.
    drop(first);
    let n = tokio::time::timeout(WAIT, third.read(&mut buf))
        .await
        .expect("answered once below the cap")
        .expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // With the others gone too, nothing waits at the cap any more.
    drop(second);
    drop(third);
    wait_until("below the cap", || async {
        let text = edge.state.metrics().render(&Default::default());
        metric(&text, "paragon_edge_connections_at_cap") == 0.0
    })
    .await;
}

#[tokio::test]
async fn a_batch_answer_is_bounded_and_a_client_that_does_not_read_is_cut() {
    let sim = SimConfig {
        faults: Faults {
            oversized_rate: 1.0,
            oversized_bytes: Some(200_000),
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    let edge = start_edge_with(
        "[server]\nmax_batch_bytes = 1000000\nidle_timeout = \"500ms\"\n[rate_limit]\nenabled = false",
        sim,
    )
    .await;
    let ids: Vec<String> = (0..10).map(|i| format!("big{i}")).collect();
    let path = format!("/v1/users?ids={}", ids.join(","));
    let r = edge.get(&path).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.len() <= 1_000_000 + 10 * 400,
        "{} bytes",
        r.body.len()
    );
    let v = r.json();
    let users = v["users"].as_object().expect("users");
    let errors = v["errors"].as_object().expect("errors");
    assert_eq!(users.len(), 4, "four 200 KB users fit in 1 MB");
    assert_eq!(users.len() + errors.len(), 10);
    for (id, e) in errors {
        assert_eq!(e["type"], "urn:paragon-edge:problem:too-large", "{id}: {e}");
    }
    // The users kept are the first ones asked for.
    for id in &ids[..4] {
        assert!(users.contains_key(id), "{id}");
    }

    // A client that asks and never reads: the edge gives up on it.
    let mut lazy = connect(&edge).await;
    lazy.set_nodelay(true).expect("nodelay");
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    lazy.write_all(request.as_bytes()).await.expect("write");
    wait_until("the unread answer is cut", || async {
        edge.state.metrics().connections_closed().1 >= 1
    })
    .await;
}

#[tokio::test]
async fn a_greedy_client_cannot_spend_a_polite_clients_budget() {
    let edge = start_edge(
        "[rate_limit]\nmax_requests = 40\nwindow = \"60s\"\n\
         [client_limit]\nenabled = true\nkey = \"header:x-client\"\nmax_requests = 1000\nmax_upstream_share = 0.25",
    )
    .await;
    let (mut greedy_ok, mut polite_ok, mut polite_total) = (0, 0, 0);
    for i in 0..60 {
        let g = edge
            .get_with(&format!("/v1/users/g{i}"), &[("x-client", "greedy")])
            .await;
        if g.status == 200 {
            greedy_ok += 1;
        } else {
            assert_problem(&g, 429);
            assert_eq!(g.json()["type"], "urn:paragon-edge:problem:client-limited");
        }
        if i % 3 == 0 {
            polite_total += 1;
            let p = edge
                // A polite client: a few users, asked again and again.
                .get_with(&format!("/v1/users/p{}", i % 8), &[("x-client", "polite")])
                .await;
            if p.status == 200 {
                polite_ok += 1;
            }
        }
    }
    // A quarter of 40: the greedy client's misses stop at 10.
    assert_eq!(greedy_ok, 10);
    assert!(
        polite_ok * 10 >= polite_total * 9,
        "polite: {polite_ok} of {polite_total}"
    );
    // Hits cost the greedy client no upstream share.
    let hit = edge
        .get_with("/v1/users/g0", &[("x-client", "greedy")])
        .await;
    assert_eq!(hit.status, 200);
    let text = edge.metrics().await;
    assert_eq!(
        metric(&text, "paragon_edge_client_limit_rejections_total"),
        50.0
    );
}

#[tokio::test]
async fn a_client_over_its_request_budget_gets_429_and_others_do_not() {
    let edge = start_edge(
        "[client_limit]\nenabled = true\nmax_requests = 3\nwindow = \"60s\"\nkey = \"header:x-client\"",
    )
    .await;
    for _ in 0..3 {
        let r = edge.get_with("/v1/users/u1", &[("x-client", "a")]).await;
        assert_eq!(r.status, 200);
    }
    let refused = edge.get_with("/v1/users/u1", &[("x-client", "a")]).await;
    assert_problem(&refused, 429);
    assert!(refused.retry_after() >= 1);
    // A batch of 1 + 2 uncached ids is too much for a fresh client with 3 - 1 left.
    assert_eq!(
        edge.get_with("/v1/users/u1", &[("x-client", "b")])
            .await
            .status,
        200
    );
    let batch = edge
        .get_with("/v1/users?ids=u1,n1,n2", &[("x-client", "b")])
        .await;
    assert_problem(&batch, 429);
    // Without the header, the client is its IP: a budget of its own.
    assert_eq!(edge.get("/v1/users/u1").await.status, 200);
}

#[tokio::test]
async fn a_paragon_that_normalises_ids_cannot_be_used_to_open_the_breaker() {
    let sim = SimConfig {
        faults: Faults {
            wrong_id_rate: 1.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    let edge = start_edge_with("[circuit_breaker]\nfailure_threshold = 2", sim).await;
    for i in 0..6 {
        let r = edge.get(&format!("/v1/users/ABCD{i}")).await;
        assert_problem(&r, 502);
    }
    assert_eq!(edge.served_total(), 6, "every request reached ParagoN");
    assert_eq!(edge.status().await["circuit_breaker"]["state"], "closed");
}

#[tokio::test]
async fn an_hour_long_429_pause_is_capped_by_max_pause_and_ended_by_the_operator() {
    let sim = SimConfig {
        faults: Faults {
            always_429: Some(3600),
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    let edge = start_edge_with(
        &format!("[server]\nadmin_token = \"{TOKEN}\"\n[rate_limit]\nmax_pause = \"2h\""),
        sim,
    )
    .await;
    assert_eq!(edge.get("/v1/users/u1").await.status, 429);
    let paused = edge.get("/v1/users/u2").await;
    assert_problem(&paused, 429);
    assert_eq!(
        edge.served_total(),
        1,
        "the pause holds every uncached call"
    );
    let ms = edge.status().await["rate_limit"]["paused_for_ms"]
        .as_u64()
        .expect("paused_for_ms");
    assert!(ms > 3_590_000 && ms <= 3_600_000, "{ms}");

    // ParagoN recovers; only the operator can end the pause early.
    edge.sim
        .sim()
        .set_faults(Faults::default())
        .expect("faults");
    let refused = edge.post("/admin/rate-limit/resume", None).await;
    assert_problem(&refused, 401);
    let resumed = edge
        .post("/admin/rate-limit/resume", Some(&format!("Bearer {TOKEN}")))
        .await;
    assert_eq!(resumed.status, 200, "{}", resumed.text());
    assert_eq!(resumed.json()["resumed"], true);
    assert_eq!(edge.status().await["rate_limit"]["paused_for_ms"], 0);
    assert_eq!(edge.get("/v1/users/u2").await.status, 200);
}

#[tokio::test]
async fn max_pause_caps_what_one_429_can_impose() {
    let sim = SimConfig {
        faults: Faults {
            always_429: Some(3600),
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    let edge = start_edge_with("[rate_limit]\nmax_pause = \"30s\"", sim).await;
    let first = edge.get("/v1/users/u1").await;
    assert_problem(&first, 429);
    assert_eq!(
        first.retry_after(),
        30,
        "the frontend is told the pause in force"
    );
    let ms = edge.status().await["rate_limit"]["paused_for_ms"]
        .as_u64()
        .expect("paused_for_ms");
    assert!(ms > 29_000 && ms <= 30_000, "{ms}");
}

#[tokio::test]
async fn resume_is_404_without_an_admin_token() {
    let edge = start_edge("").await;
    assert_problem(&edge.post("/admin/rate-limit/resume", None).await, 404);
}
