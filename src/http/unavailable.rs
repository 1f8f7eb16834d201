//! A request that failed because the database cannot be reached is answered
//! 503 with `Retry-After`, not 500: the failure is the deployment's, temporary,
//! and says nothing about the request. Handlers report storage failures as 500;
//! this layer relabels those while the storage says it is unreachable, so every
//! endpoint gets the same answer without each one telling the causes apart.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::storage::SharedStorage;

/// Seconds a client should wait before retrying.
const RETRY_AFTER: &str = "5";

pub(super) async fn relabel(State(storage): State<SharedStorage>, response: Response) -> Response {
    if response.status() != StatusCode::INTERNAL_SERVER_ERROR || storage.unavailable().is_none() {
        return response;
    }
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let mut relabelled = if json {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "error": "temporarily_unavailable",
                "error_description": "The database is unavailable. Try again shortly.",
            })),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Service unavailable: the database cannot be reached. Try again shortly.\n",
        )
            .into_response()
    };
    let headers = relabelled.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    relabelled
}
