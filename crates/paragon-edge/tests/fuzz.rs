//! Property-based fuzzing (SECURITY.md §1, §2) of everything that parses input an
//! attacker or a misconfiguration controls: user ids, batch lists, the configuration,
//! ParagoN's answers (bodies, `Retry-After` and rate-limit headers) and shared-cache
//! entries. Nothing may panic, and every accept/refuse decision must follow the
//! contract. The cases per property are few by default (CI); `PARAGON_FUZZ_CASES=N`
//! runs N each (see SECURITY.md). Request-level fuzzing over real sockets is in
//! `hostile_requests.rs`.

mod common;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::{contract_valid_id, fuzz_cases};
use paragon_client::transport::{retry_after, MAX_RETRY_AFTER};
use paragon_client::{ParagonCodec, ParagonRequest, User, UserId};
use paragon_edge::config::{Backend, Settings};
use paragon_edge::routes::users::parse_batch;
use paragon_layers::cache::TierCodec;
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};

fn runner(default_cases: u32) -> TestRunner {
    TestRunner::new(PropConfig {
        cases: fuzz_cases(default_cases),
        failure_persistence: None,
        ..PropConfig::default()
    })
}

fn run<S: Strategy>(
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    if let Err(e) = runner(default_cases).run(&strategy, test) {
        panic!("{e}");
    }
}

// ---- ids and batch lists ----

#[test]
fn id_parsing_accepts_exactly_the_contract_alphabet() {
    let strategy = prop_oneof![
        "\\PC{0,140}",
        "[A-Za-z0-9._~-]{0,130}",
        prop::collection::vec(any::<u8>(), 0..140)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        Just("..".to_owned()),
        Just(".".to_owned()),
    ];
    run(1000, strategy, |s| {
        prop_assert_eq!(UserId::parse(&s).is_ok(), contract_valid_id(&s), "{:?}", s);
        Ok(())
    });
}

fn batch_oracle(query: &str, max: usize) -> Result<Vec<String>, (u16, &'static str)> {
    let lists: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "ids")
        .map(|(_, v)| v.into_owned())
        .collect();
    let [list] = lists.as_slice() else {
        return Err((400, "invalid-batch"));
    };
    if list.is_empty() {
        return Err((400, "invalid-batch"));
    }
    let parts: Vec<&str> = list.split(',').collect();
    if parts.len() > max {
        return Err((400, "too-many-ids"));
    }
    if !parts.iter().all(|p| contract_valid_id(p)) {
        return Err((400, "invalid-id"));
    }
    let mut seen = Vec::new();
    for p in parts {
        if !seen.iter().any(|s| s == p) {
            seen.push(p.to_owned());
        }
    }
    Ok(seen)
}

#[test]
fn batch_parsing_follows_the_contract() {
    let item = prop_oneof![
        4 => "[a-z0-9._~-]{1,4}",
        1 => "[%&=,+#?/ .a-z0-9\u{e9}\u{0}]{0,6}",
        1 => "(%[0-9A-Fa-f]{2}){1,3}",
    ];
    let list = prop::collection::vec(item, 0..14).prop_map(|v| v.join(","));
    let strategy = (
        prop_oneof![
            6 => list.clone().prop_map(|l| format!("ids={l}")),
            1 => (list.clone(), list.clone()).prop_map(|(a, b)| format!("ids={a}&ids={b}")),
            1 => list.clone().prop_map(|l| format!("x=1&ids={l}&y")),
            1 => list,
        ],
        1usize..12,
    );
    run(1000, strategy, |(query, max)| {
        let got = parse_batch(Some(&query), max)
            .map(|ids| {
                ids.iter()
                    .map(|i| i.as_str().to_owned())
                    .collect::<Vec<_>>()
            })
            .map_err(|p| {
                let slug = p
                    .kind
                    .trim_start_matches("urn:paragon-edge:problem:")
                    .to_owned();
                (p.status, slug)
            });
        let want = batch_oracle(&query, max).map_err(|(s, k)| (s, k.to_owned()));
        prop_assert_eq!(got, want, "{:?} (max {})", query, max);
        Ok(())
    });
}

// ---- configuration ----

const KEYS: &[(&str, &str)] = &[
    ("server", "listen"),
    ("server", "cors_allowed_origins"),
    ("server", "max_batch_ids"),
    ("server", "shutdown_grace"),
    ("server", "admin_token"),
    ("upstream", "base_url"),
    ("upstream", "api_key"),
    ("upstream", "timeout"),
    ("upstream", "connect_timeout"),
    ("upstream", "max_response_bytes"),
    ("upstream", "max_concurrency"),
    ("cache", "enabled"),
    ("cache", "ttl"),
    ("cache", "max_entries"),
    ("cache", "max_bytes"),
    ("cache", "stale_if_error"),
    ("cache", "negative_ttl"),
    ("cache", "backend"),
    ("rate_limit", "enabled"),
    ("rate_limit", "max_requests"),
    ("rate_limit", "window"),
    ("rate_limit", "burst"),
    ("rate_limit", "max_wait"),
    ("rate_limit", "backend"),
    ("circuit_breaker", "enabled"),
    ("circuit_breaker", "failure_threshold"),
    ("circuit_breaker", "failure_rate"),
    ("circuit_breaker", "window"),
    ("circuit_breaker", "minimum_calls"),
    ("circuit_breaker", "open_for"),
    ("circuit_breaker", "half_open_max_calls"),
    ("circuit_breaker", "slow_call"),
    ("redis", "url"),
    ("redis", "key_prefix"),
];

/// Strings that are hostile as durations, addresses, URLs or names.
const NASTY: &[&str] = &[
    "",
    "0s",
    "1ms",
    "250ms",
    "5m",
    "1y",
    "-1s",
    "1 s",
    "nan",
    "18446744073709551615s",
    "18446744073709551616s",
    "584942417355y",
    "99999999999999999999999h",
    "1ns",
    "127.0.0.1:0",
    "[::1]:0",
    "0.0.0.0:99999",
    "http://127.0.0.1:9",
    "http://user:pw@127.0.0.1:9/base/",
    "https://x/?q=1",
    "ftp://x",
    "redis://:pw@h:1",
    "redis://",
    "*",
    "http://localhost:3000",
    "memory",
    "redis",
    "\u{0}",
    "\r\nInjected: 1",
    "key\u{e9}",
];

fn toml_value() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        3 => prop::sample::select(NASTY).prop_map(|s| toml::Value::String(s.to_owned())),
        1 => "\\PC{0,12}".prop_map(toml::Value::String),
        1 => "[0-9]{1,6}(ms|s|m|h|d)".prop_map(toml::Value::String),
        2 => prop_oneof![
            any::<i64>(),
            Just(0i64),
            Just(-1),
            Just(i64::MAX),
            0i64..1000,
        ]
        .prop_map(toml::Value::Integer),
        1 => prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-0.0),
            0.0f64..1.5,
        ]
        .prop_map(toml::Value::Float),
        1 => any::<bool>().prop_map(toml::Value::Boolean),
    ];
    leaf.prop_recursive(2, 6, 4, |inner| {
        prop::collection::vec(inner, 0..4).prop_map(toml::Value::Array)
    })
}

/// A document setting a few keys (sometimes misspelt, sometimes in unknown sections).
fn config_doc() -> impl Strategy<Value = (String, Vec<(String, String)>)> {
    let entry = (
        prop::sample::select(KEYS),
        toml_value(),
        prop_oneof![8 => Just(None), 1 => "[a-z_]{1,8}".prop_map(Some)],
    );
    prop::collection::vec(entry, 1..4).prop_map(|entries| {
        let mut text = String::new();
        let mut keys = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for ((section, key), value, typo) in entries {
            let key = typo.unwrap_or_else(|| (*key).to_owned());
            if !seen.insert((section.to_owned(), key.clone())) {
                continue;
            }
            text.push_str(&format!("[{section}]\n{key} = {value}\n"));
            keys.push(((*section).to_owned(), key));
        }
        (text, keys)
    })
}

#[test]
fn configuration_errors_name_the_key_and_valid_ones_start() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    run(300, config_doc(), |(text, keys)| {
        // The document itself may be invalid TOML (a repeated section): that is an
        // error too, and must still not panic.
        match Settings::from_toml(&text) {
            Err(e) => {
                let message = e.to_string();
                prop_assert!(!message.is_empty());
                if toml::from_str::<toml::Table>(&text).is_ok() {
                    prop_assert!(
                        keys.iter().any(|(s, k)| message.contains(k.as_str())
                            || message.contains(&format!("{s}.{k}"))),
                        "{:?} gave {:?}, which names none of {:?}",
                        text,
                        message,
                        keys
                    );
                }
            }
            Ok(settings) => {
                let mut config = settings.config;
                // The printed form is a valid configuration again, secrets aside.
                let printed = config.to_redacted_toml();
                let reparsed = Settings::from_toml(&printed)
                    .map_err(|e| {
                        TestCaseError::fail(format!("{text:?} printed as {printed:?}: {e}"))
                    })?
                    .config;
                prop_assert_eq!(&reparsed.cache, &config.cache, "{}", printed);
                prop_assert_eq!(&reparsed.rate_limit, &config.rate_limit, "{}", printed);
                // A configuration that validates must start (no panic while building).
                config.upstream.base_url = Some("http://127.0.0.1:9".into());
                config.cache.backend = Backend::Memory;
                config.rate_limit.backend = Backend::Memory;
                let settings = Settings::new(config).map_err(|e| {
                    TestCaseError::fail(format!("{text:?} with a memory backend: {e}"))
                })?;
                let built = rt.block_on(paragon_edge::server::build(
                    settings,
                    paragon_layers::Clock::tokio(),
                ));
                prop_assert!(built.is_ok(), "{:?}: {:?}", text, built.err());
            }
        }
        Ok(())
    });
}

/// Every key with every hostile string, and the extreme numbers: the error names the
/// key, or the configuration starts.
#[test]
fn every_key_with_every_hostile_value() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut values: Vec<String> = NASTY
        .iter()
        .map(|s| toml::Value::String((*s).to_owned()).to_string())
        .collect();
    values.extend(
        [
            "0",
            "-1",
            "1",
            "9223372036854775807",
            "1.5",
            "nan",
            "inf",
            "-0.0",
            "true",
            "[]",
        ]
        .map(str::to_owned),
    );
    for (section, key) in KEYS {
        for value in &values {
            let text = format!("[{section}]\n{key} = {value}\n");
            match Settings::from_toml(&text) {
                Err(e) => assert!(
                    e.to_string().contains(key),
                    "{text:?} gave {e}, which does not name {key}"
                ),
                Ok(settings) => {
                    let mut config = settings.config;
                    config.upstream.base_url = Some("http://127.0.0.1:9".into());
                    config.cache.backend = Backend::Memory;
                    config.rate_limit.backend = Backend::Memory;
                    let settings = Settings::new(config).expect("still valid");
                    let built = rt.block_on(paragon_edge::server::build(
                        settings,
                        paragon_layers::Clock::tokio(),
                    ));
                    assert!(built.is_ok(), "{text:?}: {:?}", built.err());
                }
            }
        }
    }
}

/// The longest durations the configuration accepts (`u64::MAX` seconds) must neither
/// panic while the stack is built (shared-cache fill hold = timeout + 1 s) nor at
/// shutdown (grace + a moment for the connections).
#[tokio::test]
async fn extreme_durations_neither_panic_at_start_nor_at_shutdown() {
    let port = common::closed_port();
    let max = "18446744073709551615s";
    let text = format!(
        "[server]\nshutdown_grace = \"{max}\"\n\
         [upstream]\nbase_url = \"http://127.0.0.1:9\"\ntimeout = \"{max}\"\nconnect_timeout = \"{max}\"\n\
         [cache]\nbackend = \"redis\"\nttl = \"{max}\"\nstale_if_error = \"{max}\"\nnegative_ttl = \"{max}\"\n\
         [rate_limit]\nbackend = \"redis\"\nwindow = \"{max}\"\nmax_wait = \"{max}\"\n\
         [circuit_breaker]\nwindow = \"{max}\"\nopen_for = \"{max}\"\nslow_call = \"{max}\"\n\
         [redis]\nurl = \"redis://127.0.0.1:{port}\"\n"
    );
    let settings = Settings::from_toml(&text).expect("the longest durations are accepted");
    let grace = settings.config.server.shutdown_grace.0;
    let edge = tokio::spawn(paragon_edge::server::build(
        settings,
        paragon_layers::Clock::tokio(),
    ))
    .await
    .expect("building does not panic")
    .expect("builds");
    for _ in 0..5 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let run = tokio::spawn(paragon_edge::server::run(
            listener,
            edge.state.clone(),
            async {},
            grace,
        ));
        let stopped = tokio::time::timeout(common::WAIT, run)
            .await
            .expect("an idle edge stops at once");
        assert!(stopped.is_ok(), "shutdown panicked: {stopped:?}");
    }
}

#[test]
fn configuration_parsing_never_panics_on_any_text() {
    let strategy = prop_oneof![
        "\\PC{0,200}",
        "(\\[[a-z_]{1,16}\\]\n)?([a-z_]{1,16} = (\"[^\"\\\\]{0,10}\"|[0-9.e+-]{1,8}|true|\\[\\]|\\{\\})\n){0,5}",
        prop::collection::vec(any::<u8>(), 0..200)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ];
    run(500, strategy, |text| {
        if let Err(e) = Settings::from_toml(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
        Ok(())
    });
}

// ---- ParagoN's answers ----

fn json_body() -> impl Strategy<Value = Vec<u8>> {
    let id_value = prop_oneof![
        Just(serde_json::json!("u1")),
        Just(serde_json::json!("u2")),
        Just(serde_json::json!("U1")),
        Just(serde_json::json!("u1 ")),
        Just(serde_json::json!(1)),
        Just(serde_json::Value::Null),
        Just(serde_json::json!(["u1"])),
        "\\PC{0,8}".prop_map(serde_json::Value::String),
    ];
    prop_oneof![
        // Objects with an id (right or wrong) and other fields.
        4 => (id_value, prop::collection::btree_map("[a-z]{1,6}", "\\PC{0,8}", 0..5), any::<bool>())
            .prop_map(|(id, extra, with_id)| {
                let mut m = serde_json::Map::new();
                for (k, v) in extra {
                    m.insert(k, serde_json::Value::String(v));
                }
                if with_id {
                    m.insert("id".into(), id);
                }
                serde_json::to_vec(&serde_json::Value::Object(m)).unwrap_or_default()
            }),
        // Random bytes, and JSON prefixes and suffixes.
        2 => prop::collection::vec(any::<u8>(), 0..300),
        1 => (0usize..100_000).prop_map(|n| "[".repeat(n).into_bytes()),
        1 => (0usize..5_000).prop_map(|n| format!("{}{}", "{\"a\":".repeat(n), "1").into_bytes()),
        1 => (any::<u16>(), "\\PC{0,10}").prop_map(|(cut, tail)| {
            let full = paragon_sim::user_json("u1").to_string();
            let cut = usize::from(cut) % (full.len() + 1);
            format!("{}{tail}", &full[..cut]).into_bytes()
        }),
    ]
}

#[test]
fn user_decoding_never_panics_and_accepts_only_the_requested_user() {
    let id = UserId::parse("u1").expect("valid");
    let codec_key = ParagonRequest::get_user(id.clone()).endpoint;
    run(1000, json_body(), |body| {
        let raw = Bytes::from(body.clone());
        let decoded = User::decode(&id, raw.clone());
        let is_user = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .is_some_and(|v| v.is_object() && v["id"] == "u1");
        prop_assert_eq!(
            decoded.is_ok(),
            is_user,
            "{:?}",
            String::from_utf8_lossy(&body)
        );
        if let Ok(user) = decoded {
            prop_assert_eq!(user.raw_json(), raw, "the bytes are kept exactly");
            prop_assert_eq!(user.id().as_str().to_owned(), "u1");
        }
        // A shared-cache entry holding these bytes is accepted only for this user.
        let mut entry = vec![b'u'];
        entry.extend_from_slice(&body);
        prop_assert_eq!(ParagonCodec.decode(&codec_key, &entry).is_some(), is_user);
        let _ = ParagonCodec.decode(&codec_key, &body);
        Ok(())
    });
}

#[test]
fn retry_after_headers_never_panic_and_stay_bounded() {
    let value = prop_oneof![
        "[0-9]{1,25}",
        "-[0-9]{1,5}",
        "\\PC{0,30}",
        any::<u64>().prop_map(|n| n.to_string()),
        any::<u32>().prop_map(|n| {
            httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(n) * 4))
        }),
        "\"default\";r=[0-9]{1,3};t=[0-9]{1,22}",
        "limit=[0-9]{1,3}, remaining=0, reset=[0-9]{1,22}",
    ];
    let names = prop::sample::subsequence(
        vec![
            "retry-after",
            "ratelimit-reset",
            "ratelimit",
            "x-ratelimit-reset",
        ],
        0..=4,
    );
    let strategy = (names, prop::collection::vec(value, 4), any::<u32>());
    run(1000, strategy, |(names, values, now)| {
        let mut headers = http::HeaderMap::new();
        for (name, value) in names.iter().zip(&values) {
            if let Ok(v) = http::HeaderValue::from_str(value) {
                headers.insert(*name, v);
            }
        }
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(now));
        let d = retry_after(&headers, now);
        prop_assert!(d <= MAX_RETRY_AFTER, "{:?} -> {:?}", headers, d);
        Ok(())
    });
}
