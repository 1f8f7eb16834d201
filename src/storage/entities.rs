//! The objects oxidex persists. Field meanings follow Dex's storage entities
//! (Dex's `storage/storage.go`); where oxidex goes beyond Dex the field says so.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// What a connector said about the user at login, carried into tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub user_id: String,
    pub username: String,
    pub preferred_username: String,
    pub email: String,
    pub email_verified: bool,
    pub groups: Vec<String>,
}

/// PKCE parameters captured at `/auth`. Empty challenge means no PKCE.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pkce {
    pub code_challenge: String,
    pub code_challenge_method: String,
}

/// A login in progress, created at `/auth/{connector}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRequest {
    pub id: String,
    pub client_id: String,
    pub response_types: Vec<String>,
    pub scopes: Vec<String>,
    pub redirect_uri: String,
    pub nonce: String,
    pub state: String,
    pub force_approval_prompt: bool,
    pub logged_in: bool,
    pub claims: Claims,
    pub connector_id: String,
    pub connector_data: Option<Vec<u8>>,
    pub expiry: SystemTime,
    pub pkce: Pkce,
    /// Key for the HMACs that bind approval/continue URLs to this request.
    pub hmac_key: Vec<u8>,
    /// When the user authenticated; `None` until logged in.
    pub auth_time: Option<SystemTime>,
    /// Beyond Dex: the hash of the browser secret of the browser that started this
    /// login (`oidc::binding`); empty in rows written before bindings existed,
    /// which then match no browser.
    #[serde(default)]
    pub browser_binding: String,
    /// The browser session this login belongs to (its `sid`), once logged in;
    /// empty when sessions are off.
    #[serde(default)]
    pub session_id: String,
}

/// An issued authorization code awaiting exchange at `/token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthCode {
    pub id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub nonce: String,
    pub scopes: Vec<String>,
    pub connector_id: String,
    pub connector_data: Option<Vec<u8>>,
    pub claims: Claims,
    pub expiry: SystemTime,
    pub pkce: Pkce,
    pub auth_time: Option<SystemTime>,
    /// Beyond Dex: the auth request's browser binding, so the device callback can
    /// check that the code arrives in the browser that logged in.
    #[serde(default)]
    pub browser_binding: String,
    /// The browser session that issued the code (`sid`), or empty.
    #[serde(default)]
    pub session_id: String,
}

/// What remains of an authorization code once exchanged, kept until the code's
/// expiry so that a replay of the code is recognised and the refresh token the
/// exchange issued is revoked (RFC 6749 §4.1.2). Beyond Dex, which forgets codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedeemedCode {
    /// The code itself.
    pub id: String,
    pub client_id: String,
    /// The refresh token the exchange issued (its id is stable across rotations).
    pub refresh_token_id: Option<String>,
    /// The offline session holding that token's reference.
    pub user_id: String,
    pub connector_id: String,
    /// The code's expiry; the tombstone is collected after it.
    pub expiry: SystemTime,
}

/// A refresh token. `id` is stable across rotations; `token` is the current secret
/// and `obsolete_token` the previous one (accepted inside the reuse window).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshToken {
    pub id: String,
    pub token: String,
    pub obsolete_token: String,
    pub created_at: SystemTime,
    pub last_used: SystemTime,
    pub client_id: String,
    pub connector_id: String,
    pub connector_data: Option<Vec<u8>>,
    pub claims: Claims,
    pub scopes: Vec<String>,
    pub nonce: String,
    pub auth_time: Option<SystemTime>,
    /// The browser session whose login issued this token (`sid`, kept across
    /// refreshes as Dex HEAD), or empty (password grant, sessions off).
    #[serde(default)]
    pub session_id: String,
}

/// A reference from an offline session to one of its refresh tokens.
///
/// An offline session holds up to 32 of these per client and is rewritten by
/// every code exchange and refresh, so its times are stored compactly (see
/// [`compact_time`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshTokenRef {
    pub id: String,
    pub client_id: String,
    #[serde(with = "compact_time")]
    pub created_at: SystemTime,
    #[serde(with = "compact_time")]
    pub last_used: SystemTime,
}

/// A time as one integer, nanoseconds since the Unix epoch (19 digits), rather
/// than serde's `{"secs_since_epoch":…,"nanos_since_epoch":…}` (~60 bytes).
/// Reading accepts both, so rows written before this format still load.
mod compact_time {
    use std::fmt;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::de::{self, MapAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        let nanos = time
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_nanos()).ok())
            .ok_or_else(|| serde::ser::Error::custom("time outside 1970..2554"))?;
        serializer.serialize_u64(nanos)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        deserializer.deserialize_any(TimeVisitor)
    }

    struct TimeVisitor;

    impl<'de> Visitor<'de> for TimeVisitor {
        type Value = SystemTime;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("nanoseconds since the Unix epoch, or serde's SystemTime struct")
        }

        fn visit_u64<E: de::Error>(self, nanos: u64) -> Result<SystemTime, E> {
            UNIX_EPOCH
                .checked_add(Duration::from_nanos(nanos))
                .ok_or_else(|| E::custom("time out of range"))
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SystemTime, A::Error> {
            SystemTime::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }
}

/// Upstream state shared by all refresh tokens of one (user, connector).
///
/// Beyond Dex: `refresh` is keyed by refresh-token id, not by client id, so a user
/// may hold several refresh tokens for one client (one per login, Dex #981).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineSession {
    pub user_id: String,
    pub connector_id: String,
    pub refresh: BTreeMap<String, RefreshTokenRef>,
    /// Latest upstream credentials (e.g. the upstream refresh token).
    pub connector_data: Option<Vec<u8>>,
}

impl OfflineSession {
    /// The session of a user who holds no refresh token yet.
    pub fn empty(user_id: &str, connector_id: &str) -> Self {
        Self {
            user_id: user_id.to_owned(),
            connector_id: connector_id.to_owned(),
            refresh: BTreeMap::new(),
            connector_data: None,
        }
    }
}

/// A signing key as stored: the PKCS#8 private key and its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSigningKey {
    /// 40 lowercase hex characters, like Dex.
    pub kid: String,
    /// JWS algorithm: `RS256`, `ES256` or `EdDSA`.
    pub algorithm: String,
    /// PKCS#8 DER of the private key.
    pub private_pkcs8: Vec<u8>,
    /// The public JWK as served at `/keys`.
    pub public_jwk: serde_json::Value,
}

/// A retired public key, kept so tokens it signed still verify until `expiry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationKey {
    pub public_jwk: serde_json::Value,
    pub expiry: SystemTime,
}

/// The one logical row of key material.
///
/// Beyond Dex (#2759): `next_key` is generated one rotation ahead and published at
/// `/keys` before it signs anything, so relying parties that cache the JWKS already
/// know it when it takes over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keys {
    pub signing_key: StoredSigningKey,
    pub next_key: Option<StoredSigningKey>,
    pub verification_keys: Vec<VerificationKey>,
    pub next_rotation: SystemTime,
}

/// A device authorization request (RFC 8628), keyed by user code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRequest {
    pub user_code: String,
    pub device_code: String,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
    pub expiry: SystemTime,
}

/// The polling side of a device authorization, keyed by device code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceToken {
    pub device_code: String,
    /// `authorization_pending` or `complete`.
    pub status: String,
    /// The token response JSON once complete.
    pub token: String,
    pub expiry: SystemTime,
    pub last_request: SystemTime,
    pub poll_interval_seconds: u32,
    pub pkce: Pkce,
    /// Beyond Dex: the browser binding of the browser in which the user last
    /// entered (or confirmed) the user code; only that browser may complete it.
    #[serde(default)]
    pub browser_binding: String,
    /// Beyond Dex: the PKCE verifier of the browser's `/auth` hop, random and
    /// server-side only (the device holder cannot derive it); set with
    /// `browser_binding`.
    #[serde(default)]
    pub hop_verifier: String,
}

/// A signed-in browser (Dex HEAD's `AuthSession`), created by an interactive
/// login and named by the session cookie (`<id>.<secret>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrowserSession {
    /// Public: it is the `sid` claim.
    pub id: String,
    /// `base64url(SHA-256(secret))`: the cookie's secret is never stored.
    pub secret_hash: String,
    pub user_id: String,
    pub connector_id: String,
    /// What the connector said at this session's last interactive login; a
    /// login that reuses the session issues these claims.
    pub claims: Claims,
    /// The connector's data from that login (upstream tokens), handed to the
    /// offline session of a reusing login that has none.
    #[serde(default)]
    pub connector_data: Option<Vec<u8>>,
    /// The clients that logged in with this session, by client id.
    pub clients: BTreeMap<String, SessionClient>,
    pub created_at: SystemTime,
    /// This session's last interactive login (`auth_time` of every token it
    /// issues; beyond Dex HEAD, which uses the user's last login on any device).
    pub authenticated_at: SystemTime,
    pub last_activity: SystemTime,
    /// `created_at + absoluteLifetime`; never extended.
    pub absolute_expiry: SystemTime,
    /// `last_activity + validIfNotUsedFor`.
    pub idle_expiry: SystemTime,
}

impl BrowserSession {
    /// When the session ends unless used again: the earlier of its two expiries.
    pub fn expiry(&self) -> SystemTime {
        self.absolute_expiry.min(self.idle_expiry)
    }
}

/// One client's part in a browser session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClient {
    pub authenticated_at: SystemTime,
    pub last_token_issued_at: Option<SystemTime>,
    /// Joined by SSO from another client's login, not by its own: never a source
    /// for further SSO (sharing is not transitive).
    pub via_sso: bool,
}

/// What oxidex remembers about a user of one connector across browsers: the
/// scopes each client was granted (Dex HEAD's `UserIdentity.Consents`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserIdentity {
    pub user_id: String,
    pub connector_id: String,
    /// Client id → every scope the user approved for it (beyond Dex HEAD, which
    /// keeps only the last approval's list).
    pub consents: BTreeMap<String, Vec<String>>,
    pub created_at: SystemTime,
    /// When consent last changed.
    pub updated_at: SystemTime,
}

/// A back-channel logout token still to be delivered to a client (Back-Channel
/// Logout 1.0). The token is signed afresh at each attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogoutDelivery {
    pub id: String,
    pub client_id: String,
    pub user_id: String,
    pub connector_id: String,
    pub session_id: String,
    pub attempts: u32,
    /// The next attempt is due at this instant (moved ahead while one is in
    /// flight, so other replicas leave it alone).
    pub due: SystemTime,
    /// Dropped (with a warning) when not delivered by then.
    pub give_up_at: SystemTime,
}

/// Beyond Dex (RFC 7009): access tokens refused before they expire. `key` names
/// the tokens covered (one token by its `jti`, or every token of one subject at
/// one client); a covered token issued (`iat`) at or before `revoked_at` is
/// refused. The row is collected after `expiry`, when no covered token is valid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedAccessTokens {
    pub key: String,
    pub revoked_at: SystemTime,
    pub expiry: SystemTime,
}

impl RevokedAccessTokens {
    /// Two revocations of the same key: the later instants win, so a repeated
    /// revocation never un-revokes a token.
    pub fn merged(mut self, other: &Self) -> Self {
        self.revoked_at = self.revoked_at.max(other.revoked_at);
        self.expiry = self.expiry.max(other.expiry);
        self
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn rows_written_before_browser_bindings_still_load() {
        // JSON as stored by earlier versions (SQLite keeps rows as JSON).
        let mut request = serde_json::to_value(AuthRequest {
            id: "r".into(),
            client_id: "c".into(),
            response_types: vec!["code".into()],
            scopes: vec!["openid".into()],
            redirect_uri: "https://app.example/cb".into(),
            nonce: String::new(),
            state: String::new(),
            force_approval_prompt: false,
            logged_in: false,
            claims: Claims::default(),
            connector_id: "mock".into(),
            connector_data: None,
            expiry: SystemTime::UNIX_EPOCH,
            pkce: Pkce::default(),
            hmac_key: b"k".to_vec(),
            auth_time: None,
            browser_binding: "b".into(),
            session_id: String::new(),
        })
        .unwrap();
        request.as_object_mut().unwrap().remove("browser_binding");
        let old: AuthRequest = serde_json::from_value(request).unwrap();
        assert_eq!(old.browser_binding, "");

        let token = serde_json::json!({
            "device_code": "d", "status": "authorization_pending", "token": "",
            "expiry": SystemTime::UNIX_EPOCH, "last_request": SystemTime::UNIX_EPOCH,
            "poll_interval_seconds": 0,
            "pkce": {"code_challenge": "", "code_challenge_method": ""}
        });
        let old: DeviceToken = serde_json::from_value(token).unwrap();
        assert_eq!(
            (old.browser_binding.as_str(), old.hop_verifier.as_str()),
            ("", "")
        );
    }

    #[test]
    fn refresh_token_refs_store_times_as_nanoseconds_and_read_both_forms() {
        let created = UNIX_EPOCH + std::time::Duration::new(1_764_700_000, 123_456_789);
        let reference = RefreshTokenRef {
            id: "rt".into(),
            client_id: "c".into(),
            created_at: created,
            last_used: created + std::time::Duration::from_nanos(1),
        };
        let json = serde_json::to_value(&reference).unwrap();
        assert_eq!(
            json["created_at"],
            serde_json::json!(1_764_700_000_123_456_789_u64)
        );
        assert_eq!(
            json["last_used"],
            serde_json::json!(1_764_700_000_123_456_790_u64)
        );
        assert_eq!(
            serde_json::from_value::<RefreshTokenRef>(json).unwrap(),
            reference
        );

        // As stored before: serde's struct form.
        let old = serde_json::json!({
            "id": "rt", "client_id": "c",
            "created_at": {"secs_since_epoch": 1_764_700_000, "nanos_since_epoch": 123_456_789},
            "last_used": {"secs_since_epoch": 1_764_700_000, "nanos_since_epoch": 123_456_790},
        });
        assert_eq!(
            serde_json::from_value::<RefreshTokenRef>(old).unwrap(),
            reference
        );

        // Neither form: a clear error, not a default.
        let bad = serde_json::json!({
            "id": "rt", "client_id": "c", "created_at": "yesterday", "last_used": 0,
        });
        let error = serde_json::from_value::<RefreshTokenRef>(bad).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("nanoseconds since the Unix epoch"),
            "{error}"
        );
        // Before 1970 cannot be written (nothing in oxidex makes such a time).
        let ancient = RefreshTokenRef {
            created_at: UNIX_EPOCH - std::time::Duration::from_secs(1),
            ..reference
        };
        assert!(serde_json::to_string(&ancient).is_err());
    }
}

/// A client created through the gRPC API (Dex's `storage.Client`). Config
/// clients (`staticClients`) are never stored; they shadow a stored client
/// with the same id.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiClient {
    pub id: String,
    pub secret: String,
    pub redirect_uris: Vec<String>,
    pub trusted_peers: Vec<String>,
    pub public: bool,
    pub name: String,
    pub logo_url: String,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("id", &self.id)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// A password-database user created through the gRPC API (Dex's
/// `storage.Password`), keyed by its lower-cased e-mail.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiPassword {
    /// Lower-cased.
    pub email: String,
    /// A bcrypt hash (`$2a$…`).
    pub hash: String,
    pub username: String,
    pub user_id: String,
}

impl std::fmt::Debug for ApiPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiPassword")
            .field("email", &self.email)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}
