//! The device authorization grant (RFC 8628) as Dex runs it (Dex's
//! `server/deviceflowhandlers.go`), with Dex HEAD's redirect: the user code sends the browser into the
//! ordinary `/auth` flow with `redirect_uri=<issuer path>/device/callback` and
//! `state=<user code>`; the callback redeems the code like the
//! `authorization_code` grant and parks the token response on the device token,
//! which the device collects by polling `/token`.
//!
//! Beyond Dex:
//! * `/device/code` authenticates the client like `/token` (unknown client or
//!   wrong secret ⇒ 401 `invalid_client`) and checks the scopes (⇒
//!   `invalid_scope`) and PKCE policy up front, instead of failing only after the
//!   user has logged in. The client secret is therefore not stored on the device
//!   request.
//! * the token response is handed out **once**: the successful poll marks the
//!   device token redeemed and drops the stored tokens; a later poll gets
//!   `invalid_grant`. Dex keeps returning it until the device code expires.
//! * only the browser in which the user entered (or confirmed, on a page that
//!   shows it) the user code can complete the device: the code-entry step stores
//!   that browser's binding (`oidc::binding`) on the device token, and the
//!   callback checks the cookie of the browser it lands in, and the binding of the
//!   auth code it brings, against it. A victim who merely follows a crafted
//!   `/auth?redirect_uri=<issuer>/device/callback&state=<user code>` link
//!   completes nothing.
//! * the `/auth` hop carries an S256 PKCE challenge of a random verifier kept on
//!   the device token (the device holder cannot derive it), drawn anew at each
//!   code entry; so it works under `pkce.enforce` /
//!   `requirePKCE`, and a code leaked from the browser's address bar cannot be
//!   redeemed at `/token`.
//! * user codes are accepted without the dash and with surrounding spaces.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::authorize::{DEVICE_CALLBACK_PATH, check_pkce};
use super::binding::{self, BrowserSecret};
use super::check_param_len;
use super::error::{AuthorizeError, ErrorCode, OAuthError};
use super::grants::{CodeExchange, GrantContext, exchange_code, verify_pkce};
use super::is_expired;
use super::scopes::{self, check_scopes};
use crate::config::settings::{Client, Settings};
use crate::storage::{DeviceRequest, DeviceToken, Pkce, Storage, StorageError};

/// The grant type polled at `/token`.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// The polling interval announced at `/device/code`, and the step `slow_down`
/// adds to it.
pub const POLL_INTERVAL_SECS: u32 = 5;
/// User-code characters: consonants only (no vowels, so no words; no look-alikes).
pub const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";

/// Device token states. `redeemed` is oxidex's: the tokens were collected.
pub const STATUS_PENDING: &str = "authorization_pending";
pub const STATUS_COMPLETE: &str = "complete";
pub const STATUS_REDEEMED: &str = "redeemed";

/// Length of the hop's PKCE verifier in [`crate::crypto::random_token`] characters
/// (RFC 7636 §4.1: 43–128 unreserved characters; 64 × 5 = 320 bits).
const HOP_VERIFIER_LEN: usize = 64;

/// A device code: Dex's id scheme over 32 random bytes (51 characters).
pub fn new_device_code() -> String {
    crate::crypto::new_long_id()
}

/// A user code: 8 characters of [`USER_CODE_ALPHABET`], shown `XXXX-XXXX`.
pub fn new_user_code() -> String {
    let code = crate::crypto::random_string(USER_CODE_ALPHABET, 8);
    let (first, second) = code.split_at_checked(4).unwrap_or((&code, ""));
    format!("{first}-{second}")
}

/// The stored form of a typed user code: upper-cased (as Dex), spaces trimmed, and
/// the dash added when eight bare characters were typed.
pub fn normalize_user_code(input: &str) -> String {
    let upper = input.trim().to_ascii_uppercase();
    if upper.len() == 8 && upper.bytes().all(|b| b.is_ascii_alphanumeric()) {
        format!("{}-{}", &upper[..4], &upper[4..])
    } else {
        upper
    }
}

/// The `/device/code` response body (RFC 8628 §3.2), members in Dex's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceAuthorization {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: u64,
    pub interval: u32,
}

/// The `/device/code` parameters besides the client.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceAuthorizationRequest<'a> {
    pub scope: &'a str,
    pub code_challenge: &'a str,
    pub code_challenge_method: &'a str,
}

/// Starts a device authorization for the authenticated `client`: scopes default
/// to `openid` and are checked as at `/auth` (⇒ 400 `invalid_scope`); the PKCE
/// method must be supported (⇒ 400 `invalid_request`); stores the device request
/// (by user code) and the pending device token (by device code), both expiring
/// after `expiry.deviceRequests`.
pub fn start_device_authorization(
    storage: &dyn Storage,
    settings: &Settings,
    client: &Client,
    request: &DeviceAuthorizationRequest<'_>,
    now: SystemTime,
) -> Result<DeviceAuthorization, OAuthError> {
    check_param_len("scope", request.scope)?;
    check_param_len("code_challenge", request.code_challenge)?;
    check_param_len("code_challenge_method", request.code_challenge_method)?;

    let mut scopes = scopes::parse_scopes(request.scope);
    if scopes.is_empty() {
        scopes.push(scopes::OPENID.to_owned());
    }
    if let Err(violation) = check_scopes(&scopes, &client.id, &settings.clients, true) {
        return Err(OAuthError::invalid_scope(violation.description()));
    }

    let method = check_pkce(
        settings,
        client,
        request.code_challenge,
        request.code_challenge_method,
    )
    .map_err(OAuthError::invalid_request)?;
    let pkce = if request.code_challenge.is_empty() {
        Pkce::default()
    } else {
        Pkce {
            code_challenge: request.code_challenge.to_owned(),
            code_challenge_method: method.to_owned(),
        }
    };

    let lifetime = settings.expiry.device_requests;
    let expiry = now
        .checked_add(lifetime)
        .ok_or_else(OAuthError::server_error)?;
    let device_code = new_device_code();
    let user_code = store_device_request(storage, |user_code| DeviceRequest {
        user_code,
        device_code: device_code.clone(),
        client_id: client.id.clone(),
        client_secret: String::new(),
        scopes: scopes.clone(),
        expiry,
    })?;
    let token = DeviceToken {
        device_code: device_code.clone(),
        status: STATUS_PENDING.to_owned(),
        token: String::new(),
        expiry,
        last_request: now,
        poll_interval_seconds: 0,
        pkce,
        browser_binding: String::new(),
        hop_verifier: String::new(),
    };
    storage.create_device_token(&token).map_err(|error| {
        tracing::error!(%error, "failed to store device token");
        OAuthError::storage(&error)
    })?;

    let verification_uri = settings.issuer.endpoint("/device");
    let verification_uri_complete = format!(
        "{verification_uri}?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("user_code", &user_code)
            .finish()
    );
    Ok(DeviceAuthorization {
        device_code,
        user_code,
        verification_uri,
        verification_uri_complete,
        expires_in: lifetime.as_secs(),
        interval: POLL_INTERVAL_SECS,
    })
}

/// Stores a device request under a fresh user code, drawing again on the (rare)
/// collision with a live one.
fn store_device_request(
    storage: &dyn Storage,
    build: impl Fn(String) -> DeviceRequest,
) -> Result<String, OAuthError> {
    for _ in 0..5 {
        let request = build(new_user_code());
        match storage.create_device_request(&request) {
            Ok(()) => return Ok(request.user_code),
            Err(StorageError::AlreadyExists) => continue,
            Err(error) => {
                tracing::error!(%error, "failed to store device request");
                return Err(OAuthError::storage(&error));
            }
        }
    }
    tracing::error!("no free user code after 5 attempts");
    Err(OAuthError::server_error())
}

fn user_code_storage_error(error: &StorageError) -> UserCodeError {
    if error.is_unavailable() {
        UserCodeError::Unavailable
    } else {
        UserCodeError::Internal
    }
}

/// Why a submitted user code does not lead on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserCodeError {
    /// Unknown or expired: show the form again (400) saying so.
    #[error("unknown or expired user code")]
    Invalid,
    /// Storage failure (500).
    #[error("storage failure")]
    Internal,
    /// The database is unavailable (503, try again later).
    #[error("storage unavailable")]
    Unavailable,
}

/// Checks a typed user code, binds the device to the browser that typed it
/// (`browser_binding`, replacing an earlier one: the latest browser to enter the
/// code is the one that may complete it) with a fresh hop verifier, and returns
/// where to send the browser:
/// `<issuer path>/auth?client_id=…&code_challenge=…&code_challenge_method=S256&redirect_uri=<issuer path>/device/callback&response_type=code&scope=…&state=<user code>`.
///
/// A device that is no longer pending is an invalid code.
pub fn verify_user_code(
    storage: &dyn Storage,
    settings: &Settings,
    user_code: &str,
    browser_binding: &str,
    now: SystemTime,
) -> Result<String, UserCodeError> {
    let user_code = normalize_user_code(user_code);
    if user_code.is_empty() || user_code.len() > 64 {
        return Err(UserCodeError::Invalid);
    }
    let request = match storage.get_device_request(&user_code) {
        Ok(request) if !is_expired(request.expiry, now) => request,
        Ok(_) | Err(StorageError::NotFound) => return Err(UserCodeError::Invalid),
        Err(error) => {
            tracing::error!(%error, "failed to get device request");
            return Err(user_code_storage_error(&error));
        }
    };
    let verifier = crate::crypto::random_token(HOP_VERIFIER_LEN);
    let Some((challenge, method)) = hop_challenge(settings, &verifier) else {
        // Config validation always leaves a method; never run the hop without PKCE.
        tracing::error!("no PKCE method enabled for the device flow's browser hop");
        return Err(UserCodeError::Internal);
    };
    if browser_binding.is_empty() {
        tracing::error!("device code entry without a browser binding");
        return Err(UserCodeError::Internal);
    }
    let bound = storage.update_device_token(&request.device_code, &mut |mut token| {
        if token.status != STATUS_PENDING || is_expired(token.expiry, now) {
            return Err(StorageError::Rejected("device token not pending".into()));
        }
        token.browser_binding = browser_binding.to_owned();
        token.hop_verifier = verifier.clone();
        Ok(token)
    });
    match bound {
        Ok(_) => {}
        Err(StorageError::NotFound | StorageError::Rejected(_)) => {
            return Err(UserCodeError::Invalid);
        }
        Err(error) => {
            tracing::error!(%error, "failed to bind device token");
            return Err(user_code_storage_error(&error));
        }
    }
    let prefix = &settings.issuer.path_prefix;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("client_id", &request.client_id)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", method)
        .append_pair("redirect_uri", &format!("{prefix}{DEVICE_CALLBACK_PATH}"))
        .append_pair("response_type", "code")
        .append_pair("scope", &request.scopes.join(" "))
        .append_pair("state", &request.user_code);
    Ok(format!("{prefix}/auth?{}", query.finish()))
}

/// S256 when enabled, else `plain` (which still satisfies `pkce.enforce`). With
/// `plain` the verifier shows in the browser's hop URL; it never reaches the
/// device holder either way.
fn hop_challenge(settings: &Settings, verifier: &str) -> Option<(String, &'static str)> {
    let enabled = |m: &str| settings.oauth2.pkce_methods.iter().any(|x| x == m);
    if enabled("S256") {
        Some((crate::crypto::s256_challenge(verifier), "S256"))
    } else if enabled("plain") {
        Some((verifier.to_owned(), "plain"))
    } else {
        None
    }
}

/// The `/device/callback` parameters.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeviceCallback<'a> {
    /// `state`: the user code.
    pub user_code: &'a str,
    pub code: &'a str,
    /// Ids of the connectors that can refresh (for the refresh token).
    pub refreshing_connectors: &'a [String],
    /// The browser the callback arrived in (its cookie), if any.
    pub browser: Option<&'a BrowserSecret>,
}

/// Finishes the browser side: validates the auth code and the device request
/// (both known and unexpired, same client, code issued for the device callback),
/// redeems the code as the `authorization_code` grant does, and stores the token
/// response on the pending device token. Returns the client's display name.
///
/// Errors are pages: missing parameters, bad code, bad user code, device token
/// gone or not pending ⇒ 400; another browser than the one that entered the user
/// code, or a code from a login in another browser ⇒ 403; client no longer
/// configured ⇒ 401; storage ⇒ 500. Nothing is changed before all checks pass.
pub fn complete_device_login(
    ctx: &GrantContext<'_>,
    callback: &DeviceCallback<'_>,
) -> Result<String, AuthorizeError> {
    let page = AuthorizeError::page;
    if callback.user_code.is_empty() || callback.code.is_empty() {
        return Err(page(400, "Request was missing parameters"));
    }
    let bad_code = || page(400, "Invalid or expired auth code.");
    let database = |error: StorageError| {
        tracing::error!(%error, "device callback storage failure");
        AuthorizeError::storage(&error)
    };
    let code = match ctx.storage.get_auth_code(callback.code) {
        Ok(code) if !is_expired(code.expiry, ctx.now) => code,
        Ok(_) | Err(StorageError::NotFound) => return Err(bad_code()),
        Err(error) => return Err(database(error)),
    };
    let request = match ctx.storage.get_device_request(callback.user_code) {
        Ok(request) if !is_expired(request.expiry, ctx.now) => request,
        Ok(_) | Err(StorageError::NotFound) => {
            return Err(page(400, "Invalid or expired user code."));
        }
        Err(error) => return Err(database(error)),
    };
    // A code of another client, or one issued for another redirect, must not
    // complete this device's login.
    if code.client_id != request.client_id || !code.redirect_uri.ends_with(DEVICE_CALLBACK_PATH) {
        return Err(bad_code());
    }
    let client = ctx
        .settings
        .client(&request.client_id)
        .ok_or_else(|| page(401, "Invalid client credentials."))?;
    let token = match ctx.storage.get_device_token(&request.device_code) {
        Ok(token) if !is_expired(token.expiry, ctx.now) && token.status == STATUS_PENDING => token,
        Ok(token) if !is_expired(token.expiry, ctx.now) => {
            return Err(page(400, "This device has already been authorized."));
        }
        Ok(_) | Err(StorageError::NotFound) => {
            return Err(page(400, "Invalid or expired device code."));
        }
        Err(error) => return Err(database(error)),
    };
    // The user entered the code in this browser, and logged in in this browser.
    binding::check_same_browser(&token.browser_binding, callback.browser)?;
    binding::check_same_browser(&code.browser_binding, callback.browser)?;
    if token.hop_verifier.is_empty() {
        tracing::error!("bound device token without a hop verifier");
        return Err(page(500, "Internal server error."));
    }
    let exchange = CodeExchange {
        code: callback.code,
        redirect_uri: &code.redirect_uri,
        code_verifier: &token.hop_verifier,
        refreshing_connectors: callback.refreshing_connectors,
    };
    let response = exchange_code(ctx, client, &exchange).map_err(|error| {
        if error.status == 503 {
            page(503, super::error::UNAVAILABLE_PAGE)
        } else if error.status >= 500 {
            page(500, "Failed to exchange auth code.")
        } else {
            tracing::info!(%error, "device callback code refused");
            bad_code()
        }
    })?;
    let json = serde_json::to_string(&response).map_err(|error| {
        tracing::error!(%error, "cannot serialize token response");
        page(500, "Internal server error.")
    })?;
    ctx.storage
        .update_device_token(&request.device_code, &mut |mut current| {
            if current.status != STATUS_PENDING {
                return Err(StorageError::Rejected("device token not pending".into()));
            }
            // Entered again meanwhile (maybe elsewhere): that entry decides.
            if current.browser_binding != token.browser_binding {
                return Err(StorageError::Rejected("device token rebound".into()));
            }
            current.status = STATUS_COMPLETE.to_owned();
            current.token = json.clone();
            Ok(current)
        })
        .map_err(|error| match error {
            StorageError::Rejected(_) => page(400, "This device has already been authorized."),
            StorageError::NotFound => page(400, "Invalid or expired device code."),
            other => database(other),
        })?;
    Ok(client.name.clone())
}

/// One poll of the `device_code` grant (Dex's `handleDeviceToken`). No client
/// authentication: the 51-character device code is the credential.
///
/// Missing code ⇒ 400 `invalid_request` "No device code received"; unknown ⇒ 400
/// `invalid_request` "Invalid Device code."; expired ⇒ 400 `expired_token`;
/// pending ⇒ 400 `authorization_pending`, or `slow_down` (interval + 5 s) when
/// polled before `last poll + interval`; complete ⇒ PKCE check, then the stored
/// token response JSON — once; redeemed ⇒ 400 `invalid_grant`.
pub fn poll_device_token(
    storage: &dyn Storage,
    device_code: &str,
    code_verifier: &str,
    now: SystemTime,
) -> Result<String, OAuthError> {
    if device_code.is_empty() {
        return Err(OAuthError::invalid_request("No device code received"));
    }
    check_param_len("device_code", device_code)?;
    check_param_len("code_verifier", code_verifier)?;
    let invalid_code = || OAuthError::invalid_request("Invalid Device code.");
    let token = match storage.get_device_token(device_code) {
        Ok(token) => token,
        Err(StorageError::NotFound) => return Err(invalid_code()),
        Err(error) => {
            tracing::error!(%error, "failed to get device token");
            return Err(OAuthError::storage(&error));
        }
    };
    if is_expired(token.expiry, now) {
        return Err(OAuthError::new(ErrorCode::ExpiredToken, 400, ""));
    }
    match token.status.as_str() {
        STATUS_PENDING => {
            let earliest = token
                .last_request
                .checked_add(Duration::from_secs(u64::from(token.poll_interval_seconds)));
            let too_soon = earliest.is_some_and(|earliest| now < earliest);
            let interval = if too_soon {
                token
                    .poll_interval_seconds
                    .saturating_add(POLL_INTERVAL_SECS)
            } else {
                POLL_INTERVAL_SECS
            };
            storage
                .update_device_token(device_code, &mut |mut t| {
                    t.poll_interval_seconds = interval;
                    t.last_request = now;
                    Ok(t)
                })
                .map_err(|error| {
                    tracing::error!(%error, "failed to update device token");
                    OAuthError::storage(&error)
                })?;
            if too_soon {
                Err(OAuthError::new(ErrorCode::SlowDown, 400, ""))
            } else {
                Err(OAuthError::new(ErrorCode::AuthorizationPending, 400, ""))
            }
        }
        STATUS_COMPLETE => {
            verify_pkce(code_verifier, &token.pkce)?;
            let mut collected = String::new();
            storage
                .update_device_token(device_code, &mut |mut t| {
                    if t.status != STATUS_COMPLETE {
                        return Err(StorageError::Rejected("already redeemed".into()));
                    }
                    collected = std::mem::take(&mut t.token);
                    t.status = STATUS_REDEEMED.to_owned();
                    t.last_request = now;
                    Ok(t)
                })
                .map_err(|error| match error {
                    StorageError::Rejected(_) => already_redeemed(),
                    StorageError::NotFound => invalid_code(),
                    other => {
                        tracing::error!(error = %other, "failed to redeem device token");
                        OAuthError::storage(&other)
                    }
                })?;
            Ok(collected)
        }
        STATUS_REDEEMED => Err(already_redeemed()),
        other => {
            tracing::error!(status = other, "device token has an unknown status");
            Err(OAuthError::server_error())
        }
    }
}

fn already_redeemed() -> OAuthError {
    OAuthError::invalid_grant("The device code has already been redeemed.")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::oidc::authorize::{
        AuthorizeParams, AuthorizeResponse, create_auth_request, finalize_login, issue_response,
        validate_authorize_request,
    };
    use crate::oidc::test_support::{TestSigner, clients, secs, settings, t0, user_claims};
    use crate::storage::memory::MemoryStorage;

    fn client(id: &str) -> Client {
        clients().into_iter().find(|c| c.id == id).unwrap()
    }

    /// Settings whose `public-cli` client may use the device flow and whose
    /// `web` client registered the issuer's device callback.
    fn device_settings() -> Settings {
        let mut s = settings();
        s.oauth2.grant_types.push(DEVICE_CODE_GRANT.to_owned());
        for c in &mut s.clients {
            if c.id == "web" {
                c.redirect_uris.push("/dex/device/callback".to_owned());
            }
        }
        s
    }

    fn start(
        storage: &MemoryStorage,
        settings: &Settings,
        client_id: &str,
        scope: &str,
        challenge: (&str, &str),
    ) -> DeviceAuthorization {
        let request = DeviceAuthorizationRequest {
            scope,
            code_challenge: challenge.0,
            code_challenge_method: challenge.1,
        };
        start_device_authorization(storage, settings, &client(client_id), &request, t0()).unwrap()
    }

    /// [`start`] for a request that must be refused.
    fn start_refused(
        storage: &MemoryStorage,
        settings: &Settings,
        challenge: (&str, &str),
    ) -> OAuthError {
        let request = DeviceAuthorizationRequest {
            scope: "openid",
            code_challenge: challenge.0,
            code_challenge_method: challenge.1,
        };
        start_device_authorization(storage, settings, &client("public-cli"), &request, t0())
            .unwrap_err()
    }

    /// The browser part: /auth with the URL from `verify_user_code`, login,
    /// approval; returns the `code` the callback receives.
    fn browser_code(
        storage: &MemoryStorage,
        settings: &Settings,
        browser: &BrowserSecret,
        user_code: &str,
    ) -> String {
        let location =
            verify_user_code(storage, settings, user_code, &browser.binding(), t0()).unwrap();
        let query = location.split_once('?').unwrap().1;
        let params = AuthorizeParams::from_pairs(form_urlencoded::parse(query.as_bytes()));
        let validated = validate_authorize_request(&params, settings, &["mock"]).unwrap();
        let auth = create_auth_request(
            storage,
            settings,
            &validated,
            "mock",
            &browser.binding(),
            t0(),
        )
        .unwrap();
        finalize_login(
            storage,
            settings,
            &auth.id,
            user_claims(),
            None,
            false,
            "",
            t0(),
            t0(),
        )
        .unwrap();
        let AuthorizeResponse::Redirect(to) =
            issue_response(storage, settings, &TestSigner::default(), &auth.id, t0()).unwrap()
        else {
            panic!("expected a redirect");
        };
        assert!(to.starts_with("/dex/device/callback?"), "{to}");
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(to.split_once('?').unwrap().1.as_bytes())
                .into_owned()
                .collect();
        let get = |n: &str| pairs.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(get("state"), user_code);
        get("code")
    }

    fn complete(
        storage: &MemoryStorage,
        settings: &Settings,
        browser: &BrowserSecret,
        user_code: &str,
        code: &str,
        now: SystemTime,
    ) -> Result<String, AuthorizeError> {
        let signer = TestSigner::default();
        let ctx = GrantContext {
            storage,
            settings,
            signer: &signer,
            now,
        };
        complete_device_login(
            &ctx,
            &DeviceCallback {
                user_code,
                code,
                refreshing_connectors: &[],
                browser: Some(browser),
            },
        )
    }

    #[test]
    fn codes_have_dexs_formats() {
        for _ in 0..100 {
            let device = new_device_code();
            assert_eq!(device.len(), 51);
            let user = new_user_code();
            assert_eq!(user.len(), 9);
            assert_eq!(&user[4..5], "-");
            assert!(
                user.bytes()
                    .filter(|b| *b != b'-')
                    .all(|b| USER_CODE_ALPHABET.contains(&b)),
                "{user}"
            );
        }
        assert_eq!(normalize_user_code(" bcdf-ghjk "), "BCDF-GHJK");
        assert_eq!(normalize_user_code("bcdfghjk"), "BCDF-GHJK");
        assert_eq!(normalize_user_code("x"), "X");
    }

    #[test]
    fn device_code_response_and_stored_state() {
        let storage = MemoryStorage::new();
        let settings = device_settings();
        let got = start(&storage, &settings, "public-cli", "", ("", ""));
        assert_eq!(got.verification_uri, "https://idp.example/dex/device");
        assert_eq!(
            got.verification_uri_complete,
            format!("https://idp.example/dex/device?user_code={}", got.user_code)
        );
        assert_eq!((got.expires_in, got.interval), (300, 5));
        let request = storage.get_device_request(&got.user_code).unwrap();
        assert_eq!(request.scopes, ["openid"], "scope defaults to openid");
        assert_eq!(request.client_secret, "", "no secret is stored");
        assert_eq!(request.expiry, t0() + secs(300));
        let token = storage.get_device_token(&got.device_code).unwrap();
        assert_eq!(token.status, STATUS_PENDING);
        assert_eq!(token.poll_interval_seconds, 0);
    }

    #[test]
    fn device_code_checks_scopes_and_pkce() {
        let storage = MemoryStorage::new();
        let settings = device_settings();
        let request = |scope, challenge, method| DeviceAuthorizationRequest {
            scope,
            code_challenge: challenge,
            code_challenge_method: method,
        };
        let err = start_device_authorization(
            &storage,
            &settings,
            &client("public-cli"),
            &request("openid bogus", "", ""),
            t0(),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidScope);
        let err = start_device_authorization(
            &storage,
            &settings,
            &client("public-cli"),
            &request("openid", "abc", "S512"),
            t0(),
        )
        .unwrap_err();
        assert_eq!(
            (err.code, err.description.as_str()),
            (
                ErrorCode::InvalidRequest,
                "Unsupported PKCE challenge method (\"S512\")."
            )
        );
        let err = start_device_authorization(
            &storage,
            &settings,
            &client("pkce-app"),
            &request("openid", "", ""),
            t0(),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        let plain = "a-plain-challenge-that-is-long-enough-0123456789";
        let ok = start(&storage, &settings, "public-cli", "openid", (plain, ""));
        let token = storage.get_device_token(&ok.device_code).unwrap();
        assert_eq!(token.pkce.code_challenge_method, "plain");
    }

    /// The device endpoint checks a challenge's shape exactly as `/auth` does
    /// (`authorize::check_pkce`): a 3-character `plain` challenge would otherwise
    /// let a 3-character verifier pass at `/token`.
    #[test]
    fn device_code_refuses_a_malformed_challenge_like_auth() {
        let storage = MemoryStorage::new();
        let settings = device_settings();
        let s256 =
            crate::crypto::s256_challenge("a-device-verifier-that-is-long-enough-0123456789");
        for (challenge, method) in [
            ("abc", ""),
            ("abc", "plain"),
            (&s256[..42], "S256"),
            (&format!("{s256}="), "S256"),
            (&"é".repeat(30), "plain"),
        ] {
            let err = start_refused(&storage, &settings, (challenge, method));
            assert_eq!(
                err.code,
                ErrorCode::InvalidRequest,
                "{challenge:?} {method}"
            );
            assert!(
                err.description.starts_with("Invalid code_challenge"),
                "{challenge:?} {method}: {}",
                err.description
            );
        }
        start(&storage, &settings, "public-cli", "openid", (&s256, "S256"));
    }

    #[test]
    fn user_code_check_redirects_into_auth_with_the_hop_challenge() {
        let storage = MemoryStorage::new();
        let settings = device_settings();
        let got = start(&storage, &settings, "public-cli", "openid email", ("", ""));
        let lower = got.user_code.to_lowercase().replace('-', "");
        let location = verify_user_code(&storage, &settings, &lower, "b", t0()).unwrap();
        assert!(
            location.starts_with("/dex/auth?client_id=public-cli&code_challenge="),
            "{location}"
        );
        assert!(location.contains("&code_challenge_method=S256&redirect_uri=%2Fdex%2Fdevice%2Fcallback&response_type=code&scope=openid+email&state="), "{location}");
        assert!(location.ends_with(&got.user_code), "{location}");
        assert_eq!(
            verify_user_code(&storage, &settings, "BBBB-BBBB", "b", t0()),
            Err(UserCodeError::Invalid)
        );
        assert_eq!(
            verify_user_code(&storage, &settings, &got.user_code, "b", t0() + secs(301)),
            Err(UserCodeError::Invalid)
        );
    }

    #[test]
    fn whole_flow_polls_pending_then_tokens_once() {
        let storage = MemoryStorage::new();
        let settings = device_settings();
        let verifier = "a-device-verifier-that-is-long-enough-0123456789";
        let challenge = crate::crypto::s256_challenge(verifier);
        let got = start(
            &storage,
            &settings,
            "public-cli",
            "openid profile",
            (&challenge, "S256"),
        );

        // First poll: pending (interval was 0).
        let err = poll_device_token(&storage, &got.device_code, verifier, t0()).unwrap_err();
        assert_eq!(
            (err.status, err.code),
            (400, ErrorCode::AuthorizationPending)
        );

        let browser = BrowserSecret::generate();
        let code = browser_code(&storage, &settings, &browser, &got.user_code);
        let name = complete(&storage, &settings, &browser, &got.user_code, &code, t0()).unwrap();
        assert_eq!(name, "public-cli");
        // The same callback again: the code is spent and the device is done.
        assert!(complete(&storage, &settings, &browser, &got.user_code, &code, t0()).is_err());

        let later = t0() + secs(6);
        // PKCE is checked before anything is handed out.
        let err = poll_device_token(&storage, &got.device_code, "", later).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidGrant);
        let err = poll_device_token(&storage, &got.device_code, "wrong", later).unwrap_err();
        assert_eq!(err.description, "Invalid code_verifier.");
        let json = poll_device_token(&storage, &got.device_code, verifier, later).unwrap();
        let body: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(body["token_type"], "bearer");
        assert!(body["id_token"].is_string() && body["access_token"].is_string());
        assert!(body.get("refresh_token").is_none());

        let err = poll_device_token(&storage, &got.device_code, verifier, later).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidGrant, "handed out once");
        let stored = storage.get_device_token(&got.device_code).unwrap();
        assert_eq!(
            (stored.status.as_str(), stored.token.as_str()),
            (STATUS_REDEEMED, "")
        );
    }

    #[test]
    fn polling_too_fast_slows_down_by_five_seconds() {
        let storage = MemoryStorage::new();
        let settings = device_settings();
        let got = start(&storage, &settings, "public-cli", "", ("", ""));
        let poll = |at| {
            poll_device_token(&storage, &got.device_code, "", at)
                .unwrap_err()
                .code
        };
        assert_eq!(poll(t0()), ErrorCode::AuthorizationPending);
        assert_eq!(poll(t0() + secs(1)), ErrorCode::SlowDown);
        assert_eq!(
            storage
                .get_device_token(&got.device_code)
                .unwrap()
                .poll_interval_seconds,
            10
        );
        assert_eq!(poll(t0() + secs(5)), ErrorCode::SlowDown);
        assert_eq!(
            storage
                .get_device_token(&got.device_code)
                .unwrap()
                .poll_interval_seconds,
            15
        );
        assert_eq!(poll(t0() + secs(21)), ErrorCode::AuthorizationPending);
        assert_eq!(
            storage
                .get_device_token(&got.device_code)
                .unwrap()
                .poll_interval_seconds,
            5
        );
        assert_eq!(poll(t0() + secs(301)), ErrorCode::ExpiredToken);
        let err = poll_device_token(&storage, "unknown", "", t0()).unwrap_err();
        assert_eq!(err.description, "Invalid Device code.");
        let err = poll_device_token(&storage, "", "", t0()).unwrap_err();
        assert_eq!(err.description, "No device code received");
    }

    #[test]
    fn callback_refuses_foreign_expired_and_missing_inputs() {
        let storage = MemoryStorage::new();
        let settings = device_settings();
        let mine = start(&storage, &settings, "public-cli", "", ("", ""));
        let theirs = start(&storage, &settings, "web", "", ("", ""));
        let browser = BrowserSecret::generate();
        let code = browser_code(&storage, &settings, &browser, &theirs.user_code);
        // Another client's code cannot complete this device.
        let err =
            complete(&storage, &settings, &browser, &mine.user_code, &code, t0()).unwrap_err();
        assert_eq!(
            err,
            AuthorizeError::page(400, "Invalid or expired auth code.")
        );
        let err = complete(&storage, &settings, &browser, "", &code, t0()).unwrap_err();
        assert_eq!(
            err,
            AuthorizeError::page(400, "Request was missing parameters")
        );
        let err = complete(&storage, &settings, &browser, "BBBB-BBBB", &code, t0()).unwrap_err();
        assert_eq!(
            err,
            AuthorizeError::page(400, "Invalid or expired user code.")
        );
        let err = complete(
            &storage,
            &settings,
            &browser,
            &theirs.user_code,
            &code,
            t0() + secs(301),
        )
        .unwrap_err();
        assert_eq!(
            err,
            AuthorizeError::page(400, "Invalid or expired user code.")
        );
        // The confidential client's own code works (its secret was checked at
        // /device/code by the HTTP layer).
        assert_eq!(
            complete(
                &storage,
                &settings,
                &browser,
                &theirs.user_code,
                &code,
                t0()
            )
            .unwrap(),
            "web"
        );
    }

    #[test]
    fn only_the_browser_that_entered_the_code_completes_the_device() {
        let storage = MemoryStorage::new();
        let settings = device_settings();
        let got = start(&storage, &settings, "public-cli", "", ("", ""));
        let device = storage.get_device_token(&got.device_code).unwrap();
        assert_eq!(
            device.hop_verifier, "",
            "no verifier before the code is entered"
        );

        let user = BrowserSecret::generate();
        let attacker = BrowserSecret::generate();
        let code = browser_code(&storage, &settings, &user, &got.user_code);
        let bound = storage.get_device_token(&got.device_code).unwrap();
        assert_eq!(bound.browser_binding, user.binding());
        assert_eq!(bound.hop_verifier.len(), HOP_VERIFIER_LEN);
        let other = AuthorizeError::page(403, binding::OTHER_BROWSER);
        assert_eq!(
            complete(&storage, &settings, &attacker, &got.user_code, &code, t0()),
            Err(other.clone())
        );
        let signer = TestSigner::default();
        let ctx = GrantContext {
            storage: &storage,
            settings: &settings,
            signer: &signer,
            now: t0(),
        };
        let no_cookie = DeviceCallback {
            user_code: &got.user_code,
            code: &code,
            refreshing_connectors: &[],
            browser: None,
        };
        assert_eq!(complete_device_login(&ctx, &no_cookie), Err(other.clone()));
        // Nothing changed: the right browser still completes it.
        assert_eq!(storage.get_device_token(&got.device_code).unwrap(), bound);
        assert!(complete(&storage, &settings, &user, &got.user_code, &code, t0()).is_ok());
    }

    #[test]
    fn a_code_from_a_login_in_another_browser_completes_nothing() {
        // The attacker logs in to get a device-callback code, then makes the
        // victim's browser (which entered the code) bring it to the callback.
        let storage = MemoryStorage::new();
        let settings = device_settings();
        let got = start(&storage, &settings, "public-cli", "", ("", ""));
        let victim = BrowserSecret::generate();
        let attacker = BrowserSecret::generate();
        let attackers_code = browser_code(&storage, &settings, &attacker, &got.user_code);
        verify_user_code(&storage, &settings, &got.user_code, &victim.binding(), t0()).unwrap();
        assert_eq!(
            complete(
                &storage,
                &settings,
                &victim,
                &got.user_code,
                &attackers_code,
                t0()
            ),
            Err(AuthorizeError::page(403, binding::OTHER_BROWSER))
        );
    }

    #[test]
    fn the_hop_verifier_is_random_and_drawn_anew_at_each_entry() {
        let storage = MemoryStorage::new();
        let settings = device_settings();
        let got = start(&storage, &settings, "public-cli", "", ("", ""));
        let browser = BrowserSecret::generate();
        let first = verify_user_code(
            &storage,
            &settings,
            &got.user_code,
            &browser.binding(),
            t0(),
        )
        .unwrap();
        let v1 = storage
            .get_device_token(&got.device_code)
            .unwrap()
            .hop_verifier;
        let second = verify_user_code(
            &storage,
            &settings,
            &got.user_code,
            &browser.binding(),
            t0(),
        )
        .unwrap();
        let v2 = storage
            .get_device_token(&got.device_code)
            .unwrap()
            .hop_verifier;
        assert_ne!(v1, v2);
        assert_ne!(first, second, "a new challenge each time");
        // Nothing the device holder knows yields it.
        assert!(!v1.contains(&got.device_code) && !v1.contains(&got.user_code));
        assert_eq!(
            verify_user_code(&storage, &settings, &got.user_code, "", t0()),
            Err(UserCodeError::Internal)
        );
    }
}
