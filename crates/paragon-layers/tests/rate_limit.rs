//! The rate-limit layer against counting upstreams, on a manual clock or paused tokio time.

mod common;

use std::time::Duration;

use common::*;
use paragon_layers::rate_limit::{
    CarriesQuotaReport, MemoryStore, RateLimit, RateLimitCause, RateLimitConfig, RateLimitHandle,
    RateLimitLayer, RateLimited, UpstreamQuota,
};
use paragon_layers::{Clock, Timestamp};
use proptest::prelude::*;
use tower::{Layer, Service, ServiceExt};

type Svc<S> = RateLimit<S, MemoryStore>;

fn limiter<S>(
    config: RateLimitConfig,
    clock: Clock,
    inner: S,
) -> (Svc<S>, RateLimitHandle<MemoryStore>) {
    let layer = RateLimitLayer::memory(config, clock);
    (layer.layer(inner), layer.handle())
}

async fn get<S>(svc: &mut Svc<S>, n: u32) -> Answer
where
    Svc<S>: Service<Get, Response = Doc, Error = Fail>,
{
    svc.ready().await.unwrap().call(Get::new(n)).await
}

fn budget(retry_after: Duration) -> Answer {
    Err(Fail::Limited(RateLimited {
        retry_after,
        cause: RateLimitCause::Budget,
    }))
}

fn paused(retry_after: Duration) -> Answer {
    Err(Fail::Limited(RateLimited {
        retry_after,
        cause: RateLimitCause::UpstreamPause,
    }))
}

#[tokio::test]
async fn a_burst_is_admitted_then_the_next_call_is_told_exactly_when_to_retry() {
    let clock = Clock::manual();
    let up = Scripted::new();
    let config = RateLimitConfig::builder(10, secs(1)).build().unwrap();
    let (mut svc, handle) = limiter(config, clock.clone(), up.clone());
    for n in 0..10 {
        assert!(get(&mut svc, n).await.is_ok(), "call {n} of the burst");
    }
    assert_eq!(get(&mut svc, 10).await, budget(ms(100)));
    assert_eq!(up.calls(), 10, "a rejected call never reaches the upstream");
    clock.advance(ms(100) - Duration::from_nanos(1));
    assert_eq!(get(&mut svc, 10).await, budget(Duration::from_nanos(1)));
    clock.advance(Duration::from_nanos(1));
    assert!(get(&mut svc, 10).await.is_ok());
    assert_eq!(get(&mut svc, 11).await, budget(ms(100)));
    assert_eq!(up.calls(), 11);
    let stats = handle.stats();
    assert_eq!(
        (stats.admitted, stats.rejected_budget, stats.rejected_pause),
        (11, 3, 0)
    );
}

#[tokio::test]
async fn a_smaller_burst_admits_only_that_many_at_once() {
    let clock = Clock::manual();
    let up = Scripted::new();
    let config = RateLimitConfig::builder(10, secs(1))
        .burst(3)
        .build()
        .unwrap();
    let (mut svc, handle) = limiter(config, clock.clone(), up.clone());
    assert_eq!(handle.budget().await.available, 3);
    for n in 0..3 {
        get(&mut svc, n).await.unwrap();
    }
    assert_eq!(handle.budget().await.available, 0);
    assert_eq!(get(&mut svc, 3).await, budget(ms(100)));
    // Steady state: one call per 100 ms.
    for n in 0..20 {
        clock.advance(ms(100));
        assert!(get(&mut svc, n).await.is_ok());
        assert_eq!(get(&mut svc, n).await, budget(ms(100)));
    }
    assert_eq!(up.calls(), 23);
}

#[tokio::test(start_paused = true)]
async fn callers_over_budget_wait_up_to_max_wait_and_are_admitted_in_order() {
    let clock = Clock::tokio();
    let up = Scripted::timed(clock.clone());
    let config = RateLimitConfig::builder(10, secs(1))
        .burst(1)
        .max_wait(ms(250))
        .build()
        .unwrap();
    let (svc, handle) = limiter(config, clock.clone(), up.clone());
    let t0 = clock.now();
    // Four calls at t0: one at once, two wait 100 ms and 200 ms, the fourth would need
    // 300 ms and is refused at once.
    let (a, b, c, d) = tokio::join!(
        svc.clone().oneshot(Get::new(1)),
        svc.clone().oneshot(Get::new(2)),
        svc.clone().oneshot(Get::new(3)),
        svc.clone().oneshot(Get::new(4)),
    );
    assert_eq!(a.unwrap().body, "doc 1 v1");
    assert_eq!(b.unwrap().body, "doc 2 v2");
    assert_eq!(c.unwrap().body, "doc 3 v3");
    assert_eq!(d, budget(ms(300)));
    let offsets: Vec<Duration> = up.times().iter().map(|t| t.since(t0)).collect();
    assert_eq!(offsets, [Duration::ZERO, ms(100), ms(200)]);
    assert_eq!(handle.stats().admitted, 3);
    assert_eq!(clock.now().since(t0), ms(200));
}

#[tokio::test(start_paused = true)]
async fn an_upstream_429_pauses_every_call_until_its_retry_after_has_passed() {
    let clock = Clock::tokio();
    let up = Scripted::new();
    let config = RateLimitConfig::builder(100, secs(1)).build().unwrap();
    let (mut svc, handle) = limiter(config, clock.clone(), up.clone());
    up.fail(Fail::Throttled(secs(2)));
    assert_eq!(get(&mut svc, 1).await, Err(Fail::Throttled(secs(2))));
    up.succeed();
    assert_eq!(handle.budget().await.paused_for, secs(2));

    assert_eq!(get(&mut svc, 2).await, paused(secs(2)));
    tokio::time::advance(secs(1)).await;
    assert_eq!(get(&mut svc, 3).await, paused(secs(1)));
    tokio::time::advance(secs(1) - Duration::from_nanos(1)).await;
    assert_eq!(get(&mut svc, 4).await, paused(Duration::from_nanos(1)));
    assert_eq!(
        up.calls(),
        1,
        "no call reaches the upstream during the pause"
    );

    tokio::time::advance(Duration::from_nanos(1)).await;
    assert!(get(&mut svc, 5).await.is_ok());
    assert_eq!(up.calls(), 2);
    assert_eq!(handle.budget().await.paused_for, Duration::ZERO);
    let stats = handle.stats();
    assert_eq!(
        (
            stats.upstream_429,
            stats.rejected_pause,
            stats.rejected_budget
        ),
        (1, 3, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_longer_pause_wins_over_a_shorter_one() {
    for (first, second) in [(5, 1), (1, 5)] {
        let (up, mut rx) = Controlled::new();
        let config = RateLimitConfig::builder(100, secs(1)).build().unwrap();
        let (svc, handle) = limiter(config, Clock::tokio(), up.clone());
        // Two calls in flight when the 429s come back.
        let a = tokio::spawn(svc.clone().oneshot(Get::new(1)));
        let b = tokio::spawn(svc.clone().oneshot(Get::new(2)));
        let (pa, pb) = (rx.recv().await.unwrap(), rx.recv().await.unwrap());
        pa.fail(Fail::Throttled(secs(first)));
        assert!(a.await.unwrap().is_err());
        pb.fail(Fail::Throttled(secs(second)));
        assert!(b.await.unwrap().is_err());
        assert_eq!(handle.stats().upstream_429, 2);
        assert_eq!(
            handle.budget().await.paused_for,
            secs(5),
            "429s of {first}s then {second}s"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_caller_with_max_wait_longer_than_the_pause_waits_it_out() {
    let clock = Clock::tokio();
    let up = Scripted::timed(clock.clone());
    let config = RateLimitConfig::builder(100, secs(1))
        .max_wait(secs(3))
        .build()
        .unwrap();
    let (mut svc, _) = limiter(config, clock.clone(), up.clone());
    up.fail(Fail::Throttled(secs(2)));
    let t0 = clock.now();
    assert!(get(&mut svc, 1).await.is_err());
    up.succeed();
    assert!(get(&mut svc, 2).await.is_ok());
    assert_eq!(
        up.times()[1].since(t0),
        secs(2),
        "admitted exactly when the pause ended"
    );
}

#[tokio::test(start_paused = true)]
async fn a_caller_waiting_for_its_slot_does_not_go_upstream_during_a_429_pause() {
    let clock = Clock::tokio();
    let (up, mut rx) = Controlled::new();
    let config = RateLimitConfig::builder(10, secs(1))
        .burst(1)
        .max_wait(ms(500))
        .build()
        .unwrap();
    let (svc, handle) = limiter(config, clock.clone(), up.clone());
    // A goes at once; B reserves the next slot and waits 100 ms for it.
    let a = tokio::spawn(svc.clone().oneshot(Get::new(1)));
    let b = tokio::spawn(svc.clone().oneshot(Get::new(2)));
    let pa = rx.recv().await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(up.calls(), 1, "B waits for its slot");
    // 50 ms in, ParagoN answers A with 429 and Retry-After: 2.
    tokio::time::advance(ms(50)).await;
    pa.fail(Fail::Throttled(secs(2)));
    assert!(a.await.unwrap().is_err());
    assert_eq!(handle.budget().await.paused_for, secs(2));
    // B's slot comes at 100 ms, inside the pause: it must not reach ParagoN.
    let t0 = clock.now();
    let b = tokio::select! {
        b = b => b.unwrap(),
        reached = rx.recv() => panic!(
            "B reached the upstream {:?} after the 429 (Retry-After: 2): {:?}",
            clock.now().since(t0), reached.map(|p| p.req)
        ),
    };
    assert_eq!(up.calls(), 1);
    let cause = match b {
        Err(Fail::Limited(r)) => r.cause,
        other => panic!("{other:?}"),
    };
    assert_eq!(cause, RateLimitCause::UpstreamPause);
}

#[tokio::test(start_paused = true)]
async fn a_pause_that_ends_exactly_when_the_wait_left_runs_out_is_waited_out() {
    let clock = Clock::tokio();
    let (up, mut rx) = Controlled::new();
    let config = RateLimitConfig::builder(10, secs(1))
        .burst(1)
        .max_wait(ms(500))
        .build()
        .unwrap();
    let (svc, _) = limiter(config, clock.clone(), up.clone());
    let t0 = clock.now();
    // A goes at once; B reserves the next slot, 100 ms away.
    let a = tokio::spawn(svc.clone().oneshot(Get::new(1)));
    let mut b = tokio::spawn(svc.clone().oneshot(Get::new(2)));
    let pa = rx.recv().await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(up.calls(), 1);
    // 50 ms in, a 429 pauses calls until 500 ms: when B's slot comes, 400 ms of the
    // pause are left and exactly 400 ms of B's max wait.
    tokio::time::advance(ms(50)).await;
    pa.fail(Fail::Throttled(ms(450)));
    assert!(a.await.unwrap().is_err());
    let pb = tokio::select! {
        pb = rx.recv() => pb.unwrap(),
        refused = &mut b => panic!("B was refused a pause it could wait out: {refused:?}"),
    };
    assert_eq!(clock.now().since(t0), ms(500), "B goes when the pause ends");
    pb.ok();
    assert!(b.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_limiter_is_ready_only_when_the_service_it_wraps_is() {
    let clock = Clock::tokio();
    let up = Gated::closed(Scripted::new());
    let config = RateLimitConfig::builder(10, secs(1)).build().unwrap();
    let (mut svc, _) = limiter(config, clock, up.clone());
    assert!(poll_ready_now(&mut svc).is_pending());
    let waiting = tokio::spawn(async move { get(&mut svc, 1).await });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "ready before the service it wraps");
    up.open();
    assert!(waiting.await.unwrap().is_ok());
}

#[tokio::test]
async fn every_service_made_by_one_layer_draws_from_one_budget() {
    let up = Scripted::new();
    let layer = RateLimitLayer::memory(
        RateLimitConfig::builder(2, secs(60)).build().unwrap(),
        Clock::manual(),
    );
    let mut a = layer.layer(up.clone());
    let mut b = layer.layer(up.clone());
    assert!(get(&mut a, 1).await.is_ok());
    assert!(get(&mut b, 2).await.is_ok());
    assert!(matches!(get(&mut a, 3).await, Err(Fail::Limited(_))));
    assert!(matches!(get(&mut b, 4).await, Err(Fail::Limited(_))));
    assert_eq!(up.calls(), 2);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Whatever the arrival pattern, the upstream never sees more than
    /// `max_requests + burst` calls in any span of one window, and every refusal names a
    /// retry time after which a call is in fact admitted.
    #[test]
    fn admitted_calls_in_any_window_never_exceed_budget_plus_burst(
        max in 1u32..20,
        burst in 0u32..20,
        window_ms in 1u64..2_000,
        max_wait_ms in prop_oneof![Just(0u64), 0u64..300],
        gaps_us in proptest::collection::vec(0u64..100_000, 1..300),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let clock = Clock::manual();
        let up = Scripted::timed(clock.clone());
        let window = ms(window_ms);
        let config = RateLimitConfig::builder(max, window).burst(burst).max_wait(ms(max_wait_ms)).build().unwrap();
        let burst = config.burst.get();
        let (mut svc, _) = limiter(config, clock.clone(), up.clone());
        rt.block_on(async {
            for (i, gap) in gaps_us.iter().enumerate() {
                clock.advance(Duration::from_micros(*gap));
                let before = clock.now();
                match get(&mut svc, i as u32).await {
                    Ok(_) => {
                        // A waiting call went exactly max_wait or less later (the manual
                        // clock is moved by the wait).
                        prop_assert!(clock.now().since(before) <= ms(max_wait_ms));
                    }
                    Err(Fail::Limited(RateLimited { retry_after, cause: RateLimitCause::Budget })) => {
                        prop_assert!(retry_after > ms(max_wait_ms));
                        prop_assert!(retry_after <= window + ms(max_wait_ms));
                    }
                    other => prop_assert!(false, "unexpected {other:?}"),
                }
            }
            Ok(())
        })?;
        let times: Vec<Timestamp> = up.times();
        for (i, start) in times.iter().enumerate() {
            let end = start.after(window);
            let in_window = times[i..].iter().take_while(|t| **t < end).count() as u64;
            prop_assert!(in_window <= u64::from(max) + u64::from(burst),
                "{in_window} calls in one window; max {max} + burst {burst}");
        }
    }

    /// A refused call told to retry after `d` is admitted at exactly `d`, not before.
    #[test]
    fn retry_after_is_exact(max in 1u32..20, burst in 0u32..20, window_ms in 1u64..2_000, extra in 0usize..40) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let clock = Clock::manual();
        let up = Scripted::new();
        let config = RateLimitConfig::builder(max, ms(window_ms)).burst(burst).build().unwrap();
        let (mut svc, _) = limiter(config, clock.clone(), up.clone());
        rt.block_on(async {
            let mut retry = None;
            for n in 0..(config.burst.get() as usize + extra + 1) {
                if let Err(Fail::Limited(r)) = get(&mut svc, n as u32).await {
                    retry = Some(r.retry_after);
                    break;
                }
            }
            let retry = retry.expect("a call past the burst is refused");
            prop_assert!(retry > Duration::ZERO);
            clock.advance(retry - Duration::from_nanos(1));
            prop_assert!(get(&mut svc, 1000).await.is_err());
            clock.advance(Duration::from_nanos(1));
            prop_assert!(get(&mut svc, 1001).await.is_ok());
            Ok(())
        })?;
    }
}

/// An upstream with a quota of its own, `limit` calls per fixed `window` from time zero,
/// advertised on every answer (reset in whole seconds, rounded up, as headers give it)
/// and enforced with its own 429.
#[derive(Clone)]
struct QuotaUpstream {
    clock: Clock,
    limit: u64,
    window: Duration,
    state: std::sync::Arc<parking_lot::Mutex<(u64, u64)>>,
    counts: std::sync::Arc<parking_lot::Mutex<(u64, u64)>>,
}

impl QuotaUpstream {
    fn new(clock: Clock, limit: u64, window: Duration) -> Self {
        QuotaUpstream {
            clock,
            limit,
            window,
            state: Default::default(),
            counts: Default::default(),
        }
    }

    /// (accepted, refused with 429).
    fn counts(&self) -> (u64, u64) {
        *self.counts.lock()
    }
}

impl Service<Get> for QuotaUpstream {
    type Response = Doc;
    type Error = Fail;
    type Future = std::future::Ready<Answer>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Fail>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Get) -> Self::Future {
        let now = self.clock.now().0;
        let w = self.window.as_nanos() as u64;
        let index = now / w;
        let mut state = self.state.lock();
        if state.0 != index {
            *state = (index, 0);
        }
        let allowed = state.1 < self.limit;
        if allowed {
            state.1 += 1;
        }
        let reset_ns = (index + 1) * w - now;
        let reset = Duration::from_secs(reset_ns.div_ceil(1_000_000_000));
        let remaining = self.limit - state.1;
        drop(state);
        req.quota_report()
            .record(UpstreamQuota { remaining, reset });
        let mut counts = self.counts.lock();
        std::future::ready(if allowed {
            counts.0 += 1;
            Ok(Doc::new("doc"))
        } else {
            counts.1 += 1;
            Err(Fail::Throttled(reset))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn paced_by_the_advertised_quota_no_429_and_nearly_all_of_it_used() {
    let clock = Clock::tokio();
    // ParagoN: 100 calls per 10 s. Our own budget is far larger; max_pause keeps a 429
    // from hiding the next ones.
    let upstream = QuotaUpstream::new(clock.clone(), 100, secs(10));
    let config = RateLimitConfig::builder(100_000, secs(1))
        .follow_upstream(true)
        .build()
        .unwrap();
    let (mut svc, handle) = limiter(config, clock.clone(), upstream.clone());
    // 1.5 × the quota for 60 s: 15 calls a second, evenly.
    let mut held = 0;
    for n in 0..900u32 {
        match svc.ready().await.unwrap().call(Get::new(n)).await {
            Ok(_) => {}
            Err(Fail::Limited(r)) => {
                assert_eq!(r.cause, RateLimitCause::UpstreamQuota);
                held += 1;
            }
            Err(e) => panic!("call {n}: {e:?}"),
        }
        tokio::time::advance(Duration::from_nanos(1_000_000_000 / 15)).await;
    }
    let (accepted, refused) = upstream.counts();
    assert_eq!(refused, 0, "no 429 from the upstream");
    assert!(accepted >= 570, "{accepted} of the quota's 600 used");
    assert_eq!(accepted + held, 900);
    assert_eq!(handle.stats().rejected_quota, held);
    assert!(handle.upstream_quota().is_some());
}

#[tokio::test(start_paused = true)]
async fn without_following_the_quota_the_upstream_answers_429s() {
    let clock = Clock::tokio();
    let upstream = QuotaUpstream::new(clock.clone(), 100, secs(10));
    let config = RateLimitConfig::builder(100_000, secs(1))
        .max_pause(Duration::from_nanos(1))
        .build()
        .unwrap();
    let (mut svc, handle) = limiter(config, clock.clone(), upstream.clone());
    for n in 0..150u32 {
        let _ = svc.ready().await.unwrap().call(Get::new(n)).await;
        tokio::time::advance(Duration::from_nanos(1_000_000_000 / 15)).await;
    }
    assert!(upstream.counts().1 > 0, "the same load overruns the quota");
    assert_eq!(handle.upstream_quota(), None);
}

#[tokio::test(start_paused = true)]
async fn a_reset_in_the_past_is_no_constraint() {
    let clock = Clock::tokio();
    let config = RateLimitConfig::builder(100, secs(1))
        .follow_upstream(true)
        .build()
        .unwrap();
    // An upstream that says nothing remains, with a reset of zero (already past).
    let up = tower::service_fn(|mut req: Get| async move {
        req.quota_report().record(UpstreamQuota {
            remaining: 0,
            reset: Duration::ZERO,
        });
        Ok::<_, Fail>(Doc::new("doc"))
    });
    let (mut svc, _) = limiter(config, clock, up);
    for n in 0..20 {
        assert!(get(&mut svc, n).await.is_ok(), "call {n} never stalls");
    }
}

#[tokio::test(start_paused = true)]
async fn at_twice_the_budget_half_prefetch_the_interactive_calls_get_their_share() {
    let clock = Clock::tokio();
    let up = Scripted::new();
    // 10 a second, burst 10, 20 % of it kept from background calls.
    let config = RateLimitConfig::builder(10, secs(1))
        .background_reserve(0.2)
        .build()
        .unwrap();
    let (mut svc, handle) = limiter(config, clock, up.clone());
    let (mut interactive, mut background) = (0u32, 0u32);
    // 20 calls a second for 60 s, alternating: 10 interactive, 10 prefetches.
    for n in 0..1200u32 {
        let req = if n % 2 == 0 {
            Get::new(n)
        } else {
            Get::background(n)
        };
        if svc.ready().await.unwrap().call(req).await.is_ok() {
            if n % 2 == 0 {
                interactive += 1;
            } else {
                background += 1;
            }
        }
        tokio::time::advance(ms(50)).await;
    }
    // The budget allows 600 in 60 s (plus the burst): interactive calls get ≥ 99 % of
    // what they asked; the shedding falls on the prefetches.
    assert!(interactive >= 594, "interactive {interactive} of 600");
    assert!(background <= 20, "background {background}");
    let stats = handle.stats();
    assert_eq!(stats.rejected_background, u64::from(600 - background));
}

#[test]
fn background_reserve_must_be_a_share() {
    for bad in [-0.1, 1.5, f64::NAN] {
        let err = RateLimitConfig::builder(10, secs(1))
            .background_reserve(bad)
            .build()
            .unwrap_err();
        assert_eq!(err.field, "background_reserve");
    }
}

#[tokio::test]
async fn a_new_rate_keeps_the_calls_spent_and_the_pause_and_tells_the_exact_retry() {
    let clock = Clock::manual();
    let up = Scripted::new();
    let config = RateLimitConfig::builder(10, secs(1)).build().unwrap();
    let (mut svc, handle) = limiter(config, clock.clone(), up.clone());
    for n in 0..6 {
        assert!(get(&mut svc, n).await.is_ok());
    }
    // Half the rate and burst: six calls made are one over the new burst of five, so
    // the next call waits for that one and its own slot (2 × 200 ms).
    handle.reconfigure(RateLimitConfig::builder(5, secs(1)).build().unwrap());
    assert_eq!(handle.config().max_requests.get(), 5);
    assert_eq!(handle.budget().await.available, 0);
    assert_eq!(get(&mut svc, 6).await, budget(ms(400)));
    // Twice the first rate: the six calls still count, at the new price.
    handle.reconfigure(RateLimitConfig::builder(20, secs(1)).build().unwrap());
    assert_eq!(handle.budget().await.available, 14);
    for n in 0..14 {
        assert!(
            get(&mut svc, 10 + n).await.is_ok(),
            "call {n} of the 14 left"
        );
    }
    assert_eq!(get(&mut svc, 30).await, budget(ms(50)));
    assert_eq!(up.calls(), 20);

    // An upstream 429's pause goes on through a change of rate.
    up.fail(Fail::Throttled(secs(5)));
    clock.advance(secs(10));
    assert_eq!(get(&mut svc, 31).await, Err(Fail::Throttled(secs(5))));
    up.succeed();
    handle.reconfigure(RateLimitConfig::builder(100, secs(1)).build().unwrap());
    assert_eq!(get(&mut svc, 32).await, paused(secs(5)));
    assert_eq!(up.calls(), 21);
    let stats = handle.stats();
    assert_eq!(
        (stats.admitted, stats.upstream_429),
        (21, 1),
        "counters kept"
    );
}
