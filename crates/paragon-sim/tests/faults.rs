//! Every fault mode, observed by a client over real sockets.

#![allow(
    clippy::disallowed_methods,
    reason = "tests time the simulator's faults over real sockets"
)]

mod common;

use std::time::Duration;

use common::{client, get, json, raw_exchange, start, start_with};
use paragon_sim::{user_json, Faults, SimConfig, DEFAULT_OVERSIZED_BYTES, STATUS_DROPPED};
use tokio::time::Instant;

fn faults() -> Faults {
    Faults::default()
}

#[tokio::test]
async fn error_rate_one_answers_500_with_a_problem_body() {
    let sim = start_with(Faults {
        error_rate: 1.0,
        ..faults()
    })
    .await;
    let client = client();
    for _ in 0..3 {
        let (status, headers, body) = get(&client, &sim, "/users/u1").await;
        assert_eq!(status, 500);
        assert_eq!(headers["content-type"], "application/problem+json");
        let problem = json(&body);
        assert_eq!(problem["status"], 500);
        assert!(problem["title"].is_string());
    }
    assert_eq!(sim.sim().stats().by_status.get(&500), Some(&3));
}

#[tokio::test]
async fn error_rate_is_a_seeded_share_of_requests() {
    let statuses = |seed| async move {
        let sim = start(SimConfig {
            seed,
            faults: Faults {
                error_rate: 0.3,
                ..faults()
            },
            ..SimConfig::default()
        })
        .await;
        let client = client();
        let mut out = Vec::new();
        for _ in 0..200 {
            out.push(get(&client, &sim, "/users/u1").await.0);
        }
        out
    };
    let first = statuses(42).await;
    assert_eq!(first, statuses(42).await, "same seed, same faults");
    let errors = first.iter().filter(|s| **s == 500).count();
    assert!((30..=90).contains(&errors), "{errors} errors in 200");
    assert_eq!(first.iter().filter(|s| **s == 200).count(), 200 - errors);
}

#[tokio::test(start_paused = true)]
async fn latency_delays_every_users_answer() {
    let sim = start_with(Faults {
        latency: Some("5s".into()),
        ..faults()
    })
    .await;
    let client = client();
    let started = Instant::now();
    let (status, _, _) = get(&client, &sim, "/users/u1").await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_secs(5));

    // Control requests are not delayed.
    let started = Instant::now();
    get(&client, &sim, "/_sim/stats").await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn outage_answers_503_until_it_ends() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    sim.sim()
        .set_faults(Faults {
            outage: Some("30s".into()),
            ..faults()
        })
        .expect("valid");

    let (status, headers, body) = get(&client, &sim, "/users/u1").await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "30");
    assert_eq!(json(&body)["status"], 503);

    tokio::time::advance(Duration::from_millis(29_500)).await;
    let (status, headers, _) = get(&client, &sim, "/users/u1").await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "1");

    tokio::time::advance(Duration::from_secs(1)).await;
    let (status, _, _) = get(&client, &sim, "/users/u1").await;
    assert_eq!(status, 200);
    assert_eq!(sim.sim().stats().by_status.get(&503), Some(&2));
}

#[tokio::test(start_paused = true)]
async fn outage_set_over_http_starts_then() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    tokio::time::advance(Duration::from_secs(100)).await;
    let response = client
        .put(format!("{}/_sim/faults", sim.base_url()))
        .body(r#"{"outage": "10s"}"#)
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 200);
    assert_eq!(get(&client, &sim, "/users/u1").await.0, 503);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(get(&client, &sim, "/users/u1").await.0, 200);
}

#[tokio::test]
async fn always_429_sends_the_configured_retry_after() {
    let sim = start_with(Faults {
        always_429: Some(7),
        ..faults()
    })
    .await;
    let (status, headers, _) = get(&client(), &sim, "/users/u1").await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "7");
}

#[tokio::test(start_paused = true)]
async fn quota_answers_429_with_retry_after_and_rate_limit_headers() {
    let sim = start_with(Faults {
        quota: Some(2),
        quota_window: Some("10s".into()),
        ..faults()
    })
    .await;
    let client = client();

    let (status, headers, _) = get(&client, &sim, "/users/u1").await;
    assert_eq!(status, 200);
    assert_eq!(headers["ratelimit-policy"], "\"default\";q=2;w=10");
    assert_eq!(headers["ratelimit"], "\"default\";r=1;t=10");
    assert_eq!(get(&client, &sim, "/users/u2").await.0, 200);

    tokio::time::advance(Duration::from_millis(2500)).await;
    let (status, headers, body) = get(&client, &sim, "/users/u1").await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "8");
    assert_eq!(headers["ratelimit"], "\"default\";r=0;t=8");
    assert_eq!(headers["x-ratelimit-limit"], "2");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    assert_eq!(json(&body)["status"], 429);

    tokio::time::advance(Duration::from_millis(7500)).await;
    assert_eq!(get(&client, &sim, "/users/u1").await.0, 200);
    assert_eq!(sim.sim().served_total(), 4);
}

#[tokio::test]
async fn quota_with_a_sub_second_window_says_retry_after_one() {
    let sim = start_with(Faults {
        quota: Some(0),
        quota_window: Some("100ms".into()),
        ..faults()
    })
    .await;
    let (status, headers, _) = get(&client(), &sim, "/users/u1").await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "1");
}

#[tokio::test]
async fn malformed_bodies_are_not_json() {
    let sim = start_with(Faults {
        malformed_rate: 1.0,
        ..faults()
    })
    .await;
    let (status, headers, body) = get(&client(), &sim, "/users/u1").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert!(!body.is_empty());
    assert!(serde_json::from_slice::<serde_json::Value>(&body).is_err());
}

#[tokio::test]
async fn not_object_bodies_are_json_arrays() {
    let sim = start_with(Faults {
        not_object_rate: 1.0,
        ..faults()
    })
    .await;
    let (status, _, body) = get(&client(), &sim, "/users/u1").await;
    assert_eq!(status, 200);
    assert!(json(&body).is_array());
}

#[tokio::test]
async fn wrong_id_bodies_name_another_user() {
    let sim = start_with(Faults {
        wrong_id_rate: 1.0,
        ..faults()
    })
    .await;
    let (status, _, body) = get(&client(), &sim, "/users/u1").await;
    assert_eq!(status, 200);
    let user = json(&body);
    assert!(user.is_object());
    assert!(user["id"].is_string());
    assert_ne!(user["id"], "u1");
}

#[tokio::test]
async fn oversized_bodies_are_valid_json_of_the_configured_size() {
    let sim = start_with(Faults {
        oversized_rate: 1.0,
        ..faults()
    })
    .await;
    let client = client();
    let (status, headers, body) = get(&client, &sim, "/users/u1").await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), DEFAULT_OVERSIZED_BYTES);
    assert_eq!(
        headers["content-length"],
        DEFAULT_OVERSIZED_BYTES.to_string()
    );
    let user = json(&body);
    assert_eq!(user["id"], "u1");
    assert_eq!(user["profile"], user_json("u1")["profile"]);

    sim.sim()
        .set_faults(Faults {
            oversized_rate: 1.0,
            oversized_bytes: Some(100_000),
            ..faults()
        })
        .expect("valid");
    let (_, _, body) = get(&client, &sim, "/users/u1").await;
    assert_eq!(body.len(), 100_000);
}

#[tokio::test]
async fn missing_ids_stay_404_under_body_faults() {
    let sim = start_with(Faults {
        malformed_rate: 1.0,
        ..faults()
    })
    .await;
    let (status, _, body) = get(&client(), &sim, "/users/missing-1").await;
    assert_eq!(status, 404);
    assert_eq!(json(&body)["error"], "not_found");
}

#[tokio::test(start_paused = true)]
async fn trickling_body_makes_the_client_time_out() {
    let sim = start_with(Faults {
        trickle_rate: 1.0,
        ..faults()
    })
    .await;
    let client = client();
    let mut response = client
        .get(format!("{}/users/u1", sim.base_url()))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("the head arrives");
    assert_eq!(response.status(), 200);
    let mut received = 0;
    let error = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => panic!("a trickling body never ends"),
            Err(e) => break e,
        }
    };
    assert!(error.is_timeout(), "{error}");
    // One byte per 100 ms: about 20 in 2 s of (paused) time, never the whole user.
    assert!((1..=21).contains(&received), "{received} bytes");
    assert_eq!(sim.sim().stats().by_status.get(&200), Some(&1));
}

#[tokio::test]
async fn reset_cuts_the_body_short_of_its_content_length() {
    let sim = start_with(Faults {
        reset_rate: 1.0,
        ..faults()
    })
    .await;

    let response = client()
        .get(format!("{}/users/u1", sim.base_url()))
        .send()
        .await
        .expect("the head arrives");
    assert_eq!(response.status(), 200);
    assert!(
        response.bytes().await.is_err(),
        "the body must be incomplete"
    );

    let raw = raw_exchange(&sim, "GET /users/u2 HTTP/1.1\r\nhost: sim\r\n\r\n").await;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let declared: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("a content-length")
        .parse()
        .expect("a number");
    assert_eq!(declared, user_json("u2").to_string().len());
    assert!(
        !body.is_empty() && body.len() < declared,
        "{} of {declared}",
        body.len()
    );
}

#[tokio::test]
async fn drop_closes_the_connection_without_an_answer() {
    let sim = start_with(Faults {
        drop_rate: 1.0,
        ..faults()
    })
    .await;
    let result = client()
        .get(format!("{}/users/u1", sim.base_url()))
        .send()
        .await;
    assert!(result.is_err(), "expected a connection error: {result:?}");
    let raw = raw_exchange(&sim, "GET /users/u1 HTTP/1.1\r\nhost: sim\r\n\r\n").await;
    assert!(raw.is_empty(), "{}", String::from_utf8_lossy(&raw));
    let stats = sim.sim().stats();
    assert_eq!(stats.total, 2);
    assert_eq!(stats.by_status.get(&STATUS_DROPPED), Some(&2));
}

#[tokio::test]
async fn fault_order_auth_then_outage_then_429_then_quota() {
    let sim = start(SimConfig {
        api_key: Some("k".into()),
        faults: Faults {
            outage: Some("1h".into()),
            always_429: Some(3),
            quota: Some(0),
            error_rate: 1.0,
            ..faults()
        },
        ..SimConfig::default()
    })
    .await;
    let client = client();
    let url = format!("{}/users/u1", sim.base_url());
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(client.get(&url).send().await.expect("answer")), 401);
    let authed = || client.get(&url).bearer_auth("k");
    assert_eq!(status(authed().send().await.expect("answer")), 503);
    let mut f = sim.sim().faults();
    f.outage = None;
    sim.sim().set_faults(f.clone()).expect("valid");
    let r = authed().send().await.expect("answer");
    assert_eq!(r.headers()["retry-after"], "3");
    f.always_429 = None;
    sim.sim().set_faults(f.clone()).expect("valid");
    let r = authed().send().await.expect("answer");
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("ratelimit-policy"));
    f.quota = None;
    sim.sim().set_faults(f).expect("valid");
    assert_eq!(status(authed().send().await.expect("answer")), 500);
}

#[tokio::test(start_paused = true)]
async fn the_first_calls_of_each_id_fail_set_at_run_time() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let url = format!("{}/_sim/faults", sim.base_url());
    let r = client
        .put(&url)
        .body(r#"{"fail_first": 2, "fail_first_status": 502, "fail_first_delay": "3s"}"#)
        .send()
        .await
        .expect("the control endpoint answers");
    assert_eq!(r.status(), 200);
    for expected in [502, 502, 200] {
        let started = Instant::now();
        let (status, _, _) = get(&client, &sim, "/users/u1").await;
        assert_eq!(status, expected);
        // The failing calls hang first; the rest do not.
        assert_eq!(started.elapsed() >= Duration::from_secs(3), expected == 502);
    }
    // Each id has its own count.
    assert_eq!(get(&client, &sim, "/users/u2").await.0, 502);
    // A bad status is refused, naming the key.
    let r = client
        .put(&url)
        .body(r#"{"fail_first": 1, "fail_first_status": 200}"#)
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("fail_first_status"));
}

#[tokio::test(start_paused = true)]
async fn a_slow_tail_delays_its_share_of_calls() {
    let sim = start_with(Faults {
        slow_rate: 0.1,
        slow_latency: Some("2s".into()),
        ..faults()
    })
    .await;
    let client = client();
    let mut slow = 0;
    for _ in 0..200 {
        let started = Instant::now();
        assert_eq!(get(&client, &sim, "/users/u1").await.0, 200);
        if started.elapsed() >= Duration::from_secs(2) {
            slow += 1;
        }
    }
    assert!((8..=35).contains(&slow), "{slow} slow calls of 200");
}
