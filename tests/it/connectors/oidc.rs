//! The `oidc` connector on its own (no oxidex server) against the fake forge's
//! OpenID provider: discovery, PKCE and nonce, ID token and userinfo checks, claim
//! mapping and refresh, on a clock moved by hand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use oxidex::Clock;
use oxidex::connector::config::DecodeConfig;
use oxidex::connector::oidc::*;
use oxidex::connector::upstream;
use oxidex::connector::{CallbackConnector, ConnectorError, Identity, Scopes};
use oxidex_testkit::fake_forgejo::{FakeForgejo, FakeOptions, FakeUser, callback_query};
use serde_json::{Value, json};

const CALLBACK: &str = "https://idp.example/callback";

struct Setup {
    fake: FakeForgejo,
    conn: OidcConnector,
    now: Arc<Mutex<SystemTime>>,
}

async fn setup_with(options: FakeOptions, extra: Value) -> Setup {
    let fake = FakeForgejo::start_with(options).await.unwrap();
    let app = fake.add_app(CALLBACK);
    fake.add_user(
        FakeUser::new(42, "alice")
            .full_name("Alice Liddell")
            .team("infra", "Owners")
            .team("web", "Devs"),
    );
    let mut inactive = FakeUser::new(43, "bob");
    inactive.active = false;
    fake.add_user(inactive);
    let mut config = json!({
        "issuer": fake.issuer(),
        "clientID": app.client_id,
        "clientSecret": app.client_secret,
        "redirectURI": CALLBACK,
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let (parsed, _) = OidcConfig::parse("c", &config, CALLBACK).unwrap();
    let now = Arc::new(Mutex::new(SystemTime::now()));
    let handle = Arc::clone(&now);
    let clock: Clock = Arc::new(move || *handle.lock().unwrap());
    let conn = OidcConnector::new("up", parsed, clock).unwrap();
    Setup { fake, conn, now }
}

async fn setup(extra: Value) -> Setup {
    setup_with(FakeOptions::default(), extra).await
}

fn offline() -> Scopes {
    Scopes {
        offline_access: true,
        groups: true,
    }
}

/// Login URL → fake authorize → callback query, with the login's connector data.
async fn start_login(
    s: &Setup,
    user: &str,
    scopes: &Scopes,
) -> (String, Vec<u8>, Vec<(String, String)>) {
    s.conn.prepare().await.unwrap();
    let (url, data) = s.conn.login_url(scopes, CALLBACK, "req-9").unwrap();
    let location = s.fake.approve(&url, user).unwrap();
    (url, data.unwrap(), callback_query(&location))
}

async fn login(s: &Setup, user: &str, scopes: &Scopes) -> Result<Identity, ConnectorError> {
    let (_, data, query) = start_login(s, user, scopes).await;
    s.conn.handle_callback(scopes, Some(&data), &query).await
}

#[tokio::test]
async fn login_url_needs_discovery_first() {
    let s = setup(json!({})).await;
    let e = s
        .conn
        .login_url(&Scopes::default(), CALLBACK, "r")
        .unwrap_err();
    assert!(e.to_string().contains("prepare()"), "{e}");
    s.conn.prepare().await.unwrap();
    assert!(s.conn.login_url(&Scopes::default(), CALLBACK, "r").is_ok());
}

#[tokio::test]
async fn unreachable_issuer_is_a_clear_upstream_error() {
    let (parsed, _) = OidcConfig::parse(
        "c",
        &json!({"issuer": "http://127.0.0.1:9", "clientID": "x", "redirectURI": CALLBACK}),
        CALLBACK,
    )
    .unwrap();
    let conn = OidcConnector::new("up", parsed, Arc::new(SystemTime::now)).unwrap();
    let e = conn.prepare().await.unwrap_err();
    assert!(matches!(e, ConnectorError::Upstream(_)));
    assert!(
        e.to_string()
            .contains("discovery of \"http://127.0.0.1:9\" failed"),
        "{e}"
    );
}

#[tokio::test]
async fn login_uses_pkce_and_nonce_and_maps_claims() {
    let s = setup(json!({})).await;
    let (url, data, query) = start_login(&s, "alice", &offline()).await;
    let q: HashMap<String, String> = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(!q["code_challenge"].is_empty() && !q["nonce"].is_empty());
    assert_eq!(q["scope"], "openid profile email");
    assert_eq!(q["state"], "req-9");
    assert_eq!(
        q["prompt"], "consent",
        "offline access asks for consent as Dex"
    );
    let pending: Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(pending["nonce"], q["nonce"].as_str());

    let id = s
        .conn
        .handle_callback(&offline(), Some(&data), &query)
        .await
        .unwrap();
    assert_eq!(id.user_id, "42");
    assert_eq!(id.username, "Alice Liddell");
    assert_eq!(id.preferred_username, "alice");
    assert_eq!(id.email, "alice@example.test");
    assert!(id.email_verified);
    assert!(id.groups.is_empty(), "groups need insecureEnableGroups");
    let stored: Value = serde_json::from_slice(id.connector_data.as_deref().unwrap()).unwrap();
    assert!(
        stored["refreshToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
}

#[tokio::test]
async fn wrong_pkce_verifier_or_nonce_fails_the_login() {
    let s = setup(json!({})).await;
    let (_, data, query) = start_login(&s, "alice", &Scopes::default()).await;
    let mut pending: Value = serde_json::from_slice(&data).unwrap();
    pending["pkceVerifier"] = json!("x".repeat(43));
    let tampered = serde_json::to_vec(&pending).unwrap();
    let e = s
        .conn
        .handle_callback(&Scopes::default(), Some(&tampered), &query)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("failed PKCE code challenge"), "{e}");

    let (_, data, query) = start_login(&s, "alice", &Scopes::default()).await;
    let mut pending: Value = serde_json::from_slice(&data).unwrap();
    pending["nonce"] = json!("another-nonce");
    let tampered = serde_json::to_vec(&pending).unwrap();
    let e = s
        .conn
        .handle_callback(&Scopes::default(), Some(&tampered), &query)
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::Upstream(_)));
    assert!(e.to_string().to_lowercase().contains("nonce"), "{e}");

    let e = s
        .conn
        .handle_callback(&Scopes::default(), None, &query)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("login state"), "{e}");
}

#[tokio::test]
async fn groups_claim_and_userinfo() {
    let s = setup(
        json!({"scopes": ["profile", "email", "groups"], "insecureEnableGroups": true,
                          "getUserInfo": true}),
    )
    .await;
    s.fake.clear_requests();
    let id = login(&s, "alice", &Scopes::default()).await.unwrap();
    assert_eq!(id.groups, ["infra", "web", "infra:owners", "web:devs"]);
    assert!(
        s.fake
            .requests()
            .iter()
            .any(|r| r == "GET /login/oauth/userinfo")
    );

    let s = setup(
        json!({"scopes": ["profile", "email", "groups"], "insecureEnableGroups": true,
                          "allowedGroups": ["web:devs"]}),
    )
    .await;
    let id = login(&s, "alice", &Scopes::default()).await.unwrap();
    assert_eq!(id.groups, ["web:devs"]);
    let s = setup(
        json!({"scopes": ["profile", "email", "groups"], "insecureEnableGroups": true,
                          "allowedGroups": ["ops"]}),
    )
    .await;
    let e = login(&s, "alice", &Scopes::default()).await.unwrap_err();
    assert!(
        matches!(e, ConnectorError::NotInRequiredGroups { .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn missing_email_verified_follows_dex() {
    // Forgejo omits email_verified for inactive users.
    let s = setup(json!({})).await;
    let e = login(&s, "bob", &Scopes::default()).await.unwrap_err();
    assert!(
        e.to_string().contains("missing \"email_verified\" claim"),
        "{e}"
    );
    let s = setup(json!({"insecureSkipEmailVerified": true})).await;
    let id = login(&s, "bob", &Scopes::default()).await.unwrap();
    assert!(id.email_verified);
    assert_eq!(id.username, "bob", "Forgejo's name falls back to the login");
}

#[tokio::test]
async fn user_id_and_name_keys() {
    let s = setup(json!({"userIDKey": "preferred_username", "userNameKey": "email"})).await;
    let id = login(&s, "alice", &Scopes::default()).await.unwrap();
    assert_eq!(
        (id.user_id.as_str(), id.username.as_str()),
        ("alice", "alice@example.test")
    );
}

#[tokio::test]
async fn old_forgejo_issuer_with_trailing_slash() {
    let options = FakeOptions {
        issuer_trailing_slash: true,
        ..FakeOptions::default()
    };
    let s = setup_with(options, json!({})).await;
    assert!(s.fake.issuer().ends_with('/'));
    assert_eq!(
        login(&s, "alice", &Scopes::default())
            .await
            .unwrap()
            .user_id,
        "42"
    );
}

#[tokio::test]
async fn refresh_rotates_and_concurrent_callers_share_it() {
    let s = setup(json!({"scopes": ["profile", "email", "groups"], "insecureEnableGroups": true}))
        .await;
    let first = login(&s, "alice", &offline()).await.unwrap();
    s.fake.add_user(
        FakeUser::new(42, "alice")
            .full_name("Alice L.")
            .team("web", "Devs"),
    );
    s.fake.clear_requests();
    let sc = offline();
    let (a, b) = tokio::join!(
        s.conn.refresh(&sc, first.clone()),
        s.conn.refresh(&sc, first.clone())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let posts = s
        .fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST /login/oauth/access_token"))
        .count();
    assert_eq!(posts, 1);
    assert_eq!(a.connector_data, b.connector_data);
    assert_ne!(
        a.connector_data, first.connector_data,
        "the rotated token is handed back"
    );
    assert_eq!(a.username, "Alice L.");
    assert_eq!(a.groups, ["web", "web:devs"]);
    assert_eq!(a.user_id, "42");

    let again = s.conn.refresh(&sc, a.clone()).await.unwrap();
    assert_ne!(again.connector_data, a.connector_data);

    *s.now.lock().unwrap() += upstream::REFRESH_RESULT_TTL + Duration::from_secs(1);
    let e = s.conn.refresh(&sc, first).await.unwrap_err();
    assert!(matches!(e, ConnectorError::Refresh(_)), "{e:?}");
    assert!(e.to_string().contains("token was already used"), "{e}");

    let e = s
        .conn
        .refresh(
            &sc,
            Identity {
                connector_data: None,
                ..again
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::Refresh(_)), "{e:?}");
}
