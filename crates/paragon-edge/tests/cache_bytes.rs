//! `cache.max_bytes` over real sockets: users of 200 KB fill the cache up to its byte
//! bound and no further, and every answer is still the right user, whole.

mod common;

use common::*;
use paragon_sim::{Faults, SimConfig};

const MAX_BYTES: u64 = 1_000_000;
const USER_BYTES: usize = 200_000;

fn gauge(metrics: &str, name: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn users_of_200_kb_keep_cache_bytes_within_max_bytes() {
    let sim = SimConfig {
        faults: Faults {
            oversized_rate: 1.0,
            oversized_bytes: Some(USER_BYTES),
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    let edge = start_edge_with(
        &format!("[cache]\nmax_bytes = {MAX_BYTES}\n[rate_limit]\nenabled = false\n"),
        sim,
    )
    .await;
    let user = |r: &Resp, id: &str| {
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        assert_eq!(r.body.len(), USER_BYTES, "{id}");
        assert_eq!(r.json()["id"], id);
        r.header("x-cache").unwrap_or_default()
    };
    for round in 0..2 {
        for n in 0..30 {
            let id = format!("u{n}");
            let r = edge.get(&format!("/v1/users/{id}")).await;
            user(&r, &id);
            let cache = &edge.status().await["cache"];
            let bytes = cache["bytes"].as_u64().expect("cache.bytes is a number");
            assert!(bytes <= MAX_BYTES, "round {round}, {id}: {cache}");
            assert_eq!(cache["max_bytes"], MAX_BYTES);
        }
    }
    let status = edge.status().await;
    let cache = &status["cache"];
    // Five users fit in the bound: the bound is what binds, not max_entries.
    assert_eq!(cache["entries"], 5, "{cache}");
    assert_eq!(cache["bytes"], 5 * USER_BYTES as u64, "{cache}");
    let metrics = edge.metrics().await;
    assert_eq!(
        gauge(&metrics, "paragon_edge_cache_bytes"),
        cache["bytes"].as_u64()
    );
    // The last user stored is served from the cache; an evicted one is fetched again,
    // and both are the whole, right document.
    let r = edge.get("/v1/users/u29").await;
    assert_eq!(user(&r, "u29"), "HIT");
    let before = edge.served("u0");
    let r = edge.get("/v1/users/u0").await;
    assert_eq!(user(&r, "u0"), "MISS");
    assert_eq!(edge.served("u0"), before + 1);
}
