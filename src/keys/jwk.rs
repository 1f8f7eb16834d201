//! Public JWKs (RFC 7517/7518/8037): building them from key material and parsing
//! them back into verification keys.
//!
//! Members are emitted in the order Dex (go-jose) emits them — `use`, `kty`, `kid`,
//! `crv`, `alg`, then the key parameters — so `/keys` reads the same as Dex's.

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256,
    RsaPublicKeyComponents,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::SigningAlgorithm;

/// Length of one P-256 coordinate.
const P256_COORDINATE_LEN: usize = 32;

pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An RSA public JWK from the big-endian modulus and exponent (no leading zeros).
pub fn rsa_jwk(kid: &str, n: &[u8], e: &[u8]) -> Value {
    json!({
        "use": "sig",
        "kty": "RSA",
        "kid": kid,
        "alg": SigningAlgorithm::RS256.as_str(),
        "n": b64(n),
        "e": b64(e),
    })
}

/// A P-256 public JWK from the uncompressed SEC1 point (`04 || x || y`).
pub fn p256_jwk(kid: &str, point: &[u8]) -> Result<Value, String> {
    let coordinates = match point.split_first() {
        Some((0x04, rest)) if rest.len() == 2 * P256_COORDINATE_LEN => rest,
        _ => return Err("P-256 public key is not an uncompressed point".to_owned()),
    };
    let (x, y) = coordinates.split_at(P256_COORDINATE_LEN);
    Ok(json!({
        "use": "sig",
        "kty": "EC",
        "kid": kid,
        "crv": "P-256",
        "alg": SigningAlgorithm::ES256.as_str(),
        "x": b64(x),
        "y": b64(y),
    }))
}

/// An Ed25519 public JWK (RFC 8037) from the 32-byte public key.
pub fn ed25519_jwk(kid: &str, public_key: &[u8]) -> Value {
    json!({
        "use": "sig",
        "kty": "OKP",
        "kid": kid,
        "crv": "Ed25519",
        "alg": SigningAlgorithm::EdDSA.as_str(),
        "x": b64(public_key),
    })
}

/// A public key parsed once from its JWK, ready to verify signatures.
pub struct VerifyingKey {
    pub kid: String,
    pub algorithm: SigningAlgorithm,
    key: ParsedPublicKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// Parses a public JWK of one of the three supported algorithms. The key's
    /// algorithm comes from `alg`; without `alg` it follows from `kty`/`crv`.
    pub fn from_jwk(jwk: &Value) -> Result<Self, String> {
        let text = |name: &str| jwk.get(name).and_then(Value::as_str);
        let bytes = |name: &'static str| -> Result<Vec<u8>, String> {
            let value = text(name).ok_or_else(|| format!("JWK member {name:?} is missing"))?;
            URL_SAFE_NO_PAD
                .decode(value)
                .map_err(|_| format!("JWK member {name:?} is not base64url without padding"))
        };
        let kid = text("kid").ok_or("JWK has no \"kid\"")?.to_owned();
        let kty = text("kty").ok_or("JWK has no \"kty\"")?;
        let inferred = match (kty, text("crv")) {
            ("RSA", _) => SigningAlgorithm::RS256,
            ("EC", Some("P-256")) => SigningAlgorithm::ES256,
            ("OKP", Some("Ed25519")) => SigningAlgorithm::EdDSA,
            (kty, crv) => return Err(format!("unsupported JWK key type {kty:?} (crv {crv:?})")),
        };
        let algorithm = match text("alg") {
            None => inferred,
            Some(name) => match SigningAlgorithm::parse(name) {
                Some(alg) if alg == inferred => alg,
                _ => return Err(format!("JWK alg {name:?} does not fit key type {kty:?}")),
            },
        };
        let rejected = |err: aws_lc_rs::error::KeyRejected| format!("JWK key rejected: {err}");
        let key = match algorithm {
            SigningAlgorithm::RS256 => RsaPublicKeyComponents {
                n: strip_leading_zeros(bytes("n")?),
                e: strip_leading_zeros(bytes("e")?),
            }
            .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
            .map_err(rejected)?,
            SigningAlgorithm::ES256 => {
                let (x, y) = (bytes("x")?, bytes("y")?);
                if x.len() != P256_COORDINATE_LEN || y.len() != P256_COORDINATE_LEN {
                    return Err("P-256 JWK coordinates must be 32 bytes".to_owned());
                }
                let mut point = Vec::with_capacity(1 + 2 * P256_COORDINATE_LEN);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).map_err(rejected)?
            }
            SigningAlgorithm::EdDSA => {
                ParsedPublicKey::new(&ED25519, bytes("x")?).map_err(rejected)?
            }
        };
        Ok(Self {
            kid,
            algorithm,
            key,
        })
    }

    /// Checks a JWS signature (`signature` already base64url-decoded).
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(signing_input, signature).is_ok()
    }
}

/// JWK integers are big-endian without leading zeros, but some producers pad them;
/// aws-lc-rs refuses padded components, so accept both.
fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.drain(..zeros);
    bytes
}
