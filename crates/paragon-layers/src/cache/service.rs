use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{BoxFuture, Either, Ready};
use tokio::sync::watch;
use tower::{Service, ServiceExt};

use super::freshness::{Freshness, Lifetime};
use super::layer::CacheConfig;
use super::store::{Entry, Table};
use super::{CacheKey, CachePolicy, CacheStatus, CacheStatusSink, FillAborted};
use crate::Clock;

/// What an entry holds: an answer, or a cached "does not exist".
#[derive(Clone)]
pub(crate) enum Stored<R, E> {
    Value(R),
    Negative(E),
}

/// The result a fill hands to everyone waiting on it.
type Outcome<R, E> = Result<(R, CacheStatus), E>;
/// A fill in progress: waiters subscribe to it.
type Flight<R, E> = Arc<watch::Sender<Option<Outcome<R, E>>>>;

pub(crate) struct Shared<K, R, E> {
    table: Table<K, Stored<R, E>, Flight<R, E>>,
    config: CacheConfig,
    clock: Clock,
    misses: AtomicU64,
    stale: AtomicU64,
}

impl<K: std::hash::Hash + Eq + Clone, R: Clone, E: Clone> Shared<K, R, E> {
    pub(crate) fn new(config: CacheConfig, clock: Clock) -> Self {
        Shared {
            table: Table::new(config.max_entries.get()),
            config,
            clock,
            misses: AtomicU64::new(0),
            stale: AtomicU64::new(0),
        }
    }
}

/// The cache service; see the [module docs](super).
pub struct Cache<S, Req: CacheKey, R, E> {
    inner: S,
    shared: Arc<Shared<Req::Key, R, E>>,
    _req: PhantomData<fn(Req)>,
}

impl<S: Clone, Req: CacheKey, R, E> Clone for Cache<S, Req, R, E> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            _req: PhantomData,
        }
    }
}

impl<S, Req: CacheKey, R, E> Cache<S, Req, R, E> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<Req::Key, R, E>>) -> Self {
        Cache {
            inner,
            shared,
            _req: PhantomData,
        }
    }
}

fn answer<R: CacheStatusSink, E>(stored: Stored<R, E>, status: CacheStatus) -> Result<R, E> {
    match stored {
        Stored::Value(mut r) => {
            r.set_cache_status(status);
            Ok(r)
        }
        Stored::Negative(e) => Err(e),
    }
}

impl<S, Req, R, E> Service<Req> for Cache<S, Req, R, E>
where
    S: Service<Req, Response = R, Error = E> + Clone + Send + 'static,
    S::Future: Send,
    Req: CacheKey + Send + 'static,
    R: CacheStatusSink + Clone + Send + Sync + 'static,
    E: CachePolicy + From<FillAborted> + Clone + Send + Sync + 'static,
{
    type Response = R;
    type Error = E;
    type Future = Either<Ready<Result<R, E>>, BoxFuture<'static, Result<R, E>>>;

    /// Always ready: a hit needs nothing from the inner service, and a fill drives the
    /// inner service's readiness on its own task.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.shared;
        let now = shared.clock.now();
        let key = req.cache_key();
        let hash = shared.table.hash(&key);
        if let Some(stored) = shared.table.get_fresh(hash, &key, now) {
            return Either::Left(futures_util::future::ready(answer(
                stored,
                CacheStatus::Hit,
            )));
        }
        let key = key.into_owned();

        let mut shard = shared.table.write(hash);
        let slot = shard.get_or_insert(hash, &key, now);
        if let Some(entry) = &slot.entry {
            if entry.life.at(now) == Freshness::Fresh {
                // Filled between our read and write locks.
                let stored = entry.value.clone();
                drop(shard);
                return Either::Left(futures_util::future::ready(answer(
                    stored,
                    CacheStatus::Hit,
                )));
            }
        }
        let rx = match &slot.flight {
            Some(flight) => flight.subscribe(),
            None => {
                let (tx, rx) = watch::channel(None);
                let tx = Arc::new(tx);
                slot.flight = Some(tx.clone());
                drop(shard);
                shared.misses.fetch_add(1, Ordering::Relaxed);
                let fill = Fill {
                    shared: shared.clone(),
                    key,
                    hash,
                    tx: Some(tx),
                };
                let inner = self.inner.clone();
                tokio::spawn(fill.run(inner.oneshot(req)));
                rx
            }
        };
        Either::Right(Box::pin(wait(rx)))
    }
}

async fn wait<R: CacheStatusSink, E: From<FillAborted>>(
    mut rx: watch::Receiver<Option<Outcome<R, E>>>,
) -> Result<R, E>
where
    R: Clone,
    E: Clone,
{
    let outcome = match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone(),
        Err(_) => return Err(E::from(FillAborted)),
    };
    match outcome {
        Some(Ok((mut r, status))) => {
            r.set_cache_status(status);
            Ok(r)
        }
        Some(Err(e)) => Err(e),
        None => Err(E::from(FillAborted)),
    }
}

/// One fill in progress. If it is dropped before it completes (its task was cancelled or
/// panicked), it withdraws its flight so the next caller starts a new one and the waiters
/// are told.
struct Fill<K: std::hash::Hash + Eq + Clone, R: Clone, E: Clone> {
    shared: Arc<Shared<K, R, E>>,
    key: K,
    hash: u64,
    tx: Option<Flight<R, E>>,
}

impl<K, R, E> Fill<K, R, E>
where
    K: std::hash::Hash + Eq + Clone,
    R: Clone,
    E: CachePolicy + Clone,
{
    async fn run(mut self, call: impl std::future::Future<Output = Result<R, E>>) {
        let result = call.await;
        let outcome = self.store(result);
        if let Some(tx) = self.tx.take() {
            tx.send_replace(Some(outcome));
        }
    }

    /// Records the result of the fill and decides what the waiters get.
    fn store(&self, result: Result<R, E>) -> Outcome<R, E> {
        let shared = &self.shared;
        let config = &shared.config;
        let now = shared.clock.now();
        let mut shard = shared.table.write(self.hash);
        let slot = shard.get_or_insert(self.hash, &self.key, now);
        slot.flight = None;
        let outcome = match result {
            Ok(r) => {
                let life = Lifetime::new(now, config.ttl, config.stale_if_error);
                slot.entry = Some(Entry {
                    value: Stored::Value(r.clone()),
                    life,
                });
                Ok((r, CacheStatus::Miss))
            }
            Err(e) if e.is_negative() => {
                slot.entry = (config.negative_ttl > Duration::ZERO).then(|| Entry {
                    value: Stored::Negative(e.clone()),
                    life: Lifetime::new(now, config.negative_ttl, Duration::ZERO),
                });
                Err(e)
            }
            Err(e) => {
                let usable = match &slot.entry {
                    Some(Entry {
                        value: Stored::Value(r),
                        life,
                    }) if e.serve_stale() => (life.at(now) != Freshness::Dead).then(|| r.clone()),
                    _ => None,
                };
                if slot
                    .entry
                    .as_ref()
                    .is_some_and(|en| en.life.at(now) == Freshness::Dead)
                {
                    slot.entry = None;
                }
                match usable {
                    Some(r) => {
                        shared.stale.fetch_add(1, Ordering::Relaxed);
                        Ok((r, CacheStatus::Stale))
                    }
                    None => Err(e),
                }
            }
        };
        shard.remove_if_empty(self.hash, &self.key);
        outcome
    }
}

impl<K: std::hash::Hash + Eq + Clone, R: Clone, E: Clone> Drop for Fill<K, R, E> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let mut shard = self.shared.table.write(self.hash);
            if let Some(slot) = shard.get_mut(self.hash, &self.key) {
                if slot.flight.as_ref().is_some_and(|f| Arc::ptr_eq(f, &tx)) {
                    slot.flight = None;
                }
            }
            shard.remove_if_empty(self.hash, &self.key);
            // Dropping the last sender wakes the waiters with an error.
        }
    }
}

/// Counters of one cache.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CacheStats {
    /// Entries held now.
    pub entries: usize,
    /// Answers served from a fresh entry.
    pub hits: u64,
    /// Fills started.
    pub misses: u64,
    /// Stale answers served.
    pub stale: u64,
}

impl CacheStats {
    /// `hits / (hits + misses)`, or 0 before any request.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

/// Purges and reads statistics of a cache while it serves.
pub struct CacheHandle<K, R, E> {
    shared: Arc<Shared<K, R, E>>,
}

impl<K, R, E> Clone for CacheHandle<K, R, E> {
    fn clone(&self) -> Self {
        CacheHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone, R: Clone, E: Clone> CacheHandle<K, R, E> {
    pub(crate) fn new(shared: Arc<Shared<K, R, E>>) -> Self {
        CacheHandle { shared }
    }

    /// Drops every entry.
    pub fn purge_all(&self) {
        self.shared.table.clear();
    }

    /// Drops the entry of `key`; true if there was one.
    pub fn purge(&self, key: &K) -> bool {
        self.shared.table.remove(key)
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.shared.table.len(),
            hits: self.shared.table.hits(),
            misses: self.shared.misses.load(Ordering::Relaxed),
            stale: self.shared.stale.load(Ordering::Relaxed),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &CacheConfig {
        &self.shared.config
    }
}
