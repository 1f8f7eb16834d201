//! The browser cookie that binds every login to the browser that started it
//! (`oidc::binding` has the rules).
//!
//! `oxidex_browser=<52 random base32 characters>; Path=<issuer path>; HttpOnly;
//! SameSite=Lax[; Secure]`: a session cookie (no `Max-Age`), `Secure` when the
//! issuer is `https`, no `Domain`, Path the issuer's path so `/auth`, `/callback`,
//! `/approval` and `/device` all receive it. `SameSite=Lax` still sends it on the
//! top-level GET navigations that come back from the relying party and from an
//! upstream (`/auth`, `/callback`), and withholds it from cross-site POSTs.
//!
//! It is set by the first step of a login (`/auth/{connector}`, `/device`) when the
//! browser has none, and reused when present, so logins in two tabs both work.
//! The name is oxidex's own, like Dex HEAD's session cookie `dex_session`
//! (`sessions.cookieName`): browser sessions will attach to this browser secret
//! rather than add a second cookie. A `__Host-` name is not possible because the
//! cookie is scoped to the issuer's path.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use crate::config::Settings;
use crate::oidc::binding::BrowserSecret;
use crate::oidc::session::SessionCookie;
use crate::provider::CookieChange;

pub const BROWSER_COOKIE: &str = "oxidex_browser";

/// The first value of cookie `name` in the request. With several (a cookie of
/// the same name set for a more specific path comes first), only the first counts.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// The browser secret the request presents, if it is one we could have issued.
pub fn presented(headers: &HeaderMap) -> Option<BrowserSecret> {
    cookie(headers, BROWSER_COOKIE).and_then(BrowserSecret::parse)
}

/// The request's browser secret, or a new one; `true` when it is new and must be
/// set with [`set_cookie`].
pub fn ensure(headers: &HeaderMap) -> (BrowserSecret, bool) {
    match presented(headers) {
        Some(secret) => (secret, false),
        None => (BrowserSecret::generate(), true),
    }
}

/// Adds the `Set-Cookie` header for `secret`.
pub fn set_cookie(settings: &Settings, response: &mut Response, secret: &BrowserSecret) {
    let cookie = format!(
        "{BROWSER_COOKIE}={}; Path={}; HttpOnly; SameSite=Lax{}",
        secret.as_str(),
        cookie_path(settings),
        secure(settings)
    );
    match HeaderValue::from_str(&cookie) {
        Ok(value) => {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
        // The issuer path was validated as a URL path; this cannot happen.
        Err(error) => tracing::error!(%error, "cannot build the browser cookie"),
    }
}

/// The session cookie (`sessions.cookieName`) the request presents, decoded
/// (opened, when sealed); `None` when sessions are off or there is none. A
/// present but undecodable cookie is reported as `Err(())`, to be cleared.
pub fn presented_session(
    headers: &HeaderMap,
    settings: &Settings,
) -> Result<Option<SessionCookie>, ()> {
    let Some(sessions) = &settings.sessions else {
        return Ok(None);
    };
    match cookie(headers, &sessions.cookie_name) {
        None | Some("") => Ok(None),
        Some(value) => SessionCookie::decode(value, sessions.cookie_encryption_key.as_deref())
            .map(Some)
            .ok_or(()),
    }
}

/// Adds the `Set-Cookie` header for a change of the session cookie, with the
/// browser cookie's attributes (`HttpOnly; SameSite=Lax`, the issuer's path,
/// `Secure` under https) and `Max-Age` when it must outlive the browser.
pub fn apply_session_cookie(settings: &Settings, response: &mut Response, change: &CookieChange) {
    let Some(sessions) = &settings.sessions else {
        return;
    };
    let (value, max_age) = match change {
        CookieChange::Set { value, max_age } => (
            value.as_str(),
            max_age.map(|d| format!("; Max-Age={}", d.as_secs())),
        ),
        CookieChange::Clear => ("", Some("; Max-Age=0".to_owned())),
    };
    let cookie = format!(
        "{}={value}; Path={}; HttpOnly; SameSite=Lax{}{}",
        sessions.cookie_name,
        cookie_path(settings),
        secure(settings),
        max_age.unwrap_or_default()
    );
    match HeaderValue::from_str(&cookie) {
        Ok(value) => {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
        Err(error) => tracing::error!(%error, "cannot build the session cookie"),
    }
}

fn cookie_path(settings: &Settings) -> &str {
    match settings.issuer.path_prefix.as_str() {
        "" => "/",
        prefix => prefix,
    }
}

fn secure(settings: &Settings) -> &'static str {
    if settings.issuer.url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_well_formed_cookie_only() {
        let secret = BrowserSecret::generate();
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=1; {BROWSER_COOKIE}={}; b=2", secret.as_str()))
                .unwrap(),
        );
        assert_eq!(presented(&headers), Some(secret.clone()));
        assert_eq!(ensure(&headers), (secret, false));
        let mut bad = HeaderMap::new();
        bad.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("{BROWSER_COOKIE}=short")).unwrap(),
        );
        assert_eq!(presented(&bad), None);
        assert!(ensure(&bad).1);
        assert!(ensure(&HeaderMap::new()).1);
    }

    #[test]
    fn cookie_is_http_only_lax_path_scoped_and_secure_on_https() {
        let secret = BrowserSecret::generate();
        let mut settings = crate::oidc::test_support::settings();
        let mut response = Response::default();
        set_cookie(&settings, &mut response, &secret);
        assert_eq!(
            response.headers()[header::SET_COOKIE],
            format!(
                "oxidex_browser={}; Path=/dex; HttpOnly; SameSite=Lax; Secure",
                secret.as_str()
            )
        );
        settings.issuer.url = "http://127.0.0.1:5556".into();
        settings.issuer.path_prefix = String::new();
        let mut response = Response::default();
        set_cookie(&settings, &mut response, &secret);
        assert_eq!(
            response.headers()[header::SET_COOKIE],
            format!(
                "oxidex_browser={}; Path=/; HttpOnly; SameSite=Lax",
                secret.as_str()
            )
        );
    }
}
