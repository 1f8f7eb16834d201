//! The `gitea` connector: log in through a Forgejo or Gitea instance with OAuth2,
//! as Dex's connector of the same name does (`connector/gitea/gitea.go`).
//!
//! Flow: the browser goes to `<baseURL>/login/oauth/authorize`; the callback's code
//! is exchanged at `/login/oauth/access_token` (client credentials in the form
//! body, which Forgejo reads first); the user comes from `GET /api/v1/user` and the
//! groups from `GET /api/v1/user/teams` (`org` and `org:team`).
//!
//! Refresh: the stored upstream access token is reused until 10 s before it
//! expires, then the upstream refresh token is spent. Forgejo ≥ 9 rotates refresh
//! tokens and accepts each once, so the new one is returned in the identity's
//! `connector_data` and the caller must store it (the offline session). Concurrent
//! refreshes that present the same upstream token share one upstream call
//! ([`SingleFlight`]).
//!
//! Differences from Dex, on purpose:
//! * config is validated when the connector opens (Dex fails only at login);
//! * a trailing `/` on `baseURL` is ignored;
//! * teams are read 50 per page (Forgejo's maximum) and paging stops at
//!   `X-Total-Count`, instead of 20 per page until an empty page;
//! * groups are not loaded for `loadAllGroups` when the client did not ask for the
//!   `groups` scope (they would be dropped from the tokens anyway);
//! * a refresh that cannot succeed upstream is [`ConnectorError::Refresh`]
//!   (clients get 400 `invalid_grant`, not Dex's 500, dexidp/dex#3971);
//! * extensions: `scopes`, `rootCA`, `insecureSkipVerify`.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::body::{BodyError, MAX_UPSTREAM_BODY, read_capped};
pub use super::config::Org;
use super::config::{ConfigReader, DecodeConfig, Problems, check_base_url};
use super::upstream::{
    self, SingleFlight, TlsOptions, oauth_error_text, parse_oauth_error, quote_body, unix_seconds,
};
use super::{CallbackConnector, ConnectorError, Identity, Scopes};
use crate::Clock;

pub const KIND: &str = "gitea";
pub const DEFAULT_BASE_URL: &str = "https://gitea.com";
/// Forgejo's and Gitea's `[api] MAX_RESPONSE_ITEMS` default; larger limits are clamped.
pub const TEAMS_PAGE_SIZE: usize = 50;
/// A stop for an upstream that never ends its team list (10 000 teams).
const MAX_TEAM_PAGES: u32 = 200;
/// An access token this close to its expiry is refreshed first (as golang.org/x/oauth2).
const EXPIRY_SKEW: Duration = Duration::from_secs(10);

const KEYS: &[&str] = &[
    "baseURL",
    "clientID",
    "clientSecret",
    "redirectURI",
    "orgs",
    "loadAllGroups",
    "useLoginAsID",
    "scopes",
    "rootCA",
    "insecureSkipVerify",
];
#[derive(Clone)]
pub struct GiteaConfig {
    /// Without a trailing slash.
    pub base_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub orgs: Vec<Org>,
    pub load_all_groups: bool,
    pub use_login_as_id: bool,
    /// Sent as `scope` on the authorize request; empty sends none (Dex). Forgejo
    /// then grants full API access; with granular scopes include `read:user`.
    pub scopes: Vec<String>,
    pub tls: TlsOptions,
}

impl std::fmt::Debug for GiteaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GiteaConfig")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .field("orgs", &self.orgs)
            .field("load_all_groups", &self.load_all_groups)
            .field("use_login_as_id", &self.use_login_as_id)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl DecodeConfig for GiteaConfig {
    const KEYS: &'static [&'static str] = KEYS;

    fn decode(r: &ConfigReader, p: &mut Problems, callback: Option<&str>) -> Self {
        let base = p.take(r.string("baseURL"));
        let base_url = if base.is_empty() {
            DEFAULT_BASE_URL.to_owned()
        } else {
            p.take(check_base_url(&r.key_path("baseURL"), &base))
        };
        let client = r.oauth_client(p, callback, true);
        let tls = TlsOptions {
            root_cas: r.root_ca(p, "rootCA").into_iter().collect(),
            insecure_skip_verify: p.take(r.bool("insecureSkipVerify")),
        };
        GiteaConfig {
            base_url,
            client_id: client.client_id,
            client_secret: client.client_secret,
            redirect_uri: client.redirect_uri,
            orgs: r.orgs(p),
            load_all_groups: p.take(r.bool("loadAllGroups")),
            use_login_as_id: p.take(r.bool("useLoginAsID")),
            scopes: r.scopes(p, "scopes"),
            tls,
        }
    }
}

/// What the connector keeps for refresh (the identity's `connector_data`), JSON.
///
/// `pub` (hidden) only for the fuzz targets, like the other types and
/// functions below that read upstream answers.
#[doc(hidden)]
#[derive(Clone, Serialize, Deserialize)]
pub struct UpstreamToken {
    #[serde(rename = "accessToken")]
    pub access_token: String,
    #[serde(rename = "refreshToken", default)]
    pub refresh_token: String,
    /// Unix seconds; 0 when the upstream gave no lifetime.
    #[serde(rename = "expiresAt", default)]
    pub expires_at: u64,
}

impl UpstreamToken {
    fn usable_at(&self, now: SystemTime) -> bool {
        self.expires_at == 0 || unix_seconds(now + EXPIRY_SKEW) < self.expires_at
    }
}

/// A token endpoint failure.
#[doc(hidden)]
pub enum TokenError {
    /// An OAuth2 error answer (`invalid_grant`, `unauthorized_client`, …).
    Rejected(String),
    /// Network, timeout, 5xx or an unreadable answer.
    Failed(String),
}

/// A `/api/v1` failure.
#[doc(hidden)]
pub struct ApiError {
    pub status: Option<u16>,
    pub message: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: String,
    #[serde(default)]
    expires_in: Option<Value>,
}

#[doc(hidden)]
#[derive(Deserialize)]
pub struct GiteaUser {
    id: i64,
    #[serde(default)]
    login: String,
    #[serde(default)]
    full_name: String,
    #[serde(default)]
    email: String,
}

#[doc(hidden)]
#[derive(Deserialize)]
pub struct Team {
    #[serde(default)]
    name: String,
    #[serde(default)]
    organization: Option<TeamOrg>,
}

#[derive(Deserialize)]
struct TeamOrg {
    #[serde(default)]
    username: String,
    #[serde(default)]
    name: String,
}

pub struct GiteaConnector {
    id: String,
    config: GiteaConfig,
    http: reqwest::Client,
    clock: Clock,
    refreshes: SingleFlight<UpstreamToken>,
}

impl std::fmt::Debug for GiteaConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GiteaConnector")
            .field("id", &self.id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl GiteaConnector {
    pub fn new(id: &str, config: GiteaConfig, clock: Clock) -> Result<Self, ConnectorError> {
        let http =
            upstream::http_client(&config.tls).map_err(|message| ConnectorError::Config {
                id: id.to_owned(),
                kind: KIND.to_owned(),
                message,
            })?;
        Ok(GiteaConnector {
            id: id.to_owned(),
            config,
            http,
            clock,
            refreshes: SingleFlight::default(),
        })
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.config.base_url)
    }

    /// Groups are needed to enforce `orgs`, or when all are wanted and asked for.
    fn groups_needed(&self, scopes: &Scopes) -> bool {
        !self.config.orgs.is_empty() || (self.config.load_all_groups && scopes.groups)
    }

    /// One token endpoint exchange, written by hand rather than through the
    /// `oauth2` 5 core that `openidconnect` brings (the `oidc` connector's path).
    /// Both would share the client, so the 1 MiB body cap ([`read_capped`]), the
    /// timeout and the redirect policy are the same either way; what differs is the
    /// reading. Of ten token answers fed to both (the three Forgejo 1.26 answers
    /// recorded in `checks/forgejo`, and seven others), the recorded three read the
    /// same, and five of the others read differently under `oauth2`: three that
    /// Dex's golang.org/x/oauth2 accepts are refused (a form-encoded answer,
    /// `expires_in` as a string, no `token_type`), and two lose the split between
    /// a refused grant and a failing upstream (an OAuth error in a 200 answer, and
    /// a 5xx whose body is an OAuth error: `oauth2` keeps no status). That split
    /// decides whether a refresh failure ends the user's session. `oauth2` would
    /// read nothing this code does not (tests: `token_response_tests`).
    async fn token_request(
        &self,
        grant: &[(&str, &str)],
        now: SystemTime,
    ) -> Result<UpstreamToken, TokenError> {
        let url = self.endpoint("/login/oauth/access_token");
        let mut form: Vec<(&str, &str)> = grant.to_vec();
        // client_secret_post: Forgejo reads body credentials first and does not
        // URL-decode Basic credentials.
        form.push(("client_id", &self.config.client_id));
        form.push(("client_secret", &self.config.client_secret));
        let response = self
            .http
            .post(&url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| TokenError::Failed(format!("POST {url}: {}", transport_error(e))))?;
        let status = response.status();
        let form_encoded = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let body = read_capped(response, MAX_UPSTREAM_BODY)
            .await
            .map_err(|e| TokenError::Failed(format!("POST {url}: {}", body_error(e))))?;
        read_token_response(status, form_encoded, &body, &url, now)
    }

    /// `GET /api/v1/...` with the user's token, decoded as `T`, plus `X-Total-Count`.
    async fn api_get<T: serde::de::DeserializeOwned>(
        &self,
        path_and_query: &str,
        access_token: &str,
    ) -> Result<(T, Option<u64>), ApiError> {
        let url = self.endpoint(path_and_query);
        let response = self
            .http
            .get(&url)
            .bearer_auth(access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| ApiError {
                status: None,
                message: format!("GET {url}: {}", transport_error(e)),
            })?;
        let status = response.status();
        let total = response
            .headers()
            .get("x-total-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = read_capped(response, MAX_UPSTREAM_BODY)
            .await
            .map_err(|e| ApiError {
                status: None,
                message: format!("GET {url}: {}", body_error(e)),
            })?;
        let value = read_api_response(status, &body, &url)?;
        Ok((value, total))
    }

    /// Every `org` and `org:team` of the user, first-seen order, no duplicates.
    async fn user_groups(&self, access_token: &str) -> Result<Vec<String>, ApiError> {
        let mut groups: Vec<String> = Vec::new();
        let mut seen_teams = 0u64;
        for page in 1..=MAX_TEAM_PAGES {
            let (teams, total): (Vec<Team>, Option<u64>) = self
                .api_get(
                    &format!("/api/v1/user/teams?page={page}&limit={TEAMS_PAGE_SIZE}"),
                    access_token,
                )
                .await?;
            if teams.is_empty() {
                return Ok(groups);
            }
            seen_teams += teams.len() as u64;
            add_team_groups(&mut groups, &teams);
            // Without X-Total-Count, go on until an empty page (the server may
            // clamp the page size below what was asked).
            if total.is_some_and(|total| seen_teams >= total) {
                return Ok(groups);
            }
        }
        Err(ApiError {
            status: None,
            message: format!(
                "GET {}: more than {MAX_TEAM_PAGES} pages of teams",
                self.endpoint("/api/v1/user/teams")
            ),
        })
    }

    /// Applies `orgs`: `None` when the user is in none of them.
    fn filter_groups(&self, groups: Vec<String>) -> Option<Vec<String>> {
        if self.config.orgs.is_empty() {
            return Some(groups);
        }
        let allowed = |g: &String| {
            self.config.orgs.iter().any(|org| {
                *g == org.name
                    || org.teams.iter().any(|team| {
                        g.strip_prefix(&org.name).and_then(|r| r.strip_prefix(':')) == Some(team)
                    })
            })
        };
        let kept: Vec<String> = groups.into_iter().filter(allowed).collect();
        (!kept.is_empty()).then_some(kept)
    }

    /// Reads the user (and groups when needed) into `identity`'s profile fields.
    /// `Ok(Err(login))` means the user is in none of the required orgs.
    async fn load_user(
        &self,
        scopes: &Scopes,
        access_token: &str,
    ) -> Result<Result<(GiteaUser, Option<Vec<String>>), String>, ApiError> {
        let (user, _): (GiteaUser, _) = self.api_get("/api/v1/user", access_token).await?;
        if !self.groups_needed(scopes) {
            return Ok(Ok((user, None)));
        }
        let groups = self.user_groups(access_token).await?;
        match self.filter_groups(groups) {
            Some(groups) => Ok(Ok((user, Some(groups)))),
            None => Ok(Err(user.login)),
        }
    }

    fn encode(&self, token: &UpstreamToken) -> Result<Vec<u8>, ConnectorError> {
        serde_json::to_vec(token).map_err(|e| {
            ConnectorError::Internal(format!("gitea: cannot encode connector data: {e}"))
        })
    }

    /// Spends the upstream refresh token (once per token, see [`SingleFlight`]).
    async fn refresh_upstream(
        &self,
        token: &UpstreamToken,
        now: SystemTime,
    ) -> Result<UpstreamToken, ConnectorError> {
        if token.refresh_token.is_empty() {
            return Err(ConnectorError::Refresh(
                "gitea: the upstream access token expired and the upstream gave no refresh token; the user must log in again".into(),
            ));
        }
        let refresh_token = token.refresh_token.clone();
        self.refreshes
            .run(&refresh_token, now, || async {
                let grant = [
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token.as_str()),
                ];
                match self.token_request(&grant, now).await {
                    Ok(mut fresh) => {
                        // An upstream that does not rotate may leave the field out.
                        if fresh.refresh_token.is_empty() {
                            fresh.refresh_token = refresh_token.clone();
                        }
                        Ok(fresh)
                    }
                    Err(TokenError::Rejected(reason)) => Err(ConnectorError::Refresh(format!(
                        "gitea: {} refused the upstream refresh token ({reason}); the user must log in again",
                        self.config.base_url
                    ))),
                    Err(TokenError::Failed(reason)) => Err(ConnectorError::Upstream(format!(
                        "gitea: upstream refresh failed: {reason}"
                    ))),
                }
            })
            .await
    }
}

fn body_error(e: BodyError) -> String {
    match e {
        BodyError::Transport(e) => transport_error(e),
        too_large @ BodyError::TooLarge { .. } => too_large.to_string(),
    }
}

fn transport_error(e: reqwest::Error) -> String {
    if e.is_timeout() {
        format!("timed out after {}s", upstream::UPSTREAM_TIMEOUT.as_secs())
    } else {
        // Without the URL: reqwest's Display repeats it.
        let e = e.without_url();
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}

#[async_trait]
impl CallbackConnector for GiteaConnector {
    fn login_url(
        &self,
        _scopes: &Scopes,
        callback_url: &str,
        state: &str,
    ) -> Result<(String, Option<Vec<u8>>), ConnectorError> {
        upstream::check_callback_url(&self.id, KIND, callback_url, &self.config.redirect_uri)?;
        let mut url = url::Url::parse(&self.endpoint("/login/oauth/authorize"))
            .map_err(|e| ConnectorError::Internal(format!("gitea: authorize URL: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &self.config.client_id)
                .append_pair("redirect_uri", &self.config.redirect_uri)
                .append_pair("response_type", "code");
            if !self.config.scopes.is_empty() {
                q.append_pair("scope", &self.config.scopes.join(" "));
            }
            q.append_pair("state", state);
        }
        Ok((url.into(), None))
    }

    async fn handle_callback(
        &self,
        scopes: &Scopes,
        _connector_data: Option<&[u8]>,
        query: &[(String, String)],
    ) -> Result<Identity, ConnectorError> {
        let error = upstream::query_value(query, "error");
        if !error.is_empty() {
            return Err(ConnectorError::Upstream(format!(
                "gitea: {} answered the login with an error: {}",
                self.config.base_url,
                oauth_error_text(error, upstream::query_value(query, "error_description"))
            )));
        }
        let code = upstream::query_value(query, "code");
        if code.is_empty() {
            return Err(ConnectorError::Upstream(
                "gitea: the callback carries neither a code nor an error".into(),
            ));
        }
        let now = (self.clock)();
        let grant = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.config.redirect_uri.as_str()),
        ];
        let token = self.token_request(&grant, now).await.map_err(|e| match e {
            TokenError::Rejected(reason) => {
                ConnectorError::Upstream(format!("gitea: failed to get token: {reason}"))
            }
            TokenError::Failed(reason) => {
                ConnectorError::Upstream(format!("gitea: failed to get token: {reason}"))
            }
        })?;
        let (user, groups) = match self.load_user(scopes, &token.access_token).await {
            Ok(Ok(found)) => found,
            Ok(Err(login)) => return Err(ConnectorError::NotInRequiredGroups { user: login }),
            Err(e) => return Err(ConnectorError::Upstream(format!("gitea: {}", e.message))),
        };
        let user_id = if self.config.use_login_as_id {
            user.login.clone()
        } else {
            user.id.to_string()
        };
        Ok(Identity {
            user_id,
            username: display_name(&user),
            preferred_username: user.login,
            email: user.email,
            email_verified: true,
            groups: groups.unwrap_or_default(),
            connector_data: if scopes.offline_access {
                Some(self.encode(&token)?)
            } else {
                None
            },
        })
    }

    fn supports_refresh(&self) -> bool {
        true
    }

    async fn refresh(
        &self,
        scopes: &Scopes,
        mut identity: Identity,
    ) -> Result<Identity, ConnectorError> {
        let data = identity
            .connector_data
            .as_deref()
            .filter(|d| !d.is_empty())
            .ok_or_else(|| {
                ConnectorError::Refresh(
                    "gitea: no upstream token is stored for this session; the user must log in again".into(),
                )
            })?;
        let mut token: UpstreamToken = serde_json::from_slice(data).map_err(|e| {
            ConnectorError::Refresh(format!(
                "gitea: the stored upstream token is unreadable: {e}"
            ))
        })?;
        let now = (self.clock)();
        let mut refreshed = false;
        if !token.usable_at(now) {
            token = self.refresh_upstream(&token, now).await?;
            refreshed = true;
        }
        let mut loaded = self.load_user(scopes, &token.access_token).await;
        // A revoked grant kills access tokens early; the refresh token says why.
        if let Err(ApiError {
            status: Some(401), ..
        }) = &loaded
            && !refreshed
        {
            token = self.refresh_upstream(&token, now).await?;
            loaded = self.load_user(scopes, &token.access_token).await;
        }
        let (user, groups) = match loaded {
            Ok(Ok(found)) => found,
            Ok(Err(login)) => {
                return Err(ConnectorError::Refresh(format!(
                    "gitea: user {login:?} is no longer a member of any required org or team"
                )));
            }
            Err(e) if matches!(e.status, Some(401 | 403)) => {
                return Err(ConnectorError::Refresh(format!(
                    "gitea: the upstream refused the user's token: {}",
                    e.message
                )));
            }
            Err(e) => return Err(ConnectorError::Upstream(format!("gitea: {}", e.message))),
        };
        if !self.config.use_login_as_id && user.id.to_string() != identity.user_id {
            return Err(ConnectorError::Refresh(format!(
                "gitea: the upstream token now belongs to user id {} instead of {}",
                user.id, identity.user_id
            )));
        }
        identity.username = display_name(&user);
        identity.preferred_username = user.login;
        identity.email = user.email;
        if let Some(groups) = groups {
            identity.groups = groups;
        }
        identity.connector_data = Some(self.encode(&token)?);
        Ok(identity)
    }
}

/// Reads a token endpoint's answer (JSON, or form-encoded when the content type
/// says so). Pure, so the fuzz target `gitea_response` runs exactly this.
#[doc(hidden)]
pub fn read_token_response(
    status: StatusCode,
    form_encoded: bool,
    body: &[u8],
    url: &str,
    now: SystemTime,
) -> Result<UpstreamToken, TokenError> {
    if !status.is_success() {
        return Err(match parse_oauth_error(body) {
            Some((error, description)) if status.is_client_error() => {
                TokenError::Rejected(oauth_error_text(&error, &description))
            }
            _ => TokenError::Failed(format!("POST {url}: {status}: {}", quote_body(body))),
        });
    }
    let parsed: TokenResponse = if form_encoded {
        let pairs: std::collections::HashMap<String, String> =
            form_urlencoded::parse(body).into_owned().collect();
        if let Some(error) = pairs.get("error") {
            let description = pairs.get("error_description").cloned().unwrap_or_default();
            return Err(TokenError::Rejected(oauth_error_text(error, &description)));
        }
        TokenResponse {
            access_token: pairs.get("access_token").cloned().unwrap_or_default(),
            refresh_token: pairs.get("refresh_token").cloned().unwrap_or_default(),
            expires_in: pairs.get("expires_in").map(|s| Value::String(s.clone())),
        }
    } else {
        if let Some((error, description)) = parse_oauth_error(body) {
            return Err(TokenError::Rejected(oauth_error_text(&error, &description)));
        }
        serde_json::from_slice(body).map_err(|e| {
            TokenError::Failed(format!("POST {url}: unreadable token response: {e}"))
        })?
    };
    if parsed.access_token.is_empty() {
        return Err(TokenError::Failed(format!(
            "POST {url}: the token response has no access_token"
        )));
    }
    let expires_in = match &parsed.expires_in {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    };
    Ok(UpstreamToken {
        access_token: parsed.access_token,
        refresh_token: parsed.refresh_token,
        expires_at: if expires_in == 0 {
            0
        } else {
            unix_seconds(now).saturating_add(expires_in)
        },
    })
}

/// Reads a `/api/v1` answer: the decoded value, or the error with its status.
#[doc(hidden)]
pub fn read_api_response<T: serde::de::DeserializeOwned>(
    status: StatusCode,
    body: &[u8],
    url: &str,
) -> Result<T, ApiError> {
    if !status.is_success() {
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| quote_body(body));
        return Err(ApiError {
            status: Some(status.as_u16()),
            message: format!("GET {url}: {status}: {message}"),
        });
    }
    let value = serde_json::from_slice(body).map_err(|e| ApiError {
        status: None,
        message: format!("GET {url}: unreadable answer: {e}"),
    })?;
    Ok(value)
}

/// Adds each team's `org` and `org:team` to `groups`, first-seen order, no
/// duplicates; a team without an organization gives nothing.
#[doc(hidden)]
pub fn add_team_groups(groups: &mut Vec<String>, teams: &[Team]) {
    for team in teams {
        let Some(org) = team
            .organization
            .as_ref()
            .map(|o| {
                if o.username.is_empty() {
                    &o.name
                } else {
                    &o.username
                }
            })
            .filter(|o| !o.is_empty())
        else {
            continue;
        };
        for group in [org.clone(), format!("{org}:{}", team.name)] {
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
    }
}

/// Dex: the full name, else the email; oxidex adds the login as a last resort.
#[doc(hidden)]
pub fn display_name(user: &GiteaUser) -> String {
    [&user.full_name, &user.email, &user.login]
        .into_iter()
        .find(|s| !s.is_empty())
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod config_tests {
    use super::*;
    use serde_json::json;

    const CALLBACK: &str = "https://idp.example/dex/callback";
    const PATH: &str = "connectors[1].config";

    #[test]
    fn config_defaults_and_case_insensitive_keys() {
        let (c, unknown) = GiteaConfig::parse(
            PATH,
            &json!({"ClientId": "id", "clientSecret": "s", "redirectURI": CALLBACK,
                    "orgs": [{"Name": "infra", "teams": ["ops"]}], "loadallgroups": true,
                    "bogus": 1}),
            CALLBACK,
        )
        .unwrap();
        assert_eq!(c.base_url, DEFAULT_BASE_URL);
        assert_eq!(c.client_id, "id");
        assert!(c.load_all_groups && !c.use_login_as_id && c.scopes.is_empty());
        assert_eq!(
            c.orgs,
            [Org {
                name: "infra".into(),
                teams: vec!["ops".into()]
            }]
        );
        assert_eq!(unknown, ["connectors[1].config.bogus"]);
        assert!(!format!("{c:?}").contains("\"s\""), "Debug shows no secret");
    }

    #[test]
    fn config_errors_name_every_bad_key() {
        let errors = GiteaConfig::parse(
            PATH,
            &json!({"baseURL": "git.example.com", "redirectURI": "https://idp.example/dex/callback/gitea",
                    "orgs": [{"teams": ["x"]}], "scopes": ["read:user read:organization"],
                    "rootCA": "/nonexistent.pem"}),
            CALLBACK,
        )
        .unwrap_err();
        let all = errors.join("\n");
        for key in [
            "connectors[1].config.baseURL:",
            "connectors[1].config.clientID: required",
            "connectors[1].config.clientSecret: required",
            "connectors[1].config.redirectURI:",
            "connectors[1].config.orgs[0].name: required",
            "connectors[1].config.scopes:",
            "connectors[1].config.rootCA:",
        ] {
            assert!(all.contains(key), "{key} missing in:\n{all}");
        }
        assert!(
            all.contains(CALLBACK),
            "the message says what redirectURI must be: {all}"
        );
    }
}

/// The token answers that `oauth2` 5 (the core `openidconnect` brings) would read
/// differently, see [`GiteaConnector::token_request`]: each is read here as Dex's
/// golang.org/x/oauth2 reads it.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod token_response_tests {
    use super::*;

    const URL: &str = "https://forge.example/login/oauth/access_token";

    fn read(status: u16, form_encoded: bool, body: &str) -> Result<UpstreamToken, TokenError> {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        read_token_response(
            StatusCode::from_u16(status).unwrap(),
            form_encoded,
            body.as_bytes(),
            URL,
            now,
        )
    }

    #[test]
    fn answers_oauth2_would_refuse_are_tokens() {
        for (form_encoded, body) in [
            (
                true,
                "access_token=a&token_type=bearer&expires_in=60&refresh_token=r",
            ),
            (
                false,
                r#"{"access_token":"a","expires_in":"60","refresh_token":"r"}"#,
            ),
            (
                false,
                r#"{"access_token":"a","expires_in":60,"refresh_token":"r"}"#,
            ),
        ] {
            let Ok(token) = read(200, form_encoded, body) else {
                panic!("{body} refused");
            };
            assert_eq!(
                (token.access_token.as_str(), token.refresh_token.as_str()),
                ("a", "r")
            );
            assert_eq!(token.expires_at, 1_700_000_060, "{body}");
        }
    }

    #[test]
    fn oauth_errors_are_rejections_only_when_the_status_says_so() {
        let error = r#"{"error":"invalid_grant","error_description":"gone"}"#;
        // In a 200 answer (GitHub does this) and in a 400: the grant is refused.
        for status in [200, 400] {
            assert!(
                matches!(read(status, false, error), Err(TokenError::Rejected(r)) if r == "invalid_grant: gone"),
                "{status}"
            );
        }
        // A 5xx is the upstream failing, whatever its body says: not a refused grant
        // (which would end the user's session).
        assert!(matches!(
            read(500, false, error),
            Err(TokenError::Failed(_))
        ));
        assert!(matches!(
            read(503, false, "<html>"),
            Err(TokenError::Failed(_))
        ));
    }
}
