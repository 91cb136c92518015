//! Benchmarks and load tools of ParagoN Edge; nothing here is part of the product.
//!
//! - `benches/layers.rs` — criterion: the layers' hit and miss paths against the limit
//!   (a concurrent map, a no-op service) and against published peers;
//! - `src/bin/bare_axum.rs` — the HTTP limit: axum answering a user JSON from memory;
//! - `src/bin/stress.rs` — overload, stampede and churn figures;
//! - `src/bin/redis_limiter.rs` — per-call latency of the Redis rate store vs memory.
//!
//! `bench/run.sh` at the repository root drives them; BENCHMARKS.md has the method.

#![allow(clippy::disallowed_methods, reason = "benchmarks measure wall time")]

use bytes::Bytes;
use paragon_client::{ParagonRequest, ParagonResponse, Resource, User, UserId};

/// The JSON document the simulator-like fixtures serve for `id` (about 200 bytes).
pub fn user_json(id: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"id":"{id}","name":"User {id}","email":"{id}@example.com","plan":"pro","locale":"en-GB","created_at":"2024-01-01T00:00:00Z","tags":["a","b"]}}"#
    ))
}

/// A request for user `id` (panics on an invalid id: fixtures only).
pub fn request(id: &str) -> ParagonRequest {
    ParagonRequest::get_user(UserId::parse(id).expect("fixture ids are valid"))
}

/// A decoded answer for user `id`.
pub fn response(id: &str) -> ParagonResponse {
    let uid = UserId::parse(id).expect("fixture ids are valid");
    let user = User::decode(&uid, user_json(id)).expect("fixture JSON is a user");
    ParagonResponse::new(Resource::User(user))
}
