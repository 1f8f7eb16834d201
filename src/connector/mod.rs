//! Upstream identity sources ("connectors"), as in Dex.
//!
//! A connector either sends the browser somewhere and gets it back on `/callback`
//! ([`CallbackConnector`]), or checks a login and password typed into our own form
//! ([`PasswordConnector`]). [`build_connectors`] opens every connector named in the
//! settings, plus the local password DB (`local`) when `enablePasswordDB` is on.
//!
//! The HTTP layer owns the flow; connectors only answer "who is this user".

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::Clock;
use crate::config::settings::{ConnectorSettings, Password, Settings};
use crate::storage::entities::Claims;
use crate::throttle::Gate;

pub(crate) mod body;
pub mod config;
pub mod gitea;
pub(crate) mod github;
pub mod kinds;
pub(crate) mod ldap;
pub(crate) mod local;
pub(crate) mod mock;
pub mod oidc;
pub mod upstream;

/// The connector id, name and type Dex gives the built-in password DB.
pub const LOCAL_CONNECTOR_ID: &str = "local";
pub const LOCAL_CONNECTOR_NAME: &str = "Email";
pub const LOCAL_CONNECTOR_KIND: &str = "local";

/// Who the user is, as a connector reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Stable id at the upstream; with the connector id it forms `sub`.
    pub user_id: String,
    /// Display name (the `name` claim).
    pub username: String,
    pub preferred_username: String,
    pub email: String,
    pub email_verified: bool,
    pub groups: Vec<String>,
    /// Opaque state the connector wants back on refresh (e.g. upstream tokens).
    pub connector_data: Option<Vec<u8>>,
}

impl Identity {
    /// The claims stored on auth requests, codes and refresh tokens.
    pub fn claims(&self) -> Claims {
        Claims {
            user_id: self.user_id.clone(),
            username: self.username.clone(),
            preferred_username: self.preferred_username.clone(),
            email: self.email.clone(),
            email_verified: self.email_verified,
            groups: self.groups.clone(),
        }
    }

    /// Rebuild the identity a refresh starts from.
    pub fn from_claims(claims: &Claims, connector_data: Option<Vec<u8>>) -> Self {
        Identity {
            user_id: claims.user_id.clone(),
            username: claims.username.clone(),
            preferred_username: claims.preferred_username.clone(),
            email: claims.email.clone(),
            email_verified: claims.email_verified,
            groups: claims.groups.clone(),
            connector_data,
        }
    }
}

/// What the client asked for that concerns a connector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes {
    /// `offline_access`: keep whatever is needed to refresh later.
    pub offline_access: bool,
    /// `groups`: load the user's groups.
    pub groups: bool,
}

impl Scopes {
    /// From the requested scope list of an auth request or refresh token.
    pub fn from_requested<S: AsRef<str>>(scopes: &[S]) -> Self {
        let has = |want: &str| scopes.iter().any(|s| s.as_ref() == want);
        Scopes {
            offline_access: has("offline_access"),
            groups: has("groups"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The user authenticated but is not in any group the connector requires.
    /// Dex answers 403 "You are not a member of any of the required groups to authenticate."
    #[error("user {user:?} is not a member of any of the required groups")]
    NotInRequiredGroups { user: String },
    /// The upstream failed or answered something unusable (a 502 page for the
    /// browser). The text may quote the upstream: it is displayed escaped.
    #[error("upstream error: {}", Escaped(.0))]
    Upstream(String),
    /// The connector cannot refresh this identity any more (user deleted, upstream
    /// token revoked…); the refresh token must be rejected.
    #[error("refresh failed: {}", Escaped(.0))]
    Refresh(String),
    /// A problem found when opening the connector (its upstream client cannot be
    /// built, a stored password hash is malformed).
    #[error("connector {id:?} (type {kind:?}): {message}")]
    Config {
        id: String,
        kind: String,
        message: String,
    },
    #[error("duplicate connector id {id:?}")]
    DuplicateId { id: String },
    /// A failure on our side (e.g. the blocking pool went away, a stored hash has a cost
    /// Dex refuses at login). Dex shows "Login error…" with 500.
    #[error("internal connector error: {}", Escaped(.0))]
    Internal(String),
    /// Too many password checks are already running or waiting (see
    /// [`crate::throttle::Gate`]): 503, try again later.
    #[error("too many password checks in progress")]
    Busy,
}

/// Displays text that may come from an upstream (an `error_description`, a quoted
/// body) on one line: control characters (`\n` would forge a log line) and
/// invisible format characters (bidi overrides) are written as escapes.
pub struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        for c in self.0.chars() {
            if c.is_control() || is_format_char(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Unicode format characters that reorder or hide text (bidi controls, zero-width
/// characters, the BOM).
fn is_format_char(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}' | '\u{061c}')
}

/// A connector that sends the browser to an upstream login page, which sends it back to
/// `<issuer>/callback` with our `state` (the auth request id).
#[async_trait]
pub trait CallbackConnector: Send + Sync {
    /// Called by the HTTP layer before [`CallbackConnector::login_url`] on every
    /// login: connectors that need network setup first (the `oidc` connector's
    /// discovery, cached after the first success) do it here. The default does
    /// nothing. An error is a 500 "Login error" like a `login_url` error.
    async fn prepare(&self) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Where to send the browser, and connector data to keep on the auth request (e.g. a
    /// PKCE verifier or nonce) until the callback.
    fn login_url(
        &self,
        scopes: &Scopes,
        callback_url: &str,
        state: &str,
    ) -> Result<(String, Option<Vec<u8>>), ConnectorError>;

    /// Turn the callback's query into an identity. `connector_data` is what `login_url`
    /// returned for this auth request.
    async fn handle_callback(
        &self,
        scopes: &Scopes,
        connector_data: Option<&[u8]>,
        query: &[(String, String)],
    ) -> Result<Identity, ConnectorError>;

    /// Whether refresh tokens can be issued for this connector's users.
    fn supports_refresh(&self) -> bool;

    /// Re-check the user on a refresh grant; an error rejects the refresh token.
    async fn refresh(
        &self,
        scopes: &Scopes,
        identity: Identity,
    ) -> Result<Identity, ConnectorError>;

    /// The connector's token verification for RFC 8693 token exchange, if it
    /// has one (Dex's `TokenIdentityConnector`); most connectors do not.
    fn token_identity(&self) -> Option<&dyn TokenIdentityConnector> {
        None
    }
}

/// The `subject_token_type`s of a token exchange (RFC 8693 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectTokenType {
    IdToken,
    AccessToken,
}

/// A connector that can tell who a token its upstream issued belongs to.
#[async_trait]
pub trait TokenIdentityConnector: Send + Sync {
    /// The identity behind `token`; any error means "not accepted" (the reason is
    /// for the log only).
    async fn token_identity(
        &self,
        kind: SubjectTokenType,
        token: &str,
    ) -> Result<Identity, ConnectorError>;
}

/// A connector that checks a login and password entered into oxidex's own form.
#[async_trait]
pub trait PasswordConnector: Send + Sync {
    /// Label of the login field; empty means the default "Username".
    fn prompt(&self) -> &str;

    /// `Ok(None)` means wrong credentials (the form is shown again with 401);
    /// `Err` is a failure (500 "Login error").
    async fn login(
        &self,
        scopes: &Scopes,
        username: &str,
        password: &str,
    ) -> Result<Option<Identity>, ConnectorError>;

    fn supports_refresh(&self) -> bool;

    async fn refresh(
        &self,
        scopes: &Scopes,
        identity: Identity,
    ) -> Result<Identity, ConnectorError>;
}

#[derive(Clone)]
pub enum Connector {
    Callback(Arc<dyn CallbackConnector>),
    Password(Arc<dyn PasswordConnector>),
}

impl Connector {
    /// See [`CallbackConnector::token_identity`].
    pub fn token_identity(&self) -> Option<&dyn TokenIdentityConnector> {
        match self {
            Connector::Callback(c) => c.token_identity(),
            Connector::Password(_) => None,
        }
    }

    pub fn supports_refresh(&self) -> bool {
        match self {
            Connector::Callback(c) => c.supports_refresh(),
            Connector::Password(c) => c.supports_refresh(),
        }
    }

    /// Refresh through whichever kind this is.
    pub async fn refresh(
        &self,
        scopes: &Scopes,
        identity: Identity,
    ) -> Result<Identity, ConnectorError> {
        match self {
            Connector::Callback(c) => c.refresh(scopes, identity).await,
            Connector::Password(c) => c.refresh(scopes, identity).await,
        }
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Connector::Callback(_) => "Connector::Callback",
            Connector::Password(_) => "Connector::Password",
        })
    }
}

/// One opened connector with its configured identity.
#[derive(Debug, Clone)]
pub struct ConnectorEntry {
    /// Used in URLs (`/auth/{id}`) and inside `sub`.
    pub id: String,
    /// Display name on the login page.
    pub name: String,
    /// The configured `type` (`mockCallback`, `local`, …).
    pub kind: String,
    /// `connectors[].grantTypes`; empty means all grants.
    pub grant_types: Vec<String>,
    pub connector: Connector,
}

/// The opened connectors, in configuration order (the local DB last, as in Dex).
#[derive(Debug, Clone, Default)]
pub struct Connectors {
    entries: Vec<ConnectorEntry>,
    by_id: HashMap<String, usize>,
    /// Ids of the connectors that can refresh identities, computed once.
    refreshing: Vec<String>,
    /// The one gate every password hash check goes through.
    hash_gate: Arc<Gate>,
}

impl Connectors {
    /// Fails on a duplicate id.
    pub fn new(entries: Vec<ConnectorEntry>) -> Result<Self, ConnectorError> {
        let mut by_id = HashMap::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            if by_id.insert(entry.id.clone(), index).is_some() {
                return Err(ConnectorError::DuplicateId {
                    id: entry.id.clone(),
                });
            }
        }
        let refreshing = entries
            .iter()
            .filter(|entry| entry.connector.supports_refresh())
            .map(|entry| entry.id.clone())
            .collect();
        Ok(Connectors {
            entries,
            by_id,
            refreshing,
            hash_gate: Arc::new(Gate::per_core()),
        })
    }

    /// The gate of the password hash checks (its `peak` shows it held).
    pub fn hash_gate(&self) -> &Gate {
        &self.hash_gate
    }

    pub fn get(&self, id: &str) -> Option<&ConnectorEntry> {
        self.by_id.get(id).and_then(|&i| self.entries.get(i))
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConnectorEntry> {
        self.entries.iter()
    }

    /// Ids of the connectors whose users can get refresh tokens.
    pub fn refreshing_ids(&self) -> &[String] {
        &self.refreshing
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Opens every configured connector, then the local password DB when enabled.
/// `config::load` has decoded and validated their configs; what can still fail
/// here is building an upstream HTTP/TLS client or a malformed stored hash.
/// Makes no network call (the `oidc` connector discovers its provider on first
/// use; see [`CallbackConnector::prepare`]). `clock` is what connectors check
/// upstream token expiry and ID tokens against.
pub fn build_connectors(settings: &Settings, clock: Clock) -> Result<Connectors, ConnectorError> {
    build(
        &settings.connectors,
        settings
            .enable_password_db
            .then_some(settings.passwords.as_slice()),
        &clock,
    )
}

/// `password_db`: the static passwords when the password DB is enabled.
fn build(
    connectors: &[ConnectorSettings],
    password_db: Option<&[Password]>,
    clock: &Clock,
) -> Result<Connectors, ConnectorError> {
    let mut entries = Vec::with_capacity(connectors.len() + 1);
    let hash_gate = Arc::new(Gate::per_core());
    for conf in connectors {
        entries.push(ConnectorEntry {
            id: conf.id.clone(),
            name: conf.name.clone(),
            kind: conf.kind.clone(),
            grant_types: conf.grant_types.clone(),
            connector: conf.decoded.open(&conf.id, clock)?,
        });
    }
    if let Some(passwords) = password_db {
        entries.push(ConnectorEntry {
            id: LOCAL_CONNECTOR_ID.to_owned(),
            name: LOCAL_CONNECTOR_NAME.to_owned(),
            kind: LOCAL_CONNECTOR_KIND.to_owned(),
            grant_types: Vec::new(),
            connector: Connector::Password(Arc::new(local::PasswordDb::new(
                passwords,
                Arc::clone(&hash_gate),
            )?)),
        });
    }
    let mut connectors = Connectors::new(entries)?;
    connectors.hash_gate = hash_gate;
    Ok(connectors)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const CALLBACK: &str = "https://idp.example/dex/callback";

    #[test]
    fn upstream_text_displays_on_one_line() {
        let forged =
            "denied\n2026-01-01T00:00:00Z  INFO login succeeded user=admin\r\u{202e}x\u{7}";
        for error in [
            ConnectorError::Upstream(forged.into()),
            ConnectorError::Refresh(forged.into()),
            ConnectorError::Internal(forged.into()),
        ] {
            let shown = error.to_string();
            assert!(
                !shown.chars().any(|c| c.is_control() || c == '\u{202e}'),
                "{shown:?}"
            );
            assert!(shown.contains("denied\\n2026"), "{shown}");
        }
        assert_eq!(
            Escaped("plain: text \"quoted\"").to_string(),
            "plain: text \"quoted\""
        );
    }

    fn build(
        connectors: &[ConnectorSettings],
        password_db: Option<&[Password]>,
    ) -> Result<Connectors, ConnectorError> {
        super::build(connectors, password_db, &crate::server::system_clock())
    }

    /// A connector as `config::load` leaves it: decoded by its kind.
    fn conf(kind: &str, id: &str, config: serde_json::Value) -> ConnectorSettings {
        let (decoded, _) = kinds::find(kind)
            .unwrap()
            .decode("connectors[0].config", &config, Some(CALLBACK))
            .unwrap();
        ConnectorSettings {
            kind: kind.to_owned(),
            id: id.to_owned(),
            name: format!("{id} name"),
            config,
            grant_types: Vec::new(),
            decoded,
        }
    }

    /// Loads a config whose issuer has `CALLBACK` as its callback URL.
    fn load(connectors: serde_json::Value) -> Result<Settings, crate::config::ConfigError> {
        let config = serde_json::json!({
            "issuer": "https://idp.example/dex",
            "storage": {"type": "memory"},
            "web": {"http": "127.0.0.1:5556"},
            "connectors": connectors,
        });
        crate::config::load_str(
            &config.to_string(),
            std::path::Path::new("config.json"),
            &crate::config::LoadOptions::default(),
        )
        .map(|loaded| loaded.settings)
    }

    #[test]
    fn builds_configured_connectors_then_local_db() {
        let built = build(
            &[
                conf("mockCallback", "mock", serde_json::Value::Null),
                conf(
                    "mockPassword",
                    "mockpw",
                    serde_json::json!({"username": "u", "password": "p"}),
                ),
            ],
            Some(&[]),
        )
        .unwrap();
        let ids: Vec<_> = built.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["mock", "mockpw", "local"]);
        let local = built.get("local").unwrap();
        assert_eq!(
            (local.name.as_str(), local.kind.as_str()),
            ("Email", "local")
        );
        assert!(matches!(local.connector, Connector::Password(_)));
        assert!(matches!(
            built.get("mock").unwrap().connector,
            Connector::Callback(_)
        ));
        assert_eq!(built.get("mock").unwrap().name, "mock name");
        assert!(built.get("nope").is_none());
        assert_eq!(built.len(), 3);
    }

    #[test]
    fn password_db_only_when_enabled() {
        let built = build(
            &[conf("mockCallback", "mock", serde_json::Value::Null)],
            None,
        )
        .unwrap();
        assert!(built.get("local").is_none());
        assert_eq!(built.len(), 1);
    }

    #[test]
    fn unknown_and_unimplemented_types_are_refused_at_load_naming_the_known_ones() {
        let e = load(serde_json::json!([
            {"type": "frobnicator", "id": "corp", "name": "Corp"},
            {"type": "gitlab", "id": "gl", "name": "GitLab"},
        ]))
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("connectors[0].type: unknown connector type \"frobnicator\""),
            "{msg}"
        );
        assert!(
            msg.contains("connectors[1].type: connector type \"gitlab\" is not supported"),
            "{msg}"
        );
        // Both messages list every implemented type, from the one list.
        for kind in kinds::KINDS {
            let listed = msg.matches(&format!("{}, ", kind.name)).count()
                + msg.matches(&format!("{})", kind.name)).count();
            assert_eq!(listed, 2, "{} in:\n{msg}", kind.name);
        }
    }

    #[test]
    fn gitea_and_oidc_open_without_network_and_bad_configs_name_keys() {
        let gitea = serde_json::json!({"baseURL": "https://git.example", "clientID": "id",
            "clientSecret": "s", "redirectURI": CALLBACK});
        let oidc = serde_json::json!({"issuer": "https://up.example", "clientID": "id",
            "redirectURI": CALLBACK});
        let built = build(
            &[conf("gitea", "forgejo", gitea), conf("oidc", "up", oidc)],
            None,
        )
        .unwrap();
        assert!(matches!(
            built.get("forgejo").unwrap().connector,
            Connector::Callback(_)
        ));
        assert!(built.get("up").unwrap().connector.supports_refresh());

        let e = load(serde_json::json!([
            {"type": "mockCallback", "id": "m", "name": "M"},
            {"type": "gitea", "id": "forgejo", "name": "Forgejo",
             "config": {"redirectURI": CALLBACK}},
        ]))
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("connectors[1].config.clientID: required"),
            "{msg}"
        );
        assert!(
            msg.contains("connectors[1].config.clientSecret: required"),
            "{msg}"
        );
    }

    #[test]
    fn load_reports_every_connector_problem_offline() {
        let e = load(serde_json::json!([
            {"type": "gitea", "id": "forgejo", "name": "Forgejo",
             "config": {"clientID": "id", "redirectURI": "https://elsewhere/callback"}},
            {"type": "oidc", "id": "up", "name": "Up",
             "config": {"issuer": "https://up.example", "clientID": "id", "redirectURI": CALLBACK}},
            {"type": "mockPassword", "id": "pw", "name": "Password", "config": {}},
        ]))
        .unwrap_err();
        let all = e.to_string();
        assert!(
            all.contains("connectors[0].config.clientSecret: required"),
            "{all}"
        );
        assert!(all.contains("connectors[0].config.redirectURI:"), "{all}");
        assert!(
            all.contains("connectors[2].config.username: required"),
            "{all}"
        );
        assert!(
            !all.contains("connectors[1]"),
            "the oidc connector is fine: {all}"
        );
    }

    #[test]
    fn files_a_connector_config_names_are_regular_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let huge = dir.path().join("huge.pem");
        std::fs::write(&huge, vec![b'A'; 2 * 1024 * 1024]).unwrap();
        let huge = huge.to_str().unwrap();
        // A device never ends (or blocks): refused like a secret file would be.
        let e = load(serde_json::json!([
            {"type": "gitea", "id": "f", "name": "F", "config": {"clientID": "i",
             "clientSecret": "s", "redirectURI": CALLBACK, "rootCA": "/dev/zero"}},
            {"type": "oidc", "id": "o", "name": "O", "config": {"issuer": "https://up.example",
             "clientID": "i", "redirectURI": CALLBACK, "rootCAs": [huge]}},
            {"type": "ldap", "id": "l", "name": "L", "config": {"host": "ldap.example",
             "rootCA": huge, "clientCert": "/dev/zero", "clientKey": huge,
             "userSearch": {"baseDN": "dc=x", "username": "uid", "idAttr": "uid",
                            "emailAttr": "mail"}}},
        ]))
        .unwrap_err()
        .to_string();
        for problem in [
            "connectors[0].config.rootCA: file \"/dev/zero\" is not a regular file",
            "connectors[1].config.rootCAs[0]: file",
            "connectors[2].config.rootCA: file",
            "connectors[2].config.clientCert: file \"/dev/zero\" is not a regular file",
        ] {
            assert!(e.contains(problem), "{problem} missing in:\n{e}");
        }
        assert_eq!(e.matches("bytes; is it the right file?").count(), 2, "{e}");
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let e = build(
            &[
                conf("mockCallback", "local", serde_json::Value::Null),
                conf("mockCallback", "x", serde_json::Value::Null),
            ],
            Some(&[]),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("duplicate connector id \"local\""),
            "{e}"
        );
    }

    #[test]
    fn scopes_and_claims_round_trip() {
        let s = Scopes::from_requested(&["openid", "groups", "offline_access"]);
        assert!(s.groups && s.offline_access);
        assert_eq!(Scopes::from_requested::<&str>(&[]), Scopes::default());
        let id = mock::mock_callback_identity();
        let back = Identity::from_claims(&id.claims(), id.connector_data.clone());
        assert_eq!(back, id);
    }
}
