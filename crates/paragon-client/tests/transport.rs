//! The real `HttpTransport` against a real HTTP server on 127.0.0.1: every error kind,
//! the bearer key, and byte-exact bodies.

#![allow(
    clippy::disallowed_methods,
    reason = "tests time real sockets and servers"
)]

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use paragon_client::{
    Error, HttpTransport, ParagonClient, ParagonRequest, Resource, Secret, User, UserDecodeError,
    UserId,
};
use tower::ServiceExt;

fn id(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

async fn fetch(t: &HttpTransport, user: &str) -> Result<User, Error> {
    ParagonClient::new(t.clone()).fetch_user(&id(user)).await
}

#[tokio::test]
async fn a_user_is_fetched_from_its_path_with_the_bearer_key() {
    let server = serve(|_| json_ok(r#"{"id":"u-42","name":"Ann"}"#)).await;
    let t = transport(&server.url, |c| c.api_key = Secret::new("sk-test-123"));
    let user = fetch(&t, "u-42").await.unwrap();
    assert_eq!(user.name().as_deref(), Some("Ann"));
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/users/u-42")
    );
    assert_eq!(
        seen[0].headers.get("authorization").map(String::as_str),
        Some("Bearer sk-test-123")
    );
}

#[tokio::test]
async fn no_authorization_header_is_sent_without_a_key() {
    let server = serve(|_| json_ok(r#"{"id":"u1"}"#)).await;
    let t = transport(&server.url, |_| {});
    fetch(&t, "u1").await.unwrap();
    assert!(!server.requests()[0].headers.contains_key("authorization"));
}

#[tokio::test]
async fn a_base_url_with_a_path_keeps_its_path() {
    let server = serve(|_| json_ok(r#"{"id":"a.b~c_d-e"}"#)).await;
    let base = server.url.join("api/v2/").unwrap();
    let t = transport(&base, |_| {});
    fetch(&t, "a.b~c_d-e").await.unwrap();
    assert_eq!(server.requests()[0].path, "/api/v2/users/a.b~c_d-e");
}

#[tokio::test]
async fn unknown_fields_and_the_exact_bytes_are_preserved() {
    const BODY: &str = "{ \"zeta\" : {\"b\":1,\"a\":[1, 2.50, 1e3]},\n\"id\":\"u1\",\"name\":\"Ann\u{e9}\",\"x-new\":null,\"emoji\":\"\\ud83d\\ude00\" }";
    let server = serve(|_| json_ok(BODY)).await;
    let t = transport(&server.url, |_| {});
    let user = fetch(&t, "u1").await.unwrap();
    assert_eq!(&user.raw_json()[..], BODY.as_bytes());
    assert_eq!(user.get("zeta").unwrap()["a"][1], serde_json::json!(2.5));
    assert!(user.get("x-new").unwrap().is_null());
    let fields = user.fields();
    let keys: Vec<&str> = fields.keys().map(String::as_str).collect();
    assert_eq!(keys, ["zeta", "id", "name", "x-new", "emoji"]);
}

#[tokio::test]
async fn a_404_is_not_found() {
    let server = serve(|_| Reply::Bytes(response(404, &[], b"{\"error\":\"not_found\"}"))).await;
    let t = transport(&server.url, |_| {});
    assert_eq!(fetch(&t, "u1").await.unwrap_err(), Error::NotFound);
}

#[tokio::test]
async fn a_429_carries_retry_after_in_seconds() {
    let server = serve(|_| Reply::Bytes(response(429, &[("retry-after", "7")], b""))).await;
    let t = transport(&server.url, |_| {});
    assert_eq!(
        fetch(&t, "u1").await.unwrap_err(),
        Error::UpstreamRateLimited {
            retry_after: Duration::from_secs(7)
        }
    );
}

#[tokio::test]
async fn a_429_carries_retry_after_as_an_http_date() {
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
    let server = serve(move |_| Reply::Bytes(response(429, &[("retry-after", &at)], b""))).await;
    let t = transport(&server.url, |_| {});
    match fetch(&t, "u1").await.unwrap_err() {
        // The date has whole seconds, so up to one second is lost.
        Error::UpstreamRateLimited { retry_after } => assert!(
            (Duration::from_secs(28)..=Duration::from_secs(30)).contains(&retry_after),
            "{retry_after:?}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_429_without_retry_after_uses_the_rate_limit_headers() {
    let server = serve(|_| {
        Reply::Bytes(response(
            429,
            &[
                ("ratelimit-policy", "\"q\";q=10;w=1"),
                ("ratelimit", "\"q\";r=0;t=4"),
            ],
            b"",
        ))
    })
    .await;
    let t = transport(&server.url, |_| {});
    assert_eq!(
        fetch(&t, "u1").await.unwrap_err(),
        Error::UpstreamRateLimited {
            retry_after: Duration::from_secs(4)
        }
    );
}

#[tokio::test]
async fn other_statuses_are_upstream_status() {
    for status in [500u16, 502, 503, 401, 400] {
        let server = serve(move |_| Reply::Bytes(response(status, &[], b"oops"))).await;
        let t = transport(&server.url, |_| {});
        let e = fetch(&t, "u1").await.unwrap_err();
        assert_eq!(e, Error::UpstreamStatus { status });
        assert_eq!(e.is_upstream_failure(), status >= 500, "{e:?}");
    }
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let server = serve(|s| {
        if s.path == "/users/u1" {
            Reply::Bytes(response(302, &[("location", "/elsewhere")], b""))
        } else {
            json_ok(r#"{"id":"u1"}"#)
        }
    })
    .await;
    let t = transport(&server.url, |_| {});
    assert_eq!(
        fetch(&t, "u1").await.unwrap_err(),
        Error::UpstreamStatus { status: 302 }
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn a_server_that_does_not_answer_in_time_is_a_timeout() {
    let server =
        serve(|_| Reply::After(Duration::from_secs(30), Box::new(json_ok(r#"{"id":"u1"}"#)))).await;
    let t = transport(&server.url, |c| c.timeout = Duration::from_millis(200));
    let e = fetch(&t, "u1").await.unwrap_err();
    assert!(
        matches!(e, Error::Timeout { timeout } if timeout == Duration::from_millis(200)),
        "{e:?}"
    );
    assert!(e.is_upstream_failure());
}

#[tokio::test]
async fn a_body_that_stalls_past_the_timeout_is_a_timeout() {
    // The timeout covers the whole request, body included.
    let server = serve(|_| {
        let mut start = head(200, &[("content-length", "100")]);
        start.extend_from_slice(b"\r\n{\"id\":\"u1\",");
        Reply::Then(start, Duration::from_secs(30), Box::new(Reply::Close))
    })
    .await;
    let t = transport(&server.url, |c| c.timeout = Duration::from_millis(200));
    let e = fetch(&t, "u1").await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let t = transport(&url, |_| {});
    let e = fetch(&t, "u1").await.unwrap_err();
    let Error::Connect(cause) = &e else {
        panic!("not a connect error: {e:?}")
    };
    assert!(e.is_upstream_failure());
    // The message is the chain of causes, joined, down to the operating system's.
    assert!(cause.to_lowercase().contains("refused"), "{cause}");
    assert!(cause.contains(": ") && !cause.starts_with(':'), "{cause}");
    // The transport prints as its base URL.
    assert!(
        format!("{t:?}").contains(&format!("127.0.0.1:{port}")),
        "{t:?}"
    );
}

#[tokio::test]
async fn validators_are_kept_sent_back_and_a_304_answers_only_a_conditional_request() {
    let server = serve(|seen| {
        if seen.headers.contains_key("if-none-match") {
            Reply::Bytes(response(304, &[], b""))
        } else {
            Reply::Bytes(response(
                200,
                &[
                    ("etag", "\"v7\""),
                    ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
                ],
                br#"{"id":"u1"}"#,
            ))
        }
    })
    .await;
    let t = transport(&server.url, |_| {});
    let user = fetch(&t, "u1").await.unwrap();
    let validators = user.validators().cloned().expect("validators kept");
    assert_eq!(validators.etag.as_deref(), Some("\"v7\""));

    let mut conditional = ParagonRequest::get_user(id("u1"));
    conditional.conditional = Some(Box::new(validators));
    let answer = t.clone().oneshot(conditional).await.unwrap();
    assert_eq!(answer.resource, Resource::NotModified);
    let seen = server.requests();
    assert_eq!(
        seen[1].headers.get("if-none-match").map(String::as_str),
        Some("\"v7\"")
    );
    assert_eq!(
        seen[1].headers.get("if-modified-since").map(String::as_str),
        Some("Tue, 01 Dec 2026 10:00:00 GMT")
    );

    // A 304 nobody asked for is not an answer.
    let only_304 = serve(|_| Reply::Bytes(response(304, &[], b""))).await;
    let t = transport(&only_304.url, |_| {});
    assert_eq!(
        fetch(&t, "u1").await.unwrap_err(),
        Error::UpstreamStatus { status: 304 }
    );
}

#[tokio::test]
async fn a_connection_reset_mid_body_is_a_transport_error() {
    let server = serve(|_| {
        let mut partial = head(200, &[("content-length", "100")]);
        partial.extend_from_slice(b"\r\n{\"id\":\"u1\",");
        Reply::BytesThenReset(partial)
    })
    .await;
    let t = transport(&server.url, |_| {});
    let e = fetch(&t, "u1").await.unwrap_err();
    assert!(matches!(e, Error::Transport(_)), "{e:?}");
    assert!(e.is_upstream_failure());
}

#[tokio::test]
async fn a_body_cut_short_by_a_clean_close_is_a_transport_error() {
    let server = serve(|_| {
        let mut partial = head(200, &[("content-length", "100")]);
        partial.extend_from_slice(b"\r\n{\"id\":\"u1\",");
        Reply::Bytes(partial)
    })
    .await;
    let t = transport(&server.url, |_| {});
    let e = fetch(&t, "u1").await.unwrap_err();
    assert!(matches!(e, Error::Transport(_)), "{e:?}");
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_a_failure() {
    let server = serve(|_| Reply::Close).await;
    let t = transport(&server.url, |_| {});
    let e = fetch(&t, "u1").await.unwrap_err();
    assert!(
        matches!(e, Error::Transport(_) | Error::Connect(_)),
        "{e:?}"
    );
    assert!(e.is_upstream_failure());
}

#[tokio::test]
async fn malformed_bodies_are_malformed() {
    type Check = fn(&UserDecodeError) -> bool;
    let cases: [(&str, Check); 5] = [
        ("<html>oops</html>", |e| {
            matches!(e, UserDecodeError::NotJson(_))
        }),
        ("", |e| matches!(e, UserDecodeError::NotJson(_))),
        (r#"[{"id":"u1"}]"#, |e| *e == UserDecodeError::NotObject),
        (
            r#"{"id":"u2","name":"Bob"}"#,
            |e| matches!(e, UserDecodeError::WrongId { found, .. } if found == "u2"),
        ),
        (r#"{"name":"Bob"}"#, |e| *e == UserDecodeError::MissingId),
    ];
    for (body, expected) in cases {
        let server = serve(move |_| json_ok(body)).await;
        let t = transport(&server.url, |_| {});
        match fetch(&t, "u1").await.unwrap_err() {
            Error::Malformed(e) => assert!(expected(&e), "{body}: {e:?}"),
            other => panic!("{body}: {other:?}"),
        }
    }
}

/// A user document of exactly `len` bytes.
fn padded_user(len: usize) -> String {
    let empty = r#"{"id":"u1","pad":""}"#;
    let doc = format!(r#"{{"id":"u1","pad":"{}"}}"#, "x".repeat(len - empty.len()));
    assert_eq!(doc.len(), len);
    doc
}

#[tokio::test]
async fn a_body_of_exactly_max_response_bytes_is_accepted() {
    let body = padded_user(1000);
    let server = serve(move |_| json_ok(&body)).await;
    let t = transport(&server.url, |c| c.max_response_bytes = 1000);
    assert_eq!(fetch(&t, "u1").await.unwrap().raw_json().len(), 1000);
}

#[tokio::test]
async fn a_body_over_max_response_bytes_with_content_length_is_refused() {
    let body = padded_user(1001);
    let server = serve(move |_| json_ok(&body)).await;
    let t = transport(&server.url, |c| c.max_response_bytes = 1000);
    assert_eq!(
        fetch(&t, "u1").await.unwrap_err(),
        Error::BodyTooLarge { limit: 1000 }
    );
}

#[tokio::test]
async fn a_body_over_max_response_bytes_without_content_length_is_refused() {
    // Read until close, no length announced.
    let body = padded_user(50_000);
    let server = serve(move |_| {
        let mut out = head(200, &[("content-type", "application/json")]);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body.as_bytes());
        Reply::Bytes(out)
    })
    .await;
    let t = transport(&server.url, |c| c.max_response_bytes = 1000);
    assert_eq!(
        fetch(&t, "u1").await.unwrap_err(),
        Error::BodyTooLarge { limit: 1000 }
    );
}

#[tokio::test]
async fn a_chunked_body_over_max_response_bytes_is_refused_and_one_within_is_accepted() {
    fn chunked(body: &str) -> Reply {
        let mut out = head(200, &[("transfer-encoding", "chunked")]);
        out.extend_from_slice(b"\r\n");
        for piece in body.as_bytes().chunks(300) {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            out.extend_from_slice(piece);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
        Reply::Bytes(out)
    }
    let big = padded_user(5000);
    let server = serve(move |_| chunked(&big)).await;
    let t = transport(&server.url, |c| c.max_response_bytes = 1000);
    assert_eq!(
        fetch(&t, "u1").await.unwrap_err(),
        Error::BodyTooLarge { limit: 1000 }
    );

    let fits = padded_user(1000);
    let server = serve(move |_| chunked(&fits)).await;
    let t = transport(&server.url, |c| c.max_response_bytes = 1000);
    assert_eq!(fetch(&t, "u1").await.unwrap().raw_json().len(), 1000);
}

#[tokio::test]
async fn error_messages_never_contain_the_api_key() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let t = transport(&url, |c| c.api_key = Secret::new("sk-live-SECRET"));
    let e = fetch(&t, "u1").await.unwrap_err();
    assert!(!format!("{e} {e:?} {t:?}").contains("SECRET"));
}
