//! The browser flow: `/auth` (connector picker), `/auth/{connector}` (request
//! validation, hand-off to the connector), `/auth/{connector}/login` (password
//! form), `/callback[/{connector}]` (upstream return) and `/approval` (consent).

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::any;

use super::AppState;
use super::browser;
use super::client_ip::{ClientIp, ClientKey};
use super::error::{HttpError, found, html, see_other};
use super::limits::PasswordLoginError;
use super::params::Params;
use crate::connector::{Connector, ConnectorEntry, ConnectorError, Identity, Scopes};
use crate::oidc::authorize::{self as flow, AuthorizeParams, AuthorizeResponse};
use crate::oidc::binding::{self, BrowserSecret};
use crate::storage::{self, AuthRequest, StorageError};
use crate::web::{
    ApprovalPage, CSRF_FIELD, ConnectorLink, CsrfToken, LoginPage, OobPage, PasswordPage,
};

/// Routes at their full paths under the issuer's path `prefix` (e.g. `/dex`).
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new()
        .route(&[prefix, "/auth"].concat(), any(choose_connector))
        .route(
            &[prefix, "/auth/{connector}"].concat(),
            any(connector_login),
        )
        .route(
            &[prefix, "/auth/{connector}/login"].concat(),
            any(password_login),
        )
        .route(&[prefix, "/callback"].concat(), any(callback))
        .route(
            &[prefix, "/callback/{connector}"].concat(),
            any(callback_for_connector),
        )
        .route(&[prefix, "/approval"].concat(), any(approval))
}

type PageResult = Result<Response, HttpError>;

fn respond(state: &AppState, result: PageResult) -> Response {
    result.unwrap_or_else(|error| error.into_response_with(&state.templates))
}

/// `/auth/{id}` under the issuer path, with `query` appended.
fn connector_path(state: &AppState, connector_id: &str, query: &[(String, String)]) -> String {
    let mut path = format!(
        "{}/auth/{}",
        state.settings.issuer.path_prefix,
        url_path_segment(connector_id)
    );
    if !query.is_empty() {
        path.push('?');
        path.push_str(&encode_query(query));
    }
    path
}

fn url_path_segment(segment: &str) -> String {
    form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn encode_query(pairs: &[(String, String)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        serializer.append_pair(k, v);
    }
    serializer.finish()
}

// ---------------------------------------------------------------------------
// GET/POST /auth — choose a connector
// ---------------------------------------------------------------------------

async fn choose_connector(State(state): State<AppState>, params: Params) -> Response {
    let result = choose_connector_inner(&state, &params);
    respond(&state, result)
}

fn choose_connector_inner(state: &AppState, params: &Params) -> PageResult {
    readable(params)?;
    let client_id = params.get("client_id");
    let client = state.settings.clients.iter().find(|c| c.id == client_id);
    // Connectors this client may use (all when the client is unknown: the
    // request is validated once a connector is chosen, as in Dex), and whose
    // `grantTypes` allow the grant the request implies (Dex HEAD).
    let grant = flow::implied_grant_type(
        params.get("response_type").split_whitespace(),
        params.get("redirect_uri"),
    );
    let usable: Vec<&ConnectorEntry> = state
        .connectors
        .iter()
        .filter(|entry| client.is_none_or(|c| flow::connector_allowed(c, &entry.id)))
        .filter(|entry| {
            entry.grant_types.is_empty() || entry.grant_types.iter().any(|g| g == grant)
        })
        .collect();
    if usable.is_empty() {
        return Err(HttpError::bad_request(
            "No connectors available for this client.",
        ));
    }
    let forwarded: Vec<(String, String)> = params
        .pairs
        .iter()
        .filter(|(k, _)| k != "connector_id")
        .cloned()
        .collect();
    let requested = params.get("connector_id");
    if !requested.is_empty() {
        if !usable.iter().any(|e| e.id == requested) {
            return Err(HttpError::bad_request(
                "Connector ID does not match a valid Connector",
            ));
        }
        return Ok(found(&connector_path(state, requested, &forwarded)));
    }
    if let [only] = usable.as_slice()
        && !state.settings.oauth2.always_show_login_screen
    {
        return Ok(found(&connector_path(state, &only.id, &forwarded)));
    }
    let mut connectors: Vec<ConnectorLink> = usable
        .iter()
        .map(|entry| ConnectorLink {
            id: entry.id.clone(),
            name: entry.name.clone(),
            kind: entry.kind.clone(),
            url: connector_path(state, &entry.id, &forwarded),
        })
        .collect();
    connectors.sort_by_key(|link| link.name.to_lowercase());
    Ok(html(
        StatusCode::OK,
        state.templates.login(&LoginPage { connectors }),
    ))
}

// ---------------------------------------------------------------------------
// GET /auth/{connector} — validate the request, hand off to the connector
// ---------------------------------------------------------------------------

async fn connector_login(
    State(state): State<AppState>,
    ConnectorId(connector_id): ConnectorId,
    ClientIp(client): ClientIp,
    params: Params,
) -> Response {
    let (secret, fresh) = browser::ensure(&params.headers);
    let result = connector_login_inner(&state, &connector_id, client, &params, &secret).await;
    let mut response = respond(&state, result);
    if fresh {
        browser::set_cookie(&state.settings, &mut response, &secret);
    }
    response
}

async fn connector_login_inner(
    state: &AppState,
    connector_id: &str,
    client: ClientKey,
    params: &Params,
    browser: &BrowserSecret,
) -> PageResult {
    readable(params)?;
    let request = AuthorizeParams::from_pairs(params.pairs.iter().map(|(k, v)| (k, v)));
    let ids: Vec<&str> = state.connectors.iter().map(|e| e.id.as_str()).collect();
    let validated = flow::validate_authorize_request(&request, &state.settings, &ids)?;
    let Some(entry) = state.connectors.get(connector_id) else {
        return Err(HttpError::bad_request("Requested resource does not exist."));
    };
    if !entry.grant_types.is_empty()
        && !entry
            .grant_types
            .iter()
            .any(|g| g == validated.implied_grant_type())
    {
        return Err(HttpError::bad_request(
            "Requested connector does not support this grant type.",
        ));
    }
    if params.method != Method::GET {
        return Err(HttpError::bad_request("Unsupported request method."));
    }
    let now = (state.clock)();
    state.limits.create_request(client, now)?;
    let settings = state.settings.clone();
    let path_connector = connector_id.to_owned();
    let binding = browser.binding();
    let auth_request = blocking(state, move |s| {
        flow::create_auth_request(s, &settings, &validated, &path_connector, &binding, now)
            .map_err(HttpError::from)
    })
    .await?;

    match &entry.connector {
        Connector::Callback(connector) => {
            let scopes = Scopes::from_requested(&auth_request.scopes);
            let callback_url = state.settings.issuer.endpoint("/callback");
            connector
                .prepare()
                .await
                .map_err(|error| connector_failure(entry, params, &error))?;
            let (url, connector_data) = connector
                .login_url(&scopes, &callback_url, &auth_request.id)
                .map_err(|error| connector_failure(entry, params, &error))?;
            if connector_data.is_some() {
                let id = auth_request.id.clone();
                blocking(state, move |s| {
                    s.update_auth_request(&id, &mut |mut r| {
                        r.connector_data = connector_data.clone();
                        Ok(r)
                    })
                    .map(|_| ())
                    .map_err(database_error)
                })
                .await?;
            }
            Ok(found(&url))
        }
        Connector::Password(_) => {
            let back = if state.connectors.len() > 1 {
                format!(
                    "{}/auth?{}",
                    state.settings.issuer.path_prefix,
                    encode_query(&params.query_pairs)
                )
            } else {
                String::new()
            };
            let query = [
                ("back".to_owned(), back),
                ("state".to_owned(), auth_request.id.clone()),
            ];
            Ok(found(&format!(
                "{}/auth/{}/login?{}",
                state.settings.issuer.path_prefix,
                url_path_segment(&entry.id),
                encode_query(&query)
            )))
        }
    }
}

// ---------------------------------------------------------------------------
// /auth/{connector}/login — the password form
// ---------------------------------------------------------------------------

async fn password_login(
    State(state): State<AppState>,
    ConnectorId(connector_id): ConnectorId,
    ClientIp(client): ClientIp,
    params: Params,
) -> Response {
    let result = password_login_inner(&state, &connector_id, client, &params).await;
    respond(&state, result)
}

async fn password_login_inner(
    state: &AppState,
    connector_id: &str,
    client: ClientKey,
    params: &Params,
) -> PageResult {
    readable(params)?;
    let Some(entry) = state.connectors.get(connector_id) else {
        return Err(HttpError::bad_request("Requested resource does not exist."));
    };
    let Connector::Password(connector) = &entry.connector else {
        return Err(HttpError::bad_request("Requested resource does not exist."));
    };
    let auth_request = load_auth_request(state, params.get("state")).await?;
    if auth_request.connector_id != entry.id {
        return Err(HttpError::bad_request("Requested resource does not exist."));
    }
    same_browser(&auth_request, params)?;
    let csrf = CsrfToken::new(&auth_request.hmac_key, &auth_request.id);
    let back = safe_back_link(&state.settings.issuer.path_prefix, params.get("back"));
    let post_url = format!(
        "{}/auth/{}/login?{}",
        state.settings.issuer.path_prefix,
        url_path_segment(&entry.id),
        encode_query(&[
            ("back".to_owned(), back.clone().unwrap_or_default()),
            ("state".to_owned(), auth_request.id.clone()),
        ])
    );
    let page = |username: &str, invalid: bool| PasswordPage {
        post_url: post_url.clone(),
        prompt: connector.prompt().to_owned(),
        username: username.to_owned(),
        invalid,
        back_link: back.clone(),
        csrf_token: csrf.as_str().to_owned(),
    };

    match params.method {
        Method::GET => Ok(html(
            StatusCode::OK,
            state.templates.password(&page("", false)),
        )),
        Method::POST => {
            // Credentials from the form body only: a query string ends up in logs.
            if !CsrfToken::verify(
                &auth_request.hmac_key,
                &auth_request.id,
                params.form_get(CSRF_FIELD),
            ) {
                return Err(HttpError::page(
                    403,
                    "Invalid or missing form token. Please start the login again.",
                ));
            }
            let username = params.form_get("login");
            let password = params.form_get("password");
            let scopes = Scopes::from_requested(&auth_request.scopes);
            let now = (state.clock)();
            let identity = match state
                .limits
                .password_login(connector.as_ref(), &scopes, client, username, password, now)
                .await
            {
                Ok(Some(identity)) => identity,
                Ok(None) => {
                    return Ok(html(
                        StatusCode::UNAUTHORIZED,
                        state.templates.password(&page(username, true)),
                    ));
                }
                Err(PasswordLoginError::Refused(refused)) => return Err(refused),
                Err(PasswordLoginError::Connector(error)) => {
                    tracing::error!(connector = %entry.id, %error, "password login failed");
                    return Err(HttpError::page(
                        500,
                        "Login error. Please contact your administrator or try again later.",
                    ));
                }
            };
            finish_login(state, &auth_request, identity, connector.supports_refresh()).await
        }
        _ => Err(HttpError::bad_request("Unsupported request method.")),
    }
}

/// `back` must stay on this server, under the issuer's path (`prefix`). Judged on
/// the value as received, nothing stripped or normalised first: a browser drops
/// tab and newline and reads `\` as `/`, so `/\t/evil.example` would be
/// `//evil.example` to it; any byte but visible ASCII, and `\`, is refused.
fn safe_back_link(prefix: &str, back: &str) -> Option<String> {
    let visible = back.bytes().all(|b| b.is_ascii_graphic() && b != b'\\');
    let rest = back.strip_prefix(prefix)?;
    (visible && rest.starts_with('/') && !rest.starts_with("//")).then(|| back.to_owned())
}

// ---------------------------------------------------------------------------
// /callback — the upstream sends the browser back
// ---------------------------------------------------------------------------

async fn callback(State(state): State<AppState>, params: Params) -> Response {
    let result = callback_inner(&state, None, &params).await;
    respond(&state, result)
}

async fn callback_for_connector(
    State(state): State<AppState>,
    ConnectorId(connector_id): ConnectorId,
    params: Params,
) -> Response {
    let result = callback_inner(&state, Some(&connector_id), &params).await;
    respond(&state, result)
}

async fn callback_inner(
    state: &AppState,
    path_connector: Option<&str>,
    params: &Params,
) -> PageResult {
    readable(params)?;
    if params.method != Method::GET {
        return Err(HttpError::bad_request("Method not supported"));
    }
    let auth_request_id = params.get("state");
    if auth_request_id.is_empty() {
        return Err(HttpError::bad_request("User session error."));
    }
    let auth_request = match load_auth_request(state, auth_request_id).await {
        Ok(r) => r,
        Err(HttpError::Page { status: 400, .. }) => {
            return Err(HttpError::bad_request("Requested resource does not exist."));
        }
        Err(e) => return Err(e),
    };
    if path_connector.is_some_and(|id| id != auth_request.connector_id) {
        return Err(HttpError::bad_request("Requested resource does not exist."));
    }
    let Some(entry) = state.connectors.get(&auth_request.connector_id) else {
        return Err(HttpError::bad_request("Requested resource does not exist."));
    };
    let Connector::Callback(connector) = &entry.connector else {
        return Err(HttpError::bad_request("Requested resource does not exist."));
    };
    // Before the upstream is asked anything: the code in this URL may have
    // been made for somebody else's login.
    same_browser(&auth_request, params)?;
    let scopes = Scopes::from_requested(&auth_request.scopes);
    let query: Vec<(String, String)> = params.query_pairs.clone();
    let identity = connector
        .handle_callback(&scopes, auth_request.connector_data.as_deref(), &query)
        .await
        .map_err(|error| connector_failure(entry, params, &error))?;
    finish_login(state, &auth_request, identity, connector.supports_refresh()).await
}

/// The page for a failed connector step. Upstream text (an `error_description`, a
/// quoted body) goes to the log only, escaped by [`ConnectorError`]'s `Display`;
/// the user sees a fixed message and the request id that finds the log line.
fn connector_failure(entry: &ConnectorEntry, params: &Params, error: &ConnectorError) -> HttpError {
    match error {
        ConnectorError::NotInRequiredGroups { .. } => {
            tracing::info!(connector = %entry.id, %error, "login refused");
            HttpError::page(
                403,
                "You are not a member of any of the required groups to authenticate.",
            )
        }
        ConnectorError::Upstream(_) => {
            tracing::warn!(connector = %entry.id, %error, "upstream login failed");
            let request_id = params.header(super::middleware::REQUEST_ID).unwrap_or("-");
            HttpError::page(
                502,
                format!(
                    "Login through {} failed. Please try again; if it keeps failing, \
                     tell your administrator the request id {request_id}.",
                    entry.name
                ),
            )
        }
        _ => {
            tracing::error!(connector = %entry.id, %error, "connector failed");
            HttpError::page(
                500,
                "Authentication failed. Please contact your administrator or try again later.",
            )
        }
    }
}

/// Records the login, then shows the approval page or answers the client.
async fn finish_login(
    state: &AppState,
    auth_request: &AuthRequest,
    identity: Identity,
    supports_refresh: bool,
) -> PageResult {
    let now = (state.clock)();
    let id = auth_request.id.clone();
    let claims = identity.claims();
    let connector_data = identity.connector_data;
    let settings = state.settings.clone();
    let logged_in = blocking(state, move |s| {
        flow::finalize_login(s, &id, claims, connector_data, supports_refresh, now)
            .and_then(|_| flow::extend_after_login(s, &settings, &id, now))
            .map_err(HttpError::from)
    })
    .await?;
    if flow::needs_approval(&logged_in, &state.settings) {
        return Ok(see_other(&flow::approval_url(&state.settings, &logged_in)));
    }
    issue(state, &logged_in.id).await
}

async fn issue(state: &AppState, auth_request_id: &str) -> PageResult {
    let now = (state.clock)();
    let settings = state.settings.clone();
    let keyset = state.keys.keyset();
    let id = auth_request_id.to_owned();
    let response = blocking(state, move |s| {
        flow::issue_response(s, &settings, keyset.as_ref(), &id, now).map_err(HttpError::from)
    })
    .await?;
    match response {
        AuthorizeResponse::Redirect(url) => Ok(see_other(&url)),
        AuthorizeResponse::Oob { code } => {
            Ok(html(StatusCode::OK, state.templates.oob(&OobPage { code })))
        }
    }
}

// ---------------------------------------------------------------------------
// /approval — consent
// ---------------------------------------------------------------------------

async fn approval(State(state): State<AppState>, params: Params) -> Response {
    let result = approval_inner(&state, &params).await;
    respond(&state, result)
}

async fn approval_inner(state: &AppState, params: &Params) -> PageResult {
    readable(params)?;
    let req = params.get("req").to_owned();
    let hmac = params.get("hmac").to_owned();
    let auth_request = blocking(state, move |s| {
        flow::load_for_approval(s, &req, &hmac).map_err(HttpError::from)
    })
    .await?;
    same_browser(&auth_request, params)?;
    match params.method {
        Method::GET => {
            let client_name = state
                .settings
                .clients
                .iter()
                .find(|c| c.id == auth_request.client_id)
                .map(|c| c.name.clone())
                .unwrap_or_else(|| auth_request.client_id.clone());
            let post_url = flow::approval_url(&state.settings, &auth_request);
            let page = ApprovalPage {
                client_name,
                username: auth_request.claims.username.clone(),
                scopes: auth_request.scopes.clone(),
                post_url,
                csrf_token: CsrfToken::new(&auth_request.hmac_key, &auth_request.id)
                    .as_str()
                    .to_owned(),
            };
            Ok(html(StatusCode::OK, state.templates.approval(&page)))
        }
        Method::POST => {
            if !CsrfToken::verify(
                &auth_request.hmac_key,
                &auth_request.id,
                params.form_get(CSRF_FIELD),
            ) {
                return Err(HttpError::page(
                    403,
                    "Invalid or missing form token. Please start the login again.",
                ));
            }
            if params.form_get("approval") == "approve" {
                issue(state, &auth_request.id).await
            } else {
                let id = auth_request.id.clone();
                let location = blocking(state, move |s| {
                    flow::reject_approval(s, &id).map_err(HttpError::from)
                })
                .await?;
                Ok(see_other(&location))
            }
        }
        _ => Err(HttpError::bad_request("Unsupported request method.")),
    }
}

// ---------------------------------------------------------------------------

/// Parameters that could not be decoded get a page, not axum's plain text.
fn readable(params: &Params) -> Result<(), HttpError> {
    match params.malformed {
        Some(why) => {
            tracing::debug!(why, "unreadable request parameters");
            Err(HttpError::bad_request(
                "Invalid request: its parameters could not be read.",
            ))
        }
        None => Ok(()),
    }
}

/// A connector path segment that is not even UTF-8 names nothing we have.
fn unknown_resource() -> HttpError {
    HttpError::bad_request("Requested resource does not exist.")
}

/// The `{connector}` path segment. A segment axum cannot decode (not UTF-8) is
/// an unknown connector, answered with our error page rather than axum's text.
struct ConnectorId(String);

impl FromRequestParts<AppState> for ConnectorId {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(ConnectorId(id)),
            Err(_) => Err(unknown_resource().into_response_with(&state.templates)),
        }
    }
}

/// Refuses a step of a login from another browser than the one that started it
/// (403, changing nothing).
fn same_browser(auth_request: &AuthRequest, params: &Params) -> Result<(), HttpError> {
    let presented = browser::presented(&params.headers);
    binding::check_same_browser(&auth_request.browser_binding, presented.as_ref())
        .map_err(HttpError::from)
}

async fn load_auth_request(state: &AppState, id: &str) -> Result<AuthRequest, HttpError> {
    if id.is_empty() {
        return Err(HttpError::bad_request("User session error."));
    }
    let id = id.to_owned();
    blocking(state, move |s| {
        s.get_auth_request(&id).map_err(|error| match error {
            StorageError::NotFound => HttpError::bad_request("User session error."),
            other => database_error(other),
        })
    })
    .await
}

fn database_error(error: StorageError) -> HttpError {
    tracing::error!(%error, "storage failure");
    crate::oidc::AuthorizeError::storage(&error).into()
}

/// Runs `call` with the storage on the blocking pool.
pub(super) async fn blocking<T, F>(state: &AppState, call: F) -> Result<T, HttpError>
where
    T: Send + 'static,
    F: FnOnce(&dyn storage::Storage) -> Result<T, HttpError> + Send + 'static,
{
    let storage = Arc::clone(&state.storage);
    super::run_blocking(move || call(storage.as_ref()))
        .await
        .map_err(|error| {
            tracing::error!(%error, "blocking task failed");
            HttpError::internal()
        })?
}

#[cfg(test)]
mod tests {
    use super::safe_back_link;

    #[test]
    fn back_link_stays_under_the_issuer_path() {
        for (prefix, back) in [
            ("/dex", "/dex/auth?client_id=a&state=b"),
            ("/dex", "/dex/"),
            ("", "/auth?x=%09"),
        ] {
            assert_eq!(safe_back_link(prefix, back).as_deref(), Some(back));
        }
        for (prefix, back) in [
            ("", "/\t/evil.example"),
            ("", "/\n/evil.example"),
            ("", "/\r/evil.example"),
            ("", "\t//evil.example"),
            ("", "//evil.example"),
            ("", "/\\evil.example"),
            ("", "\\/evil.example"),
            ("", "/ /evil.example"),
            ("", "https://evil.example/"),
            ("", "javascript:alert(1)"),
            ("", "/caf\u{e9}"),
            ("", "/\u{0}x"),
            ("", "/\u{7f}x"),
            ("", ""),
            ("/dex", "/auth"),
            ("/dex", "/dexterity/auth"),
            ("/dex", "/dex//evil.example"),
            ("/dex", "/dex/\t/x"),
            ("/dex", "/dex"),
        ] {
            assert_eq!(
                safe_back_link(prefix, back),
                None,
                "{back:?} under {prefix:?}"
            );
        }
    }
}
