//! The `gitea` connector on its own (no oxidex server) against the fake forge:
//! the login URL, identity mapping, teams paging, `orgs`, upstream errors and
//! refreshes with Forgejo's rotating refresh tokens, on a clock moved by hand.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use oxidex::Clock;
use oxidex::connector::config::DecodeConfig;
use oxidex::connector::gitea::*;
use oxidex::connector::upstream;
use oxidex::connector::{CallbackConnector, ConnectorError, Identity, Scopes};
use oxidex_testkit::fake_forgejo::{FakeApp, FakeForgejo, FakeOptions, FakeUser, callback_query};
use serde_json::{Value, json};

const CALLBACK: &str = "https://idp.example/dex/callback";

/// A clock the test moves by hand.
fn manual_clock() -> (Clock, Arc<Mutex<SystemTime>>) {
    let now = Arc::new(Mutex::new(SystemTime::now()));
    let handle = Arc::clone(&now);
    (Arc::new(move || *handle.lock().unwrap()), now)
}

struct Setup {
    fake: FakeForgejo,
    app: FakeApp,
    conn: GiteaConnector,
    config: GiteaConfig,
    now: Arc<Mutex<SystemTime>>,
}

async fn setup_with(options: FakeOptions, extra: Value) -> Setup {
    let fake = FakeForgejo::start_with(options).await.unwrap();
    let app = fake.add_app(CALLBACK);
    fake.add_user(
        FakeUser::new(42, "alice")
            .full_name("Alice Liddell")
            .team("infra", "Owners")
            .team("infra", "ops")
            .team("web", "devs"),
    );
    fake.add_user(
        FakeUser::new(43, "bob")
            .email("bob@example.test")
            .team("web", "devs"),
    );
    let mut config = json!({
        "baseURL": format!("{}/", fake.url()),
        "clientID": app.client_id,
        "clientSecret": app.client_secret,
        "redirectURI": CALLBACK,
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let (parsed, _) = GiteaConfig::parse("c", &config, CALLBACK).unwrap();
    let (clock, now) = manual_clock();
    let conn = GiteaConnector::new("forgejo", parsed.clone(), clock).unwrap();
    Setup {
        fake,
        app,
        conn,
        config: parsed,
        now,
    }
}

async fn setup(extra: Value) -> Setup {
    setup_with(FakeOptions::default(), extra).await
}

fn scopes(offline: bool, groups: bool) -> Scopes {
    Scopes {
        offline_access: offline,
        groups,
    }
}

async fn login(s: &Setup, user: &str, scopes: &Scopes) -> Result<Identity, ConnectorError> {
    let (url, data) = s.conn.login_url(scopes, CALLBACK, "req-1").unwrap();
    assert!(data.is_none());
    let location = s.fake.approve(&url, user).unwrap();
    let query = callback_query(&location);
    assert!(query.contains(&("state".into(), "req-1".into())));
    s.conn.handle_callback(scopes, None, &query).await
}

fn token_posts(fake: &FakeForgejo) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.starts_with("POST /login/oauth/access_token"))
        .count()
}

fn stored(identity: &Identity) -> Value {
    serde_json::from_slice(identity.connector_data.as_deref().unwrap()).unwrap()
}

#[tokio::test]
async fn login_url_has_dex_parameters_and_checks_the_callback() {
    let s = setup(json!({"scopes": ["read:user", "read:organization"]})).await;
    let (url, _) = s
        .conn
        .login_url(&Scopes::default(), CALLBACK, "st")
        .unwrap();
    let parsed = url::Url::parse(&url).unwrap();
    assert_eq!(
        parsed.path(),
        "/login/oauth/authorize",
        "baseURL's trailing slash is dropped"
    );
    let q: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    let expect = |k: &str, v: &str| assert!(q.contains(&(k.into(), v.into())), "{k}={v} in {q:?}");
    expect("client_id", &s.app.client_id);
    expect("redirect_uri", CALLBACK);
    expect("response_type", "code");
    expect("scope", "read:user read:organization");
    expect("state", "st");
    let e = s
        .conn
        .login_url(
            &Scopes::default(),
            "https://idp.example/dex/callback/forgejo",
            "st",
        )
        .unwrap_err();
    assert!(matches!(e, ConnectorError::Config { .. }), "{e}");
    assert!(e.to_string().contains("did not match"), "{e}");
}

#[tokio::test]
async fn callback_maps_the_identity_like_dex() {
    let s = setup(json!({})).await;
    let id = login(&s, "alice", &scopes(false, true)).await.unwrap();
    assert_eq!(id.user_id, "42");
    assert_eq!(id.username, "Alice Liddell");
    assert_eq!(id.preferred_username, "alice");
    assert_eq!(id.email, "alice@example.test");
    assert!(id.email_verified);
    assert!(
        id.groups.is_empty(),
        "no orgs and no loadAllGroups: no groups"
    );
    assert!(
        id.connector_data.is_none(),
        "no offline_access: nothing stored"
    );
    assert!(!s.fake.requests().iter().any(|r| r.contains("/teams")));

    // No full name: the email is the display name (Dex's only test).
    let id = login(&s, "bob", &scopes(true, false)).await.unwrap();
    assert_eq!(
        (id.user_id.as_str(), id.username.as_str()),
        ("43", "bob@example.test")
    );
    let data = stored(&id);
    assert!(data["accessToken"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(data["refreshToken"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(data["expiresAt"].as_u64().unwrap() > upstream::unix_seconds(SystemTime::now()));
}

#[tokio::test]
async fn use_login_as_id_takes_the_login() {
    let s = setup(json!({"useLoginAsID": true})).await;
    let id = login(&s, "alice", &Scopes::default()).await.unwrap();
    assert_eq!(id.user_id, "alice");
}

#[tokio::test]
async fn load_all_groups_gives_org_and_org_team_once_each() {
    let s = setup(json!({"loadAllGroups": true})).await;
    let id = login(&s, "alice", &scopes(false, true)).await.unwrap();
    assert_eq!(
        id.groups,
        ["infra", "infra:Owners", "infra:ops", "web", "web:devs"]
    );
}

#[tokio::test]
async fn teams_are_paged_fifty_at_a_time_until_x_total_count() {
    let s = setup(json!({"loadAllGroups": true})).await;
    let mut user = FakeUser::new(50, "carol");
    for i in 0..120 {
        user = user.team(&format!("org{}", i % 3), &format!("team{i}"));
    }
    s.fake.add_user(user);
    s.fake.clear_requests();
    let id = login(&s, "carol", &scopes(false, true)).await.unwrap();
    let pages: Vec<String> = s
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.contains("/api/v1/user/teams"))
        .collect();
    assert_eq!(
        pages,
        [
            "GET /api/v1/user/teams?page=1&limit=50",
            "GET /api/v1/user/teams?page=2&limit=50",
            "GET /api/v1/user/teams?page=3&limit=50",
        ],
        "stops after 120 of 120 without an extra empty page"
    );
    assert_eq!(id.groups.len(), 3 + 120);
    assert_eq!(
        &id.groups[..4],
        ["org0", "org0:team0", "org1", "org1:team1"]
    );
    assert!(id.groups.contains(&"org2:team119".to_owned()));
}

#[tokio::test]
async fn orgs_filter_keeps_listed_groups_and_refuses_non_members() {
    let s = setup(json!({"orgs": [{"name": "infra", "teams": ["ops"]}]})).await;
    // Groups are loaded for the filter even without the groups scope.
    let id = login(&s, "alice", &Scopes::default()).await.unwrap();
    assert_eq!(id.groups, ["infra", "infra:ops"]);

    // Dex's loophole, kept: any team of a listed org lets the user in.
    s.fake
        .add_user(FakeUser::new(44, "dave").team("infra", "interns"));
    let id = login(&s, "dave", &Scopes::default()).await.unwrap();
    assert_eq!(id.groups, ["infra"]);

    let e = login(&s, "bob", &Scopes::default()).await.unwrap_err();
    assert!(
        matches!(&e, ConnectorError::NotInRequiredGroups { user } if user == "bob"),
        "{e:?}"
    );
}

#[tokio::test]
async fn upstream_errors_on_callback_are_clear() {
    let s = setup(json!({})).await;
    let query = vec![
        ("error".to_owned(), "access_denied".to_owned()),
        (
            "error_description".to_owned(),
            "the user said no".to_owned(),
        ),
        ("state".to_owned(), "req-1".to_owned()),
    ];
    let e = s
        .conn
        .handle_callback(&Scopes::default(), None, &query)
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::Upstream(_)));
    assert!(
        e.to_string().contains("access_denied: the user said no"),
        "{e}"
    );

    let query = vec![("code".to_owned(), "gta_forged".to_owned())];
    let e = s
        .conn
        .handle_callback(&Scopes::default(), None, &query)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("failed to get token: unauthorized_client: client is not authorized"),
        "{e}"
    );

    // A wrong client secret: Forgejo's unauthorized_client, not invalid_client.
    let wrong = GiteaConnector::new(
        "forgejo",
        GiteaConfig {
            client_secret: "gto_wrong".into(),
            ..s.config.clone()
        },
        Arc::new(SystemTime::now),
    )
    .unwrap();
    let (url, _) = wrong.login_url(&Scopes::default(), CALLBACK, "r").unwrap();
    let query = callback_query(&s.fake.approve(&url, "alice").unwrap());
    let e = wrong
        .handle_callback(&Scopes::default(), None, &query)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("invalid client secret"), "{e}");
}

#[tokio::test]
async fn granular_scopes_without_read_user_are_refused_by_forgejo() {
    let s = setup(json!({"scopes": ["read:organization"]})).await;
    let e = login(&s, "alice", &Scopes::default()).await.unwrap_err();
    assert!(
        e.to_string().contains("403") && e.to_string().contains("read:user"),
        "{e}"
    );
    let s = setup(json!({"scopes": ["read:user"], "loadAllGroups": true})).await;
    let id = login(&s, "alice", &scopes(false, true)).await.unwrap();
    assert_eq!(id.groups.len(), 5);
}

#[tokio::test]
async fn refresh_reuses_a_live_access_token_and_rereads_the_profile() {
    let s = setup(json!({"loadAllGroups": true})).await;
    let first = login(&s, "alice", &scopes(true, true)).await.unwrap();
    s.fake.add_user(
        FakeUser::new(42, "alice")
            .full_name("Alice L.")
            .team("web", "devs"),
    );
    s.fake.clear_requests();
    let again = s
        .conn
        .refresh(&scopes(true, true), first.clone())
        .await
        .unwrap();
    assert_eq!(
        token_posts(&s.fake),
        0,
        "access token still valid: no upstream refresh"
    );
    assert_eq!(again.connector_data, first.connector_data);
    assert_eq!(again.username, "Alice L.");
    assert_eq!(again.groups, ["web", "web:devs"]);
    assert_eq!(again.user_id, "42");
}

fn short_lived() -> FakeOptions {
    FakeOptions {
        access_token_lifetime: Duration::from_secs(5),
        ..FakeOptions::default()
    }
}

#[tokio::test]
async fn refresh_rotates_the_upstream_token_and_the_old_one_is_refused() {
    let s = setup_with(short_lived(), json!({})).await;
    let first = login(&s, "alice", &scopes(true, false)).await.unwrap();
    // 5 s lifetime is inside the 10 s margin: every refresh goes upstream.
    let second = s
        .conn
        .refresh(&scopes(true, false), first.clone())
        .await
        .unwrap();
    assert_ne!(
        stored(&second)["refreshToken"],
        stored(&first)["refreshToken"]
    );
    let third = s
        .conn
        .refresh(&scopes(true, false), second.clone())
        .await
        .unwrap();
    assert_ne!(
        stored(&third)["refreshToken"],
        stored(&second)["refreshToken"]
    );
    assert_eq!(token_posts(&s.fake), 1 + 2);

    // The fake itself refuses the spent token, as Forgejo ≥ 9.
    let response = reqwest::Client::new()
        .post(format!("{}/login/oauth/access_token", s.fake.url()))
        .form(&[
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                stored(&first)["refreshToken"].as_str().unwrap(),
            ),
            ("client_id", &s.app.client_id),
            ("client_secret", &s.app.client_secret),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "unauthorized_client", "error_description": "token was already used"})
    );

    // Once the remembered result has aged out, a stale copy fails upstream.
    *s.now.lock().unwrap() += upstream::REFRESH_RESULT_TTL + Duration::from_secs(1);
    let e = s
        .conn
        .refresh(&scopes(true, false), first)
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::Refresh(_)), "{e:?}");
    assert!(e.to_string().contains("token was already used"), "{e}");
}

#[tokio::test]
async fn concurrent_refreshes_share_one_upstream_refresh() {
    let s = setup_with(short_lived(), json!({})).await;
    let first = login(&s, "alice", &scopes(true, false)).await.unwrap();
    s.fake.clear_requests();
    let sc = scopes(true, false);
    let (a, b, c) = tokio::join!(
        s.conn.refresh(&sc, first.clone()),
        s.conn.refresh(&sc, first.clone()),
        s.conn.refresh(&sc, first.clone()),
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(
        token_posts(&s.fake),
        1,
        "one upstream refresh for one upstream token"
    );
    assert_eq!(a.connector_data, b.connector_data);
    assert_eq!(b.connector_data, c.connector_data);
    // The rotated token they all carry is the live one.
    s.conn.refresh(&scopes(true, false), a).await.unwrap();
}

#[tokio::test]
async fn refresh_after_the_app_is_deleted_is_a_refresh_error() {
    // Live access token: the revoked grant answers 401, the refresh says why.
    let s = setup(json!({})).await;
    let first = login(&s, "alice", &scopes(true, false)).await.unwrap();
    s.fake.delete_app(&s.app.client_id);
    let e = s
        .conn
        .refresh(&scopes(true, false), first)
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::Refresh(_)), "{e:?}");
    assert!(e.to_string().contains("invalid_client"), "{e}");

    // Expired access token: straight to the refused refresh.
    let s = setup_with(short_lived(), json!({})).await;
    let first = login(&s, "alice", &scopes(true, false)).await.unwrap();
    s.fake.revoke_grant("alice", &s.app.client_id);
    let e = s
        .conn
        .refresh(&scopes(true, false), first)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("invalid_grant: grant does not exist"),
        "{e}"
    );
}

#[tokio::test]
async fn refresh_without_stored_token_or_membership_fails() {
    let s = setup(json!({"orgs": [{"name": "infra"}]})).await;
    let plain = login(&s, "alice", &scopes(false, false)).await.unwrap();
    let e = s.conn.refresh(&Scopes::default(), plain).await.unwrap_err();
    assert!(matches!(e, ConnectorError::Refresh(_)), "{e:?}");

    let offline = login(&s, "alice", &scopes(true, false)).await.unwrap();
    s.fake
        .add_user(FakeUser::new(42, "alice").team("web", "devs"));
    let e = s
        .conn
        .refresh(&Scopes::default(), offline)
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectorError::Refresh(_)), "{e:?}");
    assert!(e.to_string().contains("no longer a member"), "{e}");
}
