//! Discovery has exactly Dex's fields, order and values (Dex's `constructDiscovery` in `server/handlers.go`).

use serde_json::json;

use crate::support::{TestServer, base_config};

#[tokio::test]
async fn discovery_matches_dex_for_code_flow_config() {
    let mut config = base_config("http://127.0.0.1:5556/dex");
    config["oauth2"] = json!({"grantTypes": ["authorization_code", "refresh_token"]});
    let server = TestServer::start(config).await;

    let response = server
        .http
        .get(server.url("/dex/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.text().await.unwrap();
    let expected = r#"{
  "issuer": "http://127.0.0.1:5556/dex",
  "authorization_endpoint": "http://127.0.0.1:5556/dex/auth",
  "token_endpoint": "http://127.0.0.1:5556/dex/token",
  "jwks_uri": "http://127.0.0.1:5556/dex/keys",
  "userinfo_endpoint": "http://127.0.0.1:5556/dex/userinfo",
  "device_authorization_endpoint": "http://127.0.0.1:5556/dex/device/code",
  "introspection_endpoint": "http://127.0.0.1:5556/dex/token/introspect",
  "end_session_endpoint": "http://127.0.0.1:5556/dex/logout",
  "backchannel_logout_supported": true,
  "backchannel_logout_session_supported": true,
  "revocation_endpoint": "http://127.0.0.1:5556/dex/token/revoke",
  "grant_types_supported": [
    "authorization_code",
    "refresh_token"
  ],
  "response_types_supported": [
    "code"
  ],
  "subject_types_supported": [
    "public"
  ],
  "id_token_signing_alg_values_supported": [
    "RS256"
  ],
  "code_challenge_methods_supported": [
    "S256",
    "plain"
  ],
  "scopes_supported": [
    "openid",
    "email",
    "groups",
    "profile",
    "offline_access"
  ],
  "token_endpoint_auth_methods_supported": [
    "client_secret_basic",
    "client_secret_post"
  ],
  "revocation_endpoint_auth_methods_supported": [
    "client_secret_basic",
    "client_secret_post"
  ],
  "claims_supported": [
    "iss",
    "sub",
    "aud",
    "iat",
    "exp",
    "email",
    "email_verified",
    "locale",
    "name",
    "preferred_username",
    "at_hash",
    "groups",
    "federated_claims",
    "sid",
    "auth_time"
  ],
  "prompt_values_supported": [
    "none",
    "login",
    "consent",
    "select_account"
  ]
}"#;
    assert_eq!(body, expected);
    server.stop().await;
}

#[tokio::test]
async fn discovery_reflects_grants_response_types_and_algorithm() {
    let mut config = base_config("http://127.0.0.1:5556");
    config["oauth2"] = json!({
        "responseTypes": ["code", "token", "id_token"],
        "passwordConnector": "pw",
    });
    config["connectors"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "mockPassword", "id": "pw", "name": "Password", "config": {"username": "kilgore", "password": "trout"}}));
    config["signer"] =
        json!({"type": "local", "config": {"keysRotationPeriod": "6h", "algorithm": "ES256"}});
    let server = TestServer::start(config).await;

    let doc: serde_json::Value = server
        .http
        .get(server.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Dex intersects its default allow-list with what the server supports;
    // implicit needs a token-returning response type, password a passwordConnector.
    let grants: Vec<&str> = doc["grant_types_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert!(grants.contains(&"implicit"), "{grants:?}");
    assert!(grants.contains(&"password"), "{grants:?}");
    assert!(
        grants.contains(&"urn:ietf:params:oauth:grant-type:device_code"),
        "Dex's default grant list includes the device flow: {grants:?}"
    );
    let mut sorted = grants.clone();
    sorted.sort();
    assert_eq!(grants, sorted, "grant types are sorted like Dex's");
    assert_eq!(
        doc["response_types_supported"],
        json!(["code", "id_token", "token"])
    );
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["ES256"])
    );
    assert_eq!(doc["issuer"], "http://127.0.0.1:5556");
    assert_eq!(doc["token_endpoint"], "http://127.0.0.1:5556/token");
    server.stop().await;
}
