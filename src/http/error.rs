//! Responses for the provider's errors: OAuth JSON errors for API endpoints,
//! HTML error pages for the browser flow, and redirects back to the client; and
//! the response shapes every handler shares (pages, redirects, `no-store` JSON).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::oidc::{ErrorCode, OAuthError};
use crate::provider::ProviderError;
use crate::web::{ErrorPage, Templates};

/// Renders a [`ProviderError`]; pages use the configured templates and name
/// `request_id` where the user should quote it.
pub fn render(error: ProviderError, templates: &Templates, request_id: &str) -> Response {
    match error {
        ProviderError::OAuth(error) => oauth_error_response(&error),
        ProviderError::Page { status, message } => error_page(templates, status, message),
        ProviderError::Upstream { connector_name } => error_page(
            templates,
            502,
            format!(
                "Login through {connector_name} failed. Please try again; if it keeps failing, \
                 tell your administrator the request id {request_id}."
            ),
        ),
        ProviderError::Redirect(location) => see_other(&location),
        ProviderError::TryLater {
            retry_after_secs,
            busy,
            oauth,
        } => try_later(templates, retry_after_secs, busy, oauth),
    }
}

fn error_page(templates: &Templates, status: u16, message: String) -> Response {
    let body = templates.error(&ErrorPage { status, message });
    let mut response = html(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    );
    retry_after_if_unavailable(&mut response);
    response
}

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

/// A JSON body that must not be cached (token responses, device authorizations,
/// introspection).
pub fn json_no_store(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.into(),
    )
        .into_response();
    no_store(&mut response);
    response
}
