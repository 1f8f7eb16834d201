//! Logging (text or JSON on stderr) and the telemetry listener: `/metrics`
//! (Prometheus), `/healthz`, `/healthz/live`, `/healthz/ready`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::task::JoinHandle;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{LogFormat, LoggerSettings};
use crate::health::HealthChecker;
use crate::log_fields::{Excluded, FilteredJson, TextFields};

/// Installs the global tracing subscriber. `RUST_LOG`, when set, wins over
/// `logger.level` so an operator can turn on debug output without editing config.
/// `logger.excludeFields` are dropped from every record (`crate::log_fields`).
pub fn init_logging(logger: &LoggerSettings) -> Result<(), String> {
    let filter = log_filter(&logger.level)?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let excluded = Excluded::new(&logger.exclude_fields);
    let result = match logger.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(FilteredJson(excluded)),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .fmt_fields(TextFields(excluded))
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    result.map_err(|e| format!("cannot install the logger: {e}"))?;
    let _ = LOG_FILTER.set(handle);
    Ok(())
}

/// The installed logger's filter, changed by a configuration reload.
static LOG_FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

fn log_filter(level: &str) -> Result<EnvFilter, String> {
    match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives),
        _ => EnvFilter::try_new(level),
    }
    .map_err(|e| format!("invalid log level {level:?}: {e}"))
}

/// Applies a reloaded `logger.level` (`RUST_LOG`, when set, still wins). Without
/// an installed logger (tests) there is nothing to change.
pub fn set_log_level(level: &str) -> Result<(), String> {
    let filter = log_filter(level)?;
    match LOG_FILTER.get() {
        Some(handle) => handle
            .reload(filter)
            .map_err(|e| format!("cannot change the log level: {e}")),
        None => Ok(()),
    }
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Dex's buckets for `request_duration_seconds` (seconds).
pub const REQUEST_DURATION_BUCKETS: [f64; 6] = [0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How often the recorder folds recorded samples into its histograms.
pub const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The recorder keeps every histogram sample in a queue until it folds them into
/// the histogram, which it does on render or upkeep: with nobody scraping and no
/// upkeep, that queue grows by every request. Fixed buckets keep each histogram
/// at a fixed size once folded (a summary would keep a sketch per series).
fn builder() -> PrometheusBuilder {
    let builder = PrometheusBuilder::new();
    match builder.set_buckets(&REQUEST_DURATION_BUCKETS) {
        Ok(builder) => builder,
        // Only refused for an empty list.
        Err(error) => {
            tracing::error!(%error, "cannot set histogram buckets");
            PrometheusBuilder::new()
        }
    }
}

/// The process-wide Prometheus recorder, installed on first use. `None` if another
/// recorder was installed first (only possible in tests).
pub fn prometheus() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| builder().install_recorder().ok())
        .clone()
}

/// Runs the recorder's upkeep every `interval` until `shutdown`, so that memory
/// stays bounded whether or not anybody scrapes `/metrics`.
pub fn spawn_metrics_upkeep(
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    let handle = prometheus();
    tokio::spawn(async move {
        let Some(handle) = handle else {
            return;
        };
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = ticks.tick() => handle.run_upkeep(),
                () = &mut shutdown => return,
            }
        }
    })
}

#[derive(Clone)]
struct TelemetryState {
    health: Arc<HealthChecker>,
    prometheus: Option<PrometheusHandle>,
}

pub fn telemetry_app(health: Arc<HealthChecker>) -> Router {
    let state = TelemetryState {
        health,
        prometheus: prometheus(),
    };
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(ready))
        .route("/healthz/live", get(live))
        .route("/healthz/ready", get(ready))
        .with_state(state)
}

async fn metrics_page(State(state): State<TelemetryState>) -> impl IntoResponse {
    let body = state
        .prometheus
        .as_ref()
        .map(|h| h.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

async fn live() -> &'static str {
    "ok"
}

async fn ready(State(state): State<TelemetryState>) -> impl IntoResponse {
    let report = state.health.latest();
    let status = if report.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}
