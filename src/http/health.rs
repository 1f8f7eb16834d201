//! `/healthz` and `/robots.txt` on the main listener.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::any;

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", any(healthz))
        .route("/robots.txt", any(robots))
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
