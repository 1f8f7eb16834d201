//! `/healthz` and `/robots.txt` on the main listener.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::any;

use super::AppState;

/// Routes at their full paths under the issuer's path `prefix` (e.g. `/dex`).
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new()
        .route(&[prefix, "/healthz"].concat(), any(healthz))
        .route(&[prefix, "/robots.txt"].concat(), any(robots))
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let report = state.health.latest();
    if report.healthy {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Health check passed",
        )
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Health check failed.",
        )
    }
}

async fn robots() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "User-agent: *\nDisallow: /\n",
    )
}
