use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::UserId;

/// A ParagoN user: every field ParagoN sent, known or not, and the exact bytes it sent.
///
/// Cloning is cheap (shared). [`User::raw_json`] gives the document exactly as received,
/// so nothing is dropped or reordered on the way to a frontend.
#[derive(Clone)]
pub struct User(Arc<Inner>);

struct Inner {
    id: UserId,
    raw: Bytes,
    fields: Map<String, Value>,
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
    /// Decodes ParagoN's answer for `id`.
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
            id: id.clone(),
            raw,
            fields,
        })))
    }

    /// The user's id.
    pub fn id(&self) -> &UserId {
        &self.0.id
    }

    /// The `name` field, when it is a string.
    pub fn name(&self) -> Option<&str> {
        self.get("name").and_then(Value::as_str)
    }

    /// The `email` field, when it is a string.
    pub fn email(&self) -> Option<&str> {
        self.get("email").and_then(Value::as_str)
    }

    /// Any field by name.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.0.fields.get(field)
    }

    /// Every field, in the order ParagoN sent them.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.0.fields
    }

    /// The document exactly as ParagoN sent it (a cheap shared handle).
    pub fn raw_json(&self) -> Bytes {
        self.0.raw.clone()
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.0.id)
            .field("fields", &self.0.fields.len())
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
    fn keeps_unknown_fields_and_raw_bytes() {
        let raw =
            Bytes::from_static(br#"{"id":"u1","name":"Ann","zeta":{"x":[1,2]},"email":"a@x"}"#);
        let u = User::decode(&id("u1"), raw.clone()).unwrap();
        assert_eq!(u.name(), Some("Ann"));
        assert_eq!(u.email(), Some("a@x"));
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
    }
}
