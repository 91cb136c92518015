//! Seeing what the edge does: `Server-Timing` on every `/v1` answer (CONTRACT.md §6), the
//! headers a browser's JavaScript may read, the access log (`server.access_log`, §4), the
//! request id on every log line about a request, one log line per breaker transition,
//! and no colour codes when the log is not a terminal.

mod common;

use common::{all_failing, start_edge, start_edge_with, start_sim, EdgeProcess};
use paragon_sim::SimConfig;
use reqwest::Method;

fn timing(r: &common::Resp) -> String {
    r.header("server-timing")
        .unwrap_or_else(|| panic!("no Server-Timing on {} {}", r.status, r.text()))
}

#[tokio::test]
async fn server_timing_says_what_each_layer_did() {
    let edge = start_edge("[retry]\nenabled = true\nbackoff = \"1ms\"").await;

    let miss = edge.get("/v1/users/u1").await;
    assert_eq!(miss.status, 200, "{}", miss.text());
    let t = timing(&miss);
    let parts: Vec<&str> = t.split(", ").collect();
    assert_eq!(parts[0], "cache;desc=MISS", "{t}");
    assert_eq!(parts[1], "breaker;desc=closed", "{t}");
    assert!(parts[2].starts_with("limiter;dur="), "{t}");
    assert!(
        parts[3].starts_with("upstream;dur=") && parts[3].ends_with(";desc=200"),
        "{t}"
    );
    assert_eq!(parts[4], "retry;desc=1", "{t}");
    assert_eq!(parts.len(), 5, "{t}");

    let hit = edge.get("/v1/users/u1").await;
    assert_eq!(timing(&hit), "cache;desc=HIT, breaker;desc=closed");

    let tag = hit.header("etag").expect("an ETag");
    let not_modified = edge
        .get_with("/v1/users/u1", &[("if-none-match", tag.as_str())])
        .await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(timing(&not_modified), "cache;desc=HIT, breaker;desc=closed");

    let batch = edge.get("/v1/users?ids=u1,u2").await;
    assert_eq!(batch.status, 200, "{}", batch.text());
    let t = timing(&batch);
    assert!(
        t.starts_with("cache;desc=\"HIT 1, MISS 1\", breaker;desc=closed, limiter;dur="),
        "{t}"
    );
    assert!(t.contains(";desc=\"1 calls\", retry;desc=1"), "{t}");

    // Nothing went through the stack: the header says so.
    let invalid = edge.get("/v1/users/a%20b").await;
    assert_eq!(invalid.status, 400);
    assert_eq!(timing(&invalid), "edge;desc=local");
    let bad_batch = edge.get("/v1/users?ids=").await;
    assert_eq!(bad_batch.status, 400);
    assert_eq!(timing(&bad_batch), "edge;desc=local");
    // Not a `/v1` answer: no header.
    assert!(edge.get("/healthz").await.header("server-timing").is_none());
}

#[tokio::test]
async fn errors_carry_the_upstream_status_and_the_breaker_state() {
    let edge = start_edge_with(
        "[circuit_breaker]\nfailure_threshold = 1\n[cache]\nstale_if_error = \"0s\"",
        SimConfig::default(),
    )
    .await;
    edge.sim
        .sim()
        .set_faults(all_failing())
        .expect("valid faults");
    let failed = edge.get("/v1/users/u1").await;
    assert_eq!(failed.status, 502, "{}", failed.text());
    let t = timing(&failed);
    // The breaker opened on this failure; the error has no x-cache.
    assert!(t.starts_with("breaker;desc=open, limiter;dur="), "{t}");
    assert!(
        t.contains("upstream;dur=") && t.ends_with(";desc=500"),
        "{t}"
    );

    let refused = edge.get("/v1/users/u2").await;
    assert_eq!(refused.status, 503);
    assert_eq!(timing(&refused), "breaker;desc=open");
}

#[tokio::test]
async fn a_refusing_limiter_says_so() {
    let edge = start_edge("[rate_limit]\nmax_requests = 1\nwindow = \"1h\"").await;
    assert_eq!(edge.get("/v1/users/u1").await.status, 200);
    let refused = edge.get("/v1/users/u2").await;
    assert_eq!(refused.status, 429);
    assert_eq!(
        timing(&refused),
        "breaker;desc=closed, limiter;desc=refused"
    );
}

#[tokio::test]
async fn browsers_may_read_the_headers_and_preflights_offer_only_get() {
    let origin = "http://localhost:3000";
    let edge = start_edge(&format!("[server]\ncors_allowed_origins = [\"{origin}\"]")).await;
    let r = edge.get_with("/v1/users/u1", &[("origin", origin)]).await;
    assert_eq!(r.status, 200);
    let exposed = r
        .header("access-control-expose-headers")
        .expect("exposed headers")
        .to_ascii_lowercase();
    let exposed: Vec<&str> = exposed.split(',').map(str::trim).collect();
    for name in [
        "x-cache",
        "x-request-id",
        "retry-after",
        "server-timing",
        "etag",
    ] {
        assert!(exposed.contains(&name), "{name} not in {exposed:?}");
    }

    let preflight = edge
        .request(
            Method::OPTIONS,
            "/v1/users/u1",
            &[("origin", origin), ("access-control-request-method", "GET")],
        )
        .await;
    assert!((200..300).contains(&preflight.status));
    assert_eq!(
        preflight.header("access-control-allow-methods").as_deref(),
        Some("GET")
    );
}

/// The lines of `log` that contain `needle`.
fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

#[tokio::test]
async fn a_request_id_is_on_its_access_line_and_every_line_about_it() {
    let sim = start_sim(SimConfig::default()).await;
    sim.sim().set_faults(all_failing()).expect("valid faults");
    let config = format!(
        "[upstream]\nbase_url = \"{}\"\n[circuit_breaker]\nfailure_threshold = 1000\n",
        sim.base_url()
    );
    let edge = EdgeProcess::start("observe-ids", &config, &[("RUST_LOG", "info")]).await;
    let http = common::client();
    let id = "obs-req-7f3a";
    let r = http
        .get(edge.url("/v1/users/u1"))
        .header("x-request-id", id)
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["x-request-id"], id);
    let ok = http
        .get(edge.url("/healthz"))
        .header("x-request-id", "obs-other-1")
        .send()
        .await
        .expect("an answer");
    assert_eq!(ok.status(), 200);
    let (exit, log) = edge.terminate().await;
    assert!(exit.success(), "{exit:?}\n{log}");

    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a piped log:\n{log}"
    );
    let about = lines_with(&log, id);
    let access: Vec<&&str> = about
        .iter()
        .filter(|l| l.contains("paragon_edge::access"))
        .collect();
    assert_eq!(access.len(), 1, "one access line for the request:\n{log}");
    let line = access[0];
    for field in [
        "method=GET",
        "route=\"/v1/users/{id}\"",
        "path=\"/v1/users/u1\"",
        "status=502",
        "duration_ms=",
        "x_cache=\"-\"",
    ] {
        assert!(line.contains(field), "{field} not in {line}");
    }
    let failures = lines_with(&log, "ParagoN call failed");
    assert_eq!(failures.len(), 1, "{log}");
    assert!(failures[0].contains(id), "{}", failures[0]);
    assert_eq!(about.len(), 2, "{log}");
    // Every line written while a request was served names it.
    for l in lines_with(&log, "paragon_edge::routes") {
        assert!(l.contains("request_id="), "{l}");
    }
    assert_eq!(
        lines_with(&log, "obs-other-1")
            .iter()
            .filter(|l| l.contains("route=\"/healthz\""))
            .count(),
        1,
        "{log}"
    );
}

#[tokio::test]
async fn no_access_line_when_it_is_off() {
    let sim = start_sim(SimConfig::default()).await;
    let config = format!(
        "[server]\naccess_log = false\n[upstream]\nbase_url = \"{}\"\n",
        sim.base_url()
    );
    let edge = EdgeProcess::start("observe-off", &config, &[("RUST_LOG", "info")]).await;
    let r = common::client()
        .get(edge.url("/v1/users/u1"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status(), 200);
    let (exit, log) = edge.terminate().await;
    assert!(exit.success(), "{exit:?}\n{log}");
    assert!(log.contains("paragon-edge serving"), "{log}");
    assert!(!log.contains("paragon_edge::access"), "{log}");
}

#[tokio::test]
async fn the_breaker_logs_each_transition_once() {
    let sim = start_sim(SimConfig::default()).await;
    sim.sim().set_faults(all_failing()).expect("valid faults");
    let config = format!(
        "[server]\nadmin_token = \"t0k\"\naccess_log = false\n[upstream]\nbase_url = \"{}\"\n\
         [circuit_breaker]\nfailure_threshold = 1\n",
        sim.base_url()
    );
    let edge = EdgeProcess::start("observe-breaker", &config, &[("RUST_LOG", "info")]).await;
    let http = common::client();
    let get = |path: &str| http.get(edge.url(path)).send();
    let first = http
        .get(edge.url("/v1/users/u1"))
        .header("x-request-id", "obs-opener")
        .send()
        .await
        .expect("answer");
    assert_eq!(first.status(), 502);
    for i in 0..5 {
        let r = get(&format!("/v1/users/r{i}")).await.expect("answer");
        assert_eq!(r.status(), 503, "refused while open");
    }
    let closed = http
        .post(edge.url("/admin/circuit-breaker/close"))
        .bearer_auth("t0k")
        .send()
        .await
        .expect("answer");
    assert!(closed.status().is_success(), "{}", closed.status());
    let (exit, log) = edge.terminate().await;
    assert!(exit.success(), "{exit:?}\n{log}");

    let opened = lines_with(&log, "circuit breaker opened");
    assert_eq!(opened.len(), 1, "{log}");
    assert!(
        opened[0].contains("WARN") && opened[0].contains("to=\"open\""),
        "{}",
        opened[0]
    );
    // The fill that saw the failure ran on a task of its own, in the span of the request
    // that started it.
    assert!(opened[0].contains("obs-opener"), "{}", opened[0]);
    let changed = lines_with(&log, "circuit breaker changed state");
    assert!(
        changed
            .iter()
            .any(|l| l.contains(" INFO ") && l.contains("to=\"closed\"")),
        "{log}"
    );
    // The refused requests are not warnings: the one WARN about ParagoN failing is the
    // first call's, and the opening's.
    let warnings: Vec<&str> = lines_with(&log, " WARN ")
        .into_iter()
        .filter(|l| !l.contains("forced by an operator"))
        .collect();
    assert_eq!(
        warnings.len(),
        2,
        "one failure and one opening, nothing per refused request:\n{log}"
    );
}
