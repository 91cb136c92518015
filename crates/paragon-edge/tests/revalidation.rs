//! End-to-end tests of freshness without waiting (CONTRACT §5, §6): answers past their
//! TTL within `stale_while_revalidate`, and browsers revalidating with our `ETag`.

mod common;

use std::time::Duration;

use common::{start_edge, wait_until};

#[tokio::test]
async fn a_browser_revalidating_a_cached_user_gets_304_without_an_upstream_call() {
    let edge = start_edge("").await;
    let r = edge.get("/v1/users/u1").await;
    assert_eq!(r.status, 200);
    let tag = r.header("etag").expect("an ETag on a user answer");
    assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
    assert_eq!(
        r.header("cache-control").as_deref(),
        Some("private, no-cache")
    );

    let r = edge
        .get_with("/v1/users/u1", &[("if-none-match", &tag)])
        .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty(), "a 304 has no body");
    assert_eq!(r.header("etag"), Some(tag.clone()));
    assert_eq!(r.header("x-cache").as_deref(), Some("HIT"));
    assert_eq!(
        r.header("cache-control").as_deref(),
        Some("private, no-cache")
    );
    assert_eq!(
        edge.served("u1"),
        1,
        "no upstream call for the revalidation"
    );

    // Weak form and lists match too; another tag gets the whole answer again.
    let weak = format!("\"other\", W/{tag}");
    let r = edge
        .get_with("/v1/users/u1", &[("if-none-match", &weak)])
        .await;
    assert_eq!(r.status, 304);
    let r = edge
        .get_with("/v1/users/u1", &[("if-none-match", "\"other\"")])
        .await;
    assert_eq!((r.status, r.header("etag")), (200, Some(tag.clone())));
    assert!(!r.body.is_empty());
    // The tag is of the body: another user has another.
    let other = edge.get("/v1/users/u2").await.header("etag").unwrap();
    assert_ne!(other, tag);
    // Errors carry no ETag.
    let r = edge.get("/v1/users/missing-1").await;
    assert_eq!((r.status, r.header("etag")), (404, None));

    // server.browser_cache sets the directives after `private`.
    let edge = start_edge("[server]\nbrowser_cache = \"max-age=30\"").await;
    let r = edge.get("/v1/users/u1").await;
    assert_eq!(
        r.header("cache-control").as_deref(),
        Some("private, max-age=30")
    );
}

#[tokio::test]
async fn past_its_ttl_a_user_is_answered_at_once_while_one_refresh_runs() {
    let edge =
        start_edge("[cache]\nttl = \"300ms\"\nttl_jitter = 0.0\nstale_while_revalidate = \"60s\"")
            .await;
    assert_eq!(
        edge.get("/v1/users/u1").await.header("x-cache").as_deref(),
        Some("MISS")
    );
    // The simulator answers slowly from now on: a caller that waited for it would wait.
    edge.sim
        .sim()
        .set_faults(paragon_sim::Faults {
            latency: Some("300ms".into()),
            ..Default::default()
        })
        .unwrap();
    // Past the TTL (a sleep lasts at least as long as asked).
    tokio::time::sleep(Duration::from_millis(350)).await;
    let answers = futures_util::future::join_all((0..20).map(|_| edge.get("/v1/users/u1"))).await;
    for r in &answers {
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-cache").as_deref(), Some("UPDATING"), "{r:?}");
    }
    wait_until("the one background refresh", || async {
        edge.served("u1") == 2
    })
    .await;
    wait_until("the refreshed entry", || async {
        edge.get("/v1/users/u1").await.header("x-cache").as_deref() == Some("HIT")
    })
    .await;
    assert_eq!(edge.served("u1"), 2, "one refresh for twenty callers");
}

fn etag_sim() -> paragon_sim::SimConfig {
    paragon_sim::SimConfig {
        faults: paragon_sim::Faults {
            etags: true,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn an_unchanged_user_is_refreshed_with_a_304_and_a_changed_one_with_its_new_body() {
    let edge = common::start_edge_with(
        "[cache]\nttl = \"200ms\"\nttl_jitter = 0.0\nstale_if_error = \"0s\"",
        etag_sim(),
    )
    .await;
    let first = edge.get("/v1/users/u1").await;
    assert_eq!(first.header("x-cache").as_deref(), Some("MISS"));
    tokio::time::sleep(Duration::from_millis(250)).await;
    // Expired: the refill is conditional, ParagoN answers 304, the entry is renewed.
    let r = edge.get("/v1/users/u1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-cache").as_deref(), Some("REVALIDATED"));
    assert_eq!(r.body, first.body);
    assert_eq!(
        r.header("etag"),
        first.header("etag"),
        "same body, same tag"
    );
    let stats = edge.sim.sim().stats();
    assert_eq!(
        (stats.conditional, stats.by_status.get(&304).copied()),
        (1, Some(1))
    );
    assert_eq!(
        edge.get("/v1/users/u1").await.header("x-cache").as_deref(),
        Some("HIT")
    );

    // The user changes: the next refill brings its new version.
    edge.sim.sim().change_user("u1");
    tokio::time::sleep(Duration::from_millis(250)).await;
    let r = edge.get("/v1/users/u1").await;
    assert_eq!(r.header("x-cache").as_deref(), Some("MISS"));
    assert_eq!(r.json()["version"], 2);
    assert_ne!(r.header("etag"), first.header("etag"));

    // With revalidate off, every refill downloads the body again.
    let edge = common::start_edge_with(
        "[cache]\nttl = \"200ms\"\nttl_jitter = 0.0\nrevalidate = false",
        etag_sim(),
    )
    .await;
    edge.get("/v1/users/u1").await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let r = edge.get("/v1/users/u1").await;
    assert_eq!(r.header("x-cache").as_deref(), Some("MISS"));
    assert_eq!(edge.sim.sim().stats().conditional, 0);
}

#[tokio::test]
async fn a_background_refresh_of_an_unchanged_user_is_a_304() {
    let edge = common::start_edge_with(
        "[cache]\nttl = \"200ms\"\nttl_jitter = 0.0\nstale_while_revalidate = \"60s\"",
        etag_sim(),
    )
    .await;
    edge.get("/v1/users/u1").await;
    tokio::time::sleep(Duration::from_millis(250)).await;
    let r = edge.get("/v1/users/u1").await;
    assert_eq!(r.header("x-cache").as_deref(), Some("UPDATING"));
    wait_until("the refresh's 304", || async {
        edge.sim.sim().stats().by_status.get(&304).copied() == Some(1)
    })
    .await;
    wait_until("the renewed entry", || async {
        edge.get("/v1/users/u1").await.header("x-cache").as_deref() == Some("HIT")
    })
    .await;
}
