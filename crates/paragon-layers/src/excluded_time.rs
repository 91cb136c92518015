//! Time a call spent waiting inside our own layers, so that the breaker's slow-call rule
//! measures only the upstream.
//!
//! The breaker runs its inner call inside [`scope`]; a layer below it that deliberately
//! waits (the rate limiter waiting for a slot) reports that wait with [`record`]. Both run
//! in the same task, so a task-local ledger carries it without touching the request type.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use tokio::task::futures::TaskLocalFuture;

tokio::task_local! {
    static EXCLUDED: Cell<Duration>;
}

/// Adds `d` to the ledger of the enclosing [`scope`], if any.
pub(crate) fn record(d: Duration) {
    let _ = EXCLUDED.try_with(|c| c.set(c.get().saturating_add(d)));
}

/// Runs `f` with an empty ledger; take it back with `TaskLocalFuture::take_value`.
pub(crate) fn scope<F: Future>(f: F) -> TaskLocalFuture<Cell<Duration>, F> {
    EXCLUDED.scope(Cell::new(Duration::ZERO), f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;

    #[tokio::test]
    async fn waits_recorded_inside_the_scope_are_returned() {
        let mut fut = pin!(scope(async {
            record(Duration::from_millis(5));
            record(Duration::from_millis(7));
        }));
        (&mut fut).await;
        assert_eq!(
            fut.as_mut().take_value().map(Cell::into_inner),
            Some(Duration::from_millis(12))
        );
        // Outside any scope, recording is a no-op.
        record(Duration::from_secs(1));
    }
}
