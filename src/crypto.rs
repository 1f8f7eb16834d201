//! Every cryptographic primitive oxidex uses outside key handling, on aws-lc-rs:
//! SHA-256, the OIDC token hash, HMAC-SHA256, constant-time comparison; and random
//! values (bytes, Dex's identifiers, tokens over an alphabet) from the operating
//! system's generator. One copy of each, so a fix or an audit covers every caller.

use aws_lc_rs::{constant_time, digest, hmac};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::keys::SigningAlgorithm;

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

/// `base64url(SHA-256(verifier))` without padding: an S256 PKCE challenge
/// (RFC 7636 §4.2).
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()))
}

/// `at_hash` / `c_hash` (OIDC Core §3.1.3.6, §3.3.2.11): the left half of the hash
/// of the ASCII token, base64url without padding, the hash being the one of the
/// ID token's `alg`.
///
/// RS256 and ES256 use SHA-256, as Dex v2.45 does (`hashForSigAlg` in
/// `server/oauth2.go`). Dex's table has no EdDSA entry: a Dex signing with EdDSA
/// (possible only through its Vault signer) fails every ID token that carries a
/// hash, so there is no Dex value to match. We use SHA-512, the hash inside
/// Ed25519, which is what the openidconnect crate and panva's oidc-token-hash
/// (node openid-client) check (README, "Differences from Dex").
pub fn token_hash(algorithm: SigningAlgorithm, token: &str) -> String {
    let hash = match algorithm {
        SigningAlgorithm::RS256 | SigningAlgorithm::ES256 => {
            digest::digest(&digest::SHA256, token.as_bytes())
        }
        SigningAlgorithm::EdDSA => digest::digest(&digest::SHA512, token.as_bytes()),
    };
    let bytes = hash.as_ref();
    URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() / 2])
}

/// HMAC-SHA256 of `message` under `key` (any length; signing cannot fail, so
/// there is no error path that could fall back to a guessable MAC).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Whether `tag` is the HMAC-SHA256 of `message` under `key`, compared in
/// constant time.
pub fn hmac_sha256_verify(key: &[u8], message: &[u8], tag: &[u8]) -> bool {
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, key), message, tag).is_ok()
}

/// [`hmac_sha256`] as base64url without padding (the form our URLs and forms carry).
pub fn hmac_sha256_b64(key: &[u8], message: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(hmac_sha256(key, message))
}

/// Whether `presented` is [`hmac_sha256_b64`] of `message` under `key`; anything
/// that is not base64url is refused. Constant-time in the tag's contents.
pub fn hmac_sha256_b64_verify(key: &[u8], message: &[u8], presented: &str) -> bool {
    URL_SAFE_NO_PAD
        .decode(presented.as_bytes())
        .is_ok_and(|tag| hmac_sha256_verify(key, message, &tag))
}

/// `a == b` in time that depends only on the lengths (a length mismatch is
/// answered at once, which leaks only the length).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// Fills `buf` from the operating system's CSPRNG (`getrandom(2)` on Linux).
///
/// Not AWS-LC's generator: AWS-LC seeds it from CPU jitter on its first use in a
/// process, which takes tens of milliseconds (measured 67–104 ms on a loaded
/// 2-core VM) — a cost every start would pay before serving, since ids are
/// drawn during start-up. AWS-LC's generator is still what its own key
/// generation, RSA blinding and ECDSA nonces use; [`warm_up_key_generator`]
/// seeds it in the background.
pub fn fill_random(buf: &mut [u8]) {
    // The kernel generator does not fail once seeded (early boot is long past
    // when a service runs); should it ever, handing out zero bytes as a secret
    // would be worse than stopping.
    if getrandom::fill(buf).is_err() {
        std::process::abort();
    }
}

/// Makes AWS-LC seed its own generator now (see [`fill_random`]), so the first
/// key generation or signature of a request does not wait for it. Blocking:
/// call it off the async threads.
pub fn warm_up_key_generator() {
    let mut byte = [0u8; 1];
    if aws_lc_rs::rand::fill(&mut byte).is_err() {
        std::process::abort();
    }
}

/// `N` random bytes.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    fill_random(&mut out);
    out
}

const BASE32_LOWER: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// `len` characters each drawn uniformly from `alphabet` (at most 256 symbols;
/// bytes that would bias the draw are discarded).
pub fn random_string(alphabet: &[u8], len: usize) -> String {
    let Ok(symbols) = u16::try_from(alphabet.len()) else {
        return String::new();
    };
    if symbols == 0 || symbols > 256 {
        return String::new();
    }
    // The largest multiple of `symbols` that fits in a byte's 256 values.
    let accept = 256 - 256 % symbols;
    let mut out = String::with_capacity(len);
    let mut pool = [0u8; 64];
    while out.len() < len {
        fill_random(&mut pool);
        for &byte in &pool {
            if out.len() == len {
                break;
            }
            if u16::from(byte) < accept {
                let index = usize::from(u16::from(byte) % symbols);
                out.push(char::from(alphabet.get(index).copied().unwrap_or(b'a')));
            }
        }
    }
    out
}

/// A random lowercase base32 string of `len` characters (5 bits each).
pub fn random_token(len: usize) -> String {
    random_string(BASE32_LOWER, len)
}

/// A new random identifier exactly like Dex's `NewID()`: 16 random bytes, the first
/// mapped to a letter (`a` + b0 mod 26) so the id never starts with a digit, the
/// other 15 as lowercase unpadded base32 — 25 characters.
///
/// Used for auth request ids, auth codes, refresh token ids and secrets.
pub fn new_id() -> String {
    encode_id(&random_bytes::<16>())
}

/// A per-auth-request HMAC key: Dex uses a 51-character random id (32 bytes).
pub fn new_hmac_key() -> Vec<u8> {
    new_long_id().into_bytes()
}

/// Dex's id scheme over 32 random bytes (51 characters): device codes, HMAC keys.
pub fn new_long_id() -> String {
    encode_id(&random_bytes::<32>())
}

/// Dex's id encoding of `bytes`.
fn encode_id(bytes: &[u8]) -> String {
    let Some((first, rest)) = bytes.split_first() else {
        return String::new();
    };
    let mut out = String::with_capacity(1 + rest.len() * 8 / 5 + 1);
    out.push(char::from(b'a' + first % 26));
    let mut buffer: u32 = 0;
    let mut bits: u32 = 0;
    for &byte in rest {
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
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha256_and_hmac_match_their_published_vectors() {
        // FIPS 180-2 appendix B.1.
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // RFC 4231 test case 2.
        let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(hmac_sha256_verify(
            b"Jefe",
            b"what do ya want for nothing?",
            &tag
        ));
        assert!(!hmac_sha256_verify(
            b"Jeff",
            b"what do ya want for nothing?",
            &tag
        ));
        assert!(!hmac_sha256_verify(b"Jefe", b"what do ya want", &tag));
        assert!(!hmac_sha256_verify(
            b"Jefe",
            b"what do ya want for nothing?",
            &tag[..31]
        ));
    }

    #[test]
    fn base64_hmac_refuses_other_tags_and_non_base64() {
        let mac = hmac_sha256_b64(b"k", b"m");
        assert_eq!(mac.len(), 43);
        assert!(hmac_sha256_b64_verify(b"k", b"m", &mac));
        assert!(!hmac_sha256_b64_verify(b"k", b"n", &mac));
        assert!(!hmac_sha256_b64_verify(b"k", b"m", &format!("{mac}A")));
        assert!(!hmac_sha256_b64_verify(b"k", b"m", "not base64 !"));
        assert!(!hmac_sha256_b64_verify(b"k", b"m", ""));
    }

    #[test]
    fn s256_challenge_is_rfc7636_appendix_b() {
        assert_eq!(
            s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret "));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn at_hash_follows_the_algorithm() {
        // OIDC Core example: at_hash of "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y" (RS256).
        assert_eq!(
            token_hash(
                SigningAlgorithm::RS256,
                "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"
            ),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
        assert_eq!(token_hash(SigningAlgorithm::ES256, "x").len(), 22);
        // SHA-512 half = 32 bytes = 43 base64url chars.
        assert_eq!(token_hash(SigningAlgorithm::EdDSA, "x").len(), 43);
    }

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
    fn hmac_key_and_long_id_are_51_chars() {
        assert_eq!(new_hmac_key().len(), 51);
        assert_eq!(new_long_id().len(), 51);
    }

    #[test]
    fn encoding_matches_rfc4648_base32_lowercased() {
        // First byte 27 → 'b'; then RFC 4648 "foobar" → "MZXW6YTBOI".
        let mut bytes = vec![27u8];
        bytes.extend_from_slice(b"foobar");
        assert_eq!(encode_id(&bytes), "bmzxw6ytboi");
        // 15 bytes encode to exactly 24 characters.
        assert_eq!(encode_id(&[0u8; 16]), format!("a{}", "a".repeat(24)));
        assert_eq!(encode_id(&[]), "");
    }

    #[test]
    fn random_strings_use_every_symbol_of_their_alphabet_and_only_those() {
        let token = random_token(4096);
        assert_eq!(token.len(), 4096);
        for &symbol in BASE32_LOWER {
            assert!(token.as_bytes().contains(&symbol), "{symbol} never drawn");
        }
        // An alphabet that does not divide 256 still yields only its symbols.
        let twenty = b"BCDFGHJKLMNPQRSTVWXZ";
        let drawn = random_string(twenty, 4096);
        assert_eq!(drawn.len(), 4096);
        assert!(drawn.bytes().all(|b| twenty.contains(&b)));
        for &symbol in twenty {
            assert!(drawn.as_bytes().contains(&symbol));
        }
        assert_eq!(random_string(b"", 5), "");
        assert_eq!(random_token(0), "");
        assert_ne!(random_token(26), random_token(26));
    }
}
