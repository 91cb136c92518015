//! Secrets (SECURITY.md §4): the API key and the admin token never appear in any log
//! line at any level (`RUST_LOG=trace`, text and JSON), in any answer (bodies and
//! headers, errors included), in `/metrics`, `/admin/status` or `check-config` output
//! — whether ParagoN accepts the key or rejects it, and whether the configuration is
//! valid or not. Admin actions (§5) compare the token in constant time.

mod common;

use std::process::Output;

use common::{start_sim, EdgeProcess};
use paragon_sim::{Faults, SimConfig};

const KEY: &str = "sk-live-Zq8PARAGONsecret2718";
const TOKEN: &str = "adm-Zq8TOKENsecret3141";
/// A key of digits only, which a configuration loader may take for a number.
const NUM_KEY: &str = "00987654321987";
const SECRETS: [&str; 4] = [KEY, TOKEN, NUM_KEY, "987654321987"];

fn assert_hidden(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
    }
}

/// All of an answer: status line, headers and body, as text.
async fn everything(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let mut text = format!("{status}\n");
    for (k, v) in r.headers() {
        text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    text.push_str(&String::from_utf8_lossy(&r.bytes().await.expect("a body")));
    (status, text)
}

#[tokio::test]
async fn the_key_and_token_never_show_in_logs_answers_metrics_or_status() {
    let sim = start_sim(SimConfig {
        api_key: Some(KEY.into()),
        ..SimConfig::default()
    })
    .await;
    let http = common::client();
    let mut answers = String::new();

    // ParagoN accepts the key (from PARAGON_API_KEY); every path, success and failure.
    let config = format!(
        "[server]\nadmin_token = \"{TOKEN}\"\n[upstream]\nbase_url = \"{}\"\ntimeout = \"300ms\"\n\
         [circuit_breaker]\nfailure_threshold = 1000\n",
        sim.base_url()
    );
    let edge = EdgeProcess::start(
        "secrets-accepted",
        &config,
        &[
            ("PARAGON_API_KEY", KEY),
            ("RUST_LOG", "trace"),
            ("PARAGON_EDGE_LOG_FORMAT", "json"),
        ],
    )
    .await;
    let mut expect = |status: u16, got: (u16, String)| {
        assert_eq!(got.0, status, "{}", got.1);
        answers.push_str(&got.1);
    };
    let get = |path: &str| http.get(edge.url(path));
    let post = |path: &str| http.post(edge.url(path));
    expect(
        200,
        everything(get("/v1/users/u1").send().await.expect("answer")).await,
    );
    expect(
        404,
        everything(get("/v1/users/missing-1").send().await.expect("answer")).await,
    );
    expect(
        400,
        everything(get("/v1/users/a%2Fb").send().await.expect("answer")).await,
    );
    expect(
        200,
        everything(
            get("/v1/users?ids=u1,u2,missing-2")
                .send()
                .await
                .expect("answer"),
        )
        .await,
    );
    // A caller sending the key itself gets the user, and the key only back in the
    // request id it chose (its own value), nowhere else.
    let r = get("/v1/users/u2")
        .header("authorization", format!("Bearer {KEY}"))
        .header("x-request-id", KEY)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("body");
    assert!(!body.contains(KEY), "{body}");
    for wrong in [
        format!("Bearer {KEY}"),
        format!("Basic {TOKEN}"),
        TOKEN.to_owned(),
    ] {
        expect(
            401,
            everything(
                post("/admin/circuit-breaker/open")
                    .header("authorization", wrong)
                    .send()
                    .await
                    .expect("answer"),
            )
            .await,
        );
    }
    // The scheme is case-insensitive; the token is not.
    let good = format!("Bearer {TOKEN}");
    let lower = format!("bearer {TOKEN}");
    for (path, auth) in [
        ("/admin/circuit-breaker/open", &good),
        ("/admin/circuit-breaker/close", &lower),
        ("/admin/cache/purge?id=u1", &good),
        ("/admin/cache/purge", &good),
    ] {
        expect(
            200,
            everything(
                post(path)
                    .header("authorization", auth)
                    .send()
                    .await
                    .expect("answer"),
            )
            .await,
        );
    }
    // Upstream failures of every kind, with their error messages.
    for (id, faults, status) in [
        (
            "u3",
            Faults {
                error_rate: 1.0,
                ..Faults::default()
            },
            502,
        ),
        (
            "u4",
            Faults {
                malformed_rate: 1.0,
                ..Faults::default()
            },
            502,
        ),
        (
            "u5",
            Faults {
                latency: Some("1s".into()),
                ..Faults::default()
            },
            504,
        ),
        (
            "u6",
            Faults {
                reset_rate: 1.0,
                ..Faults::default()
            },
            502,
        ),
        (
            "u7",
            Faults {
                always_429: Some(1),
                ..Faults::default()
            },
            429,
        ),
    ] {
        sim.sim().set_faults(faults).expect("valid faults");
        expect(
            status,
            everything(
                get(&format!("/v1/users/{id}"))
                    .send()
                    .await
                    .expect("answer"),
            )
            .await,
        );
    }
    expect(
        200,
        everything(get("/metrics").send().await.expect("answer")).await,
    );
    expect(
        200,
        everything(get("/admin/status").send().await.expect("answer")).await,
    );
    assert_hidden("the answers", &answers);
    let (exit, log) = edge.terminate().await;
    assert!(exit.success(), "{exit:?}\n{log}");
    assert!(
        log.contains("\"level\":\"TRACE\""),
        "not logging at trace:\n{log}"
    );
    assert!(
        log.contains("ParagoN call failed"),
        "the failures are logged:\n{log}"
    );
    assert_hidden("the JSON log at trace level", &log);
    // The key did reach ParagoN (so it was in use, and still never shown).
    assert!(sim.sim().served("/users/u1") >= 1);

    // ParagoN rejects the key (from the file this time); text logs.
    let other = start_sim(SimConfig {
        api_key: Some("another-key".into()),
        ..SimConfig::default()
    })
    .await;
    let config = format!(
        "[server]\nadmin_token = \"{TOKEN}\"\n[upstream]\nbase_url = \"{}\"\napi_key = \"{KEY}\"\n",
        other.base_url()
    );
    let edge = EdgeProcess::start("secrets-rejected", &config, &[("RUST_LOG", "trace")]).await;
    let mut answers = String::new();
    for path in [
        "/v1/users/u1",
        "/v1/users?ids=u1,u2",
        "/metrics",
        "/admin/status",
    ] {
        let (status, text) =
            everything(http.get(edge.url(path)).send().await.expect("answer")).await;
        // A batch whose ids all failed alike takes their status.
        let want = if path.starts_with("/v1/users") {
            502
        } else {
            200
        };
        assert_eq!(status, want, "{text}");
        answers.push_str(&text);
    }
    assert_hidden("the answers", &answers);
    let (exit, log) = edge.terminate().await;
    assert!(exit.success(), "{exit:?}\n{log}");
    assert!(log.contains("TRACE"), "not logging at trace:\n{log}");
    assert_hidden("the text log at trace level", &log);

    // A numeric key in PARAGON_API_KEY is used as it is, exactly.
    let numeric = start_sim(SimConfig {
        api_key: Some(NUM_KEY.into()),
        ..SimConfig::default()
    })
    .await;
    let config = format!("[upstream]\nbase_url = \"{}\"\n", numeric.base_url());
    let edge = EdgeProcess::start(
        "secrets-numeric",
        &config,
        &[("PARAGON_API_KEY", NUM_KEY), ("RUST_LOG", "trace")],
    )
    .await;
    let (status, text) = everything(
        http.get(edge.url("/v1/users/u1"))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (exit, log) = edge.terminate().await;
    assert!(exit.success(), "{exit:?}\n{log}");
    assert_hidden("the log", &log);
}

fn check_config(name: &str, text: &str, env: &[(&str, &str)]) -> Output {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("paragon-edge-e2e");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join(format!("{name}-{}.toml", std::process::id()));
    std::fs::write(&file, text).expect("write config");
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_paragon-edge"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PARAGON") {
            c.env_remove(key);
        }
    }
    c.arg("check-config")
        .arg("--config")
        .arg(&file)
        .env("RUST_LOG", "trace")
        .envs(env.iter().copied());
    c.output().expect("the binary runs")
}

type Env = Vec<(&'static str, &'static str)>;

#[test]
fn check_config_never_shows_a_secret_valid_or_not() {
    let base = "[upstream]\nbase_url = \"http://127.0.0.1:9\"\n";
    let cases: Vec<(&str, String, Env, bool)> = vec![
        (
            "file",
            format!("{base}api_key = \"{KEY}\"\n[server]\nadmin_token = \"{TOKEN}\"\n"),
            vec![],
            true,
        ),
        ("env", base.to_owned(), vec![("PARAGON_API_KEY", KEY)], true),
        (
            "env-numeric",
            base.to_owned(),
            vec![("PARAGON_API_KEY", NUM_KEY)],
            true,
        ),
        (
            "env-override",
            base.to_owned(),
            vec![("PARAGON_EDGE__SERVER__ADMIN_TOKEN", TOKEN)],
            true,
        ),
        // Invalid configurations: the error names the key, never the secret.
        (
            "numeric-in-file",
            format!("{base}api_key = {}\n", &NUM_KEY[2..]),
            vec![],
            false,
        ),
        (
            "numeric-token",
            format!("{base}[server]\nadmin_token = {}\n", &NUM_KEY[2..]),
            vec![],
            false,
        ),
        (
            "numeric-env-override",
            base.to_owned(),
            vec![("PARAGON_EDGE__UPSTREAM__API_KEY", NUM_KEY)],
            false,
        ),
        (
            "control-character",
            format!("{base}api_key = \"{KEY}\\u0001\"\n"),
            vec![],
            false,
        ),
        (
            "other-error",
            format!("{base}api_key = \"{KEY}\"\ntimeout = \"soon\"\n"),
            vec![],
            false,
        ),
    ];
    for (name, text, env, valid) in cases {
        let o = check_config(name, &text, &env);
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(o.status.success(), valid, "{name}: {out}");
        if valid {
            assert!(out.contains("<redacted>"), "{name}: {out}");
        } else {
            assert!(
                out.contains("upstream.") || out.contains("server.admin_token"),
                "{name}: the error names no key: {out}"
            );
        }
        assert_hidden(&format!("check-config ({name})"), &out);
    }
}

/// §5: the admin token is compared in constant time (a guard against a rewrite that
/// goes back to `==`, which stops at the first differing byte).
#[test]
fn admin_token_is_compared_in_constant_time() {
    let source = include_str!("../src/routes/admin.rs");
    let authorize = &source[source.find("fn authorize").expect("fn authorize")..];
    let authorize = &authorize[..authorize.find("\n}\n").expect("end of fn")];
    assert!(authorize.contains(".ct_eq("), "{authorize}");
    assert!(
        !authorize.contains("== token")
            && !authorize.contains("token ==")
            && !authorize.contains("expose() =="),
        "{authorize}"
    );
}
