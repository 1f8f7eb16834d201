//! Browser sessions with the openidconnect crate as the relying party: SSO across
//! two clients, prompt=none with and without a session, max_age=0, prompt=login,
//! remembered consent, RP-initiated logout with and without a hint, back-channel
//! logout with retries, session-bound refresh tokens, and hostile cookies and
//! hints.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::StatusCode;
use openidconnect::core::{CoreAuthPrompt, CoreClient, CoreIdToken, CoreResponseType};
use openidconnect::{
    AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndSessionUrl,
    IssuerUrl, LogoutRequest, Nonce, OAuth2TokenResponse, PostLogoutRedirectUrl,
    ProviderMetadataWithLogout, RedirectUrl, Scope, TokenResponse,
};
use oxidex::keys::KeySet;
use oxidex::storage::sqlite::SqliteStorage;
use oxidex::storage::{BrowserSession, Claims, SessionClient, Storage};
use serde_json::{Value, json};

use crate::browser::{Browser, Followed, form_action, input_value, location, query_param};
use crate::support::{ManualClock, TestServer, settings_from};

const APP_A: &str = "app-a";
const APP_B: &str = "app-b";
const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQ";
const CB_A: &str = "http://127.0.0.1:5555/a/callback";
const CB_B: &str = "http://127.0.0.1:5555/b/callback";
const BYE: &str = "http://127.0.0.1:5555/bye";

fn config(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "storage": {"type": "memory"},
        "web": {"http": "127.0.0.1:0"},
        "oauth2": {"skipApprovalScreen": true},
        "staticClients": [
            {"id": APP_A, "name": "App A", "secret": SECRET, "redirectURIs": [CB_A],
             "ssoSharedWith": [APP_B], "postLogoutRedirectURIs": [BYE]},
            {"id": APP_B, "name": "App B", "secret": SECRET, "redirectURIs": [CB_B],
             "refreshTokenLifetime": "session"}
        ],
        "connectors": [{"type": "mockCallback", "id": "mock", "name": "Mock"}]
    })
}

type RpClient = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

struct Rp {
    client: RpClient,
    end_session: EndSessionUrl,
    http: reqwest::Client,
}

async fn rp(server: &TestServer, id: &str, redirect: &str) -> Rp {
    let (client, end_session, http) = discover(server, id, redirect).await;
    Rp {
        client,
        end_session: end_session.expect("discovery advertises end_session_endpoint"),
        http,
    }
}

/// The openidconnect client of `id` from discovery, and the discovered
/// `end_session_endpoint` if any.
async fn discover(
    server: &TestServer,
    id: &str,
    redirect: &str,
) -> (RpClient, Option<EndSessionUrl>, reqwest::Client) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let metadata =
        ProviderMetadataWithLogout::discover_async(IssuerUrl::new(server.issuer()).unwrap(), &http)
            .await
            .unwrap();
    let end_session = metadata.additional_metadata().end_session_endpoint.clone();
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(id.into()),
        Some(ClientSecret::new(SECRET.into())),
    )
    .set_redirect_uri(RedirectUrl::new(redirect.into()).unwrap());
    (client, end_session, http)
}

/// An authorization URL of `rp` with `prompt`/`max_age`, and its nonce and state.
fn auth_url(
    rp: &Rp,
    prompt: Option<CoreAuthPrompt>,
    max_age: Option<Duration>,
    scopes: &[&str],
) -> (String, Nonce, CsrfToken) {
    let mut request = rp.client.authorize_url(
        AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
        CsrfToken::new_random,
        Nonce::new_random,
    );
    for scope in scopes {
        request = request.add_scope(Scope::new((*scope).into()));
    }
    if let Some(prompt) = prompt {
        request = request.add_prompt(prompt);
    }
    if let Some(max_age) = max_age {
        request = request.set_max_age(max_age);
    }
    let (url, state, nonce) = request.url();
    (url.to_string(), nonce, state)
}

/// Follows an authorization URL to the client's redirect and exchanges the
/// code; returns the verified ID token and the token response.
async fn login(
    browser: &Browser,
    rp: &Rp,
    prompt: Option<CoreAuthPrompt>,
    scopes: &[&str],
) -> (CoreIdToken, openidconnect::core::CoreTokenResponse) {
    let (url, nonce, state) = auth_url(rp, prompt, None, scopes);
    let back = browser.follow(&url).await.left();
    assert_eq!(
        query_param(&back, "state").unwrap(),
        *state.secret(),
        "{back}"
    );
    let code = query_param(&back, "code").unwrap_or_else(|| panic!("no code in {back}"));
    let tokens = rp
        .client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .request_async(&rp.http)
        .await
        .unwrap();
    let id_token = tokens.id_token().unwrap().clone();
    id_token
        .claims(&rp.client.id_token_verifier(), &nonce)
        .expect("ID token verifies");
    (id_token, tokens)
}

fn payload(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

/// Where a silent request ends: the client's redirect URI with an `error`, or a code.
async fn silent(browser: &Browser, rp: &Rp, max_age: Option<Duration>) -> String {
    let (url, _, state) = auth_url(rp, Some(CoreAuthPrompt::None), max_age, &[]);
    let back = browser.follow(&url).await.left();
    assert_eq!(query_param(&back, "state").unwrap(), *state.secret());
    back
}

#[tokio::test]
async fn sso_across_two_clients_prompt_none_max_age_and_prompt_login() {
    let server = TestServer::start_at_issuer(config).await;
    let (a, b) = (
        rp(&server, APP_A, CB_A).await,
        rp(&server, APP_B, CB_B).await,
    );
    let browser = Browser::new(&server.base());

    // No session yet: a silent request is refused without any page.
    let refused = silent(&browser, &b, None).await;
    assert_eq!(
        query_param(&refused, "error").as_deref(),
        Some("login_required")
    );

    let (first, _) = login(&browser, &a, None, &["profile"]).await;
    let claims = payload(&first.to_string());
    let sid = claims["sid"].as_str().expect("sid claim").to_owned();
    assert!(claims["auth_time"].is_i64(), "{claims}");

    // app-a shares its sessions with app-b: a silent login, same sid and auth_time.
    let (second, _) = login(&browser, &b, Some(CoreAuthPrompt::None), &["profile"]).await;
    let shared = payload(&second.to_string());
    assert_eq!(shared["sid"], sid);
    assert_eq!(shared["auth_time"], claims["auth_time"]);
    assert_eq!(shared["sub"], claims["sub"]);
    assert_eq!(shared["aud"], APP_B);

    // max_age=0 refuses the session; silently that is login_required.
    let too_old = silent(&browser, &a, Some(Duration::ZERO)).await;
    assert_eq!(
        query_param(&too_old, "error").as_deref(),
        Some("login_required")
    );
    // A generous max_age still reuses it.
    let fresh = silent(&browser, &a, Some(Duration::from_secs(3600))).await;
    assert!(query_param(&fresh, "code").is_some(), "{fresh}");

    // prompt=login goes through the connector again and keeps the session.
    let (again, _) = login(&browser, &a, Some(CoreAuthPrompt::Login), &[]).await;
    assert_eq!(payload(&again.to_string())["sid"], sid);

    // Another browser has no session.
    let other = Browser::new(&server.base());
    let refused = silent(&other, &a, None).await;
    assert_eq!(
        query_param(&refused, "error").as_deref(),
        Some("login_required")
    );
    server.stop().await;
}

#[tokio::test]
async fn sso_is_one_way_and_needs_the_clients_consent_policy() {
    let server = TestServer::start_at_issuer(config).await;
    let (a, b) = (
        rp(&server, APP_A, CB_A).await,
        rp(&server, APP_B, CB_B).await,
    );
    let browser = Browser::new(&server.base());
    // app-b does not share with app-a.
    login(&browser, &b, None, &[]).await;
    let refused = silent(&browser, &a, None).await;
    assert_eq!(
        query_param(&refused, "error").as_deref(),
        Some("login_required")
    );
    server.stop().await;
}

#[tokio::test]
async fn consent_is_remembered_per_user_and_client_and_prompt_consent_asks_again() {
    let server = TestServer::start_at_issuer(|issuer| {
        let mut c = config(issuer);
        c["oauth2"]["skipApprovalScreen"] = json!(false);
        c
    })
    .await;
    let a = rp(&server, APP_A, CB_A).await;
    let browser = Browser::new(&server.base());
    let (url, _, _) = auth_url(&a, None, None, &["email"]);
    let (_, status, page) = browser.follow(&url).await.page();
    assert_eq!(status, 200);
    assert!(page.contains("Grant access"), "{page}");
    let csrf = input_value(&page, "csrf_token");
    let approved = browser
        .post_form(
            &form_action(&page),
            &[("approval", "approve"), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(approved.status(), 303);

    // Silent, same scopes: granted before, so a code without a page.
    let (url, _, _) = auth_url(&a, Some(CoreAuthPrompt::None), None, &["email"]);
    let back = browser.follow(&url).await.left();
    assert!(query_param(&back, "code").is_some(), "{back}");
    // A scope never granted: consent_required, silently.
    let (url, _, _) = auth_url(&a, Some(CoreAuthPrompt::None), None, &["groups"]);
    let back = browser.follow(&url).await.left();
    assert_eq!(
        query_param(&back, "error").as_deref(),
        Some("consent_required")
    );
    // prompt=consent shows the page although everything was granted.
    let (url, _, _) = auth_url(&a, Some(CoreAuthPrompt::Consent), None, &["email"]);
    let (_, status, page) = browser.follow(&url).await.page();
    assert_eq!(status, 200);
    assert!(page.contains("Grant access"));
    server.stop().await;
}

#[tokio::test]
async fn logout_with_a_hint_redirects_with_state_and_ends_the_session() {
    let server = TestServer::start_at_issuer(config).await;
    let (a, b) = (
        rp(&server, APP_A, CB_A).await,
        rp(&server, APP_B, CB_B).await,
    );
    let browser = Browser::new(&server.base());
    let (id_token, a_tokens) = login(&browser, &a, None, &[]).await;
    let (_, b_tokens) = login(&browser, &b, None, &["offline_access"]).await;
    let b_refresh = b_tokens.refresh_token().expect("refresh token").clone();
    let introspect = |client: &'static str, token: String| {
        let url = format!("{}/token/introspect", server.issuer());
        async move {
            let body: Value = reqwest::Client::new()
                .post(url)
                .basic_auth(client, Some(SECRET))
                .form(&[("token", token)])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["active"] == json!(true)
        }
    };
    let b_access = b_tokens.access_token().secret().clone();
    let a_access = a_tokens.access_token().secret().clone();
    assert!(introspect(APP_B, b_access.clone()).await);
    assert!(introspect(APP_B, b_refresh.secret().clone()).await);

    // A redirect URI not registered for the hint's client: refused, no redirect.
    let bad = LogoutRequest::from(a.end_session.clone())
        .set_id_token_hint(&id_token)
        .set_post_logout_redirect_uri(
            PostLogoutRedirectUrl::new("http://127.0.0.1:5555/evil".into()).unwrap(),
        )
        .http_get_url();
    let refused = browser.get(bad.as_str()).await;
    assert_eq!(refused.status(), 400);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("Unregistered post_logout_redirect_uri.")
    );
    // client_id naming another client than the hint's: refused.
    let mismatch = LogoutRequest::from(a.end_session.clone())
        .set_id_token_hint(&id_token)
        .set_client_id(ClientId::new(APP_B.into()))
        .http_get_url();
    assert_eq!(browser.get(mismatch.as_str()).await.status(), 400);
    // Still signed in.
    assert!(query_param(&silent(&browser, &a, None).await, "code").is_some());

    let url = LogoutRequest::from(a.end_session.clone())
        .set_id_token_hint(&id_token)
        .set_post_logout_redirect_uri(PostLogoutRedirectUrl::new(BYE.into()).unwrap())
        .set_state(CsrfToken::new("s t&1".into()))
        .http_get_url();
    let response = browser.get(url.as_str()).await;
    assert_eq!(response.status(), 302);
    let to = location(&response);
    assert!(to.starts_with(BYE), "{to}");
    assert_eq!(query_param(&to, "state").as_deref(), Some("s t&1"));
    let cleared = response.headers().get_all("set-cookie").iter().any(|v| {
        v.to_str().unwrap().starts_with("dex_session=;")
            && v.to_str().unwrap().contains("Max-Age=0")
    });
    assert!(cleared, "the session cookie is cleared");

    let refused = silent(&browser, &a, None).await;
    assert_eq!(
        query_param(&refused, "error").as_deref(),
        Some("login_required")
    );
    // app-b's tokens were bound to the session (refreshTokenLifetime: session):
    // inactive now; app-a's (standalone) access token lives until it expires.
    assert!(!introspect(APP_B, b_access).await);
    assert!(!introspect(APP_B, b_refresh.secret().clone()).await);
    assert!(introspect(APP_A, a_access).await);
    let error = b
        .client
        .exchange_refresh_token(&b_refresh)
        .unwrap()
        .request_async(&b.http)
        .await
        .unwrap_err();
    assert!(
        format!("{error:?}").contains("invalid_grant")
            || format!("{error:?}").contains("invalid_request"),
        "{error:?}"
    );

    // A repeated logout with a valid redirect still lands where asked.
    let again = browser.get(url.as_str()).await;
    assert_eq!(again.status(), 302);
    server.stop().await;
}

#[tokio::test]
async fn logout_without_a_hint_asks_first_and_keeps_the_redirect_through_the_form() {
    let server = TestServer::start_at_issuer(config).await;
    let a = rp(&server, APP_A, CB_A).await;
    let browser = Browser::new(&server.base());
    login(&browser, &a, None, &[]).await;

    let url = LogoutRequest::from(a.end_session.clone())
        .set_client_id(ClientId::new(APP_A.into()))
        .set_post_logout_redirect_uri(PostLogoutRedirectUrl::new(BYE.into()).unwrap())
        .set_state(CsrfToken::new("xyz".into()))
        .http_get_url();
    let page = browser.get(url.as_str()).await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("Sign out?"), "{page}");
    // Nothing ended yet.
    assert!(query_param(&silent(&browser, &a, None).await, "code").is_some());
    // A POST without the form's token (a cross-site form) only asks again.
    let forged = browser
        .post_form(
            &form_action(&page),
            &[("post_logout_redirect_uri", BYE), ("client_id", APP_A)],
        )
        .await;
    assert_eq!(forged.status(), 200);
    assert!(query_param(&silent(&browser, &a, None).await, "code").is_some());

    let confirmed = browser
        .post_form(
            &form_action(&page),
            &[
                ("csrf_token", &input_value(&page, "csrf_token")),
                (
                    "post_logout_redirect_uri",
                    &input_value(&page, "post_logout_redirect_uri"),
                ),
                ("state", &input_value(&page, "state")),
                ("client_id", &input_value(&page, "client_id")),
            ],
        )
        .await;
    assert_eq!(confirmed.status(), 302);
    let to = location(&confirmed);
    assert_eq!(query_param(&to, "state").as_deref(), Some("xyz"), "{to}");
    let refused = silent(&browser, &a, None).await;
    assert_eq!(
        query_param(&refused, "error").as_deref(),
        Some("login_required")
    );

    // Without a session: a page saying so.
    let (_, status, body) = browser.follow("/dex/logout").await.page();
    assert_eq!(status, 200);
    assert!(body.contains("Not signed in"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn root_page_names_the_user_and_signs_out() {
    let server = TestServer::start_at_issuer(config).await;
    let a = rp(&server, APP_A, CB_A).await;
    let browser = Browser::new(&server.base());
    let (_, status, body) = browser.follow("/dex").await.page();
    assert_eq!(status, 200);
    assert!(body.contains("Not signed in"), "{body}");
    login(&browser, &a, None, &[]).await;
    let (_, status, body) = browser.follow("/dex/").await.page();
    assert_eq!(status, 200);
    assert!(
        body.contains("Signed in") && body.contains("kilgore@kilgore.trout"),
        "{body}"
    );
    let signed_out = browser
        .post_form(
            &form_action(&body),
            &[("csrf_token", &input_value(&body, "csrf_token"))],
        )
        .await;
    assert_eq!(signed_out.status(), 200);
    assert!(signed_out.text().await.unwrap().contains("Signed out"));
    let refused = silent(&browser, &a, None).await;
    assert_eq!(
        query_param(&refused, "error").as_deref(),
        Some("login_required")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_forged_or_stale_session_cookie_never_signs_anyone_in_and_is_cleared() {
    let server = TestServer::start_at_issuer(config).await;
    let a = rp(&server, APP_A, CB_A).await;
    let browser = Browser::new(&server.base());
    let (id_token, _) = login(&browser, &a, None, &[]).await;
    let sid = payload(&id_token.to_string())["sid"]
        .as_str()
        .unwrap()
        .to_owned();

    // The sid is public (it is in every ID token); with a made-up secret the
    // cookie opens nothing, silently or not, and a non-silent answer clears it.
    let attacker = Browser::new(&server.base());
    for value in [
        format!("{sid}.{}", "a".repeat(52)),
        format!("{sid}."),
        "x".repeat(4000),
        "%00".to_owned(),
    ] {
        for prompt in [Some(CoreAuthPrompt::None), None] {
            let (url, _, _) = auth_url(&a, prompt.clone(), None, &[]);
            let mut next = url;
            for _ in 0..3 {
                let response = attacker
                    .http
                    .get(attacker.absolute(&next))
                    .header("cookie", format!("dex_session={value}"))
                    .send()
                    .await
                    .unwrap();
                let cleared = response
                    .headers()
                    .get_all("set-cookie")
                    .iter()
                    .any(|v| v.to_str().unwrap().starts_with("dex_session=;"));
                next = location(&response);
                if prompt.is_none() && next.contains("/callback") {
                    assert!(cleared, "cookie {value:.40} cleared");
                }
                if !next.starts_with('/') {
                    break;
                }
            }
            match prompt {
                Some(_) => assert_eq!(
                    query_param(&next, "error").as_deref(),
                    Some("login_required"),
                    "{value:.40}"
                ),
                // The connector runs: nobody was signed in by the cookie.
                None => assert!(
                    next.contains("/callback") || query_param(&next, "code").is_none(),
                    "{next}"
                ),
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_login_renews_the_cookie_so_a_planted_one_is_worthless() {
    let server = TestServer::start_at_issuer(config).await;
    let a = rp(&server, APP_A, CB_A).await;
    let browser = Browser::new(&server.base());
    let (url, _, _) = auth_url(&a, None, None, &[]);
    // Walk the login by hand to read the Set-Cookie headers.
    let mut next = url;
    let mut session_cookies = Vec::new();
    for _ in 0..10 {
        let response = browser
            .http
            .get(browser.absolute(&next))
            .send()
            .await
            .unwrap();
        for value in response.headers().get_all("set-cookie") {
            let value = value.to_str().unwrap().to_owned();
            if value.starts_with("dex_session=") {
                session_cookies.push(value);
            }
        }
        next = location(&response);
        if next.starts_with(CB_A) {
            break;
        }
    }
    assert_eq!(session_cookies.len(), 1, "{session_cookies:?}");
    let cookie = &session_cookies[0];
    assert!(
        cookie.contains("; Path=/dex; HttpOnly; SameSite=Lax"),
        "{cookie}"
    );
    // Callback logins are remembered by default (rememberMeCheckedByDefault).
    assert!(cookie.contains("; Max-Age=86400"), "{cookie}");
    assert!(!cookie.contains("Secure"), "http issuer: no Secure");
    let first_value = cookie.split(';').next().unwrap().to_owned();

    // A second interactive login (prompt=login) keeps the session id but issues a
    // new secret: the old cookie value no longer opens the session.
    let (url, _, _) = auth_url(&a, Some(CoreAuthPrompt::Login), None, &[]);
    let _ = browser.follow(&url).await.left();
    let stale = Browser::new(&server.base());
    let (url, _, _) = auth_url(&a, Some(CoreAuthPrompt::None), None, &[]);
    let response = stale
        .http
        .get(&url)
        .header("cookie", first_value.clone())
        .send()
        .await
        .unwrap();
    let next = stale.absolute(&location(&response));
    let response = stale
        .http
        .get(&next)
        .header("cookie", first_value)
        .send()
        .await
        .unwrap();
    assert_eq!(
        query_param(&location(&response), "error").as_deref(),
        Some("login_required")
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_id_token_hints_and_prompt_values_are_refused_to_the_client() {
    let server = TestServer::start_at_issuer(config).await;
    let a = rp(&server, APP_A, CB_A).await;
    let browser = Browser::new(&server.base());
    let (url, _, _) = auth_url(&a, None, None, &[]);
    for (extra, error, description) in [
        (
            "&id_token_hint=not.a.jwt",
            "invalid_request",
            "Invalid id_token_hint.",
        ),
        (
            "&id_token_hint=eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.",
            "invalid_request",
            "Invalid id_token_hint.",
        ),
        (
            "&prompt=none+login",
            "invalid_request",
            "Invalid prompt parameter: prompt=none must not be combined with other values",
        ),
        (
            "&prompt=bogus",
            "invalid_request",
            "Invalid prompt parameter: invalid prompt value \"bogus\"",
        ),
        (
            "&max_age=-1",
            "invalid_request",
            "Invalid max_age value \"-1\"",
        ),
    ] {
        let back = browser.follow(&format!("{url}{extra}")).await.left();
        assert_eq!(
            query_param(&back, "error").as_deref(),
            Some(error),
            "{extra}: {back}"
        );
        assert_eq!(
            query_param(&back, "error_description").as_deref(),
            Some(description),
            "{extra}"
        );
    }
    // A hint of another user stops the reuse; silently that is login_required.
    let (id_token, _) = login(&browser, &a, None, &[]).await;
    let hint = id_token.to_string();
    let (url, _, _) = auth_url(&a, Some(CoreAuthPrompt::None), None, &[]);
    let back = browser
        .follow(&format!("{url}&id_token_hint={hint}"))
        .await
        .left();
    assert!(query_param(&back, "code").is_some(), "own hint: {back}");
    server.stop().await;
}

/// A back-channel logout receiver: answers 503 `fail_first` times, then 200.
#[derive(Clone, Default)]
struct Receiver {
    tokens: Arc<Mutex<Vec<(String, String)>>>,
    fail_first: Arc<Mutex<u32>>,
}

async fn receive(
    State(receiver): State<Receiver>,
    headers: axum::http::HeaderMap,
    body: String,
) -> StatusCode {
    let content_type = headers
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    receiver.tokens.lock().unwrap().push((content_type, body));
    let mut fail = receiver.fail_first.lock().unwrap();
    if *fail > 0 {
        *fail -= 1;
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

/// Serves `receiver` at `/backchannel` on a free port; returns its address.
async fn serve_receiver(receiver: &Receiver) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/backchannel", axum::routing::post(receive))
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn back_channel_logout_is_signed_typed_and_retried_until_delivered() {
    let receiver = Receiver::default();
    *receiver.fail_first.lock().unwrap() = 1;
    let rp_addr = serve_receiver(&receiver).await;

    let server = TestServer::start_at_issuer(|issuer| {
        let mut c = config(issuer);
        c["staticClients"][0]["backchannelLogoutURI"] =
            json!(format!("http://{rp_addr}/backchannel"));
        c
    })
    .await;
    let a = rp(&server, APP_A, CB_A).await;
    let browser = Browser::new(&server.base());
    let (id_token, _) = login(&browser, &a, None, &[]).await;
    let sid = payload(&id_token.to_string())["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = LogoutRequest::from(a.end_session.clone())
        .set_id_token_hint(&id_token)
        .http_get_url();
    let (_, status, body) = browser.follow(url.as_str()).await.page();
    assert_eq!(status, 200);
    assert!(body.contains("Signed out"), "{body}");

    // First attempt answered 503, the retry (2 s later) 200.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while receiver.tokens.lock().unwrap().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "logout token not retried"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received = receiver.tokens.lock().unwrap().clone();
    assert_eq!(received.len(), 2, "delivered once after one failure");
    let keyset = server.state.live().provider.keys().keyset().await.unwrap();
    let mut jtis = Vec::new();
    for (content_type, body) in &received {
        assert_eq!(content_type, "application/x-www-form-urlencoded");
        let token = form_urlencoded::parse(body.as_bytes())
            .find(|(k, _)| k == "logout_token")
            .unwrap()
            .1
            .into_owned();
        let claims = keyset.verify_jwt(&token).expect("signed by oxidex");
        let header: Value = {
            use base64::Engine;
            serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(token.split('.').next().unwrap())
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(header["typ"], "logout+jwt");
        assert_eq!(claims["iss"], server.issuer());
        assert_eq!(claims["aud"], APP_A);
        assert_eq!(claims["sid"], sid);
        assert_eq!(claims["sub"], payload(&id_token.to_string())["sub"]);
        assert!(claims["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object());
        assert!(claims.get("nonce").is_none());
        let (iat, exp) = (
            claims["iat"].as_i64().unwrap(),
            claims["exp"].as_i64().unwrap(),
        );
        assert_eq!(exp - iat, 120);
        jtis.push(claims["jti"].as_str().unwrap().to_owned());
    }
    assert_ne!(jtis[0], jtis[1], "each attempt is a fresh token");
    let pending = server
        .state
        .live()
        .provider
        .storage()
        .due_logout_deliveries(SystemTime::now() + Duration::from_secs(86_400), 10)
        .unwrap();
    assert!(pending.is_empty(), "nothing left to deliver");
    server.stop().await;
}

#[tokio::test]
async fn an_expired_session_is_not_reused_and_is_ended_with_its_back_channel_logout() {
    let receiver = Receiver::default();
    let rp_addr = serve_receiver(&receiver).await;

    let clock = ManualClock::at(SystemTime::now());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}/dex", listener.local_addr().unwrap());
    let mut c = config(&issuer);
    c["staticClients"][0]["backchannelLogoutURI"] = json!(format!("http://{rp_addr}/backchannel"));
    c["sessions"] = json!({"validIfNotUsedFor": "10m", "absoluteLifetime": "1h"});
    c["gc"] = json!({"interval": "1s"});
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_from(&c, dir.path());
    let server = TestServer::start_on(listener, settings, clock.clock(), Some(dir)).await;
    let a = rp(&server, APP_A, CB_A).await;
    let browser = Browser::new(&server.base());
    login(&browser, &a, None, &[]).await;
    clock.advance(Duration::from_secs(9 * 60));
    assert!(
        query_param(&silent(&browser, &a, None).await, "code").is_some(),
        "used within the idle time"
    );
    clock.advance(Duration::from_secs(11 * 60));
    let refused = silent(&browser, &a, None).await;
    assert_eq!(
        query_param(&refused, "error").as_deref(),
        Some("login_required")
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while receiver.tokens.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expired session not announced"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sessions = server
        .state
        .live()
        .provider
        .storage()
        .expired_browser_sessions(clock.now() + Duration::from_secs(86_400), 10)
        .unwrap();
    assert!(sessions.is_empty(), "the expired session row is gone");
    server.stop().await;
}

/// Logs in at `url` through the password form as `email`; returns where the
/// browser leaves oxidex (the approval screen is skipped).
async fn password_login(browser: &Browser, url: &str, email: &str) -> String {
    let (form_url, status, form) = browser.follow(url).await.page();
    assert_eq!(status, 200, "password form expected at {form_url}:\n{form}");
    let csrf = input_value(&form, "csrf_token");
    let posted = browser
        .post_form(
            &form_action(&form),
            &[
                ("login", email),
                ("password", "password"),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    assert_eq!(posted.status(), 303, "login of {email} accepted");
    let next = browser.absolute(&location(&posted));
    if next.starts_with(&browser.base) {
        browser.follow(&next).await.left()
    } else {
        next
    }
}

/// The claims of the ID token that `rp` gets for the code in `back`.
async fn redeem(rp: &Rp, back: &str) -> Value {
    let code = query_param(back, "code").unwrap_or_else(|| panic!("no code in {back}"));
    let tokens = rp
        .client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .request_async(&rp.http)
        .await
        .unwrap();
    payload(&tokens.id_token().unwrap().to_string())
}

#[tokio::test]
async fn another_users_login_in_the_same_browser_ends_the_first_session_with_its_logout() {
    let receiver = Receiver::default();
    let rp_addr = serve_receiver(&receiver).await;

    let server = TestServer::start_at_issuer(|issuer| {
        let mut c = config(issuer);
        c["staticClients"][0]["backchannelLogoutURI"] =
            json!(format!("http://{rp_addr}/backchannel"));
        c["enablePasswordDB"] = json!(true);
        c["connectors"] = json!([]);
        c["staticPasswords"] = json!([
            {"email": "alice@example.com", "hash": crate::login::PASSWORD_HASH,
             "username": "alice", "userID": "alice-id"},
            {"email": "bob@example.com", "hash": crate::login::PASSWORD_HASH,
             "username": "bob", "userID": "bob-id"}
        ]);
        c
    })
    .await;
    let a = rp(&server, APP_A, CB_A).await;
    let browser = Browser::new(&server.base());

    let (url, _, _) = auth_url(&a, None, None, &[]);
    let alice = redeem(
        &a,
        &password_login(&browser, &url, "alice@example.com").await,
    )
    .await;
    let (url, _, _) = auth_url(&a, Some(CoreAuthPrompt::Login), None, &[]);
    let bob = redeem(&a, &password_login(&browser, &url, "bob@example.com").await).await;
    assert_ne!(alice["sub"], bob["sub"]);
    assert_ne!(alice["sid"], bob["sid"]);

    // Alice's session ended with the login of Bob: her logout reaches the client.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while receiver.tokens.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ended session was not announced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = receiver.tokens.lock().unwrap().clone();
    assert_eq!(received.len(), 1, "one logout, for Alice's session only");
    let keyset = server.state.live().provider.keys().keyset().await.unwrap();
    let claims = logout_claims(&keyset, &received[0].1);
    assert_eq!(claims["sub"], alice["sub"]);
    assert_eq!(claims["sid"], alice["sid"]);

    // The browser now holds Bob's session.
    let silently = redeem(&a, &silent(&browser, &a, None).await).await;
    assert_eq!(silently["sub"], bob["sub"]);
    assert_eq!(silently["sid"], bob["sid"]);
    server.stop().await;
}

/// More sessions expire within one `gc.interval` than the background task ends
/// per round (64): its first sweep still ends every one and every logout goes
/// out, instead of 64 per interval with the rest left behind for good.
#[tokio::test]
async fn a_backlog_of_expired_sessions_is_ended_and_announced_in_one_sweep() {
    const EXPIRED: usize = 150;
    let receiver = Receiver::default();
    let rp_addr = serve_receiver(&receiver).await;
    let now = SystemTime::now();
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("oxidex.db");
    let mut expected = std::collections::BTreeSet::new();
    {
        let storage = SqliteStorage::open(&database).unwrap();
        for i in 0..EXPIRED {
            let session = expired_session(i, APP_A, now);
            expected.insert(session.id.clone());
            storage.create_browser_session(&session).unwrap();
        }
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}/dex", listener.local_addr().unwrap());
    let mut c = config(&issuer);
    c["storage"] = json!({"type": "sqlite3", "config": {"file": database}});
    c["staticClients"][0]["backchannelLogoutURI"] = json!(format!("http://{rp_addr}/backchannel"));
    // The next sweep is an hour away: only the first one can end them.
    c["gc"] = json!({"interval": "1h"});
    let settings = settings_from(&c, dir.path());
    let clock = ManualClock::at(now);
    let server = TestServer::start_on(listener, settings, clock.clock(), Some(dir)).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while receiver.tokens.lock().unwrap().len() < EXPIRED {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {EXPIRED} expired sessions announced",
            receiver.tokens.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let keyset = server.state.live().provider.keys().keyset().await.unwrap();
    let announced: std::collections::BTreeSet<String> = receiver
        .tokens
        .lock()
        .unwrap()
        .iter()
        .map(|(_, body)| {
            logout_claims(&keyset, body)["sid"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(announced, expected, "each expired session announced once");
    let left = server
        .state
        .live()
        .provider
        .storage()
        .expired_browser_sessions(now + Duration::from_secs(86_400), 10)
        .unwrap();
    assert!(left.is_empty(), "{} expired sessions left", left.len());
    server.stop().await;
}

/// A browser session of `client` that expired a minute before `now`.
fn expired_session(i: usize, client: &str, now: SystemTime) -> BrowserSession {
    let an_hour_ago = now - Duration::from_secs(3600);
    let expired = now - Duration::from_secs(60);
    BrowserSession {
        id: format!("expired-{i:03}"),
        secret_hash: format!("hash-{i}"),
        user_id: format!("user-{i}"),
        connector_id: "mock".into(),
        claims: Claims {
            user_id: format!("user-{i}"),
            email: format!("user-{i}@example.com"),
            ..Claims::default()
        },
        connector_data: None,
        clients: [(
            client.to_owned(),
            SessionClient {
                authenticated_at: an_hour_ago,
                last_token_issued_at: Some(an_hour_ago),
                via_sso: false,
            },
        )]
        .into(),
        created_at: an_hour_ago,
        authenticated_at: an_hour_ago,
        last_activity: an_hour_ago,
        absolute_expiry: now + Duration::from_secs(3600),
        idle_expiry: expired,
    }
}

/// The verified claims of the logout token in a back-channel request `body`.
fn logout_claims(keyset: &KeySet, body: &str) -> Value {
    let token = form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "logout_token")
        .expect("a logout_token parameter")
        .1
        .into_owned();
    Value::Object(keyset.verify_jwt(&token).expect("signed by oxidex"))
}

#[tokio::test]
async fn sessions_off_gives_dex_v2_45_behaviour() {
    // DEX_SESSIONS_ENABLED=false is read through the config's environment.
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}/dex", listener.local_addr().unwrap());
    let path = dir.path().join("config.json");
    std::fs::write(&path, serde_json::to_vec(&config(&issuer)).unwrap()).unwrap();
    let options = oxidex::config::LoadOptions {
        env: oxidex::config::Env::from_pairs([("DEX_SESSIONS_ENABLED", "false")]),
        ..Default::default()
    };
    let settings = oxidex::config::load_file(&path, &options).unwrap().settings;
    assert!(settings.sessions.is_none());
    let server = TestServer::start_on(
        listener,
        settings,
        oxidex::server::system_clock(),
        Some(dir),
    )
    .await;
    let discovery: Value = reqwest::get(format!(
        "{}/.well-known/openid-configuration",
        server.issuer()
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(discovery.get("end_session_endpoint").is_none());
    assert!(
        !discovery["claims_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("sid"))
    );
    let a = rp_without_logout(&server).await;
    let browser = Browser::new(&server.base());
    let (url, _, _) = auth_url(&a, None, None, &[]);
    let back = browser.follow(&url).await.left();
    assert!(query_param(&back, "code").is_some());
    // No session: the next silent request is refused, and /logout does not exist.
    let refused = silent(&browser, &a, None).await;
    assert_eq!(
        query_param(&refused, "error").as_deref(),
        Some("login_required")
    );
    assert_eq!(browser.get("/dex/logout").await.status(), 400);
    let code_login = browser.follow(&url).await;
    assert!(matches!(code_login, Followed::Left(_)));
    server.stop().await;
}

async fn rp_without_logout(server: &TestServer) -> Rp {
    let (client, end_session, http) = discover(server, APP_A, CB_A).await;
    assert!(end_session.is_none());
    Rp {
        client,
        end_session: EndSessionUrl::new(format!("{}/logout", server.issuer())).unwrap(),
        http,
    }
}
