//! `[redis]`: where the fleet's shared state lives, and how that Redis is deployed.

use paragon_layers::fleet::{LinkOptions, RedisTarget};
use serde::{Deserialize, Serialize};
use url::Url;

use super::types::comma_list;
use super::{invalid, ConfigError, RedisUrl};

/// How Redis is deployed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One server at `redis.url` (plain, or TLS with `rediss://`).
    #[default]
    Standalone,
    /// A Redis Cluster found through `redis.nodes`.
    Cluster,
    /// A master named `redis.master_name`, found through `redis.sentinels`.
    Sentinel,
}

impl RedisMode {
    /// The name used in the file and on the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            RedisMode::Standalone => "standalone",
            RedisMode::Cluster => "cluster",
            RedisMode::Sentinel => "sentinel",
        }
    }
}

/// `[redis]`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `standalone`, `cluster` or `sentinel`.
    pub mode: RedisMode,
    /// Standalone: `redis://host:port[/db]` or `rediss://…`. Sentinel: the master's user,
    /// password, database and TLS (its host is not used). A password in it never prints.
    pub url: RedisUrl,
    /// Cluster: seed nodes.
    #[serde(deserialize_with = "comma_list")]
    pub nodes: Vec<RedisUrl>,
    /// Sentinel: the sentinels.
    #[serde(deserialize_with = "comma_list")]
    pub sentinels: Vec<RedisUrl>,
    /// Sentinel: the monitored master's name.
    pub master_name: String,
    /// PEM file of the CA that signed the servers' certificates; empty: the system roots.
    pub tls_ca_file: String,
    /// Prefix of every key.
    pub key_prefix: String,
    /// Live instances to assume while Redis is unreachable; 0: the count last seen (1 if
    /// never seen).
    pub fallback_instances: u32,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            mode: RedisMode::Standalone,
            url: RedisUrl::new("redis://127.0.0.1:6379"),
            nodes: Vec::new(),
            sentinels: Vec::new(),
            master_name: String::new(),
            tls_ca_file: String::new(),
            key_prefix: "paragon-edge:".into(),
            fallback_instances: 0,
        }
    }
}

/// A `redis://` or `rediss://` URL with a host; whether it is TLS.
fn redis_url(key: &'static str, url: &RedisUrl) -> Result<bool, ConfigError> {
    let parsed = Url::parse(url.expose())
        .map_err(|e| invalid(key, format!("{} is not a URL ({e})", url.redacted())))?;
    if !matches!(parsed.scheme(), "redis" | "rediss") || parsed.host().is_none() {
        return Err(invalid(
            key,
            format!(
                "{} must be redis://host:port or rediss://host:port (TLS)",
                url.redacted()
            ),
        ));
    }
    Ok(parsed.scheme() == "rediss")
}

impl RedisConfig {
    /// Checks the section as `serve` uses it (URLs, the keys each mode needs and refuses,
    /// the CA file) and gives where Redis is and the link's options. The error names the
    /// key.
    pub fn checked(&self) -> Result<(RedisTarget, LinkOptions), ConfigError> {
        if self.key_prefix.is_empty() {
            return Err(invalid("redis.key_prefix", "must not be empty"));
        }
        if self.key_prefix.contains(['{', '}']) {
            return Err(invalid(
                "redis.key_prefix",
                "must not contain { or }: they would set the Redis Cluster hash slot of every key",
            ));
        }
        let mode = self.mode.as_str();
        let unused = |key: &'static str, used_by: &str| {
            invalid(
                key,
                format!("is set, but redis.mode is \"{mode}\"; it is used only with redis.mode = \"{used_by}\""),
            )
        };
        if self.mode != RedisMode::Cluster && !self.nodes.is_empty() {
            return Err(unused("redis.nodes", "cluster"));
        }
        if self.mode != RedisMode::Sentinel && !self.sentinels.is_empty() {
            return Err(unused("redis.sentinels", "sentinel"));
        }
        if self.mode != RedisMode::Sentinel && !self.master_name.is_empty() {
            return Err(unused("redis.master_name", "sentinel"));
        }
        let (key, tls) = match self.mode {
            RedisMode::Standalone => ("redis.url", redis_url("redis.url", &self.url)?),
            RedisMode::Cluster => {
                if self.nodes.is_empty() {
                    return Err(invalid(
                        "redis.nodes",
                        "redis.mode = \"cluster\" needs at least one seed node, e.g. [\"redis://10.0.0.1:7000\"]",
                    ));
                }
                let mut schemes = Vec::new();
                for node in &self.nodes {
                    schemes.push(redis_url("redis.nodes", node)?);
                    let db = Url::parse(node.expose())
                        .ok()
                        .map(|u| u.path().trim_matches('/').to_string())
                        .unwrap_or_default();
                    if !db.is_empty() && db != "0" {
                        return Err(invalid(
                            "redis.nodes",
                            format!("{}: a Redis Cluster has only database 0", node.redacted()),
                        ));
                    }
                }
                if schemes.iter().any(|t| *t != schemes[0]) {
                    return Err(invalid(
                        "redis.nodes",
                        "mixes redis:// and rediss://; a cluster is reached with TLS or without",
                    ));
                }
                ("redis.nodes", schemes[0])
            }
            RedisMode::Sentinel => {
                if self.sentinels.is_empty() {
                    return Err(invalid(
                        "redis.sentinels",
                        "redis.mode = \"sentinel\" needs at least one sentinel, e.g. [\"redis://10.0.0.1:26379\"]",
                    ));
                }
                if self.master_name.trim().is_empty() {
                    return Err(invalid(
                        "redis.master_name",
                        "redis.mode = \"sentinel\" needs the name of the master the sentinels monitor",
                    ));
                }
                let mut tls = redis_url("redis.url", &self.url)?;
                for s in &self.sentinels {
                    tls |= redis_url("redis.sentinels", s)?;
                }
                ("redis.sentinels", tls)
            }
        };
        if !self.tls_ca_file.is_empty() && !tls {
            return Err(invalid(
                "redis.tls_ca_file",
                format!("is set, but no URL of redis.mode = \"{mode}\" uses rediss:// (TLS)"),
            ));
        }
        let options = self.link_options()?;
        let target = self.target();
        match target.check(&options) {
            Ok(()) => Ok((target, options)),
            Err(e) => {
                // A target that works with the system's roots was refused for the CA file.
                let without_ca = LinkOptions {
                    tls_ca: None,
                    ..options.clone()
                };
                let ca_at_fault = options.tls_ca.is_some() && target.check(&without_ca).is_ok();
                Err(invalid(
                    if ca_at_fault {
                        "redis.tls_ca_file"
                    } else {
                        key
                    },
                    e,
                ))
            }
        }
    }

    /// Where Redis is, for the fleet's link.
    fn target(&self) -> RedisTarget {
        let urls = |list: &[RedisUrl]| list.iter().map(|u| u.expose().to_string()).collect();
        match self.mode {
            RedisMode::Standalone => RedisTarget::Standalone {
                url: self.url.expose().to_string(),
            },
            RedisMode::Cluster => RedisTarget::Cluster {
                nodes: urls(&self.nodes),
            },
            RedisMode::Sentinel => RedisTarget::Sentinel {
                sentinels: urls(&self.sentinels),
                master_name: self.master_name.clone(),
                master: self.url.expose().to_string(),
            },
        }
    }

    /// The link's settings (the link's defaults for its timings); reads the CA file.
    fn link_options(&self) -> Result<LinkOptions, ConfigError> {
        let tls_ca = if self.tls_ca_file.is_empty() {
            None
        } else {
            let pem = std::fs::read(&self.tls_ca_file).map_err(|e| {
                invalid(
                    "redis.tls_ca_file",
                    format!("cannot read {:?} ({e})", self.tls_ca_file),
                )
            })?;
            Some(pem)
        };
        Ok(LinkOptions {
            key_prefix: self.key_prefix.clone(),
            fallback_instances: self.fallback_instances,
            tls_ca,
            ..LinkOptions::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn err(toml: &str) -> String {
        super::super::Settings::from_toml(toml)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn every_mode_reads_its_keys() {
        let c = Config::from_toml(
            "[redis]\nmode = \"cluster\"\nnodes = [\"redis://10.0.0.1:7000\", \"redis://10.0.0.2:7000\"]\nfallback_instances = 4",
        )
        .unwrap();
        assert_eq!(c.redis.mode, super::RedisMode::Cluster);
        assert_eq!(c.redis.nodes.len(), 2);
        assert_eq!(c.redis.link_options().unwrap().fallback_instances, 4);
        let c = Config::from_toml(
            "[redis]\nmode = \"sentinel\"\nsentinels = \"redis://a:26379, redis://b:26379\"\nmaster_name = \"edge\"",
        )
        .unwrap();
        assert_eq!(
            c.redis.sentinels.len(),
            2,
            "a comma-separated string is a list"
        );
        assert_eq!(c.redis.target().mode(), "sentinel");
    }

    /// The error for `toml` starts with `said` (the key, then what is wrong).
    fn refused(toml: &str, said: &str) {
        let e = err(toml);
        assert!(e.starts_with(said), "{toml:?} gave {e:?}, not {said:?}…");
    }

    #[test]
    fn combinations_serve_cannot_use_name_their_key() {
        refused(
            "[redis]\nmode = \"cluster\"",
            "redis.nodes: redis.mode = \"cluster\" needs at least one seed node",
        );
        refused(
            "[redis]\nmode = \"clustered\"",
            "redis.mode: unknown variant",
        );
        refused(
            "[redis]\nmode = \"sentinel\"\nmaster_name = \"m\"",
            "redis.sentinels: redis.mode = \"sentinel\" needs at least one sentinel",
        );
        refused(
            "[redis]\nmode = \"sentinel\"\nsentinels = [\"redis://s:26379\"]",
            "redis.master_name: redis.mode = \"sentinel\" needs the name",
        );
        refused(
            "[redis]\nnodes = [\"redis://a:7000\"]",
            "redis.nodes: is set, but redis.mode is \"standalone\"",
        );
        refused(
            "[redis]\nmaster_name = \"m\"",
            "redis.master_name: is set, but redis.mode is \"standalone\"",
        );
        refused(
            "[redis]\nmode = \"cluster\"\nnodes = [\"redis://a:7000\", \"rediss://b:7000\"]",
            "redis.nodes: mixes redis:// and rediss://",
        );
        refused(
            "[redis]\nmode = \"cluster\"\nnodes = [\"redis://a:7000/3\"]",
            "redis.nodes: redis://a:7000/3: a Redis Cluster has only database 0",
        );
        refused(
            "[redis]\nmode = \"cluster\"\nnodes = [\"unix:///tmp/redis.sock\"]",
            "redis.nodes: unix:///tmp/redis.sock must be redis://host:port",
        );
        refused(
            "[redis]\nurl = \"redis+unix:///tmp/r.sock\"",
            "redis.url: redis+unix:///tmp/r.sock must be",
        );
        refused(
            "[redis]\nurl = \"redis://h:1/notadb\"",
            "redis.url: Invalid database number",
        );
        refused(
            "[redis]\ntls_ca_file = \"/etc/ssl/certs/x.pem\"",
            "redis.tls_ca_file: is set, but no URL of redis.mode = \"standalone\" uses rediss://",
        );
        refused(
            "[redis]\nurl = \"rediss://h:1\"\ntls_ca_file = \"/nonexistent/ca.pem\"",
            "redis.tls_ca_file: cannot read",
        );
        refused(
            "[redis]\nurl = \"rediss://h:1\"\ntls_ca_file = \"Cargo.toml\"",
            "redis.tls_ca_file: the CA file holds no PEM certificate",
        );
        refused(
            "[redis]\nkey_prefix = \"{edge}:\"",
            "redis.key_prefix: must not contain { or }",
        );
        refused(
            "[redis]\nfallback_instances = -1",
            "redis.fallback_instances",
        );
        refused("[redis]\nsentinel = []", "redis.sentinel: unknown field");
    }

    #[test]
    fn passwords_never_show_in_errors_or_output() {
        let e = err(
            "[redis]\nmode = \"cluster\"\nnodes = [\"redis://:pw-one@a:7000\", \"redis://:pw-two@b:7000\"]",
        );
        assert!(!e.contains("pw-one") && !e.contains("pw-two"), "{e}");
        let e = err("[redis]\nurl = \"ftp://:pw-three@h:1\"");
        assert!(!e.contains("pw-three"), "{e}");
        let c = Config::from_toml(
            "[redis]\nmode = \"sentinel\"\nurl = \"redis://:pw-master@ignored:1\"\nsentinels = [\"redis://:pw-sentinel@s:26379\"]\nmaster_name = \"m\"",
        )
        .unwrap();
        let out = c.to_redacted_toml();
        assert!(
            !out.contains("pw-master") && !out.contains("pw-sentinel"),
            "{out}"
        );
        let shown = format!("{:?}", c.redis.target());
        assert!(
            !shown.contains("pw-master") && !shown.contains("pw-sentinel"),
            "{shown}"
        );
    }
}
