//! The authorization endpoint's rules: request validation in Dex's order, the
//! auth request lifecycle (create → login finalized → approval → response), and
//! the redirect URLs sent back to the client (dex-protocol.md §5).

use std::net::IpAddr;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::error::{AuthorizeError, ErrorCode, RedirectError};
use super::ids::{new_hmac_key, new_id};
use super::scopes::{self, check_scopes, go_quote};
use super::token::upsert_offline_session;
use super::tokens::{Minter, TokenSigner, TokenSubject};
use super::{MAX_PARAM_LEN, MAX_STATE_LEN};
use crate::config::settings::{AUTH_CODE_LIFETIME, Client, Settings};
use crate::storage::{AuthCode, AuthRequest, Claims, Pkce, Storage, StorageError};

/// The out-of-band redirect URI: the code is shown on a page instead.
pub const OOB_REDIRECT_URI: &str = "urn:ietf:wg:oauth:2.0:oob";
/// The device flow's internal redirect target (relative to the issuer path).
pub const DEVICE_CALLBACK_PATH: &str = "/device/callback";

/// The `/auth` parameters Dex reads (dex-protocol.md §5.1); everything else is
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
    pub force_approval_prompt: bool,
}

impl ValidatedAuthorization {
    /// The grant the request implies, for filtering connectors by their
    /// `grantTypes`: `urn:ietf:params:oauth:grant-type:device_code` for the device
    /// callback, `implicit` when tokens come from `/auth`, else `authorization_code`.
    pub fn implied_grant_type(&self) -> &'static str {
        if self.redirect_uri.ends_with(DEVICE_CALLBACK_PATH) {
            "urn:ietf:params:oauth:grant-type:device_code"
        } else if self
            .response_types
            .iter()
            .any(|t| t == "token" || t == "id_token")
        {
            "implicit"
        } else {
            "authorization_code"
        }
    }
}

/// Validates an authorization request for `/auth/{connector}` in Dex's order
/// (dex-protocol.md §5.3). `connector_ids` are the known connectors.
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
        .clients
        .iter()
        .find(|c| c.id == params.client_id)
        .ok_or_else(|| AuthorizeError::page(404, "Invalid client_id."))?;

    if !valid_redirect_uri(client, &params.redirect_uri) {
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

    for (name, value) in [
        ("response_type", &params.response_type),
        ("scope", &params.scope),
        ("nonce", &params.nonce),
        ("connector_id", &params.connector_id),
        ("code_challenge", &params.code_challenge),
        ("code_challenge_method", &params.code_challenge_method),
        ("approval_prompt", &params.approval_prompt),
    ] {
        if value.len() > MAX_PARAM_LEN {
            return Err(redirect(
                ErrorCode::InvalidRequest,
                format!("Parameter \"{name}\" is too long (at most {MAX_PARAM_LEN} bytes)."),
            ));
        }
    }

    if !params.connector_id.is_empty() {
        if !connector_ids
            .iter()
            .any(|c| c.as_ref() == params.connector_id)
        {
            return Err(redirect(ErrorCode::InvalidRequest, "Invalid ConnectorID".into()));
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

    let method = if params.code_challenge_method.is_empty() {
        "plain"
    } else {
        params.code_challenge_method.as_str()
    };
    if !params.code_challenge.is_empty()
        && !settings.oauth2.pkce_methods.iter().any(|m| m == method)
    {
        return Err(redirect(
            ErrorCode::InvalidRequest,
            format!("Unsupported PKCE challenge method ({}).", go_quote(method)),
        ));
    }
    // `oauth2.pkce.enforce`, and beyond Dex the per-client `requirePKCE`.
    if (settings.oauth2.pkce_enforce || client.require_pkce) && params.code_challenge.is_empty() {
        return Err(redirect(
            ErrorCode::InvalidRequest,
            "PKCE is required. The code_challenge parameter must be provided.".into(),
        ));
    }

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
        return Err(redirect(ErrorCode::InvalidRequest, "No response_type provided".into()));
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
        force_approval_prompt: params.approval_prompt == "force",
    })
}

/// Whether the client may use the connector (`allowedConnectors`; empty = all).
pub fn connector_allowed(client: &Client, connector_id: &str) -> bool {
    client.allowed_connectors.is_empty() || client.allowed_connectors.iter().any(|c| c == connector_id)
}

/// Dex's redirect URI rule: exact match against the registered URIs; a public
/// client with *no* registered URIs also gets the OOB URI, `/device/callback` and
/// any `http://` URL on `localhost` or a loopback IP (any port and path).
pub fn valid_redirect_uri(client: &Client, redirect_uri: &str) -> bool {
    if client.redirect_uris.iter().any(|u| u == redirect_uri) {
        return true;
    }
    if !client.public || !client.redirect_uris.is_empty() {
        return false;
    }
    redirect_uri == OOB_REDIRECT_URI
        || redirect_uri == DEVICE_CALLBACK_PATH
        || is_loopback_http(redirect_uri)
}

fn is_loopback_http(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("http") {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if host_port == "localhost" || is_loopback_ip(host_port) {
        return true;
    }
    split_host_port(host_port).is_some_and(|(host, port)| {
        port.bytes().all(|b| b.is_ascii_digit()) && (host == "localhost" || is_loopback_ip(host))
    })
}

fn is_loopback_ip(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn split_host_port(host_port: &str) -> Option<(&str, &str)> {
    if let Some(rest) = host_port.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        if after.is_empty() {
            return Some((host, ""));
        }
        return Some((host, after.strip_prefix(':')?));
    }
    let (host, port) = host_port.rsplit_once(':')?;
    (!host.contains(':')).then_some((host, port))
}

/// Stores the auth request for a validated request at `/auth/{connector_id}`:
/// 25-char id, expiry `now + expiry.authRequests`, a fresh HMAC key.
///
/// Displayed errors: connector not allowed for the client (403), `connector_id`
/// parameter naming another connector than the path (400 "Bad connector ID"),
/// storage failure (500).
pub fn create_auth_request(
    storage: &dyn Storage,
    settings: &Settings,
    request: &ValidatedAuthorization,
    connector_id: &str,
    now: SystemTime,
) -> Result<AuthRequest, AuthorizeError> {
    let client = settings
        .clients
        .iter()
        .find(|c| c.id == request.client_id)
        .ok_or_else(|| AuthorizeError::page(404, "Invalid client_id."))?;
    if !connector_allowed(client, connector_id) {
        return Err(AuthorizeError::page(403, "Connector not allowed for this client."));
    }
    if !request.connector_id.is_empty() && request.connector_id != connector_id {
        return Err(AuthorizeError::page(400, "Bad connector ID"));
    }
    let expiry = now
        .checked_add(settings.expiry.auth_requests)
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
    };
    storage.create_auth_request(&auth_request).map_err(|err| {
        tracing::error!(%err, "failed to store auth request");
        AuthorizeError::page(500, "Database error.")
    })?;
    Ok(auth_request)
}

/// The `hmac` query parameter of the approval URL:
/// `base64url(HMAC-SHA256(auth request key, auth request id))`, no padding.
pub fn approval_hmac(auth_request: &AuthRequest) -> String {
    approval_tag(auth_request)
        .map(|tag| URL_SAFE_NO_PAD.encode(tag))
        .unwrap_or_default()
}

/// Checks a presented approval `hmac` in constant time.
pub fn verify_approval_hmac(auth_request: &AuthRequest, presented: &str) -> bool {
    let (Ok(presented), Some(expected)) =
        (URL_SAFE_NO_PAD.decode(presented), approval_tag(auth_request))
    else {
        return false;
    };
    bool::from(expected.ct_eq(&presented))
}

fn approval_tag(auth_request: &AuthRequest) -> Option<Vec<u8>> {
    // HMAC takes keys of any length; `ok()?` only keeps this total.
    let mut mac = Hmac::<Sha256>::new_from_slice(&auth_request.hmac_key).ok()?;
    mac.update(auth_request.id.as_bytes());
    Some(mac.finalize().into_bytes().to_vec())
}

/// Loads an auth request for the approval screen (dex-protocol.md §5.5): `hmac`
/// missing ⇒ 401 "Unauthorized request"; unknown `req` ⇒ 400 "User session
/// error."; not logged in ⇒ 500 "Login process not yet finalized."; bad HMAC ⇒ 401.
pub fn load_for_approval(
    storage: &dyn Storage,
    auth_request_id: &str,
    hmac: &str,
) -> Result<AuthRequest, AuthorizeError> {
    if hmac.is_empty() {
        return Err(AuthorizeError::page(401, "Unauthorized request"));
    }
    let auth_request = get_auth_request(storage, auth_request_id)?;
    if !auth_request.logged_in {
        return Err(AuthorizeError::page(500, "Login process not yet finalized."));
    }
    if !verify_approval_hmac(&auth_request, hmac) {
        return Err(AuthorizeError::page(401, "Unauthorized request"));
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
            AuthorizeError::page(500, "Database error.")
        }
    })
}

/// Records a successful connector login on the auth request (`logged_in`, claims,
/// connector data, `auth_time = now`). When `offline_access` was requested and the
/// connector can refresh, the user's offline session is created or its connector
/// data updated, as Dex's `finalizeLogin`.
pub fn finalize_login(
    storage: &dyn Storage,
    auth_request_id: &str,
    claims: Claims,
    connector_data: Option<Vec<u8>>,
    connector_supports_refresh: bool,
    now: SystemTime,
) -> Result<AuthRequest, AuthorizeError> {
    let updated = storage
        .update_auth_request(auth_request_id, &mut |mut request| {
            if now > request.expiry {
                return Err(StorageError::Rejected("auth request expired".into()));
            }
            request.logged_in = true;
            request.claims = claims.clone();
            request.connector_data = connector_data.clone();
            request.auth_time = Some(now);
            Ok(request)
        })
        .map_err(|err| match err {
            StorageError::NotFound => AuthorizeError::page(400, "User session error."),
            StorageError::Rejected(_) => AuthorizeError::page(400, "User session has expired."),
            err => {
                tracing::error!(%err, "failed to finalize login");
                AuthorizeError::page(500, "Database error.")
            }
        })?;

    if connector_supports_refresh && scopes::has_scope(&updated.scopes, scopes::OFFLINE_ACCESS) {
        upsert_offline_session(storage, &updated.claims.user_id, &updated.connector_id, &mut |s| {
            if let Some(data) = connector_data.as_ref().filter(|d| !d.is_empty()) {
                s.connector_data = Some(data.clone());
            }
        })
        .map_err(|err| {
            tracing::error!(%err, "failed to update offline session");
            AuthorizeError::page(500, "Database error.")
        })?;
    }
    Ok(updated)
}

/// Whether the approval screen must be shown: the request forces it
/// (`approval_prompt=force`, honoured even with `skipApprovalScreen`, as Dex since
/// v2.39) or the screen is not skipped.
pub fn needs_approval(auth_request: &AuthRequest, settings: &Settings) -> bool {
    auth_request.force_approval_prompt || !settings.oauth2.skip_approval_screen
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
/// (dex-protocol.md §5.7). The auth request is deleted first, so a double submit
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
        return Err(AuthorizeError::page(500, "Login process not yet finalized."));
    }
    if now > request.expiry {
        return Err(AuthorizeError::page(400, "User session has expired."));
    }
    storage
        .delete_auth_request(&request.id)
        .map_err(|err| match err {
            StorageError::NotFound => AuthorizeError::page(400, "User session error."),
            err => {
                tracing::error!(%err, "failed to delete auth request");
                AuthorizeError::page(500, "Internal server error.")
            }
        })?;
    let internal = || AuthorizeError::page(500, "Internal server error.");
    let wants = |t: &str| request.response_types.iter().any(|r| r == t);

    let mut code = None;
    if wants("code") {
        let auth_code = AuthCode {
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
        };
        storage.create_auth_code(&auth_code).map_err(|err| {
            tracing::error!(%err, "failed to store auth code");
            internal()
        })?;
        if request.redirect_uri == OOB_REDIRECT_URI {
            return Ok(AuthorizeResponse::Oob { code: auth_code.id });
        }
        code = Some(auth_code.id);
    }

    let minter = Minter::new(settings, signer);
    let subject = TokenSubject {
        client_id: &request.client_id,
        claims: &request.claims,
        scopes: &request.scopes,
        connector_id: &request.connector_id,
        nonce: &request.nonce,
        auth_time: request.auth_time,
    };
    let access_token = if wants("token") {
        Some(minter.access_token(&subject, now).map_err(|_| internal())?)
    } else {
        None
    };
    let id_token = if wants("id_token") {
        let at = access_token.as_ref().map(|t| t.token.as_str());
        Some(minter.id_token(&subject, now, at, code.as_deref()).map_err(|_| internal())?)
    } else {
        None
    };

    if access_token.is_none() && id_token.is_none() {
        let params = vec![
            ("code".to_owned(), code.unwrap_or_default()),
            ("state".to_owned(), request.state.clone()),
        ];
        return Ok(AuthorizeResponse::Redirect(add_query_params(
            &request.redirect_uri,
            params,
            true,
        )));
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
    Ok(AuthorizeResponse::Redirect(with_fragment(&request.redirect_uri, fragment)))
}

/// The user pressed "Cancel" on the approval screen: the auth request is deleted
/// and the browser goes back to the client with `access_denied`.
///
/// Beyond Dex: Dex renders a 500 page "Approval rejected."; RFC 6749 §4.1.2.1 says
/// to redirect `access_denied`. With the OOB redirect URI there is nowhere to
/// redirect, so a 403 page is shown instead.
pub fn reject_approval(storage: &dyn Storage, auth_request_id: &str) -> Result<String, AuthorizeError> {
    let request = get_auth_request(storage, auth_request_id)?;
    storage
        .delete_auth_request(&request.id)
        .map_err(|err| match err {
            StorageError::NotFound => AuthorizeError::page(400, "User session error."),
            err => {
                tracing::error!(%err, "failed to delete auth request");
                AuthorizeError::page(500, "Internal server error.")
            }
        })?;
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
