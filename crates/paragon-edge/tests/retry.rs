//! Retries, hedging and deadlines seen from outside (CONTRACT §4 `[retry]`,
//! `upstream.deadline`, §5 "Retry"), over real sockets against the simulator: what
//! ParagoN sees is counted by the simulator itself.

#![allow(
    clippy::disallowed_methods,
    reason = "tests time real sockets and servers"
)]

mod common;

use std::time::{Duration, Instant};

use common::{
    assert_problem, metric, start_edge, start_edge_recorded, start_edge_with, wait_until,
};
use paragon_sim::{Faults, SimConfig};

fn faults(f: Faults) -> SimConfig {
    SimConfig {
        faults: f,
        ..SimConfig::default()
    }
}

/// The first `n` calls of each id fail as `status` says (0: the connection is closed).
fn fail_first(n: u32, status: u16) -> SimConfig {
    faults(Faults {
        fail_first: n,
        fail_first_status: Some(status),
        ..Faults::default()
    })
}

/// Retries on, our own limiter out of the way.
const RETRY: &str = "[retry]\nenabled = true\n[rate_limit]\nenabled = false\n";

#[tokio::test]
async fn one_injected_503_is_retried_and_paragon_sees_two_calls() {
    let edge = start_edge_with(RETRY, fail_first(1, 503)).await;
    let r = edge.get("/v1/users/u1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(edge.served("u1"), 2);
    assert_eq!(r.header("x-upstream-attempts").as_deref(), Some("2"));
    let m = edge.metrics().await;
    assert_eq!(
        metric(&m, "paragon_edge_upstream_attempts_total{kind=\"first\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "paragon_edge_upstream_attempts_total{kind=\"retry\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "paragon_edge_upstream_attempts_total{kind=\"hedge\"}"),
        0.0
    );
    // The breaker saw one success, not a failure and a success.
    let status = edge.status().await;
    assert_eq!(status["circuit_breaker"]["failures"], 0, "{status}");
    assert_eq!(status["circuit_breaker"]["successes"], 1, "{status}");
    assert_eq!(status["retry"]["retries"], 1, "{status}");
    // A hit took no attempt of its own and says none.
    let hit = edge.get("/v1/users/u1").await;
    assert_eq!(hit.header("x-cache").as_deref(), Some("HIT"));
    assert_eq!(hit.header("x-upstream-attempts"), None);
}

#[tokio::test]
async fn one_dropped_connection_is_retried_and_paragon_sees_two_calls() {
    let edge = start_edge_with(RETRY, fail_first(1, 0)).await;
    let r = edge.get("/v1/users/u1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(edge.served("u1"), 2);
}

#[tokio::test]
async fn retries_are_off_by_default() {
    let edge = start_edge_with("[rate_limit]\nenabled = false", fail_first(1, 503)).await;
    let r = edge.get("/v1/users/u1").await;
    assert_problem(&r, 502);
    assert_eq!(edge.served("u1"), 1);
    assert_eq!(edge.status().await["retry"]["enabled"], false);
}

#[tokio::test]
async fn answers_that_are_not_transient_are_never_retried() {
    // ParagoN's 404, other 4xx, its 429 and a 500 are answers, not transient failures.
    for (status, expected) in [(404, 404), (400, 502), (429, 429), (500, 502)] {
        let edge = start_edge_with(
            "[retry]\nenabled = true\nmax_attempts = 5\n[rate_limit]\nenabled = false",
            fail_first(1, status),
        )
        .await;
        let r = edge.get("/v1/users/u1").await;
        assert_problem(&r, expected);
        assert_eq!(edge.served("u1"), 1, "ParagoN's {status} was retried");
    }
}

#[tokio::test]
async fn our_own_refusals_are_never_retried() {
    // Our own budget: one call a minute.
    let edge = start_edge_with(
        "[retry]\nenabled = true\nmax_attempts = 5\n[rate_limit]\nmax_requests = 1\nwindow = \"60s\"",
        faults(Faults {
            error_rate: 1.0,
            ..Faults::default()
        }),
    )
    .await;
    // A 500 (not retried) spends the one slot; the next id is refused by our limiter,
    // and that refusal is not retried.
    assert_problem(&edge.get("/v1/users/u1").await, 502);
    let r = edge.get("/v1/users/u2").await;
    assert_problem(&r, 429);
    assert_eq!(edge.served_total(), 1);
    let status = edge.status().await;
    assert_eq!(status["retry"]["retries"], 0, "{status}");

    // An open breaker: refused above the retry layer, nothing sent.
    let edge = start_edge_with(
        "[retry]\nenabled = true\n[rate_limit]\nenabled = false\n[circuit_breaker]\nfailure_threshold = 1",
        faults(Faults {
            outage: Some("60s".into()),
            ..Faults::default()
        }),
    )
    .await;
    assert_problem(&edge.get("/v1/users/u1").await, 502);
    assert_eq!(edge.served_total(), 2, "one retry of the 503");
    assert_problem(&edge.get("/v1/users/u2").await, 503);
    assert_eq!(
        edge.served_total(),
        2,
        "an open breaker makes no call, first or retry"
    );
}

#[tokio::test]
async fn a_total_outage_costs_paragon_at_most_the_budget_and_the_breaker_still_opens() {
    // The breaker off, to see the budget alone: 3 attempts allowed per call, but only
    // 10 % of first attempts plus 1 a second may be retries.
    let edge = start_edge_with(
        "[retry]\nenabled = true\nmax_attempts = 3\nbackoff = \"1ms\"\n[rate_limit]\nenabled = false\n[circuit_breaker]\nfailure_threshold = 0\n[cache]\nenabled = false",
        faults(Faults {
            outage: Some("60s".into()),
            ..Faults::default()
        }),
    )
    .await;
    let started = Instant::now();
    let mut firsts = 0u64;
    // About 400 calls a second for a second and a half, 20 at a time.
    while started.elapsed() < Duration::from_millis(1500) {
        let paths: Vec<String> = (0..20)
            .map(|i| format!("/v1/users/u{firsts}-{i}"))
            .collect();
        let batch = paths.iter().map(|p| edge.get(p));
        for r in futures_util::future::join_all(batch).await {
            assert_problem(&r, 502);
        }
        firsts += 20;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let seconds = started.elapsed().as_secs_f64().ceil();
    let attempts = edge.served_total() as f64;
    let bound = 1.1 * firsts as f64 + 10.0;
    assert!(
        attempts <= bound,
        "{attempts} attempts for {firsts} calls in {seconds}s (bound {bound})"
    );
    assert!(attempts > firsts as f64, "some retries were made");
    let m = edge.metrics().await;
    assert_eq!(
        metric(&m, "paragon_edge_upstream_attempts_total{kind=\"first\"}"),
        firsts as f64
    );
    assert!(metric(&m, "paragon_edge_retry_budget_exhausted_total") > 0.0);

    // The breaker on: it opens after failure_threshold frontend requests, as without
    // retries, and each of them counted once.
    let edge = start_edge_with(
        "[retry]\nenabled = true\nmax_attempts = 3\nbackoff = \"1ms\"\nbudget_min_per_sec = 100\n[rate_limit]\nenabled = false\n[circuit_breaker]\nfailure_threshold = 5",
        faults(Faults {
            outage: Some("60s".into()),
            ..Faults::default()
        }),
    )
    .await;
    for i in 0..5 {
        assert_problem(&edge.get(&format!("/v1/users/u{i}")).await, 502);
    }
    assert_eq!(edge.served_total(), 15, "three attempts each");
    let status = edge.status().await;
    assert_eq!(status["circuit_breaker"]["state"], "open", "{status}");
    assert_eq!(status["circuit_breaker"]["failures"], 5, "{status}");
    assert_problem(&edge.get("/v1/users/u9").await, 503);
    assert_eq!(edge.served_total(), 15);
}

#[tokio::test]
async fn a_hanging_paragon_is_answered_504_at_the_deadline() {
    let edge = start_edge_with(
        "[upstream]\ntimeout = \"5s\"\ndeadline = \"500ms\"\n[rate_limit]\nenabled = false\n[retry]\nenabled = true\nmax_attempts = 3",
        faults(Faults {
            latency: Some("30s".into()),
            ..Faults::default()
        }),
    )
    .await;
    let started = Instant::now();
    // Sequential, so that each answer's time is its own.
    for i in 0..5 {
        let t = Instant::now();
        let r = edge.get(&format!("/v1/users/h{i}")).await;
        let took = t.elapsed();
        assert_problem(&r, 504);
        assert_eq!(
            r.json()["type"],
            "urn:paragon-edge:problem:deadline-exceeded",
            "{}",
            r.text()
        );
        // The deadline, not the 5 s attempt timeout, ended it.
        assert!(took >= Duration::from_millis(500), "{took:?}");
        assert!(took < Duration::from_secs(4), "{took:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    let status = edge.status().await;
    assert_eq!(status["retry"]["deadline_exceeded"], 5, "{status}");
    // ParagoN did not answer in time: the breaker counted it, once per request.
    assert_eq!(status["circuit_breaker"]["failures"], 5, "{status}");
    assert_eq!(status["retry"]["attempts_in_flight"], 0, "{status}");
    assert_eq!(
        edge.served_total(),
        5,
        "no attempt started after the deadline"
    );
}

#[tokio::test]
async fn a_wait_for_our_own_budget_counts_against_the_deadline_but_not_against_paragon() {
    // One call per 10 s, and a call may wait 30 s for its slot; the deadline is 500 ms.
    let edge = start_edge(
        "[upstream]\ndeadline = \"500ms\"\n[rate_limit]\nmax_requests = 1\nwindow = \"10s\"\nmax_wait = \"30s\"\n[circuit_breaker]\nfailure_threshold = 1",
    )
    .await;
    assert_eq!(edge.get("/v1/users/u1").await.status, 200);
    let t = Instant::now();
    let r = edge.get("/v1/users/u2").await;
    assert_problem(&r, 504);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(
        edge.served_total(),
        1,
        "the waiting call never reached ParagoN"
    );
    let status = edge.status().await;
    assert_eq!(status["circuit_breaker"]["state"], "closed", "{status}");
    assert_eq!(status["circuit_breaker"]["failures"], 0, "{status}");
}

#[tokio::test]
async fn a_slow_attempt_is_hedged_and_the_slow_connection_is_closed() {
    // The first call of each id hangs 10 s; the hedge, its second call, answers at once.
    let (edge, recorder) = start_edge_recorded(
        "[retry]\nenabled = true\nhedge_after = \"100ms\"\n[rate_limit]\nenabled = false",
        faults(Faults {
            fail_first: 1,
            fail_first_delay: Some("10s".into()),
            ..Faults::default()
        }),
    )
    .await;
    let t = Instant::now();
    let r = edge.get("/v1/users/u1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(r.header("x-upstream-attempts").as_deref(), Some("2"));
    assert_eq!(edge.served("u1"), 2);
    // The slow attempt was cancelled: its connection closed, ParagoN's handler dropped.
    wait_until("the slow attempt's connection to close", || async {
        recorder.in_flight() == 0
    })
    .await;
    let m = edge.metrics().await;
    assert_eq!(
        metric(&m, "paragon_edge_upstream_attempts_total{kind=\"hedge\"}"),
        1.0
    );
    assert_eq!(edge.status().await["retry"]["attempts_in_flight"], 0);
}

#[tokio::test]
async fn a_client_that_leaves_mid_retry_or_mid_hedge_leaves_nothing_behind() {
    // No cache: a cache fill would rightly go on for the callers that wait with it.
    let (edge, recorder) = start_edge_recorded(
        "[retry]\nenabled = true\nmax_attempts = 3\nhedge_after = \"100ms\"\n[rate_limit]\nenabled = false\n[cache]\nenabled = false",
        faults(Faults {
            fail_first: 2,
            fail_first_delay: Some("10s".into()),
            ..Faults::default()
        }),
    )
    .await;
    let full = edge.status().await["retry"]["budget_left"]
        .as_u64()
        .unwrap();
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    // Mid-hedge: both attempts out when the client goes.
    let gone = impatient.get(edge.url("/v1/users/u1")).send().await;
    assert!(gone.is_err(), "the client gave up");
    assert_eq!(edge.served("u1"), 2, "a first attempt and a hedge were out");
    wait_until("every attempt to end", || async {
        let s = edge.status().await;
        s["retry"]["attempts_in_flight"] == 0 && recorder.in_flight() == 0
    })
    .await;
    let s = edge.status().await;
    assert_eq!(s["upstream"]["in_flight"], 0, "{s}");
    // The breaker saw no outcome, and holds nothing.
    assert_eq!(s["circuit_breaker"]["failures"], 0, "{s}");
    // The hedge spent one from the budget, as a sent attempt does.
    assert_eq!(s["retry"]["budget_left"].as_u64().unwrap(), full - 1, "{s}");
}

#[tokio::test]
async fn retry_settings_are_checked_and_shown() {
    let edge = start_edge(
        "[retry]\nenabled = true\nmax_attempts = 3\nhedge_after = \"250ms\"\n[upstream]\ndeadline = \"3s\"",
    )
    .await;
    let s = edge.status().await;
    let r = &s["retry"];
    assert_eq!(r["enabled"], true, "{s}");
    assert_eq!(r["max_attempts"], 3);
    assert_eq!(r["hedge_after_ms"], 250);
    assert_eq!(r["deadline_ms"], 3000);
    // A reserve of budget_min_per_sec × 10 with nothing sent yet.
    assert_eq!(r["budget_left"], 10);
}

#[tokio::test]
async fn a_client_that_leaves_during_a_backoff_hands_the_retry_back() {
    // A long backoff: the retry of the first call's 503 waits (full jitter of 30 s).
    let edge = start_edge_with(
        "[retry]\nenabled = true\nbackoff = \"30s\"\n[upstream]\ndeadline = \"60s\"\n[rate_limit]\nenabled = false\n[cache]\nenabled = false",
        fail_first(1, 503),
    )
    .await;
    let full = edge.status().await["retry"]["budget_left"]
        .as_u64()
        .unwrap();
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    // A draw of the jitter under 400 ms lets the retry through in time; then another id.
    let mut left_mid_backoff = None;
    for i in 0..10u64 {
        let id = format!("u{i}");
        if impatient
            .get(edge.url(&format!("/v1/users/{id}")))
            .send()
            .await
            .is_err()
        {
            assert_eq!(edge.served(&id), 1, "the retry had not started");
            left_mid_backoff = Some(i);
            break;
        }
    }
    // Before it, `i` calls retried in time and spent their retry; `i + 1` first attempts
    // earned 10 % of one each.
    let i = left_mid_backoff.expect("a client left during a backoff");
    wait_until("the scheduled retry to be handed back", || async {
        let s = edge.status().await;
        s["retry"]["retries_waiting"] == 0
    })
    .await;
    let s = edge.status().await;
    assert_eq!(s["retry"]["attempts_in_flight"], 0, "{s}");
    assert_eq!(s["retry"]["retries"], i, "{s}");
    assert_eq!(
        s["retry"]["budget_left"].as_u64().unwrap(),
        full + (i + 1) / 10 - i,
        "{s}"
    );
    assert_eq!(s["circuit_breaker"]["failures"], 0, "{s}");
}

#[tokio::test]
async fn no_hedge_while_the_breaker_is_half_open() {
    let edge = start_edge(
        "[retry]\nenabled = true\nhedge_after = \"100ms\"\n[rate_limit]\nenabled = false\n[cache]\nenabled = false\n[circuit_breaker]\nfailure_threshold = 1\nopen_for = \"1s\"",
    )
    .await;
    let sim = edge.sim.sim();
    sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    })
    .unwrap();
    assert_problem(&edge.get("/v1/users/u0").await, 502);
    assert_eq!(edge.status().await["circuit_breaker"]["state"], "open");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Half-open: the probe's first call hangs 1 s, then fails with a 503. A hedge would
    // have answered at 100 ms; the probe waits for its own answer and is retried.
    sim.set_faults(Faults {
        fail_first: 1,
        fail_first_delay: Some("1s".into()),
        ..Faults::default()
    })
    .unwrap();
    let t = Instant::now();
    let r = edge.get("/v1/users/u1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(r.header("x-upstream-attempts").as_deref(), Some("2"));
    let m = edge.metrics().await;
    assert_eq!(
        metric(&m, "paragon_edge_upstream_attempts_total{kind=\"hedge\"}"),
        0.0
    );
    assert_eq!(
        metric(&m, "paragon_edge_upstream_attempts_total{kind=\"retry\"}"),
        1.0
    );
    assert_eq!(edge.status().await["circuit_breaker"]["state"], "closed");
}
