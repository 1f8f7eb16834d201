//! The protocol's error values: JSON OAuth errors for `/token`-style endpoints and
//! the "displayed vs redirected" split of the authorization endpoint.

use serde::Serialize;

use crate::storage::StorageError;

/// OAuth2 / OIDC error codes oxidex emits (Dex's error constants in `server/oauth2.go`; RFC 6749 §5.2, RFC 8628 §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    UnsupportedResponseType,
    RequestNotSupported,
    AccessDenied,
    ServerError,
    /// Device flow polling (RFC 8628 §3.5).
    AuthorizationPending,
    SlowDown,
    ExpiredToken,
    /// Rate limited or overloaded (RFC 6749 §4.1.2.1), sent with `Retry-After`.
    TemporarilyUnavailable,
    /// `prompt=none` and nobody is signed in (OpenID Connect Core §3.1.2.6).
    LoginRequired,
    /// `prompt=none` and the user must approve first (OpenID Connect Core §3.1.2.6).
    ConsentRequired,
    /// RFC 7009 §2.2.1: the server cannot revoke this kind of token.
    UnsupportedTokenType,
    /// RFC 6750 §3.1: a revoked bearer token at `/userinfo`.
    InvalidToken,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::RequestNotSupported => "request_not_supported",
            Self::LoginRequired => "login_required",
            Self::ConsentRequired => "consent_required",
            Self::AccessDenied => "access_denied",
            Self::ServerError => "server_error",
            Self::AuthorizationPending => "authorization_pending",
            Self::SlowDown => "slow_down",
            Self::ExpiredToken => "expired_token",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::UnsupportedTokenType => "unsupported_token_type",
            Self::InvalidToken => "invalid_token",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// An OAuth2 error as a JSON endpoint renders it:
/// `{"error": code, "error_description": description}` (description omitted when
/// empty) with HTTP `status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} ({status}): {description}")]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: String,
    pub status: u16,
}

/// The JSON body of an [`OAuthError`].
#[derive(Debug, Serialize)]
pub struct OAuthErrorBody<'a> {
    pub error: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub error_description: &'a str,
}

/// Refresh-token lookup failures share this description in Dex.
pub(crate) const REFRESH_CLAIMED: &str =
    "Refresh token is invalid or has already been claimed by another client.";

impl OAuthError {
    pub fn new(code: ErrorCode, status: u16, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            status,
        }
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, 400, description)
    }

    /// 400 `invalid_grant`.
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidGrant, 400, description)
    }

    /// 400 `invalid_scope`.
    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidScope, 400, description)
    }

    /// 401 `invalid_client` "Invalid client credentials." (Dex sends no
    /// `WWW-Authenticate` header with it).
    pub fn invalid_client() -> Self {
        Self::new(ErrorCode::InvalidClient, 401, "Invalid client credentials.")
    }

    /// 400 `unsupported_grant_type` without description, as Dex.
    pub fn unsupported_grant_type() -> Self {
        Self::new(ErrorCode::UnsupportedGrantType, 400, "")
    }

    /// 500 `server_error` without description (details belong in the log).
    pub fn server_error() -> Self {
        Self::new(ErrorCode::ServerError, 500, "")
    }

    /// A storage failure at a JSON endpoint: 503 `server_error` when the database
    /// is unavailable (disk full, read-only, I/O: retry later), else 500. The
    /// details belong in the log line the caller writes.
    pub fn storage(error: &StorageError) -> Self {
        let status = if error.is_unavailable() { 503 } else { 500 };
        Self::new(ErrorCode::ServerError, status, "")
    }

    /// Password grant: the connector rejected the credentials (401 `access_denied`).
    pub fn invalid_user_credentials() -> Self {
        Self::new(ErrorCode::AccessDenied, 401, "Invalid username or password")
    }

    /// Password grant: the connector itself failed (400 `invalid_request`).
    pub fn password_login_failed() -> Self {
        Self::invalid_request("Could not login user")
    }

    /// Refresh grant: the upstream connector refused or failed to refresh the
    /// identity.
    ///
    /// Beyond Dex: Dex answers 500 `invalid_request` (dexidp/dex#3971, #3059); the
    /// refresh token cannot be used any more, so oxidex answers 400 `invalid_grant`
    /// and clients start a new login instead of retrying a "server error".
    pub fn upstream_refresh_failed() -> Self {
        Self::invalid_grant("Failed to refresh the identity with the upstream provider.")
    }

    /// Refresh: the upstream could not be asked (down, timed out, answered 5xx
    /// or garbage). Nothing rotated, so the same refresh token works once the
    /// upstream is back: 503 `temporarily_unavailable` (sent with `Retry-After`)
    /// tells the client to retry rather than to log the user in again.
    pub fn upstream_unavailable() -> Self {
        Self::new(
            ErrorCode::TemporarilyUnavailable,
            503,
            "The upstream identity provider could not be reached. Try again later.",
        )
    }

    /// The JSON body to render.
    pub fn body(&self) -> OAuthErrorBody<'_> {
        OAuthErrorBody {
            error: self.code.as_str(),
            error_description: &self.description,
        }
    }
}

/// An authorization-endpoint failure, split as Dex (and RFC 6749 §4.1.2.1) do:
/// problems with the client or redirect URI are *displayed* (an HTML error page,
/// never a redirect); everything after the redirect URI is trusted is *redirected*
/// back to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizeError {
    /// Render the error page with this status and a short, generic message.
    #[error("{status}: {message}")]
    Page { status: u16, message: String },
    /// Send the browser back to the client with the error (HTTP 303 to
    /// [`RedirectError::location`]).
    #[error("redirect {0}")]
    Redirect(RedirectError),
}

impl AuthorizeError {
    pub fn page(status: u16, message: impl Into<String>) -> Self {
        Self::Page {
            status,
            message: message.into(),
        }
    }

    /// A storage failure in the browser flow: a 503 page asking the user to try
    /// again later when the database is unavailable, else 500 "Database error.".
    pub fn storage(error: &StorageError) -> Self {
        if error.is_unavailable() {
            Self::page(503, UNAVAILABLE_PAGE)
        } else {
            Self::page(500, "Database error.")
        }
    }
}

/// The page a browser gets while the database cannot take writes.
pub const UNAVAILABLE_PAGE: &str =
    "The service is temporarily unavailable. Please try again in a few minutes.";

/// An error reported to the client through its redirect URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}: {description}")]
pub struct RedirectError {
    pub redirect_uri: String,
    pub error: ErrorCode,
    pub description: String,
    pub state: String,
}

impl RedirectError {
    /// The `Location` for the 303: `error`, `error_description` (when not empty)
    /// and `state` (always, even empty) added to the redirect URI's **query string**
    /// — also for implicit/hybrid requests, as Dex does — keeping its existing
    /// query parameters (all re-encoded, sorted by name like Go's `url.Values`).
    pub fn location(&self) -> String {
        let mut params = vec![
            ("error".to_owned(), self.error.as_str().to_owned()),
            ("state".to_owned(), self.state.clone()),
        ];
        if !self.description.is_empty() {
            params.push(("error_description".to_owned(), self.description.clone()));
        }
        crate::oidc::authorize::add_query_params(&self.redirect_uri, params, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_omits_empty_description() {
        let json =
            serde_json::to_string(&OAuthError::unsupported_grant_type().body()).unwrap_or_default();
        assert_eq!(json, r#"{"error":"unsupported_grant_type"}"#);
        let json = serde_json::to_string(&OAuthError::invalid_client().body()).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"error":"invalid_client","error_description":"Invalid client credentials."}"#
        );
    }

    #[test]
    fn redirect_error_uses_query_and_keeps_existing_params() {
        let err = RedirectError {
            redirect_uri: "https://app.example/cb?b=2&a=1#frag".to_owned(),
            error: ErrorCode::InvalidScope,
            description: "Missing required scope(s) [\"openid\"].".to_owned(),
            state: "s t".to_owned(),
        };
        assert_eq!(
            err.location(),
            "https://app.example/cb?a=1&b=2&error=invalid_scope&error_description=Missing+required+scope%28s%29+%5B%22openid%22%5D.&state=s+t#frag"
        );
    }

    #[test]
    fn redirect_error_without_description_still_has_empty_state() {
        let err = RedirectError {
            redirect_uri: "http://localhost:8080/cb".to_owned(),
            error: ErrorCode::AccessDenied,
            description: String::new(),
            state: String::new(),
        };
        assert_eq!(
            err.location(),
            "http://localhost:8080/cb?error=access_denied&state="
        );
    }
}

#[cfg(test)]
mod storage_error_tests {
    use super::*;

    #[test]
    fn unavailable_storage_is_503_server_error_and_other_failures_500() {
        let down = StorageError::Unavailable("SQLITE_FULL".into());
        let broken = StorageError::Backend("corrupt row".into());
        let e = OAuthError::storage(&down);
        assert_eq!((e.status, e.code), (503, ErrorCode::ServerError));
        let e = OAuthError::storage(&broken);
        assert_eq!((e.status, e.code), (500, ErrorCode::ServerError));
        assert!(matches!(
            AuthorizeError::storage(&down),
            AuthorizeError::Page { status: 503, message } if message == UNAVAILABLE_PAGE
        ));
        assert!(matches!(
            AuthorizeError::storage(&broken),
            AuthorizeError::Page { status: 500, .. }
        ));
    }
}
