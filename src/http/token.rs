//! `/token`: every grant. The device_code grant needs no client authentication
//! and answers its stored JSON; the others authenticate the client
//! (`provider::token` has the grants).

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use super::AppState;
use super::client_ip::ClientIp;
use super::error::{json_no_store, oauth_error_response, render};
use super::params::Params;
use super::respond::request_id;
use crate::oidc::OAuthError;
use crate::oidc::device::DEVICE_CODE_GRANT;
use crate::provider::TokenRequest;

/// Routes at their full paths under the issuer's path `prefix` (e.g. `/dex`).
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new().route(&[prefix, "/token"].concat(), any(token))
}

async fn token(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    params: Params,
) -> Response {
    let live = state.live();
    if params.method == Method::POST && params.form_get("grant_type") == DEVICE_CODE_GRANT {
        let polled = live
            .provider
            .poll_device_token(
                params.form_get("device_code"),
                params.form_get("code_verifier"),
            )
            .await;
        return match polled {
            Ok(body) => json_no_store(StatusCode::OK, body),
            Err(error) => oauth_error_response(&error),
        };
    }
    if params.method != Method::POST {
        return oauth_error_response(&OAuthError::invalid_request("method not allowed"));
    }
    if let Some(why) = params.malformed {
        return oauth_error_response(&OAuthError::invalid_request(format!(
            "Could not read the request: {why}."
        )));
    }
    let request = TokenRequest {
        grant_type: params.form_get("grant_type"),
        authorization: params.header(header::AUTHORIZATION),
        client_id: params.form_get("client_id"),
        client_secret: params.form_get("client_secret"),
        code: params.form_get("code"),
        redirect_uri: params.form_get("redirect_uri"),
        code_verifier: params.form_get("code_verifier"),
        refresh_token: params.form_get("refresh_token"),
        scope: params.form_get("scope"),
        username: params.form_get("username"),
        password: params.form_get("password"),
        nonce: params.form_get("nonce"),
        connector_id: params.form_get("connector_id"),
        subject_token: params.form_get("subject_token"),
        subject_token_type: params.form_get("subject_token_type"),
        requested_token_type: params.form_get("requested_token_type"),
    };
    match live.provider.token(request, client_ip).await {
        Ok(tokens) => {
            let mut response = (StatusCode::OK, axum::Json(tokens)).into_response();
            super::error::no_store(&mut response);
            response
        }
        Err(error) => render(error.as_oauth(), &live.templates, request_id(&params)),
    }
}
