//! The circuit-breaker layer against counting upstreams, on a manual clock: every test
//! counts the calls that reached the upstream.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::future::join_all;
use futures_util::FutureExt;
use paragon_layers::circuit_breaker::{
    BreakerConfig, BreakerConfigBuilder, BreakerHandle, BreakerState, CircuitBreaker,
    CircuitBreakerLayer, CircuitOpen, Transition,
};
use paragon_layers::rate_limit::{RateLimitCause, RateLimitConfig, RateLimitLayer, RateLimited};
use paragon_layers::Clock;
use parking_lot::Mutex;
use proptest::prelude::*;
use tokio::sync::oneshot;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

use BreakerState::{Closed, ForcedOpen, HalfOpen, Open};

fn config(threshold: u32) -> BreakerConfigBuilder {
    BreakerConfig::builder()
        .failure_threshold(threshold)
        .open_for(secs(60))
}

fn breaker<S>(
    config: BreakerConfigBuilder,
    clock: Clock,
    inner: S,
) -> (CircuitBreaker<S>, BreakerHandle) {
    let layer = CircuitBreakerLayer::new(config.build().unwrap(), clock);
    (layer.layer(inner), layer.handle())
}

async fn get<S>(svc: &mut CircuitBreaker<S>, n: u32) -> Answer
where
    CircuitBreaker<S>: Service<Get, Response = Doc, Error = Fail>,
{
    svc.ready().await.unwrap().call(Get::new(n)).await
}

fn open(retry_after: Duration) -> Answer {
    Err(Fail::Open(CircuitOpen { retry_after }))
}

fn limited() -> Fail {
    Fail::Limited(RateLimited {
        retry_after: secs(1),
        cause: RateLimitCause::Budget,
    })
}

#[tokio::test]
async fn the_breaker_is_ready_only_when_the_service_it_wraps_is() {
    let up = Gated::closed(Scripted::new());
    let (mut svc, _) = breaker(config(3), Clock::tokio(), up.clone());
    assert!(poll_ready_now(&mut svc).is_pending());
    let waiting = tokio::spawn(async move { get(&mut svc, 1).await });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "ready before the service it wraps");
    up.open();
    assert!(waiting.await.unwrap().is_ok());
}

#[tokio::test]
async fn it_opens_after_exactly_failure_threshold_consecutive_failures() {
    let clock = Clock::manual();
    let up = Scripted::new();
    let (mut svc, handle) = breaker(config(3), clock.clone(), up.clone());
    up.fail(Fail::Upstream);
    get(&mut svc, 1).await.unwrap_err();
    get(&mut svc, 1).await.unwrap_err();
    assert_eq!(handle.state(), Closed);
    // A success breaks the run.
    up.succeed();
    get(&mut svc, 1).await.unwrap();
    up.fail(Fail::Upstream);
    get(&mut svc, 1).await.unwrap_err();
    get(&mut svc, 1).await.unwrap_err();
    assert_eq!(handle.state(), Closed, "2 consecutive failures of 3");
    assert_eq!(handle.stats().consecutive_failures, 2);
    assert_eq!(get(&mut svc, 1).await, Err(Fail::Upstream));
    assert_eq!(handle.state(), Open);
    assert_eq!(up.calls(), 6);

    // Open: fail fast, no upstream call, and say when to come back.
    assert_eq!(get(&mut svc, 1).await, open(secs(60)));
    clock.advance(secs(10));
    assert_eq!(get(&mut svc, 1).await, open(secs(50)));
    clock.advance(secs(50) - Duration::from_nanos(1));
    assert_eq!(get(&mut svc, 1).await, open(Duration::from_nanos(1)));
    assert_eq!(up.calls(), 6);
    let stats = handle.stats();
    assert_eq!((stats.rejected, stats.failures, stats.successes), (3, 5, 1));
}

#[tokio::test]
async fn after_open_for_a_probe_goes_through_and_its_success_closes_the_breaker() {
    let clock = Clock::manual();
    let (up, mut rx) = Controlled::new();
    let (mut svc, handle) = breaker(config(1), clock.clone(), up.clone());
    let first = svc.call(Get::new(1));
    rx.try_recv().unwrap().fail(Fail::Upstream);
    first.await.unwrap_err();
    assert_eq!(handle.state(), Open);

    clock.advance(secs(60));
    let probe = svc.call(Get::new(2));
    assert_eq!(handle.state(), HalfOpen);
    assert_eq!(up.calls(), 2, "the probe reached the upstream");
    assert_eq!(
        svc.call(Get::new(3)).await,
        open(secs(1)),
        "one probe at a time"
    );
    rx.try_recv().unwrap().ok();
    assert_eq!(probe.await.unwrap().body, "doc 2");
    assert_eq!(handle.state(), Closed);
    let after = svc.call(Get::new(4));
    rx.try_recv().unwrap().ok();
    after.await.unwrap();
    assert_eq!(up.calls(), 3);
}

#[tokio::test]
async fn a_probe_failure_reopens_the_breaker_for_a_full_open_for() {
    let clock = Clock::manual();
    let up = Scripted::new();
    let (mut svc, handle) = breaker(config(1), clock.clone(), up.clone());
    up.fail(Fail::Upstream);
    get(&mut svc, 1).await.unwrap_err();
    clock.advance(secs(60));
    assert_eq!(get(&mut svc, 1).await, Err(Fail::Upstream));
    assert_eq!(handle.state(), Open);
    assert_eq!(get(&mut svc, 1).await, open(secs(60)));
    assert_eq!(up.calls(), 2);
    // A timed-out, 5xx probe again... and then a healthy one.
    clock.advance(secs(60));
    up.succeed();
    get(&mut svc, 1).await.unwrap();
    assert_eq!(handle.state(), Closed);
}

#[tokio::test]
async fn half_open_admits_at_most_half_open_max_calls_probes_at_once() {
    let clock = Clock::manual();
    let (up, mut rx) = Controlled::new();
    let cfg = config(1).half_open_max_calls(2);
    let (mut svc, handle) = breaker(cfg, clock.clone(), up.clone());
    let first = svc.call(Get::new(0));
    rx.try_recv().unwrap().fail(Fail::Upstream);
    first.await.unwrap_err();
    clock.advance(secs(60));

    let a = svc.call(Get::new(1));
    let b = svc.call(Get::new(2));
    assert_eq!(
        svc.call(Get::new(3)).await,
        open(secs(1)),
        "a third probe while two are out"
    );
    assert_eq!(up.calls(), 3);
    assert_eq!(handle.state(), HalfOpen);
    let (pa, pb) = (rx.try_recv().unwrap(), rx.try_recv().unwrap());
    assert!(rx.try_recv().is_err());

    // One probe succeeds: closed. The other's late failure belongs to a finished
    // half-open period and changes nothing.
    pa.ok();
    a.await.unwrap();
    assert_eq!(handle.state(), Closed);
    pb.fail(Fail::Upstream);
    b.await.unwrap_err();
    assert_eq!(handle.state(), Closed);
}

#[tokio::test]
async fn after_a_probe_fails_a_late_probe_success_does_not_close_the_breaker() {
    let clock = Clock::manual();
    let (up, mut rx) = Controlled::new();
    let cfg = config(1).half_open_max_calls(2);
    let (mut svc, handle) = breaker(cfg, clock.clone(), up);
    let first = svc.call(Get::new(0));
    rx.try_recv().unwrap().fail(Fail::Upstream);
    first.await.unwrap_err();
    clock.advance(secs(60));
    let a = svc.call(Get::new(1));
    let b = svc.call(Get::new(2));
    let (pa, pb) = (rx.try_recv().unwrap(), rx.try_recv().unwrap());
    pa.fail(Fail::Upstream);
    a.await.unwrap_err();
    assert_eq!(handle.state(), Open);
    pb.ok();
    b.await.unwrap();
    assert_eq!(handle.state(), Open);
    assert_eq!(svc.call(Get::new(3)).await, open(secs(60)));
}

#[tokio::test]
async fn a_probe_given_up_by_its_caller_frees_its_slot() {
    let clock = Clock::manual();
    let (up, mut rx) = Controlled::new();
    let (mut svc, handle) = breaker(config(1), clock.clone(), up.clone());
    let first = svc.call(Get::new(0));
    rx.try_recv().unwrap().fail(Fail::Upstream);
    first.await.unwrap_err();
    clock.advance(secs(60));

    let probe = svc.call(Get::new(1));
    assert_eq!(svc.call(Get::new(2)).await, open(secs(1)));
    drop(probe);
    let probe = svc.call(Get::new(3));
    assert_eq!(
        up.calls(),
        3,
        "the slot of the dropped probe was given back"
    );
    // A probe that says nothing about the upstream (a 429) frees its slot too.
    let _ = rx.try_recv().unwrap(); // the dropped probe's call
    rx.try_recv().unwrap().fail(Fail::Throttled(secs(1)));
    probe.await.unwrap_err();
    assert_eq!(handle.state(), HalfOpen);
    let probe = svc.call(Get::new(4));
    rx.try_recv().unwrap().ok();
    probe.await.unwrap();
    assert_eq!(handle.state(), Closed);
    assert_eq!(up.calls(), 4);
}

#[tokio::test]
async fn it_opens_on_failure_rate_only_with_minimum_calls_in_the_window() {
    let cfg = config(0)
        .failure_threshold(0)
        .failure_rate(0.5)
        .minimum_calls(10)
        .window(secs(10));

    // Six successes, then failures: 4/10, 5/11 stay closed; 6/12 opens.
    let clock = Clock::manual();
    let up = Scripted::new();
    let (mut svc, handle) = breaker(cfg, clock.clone(), up.clone());
    for _ in 0..6 {
        get(&mut svc, 1).await.unwrap();
    }
    up.fail(Fail::Upstream);
    for _ in 0..5 {
        get(&mut svc, 1).await.unwrap_err();
        assert_eq!(handle.state(), Closed);
    }
    get(&mut svc, 1).await.unwrap_err();
    assert_eq!(handle.state(), Open);
    assert_eq!(up.calls(), 12);

    // Only failures: nine are not enough calls; the tenth is.
    let up = Scripted::new();
    up.fail(Fail::Upstream);
    let (mut svc, handle) = breaker(cfg, clock.clone(), up.clone());
    for _ in 0..9 {
        get(&mut svc, 1).await.unwrap_err();
    }
    assert_eq!(handle.state(), Closed);
    assert_eq!(handle.stats().window.calls, 9);
    get(&mut svc, 1).await.unwrap_err();
    assert_eq!(handle.state(), Open);

    // Calls older than the window no longer count.
    let up = Scripted::new();
    up.fail(Fail::Upstream);
    let (mut svc, handle) = breaker(cfg, clock.clone(), up.clone());
    for _ in 0..9 {
        get(&mut svc, 1).await.unwrap_err();
    }
    clock.advance(secs(10));
    get(&mut svc, 1).await.unwrap_err();
    assert_eq!(handle.state(), Closed);
    assert_eq!(handle.stats().window.calls, 1);
}

#[tokio::test]
async fn a_slow_success_counts_as_a_failure() {
    let clock = Clock::manual();
    let (up, mut rx) = Controlled::new();
    let cfg = config(1).slow_call(secs(1));
    let (mut svc, handle) = breaker(cfg, clock.clone(), up);
    let call = svc.call(Get::new(1));
    clock.advance(secs(1));
    rx.try_recv().unwrap().ok();
    call.await.unwrap();
    assert_eq!(handle.state(), Closed, "exactly slow_call is not slow");

    let call = svc.call(Get::new(2));
    clock.advance(secs(1) + Duration::from_nanos(1));
    rx.try_recv().unwrap().ok();
    assert_eq!(
        call.await.unwrap().body,
        "doc 2",
        "the caller still gets the answer"
    );
    assert_eq!(handle.state(), Open);
    assert_eq!(handle.stats().failures, 1);
}

#[tokio::test]
async fn ignored_outcomes_never_open_it_and_do_not_break_a_run_of_failures() {
    let clock = Clock::manual();
    let up = Scripted::new();
    let (mut svc, handle) = breaker(config(1), clock.clone(), up.clone());
    for _ in 0..50 {
        up.fail(limited());
        get(&mut svc, 1).await.unwrap_err();
        up.fail(Fail::Throttled(secs(2)));
        get(&mut svc, 1).await.unwrap_err();
        up.fail(Fail::Aborted);
        get(&mut svc, 1).await.unwrap_err();
    }
    assert_eq!(handle.state(), Closed);
    assert_eq!(handle.stats().failures, 0);
    assert_eq!(up.calls(), 150);

    // Threshold 2: failure, 429, failure opens it (the 429 says nothing).
    let up = Scripted::new();
    let (mut svc, handle) = breaker(config(2), clock.clone(), up.clone());
    up.fail(Fail::Upstream);
    get(&mut svc, 1).await.unwrap_err();
    up.fail(Fail::Throttled(secs(2)));
    get(&mut svc, 1).await.unwrap_err();
    up.fail(Fail::Upstream);
    get(&mut svc, 1).await.unwrap_err();
    assert_eq!(handle.state(), Open);

    // Threshold 2: failure, 404, failure stays closed (a 404 proves ParagoN is up),
    // and so does a 400.
    let up = Scripted::new();
    let (mut svc, handle) = breaker(config(2), clock.clone(), up.clone());
    for healthy in [Fail::NotFound, Fail::BadRequest] {
        up.fail(Fail::Upstream);
        get(&mut svc, 1).await.unwrap_err();
        up.fail(healthy);
        get(&mut svc, 1).await.unwrap_err();
    }
    up.fail(Fail::Upstream);
    get(&mut svc, 1).await.unwrap_err();
    assert_eq!(handle.state(), Closed);
}

#[tokio::test]
async fn a_burst_over_our_own_rate_limit_leaves_the_breaker_closed() {
    let clock = Clock::manual();
    let up = Scripted::new();
    let breaker_layer = CircuitBreakerLayer::new(config(1).build().unwrap(), clock.clone());
    let handle = breaker_layer.handle();
    let svc = ServiceBuilder::new()
        .layer(breaker_layer)
        .layer(RateLimitLayer::memory(
            RateLimitConfig::builder(10, secs(60)).build().unwrap(),
            clock,
        ))
        .service(up.clone());
    let mut limited = 0;
    for n in 0..30 {
        match svc.clone().oneshot(Get::new(n)).await {
            Ok(_) => {}
            Err(Fail::Limited(_)) => limited += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!((up.calls(), limited), (10, 20));
    assert_eq!(handle.state(), Closed);
    assert_eq!(handle.stats().failures, 0);
}

#[tokio::test]
async fn transitions_are_seen_by_subscribers_and_the_listener() {
    let clock = Clock::manual();
    let seen = Arc::new(Mutex::new(Vec::<Transition>::new()));
    let layer = CircuitBreakerLayer::with_listener(config(1).build().unwrap(), clock.clone(), {
        let seen = seen.clone();
        move |t| seen.lock().push(t)
    });
    let handle = layer.handle();
    let mut rx = handle.subscribe();
    let up = Scripted::new();
    let mut svc = layer.layer(up.clone());
    assert_eq!(*rx.borrow_and_update(), Closed);

    up.fail(Fail::Upstream);
    get(&mut svc, 1).await.unwrap_err();
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), Open);

    clock.advance(secs(60));
    get(&mut svc, 1).await.unwrap_err(); // probe fails
    clock.advance(secs(60));
    up.succeed();
    get(&mut svc, 1).await.unwrap(); // probe succeeds
    assert_eq!(*rx.borrow_and_update(), Closed);

    handle.force_open();
    assert_eq!(*rx.borrow_and_update(), ForcedOpen);
    handle.close();
    assert_eq!(*rx.borrow_and_update(), Closed);

    let t = |from, to| Transition { from, to };
    assert_eq!(
        *seen.lock(),
        [
            t(Closed, Open),
            t(Open, HalfOpen),
            t(HalfOpen, Open),
            t(Open, HalfOpen),
            t(HalfOpen, Closed),
            t(Closed, ForcedOpen),
            t(ForcedOpen, Closed),
        ]
    );
    assert_eq!(handle.stats().transitions, 7);
}

#[tokio::test]
async fn a_subscriber_sees_the_breaker_open_without_polling() {
    let clock = Clock::manual();
    let up = Scripted::new();
    let (mut svc, handle) = breaker(config(1), clock, up.clone());
    let mut rx = handle.subscribe();
    let watcher =
        tokio::spawn(async move { rx.wait_for(|s| *s == Open).await.map(|s| *s).unwrap() });
    up.fail(Fail::Upstream);
    get(&mut svc, 1).await.unwrap_err();
    assert_eq!(watcher.await.unwrap(), Open);
}

#[tokio::test]
async fn force_open_holds_it_open_until_close_and_reset_zeroes_the_counters() {
    let clock = Clock::manual();
    let up = Scripted::new();
    let (mut svc, handle) = breaker(config(3), clock.clone(), up.clone());
    get(&mut svc, 1).await.unwrap();
    handle.force_open();
    assert_eq!(handle.state(), ForcedOpen);
    assert_eq!(get(&mut svc, 1).await, open(secs(60)));
    clock.advance(secs(600));
    assert_eq!(
        get(&mut svc, 1).await,
        open(secs(60)),
        "forced open never goes half-open"
    );
    assert_eq!(up.calls(), 1);

    handle.close();
    assert_eq!(handle.state(), Closed);
    get(&mut svc, 1).await.unwrap();
    assert_eq!(up.calls(), 2);

    // close() clears a run of failures.
    up.fail(Fail::Upstream);
    get(&mut svc, 1).await.unwrap_err();
    get(&mut svc, 1).await.unwrap_err();
    handle.close();
    assert_eq!(handle.stats().consecutive_failures, 0);
    get(&mut svc, 1).await.unwrap_err();
    get(&mut svc, 1).await.unwrap_err();
    assert_eq!(handle.state(), Closed);

    // reset() from open: closed, every counter zero.
    get(&mut svc, 1).await.unwrap_err();
    assert_eq!(handle.state(), Open);
    get(&mut svc, 1).await.unwrap_err();
    handle.reset();
    let stats = handle.stats();
    assert_eq!(stats.state, Closed);
    assert_eq!(
        (
            stats.successes,
            stats.failures,
            stats.rejected,
            stats.consecutive_failures
        ),
        (0, 0, 0, 0)
    );
    up.succeed();
    get(&mut svc, 1).await.unwrap();
}

#[tokio::test]
async fn force_open_while_half_open_ignores_the_probe_in_flight() {
    let clock = Clock::manual();
    let (up, mut rx) = Controlled::new();
    let (mut svc, handle) = breaker(config(1), clock.clone(), up);
    let first = svc.call(Get::new(0));
    rx.try_recv().unwrap().fail(Fail::Upstream);
    first.await.unwrap_err();
    clock.advance(secs(60));
    let probe = svc.call(Get::new(1));
    handle.force_open();
    rx.try_recv().unwrap().ok();
    probe.await.unwrap();
    assert_eq!(handle.state(), ForcedOpen);
}

/// One step of a random schedule for the probe-bound property.
#[derive(Clone, Debug)]
enum Op {
    /// A new call arrives.
    Call,
    /// The pending call at this index (modulo) answers: 0 ok, 1 failure, 2 a 429, 3 a 404.
    Complete(usize, u8),
    /// The caller of the pending call at this index gives up.
    Drop(usize),
    /// Time passes.
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Call),
        4 => (any::<usize>(), 0u8..4).prop_map(|(i, v)| Op::Complete(i, v)),
        1 => any::<usize>().prop_map(Op::Drop),
        2 => (0u64..40).prop_map(Op::Advance),
    ]
}

type Held = oneshot::Sender<Answer>;

struct InFlight<F> {
    fut: F,
    tx: Held,
    /// The transition count when it was admitted as a probe; `None` for ordinary calls.
    probe_of: Option<usize>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever the interleaving of arrivals, answers, give-ups and time, never more
    /// than `half_open_max_calls` probes of one half-open period are in flight, and an
    /// open breaker never lets a call reach the upstream.
    #[test]
    fn never_more_probes_in_flight_than_half_open_max_calls(
        threshold in 1u32..4,
        max_probes in 1u32..4,
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        let clock = Clock::manual();
        let transitions = Arc::new(AtomicUsize::new(0));
        let cfg = BreakerConfig::builder()
            .failure_threshold(threshold)
            .open_for(ms(20))
            .half_open_max_calls(max_probes)
            .build()
            .unwrap();
        let layer = CircuitBreakerLayer::with_listener(cfg, clock.clone(), {
            let transitions = transitions.clone();
            move |_| { transitions.fetch_add(1, Ordering::SeqCst); }
        });
        let handle = layer.handle();
        let held: Arc<Mutex<Option<Held>>> = Arc::default();
        let reached = Arc::new(AtomicUsize::new(0));
        let mut svc = layer.layer(tower::service_fn({
            let held = held.clone();
            let reached = reached.clone();
            move |_: Get| {
                reached.fetch_add(1, Ordering::SeqCst);
                let (tx, rx) = oneshot::channel::<Answer>();
                *held.lock() = Some(tx);
                async move { rx.await.unwrap_or(Err(Fail::Aborted)) }
            }
        }));
        let mut pending = Vec::new();
        for op in ops {
            match op {
                Op::Call => {
                    let state_before = handle.state();
                    let before = reached.load(Ordering::SeqCst);
                    let mut fut = Box::pin(svc.call(Get::new(0)));
                    if reached.load(Ordering::SeqCst) == before {
                        let answer = (&mut fut).now_or_never();
                        prop_assert!(matches!(answer, Some(Err(Fail::Open(_)))), "{answer:?}");
                        prop_assert!(state_before != Closed);
                    } else {
                        prop_assert!(!matches!(state_before, Open | ForcedOpen) || handle.state() == HalfOpen,
                            "an open breaker let a call through");
                        let tx = held.lock().take().unwrap();
                        let probe_of = (handle.state() == HalfOpen)
                            .then(|| transitions.load(Ordering::SeqCst));
                        pending.push(InFlight { fut, tx, probe_of });
                    }
                }
                Op::Complete(i, v) if !pending.is_empty() => {
                    let InFlight { mut fut, tx, .. } = pending.remove(i % pending.len());
                    let answer = match v {
                        0 => Ok(Doc::new("ok")),
                        1 => Err(Fail::Upstream),
                        2 => Err(Fail::Throttled(secs(1))),
                        _ => Err(Fail::NotFound),
                    };
                    tx.send(answer.clone()).unwrap();
                    prop_assert_eq!((&mut fut).now_or_never(), Some(answer));
                }
                Op::Drop(i) if !pending.is_empty() => {
                    drop(pending.remove(i % pending.len()));
                }
                Op::Advance(n) => clock.advance(ms(n)),
                _ => {}
            }
            let period = transitions.load(Ordering::SeqCst);
            let probes = pending.iter().filter(|p| p.probe_of == Some(period)).count();
            prop_assert!(probes <= max_probes as usize,
                "{probes} probes in flight, at most {max_probes} allowed");
            if handle.state() != HalfOpen {
                prop_assert_eq!(probes, 0);
            }
        }
    }
}

#[tokio::test]
async fn closing_a_closed_breaker_is_not_a_transition() {
    let seen = Arc::new(AtomicUsize::new(0));
    let layer = CircuitBreakerLayer::with_listener(config(1).build().unwrap(), Clock::manual(), {
        let seen = seen.clone();
        move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    let handle = layer.handle();
    let mut rx = handle.subscribe();
    rx.borrow_and_update();
    handle.close();
    handle.reset();
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    assert!(!rx.has_changed().unwrap());
    assert_eq!(
        handle.stats().transitions,
        0,
        "close/reset of a closed breaker counted as a change of state"
    );
}

#[tokio::test(start_paused = true)]
async fn waiting_for_our_own_rate_limit_is_not_a_slow_upstream_call() {
    let clock = Clock::tokio();
    let up = Scripted::new();
    let breaker_layer = CircuitBreakerLayer::new(
        BreakerConfig::builder()
            .failure_threshold(3)
            .slow_call(ms(100))
            .build()
            .unwrap(),
        clock.clone(),
    );
    let handle = breaker_layer.handle();
    let svc = ServiceBuilder::new()
        .layer(breaker_layer)
        .layer(RateLimitLayer::memory(
            RateLimitConfig::builder(10, secs(1))
                .burst(1)
                .max_wait(secs(1))
                .build()
                .unwrap(),
            clock,
        ))
        .service(up.clone());
    // Five calls at once: the limiter spaces them 100 ms apart; ParagoN answers each at
    // once.
    let answers = join_all((0..5).map(|n| svc.clone().oneshot(Get::new(n)))).await;
    assert!(answers.iter().all(Result::is_ok));
    assert_eq!(up.calls(), 5);
    assert_eq!(
        handle.state(),
        Closed,
        "ParagoN answered every call instantly; {} calls were counted as slow failures",
        handle.stats().failures
    );
}

/// A `Buffer` runs the limiter on its own worker task, so the limiter and the breaker
/// share no task: the wait still reaches the breaker, in the request's ledger.
#[tokio::test(start_paused = true)]
async fn waiting_for_our_own_rate_limit_behind_a_buffer_is_not_a_slow_upstream_call() {
    let clock = Clock::tokio();
    let up = Scripted::new();
    let breaker_layer = CircuitBreakerLayer::new(
        BreakerConfig::builder()
            .failure_threshold(3)
            .slow_call(ms(100))
            .build()
            .unwrap(),
        clock.clone(),
    );
    let handle = breaker_layer.handle();
    let limited = RateLimitLayer::memory(
        RateLimitConfig::builder(10, secs(1))
            .burst(1)
            .max_wait(secs(1))
            .build()
            .unwrap(),
        clock,
    )
    .layer(up.clone());
    // The buffer boxes errors; the limiter's own come back out as they were.
    let buffered = tower::buffer::Buffer::new(limited, 8)
        .map_err(|e: tower::BoxError| *e.downcast::<Fail>().expect("an error of the limiter"));
    let svc = breaker_layer.layer(buffered);
    // Five calls at once: the limiter spaces them 100 ms apart; ParagoN answers each at
    // once.
    let answers = join_all((0..5).map(|n| svc.clone().oneshot(Get::new(n)))).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    assert_eq!(up.calls(), 5);
    assert_eq!(
        handle.stats().failures,
        0,
        "ParagoN answered every call instantly, but some were counted as slow"
    );
    assert_eq!(handle.state(), Closed);
}

#[tokio::test]
async fn new_settings_keep_the_state_and_apply_from_the_next_decision() {
    let clock = Clock::manual();
    let up = Scripted::new();
    let (mut svc, handle) = breaker(config(2), clock.clone(), up.clone());
    up.fail(Fail::Upstream);
    get(&mut svc, 1).await.unwrap_err();
    assert_eq!(handle.stats().consecutive_failures, 1);
    // A higher threshold: the failure counted stays counted.
    handle.reconfigure(config(3).build().unwrap());
    get(&mut svc, 1).await.unwrap_err();
    assert_eq!(handle.state(), Closed, "2 of 3");
    get(&mut svc, 1).await.unwrap_err();
    assert_eq!(handle.state(), Open);
    assert_eq!(up.calls(), 3);

    // Open stays open until the time set when it opened, whatever the new open_for.
    handle.reconfigure(
        config(3)
            .open_for(secs(10))
            .half_open_max_calls(2)
            .build()
            .unwrap(),
    );
    assert_eq!(handle.state(), Open);
    clock.advance(secs(30));
    assert_eq!(get(&mut svc, 2).await, open(secs(30)));
    assert_eq!(up.calls(), 3);
    clock.advance(secs(30));
    // Half-open now, with the new number of probes; a probe failure reopens for the
    // new open_for.
    get(&mut svc, 3).await.unwrap_err();
    assert_eq!(handle.state(), Open);
    assert_eq!(get(&mut svc, 4).await, open(secs(10)));
    assert_eq!(handle.config().open_for, secs(10));
    assert_eq!(handle.stats().transitions, 3);
}
