//! Persistent state behind one trait, with in-memory, SQLite and PostgreSQL backends.
//!
//! The contract follows Dex's storage interface: `create_*` on an existing key is
//! [`StorageError::AlreadyExists`], `get_*`/`delete_*`/`update_*` on a missing key is
//! [`StorageError::NotFound`], and `update_*` runs an updater closure atomically
//! (read → updater → write, with no lost updates under concurrency). A delete that
//! succeeds means the caller owns the object: single use of codes relies on it.
//!
//! The trait is synchronous: both backends are quick and blocking. Async callers run
//! it through [`crate::storage::blocking`] so SQLite never stalls a runtime worker.

pub(crate) mod entities;

#[cfg(test)]
mod conformance;
pub(crate) mod gc;
pub mod memory;
pub mod postgres;
mod postgres_tls;
pub mod sqlite;

use std::sync::Arc;
use std::time::SystemTime;

pub use entities::*;

/// Errors every backend reports in the same way.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StorageError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    /// An updater closure refused the change; nothing was written.
    #[error("update rejected: {0}")]
    Rejected(String),
    /// The backend itself failed (corrupt row, bug, …).
    #[error("storage backend: {0}")]
    Backend(String),
    /// The database cannot take the operation right now: it cannot be reached
    /// (connection lost or refused, server shutting down), its disk is full, its
    /// file or file system turned read-only, or I/O failed. Nothing was written.
    /// Clients get 503 (retry later); it clears by itself when the cause does.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl StorageError {
    /// Whether the failure is the database being unavailable (503) rather than a
    /// bug or a protocol outcome.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

/// An updater: receives the current value, returns the value to write or an error
/// that aborts the update. It may be called more than once.
pub type Updater<'a, T> = &'a mut dyn FnMut(T) -> StorageResult<T>;

/// The keys updater sees `None` before the first key exists.
pub type KeysUpdater<'a> = &'a mut dyn FnMut(Option<Keys>) -> StorageResult<Keys>;

/// Edits the offline session a new refresh token joins (an empty one when the
/// user has none yet) and returns the ids of the refresh tokens whose references
/// it dropped, for the backend to delete in the same transaction. It may be
/// called more than once; only the last call's edit and ids count.
pub type SessionLink<'a> = &'a mut dyn FnMut(&mut OfflineSession) -> Vec<String>;

/// A refresh token to create together with its offline-session link.
pub struct NewRefreshToken<'a> {
    /// Its session is the one of `token.claims.user_id` and `token.connector_id`.
    pub token: &'a RefreshToken,
    pub link: SessionLink<'a>,
}

/// What one token grant writes: see [`Storage::commit_grant`].
#[derive(Default)]
pub struct GrantWrite<'a> {
    /// The tombstone of the auth code spent (same id as the code).
    pub redeem: Option<&'a RedeemedCode>,
    pub refresh: Option<NewRefreshToken<'a>>,
}

/// What finishing an interactive login writes: see [`Storage::commit_login`].
pub struct LoginWrite<'a> {
    /// The auth request as the caller read it. The stored one must still equal
    /// it: the response is built from it, so nobody may have changed it since.
    pub request: &'a AuthRequest,
    pub next: RequestNext<'a>,
    pub browser_session: Option<BrowserSessionWrite<'a>>,
    pub offline_session: Option<OfflineSessionEdit<'a>>,
}

impl LoginWrite<'_> {
    /// Every backend refuses a replacement with another id than the request's.
    pub(crate) fn check_replacement(&self) -> StorageResult<()> {
        match &self.next {
            RequestNext::Replace(replacement) if replacement.id != self.request.id => {
                Err(StorageError::Backend(format!(
                    "auth request {} cannot be replaced by auth request {}",
                    self.request.id, replacement.id
                )))
            }
            _ => Ok(()),
        }
    }
}

/// What becomes of the auth request a login finishes.
pub enum RequestNext<'a> {
    /// Replaced by this one (same id): logged in, the approval page comes next.
    Replace(&'a AuthRequest),
    /// Deleted, and this code stored: the response is issued now.
    Exchange(&'a AuthCode),
    /// Deleted: the response (implicit flow) carries the tokens themselves.
    Delete,
}

/// The browser session a login starts or renews.
pub enum BrowserSessionWrite<'a> {
    Create(&'a BrowserSession),
    Update {
        id: &'a str,
        updater: Updater<'a, BrowserSession>,
    },
}

impl BrowserSessionWrite<'_> {
    /// The same write, borrowed for a shorter while (to join a [`LoginWrite`]
    /// whose other parts are local to the caller).
    pub fn reborrow(&mut self) -> BrowserSessionWrite<'_> {
        match self {
            Self::Create(session) => BrowserSessionWrite::Create(session),
            Self::Update { id, updater } => BrowserSessionWrite::Update {
                id,
                updater: &mut **updater,
            },
        }
    }
}

/// The offline session of (user, connector), created when missing, then edited.
pub struct OfflineSessionEdit<'a> {
    pub user_id: &'a str,
    pub connector_id: &'a str,
    /// May be called more than once; only the last call's edit counts.
    pub edit: &'a mut dyn FnMut(&mut OfflineSession),
}

/// How many expired objects one garbage collection removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GcCounts {
    pub auth_requests: u64,
    pub auth_codes: u64,
    pub device_requests: u64,
    pub device_tokens: u64,
    pub revoked_access_tokens: u64,
}

impl GcCounts {
    pub fn total(&self) -> u64 {
        self.auth_requests
            + self.auth_codes
            + self.device_requests
            + self.device_tokens
            + self.revoked_access_tokens
    }
}

pub trait Storage: Send + Sync + 'static {
    // Auth requests: a login in progress.
    fn create_auth_request(&self, request: &AuthRequest) -> StorageResult<()>;
    fn get_auth_request(&self, id: &str) -> StorageResult<AuthRequest>;
    fn update_auth_request(
        &self,
        id: &str,
        updater: Updater<'_, AuthRequest>,
    ) -> StorageResult<AuthRequest>;
    fn delete_auth_request(&self, id: &str) -> StorageResult<()>;
    /// Deletes the auth request `request_id` and creates `code` in one
    /// transaction: [`StorageError::NotFound`] when the request is gone (a double
    /// submit), [`StorageError::AlreadyExists`] when the code id is taken; then
    /// nothing is written.
    fn exchange_auth_request_for_code(
        &self,
        request_id: &str,
        code: &AuthCode,
    ) -> StorageResult<()>;

    // Auth codes: single use, so only create / get / delete.
    fn create_auth_code(&self, code: &AuthCode) -> StorageResult<()>;
    fn get_auth_code(&self, id: &str) -> StorageResult<AuthCode>;
    fn delete_auth_code(&self, id: &str) -> StorageResult<()>;
    /// Everything a token grant writes, in ONE transaction (all or nothing):
    ///
    /// - `redeem`: deletes the auth code with the tombstone's id and stores the
    ///   tombstone. [`StorageError::NotFound`] when the code is gone (already
    ///   redeemed): then nothing at all is written.
    /// - `refresh`: creates the token ([`StorageError::AlreadyExists`] on a taken
    ///   id), creates the offline session of its (user, connector) when missing,
    ///   applies [`NewRefreshToken::link`] to it, and deletes the refresh tokens
    ///   whose ids the link returns (missing ones are skipped).
    fn commit_grant(&self, grant: GrantWrite<'_>) -> StorageResult<()>;
    fn get_redeemed_code(&self, id: &str) -> StorageResult<RedeemedCode>;
    /// Everything finishing an interactive login writes, in ONE transaction
    /// (all or nothing):
    ///
    /// - the auth request `login.request.id` must be stored and equal to
    ///   `login.request` (a compare-and-swap): [`StorageError::NotFound`] when it
    ///   is gone, [`StorageError::Rejected`] when it changed (another login of it
    ///   came first); then [`LoginWrite::next`] is applied to it
    ///   ([`StorageError::AlreadyExists`] when the code id is taken);
    /// - `browser_session`: created ([`StorageError::AlreadyExists`] on a taken
    ///   id) or updated ([`StorageError::NotFound`] when it is gone: it ended
    ///   meanwhile; an updater error aborts everything);
    /// - `offline_session`: created when missing, then edited.
    ///
    /// Returns the browser session as written.
    fn commit_login(&self, login: LoginWrite<'_>) -> StorageResult<Option<BrowserSession>>;

    // Refresh tokens: never garbage-collected by time; expiry is enforced at use.
    fn create_refresh_token(&self, token: &RefreshToken) -> StorageResult<()>;
    fn get_refresh_token(&self, id: &str) -> StorageResult<RefreshToken>;
    fn update_refresh_token(
        &self,
        id: &str,
        updater: Updater<'_, RefreshToken>,
    ) -> StorageResult<RefreshToken>;
    fn delete_refresh_token(&self, id: &str) -> StorageResult<()>;
    fn list_refresh_tokens(&self) -> StorageResult<Vec<RefreshToken>>;

    // Offline sessions: one per (user, connector).
    fn create_offline_session(&self, session: &OfflineSession) -> StorageResult<()>;
    fn get_offline_session(
        &self,
        user_id: &str,
        connector_id: &str,
    ) -> StorageResult<OfflineSession>;
    fn update_offline_session(
        &self,
        user_id: &str,
        connector_id: &str,
        updater: Updater<'_, OfflineSession>,
    ) -> StorageResult<OfflineSession>;
    fn delete_offline_session(&self, user_id: &str, connector_id: &str) -> StorageResult<()>;

    // Signing keys: one logical row. `update_keys` receives `None` before the first
    // key exists and is the compare-and-swap that makes rotation safe across processes.
    fn get_keys(&self) -> StorageResult<Option<Keys>>;
    fn update_keys(&self, updater: KeysUpdater<'_>) -> StorageResult<Keys>;

    // Device flow (RFC 8628): requests keyed by user code, tokens by device code.
    fn create_device_request(&self, request: &DeviceRequest) -> StorageResult<()>;
    fn get_device_request(&self, user_code: &str) -> StorageResult<DeviceRequest>;
    fn create_device_token(&self, token: &DeviceToken) -> StorageResult<()>;
    fn get_device_token(&self, device_code: &str) -> StorageResult<DeviceToken>;
    fn update_device_token(
        &self,
        device_code: &str,
        updater: Updater<'_, DeviceToken>,
    ) -> StorageResult<DeviceToken>;

    // Browser sessions (beyond Dex v2.45; Dex HEAD's auth sessions), keyed by id.
    fn create_browser_session(&self, session: &BrowserSession) -> StorageResult<()>;
    fn get_browser_session(&self, id: &str) -> StorageResult<BrowserSession>;
    fn update_browser_session(
        &self,
        id: &str,
        updater: Updater<'_, BrowserSession>,
    ) -> StorageResult<BrowserSession>;
    fn delete_browser_session(&self, id: &str) -> StorageResult<()>;
    /// Up to `limit` sessions whose [`BrowserSession::expiry`] is before `now`,
    /// the longest-expired first. Garbage collection leaves them to the caller,
    /// which ends them as a logout does (back-channel logout, revocation).
    fn expired_browser_sessions(
        &self,
        now: SystemTime,
        limit: usize,
    ) -> StorageResult<Vec<BrowserSession>>;

    // User identities: consent per (user, connector).
    fn create_user_identity(&self, identity: &UserIdentity) -> StorageResult<()>;
    fn get_user_identity(&self, user_id: &str, connector_id: &str) -> StorageResult<UserIdentity>;
    fn update_user_identity(
        &self,
        user_id: &str,
        connector_id: &str,
        updater: Updater<'_, UserIdentity>,
    ) -> StorageResult<UserIdentity>;

    // Back-channel logout deliveries still to make.
    fn create_logout_delivery(&self, delivery: &LogoutDelivery) -> StorageResult<()>;
    fn update_logout_delivery(
        &self,
        id: &str,
        updater: Updater<'_, LogoutDelivery>,
    ) -> StorageResult<LogoutDelivery>;
    fn delete_logout_delivery(&self, id: &str) -> StorageResult<()>;
    /// Up to `limit` deliveries due before `now`, the earliest first.
    fn due_logout_deliveries(
        &self,
        now: SystemTime,
        limit: usize,
    ) -> StorageResult<Vec<LogoutDelivery>>;

    // Token revocation (RFC 7009): the deny list of access tokens, bounded by
    // expiry (see `oidc::revoke`).
    /// Stores `revoked`, or merges it into the row with the same key
    /// ([`RevokedAccessTokens::merged`]), atomically.
    fn revoke_access_tokens(&self, revoked: &RevokedAccessTokens) -> StorageResult<()>;
    fn get_revoked_access_tokens(&self, key: &str) -> StorageResult<RevokedAccessTokens>;

    /// Deletes auth requests, auth codes and redeemed-code tombstones (counted as
    /// auth codes), device requests, device tokens and revoked-access-token rows
    /// whose expiry is before `now`.
    fn garbage_collect(&self, now: SystemTime) -> StorageResult<GcCounts>;

    /// Why the database cannot be reached, while the last attempt failed (a
    /// networked backend); `None` when it answers. Lets the HTTP layer turn the
    /// failure into 503 and readiness report it without a round trip.
    fn unavailable(&self) -> Option<String> {
        None
    }

    // ---------------------------------------------------------------------
    // Clients and passwords created through the gRPC admin API. Every replica
    // reads them from here; config ones are never stored.
    // ---------------------------------------------------------------------
    fn create_api_client(&self, client: &ApiClient) -> StorageResult<()>;
    fn get_api_client(&self, id: &str) -> StorageResult<ApiClient>;
    fn update_api_client(
        &self,
        id: &str,
        updater: Updater<'_, ApiClient>,
    ) -> StorageResult<ApiClient>;
    fn delete_api_client(&self, id: &str) -> StorageResult<()>;
    fn list_api_clients(&self) -> StorageResult<Vec<ApiClient>>;
    /// `email` is matched case-insensitively (stored lower-cased).
    fn create_api_password(&self, password: &ApiPassword) -> StorageResult<()>;
    fn get_api_password(&self, email: &str) -> StorageResult<ApiPassword>;
    fn update_api_password(
        &self,
        email: &str,
        updater: Updater<'_, ApiPassword>,
    ) -> StorageResult<ApiPassword>;
    fn delete_api_password(&self, email: &str) -> StorageResult<()>;
    fn list_api_passwords(&self) -> StorageResult<Vec<ApiPassword>>;
}

pub type SharedStorage = Arc<dyn Storage>;

/// Opens the configured backend. For SQLite the parent directory is created when
/// missing; the file name `:memory:` (as in Dex's tests) gives a private in-memory
/// database.
pub fn open(settings: &crate::config::StorageSettings) -> StorageResult<SharedStorage> {
    use crate::config::StorageSettings;
    match settings {
        StorageSettings::Memory => Ok(Arc::new(memory::MemoryStorage::new())),
        StorageSettings::Sqlite3 { file } => {
            // `:memory:` has an empty parent, like any bare file name.
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StorageError::Backend(format!(
                        "cannot create directory {} for SQLite database {}: {e}",
                        dir.display(),
                        file.display()
                    ))
                })?;
            }
            Ok(Arc::new(sqlite::SqliteStorage::open(file)?))
        }
        StorageSettings::Postgres(postgres) => {
            Ok(Arc::new(postgres::PostgresStorage::open(postgres)?))
        }
    }
}

/// Runs a storage call through the blocking gate ([`crate::blocking`]) so async
/// workers never wait on the database.
pub async fn blocking<T, F>(storage: &SharedStorage, call: F) -> StorageResult<T>
where
    T: Send + 'static,
    F: FnOnce(&dyn Storage) -> StorageResult<T> + Send + 'static,
{
    let storage = Arc::clone(storage);
    crate::blocking::run(move || call(storage.as_ref()))
        .await
        .map_err(|error| StorageError::Backend(format!("storage task failed: {error}")))?
}
