//! The `github` connector: log in through GitHub or GitHub Enterprise Server with
//! OAuth2, as Dex's connector of the same name does.
//!
//! Flow: the browser goes to `<host>/login/oauth/authorize` with scope `user:email`
//! (plus `read:org` when orgs are configured or the client asked for `groups`); the
//! code is exchanged at `/login/oauth/access_token` (HTTP Basic client auth, form or
//! JSON answer); the user comes from `GET /user` (and `/user/emails` when `/user` has
//! no email or `preferredEmailDomain` is set), groups from `/orgs/{org}/members/
//! {login}`, `/user/teams` and `/user/orgs`, following `Link: rel="next"` pages.
//! GitHub OAuth-app tokens do not expire, so refresh re-reads the user (and groups)
//! with the stored token; a revoked token or a user who left the orgs ends it.
//!
//! Differences from Dex, on purpose:
//! * `redirectURI` is checked when the connector opens (Dex: at every login);
//! * a user in none of `orgs` gets the 403 "not a member" page (Dex: 500);
//! * pages are bounded ([`MAX_PAGES`] per list, 100 items each); the `next` link is
//!   followed only on the same origin as the API;
//! * a refresh GitHub refuses (401, or the user left the orgs) is `invalid_grant`
//!   (Dex: 500), and refresh uses the `rootCA` client too (as Dex HEAD);
//! * `X-GitHub-Api-Version: 2022-11-28` is sent (as Dex HEAD).

use super::body::{MAX_UPSTREAM_BODY, read_capped};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use super::config::Org;
use super::config::{ConfigReader, DecodeConfig, Problems};
use super::upstream::{self, TlsOptions, oauth_error_text, parse_oauth_error, quote_body};
use super::{CallbackConnector, ConnectorError, Identity, Scopes};

pub const KIND: &str = "github";
/// Pages read of one list before the login fails (100 items per page).
pub const MAX_PAGES: usize = 50;
const PER_PAGE: usize = 100;
const API_VERSION: &str = "2022-11-28";

const KEYS: &[&str] = &[
    "clientID",
    "clientSecret",
    "redirectURI",
    "org",
    "orgs",
    "loadAllGroups",
    "teamNameField",
    "useLoginAsID",
    "preferredEmailDomain",
    "hostName",
    "rootCA",
];
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TeamNameField {
    #[default]
    Name,
    Slug,
    Both,
}

#[derive(Clone)]
pub struct GithubConfig {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub orgs: Vec<Org>,
    /// The deprecated single `org`: bare team names, never restricts login (as Dex).
    pub org: String,
    pub load_all_groups: bool,
    pub team_name_field: TeamNameField,
    pub use_login_as_id: bool,
    pub preferred_email_domain: String,
    /// Set for GitHub Enterprise Server: every email counts as verified.
    pub enterprise: bool,
    /// `https://github.com` or `https://<hostName>`: `/login/oauth/...` lives here.
    pub oauth_base: String,
    /// `https://api.github.com` or `https://<hostName>/api/v3`.
    pub api_base: String,
    pub tls: TlsOptions,
}

impl std::fmt::Debug for GithubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubConfig")
            .field("client_id", &self.client_id)
            .field("orgs", &self.orgs)
            .field("org", &self.org)
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

impl DecodeConfig for GithubConfig {
    const KEYS: &'static [&'static str] = KEYS;

    fn decode(r: &ConfigReader, p: &mut Problems, callback: Option<&str>) -> Self {
        let client = r.oauth_client(p, callback, true);
        let orgs = r.orgs(p);
        let org = p.take(r.string("org"));
        if !org.is_empty() && !orgs.is_empty() {
            p.push(format!(
                "{}: cannot use both 'org' and 'orgs' fields simultaneously",
                r.key_path("org")
            ));
        } else if !org.is_empty() {
            tracing::warn!(
                "github: legacy field 'org' being used. Switch to the newer 'orgs' field structure \
                 (note: 'org' does not restrict who can log in)"
            );
        }
        let host_name = p.take(r.string("hostName"));
        if host_name.contains('/') {
            p.push(format!(
                "{}: invalid hostname: hostname cannot contain `/`",
                r.key_path("hostName")
            ));
        }
        let mut tls = TlsOptions::default();
        if !host_name.is_empty() {
            tls.root_cas.extend(r.root_ca(p, "rootCA"));
        } else if !p.take(r.string("rootCA")).is_empty() {
            p.push(format!(
                "{}: Host name field required for a root certificate file",
                r.key_path("rootCA")
            ));
        }
        let team_name_field = match p.take(r.string("teamNameField")).as_str() {
            "" | "name" => TeamNameField::Name,
            "slug" => TeamNameField::Slug,
            "both" => TeamNameField::Both,
            other => {
                p.push(format!(
                    "{}: unsupported team name field value `{other}` (name, slug or both)",
                    r.key_path("teamNameField")
                ));
                TeamNameField::Name
            }
        };
        let preferred_email_domain = p.take(r.string("preferredEmailDomain"));
        if preferred_email_domain.ends_with('*') {
            p.push(format!(
                "{}: invalid PreferredEmailDomain: glob pattern cannot end with \"*\"",
                r.key_path("preferredEmailDomain")
            ));
        }
        let (oauth_base, api_base) = if host_name.is_empty() {
            (
                "https://github.com".to_owned(),
                "https://api.github.com".to_owned(),
            )
        } else {
            (
                format!("https://{host_name}"),
                format!("https://{host_name}/api/v3"),
            )
        };
        GithubConfig {
            client_id: client.client_id,
            client_secret: client.client_secret,
            redirect_uri: client.redirect_uri,
            orgs,
            org,
            load_all_groups: p.take(r.bool("loadAllGroups")),
            team_name_field,
            use_login_as_id: p.take(r.bool("useLoginAsID")),
            preferred_email_domain,
            enterprise: !host_name.is_empty(),
            oauth_base,
            api_base,
            tls,
        }
    }
}

/// `*` matches exactly one label, case-sensitively, anywhere but last (Dex).
pub fn is_preferred_email_domain(pattern: &str, domain: &str) -> bool {
    if pattern == domain {
        return true;
    }
    let want: Vec<&str> = pattern.split('.').collect();
    let got: Vec<&str> = domain.split('.').collect();
    want.len() == got.len() && want.iter().zip(&got).all(|(w, g)| *w == "*" || w == g)
}

#[derive(Serialize, Deserialize)]
struct StoredToken {
    #[serde(rename = "accessToken", default)]
    access_token: String,
}

#[derive(Deserialize)]
struct User {
    login: String,
    id: i64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
struct Email {
    email: String,
    #[serde(default)]
    primary: bool,
    #[serde(default)]
    verified: bool,
}

#[derive(Deserialize)]
struct OrgEntry {
    login: String,
}

#[derive(Deserialize)]
struct Team {
    #[serde(default)]
    name: String,
    #[serde(default)]
    slug: String,
    organization: Option<OrgEntry>,
}

/// Why reading from GitHub failed.
enum ApiError {
    /// 401: the token was revoked (refresh must end).
    Unauthorized(String),
    Other(String),
}

impl ApiError {
    fn text(self) -> String {
        match self {
            ApiError::Unauthorized(m) | ApiError::Other(m) => m,
        }
    }
}

pub struct GithubConnector {
    id: String,
    config: GithubConfig,
    http: reqwest::Client,
}

impl std::fmt::Debug for GithubConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubConnector")
            .field("id", &self.id)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The outcome of loading a user: `Err(login)` when they are in none of `orgs`.
type Loaded = Result<Identity, String>;

impl GithubConnector {
    pub fn new(id: &str, config: GithubConfig) -> Result<Self, ConnectorError> {
        let http =
            upstream::http_client(&config.tls).map_err(|message| ConnectorError::Config {
                id: id.to_owned(),
                kind: KIND.to_owned(),
                message,
            })?;
        Ok(GithubConnector {
            id: id.to_owned(),
            config,
            http,
        })
    }

    /// `orgs`/`org` set, or the client asked for groups: `read:org` and groups.
    fn groups_required(&self, scopes: &Scopes) -> bool {
        !self.config.orgs.is_empty() || !self.config.org.is_empty() || scopes.groups
    }

    async fn exchange(&self, code: &str) -> Result<String, String> {
        let url = format!("{}/login/oauth/access_token", self.config.oauth_base);
        let response = self
            .http
            .post(&url)
            .basic_auth(
                form_escape(&self.config.client_id),
                Some(form_escape(&self.config.client_secret)),
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", self.config.redirect_uri.as_str()),
            ])
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = response.status();
        let form_encoded = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let body = read_capped(response, MAX_UPSTREAM_BODY)
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let pairs: std::collections::HashMap<String, String> = if form_encoded {
            form_urlencoded::parse(&body).into_owned().collect()
        } else {
            if let Some((error, description)) = parse_oauth_error(&body) {
                return Err(oauth_error_text(&error, &description));
            }
            match serde_json::from_slice::<Value>(&body) {
                Ok(Value::Object(map)) => map
                    .into_iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned())))
                    .collect(),
                _ => {
                    return Err(format!("POST {url}: {status}: {}", quote_body(&body)));
                }
            }
        };
        if let Some(error) = pairs.get("error") {
            let description = pairs.get("error_description").cloned().unwrap_or_default();
            return Err(oauth_error_text(error, &description));
        }
        match pairs.get("access_token") {
            Some(token) if status.is_success() && !token.is_empty() => Ok(token.clone()),
            _ => Err(format!(
                "POST {url}: {status}: no access_token in the answer"
            )),
        }
    }

    async fn get(&self, url: &str, token: &str) -> Result<reqwest::Response, ApiError> {
        self.http
            .get(url)
            .bearer_auth(token)
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            .send()
            .await
            .map_err(|e| ApiError::Other(format!("GET {url}: {e}")))
    }

    /// One JSON document; non-200 is an error quoting the status and body.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        token: &str,
    ) -> Result<(T, Option<String>), ApiError> {
        let response = self.get(url, token).await?;
        let status = response.status();
        let next = next_link(response.headers());
        let body = read_capped(response, MAX_UPSTREAM_BODY)
            .await
            .map_err(|e| ApiError::Other(format!("GET {url}: {e}")))?;
        if status != reqwest::StatusCode::OK {
            let message = format!("GET {url}: {status}: {}", quote_body(&body));
            return Err(if status == reqwest::StatusCode::UNAUTHORIZED {
                ApiError::Unauthorized(message)
            } else {
                ApiError::Other(message)
            });
        }
        let value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::Other(format!("GET {url}: failed to decode response: {e}")))?;
        Ok((value, next))
    }

    /// Every page of a list (`null` pages count as empty), following `rel="next"`
    /// links on the API's own origin, at most [`MAX_PAGES`].
    async fn get_list<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        token: &str,
    ) -> Result<Vec<T>, ApiError> {
        let mut url = format!("{}{path}?per_page={PER_PAGE}", self.config.api_base);
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let (page, next): (Option<Vec<T>>, _) = self.get_json(&url, token).await?;
            out.extend(page.unwrap_or_default());
            match next {
                Some(next) if same_origin(&next, &self.config.api_base) => url = next,
                Some(next) => {
                    return Err(ApiError::Other(format!(
                        "GET {url}: the next page {next:?} is not on {}",
                        self.config.api_base
                    )));
                }
                None => return Ok(out),
            }
        }
        Err(ApiError::Other(format!(
            "GET {}{path}: more than {MAX_PAGES} pages",
            self.config.api_base
        )))
    }

    async fn email(&self, user: &User, token: &str) -> Result<String, ApiError> {
        let public = user.email.clone().unwrap_or_default();
        let preferred_domain = &self.config.preferred_email_domain;
        if !public.is_empty() && preferred_domain.is_empty() {
            return Ok(public);
        }
        let emails: Vec<Email> = self.get_list("/user/emails", token).await?;
        let mut primary = None;
        let mut preferred = None;
        for e in emails {
            let verified = e.verified || self.config.enterprise;
            if verified && e.primary {
                primary = Some(e.email.clone());
            }
            if !preferred_domain.is_empty() {
                let Some((_, domain)) = e.email.split_once('@') else {
                    return Err(ApiError::Other(
                        "github: invalid format email is detected".into(),
                    ));
                };
                if verified
                    && preferred.is_none()
                    && is_preferred_email_domain(preferred_domain, domain)
                {
                    preferred = Some(e.email.clone());
                }
            }
        }
        preferred.or(primary).ok_or_else(|| {
            ApiError::Other(
                "github: user has no verified, primary email or preferred-domain email".into(),
            )
        })
    }

    fn team_names(&self, team: &Team) -> Vec<String> {
        match self.config.team_name_field {
            TeamNameField::Name => vec![team.name.clone()],
            TeamNameField::Slug => vec![team.slug.clone()],
            TeamNameField::Both => vec![team.name.clone(), team.slug.clone()],
        }
    }

    async fn teams_in(&self, org: &str, token: &str) -> Result<Vec<String>, ApiError> {
        let teams: Vec<Team> = self.get_list("/user/teams", token).await?;
        Ok(teams
            .iter()
            .filter(|t| t.organization.as_ref().is_some_and(|o| o.login == org))
            .flat_map(|t| self.team_names(t))
            .collect())
    }

    async fn is_member(&self, org: &str, login: &str, token: &str) -> Result<bool, ApiError> {
        let url = format!(
            "{}/orgs/{}/members/{}",
            self.config.api_base,
            path_segment(org),
            path_segment(login)
        );
        let response = self.get(&url, token).await?;
        match response.status().as_u16() {
            204 => Ok(true),
            302 | 404 => Ok(false),
            401 => Err(ApiError::Unauthorized(format!("GET {url}: 401"))),
            _ => Err(ApiError::Other(format!(
                "github: unexpected return status: {:?}",
                response.status().to_string()
            ))),
        }
    }

    /// Dex's groups; `Ok(None)` when `orgs` is set and the user is in none of them.
    async fn groups(&self, login: &str, token: &str) -> Result<Option<Vec<String>>, ApiError> {
        if !self.config.orgs.is_empty() {
            let mut groups = Vec::new();
            let mut authorised = false;
            for org in &self.config.orgs {
                if !self.is_member(&org.name, login, token).await? {
                    continue;
                }
                let teams = self.teams_in(&org.name, token).await?;
                if org.teams.is_empty() {
                    authorised = true;
                }
                groups.extend(
                    teams
                        .into_iter()
                        .filter(|t| org.teams.is_empty() || org.teams.contains(t))
                        .map(|t| format!("{}:{t}", org.name)),
                );
            }
            return Ok((authorised || !groups.is_empty()).then_some(groups));
        }
        if !self.config.org.is_empty() {
            return self.teams_in(&self.config.org, token).await.map(Some);
        }
        if self.config.load_all_groups {
            let orgs: Vec<OrgEntry> = self.get_list("/user/orgs", token).await?;
            let teams: Vec<Team> = self.get_list("/user/teams", token).await?;
            let mut groups = Vec::new();
            for org in orgs {
                groups.push(org.login.clone());
                for team in teams.iter().filter(|t| {
                    t.organization
                        .as_ref()
                        .is_some_and(|o| o.login == org.login)
                }) {
                    for name in self.team_names(team) {
                        groups.push(format!("{}:{name}", org.login));
                    }
                }
            }
            return Ok(Some(groups));
        }
        Ok(Some(Vec::new()))
    }

    async fn load(&self, scopes: &Scopes, token: &str) -> Result<Loaded, ApiError> {
        let url = format!("{}/user", self.config.api_base);
        let (user, _): (User, _) = self.get_json(&url, token).await?;
        let email = self.email(&user, token).await?;
        let mut identity = Identity {
            user_id: if self.config.use_login_as_id {
                user.login.clone()
            } else {
                user.id.to_string()
            },
            username: user
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| user.login.clone()),
            preferred_username: user.login.clone(),
            email,
            email_verified: true,
            groups: Vec::new(),
            connector_data: None,
        };
        if self.groups_required(scopes) {
            match self.groups(&user.login, token).await? {
                Some(groups) => identity.groups = groups,
                None => return Ok(Err(user.login)),
            }
        }
        Ok(Ok(identity))
    }
}

/// Basic credentials are form-encoded first (RFC 6749 §2.3.1), as golang.org/x/oauth2.
fn form_escape(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn path_segment(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn same_origin(url: &str, base: &str) -> bool {
    match (url::Url::parse(url), url::Url::parse(base)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    }
}

/// The `rel="next"` target of a `Link` header (RFC 8288).
fn next_link(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|part| {
            let (target, params) = part.trim().split_once(';')?;
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            params
                .split(';')
                .any(|p| {
                    let p = p.trim().replace(' ', "");
                    p == "rel=\"next\"" || p == "rel=next"
                })
                .then(|| target.to_owned())
        })
}

#[async_trait]
impl CallbackConnector for GithubConnector {
    fn login_url(
        &self,
        scopes: &Scopes,
        callback_url: &str,
        state: &str,
    ) -> Result<(String, Option<Vec<u8>>), ConnectorError> {
        upstream::check_callback_url(&self.id, KIND, callback_url, &self.config.redirect_uri)?;
        let scope = if self.groups_required(scopes) {
            "user:email read:org"
        } else {
            "user:email"
        };
        let mut url = url::Url::parse(&format!("{}/login/oauth/authorize", self.config.oauth_base))
            .map_err(|e| ConnectorError::Internal(format!("github: authorize URL: {e}")))?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.config.redirect_uri)
            .append_pair("response_type", "code")
            .append_pair("scope", scope)
            .append_pair("state", state);
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
                "github: {}",
                oauth_error_text(error, upstream::query_value(query, "error_description"))
            )));
        }
        let code = upstream::query_value(query, "code");
        if code.is_empty() {
            return Err(ConnectorError::Upstream(
                "github: the callback carries neither a code nor an error".into(),
            ));
        }
        let token = self
            .exchange(code)
            .await
            .map_err(|e| ConnectorError::Upstream(format!("github: failed to get token: {e}")))?;
        let mut identity = match self.load(scopes, &token).await {
            Ok(Ok(identity)) => identity,
            Ok(Err(login)) => return Err(ConnectorError::NotInRequiredGroups { user: login }),
            Err(e) => {
                return Err(ConnectorError::Upstream(format!(
                    "github: get user: {}",
                    e.text()
                )));
            }
        };
        if scopes.offline_access {
            identity.connector_data = Some(
                serde_json::to_vec(&StoredToken {
                    access_token: token,
                })
                .map_err(|e| ConnectorError::Internal(format!("marshal connector data: {e}")))?,
            );
        }
        Ok(identity)
    }

    fn supports_refresh(&self) -> bool {
        true
    }

    async fn refresh(
        &self,
        scopes: &Scopes,
        identity: Identity,
    ) -> Result<Identity, ConnectorError> {
        let stored: StoredToken = match identity.connector_data.as_deref() {
            None | Some([]) => {
                return Err(ConnectorError::Refresh(
                    "no upstream access token found".into(),
                ));
            }
            Some(raw) => serde_json::from_slice(raw).map_err(|e| {
                ConnectorError::Refresh(format!("github: unmarshal access token: {e}"))
            })?,
        };
        if stored.access_token.is_empty() {
            return Err(ConnectorError::Refresh(
                "no upstream access token found".into(),
            ));
        }
        match self.load(scopes, &stored.access_token).await {
            Ok(Ok(fresh)) => Ok(Identity {
                user_id: identity.user_id,
                email_verified: identity.email_verified,
                username: fresh.username,
                preferred_username: fresh.preferred_username,
                email: fresh.email,
                groups: if self.groups_required(scopes) {
                    fresh.groups
                } else {
                    identity.groups
                },
                connector_data: identity.connector_data,
            }),
            Ok(Err(login)) => Err(ConnectorError::Refresh(format!(
                "github: user {login:?} not in required orgs or teams"
            ))),
            Err(ApiError::Unauthorized(m)) => {
                Err(ConnectorError::Refresh(format!("github: get user: {m}")))
            }
            Err(ApiError::Other(m)) => {
                Err(ConnectorError::Upstream(format!("github: get user: {m}")))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    //! Against an in-process fake GitHub built from GitHub's documented REST shapes
    //! (github.com cannot be reached from the build machines).
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use axum::extract::{Path, Query, State};
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use serde_json::json;

    use super::*;

    const CALLBACK: &str = "https://idp.example/dex/callback";

    #[derive(Default)]
    struct Fake {
        base: String,
        /// token → (login, id, name, public email)
        users: HashMap<String, Value>,
        emails: Vec<Value>,
        orgs: Vec<Value>,
        /// `/user/teams`, served two per page with `Link` headers.
        teams: Vec<Value>,
        /// (org, login) pairs that are members.
        members: Vec<(String, String)>,
        /// Paths requested, for assertions.
        seen: Vec<String>,
        form_token_answer: bool,
    }

    type Shared = Arc<Mutex<Fake>>;

    fn bearer(headers: &HeaderMap) -> String {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("")
            .to_owned()
    }

    fn unauthorized() -> Response {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"message": "Bad credentials"})),
        )
            .into_response()
    }

    async fn token(State(fake): State<Shared>, headers: HeaderMap, body: String) -> Response {
        let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let expected = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                "client%2Bid:s%26cret"
            )
        );
        let fake = fake.lock().unwrap();
        if basic != expected
            || form.get("grant_type").map(String::as_str) != Some("authorization_code")
            || form.get("redirect_uri").map(String::as_str) != Some(CALLBACK)
            || !fake
                .users
                .contains_key(form.get("code").map(String::as_str).unwrap_or(""))
        {
            return (
                StatusCode::OK,
                axum::Json(json!({"error": "bad_verification_code",
                "error_description": "The code passed is incorrect or expired."})),
            )
                .into_response();
        }
        // The code doubles as the access token.
        let code = form["code"].clone();
        if fake.form_token_answer {
            (
                [(header::CONTENT_TYPE, "application/x-www-form-urlencoded")],
                format!("access_token={code}&scope=read%3Aorg%2Cuser%3Aemail&token_type=bearer"),
            )
                .into_response()
        } else {
            axum::Json(json!({"access_token": code, "token_type": "bearer", "scope": "read:org,user:email"}))
                .into_response()
        }
    }

    async fn user(State(fake): State<Shared>, headers: HeaderMap) -> Response {
        let mut fake = fake.lock().unwrap();
        fake.seen.push("/user".into());
        match fake.users.get(&bearer(&headers)) {
            Some(user) => axum::Json(user.clone()).into_response(),
            None => unauthorized(),
        }
    }

    /// A list served `per` items a page, with GitHub's `Link` header.
    fn paged(fake: &Fake, path: &str, items: &[Value], page: usize, per: usize) -> Response {
        let pages = items.len().div_ceil(per).max(1);
        let chunk: Vec<Value> = items
            .iter()
            .skip((page - 1) * per)
            .take(per)
            .cloned()
            .collect();
        let mut headers = HeaderMap::new();
        if page < pages {
            let link = format!(
                "<{base}{path}?per_page=100&page={n}>; rel=\"next\", <{base}{path}?per_page=100&page={pages}>; rel=\"last\"",
                base = fake.base,
                n = page + 1
            );
            headers.insert(header::LINK, link.parse().unwrap());
        }
        (headers, axum::Json(chunk)).into_response()
    }

    fn page_of(q: &HashMap<String, String>) -> usize {
        q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1)
    }

    async fn emails(
        State(fake): State<Shared>,
        headers: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> Response {
        let mut fake = fake.lock().unwrap();
        fake.seen.push("/user/emails".into());
        if !fake.users.contains_key(&bearer(&headers)) {
            return unauthorized();
        }
        let items = fake.emails.clone();
        paged(&fake, "/user/emails", &items, page_of(&q), 2)
    }

    async fn orgs(
        State(fake): State<Shared>,
        headers: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> Response {
        let mut fake = fake.lock().unwrap();
        fake.seen.push("/user/orgs".into());
        if !fake.users.contains_key(&bearer(&headers)) {
            return unauthorized();
        }
        let items = fake.orgs.clone();
        paged(&fake, "/user/orgs", &items, page_of(&q), 2)
    }

    async fn teams(
        State(fake): State<Shared>,
        headers: HeaderMap,
        Query(q): Query<HashMap<String, String>>,
    ) -> Response {
        let mut fake = fake.lock().unwrap();
        fake.seen.push("/user/teams".into());
        if !fake.users.contains_key(&bearer(&headers)) {
            return unauthorized();
        }
        let items = fake.teams.clone();
        paged(&fake, "/user/teams", &items, page_of(&q), 2)
    }

    async fn membership(
        State(fake): State<Shared>,
        headers: HeaderMap,
        Path((org, login)): Path<(String, String)>,
    ) -> Response {
        let mut fake = fake.lock().unwrap();
        fake.seen.push(format!("/orgs/{org}/members/{login}"));
        if !fake.users.contains_key(&bearer(&headers)) {
            return unauthorized();
        }
        if fake.members.contains(&(org.clone(), login.clone())) {
            StatusCode::NO_CONTENT.into_response()
        } else if org == "redirecting" {
            (
                StatusCode::FOUND,
                [(
                    header::LOCATION,
                    format!("/orgs/{org}/public_members/{login}"),
                )],
            )
                .into_response()
        } else {
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"message": "Not Found"})),
            )
                .into_response()
        }
    }

    async fn start_fake(fake: Fake) -> Shared {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Mutex::new(Fake { base, ..fake }));
        let app = axum::Router::new()
            .route("/login/oauth/access_token", post(token))
            .route("/user", get(user))
            .route("/user/emails", get(emails))
            .route("/user/orgs", get(orgs))
            .route("/user/teams", get(teams))
            .route("/orgs/{org}/members/{login}", get(membership))
            .with_state(Arc::clone(&shared));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        shared
    }

    fn octocat() -> Fake {
        Fake {
            users: HashMap::from([(
                "tok-octo".to_owned(),
                json!({"login": "octocat", "id": 12345678_i64, "name": null, "email": null}),
            )]),
            emails: vec![
                json!({"email": "octo@unverified.example", "primary": false, "verified": false, "visibility": null}),
                json!({"email": "octo@github.example", "primary": true, "verified": true, "visibility": "private"}),
                json!({"email": "octo@sub.corp.example", "primary": false, "verified": true, "visibility": null}),
            ],
            orgs: vec![
                json!({"login": "org-1"}),
                json!({"login": "org-2"}),
                json!({"login": "org-3"}),
            ],
            teams: vec![
                json!({"name": "Team 1", "slug": "team-1", "organization": {"login": "org-1"}}),
                json!({"name": "Team 2", "slug": "team-2", "organization": {"login": "org-1"}}),
                json!({"name": "Team 4", "slug": "team-4", "organization": {"login": "org-2"}}),
                json!({"name": "Hidden", "slug": "hidden", "organization": {"login": "org-9"}}),
            ],
            members: vec![("org-1".into(), "octocat".into())],
            ..Fake::default()
        }
    }

    async fn connector(fake: &Shared, config: Value) -> GithubConnector {
        let mut base =
            json!({"clientID": "client+id", "clientSecret": "s&cret", "redirectURI": CALLBACK});
        for (k, v) in config.as_object().unwrap() {
            base[k] = v.clone();
        }
        let (mut config, _) = GithubConfig::parse("connectors[0].config", &base, CALLBACK).unwrap();
        let root = fake.lock().unwrap().base.clone();
        config.oauth_base = root.clone();
        config.api_base = root;
        GithubConnector::new("gh", config).unwrap()
    }

    fn callback(code: &str) -> Vec<(String, String)> {
        vec![("code".into(), code.into()), ("state".into(), "s".into())]
    }

    const ALL: Scopes = Scopes {
        offline_access: true,
        groups: true,
    };

    #[tokio::test]
    async fn login_maps_identity_as_dex_and_stores_the_token() {
        let fake = start_fake(octocat()).await;
        let c = connector(&fake, json!({})).await;
        let id = c
            .handle_callback(&ALL, None, &callback("tok-octo"))
            .await
            .unwrap();
        assert_eq!(id.user_id, "12345678");
        assert_eq!(id.username, "octocat", "name falls back to login");
        assert_eq!(id.preferred_username, "octocat");
        assert_eq!(id.email, "octo@github.example", "the verified primary");
        assert!(id.email_verified);
        assert!(
            id.groups.is_empty(),
            "no orgs and no loadAllGroups: no groups"
        );
        let data: Value = serde_json::from_slice(id.connector_data.as_deref().unwrap()).unwrap();
        assert_eq!(data, json!({"accessToken": "tok-octo"}));

        // useLoginAsID, a public email (no /user/emails call), form-encoded token answer.
        fake.lock().unwrap().users.insert(
            "tok-named".into(),
            json!({"login": "named", "id": 7, "name": "Named Person", "email": "public@x.example"}),
        );
        fake.lock().unwrap().form_token_answer = true;
        fake.lock().unwrap().seen.clear();
        let c = connector(&fake, json!({"useLoginAsID": true})).await;
        let id = c
            .handle_callback(&Scopes::default(), None, &callback("tok-named"))
            .await
            .unwrap();
        assert_eq!(
            (id.user_id.as_str(), id.username.as_str()),
            ("named", "Named Person")
        );
        assert_eq!(id.email, "public@x.example");
        assert!(
            id.connector_data.is_none(),
            "no offline_access: no token kept"
        );
        assert!(
            !fake
                .lock()
                .unwrap()
                .seen
                .contains(&"/user/emails".to_owned())
        );
    }

    #[tokio::test]
    async fn preferred_email_domain_and_its_glob() {
        let fake = start_fake(octocat()).await;
        let c = connector(&fake, json!({"preferredEmailDomain": "*.corp.example"})).await;
        let id = c
            .handle_callback(&ALL, None, &callback("tok-octo"))
            .await
            .unwrap();
        assert_eq!(id.email, "octo@sub.corp.example");
        let c = connector(&fake, json!({"preferredEmailDomain": "corp.example"})).await;
        let id = c
            .handle_callback(&ALL, None, &callback("tok-octo"))
            .await
            .unwrap();
        assert_eq!(id.email, "octo@github.example", "falls back to the primary");

        fake.lock()
            .unwrap()
            .emails
            .retain(|e| e["primary"] == json!(false));
        let e = c
            .handle_callback(&ALL, None, &callback("tok-octo"))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("github: user has no verified, primary email or preferred-domain email"),
            "{e}"
        );

        assert!(is_preferred_email_domain("example.com", "example.com"));
        assert!(is_preferred_email_domain("*.example.com", "a.example.com"));
        assert!(!is_preferred_email_domain("*.example.com", "example.com"));
        assert!(!is_preferred_email_domain(
            "*.example.com",
            "a.b.example.com"
        ));
        assert!(is_preferred_email_domain(
            "*.*.example.com",
            "a.b.example.com"
        ));
        assert!(!is_preferred_email_domain("*.example.com", "a.Example.com"));
    }

    #[tokio::test]
    async fn load_all_groups_pages_and_team_name_field() {
        let fake = start_fake(octocat()).await;
        let c = connector(&fake, json!({"loadAllGroups": true})).await;
        let id = c
            .handle_callback(&ALL, None, &callback("tok-octo"))
            .await
            .unwrap();
        // Org order from /user/orgs (2 pages), teams from /user/teams (2 pages);
        // teams of orgs not in /user/orgs are dropped.
        assert_eq!(
            id.groups,
            [
                "org-1",
                "org-1:Team 1",
                "org-1:Team 2",
                "org-2",
                "org-2:Team 4",
                "org-3"
            ]
        );
        let c = connector(
            &fake,
            json!({"loadAllGroups": true, "teamNameField": "both"}),
        )
        .await;
        let id = c
            .handle_callback(&ALL, None, &callback("tok-octo"))
            .await
            .unwrap();
        assert_eq!(&id.groups[..3], ["org-1", "org-1:Team 1", "org-1:team-1"]);
        let c = connector(
            &fake,
            json!({"loadAllGroups": true, "teamNameField": "slug"}),
        )
        .await;
        let id = c
            .handle_callback(&ALL, None, &callback("tok-octo"))
            .await
            .unwrap();
        assert_eq!(&id.groups[..2], ["org-1", "org-1:team-1"]);
        // Without the groups scope nothing is loaded.
        let id = c
            .handle_callback(&Scopes::default(), None, &callback("tok-octo"))
            .await
            .unwrap();
        assert!(id.groups.is_empty());
    }

    #[tokio::test]
    async fn orgs_require_membership_and_filter_teams() {
        let fake = start_fake(octocat()).await;
        let c = connector(
            &fake,
            json!({"orgs": [{"name": "org-1", "teams": ["Team 2"]}, {"name": "org-2"}]}),
        )
        .await;
        // Enforced even without the groups scope; the org itself is not a group.
        let id = c
            .handle_callback(&Scopes::default(), None, &callback("tok-octo"))
            .await
            .unwrap();
        assert_eq!(id.groups, ["org-1:Team 2"]);
        let seen = fake.lock().unwrap().seen.clone();
        assert!(
            seen.contains(&"/orgs/org-1/members/octocat".to_owned()),
            "{seen:?}"
        );
        assert!(
            seen.contains(&"/orgs/org-2/members/octocat".to_owned()),
            "{seen:?}"
        );

        // In org-1 but in none of its listed teams, not in org-2 / redirecting: refused.
        let c = connector(&fake, json!({"orgs": [{"name": "org-1", "teams": ["Nope"]}, {"name": "org-2"}, {"name": "redirecting"}]})).await;
        let e = c
            .handle_callback(&ALL, None, &callback("tok-octo"))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ConnectorError::NotInRequiredGroups { ref user } if user == "octocat"),
            "{e}"
        );

        // A team-less configured org authorises with zero groups.
        fake.lock().unwrap().teams.clear();
        let c = connector(&fake, json!({"orgs": [{"name": "org-1"}]})).await;
        let id = c
            .handle_callback(&ALL, None, &callback("tok-octo"))
            .await
            .unwrap();
        assert!(id.groups.is_empty());
    }

    #[tokio::test]
    async fn legacy_org_gives_bare_team_names_and_never_refuses() {
        let fake = start_fake(octocat()).await;
        let c = connector(&fake, json!({"org": "org-1"})).await;
        let id = c
            .handle_callback(&ALL, None, &callback("tok-octo"))
            .await
            .unwrap();
        assert_eq!(id.groups, ["Team 1", "Team 2"]);
        let c = connector(&fake, json!({"org": "elsewhere"})).await;
        let id = c
            .handle_callback(&ALL, None, &callback("tok-octo"))
            .await
            .unwrap();
        assert!(id.groups.is_empty());
    }

    #[tokio::test]
    async fn errors_from_github_fail_the_login() {
        let fake = start_fake(octocat()).await;
        let c = connector(&fake, json!({})).await;
        let e = c
            .handle_callback(&ALL, None, &callback("bad-code"))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("failed to get token: bad_verification_code"),
            "{e}"
        );
        let q = vec![
            ("error".to_owned(), "access_denied".to_owned()),
            ("error_description".to_owned(), "x".to_owned()),
        ];
        let e = c.handle_callback(&ALL, None, &q).await.unwrap_err();
        assert!(e.to_string().contains("access_denied: x"), "{e}");
        // Wrong callback URL at login.
        assert!(c.login_url(&ALL, "https://other/callback", "s").is_err());
    }

    #[tokio::test]
    async fn login_url_asks_for_read_org_only_when_needed() {
        let fake = start_fake(octocat()).await;
        let c = connector(&fake, json!({})).await;
        let (url, data) = c.login_url(&Scopes::default(), CALLBACK, "st").unwrap();
        assert!(data.is_none());
        let url = url::Url::parse(&url).unwrap();
        let q: HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["scope"], "user:email");
        assert_eq!(q["state"], "st");
        assert_eq!(q["client_id"], "client+id");
        let (url, _) = c.login_url(&ALL, CALLBACK, "st").unwrap();
        assert!(url.contains("scope=user%3Aemail+read%3Aorg"), "{url}");
    }

    #[tokio::test]
    async fn refresh_rereads_the_user_and_ends_when_github_says_so() {
        let fake = start_fake(octocat()).await;
        let c = connector(&fake, json!({"orgs": [{"name": "org-1"}]})).await;
        let id = c
            .handle_callback(&ALL, None, &callback("tok-octo"))
            .await
            .unwrap();
        fake.lock().unwrap().users.get_mut("tok-octo").unwrap()["name"] = json!("Mona Lisa");
        let fresh = c.refresh(&ALL, id.clone()).await.unwrap();
        assert_eq!(fresh.username, "Mona Lisa");
        assert_eq!(fresh.user_id, id.user_id);
        assert_eq!(fresh.connector_data, id.connector_data);

        // Left the org: refresh refused.
        fake.lock().unwrap().members.clear();
        let e = c.refresh(&ALL, id.clone()).await.unwrap_err();
        assert!(matches!(e, ConnectorError::Refresh(_)), "{e}");
        // Token revoked: refused.
        fake.lock()
            .unwrap()
            .members
            .push(("org-1".into(), "octocat".into()));
        fake.lock().unwrap().users.remove("tok-octo");
        let e = c.refresh(&ALL, id).await.unwrap_err();
        assert!(
            matches!(e, ConnectorError::Refresh(_)) && e.to_string().contains("401"),
            "{e}"
        );
        let e = c.refresh(&ALL, Identity::default()).await.unwrap_err();
        assert!(
            e.to_string().contains("no upstream access token found"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn pages_are_bounded_and_stay_on_the_api_origin() {
        let fake = start_fake(octocat()).await;
        let mut many = Vec::new();
        for i in 0..(2 * MAX_PAGES + 2) {
            many.push(json!({"login": format!("org-{i}")}));
        }
        fake.lock().unwrap().orgs = many;
        let c = connector(&fake, json!({"loadAllGroups": true})).await;
        let e = c
            .handle_callback(&ALL, None, &callback("tok-octo"))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("more than {MAX_PAGES} pages")),
            "{e}"
        );
        fake.lock().unwrap().base = "http://evil.example".into();
        fake.lock().unwrap().orgs.truncate(3);
        let e = c
            .handle_callback(&ALL, None, &callback("tok-octo"))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("is not on"), "{e}");
    }

    #[test]
    fn config_errors_as_dex_with_key_paths() {
        let parse = |v: Value| {
            GithubConfig::parse("connectors[0].config", &v, CALLBACK)
                .map(|_| ())
                .unwrap_err()
                .join("\n")
        };
        let base = |extra: Value| {
            let mut v = json!({"clientID": "i", "clientSecret": "s", "redirectURI": CALLBACK});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            v
        };
        let e = parse(base(json!({"org": "a", "orgs": [{"name": "b"}]})));
        assert!(
            e.contains("connectors[0].config.org: cannot use both 'org' and 'orgs'"),
            "{e}"
        );
        let e = parse(base(json!({"hostName": "https://ghe.example"})));
        assert!(
            e.contains("connectors[0].config.hostName: invalid hostname"),
            "{e}"
        );
        let e = parse(base(json!({"rootCA": "/etc/ca.pem"})));
        assert!(
            e.contains("connectors[0].config.rootCA: Host name field required"),
            "{e}"
        );
        let e = parse(base(json!({"teamNameField": "id"})));
        assert!(e.contains("unsupported team name field value `id`"), "{e}");
        let e = parse(base(json!({"preferredEmailDomain": "example.*"})));
        assert!(e.contains("glob pattern cannot end with"), "{e}");
        let e = parse(json!({"redirectURI": "https://elsewhere/callback"}));
        assert!(
            e.contains("clientID: required")
                && e.contains("clientSecret: required")
                && e.contains("redirectURI:"),
            "{e}"
        );
        let (c, _) = GithubConfig::parse(
            "p",
            &base(json!({"hostName": "ghe.example:8443", "CLIENTID": "x"})),
            CALLBACK,
        )
        .unwrap();
        assert_eq!(
            (c.oauth_base.as_str(), c.api_base.as_str()),
            (
                "https://ghe.example:8443",
                "https://ghe.example:8443/api/v3"
            )
        );
        assert!(c.enterprise);
        let (c, _) = GithubConfig::parse("p", &base(json!({})), CALLBACK).unwrap();
        assert_eq!(
            (c.oauth_base.as_str(), c.api_base.as_str()),
            ("https://github.com", "https://api.github.com")
        );
    }
}
