//! What the stack carries: [`ParagonRequest`] (an [`Endpoint`], the call's wait ledger
//! and its reports) and [`ParagonResponse`].
//!
//! A request is cached by its endpoint alone, and carries its `WaitLedger` so the limiter
//! can tell the breaker how long it held the call on purpose (visible in the types, so it
//! survives any layer put between them). A new ParagoN endpoint is a new variant here; no
//! layer changes.

use std::borrow::Cow;

use paragon_layers::cache::{
    CacheKey, CacheStatus, CacheStatusSink, CacheWeight, NotModified, Revalidate,
};
use paragon_layers::rate_limit::{CarriesQuotaReport, QuotaReport};
use paragon_layers::retry::{AttemptsSink, Idempotent};
use paragon_layers::{CallPriority, CarriesDeadline, CarriesWaits, Deadline, Priority, WaitLedger};

use crate::{CallReport, Error, Fetched, User, UserId, Validators};

/// A request to ParagoN: what is asked, the ledger of the time the protective layers
/// waited on purpose during its call, and the deadline of the call.
///
/// The ledger and the deadline take no part in equality or hashing, so a request is its
/// own cache key: two requests for the same endpoint are equal whatever they carry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ParagonRequest {
    /// What is asked.
    pub endpoint: Endpoint,
    /// Filled by the rate limiter, read by the circuit breaker's slow-call rule; see
    /// [`paragon_layers::waits`].
    pub waits: WaitLedger,
    /// When the call must be answered by; set by the retry layer from
    /// `upstream.deadline` when not set. See [`paragon_layers::deadline`].
    pub deadline: Deadline,
    /// Interactive (someone waits for it), or background (a cache refresh, a frontend's
    /// prefetch): the rate limiter keeps the last of its burst for interactive calls.
    pub priority: Priority,
    /// Where the transport leaves the quota ParagoN advertised on its answer, for the
    /// rate limiter; see [`paragon_layers::rate_limit::QuotaReport`].
    pub quota: QuotaReport,
    /// When set, the request is conditional: ParagoN answers `304` if the version these
    /// validators name is still current.
    pub conditional: Option<Box<Validators>>,
    /// Where the bottom of the stack records the upstream calls made for this request,
    /// for its sender; see [`CallReport`].
    pub report: CallReport,
}

/// What ParagoN is asked. New endpoints are new variants; no layer needs to change.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `GET /users/{id}`.
    GetUser(UserId),
}

impl ParagonRequest {
    /// A request for `endpoint`, with an empty ledger.
    pub fn new(endpoint: Endpoint) -> Self {
        ParagonRequest {
            endpoint,
            waits: WaitLedger::default(),
            deadline: Deadline::default(),
            priority: Priority::Interactive,
            quota: QuotaReport::default(),
            conditional: None,
            report: CallReport::default(),
        }
    }

    /// This request, with `priority`.
    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// This request, recording its upstream calls in `report`.
    pub fn with_report(mut self, report: CallReport) -> Self {
        self.report = report;
        self
    }

    /// `GET /users/{id}`.
    pub fn get_user(id: UserId) -> Self {
        ParagonRequest::new(Endpoint::GetUser(id))
    }

    /// The upstream path, relative to the base URL (ids are always one safe segment).
    pub fn path(&self) -> String {
        match &self.endpoint {
            Endpoint::GetUser(id) => format!("/users/{id}"),
        }
    }
}

/// A request is cached by what it asks, its [`Endpoint`]: the ledger stays out of the
/// table, which keeps a cached entry one cache line (the key two words).
impl CacheKey for ParagonRequest {
    type Key = Endpoint;

    #[inline]
    fn cache_key(&self) -> Cow<'_, Endpoint> {
        Cow::Borrowed(&self.endpoint)
    }
}

impl CallPriority for ParagonRequest {
    #[inline]
    fn priority(&self) -> Priority {
        self.priority
    }

    #[inline]
    fn set_priority(&mut self, priority: Priority) {
        self.priority = priority;
    }
}

/// A refill is conditional on the cached user's validators, when ParagoN sent any.
impl Revalidate<ParagonResponse> for ParagonRequest {
    fn revalidate_against(&mut self, cached: &ParagonResponse) -> bool {
        match &cached.resource {
            Resource::User(user) => match user.validators() {
                Some(v) => {
                    self.conditional = Some(Box::new(v.clone()));
                    true
                }
                None => false,
            },
            Resource::NotModified => false,
        }
    }
}

impl NotModified for ParagonResponse {
    #[inline]
    fn is_not_modified(&self) -> bool {
        matches!(self.resource, Resource::NotModified)
    }
}

impl CarriesQuotaReport for ParagonRequest {
    #[inline]
    fn quota_report(&mut self) -> &mut QuotaReport {
        &mut self.quota
    }
}

impl CarriesWaits for ParagonRequest {
    #[inline]
    fn wait_ledger(&mut self) -> &mut WaitLedger {
        &mut self.waits
    }
}

impl CarriesDeadline for ParagonRequest {
    #[inline]
    fn deadline(&mut self) -> &mut Deadline {
        &mut self.deadline
    }
}

/// Every ParagoN request so far is a read: sending it twice does what sending it once
/// does, so it may be retried and hedged.
impl Idempotent for ParagonRequest {
    #[inline]
    fn is_idempotent(&self) -> bool {
        match self.endpoint {
            Endpoint::GetUser(_) => true,
        }
    }
}

/// A resource ParagoN sent.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Resource {
    /// A user document.
    User(User),
    /// `304`: the version a conditional request named is still current. Only the cache
    /// makes conditional requests, and it answers its entry instead.
    NotModified,
}

/// ParagoN's answer, with how the stack produced it.
#[derive(Clone, Debug, PartialEq)]
pub struct ParagonResponse {
    /// The resource.
    pub resource: Resource,
    /// Hit, miss or stale, when a cache is in the stack; [`CacheStatus::Miss`] otherwise.
    pub cache: CacheStatus,
    /// Upstream attempts the call that fetched it took (retries and hedges included);
    /// 1 without a retry layer. A cached answer keeps the figure of the call that filled
    /// it.
    pub attempts: u32,
}

impl ParagonResponse {
    /// A fresh answer from the upstream.
    pub fn new(resource: Resource) -> Self {
        ParagonResponse {
            resource,
            cache: CacheStatus::Miss,
            attempts: 1,
        }
    }

    /// The user of an answer to [`Endpoint::GetUser`], with its cache status; an
    /// [`Error::Internal`] when the stack answered with another resource.
    pub fn into_user(self) -> Result<Fetched<User>, Error> {
        match self.resource {
            Resource::User(user) => Ok(Fetched {
                value: user,
                cache: self.cache,
                attempts: self.attempts,
            }),
            #[allow(unreachable_patterns)]
            _ => Err(Error::Internal(
                "the stack answered a user request with another resource".into(),
            )),
        }
    }
}

/// An answer weighs the bytes of the document it holds, as ParagoN sent them.
impl CacheWeight for ParagonResponse {
    #[inline]
    fn cache_weight(&self) -> usize {
        match &self.resource {
            Resource::User(user) => user.body_len(),
            Resource::NotModified => 0,
        }
    }
}

impl CacheStatusSink for ParagonResponse {
    #[inline]
    fn set_cache_status(&mut self, status: CacheStatus) {
        self.cache = status;
    }
}

impl AttemptsSink for ParagonResponse {
    #[inline]
    fn set_attempts(&mut self, attempts: u32) {
        self.attempts = attempts;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use paragon_layers::rate_limit::UpstreamQuota;
    use paragon_layers::Timestamp;

    use super::*;

    fn id(s: &str) -> UserId {
        UserId::parse(s).expect("a valid id")
    }

    fn user(name: &str, validators: Option<Validators>) -> User {
        let raw = Bytes::from(format!(r#"{{"id":"{name}","name":"N"}}"#));
        User::decode(&id(name), raw)
            .expect("a user")
            .with_validators(validators)
    }

    #[test]
    fn a_user_request_goes_to_its_own_path() {
        assert_eq!(ParagonRequest::get_user(id("u-1.x")).path(), "/users/u-1.x");
    }

    #[test]
    fn the_request_carries_its_priority_deadline_ledger_and_quota_report() {
        let mut r = ParagonRequest::get_user(id("u1"));
        assert_eq!(r.priority(), Priority::Interactive);
        r.set_priority(Priority::Background);
        assert_eq!(r.priority, Priority::Background);
        assert_eq!(r.priority(), Priority::Background);

        r.waits = WaitLedger::recording();
        r.wait_ledger().add(Duration::from_millis(7));
        assert_eq!(r.waits.total(), Duration::from_millis(7));

        *r.deadline() = Deadline::at(Timestamp(1_000));
        assert_eq!(r.deadline.get(), Some(Timestamp(1_000)));

        r.quota = QuotaReport::recording();
        let q = UpstreamQuota {
            remaining: 3,
            reset: Duration::from_secs(9),
        };
        r.quota_report().record(q);
        assert_eq!(r.quota.take(), Some(q));
    }

    #[test]
    fn a_refill_is_conditional_only_on_a_user_with_validators() {
        let validators =
            Validators::from_headers(Some(b"\"v1\""), None).expect("an ETag is a validator");
        let mut r = ParagonRequest::get_user(id("u1"));
        let cached = ParagonResponse::new(Resource::User(user("u1", Some(validators.clone()))));
        assert!(r.revalidate_against(&cached));
        assert_eq!(r.conditional.as_deref(), Some(&validators));

        let mut r = ParagonRequest::get_user(id("u1"));
        let plain = ParagonResponse::new(Resource::User(user("u1", None)));
        assert!(!r.revalidate_against(&plain));
        assert_eq!(r.conditional, None);
        assert!(!r.revalidate_against(&ParagonResponse::new(Resource::NotModified)));
    }

    #[test]
    fn an_answer_knows_if_it_is_a_304_and_weighs_its_body() {
        let u = user("u1", None);
        let len = u.body_len();
        assert!(len > 1);
        let mut answer = ParagonResponse::new(Resource::User(u));
        assert!(!answer.is_not_modified());
        assert_eq!(answer.cache_weight(), len);
        let not_modified = ParagonResponse::new(Resource::NotModified);
        assert!(not_modified.is_not_modified());
        assert_eq!(not_modified.cache_weight(), 0);

        assert_eq!(answer.attempts, 1);
        answer.set_attempts(3);
        assert_eq!(answer.attempts, 3);
        answer.set_cache_status(CacheStatus::Hit);
        assert_eq!(answer.cache, CacheStatus::Hit);
    }

    #[test]
    fn a_user_request_may_be_sent_twice() {
        assert!(ParagonRequest::get_user(id("u1")).is_idempotent());
    }
}
