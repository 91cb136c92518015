//! Reloading the configuration while serving, over real sockets: `POST
//! /admin/config/reload` re-reads the file the edge started from (and the environment),
//! and SIGHUP does the same in the real binary.
//!
//! Each test writes its own configuration file, starts an edge from it with
//! `Settings::load` (as the binary does) in front of its own simulator, rewrites the
//! file and reloads.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{all_failing, assert_problem, client, start_sim, wait_until, WAIT};
use paragon_edge::app::AppState;
use paragon_edge::config::Settings;
use paragon_layers::Clock;
use paragon_sim::{SimConfig, SimHandle};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const TOKEN: &str = "reload-token";

/// A configuration file of its own for one test.
fn config_file(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("paragon-edge-reload");
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(format!("{name}-{}.toml", std::process::id()))
}

/// An edge started from a configuration file, in front of its own simulator.
struct FileEdge {
    path: PathBuf,
    base_url: String,
    addr: std::net::SocketAddr,
    state: AppState,
    sim: SimHandle,
    http: reqwest::Client,
    _stop: oneshot::Sender<()>,
}

/// Answer of one request: status, headers, body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl FileEdge {
    /// Writes `toml` (with the simulator as upstream) to the edge's file and starts the
    /// edge from it.
    async fn start(name: &str, toml: &str, sim: SimConfig) -> FileEdge {
        let sim = start_sim(sim).await;
        let base_url = sim.base_url();
        let path = config_file(name);
        std::fs::write(&path, with_upstream(toml, &base_url)).expect("write config");
        let settings = Settings::load(Some(&path)).expect("a valid test configuration");
        let edge = paragon_edge::server::build(settings, Clock::tokio())
            .await
            .expect("the edge builds");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(paragon_edge::server::run(
            listener,
            edge.state.clone(),
            async move {
                let _ = rx.await;
            },
            std::time::Duration::from_secs(1),
        ));
        FileEdge {
            path,
            base_url,
            addr,
            state: edge.state,
            sim,
            http: client(),
            _stop: tx,
        }
    }

    /// Replaces the file's text (the simulator stays the upstream).
    fn rewrite(&self, toml: &str) {
        std::fs::write(&self.path, with_upstream(toml, &self.base_url)).expect("rewrite config");
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn answer(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a complete body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        let r = self.http.get(self.url(path)).send().await.expect("answer");
        Self::answer(r).await
    }

    /// `POST /admin/config/reload` with `Authorization: Bearer <token>` when given.
    async fn reload_with(&self, token: Option<&str>) -> common::Resp {
        let mut rb = self.http.post(self.url("/admin/config/reload"));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let r = rb.send().await.expect("answer");
        common::Resp {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.bytes().await.expect("body"),
        }
    }

    /// Reloads with the right token and expects `200`; the keys it says changed.
    async fn reload_ok(&self) -> Vec<String> {
        let r = self.reload_with(Some(TOKEN)).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["changed"]
            .as_array()
            .unwrap_or_else(|| panic!("no changed list in {}", r.text()))
            .iter()
            .map(|k| k.as_str().expect("a key").to_owned())
            .collect()
    }

    async fn status(&self) -> Value {
        let a = self.get("/admin/status").await;
        assert_eq!(a.status, 200);
        a.body
    }

    fn x_cache(a: &Answer) -> String {
        a.headers
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }
}

/// `toml` with `[upstream] base_url` set (added to an `[upstream]` table of `toml`, or
/// as a table of its own).
fn with_upstream(toml: &str, base_url: &str) -> String {
    let line = format!("base_url = \"{base_url}\"\n");
    if toml.contains("[upstream]\n") {
        toml.replacen("[upstream]\n", &format!("[upstream]\n{line}"), 1)
    } else {
        format!("{toml}\n[upstream]\n{line}")
    }
}

fn server(extra: &str) -> String {
    format!("[server]\nadmin_token = \"{TOKEN}\"\n{extra}")
}

#[tokio::test]
async fn a_rate_change_under_load_loses_no_request_and_keeps_the_cache() {
    let base = server("");
    let edge = Arc::new(
        FileEdge::start(
            "under-load",
            &format!("{base}[rate_limit]\nmax_requests = 2000\n"),
            SimConfig::default(),
        )
        .await,
    );
    assert_eq!(FileEdge::x_cache(&edge.get("/v1/users/warm").await), "MISS");
    assert_eq!(FileEdge::x_cache(&edge.get("/v1/users/warm").await), "HIT");
    assert_eq!(edge.sim.sim().served("/users/warm"), 1);

    // Clients keep asking, for the cached user and for new ones, while the rate changes
    // again and again under them.
    let done = Arc::new(AtomicUsize::new(0));
    const CLIENTS: usize = 8;
    const EACH: usize = 40;
    let mut load = Vec::new();
    for c in 0..CLIENTS {
        let (edge, done) = (edge.clone(), done.clone());
        load.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..EACH {
                let path = if i % 2 == 0 {
                    "/v1/users/warm".to_owned()
                } else {
                    format!("/v1/users/load-{c}-{i}")
                };
                let r = edge
                    .http
                    .get(edge.url(&path))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("GET {path} during the reloads: {e}"));
                let hit = r.headers().get("x-cache").is_some_and(|v| v == "HIT");
                statuses.push((path, r.status().as_u16(), hit));
                let _ = r.bytes().await.expect("a complete body");
            }
            done.fetch_add(1, Ordering::SeqCst);
            statuses
        }));
    }
    let mut reloads = 0;
    let mut max_requests = 2000;
    while done.load(Ordering::SeqCst) < CLIENTS || reloads < 3 {
        max_requests = if max_requests == 2000 { 1000 } else { 2000 };
        edge.rewrite(&format!(
            "{base}[rate_limit]\nmax_requests = {max_requests}\n"
        ));
        assert_eq!(edge.reload_ok().await, ["rate_limit.max_requests"]);
        reloads += 1;
    }
    for task in load {
        for (path, status, hit) in task.await.expect("a client task") {
            assert_eq!(status, 200, "GET {path} during the reloads");
            if path == "/v1/users/warm" {
                assert!(hit, "the cached user stays a HIT through the reloads");
            }
        }
    }
    // The entry cached before the reloads is still served, with no new upstream call.
    assert_eq!(FileEdge::x_cache(&edge.get("/v1/users/warm").await), "HIT");
    assert_eq!(edge.sim.sim().served("/users/warm"), 1);
    let status = edge.status().await;
    assert_eq!(status["rate_limit"]["max_requests"], max_requests);
    assert_eq!(edge.state.reloads(), reloads);
}

#[tokio::test]
async fn the_budget_spent_is_kept_when_the_rate_changes() {
    let base = server("");
    let edge = FileEdge::start(
        "budget",
        &format!("{base}[rate_limit]\nmax_requests = 10\n"),
        SimConfig::default(),
    )
    .await;
    for i in 0..6 {
        assert_eq!(edge.get(&format!("/v1/users/spend-{i}")).await.status, 200);
    }
    assert_eq!(edge.status().await["rate_limit"]["available"], 4);

    // A lower rate: the six calls sent count against it; no fresh bucket.
    edge.rewrite(&format!("{base}[rate_limit]\nmax_requests = 5\n"));
    assert_eq!(edge.reload_ok().await, ["rate_limit.max_requests"]);
    let status = edge.status().await;
    assert_eq!(status["rate_limit"]["max_requests"], 5);
    assert_eq!(status["rate_limit"]["available"], 0);
    let refused = edge.get("/v1/users/spend-over").await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(edge.sim.sim().served("/users/spend-over"), 0);

    // A higher rate: still the six calls spent, at the new price (20 - 6).
    edge.rewrite(&format!("{base}[rate_limit]\nmax_requests = 20\n"));
    assert_eq!(edge.reload_ok().await, ["rate_limit.max_requests"]);
    assert_eq!(edge.status().await["rate_limit"]["available"], 14);
    assert_eq!(edge.get("/v1/users/spend-again").await.status, 200);
}

#[tokio::test]
async fn an_invalid_reload_changes_nothing() {
    let base = server("");
    let good = format!("{base}[rate_limit]\nmax_requests = 50\n");
    let edge = FileEdge::start("invalid", &good, SimConfig::default()).await;
    assert_eq!(edge.get("/v1/users/kept").await.status, 200);
    let before = edge.status().await;

    for (text, key) in [
        (
            format!("{base}[rate_limit]\nmax_requests = 0\n"),
            "rate_limit.max_requests",
        ),
        (format!("{base}[cache]\nttll = \"1s\"\n"), "ttll"),
        (
            format!("{base}[circuit_breaker]\nfailure_rate = 2.0\n"),
            "circuit_breaker.failure_rate",
        ),
        (
            format!("{base}[server]\nbrowser_cache = \"public\"\n"),
            "server",
        ),
    ] {
        edge.rewrite(&text);
        let r = edge.reload_with(Some(TOKEN)).await;
        assert_problem(&r, 400);
        let detail = r.json()["detail"].as_str().expect("detail").to_owned();
        assert!(detail.contains(key), "{detail:?} does not name {key}");
        let after = edge.status().await;
        assert_eq!(after["rate_limit"]["max_requests"], 50, "{text}");
        assert_eq!(after["circuit_breaker"], before["circuit_breaker"]);
        let kept = edge.get("/v1/users/kept").await;
        assert_eq!(
            (kept.status, FileEdge::x_cache(&kept).as_str()),
            (200, "HIT")
        );
    }
    assert_eq!(edge.sim.sim().served("/users/kept"), 1);
    assert_eq!(edge.state.reloads(), 0);
    // The token is the one in force: still required, and still the old one.
    assert_eq!(edge.reload_with(None).await.status, 401);
    assert_eq!(edge.reload_with(Some("wrong")).await.status, 401);
    edge.rewrite(&good);
    assert_eq!(edge.reload_ok().await, Vec::<String>::new());
}

#[tokio::test]
async fn without_an_admin_token_the_reload_action_does_not_exist() {
    let edge = FileEdge::start("no-token", "", SimConfig::default()).await;
    let r = edge.reload_with(Some(TOKEN)).await;
    assert_problem(&r, 404);
}

#[tokio::test]
async fn a_key_that_needs_a_restart_refuses_the_whole_file() {
    let base = server("");
    let edge = FileEdge::start(
        "restart",
        &format!("{base}[rate_limit]\nmax_requests = 50\n"),
        SimConfig::default(),
    )
    .await;
    for (text, key) in [
        (
            format!(
                "{}[rate_limit]\nmax_requests = 70\n",
                server("listen = \"127.0.0.1:1\"\n")
            ),
            "server.listen",
        ),
        (
            format!("{base}[rate_limit]\nmax_requests = 70\n[redis]\nkey_prefix = \"other:\"\n"),
            "redis.key_prefix",
        ),
        (
            format!("{base}[rate_limit]\nmax_requests = 70\nbackend = \"redis\"\n"),
            "rate_limit.backend",
        ),
        (
            format!("{base}[rate_limit]\nmax_requests = 70\n[cache]\nbackend = \"redis\"\n"),
            "cache.backend",
        ),
        (
            format!("{base}[rate_limit]\nmax_requests = 70\n[cache]\nenabled = false\n"),
            "cache.enabled",
        ),
    ] {
        edge.rewrite(&text);
        let r = edge.reload_with(Some(TOKEN)).await;
        assert_problem(&r, 400);
        let p = r.json();
        assert_eq!(
            p["type"].as_str().map(|t| t.ends_with("needs-restart")),
            Some(true),
            "{p}"
        );
        let detail = p["detail"].as_str().expect("detail");
        assert!(
            detail.contains(key) && detail.contains("restart"),
            "{detail:?} does not say that {key} needs a restart"
        );
        assert!(
            !detail.contains("rate_limit.max_requests"),
            "{detail:?}: only the restart key is named"
        );
        // Refused whole: the rate that could have changed did not.
        assert_eq!(edge.status().await["rate_limit"]["max_requests"], 50);
    }
    assert_eq!(edge.state.reloads(), 0);
}

#[tokio::test]
async fn the_answer_lists_every_changed_key_sorted_and_they_take_effect() {
    let base = server("");
    let edge = FileEdge::start("changed", &base, SimConfig::default()).await;
    let first = edge.get("/v1/users/cc").await;
    assert_eq!(
        first
            .headers
            .get("cache-control")
            .map(|v| v.to_str().unwrap()),
        Some("private, no-cache")
    );

    edge.rewrite(&format!(
        "{}[retry]\nenabled = true\nmax_attempts = 3\n[circuit_breaker]\nfailure_threshold = 9\n[cache]\nttl = \"30s\"\n[upstream]\ndeadline = \"3s\"\n",
        server("browser_cache = \"max-age=30\"\nmax_batch_ids = 2\n")
    ));
    assert_eq!(
        edge.reload_ok().await,
        [
            "cache.ttl",
            "circuit_breaker.failure_threshold",
            "retry.enabled",
            "retry.max_attempts",
            "server.browser_cache",
            "server.max_batch_ids",
            "upstream.deadline",
        ]
    );
    // Each is in force now.
    let cc = edge.get("/v1/users/cc").await;
    assert_eq!(FileEdge::x_cache(&cc), "HIT", "the entry is kept");
    assert_eq!(
        cc.headers.get("cache-control").map(|v| v.to_str().unwrap()),
        Some("private, max-age=30")
    );
    assert_eq!(edge.get("/v1/users?ids=a,b,c").await.status, 400);
    let status = edge.status().await;
    assert_eq!(status["retry"]["enabled"], true);
    assert_eq!(status["retry"]["max_attempts"], 3);
    assert_eq!(status["retry"]["deadline_ms"], 3000);
    // The same file again changes nothing.
    assert_eq!(edge.reload_ok().await, Vec::<String>::new());
    assert_eq!(edge.state.reloads(), 1);

    // A new admin token is in force at once: the old one no longer works.
    edge.rewrite(
        "[server]\nadmin_token = \"next-token\"\nbrowser_cache = \"max-age=30\"\nmax_batch_ids = 2\n[retry]\nenabled = true\nmax_attempts = 3\n[circuit_breaker]\nfailure_threshold = 9\n[cache]\nttl = \"30s\"\n[upstream]\ndeadline = \"3s\"\n",
    );
    assert_eq!(edge.reload_ok().await, ["server.admin_token"]);
    assert_eq!(edge.reload_with(Some(TOKEN)).await.status, 401);
    assert_eq!(edge.reload_with(Some("next-token")).await.status, 200);
}

#[tokio::test]
async fn client_limits_change_and_keep_what_each_client_spent() {
    let base = server("");
    let edge = FileEdge::start(
        "clients",
        &format!("{base}[client_limit]\nenabled = true\nmax_requests = 3\n"),
        SimConfig::default(),
    )
    .await;
    for i in 0..3 {
        assert_eq!(edge.get(&format!("/v1/users/c-{i}")).await.status, 200);
    }
    assert_eq!(edge.get("/v1/users/c-3").await.status, 429);

    edge.rewrite(&format!(
        "{base}[client_limit]\nenabled = true\nmax_requests = 5\n"
    ));
    assert_eq!(edge.reload_ok().await, ["client_limit.max_requests"]);
    // Three of the five spent already: two more, not five.
    for i in 4..6 {
        assert_eq!(edge.get(&format!("/v1/users/c-{i}")).await.status, 200);
    }
    assert_eq!(edge.get("/v1/users/c-6").await.status, 429);
}

#[tokio::test]
async fn the_breaker_keeps_its_state_through_a_reload() {
    let base = server("");
    let edge = FileEdge::start(
        "breaker",
        &format!("{base}[circuit_breaker]\nfailure_threshold = 2\nopen_for = \"60s\"\n"),
        SimConfig::default(),
    )
    .await;
    edge.sim.sim().set_faults(all_failing()).expect("faults");
    for i in 0..2 {
        assert_eq!(edge.get(&format!("/v1/users/down-{i}")).await.status, 502);
    }
    assert_eq!(edge.status().await["circuit_breaker"]["state"], "open");
    let served = edge.sim.sim().served_total();

    edge.rewrite(&format!(
        "{base}[circuit_breaker]\nfailure_threshold = 3\nopen_for = \"30s\"\n"
    ));
    assert_eq!(
        edge.reload_ok().await,
        [
            "circuit_breaker.failure_threshold",
            "circuit_breaker.open_for"
        ]
    );
    let status = edge.status().await;
    assert_eq!(status["circuit_breaker"]["state"], "open");
    assert_eq!(status["circuit_breaker"]["transitions"], 1);
    // Still open: fails fast, no upstream call.
    assert_eq!(edge.get("/v1/users/down-2").await.status, 503);
    assert_eq!(edge.sim.sim().served_total(), served);
}

#[tokio::test]
async fn sighup_reloads_the_file_the_binary_started_with() {
    let path = config_file("sighup");
    let write = |max: u32| {
        std::fs::write(
            &path,
            format!("[server]\nlisten = \"127.0.0.1:0\"\n[rate_limit]\nmax_requests = {max}\n"),
        )
        .expect("write config");
    };
    write(100);
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_paragon-edge"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PARAGON") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("read the log") {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["fields"]["message"] == "paragon-edge serving" {
                return v["fields"]["listen"].as_str().expect("listen").to_owned();
            }
        }
        panic!("the binary exited before serving");
    })
    .await
    .expect("the edge starts serving");
    // Keep reading the log so the binary never blocks on a full pipe.
    let log = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log2 = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            log2.lock().expect("log").push(line);
        }
    });
    let http = client();
    let max_requests = || {
        let (http, addr) = (http.clone(), addr.clone());
        async move {
            let r = http
                .get(format!("http://{addr}/admin/status"))
                .send()
                .await
                .expect("status answers");
            r.json::<Value>().await.expect("JSON")["rate_limit"]["max_requests"].clone()
        }
    };
    assert_eq!(max_requests().await, 100);

    write(250);
    let pid = child.id().expect("running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    wait_until("the SIGHUP reload to take effect", || async {
        max_requests().await == 250
    })
    .await;
    assert!(
        child.try_wait().expect("wait").is_none(),
        "still running after SIGHUP"
    );
    wait_until("the reload's log line", || async {
        log.lock()
            .expect("log")
            .iter()
            .any(|l| l.contains("configuration reloaded") && l.contains("rate_limit.max_requests"))
    })
    .await;

    // An invalid file on SIGHUP changes nothing and says so in the log.
    write(0);
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    wait_until("the refused reload's log line", || async {
        log.lock().expect("log").iter().any(|l| {
            l.contains("configuration reload refused") && l.contains("rate_limit.max_requests")
        })
    })
    .await;
    assert_eq!(max_requests().await, 250);
    child.kill().await.expect("kill");
}
