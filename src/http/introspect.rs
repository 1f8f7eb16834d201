//! `/token/introspect` (RFC 7662) with Dex's responses, for authenticated clients.
//!
//! Beyond Dex: the caller must authenticate as a client (`client_secret_basic` or
//! `client_secret_post`, exactly as at `/token`; 401 `invalid_client` otherwise)
//! and only learns about its own tokens (see [`crate::oidc::introspect`]). Active
//! answers carry `Cache-Control: no-store` too (Dex sets it on inactive ones only).

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use axum::routing::any;

use super::AppState;
use super::error::{json_no_store, oauth_error_response};
use super::params::Params;
use crate::oidc::OAuthError;

/// Routes at their full paths under the issuer's path `prefix` (e.g. `/dex`).
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new().route(&[prefix, "/token/introspect"].concat(), any(handle))
}

async fn handle(State(state): State<AppState>, params: Params) -> Response {
    let live = state.live();
    if params.method != Method::POST {
        return oauth_error_response(&OAuthError::invalid_request(format!(
            "HTTP method is \"{}\", expected \"POST\".",
            params.method
        )));
    }
    let introspected = live
        .provider
        .introspect(params.header(header::AUTHORIZATION), &params.body_pairs)
        .await;
    match introspected {
        Ok(Some(body)) => json_no_store(StatusCode::OK, body),
        Ok(None) => json_no_store(StatusCode::OK, r#"{"active":false}"#),
        Err(error) => oauth_error_response(&error),
    }
}
