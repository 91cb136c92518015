//! The [`CircuitBreaker`] service: admits or rejects calls and records their outcomes.
//!
//! The decisions are the pure functions of `state_machine`; this module holds their
//! state. While closed, admitting is one atomic load and recording a few atomic adds (the
//! common case must cost nothing); a mutex is taken only to change state and while
//! half-open, where probe slots are counted exactly. A permit that is dropped without an
//! outcome (a cancelled call) gives its slot back.
//!
//! The settings can change while the breaker serves ([`BreakerHandle::reconfigure`]):
//! they sit behind one atomic pointer (`arc-swap`) that a call reads where it needs
//! them, and the state (closed, open until when, half-open) is kept.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use pin_project_lite::pin_project;
use tokio::sync::watch;
use tower::Service;

use super::layer::BreakerConfig;
use super::state_machine::{self, bucket, Admission, BreakerState, Transition, WindowCounts};
use super::{CircuitOpen, Classify, Verdict};
use crate::clock::duration_nanos;
use crate::{CarriesWaits, Clock, Timestamp, WaitLedger};

type Listener = Box<dyn Fn(Transition) + Send + Sync>;

/// State shared by every clone of one breaker.
pub(crate) struct Shared {
    params: ArcSwap<Params>,
    clock: Clock,
    /// State code in the low two bits, generation above: one word, so a call's outcome
    /// can be matched to the period it was admitted in.
    word: AtomicU64,
    open_until: AtomicU64,
    consecutive: AtomicU32,
    buckets: [AtomicU64; bucket::COUNT as usize],
    /// Taken only to change state and while half-open.
    control: Mutex<Control>,
    watch: watch::Sender<BreakerState>,
    listener: Listener,
    successes: AtomicU64,
    failures: AtomicU64,
    rejected: AtomicU64,
}

/// The settings in force, and the span of one failure-rate bucket derived from them.
struct Params {
    config: BreakerConfig,
    bucket_width: u64,
}

impl Params {
    fn new(config: BreakerConfig) -> Arc<Params> {
        Arc::new(Params {
            bucket_width: (duration_nanos(config.window) / bucket::COUNT).max(1),
            config,
        })
    }
}

struct Control {
    probes: u32,
    transitions: u64,
}

fn word(state: BreakerState, generation: u64) -> u64 {
    (generation << 2) | state.code()
}

/// Which period and role a call was admitted in.
#[derive(Clone, Copy, Debug)]
struct Ticket {
    word: u64,
    probe: bool,
    started: Timestamp,
}

impl Shared {
    pub(crate) fn new(config: BreakerConfig, clock: Clock, listener: Listener) -> Self {
        Shared {
            params: ArcSwap::new(Params::new(config)),
            clock,
            word: AtomicU64::new(word(BreakerState::Closed, 0)),
            open_until: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            buckets: Default::default(),
            control: Mutex::new(Control {
                probes: 0,
                transitions: 0,
            }),
            watch: watch::Sender::new(BreakerState::Closed),
            listener,
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    fn state(&self) -> BreakerState {
        BreakerState::from_code(self.word.load(Ordering::Acquire))
    }

    /// Admits or refuses one call arriving now.
    fn admit(&self) -> Result<Ticket, CircuitOpen> {
        let now = self.clock.now();
        let w = self.word.load(Ordering::Acquire);
        if BreakerState::from_code(w) == BreakerState::Closed {
            return Ok(Ticket {
                word: w,
                probe: false,
                started: now,
            });
        }
        let mut control = self.control.lock();
        loop {
            let w = self.word.load(Ordering::Acquire);
            let state = BreakerState::from_code(w);
            let open_until = Timestamp(self.open_until.load(Ordering::Acquire));
            let config = self.params.load().config;
            match state_machine::admit(state, now, open_until, control.probes, &config) {
                Admission::Call => {
                    return Ok(Ticket {
                        word: w,
                        probe: false,
                        started: now,
                    })
                }
                Admission::Probe => {
                    control.probes += 1;
                    return Ok(Ticket {
                        word: w,
                        probe: true,
                        started: now,
                    });
                }
                Admission::ToHalfOpen => {
                    self.transition(&mut control, w, BreakerState::HalfOpen, now);
                }
                Admission::Reject { retry_after } => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    return Err(CircuitOpen { retry_after });
                }
            }
        }
    }

    /// Records the verdict of a finished call. `excluded` is time the call spent waiting
    /// on purpose in our own layers, not in the upstream.
    fn record(&self, ticket: Ticket, verdict: Verdict, excluded: Duration) {
        let now = self.clock.now();
        let params = self.params.load();
        let verdict = match verdict {
            Verdict::Success
                if state_machine::is_slow(
                    now.since(ticket.started).saturating_sub(excluded),
                    &params.config,
                ) =>
            {
                Verdict::Failure
            }
            v => v,
        };
        match verdict {
            Verdict::Success => self.successes.fetch_add(1, Ordering::Relaxed),
            Verdict::Failure => self.failures.fetch_add(1, Ordering::Relaxed),
            Verdict::Ignore => 0,
        };
        if ticket.probe {
            let mut control = self.control.lock();
            if self.word.load(Ordering::Acquire) != ticket.word {
                return; // that half-open period is over; its probe count was reset
            }
            control.probes = control.probes.saturating_sub(1);
            match verdict {
                Verdict::Success => {
                    self.transition(&mut control, ticket.word, BreakerState::Closed, now)
                }
                Verdict::Failure => {
                    self.transition(&mut control, ticket.word, BreakerState::Open, now)
                }
                Verdict::Ignore => {}
            }
            return;
        }
        if self.word.load(Ordering::Acquire) != ticket.word {
            return; // admitted in an earlier closed period
        }
        match verdict {
            Verdict::Ignore => {}
            Verdict::Success => {
                if self.consecutive.load(Ordering::Relaxed) != 0 {
                    self.consecutive.store(0, Ordering::Relaxed);
                }
                self.count_in_window(&params, now, false);
            }
            Verdict::Failure => {
                let consecutive = self.consecutive.fetch_add(1, Ordering::AcqRel) + 1;
                self.count_in_window(&params, now, true);
                let window = self.window_counts(params.bucket_width, now);
                if state_machine::should_trip(consecutive, window, &params.config) {
                    let mut control = self.control.lock();
                    self.transition(&mut control, ticket.word, BreakerState::Open, now);
                }
            }
        }
    }

    fn count_in_window(&self, params: &Params, now: Timestamp, failure: bool) {
        if params.config.failure_rate <= 0.0 {
            return;
        }
        let epoch = now.0 / params.bucket_width;
        let cell = &self.buckets[(epoch % bucket::COUNT) as usize];
        let mut old = cell.load(Ordering::Acquire);
        loop {
            let (e, calls, failures) = bucket::unpack(old);
            let new = if e == epoch & 0xffff_ffff {
                bucket::pack(epoch, calls + 1, failures + u64::from(failure))
            } else {
                bucket::pack(epoch, 1, u64::from(failure))
            };
            match cell.compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(current) => old = current,
            }
        }
    }

    fn window_counts(&self, bucket_width: u64, now: Timestamp) -> WindowCounts {
        let current = now.0 / bucket_width;
        self.buckets
            .iter()
            .fold(WindowCounts::default(), |acc, cell| {
                let (epoch, calls, failures) = bucket::unpack(cell.load(Ordering::Acquire));
                if bucket::live(epoch, current) && calls > 0 {
                    WindowCounts {
                        calls: acc.calls + calls,
                        failures: acc.failures + failures,
                    }
                } else {
                    acc
                }
            })
    }

    /// Moves from the period `from` (a state word) to `to`; does nothing if the breaker
    /// has already left that period. Called with the control lock held.
    fn transition(&self, control: &mut Control, from: u64, to: BreakerState, now: Timestamp) {
        let generation = (from >> 2) + 1;
        if self
            .word
            .compare_exchange(
                from,
                word(to, generation),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return;
        }
        control.probes = 0;
        self.consecutive.store(0, Ordering::Release);
        for cell in &self.buckets {
            cell.store(0, Ordering::Release);
        }
        if to == BreakerState::Open {
            self.open_until.store(
                now.after(self.params.load().config.open_for).0,
                Ordering::Release,
            );
        }
        let from_state = BreakerState::from_code(from);
        if from_state != to {
            control.transitions += 1;
            self.watch.send_replace(to);
            (self.listener)(Transition {
                from: from_state,
                to,
            });
        }
    }

    fn force(&self, to: BreakerState) {
        let now = self.clock.now();
        let mut control = self.control.lock();
        let from = self.word.load(Ordering::Acquire);
        self.transition(&mut control, from, to, now);
    }
}

/// The circuit-breaker service; see the [module docs](super).
pub struct CircuitBreaker<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for CircuitBreaker<S> {
    fn clone(&self) -> Self {
        CircuitBreaker {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S> CircuitBreaker<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        CircuitBreaker { inner, shared }
    }
}

impl<S, Req> Service<Req> for CircuitBreaker<S>
where
    S: Service<Req>,
    S::Error: From<CircuitOpen> + Classify,
    Req: CarriesWaits,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BreakerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        match self.shared.admit() {
            Ok(ticket) => {
                // The slow-call rule leaves out what the layers below add to the request's
                // ledger while they hold the call on purpose. A request without a
                // recording ledger gets one (only when that rule is on); one that has one
                // already keeps it, and only what is added during this call counts.
                let ledger = req.wait_ledger();
                if self.shared.params.load().config.slow_call.is_some() && !ledger.is_recording() {
                    *ledger = WaitLedger::recording();
                }
                let waits = ledger.clone();
                let waited_before = waits.total();
                BreakerFuture {
                    kind: Kind::Call {
                        fut: self.inner.call(req),
                        waits,
                        waited_before,
                    },
                    guard: Some(Guard {
                        shared: self.shared.clone(),
                        ticket: Some(ticket),
                    }),
                }
            }
            Err(open) => BreakerFuture {
                kind: Kind::Rejected { open: Some(open) },
                guard: None,
            },
        }
    }
}

/// Releases a probe slot if its call is dropped before it finishes.
struct Guard {
    shared: Arc<Shared>,
    ticket: Option<Ticket>,
}

impl Guard {
    fn finish(mut self, verdict: Verdict, excluded: Duration) {
        if let Some(ticket) = self.ticket.take() {
            self.shared.record(ticket, verdict, excluded);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.shared.record(ticket, Verdict::Ignore, Duration::ZERO);
        }
    }
}

pin_project! {
    /// The future of a [`CircuitBreaker`] call.
    pub struct BreakerFuture<F> {
        #[pin]
        kind: Kind<F>,
        guard: Option<Guard>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Call { #[pin] fut: F, waits: WaitLedger, waited_before: Duration },
        Rejected { open: Option<CircuitOpen> },
    }
}

fn finish<R, E: Classify>(guard: &mut Option<Guard>, result: &Result<R, E>, excluded: Duration) {
    if let Some(guard) = guard.take() {
        let verdict = match result {
            Ok(_) => Verdict::Success,
            Err(e) => e.verdict(),
        };
        guard.finish(verdict, excluded);
    }
}

impl<F, R, E> Future for BreakerFuture<F>
where
    F: Future<Output = Result<R, E>>,
    E: From<CircuitOpen> + Classify,
{
    type Output = Result<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Rejected { open } => {
                let open = open.take().unwrap_or(CircuitOpen {
                    retry_after: Duration::from_secs(1),
                });
                Poll::Ready(Err(E::from(open)))
            }
            KindProj::Call {
                fut,
                waits,
                waited_before,
            } => {
                let result = ready!(fut.poll(cx));
                let excluded = waits.total().saturating_sub(*waited_before);
                finish(this.guard, &result, excluded);
                Poll::Ready(result)
            }
        }
    }
}

/// Counters and state of one breaker.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakerStats {
    /// The state now.
    pub state: BreakerState,
    /// Consecutive failures in the current closed period.
    pub consecutive_failures: u32,
    /// Calls and failures in the failure-rate window (zero when that rule is off).
    pub window: WindowCounts,
    /// Successful calls since start.
    pub successes: u64,
    /// Failed calls since start.
    pub failures: u64,
    /// Calls refused while open or half-open.
    pub rejected: u64,
    /// Changes of state since start.
    pub transitions: u64,
    /// Time until half-open, when open.
    pub open_for: Option<Duration>,
}

/// Reads and forces a breaker while it serves.
#[derive(Clone)]
pub struct BreakerHandle {
    shared: Arc<Shared>,
}

impl BreakerHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        BreakerHandle { shared }
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        self.shared.state()
    }

    /// Follows the state: the receiver sees every change (the latest, if it lags).
    pub fn subscribe(&self) -> watch::Receiver<BreakerState> {
        self.shared.watch.subscribe()
    }

    /// Holds the breaker open until [`close`](Self::close) or [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.shared.force(BreakerState::ForcedOpen);
    }

    /// Closes the breaker, clearing its failure counts.
    pub fn close(&self) {
        self.shared.force(BreakerState::Closed);
    }

    /// Closes the breaker and zeroes its call counters.
    pub fn reset(&self) {
        self.close();
        let s = &self.shared;
        s.successes.store(0, Ordering::Relaxed);
        s.failures.store(0, Ordering::Relaxed);
        s.rejected.store(0, Ordering::Relaxed);
    }

    /// Counters and state now.
    pub fn stats(&self) -> BreakerStats {
        let s = &self.shared;
        let now = s.clock.now();
        let state = s.state();
        BreakerStats {
            state,
            consecutive_failures: s.consecutive.load(Ordering::Relaxed),
            window: s.window_counts(s.params.load().bucket_width, now),
            successes: s.successes.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
            transitions: s.control.lock().transitions,
            open_for: (state == BreakerState::Open)
                .then(|| Timestamp(s.open_until.load(Ordering::Acquire)).since(now)),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> BreakerConfig {
        self.shared.params.load().config
    }

    /// Puts `config` in force now. The state is kept: a closed breaker stays closed with
    /// its consecutive failures, an open one stays open until the time set when it
    /// opened (a new `open_for` applies from its next opening), a half-open one keeps
    /// its probes in flight. A new `window` starts the failure-rate count afresh, as
    /// the old buckets measured spans of another length.
    pub fn reconfigure(&self, config: BreakerConfig) {
        let s = &self.shared;
        let _state_changes_wait = s.control.lock();
        let old = s.params.load().config;
        if old == config {
            return;
        }
        s.params.store(Params::new(config));
        if old.window != config.window {
            for cell in &s.buckets {
                cell.store(0, Ordering::Release);
            }
        }
    }
}
