//! A TTL cache layer with single-flight fills, `stale_if_error` and negative caching.
//!
//! - A fresh entry is answered from memory: the inner service is not called, so a hit
//!   costs no rate-limit budget and never touches a circuit breaker below.
//! - Concurrent misses for one key share one fill: the first caller starts it, the others
//!   wait for it. A fill that the inner service answers at once is answered inline (the
//!   call polls it once, with `now_or_never`); one that has to wait moves to its own task,
//!   so a caller that gives up does not cancel it for the rest.
//! - Only successful answers are stored, plus "does not exist" answers when
//!   `negative_ttl` is set ([`CachePolicy::is_negative`]). Failures are never stored.
//! - When a fill fails in a way the upstream could not answer
//!   ([`CachePolicy::serve_stale`]) and an expired entry is still within
//!   `stale_if_error`, that entry is answered with [`CacheStatus::Stale`].
//!
//! - The table is bounded by `max_entries` and by `max_bytes` of answers, whichever binds
//!   first; an answer says what it weighs through [`CacheWeight`].
//! - Past its TTL, an entry within `stale_while_revalidate` is answered at once
//!   ([`CacheStatus::Updating`]) while one background refresh of its key runs (a request
//!   marked [`Priority::Background`](crate::Priority)); TTLs are shortened at random by
//!   up to `ttl_jitter`.
//! - With `revalidate`, a refill of an expired entry is made conditional on it
//!   ([`Revalidate`]); an answer that says "not modified" ([`NotModified`]) renews the
//!   entry ([`CacheStatus::Revalidated`]).
//!
//! The request names its key through [`CacheKey`]; the response learns how it was
//! answered through [`CacheStatusSink`].
//!
//! # Layout
//! `layer.rs` configuration and the layer, `service.rs` the service and fills,
//! `freshness.rs` the pure freshness rule, `store.rs` the bounded sharded table,
//! `error.rs` the error of a fill that never finished, `tier.rs` the optional shared second
//! tier (for a fleet of instances) that misses consult before the upstream.

mod error;
pub mod freshness;
mod layer;
mod service;
// The table: `store.rs`, the one shipped. The features `table-moka` and `table-quick`
// swap in a measurement variant over a crate (`store_crate.rs`); with both (as with
// `--all-features`) the shipped table is built.
#[cfg(any(
    not(any(feature = "table-moka", feature = "table-quick")),
    all(feature = "table-moka", feature = "table-quick")
))]
mod store;
#[cfg(any(
    all(feature = "table-moka", not(feature = "table-quick")),
    all(feature = "table-quick", not(feature = "table-moka"))
))]
#[path = "store_crate.rs"]
mod store;
mod striped;
mod tier;

pub use error::FillAborted;
pub use layer::{CacheConfig, CacheConfigBuilder, CacheLayer};
pub use service::{Cache, CacheHandle, CacheStats, Purged};
pub use tier::{CachedValue, Claim, SharedTier, TierCodec, TierEntry, TierError};

use std::borrow::Cow;
use std::hash::Hash;

/// A request that names the cache key of its answer.
pub trait CacheKey {
    /// The key type; cheap to hash and compare.
    type Key: Hash + Eq + Clone + Send + Sync + 'static;

    /// The key of this request (borrowed where the request is its own key).
    fn cache_key(&self) -> Cow<'_, Self::Key>;
}

/// How an answer was produced, as seen by the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum CacheStatus {
    /// Served from a fresh entry.
    Hit,
    /// Fetched from the inner service (or no cache in the stack).
    #[default]
    Miss,
    /// The inner service could not answer; an expired entry within `stale_if_error` was served.
    Stale,
    /// An expired entry within `stale_while_revalidate`, answered at once while one
    /// background refresh of it runs.
    Updating,
    /// The entry was expired; the inner service said it had not changed, so it was
    /// renewed and served (a conditional refresh answered "not modified").
    Revalidated,
}

impl CacheStatus {
    /// `HIT`, `MISS`, `STALE`, `UPDATING` or `REVALIDATED`, as in an `x-cache` header.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Updating => "UPDATING",
            CacheStatus::Revalidated => "REVALIDATED",
        }
    }
}

/// An answer that can say how many bytes it keeps alive while cached, so the cache is
/// bounded by bytes (`max_bytes`) as well as by entries. The cache knows nothing of the
/// answer's type; its user says what an answer weighs, typically the length of its body.
pub trait CacheWeight {
    /// The bytes this answer keeps alive, for example the length of the body it holds.
    /// A cached "does not exist" weighs nothing; it is bounded by `max_entries`.
    fn cache_weight(&self) -> usize;
}

/// A response that can carry its [`CacheStatus`].
pub trait CacheStatusSink {
    /// Records how this response was produced.
    fn set_cache_status(&mut self, status: CacheStatus);
}

/// A request the cache can make conditional on the answer it holds, so that the upstream
/// may answer "not modified" instead of the whole answer again (HTTP `If-None-Match`,
/// `If-Modified-Since`).
pub trait Revalidate<R> {
    /// Makes this request conditional on `cached` being still current; `false` (and the
    /// request unchanged) when `cached` has nothing to compare by.
    fn revalidate_against(&mut self, cached: &R) -> bool;
}

/// An answer that may say "the answer you hold is still current" (HTTP `304`). Only a
/// request made conditional through [`Revalidate`] gets one; the cache then renews its
/// entry and answers the entry ([`CacheStatus::Revalidated`]).
pub trait NotModified {
    /// Whether this answer says the cached answer is still current.
    fn is_not_modified(&self) -> bool;
}

/// What the cache may do with an error of the inner service.
pub trait CachePolicy {
    /// A definitive "does not exist" answer, cached for `negative_ttl` when that is set.
    fn is_negative(&self) -> bool;
    /// The upstream could not answer (failure, breaker open, rate limited): a stale entry
    /// may be served instead.
    fn serve_stale(&self) -> bool;
}
