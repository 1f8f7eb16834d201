//! oxidex: a Dex-compatible OpenID Connect identity provider.

pub mod blocking;
pub mod config;
pub mod connector;
pub mod crypto;
pub mod grpc;
pub mod health;
pub mod http;
pub mod keys;
pub mod listen;
mod log_fields;
pub mod oidc;
pub mod provider;
pub mod server;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod throttle;
pub mod tls;
pub mod urlencoded;
pub mod web;

/// The time source. Production uses the system clock; tests inject their own so
/// expiry and rotation are checked without sleeping.
pub type Clock = std::sync::Arc<dyn Fn() -> std::time::SystemTime + Send + Sync>;

/// The version printed by `oxidex version` and exposed in the image labels.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
