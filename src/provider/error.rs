//! The one error type of the provider boundary. It says what went wrong and how
//! the user or client must be told (a JSON OAuth error, a page, a redirect back to
//! the client, "try later"); `http::error` turns it into a response.

use crate::oidc::{AuthorizeError, OAuthError};
use crate::storage::StorageError;
use crate::throttle::RetryAfter;

#[derive(Debug)]
pub enum ProviderError {
    /// `{"error": …, "error_description": …}` with the error's status.
    OAuth(OAuthError),
    /// An HTML error page (the user's browser is talking to us directly).
    Page { status: u16, message: String },
    /// 303 See Other to the client (errors that RFC 6749 says to redirect).
    Redirect(String),
    /// An upstream identity provider failed the login. The page names the
    /// connector and the request id (known to the HTTP layer) that finds the log
    /// line; upstream text is never shown.
    Upstream { connector_name: String },
    /// 429 Too Many Requests, or 503 when the server is `busy`, with
    /// `Retry-After`: `temporarily_unavailable` JSON for OAuth endpoints (`oauth`),
    /// a page for the browser.
    TryLater {
        retry_after_secs: u64,
        busy: bool,
        oauth: bool,
    },
}

impl ProviderError {
    pub fn page(status: u16, message: impl Into<String>) -> Self {
        Self::Page {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::page(400, message)
    }

    pub fn internal() -> Self {
        Self::page(500, "Internal server error.")
    }

    /// 429 for the browser: this client must wait `retry_after`.
    pub fn too_many(retry_after: RetryAfter) -> Self {
        Self::TryLater {
            retry_after_secs: retry_after.secs(),
            busy: false,
            oauth: false,
        }
    }

    /// 503 for the browser: every password check slot is taken.
    pub fn busy() -> Self {
        Self::TryLater {
            retry_after_secs: BUSY_RETRY_AFTER_SECS,
            busy: true,
            oauth: false,
        }
    }

    /// The same error as `temporarily_unavailable` JSON, for OAuth endpoints.
    pub fn as_oauth(self) -> Self {
        match self {
            Self::TryLater {
                retry_after_secs,
                busy,
                ..
            } => Self::TryLater {
                retry_after_secs,
                busy,
                oauth: true,
            },
            other => other,
        }
    }

    /// A storage failure during a browser step, logged here once.
    pub(crate) fn storage(error: &StorageError) -> Self {
        tracing::error!(%error, "storage failure");
        AuthorizeError::storage(error).into()
    }
}

/// `Retry-After` for a full password gate: the queue drains within about a second.
const BUSY_RETRY_AFTER_SECS: u64 = 1;

impl From<OAuthError> for ProviderError {
    fn from(error: OAuthError) -> Self {
        Self::OAuth(error)
    }
}

impl From<AuthorizeError> for ProviderError {
    fn from(error: AuthorizeError) -> Self {
        match error {
            AuthorizeError::Page { status, message } => Self::Page { status, message },
            AuthorizeError::Redirect(redirect) => Self::Redirect(redirect.location()),
        }
    }
}
