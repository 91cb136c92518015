use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::RwLock;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult};
use tokio::sync::watch;

/// Settings of a [`RedisLink`].
#[derive(Clone, Debug)]
pub struct LinkOptions {
    /// Prefix of every key.
    pub key_prefix: String,
    /// Limit on every Redis call (and on connecting); no request waits on Redis longer.
    pub timeout: Duration,
    /// How often the health loop runs (reconnect while down, heartbeat while up).
    pub health_interval: Duration,
    /// An instance whose heartbeat is older than this no longer counts as live.
    pub instance_ttl: Duration,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            key_prefix: "paragon-edge:".into(),
            timeout: Duration::from_millis(100),
            health_interval: Duration::from_millis(250),
            instance_ttl: Duration::from_secs(3),
        }
    }
}

struct Inner {
    client: redis::Client,
    options: LinkOptions,
    conn: RwLock<Option<MultiplexedConnection>>,
    up: AtomicBool,
    instances: AtomicU32,
    instance_id: String,
    watch: watch::Sender<bool>,
}

/// A shared, self-healing connection to Redis. Cheap to clone.
///
/// [`RedisLink::call`] never waits longer than the timeout; while Redis is marked down it
/// does not try at all (callers fall back at once) and the health loop reconnects.
#[derive(Clone)]
pub struct RedisLink {
    inner: Arc<Inner>,
}

const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('ZCARD', KEYS[1])
"#;

impl RedisLink {
    /// Opens a link to `url` (`redis://host:port[/db]`) and starts its health loop. Only
    /// a malformed URL is an error: an unreachable Redis is reported as down and retried.
    pub fn open(url: &str, options: LinkOptions) -> RedisResult<RedisLink> {
        let client = redis::Client::open(url)?;
        let instance_id = format!("{:016x}", rand::random::<u64>());
        let link = RedisLink {
            inner: Arc::new(Inner {
                client,
                options,
                conn: RwLock::new(None),
                up: AtomicBool::new(false),
                instances: AtomicU32::new(1),
                instance_id,
                watch: watch::Sender::new(false),
            }),
        };
        tokio::spawn(health_loop(Arc::downgrade(&link.inner)));
        Ok(link)
    }

    /// Whether Redis answered the last call.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    /// Follows reachability (true: up).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.watch.subscribe()
    }

    /// Live instances seen at the last heartbeat (at least 1).
    pub fn instances(&self) -> u32 {
        self.inner.instances.load(Ordering::Relaxed).max(1)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.options.key_prefix
    }

    /// The call timeout.
    pub fn timeout(&self) -> Duration {
        self.inner.options.timeout
    }

    /// Waits (up to `limit`) until the link is up; true if it is.
    pub async fn wait_up(&self, limit: Duration) -> bool {
        let mut rx = self.subscribe();
        let up = tokio::time::timeout(limit, rx.wait_for(|up| *up))
            .await
            .is_ok();
        up
    }

    /// Runs `f` on the connection within the timeout. `None` when Redis is down, the call
    /// fails or times out (which marks the link down).
    pub async fn call<T, F, Fut>(&self, f: F) -> Option<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.is_up() {
            return None;
        }
        let conn = self.inner.conn.read().clone()?;
        match tokio::time::timeout(self.inner.options.timeout, f(conn)).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) if !is_connection_error(&e) => {
                tracing::warn!(error = %e, "Redis refused a command");
                None
            }
            Ok(Err(e)) => {
                set_up(&self.inner, false, Some(&e.to_string()));
                None
            }
            Err(_) => {
                set_up(&self.inner, false, Some("timed out"));
                None
            }
        }
    }
}

fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

fn set_up(inner: &Inner, up: bool, why: Option<&str>) {
    if inner.up.swap(up, Ordering::AcqRel) != up {
        if up {
            tracing::info!("Redis is reachable: using the fleet's shared state");
        } else {
            *inner.conn.write() = None;
            tracing::warn!(
                reason = why.unwrap_or("unknown"),
                "Redis is unreachable: serving on local state until it is back"
            );
        }
        inner.watch.send_replace(up);
    }
}

async fn health_loop(weak: Weak<Inner>) {
    let script = redis::Script::new(HEARTBEAT);
    let mut first = true;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let interval = inner.options.health_interval;
        let timeout = inner.options.timeout;
        let existing = inner.conn.read().clone();
        let conn = match existing {
            Some(c) => Some(c),
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                match tokio::time::timeout(
                    timeout * 2,
                    inner
                        .client
                        .get_multiplexed_async_connection_with_config(&config),
                )
                .await
                {
                    Ok(Ok(c)) => {
                        *inner.conn.write() = Some(c.clone());
                        Some(c)
                    }
                    _ => None,
                }
            }
        };
        match conn {
            Some(mut c) => {
                let key = format!("{}{{rate}}:instances", inner.options.key_prefix);
                let ttl = u64::try_from(inner.options.instance_ttl.as_millis()).unwrap_or(u64::MAX);
                let mut invocation = script.key(key);
                invocation.arg(&inner.instance_id).arg(ttl);
                let beat = invocation.invoke_async::<u32>(&mut c);
                match tokio::time::timeout(timeout, beat).await {
                    Ok(Ok(n)) => {
                        inner.instances.store(n.max(1), Ordering::Relaxed);
                        set_up(&inner, true, None);
                    }
                    Ok(Err(e)) => set_up(&inner, false, Some(&e.to_string())),
                    Err(_) => set_up(&inner, false, Some("timed out")),
                }
            }
            None => {
                if first {
                    tracing::warn!(
                        "Redis is unreachable at start: serving on local state until it is up"
                    );
                }
                set_up(&inner, false, Some("cannot connect"))
            }
        }
        first = false;
        drop(inner);
        tokio::time::sleep(interval).await;
    }
}
