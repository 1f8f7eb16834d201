//! The `ldap` connector against a real OpenLDAP, started and loaded by
//! `checks/ldap/run.sh` (users jane/foo and john/bar in `admins`, jane also in
//! `developers`, which is nested in `engineering` and back (a cycle), loner/alone
//! in no group, jöhn/umlaut). Without
//! `OXIDEX_LDAP_TEST=1` these tests return at once; with it, a missing or broken
//! directory is a failure, never a skip.

use base64::Engine as _;
use openidconnect::core::{CoreClient, CoreProviderMetadata, CoreResponseType};
use openidconnect::{
    AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::browser::{Browser, form_action, input_value, location, query_param};
use crate::login::{CLIENT_ID, CLIENT_SECRET, REDIRECT_URI};
use crate::support::TestServer;

struct Directory {
    host: String,
    tls_host: String,
    ca: String,
    other_ca: String,
}

/// The directory from run.sh, or `None` when the suite is not asked to run.
fn directory() -> Option<Directory> {
    if std::env::var("OXIDEX_LDAP_TEST").ok().as_deref() != Some("1") {
        eprintln!("OXIDEX_LDAP_TEST is not 1: LDAP tests not run (checks/ldap/run.sh runs them)");
        return None;
    }
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("OXIDEX_LDAP_TEST=1 but {name} is not set"))
    };
    Some(Directory {
        host: var("OXIDEX_LDAP_HOST"),
        tls_host: var("OXIDEX_LDAP_TLS_HOST"),
        ca: var("OXIDEX_LDAP_CA"),
        other_ca: var("OXIDEX_LDAP_OTHER_CA"),
    })
}

/// A plain-LDAP connector config; `patch` adjusts it.
fn ldap_config(host: &str) -> Value {
    json!({
        "host": host,
        "insecureNoSSL": true,
        "bindDN": "cn=admin,dc=example,dc=org",
        "bindPW": "admin",
        "usernamePrompt": "Corp login",
        "userSearch": {
            "baseDN": "ou=people,dc=example,dc=org",
            "filter": "(objectClass=inetOrgPerson)",
            "username": "uid",
            "idAttr": "DN",
            "emailAttr": "mail",
            "nameAttr": "cn",
            "preferredUsernameAttr": "uid"
        },
        "groupSearch": {
            "baseDN": "ou=groups,dc=example,dc=org",
            "filter": "(objectClass=groupOfNames)",
            "userMatchers": [{"userAttr": "DN", "groupAttr": "member"}],
            "nameAttr": "cn"
        }
    })
}

async fn start(connectors: Vec<Value>) -> TestServer {
    start_with_oauth2(connectors, json!({"skipApprovalScreen": true})).await
}

async fn start_with_oauth2(connectors: Vec<Value>, oauth2: Value) -> TestServer {
    TestServer::start_at_issuer(|issuer| {
        json!({
            "issuer": issuer,
            "storage": {"type": "memory"},
            "web": {"http": "127.0.0.1:0"},
            "oauth2": oauth2,
            "staticClients": [{
                "id": CLIENT_ID,
                "name": "Example App",
                "secret": CLIENT_SECRET,
                "redirectURIs": [REDIRECT_URI]
            }],
            "connectors": connectors
        })
    })
    .await
}

fn connector(id: &str, config: Value) -> Value {
    json!({"type": "ldap", "id": id, "name": format!("LDAP {id}"), "config": config})
}

enum Outcome {
    /// Back at the client with this code.
    Code(String),
    /// A page from oxidex.
    Page(StatusCode, String),
}

/// Through the login form of connector `id` with `scope`.
async fn login(server: &TestServer, id: &str, scope: &str, user: &str, password: &str) -> Outcome {
    let browser = Browser::new(&server.base());
    let auth = format!(
        "{}?{}",
        server.url("/dex/auth"),
        serde_urlencoded(&[
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT_URI),
            ("response_type", "code"),
            ("scope", scope),
            ("state", "st4te"),
            ("connector_id", id),
        ])
    );
    let (at, status, form) = browser.follow(&auth).await.page();
    assert_eq!(status, 200, "password form expected at {at}:\n{form}");
    assert!(form.contains("Corp login"), "usernamePrompt shown:\n{form}");
    let posted = browser
        .post_form(
            &form_action(&form),
            &[
                ("login", user),
                ("password", password),
                ("csrf_token", &input_value(&form, "csrf_token")),
            ],
        )
        .await;
    if posted.status() != StatusCode::SEE_OTHER {
        let status = posted.status();
        return Outcome::Page(status, posted.text().await.unwrap());
    }
    let back = after_login(&browser, &location(&posted)).await;
    assert!(back.starts_with(REDIRECT_URI), "{back}");
    Outcome::Code(query_param(&back, "code").unwrap_or_else(|| panic!("no code: {back}")))
}

/// Where the login's redirect ends: straight at the client (approval skipped).
async fn after_login(browser: &Browser, location: &str) -> String {
    if location.starts_with(REDIRECT_URI) {
        location.to_owned()
    } else {
        browser.follow(location).await.left()
    }
}

fn serde_urlencoded(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

async fn token(server: &TestServer, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let response = server
        .http
        .post(server.url("/dex/token"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn exchange(server: &TestServer, code: &str) -> Value {
    let (status, body) = token(
        server,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The ID token's claims (its signature is checked in the RP test).
fn id_claims(tokens: &Value) -> Value {
    let jwt = tokens["id_token"].as_str().unwrap();
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn expect_code(outcome: Outcome) -> String {
    match outcome {
        Outcome::Code(code) => code,
        Outcome::Page(status, body) => panic!("login refused with {status}:\n{body}"),
    }
}

fn expect_page(outcome: Outcome) -> (StatusCode, String) {
    match outcome {
        Outcome::Page(status, body) => (status, body),
        Outcome::Code(code) => panic!("login unexpectedly succeeded (code {code})"),
    }
}

#[tokio::test]
async fn ldap_relying_party_logs_in_with_groups_and_refreshes() {
    let Some(dir) = directory() else { return };
    let server = start(vec![connector("corp", ldap_config(&dir.host))]).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(server.issuer()).unwrap(), &http)
            .await
            .unwrap();
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(CLIENT_ID.into()),
        Some(ClientSecret::new(CLIENT_SECRET.into())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT_URI.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, _state, nonce) = client
        .authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("groups".into()))
        .add_scope(Scope::new("offline_access".into()))
        .set_pkce_challenge(challenge)
        .url();

    let browser = Browser::new(&server.base());
    let (_, status, form) = browser.follow(auth_url.as_str()).await.page();
    assert_eq!(status, 200, "{form}");
    let posted = browser
        .post_form(
            &form_action(&form),
            &[
                ("login", "jane"),
                ("password", "foo"),
                ("csrf_token", &input_value(&form, "csrf_token")),
            ],
        )
        .await;
    assert_eq!(posted.status(), 303);
    let back = after_login(&browser, &location(&posted)).await;
    let code = query_param(&back, "code").unwrap();
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap();
    let id_token = tokens.id_token().unwrap();
    let claims = id_token
        .claims(&client.id_token_verifier(), &nonce)
        .expect("the ID token verifies");
    assert_eq!(claims.email().unwrap().as_str(), "jane@example.org");
    assert_eq!(claims.email_verified(), Some(true));
    assert_eq!(
        claims.subject().as_str(),
        oxidex::oidc::subject::encode_subject("uid=jane,ou=people,dc=example,dc=org", "corp")
    );
    let raw = id_claims(&json!({"id_token": id_token.to_string()}));
    assert_eq!(raw["name"], "Jane Doe");
    assert_eq!(raw["preferred_username"], "jane");
    assert_eq!(raw["groups"], json!(["admins", "developers"]));

    // Refresh re-reads the entry and the groups.
    let refreshed = client
        .exchange_refresh_token(tokens.refresh_token().unwrap())
        .unwrap()
        .request_async(&http)
        .await
        .unwrap();
    let raw = id_claims(&json!({"id_token": refreshed.id_token().unwrap().to_string()}));
    assert_eq!(raw["groups"], json!(["admins", "developers"]));
    assert_eq!(raw["email"], "jane@example.org");
    server.stop().await;
}

#[tokio::test]
async fn ldap_wrong_password_unknown_user_and_injection_get_the_form_again() {
    let Some(dir) = directory() else { return };
    let server = start(vec![connector("corp", ldap_config(&dir.host))]).await;
    let scope = "openid email groups";
    for (user, password) in [
        ("jane", "wrong"),
        ("nobody", "foo"),
        ("*", "foo"),
        ("j*", "foo"),
        ("jane)(uid=*", "foo"),
        ("*)(|(uid=*", "foo"),
        ("jane", " "),
        ("jane", "*"),
        // An empty password must not turn into an anonymous bind.
        ("jane", ""),
    ] {
        let (status, page) = expect_page(login(&server, "corp", scope, user, password).await);
        assert_eq!(status, 401, "{user:?}/{password:?}:\n{page}");
        assert!(
            page.contains("Invalid Corp login and password."),
            "{user:?}:\n{page}"
        );
    }
    // The same users with their real passwords do get in.
    expect_code(login(&server, "corp", scope, "john", "bar").await);
    server.stop().await;
}

#[tokio::test]
async fn ldap_user_in_no_group_logs_in_with_no_groups() {
    let Some(dir) = directory() else { return };
    let server = start(vec![connector("corp", ldap_config(&dir.host))]).await;
    let code = expect_code(login(&server, "corp", "openid email groups", "loner", "alone").await);
    let claims = id_claims(&exchange(&server, &code).await);
    assert_eq!(claims["email"], "loner@example.org");
    assert!(
        claims.get("groups").is_none_or(|g| g == &json!([])),
        "no groups: {claims}"
    );
    let code = expect_code(login(&server, "corp", "openid email groups", "john", "bar").await);
    assert_eq!(
        id_claims(&exchange(&server, &code).await)["groups"],
        json!(["admins"])
    );
    server.stop().await;
}

#[tokio::test]
async fn ldap_non_ascii_login_is_escaped_once_and_matches() {
    let Some(dir) = directory() else { return };
    let server = start(vec![connector("corp", ldap_config(&dir.host))]).await;
    let code = expect_code(login(&server, "corp", "openid email profile", "jöhn", "umlaut").await);
    let claims = id_claims(&exchange(&server, &code).await);
    assert_eq!(claims["name"], "Jöhn Ümlaut");
    assert_eq!(claims["preferred_username"], "jöhn");
    server.stop().await;
}

#[tokio::test]
async fn ldap_starttls_and_ldaps_with_a_throwaway_ca() {
    let Some(dir) = directory() else { return };
    let mut starttls = ldap_config(&dir.host);
    starttls["insecureNoSSL"] = json!(false);
    starttls["startTLS"] = json!(true);
    starttls["rootCA"] = json!(dir.ca);
    let mut ldaps = ldap_config(&dir.tls_host);
    ldaps["insecureNoSSL"] = json!(false);
    ldaps["rootCAData"] =
        json!(base64::engine::general_purpose::STANDARD.encode(std::fs::read(&dir.ca).unwrap()));
    let mut skip_verify = ldap_config(&dir.tls_host);
    skip_verify["insecureNoSSL"] = json!(false);
    skip_verify["insecureSkipVerify"] = json!(true);
    let server = start(vec![
        connector("starttls", starttls),
        connector("ldaps", ldaps),
        connector("skipverify", skip_verify),
    ])
    .await;
    for id in ["starttls", "ldaps", "skipverify"] {
        let code = expect_code(login(&server, id, "openid email groups", "jane", "foo").await);
        let claims = id_claims(&exchange(&server, &code).await);
        assert_eq!(claims["groups"], json!(["admins", "developers"]), "{id}");
        let (status, _) = expect_page(login(&server, id, "openid", "jane", "nope").await);
        assert_eq!(status, 401, "{id}");
    }
    server.stop().await;
}

#[tokio::test]
async fn ldap_wrong_ca_or_dead_directory_fails_only_that_connector() {
    let Some(dir) = directory() else { return };
    let mut wrong_ca = ldap_config(&dir.host);
    wrong_ca["insecureNoSSL"] = json!(false);
    wrong_ca["startTLS"] = json!(true);
    wrong_ca["rootCA"] = json!(dir.other_ca);
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = start(vec![
        connector("wrongca", wrong_ca),
        connector("dead", ldap_config(&format!("127.0.0.1:{dead_port}"))),
        connector("corp", ldap_config(&dir.host)),
    ])
    .await;
    for id in ["wrongca", "dead"] {
        let (status, page) = expect_page(login(&server, id, "openid", "jane", "foo").await);
        assert_eq!(status, 500, "{id}:\n{page}");
        assert!(page.contains("Login error"), "{id}:\n{page}");
        assert!(!page.contains("Corp login and password"), "{id}:\n{page}");
    }
    expect_code(login(&server, "corp", "openid", "jane", "foo").await);
    server.stop().await;
}

#[tokio::test]
async fn ldap_refresh_is_refused_once_the_user_is_gone() {
    let Some(dir) = directory() else { return };
    let dn = "uid=temp,ou=people,dc=example,dc=org";
    let (conn, mut admin) = ldap3::LdapConnAsync::new(&format!("ldap://{}", dir.host))
        .await
        .unwrap();
    tokio::spawn(conn.drive());
    admin
        .simple_bind("cn=admin,dc=example,dc=org", "admin")
        .await
        .unwrap()
        .success()
        .unwrap();
    let _ = admin.delete(dn).await;
    let set = |v: &str| std::collections::HashSet::from([v.to_owned()]);
    admin
        .add(
            dn,
            vec![
                ("objectClass".to_owned(), set("inetOrgPerson")),
                ("uid".to_owned(), set("temp")),
                ("cn".to_owned(), set("Temp User")),
                ("sn".to_owned(), set("User")),
                ("mail".to_owned(), set("temp@example.org")),
                ("userPassword".to_owned(), set("t3mp")),
            ],
        )
        .await
        .unwrap()
        .success()
        .unwrap();

    let server = start(vec![connector("corp", ldap_config(&dir.host))]).await;
    let code = expect_code(
        login(
            &server,
            "corp",
            "openid email offline_access",
            "temp",
            "t3mp",
        )
        .await,
    );
    let tokens = exchange(&server, &code).await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (status, body) = token(
        &server,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, 200, "refresh while the user exists: {body}");
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();

    admin.delete(dn).await.unwrap().success().unwrap();
    let (status, body) = token(
        &server,
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
    let _ = admin.unbind().await;
    server.stop().await;
}

#[tokio::test]
async fn ldap_nested_groups_are_followed_breadth_first_through_a_cycle() {
    let Some(dir) = directory() else { return };
    let mut nested = ldap_config(&dir.host);
    nested["groupSearch"]["userMatchers"] =
        json!([{"userAttr": "DN", "groupAttr": "member", "recursionGroupAttr": "member"}]);
    nested["groupSearch"]["scope"] = json!("one");
    let server = start(vec![connector("corp", nested)]).await;
    let code = expect_code(login(&server, "corp", "openid groups", "jane", "foo").await);
    let claims = id_claims(&exchange(&server, &code).await);
    assert_eq!(
        claims["groups"],
        json!(["admins", "developers", "engineering"])
    );
    let code = expect_code(login(&server, "corp", "openid groups", "john", "bar").await);
    assert_eq!(
        id_claims(&exchange(&server, &code).await)["groups"],
        json!(["admins"])
    );
    server.stop().await;
}

#[tokio::test]
async fn ldap_backs_the_password_grant() {
    let Some(dir) = directory() else { return };
    let server = start_with_oauth2(
        vec![connector("corp", ldap_config(&dir.host))],
        json!({"skipApprovalScreen": true, "passwordConnector": "corp"}),
    )
    .await;
    let grant = |user: &'static str, password: &'static str| {
        [
            ("grant_type", "password"),
            ("username", user),
            ("password", password),
            ("scope", "openid email groups"),
        ]
    };
    let (status, body) = token(&server, &grant("jane", "foo")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(id_claims(&body)["groups"], json!(["admins", "developers"]));
    for (user, password) in [
        ("jane", "wrong"),
        ("nobody", "foo"),
        ("jane", ""),
        ("*", "foo"),
    ] {
        let (status, body) = token(&server, &grant(user, password)).await;
        assert_eq!(status, 401, "{user:?}: {body}");
        assert_eq!(body["error"], "access_denied", "{body}");
    }
    server.stop().await;
}
