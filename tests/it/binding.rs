//! Every login belongs to the browser that started it (the `oxidex_browser`
//! cookie), one login per auth request, approval MACs that die at login, the
//! device flow completed only where the user code was entered, redirect URIs read
//! as browsers read them, and `back` links that stay on the issuer's path.
//!
//! Each "browser" is a [`Browser`] with its own cookie jar.

use serde_json::{Value, json};

use crate::browser::{Browser, form_action, input_value, location, query_param};
use crate::device::enter_user_code;
use crate::login::{CLIENT_ID, CLIENT_SECRET, PASSWORD_HASH, REDIRECT_URI, browser_login_in};
use crate::support::TestServer;

const PUBLIC_ID: &str = "cli";
const OTHER_BROWSER: &str = "started in another browser";

fn config(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "storage": {"type": "memory"},
        "web": {"http": "127.0.0.1:0"},
        "staticClients": [
            {"id": CLIENT_ID, "name": "Example App", "secret": CLIENT_SECRET,
             "redirectURIs": [REDIRECT_URI]},
            {"id": PUBLIC_ID, "name": "Example App CLI", "public": true}
        ],
        "connectors": [{"type": "mockCallback", "id": "mock", "name": "Mock"}],
        "enablePasswordDB": true,
        "staticPasswords": [{
            "email": "admin@example.com",
            "hash": PASSWORD_HASH,
            "username": "admin",
            "userID": "08a8684b-db88-4b73-90a9-3cd1661f5466"
        }]
    })
}

async fn start() -> (TestServer, Browser, Browser) {
    let server = TestServer::start_at_issuer_without_sessions(config).await;
    let a = Browser::new(&server.base());
    let b = Browser::new(&server.base());
    (server, a, b)
}

fn auth_query(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("client_id", CLIENT_ID),
        ("redirect_uri", REDIRECT_URI),
        ("response_type", "code"),
        ("scope", "openid"),
        ("state", "st-1"),
    ] {
        if !pairs.iter().any(|(key, _)| *key == k) {
            s.append_pair(k, v);
        }
    }
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fn url(server: &TestServer, path: &str) -> String {
    format!("{}{path}", server.issuer())
}

async fn page(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn assert_other_browser(response: reqwest::Response) {
    let (status, body) = page(response).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(OTHER_BROWSER), "{body}");
}

/// Browser `a` starts a mock login; returns the upstream's callback URL.
async fn start_mock_login(server: &TestServer, a: &Browser, extra: &[(&str, &str)]) -> String {
    let r = a
        .get(&url(server, &format!("/auth/mock?{}", auth_query(extra))))
        .await;
    assert_eq!(r.status(), 302);
    location(&r)
}

/// Browser `a` opens the password form: (form HTML, its `state`).
async fn password_form(server: &TestServer, a: &Browser) -> (String, String) {
    let (at, status, html) = a
        .follow(&url(server, &format!("/auth/local?{}", auth_query(&[]))))
        .await
        .page();
    assert_eq!(status, 200, "{html}");
    let state = query_param(&a.absolute(&at), "state").unwrap();
    (html, state)
}

fn credentials(csrf: &str) -> [(&str, &str); 3] {
    [
        ("login", "admin@example.com"),
        ("password", "password"),
        ("csrf_token", csrf),
    ]
}

#[tokio::test]
async fn browser_cookie_is_set_once_and_shaped_for_sessions() {
    let (server, a, _) = start().await;
    let first = a
        .get(&url(&server, &format!("/auth/mock?{}", auth_query(&[]))))
        .await;
    let cookie = first.headers()["set-cookie"].to_str().unwrap().to_owned();
    let (pair, attributes) = cookie.split_once("; ").unwrap();
    let (name, value) = pair.split_once('=').unwrap();
    assert_eq!(name, "oxidex_browser");
    assert_eq!(value.len(), 52, "≥ 32 random bytes");
    assert_eq!(
        attributes, "Path=/dex; HttpOnly; SameSite=Lax",
        "no Secure on http"
    );
    // Reused, not replaced: a second tab's login does not void the first's.
    let second = a
        .get(&url(&server, &format!("/auth/mock?{}", auth_query(&[]))))
        .await;
    assert!(second.headers().get("set-cookie").is_none());
    for tab in [location(&first), location(&second)] {
        let r = a.get(&tab).await;
        assert_eq!(r.status(), 303, "both tabs log in");
    }
    server.stop().await;
}

#[tokio::test]
async fn password_form_refuses_another_browser_for_get_and_post() {
    let (server, a, b) = start().await;
    let (html, state) = password_form(&server, &a).await;
    let action = form_action(&html);
    let csrf = input_value(&html, "csrf_token");

    let form_url = url(&server, &format!("/auth/local/login?state={state}"));
    assert_other_browser(b.get(&form_url).await).await;
    assert_other_browser(b.post_form(&action, &credentials(&csrf)).await).await;
    let stored = server
        .state
        .live()
        .provider
        .storage()
        .get_auth_request(&state)
        .unwrap();
    assert!(!stored.logged_in, "the refused POST changed nothing");

    let r = a.post_form(&action, &credentials(&csrf)).await;
    assert_eq!(r.status(), 303, "the browser that started it logs in");
    server.stop().await;
}

#[tokio::test]
async fn callback_refuses_another_browser() {
    let (server, a, b) = start().await;
    let callback = start_mock_login(&server, &a, &[]).await;
    assert!(callback.contains("/dex/callback?"), "{callback}");
    assert_other_browser(b.get(&callback).await).await;
    let r = a.get(&callback).await;
    assert_eq!(r.status(), 303);
    assert!(location(&r).contains("/approval?"), "{}", location(&r));
    server.stop().await;
}

#[tokio::test]
async fn approval_refuses_another_browser_for_get_and_post() {
    let (server, a, b) = start().await;
    let callback = start_mock_login(&server, &a, &[]).await;
    let approval = location(&a.get(&callback).await);
    let (status, html) = page(a.get(&approval).await).await;
    assert_eq!(status, 200, "{html}");
    let action = form_action(&html);
    let csrf = input_value(&html, "csrf_token");

    assert_other_browser(b.get(&approval).await).await;
    let approve = [("approval", "approve"), ("csrf_token", csrf.as_str())];
    assert_other_browser(b.post_form(&action, &approve).await).await;
    let reject = [("approval", "reject"), ("csrf_token", csrf.as_str())];
    assert_other_browser(b.post_form(&action, &reject).await).await;

    let r = a.post_form(&action, &approve).await;
    assert_eq!(r.status(), 303);
    let back = location(&r);
    assert!(back.starts_with(REDIRECT_URI), "{back}");
    assert!(query_param(&back, "code").is_some(), "{back}");
    server.stop().await;
}

#[tokio::test]
async fn an_auth_request_takes_one_login_only() {
    let (server, a, _) = start().await;
    // Upstream callback replayed: the second login is refused, the first stands.
    let callback = start_mock_login(&server, &a, &[]).await;
    let first = a.get(&callback).await;
    assert_eq!(first.status(), 303);
    let approval = location(&first);
    let (status, body) = page(a.get(&callback).await).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("already been completed"), "{body}");
    assert_eq!(a.get(&approval).await.status(), 200);

    // Password form posted again with its (pre-login) token.
    let (html, state) = password_form(&server, &a).await;
    let action = form_action(&html);
    let csrf = input_value(&html, "csrf_token");
    assert_eq!(
        a.post_form(&action, &credentials(&csrf)).await.status(),
        303
    );
    let logged_in = server
        .state
        .live()
        .provider
        .storage()
        .get_auth_request(&state)
        .unwrap();
    let (status, body) = page(a.post_form(&action, &credentials(&csrf)).await).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        server
            .state
            .live()
            .provider
            .storage()
            .get_auth_request(&state)
            .unwrap(),
        logged_in,
        "nothing changed"
    );
    server.stop().await;
}

#[tokio::test]
async fn approval_hmac_computed_before_login_is_void_after() {
    let (server, a, _) = start().await;
    let callback = start_mock_login(&server, &a, &[]).await;
    let id = query_param(&callback, "state").unwrap();
    let before = server
        .state
        .live()
        .provider
        .storage()
        .get_auth_request(&id)
        .unwrap();
    let early = oxidex::oidc::authorize::approval_hmac(&before);
    let approval = location(&a.get(&callback).await);
    assert_ne!(query_param(&approval, "hmac").unwrap(), early);
    let stale = url(&server, &format!("/approval?req={id}&hmac={early}"));
    let (status, body) = page(a.get(&stale).await).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(a.get(&approval).await.status(), 200);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Device flow
// ---------------------------------------------------------------------------

async fn start_device(server: &TestServer) -> (String, String) {
    let started: Value = server
        .http
        .post(url(server, "/device/code"))
        .form(&[("client_id", PUBLIC_ID), ("scope", "openid")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        started["device_code"].as_str().unwrap().to_owned(),
        started["user_code"].as_str().unwrap().to_owned(),
    )
}

async fn poll(server: &TestServer, device_code: &str) -> (u16, Value) {
    let r = server
        .http
        .post(url(server, "/token"))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
        ])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn device_link_attack_completes_nothing() {
    let (server, attacker, victim) = start().await;
    let (device_code, user_code) = start_device(&server).await;
    // The attacker may even enter the code in their own browser first.
    for attacker_entered in [false, true] {
        if attacker_entered {
            let r = enter_user_code(&attacker, "/dex/device", Some(&user_code)).await;
            assert_eq!(r.status(), 302);
        }
        // A link straight into the login with the device callback and the
        // attacker's user code as `state`: the victim logs in and approves.
        let link = url(
            &server,
            &format!(
                "/auth/local?{}",
                auth_query(&[
                    ("client_id", PUBLIC_ID),
                    ("redirect_uri", "/dex/device/callback"),
                    ("state", &user_code),
                ])
            ),
        );
        let back = browser_login_in(&victim, &link, "admin@example.com", "password").await;
        assert!(back.starts_with("/dex/device/callback?"), "{back}");
        assert_other_browser(victim.get(&back).await).await;
        let (status, body) = poll(&server, &device_code).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            ["authorization_pending", "slow_down"].contains(&body["error"].as_str().unwrap()),
            "{body}"
        );
    }
    server.stop().await;
}

/// The `/auth` URL the code entry sends the browser to, aimed at the password
/// connector (two connectors would show the picker).
fn local_hop(browser: &Browser, entered: &reqwest::Response) -> String {
    let hop = browser.absolute(&location(entered));
    assert!(hop.contains("/dex/auth?"), "{hop}");
    hop.replacen("/dex/auth?", "/dex/auth/local?", 1)
}

#[tokio::test]
async fn device_login_completes_only_in_the_browser_that_entered_the_code() {
    let (server, a, b) = start().await;
    let (device_code, user_code) = start_device(&server).await;
    let entered = enter_user_code(&a, "/dex/device", Some(&user_code)).await;
    assert_eq!(entered.status(), 302);
    let hop = local_hop(&a, &entered);
    assert_eq!(
        query_param(&hop, "code_challenge_method").as_deref(),
        Some("S256")
    );

    // The hop URL carried to another browser: logging in there completes nothing.
    let back = browser_login_in(&b, &hop, "admin@example.com", "password").await;
    assert_other_browser(b.get(&back).await).await;
    // Nor does bringing that code back to the browser that entered the code.
    assert_other_browser(a.get(&back).await).await;
    assert_eq!(poll(&server, &device_code).await.0, 400);

    // The ordinary way: enter, log in and come back in one browser.
    let entered = enter_user_code(&a, "/dex/device", Some(&user_code)).await;
    let hop = local_hop(&a, &entered);
    let back = browser_login_in(&a, &hop, "admin@example.com", "password").await;
    let (status, body) = page(a.get(&back).await).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Device connected"), "{body}");
    let (status, tokens) = poll(&server, &device_code).await;
    assert_eq!(status, 200, "{tokens}");
    assert!(tokens["id_token"].is_string());
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Redirect URIs and back links
// ---------------------------------------------------------------------------

#[tokio::test]
async fn loopback_redirect_uris_are_decided_on_the_host_a_browser_reads() {
    let (server, a, _) = start().await;
    for uri in [
        "http://evil.example\\@127.0.0.1/cb",
        "http://evil.example\\@127.0.0.1:8000/cb",
        "http:\\\\127.0.0.1/cb",
        "http://evil.example%5C@127.0.0.1/cb",
        "http://evil.example@127.0.0.1/cb",
        "http://@localhost/cb",
        "http://evil.example\t@127.0.0.1/cb",
        "http://127.0.0.1\n.evil.example/cb",
        "http://127.0.0.1.evil.example/cb",
        "http://localhost.evil.example/cb",
        "http://[::ffff:127.0.0.1]/cb",
        "http://0x7f.1/cb",
        "http://127.0.0.1./cb",
        "http:/127.0.0.1/cb",
        "HTTPS://localhost/cb",
        "http://127.0.0.1/cb#frag",
        "http://xn--ocalhost-0y3c/cb",
    ] {
        let query = auth_query(&[("client_id", PUBLIC_ID), ("redirect_uri", uri)]);
        let (status, body) = page(a.get(&url(&server, &format!("/auth/mock?{query}"))).await).await;
        assert_eq!(status, 400, "{uri:?}: {body}");
        assert!(
            body.contains("Unregistered redirect_uri."),
            "{uri:?}: {body}"
        );
    }
    for uri in [
        "http://127.0.0.1:8000/cb",
        "HTTP://localhost/cb",
        "http://[::1]:8000/cb",
        "http://127.9.9.9/cb?x=1",
    ] {
        let query = auth_query(&[("client_id", PUBLIC_ID), ("redirect_uri", uri)]);
        let callback = start_mock_login_query(&server, &a, &query).await;
        let approval = location(&a.get(&callback).await);
        let (_, html) = page(a.get(&approval).await).await;
        let csrf = input_value(&html, "csrf_token");
        let r = a
            .post_form(
                &form_action(&html),
                &[("approval", "approve"), ("csrf_token", csrf.as_str())],
            )
            .await;
        let base = uri.split('?').next().unwrap();
        assert!(location(&r).starts_with(base), "{uri}: {}", location(&r));
    }
    server.stop().await;
}

async fn start_mock_login_query(server: &TestServer, a: &Browser, query: &str) -> String {
    let r = a.get(&url(server, &format!("/auth/mock?{query}"))).await;
    assert_eq!(r.status(), 302, "{query}");
    location(&r)
}

#[tokio::test]
async fn back_links_stay_under_the_issuer_path() {
    let (server, a, _) = start().await;
    let (_, state) = password_form(&server, &a).await;
    for back in [
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r/evil.example",
        "\t//evil.example",
        "/\\evil.example",
        "//evil.example",
        "/evil.example",
        "/dex//evil.example",
        "https://evil.example/",
    ] {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("state", &state)
            .append_pair("back", back)
            .finish();
        let (status, body) = page(
            a.get(&url(&server, &format!("/auth/local/login?{query}")))
                .await,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains("evil.example"), "{back:?}: {body}");
    }
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("state", &state)
        .append_pair("back", "/dex/auth?client_id=x")
        .finish();
    let (_, body) = page(
        a.get(&url(&server, &format!("/auth/local/login?{query}")))
            .await,
    )
    .await;
    assert!(body.contains("Choose another login method"), "{body}");
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Form fields come from the body only
// ---------------------------------------------------------------------------

/// The approval decision, the user code and their form tokens are read from the
/// POSTed form, never from the query: a link that carries them in its URL (or a
/// proxy log that recorded one) is not a submitted form.
#[tokio::test]
async fn form_decisions_and_tokens_in_the_query_are_not_a_submitted_form() {
    let (server, a, _) = start().await;
    let callback = start_mock_login(&server, &a, &[]).await;
    let approval = location(&a.get(&callback).await);
    let (status, html) = page(a.get(&approval).await).await;
    assert_eq!(status, 200, "{html}");
    let action = form_action(&html);
    let csrf = input_value(&html, "csrf_token");

    let in_query = format!("{action}&approval=approve&csrf_token={csrf}");
    let (status, body) = page(a.post_form(&in_query, &[]).await).await;
    assert_eq!(status, 403, "approval taken from the query: {body}");
    // The decision alone in the query, the token in the body: still no approval.
    let r = a
        .post_form(
            &format!("{action}&approval=approve"),
            &[("csrf_token", csrf.as_str())],
        )
        .await;
    let back = location(&r);
    assert!(
        query_param(&back, "code").is_none() && back.contains("access_denied"),
        "an approval in the query was honoured: {back}"
    );

    let (_, user_code) = start_device(&server).await;
    let form = a.get("/dex/device").await;
    let html = form.text().await.unwrap();
    let csrf = input_value(&html, "csrf_token");
    let verify = a.absolute(&form_action(&html));
    let in_query = format!("{verify}?user_code={user_code}&csrf_token={csrf}");
    let (status, body) = page(a.post_form(&in_query, &[]).await).await;
    assert_eq!(status, 403, "user code form taken from the query: {body}");
    server.stop().await;
}
