//! Dex's wire encodings: the `sub` claim and the refresh-token value.
//!
//! Both are `base64url_nopad(protobuf message { 1: string; 2: string })` in
//! standard proto3 encoding (empty strings omitted, varint lengths), so tokens and
//! Kubernetes RBAC bindings made against Dex keep working unchanged.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `sub` for a user of a connector: protobuf {1: user id, 2: connector id}.
pub fn encode_subject(user_id: &str, connector_id: &str) -> String {
    encode_pair(user_id, connector_id)
}

/// The (user id, connector id) a `sub` encodes, or `None` when it is not Dex's
/// encoding.
pub fn decode_subject(subject: &str) -> Option<(String, String)> {
    decode_pair(subject)
}

/// A refresh token as the client sees it: the stable storage id and the current secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenWire {
    pub id: String,
    pub token: String,
}

impl RefreshTokenWire {
    /// The value handed to clients: protobuf {1: id, 2: token}, base64url.
    pub fn encode(&self) -> String {
        encode_pair(&self.id, &self.token)
    }

    /// Parses a presented refresh token. Like Dex, a value that does not decode is
    /// taken as a bare legacy id with an empty secret, which never matches a stored
    /// secret, so the lookup still rejects it.
    pub fn decode(value: &str) -> Self {
        match decode_pair(value) {
            Some((id, token)) => Self { id, token },
            None => Self {
                id: value.to_owned(),
                token: String::new(),
            },
        }
    }
}

fn encode_pair(first: &str, second: &str) -> String {
    let mut out = Vec::with_capacity(first.len() + second.len() + 8);
    put_string_field(&mut out, 1, first);
    put_string_field(&mut out, 2, second);
    URL_SAFE_NO_PAD.encode(out)
}

fn put_string_field(out: &mut Vec<u8>, field: u8, value: &str) {
    if value.is_empty() {
        return;
    }
    out.push((field << 3) | 2);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value.as_bytes());
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn decode_pair(encoded: &str) -> Option<(String, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    let mut reader = Reader { bytes: &bytes };
    let (mut first, mut second) = (String::new(), String::new());
    while !reader.bytes.is_empty() {
        let key = reader.varint()?;
        let field = key >> 3;
        match (field, key & 7) {
            (0, _) => return None,
            (1 | 2, 2) => {
                // proto3 strings must be UTF-8, as Go's decoder enforces.
                let value = String::from_utf8(reader.length_delimited()?.to_vec()).ok()?;
                if field == 1 {
                    first = value;
                } else {
                    second = value;
                }
            }
            (1 | 2, _) => return None,
            // Unknown fields are skipped, as protobuf decoders do.
            (_, 0) => {
                reader.varint()?;
            }
            (_, 1) => reader.skip(8)?,
            (_, 2) => {
                reader.length_delimited()?;
            }
            (_, 5) => reader.skip(4)?,
            _ => return None,
        }
    }
    Some((first, second))
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.bytes.split_first()?;
            self.bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn skip(&mut self, len: usize) -> Option<()> {
        self.bytes = self.bytes.get(len..)?;
        Some(())
    }

    fn length_delimited(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        let value = self.bytes.get(..len)?;
        self.bytes = self.bytes.get(len..)?;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_matches_dex_test_vectors() {
        assert_eq!(encode_subject("foo", "bar"), "CgNmb28SA2Jhcg");
        assert_eq!(
            encode_subject("0-385-28089-0", "mock"),
            "Cg0wLTM4NS0yODA4OS0wEgRtb2Nr"
        );
        // Client credentials: empty connector id is omitted.
        assert_eq!(encode_subject("my-client", ""), "CglteS1jbGllbnQ");
    }

    #[test]
    fn subject_round_trips_including_long_values() {
        let long = "u".repeat(300); // needs a two-byte varint length
        let sub = encode_subject(&long, "gitea");
        assert_eq!(decode_pair(&sub), Some((long, "gitea".to_owned())));
        assert_eq!(
            decode_pair("CgNmb28SA2Jhcg"),
            Some(("foo".to_owned(), "bar".to_owned()))
        );
        assert_eq!(
            decode_pair("CglteS1jbGllbnQ"),
            Some(("my-client".to_owned(), String::new()))
        );
    }

    #[test]
    fn multi_byte_varint_is_encoded_like_protobuf() {
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, vec![0xac, 0x02]);
    }

    #[test]
    fn garbage_subjects_do_not_decode() {
        assert_eq!(decode_pair("not base64!"), None);
        // Field 1 claims 10 bytes but only 1 follows.
        assert_eq!(decode_pair(&URL_SAFE_NO_PAD.encode([0x0a, 10, b'x'])), None);
        // Field 1 with varint wire type.
        assert_eq!(decode_pair(&URL_SAFE_NO_PAD.encode([0x08, 1])), None);
        // Invalid UTF-8 string.
        assert_eq!(decode_pair(&URL_SAFE_NO_PAD.encode([0x0a, 1, 0xff])), None);
    }

    #[test]
    fn refresh_token_wire_round_trips_and_starts_like_dex() {
        let wire = RefreshTokenWire {
            id: "a".repeat(25),
            token: "b".repeat(25),
        };
        let encoded = wire.encode();
        assert!(encoded.starts_with("Chl"), "{encoded}");
        assert_eq!(RefreshTokenWire::decode(&encoded), wire);
    }

    #[test]
    fn undecodable_refresh_token_is_a_legacy_id_with_empty_secret() {
        let legacy = RefreshTokenWire::decode("bqzbcv6ssmhbxbpbcwwrfbhho");
        assert_eq!(legacy.id, "bqzbcv6ssmhbxbpbcwwrfbhho");
        assert_eq!(legacy.token, "");
    }
}
