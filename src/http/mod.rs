//! The HTTP surface: one module per endpoint area, each with its `routes(prefix)`,
//! merged by [`app`] under the issuer's path.

pub mod authorize;
pub mod browser;
pub mod client_ip;
mod cors;
pub mod device;
pub mod discovery;
pub mod error;
pub mod health;
pub mod introspect;
pub mod keys;
pub mod limits;
mod middleware;
pub mod params;
pub mod serve;
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
    /// Rate limits of the login flows.
    pub limits: limits::Limits,
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
    middleware::wrap(routes.fallback(not_found), &extra_headers)
}

/// Runs storage work (SQLite behind one connection) and signing on the blocking pool,
/// at most a few calls at a time. Without the gate, 64 concurrent `/token` requests
/// become 64 blocking threads convoying on the storage mutex: each hand-off is a
/// context switch, and /token reached only ~0.1 × the ES256 signature ceiling.
pub(crate) async fn run_blocking<T, F>(call: F) -> Result<T, BlockingError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    static GATE: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    let gate = GATE.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::sync::Semaphore::new(2 * cores)
    });
    run_gated(gate, call).await
}

/// Why [`run_blocking`] did not return the call's value.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BlockingError {
    /// The gate is closed: the call was not run, rather than run ungated.
    #[error("the blocking-work gate is closed; the call was not run")]
    GateClosed,
    #[error("blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

async fn run_gated<T, F>(gate: &tokio::sync::Semaphore, call: F) -> Result<T, BlockingError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let _permit = gate.acquire().await.map_err(|_| {
        tracing::error!("the blocking-work gate is closed; refusing to run without it");
        BlockingError::GateClosed
    })?;
    Ok(tokio::task::spawn_blocking(call).await?)
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "404 page not found\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_gate_fails_closed_without_running_the_call() {
        let gate = tokio::sync::Semaphore::new(1);
        gate.close();
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let result = run_gated(&gate, move || {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        })
        .await;
        assert!(matches!(result, Err(BlockingError::GateClosed)));
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));

        let open = tokio::sync::Semaphore::new(1);
        assert_eq!(run_gated(&open, || 7).await.unwrap(), 7);
    }
}
