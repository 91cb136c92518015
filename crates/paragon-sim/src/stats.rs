//! Counters of the requests the simulator received.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// How many distinct paths [`Stats::by_path`] remembers; requests on further paths
/// still count in [`Stats::total`] and [`Stats::by_status`].
pub const MAX_TRACKED_PATHS: usize = 10_000;

/// The status recorded for a request whose connection was closed without a response
/// (the `drop_rate` fault).
pub const STATUS_DROPPED: u16 = 0;

/// Every status the simulator can answer on `/users`, plus [`STATUS_DROPPED`].
const STATUSES: [u16; 10] = [STATUS_DROPPED, 200, 304, 400, 401, 404, 405, 429, 500, 503];
const SHARDS: usize = 16;

/// A snapshot of what the simulator served on `/users/*`. Control requests
/// (`/_sim/*`) and other paths are not counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests received on `/users/*`, whatever they were answered.
    pub total: u64,
    /// Answers by HTTP status; `0` counts connections dropped without an answer.
    /// A request still waiting (e.g. on injected latency) is in `total` only.
    pub by_status: BTreeMap<u16, u64>,
    /// Requests by exact path as received (still percent-encoded, without the query),
    /// for at most [`MAX_TRACKED_PATHS`] distinct paths.
    pub by_path: BTreeMap<String, u64>,
    /// Requests that were conditional (`If-None-Match` or `If-Modified-Since`).
    #[serde(default)]
    pub conditional: u64,
}

/// Lock-light counters: atomics, and a path map split in shards whose locks are held
/// only for one map update.
#[derive(Debug)]
pub(crate) struct Counters {
    total: AtomicU64,
    conditional: AtomicU64,
    by_status: [AtomicU64; STATUSES.len()],
    paths: [Mutex<HashMap<Box<str>, u64>>; SHARDS],
    distinct_paths: AtomicUsize,
    /// Statuses outside `STATUSES` (none today; kept so no answer goes uncounted).
    other_statuses: Mutex<BTreeMap<u16, u64>>,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            total: AtomicU64::new(0),
            conditional: AtomicU64::new(0),
            by_status: std::array::from_fn(|_| AtomicU64::new(0)),
            paths: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            distinct_paths: AtomicUsize::new(0),
            other_statuses: Mutex::new(BTreeMap::new()),
        }
    }
}

fn shard_of(path: &str) -> usize {
    let h = path.bytes().fold(0x811C_9DC5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    h as usize % SHARDS
}

impl Counters {
    /// Counts one request received on `path`.
    pub(crate) fn record_request(&self, path: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut shard = self.paths[shard_of(path)].lock();
        if let Some(count) = shard.get_mut(path) {
            *count += 1;
        } else if self.distinct_paths.fetch_add(1, Ordering::Relaxed) < MAX_TRACKED_PATHS {
            shard.insert(path.into(), 1);
        } else {
            self.distinct_paths.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Counts one answer with `status`.
    pub(crate) fn record_status(&self, status: u16) {
        if let Some(i) = STATUSES.iter().position(|s| *s == status) {
            self.by_status[i].fetch_add(1, Ordering::Relaxed);
        } else {
            *self.other_statuses.lock().entry(status).or_default() += 1;
        }
    }

    /// Counts one conditional request.
    pub(crate) fn record_conditional(&self) {
        self.conditional.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub(crate) fn served(&self, path: &str) -> u64 {
        self.paths[shard_of(path)]
            .lock()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let mut by_status: BTreeMap<u16, u64> = STATUSES
            .iter()
            .zip(&self.by_status)
            .filter_map(|(status, count)| {
                let count = count.load(Ordering::Relaxed);
                (count > 0).then_some((*status, count))
            })
            .collect();
        for (status, count) in self.other_statuses.lock().iter() {
            by_status.insert(*status, *count);
        }
        let mut by_path = BTreeMap::new();
        for shard in &self.paths {
            for (path, count) in shard.lock().iter() {
                by_path.insert(path.to_string(), *count);
            }
        }
        Stats {
            total: self.total(),
            by_status,
            by_path,
            conditional: self.conditional.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn reset(&self) {
        self.total.store(0, Ordering::Relaxed);
        self.conditional.store(0, Ordering::Relaxed);
        self.other_statuses.lock().clear();
        for count in &self.by_status {
            count.store(0, Ordering::Relaxed);
        }
        for shard in &self.paths {
            let mut shard = shard.lock();
            self.distinct_paths
                .fetch_sub(shard.len(), Ordering::Relaxed);
            shard.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_statuses_and_paths() {
        let c = Counters::default();
        c.record_request("/users/a");
        c.record_request("/users/a");
        c.record_request("/users/b");
        c.record_status(200);
        c.record_status(200);
        c.record_status(STATUS_DROPPED);
        assert_eq!(c.total(), 3);
        assert_eq!(c.served("/users/a"), 2);
        assert_eq!(c.served("/users/c"), 0);
        let s = c.snapshot();
        assert_eq!(s.total, 3);
        assert_eq!(s.by_status, BTreeMap::from([(0, 1), (200, 2)]));
        assert_eq!(s.by_path.get("/users/b"), Some(&1));
        c.reset();
        assert_eq!(c.snapshot(), Stats::default());
        assert_eq!(c.distinct_paths.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn path_map_is_capped_but_total_is_not() {
        let c = Counters::default();
        for i in 0..MAX_TRACKED_PATHS + 50 {
            c.record_request(&format!("/users/{i}"));
        }
        c.record_request("/users/0");
        let s = c.snapshot();
        assert_eq!(s.total, (MAX_TRACKED_PATHS + 51) as u64);
        assert_eq!(s.by_path.len(), MAX_TRACKED_PATHS);
        assert_eq!(c.served("/users/0"), 2);
    }
}
