//! Upstream outages (issue 16): a forge that is down, answers 500, answers
//! garbage or answers too slowly, during a login and during a refresh. The user
//! gets a clear page and the client a well-formed OAuth error — never a hang, a
//! 500 from oxidex itself, or upstream text — and once the forge is back, the
//! same refresh token refreshes: the offline session kept its last good
//! upstream token.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::shutdown::CLIENT_REDIRECT;
use crate::support::{TestServer, base_config};

const HEALTHY: u8 = 0;
const DOWN: u8 = 1;
const ERROR_500: u8 = 2;
const GARBAGE: u8 = 3;
const SLOW: u8 = 4;

/// Longer than the connectors' upstream timeout (15 s).
const SLOW_ANSWER: Duration = Duration::from_secs(20);

/// A forge stand-in whose behaviour the test switches. Access tokens expire at
/// once, so every refresh goes to the forge's token endpoint.
#[derive(Clone)]
struct Forge {
    mode: Arc<AtomicU8>,
    issued: Arc<AtomicU8>,
}

impl Forge {
    async fn fault(&self) -> Option<Response> {
        match self.mode.load(Ordering::SeqCst) {
            ERROR_500 => Some(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "<html>upstream exploded</html>",
                )
                    .into_response(),
            ),
            GARBAGE => Some((StatusCode::OK, "{\"access_token\": [1, 2").into_response()),
            SLOW => {
                tokio::time::sleep(SLOW_ANSWER).await;
                Some((StatusCode::OK, "{}").into_response())
            }
            _ => None,
        }
    }
}

async fn token(State(forge): State<Forge>) -> Response {
    if let Some(fault) = forge.fault().await {
        return fault;
    }
    let n = forge.issued.fetch_add(1, Ordering::SeqCst);
    Json(json!({
        "access_token": format!("at-{n}"), "token_type": "bearer",
        "refresh_token": format!("rt-{n}"), "expires_in": 0
    }))
    .into_response()
}

async fn user(State(forge): State<Forge>) -> Response {
    if let Some(fault) = forge.fault().await {
        return fault;
    }
    Json(json!({"id": 7, "login": "alice", "full_name": "Alice", "email": "alice@example.com"}))
        .into_response()
}

/// A running forge stand-in. `DOWN` stops it for real: its task (listener and
/// open connections) is aborted, so connections are refused until `up`.
struct Running {
    forge: Forge,
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start() -> Self {
        let forge = Forge {
            mode: Arc::new(AtomicU8::new(HEALTHY)),
            issued: Arc::new(AtomicU8::new(0)),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = serve(listener, forge.clone());
        Self { forge, addr, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&mut self, mode: u8) {
        if mode == DOWN {
            self.task.abort();
        }
        self.forge.mode.store(mode, Ordering::SeqCst);
    }

    async fn up(&mut self) {
        if self.task.is_finished() || self.forge.mode.load(Ordering::SeqCst) == DOWN {
            let _ = (&mut self.task).await;
            let listener = TcpListener::bind(self.addr).await.unwrap();
            self.task = serve(listener, self.forge.clone());
        }
        self.forge.mode.store(HEALTHY, Ordering::SeqCst);
    }
}

fn serve(listener: TcpListener, forge: Forge) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new()
        .route("/login/oauth/access_token", post(token))
        .route("/api/v1/user", get(user))
        .with_state(forge);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

async fn start(forge_url: &str) -> TestServer {
    let forge_url = forge_url.to_owned();
    TestServer::start_at_issuer_without_sessions(move |issuer| {
        let mut config = base_config(issuer);
        config["oauth2"] = json!({"skipApprovalScreen": true});
        config["connectors"] = json!([{
            "type": "gitea", "id": "forge", "name": "Forge",
            "config": {
                "baseURL": forge_url, "clientID": "oxidex", "clientSecret": "forge-secret",
                "redirectURI": format!("{issuer}/callback")
            }
        }]);
        config
    })
    .await
}

/// Starts a login and returns the callback URL the forge would send back.
async fn to_the_forge(server: &TestServer) -> String {
    let response = server
        .http
        .get(server.url("/dex/auth/forge"))
        .query(&[
            ("client_id", "example-app"),
            ("redirect_uri", CLIENT_REDIRECT),
            ("response_type", "code"),
            ("scope", "openid offline_access"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    let upstream = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    let state = upstream
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    server.url(&format!("/dex/callback?code=forge-code&state={state}"))
}

async fn refresh(server: &TestServer, refresh_token: &str) -> (u16, Option<String>, Value) {
    let response = server
        .http
        .post(server.url("/dex/token"))
        .basic_auth("example-app", Some("ZXhhbXBsZS1hcHAtc2VjcmV0"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        retry_after,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Logs in while the forge is healthy and returns the refresh token.
async fn logged_in(server: &TestServer) -> String {
    let callback = to_the_forge(server).await;
    let answered = server.http.get(callback).send().await.unwrap();
    assert_eq!(answered.status(), 303);
    let location = url::Url::parse(answered.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let tokens: Value = server
        .http
        .post(server.url("/dex/token"))
        .basic_auth("example-app", Some("ZXhhbXBsZS1hcHAtc2VjcmV0"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CLIENT_REDIRECT),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    tokens["refresh_token"].as_str().unwrap().to_owned()
}

async fn check_fault(mode: u8) {
    let mut forge = Running::start().await;
    let server = start(&forge.url()).await;
    let refresh_token = logged_in(&server).await;

    // During a login: a page that names the connector, no upstream text.
    let callback = to_the_forge(&server).await;
    forge.set(mode);
    let started = Instant::now();
    let page = server.http.get(callback).send().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(19),
        "the login hung"
    );
    assert_eq!(page.status(), 502, "mode {mode}");
    let text = page.text().await.unwrap();
    assert!(text.contains("Login through Forge failed"), "{text}");
    assert!(
        !text.contains("exploded") && !text.contains("access_token"),
        "{text}"
    );

    // During a refresh: a well-formed OAuth error that says "try later".
    let started = Instant::now();
    let (status, retry_after, body) = refresh(&server, &refresh_token).await;
    assert!(
        started.elapsed() < Duration::from_secs(19),
        "the refresh hung"
    );
    assert_eq!(status, 503, "mode {mode}: {body}");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert!(retry_after.is_some(), "no Retry-After");
    assert!(!body.to_string().contains("exploded"), "{body}");

    // The forge is back: the same refresh token refreshes.
    forge.up().await;
    let (status, _, body) = refresh(&server, &refresh_token).await;
    assert_eq!(status, 200, "after the forge came back: {body}");
    assert!(body["refresh_token"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forge_answering_500_fails_cleanly_and_recovers() {
    check_fault(ERROR_500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forge_answering_garbage_fails_cleanly_and_recovers() {
    check_fault(GARBAGE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forge_that_is_down_fails_cleanly_and_recovers() {
    check_fault(DOWN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forge_slower_than_the_timeout_fails_cleanly_and_recovers() {
    check_fault(SLOW).await;
}
