//! What operators and integrators look at, checked from outside with real tools: the live
//! status page `/admin/ui` in a real headless Chromium, the OpenAPI document
//! `/openapi.json` with a real OpenAPI validator, and the Grafana dashboard and the
//! Prometheus alert rules of `deploy/` against a live edge's `/metrics` (and `promtool`).
//!
//! Each external tool is looked up on the machine. Without it a check is skipped with a
//! note, except under `scripts/test`, which installs every tool and sets
//! `PARAGON_EDGE_REQUIRE_TOOLS=1`: there a missing tool fails the test, so CI always
//! runs every check.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{all_failing, start_edge, start_edge_with, wait_until, TestEdge};
use paragon_sim::SimConfig;
use serde_json::Value;

/// The longest one run of an external tool may take (Chromium starts slowly on a small
/// machine shared with builds).
const TOOL_TIMEOUT: Duration = Duration::from_secs(90);

/// Whether `scripts/test` asked for every external checker (it installs them).
fn tools_required() -> bool {
    std::env::var("PARAGON_EDGE_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// Fails when the tools are required, else says loudly that the check did not run.
fn tool_missing(tool: &str, why: &str) {
    assert!(
        !tools_required(),
        "{tool} is required here (PARAGON_EDGE_REQUIRE_TOOLS=1) but {why}"
    );
    eprintln!("NOT CHECKED: {tool} {why}; scripts/test installs it and runs this check");
}

/// The first of `names` found as an executable file on `PATH`.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// The repository's root.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh directory under the target's temporary directory.
fn temp_dir(what: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

/// What a finished tool run printed.
struct Ran {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `program` with `args`, killed after [`TOOL_TIMEOUT`].
async fn run(program: &Path, args: &[String]) -> Ran {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{} does not start: {e}", program.display()));
    let out = tokio::time::timeout(TOOL_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} ran over {TOOL_TIMEOUT:?}", program.display()))
        .expect("the tool's output");
    Ran {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// /admin/ui in a real browser

/// Headless Chromium: `PARAGON_CHROMIUM`, else `chromium` (Debian) or its other names.
fn chromium() -> Option<PathBuf> {
    std::env::var_os("PARAGON_CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| on_path(&["chromium", "chromium-browser", "google-chrome"]))
}

/// Runs headless Chromium on `url` with `action` (`--dump-dom`, `--screenshot=…`), letting
/// the page run for `virtual_ms` of virtual time (its timers, and its fetches, which
/// pause virtual time while they are out). Fails on an uncaught error in its log.
async fn browse(chromium: &Path, url: &str, action: &str, virtual_ms: u32) -> String {
    let profile = temp_dir("chromium-profile");
    let args: Vec<String> = [
        "--headless",
        // As root (CI) Chromium runs only without its sandbox.
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-proxy-server",
        "--enable-logging=stderr",
        "--window-size=1280,1700",
        "--hide-scrollbars",
    ]
    .into_iter()
    .map(String::from)
    .chain([
        format!("--user-data-dir={}", profile.display()),
        format!("--virtual-time-budget={virtual_ms}"),
        action.to_owned(),
        url.to_owned(),
    ])
    .collect();
    let ran = run(chromium, &args).await;
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        ran.success,
        "chromium {action} failed:\n{}\n{}",
        ran.stderr, ran.stdout
    );
    for line in ran.stderr.lines() {
        assert!(
            !(line.contains("Uncaught") || line.contains("CONSOLE") && line.contains("rror")),
            "the page logged an error in Chromium: {line}\n{}",
            ran.stderr
        );
    }
    ran.stdout
}

/// The figures the page published in `<output id="figures">`, from a dumped DOM.
fn figures(dom: &str) -> Value {
    let start = dom
        .find("id=\"figures\"")
        .unwrap_or_else(|| panic!("no figures in the page:\n{dom}"));
    let open = start
        + dom[start..]
            .find('>')
            .expect("the output element's tag ends")
        + 1;
    let close = open
        + dom[open..]
            .find("</output>")
            .expect("the output element ends");
    let text = dom[open..close]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("figures {text:?} are not JSON: {e}"))
}

/// Loads the page, and checks that it polled and recorded no error.
async fn load_figures(chromium: &Path, edge: &TestEdge) -> Value {
    let dom = browse(chromium, &edge.url("/admin/ui"), "--dump-dom", 3500).await;
    let f = figures(&dom);
    assert_eq!(f["errors"], serde_json::json!([]), "page errors: {f}");
    assert!(
        f["polls_ok"].as_u64().is_some_and(|n| n >= 2),
        "the page polled /admin/status at least twice: {f}"
    );
    f
}

/// `/admin/status` carries what the page charts beyond the layers' counters: upstream
/// latency quantiles, the breaker's recent transitions with their age, and the `/v1`
/// answers by status.
#[tokio::test]
async fn admin_status_has_latency_transitions_and_answers_by_status() {
    let edge = start_edge("[circuit_breaker]\nfailure_threshold = 1").await;
    let s = edge.status().await;
    assert_eq!(s["upstream"]["latency_ms"], Value::Null, "no call yet: {s}");
    assert_eq!(
        s["circuit_breaker"]["recent_transitions"],
        serde_json::json!([])
    );
    assert_eq!(s["answers"]["total"], 0);

    assert_eq!(edge.get("/v1/users/u1").await.status, 200);
    edge.sim
        .sim()
        .set_faults(all_failing())
        .expect("valid faults");
    assert_eq!(edge.get("/v1/users/f1").await.status, 502);
    assert_eq!(edge.get("/v1/users/f2").await.status, 503);
    assert_eq!(edge.get("/v1/users?ids=f3").await.status, 503);
    assert_eq!(edge.get("/healthz").await.status, 200);

    let s = edge.status().await;
    let latency = &s["upstream"]["latency_ms"];
    assert_eq!(latency["samples"], 2, "two calls reached ParagoN: {s}");
    let (p50, p99) = (
        latency["p50"].as_f64().expect("p50"),
        latency["p99"].as_f64().expect("p99"),
    );
    assert!(0.0 < p50 && p50 <= p99, "{latency}");
    let transitions = s["circuit_breaker"]["recent_transitions"]
        .as_array()
        .expect("transitions");
    assert_eq!(transitions.len(), 1, "{s}");
    assert_eq!(transitions[0]["from"], "closed");
    assert_eq!(transitions[0]["to"], "open");
    assert!(transitions[0]["ago_ms"]
        .as_u64()
        .is_some_and(|ms| ms < 10_000));
    assert_eq!(
        s["answers"],
        serde_json::json!({
            "total": 4,
            "by_status": {"429": 0, "502": 1, "503": 2, "504": 0},
        }),
        "/healthz is not a /v1 answer"
    );
}

/// `/admin/ui` is one open HTML page with nothing to load from elsewhere.
#[tokio::test]
async fn admin_ui_is_one_open_page_without_external_assets() {
    let edge = start_edge("[server]\nadmin_token = \"s3cret-token\"").await;
    let r = edge.get("/admin/ui").await;
    assert_eq!(r.status, 200, "no token needed to read: {}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    let csp = r.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let page = r.text();
    assert!(page.starts_with("<!doctype html>"), "{page}");
    assert!(
        !page.contains("s3cret-token"),
        "the token is never in the page"
    );
    // Every action the page offers exists and takes the typed token.
    let mut actions = BTreeSet::new();
    for chunk in page.split("data-action=\"").skip(1) {
        actions.insert(chunk.split('"').next().expect("a closing quote").to_owned());
    }
    assert_eq!(
        actions,
        BTreeSet::from(
            [
                "circuit-breaker/open",
                "circuit-breaker/close",
                "circuit-breaker/reset",
                "cache/purge",
                "rate-limit/resume",
                "config/reload",
            ]
            .map(String::from)
        )
    );
    for action in &actions {
        let path = format!("/admin/{action}");
        assert_eq!(edge.post(&path, None).await.status, 401, "{path}");
        let ok = edge.post(&path, Some("Bearer s3cret-token")).await;
        // This edge's config is not from a file: there is nothing to reload (409).
        let wanted = if action == "config/reload" { 409 } else { 200 };
        assert_eq!(ok.status, wanted, "{path}: {}", ok.text());
    }
}

/// In a real browser, the page loads without error, shows the live figures, and shows
/// the breaker opening and the 502s and 503s when ParagoN fails; a screenshot is kept in
/// `target/test-artifacts/admin-ui.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_ui_in_chromium_follows_a_failing_paragon() {
    let Some(chromium) = chromium() else {
        tool_missing(
            "chromium",
            "is not installed (Debian: apt-get install chromium)",
        );
        return;
    };
    let edge = start_edge("[circuit_breaker]\nfailure_threshold = 3\nopen_for = \"60s\"").await;
    for id in ["u1", "u1", "u2"] {
        assert_eq!(edge.get(&format!("/v1/users/{id}")).await.status, 200);
    }

    let before = load_figures(&chromium, &edge).await;
    assert_eq!(before["breaker_state"], "closed", "{before}");
    assert_eq!(before["breaker_transitions"], serde_json::json!([]));
    let ratio = before["hit_ratio"].as_f64().expect("a hit ratio");
    assert!(
        (ratio - 1.0 / 3.0).abs() < 1e-9,
        "one hit of three: {before}"
    );
    assert_eq!(before["cache_entries"], 2, "{before}");
    assert!(
        before["latency_p50_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{before}"
    );
    assert_eq!(before["answers_502"], 0, "{before}");
    assert_eq!(before["answers_503"], 0, "{before}");
    assert_eq!(before["redis"], "off", "{before}");
    assert!(before["budget_available"].as_f64().is_some(), "{before}");

    // ParagoN fails every call: three 502s open the breaker, then it fails fast (503).
    edge.sim
        .sim()
        .set_faults(all_failing())
        .expect("valid faults");
    for id in ["f1", "f2", "f3"] {
        assert_eq!(edge.get(&format!("/v1/users/{id}")).await.status, 502);
    }
    wait_until("the breaker opens", || async {
        edge.status().await["circuit_breaker"]["state"] == "open"
    })
    .await;
    for id in ["f4", "f5"] {
        assert_eq!(edge.get(&format!("/v1/users/{id}")).await.status, 503);
    }

    let after = load_figures(&chromium, &edge).await;
    assert_eq!(after["breaker_state"], "open", "{after}");
    assert_eq!(
        after["breaker_transitions"],
        serde_json::json!(["closed->open"]),
        "{after}"
    );
    assert_eq!(after["answers_502"], 3, "{after}");
    assert_eq!(after["answers_503"], 2, "{after}");
    let after_ratio = after["hit_ratio"].as_f64().expect("a hit ratio");
    assert!(after_ratio < ratio, "more misses, a lower ratio: {after}");

    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp is in the target directory")
        .join("test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("the artifacts directory");
    let png = artifacts.join("admin-ui.png");
    let _ = std::fs::remove_file(&png);
    browse(
        &chromium,
        &edge.url("/admin/ui"),
        &format!("--screenshot={}", png.display()),
        3500,
    )
    .await;
    let bytes = std::fs::read(&png).expect("the screenshot was written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        bytes.len() > 20_000,
        "a page, not a blank: {} bytes",
        bytes.len()
    );
}

// ---------------------------------------------------------------------------------------
// /openapi.json

/// `openapi-spec-validator`: `PARAGON_OPENAPI_VALIDATOR` (scripts/test installs it in a
/// virtual environment under target/), else on `PATH`.
fn openapi_validator() -> Option<PathBuf> {
    std::env::var_os("PARAGON_OPENAPI_VALIDATOR")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| on_path(&["openapi-spec-validator"]))
}

/// The routes of the contract's HTTP API, with their methods.
const API_ROUTES: [(&str, &str); 12] = [
    ("/v1/users/{id}", "get"),
    ("/v1/users", "get"),
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/metrics", "get"),
    ("/admin/status", "get"),
    ("/admin/ui", "get"),
    ("/openapi.json", "get"),
    ("/admin/circuit-breaker/{action}", "post"),
    ("/admin/cache/purge", "post"),
    ("/admin/rate-limit/resume", "post"),
    ("/admin/config/reload", "post"),
];

#[tokio::test]
async fn openapi_document_lists_the_api_and_passes_a_validator() {
    let edge = start_edge("[server]\nadmin_token = \"s3cret-token\"").await;
    let r = edge.get("/openapi.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let doc = r.json();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in API_ROUTES {
        assert!(
            paths.get(path).is_some_and(|p| p.get(method).is_some()),
            "{method} {path} is not in the document: {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
    // Each documented route is served: a GET answers, and a POST wants the token.
    for (path, item) in paths {
        let concrete = path.replace("{id}", "u1").replace("{action}", "reset")
            + if path == "/v1/users" { "?ids=u1" } else { "" };
        for method in item.as_object().expect("a path item").keys() {
            let got = match method.as_str() {
                "get" => edge.get(&concrete).await.status,
                "post" => edge.post(&concrete, None).await.status,
                other => panic!("{other} {path}: the API has only GET and POST"),
            };
            let expected = if method == "get" { 200 } else { 401 };
            assert_eq!(got, expected, "{method} {concrete}");
        }
    }
    let problem = &doc["components"]["schemas"]["Problem"];
    for field in ["type", "title", "status", "detail"] {
        assert!(
            problem["properties"].get(field).is_some(),
            "Problem has {field}: {problem}"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["admin_token"]["scheme"],
        "bearer"
    );

    let Some(validator) = openapi_validator() else {
        tool_missing(
            "openapi-spec-validator",
            "is not installed (pip install openapi-spec-validator)",
        );
        return;
    };
    let dir = temp_dir("openapi");
    let file = dir.join("openapi.json");
    std::fs::write(&file, &r.body).expect("write the document");
    let ran = run(&validator, &[file.display().to_string()]).await;
    assert!(
        ran.success,
        "the validator refused the document:\n{}{}",
        ran.stdout, ran.stderr
    );
    // The validator does reject a broken document: a response without its description.
    let mut broken = doc.clone();
    broken["paths"]["/healthz"]["get"]["responses"]["200"]
        .as_object_mut()
        .expect("a response")
        .remove("description");
    let bad = dir.join("broken.json");
    std::fs::write(&bad, serde_json::to_vec(&broken).expect("JSON")).expect("write");
    let ran = run(&validator, &[bad.display().to_string()]).await;
    assert!(
        !ran.success,
        "the validator accepted a response without a description:\n{}",
        ran.stdout
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// deploy/: the Grafana dashboard and the Prometheus alert rules

/// `promtool` (Debian's `prometheus` package).
fn promtool() -> Option<PathBuf> {
    on_path(&["promtool"])
}

/// Every metric a PromQL text names (`paragon_edge_…`), with the `label="value"` pairs it
/// requires exactly.
fn referenced(text: &str) -> BTreeMap<String, BTreeSet<(String, String)>> {
    let mut found: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let mut rest = text;
    while let Some(at) = rest.find("paragon_edge_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        let labels = found.entry(name).or_default();
        if let Some(selector) = tail[end..].strip_prefix('{') {
            let selector = &selector[..selector.find('}').expect("a closed selector")];
            for matcher in selector.split(',') {
                // Only exact matchers name a value that must exist (`=~`, `!=` may not).
                if let Some((k, v)) = matcher.split_once('=') {
                    let (k, v) = (k.trim(), v.trim());
                    if !k.ends_with('!') && !v.starts_with('~') && !v.contains('$') {
                        let v = v.trim_matches(|c| c == '"' || c == '\\');
                        labels.insert((k.to_owned(), v.to_owned()));
                    }
                }
            }
        }
        rest = &tail[end..];
    }
    found
}

/// The samples of a Prometheus text: each name with the label sets it is exposed with.
fn exposed(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut samples: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = line[end..]
            .strip_prefix('{')
            .and_then(|l| l.split_once('}'))
            .map_or("", |(l, _)| l);
        samples
            .entry(line[..end].to_owned())
            .or_default()
            .push(labels.to_owned());
    }
    samples
}

#[tokio::test]
async fn dashboard_and_alerts_name_only_metrics_a_live_edge_exposes() {
    let deploy = repo_root().join("deploy");
    let rules_file = deploy.join("prometheus/paragon-edge-alerts.yml");
    let rules = std::fs::read_to_string(&rules_file).expect("the alert rules");
    let dashboard_text =
        std::fs::read_to_string(deploy.join("grafana/paragon-edge-dashboard.json"))
            .expect("the dashboard");
    let dashboard: Value = serde_json::from_str(&dashboard_text).expect("the dashboard is JSON");

    // The dashboard's queries: every panel (rows aside) has at least one.
    let mut queries = String::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "a panel without a query: {panel}");
        for t in targets {
            queries.push_str(t["expr"].as_str().expect("a PromQL expr"));
            queries.push('\n');
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if let Some(q) = variable["definition"].as_str() {
            queries.push_str(q);
            queries.push('\n');
        }
    }

    // A live edge with every family exposed: a breaker that opened, a cache, a limiter,
    // and a Redis backend that is down (so `paragon_edge_redis_up` is there, at 0).
    let port = common::closed_port();
    let edge = start_edge_with(
        &format!(
            "[circuit_breaker]\nfailure_threshold = 2\n\
             [rate_limit]\nbackend = \"redis\"\n\
             [redis]\nurl = \"redis://127.0.0.1:{port}\""
        ),
        SimConfig::default(),
    )
    .await;
    assert_eq!(edge.get("/v1/users/u1").await.status, 200);
    assert_eq!(edge.get("/v1/users/u1").await.status, 200);
    edge.sim
        .sim()
        .set_faults(all_failing())
        .expect("valid faults");
    for id in ["f1", "f2"] {
        assert_eq!(edge.get(&format!("/v1/users/{id}")).await.status, 502);
    }
    assert_eq!(edge.get("/v1/users/f3").await.status, 503);
    wait_until("Redis is seen down", || async {
        edge.metrics().await.contains("paragon_edge_redis_up 0")
    })
    .await;
    let text = edge.metrics().await;
    let samples = exposed(&text);

    for (what, source) in [("alert rules", &rules), ("dashboard", &queries)] {
        let names = referenced(source);
        assert!(names.len() >= 8, "the {what} name few metrics: {names:?}");
        for (name, labels) in &names {
            let Some(sets) = samples.get(name) else {
                panic!("the {what} name {name}, which /metrics does not expose:\n{text}");
            };
            for (k, v) in labels {
                let pair = format!("{k}=\"{v}\"");
                assert!(
                    sets.iter().any(|s| s.split(',').any(|p| p == pair)),
                    "the {what} select {name}{{{pair}}}, never exposed: {sets:?}"
                );
            }
        }
    }
    for needed in [
        "paragon_edge_circuit_breaker_state",
        "paragon_edge_rate_limit_rejections_total",
        "paragon_edge_rate_limit_upstream_429_total",
        "paragon_edge_redis_up",
        "paragon_edge_http_requests_total",
    ] {
        assert!(
            referenced(&rules).contains_key(needed),
            "no alert on {needed}"
        );
    }
    for needed in [
        "paragon_edge_upstream_latency_seconds_bucket",
        "paragon_edge_cache_hits_total",
        "paragon_edge_cache_bytes",
        "paragon_edge_circuit_breaker_state",
        "paragon_edge_redis_up",
        "paragon_edge_retry_budget_exhausted_total",
    ] {
        assert!(
            referenced(&queries).contains_key(needed),
            "no panel on {needed}"
        );
    }

    let Some(promtool) = promtool() else {
        tool_missing(
            "promtool",
            "is not installed (Debian: apt-get install prometheus)",
        );
        return;
    };
    let check = run(
        &promtool,
        &[
            "check".into(),
            "rules".into(),
            rules_file.display().to_string(),
        ],
    )
    .await;
    assert!(
        check.success,
        "promtool check rules:\n{}{}",
        check.stdout, check.stderr
    );
    let tests = run(
        &promtool,
        &[
            "test".into(),
            "rules".into(),
            deploy
                .join("prometheus/paragon-edge-alerts.test.yml")
                .display()
                .to_string(),
        ],
    )
    .await;
    assert!(
        tests.success,
        "promtool test rules:\n{}{}",
        tests.stdout, tests.stderr
    );
}

#[test]
fn promql_references_are_read_with_their_exact_labels() {
    let found = referenced(
        "sum(rate(paragon_edge_x_total{route=~\"user|batch\", status=\"502\", \
         instance=~\"$instance\"}[5m])) / paragon_edge_y == 0 or paragon_edge_z{a!=\"b\"}",
    );
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        ["paragon_edge_x_total", "paragon_edge_y", "paragon_edge_z"]
    );
    assert_eq!(
        found["paragon_edge_x_total"],
        BTreeSet::from([("status".to_owned(), "502".to_owned())])
    );
    assert!(found["paragon_edge_z"].is_empty());
    let samples = exposed("# HELP a b\na_total{x=\"1\",y=\"2\"} 3\nb 1\n");
    assert_eq!(samples["a_total"], ["x=\"1\",y=\"2\""]);
    assert_eq!(samples["b"], [""]);
}
