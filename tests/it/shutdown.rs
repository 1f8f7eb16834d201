//! Graceful shutdown: readiness fails first, no new connections are taken, the
//! requests in flight finish — within `web.drainTimeout`, and no longer.
//!
//! The requests in flight are upstream callbacks held open by a forge stand-in
//! whose token endpoint answers slowly, so they are provably in flight when the
//! shutdown begins.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::routing::{get, post};
use oxidex::{server, shutdown};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::support::{base_config, settings_from};

pub const CLIENT_REDIRECT: &str = "http://127.0.0.1:5555/callback";

/// A forge whose token endpoint takes `delay`; counts the exchanges it received.
pub async fn slow_forge(delay: Duration) -> (String, Arc<AtomicUsize>) {
    #[derive(Clone)]
    struct Forge {
        delay: Duration,
        exchanges: Arc<AtomicUsize>,
    }
    async fn token(State(forge): State<Forge>) -> Json<Value> {
        forge.exchanges.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(forge.delay).await;
        Json(json!({"access_token": "at", "token_type": "bearer", "expires_in": 3600}))
    }
    async fn user() -> Json<Value> {
        Json(json!({"id": 7, "login": "alice", "full_name": "Alice", "email": "alice@example.com"}))
    }
    let exchanges = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route("/login/oauth/access_token", post(token))
        .route("/api/v1/user", get(user))
        .with_state(Forge {
            delay,
            exchanges: exchanges.clone(),
        });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, exchanges)
}

struct Running {
    addr: std::net::SocketAddr,
    telemetry: std::net::SocketAddr,
    issuer: String,
    trigger: shutdown::ShutdownTrigger,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start(forge: &str, drain_timeout: &str) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let telemetry = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let issuer = format!("http://{addr}/dex");
    let mut config = base_config(&issuer);
    config["oauth2"] = json!({"skipApprovalScreen": true});
    config["web"]["drainTimeout"] = json!(drain_timeout);
    config["connectors"] = json!([{
        "type": "gitea", "id": "forge", "name": "Forge",
        "config": {
            "baseURL": forge, "clientID": "oxidex", "clientSecret": "forge-secret",
            "redirectURI": format!("{issuer}/callback")
        }
    }]);
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_from(&config, dir.path());
    let (trigger, stop) = shutdown::channel();
    let services = server::start_services(settings, server::system_clock(), stop.clone())
        .await
        .unwrap();
    let telemetry_addr = telemetry.local_addr().unwrap();
    let task = tokio::spawn(async move {
        server::run(services, listener, Some(telemetry), stop)
            .await
            .unwrap();
    });
    Running {
        addr,
        telemetry: telemetry_addr,
        issuer,
        trigger,
        task,
        _dir: dir,
    }
}

/// A browser (its own cookies) that has started a login and stands at the forge:
/// returns the `/callback` URL the forge would send it back to.
async fn login_up_to_the_forge(server: &Running) -> (reqwest::Client, String) {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .build()
        .unwrap();
    let response = browser
        .get(format!("{}/auth/forge", server.issuer))
        .query(&[
            ("client_id", "example-app"),
            ("redirect_uri", CLIENT_REDIRECT),
            ("response_type", "code"),
            ("scope", "openid"),
            ("state", "client-state"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().unwrap();
    let upstream = url::Url::parse(location).unwrap();
    let state = upstream
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    (
        browser,
        format!("{}/callback?code=forge-code&state={state}", server.issuer),
    )
}

async fn readiness(server: &Running) -> (u16, Value) {
    let response = reqwest::get(format!("http://{}/healthz/ready", server.telemetry))
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_fails_readiness_refuses_new_connections_and_finishes_requests_in_flight() {
    let (forge, exchanges) = slow_forge(Duration::from_millis(1500)).await;
    let server = start(&forge, "20s").await;
    assert_eq!(readiness(&server).await.0, 200);

    const LOGINS: usize = 8;
    let mut callbacks = Vec::new();
    for _ in 0..LOGINS {
        let (browser, callback) = login_up_to_the_forge(&server).await;
        callbacks.push(tokio::spawn(
            async move { browser.get(callback).send().await },
        ));
    }
    wait_for("every callback to reach the forge", || {
        exchanges.load(Ordering::SeqCst) == LOGINS
    })
    .await;

    let stopping = Instant::now();
    server.trigger.fire();
    // Readiness fails at once, while the callbacks are still waiting on the forge.
    let mut draining = false;
    for _ in 0..100 {
        let (status, report) = readiness(&server).await;
        if status == 503 {
            assert_eq!(report["draining"], true, "{report}");
            draining = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(draining, "readiness never failed during the drain");
    // No new connections on the main listener.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(server.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the main listener still accepts connections");
    assert!(
        stopping.elapsed() < Duration::from_millis(1200),
        "checked while the callbacks were in flight"
    );

    // Every request that was in flight completes: the login reaches the client.
    for callback in callbacks {
        let response = callback.await.unwrap().expect("an accepted request failed");
        assert_eq!(response.status(), 303);
        let location = response.headers()["location"].to_str().unwrap();
        assert!(location.starts_with(CLIENT_REDIRECT), "{location}");
        assert!(location.contains("code="), "{location}");
    }
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .expect("the server did not stop after draining")
        .unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_drain_timeout_bounds_how_long_a_shutdown_waits() {
    let (forge, exchanges) = slow_forge(Duration::from_secs(30)).await;
    let server = start(&forge, "300ms").await;
    let (browser, callback) = login_up_to_the_forge(&server).await;
    let stuck = tokio::spawn(async move { browser.get(callback).send().await });
    wait_for("the callback to reach the forge", || {
        exchanges.load(Ordering::SeqCst) == 1
    })
    .await;

    let stopping = Instant::now();
    server.trigger.fire();
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("the drain timeout did not bound the shutdown")
        .unwrap();
    let took = stopping.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "stopped after {took:?}"
    );
    // The request that outlived the drain was cut, not answered.
    assert!(stuck.await.unwrap().is_err());
}

#[test]
fn the_drain_timeout_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["0s", "-1s", "soon"] {
        let mut config = base_config("http://127.0.0.1:5556/dex");
        config["web"]["drainTimeout"] = json!(bad);
        let path = dir.path().join("config.json");
        std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
        let error = oxidex::config::load_file(&path, &Default::default())
            .err()
            .unwrap_or_else(|| panic!("{bad:?} accepted"))
            .to_string();
        assert!(error.contains("web.drainTimeout"), "{bad:?}: {error}");
    }
    let mut config = base_config("http://127.0.0.1:5556/dex");
    let path = dir.path().join("config.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let settings = settings_from(&config, dir.path());
    assert_eq!(settings.web.drain_timeout, Duration::from_secs(25));
    config["web"]["drainTimeout"] = json!("90s");
    assert_eq!(
        settings_from(&config, dir.path()).web.drain_timeout,
        Duration::from_secs(90)
    );
}
