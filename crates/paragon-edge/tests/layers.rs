//! End-to-end tests of the protective layers as seen from outside (CONTRACT §5, §6):
//! rate limiting, ParagoN's 429, the circuit breaker, upstream failures and timeouts,
//! stale answers, metrics, `/admin/status` and the admin actions.

mod common;

use std::time::Duration;

use common::{assert_problem, metric, start_edge, start_edge_with};
use paragon_sim::{Faults, SimConfig};

fn faults(f: Faults) -> SimConfig {
    SimConfig {
        faults: f,
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn own_budget_spent_is_429_with_retry_after() {
    // failure_threshold = 1: if a rejection by our own limiter counted as a ParagoN
    // failure, the breaker would open at once.
    let edge = start_edge(
        "[rate_limit]\nmax_requests = 2\nwindow = \"60s\"\n[circuit_breaker]\nfailure_threshold = 1",
    )
    .await;
    for id in ["u1", "u2"] {
        let r = edge.get(&format!("/v1/users/{id}")).await;
        assert_eq!(r.status, 200, "{id}: {}", r.text());
    }
    let r = edge.get("/v1/users/u3").await;
    assert_problem(&r, 429);
    assert!(r.retry_after() >= 1);
    assert_eq!(
        edge.served_total(),
        2,
        "the rejected call never went upstream"
    );

    // A cache hit spends no budget.
    let r = edge.get("/v1/users/u1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-cache").as_deref(), Some("HIT"));

    let status = edge.status().await;
    assert_eq!(status["circuit_breaker"]["state"], "closed", "{status}");
    let m = edge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "paragon_edge_rate_limit_rejections_total{cause=\"budget\"}"
        ),
        1.0
    );
    // Still rejected: the budget is spent, not the breaker.
    let r = edge.get("/v1/users/u4").await;
    assert_problem(&r, 429);
    assert_eq!(edge.served_total(), 2);
}

#[tokio::test]
async fn paragon_429_is_passed_on_and_pauses_upstream_calls() {
    let edge = start_edge_with(
        "[circuit_breaker]\nfailure_threshold = 1",
        faults(Faults {
            always_429: Some(30),
            ..Faults::default()
        }),
    )
    .await;
    let r = edge.get("/v1/users/u1").await;
    assert_problem(&r, 429);
    let secs = r.retry_after();
    assert!((1..=30).contains(&secs), "Retry-After {secs}");
    assert_eq!(edge.served_total(), 1);

    // The pause is in force: a fresh id is refused without a call.
    let r = edge.get("/v1/users/u2").await;
    assert_problem(&r, 429);
    assert!(r.retry_after() >= 1);
    assert_eq!(
        edge.served_total(),
        1,
        "calls are paused after ParagoN's 429"
    );

    // ParagoN's 429 does not count as a failure.
    let status = edge.status().await;
    assert_eq!(status["circuit_breaker"]["state"], "closed", "{status}");
    let m = edge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "paragon_edge_upstream_calls_total{outcome=\"upstream_rate_limited\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn open_breaker_fails_fast_with_503() {
    let edge = start_edge_with(
        "[circuit_breaker]\nfailure_threshold = 2\nopen_for = \"60s\"",
        faults(Faults {
            error_rate: 1.0,
            ..Faults::default()
        }),
    )
    .await;
    for id in ["u1", "u2"] {
        let r = edge.get(&format!("/v1/users/{id}")).await;
        assert_problem(&r, 502);
    }
    assert_eq!(edge.served_total(), 2);

    let r = edge.get("/v1/users/u3").await;
    assert_problem(&r, 503);
    assert!(r.retry_after() >= 1);
    assert_eq!(edge.served_total(), 2, "an open breaker makes no call");

    // The batch route goes through the same breaker; every id failed alike, so the
    // batch takes their status and the smallest Retry-After.
    let r = edge.get("/v1/users?ids=u4,u5").await;
    assert_eq!(r.status, 503);
    assert!(r.retry_after() >= 1);
    let body = r.json();
    assert_eq!(body["errors"]["u4"]["status"], 503, "{body}");
    assert_eq!(body["errors"]["u5"]["status"], 503, "{body}");
    assert_eq!(edge.served_total(), 2);

    let status = edge.status().await;
    assert_eq!(status["circuit_breaker"]["state"], "open", "{status}");
    let m = edge.metrics().await;
    assert_eq!(
        metric(&m, "paragon_edge_circuit_breaker_state{state=\"open\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "paragon_edge_circuit_breaker_transitions_total{from=\"closed\",to=\"open\"}"
        ),
        1.0
    );
    assert!(metric(&m, "paragon_edge_circuit_breaker_rejections_total") >= 3.0);
}

#[tokio::test]
async fn upstream_failures_are_502_and_never_cached() {
    let edge = start_edge_with(
        "[circuit_breaker]\nfailure_threshold = 100",
        faults(Faults {
            malformed_rate: 1.0,
            ..Faults::default()
        }),
    )
    .await;
    let r = edge.get("/v1/users/u1").await;
    assert_problem(&r, 502);

    edge.sim
        .sim()
        .set_faults(Faults {
            not_object_rate: 1.0,
            ..Faults::default()
        })
        .expect("valid faults");
    let r = edge.get("/v1/users/u2").await;
    assert_problem(&r, 502);

    edge.sim
        .sim()
        .set_faults(Faults {
            wrong_id_rate: 1.0,
            ..Faults::default()
        })
        .expect("valid faults");
    let r = edge.get("/v1/users/u3").await;
    assert_problem(&r, 502);

    edge.sim
        .sim()
        .set_faults(Faults {
            error_rate: 1.0,
            ..Faults::default()
        })
        .expect("valid faults");
    let r = edge.get("/v1/users/u1").await;
    assert_problem(&r, 502);

    edge.sim
        .sim()
        .set_faults(Faults {
            oversized_rate: 1.0,
            ..Faults::default()
        })
        .expect("valid faults");
    let r = edge.get("/v1/users/u4").await;
    assert_problem(&r, 502);

    // ParagoN recovers: nothing bad was cached.
    edge.sim
        .sim()
        .set_faults(Faults::default())
        .expect("valid faults");
    for id in ["u1", "u2", "u3", "u4"] {
        let r = edge.get(&format!("/v1/users/{id}")).await;
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        assert_eq!(r.header("x-cache").as_deref(), Some("MISS"), "{id}");
        assert_eq!(r.json(), paragon_sim::user_json(id));
    }
    let m = edge.metrics().await;
    assert_eq!(
        metric(
            &m,
            "paragon_edge_upstream_calls_total{outcome=\"malformed\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            &m,
            "paragon_edge_upstream_calls_total{outcome=\"upstream_status\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "paragon_edge_upstream_calls_total{outcome=\"body_too_large\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let edge = start_edge_with(
        "[upstream]\ntimeout = \"200ms\"",
        faults(Faults {
            latency: Some("2s".into()),
            ..Faults::default()
        }),
    )
    .await;
    let r = edge.get("/v1/users/u1").await;
    assert_problem(&r, 504);
    assert_eq!(edge.served("u1"), 1);
    let m = edge.metrics().await;
    assert_eq!(
        metric(&m, "paragon_edge_upstream_calls_total{outcome=\"timeout\"}"),
        1.0
    );
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    // A port nobody listens on: bind one, read it, drop it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut config = paragon_edge::config::Config::from_toml("").expect("defaults");
    config.upstream.base_url = Some(format!("http://127.0.0.1:{port}").into());
    let settings = paragon_edge::config::Settings::new(config).expect("valid");
    let edge = paragon_edge::server::build(settings, paragon_layers::Clock::tokio())
        .await
        .expect("builds");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(paragon_edge::server::run(
        listener,
        edge.state,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    let r = common::raw_get(addr, "/v1/users/u1").await;
    assert_problem(&r, 502);
}

#[tokio::test]
async fn expired_entry_is_served_stale_while_paragon_is_down() {
    let edge = start_edge("[cache]\nttl = \"300ms\"\nstale_if_error = \"10m\"").await;
    let first = edge.get("/v1/users/u1").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache").as_deref(), Some("MISS"));

    edge.sim
        .sim()
        .set_faults(Faults {
            outage: Some("10m".into()),
            ..Faults::default()
        })
        .expect("valid faults");
    let served_before = edge.served_total();

    // Until the entry expires it is a HIT; then ParagoN is asked, fails, and the old
    // entry is served marked STALE.
    let stale = tokio::time::timeout(common::WAIT, async {
        loop {
            let r = edge.get("/v1/users/u1").await;
            assert_eq!(r.status, 200, "{}", r.text());
            let cache = r.header("x-cache").expect("x-cache");
            assert!(cache == "HIT" || cache == "STALE", "x-cache {cache}");
            if cache == "STALE" {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a STALE answer once the entry expired");
    assert_eq!(stale.body, first.body, "the stale answer is the old user");
    assert!(
        edge.served_total() > served_before,
        "ParagoN was asked before serving stale"
    );
    let m = edge.metrics().await;
    assert!(metric(&m, "paragon_edge_cache_stale_total") >= 1.0);

    // A user never cached has nothing stale to fall back on.
    let r = edge.get("/v1/users/u2").await;
    assert_problem(&r, 502);
}

#[tokio::test]
async fn metrics_move_with_traffic() {
    let edge = start_edge("").await;
    let before = edge.metrics().await;
    let read = |text: &str| {
        (
            metric(text, "paragon_edge_cache_hits_total"),
            metric(text, "paragon_edge_cache_misses_total"),
            metric(text, "paragon_edge_upstream_calls_total{outcome=\"ok\"}"),
            metric(
                text,
                "paragon_edge_upstream_calls_total{outcome=\"not_found\"}",
            ),
            metric(text, "paragon_edge_upstream_latency_seconds_count"),
        )
    };
    let (hits0, misses0, ok0, nf0, lat0) = read(&before);

    assert_eq!(edge.get("/v1/users/u1").await.status, 200);
    assert_eq!(edge.get("/v1/users/u1").await.status, 200);
    assert_eq!(edge.get("/v1/users/u1").await.status, 200);
    assert_eq!(edge.get("/v1/users/missing1").await.status, 404);

    let r = edge.get("/metrics").await;
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{:?}",
        r.header("content-type")
    );
    let after = r.text();
    let (hits1, misses1, ok1, nf1, lat1) = read(&after);
    assert_eq!(hits1 - hits0, 2.0, "two cache hits");
    assert_eq!(misses1 - misses0, 2.0, "u1 and missing1 missed");
    assert_eq!(ok1 - ok0, 1.0);
    assert_eq!(nf1 - nf0, 1.0);
    assert_eq!(lat1 - lat0, 2.0, "every upstream call is timed");
    assert!(
        after.contains("paragon_edge_upstream_latency_seconds_bucket{le=\"+Inf\"} 2"),
        "{after}"
    );
    assert!(after.contains("# TYPE paragon_edge_cache_hits_total counter"));
    assert_eq!(
        metric(
            &after,
            "paragon_edge_circuit_breaker_state{state=\"closed\"}"
        ),
        1.0
    );
}

/// `/metrics` passes Prometheus's own checker (`promtool check metrics`) with every family
/// present, and exposes exactly the names of the README's table. The check is skipped,
/// with a note, where `promtool` is not installed (Debian's package is `prometheus`),
/// except under `scripts/test`, which installs it and sets `PARAGON_EDGE_REQUIRE_TOOLS=1`.
#[tokio::test]
async fn metrics_pass_promtool_check() {
    // An open breaker after two failures: answers of several statuses, a transition
    // and rejections, next to the cache's and the limiter's figures.
    let edge = start_edge_with(
        "[circuit_breaker]\nfailure_threshold = 2\nopen_for = \"60s\"",
        faults(Faults {
            error_rate: 1.0,
            ..Faults::default()
        }),
    )
    .await;
    for id in ["u1", "u2", "u3"] {
        edge.get(&format!("/v1/users/{id}")).await;
    }
    assert_eq!(edge.get("/v1/users/a%2Fb").await.status, 400);
    let text = edge.metrics().await;

    let mut families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    families.sort_unstable();
    let mut readme = vec![
        "paragon_edge_http_requests_total",
        "paragon_edge_upstream_calls_total",
        "paragon_edge_upstream_latency_seconds",
        "paragon_edge_upstream_in_flight",
        "paragon_edge_cache_hits_total",
        "paragon_edge_cache_misses_total",
        "paragon_edge_cache_stale_total",
        "paragon_edge_cache_updating_total",
        "paragon_edge_cache_refreshes_total",
        "paragon_edge_cache_revalidated_total",
        "paragon_edge_cache_entries",
        "paragon_edge_cache_bytes",
        "paragon_edge_rate_limit_admitted_total",
        "paragon_edge_rate_limit_rejections_total",
        "paragon_edge_rate_limit_upstream_429_total",
        "paragon_edge_rate_limit_background_rejections_total",
        "paragon_edge_circuit_breaker_state",
        "paragon_edge_circuit_breaker_transitions_total",
        "paragon_edge_circuit_breaker_rejections_total",
        "paragon_edge_connections_open",
        "paragon_edge_connections_at_cap",
        "paragon_edge_connections_closed_total",
        "paragon_edge_client_limit_rejections_total",
        "paragon_edge_upstream_attempts_total",
        "paragon_edge_retry_budget_exhausted_total",
        "paragon_edge_upstream_deadline_exceeded_total",
    ];
    readme.sort_unstable();
    assert_eq!(families, readme, "{text}");
    for sample in [
        "paragon_edge_http_requests_total{route=\"user\",status=\"502\"} 2",
        "paragon_edge_http_requests_total{route=\"user\",status=\"503\"} 1",
        "paragon_edge_http_requests_total{route=\"user\",status=\"400\"} 1",
        "paragon_edge_circuit_breaker_transitions_total{from=\"closed\",to=\"open\"} 1",
        "paragon_edge_upstream_latency_seconds_bucket{le=\"0.0025\"} ",
    ] {
        assert!(text.contains(sample), "no {sample:?} in:\n{text}");
    }

    let mut promtool = match tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            // scripts/test installs promtool and asks for every checker to run.
            assert!(
                std::env::var("PARAGON_EDGE_REQUIRE_TOOLS").as_deref() != Ok("1"),
                "promtool is required here (PARAGON_EDGE_REQUIRE_TOOLS=1) but not runnable: {e}"
            );
            eprintln!(
                "NOT CHECKED: promtool not runnable ({e}): /metrics not checked; apt-get install prometheus"
            );
            return;
        }
    };
    let mut stdin = promtool.stdin.take().expect("promtool's stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, text.as_bytes())
        .await
        .expect("write to promtool");
    drop(stdin);
    let out = promtool.wait_with_output().await.expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool check metrics: {}\n{}{}\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn admin_status_reports_every_layer() {
    let edge = start_edge("").await;
    assert_eq!(edge.get("/v1/users/u1").await.status, 200);
    assert_eq!(edge.get("/v1/users/u1").await.status, 200);

    let s = edge.status().await;
    assert_eq!(s["ready"], true, "{s}");
    let base = s["upstream"]["base_url"].as_str().expect("base_url");
    assert!(base.starts_with(&edge.sim.base_url()), "{base}");
    assert_eq!(s["upstream"]["embedded_simulator"], false);
    assert_eq!(s["upstream"]["calls"], 1);

    let cache = &s["cache"];
    assert_eq!(cache["enabled"], true, "{s}");
    assert_eq!(cache["entries"], 1);
    assert_eq!(cache["hits"], 1);
    assert_eq!(cache["misses"], 1);
    let ratio = cache["hit_ratio"].as_f64().expect("hit_ratio");
    assert!((ratio - 0.5).abs() < 1e-9, "hit ratio {ratio}");

    let limiter = &s["rate_limit"];
    assert_eq!(limiter["enabled"], true, "{s}");
    assert_eq!(limiter["max_requests"], 100);
    assert!(limiter["available"].is_number(), "{s}");
    assert_eq!(limiter["admitted"], 1);

    let breaker = &s["circuit_breaker"];
    assert_eq!(breaker["enabled"], true, "{s}");
    assert_eq!(breaker["state"], "closed");
    assert_eq!(breaker["consecutive_failures"], 0);
}

#[tokio::test]
async fn disabled_layers_show_as_disabled() {
    let edge = start_edge(
        "[cache]\nenabled = false\n[rate_limit]\nenabled = false\n[circuit_breaker]\nenabled = false",
    )
    .await;
    for _ in 0..2 {
        let r = edge.get("/v1/users/u1").await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(edge.served("u1"), 2, "no cache: every call goes upstream");
    let s = edge.status().await;
    for layer in ["cache", "rate_limit", "circuit_breaker"] {
        assert_eq!(s[layer]["enabled"], false, "{layer}: {s}");
    }
}

#[tokio::test]
async fn admin_actions_are_404_without_a_token() {
    let edge = start_edge("").await;
    for path in [
        "/admin/circuit-breaker/open",
        "/admin/circuit-breaker/close",
        "/admin/circuit-breaker/reset",
        "/admin/cache/purge",
    ] {
        let r = edge.post(path, None).await;
        assert_problem(&r, 404);
        let r = edge.post(path, Some("Bearer ")).await;
        assert_problem(&r, 404);
    }
    // Nothing was forced.
    let r = edge.get("/v1/users/u1").await;
    assert_eq!(r.status, 200);
    assert_eq!(edge.status().await["circuit_breaker"]["state"], "closed");
}

#[tokio::test]
async fn admin_actions_with_the_token() {
    const TOKEN: &str = "adm-s3cret-token";
    let edge = start_edge(&format!("[server]\nadmin_token = \"{TOKEN}\"")).await;
    let good = format!("Bearer {TOKEN}");

    // Wrong or missing credentials: 401, and nothing happens.
    for auth in [
        None,
        Some("Bearer nope"),
        Some(TOKEN),
        Some("Basic YWRtaW46YWRtaW4="),
        Some("Bearer adm-s3cret-toke"),
    ] {
        let r = edge.post("/admin/circuit-breaker/open", auth).await;
        assert_problem(&r, 401);
        let r = edge.post("/admin/cache/purge", auth).await;
        assert_problem(&r, 401);
    }
    let r = edge.get("/v1/users/u1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-cache").as_deref(), Some("MISS"));
    assert_eq!(edge.served_total(), 1);

    // Force open: the next call fails fast without reaching ParagoN.
    let r = edge.post("/admin/circuit-breaker/open", Some(&good)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = edge.get("/v1/users/u2").await;
    assert_problem(&r, 503);
    assert!(r.retry_after() >= 1);
    assert_eq!(edge.served_total(), 1);
    // A cached user is still served.
    let r = edge.get("/v1/users/u1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-cache").as_deref(), Some("HIT"));

    // Close: calls go through again.
    let r = edge.post("/admin/circuit-breaker/close", Some(&good)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = edge.get("/v1/users/u2").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(edge.served_total(), 2);

    // Reset is accepted too, and leaves it closed.
    let r = edge.post("/admin/circuit-breaker/reset", Some(&good)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(edge.status().await["circuit_breaker"]["state"], "closed");

    // Purge one user: only it misses.
    let r = edge.post("/admin/cache/purge?id=u2", Some(&good)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = edge.get("/v1/users/u2").await;
    assert_eq!(r.header("x-cache").as_deref(), Some("MISS"));
    let r = edge.get("/v1/users/u1").await;
    assert_eq!(r.header("x-cache").as_deref(), Some("HIT"));

    // Purge an invalid id: 400.
    let r = edge.post("/admin/cache/purge?id=a%2Fb", Some(&good)).await;
    assert_problem(&r, 400);

    // Purge everything: the next call misses.
    let r = edge.post("/admin/cache/purge", Some(&good)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = edge.get("/v1/users/u1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-cache").as_deref(), Some("MISS"));

    // The token shows nowhere.
    for path in ["/admin/status", "/metrics"] {
        let r = edge.get(path).await;
        assert!(!r.text().contains(TOKEN), "{path} shows the admin token");
    }
}
