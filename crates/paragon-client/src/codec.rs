//! Cache entries of ParagoN answers as bytes, for a shared cache tier.

use bytes::Bytes;
use paragon_layers::cache::{CachedValue, TierCodec};

use crate::{Endpoint, Error, ParagonResponse, Resource, User, Validators};

/// Encodes user documents as their exact JSON bytes (tag `u`), or, when ParagoN sent
/// validators, as tag `v`, the `ETag` and the `Last-Modified` (each a big-endian `u16`
/// length and its bytes), then the JSON bytes; "no such user" is the tag `n`. Decoding
/// re-validates the document against the requested id.
#[derive(Clone, Copy, Debug, Default)]
pub struct ParagonCodec;

impl TierCodec<Endpoint, ParagonResponse, Error> for ParagonCodec {
    fn key(&self, key: &Endpoint) -> String {
        match key {
            Endpoint::GetUser(id) => format!("user:{id}"),
        }
    }

    fn encode(&self, value: &CachedValue<ParagonResponse, Error>) -> Option<Vec<u8>> {
        match value {
            CachedValue::Value(ParagonResponse {
                resource: Resource::User(user),
                ..
            }) => {
                let raw = user.raw_json();
                let mut out = Vec::with_capacity(raw.len() + 1);
                match user.validators() {
                    None => out.push(b'u'),
                    Some(v) => {
                        out.push(b'v');
                        for field in [&v.etag, &v.last_modified] {
                            let bytes = field.as_deref().unwrap_or("").as_bytes();
                            out.extend_from_slice(&u16::try_from(bytes.len()).ok()?.to_be_bytes());
                            out.extend_from_slice(bytes);
                        }
                    }
                }
                out.extend_from_slice(&raw);
                Some(out)
            }
            CachedValue::Value(_) => None,
            CachedValue::Negative(Error::NotFound) => Some(vec![b'n']),
            CachedValue::Negative(_) => None,
        }
    }

    fn decode(&self, key: &Endpoint, bytes: &[u8]) -> Option<CachedValue<ParagonResponse, Error>> {
        let Endpoint::GetUser(id) = key;
        match bytes.split_first()? {
            (b'u', raw) => {
                let user = User::decode(id, Bytes::copy_from_slice(raw)).ok()?;
                Some(CachedValue::Value(ParagonResponse::new(Resource::User(
                    user,
                ))))
            }
            (b'v', mut rest) => {
                let mut field = || -> Option<&[u8]> {
                    let (len, tail) = rest.split_first_chunk::<2>()?;
                    let len = usize::from(u16::from_be_bytes(*len));
                    let (value, tail) = (tail.get(..len)?, tail.get(len..)?);
                    rest = tail;
                    Some(value)
                };
                let etag = field()?;
                let last_modified = field()?;
                let validators = Validators::from_headers(Some(etag), Some(last_modified));
                let user = User::decode(id, Bytes::copy_from_slice(rest)).ok()?;
                Some(CachedValue::Value(ParagonResponse::new(Resource::User(
                    user.with_validators(validators),
                ))))
            }
            (b'n', []) => Some(CachedValue::Negative(Error::NotFound)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UserId;

    #[test]
    fn round_trips_and_refuses_foreign_bytes() {
        let id = UserId::parse("u1").unwrap();
        let key = Endpoint::GetUser(id.clone());
        let user = User::decode(&id, Bytes::from_static(br#"{"id":"u1","x":1}"#)).unwrap();
        let value = CachedValue::Value(ParagonResponse::new(Resource::User(user.clone())));
        let bytes = ParagonCodec.encode(&value).unwrap();
        assert_eq!(ParagonCodec.decode(&key, &bytes), Some(value));
        let neg = ParagonCodec
            .encode(&CachedValue::Negative(Error::NotFound))
            .unwrap();
        assert_eq!(
            ParagonCodec.decode(&key, &neg),
            Some(CachedValue::Negative(Error::NotFound))
        );
        assert_eq!(
            ParagonCodec.encode(&CachedValue::Negative(Error::Overloaded)),
            None
        );
        // Another user's document under this key is refused.
        let other = Endpoint::GetUser(UserId::parse("u2").unwrap());
        assert_eq!(ParagonCodec.decode(&other, &bytes), None);
        assert_eq!(ParagonCodec.decode(&key, b"x{}"), None);
        assert_eq!(ParagonCodec.decode(&key, b""), None);
        assert_eq!(ParagonCodec.key(&key), "user:u1");
        // Validators travel with the user.
        let validators = Validators {
            etag: Some("\"v7\"".into()),
            last_modified: None,
        };
        let tagged = user.with_validators(Some(validators.clone()));
        let value = CachedValue::Value(ParagonResponse::new(Resource::User(tagged)));
        let bytes = ParagonCodec.encode(&value).unwrap();
        let Some(CachedValue::Value(back)) = ParagonCodec.decode(&key, &bytes) else {
            panic!("decodes")
        };
        let Resource::User(back) = back.resource else {
            panic!("a user")
        };
        assert_eq!(back.validators(), Some(&validators));
        assert_eq!(ParagonCodec.decode(&key, &bytes[..4]), None);
        assert_eq!(
            ParagonCodec.encode(&CachedValue::Value(ParagonResponse::new(
                Resource::NotModified
            ))),
            None
        );
    }
}
