//! [`ParagonClient`]: the typed façade over any stack of ParagoN services.
//!
//! Business code asks for a user by [`UserId`](crate::UserId) and gets a
//! [`User`](crate::User) or an [`Error`](crate::Error); it never builds a request or
//! matches a response variant. The façade is generic over the service underneath, so the
//! same calls work over the bare transport, over the whole protective stack, or over
//! [`FakeParagon`](crate::testing::FakeParagon) in tests (the Proxy pattern's client side).

use tower::{Service, ServiceExt};

use paragon_layers::cache::CacheStatus;
use paragon_layers::Priority;

use crate::{CallReport, Error, ParagonRequest, ParagonResponse, User, UserId};

/// The typed façade business code calls. It works over any service that speaks
/// [`ParagonRequest`] — the bare [`HttpTransport`](crate::HttpTransport), a stack of
/// protective layers, or a [`FakeParagon`](crate::testing::FakeParagon) in tests — and
/// cannot tell which.
#[derive(Clone, Debug)]
pub struct ParagonClient<S> {
    service: S,
}

/// A user and how the stack produced it.
#[derive(Clone, Debug, PartialEq)]
pub struct Fetched<T> {
    /// The resource.
    pub value: T,
    /// Hit, miss or stale.
    pub cache: CacheStatus,
    /// Upstream attempts of the call that fetched it (retries and hedges included).
    pub attempts: u32,
}

impl<S> ParagonClient<S>
where
    S: Service<ParagonRequest, Response = ParagonResponse, Error = Error> + Clone,
{
    /// A client over `service`.
    pub fn new(service: S) -> Self {
        ParagonClient { service }
    }

    /// Sends any request through the stack.
    pub async fn call(&self, req: ParagonRequest) -> Result<ParagonResponse, Error> {
        self.service.clone().oneshot(req).await
    }

    /// `GET /users/{id}`.
    pub async fn fetch_user(&self, id: &UserId) -> Result<User, Error> {
        self.fetch_user_with_status(id).await.map(|f| f.value)
    }

    /// `GET /users/{id}`, with the cache status of the answer.
    pub async fn fetch_user_with_status(&self, id: &UserId) -> Result<Fetched<User>, Error> {
        self.fetch_user_with(id, Priority::Interactive).await
    }

    /// `GET /users/{id}` as a call of `priority` (a prefetch is
    /// [`Priority::Background`]), with the cache status of the answer.
    pub async fn fetch_user_with(
        &self,
        id: &UserId,
        priority: Priority,
    ) -> Result<Fetched<User>, Error> {
        self.call(ParagonRequest::get_user(id.clone()).with_priority(priority))
            .await
            .and_then(ParagonResponse::into_user)
    }

    /// `GET /users/{id}` as a call of `priority`, recording the upstream calls it makes
    /// in `report` (read it once this returns: what the cache answered made none).
    pub async fn fetch_user_reporting(
        &self,
        id: &UserId,
        priority: Priority,
        report: &CallReport,
    ) -> Result<Fetched<User>, Error> {
        let req = ParagonRequest::get_user(id.clone())
            .with_priority(priority)
            .with_report(report.clone());
        self.call(req).await.and_then(ParagonResponse::into_user)
    }

    /// The service underneath.
    pub fn service(&self) -> &S {
        &self.service
    }
}
