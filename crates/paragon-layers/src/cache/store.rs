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
//! # Bytes
//!
//! The table is bounded by the bytes of its values as well as by their number, whichever
//! binds first. The caller gives each entry's weight (the bytes its value keeps alive)
//! when it stores it. Each shard has its share of `max_bytes`, as it has its share of
//! `max_entries`, and counts its own bytes under its own lock: a store never takes a
//! second shard's lock, and the bound holds at every instant without a global counter.
//! A store that takes a shard over its share evicts other entries of that shard in CLOCK
//! order until it is under again. An entry heavier than its shard's share is not stored
//! at all (and the key's older entry is dropped, so it is not served in its place). So
//! that this share is the whole bound for a small one, the table only splits into more
//! shards while each keeps at least [`MIN_BYTES_PER_SHARD`]; with the default bound of
//! 256 MiB a shard holds at least 4 MiB, four times the default largest answer.
//!
//! # Hashing
//!
//! Keys are chosen by clients, so they are hashed with a seed drawn at random for each
//! table (foldhash's `RandomState`): a client cannot compute a set of keys that all land
//! in one bucket or one shard, as it could with a fixed, public seed.
//!
//! # Why this table and not a crate's
//!
//! Set end to end against moka and quick_cache (BENCHMARKS.md, "The cache table against
//! moka and quick_cache"; `bench/tables.sh`, with the measurement-only features
//! `table-moka` and `table-quick` of `store_crate.rs`): moka costs ~10 % more CPU per
//! HTTP hit, 11–13 % fewer misses per second and ~200 B more per cached user; quick_cache
//! is at parity on hits (+1.5 % instructions) and ~6 % more CPU per miss, within this
//! machine's noise. What keeps the table is a guarantee neither crate gives: the
//! contract's two bounds, `max_entries` and `max_bytes`, each exact at every instant
//! (`bytes()` is the bytes held), a table of one entry holding one entry, and a dead
//! entry evicted before a live one. Both crates have one weighted capacity (the
//! variants fold the two bounds into it, over-weighing small entries) and split it into
//! shards of their own, so a small bound does not hold what it says (three of the cache
//! tests fail with quick_cache, two with moka).
//!
//! Lock order: a shard's flight registry may be held while its table is read, never the
//! other way round, and never while its table is written.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_utils::sync::{ShardedLock, ShardedLockReadGuard, ShardedLockWriteGuard};
use crossbeam_utils::CachePadded;
use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};

pub(crate) use super::freshness::Lookup;
use super::freshness::{Freshness, Lifetime};
use super::striped::StripedCounter;
use crate::Timestamp;

/// Most shards a table uses, on any machine.
const MAX_SHARDS: usize = 64;
/// Shards per core: enough that writers on different cores rarely meet, few enough that
/// the shards' headers, and each thread's sub-lock of each, stay in the L1 cache on the
/// hit path (on 2 cores, 8 shards: 64 made every hit fetch both from L2).
const SHARDS_PER_CORE: usize = 4;
/// Fewest entries a shard should hold before the table splits into more shards.
const MIN_PER_SHARD: usize = 64;
/// Fewest bytes a shard should hold before the table splits into more shards: an entry
/// heavier than its shard's share is never stored, so the share must not be small.
pub(crate) const MIN_BYTES_PER_SHARD: u64 = 4 << 20;
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
    /// The bytes the value keeps alive, as the caller weighed it; it fits in the padding
    /// of the cache line, so the slot does not grow.
    weight: u32,
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

/// The lookup of an entry past its TTL: off the hit path.
#[cold]
fn updating<K, V: Clone>(slot: &Slot<K, V>, now: Timestamp) -> Lookup<V> {
    if slot.entry.life.at(now) == Freshness::Updating {
        slot.touch();
        Lookup::Updating(slot.entry.value.clone())
    } else {
        Lookup::Miss
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

struct ShardInner<K, V> {
    /// The number of the slot of each key, hashed by the key.
    index: HashTable<u32>,
    /// The ring the CLOCK hand sweeps; `None` is a slot freed by a removal.
    slots: Vec<Option<Slot<K, V>>>,
    /// Slots freed by removals, filled before the ring grows or the hand evicts.
    free: Vec<u32>,
    /// The next slot the hand looks at.
    hand: usize,
    /// The sum of the weights of the entries held.
    bytes: u64,
}

impl<K: Eq, V> ShardInner<K, V> {
    fn new() -> Self {
        ShardInner {
            index: HashTable::new(),
            slots: Vec::new(),
            free: Vec::new(),
            hand: 0,
            bytes: 0,
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
        self.bytes = 0;
    }

    /// Empties slot `i` (already out of the index) and lists it as free.
    fn free_slot(&mut self, i: usize) {
        if let Some(slot) = self.slots[i].take() {
            self.bytes -= u64::from(slot.weight);
            self.free.push(i as u32);
        }
    }
}

/// A bounded, sharded table of entries, with its fills in progress.
pub(crate) struct Table<K, V, F> {
    shards: Box<[CachePadded<Shard<K, V, F>>]>,
    hits: StripedCounter,
    mask: usize,
    per_shard: usize,
    bytes_per_shard: u64,
    hasher: foldhash::fast::RandomState,
}

/// Write access to one shard's entries.
pub(crate) struct ShardWrite<'a, K, V> {
    guard: ShardedLockWriteGuard<'a, ShardInner<K, V>>,
    per_shard: usize,
    bytes_per_shard: u64,
}

/// The fills in progress of one shard, locked.
pub(crate) struct Flights<'a, K, F> {
    guard: MutexGuard<'a, HashTable<Flying<K, F>>>,
}

impl<K: Hash + Eq + Clone, V: Clone, F> Table<K, V, F> {
    /// A table that never holds more than `max_entries` entries, nor entries weighing
    /// more than `max_bytes` together.
    pub(crate) fn new(max_entries: usize, max_bytes: u64) -> Self {
        let max_entries = max_entries.max(1);
        let max_bytes = max_bytes.max(1);
        let most = (cores() * SHARDS_PER_CORE)
            .next_power_of_two()
            .min(MAX_SHARDS);
        let mut shards = 1;
        while shards * 2 <= most
            && max_entries / (shards * 2) >= MIN_PER_SHARD
            && max_bytes / (shards as u64 * 2) >= MIN_BYTES_PER_SHARD
        {
            shards *= 2;
        }
        // Slot numbers are `u32`: a shard holds at most 4,294,967,295 entries.
        let per_shard = (max_entries / shards).min(u32::MAX as usize);
        let bytes_per_shard = max_bytes / shards as u64;
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
            hits: StripedCounter::new(),
            per_shard,
            bytes_per_shard,
            hasher: foldhash::fast::RandomState::default(),
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
        match self.lookup(hash, key, now) {
            Lookup::Hit(v) => Some(v),
            _ => None,
        }
    }

    /// The entry of `key` if it may be answered now: fresh (a hit, counted), or past its
    /// TTL but within its `stale_while_revalidate` window. A hit costs one comparison of
    /// instants more than finding the slot.
    #[inline(always)]
    pub(crate) fn lookup(&self, hash: u64, key: &K, now: Timestamp) -> Lookup<V> {
        let guard = self.shard(hash).read();
        let Some(slot) = guard.slot(hash, key) else {
            return Lookup::Miss;
        };
        let entry = &slot.entry;
        if !entry.life.is_fresh(now) {
            return updating(slot, now);
        }
        slot.touch();
        let value = entry.value.clone();
        drop(guard);
        self.hits.add_one();
        Lookup::Hit(value)
    }

    /// The value of `key`'s entry, fresh or not; marks and counts nothing.
    pub(crate) fn peek(&self, hash: u64, key: &K) -> Option<V> {
        let guard = self.shard(hash).read();
        guard.slot(hash, key).map(|slot| slot.entry.value.clone())
    }

    /// Whether `key` has a fresh entry at `now`; marks and counts nothing.
    pub(crate) fn is_fresh(&self, hash: u64, key: &K, now: Timestamp) -> bool {
        let guard = self.shard(hash).read();
        guard
            .slot(hash, key)
            .is_some_and(|slot| slot.entry.life.is_fresh(now))
    }

    /// Exclusive access to the entries of the shard of `hash`.
    pub(crate) fn write(&self, hash: u64) -> ShardWrite<'_, K, V> {
        ShardWrite {
            guard: self.shard(hash).write(),
            per_shard: self.per_shard,
            bytes_per_shard: self.bytes_per_shard,
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

    /// The sum of the weights of the entries held now.
    pub(crate) fn bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.read().bytes).sum()
    }

    /// Hits served since start.
    pub(crate) fn hits(&self) -> u64 {
        self.hits.sum()
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

    /// Stores `entry`, which keeps `weight` bytes alive, for `key`: replaces its entry or,
    /// when it has none, evicts another first if the shard is full; then evicts others
    /// until the shard's bytes are within its share. An entry heavier than the whole share
    /// is not stored, and the key's older entry is dropped. True if it was stored.
    pub(crate) fn put(
        &mut self,
        hash: u64,
        key: &K,
        entry: Entry<V>,
        weight: usize,
        now: Timestamp,
    ) -> bool {
        let (per_shard, bytes_per_shard) = (self.per_shard, self.bytes_per_shard);
        let weight = match u32::try_from(weight) {
            Ok(w) if u64::from(w) <= bytes_per_shard => w,
            _ => {
                self.remove_entry(hash, key);
                return false;
            }
        };
        let shard = &mut *self.guard;
        let i = if let Some(i) = shard.position(hash, key) {
            if let Some(slot) = &mut shard.slots[i] {
                shard.bytes -= u64::from(slot.weight);
                slot.entry = entry;
                slot.weight = weight;
            }
            i
        } else {
            let i = if let Some(i) = shard.free.pop() {
                i as usize
            } else if shard.slots.len() < per_shard {
                // Grown by doubling, but never past the shard's share: a full cache
                // keeps no slack of empty slots (a fifth of a slot per entry at worst).
                let len = shard.slots.len();
                if len == shard.slots.capacity() {
                    shard.slots.reserve_exact(len.max(4).min(per_shard - len));
                }
                shard.slots.push(None);
                shard.slots.len() - 1
            } else {
                // The ring is full and holds no free slot, so the hand finds a victim.
                let Some(i) = evict_one(shard, now, None) else {
                    return false;
                };
                i
            };
            // Drops the evicted entry, if any, in the same stroke.
            shard.slots[i] = Some(Slot {
                key: key.clone(),
                hash,
                entry,
                weight,
                referenced: AtomicBool::new(false),
            });
            let slots = &shard.slots;
            // `i` fits: the ring never holds more than `per_shard` ≤ `u32::MAX` slots.
            shard.index.insert_unique(hash, i as u32, |&j| {
                slots[j as usize].as_ref().map_or(0, |s| s.hash)
            });
            i
        };
        shard.bytes += u64::from(weight);
        // The new entry alone fits, so there is another to evict while the shard is over.
        while shard.bytes > bytes_per_shard {
            let Some(victim) = evict_one(shard, now, Some(i)) else {
                break;
            };
            shard.slots[victim] = None;
            shard.free.push(victim as u32);
        }
        true
    }

    /// Drops the entry of `key`; true if there was one.
    pub(crate) fn remove_entry(&mut self, hash: u64, key: &K) -> bool {
        let shard = &mut *self.guard;
        let Some(i) = shard.position(hash, key) else {
            return false;
        };
        shard.unindex(hash, i);
        shard.free_slot(i);
        true
    }
}

/// CLOCK: advances the hand over the ring, giving live entries used since its last pass
/// a second chance, passing over free slots and the slot `keep`, and takes the first
/// other entry out of the index and out of the shard's bytes. Returns that slot's number,
/// its entry still in it: the caller stores the new entry there, or frees it. `None` only
/// when the ring holds no entry but `keep`.
///
/// A whole sweep clears every mark it passes, so within two the hand finds a victim.
fn evict_one<K: Eq, V>(
    shard: &mut ShardInner<K, V>,
    now: Timestamp,
    keep: Option<usize>,
) -> Option<usize> {
    let len = shard.slots.len();
    for _ in 0..2 * len {
        let i = shard.hand;
        shard.hand = if i + 1 == len { 0 } else { i + 1 };
        if keep == Some(i) {
            continue;
        }
        let Some(slot) = &mut shard.slots[i] else {
            continue;
        };
        let dead = slot.entry.life.at(now) == Freshness::Dead;
        if dead || !std::mem::replace(slot.referenced.get_mut(), false) {
            let (hash, weight) = (slot.hash, slot.weight);
            shard.unindex(hash, i);
            shard.bytes -= u64::from(weight);
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::freshness::Grace;
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn entry(v: u32, now: Timestamp) -> Entry<u32> {
        Entry {
            value: v,
            life: Lifetime::new(now, Duration::from_secs(10), Grace::NONE),
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
        let n = Table::<u32, u32, ()>::new(1_000_000, u64::MAX).shards.len();
        assert!(n.is_power_of_two(), "{n} shards");
        // At least one shard per core (up to the bound), so writers rarely meet...
        assert!(n >= cores.min(MAX_SHARDS), "{n} shards for {cores} cores");
        // ...and no more than a few per core, so the hit path's headers stay in L1.
        assert!(
            n <= cores * SHARDS_PER_CORE * 2 && n <= MAX_SHARDS,
            "{n} shards"
        );
        // A small table keeps at least MIN_PER_SHARD entries per shard.
        let small = Table::<u32, u32, ()>::new(MIN_PER_SHARD * 2, u64::MAX)
            .shards
            .len();
        assert!(
            small <= 2,
            "{small} shards for {} entries",
            MIN_PER_SHARD * 2
        );
        // A small byte bound keeps one shard, so its share is the whole bound; a large
        // one never gives a shard less than MIN_BYTES_PER_SHARD.
        let one = Table::<u32, u32, ()>::new(1_000_000, MIN_BYTES_PER_SHARD * 2 - 1);
        assert_eq!(one.shards.len(), 1);
        assert_eq!(one.bytes_per_shard, MIN_BYTES_PER_SHARD * 2 - 1);
        let big = Table::<u32, u32, ()>::new(1_000_000, 256 << 20);
        assert!(big.bytes_per_shard >= MIN_BYTES_PER_SHARD);
        assert!(big.bytes_per_shard * big.shards.len() as u64 <= 256 << 20);
    }

    #[test]
    fn each_table_hashes_with_its_own_random_seed() {
        // With a fixed seed, every table (and every process) hashes a key the same way,
        // and a client can pick keys that collide.
        let a = Table::<u32, u32, ()>::new(10, 10);
        let b = Table::<u32, u32, ()>::new(10, 10);
        let differ = (0..4u32).filter(|k| a.hash(k) != b.hash(k)).count();
        assert_eq!(differ, 4);
    }

    /// Stores `k` (value `k`) weighing `w` bytes; true if it was stored.
    fn put_weighing(t: &Table<u32, u32, ()>, k: u32, w: usize) -> bool {
        let h = t.hash(&k);
        t.write(h)
            .put(h, &k, entry(k, Timestamp(0)), w, Timestamp(0))
    }

    /// The keys of `keys` that have an entry, without marking them used.
    fn present(t: &Table<u32, u32, ()>, keys: std::ops::RangeInclusive<u32>) -> Vec<u32> {
        keys.filter(|k| t.write(t.hash(k)).get(t.hash(k), k).is_some())
            .collect()
    }

    #[test]
    fn a_store_over_max_bytes_evicts_in_clock_order_until_under() {
        let t: Table<u32, u32, ()> = Table::new(100, 100);
        for k in 1..=5 {
            assert!(put_weighing(&t, k, 20));
        }
        assert_eq!(t.bytes(), 100);
        // 2 was used since the hand last passed: it gets a second chance.
        assert_eq!(t.get_fresh(t.hash(&2), &2, Timestamp(0)), Some(2));
        // 150 bytes: the hand evicts 1, passes 2, evicts 3 and 4, and stops at 90.
        assert!(put_weighing(&t, 6, 50));
        assert_eq!(t.bytes(), 90);
        assert_eq!(present(&t, 1..=6), [2, 5, 6]);
        // The hand goes on from where it stopped: 5 goes, and that is enough.
        assert!(put_weighing(&t, 7, 30));
        assert_eq!((present(&t, 1..=7), t.bytes()), (vec![2, 6, 7], 100));
        // Then 6, next in the ring, though 2 was stored before it.
        assert!(put_weighing(&t, 8, 30));
        assert_eq!((present(&t, 1..=8), t.bytes()), (vec![2, 7, 8], 80));
    }

    #[test]
    fn a_replaced_entry_is_weighed_anew() {
        let t: Table<u32, u32, ()> = Table::new(100, 100);
        assert!(put_weighing(&t, 1, 60));
        assert!(put_weighing(&t, 2, 30));
        assert!(put_weighing(&t, 1, 10));
        assert_eq!(t.bytes(), 40);
        // Growing 2 past the bound evicts 1, never 2 itself.
        assert!(put_weighing(&t, 2, 95));
        assert_eq!((present(&t, 1..=2), t.bytes()), (vec![2], 95));
        assert!(t.remove(&2));
        assert_eq!(t.bytes(), 0);
    }

    #[test]
    fn an_entry_heavier_than_the_bound_is_not_stored_and_its_old_entry_goes() {
        let t: Table<u32, u32, ()> = Table::new(100, 100);
        assert!(put_weighing(&t, 1, 10));
        assert!(put_weighing(&t, 2, 10));
        assert!(!put_weighing(&t, 3, 101));
        assert_eq!((present(&t, 1..=3), t.bytes()), (vec![1, 2], 20));
        // A heavier new answer for 1 is not cached, and the old one is not served for it.
        assert!(!put_weighing(&t, 1, 101));
        assert_eq!((present(&t, 1..=3), t.bytes()), (vec![2], 10));
        // Exactly the bound fits, alone.
        assert!(put_weighing(&t, 4, 100));
        assert_eq!((present(&t, 1..=4), t.bytes()), (vec![4], 100));
        // A weight that does not fit a slot's counter is refused, whatever the bound.
        let huge: Table<u32, u32, ()> = Table::new(10, u64::MAX);
        assert!(!put_weighing(&huge, 1, u32::MAX as usize + 1));
        assert_eq!(huge.len(), 0);
    }

    fn put(t: &Table<u32, u32, ()>, k: u32, now: Timestamp) {
        let h = t.hash(&k);
        let mut w = t.write(h);
        w.put(h, &k, entry(k, now), 4, now);
    }

    #[test]
    fn never_holds_more_than_max_entries() {
        for max in [1usize, 7, 100, 5000] {
            let t: Table<u32, u32, ()> = Table::new(max, u64::MAX);
            for k in 0..(max as u32 * 5) {
                put(&t, k, Timestamp(0));
                assert!(t.len() <= max, "max {max}: {} entries", t.len());
            }
        }
    }

    #[test]
    fn a_full_shard_keeps_no_slack_of_empty_slots() {
        for max in [10usize, 1000, 5000] {
            let t: Table<u32, u32, ()> = Table::new(max, u64::MAX);
            for k in 0..(max as u32 * 3) {
                put(&t, k, Timestamp(0));
            }
            for shard in t.shards.iter() {
                let slots = &shard.write().slots;
                assert_eq!(slots.len(), t.per_shard, "max {max}: the ring is full");
                assert_eq!(slots.capacity(), t.per_shard, "max {max}: and exactly so");
            }
        }
    }

    #[test]
    fn the_hand_evicts_the_oldest_unused_entry_and_moves_on() {
        // Four entries fit: one shard, its ring in the order of the stores.
        let t: Table<u32, u32, ()> = Table::new(4, u64::MAX);
        assert_eq!(t.shards.len(), 1);
        for k in 1..=4 {
            put(&t, k, Timestamp(0));
        }
        // The oldest goes first, then the next: never the entry just stored.
        put(&t, 5, Timestamp(0));
        assert_eq!(present(&t, 1..=9), [2, 3, 4, 5]);
        put(&t, 6, Timestamp(0));
        assert_eq!(present(&t, 1..=9), [3, 4, 5, 6]);
        // 3 was used: it gets a second chance, and 4, next in the ring, goes instead.
        assert_eq!(t.get_fresh(t.hash(&3), &3, Timestamp(0)), Some(3));
        put(&t, 7, Timestamp(0));
        assert_eq!(present(&t, 1..=9), [3, 5, 6, 7]);
        // The hand wraps round to the oldest, 5; 3 has had its chance and goes after.
        put(&t, 8, Timestamp(0));
        assert_eq!(present(&t, 1..=9), [3, 6, 7, 8]);
        put(&t, 9, Timestamp(0));
        assert_eq!(present(&t, 1..=9), [3, 7, 8, 9]);
    }

    #[test]
    fn keys_spread_over_every_shard_and_fill_the_whole_bound() {
        let max = 1000;
        let t: Table<u32, u32, ()> = Table::new(max, u64::MAX);
        assert!(t.shards.len() > 1, "{} shards", t.shards.len());
        for k in 0..(max as u32 * 4) {
            put(&t, k, Timestamp(0));
        }
        // Four times as many keys as fit: every shard is reached and full, so the table
        // holds all it may, not one shard's share.
        for (n, shard) in t.shards.iter().enumerate() {
            assert_eq!(shard.read().index.len(), t.per_shard, "shard {n}");
        }
        assert_eq!(t.len(), t.per_shard * t.shards.len());
        assert!(t.len() > max / 2, "{} of {max} entries", t.len());
    }

    /// A key whose hash is chosen by the test: keys with the same `hash` and different
    /// `id`s collide on the whole hash (so on the shard and hashbrown's tag as well).
    #[derive(Clone, Debug)]
    struct Chosen {
        id: u32,
        hash: u64,
    }

    impl PartialEq for Chosen {
        fn eq(&self, other: &Self) -> bool {
            self.id == other.id
        }
    }

    impl Eq for Chosen {}

    impl Hash for Chosen {
        fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
            self.hash.hash(state);
        }
    }

    fn put_chosen(t: &Table<Chosen, u32, ()>, k: &Chosen) {
        let h = t.hash(k);
        t.write(h)
            .put(h, k, entry(k.id, Timestamp(0)), 4, Timestamp(0));
    }

    fn get_chosen(t: &Table<Chosen, u32, ()>, k: &Chosen) -> Option<u32> {
        t.get_fresh(t.hash(k), k, Timestamp(0))
    }

    #[test]
    fn keys_with_the_same_hash_answer_each_its_own_value() {
        let t: Table<Chosen, u32, ()> = Table::new(100, u64::MAX);
        let key = |id| Chosen { id, hash: 7 };
        assert_eq!(t.hash(&key(1)), t.hash(&key(2)), "a full-hash collision");
        for id in 1..=5 {
            put_chosen(&t, &key(id));
        }
        for id in 1..=5 {
            assert_eq!(get_chosen(&t, &key(id)), Some(id));
        }
        // A key never stored, with the same hash, has no entry: not another key's.
        assert_eq!(get_chosen(&t, &key(6)), None);
        assert!(!t.is_fresh(t.hash(&key(6)), &key(6), Timestamp(0)));
        assert!(t.remove(&key(3)));
        assert!(!t.remove(&key(3)));
        let left: Vec<_> = (1..=6).filter_map(|id| get_chosen(&t, &key(id))).collect();
        assert_eq!(left, [1, 2, 4, 5]);
    }

    #[test]
    fn keys_sharing_a_tag_but_not_a_hash_answer_each_its_own_value() {
        // 400 different hashes among hashbrown's 128 tags: many share one. Keys never
        // stored, with hashes of their own, must find nothing though their tag matches.
        let t: Table<Chosen, u32, ()> = Table::new(10_000, u64::MAX);
        let stored = |id: u32| Chosen {
            id,
            hash: u64::from(id),
        };
        let absent = |id: u32| Chosen {
            id: id + 1_000_000,
            hash: u64::from(id) + 1_000_000,
        };
        for id in 0..400 {
            put_chosen(&t, &stored(id));
        }
        for id in 0..400 {
            assert_eq!(get_chosen(&t, &stored(id)), Some(id));
            assert_eq!(get_chosen(&t, &absent(id)), None, "absent key {id}");
        }
    }

    #[test]
    fn referenced_entries_survive_a_scan() {
        let t: Table<u32, u32, ()> = Table::new(10, u64::MAX);
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
        let t: Table<u32, u32, ()> = Table::new(100, u64::MAX);
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
        /// Whatever is stored, removed or used, the table never holds more than
        /// `max_bytes` nor more than `max_entries`, its byte count is the sum of the weights
        /// of the entries it answers, each answers its last stored value, and an entry
        /// that fits alone is always there right after it is stored.
        #[test]
        fn never_holds_more_than_max_bytes(
            max in 1usize..12,
            max_bytes in 1u64..200,
            ops in prop::collection::vec((0..24u32, 0usize..250, 0..10u8), 1..300),
        ) {
            let t: Table<u32, u32, ()> = Table::new(max, max_bytes);
            let mut model: std::collections::HashMap<u32, (u32, u64)> = Default::default();
            let now = Timestamp(1);
            let get = |k: u32| t.get_fresh(t.hash(&k), &k, now);
            for (n, (k, w, what)) in ops.into_iter().enumerate() {
                match what {
                    0 => {
                        t.remove(&k);
                        model.remove(&k);
                    }
                    1..=3 => {
                        let _ = get(k);
                    }
                    _ => {
                        let v = n as u32;
                        let h = t.hash(&k);
                        let stored = t.write(h).put(h, &k, entry(v, Timestamp(0)), w, now);
                        prop_assert_eq!(stored, w as u64 <= max_bytes);
                        if stored {
                            model.insert(k, (v, w as u64));
                            prop_assert_eq!(get(k), Some(v));
                        } else {
                            model.remove(&k);
                            prop_assert_eq!(get(k), None);
                        }
                    }
                }
                let mut bytes = 0;
                let mut present = 0;
                for k in 0..24u32 {
                    match get(k) {
                        Some(v) => {
                            let (mv, mw) = model[&k];
                            prop_assert_eq!(mv, v, "key {}", k);
                            bytes += mw;
                            present += 1;
                        }
                        None => {
                            model.remove(&k);
                        }
                    }
                }
                prop_assert!(t.bytes() <= max_bytes, "{} bytes over {}", t.bytes(), max_bytes);
                prop_assert_eq!(t.bytes(), bytes);
                prop_assert!(t.len() <= max);
                prop_assert_eq!(t.len(), present);
            }
        }

        /// Against a model of what may be cached: the table never answers a value that
        /// was not the last one stored for its key, never answers a removed key, always
        /// answers the key it just stored, never holds more than `max` entries, and its
        /// count matches the keys it answers (the index and the slots agree).
        #[test]
        fn answers_only_what_was_stored_last(max in 1usize..10, ops in prop::collection::vec(op(), 1..300)) {
            let t: Table<u32, u32, ()> = Table::new(max, u64::MAX);
            let mut model = std::collections::HashMap::new();
            let now = Timestamp(1);
            let get = |k: u32| t.get_fresh(t.hash(&k), &k, now);
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        let h = t.hash(&k);
                        t.write(h).put(h, &k, entry(v, Timestamp(0)), 4, now);
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
    fn an_entry_past_its_ttl_is_updating_only_within_its_window() {
        let t: Table<u32, u32, ()> = Table::new(10, u64::MAX);
        let grace = Grace {
            stale_while_revalidate: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(60),
        };
        let h = t.hash(&1);
        let life = Lifetime::new(Timestamp(0), Duration::from_secs(1), grace);
        t.write(h)
            .put(h, &1, Entry { value: 7, life }, 4, Timestamp(0));
        let at = |s: u64| match t.lookup(h, &1, Timestamp(s * 1_000_000_000)) {
            Lookup::Hit(v) => ("hit", v),
            Lookup::Updating(v) => ("updating", v),
            Lookup::Miss => ("miss", 0),
        };
        assert_eq!(at(0), ("hit", 7));
        assert_eq!(at(1), ("updating", 7));
        assert_eq!(at(5), ("updating", 7));
        // Within stale_if_error only: not answered without the upstream.
        assert_eq!(at(6), ("miss", 0));
        // Only the fresh answer counts as a hit.
        assert_eq!(t.hits(), 1);
    }

    #[test]
    fn a_dead_entry_goes_before_used_ones() {
        let t: Table<u32, u32, ()> = Table::new(3, u64::MAX);
        let short = |v| Entry {
            value: v,
            life: Lifetime::new(Timestamp(0), Duration::from_secs(1), Grace::NONE),
        };
        for k in [1, 2] {
            let h = t.hash(&k);
            t.write(h)
                .put(h, &k, entry(k, Timestamp(0)), 4, Timestamp(0));
        }
        let h = t.hash(&3);
        t.write(h).put(h, &3, short(3), 4, Timestamp(0));
        // All three were used since the hand last passed; 3 has died since, so it goes
        // first, not 1 after a sweep.
        for k in [1, 2, 3] {
            assert_eq!(t.get_fresh(t.hash(&k), &k, Timestamp(0)), Some(k));
        }
        let later = Timestamp(2_000_000_000);
        let h = t.hash(&4);
        t.write(h).put(h, &4, entry(4, later), 4, later);
        let at = |k: u32| t.get_fresh(t.hash(&k), &k, later);
        assert_eq!(
            (at(1), at(2), at(3), at(4)),
            (Some(1), Some(2), None, Some(4))
        );
    }

    #[test]
    fn flights_are_found_by_key_and_removed_only_by_their_owner() {
        let t: Table<u32, u32, u8> = Table::new(100, u64::MAX);
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
