//! MEASUREMENT VARIANT, not the shipped table: the cache table over a crate made for the
//! job, built only with the feature `table-moka` (`moka::sync::Cache`) or `table-quick`
//! (`quick_cache::sync::Cache`), so that `bench/compare.sh` and `cache_memory` can set it
//! against [the table of `store.rs`](super) end to end. BENCHMARKS.md, "The cache table
//! against moka and quick_cache", has the figures and the commands.
//!
//! It offers the same interface as `store.rs`, so the cache service is unchanged: the
//! entry's freshness and stale window travel in the value (the service still decides
//! what is fresh with its own clock); the fills in progress stay in a small registry of
//! their own, a plain mutex per shard, as in `store.rs`.
//!
//! Both bounds of the table hold through one weight: an entry weighs its bytes, but at
//! least `max_bytes / max_entries`, against a capacity of `max_bytes`. moka also drops an
//! entry when its stale window ends (per-entry expiry); quick_cache has no expiry, so a
//! dead entry waits for eviction, as one in `store.rs` does.
//!
//! Differences that do not change the hit or miss path: `bytes()` reports the weights as
//! the crate counts them (the inflated ones), moka's counts lag until its pending work
//! runs, and a store never evicts in CLOCK order (each crate has its own policy; moka may
//! also refuse a new entry that its frequency sketch finds colder than its victim).

use std::hash::{BuildHasher, Hash};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};

pub(crate) use super::freshness::Lookup;
use super::freshness::{Freshness, Lifetime};
use super::striped::StripedCounter;
use crate::Timestamp;

/// Shards of the fill registry.
const FLIGHT_SHARDS: usize = 8;
/// One cached value with its lifetime.
#[derive(Clone)]
pub(crate) struct Entry<V> {
    pub(crate) value: V,
    pub(crate) life: Lifetime,
}

/// What the crate holds for a key: the entry, its weight, and how long it may live.
#[derive(Clone)]
struct Held<V> {
    entry: Entry<V>,
    weight: u32,
    /// Until the end of the stale window (moka's expiry).
    #[cfg_attr(feature = "table-quick", allow(dead_code))]
    live_for: Duration,
}

#[cfg(feature = "table-moka")]
mod backend {
    use super::*;

    /// Ends an entry when its stale window does.
    struct LiveFor;

    impl<K, V> moka::Expiry<K, Held<V>> for LiveFor {
        fn expire_after_create(
            &self,
            _: &K,
            held: &Held<V>,
            _: std::time::Instant,
        ) -> Option<Duration> {
            Some(held.live_for)
        }

        fn expire_after_update(
            &self,
            _: &K,
            held: &Held<V>,
            _: std::time::Instant,
            _: Option<Duration>,
        ) -> Option<Duration> {
            Some(held.live_for)
        }
    }

    pub(super) struct Map<K, V>(moka::sync::Cache<K, Held<V>, foldhash::fast::RandomState>);

    impl<K, V> Map<K, V>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        pub(super) fn new(max_entries: usize, capacity: u64) -> Self {
            Map(moka::sync::Cache::builder()
                .max_capacity(capacity)
                .initial_capacity(max_entries.min(1 << 16))
                .weigher(|_, held: &Held<V>| held.weight)
                .expire_after(LiveFor)
                .build_with_hasher(foldhash::fast::RandomState::default()))
        }
        #[inline]
        pub(super) fn get(&self, key: &K) -> Option<Held<V>> {
            self.0.get(key)
        }
        pub(super) fn peek(&self, key: &K) -> Option<Held<V>> {
            self.0.get(key)
        }
        pub(super) fn insert(&self, key: K, held: Held<V>) {
            self.0.insert(key, held);
        }
        pub(super) fn remove(&self, key: &K) -> bool {
            self.0.remove(key).is_some()
        }
        pub(super) fn len(&self) -> usize {
            self.0.run_pending_tasks();
            self.0.entry_count() as usize
        }
        pub(super) fn weight(&self) -> u64 {
            self.0.run_pending_tasks();
            self.0.weighted_size()
        }
        pub(super) fn clear(&self) {
            self.0.invalidate_all();
            self.0.run_pending_tasks();
        }
    }
}

#[cfg(feature = "table-quick")]
mod backend {
    use super::*;

    /// The weight the table gave the entry.
    #[derive(Clone)]
    pub(super) struct ByWeight;

    impl<K, V> quick_cache::Weighter<K, Held<V>> for ByWeight {
        fn weight(&self, _: &K, held: &Held<V>) -> u64 {
            u64::from(held.weight)
        }
    }

    pub(super) struct Map<K, V>(quick_cache::sync::Cache<K, Held<V>, ByWeight>);

    impl<K, V> Map<K, V>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
    {
        pub(super) fn new(max_entries: usize, capacity: u64) -> Self {
            Map(quick_cache::sync::Cache::with_weighter(
                max_entries,
                capacity,
                ByWeight,
            ))
        }
        #[inline]
        pub(super) fn get(&self, key: &K) -> Option<Held<V>> {
            self.0.get(key)
        }
        pub(super) fn peek(&self, key: &K) -> Option<Held<V>> {
            self.0.peek(key)
        }
        pub(super) fn insert(&self, key: K, held: Held<V>) {
            self.0.insert(key, held);
        }
        pub(super) fn remove(&self, key: &K) -> bool {
            self.0.remove(key).is_some()
        }
        pub(super) fn len(&self) -> usize {
            self.0.len()
        }
        pub(super) fn weight(&self) -> u64 {
            self.0.weight()
        }
        pub(super) fn clear(&self) {
            self.0.clear();
        }
    }
}

/// A fill in progress for a key.
struct Flying<K, F> {
    key: K,
    hash: u64,
    flight: F,
}

/// The fills in progress of one shard.
type FlightShard<K, F> = Mutex<HashTable<Flying<K, F>>>;

/// The table: the crate's cache, the fills in progress, the hit count.
pub(crate) struct Table<K, V, F> {
    map: backend::Map<K, V>,
    flights: Box<[CachePadded<FlightShard<K, F>>]>,
    hits: StripedCounter,
    /// The least weight of an entry, so that `max_bytes` also bounds the count.
    unit: u64,
    max_bytes: u64,
    hasher: foldhash::fast::RandomState,
}

/// Write access for one fill's store (the crate locks inside).
pub(crate) struct ShardWrite<'a, K, V, F> {
    table: &'a Table<K, V, F>,
    seen: Option<Entry<V>>,
}

/// The fills in progress of one shard, locked.
pub(crate) struct Flights<'a, K, F> {
    guard: MutexGuard<'a, HashTable<Flying<K, F>>>,
}

impl<K: Hash, V, F> Table<K, V, F> {
    #[inline]
    pub(crate) fn hash(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The fills in progress of the shard of `hash`.
    pub(crate) fn flights(&self, hash: u64) -> Flights<'_, K, F> {
        Flights {
            guard: self.flights[(hash >> 48) as usize % FLIGHT_SHARDS].lock(),
        }
    }

    /// Hits served since start.
    pub(crate) fn hits(&self) -> u64 {
        self.hits.sum()
    }
}

impl<K, V, F> Table<K, V, F>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A table bounded by `max_entries` entries and `max_bytes` bytes of values.
    pub(crate) fn new(max_entries: usize, max_bytes: u64) -> Self {
        let max_entries = max_entries.max(1);
        let max_bytes = max_bytes.max(1);
        Table {
            map: backend::Map::new(max_entries, max_bytes),
            flights: (0..FLIGHT_SHARDS)
                .map(|_| CachePadded::new(Mutex::new(HashTable::new())))
                .collect(),
            hits: StripedCounter::new(),
            unit: max_bytes.div_ceil(max_entries as u64).max(1),
            max_bytes,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// The value of a fresh entry, if there is one; counts the hit.
    #[inline(always)]
    pub(crate) fn get_fresh(&self, hash: u64, key: &K, now: Timestamp) -> Option<V> {
        match self.lookup(hash, key, now) {
            Lookup::Hit(v) => Some(v),
            _ => None,
        }
    }

    /// The entry of `key` if it may be answered now: fresh (a hit, counted), or within
    /// its `stale_while_revalidate` window; as `store.rs` does.
    #[inline(always)]
    pub(crate) fn lookup(&self, _hash: u64, key: &K, now: Timestamp) -> Lookup<V> {
        let Some(held) = self.map.get(key) else {
            return Lookup::Miss;
        };
        match held.entry.life.at(now) {
            Freshness::Fresh => {
                self.hits.add_one();
                Lookup::Hit(held.entry.value)
            }
            Freshness::Updating => Lookup::Updating(held.entry.value),
            _ => Lookup::Miss,
        }
    }

    /// The value of `key`'s entry, fresh or not; marks and counts nothing.
    pub(crate) fn peek(&self, _hash: u64, key: &K) -> Option<V> {
        self.map.peek(key).map(|held| held.entry.value)
    }

    /// Whether `key` has a fresh entry at `now`.
    pub(crate) fn is_fresh(&self, _hash: u64, key: &K, now: Timestamp) -> bool {
        self.map
            .peek(key)
            .is_some_and(|h| h.entry.life.at(now) == Freshness::Fresh)
    }

    /// Access for storing the entry of `hash`'s key.
    pub(crate) fn write(&self, _hash: u64) -> ShardWrite<'_, K, V, F> {
        ShardWrite {
            table: self,
            seen: None,
        }
    }

    /// Entries held now.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The weights of the entries held now, as the crate counts them.
    pub(crate) fn bytes(&self) -> u64 {
        self.map.weight()
    }

    /// Drops every entry.
    pub(crate) fn clear(&self) {
        self.map.clear();
    }

    /// Drops the entry of one key.
    pub(crate) fn remove(&self, key: &K) -> bool {
        self.map.remove(key)
    }
}

impl<K: Hash + Eq, F> Flights<'_, K, F> {
    /// The fill in progress for `key`, if any.
    pub(crate) fn get(&self, hash: u64, key: &K) -> Option<&F> {
        self.guard
            .find(hash, |f| f.hash == hash && f.key == *key)
            .map(|f| &f.flight)
    }

    /// Records the fill in progress for `key` (there is none yet).
    pub(crate) fn insert(&mut self, hash: u64, key: K, flight: F) {
        self.guard
            .insert_unique(hash, Flying { key, hash, flight }, |f| f.hash);
    }

    /// Removes the fill in progress for `key` when `is_it` says it is this one.
    pub(crate) fn remove_if(&mut self, hash: u64, key: &K, is_it: impl FnOnce(&F) -> bool) {
        if let Ok(entry) = self
            .guard
            .find_entry(hash, |f| f.hash == hash && f.key == *key)
        {
            if is_it(&entry.get().flight) {
                entry.remove();
            }
        }
    }
}

impl<K, V, F> ShardWrite<'_, K, V, F>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The entry of `key`, if any.
    pub(crate) fn get(&mut self, _hash: u64, key: &K) -> Option<&Entry<V>> {
        self.seen = self.table.map.peek(key).map(|h| h.entry);
        self.seen.as_ref()
    }

    /// Stores `entry`, which keeps `weight` bytes alive, for `key`; an entry heavier than
    /// the bound is not stored, and the key's older entry is dropped. True if stored.
    pub(crate) fn put(
        &mut self,
        _hash: u64,
        key: &K,
        entry: Entry<V>,
        weight: usize,
        now: Timestamp,
    ) -> bool {
        let t = self.table;
        let weight = (weight as u64).max(t.unit);
        let weight = match u32::try_from(weight) {
            Ok(w) if u64::from(w) <= t.max_bytes => w,
            _ => {
                t.map.remove(key);
                return false;
            }
        };
        let live_for = entry.life.stale_until().since(now);
        let held = Held {
            entry,
            weight,
            live_for,
        };
        t.map.insert(key.clone(), held);
        true
    }

    /// Drops the entry of `key`; true if there was one.
    pub(crate) fn remove_entry(&mut self, _hash: u64, key: &K) -> bool {
        self.table.map.remove(key)
    }
}
