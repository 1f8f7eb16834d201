//! Dex's configuration schema (Dex's `cmd/dex/config.go`), as serde types.
//!
//! These types describe the file as written. Secrets are still in their reference
//! forms here (`secretEnv`, `secretFile`, …); [`super::resolve`] turns them into
//! values. Type-specific blocks (`storage.config`, `connectors[].config`,
//! `signer.config`) stay JSON until their owner parses them, because their shape
//! depends on `type`.

use serde::{Deserialize, Serialize};

use super::duration::GoDuration;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub issuer: String,
    #[serde(default)]
    pub storage: Option<StorageConfig>,
    #[serde(default)]
    pub web: Web,
    #[serde(default)]
    pub telemetry: Telemetry,
    #[serde(default)]
    pub grpc: Option<serde_json::Value>,
    #[serde(default)]
    pub frontend: Frontend,
    #[serde(default)]
    pub oauth2: OAuth2,
    #[serde(default)]
    pub expiry: Expiry,
    #[serde(default)]
    pub logger: Logger,
    #[serde(default)]
    pub signer: Option<SignerConfig>,
    #[serde(default)]
    pub static_clients: Vec<StaticClient>,
    #[serde(default)]
    pub connectors: Vec<ConnectorConfig>,
    #[serde(default, rename = "enablePasswordDB")]
    pub enable_password_db: bool,
    #[serde(default)]
    pub static_passwords: Vec<StaticPassword>,
    /// oxidex extension: garbage collection of expired objects.
    #[serde(default)]
    pub gc: GarbageCollection,
    /// Browser sessions (Dex HEAD's `sessions` block; on by default in oxidex).
    #[serde(default)]
    pub sessions: Sessions,
}

/// Dex HEAD's `sessions` block (`cmd/dex/config.go: Sessions`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sessions {
    #[serde(default)]
    pub cookie_name: String,
    #[serde(default)]
    pub absolute_lifetime: GoDuration,
    #[serde(default)]
    pub valid_if_not_used_for: GoDuration,
    #[serde(default)]
    pub remember_me_checked_by_default: Option<bool>,
    #[serde(default)]
    pub cookie_encryption_key: String,
    #[serde(default)]
    pub sso_shared_with_default: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageConfig {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub config: serde_json::Value,
}

/// `storage.config` for `type: sqlite3`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SqliteConfig {
    #[serde(default)]
    pub file: String,
}

/// `storage.config` for `type: postgres` (Dex's `storage/sql` `Postgres`), after
/// key normalisation and the `passwordFile` form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PostgresConfig {
    pub host: String,
    pub port: i64,
    pub database: String,
    pub user: String,
    pub password: String,
    pub ssl: PostgresSslConfig,
    pub connection_timeout: i64,
    pub max_open_conns: i64,
    pub max_idle_conns: i64,
    pub conn_max_lifetime: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PostgresSslConfig {
    pub mode: String,
    pub ca_file: String,
    pub cert_file: String,
    pub key_file: String,
    pub server_name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Web {
    #[serde(default)]
    pub http: String,
    #[serde(default)]
    pub https: String,
    #[serde(default, rename = "tlsCert")]
    pub tls_cert: String,
    #[serde(default, rename = "tlsKey")]
    pub tls_key: String,
    #[serde(default, rename = "tlsMinVersion")]
    pub tls_min_version: String,
    #[serde(default, rename = "tlsMaxVersion")]
    pub tls_max_version: String,
    #[serde(default)]
    pub headers: WebHeaders,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    #[serde(default, rename = "clientRemoteIP")]
    pub client_remote_ip: ClientRemoteIp,
    /// oxidex extension: how long a shutdown waits for requests in flight.
    #[serde(default, rename = "drainTimeout")]
    pub drain_timeout: GoDuration,
}

/// Extra response headers; the JSON keys are the header names, as in Dex.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebHeaders {
    #[serde(
        default,
        rename = "Content-Security-Policy",
        skip_serializing_if = "String::is_empty"
    )]
    pub content_security_policy: String,
    #[serde(
        default,
        rename = "X-Frame-Options",
        skip_serializing_if = "String::is_empty"
    )]
    pub x_frame_options: String,
    #[serde(
        default,
        rename = "X-Content-Type-Options",
        skip_serializing_if = "String::is_empty"
    )]
    pub x_content_type_options: String,
    #[serde(
        default,
        rename = "X-XSS-Protection",
        skip_serializing_if = "String::is_empty"
    )]
    pub x_xss_protection: String,
    #[serde(
        default,
        rename = "Strict-Transport-Security",
        skip_serializing_if = "String::is_empty"
    )]
    pub strict_transport_security: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientRemoteIp {
    #[serde(default)]
    pub header: String,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Telemetry {
    #[serde(default)]
    pub http: String,
    #[serde(default)]
    pub enable_profiling: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Frontend {
    #[serde(default)]
    pub dir: String,
    #[serde(default)]
    pub theme: String,
    #[serde(default)]
    pub issuer: String,
    #[serde(default, rename = "logoURL")]
    pub logo_url: String,
    #[serde(default)]
    pub extra: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OAuth2 {
    /// `None` means Dex's default allow-list.
    #[serde(default)]
    pub grant_types: Option<Vec<String>>,
    /// `None` means `["code"]`.
    #[serde(default)]
    pub response_types: Option<Vec<String>>,
    #[serde(default)]
    pub skip_approval_screen: bool,
    #[serde(default)]
    pub always_show_login_screen: bool,
    #[serde(default)]
    pub password_connector: String,
    #[serde(default)]
    pub pkce: Pkce,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pkce {
    #[serde(default)]
    pub enforce: bool,
    /// `None` means `["S256", "plain"]`.
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Expiry {
    #[serde(default)]
    pub id_tokens: GoDuration,
    #[serde(default)]
    pub auth_requests: GoDuration,
    #[serde(default)]
    pub device_requests: GoDuration,
    #[serde(default)]
    pub signing_keys: GoDuration,
    #[serde(default)]
    pub refresh_tokens: RefreshTokenExpiry,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshTokenExpiry {
    #[serde(default)]
    pub disable_rotation: bool,
    #[serde(default)]
    pub reuse_interval: GoDuration,
    #[serde(default)]
    pub valid_if_not_used_for: GoDuration,
    #[serde(default)]
    pub absolute_lifetime: GoDuration,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Logger {
    #[serde(default)]
    pub level: String,
    #[serde(default)]
    pub format: String,
    #[serde(default)]
    pub exclude_fields: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SignerConfig {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub config: serde_json::Value,
}

/// `signer.config` for `type: local`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalSignerConfig {
    #[serde(default)]
    pub keys_rotation_period: GoDuration,
    /// `RS256` (default), `ES256` or `EdDSA`.
    #[serde(default)]
    pub algorithm: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StaticClient {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub id_env: String,
    #[serde(default)]
    pub secret: String,
    #[serde(default)]
    pub secret_env: String,
    /// oxidex extension: read the secret from this file (trailing newline trimmed).
    #[serde(default)]
    pub secret_file: String,
    #[serde(default, rename = "redirectURIs")]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub trusted_peers: Vec<String>,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "logoURL")]
    pub logo_url: String,
    #[serde(default)]
    pub allowed_connectors: Vec<String>,
    /// oxidex extension: require PKCE from this client.
    #[serde(default, rename = "requirePKCE")]
    pub require_pkce: bool,
    #[serde(default, rename = "postLogoutRedirectURIs")]
    pub post_logout_redirect_uris: Vec<String>,
    #[serde(default, rename = "backchannelLogoutURI")]
    pub backchannel_logout_uri: String,
    #[serde(default)]
    pub refresh_token_lifetime: String,
    /// `None` (absent) defers to `sessions.ssoSharedWithDefault`; `[]` shares
    /// with nobody.
    #[serde(default)]
    pub sso_shared_with: Option<Vec<String>>,
    /// Dex HEAD: claims of the tokens this client gets from the
    /// `client_credentials` grant.
    #[serde(default)]
    pub client_credentials_claims: ClientCredentialsClaims,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientCredentialsClaims {
    /// The `groups` claim (with the `groups` scope).
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectorConfig {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub config: serde_json::Value,
    #[serde(default)]
    pub grant_types: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StaticPassword {
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub hash: String,
    #[serde(default)]
    pub hash_from_env: String,
    /// oxidex extension: read the bcrypt hash from this file.
    #[serde(default)]
    pub hash_file: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub preferred_username: String,
    #[serde(default)]
    pub email_verified: Option<bool>,
    #[serde(default, rename = "userID")]
    pub user_id: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// oxidex extension: how often expired objects are removed (Dex: fixed 5 minutes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GarbageCollection {
    #[serde(default)]
    pub interval: GoDuration,
}
