//! [`RedisTier`]: the cache's shared tier in Redis, and the fleet's fill lock.
//!
//! Entries are the codec's bytes with their freshness; a fill claims a key with a fenced
//! token so one instance of the fleet calls the upstream and the others wait for its
//! publish. Every Redis failure reads as "absent" or "unavailable": the local cache and
//! the upstream still answer.

use std::marker::PhantomData;
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::Value;

use crate::cache::{CachedValue, Claim, SharedTier, TierCodec, TierEntry, TierError};

use super::RedisLink;

/// Entry and its remaining life, read atomically. Empty reply: no entry.
const LOOKUP: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return {} end
return {v, redis.call('PTTL', KEYS[1])}
"#;

/// Writes the entry only while the caller's token still holds the fill lock, then frees it.
const PUBLISH: &str = r#"
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"#;

const RELEASE: &str = r#"
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"#;

/// Format tag and version of a stored entry.
const MAGIC: [u8; 2] = [b'P', 1];
const HEADER: usize = 2 + 8;

/// The shared cache tier on Redis: entries under `{prefix}{c:KEY}` with a Redis expiry of
/// TTL + stale window (so freshness is judged on Redis's clock, not the hosts'), and a
/// fill lock beside each with a random token.
pub struct RedisTier<C, K, R, E> {
    link: RedisLink,
    codec: C,
    lookup: redis::Script,
    publish: redis::Script,
    release: redis::Script,
    _types: PhantomData<fn(K, R, E)>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl<C, K, R, E> RedisTier<C, K, R, E>
where
    C: TierCodec<K, R, E>,
{
    /// A tier on `link`, turning entries into bytes with `codec`.
    pub fn new(link: RedisLink, codec: C) -> Self {
        RedisTier {
            link,
            codec,
            lookup: redis::Script::new(LOOKUP),
            publish: redis::Script::new(PUBLISH),
            release: redis::Script::new(RELEASE),
            _types: PhantomData,
        }
    }

    fn entry_key(&self, key: &K) -> String {
        format!("{}{{c:{}}}", self.link.prefix(), self.codec.key(key))
    }

    fn lock_key(&self, key: &K) -> String {
        format!("{}{{c:{}}}:lock", self.link.prefix(), self.codec.key(key))
    }
}

impl<C, K, R, E> SharedTier<K, R, E> for RedisTier<C, K, R, E>
where
    C: TierCodec<K, R, E>,
    K: Send + Sync + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    fn lookup<'a>(&'a self, key: &'a K) -> BoxFuture<'a, TierEntry<R, E>> {
        Box::pin(async move {
            let entry_key = self.entry_key(key);
            let reply = self
                .link
                .call(|mut c| async move {
                    self.lookup
                        .key(&entry_key)
                        .invoke_async::<Vec<Value>>(&mut c)
                        .await
                })
                .await;
            let Some(reply) = reply else {
                return TierEntry::Absent;
            };
            let (bytes, pttl) = match reply.as_slice() {
                [Value::BulkString(bytes), Value::Int(pttl)] => (bytes, *pttl),
                _ => return TierEntry::Absent,
            };
            if bytes.len() < HEADER || bytes[..2] != MAGIC || pttl <= 0 {
                return TierEntry::Absent;
            }
            let mut stale = [0u8; 8];
            stale.copy_from_slice(&bytes[2..HEADER]);
            let stale_ms = u64::from_be_bytes(stale);
            let Some(value) = self.codec.decode(key, &bytes[HEADER..]) else {
                tracing::warn!("ignoring an undecodable shared cache entry");
                return TierEntry::Absent;
            };
            let remaining = pttl.unsigned_abs();
            if remaining > stale_ms {
                TierEntry::Fresh {
                    value,
                    fresh_for: Duration::from_millis(remaining - stale_ms),
                }
            } else {
                match value {
                    CachedValue::Value(r) => TierEntry::Stale(r),
                    CachedValue::Negative(_) => TierEntry::Absent,
                }
            }
        })
    }

    fn claim<'a>(&'a self, key: &'a K, hold: Duration) -> BoxFuture<'a, Claim> {
        Box::pin(async move {
            let lock = self.lock_key(key);
            let token = rand::random::<u64>() | 1;
            let reply = self
                .link
                .call(|mut c| async move {
                    redis::cmd("SET")
                        .arg(&lock)
                        .arg(token)
                        .arg("NX")
                        .arg("PX")
                        .arg(millis(hold))
                        .query_async::<Option<String>>(&mut c)
                        .await
                })
                .await;
            match reply {
                Some(Some(_)) => Claim::Leader(token),
                Some(None) => Claim::Follower,
                None => Claim::Unavailable,
            }
        })
    }

    fn publish<'a>(
        &'a self,
        key: &'a K,
        token: u64,
        value: &'a CachedValue<R, E>,
        ttl: Duration,
        stale: Duration,
    ) -> BoxFuture<'a, ()> {
        // Encoded before the future, which then holds only bytes.
        let bytes = self.codec.encode(value).map(|payload| {
            let mut bytes = Vec::with_capacity(HEADER + payload.len());
            bytes.extend_from_slice(&MAGIC);
            bytes.extend_from_slice(&millis(stale).to_be_bytes());
            bytes.extend_from_slice(&payload);
            bytes
        });
        Box::pin(async move {
            let Some(bytes) = bytes else { return };
            let (entry, lock) = (self.entry_key(key), self.lock_key(key));
            let px = millis(ttl).saturating_add(millis(stale));
            let _ = self
                .link
                .call(|mut c| async move {
                    self.publish
                        .key(&entry)
                        .key(&lock)
                        .arg(token)
                        .arg(bytes)
                        .arg(px)
                        .invoke_async::<u8>(&mut c)
                        .await
                })
                .await;
        })
    }

    fn release<'a>(&'a self, key: &'a K, token: u64) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let (entry, lock) = (self.entry_key(key), self.lock_key(key));
            let _ = self
                .link
                .call(|mut c| async move {
                    self.release
                        .key(&entry)
                        .key(&lock)
                        .arg(token)
                        .invoke_async::<u8>(&mut c)
                        .await
                })
                .await;
        })
    }

    fn purge<'a>(&'a self, key: Option<&'a K>) -> BoxFuture<'a, Result<u64, TierError>> {
        Box::pin(async move {
            let removed = match key {
                Some(key) => {
                    let entry = self.entry_key(key);
                    self.link
                        .try_call(|mut c| async move {
                            redis::cmd("DEL")
                                .arg(&entry)
                                .query_async::<u64>(&mut c)
                                .await
                        })
                        .await
                }
                None => {
                    // Entries and their fill locks; only entries are counted.
                    let pattern = format!("{}{{c:*", self.link.prefix());
                    self.link
                        .delete_matching(&pattern, |k| !k.ends_with("}:lock"))
                        .await
                }
            };
            removed.map_err(|e| TierError(e.0))
        })
    }
}
