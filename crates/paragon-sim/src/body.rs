//! [`SimBody`]: the response body, including the bodies that misbehave on purpose.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Interval, MissedTickBehavior};

use crate::error::BodyAborted;

/// How often a trickling body sends its next byte.
pub const TRICKLE_EVERY: Duration = Duration::from_millis(100);

/// The body of every simulator response.
///
/// Besides ordinary bodies it can trickle forever (the `trickle_rate` fault) or stop
/// with an error after a first part (the `reset_rate` fault), which makes hyper abort
/// the connection.
#[derive(Debug)]
pub struct SimBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Full(Option<Bytes>),
    Trickle {
        data: Bytes,
        sent: usize,
        tick: Interval,
    },
    Abort(AbortStage),
}

#[derive(Debug)]
enum AbortStage {
    /// The part to send before failing.
    Send(Bytes),
    /// Sent; give hyper one chance to flush it to the socket.
    Flush,
    Fail,
}

impl SimBody {
    /// An empty body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full(None),
        }
    }

    /// A complete body.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Self {
            kind: Kind::Full((!data.is_empty()).then_some(data)),
        }
    }

    /// A body that sends one byte of `data` every [`TRICKLE_EVERY`] (the first at
    /// once), then spaces, and never ends. Must be created inside a tokio runtime.
    pub fn trickle(data: impl Into<Bytes>) -> Self {
        let mut tick = tokio::time::interval(TRICKLE_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            kind: Kind::Trickle {
                data: data.into(),
                sent: 0,
                tick,
            },
        }
    }

    /// A body that sends `partial`, then fails with [`BodyAborted`].
    pub fn abort_after(partial: impl Into<Bytes>) -> Self {
        Self {
            kind: Kind::Abort(AbortStage::Send(partial.into())),
        }
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = BodyAborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyAborted>>> {
        match &mut self.get_mut().kind {
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Trickle { data, sent, tick } => {
                if tick.poll_tick(cx).is_pending() {
                    return Poll::Pending;
                }
                let byte = if *sent < data.len() {
                    data.slice(*sent..*sent + 1)
                } else {
                    Bytes::from_static(b" ")
                };
                *sent = sent.saturating_add(1);
                Poll::Ready(Some(Ok(Frame::data(byte))))
            }
            Kind::Abort(stage) => match std::mem::replace(stage, AbortStage::Fail) {
                AbortStage::Send(partial) => {
                    *stage = AbortStage::Flush;
                    Poll::Ready(Some(Ok(Frame::data(partial))))
                }
                AbortStage::Flush => {
                    // hyper flushes what it buffered when the body is pending, so the
                    // client receives the head and the partial body before the abort.
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                AbortStage::Fail => Poll::Ready(Some(Err(BodyAborted))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.kind, Kind::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Full(Some(data)) => SizeHint::with_exact(data.len() as u64),
            Kind::Trickle { .. } | Kind::Abort(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn full_body_yields_its_data_once() {
        let body = SimBody::full("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        let collected = body.collect().await.expect("infallible").to_bytes();
        assert_eq!(&collected[..], b"hello");
        assert!(SimBody::empty().is_end_stream());
    }

    #[tokio::test]
    async fn abort_body_sends_its_part_then_fails() {
        let mut body = SimBody::abort_after("part");
        let first = body.frame().await.expect("a frame").expect("data");
        assert_eq!(first.into_data().ok().as_deref(), Some(&b"part"[..]));
        assert_eq!(body.frame().await.map(|r| r.is_err()), Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn trickle_sends_one_byte_per_tick_forever() {
        let mut body = SimBody::trickle("ab");
        let start = tokio::time::Instant::now();
        let mut got = Vec::new();
        for _ in 0..5 {
            let frame = body.frame().await.expect("never ends").expect("no error");
            got.extend_from_slice(&frame.into_data().expect("data"));
        }
        assert_eq!(got, b"ab   ");
        assert_eq!(start.elapsed(), TRICKLE_EVERY * 4);
    }
}
