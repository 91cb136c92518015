//! Graceful shutdown (CONTRACT §3, §6): `/readyz` turns 503 at once while in-flight
//! requests still complete, then `run` returns.

mod common;

use common::{client, start_edge, start_edge_with, wait_until, WAIT};
use paragon_sim::{Faults, SimConfig};

#[tokio::test]
async fn readyz_is_503_during_shutdown_while_in_flight_requests_complete() {
    let mut edge = start_edge_with(
        "[server]\nshutdown_grace = \"10s\"",
        SimConfig {
            faults: Faults {
                latency: Some("1s".into()),
                ..Faults::default()
            },
            ..SimConfig::default()
        },
    )
    .await;
    assert_eq!(edge.get("/readyz").await.status, 200);

    // A slow request, in flight at ParagoN.
    let slow = {
        let client = client();
        let url = edge.url("/v1/users/u1");
        tokio::spawn(async move {
            let r = client.get(url).send().await.expect("an answer");
            let status = r.status().as_u16();
            let cache = r
                .headers()
                .get("x-cache")
                .map(|v| v.to_str().unwrap_or("").to_owned());
            let body = r.bytes().await.expect("a complete body");
            (status, cache, body)
        })
    };
    wait_until("the slow request to reach ParagoN", || {
        let ok = edge.state.in_flight() == 1 && edge.served_total() == 1;
        async move { ok }
    })
    .await;

    edge.trigger_shutdown();
    wait_until("the edge to begin shutting down", || {
        let ok = !edge.state.is_ready();
        async move { ok }
    })
    .await;

    // A new connection still gets an answer, and it says "not ready".
    let r = client()
        .get(edge.url("/readyz"))
        .send()
        .await
        .expect("the edge still answers while draining");
    assert_eq!(r.status().as_u16(), 503);

    let (status, cache, body) = tokio::time::timeout(WAIT, slow)
        .await
        .expect("the slow request completes")
        .expect("the task did not panic");
    assert_eq!(status, 200);
    assert_eq!(cache.as_deref(), Some("MISS"));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).expect("JSON"),
        paragon_sim::user_json("u1")
    );

    let server = edge.server.take().expect("the server task");
    let result = tokio::time::timeout(WAIT, server)
        .await
        .expect("run returns once drained")
        .expect("the server task did not panic");
    assert!(result.is_ok(), "{result:?}");

    // It no longer accepts.
    let refused = tokio::net::TcpStream::connect(edge.addr).await;
    assert!(refused.is_err(), "still accepting after run returned");
}

#[tokio::test]
async fn idle_edge_stops_without_waiting_for_the_grace() {
    // The grace is far longer than the test's time limit: an idle edge must not use it.
    let mut edge = start_edge("[server]\nshutdown_grace = \"60s\"").await;
    assert_eq!(edge.get("/v1/users/u1").await.status, 200);
    edge.trigger_shutdown();
    let server = edge.server.take().expect("the server task");
    let result = tokio::time::timeout(WAIT, server)
        .await
        .expect("an idle edge stops before its grace is over")
        .expect("the server task did not panic");
    assert!(result.is_ok(), "{result:?}");
}
