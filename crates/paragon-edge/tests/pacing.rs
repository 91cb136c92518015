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
