//! Token-endpoint grants over storage: `authorization_code`, `refresh_token`
//! (in three phases so the async upstream call stays outside storage), `password`,
//! plus PKCE verification and the userinfo-side claim checks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::authorize::connector_allowed;
use super::check_param_len;
use super::error::{ErrorCode, OAuthError, REFRESH_CLAIMED};
use super::is_expired;
use super::mint::{Minter, TokenResponse, TokenSigner, TokenSubject, unix_seconds};
use super::revoke::deny_grant;
use super::scopes::{self, check_scopes, go_quote_list};
use super::subject::{RefreshTokenWire, encode_subject};
use crate::config::settings::{Client, RefreshTokenPolicy, Settings};
use crate::crypto::new_id;
use crate::storage::{
    Claims, GrantWrite, NewRefreshToken, OfflineSession, Pkce, RedeemedCode, RefreshToken,
    RefreshTokenRef, Storage, StorageError,
};

/// Beyond Dex: a user may hold several refresh tokens for one client (one per
/// login, dexidp/dex#981) instead of each login revoking the previous one. To
/// keep that bounded, issuing a token prunes the user's expired tokens for the
/// client and, past this many, the least recently used ones.
pub const MAX_REFRESH_TOKENS_PER_CLIENT: usize = 32;

/// What every grant needs: storage, settings, the signer and the current time.
#[derive(Clone, Copy)]
pub struct GrantContext<'a> {
    pub storage: &'a dyn Storage,
    pub settings: &'a Settings,
    pub signer: &'a dyn TokenSigner,
    pub now: SystemTime,
}

impl GrantContext<'_> {
    pub(super) fn minter(&self) -> Minter<'_> {
        Minter::new(self.settings, self.signer)
    }

    fn policy(&self) -> &RefreshTokenPolicy {
        &self.settings.expiry.refresh_tokens
    }
}

/// `grant_type` must be one of the effective grant types, else 400
/// `unsupported_grant_type` (no description, as Dex).
pub fn check_grant_type(settings: &Settings, grant_type: &str) -> Result<(), OAuthError> {
    if settings.oauth2.grant_types.iter().any(|g| g == grant_type) {
        Ok(())
    } else {
        Err(OAuthError::unsupported_grant_type())
    }
}

// ---------------------------------------------------------------------------
// authorization_code
// ---------------------------------------------------------------------------

/// The `authorization_code` grant's parameters.
#[derive(Debug, Clone, Copy, Default)]
pub struct CodeExchange<'a> {
    pub code: &'a str,
    pub redirect_uri: &'a str,
    pub code_verifier: &'a str,
    /// Ids of the connectors that can refresh identities: a refresh token is only
    /// issued for a code from one of them, and only with `offline_access`.
    pub refreshing_connectors: &'a [String],
}

/// Redeems an authorization code for an authenticated `client` (Dex's
/// `handleAuthCode`, HEAD order): code unknown / expired / another client's ⇒ 400
/// `invalid_grant`; PKCE (§12); exact `redirect_uri`; then the code is deleted
/// *before* minting, so of two concurrent redemptions only one gets tokens.
///
/// Beyond Dex: the refresh token issued here does not replace the user's earlier
/// refresh tokens for this client (see [`MAX_REFRESH_TOKENS_PER_CLIENT`]).
pub fn exchange_code(
    ctx: &GrantContext<'_>,
    client: &Client,
    request: &CodeExchange<'_>,
) -> Result<TokenResponse, OAuthError> {
    if request.code.is_empty() {
        return Err(OAuthError::invalid_request("Required param: code."));
    }
    check_param_len("code", request.code)?;
    check_param_len("redirect_uri", request.redirect_uri)?;
    check_param_len("code_verifier", request.code_verifier)?;

    let invalid_code = || OAuthError::invalid_grant("Invalid or expired code parameter.");
    let code = match ctx.storage.get_auth_code(request.code) {
        Ok(code) => code,
        Err(StorageError::NotFound) => {
            revoke_if_replayed(ctx, request.code);
            return Err(invalid_code());
        }
        Err(err) => {
            tracing::error!(%err, "failed to get auth code");
            return Err(OAuthError::storage(&err));
        }
    };
    if is_expired(code.expiry, ctx.now) || code.client_id != client.id {
        return Err(invalid_code());
    }
    verify_pkce(request.code_verifier, &code.pkce)?;
    if code.redirect_uri != request.redirect_uri {
        return Err(OAuthError::invalid_request(
            "redirect_uri did not match URI from initial request.",
        ));
    }
    let subject = TokenSubject {
        client_id: &client.id,
        claims: &code.claims,
        scopes: &code.scopes,
        connector_id: &code.connector_id,
        nonce: &code.nonce,
        auth_time: code.auth_time,
        session_id: &code.session_id,
    };
    let with_refresh = request.refreshing_connectors.contains(&code.connector_id)
        && scopes::has_scope(&code.scopes, scopes::OFFLINE_ACCESS);
    let refresh = with_refresh.then(|| new_refresh_token(ctx, &subject));
    // The tombstone names the refresh token and commits with it: whoever finds the
    // code spent (a replay, even one racing this exchange) finds the token to revoke.
    let redeemed = RedeemedCode {
        id: code.id.clone(),
        client_id: code.client_id.clone(),
        refresh_token_id: refresh.as_ref().map(|t| t.id.clone()),
        user_id: code.claims.user_id.clone(),
        connector_id: code.connector_id.clone(),
        expiry: code.expiry,
    };
    issue_tokens(ctx, &subject, Some(&redeemed), refresh, code.connector_data)
}

/// A code presented again while its tombstone lives (until the code's expiry):
/// RFC 6749 §4.1.2 says to revoke what the first exchange issued, since one of
/// the two presenters is not who the code was meant for. Access and ID tokens
/// are self-contained JWTs and expire on their own; the refresh token (and its
/// offline-session reference) is deleted.
fn revoke_if_replayed(ctx: &GrantContext<'_>, code: &str) {
    let redeemed = match ctx.storage.get_redeemed_code(code) {
        Ok(redeemed) if !is_expired(redeemed.expiry, ctx.now) => redeemed,
        Ok(_) | Err(StorageError::NotFound) => return,
        Err(err) => {
            tracing::error!(%err, "failed to look up a redeemed auth code");
            return;
        }
    };
    tracing::warn!(
        client_id = redeemed.client_id,
        "authorization code replayed; revoking the refresh token its exchange issued"
    );
    if let Some(id) = &redeemed.refresh_token_id {
        revoke_refresh_token(ctx.storage, id, &redeemed.user_id, &redeemed.connector_id);
    }
    deny_access_tokens(
        ctx,
        &redeemed.user_id,
        &redeemed.connector_id,
        &redeemed.client_id,
    );
}

/// Beyond Dex: after replay detection, the grant's access tokens are refused
/// too (by subject and client, up to now: see `oidc::revoke`). Best effort.
fn deny_access_tokens(ctx: &GrantContext<'_>, user_id: &str, connector_id: &str, client_id: &str) {
    let subject = encode_subject(user_id, connector_id);
    if let Err(err) = deny_grant(ctx.storage, ctx.settings, &subject, client_id, ctx.now) {
        tracing::error!(%err, "failed to deny a replayed grant's access tokens");
    }
}

/// PKCE at the token endpoint (RFC 7636 §4.6; Dex's `handleAuthCode`), using the method stored at
/// `/auth` (a method sent to `/token` is ignored, so no downgrade).
pub fn verify_pkce(code_verifier: &str, pkce: &Pkce) -> Result<(), OAuthError> {
    match (code_verifier.is_empty(), pkce.code_challenge.is_empty()) {
        (false, false) => {
            let computed = match pkce.code_challenge_method.as_str() {
                "S256" => crate::crypto::s256_challenge(code_verifier),
                "plain" | "" => code_verifier.to_owned(),
                other => {
                    tracing::error!(method = other, "stored PKCE method is unknown");
                    return Err(OAuthError::server_error());
                }
            };
            if crate::crypto::constant_time_eq(computed.as_bytes(), pkce.code_challenge.as_bytes())
            {
                Ok(())
            } else {
                Err(OAuthError::invalid_grant("Invalid code_verifier."))
            }
        }
        (false, true) => Err(OAuthError::invalid_request(
            "No PKCE flow started. Cannot check code_verifier.",
        )),
        (true, false) => Err(OAuthError::invalid_grant(
            "Expecting parameter code_verifier in PKCE flow.",
        )),
        (true, true) => Ok(()),
    }
}

/// Access token, ID token when `openid` was granted, and `refresh` when given.
/// The tokens are signed first (pure CPU: nothing to undo if storage then refuses),
/// then ONE storage transaction spends the code (`redeem`, its tombstone), stores
/// the refresh token, links it from the user's offline session (with the upstream
/// `connector_data`) and deletes the tokens pruned from there.
pub(super) fn issue_tokens(
    ctx: &GrantContext<'_>,
    subject: &TokenSubject<'_>,
    redeem: Option<&RedeemedCode>,
    refresh: Option<RefreshToken>,
    connector_data: Option<Vec<u8>>,
) -> Result<TokenResponse, OAuthError> {
    let minter = ctx.minter();
    let access = minter.access_token(subject, ctx.now)?;
    let id_token = if scopes::has_scope(subject.scopes, scopes::OPENID) {
        let code = redeem.map(|r| r.id.as_str());
        Some(minter.id_token(subject, ctx.now, Some(&access.token), code)?)
    } else {
        None
    };
    let policy = ctx.policy();
    let now = ctx.now;
    let mut link = refresh.as_ref().map(|token| {
        let reference = RefreshTokenRef {
            id: token.id.clone(),
            client_id: token.client_id.clone(),
            created_at: now,
            last_used: now,
        };
        let connector_data = connector_data.filter(|d| !d.is_empty());
        move |session: &mut OfflineSession| {
            let pruned = stale_references(policy, now, session, &reference);
            session.refresh.retain(|id, _| !pruned.contains(id));
            session
                .refresh
                .insert(reference.id.clone(), reference.clone());
            if let Some(data) = &connector_data {
                session.connector_data = Some(data.clone());
            }
            pruned
        }
    });
    let grant = GrantWrite {
        redeem,
        refresh: refresh
            .as_ref()
            .zip(link.as_mut())
            .map(|(token, link)| NewRefreshToken { token, link }),
    };
    match ctx.storage.commit_grant(grant) {
        Ok(()) => {}
        Err(StorageError::NotFound) if redeem.is_some() => {
            // Spent by a concurrent exchange between our read and now: a replay.
            if let Some(redeemed) = redeem {
                revoke_if_replayed(ctx, &redeemed.id);
            }
            return Err(OAuthError::invalid_grant(
                "Invalid or expired code parameter.",
            ));
        }
        Err(err) => {
            tracing::error!(%err, "failed to store the grant");
            return Err(OAuthError::storage(&err));
        }
    }
    let refresh = refresh.map(|token| {
        RefreshTokenWire {
            id: token.id,
            token: token.token,
        }
        .encode()
    });
    Ok(TokenResponse::new(&access, id_token, refresh, ctx.now))
}

fn new_refresh_token(ctx: &GrantContext<'_>, subject: &TokenSubject<'_>) -> RefreshToken {
    RefreshToken {
        id: new_id(),
        token: new_id(),
        obsolete_token: String::new(),
        created_at: ctx.now,
        last_used: ctx.now,
        client_id: subject.client_id.to_owned(),
        connector_id: subject.connector_id.to_owned(),
        // Upstream credentials live on the offline session only.
        connector_data: None,
        claims: subject.claims.clone(),
        scopes: subject.scopes.to_vec(),
        nonce: subject.nonce.to_owned(),
        auth_time: subject.auth_time,
        session_id: subject.session_id.to_owned(),
    }
}

/// The references a new token (`added`) makes stale: the session's expired ones
/// for its client, then the least recently used ones beyond the per-client cap.
/// Decided from the session's references (a reference keeps its token's `created_at`,
/// and every refresh updates its `last_used`), not by reading every token: a user with
/// many logins would otherwise pay one token read per reference on every code exchange
/// (measured: /token at ~0.3 × the signature ceiling with 32 references). A reference
/// whose token is already gone counts as live until it expires or is evicted.
fn stale_references(
    policy: &RefreshTokenPolicy,
    now: SystemTime,
    session: &OfflineSession,
    added: &RefreshTokenRef,
) -> Vec<String> {
    let mut live: Vec<(SystemTime, String)> = Vec::new();
    let mut doomed: Vec<String> = Vec::new();
    for reference in session
        .refresh
        .values()
        .filter(|r| r.client_id == added.client_id && r.id != added.id)
    {
        if after(now, reference.created_at, policy.absolute_lifetime)
            || after(now, reference.last_used, policy.valid_if_not_used_for)
        {
            doomed.push(reference.id.clone());
        } else {
            live.push((reference.last_used, reference.id.clone()));
        }
    }
    if live.len() >= MAX_REFRESH_TOKENS_PER_CLIENT {
        live.sort();
        let excess = live.len() + 1 - MAX_REFRESH_TOKENS_PER_CLIENT;
        doomed.extend(live.into_iter().take(excess).map(|(_, id)| id));
    }
    doomed
}

// ---------------------------------------------------------------------------
// refresh_token
// ---------------------------------------------------------------------------

fn after(now: SystemTime, base: SystemTime, interval: Option<Duration>) -> bool {
    match interval.filter(|d| !d.is_zero()) {
        Some(d) => base
            .checked_add(d)
            .is_some_and(|limit| is_expired(limit, now)),
        None => false,
    }
}

pub(crate) fn reuse_allowed(
    policy: &RefreshTokenPolicy,
    last_used: SystemTime,
    now: SystemTime,
) -> bool {
    !policy.reuse_interval.is_zero()
        && last_used
            .checked_add(policy.reuse_interval)
            .is_none_or(|limit| !is_expired(limit, now))
}

pub(crate) fn refresh_expired(
    policy: &RefreshTokenPolicy,
    token: &RefreshToken,
    now: SystemTime,
) -> bool {
    after(now, token.created_at, policy.absolute_lifetime)
        || after(now, token.last_used, policy.valid_if_not_used_for)
}

pub(crate) fn secret_matches(presented: &str, stored: &str) -> bool {
    !presented.is_empty()
        && !stored.is_empty()
        && crate::crypto::constant_time_eq(presented.as_bytes(), stored.as_bytes())
}

/// Dex answers internal refresh failures with 500 `invalid_request`.
fn refresh_internal_error() -> OAuthError {
    OAuthError::new(ErrorCode::InvalidRequest, 500, "")
}

/// A refresh that failed in storage: 503 `server_error` while the database is
/// unavailable (the client keeps its token and retries), else as Dex.
fn refresh_storage_error(error: &StorageError) -> OAuthError {
    if error.is_unavailable() {
        OAuthError::storage(error)
    } else {
        refresh_internal_error()
    }
}

/// A validated refresh request, between [`begin_refresh`] and [`commit_refresh`].
/// If [`RefreshPlan::needs_upstream`], the caller asks the token's connector to
/// refresh the identity (with [`RefreshPlan::claims`],
/// [`RefreshPlan::connector_data`] and [`RefreshPlan::scopes`]) before committing.
#[derive(Debug, Clone)]
pub struct RefreshPlan {
    token_id: String,
    presented: String,
    needs_upstream: bool,
    pub client_id: String,
    pub connector_id: String,
    /// The scopes of this response: the requested subset, or the original ones.
    pub scopes: Vec<String>,
    /// The identity as stored on the token.
    pub claims: Claims,
    /// Upstream credentials for the connector's refresh (the token's legacy copy,
    /// else the offline session's); only loaded when an upstream call is needed.
    pub connector_data: Option<Vec<u8>>,
    nonce: String,
    auth_time: Option<SystemTime>,
    /// The browser session that issued the token (`sid`), or empty.
    pub session_id: String,
}

impl RefreshPlan {
    /// Whether the upstream connector should be asked to refresh the identity.
    /// False inside the reuse window, where Dex returns the current token without
    /// contacting upstream.
    pub fn needs_upstream(&self) -> bool {
        self.needs_upstream
    }
}

/// Phase 1 of the refresh grant: validation in Dex's order (Dex's
/// `server/refreshhandlers.go`) for an authenticated `client`.
///
/// Errors as Dex: missing token 400 `invalid_request`; unknown or wrong secret 400
/// `invalid_request` "Refresh token is invalid or has already been claimed by
/// another client."; another client's token 400 `invalid_grant`; expired 400
/// `invalid_request` "Refresh token expired."; connector not allowed 400
/// `invalid_grant`; widened scopes 400 `invalid_request`.
///
/// Beyond Dex: presenting a rotated (obsolete) secret outside the reuse window is
/// treated as token theft: the refresh token — the whole family, since every
/// rotation shares its storage id — is deleted with its offline-session
/// reference, so the *current* secret stops working too; the answer is 400
/// `invalid_grant`.
pub fn begin_refresh(
    ctx: &GrantContext<'_>,
    client: &Client,
    refresh_token: &str,
    scope_param: &str,
) -> Result<RefreshPlan, OAuthError> {
    if refresh_token.is_empty() {
        return Err(OAuthError::invalid_request(
            "No refresh token is found in request.",
        ));
    }
    check_param_len("refresh_token", refresh_token)?;
    check_param_len("scope", scope_param)?;

    let wire = RefreshTokenWire::decode(refresh_token);
    let token = match ctx.storage.get_refresh_token(&wire.id) {
        Ok(token) => token,
        Err(StorageError::NotFound) => {
            return Err(match super::revoke::family_revoked(ctx.storage, &wire.id) {
                Ok(true) => OAuthError::invalid_grant("Refresh token has been revoked."),
                _ => OAuthError::invalid_request(REFRESH_CLAIMED),
            });
        }
        Err(err) => {
            tracing::error!(%err, "failed to get refresh token");
            return Err(refresh_storage_error(&err));
        }
    };
    if token.client_id != client.id {
        return Err(OAuthError::invalid_grant(REFRESH_CLAIMED));
    }

    let policy = ctx.policy();
    let reuse = reuse_allowed(policy, token.last_used, ctx.now);
    if !secret_matches(&wire.token, &token.token) {
        let obsolete = secret_matches(&wire.token, &token.obsolete_token);
        if !obsolete {
            return Err(OAuthError::invalid_request(REFRESH_CLAIMED));
        }
        if !reuse {
            revoke_family(ctx, &token);
            return Err(OAuthError::invalid_grant(
                "Refresh token was already used; the token has been revoked.",
            ));
        }
    }

    if refresh_expired(policy, &token, ctx.now) {
        return Err(OAuthError::invalid_request("Refresh token expired."));
    }
    // Dex HEAD: a `refreshTokenLifetime: session` client's token ends with the
    // browser session that issued it.
    let ended = super::session::bound_session_ended(
        ctx.storage,
        ctx.settings,
        &client.id,
        &token.session_id,
        ctx.now,
    )
    .map_err(|err| {
        tracing::error!(%err, "failed to read the browser session of a refresh token");
        OAuthError::storage(&err)
    })?;
    if ended {
        revoke_refresh_token(
            ctx.storage,
            &token.id,
            &token.claims.user_id,
            &token.connector_id,
        );
        return Err(OAuthError::invalid_grant(
            "The session this refresh token belongs to has ended.",
        ));
    }
    if !connector_allowed(client, &token.connector_id) {
        return Err(OAuthError::invalid_grant(
            "Connector not allowed for this client.",
        ));
    }

    let requested = scopes::parse_scopes(scope_param);
    let scopes = if requested.is_empty() {
        token.scopes.clone()
    } else {
        let unauthorized: Vec<String> = requested
            .iter()
            .filter(|s| !token.scopes.contains(s))
            .cloned()
            .collect();
        if !unauthorized.is_empty() {
            return Err(OAuthError::invalid_request(format!(
                "Requested scopes contain unauthorized scope(s): {}.",
                go_quote_list(&unauthorized)
            )));
        }
        requested
    };

    let needs_upstream = !reuse;
    let connector_data = if !needs_upstream {
        None
    } else if token.connector_data.as_ref().is_some_and(|d| !d.is_empty()) {
        token.connector_data.clone()
    } else {
        match ctx
            .storage
            .get_offline_session(&token.claims.user_id, &token.connector_id)
        {
            Ok(session) => session.connector_data,
            Err(StorageError::NotFound) => None,
            Err(err) => {
                tracing::error!(%err, "failed to get offline session");
                return Err(refresh_storage_error(&err));
            }
        }
    };

    Ok(RefreshPlan {
        token_id: token.id,
        presented: wire.token,
        needs_upstream,
        client_id: token.client_id,
        connector_id: token.connector_id,
        scopes,
        claims: token.claims,
        connector_data,
        nonce: token.nonce,
        auth_time: token.auth_time,
        session_id: token.session_id,
    })
}

/// Deletes a refresh token and its offline-session reference (best effort).
pub(crate) fn revoke_refresh_token(
    storage: &dyn Storage,
    id: &str,
    user_id: &str,
    connector_id: &str,
) {
    match storage.delete_refresh_token(id) {
        Ok(()) | Err(StorageError::NotFound) => {}
        Err(err) => tracing::error!(%err, "failed to revoke refresh token"),
    }
    let result = storage.update_offline_session(user_id, connector_id, &mut |mut session| {
        session.refresh.remove(id);
        Ok(session)
    });
    match result {
        Ok(_) | Err(StorageError::NotFound) => {}
        Err(err) => tracing::error!(%err, "failed to unlink revoked refresh token"),
    }
}

fn revoke_family(ctx: &GrantContext<'_>, token: &RefreshToken) {
    revoke_refresh_token(
        ctx.storage,
        &token.id,
        &token.claims.user_id,
        &token.connector_id,
    );
    deny_access_tokens(
        ctx,
        &token.claims.user_id,
        &token.connector_id,
        &token.client_id,
    );
    tracing::warn!(
        client_id = token.client_id,
        "rotated refresh token replayed outside the reuse window; token revoked"
    );
}

/// Phase 3 of the refresh grant: rotation inside ONE `update_refresh_token`
/// updater, then minting (access token + always an ID token, no `c_hash`).
///
/// `refreshed` is the identity from the connector's refresh (claims and new
/// connector data), or `None` when no upstream call was made (not needed, or the
/// connector cannot refresh): then the stored claims are used. If the connector
/// failed, do not call this; answer [`OAuthError::upstream_refresh_failed`].
/// (If the plan needed no upstream call but the reuse window closed in between,
/// the token rotates on the stored claims.)
///
/// The presented secret is compared again inside the updater, so of two
/// concurrent refreshes with the same secret only one rotates; the other gets the
/// reuse-window answer (the new current token) when a window is configured, else
/// 400 `invalid_request` "…already been claimed…" (no revocation: this is the
/// benign race of two requests in flight, not a replay).
pub fn commit_refresh(
    ctx: &GrantContext<'_>,
    plan: &RefreshPlan,
    refreshed: Option<(Claims, Option<Vec<u8>>)>,
) -> Result<TokenResponse, OAuthError> {
    let policy = ctx.policy();
    let now = ctx.now;
    let rotate = !policy.disable_rotation;
    // (secret to hand out, claims to mint from, whether last_used advanced)
    let mut outcome: Option<(String, Claims, bool)> = None;

    let result = ctx
        .storage
        .update_refresh_token(&plan.token_id, &mut |mut old| {
            outcome = None;
            if old.client_id != plan.client_id {
                return Err(StorageError::Rejected(
                    "refresh token of another client".into(),
                ));
            }
            let reuse = reuse_allowed(policy, old.last_used, now);
            if !secret_matches(&plan.presented, &old.token) {
                let obsolete = secret_matches(&plan.presented, &old.obsolete_token);
                if obsolete && reuse && rotate {
                    outcome = Some((old.token.clone(), old.claims.clone(), false));
                    return Ok(old);
                }
                return Err(StorageError::Rejected("refresh token claimed twice".into()));
            }
            if reuse {
                // Inside the window nothing advances (both with and without rotation).
                outcome = Some((old.token.clone(), old.claims.clone(), false));
                return Ok(old);
            }
            if rotate {
                old.obsolete_token = std::mem::take(&mut old.token);
                old.token = new_id();
            }
            old.last_used = now;
            old.connector_data = None;
            if let Some((claims, _)) = &refreshed {
                // The user id never changes on refresh.
                old.claims.username = claims.username.clone();
                old.claims.preferred_username = claims.preferred_username.clone();
                old.claims.email = claims.email.clone();
                old.claims.email_verified = claims.email_verified;
                old.claims.groups = claims.groups.clone();
            }
            outcome = Some((old.token.clone(), old.claims.clone(), true));
            Ok(old)
        });
    let stored = match result {
        Ok(stored) => stored,
        Err(StorageError::NotFound | StorageError::Rejected(_)) => {
            return Err(OAuthError::invalid_request(REFRESH_CLAIMED));
        }
        Err(err) => {
            tracing::error!(%err, "failed to rotate refresh token");
            return Err(refresh_storage_error(&err));
        }
    };
    let Some((secret, claims, advanced)) = outcome else {
        return Err(refresh_internal_error());
    };

    if advanced {
        let new_data = refreshed
            .and_then(|(_, data)| data)
            .filter(|d| !d.is_empty());
        let result = ctx.storage.update_offline_session(
            &stored.claims.user_id,
            &stored.connector_id,
            &mut |mut session| {
                if let Some(reference) = session.refresh.get_mut(&stored.id) {
                    reference.last_used = now;
                }
                // Only replace the upstream credentials this refresh started from:
                // a slower concurrent refresh must not put back a spent token.
                let unchanged = session.connector_data.is_none()
                    || session.connector_data == plan.connector_data;
                if let Some(data) = new_data.as_ref().filter(|_| unchanged) {
                    session.connector_data = Some(data.clone());
                }
                Ok(session)
            },
        );
        // The token has rotated already: failing now would lose the new secret.
        if let Err(err) = result
            && err != StorageError::NotFound
        {
            tracing::error!(%err, "failed to update offline session after refresh");
        }
    }

    let subject = TokenSubject {
        client_id: &plan.client_id,
        claims: &claims,
        scopes: &plan.scopes,
        connector_id: &plan.connector_id,
        nonce: &plan.nonce,
        auth_time: plan.auth_time,
        session_id: &plan.session_id,
    };
    let minter = ctx.minter();
    let map_err = |_| refresh_internal_error();
    let access = minter.access_token(&subject, now).map_err(map_err)?;
    let id_token = minter
        .id_token(&subject, now, Some(&access.token), None)
        .map_err(map_err)?;
    let wire = RefreshTokenWire {
        id: stored.id,
        token: secret,
    };
    Ok(TokenResponse::new(
        &access,
        Some(id_token),
        Some(wire.encode()),
        now,
    ))
}

// ---------------------------------------------------------------------------
// password
// ---------------------------------------------------------------------------

/// Scope validation of the password grant (Dex's `handlePasswordGrant`), done before the
/// connector is asked: standard or trusted cross-client scopes, `openid`
/// required; errors are 400 `invalid_request`.
pub fn password_scopes(
    settings: &Settings,
    client: &Client,
    scope_param: &str,
) -> Result<Vec<String>, OAuthError> {
    check_param_len("scope", scope_param)?;
    let requested = scopes::parse_scopes(scope_param);
    check_scopes(&requested, &client.id, &settings.clients, true)
        .map_err(|violation| OAuthError::invalid_request(violation.description()))?;
    Ok(requested)
}

/// A successful password login, as the connector reported it.
#[derive(Debug, Clone)]
pub struct PasswordLogin<'a> {
    /// From [`password_scopes`].
    pub scopes: &'a [String],
    pub nonce: &'a str,
    pub connector_id: &'a str,
    pub claims: Claims,
    pub connector_data: Option<Vec<u8>>,
    pub connector_supports_refresh: bool,
}

/// Issues tokens for a verified password login: no consent, no `auth_time`,
/// refresh token with `offline_access` when the connector can refresh. (Bad
/// credentials: [`OAuthError::invalid_user_credentials`]; connector failure:
/// [`OAuthError::password_login_failed`].)
pub fn password_grant(
    ctx: &GrantContext<'_>,
    client: &Client,
    login: PasswordLogin<'_>,
) -> Result<TokenResponse, OAuthError> {
    check_param_len("nonce", login.nonce)?;
    if !connector_allowed(client, login.connector_id) {
        return Err(OAuthError::invalid_grant(
            "Connector not allowed for this client.",
        ));
    }
    let subject = TokenSubject {
        client_id: &client.id,
        claims: &login.claims,
        scopes: login.scopes,
        connector_id: login.connector_id,
        nonce: login.nonce,
        auth_time: None,
        session_id: "",
    };
    let with_refresh =
        login.connector_supports_refresh && scopes::has_scope(login.scopes, scopes::OFFLINE_ACCESS);
    let refresh = with_refresh.then(|| new_refresh_token(ctx, &subject));
    issue_tokens(ctx, &subject, None, refresh, login.connector_data.clone())
}

// ---------------------------------------------------------------------------
// userinfo
// ---------------------------------------------------------------------------

/// The token from an `Authorization: Bearer <token>` header (scheme
/// case-insensitive), or `None` when missing or malformed (⇒ 401 with
/// `WWW-Authenticate: Bearer`).
pub fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let header = authorization?;
    let scheme = header.get(..7)?;
    if !scheme.eq_ignore_ascii_case("bearer ") {
        return None;
    }
    let token = header.get(7..)?.trim();
    (!token.is_empty()).then_some(token)
}

/// Why signature-verified claims are still not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenClaimsError {
    #[error("token issuer does not match")]
    WrongIssuer,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token claims malformed")]
    Malformed,
}

impl TokenClaimsError {
    /// How `/userinfo` answers it: 403 `access_denied` "Invalid bearer token.".
    pub fn to_oauth(self) -> OAuthError {
        OAuthError::new(ErrorCode::AccessDenied, 403, "Invalid bearer token.")
    }
}

/// Clock skew tolerated for `nbf`, as go-oidc.
const NBF_LEEWAY_SECS: i64 = 300;

/// Checks the claims of a token whose signature was verified, as go-oidc's
/// verifier does for Dex's `/userinfo` and `/introspect`: `iss` must equal the
/// issuer exactly, `exp` must not have passed ([`is_expired`]: a token is still
/// valid during its `exp` second and refused just after it), `nbf` (if any) must
/// have come (5 min leeway). The body `/userinfo` returns is then the payload
/// verbatim. The one claims check for tokens we issued.
pub fn check_token_claims(
    claims: &Value,
    issuer: &str,
    now: SystemTime,
) -> Result<(), TokenClaimsError> {
    let obj = claims.as_object().ok_or(TokenClaimsError::Malformed)?;
    if obj.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(TokenClaimsError::WrongIssuer);
    }
    let exp = obj
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(TokenClaimsError::Malformed)?;
    let expired = match u64::try_from(exp) {
        // Compared with `now` to the nanosecond, not to its whole second.
        Ok(secs) => UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .is_some_and(|expiry| is_expired(expiry, now)),
        Err(_) => true,
    };
    if expired {
        return Err(TokenClaimsError::Expired);
    }
    if let Some(nbf) = obj.get("nbf") {
        let nbf = nbf.as_i64().ok_or(TokenClaimsError::Malformed)?;
        // `nbf` is whole seconds, so comparing whole seconds of `now` is exact.
        if unix_seconds(now) + NBF_LEEWAY_SECS < nbf {
            return Err(TokenClaimsError::NotYetValid);
        }
    }
    Ok(())
}

/// 401 `access_denied` "Invalid bearer token." (missing/malformed header).
pub fn missing_bearer_error() -> OAuthError {
    OAuthError::new(ErrorCode::AccessDenied, 401, "Invalid bearer token.")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::config::settings::AUTH_CODE_LIFETIME;
    use crate::crypto::token_hash;
    use crate::keys::SigningAlgorithm;
    use crate::oidc::test_support::{TestSigner, jwt_payload, secs, settings, t0, user_claims};
    use crate::storage::AuthCode;
    use crate::storage::memory::MemoryStorage;
    use crate::storage::sqlite::SqliteStorage;
    use serde_json::json;

    struct Fixture {
        storage: Box<dyn Storage>,
        settings: Settings,
        signer: TestSigner,
    }

    impl Fixture {
        fn new() -> Self {
            Self::on(Box::new(MemoryStorage::new()))
        }

        fn on(storage: Box<dyn Storage>) -> Self {
            Self {
                storage,
                settings: settings(),
                signer: TestSigner::default(),
            }
        }

        fn ctx(&self, now: SystemTime) -> GrantContext<'_> {
            GrantContext {
                storage: self.storage.as_ref(),
                settings: &self.settings,
                signer: &self.signer,
                now,
            }
        }

        fn client(&self, id: &str) -> Client {
            self.settings
                .clients
                .iter()
                .find(|c| c.id == id)
                .unwrap()
                .clone()
        }

        fn policy(&mut self) -> &mut RefreshTokenPolicy {
            &mut self.settings.expiry.refresh_tokens
        }

        fn store_code(&self, scopes: &str, pkce: Pkce) -> String {
            let code = AuthCode {
                id: new_id(),
                client_id: "web".into(),
                redirect_uri: "https://app.example/cb".into(),
                nonce: "n-1".into(),
                scopes: scopes::parse_scopes(scopes),
                connector_id: "mock".into(),
                connector_data: Some(b"upstream-1".to_vec()),
                claims: user_claims(),
                expiry: t0() + AUTH_CODE_LIFETIME,
                pkce,
                auth_time: Some(t0()),
                browser_binding: String::new(),
                session_id: String::new(),
            };
            self.storage.create_auth_code(&code).unwrap();
            code.id
        }

        fn exchange(
            &self,
            code: &str,
            verifier: &str,
            now: SystemTime,
        ) -> Result<TokenResponse, OAuthError> {
            let request = CodeExchange {
                code,
                redirect_uri: "https://app.example/cb",
                code_verifier: verifier,
                refreshing_connectors: &["mock".to_owned()],
            };
            exchange_code(&self.ctx(now), &self.client("web"), &request)
        }

        /// A login with offline_access; returns the refresh token.
        fn login(&self, now: SystemTime) -> String {
            let code = self.store_code("openid email offline_access", Pkce::default());
            self.exchange(&code, "", now)
                .unwrap()
                .refresh_token
                .unwrap()
        }

        fn refresh(
            &self,
            token: &str,
            scope: &str,
            now: SystemTime,
        ) -> Result<TokenResponse, OAuthError> {
            let ctx = self.ctx(now);
            let plan = begin_refresh(&ctx, &self.client("web"), token, scope)?;
            commit_refresh(&ctx, &plan, None)
        }
    }

    fn assert_err(
        result: Result<impl std::fmt::Debug, OAuthError>,
        status: u16,
        code: ErrorCode,
    ) -> String {
        match result {
            Err(err) => {
                assert_eq!((err.status, err.code), (status, code), "{err:?}");
                err.description
            }
            Ok(ok) => panic!("expected {status} {code}, got {ok:?}"),
        }
    }

    fn s256(verifier: &str) -> Pkce {
        Pkce {
            code_challenge: crate::crypto::s256_challenge(verifier),
            code_challenge_method: "S256".into(),
        }
    }

    // --- authorization_code ------------------------------------------------

    #[test]
    fn code_exchange_issues_tokens_like_dex() {
        let f = Fixture::new();
        let code = f.store_code("openid email", Pkce::default());
        let resp = f.exchange(&code, "", t0() + secs(10)).unwrap();
        assert_eq!(resp.token_type, "bearer");
        assert_eq!(resp.expires_in, 86_400);
        assert!(resp.refresh_token.is_none());
        let id = jwt_payload(resp.id_token.as_ref().unwrap());
        assert_eq!(id["aud"], "web");
        assert_eq!(id["nonce"], "n-1");
        assert_eq!(id["email"], "kilgore@kilgore.trout");
        assert_eq!(
            id["c_hash"],
            token_hash(SigningAlgorithm::RS256, &code).as_str()
        );
        assert_eq!(
            id["at_hash"],
            token_hash(SigningAlgorithm::RS256, &resp.access_token).as_str()
        );
        let access = jwt_payload(&resp.access_token);
        assert_eq!(access["sub"], id["sub"]);
        assert!(access.get("c_hash").is_none());
        assert_eq!(
            f.storage.get_auth_code(&code).unwrap_err(),
            StorageError::NotFound
        );
    }

    #[test]
    fn no_id_token_without_openid() {
        let f = Fixture::new();
        let code = f.store_code("email", Pkce::default());
        let resp = f.exchange(&code, "", t0()).unwrap();
        assert!(resp.id_token.is_none());
    }

    #[test]
    fn refresh_token_needs_offline_access_and_connector_support() {
        let f = Fixture::new();
        let token = f.login(t0());
        assert!(token.starts_with("Chl"));
        let session = f
            .storage
            .get_offline_session("0-385-28089-0", "mock")
            .unwrap();
        assert_eq!(session.refresh.len(), 1);
        assert_eq!(session.connector_data, Some(b"upstream-1".to_vec()));

        let code = f.store_code("openid offline_access", Pkce::default());
        let request = CodeExchange {
            code: &code,
            redirect_uri: "https://app.example/cb",
            code_verifier: "",
            refreshing_connectors: &[],
        };
        let resp = exchange_code(&f.ctx(t0()), &f.client("web"), &request).unwrap();
        assert!(resp.refresh_token.is_none());
    }

    #[test]
    fn missing_code_is_invalid_request() {
        let f = Fixture::new();
        assert_eq!(
            assert_err(f.exchange("", "", t0()), 400, ErrorCode::InvalidRequest),
            "Required param: code."
        );
    }

    #[test]
    fn unknown_code_is_invalid_grant() {
        let f = Fixture::new();
        let desc = assert_err(
            f.exchange("nosuchcode", "", t0()),
            400,
            ErrorCode::InvalidGrant,
        );
        assert_eq!(desc, "Invalid or expired code parameter.");
    }

    #[test]
    fn code_replay_is_invalid_grant() {
        let f = Fixture::new();
        let code = f.store_code("openid", Pkce::default());
        assert!(f.exchange(&code, "", t0()).is_ok());
        assert_err(f.exchange(&code, "", t0()), 400, ErrorCode::InvalidGrant);
    }

    #[test]
    fn a_second_exchange_of_a_code_revokes_the_refresh_token_even_when_racing() {
        let f = Fixture::new();
        for _ in 0..50 {
            let code = f.store_code("openid offline_access", Pkce::default());
            let start = std::sync::Barrier::new(2);
            let results: Vec<Result<TokenResponse, OAuthError>> = std::thread::scope(|scope| {
                let racers: Vec<_> = (0..2)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            f.exchange(&code, "", t0())
                        })
                    })
                    .collect();
                racers.into_iter().map(|r| r.join().unwrap()).collect()
            });
            let issued: Vec<&TokenResponse> =
                results.iter().filter_map(|r| r.as_ref().ok()).collect();
            assert!(issued.len() <= 1, "a code worked twice");
            for response in issued {
                let wire = response.refresh_token.as_deref().unwrap();
                let id = RefreshTokenWire::decode(wire).id;
                assert_eq!(
                    f.storage.get_refresh_token(&id),
                    Err(StorageError::NotFound),
                    "the refresh token of a code presented twice survived"
                );
                let session = f
                    .storage
                    .get_offline_session(&user_claims().user_id, "mock")
                    .unwrap();
                assert!(!session.refresh.contains_key(&id));
            }
        }
    }

    #[test]
    fn expired_code_is_invalid_grant() {
        let f = Fixture::new();
        let code = f.store_code("openid", Pkce::default());
        assert_err(
            f.exchange(&code, "", t0() + AUTH_CODE_LIFETIME + secs(1)),
            400,
            ErrorCode::InvalidGrant,
        );
        // Exactly at expiry it still works.
        assert!(f.exchange(&code, "", t0() + AUTH_CODE_LIFETIME).is_ok());
    }

    #[test]
    fn code_of_another_client_is_invalid_grant_and_not_consumed() {
        let f = Fixture::new();
        let code = f.store_code("openid", Pkce::default());
        let request = CodeExchange {
            code: &code,
            redirect_uri: "https://app.example/cb",
            ..Default::default()
        };
        assert_err(
            exchange_code(&f.ctx(t0()), &f.client("other"), &request),
            400,
            ErrorCode::InvalidGrant,
        );
        assert!(f.exchange(&code, "", t0()).is_ok());
    }

    #[test]
    fn redirect_uri_must_match_exactly() {
        let f = Fixture::new();
        let code = f.store_code("openid", Pkce::default());
        let request = CodeExchange {
            code: &code,
            redirect_uri: "https://app.example/cb/",
            ..Default::default()
        };
        let desc = assert_err(
            exchange_code(&f.ctx(t0()), &f.client("web"), &request),
            400,
            ErrorCode::InvalidRequest,
        );
        assert_eq!(desc, "redirect_uri did not match URI from initial request.");
    }

    #[test]
    fn oversized_code_is_invalid_request() {
        let f = Fixture::new();
        let huge = "c".repeat(crate::oidc::MAX_PARAM_LEN + 1);
        let desc = assert_err(f.exchange(&huge, "", t0()), 400, ErrorCode::InvalidRequest);
        assert!(desc.contains("\"code\" is too long"), "{desc}");
    }

    #[test]
    fn pkce_s256_and_plain_succeed() {
        let f = Fixture::new();
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let code = f.store_code("openid", s256(verifier));
        assert!(f.exchange(&code, verifier, t0()).is_ok());
        let plain = Pkce {
            code_challenge: "plainval".into(),
            code_challenge_method: "plain".into(),
        };
        let code = f.store_code("openid", plain);
        assert!(f.exchange(&code, "plainval", t0()).is_ok());
    }

    #[test]
    fn pkce_mismatch_is_invalid_grant() {
        let f = Fixture::new();
        let code = f.store_code("openid", s256("right-verifier"));
        assert_eq!(
            assert_err(
                f.exchange(&code, "wrong-verifier", t0()),
                400,
                ErrorCode::InvalidGrant
            ),
            "Invalid code_verifier."
        );
    }

    #[test]
    fn pkce_downgrade_to_plain_is_refused() {
        // Challenge stored with S256; sending the challenge itself as a "plain"
        // verifier must not pass, whatever method the client claims at /token.
        let f = Fixture::new();
        let pkce = s256("secret-verifier");
        let challenge = pkce.code_challenge.clone();
        let code = f.store_code("openid", pkce);
        assert_err(
            f.exchange(&code, &challenge, t0()),
            400,
            ErrorCode::InvalidGrant,
        );
    }

    #[test]
    fn pkce_half_flows_are_errors() {
        let f = Fixture::new();
        let code = f.store_code("openid", Pkce::default());
        assert_eq!(
            assert_err(
                f.exchange(&code, "verifier", t0()),
                400,
                ErrorCode::InvalidRequest
            ),
            "No PKCE flow started. Cannot check code_verifier."
        );
        let code = f.store_code("openid", s256("v"));
        assert_eq!(
            assert_err(f.exchange(&code, "", t0()), 400, ErrorCode::InvalidGrant),
            "Expecting parameter code_verifier in PKCE flow."
        );
    }

    // --- refresh_token -----------------------------------------------------

    #[test]
    fn refresh_rotates_and_always_returns_an_id_token() {
        let f = Fixture::new();
        let first = f.login(t0());
        let resp = f.refresh(&first, "", t0() + secs(60)).unwrap();
        let second = resp.refresh_token.clone().unwrap();
        assert_ne!(first, second);
        let id = jwt_payload(resp.id_token.as_ref().unwrap());
        assert_eq!(id["nonce"], "n-1");
        assert!(id.get("c_hash").is_none());
        assert_eq!(
            id["at_hash"],
            token_hash(SigningAlgorithm::RS256, &resp.access_token).as_str()
        );
        // Same storage id, new secret.
        let (a, b) = (
            RefreshTokenWire::decode(&first),
            RefreshTokenWire::decode(&second),
        );
        assert_eq!(a.id, b.id);
        assert_ne!(a.token, b.token);
        assert!(f.refresh(&second, "", t0() + secs(120)).is_ok());
    }

    #[test]
    fn missing_or_garbage_refresh_token_is_invalid_request() {
        let f = Fixture::new();
        f.login(t0());
        assert_eq!(
            assert_err(f.refresh("", "", t0()), 400, ErrorCode::InvalidRequest),
            "No refresh token is found in request."
        );
        let desc = assert_err(
            f.refresh("garbage!", "", t0()),
            400,
            ErrorCode::InvalidRequest,
        );
        assert_eq!(desc, REFRESH_CLAIMED);
    }

    #[test]
    fn bare_legacy_id_never_matches() {
        let f = Fixture::new();
        let token = f.login(t0());
        let id = RefreshTokenWire::decode(&token).id;
        assert_err(f.refresh(&id, "", t0()), 400, ErrorCode::InvalidRequest);
        // And it revoked nothing.
        assert!(f.refresh(&token, "", t0()).is_ok());
    }

    #[test]
    fn wrong_secret_for_known_id_is_invalid_request() {
        let f = Fixture::new();
        let token = f.login(t0());
        let forged = RefreshTokenWire {
            id: RefreshTokenWire::decode(&token).id,
            token: new_id(),
        }
        .encode();
        assert_err(f.refresh(&forged, "", t0()), 400, ErrorCode::InvalidRequest);
        assert!(f.refresh(&token, "", t0()).is_ok());
    }

    #[test]
    fn refresh_of_another_client_is_invalid_grant() {
        let f = Fixture::new();
        let token = f.login(t0());
        let ctx = f.ctx(t0());
        let err = begin_refresh(&ctx, &f.client("other"), &token, "");
        assert_eq!(
            assert_err(err, 400, ErrorCode::InvalidGrant),
            REFRESH_CLAIMED
        );
        assert!(f.refresh(&token, "", t0()).is_ok());
    }

    #[test]
    fn replay_outside_reuse_window_revokes_the_family() {
        let f = Fixture::new();
        let first = f.login(t0());
        let current = f
            .refresh(&first, "", t0() + secs(10))
            .unwrap()
            .refresh_token
            .unwrap();
        assert_err(
            f.refresh(&first, "", t0() + secs(20)),
            400,
            ErrorCode::InvalidGrant,
        );
        // The current token stops working too, and the session no longer links it.
        let desc = assert_err(
            f.refresh(&current, "", t0() + secs(30)),
            400,
            ErrorCode::InvalidRequest,
        );
        assert_eq!(desc, REFRESH_CLAIMED);
        let session = f
            .storage
            .get_offline_session("0-385-28089-0", "mock")
            .unwrap();
        assert!(session.refresh.is_empty());
    }

    #[test]
    fn reuse_inside_window_returns_the_current_token() {
        let mut f = Fixture::new();
        f.policy().reuse_interval = secs(5);
        let first = f.login(t0());
        let second = f
            .refresh(&first, "", t0() + secs(100))
            .unwrap()
            .refresh_token
            .unwrap();
        let plan = begin_refresh(&f.ctx(t0() + secs(103)), &f.client("web"), &first, "").unwrap();
        assert!(!plan.needs_upstream());
        let again = commit_refresh(&f.ctx(t0() + secs(103)), &plan, None).unwrap();
        assert_eq!(again.refresh_token.as_deref(), Some(second.as_str()));
        // After the window the obsolete token is a replay.
        assert_err(
            f.refresh(&first, "", t0() + secs(106)),
            400,
            ErrorCode::InvalidGrant,
        );
    }

    #[test]
    fn idle_expiry() {
        let mut f = Fixture::new();
        f.policy().valid_if_not_used_for = Some(secs(3600));
        let token = f.login(t0());
        let next = f
            .refresh(&token, "", t0() + secs(3000))
            .unwrap()
            .refresh_token
            .unwrap();
        // Idle time counts from the last use.
        let next = f
            .refresh(&next, "", t0() + secs(6000))
            .unwrap()
            .refresh_token
            .unwrap();
        let desc = assert_err(
            f.refresh(&next, "", t0() + secs(6000 + 3601)),
            400,
            ErrorCode::InvalidRequest,
        );
        assert_eq!(desc, "Refresh token expired.");
    }

    #[test]
    fn absolute_expiry_counts_from_first_issue() {
        let mut f = Fixture::new();
        f.policy().absolute_lifetime = Some(secs(7200));
        let token = f.login(t0());
        let next = f
            .refresh(&token, "", t0() + secs(7000))
            .unwrap()
            .refresh_token
            .unwrap();
        let desc = assert_err(
            f.refresh(&next, "", t0() + secs(7201)),
            400,
            ErrorCode::InvalidRequest,
        );
        assert_eq!(desc, "Refresh token expired.");
    }

    #[test]
    fn obsolete_within_window_but_absolutely_expired_is_expired() {
        let mut f = Fixture::new();
        f.policy().absolute_lifetime = Some(secs(100));
        f.policy().reuse_interval = secs(10);
        let first = f.login(t0());
        f.refresh(&first, "", t0() + secs(95)).unwrap();
        let desc = assert_err(
            f.refresh(&first, "", t0() + secs(101)),
            400,
            ErrorCode::InvalidRequest,
        );
        assert_eq!(desc, "Refresh token expired.");
    }

    #[test]
    fn scope_narrowing_is_allowed_for_one_response() {
        let f = Fixture::new();
        let token = f.login(t0());
        let resp = f.refresh(&token, "openid", t0()).unwrap();
        let id = jwt_payload(resp.id_token.as_ref().unwrap());
        assert!(id.get("email").is_none());
        let id = RefreshTokenWire::decode(&token).id;
        assert_eq!(
            f.storage.get_refresh_token(&id).unwrap().scopes,
            ["openid", "email", "offline_access"]
        );
        // The next refresh without scope gets the original set again.
        let resp = f
            .refresh(resp.refresh_token.as_ref().unwrap(), "", t0())
            .unwrap();
        assert_eq!(
            jwt_payload(resp.id_token.as_ref().unwrap())["email"],
            "kilgore@kilgore.trout"
        );
    }

    #[test]
    fn scope_widening_is_invalid_request() {
        let f = Fixture::new();
        let token = f.login(t0());
        let desc = assert_err(
            f.refresh(&token, "openid groups profile", t0()),
            400,
            ErrorCode::InvalidRequest,
        );
        assert_eq!(
            desc,
            r#"Requested scopes contain unauthorized scope(s): ["groups" "profile"]."#
        );
        assert!(f.refresh(&token, "", t0()).is_ok());
    }

    #[test]
    fn disabled_rotation_keeps_the_token_and_tracks_use() {
        let mut f = Fixture::new();
        f.policy().disable_rotation = true;
        let token = f.login(t0());
        let resp = f.refresh(&token, "", t0() + secs(50)).unwrap();
        assert_eq!(resp.refresh_token.as_deref(), Some(token.as_str()));
        let stored = f
            .storage
            .get_refresh_token(&RefreshTokenWire::decode(&token).id)
            .unwrap();
        assert_eq!(stored.last_used, t0() + secs(50));
        assert_eq!(stored.obsolete_token, "");
    }

    #[test]
    fn disabled_rotation_inside_window_changes_nothing() {
        let mut f = Fixture::new();
        f.policy().disable_rotation = true;
        f.policy().reuse_interval = secs(30);
        let token = f.login(t0());
        let plan = begin_refresh(&f.ctx(t0() + secs(10)), &f.client("web"), &token, "").unwrap();
        assert!(!plan.needs_upstream());
        let resp = commit_refresh(&f.ctx(t0() + secs(10)), &plan, None).unwrap();
        assert_eq!(resp.refresh_token.as_deref(), Some(token.as_str()));
        let stored = f
            .storage
            .get_refresh_token(&RefreshTokenWire::decode(&token).id)
            .unwrap();
        assert_eq!(stored.last_used, t0());
    }

    #[test]
    fn upstream_identity_updates_claims_but_not_user_id() {
        let f = Fixture::new();
        let token = f.login(t0());
        let ctx = f.ctx(t0() + secs(60));
        let plan = begin_refresh(&ctx, &f.client("web"), &token, "").unwrap();
        assert!(plan.needs_upstream());
        assert_eq!(plan.connector_data, Some(b"upstream-1".to_vec()));
        assert_eq!(plan.claims, user_claims());
        let fresh = Claims {
            user_id: "someone-else".into(),
            email: "new@kilgore.trout".into(),
            ..user_claims()
        };
        let resp =
            commit_refresh(&ctx, &plan, Some((fresh, Some(b"upstream-2".to_vec())))).unwrap();
        let id = jwt_payload(resp.id_token.as_ref().unwrap());
        assert_eq!(id["email"], "new@kilgore.trout");
        assert_eq!(
            id["sub"],
            json!(crate::oidc::subject::encode_subject(
                "0-385-28089-0",
                "mock"
            ))
        );
        let session = f
            .storage
            .get_offline_session("0-385-28089-0", "mock")
            .unwrap();
        assert_eq!(session.connector_data, Some(b"upstream-2".to_vec()));
        let stored_ref = session.refresh.values().next().unwrap();
        assert_eq!(stored_ref.last_used, t0() + secs(60));
    }

    #[test]
    fn upstream_failure_constructor_is_invalid_grant() {
        let err = OAuthError::upstream_refresh_failed();
        assert_eq!((err.status, err.code), (400, ErrorCode::InvalidGrant));
    }

    #[test]
    fn concurrent_refresh_only_one_rotates() {
        let f = Fixture::new();
        let token = f.login(t0());
        let ctx = f.ctx(t0() + secs(10));
        let a = begin_refresh(&ctx, &f.client("web"), &token, "").unwrap();
        let b = begin_refresh(&ctx, &f.client("web"), &token, "").unwrap();
        let winner = commit_refresh(&ctx, &a, None).unwrap();
        let desc = assert_err(
            commit_refresh(&ctx, &b, None),
            400,
            ErrorCode::InvalidRequest,
        );
        assert_eq!(desc, REFRESH_CLAIMED);
        // The loser's race revoked nothing: the winner's token works.
        assert!(
            f.refresh(winner.refresh_token.as_ref().unwrap(), "", t0() + secs(20))
                .is_ok()
        );
    }

    #[test]
    fn concurrent_refresh_with_reuse_window_returns_same_token() {
        let mut f = Fixture::new();
        f.policy().reuse_interval = secs(5);
        let token = f.login(t0());
        let ctx = f.ctx(t0() + secs(10));
        let a = begin_refresh(&ctx, &f.client("web"), &token, "").unwrap();
        let b = begin_refresh(&ctx, &f.client("web"), &token, "").unwrap();
        let first = commit_refresh(&ctx, &a, None).unwrap();
        let second = commit_refresh(&ctx, &b, None).unwrap();
        assert_eq!(first.refresh_token, second.refresh_token);
    }

    #[test]
    fn refresh_checks_connector_allowed_for_client() {
        let f = Fixture::new();
        let token = f.login(t0());
        let mut web = f.client("web");
        web.allowed_connectors = vec!["ldap".into()];
        let desc = assert_err(
            begin_refresh(&f.ctx(t0()), &web, &token, ""),
            400,
            ErrorCode::InvalidGrant,
        );
        assert_eq!(desc, "Connector not allowed for this client.");
    }

    #[test]
    fn two_logins_keep_two_valid_refresh_tokens() {
        let f = Fixture::new();
        let laptop = f.login(t0());
        let desktop = f.login(t0() + secs(5));
        assert_ne!(
            RefreshTokenWire::decode(&laptop).id,
            RefreshTokenWire::decode(&desktop).id
        );
        assert!(f.refresh(&laptop, "", t0() + secs(10)).is_ok());
        assert!(f.refresh(&desktop, "", t0() + secs(10)).is_ok());
        let session = f
            .storage
            .get_offline_session("0-385-28089-0", "mock")
            .unwrap();
        assert_eq!(session.refresh.len(), 2);
    }

    #[test]
    fn issuing_prunes_expired_tokens_and_caps_per_client() {
        let mut f = Fixture::new();
        f.policy().absolute_lifetime = Some(secs(1000));
        let old = f.login(t0());
        let fresh = f.login(t0() + secs(1500));
        assert_err(
            f.refresh(&old, "", t0() + secs(1500)),
            400,
            ErrorCode::InvalidRequest,
        );
        assert_eq!(f.storage.list_refresh_tokens().unwrap().len(), 1);
        assert!(f.refresh(&fresh, "", t0() + secs(1501)).is_ok());

        let f = Fixture::new();
        let first = f.login(t0());
        for i in 1..=MAX_REFRESH_TOKENS_PER_CLIENT as u64 {
            f.login(t0() + secs(i));
        }
        assert_eq!(
            f.storage.list_refresh_tokens().unwrap().len(),
            MAX_REFRESH_TOKENS_PER_CLIENT
        );
        // The least recently used one went.
        assert_err(
            f.refresh(&first, "", t0() + secs(100)),
            400,
            ErrorCode::InvalidRequest,
        );
        let session = f
            .storage
            .get_offline_session("0-385-28089-0", "mock")
            .unwrap();
        assert_eq!(session.refresh.len(), MAX_REFRESH_TOKENS_PER_CLIENT);
    }

    /// A fixture on SQLite, with a counter of the transactions it commits.
    fn counting() -> (Fixture, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let storage = SqliteStorage::open_in_memory().unwrap();
        let commits = storage.count_commits();
        (Fixture::on(Box::new(storage)), commits)
    }

    fn commits_of<T>(
        commits: &std::sync::atomic::AtomicUsize,
        work: impl FnOnce() -> T,
    ) -> (usize, T) {
        let before = commits.load(std::sync::atomic::Ordering::SeqCst);
        let result = work();
        (
            commits.load(std::sync::atomic::Ordering::SeqCst) - before,
            result,
        )
    }

    #[test]
    fn a_code_exchange_commits_once_even_when_it_prunes() {
        let (f, commits) = counting();
        let code = f.store_code("openid", Pkce::default());
        let (n, resp) = commits_of(&commits, || f.exchange(&code, "", t0()));
        assert!(resp.is_ok());
        assert_eq!(n, 1, "commits of an exchange without a refresh token");

        // First refresh token of the user: the offline session is created too.
        let code = f.store_code("openid offline_access", Pkce::default());
        let (n, resp) = commits_of(&commits, || f.exchange(&code, "", t0()));
        let first = resp.unwrap().refresh_token.unwrap();
        assert_eq!(n, 1, "commits of an exchange creating the offline session");

        for i in 1..MAX_REFRESH_TOKENS_PER_CLIENT as u64 {
            f.login(t0() + secs(i));
        }
        // At the cap: this exchange also evicts the least recently used token.
        let code = f.store_code("openid offline_access", Pkce::default());
        let (n, resp) = commits_of(&commits, || f.exchange(&code, "", t0() + secs(100)));
        assert!(resp.unwrap().refresh_token.is_some());
        assert_eq!(n, 1, "commits of an exchange that prunes");
        assert_eq!(
            f.storage.list_refresh_tokens().unwrap().len(),
            MAX_REFRESH_TOKENS_PER_CLIENT
        );
        let first = RefreshTokenWire::decode(&first).id;
        assert_eq!(
            f.storage.get_refresh_token(&first),
            Err(StorageError::NotFound)
        );
    }

    #[test]
    fn a_replayed_code_writes_nothing_but_the_revocation() {
        let (f, commits) = counting();
        let code = f.store_code("openid offline_access", Pkce::default());
        let token = f.exchange(&code, "", t0()).unwrap().refresh_token.unwrap();
        let (_, replay) = commits_of(&commits, || f.exchange(&code, "", t0()));
        assert_err(replay, 400, ErrorCode::InvalidGrant);
        let id = RefreshTokenWire::decode(&token).id;
        assert_eq!(
            f.storage.get_refresh_token(&id),
            Err(StorageError::NotFound)
        );
        let session = f
            .storage
            .get_offline_session(&user_claims().user_id, "mock")
            .unwrap();
        assert!(session.refresh.is_empty(), "{session:?}");
        assert_eq!(f.storage.list_refresh_tokens().unwrap(), Vec::new());
    }

    #[test]
    fn a_password_grant_commits_once() {
        let (f, commits) = counting();
        let web = f.client("web");
        let scopes = password_scopes(&f.settings, &web, "openid offline_access").unwrap();
        for _ in 0..2 {
            let (n, resp) = commits_of(&commits, || {
                password_grant(&f.ctx(t0()), &web, password_login(&scopes, true))
            });
            assert!(resp.unwrap().refresh_token.is_some());
            assert_eq!(n, 1);
        }
        let session = f
            .storage
            .get_offline_session(&user_claims().user_id, "local")
            .unwrap();
        assert_eq!(session.refresh.len(), 2);
    }

    // --- password ----------------------------------------------------------

    fn password_login<'a>(scopes: &'a [String], supports_refresh: bool) -> PasswordLogin<'a> {
        PasswordLogin {
            scopes,
            nonce: "pw-nonce",
            connector_id: "local",
            claims: user_claims(),
            connector_data: None,
            connector_supports_refresh: supports_refresh,
        }
    }

    #[test]
    fn password_scopes_require_openid_with_invalid_request() {
        let f = Fixture::new();
        let web = f.client("web");
        let desc = assert_err(
            password_scopes(&f.settings, &web, "email"),
            400,
            ErrorCode::InvalidRequest,
        );
        assert_eq!(desc, r#"Missing required scope(s) ["openid"]."#);
        let desc = assert_err(
            password_scopes(&f.settings, &web, "openid bogus"),
            400,
            ErrorCode::InvalidRequest,
        );
        assert_eq!(desc, r#"Unrecognized scope(s) ["bogus"]"#);
        assert_err(
            password_scopes(&f.settings, &web, "openid audience:server:client_id:other"),
            400,
            ErrorCode::InvalidRequest,
        );
        assert_eq!(
            password_scopes(&f.settings, &web, "openid profile").unwrap(),
            ["openid", "profile"]
        );
    }

    #[test]
    fn password_grant_issues_tokens_with_request_nonce() {
        let f = Fixture::new();
        let web = f.client("web");
        let scopes = password_scopes(&f.settings, &web, "openid profile offline_access").unwrap();
        let resp = password_grant(&f.ctx(t0()), &web, password_login(&scopes, true)).unwrap();
        assert!(resp.refresh_token.is_some());
        let id = jwt_payload(resp.id_token.as_ref().unwrap());
        assert_eq!(id["nonce"], "pw-nonce");
        assert_eq!(id["name"], "Kilgore Trout");
        assert!(id.get("auth_time").is_none());
        let resp = password_grant(&f.ctx(t0()), &web, password_login(&scopes, false)).unwrap();
        assert!(resp.refresh_token.is_none());
    }

    #[test]
    fn password_grant_respects_allowed_connectors() {
        let f = Fixture::new();
        let limited = f.client("limited");
        let scopes = vec!["openid".to_owned()];
        let desc = assert_err(
            password_grant(&f.ctx(t0()), &limited, password_login(&scopes, false)),
            400,
            ErrorCode::InvalidGrant,
        );
        assert_eq!(desc, "Connector not allowed for this client.");
    }

    #[test]
    fn password_error_constructors_match_dex() {
        let err = OAuthError::invalid_user_credentials();
        assert_eq!(
            (err.status, err.code, err.description.as_str()),
            (401, ErrorCode::AccessDenied, "Invalid username or password")
        );
        let err = OAuthError::password_login_failed();
        assert_eq!((err.status, err.code), (400, ErrorCode::InvalidRequest));
    }

    #[test]
    fn param_limits_are_larger_for_state() {
        use crate::oidc::{MAX_PARAM_LEN, MAX_STATE_LEN, check_param_len};
        assert!(check_param_len("state", &"s".repeat(MAX_STATE_LEN)).is_ok());
        assert_err(
            check_param_len("state", &"s".repeat(MAX_STATE_LEN + 1)),
            400,
            ErrorCode::InvalidRequest,
        );
        assert!(check_param_len("nonce", &"n".repeat(MAX_PARAM_LEN)).is_ok());
        let desc = assert_err(
            check_param_len("nonce", &"n".repeat(MAX_PARAM_LEN + 1)),
            400,
            ErrorCode::InvalidRequest,
        );
        assert_eq!(
            desc,
            "Parameter \"nonce\" is too long (at most 2048 bytes)."
        );
    }

    #[test]
    fn oversized_refresh_token_and_password_nonce_are_invalid_request() {
        let f = Fixture::new();
        let huge = "r".repeat(crate::oidc::MAX_PARAM_LEN + 1);
        assert_err(f.refresh(&huge, "", t0()), 400, ErrorCode::InvalidRequest);
        let web = f.client("web");
        let scopes = vec!["openid".to_owned()];
        let mut login = password_login(&scopes, false);
        login.nonce = &huge;
        assert_err(
            password_grant(&f.ctx(t0()), &web, login),
            400,
            ErrorCode::InvalidRequest,
        );
    }

    #[test]
    fn disabled_grant_type_is_unsupported() {
        let f = Fixture::new();
        assert!(check_grant_type(&f.settings, "authorization_code").is_ok());
        let desc = assert_err(
            check_grant_type(&f.settings, "password"),
            400,
            ErrorCode::UnsupportedGrantType,
        );
        assert_eq!(desc, "");
    }

    // --- userinfo ----------------------------------------------------------

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(None), None);
        let err = missing_bearer_error();
        assert_eq!((err.status, err.code), (401, ErrorCode::AccessDenied));
    }

    #[test]
    fn token_claims_check_issuer_expiry_and_nbf() {
        let f = Fixture::new();
        let resp = f
            .exchange(&f.store_code("openid", Pkce::default()), "", t0())
            .unwrap();
        let claims = jwt_payload(&resp.access_token);
        let issuer = "https://idp.example/dex";
        assert_eq!(
            check_token_claims(&claims, issuer, t0() + secs(86_400)),
            Ok(())
        );
        assert_eq!(
            check_token_claims(&claims, issuer, t0() + secs(86_401)),
            Err(TokenClaimsError::Expired)
        );
        // Refused within the second after `exp` too, as go-oidc does.
        assert_eq!(
            check_token_claims(
                &claims,
                issuer,
                t0() + secs(86_400) + Duration::from_millis(1)
            ),
            Err(TokenClaimsError::Expired)
        );
        let ancient = json!({"iss": issuer, "exp": -1});
        assert_eq!(
            check_token_claims(&ancient, issuer, t0()),
            Err(TokenClaimsError::Expired)
        );
        assert_eq!(
            check_token_claims(&claims, "https://idp.example/dex/", t0()),
            Err(TokenClaimsError::WrongIssuer)
        );
        let future = json!({"iss": issuer, "exp": 4_000_000_000_i64, "nbf": 3_000_000_000_i64});
        assert_eq!(
            check_token_claims(&future, issuer, t0()),
            Err(TokenClaimsError::NotYetValid)
        );
        assert_eq!(
            check_token_claims(&json!({"iss": issuer}), issuer, t0()),
            Err(TokenClaimsError::Malformed)
        );
        let err = TokenClaimsError::Expired.to_oauth();
        assert_eq!((err.status, err.code), (403, ErrorCode::AccessDenied));
    }
}
