//! Signature ceilings: RS256 and ES256 with aws-lc-rs (the library oxidex's signer uses),
//! key parsed once, over a JWS signing input the size of a Dex-like ID token.

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
