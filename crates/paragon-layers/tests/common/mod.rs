//! A toy request / response / error for driving the layers, and two upstreams that count
//! their calls: one answering from a script at once, one answering only when the test
//! says so.
#![allow(dead_code)]

use std::borrow::Cow;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use paragon_layers::cache::{
    CacheKey, CachePolicy, CacheStatus, CacheStatusSink, CacheWeight, FillAborted, NotModified,
    Revalidate,
};
use paragon_layers::circuit_breaker::{CircuitOpen, Classify, Verdict};
use paragon_layers::rate_limit::{CarriesQuotaReport, QuotaReport, RateLimited, UpstreamThrottle};
use paragon_layers::{CallPriority, CarriesWaits, Clock, Priority, Timestamp, WaitLedger};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

/// A request for document `n`, with the ledger of its call's waits and its priority;
/// its own cache key (the ledger and the priority take no part in equality).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Get(pub u32, pub WaitLedger, pub Prio, pub QuotaReport);

impl Get {
    pub fn new(n: u32) -> Get {
        Get(
            n,
            WaitLedger::default(),
            Prio::default(),
            QuotaReport::default(),
        )
    }

    /// A request for `n` made ahead of need.
    pub fn background(n: u32) -> Get {
        Get(
            n,
            WaitLedger::default(),
            Prio(Priority::Background),
            QuotaReport::default(),
        )
    }
}

/// A toy document has nothing to revalidate by: a refill is never conditional.
impl Revalidate<Doc> for Get {
    fn revalidate_against(&mut self, _: &Doc) -> bool {
        false
    }
}

impl NotModified for Doc {
    fn is_not_modified(&self) -> bool {
        false
    }
}

impl CarriesQuotaReport for Get {
    fn quota_report(&mut self) -> &mut QuotaReport {
        &mut self.3
    }
}

/// The priority of a [`Get`]; every two compare equal, so it stays out of the key.
#[derive(Clone, Copy, Debug, Default)]
pub struct Prio(pub Priority);

impl PartialEq for Prio {
    fn eq(&self, _: &Prio) -> bool {
        true
    }
}
impl Eq for Prio {}
impl std::hash::Hash for Prio {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl CallPriority for Get {
    fn priority(&self) -> Priority {
        self.2 .0
    }
    fn set_priority(&mut self, priority: Priority) {
        self.2 = Prio(priority);
    }
}

impl CarriesWaits for Get {
    fn wait_ledger(&mut self) -> &mut WaitLedger {
        &mut self.1
    }
}

impl CacheKey for Get {
    type Key = Get;
    fn cache_key(&self) -> Cow<'_, Get> {
        Cow::Borrowed(self)
    }
}

/// A document and how the stack produced it.
#[derive(Clone, Debug, PartialEq)]
pub struct Doc {
    pub body: String,
    pub status: CacheStatus,
}

impl Doc {
    pub fn new(body: impl Into<String>) -> Doc {
        Doc {
            body: body.into(),
            status: CacheStatus::Miss,
        }
    }
}

impl CacheStatusSink for Doc {
    fn set_cache_status(&mut self, s: CacheStatus) {
        self.status = s;
    }
}

/// A document weighs its body.
impl CacheWeight for Doc {
    fn cache_weight(&self) -> usize {
        self.body.len()
    }
}

/// Every way a toy call can fail.
#[derive(Clone, Debug, PartialEq)]
pub enum Fail {
    /// The upstream is unwell (5xx, timeout): a breaker failure, stale may be served.
    Upstream,
    /// The upstream says "no such document": negative, a breaker success, never stale.
    NotFound,
    /// A 4xx other than 404: a breaker success, never stale, not negative.
    BadRequest,
    /// The upstream's own 429 with its Retry-After: ignored by the breaker.
    Throttled(Duration),
    Limited(RateLimited),
    Open(CircuitOpen),
    Aborted,
    /// The call's deadline passed (the retry layer's answer).
    Deadline,
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// So that a `tower::buffer::Buffer` can box it.
impl std::error::Error for Fail {}

impl From<RateLimited> for Fail {
    fn from(e: RateLimited) -> Self {
        Fail::Limited(e)
    }
}
impl From<CircuitOpen> for Fail {
    fn from(e: CircuitOpen) -> Self {
        Fail::Open(e)
    }
}
impl From<FillAborted> for Fail {
    fn from(_: FillAborted) -> Self {
        Fail::Aborted
    }
}

impl CachePolicy for Fail {
    fn is_negative(&self) -> bool {
        matches!(self, Fail::NotFound)
    }
    fn serve_stale(&self) -> bool {
        matches!(
            self,
            Fail::Upstream | Fail::Throttled(_) | Fail::Limited(_) | Fail::Open(_)
        )
    }
}

impl Classify for Fail {
    fn verdict(&self) -> Verdict {
        match self {
            Fail::Upstream => Verdict::Failure,
            Fail::NotFound | Fail::BadRequest => Verdict::Success,
            _ => Verdict::Ignore,
        }
    }
}

impl UpstreamThrottle for Fail {
    fn upstream_retry_after(&self) -> Option<Duration> {
        match self {
            Fail::Throttled(d) => Some(*d),
            _ => None,
        }
    }
}

pub type Answer = Result<Doc, Fail>;

/// An upstream that answers at once from a settable outcome and counts its calls.
///
/// `Ok` answers `doc {n} v{call number}`, so a test can tell a cached answer from a new one.
#[derive(Clone)]
pub struct Scripted {
    calls: Arc<AtomicUsize>,
    outcome: Arc<Mutex<Result<(), Fail>>>,
    delay: Arc<Mutex<Option<Duration>>>,
    /// Clock readings at each call, when a clock is attached.
    clock: Option<Clock>,
    times: Arc<Mutex<Vec<Timestamp>>>,
}

impl Default for Scripted {
    fn default() -> Self {
        Scripted {
            calls: Arc::default(),
            outcome: Arc::new(Mutex::new(Ok(()))),
            delay: Arc::default(),
            clock: None,
            times: Arc::default(),
        }
    }
}

impl Scripted {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `clock.now()` at every call (see [`Scripted::times`]).
    pub fn timed(clock: Clock) -> Self {
        Scripted {
            clock: Some(clock),
            ..Self::default()
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn times(&self) -> Vec<Timestamp> {
        self.times.lock().clone()
    }

    /// From now on every call succeeds.
    pub fn succeed(&self) {
        *self.outcome.lock() = Ok(());
    }

    /// From now on every call fails with `e`.
    pub fn fail(&self, e: Fail) {
        *self.outcome.lock() = Err(e);
    }

    /// Every answer waits this long on tokio time first.
    pub fn delay(&self, d: Duration) {
        *self.delay.lock() = Some(d);
    }

    fn answer(&self, Get(n, ..): Get) -> impl Future<Output = Answer> + Send + 'static {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(clock) = &self.clock {
            self.times.lock().push(clock.now());
        }
        let outcome = self.outcome.lock().clone();
        let delay = *self.delay.lock();
        async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            outcome.map(|()| Doc::new(format!("doc {n} v{call}")))
        }
    }
}

impl tower::Service<Get> for Scripted {
    type Response = Doc;
    type Error = Fail;
    type Future = std::pin::Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Fail>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Get) -> Self::Future {
        Box::pin(self.answer(req))
    }
}

/// One call held by a [`Controlled`] upstream until the test answers it.
pub struct Pending {
    pub req: Get,
    tx: oneshot::Sender<Answer>,
}

impl Pending {
    pub fn answer(self, a: Answer) {
        let _ = self.tx.send(a);
    }
    pub fn ok(self) {
        let body = format!("doc {}", self.req.0);
        self.answer(Ok(Doc::new(body)));
    }
    pub fn fail(self, e: Fail) {
        self.answer(Err(e));
    }
    /// Whether the caller stopped waiting for this answer (its call was dropped).
    pub fn is_cancelled(&self) -> bool {
        self.tx.is_closed()
    }
}

/// An upstream whose calls wait until the test answers them.
///
/// The call is registered when the inner service's `call` runs (not when its future is
/// first polled), so a test sees it at once. A call whose answer is dropped fails with
/// [`Fail::Aborted`].
#[derive(Clone)]
pub struct Controlled {
    calls: Arc<AtomicUsize>,
    tx: mpsc::UnboundedSender<Pending>,
}

impl Controlled {
    pub fn new() -> (Controlled, mpsc::UnboundedReceiver<Pending>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Controlled {
                calls: Arc::default(),
                tx,
            },
            rx,
        )
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl tower::Service<Get> for Controlled {
    type Response = Doc;
    type Error = Fail;
    type Future = std::pin::Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Fail>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Get) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(Pending { req, tx });
        Box::pin(async move { rx.await.unwrap_or(Err(Fail::Aborted)) })
    }
}

/// An upstream that is not ready until the test opens it, as a `ConcurrencyLimit` at its
/// limit or a full `Buffer` is not; then it answers as `inner` does. A layer above must
/// report it not ready too, and wake its caller when it opens.
#[derive(Clone)]
pub struct Gated<S> {
    inner: S,
    open: Arc<Mutex<(bool, Option<std::task::Waker>)>>,
}

impl<S> Gated<S> {
    /// `inner` behind a closed gate.
    pub fn closed(inner: S) -> Self {
        Gated {
            inner,
            open: Arc::default(),
        }
    }

    /// From now on ready; wakes whoever waits for it.
    pub fn open(&self) {
        let mut g = self.open.lock();
        g.0 = true;
        if let Some(w) = g.1.take() {
            w.wake();
        }
    }
}

impl<S: tower::Service<Get>> tower::Service<Get> for Gated<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        {
            let mut g = self.open.lock();
            if !g.0 {
                g.1 = Some(cx.waker().clone());
                return std::task::Poll::Pending;
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Get) -> S::Future {
        assert!(self.open.lock().0, "called while not ready");
        self.inner.call(req)
    }
}

/// Polls `svc` for readiness once, without waiting.
pub fn poll_ready_now<S: tower::Service<Get>>(
    svc: &mut S,
) -> std::task::Poll<Result<(), S::Error>> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    svc.poll_ready(&mut cx)
}

/// Everything queued on `rx` right now.
pub fn drain(rx: &mut mpsc::UnboundedReceiver<Pending>) -> Vec<Pending> {
    let mut out = Vec::new();
    while let Ok(p) = rx.try_recv() {
        out.push(p);
    }
    out
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
