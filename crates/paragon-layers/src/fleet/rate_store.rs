//! The limiter's state in Redis: one GCRA budget for the fleet, on Redis's clock.
//!
//! Each acquire is one Lua script (read, step, write atomically), so instances never race
//! and their clocks never matter. While Redis is unusable, each instance falls back to
//! its share of the budget in memory. [`RedisKeyedBudget`] is the same step per key
//! (a client's share of the upstream budget).

use std::time::Duration;

use crate::rate_limit::gcra::Gcra;
use crate::rate_limit::{Acquire, BudgetState, MemoryStore, RateLimitConfig, RateStore};
use crate::Clock;

use super::RedisLink;

/// One GCRA step on Redis's clock (`TIME`), so hosts with skewed clocks cannot
/// over-issue. Times in microseconds. Every script that writes after `TIME` first asks
/// for effects replication, which Redis 3.2–4.0 need and later versions always do.
///
/// KEYS: tat, pause. ARGV: interval, tolerance, max_wait, key ttl (ms).
/// Returns {0, wait} admitted, {1, retry_after} over budget, {2, retry_after} paused.
const ACQUIRE: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if now < paused then
  return {2, paused - now}
end
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if allow_at - now > max_wait then
  return {1, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ARGV[4])
if allow_at > now then
  return {0, allow_at - now}
end
return {0, 0}
"#;

/// A budget per key (a frontend client, say), shared by the fleet: the same GCRA step as
/// [`RedisRateStore`]'s, on a key of its own, never waiting and never paused.
///
/// Its keys are `PREFIX{NAME:KEY}:tat` (and an unused `…:pause` beside it, in the same
/// slot), so each key's budget lives on one node of a cluster and budgets spread over
/// the slots. Each expires once its budget is whole again.
pub struct RedisKeyedBudget {
    link: RedisLink,
    name: String,
    /// Replaced when the budget changes ([`set_gcra`](Self::set_gcra)).
    gcra: parking_lot::Mutex<Gcra>,
    acquire: redis::Script,
}

impl RedisKeyedBudget {
    /// Budgets named `name` (one per key) of `gcra` on `link`.
    pub fn new(link: RedisLink, name: &str, gcra: Gcra) -> Self {
        RedisKeyedBudget {
            link,
            name: name.to_owned(),
            gcra: parking_lot::Mutex::new(gcra),
            acquire: redis::Script::new(ACQUIRE),
        }
    }

    /// Takes a new budget for every key from now on. The keys' TATs in Redis are kept as
    /// they are, as the fleet's are ([`RedisRateStore`]'s `reconfigure`): each instance
    /// changes at its own moment.
    pub fn set_gcra(&self, gcra: Gcra) {
        *self.gcra.lock() = gcra;
    }

    /// Charges `n` calls to `key`'s budget: `Some(Ok(()))` when they conform,
    /// `Some(Err(retry_after))` when they do not (nothing charged), `None` when Redis
    /// cannot be used (the caller falls back to a budget of its own).
    pub async fn take(&self, key: &str, n: u32) -> Option<Result<(), Duration>> {
        let prefix = self.link.prefix();
        let tat_key = format!("{prefix}{{{}:{key}}}:tat", self.name);
        let pause_key = format!("{prefix}{{{}:{key}}}:pause", self.name);
        let gcra = *self.gcra.lock();
        let cost = (gcra.interval / 1_000).max(1).saturating_mul(u64::from(n));
        let tolerance = gcra.tolerance / 1_000;
        let ttl = (gcra.tolerance + gcra.interval) / 1_000_000 + 1_000;
        let reply = self
            .link
            .call(|mut c| {
                let (tat_key, pause_key) = (&tat_key, &pause_key);
                async move {
                    self.acquire
                        .key(tat_key)
                        .key(pause_key)
                        .arg(cost)
                        .arg(tolerance)
                        .arg(0u64)
                        .arg(ttl)
                        .invoke_async::<(u8, u64)>(&mut c)
                        .await
                }
            })
            .await?;
        Some(match reply {
            (0, _) => Ok(()),
            (_, retry) => Err(Duration::from_micros(retry)),
        })
    }
}

/// Extends the fleet's pause to `now + ARGV[1]` µs (a longer pause wins).
const PAUSE: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local untilt = now + tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if untilt > cur then
  redis.call('SET', KEYS[1], string.format('%d', untilt), 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1000)
end
return 1
"#;

/// {tat - now, paused_until - now} in µs, each at least 0.
const STATE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
return {math.max(tat - now, 0), math.max(paused - now, 0)}
"#;

/// A rate budget shared by every instance through Redis, with a local fallback.
///
/// While Redis is unreachable each instance keeps a local budget of `1/n` of the fleet's
/// (`n` = [`RedisLink::fallback_instances`]: the configured count, or the live instances
/// at the last heartbeat): the fleet as a whole then stays near
/// its quota without any coordination, and nobody waits on a dead Redis. A 429 pause is
/// kept locally as well as in Redis, so it holds through an outage.
pub struct RedisRateStore {
    link: RedisLink,
    tat_key: String,
    pause_key: String,
    /// The fleet's settings, for the local fallback; replaced when they change.
    config: parking_lot::Mutex<RateLimitConfig>,
    local: MemoryStore,
    acquire: redis::Script,
    pause: redis::Script,
    state: redis::Script,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl RedisRateStore {
    /// A store for `config` on `link`; the local fallback runs on `clock`.
    pub fn new(link: RedisLink, config: RateLimitConfig, clock: Clock) -> Self {
        let prefix = link.prefix().to_string();
        RedisRateStore {
            tat_key: format!("{prefix}{{rate}}:tat"),
            pause_key: format!("{prefix}{{rate}}:pause"),
            link,
            config: parking_lot::Mutex::new(config),
            local: MemoryStore::new(clock),
            acquire: redis::Script::new(ACQUIRE),
            pause: redis::Script::new(PAUSE),
            state: redis::Script::new(STATE),
        }
    }

    /// The link used.
    pub fn link(&self) -> &RedisLink {
        &self.link
    }

    /// The local budget used while Redis is unreachable: the fleet's divided by the
    /// instances assumed live.
    pub fn fallback_gcra(&self) -> Gcra {
        let n = self.link.fallback_instances();
        let config = *self.config.lock();
        let max = (config.max_requests.get() / n).max(1);
        let burst = (config.burst.get() / n).max(1);
        Gcra::new(max, config.window, burst)
    }

    fn key_ttl_ms(&self, gcra: &Gcra) -> u64 {
        // The TAT never runs more than the tolerance ahead; keep it a little longer.
        (gcra.tolerance + gcra.interval) / 1_000_000 + 1_000
    }
}

impl RateStore for RedisRateStore {
    async fn acquire(&self, gcra: &Gcra, max_wait: Duration) -> Acquire {
        let interval = (gcra.interval / 1_000).max(1);
        let tolerance = gcra.tolerance / 1_000;
        let ttl = self.key_ttl_ms(gcra);
        let reply = self
            .link
            .call(|mut c| async move {
                self.acquire
                    .key(&self.tat_key)
                    .key(&self.pause_key)
                    .arg(interval)
                    .arg(tolerance)
                    .arg(micros(max_wait))
                    .arg(ttl)
                    .invoke_async::<(u8, u64)>(&mut c)
                    .await
            })
            .await;
        match reply {
            Some((0, wait)) => Acquire::Admit {
                wait: Duration::from_micros(wait),
            },
            Some((1, retry)) => Acquire::OverBudget {
                retry_after: Duration::from_micros(retry),
            },
            Some((_, retry)) => Acquire::Paused {
                retry_after: Duration::from_micros(retry),
            },
            None => self.local.acquire_now(&self.fallback_gcra(), max_wait),
        }
    }

    async fn pause_for(&self, d: Duration) {
        self.local.pause_now(d);
        let _ = self
            .link
            .call(|mut c| async move {
                self.pause
                    .key(&self.pause_key)
                    .arg(micros(d))
                    .invoke_async::<u8>(&mut c)
                    .await
            })
            .await;
    }

    async fn resume(&self) -> bool {
        self.local.resume_now();
        self.link
            .call(|mut c| async move {
                redis::cmd("DEL")
                    .arg(&self.pause_key)
                    .query_async::<u64>(&mut c)
                    .await
            })
            .await
            .is_some()
    }

    /// Every live instance paces by its share of what ParagoN says remains, so the fleet
    /// together never sends more than remains (each sees the same, fleet-wide figure).
    fn quota_sharers(&self) -> u32 {
        self.link.instances().max(1)
    }

    /// The local fallback budget is repriced like a memory store's. The fleet's TAT in
    /// Redis is kept as it is: every instance applies a new configuration at its own
    /// moment, and repricing the one shared state once per instance would count the
    /// change as many times; kept, the debt keeps its length in time.
    fn reconfigure(&self, old: &RateLimitConfig, new: &RateLimitConfig) {
        let before = self.fallback_gcra();
        *self.config.lock() = *new;
        self.local.reprice(&before, &self.fallback_gcra());
        let _ = old;
    }

    async fn state(&self, gcra: &Gcra) -> BudgetState {
        let reply = self
            .link
            .call(|mut c| async move {
                self.state
                    .key(&self.tat_key)
                    .key(&self.pause_key)
                    .invoke_async::<(u64, u64)>(&mut c)
                    .await
            })
            .await;
        match reply {
            Some((ahead_us, paused_us)) => BudgetState {
                available: gcra
                    .tolerance
                    .saturating_sub(ahead_us.saturating_mul(1_000))
                    / gcra.interval,
                paused_for: Duration::from_micros(paused_us),
            },
            None => self.local.state_now(&self.fallback_gcra()),
        }
    }
}
