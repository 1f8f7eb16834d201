//! Browser sessions (single sign-on): the rules, free of HTTP and of the clock.
//!
//! A successful interactive login creates a session (Dex HEAD's `AuthSession`)
//! and gives the browser a cookie naming it: `<session id>.<secret>`, optionally
//! sealed with AES-GCM under `sessions.cookieEncryptionKey`. The id is public (it
//! is the `sid` claim); the secret proves possession and is stored only as its
//! SHA-256. A later authorization request from that browser may then skip the
//! connector (and the approval page, when consent was given before) if the rules
//! below allow it. The cookie is always issued anew at a login, so a cookie planted
//! in the browser before the login never names the session after it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_lc_rs::aead::{
    AES_128_GCM, AES_192_GCM, AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config::{Client, RefreshTokenLifetime, SessionSettings, Settings};
use crate::crypto;
use crate::storage::{BrowserSession, Claims, SessionClient, Storage, StorageError};

use super::scopes::OPENID;

/// Length of the cookie secret in [`crypto::random_token`] characters (260 bits).
const SECRET_LEN: usize = 52;
/// Longest cookie value accepted for parsing (a sealed value is ~150 bytes).
const MAX_COOKIE_LEN: usize = 512;

/// What the session cookie carries.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionCookie {
    pub session_id: String,
    secret: String,
}

impl std::fmt::Debug for SessionCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCookie")
            .field("session_id", &self.session_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl SessionCookie {
    /// A cookie for a new session: a fresh id and secret.
    pub fn generate() -> Self {
        Self {
            session_id: crypto::new_id(),
            secret: crypto::random_token(SECRET_LEN),
        }
    }

    /// A new secret for the existing session `session_id` (a renewed login).
    pub fn renewed(session_id: &str) -> Self {
        Self {
            session_id: session_id.to_owned(),
            ..Self::generate()
        }
    }

    /// What is stored instead of the secret.
    pub fn secret_hash(&self) -> String {
        URL_SAFE_NO_PAD.encode(crypto::sha256(self.secret.as_bytes()))
    }

    /// Whether this cookie proves possession of `session` (constant time).
    pub fn opens(&self, session: &BrowserSession) -> bool {
        self.session_id == session.id
            && crypto::constant_time_eq(
                self.secret_hash().as_bytes(),
                session.secret_hash.as_bytes(),
            )
    }

    /// The cookie value, sealed when a key is configured.
    pub fn encode(&self, key: Option<&[u8]>) -> String {
        let plain = format!("{}.{}", self.session_id, self.secret);
        match key.and_then(sealing_key) {
            Some(key) => {
                let nonce_bytes: [u8; NONCE_LEN] = crypto::random_bytes();
                let mut sealed = plain.into_bytes();
                if key
                    .seal_in_place_append_tag(
                        Nonce::assume_unique_for_key(nonce_bytes),
                        Aad::empty(),
                        &mut sealed,
                    )
                    .is_err()
                {
                    // Sealing a short buffer cannot fail; an unusable cookie
                    // (never accepted back) is the safe outcome if it did.
                    return String::new();
                }
                let mut out = nonce_bytes.to_vec();
                out.extend_from_slice(&sealed);
                URL_SAFE_NO_PAD.encode(out)
            }
            None => plain,
        }
    }

    /// A cookie value we could have issued under `key`, or `None`.
    pub fn decode(value: &str, key: Option<&[u8]>) -> Option<Self> {
        if value.is_empty() || value.len() > MAX_COOKIE_LEN {
            return None;
        }
        let plain = match key {
            Some(key) => {
                let key = sealing_key(key)?;
                let mut raw = URL_SAFE_NO_PAD.decode(value).ok()?;
                if raw.len() <= NONCE_LEN {
                    return None;
                }
                let mut sealed = raw.split_off(NONCE_LEN);
                let nonce = Nonce::try_assume_unique_for_key(&raw).ok()?;
                let opened = key.open_in_place(nonce, Aad::empty(), &mut sealed).ok()?;
                String::from_utf8(opened.to_vec()).ok()?
            }
            None => value.to_owned(),
        };
        let (session_id, secret) = plain.split_once('.')?;
        let base32 = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        };
        (session_id.len() == 25
            && secret.len() == SECRET_LEN
            && base32(session_id)
            && base32(secret))
        .then(|| Self {
            session_id: session_id.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

/// AES-128/192/256-GCM for a 16-, 24- or 32-byte key, as Dex HEAD.
fn sealing_key(key: &[u8]) -> Option<LessSafeKey> {
    let algorithm = match key.len() {
        16 => &AES_128_GCM,
        24 => &AES_192_GCM,
        32 => &AES_256_GCM,
        _ => return None,
    };
    UnboundKey::new(algorithm, key).ok().map(LessSafeKey::new)
}

/// Whether `session` is alive at `now` (before both its idle and absolute expiry).
pub fn alive(session: &BrowserSession, now: SystemTime) -> bool {
    now < session.expiry()
}

/// Whether a token of `client_id` issued by browser session `session_id` has
/// outlived that session, for a client with `refreshTokenLifetime: session` (Dex
/// HEAD: its tokens end with the session). Always false for other clients, for
/// tokens without a session, and with sessions off.
pub fn bound_session_ended(
    storage: &dyn Storage,
    settings: &Settings,
    client_id: &str,
    session_id: &str,
    now: SystemTime,
) -> Result<bool, StorageError> {
    let bound = settings
        .clients
        .iter()
        .any(|c| c.id == client_id && c.refresh_token_lifetime == RefreshTokenLifetime::Session);
    if !bound || session_id.is_empty() || settings.sessions.is_none() {
        return Ok(false);
    }
    match storage.get_browser_session(session_id) {
        Ok(session) => Ok(!alive(&session, now)),
        Err(StorageError::NotFound) => Ok(true),
        Err(error) => Err(error),
    }
}

/// A new session for an interactive login of `client_id`.
pub fn new_session(
    settings: &SessionSettings,
    cookie: &SessionCookie,
    claims: Claims,
    connector_data: Option<Vec<u8>>,
    connector_id: &str,
    client_id: &str,
    now: SystemTime,
) -> BrowserSession {
    let mut clients = BTreeMap::new();
    clients.insert(client_id.to_owned(), direct_login(now));
    BrowserSession {
        id: cookie.session_id.clone(),
        secret_hash: cookie.secret_hash(),
        user_id: claims.user_id.clone(),
        connector_id: connector_id.to_owned(),
        claims,
        connector_data,
        clients,
        created_at: now,
        authenticated_at: now,
        last_activity: now,
        absolute_expiry: add(now, settings.absolute_lifetime),
        idle_expiry: add(now, settings.valid_if_not_used_for),
    }
}

/// Records another interactive login of the same user and connector in an
/// existing session (a new secret; absolute expiry unchanged).
pub fn record_login(
    settings: &SessionSettings,
    session: &mut BrowserSession,
    cookie: &SessionCookie,
    claims: Claims,
    connector_data: Option<Vec<u8>>,
    client_id: &str,
    now: SystemTime,
) {
    session.secret_hash = cookie.secret_hash();
    session.claims = claims;
    session.connector_data = connector_data;
    session
        .clients
        .insert(client_id.to_owned(), direct_login(now));
    session.authenticated_at = now;
    touch(settings, session, now);
}

/// The session was used at `now`: its idle expiry moves on.
pub fn touch(settings: &SessionSettings, session: &mut BrowserSession, now: SystemTime) {
    session.last_activity = now;
    session.idle_expiry = add(now, settings.valid_if_not_used_for).min(session.absolute_expiry);
}

fn direct_login(now: SystemTime) -> SessionClient {
    SessionClient {
        authenticated_at: now,
        last_token_issued_at: None,
        via_sso: false,
    }
}

fn add(now: SystemTime, duration: Duration) -> SystemTime {
    now.checked_add(duration).unwrap_or(now)
}

/// Whether `source` lets `target` reuse a session `source` logged into
/// (Dex HEAD's `ClientSharesWith`): its `ssoSharedWith` names `target` or `*`, or
/// is unset while `ssoSharedWithDefault` is `all`. A client always reuses its own.
pub fn shares_with(settings: &SessionSettings, source: &Client, target: &str) -> bool {
    if source.id == target {
        return true;
    }
    match &source.sso_shared_with {
        Some(list) => list.iter().any(|c| c == "*" || c == target),
        None => settings.sso_shared_with_all_by_default,
    }
}

/// Why a session cannot log a request in silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReuse {
    /// The session belongs to another connector than the one asked for.
    OtherConnector,
    /// `id_token_hint` names another user.
    OtherUser,
    /// Neither this client nor a client sharing with it logged in with it.
    NotShared,
    /// `max_age` has passed since the session's last interactive login.
    TooOld,
}

/// How a session may serve an authorization request of `client_id` at
/// `connector_id`: `Ok(true)` when the client joins by SSO (the session records
/// it), `Ok(false)` when it already had its own part. Sharing is not transitive:
/// only clients that logged in themselves (`via_sso == false`) are sources.
pub fn reuse(
    settings: &SessionSettings,
    clients: &[Client],
    session: &BrowserSession,
    request: &ReuseRequest<'_>,
    now: SystemTime,
) -> Result<bool, NoReuse> {
    if session.connector_id != request.connector_id {
        return Err(NoReuse::OtherConnector);
    }
    if let Some(subject) = request.hint_subject
        && subject != super::subject::encode_subject(&session.user_id, &session.connector_id)
    {
        return Err(NoReuse::OtherUser);
    }
    if let Some(max_age) = request.max_age {
        // `max_age=0` always asks for a new login (OpenID Connect Core §3.1.2.1:
        // equivalent to `prompt=login`).
        let age = now
            .duration_since(session.authenticated_at)
            .unwrap_or_default();
        if max_age == 0 || age > Duration::from_secs(max_age) {
            return Err(NoReuse::TooOld);
        }
    }
    if session.clients.contains_key(request.client_id) {
        return Ok(false);
    }
    let shared = session.clients.iter().any(|(id, state)| {
        !state.via_sso
            && clients
                .iter()
                .find(|c| &c.id == id)
                .is_some_and(|source| shares_with(settings, source, request.client_id))
    });
    if shared {
        Ok(true)
    } else {
        Err(NoReuse::NotShared)
    }
}

/// The parts of an authorization request that decide session reuse.
#[derive(Debug, Clone, Copy)]
pub struct ReuseRequest<'a> {
    pub client_id: &'a str,
    pub connector_id: &'a str,
    /// `sub` of a verified `id_token_hint`.
    pub hint_subject: Option<&'a str>,
    pub max_age: Option<u64>,
}

/// Records that `client_id` joined `session` by SSO.
pub fn join_by_sso(session: &mut BrowserSession, client_id: &str, now: SystemTime) {
    session.clients.insert(
        client_id.to_owned(),
        SessionClient {
            authenticated_at: now,
            last_token_issued_at: None,
            via_sso: true,
        },
    );
}

/// Whether stored consent covers every requested scope (`openid` needs none).
pub fn consent_covers(granted: &[String], requested: &[String]) -> bool {
    requested
        .iter()
        .filter(|s| s.as_str() != OPENID)
        .all(|s| granted.contains(s))
}

/// The union of what was granted before and what was just approved, sorted.
pub fn merge_consent(granted: &[String], approved: &[String]) -> Vec<String> {
    let mut all: Vec<String> = granted.iter().chain(approved).cloned().collect();
    all.sort();
    all.dedup();
    all
}

/// The `prompt` parameter (OpenID Connect Core §3.1.2.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
    pub select_account: bool,
}

impl Prompt {
    /// Parses a space-separated list, with Dex HEAD's error texts (after
    /// "Invalid prompt parameter: ").
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut prompt = Self::default();
        for word in value.split(' ').filter(|w| !w.is_empty()) {
            match word {
                "none" => prompt.none = true,
                "login" => prompt.login = true,
                "consent" => prompt.consent = true,
                "select_account" => prompt.select_account = true,
                other => {
                    let shown: String = other.chars().take(40).collect();
                    return Err(format!("invalid prompt value {shown:?}"));
                }
            }
        }
        if prompt.none && (prompt.login || prompt.consent || prompt.select_account) {
            return Err("prompt=none must not be combined with other values".to_owned());
        }
        Ok(prompt)
    }
}

/// `max_age` (seconds): absent, or a non-negative integer.
pub fn parse_max_age(value: &str) -> Result<Option<u64>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        let shown: String = value.chars().take(40).collect();
        return Err(format!("Invalid max_age value {shown:?}"));
    }
    value
        .parse::<u64>()
        .map(Some)
        .map_err(|_| format!("Invalid max_age value {value:?}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::oidc::test_support::{clients, t0};

    fn session_for(client: &str) -> BrowserSession {
        new_session(
            &SessionSettings::default(),
            &SessionCookie::generate(),
            Claims {
                user_id: "u".into(),
                ..Claims::default()
            },
            None,
            "mock",
            client,
            t0(),
        )
    }

    #[test]
    fn cookie_round_trips_plain_and_sealed_and_refuses_anything_else() {
        let cookie = SessionCookie::generate();
        let plain = cookie.encode(None);
        assert_eq!(SessionCookie::decode(&plain, None), Some(cookie.clone()));
        for key in [&[7u8; 16][..], &[8u8; 24][..], &[9u8; 32][..]] {
            let sealed = cookie.encode(Some(key));
            assert!(!sealed.contains(&cookie.session_id));
            assert_eq!(
                SessionCookie::decode(&sealed, Some(key)),
                Some(cookie.clone())
            );
            // Another key, the plain form, a flipped byte: all refused.
            assert_eq!(SessionCookie::decode(&sealed, Some(&[1u8; 16])), None);
            assert_eq!(SessionCookie::decode(&plain, Some(key)), None);
            let mut raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
            let last = raw.len() - 1;
            raw[last] ^= 1;
            assert_eq!(
                SessionCookie::decode(&URL_SAFE_NO_PAD.encode(raw), Some(key)),
                None
            );
        }
        for bad in [
            "",
            ".",
            "a.b",
            &"a".repeat(600),
            &format!("{}.{}", cookie.session_id, "A".repeat(52)),
        ] {
            assert_eq!(SessionCookie::decode(bad, None), None, "{bad:?}");
        }
    }

    #[test]
    fn only_the_secret_opens_a_session() {
        let cookie = SessionCookie::generate();
        let session = new_session(
            &SessionSettings::default(),
            &cookie,
            Claims::default(),
            None,
            "mock",
            "web",
            t0(),
        );
        assert!(cookie.opens(&session));
        assert_ne!(session.secret_hash, cookie.secret);
        let forged = SessionCookie {
            session_id: cookie.session_id.clone(),
            secret: SessionCookie::generate().secret,
        };
        assert!(!forged.opens(&session));
        assert!(!SessionCookie::generate().opens(&session));
    }

    #[test]
    fn expiry_is_idle_or_absolute_whichever_comes_first() {
        let settings = SessionSettings::default();
        let mut session = session_for("web");
        assert!(alive(&session, t0() + Duration::from_secs(3599)));
        assert!(!alive(&session, t0() + Duration::from_secs(3600)));
        touch(&settings, &mut session, t0() + Duration::from_secs(3000));
        assert!(alive(&session, t0() + Duration::from_secs(6000)));
        // Touching never extends past the absolute lifetime.
        touch(
            &settings,
            &mut session,
            t0() + Duration::from_secs(23 * 3600 + 1800),
        );
        assert_eq!(session.idle_expiry, session.absolute_expiry);
        assert!(!alive(&session, t0() + Duration::from_secs(24 * 3600)));
    }

    #[test]
    fn sso_follows_the_source_clients_policy_and_is_not_transitive() {
        let mut settings = SessionSettings::default();
        let mut all = clients();
        let request = |client_id| ReuseRequest {
            client_id,
            connector_id: "mock",
            hint_subject: None,
            max_age: None,
        };
        let session = session_for("web");
        // Defaults: no sharing, but a client reuses its own part.
        assert_eq!(
            reuse(&settings, &all, &session, &request("web"), t0()),
            Ok(false)
        );
        assert_eq!(
            reuse(&settings, &all, &session, &request("other"), t0()),
            Err(NoReuse::NotShared)
        );
        settings.sso_shared_with_all_by_default = true;
        assert_eq!(
            reuse(&settings, &all, &session, &request("other"), t0()),
            Ok(true)
        );
        // An explicit empty list shares with nobody, even under `all`.
        all.iter_mut()
            .find(|c| c.id == "web")
            .unwrap()
            .sso_shared_with = Some(vec![]);
        assert_eq!(
            reuse(&settings, &all, &session, &request("other"), t0()),
            Err(NoReuse::NotShared)
        );
        settings.sso_shared_with_all_by_default = false;
        all.iter_mut()
            .find(|c| c.id == "web")
            .unwrap()
            .sso_shared_with = Some(vec!["other".into()]);
        all.iter_mut()
            .find(|c| c.id == "other")
            .unwrap()
            .sso_shared_with = Some(vec!["peer".into()]);
        assert_eq!(
            reuse(&settings, &all, &session, &request("other"), t0()),
            Ok(true)
        );
        let mut joined = session.clone();
        join_by_sso(&mut joined, "other", t0());
        // web → other → peer: peer may not ride on other's SSO part.
        assert_eq!(
            reuse(&settings, &all, &joined, &request("peer"), t0()),
            Err(NoReuse::NotShared)
        );
        assert_eq!(
            reuse(
                &settings,
                &all,
                &session,
                &ReuseRequest {
                    connector_id: "ldap",
                    ..request("web")
                },
                t0()
            ),
            Err(NoReuse::OtherConnector)
        );
    }

    #[test]
    fn hint_and_max_age_limit_reuse() {
        let settings = SessionSettings::default();
        let all = clients();
        let session = session_for("web");
        let own = super::super::subject::encode_subject("u", "mock");
        let base = ReuseRequest {
            client_id: "web",
            connector_id: "mock",
            hint_subject: Some(&own),
            max_age: Some(60),
        };
        assert_eq!(
            reuse(
                &settings,
                &all,
                &session,
                &base,
                t0() + Duration::from_secs(60)
            ),
            Ok(false)
        );
        assert_eq!(
            reuse(
                &settings,
                &all,
                &session,
                &base,
                t0() + Duration::from_secs(61)
            ),
            Err(NoReuse::TooOld)
        );
        assert_eq!(
            reuse(
                &settings,
                &all,
                &session,
                &ReuseRequest {
                    max_age: Some(0),
                    ..base
                },
                t0()
            ),
            Err(NoReuse::TooOld)
        );
        let other = super::super::subject::encode_subject("v", "mock");
        assert_eq!(
            reuse(
                &settings,
                &all,
                &session,
                &ReuseRequest {
                    hint_subject: Some(&other),
                    ..base
                },
                t0()
            ),
            Err(NoReuse::OtherUser)
        );
    }

    #[test]
    fn prompt_and_max_age_parse_as_dex_head() {
        assert_eq!(Prompt::parse("").unwrap(), Prompt::default());
        let p = Prompt::parse("login consent login").unwrap();
        assert!(p.login && p.consent && !p.none);
        assert!(Prompt::parse("none").unwrap().none);
        assert_eq!(
            Prompt::parse("none login").unwrap_err(),
            "prompt=none must not be combined with other values"
        );
        assert_eq!(
            Prompt::parse("x").unwrap_err(),
            "invalid prompt value \"x\""
        );
        assert_eq!(parse_max_age(""), Ok(None));
        assert_eq!(parse_max_age("0"), Ok(Some(0)));
        assert_eq!(
            parse_max_age("-1"),
            Err("Invalid max_age value \"-1\"".into())
        );
        assert!(parse_max_age("1.5").is_err());
        assert!(parse_max_age(&"9".repeat(30)).is_err());
    }

    #[test]
    fn consent_is_a_union_and_openid_needs_none() {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        let granted = merge_consent(&s(&["openid", "email"]), &s(&["openid", "profile"]));
        assert_eq!(granted, s(&["email", "openid", "profile"]));
        assert!(consent_covers(&granted, &s(&["openid", "email"])));
        assert!(consent_covers(&[], &s(&["openid"])));
        assert!(!consent_covers(&granted, &s(&["openid", "groups"])));
    }
}
