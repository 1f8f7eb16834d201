//! The device flow (RFC 8628) over HTTP: device code → the user enters the code
//! in a browser → password login → approval → device callback → the device's
//! polling gets the tokens, once. Time is a `ManualClock`, so `slow_down` and
//! expiry are exact.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openidconnect::core::{CoreClient, CoreDeviceAuthorizationResponse, CoreProviderMetadata};
use openidconnect::{
    ClientId, DeviceAuthorizationUrl, IssuerUrl, Nonce, OAuth2TokenResponse, Scope, TokenResponse,
};
use reqwest::header;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::browser::{Browser, form_action, input_value, location, query_param};
use crate::login::{CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, browser_login_in, password_db_config};
use crate::support::{ManualClock, TestServer, settings_from};

pub const GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
const PUBLIC_CLIENT: &str = "example-app-cli";

/// A server at `http://127.0.0.1:<port>/dex` running on `clock`.
pub async fn start_with_clock(
    clock: &ManualClock,
    make_config: impl FnOnce(&str) -> Value,
) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}/dex", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_from(&make_config(&issuer), dir.path());
    TestServer::start_on(listener, settings, clock.clock(), Some(dir)).await
}

pub fn clock() -> ManualClock {
    ManualClock::at(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
}

/// The password-DB config; the confidential client registers the device
/// callback under the issuer path (as Dex HEAD requires), and a public client
/// without redirect URIs is added (its name contains "Example App" for
/// `browser_login`'s approval check).
fn device_config(issuer: &str) -> Value {
    let mut config = password_db_config(issuer);
    config["staticClients"][0]["redirectURIs"] = json!([REDIRECT_URI, "/dex/device/callback"]);
    config["staticClients"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": PUBLIC_CLIENT, "name": "Example App CLI", "public": true}));
    config
}

async fn device_code(server: &TestServer, form: &[(&str, &str)], basic: bool) -> reqwest::Response {
    let mut request = server.http.post(format!("{}/device/code", server.issuer()));
    if basic {
        request = request.basic_auth(CLIENT_ID, Some(CLIENT_SECRET));
    }
    request.form(form).send().await.unwrap()
}

async fn poll(server: &TestServer, device_code: &str, verifier: &str) -> (u16, Value) {
    let mut form = vec![("grant_type", GRANT), ("device_code", device_code)];
    if !verifier.is_empty() {
        form.push(("code_verifier", verifier));
    }
    let response = server
        .http
        .post(format!("{}/token", server.issuer()))
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Opens the code-entry page (optionally prefilled via `url`) in `browser`
/// (which keeps the page's browser cookie), submits `code` with the page's CSRF
/// token; returns the response.
pub async fn enter_user_code(
    browser: &Browser,
    url: &str,
    code: Option<&str>,
) -> reqwest::Response {
    let page = browser.get(url).await;
    assert_eq!(page.status(), 200);
    if let Some(cookie) = page.headers().get(header::SET_COOKIE) {
        let cookie = cookie.to_str().unwrap();
        assert!(
            cookie.starts_with("oxidex_browser=")
                && cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Lax")
                && cookie.contains("Path=/dex;"),
            "{cookie}"
        );
    }
    let html = page.text().await.unwrap();
    let prefilled = input_value(&html, "user_code");
    let csrf = input_value(&html, "csrf_token");
    let code = code.map_or(prefilled, str::to_owned);
    browser
        .post_form(
            &form_action(&html),
            &[("user_code", code.as_str()), ("csrf_token", csrf.as_str())],
        )
        .await
}

#[tokio::test]
async fn device_flow_end_to_end_with_pkce_slow_down_and_one_time_tokens() {
    let clock = clock();
    let server = start_with_clock(&clock, device_config).await;
    let issuer = server.issuer();

    let verifier = "device-verifier-0123456789-0123456789-0123456789";
    let challenge = oxidex::crypto::s256_challenge(verifier);
    let response = device_code(
        &server,
        &[
            ("scope", "openid email profile offline_access"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
        true,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let started: Value = response.json().await.unwrap();
    let device_code = started["device_code"].as_str().unwrap().to_owned();
    let user_code = started["user_code"].as_str().unwrap().to_owned();
    assert_eq!(device_code.len(), 51);
    assert_eq!(user_code.len(), 9);
    assert_eq!(started["verification_uri"], format!("{issuer}/device"));
    assert_eq!(
        started["verification_uri_complete"],
        format!("{issuer}/device?user_code={user_code}")
    );
    assert_eq!(started["expires_in"], 300);
    assert_eq!(started["interval"], 5);

    // Polling before the user acts: pending, then too fast.
    assert_eq!(
        poll(&server, &device_code, verifier).await,
        (400, json!({"error": "authorization_pending"}))
    );
    assert_eq!(
        poll(&server, &device_code, verifier).await,
        (400, json!({"error": "slow_down"}))
    );

    // The user opens the verification link, confirms the prefilled code, logs in
    // and approves; oxidex lands on its own device callback.
    let browser = Browser::new(&server.base());
    let complete = started["verification_uri_complete"].as_str().unwrap();
    let entered = enter_user_code(&browser, complete, None).await;
    assert_eq!(entered.status(), 302);
    let auth_url = location(&entered);
    assert!(
        auth_url.starts_with("/dex/auth?client_id=example-app&"),
        "{auth_url}"
    );
    let auth_url = browser.absolute(&auth_url);
    assert_eq!(query_param(&auth_url, "state").unwrap(), user_code);
    assert_eq!(
        query_param(&auth_url, "redirect_uri").unwrap(),
        "/dex/device/callback"
    );
    let back = browser_login_in(&browser, &auth_url, "admin@example.com", "password").await;
    assert!(back.starts_with("/dex/device/callback?"), "{back}");
    let done = browser.get(&back).await;
    assert_eq!(done.status(), 200);
    let page = done.text().await.unwrap();
    assert!(
        page.contains("Device connected") && page.contains("Example App"),
        "{page}"
    );
    // The callback cannot be replayed.
    assert_eq!(browser.get(&back).await.status(), 400);

    // The device polls after its (now 10 s) interval: wrong verifier first.
    clock.advance(Duration::from_secs(11));
    let (status, body) = poll(&server, &device_code, "wrong").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let response = server
        .http
        .post(format!("{issuer}/token"))
        .form(&[
            ("grant_type", GRANT),
            ("device_code", device_code.as_str()),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let tokens: Value = response.json().await.unwrap();
    assert_eq!(tokens["token_type"], "bearer");
    assert!(tokens["id_token"].is_string(), "{tokens}");
    assert!(
        tokens["refresh_token"].is_string(),
        "offline_access: {tokens}"
    );
    let access = tokens["access_token"].as_str().unwrap();

    let userinfo: Value = server
        .http
        .get(format!("{issuer}/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(userinfo["email"], "admin@example.com");
    assert_eq!(userinfo["aud"], CLIENT_ID);

    // Beyond Dex: the tokens are handed out once.
    let (status, body) = poll(&server, &device_code, verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn public_client_device_flow_uses_the_implicit_issuer_path_callback() {
    // Two device logins in one browser: with sessions the second one would be
    // single sign-on, which is not what this test is about.
    let server = TestServer::start_at_issuer_without_sessions(device_config).await;
    let response = device_code(&server, &[("client_id", PUBLIC_CLIENT)], false).await;
    assert_eq!(response.status(), 200);
    let started: Value = response.json().await.unwrap();
    let device_code = started["device_code"].as_str().unwrap();
    let user_code = started["user_code"].as_str().unwrap();

    // Typed by hand: lower case, without the dash.
    let browser = Browser::new(&server.base());
    let typed = user_code.replace('-', "").to_lowercase();
    let entered = enter_user_code(&browser, "/dex/device", Some(&typed)).await;
    assert_eq!(entered.status(), 302);
    let auth_url = browser.absolute(&location(&entered));
    assert_eq!(query_param(&auth_url, "scope").unwrap(), "openid");
    let back = browser_login_in(&browser, &auth_url, "admin@example.com", "password").await;
    assert_eq!(browser.get(&back).await.status(), 200);

    let (status, tokens) = poll(&server, device_code, "").await;
    assert_eq!(status, 200, "{tokens}");
    assert!(tokens["id_token"].is_string());
    assert!(tokens.get("refresh_token").is_none(), "no offline_access");
    server.stop().await;
}

#[tokio::test]
async fn expired_device_codes_and_user_codes() {
    let clock = clock();
    let server = start_with_clock(&clock, device_config).await;
    let started: Value = device_code(&server, &[("client_id", PUBLIC_CLIENT)], false)
        .await
        .json()
        .await
        .unwrap();
    let device_code = started["device_code"].as_str().unwrap();
    let user_code = started["user_code"].as_str().unwrap();
    clock.advance(Duration::from_secs(301));

    assert_eq!(
        poll(&server, device_code, "").await,
        (400, json!({"error": "expired_token"}))
    );
    let browser = Browser::new(&server.base());
    let entered = enter_user_code(&browser, "/dex/device", Some(user_code)).await;
    assert_eq!(entered.status(), 400);
    let page = entered.text().await.unwrap();
    assert!(page.contains("Invalid or expired code"), "{page}");
    assert_eq!(
        input_value(&page, "user_code"),
        user_code,
        "the code is shown again"
    );

    let (status, body) = poll(&server, "no-such-device-code", "").await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (400, Some("Invalid Device code."))
    );
    server.stop().await;
}

#[tokio::test]
async fn device_code_requires_a_known_authenticated_client_and_a_form_token() {
    let clock = clock();
    let server = start_with_clock(&clock, device_config).await;
    let unknown = device_code(&server, &[("client_id", "nobody")], false).await;
    assert_eq!(unknown.status(), 401);
    assert_eq!(
        unknown.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
    // A confidential client without its secret.
    let no_secret = device_code(&server, &[("client_id", CLIENT_ID)], false).await;
    assert_eq!(no_secret.status(), 401);
    let bad_scope = device_code(
        &server,
        &[("client_id", PUBLIC_CLIENT), ("scope", "openid bogus")],
        false,
    )
    .await;
    assert_eq!(bad_scope.status(), 400);
    assert_eq!(
        bad_scope.json::<Value>().await.unwrap()["error"],
        "invalid_scope"
    );
    let get = server
        .http
        .get(format!("{}/device/code", server.issuer()))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 400);

    // A cross-site POST of a user code (no cookie, no token) is refused.
    let started: Value = device_code(&server, &[("client_id", PUBLIC_CLIENT)], false)
        .await
        .json()
        .await
        .unwrap();
    let forged = server
        .http
        .post(format!("{}/device/auth/verify_code", server.issuer()))
        .form(&[("user_code", started["user_code"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    server.stop().await;
}

/// A real RFC 8628 client (the openidconnect crate) against oxidex: device
/// authorization, polling (its sleeps move the server's clock), ID token
/// verification against `/keys`.
#[tokio::test]
async fn openidconnect_device_client_gets_verified_tokens() {
    // Real time: the client checks the ID token against its own clock.
    let clock = ManualClock::at(SystemTime::now());
    let server = start_with_clock(&clock, device_config).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(server.issuer()).unwrap(), &http)
            .await
            .unwrap();
    let client =
        CoreClient::from_provider_metadata(metadata, ClientId::new(PUBLIC_CLIENT.to_owned()), None)
            .set_device_authorization_url(
                DeviceAuthorizationUrl::new(format!("{}/device/code", server.issuer())).unwrap(),
            );
    let details: CoreDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scope(Scope::new("email".to_owned()))
        .request_async(&http)
        .await
        .unwrap();
    assert_eq!(details.interval(), Duration::from_secs(5));

    let browser = Browser::new(&server.base());
    let complete = details
        .verification_uri_complete()
        .unwrap()
        .secret()
        .clone();
    let entered = enter_user_code(&browser, &complete, None).await;
    assert_eq!(entered.status(), 302);
    let auth_url = browser.absolute(&location(&entered));
    let back = browser_login_in(&browser, &auth_url, "admin@example.com", "password").await;
    assert_eq!(browser.get(&back).await.status(), 200);

    let server_clock = clock.clone();
    let tokens = client
        .exchange_device_access_token(&details)
        .unwrap()
        .request_async(
            &http,
            move |interval| {
                server_clock.advance(interval);
                std::future::ready(())
            },
            None,
        )
        .await
        .unwrap();
    let id_token = tokens.id_token().expect("an ID token");
    let claims = id_token
        .claims(&client.id_token_verifier(), |_: Option<&Nonce>| Ok(()))
        .expect("ID token verifies (signature via /keys, iss, aud, exp)");
    assert_eq!(claims.email().unwrap().as_str(), "admin@example.com");
    assert!(!tokens.access_token().secret().is_empty());
    server.stop().await;
}
