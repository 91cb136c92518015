//! Real Redis servers for the tests and benchmarks of ParagoN Edge.
//!
//! Each helper starts `redis-server` processes on free ports of 127.0.0.1, with no
//! persistence, in a temporary folder of its own, and kills them when dropped. Nothing here
//! is a mock: the fleet's code talks to the same servers an operator runs.
//!
//! - [`RedisServer`] — one server: plain, with a password ([`ServerOptions::password`]),
//!   over TLS ([`ServerOptions::tls`], certificates made at run time by [`TlsFiles`]), or
//!   as a replica or a cluster node;
//! - [`RedisCluster`] — a Redis Cluster of masters (and replicas), created with
//!   `redis-cli --cluster create`;
//! - [`RedisSentinel`] — a master, a replica and one Sentinel that watches them.
//!
//! Every wait is a bounded poll of a condition: a server that does not come up in time
//! fails the test with a message instead of hanging it.

#![allow(
    clippy::disallowed_methods,
    reason = "test servers are waited for in wall time"
)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A folder under the system's temporary folder, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Makes a new, empty folder whose name starts with `label`.
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "paragon-testkit-{label}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir(path)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free TCP port of 127.0.0.1 (free when asked; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// Polls `cond` every 20 ms until it holds; panics naming `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A test certificate authority and a server certificate it signed, for 127.0.0.1 and
/// `localhost`, written as PEM files.
#[derive(Debug)]
pub struct TlsFiles {
    /// The CA's certificate (what a client trusts: `redis.tls_ca_file`).
    pub ca_cert: PathBuf,
    /// The server's certificate.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    /// A certificate of another CA, which did not sign the server's (for refusals).
    pub other_ca_cert: PathBuf,
}

impl TlsFiles {
    /// Generates the certificates into `dir`.
    pub fn generate(dir: &Path) -> TlsFiles {
        let ca = |name: &str| {
            let mut params =
                rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::CrlSign,
            ];
            let key = rcgen::KeyPair::generate().expect("CA key");
            rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate")
        };
        let issuer = ca("ParagoN Edge test CA");
        let other = ca("Another test CA");
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("server params");
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        let files = TlsFiles {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            other_ca_cert: dir.join("other-ca.pem"),
        };
        let write = |path: &Path, text: String| {
            std::fs::write(path, text)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()))
        };
        write(&files.ca_cert, issuer.pem());
        write(&files.other_ca_cert, other.pem());
        write(&files.server_cert, cert.pem());
        write(&files.server_key, key.serialize_pem());
        files
    }
}

/// How to start a [`RedisServer`].
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// `requirepass`: clients must authenticate with this password.
    pub password: Option<String>,
    /// Serve TLS only (`--tls-port`, `--port 0`), with these certificates.
    pub tls: Option<TlsPaths>,
    /// A Redis Cluster node (`--cluster-enabled yes`).
    pub cluster: bool,
    /// A replica of the server on this port of 127.0.0.1.
    pub replica_of: Option<u16>,
    /// Further `redis-server` arguments.
    pub args: Vec<String>,
}

/// The files a TLS server needs.
#[derive(Clone, Debug)]
pub struct TlsPaths {
    /// Its certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA certificate (also what `redis-cli` trusts).
    pub ca: PathBuf,
}

impl From<&TlsFiles> for TlsPaths {
    fn from(f: &TlsFiles) -> TlsPaths {
        TlsPaths {
            cert: f.server_cert.clone(),
            key: f.server_key.clone(),
            ca: f.ca_cert.clone(),
        }
    }
}

/// One `redis-server` on a free port of 127.0.0.1, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// The cluster bus port, chosen too: the default, port + 10000, may be taken or past
    /// 65535.
    bus_port: u16,
    options: ServerOptions,
    dir: TempDir,
}

impl RedisServer {
    /// A plain server with no persistence.
    pub fn start() -> RedisServer {
        RedisServer::start_with(ServerOptions::default())
    }

    /// A server started with `options`.
    pub fn start_with(options: ServerOptions) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            bus_port: free_port(),
            options,
            dir: TempDir::new("redis"),
        };
        server.restart();
        server
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://` for TLS, with the password if it has one.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        match &self.options.password {
            Some(pw) => format!("{scheme}://:{pw}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// `redis://127.0.0.1:PORT` (or `rediss://`) with no password.
    pub fn url_without_password(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn cli_command(&self) -> Command {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(tls) = &self.options.tls {
            cmd.arg("--tls").arg("--cacert").arg(&tls.ca);
        }
        if let Some(pw) = &self.options.password {
            cmd.env("REDISCLI_AUTH", pw);
        }
        cmd
    }

    /// Runs `redis-cli` against this server (authenticated, over TLS as needed); its
    /// trimmed output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self
            .cli_command()
            .args(args)
            .stderr(Stdio::null())
            .output()
            .expect("redis-cli comes with redis-server");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Keys matching `pattern` (`redis-cli --scan --pattern`).
    pub fn count_keys(&self, pattern: &str) -> u64 {
        self.cli(&["--scan", "--pattern", pattern])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count() as u64
    }

    /// Whether the process is running (it may have exited, e.g. on a bad argument).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kills the server (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        // A replica's first sync starts at once, not after the default 5 s delay.
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(self.dir.path());
        match &self.options.tls {
            Some(tls) => {
                cmd.args(["--port", "0", "--tls-port", &port])
                    .arg("--tls-cert-file")
                    .arg(&tls.cert)
                    .arg("--tls-key-file")
                    .arg(&tls.key)
                    .arg("--tls-ca-cert-file")
                    .arg(&tls.ca)
                    .args(["--tls-auth-clients", "no"]);
            }
            None => {
                cmd.args(["--port", &port]);
            }
        }
        if let Some(pw) = &self.options.password {
            cmd.args(["--requirepass", pw]);
        }
        if self.options.cluster {
            let bus = self.bus_port.to_string();
            cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .args(["--cluster-port", &bus])
                .arg("--cluster-config-file")
                .arg(self.dir.path().join("nodes.conf"));
        }
        if let Some(master) = self.options.replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &master.to_string()]);
            if let Some(pw) = &self.options.password {
                cmd.args(["--masterauth", pw]);
            }
        }
        cmd.args(&self.options.args);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); run scripts/test, which installs it")
            });
        self.child = Some(child);
        let port = self.port;
        wait_for(
            &format!("redis-server listening on port {port}"),
            Duration::from_secs(10),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One node of a cluster as `CLUSTER NODES` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    /// Node id.
    pub id: String,
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Whether it is a master now.
    pub master: bool,
    /// For a replica: its master's id.
    pub master_id: Option<String>,
    /// Slot ranges it serves (masters only).
    pub slots: Vec<(u16, u16)>,
}

/// A Redis Cluster on free ports of 127.0.0.1, each node killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes, masters first as created (roles change after a failover).
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// `masters` masters with `replicas` replicas each (nodes time out after 1 s), the
    /// cluster created and every node reporting `cluster_state:ok`.
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| {
                RedisServer::start_with(ServerOptions {
                    cluster: true,
                    ..ServerOptions::default()
                })
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port()));
        }
        create.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        let out = create.output().expect("redis-cli comes with redis-server");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        let expected = masters * (1 + replicas);
        wait_for(
            "every cluster node to report cluster_state:ok and know every other node",
            Duration::from_secs(30),
            || {
                cluster.nodes.iter().all(|n| {
                    n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
                        && n.cli(&["CLUSTER", "NODES"]).lines().count() == expected
                })
            },
        );
        if replicas > 0 {
            wait_for(
                "every replica to be in sync with its master",
                Duration::from_secs(30),
                || {
                    cluster.nodes.iter().all(|n| {
                        let info = n.cli(&["INFO", "replication"]);
                        info.contains("role:master") || info.contains("master_link_status:up")
                    })
                },
            );
        }
        cluster
    }

    /// Seed URLs of every node (`redis://127.0.0.1:PORT`).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    /// The node on `port`.
    pub fn node(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .expect("a node of this cluster")
    }

    /// The topology as a live node sees it.
    pub fn topology(&self) -> Vec<ClusterNode> {
        let text = self
            .nodes
            .iter()
            .map(|n| n.cli(&["CLUSTER", "NODES"]))
            .find(|t| !t.is_empty())
            .expect("a live cluster node");
        text.lines().filter_map(parse_cluster_node).collect()
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> u16 {
        self.nodes
            .iter()
            .map(|n| n.cli(&["CLUSTER", "KEYSLOT", key]))
            .find_map(|t| t.parse().ok())
            .expect("a live cluster node")
    }

    /// The master serving `slot` now, if one does (none between a master's failure and
    /// its replica's promotion).
    pub fn master_of(&self, slot: u16) -> Option<ClusterNode> {
        self.topology()
            .into_iter()
            .find(|n| n.master && n.slots.iter().any(|(lo, hi)| (*lo..=*hi).contains(&slot)))
    }

    /// The replicas of the master with `id`.
    pub fn replicas_of(&self, id: &str) -> Vec<ClusterNode> {
        self.topology()
            .into_iter()
            .filter(|n| n.master_id.as_deref() == Some(id))
            .collect()
    }

    /// Keys matching `pattern` on each master now, by port.
    pub fn count_keys_per_master(&self, pattern: &str) -> Vec<(u16, u64)> {
        let masters: Vec<u16> = self
            .topology()
            .into_iter()
            .filter(|n| n.master)
            .map(|n| n.port)
            .collect();
        self.nodes
            .iter()
            .filter(|n| masters.contains(&n.port()))
            .map(|n| (n.port(), n.count_keys(pattern)))
            .collect()
    }

    /// Keys matching `pattern` on all masters.
    pub fn count_keys(&self, pattern: &str) -> u64 {
        self.count_keys_per_master(pattern)
            .iter()
            .map(|(_, n)| n)
            .sum()
    }
}

fn parse_cluster_node(line: &str) -> Option<ClusterNode> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return None;
    }
    let addr = fields[1].split('@').next()?;
    let port = addr.rsplit(':').next()?.parse().ok()?;
    let flags = fields[2];
    if (flags.contains("fail") && !flags.contains("fail?")) || flags.contains("noaddr") {
        return None;
    }
    let master = flags.split(',').any(|f| f == "master");
    let master_id = (fields[3] != "-").then(|| fields[3].to_string());
    let slots = fields[8..]
        .iter()
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((lo, hi)) => Some((lo.parse().ok()?, hi.parse().ok()?)),
            None => s.parse().ok().map(|x| (x, x)),
        })
        .collect();
    Some(ClusterNode {
        id: fields[0].to_string(),
        port,
        master,
        master_id,
        slots,
    })
}

/// A master, its replica and one Sentinel watching them (quorum 1, the master judged
/// down after 500 ms). Everything killed on drop.
#[derive(Debug)]
pub struct RedisSentinel {
    /// The master as started (a replica after a failover, if it comes back).
    pub master: RedisServer,
    /// The replica as started (the master after a failover).
    pub replica: RedisServer,
    sentinel: Option<Child>,
    sentinel_port: u16,
    master_name: String,
    dir: TempDir,
}

impl RedisSentinel {
    /// Starts the three processes and waits until the Sentinel knows the replica.
    pub fn start(master_name: &str) -> RedisSentinel {
        let master = RedisServer::start();
        let replica = RedisServer::start_with(ServerOptions {
            replica_of: Some(master.port()),
            ..ServerOptions::default()
        });
        let dir = TempDir::new("sentinel");
        let sentinel_port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {master_name} 127.0.0.1 {mport} 1\n\
                 sentinel down-after-milliseconds {master_name} 500\n\
                 sentinel failover-timeout {master_name} 5000\n\
                 sentinel parallel-syncs {master_name} 1\n",
                dir = dir.path().display(),
                mport = master.port(),
            ),
        )
        .expect("cannot write sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server --sentinel ({e})"));
        let set = RedisSentinel {
            master,
            replica,
            sentinel: Some(child),
            sentinel_port,
            master_name: master_name.to_string(),
            dir,
        };
        wait_for(
            "the replica to sync with its master",
            Duration::from_secs(10),
            || {
                set.replica
                    .cli(&["INFO", "replication"])
                    .contains("master_link_status:up")
            },
        );
        wait_for(
            "the Sentinel to know the master and its replica",
            Duration::from_secs(15),
            || {
                let replicas = set.sentinel_cli(&["SENTINEL", "REPLICAS", master_name]);
                replicas.contains(&set.replica.port().to_string())
                    && !replicas.contains("s_down")
                    && !replicas.contains("disconnected")
            },
        );
        set
    }

    /// `redis://127.0.0.1:PORT` of the Sentinel.
    pub fn sentinel_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel_port)
    }

    /// The monitored master's name.
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// Runs `redis-cli` against the Sentinel.
    pub fn sentinel_cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.sentinel_port.to_string()])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .expect("redis-cli comes with redis-server");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The port of the master as the Sentinel names it now.
    pub fn current_master_port(&self) -> Option<u16> {
        let text = self.sentinel_cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.master_name]);
        text.lines().nth(1)?.trim().parse().ok()
    }

    /// The server that is the master now (as the Sentinel names it).
    pub fn current_master(&self) -> &RedisServer {
        let port = self.current_master_port();
        [&self.master, &self.replica]
            .into_iter()
            .find(|s| Some(s.port()) == port)
            .unwrap_or(&self.master)
    }

    /// The Sentinel's folder (its rewritten config lives there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.sentinel.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_parse() {
        let line = "07c3 127.0.0.1:30004@40004 master - 0 1426238317239 4 connected 0-5460 6000 [5461->-abc]";
        let n = parse_cluster_node(line).unwrap();
        assert_eq!(n.port, 30004);
        assert!(n.master);
        assert_eq!(n.slots, vec![(0, 5460), (6000, 6000)]);
        let replica = "e7d1 127.0.0.1:30005@40005 myself,slave 07c3 0 1426238316232 5 connected";
        let r = parse_cluster_node(replica).unwrap();
        assert!(!r.master);
        assert_eq!(r.master_id.as_deref(), Some("07c3"));
        let failed = "e7d2 127.0.0.1:30006@40006 master,fail - 0 1 5 disconnected 1-2";
        assert!(parse_cluster_node(failed).is_none());
    }
}
