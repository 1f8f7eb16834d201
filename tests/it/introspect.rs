//! `/token/introspect` (RFC 7662): Dex's response shapes for access and refresh
//! tokens; beyond Dex, only an authenticated client may ask, and only about its
//! own tokens.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::browser::query_param;
use crate::device::{clock, start_with_clock};
use crate::login::{CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, browser_login, password_db_config};
use crate::support::TestServer;

const OTHER_ID: &str = "other-app";
const OTHER_SECRET: &str = "b3RoZXItYXBwLXNlY3JldA";

fn config(issuer: &str) -> Value {
    let mut config = password_db_config(issuer);
    config["staticClients"].as_array_mut().unwrap().push(json!({
        "id": OTHER_ID,
        "name": "Other App",
        "secret": OTHER_SECRET,
        "redirectURIs": ["http://127.0.0.1:5556/callback"]
    }));
    config
}

/// Code flow for `example-app`; returns the token response.
async fn login(server: &TestServer) -> Value {
    let auth_url = format!(
        "{}/auth?client_id={CLIENT_ID}&redirect_uri={}&response_type=code&scope={}&state=st",
        server.issuer(),
        urlencode(REDIRECT_URI),
        urlencode("openid email profile groups offline_access"),
    );
    let back = browser_login(server, &auth_url, "admin@example.com", "password").await;
    let code = query_param(&back, "code").unwrap();
    server
        .http
        .post(format!("{}/token", server.issuer()))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

async fn introspect(
    server: &TestServer,
    credentials: Option<(&str, &str)>,
    token: &str,
) -> reqwest::Response {
    let mut request = server
        .http
        .post(format!("{}/token/introspect", server.issuer()));
    if let Some((id, secret)) = credentials {
        request = request.basic_auth(id, Some(secret));
    }
    request.form(&[("token", token)]).send().await.unwrap()
}

async fn introspect_json(server: &TestServer, credentials: (&str, &str), token: &str) -> Value {
    let response = introspect(server, Some(credentials), token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn introspection_of_access_and_refresh_tokens() {
    let clock = clock();
    let server = start_with_clock(&clock, config).await;
    let issuer = server.issuer();
    let tokens = login(&server).await;
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let claims = payload(access);
    let me = (CLIENT_ID, CLIENT_SECRET);

    // The password DB sets no preferred_username, so `username` is omitted.
    let active = introspect_json(&server, me, access).await;
    assert_eq!(
        active,
        json!({
            "active": true,
            "client_id": CLIENT_ID,
            "sub": claims["sub"],
            "exp": claims["exp"],
            "iat": claims["iat"],
            "nbf": claims["iat"],
            "aud": CLIENT_ID,
            "iss": issuer,
            "token_type": "Bearer",
            "token_use": "access_token",
            "ext": {
                "email": "admin@example.com",
                "email_verified": true,
                "groups": ["admins", "ops"],
                "name": "admin"
            }
        })
    );

    let active = introspect_json(&server, me, refresh).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["token_use"], "refresh_token");
    assert_eq!(active["client_id"], CLIENT_ID);
    assert_eq!(active["sub"], claims["sub"]);
    assert_eq!(active["iat"], claims["iat"]);
    assert_eq!(active["aud"], CLIENT_ID);
    assert!(
        active.get("exp").is_none(),
        "no absolute lifetime configured, so no exp (Dex says exp == iat): {active}"
    );
    assert_eq!(active["ext"]["email"], "admin@example.com");

    // Post credentials work as at /token.
    let response = server
        .http
        .post(format!("{issuer}/token/introspect"))
        .form(&[
            ("token", access),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("token_type_hint", "refresh_token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.json::<Value>().await.unwrap()["active"], true);

    // Tampered payload, garbage, unknown refresh token: inactive.
    let mut parts: Vec<String> = access.split('.').map(str::to_owned).collect();
    let mut forged = payload(access);
    forged["email"] = json!("root@example.com");
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
    let tampered = parts.join(".");
    for token in [
        tampered.as_str(),
        "garbage",
        "Chl.not-a-token",
        &refresh[..refresh.len() - 2],
    ] {
        assert_eq!(
            introspect_json(&server, me, token).await,
            json!({"active": false}),
            "{token}"
        );
    }

    // Another client sees nothing, exactly as for an unknown token.
    for token in [access, refresh] {
        assert_eq!(
            introspect_json(&server, (OTHER_ID, OTHER_SECRET), token).await,
            json!({"active": false})
        );
    }

    // After the access token's expiry (24 h) it is inactive; the refresh token
    // (no lifetime configured) still is active.
    clock.advance(Duration::from_secs(24 * 3600 + 1));
    assert_eq!(
        introspect_json(&server, me, access).await,
        json!({"active": false})
    );
    assert_eq!(introspect_json(&server, me, refresh).await["active"], true);
    server.stop().await;
}

#[tokio::test]
async fn introspection_requires_client_authentication_and_post() {
    let clock = clock();
    let server = start_with_clock(&clock, config).await;
    let tokens = login(&server).await;
    let access = tokens["access_token"].as_str().unwrap();

    let anonymous = introspect(&server, None, access).await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
    let wrong = introspect(&server, Some((CLIENT_ID, "nope")), access).await;
    assert_eq!(wrong.status(), 401);

    let get = server
        .http
        .get(format!(
            "{}/token/introspect?token={access}",
            server.issuer()
        ))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 400);
    assert_eq!(
        get.json::<Value>().await.unwrap()["error_description"],
        "HTTP method is \"GET\", expected \"POST\"."
    );
    let no_token = server
        .http
        .post(format!("{}/token/introspect", server.issuer()))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("token_type_hint", "access_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 400);
    assert_eq!(
        no_token.json::<Value>().await.unwrap()["error_description"],
        "The POST body doesn't contain 'token' parameter."
    );
    server.stop().await;
}
