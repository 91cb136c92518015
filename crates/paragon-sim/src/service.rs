//! Request handling: the `/users/{id}` API with its faults, and the `/_sim/*` control
//! endpoint.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{
    HeaderName, HeaderValue, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, LAST_MODIFIED, RETRY_AFTER,
};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body;
use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::body::SimBody;
use crate::error::ConnectionDropped;
use crate::faults::{
    whole_seconds_at_least_one, ActiveFaults, BodyFault, EarlyFault, FailFirst, Faults, Quota,
    QuotaDecision,
};
use crate::stats::STATUS_DROPPED;
use crate::user::user_json;
use crate::Simulator;

/// Largest accepted body of `PUT /_sim/faults`.
const MAX_CONTROL_BODY: usize = 64 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");

/// The simulator as a hyper service: hand it to
/// `hyper::server::conn::http1::Builder::serve_connection`.
///
/// It fails (so hyper closes the connection without an answer) exactly when the
/// `drop_rate` fault hits; every other request gets a response.
#[derive(Clone, Debug)]
pub struct SimService {
    sim: Simulator,
}

impl SimService {
    pub(crate) fn new(sim: Simulator) -> Self {
        Self { sim }
    }
}

impl<B> hyper::service::Service<Request<B>> for SimService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<SimBody>;
    type Error = ConnectionDropped;
    type Future =
        Pin<Box<dyn Future<Output = Result<Response<SimBody>, ConnectionDropped>> + Send>>;

    fn call(&self, req: Request<B>) -> Self::Future {
        let sim = self.sim.clone();
        Box::pin(async move { sim.handle(req).await })
    }
}

impl Simulator {
    /// Answers one request, exactly as the server would.
    ///
    /// `Err(ConnectionDropped)` means the request must get no answer at all (the
    /// `drop_rate` fault); a server closes the connection.
    pub async fn handle<B>(&self, req: Request<B>) -> Result<Response<SimBody>, ConnectionDropped>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let path = req.uri().path();
        if path.starts_with("/users/") {
            self.users(req).await
        } else if path.starts_with("/_sim/") {
            Ok(self.control(req).await)
        } else {
            Ok(error_json(StatusCode::NOT_FOUND, "not_found"))
        }
    }

    async fn users<B>(&self, req: Request<B>) -> Result<Response<SimBody>, ConnectionDropped> {
        let inner = &*self.inner;
        inner.counters.record_request(req.uri().path());
        let faults: Arc<ActiveFaults> = inner.faults.read().clone();
        // The first calls of an id are counted as they arrive, before any delay.
        let path = req.uri().path();
        let first_failure = faults.fail_first(path.strip_prefix("/users/").unwrap_or(path));
        let mut delay = faults
            .latency
            .unwrap_or_default()
            .saturating_add(faults.slow_delay().unwrap_or_default());
        if first_failure.is_some() {
            delay = delay.saturating_add(faults.fail_first_delay);
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let answer = self.answer_user(&faults, &req, first_failure);
        match &answer {
            Ok(response) => inner.counters.record_status(response.status().as_u16()),
            Err(ConnectionDropped) => inner.counters.record_status(STATUS_DROPPED),
        }
        tracing::debug!(
            path = req.uri().path(),
            status = answer
                .as_ref()
                .map_or(STATUS_DROPPED, |r| r.status().as_u16()),
            "answered"
        );
        answer
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        match &self.inner.expected_authorization {
            None => true,
            Some(expected) => headers
                .get(http::header::AUTHORIZATION)
                .is_some_and(|got| got.as_bytes() == &expected[..]),
        }
    }

    fn answer_user<B>(
        &self,
        faults: &ActiveFaults,
        req: &Request<B>,
        first_failure: Option<FailFirst>,
    ) -> Result<Response<SimBody>, ConnectionDropped> {
        let path = req.uri().path();
        let segment = path.strip_prefix("/users/").unwrap_or(path);
        if segment.is_empty() || segment.contains('/') {
            return Ok(error_json(StatusCode::NOT_FOUND, "not_found"));
        }
        if req.method() != Method::GET {
            let mut response = error_json(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET"));
            return Ok(response);
        }
        let Ok(id) = percent_decode_str(segment).decode_utf8() else {
            return Ok(error_json(StatusCode::BAD_REQUEST, "bad_request"));
        };
        if !self.authorized(req.headers()) {
            let mut response = error_json(StatusCode::UNAUTHORIZED, "unauthorized");
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
            return Ok(response);
        }

        let conditional = req.headers().contains_key(IF_NONE_MATCH)
            || req.headers().contains_key(IF_MODIFIED_SINCE);
        if conditional {
            self.inner.counters.record_conditional();
        }
        let now = Instant::now();
        if let Some(until) = faults.outage_until.filter(|until| now < *until) {
            let mut response = problem(StatusCode::SERVICE_UNAVAILABLE, "ParagoN is down");
            let retry = whole_seconds_at_least_one(until - now);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry));
            return Ok(response);
        }
        if let Some(seconds) = faults.always_429 {
            let mut response = problem(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
            return Ok(response);
        }
        let quota = faults.quota.as_ref().map(|q| (q, q.check(now)));
        if let Some((q, decision)) = quota.filter(|(_, d)| !d.allowed) {
            let mut response = problem(StatusCode::TOO_MANY_REQUESTS, "quota exceeded");
            let headers = response.headers_mut();
            headers.insert(
                RETRY_AFTER,
                HeaderValue::from(whole_seconds_at_least_one(decision.reset)),
            );
            add_rate_limit_headers(headers, q, decision);
            return Ok(response);
        }

        match first_failure {
            Some(FailFirst::Drop) => return Err(ConnectionDropped),
            Some(FailFirst::Status(status)) => {
                return Ok(problem(status, "injected failure of a first call"))
            }
            None => {}
        }

        let draws = faults.next_draws();
        let mut response = match faults.early_fault(draws) {
            Some(EarlyFault::Drop) => return Err(ConnectionDropped),
            Some(EarlyFault::Error) => problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
            None if id.starts_with("missing") => error_json(StatusCode::NOT_FOUND, "not_found"),
            None => match faults.body_fault(draws) {
                None if faults.spec.etags => self.versioned_user(&id, req.headers()),
                fault => user_response(&id, fault, faults.oversized_bytes),
            },
        };
        if let Some((q, decision)) = quota {
            add_rate_limit_headers(response.headers_mut(), q, decision);
        }
        Ok(response)
    }

    /// The current version of user `id` with its `ETag` and `Last-Modified`, or `304`
    /// when the request's validators name that version.
    fn versioned_user(&self, id: &str, headers: &HeaderMap) -> Response<SimBody> {
        let version = self.user_version(id);
        let tag = format!("\"{:016x}-v{version}\"", crate::user::fnv1a(id.as_bytes()));
        let modified =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000 + version * 60);
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let matches = match text(IF_NONE_MATCH) {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == tag),
            None => text(IF_MODIFIED_SINCE)
                .and_then(|d| httpdate::parse_http_date(d).ok())
                .is_some_and(|since| since >= modified),
        };
        let mut response = if matches {
            let mut r = Response::new(SimBody::empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        } else {
            let mut user = user_json(id);
            if version > 1 {
                user["version"] = Value::from(version);
            }
            with_type(
                StatusCode::OK,
                APPLICATION_JSON,
                SimBody::full(to_bytes(&user)),
            )
        };
        let h = response.headers_mut();
        if let Ok(tag) = HeaderValue::try_from(tag) {
            h.insert(ETAG, tag);
        }
        if let Ok(date) = HeaderValue::try_from(httpdate::fmt_http_date(modified)) {
            h.insert(LAST_MODIFIED, date);
        }
        response
    }

    async fn control<B>(&self, req: Request<B>) -> Response<SimBody>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let allow = |methods: &'static str| {
            let mut response = error_json(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static(methods));
            response
        };
        let method = req.method().clone();
        match (req.uri().path(), method) {
            ("/_sim/stats", Method::GET) => json_response(StatusCode::OK, &self.stats()),
            ("/_sim/stats", _) => allow("GET"),
            ("/_sim/reset", Method::POST) => {
                self.reset_stats();
                let mut response = Response::new(SimBody::empty());
                *response.status_mut() = StatusCode::NO_CONTENT;
                response
            }
            ("/_sim/reset", _) => allow("POST"),
            ("/_sim/faults", Method::GET) => json_response(StatusCode::OK, &self.faults()),
            ("/_sim/faults", Method::PUT) => self.put_faults(req.into_body(), false).await,
            ("/_sim/faults", Method::PATCH) => self.put_faults(req.into_body(), true).await,
            ("/_sim/faults", _) => allow("GET, PUT, PATCH"),
            (path, method) => match path
                .strip_prefix("/_sim/users/")
                .and_then(|rest| rest.strip_suffix("/change"))
                .and_then(|id| percent_decode_str(id).decode_utf8().ok())
            {
                Some(id) if method == Method::POST && !id.is_empty() => {
                    let version = self.change_user(&id);
                    json_response(StatusCode::OK, &json!({ "id": id, "version": version }))
                }
                Some(_) => allow("POST"),
                None => error_json(StatusCode::NOT_FOUND, "not_found"),
            },
        }
    }

    async fn put_faults<B>(&self, body: B, patch: bool) -> Response<SimBody>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let invalid = |detail: String| {
            json_response(
                StatusCode::BAD_REQUEST,
                &json!({ "error": "invalid_faults", "detail": detail }),
            )
        };
        let bytes = match Limited::new(body, MAX_CONTROL_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => return invalid(format!("cannot read the body: {e}")),
        };
        let applied = if patch {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(value) => self.patch_faults(&value),
                Err(e) => return invalid(e.to_string()),
            }
        } else {
            match serde_json::from_slice::<Faults>(&bytes) {
                Ok(faults) => self.set_faults(faults),
                Err(e) => return invalid(e.to_string()),
            }
        };
        match applied {
            Ok(()) => json_response(StatusCode::OK, &self.faults()),
            Err(e) => invalid(e.to_string()),
        }
    }
}

/// `RateLimit-Policy` / `RateLimit` (IETF httpapi draft) and `X-RateLimit-*` headers.
fn add_rate_limit_headers(headers: &mut HeaderMap, quota: &Quota, decision: QuotaDecision) {
    let window = whole_seconds_at_least_one(quota.window);
    let reset = whole_seconds_at_least_one(decision.reset);
    let values = [
        (
            "ratelimit-policy",
            format!("\"default\";q={};w={window}", quota.limit),
        ),
        (
            "ratelimit",
            format!("\"default\";r={};t={reset}", decision.remaining),
        ),
        ("x-ratelimit-limit", quota.limit.to_string()),
        ("x-ratelimit-remaining", decision.remaining.to_string()),
        ("x-ratelimit-reset", reset.to_string()),
    ];
    for (name, value) in values {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}

fn with_type(status: StatusCode, content_type: HeaderValue, body: SimBody) -> Response<SimBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<SimBody> {
    match serde_json::to_vec(value) {
        Ok(body) => with_type(status, APPLICATION_JSON, SimBody::full(body)),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// `{"error": code}` as `application/json`.
fn error_json(status: StatusCode, code: &str) -> Response<SimBody> {
    let body = format!("{{\"error\":\"{code}\"}}");
    with_type(status, APPLICATION_JSON, SimBody::full(body))
}

/// An RFC 9457 problem body.
fn problem(status: StatusCode, detail: &str) -> Response<SimBody> {
    let body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    with_type(status, PROBLEM_JSON, SimBody::full(body.to_string()))
}

fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(value.to_string())
}

/// The `200` answer for `id`, spoiled by `fault` if any.
fn user_response(id: &str, fault: Option<BodyFault>, oversized_bytes: usize) -> Response<SimBody> {
    let ok = |body| with_type(StatusCode::OK, APPLICATION_JSON, body);
    let user = user_json(id);
    match fault {
        None => ok(SimBody::full(to_bytes(&user))),
        Some(BodyFault::Malformed) => {
            // A strict prefix of a JSON object is never valid JSON.
            let full = to_bytes(&user);
            ok(SimBody::full(full.slice(..full.len() / 2)))
        }
        Some(BodyFault::NotObject) => ok(SimBody::full(to_bytes(&json!([user])))),
        Some(BodyFault::WrongId) => {
            let mut other = user;
            other["id"] = Value::String(format!("{id}-other"));
            ok(SimBody::full(to_bytes(&other)))
        }
        Some(BodyFault::Oversized) => ok(SimBody::full(padded(&user, oversized_bytes))),
        Some(BodyFault::Trickle) => ok(SimBody::trickle(to_bytes(&user))),
        Some(BodyFault::Reset) => {
            let full = to_bytes(&user);
            let mut response = ok(SimBody::abort_after(full.slice(..full.len() / 2)));
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(full.len()));
            response
        }
    }
}

/// `user` with a `"padding"` string field, `size` bytes in all (or just over the
/// user's own size when `size` is smaller than that).
fn padded(user: &Value, size: usize) -> Bytes {
    let plain = user.to_string();
    // `plain` ends with `}`; replace it with `,"padding":"xxx…"}`.
    let head = plain.strip_suffix('}').unwrap_or(&plain);
    const FRAME: &str = ",\"padding\":\"\"}";
    let fill = size.saturating_sub(head.len() + FRAME.len());
    let mut out = BytesMut::with_capacity(head.len() + FRAME.len() + fill);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(b",\"padding\":\"");
    out.resize(out.len() + fill, b'x');
    out.extend_from_slice(b"\"}");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_user_has_the_exact_size_and_stays_valid() {
        let user = user_json("u1");
        let body = padded(&user, 10_000);
        assert_eq!(body.len(), 10_000);
        let parsed: Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(parsed["id"], "u1");
        assert_eq!(parsed["profile"], user["profile"]);
        let small = padded(&user, 1);
        assert!(serde_json::from_slice::<Value>(&small).is_ok());
    }

    #[test]
    fn error_bodies_are_json() {
        let response = error_json(StatusCode::NOT_FOUND, "not_found");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let response = problem(StatusCode::SERVICE_UNAVAILABLE, "down");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    }
}
