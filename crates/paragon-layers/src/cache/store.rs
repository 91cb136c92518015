//! The in-memory cache table: a fixed number of shards, each a hash table behind its own
//! read-write lock, bounded with CLOCK (second-chance) eviction, plus a registry of the
//! fills in progress.
//!
//! A hit writes no memory that another core writes too: each shard's lock is a
//! [`ShardedLock`], whose readers take only the sub-lock of their own thread; hits are
//! counted in per-thread stripes; and the "recently used" mark is written only when it
//! is not set yet. So the hit path scales with cores instead of bouncing a lock word or a
//! counter between them. Writers (a fill storing its answer, evictions, purges) take
//! every sub-lock, so a miss takes the table's write lock once, when it stores; the fills
//! in progress live in a separate, plain mutex per shard that hits never touch.
//!
//! Lock order: a shard's flight registry may be held while its table is read, never the
//! other way round, and never while its table is written.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use crossbeam_utils::CachePadded;
use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};

use super::freshness::{Freshness, Lifetime};
use crate::Timestamp;

/// Most shards a table uses.
const MAX_SHARDS: usize = 64;
/// Fewest entries a shard should hold before the table splits into more shards.
const MIN_PER_SHARD: usize = 64;
/// Stripes of the hit counter; a thread always adds to the same one.
const HIT_STRIPES: usize = 16;

/// One cached value with its lifetime.
pub(crate) struct Entry<V> {
    pub(crate) value: V,
    pub(crate) life: Lifetime,
}

/// The cached entry of a key.
pub(crate) struct Slot<K, V> {
    key: K,
    hash: u64,
    entry: Entry<V>,
    referenced: AtomicBool,
}

impl<K, V> Slot<K, V> {
    #[inline]
    fn touch(&self) {
        if !self.referenced.load(Ordering::Relaxed) {
            self.referenced.store(true, Ordering::Relaxed);
        }
    }
}

/// A fill in progress for a key.
struct Flying<K, F> {
    key: K,
    hash: u64,
    flight: F,
}

struct Shard<K, V, F> {
    inner: ShardedLock<ShardInner<K, V>>,
    flights: Mutex<HashTable<Flying<K, F>>>,
}

impl<K, V, F> Shard<K, V, F> {
    /// Shared access. A panic while a shard was written cannot leave it inconsistent in a
    /// way that matters here (every write is a whole slot), so poisoning is ignored.
    #[inline]
    fn read(&self) -> ShardedLockReadGuard<'_, ShardInner<K, V>> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> ShardedLockWriteGuard<'_, ShardInner<K, V>> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The stripe of the calling thread.
#[inline]
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % HIT_STRIPES;
    }
    STRIPE.try_with(|s| *s).unwrap_or(0)
}

struct ShardInner<K, V> {
    table: HashTable<Slot<K, V>>,
    /// Hashes of the keys in insertion order for the CLOCK hand; may hold some of keys
    /// already removed.
    order: VecDeque<u64>,
}

/// A bounded, sharded table of entries, with its fills in progress.
pub(crate) struct Table<K, V, F> {
    shards: Box<[Shard<K, V, F>]>,
    hits: Box<[CachePadded<AtomicU64>]>,
    mask: usize,
    per_shard: usize,
    hasher: foldhash::fast::FixedState,
}

/// Write access to one shard's entries.
pub(crate) struct ShardWrite<'a, K, V> {
    guard: ShardedLockWriteGuard<'a, ShardInner<K, V>>,
    per_shard: usize,
}

/// The fills in progress of one shard, locked.
pub(crate) struct Flights<'a, K, F> {
    guard: MutexGuard<'a, HashTable<Flying<K, F>>>,
}

impl<K: Hash + Eq + Clone, V: Clone, F> Table<K, V, F> {
    /// A table that never holds more than `max_entries` entries.
    pub(crate) fn new(max_entries: usize) -> Self {
        let max_entries = max_entries.max(1);
        let mut shards = 1;
        while shards * 2 <= MAX_SHARDS && max_entries / (shards * 2) >= MIN_PER_SHARD {
            shards *= 2;
        }
        let per_shard = max_entries / shards;
        let shards = (0..shards)
            .map(|_| Shard {
                inner: ShardedLock::new(ShardInner {
                    table: HashTable::new(),
                    order: VecDeque::new(),
                }),
                flights: Mutex::new(HashTable::new()),
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Table {
            mask: shards.len() - 1,
            shards,
            hits: (0..HIT_STRIPES)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
            per_shard,
            hasher: foldhash::fast::FixedState::with_seed(0x5eed_ca5e),
        }
    }

    #[inline]
    pub(crate) fn hash(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Shard<K, V, F> {
        // The low bits pick the bucket inside hashbrown; use high bits for the shard.
        &self.shards[(hash >> 48) as usize & self.mask]
    }

    /// The value of a fresh entry, if there is one; counts the hit.
    #[inline]
    pub(crate) fn get_fresh(&self, hash: u64, key: &K, now: Timestamp) -> Option<V> {
        let guard = self.shard(hash).read();
        let slot = guard
            .table
            .find(hash, |s| s.hash == hash && s.key == *key)?;
        let entry = &slot.entry;
        if entry.life.at(now) != Freshness::Fresh {
            return None;
        }
        slot.touch();
        let value = entry.value.clone();
        drop(guard);
        self.hits[stripe()].fetch_add(1, Ordering::Relaxed);
        Some(value)
    }

    /// Exclusive access to the entries of the shard of `hash`.
    pub(crate) fn write(&self, hash: u64) -> ShardWrite<'_, K, V> {
        ShardWrite {
            guard: self.shard(hash).write(),
            per_shard: self.per_shard,
        }
    }

    /// The fills in progress of the shard of `hash`.
    pub(crate) fn flights(&self, hash: u64) -> Flights<'_, K, F> {
        Flights {
            guard: self.shard(hash).flights.lock(),
        }
    }

    /// Entries held now.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().table.len()).sum()
    }

    /// Hits served since start.
    pub(crate) fn hits(&self) -> u64 {
        self.hits.iter().map(|h| h.load(Ordering::Relaxed)).sum()
    }

    /// Drops every entry; fills in progress keep running and store their result.
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            let mut g = shard.write();
            g.table.clear();
            g.order.clear();
        }
    }

    /// Drops the entry of one key.
    pub(crate) fn remove(&self, key: &K) -> bool {
        let hash = self.hash(key);
        let mut w = self.write(hash);
        w.remove_entry(hash, key)
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

impl<K: Hash + Eq + Clone, V> ShardWrite<'_, K, V> {
    /// The entry of `key`, if any.
    pub(crate) fn get(&self, hash: u64, key: &K) -> Option<&Entry<V>> {
        self.guard
            .table
            .find(hash, |s| s.hash == hash && s.key == *key)
            .map(|s| &s.entry)
    }

    /// Stores `entry` for `key`, replacing its entry or, when it has none, evicting
    /// another first if the shard is full.
    pub(crate) fn put(&mut self, hash: u64, key: &K, entry: Entry<V>, now: Timestamp) {
        let per_shard = self.per_shard;
        let ShardInner { table, order } = &mut *self.guard;
        match table.find_entry(hash, |s| s.hash == hash && s.key == *key) {
            Ok(mut present) => present.get_mut().entry = entry,
            Err(absent) => {
                let table = absent.into_table();
                if table.len() >= per_shard {
                    evict_one(table, order, now);
                }
                compact_order(table, order);
                order.push_back(hash);
                let slot = Slot {
                    key: key.clone(),
                    hash,
                    entry,
                    referenced: AtomicBool::new(false),
                };
                table.insert_unique(hash, slot, |s| s.hash);
            }
        }
    }

    /// Drops the entry of `key`; true if there was one.
    pub(crate) fn remove_entry(&mut self, hash: u64, key: &K) -> bool {
        match self
            .guard
            .table
            .find_entry(hash, |s| s.hash == hash && s.key == *key)
        {
            Ok(occupied) => {
                occupied.remove();
                true
            }
            Err(_) => false,
        }
    }
}

/// CLOCK: advance the hand over the insertion order, giving referenced live entries a
/// second chance and dropping the first other one.
///
/// The order holds hashes only: the hand then never reads the keys it passes (a memory
/// miss each), and a (vanishingly rare) full 64-bit collision only means the hand visits
/// one of the two colliding slots in the other's place.
fn evict_one<K, V>(table: &mut HashTable<Slot<K, V>>, order: &mut VecDeque<u64>, now: Timestamp) {
    let mut budget = order.len() * 2 + 1;
    while budget > 0 {
        budget -= 1;
        let Some(hash) = order.pop_front() else {
            return;
        };
        let Ok(occupied) = table.find_entry(hash, |s| s.hash == hash) else {
            continue; // removed earlier; its place in the order was stale
        };
        let slot = occupied.get();
        let dead = slot.entry.life.at(now) == Freshness::Dead;
        if !dead && slot.referenced.swap(false, Ordering::Relaxed) {
            order.push_back(hash);
        } else {
            occupied.remove();
            return;
        }
    }
}

/// Keeps the order queue from growing without bound after many removals. A key that was
/// removed and inserted again may stand in it twice until then; that only gives it one
/// more visit of the hand.
fn compact_order<K, V>(table: &HashTable<Slot<K, V>>, order: &mut VecDeque<u64>) {
    if order.len() > table.len() * 2 + 16 {
        order.retain(|h| table.find(*h, |s| s.hash == *h).is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(v: u32, now: Timestamp) -> Entry<u32> {
        Entry {
            value: v,
            life: Lifetime::new(now, Duration::from_secs(10), Duration::ZERO),
        }
    }

    fn put(t: &Table<u32, u32, ()>, k: u32, now: Timestamp) {
        let h = t.hash(&k);
        let mut w = t.write(h);
        w.put(h, &k, entry(k, now), now);
    }

    #[test]
    fn never_holds_more_than_max_entries() {
        for max in [1usize, 7, 100, 5000] {
            let t: Table<u32, u32, ()> = Table::new(max);
            for k in 0..(max as u32 * 5) {
                put(&t, k, Timestamp(0));
                assert!(t.len() <= max, "max {max}: {} entries", t.len());
            }
        }
    }

    #[test]
    fn referenced_entries_survive_a_scan() {
        let t: Table<u32, u32, ()> = Table::new(10);
        for k in 0..10 {
            put(&t, k, Timestamp(0));
        }
        let hot = 3;
        assert_eq!(t.get_fresh(t.hash(&hot), &hot, Timestamp(1)), Some(hot));
        for k in 100..109 {
            put(&t, k, Timestamp(0));
        }
        assert_eq!(t.get_fresh(t.hash(&hot), &hot, Timestamp(2)), Some(hot));
    }

    #[test]
    fn expired_entries_are_not_served_and_clear_and_remove_work() {
        let t: Table<u32, u32, ()> = Table::new(100);
        put(&t, 1, Timestamp(0));
        put(&t, 2, Timestamp(0));
        let ten = Timestamp(10_000_000_000);
        assert_eq!(t.get_fresh(t.hash(&1), &1, Timestamp(ten.0 - 1)), Some(1));
        assert_eq!(t.get_fresh(t.hash(&1), &1, ten), None);
        assert!(t.remove(&1));
        assert!(!t.remove(&1));
        assert_eq!(t.len(), 1);
        t.clear();
        assert_eq!(t.len(), 0);
        assert_eq!(t.hits(), 1);
    }

    #[test]
    fn flights_are_found_by_key_and_removed_only_by_their_owner() {
        let t: Table<u32, u32, u8> = Table::new(100);
        let h = t.hash(&1);
        t.flights(h).insert(h, 1, 7);
        assert_eq!(t.flights(h).get(h, &1), Some(&7));
        assert_eq!(t.flights(t.hash(&2)).get(t.hash(&2), &2), None);
        t.flights(h).remove_if(h, &1, |f| *f == 8);
        assert_eq!(t.flights(h).get(h, &1), Some(&7));
        t.flights(h).remove_if(h, &1, |f| *f == 7);
        assert_eq!(t.flights(h).get(h, &1), None);
        // Flights are not entries: they neither count nor go with a purge.
        t.flights(h).insert(h, 1, 9);
        t.clear();
        assert_eq!((t.len(), t.flights(h).get(h, &1)), (0, Some(&9)));
    }
}
