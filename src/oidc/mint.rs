//! Minting ID tokens and access tokens exactly as Dex (Dex's `newIDToken` and
//! `newAccessToken` in `server/oauth2.go`),
//! and the token endpoint's success response.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::error::OAuthError;
use super::scopes::{self, cross_client_peer, peer_trusts};
use super::subject::encode_subject;
use crate::config::settings::{Client, Settings};
use crate::crypto::new_id;
use crate::crypto::token_hash;
use crate::keys::SigningAlgorithm;
use crate::storage::Claims;

/// Signs a JWT payload with the current signing key. The real signer lives in
/// [`crate::keys`]; this trait keeps the domain independent of it.
pub trait TokenSigner: Send + Sync {
    /// The JWS `alg` of the key that [`TokenSigner::sign`] will use; it picks the
    /// hash for `at_hash` / `c_hash`.
    fn algorithm(&self) -> SigningAlgorithm;
    /// A compact JWS of `claims` (header with `alg` and `kid`).
    fn sign(&self, claims: &Value) -> Result<String, String>;
}

/// Who and what a token is for (Dex's `Authorization`).
#[derive(Debug, Clone, Copy)]
pub struct TokenSubject<'a> {
    pub client_id: &'a str,
    pub claims: &'a Claims,
    pub scopes: &'a [String],
    pub connector_id: &'a str,
    pub nonce: &'a str,
    /// Time of the interactive login, emitted as `auth_time` when known.
    pub auth_time: Option<SystemTime>,
    /// The browser session behind the token, emitted as `sid` (OpenID Connect
    /// Front-/Back-Channel Logout) when not empty, as Dex HEAD.
    pub session_id: &'a str,
}

/// A signed token and its expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedToken {
    pub token: String,
    pub expiry: SystemTime,
}

/// Mints tokens for one issuer with one signer.
pub struct Minter<'a> {
    pub issuer: &'a str,
    pub id_token_lifetime: Duration,
    pub signer: &'a dyn TokenSigner,
    /// For the cross-client trust check of `audience:server:client_id:` scopes.
    pub clients: &'a [Client],
}

impl<'a> Minter<'a> {
    pub fn new(settings: &'a Settings, signer: &'a dyn TokenSigner) -> Self {
        Self {
            issuer: &settings.issuer.url,
            id_token_lifetime: settings.expiry.id_tokens,
            signer,
            clients: &settings.clients,
        }
    }

    /// The claims of an ID token, in Dex's member order: `iss`, `sub`, `aud`,
    /// `exp`, `iat`, `azp`, `nonce`, `auth_time`, `at_hash`, `c_hash`, `email`,
    /// `email_verified`, `groups`, `name`, `preferred_username`,
    /// `federated_claims`. Empty strings and empty groups are omitted.
    pub fn claims(
        &self,
        subject: &TokenSubject<'_>,
        now: SystemTime,
        access_token: Option<&str>,
        code: Option<&str>,
    ) -> Result<(Map<String, Value>, SystemTime), OAuthError> {
        let expiry = now
            .checked_add(self.id_token_lifetime)
            .ok_or_else(OAuthError::server_error)?;
        let algorithm = self.signer.algorithm();
        let c = subject.claims;

        let mut aud: Vec<&str> = Vec::new();
        for scope in subject.scopes {
            if let Some(peer) = cross_client_peer(scope) {
                if !peer_trusts(self.clients, subject.client_id, peer) {
                    tracing::error!(
                        peer,
                        client = subject.client_id,
                        "peer does not trust client"
                    );
                    return Err(OAuthError::server_error());
                }
                aud.push(peer);
            }
        }
        if !aud.contains(&subject.client_id) {
            aud.push(subject.client_id);
        }

        let mut m = Map::new();
        m.insert("iss".into(), json!(self.issuer));
        m.insert(
            "sub".into(),
            json!(encode_subject(&c.user_id, subject.connector_id)),
        );
        if let [single] = aud.as_slice() {
            m.insert("aud".into(), json!(single));
        } else {
            m.insert("aud".into(), json!(aud));
        }
        m.insert("exp".into(), json!(unix_seconds(expiry)));
        m.insert("iat".into(), json!(unix_seconds(now)));
        m.insert("jti".into(), json!(super::revoke::new_jti(now)));
        if aud.len() > 1 {
            m.insert("azp".into(), json!(subject.client_id));
        }
        insert_str(&mut m, "nonce", subject.nonce);
        if let Some(auth_time) = subject.auth_time {
            m.insert("auth_time".into(), json!(unix_seconds(auth_time)));
        }
        insert_str(&mut m, "sid", subject.session_id);
        if let Some(token) = access_token {
            m.insert("at_hash".into(), json!(token_hash(algorithm, token)));
        }
        if let Some(code) = code {
            m.insert("c_hash".into(), json!(token_hash(algorithm, code)));
        }
        let has = |s: &str| scopes::has_scope(subject.scopes, s);
        if has(scopes::EMAIL) {
            insert_str(&mut m, "email", &c.email);
            m.insert("email_verified".into(), json!(c.email_verified));
        }
        if has(scopes::GROUPS) && !c.groups.is_empty() {
            m.insert("groups".into(), json!(c.groups));
        }
        if has(scopes::PROFILE) {
            insert_str(&mut m, "name", &c.username);
            insert_str(&mut m, "preferred_username", &c.preferred_username);
        }
        if has(scopes::FEDERATED_ID) {
            let mut fed = Map::new();
            insert_str(&mut fed, "connector_id", subject.connector_id);
            insert_str(&mut fed, "user_id", &c.user_id);
            m.insert("federated_claims".into(), Value::Object(fed));
        }
        Ok((m, expiry))
    }

    /// An ID token; `access_token` and `code` add `at_hash` and `c_hash`.
    pub fn id_token(
        &self,
        subject: &TokenSubject<'_>,
        now: SystemTime,
        access_token: Option<&str>,
        code: Option<&str>,
    ) -> Result<SignedToken, OAuthError> {
        let (claims, expiry) = self.claims(subject, now, access_token, code)?;
        let token = self.signer.sign(&Value::Object(claims)).map_err(|err| {
            tracing::error!(%err, "signing a token failed");
            OAuthError::server_error()
        })?;
        Ok(SignedToken { token, expiry })
    }

    /// An access token: a JWT with the ID token's claims, `at_hash` over a fresh
    /// random value (so every access token differs) and no `c_hash`.
    pub fn access_token(
        &self,
        subject: &TokenSubject<'_>,
        now: SystemTime,
    ) -> Result<SignedToken, OAuthError> {
        self.id_token(subject, now, Some(&new_id()), None)
    }
}

fn insert_str(map: &mut Map<String, Value>, key: &str, value: &str) {
    if !value.is_empty() {
        map.insert(key.to_owned(), json!(value));
    }
}

/// Seconds since the Unix epoch (negative before it), like Go's `Time.Unix()`.
pub(crate) fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The token endpoint's success body. Dex never includes `scope`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    /// RFC 8693 token exchange only: what `access_token` holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<String>,
    /// Always `"bearer"` (lowercase, as Dex).
    pub token_type: String,
    /// Seconds until the access token (and ID token) expire.
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

impl TokenResponse {
    pub fn new(
        access: &SignedToken,
        id_token: Option<SignedToken>,
        refresh_token: Option<String>,
        now: SystemTime,
    ) -> Self {
        let expiry = id_token.as_ref().map_or(access.expiry, |t| t.expiry);
        Self {
            access_token: access.token.clone(),
            issued_token_type: None,
            token_type: "bearer".to_owned(),
            expires_in: expiry.duration_since(now).map_or(0, |d| d.as_secs()),
            refresh_token,
            id_token: id_token.map(|t| t.token),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::oidc::test_support::{TestSigner, clients, jwt_payload, settings, t0, user_claims};

    fn scopes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn subject<'a>(claims: &'a Claims, scopes: &'a [String]) -> TokenSubject<'a> {
        TokenSubject {
            client_id: "web",
            claims,
            scopes,
            connector_id: "mock",
            nonce: "n-0S6",
            auth_time: None,
            session_id: "",
        }
    }

    #[test]
    fn id_token_claims_in_dex_order_with_all_scopes() {
        let settings = settings();
        let signer = TestSigner::default();
        let minter = Minter::new(&settings, &signer);
        let claims = user_claims();
        let sc = scopes(&["openid", "email", "profile", "groups", "federated:id"]);
        let (m, expiry) = minter
            .claims(&subject(&claims, &sc), t0(), Some("at"), Some("code"))
            .unwrap();
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "iss",
                "sub",
                "aud",
                "exp",
                "iat",
                "jti",
                "nonce",
                "at_hash",
                "c_hash",
                "email",
                "email_verified",
                "groups",
                "name",
                "preferred_username",
                "federated_claims"
            ]
        );
        assert_eq!(m["aud"], json!("web"));
        assert_eq!(m["sub"], json!("Cg0wLTM4NS0yODA4OS0wEgRtb2Nr"));
        assert_eq!(m["iss"], json!("https://idp.example/dex"));
        assert_eq!(
            m["exp"].as_i64().unwrap() - m["iat"].as_i64().unwrap(),
            86_400
        );
        assert_eq!(expiry, t0() + Duration::from_secs(86_400));
        assert_eq!(m["name"], json!("Kilgore Trout"));
        assert_eq!(m["preferred_username"], json!("kilgore"));
        assert_eq!(
            m["federated_claims"],
            json!({"connector_id": "mock", "user_id": "0-385-28089-0"})
        );
        assert_eq!(
            m["c_hash"],
            json!(token_hash(SigningAlgorithm::RS256, "code"))
        );
    }

    #[test]
    fn claims_are_gated_by_scope() {
        let settings = settings();
        let signer = TestSigner::default();
        let minter = Minter::new(&settings, &signer);
        let claims = user_claims();
        let sc = scopes(&["openid"]);
        let (m, _) = minter
            .claims(&subject(&claims, &sc), t0(), None, None)
            .unwrap();
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(keys, ["iss", "sub", "aud", "exp", "iat", "jti", "nonce"]);
        // Every token has its own `jti` (the key of RFC 7009 revocation).
        let (again, _) = minter
            .claims(&subject(&claims, &sc), t0(), None, None)
            .unwrap();
        assert_ne!(m["jti"], again["jti"]);
    }

    #[test]
    fn email_verified_false_is_present_and_empty_strings_omitted() {
        let settings = settings();
        let signer = TestSigner::default();
        let minter = Minter::new(&settings, &signer);
        let claims = Claims {
            user_id: "u".into(),
            email_verified: false,
            ..Claims::default()
        };
        let sc = scopes(&["openid", "email", "profile", "groups"]);
        let mut sub = subject(&claims, &sc);
        sub.nonce = "";
        let (m, _) = minter.claims(&sub, t0(), None, None).unwrap();
        assert_eq!(m.get("email_verified"), Some(&json!(false)));
        for absent in ["email", "name", "preferred_username", "groups", "nonce"] {
            assert!(!m.contains_key(absent), "{absent}");
        }
    }

    #[test]
    fn cross_client_audience_is_an_array_with_azp() {
        let settings = settings();
        let signer = TestSigner::default();
        let minter = Minter::new(&settings, &signer);
        let claims = user_claims();
        let sc = scopes(&["openid", "audience:server:client_id:peer"]);
        let (m, _) = minter
            .claims(&subject(&claims, &sc), t0(), None, None)
            .unwrap();
        assert_eq!(m["aud"], json!(["peer", "web"]));
        assert_eq!(m["azp"], json!("web"));
        // Requesting only itself keeps a single string audience and no azp.
        let sc = scopes(&["openid", "audience:server:client_id:web"]);
        let (m, _) = minter
            .claims(&subject(&claims, &sc), t0(), None, None)
            .unwrap();
        assert_eq!(m["aud"], json!("web"));
        assert!(!m.contains_key("azp"));
    }

    #[test]
    fn untrusted_peer_fails_minting() {
        let mut settings = settings();
        settings.clients = clients();
        let signer = TestSigner::default();
        let minter = Minter::new(&settings, &signer);
        let claims = user_claims();
        let sc = scopes(&["openid", "audience:server:client_id:public-cli"]);
        let err = minter
            .id_token(&subject(&claims, &sc), t0(), None, None)
            .unwrap_err();
        assert_eq!((err.status, err.code.as_str()), (500, "server_error"));
    }

    #[test]
    fn access_tokens_differ_and_carry_no_c_hash() {
        let settings = settings();
        let signer = TestSigner::default();
        let minter = Minter::new(&settings, &signer);
        let claims = user_claims();
        let sc = scopes(&["openid"]);
        let a = minter.access_token(&subject(&claims, &sc), t0()).unwrap();
        let b = minter.access_token(&subject(&claims, &sc), t0()).unwrap();
        assert_ne!(a.token, b.token);
        let payload = jwt_payload(&a.token);
        assert!(payload.get("at_hash").is_some());
        assert!(payload.get("c_hash").is_none());
    }

    #[test]
    fn token_response_serializes_like_dex() {
        let access = SignedToken {
            token: "a".into(),
            expiry: t0() + Duration::from_secs(60),
        };
        let resp = TokenResponse::new(&access, None, None, t0());
        assert_eq!(
            serde_json::to_string(&resp).unwrap(),
            r#"{"access_token":"a","token_type":"bearer","expires_in":60}"#
        );
    }
}
