//! The gate in front of ParagoN: at most `upstream.max_concurrency` calls in flight, a
//! bounded wait for a free slot, and the count of every call that goes through (in the
//! metrics, and in the request's `CallReport` for its sender).
//!
//! Why not tower's `ConcurrencyLimit` (with `Timeout`): `ConcurrencyLimit` waits for a
//! slot in `poll_ready` for as long as it takes, and a `Timeout` around it would bound the
//! wait and the call together. The contract asks for something else: a call that finds no
//! free slot within the upstream timeout fails at once with [`Error::Overloaded`] (a
//! local `503`, never a breaker failure), and a call that got its slot has the transport's
//! own timeouts. A semaphore with a timed acquire says exactly that in a few lines.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use paragon_client::{Error, ParagonRequest, ParagonResponse};
use paragon_layers::Clock;
use tokio::sync::Semaphore;
use tower::Service;

use crate::metrics::Metrics;

/// The bottom of the stack, over the transport. See the [module docs](self).
#[derive(Clone)]
pub struct UpstreamGate<S> {
    inner: S,
    metrics: Arc<Metrics>,
    slots: Arc<Semaphore>,
    queue_timeout: Duration,
    clock: Clock,
}

impl<S> UpstreamGate<S> {
    /// At most `max_concurrency` calls of `inner` at once; a call waits at most
    /// `queue_timeout` for its turn.
    pub fn new(
        inner: S,
        metrics: Arc<Metrics>,
        max_concurrency: usize,
        queue_timeout: Duration,
        clock: Clock,
    ) -> Self {
        UpstreamGate {
            inner,
            metrics,
            slots: Arc::new(Semaphore::new(max_concurrency)),
            queue_timeout,
            clock,
        }
    }
}

/// Keeps the in-flight gauge right even when a call is dropped half-way.
struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.upstream_ended();
    }
}

impl<S> Service<ParagonRequest> for UpstreamGate<S>
where
    S: Service<ParagonRequest, Response = ParagonResponse, Error = Error> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = ParagonResponse;
    type Error = Error;
    type Future = BoxFuture<'static, Result<ParagonResponse, Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: ParagonRequest) -> Self::Future {
        let metrics = self.metrics.clone();
        let slots = self.slots.clone();
        let queue_timeout = self.queue_timeout;
        let clock = self.clock.clone();
        // The ready service answers this call; its clone waits for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let _permit = match slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => match tokio::time::timeout(queue_timeout, slots.acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => return Err(Error::Overloaded),
                },
            };
            metrics.upstream_started();
            let _in_flight = InFlight(metrics.clone());
            // The request's report, for its sender's `Server-Timing`; the limiter's waits
            // so far are in its ledger.
            let report = req.report.clone();
            let held = req.waits.total();
            let started = clock.now();
            let result = inner.call(req).await;
            let took = clock.now().since(started);
            metrics.record_upstream(&result, took);
            report.record(&result, took, held);
            result
        })
    }
}
