//! End-to-end tests of how the edge tells frontends about budgets (CONTRACT §5, §6): the
//! status of a batch whose ids all failed alike, and the IETF `RateLimit` headers on the
//! edge's own 429s.

mod common;

use common::{assert_problem, start_edge};

#[tokio::test]
async fn a_batch_whose_ids_were_all_refused_is_a_429_with_the_smallest_retry_after() {
    let edge = start_edge("[rate_limit]\nmax_requests = 2\nwindow = \"60s\"").await;
    let r = edge.get("/v1/users?ids=u1,u2").await;
    assert_eq!(r.status, 200, "{}", r.text());

    // The budget is spent: every id of the next batch is refused alike.
    let r = edge.get("/v1/users?ids=u3,u4").await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let body = r.json();
    assert_eq!(body["users"], serde_json::json!({}), "{body}");
    let errors = body["errors"].as_object().expect("errors");
    let smallest = errors
        .values()
        .map(|p| {
            p["retry_after"]
                .as_u64()
                .expect("each 429 has its retry time")
        })
        .min()
        .expect("two errors");
    assert_eq!(errors.len(), 2, "{body}");
    assert_eq!(r.retry_after(), smallest);
    assert_eq!(
        r.header("ratelimit-policy").as_deref(),
        Some("\"upstream\";q=2;w=60")
    );
    assert_eq!(
        r.header("ratelimit"),
        Some(format!("\"upstream\";r=0;t={smallest}"))
    );

    // One id answered from the cache: the batch succeeded in part, so it is a 200.
    let r = edge.get("/v1/users?ids=u1,u5").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("retry-after"), None);
    assert_eq!(r.json()["errors"]["u5"]["status"], 429);

    // All unknown users: the batch is a 404 (no Retry-After to give).
    let edge = start_edge("").await;
    let r = edge.get("/v1/users?ids=missing-1,missing-2").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.header("retry-after"), None);
    assert_eq!(r.json()["errors"]["missing-2"]["status"], 404);
    // Mixed failures keep the 200 and the per-id statuses.
    let r = edge.get("/v1/users?ids=missing-1,u1").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn the_edges_own_429s_describe_its_budget_in_ratelimit_headers() {
    let edge = start_edge("[rate_limit]\nmax_requests = 1\nwindow = \"30s\"").await;
    assert_eq!(edge.get("/v1/users/u1").await.status, 200);
    let r = edge.get("/v1/users/u2").await;
    assert_problem(&r, 429);
    let secs = r.retry_after();
    assert!((1..=30).contains(&secs), "{secs}");
    assert_eq!(
        r.header("ratelimit-policy").as_deref(),
        Some("\"upstream\";q=1;w=30")
    );
    assert_eq!(
        r.header("ratelimit"),
        Some(format!("\"upstream\";r=0;t={secs}"))
    );
    // Other answers carry none.
    let r = edge.get("/v1/users/u1").await;
    assert_eq!((r.status, r.header("ratelimit")), (200, None));

    // A client over its own limit is told about its own budget.
    let edge = start_edge(
        "[client_limit]\nenabled = true\nmax_requests = 1\nwindow = \"10s\"\nkey = \"header:x-user\"",
    )
    .await;
    assert_eq!(
        edge.get_with("/v1/users/u1", &[("x-user", "a")])
            .await
            .status,
        200
    );
    let r = edge.get_with("/v1/users/u1", &[("x-user", "a")]).await;
    assert_problem(&r, 429);
    assert_eq!(
        r.header("ratelimit-policy").as_deref(),
        Some("\"client\";q=1;w=10")
    );
    assert_eq!(
        r.header("ratelimit"),
        Some(format!("\"client\";r=0;t={}", r.retry_after()))
    );
}

#[tokio::test]
async fn paced_by_paragons_advertised_quota_the_edge_never_gets_its_429() {
    // ParagoN allows 10 calls per 5 s and says so on every answer; our own budget is
    // far larger. Twenty uncached users asked over two seconds.
    let edge = common::start_edge_with(
        "[rate_limit]\nmax_requests = 10000\nwindow = \"1s\"",
        paragon_sim::SimConfig {
            faults: paragon_sim::Faults {
                quota: Some(10),
                quota_window: Some("5s".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let mut ok = 0;
    let mut held = 0;
    for n in 0..20 {
        let r = edge.get(&format!("/v1/users/p{n}")).await;
        match r.status {
            200 => ok += 1,
            429 => {
                // Answered like our own budget's refusal.
                assert_problem(&r, 429);
                assert!(r.retry_after() >= 1);
                assert_eq!(r.json()["type"], "urn:paragon-edge:problem:rate-limited");
                held += 1;
            }
            s => panic!("unexpected {s}: {}", r.text()),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let stats = edge.sim.sim().stats();
    assert_eq!(
        stats.by_status.get(&429).copied().unwrap_or(0),
        0,
        "{stats:?}"
    );
    assert!(ok >= 2 && held >= 5, "ok {ok}, held {held}");
    let status = edge.status().await;
    assert!(
        status["rate_limit"]["upstream_quota"]["remaining"].is_u64(),
        "{status}"
    );
    let m = edge.metrics().await;
    assert_eq!(
        common::metric(
            &m,
            "paragon_edge_rate_limit_rejections_total{cause=\"upstream_quota\"}"
        ),
        f64::from(held)
    );

    // Without follow_upstream the same requests overrun ParagoN's quota.
    let edge = common::start_edge_with(
        "[rate_limit]\nmax_requests = 10000\nwindow = \"1s\"\nfollow_upstream = false",
        paragon_sim::SimConfig {
            faults: paragon_sim::Faults {
                quota: Some(10),
                quota_window: Some("5s".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    for n in 0..12 {
        edge.get(&format!("/v1/users/p{n}")).await;
    }
    assert!(
        edge.sim
            .sim()
            .stats()
            .by_status
            .get(&429)
            .copied()
            .unwrap_or(0)
            > 0
    );
}

#[tokio::test]
async fn a_prefetch_is_refused_before_the_last_of_the_burst_an_interactive_request_is_not() {
    // A burst of 5, 40 % kept from background calls: prefetches get 3, users all 5.
    let edge =
        start_edge("[rate_limit]\nmax_requests = 5\nwindow = \"60s\"\nbackground_reserve = 0.4")
            .await;
    let mut prefetched = 0;
    for n in 0..5 {
        let r = edge
            .get_with(&format!("/v1/users/b{n}"), &[("sec-purpose", "prefetch")])
            .await;
        if r.status == 200 {
            prefetched += 1;
        } else {
            assert_problem(&r, 429);
        }
    }
    assert_eq!(prefetched, 3);
    // What is left is the users'.
    for n in 0..2 {
        let r = edge.get(&format!("/v1/users/i{n}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let m = edge.metrics().await;
    assert_eq!(
        common::metric(&m, "paragon_edge_rate_limit_background_rejections_total"),
        2.0
    );
}
