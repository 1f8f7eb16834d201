//! The validated, resolved configuration the server runs on: defaults applied,
//! durations parsed, secrets read from their env/file forms, env expanded.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::connector::kinds::KindConfig;
use crate::keys::SigningAlgorithm;

/// Auth codes live 30 minutes, fixed, as in Dex.
pub const AUTH_CODE_LIFETIME: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub issuer: Issuer,
    pub storage: StorageSettings,
    pub web: WebSettings,
    /// Address of the telemetry listener (`/metrics`, `/healthz/*`), if any.
    pub telemetry_http: Option<String>,
    /// The gRPC admin API (`grpc`), when `grpc.addr` is set.
    pub grpc: Option<GrpcSettings>,
    pub frontend: FrontendSettings,
    pub oauth2: OAuth2Settings,
    pub expiry: ExpirySettings,
    pub signer: SignerSettings,
    pub logger: LoggerSettings,
    pub clients: Vec<Client>,
    pub connectors: Vec<ConnectorSettings>,
    pub passwords: Vec<Password>,
    pub enable_password_db: bool,
    pub gc_interval: Duration,
    /// Browser sessions; `None` when turned off (`DEX_SESSIONS_ENABLED=false`),
    /// which gives Dex v2.45's behaviour: no SSO, no `/logout`.
    pub sessions: Option<SessionSettings>,
}

impl Settings {
    /// The one client lookup: config clients, then those created through the
    /// gRPC API (merged in by the provider; config ones win on id conflicts).
    pub fn client(&self, id: &str) -> Option<&Client> {
        self.clients.iter().find(|c| c.id == id)
    }
}

/// The resolved `grpc` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrpcSettings {
    pub addr: String,
    /// Certificate and key (PEM files); `None` serves plaintext HTTP/2, as Dex.
    pub tls: Option<GrpcTls>,
    pub reflection: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrpcTls {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    /// Client certificates are required and verified against this CA (PEM).
    pub client_ca: Option<std::path::PathBuf>,
    /// `"1.2"` or `"1.3"`; empty = the default (1.2 and 1.3).
    pub min_version: String,
    pub max_version: String,
}

/// The resolved `sessions` block (Dex HEAD's defaults applied).
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct SessionSettings {
    pub cookie_name: String,
    /// Counted from the session's creation; never extended.
    pub absolute_lifetime: Duration,
    /// Idle timeout: the session ends this long after its last use.
    pub valid_if_not_used_for: Duration,
    pub remember_me_checked_by_default: bool,
    /// AES-GCM key sealing the cookie value (16, 24 or 32 bytes), if configured.
    #[serde(serialize_with = "redact_option_bytes")]
    pub cookie_encryption_key: Option<Vec<u8>>,
    /// `ssoSharedWithDefault: all`: a client without `ssoSharedWith` shares its
    /// sessions with every client.
    pub sso_shared_with_all_by_default: bool,
}

impl Default for SessionSettings {
    /// Dex HEAD's defaults.
    fn default() -> Self {
        Self {
            cookie_name: "dex_session".to_owned(),
            absolute_lifetime: Duration::from_secs(24 * 3600),
            valid_if_not_used_for: Duration::from_secs(3600),
            remember_me_checked_by_default: true,
            cookie_encryption_key: None,
            sso_shared_with_all_by_default: false,
        }
    }
}

impl std::fmt::Debug for SessionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSettings")
            .field("cookie_name", &self.cookie_name)
            .field("absolute_lifetime", &self.absolute_lifetime)
            .field("valid_if_not_used_for", &self.valid_if_not_used_for)
            .field(
                "remember_me_checked_by_default",
                &self.remember_me_checked_by_default,
            )
            .field(
                "cookie_encryption_key",
                &self.cookie_encryption_key.as_ref().map(|_| REDACTED),
            )
            .field(
                "sso_shared_with_all_by_default",
                &self.sso_shared_with_all_by_default,
            )
            .finish()
    }
}

fn redact_option_bytes<S: serde::Serializer>(
    value: &Option<Vec<u8>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => serializer.serialize_some(REDACTED),
        None => serializer.serialize_none(),
    }
}

/// Dex HEAD's `refreshTokenLifetime` per client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RefreshTokenLifetime {
    /// The refresh token outlives the browser session that issued it.
    #[default]
    Standalone,
    /// The refresh token ends with the browser session that issued it.
    Session,
}

#[derive(Debug, Clone, Serialize)]
pub struct Issuer {
    /// Exactly as configured; this string is `iss`.
    pub url: String,
    /// The issuer URL's path without a trailing slash: `""` or e.g. `"/dex"`.
    /// Every route is mounted under it.
    pub path_prefix: String,
}

impl Issuer {
    /// An absolute URL for a route under the issuer, e.g. `endpoint("/auth")`.
    pub fn endpoint(&self, route: &str) -> String {
        format!("{}{}", self.url.trim_end_matches('/'), route)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StorageSettings {
    Memory,
    Sqlite3 { file: PathBuf },
    Postgres(Box<PostgresSettings>),
}

/// `storage.config` for `type: postgres`, with Dex's defaults applied.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct PostgresSettings {
    pub host: PostgresHost,
    pub port: u16,
    /// Empty: the server uses the user name, as libpq does.
    pub database: String,
    pub user: String,
    #[serde(serialize_with = "redact_option")]
    pub password: Option<String>,
    pub ssl: PostgresSsl,
    /// Per connection attempt; `None` (Dex's `0`) waits as long as the OS does.
    pub connect_timeout: Option<Duration>,
    pub max_open_conns: u32,
    pub max_idle_conns: u32,
    pub conn_max_lifetime: Option<Duration>,
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("ssl", &self.ssl)
            .finish_non_exhaustive()
    }
}

impl PostgresSettings {
    /// `host:port/database` or `socket-dir/.s.PGSQL.port/database`, for logs and
    /// errors (never the password).
    pub fn describe(&self) -> String {
        let database = if self.database.is_empty() {
            &self.user
        } else {
            &self.database
        };
        match &self.host {
            PostgresHost::Tcp(host) if host.contains(':') => {
                format!("[{host}]:{}/{database}", self.port)
            }
            PostgresHost::Tcp(host) => format!("{host}:{}/{database}", self.port),
            PostgresHost::Socket(dir) => {
                format!("{}/.s.PGSQL.{}/{database}", dir.display(), self.port)
            }
        }
    }
}

/// Where the server listens: a TCP host name or address, or (a `host` that is an
/// absolute path, as in libpq) the directory of its Unix socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PostgresHost {
    Tcp(String),
    Socket(PathBuf),
}

/// libpq's `sslmode` values that Dex (lib/pq) accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    /// Encrypted, not verified — unless a CA file is given, then as `verify-ca`.
    Require,
    /// The chain must lead to the CA; the name is not checked.
    VerifyCa,
    /// Chain and name (`serverName`, else `host`).
    VerifyFull,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PostgresSsl {
    pub mode: SslMode,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The name `verify-full` checks; defaults to `host` (oxidex extension).
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WebSettings {
    pub http: Option<String>,
    pub https: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `"1.2"` or `"1.3"` (validated); `None` means the TLS library's default.
    pub tls_min_version: Option<String>,
    pub tls_max_version: Option<String>,
    /// Extra headers for every dynamic response, from `web.headers`.
    pub headers: Vec<(String, String)>,
    pub allowed_origins: Vec<String>,
    pub allowed_headers: Vec<String>,
    /// `web.clientRemoteIP`: where rate limits find the client's address.
    pub client_ip: ClientIpSettings,
    /// `web.drainTimeout`: how long a shutdown waits for requests in flight
    /// before it closes the connections that still carry one.
    pub drain_timeout: Duration,
}

/// `web.drainTimeout` when unset: Kubernetes sends SIGKILL 30 s after SIGTERM
/// (`terminationGracePeriodSeconds`), so the drain ends well before that.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// `web.clientRemoteIP`, parsed. `header` is `None` when unset or when no
/// proxies are trusted (the header could then be forged by anyone).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClientIpSettings {
    #[serde(serialize_with = "header_name_str")]
    pub header: Option<http::HeaderName>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

fn header_name_str<S: serde::Serializer>(
    header: &Option<http::HeaderName>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match header {
        Some(name) => serializer.serialize_some(name.as_str()),
        None => serializer.serialize_none(),
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FrontendSettings {
    pub dir: Option<PathBuf>,
    pub theme: String,
    pub issuer_display_name: String,
    pub logo_url: String,
    pub extra: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OAuth2Settings {
    /// Effective grant types: the configured allow-list intersected with what the
    /// server supports, sorted (this is `grant_types_supported`).
    pub grant_types: Vec<String>,
    /// Allowed response types as configured (default `["code"]`), sorted.
    pub response_types: Vec<String>,
    pub skip_approval_screen: bool,
    pub always_show_login_screen: bool,
    pub password_connector: Option<String>,
    pub pkce_enforce: bool,
    pub pkce_methods: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExpirySettings {
    pub id_tokens: Duration,
    pub auth_requests: Duration,
    pub device_requests: Duration,
    pub refresh_tokens: RefreshTokenPolicy,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RefreshTokenPolicy {
    pub disable_rotation: bool,
    /// Zero means no reuse window.
    pub reuse_interval: Duration,
    pub valid_if_not_used_for: Option<Duration>,
    pub absolute_lifetime: Option<Duration>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SignerSettings {
    pub algorithm: SigningAlgorithm,
    pub rotation_period: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoggerSettings {
    /// A tracing filter directive, e.g. `info`.
    pub level: String,
    pub format: LogFormat,
    pub exclude_fields: Vec<String>,
}

/// A relying party allowed to use oxidex.
#[derive(Clone, Serialize)]
pub struct Client {
    pub id: String,
    #[serde(serialize_with = "redact")]
    pub secret: String,
    pub redirect_uris: Vec<String>,
    pub trusted_peers: Vec<String>,
    pub public: bool,
    pub name: String,
    pub logo_url: String,
    pub allowed_connectors: Vec<String>,
    pub require_pkce: bool,
    /// Exact-match allow-list for `post_logout_redirect_uri` at `/logout`.
    pub post_logout_redirect_uris: Vec<String>,
    /// Back-Channel Logout 1.0 receiver; empty when not registered.
    pub backchannel_logout_uri: String,
    pub refresh_token_lifetime: RefreshTokenLifetime,
    /// Clients that may reuse a session this client authenticated (`*` = all);
    /// `None` defers to `sessions.ssoSharedWithDefault`.
    pub sso_shared_with: Option<Vec<String>>,
    /// `clientCredentialsClaims.groups`: the `groups` claim of this client's
    /// `client_credentials` tokens.
    pub client_credentials_groups: Vec<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("redirect_uris", &self.redirect_uris)
            .field("public", &self.public)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A configured upstream connector. `config` has had `$VAR` expansion and the
/// `<field>File` secret forms applied (a `clientSecretFile` became `clientSecret`);
/// `decoded` is that config decoded and validated for its `kind`.
#[derive(Clone, Serialize)]
pub struct ConnectorSettings {
    pub kind: String,
    pub id: String,
    pub name: String,
    #[serde(serialize_with = "redact_connector_config")]
    pub config: serde_json::Value,
    pub grant_types: Vec<String>,
    #[serde(skip)]
    pub decoded: KindConfig,
}

impl std::fmt::Debug for ConnectorSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorSettings")
            .field("kind", &self.kind)
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A static password entry (the local password DB).
#[derive(Clone, Serialize)]
pub struct Password {
    /// Lower-cased: lookups are case-insensitive.
    pub email: String,
    #[serde(serialize_with = "redact")]
    pub hash: String,
    pub username: String,
    pub name: String,
    pub preferred_username: String,
    pub email_verified: bool,
    pub user_id: String,
    pub groups: Vec<String>,
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Password")
            .field("email", &self.email)
            .field("hash", &"<redacted>")
            .finish_non_exhaustive()
    }
}

pub const REDACTED: &str = "<redacted>";

fn redact_option<S: serde::Serializer>(
    value: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => serializer.serialize_some(REDACTED),
        None => serializer.serialize_none(),
    }
}

fn redact<S: serde::Serializer>(value: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(if value.is_empty() { "" } else { REDACTED })
}

/// Keys inside connector configs whose values are secrets.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("secret")
        || k.contains("password")
        || k == "token"
        || k == "bindpw"
        || k.ends_with("key") && !k.ends_with("publickey")
}

fn redact_connector_config<S: serde::Serializer>(
    value: &serde_json::Value,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    fn walk(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => serde_json::Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let v = if is_secret_key(k) && v.is_string() {
                            serde_json::Value::String(REDACTED.to_owned())
                        } else {
                            walk(v)
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(walk).collect())
            }
            other => other.clone(),
        }
    }
    walk(value).serialize(serializer)
}
