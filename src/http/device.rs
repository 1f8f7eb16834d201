//! The device flow over HTTP (RFC 8628; dex-protocol.md §11): `/device/code`,
//! the user-code page `/device`, its form target `/device/auth/verify_code`, the
//! internal redirect target `/device/callback`, and the `device_code` grant that
//! `/token` hands over to [`device_token`].
//!
//! The user-code form is CSRF-protected: `GET /device` makes sure the browser has
//! its browser cookie (`http::browser`, `SameSite=Lax`, `HttpOnly`) and the form
//! carries `CsrfToken(server key, browser binding)`, where the server key is
//! [`AppState::form_key`] (random per process). A cross-site POST carries neither
//! the cookie nor a matching token, so another site cannot push a user code into
//! a victim's browser. A restart between showing and submitting the form only
//! means entering the code again.
//!
//! Entering the code binds the device to this browser; `/device/callback` only
//! completes it in the same browser (`oidc::device`).

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

use super::AppState;
use super::authorize::blocking;
use super::browser;
use super::client_ip::{ClientIp, ClientKey};
use super::error::{HttpError, found, html, no_store, oauth_error_response};
use super::params::Params;
use crate::oidc::OAuthError;
use crate::oidc::binding::BrowserSecret;
use crate::oidc::client_auth::authenticate_client;
use crate::oidc::device::{
    self, DeviceAuthorizationRequest, DeviceCallback, UserCodeError, normalize_user_code,
};
use crate::oidc::token::{GrantContext, check_grant_type};
use crate::web::{CSRF_FIELD, CsrfToken, DevicePage, DeviceSuccessPage};

/// Routes at their full paths under the issuer's path `prefix` (e.g. `/dex`).
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new()
        .route(&[prefix, "/device/code"].concat(), any(device_code))
        .route(&[prefix, "/device"].concat(), any(device_page))
        .route(
            &[prefix, "/device/auth/verify_code"].concat(),
            any(verify_code),
        )
        .route(&[prefix, "/device/callback"].concat(), any(device_callback))
}

fn respond(state: &AppState, result: Result<Response, HttpError>) -> Response {
    result.unwrap_or_else(|error| error.into_response_with(&state.templates))
}

fn json_no_store(body: String) -> Response {
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    no_store(&mut response);
    response
}

// ---------------------------------------------------------------------------
// POST /device/code
// ---------------------------------------------------------------------------

async fn device_code(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    params: Params,
) -> Response {
    match device_code_inner(&state, client_ip, &params).await {
        Ok(body) => json_no_store(body),
        Err(error) => error.as_oauth().into_response_with(&state.templates),
    }
}

async fn device_code_inner(
    state: &AppState,
    client_ip: ClientKey,
    params: &Params,
) -> Result<String, HttpError> {
    if params.method != Method::POST {
        return Err(OAuthError::invalid_request("Invalid device code request type").into());
    }
    check_grant_type(&state.settings, device::DEVICE_CODE_GRANT)?;
    let client = authenticate_client(
        &state.settings.clients,
        params.header(header::AUTHORIZATION),
        params.form_get("client_id"),
        params.form_get("client_secret"),
    )?
    .clone();
    let scope = params.form_get("scope").to_owned();
    let challenge = params.form_get("code_challenge").to_owned();
    let method = params.form_get("code_challenge_method").to_owned();
    let settings = state.settings.clone();
    let storage = state.storage.clone();
    let now = (state.clock)();
    state.limits.create_request(client_ip, now)?;
    let started = tokio::task::spawn_blocking(move || {
        let request = DeviceAuthorizationRequest {
            scope: &scope,
            code_challenge: &challenge,
            code_challenge_method: &method,
        };
        device::start_device_authorization(storage.as_ref(), &settings, &client, &request, now)
    })
    .await
    .map_err(|error| {
        tracing::error!(%error, "device code task failed");
        OAuthError::server_error()
    })??;
    serde_json::to_string(&started).map_err(|error| {
        tracing::error!(%error, "cannot serialize device authorization");
        OAuthError::server_error().into()
    })
}

// ---------------------------------------------------------------------------
// GET /device and POST /device/auth/verify_code
// ---------------------------------------------------------------------------

fn verify_code_path(state: &AppState) -> String {
    format!(
        "{}/device/auth/verify_code",
        state.settings.issuer.path_prefix
    )
}

fn csrf_id(browser: &BrowserSecret) -> String {
    format!("device-form:{}", browser.binding())
}

fn render_form(
    state: &AppState,
    status: StatusCode,
    browser: &BrowserSecret,
    user_code: &str,
    invalid: bool,
) -> Response {
    let page = DevicePage {
        post_url: verify_code_path(state),
        user_code: user_code.to_owned(),
        invalid,
        csrf_token: CsrfToken::new(state.form_key.as_slice(), &csrf_id(browser))
            .as_str()
            .to_owned(),
    };
    html(status, state.templates.device(&page))
}

async fn device_page(State(state): State<AppState>, params: Params) -> Response {
    if params.method != Method::GET {
        return respond(
            &state,
            Err(HttpError::bad_request("Requested resource does not exist.")),
        );
    }
    let (secret, fresh) = browser::ensure(&params.headers);
    let prefill: String = params.get("user_code").chars().take(64).collect();
    let invalid = params.get("invalid").eq_ignore_ascii_case("true");
    let mut response = render_form(&state, StatusCode::OK, &secret, &prefill, invalid);
    if fresh {
        browser::set_cookie(&state.settings, &mut response, &secret);
    }
    response
}

async fn verify_code(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    params: Params,
) -> Response {
    let result = verify_code_inner(&state, client_ip, &params).await;
    respond(&state, result)
}

async fn verify_code_inner(
    state: &AppState,
    client_ip: ClientKey,
    params: &Params,
) -> Result<Response, HttpError> {
    if params.method != Method::POST {
        return Err(HttpError::bad_request("Requested resource does not exist."));
    }
    let secret = browser::presented(&params.headers);
    let csrf_ok = secret.as_ref().is_some_and(|secret| {
        CsrfToken::verify(
            state.form_key.as_slice(),
            &csrf_id(secret),
            params.form_get(CSRF_FIELD),
        )
    });
    let Some(secret) = secret.filter(|_| csrf_ok) else {
        return Err(HttpError::page(
            403,
            "Invalid or missing form token. Please open the device page again.",
        ));
    };
    let typed = params.form_get("user_code");
    if typed.is_empty() {
        return Err(HttpError::bad_request("No user code received"));
    }
    let typed_shown: String = typed.chars().take(64).collect();
    let user_code = typed.to_owned();
    let settings = state.settings.clone();
    let now = (state.clock)();
    // RFC 8628 §5.1: user codes are short, so guesses must be limited.
    state.limits.guess_user_code(client_ip, now)?;
    let binding = secret.binding();
    let checked = blocking(state, move |s| {
        Ok(device::verify_user_code(
            s, &settings, &user_code, &binding, now,
        ))
    })
    .await?;
    match checked {
        Ok(location) => Ok(found(&location)),
        Err(UserCodeError::Invalid) => Ok(render_form(
            state,
            StatusCode::BAD_REQUEST,
            &secret,
            &normalize_user_code(&typed_shown),
            true,
        )),
        Err(UserCodeError::Internal) => Err(HttpError::page(500, "Database error.")),
        Err(UserCodeError::Unavailable) => {
            Err(HttpError::page(503, crate::oidc::error::UNAVAILABLE_PAGE))
        }
    }
}

// ---------------------------------------------------------------------------
// GET /device/callback
// ---------------------------------------------------------------------------

async fn device_callback(State(state): State<AppState>, params: Params) -> Response {
    let result = device_callback_inner(&state, &params).await;
    respond(&state, result)
}

async fn device_callback_inner(state: &AppState, params: &Params) -> Result<Response, HttpError> {
    if params.method != Method::GET {
        return Err(HttpError::bad_request("Method not supported"));
    }
    if !params.get("error").is_empty() {
        // The upstream text is never echoed back.
        tracing::info!(
            error = params.get("error"),
            "device login ended with an error"
        );
        return Err(HttpError::bad_request(
            "Authorization failed. Please try again.",
        ));
    }
    let user_code = params.get("state").to_owned();
    let code = params.get("code").to_owned();
    let secret = browser::presented(&params.headers);
    let connectors = state.connectors.clone();
    let storage = state.storage.clone();
    let settings = state.settings.clone();
    let keyset = state.keys.keyset();
    let now = (state.clock)();
    let client_name = tokio::task::spawn_blocking(move || {
        let ctx = GrantContext {
            storage: storage.as_ref(),
            settings: settings.as_ref(),
            signer: keyset.as_ref(),
            now,
        };
        device::complete_device_login(
            &ctx,
            &DeviceCallback {
                user_code: &user_code,
                code: &code,
                refreshing_connectors: connectors.refreshing_ids(),
                browser: secret.as_ref(),
            },
        )
        .map_err(HttpError::from)
    })
    .await
    .map_err(|error| {
        tracing::error!(%error, "device callback task failed");
        HttpError::internal()
    })??;
    Ok(html(
        StatusCode::OK,
        state
            .templates
            .device_success(&DeviceSuccessPage { client_name }),
    ))
}

// ---------------------------------------------------------------------------
// /token with grant_type=urn:ietf:params:oauth:grant-type:device_code
// ---------------------------------------------------------------------------

/// The `device_code` grant: no client authentication (as Dex), the stored token
/// response once complete. Called by `/token` for POSTs of this grant type.
pub async fn device_token(state: &AppState, params: &Params) -> Response {
    if let Err(error) = check_grant_type(&state.settings, device::DEVICE_CODE_GRANT) {
        return oauth_error_response(&error);
    }
    let device_code = params.form_get("device_code").to_owned();
    let verifier = params.form_get("code_verifier").to_owned();
    let storage = state.storage.clone();
    let now = (state.clock)();
    let polled = tokio::task::spawn_blocking(move || {
        device::poll_device_token(storage.as_ref(), &device_code, &verifier, now)
    })
    .await;
    match polled {
        Ok(Ok(body)) => json_no_store(body),
        Ok(Err(error)) => oauth_error_response(&error),
        Err(error) => {
            tracing::error!(%error, "device token task failed");
            oauth_error_response(&OAuthError::server_error())
        }
    }
}
