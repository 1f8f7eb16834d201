//! [`KeySet`]: the parsed form of the stored [`Keys`]. Keys are parsed once when
//! the set is built; signing and verifying only use the parsed keys.

use std::time::SystemTime;

use aws_lc_rs::rand::SystemRandom;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::generate::KeyPair;
use super::jwk::VerifyingKey;
use super::{KeyError, SigningAlgorithm, VerifyError};
use crate::storage::Keys;

type Claims = Map<String, Value>;

/// The signing key, its verification keys and the JWKS, ready to use.
///
/// Built once per change of the stored [`Keys`] (start, rotation, reload) and
/// shared behind an `Arc`; every method takes `&self`.
pub struct KeySet {
    kid: String,
    algorithm: SigningAlgorithm,
    pair: KeyPair,
    /// base64url of `{"alg":…,"kid":…}`, the same for every token.
    header_b64: String,
    /// Current, next and verification keys, by kid.
    verifiers: Vec<VerifyingKey>,
    jwks: Bytes,
    next_rotation: SystemTime,
    rng: SystemRandom,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("verifiers", &self.verifiers)
            .field("next_rotation", &self.next_rotation)
            .finish_non_exhaustive()
    }
}

impl KeySet {
    /// Parses the stored keys once: the private signing key, and the public keys
    /// of the current, next and verification keys.
    ///
    /// The next key is accepted for verification as well: it signs nothing here
    /// yet, but another replica that already rotated signs with it, and our copy
    /// may be up to one check interval behind.
    ///
    /// A verification key whose JWK does not parse is left out (of verification
    /// and of the JWKS) with a warning rather than failing the whole set: it
    /// only serves old tokens, and refusing to sign over it would be worse.
    pub fn from_keys(keys: &Keys) -> Result<Self, KeyError> {
        let stored = &keys.signing_key;
        let invalid = |reason: String| KeyError::InvalidStoredKey {
            kid: stored.kid.clone(),
            reason,
        };
        let algorithm = SigningAlgorithm::parse(&stored.algorithm)
            .ok_or_else(|| invalid(format!("unknown algorithm {:?}", stored.algorithm)))?;
        let pair = KeyPair::from_pkcs8(algorithm, &stored.private_pkcs8).map_err(invalid)?;
        let derived = pair.public_jwk(&stored.kid).map_err(invalid)?;
        if derived != stored.public_jwk {
            return Err(invalid(
                "the stored public JWK does not match the private key".to_owned(),
            ));
        }
        let mut verifiers = vec![VerifyingKey::from_jwk(&derived).map_err(invalid)?];
        let mut published = vec![&stored.public_jwk];

        if let Some(next) = &keys.next_key {
            let key = VerifyingKey::from_jwk(&next.public_jwk).map_err(|reason| {
                KeyError::InvalidStoredKey {
                    kid: next.kid.clone(),
                    reason,
                }
            })?;
            verifiers.push(key);
            published.push(&next.public_jwk);
        }
        for old in &keys.verification_keys {
            match VerifyingKey::from_jwk(&old.public_jwk) {
                Ok(key) => {
                    verifiers.push(key);
                    published.push(&old.public_jwk);
                }
                Err(reason) => {
                    let kid = old.public_jwk.get("kid").and_then(|kid| kid.as_str());
                    tracing::warn!(kid, %reason, "skipping unusable verification key");
                }
            }
        }

        let header = json!({ "alg": algorithm.as_str(), "kid": stored.kid });
        let header_b64 = URL_SAFE_NO_PAD.encode(header.to_string());
        let jwks = serde_json::to_vec_pretty(&json!({ "keys": published }))
            .map_err(|err| invalid(format!("JWKS encoding: {err}")))?;

        Ok(Self {
            kid: stored.kid.clone(),
            algorithm,
            pair,
            header_b64,
            verifiers,
            jwks: Bytes::from(jwks),
            next_rotation: keys.next_rotation,
            rng: SystemRandom::new(),
        })
    }

    /// The algorithm of the current signing key (the `alg` of every new token).
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// The kid of the current signing key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// When the current key is due to be replaced by the next one.
    pub fn next_rotation(&self) -> SystemTime {
        self.next_rotation
    }

    /// The `/keys` document, pretty-printed like Dex:
    /// `{"keys":[current, next, verification keys oldest→newest]}`. Cloning is a
    /// reference-count increment.
    pub fn jwks_json(&self) -> Bytes {
        self.jwks.clone()
    }

    /// Serializes `claims` and signs them as a compact JWS with header
    /// `{"alg":…,"kid":…}` (no `typ`, like Dex).
    pub fn sign_jwt<T: Serialize + ?Sized>(&self, claims: &T) -> Result<String, KeyError> {
        let payload =
            serde_json::to_vec(claims).map_err(|err| KeyError::Claims(err.to_string()))?;
        self.sign_payload(&payload)
    }

    /// Signs `claims` with a JWS header that also carries `typ` (explicit typing,
    /// RFC 8725 §3.11), e.g. `logout+jwt` for Back-Channel Logout tokens.
    pub fn sign_typed_jwt<T: Serialize + ?Sized>(
        &self,
        typ: &str,
        claims: &T,
    ) -> Result<String, KeyError> {
        let payload =
            serde_json::to_vec(claims).map_err(|err| KeyError::Claims(err.to_string()))?;
        let header = json!({ "alg": self.algorithm.as_str(), "kid": self.kid, "typ": typ });
        self.sign_with_header(&URL_SAFE_NO_PAD.encode(header.to_string()), &payload)
    }

    /// Signs an already serialized JSON payload as a compact JWS.
    pub fn sign_payload(&self, payload: &[u8]) -> Result<String, KeyError> {
        self.sign_with_header(&self.header_b64, payload)
    }

    fn sign_with_header(&self, header_b64: &str, payload: &[u8]) -> Result<String, KeyError> {
        let mut token =
            String::with_capacity(header_b64.len() + 2 + payload.len().div_ceil(3) * 4 + 344);
        token.push_str(header_b64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature =
            self.pair
                .sign(&self.rng, token.as_bytes())
                .map_err(|_| KeyError::Sign {
                    kid: self.kid.clone(),
                })?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }

    /// Checks a compact JWS signed by one of our keys (current, next or
    /// verification) and returns its claims. The key is chosen by `kid`; a token
    /// without `kid` is tried against every key of its algorithm. Only RS256,
    /// ES256 and EdDSA are accepted (never `none`), and the token's `alg` must be
    /// the key's. Issuer, expiry and audience are the caller's to check
    /// ([`crate::oidc::grants::check_token_claims`]).
    pub fn verify_jwt(&self, token: &str) -> Result<Claims, VerifyError> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed("not a compact JWS (three parts)"));
        };
        let header: Claims = URL_SAFE_NO_PAD
            .decode(header_b64)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(VerifyError::Malformed(
                "header is not a base64url JSON object",
            ))?;
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(VerifyError::Malformed("header has no \"alg\""))?;
        let alg = SigningAlgorithm::parse(alg_name)
            .ok_or_else(|| VerifyError::UnsupportedAlgorithm(alg_name.to_owned()))?;
        if header.contains_key("crit") {
            return Err(VerifyError::Malformed("header has critical extensions"));
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(VerifyError::Malformed("header \"kid\" is not a string")),
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| VerifyError::Malformed("signature is not base64url"))?;
        let signing_input = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];

        let verified = match kid {
            Some(kid) => {
                let key = self
                    .verifiers
                    .iter()
                    .find(|key| key.kid == kid)
                    .ok_or_else(|| VerifyError::UnknownKey(Some(kid.to_owned())))?;
                if key.algorithm != alg {
                    return Err(VerifyError::AlgorithmMismatch {
                        kid: kid.to_owned(),
                        token_alg: alg,
                        key_alg: key.algorithm,
                    });
                }
                key.verify(signing_input, &signature)
            }
            None => {
                let mut candidates = self.verifiers.iter().filter(|key| key.algorithm == alg);
                let mut any = false;
                let verified = candidates.any(|key| {
                    any = true;
                    key.verify(signing_input, &signature)
                });
                if !any {
                    return Err(VerifyError::UnknownKey(None));
                }
                verified
            }
        };
        if !verified {
            return Err(VerifyError::BadSignature);
        }
        URL_SAFE_NO_PAD
            .decode(payload_b64)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(VerifyError::Malformed(
                "payload is not a base64url JSON object",
            ))
    }
}

impl crate::oidc::mint::TokenSigner for KeySet {
    fn algorithm(&self) -> SigningAlgorithm {
        KeySet::algorithm(self)
    }

    fn sign(&self, claims: &serde_json::Value) -> Result<String, String> {
        self.sign_jwt(claims).map_err(|e| e.to_string())
    }
}
