//! Fleet mode: state shared by every instance through Redis (feature `redis`).
//!
//! - [`RedisLink`] — one connection to a standalone Redis (plain or TLS), a Redis Cluster
//!   (the redis crate's cluster client) or a Sentinel-managed master (its sentinel client),
//!   with a short timeout on every call, a health loop that notices outages and recoveries
//!   (each reason logged once, and kept for the status page), and a heartbeat that counts
//!   the live instances;
//! - [`RedisRateStore`] — the rate budget as one atomic GCRA step in a Lua script on
//!   Redis's own clock, with the fleet-wide 429 pause, falling back to a local budget of
//!   `1/n` of the fleet's (n = live instances last seen, or as configured) while Redis is
//!   unreachable;
//! - [`RedisKeyedBudget`] — a budget per key (a frontend client) shared by the fleet, the
//!   same GCRA step on a key of its own;
//! - [`RedisTier`] — a shared second cache tier with a fenced fill lock, so one cold key
//!   costs one upstream call across the fleet.
//!
//! All keys live under the configured prefix and carry a Redis Cluster hash tag, so the
//! keys one script touches always share a slot: `{rate}` for the budget, the pause and the
//! heartbeat, `{c:KEY}` for a cache entry and its fill lock. Cache entries therefore
//! spread over the cluster's slots, and a purge scans every master.

mod link;
mod rate_store;
mod tier;

pub use link::{LinkOptions, RedisConn, RedisLink, RedisTarget, Unavailable};
pub use rate_store::{RedisKeyedBudget, RedisRateStore};
pub use tier::RedisTier;
