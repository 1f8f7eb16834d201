//! The HTTP surface: one module per endpoint area, each with its `routes()`,
//! merged by [`app`] under the issuer's path.

pub mod authorize;
mod cors;
pub mod device;
pub mod discovery;
pub mod error;
pub mod health;
pub mod introspect;
pub mod keys;
mod middleware;
pub mod params;
pub mod token;
pub mod userinfo;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;

use crate::Clock;
use crate::config::Settings;
use crate::connector::Connectors;
use crate::health::HealthChecker;
use crate::keys::KeyManager;
use crate::storage::SharedStorage;
use crate::web::Templates;

/// Everything a request handler may need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub storage: SharedStorage,
    pub keys: Arc<KeyManager>,
    pub discovery: Arc<discovery::DiscoveryCache>,
    pub health: Arc<HealthChecker>,
    pub connectors: Arc<Connectors>,
    pub templates: Arc<Templates>,
    pub refresh_locks: Arc<token::RefreshLocks>,
    /// Random per-process key for CSRF tokens of forms not tied to an auth
    /// request (the device user-code form).
    pub form_key: Arc<[u8; 32]>,
    pub clock: Clock,
}

/// The main listener's router: every route lives under the issuer's path
/// (`https://h/dex` ⇒ `/dex/keys`, …), with request ids, tracing, metrics and the
/// configured `web.headers`.
pub fn app(state: AppState) -> Router {
    let prefix = state.settings.issuer.path_prefix.clone();
    let extra_headers = state.settings.web.headers.clone();
    // The endpoints a browser app calls directly get CORS when configured.
    let public = Router::new()
        .merge(discovery::routes())
        .merge(keys::routes())
        .merge(token::routes())
        .merge(userinfo::routes())
        .merge(introspect::routes());
    let public = match cors::layer(&state.settings.web) {
        Some(cors) => public.layer(cors),
        None => public,
    };
    let routes = Router::new()
        .merge(public)
        .merge(health::routes())
        .merge(authorize::routes())
        .merge(device::routes())
        .with_state(state);
    let routes = if prefix.is_empty() {
        routes
    } else {
        Router::new().nest(&prefix, routes)
    };
    middleware::wrap(routes.fallback(not_found), &extra_headers)
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "404 page not found\n")
}
