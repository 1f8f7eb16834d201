//! Turning what the provider returned into a response: one place for every
//! browser-facing handler.

use axum::http::StatusCode;
use axum::response::Response;

use super::Live;
use super::error::{found, html, render, see_other};
use super::params::Params;
use crate::provider::{Outcome, Page, ProviderError, Reply};
use crate::web::Templates;

/// The response for a browser step's result; errors become pages (or redirects
/// to the client) that quote this request's id where it helps.
pub fn respond<R: Into<Reply>>(
    live: &Live,
    params: &Params,
    result: Result<R, ProviderError>,
) -> Response {
    match result {
        Ok(reply) => {
            let Reply { outcome, cookie } = reply.into();
            let mut response = render_outcome(&live.templates, outcome);
            if let Some(change) = cookie {
                super::browser::apply_session_cookie(
                    live.provider.settings(),
                    &mut response,
                    &change,
                );
            }
            response
        }
        Err(error) => render(error, &live.templates, request_id(params)),
    }
}

/// The id the request-id middleware gave this request (`-` if none).
pub fn request_id(params: &Params) -> &str {
    params.header(super::middleware::REQUEST_ID).unwrap_or("-")
}

fn render_outcome(templates: &Templates, outcome: Outcome) -> Response {
    match outcome {
        Outcome::Found(location) => found(&location),
        Outcome::SeeOther(location) => see_other(&location),
        Outcome::Page(status, page) => {
            let body = match &page {
                Page::Login(page) => templates.login(page),
                Page::Password(page) => templates.password(page),
                Page::Approval(page) => templates.approval(page),
                Page::Oob(page) => templates.oob(page),
                Page::Device(page) => templates.device(page),
                Page::DeviceSuccess(page) => templates.device_success(page),
                Page::Logout(page) => templates.logout(page),
            };
            html(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                body,
            )
        }
    }
}
