//! RFC 8693 token exchange as Dex serves it, against an in-process upstream
//! OpenID provider (the test kit's Forgejo stand-in): real upstream ID and access
//! tokens, and hostile ones (forged, unsigned, expired, another issuer's,
//! oversized) that must be refused with 401 `access_denied`, never a 500.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreClient, CoreIdToken, CoreProviderMetadata};
use openidconnect::{ClientId, ClientSecret, IssuerUrl, Nonce};
use oxidex_testkit::fake_forgejo::{FakeApp, FakeForgejo, FakeUser};
use serde_json::{Value, json};

use crate::support::TestServer;

const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const APP_SECRET: &str = "app-secret";

/// Form fields of a token request.
type Form<'a> = Vec<(&'a str, &'a str)>;

struct Setup {
    upstream: FakeForgejo,
    app: FakeApp,
    server: TestServer,
}

fn oidc_connector(
    id: &str,
    fake: &FakeForgejo,
    app: &FakeApp,
    issuer: &str,
    extra: Value,
) -> Value {
    let mut config = json!({
        "issuer": fake.issuer(),
        "clientID": app.client_id,
        "clientSecret": app.client_secret,
        "redirectURI": format!("{issuer}/callback"),
        "scopes": ["profile", "email", "groups"],
        "insecureEnableGroups": true,
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    json!({"type": "oidc", "id": id, "name": id, "config": config})
}

/// oxidex with connectors `upstream` (ID tokens), `upstream-info`
/// (`getUserInfo`), `code-only` (`grantTypes` without token exchange) and
/// `mock`; clients `app`, `cli` (public) and `limited` (only `mock`).
async fn setup_with(grant_types: Option<Value>) -> Setup {
    let upstream = FakeForgejo::start().await.unwrap();
    upstream.add_user(
        FakeUser::new(42, "alice")
            .full_name("Alice Liddell")
            .team("infra", "Owners"),
    );
    let app = upstream.add_app("http://127.0.0.1:1/unused");
    let (fake, fake_app) = (&upstream, &app);
    let server = TestServer::start_at_issuer(|issuer| {
        let mut code_only = oidc_connector("code-only", fake, fake_app, issuer, json!({}));
        code_only["grantTypes"] = json!(["authorization_code", "refresh_token"]);
        let mut config = json!({
            "issuer": issuer,
            "storage": {"type": "memory"},
            "web": {"http": "127.0.0.1:0"},
            "staticClients": [
                {"id": "app", "name": "App", "secret": APP_SECRET,
                 "redirectURIs": ["http://127.0.0.1:5555/callback"]},
                {"id": "cli", "name": "CLI", "public": true},
                {"id": "limited", "name": "Limited", "secret": "limited-secret",
                 "redirectURIs": ["http://127.0.0.1:5555/callback"],
                 "allowedConnectors": ["mock"]}
            ],
            "connectors": [
                oidc_connector("upstream", fake, fake_app, issuer, json!({})),
                oidc_connector("upstream-info", fake, fake_app, issuer,
                    // The stand-in's userinfo, like Forgejo's, has no email_verified.
                    json!({"getUserInfo": true, "insecureSkipEmailVerified": true})),
                code_only,
                // Dex's token-exchange-only setup: just the issuer.
                {"type": "oidc", "id": "issuer-only", "name": "CI",
                 "config": {"issuer": fake.issuer()}},
                {"type": "mockCallback", "id": "mock", "name": "Mock"}
            ]
        });
        if let Some(grants) = grant_types {
            config["oauth2"] = json!({"grantTypes": grants});
        }
        config
    })
    .await;
    Setup {
        upstream,
        app,
        server,
    }
}

async fn setup() -> Setup {
    setup_with(None).await
}

impl Setup {
    /// An ID token and an access token for alice, from the upstream's own code flow.
    async fn upstream_tokens(&self) -> (String, String) {
        let authorize = format!(
            "{}/login/oauth/authorize?response_type=code&client_id={}&redirect_uri={}&state=s&scope=openid%20profile%20email%20groups",
            self.upstream.url(),
            self.app.client_id,
            "http://127.0.0.1:1/unused",
        );
        let location = self.upstream.approve(&authorize, "alice").unwrap();
        let code = url::Url::parse(&location)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
            .into_owned();
        let body: Value = reqwest::Client::new()
            .post(format!("{}/login/oauth/access_token", self.upstream.url()))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:1/unused"),
                ("client_id", &self.app.client_id),
                ("client_secret", &self.app.client_secret),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            body["id_token"].as_str().unwrap().to_owned(),
            body["access_token"].as_str().unwrap().to_owned(),
        )
    }

    /// Valid upstream ID-token claims for alice, to be varied.
    fn claims(&self) -> Value {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        json!({
            "iss": self.upstream.issuer(),
            "sub": "42",
            "aud": [self.app.client_id],
            "exp": now + 600,
            "iat": now,
            "name": "Alice Liddell",
            "preferred_username": "alice",
            "email": "alice@example.test",
            "email_verified": true,
            "groups": ["infra", "infra:owners"]
        })
    }

    async fn exchange(&self, fields: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Value) {
        self.exchange_as(("app", APP_SECRET), fields).await
    }

    async fn exchange_as(
        &self,
        (client_id, secret): (&str, &str),
        fields: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut form = vec![("grant_type", GRANT), ("client_id", client_id)];
        if !secret.is_empty() {
            form.push(("client_secret", secret));
        }
        form.extend_from_slice(fields);
        let response = self
            .server
            .http
            .post(self.server.url("/dex/token"))
            .form(&form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.json().await.unwrap())
    }

    /// Exchanges an ID token at `upstream`; asserts the 401 Dex gives a refused token.
    async fn assert_refused(&self, token: &str) {
        let (status, _, body) = self
            .exchange(&[
                ("connector_id", "upstream"),
                ("subject_token_type", ID_TOKEN),
                ("subject_token", token),
            ])
            .await;
        assert_eq!(
            (status, body),
            (401, json!({"error": "access_denied"})),
            "{token}"
        );
    }
}

fn payload(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn sub(user_id: &str, connector_id: &str) -> String {
    oxidex::oidc::subject::encode_subject(user_id, connector_id)
}

#[tokio::test]
async fn id_token_for_access_token_by_default() {
    let s = setup().await;
    let doc: Value = s
        .server
        .http
        .get(s.server.url("/dex/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(GRANT)),
        "advertised by default, as Dex: {doc}"
    );

    let (id_token, _) = s.upstream_tokens().await;
    let (status, headers, body) = s
        .exchange(&[
            ("connector_id", "upstream"),
            ("subject_token_type", ID_TOKEN),
            ("subject_token", &id_token),
            ("scope", "openid email groups profile"),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["pragma"], "no-cache");
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "access_token",
            "issued_token_type",
            "token_type",
            "expires_in"
        ]
    );
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 86_400);
    let access = body["access_token"].as_str().unwrap();
    let claims = payload(access);
    assert_eq!(claims["sub"], sub("42", "upstream"));
    assert_eq!(claims["aud"], "app");
    assert_eq!(claims["email"], "alice@example.test");
    assert_eq!(claims["groups"], json!(["infra", "infra:owners"]));
    assert_eq!(claims["name"], "Alice Liddell");
    for absent in ["nonce", "auth_time", "sid"] {
        assert!(claims.get(absent).is_none(), "{absent}");
    }
    // It is one of ours: /userinfo takes it.
    let info: Value = s
        .server
        .http
        .get(s.server.url("/dex/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], sub("42", "upstream"));

    // The same with an explicit requested_token_type, and from a public client.
    let (status, _, body) = s
        .exchange_as(
            ("cli", ""),
            &[
                ("connector_id", "upstream"),
                ("subject_token_type", ID_TOKEN),
                ("subject_token", &id_token),
                ("requested_token_type", ACCESS_TOKEN),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        payload(body["access_token"].as_str().unwrap())["aud"],
        "cli"
    );
    s.server.stop().await;
}

#[tokio::test]
async fn a_connector_with_only_an_issuer_verifies_tokens() {
    let s = setup().await;
    let (id_token, _) = s.upstream_tokens().await;
    let (status, _, body) = s
        .exchange(&[
            ("connector_id", "issuer-only"),
            ("subject_token_type", ID_TOKEN),
            ("subject_token", &id_token),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        payload(body["access_token"].as_str().unwrap())["sub"],
        sub("42", "issuer-only")
    );
    // It cannot log anyone in.
    let response = s
        .server
        .http
        .get(s.server.url(
            "/dex/auth/issuer-only?client_id=app&redirect_uri=http%3A%2F%2F127.0.0.1%3A5555%2Fcallback&response_type=code&scope=openid&state=s",
        ))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_server_error(), "{}", response.status());
    s.server.stop().await;
}

#[tokio::test]
async fn id_token_requested_comes_back_in_access_token() {
    let s = setup().await;
    let (id_token, _) = s.upstream_tokens().await;
    let (status, _, body) = s
        .exchange(&[
            ("connector_id", "upstream"),
            ("subject_token_type", ID_TOKEN),
            ("subject_token", &id_token),
            ("requested_token_type", ID_TOKEN),
            ("scope", "openid email"),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["issued_token_type"], ID_TOKEN);
    assert!(body.get("id_token").is_none() && body.get("refresh_token").is_none());
    // A relying party of ours verifies it like any ID token.
    let http = reqwest::Client::new();
    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(s.server.issuer()).unwrap(), &http)
            .await
            .unwrap();
    let rp = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new("app".into()),
        Some(ClientSecret::new(APP_SECRET.into())),
    );
    let token: CoreIdToken = body["access_token"].as_str().unwrap().parse().unwrap();
    let claims = token
        .claims(&rp.id_token_verifier(), |_: Option<&Nonce>| Ok(()))
        .unwrap();
    assert_eq!(claims.subject().as_str(), sub("42", "upstream"));
    assert!(
        payload(body["access_token"].as_str().unwrap())
            .get("at_hash")
            .is_none()
    );
    s.server.stop().await;
}

#[tokio::test]
async fn access_token_needs_get_user_info_which_vouches_for_it() {
    let s = setup().await;
    let (_, access) = s.upstream_tokens().await;
    let (status, _, body) = s
        .exchange(&[
            ("connector_id", "upstream-info"),
            ("subject_token_type", ACCESS_TOKEN),
            ("subject_token", &access),
            ("scope", "openid profile"),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    let claims = payload(body["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], sub("42", "upstream-info"));
    assert_eq!(claims["preferred_username"], "alice");

    for (connector, token) in [("upstream", access.as_str()), ("upstream-info", "forged")] {
        let (status, _, body) = s
            .exchange(&[
                ("connector_id", connector),
                ("subject_token_type", ACCESS_TOKEN),
                ("subject_token", token),
            ])
            .await;
        assert_eq!((status, body), (401, json!({"error": "access_denied"})));
    }
    s.server.stop().await;
}

#[tokio::test]
async fn request_errors_are_dex_s() {
    let s = setup().await;
    let (id_token, _) = s.upstream_tokens().await;
    let invalid_request = |d: &str| json!({"error": "invalid_request", "error_description": d});
    let not_supported = |d: &str| json!({"error": "request_not_supported", "error_description": d});
    let no_connector = invalid_request("Requested connector does not exist.");
    let cases: Vec<(Form, u16, Value)> = vec![
        (
            vec![("connector_id", "upstream"), ("subject_token", &id_token)],
            400,
            not_supported("Invalid subject_token_type."),
        ),
        (
            vec![
                ("connector_id", "upstream"),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                ("subject_token", &id_token),
            ],
            400,
            not_supported("Invalid subject_token_type."),
        ),
        (
            vec![
                ("connector_id", "upstream"),
                ("subject_token_type", ID_TOKEN),
            ],
            400,
            invalid_request("Missing subject_token"),
        ),
        // requested_token_type is checked after the subject token, as Dex.
        (
            vec![
                ("connector_id", "upstream"),
                ("subject_token_type", ID_TOKEN),
                ("subject_token", &id_token),
                (
                    "requested_token_type",
                    "urn:ietf:params:oauth:token-type:refresh_token",
                ),
            ],
            400,
            not_supported("Invalid requested_token_type."),
        ),
        (
            vec![
                ("connector_id", "upstream"),
                ("subject_token_type", ID_TOKEN),
                ("subject_token", "not-a-token"),
                ("requested_token_type", "bogus"),
            ],
            401,
            json!({"error": "access_denied"}),
        ),
        // No, an unknown, or a non-verifying connector.
        (
            vec![
                ("subject_token_type", ID_TOKEN),
                ("subject_token", &id_token),
            ],
            400,
            no_connector.clone(),
        ),
        (
            vec![
                ("connector_id", "ghost"),
                ("subject_token_type", ID_TOKEN),
                ("subject_token", &id_token),
            ],
            400,
            no_connector.clone(),
        ),
        (
            vec![
                ("connector_id", "mock"),
                ("subject_token_type", ID_TOKEN),
                ("subject_token", &id_token),
            ],
            400,
            no_connector.clone(),
        ),
        // Dex HEAD: the connector gate comes before the token checks.
        (
            vec![("connector_id", "ghost"), ("subject_token_type", "bogus")],
            400,
            no_connector,
        ),
        (
            vec![
                ("connector_id", "code-only"),
                ("subject_token_type", ID_TOKEN),
                ("subject_token", &id_token),
            ],
            400,
            invalid_request("Requested connector does not support this grant type."),
        ),
    ];
    for (fields, status, expected) in &cases {
        let (got, _, body) = s.exchange(fields).await;
        assert_eq!((got, &body), (*status, expected), "{fields:?}");
    }

    let (status, _, body) = s
        .exchange_as(
            ("limited", "limited-secret"),
            &[
                ("connector_id", "upstream"),
                ("subject_token_type", ID_TOKEN),
                ("subject_token", &id_token),
            ],
        )
        .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "invalid_grant", "error_description": "Connector not allowed for this client."})
        )
    );
    for credentials in [("app", "wrong"), ("ghost", "x")] {
        let (status, _, body) = s
            .exchange_as(
                credentials,
                &[
                    ("connector_id", "upstream"),
                    ("subject_token_type", ID_TOKEN),
                    ("subject_token", &id_token),
                ],
            )
            .await;
        assert_eq!(
            (status, body),
            (
                401,
                json!({"error": "invalid_client", "error_description": "Invalid client credentials."})
            )
        );
    }
    s.server.stop().await;
}

#[tokio::test]
async fn not_served_when_left_out_of_grant_types() {
    let s = setup_with(Some(json!(["authorization_code", "refresh_token"]))).await;
    let (id_token, _) = s.upstream_tokens().await;
    let (status, _, body) = s
        .exchange(&[
            ("connector_id", "upstream"),
            ("subject_token_type", ID_TOKEN),
            ("subject_token", &id_token),
        ])
        .await;
    assert_eq!(
        (status, body),
        (400, json!({"error": "unsupported_grant_type"}))
    );
    s.server.stop().await;
}

#[tokio::test]
async fn hostile_subject_tokens_are_refused_without_500() {
    let s = setup().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();

    // Expired, or not yet usable because of a missing exp.
    let mut expired = s.claims();
    expired["exp"] = json!(now - 120);
    expired["iat"] = json!(now - 720);
    s.assert_refused(&s.upstream.sign(&expired).unwrap()).await;
    let mut no_exp = s.claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    s.assert_refused(&s.upstream.sign(&no_exp).unwrap()).await;

    // Signed by the right key but naming another issuer.
    let mut other_iss = s.claims();
    other_iss["iss"] = json!("https://evil.example");
    s.assert_refused(&s.upstream.sign(&other_iss).unwrap())
        .await;

    // Another provider's token, and one claiming our upstream's issuer.
    let other = FakeForgejo::start().await.unwrap();
    let mut foreign = s.claims();
    foreign["iss"] = json!(other.issuer());
    s.assert_refused(&other.sign(&foreign).unwrap()).await;
    s.upstream.clear_requests();
    for _ in 0..3 {
        s.assert_refused(&other.sign(&s.claims()).unwrap()).await;
    }
    let refetches = s
        .upstream
        .requests()
        .iter()
        .filter(|r| r.contains("openid-configuration"))
        .count();
    assert!(
        refetches <= 1,
        "forged signatures refetched discovery {refetches} times"
    );

    // Unsigned (alg none), truncated, tampered, garbage.
    let good = s.upstream.sign(&s.claims()).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    s.assert_refused(&format!("{none_header}.{}.", parts[1]))
        .await;
    s.assert_refused(&format!("{}.{}", parts[0], parts[1]))
        .await;
    let mut tampered = s.claims();
    tampered["sub"] = json!("1");
    let forged_payload = URL_SAFE_NO_PAD.encode(tampered.to_string());
    s.assert_refused(&format!("{}.{forged_payload}.{}", parts[0], parts[2]))
        .await;
    for garbage in ["x", "a.b.c", "...", "\u{0}\u{1}", &"e".repeat(5000)] {
        s.assert_refused(garbage).await;
    }

    // Valid signature but no usable identity (Dex needs `name`).
    let mut nameless = s.claims();
    nameless.as_object_mut().unwrap().remove("name");
    s.assert_refused(&s.upstream.sign(&nameless).unwrap()).await;

    // Oversized: refused before the upstream is asked.
    s.upstream.clear_requests();
    let huge = "a".repeat(oxidex::oidc::token_exchange::MAX_SUBJECT_TOKEN_LEN + 1);
    let (status, _, body) = s
        .exchange(&[
            ("connector_id", "upstream-info"),
            ("subject_token_type", ACCESS_TOKEN),
            ("subject_token", &huge),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    assert!(
        s.upstream.requests().is_empty(),
        "{:?}",
        s.upstream.requests()
    );

    // The audience is not checked, as in Dex: any ID token this issuer signed
    // identifies its user (the trust is in the issuer; see docs/threat-model.md).
    let mut other_aud = s.claims();
    other_aud["aud"] = json!("some-other-client");
    let (status, _, body) = s
        .exchange(&[
            ("connector_id", "upstream"),
            ("subject_token_type", ID_TOKEN),
            ("subject_token", &s.upstream.sign(&other_aud).unwrap()),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    s.server.stop().await;
}

#[tokio::test]
async fn oversized_userinfo_answer_is_refused_not_500() {
    let s = setup().await;
    let (_, access) = s.upstream_tokens().await;
    s.upstream.set_response_padding(2 * 1024 * 1024);
    let (status, _, body) = s
        .exchange(&[
            ("connector_id", "upstream-info"),
            ("subject_token_type", ACCESS_TOKEN),
            ("subject_token", &access),
        ])
        .await;
    assert_eq!((status, body), (401, json!({"error": "access_denied"})));
    s.server.stop().await;
}

#[tokio::test]
async fn expiry_follows_the_server_clock() {
    use crate::support::{ManualClock, settings_from};
    let upstream = FakeForgejo::start().await.unwrap();
    let app = upstream.add_app("http://127.0.0.1:1/unused");
    let issuer = "http://127.0.0.1:5556/dex";
    let config = json!({
        "issuer": issuer,
        "storage": {"type": "memory"},
        "web": {"http": "127.0.0.1:0"},
        "staticClients": [{"id": "app", "name": "App", "secret": APP_SECRET,
                           "redirectURIs": ["http://127.0.0.1:5555/callback"]}],
        "connectors": [oidc_connector("upstream", &upstream, &app, issuer, json!({}))]
    });
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_from(&config, dir.path());
    let clock = ManualClock::at(SystemTime::now());
    let server = TestServer::start_with(settings, clock.clock(), Some(dir)).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = upstream
        .sign(&json!({
            "iss": upstream.issuer(), "sub": "7", "aud": "x", "name": "Seven",
            "email": "seven@example.test", "email_verified": true,
            "exp": now + 300, "iat": now
        }))
        .unwrap();
    let exchange = || async {
        server
            .http
            .post(server.url("/dex/token"))
            .form(&[
                ("grant_type", GRANT),
                ("client_id", "app"),
                ("client_secret", APP_SECRET),
                ("connector_id", "upstream"),
                ("subject_token_type", ID_TOKEN),
                ("subject_token", &token),
            ])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(exchange().await, 200);
    clock.advance(Duration::from_secs(600));
    assert_eq!(exchange().await, 401);
    server.stop().await;
}
