//! `/.well-known/openid-configuration`: Dex's field set and order, precomputed.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::any;

use super::AppState;

/// Routes at their full paths under the issuer's path `prefix` (e.g. `/dex`).
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new().route(
        &[prefix, "/.well-known/openid-configuration"].concat(),
        any(discovery),
    )
}

async fn discovery(State(state): State<AppState>) -> impl IntoResponse {
    let live = state.live();
    (
        [(header::CONTENT_TYPE, "application/json")],
        live.provider.discovery_document(),
    )
}
