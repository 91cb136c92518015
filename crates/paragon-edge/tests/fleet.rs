//! Fleet mode: three edge instances sharing one real Redis and one simulated ParagoN,
//! against Redis as it is run: a single server (plain, with a password, over TLS), a Redis
//! Cluster and a Sentinel-managed master; and every reason Redis cannot be used, shown.
//!
//! The servers are real `redis-server` processes on free ports (`paragon-testkit`).

#![allow(
    clippy::disallowed_methods,
    reason = "tests time real processes and sockets"
)]

use std::time::{Duration, Instant};

use paragon_edge::config::{Config, Settings};
use paragon_edge::server;
use paragon_layers::Clock;
use paragon_sim::{Faults, SimConfig, SimHandle, Simulator};
use paragon_testkit::{RedisCluster, RedisSentinel, RedisServer, ServerOptions, TempDir, TlsFiles};
use tokio::sync::oneshot;

const TOKEN: &str = "fleet-admin-token";

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

/// The `[redis]` lines of a single server at `url`.
fn standalone(url: &str) -> String {
    format!("url = \"{url}\"")
}

/// A fleet configuration; `redis` is the body of `[redis]`, `rate_limit` and `cache` are
/// extra lines of those sections.
fn fleet_config(redis: &str, upstream: &str, rate_limit: &str, cache: &str) -> Config {
    let mut config = Config::from_toml(&format!(
        "[server]\nadmin_token = \"{TOKEN}\"\n[cache]\nbackend = \"redis\"\n{cache}\n[rate_limit]\nbackend = \"redis\"\n{rate_limit}\n[redis]\n{redis}\n"
    ))
    .unwrap();
    config.upstream.base_url = Some(upstream.to_string().into());
    config
}

async fn instance(config: Config) -> Instance {
    let settings = Settings::new(config).expect("a valid fleet configuration");
    let edge = server::build(settings, Clock::tokio()).await.unwrap();
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

/// `n` instances, once each uses Redis and sees the `n` of them (so no test starts on the
/// local fallback, whatever the machine's load).
async fn fleet(n: usize, config: &Config) -> Vec<Instance> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(instance(config.clone()).await);
    }
    let client = reqwest::Client::new();
    eventually(
        "every instance uses Redis and sees the whole fleet",
        || async {
            for e in &out {
                let st = status(&client, e).await;
                if st["redis"]["reachable"] != true || st["redis"]["instances"] != n {
                    return false;
                }
            }
            true
        },
    )
    .await;
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
async fn eventually<F, Fut>(what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(what, Duration::from_secs(10), cond).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_budget_under_10x_overload() {
    let redis = RedisServer::start();
    one_budget_under_10x_overload(&standalone(&redis.url())).await;
}

/// Three instances, 10 × their budget: the upstream calls stay within budget + burst.
async fn one_budget_under_10x_overload(redis: &str) {
    let sim = sim(Faults::default()).await;
    // Budget N = 10 per 1 s with burst 5: at most N + burst = 15 calls in any 1 s.
    let config = fleet_config(
        redis,
        &sim.base_url(),
        "max_requests = 10\nwindow = \"1s\"\nburst = 5",
        "",
    );
    let edges = fleet(3, &config).await;
    assert_one_budget_under_10x_overload(&edges, &sim, "over").await;
}

/// Drives `edges` (budget 10 per second, burst 5) at 10 × their budget with cold ids
/// named `{ids}N`, and checks the upstream calls stay within budget + burst.
async fn assert_one_budget_under_10x_overload(edges: &[Instance], sim: &SimHandle, ids: &str) {
    let client = reqwest::Client::new();
    let served_before = sim.sim().served_total();
    // 10 × N per window for two windows: 200 distinct cold ids, one every 10 ms, spread
    // over the three instances.
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    let mut pace = tokio::time::interval(Duration::from_millis(10));
    for i in 0..200 {
        pace.tick().await;
        let url = format!("{}/v1/users/{ids}{i}", edges[i % edges.len()].base);
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
    let served = sim.sim().served_total() - served_before;
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
    one_call_for_a_cold_id(&standalone(&redis.url())).await;
}

/// Thirty concurrent requests for one cold id through three instances: one upstream call.
async fn one_call_for_a_cold_id(redis: &str) {
    // Slow enough that every request arrives while the first fill is in flight.
    let sim = sim(Faults {
        latency: Some("300ms".into()),
        ..Faults::default()
    })
    .await;
    let config = fleet_config(redis, &sim.base_url(), "", "");
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
    one_pause_for_the_fleet(&standalone(&redis.url())).await;
}

/// ParagoN's 429 seen by one instance pauses every instance.
async fn one_pause_for_the_fleet(redis: &str) {
    let sim = sim(Faults {
        always_429: Some(3),
        ..Faults::default()
    })
    .await;
    let config = fleet_config(redis, &sim.base_url(), "", "");
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
        &standalone(&redis.url()),
        &sim.base_url(),
        "max_requests = 30\nwindow = \"60s\"",
        "",
    );
    let edges = fleet(3, &config).await;
    let client = patient_client();
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
    let st = status(&client, &edges[0]).await;
    assert_eq!(st["redis"]["reachable"], false);
    assert_eq!(st["redis"]["mode"], "standalone");
    let reason = st["redis"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("refused") || reason.contains("lost"),
        "the reason names the cause: {reason:?}"
    );
    assert_eq!(
        metric(&client, &edges[0], "paragon_edge_redis_up").await,
        Some(0.0)
    );
    // A purge that cannot reach the shared tier says so instead of claiming success.
    let r = purge(&client, &edges[0]).await;
    assert_eq!(r.0, 503, "{}", r.1);
    assert!(r.1.contains("shared tier"), "{}", r.1);

    redis.restart();
    eventually("the instance notices Redis is back", || async {
        status(&client, &edges[0]).await["redis"]["reachable"] == true
    })
    .await;
    assert_eq!(
        status(&client, &edges[0]).await["redis"]["reason"],
        serde_json::Value::Null
    );
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
        &standalone(&redis.url()),
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
        &standalone(&redis.url()),
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

/// `POST /admin/cache/purge` with the admin token: status and body.
async fn purge(client: &reqwest::Client, inst: &Instance) -> (u16, String) {
    let r = client
        .post(format!("{}/admin/cache/purge", inst.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Polls `cond` every 20 ms for up to `limit`.
async fn eventually_within<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client that gives up on an answer after 2 s (none should take that long).
fn patient_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// One instance on `redis` (the body of `[redis]`), default budget and cache.
async fn lone_instance(redis: &str, sim: &SimHandle) -> Instance {
    instance(fleet_config(redis, &sim.base_url(), "", "")).await
}

/// Whether every instance uses Redis.
async fn all_reachable(client: &reqwest::Client, edges: &[Instance]) -> bool {
    for e in edges {
        if status(client, e).await["redis"]["reachable"] != true {
            return false;
        }
    }
    true
}

/// The reason `/admin/status` gives, once it starts with `expected` (polled for up to
/// 10 s; an instance may first see another reason, e.g. a timeout on a loaded machine).
async fn reason(client: &reqwest::Client, inst: &Instance, expected: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = status(client, inst).await;
        let reason = st["redis"]["reason"].as_str().unwrap_or_default();
        if reason.starts_with(expected) {
            return reason.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the status never said \"{expected}…\" : {st}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Entries filled through three instances land in the shared tier; a purge on one
/// instance removes every one of them (on every node) and answers how many it removed.
/// `shared` counts the keys matching a pattern on each server that holds keys; the
/// counts seen before the purge are returned.
async fn purge_empties_the_shared_tier(
    redis: &str,
    prefix: &str,
    shared: impl Fn(&str) -> Vec<u64>,
) -> Vec<u64> {
    let sim = sim(Faults::default()).await;
    let config = fleet_config(redis, &sim.base_url(), "", "");
    let edges = fleet(3, &config).await;
    let client = reqwest::Client::new();
    for i in 0..12 {
        let r = client
            .get(format!("{}/v1/users/p{i}", edges[i % 3].base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Entry keys end with the hash tag's `}`; fill locks end with `}:lock`.
    let entries = format!("{prefix}{{c:*}}");
    let total = |counts: Vec<u64>| counts.iter().sum::<u64>();
    eventually("the 12 entries are in the shared tier", || {
        std::future::ready(total(shared(&entries)) == 12)
    })
    .await;
    let before = shared(&entries);
    let (code, body) = purge(&client, &edges[0]).await;
    assert_eq!(code, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["shared"], 12, "{body}");
    assert_eq!(answer["local"], 4, "{body}");
    assert_eq!(answer["purged"], 16, "{body}");
    assert_eq!(
        total(shared(&format!("{prefix}{{c:*"))),
        0,
        "no entry or lock is left on any node"
    );
    // The instance that purged asks ParagoN again.
    let r = client
        .get(format!("{}/v1/users/p0", edges[0].base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "MISS");
    assert_eq!(sim.sim().served("/users/p0"), 2);
    // Nothing is left to purge.
    let (code, body) = purge(&client, &edges[1]).await;
    assert_eq!(code, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["shared"], 1, "only p0, filled again: {body}");
    before
}

/// The fleet's promises against one deployment of Redis (`redis` is the body of
/// `[redis]`): one budget under overload, one upstream call per cold id, one pause, and a
/// purge that empties the shared tier. Each part has a key prefix of its own. Returns the
/// per-server entry counts the purge saw.
async fn fleet_contract(redis: &str, shared: impl Fn(&str) -> Vec<u64>) -> Vec<u64> {
    let with_prefix = |p: &str| format!("{redis}\nkey_prefix = \"{p}\"");
    one_budget_under_10x_overload(&with_prefix("budget:")).await;
    one_call_for_a_cold_id(&with_prefix("cold:")).await;
    one_pause_for_the_fleet(&with_prefix("pause:")).await;
    purge_empties_the_shared_tier(&with_prefix("purge:"), "purge:", shared).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_empties_the_shared_tier_and_counts_what_it_removed() {
    let redis = RedisServer::start();
    purge_empties_the_shared_tier(&standalone(&redis.url()), "paragon-edge:", |p| {
        vec![redis.count_keys(p)]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_protected_redis_keeps_the_fleet_contract() {
    let redis = RedisServer::start_with(ServerOptions {
        password: Some("fleet-pw-1".into()),
        ..ServerOptions::default()
    });
    fleet_contract(&standalone(&redis.url()), |p| vec![redis.count_keys(p)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_redis_keeps_the_fleet_contract() {
    let dir = TempDir::new("fleet-tls");
    let tls = TlsFiles::generate(dir.path());
    let redis = RedisServer::start_with(ServerOptions {
        tls: Some((&tls).into()),
        ..ServerOptions::default()
    });
    assert!(redis.url().starts_with("rediss://"));
    let section = format!(
        "url = \"{}\"\ntls_ca_file = \"{}\"",
        redis.url(),
        tls.ca_cert.display()
    );
    fleet_contract(&section, |p| vec![redis.count_keys(p)]).await;
}

fn cluster_section(cluster: &RedisCluster) -> String {
    let nodes: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    format!("mode = \"cluster\"\nnodes = [{}]", nodes.join(", "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_keeps_the_fleet_contract() {
    let cluster = RedisCluster::start(3, 0);
    let spread = fleet_contract(&cluster_section(&cluster), |p| {
        cluster
            .count_keys_per_master(p)
            .into_iter()
            .map(|(_, n)| n)
            .collect()
    })
    .await;
    assert_eq!(spread.len(), 3, "three masters");
    assert!(
        spread.iter().filter(|n| **n > 0).count() >= 2,
        "cache entries spread over the cluster's slots: {spread:?}"
    );

    // A standalone client pointed at a cluster node says what is wrong.
    let sim = sim(Faults::default()).await;
    let edge = lone_instance(&standalone(&cluster.urls()[0]), &sim).await;
    let client = reqwest::Client::new();
    let why = reason(&client, &edge, "this Redis is a Redis Cluster node").await;
    assert!(why.contains("Redis Cluster node"), "{why}");
    assert_eq!(status(&client, &edge).await["redis"]["reachable"], false);
    assert_eq!(
        metric(&client, &edge, "paragon_edge_redis_up").await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failover_is_followed_and_the_budget_still_holds() {
    let mut cluster = RedisCluster::start(3, 1);
    let sim = sim(Faults::default()).await;
    let config = fleet_config(
        &cluster_section(&cluster),
        &sim.base_url(),
        "max_requests = 10\nwindow = \"1s\"\nburst = 5",
        "",
    );
    let edges = fleet(3, &config).await;
    let client = patient_client();

    // Kill the master of the budget's slot; its replica takes over.
    let slot = cluster.slot_of("paragon-edge:{rate}:tat");
    let master = cluster.master_of(slot).expect("a master serves every slot");
    let replica = cluster.replicas_of(&master.id)[0].clone();
    let killed = Instant::now();
    cluster.node(master.port).kill();
    eventually_within("the replica is promoted", Duration::from_secs(30), || {
        std::future::ready(
            cluster
                .master_of(slot)
                .is_some_and(|m| m.port == replica.port),
        )
    })
    .await;
    let promoted = killed.elapsed();
    eventually_within(
        "every instance follows the new master",
        Duration::from_secs(30),
        || all_reachable(&client, &edges),
    )
    .await;
    let followed = killed.elapsed();
    eprintln!("cluster failover: replica promoted after {promoted:?}, every edge back on Redis after {followed:?}");
    assert_one_budget_under_10x_overload(&edges, &sim, "after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_keeps_the_fleet_contract_and_follows_a_failover() {
    let mut set = RedisSentinel::start("edge-master");
    let section = format!(
        "mode = \"sentinel\"\nsentinels = [\"{}\"]\nmaster_name = \"edge-master\"",
        set.sentinel_url()
    );
    fleet_contract(&section, |p| vec![set.current_master().count_keys(p)]).await;

    let sim = sim(Faults::default()).await;
    let config = fleet_config(
        &format!("{section}\nkey_prefix = \"failover:\""),
        &sim.base_url(),
        "max_requests = 3\nwindow = \"60s\"",
        "",
    );
    let edges = fleet(3, &config).await;
    let client = patient_client();
    let old = set.master.port();
    let killed = Instant::now();
    set.master.kill();
    eventually_within(
        "the Sentinel promotes the replica and every instance follows",
        Duration::from_secs(30),
        || async {
            set.current_master_port() == Some(set.replica.port())
                && all_reachable(&client, &edges).await
        },
    )
    .await;
    let followed = killed.elapsed();
    eprintln!("sentinel failover: every edge back on Redis {followed:?} after the master ({old}) was killed");
    // Sentinel's down-after-milliseconds is 500 ms here; the bound leaves room for the
    // election and a loaded machine.
    assert!(
        followed < Duration::from_secs(15),
        "the edges followed the failover only after {followed:?}"
    );
    // One budget (3) on the new master, for the three instances.
    let mut codes = Vec::new();
    for i in 0..4 {
        let r = client
            .get(format!("{}/v1/users/f{i}", edges[i % 3].base))
            .send()
            .await
            .unwrap();
        codes.push(r.status().as_u16());
    }
    assert_eq!(codes, [200, 200, 200, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_password_is_shown_with_its_cause() {
    let redis = RedisServer::start_with(ServerOptions {
        password: Some("the-right-pw".into()),
        ..ServerOptions::default()
    });
    let sim = sim(Faults::default()).await;
    let client = reqwest::Client::new();
    let wrong = format!("redis://:the-wrong-pw@127.0.0.1:{}", redis.port());
    for url in [redis.url_without_password(), wrong] {
        let edge = lone_instance(&standalone(&url), &sim).await;
        let why = reason(&client, &edge, "authentication failed").await;
        assert!(why.starts_with("authentication failed"), "{url}: {why}");
        let st = status(&client, &edge).await;
        assert_eq!(st["redis"]["reachable"], false);
        assert!(!st.to_string().contains("the-wrong-pw"), "{st}");
        assert_eq!(
            metric(&client, &edge, "paragon_edge_redis_up").await,
            Some(0.0)
        );
        // It still serves, on its local budget.
        let r = client
            .get(format!("{}/v1/users/a1", edge.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_failure_is_shown_with_its_cause() {
    let dir = TempDir::new("fleet-tls-bad");
    let tls = TlsFiles::generate(dir.path());
    let redis = RedisServer::start_with(ServerOptions {
        tls: Some((&tls).into()),
        ..ServerOptions::default()
    });
    let sim = sim(Faults::default()).await;
    let client = reqwest::Client::new();
    // A CA that did not sign the server's certificate.
    let section = format!(
        "url = \"{}\"\ntls_ca_file = \"{}\"",
        redis.url(),
        tls.other_ca_cert.display()
    );
    let edge = lone_instance(&section, &sim).await;
    let why = reason(&client, &edge, "TLS failure").await;
    assert!(why.starts_with("TLS failure"), "{why}");
    assert!(why.contains("certificate"), "{why}");
    assert_eq!(
        metric(&client, &edge, "paragon_edge_redis_up").await,
        Some(0.0)
    );
    // Plain text to a TLS port.
    let plain = redis.url().replace("rediss://", "redis://");
    let edge = lone_instance(&standalone(&plain), &sim).await;
    // The server drops the connection at the first bytes that are not TLS.
    reason(&client, &edge, "connection lost").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_refuses_scripts_is_shown_with_its_cause() {
    let redis = RedisServer::start_with(ServerOptions {
        args: vec!["--rename-command".into(), "EVALSHA".into(), "".into()],
        ..ServerOptions::default()
    });
    let sim = sim(Faults::default()).await;
    let client = reqwest::Client::new();
    let edge = lone_instance(&standalone(&redis.url()), &sim).await;
    let why = reason(&client, &edge, "Redis refused the fleet's scripts").await;
    assert!(why.contains("scripts"), "{why}");
    assert_eq!(status(&client, &edge).await["redis"]["reachable"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_started_during_an_outage_assumes_the_configured_fleet() {
    // Nothing listens there.
    let port = paragon_testkit::free_port();
    let sim = sim(Faults::default()).await;
    let client = reqwest::Client::new();
    let config = fleet_config(
        &format!("url = \"redis://127.0.0.1:{port}\"\nfallback_instances = 3"),
        &sim.base_url(),
        "max_requests = 30\nwindow = \"60s\"",
        "",
    );
    let edge = instance(config).await;
    let why = reason(&client, &edge, "connection refused").await;
    assert!(why.starts_with("connection refused"), "{why}");
    assert_eq!(
        status(&client, &edge).await["redis"]["fallback_instances"],
        3
    );
    let mut ok = 0;
    for i in 0..15 {
        let r = client
            .get(format!("{}/v1/users/cold{i}", edge.base))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            429 => {}
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(ok, 10, "a third of the fleet's 30, not all of it");
    assert_eq!(sim.sim().served_total(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_while_redis_is_down_is_replaced() {
    let other = RedisServer::start();
    let redis = RedisServer::start();
    let sim = sim(Faults::default()).await;
    let client = reqwest::Client::new();
    let edge = lone_instance(&standalone(&redis.url()), &sim).await;
    eventually("the instance uses Redis", || {
        all_reachable(&client, std::slice::from_ref(&edge))
    })
    .await;
    // Redis turns into a read-only replica: unusable, but the connection stays open.
    assert_eq!(
        redis.cli(&["REPLICAOF", "127.0.0.1", &other.port().to_string()]),
        "OK"
    );
    let why = reason(&client, &edge, "this Redis is a read-only replica").await;
    assert!(
        why.starts_with("this Redis is a read-only replica"),
        "{why}"
    );
    // While it is down, its clients' connections are killed (as Sentinel does on a
    // failover), and then it becomes a master again.
    redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    assert_eq!(redis.cli(&["REPLICAOF", "NO", "ONE"]), "OK");
    eventually("the instance uses Redis again, on a new connection", || {
        all_reachable(&client, std::slice::from_ref(&edge))
    })
    .await;
}

/// One client spread over two instances gets one share of the fleet's upstream budget,
/// not one per instance; another client keeps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_upstream_share_is_the_fleets() {
    let redis = RedisServer::start();
    let sim = sim(Faults::default()).await;
    let mut config = fleet_config(
        &standalone(&redis.url()),
        &sim.base_url(),
        "max_requests = 40\nwindow = \"60s\"",
        "",
    );
    config.client_limit.enabled = true;
    config.client_limit.key = "header:x-client".into();
    config.client_limit.max_upstream_share = 0.25;
    let edges = fleet(2, &config).await;
    let client = reqwest::Client::new();
    let get = |edge: usize, id: String, who: &'static str| {
        let url = format!("{}/v1/users/{id}", edges[edge].base);
        let client = client.clone();
        async move {
            let r = client
                .get(url)
                .header("x-client", who)
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    };
    // A quarter of 40 is 10 misses for the whole fleet, whichever instance they reach.
    let mut greedy_ok = 0;
    for i in 0..16 {
        if get(i % 2, format!("g{i}"), "greedy").await == 200 {
            greedy_ok += 1;
        }
    }
    assert_eq!(greedy_ok, 10, "one share across both instances");
    for i in 0..4 {
        assert_eq!(get(i % 2, format!("p{i}"), "polite").await, 200);
    }
    assert_eq!(sim.sim().served_total(), 14);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_user_past_its_ttl_is_refreshed_once_per_ttl_for_the_fleet_and_nobody_waits() {
    let redis = RedisServer::start();
    // A slow ParagoN: a caller that waited for a refill would see a MISS.
    let sim = sim(Faults {
        latency: Some("100ms".into()),
        ..Faults::default()
    })
    .await;
    let config = fleet_config(
        &standalone(&redis.url()),
        &sim.base_url(),
        "",
        "ttl = \"1s\"\nttl_jitter = 0.0\nstale_while_revalidate = \"30s\"",
    );
    let edges = fleet(3, &config).await;
    let client = reqwest::Client::new();
    let get = |i: usize| {
        let url = format!("{}/v1/users/hot", edges[i % 3].base);
        let client = client.clone();
        async move {
            let r = client.get(url).send().await.unwrap();
            let cache = r.headers()["x-cache"].to_str().unwrap().to_owned();
            (r.status().as_u16(), cache)
        }
    };
    assert_eq!(get(0).await, (200, "MISS".to_owned()));
    let start = Instant::now();
    let mut updating = 0;
    let mut i = 0;
    while start.elapsed() < Duration::from_millis(3500) {
        let (status, cache) = get(i).await;
        assert_eq!(status, 200);
        match cache.as_str() {
            "HIT" => {}
            "UPDATING" => updating += 1,
            other => panic!("request {i} at {:?} was {other}", start.elapsed()),
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let calls = sim.sim().served("/users/hot");
    // One call at the start, then at most one per TTL for the three instances.
    assert!(
        calls as f64 <= 1.0 + elapsed.ceil(),
        "{calls} upstream calls in {elapsed:.1} s"
    );
    assert!(calls >= 3, "the entry was refreshed: {calls} calls");
    assert!(updating > 0);
}
