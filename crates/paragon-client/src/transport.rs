//! The bottom of every stack: ParagoN over HTTP (reqwest with rustls, pooled connections).

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http::header::{
    HeaderMap, AUTHORIZATION, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, RETRY_AFTER,
};
use http::HeaderValue;
use tower::Service;
use url::Url;

use paragon_layers::rate_limit::UpstreamQuota;

use crate::{Endpoint, Error, ParagonRequest, ParagonResponse, Resource, Secret, User, Validators};

/// Settings of the HTTP transport.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// ParagoN's base URL (`http` or `https`), without query or fragment.
    pub base_url: Url,
    /// Sent as `Authorization: Bearer …` when not empty.
    pub api_key: Secret,
    /// Limit on the whole request, body included.
    pub timeout: Duration,
    /// Limit on establishing the connection.
    pub connect_timeout: Duration,
    /// Largest body accepted; reading stops as soon as it is exceeded.
    pub max_response_bytes: usize,
}

impl TransportConfig {
    /// The documented defaults for `base_url`: 2 s timeout, 500 ms connect timeout, 1 MiB bodies.
    pub fn new(base_url: Url) -> Self {
        TransportConfig {
            base_url,
            api_key: Secret::default(),
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
            max_response_bytes: 1 << 20,
        }
    }
}

/// Why a transport cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The base URL is not usable.
    #[error("upstream.base_url: {0}")]
    BaseUrl(String),
    /// The API key cannot be sent in a header.
    #[error("upstream.api_key: the key holds characters that cannot be sent in a header")]
    ApiKey,
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

struct Inner {
    client: reqwest::Client,
    base: Url,
    auth: Option<HeaderValue>,
    timeout: Duration,
    max_response_bytes: usize,
}

/// The real ParagoN client as a [`tower::Service`]: one HTTP GET per request.
#[derive(Clone)]
pub struct HttpTransport {
    inner: Arc<Inner>,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("base_url", &self.inner.base.as_str())
            .finish()
    }
}

/// Checks that `url` can serve as ParagoN's base URL.
pub fn check_base_url(url: &Url) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https, not {:?}",
            url.scheme()
        ));
    }
    if url.host().is_none() {
        return Err("the URL has no host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the URL may not have a query or fragment".into());
    }
    if url.cannot_be_a_base() {
        return Err("the URL cannot be a base".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials here would be printed with the URL; the key goes in `api_key`.
        return Err("the URL may not hold credentials; put the key in upstream.api_key".into());
    }
    Ok(())
}

impl HttpTransport {
    /// Builds the transport and its connection pool.
    pub fn new(config: TransportConfig) -> Result<Self, TransportError> {
        check_base_url(&config.base_url).map_err(TransportError::BaseUrl)?;
        let auth = if config.api_key.is_empty() {
            None
        } else {
            let mut v = HeaderValue::from_str(&format!("Bearer {}", config.api_key.expose()))
                .map_err(|_| TransportError::ApiKey)?;
            v.set_sensitive(true);
            Some(v)
        };
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| TransportError::Client(e.without_url().to_string()))?;
        Ok(HttpTransport {
            inner: Arc::new(Inner {
                client,
                base: config.base_url,
                auth,
                timeout: config.timeout,
                max_response_bytes: config.max_response_bytes,
            }),
        })
    }

    /// The URL a request goes to.
    pub fn url_for(&self, req: &ParagonRequest) -> Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty();
            match &req.endpoint {
                Endpoint::GetUser(id) => {
                    segments.push("users").push(id.as_str());
                }
            }
        }
        url
    }
}

impl Service<ParagonRequest> for HttpTransport {
    type Response = ParagonResponse;
    type Error = Error;
    type Future = BoxFuture<'static, Result<ParagonResponse, Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ParagonRequest) -> Self::Future {
        let url = self.url_for(&req);
        let inner = self.inner.clone();
        Box::pin(async move {
            let mut builder = inner
                .client
                .get(url)
                .header(http::header::ACCEPT, "application/json");
            if let Some(auth) = &inner.auth {
                builder = builder.header(AUTHORIZATION, auth.clone());
            }
            if let Some(v) = &req.conditional {
                if let Some(etag) = &v.etag {
                    builder = builder.header(IF_NONE_MATCH, etag.as_str());
                }
                if let Some(date) = &v.last_modified {
                    builder = builder.header(IF_MODIFIED_SINCE, date.as_str());
                }
            }
            let response = builder
                .send()
                .await
                .map_err(|e| map_error(e, inner.timeout))?;
            let status = response.status().as_u16();
            if req.quota.is_recording() {
                if let Some(quota) = advertised_quota(response.headers(), wall_now()) {
                    req.quota.record(quota);
                }
            }
            match status {
                200 => {
                    let header = |name| {
                        response
                            .headers()
                            .get(name)
                            .map(|v: &HeaderValue| v.as_bytes())
                    };
                    let validators = Validators::from_headers(header(ETAG), header(LAST_MODIFIED));
                    let body =
                        read_limited(response, inner.max_response_bytes, inner.timeout).await?;
                    match &req.endpoint {
                        Endpoint::GetUser(id) => {
                            let user = User::decode(id, body)?.with_validators(validators);
                            Ok(ParagonResponse::new(Resource::User(user)))
                        }
                    }
                }
                // Only an answer to a conditional request: the cached version is current.
                304 if req.conditional.is_some() => Ok(ParagonResponse::new(Resource::NotModified)),
                404 => Err(Error::NotFound),
                429 => Err(Error::UpstreamRateLimited {
                    retry_after: retry_after(response.headers(), wall_now()),
                }),
                _ => Err(Error::UpstreamStatus { status }),
            }
        })
    }
}

/// The wall-clock time, to read an HTTP date against (`Retry-After: <date>`).
#[allow(
    clippy::disallowed_methods,
    reason = "an HTTP date is wall-clock time; `Clock` is monotonic and has no date"
)]
fn wall_now() -> SystemTime {
    SystemTime::now()
}

fn map_error(e: reqwest::Error, timeout: Duration) -> Error {
    if let Some(local) = local_resource_error(&e) {
        return Error::Local(local);
    }
    if e.is_timeout() {
        Error::Timeout { timeout }
    } else if e.is_connect() {
        Error::Connect(describe(e))
    } else {
        Error::Transport(describe(e))
    }
}

/// Whether `e` says this process ran out of its own resources (file descriptors, or
/// buffers or memory for a socket): EMFILE, ENFILE, ENOBUFS or ENOMEM, as Linux numbers
/// them. It passes once connections close; it says nothing about the peer.
pub fn is_out_of_resources(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// This process's own resources ran out: not a fault of ParagoN, so the breaker must not
/// count it.
fn local_resource_error(e: &reqwest::Error) -> Option<String> {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if is_out_of_resources(io) {
                return Some(io.to_string());
            }
        }
        source = s.source();
    }
    None
}

/// The error's causes, joined; reqwest's own message (without the URL) when it has none.
fn describe(e: reqwest::Error) -> String {
    use std::error::Error as _;
    let mut causes = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        causes.push(s.to_string());
        source = s.source();
    }
    if causes.is_empty() {
        e.without_url().to_string()
    } else {
        causes.join(": ")
    }
}

/// Reads the body, refusing it as soon as it passes `limit` bytes. (What a cache keeps
/// is [`User`]'s own exact copy, so this buffer's spare capacity never outlives the call.)
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Error> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(Error::BodyTooLarge { limit });
    }
    let mut body = BytesMut::with_capacity(response.content_length().map_or(1024, |l| l as usize));
    while let Some(chunk) = response.chunk().await.map_err(|e| map_error(e, timeout))? {
        if body.len() + chunk.len() > limit {
            return Err(Error::BodyTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Longest wait read from one 429's headers, so a bogus header cannot stop us for days.
/// Every form past it (a number of seconds too large for any integer, a far date, a far
/// Unix time) reads as exactly this; the rate limiter caps it further with its own
/// `max_pause`.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A year of seconds: an `X-RateLimit-Reset` larger than this is a Unix time.
const YEAR_SECS: u64 = 365 * 24 * 3600;

/// How long ParagoN asks us to wait after a 429: `Retry-After` (seconds or an HTTP date),
/// else `RateLimit-Reset`, the `t=`/`reset=` parameter of `RateLimit`, or
/// `X-RateLimit-Reset` (seconds, or a Unix time); one second when none says. Capped at
/// [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Duration {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    // Whole seconds; a number too large for u64 is as far as any other oversized value.
    let secs = |s: &str| {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(s.parse::<u64>().map_or(Duration::MAX, Duration::from_secs))
    };
    let from_retry_after = text(RETRY_AFTER.as_str()).and_then(|v| {
        secs(v).or_else(|| {
            httpdate::parse_http_date(v)
                .ok()
                .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
        })
    });
    let from_ratelimit = || {
        text("ratelimit-reset").and_then(secs).or_else(|| {
            text("ratelimit").and_then(|v| {
                v.split([';', ',']).map(str::trim).find_map(|p| {
                    p.strip_prefix("t=")
                        .or_else(|| p.strip_prefix("reset="))
                        .and_then(secs)
                })
            })
        })
    };
    let from_x = || {
        text("x-ratelimit-reset").and_then(secs).map(|d| {
            // Large values are Unix times, small ones are delays.
            if d.as_secs() > YEAR_SECS {
                let epoch = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                d.saturating_sub(epoch)
            } else {
                d
            }
        })
    };
    from_retry_after
        .or_else(from_ratelimit)
        .or_else(from_x)
        .unwrap_or(Duration::from_secs(1))
        .min(MAX_RETRY_AFTER)
}

/// The quota ParagoN advertises on an answer, by the first of the three header families
/// it sends: the IETF draft's `RateLimit: "default";r=42;t=17` (of several policies, the
/// one with the fewest calls left; the older `remaining=…, reset=…` form too), then
/// `RateLimit-Remaining` with `RateLimit-Reset`, then `X-RateLimit-Remaining` with
/// `X-RateLimit-Reset` (seconds, or a Unix time when larger than a year of seconds).
/// A reset is capped at [`MAX_RETRY_AFTER`]; one in the past is zero (no constraint).
pub fn advertised_quota(headers: &HeaderMap, now: SystemTime) -> Option<UpstreamQuota> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(s.parse::<u64>().unwrap_or(u64::MAX))
    };
    let quota = |remaining: u64, reset_secs: u64| UpstreamQuota {
        remaining,
        reset: Duration::from_secs(reset_secs).min(MAX_RETRY_AFTER),
    };
    if let Some(v) = text("ratelimit") {
        // Structured items: `"name";r=…;t=…`, one per policy, comma-separated.
        let items = v.split(',').filter_map(|item| {
            let mut r = None;
            let mut t = None;
            for param in item.split(';').map(str::trim) {
                if let Some(n) = param.strip_prefix("r=") {
                    r = number(n);
                } else if let Some(n) = param.strip_prefix("t=") {
                    t = number(n);
                }
            }
            Some((r?, t?))
        });
        if let Some((r, t)) = items.min() {
            return Some(quota(r, t));
        }
        // The older form: `limit=100, remaining=0, reset=4`.
        let mut r = None;
        let mut t = None;
        for param in v.split([',', ';']).map(str::trim) {
            if let Some(n) = param.strip_prefix("remaining=") {
                r = number(n);
            } else if let Some(n) = param.strip_prefix("reset=") {
                t = number(n);
            }
        }
        if let (Some(r), Some(t)) = (r, t) {
            return Some(quota(r, t));
        }
    }
    if let (Some(r), Some(t)) = (
        text("ratelimit-remaining").and_then(number),
        text("ratelimit-reset").and_then(number),
    ) {
        return Some(quota(r, t));
    }
    let r = text("x-ratelimit-remaining").and_then(number)?;
    let t = text("x-ratelimit-reset").and_then(number)?;
    let t = if t > YEAR_SECS {
        // A Unix time; one in the past resets nothing.
        let epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        t.saturating_sub(epoch)
    } else {
        t
    };
    Some(quota(r, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_quota_of_each_header_family() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let q = |pairs: &[(&'static str, &str)]| advertised_quota(&headers(pairs), now);
        let secs = |r, t| {
            Some(UpstreamQuota {
                remaining: r,
                reset: Duration::from_secs(t),
            })
        };
        assert_eq!(q(&[("ratelimit", "\"default\";r=42;t=17")]), secs(42, 17));
        // Of two policies, the one with fewer calls left.
        assert_eq!(
            q(&[("ratelimit", "\"hour\";r=900;t=3000, \"minute\";r=3;t=20")]),
            secs(3, 20)
        );
        assert_eq!(
            q(&[("ratelimit", "limit=100, remaining=7, reset=4")]),
            secs(7, 4)
        );
        assert_eq!(
            q(&[("ratelimit-remaining", "5"), ("ratelimit-reset", "9")]),
            secs(5, 9)
        );
        assert_eq!(
            q(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "30")]),
            secs(0, 30)
        );
        // A Unix time, ahead and past.
        assert_eq!(
            q(&[
                ("x-ratelimit-remaining", "8"),
                ("x-ratelimit-reset", "1700000012")
            ]),
            secs(8, 12)
        );
        assert_eq!(
            q(&[
                ("x-ratelimit-remaining", "8"),
                ("x-ratelimit-reset", "1600000000")
            ]),
            secs(8, 0)
        );
        // Absurd resets are capped; half a family, garbage or nothing is no quota.
        assert_eq!(
            q(&[("ratelimit", "\"d\";r=1;t=99999999999999999999999")]),
            Some(UpstreamQuota {
                remaining: 1,
                reset: MAX_RETRY_AFTER
            })
        );
        assert_eq!(q(&[("x-ratelimit-remaining", "8")]), None);
        assert_eq!(q(&[("ratelimit", "\"d\";r=-1;t=3")]), None);
        assert_eq!(
            q(&[("ratelimit-remaining", "x"), ("ratelimit-reset", "1")]),
            None
        );
        assert_eq!(q(&[]), None);
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2")]), now),
            Duration::from_secs(2)
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &date)]), now),
            Duration::from_secs(30)
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &past)]), now),
            Duration::ZERO
        );
    }

    #[test]
    fn retry_after_falls_back_to_rate_limit_headers() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(&headers(&[("ratelimit-reset", "7")]), now),
            Duration::from_secs(7)
        );
        assert_eq!(
            retry_after(&headers(&[("ratelimit", "\"default\";r=0;t=9")]), now),
            Duration::from_secs(9)
        );
        assert_eq!(
            retry_after(
                &headers(&[("ratelimit", "limit=100, remaining=0, reset=4")]),
                now
            ),
            Duration::from_secs(4)
        );
        assert_eq!(
            retry_after(&headers(&[("x-ratelimit-reset", "1700000012")]), now),
            Duration::from_secs(12)
        );
        assert_eq!(
            retry_after(&headers(&[("x-ratelimit-reset", "3")]), now),
            Duration::from_secs(3)
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "soon")]), now),
            Duration::from_secs(1)
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "999999999")]), now),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn every_oversized_retry_after_reads_as_the_cap() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let far_date = httpdate::fmt_http_date(now + Duration::from_secs(10 * 24 * 3600));
        for (name, value) in [
            ("retry-after", "86401"),
            ("retry-after", "18446744073709551615"),
            ("retry-after", "18446744073709551616"),
            ("retry-after", "99999999999999999999999999999"),
            ("retry-after", far_date.as_str()),
            ("ratelimit-reset", "99999999999999999999999999999"),
            ("x-ratelimit-reset", "99999999999999999999999999999"),
        ] {
            assert_eq!(
                retry_after(&headers(&[(name, value)]), now),
                MAX_RETRY_AFTER,
                "{name}: {value}"
            );
        }
        // A year of seconds is still a delay; one more is a Unix time (long past here).
        assert_eq!(
            retry_after(&headers(&[("x-ratelimit-reset", "31536000")]), now),
            MAX_RETRY_AFTER
        );
        assert_eq!(
            retry_after(&headers(&[("x-ratelimit-reset", "31536001")]), now),
            Duration::ZERO
        );
    }

    #[test]
    fn urls_are_one_segment_under_the_base() {
        let t = HttpTransport::new(TransportConfig::new(
            Url::parse("http://h:1/api/v2/").unwrap(),
        ))
        .unwrap();
        let id = crate::UserId::parse("a.b~c").unwrap();
        assert_eq!(
            t.url_for(&ParagonRequest::get_user(id)).as_str(),
            "http://h:1/api/v2/users/a.b~c"
        );
        let t =
            HttpTransport::new(TransportConfig::new(Url::parse("http://h:1").unwrap())).unwrap();
        let id = crate::UserId::parse("...").unwrap();
        assert_eq!(
            t.url_for(&ParagonRequest::get_user(id)).as_str(),
            "http://h:1/users/..."
        );
    }

    #[test]
    fn bad_base_urls_are_refused() {
        for bad in [
            "ftp://h/",
            "http://h/?q=1",
            "http://h/#f",
            "mailto:x@y",
            "https://u:pw@h/",
            "https://u@h/",
        ] {
            let url = Url::parse(bad).unwrap();
            assert!(check_base_url(&url).is_err(), "{bad}");
        }
    }

    #[test]
    fn api_key_never_prints() {
        let k = Secret::new("sk-live-123");
        assert!(!format!("{k:?}").contains("sk-live"));
        let cfg = TransportConfig {
            api_key: k,
            ..TransportConfig::new(Url::parse("http://h/").unwrap())
        };
        assert!(!format!("{cfg:?}").contains("sk-live"));
    }

    #[test]
    fn the_longest_wait_is_a_day_and_a_year_of_seconds_is_still_a_delay() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let day = Duration::from_secs(86_400);
        assert_eq!(MAX_RETRY_AFTER, day);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "999999")]), now),
            day
        );
        // Exactly a year of seconds is a (capped) delay, not a Unix time in 1971.
        let year = "31536000";
        assert_eq!(
            retry_after(&headers(&[("x-ratelimit-reset", year)]), now),
            day
        );
        let quota = advertised_quota(
            &headers(&[("x-ratelimit-remaining", "5"), ("x-ratelimit-reset", year)]),
            now,
        );
        assert_eq!(quota.map(|q| q.reset), Some(day));
    }

    #[test]
    fn out_of_resources_is_exactly_the_four_local_errors() {
        for code in [24, 23, 105, 12] {
            let e = std::io::Error::from_raw_os_error(code);
            assert!(is_out_of_resources(&e), "{e}");
        }
        for code in [111, 104, 110, 32] {
            let e = std::io::Error::from_raw_os_error(code);
            assert!(!is_out_of_resources(&e), "{e}");
        }
        assert!(!is_out_of_resources(&std::io::Error::other("no code")));
    }
}
