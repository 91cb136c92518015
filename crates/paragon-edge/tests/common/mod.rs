//! Helpers shared by the end-to-end tests: a simulator and an edge serving on real
//! sockets of 127.0.0.1, and small HTTP utilities.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paragon_edge::app::AppState;
use paragon_edge::config::{Config, Settings};
use paragon_layers::Clock;
use paragon_sim::{Faults, SimConfig, SimHandle, Simulator};
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The longest any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A simulator with `config` on a free port of 127.0.0.1.
pub async fn start_sim(config: SimConfig) -> SimHandle {
    Simulator::new(config)
        .spawn("127.0.0.1:0".parse().expect("literal address"))
        .await
        .expect("the simulator binds 127.0.0.1:0")
}

/// A plain HTTP client that ignores the proxy settings of the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(WAIT)
        .build()
        .expect("client builds")
}

/// One answer, read completely.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl Resp {
    /// A header as text, when present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("an ASCII header").to_owned())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Retry-After` as whole seconds; panics when absent or not a number.
    pub fn retry_after(&self) -> u64 {
        let v = self
            .header("retry-after")
            .unwrap_or_else(|| panic!("no Retry-After on {} {}", self.status, self.text()));
        v.parse()
            .unwrap_or_else(|_| panic!("Retry-After {v:?} is not whole seconds"))
    }
}

async fn read(response: reqwest::Response) -> Resp {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("a complete body");
    Resp {
        status,
        headers,
        body,
    }
}

/// Checks that `r` is an RFC 9457 problem with `status`.
pub fn assert_problem(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "status of {}", r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json"),
        "content type of a {status}"
    );
    let p = r.json();
    assert!(
        p["type"].as_str().is_some_and(|t| !t.is_empty()),
        "type in {p}"
    );
    assert!(
        p["title"].as_str().is_some_and(|t| !t.is_empty()),
        "title in {p}"
    );
    assert_eq!(p["status"], status, "status field in {p}");
    assert!(
        p["detail"].as_str().is_some_and(|t| !t.is_empty()),
        "detail in {p}"
    );
}

/// The bytes the simulator sends for `id` (asked of a separate simulator, so that the
/// counters of the one under test are untouched).
pub async fn sim_bytes(id: &str) -> bytes::Bytes {
    let sim = start_sim(SimConfig::default()).await;
    let r = client()
        .get(format!("{}/users/{id}", sim.base_url()))
        .send()
        .await
        .expect("the simulator answers");
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.expect("body");
    sim.shutdown().await;
    body
}

/// An edge serving on a real socket in front of its own simulator.
pub struct TestEdge {
    pub addr: SocketAddr,
    pub state: AppState,
    pub sim: SimHandle,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    pub server: Option<JoinHandle<std::io::Result<()>>>,
}

/// An edge configured by `toml` (its `upstream.base_url` pointed at a fresh simulator).
pub async fn start_edge(toml: &str) -> TestEdge {
    start_edge_with(toml, SimConfig::default()).await
}

/// An edge configured by `toml` in front of a simulator started with `sim`.
pub async fn start_edge_with(toml: &str, sim: SimConfig) -> TestEdge {
    let sim = start_sim(sim).await;
    let base_url = sim.base_url();
    start_edge_at(toml, sim, base_url).await
}

/// An edge configured by `toml` whose upstream is `base_url` (which need not be `sim`:
/// a recording front of it, a hostile server, or a closed port).
pub async fn start_edge_at(toml: &str, sim: SimHandle, base_url: String) -> TestEdge {
    let mut config = Config::from_toml(toml).expect("a valid test configuration");
    config.upstream.base_url = Some(base_url.into());
    let grace = config.server.shutdown_grace.0;
    let settings = Settings::new(config).expect("a valid test configuration");
    let edge = paragon_edge::server::build(settings, Clock::tokio())
        .await
        .expect("the edge builds");
    assert!(
        edge.simulator.is_none(),
        "an upstream is set: no embedded simulator"
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(paragon_edge::server::run(
        listener,
        edge.state.clone(),
        async move {
            let _ = rx.await;
        },
        grace,
    ));
    TestEdge {
        addr,
        state: edge.state,
        sim,
        client: client(),
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestEdge {
    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Resp {
        read(
            self.client
                .get(self.url(path))
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {path}: {e}")),
        )
        .await
    }

    /// `GET path` with extra headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut rb = self.client.get(self.url(path));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        read(rb.send().await.expect("an answer")).await
    }

    /// `POST path`, with `Authorization: <auth>` when given.
    pub async fn post(&self, path: &str, auth: Option<&str>) -> Resp {
        let mut rb = self.client.post(self.url(path));
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        read(rb.send().await.expect("an answer")).await
    }

    /// Any request.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut rb = self.client.request(method, self.url(path));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        read(rb.send().await.expect("an answer")).await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let r = self.get("/metrics").await;
        assert_eq!(r.status, 200);
        r.text()
    }

    /// `/admin/status` as JSON.
    pub async fn status(&self) -> Value {
        let r = self.get("/admin/status").await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// Requests the simulator has received on `/users/*`.
    pub fn served_total(&self) -> u64 {
        self.sim.sim().served_total()
    }

    /// Requests the simulator has received for one user.
    pub fn served(&self, id: &str) -> u64 {
        self.sim.sim().served(&format!("/users/{id}"))
    }

    /// Resolves the shutdown future given to `run`.
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The value of the sample whose name (with labels, exactly as exposed) is `name`.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|v| {
                    v.trim()
                        .parse::<f64>()
                        .unwrap_or_else(|_| panic!("{l:?} has no number"))
                })
        })
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

/// Polls `check` every 20 ms until it holds, failing after [`WAIT`].
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let outcome = tokio::time::timeout(WAIT, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(outcome.is_ok(), "timed out waiting for {what}");
}

/// Sends `GET path` as raw HTTP/1.1 (no client-side path normalisation, so `..` and
/// friends arrive as written) and reads the answer until the server closes.
pub async fn raw_get(addr: SocketAddr, path: &str) -> Resp {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("the server answers in time")
        .expect("read the answer");
    let split = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&received)));
    let head = String::from_utf8_lossy(&received[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("a status line");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.append(
                reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()).expect("name"),
                reqwest::header::HeaderValue::from_str(v.trim()).expect("value"),
            );
        }
    }
    Resp {
        status,
        headers,
        body: bytes::Bytes::copy_from_slice(&received[split + 4..]),
    }
}

/// Whether `s` is a valid user id by the contract's rule (written independently of
/// `UserId::parse`): 1–128 characters of `A–Z a–z 0–9 - _ . ~`, not `.` or `..`.
pub fn contract_valid_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

/// One request as it reached the upstream.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// The request target exactly as received (path and query).
    pub target: String,
    /// The `Authorization` header, when sent.
    pub authorization: Option<String>,
}

/// A simulator served through a recording front: every request that reaches the
/// upstream — whatever its method or path — is recorded before the simulator answers
/// it, and the upstream calls in flight at once are tracked.
pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Serves `sim` (sharing its faults and counters) on a free port of 127.0.0.1.
    pub async fn start(sim: paragon_sim::Simulator) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let (s, f, m) = (seen.clone(), in_flight.clone(), max_in_flight.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (sim, s, f, m) = (sim.clone(), s.clone(), f.clone(), m.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (sim, s, f, m) = (sim.clone(), s.clone(), f.clone(), m.clone());
                        async move {
                            s.lock().expect("recorder lock").push(Seen {
                                method: req.method().to_string(),
                                target: req
                                    .uri()
                                    .path_and_query()
                                    .map_or_else(String::new, |p| p.as_str().to_owned()),
                                authorization: req
                                    .headers()
                                    .get("authorization")
                                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
                            });
                            let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                            m.fetch_max(now, Ordering::SeqCst);
                            // Counted out when the call ends, answered or dropped (the
                            // edge closed its connection).
                            let _in_flight = Decrement(f);
                            sim.handle(req).await
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Recorder {
            addr,
            seen,
            in_flight,
            max_in_flight,
            task,
        }
    }

    /// `http://ADDR`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("recorder lock").clone()
    }

    /// The most upstream calls that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Upstream calls in flight now (waiting on the simulator's answer).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Panics unless every request that reached the upstream was `GET /users/{id}` for a
    /// valid id, with no query, exactly one path segment and nothing percent-encoded.
    pub fn assert_only_valid_user_gets(&self) {
        for s in self.seen() {
            assert_eq!(s.method, "GET", "{s:?} reached the upstream");
            let id = s
                .target
                .strip_prefix("/users/")
                .unwrap_or_else(|| panic!("{s:?} reached the upstream"));
            assert!(contract_valid_id(id), "{s:?} reached the upstream");
        }
    }
}

/// Takes one off a count when dropped.
struct Decrement(Arc<AtomicUsize>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An edge configured by `toml` in front of a simulator started with `sim`, reached
/// through a [`Recorder`].
pub async fn start_edge_recorded(toml: &str, sim: SimConfig) -> (TestEdge, Recorder) {
    let sim = start_sim(sim).await;
    let recorder = Recorder::start(sim.sim().clone()).await;
    let edge = start_edge_at(toml, sim, recorder.base_url()).await;
    (edge, recorder)
}

/// A port of 127.0.0.1 on which nothing listens (bound, read, released).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// What came back for a raw request: an HTTP answer, or the connection closed
/// without one.
#[derive(Debug)]
pub enum RawAnswer {
    Answer(Resp),
    Closed(Vec<u8>),
}

/// Sends `request` as raw bytes (anything at all, not necessarily valid HTTP) and
/// reads until the server closes; parses the answer when there is one.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> RawAnswer {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before it has read everything: ignore that.
    let _ = stream.write_all(request).await;
    let mut received = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server neither answered nor closed in time"
    );
    parse_raw(received)
}

fn parse_raw(received: Vec<u8>) -> RawAnswer {
    let Some(split) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
        return RawAnswer::Closed(received);
    };
    let head = String::from_utf8_lossy(&received[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let Some(status) = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse::<u16>().ok())
    else {
        return RawAnswer::Closed(received);
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            if let (Ok(k), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(k.trim().as_bytes()),
                reqwest::header::HeaderValue::from_str(v.trim()),
            ) {
                headers.append(k, v);
            }
        }
    }
    let mut body = received[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        body = dechunk(&body);
    }
    RawAnswer::Answer(Resp {
        status,
        headers,
        body: bytes::Bytes::from(body),
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || data.len() < eol + 2 + size {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[(eol + 4 + size).min(data.len())..];
    }
    out
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// `PARAGON_FUZZ_CASES`, else `default` (the short CI run).
pub fn fuzz_cases(default: u32) -> u32 {
    std::env::var("PARAGON_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `paragon-edge` binary serving `config` (a TOML text; its `server.listen` is
/// set to a free port), with no `PARAGON*` variable inherited and `env` added. Its
/// stdout and stderr are captured together.
pub struct EdgeProcess {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    pub output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl EdgeProcess {
    pub async fn start(name: &str, config: &str, env: &[(&str, &str)]) -> EdgeProcess {
        let port = closed_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("paragon-edge-e2e");
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join(format!("{name}-{}.toml", std::process::id()));
        std::fs::write(&file, format!("{config}\n")).expect("write config");
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_paragon-edge"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PARAGON") {
                c.env_remove(key);
            }
        }
        c.arg("serve")
            .arg("--config")
            .arg(&file)
            .env("PARAGON_EDGE__SERVER__LISTEN", addr.to_string())
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = c.spawn().expect("the binary starts");
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for mut pipe in [
            Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
            Box::new(stderr),
        ] {
            let out = output.clone();
            readers.push(tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    out.lock()
                        .expect("output lock")
                        .extend_from_slice(&buf[..n]);
                }
            }));
        }
        let process = EdgeProcess {
            child,
            addr,
            output,
            readers,
        };
        let http = client();
        let url = format!("http://{addr}/healthz");
        let up = tokio::time::timeout(WAIT, async {
            loop {
                if http.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            up.is_ok(),
            "the edge did not start:\n{}",
            process.output_text()
        );
        process
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything it wrote so far.
    pub fn output_text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().expect("output lock")).into_owned()
    }

    /// Sends SIGTERM without waiting.
    pub fn sigterm(&self) {
        let pid = self.child.id().expect("still running");
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
    }

    /// Sends SIGTERM and waits for the exit; returns the status and all its output.
    pub async fn terminate(mut self) -> (std::process::ExitStatus, String) {
        self.sigterm();
        self.wait().await
    }

    /// Waits for the exit; returns the status and all its output.
    pub async fn wait(&mut self) -> (std::process::ExitStatus, String) {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("it exits")
            .expect("wait");
        for r in self.readers.drain(..) {
            let _ = tokio::time::timeout(WAIT, r).await;
        }
        (status, self.output_text())
    }
}

/// The faults of a ParagoN that fails every call (500).
pub fn all_failing() -> Faults {
    Faults {
        error_rate: 1.0,
        ..Faults::default()
    }
}
