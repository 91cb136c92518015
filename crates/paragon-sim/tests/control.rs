//! The `/_sim/*` control endpoint.

mod common;

use common::{client, get, json, start};
use paragon_sim::{Faults, SimConfig, Stats};

#[tokio::test]
async fn faults_round_trip_through_the_control_endpoint() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let url = format!("{}/_sim/faults", sim.base_url());

    let (status, _, body) = get(&client, &sim, "/_sim/faults").await;
    assert_eq!(status, 200);
    let faults: Faults = serde_json::from_slice(&body).expect("Faults JSON");
    assert_eq!(faults, Faults::default());

    let wanted = Faults {
        latency: Some("5ms".into()),
        error_rate: 0.25,
        quota: Some(100),
        quota_window: Some("2s".into()),
        ..Faults::default()
    };
    let response = client
        .put(&url)
        .json_body(&wanted)
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 200);
    let echoed: Faults =
        serde_json::from_slice(&response.bytes().await.expect("body")).expect("Faults JSON");
    assert_eq!(echoed, wanted);
    assert_eq!(sim.sim().faults(), wanted);

    let (_, _, body) = get(&client, &sim, "/_sim/faults").await;
    assert_eq!(
        serde_json::from_slice::<Faults>(&body).expect("Faults JSON"),
        wanted
    );

    // An empty object clears every fault.
    let response = client.put(&url).body("{}").send().await.expect("an answer");
    assert_eq!(response.status(), 200);
    assert_eq!(sim.sim().faults(), Faults::default());
}

#[tokio::test]
async fn invalid_faults_are_rejected_with_a_message_and_change_nothing() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let url = format!("{}/_sim/faults", sim.base_url());
    sim.sim()
        .set_faults(Faults {
            error_rate: 0.5,
            ..Faults::default()
        })
        .expect("valid");
    let before = sim.sim().faults();

    for (body, names) in [
        (r#"{"error_rate": 1.5}"#, "error_rate"),
        (r#"{"drop_rate": -1}"#, "drop_rate"),
        (r#"{"latency": "soon"}"#, "latency"),
        (r#"{"quota": 5, "quota_window": "0s"}"#, "quota_window"),
        (r#"{"error_rat": 0.5}"#, "error_rat"),
        (r#"{"quota": "many"}"#, "invalid type"),
        ("not json", "expected"),
    ] {
        let response = client.put(&url).body(body).send().await.expect("an answer");
        assert_eq!(response.status(), 400, "{body}");
        let answer = json(&response.bytes().await.expect("body"));
        assert_eq!(answer["error"], "invalid_faults");
        let detail = answer["detail"].as_str().expect("a detail");
        assert!(detail.contains(names), "{detail:?} should mention {names}");
        assert_eq!(sim.sim().faults(), before);
    }

    let huge = format!(r#"{{"latency": "{}"}}"#, "1".repeat(100_000));
    let response = client.put(&url).body(huge).send().await.expect("an answer");
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn stats_and_reset_over_http_and_control_requests_are_not_counted() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    get(&client, &sim, "/users/u1").await;
    get(&client, &sim, "/users/missing-9").await;

    let (status, _, body) = get(&client, &sim, "/_sim/stats").await;
    assert_eq!(status, 200);
    let stats: Stats = serde_json::from_slice(&body).expect("Stats JSON");
    assert_eq!(stats, sim.sim().stats());
    assert_eq!(stats.total, 2);
    assert_eq!(stats.by_status.get(&200), Some(&1));
    assert_eq!(stats.by_status.get(&404), Some(&1));
    assert_eq!(stats.by_path.get("/users/u1"), Some(&1));
    get(&client, &sim, "/_sim/faults").await;
    assert_eq!(sim.sim().served_total(), 2);

    let response = client
        .post(format!("{}/_sim/reset", sim.base_url()))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 204);
    assert_eq!(sim.sim().stats(), Stats::default());

    // Wrong methods on control paths.
    let response = client
        .get(format!("{}/_sim/reset", sim.base_url()))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 405);
    let response = client
        .post(format!("{}/_sim/faults", sim.base_url()))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 405);
    assert_eq!(sim.sim().served_total(), 0);
}

#[tokio::test]
async fn control_needs_no_key_even_when_one_is_set() {
    let sim = start(SimConfig {
        api_key: Some("k".into()),
        ..SimConfig::default()
    })
    .await;
    let (status, _, _) = get(&client(), &sim, "/_sim/stats").await;
    assert_eq!(status, 200);
}

/// `reqwest` is built without its `json` feature; send JSON by hand.
trait JsonBody {
    fn json_body<T: serde::Serialize>(self, value: &T) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body<T: serde::Serialize>(self, value: &T) -> Self {
        self.header("content-type", "application/json")
            .body(serde_json::to_vec(value).expect("serializable"))
    }
}

#[tokio::test]
async fn patch_changes_only_the_keys_given_and_users_change_at_run_time() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let url = format!("{}/_sim/faults", sim.base_url());
    sim.sim()
        .set_faults(Faults {
            error_rate: 0.5,
            ..Faults::default()
        })
        .unwrap();
    let r = client
        .patch(&url)
        .body(r#"{"etags": true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        sim.sim().faults(),
        Faults {
            error_rate: 0.5,
            etags: true,
            ..Faults::default()
        }
    );
    for bad in [r#"{"error_rate": 7}"#, r#"{"nope": 1}"#, "[1]", "x"] {
        let r = client.patch(&url).body(bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
    sim.sim()
        .set_faults(Faults {
            etags: true,
            ..Faults::default()
        })
        .unwrap();

    // ETag and Last-Modified; a conditional request on them gets a 304 without a body.
    let (status, headers, body) = get(&client, &sim, "/users/u1").await;
    assert_eq!(status, 200);
    let tag = headers["etag"].to_str().unwrap().to_owned();
    let date = headers["last-modified"].to_str().unwrap().to_owned();
    let cond = |name: &'static str, value: String| {
        let client = client.clone();
        let url = format!("{}/users/u1", sim.base_url());
        async move {
            let r = client.get(url).header(name, value).send().await.unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap())
        }
    };
    let (status, empty) = cond("if-none-match", tag.clone()).await;
    assert_eq!((status, empty.len()), (304, 0));
    assert_eq!(cond("if-modified-since", date.clone()).await.0, 304);
    assert_eq!(cond("if-none-match", "\"other\"".into()).await.0, 200);

    // The user changes: a new body, tag and date; the old tag no longer matches.
    let r = client
        .post(format!("{}/_sim/users/u1/change", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(json(&r.bytes().await.unwrap())["version"], 2);
    let (status, changed) = cond("if-none-match", tag.clone()).await;
    assert_eq!(status, 200);
    assert_ne!(changed, body);
    assert_eq!(json(&changed)["version"], 2);
    assert_eq!(cond("if-modified-since", date).await.0, 200);
    let stats: Stats = sim.sim().stats();
    assert_eq!((stats.conditional, stats.by_status[&304]), (5, 2));
}

/// `paragon-sim --help` documents the control endpoint and every key of the fault set,
/// each with its flag, so the two cannot drift apart.
#[test]
fn help_documents_the_control_endpoint_and_every_fault_key() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paragon-sim"))
        .arg("--help")
        .output()
        .expect("the binary runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for route in [
        "PUT",
        "PATCH /_sim/faults",
        "/_sim/stats",
        "/_sim/users/{id}/change",
    ] {
        assert!(
            help.contains(route),
            "--help does not mention {route}:\n{help}"
        );
    }
    let keys = serde_json::to_value(Faults::default()).expect("Faults as JSON");
    let keys = keys.as_object().expect("an object");
    assert!(keys.len() >= 20, "{keys:?}");
    for key in keys.keys() {
        let flag = format!("--{}", key.replace('_', "-"));
        assert!(help.contains(&flag), "--help has no flag {flag}:\n{help}");
        let listed = help
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|word| word == key);
        assert!(listed, "--help does not list the fault key {key}:\n{help}");
    }
}
