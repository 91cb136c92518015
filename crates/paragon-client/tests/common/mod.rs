//! A raw HTTP/1.1 server on 127.0.0.1:0 that each test scripts byte for byte, so the
//! real transport can be shown every kind of answer, including broken ones.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use paragon_client::{HttpTransport, Secret, TransportConfig};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use url::Url;

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
}

/// What the server does with a request.
pub enum Reply {
    /// Writes these bytes, then closes the connection.
    Bytes(Vec<u8>),
    /// Writes these bytes, then resets the connection (RST, not FIN).
    BytesThenReset(Vec<u8>),
    /// Closes the connection without answering.
    Close,
    /// Waits this long (real time), then does the rest.
    After(Duration, Box<Reply>),
    /// Writes the first bytes, waits, then does the rest.
    Then(Vec<u8>, Duration, Box<Reply>),
}

/// A scripted server; stops when dropped.
pub struct RawServer {
    pub url: Url,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawServer {
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }
}

/// Serves every request with `reply(request)`.
pub async fn serve(reply: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> RawServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let reply = Arc::new(reply);
    let task = tokio::spawn({
        let seen = seen.clone();
        async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen.clone();
                let reply = reply.clone();
                tokio::spawn(async move {
                    let _ = connection(stream, seen, &*reply).await;
                });
            }
        }
    });
    RawServer {
        url: Url::parse(&format!("http://{addr}/")).unwrap(),
        seen,
        task,
    }
}

async fn connection(
    mut stream: TcpStream,
    seen: Arc<Mutex<Vec<Seen>>>,
    reply: &(dyn Fn(&Seen) -> Reply + Send + Sync),
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let path = request_line.next().unwrap_or_default().to_string();
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let request = Seen {
        method,
        path,
        headers,
    };
    seen.lock().push(request.clone());
    let mut action = reply(&request);
    loop {
        match action {
            Reply::Bytes(bytes) => {
                stream.write_all(&bytes).await?;
                stream.shutdown().await?;
                // Drain until the client closes, so the close is a clean FIN.
                while stream.read(&mut chunk).await? > 0 {}
                return Ok(());
            }
            Reply::BytesThenReset(bytes) => {
                stream.write_all(&bytes).await?;
                stream.flush().await?;
                stream.set_zero_linger()?;
                drop(stream);
                return Ok(());
            }
            Reply::Close => return Ok(()),
            Reply::After(d, rest) => {
                tokio::time::sleep(d).await;
                action = *rest;
            }
            Reply::Then(bytes, d, rest) => {
                stream.write_all(&bytes).await?;
                stream.flush().await?;
                tokio::time::sleep(d).await;
                action = *rest;
            }
        }
    }
}

/// A complete answer with `Content-Length`.
pub fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = head(status, headers);
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

/// The status line and headers (with `connection: close`), without the blank line.
pub fn head(status: u16, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\nconnection: close\r\n").into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out
}

/// A JSON 200 answer.
pub fn json_ok(body: &str) -> Reply {
    Reply::Bytes(response(
        200,
        &[("content-type", "application/json")],
        body.as_bytes(),
    ))
}

/// A transport to `url` with a short timeout.
pub fn transport(url: &Url, f: impl FnOnce(&mut TransportConfig)) -> HttpTransport {
    let mut config = TransportConfig::new(url.clone());
    config.timeout = Duration::from_secs(5);
    config.api_key = Secret::new("");
    f(&mut config);
    HttpTransport::new(config).unwrap()
}
