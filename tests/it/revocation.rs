//! `/token/revoke` (RFC 7009), beyond Dex: refresh-token families and access
//! tokens, driven with the openidconnect crate's revocation support where it can
//! express the request, with raw HTTP for the malformed ones.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreClient, CoreRevocableToken};
use openidconnect::{
    AccessToken, AuthType, ClientId, ClientSecret, HttpRequest, HttpResponse, IssuerUrl,
    JsonWebKeySet, RefreshToken, RequestTokenError, RevocationErrorResponseType, RevocationUrl,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::browser::query_param;
use crate::device::clock;
use crate::limits::futures_join_all;
use crate::login::{CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, browser_login, password_db_config};
use crate::support::{ManualClock, TestServer, settings_from, temp_sqlite};

const OTHER_ID: &str = "other-app";
const OTHER_SECRET: &str = "b3RoZXItYXBwLXNlY3JldA";
const PUBLIC_ID: &str = "public-cli";

fn config(issuer: &str) -> Value {
    let mut config = password_db_config(issuer);
    config["oauth2"] = json!({"passwordConnector": "local"});
    let clients = config["staticClients"].as_array_mut().unwrap();
    clients.push(json!({
        "id": OTHER_ID,
        "name": "Other App",
        "secret": OTHER_SECRET,
        "redirectURIs": [REDIRECT_URI]
    }));
    clients.push(json!({"id": PUBLIC_ID, "name": "Public CLI", "public": true}));
    config
}

async fn start(clock: &ManualClock) -> TestServer {
    start_with(clock, config).await
}

async fn start_with(clock: &ManualClock, make_config: impl FnOnce(&str) -> Value) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}/dex", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_from(&make_config(&issuer), dir.path());
    TestServer::start_on(listener, settings, clock.clock(), Some(dir)).await
}

/// A client's credentials: (id, secret); public clients have an empty secret.
type Creds = (&'static str, &'static str);
const APP: Creds = (CLIENT_ID, CLIENT_SECRET);
const OTHER: Creds = (OTHER_ID, OTHER_SECRET);
const PUBLIC: Creds = (PUBLIC_ID, "");

/// Password grant with `offline_access`: the token response.
async fn tokens(server: &TestServer, (id, secret): Creds) -> Value {
    let response = server
        .http
        .post(format!("{}/token", server.issuer()))
        .form(&[
            ("grant_type", "password"),
            ("username", "admin@example.com"),
            ("password", "password"),
            ("scope", "openid email offline_access"),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// `grant_type=refresh_token`: (status, body).
async fn refresh(server: &TestServer, (id, secret): Creds, token: &str) -> (u16, Value) {
    let response = server
        .http
        .post(format!("{}/token", server.issuer()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn introspect(server: &TestServer, (id, secret): Creds, token: &str) -> Value {
    let response = server
        .http
        .post(format!("{}/token/introspect", server.issuer()))
        .basic_auth(id, Some(secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn active(server: &TestServer, creds: Creds, token: &str) -> bool {
    introspect(server, creds, token).await["active"] == json!(true)
}

/// `/userinfo` with the bearer token: the response.
async fn userinfo(server: &TestServer, token: &str) -> reqwest::Response {
    server
        .http
        .get(format!("{}/userinfo", server.issuer()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Sends what the openidconnect crate built to the plain-HTTP test server: the
/// crate refuses a revocation URL that is not https (RFC 7009 §2), so the URL
/// handed to it says https and this client speaks http.
async fn plain_http(request: HttpRequest) -> Result<HttpResponse, reqwest::Error> {
    let url = request.uri().to_string().replacen("https://", "http://", 1);
    let http = reqwest::Client::new();
    let mut builder = http.request(request.method().clone(), url);
    for (name, value) in request.headers() {
        builder = builder.header(name, value);
    }
    let response = builder.body(request.body().clone()).send().await?;
    let mut out = openidconnect::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        out = out.header(name, value);
    }
    Ok(out.body(response.bytes().await?.to_vec()).unwrap())
}

/// How the relying party authenticates.
#[derive(Clone, Copy)]
enum Auth {
    Basic,
    Post,
}

/// Revokes `token` with the openidconnect crate: `Ok(())` on 200, else the
/// error code the server answered.
async fn rp_revoke(
    server: &TestServer,
    (id, secret): Creds,
    auth: Auth,
    token: CoreRevocableToken,
) -> Result<(), String> {
    let issuer = IssuerUrl::new(server.issuer()).unwrap();
    let revocation_url = format!("{}/token/revoke", server.issuer()).replacen("http", "https", 1);
    let mut client = CoreClient::new(ClientId::new(id.into()), issuer, JsonWebKeySet::new(vec![]))
        .set_revocation_url(RevocationUrl::new(revocation_url).unwrap())
        .set_auth_type(match auth {
            Auth::Basic => AuthType::BasicAuth,
            Auth::Post => AuthType::RequestBody,
        });
    if !secret.is_empty() {
        client = client.set_client_secret(ClientSecret::new(secret.into()));
    }
    match client
        .revoke_token(token)
        .unwrap()
        .request_async(&plain_http)
        .await
    {
        Ok(()) => Ok(()),
        Err(RequestTokenError::ServerResponse(error)) => Err(match error.error() {
            RevocationErrorResponseType::Basic(basic) => basic.as_ref().to_owned(),
            RevocationErrorResponseType::UnsupportedTokenType => {
                "unsupported_token_type".to_owned()
            }
        }),
        Err(other) => panic!("revocation request failed: {other:?}"),
    }
}

fn refresh_token(token: &Value) -> CoreRevocableToken {
    CoreRevocableToken::RefreshToken(RefreshToken::new(str_of(token, "refresh_token")))
}

fn access_token(token: &Value) -> CoreRevocableToken {
    CoreRevocableToken::AccessToken(AccessToken::new(str_of(token, "access_token")))
}

fn str_of(token: &Value, name: &str) -> String {
    token[name].as_str().unwrap().to_owned()
}

/// Raw `POST /token/revoke` with a form body and Basic credentials.
async fn raw_revoke(
    server: &TestServer,
    creds: Option<Creds>,
    form: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = server
        .http
        .post(format!("{}/token/revoke", server.issuer()));
    if let Some((id, secret)) = creds {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.form(form).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A revoked refresh token answers `invalid_grant` (RFC 6749 §5.2), not
/// Dex's unknown-token `invalid_request` (still used for tokens never seen).
fn assert_refresh_revoked((status, body): (u16, Value)) {
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "invalid_grant", "error_description": "Refresh token has been revoked."})
        )
    );
}

// 81
#[tokio::test]
async fn discovery_advertises_the_revocation_endpoint() {
    let server = start(&clock()).await;
    let doc: Value = server
        .http
        .get(format!(
            "{}/.well-known/openid-configuration",
            server.issuer()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["revocation_endpoint"],
        json!(format!("{}/token/revoke", server.issuer()))
    );
    assert_eq!(
        doc["revocation_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    server.stop().await;
}

// 82, 83, 86, 88: the whole story with the openidconnect crate.
#[tokio::test]
async fn revoking_a_refresh_token_ends_its_family_and_its_access_tokens() {
    let clock = clock();
    let server = start(&clock).await;
    let first = tokens(&server, APP).await;
    let access = str_of(&first, "access_token");
    let id_token = str_of(&first, "id_token");
    assert!(active(&server, APP, &str_of(&first, "refresh_token")).await);

    rp_revoke(&server, APP, Auth::Basic, refresh_token(&first))
        .await
        .unwrap();

    assert_refresh_revoked(refresh(&server, APP, &str_of(&first, "refresh_token")).await);
    assert_eq!(
        introspect(&server, APP, &str_of(&first, "refresh_token")).await,
        json!({"active": false})
    );
    // 88: the grant's access token (and its ID token at /userinfo) is dead too.
    assert_eq!(
        introspect(&server, APP, &access).await,
        json!({"active": false})
    );
    for token in [&access, &id_token] {
        let response = userinfo(&server, token).await;
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Bearer error="invalid_token""#
        );
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"],
            "invalid_token"
        );
    }
    // 83: revoking it again is still 200.
    rp_revoke(&server, APP, Auth::Post, refresh_token(&first))
        .await
        .unwrap();

    // A login of the same user at the same client a millisecond later is not
    // affected (the deny list goes by the mint time in the `jti`).
    clock.advance(Duration::from_millis(1));
    let later = tokens(&server, APP).await;
    assert!(active(&server, APP, &str_of(&later, "access_token")).await);
    assert_eq!(
        userinfo(&server, &str_of(&later, "access_token"))
            .await
            .status(),
        200
    );
    assert_eq!(
        refresh(&server, APP, &str_of(&later, "refresh_token"))
            .await
            .0,
        200
    );
    server.stop().await;
}

// 86: any generation of the family ends it.
#[tokio::test]
async fn revoking_with_the_obsolete_secret_ends_the_whole_family() {
    let clock = clock();
    let server = start(&clock).await;
    let first = tokens(&server, APP).await;
    // Past the reuse window, so the refresh rotates the secret.
    clock.advance(Duration::from_secs(10));
    let (status, second) = refresh(&server, APP, &str_of(&first, "refresh_token")).await;
    assert_eq!(status, 200);
    assert_ne!(first["refresh_token"], second["refresh_token"]);

    rp_revoke(&server, APP, Auth::Post, refresh_token(&first))
        .await
        .unwrap();
    assert_refresh_revoked(refresh(&server, APP, &str_of(&second, "refresh_token")).await);
    assert!(!active(&server, APP, &str_of(&second, "access_token")).await);

    // A secret matching neither generation revokes nothing.
    let third = tokens(&server, APP).await;
    let wire = URL_SAFE_NO_PAD
        .decode(str_of(&third, "refresh_token"))
        .unwrap();
    let mut forged = wire.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let forged = URL_SAFE_NO_PAD.encode(forged);
    let (status, _) = raw_revoke(&server, Some(APP), &[("token", &forged)]).await;
    assert_eq!(status, 200);
    assert_eq!(
        refresh(&server, APP, &str_of(&third, "refresh_token"))
            .await
            .0,
        200
    );
    server.stop().await;
}

// 87
#[tokio::test]
async fn revoking_an_access_token_denies_it_until_it_expires() {
    let clock = clock();
    let server = start(&clock).await;
    let grant = tokens(&server, APP).await;
    let access = str_of(&grant, "access_token");
    assert_eq!(userinfo(&server, &access).await.status(), 200);

    rp_revoke(&server, APP, Auth::Basic, access_token(&grant))
        .await
        .unwrap();
    assert_eq!(
        introspect(&server, APP, &access).await,
        json!({"active": false})
    );
    let response = userinfo(&server, &access).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "invalid_token", "error_description": "The access token has been revoked."})
    );
    // Only that token: the refresh token and its next access token still work.
    let (status, next) = refresh(&server, APP, &str_of(&grant, "refresh_token")).await;
    assert_eq!(status, 200);
    assert!(active(&server, APP, &str_of(&next, "access_token")).await);
    // 83: twice is fine.
    rp_revoke(&server, APP, Auth::Post, access_token(&grant))
        .await
        .unwrap();

    // The deny-list row lives until the token's expiry (24 h), then is collected.
    let storage = server.state.live().provider.storage().clone();
    let jti = payload(&access)["jti"].as_str().unwrap().to_owned();
    let key = format!("jti {jti}");
    assert!(storage.get_revoked_access_tokens(&key).is_ok());
    assert_eq!(
        storage
            .garbage_collect(clock.now())
            .unwrap()
            .revoked_access_tokens,
        0
    );
    clock.advance(Duration::from_secs(24 * 3600 + 1));
    assert_eq!(
        storage
            .garbage_collect(clock.now())
            .unwrap()
            .revoked_access_tokens,
        1
    );
    assert!(storage.get_revoked_access_tokens(&key).is_err());
    server.stop().await;
}

fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn an_expired_access_token_answers_200_and_stores_nothing() {
    let clock = clock();
    let server = start(&clock).await;
    let grant = tokens(&server, APP).await;
    let access = str_of(&grant, "access_token");
    clock.advance(Duration::from_secs(24 * 3600 + 1));
    rp_revoke(&server, APP, Auth::Basic, access_token(&grant))
        .await
        .unwrap();
    let storage = server.state.live().provider.storage().clone();
    let jti = payload(&access)["jti"].as_str().unwrap().to_owned();
    assert!(
        storage
            .get_revoked_access_tokens(&format!("jti {jti}"))
            .is_err()
    );
    server.stop().await;
}

// 84
#[tokio::test]
async fn a_wrong_or_unknown_hint_still_revokes_the_token() {
    let clock = clock();
    let server = start(&clock).await;
    let grant = tokens(&server, APP).await;
    let (access, refresh_value) = (
        str_of(&grant, "access_token"),
        str_of(&grant, "refresh_token"),
    );
    let (status, _) = raw_revoke(
        &server,
        Some(APP),
        &[("token", &access), ("token_type_hint", "refresh_token")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(!active(&server, APP, &access).await);
    let (status, _) = raw_revoke(
        &server,
        Some(APP),
        &[
            ("token", &refresh_value),
            ("token_type_hint", "id_token_of_sorts"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_refresh_revoked(refresh(&server, APP, &refresh_value).await);

    // The crate's own hints, crossed.
    let grant = tokens(&server, APP).await;
    let crossed =
        CoreRevocableToken::AccessToken(AccessToken::new(str_of(&grant, "refresh_token")));
    rp_revoke(&server, APP, Auth::Basic, crossed).await.unwrap();
    assert_refresh_revoked(refresh(&server, APP, &str_of(&grant, "refresh_token")).await);
    server.stop().await;
}

// 85
#[tokio::test]
async fn another_clients_tokens_are_not_revoked() {
    let clock = clock();
    let server = start(&clock).await;
    let grant = tokens(&server, APP).await;
    let (access, refresh_value) = (
        str_of(&grant, "access_token"),
        str_of(&grant, "refresh_token"),
    );

    // A confidential caller is told no, with either credential style.
    for auth in [Auth::Basic, Auth::Post] {
        for token in [refresh_token(&grant), access_token(&grant)] {
            assert_eq!(
                rp_revoke(&server, OTHER, auth, token).await,
                Err("invalid_request".to_owned())
            );
        }
    }
    // A public caller gets 200 (no oracle for anyone who names a public client).
    for token in [refresh_token(&grant), access_token(&grant)] {
        rp_revoke(&server, PUBLIC, Auth::Post, token).await.unwrap();
    }
    assert!(active(&server, APP, &access).await);
    assert!(active(&server, APP, &refresh_value).await);
    assert_eq!(userinfo(&server, &access).await.status(), 200);
    assert_eq!(refresh(&server, APP, &refresh_value).await.0, 200);

    // A token of ours the caller does not hold the secret for is "unknown": 200.
    let wire = URL_SAFE_NO_PAD.decode(&refresh_value).unwrap();
    let mut forged = wire.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let (status, _) = raw_revoke(
        &server,
        Some(OTHER),
        &[("token", &URL_SAFE_NO_PAD.encode(forged))],
    )
    .await;
    assert_eq!(status, 200);
    server.stop().await;
}

// 89 (and the public client revoking its own token without a secret)
#[tokio::test]
async fn revocation_leaves_other_clients_and_grants_untouched() {
    let clock = clock();
    let server = start(&clock).await;
    let app = tokens(&server, APP).await;
    let other = tokens(&server, OTHER).await;
    let public = tokens(&server, PUBLIC).await;

    rp_revoke(&server, PUBLIC, Auth::Post, refresh_token(&public))
        .await
        .unwrap();
    assert_refresh_revoked(refresh(&server, PUBLIC, &str_of(&public, "refresh_token")).await);
    rp_revoke(&server, APP, Auth::Basic, refresh_token(&app))
        .await
        .unwrap();

    // The same user's grant at another client lives on, tokens and all.
    assert!(active(&server, OTHER, &str_of(&other, "access_token")).await);
    assert_eq!(
        userinfo(&server, &str_of(&other, "access_token"))
            .await
            .status(),
        200
    );
    assert_eq!(
        refresh(&server, OTHER, &str_of(&other, "refresh_token"))
            .await
            .0,
        200
    );

    // A public client that sends a secret is refused as at /token.
    let (status, body) = raw_revoke(
        &server,
        Some((PUBLIC_ID, "guess")),
        &[("token", &str_of(&other, "refresh_token"))],
    )
    .await;
    assert_eq!((status, &body["error"]), (401, &json!("invalid_client")));
    server.stop().await;
}

// 82 and the malformed requests.
#[tokio::test]
async fn client_authentication_and_malformed_requests() {
    let clock = clock();
    let server = start(&clock).await;
    let grant = tokens(&server, APP).await;
    let refresh_value = str_of(&grant, "refresh_token");
    let revoke_url = format!("{}/token/revoke", server.issuer());

    for creds in [None, Some((CLIENT_ID, "nope")), Some(("ghost", "x"))] {
        let (status, body) = raw_revoke(&server, creds, &[("token", &refresh_value)]).await;
        assert_eq!(
            (status, body),
            (
                401,
                json!({"error": "invalid_client", "error_description": "Invalid client credentials."})
            )
        );
    }
    assert_eq!(
        rp_revoke(
            &server,
            (CLIENT_ID, "nope"),
            Auth::Post,
            refresh_token(&grant)
        )
        .await,
        Err("invalid_client".to_owned())
    );
    for form in [
        vec![],
        vec![("token", "")],
        vec![("token_type_hint", "refresh_token")],
    ] {
        let (status, body) = raw_revoke(&server, Some(APP), &form).await;
        assert_eq!(
            (status, body),
            (
                400,
                json!({"error": "invalid_request", "error_description": "Required param: token."})
            )
        );
    }
    // Parameters appear at most once (RFC 6749 §3.2); nothing is revoked.
    let (status, body) = raw_revoke(
        &server,
        Some(APP),
        &[("token", "garbage"), ("token", &refresh_value)],
    )
    .await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_request")));
    let (status, _) = raw_revoke(
        &server,
        None,
        &[
            ("token", &refresh_value),
            ("client_id", CLIENT_ID),
            ("client_id", OTHER_ID),
            ("client_secret", CLIENT_SECRET),
        ],
    )
    .await;
    assert_eq!(status, 400);
    // The token in the query string is not read (credentials and tokens belong
    // in the body), and GET is refused.
    let query = server
        .http
        .post(format!("{revoke_url}?token={refresh_value}"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("token_type_hint", "refresh_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(query.status(), 400);
    let get = server
        .http
        .get(format!("{revoke_url}?token={refresh_value}"))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 400);
    // A body beyond the form limit is refused before anything is looked at.
    let huge = format!("token={refresh_value}&pad={}", "a".repeat(70 * 1024));
    let response = server
        .http
        .post(&revoke_url)
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(refresh(&server, APP, &refresh_value).await.0, 200);
    server.stop().await;
}

// 83: whatever is not a valid token of ours is 200, and changes nothing.
#[tokio::test]
async fn unknown_malformed_and_foreign_tokens_answer_200() {
    let clock = clock();
    let server = start(&clock).await;
    let grant = tokens(&server, APP).await;
    let access = str_of(&grant, "access_token");
    let claims = payload(&access);
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let unsigned = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims));
    let mut foreign = claims.clone();
    foreign["iss"] = json!("https://elsewhere.example");
    let parts: Vec<&str> = access.split('.').collect();
    // Our header and signature on another payload: the signature fails.
    let resigned = format!("{}.{}.{}", parts[0], b64(&foreign), parts[2]);
    let hs256 = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "HS256", "typ": "JWT"})),
        b64(&claims),
        URL_SAFE_NO_PAD.encode([7u8; 32])
    );
    let long_garbage = "x".repeat(60 * 1024);
    for token in [
        "garbage",
        "Chl.not-a-token",
        "ChlhYmM",
        unsigned.as_str(),
        resigned.as_str(),
        hs256.as_str(),
        long_garbage.as_str(),
    ] {
        let (status, body) = raw_revoke(&server, Some(APP), &[("token", token)]).await;
        assert_eq!((status, body), (200, Value::Null), "{token:.40}");
    }
    assert!(active(&server, APP, &access).await);
    assert_eq!(userinfo(&server, &access).await.status(), 200);
    let storage = server.state.live().provider.storage().clone();
    let jti = claims["jti"].as_str().unwrap();
    assert!(
        storage
            .get_revoked_access_tokens(&format!("jti {jti}"))
            .is_err()
    );
    server.stop().await;
}

/// Tokens signed with our key but not revocable by the caller: another issuer's
/// (200, nothing stored), another client's (400 for a confidential caller), or
/// minted before tokens had a `jti` (400 `unsupported_token_type`).
#[tokio::test]
async fn tokens_we_signed_are_checked_before_the_deny_list() {
    let clock = clock();
    let server = start(&clock).await;
    let grant = tokens(&server, APP).await;
    let claims = payload(&str_of(&grant, "access_token"));
    let keyset = server.state.live().provider.keys().keyset().await.unwrap();
    let storage = server.state.live().provider.storage().clone();
    let sign = |edit: &dyn Fn(&mut Value)| {
        let mut claims = claims.clone();
        edit(&mut claims);
        keyset.sign_jwt(&claims).unwrap()
    };
    let jti_key = format!("jti {}", claims["jti"].as_str().unwrap());

    let foreign = sign(&|c| c["iss"] = json!("https://elsewhere.example/dex"));
    assert_eq!(
        raw_revoke(&server, Some(APP), &[("token", &foreign)])
            .await
            .0,
        200
    );
    assert!(storage.get_revoked_access_tokens(&jti_key).is_err());

    let for_other = sign(&|c| c["aud"] = json!(OTHER_ID));
    assert_eq!(
        raw_revoke(&server, Some(APP), &[("token", &for_other)]).await,
        (
            400,
            json!({"error": "invalid_request", "error_description": "The client is not authorized to revoke the presented token."})
        )
    );
    assert!(storage.get_revoked_access_tokens(&jti_key).is_err());
    // With several audiences the token belongs to `azp`.
    let shared = sign(&|c| {
        c["aud"] = json!([OTHER_ID, CLIENT_ID]);
        c["azp"] = json!(OTHER_ID);
    });
    assert_eq!(
        raw_revoke(&server, Some(APP), &[("token", &shared)])
            .await
            .0,
        400
    );

    let old = sign(&|c| {
        c.as_object_mut().unwrap().remove("jti");
    });
    let (status, body) = raw_revoke(&server, Some(APP), &[("token", &old)]).await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("unsupported_token_type"))
    );
    assert!(active(&server, APP, &str_of(&grant, "access_token")).await);
    server.stop().await;
}

// A replayed authorization code after its refresh token was revoked stays a
// plain invalid_grant.
#[tokio::test]
async fn a_code_replayed_after_revocation_is_still_refused_cleanly() {
    let clock = clock();
    let server = start(&clock).await;
    let auth_url = format!(
        "{}/auth?client_id={CLIENT_ID}&redirect_uri={REDIRECT_URI}&response_type=code&scope=openid+offline_access&state=st",
        server.issuer(),
    );
    let back = browser_login(&server, &auth_url, "admin@example.com", "password").await;
    let code = query_param(&back, "code").unwrap();
    let exchange = || async {
        let response = server
            .http
            .post(format!("{}/token", server.issuer()))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT_URI),
            ])
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };
    let (status, grant) = exchange().await;
    assert_eq!(status, 200);
    rp_revoke(&server, APP, Auth::Basic, refresh_token(&grant))
        .await
        .unwrap();
    let (status, body) = exchange().await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_grant")));
    server.stop().await;
}

/// Replay detection deletes a family too (a rotated refresh token or a redeemed
/// code presented again): the grant's access tokens go with it, as at revocation.
#[tokio::test]
async fn replay_detection_also_denies_the_grants_access_tokens() {
    let clock = clock();
    let server = start(&clock).await;
    let first = tokens(&server, APP).await;
    clock.advance(Duration::from_secs(10));
    let (status, second) = refresh(&server, APP, &str_of(&first, "refresh_token")).await;
    assert_eq!(status, 200);
    assert!(active(&server, APP, &str_of(&second, "access_token")).await);
    let (status, body) = refresh(&server, APP, &str_of(&first, "refresh_token")).await;
    assert_eq!((status, &body["error"]), (400, &json!("invalid_grant")));
    for grant in [&first, &second] {
        assert!(!active(&server, APP, &str_of(grant, "access_token")).await);
        assert_eq!(
            userinfo(&server, &str_of(grant, "access_token"))
                .await
                .status(),
            401
        );
    }

    clock.advance(Duration::from_secs(1));
    let auth_url = format!(
        "{}/auth?client_id={CLIENT_ID}&redirect_uri={REDIRECT_URI}&response_type=code&scope=openid+offline_access&state=st",
        server.issuer(),
    );
    let back = browser_login(&server, &auth_url, "admin@example.com", "password").await;
    let code = query_param(&back, "code").unwrap();
    let exchange = || async {
        let response = server
            .http
            .post(format!("{}/token", server.issuer()))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT_URI),
            ])
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };
    let (status, grant) = exchange().await;
    assert_eq!(status, 200);
    assert!(active(&server, APP, &str_of(&grant, "access_token")).await);
    assert_eq!(exchange().await.0, 400);
    assert!(!active(&server, APP, &str_of(&grant, "access_token")).await);
    // Replay detection forgets the family (Dex's unknown-token answer).
    let (status, body) = refresh(&server, APP, &str_of(&grant, "refresh_token")).await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_request")),
        "{body}"
    );
    server.stop().await;
}

/// A refresh racing the revocation must not bring the family back: after N
/// parallel refreshes and a revocation, no secret any of them saw works and none
/// of their access tokens is active (SQLite, the real concurrent backend).
/// Without a reuse window the racing refreshes mostly trip replay detection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_refreshes_cannot_resurrect_a_revoked_family() {
    race_refreshes_and_revocation(None).await;
}

/// The same with a reuse window: the racing refreshes all succeed until the
/// revocation deletes the family.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_refreshes_in_the_reuse_window_cannot_resurrect_a_revoked_family() {
    race_refreshes_and_revocation(Some("1m")).await;
}

async fn race_refreshes_and_revocation(reuse_interval: Option<&str>) {
    const REFRESHES: usize = 8;
    let clock = clock();
    let dir = tempfile::tempdir().unwrap();
    let server = start_with(&clock, |issuer| {
        let mut config = config(issuer);
        config["storage"] = json!({"type": "sqlite3", "config": {"file": temp_sqlite(dir.path())}});
        if let Some(interval) = reuse_interval {
            config["expiry"] = json!({"refreshTokens": {"reuseInterval": interval}});
        }
        config
    })
    .await;
    for round in 0..3 {
        let grant = tokens(&server, APP).await;
        let first = str_of(&grant, "refresh_token");
        // Past any reuse window: the first refresh rotates.
        clock.advance(Duration::from_secs(120));
        let refreshes = (0..REFRESHES).map(|_| refresh(&server, APP, &first));
        let revocation = rp_revoke(&server, APP, Auth::Basic, refresh_token(&grant));
        let (results, revoked) = tokio::join!(futures_join_all(refreshes), revocation);
        revoked.unwrap();
        let mut secrets = vec![first.clone()];
        let mut accesses = vec![str_of(&grant, "access_token")];
        for (status, body) in results {
            if status == 200 {
                secrets.push(str_of(&body, "refresh_token"));
                accesses.push(str_of(&body, "access_token"));
            } else {
                assert_eq!(status, 400, "round {round}: {body}");
            }
        }
        for secret in &secrets {
            // Ended by the revocation (invalid_grant) or, first, by replay
            // detection among the racing refreshes (the unknown-token error).
            let (status, body) = refresh(&server, APP, secret).await;
            assert_eq!(status, 400, "round {round}: {body}");
            assert!(
                body["error"] == "invalid_grant" || body["error"] == "invalid_request",
                "round {round}: {body}"
            );
            assert!(!active(&server, APP, secret).await, "round {round}");
        }
        for access in &accesses {
            assert!(!active(&server, APP, access).await, "round {round}");
            assert_eq!(userinfo(&server, access).await.status(), 401);
        }
        let storage = server.state.live().provider.storage().clone();
        let families = storage
            .list_refresh_tokens()
            .unwrap()
            .into_iter()
            .filter(|t| t.client_id == CLIENT_ID)
            .count();
        assert_eq!(families, 0, "round {round}");
        clock.advance(Duration::from_secs(1));
    }
    server.stop().await;
}
