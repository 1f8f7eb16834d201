//! The fake forge against the real one: every exchange `checks/forgejo/probe.py`
//! recorded from a real forge (Gitea 1.26.0, `checks/forgejo/observed-gitea-1.26.0.json`)
//! that the fake serves is replayed against the fake, and its answer must have the
//! recorded status, content type and shape: the same field names with the same JSON
//! types, recursively, and the same values where the value is protocol (OAuth2
//! `error` codes and descriptions, `token_type`). So the fake the connector tests
//! run against cannot drift from the real thing unnoticed.
//!
//! Differences the fake keeps on purpose are listed in [`ALLOWED`] with the reason;
//! anything else that differs fails the test. Not compared: the real access and
//! refresh tokens are JWTs (the fake's are opaque; no client may look inside), and
//! `/api/v1/user/orgs`, which the fake does not serve.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oxidex_testkit::fake_forgejo::{FakeApp, FakeForgejo, FakeUser, callback_query};
use serde_json::{Map, Value, json};

const OBSERVED: &str = include_str!("../../../checks/forgejo/observed-gitea-1.26.0.json");
const REDIRECT_URI: &str = "http://127.0.0.1:5556/dex/callback";

/// (recorded exchange, JSON path inside its answer, why the fake differs there).
const ALLOWED: &[(&str, &str, &str)] = &[
    (
        "api_user",
        "body.pronouns",
        "Forgejo has `pronouns` on users, Gitea not; the fake is Forgejo",
    ),
    (
        "api_user_bad_token",
        "body.message",
        "Forgejo's 401 text differs from Gitea's; connectors read only the status",
    ),
    (
        "discovery",
        "body.id_token_signing_alg_values_supported",
        "the fake signs ID tokens with ES256 (the real forge RS256): it exercises a second algorithm",
    ),
    (
        "id_token_header",
        "body.alg",
        "ES256 in the fake, RS256 in the real forge (see discovery)",
    ),
    (
        "id_token_header",
        "body.kid",
        "the fake signs with oxidex's own signer, which names its key; the real forge \
         does not (its JWKS has one key), which the end-to-end check covers",
    ),
    (
        "id_token_header",
        "body.typ",
        "oxidex's signer writes no `typ`; no client depends on it",
    ),
    (
        "jwks",
        "body.keys[0]",
        "an ES256 key (crv, x, y) where the real forge has an RSA key (n, e)",
    ),
    (
        "oidc_userinfo_bad_token",
        "headers.WWW-Authenticate",
        "the realm is the forge's app name",
    ),
];

/// An answer reduced to what is compared: status, the headers named in the
/// recording, and the body.
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: Value,
}

impl Answer {
    async fn of(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap().to_owned(),
                )
            })
            .collect();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            body,
        }
    }
}

/// JSON type names, with the recording's placeholders (`<str len=858 …>`) as strings.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

fn allowed(exchange: &str, path: &str) -> bool {
    ALLOWED
        .iter()
        .any(|(e, p, _)| *e == exchange && (path == *p || path.starts_with(&format!("{p}."))))
}

/// Every place where `fake` does not have `real`'s shape (or value, for `exact`
/// paths), as `exchange: path: what`.
fn compare(exchange: &str, path: &str, real: &Value, fake: &Value, out: &mut Vec<String>) {
    if allowed(exchange, path) {
        return;
    }
    match (real, fake) {
        (Value::Object(real), Value::Object(fake)) => {
            for (key, value) in real {
                let here = format!("{path}.{key}");
                match fake.get(key) {
                    Some(f) => compare(exchange, &here, value, f, out),
                    None if !allowed(exchange, &here) => {
                        out.push(format!("{exchange}: {here}: missing in the fake"))
                    }
                    None => {}
                }
            }
            for key in fake.keys().filter(|k| !real.contains_key(*k)) {
                let here = format!("{path}.{key}");
                if !allowed(exchange, &here) {
                    out.push(format!(
                        "{exchange}: {here}: the fake has it, the real forge not"
                    ));
                }
            }
        }
        (Value::Array(real), Value::Array(fake)) => match (real.first(), fake.first()) {
            (Some(r), Some(f)) => compare(exchange, &format!("{path}[0]"), r, f, out),
            (None, None) => {}
            _ => out.push(format!(
                "{exchange}: {path}: {} items, the fake {}",
                real.len(),
                fake.len()
            )),
        },
        _ if json_type(real) != json_type(fake) => out.push(format!(
            "{exchange}: {path}: {} in the real forge, {} in the fake",
            json_type(real),
            json_type(fake)
        )),
        _ => {
            let exact = ["error", "error_description", "token_type"]
                .iter()
                .any(|key| path == format!("body.{key}"));
            if exact && mask_ids(real) != mask_ids(fake) {
                out.push(format!(
                    "{exchange}: {path}: {real} in the real forge, {fake} in the fake"
                ));
            }
        }
    }
}

/// Replaces UUIDs (client ids) so messages that quote them compare.
fn mask_ids(value: &Value) -> String {
    let text = value.as_str().unwrap_or_default();
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        let candidate = rest.get(..36).filter(|c| {
            c.char_indices().all(|(i, ch)| match i {
                8 | 13 | 18 | 23 => ch == '-',
                _ => ch.is_ascii_hexdigit(),
            })
        });
        match candidate {
            Some(_) => {
                out.push_str("<id>");
                rest = &rest[36..];
            }
            None => {
                let ch = rest.chars().next().unwrap();
                out.push(ch);
                rest = &rest[ch.len_utf8()..];
            }
        }
    }
    out
}

/// Media type and parameters without spaces, lower-cased.
fn content_type(value: &str) -> String {
    value.replace(' ', "").to_ascii_lowercase()
}

struct Contract {
    observed: Map<String, Value>,
    problems: Vec<String>,
    checked: Vec<&'static str>,
}

impl Contract {
    fn recorded(&self, exchange: &str) -> &Value {
        self.observed
            .get(exchange)
            .unwrap_or_else(|| panic!("{exchange} is not in the recording"))
    }

    /// Compares a whole recorded exchange (status, headers, body) with `fake`.
    fn check(&mut self, exchange: &'static str, fake: &Answer) {
        self.checked.push(exchange);
        let real = self.recorded(exchange).clone();
        let status = real["status"].as_u64().unwrap();
        if u64::from(fake.status) != status {
            self.problems.push(format!(
                "{exchange}: status {status} in the real forge, {} in the fake",
                fake.status
            ));
        }
        for (name, value) in real["headers"].as_object().unwrap() {
            let path = format!("headers.{name}");
            if name == "Cache-Control" || allowed(exchange, &path) {
                continue;
            }
            let lower = name.to_ascii_lowercase();
            match fake.headers.get(&lower) {
                None => self
                    .problems
                    .push(format!("{exchange}: {path}: missing in the fake")),
                Some(got) if lower == "content-type" => {
                    if content_type(got) != content_type(value.as_str().unwrap()) {
                        self.problems.push(format!(
                            "{exchange}: {path}: {value} in the real forge, {got:?} in the fake"
                        ));
                    }
                }
                Some(_) => {}
            }
        }
        compare(
            exchange,
            "body",
            &real["body"],
            &fake.body,
            &mut self.problems,
        );
    }

    /// Compares a recorded value that is not an HTTP exchange (ID token claims).
    fn check_value(&mut self, exchange: &'static str, fake: &Value) {
        self.checked.push(exchange);
        let real = self.recorded(exchange).clone();
        compare(exchange, "body", &real, fake, &mut self.problems);
    }

    fn expect(&mut self, exchange: &'static str, holds: bool, what: &str) {
        self.checked.push(exchange);
        if !holds {
            self.problems.push(format!("{exchange}: {what}"));
        }
    }
}

struct Forge {
    fake: FakeForgejo,
    app: FakeApp,
    http: reqwest::Client,
}

impl Forge {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.fake.url())
    }

    /// A code for `login` through `/login/oauth/authorize` with `extra` parameters.
    fn code(&self, login: &str, extra: &[(&str, &str)]) -> (String, Vec<(String, String)>) {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query
            .append_pair("client_id", &self.app.client_id)
            .append_pair("redirect_uri", REDIRECT_URI)
            .append_pair("response_type", "code")
            .append_pair("state", "st");
        for (k, v) in extra {
            query.append_pair(k, v);
        }
        let location = self
            .fake
            .approve(
                &self.url(&format!("/login/oauth/authorize?{}", query.finish())),
                login,
            )
            .unwrap();
        let pairs = callback_query(&location);
        let code = pairs.iter().find(|(k, _)| k == "code").unwrap().1.clone();
        (code, pairs)
    }

    async fn token(&self, form: &[(&str, &str)], secret: &str) -> Answer {
        let mut form = form.to_vec();
        form.push(("client_id", &self.app.client_id));
        form.push(("client_secret", secret));
        Answer::of(
            self.http
                .post(self.url("/login/oauth/access_token"))
                .header("accept", "application/json")
                .form(&form)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn exchange(&self, code: &str, secret: &str) -> Answer {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
        ];
        self.token(&form, secret).await
    }

    async fn refresh(&self, refresh_token: &str, secret: &str) -> Answer {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        self.token(&form, secret).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Answer::of(request.send().await.unwrap()).await
    }
}

fn field<'a>(answer: &'a Answer, key: &str) -> &'a str {
    answer.body[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {}", answer.body))
}

#[tokio::test]
async fn fake_forge_answers_as_the_real_forge_did() {
    let observed: Map<String, Value> = serde_json::from_str(OBSERVED).unwrap();
    let mut c = Contract {
        observed,
        problems: Vec::new(),
        checked: Vec::new(),
    };
    let fake = FakeForgejo::start().await.unwrap();
    fake.add_user(
        FakeUser::new(2, "alice")
            .full_name("Alice Liddell")
            .team("oxorg", "Devs"),
    );
    fake.add_user(FakeUser::new(3, "bob"));
    let app = fake.add_app(REDIRECT_URI);
    let forge = Forge {
        fake,
        app,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    };
    let secret = forge.app.client_secret.clone();

    // The OAuth2 code flow and its errors.
    let (code, redirect) = forge.code("alice", &[]);
    let keys: Vec<&str> = redirect.iter().map(|(k, _)| k.as_str()).collect();
    let recorded_keys = c.recorded("redirect_query_keys").clone();
    c.expect(
        "redirect_query_keys",
        json!(keys) == recorded_keys,
        &format!("{keys:?}, the real forge {recorded_keys}"),
    );
    let prefix = c.recorded("code_prefix").as_str().unwrap().to_owned();
    c.expect(
        "code_prefix",
        code.starts_with(&prefix),
        &format!("{code:?} does not start with {prefix:?}"),
    );
    let bad_secret = forge.exchange(&code, "wrong").await;
    c.check("code_bad_secret", &bad_secret);
    let tokens = forge.exchange(&code, &secret).await;
    c.check("code_exchange", &tokens);
    c.check("code_reused", &forge.exchange(&code, &secret).await);
    c.check(
        "unknown_code",
        &forge.exchange("gta_unknown", &secret).await,
    );

    // The API with the access token.
    let access = field(&tokens, "access_token").to_owned();
    c.check("api_user", &forge.get("/api/v1/user", Some(&access)).await);
    c.check("api_user_no_token", &forge.get("/api/v1/user", None).await);
    c.check(
        "api_user_bad_token",
        &forge.get("/api/v1/user", Some("not-a-token")).await,
    );
    c.check(
        "api_user_teams",
        &forge
            .get("/api/v1/user/teams?page=1&limit=20", Some(&access))
            .await,
    );
    c.check(
        "api_user_teams_page2",
        &forge
            .get("/api/v1/user/teams?page=2&limit=20", Some(&access))
            .await,
    );

    // Refresh-token rotation.
    let first_refresh = field(&tokens, "refresh_token").to_owned();
    let refreshed = forge.refresh(&first_refresh, &secret).await;
    c.check("refresh_1", &refreshed);
    let old_access = forge.get("/api/v1/user", Some(&access)).await;
    let recorded = c.recorded("old_access_token_after_refresh").clone();
    c.expect(
        "old_access_token_after_refresh",
        json!(old_access.status) == recorded,
        &format!("status {}, the real forge {recorded}", old_access.status),
    );
    c.check(
        "refresh_reuse_first",
        &forge.refresh(&first_refresh, &secret).await,
    );
    let second_refresh = field(&refreshed, "refresh_token").to_owned();
    c.check(
        "refresh_bad_secret",
        &forge.refresh(&second_refresh, "wrong").await,
    );
    let refreshed = forge.refresh(&second_refresh, &secret).await;
    c.check("refresh_2_post", &refreshed);

    // A second login of the same user and app ends the first session's refresh token.
    let third_refresh = field(&refreshed, "refresh_token").to_owned();
    let (code, _) = forge.code("alice", &[("scope", "openid profile email groups")]);
    let second_login = forge.exchange(&code, &secret).await;
    let recorded = c.recorded("second_login_has_id_token").clone();
    let has_id_token = second_login.body.get("id_token").is_some();
    c.expect(
        "second_login_has_id_token",
        json!(has_id_token) == recorded,
        &format!("{has_id_token}, the real forge {recorded} (the grant keeps its first scope)"),
    );
    c.check(
        "first_session_refresh_after_second_login",
        &forge.refresh(&third_refresh, &secret).await,
    );

    // A user in no team.
    let (code, _) = forge.code("bob", &[]);
    let bob = forge.exchange(&code, &secret).await;
    c.check(
        "bob_teams",
        &forge
            .get(
                "/api/v1/user/teams?page=1&limit=20",
                Some(field(&bob, "access_token")),
            )
            .await,
    );

    // OpenID Connect, on a second app (its grant gets the scopes).
    let oidc = Forge {
        app: forge.fake.add_app(REDIRECT_URI),
        fake: forge.fake,
        http: forge.http,
    };
    let oidc_secret = oidc.app.client_secret.clone();
    c.check(
        "discovery",
        &oidc.get("/.well-known/openid-configuration", None).await,
    );
    let verifier = "a-verifier-that-is-long-enough-for-pkce-0123456789";
    let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ));
    let pkce = [
        ("scope", "openid profile email groups"),
        ("nonce", "n-1"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let (code, _) = oidc.code("alice", &pkce);
    let with_verifier = |code: &str, verifier: &str| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", REDIRECT_URI.to_owned()),
            ("code_verifier", verifier.to_owned()),
        ]
    };
    let form = with_verifier(&code, "the-wrong-verifier-the-wrong-verifier-000000");
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    c.check("oidc_wrong_pkce", &oidc.token(&form, &oidc_secret).await);
    let (code, _) = oidc.code("alice", &pkce);
    let form = with_verifier(&code, verifier);
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let tokens = oidc.token(&form, &oidc_secret).await;
    c.check("oidc_code_exchange", &tokens);
    let id_token = field(&tokens, "id_token");
    let mut parts = id_token.split('.');
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    c.check_value("id_token_header", &header);
    c.check_value("id_token_claims", &claims);
    let access = field(&tokens, "access_token").to_owned();
    c.check(
        "oidc_userinfo",
        &oidc.get("/login/oauth/userinfo", Some(&access)).await,
    );
    c.check(
        "oidc_userinfo_bad_token",
        &oidc.get("/login/oauth/userinfo", Some("nope")).await,
    );
    c.check("jwks", &oidc.get("/login/oauth/keys", None).await);

    // Authorize errors are HTML pages, not redirects.
    let page = |client_id: &str, redirect_uri: &str| {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("response_type", "code")
            .append_pair("state", "s")
            .finish();
        format!("/login/oauth/authorize?{query}")
    };
    let unknown_client = oidc
        .get(
            &page("00000000-0000-0000-0000-000000000000", REDIRECT_URI),
            None,
        )
        .await;
    c.check("authorize_unknown_client", &unknown_client);
    let bad_redirect = oidc
        .get(&page(&oidc.app.client_id, "http://evil.example/cb"), None)
        .await;
    c.check("authorize_bad_redirect", &bad_redirect);

    // The app is deleted: refresh is refused as an unknown client.
    let refresh = field(&tokens, "refresh_token").to_owned();
    oidc.fake.delete_app(&oidc.app.client_id);
    c.check(
        "deleted_app_refresh",
        &oidc.refresh(&refresh, &oidc_secret).await,
    );
    c.check(
        "deleted_app_access_token_api",
        &oidc.get("/api/v1/user", Some(&access)).await,
    );

    assert!(
        c.problems.is_empty(),
        "the fake forge has drifted from the real one:\n{}",
        c.problems.join("\n")
    );
    assert!(c.checked.len() >= 30, "{:?}", c.checked);
}
