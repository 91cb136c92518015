//! The cache layer against counting upstreams: every test fails if its protection is
//! removed (the inner call counts would change).

mod common;

use std::time::Duration;

use common::*;
use futures_util::FutureExt;
use paragon_layers::cache::{Cache, CacheConfig, CacheHandle, CacheLayer, CacheStatus};
use paragon_layers::Clock;
use tower::{Layer, Service, ServiceExt};

type Svc<S> = Cache<S, Get, Doc, Fail>;

/// Settings fresh for `ttl` with `max_entries`, and no byte bound that binds.
fn settings(ttl: Duration, max_entries: usize) -> CacheConfig {
    CacheConfig::builder(ttl)
        .max_entries(max_entries)
        .build()
        .unwrap()
}

fn cache<S>(config: CacheConfig, clock: Clock, inner: S) -> (Svc<S>, CacheHandle<Get, Doc, Fail>) {
    let layer = CacheLayer::<Get, Doc, Fail>::new(config, clock);
    (layer.layer(inner), layer.handle())
}

async fn get<S>(svc: &mut Svc<S>, n: u32) -> Answer
where
    Svc<S>: tower::Service<Get, Response = Doc, Error = Fail>,
{
    svc.ready().await.unwrap().call(Get::new(n)).await
}

fn doc(body: &str, status: CacheStatus) -> Answer {
    Ok(Doc {
        body: body.into(),
        status,
    })
}

#[tokio::test]
async fn a_hit_after_a_miss_does_not_call_the_upstream() {
    let up = Scripted::new();
    let (mut svc, handle) = cache(settings(secs(60), 100), Clock::manual(), up.clone());
    assert_eq!(get(&mut svc, 1).await, doc("doc 1 v1", CacheStatus::Miss));
    assert_eq!(get(&mut svc, 1).await, doc("doc 1 v1", CacheStatus::Hit));
    assert_eq!(get(&mut svc, 1).await, doc("doc 1 v1", CacheStatus::Hit));
    assert_eq!(up.calls(), 1);
    // Another key is its own miss.
    assert_eq!(get(&mut svc, 2).await, doc("doc 2 v2", CacheStatus::Miss));
    assert_eq!(up.calls(), 2);
    let stats = handle.stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (2, 2, 2));
}

#[tokio::test]
async fn an_entry_expires_exactly_at_its_ttl() {
    let clock = Clock::manual();
    let up = Scripted::new();
    let (mut svc, _) = cache(settings(secs(10), 100), clock.clone(), up.clone());
    assert_eq!(get(&mut svc, 1).await, doc("doc 1 v1", CacheStatus::Miss));
    clock.advance(secs(10) - Duration::from_nanos(1));
    assert_eq!(get(&mut svc, 1).await, doc("doc 1 v1", CacheStatus::Hit));
    assert_eq!(up.calls(), 1);
    clock.advance(Duration::from_nanos(1));
    assert_eq!(get(&mut svc, 1).await, doc("doc 1 v2", CacheStatus::Miss));
    assert_eq!(up.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_entry_expires_exactly_at_its_ttl_on_paused_tokio_time() {
    let up = Scripted::new();
    let (mut svc, _) = cache(settings(secs(10), 100), Clock::tokio(), up.clone());
    assert_eq!(get(&mut svc, 1).await, doc("doc 1 v1", CacheStatus::Miss));
    tokio::time::advance(secs(10) - Duration::from_nanos(1)).await;
    assert_eq!(get(&mut svc, 1).await, doc("doc 1 v1", CacheStatus::Hit));
    tokio::time::advance(Duration::from_nanos(1)).await;
    assert_eq!(get(&mut svc, 1).await, doc("doc 1 v2", CacheStatus::Miss));
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn a_stale_entry_is_served_when_the_refill_fails_within_stale_if_error() {
    let clock = Clock::manual();
    let up = Scripted::new();
    let config = CacheConfig::builder(secs(10))
        .max_entries(100)
        .stale_if_error(secs(5))
        .build()
        .unwrap();
    let (mut svc, handle) = cache(config, clock.clone(), up.clone());
    assert_eq!(get(&mut svc, 1).await, doc("doc 1 v1", CacheStatus::Miss));

    up.fail(Fail::Upstream);
    clock.advance(secs(10));
    assert_eq!(get(&mut svc, 1).await, doc("doc 1 v1", CacheStatus::Stale));
    assert_eq!(
        up.calls(),
        2,
        "a stale entry is only served after the refill was tried"
    );

    // Errors that are not "the upstream could not answer" never get a stale answer.
    up.fail(Fail::BadRequest);
    assert_eq!(get(&mut svc, 1).await, Err(Fail::BadRequest));

    // Layer rejections below the cache are "could not answer" too.
    up.fail(Fail::Throttled(secs(1)));
    clock.advance(secs(5) - Duration::from_nanos(1));
    assert_eq!(get(&mut svc, 1).await, doc("doc 1 v1", CacheStatus::Stale));

    clock.advance(Duration::from_nanos(1));
    up.fail(Fail::Upstream);
    assert_eq!(
        get(&mut svc, 1).await,
        Err(Fail::Upstream),
        "not at exactly ttl + stale_if_error"
    );
    assert_eq!(handle.stats().stale, 2);
    assert_eq!(up.calls(), 5);
}

#[tokio::test]
async fn a_not_found_answer_ends_stale_serving_of_that_key() {
    let clock = Clock::manual();
    let up = Scripted::new();
    let config = CacheConfig::builder(secs(10))
        .max_entries(100)
        .stale_if_error(secs(60))
        .build()
        .unwrap();
    let (mut svc, _) = cache(config, clock.clone(), up.clone());
    get(&mut svc, 1).await.unwrap();
    clock.advance(secs(10));
    up.fail(Fail::NotFound);
    assert_eq!(get(&mut svc, 1).await, Err(Fail::NotFound));
    up.fail(Fail::Upstream);
    assert_eq!(
        get(&mut svc, 1).await,
        Err(Fail::Upstream),
        "a deleted user must not come back as stale"
    );
}

#[tokio::test]
async fn a_later_successful_refill_replaces_a_stale_entry() {
    let clock = Clock::manual();
    let up = Scripted::new();
    let config = CacheConfig::builder(secs(10))
        .max_entries(100)
        .stale_if_error(secs(60))
        .build()
        .unwrap();
    let (mut svc, _) = cache(config, clock.clone(), up.clone());
    get(&mut svc, 1).await.unwrap();
    clock.advance(secs(10));
    up.fail(Fail::Upstream);
    assert_eq!(get(&mut svc, 1).await.unwrap().status, CacheStatus::Stale);
    up.succeed();
    assert_eq!(get(&mut svc, 1).await, doc("doc 1 v3", CacheStatus::Miss));
    assert_eq!(get(&mut svc, 1).await, doc("doc 1 v3", CacheStatus::Hit));
}

#[tokio::test]
async fn without_stale_if_error_an_expired_entry_is_never_served() {
    let clock = Clock::manual();
    let up = Scripted::new();
    let (mut svc, _) = cache(settings(secs(10), 100), clock.clone(), up.clone());
    get(&mut svc, 1).await.unwrap();
    clock.advance(secs(10));
    up.fail(Fail::Upstream);
    assert_eq!(get(&mut svc, 1).await, Err(Fail::Upstream));
}

#[tokio::test]
async fn a_failure_is_never_cached() {
    let up = Scripted::new();
    let config = CacheConfig::builder(secs(60))
        .max_entries(100)
        .negative_ttl(secs(60))
        .stale_if_error(secs(60))
        .build()
        .unwrap();
    let (mut svc, handle) = cache(config, Clock::manual(), up.clone());
    for e in [Fail::Upstream, Fail::BadRequest, Fail::Throttled(secs(1))] {
        up.fail(e.clone());
        let before = up.calls();
        assert_eq!(get(&mut svc, 1).await, Err(e.clone()));
        assert_eq!(get(&mut svc, 1).await, Err(e.clone()));
        assert_eq!(up.calls(), before + 2, "{e:?} was cached");
    }
    assert_eq!(handle.stats().entries, 0);
    up.succeed();
    assert_eq!(get(&mut svc, 1).await.unwrap().status, CacheStatus::Miss);
    assert_eq!(get(&mut svc, 1).await.unwrap().status, CacheStatus::Hit);
}

#[tokio::test]
async fn a_failed_fill_does_not_evict_a_cached_entry() {
    let up = Scripted::new();
    let (mut svc, handle) = cache(settings(secs(60), 1), Clock::manual(), up.clone());
    assert_eq!(get(&mut svc, 1).await.unwrap().status, CacheStatus::Miss);
    up.fail(Fail::Upstream);
    assert_eq!(get(&mut svc, 2).await, Err(Fail::Upstream));
    assert_eq!(handle.stats().entries, 1);
    assert_eq!(get(&mut svc, 1).await.unwrap().status, CacheStatus::Hit);
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn not_found_is_cached_for_negative_ttl_only_when_it_is_set() {
    let clock = Clock::manual();
    let up = Scripted::new();
    up.fail(Fail::NotFound);
    let config = CacheConfig::builder(secs(300))
        .max_entries(100)
        .negative_ttl(secs(30))
        .stale_if_error(secs(600))
        .build()
        .unwrap();
    let (mut svc, _) = cache(config, clock.clone(), up.clone());
    assert_eq!(get(&mut svc, 1).await, Err(Fail::NotFound));
    assert_eq!(get(&mut svc, 1).await, Err(Fail::NotFound));
    assert_eq!(up.calls(), 1);
    clock.advance(secs(30) - Duration::from_nanos(1));
    assert_eq!(get(&mut svc, 1).await, Err(Fail::NotFound));
    assert_eq!(up.calls(), 1);
    clock.advance(Duration::from_nanos(1));
    up.succeed();
    assert_eq!(
        get(&mut svc, 1).await.unwrap().status,
        CacheStatus::Miss,
        "negative_ttl, not ttl"
    );
    assert_eq!(up.calls(), 2);

    // A negative entry is never served as stale in place of a value.
    up.fail(Fail::NotFound);
    clock.advance(secs(300));
    assert_eq!(get(&mut svc, 1).await, Err(Fail::NotFound));
    up.fail(Fail::Upstream);
    clock.advance(secs(31));
    assert_eq!(get(&mut svc, 1).await, Err(Fail::Upstream));

    // negative_ttl = 0: every 404 goes upstream.
    let up = Scripted::new();
    up.fail(Fail::NotFound);
    let (mut svc, handle) = cache(settings(secs(300), 100), Clock::manual(), up.clone());
    for _ in 0..3 {
        assert_eq!(get(&mut svc, 1).await, Err(Fail::NotFound));
    }
    assert_eq!(up.calls(), 3);
    assert_eq!(handle.stats().entries, 0);
}

/// No runtime here: a fill whose inner service answers at once is answered in the first
/// poll, with no task spawned (a spawn would panic outside a runtime).
#[test]
fn a_fill_the_inner_service_answers_at_once_needs_no_task() {
    let up = Scripted::new();
    let (mut svc, handle) = cache(settings(secs(60), 100), Clock::manual(), up.clone());
    for (n, status) in [
        (1, CacheStatus::Miss),
        (1, CacheStatus::Hit),
        (2, CacheStatus::Miss),
    ] {
        let answer = svc.call(Get::new(n)).now_or_never();
        assert_eq!(
            answer.expect("answered at the first poll").unwrap().status,
            status
        );
    }
    assert_eq!(up.calls(), 2);
    assert_eq!(handle.stats().entries, 2);
}

#[tokio::test]
async fn a_hundred_concurrent_misses_on_one_key_make_one_upstream_call() {
    let (up, mut rx) = Controlled::new();
    let (mut svc, handle) = cache(settings(secs(60), 100), Clock::manual(), up.clone());
    // All hundred calls are made before the upstream answers.
    let mut waiting = Vec::new();
    for _ in 0..100 {
        waiting.push(svc.ready().await.unwrap().call(Get::new(7)));
    }
    tokio::task::yield_now().await;
    let mut pending = drain(&mut rx);
    assert_eq!(pending.len(), 1);
    pending.pop().unwrap().answer(Ok(Doc::new("seven")));
    let answers = futures_util::future::join_all(waiting).await;
    assert!(
        answers
            .iter()
            .all(|a| a.as_ref().is_ok_and(|d| d.body == "seven")),
        "{answers:?}"
    );
    assert_eq!(up.calls(), 1);
    assert_eq!(handle.stats().misses, 1);
    assert_eq!(get(&mut svc, 7).await.unwrap().status, CacheStatus::Hit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_from_many_tasks_make_one_upstream_call() {
    let up = Scripted::new();
    up.delay(ms(200));
    let (svc, _) = cache(settings(secs(60), 100), Clock::tokio(), up.clone());
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let svc = svc.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                svc.oneshot(Get::new(3)).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().body, "doc 3 v1");
    }
    assert_eq!(up.calls(), 1);
}

#[tokio::test]
async fn a_caller_that_gives_up_does_not_cancel_the_fill_for_the_others() {
    let (up, mut rx) = Controlled::new();
    let (mut svc, _) = cache(settings(secs(60), 100), Clock::manual(), up.clone());
    let mut first = svc.ready().await.unwrap().call(Get::new(1));
    assert!((&mut first).now_or_never().is_none());
    let second = svc.ready().await.unwrap().call(Get::new(1));
    let third = svc.ready().await.unwrap().call(Get::new(1));
    drop(first);
    tokio::task::yield_now().await;
    let mut pending = drain(&mut rx);
    assert_eq!(pending.len(), 1);
    pending.pop().unwrap().ok();
    assert_eq!(second.await.unwrap().body, "doc 1");
    assert_eq!(third.await.unwrap().body, "doc 1");
    assert_eq!(get(&mut svc, 1).await.unwrap().status, CacheStatus::Hit);
    assert_eq!(up.calls(), 1);
}

#[tokio::test]
async fn a_fill_whose_only_caller_gave_up_still_completes_and_is_cached() {
    let (up, mut rx) = Controlled::new();
    let (mut svc, handle) = cache(settings(secs(60), 100), Clock::manual(), up.clone());
    let only = svc.ready().await.unwrap().call(Get::new(1));
    drop(only);
    let pending = rx.recv().await.expect("the fill reached the upstream");
    pending.ok();
    // The fill runs on its own task; wait for it to store without sleeping.
    while handle.stats().entries == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(get(&mut svc, 1).await, doc("doc 1", CacheStatus::Hit));
    assert_eq!(up.calls(), 1);
}

#[tokio::test]
async fn an_aborted_fill_tells_its_waiters_and_the_next_caller_starts_a_new_one() {
    // The upstream future is dropped without an answer (its task died): waiters get
    // FillAborted, not a hang, and the key is not stuck.
    let (up, mut rx) = Controlled::new();
    let (mut svc, _) = cache(settings(secs(60), 100), Clock::manual(), up.clone());
    let waiter = svc.ready().await.unwrap().call(Get::new(1));
    let pending = rx.recv().await.unwrap();
    drop(pending); // the upstream future resolves to Fail::Aborted
    assert_eq!(waiter.await, Err(Fail::Aborted));
    let again = svc.ready().await.unwrap().call(Get::new(1));
    rx.recv().await.unwrap().ok();
    assert_eq!(again.await.unwrap().status, CacheStatus::Miss);
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn max_entries_bounds_the_table() {
    for max in [1usize, 10, 100, 1000] {
        let up = Scripted::new();
        let (mut svc, handle) = cache(settings(secs(60), max), Clock::manual(), up.clone());
        for n in 0..(max as u32 * 10) {
            get(&mut svc, n).await.unwrap();
            let entries = handle.stats().entries;
            assert!(
                entries <= max,
                "max_entries {max}: {entries} entries after key {n}"
            );
        }
        assert!(handle.stats().entries > 0);
        // The newest key is always kept.
        let last = max as u32 * 10 - 1;
        assert_eq!(get(&mut svc, last).await.unwrap().status, CacheStatus::Hit);
    }
}

#[tokio::test]
async fn purge_drops_one_entry_and_purge_all_drops_every_entry() {
    let up = Scripted::new();
    let (mut svc, handle) = cache(settings(secs(60), 100), Clock::manual(), up.clone());
    for n in 1..=3 {
        get(&mut svc, n).await.unwrap();
    }
    assert_eq!(handle.stats().entries, 3);
    assert_eq!(handle.purge(&Get::new(1)).await.local, 1);
    assert_eq!(handle.purge(&Get::new(1)).await.local, 0);
    assert_eq!(handle.purge(&Get::new(99)).await.local, 0);
    assert_eq!(handle.stats().entries, 2);
    assert_eq!(get(&mut svc, 1).await.unwrap().status, CacheStatus::Miss);
    assert_eq!(get(&mut svc, 2).await.unwrap().status, CacheStatus::Hit);
    assert_eq!(up.calls(), 4);

    let purged = handle.purge_all().await;
    assert_eq!((purged.local, purged.shared), (3, None));
    assert_eq!(handle.stats().entries, 0);
    for n in 1..=3 {
        assert_eq!(get(&mut svc, n).await.unwrap().status, CacheStatus::Miss);
    }
    assert_eq!(up.calls(), 7);
}

#[tokio::test]
async fn purge_all_during_a_fill_keeps_the_fill_for_its_waiters() {
    let (up, mut rx) = Controlled::new();
    let (mut svc, handle) = cache(settings(secs(60), 100), Clock::manual(), up.clone());
    let waiter = svc.ready().await.unwrap().call(Get::new(1));
    let pending = rx.recv().await.unwrap();
    handle.purge_all().await;
    // A caller arriving after the purge still joins the fill in progress.
    let late = svc.ready().await.unwrap().call(Get::new(1));
    pending.ok();
    assert_eq!(waiter.await.unwrap().body, "doc 1");
    assert_eq!(late.await.unwrap().body, "doc 1");
    assert_eq!(up.calls(), 1);
}

#[tokio::test]
async fn every_service_made_by_one_layer_shares_one_table() {
    let up = Scripted::new();
    let layer = CacheLayer::<Get, Doc, Fail>::new(settings(secs(60), 100), Clock::manual());
    let mut a = layer.layer(up.clone());
    let mut b = layer.layer(up.clone());
    assert_eq!(get(&mut a, 1).await.unwrap().status, CacheStatus::Miss);
    assert_eq!(get(&mut b, 1).await.unwrap().status, CacheStatus::Hit);
    assert_eq!(up.calls(), 1);
}

#[tokio::test]
async fn a_type_erased_inner_service_serves_through_the_cache() {
    // The cache holds its inner service behind an Arc, so an erased inner service is the
    // Sync kind: BoxCloneSyncService.
    let up = Scripted::new();
    let inner = tower::util::BoxCloneSyncService::new(up.clone());
    let (mut svc, _) = cache(settings(secs(60), 100), Clock::manual(), inner);
    let mut clone = svc.clone();
    assert_eq!(get(&mut svc, 1).await, doc("doc 1 v1", CacheStatus::Miss));
    assert_eq!(get(&mut clone, 1).await, doc("doc 1 v1", CacheStatus::Hit));
    assert_eq!(up.calls(), 1);
}

#[tokio::test]
async fn max_bytes_bounds_the_table_with_large_answers_and_they_stay_correct() {
    // 200 KB answers against a 1 MB bound: at most five fit. Key 999 answers 1.2 MB,
    // more than the whole bound: it is answered every time but never cached.
    const MAX_BYTES: u64 = 1_000_000;
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let up = tower::service_fn(move |Get(n, ..): Get| {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let size = if n == 999 { 1_200_000 } else { 200_000 };
        let mut body = format!("doc {n} ");
        body.extend(std::iter::repeat_n('x', size - body.len()));
        std::future::ready(Ok::<_, Fail>(Doc::new(body)))
    });
    let (mut svc, handle) = cache(
        CacheConfig::builder(secs(60))
            .max_entries(1000)
            .max_bytes(MAX_BYTES)
            .build()
            .unwrap(),
        Clock::manual(),
        up,
    );
    let check = |n: u32, answer: Answer| {
        let doc = answer.unwrap();
        let size = if n == 999 { 1_200_000 } else { 200_000 };
        assert!(doc.body.starts_with(&format!("doc {n} ")), "key {n}");
        assert_eq!(doc.body.len(), size, "key {n}");
        doc.status
    };
    for round in 0..3 {
        for n in 0..40 {
            let answer = get(&mut svc, n).await;
            check(n, answer);
            let stats = handle.stats();
            assert!(
                stats.bytes <= MAX_BYTES,
                "round {round}, key {n}: {stats:?}"
            );
            assert_eq!(stats.bytes, stats.entries as u64 * 200_000, "{stats:?}");
        }
    }
    // The table was full by bytes, not by entries.
    assert_eq!(handle.stats().entries, 5);
    // The last key stored is a hit; one long evicted is a miss that is answered again.
    assert_eq!(check(39, get(&mut svc, 39).await), CacheStatus::Hit);
    assert_eq!(check(0, get(&mut svc, 0).await), CacheStatus::Miss);
    // Too large for the bound: answered, not cached, nothing evicted for it.
    let before = handle.stats();
    let n = calls.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..2 {
        assert_eq!(check(999, get(&mut svc, 999).await), CacheStatus::Miss);
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), n + 2);
    let after = handle.stats();
    assert_eq!((after.entries, after.bytes), (before.entries, before.bytes));
}

fn swr(ttl: Duration, window: Duration, stale_if_error: Duration) -> CacheConfig {
    CacheConfig::builder(ttl)
        .max_entries(1000)
        .stale_while_revalidate(window)
        .stale_if_error(stale_if_error)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn past_its_ttl_an_entry_is_answered_at_once_while_one_background_refresh_runs() {
    let (up, mut rx) = Controlled::new();
    let (mut svc, handle) = cache(swr(secs(10), secs(5), secs(60)), Clock::tokio(), up.clone());
    let first = svc.ready().await.unwrap().call(Get::new(1));
    let pending = tokio::spawn(first);
    tokio::task::yield_now().await;
    drain(&mut rx).remove(0).ok();
    assert_eq!(pending.await.unwrap(), doc("doc 1", CacheStatus::Miss));

    tokio::time::advance(secs(10)).await;
    // A hundred callers past the TTL: each answered at once from the old entry...
    for _ in 0..100 {
        let answer = svc.ready().await.unwrap().call(Get::new(1)).now_or_never();
        assert_eq!(answer, Some(doc("doc 1", CacheStatus::Updating)));
    }
    tokio::task::yield_now().await;
    // ...and exactly one refresh went upstream, marked as a background call.
    let refreshes = drain(&mut rx);
    assert_eq!((refreshes.len(), up.calls()), (1, 2));
    assert_eq!(refreshes[0].req.2 .0, paragon_layers::Priority::Background);
    let stats = handle.stats();
    assert_eq!((stats.updating, stats.refreshes, stats.misses), (100, 1, 1));

    // Its answer replaces the entry: fresh again, a hit.
    refreshes
        .into_iter()
        .next()
        .unwrap()
        .answer(Ok(Doc::new("doc 1 new")));
    tokio::task::yield_now().await;
    assert_eq!(get(&mut svc, 1).await, doc("doc 1 new", CacheStatus::Hit));
    assert_eq!(up.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_refresh_that_fails_keeps_the_old_entry_for_stale_if_error() {
    let up = Scripted::new();
    let (mut svc, _) = cache(swr(secs(10), secs(5), secs(60)), Clock::tokio(), up.clone());
    assert_eq!(get(&mut svc, 1).await, doc("doc 1 v1", CacheStatus::Miss));
    up.fail(Fail::Upstream);
    tokio::time::advance(secs(10)).await;
    assert_eq!(
        get(&mut svc, 1).await,
        doc("doc 1 v1", CacheStatus::Updating)
    );
    tokio::task::yield_now().await;
    assert_eq!(up.calls(), 2, "the refresh was sent");
    // Past the refresh window the failed refresh left the entry: served stale.
    tokio::time::advance(secs(5)).await;
    assert_eq!(get(&mut svc, 1).await, doc("doc 1 v1", CacheStatus::Stale));
    // Until stale_if_error ends.
    tokio::time::advance(secs(55)).await;
    assert_eq!(get(&mut svc, 1).await, Err(Fail::Upstream));
}

#[tokio::test(start_paused = true)]
async fn without_stale_while_revalidate_the_caller_past_the_ttl_waits_for_the_upstream() {
    let (up, mut rx) = Controlled::new();
    let (mut svc, _) = cache(
        swr(secs(10), Duration::ZERO, secs(60)),
        Clock::tokio(),
        up.clone(),
    );
    let first = tokio::spawn(svc.ready().await.unwrap().call(Get::new(1)));
    tokio::task::yield_now().await;
    drain(&mut rx).remove(0).ok();
    first.await.unwrap().unwrap();
    tokio::time::advance(secs(10)).await;
    let mut waiting = svc.ready().await.unwrap().call(Get::new(1));
    assert!((&mut waiting).now_or_never().is_none(), "the caller waits");
    let refill = tokio::spawn(waiting);
    tokio::task::yield_now().await;
    drain(&mut rx).remove(0).answer(Ok(Doc::new("doc 1 new")));
    assert_eq!(refill.await.unwrap(), doc("doc 1 new", CacheStatus::Miss));
}

#[tokio::test(start_paused = true)]
async fn with_ttl_jitter_a_set_stored_at_once_expires_spread_over_its_share_of_the_ttl() {
    let clock = Clock::tokio();
    let up = Scripted::new();
    let config = CacheConfig::builder(secs(300))
        .max_entries(10_000)
        .ttl_jitter(0.1)
        .build()
        .unwrap();
    let (mut svc, handle) = cache(config, clock, up.clone());
    for n in 0..1000 {
        get(&mut svc, n).await.unwrap();
    }
    // Step through the last 10 % of the TTL and note when each entry stops being fresh.
    let mut expired_at = Vec::new();
    let mut left: Vec<u32> = (0..1000).collect();
    let step = secs(1);
    tokio::time::advance(secs(269)).await;
    for s in 269..=300u64 {
        left.retain(|n| {
            let fresh = handle.is_fresh(&Get::new(*n));
            if !fresh {
                expired_at.push(s);
            }
            fresh
        });
        tokio::time::advance(step).await;
    }
    assert!(left.is_empty(), "every entry expired by its TTL");
    let (first, last) = (expired_at[0], *expired_at.last().unwrap());
    assert!(first >= 270, "none before ttl × 0.9: {first}");
    assert!(
        last - first >= 27,
        "spread over ≥ 9 % of the TTL: {first}..{last}"
    );
    // Not bunched either: no second holds more than a tenth of the set.
    let most = (first..=last)
        .map(|s| expired_at.iter().filter(|e| **e == s).count())
        .max()
        .unwrap();
    assert!(most < 100, "{most} entries expired in one second");
}
