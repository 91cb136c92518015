//! `GET /v1/users/{id}` and `GET /v1/users?ids=…`.

use std::collections::HashSet;

use axum::body::Body;
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{RawPathParams, RawQuery, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{self, StreamExt};
use paragon_client::{Endpoint, Error, Fetched, InvalidUserId, User, UserId};

use crate::problem::Problem;
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
    user_response(state.stack().client.fetch_user_with_status(&id).await)
}

fn user_response(result: Result<Fetched<User>, Error>) -> Response {
    match result {
        Ok(fetched) => {
            let mut response = Response::new(Body::from(fetched.value.raw_json()));
            // Room for every header the answer gets on its way out (request id, CORS), so
            // the map is allocated once instead of growing and rehashing per answer.
            let h = response.headers_mut();
            h.reserve(12);
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
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
            response
        }
        Err(e) => problem_for(&e).into_response(),
    }
}

/// `GET /v1/users/` has an empty id.
pub async fn empty_id() -> Response {
    Problem::invalid_id(&InvalidUserId::Empty).into_response()
}

fn problem_for(e: &Error) -> Problem {
    let p = Problem::from_error(e);
    if p.status >= 500 {
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
pub async fn get_batch(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    request: axum::extract::Request,
) -> Response {
    let config = &state.0.config;
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
    let concurrency = config.upstream.max_concurrency.max(1);
    let max_bytes = config.server.max_batch_bytes;
    // In the order asked, so the answer holds users up to `max_batch_bytes` and the ids
    // past it get a `too-large` error; a body past the bound is dropped as it arrives,
    // so one batch holds at most the bound (and the bodies in flight) in memory.
    let mut results = stream::iter(ids.iter().cloned())
        .map(|id| {
            let client = state.stack().client.clone();
            async move { client.fetch_user(&id).await }
        })
        .buffered(concurrency);
    let mut users = BytesMut::with_capacity(256 * ids.len().min(64) + 32);
    let mut errors = BytesMut::new();
    let mut full = false;
    let mut i = 0;
    while let Some(result) = results.next().await {
        let key = serde_json::to_vec(ids[i].as_str()).unwrap_or_default();
        i += 1;
        let (out, value) = match result {
            Ok(user)
                if !full && users.len() + key.len() + user.raw_json().len() + 2 <= max_bytes =>
            {
                (&mut users, user.raw_json())
            }
            Ok(_) => {
                full = true;
                let p = Problem::too_large_for_batch(max_bytes);
                (
                    &mut errors,
                    Bytes::from(serde_json::to_vec(&p).unwrap_or_default()),
                )
            }
            Err(e) => (
                &mut errors,
                Bytes::from(serde_json::to_vec(&problem_for(&e)).unwrap_or_default()),
            ),
        };
        out.put_u8(if out.is_empty() { b'{' } else { b',' });
        out.put_slice(&key);
        out.put_u8(b':');
        out.put_slice(&value);
    }
    let mut body = BytesMut::with_capacity(users.len() + errors.len() + 32);
    body.put_slice(b"{\"users\":");
    close_object(&mut body, &users);
    body.put_slice(b",\"errors\":");
    close_object(&mut body, &errors);
    body.put_u8(b'}');
    let mut response = (StatusCode::OK, body.freeze()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn close_object(body: &mut BytesMut, members: &BytesMut) {
    if members.is_empty() {
        body.put_slice(b"{}");
    } else {
        body.put_slice(members);
        body.put_u8(b'}');
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
}
