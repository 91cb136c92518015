//! Helpers shared by the end-to-end tests: a simulator and an edge serving on real
//! sockets of 127.0.0.1, and small HTTP utilities.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use paragon_edge::app::AppState;
use paragon_edge::config::Config;
use paragon_layers::Clock;
use paragon_sim::{SimConfig, SimHandle, Simulator};
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
    let mut config = Config::from_toml(toml).expect("a valid test configuration");
    config.upstream.base_url = Some(sim.base_url());
    let grace = config.server.shutdown_grace.0;
    let edge = paragon_edge::server::build(config, Clock::tokio())
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
