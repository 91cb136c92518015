//! A shared second tier behind the local cache (for example Redis, shared by a fleet).
//!
//! On a local miss the fill asks the tier first. A fresh entry there is used without an
//! upstream call. Otherwise the fill tries to *claim* the key for the fleet: the claimant
//! calls the upstream and publishes the answer (only while its claim still holds, so a
//! late filler never overwrites a newer fill); the others poll the tier for that answer.
//! A tier that cannot be reached is simply skipped.

use std::time::Duration;

use futures_util::future::BoxFuture;

/// What a cache entry holds: an answer, or a cached "does not exist".
#[derive(Clone, Debug, PartialEq)]
pub enum CachedValue<R, E> {
    /// A successful answer.
    Value(R),
    /// A negative answer, cached for `negative_ttl`.
    Negative(E),
}

/// A tier's entry for a key.
#[derive(Clone, Debug)]
pub enum TierEntry<R, E> {
    /// Fresh for `fresh_for` more.
    Fresh {
        /// The entry.
        value: CachedValue<R, E>,
        /// Remaining freshness, by the tier's own clock.
        fresh_for: Duration,
    },
    /// Past its TTL but within its stale window.
    Stale(R),
    /// Nothing usable (or the tier is unreachable).
    Absent,
}

/// The outcome of trying to claim a key's fill for the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This instance fills; the token proves it when publishing.
    Leader(u64),
    /// Another instance is filling.
    Follower,
    /// The tier cannot be reached: fill without it.
    Unavailable,
}

/// A shared tier of cache entries.
pub trait SharedTier<K, R, E>: Send + Sync + 'static {
    /// The entry of `key`.
    fn lookup<'a>(&'a self, key: &'a K) -> BoxFuture<'a, TierEntry<R, E>>;
    /// Tries to become the fleet's filler of `key` for at most `hold`.
    fn claim<'a>(&'a self, key: &'a K, hold: Duration) -> BoxFuture<'a, Claim>;
    /// Stores `value` (fresh for `ttl`, then stale for `stale`) if `token` still holds the
    /// claim, and releases it.
    fn publish<'a>(
        &'a self,
        key: &'a K,
        token: u64,
        value: &'a CachedValue<R, E>,
        ttl: Duration,
        stale: Duration,
    ) -> BoxFuture<'a, ()>;
    /// Gives up a claim without publishing.
    fn release<'a>(&'a self, key: &'a K, token: u64) -> BoxFuture<'a, ()>;
    /// Drops the entry of `key`, or every entry; how many entries it really removed, or
    /// why it could not.
    fn purge<'a>(&'a self, key: Option<&'a K>) -> BoxFuture<'a, Result<u64, TierError>>;
}

/// Why a shared tier could not do what was asked (its reason, for an operator).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TierError(pub String);

/// Turns entries into bytes for a tier that stores bytes.
pub trait TierCodec<K, R, E>: Send + Sync + 'static {
    /// A stable text form of the key, unique per key.
    fn key(&self, key: &K) -> String;
    /// The entry as bytes; `None` if it cannot be stored.
    fn encode(&self, value: &CachedValue<R, E>) -> Option<Vec<u8>>;
    /// The entry back; `None` if the bytes are not a valid entry for `key`.
    fn decode(&self, key: &K, bytes: &[u8]) -> Option<CachedValue<R, E>>;
}
