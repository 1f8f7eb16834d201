//! Token introspection (RFC 7662) with Dex's response shapes (Dex's `server/introspectionhandler.go`).
//!
//! Classification as Dex: a value that parses as a JWT (signature not yet checked)
//! is an access token, anything else a refresh token. Access tokens are then fully
//! verified (signature with the current or a retired key, issuer, expiry); refresh
//! tokens are looked up with the refresh grant's rules (current secret, or the
//! previous one inside the reuse window; not expired).
//!
//! Beyond Dex:
//! * the caller is an authenticated client, and a token is only reported active to
//!   the client it was issued to (for access tokens also to a client named in its
//!   `aud`, i.e. a trusted peer it was minted for); anyone else gets
//!   `{"active":false}`, exactly as for an unknown token. Dex answers anyone.
//! * a refresh token's `exp` is its real expiry — `created + absoluteLifetime` or
//!   `last used + validIfNotUsedFor`, whichever comes first — and is omitted when
//!   neither is configured. Dex reports `created + absoluteLifetime`, which is
//!   `exp == iat` without an absolute lifetime.
//! * an access token whose client no longer exists is inactive (Dex: 500).
//! * a revoked access token (RFC 7009, [`super::revoke`]) is inactive until it
//!   expires.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::OAuthError;
use super::grants::{check_token_claims, refresh_expired, reuse_allowed, secret_matches};
use super::mint::unix_seconds;
use super::revoke;
use super::scopes::cross_client_peer;
use super::subject::{RefreshTokenWire, encode_subject};
use crate::config::settings::{Client, Settings};
use crate::storage::{RefreshToken, Storage, StorageError};

/// Verifies a compact JWS against the provider's keys and returns its payload.
/// The real implementation is the key set; tests use their own.
pub trait TokenVerifier: Send + Sync {
    fn verify(&self, token: &str) -> Result<Map<String, Value>, String>;
}

impl TokenVerifier for crate::keys::KeySet {
    fn verify(&self, token: &str) -> Result<Map<String, Value>, String> {
        self.verify_jwt(token).map_err(|e| e.to_string())
    }
}

/// What introspection needs: storage, settings, the key set and `now`.
#[derive(Clone, Copy)]
pub struct IntrospectContext<'a> {
    pub storage: &'a dyn Storage,
    pub settings: &'a Settings,
    pub verifier: &'a dyn TokenVerifier,
    pub now: SystemTime,
}

/// The two kinds of token oxidex hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    AccessToken,
    RefreshToken,
}

impl TokenKind {
    /// The `token_use` / `token_type_hint` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessToken => "access_token",
            Self::RefreshToken => "refresh_token",
        }
    }
}

/// Dex's guess: a compact JWS whose header and payload are base64url JSON objects
/// is an access token; anything else is a refresh token.
pub fn classify(token: &str) -> TokenKind {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return TokenKind::RefreshToken;
    };
    let is_object = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .is_some_and(|v| v.is_object())
    };
    if is_object(header) && is_object(payload) {
        TokenKind::AccessToken
    } else {
        TokenKind::RefreshToken
    }
}

/// `aud`: one audience as a string, several as an array (as Dex marshals it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience(pub Vec<String>);

impl Serialize for Audience {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [single] => serializer.serialize_str(single),
            many => many.serialize(serializer),
        }
    }
}

/// `ext`: the identity claims, members as in Dex (empty ones omitted).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IntrospectionExtra {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub azp: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub preferred_username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub federated_claims: Option<Value>,
}

/// An active token's description, members in Dex's order (`scope` and `jti` are
/// never set by Dex, so they are not here).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Introspection {
    pub active: bool,
    pub client_id: String,
    pub sub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    pub iat: i64,
    pub nbf: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub username: String,
    pub aud: Audience,
    pub iss: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// `access_token` or `refresh_token`.
    pub token_use: String,
    pub ext: IntrospectionExtra,
}

/// Introspects `token` for the authenticated `client`. `Ok(None)` means inactive
/// (unknown, invalid, expired, or not the caller's); errors are storage failures.
pub fn introspect(
    ctx: &IntrospectContext<'_>,
    client: &Client,
    token: &str,
) -> Result<Option<Introspection>, OAuthError> {
    // No length limit beyond the request body's: access tokens with many groups
    // are legitimately long.
    if token.is_empty() {
        return Ok(None);
    }
    match classify(token) {
        TokenKind::AccessToken => {
            let Some(active) = introspect_access_token(ctx, client, token) else {
                return Ok(None);
            };
            let sid = active
                .1
                .get("sid")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let ended = super::session::bound_session_ended(
                ctx.storage,
                ctx.settings,
                &active.0.client_id,
                sid,
                ctx.now,
            );
            match ended.and_then(|ended| Ok(ended || revoke::is_revoked(ctx.storage, &active.1)?)) {
                Ok(false) => Ok(Some(active.0)),
                Ok(true) => {
                    tracing::debug!("introspected token was revoked or its session ended");
                    Ok(None)
                }
                Err(error) => {
                    tracing::error!(%error, "failed to check the revoked access tokens");
                    Err(OAuthError::storage(&error))
                }
            }
        }
        TokenKind::RefreshToken => introspect_refresh_token(ctx, client, token),
    }
}

/// The client an access or ID token was issued to, by Dex's rule: the single
/// audience, else the authorized party (`azp`).
pub(crate) fn issued_to(claims: &Map<String, Value>) -> Option<String> {
    match claims.get("aud") {
        Some(Value::String(single)) => Some(single.clone()),
        Some(Value::Array(many)) if many.len() == 1 => many[0].as_str().map(str::to_owned),
        Some(Value::Array(many)) if many.len() > 1 => {
            claims.get("azp").and_then(Value::as_str).map(str::to_owned)
        }
        _ => None,
    }
}

/// The active token's description and its claims.
fn introspect_access_token(
    ctx: &IntrospectContext<'_>,
    client: &Client,
    token: &str,
) -> Option<(Introspection, Map<String, Value>)> {
    let claims = match ctx.verifier.verify(token) {
        Ok(claims) => claims,
        Err(error) => {
            tracing::debug!(%error, "introspected token does not verify");
            return None;
        }
    };
    let value = Value::Object(claims);
    if let Err(error) = check_token_claims(&value, &ctx.settings.issuer.url, ctx.now) {
        tracing::debug!(%error, "introspected token refused");
        return None;
    }
    let Value::Object(claims) = value else {
        return None;
    };
    let str_claim = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let aud: Vec<String> = match claims.get("aud") {
        Some(Value::String(single)) => vec![single.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let azp = str_claim("azp");
    let client_id = issued_to(&claims)?;
    if ctx.settings.client(&client_id).is_none() {
        tracing::debug!(client_id, "introspected token's client is not configured");
        return None;
    }
    if client.id != client_id && !aud.contains(&client.id) {
        tracing::debug!(
            caller = %client.id,
            client_id,
            "introspection of another client's token"
        );
        return None;
    }
    let iat = claims.get("iat").and_then(Value::as_i64).unwrap_or(0);
    let preferred_username = str_claim("preferred_username");
    let introspection = Introspection {
        active: true,
        client_id,
        sub: str_claim("sub"),
        exp: claims.get("exp").and_then(Value::as_i64),
        iat,
        nbf: iat,
        username: preferred_username.clone(),
        aud: Audience(aud),
        iss: ctx.settings.issuer.url.clone(),
        token_type: "Bearer".to_owned(),
        token_use: TokenKind::AccessToken.as_str().to_owned(),
        ext: IntrospectionExtra {
            azp,
            email: str_claim("email"),
            email_verified: claims.get("email_verified").and_then(Value::as_bool),
            groups: claims
                .get("groups")
                .and_then(Value::as_array)
                .map(|g| {
                    g.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            name: str_claim("name"),
            preferred_username,
            federated_claims: claims
                .get("federated_claims")
                .filter(|v| v.is_object())
                .cloned(),
        },
    };
    Some((introspection, claims))
}

fn introspect_refresh_token(
    ctx: &IntrospectContext<'_>,
    client: &Client,
    token: &str,
) -> Result<Option<Introspection>, OAuthError> {
    let wire = RefreshTokenWire::decode(token);
    let stored = match ctx.storage.get_refresh_token(&wire.id) {
        Ok(stored) => stored,
        Err(StorageError::NotFound) => return Ok(None),
        Err(error) => {
            tracing::error!(%error, "failed to get refresh token for introspection");
            return Err(OAuthError::storage(&error));
        }
    };
    let policy = &ctx.settings.expiry.refresh_tokens;
    let current = secret_matches(&wire.token, &stored.token);
    let recent_obsolete = secret_matches(&wire.token, &stored.obsolete_token)
        && reuse_allowed(policy, stored.last_used, ctx.now);
    if !(current || recent_obsolete) || refresh_expired(policy, &stored, ctx.now) {
        return Ok(None);
    }
    if stored.client_id != client.id {
        tracing::debug!(caller = %client.id, "introspection of another client's refresh token");
        return Ok(None);
    }
    // Beyond Dex HEAD (active until the next refresh attempt): a session-bound
    // token whose session is over is inactive now.
    let ended = super::session::bound_session_ended(
        ctx.storage,
        ctx.settings,
        &stored.client_id,
        &stored.session_id,
        ctx.now,
    )
    .map_err(|error| {
        tracing::error!(%error, "failed to read the browser session of a refresh token");
        OAuthError::storage(&error)
    })?;
    if ended {
        return Ok(None);
    }
    Ok(Some(describe_refresh_token(ctx.settings, &stored)))
}

fn describe_refresh_token(settings: &Settings, token: &RefreshToken) -> Introspection {
    let policy = &settings.expiry.refresh_tokens;
    let created = unix_seconds(token.created_at);
    let limits = [
        policy
            .absolute_lifetime
            .filter(|d| !d.is_zero())
            .and_then(|d| token.created_at.checked_add(d)),
        policy
            .valid_if_not_used_for
            .filter(|d| !d.is_zero())
            .and_then(|d| token.last_used.checked_add(d)),
    ];
    let exp = limits.into_iter().flatten().min().map(unix_seconds);
    let claims = &token.claims;
    Introspection {
        active: true,
        client_id: token.client_id.clone(),
        sub: encode_subject(&claims.user_id, &token.connector_id),
        exp,
        iat: created,
        nbf: created,
        username: claims.preferred_username.clone(),
        aud: refresh_audience(&token.client_id, &token.scopes),
        iss: settings.issuer.url.clone(),
        token_type: "Bearer".to_owned(),
        token_use: TokenKind::RefreshToken.as_str().to_owned(),
        ext: IntrospectionExtra {
            email: claims.email.clone(),
            email_verified: Some(claims.email_verified),
            groups: claims.groups.clone(),
            name: claims.username.clone(),
            preferred_username: claims.preferred_username.clone(),
            ..IntrospectionExtra::default()
        },
    }
}

/// The audience tokens minted from these scopes carry: the cross-client peers in
/// scope order, then the client itself unless already listed.
fn refresh_audience(client_id: &str, scopes: &[String]) -> Audience {
    let mut aud: Vec<String> = scopes
        .iter()
        .filter_map(|s| cross_client_peer(s).map(str::to_owned))
        .collect();
    if !aud.iter().any(|a| a == client_id) {
        aud.push(client_id.to_owned());
    }
    Audience(aud)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::config::settings::RefreshTokenPolicy;
    use crate::oidc::TokenSigner;
    use crate::oidc::mint::{Minter, TokenSubject};
    use crate::oidc::test_support::{TestSigner, jwt_payload, secs, settings, t0, user_claims};
    use crate::storage::memory::MemoryStorage;
    use serde_json::json;

    /// Accepts exactly the tokens the [`TestSigner`] made (recomputes the MAC).
    struct TestVerifier;

    impl TokenVerifier for TestVerifier {
        fn verify(&self, token: &str) -> Result<Map<String, Value>, String> {
            let payload = jwt_payload(token);
            let resigned = TestSigner::default().sign(&payload)?;
            if resigned == token {
                Ok(payload.as_object().cloned().unwrap_or_default())
            } else {
                Err("bad signature".to_owned())
            }
        }
    }

    fn client(id: &str) -> Client {
        settings().clients.into_iter().find(|c| c.id == id).unwrap()
    }

    fn access_token(client_id: &str, scopes: &[&str], now: SystemTime) -> String {
        let settings = settings();
        let signer = TestSigner::default();
        let claims = user_claims();
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        let subject = TokenSubject {
            client_id,
            claims: &claims,
            scopes: &scopes,
            connector_id: "mock",
            nonce: "n",
            auth_time: None,
            session_id: "",
        };
        Minter::new(&settings, &signer)
            .access_token(&subject, now)
            .unwrap()
            .token
    }

    fn refresh_token(created: SystemTime) -> RefreshToken {
        RefreshToken {
            id: "rid".to_owned(),
            token: "current".to_owned(),
            obsolete_token: "previous".to_owned(),
            created_at: created,
            last_used: created,
            client_id: "web".to_owned(),
            connector_id: "mock".to_owned(),
            connector_data: None,
            claims: user_claims(),
            scopes: vec!["openid".to_owned(), "offline_access".to_owned()],
            nonce: String::new(),
            auth_time: None,
            session_id: String::new(),
        }
    }

    fn wire(secret: &str) -> String {
        RefreshTokenWire {
            id: "rid".to_owned(),
            token: secret.to_owned(),
        }
        .encode()
    }

    fn run(
        settings: &Settings,
        storage: &MemoryStorage,
        caller: &str,
        token: &str,
        now: SystemTime,
    ) -> Option<Value> {
        let ctx = IntrospectContext {
            storage,
            settings,
            verifier: &TestVerifier,
            now,
        };
        introspect(&ctx, &client(caller), token)
            .unwrap()
            .map(|i| serde_json::to_value(i).unwrap())
    }

    #[test]
    fn classification_follows_dex() {
        let jwt = access_token("web", &["openid"], t0());
        assert_eq!(classify(&jwt), TokenKind::AccessToken);
        assert_eq!(classify(&wire("x")), TokenKind::RefreshToken);
        assert_eq!(classify("a.b.c"), TokenKind::RefreshToken);
        assert_eq!(classify(""), TokenKind::RefreshToken);
    }

    #[test]
    fn active_access_token_has_dexs_shape() {
        let settings = settings();
        let storage = MemoryStorage::new();
        let token = access_token("web", &["openid", "email", "profile", "groups"], t0());
        let got = run(&settings, &storage, "web", &token, t0() + secs(60)).unwrap();
        let iat = unix_seconds(t0());
        let payload = jwt_payload(&token);
        assert_eq!(
            got,
            json!({
                "active": true,
                "client_id": "web",
                "sub": payload["sub"],
                "exp": iat + 86_400,
                "iat": iat,
                "nbf": iat,
                "username": "kilgore",
                "aud": "web",
                "iss": "https://idp.example/dex",
                "token_type": "Bearer",
                "token_use": "access_token",
                "ext": {
                    "email": "kilgore@kilgore.trout",
                    "email_verified": true,
                    "groups": ["authors"],
                    "name": "Kilgore Trout",
                    "preferred_username": "kilgore"
                }
            })
        );
        // Member order is Dex's.
        let text = serde_json::to_string(
            &introspect(
                &IntrospectContext {
                    storage: &storage,
                    settings: &settings,
                    verifier: &TestVerifier,
                    now: t0(),
                },
                &client("web"),
                &token,
            )
            .unwrap()
            .unwrap(),
        )
        .unwrap();
        let order: Vec<usize> = [
            "\"active\"",
            "\"client_id\"",
            "\"sub\"",
            "\"exp\"",
            "\"iat\"",
            "\"nbf\"",
            "\"username\"",
            "\"aud\"",
            "\"iss\"",
            "\"token_type\"",
            "\"token_use\"",
            "\"ext\"",
        ]
        .iter()
        .map(|k| text.find(k).unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn minimal_access_token_still_has_an_ext_object() {
        let settings = settings();
        let storage = MemoryStorage::new();
        let token = access_token("web", &["openid"], t0());
        let got = run(&settings, &storage, "web", &token, t0()).unwrap();
        assert_eq!(got["ext"], json!({}));
        assert!(got.get("username").is_none());
    }

    #[test]
    fn expired_tampered_or_foreign_access_tokens_are_inactive() {
        let settings = settings();
        let storage = MemoryStorage::new();
        let token = access_token("web", &["openid"], t0());
        assert!(run(&settings, &storage, "web", &token, t0() + secs(86_401)).is_none());
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(run(&settings, &storage, "web", &tampered, t0()).is_none());
        assert!(run(&settings, &storage, "other", &token, t0()).is_none());
        let mut other_issuer = settings.clone();
        other_issuer.issuer.url = "https://elsewhere.example".to_owned();
        assert!(run(&other_issuer, &storage, "web", &token, t0()).is_none());
    }

    #[test]
    fn cross_client_token_is_visible_to_its_audience() {
        let settings = settings();
        let storage = MemoryStorage::new();
        let token = access_token("web", &["openid", "audience:server:client_id:peer"], t0());
        let got = run(&settings, &storage, "peer", &token, t0()).unwrap();
        assert_eq!(got["client_id"], "web");
        assert_eq!(got["aud"], json!(["peer", "web"]));
        assert_eq!(got["ext"]["azp"], "web");
        assert!(run(&settings, &storage, "web", &token, t0()).is_some());
        assert!(run(&settings, &storage, "other", &token, t0()).is_none());
    }

    #[test]
    fn active_refresh_token_without_lifetimes_has_no_exp() {
        let settings = settings();
        let storage = MemoryStorage::new();
        storage.create_refresh_token(&refresh_token(t0())).unwrap();
        let got = run(&settings, &storage, "web", &wire("current"), t0() + secs(5)).unwrap();
        let iat = unix_seconds(t0());
        assert_eq!(
            got,
            json!({
                "active": true,
                "client_id": "web",
                "sub": encode_subject("0-385-28089-0", "mock"),
                "iat": iat,
                "nbf": iat,
                "username": "kilgore",
                "aud": "web",
                "iss": "https://idp.example/dex",
                "token_type": "Bearer",
                "token_use": "refresh_token",
                "ext": {
                    "email": "kilgore@kilgore.trout",
                    "email_verified": true,
                    "groups": ["authors"],
                    "name": "Kilgore Trout",
                    "preferred_username": "kilgore"
                }
            })
        );
    }

    #[test]
    fn refresh_token_exp_is_the_earliest_configured_limit() {
        let mut settings = settings();
        settings.expiry.refresh_tokens = RefreshTokenPolicy {
            absolute_lifetime: Some(secs(3600)),
            ..RefreshTokenPolicy::default()
        };
        let storage = MemoryStorage::new();
        storage.create_refresh_token(&refresh_token(t0())).unwrap();
        let got = run(&settings, &storage, "web", &wire("current"), t0()).unwrap();
        assert_eq!(got["exp"], unix_seconds(t0()) + 3600);

        settings.expiry.refresh_tokens.valid_if_not_used_for = Some(secs(600));
        let got = run(&settings, &storage, "web", &wire("current"), t0()).unwrap();
        assert_eq!(got["exp"], unix_seconds(t0()) + 600);
        // Past the idle limit: inactive.
        assert!(
            run(
                &settings,
                &storage,
                "web",
                &wire("current"),
                t0() + secs(601)
            )
            .is_none()
        );
    }

    #[test]
    fn refresh_token_secret_rules_match_the_grant() {
        let mut settings = settings();
        let storage = MemoryStorage::new();
        storage.create_refresh_token(&refresh_token(t0())).unwrap();
        // Wrong secret, unknown id, obsolete secret without a reuse window.
        assert!(run(&settings, &storage, "web", &wire("nope"), t0()).is_none());
        let unknown = RefreshTokenWire {
            id: "other".to_owned(),
            token: "current".to_owned(),
        }
        .encode();
        assert!(run(&settings, &storage, "web", &unknown, t0()).is_none());
        assert!(run(&settings, &storage, "web", &wire("previous"), t0()).is_none());
        assert!(run(&settings, &storage, "web", "garbage", t0()).is_none());
        // Inside the reuse window the previous secret is still active.
        settings.expiry.refresh_tokens.reuse_interval = secs(3);
        assert!(
            run(
                &settings,
                &storage,
                "web",
                &wire("previous"),
                t0() + secs(2)
            )
            .is_some()
        );
        assert!(
            run(
                &settings,
                &storage,
                "web",
                &wire("previous"),
                t0() + secs(4)
            )
            .is_none()
        );
        // Another client never sees it.
        assert!(run(&settings, &storage, "other", &wire("current"), t0()).is_none());
    }

    #[test]
    fn refresh_audience_lists_peers_then_the_client() {
        let aud = refresh_audience(
            "web",
            &[
                "openid".to_owned(),
                "audience:server:client_id:peer".to_owned(),
            ],
        );
        assert_eq!(serde_json::to_value(&aud).unwrap(), json!(["peer", "web"]));
        let single = refresh_audience("web", &["openid".to_owned()]);
        assert_eq!(serde_json::to_value(&single).unwrap(), json!("web"));
    }
}
