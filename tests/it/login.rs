//! The whole login with the openidconnect crate as the relying party:
//! discovery → /auth → password login → approval → code + PKCE → tokens (ID token
//! fully verified) → userinfo → refresh → replay of the old refresh token.

use openidconnect::core::{CoreClient, CoreGenderClaim, CoreProviderMetadata, CoreResponseType};
use openidconnect::{
    AccessTokenHash, AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    EmptyAdditionalClaims, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl,
    RefreshToken, Scope, TokenResponse, UserInfoClaims,
};
use serde_json::{Value, json};

use crate::browser::{Browser, form_action, input_value, query_param};
use crate::support::TestServer;

pub const CLIENT_ID: &str = "example-app";
pub const CLIENT_SECRET: &str = "ZXhhbXBsZS1hcHAtc2VjcmV0";
pub const REDIRECT_URI: &str = "http://127.0.0.1:5555/callback";
/// bcrypt (cost 10) of "password".
pub const PASSWORD_HASH: &str = "$2b$10$sD0K5NZrR9THssaos8nEde5ywauRcVXC6frrFKxi6lUuERHKIbAdi";

/// A config with the password DB (admin@example.com / password) as the only connector.
pub fn password_db_config(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "storage": {"type": "memory"},
        "web": {"http": "127.0.0.1:0"},
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
            "userID": "08a8684b-db88-4b73-90a9-3cd1661f5466",
            "groups": ["admins", "ops"]
        }]
    })
}

fn rp_http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Logs in through the pages as a browser would and returns the client's redirect
/// URL (which carries `code` and `state`).
pub async fn browser_login(
    server: &TestServer,
    auth_url: &str,
    email: &str,
    password: &str,
) -> String {
    browser_login_in(&Browser::new(&server.base()), auth_url, email, password).await
}

/// [`browser_login`] in a given browser (one that already holds cookies).
pub async fn browser_login_in(
    browser: &Browser,
    auth_url: &str,
    email: &str,
    password: &str,
) -> String {
    let (form_url, status, form) = browser.follow(auth_url).await.page();
    assert_eq!(status, 200, "password form expected at {form_url}:\n{form}");
    let action = form_action(&form);
    let csrf = input_value(&form, "csrf_token");
    let posted = browser
        .post_form(
            &action,
            &[
                ("login", email),
                ("password", password),
                ("csrf_token", &csrf),
            ],
        )
        .await;
    assert_eq!(posted.status(), 303, "login accepted");
    let approval_url = crate::browser::location(&posted);
    let (approval_at, status, approval) = browser.follow(&approval_url).await.page();
    assert_eq!(status, 200, "approval page at {approval_at}");
    assert!(
        approval.contains("Example App"),
        "approval names the client:\n{approval}"
    );
    let csrf = input_value(&approval, "csrf_token");
    let approved = browser
        .post_form(
            &form_action(&approval),
            &[("approval", "approve"), ("csrf_token", &csrf)],
        )
        .await;
    assert_eq!(approved.status(), 303);
    crate::browser::location(&approved)
}

#[tokio::test]
async fn openidconnect_rp_logs_in_refreshes_and_replay_revokes_the_family() {
    let server = TestServer::start_at_issuer(password_db_config).await;
    let http = rp_http();

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
    let (auth_url, csrf_state, nonce) = client
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

    let back = browser_login(&server, auth_url.as_str(), "admin@example.com", "password").await;
    assert!(back.starts_with(REDIRECT_URI), "{back}");
    assert_eq!(query_param(&back, "state").unwrap(), *csrf_state.secret());
    let code = query_param(&back, "code").unwrap();

    let tokens = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap();
    let id_token = tokens.id_token().expect("an ID token");
    let verifier = client.id_token_verifier();
    let claims = id_token
        .claims(&verifier, &nonce)
        .expect("ID token verifies (signature via /keys, iss, aud, exp, nonce)");
    let expected_hash = claims.access_token_hash().expect("at_hash present");
    let actual_hash = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(
        *expected_hash, actual_hash,
        "at_hash matches the access token"
    );
    assert_eq!(claims.email().unwrap().as_str(), "admin@example.com");
    assert_eq!(claims.email_verified(), Some(true));
    // Dex's sub: base64url(protobuf{user id, connector id}).
    assert_eq!(
        claims.subject().as_str(),
        oxidex::oidc::subject::encode_subject("08a8684b-db88-4b73-90a9-3cd1661f5466", "local")
    );
    let refresh = tokens
        .refresh_token()
        .expect("offline_access gives a refresh token")
        .clone();

    // Userinfo with the access token.
    let userinfo: UserInfoClaims<EmptyAdditionalClaims, CoreGenderClaim> = client
        .user_info(
            tokens.access_token().clone(),
            Some(claims.subject().clone()),
        )
        .unwrap()
        .request_async(&http)
        .await
        .unwrap();
    assert_eq!(userinfo.email().unwrap().as_str(), "admin@example.com");

    // Refresh: a new refresh token and a fresh, valid ID token.
    let refreshed = client
        .exchange_refresh_token(&refresh)
        .unwrap()
        .request_async(&http)
        .await
        .unwrap();
    let rotated = refreshed
        .refresh_token()
        .expect("rotated refresh token")
        .clone();
    assert_ne!(rotated.secret(), refresh.secret());
    let refreshed_id = refreshed.id_token().unwrap();
    let refreshed_claims = refreshed_id
        .claims(&verifier, &nonce)
        .expect("refreshed ID token verifies and keeps the nonce");
    assert_eq!(refreshed_claims.subject(), claims.subject());

    // Replaying the old refresh token is refused and revokes the whole family:
    // the rotated token stops working too.
    let replay = raw_refresh(&server, &refresh).await;
    assert_eq!(replay.0, 400);
    assert_eq!(replay.1["error"], "invalid_grant");
    let after = raw_refresh(&server, &rotated).await;
    assert_eq!(after.0, 400, "family revoked: {:?}", after.1);

    // The code is single use (a replay also revokes the exchange's refresh
    // token: tests/it/transport.rs).
    let replayed_code = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .request_async(&http)
        .await;
    assert!(replayed_code.is_err(), "a code works once");
    server.stop().await;
}

async fn raw_refresh(server: &TestServer, token: &RefreshToken) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/token", server.issuer()))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", token.secret()),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}
