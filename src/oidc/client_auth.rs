//! Client authentication at the token endpoint (Dex: `handleToken` in `server/handlers.go`; RFC 6749 §2.3.1).
//!
//! `client_secret_basic` when an `Authorization: Basic` header is present (its id
//! and secret URL-query-unescaped, as Dex does: `+` becomes a space), otherwise
//! `client_secret_post` form fields. Public clients authenticate with an empty
//! secret. Secrets are compared in constant time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::error::OAuthError;
use crate::config::settings::Client;
use crate::urlencoded::query_unescape;

/// Credentials as presented, before they are checked.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    pub client_id: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl ClientCredentials {
    /// Reads credentials from the raw `Authorization` header value (if any) and the
    /// `client_id` / `client_secret` form fields. A header that is not a well-formed
    /// Basic credential is ignored (like Go's `Request.BasicAuth`), and then the form
    /// fields are used.
    pub fn from_request(
        authorization: Option<&str>,
        form_client_id: &str,
        form_client_secret: &str,
    ) -> Result<Self, OAuthError> {
        if let Some((id, secret)) = authorization.and_then(parse_basic) {
            let id = query_unescape(id.as_bytes())
                .map_err(|_| OAuthError::invalid_request("client_id improperly encoded"))?;
            let secret = query_unescape(secret.as_bytes())
                .map_err(|_| OAuthError::invalid_request("client_secret improperly encoded"))?;
            // A client id that is not UTF-8 can match no configured client.
            let client_id = String::from_utf8(id).map_err(|_| OAuthError::invalid_client())?;
            return Ok(Self { client_id, secret });
        }
        Ok(Self {
            client_id: form_client_id.to_owned(),
            secret: form_client_secret.as_bytes().to_vec(),
        })
    }

    /// Form-style credentials (also handy for callers that already split them).
    pub fn new(client_id: &str, client_secret: &str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            secret: client_secret.as_bytes().to_vec(),
        }
    }

    /// Finds the client and checks the secret: unknown client or mismatch is 401
    /// `invalid_client` "Invalid client credentials.".
    pub fn authenticate<'a>(&self, clients: &'a [Client]) -> Result<&'a Client, OAuthError> {
        let client = clients
            .iter()
            .find(|c| c.id == self.client_id)
            .ok_or_else(OAuthError::invalid_client)?;
        if crate::crypto::constant_time_eq(client.secret.as_bytes(), &self.secret) {
            Ok(client)
        } else {
            Err(OAuthError::invalid_client())
        }
    }
}

/// One-call form of [`ClientCredentials::from_request`] + `authenticate`.
pub fn authenticate_client<'a>(
    clients: &'a [Client],
    authorization: Option<&str>,
    form_client_id: &str,
    form_client_secret: &str,
) -> Result<&'a Client, OAuthError> {
    ClientCredentials::from_request(authorization, form_client_id, form_client_secret)?
        .authenticate(clients)
}

/// `Basic <base64(id:secret)>`, scheme case-insensitive, standard padded base64.
fn parse_basic(header: &str) -> Option<(String, String)> {
    const PREFIX: &str = "basic ";
    let scheme = header.get(..PREFIX.len())?;
    if !scheme.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let decoded = STANDARD.decode(header.get(PREFIX.len()..)?).ok()?;
    // Escapes are undone later, so the raw text must be UTF-8 here; percent
    // escapes may still produce arbitrary bytes.
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::oidc::ErrorCode;
    use crate::oidc::test_support::clients;

    fn basic(user_pass: &str) -> String {
        format!("Basic {}", STANDARD.encode(user_pass))
    }

    #[test]
    fn basic_auth_succeeds() {
        let clients = clients();
        let c = authenticate_client(&clients, Some(&basic("web:websecret")), "", "").unwrap();
        assert_eq!(c.id, "web");
        // Scheme is case-insensitive.
        let header = basic("web:websecret").replacen("Basic", "bAsIc", 1);
        assert!(authenticate_client(&clients, Some(&header), "", "").is_ok());
    }

    #[test]
    fn post_auth_succeeds() {
        let clients = clients();
        assert_eq!(
            authenticate_client(&clients, None, "web", "websecret")
                .unwrap()
                .id,
            "web"
        );
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        // Secret "s p+%" sent as "s+p%2B%25"; id "sp ace" sent as "sp+ace".
        let clients = clients();
        let c = authenticate_client(&clients, Some(&basic("sp+ace:s+p%2B%25")), "", "").unwrap();
        assert_eq!(c.id, "sp ace");
        // The raw (undecoded) secret no longer matches.
        let err = authenticate_client(&clients, Some(&basic("sp+ace:s p+%")), "", "").unwrap_err();
        assert_eq!((err.status, err.code), (400, ErrorCode::InvalidRequest));
        assert_eq!(err.description, "client_secret improperly encoded");
    }

    #[test]
    fn bad_basic_id_encoding_is_invalid_request() {
        let err =
            authenticate_client(&clients(), Some(&basic("we%zb:websecret")), "", "").unwrap_err();
        assert_eq!((err.status, err.code), (400, ErrorCode::InvalidRequest));
        assert_eq!(err.description, "client_id improperly encoded");
        let err = authenticate_client(&clients(), Some(&basic("web%4:x")), "", "").unwrap_err();
        assert_eq!(err.description, "client_id improperly encoded");
    }

    #[test]
    fn wrong_secret_is_401_invalid_client() {
        let err = authenticate_client(&clients(), Some(&basic("web:nope")), "", "").unwrap_err();
        assert_eq!((err.status, err.code), (401, ErrorCode::InvalidClient));
        assert_eq!(err.description, "Invalid client credentials.");
        let err = authenticate_client(&clients(), None, "web", "").unwrap_err();
        assert_eq!((err.status, err.code), (401, ErrorCode::InvalidClient));
    }

    #[test]
    fn unknown_client_is_401_invalid_client() {
        let err = authenticate_client(&clients(), None, "ghost", "x").unwrap_err();
        assert_eq!((err.status, err.code), (401, ErrorCode::InvalidClient));
        let err = authenticate_client(&clients(), None, "", "").unwrap_err();
        assert_eq!((err.status, err.code), (401, ErrorCode::InvalidClient));
    }

    #[test]
    fn public_client_authenticates_with_empty_secret_only() {
        let clients = clients();
        assert!(authenticate_client(&clients, None, "public-cli", "").is_ok());
        let err = authenticate_client(&clients, None, "public-cli", "guess").unwrap_err();
        assert_eq!((err.status, err.code), (401, ErrorCode::InvalidClient));
    }

    #[test]
    fn malformed_basic_header_falls_back_to_form() {
        let clients = clients();
        for header in [
            "Basic !!!notbase64",
            "Bearer abc",
            "Basic",
            &basic("no-colon"),
        ] {
            let c = authenticate_client(&clients, Some(header), "web", "websecret").unwrap();
            assert_eq!(c.id, "web", "{header}");
        }
    }

    #[test]
    fn basic_header_wins_over_form_fields() {
        let err = authenticate_client(&clients(), Some(&basic("web:bad")), "web", "websecret")
            .unwrap_err();
        assert_eq!((err.status, err.code), (401, ErrorCode::InvalidClient));
    }
}
