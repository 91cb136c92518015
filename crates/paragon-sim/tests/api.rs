//! The ParagoN API surface of the simulator, over real sockets.

mod common;

use common::{client, get, json, start};
use paragon_sim::{user_json, SimConfig, Stats};

#[tokio::test]
async fn serves_the_deterministic_user_as_json() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let (status, headers, body) = get(&client, &sim, "/users/u1").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let user = json(&body);
    assert_eq!(user, user_json("u1"));
    assert_eq!(user["id"], "u1");
    assert!(user["email"]
        .as_str()
        .is_some_and(|e| e.ends_with("@example.com")));
    assert!(user["profile"].is_object());

    let (_, _, again) = get(&client, &sim, "/users/u1").await;
    assert_eq!(body, again, "same id, same bytes");
    let (_, _, other) = get(&client, &sim, "/users/u2").await;
    assert_ne!(json(&other), user);
    assert_eq!(json(&other)["id"], "u2");
}

#[tokio::test]
async fn decodes_the_percent_encoded_id() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let (status, _, body) = get(&client, &sim, "/users/a%20b%2Fc%C3%A9").await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["id"], "a b/cé");
    // Counted under the path as received.
    assert_eq!(sim.sim().served("/users/a%20b%2Fc%C3%A9"), 1);
    // Not UTF-8 once decoded.
    let (status, _, _) = get(&client, &sim, "/users/%FF").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn ids_starting_with_missing_are_not_found() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    for path in ["/users/missing", "/users/missing-42", "/users/missing%2D7"] {
        let (status, headers, body) = get(&client, &sim, path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(json(&body), serde_json::json!({"error": "not_found"}));
    }
    let (status, _, _) = get(&client, &sim, "/users/not-missing").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn other_paths_are_not_found_and_other_methods_not_allowed() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    for path in [
        "/",
        "/users",
        "/users/",
        "/users/a/b",
        "/v1/users/u1",
        "/_sim/nope",
    ] {
        let (status, _, _) = get(&client, &sim, path).await;
        assert_eq!(status, 404, "{path}");
    }
    let response = client
        .post(format!("{}/users/u1", sim.base_url()))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET");
    let response = client
        .delete(format!("{}/users/u1", sim.base_url()))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 405);
}

#[tokio::test]
async fn requires_the_bearer_key_when_one_is_set() {
    let sim = start(SimConfig {
        api_key: Some("k-123".into()),
        ..SimConfig::default()
    })
    .await;
    let client = client();
    let url = format!("{}/users/u1", sim.base_url());

    let none = client.get(&url).send().await.expect("an answer");
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let body = none.bytes().await.expect("body");
    assert_eq!(json(&body), serde_json::json!({"error": "unauthorized"}));

    let wrong = client
        .get(&url)
        .bearer_auth("k-12")
        .send()
        .await
        .expect("an answer");
    assert_eq!(wrong.status(), 401);
    let basic = client
        .get(&url)
        .basic_auth("k-123", None::<&str>)
        .send()
        .await
        .expect("an answer");
    assert_eq!(basic.status(), 401);

    let right = client
        .get(&url)
        .bearer_auth("k-123")
        .send()
        .await
        .expect("an answer");
    assert_eq!(right.status(), 200);
    // Auth comes before not-found.
    let missing = client
        .get(format!("{}/users/missing-1", sim.base_url()))
        .send()
        .await
        .expect("an answer");
    assert_eq!(missing.status(), 401);
}

#[tokio::test]
async fn counts_every_users_request_exactly() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    for path in [
        "/users/u1",
        "/users/u1",
        "/users/u1",
        "/users/u2",
        "/users/missing-1",
        "/other",
        "/_sim/stats",
    ] {
        get(&client, &sim, path).await;
    }
    client
        .post(format!("{}/users/u2", sim.base_url()))
        .send()
        .await
        .expect("an answer");

    assert_eq!(sim.sim().served("/users/u1"), 3);
    assert_eq!(sim.sim().served("/users/u2"), 2);
    assert_eq!(sim.sim().served("/users/u3"), 0);
    assert_eq!(sim.sim().served_total(), 6);
    let stats = sim.sim().stats();
    assert_eq!(stats.total, 6);
    assert_eq!(stats.by_status.get(&200), Some(&4));
    assert_eq!(stats.by_status.get(&404), Some(&1));
    assert_eq!(stats.by_status.get(&405), Some(&1));
    assert_eq!(stats.by_path.len(), 3);
    assert!(!stats.by_path.contains_key("/other"));

    sim.sim().reset_stats();
    assert_eq!(sim.sim().stats(), Stats::default());
    get(&client, &sim, "/users/u1").await;
    assert_eq!(sim.sim().served_total(), 1);
}

#[tokio::test]
async fn concurrent_requests_are_all_counted() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let client = client.clone();
        let url = format!("{}/users/u{}", sim.base_url(), i % 5);
        tasks.spawn(async move { client.get(url).send().await.map(|r| r.status()) });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.expect("task").expect("an answer"), 200);
    }
    assert_eq!(sim.sim().served_total(), 50);
    for i in 0..5 {
        assert_eq!(sim.sim().served(&format!("/users/u{i}")), 10);
    }
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let sim = start(SimConfig::default()).await;
    let addr = sim.addr();
    let client = client();
    get(&client, &sim, "/users/u1").await;
    sim.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_a_request_in_flight_finish() {
    let sim = common::start_with(paragon_sim::Faults {
        latency: Some("1s".into()),
        ..paragon_sim::Faults::default()
    })
    .await;
    let url = format!("{}/users/u1", sim.base_url());
    let request = tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) });
    // Wait (in paused, virtual time) until the request has reached the simulator.
    while sim.sim().served_total() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    sim.shutdown().await;
    let status = request.await.expect("task").expect("an answer");
    assert_eq!(status, 200);
}
