//! Secrets (the API key, tokens) that never print.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret (API key, admin token): printed and serialized only as `<redacted>`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The value itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is empty (not set).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "\"<redacted>\""
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "<redacted>" })
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Only strings; and an error never repeats the value (serde's default "invalid
        // type: found integer `123…`" would print a numeric secret).
        struct V;
        fn not_a_string<E: serde::de::Error>() -> E {
            E::custom("a secret must be a string (quote it); its value is not shown")
        }
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Secret, E> {
                Ok(Secret(v))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(not_a_string())
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(not_a_string())
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(not_a_string())
            }
            fn visit_i128<E: serde::de::Error>(self, _: i128) -> Result<Secret, E> {
                Err(not_a_string())
            }
            fn visit_u128<E: serde::de::Error>(self, _: u128) -> Result<Secret, E> {
                Err(not_a_string())
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(not_a_string())
            }
            fn visit_char<E: serde::de::Error>(self, _: char) -> Result<Secret, E> {
                Err(not_a_string())
            }
            fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Secret, E> {
                Err(not_a_string())
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_of_the_wrong_type_is_refused_without_showing_it() {
        #[derive(Debug, Deserialize)]
        struct W {
            #[allow(dead_code)]
            k: Secret,
        }
        for text in [
            r#"{"k": 987654321987}"#,
            r#"{"k": -987654321987}"#,
            r#"{"k": 98765.4321}"#,
            r#"{"k": true}"#,
        ] {
            let e = serde_json::from_str::<W>(text).unwrap_err().to_string();
            assert!(!e.contains("98765") && !e.contains("true"), "{e}");
        }
        let w: W = serde_json::from_str(r#"{"k": "987654321987"}"#).unwrap();
        assert_eq!(w.k.expose(), "987654321987");
        // An owned string (a `Value`, a reader) is kept as well.
        let w: W = serde_json::from_value(serde_json::json!({"k": "sk-1"})).unwrap();
        assert_eq!(w.k.expose(), "sk-1");
        let e = serde_json::from_str::<W>(r#"{"k": {}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected a string"), "{e}");
    }

    #[test]
    fn every_non_string_form_is_refused_whatever_the_format() {
        use serde::de::value::{
            BytesDeserializer, CharDeserializer, Error as E, I128Deserializer, U128Deserializer,
        };
        let refused = |r: Result<Secret, E>| {
            let e = r.expect_err("not a string").to_string();
            assert!(e.contains("must be a string"), "{e}");
        };
        refused(Secret::deserialize(I128Deserializer::<E>::new(-7)));
        refused(Secret::deserialize(U128Deserializer::<E>::new(7)));
        refused(Secret::deserialize(CharDeserializer::<E>::new('k')));
        refused(Secret::deserialize(BytesDeserializer::<E>::new(b"k")));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "\"<redacted>\"");
        assert_eq!(
            format!("{:?}", Secret::default()),
            "\"\"",
            "unset shows as unset"
        );
        #[derive(Serialize)]
        struct W {
            k: Secret,
        }
        assert!(!serde_json::to_string(&W { k: s })
            .unwrap()
            .contains("hunter2"));
    }
}
