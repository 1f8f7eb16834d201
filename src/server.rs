//! Wiring: from validated [`Settings`] to running listeners and background tasks.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::Settings;
use crate::connector::Connectors;
use crate::health::HealthChecker;
use crate::http::serve::ConnectionLimits;
use crate::http::{self, AppContext, AppState, Live};
use crate::keys::{KeyManager, KeyPolicy};
use crate::provider::Provider;
use crate::shutdown::Shutdown;
use crate::tls::{PairFiles, ServerTls, TlsOptions};
use crate::web::Templates;
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
    #[error("{0}")]
    Grpc(String),
    #[error("start-up task failed: {0}")]
    Task(String),
}

/// How often a replica re-reads the clients and passwords created through the
/// gRPC API (by any replica). The replica that served the call applies it at once.
pub const STORED_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Brings the live provider up to date with the clients and passwords in
/// storage. One sync at a time, so an older read never replaces a newer one.
#[derive(Default)]
pub struct StoredSync {
    running: tokio::sync::Mutex<()>,
}

impl StoredSync {
    /// Reads the stored objects and, when they changed, swaps in a provider
    /// that uses them. A storage failure is logged; the last view stays.
    pub async fn sync(&self, state: &AppState) {
        let _one_at_a_time = self.running.lock().await;
        let stored = match state.live().provider.load_stored().await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(%error, "cannot read the clients and passwords in storage");
                return;
            }
        };
        let result = state.update_live(|live| {
            if **live.provider.stored() == stored {
                return Ok(None);
            }
            let provider = live.provider.with_stored(stored)?;
            Ok::<_, crate::provider::ProviderError>(Some(Live {
                provider,
                templates: live.templates.clone(),
            }))
        });
        if result.is_err() {
            tracing::error!("cannot apply the clients and passwords in storage");
        }
    }

    async fn poll(
        self: Arc<Self>,
        state: AppState,
        every: std::time::Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = ticks.tick() => self.sync(&state).await,
            }
        }
    }
}

/// The running application's state plus its background tasks.
pub struct Services {
    pub state: AppState,
    /// Keeps the provider's view of stored clients and passwords current.
    pub stored_sync: Arc<StoredSync>,
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
    // AWS-LC seeds its generator (key generation, RSA blinding, ECDSA nonces)
    // on first use, which takes tens of milliseconds: now, beside the start-up.
    tokio::task::spawn_blocking(crate::crypto::warm_up_key_generator);
    // Independent start-up work side by side with opening storage: the metrics
    // recorder (its clock calibrates itself for a few milliseconds), and the
    // connectors and templates (CA bundles read, templates parsed).
    let metrics = tokio::task::spawn_blocking(|| {
        let _ = crate::telemetry::prometheus();
    });
    let (prepare_settings, prepare_clock) = (settings.clone(), clock.clone());
    let prepared = tokio::task::spawn_blocking(move || -> Result<_, ServerError> {
        let connectors = crate::connector::build_connectors(&prepare_settings, prepare_clock)?;
        let templates = crate::web::Templates::load(&prepare_settings.frontend)?;
        Ok((connectors, templates))
    });
    let storage_settings = settings.storage.clone();
    let storage = crate::blocking::run(move || storage::open(&storage_settings))
        .await
        .map_err(|e| storage::StorageError::Backend(e.to_string()))??;
    let policy = KeyPolicy::from_settings(&settings);
    // A fresh database gets its keys in the background: the listeners open now.
    let keys = KeyManager::start_in_background(storage.clone(), policy, clock.clone())
        .await
        .map_err(|e| ServerError::Keys(e.to_string()))?;
    let (connectors, templates) = prepared
        .await
        .map_err(|e| ServerError::Task(e.to_string()))??;
    let connectors = Arc::new(connectors);
    // The recorder is in place before the first health figure or request is
    // counted.
    metrics
        .await
        .map_err(|e| ServerError::Task(e.to_string()))?;
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

    let settings = Arc::new(settings);
    let provider = Provider::new(settings.clone(), storage, keys, connectors, clock)?;
    let state = AppState::new(AppContext::new(
        settings,
        health,
        Live {
            provider,
            templates,
        },
    ));
    let mut tasks = tasks;
    let worker_state = state.clone();
    tasks.push(tokio::spawn(crate::provider::backchannel::run(
        move || worker_state.live(),
        state.settings.gc_interval,
        shutdown.clone().wait(),
    )));
    let stored_sync = Arc::new(StoredSync::default());
    stored_sync.sync(&state).await;
    tasks.push(tokio::spawn(stored_sync.clone().poll(
        state.clone(),
        STORED_POLL_INTERVAL,
        shutdown.clone().wait(),
    )));
    let limits = ConnectionLimits {
        drain_timeout: state.settings.web.drain_timeout,
        ..ConnectionLimits::default()
    };
    Ok(Services {
        state,
        stored_sync,
        tasks,
        limits,
    })
}

/// How often the HTTPS certificate and key files are read to notice a rotation.
pub const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// Where the server listens.
pub struct Listeners {
    /// `web.http`.
    pub http: Option<TcpListener>,
    /// `web.https`.
    pub https: Option<HttpsListener>,
    /// `telemetry.http`.
    pub telemetry: Option<TcpListener>,
    /// `grpc.addr`: the admin API. It stops taking calls when the main
    /// listeners start draining and finishes the ones in flight before the
    /// background tasks stop.
    pub grpc: Option<GrpcListener>,
}

pub struct GrpcListener {
    pub tcp: TcpListener,
    /// With `grpc.tlsCert` ([`load_grpc_tls`]); plaintext HTTP/2 without.
    pub tls: Option<ServerTls>,
}

pub struct HttpsListener {
    pub tcp: TcpListener,
    pub tls: ServerTls,
    /// How often the certificate files are re-read ([`TLS_RELOAD_INTERVAL`]).
    pub reload_interval: Duration,
}

/// The HTTPS listener's TLS for `settings`, its certificate and key read and
/// checked; `None` without `web.https`.
pub fn load_tls(settings: &Settings) -> Result<Option<ServerTls>, String> {
    let web = &settings.web;
    if web.https.is_none() {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (web.tls_cert.clone(), web.tls_key.clone()) else {
        return Err("web.https needs web.tlsCert and web.tlsKey".to_owned());
    };
    ServerTls::load(
        PairFiles {
            section: "web",
            cert,
            key,
        },
        TlsOptions {
            min_version: web.tls_min_version.clone(),
            max_version: web.tls_max_version.clone(),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            client_ca: None,
        },
    )
    .map(Some)
}

/// The gRPC listener's TLS for `settings` (certificate, key and client CA read
/// and checked); `None` without `grpc.tlsCert`.
pub fn load_grpc_tls(settings: &Settings) -> Result<Option<ServerTls>, String> {
    let Some(tls) = settings.grpc.as_ref().and_then(|grpc| grpc.tls.as_ref()) else {
        return Ok(None);
    };
    let version = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    ServerTls::load(
        PairFiles {
            section: "grpc",
            cert: tls.cert.clone(),
            key: tls.key.clone(),
        },
        TlsOptions {
            min_version: version(&tls.min_version),
            max_version: version(&tls.max_version),
            alpn: vec![b"h2".to_vec()],
            client_ca: tls.client_ca.clone(),
        },
    )
    .map(Some)
}

/// Serves the main router on `listener` (and telemetry on `telemetry`) until
/// `shutdown`; see [`serve`].
pub async fn run(
    services: Services,
    listener: TcpListener,
    telemetry: Option<TcpListener>,
    shutdown: Shutdown,
) -> Result<(), ServerError> {
    let listeners = Listeners {
        http: Some(listener),
        https: None,
        telemetry,
        grpc: None,
    };
    serve(services, listeners, shutdown).await
}

/// Serves the main router on the HTTP and HTTPS listeners (and telemetry on
/// its own) until `shutdown`. Then readiness fails at once, both main listeners
/// stop accepting and drain their requests in flight (within
/// `web.drainTimeout`), and only then do the telemetry listener and the
/// background tasks stop, so probes and scrapes see the drain.
pub async fn serve(
    services: Services,
    listeners: Listeners,
    shutdown: Shutdown,
) -> Result<(), ServerError> {
    let Services {
        state,
        stored_sync,
        mut tasks,
        limits,
    } = services;
    let grpc_task = match (listeners.grpc, state.settings.grpc.clone()) {
        (Some(listener), Some(settings)) => {
            let acceptor = listener.tls.map(|tls| {
                tasks.push(tls.spawn_reloader(TLS_RELOAD_INTERVAL, shutdown.clone().wait()));
                tls.acceptor()
            });
            let stop = shutdown.clone();
            Some(tokio::spawn(crate::grpc::serve(
                state.clone(),
                stored_sync,
                settings,
                listener.tcp,
                acceptor,
                async move { stop.wait().await },
            )))
        }
        _ => None,
    };
    let (telemetry_stop, telemetry_stopped) = crate::shutdown::channel();
    let telemetry_task = listeners.telemetry.map(|listener| {
        let app = crate::telemetry::telemetry_app(state.health.clone());
        tokio::spawn(http::serve::serve(
            listener,
            app,
            limits,
            telemetry_stopped.wait(),
        ))
    });
    let mut main = Vec::new();
    if let Some(tcp) = listeners.http {
        main.push(http::serve::Listener::from(tcp));
    }
    if let Some(https) = listeners.https {
        tasks.push(
            https
                .tls
                .spawn_reloader(https.reload_interval, shutdown.clone().wait()),
        );
        main.push(http::serve::Listener {
            tcp: https.tcp,
            tls: Some(https.tls.acceptor()),
        });
    }
    let health = state.health.clone();
    let draining = async move {
        shutdown.wait().await;
        health.start_draining();
        tracing::info!(
            drain_timeout_secs = limits.drain_timeout.as_secs_f64(),
            "shutting down: readiness fails, no new connections, finishing requests in flight"
        );
    };
    let app = http::app(state);
    http::serve::serve_all(main, app, limits, draining).await;
    tracing::info!("every connection is closed");
    if let Some(task) = grpc_task {
        match task.await {
            Ok(Err(error)) => tracing::error!(%error, "gRPC API listener failed"),
            Err(error) => tracing::error!(%error, "gRPC API task failed"),
            Ok(Ok(())) => {}
        }
    }
    telemetry_stop.fire();
    if let Some(task) = telemetry_task {
        let _ = task.await;
    }
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

/// What a configuration needs beyond its validated settings before it can
/// serve: its connectors built and its templates loaded. `check-config` and a
/// reload both go through here, so they accept and refuse the same configs.
pub struct Prepared {
    pub connectors: Connectors,
    pub templates: Templates,
}

/// Builds what `settings` needs, or lists every problem found. (`config::load`
/// has already decoded and checked every connector's config; what remains is
/// opening them: upstream HTTP clients, CA files, password hashes.)
pub fn prepare(settings: &Settings, clock: Clock) -> Result<Prepared, Vec<String>> {
    let mut problems = Vec::new();
    let connectors = crate::connector::build_connectors(settings, clock)
        .map_err(|error| problems.push(error.to_string()))
        .ok();
    let templates = Templates::load(&settings.frontend)
        .map_err(|error| problems.push(format!("frontend: {error}")))
        .ok();
    match (connectors, templates) {
        (Some(connectors), Some(templates)) if problems.is_empty() => Ok(Prepared {
            connectors,
            templates,
        }),
        _ => Err(problems),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("invalid config:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
    #[error("these settings only change with a restart: {}", .0.join(", "))]
    NeedsRestart(Vec<&'static str>),
}

/// Applies a reloaded configuration (SIGHUP): clients, connectors, static
/// passwords, templates, `oauth2`, `expiry` (but `idTokens`) and the log level
/// change; requests in flight finish with the configuration they started with.
/// A configuration that changes what only a restart can (see
/// [`restart_only_changes`]) or that cannot be prepared is refused as a whole,
/// and the running one stays.
pub fn reload(state: &AppState, settings: Settings) -> Result<(), ReloadError> {
    let fixed = restart_only_changes(&state.settings, &settings);
    if !fixed.is_empty() {
        return Err(ReloadError::NeedsRestart(fixed));
    }
    let current = state.live();
    let prepared =
        prepare(&settings, current.provider.clock().clone()).map_err(ReloadError::Invalid)?;
    let level = settings.logger.level.clone();
    let provider = current
        .provider
        .reconfigured(Arc::new(settings), Arc::new(prepared.connectors))
        .map_err(|_| ReloadError::Invalid(vec!["cannot build the provider".to_owned()]))?;
    crate::telemetry::set_log_level(&level)
        .map_err(|error| ReloadError::Invalid(vec![format!("logger.level: {error}")]))?;
    state.replace_live(Live {
        provider,
        templates: prepared.templates,
    });
    Ok(())
}

/// The settings a running server cannot change: where it listens and how
/// (`web`, `telemetry`), what it is (`issuer`), where its state lives
/// (`storage`), its signing-key policy (`signer`, `expiry.idTokens`), the log
/// format and the garbage-collection interval.
pub fn restart_only_changes(running: &Settings, new: &Settings) -> Vec<&'static str> {
    fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
        serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
    }
    let mut changed = Vec::new();
    let mut check = |name: &'static str, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    check("issuer", running.issuer.url != new.issuer.url);
    check("storage", running.storage != new.storage);
    check("web", json(&running.web) != json(&new.web));
    check("telemetry", running.telemetry_http != new.telemetry_http);
    check("grpc", running.grpc != new.grpc);
    check("signer", json(&running.signer) != json(&new.signer));
    check(
        "expiry.idTokens",
        running.expiry.id_tokens != new.expiry.id_tokens,
    );
    check(
        "logger.format",
        json(&running.logger.format) != json(&new.logger.format),
    );
    check(
        "logger.excludeFields",
        running.logger.exclude_fields != new.logger.exclude_fields,
    );
    check("gc.interval", running.gc_interval != new.gc_interval);
    // The HTTP layer reads the cookie with the settings it started with.
    check("sessions", running.sessions != new.sessions);
    changed
}
