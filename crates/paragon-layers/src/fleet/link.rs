//! [`RedisLink`]: the fleet's one connection to Redis, whatever its deployment.
//!
//! Standalone, TLS, Cluster and Sentinel are reached through the redis crate's own
//! clients; this module adds what the layers need on top: a watch of whether Redis is
//! usable (so the stores fall back to local state at once instead of timing out per
//! call), the reason it is not (logged once, secrets removed), reconnection, the key
//! prefix, and the count of live instances for the local fallback budget.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult,
    TlsCertificates, TlsMode, Value,
};
use tokio::sync::watch;
use tokio::time::Instant;

/// Where Redis is and how it is deployed. URLs are `redis://` or `rediss://` (TLS), with
/// an optional user and password.
#[derive(Clone)]
pub enum RedisTarget {
    /// One server.
    Standalone {
        /// Its URL.
        url: String,
    },
    /// A Redis Cluster, found through its seed nodes; the redis crate's cluster client
    /// routes every command to the slot's master and follows `MOVED`/`ASK` and failovers.
    Cluster {
        /// Seed nodes (one reachable node is enough).
        nodes: Vec<String>,
    },
    /// A master found through Redis Sentinel, and found again after a failover.
    Sentinel {
        /// The sentinels' URLs (their own user and password, if any).
        sentinels: Vec<String>,
        /// The monitored master's name.
        master_name: String,
        /// User, password, database and TLS (`rediss://`) of the master; its host and port
        /// are not used, the sentinels name the master.
        master: String,
    },
}

impl RedisTarget {
    /// `"standalone"`, `"cluster"` or `"sentinel"`.
    pub fn mode(&self) -> &'static str {
        match self {
            RedisTarget::Standalone { .. } => "standalone",
            RedisTarget::Cluster { .. } => "cluster",
            RedisTarget::Sentinel { .. } => "sentinel",
        }
    }

    fn urls(&self) -> Vec<&str> {
        match self {
            RedisTarget::Standalone { url } => vec![url],
            RedisTarget::Cluster { nodes } => nodes.iter().map(String::as_str).collect(),
            RedisTarget::Sentinel {
                sentinels, master, ..
            } => sentinels
                .iter()
                .map(String::as_str)
                .chain([master.as_str()])
                .collect(),
        }
    }

    /// The passwords in the URLs, as written and percent-decoded: text that must never be
    /// shown.
    fn secrets(&self) -> Vec<String> {
        let mut out = Vec::new();
        for url in self.urls() {
            let Some((_, rest)) = url.split_once("://") else {
                continue;
            };
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let Some((userinfo, _)) = authority.rsplit_once('@') else {
                continue;
            };
            if let Some((_, pw)) = userinfo.split_once(':') {
                if let Ok(decoded) = percent_decode(pw) {
                    out.push(decoded);
                }
                out.push(pw.to_string());
            }
        }
        out.retain(|s| !s.is_empty());
        out.sort_by_key(|s| std::cmp::Reverse(s.len()));
        out.dedup();
        out
    }

    /// Checks that a link could be opened on this target (URLs, TLS settings, the CA file's
    /// content), without connecting. The message never holds a password.
    pub fn check(&self, options: &LinkOptions) -> Result<(), String> {
        Connector::new(self, options).map(|_| ()).map_err(|e| {
            let text = e.to_string();
            // The crate names the error's kind after its message; the message says it.
            let text = text.trim_end_matches(" - InvalidClientConfig");
            redact(text, &self.secrets())
        })
    }
}

fn percent_decode(s: &str) -> Result<String, std::string::FromUtf8Error> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
}

fn redact(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), "<redacted>"))
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self
            .urls()
            .into_iter()
            .map(|u| redact(u, &self.secrets()))
            .collect();
        f.debug_struct("RedisTarget")
            .field("mode", &self.mode())
            .field("urls", &urls)
            .finish()
    }
}

/// Settings of a [`RedisLink`].
#[derive(Clone, Debug)]
pub struct LinkOptions {
    /// Prefix of every key.
    pub key_prefix: String,
    /// Limit on every Redis call; no request waits on Redis longer.
    pub timeout: Duration,
    /// Limit on opening a connection (finding a cluster's slots or asking the sentinels
    /// takes a few round trips). The health loop connects; requests never wait on it.
    pub connect_timeout: Duration,
    /// How often the health loop runs (reconnect while down, heartbeat while up).
    pub health_interval: Duration,
    /// An instance whose heartbeat is older than this no longer counts as live.
    pub instance_ttl: Duration,
    /// Live instances to assume while Redis is unreachable; 0: the count last seen (1 if
    /// never seen).
    pub fallback_instances: u32,
    /// PEM certificates of the CA that signed the servers' certificates; `None`: the
    /// system's roots.
    pub tls_ca: Option<Vec<u8>>,
}

impl Default for LinkOptions {
    fn default() -> Self {
        LinkOptions {
            key_prefix: "paragon-edge:".into(),
            timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_millis(500),
            health_interval: Duration::from_millis(250),
            instance_ttl: Duration::from_secs(3),
            fallback_instances: 0,
            tls_ca: None,
        }
    }
}

/// A connection to Redis in any mode. It speaks [`ConnectionLike`], so commands and
/// scripts run on it as on any redis-crate connection; on a cluster each command goes to
/// the master of its keys' slot.
#[derive(Clone)]
pub struct RedisConn(Conn);

#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// One server that holds keys: the only one, or a cluster master at `host:port`.
#[derive(Clone, Debug)]
enum Node {
    Only,
    Master(String, u16),
}

impl RedisConn {
    /// The servers that hold keys: every master of a cluster (from `CLUSTER SLOTS`).
    async fn masters(&mut self) -> RedisResult<Vec<Node>> {
        let Conn::Cluster(c) = &mut self.0 else {
            return Ok(vec![Node::Only]);
        };
        let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(c).await?;
        let mut masters: Vec<(String, u16)> = Vec::new();
        if let Value::Array(ranges) = slots {
            for range in ranges {
                let Value::Array(fields) = range else {
                    continue;
                };
                let Some(Value::Array(master)) = fields.get(2) else {
                    continue;
                };
                let host = match master.first() {
                    Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(Value::SimpleString(s)) => s.clone(),
                    _ => continue,
                };
                let Some(Value::Int(port)) = master.get(1) else {
                    continue;
                };
                let Ok(port) = u16::try_from(*port) else {
                    continue;
                };
                if !masters.iter().any(|(h, p)| *h == host && *p == port) {
                    masters.push((host, port));
                }
            }
        }
        Ok(masters
            .into_iter()
            .map(|(h, p)| Node::Master(h, p))
            .collect())
    }

    /// Runs `cmd` on `node` (a command without keys, such as `SCAN`).
    async fn on_node<T: redis::FromRedisValue>(&mut self, node: &Node, cmd: Cmd) -> RedisResult<T> {
        match (&mut self.0, node) {
            (Conn::Cluster(c), Node::Master(host, port)) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let value = c.route_command(cmd, routing).await?;
                redis::from_redis_value(value).map_err(RedisError::from)
            }
            _ => cmd.query_async(self).await,
        }
    }
}

/// How connections are made, per mode.
enum Connector {
    Standalone(redis::Client),
    Cluster(ClusterClient),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// The CA of `options` for the redis crate. PEM text with no certificate in it is an
/// error here: the redis crate would take it as an empty set of roots and refuse every
/// server later, at connect time.
fn certificates(options: &LinkOptions) -> RedisResult<Option<TlsCertificates>> {
    let Some(pem) = &options.tls_ca else {
        return Ok(None);
    };
    let marker = b"-----BEGIN CERTIFICATE-----";
    if !pem.windows(marker.len()).any(|w| w == marker) {
        return Err(RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "the CA file holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        )));
    }
    Ok(Some(TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.clone()),
    }))
}

impl Connector {
    fn new(target: &RedisTarget, options: &LinkOptions) -> RedisResult<Connector> {
        let certs = certificates(options)?;
        Ok(match target {
            RedisTarget::Standalone { url } => Connector::Standalone(match certs {
                Some(certs) => redis::Client::build_with_tls(url.as_str(), certs)?,
                None => redis::Client::open(url.as_str())?,
            }),
            RedisTarget::Cluster { nodes } => {
                let mut builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .connection_timeout(options.connect_timeout)
                    .response_timeout(options.timeout);
                if let Some(certs) = certs {
                    builder = builder.certs(certs);
                }
                Connector::Cluster(builder.build()?)
            }
            RedisTarget::Sentinel {
                sentinels,
                master_name,
                master,
            } => {
                let infos = sentinels
                    .iter()
                    .map(|u| u.as_str().into_connection_info())
                    .collect::<RedisResult<Vec<_>>>()?;
                let mut builder = SentinelClientBuilder::new(
                    infos.iter().map(|i| i.addr().clone()),
                    master_name,
                    SentinelServerType::Master,
                )?;
                if let Some(first) = infos.first() {
                    let settings = first.redis_settings();
                    if let Some(user) = settings.username() {
                        builder = builder.set_client_to_sentinel_username(user);
                    }
                    if let Some(pw) = settings.password() {
                        builder = builder.set_client_to_sentinel_password(pw);
                    }
                    if matches!(first.addr(), redis::ConnectionAddr::TcpTls { .. }) {
                        if let Some(certs) = &certs {
                            builder = builder.set_client_to_sentinel_certificates(certs.clone());
                        }
                    }
                }
                let master = master.as_str().into_connection_info()?;
                let settings = master.redis_settings();
                builder = builder.set_client_to_redis_db(settings.db());
                if let Some(user) = settings.username() {
                    builder = builder.set_client_to_redis_username(user);
                }
                if let Some(pw) = settings.password() {
                    builder = builder.set_client_to_redis_password(pw);
                }
                if matches!(master.addr(), redis::ConnectionAddr::TcpTls { .. }) {
                    builder = builder.set_client_to_redis_tls_mode(TlsMode::Secure);
                    if let Some(certs) = certs {
                        builder = builder.set_client_to_redis_certificates(certs);
                    }
                }
                Connector::Sentinel(tokio::sync::Mutex::new(builder.build()?))
            }
        })
    }

    /// A new connection: `connect` bounds the TCP (and TLS) connection, `respond` each
    /// answer.
    async fn connect(&self, connect: Duration, respond: Duration) -> RedisResult<RedisConn> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect))
            .set_response_timeout(Some(respond));
        Ok(RedisConn(match self {
            Connector::Standalone(client) => Conn::Single(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            ),
            Connector::Cluster(client) => Conn::Cluster(client.get_async_connection().await?),
            Connector::Sentinel(client) => {
                let master = client.lock().await.async_get_client().await?;
                Conn::Single(
                    master
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
        }))
    }
}

/// Why Redis cannot be used, in words an operator can act on; never holds a password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// What the log said last, so each reason is logged once (see [`Inner::log_down`]).
#[derive(Default)]
struct LogState {
    /// The kind of the last reason logged, and when.
    last: Option<(&'static str, Instant)>,
    /// This outage was not logged (the same reason as one logged moments before).
    quiet: bool,
}

/// An outage with the same kind of reason as one logged less than this before is logged
/// at debug level only: a cluster whose master is failing over can flap up and down a
/// few times, and one warning says it.
const RELOG_AFTER: Duration = Duration::from_secs(30);

struct Inner {
    connector: Connector,
    mode: &'static str,
    secrets: Vec<String>,
    options: LinkOptions,
    conn: RwLock<Option<RedisConn>>,
    up: AtomicBool,
    reason: RwLock<String>,
    /// Live instances at the last heartbeat; 0 before the first.
    instances: AtomicU32,
    instance_id: String,
    watch: watch::Sender<bool>,
    log: Mutex<LogState>,
}

impl Inner {
    /// Marks Redis unusable for `kind: detail` and drops the connection, so the health
    /// loop makes a new one (a connection can die while Redis is already marked down:
    /// Sentinel kills its clients' connections when it promotes a replica).
    fn mark_down(&self, kind: &'static str, detail: &str) {
        *self.conn.write() = None;
        let reason = if detail.eq_ignore_ascii_case(kind) {
            kind.to_string()
        } else {
            redact(&format!("{kind}: {detail}"), &self.secrets)
        };
        *self.reason.write() = reason.clone();
        let was_up = self.up.swap(false, Ordering::AcqRel);
        self.log_down(was_up, kind, &reason);
        if was_up {
            self.watch.send_replace(false);
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            let quiet = std::mem::take(&mut self.log.lock().quiet);
            if quiet {
                tracing::debug!(mode = self.mode, "Redis is usable again");
            } else {
                tracing::info!(
                    mode = self.mode,
                    "Redis is reachable: using the fleet's shared state"
                );
            }
            self.watch.send_replace(true);
        }
    }

    /// Logs a reason once: when Redis goes from usable to not, or when the kind of reason
    /// changes while it is down (refused, then a wrong password, ...).
    #[allow(
        clippy::disallowed_methods,
        reason = "only spaces out log lines; no decision of a layer reads it"
    )]
    fn log_down(&self, was_up: bool, kind: &'static str, reason: &str) {
        let mut log = self.log.lock();
        let now = Instant::now();
        let same_kind = log.last.map(|(k, _)| k) == Some(kind);
        let recent = log
            .last
            .is_some_and(|(_, at)| now.duration_since(at) < RELOG_AFTER);
        if !was_up && same_kind {
            return;
        }
        if was_up && same_kind && recent {
            log.quiet = true;
            tracing::debug!(mode = self.mode, reason, "Redis is unusable again");
            return;
        }
        log.last = Some((kind, now));
        log.quiet = false;
        let n = self.fallback_instances();
        tracing::warn!(
            mode = self.mode,
            reason,
            assumed_instances = n,
            "Redis cannot be used: serving on local state (1/{n} of the fleet's budget) until it can"
        );
    }

    fn fallback_instances(&self) -> u32 {
        match self.options.fallback_instances {
            0 => self.instances.load(Ordering::Relaxed).max(1),
            n => n,
        }
    }
}

/// Sorts an error into a kind an operator recognises.
fn kind_of(e: &RedisError, mode: &str) -> &'static str {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    match e.code() {
        Some("NOAUTH" | "WRONGPASS") => return "authentication failed",
        Some("MOVED" | "ASK") if mode != "cluster" => {
            return "this Redis is a Redis Cluster node (MOVED); set redis.mode = \"cluster\""
        }
        Some("CROSSSLOT") => return "keys of one command span slots (CROSSSLOT)",
        Some("READONLY") => return "this Redis is a read-only replica",
        Some("NOPERM") => return "the Redis user lacks a permission",
        Some("CLUSTERDOWN") => return "the cluster is down",
        Some("LOADING") => return "Redis is loading its data",
        _ => {}
    }
    if e.kind() == redis::ErrorKind::AuthenticationFailed || lower.contains("wrongpass") {
        "authentication failed"
    } else if e.kind() == redis::ErrorKind::MasterNameNotFoundBySentinel {
        "no sentinel names a usable master called redis.master_name"
    } else if lower.contains("certificate")
        || lower.contains("tls")
        || lower.contains("handshake")
        || lower.contains("corrupt message")
    {
        "TLS failure"
    } else if e.is_connection_refusal() {
        "connection refused"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_io_error() || e.is_connection_dropped() {
        "connection lost"
    } else if lower.contains("script") || lower.contains("evalsha") {
        "Redis refused the fleet's scripts (they need EVALSHA and TIME, Redis 3.2 or later)"
    } else {
        "Redis refused a command"
    }
}

/// A shared, self-healing connection to Redis in any mode. Cheap to clone.
///
/// [`RedisLink::call`] never waits longer than the timeout; while Redis is marked down it
/// does not try at all (callers fall back at once) and the health loop reconnects.
#[derive(Clone)]
pub struct RedisLink {
    inner: Arc<Inner>,
}

/// Records this instance as live and counts the live ones, on Redis's clock.
/// `redis.replicate_commands()` lets Redis 3.2–4.0 run a write after `TIME`; later
/// versions always allow it and keep the call as a no-op.
const HEARTBEAT: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('ZCARD', KEYS[1])
"#;

impl RedisLink {
    /// Opens a link to `target` and starts its health loop. Only a malformed target is an
    /// error (its message holds no password): an unreachable or unusable Redis is reported
    /// as down, with its reason, and retried.
    pub fn open(target: &RedisTarget, options: LinkOptions) -> Result<RedisLink, Unavailable> {
        let secrets = target.secrets();
        let connector = Connector::new(target, &options)
            .map_err(|e| Unavailable(redact(&e.to_string(), &secrets)))?;
        let link = RedisLink {
            inner: Arc::new(Inner {
                connector,
                mode: target.mode(),
                secrets,
                options,
                conn: RwLock::new(None),
                up: AtomicBool::new(false),
                reason: RwLock::new("not connected yet".into()),
                instances: AtomicU32::new(0),
                instance_id: format!("{:016x}", rand::random::<u64>()),
                watch: watch::Sender::new(false),
                log: Mutex::new(LogState::default()),
            }),
        };
        tokio::spawn(health_loop(Arc::downgrade(&link.inner)));
        Ok(link)
    }

    /// Whether Redis answered the last call.
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    /// Why Redis cannot be used now; `None` while it can.
    pub fn reason(&self) -> Option<String> {
        (!self.is_up()).then(|| self.inner.reason.read().clone())
    }

    /// `"standalone"`, `"cluster"` or `"sentinel"`.
    pub fn mode(&self) -> &'static str {
        self.inner.mode
    }

    /// Follows reachability (true: up).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.inner.watch.subscribe()
    }

    /// Live instances seen at the last heartbeat (at least 1).
    pub fn instances(&self) -> u32 {
        self.inner.instances.load(Ordering::Relaxed).max(1)
    }

    /// Live instances to assume while Redis is unreachable: `fallback_instances` when
    /// set, else the count last seen (1 if never seen).
    pub fn fallback_instances(&self) -> u32 {
        self.inner.fallback_instances()
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
    /// fails or times out (which marks the link down with the reason).
    pub async fn call<T, F, Fut>(&self, f: F) -> Option<T>
    where
        F: FnOnce(RedisConn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.try_call(f).await.ok()
    }

    /// [`RedisLink::call`], with the reason when Redis cannot be used.
    pub async fn try_call<T, F, Fut>(&self, f: F) -> Result<T, Unavailable>
    where
        F: FnOnce(RedisConn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let inner = &self.inner;
        let conn = if self.is_up() {
            inner.conn.read().clone()
        } else {
            None
        };
        let Some(conn) = conn else {
            return Err(Unavailable(inner.reason.read().clone()));
        };
        match tokio::time::timeout(inner.options.timeout, f(conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                inner.mark_down(kind_of(&e, inner.mode), &e.to_string());
                Err(Unavailable(inner.reason.read().clone()))
            }
            Err(_) => {
                let limit = inner.options.timeout;
                inner.mark_down("timed out", &format!("no answer within {limit:?}"));
                Err(Unavailable(inner.reason.read().clone()))
            }
        }
    }

    /// Deletes every key matching `pattern` on every server that holds keys (each master
    /// of a cluster), one bounded `SCAN` round at a time. Returns how many of the deleted
    /// keys `counted` accepts; an error as soon as one round fails.
    pub async fn delete_matching(
        &self,
        pattern: &str,
        counted: impl Fn(&str) -> bool,
    ) -> Result<u64, Unavailable> {
        let masters = self
            .try_call(|mut c| async move { c.masters().await })
            .await?;
        let mut deleted = 0;
        for node in &masters {
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = self
                    .try_call(|mut c| async move {
                        let mut scan = redis::cmd("SCAN");
                        scan.arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(500);
                        c.on_node(node, scan).await
                    })
                    .await?;
                let (mine, others): (Vec<String>, Vec<String>) =
                    keys.into_iter().partition(|k| counted(k));
                for (keys, count) in [(mine, true), (others, false)] {
                    if keys.is_empty() {
                        continue;
                    }
                    let n: u64 = self
                        .try_call(|mut c| async move {
                            redis::cmd("UNLINK").arg(&keys).query_async(&mut c).await
                        })
                        .await?;
                    if count {
                        deleted += n;
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(deleted)
    }
}

/// `INFO cluster` says `cluster_enabled:1`: a standalone client would get `MOVED` for
/// most keys.
async fn is_cluster_node(conn: &mut RedisConn) -> bool {
    let info: RedisResult<String> = redis::cmd("INFO").arg("cluster").query_async(conn).await;
    info.is_ok_and(|text| text.lines().any(|l| l.trim() == "cluster_enabled:1"))
}

async fn health_loop(weak: Weak<Inner>) {
    let script = redis::Script::new(HEARTBEAT);
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let interval = inner.options.health_interval;
        let timeout = inner.options.timeout;
        let existing = inner.conn.read().clone();
        let conn = match existing {
            Some(c) => Some(c),
            None => {
                let limit = inner.options.connect_timeout.max(timeout);
                let connect = inner.connector.connect(limit, timeout);
                match tokio::time::timeout(limit, connect).await {
                    Ok(Ok(mut c)) => {
                        if inner.mode != "cluster" && is_cluster_node(&mut c).await {
                            inner.mark_down(
                                "this Redis is a Redis Cluster node; set redis.mode = \"cluster\"",
                                "cluster_enabled:1",
                            );
                            None
                        } else {
                            *inner.conn.write() = Some(c.clone());
                            Some(c)
                        }
                    }
                    Ok(Err(e)) => {
                        inner.mark_down(kind_of(&e, inner.mode), &e.to_string());
                        None
                    }
                    Err(_) => {
                        inner.mark_down("timed out", &format!("no connection within {limit:?}"));
                        None
                    }
                }
            }
        };
        if let Some(mut c) = conn {
            let key = format!("{}{{rate}}:instances", inner.options.key_prefix);
            let ttl = u64::try_from(inner.options.instance_ttl.as_millis()).unwrap_or(u64::MAX);
            let mut invocation = script.key(key);
            invocation.arg(&inner.instance_id).arg(ttl);
            let beat = invocation.invoke_async::<u32>(&mut c);
            match tokio::time::timeout(timeout, beat).await {
                Ok(Ok(n)) => {
                    inner.instances.store(n.max(1), Ordering::Relaxed);
                    inner.mark_up();
                }
                Ok(Err(e)) => inner.mark_down(kind_of(&e, inner.mode), &e.to_string()),
                Err(_) => inner.mark_down("timed out", &format!("no answer within {timeout:?}")),
            }
        }
        drop(inner);
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_found_in_every_url_and_redacted() {
        let target = RedisTarget::Sentinel {
            sentinels: vec!["redis://:s%40cret@10.0.0.1:26379".into()],
            master_name: "m".into(),
            master: "rediss://u:master-pw@x:1".into(),
        };
        let secrets = target.secrets();
        assert!(secrets.contains(&"s@cret".to_string()));
        assert!(secrets.contains(&"s%40cret".to_string()));
        assert!(secrets.contains(&"master-pw".to_string()));
        let shown = format!("{target:?}");
        assert!(
            !shown.contains("master-pw") && !shown.contains("s%40cret"),
            "{shown}"
        );
        assert_eq!(
            redact("AUTH master-pw failed", &secrets),
            "AUTH <redacted> failed"
        );
    }

    #[test]
    fn malformed_targets_are_refused_without_their_password() {
        let options = LinkOptions::default();
        let bad = RedisTarget::Cluster {
            nodes: vec![
                "redis://:pw-one@127.0.0.1:7000".into(),
                "redis://:pw-two@127.0.0.1:7001".into(),
            ],
        };
        let e = bad.check(&options).unwrap_err();
        assert!(!e.contains("pw-one") && !e.contains("pw-two"), "{e}");
        let ca = LinkOptions {
            tls_ca: Some(b"not a certificate".to_vec()),
            ..LinkOptions::default()
        };
        let tls = RedisTarget::Standalone {
            url: "rediss://127.0.0.1:6380".into(),
        };
        assert!(tls.check(&LinkOptions::default()).is_ok());
        assert!(tls.check(&ca).is_err());
    }
}
