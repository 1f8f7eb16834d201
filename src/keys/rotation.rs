//! The rotation rule, pure: given what storage holds and the time, what it should
//! hold. No clock, no storage, key generation injected.

use std::time::{Duration, SystemTime};

use super::{KeyError, SigningAlgorithm};
use crate::config::settings::Settings;
use crate::storage::{Keys, StoredSigningKey, VerificationKey};

/// What rotation aims for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPolicy {
    /// Algorithm of newly generated keys.
    pub algorithm: SigningAlgorithm,
    /// How long a key signs (`signer.config.keysRotationPeriod`, or the older
    /// `expiry.signingKeys`; default 6h). It is also how long the next key is
    /// published before it signs.
    pub rotation_period: Duration,
    /// How long a retired key stays in the JWKS: `expiry.idTokens`, so every
    /// token it signed can still be verified until it expires.
    pub verification_lifetime: Duration,
}

impl KeyPolicy {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            algorithm: settings.signer.algorithm,
            rotation_period: settings.signer.rotation_period,
            verification_lifetime: settings.expiry.id_tokens,
        }
    }
}

fn add(now: SystemTime, duration: Duration, what: &'static str) -> Result<SystemTime, KeyError> {
    now.checked_add(duration)
        .ok_or(KeyError::TimeOverflow { what })
}

/// Computes the keys storage should hold at `now`, or `None` when nothing is due.
///
/// - No keys: a current and a next key are generated.
/// - `now >= next_rotation`: the next key (published since the previous
///   rotation) becomes current; the old current key's public JWK joins the
///   verification keys until `now + verification_lifetime`; verification keys
///   already expired are dropped; a new next key is generated;
///   `next_rotation = now + rotation_period`. So every key is in the JWKS a full
///   rotation period before it signs anything (beyond Dex, #2759).
/// - Not due, but the next key is missing (keys written by something that does
///   not pre-publish) or has another algorithm than the policy (the operator
///   changed `signer` algorithm): a next key of the policy's algorithm is
///   generated now, and replaces the old next key, which has never signed
///   anything. The change takes effect at the next rotation, and the new key is
///   published from now until then.
/// - Due, and the next key still has another algorithm (only when rotation is
///   already due on the first check after the change): a fresh key of the new
///   algorithm is generated and signs immediately. This one case skips
///   pre-publication, as Dex always does; honouring the configured algorithm
///   right away is the operator's intent.
pub fn rotate(
    current: Option<Keys>,
    now: SystemTime,
    policy: &KeyPolicy,
    generate: &mut dyn FnMut(SigningAlgorithm) -> Result<StoredSigningKey, KeyError>,
) -> Result<Option<Keys>, KeyError> {
    let wanted = policy.algorithm.as_str();
    let Some(keys) = current else {
        return Ok(Some(Keys {
            signing_key: generate(policy.algorithm)?,
            next_key: Some(generate(policy.algorithm)?),
            verification_keys: Vec::new(),
            next_rotation: add(now, policy.rotation_period, "next rotation")?,
        }));
    };

    if now < keys.next_rotation {
        let next_fits = keys
            .next_key
            .as_ref()
            .is_some_and(|next| next.algorithm == wanted);
        if next_fits {
            return Ok(None);
        }
        return Ok(Some(Keys {
            next_key: Some(generate(policy.algorithm)?),
            ..keys
        }));
    }

    let Keys {
        signing_key: retired,
        next_key,
        mut verification_keys,
        ..
    } = keys;
    let signing_key = match next_key {
        Some(next) if next.algorithm == wanted => next,
        _ => generate(policy.algorithm)?,
    };
    verification_keys.retain(|key| key.expiry > now);
    verification_keys.push(VerificationKey {
        public_jwk: retired.public_jwk,
        expiry: add(now, policy.verification_lifetime, "verification key expiry")?,
    });
    Ok(Some(Keys {
        signing_key,
        next_key: Some(generate(policy.algorithm)?),
        verification_keys,
        next_rotation: add(now, policy.rotation_period, "next rotation")?,
    }))
}
