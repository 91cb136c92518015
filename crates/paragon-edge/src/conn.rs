//! Connections from frontends: how many may be open, and how long each may take to send
//! a request head, sit idle, or leave its answer unread.
//!
//! hyper serves each connection; this module decides which connections it gets and for
//! how long. hyper has one timer before a request (`header_read_timeout`, started when
//! the connection begins to wait for a request, so it is also the idle timeout); the
//! contract has two, as nginx and Envoy do: `header_read_timeout` from a head's first
//! byte, and `idle_timeout` from accept or the last answer. So each socket is wrapped in
//! [`Guarded`], which knows whether a request of its connection is being answered and,
//! whenever a read or a write has to wait, applies the deadline of the phase the
//! connection is in:
//!
//! - waiting for a request (since accept or the last answer): `idle_timeout`;
//! - a head begun (bytes read while no request is being answered): `header_read_timeout`;
//! - a request being answered: no deadline (the upstream's own timeouts bound it);
//! - an answer that cannot be written (the client does not read): `idle_timeout`.
//!
//! A deadline that passes fails the read or write with `TimedOut`, and hyper closes the
//! connection. This costs one timer per connection, reset when a read waits after a
//! phase change: no task and no wake-up per request. Time here is tokio's
//! (`tokio::time::Instant`), not the layers' `Clock`: the deadlines are tokio timers,
//! which must be set in tokio's instants, and which paused tokio time drives in tests.
//!
//! The head's size is bounded by hyper's read buffer (`max_buf_size`), which answers
//! `431` when a head does not fit; so a connection holds at most that many bytes of
//! request whatever the client sends. At `max_connections` the accept loop stops
//! accepting until one closes: new clients wait in the kernel's backlog instead of
//! failing, and the process keeps file descriptors for its upstream calls.

#![allow(
    clippy::disallowed_methods,
    reason = "socket deadlines are tokio timers, set in tokio's instants (see above)"
)]

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::Service;

use crate::metrics::{CloseReason, Metrics};
use axum::response::Response;

/// The limits every connection is served under (`[server]`).
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// A request head begun and not finished by then closes the connection.
    pub header_read_timeout: Duration,
    /// Nothing to do this long (or an answer not read this long) closes it.
    pub idle_timeout: Duration,
    /// Longest request head; past it hyper answers 431 and closes.
    pub max_head_bytes: usize,
    /// Connections open at once.
    pub max_connections: usize,
}

/// What a connection is doing, as its socket sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request since this instant.
    Idle(Instant),
    /// A request head began arriving at this instant.
    Head(Instant),
    /// A request is being answered.
    Busy,
}

pin_project_lite::pin_project! {
    /// A socket that fails a read or write that waits past its phase's deadline.
    pub struct Guarded<IO> {
        #[pin]
        io: IO,
        requests: Arc<Requests>,
        // `requests.started` when the phase was last brought up to date.
        seen: u64,
        phase: Phase,
        limits: ConnLimits,
        metrics: Arc<Metrics>,
        read_timer: Pin<Box<Sleep>>,
        // When a write first had to wait, and its timer (made at the first stall).
        write_stalled: Option<Instant>,
        write_timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<IO> Guarded<IO> {
    fn new(io: IO, requests: Arc<Requests>, limits: ConnLimits, metrics: Arc<Metrics>) -> Self {
        let now = Instant::now();
        Guarded {
            io,
            requests,
            seen: 0,
            phase: Phase::Idle(now),
            limits,
            metrics,
            read_timer: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            write_stalled: None,
            write_timer: None,
        }
    }
}

/// The requests of one connection: how many began, how many were answered, and when
/// the last answer was ready. The counts only grow, so the socket sees a request that
/// began and ended between two of its reads (a cache hit answered within one poll) as
/// well as one still running.
struct Requests {
    started: AtomicU64,
    answered: AtomicU64,
    /// Nanoseconds from `base` to the last answer.
    answered_at: AtomicU64,
    base: Instant,
}

impl Requests {
    fn new() -> Requests {
        Requests {
            started: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            answered_at: AtomicU64::new(0),
            base: Instant::now(),
        }
    }

    fn answered(&self) {
        let nanos = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.answered_at.store(nanos, Ordering::Relaxed);
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    fn last_answer(&self) -> Instant {
        self.base + Duration::from_nanos(self.answered_at.load(Ordering::Relaxed))
    }
}

/// Moves `phase` along with the connection's requests: one being answered makes it
/// busy; once every one is answered, the idle time runs from the last answer.
fn follow_requests(phase: &mut Phase, seen: &mut u64, requests: &Requests) {
    let started = requests.started.load(Ordering::Relaxed);
    if started != requests.answered.load(Ordering::Relaxed) {
        *phase = Phase::Busy;
    } else if started != *seen || *phase == Phase::Busy {
        *phase = Phase::Idle(requests.last_answer());
    }
    *seen = started;
}

fn timed_out(reason: CloseReason, metrics: &Metrics) -> io::Error {
    metrics.connection_closed(reason);
    io::Error::new(io::ErrorKind::TimedOut, reason.label())
}

/// Polls `timer` for `deadline`, moving it there first when it points elsewhere.
fn expired(timer: &mut Pin<Box<Sleep>>, deadline: Instant, cx: &mut Context<'_>) -> bool {
    if timer.deadline() != deadline {
        timer.as_mut().reset(deadline);
    }
    timer.as_mut().poll(cx).is_ready()
}

impl<IO: AsyncRead> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        follow_requests(this.phase, this.seen, this.requests);
        let before = buf.filled().len();
        match this.io.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    if let Phase::Idle(_) = this.phase {
                        *this.phase = Phase::Head(Instant::now());
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let (deadline, reason) = match *this.phase {
                    // hyper may not read again once the answer is written, until bytes
                    // come: this wake-up, at the earliest moment the connection could
                    // have been idle too long, makes it read, and the phase is
                    // brought up to date then.
                    Phase::Busy => {
                        let _ = expired(
                            this.read_timer,
                            Instant::now() + this.limits.idle_timeout,
                            cx,
                        );
                        return Poll::Pending;
                    }
                    Phase::Idle(since) => (since + this.limits.idle_timeout, CloseReason::Idle),
                    Phase::Head(since) => (
                        since + this.limits.header_read_timeout,
                        CloseReason::HeaderTimeout,
                    ),
                };
                if expired(this.read_timer, deadline, cx) {
                    return Poll::Ready(Err(timed_out(reason, this.metrics)));
                }
                Poll::Pending
            }
        }
    }
}

impl<IO: AsyncWrite> Guarded<IO> {
    /// The answer to a write that waited: fails it once it has waited `idle_timeout`.
    fn stalled(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let this = self.project();
        let since = *this.write_stalled.get_or_insert_with(Instant::now);
        let deadline = since + this.limits.idle_timeout;
        let timer = this
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if expired(timer, deadline, cx) {
            return Poll::Ready(Err(timed_out(CloseReason::Idle, this.metrics)));
        }
        Poll::Pending
    }

    fn wrote(self: Pin<&mut Self>, result: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if result.is_pending() {
            return result;
        }
        *self.project().write_stalled = None;
        result
    }
}

impl<IO: AsyncWrite> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.as_mut().project().io.poll_write(cx, buf) {
            Poll::Pending => self.stalled(cx),
            done => self.wrote(done),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.as_mut().project().io.poll_write_vectored(cx, bufs) {
            Poll::Pending => self.stalled(cx),
            done => self.wrote(done),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// The edge as hyper calls it for one connection: each request counts as being answered
/// until its answer is ready, and carries the peer's address (`ConnectInfo`) when
/// something reads it.
#[derive(Clone)]
struct ConnService<S> {
    /// The connection's own copy of the edge's service, called in place. hyper calls
    /// through `&self`, and the usual adapter clones the whole service for every request
    /// (with CORS on, that clone and its drop were about 1,500 instructions of a
    /// 33,000-instruction cache hit, `bench/run.sh --only instr`). An HTTP/1 connection
    /// answers one request at a time and `call` returns a future that owns what it needs,
    /// so the cell is never borrowed twice.
    app: RefCell<S>,
    peer: Option<SocketAddr>,
    requests: Arc<Requests>,
}

/// Counts a request as answered when dropped (answered, or given up with its connection).
struct BusyGuard(Arc<Requests>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.answered();
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`ConnService`]: the edge's, with the busy mark held until it is ready.
    struct Answering<F> {
        #[pin]
        inner: F,
        busy: Option<BusyGuard>,
    }
}

impl<F: Future> Future for Answering<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        this.busy.take();
        Poll::Ready(out)
    }
}

impl<S> hyper::service::Service<http::Request<Incoming>> for ConnService<S>
where
    S: Service<http::Request<Incoming>, Response = Response, Error = Infallible> + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Answering<S::Future>;

    fn call(&self, mut request: http::Request<Incoming>) -> Self::Future {
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        self.requests.started.fetch_add(1, Ordering::Relaxed);
        let busy = Some(BusyGuard(self.requests.clone()));
        // The edge is always ready (a router is); hyper calls without asking.
        Answering {
            inner: self.app.borrow_mut().call(request),
            busy,
        }
    }
}

/// What the accept loop serves each connection with: the edge's HTTP service.
pub trait HttpService:
    Service<
        http::Request<Incoming>,
        Response = Response,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> HttpService for S where
    S: Service<
            http::Request<Incoming>,
            Response = Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// Accepts connections on `listener` and serves each with `app` until `stop` turns
/// true; then stops accepting, asks every connection to close after its current
/// request, and returns once all are closed. With `peer_info`, each request carries
/// the peer's address as `ConnectInfo` (for per-client limits).
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    peer_info: bool,
    mut stop: watch::Receiver<bool>,
) where
    S: HttpService,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    metrics.set_connection_cap(limits.max_connections);
    let mut accept_failing = false;
    // Logged once when the cap is reached, and once when a tenth of it is free again,
    // so a load that hovers at the cap does not log every connection.
    let mut capped = false;
    let headroom = (limits.max_connections / 10).max(1);
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                metrics.set_at_cap(true);
                if !std::mem::replace(&mut capped, true) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection cap reached: new connections wait in the backlog"
                    );
                }
                let permit = tokio::select! {
                    p = slots.clone().acquire_owned() => p,
                    _ = stop.wait_for(|s| *s) => break,
                };
                metrics.set_at_cap(false);
                match permit {
                    Ok(p) => p,
                    Err(_) => break,
                }
            }
        };
        if capped && slots.available_permits() >= headroom {
            capped = false;
            tracing::info!(
                max_connections = limits.max_connections,
                "connections well below the cap again"
            );
        }
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                if std::mem::take(&mut accept_failing) {
                    tracing::info!("accepting connections again");
                }
                pair
            }
            Err(e) => {
                if !std::mem::replace(&mut accept_failing, true) {
                    tracing::error!(
                        error = %e,
                        local = paragon_client::transport::is_out_of_resources(&e),
                        "cannot accept connections; retrying"
                    );
                }
                // Out of descriptors: wait for some to close instead of spinning.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let metrics = metrics.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            metrics.connection_opened();
            let peer = peer_info.then_some(peer);
            serve_one(stream, peer, app, limits, metrics.clone(), stop).await;
            metrics.connection_ended();
            drop(permit);
        });
    }
    // Every connection holds a slot until it closes.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
}

async fn serve_one<S>(
    stream: TcpStream,
    peer: Option<SocketAddr>,
    app: S,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) where
    S: HttpService,
{
    let requests = Arc::new(Requests::new());
    let io = Guarded::new(stream, requests.clone(), limits, metrics);
    let service = ConnService {
        app: RefCell::new(app),
        peer,
        requests,
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(limits.max_head_bytes)
        .header_read_timeout(None)
        .keep_alive(true);
    let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(?peer, error = %e, "connection ended with an error");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}
