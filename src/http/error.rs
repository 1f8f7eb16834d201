//! The one error type of the HTTP boundary: OAuth JSON errors for API endpoints,
//! HTML error pages for the browser flow, and redirects back to the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::oidc::{AuthorizeError, ErrorCode, OAuthError};
use crate::throttle::RetryAfter;
use crate::web::{ErrorPage, Templates};

#[derive(Debug)]
pub enum HttpError {
    /// `{"error": …, "error_description": …}` with the error's status.
    OAuth(OAuthError),
    /// An HTML error page (the user's browser is talking to us directly).
    Page { status: u16, message: String },
    /// 303 See Other to the client (errors that RFC 6749 says to redirect).
    Redirect(String),
    /// 429 Too Many Requests, or 503 when the server is `busy`, with
    /// `Retry-After`: `temporarily_unavailable` JSON for OAuth endpoints (`oauth`),
    /// a page for the browser.
    TryLater {
        retry_after_secs: u64,
        busy: bool,
        oauth: bool,
    },
}

impl HttpError {
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

    /// Renders the error; pages use the configured templates.
    pub fn into_response_with(self, templates: &Templates) -> Response {
        match self {
            Self::OAuth(error) => oauth_error_response(&error),
            Self::Page { status, message } => {
                let body = templates.error(&ErrorPage { status, message });
                let mut response = html(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    body,
                );
                retry_after_if_unavailable(&mut response);
                response
            }
            Self::Redirect(location) => see_other(&location),
            Self::TryLater {
                retry_after_secs,
                busy,
                oauth,
            } => try_later(templates, retry_after_secs, busy, oauth),
        }
    }
}

/// `Retry-After` for a full password gate: the queue drains within about a second.
const BUSY_RETRY_AFTER_SECS: u64 = 1;

fn try_later(templates: &Templates, retry_after_secs: u64, busy: bool, oauth: bool) -> Response {
    let (status, message) = if busy {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is busy. Please try again in a moment.".to_owned(),
        )
    } else {
        (
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many attempts. Please wait {retry_after_secs} seconds and try again."),
        )
    };
    let mut response = if oauth {
        let error = OAuthError::new(ErrorCode::TemporarilyUnavailable, status.as_u16(), message);
        oauth_error_response(&error)
    } else {
        let body = templates.error(&ErrorPage {
            status: status.as_u16(),
            message,
        });
        html(status, body)
    };
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

impl From<OAuthError> for HttpError {
    fn from(error: OAuthError) -> Self {
        Self::OAuth(error)
    }
}

impl From<AuthorizeError> for HttpError {
    fn from(error: AuthorizeError) -> Self {
        match error {
            AuthorizeError::Page { status, message } => Self::Page { status, message },
            AuthorizeError::Redirect(redirect) => Self::Redirect(redirect.location()),
        }
    }
}

/// JSON OAuth error; 401s on the token endpoint carry no `WWW-Authenticate`, as Dex.
pub fn oauth_error_response(error: &OAuthError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, Json(error.body())).into_response();
    no_store(&mut response);
    retry_after_if_unavailable(&mut response);
    response
}

/// Seconds a client should wait after a 503 (storage unavailable: the database
/// is unreachable, full or read-only) before trying again.
const UNAVAILABLE_RETRY_AFTER: HeaderValue = HeaderValue::from_static("5");

fn retry_after_if_unavailable(response: &mut Response) {
    if response.status() == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .entry(header::RETRY_AFTER)
            .or_insert(UNAVAILABLE_RETRY_AFTER);
    }
}

/// An HTML page that must not be framed or cached.
pub fn html(status: StatusCode, body: String) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub fn see_other(location: &str) -> Response {
    redirect(StatusCode::SEE_OTHER, location)
}

pub fn found(location: &str) -> Response {
    redirect(StatusCode::FOUND, location)
}

fn redirect(status: StatusCode, location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => {
            let mut response = status.into_response();
            response.headers_mut().insert(header::LOCATION, value);
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "invalid redirect location",
        )
            .into_response(),
    }
}

pub fn no_store(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}
