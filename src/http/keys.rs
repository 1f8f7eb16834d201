//! `/keys`: the JWKS (current key, the next key, retired keys still valid).

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::any;

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/keys", any(jwks))
}

async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    let keyset = state.keys.keyset();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "max-age=600, must-revalidate"),
        ],
        keyset.jwks_json(),
    )
}
