//! A typed client for the ParagoN API.
//!
//! [`ParagonClient`] is the façade business code calls (`fetch_user(&UserId)`). It
//! sends [`ParagonRequest`]s to any [`tower::Service`]: the real [`HttpTransport`] at the
//! bottom, usually wrapped in the protective layers of `paragon-layers`, or a scripted
//! [`testing::FakeParagon`] (feature `testing`) in tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use paragon_client::{HttpTransport, ParagonClient, TransportConfig, UserId};
//! let transport = HttpTransport::new(TransportConfig::new("https://api.paragon.io".parse()?))?;
//! let client = ParagonClient::new(transport);
//! let user = client.fetch_user(&UserId::parse("u1")?).await?;
//! println!("{:?}", user.name());
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `id.rs` — [`UserId`], validated on construction;
//! - `user.rs` — [`User`], every field ParagoN sent plus the exact bytes;
//! - `request.rs` — [`ParagonRequest`] ([`Endpoint`] and the call's wait ledger) /
//!   [`ParagonResponse`], what the stack speaks;
//! - `error.rs` — [`Error`], and how each kind counts for cache, limiter and breaker;
//! - `transport.rs` — [`HttpTransport`], bounded reads, timeouts, bearer key;
//! - `client.rs` — the [`ParagonClient`] façade;
//! - `codec.rs` — [`ParagonCodec`], answers as bytes for a shared cache tier;
//! - `testing.rs` — [`testing::FakeParagon`] (feature `testing`).

mod client;
mod codec;
mod error;
mod id;
mod report;
mod request;
mod secret;
// Documented always (`doc`), built for users only with the `testing` feature.
#[cfg(any(test, doc, feature = "testing"))]
pub mod testing;
pub mod transport;
mod user;

pub use client::{Fetched, ParagonClient};
pub use codec::ParagonCodec;
pub use error::Error;
pub use id::{is_id_byte, InvalidUserId, UserId, MAX_ID_LEN};
pub use paragon_layers::cache::CacheStatus;
pub use paragon_layers::Priority;
pub use report::{CallReport, UpstreamCall};
pub use request::{Endpoint, ParagonRequest, ParagonResponse, Resource};
pub use secret::Secret;
pub use transport::{HttpTransport, TransportConfig, TransportError};
pub use user::{User, UserDecodeError, Validators};
