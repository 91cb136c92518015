//! Value types of the configuration file: durations as strings, secrets that never print.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A list written as a TOML array, or as one comma-separated string, as an environment
/// variable gives it: `PARAGON_EDGE__SERVER__CORS_ALLOWED_ORIGINS=http://localhost:3000,https://app.example`.
pub(crate) fn comma_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: From<String>,
{
    #[derive(Deserialize)]
    #[serde(
        untagged,
        expecting = "a list of strings, or one comma-separated string"
    )]
    enum Form {
        List(Vec<String>),
        Text(String),
    }
    let items = match Form::deserialize(d)? {
        Form::List(items) => items,
        Form::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    };
    Ok(items.into_iter().map(T::from).collect())
}

/// A duration written as a string such as `"250ms"`, `"2s"` or `"5m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Dur {
    /// Whole seconds.
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }

    /// Milliseconds.
    pub const fn millis(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"250ms\", \"2s\" or \"5m\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dur, E> {
                let t = v.trim();
                if t.starts_with('-') {
                    return Err(E::custom(format!(
                        "{v:?} is negative; durations must be positive"
                    )));
                }
                humantime::parse_duration(t).map(Dur).map_err(|e| {
                    E::custom(format!(
                        "{v:?} is not a duration ({e}); write e.g. \"250ms\", \"2s\", \"5m\""
                    ))
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// A URL whose password never prints (the rest of it does, so the printed configuration
/// and error messages still say where it points): `upstream.base_url` and `redis.*`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

/// A Redis URL; its password never prints.
pub type RedisUrl = SecretUrl;

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(s: impl Into<String>) -> SecretUrl {
        SecretUrl(s.into())
    }

    /// The URL itself, for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `redacted`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

/// `text` with the password of its user part replaced by `redacted`; text that does not
/// parse as a URL loses its whole user part (everything before an `@` of the authority),
/// so a malformed URL cannot leak a password into an error message either.
pub fn redact_url(text: &str) -> String {
    if let Ok(mut u) = url::Url::parse(text) {
        if u.password().is_some() {
            let _ = u.set_password(Some("redacted"));
            return u.to_string();
        }
    }
    // Not a URL with a password as the parser reads it: drop any user part it may still
    // hold (`scheme:user:pw@…`, `scheme://user:pw@bad host/…`).
    let start = text
        .find("://")
        .map(|i| i + 3)
        .or_else(|| text.find(':').map(|i| i + 1))
        .unwrap_or(0);
    let authority_end = text[start..]
        .find(['/', '?', '#'])
        .map_or(text.len(), |i| start + i);
    match text[start..authority_end].rfind('@') {
        Some(at) => format!("{}redacted{}", &text[..start], &text[start + at..]),
        None => text.to_owned(),
    }
}

impl From<String> for SecretUrl {
    fn from(s: String) -> Self {
        SecretUrl(s)
    }
}

impl From<&str> for SecretUrl {
    fn from(s: &str) -> Self {
        SecretUrl(s.to_owned())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretUrl)
    }
}

/// Where shared state lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In this process.
    #[default]
    Memory,
    /// In Redis, shared by every instance.
    Redis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize)]
    struct T {
        d: Dur,
    }

    #[test]
    fn durations_parse_and_print() {
        let t: T = toml::from_str("d = \"250ms\"").unwrap();
        assert_eq!(t.d, Dur::millis(250));
        let t: T = toml::from_str("d = \"5m\"").unwrap();
        assert_eq!(t.d, Dur::secs(300));
        assert_eq!(toml::to_string(&t).unwrap().trim(), "d = \"5m\"");
        assert!(toml::from_str::<T>("d = \"-5s\"")
            .unwrap_err()
            .to_string()
            .contains("negative"));
        assert!(toml::from_str::<T>("d = \"soon\"").is_err());
        assert!(toml::from_str::<T>("d = 5").is_err());
    }

    #[test]
    fn redis_urls_hide_only_the_password() {
        let u = RedisUrl::new("redis://user:pw-secret@cache.internal:6380/2");
        assert_eq!(u.redacted(), "redis://user:redacted@cache.internal:6380/2");
        assert!(!format!("{u:?}").contains("pw-secret"));
        assert_eq!(
            RedisUrl::new("redis://127.0.0.1:6379").redacted(),
            "redis://127.0.0.1:6379"
        );
    }

    #[test]
    fn malformed_urls_lose_their_user_part() {
        assert_eq!(
            redact_url("https://user:pw-secret@bad host/x"),
            "https://redacted@bad host/x"
        );
        assert_eq!(redact_url("not a url"), "not a url");
        assert!(!redact_url("a:pw-secret@b:c:d").contains("pw-secret"));
    }
}
