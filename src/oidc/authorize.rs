//! The authorization endpoint's rules: request validation in Dex's order, the
//! auth request lifecycle (create → login finalized → approval → response), and
//! the redirect URLs sent back to the client (Dex: `handleAuthorization`, `handleConnectorLogin`,
//! `handleApproval` in `server/handlers.go`, `parseAuthorizationRequest` in
//! `server/oauth2.go`).

use std::time::SystemTime;

use super::error::{AuthorizeError, ErrorCode, RedirectError};
use super::is_expired;
use super::mint::{Minter, TokenSigner, TokenSubject};
use super::scopes::{self, check_scopes, go_quote};
use super::session::{Prompt, consent_covers, parse_max_age};
use super::{MAX_NONCE_LEN, MAX_PARAM_LEN, MAX_RESPONSE_TYPE_LEN, MAX_SCOPE_LEN, MAX_STATE_LEN};
use crate::config::settings::{AUTH_CODE_LIFETIME, Client, Settings};
use crate::crypto::{self, new_hmac_key, new_id};
use crate::storage::{
    AuthCode, AuthRequest, BrowserSession, BrowserSessionWrite, Claims, LoginWrite, OfflineSession,
    OfflineSessionEdit, Pkce, RequestNext, Storage, StorageError,
};

/// The out-of-band redirect URI: the code is shown on a page instead.
pub const OOB_REDIRECT_URI: &str = "urn:ietf:wg:oauth:2.0:oob";
/// The device flow's internal redirect target (relative to the issuer path).
pub const DEVICE_CALLBACK_PATH: &str = "/device/callback";

/// The `/auth` parameters Dex reads (Dex's `parseAuthorizationRequest`); everything else is
/// ignored. Missing parameters are empty strings, as Go's `Form.Get`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizeParams {
    pub client_id: String,
    pub redirect_uri: String,
    pub response_type: String,
    pub scope: String,
    pub state: String,
    pub nonce: String,
    pub connector_id: String,
    pub code_challenge: String,
    pub code_challenge_method: String,
    pub approval_prompt: String,
    pub request: String,
    pub prompt: String,
    pub max_age: String,
    pub id_token_hint: String,
}

impl AuthorizeParams {
    /// Builds the parameters from decoded name/value pairs; the first value of a
    /// name wins (Go's `Form.Get`). For a POST, pass the body pairs before the
    /// query pairs, as Go's `ParseForm` orders them.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut params = Self::default();
        let mut seen: Vec<&'static str> = Vec::new();
        for (key, value) in pairs {
            let slot = match key.as_ref() {
                "client_id" => ("client_id", &mut params.client_id),
                "redirect_uri" => ("redirect_uri", &mut params.redirect_uri),
                "response_type" => ("response_type", &mut params.response_type),
                "scope" => ("scope", &mut params.scope),
                "state" => ("state", &mut params.state),
                "nonce" => ("nonce", &mut params.nonce),
                "connector_id" => ("connector_id", &mut params.connector_id),
                "code_challenge" => ("code_challenge", &mut params.code_challenge),
                "code_challenge_method" => {
                    ("code_challenge_method", &mut params.code_challenge_method)
                }
                "approval_prompt" => ("approval_prompt", &mut params.approval_prompt),
                "request" => ("request", &mut params.request),
                "prompt" => ("prompt", &mut params.prompt),
                "max_age" => ("max_age", &mut params.max_age),
                "id_token_hint" => ("id_token_hint", &mut params.id_token_hint),
                _ => continue,
            };
            if !seen.contains(&slot.0) {
                seen.push(slot.0);
                *slot.1 = value.as_ref().to_owned();
            }
        }
        params
    }
}

/// An authorization request that passed validation, ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedAuthorization {
    pub client_id: String,
    /// For a public client, `/device/callback` has been rewritten to
    /// `<issuer path>/device/callback`.
    pub redirect_uri: String,
    pub response_types: Vec<String>,
    pub scopes: Vec<String>,
    pub state: String,
    pub nonce: String,
    /// The `connector_id` parameter (empty when not given).
    pub connector_id: String,
    pub pkce: Pkce,
    /// `approval_prompt=force` or `prompt=consent`.
    pub force_approval_prompt: bool,
    pub prompt: Prompt,
    /// `max_age` in seconds, when given.
    pub max_age: Option<u64>,
    /// The raw `id_token_hint` (verified by the caller, which holds the keys).
    pub id_token_hint: String,
}

impl ValidatedAuthorization {
    /// The grant the request implies, for filtering connectors by their
    /// `grantTypes`: `urn:ietf:params:oauth:grant-type:device_code` for the device
    /// callback, `implicit` when tokens come from `/auth`, else `authorization_code`.
    pub fn implied_grant_type(&self) -> &'static str {
        implied_grant_type(
            self.response_types.iter().map(String::as_str),
            &self.redirect_uri,
        )
    }
}

/// The grant a request with these response types and redirect URI implies (also
/// for a request not validated yet, such as the connector picker's).
pub fn implied_grant_type<'a>(
    mut response_types: impl Iterator<Item = &'a str>,
    redirect_uri: &str,
) -> &'static str {
    if redirect_uri.ends_with(DEVICE_CALLBACK_PATH) {
        "urn:ietf:params:oauth:grant-type:device_code"
    } else if response_types.any(|t| t == "token" || t == "id_token") {
        "implicit"
    } else {
        "authorization_code"
    }
}

/// Validates an authorization request for `/auth/{connector}` in Dex's order
/// (Dex's `parseAuthorizationRequest`). `connector_ids` are the known connectors.
///
/// Displayed errors (no redirect): oversized `client_id`/`redirect_uri`/`state`
/// (400, oxidex's limit), unknown client (404 "Invalid client_id."), redirect URI
/// not valid for the client (400 "Unregistered redirect_uri."). Everything after
/// that is redirected to the client.
pub fn validate_authorize_request<S: AsRef<str>>(
    params: &AuthorizeParams,
    settings: &Settings,
    connector_ids: &[S],
) -> Result<ValidatedAuthorization, AuthorizeError> {
    // Beyond Dex: size limits. These three are checked before anything else
    // because they can be neither trusted nor echoed back.
    for (name, value, max) in [
        ("client_id", &params.client_id, MAX_PARAM_LEN),
        ("redirect_uri", &params.redirect_uri, MAX_PARAM_LEN),
        ("state", &params.state, MAX_STATE_LEN),
    ] {
        if value.len() > max {
            return Err(AuthorizeError::page(
                400,
                format!("Invalid request: parameter \"{name}\" is too long."),
            ));
        }
    }

    let client = settings
        .client(&params.client_id)
        .ok_or_else(|| AuthorizeError::page(404, "Invalid client_id."))?;

    // Beyond Dex HEAD: a public client without registered URIs also gets the
    // issuer's own device callback (`<issuer path>/device/callback`), which is what
    // the device flow sends; Dex only allows the bare path (dexidp/dex#3798).
    let issuer_device_callback = format!("{}{DEVICE_CALLBACK_PATH}", settings.issuer.path_prefix);
    let implicit_device_callback = client.public
        && client.redirect_uris.is_empty()
        && params.redirect_uri == issuer_device_callback;
    if !valid_redirect_uri(client, &params.redirect_uri) && !implicit_device_callback {
        return Err(AuthorizeError::page(400, "Unregistered redirect_uri."));
    }
    let mut redirect_uri = params.redirect_uri.clone();
    if client.public && redirect_uri == DEVICE_CALLBACK_PATH {
        redirect_uri = format!("{}{DEVICE_CALLBACK_PATH}", settings.issuer.path_prefix);
    }

    let redirect = |error: ErrorCode, description: String| {
        AuthorizeError::Redirect(RedirectError {
            redirect_uri: redirect_uri.clone(),
            error,
            description,
            state: params.state.clone(),
        })
    };

    // Beyond Dex: every value stored with the auth request is bounded (an
    // anonymous client can create auth requests).
    for (name, value, max) in [
        (
            "response_type",
            &params.response_type,
            MAX_RESPONSE_TYPE_LEN,
        ),
        ("scope", &params.scope, MAX_SCOPE_LEN),
        ("nonce", &params.nonce, MAX_NONCE_LEN),
        ("connector_id", &params.connector_id, MAX_PARAM_LEN),
        ("code_challenge", &params.code_challenge, MAX_PKCE_LEN),
        (
            "code_challenge_method",
            &params.code_challenge_method,
            MAX_PARAM_LEN,
        ),
        ("approval_prompt", &params.approval_prompt, MAX_PARAM_LEN),
        ("prompt", &params.prompt, MAX_PARAM_LEN),
        ("max_age", &params.max_age, MAX_PARAM_LEN),
        (
            "id_token_hint",
            &params.id_token_hint,
            MAX_ID_TOKEN_HINT_LEN,
        ),
    ] {
        if value.len() > max {
            return Err(redirect(
                ErrorCode::InvalidRequest,
                format!("Parameter \"{name}\" is too long (at most {max} bytes)."),
            ));
        }
    }

    if !params.connector_id.is_empty() {
        if !connector_ids
            .iter()
            .any(|c| c.as_ref() == params.connector_id)
        {
            return Err(redirect(
                ErrorCode::InvalidRequest,
                "Invalid ConnectorID".into(),
            ));
        }
        if !connector_allowed(client, &params.connector_id) {
            return Err(redirect(
                ErrorCode::InvalidRequest,
                "Connector not allowed for this client".into(),
            ));
        }
    }

    if !params.request.is_empty() {
        return Err(redirect(
            ErrorCode::RequestNotSupported,
            "Server does not support request parameter.".into(),
        ));
    }

    // Dex HEAD parses these even with sessions off.
    let prompt = Prompt::parse(&params.prompt).map_err(|why| {
        redirect(
            ErrorCode::InvalidRequest,
            format!("Invalid prompt parameter: {why}"),
        )
    })?;
    let max_age =
        parse_max_age(&params.max_age).map_err(|why| redirect(ErrorCode::InvalidRequest, why))?;

    let method = check_pkce(
        settings,
        client,
        &params.code_challenge,
        &params.code_challenge_method,
    )
    .map_err(|description| redirect(ErrorCode::InvalidRequest, description))?;

    let scopes = scopes::parse_scopes(&params.scope);
    if let Err(violation) = check_scopes(&scopes, &client.id, &settings.clients, true) {
        return Err(redirect(ErrorCode::InvalidScope, violation.description()));
    }

    let response_types = scopes::parse_scopes(&params.response_type);
    let (mut code, mut id_token, mut token) = (false, false, false);
    for rt in &response_types {
        match rt.as_str() {
            "code" => code = true,
            "id_token" => id_token = true,
            "token" => token = true,
            _ => {
                return Err(redirect(
                    ErrorCode::InvalidRequest,
                    format!("Invalid response type {}", go_quote(rt)),
                ));
            }
        }
        if !settings.oauth2.response_types.iter().any(|t| t == rt) {
            return Err(redirect(
                ErrorCode::UnsupportedResponseType,
                format!("Unsupported response type {}", go_quote(rt)),
            ));
        }
    }
    if response_types.is_empty() {
        return Err(redirect(
            ErrorCode::InvalidRequest,
            "No response_type provided".into(),
        ));
    }
    if token && !code && !id_token {
        return Err(redirect(
            ErrorCode::InvalidRequest,
            "Response type 'token' must be provided with type 'id_token' and/or 'code'".into(),
        ));
    }
    if !code && params.nonce.is_empty() {
        return Err(redirect(
            ErrorCode::InvalidRequest,
            "Response type 'token' requires a 'nonce' value.".into(),
        ));
    }
    if token && redirect_uri == OOB_REDIRECT_URI {
        return Err(redirect(
            ErrorCode::InvalidRequest,
            format!("Cannot use response type 'token' with redirect_uri '{OOB_REDIRECT_URI}'."),
        ));
    }

    Ok(ValidatedAuthorization {
        client_id: client.id.clone(),
        redirect_uri,
        response_types,
        scopes,
        state: params.state.clone(),
        nonce: params.nonce.clone(),
        connector_id: params.connector_id.clone(),
        pkce: Pkce {
            code_challenge: params.code_challenge.clone(),
            code_challenge_method: method.to_owned(),
        },
        force_approval_prompt: params.approval_prompt == "force" || prompt.consent,
        prompt,
        max_age,
        id_token_hint: params.id_token_hint.clone(),
    })
}

/// Longest accepted `id_token_hint`: an ID token with many groups still fits.
pub const MAX_ID_TOKEN_HINT_LEN: usize = 16 * 1024;

/// Longest PKCE code verifier, and so `plain` challenge (RFC 7636 §4.1).
pub const MAX_PKCE_LEN: usize = 128;
/// Shortest PKCE code verifier (RFC 7636 §4.1); an S256 challenge is always this long.
pub const MIN_PKCE_LEN: usize = 43;

/// The PKCE parameters of an authorization or a device request, checked the same
/// way for both (Dex's `/auth` and `/device/code`): the method (empty means
/// `plain`) must be enabled in `oauth2.pkceChallengeMethods` when a challenge is
/// given; `oauth2.pkce.enforce` and, beyond Dex, the client's `requirePKCE` demand
/// a challenge; beyond Dex, the challenge must have its RFC 7636 shape. Returns the
/// method to store, or the `invalid_request` description.
pub(crate) fn check_pkce<'a>(
    settings: &Settings,
    client: &Client,
    challenge: &str,
    method: &'a str,
) -> Result<&'a str, String> {
    let method = if method.is_empty() { "plain" } else { method };
    if !challenge.is_empty() && !settings.oauth2.pkce_methods.iter().any(|m| m == method) {
        return Err(format!(
            "Unsupported PKCE challenge method ({}).",
            go_quote(method)
        ));
    }
    if (settings.oauth2.pkce_enforce || client.require_pkce) && challenge.is_empty() {
        return Err("PKCE is required. The code_challenge parameter must be provided.".into());
    }
    if !challenge.is_empty() && !valid_code_challenge(challenge, method) {
        return Err(
            "Invalid code_challenge: RFC 7636 §4.2 allows 43 to 128 characters of \
             [A-Za-z0-9-._~] (exactly 43 for S256)."
                .into(),
        );
    }
    Ok(method)
}

/// Beyond Dex: the challenge has the shape RFC 7636 §4.1–4.2 gives it: a `plain`
/// challenge is a verifier (43–128 unreserved characters), an S256 one the
/// base64url of a SHA-256 digest (43 characters of that alphabet).
fn valid_code_challenge(challenge: &str, method: &str) -> bool {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    let base64url = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_');
    match method {
        "S256" => challenge.len() == MIN_PKCE_LEN && challenge.bytes().all(base64url),
        _ => {
            (MIN_PKCE_LEN..=MAX_PKCE_LEN).contains(&challenge.len())
                && challenge.bytes().all(unreserved)
        }
    }
}

/// Whether the client may use the connector (`allowedConnectors`; empty = all).
pub fn connector_allowed(client: &Client, connector_id: &str) -> bool {
    client.allowed_connectors.is_empty()
        || client.allowed_connectors.iter().any(|c| c == connector_id)
}

/// Dex's redirect URI rule: exact match against the registered URIs; a public
/// client with *no* registered URIs also gets the OOB URI, `/device/callback` and
/// any `http://` URL on `localhost` or a loopback IP (any port and path), decided
/// on the host a browser reads (see [`super::redirect_uri`]).
pub fn valid_redirect_uri(client: &Client, redirect_uri: &str) -> bool {
    if client.redirect_uris.iter().any(|u| u == redirect_uri) {
        return true;
    }
    if !client.public || !client.redirect_uris.is_empty() {
        return false;
    }
    redirect_uri == OOB_REDIRECT_URI
        || redirect_uri == DEVICE_CALLBACK_PATH
        || super::redirect_uri::is_loopback_http(redirect_uri)
}

/// How long an auth request nobody has logged in with is kept, at most.
///
/// Beyond Dex (which keeps every auth request for `expiry.authRequests`, 24 h by
/// default): anyone can create auth requests, so unused ones go after 10 minutes;
/// a login extends its request to `expiry.authRequests` from then
/// ([`finalize_login`]).
pub const UNUSED_AUTH_REQUEST_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(10 * 60);

/// Stores what a callback connector needs to finish its login (its PKCE
/// verifier, nonce, …) in the auth request, before the browser is sent upstream.
pub fn set_connector_data(
    storage: &dyn Storage,
    auth_request_id: &str,
    connector_data: Option<Vec<u8>>,
) -> Result<(), StorageError> {
    storage
        .update_auth_request(auth_request_id, &mut |mut request| {
            request.connector_data = connector_data.clone();
            Ok(request)
        })
        .map(|_| ())
}

/// Stores the auth request for a validated request at `/auth/{connector_id}`:
/// 25-char id, expiry `now + min(expiry.authRequests, 10 min)`, a fresh HMAC key,
/// bound to the browser `browser_binding` ([`super::binding::BrowserSecret::binding`]).
///
/// Displayed errors: connector not allowed for the client (403), `connector_id`
/// parameter naming another connector than the path (400 "Bad connector ID"),
/// storage failure (500).
pub fn create_auth_request(
    storage: &dyn Storage,
    settings: &Settings,
    request: &ValidatedAuthorization,
    connector_id: &str,
    browser_binding: &str,
    now: SystemTime,
) -> Result<AuthRequest, AuthorizeError> {
    let client = settings
        .client(&request.client_id)
        .ok_or_else(|| AuthorizeError::page(404, "Invalid client_id."))?;
    if !connector_allowed(client, connector_id) {
        return Err(AuthorizeError::page(
            403,
            "Connector not allowed for this client.",
        ));
    }
    if !request.connector_id.is_empty() && request.connector_id != connector_id {
        return Err(AuthorizeError::page(400, "Bad connector ID"));
    }
    let expiry = now
        .checked_add(
            settings
                .expiry
                .auth_requests
                .min(UNUSED_AUTH_REQUEST_LIFETIME),
        )
        .ok_or_else(|| AuthorizeError::page(500, "Internal server error."))?;
    let auth_request = AuthRequest {
        id: new_id(),
        client_id: request.client_id.clone(),
        response_types: request.response_types.clone(),
        scopes: request.scopes.clone(),
        redirect_uri: request.redirect_uri.clone(),
        nonce: request.nonce.clone(),
        state: request.state.clone(),
        force_approval_prompt: request.force_approval_prompt,
        logged_in: false,
        claims: Claims::default(),
        connector_id: connector_id.to_owned(),
        connector_data: None,
        expiry,
        pkce: request.pkce.clone(),
        hmac_key: new_hmac_key(),
        auth_time: None,
        browser_binding: browser_binding.to_owned(),
        session_id: String::new(),
    };
    storage.create_auth_request(&auth_request).map_err(|err| {
        tracing::error!(%err, "failed to store auth request");
        AuthorizeError::storage(&err)
    })?;
    Ok(auth_request)
}

/// The `hmac` query parameter of the approval URL:
/// `base64url(HMAC-SHA256(auth request key, auth request id))`, no padding.
pub fn approval_hmac(auth_request: &AuthRequest) -> String {
    crypto::hmac_sha256_b64(&auth_request.hmac_key, auth_request.id.as_bytes())
}

/// The approval screen's URL for a logged-in auth request:
/// `<issuer>/approval?req=<id>&hmac=<approval_hmac>` (Dex v2.45).
pub fn approval_url(settings: &Settings, auth_request: &AuthRequest) -> String {
    let query = encode_pairs(&[
        ("req".to_owned(), auth_request.id.clone()),
        ("hmac".to_owned(), approval_hmac(auth_request)),
    ]);
    format!("{}?{query}", settings.issuer.endpoint("/approval"))
}

/// Checks a presented approval `hmac` in constant time.
pub fn verify_approval_hmac(auth_request: &AuthRequest, presented: &str) -> bool {
    crypto::hmac_sha256_b64_verify(
        &auth_request.hmac_key,
        auth_request.id.as_bytes(),
        presented,
    )
}

/// Loads an auth request for the approval screen (Dex's `handleApproval`): `hmac`
/// missing ⇒ 401 "Unauthorized request"; unknown `req` ⇒ 400 "User session
/// error."; bad HMAC ⇒ 401; not logged in ⇒ 500 "Login process not yet finalized.".
///
/// Beyond Dex: the HMAC is checked before the login state. Dex checks it after,
/// so anyone holding the id of a login in progress (it is the `state` of the
/// password form's URL) could make it answer 500; here that is a 401, and the
/// 500 needs a MAC only the server hands out after the login.
pub fn load_for_approval(
    storage: &dyn Storage,
    auth_request_id: &str,
    hmac: &str,
) -> Result<AuthRequest, AuthorizeError> {
    if hmac.is_empty() {
        return Err(AuthorizeError::page(401, "Unauthorized request"));
    }
    let auth_request = get_auth_request(storage, auth_request_id)?;
    if !verify_approval_hmac(&auth_request, hmac) {
        return Err(AuthorizeError::page(401, "Unauthorized request"));
    }
    if !auth_request.logged_in {
        return Err(AuthorizeError::page(
            500,
            "Login process not yet finalized.",
        ));
    }
    Ok(auth_request)
}

fn get_auth_request(storage: &dyn Storage, id: &str) -> Result<AuthRequest, AuthorizeError> {
    if id.is_empty() {
        return Err(AuthorizeError::page(400, "User session error."));
    }
    storage.get_auth_request(id).map_err(|err| match err {
        StorageError::NotFound => AuthorizeError::page(400, "User session error."),
        err => {
            tracing::error!(%err, "failed to load auth request");
            AuthorizeError::storage(&err)
        }
    })
}

/// What an interactive login established: who logged in, through a connector
/// that can refresh or not, in which browser session, when.
#[derive(Debug, Clone)]
pub struct LoginFacts<'a> {
    pub claims: Claims,
    pub connector_data: Option<Vec<u8>>,
    pub connector_supports_refresh: bool,
    /// The browser session's id (empty without sessions).
    pub session_id: &'a str,
    pub authenticated_at: SystemTime,
}

/// The auth request `request` logged in by `login` (`logged_in`, claims,
/// connector data, `auth_time`, the browser session's id), its expiry extended
/// to the configured `expiry.authRequests` from now, never less than it had.
///
/// Beyond Dex: one login per auth request. A request that is already logged in
/// is refused (400), so a second user cannot overwrite the identity of a login
/// whose approval URL somebody already holds; and the HMAC key is replaced, so
/// every approval URL or form token computed before the login is void.
pub fn log_in(
    request: &AuthRequest,
    settings: &Settings,
    login: &LoginFacts<'_>,
    now: SystemTime,
) -> Result<AuthRequest, AuthorizeError> {
    if request.logged_in {
        return Err(already_logged_in());
    }
    if is_expired(request.expiry, now) {
        return Err(AuthorizeError::page(400, "User session has expired."));
    }
    let extended = now
        .checked_add(settings.expiry.auth_requests)
        .ok_or_else(|| AuthorizeError::page(500, "Internal server error."))?;
    let mut logged_in = request.clone();
    logged_in.hmac_key = new_hmac_key();
    logged_in.logged_in = true;
    logged_in.claims = login.claims.clone();
    logged_in.connector_data = login.connector_data.clone();
    logged_in.auth_time = Some(login.authenticated_at);
    login.session_id.clone_into(&mut logged_in.session_id);
    logged_in.expiry = request.expiry.max(extended);
    Ok(logged_in)
}

fn already_logged_in() -> AuthorizeError {
    AuthorizeError::page(
        400,
        "This login has already been completed. Please start again from the application.",
    )
}

/// How a failed login commit reads to the browser: the request is gone (a
/// double submit) or changed (another login of it came first).
fn login_commit_error(error: StorageError) -> AuthorizeError {
    match error {
        StorageError::Rejected(_) => already_logged_in(),
        error => request_write_error(error, "failed to finalize login"),
    }
}

/// A write to an auth request that failed: gone is a double submit (400 "User
/// session error."); anything else is logged with `what` and is a storage error.
fn request_write_error(error: StorageError, what: &str) -> AuthorizeError {
    match error {
        StorageError::NotFound => AuthorizeError::page(400, "User session error."),
        error => {
            tracing::error!(%error, "{what}");
            AuthorizeError::storage(&error)
        }
    }
}

/// When `offline_access` was requested and the connector can refresh, the
/// user's offline session is created or its connector data updated at login,
/// as Dex's `finalizeLogin` does.
fn offline_session_edit<'a>(
    logged_in: &'a AuthRequest,
    login: &LoginFacts<'_>,
    edit: &'a mut dyn FnMut(&mut OfflineSession),
) -> Option<OfflineSessionEdit<'a>> {
    (login.connector_supports_refresh
        && scopes::has_scope(&logged_in.scopes, scopes::OFFLINE_ACCESS))
    .then_some(OfflineSessionEdit {
        user_id: &logged_in.claims.user_id,
        connector_id: &logged_in.connector_id,
        edit,
    })
}

fn keep_connector_data(data: Option<&[u8]>) -> impl FnMut(&mut OfflineSession) + '_ {
    move |session| {
        if let Some(data) = data.filter(|d| !d.is_empty()) {
            session.connector_data = Some(data.to_vec());
        }
    }
}

/// Records a successful login on the stored auth request (see [`log_in`]) and,
/// when it asks for `offline_access` through a connector that can refresh, the
/// user's offline session, in one storage commit.
/// Only tests log a request in without answering it at once; the server goes
/// through [`finish_login`].
// The login's facts are passed one by one; [`LoginFacts`] is the next step (noted).
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub fn finalize_login(
    storage: &dyn Storage,
    settings: &Settings,
    auth_request_id: &str,
    claims: Claims,
    connector_data: Option<Vec<u8>>,
    connector_supports_refresh: bool,
    session_id: &str,
    authenticated_at: SystemTime,
    now: SystemTime,
) -> Result<AuthRequest, AuthorizeError> {
    let request = get_auth_request(storage, auth_request_id)?;
    let login = LoginFacts {
        claims,
        connector_data,
        connector_supports_refresh,
        session_id,
        authenticated_at,
    };
    let logged_in = log_in(&request, settings, &login, now)?;
    let mut edit = keep_connector_data(login.connector_data.as_deref());
    storage
        .commit_login(LoginWrite {
            request: &request,
            next: RequestNext::Replace(&logged_in),
            browser_session: None,
            offline_session: offline_session_edit(&logged_in, &login, &mut edit),
        })
        .map_err(login_commit_error)?;
    Ok(logged_in)
}

/// Where a finished interactive login leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginFinished {
    /// The approval page, at this URL (see [`approval_url`]).
    Approval(String),
    /// The authorization response, already issued.
    Response(AuthorizeResponse),
}

/// Finishes an interactive login in ONE storage commit: records it on
/// `request` (the auth request as the caller read it; see [`log_in`]) and,
/// unless the approval page is needed (`granted`: the scopes the user granted
/// the client before, see [`needs_approval`]), issues the response at once, so
/// the request is exchanged for the code in the same commit. The browser
/// session's write and the offline session's upsert join that commit.
///
/// `Ok(None)` when the browser session to update has ended meanwhile (a logout
/// in another tab): nothing was written, and the caller starts a new session and
/// calls again.
#[allow(clippy::too_many_arguments)]
pub fn finish_login(
    storage: &dyn Storage,
    settings: &Settings,
    signer: &dyn TokenSigner,
    request: &AuthRequest,
    login: &LoginFacts<'_>,
    granted: &[String],
    mut browser_session: Option<BrowserSessionWrite<'_>>,
    now: SystemTime,
) -> Result<Option<(LoginFinished, Option<BrowserSession>)>, AuthorizeError> {
    let logged_in = log_in(request, settings, login, now)?;
    let (finished, code) = if needs_approval(&logged_in, settings, granted) {
        (
            LoginFinished::Approval(approval_url(settings, &logged_in)),
            None,
        )
    } else {
        let prepared = prepare_response(settings, signer, &logged_in, now)?;
        (LoginFinished::Response(prepared.response), prepared.code)
    };
    let next = match (&finished, &code) {
        (LoginFinished::Approval(_), _) => RequestNext::Replace(&logged_in),
        (LoginFinished::Response(_), Some(code)) => RequestNext::Exchange(code),
        (LoginFinished::Response(_), None) => RequestNext::Delete,
    };
    let updates_a_session = matches!(browser_session, Some(BrowserSessionWrite::Update { .. }));
    let mut edit = keep_connector_data(login.connector_data.as_deref());
    let committed = storage.commit_login(LoginWrite {
        request,
        next,
        browser_session: browser_session.as_mut().map(BrowserSessionWrite::reborrow),
        offline_session: offline_session_edit(&logged_in, login, &mut edit),
    });
    match committed {
        Ok(session) => Ok(Some((finished, session))),
        // Gone is the request (a double submit) or the session (ended).
        Err(StorageError::NotFound)
            if updates_a_session && storage.get_auth_request(&request.id).is_ok() =>
        {
            Ok(None)
        }
        Err(error) => Err(login_commit_error(error)),
    }
}

/// Whether the approval screen must be shown: the request forces it
/// (`approval_prompt=force` or `prompt=consent`, honoured even with
/// `skipApprovalScreen`, as Dex), or the screen is not skipped and the user has
/// not granted this client every requested scope before (`granted`, from the
/// user's stored consent; empty without sessions).
pub fn needs_approval(auth_request: &AuthRequest, settings: &Settings, granted: &[String]) -> bool {
    approval_required(
        auth_request.force_approval_prompt,
        &auth_request.scopes,
        settings,
        granted,
    )
}

/// [`needs_approval`] for a request not stored yet: whether it forces the
/// page, and the scopes it asks for.
pub fn approval_required(
    forced: bool,
    scopes: &[String],
    settings: &Settings,
    granted: &[String],
) -> bool {
    let granted_before = settings.sessions.is_some() && consent_covers(granted, scopes);
    forced || !(settings.oauth2.skip_approval_screen || granted_before)
}

/// What to send the browser once the authorization response is issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeResponse {
    /// 303 See Other to this URL.
    Redirect(String),
    /// Render the out-of-band page showing this code (redirect URI was
    /// `urn:ietf:wg:oauth:2.0:oob`).
    Oob { code: String },
}

/// Issues the authorization response for a logged-in (and approved) auth request
/// (Dex's `sendCodeResponse`). Tokens are minted first; then the auth request is
/// deleted (and the code stored, in the same transaction), so a double submit
/// finds it gone (400 "User session error."); expired ⇒ 400 "User session has
/// expired.". `code` stores an auth code (30 min); `token` / `id_token` mint
/// tokens into the fragment.
pub fn issue_response(
    storage: &dyn Storage,
    settings: &Settings,
    signer: &dyn TokenSigner,
    auth_request_id: &str,
    now: SystemTime,
) -> Result<AuthorizeResponse, AuthorizeError> {
    let request = get_auth_request(storage, auth_request_id)?;
    if !request.logged_in {
        return Err(AuthorizeError::page(
            500,
            "Login process not yet finalized.",
        ));
    }
    if is_expired(request.expiry, now) {
        return Err(AuthorizeError::page(400, "User session has expired."));
    }
    // Signed before anything is written: a signing failure leaves the request as it was.
    let prepared = prepare_response(settings, signer, &request, now)?;
    // The request goes and the code comes in one transaction: of two submits only
    // one finds the request.
    match &prepared.code {
        Some(auth_code) => storage.exchange_auth_request_for_code(&request.id, auth_code),
        None => storage.delete_auth_request(&request.id),
    }
    .map_err(|err| request_write_error(err, "failed to issue the authorization response"))?;
    Ok(prepared.response)
}

/// An authorization response made but not yet issued: the code to store (when
/// the response type includes `code`) and what to send the browser.
struct PreparedResponse {
    code: Option<AuthCode>,
    response: AuthorizeResponse,
}

/// Makes the authorization response for the logged-in `request` (Dex's
/// `sendCodeResponse`): the code (30 min), and for `token` / `id_token` the
/// tokens minted into the fragment. Writes nothing.
fn prepare_response(
    settings: &Settings,
    signer: &dyn TokenSigner,
    request: &AuthRequest,
    now: SystemTime,
) -> Result<PreparedResponse, AuthorizeError> {
    let internal = || AuthorizeError::page(500, "Internal server error.");
    let wants = |t: &str| request.response_types.iter().any(|r| r == t);

    let auth_code = if wants("code") {
        Some(AuthCode {
            id: new_id(),
            client_id: request.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            nonce: request.nonce.clone(),
            scopes: request.scopes.clone(),
            connector_id: request.connector_id.clone(),
            connector_data: request.connector_data.clone(),
            claims: request.claims.clone(),
            expiry: now.checked_add(AUTH_CODE_LIFETIME).ok_or_else(internal)?,
            pkce: request.pkce.clone(),
            auth_time: request.auth_time,
            browser_binding: request.browser_binding.clone(),
            session_id: request.session_id.clone(),
        })
    } else {
        None
    };
    let code = auth_code.as_ref().map(|c| c.id.clone());
    let oob = code.is_some() && request.redirect_uri == OOB_REDIRECT_URI;

    let minter = Minter::new(settings, signer);
    let subject = TokenSubject {
        client_id: &request.client_id,
        claims: &request.claims,
        scopes: &request.scopes,
        connector_id: &request.connector_id,
        nonce: &request.nonce,
        auth_time: request.auth_time,
        session_id: &request.session_id,
    };
    let access_token = if wants("token") && !oob {
        Some(minter.access_token(&subject, now).map_err(|_| internal())?)
    } else {
        None
    };
    let id_token = if wants("id_token") && !oob {
        let at = access_token.as_ref().map(|t| t.token.as_str());
        Some(
            minter
                .id_token(&subject, now, at, code.as_deref())
                .map_err(|_| internal())?,
        )
    } else {
        None
    };

    if oob {
        let response = AuthorizeResponse::Oob {
            code: code.unwrap_or_default(),
        };
        return Ok(PreparedResponse {
            code: auth_code,
            response,
        });
    }

    if access_token.is_none() && id_token.is_none() {
        let params = vec![
            ("code".to_owned(), code.unwrap_or_default()),
            ("state".to_owned(), request.state.clone()),
        ];
        let response =
            AuthorizeResponse::Redirect(add_query_params(&request.redirect_uri, params, true));
        return Ok(PreparedResponse {
            code: auth_code,
            response,
        });
    }

    let mut fragment: Vec<(String, String)> = Vec::new();
    if let Some(access) = &access_token {
        fragment.push(("access_token".into(), access.token.clone()));
        fragment.push(("token_type".into(), "bearer".into()));
        // Pure implicit only: hybrid responses carry no expires_in.
        if code.is_none() {
            let expiry = id_token.as_ref().map_or(access.expiry, |t| t.expiry);
            let secs = expiry.duration_since(now).map_or(0, |d| d.as_secs());
            fragment.push(("expires_in".into(), secs.to_string()));
        }
    }
    fragment.push(("state".into(), request.state.clone()));
    if let Some(id) = &id_token {
        fragment.push(("id_token".into(), id.token.clone()));
    }
    if let Some(code) = code {
        fragment.push(("code".into(), code));
    }
    Ok(PreparedResponse {
        code: auth_code,
        response: AuthorizeResponse::Redirect(with_fragment(&request.redirect_uri, fragment)),
    })
}

/// The user pressed "Cancel" on the approval screen: the auth request is deleted
/// and the browser goes back to the client with `access_denied`.
///
/// Beyond Dex: Dex renders a 500 page "Approval rejected."; RFC 6749 §4.1.2.1 says
/// to redirect `access_denied`. With the OOB redirect URI there is nowhere to
/// redirect, so a 403 page is shown instead.
pub fn reject_approval(
    storage: &dyn Storage,
    auth_request_id: &str,
) -> Result<String, AuthorizeError> {
    let request = get_auth_request(storage, auth_request_id)?;
    storage
        .delete_auth_request(&request.id)
        .map_err(|err| request_write_error(err, "failed to delete auth request"))?;
    if request.redirect_uri == OOB_REDIRECT_URI {
        return Err(AuthorizeError::page(403, "Approval rejected."));
    }
    Ok(RedirectError {
        redirect_uri: request.redirect_uri,
        error: ErrorCode::AccessDenied,
        description: "The user denied the request.".to_owned(),
        state: request.state,
    }
    .location())
}

/// Splits `uri` into (before query, query, fragment) without parsing it, so
/// relative URIs such as `/dex/device/callback` work too.
fn split_uri(uri: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, fragment) = match uri.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (uri, None),
    };
    match rest.split_once('?') {
        Some((base, query)) => (base, Some(query), fragment),
        None => (rest, None, fragment),
    }
}

/// Adds parameters to the query of `uri`, keeping its existing ones; `replace`
/// drops existing values of the added names first (Go's `Values.Set` vs `Add`).
/// The query is re-encoded sorted by name, as Go's `url.Values.Encode`.
pub(crate) fn add_query_params(uri: &str, added: Vec<(String, String)>, replace: bool) -> String {
    let (base, query, fragment) = split_uri(uri);
    let mut pairs: Vec<(String, String)> = query
        .map(|q| {
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    if replace {
        pairs.retain(|(k, _)| !added.iter().any(|(name, _)| name == k));
    }
    pairs.extend(added);
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = format!("{base}?{}", encode_pairs(&pairs));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// `uri` with its fragment replaced by the form-encoded `params` (sorted by name).
fn with_fragment(uri: &str, mut params: Vec<(String, String)>) -> String {
    let (base, query, _) = split_uri(uri);
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = base.to_owned();
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out.push('#');
    out.push_str(&encode_pairs(&params));
    out
}

fn encode_pairs(pairs: &[(String, String)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        serializer.append_pair(k, v);
    }
    serializer.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::crypto::token_hash;
    use crate::keys::SigningAlgorithm;
    use crate::oidc::test_support::{TestSigner, jwt_payload, secs, settings, t0, user_claims};
    use crate::storage::memory::MemoryStorage;

    const CONNECTORS: [&str; 2] = ["mock", "ldap"];

    fn params(extra: &[(&str, &str)]) -> AuthorizeParams {
        let mut pairs = vec![
            ("client_id", "web"),
            ("redirect_uri", "https://app.example/cb"),
            ("response_type", "code"),
            ("scope", "openid email"),
            ("state", "xyz"),
        ];
        for (k, v) in extra {
            pairs.retain(|(key, _)| key != k);
            pairs.push((k, v));
        }
        AuthorizeParams::from_pairs(pairs)
    }

    fn validate(p: &AuthorizeParams) -> Result<ValidatedAuthorization, AuthorizeError> {
        validate_authorize_request(p, &settings(), &CONNECTORS)
    }

    fn implicit_settings() -> Settings {
        let mut s = settings();
        s.oauth2.response_types = vec!["code".into(), "id_token".into(), "token".into()];
        s
    }

    /// Asserts a redirected error and returns its description.
    fn redirected(
        result: Result<ValidatedAuthorization, AuthorizeError>,
        code: ErrorCode,
    ) -> String {
        match result {
            Err(AuthorizeError::Redirect(err)) => {
                assert_eq!(err.error, code, "{err:?}");
                assert_eq!(err.state, "xyz");
                err.description
            }
            other => panic!("expected redirect {code}, got {other:?}"),
        }
    }

    fn page(result: Result<impl std::fmt::Debug, AuthorizeError>) -> (u16, String) {
        match result {
            Err(AuthorizeError::Page { status, message }) => (status, message),
            other => panic!("expected page, got {other:?}"),
        }
    }

    #[test]
    fn from_pairs_takes_first_value_and_ignores_unknown() {
        let p = AuthorizeParams::from_pairs([("state", "a"), ("state", "b"), ("login_hint", "x")]);
        assert_eq!(p.state, "a");
        assert_eq!(p.client_id, "");
    }

    #[test]
    fn valid_request_is_accepted_with_plain_default() {
        let v = validate(&params(&[("code_challenge", CHALLENGE), ("nonce", "n")])).unwrap();
        assert_eq!(v.client_id, "web");
        assert_eq!(v.scopes, ["openid", "email"]);
        assert_eq!(v.response_types, ["code"]);
        assert_eq!(v.pkce.code_challenge_method, "plain");
        assert!(!v.force_approval_prompt);
        assert_eq!(v.implied_grant_type(), "authorization_code");
    }

    #[test]
    fn unknown_client_is_displayed_404() {
        assert_eq!(
            page(validate(&params(&[("client_id", "ghost")]))),
            (404, "Invalid client_id.".into())
        );
    }

    #[test]
    fn redirect_mismatch_is_displayed_400() {
        for uri in [
            "https://app.example/cb/",
            "https://app.example/c",
            "https://evil.example/cb",
            "",
        ] {
            let (status, message) = page(validate(&params(&[("redirect_uri", uri)])));
            assert_eq!(
                (status, message.as_str()),
                (400, "Unregistered redirect_uri."),
                "{uri}"
            );
        }
    }

    #[test]
    fn redirect_uri_rules_match_dex() {
        let s = settings();
        let client = |id: &str| s.clients.iter().find(|c| c.id == id).unwrap();
        let (web, cli, spa) = (client("web"), client("public-cli"), client("public-spa"));
        assert!(valid_redirect_uri(web, "https://app.example/cb"));
        assert!(!valid_redirect_uri(web, "https://app.example/cb?x=1"));
        assert!(!valid_redirect_uri(web, "http://localhost:8080/cb"));
        assert!(!valid_redirect_uri(web, OOB_REDIRECT_URI));
        for ok in [
            OOB_REDIRECT_URI,
            "/device/callback",
            "http://localhost",
            "http://localhost/",
            "http://localhost:8080/cb?x=1",
            "http://127.0.0.1:5555/callback",
            "http://127.0.0.1",
            "http://[::1]:8000/",
            "http://[::1]/",
        ] {
            assert!(valid_redirect_uri(cli, ok), "{ok}");
        }
        for bad in [
            "https://localhost/cb",
            "http://localhost.localhost:8080/",
            "http://foo.com/bar",
            "http://localhost:abc/",
            "http://127.0.0.1.evil.example/",
            "localhost:8080",
            // Not sendable in a Location header as they are.
            "http://localhost:8080/a\nb",
            "http://localhost:8080/caf\u{e9}",
            "http://localhost:8080/a b",
        ] {
            assert!(!valid_redirect_uri(cli, bad), "{bad}");
        }
        assert!(valid_redirect_uri(spa, "https://spa.example/cb"));
        assert!(!valid_redirect_uri(spa, "http://localhost:8080/"));
        assert!(!valid_redirect_uri(spa, OOB_REDIRECT_URI));
    }

    #[test]
    fn device_callback_is_rewritten_under_issuer_path_for_public_clients() {
        let v = validate(&params(&[
            ("client_id", "public-cli"),
            ("redirect_uri", "/device/callback"),
        ]))
        .unwrap();
        assert_eq!(v.redirect_uri, "/dex/device/callback");
        assert_eq!(
            v.implied_grant_type(),
            "urn:ietf:params:oauth:grant-type:device_code"
        );
    }

    #[test]
    fn oversized_state_is_displayed_and_other_params_redirected() {
        let huge_state = "s".repeat(MAX_STATE_LEN + 1);
        let (status, message) = page(validate(&params(&[("state", &huge_state)])));
        assert_eq!(status, 400);
        assert!(message.contains("state"), "{message}");
        // A state just under the limit is fine.
        assert!(validate(&params(&[("state", &"s".repeat(MAX_STATE_LEN))])).is_ok());
        let huge = "n".repeat(MAX_PARAM_LEN + 1);
        let desc = redirected(
            validate(&params(&[("nonce", &huge)])),
            ErrorCode::InvalidRequest,
        );
        assert!(desc.contains("\"nonce\" is too long"), "{desc}");
        let desc = redirected(
            validate(&params(&[("scope", &huge)])),
            ErrorCode::InvalidRequest,
        );
        assert!(desc.contains("\"scope\""), "{desc}");
        let (status, _) = page(validate(&params(&[("redirect_uri", &huge)])));
        assert_eq!(status, 400);
    }

    #[test]
    fn connector_id_must_exist_and_be_allowed() {
        assert!(validate(&params(&[("connector_id", "mock")])).is_ok());
        let desc = redirected(
            validate(&params(&[("connector_id", "nope")])),
            ErrorCode::InvalidRequest,
        );
        assert_eq!(desc, "Invalid ConnectorID");
        let p = params(&[
            ("client_id", "limited"),
            ("redirect_uri", "https://limited.example/cb"),
            ("connector_id", "mock"),
        ]);
        let desc = redirected(validate(&p), ErrorCode::InvalidRequest);
        assert_eq!(desc, "Connector not allowed for this client");
    }

    /// 43 base64url characters: a valid S256 (and plain) challenge.
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn code_challenges_have_the_rfc_7636_shape() {
        let check = |challenge: &str, method: &str| {
            validate(&params(&[
                ("code_challenge", challenge),
                ("code_challenge_method", method),
            ]))
        };
        assert!(check(CHALLENGE, "S256").is_ok());
        assert!(check(&"a~b.c_d-".repeat(16), "plain").is_ok());
        for (challenge, method) in [
            (&CHALLENGE[..42], "S256"),
            (&format!("{CHALLENGE}A"), "S256"),
            (&CHALLENGE.replace('-', "."), "S256"),
            (&"a".repeat(42), "plain"),
            (&"a".repeat(129), "plain"),
            (&format!("{} ", &CHALLENGE[..42]), "plain"),
            (&"é".repeat(30), "plain"),
        ] {
            let desc = redirected(check(challenge, method), ErrorCode::InvalidRequest);
            assert!(
                desc.starts_with("Invalid code_challenge") || desc.contains("too long"),
                "{challenge:?} {method}: {desc}"
            );
        }
    }

    #[test]
    fn stored_free_text_parameters_are_bounded() {
        for (name, max) in [
            ("nonce", MAX_NONCE_LEN),
            ("scope", MAX_SCOPE_LEN),
            ("response_type", MAX_RESPONSE_TYPE_LEN),
            ("code_challenge", MAX_PKCE_LEN),
        ] {
            let desc = redirected(
                validate(&params(&[(name, &"x".repeat(max + 1))])),
                ErrorCode::InvalidRequest,
            );
            assert_eq!(
                desc,
                format!("Parameter \"{name}\" is too long (at most {max} bytes).")
            );
        }
    }

    #[test]
    fn request_parameter_is_not_supported() {
        let desc = redirected(
            validate(&params(&[("request", "eyJ...")])),
            ErrorCode::RequestNotSupported,
        );
        assert_eq!(desc, "Server does not support request parameter.");
    }

    #[test]
    fn pkce_methods_are_checked_against_config() {
        assert!(
            validate(&params(&[
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S256")
            ]))
            .is_ok()
        );
        assert!(
            validate(&params(&[
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "plain")
            ]))
            .is_ok()
        );
        let desc = redirected(
            validate(&params(&[
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S512"),
            ])),
            ErrorCode::InvalidRequest,
        );
        assert_eq!(desc, r#"Unsupported PKCE challenge method ("S512")."#);
        // A method without a challenge is not checked (Dex).
        assert!(validate(&params(&[("code_challenge_method", "bogus")])).is_ok());
        let mut only_s256 = settings();
        only_s256.oauth2.pkce_methods = vec!["S256".into()];
        let err = validate_authorize_request(
            &params(&[("code_challenge", CHALLENGE)]),
            &only_s256,
            &CONNECTORS,
        );
        assert_eq!(
            redirected(err, ErrorCode::InvalidRequest),
            r#"Unsupported PKCE challenge method ("plain")."#
        );
    }

    #[test]
    fn pkce_enforcement_global_and_per_client() {
        let mut enforce = settings();
        enforce.oauth2.pkce_enforce = true;
        let err = validate_authorize_request(&params(&[]), &enforce, &CONNECTORS);
        assert_eq!(
            redirected(err, ErrorCode::InvalidRequest),
            "PKCE is required. The code_challenge parameter must be provided."
        );
        assert!(
            validate_authorize_request(
                &params(&[("code_challenge", CHALLENGE)]),
                &enforce,
                &CONNECTORS
            )
            .is_ok()
        );
        let p = params(&[
            ("client_id", "pkce-app"),
            ("redirect_uri", "https://pkce.example/cb"),
        ]);
        redirected(validate(&p), ErrorCode::InvalidRequest);
    }

    #[test]
    fn scope_errors_are_invalid_scope_redirects() {
        let desc = redirected(
            validate(&params(&[("scope", "email profile")])),
            ErrorCode::InvalidScope,
        );
        assert_eq!(desc, r#"Missing required scope(s) ["openid"]."#);
        let desc = redirected(
            validate(&params(&[("scope", "openid bogus")])),
            ErrorCode::InvalidScope,
        );
        assert_eq!(desc, r#"Unrecognized scope(s) ["bogus"]"#);
        let desc = redirected(
            validate(&params(&[(
                "scope",
                "openid audience:server:client_id:other",
            )])),
            ErrorCode::InvalidScope,
        );
        assert_eq!(
            desc,
            r#"Client can't request scope(s) ["audience:server:client_id:other"]"#
        );
    }

    #[test]
    fn scopes_are_checked_before_response_types() {
        let p = params(&[("scope", "email"), ("response_type", "bogus")]);
        redirected(validate(&p), ErrorCode::InvalidScope);
    }

    #[test]
    fn response_type_rules() {
        let desc = redirected(
            validate(&params(&[("response_type", "token id_token")])),
            ErrorCode::UnsupportedResponseType,
        );
        assert_eq!(desc, r#"Unsupported response type "token""#);
        let desc = redirected(
            validate(&params(&[("response_type", "code bogus")])),
            ErrorCode::InvalidRequest,
        );
        assert_eq!(desc, r#"Invalid response type "bogus""#);
        let desc = redirected(
            validate(&params(&[("response_type", "")])),
            ErrorCode::InvalidRequest,
        );
        assert_eq!(desc, "No response_type provided");

        let s = implicit_settings();
        let v = |p: &AuthorizeParams| validate_authorize_request(p, &s, &CONNECTORS);
        let desc = redirected(
            v(&params(&[("response_type", "token"), ("nonce", "n")])),
            ErrorCode::InvalidRequest,
        );
        assert_eq!(
            desc,
            "Response type 'token' must be provided with type 'id_token' and/or 'code'"
        );
        let desc = redirected(
            v(&params(&[("response_type", "id_token")])),
            ErrorCode::InvalidRequest,
        );
        assert_eq!(desc, "Response type 'token' requires a 'nonce' value.");
        let ok = v(&params(&[
            ("response_type", "id_token token"),
            ("nonce", "n"),
        ]))
        .unwrap();
        assert_eq!(ok.implied_grant_type(), "implicit");
        // Hybrid with code needs no nonce.
        assert!(v(&params(&[("response_type", "code id_token")])).is_ok());
    }

    #[test]
    fn combined_response_type_in_config_is_not_enough() {
        // Dex checks each component, so listing only "code id_token" rejects it.
        let mut s = settings();
        s.oauth2.response_types = vec!["code".into(), "code id_token".into()];
        let err = validate_authorize_request(
            &params(&[("response_type", "code id_token")]),
            &s,
            &CONNECTORS,
        );
        redirected(err, ErrorCode::UnsupportedResponseType);
    }

    #[test]
    fn token_with_oob_redirect_is_rejected() {
        let s = implicit_settings();
        let p = params(&[
            ("client_id", "public-cli"),
            ("redirect_uri", OOB_REDIRECT_URI),
            ("response_type", "code token"),
        ]);
        let err = validate_authorize_request(&p, &s, &CONNECTORS);
        assert_eq!(
            redirected(err, ErrorCode::InvalidRequest),
            "Cannot use response type 'token' with redirect_uri 'urn:ietf:wg:oauth:2.0:oob'."
        );
    }

    #[test]
    fn redirected_errors_use_the_query_even_for_implicit() {
        let s = implicit_settings();
        let p = params(&[("response_type", "id_token token")]);
        match validate_authorize_request(&p, &s, &CONNECTORS) {
            Err(AuthorizeError::Redirect(err)) => {
                let location = err.location();
                assert!(
                    location.starts_with("https://app.example/cb?error=invalid_request&"),
                    "{location}"
                );
                assert!(location.ends_with("&state=xyz"), "{location}");
                assert!(!location.contains('#'));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn approval_prompt_force_is_recorded() {
        assert!(
            validate(&params(&[("approval_prompt", "force")]))
                .unwrap()
                .force_approval_prompt
        );
        assert!(
            !validate(&params(&[("approval_prompt", "auto")]))
                .unwrap()
                .force_approval_prompt
        );
    }

    fn stored_request(storage: &dyn Storage, extra: &[(&str, &str)], s: &Settings) -> AuthRequest {
        let v = validate_authorize_request(&params(extra), s, &CONNECTORS).unwrap();
        create_auth_request(storage, s, &v, "mock", "browser-a", t0()).unwrap()
    }

    #[test]
    fn create_auth_request_stores_id_expiry_and_key() {
        let storage = MemoryStorage::new();
        let s = settings();
        let req = stored_request(&storage, &[], &s);
        assert_eq!(req.id.len(), 25);
        assert_eq!(req.hmac_key.len(), 51);
        assert_eq!(req.expiry, t0() + UNUSED_AUTH_REQUEST_LIFETIME);
        assert!(!req.logged_in);
        assert_eq!(storage.get_auth_request(&req.id).unwrap(), req);
    }

    #[test]
    fn unused_auth_requests_are_short_lived_and_a_login_extends_them() {
        let storage = MemoryStorage::new();
        let mut s = settings();
        // A configured lifetime shorter than 10 minutes is kept as is.
        s.expiry.auth_requests = secs(120);
        assert_eq!(stored_request(&storage, &[], &s).expiry, t0() + secs(120));
        s.expiry.auth_requests = secs(24 * 3600);
        let req = stored_request(&storage, &[], &s);
        assert_eq!(req.expiry, t0() + secs(600));
        let login = t0() + secs(300);
        let extended = finalize_login(
            &storage,
            &s,
            &req.id,
            user_claims(),
            None,
            false,
            "",
            login,
            login,
        )
        .unwrap();
        assert_eq!(extended.expiry, login + secs(24 * 3600));
        assert_eq!(
            storage.get_auth_request(&req.id).unwrap().expiry,
            extended.expiry
        );
    }

    #[test]
    fn create_auth_request_checks_path_connector() {
        let storage = MemoryStorage::new();
        let s = settings();
        let v = validate(&params(&[("connector_id", "ldap")])).unwrap();
        let (status, message) = page(create_auth_request(
            &storage,
            &s,
            &v,
            "mock",
            "browser-a",
            t0(),
        ));
        assert_eq!((status, message.as_str()), (400, "Bad connector ID"));
        let v = validate(&params(&[
            ("client_id", "limited"),
            ("redirect_uri", "https://limited.example/cb"),
        ]))
        .unwrap();
        let (status, _) = page(create_auth_request(
            &storage,
            &s,
            &v,
            "mock",
            "browser-a",
            t0(),
        ));
        assert_eq!(status, 403);
        assert!(create_auth_request(&storage, &s, &v, "ldap", "browser-a", t0()).is_ok());
    }

    #[test]
    fn approval_url_carries_req_and_hmac() {
        let storage = MemoryStorage::new();
        let s = settings();
        let req = stored_request(&storage, &[], &s);
        let url = approval_url(&s, &req);
        let expected = format!(
            "https://idp.example/dex/approval?req={}&hmac={}",
            req.id,
            approval_hmac(&req)
        );
        assert_eq!(url, expected);
    }

    #[test]
    fn approval_hmac_verifies_only_for_its_request() {
        let storage = MemoryStorage::new();
        let s = settings();
        let a = stored_request(&storage, &[], &s);
        let b = stored_request(&storage, &[], &s);
        let mac = approval_hmac(&a);
        assert_eq!(mac.len(), 43);
        assert!(verify_approval_hmac(&a, &mac));
        assert!(!verify_approval_hmac(&b, &mac));
        assert!(!verify_approval_hmac(&a, &format!("{mac}A")));
        assert!(!verify_approval_hmac(&a, "not base64 !"));
    }

    #[test]
    fn load_for_approval_follows_dex_statuses() {
        let storage = MemoryStorage::new();
        let s = settings();
        let req = stored_request(&storage, &[], &s);
        let mac = approval_hmac(&req);
        assert_eq!(page(load_for_approval(&storage, &req.id, "")).0, 401);
        assert_eq!(page(load_for_approval(&storage, "", &mac)).0, 400);
        assert_eq!(page(load_for_approval(&storage, "unknown", &mac)).0, 400);
        // A login in progress with a forged MAC is refused before its state shows.
        assert_eq!(page(load_for_approval(&storage, &req.id, "AAAA")).0, 401);
        assert_eq!(
            page(load_for_approval(&storage, &req.id, &mac)),
            (500, "Login process not yet finalized.".into())
        );
        let done = finalize_login(
            &storage,
            &settings(),
            &req.id,
            user_claims(),
            None,
            false,
            "",
            t0(),
            t0(),
        )
        .unwrap();
        assert_eq!(page(load_for_approval(&storage, &req.id, "AAAA")).0, 401);
        // The key rotated at login: a MAC handed out before is void.
        assert_eq!(page(load_for_approval(&storage, &req.id, &mac)).0, 401);
        assert!(
            load_for_approval(&storage, &req.id, &approval_hmac(&done))
                .unwrap()
                .logged_in
        );
    }

    #[test]
    fn a_logged_in_request_takes_no_second_login() {
        let storage = MemoryStorage::new();
        let s = settings();
        let req = stored_request(&storage, &[], &s);
        let first = finalize_login(
            &storage,
            &settings(),
            &req.id,
            user_claims(),
            None,
            false,
            "",
            t0(),
            t0(),
        )
        .unwrap();
        assert_ne!(first.hmac_key, req.hmac_key);
        let mut other = user_claims();
        other.user_id = "someone-else".into();
        let (status, message) = page(finalize_login(
            &storage,
            &settings(),
            &req.id,
            other,
            None,
            false,
            "",
            t0(),
            t0(),
        ));
        assert_eq!(status, 400);
        assert!(message.contains("already been completed"), "{message}");
        assert_eq!(storage.get_auth_request(&req.id).unwrap(), first);
    }

    #[test]
    fn finalize_login_records_identity_and_offline_session() {
        let storage = MemoryStorage::new();
        let s = settings();
        let req = stored_request(&storage, &[("scope", "openid offline_access")], &s);
        let now = t0() + secs(5);
        let done = finalize_login(
            &storage,
            &settings(),
            &req.id,
            user_claims(),
            Some(b"up".to_vec()),
            true,
            "",
            now,
            now,
        )
        .unwrap();
        assert!(done.logged_in);
        assert_eq!(done.auth_time, Some(now));
        assert_eq!(done.claims, user_claims());
        let session = storage
            .get_offline_session("0-385-28089-0", "mock")
            .unwrap();
        assert_eq!(session.connector_data, Some(b"up".to_vec()));
        assert!(session.refresh.is_empty());

        // Without refresh support no offline session is made.
        let storage = MemoryStorage::new();
        let req = stored_request(&storage, &[("scope", "openid offline_access")], &s);
        finalize_login(
            &storage,
            &settings(),
            &req.id,
            user_claims(),
            None,
            false,
            "",
            now,
            now,
        )
        .unwrap();
        assert_eq!(
            storage.get_offline_session("0-385-28089-0", "mock"),
            Err(StorageError::NotFound)
        );
    }

    #[test]
    fn finalize_login_on_expired_or_unknown_request_fails() {
        let storage = MemoryStorage::new();
        let s = settings();
        let req = stored_request(&storage, &[], &s);
        let late = req.expiry + secs(1);
        assert_eq!(
            page(finalize_login(
                &storage,
                &settings(),
                &req.id,
                user_claims(),
                None,
                false,
                "",
                late,
                late
            )),
            (400, "User session has expired.".into())
        );
        assert_eq!(
            page(finalize_login(
                &storage,
                &settings(),
                "nope",
                user_claims(),
                None,
                false,
                "",
                t0(),
                t0()
            ))
            .0,
            400
        );
    }

    fn logged_in(storage: &MemoryStorage, extra: &[(&str, &str)], s: &Settings) -> AuthRequest {
        let req = stored_request(storage, extra, s);
        finalize_login(
            storage,
            s,
            &req.id,
            user_claims(),
            None,
            false,
            "",
            t0(),
            t0(),
        )
        .unwrap()
    }

    fn redirect_url(r: Result<AuthorizeResponse, AuthorizeError>) -> String {
        match r {
            Ok(AuthorizeResponse::Redirect(url)) => url,
            other => panic!("expected redirect, got {other:?}"),
        }
    }

    #[test]
    fn code_flow_response_redirects_with_code_and_state() {
        let storage = MemoryStorage::new();
        let s = settings();
        let signer = TestSigner::default();
        let req = logged_in(
            &storage,
            &[("redirect_uri", "https://app.example/cb2?keep=1")],
            &s,
        );
        let url = redirect_url(issue_response(
            &storage,
            &s,
            &signer,
            &req.id,
            t0() + secs(1),
        ));
        let (base, query) = url.split_once('?').unwrap();
        assert_eq!(base, "https://app.example/cb2");
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["code", "keep", "state"]);
        let code = &pairs[0].1;
        assert_eq!(code.len(), 25);
        let stored = storage.get_auth_code(code).unwrap();
        assert_eq!(stored.expiry, t0() + secs(1) + AUTH_CODE_LIFETIME);
        assert_eq!(stored.auth_time, Some(t0()));
        assert_eq!(stored.redirect_uri, "https://app.example/cb2?keep=1");
    }

    #[test]
    fn empty_state_is_still_sent() {
        let storage = MemoryStorage::new();
        let s = settings();
        let req = logged_in(&storage, &[("state", "")], &s);
        let url = redirect_url(issue_response(
            &storage,
            &s,
            &TestSigner::default(),
            &req.id,
            t0(),
        ));
        assert!(url.ends_with("&state="), "{url}");
    }

    #[test]
    fn a_login_and_its_response_commit_once_each() {
        let storage = crate::storage::sqlite::SqliteStorage::open_in_memory().unwrap();
        let commits = storage.count_commits();
        let count = || commits.load(std::sync::atomic::Ordering::SeqCst);
        let s = settings();
        let signer = TestSigner::default();
        for (scope, offline) in [("openid", false), ("openid offline_access", true)] {
            let req = stored_request(&storage, &[("scope", scope)], &s);
            let before = count();
            let done = finalize_login(
                &storage,
                &s,
                &req.id,
                user_claims(),
                Some(b"up".to_vec()),
                true,
                "",
                t0(),
                t0(),
            )
            .unwrap();
            // The login, the extended expiry and the offline session (Dex
            // creates it at login) in one commit.
            assert_eq!(count() - before, 1, "{scope}");
            assert_eq!(
                storage
                    .get_offline_session(&user_claims().user_id, "mock")
                    .is_ok(),
                offline,
                "{scope}"
            );
            assert_eq!(done.expiry, t0() + s.expiry.auth_requests);
            let before = count();
            let url = redirect_url(issue_response(&storage, &s, &signer, &req.id, t0()));
            assert_eq!(count() - before, 1, "{scope}");
            let code = url
                .split("code=")
                .nth(1)
                .unwrap()
                .split('&')
                .next()
                .unwrap();
            assert!(storage.get_auth_code(code).is_ok());
            assert_eq!(
                storage.get_auth_request(&req.id),
                Err(StorageError::NotFound)
            );
        }
    }

    fn new_browser_session(id: &str) -> BrowserSession {
        let cookie = crate::oidc::session::SessionCookie::renewed(id);
        crate::oidc::session::new_session(
            &crate::config::SessionSettings::default(),
            &cookie,
            user_claims(),
            None,
            "mock",
            "example-app",
            t0(),
        )
    }

    /// [`finish_login`] with the test signer at `t0`.
    fn finish(
        storage: &dyn Storage,
        s: &Settings,
        request: &AuthRequest,
        login: &LoginFacts<'_>,
        granted: &[String],
        browser_session: Option<BrowserSessionWrite<'_>>,
    ) -> Result<Option<(LoginFinished, Option<BrowserSession>)>, AuthorizeError> {
        finish_login(
            storage,
            s,
            &TestSigner::default(),
            request,
            login,
            granted,
            browser_session,
            t0(),
        )
    }

    fn facts(session_id: &str) -> LoginFacts<'_> {
        LoginFacts {
            claims: user_claims(),
            connector_data: Some(b"up".to_vec()),
            connector_supports_refresh: true,
            session_id,
            authenticated_at: t0(),
        }
    }

    #[test]
    fn a_login_without_approval_commits_once_with_its_response() {
        let storage = crate::storage::sqlite::SqliteStorage::open_in_memory().unwrap();
        let commits = storage.count_commits();
        let mut s = settings();
        s.oauth2.skip_approval_screen = true;
        let req = stored_request(&storage, &[("scope", "openid offline_access")], &s);
        let session = new_browser_session("sid-1");
        let before = commits.load(std::sync::atomic::Ordering::SeqCst);
        let (finished, written) = finish(
            &storage,
            &s,
            &req,
            &facts("sid-1"),
            &[],
            Some(BrowserSessionWrite::Create(&session)),
        )
        .unwrap()
        .unwrap();
        // The login, the browser session, the offline session and the swap of
        // the request for the code: one commit.
        assert_eq!(
            commits.load(std::sync::atomic::Ordering::SeqCst) - before,
            1
        );
        assert_eq!(written, Some(session.clone()));
        let LoginFinished::Response(response) = finished else {
            panic!("expected the response, got {finished:?}");
        };
        let url = redirect_url(Ok(response));
        let code_id = url
            .split("code=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        let code = storage.get_auth_code(code_id).unwrap();
        assert_eq!(code.session_id, "sid-1");
        assert_eq!(code.claims, user_claims());
        assert_eq!(code.auth_time, Some(t0()));
        assert_eq!(code.connector_data, Some(b"up".to_vec()));
        assert_eq!(
            storage.get_auth_request(&req.id),
            Err(StorageError::NotFound)
        );
        assert_eq!(storage.get_browser_session("sid-1").unwrap(), session);
        let offline = storage
            .get_offline_session(&user_claims().user_id, "mock")
            .unwrap();
        assert_eq!(offline.connector_data, Some(b"up".to_vec()));

        // A second submit of the same login finds the request gone.
        let again = finish(
            &storage,
            &s,
            &req,
            &facts("sid-2"),
            &[],
            Some(BrowserSessionWrite::Create(&new_browser_session("sid-2"))),
        );
        assert_eq!(page(again), (400, "User session error.".to_owned()));
        assert_eq!(
            storage.get_browser_session("sid-2"),
            Err(StorageError::NotFound)
        );
    }

    #[test]
    fn a_login_that_needs_approval_is_stored_logged_in() {
        let storage = MemoryStorage::new();
        let s = settings();
        let req = stored_request(&storage, &[("scope", "openid email")], &s);
        // Consent for less than is asked: the page is shown.
        let granted = vec!["openid".to_owned()];
        let (finished, _) = finish(&storage, &s, &req, &facts(""), &granted, None)
            .unwrap()
            .unwrap();
        let stored = storage.get_auth_request(&req.id).unwrap();
        assert!(stored.logged_in);
        assert_ne!(stored.hmac_key, req.hmac_key);
        assert_eq!(finished, LoginFinished::Approval(approval_url(&s, &stored)));
        assert!(verify_approval_hmac(
            &stored,
            approval_hmac(&stored).as_str()
        ));
        // A login of the old copy again is refused: the request changed.
        let again = finish(&storage, &s, &req, &facts(""), &granted, None);
        assert_eq!(
            page(again).1,
            "This login has already been completed. Please start again from the application."
        );
        // Consent covering the request: the response comes at once.
        let req = stored_request(&storage, &[("scope", "openid email")], &s);
        let granted = vec!["openid".to_owned(), "email".to_owned()];
        let (finished, _) = finish(&storage, &s, &req, &facts(""), &granted, None)
            .unwrap()
            .unwrap();
        assert!(
            matches!(finished, LoginFinished::Response(_)),
            "{finished:?}"
        );
    }

    #[test]
    fn a_login_into_an_ended_browser_session_writes_nothing_and_says_so() {
        let storage = MemoryStorage::new();
        let mut s = settings();
        s.oauth2.skip_approval_screen = true;
        let req = stored_request(&storage, &[("scope", "openid offline_access")], &s);
        let mut never = |_: BrowserSession| -> crate::storage::StorageResult<BrowserSession> {
            panic!("no session to update")
        };
        let outcome = finish(
            &storage,
            &s,
            &req,
            &facts("sid-ended"),
            &[],
            Some(BrowserSessionWrite::Update {
                id: "sid-ended",
                updater: &mut never,
            }),
        )
        .unwrap();
        assert_eq!(outcome, None);
        assert_eq!(storage.get_auth_request(&req.id).unwrap(), req);
        assert_eq!(
            storage.get_offline_session(&user_claims().user_id, "mock"),
            Err(StorageError::NotFound)
        );
    }

    #[test]
    fn a_failed_signature_leaves_the_request_for_a_retry() {
        let storage = MemoryStorage::new();
        let s = implicit_settings();
        let req = logged_in(
            &storage,
            &[("response_type", "code id_token"), ("nonce", "n")],
            &s,
        );
        let failing = TestSigner {
            fail: true,
            ..TestSigner::default()
        };
        assert_eq!(
            page(issue_response(&storage, &s, &failing, &req.id, t0())).0,
            500
        );
        assert!(storage.get_auth_request(&req.id).is_ok());
        let url = redirect_url(issue_response(
            &storage,
            &s,
            &TestSigner::default(),
            &req.id,
            t0(),
        ));
        assert!(url.contains("code="), "{url}");
    }

    #[test]
    fn double_submit_is_rejected() {
        let storage = MemoryStorage::new();
        let s = settings();
        let signer = TestSigner::default();
        let req = logged_in(&storage, &[], &s);
        redirect_url(issue_response(&storage, &s, &signer, &req.id, t0()));
        assert_eq!(
            page(issue_response(&storage, &s, &signer, &req.id, t0())),
            (400, "User session error.".into())
        );
    }

    #[test]
    fn expired_or_unfinished_auth_request_is_not_issued() {
        let storage = MemoryStorage::new();
        let s = settings();
        let signer = TestSigner::default();
        let req = logged_in(&storage, &[], &s);
        assert_eq!(
            page(issue_response(
                &storage,
                &s,
                &signer,
                &req.id,
                req.expiry + secs(1)
            )),
            (400, "User session has expired.".into())
        );
        let fresh = stored_request(&storage, &[], &s);
        assert_eq!(
            page(issue_response(&storage, &s, &signer, &fresh.id, t0())).0,
            500
        );
    }

    fn fragment(url: &str) -> Vec<(String, String)> {
        let (_, frag) = url.split_once('#').unwrap();
        form_urlencoded::parse(frag.as_bytes())
            .into_owned()
            .collect()
    }

    #[test]
    fn implicit_response_puts_tokens_in_fragment() {
        let storage = MemoryStorage::new();
        let s = implicit_settings();
        let signer = TestSigner::default();
        let req = logged_in(
            &storage,
            &[("response_type", "id_token token"), ("nonce", "n1")],
            &s,
        );
        let url = redirect_url(issue_response(&storage, &s, &signer, &req.id, t0()));
        assert!(url.starts_with("https://app.example/cb#"), "{url}");
        let f = fragment(&url);
        let keys: Vec<&str> = f.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "access_token",
                "expires_in",
                "id_token",
                "state",
                "token_type"
            ]
        );
        let get = |k: &str| f.iter().find(|(key, _)| key == k).unwrap().1.clone();
        assert_eq!(get("token_type"), "bearer");
        assert_eq!(get("expires_in"), "86400");
        let id = jwt_payload(&get("id_token"));
        assert_eq!(id["nonce"], "n1");
        assert_eq!(
            id["at_hash"],
            token_hash(SigningAlgorithm::RS256, &get("access_token")).as_str()
        );
        assert!(id.get("c_hash").is_none());
        assert_eq!(id["auth_time"], json_secs(t0()));
    }

    fn json_secs(t: SystemTime) -> serde_json::Value {
        serde_json::json!(crate::oidc::mint::unix_seconds(t))
    }

    #[test]
    fn hybrid_response_has_code_and_c_hash_without_expires_in() {
        let storage = MemoryStorage::new();
        let s = implicit_settings();
        let signer = TestSigner::default();
        let req = logged_in(&storage, &[("response_type", "code id_token token")], &s);
        let f = fragment(&redirect_url(issue_response(
            &storage,
            &s,
            &signer,
            &req.id,
            t0(),
        )));
        let get = |k: &str| f.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert!(get("expires_in").is_none());
        let code = get("code").unwrap();
        let id = jwt_payload(&get("id_token").unwrap());
        assert_eq!(
            id["c_hash"],
            token_hash(SigningAlgorithm::RS256, &code).as_str()
        );
        assert!(storage.get_auth_code(&code).is_ok());
    }

    #[test]
    fn oob_redirect_shows_the_code() {
        let storage = MemoryStorage::new();
        let s = settings();
        let req = logged_in(
            &storage,
            &[
                ("client_id", "public-cli"),
                ("redirect_uri", OOB_REDIRECT_URI),
            ],
            &s,
        );
        match issue_response(&storage, &s, &TestSigner::default(), &req.id, t0()).unwrap() {
            AuthorizeResponse::Oob { code } => assert!(storage.get_auth_code(&code).is_ok()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn signing_failure_is_a_500_page() {
        let storage = MemoryStorage::new();
        let s = implicit_settings();
        let signer = TestSigner {
            fail: true,
            ..TestSigner::default()
        };
        let req = logged_in(
            &storage,
            &[("response_type", "id_token"), ("nonce", "n")],
            &s,
        );
        assert_eq!(
            page(issue_response(&storage, &s, &signer, &req.id, t0())).0,
            500
        );
    }

    #[test]
    fn rejected_approval_redirects_access_denied() {
        let storage = MemoryStorage::new();
        let s = settings();
        let req = logged_in(&storage, &[], &s);
        let url = reject_approval(&storage, &req.id).unwrap();
        assert!(
            url.starts_with("https://app.example/cb?error=access_denied&"),
            "{url}"
        );
        assert!(url.ends_with("&state=xyz"), "{url}");
        assert_eq!(
            storage.get_auth_request(&req.id),
            Err(StorageError::NotFound)
        );
        assert_eq!(page(reject_approval(&storage, &req.id)).0, 400);
    }

    #[test]
    fn approval_needed_unless_skipped_and_not_forced() {
        let storage = MemoryStorage::new();
        let mut s = settings();
        let plain = logged_in(&storage, &[], &s);
        let forced = logged_in(&storage, &[("approval_prompt", "force")], &s);
        assert!(needs_approval(&plain, &s, &[]));
        s.oauth2.skip_approval_screen = true;
        assert!(!needs_approval(&plain, &s, &[]));
        assert!(needs_approval(&forced, &s, &[]));
    }
}
