//! The HTTP limit for the load benchmark: a bare axum server answering
//! `GET /v1/users/{id}` with the simulator's JSON for that id, from memory.
//!
//! Same axum, hyper and tokio as `paragon-edge`, same multi-thread runtime, no layers,
//! no middleware. Bodies are built once per id and then served from a map.
//!
//! ```text
//! bare_axum --listen 127.0.0.1:18081
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use clap::Parser;
use parking_lot::RwLock;

/// Serves user documents from memory.
#[derive(Parser, Debug)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18081")]
    listen: SocketAddr,
}

type Bodies = Arc<RwLock<HashMap<String, Bytes>>>;

async fn user(State(bodies): State<Bodies>, Path(id): Path<String>) -> Response {
    let cached = bodies.read().get(&id).cloned();
    let body = match cached {
        Some(b) => b,
        None => {
            let b =
                Bytes::from(serde_json::to_vec(&paragon_sim::user_json(&id)).unwrap_or_default());
            bodies.write().insert(id, b.clone());
            b
        }
    };
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let bodies: Bodies = Arc::default();
    let app = Router::new()
        .route("/v1/users/{id}", get(user))
        .with_state(bodies);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(cli.listen).await?;
            eprintln!("bare_axum listening on {}", listener.local_addr()?);
            axum::serve(listener, app).await?;
            Ok(())
        })
}
