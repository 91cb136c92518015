//! Where the limiter's state lives: one budget, and the upstream's 429 pause.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::gcra::{Gcra, Step};
use super::layer::RateLimitConfig;
use crate::clock::duration_nanos;
use crate::Clock;

/// What the store decided for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// Go after `wait` (zero: at once).
    Admit {
        /// How long to wait for the reserved slot.
        wait: Duration,
    },
    /// Over budget; a call would be admitted after `retry_after`.
    OverBudget {
        /// Time until a call would be admitted.
        retry_after: Duration,
    },
    /// The upstream's 429 pause is in force for `retry_after` more.
    Paused {
        /// Time until the pause ends.
        retry_after: Duration,
    },
}

/// A snapshot of a budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetState {
    /// Calls that could go at once.
    pub available: u64,
    /// Time left of the upstream's pause, zero when none.
    pub paused_for: Duration,
}

/// Shared state of a rate limiter: memory for one process, or a shared store for a fleet.
pub trait RateStore: Send + Sync + 'static {
    /// One GCRA step for a call willing to wait up to `max_wait`.
    fn acquire(&self, gcra: &Gcra, max_wait: Duration) -> impl Future<Output = Acquire> + Send;

    /// Stops every call for `d` (the upstream said 429 with this `Retry-After`).
    fn pause_for(&self, d: Duration) -> impl Future<Output = ()> + Send;

    /// The budget now, for status pages.
    fn state(&self, gcra: &Gcra) -> impl Future<Output = BudgetState> + Send;

    /// Ends the pause at once. `false` when a shared store could not be reached.
    fn resume(&self) -> impl Future<Output = bool> + Send;

    /// The step of [`acquire`](Self::acquire), taken at once when the store needs no I/O
    /// for it; `None` (the default) when it must be awaited. A call admitted at once
    /// costs the limiter no allocation and no clone of the service below it.
    fn try_acquire_now(&self, gcra: &Gcra, max_wait: Duration) -> Option<Acquire> {
        let _ = (gcra, max_wait);
        None
    }

    /// How many limiters share the upstream's quota through this store: each paces its
    /// calls by this share of what the upstream says remains. One for a budget in one
    /// process; a fleet's store says how many instances it sees live.
    fn quota_sharers(&self) -> u32 {
        1
    }

    /// The limiter's settings changed from `old` to `new` while it serves: the store
    /// keeps the budget spent, repriced to the new rate ([`Gcra::reprice`]), and takes
    /// any setting it keeps a copy of. The default keeps the state as it is.
    fn reconfigure(&self, old: &RateLimitConfig, new: &RateLimitConfig) {
        let _ = (old, new);
    }
}

/// A budget in this process: two atomics, updated lock-free.
#[derive(Debug)]
pub struct MemoryStore {
    clock: Clock,
    tat: AtomicU64,
    paused_until: AtomicU64,
}

impl MemoryStore {
    /// An empty (full-budget) store on `clock`.
    pub fn new(clock: Clock) -> Self {
        MemoryStore {
            clock,
            tat: AtomicU64::new(0),
            paused_until: AtomicU64::new(0),
        }
    }

    /// The synchronous step behind [`RateStore::acquire`].
    pub fn acquire_now(&self, gcra: &Gcra, max_wait: Duration) -> Acquire {
        let now = self.clock.now().0;
        let paused_until = self.paused_until.load(Ordering::Acquire);
        if now < paused_until {
            return Acquire::Paused {
                retry_after: Duration::from_nanos(paused_until - now),
            };
        }
        let max_wait = duration_nanos(max_wait);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            match gcra.step(tat, now, max_wait) {
                Step::Reject { retry_after } => {
                    return Acquire::OverBudget {
                        retry_after: Duration::from_nanos(retry_after),
                    }
                }
                Step::Admit { new_tat, wait } => {
                    match self.tat.compare_exchange_weak(
                        tat,
                        new_tat,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            return Acquire::Admit {
                                wait: Duration::from_nanos(wait),
                            }
                        }
                        Err(current) => tat = current,
                    }
                }
            }
        }
    }

    /// The synchronous step behind [`RateStore::pause_for`]; a longer pause wins.
    pub fn pause_now(&self, d: Duration) {
        let until = self.clock.now().after(d).0;
        self.paused_until.fetch_max(until, Ordering::AcqRel);
    }

    /// The synchronous step behind [`RateStore::resume`].
    pub fn resume_now(&self) {
        self.paused_until.store(0, Ordering::Release);
    }

    /// Keeps the calls spent when the price of one changes from `old` to `new`.
    pub fn reprice(&self, old: &Gcra, new: &Gcra) {
        if old == new {
            return;
        }
        let now = self.clock.now().0;
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(new.reprice(old, tat, now))
            });
    }

    /// The synchronous step behind [`RateStore::state`].
    pub fn state_now(&self, gcra: &Gcra) -> BudgetState {
        let now = self.clock.now().0;
        let paused_until = self.paused_until.load(Ordering::Acquire);
        BudgetState {
            available: gcra.available(self.tat.load(Ordering::Acquire), now),
            paused_for: Duration::from_nanos(paused_until.saturating_sub(now)),
        }
    }
}

impl RateStore for MemoryStore {
    fn acquire(&self, gcra: &Gcra, max_wait: Duration) -> impl Future<Output = Acquire> + Send {
        std::future::ready(self.acquire_now(gcra, max_wait))
    }

    fn pause_for(&self, d: Duration) -> impl Future<Output = ()> + Send {
        self.pause_now(d);
        std::future::ready(())
    }

    fn state(&self, gcra: &Gcra) -> impl Future<Output = BudgetState> + Send {
        std::future::ready(self.state_now(gcra))
    }

    fn resume(&self) -> impl Future<Output = bool> + Send {
        self.resume_now();
        std::future::ready(true)
    }

    fn try_acquire_now(&self, gcra: &Gcra, max_wait: Duration) -> Option<Acquire> {
        Some(self.acquire_now(gcra, max_wait))
    }

    fn reconfigure(&self, old: &RateLimitConfig, new: &RateLimitConfig) {
        self.reprice(&old.gcra(), &new.gcra());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_ends_the_pause_at_once() {
        let store = MemoryStore::new(Clock::manual());
        let gcra = Gcra::new(10, Duration::from_secs(1), 10);
        store.pause_now(Duration::from_secs(30));
        assert!(
            matches!(
                store.acquire_now(&gcra, Duration::ZERO),
                Acquire::Paused { .. }
            ),
            "paused"
        );
        store.resume_now();
        assert_eq!(
            store.acquire_now(&gcra, Duration::ZERO),
            Acquire::Admit {
                wait: Duration::ZERO
            }
        );
    }
}
