//! The per-request ceiling for benchmarks: `GET /` answers "hello" like
//! `examples/hello.rs`, but through everything an oxidex route pays before and after
//! its handler: oxidex's connection handling ([`oxidex::http::serve`]: header-read
//! timeout, idle and in-flight tracking, the connection cap), its observability layer
//! ([`oxidex::http::observed`]: request id, tracing span, Prometheus metrics) and its
//! logger at `info`, text format (what `examples/config-dev.json` and the bench use).
//! discovery and `/keys` measured against this are what those endpoints cost beyond
//! that per-request layer. Usage: `layered_hello [ADDR]`.

use axum::Router;
use axum::routing::get;
use oxidex::config::settings::{LogFormat, LoggerSettings};
use oxidex::http::serve::{ConnectionLimits, serve};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    oxidex::telemetry::init_logging(&LoggerSettings {
        level: "info".to_owned(),
        format: LogFormat::Text,
        exclude_fields: Vec::new(),
    })?;
    // The recorder oxidex installs, and its upkeep, so metrics cost what they cost there.
    let _ = oxidex::telemetry::prometheus();
    let _upkeep = oxidex::telemetry::spawn_metrics_upkeep(
        oxidex::telemetry::METRICS_UPKEEP_INTERVAL,
        std::future::pending(),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("layered hello listening on {}", listener.local_addr()?);
    let app = oxidex::http::observed(Router::new().route("/", get(|| async { "hello" })), &[]);
    serve(
        listener,
        app,
        ConnectionLimits::default(),
        std::future::pending(),
    )
    .await;
    Ok(())
}
