//! [`UserId`]: a user id checked once, at the edge of the system.
//!
//! The contract's alphabet (`A–Z a–z 0–9 - _ . ~`, 1–128 bytes, not `.` or `..`)
//! makes an id one safe URL path segment, so no request can reach another upstream path;
//! a parsed id is an `Arc<str>`, cheap to clone into cache keys and batch results.

use std::fmt;
use std::sync::Arc;

/// Longest id accepted, in characters.
pub const MAX_ID_LEN: usize = 128;

/// A validated ParagoN user id: 1–128 characters of `A–Z a–z 0–9 - _ . ~`, not `.` or `..`.
///
/// Every character is unreserved in a URL path, so an id is always exactly one path
/// segment: no id can reach another upstream path. Cloning is cheap (shared string).
///
/// ```
/// use paragon_client::UserId;
/// assert!(UserId::parse("u-42").is_ok());
/// assert!(UserId::parse("../admin").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<str>);

/// Why a string is not a valid [`UserId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUserId {
    /// The id is empty.
    #[error("the id is empty")]
    Empty,
    /// The id is longer than [`MAX_ID_LEN`] bytes.
    #[error("the id is {len} bytes long; at most {MAX_ID_LEN} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The id holds a character outside `A–Z a–z 0–9 - _ . ~`.
    #[error("the id holds {ch:?} at position {position}; only A-Z a-z 0-9 - _ . ~ are allowed")]
    BadCharacter {
        /// The first offending character.
        ch: char,
        /// Its position, in characters from 0.
        position: usize,
    },
    /// The id is `.` or `..`.
    #[error("the id may not be \".\" or \"..\"")]
    DotSegment,
}

/// Whether `b` may appear in an id.
#[inline]
pub fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

impl UserId {
    /// Validates `s` as an id.
    pub fn parse(s: &str) -> Result<UserId, InvalidUserId> {
        validate(s)?;
        Ok(UserId(Arc::from(s)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(s: &str) -> Result<(), InvalidUserId> {
    if s.is_empty() {
        return Err(InvalidUserId::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(InvalidUserId::TooLong { len: s.len() });
    }
    if let Some((position, ch)) = s
        .chars()
        .enumerate()
        .find(|(_, c)| !c.is_ascii() || !is_id_byte(*c as u8))
    {
        return Err(InvalidUserId::BadCharacter { ch, position });
    }
    if s == "." || s == ".." {
        return Err(InvalidUserId::DotSegment);
    }
    Ok(())
}

impl std::str::FromStr for UserId {
    type Err = InvalidUserId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UserId::parse(s)
    }
}

impl TryFrom<&str> for UserId {
    type Error = InvalidUserId;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        UserId::parse(s)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({:?})", &*self.0)
    }
}

impl AsRef<str> for UserId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["a", "u1", "A-Z_a.z~0", "...", ".a", "a..", &"x".repeat(128)] {
            assert!(UserId::parse(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn rejects_everything_else_precisely() {
        assert_eq!(UserId::parse(""), Err(InvalidUserId::Empty));
        assert_eq!(UserId::parse("."), Err(InvalidUserId::DotSegment));
        assert_eq!(UserId::parse(".."), Err(InvalidUserId::DotSegment));
        assert_eq!(
            UserId::parse(&"x".repeat(129)),
            Err(InvalidUserId::TooLong { len: 129 })
        );
        assert_eq!(
            UserId::parse("a/b"),
            Err(InvalidUserId::BadCharacter {
                ch: '/',
                position: 1
            })
        );
        for bad in [
            "%2F", "a b", "a?b", "a#b", "a&b", "a\r\nb", "é", "a\0", "a+b", "a@b", "a:b",
        ] {
            assert!(
                matches!(UserId::parse(bad), Err(InvalidUserId::BadCharacter { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn every_way_in_and_out_keeps_the_id() {
        let id = UserId::parse("u-42").unwrap();
        assert_eq!(id.as_str(), "u-42");
        assert_eq!(AsRef::<str>::as_ref(&id), "u-42");
        assert_eq!(id.to_string(), "u-42");
        assert_eq!(format!("{id:?}"), r#"UserId("u-42")"#);
        assert_eq!("u-42".parse::<UserId>(), Ok(id.clone()));
        assert_eq!(UserId::try_from("u-42"), Ok(id));
        assert_eq!("..".parse::<UserId>(), Err(InvalidUserId::DotSegment));
        assert_eq!(UserId::try_from(""), Err(InvalidUserId::Empty));
    }

    proptest! {
        #[test]
        fn valid_ids_are_exactly_the_documented_ones(s in "\\PC{0,140}") {
            let ok = !s.is_empty() && s.len() <= 128 && s != "." && s != ".."
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b));
            prop_assert_eq!(UserId::parse(&s).is_ok(), ok);
        }
    }
}
