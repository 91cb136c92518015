//! The `paragon-edge` binary (CONTRACT §3, §4): `check-config`, environment overrides,
//! `PARAGON_API_KEY`, the embedded simulator, and SIGTERM.

#![allow(
    clippy::disallowed_methods,
    reason = "tests time real processes and sockets"
)]

mod common;

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};

use common::{client, start_sim, WAIT};
use paragon_sim::SimConfig;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_paragon-edge");

/// A configuration file of its own for one test.
fn config_file(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("paragon-edge-cli");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write config");
    path
}

/// The binary, with no `PARAGON*` variables inherited from the environment.
fn command() -> std::process::Command {
    let mut c = std::process::Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PARAGON") {
            c.env_remove(key);
        }
    }
    c.env("RUST_LOG", "info");
    c
}

fn check_config(file: &PathBuf, env: &[(&str, &str)]) -> Output {
    let mut c = command();
    c.arg("check-config").arg("--config").arg(file);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the binary runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn check_config_prints_the_effective_config_with_secrets_redacted() {
    let file = config_file(
        "ok",
        r#"
[server]
admin_token = "adm-SECRET-77"
[upstream]
base_url = "http://127.0.0.1:9"
api_key = "sk-live-SECRETVALUE42"
[cache]
ttl = "42s"
"#,
    );
    let o = check_config(&file, &[]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "exit {:?}: {err}", o.status);
    assert!(out.contains("<redacted>"), "{out}");
    assert!(out.contains("ttl = \"42s\""), "{out}");
    assert!(out.contains("base_url = \"http://127.0.0.1:9\""), "{out}");
    for secret in ["sk-live-SECRETVALUE42", "adm-SECRET-77"] {
        assert!(!out.contains(secret), "stdout shows {secret}: {out}");
        assert!(!err.contains(secret), "stderr shows {secret}: {err}");
    }
    // What it prints is the whole configuration, with the defaults filled in.
    let printed: paragon_edge::config::Config = toml::from_str(&out).expect("a config in TOML");
    assert_eq!(printed.server.max_batch_ids, 100);
    assert_eq!(printed.circuit_breaker.failure_threshold, 5);

    // The key from PARAGON_API_KEY is redacted as well.
    let file = config_file("ok-env", "[upstream]\nbase_url = \"http://127.0.0.1:9\"\n");
    let o = check_config(&file, &[("PARAGON_API_KEY", "sk-from-env-SECRET-99")]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("<redacted>"),
        "the env key is in effect: {out}"
    );
    assert!(!out.contains("sk-from-env-SECRET-99") && !err.contains("sk-from-env-SECRET-99"));
}

#[test]
fn check_config_rejects_bad_values_naming_the_key() {
    let cases = [
        ("typo", "[cache]\nttll = \"1s\"\n", vec!["cache", "ttll"]),
        (
            "typo-section",
            "[upstreem]\ntimeout = \"1s\"\n",
            vec!["upstreem"],
        ),
        (
            "zero-duration",
            "[upstream]\ntimeout = \"0s\"\n",
            vec!["upstream.timeout"],
        ),
        (
            "negative-duration",
            "[cache]\nttl = \"-5s\"\n",
            vec!["cache.ttl"],
        ),
        (
            "not-a-duration",
            "[rate_limit]\nwindow = \"soon\"\n",
            vec!["rate_limit.window"],
        ),
        (
            "failure-rate",
            "[circuit_breaker]\nfailure_rate = 1.5\n",
            vec!["circuit_breaker.failure_rate"],
        ),
        (
            "bad-url",
            "[upstream]\nbase_url = \"not a url\"\n",
            vec!["upstream.base_url"],
        ),
        (
            "bad-scheme",
            "[upstream]\nbase_url = \"ftp://example.com\"\n",
            vec!["upstream.base_url"],
        ),
        (
            "zero-batch",
            "[server]\nmax_batch_ids = 0\n",
            vec!["server.max_batch_ids"],
        ),
    ];
    for (name, toml, keys) in cases {
        // A secret in the same file must not leak into the error either.
        let file = config_file(
            &format!("bad-{name}"),
            &format!("{toml}\n[redis]\nurl = \"redis://:pw-SECRET-5@127.0.0.1:6379\"\n"),
        );
        let o = check_config(&file, &[]);
        let (out, err) = text(&o);
        assert!(!o.status.success(), "{name}: accepted:\n{out}");
        let all = format!("{out}{err}");
        for key in keys {
            assert!(
                all.contains(key),
                "{name}: message does not name {key}: {all}"
            );
        }
        assert!(!all.contains("pw-SECRET-5"), "{name}: {all}");
    }
}

#[test]
fn environment_overrides_apply_and_are_validated() {
    let file = config_file("env", "[upstream]\nbase_url = \"http://127.0.0.1:9\"\n");

    let o = check_config(&file, &[("PARAGON_EDGE__CACHE__TTL", "7s")]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("ttl = \"7s\""), "the override applies: {out}");

    let o = check_config(&file, &[("PARAGON_EDGE__UPSTREAM__TIMEOUT", "0s")]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "accepted:\n{out}");
    assert!(
        format!("{out}{err}").contains("upstream.timeout"),
        "does not name upstream.timeout: {err}"
    );
}

#[test]
fn a_list_may_be_given_comma_separated_in_the_environment() {
    let file = config_file(
        "env-list",
        "[upstream]\nbase_url = \"http://127.0.0.1:9\"\n",
    );
    let o = check_config(
        &file,
        &[(
            "PARAGON_EDGE__SERVER__CORS_ALLOWED_ORIGINS",
            "http://localhost:3000, https://app.example",
        )],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let printed: paragon_edge::config::Config = toml::from_str(&out).expect("a config in TOML");
    assert_eq!(
        printed.server.cors_allowed_origins,
        ["http://localhost:3000", "https://app.example"]
    );

    // One origin alone is a list of one; a bad one is still refused by name.
    let o = check_config(
        &file,
        &[(
            "PARAGON_EDGE__SERVER__CORS_ALLOWED_ORIGINS",
            "http://localhost:3000",
        )],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("cors_allowed_origins = [\"http://localhost:3000\"]"),
        "{out}"
    );
    let o = check_config(
        &file,
        &[("PARAGON_EDGE__SERVER__CORS_ALLOWED_ORIGINS", "localhost")],
    );
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("server.cors_allowed_origins"),
        "{:?}",
        text(&o)
    );
}

#[test]
fn help_names_what_a_first_run_needs() {
    let o = command().arg("--help").output().expect("the binary runs");
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    for needed in [
        "127.0.0.1:8080",
        "simulat",
        "PARAGON_API_KEY",
        "RUST_LOG",
        "PARAGON_EDGE__",
        "check-config",
    ] {
        assert!(
            out.contains(needed),
            "--help does not mention {needed}:\n{out}"
        );
    }
}

#[test]
fn check_config_without_the_file_fails() {
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-config.toml");
    let o = check_config(&missing, &[]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("no-such-config.toml"));
}

/// A running `paragon-edge`, its stderr collected line by line.
struct Running {
    child: tokio::process::Child,
    lines: mpsc::UnboundedReceiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

fn spawn(args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut c = tokio::process::Command::from(command());
    c.args(args)
        .arg("--log-format")
        .arg("json")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = c.spawn().expect("the binary starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, lines) = mpsc::unbounded_channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            log2.lock().expect("log lock").push(line.clone());
            let _ = tx.send(line);
        }
    });
    Running { child, lines, log }
}

impl Running {
    /// Waits for the "serving" log line and returns the address it names.
    async fn listen_addr(&mut self) -> String {
        tokio::time::timeout(WAIT, async {
            while let Some(line) = self.lines.recv().await {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["fields"]["message"] == "paragon-edge serving" {
                    return v["fields"]["listen"]
                        .as_str()
                        .expect("the listen address is logged")
                        .to_owned();
                }
            }
            panic!("exited before serving: {:?}", self.log.lock().expect("log"));
        })
        .await
        .expect("the edge starts serving")
    }

    /// Sends SIGTERM and returns the exit status.
    async fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().expect("still running");
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("it exits after SIGTERM")
            .expect("wait");
        // Drain what is left of stderr.
        let _ =
            tokio::time::timeout(WAIT, async { while self.lines.recv().await.is_some() {} }).await;
        let log = self.log.lock().expect("log").join("\n");
        (status, log)
    }
}

#[tokio::test]
async fn serve_uses_paragon_api_key_from_the_environment() {
    const KEY: &str = "sim-key-5ecr3t-XYZ";
    let sim = start_sim(SimConfig {
        api_key: Some(KEY.into()),
        ..SimConfig::default()
    })
    .await;
    let file = config_file(
        "serve-key",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"{}\"\n",
            sim.base_url()
        ),
    );
    let file = file.to_str().expect("utf-8 path");
    let http = client();

    // Without the key ParagoN refuses us.
    let mut edge = spawn(&["serve", "--config", file], &[]);
    let addr = edge.listen_addr().await;
    let r = http
        .get(format!("http://{addr}/v1/users/u1"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status().as_u16(), 502);
    let (status, _) = edge.terminate().await;
    assert!(status.success(), "{status:?}");

    // With PARAGON_API_KEY it is accepted.
    let mut edge = spawn(&["serve", "--config", file], &[("PARAGON_API_KEY", KEY)]);
    let addr = edge.listen_addr().await;
    let r = http
        .get(format!("http://{addr}/v1/users/u1"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = serde_json::from_slice(&r.bytes().await.expect("body")).expect("JSON");
    assert_eq!(body, paragon_sim::user_json("u1"));
    let (status, log) = edge.terminate().await;
    assert!(status.success(), "{status:?}\n{log}");
    assert!(!log.contains(KEY), "the key is logged:\n{log}");
    assert_eq!(sim.sim().served("/users/u1"), 2);
}

#[tokio::test]
async fn serve_without_config_uses_the_embedded_simulator_and_stops_on_sigterm() {
    let mut edge = spawn(&[], &[("PARAGON_EDGE__SERVER__LISTEN", "127.0.0.1:0")]);
    let addr = edge.listen_addr().await;
    let http = client();
    let r = http
        .get(format!("http://{addr}/v1/users/u1"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers().get("x-cache").and_then(|v| v.to_str().ok()),
        Some("MISS")
    );
    let body: Value = serde_json::from_slice(&r.bytes().await.expect("body")).expect("JSON");
    assert_eq!(body, paragon_sim::user_json("u1"));

    let r = http
        .get(format!("http://{addr}/admin/status"))
        .send()
        .await
        .expect("an answer");
    let status: Value = serde_json::from_slice(&r.bytes().await.expect("body")).expect("JSON");
    assert_eq!(status["upstream"]["embedded_simulator"], true, "{status}");

    let (exit, log) = edge.terminate().await;
    assert!(exit.success(), "{exit:?}\n{log}");
    assert!(
        log.contains("embedded ParagoN simulator"),
        "the log does not say it uses the embedded simulator:\n{log}"
    );
    assert!(
        log.contains("paragon-edge stopped"),
        "it did not stop gracefully:\n{log}"
    );
}

#[tokio::test]
async fn an_unusable_redis_is_logged_once_with_its_cause() {
    let redis = paragon_testkit::RedisServer::start_with(paragon_testkit::ServerOptions {
        password: Some("right-pw-123".into()),
        ..paragon_testkit::ServerOptions::default()
    });
    let sim = start_sim(SimConfig::default()).await;
    let file = config_file(
        "redis-auth",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"{}\"\n\
             [rate_limit]\nbackend = \"redis\"\n[redis]\nurl = \"redis://:wrong-pw-456@127.0.0.1:{}\"\n",
            sim.base_url(),
            redis.port()
        ),
    );
    let mut edge = spawn(&["serve", "--config", file.to_str().expect("utf-8")], &[]);
    let addr = edge.listen_addr().await;
    let http = client();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let status: Value = http
            .get(format!("http://{addr}/admin/status"))
            .send()
            .await
            .expect("an answer")
            .json()
            .await
            .expect("JSON");
        let reason = status["redis"]["reason"].as_str().unwrap_or_default();
        if reason.starts_with("authentication failed") {
            assert!(!reason.contains("wrong-pw-456"), "{reason}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no reason shown: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The health loop fails the same way every 250 ms: within this second it fails four
    // more times, and none of those may be logged again.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let (exit, log) = edge.terminate().await;
    assert!(exit.success(), "{exit:?}\n{log}");
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Redis cannot be used"))
        .collect();
    assert_eq!(said.len(), 1, "logged once, not {}:\n{log}", said.len());
    assert!(said[0].contains("authentication failed"), "{}", said[0]);
    for secret in ["wrong-pw-456", "right-pw-123"] {
        assert!(!log.contains(secret), "the log shows a password:\n{log}");
    }
}
