//! Fixtures for the oidc unit tests: settings, clients, a toy signer. Compiled
//! into oxidex's unit tests too (`#[path]` in `src/oidc/mod.rs`), so it names
//! oxidex items as `crate::…`; the test kit's root imports them under those names.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config::settings::*;
use crate::keys::SigningAlgorithm;
use crate::oidc::TokenSigner;
use crate::storage::Claims;

/// A fixed "now" for tests.
pub fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn client(id: &str, secret: &str, redirect_uris: &[&str], public: bool) -> Client {
    Client {
        id: id.to_owned(),
        secret: secret.to_owned(),
        redirect_uris: redirect_uris.iter().map(|s| (*s).to_owned()).collect(),
        trusted_peers: Vec::new(),
        public,
        name: id.to_owned(),
        logo_url: String::new(),
        allowed_connectors: Vec::new(),
        require_pkce: false,
        post_logout_redirect_uris: Vec::new(),
        backchannel_logout_uri: String::new(),
        refresh_token_lifetime: RefreshTokenLifetime::Standalone,
        sso_shared_with: None,
        client_credentials_groups: Vec::new(),
    }
}

/// `web` (confidential), `other` (confidential), `peer` (trusts `web`),
/// `public-cli` (public, no URIs), `public-spa` (public, one URI),
/// `pkce-app` (require_pkce), `limited` (only connector `ldap`), `sp ace`.
pub fn clients() -> Vec<Client> {
    let mut peer = client("peer", "peersecret", &["https://peer.example/cb"], false);
    peer.trusted_peers = vec!["web".to_owned()];
    let mut pkce = client(
        "pkce-app",
        "pkcesecret",
        &["https://pkce.example/cb"],
        false,
    );
    pkce.require_pkce = true;
    let mut limited = client(
        "limited",
        "limitedsecret",
        &["https://limited.example/cb"],
        false,
    );
    limited.allowed_connectors = vec!["ldap".to_owned()];
    vec![
        client(
            "web",
            "websecret",
            &["https://app.example/cb", "https://app.example/cb2?keep=1"],
            false,
        ),
        client("other", "othersecret", &["https://other.example/cb"], false),
        peer,
        client("public-cli", "", &[], true),
        client("public-spa", "", &["https://spa.example/cb"], true),
        pkce,
        limited,
        client("sp ace", "s p+%", &[], false),
    ]
}

pub fn settings() -> Settings {
    Settings {
        issuer: Issuer {
            url: "https://idp.example/dex".to_owned(),
            path_prefix: "/dex".to_owned(),
        },
        storage: StorageSettings::Memory,
        web: WebSettings::default(),
        telemetry_http: None,
        frontend: FrontendSettings::default(),
        oauth2: OAuth2Settings {
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            response_types: vec!["code".into()],
            skip_approval_screen: false,
            always_show_login_screen: false,
            password_connector: None,
            pkce_enforce: false,
            pkce_methods: vec!["S256".into(), "plain".into()],
        },
        expiry: ExpirySettings {
            id_tokens: secs(86_400),
            auth_requests: secs(86_400),
            device_requests: secs(300),
            refresh_tokens: RefreshTokenPolicy::default(),
        },
        signer: SignerSettings {
            algorithm: SigningAlgorithm::RS256,
            rotation_period: secs(6 * 3600),
        },
        logger: LoggerSettings {
            level: "info".to_owned(),
            format: LogFormat::Text,
            exclude_fields: Vec::new(),
        },
        clients: clients(),
        connectors: Vec::new(),
        passwords: Vec::new(),
        enable_password_db: false,
        gc_interval: secs(300),
        sessions: Some(SessionSettings::default()),
    }
}

/// Dex's mock connector identity.
pub fn user_claims() -> Claims {
    Claims {
        user_id: "0-385-28089-0".to_owned(),
        username: "Kilgore Trout".to_owned(),
        preferred_username: "kilgore".to_owned(),
        email: "kilgore@kilgore.trout".to_owned(),
        email_verified: true,
        groups: vec!["authors".to_owned()],
    }
}

/// Signs with HMAC-SHA256 but reports `algorithm` for the hash claims; enough to
/// produce distinct, decodable compact JWS values in unit tests.
pub struct TestSigner {
    pub algorithm: SigningAlgorithm,
    pub fail: bool,
}

impl Default for TestSigner {
    fn default() -> Self {
        Self {
            algorithm: SigningAlgorithm::RS256,
            fail: false,
        }
    }
}

impl TokenSigner for TestSigner {
    fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    fn sign(&self, claims: &serde_json::Value) -> Result<String, String> {
        if self.fail {
            return Err("test signer told to fail".to_owned());
        }
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":"test"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"test key");
        let mac = aws_lc_rs::hmac::sign(&key, format!("{header}.{payload}").as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.as_ref());
        Ok(format!("{header}.{payload}.{sig}"))
    }
}

/// The decoded payload of a compact JWS.
pub fn jwt_payload(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}
