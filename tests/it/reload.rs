//! Configuration reload (SIGHUP): what may change changes, what needs a restart
//! is refused, an invalid configuration is refused as a whole with every
//! problem, and requests in flight finish with the configuration they started
//! with.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use oxidex::server::{self, ReloadError};
use serde_json::{Value, json};

use crate::shutdown::{CLIENT_REDIRECT, slow_forge};
use crate::support::{TestServer, base_config, settings_from};

const SECOND_REDIRECT: &str = "http://127.0.0.1:6666/cb";

fn config_with_passwords(issuer: &str, hash: &str) -> Value {
    let mut config = base_config(issuer);
    config["enablePasswordDB"] = json!(true);
    config["oauth2"] = json!({"passwordConnector": "local", "skipApprovalScreen": true});
    config["staticPasswords"] = json!([{
        "email": "admin@example.com", "hash": hash, "username": "admin",
        "userID": "08a8684b-db88-4b73-90a9-3cd1661f5466"
    }]);
    config
}

fn with_second_client(mut config: Value) -> Value {
    config["staticClients"].as_array_mut().unwrap().push(json!({
        "id": "second-app", "name": "Second", "secret": "c2Vjb25kLWFwcC1zZWNyZXQ",
        "redirectURIs": [SECOND_REDIRECT]
    }));
    config
}

/// `GET /auth/mock` for `client_id`: 302 when the client is known.
async fn auth_status(server: &TestServer, client_id: &str, redirect_uri: &str) -> u16 {
    server
        .http
        .get(server.url("/dex/auth/mock"))
        .query(&[
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("response_type", "code"),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn password_status(server: &TestServer, password: &str) -> u16 {
    server
        .http
        .post(server.url("/dex/token"))
        .basic_auth("example-app", Some("ZXhhbXBsZS1hcHAtc2VjcmV0"))
        .form(&[
            ("grant_type", "password"),
            ("username", "admin@example.com"),
            ("password", password),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// bcrypt (cost 10) of "new-password".
const NEW_PASSWORD_HASH: &str = "$2b$10$FleC02UPCmlboaJ51uzH1eCuKJbkSQPjDE76rKg1VagwTFKrTVIHu";

#[tokio::test]
async fn reload_changes_clients_and_passwords_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut issuer = String::new();
    let server = TestServer::start_at_issuer(|i| {
        issuer = i.to_owned();
        config_with_passwords(i, crate::login::PASSWORD_HASH)
    })
    .await;
    assert_eq!(
        auth_status(&server, "second-app", SECOND_REDIRECT).await,
        404
    );
    assert_eq!(password_status(&server, "password").await, 200);

    let new = with_second_client(config_with_passwords(&issuer, NEW_PASSWORD_HASH));
    server::reload(&server.state, settings_from(&new, dir.path())).unwrap();

    assert_eq!(
        auth_status(&server, "second-app", SECOND_REDIRECT).await,
        302
    );
    assert_eq!(
        auth_status(&server, "example-app", CLIENT_REDIRECT).await,
        302
    );
    assert_eq!(password_status(&server, "password").await, 401);
    assert_eq!(password_status(&server, "new-password").await, 200);
}

#[tokio::test]
async fn reload_refuses_what_needs_a_restart_and_keeps_running_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut issuer = String::new();
    let server = TestServer::start_at_issuer(|i| {
        issuer = i.to_owned();
        base_config(i)
    })
    .await;
    let mut new = with_second_client(base_config(&issuer));
    new["issuer"] = json!("http://127.0.0.1:1/other");
    new["storage"] = json!({"type": "sqlite3", "config": {"file": dir.path().join("x.db")}});
    new["web"]["http"] = json!("127.0.0.1:1");
    new["telemetry"] = json!({"http": "127.0.0.1:2"});
    new["logger"] = json!({"format": "json"});
    let error = server::reload(&server.state, settings_from(&new, dir.path())).unwrap_err();
    let ReloadError::NeedsRestart(fields) = &error else {
        panic!("{error}");
    };
    assert_eq!(
        fields,
        &["issuer", "storage", "web", "telemetry", "logger.format"],
        "{error}"
    );
    // Nothing of the refused config applies, not even the part that could.
    assert_eq!(
        auth_status(&server, "second-app", SECOND_REDIRECT).await,
        404
    );
    assert_eq!(
        auth_status(&server, "example-app", CLIENT_REDIRECT).await,
        302
    );
}

#[tokio::test]
async fn reload_refuses_an_unpreparable_config_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let mut issuer = String::new();
    let server = TestServer::start_at_issuer(|i| {
        issuer = i.to_owned();
        base_config(i)
    })
    .await;
    let mut new = with_second_client(base_config(&issuer));
    new["frontend"] = json!({"dir": dir.path().join("no-such-theme")});
    new["connectors"] = json!([
        {"type": "mockCallback", "id": "mock", "name": "Mock"},
        {"type": "gitea", "id": "forge", "name": "Forge", "config": {
            "baseURL": "http://127.0.0.1:9", "clientID": "x", "clientSecret": "y",
            "redirectURI": format!("{issuer}/callback"),
            "rootCA": dir.path().join("missing-ca.pem")
        }}
    ]);
    let error = match oxidex::config::load_file(
        &{
            let path = dir.path().join("bad.json");
            std::fs::write(&path, serde_json::to_vec(&new).unwrap()).unwrap();
            path
        },
        &Default::default(),
    ) {
        // The config pipeline may find the problems itself…
        Err(error) => error.to_string(),
        // …or preparing the connectors and templates does.
        Ok(loaded) => server::reload(&server.state, loaded.settings)
            .unwrap_err()
            .to_string(),
    };
    // Both problems in one report.
    assert!(error.contains("connectors[1].config.rootCA"), "{error}");
    assert!(error.contains("frontend.dir"), "{error}");
    assert_eq!(
        auth_status(&server, "second-app", SECOND_REDIRECT).await,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_in_flight_finishes_with_the_config_it_started_with() {
    let (forge, exchanges) = slow_forge(Duration::from_millis(800)).await;
    let dir = tempfile::tempdir().unwrap();
    let make = |issuer: &str, with_forge: bool| {
        let mut config = base_config(issuer);
        config["oauth2"] = json!({"skipApprovalScreen": true});
        if with_forge {
            config["connectors"] = json!([{
                "type": "gitea", "id": "forge", "name": "Forge",
                "config": {
                    "baseURL": forge, "clientID": "oxidex", "clientSecret": "forge-secret",
                    "redirectURI": format!("{issuer}/callback")
                }
            }]);
        }
        config
    };
    let mut issuer = String::new();
    let server = TestServer::start_at_issuer(|i| {
        issuer = i.to_owned();
        make(i, true)
    })
    .await;
    let started = server
        .http
        .get(format!("{issuer}/auth/forge"))
        .query(&[
            ("client_id", "example-app"),
            ("redirect_uri", CLIENT_REDIRECT),
            ("response_type", "code"),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 302);
    let upstream = url::Url::parse(started.headers()["location"].to_str().unwrap()).unwrap();
    let state = upstream
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let http = server.http.clone();
    let callback = format!("{issuer}/callback?code=c&state={state}");
    let in_flight = tokio::spawn(async move { http.get(callback).send().await.unwrap() });
    let deadline = Instant::now() + Duration::from_secs(10);
    while exchanges.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the callback never reached the forge"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The forge connector goes away while its callback is in flight.
    server::reload(
        &server.state,
        settings_from(&make(&issuer, false), dir.path()),
    )
    .unwrap();
    let answered = in_flight.await.unwrap();
    assert_eq!(answered.status(), 303);
    let location = answered.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(CLIENT_REDIRECT) && location.contains("code="),
        "{location}"
    );
    // New requests see the new config.
    let gone = server
        .http
        .get(format!("{issuer}/auth/forge"))
        .query(&[
            ("client_id", "example-app"),
            ("redirect_uri", CLIENT_REDIRECT),
            ("response_type", "code"),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 400);
}

/// The binary: SIGHUP re-reads the file; a broken file is refused with a log
/// line and the running configuration keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_file_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let issuer = format!("http://127.0.0.1:{port}/dex");
    let mut config = base_config(&issuer);
    config["web"]["http"] = json!(format!("127.0.0.1:{port}"));
    let path = dir.path().join("config.json");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let log = dir.path().join("oxidex.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_oxidex"))
        .arg("serve")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = child.id().to_string();
    let _guard = Kill(&mut child);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let status = |client: &'static str, redirect: &'static str| {
        let (http, issuer) = (http.clone(), issuer.clone());
        async move {
            http.get(format!("{issuer}/auth/mock"))
                .query(&[
                    ("client_id", client),
                    ("redirect_uri", redirect),
                    ("response_type", "code"),
                    ("scope", "openid"),
                ])
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    let wait_for = |client: &'static str, redirect: &'static str, want: u16| async move {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let got = status(client, redirect).await;
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{client}: {got}, want {want}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    wait_for("example-app", CLIENT_REDIRECT, 302).await;
    assert_eq!(status("second-app", SECOND_REDIRECT).await, 404);

    std::fs::write(
        &path,
        serde_json::to_vec(&with_second_client(config.clone())).unwrap(),
    )
    .unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_for("second-app", SECOND_REDIRECT, 302).await;

    std::fs::write(&path, b"{\"issuer\": 7, \"storage\": {}}").unwrap();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("configuration reload refused")
    {
        assert!(Instant::now() < deadline, "no refusal logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still serving the last good configuration.
    assert_eq!(status("second-app", SECOND_REDIRECT).await, 302);
}
