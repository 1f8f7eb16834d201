//! Token revocation (RFC 7009). Beyond Dex, which has no revocation endpoint.
//!
//! The token's shape decides what it is, as at introspection ([`classify`]): a JWT
//! is an access (or ID) token, anything else a refresh token. `token_type_hint`
//! therefore never changes the outcome (RFC 7009 §2.1 lets the server ignore it;
//! a wrong hint must still find the token).
//!
//! * **Refresh token**: possession is proven by the current *or* the previous
//!   (rotated) secret; then the whole family (one storage row, whatever the
//!   generation) and its offline-session reference are deleted. A secret matching
//!   neither changes nothing. Afterwards the refresh grant answers Dex's
//!   unknown-token error and introspection `{"active":false}`, because the row is
//!   gone. The grant's access tokens are denied too (RFC 7009 §2.1 SHOULD), by
//!   the approximation Dex's model allows: access tokens carry nothing that links
//!   them to a refresh family, so every token of that subject at that client
//!   minted up to the revocation is denied ([`grant_revocation`], [`new_jti`]).
//! * **Access token**: only a token we signed (current or retired key), for our
//!   issuer, unexpired, and issued to the caller can enter the deny list, one row
//!   per `jti`, kept until its `exp`; so what outsiders can add is bounded by what
//!   we issued. An expired token is answered 200 and nothing is stored.
//! * A token of another client is never revoked ([`Revocation::OtherClient`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::MAX_PARAM_LEN;
use super::error::{ErrorCode, OAuthError};
use super::grants::{check_token_claims, secret_matches};
use super::introspect::{IntrospectContext, TokenKind, classify, issued_to};
use super::subject::{RefreshTokenWire, encode_subject};
use crate::config::settings::{Client, Settings};
use crate::storage::{RevokedAccessTokens, Storage, StorageError, StorageResult};

/// What a revocation request found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// Nothing of ours matched (unknown, malformed, expired, wrong secret, another
    /// issuer's or an unsigned token): nothing changed.
    NotFound,
    /// A valid token issued to another client: nothing changed.
    OtherClient { owner: String },
    /// An access token now on the deny list.
    AccessToken,
    /// A refresh-token family deleted. Its access tokens were denied as of the
    /// request's `now`; the caller records [`grant_revocation`] once more with
    /// the time *after* the deletion, which also covers a refresh that rotated
    /// the family while it was being deleted.
    RefreshFamily { subject: String, client_id: String },
}

/// Revokes `token` for the authenticated `client` (see the module documentation).
/// Errors are storage failures (the token may still be valid: retry).
pub fn revoke(
    ctx: &IntrospectContext<'_>,
    client: &Client,
    token: &str,
) -> Result<Revocation, OAuthError> {
    match classify(token) {
        TokenKind::AccessToken => revoke_access_token(ctx, client, token),
        TokenKind::RefreshToken => revoke_refresh_family(ctx, client, token),
    }
}

fn revoke_access_token(
    ctx: &IntrospectContext<'_>,
    client: &Client,
    token: &str,
) -> Result<Revocation, OAuthError> {
    let claims = match ctx.verifier.verify(token) {
        Ok(claims) => Value::Object(claims),
        Err(error) => {
            tracing::debug!(%error, "token to revoke does not verify");
            return Ok(Revocation::NotFound);
        }
    };
    if let Err(error) = check_token_claims(&claims, &ctx.settings.issuer.url, ctx.now) {
        tracing::debug!(%error, "token to revoke is not valid");
        return Ok(Revocation::NotFound);
    }
    let Some(claims) = claims.as_object() else {
        return Ok(Revocation::NotFound);
    };
    let Some(owner) = issued_to(claims) else {
        return Ok(Revocation::NotFound);
    };
    if owner != client.id {
        return Ok(Revocation::OtherClient { owner });
    }
    let Some(jti) = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty())
    else {
        // Minted before tokens carried a `jti`; they expire within one token
        // lifetime of the upgrade.
        return Err(OAuthError::new(
            ErrorCode::UnsupportedTokenType,
            400,
            "This token has no \"jti\" claim and cannot be revoked.",
        ));
    };
    let Some(exp) = claims
        .get("exp")
        .and_then(Value::as_u64)
        .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
    else {
        return Ok(Revocation::NotFound);
    };
    // `revoked_at` = `exp` covers this one token whatever its `iat`.
    let revoked = RevokedAccessTokens {
        key: jti_key(jti),
        revoked_at: exp,
        expiry: exp,
    };
    ctx.storage
        .revoke_access_tokens(&revoked)
        .map_err(|error| {
            tracing::error!(%error, "failed to store an access token revocation");
            OAuthError::storage(&error)
        })?;
    Ok(Revocation::AccessToken)
}

fn revoke_refresh_family(
    ctx: &IntrospectContext<'_>,
    client: &Client,
    token: &str,
) -> Result<Revocation, OAuthError> {
    // No refresh token of ours is this long: skip the lookup.
    if token.is_empty() || token.len() > MAX_PARAM_LEN {
        return Ok(Revocation::NotFound);
    }
    let storage = ctx.storage;
    let wire = RefreshTokenWire::decode(token);
    let stored = match storage.get_refresh_token(&wire.id) {
        Ok(stored) => stored,
        Err(StorageError::NotFound) => return Ok(Revocation::NotFound),
        Err(error) => {
            tracing::error!(%error, "failed to get the refresh token to revoke");
            return Err(OAuthError::storage(&error));
        }
    };
    // Possession first, so that no answer depends on a token the caller does
    // not hold.
    if !(secret_matches(&wire.token, &stored.token)
        || secret_matches(&wire.token, &stored.obsolete_token))
    {
        return Ok(Revocation::NotFound);
    }
    if stored.client_id != client.id {
        return Ok(Revocation::OtherClient {
            owner: stored.client_id,
        });
    }
    let subject = encode_subject(&stored.claims.user_id, &stored.connector_id);
    let storage_error = |what: &'static str| {
        move |error: StorageError| {
            tracing::error!(%error, "{what}");
            OAuthError::storage(&error)
        }
    };
    deny_grant(storage, ctx.settings, &subject, &stored.client_id, ctx.now).map_err(
        storage_error("failed to deny a revoked grant's access tokens"),
    )?;
    // Remembered (before the delete, so that no refresh sees the family gone
    // and not yet remembered) so that using it afterwards answers `invalid_grant` (RFC 6749
    // §5.2: revoked), not the unknown-token error; bounded like every deny row.
    let tombstone = RevokedAccessTokens {
        key: family_key(&stored.id),
        revoked_at: ctx.now,
        expiry: ctx
            .now
            .checked_add(REVOKED_FAMILY_MEMORY)
            .unwrap_or(ctx.now),
    };
    if let Err(error) = storage.revoke_access_tokens(&tombstone) {
        tracing::warn!(%error, "failed to remember a revoked refresh token");
    }
    match storage.delete_refresh_token(&stored.id) {
        // Gone already: a concurrent revocation or replay detection won.
        Ok(()) | Err(StorageError::NotFound) => {}
        Err(error) => {
            return Err(storage_error("failed to delete a revoked refresh token")(
                error,
            ));
        }
    }
    // References are keyed by the family's id, so this only ever removes the
    // reference to this family.
    let unlinked = storage.update_offline_session(
        &stored.claims.user_id,
        &stored.connector_id,
        &mut |mut session| {
            if session.refresh.remove(&stored.id).is_none() {
                return Err(StorageError::Rejected("no reference to unlink".into()));
            }
            Ok(session)
        },
    );
    match unlinked {
        Ok(_) | Err(StorageError::NotFound | StorageError::Rejected(_)) => {}
        // The family is gone; a dangling reference only ages out.
        Err(error) => tracing::warn!(%error, "failed to unlink a revoked refresh token"),
    }
    Ok(Revocation::RefreshFamily {
        subject,
        client_id: stored.client_id,
    })
}

/// Denies every access token of `subject` at `client_id` issued at or before
/// `revoked_at`, until the last of them has expired (tokens live
/// `expiry.idTokens`). For every deletion of a refresh-token family: by
/// revocation, and by replay detection (a rotated refresh token or a redeemed
/// code presented again).
pub fn deny_grant(
    storage: &dyn Storage,
    settings: &Settings,
    subject: &str,
    client_id: &str,
    revoked_at: SystemTime,
) -> StorageResult<()> {
    let revoked = grant_revocation(subject, client_id, revoked_at, settings.expiry.id_tokens)?;
    storage.revoke_access_tokens(&revoked)
}

/// The deny-list row of [`deny_grant`].
pub fn grant_revocation(
    subject: &str,
    client_id: &str,
    revoked_at: SystemTime,
    token_lifetime: Duration,
) -> StorageResult<RevokedAccessTokens> {
    let expiry = revoked_at
        .checked_add(token_lifetime)
        .ok_or_else(|| StorageError::Backend("token lifetime out of range".to_owned()))?;
    Ok(RevokedAccessTokens {
        key: grant_key(subject, client_id),
        revoked_at,
        expiry,
    })
}

/// A token's `jti`: a UUIDv7 (RFC 9562 §5.7) from our random bytes, whose first
/// 48 bits are the mint time in milliseconds. `iat` has whole seconds only, too
/// coarse to tell a token minted just before a revocation from one minted just
/// after it (a user logging in again at once); [`is_revoked`] reads the time here.
pub fn new_jti(now: SystemTime) -> String {
    let millis = now
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &crate::crypto::random_bytes())
        .into_uuid()
        .to_string()
}

/// The mint time [`new_jti`] put in a `jti`, to the millisecond.
fn minted_at(jti: &str) -> Option<SystemTime> {
    let uuid = uuid::Uuid::try_parse(jti).ok()?;
    if uuid.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = uuid.get_timestamp()?.to_unix();
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Whether verified, unexpired token `claims` are on the deny list: by their
/// `jti`, or as a token of a revoked grant (same subject and client, minted at
/// or before the revocation). Storage errors fail closed at the caller.
pub fn is_revoked(storage: &dyn Storage, claims: &Map<String, Value>) -> StorageResult<bool> {
    let str_claim = |name: &str| claims.get(name).and_then(Value::as_str);
    let jti = str_claim("jti").filter(|j| !j.is_empty());
    // Without a mint time in the `jti`, `iat` (whole seconds: a token minted
    // in the revocation's second counts as before it); without `iat` either,
    // the earliest time (fail closed).
    let issued_at = jti.and_then(minted_at).unwrap_or_else(|| {
        claims
            .get("iat")
            .and_then(Value::as_u64)
            .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
            .unwrap_or(UNIX_EPOCH)
    });
    let mut keys = Vec::with_capacity(2);
    if let Some(jti) = jti {
        keys.push(jti_key(jti));
    }
    if let (Some(subject), Some(client_id)) = (str_claim("sub"), issued_to(claims)) {
        keys.push(grant_key(subject, &client_id));
    }
    for key in keys {
        match storage.get_revoked_access_tokens(&key) {
            Ok(revoked) if issued_at <= revoked.revoked_at => return Ok(true),
            Ok(_) | Err(StorageError::NotFound) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(false)
}

/// The deny-list key of one token. `jti` values and subjects (base64url) hold
/// no space, so the two key kinds cannot collide.
/// How long a revoked refresh token is answered as revoked (`invalid_grant`)
/// rather than unknown (`invalid_request`, Dex's error for a token it never saw).
pub const REVOKED_FAMILY_MEMORY: Duration = Duration::from_secs(30 * 24 * 3600);

fn family_key(id: &str) -> String {
    format!("refresh {id}")
}

/// Whether the refresh-token family `id` was revoked at `/token/revoke` (within
/// [`REVOKED_FAMILY_MEMORY`]).
pub fn family_revoked(storage: &dyn Storage, id: &str) -> StorageResult<bool> {
    match storage.get_revoked_access_tokens(&family_key(id)) {
        Ok(_) => Ok(true),
        Err(StorageError::NotFound) => Ok(false),
        Err(error) => Err(error),
    }
}

fn jti_key(jti: &str) -> String {
    format!("jti {jti}")
}

/// The deny-list key of every token of `subject` at `client_id`.
fn grant_key(subject: &str, client_id: &str) -> String {
    format!("grant {subject} {client_id}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::storage::memory::MemoryStorage;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn jti_is_a_uuid_v7_carrying_the_mint_time_to_the_millisecond() {
        let now = at(1_800_000_000) + Duration::from_nanos(123_456_789);
        let jti = new_jti(now);
        assert_eq!(uuid::Uuid::try_parse(&jti).unwrap().get_version_num(), 7);
        assert_eq!(
            minted_at(&jti),
            Some(at(1_800_000_000) + Duration::from_millis(123))
        );
        assert_ne!(jti, new_jti(now), "random beyond the time");
        assert_eq!(minted_at("abc"), None);
        assert_eq!(minted_at(&uuid::Uuid::nil().to_string()), None);
    }

    #[test]
    fn grant_revocation_tells_tokens_of_the_same_second_apart_by_their_jti() {
        let storage = MemoryStorage::new();
        let revoked_at = at(1_000) + Duration::from_millis(400);
        storage
            .revoke_access_tokens(
                &grant_revocation("sub1", "web", revoked_at, Duration::from_secs(60)).unwrap(),
            )
            .unwrap();
        let token = |minted: SystemTime| {
            claims(json!({"sub": "sub1", "aud": "web", "iat": 1_000, "jti": new_jti(minted)}))
        };
        assert!(is_revoked(&storage, &token(revoked_at - Duration::from_millis(1))).unwrap());
        assert!(is_revoked(&storage, &token(revoked_at)).unwrap());
        assert!(!is_revoked(&storage, &token(revoked_at + Duration::from_millis(1))).unwrap());
    }

    #[test]
    fn without_a_mint_time_in_the_jti_iat_decides_to_the_second() {
        let storage = MemoryStorage::new();
        let revoked_at = at(1_000) + Duration::from_millis(400);
        let row = grant_revocation("sub1", "web", revoked_at, Duration::from_secs(60)).unwrap();
        assert_eq!(row.expiry, revoked_at + Duration::from_secs(60));
        storage.revoke_access_tokens(&row).unwrap();
        let token = |iat: u64, sub: &str, aud: &str| {
            claims(json!({"sub": sub, "aud": aud, "iat": iat, "jti": format!("j{iat}")}))
        };
        assert!(is_revoked(&storage, &token(999, "sub1", "web")).unwrap());
        assert!(is_revoked(&storage, &token(1_000, "sub1", "web")).unwrap());
        assert!(!is_revoked(&storage, &token(1_001, "sub1", "web")).unwrap());
        assert!(!is_revoked(&storage, &token(999, "sub2", "web")).unwrap());
        assert!(!is_revoked(&storage, &token(999, "sub1", "other")).unwrap());
        // Several audiences: the token belongs to `azp`.
        let multi = claims(json!({"sub": "sub1", "aud": ["peer", "web"], "azp": "web", "iat": 5}));
        assert!(is_revoked(&storage, &multi).unwrap());
        // No `iat`: as old as can be.
        let no_iat = claims(json!({"sub": "sub1", "aud": "web"}));
        assert!(is_revoked(&storage, &no_iat).unwrap());
    }

    #[test]
    fn jti_revocation_denies_that_token_only() {
        let storage = MemoryStorage::new();
        storage
            .revoke_access_tokens(&RevokedAccessTokens {
                key: jti_key("abc"),
                revoked_at: at(2_000),
                expiry: at(2_000),
            })
            .unwrap();
        let token = |jti: &str| claims(json!({"sub": "s", "aud": "web", "iat": 1_000, "jti": jti}));
        assert!(is_revoked(&storage, &token("abc")).unwrap());
        assert!(!is_revoked(&storage, &token("abd")).unwrap());
        assert!(!is_revoked(&storage, &token("")).unwrap());
    }
}
