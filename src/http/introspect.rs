//! `/token/introspect` (RFC 7662) with Dex's responses, for authenticated clients.
//!
//! Beyond Dex: the caller must authenticate as a client (`client_secret_basic` or
//! `client_secret_post`, exactly as at `/token`; 401 `invalid_client` otherwise)
//! and only learns about its own tokens (see [`crate::oidc::introspect`]). Active
//! answers carry `Cache-Control: no-store` too (Dex sets it on inactive ones only).

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use super::AppState;
use super::error::{no_store, oauth_error_response};
use super::params::Params;
use crate::oidc::OAuthError;
use crate::oidc::client_auth::authenticate_client;
use crate::oidc::introspect::{IntrospectContext, classify, introspect};

/// Routes at their full paths under the issuer's path `prefix` (e.g. `/dex`).
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new().route(&[prefix, "/token/introspect"].concat(), any(handle))
}

async fn handle(State(state): State<AppState>, params: Params) -> Response {
    match run(&state, &params).await {
        Ok(Some(body)) => json_no_store(StatusCode::OK, body),
        Ok(None) => json_no_store(StatusCode::OK, r#"{"active":false}"#.to_owned()),
        Err(error) => oauth_error_response(&error),
    }
}

fn json_no_store(status: StatusCode, body: String) -> Response {
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    no_store(&mut response);
    response
}

async fn run(state: &AppState, params: &Params) -> Result<Option<String>, OAuthError> {
    if params.method != Method::POST {
        return Err(OAuthError::invalid_request(format!(
            "HTTP method is \"{}\", expected \"POST\".",
            params.method
        )));
    }
    // Like Dex (Go's `PostForm`), nothing is read from the query string.
    let body = params.body_pairs.as_slice();
    let field = |name: &str| {
        body.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let client = authenticate_client(
        &state.settings.clients,
        params.header(header::AUTHORIZATION),
        field("client_id").unwrap_or_default(),
        field("client_secret").unwrap_or_default(),
    )?
    .clone();
    if body.is_empty() {
        return Err(OAuthError::invalid_request(
            "The POST body can not be empty.",
        ));
    }
    let Some(token) = field("token").map(str::to_owned) else {
        return Err(OAuthError::invalid_request(
            "The POST body doesn't contain 'token' parameter.",
        ));
    };
    let hint = field("token_type_hint").unwrap_or_default();
    let kind = classify(&token);
    if !hint.is_empty() && hint != kind.as_str() {
        tracing::debug!(hint, kind = kind.as_str(), "token type hint does not match");
    }

    let storage = state.storage.clone();
    let settings = state.settings.clone();
    let keyset = state.keys.keyset();
    let now = (state.clock)();
    let result = tokio::task::spawn_blocking(move || {
        let ctx = IntrospectContext {
            storage: storage.as_ref(),
            settings: settings.as_ref(),
            verifier: keyset.as_ref(),
            now,
        };
        introspect(&ctx, &client, &token)
    })
    .await
    .map_err(|error| {
        tracing::error!(%error, "introspection task failed");
        OAuthError::server_error()
    })??;
    match result {
        Some(active) => serde_json::to_string(&active).map(Some).map_err(|error| {
            tracing::error!(%error, "cannot serialize introspection");
            OAuthError::server_error()
        }),
        None => Ok(None),
    }
}
