//! From the decoded file to [`Settings`]: overrides, env and file secret forms,
//! defaults, and every validation, each problem named by its key path.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::decode::{self, Format, Normalizer, join};
use super::duration::GoDuration;
use super::env::{Env, expand, expand_value};
use super::nix_store::is_in_nix_store;
use super::schema::{self, Config};
use super::secrets::{
    apply_file_forms, nix_store_message, normalize_bcrypt, read_secret_file, refuse_inline_secrets,
};
use super::settings::*;
use super::{ConfigError, LoadOptions, Loaded, Report};
use crate::connector::kinds;
use crate::keys::SigningAlgorithm;

/// The grant types oxidex implements. The effective list is the configured (or
/// Dex's default) allow-list intersected with this one.
pub const SUPPORTED_GRANT_TYPES: &[&str] = &[
    "authorization_code",
    CLIENT_CREDENTIALS,
    "implicit",
    "password",
    "refresh_token",
    DEVICE_CODE,
    TOKEN_EXCHANGE,
];

const DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const CLIENT_CREDENTIALS: &str = "client_credentials";

/// Dex's default `oauth2.grantTypes`.
const DEX_DEFAULT_GRANT_TYPES: &[&str] = &[
    "authorization_code",
    "implicit",
    "password",
    "refresh_token",
    DEVICE_CODE,
    TOKEN_EXCHANGE,
];

/// Grant types a connector's `grantTypes` may name (Dex's list).
const CONNECTOR_GRANT_TYPES: &[&str] = DEX_DEFAULT_GRANT_TYPES;

const RESPONSE_TYPES: &[&str] = &[
    "code",
    "token",
    "id_token",
    "code token",
    "code id_token",
    "id_token token",
    "code id_token token",
];

const DAY: Duration = Duration::from_secs(24 * 3600);

pub(crate) fn load(
    text: &str,
    path: &Path,
    canonical_store_path: Option<&Path>,
    options: &LoadOptions,
) -> Result<Loaded, ConfigError> {
    let env = &options.env;
    let mut report = Report::default();
    let strict = options.strict || env.flag("DEX_CONFIG_DISALLOW_UNKNOWN_FIELDS", false);
    let format = Format::of(path);
    let fail = |report: Report| ConfigError {
        problems: report.problems,
        warnings: report.warnings,
    };

    let map = match decode::parse(text, format) {
        Ok(Value::Object(map)) => map,
        Ok(Value::Null) => {
            report.error("", format!("the config file {} is empty", path.display()));
            return Err(fail(report));
        }
        Ok(_) => {
            report.error(
                "",
                "the config file must hold an object of keys at the top level",
            );
            return Err(fail(report));
        }
        Err(message) => {
            report.error("", message);
            return Err(fail(report));
        }
    };
    let normalized = Normalizer {
        report: &mut report,
        strict,
        yaml: format == Format::Yaml,
    }
    .object("", decode::CONFIG, map);
    let mut config: Config = match serde_json::from_value(Value::Object(normalized)) {
        Ok(config) => config,
        Err(e) => {
            report.error("", format!("cannot decode the config: {e}"));
            return Err(fail(report));
        }
    };
    apply_overrides(&mut config, options);

    let store_path = if is_in_nix_store(path) {
        Some(path)
    } else {
        canonical_store_path
    };
    let mut resolver = Resolver {
        report,
        env,
        strict,
        yaml: format == Format::Yaml,
        expansion: env.flag("DEX_EXPAND_ENV", true),
        store_path,
    };
    let settings = resolver.settings(config);
    let report = resolver.report;
    if report.problems.is_empty() {
        Ok(Loaded {
            settings,
            warnings: report.warnings,
        })
    } else {
        Err(fail(report))
    }
}

fn apply_overrides(config: &mut Config, options: &LoadOptions) {
    let overrides = &options.overrides;
    let set = |target: &mut String, value: &Option<String>| {
        if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
            target.clone_from(value);
        }
    };
    set(&mut config.web.http, &overrides.web_http);
    set(&mut config.web.https, &overrides.web_https);
    set(&mut config.telemetry.http, &overrides.telemetry_http);
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

fn is_cidr(text: &str) -> bool {
    let Some((ip, bits)) = text.split_once('/') else {
        return false;
    };
    let max = match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => 32,
        Ok(IpAddr::V6(_)) => 128,
        Err(_) => return false,
    };
    bits.parse::<u8>().is_ok_and(|bits| bits <= max)
}

/// A duration's text as configured, or the default's.
fn or_default<'a>(value: &'a GoDuration, default: &'a str) -> &'a str {
    if value.is_unset() {
        default
    } else {
        &value.text
    }
}

/// Sorted, without duplicates.
fn sorted(items: impl IntoIterator<Item = String>) -> Vec<String> {
    items
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

struct Resolver<'a> {
    report: Report,
    env: &'a Env,
    strict: bool,
    /// YAML input (see [`Normalizer::yaml`]).
    yaml: bool,
    /// `DEX_EXPAND_ENV`.
    expansion: bool,
    /// Set when the config file lives in the Nix store.
    store_path: Option<&'a Path>,
}

impl Resolver<'_> {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.report.error(path, message);
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.report.warn(path, message);
    }

    fn settings(&mut self, config: Config) -> Settings {
        let problems_before = self.report.problems.len();
        let issuer = self.issuer(&config.issuer);
        // Without a valid issuer there is no callback URL to hold redirectURIs to.
        let callback =
            (self.report.problems.len() == problems_before).then(|| issuer.endpoint("/callback"));
        let storage = self.storage(config.storage.as_ref());
        let web = self.web(&config.web);
        self.listen_address("telemetry.http", &config.telemetry.http);
        let connectors = self.connectors(&config.connectors, callback.as_deref());
        let connector_ids: Vec<String> = config.connectors.iter().map(|c| c.id.clone()).collect();
        let clients = self.clients(
            &config.static_clients,
            &connector_ids,
            config.enable_password_db,
        );
        let passwords = self.passwords(&config.static_passwords, config.enable_password_db);
        self.check_login_methods(&config);
        let oauth2 = self.oauth2(
            &config.oauth2,
            &config.connectors,
            config.enable_password_db,
        );
        let expiry = self.expiry(&config.expiry);
        let signer = self.signer(config.signer.as_ref(), &config.expiry.signing_keys);
        let logger = self.logger(&config.logger);
        let gc_interval = self
            .positive_duration(
                "gc.interval",
                "garbage collection interval",
                &config.gc.interval,
            )
            .unwrap_or(Duration::from_secs(5 * 60));
        let sessions = self.sessions(&config.sessions);
        Settings {
            issuer,
            storage,
            web,
            telemetry_http: non_empty(&config.telemetry.http),
            grpc: self.grpc(&config.grpc),
            frontend: self.frontend(&config.frontend),
            oauth2,
            expiry,
            signer,
            logger,
            clients,
            connectors,
            passwords,
            enable_password_db: config.enable_password_db,
            gc_interval,
            sessions,
        }
    }

    /// The `sessions` block with Dex HEAD's defaults (`cmd/dex/serve.go:
    /// parseSessionConfig`) and its checks, errors prefixed as Dex's. Sessions are
    /// on unless `DEX_SESSIONS_ENABLED` is false (Dex HEAD: off unless true).
    fn sessions(&mut self, sessions: &schema::Sessions) -> Option<SessionSettings> {
        const PREFIX: &str = "invalid session config: ";
        if !self.env.flag("DEX_SESSIONS_ENABLED", true) {
            if *sessions != schema::Sessions::default() {
                self.warn(
                    "sessions",
                    "DEX_SESSIONS_ENABLED is false: browser sessions are off and this block is ignored",
                );
            }
            return None;
        }
        let lifetime = |resolver: &mut Self, key: &str, value: &GoDuration, default: u64| {
            let path = format!("sessions.{key}");
            match value.parse() {
                Ok(None) => Some(Duration::from_secs(default)),
                Ok(Some(d)) if d.is_zero() => {
                    resolver.error(
                        path,
                        format!("{PREFIX}{key} must be positive, got {}", value.text),
                    );
                    None
                }
                Ok(Some(d)) => Some(d),
                Err(e) => {
                    resolver.error(path, format!("{PREFIX}invalid {key} {:?}: {e}", value.text));
                    None
                }
            }
        };
        let absolute = lifetime(
            self,
            "absoluteLifetime",
            &sessions.absolute_lifetime,
            24 * 3600,
        );
        let idle = lifetime(
            self,
            "validIfNotUsedFor",
            &sessions.valid_if_not_used_for,
            3600,
        );
        if let (Some(absolute), Some(idle)) = (absolute, idle)
            && idle > absolute
        {
            self.error(
                "sessions.validIfNotUsedFor",
                format!(
                    "{PREFIX}validIfNotUsedFor ({}) must not exceed absoluteLifetime ({})",
                    or_default(&sessions.valid_if_not_used_for, "1h"),
                    or_default(&sessions.absolute_lifetime, "24h"),
                ),
            );
        }
        let key = sessions.cookie_encryption_key.as_bytes();
        if !key.is_empty() && ![16, 24, 32].contains(&key.len()) {
            self.error(
                "sessions.cookieEncryptionKey",
                format!(
                    "{PREFIX}cookieEncryptionKey must be 16, 24 or 32 bytes long (AES-128/192/256), got {} bytes",
                    key.len()
                ),
            );
        }
        if let Some(store_path) = self.store_path.filter(|_| !key.is_empty()) {
            self.error(
                "sessions.cookieEncryptionKey",
                nix_store_message(
                    store_path,
                    "an environment variable ($VAR, with DEX_EXPAND_ENV)",
                ),
            );
        }
        let share_all = match sessions.sso_shared_with_default.as_str() {
            "" | "none" => false,
            "all" => true,
            other => {
                self.error(
                    "sessions.ssoSharedWithDefault",
                    format!(
                        "{PREFIX}ssoSharedWithDefault must be \"none\" or \"all\", got {other:?}"
                    ),
                );
                false
            }
        };
        let cookie_name = match sessions.cookie_name.as_str() {
            "" => "dex_session".to_owned(),
            name if name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) =>
            {
                name.to_owned()
            }
            name => {
                self.error(
                    "sessions.cookieName",
                    format!("{PREFIX}cookieName {name:?} is not a valid cookie name (RFC 6265 token characters only)"),
                );
                String::new()
            }
        };
        Some(SessionSettings {
            cookie_name,
            absolute_lifetime: absolute.unwrap_or_default(),
            valid_if_not_used_for: idle.unwrap_or_default(),
            remember_me_checked_by_default: sessions.remember_me_checked_by_default.unwrap_or(true),
            cookie_encryption_key: (!key.is_empty()).then(|| key.to_vec()),
            sso_shared_with_all_by_default: share_all,
        })
    }

    fn issuer(&mut self, issuer: &str) -> Issuer {
        let mut path_prefix = String::new();
        if issuer.is_empty() {
            self.error("issuer", "no issuer specified in config file");
        } else {
            match url::Url::parse(issuer) {
                Err(e) => self.error(
                    "issuer",
                    format!(
                        "{issuer:?} is not an absolute URL ({e}); e.g. https://auth.example.com/dex"
                    ),
                ),
                Ok(url) => {
                    if url.scheme() != "http" && url.scheme() != "https" {
                        self.error("issuer", format!("{issuer:?} must be an http or https URL"));
                    } else if !url.has_host() {
                        self.error("issuer", format!("{issuer:?} has no host"));
                    }
                    if url.query().is_some() {
                        self.error("issuer", format!("{issuer:?} must not have a query"));
                    }
                    if url.fragment().is_some() {
                        self.error("issuer", format!("{issuer:?} must not have a fragment"));
                    }
                    url.path()
                        .trim_end_matches('/')
                        .clone_into(&mut path_prefix);
                }
            }
        }
        Issuer {
            url: issuer.to_owned(),
            path_prefix,
        }
    }

    /// A normalised block as its schema type. The normaliser has checked every
    /// key's shape, so a failure here is a disagreement between the two schemas:
    /// reported, never papered over with defaults.
    fn typed<T: serde::de::DeserializeOwned>(
        &mut self,
        path: &str,
        map: Map<String, Value>,
    ) -> Option<T> {
        match serde_json::from_value(Value::Object(map)) {
            Ok(value) => Some(value),
            Err(e) => {
                self.error(path, format!("cannot decode: {e}"));
                None
            }
        }
    }

    /// A `config` block of a connector or storage: the Nix-store rule on the
    /// values as written, then `$VAR` expansion, then the `…File` forms.
    fn secret_bearing_block(&mut self, path: &str, block: &Value) -> Value {
        let mut block = match block {
            Value::Null => Value::Object(Map::new()),
            Value::Object(_) => block.clone(),
            _ => {
                self.error(path, "expected an object");
                return Value::Object(Map::new());
            }
        };
        if let Some(store_path) = self.store_path {
            refuse_inline_secrets(path, &block, self.expansion, store_path, &mut self.report);
        }
        if self.expansion {
            expand_value(&mut block, self.env);
        }
        apply_file_forms(path, &mut block, &mut self.report);
        block
    }

    fn storage(&mut self, storage: Option<&schema::StorageConfig>) -> StorageSettings {
        let Some(storage) = storage else {
            self.error("storage", "no storage supplied in config file");
            return StorageSettings::Memory;
        };
        let config = self.secret_bearing_block("storage.config", &storage.config);
        match storage.kind.as_str() {
            "memory" => StorageSettings::Memory,
            "sqlite3" => {
                let Value::Object(map) = config else {
                    return StorageSettings::Memory;
                };
                let map = Normalizer {
                    report: &mut self.report,
                    strict: self.strict,
                    yaml: self.yaml,
                }
                .object("storage.config", decode::SQLITE, map);
                let sqlite: schema::SqliteConfig =
                    self.typed("storage.config", map).unwrap_or_default();
                if sqlite.file.is_empty() {
                    self.error(
                        "storage.config.file",
                        "sqlite3 storage needs the path of its database file",
                    );
                }
                StorageSettings::Sqlite3 {
                    file: PathBuf::from(sqlite.file),
                }
            }
            "postgres" => {
                let Value::Object(map) = config else {
                    return StorageSettings::Memory;
                };
                let map = Normalizer {
                    report: &mut self.report,
                    strict: self.strict,
                    yaml: self.yaml,
                }
                .object("storage.config", decode::POSTGRES, map);
                match self.typed("storage.config", map) {
                    Some(postgres) => StorageSettings::Postgres(Box::new(
                        super::postgres::resolve(postgres, self.env, &mut self.report),
                    )),
                    None => StorageSettings::Memory,
                }
            }
            "" => {
                self.error(
                    "storage.type",
                    "no storage type given (oxidex supports memory, sqlite3 and postgres)",
                );
                StorageSettings::Memory
            }
            kind @ ("mysql" | "etcd" | "kubernetes") => {
                self.error(
                    "storage.type",
                    format!("storage type {kind:?} is not supported by oxidex (supported: memory, sqlite3, postgres)"),
                );
                StorageSettings::Memory
            }
            kind => {
                self.error(
                    "storage.type",
                    format!("unknown storage type {kind:?} (oxidex supports memory, sqlite3 and postgres)"),
                );
                StorageSettings::Memory
            }
        }
    }

    /// The `grpc` block, with Dex's checks and error texts (`Config.Validate`).
    fn grpc(&mut self, grpc: &schema::Grpc) -> Option<GrpcSettings> {
        let tls_set = !grpc.tls_cert.is_empty() || !grpc.tls_key.is_empty();
        let before = self.report.problems.len();
        if grpc.addr.is_empty() && tls_set {
            self.error("grpc.addr", "no address specified for gRPC");
        }
        self.listen_address("grpc.addr", &grpc.addr);
        if grpc.tls_cert.is_empty() != grpc.tls_key.is_empty() {
            self.error("grpc", "must specific both a gRPC TLS cert and key");
        }
        if grpc.tls_cert.is_empty() && !grpc.tls_client_ca.is_empty() {
            self.error(
                "grpc.tlsClientCA",
                "cannot specify gRPC TLS client CA without a gRPC TLS cert",
            );
        }
        let mut versions_ok = true;
        for (key, version) in [
            ("tlsMinVersion", &grpc.tls_min_version),
            ("tlsMaxVersion", &grpc.tls_max_version),
        ] {
            if !version.is_empty() && version != "1.2" && version != "1.3" {
                versions_ok = false;
                self.error(
                    join("grpc", key),
                    format!("{version:?}: supported TLS versions are: 1.2, 1.3"),
                );
            }
        }
        if versions_ok && grpc.tls_min_version == "1.3" && grpc.tls_max_version == "1.2" {
            self.error(
                "grpc.tlsMinVersion",
                "TLSMinVersion greater than TLSMaxVersion",
            );
        }
        if grpc.addr.is_empty() || self.report.problems.len() != before {
            return None;
        }
        let tls = (!grpc.tls_cert.is_empty()).then(|| GrpcTls {
            cert: grpc.tls_cert.clone().into(),
            key: grpc.tls_key.clone().into(),
            client_ca: non_empty(&grpc.tls_client_ca).map(Into::into),
            min_version: grpc.tls_min_version.clone(),
            max_version: grpc.tls_max_version.clone(),
        });
        Some(GrpcSettings {
            addr: grpc.addr.clone(),
            tls,
            reflection: grpc.reflection,
        })
    }

    /// A listen address in a form Dex accepts (`host:port`, `:port`, `[v6]:port`).
    fn listen_address(&mut self, key: &str, addr: &str) {
        if !addr.is_empty()
            && let Err(problem) = crate::listen::parse(addr)
        {
            self.error(key, problem);
        }
    }

    fn web(&mut self, web: &schema::Web) -> WebSettings {
        if web.http.is_empty() && web.https.is_empty() {
            self.error(
                "web",
                "must supply a HTTP/HTTPS address to listen on (web.http or web.https)",
            );
        }
        if !web.https.is_empty() {
            if web.tls_cert.is_empty() {
                self.error("web.tlsCert", "no cert specified for HTTPS");
            }
            if web.tls_key.is_empty() {
                self.error("web.tlsKey", "no private key specified for HTTPS");
            }
        }
        self.listen_address("web.http", &web.http);
        self.listen_address("web.https", &web.https);
        let mut versions_ok = true;
        for (key, version) in [
            ("tlsMinVersion", &web.tls_min_version),
            ("tlsMaxVersion", &web.tls_max_version),
        ] {
            if !version.is_empty() && version != "1.2" && version != "1.3" {
                versions_ok = false;
                self.error(
                    join("web", key),
                    format!("{version:?}: supported TLS versions are: 1.2, 1.3"),
                );
            }
        }
        if versions_ok && web.tls_min_version == "1.3" && web.tls_max_version == "1.2" {
            self.error(
                "web.tlsMinVersion",
                "TLSMinVersion greater than TLSMaxVersion",
            );
        }
        let remote_ip = &web.client_remote_ip;
        for (i, proxy) in remote_ip.trusted_proxies.iter().enumerate() {
            if !is_cidr(proxy) {
                self.error(
                    format!("web.clientRemoteIP.trustedProxies[{i}]"),
                    format!("failed to parse CIDR {proxy:?} (e.g. 10.0.0.0/8)"),
                );
            }
        }
        if !remote_ip.header.is_empty() && remote_ip.trusted_proxies.is_empty() {
            self.warn(
                "web.clientRemoteIP.header",
                "ignored: no trustedProxies are configured, so the header cannot be trusted",
            );
        }
        let client_ip_header = match http::HeaderName::from_bytes(remote_ip.header.as_bytes()) {
            _ if remote_ip.header.is_empty() || remote_ip.trusted_proxies.is_empty() => None,
            Ok(name) => Some(name),
            Err(_) => {
                self.error(
                    "web.clientRemoteIP.header",
                    format!("{:?} is not a valid header name", remote_ip.header),
                );
                None
            }
        };
        let client_ip = ClientIpSettings {
            header: client_ip_header,
            trusted_proxies: crate::http::client_ip::parse_trusted(&remote_ip.trusted_proxies),
        };
        let h = &web.headers;
        let headers = [
            ("Content-Security-Policy", &h.content_security_policy),
            ("X-Frame-Options", &h.x_frame_options),
            ("X-Content-Type-Options", &h.x_content_type_options),
            ("X-XSS-Protection", &h.x_xss_protection),
            ("Strict-Transport-Security", &h.strict_transport_security),
        ]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| (name.to_owned(), value.clone()))
        .collect();
        WebSettings {
            http: non_empty(&web.http),
            https: non_empty(&web.https),
            tls_cert: non_empty(&web.tls_cert).map(PathBuf::from),
            tls_key: non_empty(&web.tls_key).map(PathBuf::from),
            tls_min_version: non_empty(&web.tls_min_version),
            tls_max_version: non_empty(&web.tls_max_version),
            headers,
            allowed_origins: web.allowed_origins.clone(),
            allowed_headers: if web.allowed_headers.is_empty() {
                vec!["Authorization".to_owned()]
            } else {
                web.allowed_headers.clone()
            },
            client_ip,
            drain_timeout: if web.drain_timeout.text.is_empty() {
                DEFAULT_DRAIN_TIMEOUT
            } else {
                self.positive_duration(
                    "web.drainTimeout",
                    "shutdown drain timeout",
                    &web.drain_timeout,
                )
                .unwrap_or(DEFAULT_DRAIN_TIMEOUT)
            },
        }
    }

    fn frontend(&mut self, frontend: &schema::Frontend) -> FrontendSettings {
        let dir = non_empty(&frontend.dir)
            .or_else(|| self.env.get("DEX_FRONTEND_DIR").filter(|d| !d.is_empty()))
            .map(PathBuf::from);
        if let Some(dir) = dir.as_ref().filter(|dir| !dir.is_dir()) {
            self.error(
                "frontend.dir",
                format!("{} is not a directory", dir.display()),
            );
        }
        let theme = match frontend.theme.as_str() {
            "" | "coreos" | "tectonic" => "light".to_owned(),
            theme => theme.to_owned(),
        };
        FrontendSettings {
            dir,
            theme,
            issuer_display_name: non_empty(&frontend.issuer).unwrap_or_else(|| "oxidex".to_owned()),
            logo_url: non_empty(&frontend.logo_url).unwrap_or_else(|| "theme/logo.png".to_owned()),
            extra: frontend.extra.clone(),
        }
    }

    fn oauth2(
        &mut self,
        oauth2: &schema::OAuth2,
        connectors: &[schema::ConnectorConfig],
        password_db: bool,
    ) -> OAuth2Settings {
        let response_types = match oauth2.response_types.as_deref() {
            Some(list) if !list.is_empty() => list.to_vec(),
            _ => vec!["code".to_owned()],
        };
        for (i, response_type) in response_types.iter().enumerate() {
            if !RESPONSE_TYPES.contains(&response_type.as_str()) {
                self.error(
                    format!("oauth2.responseTypes[{i}]"),
                    format!(
                        "unsupported response_type {response_type:?} (allowed: {})",
                        RESPONSE_TYPES.join(", ")
                    ),
                );
            }
        }
        let returns_tokens = response_types.iter().any(|rt| {
            rt.split(' ')
                .any(|part| part == "token" || part == "id_token")
        });

        let password_connector = non_empty(&oauth2.password_connector);
        if let Some(id) = &password_connector {
            self.check_password_connector(id, connectors, password_db);
        }

        let configured = oauth2
            .grant_types
            .as_deref()
            .filter(|list| !list.is_empty());
        if let Some(list) = configured {
            for (i, grant) in list.iter().enumerate() {
                let path = format!("oauth2.grantTypes[{i}]");
                let grant = grant.as_str();
                if SUPPORTED_GRANT_TYPES.contains(&grant) {
                    if grant == "implicit" && !returns_tokens {
                        self.warn(path, "implicit stays off: no response type in oauth2.responseTypes returns tokens");
                    } else if grant == "password" && password_connector.is_none() {
                        self.warn(
                            path,
                            "password stays off: oauth2.passwordConnector is not set",
                        );
                    }
                } else {
                    self.warn(path, format!("unknown grant type {grant:?}; ignored"));
                }
            }
        }
        let allow: Vec<String> = match configured {
            Some(list) => list.to_vec(),
            None => {
                let mut defaults: Vec<String> = DEX_DEFAULT_GRANT_TYPES
                    .iter()
                    .map(|g| (*g).to_owned())
                    .collect();
                // Dex HEAD's feature flag: client_credentials is opt-in.
                if self
                    .env
                    .flag("DEX_CLIENT_CREDENTIAL_GRANT_ENABLED_BY_DEFAULT", false)
                {
                    defaults.push(CLIENT_CREDENTIALS.to_owned());
                }
                defaults
            }
        };
        let grant_types = sorted(allow.into_iter().filter(|grant| {
            SUPPORTED_GRANT_TYPES.contains(&grant.as_str())
                && (grant != "implicit" || returns_tokens)
                && (grant != "password" || password_connector.is_some())
        }));

        let pkce_methods = match oauth2.pkce.code_challenge_methods_supported.as_deref() {
            Some(list) if !list.is_empty() => list.to_vec(),
            _ => vec!["S256".to_owned(), "plain".to_owned()],
        };
        for (i, method) in pkce_methods.iter().enumerate() {
            if method != "S256" && method != "plain" {
                self.error(
                    format!("oauth2.pkce.codeChallengeMethodsSupported[{i}]"),
                    format!("unsupported PKCE challenge method {method:?} (allowed: S256, plain)"),
                );
            }
        }
        OAuth2Settings {
            grant_types,
            response_types: sorted(response_types),
            skip_approval_screen: oauth2.skip_approval_screen,
            always_show_login_screen: oauth2.always_show_login_screen,
            password_connector,
            pkce_enforce: oauth2.pkce.enforce,
            pkce_methods,
        }
    }

    fn check_password_connector(
        &mut self,
        id: &str,
        connectors: &[schema::ConnectorConfig],
        password_db: bool,
    ) {
        let path = "oauth2.passwordConnector";
        if id == "local" {
            if !password_db {
                self.error(
                    path,
                    "\"local\" is the password database, which needs enablePasswordDB: true",
                );
            }
            return;
        }
        match connectors.iter().find(|c| c.id == id) {
            None => self.error(path, format!("no connector with id {id:?}")),
            // (A type oxidex does not implement is reported at connectors[].type.)
            Some(c) if kinds::find(&c.kind).is_some_and(|kind| !kind.checks_passwords) => self.error(
                path,
                format!(
                    "connector {id:?} (type {:?}) cannot check passwords; use \"local\" (the password database) or a mockPassword connector",
                    c.kind
                ),
            ),
            Some(_) => {}
        }
    }

    fn duration(&mut self, path: &str, what: &str, value: &GoDuration) -> Option<Duration> {
        match value.parse() {
            Ok(duration) => duration,
            Err(e) => {
                self.error(
                    path,
                    format!("invalid config value {:?} for {what}: {e}", value.text),
                );
                None
            }
        }
    }

    fn positive_duration(
        &mut self,
        path: &str,
        what: &str,
        value: &GoDuration,
    ) -> Option<Duration> {
        let duration = self.duration(path, what, value)?;
        if duration.is_zero() {
            self.error(path, format!("{what} must be greater than zero"));
            return None;
        }
        Some(duration)
    }

    fn expiry(&mut self, expiry: &schema::Expiry) -> ExpirySettings {
        let refresh = &expiry.refresh_tokens;
        let p = "expiry.refreshTokens";
        let reuse_interval = self
            .duration(
                &join(p, "reuseInterval"),
                "refresh token reuse interval",
                &refresh.reuse_interval,
            )
            .unwrap_or_default();
        let valid_if_not_used_for = self
            .duration(
                &join(p, "validIfNotUsedFor"),
                "refresh token valid if not used for",
                &refresh.valid_if_not_used_for,
            )
            .filter(|d| !d.is_zero());
        let absolute_lifetime = self
            .duration(
                &join(p, "absoluteLifetime"),
                "refresh token absolute lifetime",
                &refresh.absolute_lifetime,
            )
            .filter(|d| !d.is_zero());
        ExpirySettings {
            id_tokens: self
                .positive_duration("expiry.idTokens", "id token expiry", &expiry.id_tokens)
                .unwrap_or(DAY),
            auth_requests: self
                .positive_duration(
                    "expiry.authRequests",
                    "auth request expiry",
                    &expiry.auth_requests,
                )
                .unwrap_or(DAY),
            device_requests: self
                .positive_duration(
                    "expiry.deviceRequests",
                    "device request expiry",
                    &expiry.device_requests,
                )
                .unwrap_or(Duration::from_secs(5 * 60)),
            refresh_tokens: RefreshTokenPolicy {
                disable_rotation: refresh.disable_rotation,
                reuse_interval,
                valid_if_not_used_for,
                absolute_lifetime,
            },
        }
    }

    fn signer(
        &mut self,
        signer: Option<&schema::SignerConfig>,
        signing_keys: &GoDuration,
    ) -> SignerSettings {
        const DEFAULT_ROTATION: Duration = Duration::from_secs(6 * 3600);
        let kind = signer.map(|s| s.kind.as_str()).unwrap_or_default();
        let deprecated = |this: &mut Self| {
            this.positive_duration("expiry.signingKeys", "signing key rotation", signing_keys)
        };
        match kind {
            "" => {
                if signer.is_some_and(|s| !s.config.is_null()) {
                    self.warn(
                        "signer.config",
                        "ignored: signer.type is not set (use type: local)",
                    );
                }
                if !signing_keys.is_unset() {
                    self.warn(
                        "expiry.signingKeys",
                        "deprecated: use signer.type: local with signer.config.keysRotationPeriod",
                    );
                }
                SignerSettings {
                    algorithm: SigningAlgorithm::RS256,
                    rotation_period: deprecated(self).unwrap_or(DEFAULT_ROTATION),
                }
            }
            "local" => {
                let mut config = signer.map(|s| s.config.clone()).unwrap_or_default();
                if self.expansion {
                    expand_value(&mut config, self.env);
                }
                let local = match config {
                    Value::Null => schema::LocalSignerConfig::default(),
                    Value::Object(map) => {
                        let map = Normalizer {
                            report: &mut self.report,
                            strict: self.strict,
                            yaml: self.yaml,
                        }
                        .object("signer.config", decode::LOCAL_SIGNER, map);
                        self.typed("signer.config", map).unwrap_or_default()
                    }
                    _ => {
                        self.error("signer.config", "expected an object");
                        schema::LocalSignerConfig::default()
                    }
                };
                let path = "signer.config.keysRotationPeriod";
                let rotation_period = if local.keys_rotation_period.is_unset() {
                    self.error(path, "must be specified for the local signer (e.g. \"6h\")");
                    None
                } else {
                    self.positive_duration(
                        path,
                        "signing key rotation",
                        &local.keys_rotation_period,
                    )
                };
                if !signing_keys.is_unset() {
                    self.warn(
                        "expiry.signingKeys",
                        "deprecated and ignored: signer.config.keysRotationPeriod takes precedence",
                    );
                }
                let algorithm = if local.algorithm.is_empty() {
                    SigningAlgorithm::RS256
                } else {
                    SigningAlgorithm::parse(&local.algorithm).unwrap_or_else(|| {
                        self.error(
                            "signer.config.algorithm",
                            format!(
                                "unsupported local signer algorithm {:?} (supported: RS256, ES256, EdDSA)",
                                local.algorithm
                            ),
                        );
                        SigningAlgorithm::RS256
                    })
                };
                SignerSettings {
                    algorithm,
                    rotation_period: rotation_period.unwrap_or(DEFAULT_ROTATION),
                }
            }
            other => {
                let message = if other == "vault" {
                    "the vault signer is not supported by oxidex (use type: local)".to_owned()
                } else {
                    format!("unknown signer type {other:?} (oxidex supports local)")
                };
                self.error("signer.type", message);
                SignerSettings {
                    algorithm: SigningAlgorithm::RS256,
                    rotation_period: DEFAULT_ROTATION,
                }
            }
        }
    }

    fn logger(&mut self, logger: &schema::Logger) -> LoggerSettings {
        let format = match logger.format.to_ascii_lowercase().as_str() {
            "" | "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => {
                self.error(
                    "logger.format",
                    format!(
                        "log format is not one of the supported values (json, text): {}",
                        logger.format
                    ),
                );
                LogFormat::Text
            }
        };
        let level = if logger.level.is_empty() {
            "info".to_owned()
        } else {
            log_level(&logger.level).unwrap_or_else(|| {
                self.error(
                    "logger.level",
                    format!(
                        "invalid log level {:?} (use debug, info, warn or error)",
                        logger.level
                    ),
                );
                "info".to_owned()
            })
        };
        LoggerSettings {
            level,
            format,
            exclude_fields: logger.exclude_fields.clone(),
        }
    }

    /// Every connector's entry and its `config`, decoded by its kind (see
    /// [`kinds`]), all problems reported here. Returns the connectors that decoded.
    fn connectors(
        &mut self,
        connectors: &[schema::ConnectorConfig],
        callback: Option<&str>,
    ) -> Vec<ConnectorSettings> {
        let mut out: Vec<ConnectorSettings> = Vec::with_capacity(connectors.len());
        for (i, c) in connectors.iter().enumerate() {
            let p = format!("connectors[{i}]");
            for (key, value) in [("id", &c.id), ("type", &c.kind), ("name", &c.name)] {
                if value.is_empty() {
                    self.error(
                        join(&p, key),
                        "ID, Type and Name fields are required for a connector",
                    );
                }
            }
            let kind = c.kind.as_str();
            let found = kinds::find(kind);
            if kind == "local" {
                self.error(
                    join(&p, "type"),
                    "\"local\" is the built-in password database; set enablePasswordDB: true instead",
                );
            } else if !kind.is_empty() && found.is_none() {
                self.error(join(&p, "type"), kinds::unknown_kind_message(kind));
            }
            if c.id == "local" {
                self.error(
                    join(&p, "id"),
                    "connector id \"local\" is reserved for the password database",
                );
            } else if let Some(k) = connectors[..i]
                .iter()
                .position(|other| !c.id.is_empty() && other.id == c.id)
            {
                self.error(
                    join(&p, "id"),
                    format!("duplicate connector id {:?} (also connectors[{k}])", c.id),
                );
            }
            for (j, grant) in c.grant_types.iter().enumerate() {
                if !CONNECTOR_GRANT_TYPES.contains(&grant.as_str()) {
                    self.error(
                        format!("{p}.grantTypes[{j}]"),
                        format!("unknown grant type {grant:?} for connector {:?}", c.id),
                    );
                }
            }
            let config_path = join(&p, "config");
            let config = self.secret_bearing_block(&config_path, &c.config);
            let Some(found) = found else {
                continue;
            };
            match found.decode(&config_path, &config, callback) {
                Ok((decoded, unknown)) => {
                    for key in unknown {
                        self.unknown_key(key);
                    }
                    out.push(ConnectorSettings {
                        kind: c.kind.clone(),
                        id: c.id.clone(),
                        name: c.name.clone(),
                        config,
                        grant_types: c.grant_types.clone(),
                        decoded,
                    });
                }
                Err(problems) => {
                    for problem in problems {
                        // Each starts with its key path, below `config_path`.
                        match problem.split_once(": ") {
                            Some((path, message)) if path.starts_with(&config_path) => {
                                self.error(path, message);
                            }
                            _ => self.error(config_path.as_str(), problem),
                        }
                    }
                }
            }
        }
        out
    }

    /// An unknown key inside a type-specific block: a warning, an error when strict.
    fn unknown_key(&mut self, path: String) {
        if self.strict {
            self.error(path, "unknown key");
        } else {
            self.warn(path, "unknown key");
        }
    }

    fn check_login_methods(&mut self, config: &Config) {
        if config.connectors.is_empty() && !config.enable_password_db {
            self.error(
                "connectors",
                "no connectors specified: add a connector or set enablePasswordDB: true",
            );
        }
        if config.enable_password_db && config.static_passwords.is_empty() {
            self.warn(
                "enablePasswordDB",
                "the password database is on but staticPasswords is empty, so nobody can log in with it",
            );
        }
    }

    /// Reads an env var that must hold a value.
    fn required_env(&mut self, path: &str, name: &str, consequence: &str) -> Option<String> {
        match self.env.get(name).filter(|v| !v.is_empty()) {
            Some(value) => Some(value),
            None => {
                self.error(
                    path,
                    format!("environment variable {name:?} is unset or empty{consequence}"),
                );
                None
            }
        }
    }

    fn read_file_form(&mut self, path: &str, file: &str) -> Option<String> {
        let file = if self.expansion {
            expand(file, self.env)
        } else {
            file.to_owned()
        };
        read_secret_file(&file)
            .map_err(|message| self.error(path, message))
            .ok()
    }

    /// At most one of several forms of the same value; returns the one set.
    fn one_form<'f>(&mut self, p: &str, forms: &[(&'f str, &str)]) -> Option<&'f str> {
        let set: Vec<&str> = forms
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, _)| *k)
            .collect();
        if let [first, second, ..] = set.as_slice() {
            self.error(
                join(p, second),
                format!(
                    "both {} and {} are set; use only one",
                    join(p, first),
                    join(p, second)
                ),
            );
        }
        set.first().copied()
    }

    fn clients(
        &mut self,
        clients: &[schema::StaticClient],
        connector_ids: &[String],
        password_db: bool,
    ) -> Vec<Client> {
        let mut out: Vec<(usize, Client)> = Vec::with_capacity(clients.len());
        for (i, c) in clients.iter().enumerate() {
            let p = format!("staticClients[{i}]");
            if c.name.is_empty() {
                self.error(join(&p, "name"), "Name field is required for a client");
            }
            let id = match (c.id.is_empty(), c.id_env.is_empty()) {
                (true, true) => {
                    self.error(join(&p, "id"), "ID or IDEnv field is required for a client");
                    String::new()
                }
                (false, false) => {
                    self.error(
                        join(&p, "idEnv"),
                        format!("ID and IDEnv fields are exclusive for client {:?}", c.id),
                    );
                    c.id.clone()
                }
                (false, true) => c.id.clone(),
                (true, false) => self
                    .required_env(&join(&p, "idEnv"), &c.id_env, "; a client needs an ID")
                    .unwrap_or_default(),
            };
            let form = self.one_form(
                &p,
                &[
                    ("secret", &c.secret),
                    ("secretEnv", &c.secret_env),
                    ("secretFile", &c.secret_file),
                ],
            );
            if let Some(store_path) = self.store_path.filter(|_| !c.secret.is_empty()) {
                let instead = format!("{p}.secretFile or secretEnv");
                self.error(join(&p, "secret"), nix_store_message(store_path, &instead));
            }
            let secret = match form {
                Some("secret") => c.secret.clone(),
                Some("secretEnv") => {
                    let value = self.env.get(&c.secret_env).unwrap_or_default();
                    if value.is_empty() && !c.public {
                        self.error(
                            join(&p, "secretEnv"),
                            format!(
                                "environment variable {:?} is unset or empty; Dex would silently give client {id:?} \
                                 an empty secret (and then accept any client_secret), oxidex refuses an empty secret \
                                 for a non-public client",
                                c.secret_env
                            ),
                        );
                    }
                    value
                }
                Some(_) => self
                    .read_file_form(&join(&p, "secretFile"), &c.secret_file)
                    .unwrap_or_default(),
                None => {
                    if !c.public {
                        self.error(
                            join(&p, "secret"),
                            format!(
                                "Secret or SecretEnv field is required for client {id:?} \
                                 (or secretFile; or set public: true)"
                            ),
                        );
                    }
                    String::new()
                }
            };
            for (j, uri) in c.redirect_uris.iter().enumerate() {
                let path = format!("{p}.redirectURIs[{j}]");
                // The device flow's internal target (`/device/callback`, or under
                // the issuer path as Dex HEAD sends it) is a path on oxidex itself.
                let device_callback = uri.starts_with('/') && uri.ends_with("/device/callback");
                if let Err(problem) = crate::oidc::redirect_uri::check_registered(uri) {
                    self.error(path, format!("{uri:?} {problem}"));
                } else if uri.starts_with('/') && !device_callback {
                    self.error(path, format!("{uri:?} is not an absolute URL"));
                }
            }
            if c.redirect_uris.is_empty() && !c.public {
                self.warn(
                    join(&p, "redirectURIs"),
                    format!("client {id:?} has no redirect URIs, so browser logins for it will be refused"),
                );
            }
            for (j, connector) in c.allowed_connectors.iter().enumerate() {
                let known =
                    connector_ids.contains(connector) || (password_db && connector == "local");
                if !known {
                    self.error(
                        format!("{p}.allowedConnectors[{j}]"),
                        format!("no connector with id {connector:?}"),
                    );
                }
            }
            let refresh_token_lifetime = match c.refresh_token_lifetime.as_str() {
                "" | "standalone" => RefreshTokenLifetime::Standalone,
                "session" => RefreshTokenLifetime::Session,
                other => {
                    self.error(
                        join(&p, "refreshTokenLifetime"),
                        format!(
                            "staticClients: client {id:?}: invalid refresh token lifetime {other:?}: want \"standalone\" or \"session\""
                        ),
                    );
                    RefreshTokenLifetime::Standalone
                }
            };
            for (j, uri) in c.post_logout_redirect_uris.iter().enumerate() {
                if let Err(problem) = crate::oidc::redirect_uri::check_registered(uri) {
                    self.error(
                        format!("{p}.postLogoutRedirectURIs[{j}]"),
                        format!("{uri:?} {problem}"),
                    );
                }
            }
            // Beyond Dex, which does not check it: logout tokens carry a session
            // id, so they go to an absolute http(s) URL without a fragment
            // (Back-Channel Logout 1.0 §2.2).
            if !c.backchannel_logout_uri.is_empty() {
                let ok = url::Url::parse(&c.backchannel_logout_uri).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.fragment().is_none()
                        && u.host().is_some()
                });
                if !ok {
                    self.error(
                        join(&p, "backchannelLogoutURI"),
                        format!(
                            "{:?} is not an absolute http or https URL without a fragment",
                            c.backchannel_logout_uri
                        ),
                    );
                }
            }
            if let Some((k, _)) = out
                .iter()
                .find(|(_, other)| !id.is_empty() && other.id == id)
            {
                let key = if c.id.is_empty() { "idEnv" } else { "id" };
                self.error(
                    join(&p, key),
                    format!("duplicate client id {id:?} (also staticClients[{k}])"),
                );
            }
            out.push((
                i,
                Client {
                    id,
                    secret,
                    redirect_uris: c.redirect_uris.clone(),
                    trusted_peers: c.trusted_peers.clone(),
                    public: c.public,
                    name: c.name.clone(),
                    logo_url: c.logo_url.clone(),
                    allowed_connectors: c.allowed_connectors.clone(),
                    require_pkce: c.require_pkce,
                    post_logout_redirect_uris: c.post_logout_redirect_uris.clone(),
                    backchannel_logout_uri: c.backchannel_logout_uri.clone(),
                    refresh_token_lifetime,
                    sso_shared_with: c.sso_shared_with.clone(),
                    client_credentials_groups: c.client_credentials_claims.groups.clone(),
                },
            ));
        }
        let ids: Vec<String> = out.iter().map(|(_, c)| c.id.clone()).collect();
        for (i, client) in &out {
            for (j, peer) in client.trusted_peers.iter().enumerate() {
                if !ids.contains(peer) {
                    self.warn(
                        format!("staticClients[{i}].trustedPeers[{j}]"),
                        format!("no static client with id {peer:?}"),
                    );
                }
            }
        }
        out.into_iter().map(|(_, c)| c).collect()
    }

    fn passwords(
        &mut self,
        passwords: &[schema::StaticPassword],
        password_db: bool,
    ) -> Vec<Password> {
        if !passwords.is_empty() && !password_db {
            self.error(
                "staticPasswords",
                "cannot specify static passwords without enabling password db (set enablePasswordDB: true)",
            );
        }
        let mut out: Vec<Password> = Vec::with_capacity(passwords.len());
        for (i, entry) in passwords.iter().enumerate() {
            let p = format!("staticPasswords[{i}]");
            let email = entry.email.to_lowercase();
            if email.is_empty() {
                self.error(join(&p, "email"), "required: the email is the login name");
            } else if let Some(k) = out.iter().position(|other| other.email == email) {
                self.error(
                    join(&p, "email"),
                    format!("duplicate email {email:?} (also staticPasswords[{k}])"),
                );
            }
            let form = self.one_form(
                &p,
                &[
                    ("hash", &entry.hash),
                    ("hashFromEnv", &entry.hash_from_env),
                    ("hashFile", &entry.hash_file),
                ],
            );
            if let Some(store_path) = self.store_path.filter(|_| !entry.hash.is_empty()) {
                let instead = format!("{p}.hashFile or hashFromEnv");
                self.error(join(&p, "hash"), nix_store_message(store_path, &instead));
            }
            let raw = match form {
                Some("hash") => Some(entry.hash.clone()),
                Some("hashFromEnv") => {
                    self.required_env(&join(&p, "hashFromEnv"), &entry.hash_from_env, "")
                }
                Some(_) => self.read_file_form(&join(&p, "hashFile"), &entry.hash_file),
                None => {
                    self.error(join(&p, "hash"), "no password hash provided");
                    None
                }
            };
            let hash = match (raw, form) {
                (Some(raw), Some(key)) => normalize_bcrypt(&raw)
                    .map_err(|message| self.error(join(&p, key), message))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            out.push(Password {
                email,
                hash,
                username: entry.username.clone(),
                name: if entry.name.is_empty() {
                    entry.username.clone()
                } else {
                    entry.name.clone()
                },
                preferred_username: entry.preferred_username.clone(),
                email_verified: entry.email_verified.unwrap_or(true),
                user_id: entry.user_id.clone(),
                groups: entry.groups.clone(),
            });
        }
        out
    }
}

/// Dex's slog level names (`debug`, `INFO`, `warn+2`, …, plus `trace`) as a
/// tracing filter directive.
fn log_level(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    if lower == "trace" {
        return Some("trace".to_owned());
    }
    let split = lower.find(['+', '-']).unwrap_or(lower.len());
    let (name, offset) = lower.split_at(split);
    let base: i32 = match name {
        "debug" => -4,
        "info" => 0,
        "warn" | "warning" => 4,
        "error" => 8,
        _ => return None,
    };
    let offset: i32 = if offset.is_empty() {
        0
    } else {
        offset.parse().ok()?
    };
    let level = match base + offset {
        n if n <= -4 => "debug",
        n if n <= 0 => "info",
        n if n <= 4 => "warn",
        _ => "error",
    };
    Some(level.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_map_to_tracing() {
        assert_eq!(log_level("debug").as_deref(), Some("debug"));
        assert_eq!(log_level("INFO").as_deref(), Some("info"));
        assert_eq!(log_level("Warn").as_deref(), Some("warn"));
        assert_eq!(log_level("error").as_deref(), Some("error"));
        assert_eq!(log_level("DEBUG+2").as_deref(), Some("info"));
        assert_eq!(log_level("info-4").as_deref(), Some("debug"));
        assert_eq!(log_level("trace").as_deref(), Some("trace"));
        assert_eq!(log_level("loud"), None);
        assert_eq!(log_level("info+x"), None);
    }

    #[test]
    fn cidrs() {
        assert!(is_cidr("10.0.0.0/8"));
        assert!(is_cidr("::1/128"));
        assert!(!is_cidr("10.0.0.1"));
        assert!(!is_cidr("10.0.0.0/33"));
        assert!(!is_cidr("nope/8"));
    }
}
