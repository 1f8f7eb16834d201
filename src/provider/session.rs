//! Browser sessions in the application layer: finding the session a cookie
//! names, recording a login in it, ending it (logout, expiry, replacement) with
//! what that implies for refresh tokens and back-channel logout, and
//! `id_token_hint` verification. The rules are in `crate::oidc::session`.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::config::{RefreshTokenLifetime, SessionSettings, Settings};
use crate::keys::KeySet;
use crate::oidc::authorize::{self as flow, LoginFacts, LoginFinished};
use crate::oidc::grants::GrantContext;
use crate::oidc::session::{self as rules, SessionCookie};
use crate::oidc::subject::encode_subject;
use crate::storage::{
    AuthRequest, BrowserSession, BrowserSessionWrite, Claims, LogoutDelivery, Storage,
    StorageError, UserIdentity,
};

use super::{Provider, ProviderError};

/// How long a back-channel logout is retried before it is dropped.
pub const DELIVERY_PATIENCE: Duration = Duration::from_secs(3600);

/// What a browser step does to the session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieChange {
    /// Set the cookie to `value`; `max_age` makes it outlive the browser
    /// ("remember me"), `None` makes it a browser-session cookie.
    Set {
        value: String,
        max_age: Option<Duration>,
    },
    /// Delete the cookie (`Max-Age=0`).
    Clear,
}

/// The session a request's cookie names, as far as it is usable.
#[derive(Debug, Default)]
pub struct Presented {
    /// Alive, and the cookie proves possession.
    pub session: Option<BrowserSession>,
    /// The cookie named nothing usable and should be cleared.
    pub stale_cookie: bool,
}

/// What a verified `id_token_hint` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub subject: String,
    /// The client it was issued to (`aud` when single, else `azp`).
    pub client_id: String,
    pub session_id: Option<String>,
}

impl Hint {
    /// Whether the hint names this session's user (and, when it carries a `sid`,
    /// this very session).
    pub fn matches(&self, session: &BrowserSession) -> bool {
        self.subject == encode_subject(&session.user_id, &session.connector_id)
            && self
                .session_id
                .as_ref()
                .is_none_or(|sid| *sid == session.id)
    }
}

impl Provider {
    pub(super) fn session_settings(&self) -> Option<&SessionSettings> {
        self.settings.sessions.as_ref()
    }

    /// The live session `cookie` opens, if any.
    pub(super) async fn presented_session(
        &self,
        cookie: Option<&SessionCookie>,
    ) -> Result<Presented, ProviderError> {
        let (Some(_), Some(cookie)) = (self.session_settings(), cookie) else {
            return Ok(Presented::default());
        };
        let now = self.now();
        let id = cookie.session_id.clone();
        let found = self
            .with_storage(move |s| match s.get_browser_session(&id) {
                Ok(session) => Ok(Some(session)),
                Err(StorageError::NotFound) => Ok(None),
                Err(error) => Err(ProviderError::storage(&error)),
            })
            .await?;
        Ok(match found {
            Some(session) if cookie.opens(&session) && rules::alive(&session, now) => Presented {
                session: Some(session),
                stale_cookie: false,
            },
            // Expired rows are ended by the session sweeper (with back-channel
            // logout), not here.
            _ => Presented {
                session: None,
                stale_cookie: true,
            },
        })
    }

    /// Verifies an `id_token_hint`: signed by one of our keys, our issuer;
    /// expiry and audience are not checked (OpenID Connect Core §3.1.2.1 and
    /// RP-Initiated Logout §2: an expired hint still names the user).
    pub(super) fn verify_hint(&self, hint: &str) -> Option<Hint> {
        let claims = self.keys.loaded()?.verify_jwt(hint).ok()?;
        if claims.get("iss").and_then(Value::as_str) != Some(self.settings.issuer.url.as_str()) {
            return None;
        }
        let subject = claims.get("sub").and_then(Value::as_str)?.to_owned();
        let client_id = match claims.get("aud") {
            Some(Value::String(aud)) => aud.clone(),
            Some(Value::Array(_)) => claims.get("azp").and_then(Value::as_str)?.to_owned(),
            _ => return None,
        };
        let session_id = claims.get("sid").and_then(Value::as_str).map(str::to_owned);
        Some(Hint {
            subject,
            client_id,
            session_id,
        })
    }

    /// Ends `session` now: see [`end_session`].
    pub(super) async fn end_browser_session(
        &self,
        session: BrowserSession,
    ) -> Result<(), ProviderError> {
        let settings = self.settings.clone();
        let now = self.now();
        self.with_storage(move |s| {
            end_session(s, &settings, &session, now).map_err(|e| ProviderError::storage(&e))
        })
        .await?;
        self.backchannel.wake();
        Ok(())
    }
}

/// An interactive login to finish: the auth request as read, who logged in and
/// how, and the browser session the browser presented.
pub(super) struct InteractiveLoginWrite {
    pub request: AuthRequest,
    pub claims: Claims,
    pub connector_data: Option<Vec<u8>>,
    pub supports_refresh: bool,
    pub presented: Option<BrowserSession>,
}

/// What [`finish_interactive_login`] did.
pub(super) struct InteractiveLoginDone {
    /// Where the login leads.
    pub finished: LoginFinished,
    /// The browser session's new cookie (none without sessions).
    pub cookie: Option<SessionCookie>,
    /// A presented session of another user was ended: its back-channel
    /// logouts are queued and the delivery task has work.
    pub ended_other_session: bool,
}

/// Finishes an interactive login in one storage commit ([`flow::finish_login`])
/// together with the browser session it records: the one presented when it
/// belongs to the same user and connector, else a new one (a presented session
/// of another user is ended first, as a logout would). Always issues a new
/// cookie secret, so a cookie planted before the login is worthless after it.
pub(super) fn finish_interactive_login(
    ctx: &GrantContext<'_>,
    login: InteractiveLoginWrite,
) -> Result<InteractiveLoginDone, ProviderError> {
    let (storage, settings, now) = (ctx.storage, ctx.settings, ctx.now);
    let request = &login.request;
    let facts = LoginFacts {
        claims: login.claims.clone(),
        connector_data: login.connector_data.clone(),
        connector_supports_refresh: login.supports_refresh,
        session_id: "",
        authenticated_at: now,
    };
    let finish =
        |facts: &LoginFacts<'_>, granted: &[String], write: Option<BrowserSessionWrite<'_>>| {
            flow::finish_login(
                storage, settings, ctx.signer, request, facts, granted, write, now,
            )
            .map_err(ProviderError::from)
        };
    let Some(sessions) = &settings.sessions else {
        let finished = finish(&facts, &[], None)?;
        return finished
            .map(|(finished, _)| InteractiveLoginDone {
                finished,
                cookie: None,
                ended_other_session: false,
            })
            .ok_or_else(|| ProviderError::page(500, "Internal server error."));
    };
    // Stored consent matters only when the page is neither forced nor skipped.
    let granted = if request.force_approval_prompt || settings.oauth2.skip_approval_screen {
        Vec::new()
    } else {
        granted_scopes(
            storage,
            &login.claims.user_id,
            &request.connector_id,
            &request.client_id,
        )
        .map_err(|e| ProviderError::storage(&e))?
    };
    let (renewed, ended_other_session) = match login.presented {
        Some(current)
            if current.user_id == login.claims.user_id
                && current.connector_id == request.connector_id =>
        {
            (Some(current), false)
        }
        Some(other) => {
            end_session(storage, settings, &other, now).map_err(|e| ProviderError::storage(&e))?;
            (None, true)
        }
        None => (None, false),
    };
    if let Some(current) = renewed {
        let fresh = SessionCookie::renewed(&current.id);
        let mut record = |mut session: BrowserSession| {
            rules::record_login(
                sessions,
                &mut session,
                &fresh,
                login.claims.clone(),
                login.connector_data.clone(),
                &request.client_id,
                now,
            );
            Ok(session)
        };
        let facts = LoginFacts {
            session_id: &current.id,
            ..facts.clone()
        };
        let write = BrowserSessionWrite::Update {
            id: &current.id,
            updater: &mut record,
        };
        if let Some((finished, _)) = finish(&facts, &granted, Some(write))? {
            return Ok(InteractiveLoginDone {
                finished,
                cookie: Some(fresh),
                ended_other_session,
            });
        }
        // Ended meanwhile (logout in another tab): a new one follows.
    }
    let cookie = SessionCookie::generate();
    let session = rules::new_session(
        sessions,
        &cookie,
        login.claims.clone(),
        login.connector_data.clone(),
        &request.connector_id,
        &request.client_id,
        now,
    );
    let facts = LoginFacts {
        session_id: &session.id,
        ..facts
    };
    let finished = finish(
        &facts,
        &granted,
        Some(BrowserSessionWrite::Create(&session)),
    )?;
    finished
        .map(|(finished, _)| InteractiveLoginDone {
            finished,
            cookie: Some(cookie),
            ended_other_session,
        })
        .ok_or_else(|| ProviderError::page(500, "Internal server error."))
}

/// The scopes `user`/`connector` granted `client_id` before (none recorded: none).
pub(super) fn granted_scopes(
    storage: &dyn Storage,
    user_id: &str,
    connector_id: &str,
    client_id: &str,
) -> Result<Vec<String>, StorageError> {
    match storage.get_user_identity(user_id, connector_id) {
        Ok(identity) => Ok(identity
            .consents
            .get(client_id)
            .cloned()
            .unwrap_or_default()),
        Err(StorageError::NotFound) => Ok(Vec::new()),
        Err(error) => Err(error),
    }
}

/// Adds `approved` to what the user granted `client_id` (a union: approving
/// `profile` after `email` keeps both).
pub(super) fn store_consent(
    storage: &dyn Storage,
    user_id: &str,
    connector_id: &str,
    client_id: &str,
    approved: &[String],
    now: SystemTime,
) -> Result<(), StorageError> {
    let merge = |identity: &mut UserIdentity| {
        let granted = identity
            .consents
            .get(client_id)
            .cloned()
            .unwrap_or_default();
        identity.consents.insert(
            client_id.to_owned(),
            rules::merge_consent(&granted, approved),
        );
        identity.updated_at = now;
    };
    let updated = storage.update_user_identity(user_id, connector_id, &mut |mut identity| {
        merge(&mut identity);
        Ok(identity)
    });
    match updated {
        Ok(_) => Ok(()),
        Err(StorageError::NotFound) => {
            let mut identity = UserIdentity {
                user_id: user_id.to_owned(),
                connector_id: connector_id.to_owned(),
                consents: Default::default(),
                created_at: now,
                updated_at: now,
            };
            merge(&mut identity);
            match storage.create_user_identity(&identity) {
                // Created by a parallel approval meanwhile: merge into that one.
                Err(StorageError::AlreadyExists) => storage
                    .update_user_identity(user_id, connector_id, &mut |mut identity| {
                        merge(&mut identity);
                        Ok(identity)
                    })
                    .map(|_| ()),
                other => other,
            }
        }
        Err(error) => Err(error),
    }
}

/// Ends a browser session, whatever ended it (logout, expiry, another user
/// signing in in the same browser): the refresh tokens it issued to clients with
/// `refreshTokenLifetime: session` are revoked, a back-channel logout is queued
/// for every client in it that registered a `backchannelLogoutURI`, and the row
/// is deleted. The delete comes first: whoever deletes the row does the rest,
/// once, also when two replicas race to end the same session.
pub(crate) fn end_session(
    storage: &dyn Storage,
    settings: &Settings,
    session: &BrowserSession,
    now: SystemTime,
) -> Result<(), StorageError> {
    match storage.delete_browser_session(&session.id) {
        Ok(()) => {}
        Err(StorageError::NotFound) => return Ok(()),
        Err(error) => return Err(error),
    }
    revoke_session_bound_tokens(storage, settings, session);
    for client_id in session.clients.keys() {
        let registered = settings
            .clients
            .iter()
            .any(|c| &c.id == client_id && !c.backchannel_logout_uri.is_empty());
        if !registered {
            continue;
        }
        let delivery = LogoutDelivery {
            id: crate::crypto::new_id(),
            client_id: client_id.clone(),
            user_id: session.user_id.clone(),
            connector_id: session.connector_id.clone(),
            session_id: session.id.clone(),
            attempts: 0,
            due: now,
            give_up_at: now.checked_add(DELIVERY_PATIENCE).unwrap_or(now),
        };
        if let Err(error) = storage.create_logout_delivery(&delivery) {
            tracing::error!(%error, client_id, "cannot queue back-channel logout");
        }
    }
    tracing::info!(sid = %session.id, clients = session.clients.len(), "browser session ended");
    Ok(())
}

/// Deletes the refresh tokens `session` issued to its clients whose
/// `refreshTokenLifetime` is `session` (best effort: a token left behind is still
/// refused at refresh, since its session is gone).
fn revoke_session_bound_tokens(
    storage: &dyn Storage,
    settings: &Settings,
    session: &BrowserSession,
) {
    let bound = |client_id: &str| {
        settings
            .clients
            .iter()
            .any(|c| c.id == client_id && c.refresh_token_lifetime == RefreshTokenLifetime::Session)
    };
    if !session.clients.keys().any(|c| bound(c)) {
        return;
    }
    let offline = match storage.get_offline_session(&session.user_id, &session.connector_id) {
        Ok(offline) => offline,
        Err(StorageError::NotFound) => return,
        Err(error) => {
            tracing::error!(%error, "cannot read refresh tokens of an ended session");
            return;
        }
    };
    for reference in offline.refresh.values().filter(|r| bound(&r.client_id)) {
        match storage.get_refresh_token(&reference.id) {
            Ok(token) if token.session_id == session.id => {
                crate::oidc::grants::revoke_refresh_token(
                    storage,
                    &token.id,
                    &session.user_id,
                    &session.connector_id,
                );
            }
            Ok(_) | Err(StorageError::NotFound) => {}
            Err(error) => {
                tracing::error!(%error, "cannot read a refresh token of an ended session")
            }
        }
    }
}

/// Signs a Back-Channel Logout 1.0 logout token for `delivery`: `iss`, `sub`,
/// `aud` (the client), `iat`, `exp` (two minutes), `jti`, `sid`, `events`, no
/// `nonce`, JWS header `typ: logout+jwt`.
pub(crate) fn logout_token(
    keyset: &KeySet,
    issuer: &str,
    delivery: &LogoutDelivery,
    now: SystemTime,
) -> Result<String, String> {
    let iat = crate::oidc::mint::unix_seconds(now);
    let claims = serde_json::json!({
        "iss": issuer,
        "sub": encode_subject(&delivery.user_id, &delivery.connector_id),
        "aud": delivery.client_id,
        "iat": iat,
        "exp": iat + 120,
        "jti": crate::crypto::new_long_id(),
        "sid": delivery.session_id,
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
    });
    keyset
        .sign_typed_jwt("logout+jwt", &claims)
        .map_err(|e| e.to_string())
}
