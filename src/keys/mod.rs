//! Signing keys: generation, persistence through [`crate::storage`], rotation with
//! the next key published ahead of use, the JWKS document, and a signer that keeps
//! parsed keys (no key parsing per signature).
//!
//! - [`generate`]: new key pairs (RSA-2048, P-256, Ed25519) as [`StoredSigningKey`].
//! - [`jwk`]: public JWKs, and parsing them back into verification keys.
//! - [`signer`]: [`KeySet`], the parsed form of a [`Keys`] row: signs, verifies,
//!   serves the precomputed JWKS.
//! - [`rotation`]: the pure rotation rule ([`rotate`]), no clock, no storage.
//! - [`manager`]: [`KeyManager`], storage-backed, swaps the [`KeySet`] after a
//!   rotation and runs the periodic check.
//!
//! [`StoredSigningKey`]: crate::storage::StoredSigningKey
//! [`Keys`]: crate::storage::Keys

pub(crate) mod generate;
pub(crate) mod jwk;
pub(crate) mod manager;
pub(crate) mod rotation;
pub(crate) mod signer;

use serde::{Deserialize, Serialize};

pub use generate::{generate_key, new_kid};
pub use manager::{KeyManager, ROTATION_CHECK_INTERVAL};
pub use rotation::{KeyPolicy, rotate};
pub use signer::KeySet;

use crate::storage::StorageError;

/// The JWS algorithm of locally generated signing keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlgorithm {
    /// RSA-2048 PKCS#1 v1.5 with SHA-256 (Dex's default).
    RS256,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
}

impl SigningAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "RS256" => Some(Self::RS256),
            "ES256" => Some(Self::ES256),
            "EdDSA" => Some(Self::EdDSA),
            _ => None,
        }
    }
}

impl std::fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Failures of key generation, loading, signing and rotation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("generating a new {0} key failed")]
    Generate(SigningAlgorithm),
    #[error("the system random number generator failed")]
    Random,
    /// A stored key (private PKCS#8 or public JWK) could not be used.
    #[error("stored signing key {kid:?}: {reason}")]
    InvalidStoredKey { kid: String, reason: String },
    #[error("signing with key {kid:?} failed")]
    Sign { kid: String },
    #[error("claims could not be encoded as JSON: {0}")]
    Claims(String),
    #[error("{what} overflows the time range")]
    TimeOverflow { what: &'static str },
    #[error("key storage: {0}")]
    Storage(#[from] StorageError),
    /// A blocking key task panicked or was cancelled.
    #[error("key task failed: {0}")]
    Task(String),
    /// The first signing keys of a fresh start are not there yet.
    #[error("the signing keys are still being generated")]
    NotReady,
}

/// Why a token was not accepted by [`KeySet::verify_jwt`] or the claim helpers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("unsupported token algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// No key has the token's `kid` (or, without `kid`, none has its algorithm).
    #[error("token signed by an unknown key (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("token algorithm {token_alg} does not match key {kid:?} ({key_alg})")]
    AlgorithmMismatch {
        kid: String,
        token_alg: SigningAlgorithm,
        key_alg: SigningAlgorithm,
    },
    #[error("token signature is invalid")]
    BadSignature,
}

#[cfg(test)]
mod tests;
