//! JWS/JWT verification as `/userinfo` and introspection do it: the bearer
//! header, `KeySet::verify_jwt`, the claim checks, and `oidc::introspect`.
//!
//! The key set is built once per process (Ed25519 signing key, a P-256 next key,
//! an RSA verification key), with fresh random keys and fixed kids, so no input
//! can carry a valid signature unless this target signs it.
//!
//! Input: a mode byte, then either a token/`Authorization` value (even modes) or
//! a JWT payload that the target signs with the current key (odd modes).
//!
//! Properties: no panic; an input token never verifies (nothing forged is
//! accepted) and is never reported active; a token we sign verifies exactly when
//! its payload is a JSON object and returns that object, and stops verifying
//! when one signature byte changes; a token reported active passes the claim
//! checks and names a configured client.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use oxidex::config::{LoadOptions, Settings, load_str};
use oxidex::keys::{KeySet, SigningAlgorithm, generate_key};
use oxidex::oidc::introspect::{IntrospectContext, introspect};
use oxidex::oidc::grants::{bearer_token, check_token_claims};
use oxidex::storage::memory::MemoryStorage;
use oxidex::storage::{Keys, StoredSigningKey, VerificationKey};
use serde_json::{Map, Value};

const CONFIG: &str = r#"{
  "issuer": "https://auth.example.org/dex",
  "storage": {"type": "memory"},
  "web": {"http": "127.0.0.1:5556"},
  "connectors": [{"type": "mockCallback", "id": "mock", "name": "Mock"}],
  "staticClients": [
    {"id": "app", "name": "App", "secret": "app-secret", "redirectURIs": ["https://app.example.org/cb"]},
    {"id": "peer", "name": "Peer", "secret": "peer-secret", "redirectURIs": ["https://peer.example.org/cb"]}
  ]
}"#;

struct Fixture {
    keys: KeySet,
    settings: Settings,
    storage: MemoryStorage,
    now: SystemTime,
}

fn key(algorithm: SigningAlgorithm, kid: &str) -> StoredSigningKey {
    let mut key = generate_key(algorithm).expect("key generation");
    key.kid = kid.to_owned();
    key.public_jwk["kid"] = Value::from(kid);
    key
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let keys = Keys {
            signing_key: key(SigningAlgorithm::EdDSA, "ed"),
            next_key: Some(key(SigningAlgorithm::ES256, "ec")),
            verification_keys: vec![VerificationKey {
                public_jwk: key(SigningAlgorithm::RS256, "rsa").public_jwk,
                expiry: now + Duration::from_secs(3600),
            }],
            next_rotation: now + Duration::from_secs(3600),
        };
        let options = LoadOptions::default();
        Fixture {
            keys: KeySet::from_keys(&keys).expect("key set"),
            settings: load_str(CONFIG, Path::new("fuzz.json"), &options)
                .expect("fixture config")
                .settings,
            storage: MemoryStorage::new(),
            now,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let context = IntrospectContext {
        storage: &f.storage,
        settings: &f.settings,
        verifier: &f.keys,
        now: f.now,
    };
    let app = &f.settings.clients[0];

    if mode % 2 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        if let Some(token) = bearer_token(Some(text)) {
            assert!(!token.is_empty() && token.trim() == token);
            assert!(
                f.keys.verify_jwt(token).is_err(),
                "forged bearer token accepted"
            );
        }
        assert!(
            f.keys.verify_jwt(text).is_err(),
            "forged token accepted: {text:?}"
        );
        let active = introspect(&context, app, text).expect("introspection of an unknown token");
        assert!(active.is_none(), "forged token reported active: {text:?}");
        return;
    }

    let token = f.keys.sign_payload(rest).expect("signing");
    let verified = f.keys.verify_jwt(&token);
    match serde_json::from_slice::<Map<String, Value>>(rest) {
        Ok(object) => assert_eq!(verified.as_ref().ok(), Some(&object)),
        Err(_) => assert!(verified.is_err(), "non-object payload verified"),
    }

    let (signing_input, signature) = token.rsplit_once('.').expect("three parts");
    let mut bytes = URL_SAFE_NO_PAD
        .decode(signature)
        .expect("our signature is base64url");
    let at = usize::from(mode / 2) % bytes.len();
    bytes[at] ^= 1 << (mode % 8);
    let tampered = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(&bytes));
    assert!(
        f.keys.verify_jwt(&tampered).is_err(),
        "tampered signature accepted"
    );

    let Ok(claims) = verified else {
        return;
    };
    let claims_ok =
        check_token_claims(&Value::Object(claims), &f.settings.issuer.url, f.now).is_ok();
    for client in &f.settings.clients {
        let Some(active) = introspect(&context, client, &token).expect("introspection") else {
            continue;
        };
        assert!(claims_ok, "active token fails the claim checks");
        assert!(active.active);
        assert_eq!(active.iss, f.settings.issuer.url);
        assert!(f.settings.clients.iter().any(|c| c.id == active.client_id));
    }
});
