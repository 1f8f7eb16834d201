//! An in-process Forgejo stand-in for tests. It answers as Forgejo ≥ 9 does where
//! the connectors depend on it; `tests/it/connectors/forge_contract.rs` holds its
//! answers against the shapes recorded from a real forge
//! (`checks/forgejo/observed-gitea-1.26.0.json`):
//!
//! * `GET /login/oauth/authorize`: client and redirect URI checks (400 HTML page),
//!   `response_type`, PKCE rules (public clients must send a challenge), then a
//!   303 back to the redirect URI with `code` and `state`. There is no consent
//!   page: the "browser session" is [`FakeForgejo::sign_in`], and
//!   [`FakeForgejo::approve`] runs the same logic without HTTP.
//! * `POST /login/oauth/access_token`: form or JSON body, client_secret_post or
//!   Basic (not URL-decoded), `authorization_code` and `refresh_token` grants,
//!   Forgejo's error codes (always HTTP 400). One grant per (user, app); with
//!   `invalidate_refresh_tokens` (Forgejo's default) every token response bumps
//!   the grant's counter, so each refresh token works once and a reused one gets
//!   `unauthorized_client` "token was already used".
//! * `GET /api/v1/user`, `GET /api/v1/user/teams` (page/limit: default 30, max
//!   50; `X-Total-Count`, no `Link`, as the real endpoint), Forgejo's JSON error
//!   shapes (401 `token is required` / `user does not exist…`, 403 for a token
//!   whose granular scopes lack `read:user`).
//! * OIDC: `/.well-known/openid-configuration`, `/login/oauth/keys`,
//!   `/login/oauth/userinfo`; ID tokens signed with an ES256 key (the real one
//!   uses RS256) carrying Forgejo's claims (groups `org`, `org:team` lower-cased).
//!
//! Every request is recorded (`METHOD /path?query`) for assertions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use oxidex::keys::{KeySet, SigningAlgorithm, generate_key};
use oxidex::storage::Keys;

/// Forgejo's `[api] DEFAULT_PAGING_NUM` and `MAX_RESPONSE_ITEMS` defaults.
pub const DEFAULT_PAGE_SIZE: usize = 30;
pub const MAX_PAGE_SIZE: usize = 50;

/// Scope names that make a token "granular" (restricted to exactly them).
const GRANULAR_SCOPES: &[&str] = &[
    "all",
    "public-only",
    "read:activitypub",
    "write:activitypub",
    "read:admin",
    "write:admin",
    "read:misc",
    "write:misc",
    "read:notification",
    "write:notification",
    "read:organization",
    "write:organization",
    "read:package",
    "write:package",
    "read:issue",
    "write:issue",
    "read:repository",
    "write:repository",
    "read:user",
    "write:user",
];

#[derive(Debug, Clone)]
pub struct FakeOptions {
    /// Forgejo ≤ 10 publishes `ROOT_URL` with its trailing slash as the issuer;
    /// newer Forgejo without (the default here).
    pub issuer_trailing_slash: bool,
    /// `expires_in` of access tokens (`[oauth2] ACCESS_TOKEN_EXPIRATION_TIME`).
    pub access_token_lifetime: Duration,
    /// `[oauth2] INVALIDATE_REFRESH_TOKENS`: true on Forgejo ≥ 9, false on Gitea.
    pub invalidate_refresh_tokens: bool,
    /// Bytes of trailing whitespace added to every response body (still valid
    /// JSON): a hostile or broken upstream's huge answer.
    pub response_padding: usize,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            issuer_trailing_slash: false,
            access_token_lifetime: Duration::from_secs(3600),
            invalidate_refresh_tokens: true,
            response_padding: 0,
        }
    }
}

/// A Forgejo account.
#[derive(Debug, Clone)]
pub struct FakeUser {
    pub id: i64,
    pub login: String,
    pub full_name: String,
    pub email: String,
    /// `email_verified` in ID tokens is `IsActive`, omitted when false.
    pub active: bool,
    /// `(org, team)` memberships, in listing order.
    pub teams: Vec<(String, String)>,
}

impl FakeUser {
    pub fn new(id: i64, login: &str) -> Self {
        FakeUser {
            id,
            login: login.to_owned(),
            full_name: String::new(),
            email: format!("{login}@example.test"),
            active: true,
            teams: Vec::new(),
        }
    }

    pub fn full_name(mut self, name: &str) -> Self {
        self.full_name = name.to_owned();
        self
    }

    pub fn email(mut self, email: &str) -> Self {
        self.email = email.to_owned();
        self
    }

    pub fn team(mut self, org: &str, team: &str) -> Self {
        self.teams.push((org.to_owned(), team.to_owned()));
        self
    }
}

/// An OAuth2 application's credentials (the secret is shown once, as in Forgejo).
#[derive(Debug, Clone)]
pub struct FakeApp {
    pub client_id: String,
    pub client_secret: String,
}

struct App {
    secret: String,
    redirect_uris: Vec<String>,
    confidential: bool,
}

struct Code {
    client_id: String,
    user_id: i64,
    redirect_uri: String,
    challenge: Option<(String, String)>,
}

struct Grant {
    user_id: i64,
    client_id: String,
    scope: String,
    nonce: String,
    counter: u64,
}

struct Inner {
    options: FakeOptions,
    users: Vec<FakeUser>,
    apps: HashMap<String, App>,
    signed_in: Option<String>,
    codes: HashMap<String, Code>,
    grants: HashMap<u64, Grant>,
    next_grant: u64,
    access_tokens: HashMap<String, (u64, SystemTime)>,
    refresh_tokens: HashMap<String, (u64, u64)>,
    org_ids: HashMap<String, i64>,
    team_ids: HashMap<(String, String), i64>,
    requests: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    keys: Arc<KeySet>,
    /// `http://127.0.0.1:<port>/`, like ROOT_URL.
    root_url: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn issuer(&self, inner: &Inner) -> String {
        if inner.options.issuer_trailing_slash {
            self.root_url.clone()
        } else {
            self.root_url.trim_end_matches('/').to_owned()
        }
    }
}

/// A running stand-in; stops when dropped.
pub struct FakeForgejo {
    shared: Shared,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for FakeForgejo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeForgejo")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeForgejo {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A unique, unguessable-enough value for a fake: tokens, codes, secrets.
fn random(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

impl FakeForgejo {
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with(FakeOptions::default()).await
    }

    /// Binds 127.0.0.1:0 and serves until dropped.
    pub async fn start_with(options: FakeOptions) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let key = generate_key(SigningAlgorithm::ES256).map_err(std::io::Error::other)?;
        let keys = KeySet::from_keys(&Keys {
            signing_key: key,
            next_key: None,
            verification_keys: Vec::new(),
            next_rotation: SystemTime::now() + Duration::from_secs(86400),
        })
        .map_err(std::io::Error::other)?;
        let shared = Shared {
            inner: Arc::new(Mutex::new(Inner {
                options,
                users: Vec::new(),
                apps: HashMap::new(),
                signed_in: None,
                codes: HashMap::new(),
                grants: HashMap::new(),
                next_grant: 1,
                access_tokens: HashMap::new(),
                refresh_tokens: HashMap::new(),
                org_ids: HashMap::new(),
                team_ids: HashMap::new(),
                requests: Vec::new(),
            })),
            keys: Arc::new(keys),
            root_url: format!("http://{addr}/"),
        };
        let app = Router::new()
            .route("/login/oauth/authorize", get(authorize_handler))
            .route("/login/oauth/access_token", post(token_handler))
            .route("/login/oauth/userinfo", get(userinfo_handler))
            .route("/login/oauth/keys", get(keys_handler))
            .route("/.well-known/openid-configuration", get(discovery_handler))
            .route("/api/v1/user", get(user_handler))
            .route("/api/v1/user/teams", get(teams_handler))
            .layer(middleware::from_fn_with_state(shared.clone(), record))
            .with_state(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(FakeForgejo {
            shared,
            addr,
            shutdown: Some(tx),
        })
    }

    /// Changes [`FakeOptions::response_padding`] from now on.
    pub fn set_response_padding(&self, bytes: usize) {
        self.shared.lock().options.response_padding = bytes;
    }

    /// The base URL without a trailing slash (a connector's `baseURL`).
    pub fn url(&self) -> String {
        self.shared.root_url.trim_end_matches('/').to_owned()
    }

    /// The OIDC issuer as published in discovery.
    pub fn issuer(&self) -> String {
        let inner = self.shared.lock();
        self.shared.issuer(&inner)
    }

    pub fn add_user(&self, user: FakeUser) {
        let mut inner = self.shared.lock();
        for (org, team) in &user.teams {
            let next = inner.org_ids.len() as i64 + 100;
            inner.org_ids.entry(org.clone()).or_insert(next);
            let next = inner.team_ids.len() as i64 + 1000;
            inner
                .team_ids
                .entry((org.clone(), team.clone()))
                .or_insert(next);
        }
        inner.users.retain(|u| u.id != user.id);
        inner.users.push(user);
    }

    /// A confidential application (what an IdP's upstream app must be).
    pub fn add_app(&self, redirect_uri: &str) -> FakeApp {
        self.add_app_with(redirect_uri, true)
    }

    pub fn add_app_with(&self, redirect_uri: &str, confidential: bool) -> FakeApp {
        let app = FakeApp {
            client_id: uuid::Uuid::new_v4().to_string(),
            client_secret: random("gto_"),
        };
        self.shared.lock().apps.insert(
            app.client_id.clone(),
            App {
                secret: app.client_secret.clone(),
                redirect_uris: vec![redirect_uri.to_owned()],
                confidential,
            },
        );
        app
    }

    /// Deletes the application with its grants (all its tokens stop working).
    pub fn delete_app(&self, client_id: &str) {
        let mut inner = self.shared.lock();
        inner.apps.remove(client_id);
        inner.grants.retain(|_, g| g.client_id != client_id);
    }

    /// Revokes a user's grant for an app (user settings → Applications).
    pub fn revoke_grant(&self, login: &str, client_id: &str) {
        let mut inner = self.shared.lock();
        let Some(user_id) = inner.users.iter().find(|u| u.login == login).map(|u| u.id) else {
            return;
        };
        inner
            .grants
            .retain(|_, g| !(g.user_id == user_id && g.client_id == client_id));
    }

    /// The browser session `/login/oauth/authorize` sees.
    pub fn sign_in(&self, login: &str) {
        self.shared.lock().signed_in = Some(login.to_owned());
    }

    /// Runs `/login/oauth/authorize` for `login` on a full authorize URL (as a
    /// connector's `login_url` returns) and returns the redirect `Location`.
    pub fn approve(&self, authorize_url: &str, login: &str) -> Result<String, String> {
        let url = url::Url::parse(authorize_url).map_err(|e| e.to_string())?;
        let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
        let mut inner = self.shared.lock();
        match authorize(&mut inner, &query, Some(login)) {
            AuthorizeOutcome::Redirect(location) => Ok(location),
            AuthorizeOutcome::Page(status, message) => Err(format!("{status}: {message}")),
        }
    }

    /// A JWT over exactly `claims`, signed with this provider's key: the tokens
    /// a real provider would not issue (expired, another issuer, any audience).
    pub fn sign(&self, claims: &Value) -> Result<String, String> {
        self.shared.keys.sign_jwt(claims).map_err(|e| e.to_string())
    }

    /// Requests seen so far, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// How many access tokens are currently valid for `login` (any app).
    pub fn live_grants(&self, login: &str) -> usize {
        let inner = self.shared.lock();
        let Some(user_id) = inner.users.iter().find(|u| u.login == login).map(|u| u.id) else {
            return 0;
        };
        inner
            .grants
            .values()
            .filter(|g| g.user_id == user_id)
            .count()
    }
}

/// The query pairs of a callback `Location`, as the HTTP layer hands them to
/// `handle_callback`.
pub fn callback_query(location: &str) -> Vec<(String, String)> {
    url::Url::parse(location)
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

async fn record(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let line = format!(
        "{} {}",
        request.method(),
        request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("")
    );
    let padding = {
        let mut inner = shared.lock();
        inner.requests.push(line);
        inner.options.response_padding
    };
    let response = next.run(request).await;
    if padding == 0 {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut padded = bytes.to_vec();
    padded.resize(bytes.len() + padding, b' ');
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(padded))
}

enum AuthorizeOutcome {
    Redirect(String),
    Page(StatusCode, String),
}

fn redirect_matches(registered: &[String], uri: &str) -> bool {
    let norm = |s: &str| s.trim_end_matches('/').to_ascii_lowercase();
    registered.iter().any(|r| norm(r) == norm(uri))
}

fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    match url::Url::parse(base) {
        Ok(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in pairs {
                    q.append_pair(k, v);
                }
            }
            url.into()
        }
        Err(_) => base.to_owned(),
    }
}

fn authorize(
    inner: &mut Inner,
    query: &HashMap<String, String>,
    signed_in: Option<&str>,
) -> AuthorizeOutcome {
    let get = |k: &str| query.get(k).map(String::as_str).unwrap_or("");
    let (response_type, client_id, redirect_uri, state) = (
        get("response_type"),
        get("client_id"),
        get("redirect_uri"),
        get("state"),
    );
    if response_type.is_empty() || client_id.is_empty() {
        return AuthorizeOutcome::Page(StatusCode::INTERNAL_SERVER_ERROR, "binding error".into());
    }
    let Some(app) = inner.apps.get(client_id) else {
        return AuthorizeOutcome::Page(StatusCode::BAD_REQUEST, "Client ID not registered".into());
    };
    if !redirect_matches(&app.redirect_uris, redirect_uri) {
        return AuthorizeOutcome::Page(StatusCode::BAD_REQUEST, "Unregistered Redirect URI".into());
    }
    let error_redirect = |error: &str, description: &str| {
        let mut pairs = vec![("error", error), ("error_description", description)];
        if !state.is_empty() {
            pairs.push(("state", state));
        }
        AuthorizeOutcome::Redirect(with_query(redirect_uri, &pairs))
    };
    let Some(login) = signed_in else {
        return AuthorizeOutcome::Redirect("/user/login".into());
    };
    let Some(user_id) = inner.users.iter().find(|u| u.login == login).map(|u| u.id) else {
        return AuthorizeOutcome::Redirect("/user/login".into());
    };
    if response_type != "code" {
        return error_redirect(
            "unsupported_response_type",
            "Only code response type is supported.",
        );
    }
    let challenge = get("code_challenge");
    let method = get("code_challenge_method");
    let challenge = match method {
        "S256" | "plain" | "" if !challenge.is_empty() => Some((
            challenge.to_owned(),
            if method.is_empty() { "plain" } else { method }.to_owned(),
        )),
        "S256" | "plain" | "" => {
            if !app.confidential {
                return error_redirect("invalid_request", "PKCE is required for public clients");
            }
            None
        }
        _ => return error_redirect("invalid_request", "unsupported code challenge method"),
    };
    // One grant per (user, app); Forgejo keeps the first consented scope.
    let existing = inner
        .grants
        .iter_mut()
        .find(|(_, g)| g.user_id == user_id && g.client_id == client_id);
    match existing {
        Some((_, grant)) => {
            if !get("nonce").is_empty() {
                grant.nonce = get("nonce").to_owned();
            }
        }
        None => {
            let id = inner.next_grant;
            inner.next_grant += 1;
            inner.grants.insert(
                id,
                Grant {
                    user_id,
                    client_id: client_id.to_owned(),
                    scope: get("scope").to_owned(),
                    nonce: get("nonce").to_owned(),
                    counter: 0,
                },
            );
        }
    }
    let code = random("gta_");
    inner.codes.insert(
        code.clone(),
        Code {
            client_id: client_id.to_owned(),
            user_id,
            redirect_uri: redirect_uri.to_owned(),
            challenge,
        },
    );
    let mut pairs = vec![("code", code.as_str())];
    if !state.is_empty() {
        pairs.push(("state", state));
    }
    AuthorizeOutcome::Redirect(with_query(redirect_uri, &pairs))
}

async fn authorize_handler(
    State(shared): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut inner = shared.lock();
    let signed_in = inner.signed_in.clone();
    match authorize(&mut inner, &query, signed_in.as_deref()) {
        AuthorizeOutcome::Redirect(location) => {
            (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
        }
        AuthorizeOutcome::Page(status, message) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            format!("<html><body>{message}</body></html>"),
        )
            .into_response(),
    }
}

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json;charset=utf-8")],
        json!({"error": error, "error_description": description}).to_string(),
    )
        .into_response()
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json;charset=utf-8")],
        format!("{body}\n"),
    )
        .into_response()
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(rest.trim()).ok()?).ok()?;
    // Forgejo splits at the first ':' and does not URL-decode.
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

async fn token_handler(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let form: HashMap<String, String> = if is_json {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => map
                .into_iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned())))
                .collect(),
            _ => HashMap::new(),
        }
    } else {
        form_urlencoded::parse(&body).into_owned().collect()
    };
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let (mut client_id, mut secret) = (get("client_id"), get("client_secret"));
    if (client_id.is_empty() || secret.is_empty())
        && let Some((basic_id, basic_secret)) = basic_credentials(&headers)
    {
        if !client_id.is_empty() && client_id != basic_id {
            return oauth_error(
                "invalid_request",
                "client_id in request body inconsistent with Authorization header",
            );
        }
        client_id = basic_id;
        secret = basic_secret;
    }
    let now = SystemTime::now();
    let mut inner = shared.lock();
    match get("grant_type").as_str() {
        "authorization_code" => {
            let Some(app) = inner.apps.get(&client_id) else {
                return oauth_error(
                    "invalid_client",
                    &format!("cannot load client with client id: \"{client_id}\""),
                );
            };
            if app.confidential {
                if secret.is_empty() {
                    return oauth_error("unauthorized_client", "invalid empty client secret");
                }
                if secret != app.secret {
                    return oauth_error("unauthorized_client", "invalid client secret");
                }
            }
            let redirect_uri = get("redirect_uri");
            if !redirect_uri.is_empty() && !redirect_matches(&app.redirect_uris, &redirect_uri) {
                return oauth_error("unauthorized_client", "unexpected redirect URI");
            }
            let Some(code) = inner.codes.remove(&get("code")) else {
                return oauth_error("unauthorized_client", "client is not authorized");
            };
            if let Some((challenge, method)) = &code.challenge {
                let verifier = get("code_verifier");
                let ok = match method.as_str() {
                    "S256" => oxidex::crypto::s256_challenge(&verifier) == *challenge,
                    _ => verifier == *challenge,
                };
                if !ok {
                    return oauth_error("unauthorized_client", "failed PKCE code challenge");
                }
            }
            if code.client_id != client_id {
                return oauth_error("invalid_grant", "invalid grant");
            }
            // Newer Forgejo and Gitea: the redirect URI must be the authorize one.
            if !redirect_uri.is_empty() && redirect_uri != code.redirect_uri {
                return oauth_error("invalid_grant", "redirect_uri mismatch");
            }
            let Some(grant_id) = inner
                .grants
                .iter()
                .find(|(_, g)| g.user_id == code.user_id && g.client_id == client_id)
                .map(|(id, _)| *id)
            else {
                return oauth_error("invalid_grant", "grant does not exist");
            };
            issue_tokens(&shared, &mut inner, grant_id, now)
        }
        "refresh_token" => {
            let Some(app) = inner.apps.get(&client_id) else {
                return oauth_error(
                    "invalid_client",
                    &format!("cannot load client with client id: \"{client_id}\""),
                );
            };
            if app.confidential && secret != app.secret {
                return oauth_error("invalid_client", "invalid client secret");
            }
            let Some(&(grant_id, counter)) = inner.refresh_tokens.get(&get("refresh_token")) else {
                return oauth_error("unauthorized_client", "unable to parse refresh token");
            };
            let invalidate = inner.options.invalidate_refresh_tokens;
            let Some(grant) = inner.grants.get(&grant_id) else {
                return oauth_error("invalid_grant", "grant does not exist");
            };
            if grant.client_id != client_id {
                return oauth_error("invalid_grant", "invalid grant");
            }
            if invalidate && grant.counter != counter {
                return oauth_error("unauthorized_client", "token was already used");
            }
            issue_tokens(&shared, &mut inner, grant_id, now)
        }
        _ => oauth_error(
            "unsupported_grant_type",
            "Only refresh_token or authorization_code grant type is supported",
        ),
    }
}

fn has_scope(scope: &str, wanted: &str) -> bool {
    scope.split(' ').any(|s| s == wanted)
}

fn issue_tokens(shared: &Shared, inner: &mut Inner, grant_id: u64, now: SystemTime) -> Response {
    let invalidate = inner.options.invalidate_refresh_tokens;
    let lifetime = inner.options.access_token_lifetime;
    let issuer = shared.issuer(inner);
    let Some(grant) = inner.grants.get_mut(&grant_id) else {
        return oauth_error("invalid_grant", "grant does not exist");
    };
    if invalidate {
        grant.counter += 1;
    }
    let (counter, user_id, client_id, scope, nonce) = (
        grant.counter,
        grant.user_id,
        grant.client_id.clone(),
        grant.scope.clone(),
        grant.nonce.clone(),
    );
    let access = random("fat_");
    let refresh = random("frt_");
    inner
        .access_tokens
        .insert(access.clone(), (grant_id, now + lifetime));
    inner
        .refresh_tokens
        .insert(refresh.clone(), (grant_id, counter));
    let mut body = json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": lifetime.as_secs(),
        "refresh_token": refresh,
    });
    if has_scope(&scope, "openid")
        && let Some(user) = inner.users.iter().find(|u| u.id == user_id)
    {
        let iat = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut claims = json!({
            "iss": issuer,
            "sub": user.id.to_string(),
            "aud": [client_id],
            "exp": iat + lifetime.as_secs(),
            "iat": iat,
        });
        if !nonce.is_empty() {
            claims["nonce"] = json!(nonce);
        }
        if has_scope(&scope, "profile") {
            claims["name"] = json!(display_name(user));
            claims["preferred_username"] = json!(user.login);
            claims["profile"] = json!(format!("{}{}", shared.root_url, user.login));
            claims["picture"] = json!(format!("{}avatars/{}", shared.root_url, user.id));
            claims["locale"] = json!("en-US");
            claims["updated_at"] = json!(iat);
        }
        if has_scope(&scope, "email") {
            claims["email"] = json!(user.email);
            if user.active {
                claims["email_verified"] = json!(true);
            }
        }
        if has_scope(&scope, "groups") {
            claims["groups"] = json!(oidc_groups(user));
        }
        match shared.keys.sign_jwt(&claims) {
            Ok(token) => body["id_token"] = json!(token),
            Err(e) => return oauth_error("server_error", &e.to_string()),
        }
    }
    json_response(StatusCode::OK, body)
}

fn display_name(user: &FakeUser) -> String {
    if user.full_name.is_empty() {
        user.login.clone()
    } else {
        user.full_name.clone()
    }
}

/// Forgejo's OIDC groups: each org, then `org:<team lower-cased>`.
fn oidc_groups(user: &FakeUser) -> Vec<String> {
    let mut groups: Vec<String> = Vec::new();
    for (org, _) in &user.teams {
        if !groups.contains(org) {
            groups.push(org.clone());
        }
    }
    for (org, team) in &user.teams {
        let g = format!("{org}:{}", team.to_lowercase());
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    groups
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        .then(|| token.trim().to_owned())
}

fn api_error(shared: &Shared, status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        json!({"message": message, "url": format!("{}api/swagger", shared.root_url)}),
    )
}

/// The user behind an API token, or Forgejo's error answer.
#[allow(clippy::result_large_err)]
fn api_user(shared: &Shared, inner: &Inner, headers: &HeaderMap) -> Result<FakeUser, Response> {
    let Some(token) = bearer(headers) else {
        return Err(api_error(
            shared,
            StatusCode::UNAUTHORIZED,
            "token is required",
        ));
    };
    let invalid = || {
        api_error(
            shared,
            StatusCode::UNAUTHORIZED,
            "user does not exist [uid: 0, name: ]",
        )
    };
    let Some(&(grant_id, expires)) = inner.access_tokens.get(&token) else {
        return Err(invalid());
    };
    if SystemTime::now() >= expires {
        return Err(invalid());
    }
    let Some(grant) = inner.grants.get(&grant_id) else {
        return Err(invalid());
    };
    let granular: Vec<&str> = grant
        .scope
        .split(' ')
        .filter(|s| GRANULAR_SCOPES.contains(s))
        .collect();
    if !granular.is_empty()
        && !granular
            .iter()
            .any(|s| matches!(*s, "all" | "read:user" | "write:user"))
    {
        return Err(api_error(
            shared,
            StatusCode::FORBIDDEN,
            "token does not have at least one of required scope(s): [read:user]",
        ));
    }
    inner
        .users
        .iter()
        .find(|u| u.id == grant.user_id)
        .cloned()
        .ok_or_else(invalid)
}

async fn user_handler(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    let inner = shared.lock();
    let user = match api_user(&shared, &inner, &headers) {
        Ok(user) => user,
        Err(response) => return response,
    };
    json_response(
        StatusCode::OK,
        json!({
            "id": user.id,
            "login": user.login,
            "login_name": "",
            "source_id": 0,
            "full_name": user.full_name,
            "email": user.email,
            "avatar_url": format!("{}avatars/{}", shared.root_url, user.id),
            "html_url": format!("{}{}", shared.root_url, user.login),
            "language": "en-US",
            "is_admin": false,
            "last_login": "0001-01-01T00:00:00Z",
            "created": "2024-11-07T00:00:00Z",
            "restricted": false,
            "active": user.active,
            "prohibit_login": false,
            "location": "",
            "pronouns": "",
            "website": "",
            "description": "",
            "visibility": "public",
            "followers_count": 0,
            "following_count": 0,
            "starred_repos_count": 0,
            "username": user.login,
        }),
    )
}

async fn teams_handler(
    State(shared): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let inner = shared.lock();
    let user = match api_user(&shared, &inner, &headers) {
        Ok(user) => user,
        Err(response) => return response,
    };
    let number = |k: &str| {
        query
            .get(k)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let page = number("page").max(1) as usize;
    let limit = match number("limit") {
        l if l <= 0 => DEFAULT_PAGE_SIZE,
        l => (l as usize).min(MAX_PAGE_SIZE),
    };
    let teams: Vec<Value> = user
        .teams
        .iter()
        .skip((page - 1).saturating_mul(limit))
        .take(limit)
        .map(|(org, team)| {
            let org_id = inner.org_ids.get(org).copied().unwrap_or(0);
            let team_id = inner
                .team_ids
                .get(&(org.clone(), team.clone()))
                .copied()
                .unwrap_or(0);
            json!({
                "id": team_id,
                "name": team,
                "description": "",
                "organization": {
                    "id": org_id,
                    "name": org,
                    "full_name": "",
                    "email": "",
                    "avatar_url": format!("{}avatars/{org_id}", shared.root_url),
                    "description": "",
                    "website": "",
                    "location": "",
                    "visibility": "public",
                    "repo_admin_change_team_access": false,
                    "username": org,
                },
                "includes_all_repositories": false,
                "permission": if team == "Owners" { "owner" } else { "read" },
                "units": ["repo.code"],
                "units_map": {"repo.code": "read"},
                "can_create_org_repo": false,
            })
        })
        .collect();
    let mut response = json_response(StatusCode::OK, Value::Array(teams));
    let headers = response.headers_mut();
    headers.insert("x-total-count", HeaderValue::from(user.teams.len()));
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("X-Total-Count"),
    );
    response
}

async fn userinfo_handler(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    let inner = shared.lock();
    let user = bearer(&headers)
        .and_then(|t| inner.access_tokens.get(&t).copied())
        .filter(|(_, expires)| SystemTime::now() < *expires)
        .and_then(|(grant_id, _)| inner.grants.get(&grant_id))
        .and_then(|g| inner.users.iter().find(|u| u.id == g.user_id));
    let Some(user) = user else {
        return (
            StatusCode::UNAUTHORIZED,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::WWW_AUTHENTICATE, "Bearer realm=\"\""),
            ],
            "no valid authorization",
        )
            .into_response();
    };
    let mut body = json!({
        "sub": user.id.to_string(),
        "name": display_name(user),
        "preferred_username": user.login,
        "email": user.email,
        "picture": format!("{}avatars/{}", shared.root_url, user.id),
    });
    let groups = oidc_groups(user);
    if !groups.is_empty() {
        body["groups"] = json!(groups);
    }
    json_response(StatusCode::OK, body)
}

async fn keys_handler(State(shared): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        shared.keys.jwks_json(),
    )
        .into_response()
}

async fn discovery_handler(State(shared): State<Shared>) -> Response {
    let inner = shared.lock();
    let root = &shared.root_url;
    // Unlike the API, discovery is served as plain `application/json`.
    (
        [(header::CONTENT_TYPE, "application/json")],
        json!({
            "issuer": shared.issuer(&inner),
            "authorization_endpoint": format!("{root}login/oauth/authorize"),
            "token_endpoint": format!("{root}login/oauth/access_token"),
            "jwks_uri": format!("{root}login/oauth/keys"),
            "userinfo_endpoint": format!("{root}login/oauth/userinfo"),
            "introspection_endpoint": format!("{root}login/oauth/introspect"),
            "response_types_supported": ["code", "id_token"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "subject_types_supported": ["public"],
            "scopes_supported": ["openid", "profile", "email", "groups"],
            "claims_supported": ["aud", "exp", "iat", "iss", "sub", "name", "preferred_username",
                "profile", "picture", "website", "locale", "updated_at", "email", "email_verified", "groups"],
            "code_challenge_methods_supported": ["plain", "S256"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
        })
        .to_string(),
    )
        .into_response()
}
