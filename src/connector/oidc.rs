//! The generic `oidc` connector: log in through any OpenID Connect provider, with
//! Dex's config keys and claim rules (`connector/oidc/oidc.go`), on the
//! `openidconnect` crate.
//!
//! * Discovery happens on first use and is cached; a failure is not cached, so a
//!   provider that starts after oxidex is picked up later. [`CallbackConnector::prepare`]
//!   performs it; [`OidcConnector::login_url`] needs it done (it is synchronous).
//!   When opened inside a tokio runtime the connector starts discovery in the
//!   background right away.
//! * Every login uses PKCE (S256) and a nonce; both travel in the auth request's
//!   connector data from `login_url` to the callback.
//! * ID tokens are checked by `openidconnect` (signature against the provider's
//!   JWKS, `iss`, `aud`, `exp`, nonce). On a signature failure the provider is
//!   discovered again once (the upstream may have rotated its keys).
//! * The claims are read from the verified token's payload as a JSON object, then
//!   (with `getUserInfo`) overlaid with the userinfo answer, as Dex does.
//! * Refresh spends the upstream refresh token (once per token, shared by
//!   concurrent callers), verifies a returned ID token (no nonce), re-reads
//!   userinfo when configured, and returns the possibly rotated refresh token in
//!   `connector_data`. Without a new ID token or userinfo the previous claims are
//!   kept (Dex fails with "missing sub claim").
//! * Token exchange ([`TokenIdentityConnector`]): a subject ID token is verified
//!   against the provider's keys, issuer and expiry but not its audience (as
//!   Dex); an access token only through userinfo (`getUserInfo`). A connector
//!   configured with nothing but `issuer` does only this.

use std::str::FromStr as _;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use async_trait::async_trait;
use base64::Engine as _;
use http::StatusCode;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet,
    CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreTokenResponse,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, JwsSigningAlgorithm as _, Nonce,
    OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken,
    RequestTokenError, Scope, TokenResponse as _,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::body::{BodyError, CappedClient, MAX_UPSTREAM_BODY, read_capped};
use super::config::{ConfigReader, DecodeConfig, Problems, check_base_url};
use super::upstream::{self, SingleFlight, TlsOptions, oauth_error_text, quote_body};
use super::{
    CallbackConnector, ConnectorError, Identity, Scopes, SubjectTokenType, TokenIdentityConnector,
};
use crate::Clock;

pub const KIND: &str = "oidc";

const KEYS: &[&str] = &[
    "issuer",
    "clientID",
    "clientSecret",
    "redirectURI",
    "scopes",
    "getUserInfo",
    "insecureSkipEmailVerified",
    "insecureEnableGroups",
    "allowedGroups",
    "userIDKey",
    "userNameKey",
    "overrideClaimMapping",
    "claimMapping",
    "promptType",
    "acrValues",
    "basicAuthUnsupported",
    "pkceChallenge",
    "rootCAs",
    "insecureSkipVerify",
    // Dex keys oxidex refuses rather than silently ignoring.
    "hostedDomains",
    "issuerAlias",
    "providerDiscoveryOverrides",
    "claimModifications",
];
const CLAIM_MAPPING_KEYS: &[&str] = &["preferred_username", "email", "groups"];

type OidcClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

#[derive(Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    /// Without `openid` (always sent). Default `profile`, `email`.
    pub scopes: Vec<String>,
    pub get_user_info: bool,
    pub insecure_skip_email_verified: bool,
    pub insecure_enable_groups: bool,
    pub allowed_groups: Vec<String>,
    pub user_id_key: String,
    pub user_name_key: String,
    pub override_claim_mapping: bool,
    pub preferred_username_key: String,
    pub email_key: String,
    pub groups_key: String,
    /// `prompt` sent with offline access; `None` sends none. Default `consent`.
    pub prompt_type: Option<String>,
    pub acr_values: Vec<String>,
    pub basic_auth_unsupported: bool,
    pub tls: TlsOptions,
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl DecodeConfig for OidcConfig {
    const KEYS: &'static [&'static str] = KEYS;

    fn decode(r: &ConfigReader, p: &mut Problems, callback: Option<&str>) -> Self {
        let issuer = r.required(p, "issuer", "");
        if !issuer.is_empty() {
            p.take(check_base_url(&r.key_path("issuer"), &issuer));
        }
        // Dex's token-exchange setup names only the issuer: without clientID and
        // redirectURI the connector verifies tokens but cannot log anyone in.
        let blank = |key: &str| match r.raw(key) {
            None => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        let client = if ["clientID", "clientSecret", "redirectURI"]
            .into_iter()
            .all(blank)
        {
            super::config::OAuthClient {
                client_id: String::new(),
                client_secret: String::new(),
                redirect_uri: String::new(),
            }
        } else {
            r.oauth_client(p, callback, false)
        };
        let mut scopes = r.scopes(p, "scopes");
        if scopes.is_empty() {
            scopes = vec!["profile".to_owned(), "email".to_owned()];
        }
        scopes.retain(|s| s != "openid");
        let mapping = p.take(r.object("claimMapping", CLAIM_MAPPING_KEYS).map(Some));
        let (preferred_username_key, email_key, groups_key) = match &mapping {
            Some(m) => (
                p.take(m.string("preferred_username")),
                p.take(m.string("email")),
                p.take(m.string("groups")),
            ),
            None => Default::default(),
        };
        let prompt_type = if r.has("promptType") {
            Some(p.take(r.string("promptType"))).filter(|s| !s.is_empty())
        } else {
            Some("consent".to_owned())
        };
        let pkce = p.take(r.string("pkceChallenge"));
        if !pkce.is_empty() && pkce != "S256" {
            p.push(format!(
                "{}: {pkce:?} is not supported; oxidex always uses S256",
                r.key_path("pkceChallenge")
            ));
        }
        for key in [
            "hostedDomains",
            "issuerAlias",
            "providerDiscoveryOverrides",
            "claimModifications",
        ] {
            let set = match r.raw(key) {
                None => false,
                Some(Value::String(s)) => !s.is_empty(),
                Some(Value::Array(a)) => !a.is_empty(),
                Some(Value::Object(o)) => !o.is_empty(),
                Some(_) => true,
            };
            if set {
                p.push(format!(
                    "{}: not supported by oxidex's oidc connector",
                    r.key_path(key)
                ));
            }
        }
        let mut tls = TlsOptions {
            root_cas: Vec::new(),
            insecure_skip_verify: p.take(r.bool("insecureSkipVerify")),
        };
        for (i, entry) in p.take(r.strings("rootCAs")).iter().enumerate() {
            if entry.is_empty() {
                continue;
            }
            let key = format!("{}[{i}]", r.key_path("rootCAs"));
            if let Some(pem) = p.take(upstream::read_root_ca(&key, entry).map(Some)) {
                tls.root_cas.push(pem);
            }
        }
        OidcConfig {
            issuer,
            client_id: client.client_id,
            client_secret: client.client_secret,
            redirect_uri: client.redirect_uri,
            scopes,
            get_user_info: p.take(r.bool("getUserInfo")),
            insecure_skip_email_verified: p.take(r.bool("insecureSkipEmailVerified")),
            insecure_enable_groups: p.take(r.bool("insecureEnableGroups")),
            allowed_groups: p.take(r.strings("allowedGroups")),
            user_id_key: p.take(r.string("userIDKey")),
            user_name_key: p.take(r.string("userNameKey")),
            override_claim_mapping: p.take(r.bool("overrideClaimMapping")),
            preferred_username_key,
            email_key,
            groups_key,
            prompt_type,
            acr_values: p.take(r.strings("acrValues")),
            basic_auth_unsupported: p.take(r.bool("basicAuthUnsupported")),
            tls,
        }
    }
}

/// Connector data between `login_url` and the callback.
#[derive(Serialize, Deserialize)]
struct PendingLogin {
    #[serde(rename = "pkceVerifier")]
    pkce_verifier: String,
    nonce: String,
}

/// Connector data kept for refresh.
#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(rename = "refreshToken")]
    refresh_token: String,
}

/// What one upstream refresh produced (shared by concurrent callers).
#[derive(Clone)]
struct Refreshed {
    access_token: String,
    refresh_token: Option<String>,
    /// The verified ID token's claims, when the answer had one.
    id_claims: Option<Map<String, Value>>,
}

struct Discovered {
    client: OidcClient,
    userinfo_url: Option<String>,
    offline_access_supported: bool,
    /// For token exchange, which verifies without the client's audience.
    issuer: IssuerUrl,
    jwks: CoreJsonWebKeySet,
    /// The provider's ID token algorithms without `none` and the MAC ones (a
    /// subject token must carry the upstream's own signature).
    exchange_algs: Vec<CoreJwsSigningAlgorithm>,
    fetched_at: SystemTime,
}

/// A subject token with a bad signature makes the connector fetch the upstream's
/// keys again (they may have rotated) at most this often, so that callers cannot
/// turn forged tokens into requests to the upstream.
const EXCHANGE_REDISCOVERY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

pub struct OidcConnector {
    id: String,
    config: OidcConfig,
    http: reqwest::Client,
    clock: Clock,
    discovered: RwLock<Option<Arc<Discovered>>>,
    /// Serialises discovery so a burst of logins fetches the document once.
    discovering: tokio::sync::Mutex<()>,
    refreshes: SingleFlight<Refreshed>,
}

impl std::fmt::Debug for OidcConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConnector")
            .field("id", &self.id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OidcConnector {
    pub fn new(id: &str, config: OidcConfig, clock: Clock) -> Result<Self, ConnectorError> {
        let http =
            upstream::http_client(&config.tls).map_err(|message| ConnectorError::Config {
                id: id.to_owned(),
                kind: KIND.to_owned(),
                message,
            })?;
        Ok(OidcConnector {
            id: id.to_owned(),
            config,
            http,
            clock,
            discovered: RwLock::new(None),
            discovering: tokio::sync::Mutex::new(()),
            refreshes: SingleFlight::default(),
        })
    }

    /// The HTTP client for the `openidconnect` crate, reading bodies with the cap.
    fn capped(&self) -> CappedClient<'_> {
        CappedClient {
            http: &self.http,
            limit: MAX_UPSTREAM_BODY,
        }
    }

    /// Starts discovery in the background when a tokio runtime is running.
    pub fn warm_up(self: &Arc<Self>) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let this = Arc::clone(self);
            handle.spawn(async move {
                if let Err(err) = this.discover(false).await {
                    tracing::warn!(connector = %this.id, %err, "OIDC discovery failed; retrying at the next login");
                }
            });
        }
    }

    fn cached(&self) -> Option<Arc<Discovered>> {
        self.discovered.read().ok().and_then(|d| d.clone())
    }

    /// The discovered provider; `force` fetches again (new signing keys).
    async fn discover(&self, force: bool) -> Result<Arc<Discovered>, ConnectorError> {
        let before = self.cached();
        if let Some(d) = &before
            && !force
        {
            return Ok(Arc::clone(d));
        }
        let _guard = self.discovering.lock().await;
        // Someone else may have finished while we waited.
        if let Some(now) = self.cached()
            && (!force || !before.as_ref().is_some_and(|b| Arc::ptr_eq(b, &now)))
        {
            return Ok(now);
        }
        let fail = |message: String| {
            ConnectorError::Upstream(format!(
                "oidc: discovery of {:?} failed: {message}",
                self.config.issuer
            ))
        };
        let issuer = IssuerUrl::new(self.config.issuer.clone()).map_err(|e| fail(e.to_string()))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.capped())
            .await
            .map_err(|e| fail(error_chain(&e)))?;
        let userinfo_url = metadata.userinfo_endpoint().map(|u| u.url().to_string());
        let issuer = metadata.issuer().clone();
        let jwks = metadata.jwks().clone();
        let exchange_algs = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|alg| !alg.uses_shared_secret() && **alg != CoreJwsSigningAlgorithm::None)
            .cloned()
            .collect();
        let offline_access_supported = metadata
            .scopes_supported()
            .is_some_and(|s| s.iter().any(|s| s.as_str() == "offline_access"));
        let secret = (!self.config.client_secret.is_empty())
            .then(|| ClientSecret::new(self.config.client_secret.clone()));
        let mut client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            secret,
        );
        if !self.config.redirect_uri.is_empty() {
            let redirect = RedirectUrl::new(self.config.redirect_uri.clone())
                .map_err(|e| fail(e.to_string()))?;
            client = client.set_redirect_uri(redirect);
        }
        if self.config.basic_auth_unsupported {
            client = client.set_auth_type(AuthType::RequestBody);
        }
        let discovered = Arc::new(Discovered {
            client,
            userinfo_url,
            offline_access_supported,
            issuer,
            jwks,
            exchange_algs,
            fetched_at: (self.clock)(),
        });
        if let Ok(mut slot) = self.discovered.write() {
            *slot = Some(Arc::clone(&discovered));
        }
        Ok(discovered)
    }

    /// Verifies `id_token` (nonce when given) and returns its claims as JSON.
    /// A signature failure triggers one re-discovery (new upstream keys).
    async fn verify_id_token(
        &self,
        disc: &Arc<Discovered>,
        id_token: &CoreIdToken,
        nonce: Option<&Nonce>,
    ) -> Result<Map<String, Value>, String> {
        let check = |d: &Discovered| -> Result<(), openidconnect::ClaimsVerificationError> {
            let clock = Arc::clone(&self.clock);
            let verifier = d
                .client
                .id_token_verifier()
                .set_time_fn(move || chrono::DateTime::<chrono::Utc>::from(clock()));
            match nonce {
                Some(n) => id_token.claims(&verifier, n).map(|_| ()),
                None => id_token
                    .claims(&verifier, |_: Option<&Nonce>| Ok(()))
                    .map(|_| ()),
            }
        };
        match check(disc) {
            Ok(()) => {}
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(_)) => {
                let fresh = self.discover(true).await.map_err(|e| e.to_string())?;
                check(&fresh).map_err(|e| format!("failed to verify ID token: {e}"))?;
            }
            Err(e) => return Err(format!("failed to verify ID token: {e}")),
        }
        jwt_payload(&id_token.to_string())
    }

    /// A token-exchange subject ID token (Dex's `TokenIdentity`): signature
    /// against the upstream's keys (asymmetric algorithms it advertises), issuer
    /// and expiry; like Dex, not the audience, so any ID token this issuer signed
    /// is accepted. Returns its claims.
    async fn verify_subject_id_token(&self, token: &str) -> Result<Map<String, Value>, String> {
        let id_token = CoreIdToken::from_str(token)
            .map_err(|e| format!("the subject token is not a signed JWT: {e}"))?;
        let check = |d: &Discovered| -> Result<(), openidconnect::ClaimsVerificationError> {
            let clock = Arc::clone(&self.clock);
            let verifier = CoreIdTokenVerifier::new_public_client(
                ClientId::new(self.config.client_id.clone()),
                d.issuer.clone(),
                d.jwks.clone(),
            )
            .set_allowed_algs(d.exchange_algs.clone())
            .require_audience_match(false)
            .set_time_fn(move || chrono::DateTime::<chrono::Utc>::from(clock()));
            id_token
                .claims(&verifier, |_: Option<&Nonce>| Ok(()))
                .map(|_| ())
        };
        let disc = self.discover(false).await.map_err(|e| e.to_string())?;
        match check(&disc) {
            Ok(()) => {}
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(e))
                if !self.discovered_recently(&disc) =>
            {
                let fresh = self.discover(true).await.map_err(|e| e.to_string())?;
                check(&fresh).map_err(|again| {
                    format!(
                        "failed to verify the subject token: {again} (before re-discovery: {e})"
                    )
                })?;
            }
            Err(e) => return Err(format!("failed to verify the subject token: {e}")),
        }
        jwt_payload(token)
    }

    fn discovered_recently(&self, disc: &Discovered) -> bool {
        (self.clock)()
            .duration_since(disc.fetched_at)
            .is_ok_and(|age| age < EXCHANGE_REDISCOVERY_INTERVAL)
    }

    /// `GET userinfo` with the access token; its `sub` must be `expected_sub`
    /// when given.
    async fn user_info(
        &self,
        disc: &Discovered,
        access_token: &str,
        expected_sub: Option<&str>,
    ) -> Result<Map<String, Value>, String> {
        let url = disc
            .userinfo_url
            .as_deref()
            .ok_or("getUserInfo is set but the provider has no userinfo_endpoint")?;
        let response = self
            .http
            .get(url)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", e.without_url()))?;
        let status = response.status();
        let body = read_capped(response, MAX_UPSTREAM_BODY)
            .await
            .map_err(|e| match e {
                BodyError::Transport(e) => format!("GET {url}: {}", e.without_url()),
                too_large => format!("GET {url}: {too_large}"),
            })?;
        read_user_info(status, &body, url, expected_sub)
    }

    fn identity_from_claims(
        &self,
        claims: &Map<String, Value>,
    ) -> Result<Result<Identity, Vec<String>>, String> {
        identity_from_claims(&self.config, claims)
    }

    fn stored_data(&self, refresh_token: Option<&str>) -> Result<Option<Vec<u8>>, ConnectorError> {
        match refresh_token.filter(|t| !t.is_empty()) {
            None => Ok(None),
            Some(t) => serde_json::to_vec(&Stored {
                refresh_token: t.to_owned(),
            })
            .map(Some)
            .map_err(|e| {
                ConnectorError::Internal(format!("oidc: cannot encode connector data: {e}"))
            }),
        }
    }

    async fn refresh_upstream(
        &self,
        disc: &Arc<Discovered>,
        refresh_token: &str,
        now: SystemTime,
    ) -> Result<Refreshed, ConnectorError> {
        self.refreshes
            .run(refresh_token, now, || async {
                let rt = RefreshToken::new(refresh_token.to_owned());
                let request = disc.client.exchange_refresh_token(&rt).map_err(|e| {
                    ConnectorError::Upstream(format!("oidc: the provider has no token endpoint: {e}"))
                })?;
                let response: CoreTokenResponse =
                    request.request_async(&self.capped()).await.map_err(|e| match e {
                        RequestTokenError::ServerResponse(err) => ConnectorError::Refresh(format!(
                            "oidc: {} refused the upstream refresh token ({}); the user must log in again",
                            self.config.issuer,
                            oauth_error_text(
                                err.error().as_ref(),
                                err.error_description().map(String::as_str).unwrap_or("")
                            )
                        )),
                        other => ConnectorError::Upstream(format!(
                            "oidc: upstream refresh failed: {}",
                            error_chain(&other)
                        )),
                    })?;
                let id_claims = match response.id_token() {
                    None => None,
                    Some(token) => Some(
                        self.verify_id_token(disc, token, None)
                            .await
                            .map_err(|e| ConnectorError::Refresh(format!("oidc: {e}")))?,
                    ),
                };
                Ok(Refreshed {
                    access_token: response.access_token().secret().clone(),
                    refresh_token: response.refresh_token().map(|t| t.secret().clone()),
                    id_claims,
                })
            })
            .await
    }
}

/// Dex's claim rules (`createIdentity`): the identity from the ID token's claims
/// (overlaid with userinfo's); `Ok(Err(_))` when no group is allowed.
#[doc(hidden)]
pub fn identity_from_claims(
    c: &OidcConfig,
    claims: &Map<String, Value>,
) -> Result<Result<Identity, Vec<String>>, String> {
    let text = |key: &str| claims.get(key).and_then(Value::as_str).map(str::to_owned);
    let subject = text("sub").ok_or("missing \"sub\" claim")?;
    let name_key = if c.user_name_key.is_empty() {
        "name"
    } else {
        c.user_name_key.as_str()
    };
    let name = text(name_key).ok_or_else(|| format!("missing {name_key:?} claim"))?;

    let mut preferred_username = text("preferred_username");
    if (preferred_username.is_none() || c.override_claim_mapping)
        && !c.preferred_username_key.is_empty()
    {
        preferred_username = text(&c.preferred_username_key);
    }

    let has_email_scope = c.scopes.iter().any(|s| s == "email");
    let mut email_key = "email";
    let mut email = text(email_key);
    if (email.is_none() || c.override_claim_mapping) && !c.email_key.is_empty() {
        email_key = &c.email_key;
        email = text(email_key);
    }
    if email.is_none() && has_email_scope {
        return Err(format!("missing email claim, not found {email_key:?} key"));
    }

    let email_verified = match claims.get("email_verified") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s == "true" || s == "false" => s == "true",
        _ if c.insecure_skip_email_verified => true,
        _ if has_email_scope => return Err("missing \"email_verified\" claim".into()),
        _ => false,
    };

    let mut groups = Vec::new();
    if c.insecure_enable_groups {
        let mut groups_key = "groups";
        let mut value = claims.get(groups_key);
        if (value.is_none() || c.override_claim_mapping) && !c.groups_key.is_empty() {
            groups_key = &c.groups_key;
            value = claims.get(groups_key);
        }
        match value {
            None | Some(Value::Null) => {}
            Some(Value::String(g)) => groups.push(g.clone()),
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(g) => groups.push(g.clone()),
                        Value::Object(o) => {
                            if let Some(g) = o.get("name").and_then(Value::as_str) {
                                groups.push(g.to_owned());
                            }
                        }
                        _ => return Err(format!("malformed {groups_key:?} claim")),
                    }
                }
            }
            Some(_) => return Err(format!("malformed {groups_key:?} claim")),
        }
        if !c.allowed_groups.is_empty() {
            groups.retain(|g| c.allowed_groups.contains(g));
            if groups.is_empty() {
                return Ok(Err(Vec::new()));
            }
        }
    }

    let user_id = if c.user_id_key.is_empty() {
        subject
    } else {
        text(&c.user_id_key).ok_or_else(|| format!("not found {:?} claim", c.user_id_key))?
    };
    Ok(Ok(Identity {
        user_id,
        username: name,
        preferred_username: preferred_username.unwrap_or_default(),
        email: email.unwrap_or_default(),
        email_verified,
        groups,
        connector_data: None,
    }))
}

/// Reads a userinfo answer: a JSON object whose `sub` is `expected_sub` when given.
#[doc(hidden)]
pub fn read_user_info(
    status: StatusCode,
    body: &[u8],
    url: &str,
    expected_sub: Option<&str>,
) -> Result<Map<String, Value>, String> {
    if !status.is_success() {
        return Err(format!("GET {url}: {status}: {}", quote_body(body)));
    }
    let claims = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        _ => return Err(format!("GET {url}: the answer is not a JSON object")),
    };
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(expected) = expected_sub
        && sub != expected
    {
        return Err(format!(
            "userinfo is for subject {sub:?}, the ID token for {expected:?}"
        ));
    }
    Ok(claims)
}

/// The JSON payload of a compact JWS (already verified by the caller).
#[doc(hidden)]
pub fn jwt_payload(token: &str) -> Result<Map<String, Value>, String> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or("the ID token is not a compact JWS")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| format!("the ID token payload is not base64url: {e}"))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err("the ID token payload is not a JSON object".into()),
    }
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[async_trait]
impl TokenIdentityConnector for OidcConnector {
    /// Dex's `TokenIdentity` → `createIdentity`: an ID token is verified
    /// ([`OidcConnector::verify_subject_id_token`]); an access token is only
    /// accepted with `getUserInfo`, and then the upstream's userinfo answer is
    /// what vouches for it. With `getUserInfo`, userinfo is asked with the subject
    /// token either way (as Dex) and its claims overlay the ID token's (whose
    /// `sub` it must repeat: beyond Dex). The usual claim mapping follows.
    async fn token_identity(
        &self,
        kind: SubjectTokenType,
        token: &str,
    ) -> Result<Identity, ConnectorError> {
        let refused = |message: String| ConnectorError::Upstream(format!("oidc: {message}"));
        let mut claims = match kind {
            SubjectTokenType::IdToken => {
                self.verify_subject_id_token(token).await.map_err(refused)?
            }
            SubjectTokenType::AccessToken if self.config.get_user_info => Map::new(),
            SubjectTokenType::AccessToken => {
                return Err(refused(
                    "getUserInfo is required for access token exchange".into(),
                ));
            }
        };
        if self.config.get_user_info {
            let disc = self.discover(false).await?;
            let sub = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
            let info = self
                .user_info(&disc, token, sub.as_deref())
                .await
                .map_err(|e| refused(format!("error loading userinfo: {e}")))?;
            claims.extend(info);
        }
        match self.identity_from_claims(&claims).map_err(refused)? {
            Ok(identity) => Ok(identity),
            Err(_) => Err(ConnectorError::NotInRequiredGroups {
                user: claims
                    .get("sub")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            }),
        }
    }
}

#[async_trait]
impl CallbackConnector for OidcConnector {
    async fn prepare(&self) -> Result<(), ConnectorError> {
        self.discover(false).await.map(|_| ())
    }

    fn token_identity(&self) -> Option<&dyn TokenIdentityConnector> {
        Some(self)
    }

    fn login_url(
        &self,
        scopes: &Scopes,
        callback_url: &str,
        state: &str,
    ) -> Result<(String, Option<Vec<u8>>), ConnectorError> {
        if self.config.client_id.is_empty() {
            return Err(ConnectorError::Config {
                id: self.id.clone(),
                kind: KIND.to_owned(),
                message: "no clientID and redirectURI are configured: this connector only \
                          verifies tokens (token exchange) and cannot log users in"
                    .to_owned(),
            });
        }
        upstream::check_callback_url(&self.id, KIND, callback_url, &self.config.redirect_uri)?;
        let disc = self.cached().ok_or_else(|| {
            ConnectorError::Upstream(format!(
                "oidc: the provider {:?} has not been discovered yet (call prepare() first)",
                self.config.issuer
            ))
        })?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let nonce = Nonce::new_random();
        let state = state.to_owned();
        let nonce_for_url = nonce.clone();
        let mut request = disc.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(state),
            move || nonce_for_url,
        );
        let mut wanted = self.config.scopes.clone();
        if scopes.offline_access
            && disc.offline_access_supported
            && !wanted.iter().any(|s| s == "offline_access")
        {
            wanted.push("offline_access".to_owned());
        }
        for scope in wanted {
            request = request.add_scope(Scope::new(scope));
        }
        if !self.config.acr_values.is_empty() {
            request = request.add_extra_param("acr_values", self.config.acr_values.join(" "));
        }
        if scopes.offline_access {
            request = request.add_extra_param("access_type", "offline");
            if let Some(prompt) = &self.config.prompt_type {
                request = request.add_extra_param("prompt", prompt.clone());
            }
        }
        let (url, _, _) = request.set_pkce_challenge(challenge).url();
        let data = serde_json::to_vec(&PendingLogin {
            pkce_verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
        })
        .map_err(|e| ConnectorError::Internal(format!("oidc: cannot encode login state: {e}")))?;
        Ok((url.into(), Some(data)))
    }

    async fn handle_callback(
        &self,
        scopes: &Scopes,
        connector_data: Option<&[u8]>,
        query: &[(String, String)],
    ) -> Result<Identity, ConnectorError> {
        let upstream = |message: String| ConnectorError::Upstream(format!("oidc: {message}"));
        let error = upstream::query_value(query, "error");
        if !error.is_empty() {
            return Err(upstream(format!(
                "{} answered the login with an error: {}",
                self.config.issuer,
                oauth_error_text(error, upstream::query_value(query, "error_description"))
            )));
        }
        let code = upstream::query_value(query, "code");
        if code.is_empty() {
            return Err(upstream(
                "the callback carries neither a code nor an error".into(),
            ));
        }
        let pending: PendingLogin = connector_data
            .and_then(|d| serde_json::from_slice(d).ok())
            .ok_or_else(|| upstream("the login state (PKCE verifier, nonce) is missing".into()))?;
        let disc = self.discover(false).await?;
        let request = disc
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| upstream(format!("the provider has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier));
        let response: CoreTokenResponse =
            request
                .request_async(&self.capped())
                .await
                .map_err(|e| match e {
                    RequestTokenError::ServerResponse(err) => upstream(format!(
                        "failed to get token: {}",
                        oauth_error_text(
                            err.error().as_ref(),
                            err.error_description().map(String::as_str).unwrap_or("")
                        )
                    )),
                    other => upstream(format!("failed to get token: {}", error_chain(&other))),
                })?;
        let id_token = response
            .id_token()
            .ok_or_else(|| upstream("no id_token in token response".into()))?;
        let nonce = Nonce::new(pending.nonce);
        let mut claims = self
            .verify_id_token(&disc, id_token, Some(&nonce))
            .await
            .map_err(upstream)?;
        if self.config.get_user_info {
            let sub = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
            let info = self
                .user_info(&disc, response.access_token().secret(), sub.as_deref())
                .await
                .map_err(|e| upstream(format!("error loading userinfo: {e}")))?;
            claims.extend(info);
        }
        let mut identity = match self.identity_from_claims(&claims).map_err(upstream)? {
            Ok(identity) => identity,
            Err(_) => {
                return Err(ConnectorError::NotInRequiredGroups {
                    user: claims
                        .get("sub")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                });
            }
        };
        if scopes.offline_access {
            identity.connector_data =
                self.stored_data(response.refresh_token().map(|t| t.secret().as_str()))?;
        }
        Ok(identity)
    }

    fn supports_refresh(&self) -> bool {
        true
    }

    async fn refresh(
        &self,
        _scopes: &Scopes,
        identity: Identity,
    ) -> Result<Identity, ConnectorError> {
        let refresh = |message: String| ConnectorError::Refresh(format!("oidc: {message}"));
        let stored: Stored = identity
            .connector_data
            .as_deref()
            .filter(|d| !d.is_empty())
            .and_then(|d| serde_json::from_slice(d).ok())
            .filter(|s: &Stored| !s.refresh_token.is_empty())
            .ok_or_else(|| {
                refresh("no upstream refresh token is stored for this session; the user must log in again".into())
            })?;
        let disc = self.discover(false).await?;
        let now = (self.clock)();
        let fresh = self
            .refresh_upstream(&disc, &stored.refresh_token, now)
            .await?;
        let mut claims = fresh.id_claims.clone();
        if self.config.get_user_info {
            let sub = claims
                .as_ref()
                .and_then(|c| c.get("sub").and_then(Value::as_str).map(str::to_owned));
            let info = self
                .user_info(&disc, &fresh.access_token, sub.as_deref())
                .await
                .map_err(|e| refresh(format!("error loading userinfo: {e}")))?;
            claims.get_or_insert_with(Map::new).extend(info);
        }
        let mut updated = identity.clone();
        if let Some(claims) = claims {
            let found = match self.identity_from_claims(&claims).map_err(refresh)? {
                Ok(found) => found,
                Err(_) => {
                    return Err(refresh(format!(
                        "user {:?} is no longer in any of the allowed groups",
                        identity.user_id
                    )));
                }
            };
            if found.user_id != identity.user_id {
                return Err(refresh(format!(
                    "the upstream now identifies user {:?} instead of {:?}",
                    found.user_id, identity.user_id
                )));
            }
            updated.username = found.username;
            updated.preferred_username = found.preferred_username;
            updated.email = found.email;
            updated.email_verified = found.email_verified;
            if self.config.insecure_enable_groups {
                updated.groups = found.groups;
            }
        }
        let rotated = fresh
            .refresh_token
            .as_deref()
            .unwrap_or(&stored.refresh_token);
        updated.connector_data = self.stored_data(Some(rotated))?;
        Ok(updated)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod config_tests {
    use super::*;
    use serde_json::json;

    const CALLBACK: &str = "https://idp.example/callback";

    #[test]
    fn config_defaults_like_dex() {
        let (c, unknown) = OidcConfig::parse(
            "connectors[0].config",
            &json!({"issuer": "https://up.example", "clientID": "id", "redirectURI": CALLBACK,
                    "claimMapping": {"Preferred_Username": "login", "x": 1}}),
            CALLBACK,
        )
        .unwrap();
        assert_eq!(c.scopes, ["profile", "email"]);
        assert_eq!(c.prompt_type.as_deref(), Some("consent"));
        assert_eq!(c.preferred_username_key, "login");
        assert_eq!(unknown, ["connectors[0].config.claimMapping.x"]);
        let (c, _) = OidcConfig::parse(
            "p",
            &json!({"issuer": "https://up.example", "clientID": "id", "redirectURI": CALLBACK,
                    "scopes": ["openid", "groups"], "promptType": ""}),
            CALLBACK,
        )
        .unwrap();
        assert_eq!(
            c.scopes,
            ["groups"],
            "openid is always sent, not listed twice"
        );
        assert_eq!(c.prompt_type, None);
    }

    #[test]
    fn issuer_alone_makes_a_verify_only_connector() {
        let (c, _) = OidcConfig::parse(
            "connectors[0].config",
            &json!({"issuer": "https://token.actions.example"}),
            CALLBACK,
        )
        .unwrap();
        assert_eq!((c.client_id.as_str(), c.redirect_uri.as_str()), ("", ""));
        let conn = OidcConnector::new("ci", c, Arc::new(SystemTime::now)).unwrap();
        let e = conn
            .login_url(&Scopes::default(), CALLBACK, "state")
            .unwrap_err();
        assert!(e.to_string().contains("only verifies tokens"), "{e}");
        // Half a client registration is still an error.
        let errors = OidcConfig::parse(
            "c",
            &json!({"issuer": "https://up.example", "clientID": "id"}),
            CALLBACK,
        )
        .unwrap_err()
        .join("\n");
        assert!(errors.contains("c.redirectURI: required"), "{errors}");
    }

    #[test]
    fn config_errors_name_keys() {
        let errors = OidcConfig::parse(
            "connectors[3].config",
            &json!({"redirectURI": "https://elsewhere/callback", "pkceChallenge": "plain",
                    "hostedDomains": ["example.com"], "getUserInfo": "yes"}),
            CALLBACK,
        )
        .unwrap_err()
        .join("\n");
        for key in [
            "connectors[3].config.issuer: required",
            "connectors[3].config.clientID: required",
            "connectors[3].config.redirectURI:",
            "connectors[3].config.pkceChallenge:",
            "connectors[3].config.hostedDomains: not supported",
            "connectors[3].config.getUserInfo:",
        ] {
            assert!(errors.contains(key), "{key} missing in:\n{errors}");
        }
    }
}
