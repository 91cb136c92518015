//! Overload and soak (SECURITY.md §3).
//!
//! - More requests than the upstream budget and `upstream.max_concurrency` allow are
//!   answered quickly (429/503 with `Retry-After`) instead of queueing without bound;
//!   upstream concurrency, file descriptors and memory stay bounded.
//! - A soak with random faults injected by the simulator (`PARAGON_SOAK_SECS`, 3 s by
//!   default): every answer is in the contract, every 200 is byte-exact, and the cache
//!   holds no failure afterwards.
//!
//! The two tests count this process's file descriptors, so they run one at a time.

#![allow(
    clippy::disallowed_methods,
    reason = "tests time real sockets and servers"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{open_fds, start_edge_recorded, wait_until, Resp, WAIT};
use paragon_sim::{Faults, SimConfig};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A client that keeps no idle connections (so its descriptors are released at once),
/// with a per-request timeout that is a liveness bound, not a speed assertion.
fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .pool_max_idle_per_host(0)
        .build()
        .expect("client builds")
}

async fn fetch(client: &reqwest::Client, url: String) -> Result<Resp, String> {
    let r = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.bytes().await.map_err(|e| format!("{url}: body: {e}"))?;
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024
}

fn is_problem_with_retry_after(r: &Resp) -> bool {
    r.header("content-type").as_deref() == Some("application/problem+json")
        && r.header("retry-after")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|s| s >= 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_answered_quickly_and_stays_bounded() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (edge, recorder) = start_edge_recorded(
        "[upstream]\nmax_concurrency = 4\ntimeout = \"1500ms\"\n\
         [rate_limit]\nmax_requests = 100\nwindow = \"60s\"\n\
         [circuit_breaker]\nfailure_threshold = 1000\n",
        SimConfig {
            faults: Faults {
                latency: Some("1s".into()),
                ..Faults::default()
            },
            ..SimConfig::default()
        },
    )
    .await;
    assert_eq!(edge.get("/healthz").await.status, 200);
    let fds_before = open_fds();
    let rss_before = rss_mib();

    let http = client(Duration::from_secs(5));
    let started = Instant::now();
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let http = http.clone();
            let url = edge.url(&format!("/v1/users/load-{i}"));
            tokio::spawn(async move { (i, fetch(&http, url).await) })
        })
        .collect();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for t in tasks {
        let (i, answer) = t.await.expect("the task did not panic");
        match answer {
            Err(e) => failures.push(format!("no answer in time: {e}")),
            Ok(r) => {
                *by_status.entry(r.status).or_default() += 1;
                match r.status {
                    200 => {
                        let want = paragon_sim::user_json(&format!("load-{i}")).to_string();
                        if r.body != want.as_bytes() {
                            failures.push(format!("load-{i}: wrong body {}", r.text()));
                        }
                    }
                    429 | 503 if is_problem_with_retry_after(&r) => {}
                    504 => {}
                    _ => failures.push(format!("load-{i}: {} {}", r.status, r.text())),
                }
            }
        }
    }
    let took = started.elapsed();
    assert!(
        failures.is_empty(),
        "{}\n{by_status:?}",
        failures.join("\n")
    );
    assert!(
        by_status.get(&200).copied().unwrap_or(0) >= 4,
        "{by_status:?}"
    );
    assert!(
        by_status.contains_key(&429),
        "the budget refused nothing: {by_status:?}"
    );
    assert!(
        by_status.contains_key(&503),
        "nothing was shed at max_concurrency: {by_status:?}"
    );
    // Bounded upstream work: never more than max_concurrency at once, never more than
    // the budget in all.
    assert!(
        recorder.max_in_flight() <= 4,
        "{}",
        recorder.max_in_flight()
    );
    assert!(recorder.seen().len() <= 100, "{}", recorder.seen().len());
    recorder.assert_only_valid_user_gets();
    eprintln!("300 requests answered in {took:?}: {by_status:?}");

    // Still alive, and descriptors and memory return to where they were.
    drop(http);
    assert_eq!(edge.get("/healthz").await.status, 200);
    let mut fds_after = 0;
    wait_until("open descriptors to return near the baseline", || {
        fds_after = open_fds();
        let ok = fds_after <= fds_before + 16;
        async move { ok }
    })
    .await;
    let grown = rss_mib().saturating_sub(rss_before);
    assert!(grown < 100, "memory grew by {grown} MiB");
    eprintln!("descriptors {fds_before} -> {fds_after}, memory +{grown} MiB");
}

/// A small deterministic generator, so a failing soak can be replayed with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Debug)]
enum Sent {
    User(String),
    Batch(Vec<String>),
    Invalid(String),
}

const USER_STATUSES: [u16; 6] = [200, 429, 502, 503, 504, 404];

/// A 404 only for ids ParagoN does not know (`missing…`), which are never a 200.
fn status_fits(id: &str, status: u64) -> bool {
    match status {
        404 => id.starts_with("missing"),
        200 => !id.starts_with("missing"),
        _ => true,
    }
}

/// Checks one soak answer against the contract; returns the ids answered with 200.
fn check_soak(sent: &Sent, r: &Resp) -> Result<Vec<String>, String> {
    let problem_ok = |r: &Resp| {
        r.header("content-type").as_deref() == Some("application/problem+json")
            && (!matches!(r.status, 429 | 503) || is_problem_with_retry_after(r))
    };
    match sent {
        Sent::Invalid(_) => (r.status == 400 && problem_ok(r))
            .then(Vec::new)
            .ok_or_else(|| format!("{} {}", r.status, r.text())),
        Sent::User(id) => {
            if !USER_STATUSES.contains(&r.status) || !status_fits(id, u64::from(r.status)) {
                return Err(format!("{} {}", r.status, r.text()));
            }
            if r.status != 200 {
                return problem_ok(r)
                    .then(Vec::new)
                    .ok_or_else(|| format!("not a proper problem: {} {}", r.status, r.text()));
            }
            let cache = r.header("x-cache").unwrap_or_default();
            if !matches!(
                cache.as_str(),
                "HIT" | "MISS" | "STALE" | "UPDATING" | "REVALIDATED"
            ) {
                return Err(format!("x-cache {cache:?}"));
            }
            if r.body != paragon_sim::user_json(id).to_string().as_bytes() {
                return Err(format!("wrong body {}", r.text()));
            }
            Ok(vec![id.clone()])
        }
        Sent::Batch(ids) => {
            let v: serde_json::Value =
                serde_json::from_slice(&r.body).map_err(|e| format!("{e}: {}", r.text()))?;
            // A batch is 200 unless no id succeeded and every error has one status: then
            // it has that status (with Retry-After for 429 and 503).
            if r.status != 200 {
                let errors = v["errors"]
                    .as_object()
                    .map(|e| e.values().collect::<Vec<_>>());
                let alike = v["users"].as_object().is_some_and(|u| u.is_empty())
                    && errors.is_some_and(|e| {
                        !e.is_empty() && e.iter().all(|p| p["status"] == r.status)
                    });
                let retry = !matches!(r.status, 429 | 503) || r.header("retry-after").is_some();
                if !alike || !retry {
                    return Err(format!("{} {}", r.status, r.text()));
                }
            }
            let mut ok = Vec::new();
            for id in ids {
                let user = &v["users"][id.as_str()];
                let error = &v["errors"][id.as_str()];
                match (user.is_null(), error.is_null()) {
                    (false, true) if *user == paragon_sim::user_json(id) => ok.push(id.clone()),
                    (true, false)
                        if error["status"].as_u64().is_some_and(|s| {
                            USER_STATUSES.contains(&(s as u16)) && s != 200 && status_fits(id, s)
                        }) => {}
                    _ => return Err(format!("{id} in {v}")),
                }
            }
            Ok(ok)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_random_faults_stays_within_the_contract_and_caches_no_failure() {
    let _one = ONE_AT_A_TIME.lock().await;
    let secs: u64 = std::env::var("PARAGON_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("PARAGON_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("soak for {secs}s, PARAGON_SOAK_SEED={seed}");
    let chaos = Faults {
        latency: Some("2ms".into()),
        error_rate: 0.08,
        drop_rate: 0.03,
        malformed_rate: 0.04,
        not_object_rate: 0.03,
        wrong_id_rate: 0.03,
        oversized_rate: 0.02,
        oversized_bytes: Some(200_000),
        trickle_rate: 0.02,
        reset_rate: 0.03,
        quota: Some(400),
        quota_window: Some("1s".into()),
        ..Faults::default()
    };
    let (edge, recorder) = start_edge_recorded(
        "[upstream]\ntimeout = \"300ms\"\nmax_response_bytes = 65536\nmax_concurrency = 16\n\
         [cache]\nttl = \"1h\"\n\
         [rate_limit]\nmax_requests = 300\nwindow = \"1s\"\n\
         [circuit_breaker]\nfailure_threshold = 8\nopen_for = \"300ms\"\n\
         [server]\nmax_batch_ids = 5\n",
        SimConfig {
            faults: chaos,
            seed,
            ..SimConfig::default()
        },
    )
    .await;
    let fds_before = open_fds();
    let http = client(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let requests = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..24u64)
        .map(|w| {
            let http = http.clone();
            let base = edge.url("");
            let requests = requests.clone();
            tokio::spawn(async move {
                let mut rng = Rng(seed.wrapping_mul(w + 1) | 1);
                let mut errors = Vec::new();
                let mut ok = BTreeSet::new();
                let mut asked = BTreeSet::new();
                while Instant::now() < deadline {
                    let id = |rng: &mut Rng| match rng.next(20) {
                        0 => format!("missing-{}", rng.next(10)),
                        _ => format!("s{}", rng.next(400)),
                    };
                    let sent = match rng.next(10) {
                        0 => Sent::Invalid(
                            ["a%2Fb", "..%2Fadmin", "%00", "caf%C3%A9", "x%3Fy"]
                                [rng.next(5) as usize]
                                .to_owned(),
                        ),
                        1 | 2 => Sent::Batch((0..1 + rng.next(5)).map(|_| id(&mut rng)).collect()),
                        _ => Sent::User(id(&mut rng)),
                    };
                    let url = match &sent {
                        Sent::User(id) => format!("{base}/v1/users/{id}"),
                        Sent::Invalid(raw) => format!("{base}/v1/users/{raw}"),
                        Sent::Batch(ids) => format!("{base}/v1/users?ids={}", ids.join(",")),
                    };
                    if let Sent::User(id) = &sent {
                        asked.insert(id.clone());
                    }
                    if let Sent::Batch(ids) = &sent {
                        asked.extend(ids.iter().cloned());
                    }
                    requests.fetch_add(1, Ordering::Relaxed);
                    match fetch(&http, url).await {
                        Err(e) => errors.push(format!("no answer: {e}")),
                        Ok(r) => match check_soak(&sent, &r) {
                            Ok(ids) => ok.extend(ids),
                            Err(e) => errors.push(format!("{sent:?}: {e}")),
                        },
                    }
                }
                (errors, ok, asked)
            })
        })
        .collect();
    let mut errors = Vec::new();
    let mut ok = BTreeSet::new();
    let mut asked = BTreeSet::new();
    for w in workers {
        let (e, o, a) = tokio::time::timeout(Duration::from_secs(secs) + WAIT, w)
            .await
            .expect("the workers finish")
            .expect("no worker panicked");
        errors.extend(e);
        ok.extend(o);
        asked.extend(a);
    }
    let total = requests.load(Ordering::Relaxed);
    let stats = edge.sim.sim().stats();
    eprintln!(
        "{total} requests, {} ids answered 200, upstream answered {:?}",
        ok.len(),
        stats.by_status
    );
    errors.truncate(20);
    assert!(
        errors.is_empty(),
        "answers outside the contract:\n{}",
        errors.join("\n")
    );
    recorder.assert_only_valid_user_gets();
    let m = edge.metrics().await;
    let kinds: Vec<&str> = [
        "timeout",
        "transport",
        "malformed",
        "body_too_large",
        "upstream_status",
    ]
    .into_iter()
    .filter(|k| {
        common::metric(
            &m,
            &format!("paragon_edge_upstream_calls_total{{outcome=\"{k}\"}}"),
        ) > 0.0
    })
    .collect();
    assert!(
        kinds.len() >= 3,
        "the soak met too few kinds of fault: {kinds:?}"
    );

    // The cache holds exactly the users that were answered 200, and nothing else.
    let entries = edge.status().await["cache"]["entries"].as_u64();
    assert_eq!(
        entries,
        Some(ok.len() as u64),
        "cache entries vs ids answered 200"
    );

    // Faults off: every user answered 200 is still served, identical, from the cache;
    // every other one is fetched afresh (so no failure was cached).
    edge.sim
        .sim()
        .set_faults(Faults::default())
        .expect("valid faults");
    for id in asked.iter().filter(|i| !i.starts_with("missing")) {
        let until = Instant::now() + WAIT;
        let r = loop {
            match fetch(&http, edge.url(&format!("/v1/users/{id}"))).await {
                Ok(r) if r.status == 200 => break r,
                // Our own budget or the breaker recovering: ask again shortly.
                other => {
                    assert!(Instant::now() < until, "{id} is not served: {other:?}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        assert_eq!(r.body, paragon_sim::user_json(id).to_string().as_bytes());
        let want = if ok.contains(id) { "HIT" } else { "MISS" };
        assert_eq!(r.header("x-cache").as_deref(), Some(want), "{id}");
    }
    drop(http);
    // The transport keeps up to max_concurrency (16) idle connections to ParagoN, each
    // with both ends in this process; anything past that and a few more is a leak.
    wait_until("descriptors to return near the baseline", || {
        let ok = open_fds() <= fds_before + 2 * 16 + 8;
        async move { ok }
    })
    .await;
    assert_eq!(edge.get("/healthz").await.status, 200);
}
