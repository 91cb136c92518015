//! The layers' hit and miss paths, against the limit and against published peers.
//!
//! Every figure is one call through `ready().await` + `call(req).await`, run in a loop
//! inside one `block_on` (as in a server task), with the same settings everywhere:
//! 1,000 ids pre-filled, `max_entries` 100,000, TTL 300 s, a budget that never binds
//! (10⁹ calls per second), a breaker that opens after 5 consecutive failures.
//!
//! Groups (bench/report.py turns them into ratios):
//! - `hit/*`  — a fresh entry: `limit` (DashMap get + clone), `limit_as_service` (the same
//!   lookup behind the `Service` protocol every stack pays: request by value, `ready`,
//!   `call`, `await`), `paragon` (cache → breaker
//!   → limiter → no-op), `paragon_cache` (cache alone), `tower_resilience`,
//!   `moka_governor_recloser`;
//! - `miss/*` — a new key each call: `limit` (the no-op service alone), the same stacks;
//! - `layer/*` — breaker alone and limiter alone, ours and the peers';
//! - `threads/*` — the hit path from 1 and 2 threads on one shared cache, the DashMap
//!   limit, and `unshared` (each thread its own map: the machine's ceiling).
//!
//! Run: `taskset -c 1 cargo bench -p paragon-bench --bench layers -- --warm-up-time 1
//! --measurement-time 3 '^(hit|miss|layer)/'`, then the `threads/` group unpinned with
//! `--measurement-time 8` (BENCHMARKS.md, "Reproducing").

#![allow(clippy::disallowed_methods, reason = "benchmarks measure wall time")]
#![allow(missing_docs)] // criterion_group! and criterion_main! generate undocumented items

use std::collections::HashMap;
use std::future::{ready, Ready};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use dashmap::DashMap;
use paragon_bench::{request, response};
use paragon_client::{CacheStatus, Error, ParagonRequest, ParagonResponse};
use paragon_layers::cache::{CacheConfig, CacheLayer};
use paragon_layers::circuit_breaker::{BreakerConfig, CircuitBreakerLayer};
use paragon_layers::rate_limit::{RateLimitConfig, RateLimitLayer};
use paragon_layers::Clock;
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

const IDS: usize = 1000;
const MAX_ENTRIES: usize = 100_000;
const TTL: Duration = Duration::from_secs(300);
/// Calls per second: high enough that the limiter always admits during a bench.
const BUDGET: u32 = 1_000_000_000;
const FAILURES_TO_OPEN: u32 = 5;
const OPEN_FOR: Duration = Duration::from_secs(60);

/// The inner service: answers a pre-built user at once — the user of the requested id
/// when it is one of the 1,000 fixtures (so hits on different ids share nothing), else
/// one shared user.
#[derive(Clone)]
struct Noop {
    per_id: Arc<HashMap<ParagonRequest, ParagonResponse>>,
    other: ParagonResponse,
}

impl Service<ParagonRequest> for Noop {
    type Response = ParagonResponse;
    type Error = Error;
    type Future = Ready<Result<ParagonResponse, Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ParagonRequest) -> Self::Future {
        if self.per_id.is_empty() {
            return ready(Ok(self.other.clone()));
        }
        ready(Ok(self.per_id.get(&req).unwrap_or(&self.other).clone()))
    }
}

/// The limit behind the same `Service` protocol as the stacks: a DashMap lookup.
#[derive(Clone)]
struct MapService(Arc<DashMap<ParagonRequest, ParagonResponse>>);

impl Service<ParagonRequest> for MapService {
    type Response = ParagonResponse;
    type Error = Error;
    type Future = Ready<Result<ParagonResponse, Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ParagonRequest) -> Self::Future {
        ready(
            self.0
                .get(&req)
                .map(|e| e.value().clone())
                .ok_or_else(|| Error::Internal("absent".into())),
        )
    }
}

/// Answers one shared user (miss-path benches).
fn noop() -> Noop {
    Noop {
        per_id: Arc::default(),
        other: response("inner"),
    }
}

/// Answers each fixture id with its own user (fills of the hit-path benches).
fn users() -> Noop {
    Noop {
        per_id: Arc::new(
            (0..IDS)
                .map(|i| (request(&format!("u{i}")), response(&format!("u{i}"))))
                .collect(),
        ),
        other: response("inner"),
    }
}

fn ids() -> Vec<ParagonRequest> {
    (0..IDS).map(|i| request(&format!("u{i}"))).collect()
}

/// The limit's map: every fixture id with its own user.
fn user_map() -> DashMap<ParagonRequest, ParagonResponse> {
    (0..IDS)
        .map(|i| (request(&format!("u{i}")), response(&format!("u{i}"))))
        .collect()
}

/// A key never asked before (shared counter, so criterion's repeated runs stay cold).
fn cold_request() -> ParagonRequest {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    request(&format!("m{}", NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// One call through the `Service` protocol: `ready().await`, then `call(req).await`.
///
/// A macro, so each loop has the calls written out in place. As an `async fn` helper its
/// poll was a function of its own per stack type, and the compiler inlined it only for
/// types used by one bench: a stack used by several (ours: hit, miss, threads) paid an
/// out-of-line poll that moved each answer through memory, about 40 ns per call that no
/// server loop would pay (BENCHMARKS.md, "The harness").
macro_rules! call {
    ($svc:expr, $req:expr) => {
        match $svc.ready().await {
            Ok(ready) => ready.call($req).await,
            Err(e) => Err(e),
        }
    };
}

// ---- our stack ------------------------------------------------------------------------

fn our_cache() -> CacheLayer<ParagonRequest, ParagonResponse, Error> {
    CacheLayer::new(
        CacheConfig::builder(TTL)
            .max_entries(MAX_ENTRIES)
            .build()
            .unwrap(),
        Clock::coarse(),
    )
}

fn our_breaker() -> CircuitBreakerLayer {
    let config = BreakerConfig::builder()
        .failure_threshold(FAILURES_TO_OPEN)
        .open_for(OPEN_FOR)
        .build()
        .expect("valid breaker settings");
    CircuitBreakerLayer::new(config, Clock::coarse())
}

fn our_limiter() -> RateLimitLayer<paragon_layers::rate_limit::MemoryStore> {
    let config = RateLimitConfig::builder(BUDGET, Duration::from_secs(1))
        .build()
        .expect("valid budget");
    RateLimitLayer::memory(config, Clock::coarse())
}

fn paragon_stack(
    inner: Noop,
) -> impl Service<ParagonRequest, Response = ParagonResponse, Error = Error> + Clone {
    ServiceBuilder::new()
        .layer(our_cache())
        .layer(our_breaker())
        .layer(our_limiter())
        .service(inner)
}

// ---- peers ----------------------------------------------------------------------------

fn tr_cache() -> tower_resilience::cache::CacheLayer<ParagonRequest, ParagonRequest> {
    tower_resilience::cache::CacheLayer::builder()
        .max_size(MAX_ENTRIES)
        .ttl(TTL)
        .key_extractor(|r: &ParagonRequest| r.clone())
        .build()
        .expect("valid cache config")
}

fn tr_breaker() -> tower_resilience::circuitbreaker::CircuitBreakerLayer {
    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .consecutive_failures(FAILURES_TO_OPEN as usize)
        .wait_duration_in_open(OPEN_FOR)
        .permitted_calls_in_half_open(1)
        .build()
        .expect("valid breaker config")
}

fn tr_limiter() -> tower_resilience::ratelimiter::RateLimiterLayer {
    tower_resilience::ratelimiter::RateLimiterLayer::builder()
        .limit_for_period(BUDGET as usize)
        .refresh_period(Duration::from_secs(1))
        .timeout_duration(Duration::ZERO)
        .build()
        .expect("valid limiter config")
}

fn tower_resilience_stack(
    inner: Noop,
) -> impl Service<ParagonRequest, Response = ParagonResponse, Error = impl Sized> + Clone {
    ServiceBuilder::new()
        .layer(tr_cache())
        .layer(tr_breaker())
        .layer(tr_limiter())
        .service(inner)
}

/// The stack a user would write by hand from moka (single-flight `try_get_with`),
/// governor (GCRA) and recloser (breaker).
struct MokaInner {
    cache: moka::future::Cache<ParagonRequest, ParagonResponse>,
    limiter: governor::DefaultDirectRateLimiter,
    breaker: recloser::AsyncRecloser,
    inner: Noop,
}

#[derive(Clone)]
struct MokaStack(Arc<MokaInner>);

#[derive(Debug)]
enum PeerError {
    Limited,
    Open,
    Upstream(Error),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Limited => f.write_str("rate limited"),
            PeerError::Open => f.write_str("circuit open"),
            PeerError::Upstream(e) => write!(f, "upstream: {e}"),
        }
    }
}
impl std::error::Error for PeerError {}

fn moka_stack(inner: Noop) -> MokaStack {
    let quota = governor::Quota::per_second(NonZeroU32::new(BUDGET).expect("non-zero"));
    MokaStack(Arc::new(MokaInner {
        cache: moka::future::Cache::builder()
            .max_capacity(MAX_ENTRIES as u64)
            .time_to_live(TTL)
            .build(),
        limiter: governor::RateLimiter::direct(quota),
        breaker: recloser::Recloser::custom()
            .error_rate(0.5)
            .closed_len(FAILURES_TO_OPEN as usize * 2)
            .half_open_len(1)
            .open_wait(OPEN_FOR)
            .build()
            .into(),
        inner,
    }))
}

impl Service<ParagonRequest> for MokaStack {
    type Response = ParagonResponse;
    type Error = Arc<PeerError>;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<ParagonResponse, Arc<PeerError>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ParagonRequest) -> Self::Future {
        let s = self.0.clone();
        Box::pin(async move {
            if let Some(mut hit) = s.cache.get(&req).await {
                hit.cache = CacheStatus::Hit;
                return Ok(hit);
            }
            let fill = async {
                s.limiter.check().map_err(|_| PeerError::Limited)?;
                let upstream = s.inner.clone().oneshot(req.clone());
                s.breaker.call(upstream).await.map_err(|e| match e {
                    recloser::Error::Rejected => PeerError::Open,
                    recloser::Error::Inner(e) => PeerError::Upstream(e),
                })
            };
            s.cache.try_get_with(req.clone(), fill).await
        })
    }
}

// ---- runners --------------------------------------------------------------------------

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// `iters` calls over the pre-filled ids, timed inside one task.
fn time_hits<S>(rt: &Runtime, svc: &S, reqs: &[ParagonRequest], iters: u64) -> Duration
where
    S: Service<ParagonRequest> + Clone,
{
    let mut svc = svc.clone();
    rt.block_on(async move {
        let mut i = 0;
        let start = Instant::now();
        for _ in 0..iters {
            let r = call!(svc, reqs[i].clone());
            black_box(r.is_ok());
            i += 1;
            if i == reqs.len() {
                i = 0;
            }
        }
        start.elapsed()
    })
}

/// `iters` synchronous lookups cycling over `reqs`, timed.
fn time_lookups(
    reqs: &[ParagonRequest],
    iters: u64,
    mut lookup: impl FnMut(&ParagonRequest),
) -> Duration {
    let mut i = 0;
    let start = Instant::now();
    for _ in 0..iters {
        lookup(&reqs[i]);
        i += 1;
        if i == reqs.len() {
            i = 0;
        }
    }
    start.elapsed()
}

/// `iters` calls, each for a key never seen before.
fn time_misses<S>(rt: &Runtime, svc: &S, iters: u64) -> Duration
where
    S: Service<ParagonRequest> + Clone,
{
    let mut svc = svc.clone();
    rt.block_on(async move {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let req = cold_request();
            let start = Instant::now();
            let r = call!(svc, req);
            total += start.elapsed();
            black_box(r.is_ok());
        }
        total
    })
}

fn fill<S: Service<ParagonRequest> + Clone>(rt: &Runtime, svc: &S, reqs: &[ParagonRequest]) {
    let mut svc = svc.clone();
    rt.block_on(async {
        for r in reqs {
            assert!(call!(svc, r.clone()).is_ok(), "fill failed");
        }
    });
}

// ---- benches --------------------------------------------------------------------------

fn hit(c: &mut Criterion) {
    let rt = current_thread();
    let reqs = ids();
    let mut g = c.benchmark_group("hit");
    g.throughput(Throughput::Elements(1));

    let map = user_map();
    g.bench_function("limit", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                time_lookups(&reqs, iters, |r| {
                    black_box(map.get(r).map(|e| e.value().clone()).is_some());
                })
            })
        })
    });

    let as_service = MapService(Arc::new(map.clone()));
    g.bench_function("limit_as_service", |b| {
        b.iter_custom(|n| time_hits(&rt, &as_service, &reqs, n))
    });

    let ours = paragon_stack(users());
    fill(&rt, &ours, &reqs);
    g.bench_function("paragon", |b| {
        b.iter_custom(|n| time_hits(&rt, &ours, &reqs, n))
    });

    let _guard = rt.enter();
    let cache_alone = our_cache().layer(users());
    fill(&rt, &cache_alone, &reqs);
    g.bench_function("paragon_cache", |b| {
        b.iter_custom(|n| time_hits(&rt, &cache_alone, &reqs, n))
    });

    let tr = tower_resilience_stack(users());
    fill(&rt, &tr, &reqs);
    g.bench_function("tower_resilience", |b| {
        b.iter_custom(|n| time_hits(&rt, &tr, &reqs, n))
    });

    let tr_cache_alone = tr_cache().layer(users());
    fill(&rt, &tr_cache_alone, &reqs);
    g.bench_function("tower_resilience_cache", |b| {
        b.iter_custom(|n| time_hits(&rt, &tr_cache_alone, &reqs, n))
    });

    let moka = moka_stack(users());
    fill(&rt, &moka, &reqs);
    g.bench_function("moka_governor_recloser", |b| {
        b.iter_custom(|n| time_hits(&rt, &moka, &reqs, n))
    });
    g.finish();
}

fn miss(c: &mut Criterion) {
    let rt = current_thread();
    let _guard = rt.enter();
    let mut g = c.benchmark_group("miss");
    g.throughput(Throughput::Elements(1));
    let inner = noop();
    g.bench_function("limit", |b| b.iter_custom(|n| time_misses(&rt, &inner, n)));
    let ours = paragon_stack(noop());
    g.bench_function("paragon", |b| b.iter_custom(|n| time_misses(&rt, &ours, n)));
    let cache_alone = our_cache().layer(noop());
    g.bench_function("paragon_cache", |b| {
        b.iter_custom(|n| time_misses(&rt, &cache_alone, n))
    });
    let tr = tower_resilience_stack(noop());
    g.bench_function("tower_resilience", |b| {
        b.iter_custom(|n| time_misses(&rt, &tr, n))
    });
    let moka = moka_stack(noop());
    g.bench_function("moka_governor_recloser", |b| {
        b.iter_custom(|n| time_misses(&rt, &moka, n))
    });
    g.finish();
}

fn layer(c: &mut Criterion) {
    let rt = current_thread();
    let _guard = rt.enter();
    let reqs = ids();
    let mut g = c.benchmark_group("layer");
    g.throughput(Throughput::Elements(1));
    let breaker = our_breaker().layer(noop());
    g.bench_function("paragon_breaker", |b| {
        b.iter_custom(|n| time_hits(&rt, &breaker, &reqs, n))
    });
    let limiter = our_limiter().layer(noop());
    g.bench_function("paragon_limiter", |b| {
        b.iter_custom(|n| time_hits(&rt, &limiter, &reqs, n))
    });
    let trb = tr_breaker().layer(noop());
    g.bench_function("tower_resilience_breaker", |b| {
        b.iter_custom(|n| time_hits(&rt, &trb, &reqs, n))
    });
    let trl = tr_limiter().layer(noop());
    g.bench_function("tower_resilience_limiter", |b| {
        b.iter_custom(|n| time_hits(&rt, &trl, &reqs, n))
    });
    let quota = governor::Quota::per_second(NonZeroU32::new(BUDGET).expect("non-zero"));
    let gov = governor::RateLimiter::direct(quota);
    g.bench_function("governor_check", |b| {
        b.iter(|| black_box(gov.check().is_ok()))
    });
    let rec: recloser::AsyncRecloser = recloser::Recloser::custom()
        .closed_len(FAILURES_TO_OPEN as usize * 2)
        .open_wait(OPEN_FOR)
        .build()
        .into();
    let inner = noop();
    g.bench_function("recloser_call", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let r = rec.call(inner.clone().oneshot(reqs[0].clone())).await;
                    black_box(r.is_ok());
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

/// The same hit path from 1 and 2 threads on one shared stack: each thread serves its
/// own half of the ids (different users, as different requests would), from its own
/// current-thread runtime. Time is the wall time of the slowest thread.
fn threads(c: &mut Criterion) {
    let reqs = ids();
    let mut g = c.benchmark_group("threads");
    let map = Arc::new(user_map());
    let rt = current_thread();
    let ours = {
        let _guard = rt.enter();
        paragon_stack(users())
    };
    fill(&rt, &ours, &reqs);
    at_one_then_two_threads(&mut g, "paragon", |iters| {
        let svc = ours.clone();
        move |part: Vec<ParagonRequest>, b: &Barrier| {
            let rt = current_thread();
            b.wait();
            time_hits(&rt, &svc, &part, iters)
        }
    });
    // The machine's own ceiling: each thread looks up its ids in a map of its own, so the
    // threads share nothing at all. What this loses from 1 to 2 threads is lost to the
    // hardware (shared caches, a shared physical core), not to any lock.
    at_one_then_two_threads(&mut g, "unshared", |iters| {
        move |part: Vec<ParagonRequest>, b: &Barrier| {
            let own: HashMap<ParagonRequest, ParagonResponse> = part
                .iter()
                .map(|r| (r.clone(), response("unshared")))
                .collect();
            b.wait();
            time_lookups(&part, iters, |r| {
                black_box(own.get(r).cloned().is_some());
            })
        }
    });
    at_one_then_two_threads(&mut g, "limit", |iters| {
        let map = map.clone();
        move |part: Vec<ParagonRequest>, b: &Barrier| {
            b.wait();
            time_lookups(&part, iters, |r| {
                black_box(map.get(r).map(|e| e.value().clone()).is_some());
            })
        }
    });
    g.finish();
}

/// Benches `{name}_1` then `{name}_2`, back to back, so that the two times of one ratio
/// are measured as close together as possible on a machine whose speed drifts. Thread `t`
/// of `n` serves ids `t, t + 2, …`: the evens alone, or the evens and the odds.
fn at_one_then_two_threads<F, W>(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, make: F)
where
    F: Fn(u64) -> W,
    W: FnOnce(Vec<ParagonRequest>, &Barrier) -> Duration + Send + 'static,
{
    for n in [1usize, 2] {
        let parts: Vec<Vec<String>> = (0..n)
            .map(|t| (t..IDS).step_by(2).map(|i| format!("u{i}")).collect())
            .collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{name}_{n}"), |b| {
            b.iter_custom(|iters| run_threads(&parts, || make(iters)))
        });
    }
}

/// Runs one piece of work per part of the ids, each on its own thread, started together
/// at the barrier; the slowest time.
///
/// Each thread builds its requests itself, from the ids, before the barrier, as a server
/// parses each request on the thread that serves it. So each thread's ids sit in that
/// thread's own allocator arena. (Requests shared with, or built by, the main thread
/// can land with one thread's ids and the other's in one cache line, as the allocator's
/// free lists happen to fall from one sample to the next; every call clones and drops
/// its id, so the two threads would then bounce that line between the cores, which no
/// server does, and the ratio would follow the heap's layout, not the cache's.)
fn run_threads<F, W>(parts: &[Vec<String>], make: F) -> Duration
where
    F: Fn() -> W,
    W: FnOnce(Vec<ParagonRequest>, &Barrier) -> Duration + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(parts.len()));
    let handles: Vec<_> = parts
        .iter()
        .map(|ids| {
            let ids = ids.clone();
            let work = make();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let own = ids.iter().map(|id| request(id)).collect();
                work(own, &barrier)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("bench thread"))
        .max()
        .unwrap_or_default()
}

criterion_group!(benches, hit, miss, layer, threads);
criterion_main!(benches);
