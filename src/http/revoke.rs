//! `/token/revoke` (RFC 7009). Beyond Dex, which has no revocation endpoint.
//! Client authentication as at `/token`; 200 with an empty body whenever the
//! token is revoked or was not a valid token of the caller's to begin with.

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use super::AppState;
use super::error::{no_store, oauth_error_response};
use super::params::Params;
use crate::oidc::OAuthError;

/// Routes at their full paths under the issuer's path `prefix` (e.g. `/dex`).
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new().route(&[prefix, "/token/revoke"].concat(), any(handle))
}

async fn handle(State(state): State<AppState>, params: Params) -> Response {
    let live = state.live();
    if params.method != Method::POST {
        return oauth_error_response(&OAuthError::invalid_request(format!(
            "HTTP method is \"{}\", expected \"POST\".",
            params.method
        )));
    }
    if let Some(why) = params.malformed {
        return oauth_error_response(&OAuthError::invalid_request(format!(
            "Could not read the request: {why}."
        )));
    }
    let revoked = live
        .provider
        .revoke(params.header(header::AUTHORIZATION), &params.body_pairs)
        .await;
    match revoked {
        Ok(()) => {
            let mut response = StatusCode::OK.into_response();
            no_store(&mut response);
            response
        }
        Err(error) => oauth_error_response(&error),
    }
}
