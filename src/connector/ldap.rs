//! The `ldap` connector: a password connector that checks the typed login and
//! password against an LDAP directory, as Dex's connector of the same name does.
//!
//! Login: bind as the service account (`bindDN`/`bindPW`, or anonymously when both
//! are empty), search `userSearch.baseDN` for exactly one entry whose
//! `userSearch.username` attribute equals the login (ANDed with `userSearch.filter`),
//! bind as that entry's DN with the typed password, then (with the `groups` scope)
//! search `groupSearch.baseDN` once per user matcher and value of its `userAttr`.
//! Refresh repeats the user search with the stored login and refuses the refresh
//! when the entry is gone or its DN changed; it does not bind as the user.
//!
//! Safety rules that hold whatever the config says:
//! * an empty password is "wrong credentials" without any traffic: an LDAP simple
//!   bind with a name and an empty password is an *unauthenticated* bind (RFC 4513
//!   §5.1.2), which many servers answer with success;
//! * every user-supplied value put into a filter is escaped ([`escape_filter_value`],
//!   RFC 4515 §3); no user-supplied value is ever put into a DN (the user's DN comes
//!   from the directory);
//! * connect, every operation and the whole login are bounded in time, and searches
//!   in result count (size limit sent to the server and enforced here);
//! * opening the connector contacts nothing, so an unreachable directory or a
//!   `rootCA` it does not match fails this connector's logins (500 "Login error",
//!   cause logged) and nothing else.
//!
//! Differences from Dex, on purpose:
//! * the login is escaped once, so names with `*()\`, NUL or non-ASCII characters can
//!   log in (Dex escapes twice, so such names never match; ASCII names are unaffected);
//! * attribute names are matched case-insensitively, as LDAP defines them (Dex
//!   compares the returned name case-sensitively);
//! * `idAttr`/`emailAttr` left empty are config errors at startup (Dex accepts them and
//!   fails every login), and `userSearch.filter`/`groupSearch.filter` must be
//!   parenthesised, valid filters (Dex fails every login otherwise);
//! * more than [`MAX_GROUP_RESULTS`] groups for one query, or [`MAX_GROUPS`] in total,
//!   fail the login instead of growing without bound;
//! * one connection per login (service bind, user search, user bind, then a service
//!   re-bind for the group queries) instead of one per operation.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use ldap3::{LdapConnAsync, LdapConnSettings, LdapError, SearchEntry, SearchOptions};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::{ConfigReader, DecodeConfig, Problems};
use super::upstream::MAX_CERTIFICATE_FILE;
use super::{ConnectorError, Identity, PasswordConnector, Scopes};
use crate::config::read_bounded;

pub const KIND: &str = "ldap";

/// TCP connect plus TLS/StartTLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// One LDAP operation (bind, or the wait for each search reply).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole login or refresh, whatever the directory does.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Entries one group query may return before the login fails.
pub const MAX_GROUP_RESULTS: usize = 1000;
/// Groups one user may collect (all matchers, all levels of nesting).
pub const MAX_GROUPS: usize = 1000;
/// Longer logins are not looked up (wrong credentials).
const MAX_USERNAME_BYTES: usize = 1024;
/// Longer passwords are not sent (wrong credentials).
const MAX_PASSWORD_BYTES: usize = 4096;

/// LDAP result codes (RFC 4511 §4.1.9).
const RC_SIZE_LIMIT_EXCEEDED: u32 = 4;
const RC_CONSTRAINT_VIOLATION: u32 = 19;
const RC_NO_SUCH_OBJECT: u32 = 32;
const RC_INVALID_CREDENTIALS: u32 = 49;

const KEYS: &[&str] = &[
    "host",
    "insecureNoSSL",
    "insecureSkipVerify",
    "startTLS",
    "rootCA",
    "rootCAData",
    "clientCert",
    "clientKey",
    "bindDN",
    "bindPW",
    "usernamePrompt",
    "userSearch",
    "groupSearch",
];
const USER_SEARCH_KEYS: &[&str] = &[
    "baseDN",
    "filter",
    "username",
    "scope",
    "idAttr",
    "emailAttr",
    "nameAttr",
    "preferredUsernameAttr",
    "emailSuffix",
];
const GROUP_SEARCH_KEYS: &[&str] = &[
    "baseDN",
    "filter",
    "scope",
    "userMatchers",
    "nameAttr",
    "userAttr",
    "groupAttr",
    "recursionGroupAttr",
];
const MATCHER_KEYS: &[&str] = &["userAttr", "groupAttr", "recursionGroupAttr"];

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `insecureNoSSL`: plain `ldap://`.
    Plain,
    /// `startTLS`: `ldap://`, then the StartTLS extended operation.
    StartTls,
    /// The default: `ldaps://`, TLS from the first byte.
    Ldaps,
}

/// `userSearch.scope` / `groupSearch.scope`: `sub` (the default) or `one`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scope {
    #[default]
    Sub,
    One,
}

impl Scope {
    fn ldap(self) -> ldap3::Scope {
        match self {
            Scope::Sub => ldap3::Scope::Subtree,
            Scope::One => ldap3::Scope::OneLevel,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserMatcher {
    pub user_attr: String,
    pub group_attr: String,
    /// Set: follow nested groups through this attribute (which holds member DNs).
    pub recursion_group_attr: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSearch {
    pub base_dn: String,
    pub filter: String,
    pub username: String,
    pub scope: Scope,
    pub id_attr: String,
    pub email_attr: String,
    pub name_attr: String,
    pub preferred_username_attr: String,
    pub email_suffix: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSearch {
    /// Empty disables group lookup.
    pub base_dn: String,
    pub filter: String,
    pub scope: Scope,
    pub user_matchers: Vec<UserMatcher>,
    pub name_attr: String,
}

#[derive(Clone)]
pub struct LdapConfig {
    /// `host:port`, the port defaulted as Dex does.
    pub host: String,
    /// The host part, the name the server certificate must carry.
    pub server_name: String,
    pub transport: Transport,
    pub insecure_skip_verify: bool,
    /// PEM of the only CAs trusted (`rootCAData` or `rootCA`); empty: the system's.
    pub root_ca_pem: Vec<u8>,
    /// PEM client certificate chain and key, when both `clientCert` and `clientKey` are set.
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
    pub bind_dn: String,
    pub bind_pw: String,
    pub username_prompt: String,
    pub user_search: UserSearch,
    pub group_search: GroupSearch,
}

impl std::fmt::Debug for LdapConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapConfig")
            .field("host", &self.host)
            .field("transport", &self.transport)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("bind_dn", &self.bind_dn)
            .field("user_search", &self.user_search)
            .field("group_search", &self.group_search)
            .finish_non_exhaustive()
    }
}

impl DecodeConfig for LdapConfig {
    const KEYS: &'static [&'static str] = KEYS;

    fn decode(reader: &ConfigReader, p: &mut Problems, _callback: Option<&str>) -> Self {
        let raw_host = reader.required(p, "host", " (the directory's host or host:port)");
        let insecure_no_ssl = p.take(reader.bool("insecureNoSSL"));
        let start_tls = p.take(reader.bool("startTLS"));
        let insecure_skip_verify = p.take(reader.bool("insecureSkipVerify"));
        // As Dex: insecureNoSSL wins over startTLS.
        let transport = if insecure_no_ssl {
            Transport::Plain
        } else if start_tls {
            Transport::StartTls
        } else {
            Transport::Ldaps
        };
        let (host, server_name) = with_default_port(&raw_host, insecure_no_ssl);

        let root_ca_data = p.take(reader.string("rootCAData"));
        let root_ca = p.take(reader.string("rootCA"));
        // As Dex: rootCAData (base64 of PEM) wins over the rootCA file.
        let root_ca_pem = if !root_ca_data.is_empty() {
            let key = reader.key_path("rootCAData");
            p.take(
                base64::engine::general_purpose::STANDARD
                    .decode(root_ca_data.trim())
                    .map_err(|e| format!("{key}: not base64 (of PEM certificates): {e}"))
                    .and_then(|pem| certificates(&key, &pem).map(|_| pem)),
            )
        } else if !root_ca.is_empty() {
            let key = reader.key_path("rootCA");
            p.take(
                read_bounded(&root_ca, MAX_CERTIFICATE_FILE)
                    .map_err(|e| format!("{key}: {e}"))
                    .and_then(|pem| certificates(&key, &pem).map(|_| pem)),
            )
        } else {
            Vec::new()
        };
        let client_cert_file = p.take(reader.string("clientCert"));
        let client_key_file = p.take(reader.string("clientKey"));
        let client_cert = match (client_cert_file.is_empty(), client_key_file.is_empty()) {
            (false, false) => {
                p.take(read_client_cert(reader, &client_cert_file, &client_key_file).map(Some))
            }
            (true, true) => None,
            _ => {
                p.push(format!(
                    "{}: clientCert and clientKey must be set together",
                    reader.key_path("clientCert")
                ));
                None
            }
        };

        let bind_dn = p.take(reader.string("bindDN"));
        let bind_pw = p.take(reader.string("bindPW"));
        if !bind_dn.is_empty() && bind_pw.is_empty() {
            // Dex fails every login here (the client refuses the empty password).
            p.push(format!(
                "{}: bindDN is set but bindPW is empty (or bindPWFile, or a $VAR reference); \
                 leave both empty for an anonymous bind",
                reader.key_path("bindPW")
            ));
        }
        let username_prompt = p.take(reader.string("usernamePrompt"));

        let us = p.take(reader.object("userSearch", USER_SEARCH_KEYS).map(Some));
        let user_search = match us {
            Some(us) => parse_user_search(&us, p),
            None => default_user_search(),
        };
        let gs = p.take(reader.object("groupSearch", GROUP_SEARCH_KEYS).map(Some));
        let group_search = match gs {
            Some(gs) => parse_group_search(&gs, p),
            None => GroupSearch {
                base_dn: String::new(),
                filter: String::new(),
                scope: Scope::Sub,
                user_matchers: Vec::new(),
                name_attr: String::new(),
            },
        };

        LdapConfig {
            host,
            server_name,
            transport,
            insecure_skip_verify,
            root_ca_pem,
            client_cert,
            bind_dn,
            bind_pw,
            username_prompt,
            user_search,
            group_search,
        }
    }
}

fn default_user_search() -> UserSearch {
    UserSearch {
        base_dn: String::new(),
        filter: String::new(),
        username: String::new(),
        scope: Scope::Sub,
        id_attr: String::new(),
        email_attr: String::new(),
        name_attr: String::new(),
        preferred_username_attr: String::new(),
        email_suffix: String::new(),
    }
}

fn parse_user_search(us: &ConfigReader, p: &mut Problems) -> UserSearch {
    let mut out = default_user_search();
    out.base_dn = us.required(p, "baseDN", " (where to look for users)");
    out.filter = p.take(us.string("filter"));
    p.take(check_filter(&us.key_path("filter"), &out.filter));
    out.username = us.required(
        p,
        "username",
        " (the attribute compared with the login, e.g. uid)",
    );
    let scope = p.take(us.string("scope"));
    out.scope = p.take(parse_scope(&us.key_path("scope"), &scope));
    out.id_attr = us.required(
        p,
        "idAttr",
        " (the attribute that identifies the user, e.g. uid or DN)",
    );
    out.email_attr = p.take(us.string("emailAttr"));
    out.email_suffix = p.take(us.string("emailSuffix"));
    if out.email_attr.is_empty() && out.email_suffix.is_empty() {
        p.push(format!(
            "{}: required unless emailSuffix is set (e.g. mail)",
            us.key_path("emailAttr")
        ));
    }
    out.name_attr = p.take(us.string("nameAttr"));
    if !out.email_suffix.is_empty() && out.name_attr.is_empty() {
        p.push(format!(
            "{}: emailSuffix builds the email from nameAttr, which is not set",
            us.key_path("emailSuffix")
        ));
    }
    out.preferred_username_attr = p.take(us.string("preferredUsernameAttr"));
    out
}

fn parse_group_search(gs: &ConfigReader, p: &mut Problems) -> GroupSearch {
    let base_dn = p.take(gs.string("baseDN"));
    let filter = p.take(gs.string("filter"));
    p.take(check_filter(&gs.key_path("filter"), &filter));
    let scope = p.take(gs.string("scope"));
    let scope = p.take(parse_scope(&gs.key_path("scope"), &scope));
    let name_attr = p.take(gs.string("nameAttr"));
    let mut user_matchers = Vec::new();
    for m in p.take(gs.objects("userMatchers", MATCHER_KEYS)) {
        user_matchers.push(UserMatcher {
            user_attr: p.take(m.string("userAttr")),
            group_attr: p.take(m.string("groupAttr")),
            recursion_group_attr: p.take(m.string("recursionGroupAttr")),
        });
    }
    let legacy = UserMatcher {
        user_attr: p.take(gs.string("userAttr")),
        group_attr: p.take(gs.string("groupAttr")),
        recursion_group_attr: p.take(gs.string("recursionGroupAttr")),
    };
    // As Dex: the list counts only when its first matcher names a userAttr;
    // otherwise the legacy single-matcher keys are used.
    let user_matchers = if user_matchers
        .first()
        .is_some_and(|m| !m.user_attr.is_empty())
    {
        user_matchers
    } else {
        if !legacy.user_attr.is_empty() || !legacy.group_attr.is_empty() {
            tracing::warn!(
                deprecated = true,
                "use \"groupSearch.userMatchers\" option instead of \"userAttr/groupAttr\" fields"
            );
        }
        if legacy.user_attr.is_empty() {
            Vec::new()
        } else {
            vec![legacy]
        }
    };
    if !base_dn.is_empty() {
        if name_attr.is_empty() {
            p.push(format!(
                "{}: required when groupSearch.baseDN is set (e.g. cn)",
                gs.key_path("nameAttr")
            ));
        }
        for (i, m) in user_matchers.iter().enumerate() {
            if m.user_attr.is_empty() || m.group_attr.is_empty() {
                p.push(format!(
                    "{}[{i}]: both userAttr and groupAttr are required",
                    gs.key_path("userMatchers")
                ));
            }
        }
    }
    GroupSearch {
        base_dn,
        filter,
        scope,
        user_matchers,
        name_attr,
    }
}

/// `sub` (default) or `one`, as Dex.
fn parse_scope(path: &str, value: &str) -> Result<Scope, String> {
    match value {
        "" | "sub" => Ok(Scope::Sub),
        "one" => Ok(Scope::One),
        other => Err(format!(
            "{path}: unknown value {other:?} (expected \"sub\" or \"one\")"
        )),
    }
}

/// A configured extra filter must be one parenthesised, parseable filter, since it
/// is concatenated into `(&<filter>(attr=value))`.
fn check_filter(path: &str, filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Ok(());
    }
    if !filter.starts_with('(') || ldap3::parse_filter(filter).is_err() {
        return Err(format!(
            "{path}: {filter:?} is not a valid LDAP filter (RFC 4515, in parentheses)"
        ));
    }
    Ok(())
}

/// Dex's port defaulting: 389 with `insecureNoSSL`, otherwise 636 — also for
/// StartTLS. Returns `host:port` and the bare host.
fn with_default_port(raw: &str, insecure_no_ssl: bool) -> (String, String) {
    let default_port = if insecure_no_ssl { 389 } else { 636 };
    if let Some(rest) = raw.strip_prefix('[') {
        // [v6]:port or [v6]
        if let Some((addr, tail)) = rest.split_once(']') {
            return match tail.strip_prefix(':') {
                Some(_) => (raw.to_owned(), addr.to_owned()),
                None => (format!("[{addr}]:{default_port}"), addr.to_owned()),
            };
        }
    }
    match raw.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => {
            (raw.to_owned(), host.to_owned())
        }
        _ if raw.contains(':') => (format!("[{raw}]:{default_port}"), raw.to_owned()),
        _ => (format!("{raw}:{default_port}"), raw.to_owned()),
    }
}

fn certificates(path: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{path}: not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path}: no certificates found"));
    }
    Ok(certs)
}

fn read_client_cert(
    reader: &ConfigReader,
    cert_file: &str,
    key_file: &str,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let cert_key = reader.key_path("clientCert");
    let key_key = reader.key_path("clientKey");
    let cert =
        read_bounded(cert_file, MAX_CERTIFICATE_FILE).map_err(|e| format!("{cert_key}: {e}"))?;
    certificates(&cert_key, &cert)?;
    let key =
        read_bounded(key_file, MAX_CERTIFICATE_FILE).map_err(|e| format!("{key_key}: {e}"))?;
    PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| format!("{key_key}: no PEM private key found: {e}"))?;
    Ok((cert, key))
}

/// RFC 4515 §3 escaping of an assertion value: `*`, `(`, `)`, `\`, NUL and every
/// byte ≥ 0x80 become `\` and two lower-case hex digits, so the value can only ever
/// be compared as a literal (no wildcard, no filter structure).
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'*' | b'(' | b')' | b'\\' | 0 | 0x80..=0xff => {
                out.push_str(&format!("\\{byte:02x}"));
            }
            _ => out.push(char::from(byte)),
        }
    }
    out
}

/// `(<attr>=<escaped value>)`, ANDed with `extra` when it is set.
fn equality_filter(extra: &str, attr: &str, value: &str) -> String {
    let clause = format!("({attr}={})", escape_filter_value(value));
    if extra.is_empty() {
        clause
    } else {
        format!("(&{extra}{clause})")
    }
}

/// What refresh needs, in Dex's `ConnectorData` shape so tokens issued by either
/// can be refreshed by the other: `{"username", "entry": {"DN", "Attributes"}}`.
#[derive(Debug, Serialize, Deserialize)]
struct RefreshData {
    username: String,
    entry: StoredEntry,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredEntry {
    #[serde(rename = "DN")]
    dn: String,
    #[serde(rename = "Attributes", default)]
    attributes: Vec<Value>,
}

pub struct LdapConnector {
    id: String,
    config: LdapConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for LdapConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapConnector")
            .field("id", &self.id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why a directory exchange did not produce an identity.
enum Failure {
    /// Wrong login or password: the form again, with 401.
    BadCredentials,
    Error(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Error(message)
    }
}

impl LdapConnector {
    pub fn new(id: &str, config: LdapConfig) -> Result<Self, ConnectorError> {
        let tls = match config.transport {
            Transport::Plain => None,
            Transport::StartTls | Transport::Ldaps => {
                Some(Arc::new(tls_config(&config).map_err(|message| {
                    ConnectorError::Config {
                        id: id.to_owned(),
                        kind: KIND.to_owned(),
                        message,
                    }
                })?))
            }
        };
        Ok(LdapConnector {
            id: id.to_owned(),
            config,
            tls,
        })
    }

    fn url(&self) -> String {
        match self.config.transport {
            Transport::Ldaps => format!("ldaps://{}", self.config.host),
            Transport::Plain | Transport::StartTls => format!("ldap://{}", self.config.host),
        }
    }

    /// A connection bound as the service account (or anonymously).
    async fn connect(&self) -> Result<ldap3::Ldap, String> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(CONNECT_TIMEOUT)
            .set_starttls(self.config.transport == Transport::StartTls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(Arc::clone(tls));
        }
        let url = self.url();
        let (conn, mut ldap) = tokio::time::timeout(
            CONNECT_TIMEOUT,
            LdapConnAsync::with_settings(settings, &url),
        )
        .await
        .map_err(|_| format!("ldap: connecting to {url} timed out"))?
        .map_err(|e| format!("ldap: failed to connect to {url}: {e}"))?;
        let id = self.id.clone();
        tokio::spawn(async move {
            if let Err(error) = conn.drive().await {
                tracing::debug!(connector = %id, %error, "ldap connection ended");
            }
        });
        self.service_bind(&mut ldap).await?;
        Ok(ldap)
    }

    async fn service_bind(&self, ldap: &mut ldap3::Ldap) -> Result<(), String> {
        let (dn, pw) = (&self.config.bind_dn, &self.config.bind_pw);
        let result = ldap
            .with_timeout(OPERATION_TIMEOUT)
            .simple_bind(dn, pw)
            .await
            .and_then(|r| r.success());
        result.map(|_| ()).map_err(|e| {
            if dn.is_empty() {
                format!("ldap: initial anonymous bind failed: {e}")
            } else {
                format!("ldap: initial bind for user {dn:?} failed: {e}")
            }
        })
    }

    /// Searches with a size limit; more than `limit` entries is `Ok(None)`.
    async fn search(
        &self,
        ldap: &mut ldap3::Ldap,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
        limit: usize,
    ) -> Result<Option<Vec<SearchEntry>>, LdapError> {
        tracing::debug!(connector = %self.id, base_dn = base, filter, "performing ldap search");
        let size_limit = i32::try_from(limit.saturating_add(1)).unwrap_or(i32::MAX);
        let mut stream = ldap
            .with_search_options(SearchOptions::new().sizelimit(size_limit))
            .with_timeout(OPERATION_TIMEOUT)
            .streaming_search(base, scope.ldap(), filter, attrs.to_vec())
            .await?;
        let mut entries = Vec::new();
        while let Some(entry) = stream.next().await? {
            if entry.is_ref() || entry.is_intermediate() {
                continue;
            }
            if entries.len() == limit {
                let _ = stream.finish().await;
                return Ok(None);
            }
            entries.push(SearchEntry::construct(entry));
        }
        let result = stream.finish().await;
        if result.rc == RC_SIZE_LIMIT_EXCEEDED {
            return Ok(None);
        }
        result.success()?;
        Ok(Some(entries))
    }

    fn user_attributes(&self) -> Vec<&str> {
        let us = &self.config.user_search;
        let mut attrs = vec![us.id_attr.as_str()];
        if !us.email_attr.is_empty() {
            attrs.push(&us.email_attr);
        }
        for m in &self.config.group_search.user_matchers {
            attrs.push(&m.user_attr);
        }
        for extra in [&us.name_attr, &us.preferred_username_attr] {
            if !extra.is_empty() {
                attrs.push(extra);
            }
        }
        attrs.retain(|a| !a.eq_ignore_ascii_case("dn"));
        attrs.dedup();
        attrs
    }

    /// The one entry for `username`; `Ok(None)` when there is none.
    async fn find_user(
        &self,
        ldap: &mut ldap3::Ldap,
        username: &str,
    ) -> Result<Option<SearchEntry>, String> {
        let us = &self.config.user_search;
        let filter = equality_filter(&us.filter, &us.username, username);
        let found = self
            .search(
                ldap,
                &us.base_dn,
                us.scope,
                &filter,
                &self.user_attributes(),
                1,
            )
            .await
            .map_err(|e| format!("ldap: search with filter {filter:?} failed: {e}"))?;
        match found {
            None => Err(format!(
                "ldap: filter returned multiple results: {filter:?}"
            )),
            Some(mut entries) => {
                if entries.is_empty() {
                    tracing::info!(connector = %self.id, filter, "no results returned for filter");
                }
                Ok(entries.pop())
            }
        }
    }

    fn identity(&self, entry: &SearchEntry) -> Result<Identity, String> {
        let us = &self.config.user_search;
        let mut missing = Vec::new();
        let mut required = |name: &str| -> String {
            match first_value(entry, name) {
                Some(value) if !value.is_empty() => value,
                _ => {
                    missing.push(format!("{name:?}"));
                    String::new()
                }
            }
        };
        let user_id = required(&us.id_attr);
        let username = if us.name_attr.is_empty() {
            String::new()
        } else {
            required(&us.name_attr)
        };
        let preferred_username = if us.preferred_username_attr.is_empty() {
            String::new()
        } else {
            required(&us.preferred_username_attr)
        };
        let email = if us.email_suffix.is_empty() {
            required(&us.email_attr)
        } else {
            format!("{username}@{}", us.email_suffix)
        };
        if !missing.is_empty() {
            return Err(format!(
                "ldap: entry {:?} missing following required attribute(s): [{}]",
                entry.dn,
                missing.join(" ")
            ));
        }
        Ok(Identity {
            user_id,
            username,
            preferred_username,
            email,
            email_verified: true,
            groups: Vec::new(),
            connector_data: None,
        })
    }

    /// The user's groups, as Dex: per matcher and value of its `userAttr`, the
    /// `nameAttr` of every group whose `groupAttr` holds that value (nested groups
    /// followed breadth-first when the matcher has `recursionGroupAttr`).
    async fn groups(
        &self,
        ldap: &mut ldap3::Ldap,
        user: &SearchEntry,
    ) -> Result<Vec<String>, String> {
        let gs = &self.config.group_search;
        if gs.base_dn.is_empty() {
            return Ok(Vec::new());
        }
        let mut groups: Vec<String> = Vec::new();
        for matcher in &gs.user_matchers {
            for value in values(user, &matcher.user_attr) {
                let filter = equality_filter(&gs.filter, &matcher.group_attr, &value);
                let mut level = self.group_query(ldap, &filter).await?;
                if matcher.recursion_group_attr.is_empty() {
                    for group in &level {
                        groups.push(self.group_name(group)?);
                        if groups.len() > MAX_GROUPS {
                            return Err(too_many_groups());
                        }
                    }
                    continue;
                }
                // Breadth-first; a name already collected is not expanded again,
                // which also ends cycles.
                while !level.is_empty() {
                    let mut next = Vec::new();
                    for group in &level {
                        let name = self.group_name(group)?;
                        if groups.contains(&name) {
                            continue;
                        }
                        groups.push(name);
                        if groups.len() > MAX_GROUPS {
                            return Err(too_many_groups());
                        }
                        let filter =
                            equality_filter(&gs.filter, &matcher.recursion_group_attr, &group.dn);
                        next.extend(self.group_query(ldap, &filter).await?);
                    }
                    level = next;
                }
            }
        }
        Ok(groups)
    }

    async fn group_query(
        &self,
        ldap: &mut ldap3::Ldap,
        filter: &str,
    ) -> Result<Vec<SearchEntry>, String> {
        let gs = &self.config.group_search;
        match self
            .search(
                ldap,
                &gs.base_dn,
                gs.scope,
                filter,
                &[gs.name_attr.as_str()],
                MAX_GROUP_RESULTS,
            )
            .await
        {
            Ok(Some(entries)) => Ok(entries),
            Ok(None) => Err(format!(
                "ldap: group search {filter:?} returned more than {MAX_GROUP_RESULTS} groups"
            )),
            Err(LdapError::LdapResult { result }) if result.rc == RC_NO_SUCH_OBJECT => {
                tracing::info!(connector = %self.id, filter, "LDAP search returned no groups");
                Ok(Vec::new())
            }
            Err(e) => Err(format!("ldap: search failed: {e}")),
        }
    }

    fn group_name(&self, group: &SearchEntry) -> Result<String, String> {
        let name_attr = &self.config.group_search.name_attr;
        first_value(group, name_attr).ok_or_else(|| {
            format!(
                "ldap: group entity {:?} missing required attribute {name_attr:?}",
                group.dn
            )
        })
    }

    async fn login_inner(
        &self,
        scopes: &Scopes,
        username: &str,
        password: &str,
    ) -> Result<Identity, Failure> {
        let mut ldap = self.connect().await?;
        let Some(user) = self.find_user(&mut ldap, username).await? else {
            return Err(Failure::BadCredentials);
        };
        let bound = ldap
            .with_timeout(OPERATION_TIMEOUT)
            .simple_bind(&user.dn, password)
            .await
            .and_then(|r| r.success());
        match bound {
            Ok(_) => {}
            Err(LdapError::LdapResult { result })
                if matches!(result.rc, RC_INVALID_CREDENTIALS | RC_CONSTRAINT_VIOLATION) =>
            {
                tracing::info!(connector = %self.id, user_dn = %user.dn, rc = result.rc,
                    "invalid password for user");
                let _ = ldap.unbind().await;
                return Err(Failure::BadCredentials);
            }
            Err(e) => {
                return Err(Failure::Error(format!(
                    "ldap: failed to bind as dn {:?}: {e}",
                    user.dn
                )));
            }
        }
        let mut identity = self.identity(&user)?;
        if scopes.groups && !self.config.group_search.base_dn.is_empty() {
            // Group queries run with the service account's rights, not the user's.
            self.service_bind(&mut ldap).await?;
            identity.groups = self
                .groups(&mut ldap, &user)
                .await
                .map_err(|e| format!("ldap: failed to query groups: {e}"))?;
        }
        let _ = ldap.unbind().await;
        if scopes.offline_access {
            identity.connector_data = Some(refresh_data(username, &user.dn)?);
        }
        Ok(identity)
    }

    async fn refresh_inner(
        &self,
        scopes: &Scopes,
        identity: Identity,
    ) -> Result<Identity, ConnectorError> {
        let data: RefreshData = identity
            .connector_data
            .as_deref()
            .ok_or_else(|| {
                ConnectorError::Refresh("ldap: no connector data to refresh with".into())
            })
            .and_then(|raw| {
                serde_json::from_slice(raw).map_err(|e| {
                    ConnectorError::Refresh(format!("ldap: failed to unmarshal internal data: {e}"))
                })
            })?;
        let mut ldap = self.connect().await.map_err(ConnectorError::Upstream)?;
        let user = self
            .find_user(&mut ldap, &data.username)
            .await
            .map_err(ConnectorError::Upstream)?
            .ok_or_else(|| {
                ConnectorError::Refresh(format!("ldap: user not found {:?}", data.username))
            })?;
        if user.dn != data.entry.dn {
            return Err(ConnectorError::Refresh(format!(
                "ldap: refresh for username {:?} expected DN {:?} got {:?}",
                data.username, data.entry.dn, user.dn
            )));
        }
        let mut fresh = self.identity(&user).map_err(ConnectorError::Refresh)?;
        if scopes.groups {
            fresh.groups = self.groups(&mut ldap, &user).await.map_err(|e| {
                ConnectorError::Upstream(format!("ldap: failed to query groups: {e}"))
            })?;
        }
        let _ = ldap.unbind().await;
        fresh.connector_data = identity.connector_data;
        Ok(fresh)
    }
}

fn too_many_groups() -> String {
    format!("ldap: the user is in more than {MAX_GROUPS} groups")
}

fn refresh_data(username: &str, dn: &str) -> Result<Vec<u8>, String> {
    serde_json::to_vec(&RefreshData {
        username: username.to_owned(),
        entry: StoredEntry {
            dn: dn.to_owned(),
            attributes: Vec::new(),
        },
    })
    .map_err(|e| format!("ldap: marshal entry: {e}"))
}

/// An attribute's text values, its name matched case-insensitively; `DN` (any case)
/// is the entry's DN unless the entry has a real attribute of that name.
fn values(entry: &SearchEntry, name: &str) -> Vec<String> {
    if let Some(found) = entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
    {
        return found;
    }
    if name.eq_ignore_ascii_case("dn") {
        return vec![entry.dn.clone()];
    }
    Vec::new()
}

fn first_value(entry: &SearchEntry, name: &str) -> Option<String> {
    values(entry, name).into_iter().next()
}

#[async_trait]
impl PasswordConnector for LdapConnector {
    fn prompt(&self) -> &str {
        &self.config.username_prompt
    }

    async fn login(
        &self,
        scopes: &Scopes,
        username: &str,
        password: &str,
    ) -> Result<Option<Identity>, ConnectorError> {
        // An empty password would make the user bind an unauthenticated bind,
        // which many servers answer with success.
        if password.is_empty()
            || username.is_empty()
            || password.len() > MAX_PASSWORD_BYTES
            || username.len() > MAX_USERNAME_BYTES
        {
            return Ok(None);
        }
        match tokio::time::timeout(LOGIN_TIMEOUT, self.login_inner(scopes, username, password))
            .await
        {
            Err(_) => Err(ConnectorError::Upstream(format!(
                "ldap: no answer from {} within {} s",
                self.config.host,
                LOGIN_TIMEOUT.as_secs()
            ))),
            Ok(Ok(identity)) => Ok(Some(identity)),
            Ok(Err(Failure::BadCredentials)) => Ok(None),
            Ok(Err(Failure::Error(message))) => Err(ConnectorError::Internal(message)),
        }
    }

    fn supports_refresh(&self) -> bool {
        true
    }

    async fn refresh(
        &self,
        scopes: &Scopes,
        identity: Identity,
    ) -> Result<Identity, ConnectorError> {
        tokio::time::timeout(LOGIN_TIMEOUT, self.refresh_inner(scopes, identity))
            .await
            .map_err(|_| {
                ConnectorError::Upstream(format!(
                    "ldap: no answer from {} within {} s",
                    self.config.host,
                    LOGIN_TIMEOUT.as_secs()
                ))
            })?
    }
}

/// The TLS client config: the configured CAs only (or the system's), the client
/// certificate if any, and no verification at all with `insecureSkipVerify`.
fn tls_config(config: &LdapConfig) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let builder = if config.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::AnyServerCert(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if config.root_ca_pem.is_empty() {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::warn!(%error, "reading the system's CA certificates");
            }
            roots.add_parsable_certificates(native.certs);
        } else {
            for cert in certificates("rootCA", &config.root_ca_pem)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("rootCA: unusable certificate: {e}"))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    match &config.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = certificates("clientCert", cert)?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| format!("clientKey: no PEM private key found: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("clientCert/clientKey: load client cert failed: {e}"))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    const PATH: &str = "connectors[0].config";

    fn minimal() -> Value {
        json!({
            "host": "ldap.example.com",
            "userSearch": {"baseDN": "ou=people,dc=example,dc=org", "username": "uid",
                           "idAttr": "uid", "emailAttr": "mail", "nameAttr": "cn"},
        })
    }

    fn parse(value: Value) -> Result<LdapConfig, String> {
        LdapConfig::parse(PATH, &value, "")
            .map(|(c, _)| c)
            .map_err(|e| e.join("\n"))
    }

    fn patched(patch: impl FnOnce(&mut Value)) -> Value {
        let mut v = minimal();
        patch(&mut v);
        v
    }

    #[test]
    fn filter_values_are_escaped_per_rfc4515() {
        assert_eq!(escape_filter_value("jane"), "jane");
        assert_eq!(escape_filter_value("*"), "\\2a");
        assert_eq!(escape_filter_value("a*)(uid=*"), "a\\2a\\29\\28uid=\\2a");
        assert_eq!(escape_filter_value("x\\y"), "x\\5cy");
        assert_eq!(escape_filter_value("nul\0"), "nul\\00");
        assert_eq!(escape_filter_value("jöhn"), "j\\c3\\b6hn");
        assert_eq!(escape_filter_value("日"), "\\e6\\97\\a5");
    }

    #[test]
    fn escaped_values_parse_back_to_the_literal_bytes() {
        // Whatever the login, the filter stays one equality match on the raw bytes.
        for login in [
            "*",
            "a*",
            "(uid=*)",
            ")(|(uid=*)",
            "x\\",
            "\0",
            "jöhn",
            "*)(objectClass=*",
        ] {
            let filter = equality_filter("(objectClass=person)", "uid", login);
            ldap3::parse_filter(&filter).unwrap_or_else(|e| panic!("{filter}: {e:?}"));
            assert!(
                filter.starts_with("(&(objectClass=person)(uid="),
                "{filter}"
            );
            assert_eq!(
                ldap3::ldap_unescape(&filter[27..filter.len() - 2])
                    .unwrap()
                    .as_bytes(),
                login.as_bytes()
            );
        }
        assert_eq!(equality_filter("", "uid", "jane"), "(uid=jane)");
    }

    #[test]
    fn required_keys_and_scopes_name_their_paths() {
        let e = parse(json!({})).unwrap_err();
        for key in [
            "host",
            "userSearch.baseDN",
            "userSearch.username",
            "userSearch.idAttr",
            "userSearch.emailAttr",
        ] {
            assert!(e.contains(&format!("{PATH}.{key}: required")), "{key}: {e}");
        }
        let e = parse(patched(|v| {
            v["userSearch"]["scope"] = json!("base");
            v["groupSearch"] = json!({"scope": "subtree"});
        }))
        .unwrap_err();
        assert!(
            e.contains(&format!("{PATH}.userSearch.scope: unknown value \"base\"")),
            "{e}"
        );
        assert!(
            e.contains(&format!(
                "{PATH}.groupSearch.scope: unknown value \"subtree\""
            )),
            "{e}"
        );
        let c = parse(patched(|v| v["userSearch"]["scope"] = json!("one"))).unwrap();
        assert_eq!(c.user_search.scope, Scope::One);
    }

    #[test]
    fn keys_match_case_insensitively_and_unknown_keys_are_warnings() {
        let (c, unknown) = LdapConfig::parse(
            PATH,
            &patched(|v| {
                v["BindDn"] = json!("cn=admin,dc=example,dc=org");
                v["bindpw"] = json!("secret");
                v["frobnicate"] = json!(true);
            }),
            "",
        )
        .unwrap();
        assert_eq!(c.bind_dn, "cn=admin,dc=example,dc=org");
        assert_eq!(c.bind_pw, "secret");
        assert_eq!(unknown, [format!("{PATH}.frobnicate")]);
    }

    #[test]
    fn ports_default_as_dex() {
        let host = |patch: Value| {
            let c = parse(patched(|v| {
                for (k, val) in patch.as_object().unwrap() {
                    v[k] = val.clone();
                }
            }))
            .unwrap();
            (c.host, c.server_name, c.transport)
        };
        assert_eq!(
            host(json!({})),
            (
                "ldap.example.com:636".into(),
                "ldap.example.com".into(),
                Transport::Ldaps
            )
        );
        assert_eq!(
            host(json!({"insecureNoSSL": true})).0,
            "ldap.example.com:389"
        );
        // Dex's code (not its docs): StartTLS without a port dials 636.
        assert_eq!(
            host(json!({"startTLS": true})),
            (
                "ldap.example.com:636".into(),
                "ldap.example.com".into(),
                Transport::StartTls
            )
        );
        assert_eq!(
            host(json!({"host": "ldap.example.com:10389", "startTLS": true})).0,
            "ldap.example.com:10389"
        );
        // insecureNoSSL wins over startTLS.
        assert_eq!(
            host(json!({"insecureNoSSL": true, "startTLS": true})).2,
            Transport::Plain
        );
        assert_eq!(host(json!({"host": "::1"})).0, "[::1]:636");
        assert_eq!(
            host(json!({"host": "[::1]:3389"})),
            ("[::1]:3389".into(), "::1".into(), Transport::Ldaps)
        );
    }

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        rcgen::CertificateParams::new(vec!["ldap.example.com".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap()
            .pem()
    }

    #[test]
    fn root_ca_data_wins_and_bad_cas_are_config_errors() {
        let pem = ca_pem();
        let data = base64::engine::general_purpose::STANDARD.encode(&pem);
        let c = parse(patched(|v| {
            v["rootCAData"] = json!(data);
            v["rootCA"] = json!("/nonexistent/ca.pem");
        }))
        .unwrap();
        assert_eq!(c.root_ca_pem, pem.as_bytes());
        LdapConnector::new("corp", c).unwrap();

        let e = parse(patched(|v| v["rootCA"] = json!("/nonexistent/ca.pem"))).unwrap_err();
        assert!(
            e.contains(&format!("{PATH}.rootCA: cannot read file")),
            "{e}"
        );
        let e = parse(patched(|v| v["rootCAData"] = json!("not base64!"))).unwrap_err();
        assert!(e.contains(&format!("{PATH}.rootCAData: not base64")), "{e}");
        let no_cert = base64::engine::general_purpose::STANDARD.encode("hello");
        let e = parse(patched(|v| v["rootCAData"] = json!(no_cert))).unwrap_err();
        assert!(
            e.contains(&format!("{PATH}.rootCAData: no certificates found")),
            "{e}"
        );
    }

    #[test]
    fn client_cert_needs_both_halves_and_bind_dn_needs_a_password() {
        let e = parse(patched(|v| v["clientCert"] = json!("/etc/cert.pem"))).unwrap_err();
        assert!(
            e.contains(&format!(
                "{PATH}.clientCert: clientCert and clientKey must be set together"
            )),
            "{e}"
        );
        let e = parse(patched(|v| {
            v["bindDN"] = json!("cn=admin,dc=example,dc=org")
        }))
        .unwrap_err();
        assert!(
            e.contains(&format!("{PATH}.bindPW: bindDN is set but bindPW is empty")),
            "{e}"
        );
        // Both empty: anonymous bind.
        let c = parse(minimal()).unwrap();
        assert!(c.bind_dn.is_empty() && c.bind_pw.is_empty());
    }

    #[test]
    fn filters_must_be_valid_and_email_suffix_needs_name_attr() {
        let e = parse(patched(|v| {
            v["userSearch"]["filter"] = json!("objectClass=person")
        }))
        .unwrap_err();
        assert!(
            e.contains(&format!(
                "{PATH}.userSearch.filter: \"objectClass=person\" is not a valid LDAP filter"
            )),
            "{e}"
        );
        let e = parse(patched(|v| v["groupSearch"] = json!({"filter": "(&(a=b)"}))).unwrap_err();
        assert!(e.contains(&format!("{PATH}.groupSearch.filter:")), "{e}");
        parse(patched(|v| {
            v["userSearch"]["filter"] = json!("(ou:dn:=Seattle)")
        }))
        .unwrap();
        let e = parse(patched(|v| {
            v["userSearch"]["emailSuffix"] = json!("example.org");
            v["userSearch"]["nameAttr"] = json!("");
        }))
        .unwrap_err();
        assert!(
            e.contains(&format!("{PATH}.userSearch.emailSuffix:")),
            "{e}"
        );
    }

    #[test]
    fn user_matchers_normalise_as_dex() {
        let c = parse(patched(|v| {
            v["groupSearch"] = json!({"baseDN": "ou=groups,dc=example,dc=org", "nameAttr": "cn",
                "userAttr": "DN", "groupAttr": "member"});
        }))
        .unwrap();
        assert_eq!(
            c.group_search.user_matchers,
            [UserMatcher {
                user_attr: "DN".into(),
                group_attr: "member".into(),
                recursion_group_attr: String::new()
            }]
        );
        let c = parse(patched(|v| {
            v["groupSearch"] = json!({"baseDN": "ou=groups,dc=example,dc=org", "nameAttr": "cn",
                "userMatchers": [{"userAttr": "DN", "groupAttr": "member"}, {"userAttr": "uid", "groupAttr": "memberUid"}],
                "userAttr": "ignored", "groupAttr": "ignored"});
        }))
        .unwrap();
        assert_eq!(c.group_search.user_matchers.len(), 2);
        assert_eq!(c.group_search.user_matchers[1].group_attr, "memberUid");
        let e = parse(patched(|v| {
            v["groupSearch"] = json!({"baseDN": "ou=groups,dc=example,dc=org",
                "userMatchers": [{"userAttr": "DN"}]});
        }))
        .unwrap_err();
        assert!(
            e.contains(&format!("{PATH}.groupSearch.nameAttr: required")),
            "{e}"
        );
        assert!(
            e.contains(&format!(
                "{PATH}.groupSearch.userMatchers[0]: both userAttr and groupAttr"
            )),
            "{e}"
        );
    }

    fn entry(dn: &str, attrs: &[(&str, &[&str])]) -> SearchEntry {
        SearchEntry {
            dn: dn.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.iter().map(|s| (*s).to_owned()).collect()))
                .collect(),
            bin_attrs: Default::default(),
        }
    }

    #[test]
    fn identity_maps_attributes_as_dex() {
        let c = LdapConnector::new(
            "corp",
            parse(patched(|v| {
                v["userSearch"]["idAttr"] = json!("DN");
                v["userSearch"]["preferredUsernameAttr"] = json!("uid");
            }))
            .unwrap(),
        )
        .unwrap();
        let dn = "uid=jane,ou=people,dc=example,dc=org";
        let id = c
            .identity(&entry(
                dn,
                &[
                    ("CN", &["Jane", "J"]),
                    ("mail", &["jane@example.org"]),
                    ("uid", &["jane"]),
                ],
            ))
            .unwrap();
        assert_eq!(id.user_id, dn);
        assert_eq!(id.username, "Jane");
        assert_eq!(id.preferred_username, "jane");
        assert_eq!(id.email, "jane@example.org");
        assert!(id.email_verified);
        let e = c.identity(&entry(dn, &[("cn", &["Jane"])])).unwrap_err();
        assert_eq!(
            e,
            format!(
                "ldap: entry {dn:?} missing following required attribute(s): [\"uid\" \"mail\"]"
            )
        );
        // emailSuffix builds the email from nameAttr, ignoring mail.
        let c = LdapConnector::new(
            "corp",
            parse(patched(|v| {
                v["userSearch"]["emailSuffix"] = json!("test.example.com")
            }))
            .unwrap(),
        )
        .unwrap();
        let id = c
            .identity(&entry(
                dn,
                &[("uid", &["jane"]), ("cn", &["jane"]), ("mail", &["x@y"])],
            ))
            .unwrap();
        assert_eq!(id.email, "jane@test.example.com");
    }

    /// A listener that counts the connections it gets.
    async fn counting_listener() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(socket);
            }
        });
        (addr, count)
    }

    #[tokio::test]
    async fn empty_password_never_reaches_the_directory() {
        let (addr, count) = counting_listener().await;
        let c = LdapConnector::new(
            "corp",
            parse(patched(|v| {
                v["host"] = json!(addr);
                v["insecureNoSSL"] = json!(true);
            }))
            .unwrap(),
        )
        .unwrap();
        let scopes = Scopes {
            offline_access: true,
            groups: true,
        };
        assert!(c.login(&scopes, "jane", "").await.unwrap().is_none());
        assert!(c.login(&scopes, "", "secret").await.unwrap().is_none());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            count.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "no connection for an empty password"
        );
        // A non-empty password does go to the directory (which hangs up: an error).
        assert!(c.login(&scopes, "jane", "x").await.is_err());
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_unreachable_directory_fails_the_login_only() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let c = LdapConnector::new(
            "corp",
            parse(patched(|v| {
                v["host"] = json!(format!("127.0.0.1:{port}"));
                v["startTLS"] = json!(true);
            }))
            .unwrap(),
        )
        .unwrap();
        let e = c
            .login(&Scopes::default(), "jane", "secret")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("failed to connect"), "{e}");
    }

    #[tokio::test]
    async fn a_silent_directory_times_out() {
        // Accepts and never answers: the login ends with an error after the bound.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let c = LdapConnector::new(
            "corp",
            parse(patched(|v| {
                v["host"] = json!(addr);
                v["insecureNoSSL"] = json!(true);
            }))
            .unwrap(),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let e = c
            .login(&Scopes::default(), "jane", "secret")
            .await
            .unwrap_err();
        assert!(started.elapsed() < LOGIN_TIMEOUT, "{:?}", started.elapsed());
        assert!(
            e.to_string().contains("initial anonymous bind failed"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn refresh_without_connector_data_is_refused() {
        let c = LdapConnector::new("corp", parse(minimal()).unwrap()).unwrap();
        let e = c
            .refresh(&Scopes::default(), Identity::default())
            .await
            .unwrap_err();
        assert!(matches!(e, ConnectorError::Refresh(_)), "{e}");
        let stored = Identity {
            connector_data: Some(b"{}".to_vec()),
            ..Identity::default()
        };
        let e = c.refresh(&Scopes::default(), stored).await.unwrap_err();
        assert!(
            e.to_string().contains("failed to unmarshal internal data"),
            "{e}"
        );
    }

    #[test]
    fn refresh_data_has_dex_shape() {
        let raw = refresh_data("jöhn", "uid=j,dc=x").unwrap();
        let v: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(
            v,
            json!({"username": "jöhn", "entry": {"DN": "uid=j,dc=x", "Attributes": []}})
        );
        // Dex-written data (attributes included) reads back.
        let dex = br#"{"username":"jane","entry":{"DN":"cn=jane,dc=example,dc=org","Attributes":[{"Name":"cn","Values":["jane"],"ByteValues":["amFuZQ=="]}]}}"#;
        let data: RefreshData = serde_json::from_slice(dex).unwrap();
        assert_eq!(
            (data.username.as_str(), data.entry.dn.as_str()),
            ("jane", "cn=jane,dc=example,dc=org")
        );
    }
}
