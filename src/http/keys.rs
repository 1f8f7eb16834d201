//! `/keys`: the JWKS (current key, the next key, retired keys still valid).

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use super::AppState;

/// Routes at their full paths under the issuer's path `prefix` (e.g. `/dex`).
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new().route(&[prefix, "/keys"].concat(), any(jwks))
}

async fn jwks(State(state): State<AppState>) -> Response {
    let live = state.live();
    match live.provider.jwks().await {
        Ok(jwks) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "max-age=600, must-revalidate"),
            ],
            jwks,
        )
            .into_response(),
        // Only on a first start whose key generation keeps failing (logged).
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            error.to_string(),
        )
            .into_response(),
    }
}
