//! A simulated ParagoN API, for local work, demos, tests and benchmarks.
//!
//! It serves `GET /users/{id}` like ParagoN does: a deterministic user derived from the
//! id ([`user_json`]), `404` for ids starting with `missing`, `401` without the right
//! bearer token when an API key is configured. On top of that it injects faults —
//! latency (fixed, or a slow tail of a share of calls), errors, failures of the first
//! calls of each id, outages, a quota answering `429`, broken bodies, stalled or cut
//! connections — set at start ([`SimConfig::faults`]) or at run time
//! ([`Simulator::set_faults`], or `PUT /_sim/faults`). It counts every request it
//! received, so a test can assert how many calls reached the upstream.
//!
//! ```
//! use paragon_sim::{Faults, SimConfig, Simulator};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sim = Simulator::new(SimConfig::default());
//! let handle = sim.spawn("127.0.0.1:0".parse()?).await?;
//! let client = reqwest::Client::builder().no_proxy().build()?;
//!
//! let body = client.get(format!("{}/users/u1", handle.base_url())).send().await?.bytes().await?;
//! let user: serde_json::Value = serde_json::from_slice(&body)?;
//! assert_eq!(user, paragon_sim::user_json("u1"));
//! assert_eq!(handle.sim().served("/users/u1"), 1);
//!
//! handle.sim().set_faults(Faults { error_rate: 1.0, ..Faults::default() })?;
//! let status = client.get(format!("{}/users/u1", handle.base_url())).send().await?.status();
//! assert_eq!(status, 500);
//! handle.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # HTTP surface
//!
//! | request | answer |
//! |---|---|
//! | `GET /users/{id}` | the user, or an injected fault (see [`Faults`] for the order of checks) |
//! | other methods on `/users/{id}` | `405` |
//! | `GET /_sim/stats` | [`Stats`] as JSON |
//! | `POST /_sim/reset` | zeroes the stats; `204` |
//! | `GET /_sim/faults` | the current [`Faults`] as JSON |
//! | `PUT /_sim/faults` | replaces the faults (an outage starts now); `200` with the new faults, `400` `{"error":"invalid_faults","detail":…}` |
//! | `PATCH /_sim/faults` | changes only the keys given (a JSON object), as `PUT` answers |
//! | `POST /_sim/users/{id}/change` | the user's next version (another body, `ETag`, `Last-Modified`); `200` `{"id":…,"version":n}` |
//! | anything else | `404` |
//!
//! The control endpoints need no authentication and are not counted.
//!
//! # Layout
//!
//! - `lib.rs` — [`SimConfig`] and [`Simulator`]: shared state, faults, counters.
//! - `faults.rs` — [`Faults`], their validation and the quota window.
//! - `service.rs` — request handling and [`SimService`], the hyper service.
//! - `server.rs` — the accept loop with graceful shutdown, [`SimHandle`].
//! - `body.rs` — [`SimBody`], including trickling and aborted bodies.
//! - `stats.rs` — [`Stats`] and the lock-light counters behind them.
//! - `user.rs` — [`user_json`], the deterministic users.
//! - `main.rs` — the `paragon-sim` binary.

#![allow(
    clippy::disallowed_methods,
    reason = "the simulator keeps its own time (tokio's), apart from the edge's layers"
)]

mod body;
mod error;
mod faults;
mod server;
mod service;
mod stats;
mod user;

use std::fmt;
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::time::Instant;

pub use body::{SimBody, TRICKLE_EVERY};
pub use error::{BodyAborted, ConnectionDropped, SimError};
pub use faults::{Faults, DEFAULT_OVERSIZED_BYTES, MAX_FAULT_DURATION, MAX_OVERSIZED_BYTES};
pub use server::{SimHandle, SHUTDOWN_GRACE};
pub use service::SimService;
pub use stats::{Stats, MAX_TRACKED_PATHS, STATUS_DROPPED};
pub use user::user_json;

use faults::ActiveFaults;
use stats::Counters;

/// How a [`Simulator`] starts.
#[derive(Clone, Default)]
pub struct SimConfig {
    /// When set, `/users` requests need `Authorization: Bearer <api_key>`, else `401`.
    pub api_key: Option<String>,
    /// The faults in force from the start.
    pub faults: Faults,
    /// Seed of the per-request fault draws: the same seed and the same sequence of
    /// requests give the same faults.
    pub seed: u64,
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("faults", &self.faults)
            .field("seed", &self.seed)
            .finish()
    }
}

/// The simulated ParagoN API: configuration, faults (changeable at run time) and
/// counters. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

struct Inner {
    /// `Bearer <api_key>`, when a key is required.
    expected_authorization: Option<Box<[u8]>>,
    seed: u64,
    /// Read on every request, written only by `set_faults`.
    faults: RwLock<Arc<ActiveFaults>>,
    counters: Counters,
    /// Users changed at run time, with their version (every other user is version 1).
    versions: parking_lot::Mutex<std::collections::HashMap<String, u64>>,
}

impl fmt::Debug for Simulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Simulator")
            .field(
                "api_key_required",
                &self.inner.expected_authorization.is_some(),
            )
            .field("seed", &self.inner.seed)
            .field("faults", &self.faults())
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// A simulator with `config`.
    ///
    /// # Panics
    ///
    /// If `config.faults` is invalid (see [`Faults::validate`]); use
    /// [`Simulator::try_new`] to get the error instead.
    pub fn new(config: SimConfig) -> Self {
        match Self::try_new(config) {
            Ok(sim) => sim,
            Err(e) => panic!("invalid simulator config: {e}"),
        }
    }

    /// A simulator with `config`, or why its faults are invalid.
    pub fn try_new(config: SimConfig) -> Result<Self, SimError> {
        let faults = ActiveFaults::compile(config.faults, Instant::now())?.with_seed(config.seed);
        Ok(Self {
            inner: Arc::new(Inner {
                expected_authorization: config
                    .api_key
                    .map(|key| format!("Bearer {key}").into_bytes().into_boxed_slice()),
                seed: config.seed,
                faults: RwLock::new(Arc::new(faults)),
                counters: Counters::default(),
                versions: Default::default(),
            }),
        })
    }

    /// The simulator as a hyper service, for serving it on connections of your own.
    pub fn service(&self) -> SimService {
        SimService::new(self.clone())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }

    /// Requests received on exactly `path` (as sent, e.g. `"/users/u1"`).
    pub fn served(&self, path: &str) -> u64 {
        self.inner.counters.served(path)
    }

    /// All `/users/*` requests received, whatever they were answered.
    pub fn served_total(&self) -> u64 {
        self.inner.counters.total()
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        self.inner.counters.reset();
    }

    /// Replaces the faults after validating them. An `outage` starts now; a quota
    /// starts a fresh window; the fault draws restart from the seed.
    pub fn set_faults(&self, faults: Faults) -> Result<(), SimError> {
        let active = ActiveFaults::compile(faults, Instant::now())?.with_seed(self.inner.seed);
        *self.inner.faults.write() = Arc::new(active);
        tracing::info!(faults = ?self.faults(), "faults set");
        Ok(())
    }

    /// The faults in force, as they were set.
    pub fn faults(&self) -> Faults {
        self.inner.faults.read().spec.clone()
    }

    /// Changes only the fault keys present in `patch` (a JSON object of [`Faults`]
    /// fields), after validating the result. An `outage` or `quota` given starts now.
    pub fn patch_faults(&self, patch: &serde_json::Value) -> Result<(), SimError> {
        let invalid = |reason: String| SimError::InvalidValue {
            field: "patch",
            reason,
        };
        let serde_json::Value::Object(patch) = patch else {
            return Err(invalid("a patch is a JSON object of fault keys".into()));
        };
        let mut merged = serde_json::to_value(self.faults()).map_err(|e| invalid(e.to_string()))?;
        if let serde_json::Value::Object(current) = &mut merged {
            for (key, value) in patch {
                current.insert(key.clone(), value.clone());
            }
        }
        let faults: Faults = serde_json::from_value(merged).map_err(|e| invalid(e.to_string()))?;
        self.set_faults(faults)
    }

    /// The version of user `id`: 1 until it is changed.
    pub fn user_version(&self, id: &str) -> u64 {
        self.inner.versions.lock().get(id).copied().unwrap_or(1)
    }

    /// Changes user `id`: its next version has another body, `ETag` and
    /// `Last-Modified`. The new version.
    pub fn change_user(&self, id: &str) -> u64 {
        let mut versions = self.inner.versions.lock();
        let v = versions.entry(id.to_owned()).or_insert(1);
        *v += 1;
        *v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_faults_are_refused_and_the_old_ones_kept() {
        let sim = Simulator::new(SimConfig::default());
        let good = Faults {
            error_rate: 0.5,
            ..Faults::default()
        };
        sim.set_faults(good.clone()).expect("valid");
        let bad = Faults {
            error_rate: 1.5,
            ..Faults::default()
        };
        assert!(sim.set_faults(bad.clone()).is_err());
        assert_eq!(sim.faults(), good);
        assert!(Simulator::try_new(SimConfig {
            faults: bad,
            ..SimConfig::default()
        })
        .is_err());
    }

    #[test]
    fn debug_output_hides_the_api_key() {
        let config = SimConfig {
            api_key: Some("s3cret".into()),
            ..SimConfig::default()
        };
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(!format!("{:?}", Simulator::new(config)).contains("s3cret"));
    }
}
