//! Starting and stopping an oxidex server inside a test.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use oxidex::config::{self, LoadOptions};
use oxidex::http::AppState;
use oxidex::http::serve::ConnectionLimits;
use oxidex::shutdown::{self, ShutdownTrigger};
use oxidex::{Clock, server};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A clock the test moves by hand.
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    pub fn at(start: SystemTime) -> Self {
        Self(Arc::new(Mutex::new(start)))
    }
    pub fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
    pub fn clock(&self) -> Clock {
        let inner = self.0.clone();
        Arc::new(move || *inner.lock().unwrap())
    }
}

/// A minimal valid config; tests patch what they need.
pub fn base_config(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "storage": {"type": "memory"},
        "web": {"http": "127.0.0.1:0"},
        "staticClients": [{
            "id": "example-app",
            "name": "Example App",
            "secret": "ZXhhbXBsZS1hcHAtc2VjcmV0",
            "redirectURIs": ["http://127.0.0.1:5555/callback"]
        }],
        "connectors": [{"type": "mockCallback", "id": "mock", "name": "Mock"}]
    })
}

pub fn settings_from(config: &Value, dir: &Path) -> config::Settings {
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    config::load_file(&path, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("test config rejected:\n{e}"))
        .settings
}

/// [`settings_from`] with browser sessions off (`DEX_SESSIONS_ENABLED=false`),
/// for tests of Dex v2.45's one-login-per-request flow that log in several times
/// in one browser (with sessions on, the second login would be single sign-on;
/// `sessions.rs` covers that).
pub fn settings_without_sessions(config: &Value, dir: &Path) -> config::Settings {
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    let options = LoadOptions {
        env: config::Env::from_pairs([("DEX_SESSIONS_ENABLED", "false")]),
        ..LoadOptions::default()
    };
    config::load_file(&path, &options)
        .unwrap_or_else(|e| panic!("test config rejected:\n{e}"))
        .settings
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    pub http: reqwest::Client,
    trigger: Option<ShutdownTrigger>,
    task: Option<JoinHandle<()>>,
    // Keeps the temporary directory (config, SQLite file) alive.
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    pub async fn start(config: Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings_from(&config, dir.path());
        Self::start_with(settings, server::system_clock(), Some(dir)).await
    }

    /// Binds first, so the config can name the real port in its issuer:
    /// `make_config("http://127.0.0.1:<port>/dex")`.
    pub async fn start_at_issuer(make_config: impl FnOnce(&str) -> Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}/dex", listener.local_addr().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let settings = settings_from(&make_config(&issuer), dir.path());
        Self::start_on(listener, settings, server::system_clock(), Some(dir)).await
    }

    /// [`TestServer::start_at_issuer`] with browser sessions off.
    pub async fn start_at_issuer_without_sessions(make_config: impl FnOnce(&str) -> Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}/dex", listener.local_addr().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let settings = settings_without_sessions(&make_config(&issuer), dir.path());
        Self::start_on(listener, settings, server::system_clock(), Some(dir)).await
    }

    pub async fn start_with(
        settings: config::Settings,
        clock: Clock,
        dir: Option<tempfile::TempDir>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, settings, clock, dir).await
    }

    pub async fn start_on(
        listener: TcpListener,
        settings: config::Settings,
        clock: Clock,
        dir: Option<tempfile::TempDir>,
    ) -> Self {
        Self::start_limited(listener, settings, clock, dir, None).await
    }

    /// [`TestServer::start_on`] with other connection limits than the defaults.
    pub async fn start_limited(
        listener: TcpListener,
        settings: config::Settings,
        clock: Clock,
        dir: Option<tempfile::TempDir>,
        limits: Option<ConnectionLimits>,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let (trigger, stop) = shutdown::channel();
        let mut services = server::start_services(settings, clock, stop.clone())
            .await
            .unwrap();
        if let Some(limits) = limits {
            services.limits = limits;
        }
        let state = services.state.clone();
        let task = tokio::spawn(async move {
            server::run(services, listener, None, stop).await.unwrap();
        });
        // Keeps cookies like a browser: login steps refuse another browser.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .build()
            .unwrap();
        Self {
            addr,
            state,
            http,
            trigger: Some(trigger),
            task: Some(task),
            _dir: dir,
        }
    }

    pub fn issuer(&self) -> String {
        self.state.settings.issuer.url.clone()
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:<port>` + path (the path includes any issuer prefix).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server and waits for it, as SIGTERM would.
    pub async fn stop(mut self) {
        if let Some(trigger) = self.trigger.take() {
            trigger.fire();
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server did not shut down within 10 s")
                .unwrap();
        }
    }
}

pub fn temp_sqlite(dir: &Path) -> PathBuf {
    dir.join("state").join("oxidex.db")
}
