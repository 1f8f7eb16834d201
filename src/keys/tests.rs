//! Tests for the keys module: generation, signing checked by independent
//! verifiers (jsonwebtoken, openidconnect), verification, pure rotation, and the
//! storage-backed manager with injected time.

// Tests may unwrap and panic (the crate-level lints are for production code).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

use super::*;
use crate::crypto::token_hash;
use crate::storage::memory::MemoryStorage;
use crate::storage::{Keys, SharedStorage, StoredSigningKey, VerificationKey};

const HOUR: Duration = Duration::from_secs(3600);

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn policy(algorithm: SigningAlgorithm) -> KeyPolicy {
    KeyPolicy {
        algorithm,
        rotation_period: 6 * HOUR,
        verification_lifetime: 24 * HOUR,
    }
}

fn claims() -> Value {
    json!({
        "iss": "https://idp.example/dex",
        "sub": "CgNmb28SA2Jhcg",
        "aud": "grafana",
        "exp": 1_900_000_000u64,
        "iat": 1_800_000_000u64,
        "nonce": "n-0S6_WzA2Mj",
        "email": "foo@example.com",
        "email_verified": true,
        "groups": ["admins", "devs"],
    })
}

fn keys_with(current: StoredSigningKey) -> Keys {
    Keys {
        signing_key: current,
        next_key: None,
        verification_keys: Vec::new(),
        next_rotation: t0() + 6 * HOUR,
    }
}

fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn jwks(set: &KeySet) -> Vec<Value> {
    let doc: Value = serde_json::from_slice(&set.jwks_json()).unwrap();
    doc["keys"].as_array().unwrap().clone()
}

fn jwks_kids(set: &KeySet) -> Vec<String> {
    jwks(set)
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// jsonwebtoken's key, built only from the published JWK's components.
fn independent_key(jwk: &Value) -> (DecodingKey, Algorithm) {
    let s = |name: &str| jwk[name].as_str().unwrap();
    match s("kty") {
        "RSA" => (
            DecodingKey::from_rsa_components(s("n"), s("e")).unwrap(),
            Algorithm::RS256,
        ),
        "EC" => (
            DecodingKey::from_ec_components(s("x"), s("y")).unwrap(),
            Algorithm::ES256,
        ),
        "OKP" => (
            DecodingKey::from_ed_components(s("x")).unwrap(),
            Algorithm::EdDSA,
        ),
        other => panic!("unexpected kty {other}"),
    }
}

fn independently_verify(token: &str, jwk: &Value) -> Value {
    let (key, alg) = independent_key(jwk);
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap()
        .claims
}

// --- generation and JWKs ---------------------------------------------------

fn assert_kid(kid: &str) {
    assert_eq!(kid.len(), 40, "{kid}");
    assert!(
        kid.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{kid}"
    );
}

fn b64_len(jwk: &Value, member: &str) -> usize {
    let text = jwk[member].as_str().unwrap();
    assert!(!text.contains('='), "{member} is padded");
    URL_SAFE_NO_PAD.decode(text).unwrap().len()
}

fn members(jwk: &Value) -> Vec<&str> {
    jwk.as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

#[test]
fn kids_are_40_lowercase_hex_and_distinct() {
    let a = new_kid().unwrap();
    let b = new_kid().unwrap();
    assert_kid(&a);
    assert_kid(&b);
    assert_ne!(a, b);
}

#[test]
fn rsa_key_is_2048_bit_with_rsa_jwk() {
    let key = generate_key(SigningAlgorithm::RS256).unwrap();
    assert_kid(&key.kid);
    assert_eq!(key.algorithm, "RS256");
    let jwk = &key.public_jwk;
    assert_eq!(members(jwk), ["use", "kty", "kid", "alg", "n", "e"]);
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["kty"], "RSA");
    assert_eq!(jwk["kid"], key.kid.as_str());
    assert_eq!(jwk["alg"], "RS256");
    assert_eq!(b64_len(jwk, "n"), 256);
    assert_eq!(jwk["e"], "AQAB");
    // PKCS#8 DER: a SEQUENCE that jsonwebtoken's own parser accepts too.
    assert_eq!(key.private_pkcs8[0], 0x30);
}

#[test]
fn p256_key_has_ec_jwk() {
    let key = generate_key(SigningAlgorithm::ES256).unwrap();
    assert_kid(&key.kid);
    assert_eq!(key.algorithm, "ES256");
    let jwk = &key.public_jwk;
    assert_eq!(members(jwk), ["use", "kty", "kid", "crv", "alg", "x", "y"]);
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert_eq!(jwk["alg"], "ES256");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(b64_len(jwk, "x"), 32);
    assert_eq!(b64_len(jwk, "y"), 32);
}

#[test]
fn ed25519_key_has_okp_jwk() {
    let key = generate_key(SigningAlgorithm::EdDSA).unwrap();
    assert_kid(&key.kid);
    assert_eq!(key.algorithm, "EdDSA");
    let jwk = &key.public_jwk;
    assert_eq!(members(jwk), ["use", "kty", "kid", "crv", "alg", "x"]);
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert_eq!(jwk["alg"], "EdDSA");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(b64_len(jwk, "x"), 32);
}

// --- signing, checked by an independent verifier ------------------------------

fn sign_and_check_independently(algorithm: SigningAlgorithm) {
    let key = generate_key(algorithm).unwrap();
    let set = KeySet::from_keys(&keys_with(key.clone())).unwrap();
    assert_eq!(set.algorithm(), algorithm);
    assert_eq!(set.kid(), key.kid);

    let token = set.sign_jwt(&claims()).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    // Header exactly like Dex: alg and kid, in that order, nothing else.
    let header = URL_SAFE_NO_PAD.decode(parts[0]).unwrap();
    assert_eq!(
        String::from_utf8(header).unwrap(),
        format!(r#"{{"alg":"{}","kid":"{}"}}"#, algorithm.as_str(), key.kid)
    );
    // Claims keep their order.
    assert_eq!(
        URL_SAFE_NO_PAD.decode(parts[1]).unwrap(),
        serde_json::to_vec(&claims()).unwrap()
    );

    let published = &jwks(&set)[0];
    assert_eq!(independently_verify(&token, published), claims());
    assert_eq!(Value::Object(set.verify_jwt(&token).unwrap()), claims());
}

#[test]
fn rs256_token_verifies_with_jsonwebtoken() {
    sign_and_check_independently(SigningAlgorithm::RS256);
}

#[test]
fn es256_token_verifies_with_jsonwebtoken() {
    sign_and_check_independently(SigningAlgorithm::ES256);
}

#[test]
fn eddsa_token_verifies_with_jsonwebtoken() {
    sign_and_check_independently(SigningAlgorithm::EdDSA);
}

#[test]
fn stored_public_jwk_must_match_private_key() {
    let mut key = generate_key(SigningAlgorithm::ES256).unwrap();
    key.public_jwk = generate_key(SigningAlgorithm::ES256).unwrap().public_jwk;
    let err = KeySet::from_keys(&keys_with(key)).unwrap_err();
    assert!(matches!(err, KeyError::InvalidStoredKey { .. }), "{err}");
}

#[test]
fn unknown_stored_algorithm_is_named() {
    let mut key = generate_key(SigningAlgorithm::ES256).unwrap();
    key.algorithm = "HS256".to_owned();
    let err = KeySet::from_keys(&keys_with(key)).unwrap_err();
    assert!(err.to_string().contains("HS256"), "{err}");
}

// --- verification ------------------------------------------------------------

fn es256_set() -> KeySet {
    KeySet::from_keys(&keys_with(generate_key(SigningAlgorithm::ES256).unwrap())).unwrap()
}

fn with_header(header: &Value, token: &str) -> String {
    let rest = token.split_once('.').unwrap().1;
    format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header.to_string()))
}

#[test]
fn verify_rejects_tampered_payload() {
    let set = es256_set();
    let token = set.sign_jwt(&claims()).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims();
    forged["sub"] = json!("someone-else");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(forged.to_string()),
        parts[2]
    );
    assert_eq!(set.verify_jwt(&tampered), Err(VerifyError::BadSignature));
}

#[test]
fn verify_rejects_token_from_unknown_key() {
    let set = es256_set();
    let stranger = es256_set();
    let token = stranger.sign_jwt(&claims()).unwrap();
    assert_eq!(
        set.verify_jwt(&token),
        Err(VerifyError::UnknownKey(Some(stranger.kid().to_owned())))
    );
    // Without a kid every key of the algorithm is tried; none matches.
    let no_kid = with_header(&json!({"alg": "ES256"}), &token);
    assert_eq!(set.verify_jwt(&no_kid), Err(VerifyError::BadSignature));
}

#[test]
fn verify_accepts_our_token_without_kid() {
    let key = generate_key(SigningAlgorithm::ES256).unwrap();
    let set = KeySet::from_keys(&keys_with(key.clone())).unwrap();
    // Signed by jsonwebtoken from our stored PKCS#8, with a header without kid.
    let encoding = jsonwebtoken::EncodingKey::from_ec_der(&key.private_pkcs8);
    let header = jsonwebtoken::Header::new(Algorithm::ES256);
    assert_eq!(header.kid, None);
    let token = jsonwebtoken::encode(&header, &claims(), &encoding).unwrap();
    assert_eq!(Value::Object(set.verify_jwt(&token).unwrap()), claims());
}

#[test]
fn verify_rejects_alg_none() {
    let set = es256_set();
    let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
    for header in [
        json!({"alg": "none"}),
        json!({"alg": "none", "kid": set.kid()}),
    ] {
        let header = URL_SAFE_NO_PAD.encode(header.to_string());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            assert!(set.verify_jwt(&token).is_err(), "{token}");
        }
        assert_eq!(
            set.verify_jwt(&format!("{header}.{payload}.")),
            Err(VerifyError::UnsupportedAlgorithm("none".to_owned()))
        );
    }
}

#[test]
fn verify_rejects_alg_key_mismatch_and_other_algs() {
    let set = es256_set();
    let token = set.sign_jwt(&claims()).unwrap();
    let as_eddsa = with_header(&json!({"alg": "EdDSA", "kid": set.kid()}), &token);
    assert_eq!(
        set.verify_jwt(&as_eddsa),
        Err(VerifyError::AlgorithmMismatch {
            kid: set.kid().to_owned(),
            token_alg: SigningAlgorithm::EdDSA,
            key_alg: SigningAlgorithm::ES256,
        })
    );
    let as_hs256 = with_header(&json!({"alg": "HS256", "kid": set.kid()}), &token);
    assert_eq!(
        set.verify_jwt(&as_hs256),
        Err(VerifyError::UnsupportedAlgorithm("HS256".to_owned()))
    );
}

#[test]
fn verify_rejects_malformed_tokens() {
    let set = es256_set();
    let token = set.sign_jwt(&claims()).unwrap();
    for bad in ["", "a.b", "a.b.c.d", "!!.e30.AA", &format!("{token}.x")] {
        assert!(
            matches!(set.verify_jwt(bad), Err(VerifyError::Malformed(_))),
            "{bad}"
        );
    }
    let crit = with_header(
        &json!({"alg": "ES256", "kid": set.kid(), "crit": ["exp"]}),
        &token,
    );
    assert!(matches!(
        set.verify_jwt(&crit),
        Err(VerifyError::Malformed(_))
    ));
    // A valid signature over a payload that is not a JSON object.
    let array = set.sign_payload(b"[1,2]").unwrap();
    assert!(matches!(
        set.verify_jwt(&array),
        Err(VerifyError::Malformed(_))
    ));
}

// --- at_hash / c_hash --------------------------------------------------------

#[test]
fn token_hash_agrees_with_openidconnect_for_each_algorithm() {
    use openidconnect::core::{CoreJsonWebKey, CoreJwsSigningAlgorithm};
    use openidconnect::{AccessToken, AccessTokenHash};

    let access_token = "jHkWEdUXMU1BwAsC4vtUsZwnZ1y3zQY4c2F4tT0_3Jo";
    for (algorithm, rp_alg) in [
        (
            SigningAlgorithm::RS256,
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        ),
        (
            SigningAlgorithm::ES256,
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        ),
        (SigningAlgorithm::EdDSA, CoreJwsSigningAlgorithm::EdDsa),
    ] {
        let key = generate_key(algorithm).unwrap();
        let jwk: CoreJsonWebKey = serde_json::from_value(key.public_jwk.clone()).unwrap();
        let expected =
            AccessTokenHash::from_token(&AccessToken::new(access_token.to_owned()), &rp_alg, &jwk)
                .unwrap();
        assert_eq!(
            &token_hash(algorithm, access_token),
            expected.as_str(),
            "{algorithm}"
        );
        let set = KeySet::from_keys(&keys_with(key)).unwrap();
        assert_eq!(
            token_hash(set.algorithm(), access_token),
            token_hash(algorithm, access_token)
        );
    }
    // Left half of SHA-256 is 16 bytes (22 chars), of SHA-512 32 bytes (43 chars).
    assert_eq!(token_hash(SigningAlgorithm::ES256, "x").len(), 22);
    assert_eq!(token_hash(SigningAlgorithm::EdDSA, "x").len(), 43);
}

// --- pure rotation -----------------------------------------------------------

/// A fake generator: kids k1, k2, … with the requested algorithm; no crypto.
fn fake_generator() -> impl FnMut(SigningAlgorithm) -> Result<StoredSigningKey, KeyError> {
    let mut counter = 0;
    move |algorithm| {
        counter += 1;
        Ok(StoredSigningKey {
            kid: format!("k{counter}"),
            algorithm: algorithm.as_str().to_owned(),
            private_pkcs8: Vec::new(),
            public_jwk: json!({ "kid": format!("k{counter}") }),
        })
    }
}

fn verification_kids(keys: &Keys) -> Vec<&str> {
    keys.verification_keys
        .iter()
        .map(|k| k.public_jwk["kid"].as_str().unwrap())
        .collect()
}

#[test]
fn rotate_without_keys_creates_current_and_next() {
    let policy = policy(SigningAlgorithm::ES256);
    let keys = rotate(None, t0(), &policy, &mut fake_generator())
        .unwrap()
        .unwrap();
    assert_eq!(keys.signing_key.kid, "k1");
    assert_eq!(keys.next_key.as_ref().unwrap().kid, "k2");
    assert_eq!(keys.signing_key.algorithm, "ES256");
    assert!(keys.verification_keys.is_empty());
    assert_eq!(keys.next_rotation, t0() + 6 * HOUR);
}

#[test]
fn rotate_before_next_rotation_does_nothing() {
    let policy = policy(SigningAlgorithm::ES256);
    let mut generate = fake_generator();
    let keys = rotate(None, t0(), &policy, &mut generate).unwrap().unwrap();
    let almost = t0() + 6 * HOUR - Duration::from_secs(1);
    assert_eq!(
        rotate(Some(keys), almost, &policy, &mut generate).unwrap(),
        None
    );
}

#[test]
fn rotate_promotes_next_retires_current_and_prunes() {
    let policy = policy(SigningAlgorithm::ES256);
    let mut generate = fake_generator();
    let mut keys = rotate(None, t0(), &policy, &mut generate).unwrap().unwrap();
    // A verification key that expired an hour before the rotation, one that has not.
    keys.verification_keys = vec![
        VerificationKey {
            public_jwk: json!({"kid": "old"}),
            expiry: t0() + 5 * HOUR,
        },
        VerificationKey {
            public_jwk: json!({"kid": "recent"}),
            expiry: t0() + 7 * HOUR,
        },
    ];
    let now = t0() + 6 * HOUR;
    let rotated = rotate(Some(keys), now, &policy, &mut generate)
        .unwrap()
        .unwrap();
    assert_eq!(rotated.signing_key.kid, "k2");
    assert_eq!(rotated.next_key.as_ref().unwrap().kid, "k3");
    assert_eq!(verification_kids(&rotated), ["recent", "k1"]);
    assert_eq!(rotated.verification_keys[1].expiry, now + 24 * HOUR);
    assert_eq!(rotated.next_rotation, now + 6 * HOUR);
}

#[test]
fn rotate_late_uses_now_not_the_missed_schedule() {
    let policy = policy(SigningAlgorithm::ES256);
    let mut generate = fake_generator();
    let keys = rotate(None, t0(), &policy, &mut generate).unwrap().unwrap();
    let late = t0() + 100 * HOUR;
    let rotated = rotate(Some(keys), late, &policy, &mut generate)
        .unwrap()
        .unwrap();
    assert_eq!(rotated.next_rotation, late + 6 * HOUR);
    assert_eq!(
        rotate(Some(rotated), late, &policy, &mut generate).unwrap(),
        None
    );
}

#[test]
fn rotate_fills_in_a_missing_next_key_without_rotating() {
    let policy = policy(SigningAlgorithm::ES256);
    let mut generate = fake_generator();
    let mut keys = rotate(None, t0(), &policy, &mut generate).unwrap().unwrap();
    keys.next_key = None;
    let filled = rotate(Some(keys), t0(), &policy, &mut generate)
        .unwrap()
        .unwrap();
    assert_eq!(filled.signing_key.kid, "k1");
    assert_eq!(filled.next_key.unwrap().kid, "k3");
    assert_eq!(filled.next_rotation, t0() + 6 * HOUR);
}

#[test]
fn rotate_replaces_next_key_of_an_old_algorithm_before_it_signs() {
    let mut generate = fake_generator();
    let keys = rotate(None, t0(), &policy(SigningAlgorithm::RS256), &mut generate)
        .unwrap()
        .unwrap();
    let eddsa = policy(SigningAlgorithm::EdDSA);
    let changed = rotate(Some(keys), t0() + HOUR, &eddsa, &mut generate)
        .unwrap()
        .unwrap();
    assert_eq!(
        changed.signing_key.algorithm, "RS256",
        "current keeps signing"
    );
    let next = changed.next_key.clone().unwrap();
    assert_eq!(
        (next.kid.as_str(), next.algorithm.as_str()),
        ("k3", "EdDSA")
    );
    assert!(
        changed.verification_keys.is_empty(),
        "the dropped next key never signed"
    );
    let rotated = rotate(Some(changed), t0() + 6 * HOUR, &eddsa, &mut generate)
        .unwrap()
        .unwrap();
    assert_eq!(rotated.signing_key.kid, "k3");
}

#[test]
fn rotate_due_with_next_of_an_old_algorithm_generates_a_fresh_key() {
    let mut generate = fake_generator();
    let keys = rotate(None, t0(), &policy(SigningAlgorithm::RS256), &mut generate)
        .unwrap()
        .unwrap();
    let rotated = rotate(
        Some(keys),
        t0() + 6 * HOUR,
        &policy(SigningAlgorithm::ES256),
        &mut generate,
    )
    .unwrap()
    .unwrap();
    assert_eq!(rotated.signing_key.kid, "k3");
    assert_eq!(rotated.signing_key.algorithm, "ES256");
    assert_eq!(rotated.next_key.as_ref().unwrap().algorithm, "ES256");
    assert_eq!(verification_kids(&rotated), ["k1"]);
}

#[test]
fn rotate_passes_generation_errors_on() {
    let policy = policy(SigningAlgorithm::ES256);
    let mut failing = |algorithm| Err(KeyError::Generate(algorithm));
    assert_eq!(
        rotate(None, t0(), &policy, &mut failing),
        Err(KeyError::Generate(SigningAlgorithm::ES256))
    );
}

// --- KeyManager --------------------------------------------------------------

fn memory() -> SharedStorage {
    Arc::new(MemoryStorage::new())
}

#[tokio::test]
async fn rotation_timeline_publishes_next_key_ahead_and_retires_old_keys() {
    let storage = memory();
    let policy = policy(SigningAlgorithm::ES256);
    let manager = KeyManager::start(Arc::clone(&storage), policy, t0())
        .await
        .unwrap();

    // t0: A signs, B is published.
    let at_t0 = manager.loaded().unwrap();
    let a = at_t0.kid().to_owned();
    let stored = storage.get_keys().unwrap().unwrap();
    let b = stored.next_key.unwrap().kid;
    assert_eq!(jwks_kids(&at_t0), [a.clone(), b.clone()]);
    let token_a = at_t0.sign_jwt(&claims()).unwrap();
    assert_eq!(
        decode_part(token_a.split('.').next().unwrap())["kid"],
        a.as_str()
    );
    assert_eq!(at_t0.next_rotation(), t0() + 6 * HOUR);

    // Not due: nothing changes.
    assert!(
        !manager
            .refresh(t0() + 6 * HOUR - Duration::from_secs(1))
            .await
            .unwrap()
    );

    // t0 + period: B signs; C is published; A verifies until t0 + period + lifetime.
    let t1 = t0() + 6 * HOUR;
    assert!(manager.refresh(t1).await.unwrap());
    let at_t1 = manager.loaded().unwrap();
    assert_eq!(at_t1.kid(), b);
    let c = storage.get_keys().unwrap().unwrap().next_key.unwrap().kid;
    assert_eq!(jwks_kids(&at_t1), [b.clone(), c.clone(), a.clone()]);
    assert!(at_t1.verify_jwt(&token_a).is_ok());
    let token_b = at_t1.sign_jwt(&claims()).unwrap();
    assert_eq!(
        decode_part(token_b.split('.').next().unwrap())["kid"],
        b.as_str()
    );
    assert_eq!(
        independently_verify(&token_b, &jwks(&at_t1)[0]),
        claims(),
        "the signing key is first in the JWKS"
    );
    assert_eq!(
        storage.get_keys().unwrap().unwrap().verification_keys[0].expiry,
        t1 + 24 * HOUR
    );

    // Rotations every period; A stays while its expiry has not passed.
    for step in 2..=4 {
        assert!(manager.refresh(t0() + step * 6 * HOUR).await.unwrap());
        assert!(
            jwks_kids(&manager.loaded().unwrap()).contains(&a),
            "step {step}"
        );
        assert!(manager.loaded().unwrap().verify_jwt(&token_a).is_ok());
    }
    // t0 + 30h = t0 + period + lifetime, A's expiry, and a rotation is due: A is
    // pruned.
    assert!(manager.refresh(t0() + 30 * HOUR).await.unwrap());
    let late = manager.loaded().unwrap();
    assert!(!jwks_kids(&late).contains(&a));
    assert_eq!(
        late.verify_jwt(&token_a),
        Err(VerifyError::UnknownKey(Some(a)))
    );
    assert!(
        late.verify_jwt(&token_b).is_ok(),
        "B retired later, still verifies"
    );
}

#[tokio::test]
async fn restart_reuses_stored_keys_and_verifies_old_tokens() {
    let storage = memory();
    let policy = policy(SigningAlgorithm::EdDSA);
    let first = KeyManager::start(Arc::clone(&storage), policy, t0())
        .await
        .unwrap();
    let token = first.loaded().unwrap().sign_jwt(&claims()).unwrap();
    let kid = first.loaded().unwrap().kid().to_owned();
    drop(first);

    let second = KeyManager::start(Arc::clone(&storage), policy, t0() + HOUR)
        .await
        .unwrap();
    assert_eq!(second.loaded().unwrap().kid(), kid);
    assert_eq!(
        Value::Object(second.loaded().unwrap().verify_jwt(&token).unwrap()),
        claims()
    );
}

#[tokio::test]
async fn racing_managers_rotate_once_and_agree() {
    let storage = memory();
    let policy = policy(SigningAlgorithm::ES256);
    let (one, two) = tokio::join!(
        KeyManager::start(Arc::clone(&storage), policy, t0()),
        KeyManager::start(Arc::clone(&storage), policy, t0()),
    );
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(
        one.loaded().unwrap().kid(),
        two.loaded().unwrap().kid(),
        "both adopt the first creation"
    );

    let due = t0() + 6 * HOUR;
    let (r1, r2) = tokio::join!(one.refresh(due), two.refresh(due));
    assert!(
        r1.unwrap() && r2.unwrap(),
        "both see a change, neither errors"
    );
    let stored = storage.get_keys().unwrap().unwrap();
    assert_eq!(stored.verification_keys.len(), 1, "rotated exactly once");
    assert_eq!(one.loaded().unwrap().kid(), stored.signing_key.kid);
    assert_eq!(two.loaded().unwrap().kid(), stored.signing_key.kid);
    assert_eq!(
        one.loaded().unwrap().jwks_json(),
        two.loaded().unwrap().jwks_json()
    );
}

#[tokio::test]
async fn manager_reloads_a_rotation_done_by_another_process() {
    let storage = memory();
    let policy = policy(SigningAlgorithm::ES256);
    let one = KeyManager::start(Arc::clone(&storage), policy, t0())
        .await
        .unwrap();
    let two = KeyManager::start(Arc::clone(&storage), policy, t0())
        .await
        .unwrap();
    let due = t0() + 6 * HOUR;
    assert!(one.refresh(due).await.unwrap());
    // A token from the process that rotated verifies here even before we reload:
    // its new signing key was our published next key.
    let token = one.loaded().unwrap().sign_jwt(&claims()).unwrap();
    assert!(two.loaded().unwrap().verify_jwt(&token).is_ok());
    assert!(two.refresh(due + Duration::from_secs(1)).await.unwrap());
    assert_eq!(two.loaded().unwrap().kid(), one.loaded().unwrap().kid());
    assert!(!two.refresh(due + Duration::from_secs(2)).await.unwrap());
}

#[tokio::test]
async fn algorithm_change_takes_effect_at_the_next_rotation() {
    let storage = memory();
    let es = KeyManager::start(Arc::clone(&storage), policy(SigningAlgorithm::ES256), t0())
        .await
        .unwrap();
    let es_token = es.loaded().unwrap().sign_jwt(&claims()).unwrap();

    // Restart with a new algorithm: the current key keeps signing, the next key
    // is replaced by an EdDSA key and published.
    let ed = KeyManager::start(
        Arc::clone(&storage),
        policy(SigningAlgorithm::EdDSA),
        t0() + HOUR,
    )
    .await
    .unwrap();
    assert_eq!(ed.loaded().unwrap().algorithm(), SigningAlgorithm::ES256);
    let published = jwks(&ed.loaded().unwrap());
    assert_eq!(published.len(), 2);
    assert_eq!(published[1]["kty"], "OKP");

    assert!(ed.refresh(t0() + 6 * HOUR).await.unwrap());
    let set = ed.loaded().unwrap();
    assert_eq!(set.algorithm(), SigningAlgorithm::EdDSA);
    assert_eq!(set.kid(), published[1]["kid"].as_str().unwrap());
    let token = set.sign_jwt(&claims()).unwrap();
    assert_eq!(independently_verify(&token, &published[1]), claims());
    assert!(
        set.verify_jwt(&es_token).is_ok(),
        "the ES256 key is a verification key"
    );
}

static FAKE_NOW: AtomicU64 = AtomicU64::new(0);

fn fake_clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(FAKE_NOW.load(Ordering::SeqCst))
}

#[tokio::test]
async fn rotation_task_rotates_when_due_and_stops_on_shutdown() {
    let start = t0().duration_since(UNIX_EPOCH).unwrap().as_secs();
    FAKE_NOW.store(start, Ordering::SeqCst);
    let manager = KeyManager::start(memory(), policy(SigningAlgorithm::ES256), fake_clock())
        .await
        .unwrap();
    let first = manager.loaded().unwrap().kid().to_owned();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = manager.spawn_rotation_task_every(
        Duration::from_millis(10),
        std::sync::Arc::new(fake_clock),
        async {
            let _ = stopped.await;
        },
    );

    FAKE_NOW.store(start + 6 * 3600, Ordering::SeqCst);
    let rotated = tokio::time::timeout(Duration::from_secs(10), async {
        while manager.loaded().unwrap().kid() == first {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(rotated.is_ok(), "the task rotated the key");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("task stops on shutdown")
        .unwrap();
}

/// A first start returns before its keys exist: what needs a key waits for
/// them; the keys then are the ones in storage. With keys already stored,
/// they are loaded before the start returns.
#[tokio::test]
async fn a_first_start_serves_before_its_keys_exist_and_waits_for_them() {
    let storage = memory();
    let policy = policy(SigningAlgorithm::RS256);
    let clock: crate::Clock = Arc::new(t0);
    let manager = KeyManager::start_in_background(Arc::clone(&storage), policy, clock.clone())
        .await
        .unwrap();
    assert_eq!(manager.algorithm(), SigningAlgorithm::RS256);
    let set = manager.keyset().await.unwrap();
    assert!(manager.loaded().is_some());
    let stored = storage.get_keys().unwrap().unwrap();
    assert_eq!(set.kid(), stored.signing_key.kid);
    assert!(stored.next_key.is_some(), "the next key is published too");

    let restarted = KeyManager::start_in_background(Arc::clone(&storage), policy, clock)
        .await
        .unwrap();
    assert_eq!(
        restarted
            .loaded()
            .expect("stored keys are loaded at once")
            .kid(),
        set.kid()
    );
}

/// Until the first keys exist, nothing verifies and nothing is overdue; a
/// wait that outlasts the generation fails instead of hanging.
#[tokio::test]
async fn waiting_for_keys_that_never_come_fails_after_the_limit() {
    let manager = KeyManager::empty(memory(), policy(SigningAlgorithm::ES256));
    assert!(manager.loaded().is_none());
    assert_eq!(manager.algorithm(), SigningAlgorithm::ES256);
    assert!(matches!(
        manager.keyset_within(Duration::from_millis(20)).await,
        Err(KeyError::NotReady)
    ));
}
