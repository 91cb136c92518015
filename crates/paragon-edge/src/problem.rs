//! Errors as `application/problem+json` (RFC 9457), with the contract's statuses.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use paragon_client::{Error, InvalidUserId};
use serde::Serialize;

/// One problem answer.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// What happened this time.
    pub detail: String,
    /// Whole seconds after which a retry may succeed (also sent as `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// The budget a `429` describes, sent as the IETF `RateLimit-Policy` and `RateLimit`
    /// headers so a frontend can pace itself; not part of the body.
    #[serde(skip)]
    pub policy: Option<RatePolicy>,
}

/// A budget as the IETF RateLimit header fields describe it: `quota` calls per
/// `window_secs`, under a policy `name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RatePolicy {
    /// The policy's name, quoted in the headers (`"upstream"`, `"client"`).
    pub name: &'static str,
    /// Calls allowed per window.
    pub quota: u32,
    /// The window in whole seconds (at least 1), as the header gives it.
    pub window_secs: u32,
}

impl RatePolicy {
    /// `RateLimit-Policy: "NAME";q=QUOTA;w=WINDOW`.
    pub fn policy_header(&self) -> String {
        format!(
            "\"{}\";q={};w={}",
            self.name,
            self.quota,
            self.window_secs.max(1)
        )
    }

    /// `RateLimit: "NAME";r=0;t=SECS`: nothing remains until the retry time.
    pub fn limit_header(&self, retry_after_secs: u64) -> String {
        format!("\"{}\";r=0;t={retry_after_secs}", self.name)
    }
}

/// `RateLimit-Policy` (IETF httpapi draft).
pub static RATELIMIT_POLICY: header::HeaderName =
    header::HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (IETF httpapi draft).
pub static RATELIMIT: header::HeaderName = header::HeaderName::from_static("ratelimit");

/// Whole seconds of `d`, rounded up, at least 1, as a policy's window.
pub fn window_secs(d: Duration) -> u32 {
    u32::try_from(retry_after_secs(d)).unwrap_or(u32::MAX)
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
pub fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

impl Problem {
    /// A problem of kind `slug` with `status`.
    pub fn new(
        status: StatusCode,
        slug: &str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            kind: format!("urn:paragon-edge:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            retry_after: None,
            policy: None,
        }
    }

    /// For a `429`: the budget it describes, sent as `RateLimit-Policy` / `RateLimit`.
    /// Other statuses are left as they are.
    pub fn with_policy(mut self, policy: Option<RatePolicy>) -> Problem {
        if self.status == 429 {
            self.policy = policy;
        }
        self
    }

    /// Adds a retry time.
    pub fn retry_after(mut self, d: Duration) -> Problem {
        self.retry_after = Some(retry_after_secs(d));
        self
    }

    /// `400`: a request we refuse to send upstream.
    pub fn bad_request(slug: &str, detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, slug, "Bad request", detail)
    }

    /// `400` for an id that is not valid; nothing is sent upstream.
    pub fn invalid_id(e: &InvalidUserId) -> Problem {
        Problem::bad_request("invalid-id", format!("invalid user id: {e}"))
    }

    /// The per-id error of a batch whose answer reached `server.max_batch_bytes`.
    pub fn too_large_for_batch(max_bytes: usize) -> Problem {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "Batch answer too large",
            format!(
                "the batch answer reached server.max_batch_bytes ({max_bytes} bytes) before this id; ask for it on its own"
            ),
        )
    }

    /// `429` for a client over its own limit (`[client_limit]`).
    ///
    /// `requests` is the client's budget of edge requests and `share` its share of the
    /// upstream budget; the headers describe the one that refused.
    pub fn client_limited(
        refusal: crate::client_limit::Refusal,
        requests: RatePolicy,
        share: Option<RatePolicy>,
    ) -> Problem {
        use crate::client_limit::Refusal;
        let (detail, retry_after, policy) = match refusal {
            Refusal::Requests { retry_after } => (
                "this client has sent more requests than client_limit.max_requests allows",
                retry_after,
                Some(requests),
            ),
            Refusal::UpstreamShare { retry_after } => (
                "this client's uncached ids have used its share of the upstream budget (client_limit.max_upstream_share)",
                retry_after,
                share,
            ),
        };
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "client-limited",
            "Too many requests from this client",
            detail,
        )
        .retry_after(retry_after)
        .with_policy(policy)
    }

    /// `404` for a path that is not part of the API.
    pub fn no_route(path: &str) -> Problem {
        let shown: String = path.chars().take(200).collect();
        Problem::new(
            StatusCode::NOT_FOUND,
            "no-route",
            "Not found",
            format!("no such endpoint: {shown}"),
        )
    }

    /// The problem answering a ParagoN call's error.
    pub fn from_error(e: &Error) -> Problem {
        use StatusCode as S;
        match e {
            Error::InvalidId(invalid) => Problem::invalid_id(invalid),
            Error::NotFound => Problem::new(
                S::NOT_FOUND,
                "not-found",
                "No such user",
                "ParagoN has no user with this id",
            ),
            Error::RateLimited(r) => {
                let detail = match r.cause {
                    paragon_layers::rate_limit::RateLimitCause::Budget => {
                        "the upstream request budget is spent"
                    }
                    paragon_layers::rate_limit::RateLimitCause::UpstreamPause => {
                        "ParagoN asked us to slow down; upstream calls are paused"
                    }
                    paragon_layers::rate_limit::RateLimitCause::UpstreamQuota => {
                        "ParagoN's advertised quota has no call left for now; calls are paced to its reset"
                    }
                };
                Problem::new(S::TOO_MANY_REQUESTS, "rate-limited", "Rate limited", detail)
                    .retry_after(r.retry_after)
            }
            Error::UpstreamRateLimited { retry_after } => Problem::new(
                S::TOO_MANY_REQUESTS,
                "upstream-rate-limited",
                "Rate limited",
                "ParagoN is rate limiting us; upstream calls are paused",
            )
            .retry_after(*retry_after),
            Error::CircuitOpen(c) => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "circuit-open",
                "ParagoN unavailable",
                "ParagoN is failing; the circuit breaker is open and no call was made",
            )
            .retry_after(c.retry_after),
            Error::Overloaded => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "overloaded",
                "Overloaded",
                e.to_string(),
            )
            .retry_after(Duration::from_secs(1)),
            Error::Local(_) => Problem::new(
                S::SERVICE_UNAVAILABLE,
                "local-resource",
                "Edge overloaded",
                "this edge instance ran out of a local resource; ParagoN was not called",
            )
            .retry_after(Duration::from_secs(1)),
            Error::Timeout { .. } => Problem::new(
                S::GATEWAY_TIMEOUT,
                "upstream-timeout",
                "Upstream timeout",
                e.to_string(),
            ),
            Error::DeadlineExceeded(_) => Problem::new(
                S::GATEWAY_TIMEOUT,
                "deadline-exceeded",
                "Upstream timeout",
                e.to_string(),
            ),
            _ => Problem::new(
                S::BAD_GATEWAY,
                "upstream-failure",
                "Upstream failure",
                e.to_string(),
            ),
        }
    }

    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(policy) = &self.policy {
            insert_policy(headers, policy, self.retry_after.unwrap_or(1));
        }
        response
    }
}

/// Adds the `RateLimit-Policy` and `RateLimit` headers of a refusal by `policy` that
/// lasts `retry_after_secs`.
pub fn insert_policy(
    headers: &mut axum::http::HeaderMap,
    policy: &RatePolicy,
    retry_after_secs: u64,
) {
    let values = [
        (&RATELIMIT_POLICY, policy.policy_header()),
        (&RATELIMIT, policy.limit_header(retry_after_secs)),
    ];
    for (name, value) in values {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name.clone(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(60)), 60);
    }

    #[test]
    fn statuses_follow_the_contract() {
        use paragon_layers::circuit_breaker::CircuitOpen;
        use paragon_layers::rate_limit::{RateLimitCause, RateLimited};
        let d = Duration::from_millis(1500);
        let cases: Vec<(Error, u16, Option<u64>)> = vec![
            (Error::NotFound, 404, None),
            (
                Error::RateLimited(RateLimited {
                    retry_after: d,
                    cause: RateLimitCause::Budget,
                }),
                429,
                Some(2),
            ),
            (Error::UpstreamRateLimited { retry_after: d }, 429, Some(2)),
            (
                Error::CircuitOpen(CircuitOpen { retry_after: d }),
                503,
                Some(2),
            ),
            (Error::Timeout { timeout: d }, 504, None),
            (
                Error::DeadlineExceeded(paragon_layers::retry::DeadlineExceeded {
                    deadline: d,
                    in_local_wait: false,
                }),
                504,
                None,
            ),
            (Error::Connect("x".into()), 502, None),
            (Error::UpstreamStatus { status: 500 }, 502, None),
            (Error::BodyTooLarge { limit: 1 }, 502, None),
            (Error::Overloaded, 503, Some(1)),
            (Error::Local("Too many open files".into()), 503, Some(1)),
            (
                Error::Malformed(paragon_client::UserDecodeError::WrongId {
                    expected: "ABCD".into(),
                    found: "abcd".into(),
                }),
                502,
                None,
            ),
        ];
        for (e, status, retry) in cases {
            let p = Problem::from_error(&e);
            assert_eq!((p.status, p.retry_after), (status, retry), "{e:?}");
        }
    }
}
