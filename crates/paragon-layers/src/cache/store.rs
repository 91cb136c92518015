//! The in-memory cache table: a fixed number of shards, each a hash table behind its own
//! read-write lock, bounded with CLOCK (second-chance) eviction.
//!
//! A hit takes only its shard's read lock, so callers on different keys spread over the
//! shards instead of meeting on one lock, and the "recently used" mark is written only
//! when it is not set yet, so a hot entry does not bounce its cache line between cores.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hashbrown::HashTable;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::freshness::{Freshness, Lifetime};
use crate::Timestamp;

/// Most shards a table uses.
const MAX_SHARDS: usize = 64;
/// Fewest entries a shard should hold before the table splits into more shards.
const MIN_PER_SHARD: usize = 64;

/// One cached value with its lifetime.
pub(crate) struct Entry<V> {
    pub(crate) value: V,
    pub(crate) life: Lifetime,
}

/// What a key maps to: possibly an entry, possibly a fill in progress, possibly both (a
/// stale entry being refreshed).
pub(crate) struct Slot<K, V, F> {
    pub(crate) key: K,
    hash: u64,
    pub(crate) entry: Option<Entry<V>>,
    pub(crate) flight: Option<F>,
    referenced: AtomicBool,
}

impl<K, V, F> Slot<K, V, F> {
    #[inline]
    fn touch(&self) {
        if !self.referenced.load(Ordering::Relaxed) {
            self.referenced.store(true, Ordering::Relaxed);
        }
    }
}

#[repr(align(128))]
struct Shard<K, V, F> {
    inner: RwLock<ShardInner<K, V, F>>,
    hits: AtomicU64,
}

struct ShardInner<K, V, F> {
    table: HashTable<Slot<K, V, F>>,
    /// Hashes of the keys in insertion order for the CLOCK hand; may hold some of keys
    /// already removed.
    order: VecDeque<u64>,
}

/// A bounded, sharded table of slots.
pub(crate) struct Table<K, V, F> {
    shards: Box<[Shard<K, V, F>]>,
    mask: usize,
    per_shard: usize,
    hasher: foldhash::fast::FixedState,
}

/// Write access to one shard, for the service's fill bookkeeping.
pub(crate) struct ShardWrite<'a, K, V, F> {
    guard: RwLockWriteGuard<'a, ShardInner<K, V, F>>,
    per_shard: usize,
}

impl<K: Hash + Eq + Clone, V: Clone, F> Table<K, V, F> {
    /// A table that never holds more than `max_entries` entries (fills in progress aside).
    pub(crate) fn new(max_entries: usize) -> Self {
        let max_entries = max_entries.max(1);
        let mut shards = 1;
        while shards * 2 <= MAX_SHARDS && max_entries / (shards * 2) >= MIN_PER_SHARD {
            shards *= 2;
        }
        let per_shard = max_entries / shards;
        let shards = (0..shards)
            .map(|_| Shard {
                inner: RwLock::new(ShardInner {
                    table: HashTable::new(),
                    order: VecDeque::new(),
                }),
                hits: AtomicU64::new(0),
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Table {
            mask: shards.len() - 1,
            shards,
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
        let shard = self.shard(hash);
        let guard: RwLockReadGuard<'_, _> = shard.inner.read();
        let slot = guard
            .table
            .find(hash, |s| s.hash == hash && s.key == *key)?;
        let entry = slot.entry.as_ref()?;
        if entry.life.at(now) != Freshness::Fresh {
            return None;
        }
        slot.touch();
        let value = entry.value.clone();
        drop(guard);
        shard.hits.fetch_add(1, Ordering::Relaxed);
        Some(value)
    }

    /// Exclusive access to the shard of `hash`.
    pub(crate) fn write(&self, hash: u64) -> ShardWrite<'_, K, V, F> {
        ShardWrite {
            guard: self.shard(hash).inner.write(),
            per_shard: self.per_shard,
        }
    }

    /// Entries held now (fills without an entry not counted).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.inner
                    .read()
                    .table
                    .iter()
                    .filter(|slot| slot.entry.is_some())
                    .count()
            })
            .sum()
    }

    /// Hits served since start.
    pub(crate) fn hits(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.hits.load(Ordering::Relaxed))
            .sum()
    }

    /// Drops every entry; fills in progress keep running and store their result.
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            let mut g = shard.inner.write();
            g.table.retain(|slot| {
                slot.entry = None;
                slot.flight.is_some()
            });
            let ShardInner { table, order } = &mut *g;
            order.retain(|h| table.find(*h, |s| s.hash == *h).is_some());
        }
    }

    /// Drops the entry of one key.
    pub(crate) fn remove(&self, key: &K) -> bool {
        let hash = self.hash(key);
        let mut w = self.write(hash);
        w.remove_entry(hash, key)
    }
}

impl<K: Hash + Eq + Clone, V, F> ShardWrite<'_, K, V, F> {
    /// The slot of `key`, if any.
    pub(crate) fn get_mut(&mut self, hash: u64, key: &K) -> Option<&mut Slot<K, V, F>> {
        self.guard
            .table
            .find_mut(hash, |s| s.hash == hash && s.key == *key)
    }

    /// The slot of `key`, created (evicting if the shard is full) when missing.
    pub(crate) fn get_or_insert(
        &mut self,
        hash: u64,
        key: &K,
        now: Timestamp,
    ) -> &mut Slot<K, V, F> {
        let per_shard = self.per_shard;
        let ShardInner { table, order } = &mut *self.guard;
        match table.find_entry(hash, |s| s.hash == hash && s.key == *key) {
            Ok(present) => present.into_mut(),
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
                    entry: None,
                    flight: None,
                    referenced: AtomicBool::new(false),
                };
                table.insert_unique(hash, slot, |s| s.hash).into_mut()
            }
        }
    }

    /// Removes the slot of `key` when it holds neither an entry nor a fill.
    pub(crate) fn remove_if_empty(&mut self, hash: u64, key: &K) {
        if let Ok(occupied) = self
            .guard
            .table
            .find_entry(hash, |s| s.hash == hash && s.key == *key)
        {
            if occupied.get().entry.is_none() && occupied.get().flight.is_none() {
                occupied.remove();
            }
        }
    }

    /// Drops the entry of `key`, keeping a fill in progress; true if an entry was there.
    pub(crate) fn remove_entry(&mut self, hash: u64, key: &K) -> bool {
        let had = match self.get_mut(hash, key) {
            Some(slot) => slot.entry.take().is_some(),
            None => false,
        };
        self.remove_if_empty(hash, key);
        had
    }
}

/// CLOCK: advance the hand over the insertion order, giving referenced entries a second
/// chance, skipping fills in progress, and dropping the first other one.
///
/// The order holds hashes only: the hand then never reads the keys it passes (a memory
/// miss each), and a (vanishingly rare) full 64-bit collision only means the hand visits
/// one of the two colliding slots in the other's place.
fn evict_one<K, V, F>(
    table: &mut HashTable<Slot<K, V, F>>,
    order: &mut VecDeque<u64>,
    now: Timestamp,
) {
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
        let dead = slot
            .entry
            .as_ref()
            .is_none_or(|e| e.life.at(now) == Freshness::Dead);
        // Fills in progress are never evicted; referenced live entries get a second chance.
        let keep =
            slot.flight.is_some() || (!dead && slot.referenced.swap(false, Ordering::Relaxed));
        if keep {
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
fn compact_order<K, V, F>(table: &HashTable<Slot<K, V, F>>, order: &mut VecDeque<u64>) {
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
        w.get_or_insert(h, &k, now).entry = Some(entry(k, now));
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
    fn fills_in_progress_are_not_evicted() {
        let t: Table<u32, u32, u8> = Table::new(1);
        let h = t.hash(&1);
        t.write(h).get_or_insert(h, &1, Timestamp(0)).flight = Some(7);
        let h2 = t.hash(&2);
        t.write(h2).get_or_insert(h2, &2, Timestamp(0));
        let mut w = t.write(h);
        assert_eq!(w.get_mut(h, &1).and_then(|s| s.flight), Some(7));
    }
}
