//! `/admin/status` and the operator actions.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use paragon_client::{Endpoint, UserId};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::problem::Problem;
use crate::state::AppState;

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The live state of every layer.
#[utoipa::path(get, path = "/admin/status", tag = "admin",
    responses((status = 200, description = "Each layer's live state: breaker state, counts and recent transitions, cache size, bytes and hit ratio, limiter budget and ParagoN's advertised quota, retry budget, upstream latency p50/p99, answers by status, connections, Redis reachability", body = Object, content_type = "application/json")))]
pub async fn status(State(state): State<AppState>) -> Response {
    let s = state.stack();
    let config = state.config();
    let cache = match &s.cache {
        Some(c) => {
            let st = c.stats();
            json!({
                "enabled": true,
                "backend": config.cache.backend,
                "entries": st.entries,
                "max_entries": config.cache.max_entries,
                "bytes": st.bytes,
                "max_bytes": config.cache.max_bytes,
                "hits": st.hits,
                "misses": st.misses,
                "stale": st.stale,
                "hit_ratio": st.hit_ratio(),
            })
        }
        None => json!({ "enabled": false }),
    };
    let limiter = match &s.limiter {
        Some(l) => {
            let st = l.stats();
            let budget = l.budget().await;
            let cfg = l.config();
            json!({
                "enabled": true,
                "backend": config.rate_limit.backend,
                "max_requests": cfg.max_requests.get(),
                "window_ms": millis(cfg.window),
                "burst": cfg.burst.get(),
                "available": budget.available,
                "paused_for_ms": millis(budget.paused_for),
                "max_pause_ms": millis(cfg.max_pause),
                "admitted": st.admitted,
                "rejected_budget": st.rejected_budget,
                "rejected_pause": st.rejected_pause,
                "rejected_quota": st.rejected_quota,
                "rejected_background": st.rejected_background,
                "upstream_429": st.upstream_429,
                "follow_upstream": cfg.follow_upstream,
                "background_reserve": cfg.background_reserve,
                "upstream_quota": l.upstream_quota().map(|(remaining, reset)| json!({
                    "remaining": remaining,
                    "reset_in_ms": millis(reset),
                })),
            })
        }
        None => json!({ "enabled": false }),
    };
    let breaker = match &s.breaker {
        Some(b) => {
            let st = b.stats();
            json!({
                "enabled": true,
                "state": st.state.as_str(),
                "consecutive_failures": st.consecutive_failures,
                "window_calls": st.window.calls,
                "window_failures": st.window.failures,
                "successes": st.successes,
                "failures": st.failures,
                "rejected": st.rejected,
                "transitions": st.transitions,
                "half_open_in_ms": st.open_for.map(millis),
                "recent_transitions": state.metrics().recent_transitions().iter().map(|r| json!({
                    "from": r.transition.from.as_str(),
                    "to": r.transition.to.as_str(),
                    "ago_ms": millis(r.ago),
                })).collect::<Vec<_>>(),
            })
        }
        None => json!({ "enabled": false }),
    };
    let retry = {
        let st = s.retry.stats();
        let cfg = s.retry.config();
        json!({
            "enabled": config.retry.enabled,
            "budget_left": s.retry.budget_left(),
            "max_attempts": cfg.max_attempts.get(),
            "hedge_after_ms": cfg.hedge_after.map(millis),
            "deadline_ms": millis(cfg.deadline),
            "first_attempts": st.firsts,
            "retries": st.retries,
            "hedges": st.hedges,
            "budget_exhausted": st.budget_exhausted,
            "deadline_exceeded": st.deadline_exceeded,
            "attempts_in_flight": st.in_flight,
            "retries_waiting": st.waiting,
        })
    };
    let redis = match &s.redis {
        Some(link) => json!({
            "enabled": true,
            "mode": link.mode(),
            "reachable": link.is_up(),
            "reason": link.reason(),
            "instances": link.instances(),
            "fallback_instances": link.fallback_instances(),
            "key_prefix": link.prefix(),
        }),
        None => json!({ "enabled": false }),
    };
    let (open, max) = state.metrics().connections();
    let (closed_header_timeout, closed_idle_timeout) = state.metrics().connections_closed();
    Json(json!({
        "ready": state.is_ready(),
        "connections": {
            "open": open,
            "max": max,
            "closed_header_timeout": closed_header_timeout,
            "closed_idle_timeout": closed_idle_timeout,
        },
        "redis": redis,
        "upstream": {
            "base_url": state.0.upstream,
            "embedded_simulator": state.0.embedded,
            "in_flight": state.metrics().upstream_in_flight(),
            "calls": state.metrics().upstream_calls(),
            "latency_ms": state.metrics().upstream_latency().map(|q| json!({
                "p50": q.p50.as_secs_f64() * 1000.0,
                "p99": q.p99.as_secs_f64() * 1000.0,
                "samples": q.samples,
                "window_ms": millis(crate::metrics::LATENCY_WINDOW),
            })),
        },
        "answers": {
            "total": state.metrics().answers_total(),
            "by_status": {
                "429": state.metrics().answers(429),
                "502": state.metrics().answers(502),
                "503": state.metrics().answers(503),
                "504": state.metrics().answers(504),
            },
        },
        "cache": cache,
        "rate_limit": limiter,
        "circuit_breaker": breaker,
        "retry": retry,
    }))
    .into_response()
}

/// Admin actions exist only with `server.admin_token` set, and need it as a bearer token.
pub(crate) fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let config = state.config();
    let token = &config.server.admin_token;
    if token.is_empty() {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "no-route",
            "Not found",
            "admin actions are not enabled",
        )
        .into_response()
        .into());
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110 §11.1).
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim_start())
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
        Ok(())
    } else {
        let mut r = Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "a valid admin bearer token is required",
        )
        .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Err(Box::new(r))
    }
}

/// `POST /admin/circuit-breaker/{open,close,reset}`.
#[utoipa::path(post, path = "/admin/circuit-breaker/{action}", tag = "admin",
    params(("action" = crate::routes::docs::BreakerAction, Path, description = "open, close or reset")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The breaker's state now", body = crate::routes::docs::BreakerForcedDoc, content_type = "application/json"),
        (status = 401, description = "No valid `Authorization: Bearer <server.admin_token>`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Admin actions are off: `server.admin_token` is not set", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The circuit breaker is not enabled", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn breaker(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(action): Path<String>,
) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return *r;
    }
    let Some(b) = &state.stack().breaker else {
        return Problem::new(
            StatusCode::CONFLICT,
            "breaker-disabled",
            "Conflict",
            "the circuit breaker is not enabled",
        )
        .into_response();
    };
    match action.as_str() {
        "open" => b.force_open(),
        "close" => b.close(),
        "reset" => b.reset(),
        _ => {
            return Problem::no_route(&format!("/admin/circuit-breaker/{action}")).into_response();
        }
    }
    tracing::warn!(
        action = action.as_str(),
        "circuit breaker forced by an operator"
    );
    Json(json!({ "state": b.state().as_str() })).into_response()
}

/// `POST /admin/rate-limit/resume`: ends ParagoN's 429 pause now, fleet-wide in Redis mode.
#[utoipa::path(post, path = "/admin/rate-limit/resume", tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "ParagoN's 429 pause is ended (`resumed`, and `paused_for_ms` it had left)", body = Object, content_type = "application/json"),
        (status = 401, description = "No valid `Authorization: Bearer <server.admin_token>`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Admin actions are off: `server.admin_token` is not set", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The rate limiter is not enabled", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Ended on this instance only: Redis could not be reached", body = Problem, content_type = "application/problem+json", headers(("retry-after" = u64, description = "Whole seconds after which a retry may succeed"))),
    ))]
pub async fn resume(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return *r;
    }
    let Some(limiter) = &state.stack().limiter else {
        return Problem::new(
            StatusCode::CONFLICT,
            "rate-limit-disabled",
            "Conflict",
            "the rate limiter is not enabled",
        )
        .into_response();
    };
    let paused_for = limiter.budget().await.paused_for;
    if !limiter.resume().await {
        tracing::error!(
            "rate-limit pause ended here, but Redis could not be reached to end it fleet-wide"
        );
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "redis-unreachable",
            "Redis unreachable",
            "the pause is ended on this instance only: Redis could not be reached to end it for the fleet",
        )
        .retry_after(std::time::Duration::from_secs(1))
        .into_response();
    }
    tracing::warn!(
        paused_for_ms = millis(paused_for),
        "ParagoN's rate-limit pause ended by an operator"
    );
    Json(json!({ "resumed": true, "paused_for_ms": millis(paused_for) })).into_response()
}

/// `POST /admin/cache/purge` (everything) or `?id=` (one user).
#[utoipa::path(post, path = "/admin/cache/purge", tag = "admin",
    params(("id" = Option<String>, Query, description = "Purge only this user; absent: everything")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Entries purged (`purged`, `local`, and `shared` with a Redis tier)", body = Object, content_type = "application/json"),
        (status = 400, description = "Invalid id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid `Authorization: Bearer <server.admin_token>`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Admin actions are off: `server.admin_token` is not set", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The cache is not enabled", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Purged locally only: Redis could not be reached", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn purge(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(r) = authorize(&state, &headers) {
        return *r;
    }
    let Some(cache) = &state.stack().cache else {
        return Problem::new(
            StatusCode::CONFLICT,
            "cache-disabled",
            "Conflict",
            "the cache is not enabled",
        )
        .into_response();
    };
    let id = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v.into_owned());
    let purged = match id {
        None => {
            let purged = cache.purge_all().await;
            tracing::warn!(
                local = purged.local,
                shared = ?purged.shared,
                "cache purged by an operator"
            );
            purged
        }
        Some(raw) => match UserId::parse(&raw) {
            Ok(id) => cache.purge(&Endpoint::GetUser(id)).await,
            Err(e) => return Problem::invalid_id(&e).into_response(),
        },
    };
    // The answer counts what was removed: this instance's entries, and the shared tier's.
    match purged.shared {
        None => Json(json!({ "purged": purged.local, "local": purged.local })).into_response(),
        Some(Ok(shared)) => Json(json!({
            "purged": purged.local as u64 + shared,
            "local": purged.local,
            "shared": shared,
        }))
        .into_response(),
        Some(Err(e)) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "purge-incomplete",
            "Purge incomplete",
            format!(
                "this instance's {} entries were removed, but the shared tier could not be purged: {e}",
                purged.local
            ),
        )
        .into_response(),
    }
}
