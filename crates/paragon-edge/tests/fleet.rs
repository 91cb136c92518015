//! Fleet mode: three edge instances sharing one real Redis and one simulated ParagoN.

#[path = "support/redis.rs"]
mod redis_support;

use std::time::Duration;

use paragon_edge::config::Config;
use paragon_edge::server;
use paragon_layers::Clock;
use paragon_sim::{Faults, SimConfig, SimHandle, Simulator};
use redis_support::RedisServer;
use tokio::sync::oneshot;

struct Instance {
    base: String,
    _stop: oneshot::Sender<()>,
}

async fn sim(faults: Faults) -> SimHandle {
    let config = SimConfig {
        faults,
        ..SimConfig::default()
    };
    Simulator::new(config)
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// A fleet configuration; `rate_limit` and `cache` are extra lines of those sections.
fn fleet_config(redis: &str, upstream: &str, rate_limit: &str, cache: &str) -> Config {
    let mut config = Config::from_toml(&format!(
        "[cache]\nbackend = \"redis\"\n{cache}\n[rate_limit]\nbackend = \"redis\"\n{rate_limit}\n[redis]\nurl = \"{redis}\"\n"
    ))
    .unwrap();
    config.upstream.base_url = Some(upstream.to_string().into());
    config
}

async fn instance(config: Config) -> Instance {
    let edge = server::build(config, Clock::tokio()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server::run(
        listener,
        edge.state,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));
    Instance { base, _stop: stop }
}

async fn fleet(n: usize, config: &Config) -> Vec<Instance> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(instance(config.clone()).await);
    }
    out
}

async fn status(client: &reqwest::Client, inst: &Instance) -> serde_json::Value {
    client
        .get(format!("{}/admin/status", inst.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `cond` every 20 ms for up to 10 s.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_budget_under_10x_overload() {
    let redis = RedisServer::start();
    let sim = sim(Faults::default()).await;
    // Budget N = 10 per 1 s with burst 5: at most N + burst = 15 calls in any 1 s.
    let config = fleet_config(
        &redis.url(),
        &sim.base_url(),
        "max_requests = 10\nwindow = \"1s\"\nburst = 5",
        "",
    );
    let edges = fleet(3, &config).await;
    let client = reqwest::Client::new();
    // 10 × N per window for two windows: 200 distinct cold ids, one every 10 ms, spread
    // over the three instances.
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    for i in 0..200 {
        pace.tick().await;
        let url = format!("{}/v1/users/over{i}", edges[i % 3].base);
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let status = client.get(url).send().await.unwrap().status().as_u16();
            (status, start.elapsed())
        }));
    }
    let mut admitted_at = Vec::new();
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            (200, at) => admitted_at.push(at),
            (429, _) => limited += 1,
            (other, _) => panic!("unexpected status {other}"),
        }
    }
    let served = sim.sim().served_total();
    let span = start.elapsed();
    eprintln!(
        "overload: {} admitted, {limited} refused, {served} reached ParagoN in {span:?} (budget 10/s + burst 5)",
        admitted_at.len()
    );
    assert_eq!(
        admitted_at.len() as u64,
        served,
        "every admitted call was answered 200"
    );
    assert_eq!(admitted_at.len() + limited, 200);
    // Over the whole run: the burst plus the rate, plus one for the window edge.
    let bound = 5 + (span.as_secs_f64() * 10.0).ceil() as u64 + 1;
    assert!(
        served <= bound,
        "{served} upstream calls in {span:?}; the fleet budget allows {bound}"
    );
    // In any one-second window: at most N + burst.
    admitted_at.sort();
    for (i, t) in admitted_at.iter().enumerate() {
        let in_window = admitted_at[i..]
            .iter()
            .take_while(|u| **u < *t + Duration::from_secs(1))
            .count();
        assert!(
            in_window <= 15,
            "{in_window} upstream calls within one second"
        );
    }
    assert!(
        served >= 15,
        "the budget should have been used (served {served})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_id_through_three_instances_reaches_paragon_once() {
    let redis = RedisServer::start();
    // Slow enough that every request arrives while the first fill is in flight.
    let sim = sim(Faults {
        latency: Some("300ms".into()),
        ..Faults::default()
    })
    .await;
    let config = fleet_config(&redis.url(), &sim.base_url(), "", "");
    let edges = fleet(3, &config).await;
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let url = format!("{}/v1/users/cold1", edges[i % 3].base);
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let r = client.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }));
    }
    let expected = paragon_sim::user_json("cold1");
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            expected
        );
    }
    assert_eq!(
        sim.sim().served("/users/cold1"),
        1,
        "one upstream call for the whole fleet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_seen_by_one_instance_stops_the_others() {
    let redis = RedisServer::start();
    let sim = sim(Faults {
        always_429: Some(3),
        ..Faults::default()
    })
    .await;
    let config = fleet_config(&redis.url(), &sim.base_url(), "", "");
    let edges = fleet(3, &config).await;
    let client = reqwest::Client::new();

    let r = client
        .get(format!("{}/v1/users/t1", edges[0].base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(sim.sim().served_total(), 1);
    // ParagoN is fine again, but its Retry-After (3 s) has not passed: nobody calls it.
    sim.sim().set_faults(Faults::default()).unwrap();
    for (edge, id) in [(&edges[1], "t2"), (&edges[2], "t3"), (&edges[0], "t4")] {
        let r = client
            .get(format!("{}/v1/users/{id}", edge.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429, "{id}");
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=3).contains(&retry), "retry-after {retry}");
    }
    assert_eq!(
        sim.sim().served_total(),
        1,
        "the pause held on every instance"
    );
}

async fn metric(client: &reqwest::Client, inst: &Instance, name: &str) -> Option<f64> {
    let text = client
        .get(format!("{}/metrics", inst.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_falls_back_to_local_state_and_recovers() {
    let mut redis = RedisServer::start();
    let sim = sim(Faults::default()).await;
    // Fleet budget 30 per minute (burst 30): 10 per instance while Redis is away.
    let config = fleet_config(
        &redis.url(),
        &sim.base_url(),
        "max_requests = 30\nwindow = \"60s\"",
        "",
    );
    let edges = fleet(3, &config).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    eventually("every instance sees three live instances", || async {
        status(&client, &edges[0]).await["redis"]["instances"] == 3
    })
    .await;

    let hot = format!("{}/v1/users/hot", edges[0].base);
    assert_eq!(
        client.get(&hot).send().await.unwrap().headers()["x-cache"],
        "MISS"
    );
    assert_eq!(
        metric(&client, &edges[0], "paragon_edge_redis_up").await,
        Some(1.0)
    );

    redis.kill();
    // Hits stay hits, without waiting on the dead Redis.
    let r = client
        .get(&hot)
        .send()
        .await
        .expect("answered while Redis is down");
    assert_eq!(r.headers()["x-cache"], "HIT");
    // Misses reach ParagoN within the local budget: 30 / 3 instances = 10.
    let before = sim.sim().served_total();
    let mut ok = 0;
    for i in 0..15 {
        let r = client
            .get(format!("{}/v1/users/out{i}", edges[0].base))
            .send()
            .await
            .expect("answered");
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {}
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(
        ok, 10,
        "the local fallback budget is the fleet's divided by 3"
    );
    assert_eq!(sim.sim().served_total() - before, 10);
    assert_eq!(
        status(&client, &edges[0]).await["redis"]["reachable"],
        false
    );
    assert_eq!(
        metric(&client, &edges[0], "paragon_edge_redis_up").await,
        Some(0.0)
    );

    redis.restart();
    eventually("the instance notices Redis is back", || async {
        status(&client, &edges[0]).await["redis"]["reachable"] == true
    })
    .await;
    // The shared budget (fresh in the new Redis: 30) is in force again, not the spent
    // local one.
    for i in 0..25 {
        let r = client
            .get(format!("{}/v1/users/back{i}", edges[0].base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "back{i}");
    }
    assert_eq!(
        metric(&client, &edges[0], "paragon_edge_redis_up").await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_flushed_from_redis_are_loaded_again() {
    let redis = RedisServer::start();
    let sim = sim(Faults::default()).await;
    let config = fleet_config(
        &redis.url(),
        &sim.base_url(),
        "max_requests = 3\nwindow = \"60s\"",
        "",
    );
    let edges = fleet(1, &config).await;
    let client = reqwest::Client::new();
    let get = |id: &str| {
        client
            .get(format!("{}/v1/users/{id}", edges[0].base))
            .send()
    };
    assert_eq!(get("s1").await.unwrap().status(), 200);
    assert_eq!(redis.cli(&["SCRIPT", "FLUSH"]), "OK");
    assert_eq!(get("s2").await.unwrap().status(), 200);
    assert_eq!(get("s3").await.unwrap().status(), 200);
    // Still the shared budget (3), not a local fallback: the fourth call is refused.
    assert_eq!(get("s4").await.unwrap().status(), 429);
    assert_eq!(status(&client, &edges[0]).await["redis"]["reachable"], true);
    let tat = redis.cli(&["GET", "paragon-edge:{rate}:tat"]);
    assert!(
        tat.parse::<u64>().is_ok(),
        "the budget lives in Redis under the hash-tagged key: {tat:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_wait_waits_for_a_shared_slot() {
    let redis = RedisServer::start();
    let sim = sim(Faults::default()).await;
    // One call per 200 ms, no burst beyond one, callers may wait 1 s.
    let config = fleet_config(
        &redis.url(),
        &sim.base_url(),
        "max_requests = 5\nwindow = \"1s\"\nburst = 1\nmax_wait = \"1s\"",
        "",
    );
    let edges = fleet(2, &config).await;
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let url = format!("{}/v1/users/w{i}", edges[i % 2].base);
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client.get(url).send().await.unwrap().status().as_u16()
        }));
    }
    for t in tasks {
        // The first goes at once; the others wait 200, 400 and 600 ms for their slots.
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(sim.sim().served_total(), 4);
}
