//! Connectors from the config to the running server: every `connectors[].config`
//! is decoded and validated by the config loader, in the same report as the rest
//! and before storage or keys are touched; the server's injected clock is the one
//! the connectors use.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use oxidex::connector::kinds::KINDS;
use oxidex_testkit::fake_forgejo::{FakeForgejo, FakeUser};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::browser::{Browser, location, query_param};
use crate::support::{ManualClock, TestServer, settings_from};

const ISSUER: &str = "http://127.0.0.1:5556/dex";

/// Runs `oxidex <args>` to its end (killed after 60 s: a server that came up is
/// a failure here); returns the exit code and stderr.
fn run(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_oxidex"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A config with three connectors, two of them bad, and a SQLite file that cannot
/// be opened (its directory is a regular file).
fn write_config(dir: &std::path::Path, connectors: Value) -> std::path::PathBuf {
    let blocker = dir.join("not-a-directory");
    std::fs::write(&blocker, b"").unwrap();
    let config = json!({
        "issuer": ISSUER,
        "storage": {"type": "sqlite3", "config": {"file": blocker.join("oxidex.db")}},
        "web": {"http": "127.0.0.1:0"},
        "connectors": connectors,
    });
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

fn two_bad_connectors() -> Value {
    json!([
        {"type": "gitea", "id": "forgejo", "name": "Forgejo", "config": {
            "baseURL": "https://git.example.org", "clientSecret": "s",
            "redirectURI": format!("{ISSUER}/callback")}},
        {"type": "mockCallback", "id": "mock", "name": "Mock"},
        {"type": "oidc", "id": "up", "name": "Upstream", "config": {
            "clientID": "oxidex", "redirectURI": "https://elsewhere.example/callback"}},
    ])
}

#[track_caller]
fn assert_reports_both_bad_connectors(code: Option<i32>, stderr: &str) {
    assert_eq!(code, Some(2), "{stderr}");
    for problem in [
        "connectors[0].config.clientID: required",
        "connectors[2].config.issuer: required",
        "connectors[2].config.redirectURI: \"https://elsewhere.example/callback\" is not this issuer's callback URL",
    ] {
        assert!(stderr.contains(problem), "{problem} missing in:\n{stderr}");
    }
    assert!(!stderr.contains("connectors[1]"), "{stderr}");
}

#[test]
fn serve_reports_every_bad_connector_before_opening_storage() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), two_bad_connectors());
    let (code, stderr) = run(&["serve".as_ref(), path.as_os_str()]);
    assert_reports_both_bad_connectors(code, &stderr);
    assert!(
        !stderr.contains("storage") && !stderr.contains("not-a-directory"),
        "storage was opened before the config was known good:\n{stderr}"
    );
}

#[test]
fn check_config_reports_every_bad_connector_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), two_bad_connectors());
    let (code, stderr) = run(&["check-config".as_ref(), path.as_os_str()]);
    assert_reports_both_bad_connectors(code, &stderr);
}

#[test]
fn unknown_connector_type_lists_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        json!([{"type": "forgejo", "id": "f", "name": "F"}]),
    );
    let (code, stderr) = run(&["check-config".as_ref(), path.as_os_str()]);
    assert_eq!(code, Some(2), "{stderr}");
    let line = stderr
        .lines()
        .find(|line| line.contains("connectors[0].type: unknown connector type \"forgejo\""))
        .unwrap_or_else(|| panic!("no unknown-type problem in:\n{stderr}"));
    for kind in KINDS {
        assert!(line.contains(kind.name), "{} not listed: {line}", kind.name);
    }
}

/// The connectors run on `start_services`' clock: an upstream access token the
/// injected clock says has expired is refreshed upstream, though the wall clock
/// says it is fresh.
#[tokio::test]
async fn connectors_use_the_injected_clock() {
    // Forgejo's default access token lifetime: an hour.
    let forge = FakeForgejo::start().await.unwrap();
    forge.add_user(FakeUser::new(7, "alice"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}/dex", listener.local_addr().unwrap());
    let app = forge.add_app(&format!("{issuer}/callback"));
    let redirect_uri = "http://127.0.0.1:3000/cb";
    let config = json!({
        "issuer": issuer,
        "storage": {"type": "memory"},
        "web": {"http": "127.0.0.1:0"},
        "oauth2": {"skipApprovalScreen": true},
        "staticClients": [{"id": "app", "name": "App", "secret": "app-secret",
                           "redirectURIs": [redirect_uri]}],
        "connectors": [{"type": "gitea", "id": "forgejo", "name": "Forgejo", "config": {
            "baseURL": forge.url(), "clientID": app.client_id,
            "clientSecret": app.client_secret, "redirectURI": format!("{issuer}/callback")}}]
    });
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_from(&config, dir.path());
    let clock = ManualClock::at(SystemTime::now());
    let server = TestServer::start_on(listener, settings, clock.clock(), Some(dir)).await;

    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", "app")
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid offline_access")
        .append_pair("state", "s")
        .finish();
    let browser = Browser::new(&server.base());
    let upstream = browser
        .follow(&format!("{issuer}/auth?{query}"))
        .await
        .left();
    let back = forge.approve(&upstream, "alice").unwrap();
    let callback = browser.http.get(back).send().await.unwrap();
    let code = query_param(&location(&callback), "code").unwrap();
    let token = |form: Vec<(&'static str, String)>| {
        let http = reqwest::Client::new();
        let url = format!("{issuer}/token");
        async move {
            let response = http
                .post(url)
                .basic_auth("app", Some("app-secret"))
                .form(&form)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, tokens) = token(vec![
        ("grant_type", "authorization_code".into()),
        ("code", code),
        ("redirect_uri", redirect_uri.into()),
    ])
    .await;
    assert_eq!(status, 200, "{tokens}");
    let token_posts = || {
        forge
            .requests()
            .iter()
            .filter(|r| r.starts_with("POST /login/oauth/access_token"))
            .count()
    };
    assert_eq!(token_posts(), 1, "the code exchange");

    clock.advance(Duration::from_secs(2 * 3600));
    let (status, refreshed) = token(vec![
        ("grant_type", "refresh_token".into()),
        (
            "refresh_token",
            tokens["refresh_token"].as_str().unwrap().into(),
        ),
    ])
    .await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(
        token_posts(),
        2,
        "two hours on the injected clock: the upstream token has expired and is refreshed"
    );
    server.stop().await;
}
