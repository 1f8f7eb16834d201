//! `/keys`: the JWKS (current key, the next key, retired keys still valid).

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::any;

use super::AppState;

/// Routes at their full paths under the issuer's path `prefix` (e.g. `/dex`).
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new().route(&[prefix, "/keys"].concat(), any(jwks))
}

async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    let live = state.live();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "max-age=600, must-revalidate"),
        ],
        live.provider.jwks(),
    )
}
