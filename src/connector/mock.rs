//! Dex's test connectors, with the same fixed identity, so Dex-style tests, demos and
//! benchmarks run against oxidex unchanged.
//!
//! * `mockCallback`: no user interaction; the login URL is our own callback with the
//!   state, and every callback yields the fixed identity.
//! * `mockPassword`: a form login that accepts exactly the configured `username` and
//!   `password`.

use crate::crypto::constant_time_eq;
use async_trait::async_trait;

use super::config::{ConfigReader, DecodeConfig, Problems};
use super::{CallbackConnector, ConnectorError, Identity, PasswordConnector, Scopes};

pub const MOCK_USER_ID: &str = "0-385-28089-0";
pub const MOCK_USERNAME: &str = "Kilgore Trout";
pub const MOCK_EMAIL: &str = "kilgore@kilgore.trout";
pub const MOCK_GROUP: &str = "authors";
/// Connector data the callback mock attaches, so tests can see it round-trip to refresh.
pub const MOCK_CONNECTOR_DATA: &[u8] = b"foobar";

/// The identity `mockCallback` always returns.
pub fn mock_callback_identity() -> Identity {
    Identity {
        user_id: MOCK_USER_ID.to_owned(),
        username: MOCK_USERNAME.to_owned(),
        preferred_username: String::new(),
        email: MOCK_EMAIL.to_owned(),
        email_verified: true,
        groups: vec![MOCK_GROUP.to_owned()],
        connector_data: Some(MOCK_CONNECTOR_DATA.to_vec()),
    }
}

/// The identity `mockPassword` returns on a correct login (no groups, no data, as Dex).
pub fn mock_password_identity() -> Identity {
    Identity {
        user_id: MOCK_USER_ID.to_owned(),
        username: MOCK_USERNAME.to_owned(),
        preferred_username: String::new(),
        email: MOCK_EMAIL.to_owned(),
        email_verified: true,
        groups: Vec::new(),
        connector_data: None,
    }
}

#[derive(Debug, Default)]
pub struct MockCallback;

impl MockCallback {
    pub fn new() -> Self {
        MockCallback
    }
}

#[async_trait]
impl CallbackConnector for MockCallback {
    fn login_url(
        &self,
        _scopes: &Scopes,
        callback_url: &str,
        state: &str,
    ) -> Result<(String, Option<Vec<u8>>), ConnectorError> {
        let mut url = url::Url::parse(callback_url).map_err(|e| {
            ConnectorError::Internal(format!("callback URL {callback_url:?} is invalid: {e}"))
        })?;
        // Replace any existing `state` rather than adding a second one.
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "state")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.query_pairs_mut()
            .clear()
            .extend_pairs(kept)
            .append_pair("state", state);
        Ok((url.into(), None))
    }

    async fn handle_callback(
        &self,
        _scopes: &Scopes,
        _connector_data: Option<&[u8]>,
        _query: &[(String, String)],
    ) -> Result<Identity, ConnectorError> {
        Ok(mock_callback_identity())
    }

    fn supports_refresh(&self) -> bool {
        true
    }

    async fn refresh(
        &self,
        _scopes: &Scopes,
        _identity: Identity,
    ) -> Result<Identity, ConnectorError> {
        Ok(mock_callback_identity())
    }
}

/// `mockPassword`'s `config`: `{"username": …, "password": …}`, both required.
#[derive(Clone)]
pub struct MockPasswordConfig {
    username: String,
    password: String,
}

impl DecodeConfig for MockPasswordConfig {
    const KEYS: &'static [&'static str] = &["username", "password"];

    fn decode(r: &ConfigReader, p: &mut Problems, _callback: Option<&str>) -> Self {
        MockPasswordConfig {
            username: r.required(p, "username", ""),
            password: r.required(p, "password", ""),
        }
    }
}

pub struct MockPassword {
    username: String,
    password: String,
}

impl std::fmt::Debug for MockPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockPassword")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl MockPassword {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        MockPassword {
            username: username.into(),
            password: password.into(),
        }
    }

    pub fn from_config(config: MockPasswordConfig) -> Self {
        MockPassword::new(config.username, config.password)
    }
}

#[async_trait]
impl PasswordConnector for MockPassword {
    fn prompt(&self) -> &str {
        ""
    }

    async fn login(
        &self,
        _scopes: &Scopes,
        username: &str,
        password: &str,
    ) -> Result<Option<Identity>, ConnectorError> {
        let user_ok = constant_time_eq(username.as_bytes(), self.username.as_bytes());
        let pass_ok = constant_time_eq(password.as_bytes(), self.password.as_bytes());
        // `&`, not `&&`: both comparisons always run.
        Ok((user_ok & pass_ok).then(mock_password_identity))
    }

    fn supports_refresh(&self) -> bool {
        true
    }

    async fn refresh(
        &self,
        _scopes: &Scopes,
        identity: Identity,
    ) -> Result<Identity, ConnectorError> {
        Ok(identity)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn callback_login_url_returns_to_callback_with_state() {
        let (url, data) = MockCallback::new()
            .login_url(
                &Scopes::default(),
                "https://idp.example/dex/callback?state=old&x=1",
                "req id&1",
            )
            .unwrap();
        assert_eq!(url, "https://idp.example/dex/callback?x=1&state=req+id%261");
        assert_eq!(data, None);
    }

    #[test]
    fn callback_login_url_rejects_relative_callback() {
        let err = MockCallback::new()
            .login_url(&Scopes::default(), "/callback", "s")
            .unwrap_err();
        assert!(err.to_string().contains("/callback"), "{err}");
    }

    #[tokio::test]
    async fn callback_returns_dex_fixed_identity_and_refreshes_to_it() {
        let c = MockCallback::new();
        let scopes = Scopes {
            offline_access: true,
            groups: true,
        };
        let id = c.handle_callback(&scopes, None, &[]).await.unwrap();
        assert_eq!(id.user_id, "0-385-28089-0");
        assert_eq!(id.username, "Kilgore Trout");
        assert_eq!(id.email, "kilgore@kilgore.trout");
        assert!(id.email_verified);
        assert_eq!(id.groups, vec!["authors".to_owned()]);
        assert_eq!(id.connector_data.as_deref(), Some(&b"foobar"[..]));
        assert!(c.supports_refresh());
        let stale = Identity {
            username: "someone else".into(),
            ..id.clone()
        };
        assert_eq!(c.refresh(&scopes, stale).await.unwrap(), id);
    }

    #[tokio::test]
    async fn password_accepts_only_configured_credentials() {
        let c = MockPassword::from_config(
            parse(serde_json::json!({"username": "kilgore", "password": "s3cret"})).unwrap(),
        );
        let s = Scopes::default();
        let id = c.login(&s, "kilgore", "s3cret").await.unwrap().unwrap();
        assert_eq!(id, mock_password_identity());
        assert_eq!(id.user_id, MOCK_USER_ID);
        assert!(id.groups.is_empty());
        assert_eq!(c.login(&s, "kilgore", "wrong").await.unwrap(), None);
        assert_eq!(c.login(&s, "Kilgore", "s3cret").await.unwrap(), None);
        assert_eq!(c.login(&s, "", "").await.unwrap(), None);
        assert_eq!(c.prompt(), "");
        assert_eq!(c.refresh(&s, id.clone()).await.unwrap(), id);
    }

    fn parse(value: serde_json::Value) -> Result<MockPasswordConfig, String> {
        MockPasswordConfig::parse("connectors[3].config", &value, "")
            .map(|(config, _)| config)
            .map_err(|e| e.join("\n"))
    }

    #[test]
    fn password_config_requires_username_and_password() {
        let e = parse(serde_json::json!({"password": "p"})).err().unwrap();
        assert!(e.contains("connectors[3].config.username: required"), "{e}");
        let e = parse(serde_json::json!({"username": "u"})).err().unwrap();
        assert!(e.contains("connectors[3].config.password: required"), "{e}");
        let e = parse(serde_json::Value::Null).err().unwrap();
        assert!(e.contains("connectors[3].config.username: required"), "{e}");
    }
}
