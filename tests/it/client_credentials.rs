//! The `client_credentials` grant (Dex HEAD, opt-in) with the openidconnect
//! crate as the client where it can, raw form POSTs for the error cases.

use openidconnect::core::{CoreClient, CoreProviderMetadata};
use openidconnect::{
    ClientId, ClientSecret, IssuerUrl, Nonce, OAuth2TokenResponse, Scope, TokenResponse,
};
use serde_json::{Value, json};

use crate::support::{TestServer, base_config};

const SECRET: &str = "robot-secret";

/// Extra form fields of a token request.
type Form<'a> = &'a [(&'a str, &'a str)];

/// Clients `a` (confidential, with groups), `cli` (public); `peer` trusts `a`.
fn config(issuer: &str, grant_types: Option<Value>) -> Value {
    let mut config = base_config(issuer);
    config["staticClients"] = json!([
        {
            "id": "a",
            "name": "Robot A",
            "secret": SECRET,
            "redirectURIs": ["http://127.0.0.1:5555/callback"],
            "clientCredentialsClaims": {"groups": ["robots", "ci"]}
        },
        {"id": "cli", "name": "CLI", "public": true},
        {
            "id": "peer",
            "name": "Peer",
            "secret": "peer-secret",
            "redirectURIs": ["http://127.0.0.1:5556/callback"],
            "trustedPeers": ["a"]
        }
    ]);
    if let Some(grants) = grant_types {
        config["oauth2"] = json!({"grantTypes": grants});
    }
    config
}

async fn enabled() -> TestServer {
    TestServer::start_at_issuer(|issuer| {
        config(
            issuer,
            Some(json!([
                "authorization_code",
                "refresh_token",
                "client_credentials"
            ])),
        )
    })
    .await
}

async fn post(server: &TestServer, form: &[(&str, &str)]) -> (u16, Value) {
    let response = server
        .http
        .post(server.url("/dex/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status == 200 {
        assert_eq!(response.headers()["cache-control"], "no-store");
    }
    (status, response.json().await.unwrap())
}

fn payload(jwt: &str) -> Value {
    use base64::Engine as _;
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

async fn grant_types_supported(server: &TestServer) -> Vec<String> {
    let doc: Value = server
        .http
        .get(server.url("/dex/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    serde_json::from_value(doc["grant_types_supported"].clone()).unwrap()
}

#[tokio::test]
async fn off_unless_listed_and_then_advertised() {
    let server = TestServer::start_at_issuer(|issuer| config(issuer, None)).await;
    let grants = grant_types_supported(&server).await;
    assert!(
        !grants.iter().any(|g| g == "client_credentials"),
        "{grants:?}"
    );
    let (status, body) = post(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "a"),
            ("client_secret", SECRET),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body, json!({"error": "unsupported_grant_type"}));
    server.stop().await;

    let server = enabled().await;
    let grants = grant_types_supported(&server).await;
    assert_eq!(
        grants,
        ["authorization_code", "client_credentials", "refresh_token"]
    );
    server.stop().await;
}

#[tokio::test]
async fn openidconnect_client_gets_tokens_for_itself() {
    let server = enabled().await;
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
        ClientId::new("a".into()),
        Some(ClientSecret::new(SECRET.into())),
    );

    // `openid` ⇒ access token and a verifiable ID token, never a refresh token.
    let tokens = client
        .exchange_client_credentials()
        .unwrap()
        .add_scope(Scope::new("openid".into()))
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("groups".into()))
        .request_async(&http)
        .await
        .unwrap();
    assert!(tokens.refresh_token().is_none());
    assert_eq!(
        tokens.token_type(),
        &openidconnect::core::CoreTokenType::Bearer
    );
    assert_eq!(
        tokens.expires_in(),
        Some(std::time::Duration::from_secs(86_400))
    );
    let id_token = tokens.id_token().expect("an ID token with openid");
    let claims = id_token
        .claims(&client.id_token_verifier(), |_: Option<&Nonce>| Ok(()))
        .unwrap();
    assert_eq!(
        claims.subject().as_str(),
        "CgFh",
        "Dex's sub for client `a`"
    );
    assert_eq!(claims.audiences().len(), 1);
    assert_eq!(claims.audiences()[0].as_str(), "a");
    let id = payload(&id_token.to_string());
    assert_eq!(id["name"], "Robot A");
    assert_eq!(id["preferred_username"], "Robot A");
    assert_eq!(id["groups"], json!(["robots", "ci"]));
    assert_eq!(id["email_verified"], false);
    for absent in ["email", "auth_time", "sid", "nonce", "federated_claims"] {
        assert!(id.get(absent).is_none(), "{absent} in {id}");
    }
    assert!(id.get("at_hash").is_some());

    // The access token works at /userinfo like any other.
    let info: Value = http
        .get(server.url("/dex/userinfo"))
        .bearer_auth(tokens.access_token().secret())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], "CgFh");
    assert_eq!(info["groups"], json!(["robots", "ci"]));
    // And at introspection, for the client itself.
    let introspected: Value = http
        .post(server.url("/dex/token/introspect"))
        .basic_auth("a", Some(SECRET))
        .form(&[("token", tokens.access_token().secret().as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspected["active"], true, "{introspected}");
    assert_eq!(introspected["sub"], "CgFh");
    assert_eq!(introspected["client_id"], "a");

    // No `openid` ⇒ no ID token (and no scope at all is fine).
    let tokens = client
        .exchange_client_credentials()
        .unwrap()
        .request_async(&http)
        .await
        .unwrap();
    assert!(tokens.id_token().is_none());
    assert!(tokens.refresh_token().is_none());
    let access = payload(tokens.access_token().secret());
    assert_eq!(access["sub"], "CgFh");
    assert_eq!(access["aud"], "a");
    assert!(access.get("name").is_none() && access.get("groups").is_none());
    server.stop().await;
}

#[tokio::test]
async fn nonce_is_echoed_and_trusted_peer_joins_the_audience() {
    let server = enabled().await;
    let (status, body) = post(
        &server,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "a"),
            ("client_secret", SECRET),
            ("scope", "openid audience:server:client_id:peer"),
            ("nonce", "n-0S6_WzA2Mj"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("refresh_token").is_none() && body.get("scope").is_none());
    let id = payload(body["id_token"].as_str().unwrap());
    assert_eq!(id["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(id["aud"], json!(["peer", "a"]));
    assert_eq!(id["azp"], "a");
    assert_eq!(
        payload(body["access_token"].as_str().unwrap())["nonce"],
        "n-0S6_WzA2Mj"
    );
    server.stop().await;
}

#[tokio::test]
async fn scope_and_client_errors_are_dex_s() {
    let server = enabled().await;
    let cases: &[(Form, u16, Value)] = &[
        (
            &[
                ("client_id", "a"),
                ("client_secret", SECRET),
                ("scope", "openid offline_access"),
            ],
            400,
            json!({"error": "invalid_scope", "error_description": "client_credentials grant does not support offline_access scope."}),
        ),
        (
            &[
                ("client_id", "a"),
                ("client_secret", SECRET),
                ("scope", "federated:id"),
            ],
            400,
            json!({"error": "invalid_scope", "error_description": "client_credentials grant does not support federated:id scope."}),
        ),
        (
            &[
                ("client_id", "a"),
                ("client_secret", SECRET),
                ("scope", "openid bogus"),
            ],
            400,
            json!({"error": "invalid_scope", "error_description": "Unrecognized scope(s) [\"bogus\"]"}),
        ),
        (
            &[
                ("client_id", "a"),
                ("client_secret", SECRET),
                ("scope", "audience:server:client_id:cli"),
            ],
            400,
            json!({"error": "invalid_scope", "error_description": "Client can't request scope(s) [\"audience:server:client_id:cli\"]"}),
        ),
        (
            &[("client_id", "cli"), ("scope", "openid")],
            400,
            json!({"error": "unauthorized_client", "error_description": "Public clients cannot use client_credentials grant."}),
        ),
        (
            &[("client_id", "a"), ("client_secret", "wrong")],
            401,
            json!({"error": "invalid_client", "error_description": "Invalid client credentials."}),
        ),
        (
            &[("client_id", "ghost"), ("client_secret", SECRET)],
            401,
            json!({"error": "invalid_client", "error_description": "Invalid client credentials."}),
        ),
        (
            &[("client_id", "a")],
            401,
            json!({"error": "invalid_client", "error_description": "Invalid client credentials."}),
        ),
    ];
    for (fields, status, expected) in cases {
        let mut form = vec![("grant_type", "client_credentials")];
        form.extend_from_slice(fields);
        let (got_status, body) = post(&server, &form).await;
        assert_eq!((got_status, &body), (*status, expected), "{fields:?}");
    }

    // HTTP Basic works as at /token for the other grants.
    let response = server
        .http
        .post(server.url("/dex/token"))
        .basic_auth("a", Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = server
        .http
        .post(server.url("/dex/token"))
        .basic_auth("a", Some(SECRET))
        .form(&[("grant_type", "client_credentials"), ("scope", "openid")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}
