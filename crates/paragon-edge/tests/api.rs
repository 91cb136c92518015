//! End-to-end tests of the HTTP API of `paragon-edge` (CONTRACT §6): users, batch,
//! errors, request ids, CORS and health, over real sockets in front of `paragon-sim`.

mod common;

use common::{assert_problem, raw_get, sim_bytes, start_edge};
use reqwest::Method;

#[tokio::test]
async fn user_is_served_byte_equal_then_from_the_cache() {
    let edge = start_edge("").await;
    let expected = sim_bytes("u1").await;

    let first = edge.get("/v1/users/u1").await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(
        first.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(first.header("x-cache").as_deref(), Some("MISS"));
    assert_eq!(first.body, expected, "the user exactly as ParagoN sent it");
    // Fields beyond id/name/email reach the caller.
    let user = first.json();
    for field in [
        "id",
        "name",
        "email",
        "plan",
        "created_at",
        "tags",
        "profile",
    ] {
        assert!(user.get(field).is_some(), "{field} missing from {user}");
    }
    assert_eq!(user, paragon_sim::user_json("u1"));
    assert_eq!(edge.served("u1"), 1);

    let second = edge.get("/v1/users/u1").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-cache").as_deref(), Some("HIT"));
    assert_eq!(second.body, expected);
    assert_eq!(edge.served("u1"), 1, "a hit does not reach ParagoN");
}

#[tokio::test]
async fn invalid_ids_are_400_and_nothing_reaches_the_upstream() {
    let edge = start_edge("").await;
    let too_long = format!("/v1/users/{}", "a".repeat(129));
    let paths = [
        "/v1/users/a%20b",
        "/v1/users/a%2Fb",
        "/v1/users/%2F",
        "/v1/users/..",
        "/v1/users/.",
        "/v1/users/%2E%2E",
        "/v1/users/",
        "/v1/users/caf%C3%A9",
        "/v1/users/a%00b",
        "/v1/users/a%3Fb",
        too_long.as_str(),
    ];
    for path in paths {
        let r = raw_get(edge.addr, path).await;
        assert_problem(&r, 400);
        assert!(r.header("x-request-id").is_some(), "{path}: no request id");
        // Through a real client too, where it does not rewrite the path.
        if !path.contains("..") && !path.contains("%2E") && !path.ends_with("/.") {
            let r = edge.get(path).await;
            assert_problem(&r, 400);
        }
    }
    assert_eq!(edge.served_total(), 0, "an invalid id never goes upstream");

    // The boundary: 128 characters of the allowed alphabet are fine.
    let longest = format!("A-z_0.~{}", "x".repeat(121));
    assert_eq!(longest.len(), 128);
    let r = edge.get(&format!("/v1/users/{longest}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], longest.as_str());
    assert_eq!(edge.served(&longest), 1);
}

#[tokio::test]
async fn unknown_user_is_a_404_problem() {
    let edge = start_edge("").await;
    let r = edge.get("/v1/users/missing1").await;
    assert_problem(&r, 404);
    assert!(r.header("x-cache").is_none());
    assert_eq!(edge.served("missing1"), 1);
    // negative_ttl is 0 by default: a 404 is not cached.
    let r = edge.get("/v1/users/missing1").await;
    assert_problem(&r, 404);
    assert_eq!(edge.served("missing1"), 2);
}

#[tokio::test]
async fn request_id_is_echoed_or_generated() {
    let edge = start_edge("").await;
    let r = edge
        .get_with("/v1/users/u1", &[("x-request-id", "req-abc-123")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id").as_deref(), Some("req-abc-123"));

    let r = edge
        .get_with("/v1/users/a%20b", &[("x-request-id", "req-bad-id-7")])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-request-id").as_deref(), Some("req-bad-id-7"));

    let a = edge.get("/v1/users/u1").await;
    let b = edge.get("/healthz").await;
    let c = edge.get("/v1/users/missing2").await;
    let ids: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|r| r.header("x-request-id").expect("a generated request id"))
        .collect();
    assert!(ids.iter().all(|i| !i.is_empty()), "{ids:?}");
    assert_ne!(ids[0], ids[1]);
    assert_ne!(ids[1], ids[2]);
    assert_ne!(ids[0], ids[2]);
}

#[tokio::test]
async fn batch_with_a_partial_failure() {
    let edge = start_edge("").await;
    let expected = sim_bytes("u1").await;
    let r = edge.get("/v1/users?ids=u1,missing1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let body = r.json();
    let users = body["users"].as_object().expect("users object");
    let errors = body["errors"].as_object().expect("errors object");
    assert_eq!(users.len(), 1, "{body}");
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(users["u1"], paragon_sim::user_json("u1"));
    // The user's bytes are embedded as ParagoN sent them.
    let raw = r.body.as_ref();
    assert!(
        raw.windows(expected.len()).any(|w| w == expected.as_ref()),
        "the batch does not hold u1 verbatim: {}",
        r.text()
    );
    let p = &errors["missing1"];
    assert_eq!(p["status"], 404, "{p}");
    for field in ["type", "title", "detail"] {
        assert!(p[field].as_str().is_some_and(|s| !s.is_empty()), "{p}");
    }
    assert_eq!(edge.served("u1"), 1);
    assert_eq!(edge.served("missing1"), 1);

    // The batch filled the cache for the single-user route.
    let r = edge.get("/v1/users/u1").await;
    assert_eq!(r.header("x-cache").as_deref(), Some("HIT"));
}

#[tokio::test]
async fn batch_duplicates_are_fetched_once() {
    let edge = start_edge("").await;
    let r = edge.get("/v1/users?ids=u2,u2,u3,u2,u3").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let users = body["users"].as_object().expect("users");
    assert_eq!(users.len(), 2, "{body}");
    assert_eq!(users["u2"], paragon_sim::user_json("u2"));
    assert_eq!(users["u3"], paragon_sim::user_json("u3"));
    assert!(body["errors"].as_object().expect("errors").is_empty());
    assert_eq!(edge.served("u2"), 1);
    assert_eq!(edge.served("u3"), 1);
    assert_eq!(edge.served_total(), 2);
}

#[tokio::test]
async fn rejected_batches_send_nothing_upstream() {
    let edge = start_edge("[server]\nmax_batch_ids = 3").await;
    for path in [
        "/v1/users?ids=u1,u2,u3,u4",
        "/v1/users?ids=u5,a%20b",
        "/v1/users?ids=u5,..",
        "/v1/users?ids=u5,a%2Fb",
        &format!("/v1/users?ids=u5,{}", "b".repeat(129)),
        "/v1/users?ids=",
        "/v1/users?ids=u5,,u6",
        "/v1/users",
        "/v1/users?ids=u5&ids=u6",
    ] {
        let r = edge.get(path).await;
        assert_problem(&r, 400);
    }
    assert_eq!(edge.served_total(), 0, "a rejected batch sends nothing");

    // At the limit it is served.
    let r = edge.get("/v1/users?ids=u1,u2,u3").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["users"].as_object().expect("users").len(), 3);
    assert_eq!(edge.served_total(), 3);
}

#[tokio::test]
async fn cors_follows_the_configured_origins() {
    let edge = start_edge("[server]\ncors_allowed_origins = [\"http://localhost:3000\"]").await;
    let preflight = |origin: &'static str| {
        let edge = &edge;
        async move {
            edge.request(
                Method::OPTIONS,
                "/v1/users/u1",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "GET"),
                    ("access-control-request-headers", "x-request-id"),
                ],
            )
            .await
        }
    };

    let ok = preflight("http://localhost:3000").await;
    assert!((200..300).contains(&ok.status), "preflight: {}", ok.status);
    assert_eq!(
        ok.header("access-control-allow-origin").as_deref(),
        Some("http://localhost:3000")
    );
    let methods = ok
        .header("access-control-allow-methods")
        .expect("allowed methods");
    assert!(methods.contains("GET"), "{methods}");

    let other = preflight("http://evil.example").await;
    assert!(
        other.header("access-control-allow-origin").is_none(),
        "another origin is not allowed: {:?}",
        other.headers
    );
    assert_eq!(edge.served_total(), 0, "a preflight never goes upstream");

    let r = edge
        .get_with("/v1/users/u1", &[("origin", "http://localhost:3000")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("http://localhost:3000")
    );
    let exposed = r
        .header("access-control-expose-headers")
        .expect("exposed headers")
        .to_ascii_lowercase();
    assert!(exposed.contains("x-cache"), "{exposed}");
    let r = edge
        .get_with("/v1/users/u1", &[("origin", "http://evil.example")])
        .await;
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
}

/// With CORS off, a browser's preflight gets no CORS headers, and a 405 that says how to
/// turn CORS on.
#[tokio::test]
async fn no_cors_headers_without_configured_origins() {
    let edge = start_edge("").await;
    let r = edge
        .request(
            Method::OPTIONS,
            "/v1/users/u1",
            &[
                ("origin", "http://localhost:3000"),
                ("access-control-request-method", "GET"),
            ],
        )
        .await;
    assert!(r.header("access-control-allow-origin").is_none());
    assert_eq!(r.status, 405);
    let detail = r.json()["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains("server.cors_allowed_origins"), "{detail}");

    // Another method that does not exist is refused without the hint.
    let put = edge.request(Method::PUT, "/v1/users/u1", &[]).await;
    assert_eq!(put.status, 405);
    assert!(!put.text().contains("cors"), "{}", put.text());
}

#[tokio::test]
async fn health_and_readiness_while_serving() {
    let edge = start_edge("").await;
    let r = edge.get("/healthz").await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-request-id").is_some());
    let r = edge.get("/readyz").await;
    assert_eq!(r.status, 200);
    assert_eq!(edge.served_total(), 0);

    let r = edge.get("/no/such/route").await;
    assert_problem(&r, 404);
}
