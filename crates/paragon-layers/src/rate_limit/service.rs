//! The [`RateLimit`] service: takes budget before a call, and pauses every call when the
//! upstream answers 429.
//!
//! A call within budget goes on at once; one that would wait at most `max_wait` waits
//! (the wait is added to the request's `WaitLedger`); any other is rejected with when to
//! retry. An upstream 429 sets a pause of all calls for its `Retry-After` (capped at
//! `max_pause`), kept in the store so a fleet pauses together.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use pin_project_lite::pin_project;
use tower::Service;

use super::gcra::Gcra;
use super::layer::RateLimitConfig;
use super::store::{Acquire, BudgetState, RateStore};
use super::{RateLimitCause, RateLimited, UpstreamThrottle};
use crate::{CarriesWaits, Clock, WaitLedger};

pub(crate) struct Shared<St> {
    config: RateLimitConfig,
    gcra: Gcra,
    store: St,
    clock: Clock,
    admitted: AtomicU64,
    rejected_budget: AtomicU64,
    rejected_pause: AtomicU64,
    upstream_429: AtomicU64,
}

impl<St> Shared<St> {
    pub(crate) fn new(config: RateLimitConfig, store: St, clock: Clock) -> Self {
        Shared {
            gcra: config.gcra(),
            config,
            store,
            clock,
            admitted: AtomicU64::new(0),
            rejected_budget: AtomicU64::new(0),
            rejected_pause: AtomicU64::new(0),
            upstream_429: AtomicU64::new(0),
        }
    }
}

impl<St: RateStore> Shared<St> {
    /// Waits for a slot or says why there is none; `first` is the store's answer when
    /// it was already asked at once. Every wait is added to the call's `ledger`.
    async fn admit(
        &self,
        mut first: Option<Acquire>,
        ledger: &WaitLedger,
    ) -> Result<(), RateLimited> {
        let max_wait = self.config.max_wait;
        let mut waited = Duration::ZERO;
        // A few rounds at most: a pause short enough to wait out, then the budget.
        for _ in 0..3 {
            let left = max_wait.saturating_sub(waited);
            let step = match first.take() {
                Some(step) => step,
                None => self.store.acquire(&self.gcra, left).await,
            };
            match step {
                Acquire::Admit { wait } if wait.is_zero() => return self.admit_now(),
                Acquire::Admit { wait } => {
                    self.wait(wait, ledger).await;
                    waited = waited.saturating_add(wait);
                    // ParagoN may have answered 429 while we waited: its pause wins over
                    // the slot we reserved.
                    let paused_for = self.store.state(&self.gcra).await.paused_for;
                    if paused_for.is_zero() {
                        return self.admit_now();
                    }
                    if paused_for > max_wait.saturating_sub(waited) {
                        return Err(self.reject_pause(paused_for));
                    }
                    self.wait(paused_for, ledger).await;
                    return self.admit_now();
                }
                Acquire::OverBudget { retry_after } => {
                    self.rejected_budget.fetch_add(1, Ordering::Relaxed);
                    return Err(RateLimited {
                        retry_after,
                        cause: RateLimitCause::Budget,
                    });
                }
                Acquire::Paused { retry_after } if retry_after <= left => {
                    self.wait(retry_after, ledger).await;
                    waited = waited.saturating_add(retry_after);
                }
                Acquire::Paused { retry_after } => return Err(self.reject_pause(retry_after)),
            }
        }
        Err(self.reject_pause(Duration::from_secs(1)))
    }

    fn admit_now(&self) -> Result<(), RateLimited> {
        self.admitted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn reject_pause(&self, retry_after: Duration) -> RateLimited {
        self.rejected_pause.fetch_add(1, Ordering::Relaxed);
        RateLimited {
            retry_after,
            cause: RateLimitCause::UpstreamPause,
        }
    }

    /// The upstream answered 429: count it and pause every call for `retry_after`, at
    /// most `max_pause`; the pause imposed.
    async fn upstream_throttled(&self, retry_after: Duration) -> Duration {
        self.upstream_429.fetch_add(1, Ordering::Relaxed);
        let pause = retry_after.min(self.config.max_pause);
        self.store.pause_for(pause).await;
        pause
    }

    /// Waits on purpose, and says so in the call's ledger: a breaker above does not count
    /// this time against the upstream.
    async fn wait(&self, d: Duration, ledger: &WaitLedger) {
        ledger.add(d);
        self.clock.sleep(d).await;
    }
}

/// The rate-limit service; see the [module docs](super).
pub struct RateLimit<S, St> {
    inner: S,
    shared: Arc<Shared<St>>,
}

impl<S: Clone, St> Clone for RateLimit<S, St> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S, St> RateLimit<S, St> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<St>>) -> Self {
        RateLimit { inner, shared }
    }
}

impl<S, St, Req> Service<Req> for RateLimit<S, St>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: From<RateLimited> + UpstreamThrottle + Send,
    St: RateStore,
    Req: CarriesWaits + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RateLimitFuture<S::Future, St, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let first = self
            .shared
            .store
            .try_acquire_now(&self.shared.gcra, self.shared.config.max_wait);
        if let Some(Acquire::Admit { wait }) = first {
            if wait.is_zero() {
                // Admitted at once: the inner service is called now, as it stands ready.
                self.shared.admitted.fetch_add(1, Ordering::Relaxed);
                return RateLimitFuture {
                    state: State::Admitted {
                        fut: self.inner.call(req),
                        shared: self.shared.clone(),
                    },
                };
            }
        }
        // The call may wait, or the store must be asked over I/O: the ready inner service
        // goes with this call; a fresh clone stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        let ledger = req.wait_ledger().clone();
        let fut = Box::pin(async move {
            shared.admit(first, &ledger).await.map_err(S::Error::from)?;
            let result = inner.call(req).await;
            if let Some(retry_after) = result.as_ref().err().and_then(|e| e.upstream_retry_after())
            {
                shared.upstream_throttled(retry_after).await;
            }
            result
        });
        RateLimitFuture {
            state: State::Waiting { fut },
        }
    }
}

pin_project! {
    /// The future of a [`RateLimit`] call.
    pub struct RateLimitFuture<F, St, T> {
        #[pin]
        state: State<F, St, T>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, St, T> {
        /// Admitted at once; the inner call runs.
        Admitted { #[pin] fut: F, shared: Arc<Shared<St>> },
        /// Waiting for a slot or for the store, or reporting an upstream 429.
        Waiting { fut: BoxFuture<'static, T> },
    }
}

impl<F, St, R, E> Future for RateLimitFuture<F, St, Result<R, E>>
where
    F: Future<Output = Result<R, E>>,
    St: RateStore,
    R: Send + 'static,
    E: UpstreamThrottle + Send + 'static,
{
    type Output = Result<R, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.as_mut().project().state;
        let (result, shared) = match state.as_mut().project() {
            StateProj::Waiting { fut } => return fut.as_mut().poll(cx),
            StateProj::Admitted { fut, shared } => (ready!(fut.poll(cx)), shared),
        };
        let Some(retry_after) = result.as_ref().err().and_then(|e| e.upstream_retry_after()) else {
            return Poll::Ready(result);
        };
        // ParagoN said 429: the pause is recorded before the answer goes up, and the
        // answer says how long the pause really is.
        let shared = shared.clone();
        state.set(State::Waiting {
            fut: Box::pin(async move {
                let pause = shared.upstream_throttled(retry_after).await;
                result.map_err(|e| e.with_upstream_retry_after(pause))
            }),
        });
        self.poll(cx)
    }
}

/// Counters of one limiter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitStats {
    /// Calls let through.
    pub admitted: u64,
    /// Calls refused because the budget was spent.
    pub rejected_budget: u64,
    /// Calls refused during the upstream's 429 pause.
    pub rejected_pause: u64,
    /// 429 answers seen from the upstream.
    pub upstream_429: u64,
}

/// Reads the state of a limiter while it serves.
pub struct RateLimitHandle<St> {
    shared: Arc<Shared<St>>,
}

impl<St> Clone for RateLimitHandle<St> {
    fn clone(&self) -> Self {
        RateLimitHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<St: RateStore> RateLimitHandle<St> {
    pub(crate) fn new(shared: Arc<Shared<St>>) -> Self {
        RateLimitHandle { shared }
    }

    /// Counters since start.
    pub fn stats(&self) -> RateLimitStats {
        let s = &self.shared;
        RateLimitStats {
            admitted: s.admitted.load(Ordering::Relaxed),
            rejected_budget: s.rejected_budget.load(Ordering::Relaxed),
            rejected_pause: s.rejected_pause.load(Ordering::Relaxed),
            upstream_429: s.upstream_429.load(Ordering::Relaxed),
        }
    }

    /// Ends the upstream's 429 pause now (an operator's override). `false` when the
    /// shared store could not be reached; the local pause is ended anyway.
    pub async fn resume(&self) -> bool {
        self.shared.store.resume().await
    }

    /// The budget now.
    pub async fn budget(&self) -> BudgetState {
        self.shared.store.state(&self.shared.gcra).await
    }

    /// The settings in force.
    pub fn config(&self) -> &RateLimitConfig {
        &self.shared.config
    }

    /// The store behind this limiter.
    pub fn store(&self) -> &St {
        &self.shared.store
    }
}
