//! CSRF tokens for our HTML forms (password login, approval, device code).
//!
//! A token is bound to one auth request: HMAC-SHA256 under a server key over a label and
//! the auth request id, base64url without padding. The auth request id alone travels in
//! URLs (`state`, `req`), so it cannot serve as a secret; the MAC can only be produced by
//! the server, and a form from another auth request carries a different token.
//!
//! The label keeps these tokens distinct from other MACs computed over the same id (for
//! instance the approval-URL `hmac`), even if a caller passes the same key.

use crate::crypto;

/// The form field carrying the token.
pub const CSRF_FIELD: &str = "csrf_token";

const LABEL: &[u8] = b"oxidex csrf v1\0";

#[derive(Clone, PartialEq, Eq)]
pub struct CsrfToken(String);

impl CsrfToken {
    /// The token for forms of auth request `auth_request_id`.
    pub fn new(key: &[u8], auth_request_id: &str) -> Self {
        CsrfToken(crypto::hmac_sha256_b64(key, &message(auth_request_id)))
    }

    /// Whether `presented` (the submitted form field) is the token for this auth request.
    /// Constant-time in the token's contents.
    pub fn verify(key: &[u8], auth_request_id: &str, presented: &str) -> bool {
        crypto::hmac_sha256_b64_verify(key, &message(auth_request_id), presented)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CsrfToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfToken(<redacted>)")
    }
}

fn message(auth_request_id: &str) -> Vec<u8> {
    [LABEL, auth_request_id.as_bytes()].concat()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn accepts_own_token_and_refuses_another_requests() {
        let token = CsrfToken::new(KEY, "req-one");
        assert!(CsrfToken::verify(KEY, "req-one", token.as_str()));
        assert!(!CsrfToken::verify(KEY, "req-two", token.as_str()));
        let other = CsrfToken::new(KEY, "req-two");
        assert_ne!(token, other);
        assert!(!CsrfToken::verify(KEY, "req-one", other.as_str()));
    }

    #[test]
    fn refuses_other_key_garbage_and_empty() {
        let token = CsrfToken::new(KEY, "req");
        assert!(!CsrfToken::verify(b"another key", "req", token.as_str()));
        assert!(!CsrfToken::verify(KEY, "req", ""));
        assert!(!CsrfToken::verify(KEY, "req", "not base64 !!"));
        assert!(!CsrfToken::verify(KEY, "req", &token.as_str()[..10]));
        let mut padded = token.to_string();
        padded.push('A');
        assert!(!CsrfToken::verify(KEY, "req", &padded));
    }

    #[test]
    fn token_is_url_and_html_safe_and_differs_from_a_plain_mac() {
        let token = CsrfToken::new(KEY, "req");
        assert_eq!(token.as_str().len(), 43);
        assert!(
            token
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        let plain = crypto::hmac_sha256_b64(KEY, b"req");
        assert_ne!(token.as_str(), plain);
        assert_eq!(format!("{token:?}"), "CsrfToken(<redacted>)");
    }
}
