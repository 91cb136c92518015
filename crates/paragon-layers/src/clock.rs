//! The one time source of every layer.

#![allow(
    clippy::disallowed_methods,
    reason = "the one module that reads the OS clock"
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A point in time: nanoseconds since the clock's origin.
///
/// Only comparable with timestamps of the same [`Clock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// This timestamp moved forward by `d` (saturating).
    #[inline]
    pub fn after(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_nanos(d)))
    }

    /// How long from `earlier` to `self`, zero if `earlier` is later.
    #[inline]
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// Converts a duration to whole nanoseconds, saturating at `u64::MAX`.
#[inline]
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Where the layers read the time.
///
/// - [`Clock::coarse`]: a process-wide clock ticked every millisecond by a background
///   thread; reading it is one atomic load, which keeps the cache-hit path cheap (the
///   technique nginx uses for its cached time). Decisions are exact to the tick.
/// - [`Clock::coarse_on`]: the same millisecond clock, ticked by a task on a tokio
///   runtime instead of a thread of its own. A busy runtime runs the tick between two
///   requests, as nginx refreshes its time once per turn of its event loop, so no thread
///   wakes up 1,000 times a second on the cores that serve. It reads the runtime's time,
///   so paused test time drives it too.
/// - [`Clock::tokio`]: reads [`tokio::time::Instant`], so paused test time
///   (`#[tokio::test(start_paused = true)]`, `tokio::time::advance`) drives it exactly.
/// - [`Clock::manual`]: moves only when told to; for pure unit tests.
#[derive(Clone, Debug)]
pub struct Clock {
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    /// Read with one atomic load; ticked by a thread or by a runtime task.
    Coarse(Arc<AtomicU64>),
    Tokio(tokio::time::Instant),
    Manual(Arc<AtomicU64>),
}

/// Tick of the coarse clock.
const COARSE_TICK: Duration = Duration::from_millis(1);

fn coarse_cell() -> &'static Arc<AtomicU64> {
    static CELL: OnceLock<Arc<AtomicU64>> = OnceLock::new();
    CELL.get_or_init(|| {
        let cell = Arc::new(AtomicU64::new(0));
        let ticked = Arc::clone(&cell);
        let origin = Instant::now();
        std::thread::Builder::new()
            .name("paragon-coarse-clock".into())
            .spawn(move || loop {
                std::thread::sleep(COARSE_TICK);
                ticked.store(duration_nanos(origin.elapsed()), Ordering::Relaxed);
            })
            .map(|_| ())
            .unwrap_or_else(|e| {
                // Without the ticker the clock would stand still; fail loudly at start-up.
                panic!("cannot start the coarse clock thread: {e}")
            });
        cell
    })
}

impl Clock {
    /// The shared millisecond-tick clock (cheapest to read).
    pub fn coarse() -> Clock {
        Clock {
            kind: Kind::Coarse(Arc::clone(coarse_cell())),
        }
    }

    /// A millisecond clock ticked by a task on `runtime` (see the type's docs). Reading
    /// it costs what reading [`Clock::coarse`] costs.
    ///
    /// The tick task ends once every clone of the clock is dropped. The clock stands
    /// still once `runtime` shuts down, so use it where the clock lives with its runtime,
    /// as in a server's `main`; [`Clock::coarse`] works anywhere.
    pub fn coarse_on(runtime: &tokio::runtime::Handle) -> Clock {
        let cell = Arc::new(AtomicU64::new(0));
        let ticked = Arc::downgrade(&cell);
        let _detached = runtime.spawn(async move {
            let origin = tokio::time::Instant::now();
            let mut every = tokio::time::interval(COARSE_TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(cell) = ticked.upgrade() else { return };
                cell.store(duration_nanos(origin.elapsed()), Ordering::Relaxed);
            }
        });
        Clock {
            kind: Kind::Coarse(cell),
        }
    }

    /// A clock on tokio's time, which tests can pause and advance.
    pub fn tokio() -> Clock {
        Clock {
            kind: Kind::Tokio(tokio::time::Instant::now()),
        }
    }

    /// A clock that starts at zero and moves only by [`Clock::advance`].
    pub fn manual() -> Clock {
        Clock {
            kind: Kind::Manual(Arc::new(AtomicU64::new(0))),
        }
    }

    /// Moves a manual clock forward; no effect on the other kinds.
    pub fn advance(&self, d: Duration) {
        if let Kind::Manual(t) = &self.kind {
            t.fetch_add(duration_nanos(d), Ordering::Relaxed);
        }
    }

    /// The current time.
    #[inline]
    pub fn now(&self) -> Timestamp {
        match &self.kind {
            Kind::Coarse(cell) => Timestamp(cell.load(Ordering::Relaxed)),
            Kind::Tokio(origin) => Timestamp(duration_nanos(origin.elapsed())),
            Kind::Manual(t) => Timestamp(t.load(Ordering::Relaxed)),
        }
    }

    /// Sleeps for `d` on the runtime's timer (paused time aware).
    ///
    /// A manual clock is advanced by `d` instead, so waiting code stays deterministic.
    pub async fn sleep(&self, d: Duration) {
        match &self.kind {
            Kind::Manual(_) => self.advance(d),
            _ => tokio::time::sleep(d).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let c = Clock::manual();
        assert_eq!(c.now(), Timestamp(0));
        c.advance(Duration::from_millis(5));
        assert_eq!(c.now(), Timestamp(5_000_000));
        let c2 = c.clone();
        c2.advance(Duration::from_nanos(1));
        assert_eq!(c.now(), Timestamp(5_000_001));
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let c = Clock::tokio();
        let t0 = c.now();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(c.now().since(t0), Duration::from_secs(3));
    }

    #[test]
    fn coarse_clock_advances() {
        let c = Clock::coarse();
        let t0 = c.now();
        // Wait for at least two ticks without asserting any duration.
        while c.now().since(t0) < Duration::from_millis(2) {
            std::thread::yield_now();
        }
        assert!(c.now() > t0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_runtime_ticked_clock_is_exact_to_the_tick_and_stops_with_its_last_clone() {
        let runtime = tokio::runtime::Handle::current();
        let c = Clock::coarse_on(&runtime);
        assert_eq!(runtime.metrics().num_alive_tasks(), 1, "one tick task");
        let t0 = c.now();
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The tick due at the same instant as this wake-up may run just after it.
        let waited = c.now().since(t0);
        assert!(
            waited == Duration::from_millis(10) || waited == Duration::from_millis(9),
            "{waited:?}"
        );
        let clone = c.clone();
        drop(c);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            runtime.metrics().num_alive_tasks(),
            1,
            "a clone still reads it"
        );
        assert!(clone.now().since(t0) >= Duration::from_millis(14));
        drop(clone);
        // The next tick finds no clock left and ends the task.
        tokio::time::sleep(Duration::from_millis(2)).await;
        tokio::task::yield_now().await;
        assert_eq!(runtime.metrics().num_alive_tasks(), 0);
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        let t = Timestamp(u64::MAX - 1).after(Duration::from_secs(1));
        assert_eq!(t, Timestamp(u64::MAX));
        assert_eq!(Timestamp(1).since(Timestamp(5)), Duration::ZERO);
    }
}
