//! [`User`]: a ParagoN user, kept as the exact bytes ParagoN sent.
//!
//! The edge answers with those bytes (all fields, unknown ones too), so the body is
//! checked once on arrival (valid JSON object, the requested id) and stored in one exact
//! allocation behind an `Arc`; fields are read on demand. That keeps a cached user its
//! body plus a few words, and a cache hit a pointer copy.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::UserId;

/// A ParagoN user: the exact bytes ParagoN sent, checked to be a JSON object whose `id`
/// is the one asked for.
///
/// Cloning is cheap (shared). [`User::raw_json`] gives the document exactly as received,
/// so nothing is dropped or reordered on the way to a frontend. Only those bytes are
/// kept, in a box of exactly their size behind a shared handle (the body copied once,
/// when decoded): a cache holds many users, and a parsed map beside the bytes cost about
/// fourteen times the body (2.9 KB for a 200-byte user), while a `Bytes` kept as read
/// would keep its buffer's spare capacity and, once shared, a header of its own. The
/// field accessors (the id included) parse the bytes each time they are called, so they
/// are for business code, not for a hot path.
#[derive(Clone)]
pub struct User(Arc<Inner>);

struct Inner {
    raw: Box<[u8]>,
    /// ParagoN's `ETag` / `Last-Modified` of this version, when it sent them; boxed, so
    /// a user without them costs one word.
    validators: Option<Box<Validators>>,
}

/// ParagoN's validators of one version of a document, sent back to ask whether it
/// changed (`If-None-Match`, `If-Modified-Since`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Validators {
    /// The `ETag`, exactly as sent.
    pub etag: Option<String>,
    /// The `Last-Modified` date, exactly as sent.
    pub last_modified: Option<String>,
}

impl Validators {
    /// Longest validator kept; a longer one is ignored (it is not sent back).
    pub const MAX_LEN: usize = 256;

    /// The validators of an answer's headers, each kept when it is printable ASCII of at
    /// most [`MAX_LEN`](Self::MAX_LEN) bytes; `None` when neither is usable.
    pub fn from_headers(etag: Option<&[u8]>, last_modified: Option<&[u8]>) -> Option<Self> {
        let keep = |v: Option<&[u8]>| {
            v.filter(|v| !v.is_empty() && v.len() <= Self::MAX_LEN)
                .filter(|v| v.iter().all(|b| (0x20..0x7f).contains(b)))
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let v = Validators {
            etag: keep(etag),
            last_modified: keep(last_modified),
        };
        (v.etag.is_some() || v.last_modified.is_some()).then_some(v)
    }
}

impl AsRef<[u8]> for User {
    fn as_ref(&self) -> &[u8] {
        &self.0.raw
    }
}

/// Why a body is not a user document for the requested id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserDecodeError {
    /// Not JSON at all.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("the body is JSON but not an object")]
    NotObject,
    /// An object without a string `id`.
    #[error("the user has no string \"id\" field")]
    MissingId,
    /// The `id` is not the one asked for.
    #[error("the user has id {found:?}, not the requested {expected:?}")]
    WrongId {
        /// The id asked for.
        expected: String,
        /// The id in the body (truncated to 128 characters).
        found: String,
    },
}

impl User {
    /// Decodes ParagoN's answer for `id`: the body must be a JSON object whose `id` is a
    /// string equal to `id`. The parsed document is checked and dropped; the bytes are kept.
    pub fn decode(id: &UserId, raw: Bytes) -> Result<User, UserDecodeError> {
        let value: Value =
            serde_json::from_slice(&raw).map_err(|e| UserDecodeError::NotJson(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(UserDecodeError::NotObject);
        };
        match fields.get("id") {
            Some(Value::String(found)) if found == id.as_str() => {}
            Some(Value::String(found)) => {
                return Err(UserDecodeError::WrongId {
                    expected: id.to_string(),
                    found: found.chars().take(128).collect(),
                })
            }
            _ => return Err(UserDecodeError::MissingId),
        }
        Ok(User(Arc::new(Inner {
            raw: Box::from(&raw[..]),
            validators: None,
        })))
    }

    /// This user with ParagoN's validators of its version.
    pub fn with_validators(self, validators: Option<Validators>) -> User {
        let Some(validators) = validators else {
            return self;
        };
        let raw = match Arc::try_unwrap(self.0) {
            Ok(inner) => inner.raw,
            Err(shared) => shared.raw.clone(),
        };
        User(Arc::new(Inner {
            raw,
            validators: Some(Box::new(validators)),
        }))
    }

    /// ParagoN's validators of this version, when it sent any.
    pub fn validators(&self) -> Option<&Validators> {
        self.0.validators.as_deref()
    }

    /// The user's id.
    ///
    /// Read from the document each time (it is not kept beside the bytes, to keep a
    /// cached user small); `decode` checked that it is there and valid.
    pub fn id(&self) -> UserId {
        let id = self
            .get("id")
            .and_then(|v| v.as_str().and_then(|s| UserId::parse(s).ok()));
        id.expect("decode accepted only a document whose id is the valid id asked for")
    }

    /// The `name` field, when it is a string.
    pub fn name(&self) -> Option<String> {
        self.string("name")
    }

    /// The `email` field, when it is a string.
    pub fn email(&self) -> Option<String> {
        self.string("email")
    }

    /// Any field by name (parsed from the bytes).
    pub fn get(&self, field: &str) -> Option<Value> {
        self.fields().remove(field)
    }

    /// Every field, in the order ParagoN sent them (parsed from the bytes).
    pub fn fields(&self) -> Map<String, Value> {
        // `decode` checked that the bytes are a JSON object, so this parse succeeds.
        serde_json::from_slice(&self.0.raw).unwrap_or_default()
    }

    /// The length of the document in bytes: what this user costs in a cache, besides a
    /// fixed overhead.
    pub fn body_len(&self) -> usize {
        self.0.raw.len()
    }

    fn string(&self, field: &str) -> Option<String> {
        match self.get(field)? {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The document exactly as ParagoN sent it (a cheap handle sharing this user's bytes).
    pub fn raw_json(&self) -> Bytes {
        Bytes::from_owner(self.clone())
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id())
            .field("bytes", &self.0.raw.len())
            .finish()
    }
}

impl PartialEq for User {
    fn eq(&self, other: &Self) -> bool {
        self.0.raw == other.0.raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn users_are_equal_by_their_bytes_and_print_without_their_fields() {
        let a = User::decode(
            &id("u1"),
            Bytes::from_static(br#"{"id":"u1","email":"a@x"}"#),
        )
        .unwrap();
        let same = User::decode(
            &id("u1"),
            Bytes::from_static(br#"{"id":"u1","email":"a@x"}"#),
        )
        .unwrap();
        let other = User::decode(
            &id("u1"),
            Bytes::from_static(br#"{"id":"u1","email":"b@x"}"#),
        )
        .unwrap();
        assert_eq!(a, same);
        assert_ne!(a, other);
        let printed = format!("{a:?}");
        assert_eq!(printed, r#"User { id: UserId("u1"), bytes: 25 }"#);
        assert!(
            !printed.contains("a@x"),
            "a user's fields never print: {printed}"
        );
    }

    #[test]
    fn keeps_unknown_fields_and_raw_bytes() {
        let raw =
            Bytes::from_static(br#"{"id":"u1","name":"Ann","zeta":{"x":[1,2]},"email":"a@x"}"#);
        let u = User::decode(&id("u1"), raw.clone()).unwrap();
        assert_eq!(u.name().as_deref(), Some("Ann"));
        assert_eq!(u.email().as_deref(), Some("a@x"));
        assert_eq!(u.get("zeta").unwrap()["x"][1], 2);
        assert_eq!(u.raw_json(), raw);
        let keys: Vec<_> = u.fields().keys().cloned().collect();
        assert_eq!(keys, ["id", "name", "zeta", "email"]);
    }

    #[test]
    fn rejects_bodies_that_are_not_this_user() {
        let d = |b: &'static [u8]| User::decode(&id("u1"), Bytes::from_static(b)).unwrap_err();
        assert!(matches!(d(b"<html>"), UserDecodeError::NotJson(_)));
        assert_eq!(d(b"[1]"), UserDecodeError::NotObject);
        assert_eq!(d(b"{}"), UserDecodeError::MissingId);
        assert_eq!(d(br#"{"id":7}"#), UserDecodeError::MissingId);
        assert!(matches!(
            d(br#"{"id":"u2"}"#),
            UserDecodeError::WrongId { .. }
        ));
        // Every other malformed form, each with its own error.
        assert!(matches!(d(b""), UserDecodeError::NotJson(_)));
        assert!(matches!(d(br#"{"id":"u1""#), UserDecodeError::NotJson(_)));
        assert!(matches!(
            d(br#"{"id":"u1"} x"#),
            UserDecodeError::NotJson(_)
        ));
        assert_eq!(d(br#""u1""#), UserDecodeError::NotObject);
        assert_eq!(d(b"null"), UserDecodeError::NotObject);
        assert_eq!(d(br#"{"id":null}"#), UserDecodeError::MissingId);
        assert_eq!(d(br#"{"id":["u1"]}"#), UserDecodeError::MissingId);
        assert_eq!(d(br#"{"ID":"u1"}"#), UserDecodeError::MissingId);
        assert_eq!(
            d(br#"{"id":"U1"}"#),
            UserDecodeError::WrongId {
                expected: "u1".into(),
                found: "U1".into()
            }
        );
        // A later duplicate `id` is the one that counts, as in the parsed document.
        assert!(matches!(
            d(br#"{"id":"u1","id":"u2"}"#),
            UserDecodeError::WrongId { .. }
        ));
        let long = format!(r#"{{"id":"{}"}}"#, "x".repeat(500));
        let e = User::decode(&id("u1"), Bytes::from(long)).unwrap_err();
        assert!(matches!(e, UserDecodeError::WrongId { found, .. } if found.len() == 128));
    }

    #[test]
    fn accessors_give_what_the_parsed_document_holds() {
        // The accessors parse on demand; they give what a map parsed once at decode did.
        for raw in [
            &br#"{"id":"u1","name":"Ann","email":"a@x"}"#[..],
            br#"{"email":"\u00e9\"q\"","id":"u1","name":7,"n":{"a":[1,2.5,null]}}"#,
            br#"{"id":"u1","name":"first","name":"second"}"#,
            br#"{"id":"u1"}"#,
        ] {
            let u = User::decode(&id("u1"), Bytes::from_static(raw)).unwrap();
            let parsed: Map<String, Value> = serde_json::from_slice(raw).unwrap();
            assert_eq!(u.fields(), parsed);
            let keys: Vec<_> = u.fields().keys().cloned().collect();
            assert_eq!(keys, parsed.keys().cloned().collect::<Vec<_>>());
            for f in ["id", "name", "email", "n", "absent"] {
                assert_eq!(u.get(f).as_ref(), parsed.get(f), "{f}");
            }
            let text = |f| parsed.get(f).and_then(Value::as_str).map(str::to_owned);
            assert_eq!(u.name(), text("name"));
            assert_eq!(u.email(), text("email"));
            assert_eq!(u.body_len(), raw.len());
        }
        let u = User::decode(
            &id("u1"),
            Bytes::from_static(br#"{"id":"u1","name":"a","name":"b"}"#),
        );
        assert_eq!(u.unwrap().name().as_deref(), Some("b"));
    }
}
