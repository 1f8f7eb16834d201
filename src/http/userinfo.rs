//! `/userinfo`: returns the verified bearer token's claims, as Dex does.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};

use super::AppState;
use super::error::oauth_error_response;
use crate::oidc::ErrorCode;
use crate::oidc::grants::{bearer_token, missing_bearer_error};

/// Routes at their full paths under the issuer's path `prefix` (e.g. `/dex`).
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new().route(&[prefix, "/userinfo"].concat(), any(userinfo))
}

async fn userinfo(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let live = state.live();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(token) = bearer_token(authorization) else {
        let mut response = oauth_error_response(&missing_bearer_error());
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    match live.provider.userinfo(token).await {
        Ok(claims) => (StatusCode::OK, Json(claims)).into_response(),
        Err(error) => {
            let mut response = oauth_error_response(&error);
            if error.code == ErrorCode::InvalidToken {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer error="invalid_token""#),
                );
            }
            response
        }
    }
}
