//! Two oxidex processes on one PostgreSQL database behave as one provider.
//!
//! Needs `OXIDEX_TEST_POSTGRES` (a libpq connection string of a role that may
//! create databases; `checks/postgres/run.sh` starts such a cluster). Unset, the
//! test has nothing to run against and returns; set, every failure counts.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oxidex::config::{PostgresHost, PostgresSettings};
use oxidex_testkit::postgres as test_db;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::browser::{Browser, form_action, input_value, location, query_param};
use crate::login::{CLIENT_ID, CLIENT_SECRET, PASSWORD_HASH, REDIRECT_URI};

/// The address clients use (a load balancer in production); both replicas
/// share it as their issuer.
const ISSUER: &str = "http://127.0.0.1:5556/dex";
const PASSWORD_ENV: &str = "OXIDEX_TEST_PG_PASSWORD";

struct Replica {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Replica {
    fn start(config: &Path, log: PathBuf, password: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_oxidex"))
            .arg("serve")
            .arg(config)
            .arg("--web-http-addr")
            .arg(format!("127.0.0.1:{port}"))
            .env(PASSWORD_ENV, password)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap();
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/dex{path}", self.base)
    }

    /// Links and redirects name the shared issuer; send them to this replica.
    fn local(&self, url: &str) -> String {
        let lb = ISSUER.trim_end_matches("/dex");
        match url.strip_prefix(lb) {
            Some(path) => format!("{}{path}", self.base),
            None => url.to_owned(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("replica exited with {status}:\n{}", self.log());
            }
            if let Ok(response) = reqwest::get(self.url("/healthz")).await
                && response.status() == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("replica not healthy within 60 s:\n{}", self.log());
    }

    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }
}

fn storage_config(settings: &PostgresSettings) -> Value {
    let host = match &settings.host {
        PostgresHost::Tcp(host) => host.clone(),
        PostgresHost::Socket(dir) => dir.display().to_string(),
    };
    json!({
        "host": host,
        "port": settings.port,
        "database": settings.database,
        "user": settings.user,
        "password": format!("${PASSWORD_ENV}"),
        "ssl": {"mode": "disable"},
        "maxOpenConns": 4,
    })
}

fn config(settings: &PostgresSettings) -> Value {
    json!({
        "issuer": ISSUER,
        "storage": {"type": "postgres", "config": storage_config(settings)},
        "web": {"http": "127.0.0.1:0"},
        "logger": {"level": "debug"},
        "expiry": {"refreshTokens": {"reuseInterval": "0s"}},
        "staticClients": [{
            "id": CLIENT_ID,
            "name": "Example App",
            "secret": CLIENT_SECRET,
            "redirectURIs": [REDIRECT_URI]
        }],
        "enablePasswordDB": true,
        "staticPasswords": [{
            "email": "admin@example.com",
            "hash": PASSWORD_HASH,
            "username": "admin",
            "userID": "08a8684b-db88-4b73-90a9-3cd1661f5466"
        }]
    })
}

/// Logs in through `replica`'s pages and returns the authorization code. The
/// approval page appears on the first login only: the consent it stores is
/// read by every replica.
async fn login(replica: &Replica) -> String {
    let browser = Browser::new(&replica.base);
    let auth = format!(
        "{}?client_id={CLIENT_ID}&redirect_uri={}&response_type=code&scope={}&state=st4te",
        replica.url("/auth"),
        urlencode(REDIRECT_URI),
        urlencode("openid email offline_access"),
    );
    let (at, status, form) = browser.follow(&auth).await.page();
    assert_eq!(status, 200, "password form expected at {at}:\n{form}");
    let csrf = input_value(&form, "csrf_token");
    let posted = browser
        .post_form(
            &replica.local(&form_action(&form)),
            &[
                ("login", "admin@example.com"),
                ("password", "password"),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    assert_eq!(posted.status(), 303, "login accepted");
    let next = location(&posted);
    if next.starts_with(REDIRECT_URI) {
        return query_param(&next, "code").unwrap();
    }
    let (at, status, approval) = browser
        .follow(&replica.local(&location(&posted)))
        .await
        .page();
    assert_eq!(status, 200, "approval page at {at}:\n{approval}");
    let csrf = input_value(&approval, "csrf_token");
    let approved = browser
        .post_form(
            &replica.local(&form_action(&approval)),
            &[("approval", "approve"), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(approved.status(), 303);
    let back = location(&approved);
    assert!(back.starts_with(REDIRECT_URI), "{back}");
    query_param(&back, "code").unwrap()
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

async fn token(replica: &Replica, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(replica.url("/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn exchange(replica: &Replica, code: &str) -> Value {
    let (status, body) = token(
        replica,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
        ],
    )
    .await;
    assert_eq!(status, 200, "code exchange: {body}");
    body
}

async fn refresh(replica: &Replica, refresh_token: &str) -> (StatusCode, Value) {
    token(
        replica,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

fn refresh_token_of(body: &Value) -> String {
    body["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no refresh token in {body}"))
        .to_owned()
}

/// The ID token's signature checks out against `replica`'s `/keys`.
async fn verify_id_token(replica: &Replica, body: &Value) {
    let id_token = body["id_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(id_token).unwrap();
    let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(replica.url("/keys"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = header.kid.clone().unwrap();
    let jwk = jwks
        .find(&kid)
        .unwrap_or_else(|| panic!("key {kid} not served by {}", replica.base));
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&[CLIENT_ID]);
    validation.set_issuer(&[ISSUER]);
    jsonwebtoken::decode::<Value>(id_token, &key, &validation)
        .unwrap_or_else(|e| panic!("ID token does not verify at {}: {e}", replica.base));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_one_database_act_as_one_provider() {
    let Some(base) = test_db::from_env() else {
        eprintln!("{} is not set: no PostgreSQL to test against", test_db::ENV);
        return;
    };
    // The test helpers use the synchronous driver: off the async workers.
    let settings = {
        let base = base.clone();
        tokio::task::spawn_blocking(move || test_db::create(&base))
            .await
            .unwrap()
            .unwrap()
    };
    let password = settings.password.clone().unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config(&settings).to_string()).unwrap();
    let start = |name: &str| Replica::start(&config_path, dir.path().join(name), &password);

    // Both start on the empty database at once: the migration runs exactly once
    // and neither fails.
    let mut a = start("a-1.log");
    let mut b = start("b-1.log");
    a.wait_ready().await;
    b.wait_ready().await;

    // Login on A, code exchange on B; each replica verifies the other's token.
    let code = login(&a).await;
    let tokens = exchange(&b, &code).await;
    verify_id_token(&a, &tokens).await;
    verify_id_token(&b, &tokens).await;
    // The code is single use across replicas.
    let (status, body) = token(
        &a,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
        ],
    )
    .await;
    assert_eq!(status, 400, "code reused on the other replica: {body}");
    // RFC 6749 §4.1.2: the replay revoked what the first exchange issued, and
    // the other replica sees it.
    let (status, body) = refresh(&b, &refresh_token_of(&tokens)).await;
    assert_eq!(status, 400, "refresh token of a replayed code: {body}");
    // A fresh login for the refresh rounds.
    let code = login(&b).await;
    // (The consent given on replica a spared the approval page on b.)
    let tokens = exchange(&a, &code).await;

    // Refresh, alternating replicas; every rotation is seen by the other one.
    let mut current = refresh_token_of(&tokens);
    let mut previous = String::new();
    for round in 0..6 {
        let replica = if round % 2 == 0 { &a } else { &b };
        let (status, body) = refresh(replica, &current).await;
        assert_eq!(status, 200, "refresh {round} on {}: {body}", replica.base);
        verify_id_token(if round % 2 == 0 { &b } else { &a }, &body).await;
        previous = std::mem::replace(&mut current, refresh_token_of(&body));
        assert_ne!(previous, current, "rotated");
    }
    // The last rotation happened on B; the replaced token is replayed on A:
    // refused, and the whole family is revoked on both replicas.
    let (status, body) = refresh(&a, &previous).await;
    assert_eq!(status, 400, "replay accepted: {body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
    for replica in [&a, &b] {
        let (status, body) = refresh(replica, &current).await;
        assert_eq!(
            status, 400,
            "family not revoked on {}: {body}",
            replica.base
        );
    }

    // 16 concurrent refreshes of one token, 8 on each replica: exactly one
    // rotates it; every other gets 400 (never 500, never a second new token).
    // Requests that arrive after the rotation present a used token, which is a
    // replay and revokes the family, so the winner's token is not used further.
    let contested = refresh_token_of(&exchange(&a, &login(&b).await).await);
    let attempts = (0..16).map(|i| {
        let replica = if i % 2 == 0 { &a } else { &b };
        refresh(replica, &contested)
    });
    let results = futures_join_all(attempts).await;
    let winners = results.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(winners, 1, "winners: {results:?}");
    for (status, body) in &results {
        if *status != 200 {
            assert_eq!(*status, 400, "loser must get 400: {body}");
            assert!(body.get("refresh_token").is_none(), "{body}");
        }
    }

    // Two more families: one never refreshed, one rotated once.
    let untouched = refresh_token_of(&exchange(&b, &login(&a).await).await);
    let rotated = refresh_token_of(&exchange(&a, &login(&b).await).await);
    let (status, body) = refresh(&b, &rotated).await;
    assert_eq!(status, 200, "{body}");
    let rotated = refresh_token_of(&body);

    // Restart both: every live refresh token keeps working, on either replica.
    let log_a = a.stop();
    let log_b = b.stop();
    for log in [&log_a, &log_b] {
        assert!(!log.contains(&password), "a log shows the password:\n{log}");
        assert!(
            log.contains(&settings.database),
            "the log does not name the database:\n{log}"
        );
    }
    let mut a = start("a-2.log");
    let mut b = start("b-2.log");
    a.wait_ready().await;
    b.wait_ready().await;
    let (status, body) = refresh(&a, &untouched).await;
    assert_eq!(status, 200, "untouched family after restart: {body}");
    let (status, body) = refresh(&b, &refresh_token_of(&body)).await;
    assert_eq!(status, 200, "its rotation on the other replica: {body}");
    let (status, body) = refresh(&b, &rotated).await;
    assert_eq!(status, 200, "rotated family after restart: {body}");
    let (status, body) = refresh(&a, &refresh_token_of(&body)).await;
    assert_eq!(status, 200, "its rotation on the other replica: {body}");

    a.stop();
    b.stop();
    tokio::task::spawn_blocking(move || test_db::drop(&base, &settings.database))
        .await
        .unwrap()
        .unwrap();
}

/// Runs the futures concurrently on this task (no extra dependency).
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let handles: Vec<_> = futures.collect();
    let mut pinned: Vec<_> = handles.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// A TCP relay to the database that the test can cut, as a network failure or
/// a database restart would.
struct Relay {
    port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sessions: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn start(upstream: (String, u16)) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sessions = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (flag, list) = (down.clone(), sessions.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if flag.load(Ordering::SeqCst) {
                    continue; // dropped: connection closed at once
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                list.lock().unwrap().push(task.abort_handle());
            }
        });
        Self {
            port,
            down,
            sessions,
        }
    }

    fn cut(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for session in self.sessions.lock().unwrap().drain(..) {
            session.abort();
        }
    }

    fn restore(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_database_gives_503_and_recovers_without_restart() {
    let Some(base) = test_db::from_env() else {
        eprintln!("{} is not set: no PostgreSQL to test against", test_db::ENV);
        return;
    };
    let PostgresHost::Tcp(host) = base.host.clone() else {
        eprintln!("the relay needs a TCP database address");
        return;
    };
    let settings = {
        let base = base.clone();
        tokio::task::spawn_blocking(move || test_db::create(&base))
            .await
            .unwrap()
            .unwrap()
    };
    let relay = Relay::start((host, settings.port)).await;
    let password = settings.password.clone().unwrap_or_default();
    let mut storage = storage_config(&settings);
    storage["host"] = json!("127.0.0.1");
    storage["port"] = json!(relay.port);
    storage["password"] = json!(password);
    storage["connectionTimeout"] = json!(2);
    let server = crate::support::TestServer::start_at_issuer(|issuer| {
        let mut config = config(&settings);
        config["issuer"] = json!(issuer);
        config["storage"]["config"] = storage;
        config
    })
    .await;
    let refresh_unknown = || async {
        let response = reqwest::Client::new()
            .post(server.url("/dex/token"))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "Cg5ub3QtYS10b2tlbhIEbm9uZQ"),
            ])
            .send()
            .await
            .unwrap();
        let status = response.status();
        let retry_after = response.headers().get("retry-after").cloned();
        (status, retry_after, response.json::<Value>().await.unwrap())
    };
    let (status, _, body) = refresh_unknown().await;
    assert_eq!(status, 400, "database up: {body}");

    relay.cut();
    let (status, retry_after, body) = refresh_unknown().await;
    assert_eq!(status, 503, "database down: {body}");
    assert_eq!(body["error"], "server_error", "{body}");
    assert!(retry_after.is_some(), "no Retry-After");
    let report = server.state.health.latest();
    assert!(!report.healthy, "readiness still green: {report:?}");
    let error = report.storage.error.clone().unwrap_or_default();
    assert!(error.contains(&settings.database), "{error}");
    assert!(!error.contains(&password), "{error}");
    let health = reqwest::get(server.url("/dex/healthz")).await.unwrap();
    assert_ne!(health.status(), 200);

    relay.restore();
    let (status, _, body) = refresh_unknown().await;
    assert_eq!(status, 400, "not recovered: {body}");
    // The next background check (every 15 s) turns readiness green again.
    let report = server
        .state
        .health
        .check(std::time::SystemTime::now())
        .await;
    assert!(report.healthy, "{report:?}");
    assert!(server.state.health.latest().healthy);

    server.stop().await;
    tokio::task::spawn_blocking(move || test_db::drop(&base, &settings.database))
        .await
        .unwrap()
        .unwrap();
}
