//! Limits on what an outsider can make oxidex spend in the login flows: the size
//! and number of stored auth requests, user-code guesses, password attempts and
//! concurrent password hashing. The client's address comes from
//! `X-Forwarded-For` (the test client is a trusted proxy), so one test can speak
//! from many addresses; time is a `ManualClock`.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, RETRY_AFTER, SET_COOKIE};
use serde_json::{Value, json};

use crate::browser::{form_action, input_value, location};
use crate::device::{clock, start_with_clock};
use crate::login::{CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, password_db_config};
use crate::support::{ManualClock, TestServer};

const XFF: &str = "X-Forwarded-For";

/// Trust the test client (127.0.0.1) as a proxy that names the client.
fn behind_proxy(config: &mut Value) {
    config["web"]["clientRemoteIP"] = json!({
        "header": XFF,
        "trustedProxies": ["127.0.0.1/32"]
    });
}

fn mock_config(issuer: &str) -> Value {
    let mut config = crate::support::base_config(issuer);
    behind_proxy(&mut config);
    config
}

fn password_config(issuer: &str) -> Value {
    let mut config = password_db_config(issuer);
    behind_proxy(&mut config);
    config["oauth2"] = json!({"passwordConnector": "local"});
    config
}

fn auth_url(server: &TestServer, extra: &[(&str, &str)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("client_id", CLIENT_ID),
        ("redirect_uri", REDIRECT_URI),
        ("response_type", "code"),
        ("scope", "openid"),
    ] {
        if !extra.iter().any(|(name, _)| *name == k) {
            query.append_pair(k, v);
        }
    }
    for (k, v) in extra {
        query.append_pair(k, v);
    }
    format!("{}/auth/mock?{}", server.issuer(), query.finish())
}

async fn get_from(server: &TestServer, url: &str, ip: &str) -> reqwest::Response {
    server.http.get(url).header(XFF, ip).send().await.unwrap()
}

/// Auth requests in storage: collected as if far in the future, so all count.
fn stored_auth_requests(server: &TestServer, clock: &ManualClock) -> u64 {
    let later = clock.now() + Duration::from_secs(365 * 24 * 3600);
    server
        .state
        .live()
        .provider
        .storage()
        .garbage_collect(later)
        .unwrap()
        .auth_requests
}

fn absolute(server: &TestServer, url: &str) -> String {
    if url.starts_with("http") {
        url.to_owned()
    } else {
        server.url(url)
    }
}

fn retry_after(response: &reqwest::Response) -> u64 {
    response
        .headers()
        .get(RETRY_AFTER)
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn oversized_or_malformed_stored_parameters_are_refused_and_nothing_is_stored() {
    let clock = clock();
    let server = start_with_clock(&clock, mock_config).await;
    let long_state = "s".repeat(2049);
    let long_nonce = "n".repeat(513);
    let long_scope = format!("openid {}", "profile ".repeat(128));
    let long_plain = "v".repeat(129);
    let cases: Vec<(&str, &str)> = vec![
        ("nonce", &long_nonce),
        ("scope", &long_scope),
        ("code_challenge", &long_plain),
        ("code_challenge", "short"),
        (
            "code_challenge",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM==",
        ),
    ];
    for (name, value) in cases {
        let mut extra = vec![(name, value), ("state", "st")];
        if name == "code_challenge" && value.ends_with('=') {
            extra.push(("code_challenge_method", "S256"));
        }
        let url = auth_url(&server, &extra);
        let response = get_from(&server, &url, "192.0.2.1").await;
        assert_eq!(
            response.status(),
            StatusCode::SEE_OTHER,
            "{name}={value:.20}…"
        );
        let back = location(&response);
        assert!(
            back.starts_with(REDIRECT_URI) && back.contains("error=invalid_request"),
            "{name}: {back}"
        );
    }
    let response = get_from(
        &server,
        &auth_url(&server, &[("state", &long_state)]),
        "192.0.2.1",
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(stored_auth_requests(&server, &clock), 0);

    // The largest accepted values are stored, and a valid challenge is accepted.
    let max_state = "s".repeat(2048);
    let max_nonce = "n".repeat(512);
    let url = auth_url(
        &server,
        &[
            ("state", &max_state),
            ("nonce", &max_nonce),
            (
                "code_challenge",
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            ),
            ("code_challenge_method", "S256"),
        ],
    );
    assert_eq!(
        get_from(&server, &url, "192.0.2.1").await.status(),
        StatusCode::FOUND
    );
    assert_eq!(stored_auth_requests(&server, &clock), 1);
    server.stop().await;
}

#[tokio::test]
async fn auth_request_creation_is_rate_limited_per_client_and_unused_ones_expire_soon() {
    let clock = clock();
    let server = start_with_clock(&clock, mock_config).await;
    let url = auth_url(&server, &[("state", "st")]);
    for _ in 0..30 {
        assert_eq!(
            get_from(&server, &url, "198.51.100.1").await.status(),
            StatusCode::FOUND
        );
    }
    let refused = get_from(&server, &url, "198.51.100.1").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&refused), 3);
    assert!(refused.text().await.unwrap().contains("Too many attempts"));
    // Another client is not affected; the refused request stored nothing.
    assert_eq!(
        get_from(&server, &url, "198.51.100.2").await.status(),
        StatusCode::FOUND
    );
    // One IPv6 host is one /64.
    for i in 0..30 {
        let ip = format!("2001:db8:5:6::{i:x}");
        assert_eq!(
            get_from(&server, &url, &ip).await.status(),
            StatusCode::FOUND
        );
    }
    let other_address = get_from(&server, &url, "2001:db8:5:6:ffff::1").await;
    assert_eq!(other_address.status(), StatusCode::TOO_MANY_REQUESTS);
    // A client-supplied address left of the proxy's is ignored.
    let forged = server
        .http
        .get(&url)
        .header(XFF, "203.0.113.77, 198.51.100.1")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::TOO_MANY_REQUESTS);
    // Waiting Retry-After is enough.
    clock.advance(Duration::from_secs(3));
    assert_eq!(
        get_from(&server, &url, "198.51.100.1").await.status(),
        StatusCode::FOUND
    );

    // Never-used auth requests are gone after 10 minutes, not 24 hours.
    let created = 30 + 1 + 30 + 1;
    clock.advance(Duration::from_secs(10 * 60 + 1));
    let expired = server
        .state
        .live()
        .provider
        .storage()
        .garbage_collect(clock.now())
        .unwrap()
        .auth_requests;
    assert_eq!(expired, created);
    server.stop().await;
}

fn cookieless() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The user-code form's cookie and CSRF token, as a new browser at `ip` gets
/// them (a client without a cookie store, so the cookie is always set afresh).
async fn device_form(server: &TestServer, ip: &str) -> (String, String, String) {
    let page = cookieless()
        .get(format!("{}/device", server.issuer()))
        .header(XFF, ip)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let cookie = page.headers()[SET_COOKIE].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let html = page.text().await.unwrap();
    let action = absolute(server, &form_action(&html));
    (action, cookie, input_value(&html, "csrf_token"))
}

async fn guess(server: &TestServer, ip: &str, code: &str) -> reqwest::Response {
    let (action, cookie, csrf) = device_form(server, ip).await;
    cookieless()
        .post(action)
        .header(XFF, ip)
        .header(COOKIE, cookie)
        .form(&[("user_code", code), ("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn user_code_guesses_are_rate_limited_per_client() {
    let clock = clock();
    let server = start_with_clock(&clock, password_config).await;
    for _ in 0..10 {
        let wrong = guess(&server, "192.0.2.9", "BCDF-GHJK").await;
        assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    }
    let refused = guess(&server, "192.0.2.9", "BCDF-GHJK").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&refused), 6);
    // The wait doubles for a client that keeps guessing.
    clock.advance(Duration::from_secs(6));
    assert_eq!(guess(&server, "192.0.2.9", "BCDF-GHJK").await.status(), 400);
    let refused = guess(&server, "192.0.2.9", "BCDF-GHJK").await;
    assert_eq!(retry_after(&refused), 12);
    // Someone else can still enter their code.
    assert_eq!(
        guess(&server, "192.0.2.10", "BCDF-GHJK").await.status(),
        400
    );
    server.stop().await;
}

async fn password_grant(server: &TestServer, ip: &str, password: &str) -> (StatusCode, u64, Value) {
    let response = server
        .http
        .post(format!("{}/token", server.issuer()))
        .header(XFF, ip)
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "password"),
            ("username", "Admin@Example.com"),
            ("password", password),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry = response
        .headers()
        .get(RETRY_AFTER)
        .map_or(0, |v| v.to_str().unwrap().parse().unwrap());
    (status, retry, response.json().await.unwrap())
}

#[tokio::test]
async fn password_failures_are_throttled_per_user_and_client_without_locking_others_out() {
    let clock = clock();
    let server = start_with_clock(&clock, password_config).await;
    let attacker = "203.0.113.5";
    for _ in 0..5 {
        let (status, _, body) = password_grant(&server, attacker, "guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, retry, body) = password_grant(&server, attacker, "guess").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(retry, 60);
    assert_eq!(body["error"], "temporarily_unavailable");
    // Even the right password waits at that address…
    let (status, _, _) = password_grant(&server, attacker, "password").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // …but the user, elsewhere, is not locked out.
    let (status, _, body) = password_grant(&server, "198.51.100.20", "password").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // After the ban, the right password works and clears the count.
    clock.advance(Duration::from_secs(60));
    let (status, _, body) = password_grant(&server, attacker, "password").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for _ in 0..5 {
        let (status, _, _) = password_grant(&server, attacker, "guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // A second ban in a row is longer.
    let (status, retry, _) = password_grant(&server, attacker, "guess").await;
    assert_eq!((status, retry), (StatusCode::TOO_MANY_REQUESTS, 60));
    clock.advance(Duration::from_secs(60));
    let (status, _, _) = password_grant(&server, attacker, "guess").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, retry, _) = password_grant(&server, attacker, "guess").await;
    assert_eq!((status, retry), (StatusCode::TOO_MANY_REQUESTS, 120));
    server.stop().await;
}

#[tokio::test]
async fn successful_logins_do_not_use_up_a_shared_address() {
    let clock = clock();
    let server = start_with_clock(&clock, password_config).await;
    // An office behind one address: many good logins are never limited…
    for _ in 0..25 {
        let (status, _, body) = password_grant(&server, "192.0.2.80", "password").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // …while failures from it still are.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(password_grant(&server, "192.0.2.80", "wrong").await.0);
    }
    assert_eq!(statuses[..5], [StatusCode::UNAUTHORIZED; 5]);
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS);
    server.stop().await;
}

#[tokio::test]
async fn password_form_failures_get_a_429_page() {
    let clock = clock();
    let server = start_with_clock(&clock, password_config).await;
    let url = format!(
        "{}/auth/local?client_id={CLIENT_ID}&redirect_uri={REDIRECT_URI}&response_type=code&scope=openid&state=s",
        server.issuer()
    );
    let started = get_from(&server, &url, "192.0.2.44").await;
    let form_url = absolute(&server, &location(&started));
    let form = get_from(&server, &form_url, "192.0.2.44")
        .await
        .text()
        .await
        .unwrap();
    let action = absolute(&server, &form_action(&form));
    let csrf = input_value(&form, "csrf_token");
    let post = |ip: &'static str, password: &'static str| {
        server
            .http
            .post(&action)
            .header(XFF, ip)
            .form(&[
                ("login", "admin@example.com"),
                ("password", password),
                ("csrf_token", csrf.as_str()),
            ])
            .send()
    };
    for _ in 0..5 {
        assert_eq!(post("192.0.2.44", "nope").await.unwrap().status(), 401);
    }
    let refused = post("192.0.2.44", "nope").await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&refused), 60);
    assert!(refused.text().await.unwrap().contains("Too many attempts"));
    assert_eq!(post("192.0.2.45", "password").await.unwrap().status(), 303);
    server.stop().await;
}

#[tokio::test]
async fn concurrent_password_checks_never_exceed_the_gate() {
    let clock = clock();
    let server = start_with_clock(&clock, password_config).await;
    let live = server.state.live();
    let gate = live.provider.connectors().hash_gate();
    let attempts = 4 * gate.size() + 4;
    assert!(
        attempts <= gate.size() + gate.queue(),
        "all fit in the queue"
    );
    let ips: Vec<String> = (0..attempts)
        .map(|i| format!("192.0.2.{}", 100 + i))
        .collect();
    let requests = ips.iter().map(|ip| password_grant(&server, ip, "wrong"));
    for (status, _, body) in futures_join_all(requests).await {
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    assert!(gate.peak() >= 1);
    assert!(
        gate.peak() <= gate.size(),
        "{} bcrypt checks ran at once, the gate allows {}",
        gate.peak(),
        gate.size()
    );
    server.stop().await;
}

/// Runs the futures concurrently on this task and collects their outputs in order.
pub(crate) async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.unwrap()).collect()
}
