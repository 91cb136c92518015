//! A scripted fake ParagoN for testing code that uses [`ParagonClient`](crate::ParagonClient).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use paragon_client::{ParagonClient, UserId, Error, testing::FakeParagon};
//! let fake = FakeParagon::new();
//! fake.user("u1", serde_json::json!({"id": "u1", "name": "Ann"}));
//! fake.fail("u2", Error::UpstreamStatus { status: 503 });
//! let client = ParagonClient::new(fake.clone());
//! let u1 = UserId::parse("u1").unwrap();
//! assert_eq!(client.fetch_user(&u1).await.unwrap().name().as_deref(), Some("Ann"));
//! assert!(client.fetch_user(&UserId::parse("u2").unwrap()).await.is_err());
//! assert_eq!(fake.calls_for("u1"), 1);
//! # });
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tower::Service;

use crate::{Endpoint, Error, ParagonRequest, ParagonResponse, Resource, User, UserId};

#[derive(Clone)]
enum Answer {
    User(Bytes),
    Fail(Error),
}

#[derive(Default)]
struct Script {
    /// Per id: answers given in order; the last one repeats.
    answers: HashMap<String, VecDeque<Answer>>,
    calls: HashMap<String, u64>,
    total: u64,
    delay: Option<Duration>,
}

/// A [`tower::Service`] that answers [`ParagonRequest`]s from a script and counts calls.
///
/// Ids with no script answer [`Error::NotFound`]. Put any layers on top of it, exactly as
/// on the real transport.
#[derive(Clone, Default)]
pub struct FakeParagon {
    script: Arc<Mutex<Script>>,
}

impl FakeParagon {
    /// A fake with no users.
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on `id` answers this user document (queued after earlier answers).
    pub fn user(&self, id: &str, doc: serde_json::Value) -> &Self {
        let bytes = Bytes::from(doc.to_string());
        self.push(id, Answer::User(bytes))
    }

    /// From now on `id` fails with `error` (queued after earlier answers).
    pub fn fail(&self, id: &str, error: Error) -> &Self {
        self.push(id, Answer::Fail(error))
    }

    /// Every answer waits this long first (on tokio time).
    pub fn delay(&self, d: Duration) -> &Self {
        self.script.lock().delay = Some(d);
        self
    }

    fn push(&self, id: &str, answer: Answer) -> &Self {
        self.script
            .lock()
            .answers
            .entry(id.to_string())
            .or_default()
            .push_back(answer);
        self
    }

    /// Calls that reached the fake for `id`.
    pub fn calls_for(&self, id: &str) -> u64 {
        self.script.lock().calls.get(id).copied().unwrap_or(0)
    }

    /// Calls that reached the fake.
    pub fn calls(&self) -> u64 {
        self.script.lock().total
    }

    fn answer(&self, id: &UserId) -> (Option<Answer>, Option<Duration>) {
        let mut s = self.script.lock();
        s.total += 1;
        *s.calls.entry(id.to_string()).or_default() += 1;
        let delay = s.delay;
        let answer = s.answers.get_mut(id.as_str()).and_then(|q| {
            if q.len() > 1 {
                q.pop_front()
            } else {
                q.front().cloned()
            }
        });
        (answer, delay)
    }
}

impl Service<ParagonRequest> for FakeParagon {
    type Response = ParagonResponse;
    type Error = Error;
    type Future = BoxFuture<'static, Result<ParagonResponse, Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ParagonRequest) -> Self::Future {
        let Endpoint::GetUser(id) = req.endpoint;
        let (answer, delay) = self.answer(&id);
        Box::pin(async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            match answer {
                Some(Answer::User(raw)) => Ok(ParagonResponse::new(Resource::User(User::decode(
                    &id, raw,
                )?))),
                Some(Answer::Fail(e)) => Err(e),
                None => Err(Error::NotFound),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt;

    use super::*;

    async fn fetch(fake: &FakeParagon, id: &str) -> Result<ParagonResponse, Error> {
        let req = ParagonRequest::get_user(UserId::parse(id).expect("a valid id"));
        fake.clone().oneshot(req).await
    }

    fn name(answer: Result<ParagonResponse, Error>) -> Option<String> {
        answer.ok()?.into_user().ok()?.value.name()
    }

    #[tokio::test]
    async fn answers_come_in_script_order_the_last_repeats_and_calls_are_counted() {
        let fake = FakeParagon::new();
        fake.user("u1", serde_json::json!({"id": "u1", "name": "one"}))
            .fail("u1", Error::UpstreamStatus { status: 503 })
            .user("u1", serde_json::json!({"id": "u1", "name": "three"}));
        assert_eq!(name(fetch(&fake, "u1").await).as_deref(), Some("one"));
        assert_eq!(
            fetch(&fake, "u1").await.unwrap_err(),
            Error::UpstreamStatus { status: 503 }
        );
        for _ in 0..2 {
            assert_eq!(name(fetch(&fake, "u1").await).as_deref(), Some("three"));
        }
        assert_eq!(fetch(&fake, "nobody").await.unwrap_err(), Error::NotFound);
        assert_eq!(fake.calls_for("u1"), 4);
        assert_eq!(fake.calls_for("nobody"), 1);
        assert_eq!(fake.calls_for("never"), 0);
        assert_eq!(fake.calls(), 5);
    }

    #[tokio::test(start_paused = true)]
    #[allow(clippy::disallowed_methods)] // the fake sleeps on tokio's clock: measure that one
    async fn every_answer_waits_the_delay_on_tokio_time() {
        let fake = FakeParagon::new();
        fake.delay(Duration::from_secs(3))
            .user("u1", serde_json::json!({"id": "u1"}));
        let start = tokio::time::Instant::now();
        assert!(fetch(&fake, "u1").await.is_ok());
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }
}
