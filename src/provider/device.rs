//! The device flow (RFC 8628): `/device/code`, the user-code form, its
//! verification, the internal `/device/callback`, and the `device_code` grant.
//!
//! The user-code form is CSRF-protected: the form carries
//! `CsrfToken(form key, browser binding)`, where the form key is random per
//! process. A cross-site POST carries neither the browser cookie (SameSite=Lax)
//! nor a matching token, so another site cannot push a user code into a victim's
//! browser. A restart between showing and submitting the form only means entering
//! the code again. Entering the code binds the device to this browser;
//! `/device/callback` only completes it in the same browser (`oidc::device`).

use crate::oidc::OAuthError;
use crate::oidc::binding::BrowserSecret;
use crate::oidc::device::{
    self, DeviceAuthorizationRequest, DeviceCallback, UserCodeError, normalize_user_code,
};
use crate::oidc::grants::check_grant_type;
use crate::throttle::ClientKey;
use crate::web::{CsrfToken, DevicePage, DeviceSuccessPage};

use super::{Outcome, Page, Provider, ProviderError};

/// `/device/code`'s fields, from the form body. Absent fields are `""`.
#[derive(Default)]
pub struct DeviceCodeRequest<'a> {
    /// The `Authorization` header, for `client_secret_basic`.
    pub authorization: Option<&'a str>,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub scope: &'a str,
    pub code_challenge: &'a str,
    pub code_challenge_method: &'a str,
}

/// Longest user code echoed back into the form.
const SHOWN_USER_CODE_CHARS: usize = 64;

impl Provider {
    /// `POST /device/code`: the device authorization response, as JSON.
    pub async fn start_device(
        &self,
        request: DeviceCodeRequest<'_>,
        client_ip: ClientKey,
    ) -> Result<String, ProviderError> {
        check_grant_type(&self.settings, device::DEVICE_CODE_GRANT)?;
        let client = self.authenticate(
            request.authorization,
            request.client_id,
            request.client_secret,
        )?;
        let scope = request.scope.to_owned();
        let challenge = request.code_challenge.to_owned();
        let method = request.code_challenge_method.to_owned();
        let settings = self.settings.clone();
        let now = self.now();
        self.limits.create_request(client_ip, now)?;
        let started = self
            .with_storage(move |s| {
                let request = DeviceAuthorizationRequest {
                    scope: &scope,
                    code_challenge: &challenge,
                    code_challenge_method: &method,
                };
                device::start_device_authorization(s, &settings, &client, &request, now)
            })
            .await?;
        serde_json::to_string(&started).map_err(|error| {
            tracing::error!(%error, "cannot serialize device authorization");
            OAuthError::server_error().into()
        })
    }

    /// The user-code form for `browser`, pre-filled with `user_code`.
    pub fn device_form(
        &self,
        status: u16,
        browser: &BrowserSecret,
        user_code: &str,
        invalid: bool,
    ) -> Outcome {
        let page = DevicePage {
            post_url: format!(
                "{}/device/auth/verify_code",
                self.settings.issuer.path_prefix
            ),
            user_code: user_code.chars().take(SHOWN_USER_CODE_CHARS).collect(),
            invalid,
            csrf_token: CsrfToken::new(&self.form_key, &device_form_id(browser))
                .as_str()
                .to_owned(),
        };
        Outcome::Page(status, Page::Device(page))
    }

    /// `POST /device/auth/verify_code`: checks the typed user code (rate-limited
    /// per client, RFC 8628 §5.1: user codes are short), binds the device to this
    /// browser and sends it to log in.
    pub async fn verify_user_code(
        &self,
        browser: Option<&BrowserSecret>,
        csrf: &str,
        typed: &str,
        client_ip: ClientKey,
    ) -> Result<Outcome, ProviderError> {
        let browser = browser
            .filter(|browser| CsrfToken::verify(&self.form_key, &device_form_id(browser), csrf));
        let Some(browser) = browser else {
            return Err(ProviderError::page(
                403,
                "Invalid or missing form token. Please open the device page again.",
            ));
        };
        if typed.is_empty() {
            return Err(ProviderError::bad_request("No user code received"));
        }
        let user_code = typed.to_owned();
        let settings = self.settings.clone();
        let now = self.now();
        self.limits.guess_user_code(client_ip, now)?;
        let binding = browser.binding();
        let checked = self
            .with_storage(move |s| {
                Ok::<_, ProviderError>(device::verify_user_code(
                    s, &settings, &user_code, &binding, now,
                ))
            })
            .await?;
        match checked {
            Ok(location) => Ok(Outcome::Found(location)),
            Err(UserCodeError::Invalid) => {
                let shown: String = typed.chars().take(SHOWN_USER_CODE_CHARS).collect();
                Ok(self.device_form(400, browser, &normalize_user_code(&shown), true))
            }
            Err(UserCodeError::Internal) => Err(ProviderError::page(500, "Database error.")),
            Err(UserCodeError::Unavailable) => Err(ProviderError::page(
                503,
                crate::oidc::error::UNAVAILABLE_PAGE,
            )),
        }
    }

    /// `GET /device/callback`: the login made for a device comes back; its code
    /// is redeemed for the device's tokens (only in the browser that entered the
    /// user code).
    pub async fn complete_device(
        &self,
        user_code: &str,
        code: &str,
        browser: Option<&BrowserSecret>,
    ) -> Result<Outcome, ProviderError> {
        let user_code = user_code.to_owned();
        let code = code.to_owned();
        let browser = browser.cloned();
        let connectors = self.connectors.clone();
        let client_name = self
            .with_grant(move |ctx| {
                device::complete_device_login(
                    ctx,
                    &DeviceCallback {
                        user_code: &user_code,
                        code: &code,
                        refreshing_connectors: connectors.refreshing_ids(),
                        browser: browser.as_ref(),
                    },
                )
                .map_err(ProviderError::from)
            })
            .await?;
        Ok(Outcome::Page(
            200,
            Page::DeviceSuccess(DeviceSuccessPage { client_name }),
        ))
    }

    /// `/token` with `grant_type=urn:ietf:params:oauth:grant-type:device_code`: no
    /// client authentication (as Dex); the stored token response once complete.
    pub async fn poll_device_token(
        &self,
        device_code: &str,
        code_verifier: &str,
    ) -> Result<String, OAuthError> {
        check_grant_type(&self.settings, device::DEVICE_CODE_GRANT)?;
        let device_code = device_code.to_owned();
        let verifier = code_verifier.to_owned();
        let now = self.now();
        self.with_storage(move |s| device::poll_device_token(s, &device_code, &verifier, now))
            .await
    }
}

/// What the device form's CSRF token is bound to: this browser.
fn device_form_id(browser: &BrowserSecret) -> String {
    format!("device-form:{}", browser.binding())
}
