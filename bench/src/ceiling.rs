//! Signature ceilings: RS256 and ES256 with aws-lc-rs (the library oxidex's signer uses),
//! key parsed once, over a JWS signing input the size of a Dex-like ID token; and the
//! bcrypt ceiling: verifications at cost 10 with the `bcrypt` crate oxidex checks
//! passwords with (same version, same release profile), on every core.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};

use crate::http::Error;

pub struct Ceilings {
    pub rs256: [f64; 2],
    pub es256: [f64; 2],
}

fn signing_input() -> Vec<u8> {
    // base64url(header) "." base64url(claims) of a ~600-byte ID token.
    let mut input = b"eyJhbGciOiJSUzI1NiIsImtpZCI6ImJlbmNoIiwidHlwIjoiSldUIn0.".to_vec();
    input.extend(std::iter::repeat_n(b'x', 560));
    input
}

/// Signatures per second of `sign` on `threads` threads, for `window` or `max` calls per thread.
fn rate(
    threads: usize,
    window: Duration,
    max: u64,
    sign: Arc<dyn Fn() -> bool + Send + Sync>,
) -> f64 {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let sign = sign.clone();
            std::thread::spawn(move || {
                let mut done = 0u64;
                while start.elapsed() < window && done < max {
                    if sign() {
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

pub fn measure(window: Duration) -> Result<Ceilings, Error> {
    let rng = SystemRandom::new();
    let rsa =
        Arc::new(RsaKeyPair::generate(KeySize::Rsa2048).map_err(|e| format!("RSA key: {e}"))?);
    let ec = Arc::new(
        EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|e| format!("P-256 key: {e}"))?,
    );
    let input = Arc::new(signing_input());

    let rs_sign: Arc<dyn Fn() -> bool + Send + Sync> = {
        let (rsa, input, rng) = (rsa.clone(), input.clone(), rng.clone());
        Arc::new(move || {
            let mut signature = vec![0u8; rsa.public_modulus_len()];
            rsa.sign(&RSA_PKCS1_SHA256, &rng, &input, &mut signature)
                .is_ok()
        })
    };
    let es_sign: Arc<dyn Fn() -> bool + Send + Sync> = {
        let (ec, input, rng) = (ec.clone(), input.clone(), rng.clone());
        Arc::new(move || ec.sign(&rng, &input).is_ok())
    };
    Ok(Ceilings {
        rs256: [
            rate(1, window, 1 << 20, rs_sign.clone()),
            rate(2, window, 1 << 20, rs_sign),
        ],
        es256: [
            rate(1, window, 1 << 24, es_sign.clone()),
            rate(2, window, 1 << 24, es_sign),
        ],
    })
}

/// The password the bench's `staticPasswords` user logs in with.
pub const PASSWORD: &str = "oxidex-bench-password";

/// bcrypt cost of the bench's password hash: Dex's default and oxidex's minimum.
pub const BCRYPT_COST: u32 = 10;

/// A bcrypt hash of [`PASSWORD`] at [`BCRYPT_COST`].
pub fn password_hash() -> Result<String, Error> {
    Ok(bcrypt::hash(PASSWORD, BCRYPT_COST)?)
}

/// Correct-password bcrypt verifications per second against `hash`, on one thread per
/// core (oxidex's password gate runs one check per core at a time).
pub fn bcrypt_rate(window: Duration, hash: &str) -> f64 {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hash = hash.to_owned();
    let verify: Arc<dyn Fn() -> bool + Send + Sync> =
        Arc::new(move || bcrypt::verify(PASSWORD, &hash).unwrap_or(false));
    rate(threads, window, 1 << 16, verify)
}
