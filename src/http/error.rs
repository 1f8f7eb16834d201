//! The one error type of the HTTP boundary: OAuth JSON errors for API endpoints,
//! HTML error pages for the browser flow, and redirects back to the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::oidc::{AuthorizeError, OAuthError};
use crate::web::{ErrorPage, Templates};

#[derive(Debug)]
pub enum HttpError {
    /// `{"error": …, "error_description": …}` with the error's status.
    OAuth(OAuthError),
    /// An HTML error page (the user's browser is talking to us directly).
    Page { status: u16, message: String },
    /// 303 See Other to the client (errors that RFC 6749 says to redirect).
    Redirect(String),
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

    /// Renders the error; pages use the configured templates.
    pub fn into_response_with(self, templates: &Templates) -> Response {
        match self {
            Self::OAuth(error) => oauth_error_response(&error),
            Self::Page { status, message } => {
                let body = templates.error(&ErrorPage { status, message });
                html(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    body,
                )
            }
            Self::Redirect(location) => see_other(&location),
        }
    }
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
    response
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
