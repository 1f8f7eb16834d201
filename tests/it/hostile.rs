//! Hostile and malformed requests over real HTTP. Every test asserts the status
//! and the protocol's error (JSON `error`, the gist of an error page, or the
//! `error` and echoed `state` of a redirect), that nothing answers 5xx, and that
//! the server still answers `/healthz` afterwards.
//!
//! The server runs on a [`ManualClock`], so expiry is tested by moving time.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, LOCATION, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::browser::{Browser, Followed, form_action, input_value, query_param};
use crate::login::{CLIENT_ID, CLIENT_SECRET, PASSWORD_HASH, REDIRECT_URI};
use crate::support::{ManualClock, TestServer, settings_from};

const STATE: &str = "st-4711";
const OTHER_ID: &str = "other-app";
const OTHER_SECRET: &str = "other-app-secret";
const OTHER_REDIRECT: &str = "http://127.0.0.1:5556/callback";
const PEER_ID: &str = "peer-app";
const PUBLIC_ID: &str = "cli";
const PUBLIC_REDIRECT: &str = "http://localhost:8000/cb";
const PKCE_ID: &str = "pkce-app";
const PKCE_REDIRECT: &str = "http://127.0.0.1:5558/callback";
const PLUS_ID: &str = "plus-app";
/// A secret with a literal `+`: Dex URL-unescapes Basic credentials, so the raw
/// `+` arrives as a space.
const PLUS_SECRET: &str = "abc+def";
const PLUS_REDIRECT: &str = "http://127.0.0.1:5559/callback";
const FORM: &str = "application/x-www-form-urlencoded";
const LOCAL_ONLY_ID: &str = "local-only";

fn hostile_config(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "storage": {"type": "memory"},
        "web": {"http": "127.0.0.1:0"},
        "oauth2": {"skipApprovalScreen": true},
        "staticClients": [
            {"id": CLIENT_ID, "name": "Example App", "secret": CLIENT_SECRET,
             "redirectURIs": [REDIRECT_URI]},
            {"id": OTHER_ID, "name": "Other App", "secret": OTHER_SECRET,
             "redirectURIs": [OTHER_REDIRECT]},
            // Trusts only other-app, not example-app.
            {"id": PEER_ID, "name": "Peer", "secret": "peer-secret",
             "redirectURIs": ["http://127.0.0.1:5557/callback"], "trustedPeers": [OTHER_ID]},
            {"id": PUBLIC_ID, "name": "CLI", "public": true},
            {"id": PKCE_ID, "name": "PKCE App", "secret": "pkce-secret",
             "redirectURIs": [PKCE_REDIRECT], "requirePKCE": true},
            {"id": PLUS_ID, "name": "Plus", "secret": PLUS_SECRET,
             "redirectURIs": [PLUS_REDIRECT]},
            {"id": LOCAL_ONLY_ID, "name": "Local only", "secret": "local-only-secret",
             "redirectURIs": [REDIRECT_URI], "allowedConnectors": ["local"]}
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

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

struct H {
    server: TestServer,
    clock: ManualClock,
    browser: Browser,
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Resp {
    async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap();
        assert!(
            !status.is_server_error(),
            "no input may cause a server error: {status}\n{body}"
        );
        Self {
            status,
            headers,
            body,
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    fn location(&self) -> Option<String> {
        self.headers
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

async fn start() -> H {
    start_with(|_| {}).await
}

async fn start_with(patch: impl FnOnce(&mut Value)) -> H {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}/dex", listener.local_addr().unwrap());
    let mut config = hostile_config(&issuer);
    patch(&mut config);
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_from(&config, dir.path());
    let clock = ManualClock::at(SystemTime::now());
    let server = TestServer::start_on(listener, settings, clock.clock(), Some(dir)).await;
    let browser = Browser::new(&server.base());
    H {
        server,
        clock,
        browser,
    }
}

/// An `/auth` request: sensible defaults, then overrides and removals.
#[derive(Clone)]
struct Auth(Vec<(String, String)>);

impl Auth {
    fn new() -> Self {
        Self(
            [
                ("client_id", CLIENT_ID),
                ("redirect_uri", REDIRECT_URI),
                ("response_type", "code"),
                ("scope", "openid"),
                ("state", STATE),
            ]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        )
    }
    fn client(self, id: &str, redirect_uri: &str) -> Self {
        self.set("client_id", id).set("redirect_uri", redirect_uri)
    }
    fn set(mut self, key: &str, value: &str) -> Self {
        self.0.retain(|(k, _)| k != key);
        self.0.push((key.to_owned(), value.to_owned()));
        self
    }
    fn drop(mut self, key: &str) -> Self {
        self.0.retain(|(k, _)| k != key);
        self
    }
    fn query(&self) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.0 {
            s.append_pair(k, v);
        }
        s.finish()
    }
}

enum ClientAuth<'a> {
    Basic(&'a str, &'a str),
    /// The raw `Authorization` header value.
    Header(String),
    /// `client_id` / `client_secret` in the form (or nothing).
    Post,
}

impl H {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.issuer())
    }

    async fn get(&self, path: &str) -> Resp {
        Resp::read(self.server.http.get(self.url(path)).send().await.unwrap()).await
    }

    async fn auth(&self, connector: &str, request: &Auth) -> Resp {
        self.get(&format!("/auth/{connector}?{}", request.query()))
            .await
    }

    /// Follows `/auth/mock` through `/callback` to the client; returns the URL
    /// the browser is sent to.
    async fn login(&self, request: &Auth) -> String {
        let url = self.url(&format!("/auth/mock?{}", request.query()));
        self.browser.follow(&url).await.left()
    }

    /// A fresh authorization code for `request`.
    async fn code(&self, request: &Auth) -> String {
        let back = self.login(request).await;
        assert_eq!(query_param(&back, "state").unwrap(), STATE, "{back}");
        query_param(&back, "code").unwrap_or_else(|| panic!("no code in {back}"))
    }

    async fn token(&self, auth: ClientAuth<'_>, form: &[(&str, &str)]) -> Resp {
        let mut request = self.server.http.post(self.url("/token"));
        request = match auth {
            ClientAuth::Basic(id, secret) => request.basic_auth(id, Some(secret)),
            ClientAuth::Header(value) => request.header(AUTHORIZATION, value),
            ClientAuth::Post => request,
        };
        Resp::read(request.form(form).send().await.unwrap()).await
    }

    async fn exchange(&self, code: &str) -> Resp {
        self.token(
            ClientAuth::Basic(CLIENT_ID, CLIENT_SECRET),
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT_URI),
            ],
        )
        .await
    }

    /// Tokens (with a refresh token) for example-app.
    async fn tokens(&self) -> Value {
        let code = self
            .code(&Auth::new().set("scope", "openid email offline_access"))
            .await;
        let response = self.exchange(&code).await;
        assert_eq!(response.status, 200, "{}", response.body);
        response.json()
    }

    async fn refresh(&self, id: &str, secret: &str, token: &str, scope: Option<&str>) -> Resp {
        let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", token)];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        self.token(ClientAuth::Basic(id, secret), &form).await
    }

    async fn userinfo(&self, authorization: Option<&str>) -> Resp {
        let mut request = self.server.http.get(self.url("/userinfo"));
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        Resp::read(request.send().await.unwrap()).await
    }

    /// The approval page of a forced-approval login: (page URL, page HTML).
    async fn approval_page(&self) -> (String, String) {
        let url = self.url(&format!(
            "/auth/mock?{}",
            Auth::new().set("approval_prompt", "force").query()
        ));
        let (at, status, body) = self.browser.follow(&url).await.page();
        assert_eq!(status, 200, "{body}");
        assert!(at.contains("/approval?"), "{at}");
        (at, body)
    }

    /// The password form of a login with the password DB: (form URL, HTML).
    async fn password_form(&self) -> (String, String) {
        let url = self.url(&format!("/auth/local?{}", Auth::new().query()));
        let (at, status, body) = self.browser.follow(&url).await.page();
        assert_eq!(status, 200, "{body}");
        (at, body)
    }

    async fn post_page(&self, url: &str, form: &[(&str, &str)]) -> Resp {
        Resp::read(self.browser.post_form(url, form).await).await
    }

    /// The server survived: `/healthz` still answers. Then stop it.
    async fn done(self) {
        let health = self.get("/healthz").await;
        assert_eq!(health.status, 200, "{}", health.body);
        self.server.stop().await;
    }
}

fn assert_oauth(response: &Resp, status: u16, error: &str) -> Value {
    let body = response.json();
    assert_eq!(
        (response.status.as_u16(), body["error"].as_str()),
        (status, Some(error)),
        "{body}"
    );
    body
}

fn assert_description(body: &Value, gist: &str) {
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(
        description.contains(gist),
        "description {description:?} lacks {gist:?}"
    );
}

/// An HTML error page (no redirect) with `status` whose text contains `gist`.
fn assert_page(response: &Resp, status: u16, gist: &str) {
    assert_eq!(response.status.as_u16(), status, "{}", response.body);
    assert!(
        response.location().is_none(),
        "a page, not a redirect: {:?}",
        response.location()
    );
    let content_type = response.headers[CONTENT_TYPE].to_str().unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(
        response.body.contains(gist),
        "page lacks {gist:?}:\n{}",
        response.body
    );
}

/// A 303 to `redirect_uri` carrying `error` and the request's `state`; returns
/// the description.
fn assert_redirected(response: &Resp, redirect_uri: &str, error: &str) -> String {
    assert_eq!(response.status, 303, "{}", response.body);
    let location = response.location().unwrap();
    assert!(location.starts_with(redirect_uri), "{location}");
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some(error),
        "{location}"
    );
    assert_eq!(query_param(&location, "state").as_deref(), Some(STATE));
    assert!(query_param(&location, "code").is_none());
    query_param(&location, "error_description").unwrap_or_default()
}

fn s256(verifier: &str) -> String {
    oxidex::crypto::s256_challenge(verifier)
}

const VERIFIER: &str = "a-verifier-that-is-long-enough-0123456789-abcdefghijklmnop";

// ---------------------------------------------------------------------------
// /auth and /auth/{connector}: displayed errors (no redirect)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn auth_redirect_uri_mismatch_is_a_page_not_a_redirect() {
    let h = start().await;
    let r = h
        .auth(
            "mock",
            &Auth::new().set("redirect_uri", "http://127.0.0.1:5555/evil"),
        )
        .await;
    assert_page(&r, 400, "Unregistered redirect_uri.");
    h.done().await;
}

#[tokio::test]
async fn auth_redirect_uri_prefix_of_registered_is_refused() {
    let h = start().await;
    let r = h
        .auth(
            "mock",
            &Auth::new().set("redirect_uri", "http://127.0.0.1:5555/callback/x"),
        )
        .await;
    assert_page(&r, 400, "Unregistered redirect_uri.");
    h.done().await;
}

#[tokio::test]
async fn auth_unknown_client_is_404_page() {
    let h = start().await;
    let r = h
        .auth("mock", &Auth::new().set("client_id", "no-such-client"))
        .await;
    assert_page(&r, 404, "Invalid client_id.");
    h.done().await;
}

#[tokio::test]
async fn auth_missing_client_id_is_404_page() {
    let h = start().await;
    let r = h.auth("mock", &Auth::new().drop("client_id")).await;
    assert_page(&r, 404, "Invalid client_id.");
    h.done().await;
}

#[tokio::test]
async fn auth_picker_with_unknown_connector_id_is_400_page() {
    let h = start().await;
    let r = h
        .get(&format!(
            "/auth?{}",
            Auth::new().set("connector_id", "nope").query()
        ))
        .await;
    assert_page(&r, 400, "Connector ID does not match a valid Connector");
    h.done().await;
}

#[tokio::test]
async fn auth_unknown_connector_in_path_is_400_page() {
    let h = start().await;
    let r = h.auth("nope", &Auth::new()).await;
    assert_page(&r, 400, "Requested resource does not exist.");
    h.done().await;
}

#[tokio::test]
async fn auth_connector_path_not_utf8_is_400_page() {
    let h = start().await;
    let r = h.get(&format!("/auth/%FF?{}", Auth::new().query())).await;
    assert_page(&r, 400, "Requested resource does not exist.");
    h.done().await;
}

#[tokio::test]
async fn auth_oversized_state_is_refused_without_echo() {
    let h = start().await;
    let huge = "s".repeat(oxidex::oidc::MAX_STATE_LEN + 1);
    let r = h.auth("mock", &Auth::new().set("state", &huge)).await;
    assert_page(&r, 400, "too long");
    assert!(!r.body.contains(&huge), "the state is not echoed");
    h.done().await;
}

#[tokio::test]
async fn auth_oversized_redirect_uri_is_400_page() {
    let h = start().await;
    let long = format!("{REDIRECT_URI}?{}", "x".repeat(oxidex::oidc::MAX_PARAM_LEN));
    let r = h
        .auth("mock", &Auth::new().set("redirect_uri", &long))
        .await;
    assert_page(&r, 400, "too long");
    h.done().await;
}

#[tokio::test]
async fn auth_invalid_percent_encoding_is_400_page() {
    let h = start().await;
    let r = h
        .get(&format!("/auth/mock?{}&nonce=%zz", Auth::new().query()))
        .await;
    assert_page(&r, 400, "could not be read");
    h.done().await;
}

#[tokio::test]
async fn auth_non_utf8_parameter_is_400_page() {
    let h = start().await;
    let query = Auth::new().drop("state").query();
    let r = h.get(&format!("/auth/mock?{query}&state=%FF%FE")).await;
    assert_page(&r, 400, "could not be read");
    h.done().await;
}

#[tokio::test]
async fn auth_public_client_loopback_uri_with_control_or_non_ascii_is_refused() {
    // Regression: such URIs used to pass the loopback rule and then fail as a
    // `Location` header (500).
    let h = start().await;
    for uri in [
        "http://localhost:8000/a\nb",
        "http://localhost:8000/caf\u{e9}",
    ] {
        let r = h
            .auth(
                "mock",
                &Auth::new()
                    .client(PUBLIC_ID, uri)
                    .set("scope", "openid bogus"),
            )
            .await;
        assert_page(&r, 400, "Unregistered redirect_uri.");
    }
    h.done().await;
}

#[tokio::test]
async fn auth_post_to_connector_is_400_page() {
    let h = start().await;
    let request = Auth::new();
    let pairs: Vec<(&str, &str)> = request
        .0
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = h.post_page(&h.url("/auth/mock"), &pairs).await;
    assert_page(&r, 400, "Unsupported request method.");
    h.done().await;
}

#[tokio::test]
async fn oversized_uri_is_refused_with_4xx() {
    // Too long for an HTTP client library to build: written by hand.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = start().await;
    let request = format!(
        "GET /dex/auth/mock?{}&pad={} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        Auth::new().query(),
        "p".repeat(70_000),
        h.server.addr
    );
    let mut stream = tokio::net::TcpStream::connect(h.server.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0; 12];
    stream.read_exact(&mut head).await.unwrap();
    let status_line = String::from_utf8_lossy(&head).into_owned();
    let status: u16 = status_line[9..12].parse().unwrap();
    assert!((400..500).contains(&status), "{status_line}");
    h.done().await;
}

// ---------------------------------------------------------------------------
// /auth/{connector}: redirected errors (error + state back to the client)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn auth_unknown_connector_id_param_is_redirected_invalid_request() {
    let h = start().await;
    let r = h
        .auth("mock", &Auth::new().set("connector_id", "nope"))
        .await;
    let d = assert_redirected(&r, REDIRECT_URI, "invalid_request");
    assert_eq!(d, "Invalid ConnectorID");
    h.done().await;
}

#[tokio::test]
async fn auth_request_object_is_request_not_supported() {
    let h = start().await;
    let r = h
        .auth(
            "mock",
            &Auth::new().set("request", "eyJhbGciOiJub25lIn0.e30."),
        )
        .await;
    let d = assert_redirected(&r, REDIRECT_URI, "request_not_supported");
    assert!(d.contains("request parameter"), "{d}");
    h.done().await;
}

#[tokio::test]
async fn auth_unknown_scope_is_invalid_scope() {
    let h = start().await;
    let r = h
        .auth("mock", &Auth::new().set("scope", "openid admin"))
        .await;
    let d = assert_redirected(&r, REDIRECT_URI, "invalid_scope");
    assert!(
        d.contains("Unrecognized scope(s)") && d.contains("admin"),
        "{d}"
    );
    h.done().await;
}

#[tokio::test]
async fn auth_missing_openid_is_invalid_scope() {
    let h = start().await;
    let r = h
        .auth("mock", &Auth::new().set("scope", "email profile"))
        .await;
    let d = assert_redirected(&r, REDIRECT_URI, "invalid_scope");
    assert!(d.contains("Missing required scope(s)"), "{d}");
    h.done().await;
}

#[tokio::test]
async fn auth_untrusted_cross_client_audience_is_invalid_scope() {
    let h = start().await;
    let scope = format!("openid audience:server:client_id:{PEER_ID}");
    let r = h.auth("mock", &Auth::new().set("scope", &scope)).await;
    let d = assert_redirected(&r, REDIRECT_URI, "invalid_scope");
    assert!(d.contains(PEER_ID), "{d}");
    h.done().await;
}

#[tokio::test]
async fn auth_cross_client_audience_of_unknown_peer_is_invalid_scope() {
    let h = start().await;
    let r = h
        .auth(
            "mock",
            &Auth::new().set("scope", "openid audience:server:client_id:ghost"),
        )
        .await;
    assert_redirected(&r, REDIRECT_URI, "invalid_scope");
    h.done().await;
}

#[tokio::test]
async fn auth_response_type_not_enabled_is_unsupported_response_type() {
    let h = start().await;
    let r = h
        .auth(
            "mock",
            &Auth::new()
                .set("response_type", "id_token")
                .set("nonce", "n"),
        )
        .await;
    let d = assert_redirected(&r, REDIRECT_URI, "unsupported_response_type");
    assert!(d.contains("id_token"), "{d}");
    h.done().await;
}

#[tokio::test]
async fn auth_unknown_response_type_is_invalid_request() {
    let h = start().await;
    let r = h
        .auth("mock", &Auth::new().set("response_type", "code bogus"))
        .await;
    let d = assert_redirected(&r, REDIRECT_URI, "invalid_request");
    assert!(d.contains("Invalid response type"), "{d}");
    h.done().await;
}

#[tokio::test]
async fn auth_missing_response_type_is_invalid_request() {
    let h = start().await;
    let r = h.auth("mock", &Auth::new().drop("response_type")).await;
    let d = assert_redirected(&r, REDIRECT_URI, "invalid_request");
    assert!(d.contains("No response_type"), "{d}");
    h.done().await;
}

fn implicit(config: &mut Value) {
    config["oauth2"]["responseTypes"] = json!(["code", "id_token", "token"]);
}

#[tokio::test]
async fn auth_token_alone_is_invalid_request() {
    let h = start_with(implicit).await;
    let r = h
        .auth(
            "mock",
            &Auth::new().set("response_type", "token").set("nonce", "n"),
        )
        .await;
    let d = assert_redirected(&r, REDIRECT_URI, "invalid_request");
    assert!(d.contains("'token'"), "{d}");
    h.done().await;
}

#[tokio::test]
async fn auth_implicit_without_nonce_is_invalid_request() {
    let h = start_with(implicit).await;
    let r = h
        .auth("mock", &Auth::new().set("response_type", "id_token token"))
        .await;
    let d = assert_redirected(&r, REDIRECT_URI, "invalid_request");
    assert!(d.contains("nonce"), "{d}");
    h.done().await;
}

#[tokio::test]
async fn auth_unsupported_pkce_method_is_invalid_request() {
    let h = start().await;
    let r = h
        .auth(
            "mock",
            &Auth::new()
                .set("code_challenge", &s256(VERIFIER))
                .set("code_challenge_method", "S512"),
        )
        .await;
    let d = assert_redirected(&r, REDIRECT_URI, "invalid_request");
    assert!(d.contains("Unsupported PKCE challenge method"), "{d}");
    h.done().await;
}

#[tokio::test]
async fn auth_require_pkce_client_without_challenge_is_invalid_request() {
    let h = start().await;
    let r = h
        .auth("mock", &Auth::new().client(PKCE_ID, PKCE_REDIRECT))
        .await;
    let d = assert_redirected(&r, PKCE_REDIRECT, "invalid_request");
    assert!(d.contains("PKCE is required"), "{d}");
    // With a challenge the same client gets through to the connector.
    let ok = h
        .auth(
            "mock",
            &Auth::new()
                .client(PKCE_ID, PKCE_REDIRECT)
                .set("code_challenge", &s256(VERIFIER))
                .set("code_challenge_method", "S256"),
        )
        .await;
    assert_eq!(ok.status, 302, "{}", ok.body);
    h.done().await;
}

#[tokio::test]
async fn auth_oversized_nonce_and_scope_are_redirected_invalid_request() {
    let h = start().await;
    let long = "n".repeat(oxidex::oidc::MAX_PARAM_LEN + 1);
    for name in ["nonce", "scope"] {
        let r = h.auth("mock", &Auth::new().set(name, &long)).await;
        let d = assert_redirected(&r, REDIRECT_URI, "invalid_request");
        assert!(d.contains(name) && d.contains("too long"), "{d}");
    }
    h.done().await;
}

// ---------------------------------------------------------------------------
// /callback and the password form
// ---------------------------------------------------------------------------

#[tokio::test]
async fn callback_without_state_is_400_page() {
    let h = start().await;
    let r = h.get("/callback?code=abc").await;
    assert_page(&r, 400, "User session error.");
    h.done().await;
}

#[tokio::test]
async fn callback_with_unknown_state_is_400_page() {
    let h = start().await;
    let r = h
        .get("/callback?state=aaaaaaaaaaaaaaaaaaaaaaaaa&code=x")
        .await;
    assert_page(&r, 400, "Requested resource does not exist.");
    h.done().await;
}

#[tokio::test]
async fn callback_for_a_password_login_or_wrong_connector_is_400_page() {
    let h = start().await;
    let (form_url, _) = h.password_form().await;
    let state = query_param(&h.browser.absolute(&form_url), "state").unwrap();
    let r = h.get(&format!("/callback?state={state}")).await;
    assert_page(&r, 400, "Requested resource does not exist.");
    let r = h.get(&format!("/callback/mock?state={state}")).await;
    assert_page(&r, 400, "Requested resource does not exist.");
    let r = h.get(&format!("/callback/%FF?state={state}")).await;
    assert_page(&r, 400, "Requested resource does not exist.");
    h.done().await;
}

#[tokio::test]
async fn callback_post_is_400_page() {
    let h = start().await;
    let r = h
        .post_page(&h.url("/callback"), &[("state", "x"), ("code", "y")])
        .await;
    assert_page(&r, 400, "not supported");
    h.done().await;
}

#[tokio::test]
async fn password_form_post_without_csrf_is_403() {
    let h = start().await;
    let (_, form) = h.password_form().await;
    let r = h
        .post_page(
            &form_action(&form),
            &[("login", "admin@example.com"), ("password", "password")],
        )
        .await;
    assert_page(&r, 403, "form token");
    h.done().await;
}

#[tokio::test]
async fn password_form_post_with_wrong_csrf_is_403() {
    let h = start().await;
    let (_, form) = h.password_form().await;
    // A token from another login in progress does not fit this one.
    let (_, other_form) = h.password_form().await;
    let foreign = input_value(&other_form, "csrf_token");
    assert_ne!(foreign, input_value(&form, "csrf_token"));
    let r = h
        .post_page(
            &form_action(&form),
            &[
                ("login", "admin@example.com"),
                ("password", "password"),
                ("csrf_token", &foreign),
            ],
        )
        .await;
    assert_page(&r, 403, "form token");
    h.done().await;
}

#[tokio::test]
async fn password_form_wrong_password_rerenders_the_form_with_401() {
    let h = start().await;
    let (_, form) = h.password_form().await;
    let csrf = input_value(&form, "csrf_token");
    let r = h
        .post_page(
            &form_action(&form),
            &[
                ("login", "admin@example.com"),
                ("password", "wrong"),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(r.location().is_none());
    assert!(r.body.contains("and password."), "{}", r.body);
    assert!(r.body.contains("name=\"password\""), "form shown again");
    assert_eq!(input_value(&r.body, "login"), "admin@example.com");
    h.done().await;
}

#[tokio::test]
async fn password_form_with_unknown_state_is_400_page() {
    let h = start().await;
    let r = h.get("/auth/local/login?state=nope&back=").await;
    assert_page(&r, 400, "User session error.");
    h.done().await;
}

// ---------------------------------------------------------------------------
// /approval
// ---------------------------------------------------------------------------

#[tokio::test]
async fn approval_without_hmac_is_401_page() {
    let h = start().await;
    let (at, _) = h.approval_page().await;
    let req = query_param(&at, "req").unwrap();
    let r = h.get(&format!("/approval?req={req}")).await;
    assert_page(&r, 401, "Unauthorized request");
    h.done().await;
}

#[tokio::test]
async fn approval_with_bad_hmac_is_401_page() {
    let h = start().await;
    let (at, _) = h.approval_page().await;
    let req = query_param(&at, "req").unwrap();
    for hmac in ["AAAA", "%%%", "not base64!"] {
        let r = h
            .get(&format!(
                "/approval?{}",
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("req", &req)
                    .append_pair("hmac", hmac)
                    .finish()
            ))
            .await;
        assert_page(&r, 401, "Unauthorized request");
    }
    h.done().await;
}

#[tokio::test]
async fn approval_of_a_login_in_progress_with_forged_hmac_is_401_not_500() {
    // Regression: the login state was checked before the MAC, so the `state` of
    // a password form's URL was enough to make the server answer 500.
    let h = start().await;
    let (form_url, _) = h.password_form().await;
    let state = query_param(&h.browser.absolute(&form_url), "state").unwrap();
    let r = h.get(&format!("/approval?req={state}&hmac=AAAA")).await;
    assert_page(&r, 401, "Unauthorized request");
    h.done().await;
}

#[tokio::test]
async fn approval_with_unknown_request_is_400_page() {
    let h = start().await;
    let r = h.get("/approval?req=nope&hmac=AAAA").await;
    assert_page(&r, 400, "User session error.");
    let r = h.get("/approval?hmac=AAAA").await;
    assert_page(&r, 400, "User session error.");
    h.done().await;
}

#[tokio::test]
async fn approval_cancel_redirects_access_denied_with_state() {
    // oxidex differs from Dex (a 500 page "Approval rejected."): RFC 6749's
    // access_denied goes back to the client.
    let h = start().await;
    let (_, page) = h.approval_page().await;
    let csrf = input_value(&page, "csrf_token");
    let r = h
        .post_page(
            &form_action(&page),
            &[("approval", "rejected"), ("csrf_token", &csrf)],
        )
        .await;
    assert_redirected(&r, REDIRECT_URI, "access_denied");
    // The login is over: approving afterwards finds nothing.
    let again = h
        .post_page(
            &form_action(&page),
            &[("approval", "approve"), ("csrf_token", &csrf)],
        )
        .await;
    assert_page(&again, 400, "User session error.");
    h.done().await;
}

#[tokio::test]
async fn approval_post_without_csrf_is_403() {
    let h = start().await;
    let (_, page) = h.approval_page().await;
    let r = h
        .post_page(&form_action(&page), &[("approval", "approve")])
        .await;
    assert_page(&r, 403, "form token");
    h.done().await;
}

#[tokio::test]
async fn approval_double_submit_second_is_user_session_error() {
    let h = start().await;
    let (_, page) = h.approval_page().await;
    let csrf = input_value(&page, "csrf_token");
    let form = [("approval", "approve"), ("csrf_token", csrf.as_str())];
    let first = h.post_page(&form_action(&page), &form).await;
    assert_eq!(first.status, 303);
    let location = first.location().unwrap();
    assert!(query_param(&location, "code").is_some(), "{location}");
    let second = h.post_page(&form_action(&page), &form).await;
    assert_page(&second, 400, "User session error.");
    h.done().await;
}

// ---------------------------------------------------------------------------
// /token: request shape and client authentication
// ---------------------------------------------------------------------------

#[tokio::test]
async fn token_get_is_invalid_request() {
    let h = start().await;
    let r = Resp::read(
        h.server
            .http
            .get(h.url("/token?grant_type=authorization_code&code=x"))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let body = assert_oauth(&r, 400, "invalid_request");
    assert_description(&body, "method not allowed");
    h.done().await;
}

#[tokio::test]
async fn token_missing_grant_type_is_unsupported_grant_type() {
    let h = start().await;
    let r = h
        .token(
            ClientAuth::Basic(CLIENT_ID, CLIENT_SECRET),
            &[("code", "x")],
        )
        .await;
    let body = assert_oauth(&r, 400, "unsupported_grant_type");
    assert!(body.get("error_description").is_none(), "{body}");
    h.done().await;
}

#[tokio::test]
async fn token_unknown_grant_type_is_unsupported_grant_type() {
    let h = start().await;
    for grant in [
        "client_credentials",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "AUTHORIZATION_CODE",
    ] {
        let r = h
            .token(
                ClientAuth::Basic(CLIENT_ID, CLIENT_SECRET),
                &[("grant_type", grant)],
            )
            .await;
        assert_oauth(&r, 400, "unsupported_grant_type");
    }
    h.done().await;
}

#[tokio::test]
async fn token_password_grant_when_not_enabled_is_unsupported_grant_type() {
    let h = start().await;
    let r = h
        .token(
            ClientAuth::Basic(CLIENT_ID, CLIENT_SECRET),
            &[
                ("grant_type", "password"),
                ("username", "admin@example.com"),
                ("password", "password"),
                ("scope", "openid"),
            ],
        )
        .await;
    assert_oauth(&r, 400, "unsupported_grant_type");
    h.done().await;
}

#[tokio::test]
async fn token_password_grant_bad_credentials_and_missing_openid() {
    let h = start_with(|c| c["oauth2"]["passwordConnector"] = json!("local")).await;
    let r = h
        .token(
            ClientAuth::Basic(CLIENT_ID, CLIENT_SECRET),
            &[
                ("grant_type", "password"),
                ("username", "admin@example.com"),
                ("password", "wrong"),
                ("scope", "openid"),
            ],
        )
        .await;
    assert_oauth(&r, 401, "access_denied");
    let r = h
        .token(
            ClientAuth::Basic(CLIENT_ID, CLIENT_SECRET),
            &[
                ("grant_type", "password"),
                ("username", "admin@example.com"),
                ("password", "password"),
                ("scope", "email"),
            ],
        )
        .await;
    let body = assert_oauth(&r, 400, "invalid_request");
    assert_description(&body, "openid");
    h.done().await;
}

#[tokio::test]
async fn token_wrong_client_secret_is_401_without_www_authenticate() {
    let h = start().await;
    let r = h
        .token(
            ClientAuth::Basic(CLIENT_ID, "wrong"),
            &[("grant_type", "authorization_code"), ("code", "x")],
        )
        .await;
    let body = assert_oauth(&r, 401, "invalid_client");
    assert_description(&body, "Invalid client credentials.");
    assert!(r.headers.get(WWW_AUTHENTICATE).is_none());
    h.done().await;
}

#[tokio::test]
async fn token_unknown_client_is_401_invalid_client() {
    let h = start().await;
    let r = h
        .token(
            ClientAuth::Basic("ghost", "whatever"),
            &[("grant_type", "authorization_code"), ("code", "x")],
        )
        .await;
    assert_oauth(&r, 401, "invalid_client");
    // No credentials at all is an unknown (empty) client too.
    let r = h
        .token(
            ClientAuth::Post,
            &[("grant_type", "authorization_code"), ("code", "x")],
        )
        .await;
    assert_oauth(&r, 401, "invalid_client");
    h.done().await;
}

#[tokio::test]
async fn token_basic_with_bad_percent_encoding_is_invalid_request() {
    let h = start().await;
    let form = [("grant_type", "authorization_code"), ("code", "x")];
    let header = |raw: &str| ClientAuth::Header(format!("Basic {}", STANDARD.encode(raw)));
    let r = h
        .token(header(&format!("%zz:{CLIENT_SECRET}")), &form)
        .await;
    let body = assert_oauth(&r, 400, "invalid_request");
    assert_description(&body, "client_id improperly encoded");
    let r = h.token(header(&format!("{CLIENT_ID}:%zz")), &form).await;
    let body = assert_oauth(&r, 400, "invalid_request");
    assert_description(&body, "client_secret improperly encoded");
    h.done().await;
}

#[tokio::test]
async fn token_basic_plus_decodes_to_space_like_dex() {
    let h = start().await;
    let form = [("grant_type", "authorization_code")];
    let header = |raw: &str| ClientAuth::Header(format!("Basic {}", STANDARD.encode(raw)));
    // The raw secret "abc+def" arrives as "abc def": refused.
    let r = h
        .token(header(&format!("{PLUS_ID}:{PLUS_SECRET}")), &form)
        .await;
    assert_oauth(&r, 401, "invalid_client");
    // Escaped as RFC 6749 §2.3.1 asks, it authenticates (and then the missing
    // code is the problem).
    let r = h
        .token(header(&format!("{PLUS_ID}:abc%2Bdef")), &form)
        .await;
    let body = assert_oauth(&r, 400, "invalid_request");
    assert_description(&body, "Required param: code.");
    h.done().await;
}

#[tokio::test]
async fn token_malformed_basic_header_falls_back_to_form_credentials() {
    let h = start().await;
    let form = [("grant_type", "authorization_code")];
    // Not base64 / no colon: ignored as Go's BasicAuth does, so no client.
    let no_colon = format!("Basic {}", STANDARD.encode("nocolon"));
    for raw in ["Basic !!!", "Basic ", "Bearer abc", no_colon.as_str()] {
        let r = h.token(ClientAuth::Header(raw.to_owned()), &form).await;
        assert_oauth(&r, 401, "invalid_client");
    }
    h.done().await;
}

#[tokio::test]
async fn token_basic_takes_precedence_over_form_credentials() {
    let h = start().await;
    let r = h
        .token(
            ClientAuth::Basic(CLIENT_ID, "wrong"),
            &[
                ("grant_type", "authorization_code"),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ],
        )
        .await;
    assert_oauth(&r, 401, "invalid_client");
    h.done().await;
}

#[tokio::test]
async fn token_client_secret_post_works_and_wrong_secret_is_401() {
    let h = start().await;
    let code = h.code(&Auth::new()).await;
    let r = h
        .token(
            ClientAuth::Post,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT_URI),
                ("client_id", CLIENT_ID),
                ("client_secret", "wrong"),
            ],
        )
        .await;
    assert_oauth(&r, 401, "invalid_client");
    let r = h
        .token(
            ClientAuth::Post,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT_URI),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["id_token"].is_string());
    h.done().await;
}

#[tokio::test]
async fn token_public_client_without_secret_works_with_a_secret_is_401() {
    let h = start().await;
    let request = Auth::new().client(PUBLIC_ID, PUBLIC_REDIRECT);
    let form = |code: &str| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", PUBLIC_REDIRECT.to_owned()),
            ("client_id", PUBLIC_ID.to_owned()),
        ]
    };
    let code = h.code(&request).await;
    let mut with_secret = form(&code);
    with_secret.push(("client_secret", "guess".to_owned()));
    let pairs: Vec<(&str, &str)> = with_secret.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = h.token(ClientAuth::Post, &pairs).await;
    assert_oauth(&r, 401, "invalid_client");
    let plain = form(&code);
    let pairs: Vec<(&str, &str)> = plain.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = h.token(ClientAuth::Post, &pairs).await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.done().await;
}

#[tokio::test]
async fn token_parameters_in_the_query_are_ignored() {
    // RFC 6749 §2.3.1 and Dex: the token endpoint reads the form body only.
    let h = start().await;
    let code = h.code(&Auth::new()).await;
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", &code)
        .append_pair("redirect_uri", REDIRECT_URI)
        .finish();
    let r = Resp::read(
        h.server
            .http
            .post(h.url(&format!("/token?{query}")))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .header(CONTENT_TYPE, FORM)
            .body("")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_oauth(&r, 400, "unsupported_grant_type");
    // Credentials in the query do not authenticate either.
    let r = Resp::read(
        h.server
            .http
            .post(h.url(&format!(
                "/token?client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}"
            )))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT_URI),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_oauth(&r, 401, "invalid_client");
    // The code was not spent by either attempt.
    assert_eq!(h.exchange(&code).await.status, 200);
    h.done().await;
}

#[tokio::test]
async fn token_non_form_body_is_ignored() {
    let h = start().await;
    let r = Resp::read(
        h.server
            .http
            .post(h.url("/token"))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .json(&json!({"grant_type": "authorization_code", "code": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_oauth(&r, 400, "unsupported_grant_type");
    h.done().await;
}

#[tokio::test]
async fn token_invalid_percent_encoding_in_body_is_invalid_request() {
    let h = start().await;
    for body in [
        "grant_type=authorization_code&code=%zz",
        "grant_type=authorization_code&code=%E9",
    ] {
        let r = Resp::read(
            h.server
                .http
                .post(h.url("/token"))
                .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
                .header(CONTENT_TYPE, FORM)
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        let json = assert_oauth(&r, 400, "invalid_request");
        assert_description(&json, "Could not read the request");
    }
    h.done().await;
}

#[tokio::test]
async fn token_huge_body_is_invalid_request_and_stores_nothing() {
    let h = start().await;
    let code = h
        .code(&Auth::new().set("scope", "openid offline_access"))
        .await;
    let body = format!(
        "grant_type=authorization_code&code={code}&redirect_uri={}&pad={}",
        form_urlencoded::byte_serialize(REDIRECT_URI.as_bytes()).collect::<String>(),
        "p".repeat(oxidex::http::params::MAX_BODY_BYTES + 16 * 1024)
    );
    let r = Resp::read(
        h.server
            .http
            .post(h.url("/token"))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .header(CONTENT_TYPE, FORM)
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_oauth(&r, 400, "invalid_request");
    assert!(
        h.server
            .state
            .live()
            .provider
            .storage()
            .list_refresh_tokens()
            .unwrap()
            .is_empty(),
        "no refresh token stored"
    );
    assert!(
        h.server
            .state
            .live()
            .provider
            .storage()
            .get_auth_code(&code)
            .is_ok(),
        "the code was not spent"
    );
    h.done().await;
}

// ---------------------------------------------------------------------------
// /token: authorization_code
// ---------------------------------------------------------------------------

#[tokio::test]
async fn token_missing_code_is_invalid_request() {
    let h = start().await;
    let r = h.exchange("").await;
    let body = assert_oauth(&r, 400, "invalid_request");
    assert_description(&body, "Required param: code.");
    h.done().await;
}

#[tokio::test]
async fn token_unknown_code_is_invalid_grant() {
    let h = start().await;
    let r = h.exchange("aaaaaaaaaaaaaaaaaaaaaaaaa").await;
    let body = assert_oauth(&r, 400, "invalid_grant");
    assert_description(&body, "Invalid or expired code parameter.");
    h.done().await;
}

#[tokio::test]
async fn token_oversized_code_is_invalid_request() {
    let h = start().await;
    let r = h
        .exchange(&"c".repeat(oxidex::oidc::MAX_PARAM_LEN + 1))
        .await;
    let body = assert_oauth(&r, 400, "invalid_request");
    assert_description(&body, "\"code\" is too long");
    h.done().await;
}

#[tokio::test]
async fn token_code_replay_is_invalid_grant() {
    let h = start().await;
    let code = h.code(&Auth::new()).await;
    assert_eq!(h.exchange(&code).await.status, 200);
    let r = h.exchange(&code).await;
    assert_oauth(&r, 400, "invalid_grant");
    h.done().await;
}

#[tokio::test]
async fn token_code_of_another_client_is_invalid_grant() {
    let h = start().await;
    let code = h.code(&Auth::new()).await;
    let r = h
        .token(
            ClientAuth::Basic(OTHER_ID, OTHER_SECRET),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT_URI),
            ],
        )
        .await;
    assert_oauth(&r, 400, "invalid_grant");
    // The attempt did not burn the code for its rightful client.
    assert_eq!(h.exchange(&code).await.status, 200);
    h.done().await;
}

#[tokio::test]
async fn token_expired_code_is_invalid_grant() {
    let h = start().await;
    let code = h.code(&Auth::new()).await;
    h.clock.advance(Duration::from_secs(30 * 60 + 1));
    let r = h.exchange(&code).await;
    let body = assert_oauth(&r, 400, "invalid_grant");
    assert_description(&body, "Invalid or expired code parameter.");
    h.done().await;
}

#[tokio::test]
async fn token_redirect_uri_mismatch_is_invalid_request() {
    let h = start().await;
    let code = h.code(&Auth::new()).await;
    for uri in ["http://127.0.0.1:5555/other", ""] {
        let r = h
            .token(
                ClientAuth::Basic(CLIENT_ID, CLIENT_SECRET),
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", uri),
                ],
            )
            .await;
        let body = assert_oauth(&r, 400, "invalid_request");
        assert_description(&body, "redirect_uri did not match");
    }
    h.done().await;
}

async fn pkce_exchange(h: &H, code: &str, extra: &[(&str, &str)]) -> Resp {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT_URI),
    ];
    form.extend_from_slice(extra);
    h.token(ClientAuth::Basic(CLIENT_ID, CLIENT_SECRET), &form)
        .await
}

fn s256_request() -> Auth {
    Auth::new()
        .set("code_challenge", &s256(VERIFIER))
        .set("code_challenge_method", "S256")
}

#[tokio::test]
async fn token_pkce_mismatch_is_invalid_grant() {
    let h = start().await;
    let code = h.code(&s256_request()).await;
    let r = pkce_exchange(&h, &code, &[("code_verifier", "not-the-verifier")]).await;
    let body = assert_oauth(&r, 400, "invalid_grant");
    assert_description(&body, "Invalid code_verifier.");
    // Still PKCE-protected: the right verifier works afterwards.
    let ok = pkce_exchange(&h, &code, &[("code_verifier", VERIFIER)]).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    h.done().await;
}

#[tokio::test]
async fn token_pkce_downgrade_to_plain_is_ignored() {
    // S256 at /auth; the attacker only knows the challenge and claims "plain".
    let h = start().await;
    let code = h.code(&s256_request()).await;
    let r = pkce_exchange(
        &h,
        &code,
        &[
            ("code_verifier", &s256(VERIFIER)),
            ("code_challenge_method", "plain"),
        ],
    )
    .await;
    assert_oauth(&r, 400, "invalid_grant");
    h.done().await;
}

#[tokio::test]
async fn token_verifier_without_challenge_is_invalid_request() {
    let h = start().await;
    let code = h.code(&Auth::new()).await;
    let r = pkce_exchange(&h, &code, &[("code_verifier", VERIFIER)]).await;
    let body = assert_oauth(&r, 400, "invalid_request");
    assert_description(&body, "No PKCE flow started");
    h.done().await;
}

#[tokio::test]
async fn token_challenge_without_verifier_is_invalid_grant() {
    let h = start().await;
    let code = h.code(&s256_request()).await;
    let r = pkce_exchange(&h, &code, &[]).await;
    let body = assert_oauth(&r, 400, "invalid_grant");
    assert_description(&body, "Expecting parameter code_verifier");
    h.done().await;
}

#[tokio::test]
async fn token_pkce_plain_mismatch_is_invalid_grant() {
    let h = start().await;
    let code = h.code(&Auth::new().set("code_challenge", VERIFIER)).await;
    let r = pkce_exchange(&h, &code, &[("code_verifier", &s256(VERIFIER))]).await;
    assert_oauth(&r, 400, "invalid_grant");
    h.done().await;
}

// ---------------------------------------------------------------------------
// /token: refresh_token
// ---------------------------------------------------------------------------

fn refresh_of(tokens: &Value) -> String {
    tokens["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_owned()
}

#[tokio::test]
async fn refresh_missing_token_is_invalid_request() {
    let h = start().await;
    let r = h.refresh(CLIENT_ID, CLIENT_SECRET, "", None).await;
    let body = assert_oauth(&r, 400, "invalid_request");
    assert_description(&body, "No refresh token");
    h.done().await;
}

#[tokio::test]
async fn refresh_token_of_another_client_is_invalid_grant() {
    let h = start().await;
    let refresh = refresh_of(&h.tokens().await);
    let r = h.refresh(OTHER_ID, OTHER_SECRET, &refresh, None).await;
    let body = assert_oauth(&r, 400, "invalid_grant");
    assert_description(&body, "claimed by another client");
    // The rightful client can still use it.
    assert_eq!(
        h.refresh(CLIENT_ID, CLIENT_SECRET, &refresh, None)
            .await
            .status,
        200
    );
    h.done().await;
}

#[tokio::test]
async fn refresh_malformed_token_is_invalid_request() {
    let h = start().await;
    let refresh = refresh_of(&h.tokens().await);
    // Right id, wrong secret: re-encode the protobuf with another secret.
    let wire = oxidex::oidc::subject::RefreshTokenWire::decode(&refresh);
    let forged = oxidex::oidc::subject::RefreshTokenWire {
        id: wire.id.clone(),
        token: "bbbbbbbbbbbbbbbbbbbbbbbbb".into(),
    }
    .encode();
    for bad in [
        "not-a-token",
        "Chl",
        "////",
        &refresh[..refresh.len() - 2],
        forged.as_str(),
        wire.id.as_str(),
    ] {
        let r = h.refresh(CLIENT_ID, CLIENT_SECRET, bad, None).await;
        let body = assert_oauth(&r, 400, "invalid_request");
        assert_description(&body, "Refresh token is invalid");
    }
    h.done().await;
}

#[tokio::test]
async fn refresh_oversized_token_is_invalid_request() {
    let h = start().await;
    let r = h
        .refresh(
            CLIENT_ID,
            CLIENT_SECRET,
            &"r".repeat(oxidex::oidc::MAX_PARAM_LEN + 1),
            None,
        )
        .await;
    let body = assert_oauth(&r, 400, "invalid_request");
    assert_description(&body, "\"refresh_token\" is too long");
    h.done().await;
}

#[tokio::test]
async fn refresh_with_widened_scope_is_invalid_request() {
    let h = start().await;
    let refresh = refresh_of(&h.tokens().await);
    let r = h
        .refresh(
            CLIENT_ID,
            CLIENT_SECRET,
            &refresh,
            Some("openid email offline_access groups"),
        )
        .await;
    let body = assert_oauth(&r, 400, "invalid_request");
    assert_description(&body, "unauthorized scope(s)");
    // Narrower is fine.
    let r = h
        .refresh(CLIENT_ID, CLIENT_SECRET, &refresh, Some("openid"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    h.done().await;
}

#[tokio::test]
async fn refresh_past_absolute_lifetime_is_expired() {
    let h = start_with(|c| {
        c["expiry"] = json!({"refreshTokens": {"absoluteLifetime": "1h"}});
    })
    .await;
    let refresh = refresh_of(&h.tokens().await);
    h.clock.advance(Duration::from_secs(30 * 60));
    let r = h.refresh(CLIENT_ID, CLIENT_SECRET, &refresh, None).await;
    assert_eq!(r.status, 200, "still inside the lifetime: {}", r.body);
    let refresh = refresh_of(&r.json());
    h.clock.advance(Duration::from_secs(31 * 60));
    let r = h.refresh(CLIENT_ID, CLIENT_SECRET, &refresh, None).await;
    let body = assert_oauth(&r, 400, "invalid_request");
    assert_description(&body, "Refresh token expired.");
    h.done().await;
}

#[tokio::test]
async fn refresh_unused_longer_than_valid_if_not_used_for_is_expired() {
    let h = start_with(|c| {
        c["expiry"] = json!({"refreshTokens": {"validIfNotUsedFor": "10m"}});
    })
    .await;
    let mut refresh = refresh_of(&h.tokens().await);
    // Used every 9 minutes, it keeps working (the window slides).
    for _ in 0..2 {
        h.clock.advance(Duration::from_secs(9 * 60));
        let r = h.refresh(CLIENT_ID, CLIENT_SECRET, &refresh, None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        refresh = refresh_of(&r.json());
    }
    h.clock.advance(Duration::from_secs(11 * 60));
    let r = h.refresh(CLIENT_ID, CLIENT_SECRET, &refresh, None).await;
    let body = assert_oauth(&r, 400, "invalid_request");
    assert_description(&body, "Refresh token expired.");
    h.done().await;
}

#[tokio::test]
async fn refresh_reuse_inside_reuse_interval_returns_the_current_token() {
    let h = start_with(|c| {
        c["expiry"] = json!({"refreshTokens": {"reuseInterval": "30s"}});
    })
    .await;
    let first = refresh_of(&h.tokens().await);
    h.clock.advance(Duration::from_secs(31));
    let rotated = h.refresh(CLIENT_ID, CLIENT_SECRET, &first, None).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let second = refresh_of(&rotated.json());
    assert_ne!(second, first, "rotated");
    // A retry with the old token inside the window gets the current one.
    h.clock.advance(Duration::from_secs(10));
    let retry = h.refresh(CLIENT_ID, CLIENT_SECRET, &first, None).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(refresh_of(&retry.json()), second);
    // Outside the window the old token is a replay: refused, family revoked.
    h.clock.advance(Duration::from_secs(60));
    let replay = h.refresh(CLIENT_ID, CLIENT_SECRET, &first, None).await;
    assert_oauth(&replay, 400, "invalid_grant");
    let after = h.refresh(CLIENT_ID, CLIENT_SECRET, &second, None).await;
    assert_oauth(&after, 400, "invalid_request");
    h.done().await;
}

#[tokio::test]
async fn refresh_with_a_code_or_access_token_is_invalid_request() {
    let h = start().await;
    let tokens = h.tokens().await;
    let code = h.code(&Auth::new()).await;
    for wrong in [tokens["access_token"].as_str().unwrap(), code.as_str()] {
        let r = h.refresh(CLIENT_ID, CLIENT_SECRET, wrong, None).await;
        assert_oauth(&r, 400, "invalid_request");
    }
    h.done().await;
}

// ---------------------------------------------------------------------------
// /userinfo
// ---------------------------------------------------------------------------

#[tokio::test]
async fn userinfo_without_bearer_is_401_with_www_authenticate() {
    let h = start().await;
    for header in [None, Some("Basic abc"), Some("Bearer "), Some("Bearer")] {
        let r = h.userinfo(header).await;
        let body = assert_oauth(&r, 401, "access_denied");
        assert_description(&body, "Invalid bearer token.");
        assert_eq!(r.headers[WWW_AUTHENTICATE], "Bearer", "{header:?}");
    }
    h.done().await;
}

#[tokio::test]
async fn userinfo_access_token_in_query_is_not_accepted() {
    let h = start().await;
    let tokens = h.tokens().await;
    let token = tokens["access_token"].as_str().unwrap();
    let r = h.get(&format!("/userinfo?access_token={token}")).await;
    assert_oauth(&r, 401, "access_denied");
    h.done().await;
}

#[tokio::test]
async fn userinfo_garbage_token_is_403() {
    let h = start().await;
    for token in [
        "garbage",
        "a.b.c",
        "...",
        "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.",
        "eyJhbGciOiJSUzI1NiIsImtpZCI6MX0.e30.AAAA",
    ] {
        let r = h.userinfo(Some(&format!("Bearer {token}"))).await;
        assert_oauth(&r, 403, "access_denied");
        assert!(r.headers.get(WWW_AUTHENTICATE).is_none());
    }
    h.done().await;
}

#[tokio::test]
async fn userinfo_tampered_token_is_403() {
    let h = start().await;
    let tokens = h.tokens().await;
    let token = tokens["access_token"].as_str().unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["email"] = json!("root@example.com");
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
    let r = h.userinfo(Some(&format!("Bearer {tampered}"))).await;
    assert_oauth(&r, 403, "access_denied");
    // Same payload, header switched to HS256 (key confusion): refused too.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
    let confused = format!("{header}.{}.{}", parts[1], parts[2]);
    let r = h.userinfo(Some(&format!("Bearer {confused}"))).await;
    assert_oauth(&r, 403, "access_denied");
    // The untouched token still works.
    let ok = h.userinfo(Some(&format!("Bearer {token}"))).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    h.done().await;
}

#[tokio::test]
async fn userinfo_expired_token_is_403() {
    let h = start_with(|c| c["expiry"] = json!({"idTokens": "1m"})).await;
    let tokens = h.tokens().await;
    let bearer = format!("Bearer {}", tokens["access_token"].as_str().unwrap());
    assert_eq!(h.userinfo(Some(&bearer)).await.status, 200);
    h.clock.advance(Duration::from_secs(2 * 60));
    let r = h.userinfo(Some(&bearer)).await;
    assert_oauth(&r, 403, "access_denied");
    h.done().await;
}

// ---------------------------------------------------------------------------
// Everything at once on one server: nothing 5xx, still healthy afterwards.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn barrage_of_garbage_never_breaks_the_server() {
    let h = start().await;
    let paths = [
        "/auth",
        "/auth/mock",
        "/auth/local",
        "/auth/local/login",
        "/auth/%00",
        "/auth/..%2F..%2Fetc",
        "/callback",
        "/callback/mock",
        "/approval",
        "/token",
        "/userinfo",
        "/keys",
        "/.well-known/openid-configuration",
        "/nope",
    ];
    let queries = [
        "",
        "?",
        "?&&&==&=",
        "?state=%",
        "?client_id=%00&redirect_uri=%0d%0a",
        "?client_id=example-app&redirect_uri=http%3A%2F%2F127.0.0.1%3A5555%2Fcallback&response_type=code&scope=openid&state=%E2%80%AE",
        "?req=&hmac=",
        "?state=;;;",
        "?scope=openid&scope=email&client_id=a&client_id=b",
    ];
    let bodies: [&[u8]; 5] = [
        b"",
        b"grant_type=refresh_token&refresh_token=%C0%AF",
        b"\xff\xfe\x00",
        b"grant_type=password&username=&password=",
        b"a=1&a=2&a=3&&&==",
    ];
    let mut requests = 0;
    for path in paths {
        for query in queries {
            let url = h.url(&format!("{path}{query}"));
            let r = Resp::read(h.server.http.get(&url).send().await.unwrap()).await;
            assert!(r.status.as_u16() < 500, "{url}");
            for body in bodies {
                let r = Resp::read(
                    h.server
                        .http
                        .post(&url)
                        .header(CONTENT_TYPE, FORM)
                        .header(AUTHORIZATION, "Basic Og==")
                        .body(body.to_vec())
                        .send()
                        .await
                        .unwrap(),
                )
                .await;
                assert!(r.status.as_u16() < 500, "{url}");
                requests += 2;
            }
        }
    }
    assert!(requests > 500);
    h.done().await;
}

/// The picker page renders (two connectors) even for a hostile request: links
/// keep the request, escaped.
#[tokio::test]
async fn picker_escapes_hostile_parameters() {
    let h = start().await;
    let r = h
        .get(&format!(
            "/auth?{}",
            Auth::new()
                .set("state", "\"><script>alert(1)</script>")
                .query()
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains("<script>alert(1)"), "{}", r.body);
    assert!(matches!(
        h.browser.follow(&h.url("/auth?client_id=ghost")).await,
        Followed::Page { .. }
    ));
    h.done().await;
}

#[tokio::test]
async fn password_form_drops_foreign_back_links() {
    let h = start().await;
    let (form_url, _) = h.password_form().await;
    let state = query_param(&form_url, "state").unwrap();
    for back in [
        "//evil.example/x",
        "https://evil.example/",
        "/\\evil.example",
    ] {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("state", &state)
            .append_pair("back", back)
            .finish();
        // In the browser that started the login: another one is refused.
        let r = Resp::read(
            h.browser
                .get(&h.url(&format!("/auth/local/login?{query}")))
                .await,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(!r.body.contains("evil.example"), "{back}: {}", r.body);
    }
    h.done().await;
}

#[tokio::test]
async fn connector_not_allowed_for_the_implied_grant_is_400_page() {
    let h = start_with(|c| c["connectors"][0]["grantTypes"] = json!(["implicit"])).await;
    let r = h.auth("mock", &Auth::new()).await;
    assert_page(&r, 400, "does not support this grant type");
    h.done().await;
}

#[tokio::test]
async fn picker_offers_only_allowed_connectors_and_refuses_others() {
    let h = start().await;
    let request = Auth::new().set("client_id", LOCAL_ONLY_ID);
    // The only allowed connector is chosen without a picker.
    let r = h.get(&format!("/auth?{}", request.query())).await;
    assert_eq!(r.status, 302, "{}", r.body);
    assert!(
        r.location().unwrap().contains("/auth/local?"),
        "{:?}",
        r.location()
    );
    let r = h
        .get(&format!(
            "/auth?{}",
            request.clone().set("connector_id", "mock").query()
        ))
        .await;
    assert_page(&r, 400, "Connector ID does not match a valid Connector");
    let r = h.auth("mock", &request).await;
    assert_page(&r, 403, "Connector not allowed for this client.");
    let r = h.auth("mock", &request.set("connector_id", "mock")).await;
    let d = assert_redirected(&r, REDIRECT_URI, "invalid_request");
    assert_eq!(d, "Connector not allowed for this client");
    h.done().await;
}

#[tokio::test]
async fn token_and_refresh_responses_are_not_cacheable() {
    let h = start().await;
    let code = h
        .code(&Auth::new().set("scope", "openid offline_access"))
        .await;
    let first = h.exchange(&code).await;
    let refreshed = h
        .refresh(
            CLIENT_ID,
            CLIENT_SECRET,
            &refresh_of(&first.json()),
            Some(" openid  "),
        )
        .await;
    for r in [&first, &refreshed] {
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.headers["cache-control"], "no-store");
        assert_eq!(r.headers["pragma"], "no-cache");
        assert!(
            r.headers[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let body = r.json();
        assert_eq!(body["token_type"], "bearer");
        assert_eq!(body["expires_in"], 24 * 60 * 60);
        assert!(body["id_token"].is_string() && body.get("scope").is_none());
    }
    // Errors are not cacheable either.
    let error = h.exchange(&code).await;
    assert_oauth(&error, 400, "invalid_grant");
    assert_eq!(error.headers["cache-control"], "no-store");
    h.done().await;
}

#[tokio::test]
async fn picker_lists_connectors_sorted_by_name_ignoring_case() {
    // The password DB is "Email"; a case-sensitive sort would put it before
    // "alpha".
    let h = start_with(|c| c["connectors"][0]["name"] = json!("alpha")).await;
    let r = h.get(&format!("/auth?{}", Auth::new().query())).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let email = r.body.find("Log in with Email").unwrap();
    let alpha = r.body.find("Log in with alpha").unwrap();
    assert!(alpha < email, "{}", r.body);
    h.done().await;
}

#[tokio::test]
async fn picker_leaves_out_connectors_whose_grant_types_exclude_the_request() {
    // mock only allows implicit: a code-flow request sees the password DB alone,
    // which is then chosen without a picker.
    let h = start_with(|c| c["connectors"][0]["grantTypes"] = json!(["implicit"])).await;
    let r = h.get(&format!("/auth?{}", Auth::new().query())).await;
    assert_eq!(r.status, 302, "{}", r.body);
    assert!(
        r.location().unwrap().contains("/auth/local?"),
        "{:?}",
        r.location()
    );
    h.done().await;
}
