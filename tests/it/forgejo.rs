//! The `gitea` connector through oxidex's HTTP flow, against the in-process
//! Forgejo stand-in (`oxidex_testkit::fake_forgejo`): login with groups,
//! refreshes that spend Forgejo's rotating refresh tokens, a user outside the
//! required org, and the upstream app deleted. The same scenarios run against a
//! real forge in `checks/forgejo/e2e.sh`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oxidex_testkit::fake_forgejo::{FakeApp, FakeForgejo, FakeOptions, FakeUser};
use serde_json::{Value, json};

use crate::browser::{Browser, location, query_param};
use crate::support::TestServer;

const CLIENT_ID: &str = "grafana";
const CLIENT_SECRET: &str = "grafana-secret";
const REDIRECT_URI: &str = "http://127.0.0.1:3000/login/generic_oauth";

struct Setup {
    server: TestServer,
    forge: FakeForgejo,
    app: FakeApp,
    _secrets: tempfile::TempDir,
}

async fn setup() -> Setup {
    let forge = FakeForgejo::start_with(FakeOptions {
        // Shorter than the connector's 10 s reuse margin: every refresh goes upstream.
        access_token_lifetime: Duration::from_secs(5),
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    forge.add_user(
        FakeUser::new(1001, "alice")
            .full_name("Alice Liddell")
            .team("oxorg", "Devs"),
    );
    forge.add_user(FakeUser::new(1002, "bob").team("elsewhere", "Owners"));
    let secrets = tempfile::tempdir().unwrap();
    let mut app = None;
    let server = TestServer::start_at_issuer(|issuer| {
        let registered = forge.add_app(&format!("{issuer}/callback"));
        let secret_file = secrets.path().join("forgejo-client-secret");
        std::fs::write(&secret_file, format!("{}\n", registered.client_secret)).unwrap();
        let config = json!({
            "issuer": issuer,
            "storage": {"type": "memory"},
            "web": {"http": "127.0.0.1:0"},
            "oauth2": {"skipApprovalScreen": true},
            "staticClients": [{
                "id": CLIENT_ID, "name": "Grafana", "secret": CLIENT_SECRET,
                "redirectURIs": [REDIRECT_URI]
            }],
            "connectors": [{
                "type": "gitea", "id": "forgejo", "name": "Forgejo",
                "config": {
                    "baseURL": forge.url(),
                    "clientID": registered.client_id,
                    "clientSecretFile": secret_file,
                    "redirectURI": format!("{issuer}/callback"),
                    "orgs": [{"name": "oxorg", "teams": ["Devs"]}]
                }
            }]
        });
        app = Some(registered);
        config
    })
    .await;
    Setup {
        server,
        forge,
        app: app.unwrap(),
        _secrets: secrets,
    }
}

fn auth_url(server: &TestServer) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid email profile groups offline_access")
        .append_pair("state", "st4te")
        .finish();
    format!("{}/auth?{query}", server.issuer())
}

/// /auth → Forgejo's authorize (approved for `login`) → /callback; returns the
/// final response from oxidex's callback.
async fn login_as(setup: &Setup, login: &str) -> reqwest::Response {
    let browser = Browser::new(&setup.server.base());
    let upstream = browser.follow(&auth_url(&setup.server)).await.left();
    assert!(
        upstream.starts_with(&setup.forge.url()),
        "sent to Forgejo: {upstream}"
    );
    let back = setup.forge.approve(&upstream, login).unwrap();
    browser.http.get(back).send().await.unwrap()
}

async fn token(server: &TestServer, form: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/token", server.issuer()))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(form)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn gitea_login_groups_refresh_rotation_and_revoked_app() {
    let setup = setup().await;
    let callback = login_as(&setup, "alice").await;
    assert_eq!(callback.status(), 303);
    let client_redirect = location(&callback);
    assert!(
        client_redirect.starts_with(REDIRECT_URI),
        "{client_redirect}"
    );
    assert_eq!(query_param(&client_redirect, "state").unwrap(), "st4te");
    let code = query_param(&client_redirect, "code").unwrap();

    let (status, tokens) = token(
        &setup.server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let claims = payload(tokens["id_token"].as_str().unwrap());
    assert_eq!(
        claims["sub"],
        oxidex::oidc::subject::encode_subject("1001", "forgejo")
    );
    assert_eq!(claims["name"], "Alice Liddell");
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["email"], "alice@example.test");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["groups"], json!(["oxorg", "oxorg:Devs"]));

    // Two refreshes, each spending Forgejo's rotating refresh token once.
    let mut refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    for round in 0..2 {
        let (status, refreshed) = token(
            &setup.server,
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
        assert_eq!(status, 200, "refresh {round}: {refreshed}");
        assert_eq!(
            payload(refreshed["id_token"].as_str().unwrap())["groups"],
            json!(["oxorg", "oxorg:Devs"])
        );
        refresh = refreshed["refresh_token"].as_str().unwrap().to_owned();
    }
    let upstream_refreshes = setup
        .forge
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST /login/oauth/access_token"))
        .count();
    assert_eq!(
        upstream_refreshes, 3,
        "one code exchange and two refreshes upstream"
    );

    // The app is deleted in Forgejo: the refresh cannot succeed ⇒ invalid_grant, not 500.
    setup.forge.delete_app(&setup.app.client_id);
    let (status, error) = token(
        &setup.server,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (400, Some("invalid_grant")),
        "{error}"
    );
    setup.server.stop().await;
}

#[tokio::test]
async fn user_outside_the_required_org_gets_a_403_page_and_no_code() {
    let setup = setup().await;
    let callback = login_as(&setup, "bob").await;
    assert_eq!(callback.status(), 403);
    assert!(callback.headers().get("location").is_none());
    let page = callback.text().await.unwrap();
    assert!(
        page.contains("not a member of any of the required groups"),
        "{page}"
    );
    setup.server.stop().await;
}
