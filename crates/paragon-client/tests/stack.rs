//! The full stack — cache → circuit breaker → rate limiter → real `HttpTransport` —
//! against the simulated ParagoN on a real socket, counting the calls that reached it.

#![allow(
    clippy::disallowed_methods,
    reason = "tests time real sockets and servers"
)]

use std::time::Duration;

use futures_util::future::join_all;
use futures_util::FutureExt;
use paragon_client::{
    CacheStatus, Endpoint, Error, HttpTransport, ParagonClient, ParagonRequest, ParagonResponse,
    TransportConfig, UserId,
};
use paragon_layers::cache::{Cache, CacheConfig, CacheHandle, CacheLayer};
use paragon_layers::circuit_breaker::{
    BreakerConfig, BreakerHandle, BreakerState, CircuitBreaker, CircuitBreakerLayer,
};
use paragon_layers::rate_limit::{
    MemoryStore, RateLimit, RateLimitCause, RateLimitConfig, RateLimitHandle, RateLimitLayer,
    RateLimited,
};
use paragon_layers::Clock;
use paragon_sim::{Faults, SimConfig, SimHandle, Simulator};
use tower::ServiceBuilder;

type Stack = Cache<
    CircuitBreaker<RateLimit<HttpTransport, MemoryStore>>,
    ParagonRequest,
    ParagonResponse,
    Error,
>;

struct Edge {
    client: ParagonClient<Stack>,
    cache: CacheHandle<Endpoint, ParagonResponse, Error>,
    breaker: BreakerHandle,
    limiter: RateLimitHandle<MemoryStore>,
}

struct Settings {
    cache: CacheConfig,
    breaker: BreakerConfig,
    limit: RateLimitConfig,
    timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cache: CacheConfig::builder(Duration::from_secs(300))
                .max_entries(10_000)
                .build()
                .unwrap(),
            breaker: BreakerConfig::default(),
            limit: RateLimitConfig::builder(1000, Duration::from_secs(60))
                .build()
                .unwrap(),
            timeout: Duration::from_secs(10),
        }
    }
}

fn edge(sim: &SimHandle, clock: Clock, s: Settings) -> Edge {
    let mut config = TransportConfig::new(sim.base_url().parse().unwrap());
    config.timeout = s.timeout;
    let transport = HttpTransport::new(config).unwrap();
    let cache = CacheLayer::new(s.cache, clock.clone());
    let breaker = CircuitBreakerLayer::new(s.breaker, clock.clone());
    let limiter = RateLimitLayer::memory(s.limit, clock);
    let (cache_handle, breaker_handle, limiter_handle) =
        (cache.handle(), breaker.handle(), limiter.handle());
    let stack = ServiceBuilder::new()
        .layer(cache)
        .layer(breaker)
        .layer(limiter)
        .service(transport);
    Edge {
        client: ParagonClient::new(stack),
        cache: cache_handle,
        breaker: breaker_handle,
        limiter: limiter_handle,
    }
}

async fn sim(faults: Faults) -> SimHandle {
    Simulator::new(SimConfig {
        faults,
        ..SimConfig::default()
    })
    .spawn("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap()
}

fn id(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test]
async fn a_hundred_concurrent_fetches_of_one_cold_id_make_one_upstream_call() {
    let sim = sim(Faults::default()).await;
    let e = edge(&sim, Clock::tokio(), Settings::default());
    let u1 = id("u1");
    let answers = join_all((0..100).map(|_| e.client.fetch_user_with_status(&u1))).await;
    let expected = paragon_sim::user_json("u1");
    for a in &answers {
        let a = a.as_ref().unwrap();
        let body: serde_json::Value = serde_json::from_slice(&a.value.raw_json()).unwrap();
        assert_eq!(body, expected);
    }
    assert_eq!(sim.sim().served("/users/u1"), 1);
    assert_eq!(
        e.client.fetch_user_with_status(&u1).await.unwrap().cache,
        CacheStatus::Hit
    );
    assert_eq!(sim.sim().served_total(), 1);
    assert_eq!(e.limiter.stats().admitted, 1);
}

#[tokio::test]
async fn a_caller_that_gives_up_does_not_fail_the_others() {
    let sim = sim(Faults {
        latency: Some("100ms".into()),
        ..Faults::default()
    })
    .await;
    let e = edge(&sim, Clock::tokio(), Settings::default());
    let u1 = id("u1");
    let mut first = Box::pin(e.client.fetch_user(&u1));
    assert!(
        (&mut first).now_or_never().is_none(),
        "the fill is in flight"
    );
    let mut others: Vec<_> = (0..10)
        .map(|_| Box::pin(e.client.fetch_user(&u1)))
        .collect();
    for o in &mut others {
        assert!(o.now_or_never().is_none());
    }
    drop(first);
    for answer in join_all(others).await {
        assert_eq!(answer.unwrap().id(), u1);
    }
    assert_eq!(sim.sim().served("/users/u1"), 1);
    assert_eq!(
        e.client.fetch_user_with_status(&u1).await.unwrap().cache,
        CacheStatus::Hit
    );
    assert_eq!(sim.sim().served_total(), 1);
}

#[tokio::test]
async fn a_burst_of_three_times_the_budget_is_rate_limited_and_leaves_the_breaker_closed() {
    let sim = sim(Faults::default()).await;
    let settings = Settings {
        limit: RateLimitConfig::builder(10, Duration::from_secs(60))
            .build()
            .unwrap(),
        breaker: BreakerConfig::builder()
            .failure_threshold(1)
            .build()
            .expect("valid breaker settings"),
        ..Settings::default()
    };
    let e = edge(&sim, Clock::tokio(), settings);
    let ids: Vec<UserId> = (0..30).map(|n| id(&format!("user-{n}"))).collect();
    let answers = join_all(ids.iter().map(|i| e.client.fetch_user(i))).await;
    let ok = answers.iter().filter(|a| a.is_ok()).count();
    let limited: Vec<Duration> = answers
        .iter()
        .filter_map(|a| match a {
            Err(Error::RateLimited(RateLimited {
                retry_after,
                cause: RateLimitCause::Budget,
            })) => Some(*retry_after),
            _ => None,
        })
        .collect();
    assert_eq!((ok, limited.len()), (10, 20), "{answers:?}");
    assert!(limited
        .iter()
        .all(|r| *r > Duration::ZERO && *r <= Duration::from_secs(6)));
    assert_eq!(sim.sim().served_total(), 10);
    assert_eq!(e.breaker.state(), BreakerState::Closed);
    assert_eq!(e.breaker.stats().failures, 0);
}

#[tokio::test]
async fn paragons_429_stops_upstream_calls_until_its_retry_after_has_passed() {
    let sim = sim(Faults {
        always_429: Some(2),
        ..Faults::default()
    })
    .await;
    // The limiter's time is a manual clock: the pause is checked to the nanosecond
    // while the HTTP exchange runs on real time.
    let clock = Clock::manual();
    let settings = Settings {
        breaker: BreakerConfig::builder()
            .failure_threshold(1)
            .build()
            .expect("valid breaker settings"),
        ..Settings::default()
    };
    let e = edge(&sim, clock.clone(), settings);
    assert_eq!(
        e.client.fetch_user(&id("u1")).await.unwrap_err(),
        Error::UpstreamRateLimited {
            retry_after: secs(2)
        }
    );
    assert_eq!(sim.sim().served_total(), 1);
    assert_eq!(e.limiter.budget().await.paused_for, secs(2));

    let pause = |retry_after| {
        Error::RateLimited(RateLimited {
            retry_after,
            cause: RateLimitCause::UpstreamPause,
        })
    };
    for n in 2..5 {
        let err = e
            .client
            .fetch_user(&id(&format!("u{n}")))
            .await
            .unwrap_err();
        assert_eq!(err, pause(secs(2)));
    }
    sim.sim().set_faults(Faults::default()).unwrap();
    clock.advance(secs(2) - Duration::from_nanos(1));
    assert_eq!(
        e.client.fetch_user(&id("u2")).await.unwrap_err(),
        pause(Duration::from_nanos(1))
    );
    assert_eq!(
        sim.sim().served_total(),
        1,
        "no upstream call during the pause"
    );
    assert_eq!(
        e.breaker.state(),
        BreakerState::Closed,
        "a 429 is not a failure"
    );

    clock.advance(Duration::from_nanos(1));
    e.client.fetch_user(&id("u2")).await.unwrap();
    assert_eq!(sim.sim().served_total(), 2);
    let stats = e.limiter.stats();
    assert_eq!((stats.upstream_429, stats.rejected_pause), (1, 4));
}

#[tokio::test(start_paused = true)]
async fn paragons_429_pause_on_paused_tokio_time() {
    let sim = sim(Faults {
        always_429: Some(2),
        ..Faults::default()
    })
    .await;
    let e = edge(
        &sim,
        Clock::tokio(),
        Settings {
            timeout: Duration::from_secs(3600),
            ..Settings::default()
        },
    );
    assert!(matches!(
        e.client.fetch_user(&id("u1")).await,
        Err(Error::UpstreamRateLimited { .. })
    ));
    sim.sim().set_faults(Faults::default()).unwrap();
    let start = tokio::time::Instant::now();
    let mut rejected = 0;
    loop {
        match e.client.fetch_user(&id("u1")).await {
            Err(Error::RateLimited(r)) => {
                assert_eq!(r.cause, RateLimitCause::UpstreamPause);
                rejected += 1;
                tokio::time::advance(Duration::from_millis(250)).await;
            }
            Ok(_) => break,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(start.elapsed() >= secs(2), "{:?}", start.elapsed());
    assert_eq!(sim.sim().served_total(), 2);
    assert!(rejected >= 8, "{rejected}");
}

#[tokio::test]
async fn a_hit_uses_no_budget_and_does_not_touch_the_breaker() {
    let sim = sim(Faults::default()).await;
    let settings = Settings {
        limit: RateLimitConfig::builder(1, Duration::from_secs(60))
            .build()
            .unwrap(),
        ..Settings::default()
    };
    let e = edge(&sim, Clock::tokio(), settings);
    e.client.fetch_user(&id("u1")).await.unwrap();
    for _ in 0..10 {
        let f = e.client.fetch_user_with_status(&id("u1")).await.unwrap();
        assert_eq!(f.cache, CacheStatus::Hit);
    }
    assert_eq!(e.limiter.stats().admitted, 1);
    assert_eq!(e.breaker.stats().successes, 1);
    assert!(matches!(
        e.client.fetch_user(&id("u2")).await,
        Err(Error::RateLimited(_))
    ));
    assert_eq!(sim.sim().served_total(), 1);
    assert_eq!(e.cache.stats().hits, 10);
}

#[tokio::test]
async fn an_expired_entry_is_served_stale_while_paragon_is_down_or_the_breaker_is_open() {
    let sim = sim(Faults::default()).await;
    let clock = Clock::manual();
    let settings = Settings {
        cache: CacheConfig::builder(secs(10))
            .max_entries(100)
            .stale_if_error(secs(60))
            .build()
            .unwrap(),
        breaker: BreakerConfig::builder()
            .failure_threshold(1)
            .open_for(secs(3600))
            .build()
            .expect("valid breaker settings"),
        ..Settings::default()
    };
    let e = edge(&sim, clock.clone(), settings);
    let fresh = e.client.fetch_user(&id("u1")).await.unwrap();
    clock.advance(secs(10));
    sim.sim()
        .set_faults(Faults {
            outage: Some("1h".into()),
            ..Faults::default()
        })
        .unwrap();
    let stale = e.client.fetch_user_with_status(&id("u1")).await.unwrap();
    assert_eq!(stale.cache, CacheStatus::Stale);
    assert_eq!(stale.value.raw_json(), fresh.raw_json());
    assert_eq!(sim.sim().served_total(), 2);
    assert_eq!(e.breaker.state(), BreakerState::Open);

    // The breaker is open now: no upstream call, still the stale entry.
    let stale = e.client.fetch_user_with_status(&id("u1")).await.unwrap();
    assert_eq!(stale.cache, CacheStatus::Stale);
    assert_eq!(sim.sim().served_total(), 2);
    // An id never seen has nothing to fall back on.
    assert!(matches!(
        e.client.fetch_user(&id("u2")).await,
        Err(Error::CircuitOpen(_))
    ));
    // Past stale_if_error: the failure shows.
    clock.advance(secs(60));
    assert!(matches!(
        e.client.fetch_user(&id("u1")).await,
        Err(Error::CircuitOpen(_))
    ));
    assert_eq!(sim.sim().served_total(), 2);
}

#[tokio::test]
async fn upstream_failures_open_the_breaker_and_a_probe_closes_it() {
    let sim = sim(Faults {
        error_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let clock = Clock::manual();
    let e = edge(&sim, clock.clone(), Settings::default());
    for n in 0..5 {
        assert_eq!(
            e.client
                .fetch_user(&id(&format!("u{n}")))
                .await
                .unwrap_err(),
            Error::UpstreamStatus { status: 500 }
        );
    }
    assert_eq!(e.breaker.state(), BreakerState::Open);
    assert!(matches!(
        e.client.fetch_user(&id("u9")).await,
        Err(Error::CircuitOpen(_))
    ));
    assert_eq!(sim.sim().served_total(), 5);
    // Failures are never cached: u0 goes upstream again once the breaker allows it.
    sim.sim().set_faults(Faults::default()).unwrap();
    clock.advance(secs(60));
    e.client.fetch_user(&id("u0")).await.unwrap();
    assert_eq!(e.breaker.state(), BreakerState::Closed);
    assert_eq!(sim.sim().served("/users/u0"), 2);
}

#[tokio::test]
async fn timeouts_count_as_failures() {
    let sim = sim(Faults {
        latency: Some("5s".into()),
        ..Faults::default()
    })
    .await;
    let settings = Settings {
        breaker: BreakerConfig::builder()
            .failure_threshold(2)
            .build()
            .expect("valid breaker settings"),
        timeout: Duration::from_millis(200),
        ..Settings::default()
    };
    let e = edge(&sim, Clock::tokio(), settings);
    for n in 0..2 {
        let err = e
            .client
            .fetch_user(&id(&format!("u{n}")))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    }
    assert_eq!(e.breaker.state(), BreakerState::Open);
    assert!(matches!(
        e.client.fetch_user(&id("u3")).await,
        Err(Error::CircuitOpen(_))
    ));
    assert_eq!(sim.sim().served_total(), 2);
}

#[tokio::test]
async fn not_found_never_opens_the_breaker_and_is_cached_only_with_negative_ttl() {
    let sim = sim(Faults::default()).await;
    let settings = Settings {
        breaker: BreakerConfig::builder()
            .failure_threshold(1)
            .build()
            .expect("valid breaker settings"),
        ..Settings::default()
    };
    let e = edge(&sim, Clock::tokio(), settings);
    for _ in 0..3 {
        assert_eq!(
            e.client.fetch_user(&id("missing-1")).await.unwrap_err(),
            Error::NotFound
        );
    }
    assert_eq!(sim.sim().served("/users/missing-1"), 3);
    assert_eq!(e.breaker.state(), BreakerState::Closed);

    let settings = Settings {
        cache: CacheConfig::builder(secs(300))
            .max_entries(100)
            .negative_ttl(secs(30))
            .build()
            .unwrap(),
        ..Settings::default()
    };
    let e = edge(&sim, Clock::tokio(), settings);
    for _ in 0..3 {
        assert_eq!(
            e.client.fetch_user(&id("missing-2")).await.unwrap_err(),
            Error::NotFound
        );
    }
    assert_eq!(sim.sim().served("/users/missing-2"), 1);
}

#[tokio::test]
async fn malformed_answers_are_failures_and_never_cached() {
    let sim = sim(Faults {
        malformed_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let settings = Settings {
        breaker: BreakerConfig::builder()
            .failure_threshold(3)
            .build()
            .expect("valid breaker settings"),
        ..Settings::default()
    };
    let e = edge(&sim, Clock::tokio(), settings);
    for _ in 0..2 {
        assert!(matches!(
            e.client.fetch_user(&id("u1")).await,
            Err(Error::Malformed(_))
        ));
    }
    assert_eq!(sim.sim().served("/users/u1"), 2);
    assert_eq!(e.breaker.stats().consecutive_failures, 2);
    assert_eq!(e.cache.stats().entries, 0);
}
