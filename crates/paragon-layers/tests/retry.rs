//! The retry layer over toy upstreams, on paused tokio time: what is retried, the budget,
//! the deadline, hedging, cancellation, and the one outcome a breaker above sees.

#![allow(
    clippy::disallowed_methods,
    reason = "the tests read paused tokio time"
)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use paragon_layers::circuit_breaker::{BreakerConfig, CircuitBreakerLayer, CircuitOpen};
use paragon_layers::rate_limit::{RateLimitCause, RateLimited};
use paragon_layers::retry::{
    AttemptsSink, DeadlineExceeded, Idempotent, RetryClass, RetryConfig, RetryConfigBuilder,
    RetryHandle, RetryLayer, Retryable,
};
use paragon_layers::{CarriesDeadline, CarriesWaits, Clock, Deadline, WaitLedger};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

/// A toy request the retry layer can carry: a [`Get`] with a deadline, and whether it
/// may be sent twice.
#[derive(Clone, Debug)]
struct Req {
    get: Get,
    deadline: Deadline,
    idempotent: bool,
}

fn req(n: u32) -> Req {
    Req {
        get: Get::new(n),
        deadline: Deadline::default(),
        idempotent: true,
    }
}

impl CarriesDeadline for Req {
    fn deadline(&mut self) -> &mut Deadline {
        &mut self.deadline
    }
}

impl CarriesWaits for Req {
    fn wait_ledger(&mut self) -> &mut WaitLedger {
        self.get.wait_ledger()
    }
}

impl Idempotent for Req {
    fn is_idempotent(&self) -> bool {
        self.idempotent
    }
}

impl AttemptsSink for Doc {
    fn set_attempts(&mut self, attempts: u32) {
        self.body = format!("{} after {attempts}", self.body);
    }
}

impl Retryable for Fail {
    fn retry_class(&self) -> RetryClass {
        match self {
            Fail::Upstream => RetryClass::Transient,
            Fail::NotFound | Fail::BadRequest | Fail::Throttled(_) | Fail::Deadline => {
                RetryClass::Final
            }
            Fail::Limited(_) | Fail::Open(_) | Fail::Aborted => RetryClass::Refused,
        }
    }
}

impl From<DeadlineExceeded> for Fail {
    fn from(_: DeadlineExceeded) -> Self {
        Fail::Deadline
    }
}

fn config() -> RetryConfigBuilder {
    RetryConfig::builder()
        .max_attempts(2)
        .backoff(ms(50))
        .budget_ratio(0.1)
        .budget_min_per_sec(1)
        .deadline(secs(5))
}

/// The retry layer over `upstream`, with a handle.
fn retry<S>(
    config: RetryConfigBuilder,
    upstream: S,
) -> (
    impl Service<Req, Response = Doc, Error = Fail, Future: Send> + Clone,
    RetryHandle,
)
where
    S: Service<Get, Response = Doc, Error = Fail> + Clone + Send + 'static,
    S::Future: Send,
{
    let layer = RetryLayer::new(config.build().unwrap(), Clock::tokio());
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .map_request(|r: Req| r.get)
        .service(upstream);
    (svc, handle)
}

#[tokio::test(start_paused = true)]
async fn one_transient_failure_is_retried_and_the_answer_says_two_attempts() {
    let (upstream, mut rx) = Controlled::new();
    let (svc, handle) = retry(config(), upstream.clone());
    let call = tokio::spawn(svc.oneshot(req(1)));
    tokio::task::yield_now().await;
    let first = drain(&mut rx);
    assert_eq!(first.len(), 1);
    first.into_iter().for_each(|p| p.fail(Fail::Upstream));
    // The retry starts within the first backoff ceiling.
    tokio::time::sleep(ms(51)).await;
    let second = drain(&mut rx);
    assert_eq!(second.len(), 1, "one retry");
    second.into_iter().for_each(Pending::ok);
    let doc = call.await.unwrap().unwrap();
    assert_eq!(doc.body, "doc 1 after 2");
    assert_eq!(upstream.calls(), 2);
    let stats = handle.stats();
    assert_eq!((stats.firsts, stats.retries, stats.hedges), (1, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn new_settings_apply_to_the_next_call_and_the_budget_takes_the_new_reserve() {
    let (upstream, mut rx) = Controlled::new();
    let (svc, handle) = retry(config(), upstream.clone());
    assert_eq!(handle.budget_left(), 10);
    let new = config()
        .max_attempts(1)
        .budget_min_per_sec(3)
        .build()
        .unwrap();
    handle.reconfigure(new);
    assert_eq!(handle.config(), new);
    assert_eq!(
        handle.budget_left(),
        30,
        "the reserve of 3 a second, over 10 s"
    );
    let call = tokio::spawn(svc.oneshot(req(1)));
    tokio::task::yield_now().await;
    drain(&mut rx)
        .into_iter()
        .for_each(|p| p.fail(Fail::Upstream));
    assert!(call.await.unwrap().is_err());
    tokio::time::sleep(ms(500)).await;
    assert!(drain(&mut rx).is_empty(), "one attempt only: no retry");
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn answers_and_our_own_refusals_are_never_retried() {
    let cases = [
        Fail::NotFound,
        Fail::BadRequest,
        Fail::Throttled(secs(3)),
        Fail::Limited(RateLimited {
            retry_after: secs(1),
            cause: RateLimitCause::Budget,
        }),
        Fail::Open(CircuitOpen {
            retry_after: secs(1),
        }),
    ];
    for fail in cases {
        let upstream = Scripted::new();
        upstream.fail(fail.clone());
        let (svc, handle) = retry(config().max_attempts(5), upstream.clone());
        assert_eq!(svc.oneshot(req(1)).await.unwrap_err(), fail);
        assert_eq!(upstream.calls(), 1, "{fail:?} was sent again");
        assert_eq!(handle.stats().retries, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_that_is_not_idempotent_is_sent_once() {
    let upstream = Scripted::new();
    upstream.fail(Fail::Upstream);
    let (svc, _) = retry(config().max_attempts(3), upstream.clone());
    let mut r = req(1);
    r.idempotent = false;
    assert_eq!(svc.oneshot(r).await.unwrap_err(), Fail::Upstream);
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_bounds_the_retries_and_the_last_failure_is_answered() {
    let upstream = Scripted::new();
    upstream.fail(Fail::Upstream);
    let (svc, handle) = retry(config().max_attempts(4), upstream.clone());
    assert_eq!(svc.oneshot(req(1)).await.unwrap_err(), Fail::Upstream);
    assert_eq!(upstream.calls(), 4);
    assert_eq!(handle.stats().retries, 3);
}

#[tokio::test(start_paused = true)]
async fn backoff_is_full_jitter_under_a_doubling_ceiling() {
    let clock = Clock::tokio();
    let upstream = Scripted::timed(clock.clone());
    upstream.fail(Fail::Upstream);
    let (svc, _) = retry(
        config().max_attempts(4).budget_min_per_sec(10),
        upstream.clone(),
    );
    for _ in 0..20 {
        let before = upstream.times().len();
        let _ = svc.clone().oneshot(req(1)).await;
        let t = &upstream.times()[before..];
        assert_eq!(t.len(), 4);
        for (i, pair) in t.windows(2).enumerate() {
            let gap = pair[1].since(pair[0]);
            assert!(gap <= ms(50) * (1 << i), "retry {} waited {gap:?}", i + 1);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn under_total_failure_retries_stay_within_ratio_and_reserve() {
    let upstream = Scripted::new();
    upstream.fail(Fail::Upstream);
    let (svc, handle) = retry(config().max_attempts(3), upstream.clone());
    // 500 calls a second for 10 s, every one failing.
    let mut calls = Vec::new();
    for _ in 0..10 {
        for _ in 0..500 {
            calls.push(tokio::spawn(svc.clone().oneshot(req(1))));
        }
        tokio::time::sleep(secs(1)).await;
    }
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap_err(), Fail::Upstream);
    }
    let firsts = 5_000;
    let extra = upstream.calls() - firsts;
    assert!(extra <= 500 + 10, "{extra} retries for {firsts} calls");
    // The budget was the bound, not the attempts.
    assert!(extra >= 400, "{extra}");
    let stats = handle.stats();
    assert_eq!(stats.firsts, 5_000);
    assert_eq!(stats.retries as usize, extra);
    assert!(stats.budget_exhausted > 0);
}

#[tokio::test(start_paused = true)]
async fn retries_waiting_in_backoff_hold_their_budget() {
    let (upstream, mut rx) = Controlled::new();
    // No ratio, a reserve of 10, and a long backoff: retries wait.
    let (svc, handle) = retry(
        config()
            .budget_ratio(0.0)
            .backoff(secs(2))
            .deadline(secs(60)),
        upstream.clone(),
    );
    let calls: Vec<_> = (0..30)
        .map(|n| tokio::spawn(svc.clone().oneshot(req(n))))
        .collect();
    tokio::task::yield_now().await;
    let firsts = drain(&mut rx);
    assert_eq!(firsts.len(), 30);
    firsts.into_iter().for_each(|p| p.fail(Fail::Upstream));
    tokio::time::sleep(ms(1)).await;
    let stats = handle.stats();
    // Ten retries scheduled, none started yet; the other twenty answered at once.
    assert_eq!(stats.waiting, 10, "{stats:?}");
    assert_eq!(stats.budget_exhausted, 20);
    assert_eq!(handle.budget_left(), 0);
    assert_eq!(calls.iter().filter(|c| c.is_finished()).count(), 20);
    tokio::time::sleep(secs(2)).await;
    drain(&mut rx).into_iter().for_each(Pending::ok);
    let ok = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    assert_eq!(ok, 10);
    assert_eq!(upstream.calls(), 40);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_upstream_is_cut_at_the_deadline_and_nothing_is_left_running() {
    let (upstream, mut rx) = Controlled::new();
    let (svc, handle) = retry(config().deadline(secs(1)), upstream.clone());
    let started = tokio::time::Instant::now();
    let result = svc.oneshot(req(1)).await;
    assert_eq!(result.unwrap_err(), Fail::Deadline);
    assert_eq!(started.elapsed(), secs(1));
    let held = drain(&mut rx);
    assert_eq!(held.len(), 1);
    assert!(held[0].is_cancelled(), "the attempt was dropped");
    let stats = handle.stats();
    assert_eq!((stats.in_flight, stats.deadline_exceeded), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn no_attempt_starts_after_the_deadline() {
    let clock = Clock::tokio();
    let upstream = Scripted::timed(clock.clone());
    upstream.fail(Fail::Upstream);
    // Each attempt fails after 990 ms; a retry's backoff (up to 50 ms) mostly ends past
    // the 1 s deadline, and a retry that does start is cut at the deadline.
    upstream.delay(ms(990));
    let (svc, handle) = retry(
        config()
            .max_attempts(10)
            .budget_min_per_sec(100)
            .deadline(secs(1)),
        upstream.clone(),
    );
    let mut answered_as_is = 0;
    for _ in 0..50 {
        let before = upstream.times().len();
        let start = clock.now();
        let r = svc.clone().oneshot(req(1)).await;
        assert!(clock.now().since(start) <= secs(1));
        for t in &upstream.times()[before..] {
            assert!(
                t.since(start) < secs(1),
                "an attempt started at {:?}",
                t.since(start)
            );
        }
        match r {
            Err(Fail::Upstream) => answered_as_is += 1,
            Err(Fail::Deadline) => {}
            other => panic!("{other:?}"),
        }
    }
    // Both paths were taken: retries not scheduled, and retries cut at the deadline.
    let stats = handle.stats();
    assert!(
        answered_as_is > 0 && stats.deadline_exceeded > 0,
        "{stats:?}"
    );
    assert_eq!(stats.in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_the_caller_set_earlier_stands() {
    let (upstream, _rx) = Controlled::new();
    // The layer's clock and the test's are created at the same paused instant, so their
    // timestamps agree.
    let clock = Clock::tokio();
    let (svc, _) = retry(config().deadline(secs(5)), upstream);
    let mut r = req(1);
    *r.deadline() = Deadline::at(clock.now().after(ms(300)));
    let started = tokio::time::Instant::now();
    assert_eq!(svc.oneshot(r).await.unwrap_err(), Fail::Deadline);
    assert_eq!(started.elapsed(), ms(300));
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_is_hedged_the_first_answer_wins_and_the_other_is_cancelled() {
    let (upstream, mut rx) = Controlled::new();
    let (svc, handle) = retry(config().hedge_after(ms(100)), upstream.clone());
    let call = tokio::spawn(svc.oneshot(req(1)));
    tokio::time::sleep(ms(99)).await;
    let first = drain(&mut rx);
    assert_eq!(first.len(), 1, "no hedge before hedge_after");
    tokio::time::sleep(ms(2)).await;
    let hedge = drain(&mut rx);
    assert_eq!(hedge.len(), 1, "one hedge after hedge_after");
    hedge.into_iter().for_each(Pending::ok);
    assert_eq!(call.await.unwrap().unwrap().body, "doc 1 after 2");
    assert!(first[0].is_cancelled(), "the slow attempt was dropped");
    let stats = handle.stats();
    assert_eq!((stats.hedges, stats.in_flight), (1, 0));
    // max_attempts = 2: no third attempt, ever.
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_refused_below_leaves_the_first_attempt_to_answer() {
    let (upstream, mut rx) = Controlled::new();
    let (svc, _) = retry(config().hedge_after(ms(100)), upstream.clone());
    let call = tokio::spawn(svc.oneshot(req(1)));
    tokio::time::sleep(ms(101)).await;
    let mut held = drain(&mut rx);
    assert_eq!(held.len(), 2);
    let first = held.remove(0);
    held.remove(0).fail(Fail::Limited(RateLimited {
        retry_after: secs(1),
        cause: RateLimitCause::UpstreamPause,
    }));
    tokio::time::sleep(ms(10)).await;
    first.ok();
    assert_eq!(call.await.unwrap().unwrap().body, "doc 1 after 2");
}

#[tokio::test(start_paused = true)]
async fn no_hedge_while_the_gate_says_no() {
    let (upstream, mut rx) = Controlled::new();
    let open = Arc::new(AtomicBool::new(false));
    let gate = open.clone();
    let layer = RetryLayer::with_hedge_gate(
        config().hedge_after(ms(100)).build().unwrap(),
        Clock::tokio(),
        move || gate.load(Ordering::SeqCst),
    );
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .map_request(|r: Req| r.get)
        .service(upstream.clone());
    let call = tokio::spawn(svc.clone().oneshot(req(1)));
    tokio::time::sleep(ms(500)).await;
    assert_eq!(drain(&mut rx).len(), 1, "gate closed: no hedge");
    assert_eq!(layer.handle().stats().hedges, 0);
    open.store(true, Ordering::SeqCst);
    let second = tokio::spawn(svc.oneshot(req(2)));
    tokio::time::sleep(ms(101)).await;
    let held = drain(&mut rx);
    assert_eq!(held.len(), 2, "gate open: a hedge");
    held.into_iter().for_each(Pending::ok);
    assert!(second.await.unwrap().is_ok());
    call.abort();
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_sends_no_hedge() {
    let (upstream, mut rx) = Controlled::new();
    // A reserve of 2 extra attempts and no ratio.
    let (svc, handle) = retry(
        config()
            .budget_ratio(0.0)
            .budget_min_per_sec(0)
            .hedge_after(ms(10)),
        upstream.clone(),
    );
    let call = tokio::spawn(svc.oneshot(req(1)));
    tokio::time::sleep(ms(20)).await;
    assert_eq!(drain(&mut rx).len(), 1, "an empty budget sends no hedge");
    assert_eq!(handle.stats().budget_exhausted, 1);
    call.abort();
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_leaves_mid_backoff_or_mid_hedge_leaves_nothing_held() {
    let (upstream, mut rx) = Controlled::new();
    let (svc, handle) = retry(
        config()
            .backoff(secs(10))
            .deadline(secs(60))
            .hedge_after(ms(100)),
        upstream.clone(),
    );
    let full = handle.budget_left();

    // Mid-backoff: the scheduled retry goes back to the budget.
    let call = tokio::spawn(svc.clone().oneshot(req(1)));
    tokio::task::yield_now().await;
    drain(&mut rx)
        .into_iter()
        .for_each(|p| p.fail(Fail::Upstream));
    tokio::time::sleep(ms(1)).await;
    // (A draw of the jitter under 1 ms of the 10 s would have started it: 1 in 10,000.)
    assert_eq!(handle.stats().waiting, 1);
    assert_eq!(
        handle.budget_left(),
        full - 1,
        "a waiting retry holds its budget"
    );
    call.abort();
    let _ = call.await;
    let s = handle.stats();
    assert_eq!((s.waiting, s.in_flight), (0, 0), "{s:?}");
    assert_eq!(
        handle.budget_left(),
        full,
        "the retry that never started was handed back"
    );

    // Mid-hedge: both attempts are dropped.
    let call = tokio::spawn(svc.oneshot(req(2)));
    tokio::time::sleep(ms(101)).await;
    let held = drain(&mut rx);
    assert_eq!(held.len(), 2);
    assert_eq!(handle.stats().in_flight, 2);
    call.abort();
    let _ = call.await;
    assert!(held.iter().all(Pending::is_cancelled));
    assert_eq!(handle.stats().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_above_sees_one_outcome_per_call() {
    let upstream = Scripted::new();
    upstream.fail(Fail::Upstream);
    let clock = Clock::tokio();
    let breaker = CircuitBreakerLayer::new(
        BreakerConfig::builder()
            .failure_threshold(3)
            .build()
            .unwrap(),
        clock.clone(),
    );
    let retry = RetryLayer::new(
        config()
            .max_attempts(3)
            .budget_min_per_sec(100)
            .build()
            .unwrap(),
        clock,
    );
    let svc = breaker.layer(
        retry.layer(
            ServiceBuilder::new()
                .map_request(|r: Req| r.get)
                .service(upstream.clone()),
        ),
    );
    for n in 0..2 {
        assert_eq!(
            svc.clone().oneshot(req(n)).await.unwrap_err(),
            Fail::Upstream
        );
    }
    // Six attempts, two outcomes: the breaker counts two failures and stays closed.
    assert_eq!(upstream.calls(), 6);
    let stats = breaker.handle().stats();
    assert_eq!((stats.failures, stats.consecutive_failures), (2, 2));
    assert_eq!(stats.state.as_str(), "closed");
    let _ = svc.clone().oneshot(req(3)).await;
    assert_eq!(breaker.handle().stats().state.as_str(), "open");
    // Open: refused above the retry, nothing sent.
    let before = upstream.calls();
    assert!(matches!(svc.oneshot(req(4)).await, Err(Fail::Open(_))));
    assert_eq!(upstream.calls(), before);
}

#[tokio::test(start_paused = true)]
async fn a_probe_dropped_mid_retry_frees_its_breaker_slot() {
    let (upstream, mut rx) = Controlled::new();
    let clock = Clock::tokio();
    let breaker = CircuitBreakerLayer::new(
        BreakerConfig::builder()
            .failure_threshold(1)
            .open_for(secs(1))
            .half_open_max_calls(1)
            .build()
            .unwrap(),
        clock.clone(),
    );
    let retry = RetryLayer::new(
        config()
            .backoff(secs(10))
            .deadline(secs(60))
            .build()
            .unwrap(),
        clock,
    );
    let svc = breaker.layer(
        retry.layer(
            ServiceBuilder::new()
                .map_request(|r: Req| r.get)
                .service(upstream.clone()),
        ),
    );
    // A call whose two attempts fail opens the breaker.
    let a = tokio::spawn(svc.clone().oneshot(req(1)));
    tokio::task::yield_now().await;
    drain(&mut rx)
        .into_iter()
        .for_each(|p| p.fail(Fail::Upstream));
    tokio::time::sleep(secs(10)).await;
    drain(&mut rx)
        .into_iter()
        .for_each(|p| p.fail(Fail::Upstream));
    assert_eq!(a.await.unwrap().unwrap_err(), Fail::Upstream);
    assert_eq!(breaker.handle().stats().state.as_str(), "open");

    // Half-open: the probe's first attempt fails, its retry waits, its caller leaves.
    tokio::time::sleep(secs(1)).await;
    let b = tokio::spawn(svc.clone().oneshot(req(2)));
    tokio::task::yield_now().await;
    drain(&mut rx)
        .into_iter()
        .for_each(|p| p.fail(Fail::Upstream));
    tokio::task::yield_now().await;
    assert_eq!(
        retry.handle().stats().waiting,
        1,
        "the probe is in its backoff"
    );
    b.abort();
    let _ = b.await;

    // Its slot is free: the next call is the probe, and reaches the upstream.
    let before = upstream.calls();
    let c = tokio::spawn(svc.oneshot(req(3)));
    tokio::task::yield_now().await;
    assert_eq!(
        upstream.calls(),
        before + 1,
        "the probe slot was handed back"
    );
    drain(&mut rx).into_iter().for_each(Pending::ok);
    assert!(c.await.unwrap().is_ok());
    assert_eq!(breaker.handle().stats().state.as_str(), "closed");
    let s = retry.handle().stats();
    assert_eq!((s.waiting, s.in_flight), (0, 0));
}
