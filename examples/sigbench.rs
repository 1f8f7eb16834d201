//! Signatures per second through `KeySet::sign_jwt` against raw aws-lc-rs
//! signing of the same bytes with a key parsed once (the ceiling), one thread.
//!
//! `cargo run --release --example sigbench` (SECS=2 per measurement by default).
//! A program that prints figures, not a test: nothing here asserts a speed.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use oxidex::keys::{KeySet, SigningAlgorithm, generate_key};
use oxidex::storage::Keys;
use serde_json::json;

/// Calls `op` repeatedly for `window` and returns calls per second.
fn rate(window: Duration, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < window {
        for _ in 0..16 {
            op();
        }
        calls += 16;
    }
    calls as f64 / start.elapsed().as_secs_f64()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs = std::env::var("SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(2.0);
    let window = Duration::from_secs_f64(secs);
    // A Dex-like ID token.
    let claims = json!({
        "iss": "https://idp.example.org/dex",
        "sub": "CgQxMjM0EgVnaXRlYQ",
        "aud": "grafana",
        "exp": 1_800_086_400u64,
        "iat": 1_800_000_000u64,
        "nonce": "4f3a9c1e2b7d4a8f",
        "at_hash": "nOZnlSHcK60M-71bMkQOcQ",
        "email": "alice@example.org",
        "email_verified": true,
        "name": "alice",
        "groups": ["admins", "homelab"],
    });
    println!("{window:?} per measurement, 1 thread");
    println!(
        "{:<6} {:>14} {:>14} {:>7}",
        "alg", "sign_jwt/s", "raw sign/s", "ratio"
    );
    let rng = SystemRandom::new();
    for algorithm in [
        SigningAlgorithm::RS256,
        SigningAlgorithm::ES256,
        SigningAlgorithm::EdDSA,
    ] {
        let key = generate_key(algorithm)?;
        let der = key.private_pkcs8.clone();
        let set = KeySet::from_keys(&Keys {
            signing_key: key,
            next_key: None,
            verification_keys: Vec::new(),
            next_rotation: SystemTime::now(),
        })?;
        let token = set.sign_jwt(&claims)?;
        let message = token
            .rsplit_once('.')
            .map(|(input, _)| input.as_bytes().to_vec())
            .ok_or("token without a signature part")?;

        let ours = rate(window, || {
            black_box(set.sign_jwt(black_box(&claims)).ok());
        });
        let raw = match algorithm {
            SigningAlgorithm::RS256 => {
                let pair = RsaKeyPair::from_pkcs8(&der)?;
                let mut signature = vec![0u8; pair.public_modulus_len()];
                rate(window, || {
                    black_box(
                        pair.sign(&RSA_PKCS1_SHA256, &rng, black_box(&message), &mut signature)
                            .ok(),
                    );
                })
            }
            SigningAlgorithm::ES256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)?;
                rate(window, || {
                    black_box(pair.sign(&rng, black_box(&message)).ok());
                })
            }
            SigningAlgorithm::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8(&der)?;
                rate(window, || {
                    black_box(pair.sign(black_box(&message)));
                })
            }
        };
        println!(
            "{:<6} {:>14.0} {:>14.0} {:>7.2}",
            algorithm.as_str(),
            ours,
            raw,
            ours / raw
        );
    }
    Ok(())
}
