//! `GET /v1/users/{id}` and `GET /v1/users?ids=…`.

use std::collections::HashSet;

use axum::body::Body;
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{RawPathParams, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use paragon_client::{
    CacheStatus, CallReport, Endpoint, Error, Fetched, InvalidUserId, Priority, User, UserId,
};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::problem::{insert_policy, Problem, RatePolicy};
use crate::server_timing::{self, Layers, SERVER_TIMING};
use crate::state::AppState;

/// `x-cache: HIT | MISS | STALE` (a static name: no parsing per answer).
pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// `x-upstream-attempts: N` on an answer fetched from ParagoN for this request (a miss):
/// the attempts its call took, retries and hedges included.
pub static X_UPSTREAM_ATTEMPTS: HeaderName = HeaderName::from_static("x-upstream-attempts");

/// One user, exactly as ParagoN sent it, with `x-cache`.
///
/// The id is read from the router's decoded captures as they are (`RawPathParams`), not
/// deserialized into a `String` first: `UserId::parse` makes the one copy it keeps.
#[utoipa::path(
    get,
    path = "/v1/users/{id}",
    tag = "users",
    params(
        ("id" = String, Path, description = "The user's id: 1–128 characters of `A–Z a–z 0–9 - _ . ~`, not `.` or `..`"),
        ("if-none-match" = Option<String>, Header, description = "An ETag of a previous answer: 304 when it is still current"),
        ("sec-purpose" = Option<String>, Header, description = "`prefetch` makes it a background call"),
    ),
    responses(
        (status = 200, description = "The user exactly as ParagoN sent it", body = crate::routes::docs::UserDoc, content_type = "application/json", headers(
            ("x-cache" = String, description = "HIT, MISS, STALE, UPDATING or REVALIDATED"),
            ("etag" = String, description = "Our strong ETag of the body"),
            ("cache-control" = String, description = "private, then server.browser_cache"),
        )),
        (status = 304, description = "Not modified: `If-None-Match` names the current ETag"),
        (status = 400, description = "Invalid id: 1–128 characters of `A–Z a–z 0–9 - _ . ~`, not `.` or `..`; nothing sent upstream", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "ParagoN says no such user", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The upstream budget is spent, ParagoN's 429 pause is in force, or this client is over its own limit", body = Problem, content_type = "application/problem+json", headers(("retry-after" = u64, description = "Whole seconds after which a retry may succeed"))),
        (status = 502, description = "Upstream failure or malformed answer", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Circuit open, or a local limit", body = Problem, content_type = "application/problem+json", headers(("retry-after" = u64, description = "Whole seconds after which a retry may succeed"))),
        (status = 504, description = "Upstream timeout, or the request's deadline ran out", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_user(
    State(state): State<AppState>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    request: axum::extract::Request,
) -> Response {
    let Ok(params) = params else {
        return Problem::bad_request("invalid-id", "the id is not valid UTF-8 once decoded")
            .into_response();
    };
    let raw = params.iter().next().map_or("", |(_, value)| value);
    let id = match UserId::parse(raw) {
        Ok(id) => id,
        Err(e) => return Problem::invalid_id(&e).into_response(),
    };
    let client = state.client_of(&request);
    if client.is_some() {
        let misses = u32::from(!state.is_cached(&Endpoint::GetUser(id.clone())));
        if let Err(p) = state.admit_client(client.as_deref(), 1, misses).await {
            return p.into_response();
        }
    }
    let priority = priority_of(request.headers());
    let report = CallReport::recording();
    let result = state
        .stack()
        .client
        .fetch_user_reporting(&id, priority, &report)
        .await;
    user_response(&state, result, request.headers(), &report)
}

/// A frontend's prefetch (`Sec-Purpose: prefetch`, or the older `Purpose: prefetch`) is a
/// background call; every other request is interactive.
pub fn priority_of(headers: &HeaderMap) -> Priority {
    let prefetch = [&SEC_PURPOSE, &PURPOSE].into_iter().any(|name| {
        headers.get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split([',', ';'])
                    .next()
                    .is_some_and(|first| first.trim().eq_ignore_ascii_case("prefetch"))
            })
        })
    });
    if prefetch {
        Priority::Background
    } else {
        Priority::Interactive
    }
}

/// `Sec-Purpose`, which browsers set on prefetches.
static SEC_PURPOSE: HeaderName = HeaderName::from_static("sec-purpose");
/// `Purpose`, the older name of `Sec-Purpose`.
static PURPOSE: HeaderName = HeaderName::from_static("purpose");

/// The user with `x-cache`, our `ETag` of its body, `Cache-Control` and
/// `Server-Timing`; `304` without a body when the request's `If-None-Match` names that
/// `ETag`.
fn user_response(
    state: &AppState,
    result: Result<Fetched<User>, Error>,
    request: &HeaderMap,
    report: &CallReport,
) -> Response {
    let layers = Layers::of(state);
    match result {
        Ok(fetched) => {
            let body = fetched.value.raw_json();
            let tag = etag(&body);
            let not_modified = if_none_match(request, &tag);
            let mut response = if not_modified {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::NOT_MODIFIED;
                r
            } else {
                Response::new(Body::from(body))
            };
            // Room for every header the answer gets on its way out (request id, CORS), so
            // the map is allocated once instead of growing and rehashing per answer.
            let h = response.headers_mut();
            h.reserve(12);
            if !not_modified {
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            h.insert(
                X_CACHE.clone(),
                HeaderValue::from_static(fetched.cache.as_str()),
            );
            if fetched.cache == paragon_layers::cache::CacheStatus::Miss {
                h.insert(
                    X_UPSTREAM_ATTEMPTS.clone(),
                    HeaderValue::from(fetched.attempts),
                );
            }
            if let Ok(tag) = HeaderValue::try_from(tag) {
                h.insert(header::ETAG, tag);
            }
            h.insert(header::CACHE_CONTROL, state.cache_control());
            // An answer from the cache's entry made no call: its report is not read.
            let call = match fetched.cache {
                CacheStatus::Hit | CacheStatus::Updating => None,
                _ => report.get(),
            };
            let attempts = (fetched.cache == CacheStatus::Miss).then_some(fetched.attempts);
            h.insert(
                SERVER_TIMING.clone(),
                server_timing::for_user(layers, Some(fetched.cache), attempts, call, None),
            );
            response
        }
        Err(e) => {
            let mut response = problem_for(state, &e).into_response();
            response.headers_mut().insert(
                SERVER_TIMING.clone(),
                server_timing::for_user(layers, None, None, report.get(), Some(&e)),
            );
            response
        }
    }
}

/// Our strong `ETag` of a body: a 64-bit hash of its bytes, the same on every instance
/// of one build (a fixed seed), so a browser's tag is recognised across a fleet.
///
/// Written digit by digit: `format!` cost ~2,000 instructions of every cache hit.
pub fn etag(body: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hash = etag_hash(body);
    let mut tag = String::with_capacity(18);
    tag.push('"');
    for nibble in (0..16).rev() {
        tag.push(char::from(HEX[((hash >> (nibble * 4)) & 0xf) as usize]));
    }
    tag.push('"');
    tag
}

fn etag_hash(body: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x7061_7261_676f_6e21).hash_one(body)
}

/// Whether `If-None-Match` names `tag` (or is `*`), by the weak comparison RFC 9110
/// prescribes for it (a `W/` prefix is ignored).
pub fn if_none_match(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == tag)
}

/// `GET /v1/users/` has an empty id.
pub async fn empty_id() -> Response {
    Problem::invalid_id(&InvalidUserId::Empty).into_response()
}

/// The problem answering `e`; a `429` describes the edge's upstream budget in its
/// `RateLimit` headers.
fn problem_for(state: &AppState, e: &Error) -> Problem {
    let p = Problem::from_error(e).with_policy(state.upstream_policy());
    // A request the open breaker refuses is not news: the breaker's opening was logged
    // once, as a warning.
    if matches!(e, Error::CircuitOpen(_)) {
        tracing::debug!(error = %e, kind = e.kind(), status = p.status, "ParagoN call refused");
    } else if p.status >= 500 {
        tracing::warn!(error = %e, kind = e.kind(), status = p.status, "ParagoN call failed");
    }
    p
}

/// The ids of a batch request: `ids` given once, comma-separated, each valid, at most
/// `max` of them; duplicates are kept once, in first-seen order.
pub fn parse_batch(query: Option<&str>, max: usize) -> Result<Vec<UserId>, Problem> {
    let mut ids_param = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if key == "ids" {
            if ids_param.is_some() {
                return Err(Problem::bad_request(
                    "invalid-batch",
                    "give `ids` once, as a comma-separated list",
                ));
            }
            ids_param = Some(value);
        }
    }
    let Some(list) = ids_param else {
        return Err(Problem::bad_request(
            "invalid-batch",
            "the `ids` query parameter is required, e.g. ?ids=a,b,c",
        ));
    };
    if list.is_empty() {
        return Err(Problem::bad_request("invalid-batch", "`ids` is empty"));
    }
    let parts: Vec<&str> = list.split(',').collect();
    if parts.len() > max {
        return Err(Problem::bad_request(
            "too-many-ids",
            format!(
                "{} ids given; at most {max} are allowed per request",
                parts.len()
            ),
        ));
    }
    let mut seen = HashSet::with_capacity(parts.len());
    let mut ids = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let id = UserId::parse(part).map_err(|e| {
            Problem::bad_request("invalid-id", format!("id number {} is invalid: {e}", i + 1))
        })?;
        if seen.insert(id.clone()) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Many users at once: `{"users": {id: user}, "errors": {id: problem}}`.
#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "users",
    params(
        ("ids" = String, Query, description = "Comma-separated ids, at most `server.max_batch_ids`; duplicates are fetched once"),
    ),
    responses(
        (status = 200, description = "The users found and a problem for each id that failed", body = crate::routes::docs::BatchDoc, content_type = "application/json"),
        (status = 400, description = "No `ids`, too many ids, or an invalid id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No id succeeded and every id was not found (same body shape)", body = crate::routes::docs::BatchDoc, content_type = "application/json"),
        (status = 429, description = "No id succeeded and every id was refused by a rate limit (same body shape)", body = crate::routes::docs::BatchDoc, content_type = "application/json", headers(("retry-after" = u64, description = "Whole seconds after which a retry may succeed"))),
        (status = 502, description = "No id succeeded and every id met an upstream failure (same body shape)", body = crate::routes::docs::BatchDoc, content_type = "application/json"),
        (status = 503, description = "No id succeeded and every id met an open circuit or a local limit (same body shape)", body = crate::routes::docs::BatchDoc, content_type = "application/json", headers(("retry-after" = u64, description = "Whole seconds after which a retry may succeed"))),
        (status = 504, description = "No id succeeded and every id timed out (same body shape)", body = crate::routes::docs::BatchDoc, content_type = "application/json"),
    )
)]
pub async fn get_batch(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    request: axum::extract::Request,
) -> Response {
    let config = state.config();
    let ids = match parse_batch(query.as_deref(), config.server.max_batch_ids) {
        Ok(ids) => ids,
        Err(p) => return p.into_response(),
    };
    let client = state.client_of(&request);
    if client.is_some() {
        let misses = ids
            .iter()
            .filter(|id| !state.is_cached(&Endpoint::GetUser((*id).clone())))
            .count();
        let misses = u32::try_from(misses).unwrap_or(u32::MAX);
        if let Err(p) = state
            .admit_client(client.as_deref(), misses.saturating_add(1), misses)
            .await
        {
            return p.into_response();
        }
    }
    let priority = priority_of(request.headers());
    let concurrency = config.upstream.max_concurrency.max(1);
    let max_bytes = config.server.max_batch_bytes;
    // In the order asked, so the answer holds users up to `max_batch_bytes` and the ids
    // past it get a `too-large` error; a body past the bound is dropped as it arrives,
    // so one batch holds at most the bound (and the bodies in flight) in memory.
    let mut results = stream::iter(ids.iter().cloned())
        .map(|id| {
            let client = state.stack().client.clone();
            async move {
                let report = CallReport::recording();
                let result = client.fetch_user_reporting(&id, priority, &report).await;
                (result, report)
            }
        })
        .buffered(concurrency);
    let mut users: Vec<(&str, Box<RawValue>)> = Vec::with_capacity(ids.len());
    let mut errors: Vec<(&str, Problem)> = Vec::new();
    let mut held = 0;
    let mut full = false;
    let mut outcome = BatchOutcome::default();
    let mut next_id = ids.iter();
    let mut timing = server_timing::Batch::default();
    while let Some((result, report)) = results.next().await {
        let Some(id) = next_id.next() else { break };
        let id = id.as_str();
        match &result {
            Ok(fetched) => {
                let call = match fetched.cache {
                    CacheStatus::Hit | CacheStatus::Updating => None,
                    _ => report.get(),
                };
                timing.add(Some(fetched.cache), call, None);
            }
            Err(e) => timing.add(None, report.get(), Some(e)),
        }
        let p = match result.map(|fetched| fetched.value) {
            Ok(user) if !full && held + id.len() + user.raw_json().len() + 4 <= max_bytes => {
                // ParagoN's bytes as they are: checked JSON since they arrived.
                match serde_json::from_slice::<&RawValue>(&user.raw_json()) {
                    Ok(raw) => {
                        held += id.len() + raw.get().len() + 4;
                        outcome.succeeded = true;
                        users.push((id, raw.to_owned()));
                        continue;
                    }
                    Err(e) => Problem::from_error(&Error::Transport(format!("a user body: {e}"))),
                }
            }
            Ok(_) => {
                full = true;
                Problem::too_large_for_batch(max_bytes)
            }
            Err(e) => problem_for(&state, &e),
        };
        outcome.failed(&p);
        errors.push((id, p));
    }
    let body = serde_json::to_vec(&BatchBody {
        users: Members(&users),
        errors: Members(&errors),
    })
    .unwrap_or_default();
    let (status, retry_after) = outcome.status();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(SERVER_TIMING.clone(), timing.value(Layers::of(&state)));
    if let Some(secs) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        if status == StatusCode::TOO_MANY_REQUESTS {
            if let Some(policy) = outcome.policy {
                insert_policy(headers, &policy, secs);
            }
        }
    }
    response
}

/// What the ids of a batch ended in, for the status of the whole answer: `200` when any
/// id succeeded (or errors differ), else the one status every id failed with.
#[derive(Default)]
struct BatchOutcome {
    /// Some id was answered with its user.
    succeeded: bool,
    /// The status every failed id shares, `Err(())` once two differ.
    status: Option<Result<u16, ()>>,
    /// The smallest `Retry-After` of the failed ids.
    retry_after: Option<u64>,
    /// The budget a `429` describes.
    policy: Option<RatePolicy>,
}

impl BatchOutcome {
    fn failed(&mut self, p: &Problem) {
        self.status = match self.status {
            None => Some(Ok(p.status)),
            Some(Ok(s)) if s == p.status => Some(Ok(s)),
            Some(_) => Some(Err(())),
        };
        if let Some(secs) = p.retry_after {
            self.retry_after = Some(self.retry_after.map_or(secs, |r| r.min(secs)));
        }
        self.policy = self.policy.or(p.policy);
    }

    /// The status of the answer, and its `Retry-After` (for a `429` or `503`).
    fn status(&self) -> (StatusCode, Option<u64>) {
        match self.status {
            Some(Ok(s)) if !self.succeeded => {
                let status = StatusCode::from_u16(s).unwrap_or(StatusCode::OK);
                let retry = matches!(s, 429 | 503).then_some(self.retry_after).flatten();
                (status, retry)
            }
            _ => (StatusCode::OK, None),
        }
    }
}

/// A batch answer: `{"users": {id: user}, "errors": {id: problem}}`, in the order asked.
#[derive(Serialize)]
struct BatchBody<'a> {
    users: Members<'a, Box<RawValue>>,
    errors: Members<'a, Problem>,
}

/// Pairs written as a JSON object, in their order.
struct Members<'a, T>(&'a [(&'a str, T)]);

impl<T: Serialize> Serialize for Members<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_parsing() {
        let ids = parse_batch(Some("ids=a,b,a,c"), 10).unwrap();
        assert_eq!(
            ids.iter().map(|i| i.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        for bad in [
            None,
            Some(""),
            Some("ids="),
            Some("ids=a,,b"),
            Some("ids=a%2Fb"),
            Some("ids=a&ids=b"),
            Some("ids=a,.."),
        ] {
            assert_eq!(parse_batch(bad, 10).unwrap_err().status, 400, "{bad:?}");
        }
        assert_eq!(parse_batch(Some("ids=a,b,c"), 2).unwrap_err().status, 400);
        assert!(parse_batch(Some("ids=a,b"), 2).is_ok());
    }

    fn problem(status: StatusCode, retry: Option<u64>) -> Problem {
        let mut p = Problem::new(status, "x", "X", "x");
        p.retry_after = retry;
        p
    }

    #[test]
    fn if_none_match_compares_weakly_and_accepts_lists_and_any() {
        let tag = etag(b"{}");
        assert_eq!(tag.len(), 18);
        for body in [&b"{}"[..], b"{\"id\":\"u1\"}", b""] {
            assert_eq!(etag(body), format!("\"{:016x}\"", etag_hash(body)));
        }
        assert_eq!(tag, etag(b"{}"), "stable");
        assert_ne!(tag, etag(b"{ }"));
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
            if_none_match(&h, &tag)
        };
        assert!(with(&tag));
        assert!(with(&format!("W/{tag}")));
        assert!(with(&format!("\"x\", {tag}")));
        assert!(with("*"));
        assert!(!with("\"x\""));
        assert!(!if_none_match(&HeaderMap::new(), &tag));
    }

    #[test]
    fn prefetches_are_background_calls() {
        let with = |name: &'static str, v: &str| {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_str(v).unwrap());
            priority_of(&h)
        };
        assert_eq!(with("sec-purpose", "prefetch"), Priority::Background);
        assert_eq!(
            with("sec-purpose", "prefetch;prerender"),
            Priority::Background
        );
        assert_eq!(with("purpose", "Prefetch"), Priority::Background);
        assert_eq!(with("sec-purpose", "prerender"), Priority::Interactive);
        assert_eq!(priority_of(&HeaderMap::new()), Priority::Interactive);
    }

    #[test]
    fn a_batch_takes_the_status_its_ids_share_only_when_none_succeeded() {
        let too_many = StatusCode::TOO_MANY_REQUESTS;
        let mut all_429 = BatchOutcome::default();
        all_429.failed(&problem(too_many, Some(7)));
        all_429.failed(&problem(too_many, Some(3)));
        assert_eq!(all_429.status(), (too_many, Some(3)));

        let mut with_a_user = BatchOutcome::default();
        with_a_user.failed(&problem(too_many, Some(3)));
        with_a_user.succeeded = true;
        assert_eq!(with_a_user.status(), (StatusCode::OK, None));

        let mut mixed = BatchOutcome::default();
        mixed.failed(&problem(too_many, Some(3)));
        mixed.failed(&problem(StatusCode::SERVICE_UNAVAILABLE, Some(1)));
        assert_eq!(mixed.status(), (StatusCode::OK, None));

        let mut all_404 = BatchOutcome::default();
        all_404.failed(&problem(StatusCode::NOT_FOUND, None));
        all_404.failed(&problem(StatusCode::NOT_FOUND, None));
        assert_eq!(all_404.status(), (StatusCode::NOT_FOUND, None));

        let mut all_502 = BatchOutcome::default();
        all_502.failed(&problem(StatusCode::BAD_GATEWAY, Some(9)));
        assert_eq!(all_502.status(), (StatusCode::BAD_GATEWAY, None));

        assert_eq!(BatchOutcome::default().status(), (StatusCode::OK, None));
    }
}
