//! The [`Retry`] service: a call's attempts, their backoff and hedges, within the
//! request's deadline and the instance's retry budget.
//!
//! The settings can change while the layer serves ([`RetryHandle::reconfigure`]): they
//! sit behind one atomic pointer (`arc-swap`) read once per call, and the budget keeps
//! the attempts it has counted.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use futures_util::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;
use tower::{Service, ServiceExt};

use super::backoff::full_jitter;
use super::budget::RetryBudget;
use super::layer::RetryConfig;
use super::{AttemptsSink, DeadlineExceeded, Idempotent, RetryClass, Retryable};
use crate::{CarriesDeadline, CarriesWaits, Clock, Deadline, Timestamp, WaitLedger};

type Gate = Box<dyn Fn() -> bool + Send + Sync>;

/// State shared by every clone of one retry layer.
pub(crate) struct Shared {
    config: ArcSwap<RetryConfig>,
    clock: Clock,
    budget: Mutex<RetryBudget>,
    hedge_gate: Option<Gate>,
    firsts: AtomicU64,
    retries: AtomicU64,
    hedges: AtomicU64,
    exhausted: AtomicU64,
    deadline_exceeded: AtomicU64,
    /// Attempts running now.
    in_flight: AtomicI64,
    /// Retries scheduled and waiting for their backoff to end.
    waiting: AtomicI64,
}

impl Shared {
    pub(crate) fn new(config: RetryConfig, clock: Clock, hedge_gate: Option<Gate>) -> Self {
        Shared {
            budget: Mutex::new(RetryBudget::new(
                config.budget_ratio,
                config.budget_min_per_sec,
            )),
            config: ArcSwap::from_pointee(config),
            clock,
            hedge_gate,
            firsts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            hedges: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
            deadline_exceeded: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            waiting: AtomicI64::new(0),
        }
    }

    /// Takes one extra attempt from the budget, or counts the refusal.
    fn spend(&self, now: Timestamp) -> bool {
        let granted = self.budget.lock().try_spend(now);
        if !granted {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
        }
        granted
    }

    fn hedge_allowed(&self) -> bool {
        self.hedge_gate.as_ref().is_none_or(|allow| allow())
    }
}

/// Counts an attempt as running from its creation to its drop, finished or cancelled.
struct Running(Arc<Shared>);

impl Running {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        Running(shared.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A retry scheduled and not yet started: handed back to the budget if the call is
/// dropped during its backoff.
struct Scheduled {
    shared: Arc<Shared>,
    /// When the budget was taken, and when the retry starts.
    retry: Option<(Timestamp, Timestamp)>,
}

impl Scheduled {
    fn set(&mut self, spent_at: Timestamp, start_at: Timestamp) {
        self.shared.waiting.fetch_add(1, Ordering::Relaxed);
        self.retry = Some((spent_at, start_at));
    }

    /// The retry starts now: its budget is used.
    fn start(&mut self) {
        if self.retry.take().is_some() {
            self.shared.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn start_at(&self) -> Option<Timestamp> {
        self.retry.map(|(_, at)| at)
    }
}

impl Drop for Scheduled {
    fn drop(&mut self) {
        if let Some((spent_at, _)) = self.retry.take() {
            self.shared.waiting.fetch_sub(1, Ordering::Relaxed);
            self.shared.budget.lock().refund(spent_at);
        }
    }
}

/// One attempt: the inner service called once with a clone of the request.
fn attempt<S, Req>(
    svc: S,
    req: Req,
    shared: &Arc<Shared>,
) -> impl Future<Output = Result<S::Response, S::Error>>
where
    S: Service<Req>,
{
    let running = Running::new(shared);
    async move {
        let _running = running;
        svc.oneshot(req).await
    }
}

/// The retry service; see the [module docs](super).
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for Retry<S> {
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S> Retry<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Retry { inner, shared }
    }
}

/// The future of a [`Retry`] call.
pub type RetryFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send>>;

impl<S, Req> Service<Req> for Retry<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: AttemptsSink + Send + 'static,
    S::Error: Retryable + From<DeadlineExceeded> + Send + 'static,
    Req: CarriesDeadline + CarriesWaits + Idempotent + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RetryFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The ready inner service makes the first attempt; a fresh clone stays for the
        // next call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(run(self.shared.clone(), inner, req))
    }
}

/// One call: its attempts, their timers and its budget, until an answer or the deadline.
async fn run<S, Req>(shared: Arc<Shared>, inner: S, mut req: Req) -> Result<S::Response, S::Error>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Response: AttemptsSink,
    S::Error: Retryable + From<DeadlineExceeded>,
    Req: CarriesDeadline + CarriesWaits + Idempotent + Clone,
{
    let config = **shared.config.load();
    let clock = shared.clock.clone();
    let start = clock.now();
    // A deadline the caller set earlier than ours stands.
    let deadline = match req.deadline().get() {
        Some(theirs) => theirs.min(start.after(config.deadline)),
        None => start.after(config.deadline),
    };
    *req.deadline() = Deadline::at(deadline);
    // The layers below add the time they hold an attempt on purpose to the request's
    // ledger (before they wait): it tells a deadline that passed in our own limiter's
    // queue from one that passed while the upstream was slow.
    if !req.wait_ledger().is_recording() {
        *req.wait_ledger() = WaitLedger::recording();
    }
    let ledger = req.wait_ledger().clone();
    let exceeded = |shared: &Shared, in_local_wait: bool| {
        shared.deadline_exceeded.fetch_add(1, Ordering::Relaxed);
        S::Error::from(DeadlineExceeded {
            deadline: deadline.since(start),
            in_local_wait,
        })
    };
    if deadline <= start {
        return Err(exceeded(&shared, true));
    }
    let max_attempts = if req.is_idempotent() {
        config.max_attempts.get()
    } else {
        1
    };
    let hedge_after = config.hedge_after.filter(|_| max_attempts > 1);

    shared.budget.lock().record_first(start);
    shared.firsts.fetch_add(1, Ordering::Relaxed);
    let mut out = FuturesUnordered::new();
    out.push(attempt(inner.clone(), req.clone(), &shared));
    // When the latest attempt started, and the ledger's total then.
    let mut latest = (start, ledger.total());
    let mut started = 1u32;
    let mut retries = 0u32;
    let mut hedge_at = hedge_after.map(|h| start.after(h));
    let mut scheduled = Scheduled {
        shared: shared.clone(),
        retry: None,
    };
    // The last failure of the upstream's, answered when no attempt is left to try.
    let mut failure: Option<S::Error> = None;

    loop {
        let now = clock.now();
        let mut wake = deadline;
        if let Some(at) = scheduled.start_at() {
            wake = wake.min(at);
        }
        if let Some(at) = hedge_at.filter(|_| !out.is_empty() && started < max_attempts) {
            wake = wake.min(at);
        }
        tokio::select! {
            biased;
            Some(result) = out.next() => {
                let e = match result {
                    Ok(mut answer) => {
                        answer.set_attempts(started);
                        return Ok(answer);
                    }
                    Err(e) => e,
                };
                match e.retry_class() {
                    RetryClass::Final => return Err(e),
                    // Our own layers refused this attempt; another still out may answer.
                    RetryClass::Refused if !out.is_empty() => continue,
                    RetryClass::Refused => return Err(failure.unwrap_or(e)),
                    RetryClass::Transient => {
                        failure = Some(e);
                        if !out.is_empty() {
                            continue;
                        }
                    }
                }
                // Every attempt so far failed transiently: schedule a retry, if the
                // attempts, the deadline and the budget allow one.
                let failed = failure.take();
                let now = clock.now();
                if started >= max_attempts {
                    return Err(failed.unwrap_or_else(|| exceeded(&shared, false)));
                }
                retries += 1;
                let start_at = now.after(full_jitter(config.backoff, retries, rand::random()));
                if start_at >= deadline || !shared.spend(now) {
                    return Err(failed.unwrap_or_else(|| exceeded(&shared, false)));
                }
                scheduled.set(now, start_at);
                failure = failed;
                hedge_at = None;
            }
            () = clock.sleep(wake.since(now)) => {
                // The timer for `wake` fired: it is at least `wake`, even where a coarse
                // clock has not ticked yet (which would cost another round of the loop).
                let now = clock.now().max(wake);
                if now >= deadline {
                    // Still inside a wait the layers below chose, which ends after now?
                    let (at, before) = latest;
                    let held = at.after(ledger.total().saturating_sub(before)) > now;
                    return Err(exceeded(&shared, held));
                }
                if scheduled.start_at().is_some_and(|at| now >= at) {
                    scheduled.start();
                    started += 1;
                    shared.retries.fetch_add(1, Ordering::Relaxed);
                    out.push(attempt(inner.clone(), req.clone(), &shared));
                    latest = (now, ledger.total());
                    hedge_at = hedge_after.map(|h| now.after(h));
                } else if hedge_at.is_some_and(|at| now >= at) {
                    // One hedge per attempt that runs late.
                    hedge_at = None;
                    if !out.is_empty()
                        && started < max_attempts
                        && shared.hedge_allowed()
                        && shared.spend(now)
                    {
                        started += 1;
                        shared.hedges.fetch_add(1, Ordering::Relaxed);
                        out.push(attempt(inner.clone(), req.clone(), &shared));
                        latest = (now, ledger.total());
                    }
                }
            }
        }
    }
}

/// Counters of one retry layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryStats {
    /// First attempts: one per call.
    pub firsts: u64,
    /// Retries started.
    pub retries: u64,
    /// Hedges started.
    pub hedges: u64,
    /// Retries and hedges not sent because the budget was spent.
    pub budget_exhausted: u64,
    /// Calls that ran out of deadline.
    pub deadline_exceeded: u64,
    /// Attempts running now.
    pub in_flight: u64,
    /// Retries scheduled and waiting for their backoff now.
    pub waiting: u64,
}

/// Reads the state of a retry layer while it serves.
#[derive(Clone)]
pub struct RetryHandle {
    shared: Arc<Shared>,
}

impl RetryHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        RetryHandle { shared }
    }

    /// Counters now.
    pub fn stats(&self) -> RetryStats {
        let s = &self.shared;
        let gauge = |g: &AtomicI64| u64::try_from(g.load(Ordering::Relaxed)).unwrap_or(0);
        RetryStats {
            firsts: s.firsts.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            hedges: s.hedges.load(Ordering::Relaxed),
            budget_exhausted: s.exhausted.load(Ordering::Relaxed),
            deadline_exceeded: s.deadline_exceeded.load(Ordering::Relaxed),
            in_flight: gauge(&s.in_flight),
            waiting: gauge(&s.waiting),
        }
    }

    /// Retries and hedges the budget allows now.
    pub fn budget_left(&self) -> u64 {
        let now = self.shared.clock.now();
        self.shared.budget.lock().left(now)
    }

    /// The settings in force.
    pub fn config(&self) -> RetryConfig {
        **self.shared.config.load()
    }

    /// Puts `config` in force for every call that starts from now on (one already
    /// started keeps its deadline and attempts). The budget keeps the attempts it has
    /// counted and takes the new ratio and reserve.
    pub fn reconfigure(&self, config: RetryConfig) {
        let mut budget = self.shared.budget.lock();
        budget.set_limits(config.budget_ratio, config.budget_min_per_sec);
        self.shared.config.store(Arc::new(config));
    }
}
