//! Browser binding: every login in progress belongs to the browser that started it.
//!
//! The browser holds a random secret in a cookie (see `http::browser`); the auth
//! request (and, for the device flow, the device token and the auth code) stores
//! only `base64url(SHA-256(label ‖ secret))`. A later step of the login presents
//! the cookie again and is refused unless its hash matches, so knowing an auth
//! request id, an approval URL or a user code is not enough to take part in
//! somebody else's login.
//!
//! The secret is long-lived for the browser (a session cookie, reused by every
//! login in that browser) so that browser sessions (SSO, logout) can later be keyed
//! by the same value.

use aws_lc_rs::constant_time;
use aws_lc_rs::digest::{self, SHA256};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::error::AuthorizeError;

/// Length of the secret in [`crate::crypto::random_token`] characters: 52 × 5 bits =
/// 260 bits (more than 32 bytes).
pub const SECRET_LEN: usize = 52;

const LABEL: &[u8] = b"oxidex browser binding v1\0";

/// What a step of a login from another browser (or one without the cookie) sees.
pub const OTHER_BROWSER: &str = "This login was started in another browser, or this browser's \
     cookies were cleared. For your protection it cannot be continued here: please start again \
     from the application you were signing in to.";

/// The cookie's secret. Never logged, never stored.
#[derive(Clone, PartialEq, Eq)]
pub struct BrowserSecret(String);

impl BrowserSecret {
    pub fn generate() -> Self {
        Self(crate::crypto::random_token(SECRET_LEN))
    }

    /// A cookie value we could have issued, or `None`.
    pub fn parse(value: &str) -> Option<Self> {
        (value.len() == SECRET_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)))
        .then(|| Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value stored on the objects this browser may continue.
    pub fn binding(&self) -> String {
        let mut context = digest::Context::new(&SHA256);
        context.update(LABEL);
        context.update(self.0.as_bytes());
        URL_SAFE_NO_PAD.encode(context.finish().as_ref())
    }
}

impl std::fmt::Debug for BrowserSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrowserSecret(<redacted>)")
    }
}

/// Whether `presented` is the browser `stored` (a [`BrowserSecret::binding`])
/// was made for, in constant time. An empty `stored` (a row written before
/// bindings existed) matches no browser.
pub fn same_browser(stored: &str, presented: Option<&BrowserSecret>) -> bool {
    let Some(presented) = presented else {
        return false;
    };
    !stored.is_empty()
        && constant_time::verify_slices_are_equal(stored.as_bytes(), presented.binding().as_bytes())
            .is_ok()
}

/// [`same_browser`], or the 403 page every step of a login shows otherwise.
pub fn check_same_browser(
    stored: &str,
    presented: Option<&BrowserSecret>,
) -> Result<(), AuthorizeError> {
    if same_browser(stored, presented) {
        Ok(())
    } else {
        tracing::info!(
            cookie = presented.is_some(),
            "login step refused: not the browser that started it"
        );
        Err(AuthorizeError::page(403, OTHER_BROWSER))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_well_formed_and_bind_only_their_browser() {
        let a = BrowserSecret::generate();
        let b = BrowserSecret::generate();
        assert_ne!(a, b);
        assert_eq!(BrowserSecret::parse(a.as_str()), Some(a.clone()));
        assert!(same_browser(&a.binding(), Some(&a)));
        assert!(!same_browser(&a.binding(), Some(&b)));
        assert!(!same_browser(&a.binding(), None));
        assert!(!same_browser("", Some(&a)));
        assert_eq!(a.binding().len(), 43);
        assert_ne!(a.binding(), a.as_str());
        assert_eq!(format!("{a:?}"), "BrowserSecret(<redacted>)");
        assert_eq!(
            check_same_browser(&a.binding(), Some(&b)),
            Err(AuthorizeError::page(403, OTHER_BROWSER))
        );
    }

    #[test]
    fn parse_refuses_what_we_never_issue() {
        let a = BrowserSecret::generate();
        assert!(BrowserSecret::parse("").is_none());
        assert!(BrowserSecret::parse(&a.as_str()[1..]).is_none());
        assert!(BrowserSecret::parse(&format!("{}a", a.as_str())).is_none());
        assert!(BrowserSecret::parse(&a.as_str().to_uppercase()).is_none());
        assert!(BrowserSecret::parse(&"a".repeat(51).replace('a', "1")).is_none());
    }
}
