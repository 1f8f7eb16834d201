//! CORS for the endpoints browser apps call directly (`web.allowedOrigins`,
//! `web.allowedHeaders`), as in Dex: off unless origins are configured.

use axum::http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use crate::config::WebSettings;

pub fn layer(web: &WebSettings) -> Option<CorsLayer> {
    if web.allowed_origins.is_empty() {
        return None;
    }
    let origin = if web.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            web.allowed_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    let headers: Vec<HeaderName> = web
        .allowed_headers
        .iter()
        .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([Method::GET, Method::HEAD, Method::POST])
            .allow_headers(AllowHeaders::list(headers)),
    )
}
