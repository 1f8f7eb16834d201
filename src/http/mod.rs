//! The HTTP surface: one module per endpoint area, each with its `routes(prefix)`,
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
mod unavailable;
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

/// Everything a request handler may need, behind one reference count: axum clones
/// the state for every request, and with one `Arc` per field that was nine atomic
/// increments and decrements per request (`drop_in_place<AppState>` was ~4% of the
/// CPU profile of `GET /keys` under load). Fields read through `Deref`.
#[derive(Clone)]
pub struct AppState(Arc<AppContext>);

impl AppState {
    pub fn new(context: AppContext) -> Self {
        Self(Arc::new(context))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppContext;

    fn deref(&self) -> &AppContext {
        &self.0
    }
}

/// The contents of [`AppState`].
pub struct AppContext {
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
    let storage = state.storage.clone();
    // The endpoints a browser app calls directly get CORS when configured.
    let public = Router::new()
        .merge(discovery::routes(&prefix))
        .merge(keys::routes(&prefix))
        .merge(token::routes(&prefix))
        .merge(userinfo::routes(&prefix))
        .merge(introspect::routes(&prefix));
    let public = match cors::layer(&state.settings.web) {
        Some(cors) => public.layer(cors),
        None => public,
    };
    let routes = Router::new()
        .merge(public)
        .merge(health::routes(&prefix))
        .merge(authorize::routes(&prefix))
        .merge(device::routes(&prefix))
        .with_state(state);
    // Routes are registered at their full paths rather than nested under the
    // prefix: nesting rewrites every request's URI, a measurable cost on the
    // hottest endpoints (discovery, keys).
    let routes = routes
        .fallback(not_found)
        .layer(axum::middleware::map_response_with_state(
            storage,
            unavailable::relabel,
        ));
    middleware::wrap(routes, &extra_headers)
}

/// Runs storage work (SQLite behind one connection) and signing on the blocking pool,
/// at most a few calls at a time. Without the gate, 64 concurrent `/token` requests
/// become 64 blocking threads convoying on the storage mutex: each hand-off is a
/// context switch, and /token reached only ~0.1 × the ES256 signature ceiling.
pub(crate) async fn run_blocking<T, F>(call: F) -> Result<T, tokio::task::JoinError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    static GATE: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    let gate = GATE.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(2 * cores)
    });
    // The semaphore is never closed, so acquiring cannot fail; without a permit the
    // call still runs.
    let _permit = gate.acquire().await.ok();
    tokio::task::spawn_blocking(call).await
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "404 page not found\n")
}
