//! The in-memory cache table: a fixed number of shards, each behind its own read-write
//! lock, bounded with CLOCK (second-chance) eviction, plus a registry of the fills in
//! progress.
//!
//! A shard keeps its entries in a ring of slots, at most its share of `max_entries`, and
//! finds them through a small hash index of slot numbers. When the ring is full, the
//! CLOCK hand sweeps it: a slot used since the hand last passed gets a second chance,
//! the first other one is evicted, and the new entry takes its place. So a miss that
//! evicts reads and writes the same slot, the index stays a few bytes per entry (a miss
//! on a large cache touches little memory besides the slot), and no queue of keys is
//! kept beside the table.
//!
//! A hit writes no memory that another core writes too: each shard's lock is a
//! [`ShardedLock`], whose readers take only the sub-lock of their own thread; hits are
//! counted in per-thread stripes; and the "recently used" mark is written only when it
//! is not set yet. So the hit path scales with cores instead of bouncing a lock word or a
//! counter between them. Writers (a fill storing its answer, evictions, purges) take
//! every sub-lock, so a miss takes the table's write lock once, when it stores; the fills
//! in progress live in a separate, plain mutex per shard that hits never touch.
//!
//! A hit also reads few cache lines. A table has a few shards per core, each on a line of
//! its own, so on a small machine every shard's header and the calling thread's sub-lock
//! of it stay in L1; and a slot is aligned to a line, which it fills when its key and
//! value are two words each (the cache service keeps an error behind an `Arc` for that).
//!
//! Lock order: a shard's flight registry may be held while its table is read, never the
//! other way round, and never while its table is written.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use crossbeam_utils::CachePadded;
use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};

use super::freshness::{Freshness, Lifetime};
use crate::Timestamp;

/// Most shards a table uses, on any machine.
const MAX_SHARDS: usize = 64;
/// Shards per core: enough that writers on different cores rarely meet, few enough that
/// the shards' headers, and each thread's sub-lock of each, stay in the L1 cache on the
/// hit path (on 2 cores, 8 shards: 64 made every hit fetch both from L2).
const SHARDS_PER_CORE: usize = 4;
/// Fewest entries a shard should hold before the table splits into more shards.
const MIN_PER_SHARD: usize = 64;
/// Stripes of the hit counter; a thread always adds to the same one.
const HIT_STRIPES: usize = 16;

/// One cached value with its lifetime.
pub(crate) struct Entry<V> {
    pub(crate) value: V,
    pub(crate) life: Lifetime,
}

/// The cached entry of a key, aligned so that a probe that finds it reads one cache line
/// (it fits in one when `K` and `V` are two words each, as the cache service's are).
#[repr(align(64))]
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

/// The cores this process may run on, asked once: the answer can cost file reads (cgroup
/// quotas), and every table made would ask again.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
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
    /// The number of the slot of each key, hashed by the key.
    index: HashTable<u32>,
    /// The ring the CLOCK hand sweeps; `None` is a slot freed by a removal.
    slots: Vec<Option<Slot<K, V>>>,
    /// Slots freed by removals, filled before the ring grows or the hand evicts.
    free: Vec<u32>,
    /// The next slot the hand looks at.
    hand: usize,
}

impl<K: Eq, V> ShardInner<K, V> {
    fn new() -> Self {
        ShardInner {
            index: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
        }
    }

    /// The slot number of `key` and its slot, if it has an entry.
    #[inline]
    fn find(&self, hash: u64, key: &K) -> Option<(usize, &Slot<K, V>)> {
        let slots = &self.slots;
        let mut found = None;
        self.index.find(hash, |&i| match slots.get(i as usize) {
            Some(Some(s)) if s.hash == hash && s.key == *key => {
                found = Some((i as usize, s));
                true
            }
            _ => false,
        })?;
        found
    }

    /// The slot number of `key`, if it has an entry.
    #[inline]
    fn position(&self, hash: u64, key: &K) -> Option<usize> {
        self.find(hash, key).map(|(i, _)| i)
    }

    /// The slot of `key`, if it has an entry.
    #[inline]
    fn slot(&self, hash: u64, key: &K) -> Option<&Slot<K, V>> {
        self.find(hash, key).map(|(_, s)| s)
    }

    /// Takes the slot number `i` out of the index.
    fn unindex(&mut self, hash: u64, i: usize) {
        if let Ok(found) = self.index.find_entry(hash, |&j| j as usize == i) {
            found.remove();
        }
    }

    fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.free.clear();
        self.hand = 0;
    }
}

/// A bounded, sharded table of entries, with its fills in progress.
pub(crate) struct Table<K, V, F> {
    shards: Box<[CachePadded<Shard<K, V, F>>]>,
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
        let most = (cores() * SHARDS_PER_CORE)
            .next_power_of_two()
            .min(MAX_SHARDS);
        let mut shards = 1;
        while shards * 2 <= most && max_entries / (shards * 2) >= MIN_PER_SHARD {
            shards *= 2;
        }
        // Slot numbers are `u32`: a shard holds at most 4,294,967,295 entries.
        let per_shard = (max_entries / shards).min(u32::MAX as usize);
        let shards = (0..shards)
            .map(|_| {
                CachePadded::new(Shard {
                    inner: ShardedLock::new(ShardInner::new()),
                    flights: Mutex::new(HashTable::new()),
                })
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
    #[inline(always)]
    pub(crate) fn get_fresh(&self, hash: u64, key: &K, now: Timestamp) -> Option<V> {
        let guard = self.shard(hash).read();
        let slot = guard.slot(hash, key)?;
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

    /// Whether `key` has a fresh entry at `now`; marks and counts nothing.
    pub(crate) fn is_fresh(&self, hash: u64, key: &K, now: Timestamp) -> bool {
        let guard = self.shard(hash).read();
        guard
            .slot(hash, key)
            .is_some_and(|slot| slot.entry.life.at(now) == Freshness::Fresh)
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
        self.shards.iter().map(|s| s.read().index.len()).sum()
    }

    /// Hits served since start.
    pub(crate) fn hits(&self) -> u64 {
        self.hits.iter().map(|h| h.load(Ordering::Relaxed)).sum()
    }

    /// Drops every entry; fills in progress keep running and store their result.
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            shard.write().clear();
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
        self.guard.slot(hash, key).map(|s| &s.entry)
    }

    /// Stores `entry` for `key`, replacing its entry or, when it has none, evicting
    /// another first if the shard is full.
    pub(crate) fn put(&mut self, hash: u64, key: &K, entry: Entry<V>, now: Timestamp) {
        let per_shard = self.per_shard;
        let shard = &mut *self.guard;
        if let Some(i) = shard.position(hash, key) {
            if let Some(slot) = &mut shard.slots[i] {
                slot.entry = entry;
            }
            return;
        }
        let i = if let Some(i) = shard.free.pop() {
            i as usize
        } else if shard.slots.len() < per_shard {
            shard.slots.push(None);
            shard.slots.len() - 1
        } else {
            evict_one(shard, now)
        };
        // Drops the evicted entry, if any, in the same stroke.
        shard.slots[i] = Some(Slot {
            key: key.clone(),
            hash,
            entry,
            referenced: AtomicBool::new(false),
        });
        let slots = &shard.slots;
        // `i` fits: the ring never holds more than `per_shard` ≤ `u32::MAX` slots.
        shard.index.insert_unique(hash, i as u32, |&j| {
            slots[j as usize].as_ref().map_or(0, |s| s.hash)
        });
    }

    /// Drops the entry of `key`; true if there was one.
    pub(crate) fn remove_entry(&mut self, hash: u64, key: &K) -> bool {
        let shard = &mut *self.guard;
        let Some(i) = shard.position(hash, key) else {
            return false;
        };
        shard.unindex(hash, i);
        shard.slots[i] = None;
        shard.free.push(i as u32);
        true
    }
}

/// CLOCK: advances the hand over the full ring, giving live entries used since its last
/// pass a second chance, and takes the first other entry out of the index. Returns that
/// slot's number; the caller stores the new entry there.
///
/// A whole sweep clears every mark it passes, so after one the hand evicts where it began.
fn evict_one<K: Eq, V>(shard: &mut ShardInner<K, V>, now: Timestamp) -> usize {
    let len = shard.slots.len();
    let mut i = shard.hand;
    for _ in 0..len {
        let Some(slot) = &mut shard.slots[i] else {
            break; // a freed slot (the caller fills those first)
        };
        let dead = slot.entry.life.at(now) == Freshness::Dead;
        if dead || !std::mem::replace(slot.referenced.get_mut(), false) {
            break;
        }
        i = if i + 1 == len { 0 } else { i + 1 };
    }
    shard.hand = if i + 1 == len { 0 } else { i + 1 };
    if let Some(hash) = shard.slots[i].as_ref().map(|s| s.hash) {
        shard.unindex(hash, i);
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn entry(v: u32, now: Timestamp) -> Entry<u32> {
        Entry {
            value: v,
            life: Lifetime::new(now, Duration::from_secs(10), Duration::ZERO),
        }
    }

    #[test]
    fn a_slot_of_two_word_key_and_value_is_one_cache_line() {
        // The shapes of the cache service's slots: a shared-string key, and a value that
        // is a shared answer or a shared error (`Held`).
        type Value = super::super::CachedValue<Arc<str>, Arc<String>>;
        assert_eq!(std::mem::size_of::<Option<Slot<Arc<str>, Value>>>(), 64);
        assert_eq!(std::mem::align_of::<Option<Slot<Arc<str>, Value>>>(), 64);
    }

    #[test]
    fn shards_follow_the_cores_and_never_pass_the_bound() {
        let cores = cores();
        let n = Table::<u32, u32, ()>::new(1_000_000).shards.len();
        assert!(n.is_power_of_two(), "{n} shards");
        // At least one shard per core (up to the bound), so writers rarely meet...
        assert!(n >= cores.min(MAX_SHARDS), "{n} shards for {cores} cores");
        // ...and no more than a few per core, so the hit path's headers stay in L1.
        assert!(
            n <= cores * SHARDS_PER_CORE * 2 && n <= MAX_SHARDS,
            "{n} shards"
        );
        // A small table keeps at least MIN_PER_SHARD entries per shard.
        let small = Table::<u32, u32, ()>::new(MIN_PER_SHARD * 2).shards.len();
        assert!(
            small <= 2,
            "{small} shards for {} entries",
            MIN_PER_SHARD * 2
        );
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

    #[derive(Clone, Debug)]
    enum Op {
        Put(u32, u32),
        Remove(u32),
        Hit(u32),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..24u32, any::<u32>()).prop_map(|(k, v)| Op::Put(k, v)),
            2 => (0..24u32).prop_map(Op::Remove),
            3 => (0..24u32).prop_map(Op::Hit),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        /// Against a model of what may be cached: the table never answers a value that
        /// was not the last one stored for its key, never answers a removed key, always
        /// answers the key it just stored, never holds more than `max` entries, and its
        /// count matches the keys it answers (the index and the slots agree).
        #[test]
        fn answers_only_what_was_stored_last(max in 1usize..10, ops in prop::collection::vec(op(), 1..300)) {
            let t: Table<u32, u32, ()> = Table::new(max);
            let mut model = std::collections::HashMap::new();
            let now = Timestamp(1);
            let get = |k: u32| t.get_fresh(t.hash(&k), &k, now);
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        let h = t.hash(&k);
                        t.write(h).put(h, &k, entry(v, Timestamp(0)), now);
                        model.insert(k, v);
                        prop_assert_eq!(get(k), Some(v));
                    }
                    Op::Remove(k) => {
                        let was = get(k).is_some();
                        prop_assert_eq!(t.remove(&k), was);
                        model.remove(&k);
                        prop_assert_eq!(get(k), None);
                    }
                    Op::Hit(k) => {
                        let _ = get(k);
                    }
                    Op::Clear => {
                        t.clear();
                        model.clear();
                    }
                }
                let mut present = 0;
                for k in 0..24u32 {
                    match get(k) {
                        Some(v) => {
                            prop_assert_eq!(model.get(&k), Some(&v), "key {}", k);
                            present += 1;
                        }
                        // Evicted: it may come back only through a new put.
                        None => {
                            model.remove(&k);
                        }
                    }
                }
                prop_assert!(t.len() <= max);
                prop_assert_eq!(t.len(), present);
            }
        }
    }

    #[test]
    fn a_dead_entry_goes_before_used_ones() {
        let t: Table<u32, u32, ()> = Table::new(3);
        let short = |v| Entry {
            value: v,
            life: Lifetime::new(Timestamp(0), Duration::from_secs(1), Duration::ZERO),
        };
        for k in [1, 2] {
            let h = t.hash(&k);
            t.write(h).put(h, &k, entry(k, Timestamp(0)), Timestamp(0));
        }
        let h = t.hash(&3);
        t.write(h).put(h, &3, short(3), Timestamp(0));
        // All three were used since the hand last passed; 3 has died since, so it goes
        // first, not 1 after a sweep.
        for k in [1, 2, 3] {
            assert_eq!(t.get_fresh(t.hash(&k), &k, Timestamp(0)), Some(k));
        }
        let later = Timestamp(2_000_000_000);
        let h = t.hash(&4);
        t.write(h).put(h, &4, entry(4, later), later);
        let at = |k: u32| t.get_fresh(t.hash(&k), &k, later);
        assert_eq!(
            (at(1), at(2), at(3), at(4)),
            (Some(1), Some(2), None, Some(4))
        );
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
