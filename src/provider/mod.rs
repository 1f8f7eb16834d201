//! The application layer: one [`Provider`] owns storage, signing keys, connectors,
//! rate limits, refresh locks, settings and the clock, and offers one async method
//! per use case (authorize, log in, approve, exchange a code, refresh, …). The
//! HTTP handlers extract a request, call one of these methods and render what it
//! returns; the protocol rules they apply live in `crate::oidc`, free of HTTP and
//! of the clock. Blocking work (storage, signing, bcrypt) goes through the one
//! gate, [`crate::blocking::run`].
//!
//! A future admin surface (the gRPC API) calls the same methods.

pub mod admin;
pub mod backchannel;
mod browser;
mod device;
mod error;
mod introspect;
pub(crate) mod limits;
mod logout;
mod revoke;
pub(crate) mod session;
mod token;

use std::sync::Arc;
use std::time::SystemTime;

pub use browser::{
    ApprovalSubmission, AuthorizeStart, CallbackRequest, PasswordSubmission, Verb, safe_back_link,
    unknown_resource,
};
pub use device::DeviceCodeRequest;
pub use error::ProviderError;
pub use limits::Limits;
pub use logout::LogoutRequest;
pub use session::CookieChange;
pub use token::{RefreshLocks, TokenRequest};

use crate::Clock;
use crate::config::{Client, Settings};
use crate::connector::Connectors;
use crate::keys::{KeyError, KeyManager, KeySet};
use crate::oidc::OAuthError;
use crate::oidc::discovery::DiscoveryCache;
use crate::oidc::grants::GrantContext;
use crate::storage::{SharedStorage, Storage};
use crate::web::{
    ApprovalPage, DevicePage, DeviceSuccessPage, LoginPage, LogoutPage, OobPage, PasswordPage,
};

/// What the browser is sent next by a step of a login.
#[derive(Debug)]
pub enum Outcome {
    /// 302 Found (a hop inside our own flow or to an upstream).
    Found(String),
    /// 303 See Other (after a form POST, and the final redirect to the client).
    SeeOther(String),
    /// A page, with its HTTP status.
    Page(u16, Page),
}

/// What a browser step answers: where the browser goes next, and what happens
/// to its session cookie.
#[derive(Debug)]
pub struct Reply {
    pub outcome: Outcome,
    pub cookie: Option<CookieChange>,
}

impl From<Outcome> for Reply {
    fn from(outcome: Outcome) -> Self {
        Self {
            outcome,
            cookie: None,
        }
    }
}

impl Reply {
    /// The same reply, also clearing a cookie that named no usable session.
    pub fn clearing_if(mut self, stale: bool) -> Self {
        if stale && self.cookie.is_none() {
            self.cookie = Some(CookieChange::Clear);
        }
        self
    }
}

/// The pages of the browser flow, as data; `crate::web` renders them.
#[derive(Debug)]
pub enum Page {
    Login(LoginPage),
    Password(PasswordPage),
    Approval(ApprovalPage),
    Oob(OobPage),
    Device(DevicePage),
    DeviceSuccess(DeviceSuccessPage),
    Logout(LogoutPage),
}

/// The running identity provider (see the module documentation).
pub struct Provider {
    /// The configuration merged with the clients and passwords in storage
    /// (see [`admin::merged`]): what every use case runs on.
    settings: Arc<Settings>,
    /// The configuration alone (config clients and passwords are read-only
    /// to the admin API).
    configured: Arc<Settings>,
    /// The stored clients and passwords merged into `settings`.
    stored: Arc<admin::Stored>,
    storage: SharedStorage,
    keys: Arc<KeyManager>,
    connectors: Arc<Connectors>,
    discovery: DiscoveryCache,
    // Kept across configuration reloads: a reload must not reset rate limits,
    // release refresh locks held by requests in flight, or void open forms.
    refresh_locks: Arc<RefreshLocks>,
    limits: Arc<Limits>,
    backchannel: Arc<backchannel::Backchannel>,
    /// Random per-process key for CSRF tokens of forms not tied to an auth
    /// request (the device user-code form).
    form_key: [u8; 32],
    clock: Clock,
}

impl Provider {
    pub fn new(
        settings: Arc<Settings>,
        storage: SharedStorage,
        keys: Arc<KeyManager>,
        connectors: Arc<Connectors>,
        clock: Clock,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            discovery: DiscoveryCache::new(&settings)?,
            configured: settings.clone(),
            stored: Arc::default(),
            settings,
            storage,
            keys,
            connectors,
            refresh_locks: Arc::default(),
            limits: Arc::default(),
            backchannel: Arc::default(),
            form_key: crate::crypto::random_bytes(),
            clock,
        })
    }

    /// The same provider on a reloaded configuration: new settings and
    /// connectors (built from `settings`); the same stored clients and
    /// passwords, storage, keys, clock, rate limits, refresh locks and form key.
    pub fn reconfigured(
        &self,
        settings: Arc<Settings>,
        connectors: Arc<Connectors>,
    ) -> Result<Self, ProviderError> {
        self.assemble(settings, self.stored.clone(), connectors)
    }

    /// The same provider on new stored clients and passwords (read by
    /// [`Provider::load_stored`]).
    pub fn with_stored(&self, stored: admin::Stored) -> Result<Self, ProviderError> {
        self.assemble(
            self.configured.clone(),
            Arc::new(stored),
            self.connectors.clone(),
        )
    }

    fn assemble(
        &self,
        configured: Arc<Settings>,
        stored: Arc<admin::Stored>,
        connectors: Arc<Connectors>,
    ) -> Result<Self, ProviderError> {
        let settings = if stored.is_empty() {
            configured.clone()
        } else {
            Arc::new(admin::merged(&configured, &stored))
        };
        // The local password DB always follows the merged passwords (also
        // when the last stored user went away).
        let connectors =
            if settings.enable_password_db && (!stored.is_empty() || !self.stored.is_empty()) {
                Arc::new(
                    connectors
                        .with_password_db(&settings.passwords)
                        .map_err(|error| {
                            tracing::error!(%error, "cannot build the password database");
                            ProviderError::internal()
                        })?,
                )
            } else {
                connectors
            };
        Ok(Self {
            discovery: DiscoveryCache::new(&settings).map_err(|error| {
                tracing::error!(%error, "cannot build the discovery document");
                ProviderError::internal()
            })?,
            configured,
            stored,
            settings,
            storage: self.storage.clone(),
            keys: self.keys.clone(),
            connectors,
            refresh_locks: self.refresh_locks.clone(),
            limits: self.limits.clone(),
            backchannel: self.backchannel.clone(),
            form_key: self.form_key,
            clock: self.clock.clone(),
        })
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// The storage, for the server's background tasks and for tests.
    pub fn storage(&self) -> &SharedStorage {
        &self.storage
    }

    /// The signing keys, for the server's background tasks and for tests.
    pub fn keys(&self) -> &Arc<KeyManager> {
        &self.keys
    }

    pub fn connectors(&self) -> &Connectors {
        &self.connectors
    }

    /// The injected clock (connectors built on a reload get it too).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn now(&self) -> SystemTime {
        (self.clock)()
    }

    // -----------------------------------------------------------------------
    // Discovery and keys: precomputed, no blocking work.
    // -----------------------------------------------------------------------

    /// The discovery document for the current key's algorithm.
    pub fn discovery_document(&self) -> bytes::Bytes {
        self.discovery.document(self.keys.algorithm())
    }

    /// The JWKS: current key, next key, retired keys still valid (on a first
    /// start, once the first keys exist).
    pub async fn jwks(&self) -> Result<bytes::Bytes, KeyError> {
        Ok(self.keys.keyset().await?.jwks_json())
    }

    /// The configured client the request authenticates as (`client_secret_basic`
    /// in `authorization`, or `client_secret_post` in the form fields).
    fn authenticate(
        &self,
        authorization: Option<&str>,
        client_id: &str,
        client_secret: &str,
    ) -> Result<Client, OAuthError> {
        crate::oidc::client_auth::authenticate_client(
            &self.settings.clients,
            authorization,
            client_id,
            client_secret,
        )
        .cloned()
    }

    // -----------------------------------------------------------------------
    // The gate to blocking work.
    // -----------------------------------------------------------------------

    /// Runs `call` with the storage through the blocking gate.
    async fn with_storage<T, E, F>(&self, call: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<GateFailure> + Send + 'static,
        F: FnOnce(&dyn Storage) -> Result<T, E> + Send + 'static,
    {
        let storage = Arc::clone(&self.storage);
        crate::blocking::run(move || call(storage.as_ref()))
            .await
            .map_err(|error| {
                tracing::error!(%error, "blocking task failed");
                E::from(GateFailure)
            })?
    }

    /// Runs a grant with storage, settings, the signing keys and `now`, through
    /// the blocking gate (SQLite and RSA signatures are blocking work).
    async fn with_grant<T, E, F>(&self, call: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<GateFailure> + Send + 'static,
        F: FnOnce(&GrantContext<'_>) -> Result<T, E> + Send + 'static,
    {
        let storage = Arc::clone(&self.storage);
        let settings = Arc::clone(&self.settings);
        let keyset: Arc<KeySet> = self.keys.keyset().await.map_err(|error| {
            tracing::error!(%error, "no signing key");
            E::from(GateFailure)
        })?;
        let now = self.now();
        crate::blocking::run(move || {
            call(&GrantContext {
                storage: storage.as_ref(),
                settings: settings.as_ref(),
                signer: keyset.as_ref(),
                now,
            })
        })
        .await
        .map_err(|error| {
            tracing::error!(%error, "blocking task failed");
            E::from(GateFailure)
        })?
    }
}

/// The blocking gate refused or lost a call (logged where it happened).
struct GateFailure;

impl From<GateFailure> for ProviderError {
    fn from(_: GateFailure) -> Self {
        ProviderError::internal()
    }
}

impl From<GateFailure> for OAuthError {
    fn from(_: GateFailure) -> Self {
        OAuthError::server_error()
    }
}
