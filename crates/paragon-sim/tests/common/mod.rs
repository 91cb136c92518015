//! Helpers shared by the integration tests.
#![allow(dead_code)]

use paragon_sim::{Faults, SimConfig, SimHandle, Simulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A simulator with `config`, serving on a free port of 127.0.0.1.
pub async fn start(config: SimConfig) -> SimHandle {
    Simulator::new(config)
        .spawn("127.0.0.1:0".parse().expect("literal address"))
        .await
        .expect("bind 127.0.0.1:0")
}

/// A simulator with `faults`, no key, seed 0.
pub async fn start_with(faults: Faults) -> SimHandle {
    start(SimConfig {
        faults,
        ..SimConfig::default()
    })
    .await
}

/// A plain client that ignores proxy settings of the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client builds")
}

/// `GET {base}{path}`, returning status, headers and body.
pub async fn get(
    client: &reqwest::Client,
    handle: &SimHandle,
    path: &str,
) -> (u16, reqwest::header::HeaderMap, bytes::Bytes) {
    let response = client
        .get(format!("{}{path}", handle.base_url()))
        .send()
        .await
        .expect("an answer");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("a complete body");
    (status, headers, body)
}

/// Parses a body as JSON.
pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("a JSON body")
}

/// Sends one raw HTTP/1.1 request and reads until the server closes, returning
/// whatever arrived (a reset connection ends the read like a close does).
pub async fn raw_exchange(handle: &SimHandle, request: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(handle.addr()).await.expect("connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut received = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
        }
    }
}
