//! The admin use cases behind Dex's gRPC API (`api.Dex`): clients and
//! password-database users kept in storage beside the config ones, refresh
//! tokens listed and revoked per user. `crate::grpc` only translates messages;
//! the rules (Dex's checks, texts and outcome flags) are here.
//!
//! Stored clients and passwords reach logins through the provider's merged
//! settings ([`merged`]): config entries win on id (e-mail) conflicts, as in
//! Dex, and the merged view is rebuilt when storage changes (see
//! `crate::server::StoredSync`), so the hot paths never read storage for a
//! client.
//!
//! Every call is logged once as an audit event (target `audit`): the method,
//! the caller's certificate subject when mutual TLS is on, the object's id and
//! the outcome; never a secret or a hash.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;

use super::Provider;
use crate::config::settings::{Client, Password, Settings};
use crate::connector::local::{MAX_BCRYPT_COST, MIN_BCRYPT_COST};
use crate::storage::{ApiClient, ApiPassword, StorageError};

/// `GetVersion`'s `api`: the RPC set of Dex v2.44–v2.45.
pub const API_VERSION: i32 = 3;

/// bcrypt looks at 72 bytes at most; Go refuses longer passwords.
const MAX_PASSWORD_BYTES: usize = 72;

/// Who called, for the audit log: the subject of the client certificate, when
/// mutual TLS is on.
#[derive(Debug, Clone, Default)]
pub struct AdminCaller {
    pub certificate_subject: Option<String>,
}

impl std::fmt::Display for AdminCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.certificate_subject.as_deref().unwrap_or("-"))
    }
}

/// A refused or failed admin call, with Dex's message text. (Dex answers every
/// such case with gRPC status UNKNOWN and this text.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError(pub String);

impl AdminError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type AdminResult<T> = Result<T, AdminError>;

/// What a `Create*` call did: Dex reports an existing key as a flag, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created<T> {
    Created(T),
    AlreadyExists,
}

/// What an `Update*`/`Delete*`/`RevokeRefresh` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    Done,
    NotFound,
}

/// `UpdateClient`: empty fields leave the stored value alone (proto3 cannot
/// tell empty from absent).
#[derive(Debug, Clone, Default)]
pub struct ClientChanges {
    pub redirect_uris: Vec<String>,
    pub trusted_peers: Vec<String>,
    pub name: String,
    pub logo_url: String,
}

/// `VerifyPassword`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    Yes,
    No,
    NotFound,
}

/// One entry of `ListRefresh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenInfo {
    pub id: String,
    pub client_id: String,
    pub created_at: i64,
    pub last_used: i64,
}

/// The clients and passwords in storage, as last read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub clients: Vec<ApiClient>,
    pub passwords: Vec<ApiPassword>,
}

impl Stored {
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.passwords.is_empty()
    }

    /// Sorted, so two reads of the same rows compare equal whatever order the
    /// backend returned them in.
    fn sorted(mut self) -> Self {
        self.clients.sort_by(|a, b| a.id.cmp(&b.id));
        self.passwords.sort_by(|a, b| a.email.cmp(&b.email));
        self
    }
}

/// The settings the provider runs on: the configured ones plus the stored
/// clients and passwords whose id (e-mail) no config entry has. A stored
/// password whose hash is not a bcrypt hash is left out (and logged): the API
/// refuses such hashes, so only a foreign write can have put it there.
pub fn merged(configured: &Settings, stored: &Stored) -> Settings {
    let mut settings = configured.clone();
    let static_clients: HashSet<&str> = configured.clients.iter().map(|c| c.id.as_str()).collect();
    settings.clients.extend(
        stored
            .clients
            .iter()
            .filter(|c| !static_clients.contains(c.id.as_str()))
            .map(client_settings),
    );
    let static_emails: HashSet<String> = configured
        .passwords
        .iter()
        .map(|p| p.email.to_lowercase())
        .collect();
    settings.passwords.extend(
        stored
            .passwords
            .iter()
            .filter(|p| !static_emails.contains(&p.email.to_lowercase()))
            .filter(|p| match bcrypt::HashParts::from_str(&p.hash) {
                Ok(_) => true,
                Err(error) => {
                    tracing::warn!(email = %p.email, %error, "stored password has no usable bcrypt hash; ignored");
                    false
                }
            })
            .map(password_settings),
    );
    settings
}

/// A stored client as the provider uses it: what Dex's API can set, the rest
/// at the defaults of a config client.
fn client_settings(client: &ApiClient) -> Client {
    Client {
        id: client.id.clone(),
        secret: client.secret.clone(),
        redirect_uris: client.redirect_uris.clone(),
        trusted_peers: client.trusted_peers.clone(),
        public: client.public,
        name: client.name.clone(),
        logo_url: client.logo_url.clone(),
        allowed_connectors: Vec::new(),
        require_pkce: false,
        post_logout_redirect_uris: Vec::new(),
        backchannel_logout_uri: String::new(),
        refresh_token_lifetime: Default::default(),
        sso_shared_with: None,
        client_credentials_groups: Vec::new(),
    }
}

/// A stored password as the password DB uses it. Dex's API has no name,
/// preferred username, groups or verified flag: empty, and verified (Dex reads
/// its NULL `email_verified` as true).
fn password_settings(password: &ApiPassword) -> Password {
    Password {
        email: password.email.to_lowercase(),
        hash: password.hash.clone(),
        username: password.username.clone(),
        name: String::new(),
        preferred_username: String::new(),
        email_verified: true,
        user_id: password.user_id.clone(),
        groups: Vec::new(),
    }
}

fn api_client(client: &Client) -> ApiClient {
    ApiClient {
        id: client.id.clone(),
        secret: client.secret.clone(),
        redirect_uris: client.redirect_uris.clone(),
        trusted_peers: client.trusted_peers.clone(),
        public: client.public,
        name: client.name.clone(),
        logo_url: client.logo_url.clone(),
    }
}

fn api_password(password: &Password) -> ApiPassword {
    ApiPassword {
        email: password.email.clone(),
        hash: String::new(),
        username: password.username.clone(),
        user_id: password.user_id.clone(),
    }
}

/// Dex's bcrypt rule for hashes given to the API: a bcrypt hash of cost
/// 10..=16. The cost is checked first, from the `$2x$NN$` prefix alone, as Go's
/// `bcrypt.Cost` does (so the texts match Dex's); then the whole hash must
/// parse, or the password database could not use it.
fn check_cost(hash: &[u8]) -> AdminResult<String> {
    let unparsable = |detail: &str| AdminError::new(format!("parsing bcrypt hash: {detail}"));
    let hash = std::str::from_utf8(hash).map_err(|_| unparsable("not a bcrypt hash"))?;
    if hash.len() < 59 {
        return Err(unparsable(
            "crypto/bcrypt: hashedSecret too short to be a bcrypted password",
        ));
    }
    let cost = match hash.as_bytes() {
        [b'$', b'2', b'a' | b'b' | b'y', b'$', tens, units, b'$', ..]
            if tens.is_ascii_digit() && units.is_ascii_digit() =>
        {
            u32::from(tens - b'0') * 10 + u32::from(units - b'0')
        }
        _ => return Err(unparsable("not a bcrypt hash ($2a$, $2b$ or $2y$)")),
    };
    if cost < MIN_BCRYPT_COST {
        return Err(AdminError::new(format!(
            "given hash cost = {cost} does not meet minimum cost requirement = {MIN_BCRYPT_COST}"
        )));
    }
    if cost > MAX_BCRYPT_COST {
        return Err(AdminError::new(format!(
            "given hash cost = {cost} is above upper bound cost = {MAX_BCRYPT_COST}, recommended cost = 12"
        )));
    }
    bcrypt::HashParts::from_str(hash).map_err(|e| unparsable(&e.to_string()))?;
    Ok(hash.to_owned())
}

fn read_only(verb: &str, noun: &str, plural: &str) -> AdminError {
    AdminError::new(format!(
        "{verb} {noun}: static {plural}: read-only cannot {verb} {noun}"
    ))
}

fn audit<T>(method: &str, caller: &AdminCaller, object: &str, result: &AdminResult<T>) {
    match result {
        Ok(_) => {
            tracing::info!(target: "audit", api = "grpc", method, caller = %caller, object, "admin call")
        }
        Err(error) => {
            tracing::info!(target: "audit", api = "grpc", method, caller = %caller, object, error = %error, "admin call refused")
        }
    }
}

impl Provider {
    /// The client `id`, config or stored ([`Settings::client`]).
    pub fn client(&self, id: &str) -> Option<&Client> {
        self.settings.client(id)
    }

    /// The clients and passwords in storage, sorted.
    pub async fn load_stored(&self) -> Result<Stored, StorageError> {
        let stored = crate::storage::blocking(&self.storage, |s| {
            Ok(Stored {
                clients: s.list_api_clients()?,
                passwords: s.list_api_passwords()?,
            })
        })
        .await?;
        Ok(stored.sorted())
    }

    /// What the provider runs on besides the config: the stored objects last read.
    pub fn stored(&self) -> &Arc<Stored> {
        &self.stored
    }

    fn is_static_client(&self, id: &str) -> bool {
        self.configured.clients.iter().any(|c| c.id == id)
    }

    fn static_password(&self, email: &str) -> Option<&Password> {
        let email = email.to_lowercase();
        self.configured
            .passwords
            .iter()
            .find(|p| p.email.to_lowercase() == email)
    }

    async fn storage_call<T, F>(&self, call: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn crate::storage::Storage) -> Result<T, StorageError> + Send + 'static,
    {
        crate::storage::blocking(&self.storage, call).await
    }

    pub fn api_version(&self, caller: &AdminCaller) -> (String, i32) {
        audit::<()>("GetVersion", caller, "", &Ok(()));
        (crate::VERSION.to_owned(), API_VERSION)
    }

    /// The discovery document, as the HTTP endpoint serves it.
    pub fn api_discovery(&self, caller: &AdminCaller) -> AdminResult<serde_json::Value> {
        let result = serde_json::from_slice(&self.discovery_document())
            .map_err(|e| AdminError::new(format!("failed to unmarshal discovery data: {e}")));
        audit("GetDiscovery", caller, "", &result);
        result
    }

    pub async fn api_get_client(&self, caller: &AdminCaller, id: &str) -> AdminResult<ApiClient> {
        let result = match self.configured.clients.iter().find(|c| c.id == id) {
            Some(client) => Ok(api_client(client)),
            None => {
                let key = id.to_owned();
                self.storage_call(move |s| s.get_api_client(&key))
                    .await
                    .map_err(|e| match e {
                        StorageError::NotFound => AdminError::new("not found"),
                        e => AdminError::new(format!("get client: {e}")),
                    })
            }
        };
        audit("GetClient", caller, id, &result);
        result
    }

    /// Dex's defaults: a generated id when none is given, a generated secret
    /// for a confidential client without one.
    pub async fn api_create_client(
        &self,
        caller: &AdminCaller,
        client: Option<ApiClient>,
    ) -> AdminResult<Created<ApiClient>> {
        let result = self.create_client(client).await;
        let id = match &result {
            Ok(Created::Created(client)) => client.id.as_str(),
            _ => "",
        };
        audit("CreateClient", caller, id, &result);
        result
    }

    async fn create_client(&self, client: Option<ApiClient>) -> AdminResult<Created<ApiClient>> {
        let mut client = client.ok_or_else(|| AdminError::new("no client supplied"))?;
        if client.id.is_empty() {
            client.id = crate::crypto::new_id();
        }
        if client.secret.is_empty() && !client.public {
            client.secret = format!("{}{}", crate::crypto::new_id(), crate::crypto::new_id());
        }
        if self.is_static_client(&client.id) {
            return Err(read_only("create", "client", "clients"));
        }
        let stored = client.clone();
        match self
            .storage_call(move |s| s.create_api_client(&stored))
            .await
        {
            Ok(()) => Ok(Created::Created(client)),
            Err(StorageError::AlreadyExists) => Ok(Created::AlreadyExists),
            Err(e) => Err(AdminError::new(format!("create client: {e}"))),
        }
    }

    pub async fn api_update_client(
        &self,
        caller: &AdminCaller,
        id: &str,
        changes: ClientChanges,
    ) -> AdminResult<Changed> {
        let result = self.update_client(id, changes).await;
        audit("UpdateClient", caller, id, &result);
        result
    }

    async fn update_client(&self, id: &str, changes: ClientChanges) -> AdminResult<Changed> {
        if id.is_empty() {
            return Err(AdminError::new("update client: no client ID supplied"));
        }
        if self.is_static_client(id) {
            return Err(read_only("update", "client", "clients"));
        }
        let key = id.to_owned();
        let updated = self
            .storage_call(move |s| {
                s.update_api_client(&key, &mut |mut client| {
                    if !changes.redirect_uris.is_empty() {
                        client.redirect_uris = changes.redirect_uris.clone();
                    }
                    if !changes.trusted_peers.is_empty() {
                        client.trusted_peers = changes.trusted_peers.clone();
                    }
                    if !changes.name.is_empty() {
                        client.name = changes.name.clone();
                    }
                    if !changes.logo_url.is_empty() {
                        client.logo_url = changes.logo_url.clone();
                    }
                    Ok(client)
                })
            })
            .await;
        match updated {
            Ok(_) => Ok(Changed::Done),
            Err(StorageError::NotFound) => Ok(Changed::NotFound),
            Err(e) => Err(AdminError::new(format!("update client: {e}"))),
        }
    }

    /// Like Dex, leaves the client's refresh tokens alone (they stop working:
    /// the client is unknown).
    pub async fn api_delete_client(&self, caller: &AdminCaller, id: &str) -> AdminResult<Changed> {
        let result = if self.is_static_client(id) {
            Err(read_only("delete", "client", "clients"))
        } else {
            let key = id.to_owned();
            match self.storage_call(move |s| s.delete_api_client(&key)).await {
                Ok(()) => Ok(Changed::Done),
                Err(StorageError::NotFound) => Ok(Changed::NotFound),
                Err(e) => Err(AdminError::new(format!("delete client: {e}"))),
            }
        };
        audit("DeleteClient", caller, id, &result);
        result
    }

    /// Stored clients not shadowed by a config one, then the config ones.
    /// Callers must not pass secrets on.
    pub async fn api_list_clients(&self, caller: &AdminCaller) -> AdminResult<Vec<ApiClient>> {
        let result = self
            .storage_call(|s| s.list_api_clients())
            .await
            .map_err(|e| AdminError::new(format!("list clients: {e}")))
            .map(|stored| {
                let mut out: Vec<ApiClient> = stored
                    .into_iter()
                    .filter(|c| !self.is_static_client(&c.id))
                    .collect();
                out.extend(self.configured.clients.iter().map(api_client));
                out
            });
        audit("ListClients", caller, "", &result);
        result
    }

    pub async fn api_create_password(
        &self,
        caller: &AdminCaller,
        password: Option<(ApiPassword, Vec<u8>)>,
    ) -> AdminResult<Created<()>> {
        let email = password
            .as_ref()
            .map(|(p, _)| p.email.to_lowercase())
            .unwrap_or_default();
        let result = self.create_password(password).await;
        audit("CreatePassword", caller, &email, &result);
        result
    }

    async fn create_password(
        &self,
        password: Option<(ApiPassword, Vec<u8>)>,
    ) -> AdminResult<Created<()>> {
        let (mut password, hash) =
            password.ok_or_else(|| AdminError::new("no password supplied"))?;
        if password.user_id.is_empty() {
            return Err(AdminError::new("no user ID supplied"));
        }
        if hash.is_empty() {
            return Err(AdminError::new("no hash of password supplied"));
        }
        password.hash = check_cost(&hash)?;
        if self.static_password(&password.email).is_some() {
            return Err(read_only("create", "password", "passwords"));
        }
        match self
            .storage_call(move |s| s.create_api_password(&password))
            .await
        {
            Ok(()) => Ok(Created::Created(())),
            Err(StorageError::AlreadyExists) => Ok(Created::AlreadyExists),
            Err(e) => Err(AdminError::new(format!("create password: {e}"))),
        }
    }

    pub async fn api_update_password(
        &self,
        caller: &AdminCaller,
        email: &str,
        new_hash: Vec<u8>,
        new_username: String,
    ) -> AdminResult<Changed> {
        let result = self.update_password(email, new_hash, new_username).await;
        audit("UpdatePassword", caller, &email.to_lowercase(), &result);
        result
    }

    async fn update_password(
        &self,
        email: &str,
        new_hash: Vec<u8>,
        new_username: String,
    ) -> AdminResult<Changed> {
        if email.is_empty() {
            return Err(AdminError::new("no email supplied"));
        }
        if new_hash.is_empty() && new_username.is_empty() {
            return Err(AdminError::new("nothing to update"));
        }
        let new_hash = if new_hash.is_empty() {
            None
        } else {
            Some(check_cost(&new_hash)?)
        };
        if self.static_password(email).is_some() {
            return Err(read_only("update", "password", "passwords"));
        }
        let key = email.to_owned();
        let updated = self
            .storage_call(move |s| {
                s.update_api_password(&key, &mut |mut password| {
                    if let Some(hash) = &new_hash {
                        password.hash = hash.clone();
                    }
                    if !new_username.is_empty() {
                        password.username = new_username.clone();
                    }
                    Ok(password)
                })
            })
            .await;
        match updated {
            Ok(_) => Ok(Changed::Done),
            Err(StorageError::NotFound) => Ok(Changed::NotFound),
            Err(e) => Err(AdminError::new(format!("update password: {e}"))),
        }
    }

    /// Like Dex, leaves the user's refresh tokens alone: the next refresh
    /// fails because the user is gone.
    pub async fn api_delete_password(
        &self,
        caller: &AdminCaller,
        email: &str,
    ) -> AdminResult<Changed> {
        let result = if email.is_empty() {
            Err(AdminError::new("no email supplied"))
        } else if self.static_password(email).is_some() {
            Err(read_only("delete", "password", "passwords"))
        } else {
            let key = email.to_owned();
            match self
                .storage_call(move |s| s.delete_api_password(&key))
                .await
            {
                Ok(()) => Ok(Changed::Done),
                Err(StorageError::NotFound) => Ok(Changed::NotFound),
                Err(e) => Err(AdminError::new(format!("delete password: {e}"))),
            }
        };
        audit("DeletePassword", caller, &email.to_lowercase(), &result);
        result
    }

    /// Stored users not shadowed by a config one, then the config ones; the
    /// hash is always empty.
    pub async fn api_list_passwords(&self, caller: &AdminCaller) -> AdminResult<Vec<ApiPassword>> {
        let result = self
            .storage_call(|s| s.list_api_passwords())
            .await
            .map_err(|e| AdminError::new(format!("list passwords: {e}")))
            .map(|stored| {
                let mut out: Vec<ApiPassword> = stored
                    .into_iter()
                    .filter(|p| self.static_password(&p.email).is_none())
                    .map(|p| ApiPassword {
                        hash: String::new(),
                        ..p
                    })
                    .collect();
                out.extend(self.configured.passwords.iter().map(api_password));
                out
            });
        audit("ListPasswords", caller, "", &result);
        result
    }

    /// Checks `password` against the user's hash (config users too), through
    /// the one bcrypt gate.
    pub async fn api_verify_password(
        &self,
        caller: &AdminCaller,
        email: &str,
        password: &str,
    ) -> AdminResult<Verified> {
        let result = self.verify_password(email, password).await;
        audit("VerifyPassword", caller, &email.to_lowercase(), &result);
        result
    }

    async fn verify_password(&self, email: &str, password: &str) -> AdminResult<Verified> {
        if email.is_empty() {
            return Err(AdminError::new("no email supplied"));
        }
        if password.is_empty() {
            return Err(AdminError::new("no password to verify supplied"));
        }
        let hash = match self.static_password(email) {
            Some(user) => crate::connector::local::normalised_hash(&user.hash)
                .map_err(|e| AdminError::new(format!("verify password: {e}")))?,
            None => {
                let key = email.to_owned();
                match self.storage_call(move |s| s.get_api_password(&key)).await {
                    Ok(user) => user.hash,
                    Err(StorageError::NotFound) => return Ok(Verified::NotFound),
                    Err(e) => return Err(AdminError::new(format!("get password: {e}"))),
                }
            }
        };
        if password.len() > MAX_PASSWORD_BYTES {
            return Ok(Verified::No);
        }
        let password = password.to_owned();
        let checked = self
            .connectors
            .hash_gate()
            .run(move || bcrypt::verify(password.as_bytes(), &hash))
            .await
            .map_err(|_| AdminError::new("verify password: too many password checks at once"))?
            .map_err(|e| AdminError::new(format!("verify password: {e}")))?;
        match checked {
            Ok(true) => Ok(Verified::Yes),
            Ok(false) | Err(_) => Ok(Verified::No),
        }
    }

    /// The refresh tokens of the user whose ID token `sub` is `subject`.
    pub async fn api_list_refresh(
        &self,
        caller: &AdminCaller,
        subject: &str,
    ) -> AdminResult<Vec<RefreshTokenInfo>> {
        let result = self.list_refresh(subject).await;
        audit("ListRefresh", caller, subject, &result);
        result
    }

    async fn list_refresh(&self, subject: &str) -> AdminResult<Vec<RefreshTokenInfo>> {
        let (user_id, connector_id) = decode_subject(subject)?;
        let session = self
            .storage_call(move |s| s.get_offline_session(&user_id, &connector_id))
            .await;
        let session = match session {
            Ok(session) => session,
            Err(StorageError::NotFound) => return Ok(Vec::new()),
            Err(e) => return Err(AdminError::new(format!("list refresh: {e}"))),
        };
        Ok(session
            .refresh
            .values()
            .map(|r| RefreshTokenInfo {
                id: r.id.clone(),
                client_id: r.client_id.clone(),
                created_at: unix_seconds(r.created_at),
                last_used: unix_seconds(r.last_used),
            })
            .collect())
    }

    /// Forgets the user's refresh tokens for `client_id` and deletes them.
    /// (Dex keeps one per user and client; oxidex one per login, so all of
    /// them go.)
    pub async fn api_revoke_refresh(
        &self,
        caller: &AdminCaller,
        subject: &str,
        client_id: &str,
    ) -> AdminResult<Changed> {
        let result = self.revoke_refresh(subject, client_id).await;
        audit(
            "RevokeRefresh",
            caller,
            &format!("{subject}/{client_id}"),
            &result,
        );
        result
    }

    async fn revoke_refresh(&self, subject: &str, client_id: &str) -> AdminResult<Changed> {
        let (user_id, connector_id) = decode_subject(subject)?;
        let client = client_id.to_owned();
        let removed = self
            .storage_call(move |s| {
                let mut token_ids = Vec::new();
                let updated =
                    s.update_offline_session(&user_id, &connector_id, &mut |mut session| {
                        token_ids = session
                            .refresh
                            .values()
                            .filter(|r| r.client_id == client)
                            .map(|r| r.id.clone())
                            .collect();
                        if token_ids.is_empty() {
                            return Err(StorageError::NotFound);
                        }
                        session.refresh.retain(|_, r| r.client_id != client);
                        Ok(session)
                    });
                match updated {
                    Ok(_) => Ok(token_ids),
                    Err(StorageError::NotFound) => Ok(Vec::new()),
                    Err(e) => Err(e),
                }
            })
            .await
            .map_err(|e| AdminError::new(format!("revoke refresh: {e}")))?;
        if removed.is_empty() {
            return Ok(Changed::NotFound);
        }
        self.storage_call(move |s| {
            for token_id in &removed {
                match s.delete_refresh_token(token_id) {
                    // Gone already (revoked meanwhile at /token/revoke): still revoked.
                    Ok(()) | Err(StorageError::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| AdminError::new(format!("revoke refresh: {e}")))?;
        Ok(Changed::Done)
    }
}

/// The user and connector ids of an ID token's `sub`. A raw user id is not
/// one (Dex fails its decoding too).
fn decode_subject(subject: &str) -> AdminResult<(String, String)> {
    crate::oidc::subject::decode_subject(subject).ok_or_else(|| {
        AdminError::new("user_id is not the sub claim of an ID token issued by this server")
    })
}

fn unix_seconds(time: std::time::SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::oidc::test_support;

    const HASH: &str = "$2b$10$sD0K5NZrR9THssaos8nEde5ywauRcVXC6frrFKxi6lUuERHKIbAdi";

    fn stored_client(id: &str, secret: &str) -> ApiClient {
        ApiClient {
            id: id.to_owned(),
            secret: secret.to_owned(),
            redirect_uris: vec!["https://stored.example/cb".to_owned()],
            trusted_peers: Vec::new(),
            public: false,
            name: "Stored".to_owned(),
            logo_url: String::new(),
        }
    }

    fn stored_password(email: &str, hash: &str) -> ApiPassword {
        ApiPassword {
            email: email.to_owned(),
            hash: hash.to_owned(),
            username: "stored".to_owned(),
            user_id: "stored-id".to_owned(),
        }
    }

    #[test]
    fn config_entries_win_and_stored_ones_join() {
        let mut configured = test_support::settings();
        configured.enable_password_db = true;
        configured.passwords = vec![Password {
            email: "admin@example.com".to_owned(),
            hash: HASH.to_owned(),
            username: "admin".to_owned(),
            name: "Admin".to_owned(),
            preferred_username: String::new(),
            email_verified: true,
            user_id: "admin-id".to_owned(),
            groups: vec!["admins".to_owned()],
        }];
        let static_web = configured.client("web").unwrap().secret.clone();
        let stored = Stored {
            clients: vec![
                stored_client("web", "stolen"),
                stored_client("api-app", "api-secret"),
            ],
            passwords: vec![
                stored_password("ADMIN@example.com", HASH),
                stored_password("new@example.com", HASH),
                stored_password("broken@example.com", "not a hash"),
            ],
        };
        let merged = merged(&configured, &stored);
        assert_eq!(merged.client("web").unwrap().secret, static_web);
        assert_eq!(merged.clients.len(), configured.clients.len() + 1);
        let api = merged.client("api-app").unwrap();
        assert_eq!(api.secret, "api-secret");
        assert_eq!(api.redirect_uris, ["https://stored.example/cb"]);
        let emails: Vec<&str> = merged.passwords.iter().map(|p| p.email.as_str()).collect();
        assert_eq!(emails, ["admin@example.com", "new@example.com"]);
        assert_eq!(merged.passwords[0].user_id, "admin-id", "config user kept");
        assert!(merged.passwords[1].email_verified);
    }

    #[test]
    fn hashes_are_held_to_dex_cost_rule() {
        let hash = |cost: &str| HASH.replacen("$10$", &format!("${cost}$"), 1);
        assert!(check_cost(hash("10").as_bytes()).is_ok());
        assert!(check_cost(hash("16").as_bytes()).is_ok());
        assert_eq!(
            check_cost(hash("09").as_bytes()).unwrap_err().0,
            "given hash cost = 9 does not meet minimum cost requirement = 10"
        );
        assert_eq!(
            check_cost(hash("17").as_bytes()).unwrap_err().0,
            "given hash cost = 17 is above upper bound cost = 16, recommended cost = 12"
        );
        assert!(check_cost(b"\xff\xfe").is_err());
        // The cost is judged before the rest of the hash, as Dex does.
        let bad_body = format!("$2a$04${}", "!".repeat(53));
        assert_eq!(
            check_cost(bad_body.as_bytes()).unwrap_err().0,
            "given hash cost = 4 does not meet minimum cost requirement = 10"
        );
        let bad_body = format!("$2a$10${}", "!".repeat(53));
        assert!(
            check_cost(bad_body.as_bytes())
                .unwrap_err()
                .0
                .starts_with("parsing bcrypt hash: ")
        );
        assert!(
            check_cost(b"short")
                .unwrap_err()
                .0
                .starts_with("parsing bcrypt hash: ")
        );
    }

    #[test]
    fn audit_caller_never_prints_more_than_the_subject() {
        let caller = AdminCaller {
            certificate_subject: Some("CN=admin".to_owned()),
        };
        assert_eq!(caller.to_string(), "CN=admin");
        assert_eq!(AdminCaller::default().to_string(), "-");
    }
}
