//! The [`RateLimit`] service: takes budget before a call, and pauses every call when the
//! upstream answers 429.
//!
//! A call within budget goes on at once; one that would wait at most `max_wait` waits
//! (the wait is added to the request's `WaitLedger`); any other is rejected with when to
//! retry. An upstream 429 sets a pause of all calls for its `Retry-After` (capped at
//! `max_pause`), kept in the store so a fleet pauses together.
//!
//! The settings can change while the limiter serves
//! ([`RateLimitHandle::reconfigure`]): they and the budgets derived from them sit behind
//! one atomic pointer (`arc-swap`), which a call reads once; the store keeps the budget
//! spent, repriced to the new rate, and the upstream's pause goes on.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use pin_project_lite::pin_project;
use tower::Service;

use parking_lot::Mutex;

use super::gcra::Gcra;
use super::layer::RateLimitConfig;
use super::pacing::{Advertised, Pace, Pacing};
use super::report::{CarriesQuotaReport, QuotaReport, UpstreamQuota};
use super::store::{Acquire, BudgetState, RateStore};
use super::{RateLimitCause, RateLimited, UpstreamThrottle};
use crate::clock::duration_nanos;
use crate::{CallPriority, CarriesWaits, Clock, Priority, WaitLedger};

/// The settings in force and the budgets derived from them, replaced whole.
struct Params {
    config: RateLimitConfig,
    gcra: Gcra,
    /// The budget as background calls see it (the reserve off the burst).
    background: Gcra,
}

impl Params {
    fn new(config: RateLimitConfig) -> Arc<Params> {
        Arc::new(Params {
            gcra: config.gcra(),
            background: config.background_gcra(),
            config,
        })
    }

    /// The budget a call of `priority` draws from.
    fn gcra_for(&self, priority: Priority) -> Gcra {
        match priority {
            Priority::Interactive => self.gcra,
            Priority::Background => self.background,
        }
    }
}

pub(crate) struct Shared<St> {
    params: ArcSwap<Params>,
    store: St,
    clock: Clock,
    /// Pacing by the upstream's advertised quota, used while `follow_upstream` is on. A
    /// plain mutex: every call it guards goes on to the network.
    pacer: Mutex<Pacing>,
    /// Held while the settings change, so two changes apply one after the other.
    reconfiguring: Mutex<()>,
    /// Paced calls admitted and not answered yet.
    in_flight: AtomicU64,
    admitted: AtomicU64,
    rejected_budget: AtomicU64,
    rejected_background: AtomicU64,
    rejected_pause: AtomicU64,
    rejected_quota: AtomicU64,
    upstream_429: AtomicU64,
}

impl<St> Shared<St> {
    pub(crate) fn new(config: RateLimitConfig, store: St, clock: Clock) -> Self {
        Shared {
            params: ArcSwap::new(Params::new(config)),
            pacer: Mutex::default(),
            reconfiguring: Mutex::new(()),
            store,
            clock,
            in_flight: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            rejected_budget: AtomicU64::new(0),
            rejected_background: AtomicU64::new(0),
            rejected_pause: AtomicU64::new(0),
            rejected_quota: AtomicU64::new(0),
            upstream_429: AtomicU64::new(0),
        }
    }
}

impl<St: RateStore> Shared<St> {
    /// With pacing on: the call admitted at once when it is its turn by the upstream's
    /// quota and the store admits it at once; `None` sends it to [`admit`](Self::admit).
    fn try_paced_now(&self, gcra: &Gcra) -> Option<Acquire> {
        let now = self.clock.now().0;
        let mut pacing = self.pacer.lock();
        if pacing.step(now, 0) != (Pace::Go { wait: 0 }) {
            return None;
        }
        pacing.take(now);
        let step = self.store.try_acquire_now(gcra, Duration::ZERO);
        if !matches!(step, Some(Acquire::Admit { wait }) if wait.is_zero()) {
            pacing.give_back(now);
            return None;
        }
        step
    }

    /// Waits for the call's turn by the upstream's quota (when paced) and for a slot of
    /// the budget `gcra`, or says why there is none; `first` is the store's answer when
    /// it was already asked at once. Every wait is added to the call's `ledger`.
    async fn admit(
        &self,
        first: Option<Acquire>,
        ledger: &WaitLedger,
        gcra: &Gcra,
        background: bool,
        (max_wait, paced): (Duration, bool),
    ) -> Result<(), RateLimited> {
        let mut turn = None;
        if paced {
            let now = self.clock.now().0;
            let mut pacing = self.pacer.lock();
            match pacing.step(now, duration_nanos(max_wait)) {
                Pace::Go { wait } => {
                    pacing.take(now + wait);
                    turn = Some((now + wait, Duration::from_nanos(wait)));
                }
                Pace::Hold { retry_after } => {
                    drop(pacing);
                    self.rejected_quota.fetch_add(1, Ordering::Relaxed);
                    return Err(RateLimited {
                        retry_after: Duration::from_nanos(retry_after),
                        cause: RateLimitCause::UpstreamQuota,
                    });
                }
            }
        }
        match self
            .admit_budget(first, ledger, gcra, background, max_wait)
            .await
        {
            Ok(waited) => {
                // The turn and the slot were reserved from the same instant: the call
                // goes when both have come.
                if let Some((_, pace_wait)) = turn {
                    if pace_wait > waited {
                        self.wait(pace_wait - waited, ledger).await;
                    }
                }
                Ok(())
            }
            Err(e) => {
                if let Some((at, _)) = turn {
                    self.pacer.lock().give_back(at);
                }
                Err(e)
            }
        }
    }

    /// Waits for a slot of the budget `gcra` or says why there is none; how long it
    /// waited when admitted.
    async fn admit_budget(
        &self,
        mut first: Option<Acquire>,
        ledger: &WaitLedger,
        gcra: &Gcra,
        background: bool,
        max_wait: Duration,
    ) -> Result<Duration, RateLimited> {
        let mut waited = Duration::ZERO;
        // A few rounds at most: a pause short enough to wait out, then the budget.
        for _ in 0..3 {
            let left = max_wait.saturating_sub(waited);
            let step = match first.take() {
                Some(step) => step,
                None => self.store.acquire(gcra, left).await,
            };
            match step {
                Acquire::Admit { wait } if wait.is_zero() => return self.admit_now(waited),
                Acquire::Admit { wait } => {
                    self.wait(wait, ledger).await;
                    waited = waited.saturating_add(wait);
                    // ParagoN may have answered 429 while we waited: its pause wins over
                    // the slot we reserved.
                    let paused_for = self.store.state(gcra).await.paused_for;
                    if paused_for.is_zero() {
                        return self.admit_now(waited);
                    }
                    if paused_for > max_wait.saturating_sub(waited) {
                        return Err(self.reject_pause(paused_for));
                    }
                    self.wait(paused_for, ledger).await;
                    return self.admit_now(waited.saturating_add(paused_for));
                }
                Acquire::OverBudget { retry_after } => {
                    if background {
                        self.rejected_background.fetch_add(1, Ordering::Relaxed);
                    }
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

    fn admit_now(&self, waited: Duration) -> Result<Duration, RateLimited> {
        self.admitted.fetch_add(1, Ordering::Relaxed);
        Ok(waited)
    }

    /// Paces the next calls by what the upstream advertised on an answer. The calls still
    /// in flight besides this one may not be counted in it yet, so they are taken off;
    /// and a limiter that shares the quota with others takes its share.
    fn advertised(&self, quota: UpstreamQuota) {
        if !self.params.load().config.follow_upstream {
            return;
        }
        let others = self.in_flight.load(Ordering::Relaxed).saturating_sub(1);
        let sharers = u64::from(self.store.quota_sharers().max(1));
        let remaining = quota.remaining.saturating_sub(others) / sharers;
        let now = self.clock.now().0;
        self.pacer.lock().advertise(
            now,
            Advertised {
                remaining,
                reset: duration_nanos(quota.reset),
            },
        );
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
        let pause = retry_after.min(self.params.load().config.max_pause);
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
    Req: CarriesWaits + CarriesQuotaReport + CallPriority + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RateLimitFuture<S::Future, St, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let shared = &self.shared;
        let background = req.priority() == Priority::Background;
        let (gcra, max_wait, paced) = {
            let params = shared.params.load();
            let c = &params.config;
            (
                params.gcra_for(req.priority()),
                c.max_wait,
                c.follow_upstream,
            )
        };
        let first = if paced {
            shared.try_paced_now(&gcra)
        } else {
            shared.store.try_acquire_now(&gcra, max_wait)
        };
        // With pacing on, the call brings back what the upstream advertised on its answer.
        let report = paced.then(|| {
            let report = req.quota_report();
            if !report.is_recording() {
                *report = QuotaReport::recording();
            }
            report.clone()
        });
        if let Some(Acquire::Admit { wait }) = first {
            if wait.is_zero() {
                // Admitted at once: the inner service is called now, as it stands ready.
                shared.admitted.fetch_add(1, Ordering::Relaxed);
                return RateLimitFuture {
                    state: State::Admitted {
                        paced: report.map(|report| Paced::new(shared.clone(), report)),
                        fut: self.inner.call(req),
                        shared: shared.clone(),
                    },
                };
            }
        }
        // With pacing on, the store's answer is taken again once the call's turn is known.
        let first = if paced { None } else { first };
        // The call may wait, or the store must be asked over I/O: the ready inner service
        // goes with this call; a fresh clone stays for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        let ledger = req.wait_ledger().clone();
        let fut = Box::pin(async move {
            shared
                .admit(first, &ledger, &gcra, background, (max_wait, paced))
                .await
                .map_err(S::Error::from)?;
            let paced = report.map(|report| Paced::new(shared.clone(), report));
            let result = inner.call(req).await;
            if let Some(paced) = paced {
                paced.finish();
            }
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
        Admitted { #[pin] fut: F, shared: Arc<Shared<St>>, paced: Option<Paced<St>> },
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
            StateProj::Admitted { fut, shared, paced } => {
                let result = ready!(fut.poll(cx));
                if let Some(paced) = paced.take() {
                    paced.finish();
                }
                (result, shared)
            }
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

/// A paced call in flight: counted until it is answered or dropped, and the report
/// through which its answer's advertised quota comes back.
struct Paced<St> {
    shared: Arc<Shared<St>>,
    report: QuotaReport,
}

impl<St> Paced<St> {
    fn new(shared: Arc<Shared<St>>, report: QuotaReport) -> Self {
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        Paced { shared, report }
    }
}

impl<St: RateStore> Paced<St> {
    /// The call was answered: pace by what the upstream advertised on the answer.
    fn finish(self) {
        if let Some(quota) = self.report.take() {
            self.shared.advertised(quota);
        }
    }
}

impl<St> Drop for Paced<St> {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
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
    /// Calls held back by the upstream's advertised quota.
    pub rejected_quota: u64,
    /// Background calls refused for the reserve of the burst (counted in
    /// `rejected_budget` too).
    pub rejected_background: u64,
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
            rejected_quota: s.rejected_quota.load(Ordering::Relaxed),
            rejected_background: s.rejected_background.load(Ordering::Relaxed),
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
        let gcra = self.shared.params.load().gcra;
        self.shared.store.state(&gcra).await
    }

    /// The upstream's advertised quota as the pacer knows it now: calls left and time to
    /// its reset; `None` when none is in force (or `follow_upstream` is off).
    pub fn upstream_quota(&self) -> Option<(u64, Duration)> {
        if !self.shared.params.load().config.follow_upstream {
            return None;
        }
        let now = self.shared.clock.now().0;
        self.shared
            .pacer
            .lock()
            .known(now)
            .map(|(left, reset)| (left, Duration::from_nanos(reset)))
    }

    /// The settings in force.
    pub fn config(&self) -> RateLimitConfig {
        self.shared.params.load().config
    }

    /// Puts `config` in force now, for every call that starts from now on. The budget
    /// spent is kept, as a number of calls priced at the new rate (a lower rate does
    /// not hand out a fresh bucket, a higher one does not count old calls twice), and
    /// so are the upstream's pause, its advertised quota (while `follow_upstream` stays
    /// on) and the counters. A call admitted a moment before the change may have been
    /// priced at the old rate.
    pub fn reconfigure(&self, config: RateLimitConfig) {
        let shared = &self.shared;
        let _one_at_a_time = shared.reconfiguring.lock();
        let old = shared.params.load().config;
        if old == config {
            return;
        }
        shared.params.store(Params::new(config));
        shared.store.reconfigure(&old, &config);
        if old.follow_upstream != config.follow_upstream {
            // What the upstream advertised before pacing was off is not known to be true.
            *shared.pacer.lock() = Pacing::default();
        }
    }

    /// The store behind this limiter.
    pub fn store(&self) -> &St {
        &self.shared.store
    }
}
