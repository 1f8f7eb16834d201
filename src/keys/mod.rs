//! Signing keys: generation, persistence through [`crate::storage`], rotation with
//! the next key published ahead of use, the JWKS document, and a signer that keeps
//! parsed keys (no key parsing per signature).

use serde::{Deserialize, Serialize};

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
