//! Hostile requests (SECURITY.md §1): every malformed or malicious id, batch list,
//! query and header gets a precise 4xx, and nothing but `GET /users/{valid id}` ever
//! reaches the upstream. Requests go out as raw bytes over TCP, so no client
//! normalises them on the way. A proptest run sends random path segments and batch
//! queries the same way and checks every answer against an independent oracle
//! (`PARAGON_FUZZ_CASES` sets the number of cases; see SECURITY.md).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{
    contract_valid_id, fuzz_cases, raw_request, start_edge_recorded, RawAnswer, Recorder, Resp,
    TestEdge,
};
use paragon_sim::SimConfig;
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};

/// What a hostile request must get.
#[derive(Clone, Debug)]
enum Expect {
    /// A problem+json answer with this status and problem type slug.
    Problem(u16, &'static str),
    /// A `200` for exactly these users (the request was harmless once decoded).
    Users(&'static [&'static str]),
    /// Rejected by the HTTP parser before the application: a bare 4xx, or the
    /// connection closed without an answer.
    Parser,
}

fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n").into_bytes()
}

fn with_headers(method: &str, target: &str, headers: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: edge\r\n{headers}Connection: close\r\n\r\n")
        .into_bytes()
}

/// Checks `answer` against `expect`; returns a description of the mismatch, if any.
fn mismatch(answer: &RawAnswer, expect: &Expect) -> Option<String> {
    match (answer, expect) {
        (RawAnswer::Answer(r), Expect::Problem(status, slug)) => {
            let ok = r.status == *status
                && r.header("content-type").as_deref() == Some("application/problem+json")
                && serde_json::from_slice::<serde_json::Value>(&r.body).is_ok_and(|p| {
                    p["status"] == *status
                        && p["type"] == format!("urn:paragon-edge:problem:{slug}")
                        && p["title"].as_str().is_some_and(|t| !t.is_empty())
                        && p["detail"].as_str().is_some_and(|t| !t.is_empty())
                })
                && r.header("x-request-id").is_some();
            (!ok).then(|| format!("got {} {}", r.status, r.text()))
        }
        (RawAnswer::Answer(r), Expect::Users(ids)) => {
            if r.status != 200 {
                return Some(format!("got {} {}", r.status, r.text()));
            }
            let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
            let ok = if ids.len() == 1 && v.get("users").is_none() {
                v == paragon_sim::user_json(ids[0])
            } else {
                let users = v["users"].as_object().map(|m| m.len());
                users == Some(ids.len())
                    && ids
                        .iter()
                        .all(|id| v["users"][*id] == paragon_sim::user_json(id))
            };
            (!ok).then(|| format!("got 200 {v}"))
        }
        (RawAnswer::Answer(r), Expect::Parser) => (!(400..500).contains(&r.status)
            || r.header("content-type").as_deref() == Some("application/problem+json"))
        .then(|| format!("got {} {}", r.status, r.text())),
        (RawAnswer::Closed(_), Expect::Parser) => None,
        (RawAnswer::Closed(b), _) => Some(format!(
            "connection closed without an answer: {:?}",
            String::from_utf8_lossy(b)
        )),
    }
}

fn many_ids(n: usize) -> String {
    (0..n)
        .map(|i| format!("u{i}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test]
async fn every_hostile_request_gets_a_precise_4xx_and_never_reaches_the_upstream() {
    let (edge, recorder) = start_edge_recorded("", SimConfig::default()).await;
    let ten_kb = "a".repeat(10_000);
    let ten_kb_encoded = "%41".repeat(10_000);
    let u1_101_times = vec!["u1"; 101].join(",");
    use Expect::*;
    let bad_id = Problem(400, "invalid-id");
    let bad_batch = Problem(400, "invalid-batch");
    let no_route = Problem(404, "no-route");
    let cases: Vec<(String, Vec<u8>, Expect)> = vec![
        // Slashes and dot segments: never another upstream path.
        ("raw slash".into(), get("/v1/users/a/b"), no_route.clone()),
        ("%2F".into(), get("/v1/users/a%2Fb"), bad_id.clone()),
        ("lone %2F".into(), get("/v1/users/%2F"), bad_id.clone()),
        ("lowercase %2f".into(), get("/v1/users/%2f"), bad_id.clone()),
        ("..".into(), get("/v1/users/.."), bad_id.clone()),
        (".".into(), get("/v1/users/."), bad_id.clone()),
        ("%2E%2E".into(), get("/v1/users/%2E%2E"), bad_id.clone()),
        ("%2e".into(), get("/v1/users/%2e"), bad_id.clone()),
        (
            "../admin traversal".into(),
            get("/v1/users/../admin/status"),
            no_route.clone(),
        ),
        (
            "..%2F traversal".into(),
            get("/v1/users/..%2F..%2Fadmin%2Fstatus"),
            bad_id.clone(),
        ),
        (
            "double-encoded %252F".into(),
            get("/v1/users/a%252Fb"),
            bad_id.clone(),
        ),
        (
            "backslash".into(),
            get("/v1/users/..%5Cadmin"),
            bad_id.clone(),
        ),
        ("empty id".into(), get("/v1/users/"), bad_id.clone()),
        (
            "empty segment".into(),
            get("/v1/users//u1"),
            no_route.clone(),
        ),
        (
            "trailing slash".into(),
            get("/v1/users/u1/"),
            no_route.clone(),
        ),
        // NUL and control characters.
        ("%00".into(), get("/v1/users/a%00"), bad_id.clone()),
        ("lone %00".into(), get("/v1/users/%00"), bad_id.clone()),
        ("%0D%0A".into(), get("/v1/users/u1%0D%0A"), bad_id.clone()),
        ("%09 tab".into(), get("/v1/users/u%091"), bad_id.clone()),
        ("%7F DEL".into(), get("/v1/users/u%7F"), bad_id.clone()),
        (
            "raw NUL byte".into(),
            b"GET /v1/users/a\0b HTTP/1.1\r\nHost: e\r\n\r\n".to_vec(),
            Parser,
        ),
        ("raw space".into(), get("/v1/users/a b"), Parser),
        // Unicode, and bytes that are not UTF-8.
        (
            "é encoded".into(),
            get("/v1/users/caf%C3%A9"),
            bad_id.clone(),
        ),
        (
            "emoji encoded".into(),
            get("/v1/users/%F0%9F%98%80"),
            bad_id.clone(),
        ),
        (
            "fullwidth solidus".into(),
            get("/v1/users/a%EF%BC%8Fb"),
            bad_id.clone(),
        ),
        (
            "not UTF-8 %FF".into(),
            get("/v1/users/%FF%FE"),
            bad_id.clone(),
        ),
        (
            "overlong UTF-8 slash".into(),
            get("/v1/users/%C0%AF"),
            bad_id.clone(),
        ),
        (
            "raw UTF-8 bytes".into(),
            get("/v1/users/café"),
            bad_id.clone(),
        ),
        (
            "raw invalid UTF-8".into(),
            b"GET /v1/users/a\xff HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n".to_vec(),
            Parser,
        ),
        // Length.
        (
            "129 characters".into(),
            get(&format!("/v1/users/{}", "a".repeat(129))),
            bad_id.clone(),
        ),
        (
            "10 kB id".into(),
            get(&format!("/v1/users/{ten_kb}")),
            bad_id.clone(),
        ),
        (
            "30 kB encoded id".into(),
            get(&format!("/v1/users/{ten_kb_encoded}")),
            bad_id.clone(),
        ),
        (
            "70 kB target".into(),
            get(&format!("/v1/users/{}", "a".repeat(70_000))),
            Parser,
        ),
        // Query and fragment injection.
        ("%3F".into(), get("/v1/users/u1%3Fadmin=1"), bad_id.clone()),
        ("%23".into(), get("/v1/users/u1%23frag"), bad_id.clone()),
        ("%26".into(), get("/v1/users/u1%26x=1"), bad_id.clone()),
        ("%3D".into(), get("/v1/users/u1%3D"), bad_id.clone()),
        ("+ and %20".into(), get("/v1/users/a+b%20c"), bad_id.clone()),
        ("; matrix".into(), get("/v1/users/u1;x=1"), bad_id.clone()),
        ("@ and :".into(), get("/v1/users/a@b:c"), bad_id.clone()),
        (
            "query is not forwarded".into(),
            get("/v1/users/u1?admin=1&ids=../x&api_key=x"),
            Users(&["u1"]),
        ),
        (
            "raw fragment is dropped".into(),
            get("/v1/users/u1#../../admin"),
            Users(&["u1"]),
        ),
        (
            "percent-encoded letters".into(),
            get("/v1/users/%75%31"),
            Users(&["u1"]),
        ),
        (
            "absolute-form target".into(),
            get("http://evil.example/v1/users/u1"),
            Users(&["u1"]),
        ),
        ("< in path".into(), get("/v1/users/a<b"), Parser),
        // Batch lists.
        ("no ids".into(), get("/v1/users"), bad_batch.clone()),
        (
            "empty ids=".into(),
            get("/v1/users?ids="),
            bad_batch.clone(),
        ),
        (
            "ids given twice".into(),
            get("/v1/users?ids=u1&ids=u2"),
            bad_batch.clone(),
        ),
        (
            "only a comma".into(),
            get("/v1/users?ids=,"),
            bad_id.clone(),
        ),
        (
            "trailing comma".into(),
            get("/v1/users?ids=u1,"),
            bad_id.clone(),
        ),
        (
            "%2F in batch".into(),
            get("/v1/users?ids=u1,a%2Fb"),
            bad_id.clone(),
        ),
        (
            ".. in batch".into(),
            get("/v1/users?ids=u1,.."),
            bad_id.clone(),
        ),
        (
            "%00 in batch".into(),
            get("/v1/users?ids=u1,%00"),
            bad_id.clone(),
        ),
        (
            "unicode in batch".into(),
            get("/v1/users?ids=u1,caf%C3%A9"),
            bad_id.clone(),
        ),
        (
            "+ (a space) in batch".into(),
            get("/v1/users?ids=u1,a+b"),
            bad_id.clone(),
        ),
        (
            "encoded & in batch".into(),
            get("/v1/users?ids=u1%26ids%3Du2"),
            bad_id.clone(),
        ),
        (
            "10 kB id in batch".into(),
            get(&format!("/v1/users?ids=u1,{ten_kb}")),
            bad_id.clone(),
        ),
        (
            "101 ids".into(),
            get(&format!("/v1/users?ids={}", many_ids(101))),
            Problem(400, "too-many-ids"),
        ),
        (
            "10 000 ids".into(),
            get(&format!("/v1/users?ids={}", many_ids(10_000))),
            Problem(400, "too-many-ids"),
        ),
        (
            "one id 101 times".into(),
            get(&format!("/v1/users?ids={u1_101_times}")),
            Problem(400, "too-many-ids"),
        ),
        (
            "repeated ids".into(),
            get("/v1/users?ids=u1,u1,u2,u1,u2"),
            Users(&["u1", "u2"]),
        ),
        (
            "other parameters ignored".into(),
            get("/v1/users?x=%ZZ&ids=u1"),
            Users(&["u1"]),
        ),
        // Header injection and hostile headers.
        (
            "bare CR in a header".into(),
            with_headers("GET", "/v1/users/u1", "X-Request-Id: a\rInjected: 1\r\n"),
            Parser,
        ),
        (
            "NUL in a header".into(),
            with_headers("GET", "/v1/users/u1", "X-Request-Id: a\0b\r\n"),
            Parser,
        ),
        (
            "obs-fold header".into(),
            with_headers("GET", "/v1/users/u1", "X-Request-Id: a\r\n b\r\n"),
            Parser,
        ),
        (
            "1 MB header".into(),
            with_headers(
                "GET",
                "/v1/users/u1",
                &format!("X-Big: {}\r\n", "x".repeat(1 << 20)),
            ),
            Parser,
        ),
        (
            "200 headers".into(),
            with_headers("GET", "/v1/users/u1", &"X-H: 1\r\n".repeat(200)),
            Parser,
        ),
        (
            "Content-Length and chunked".into(),
            with_headers(
                "GET",
                "/v1/users/u1",
                "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            ),
            // Transfer-Encoding wins (RFC 9112 §6.3); the GET itself is harmless.
            Users(&["u1"]),
        ),
        // Methods.
        (
            "POST".into(),
            with_headers("POST", "/v1/users/u1", "Content-Length: 0\r\n"),
            Problem(405, "method-not-allowed"),
        ),
        (
            "DELETE".into(),
            with_headers("DELETE", "/v1/users/u1", ""),
            Problem(405, "method-not-allowed"),
        ),
        (
            "PUT batch".into(),
            with_headers("PUT", "/v1/users?ids=u1", "Content-Length: 0\r\n"),
            Problem(405, "method-not-allowed"),
        ),
        (
            "TRACE".into(),
            with_headers("TRACE", "/v1/users/u1", ""),
            Problem(405, "method-not-allowed"),
        ),
        // Paths that are not the API.
        ("upstream path".into(), get("/users/u1"), no_route.clone()),
        (
            "simulator control".into(),
            get("/_sim/faults"),
            no_route.clone(),
        ),
    ];

    let mut failures = Vec::new();
    for (name, request, expect) in &cases {
        let answer = raw_request(edge.addr, request).await;
        if let Some(m) = mismatch(&answer, expect) {
            failures.push(format!("{name}: expected {expect:?}, {m}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Hostile headers are never echoed: an unacceptable request id is replaced.
    for bad in ["a b", "x".repeat(200).as_str(), "caf\u{e9}"] {
        let request = with_headers("GET", "/healthz", &format!("X-Request-Id: {bad}\r\n"));
        let mut request = request;
        if bad.starts_with("caf") {
            // Raw Latin-1 byte (obs-text), which HTTP parsers let through.
            let at = request
                .windows(4)
                .position(|w| w == "caf\u{e9}".as_bytes())
                .unwrap_or(0);
            request.splice(at..at + 5, b"caf\xe9".iter().copied());
        }
        let RawAnswer::Answer(r) = raw_request(edge.addr, &request).await else {
            panic!("no answer for request id {bad:?}");
        };
        if bad.starts_with("caf") && r.status == 400 && r.body.is_empty() {
            // The HTTP parser refused the byte outright: nothing to echo.
            continue;
        }
        let id = r
            .header("x-request-id")
            .unwrap_or_else(|| panic!("no request id for {bad:?}: {r:?}"));
        assert_ne!(id, bad);
        assert!(uuid_like(&id), "{id:?} is not a fresh id");
    }
    // A CR/LF smuggled in the id never becomes a header of the answer.
    let RawAnswer::Answer(r) =
        raw_request(edge.addr, &get("/v1/users/u1%0D%0ASet-Cookie:%20a=b")).await
    else {
        panic!("no answer");
    };
    assert_eq!(r.status, 400);
    assert!(r.header("set-cookie").is_none());

    // The edge is still serving, and the upstream saw only the harmless requests.
    assert_eq!(edge.get("/healthz").await.status, 200);
    recorder.assert_only_valid_user_gets();
    let upstream: BTreeMap<String, usize> =
        recorder.seen().iter().fold(BTreeMap::new(), |mut m, s| {
            *m.entry(s.target.clone()).or_default() += 1;
            m
        });
    assert_eq!(
        upstream,
        BTreeMap::from([("/users/u1".to_owned(), 1), ("/users/u2".to_owned(), 1)]),
        "each user fetched once (then cached), nothing else"
    );
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

// ---- proptest over real requests ----

/// Pieces a hostile path segment or id list is made of.
fn atom() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z0-9._~-]{1,4}",
        2 => (0x21u8..=0x7e).prop_map(|b| char::from(b).to_string()),
        2 => any::<u8>().prop_map(|b| format!("%{b:02X}")),
        1 => prop::sample::select(vec![
            "%2F", "%2f", "..", ".", "%2E", "%00", "%0D%0A", "?", "&", "#", "/", ",", "=",
            "%C3%A9", "%FF", "%25", "+", "missing", "ids=", "%2C",
        ])
        .prop_map(str::to_owned),
    ]
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        9 => prop::collection::vec(atom(), 0..12).prop_map(|v| v.concat()),
        1 => ("[a-z~._-]{1,3}", 40usize..200).prop_map(|(s, n)| s.repeat(n)),
    ]
}

/// Percent-decoding as RFC 3986 defines it; malformed escapes stay as they are.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Bytes an HTTP/1.1 parser may refuse in a request target.
fn parser_may_refuse(target: &str) -> bool {
    target.bytes().any(|b| {
        matches!(
            b,
            b'"' | b'<' | b'>' | b'`' | b'{' | b'}' | b'\\' | b'^' | b'|'
        ) || !(0x21..0x7f).contains(&b)
    })
}

/// The answer the contract requires for `GET /v1/users/{segment}`.
fn expected_for_user(segment: &str) -> Expected {
    let target = format!("/v1/users/{segment}");
    let path = target.split(['?', '#']).next().unwrap_or("");
    let raw = &path["/v1/users/".len().min(path.len())..];
    if !path.starts_with("/v1/users/") || raw.contains('/') {
        return Expected::Problem(404, "no-route");
    }
    let Ok(id) = String::from_utf8(percent_decode(raw)) else {
        return Expected::Problem(400, "invalid-id");
    };
    if !contract_valid_id(&id) {
        return Expected::Problem(400, "invalid-id");
    }
    if id.starts_with("missing") {
        return Expected::Problem(404, "not-found");
    }
    Expected::User(id)
}

#[derive(Debug, PartialEq)]
enum Expected {
    Problem(u16, &'static str),
    User(String),
    Batch(BTreeSet<String>, BTreeSet<String>),
}

fn problem_slug(r: &Resp) -> Option<(u16, String)> {
    if r.header("content-type").as_deref() != Some("application/problem+json") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
    let t = v["type"]
        .as_str()?
        .strip_prefix("urn:paragon-edge:problem:")?;
    (v["status"] == r.status).then(|| (r.status, t.to_owned()))
}

fn check(answer: RawAnswer, target: &str, expected: &Expected) -> Result<(), TestCaseError> {
    let r = match answer {
        RawAnswer::Answer(r) => r,
        RawAnswer::Closed(_) if parser_may_refuse(target) => return Ok(()),
        RawAnswer::Closed(b) => {
            return Err(TestCaseError::fail(format!(
                "{target}: closed without an answer {:?}",
                String::from_utf8_lossy(&b)
            )))
        }
    };
    if r.header("content-type").as_deref() != Some("application/problem+json")
        && r.status == 400
        && parser_may_refuse(target)
    {
        return Ok(());
    }
    match expected {
        Expected::Problem(status, slug) => {
            prop_assert_eq!(
                problem_slug(&r),
                Some((*status, (*slug).to_owned())),
                "{} answered {} {}",
                target,
                r.status,
                r.text()
            );
        }
        Expected::User(id) => {
            prop_assert_eq!(r.status, 200, "{} answered {}", target, r.text());
            let want = paragon_sim::user_json(id).to_string();
            prop_assert_eq!(&r.body[..], want.as_bytes(), "{}", target);
        }
        Expected::Batch(found, missing) => {
            // When no id was found, every error is the same 404, and so is the answer.
            let status = if found.is_empty() { 404 } else { 200 };
            prop_assert_eq!(r.status, status, "{} answered {}", target, r.text());
            let v: serde_json::Value = serde_json::from_slice(&r.body)
                .map_err(|e| TestCaseError::fail(format!("{target}: {e}")))?;
            let users = v["users"].as_object().cloned().unwrap_or_default();
            let errors = v["errors"].as_object().cloned().unwrap_or_default();
            prop_assert_eq!(&users.keys().cloned().collect::<BTreeSet<_>>(), found);
            prop_assert_eq!(&errors.keys().cloned().collect::<BTreeSet<_>>(), missing);
            for (id, user) in &users {
                prop_assert_eq!(user, &paragon_sim::user_json(id));
            }
            for p in errors.values() {
                prop_assert_eq!(&p["status"], 404);
            }
        }
    }
    Ok(())
}

/// The answer the contract requires for `GET /v1/users?{query}` (at most `max` ids).
fn expected_for_batch(query: &str, max: usize) -> Expected {
    let query = query.split('#').next().unwrap_or("");
    let lists: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "ids")
        .map(|(_, v)| v.into_owned())
        .collect();
    let [list] = lists.as_slice() else {
        return Expected::Problem(400, "invalid-batch");
    };
    if list.is_empty() {
        return Expected::Problem(400, "invalid-batch");
    }
    let parts: Vec<&str> = list.split(',').collect();
    if parts.len() > max {
        return Expected::Problem(400, "too-many-ids");
    }
    if !parts.iter().all(|p| contract_valid_id(p)) {
        return Expected::Problem(400, "invalid-id");
    }
    let (missing, found): (BTreeSet<String>, BTreeSet<String>) = parts
        .iter()
        .map(|p| (*p).to_owned())
        .partition(|p| p.starts_with("missing"));
    Expected::Batch(found, missing)
}

fn batch_query() -> impl Strategy<Value = String> {
    let list = prop::collection::vec(prop_oneof![3 => "[a-z0-9]{1,3}", 2 => atom()], 0..12)
        .prop_map(|v| v.join(","));
    prop_oneof![
        6 => list.clone().prop_map(|l| format!("ids={l}")),
        1 => (list.clone(), list.clone()).prop_map(|(a, b)| format!("ids={a}&ids={b}")),
        1 => (atom(), list.clone()).prop_map(|(a, l)| format!("{a}={a}&ids={l}")),
        1 => (1usize..8).prop_map(|n| format!("ids={}", many_ids(n))),
        1 => list,
    ]
}

/// Runs `cases` random requests built by `strategy` through the edge's real socket.
fn fuzz_requests<S: Strategy<Value = String>>(
    strategy: S,
    cases: u32,
    oracle: impl Fn(&str) -> (String, Expected),
) {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let (edge, recorder): (TestEdge, Recorder) = rt.block_on(start_edge_recorded(
        "[rate_limit]\nenabled = false\n[server]\nmax_batch_ids = 8",
        SimConfig::default(),
    ));
    let mut runner = TestRunner::new(PropConfig {
        cases,
        failure_persistence: None,
        ..PropConfig::default()
    });
    let result = runner.run(&strategy, |input| {
        let (target, expected) = oracle(&input);
        let answer = rt.block_on(raw_request(edge.addr, &get(&target)));
        check(answer, &target, &expected)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    recorder.assert_only_valid_user_gets();
    rt.block_on(async { assert_eq!(edge.get("/healthz").await.status, 200) });
}

#[test]
fn fuzz_user_path_segments_over_real_requests() {
    fuzz_requests(segment(), fuzz_cases(200), |seg| {
        let target = format!("/v1/users/{seg}");
        (target, expected_for_user(seg))
    });
}

#[test]
fn fuzz_batch_queries_over_real_requests() {
    fuzz_requests(batch_query(), fuzz_cases(200), |query| {
        (format!("/v1/users?{query}"), expected_for_batch(query, 8))
    });
}
