//! Wiring: from validated [`Settings`] to running listeners and background tasks.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::health::HealthChecker;
use crate::http::serve::ConnectionLimits;
use crate::http::{self, AppContext, AppState};
use crate::keys::{KeyManager, KeyPolicy};
use crate::shutdown::Shutdown;
use crate::{Clock, storage};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("failed to initialize storage: {0}")]
    Storage(#[from] storage::StorageError),
    #[error("failed to initialize signing keys: {0}")]
    Keys(String),
    #[error("cannot build the discovery document: {0}")]
    Discovery(#[from] serde_json::Error),
    #[error("{0}")]
    Connector(#[from] crate::connector::ConnectorError),
    #[error("failed to load web templates: {0}")]
    Templates(#[from] crate::web::WebError),
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
}

/// The running application's state plus its background tasks.
pub struct Services {
    pub state: AppState,
    pub tasks: Vec<JoinHandle<()>>,
    /// Timeouts and caps of both listeners' connections (constants in production;
    /// tests shorten them).
    pub limits: ConnectionLimits,
}

pub fn system_clock() -> Clock {
    Arc::new(SystemTime::now)
}

/// Opens storage, loads or creates signing keys, and starts the background tasks
/// (key rotation, garbage collection, health checks), all stopped by `shutdown`.
pub async fn start_services(
    settings: Settings,
    clock: Clock,
    shutdown: Shutdown,
) -> Result<Services, ServerError> {
    // Install the metrics recorder before the first request is counted.
    let _ = crate::telemetry::prometheus();
    let storage_settings = settings.storage.clone();
    let storage = tokio::task::spawn_blocking(move || storage::open(&storage_settings))
        .await
        .map_err(|e| storage::StorageError::Backend(e.to_string()))??;
    let policy = KeyPolicy::from_settings(&settings);
    let keys = KeyManager::start(storage.clone(), policy, clock())
        .await
        .map_err(|e| ServerError::Keys(e.to_string()))?;
    let connectors = Arc::new(crate::connector::build_connectors(
        &settings,
        clock.clone(),
    )?);
    let templates = Arc::new(crate::web::Templates::load(&settings.frontend)?);
    let discovery = Arc::new(http::discovery::DiscoveryCache::new(&settings)?);
    let health = Arc::new(HealthChecker::new(storage.clone(), keys.clone()));
    health.check(clock()).await;

    let tasks = vec![
        keys.spawn_rotation_task(clock.clone(), shutdown.clone().wait()),
        storage::gc::spawn_garbage_collector(
            storage.clone(),
            settings.gc_interval,
            clock.clone(),
            shutdown.clone().wait(),
        ),
        health.clone().spawn(clock.clone(), shutdown.clone().wait()),
        crate::telemetry::spawn_metrics_upkeep(
            crate::telemetry::METRICS_UPKEEP_INTERVAL,
            shutdown.clone().wait(),
        ),
    ];

    let state = AppState::new(AppContext {
        settings: Arc::new(settings),
        storage,
        keys,
        discovery,
        health,
        connectors,
        templates,
        refresh_locks: Arc::default(),
        form_key: Arc::new(rand::random()),
        limits: http::limits::Limits::default(),
        clock,
    });
    Ok(Services {
        state,
        tasks,
        limits: ConnectionLimits::default(),
    })
}

/// Serves the main router on `listener` (and telemetry on `telemetry`) until
/// `shutdown`, then waits for in-flight requests and background tasks.
pub async fn run(
    services: Services,
    listener: TcpListener,
    telemetry: Option<TcpListener>,
    shutdown: Shutdown,
) -> Result<(), ServerError> {
    let Services {
        state,
        tasks,
        limits,
    } = services;
    let telemetry_task = telemetry.map(|listener| {
        let app = crate::telemetry::telemetry_app(state.health.clone());
        let stop = shutdown.clone().wait();
        tokio::spawn(http::serve::serve(listener, app, limits, stop))
    });
    let app = http::app(state);
    http::serve::serve(listener, app, limits, shutdown.wait()).await;
    if let Some(task) = telemetry_task {
        let _ = task.await;
    }
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}
