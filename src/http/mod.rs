//! The HTTP surface: one module per endpoint area, each with its `routes(prefix)`,
//! merged by [`app`] under the issuer's path.

pub(crate) mod authorize;
pub(crate) mod browser;
pub(crate) mod client_ip;
mod cors;
pub(crate) mod device;
pub(crate) mod discovery;
pub(crate) mod error;
pub(crate) mod health;
pub(crate) mod introspect;
pub(crate) mod keys;
mod logout;
mod middleware;
pub mod params;
mod respond;
pub(crate) mod revoke;
pub mod serve;
pub(crate) mod token;
pub(crate) mod userinfo;

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::http::StatusCode;

use crate::config::Settings;
use crate::health::HealthChecker;
use crate::provider::Provider;
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

/// The contents of [`AppState`]. `web`-level settings (listeners, headers, CORS,
/// client addresses) are fixed for the process; what a configuration reload may
/// change (clients, connectors, passwords, templates…) lives in [`Live`].
pub struct AppContext {
    pub settings: Arc<Settings>,
    pub health: Arc<HealthChecker>,
    live: RwLock<Arc<Live>>,
}

/// The provider and the templates of the current configuration. A request takes
/// one snapshot ([`AppState::live`]) and finishes with it, also when a reload
/// swaps in a new one meanwhile.
pub struct Live {
    pub provider: Provider,
    pub templates: Templates,
}

impl AppContext {
    pub fn new(settings: Arc<Settings>, health: Arc<HealthChecker>, live: Live) -> Self {
        Self {
            settings,
            health,
            live: RwLock::new(Arc::new(live)),
        }
    }

    /// The current configuration's provider and templates.
    pub fn live(&self) -> Arc<Live> {
        match self.live.read() {
            Ok(live) => live.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the live state with what `change` makes of the current one,
    /// under the write lock, so a concurrent replacement is never lost;
    /// `None` leaves it as it is.
    pub fn update_live<E>(
        &self,
        change: impl FnOnce(&Live) -> Result<Option<Live>, E>,
    ) -> Result<(), E> {
        let mut current = match self.live.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(live) = change(&current)? {
            *current = Arc::new(live);
        }
        Ok(())
    }

    /// Swaps in a reloaded configuration; requests in flight keep the old one.
    pub fn replace_live(&self, live: Live) {
        let live = Arc::new(live);
        match self.live.write() {
            Ok(mut current) => *current = live,
            Err(poisoned) => *poisoned.into_inner() = live,
        }
    }
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
        .merge(introspect::routes(&prefix))
        .merge(revoke::routes(&prefix));
    let public = match cors::layer(&state.settings.web) {
        Some(cors) => public.layer(cors),
        None => public,
    };
    let routes = Router::new()
        .merge(public)
        .merge(health::routes(&prefix))
        .merge(authorize::routes(&prefix))
        .merge(device::routes(&prefix))
        .merge(logout::routes(&prefix))
        .with_state(state);
    // Routes are registered at their full paths rather than nested under the
    // prefix: nesting rewrites every request's URI, a measurable cost on the
    // hottest endpoints (discovery, keys).
    observed(routes.fallback(not_found), &extra_headers)
}

/// What every route of [`app`] gets around its handler: a request id, a tracing
/// span, Prometheus metrics and the configured `web.headers`. Public so the
/// benchmark's layered hello (`examples/layered_hello.rs`) pays exactly this.
pub fn observed(router: Router, extra_headers: &[(String, String)]) -> Router {
    middleware::wrap(router, extra_headers)
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "404 page not found\n")
}
