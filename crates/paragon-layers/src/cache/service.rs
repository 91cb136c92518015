//! The [`Cache`] service: hits from the table, one fill per key, and what a fill stores.
//!
//! A hit is answered without calling the inner service. A miss registers one fill per
//! key (callers of the same key wait on it, and it survives their cancellation): the
//! fill runs inline while its answer is immediate and on a task of its own once it has
//! to wait, then stores a value, a negative answer, or keeps a stale entry for
//! `stale_if_error`. With a shared tier, the fill first looks there and claims the key
//! for the fleet, so a fleet makes one upstream call per key.
//!
//! The freshness settings can change while the cache serves
//! ([`CacheHandle::reconfigure`]): they sit behind one atomic pointer (`arc-swap`) that
//! only misses and fills read (a hit reads the lifetime its entry was stored with), and
//! the entries are kept.

use std::marker::PhantomData;

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{BoxFuture, Either, Ready};
use futures_util::FutureExt;
use tokio::sync::Notify;
use tower::{Service, ServiceExt};
use tracing::Instrument;

use super::freshness::{jittered_ttl, mix, Freshness, Grace, Lifetime};
use super::layer::CacheConfig;
use super::store::{Entry, Lookup, Table};
use super::{
    CacheKey, CachePolicy, CacheStatus, CacheStatusSink, CacheWeight, FillAborted, NotModified,
    Revalidate,
};
use crate::{CallPriority, Clock, ConfigError, Priority};

use super::tier::{CachedValue as Stored, Claim, SharedTier, TierEntry, TierError};

/// How often a fill that waits for another instance's fill looks for its answer.
const FOLLOW_POLL: Duration = Duration::from_millis(20);

/// What the in-memory table holds for a key: an answer, or a cached "does not exist"
/// behind an `Arc`, so the value stays as small as `R` whatever the size of `E` (with a
/// two-word `R`, a slot is one cache line).
type Held<R, E> = Stored<R, Arc<E>>;

/// The result a fill hands to everyone waiting on it.
type Outcome<R, E> = Result<(R, CacheStatus), E>;
/// A fill in progress: every caller of its key waits on it.
type Flight<R, E> = Arc<FlightCell<R, E>>;

/// Where a fill leaves its answer for the callers waiting on it.
struct FlightCell<R, E> {
    /// `Some(outcome)`, or `None` when the fill ended without one.
    done: OnceLock<Option<Outcome<R, E>>>,
    notify: Notify,
}

impl<R, E> FlightCell<R, E> {
    fn new() -> Self {
        FlightCell {
            done: OnceLock::new(),
            notify: Notify::new(),
        }
    }

    /// Hands the answer (or `None`: no answer) to every waiter.
    fn finish(&self, outcome: Option<Outcome<R, E>>) {
        // Only the fill finishes its flight, once.
        let _ = self.done.set(outcome);
        self.notify.notify_waiters();
    }
}

/// The optional shared tier, and how long a fleet-wide fill claim is held.
pub(crate) struct TierLink<K, R, E> {
    pub(crate) tier: Arc<dyn SharedTier<K, R, E>>,
    pub(crate) hold: Duration,
}

pub(crate) struct Shared<K, R, E> {
    table: Table<K, Held<R, E>, Flight<R, E>>,
    config: ArcSwap<CacheConfig>,
    tier: Option<TierLink<K, R, E>>,
    clock: Clock,
    misses: AtomicU64,
    stale: AtomicU64,
    updating: AtomicU64,
    refreshes: AtomicU64,
    revalidated: AtomicU64,
}

impl<K, R, E> Shared<K, R, E>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    R: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(config: CacheConfig, clock: Clock, tier: Option<TierLink<K, R, E>>) -> Self {
        Shared {
            table: Table::new(config.max_entries.get(), config.max_bytes.get()),
            config: ArcSwap::from_pointee(config),
            tier,
            clock,
            misses: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            updating: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            revalidated: AtomicU64::new(0),
        }
    }
}

/// The cache service; see the [module docs](super).
///
/// The inner service sits behind an `Arc`: cloning the cache, as a tower caller does for
/// each request, costs two reference counts however deep the stack below it is; only a
/// fill clones the inner service. So the inner service must be `Sync` as well as `Clone`
/// and `Send`; to erase its type, use tower's `BoxCloneSyncService` rather than
/// `BoxCloneService`.
pub struct Cache<S, Req: CacheKey, R, E> {
    inner: Arc<S>,
    shared: Arc<Shared<Req::Key, R, E>>,
    _req: PhantomData<fn(Req)>,
}

impl<S, Req: CacheKey, R, E> Clone for Cache<S, Req, R, E> {
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
            inner: Arc::new(inner),
            shared,
            _req: PhantomData,
        }
    }
}

/// The answer of an entry; inlined, so that a hit's answer is built where its caller
/// keeps it instead of being copied out of a call.
#[inline]
fn answer<R: CacheStatusSink, E: Clone>(held: Held<R, E>, status: CacheStatus) -> Result<R, E> {
    match held {
        Stored::Value(mut r) => {
            r.set_cache_status(status);
            Ok(r)
        }
        Stored::Negative(e) => Err(negative(e)),
    }
}

/// The error of a cached "does not exist".
#[cold]
fn negative<E: Clone>(e: Arc<E>) -> E {
    Arc::unwrap_or_clone(e)
}

/// The bytes an entry keeps alive: its answer's weight; a "does not exist" weighs nothing.
fn weight<R: CacheWeight, E>(held: &Held<R, E>) -> usize {
    match held {
        Stored::Value(r) => r.cache_weight(),
        Stored::Negative(_) => 0,
    }
}

/// The entry to hold in the table for `stored`.
fn hold<R, E>(stored: Stored<R, E>) -> Held<R, E> {
    match stored {
        Stored::Value(r) => Stored::Value(r),
        Stored::Negative(e) => Stored::Negative(Arc::new(e)),
    }
}

impl<S, Req, R, E> Service<Req> for Cache<S, Req, R, E>
where
    S: Service<Req, Response = R, Error = E> + Clone + Send + Sync + 'static,
    S::Future: Send,
    Req: CacheKey + CallPriority + Revalidate<R> + Send + 'static,
    R: CacheStatusSink + CacheWeight + NotModified + Clone + Send + Sync + 'static,
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
        match shared.table.lookup(hash, &key, now) {
            Lookup::Hit(stored) => {
                return Either::Left(futures_util::future::ready(answer(
                    stored,
                    CacheStatus::Hit,
                )))
            }
            Lookup::Updating(stored) => {
                let key = key.into_owned();
                return Either::Left(futures_util::future::ready(
                    self.refresh_behind(stored, hash, key, req),
                ));
            }
            Lookup::Miss => {}
        }
        let key = key.into_owned();

        let mut flights = shared.table.flights(hash);
        if let Some(flight) = flights.get(hash, &key) {
            let flight = flight.clone();
            drop(flights);
            return Either::Right(Box::pin(wait(flight)));
        }
        // A fill stores its entry before it leaves the registry, so with the registry
        // locked and no fill in it, the entry is either there now or still to be made.
        if let Some(stored) = shared.table.get_fresh(hash, &key, now) {
            drop(flights);
            return Either::Left(futures_util::future::ready(answer(
                stored,
                CacheStatus::Hit,
            )));
        }
        let flight = Arc::new(FlightCell::new());
        flights.insert(hash, key.clone(), flight.clone());
        drop(flights);
        shared.misses.fetch_add(1, Ordering::Relaxed);
        let mut req = req;
        // An expired entry still held: ask the upstream whether it is still current.
        let cached = if shared.config.load().revalidate {
            match shared.table.peek(hash, &key) {
                Some(Stored::Value(r)) if req.revalidate_against(&r) => Some(r),
                _ => None,
            }
        } else {
            None
        };
        let fill = Fill {
            shared: shared.clone(),
            key,
            hash,
            tx: Some(flight.clone()),
            cached,
        };
        // A fill that the inner service answers at once (a shared-tier hit, an in-memory
        // upstream) is answered here, with no task and no wake-up.
        let mut run = Box::pin(fill.run(S::clone(&self.inner), req));
        if let Some(outcome) = run.as_mut().now_or_never() {
            return Either::Left(futures_util::future::ready(from_outcome(outcome)));
        }
        // Any other goes on on its own task, whose first poll registers that task's waker,
        // so a caller that gives up does not cancel the fill for the others. It logs in
        // the span of the request that started it.
        tokio::spawn(run.instrument(tracing::Span::current()));
        Either::Right(Box::pin(wait(flight)))
    }
}

impl<S, Req, R, E> Cache<S, Req, R, E>
where
    S: Service<Req, Response = R, Error = E> + Clone + Send + Sync + 'static,
    S::Future: Send,
    Req: CacheKey + CallPriority + Revalidate<R> + Send + 'static,
    R: CacheStatusSink + CacheWeight + NotModified + Clone + Send + Sync + 'static,
    E: CachePolicy + From<FillAborted> + Clone + Send + Sync + 'static,
{
    /// Answers an entry within its `stale_while_revalidate` window at once, and starts
    /// its background refresh unless one (or a fill) of the key runs already. The refresh
    /// is a fill like a miss's, on its own task, marked as a background call; it leaves
    /// the entry as it is when it fails, so it is still served stale within
    /// `stale_if_error`.
    #[cold]
    #[inline(never)]
    fn refresh_behind(
        &self,
        held: Held<R, E>,
        hash: u64,
        key: Req::Key,
        mut req: Req,
    ) -> Result<R, E> {
        let shared = &self.shared;
        shared.updating.fetch_add(1, Ordering::Relaxed);
        let mut flights = shared.table.flights(hash);
        if flights.get(hash, &key).is_none() {
            let flight = Arc::new(FlightCell::new());
            flights.insert(hash, key.clone(), flight.clone());
            drop(flights);
            shared.refreshes.fetch_add(1, Ordering::Relaxed);
            req.set_priority(Priority::Background);
            let cached = match &held {
                Stored::Value(r)
                    if shared.config.load().revalidate && req.revalidate_against(r) =>
                {
                    Some(r.clone())
                }
                _ => None,
            };
            let fill = Fill {
                shared: shared.clone(),
                key,
                hash,
                tx: Some(flight),
                cached,
            };
            tokio::spawn(
                fill.run(S::clone(&self.inner), req)
                    .instrument(tracing::Span::current()),
            );
        }
        answer(held, CacheStatus::Updating)
    }
}

fn from_outcome<R: CacheStatusSink, E>(outcome: Outcome<R, E>) -> Result<R, E> {
    outcome.map(|(mut r, status)| {
        r.set_cache_status(status);
        r
    })
}

async fn wait<R, E>(flight: Flight<R, E>) -> Result<R, E>
where
    R: CacheStatusSink + Clone,
    E: From<FillAborted> + Clone,
{
    loop {
        let notified = flight.notify.notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before the check, so a `finish` after the check wakes us.
        notified.as_mut().enable();
        match flight.done.get() {
            Some(Some(outcome)) => return from_outcome(outcome.clone()),
            Some(None) => return Err(E::from(FillAborted)),
            None => notified.await,
        }
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
    /// The answer the request was made conditional on, if it was.
    cached: Option<R>,
}

/// Where a fill's answer came from.
enum Filled<R, E> {
    /// The upstream was called (or failed); a stale entry of the shared tier may stand in.
    Upstream {
        result: Result<R, E>,
        tier_stale: Option<R>,
    },
    /// Another instance's fill, read from the shared tier.
    Shared {
        value: Stored<R, E>,
        fresh_for: Duration,
    },
}

impl<K, R, E> Fill<K, R, E>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    R: CacheWeight + NotModified + Clone + Send + Sync + 'static,
    E: CachePolicy + From<FillAborted> + Clone + Send + Sync + 'static,
{
    async fn run<S, Req>(mut self, inner: S, req: Req) -> Outcome<R, E>
    where
        S: Service<Req, Response = R, Error = E> + Send,
        S::Future: Send,
        Req: Send,
    {
        let config = self.shared.config.load_full();
        // Each entry its own TTL, so entries stored together expire spread out.
        let draw = mix(self.hash ^ self.shared.clock.now().0);
        let ttl = jittered_ttl(config.ttl, config.ttl_jitter, draw);
        let filled = match &self.shared.tier {
            None => Filled::Upstream {
                result: inner.oneshot(req).await,
                tier_stale: None,
            },
            Some(link) => {
                let cached = self.cached.as_ref();
                fill_through_tier(link, &self.shared, ttl, &self.key, cached, inner, req).await
            }
        };
        let outcome = self.store(filled, ttl);
        if let Some(tx) = self.tx.take() {
            self.withdraw(&tx);
            // Out of the registry, no one can start waiting on it any more; the others
            // holding it are waiting already.
            if Arc::strong_count(&tx) > 1 {
                tx.finish(Some(outcome.clone()));
            }
        }
        outcome
    }

    /// Records the result of the fill and decides what the waiters get.
    fn store(&self, filled: Filled<R, E>, ttl: Duration) -> Outcome<R, E> {
        let shared = &self.shared;
        let config = shared.config.load();
        let now = shared.clock.now();
        let (hash, key) = (self.hash, &self.key);
        let mut shard = shared.table.write(hash);
        // Only an entry to keep is stored: a failed fill neither adds one nor evicts
        // another entry to make room.
        let (result, tier_stale) = match filled {
            Filled::Shared { value, fresh_for } => {
                let fresh_until = now.after(fresh_for);
                let (outcome, grace) = match &value {
                    Stored::Value(r) => (Ok((r.clone(), CacheStatus::Hit)), config.grace()),
                    Stored::Negative(e) => (Err(e.clone()), Grace::NONE),
                };
                let life = Lifetime::until(fresh_until, grace);
                let value = hold(value);
                let w = weight(&value);
                shard.put(hash, key, Entry { value, life }, w, now);
                return outcome;
            }
            Filled::Upstream { result, tier_stale } => (result, tier_stale),
        };
        match result {
            Ok(r) if r.is_not_modified() => {
                // The entry the request was conditional on is still current: renewed.
                let Some(old) = self.cached.clone() else {
                    return Err(E::from(FillAborted));
                };
                shared.revalidated.fetch_add(1, Ordering::Relaxed);
                let life = Lifetime::new(now, ttl, config.grace());
                let value = Stored::Value(old.clone());
                shard.put(hash, key, Entry { value, life }, old.cache_weight(), now);
                Ok((old, CacheStatus::Revalidated))
            }
            Ok(r) => {
                let life = Lifetime::new(now, ttl, config.grace());
                let value = Stored::Value(r.clone());
                shard.put(hash, key, Entry { value, life }, r.cache_weight(), now);
                Ok((r, CacheStatus::Miss))
            }
            Err(e) if e.is_negative() => {
                if config.negative_ttl > Duration::ZERO {
                    let entry = Entry {
                        value: hold(Stored::Negative(e.clone())),
                        life: Lifetime::new(now, config.negative_ttl, Grace::NONE),
                    };
                    shard.put(hash, key, entry, 0, now);
                } else {
                    // "Does not exist" ends stale serving of whatever was cached.
                    shard.remove_entry(hash, key);
                }
                Err(e)
            }
            Err(e) => {
                let (usable, dead) = match shard.get(hash, key) {
                    Some(Entry {
                        value: Stored::Value(r),
                        life,
                    }) => {
                        let dead = life.at(now) == Freshness::Dead;
                        let usable = now < life.stale_until() && e.serve_stale();
                        (usable.then(|| r.clone()), dead)
                    }
                    Some(entry) => (None, entry.life.at(now) == Freshness::Dead),
                    None => (None, false),
                };
                if dead {
                    shard.remove_entry(hash, key);
                }
                match usable.or_else(|| tier_stale.filter(|_| e.serve_stale())) {
                    Some(r) => {
                        shared.stale.fetch_add(1, Ordering::Relaxed);
                        Ok((r, CacheStatus::Stale))
                    }
                    None => Err(e),
                }
            }
        }
    }
}

/// A fill with a shared tier: use the tier's fresh entry, or claim the key for the
/// fleet and call the upstream, or wait for the instance that claimed it.
async fn fill_through_tier<S, Req, K, R, E>(
    link: &TierLink<K, R, E>,
    shared: &Shared<K, R, E>,
    ttl: Duration,
    key: &K,
    cached: Option<&R>,
    inner: S,
    req: Req,
) -> Filled<R, E>
where
    S: Service<Req, Response = R, Error = E>,
    K: 'static,
    R: NotModified + Clone + 'static,
    E: CachePolicy + Clone + 'static,
{
    let (config, clock) = (shared.config.load_full(), &shared.clock);
    let tier = &*link.tier;
    let started = clock.now();
    let mut tier_stale = None;
    loop {
        match tier.lookup(key).await {
            TierEntry::Fresh { value, fresh_for } => return Filled::Shared { value, fresh_for },
            TierEntry::Stale(r) => tier_stale = Some(r),
            TierEntry::Absent => {}
        }
        match tier.claim(key, link.hold).await {
            Claim::Leader(token) => {
                // Another instance may have published between the lookup and the claim
                // (its publish frees the claim): use that entry rather than call again.
                if let TierEntry::Fresh { value, fresh_for } = tier.lookup(key).await {
                    tier.release(key, token).await;
                    return Filled::Shared { value, fresh_for };
                }
                let result = inner.oneshot(req).await;
                match &result {
                    Ok(r) => {
                        // Kept as long as either window after the TTL needs it; a "not
                        // modified" renews the entry it was conditional on.
                        let grace = config.stale_if_error.max(config.stale_while_revalidate);
                        let current = if r.is_not_modified() { cached } else { Some(r) };
                        match current {
                            Some(r) => {
                                let value = Stored::Value(r.clone());
                                tier.publish(key, token, &value, ttl, grace).await;
                            }
                            None => tier.release(key, token).await,
                        }
                    }
                    Err(e) if e.is_negative() && !config.negative_ttl.is_zero() => {
                        let value = Stored::Negative(e.clone());
                        tier.publish(key, token, &value, config.negative_ttl, Duration::ZERO)
                            .await;
                    }
                    Err(_) => tier.release(key, token).await,
                }
                return Filled::Upstream { result, tier_stale };
            }
            Claim::Follower if clock.now().since(started) < link.hold => {
                clock.sleep(FOLLOW_POLL).await
            }
            // The tier is unreachable, or the claimant took too long: fill without it.
            Claim::Follower | Claim::Unavailable => {
                return Filled::Upstream {
                    result: inner.oneshot(req).await,
                    tier_stale,
                };
            }
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone, R: Clone, E: Clone> Fill<K, R, E> {
    /// Takes this fill out of the registry of fills in progress.
    fn withdraw(&self, tx: &Flight<R, E>) {
        self.shared
            .table
            .flights(self.hash)
            .remove_if(self.hash, &self.key, |f| Arc::ptr_eq(f, tx));
    }
}

impl<K: std::hash::Hash + Eq + Clone, R: Clone, E: Clone> Drop for Fill<K, R, E> {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            self.withdraw(&tx);
            tx.finish(None);
        }
    }
}

/// Counters of one cache.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CacheStats {
    /// Entries held now.
    pub entries: usize,
    /// Bytes of the answers held now, as [`CacheWeight`] weighs them.
    pub bytes: u64,
    /// Answers served from a fresh entry.
    pub hits: u64,
    /// Fills started.
    pub misses: u64,
    /// Stale answers served.
    pub stale: u64,
    /// Expired entries answered at once while refreshed (`stale_while_revalidate`).
    pub updating: u64,
    /// Background refreshes started.
    pub refreshes: u64,
    /// Refills the upstream answered "not modified": entries renewed without a body.
    pub revalidated: u64,
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

/// What a purge removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purged {
    /// Entries removed from this instance's memory (counted just before clearing, for a
    /// purge of everything).
    pub local: usize,
    /// Entries removed from the shared tier, or why they could not be; `None` without one.
    pub shared: Option<Result<u64, TierError>>,
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

impl<K, R, E> CacheHandle<K, R, E>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    R: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(shared: Arc<Shared<K, R, E>>) -> Self {
        CacheHandle { shared }
    }

    /// Drops every entry (in the shared tier too, when there is one).
    pub async fn purge_all(&self) -> Purged {
        let local = self.shared.table.len();
        self.shared.table.clear();
        let shared = match &self.shared.tier {
            Some(link) => Some(link.tier.purge(None).await),
            None => None,
        };
        Purged { local, shared }
    }

    /// Drops the entry of `key` (in the shared tier too).
    pub async fn purge(&self, key: &K) -> Purged {
        let local = usize::from(self.shared.table.remove(key));
        let shared = match &self.shared.tier {
            Some(link) => Some(link.tier.purge(Some(key)).await),
            None => None,
        };
        Purged { local, shared }
    }

    /// Whether a request for `key` would be answered here now without a call below
    /// (a fresh local entry). Counts nothing and changes nothing: for callers that
    /// charge a miss before making it, such as a per-client share of the upstream budget.
    pub fn is_fresh(&self, key: &K) -> bool {
        let table = &self.shared.table;
        table.is_fresh(table.hash(key), key, self.shared.clock.now())
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.shared.table.len(),
            bytes: self.shared.table.bytes(),
            hits: self.shared.table.hits(),
            misses: self.shared.misses.load(Ordering::Relaxed),
            stale: self.shared.stale.load(Ordering::Relaxed),
            updating: self.shared.updating.load(Ordering::Relaxed),
            refreshes: self.shared.refreshes.load(Ordering::Relaxed),
            revalidated: self.shared.revalidated.load(Ordering::Relaxed),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> Arc<CacheConfig> {
        self.shared.config.load_full()
    }

    /// Puts `config` in force for what is stored from now on: entries already held keep
    /// the lifetime they were stored with, and stay. The bounds of the table
    /// (`max_entries`, `max_bytes`) are fixed when the cache is built; a `config` with
    /// other bounds is refused whole, naming the first.
    pub fn reconfigure(&self, config: CacheConfig) -> Result<(), ConfigError> {
        let old = self.shared.config.load();
        for (field, same) in [
            ("max_entries", old.max_entries == config.max_entries),
            ("max_bytes", old.max_bytes == config.max_bytes),
        ] {
            if !same {
                return Err(ConfigError::new(
                    field,
                    "is fixed when the cache is built; it changes with a restart",
                ));
            }
        }
        drop(old);
        self.shared.config.store(Arc::new(config));
        Ok(())
    }
}
