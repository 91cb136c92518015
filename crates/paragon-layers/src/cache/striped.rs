//! The table's hit counter: every cache hit adds to it, from every serving thread at
//! once, so each thread adds to a stripe of its own on a cache line of its own instead
//! of bouncing one counter between cores. Shared by the shipped table (`store.rs`) and
//! its measurement variant (`store_crate.rs`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// Stripes of the counter; a thread always adds to the same one.
const STRIPES: usize = 16;

/// A counter added to by many threads; see the [module docs](self).
pub(crate) struct StripedCounter(Box<[CachePadded<AtomicU64>]>);

impl StripedCounter {
    pub(crate) fn new() -> Self {
        StripedCounter(
            (0..STRIPES)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        )
    }

    /// Adds one, to the calling thread's stripe.
    #[inline]
    pub(crate) fn add_one(&self) {
        self.0[stripe()].fetch_add(1, Ordering::Relaxed);
    }

    /// The sum of the stripes.
    pub(crate) fn sum(&self) -> u64 {
        self.0.iter().map(|h| h.load(Ordering::Relaxed)).sum()
    }
}

/// The stripe of the calling thread.
#[inline]
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.try_with(|s| *s).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_from_every_thread_are_all_counted() {
        let counter = StripedCounter::new();
        std::thread::scope(|s| {
            for _ in 0..STRIPES + 3 {
                s.spawn(|| (0..100).for_each(|_| counter.add_one()));
            }
        });
        assert_eq!(counter.sum(), (STRIPES as u64 + 3) * 100);
    }
}
