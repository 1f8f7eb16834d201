//! Signing keys over HTTP: persistence across restarts (SQLite) and rotation with
//! the next key published before it signs (injected time, no sleeping).

use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use crate::support::{ManualClock, TestServer, base_config, settings_from, temp_sqlite};

async fn fetch_jwks(server: &TestServer, path: &str) -> (JwkSet, reqwest::header::HeaderMap) {
    let response = server.http.get(server.url(path)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    (response.json().await.unwrap(), headers)
}

fn kids(set: &JwkSet) -> Vec<String> {
    set.keys
        .iter()
        .map(|k| k.common.key_id.clone().unwrap())
        .collect()
}

fn header_kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// Verifies `token` with the key named by its `kid` in `set`, with jsonwebtoken
/// (an implementation independent of oxidex's signer).
fn verify_with(set: &JwkSet, token: &str, alg: Algorithm) -> Value {
    let kid = header_kid(token);
    let jwk = set
        .find(&kid)
        .unwrap_or_else(|| panic!("kid {kid} not in JWKS"));
    let key = DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap()
        .claims
}

#[tokio::test]
async fn token_signed_before_restart_verifies_with_keys_served_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config("http://127.0.0.1:5556/dex");
    config["storage"] = json!({"type": "sqlite3", "config": {"file": temp_sqlite(dir.path())}});

    let first = TestServer::start_with(
        settings_from(&config, dir.path()),
        oxidex::server::system_clock(),
        None,
    )
    .await;
    let token = first
        .state
        .live()
        .provider
        .keys()
        .keyset()
        .await
        .unwrap()
        .sign_jwt(&json!({"iss": "http://127.0.0.1:5556/dex", "sub": "before-restart"}))
        .unwrap();
    let (before, headers) = fetch_jwks(&first, "/dex/keys").await;
    assert_eq!(headers["cache-control"], "max-age=600, must-revalidate");
    first.stop().await;

    let second = TestServer::start_with(
        settings_from(&config, dir.path()),
        oxidex::server::system_clock(),
        None,
    )
    .await;
    let (after, _) = fetch_jwks(&second, "/dex/keys").await;
    assert_eq!(kids(&before), kids(&after), "keys survive a restart");
    let claims = verify_with(&after, &token, Algorithm::RS256);
    assert_eq!(claims["sub"], "before-restart");
    second.stop().await;
}

#[tokio::test]
async fn next_key_is_published_before_it_signs_and_old_key_kept_until_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config("http://127.0.0.1:5556");
    config["signer"] =
        json!({"type": "local", "config": {"keysRotationPeriod": "6h", "algorithm": "ES256"}});
    config["expiry"] = json!({"idTokens": "1h"});
    let settings = settings_from(&config, dir.path());
    let clock = ManualClock::at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let server = TestServer::start_with(settings, clock.clock(), Some(dir)).await;

    // t0: current key A signs; next key B is already published.
    let (jwks0, _) = fetch_jwks(&server, "/keys").await;
    let signed_a = server
        .state
        .live()
        .provider
        .keys()
        .keyset()
        .await
        .unwrap()
        .sign_jwt(&json!({"sub": "a"}))
        .unwrap();
    let a = header_kid(&signed_a);
    assert_eq!(
        kids(&jwks0).len(),
        2,
        "current and next key: {:?}",
        kids(&jwks0)
    );
    assert_eq!(kids(&jwks0)[0], a, "the current key comes first");
    let b = kids(&jwks0)[1].clone();
    assert_ne!(a, b);

    // Just before the rotation nothing changes.
    clock.advance(Duration::from_secs(6 * 3600 - 1));
    server
        .state
        .live()
        .provider
        .keys()
        .refresh(clock.now())
        .await
        .unwrap();
    assert_eq!(
        header_kid(
            &server
                .state
                .live()
                .provider
                .keys()
                .keyset()
                .await
                .unwrap()
                .sign_jwt(&json!({}))
                .unwrap()
        ),
        a
    );

    // t0 + 6h: B signs — a key every cached JWKS already knew — and A stays.
    clock.advance(Duration::from_secs(1));
    server
        .state
        .live()
        .provider
        .keys()
        .refresh(clock.now())
        .await
        .unwrap();
    let signed_b = server
        .state
        .live()
        .provider
        .keys()
        .keyset()
        .await
        .unwrap()
        .sign_jwt(&json!({"sub": "b"}))
        .unwrap();
    assert_eq!(header_kid(&signed_b), b);
    let (jwks1, _) = fetch_jwks(&server, "/keys").await;
    let k1 = kids(&jwks1);
    assert_eq!(k1[0], b);
    assert!(k1.contains(&a), "retired key kept for verification: {k1:?}");
    assert_eq!(k1.len(), 3, "current B, next C, retired A: {k1:?}");
    verify_with(&jwks1, &signed_a, Algorithm::ES256);
    verify_with(&jwks0, &signed_b, Algorithm::ES256);

    // Past A's expiry (rotation + idTokens) and at the next rotation, A is gone.
    clock.advance(Duration::from_secs(6 * 3600));
    server
        .state
        .live()
        .provider
        .keys()
        .refresh(clock.now())
        .await
        .unwrap();
    let (jwks2, _) = fetch_jwks(&server, "/keys").await;
    assert!(
        !kids(&jwks2).contains(&a),
        "expired key pruned: {:?}",
        kids(&jwks2)
    );
    assert!(kids(&jwks2).contains(&b), "B retired but still valid");
    server.stop().await;
}
