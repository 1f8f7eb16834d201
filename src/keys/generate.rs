//! New signing keys, and the parsed private key pairs the signer keeps.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SecureRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use serde_json::Value;

use super::{KeyError, SigningAlgorithm, jwk};
use crate::storage::StoredSigningKey;

/// A new key id: 40 lowercase hex characters from 20 random bytes, like Dex.
pub fn new_kid() -> Result<String, KeyError> {
    let mut bytes = [0u8; 20];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| KeyError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Generates a key pair for `algorithm` (RSA-2048, P-256 or Ed25519) with a fresh
/// kid. RSA generation takes tens to hundreds of milliseconds: call it off the
/// async workers.
pub fn generate_key(algorithm: SigningAlgorithm) -> Result<StoredSigningKey, KeyError> {
    let kid = new_kid()?;
    let failed = |_| KeyError::Generate(algorithm);
    let pair = match algorithm {
        SigningAlgorithm::RS256 => {
            KeyPair::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).map_err(failed)?)
        }
        SigningAlgorithm::ES256 => {
            KeyPair::Ec(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(failed)?)
        }
        SigningAlgorithm::EdDSA => KeyPair::Ed(Ed25519KeyPair::generate().map_err(failed)?),
    };
    let private_pkcs8 = pair.to_pkcs8().map_err(|_| KeyError::Generate(algorithm))?;
    let public_jwk = pair
        .public_jwk(&kid)
        .map_err(|_| KeyError::Generate(algorithm))?;
    Ok(StoredSigningKey {
        kid,
        algorithm: algorithm.as_str().to_owned(),
        private_pkcs8,
        public_jwk,
    })
}

/// A private key parsed once; signing never re-parses it.
pub(crate) enum KeyPair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

impl KeyPair {
    pub(crate) fn from_pkcs8(algorithm: SigningAlgorithm, der: &[u8]) -> Result<Self, String> {
        let rejected = |err: aws_lc_rs::error::KeyRejected| format!("private key rejected: {err}");
        Ok(match algorithm {
            SigningAlgorithm::RS256 => {
                let pair = RsaKeyPair::from_pkcs8(der).map_err(rejected)?;
                // RS256 with keys under 2048 bits is forbidden (RFC 7518 §3.3).
                if pair.public_modulus_len() < 256 {
                    return Err("RSA key is shorter than 2048 bits".to_owned());
                }
                Self::Rsa(pair)
            }
            SigningAlgorithm::ES256 => Self::Ec(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map_err(rejected)?,
            ),
            SigningAlgorithm::EdDSA => Self::Ed(Ed25519KeyPair::from_pkcs8(der).map_err(rejected)?),
        })
    }

    fn to_pkcs8(&self) -> Result<Vec<u8>, aws_lc_rs::error::Unspecified> {
        Ok(match self {
            Self::Rsa(pair) => {
                let der: Pkcs8V1Der<'static> = pair.as_der()?;
                der.as_ref().to_vec()
            }
            Self::Ec(pair) => pair.to_pkcs8v1()?.as_ref().to_vec(),
            Self::Ed(pair) => pair.to_pkcs8v1()?.as_ref().to_vec(),
        })
    }

    /// The public JWK derived from the private key.
    pub(crate) fn public_jwk(&self, kid: &str) -> Result<Value, String> {
        match self {
            Self::Rsa(pair) => {
                let public = pair.public_key();
                Ok(jwk::rsa_jwk(
                    kid,
                    public.modulus().big_endian_without_leading_zero(),
                    public.exponent().big_endian_without_leading_zero(),
                ))
            }
            Self::Ec(pair) => jwk::p256_jwk(kid, pair.public_key().as_ref()),
            Self::Ed(pair) => Ok(jwk::ed25519_jwk(kid, pair.public_key().as_ref())),
        }
    }

    /// Signs `message` and returns the signature in JWS form (RSA: PKCS#1 v1.5;
    /// ECDSA: fixed-width `r || s`; Ed25519: 64 bytes).
    pub(crate) fn sign(
        &self,
        rng: &dyn SecureRandom,
        message: &[u8],
    ) -> Result<Vec<u8>, aws_lc_rs::error::Unspecified> {
        match self {
            Self::Rsa(pair) => {
                let mut signature = vec![0u8; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, rng, message, &mut signature)?;
                Ok(signature)
            }
            Self::Ec(pair) => Ok(pair.sign(rng, message)?.as_ref().to_vec()),
            Self::Ed(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}
