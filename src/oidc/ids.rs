//! Random identifiers in Dex's format.

use rand::RngCore;

const BASE32_LOWER: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A new random identifier exactly like Dex's `NewID()`: 16 random bytes, the first
/// mapped to a letter (`a` + b0 mod 26) so the id never starts with a digit, the
/// other 15 as lowercase unpadded base32 — 25 characters.
///
/// Used for auth request ids, auth codes, refresh token ids and secrets.
pub fn new_id() -> String {
    random_id(16)
}

/// A per-auth-request HMAC key: Dex uses a 51-character random id (32 bytes).
pub fn new_hmac_key() -> Vec<u8> {
    random_id(32).into_bytes()
}

fn random_id(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    encode_id(&bytes)
}

/// Dex's id encoding of `bytes` (deterministic; exposed to the module for tests).
pub(crate) fn encode_id(bytes: &[u8]) -> String {
    let Some((first, rest)) = bytes.split_first() else {
        return String::new();
    };
    let mut out = String::with_capacity(1 + rest.len() * 8 / 5 + 1);
    out.push(char::from(b'a' + first % 26));
    base32_lower(rest, &mut out);
    out
}

fn base32_lower(data: &[u8], out: &mut String) {
    let mut buffer: u32 = 0;
    let mut bits: u32 = 0;
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32_LOWER[((buffer >> bits) & 31) as usize]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(
            BASE32_LOWER[((buffer << (5 - bits)) & 31) as usize],
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_id_is_25_chars_starting_with_a_letter() {
        for _ in 0..200 {
            let id = new_id();
            assert_eq!(id.len(), 25);
            assert!(id.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c))
            );
        }
        assert_ne!(new_id(), new_id());
    }

    #[test]
    fn hmac_key_is_51_chars() {
        assert_eq!(new_hmac_key().len(), 51);
    }

    #[test]
    fn encoding_matches_rfc4648_base32_lowercased() {
        // First byte 27 → 'b'; then RFC 4648 "foobar" → "MZXW6YTBOI".
        let mut bytes = vec![27u8];
        bytes.extend_from_slice(b"foobar");
        assert_eq!(encode_id(&bytes), "bmzxw6ytboi");
        // 15 bytes encode to exactly 24 characters.
        assert_eq!(encode_id(&[0u8; 16]), format!("a{}", "a".repeat(24)));
    }
}
