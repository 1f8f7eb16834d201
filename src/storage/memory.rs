//! In-memory storage: maps behind one mutex. Everything is lost on restart,
//! including signing keys, exactly as with Dex's `memory` storage.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use super::*;

#[derive(Default)]
struct Tables {
    auth_requests: BTreeMap<String, AuthRequest>,
    auth_codes: BTreeMap<String, AuthCode>,
    redeemed_codes: BTreeMap<String, RedeemedCode>,
    refresh_tokens: BTreeMap<String, RefreshToken>,
    offline_sessions: BTreeMap<(String, String), OfflineSession>,
    keys: Option<Keys>,
    device_requests: BTreeMap<String, DeviceRequest>,
    device_tokens: BTreeMap<String, DeviceToken>,
    browser_sessions: BTreeMap<String, BrowserSession>,
    user_identities: BTreeMap<(String, String), UserIdentity>,
    logout_deliveries: BTreeMap<String, LogoutDelivery>,
    revoked_access_tokens: BTreeMap<String, RevokedAccessTokens>,
    api_clients: BTreeMap<String, ApiClient>,
    api_passwords: BTreeMap<String, ApiPassword>,
}

#[derive(Default)]
pub struct MemoryStorage {
    tables: Mutex<Tables>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> StorageResult<MutexGuard<'_, Tables>> {
        self.tables
            .lock()
            .map_err(|_| StorageError::Backend("memory storage lock poisoned".to_owned()))
    }
}

fn create<K: Ord, V: Clone>(map: &mut BTreeMap<K, V>, key: K, value: &V) -> StorageResult<()> {
    if map.contains_key(&key) {
        return Err(StorageError::AlreadyExists);
    }
    map.insert(key, value.clone());
    Ok(())
}

fn get<K: Ord + ?Sized, V: Clone>(map: &BTreeMap<String, V>, key: &K) -> StorageResult<V>
where
    String: std::borrow::Borrow<K>,
{
    map.get(key).cloned().ok_or(StorageError::NotFound)
}

fn update<K: Ord, V: Clone>(
    map: &mut BTreeMap<K, V>,
    key: &K,
    updater: Updater<'_, V>,
) -> StorageResult<V> {
    let current = map.get(key).cloned().ok_or(StorageError::NotFound)?;
    let updated = updater(current)?;
    map.insert_entry_clone(key, &updated);
    Ok(updated)
}

fn delete<K: Ord, V>(map: &mut BTreeMap<K, V>, key: &K) -> StorageResult<()> {
    map.remove(key).map(|_| ()).ok_or(StorageError::NotFound)
}

trait InsertClone<K, V> {
    fn insert_entry_clone(&mut self, key: &K, value: &V);
}

impl<K: Ord, V: Clone> InsertClone<K, V> for BTreeMap<K, V> {
    fn insert_entry_clone(&mut self, key: &K, value: &V) {
        if let Some(slot) = self.get_mut(key) {
            *slot = value.clone();
        }
    }
}

fn expire<V>(
    map: &mut BTreeMap<String, V>,
    now: SystemTime,
    expiry: impl Fn(&V) -> SystemTime,
) -> u64 {
    let before = map.len();
    map.retain(|_, v| expiry(v) >= now);
    (before - map.len()) as u64
}

impl Storage for MemoryStorage {
    fn create_auth_request(&self, request: &AuthRequest) -> StorageResult<()> {
        create(&mut self.lock()?.auth_requests, request.id.clone(), request)
    }
    fn get_auth_request(&self, id: &str) -> StorageResult<AuthRequest> {
        get(&self.lock()?.auth_requests, id)
    }
    fn update_auth_request(
        &self,
        id: &str,
        updater: Updater<'_, AuthRequest>,
    ) -> StorageResult<AuthRequest> {
        update(&mut self.lock()?.auth_requests, &id.to_owned(), updater)
    }
    fn delete_auth_request(&self, id: &str) -> StorageResult<()> {
        delete(&mut self.lock()?.auth_requests, &id.to_owned())
    }
    fn exchange_auth_request_for_code(
        &self,
        request_id: &str,
        code: &AuthCode,
    ) -> StorageResult<()> {
        let mut t = self.lock()?;
        if !t.auth_requests.contains_key(request_id) {
            return Err(StorageError::NotFound);
        }
        create(&mut t.auth_codes, code.id.clone(), code)?;
        delete(&mut t.auth_requests, &request_id.to_owned())
    }

    fn create_auth_code(&self, code: &AuthCode) -> StorageResult<()> {
        create(&mut self.lock()?.auth_codes, code.id.clone(), code)
    }
    fn get_auth_code(&self, id: &str) -> StorageResult<AuthCode> {
        get(&self.lock()?.auth_codes, id)
    }
    fn delete_auth_code(&self, id: &str) -> StorageResult<()> {
        delete(&mut self.lock()?.auth_codes, &id.to_owned())
    }

    fn commit_grant(&self, grant: GrantWrite<'_>) -> StorageResult<()> {
        let mut t = self.lock()?;
        // Every check before the first write: a failure leaves the tables as they were.
        if let Some(redeemed) = grant.redeem {
            if !t.auth_codes.contains_key(&redeemed.id) {
                return Err(StorageError::NotFound);
            }
            if t.redeemed_codes.contains_key(&redeemed.id) {
                return Err(StorageError::AlreadyExists);
            }
        }
        let linked = match grant.refresh {
            Some(refresh) => {
                let token = refresh.token;
                if t.refresh_tokens.contains_key(&token.id) {
                    return Err(StorageError::AlreadyExists);
                }
                let key = (token.claims.user_id.clone(), token.connector_id.clone());
                let mut session = t
                    .offline_sessions
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| OfflineSession::empty(&key.0, &key.1));
                let pruned = (refresh.link)(&mut session);
                Some((token, key, session, pruned))
            }
            None => None,
        };
        if let Some(redeemed) = grant.redeem {
            t.auth_codes.remove(&redeemed.id);
            t.redeemed_codes
                .insert(redeemed.id.clone(), redeemed.clone());
        }
        if let Some((token, key, session, pruned)) = linked {
            for id in &pruned {
                t.refresh_tokens.remove(id);
            }
            t.refresh_tokens.insert(token.id.clone(), token.clone());
            t.offline_sessions.insert(key, session);
        }
        Ok(())
    }

    fn commit_login(&self, login: LoginWrite<'_>) -> StorageResult<Option<BrowserSession>> {
        login.check_replacement()?;
        let mut t = self.lock()?;
        // Every check before the first write: a failure leaves the tables as they were.
        let id = &login.request.id;
        match t.auth_requests.get(id) {
            None => return Err(StorageError::NotFound),
            Some(stored) if stored != login.request => {
                return Err(StorageError::Rejected("auth request changed".into()));
            }
            Some(_) => {}
        }
        if let RequestNext::Exchange(code) = &login.next
            && t.auth_codes.contains_key(&code.id)
        {
            return Err(StorageError::AlreadyExists);
        }
        let browser_session = match login.browser_session {
            Some(BrowserSessionWrite::Create(session)) => {
                if t.browser_sessions.contains_key(&session.id) {
                    return Err(StorageError::AlreadyExists);
                }
                Some(session.clone())
            }
            Some(BrowserSessionWrite::Update { id, updater }) => {
                let current = get(&t.browser_sessions, id)?;
                Some(updater(current)?)
            }
            None => None,
        };
        let offline = login.offline_session.map(|edit| {
            let key = (edit.user_id.to_owned(), edit.connector_id.to_owned());
            let mut session = t
                .offline_sessions
                .get(&key)
                .cloned()
                .unwrap_or_else(|| OfflineSession::empty(&key.0, &key.1));
            (edit.edit)(&mut session);
            (key, session)
        });
        match login.next {
            RequestNext::Replace(request) => {
                t.auth_requests.insert(id.clone(), request.clone());
            }
            RequestNext::Exchange(code) => {
                t.auth_requests.remove(id);
                t.auth_codes.insert(code.id.clone(), code.clone());
            }
            RequestNext::Delete => {
                t.auth_requests.remove(id);
            }
        }
        if let Some(session) = &browser_session {
            t.browser_sessions
                .insert(session.id.clone(), session.clone());
        }
        if let Some((key, session)) = offline {
            t.offline_sessions.insert(key, session);
        }
        Ok(browser_session)
    }

    fn get_redeemed_code(&self, id: &str) -> StorageResult<RedeemedCode> {
        get(&self.lock()?.redeemed_codes, id)
    }

    fn create_refresh_token(&self, token: &RefreshToken) -> StorageResult<()> {
        create(&mut self.lock()?.refresh_tokens, token.id.clone(), token)
    }
    fn get_refresh_token(&self, id: &str) -> StorageResult<RefreshToken> {
        get(&self.lock()?.refresh_tokens, id)
    }
    fn update_refresh_token(
        &self,
        id: &str,
        updater: Updater<'_, RefreshToken>,
    ) -> StorageResult<RefreshToken> {
        update(&mut self.lock()?.refresh_tokens, &id.to_owned(), updater)
    }
    fn delete_refresh_token(&self, id: &str) -> StorageResult<()> {
        delete(&mut self.lock()?.refresh_tokens, &id.to_owned())
    }
    fn list_refresh_tokens(&self) -> StorageResult<Vec<RefreshToken>> {
        Ok(self.lock()?.refresh_tokens.values().cloned().collect())
    }

    fn create_offline_session(&self, session: &OfflineSession) -> StorageResult<()> {
        let key = (session.user_id.clone(), session.connector_id.clone());
        create(&mut self.lock()?.offline_sessions, key, session)
    }
    fn get_offline_session(
        &self,
        user_id: &str,
        connector_id: &str,
    ) -> StorageResult<OfflineSession> {
        let key = (user_id.to_owned(), connector_id.to_owned());
        self.lock()?
            .offline_sessions
            .get(&key)
            .cloned()
            .ok_or(StorageError::NotFound)
    }
    fn update_offline_session(
        &self,
        user_id: &str,
        connector_id: &str,
        updater: Updater<'_, OfflineSession>,
    ) -> StorageResult<OfflineSession> {
        let key = (user_id.to_owned(), connector_id.to_owned());
        update(&mut self.lock()?.offline_sessions, &key, updater)
    }
    fn delete_offline_session(&self, user_id: &str, connector_id: &str) -> StorageResult<()> {
        let key = (user_id.to_owned(), connector_id.to_owned());
        delete(&mut self.lock()?.offline_sessions, &key)
    }

    fn get_keys(&self) -> StorageResult<Option<Keys>> {
        Ok(self.lock()?.keys.clone())
    }
    fn update_keys(&self, updater: KeysUpdater<'_>) -> StorageResult<Keys> {
        let mut tables = self.lock()?;
        let updated = updater(tables.keys.clone())?;
        tables.keys = Some(updated.clone());
        Ok(updated)
    }

    fn create_device_request(&self, request: &DeviceRequest) -> StorageResult<()> {
        create(
            &mut self.lock()?.device_requests,
            request.user_code.clone(),
            request,
        )
    }
    fn get_device_request(&self, user_code: &str) -> StorageResult<DeviceRequest> {
        get(&self.lock()?.device_requests, user_code)
    }
    fn create_device_token(&self, token: &DeviceToken) -> StorageResult<()> {
        create(
            &mut self.lock()?.device_tokens,
            token.device_code.clone(),
            token,
        )
    }
    fn get_device_token(&self, device_code: &str) -> StorageResult<DeviceToken> {
        get(&self.lock()?.device_tokens, device_code)
    }
    fn update_device_token(
        &self,
        device_code: &str,
        updater: Updater<'_, DeviceToken>,
    ) -> StorageResult<DeviceToken> {
        update(
            &mut self.lock()?.device_tokens,
            &device_code.to_owned(),
            updater,
        )
    }

    fn create_browser_session(&self, session: &BrowserSession) -> StorageResult<()> {
        create(
            &mut self.lock()?.browser_sessions,
            session.id.clone(),
            session,
        )
    }
    fn get_browser_session(&self, id: &str) -> StorageResult<BrowserSession> {
        get(&self.lock()?.browser_sessions, id)
    }
    fn update_browser_session(
        &self,
        id: &str,
        updater: Updater<'_, BrowserSession>,
    ) -> StorageResult<BrowserSession> {
        update(&mut self.lock()?.browser_sessions, &id.to_owned(), updater)
    }
    fn delete_browser_session(&self, id: &str) -> StorageResult<()> {
        delete(&mut self.lock()?.browser_sessions, &id.to_owned())
    }
    fn expired_browser_sessions(
        &self,
        now: SystemTime,
        limit: usize,
    ) -> StorageResult<Vec<BrowserSession>> {
        Ok(earliest_before(
            &self.lock()?.browser_sessions,
            now,
            limit,
            BrowserSession::expiry,
        ))
    }

    fn create_user_identity(&self, identity: &UserIdentity) -> StorageResult<()> {
        let key = (identity.user_id.clone(), identity.connector_id.clone());
        create(&mut self.lock()?.user_identities, key, identity)
    }
    fn get_user_identity(&self, user_id: &str, connector_id: &str) -> StorageResult<UserIdentity> {
        self.lock()?
            .user_identities
            .get(&(user_id.to_owned(), connector_id.to_owned()))
            .cloned()
            .ok_or(StorageError::NotFound)
    }
    fn update_user_identity(
        &self,
        user_id: &str,
        connector_id: &str,
        updater: Updater<'_, UserIdentity>,
    ) -> StorageResult<UserIdentity> {
        let key = (user_id.to_owned(), connector_id.to_owned());
        update(&mut self.lock()?.user_identities, &key, updater)
    }

    fn create_logout_delivery(&self, delivery: &LogoutDelivery) -> StorageResult<()> {
        create(
            &mut self.lock()?.logout_deliveries,
            delivery.id.clone(),
            delivery,
        )
    }
    fn update_logout_delivery(
        &self,
        id: &str,
        updater: Updater<'_, LogoutDelivery>,
    ) -> StorageResult<LogoutDelivery> {
        update(&mut self.lock()?.logout_deliveries, &id.to_owned(), updater)
    }
    fn delete_logout_delivery(&self, id: &str) -> StorageResult<()> {
        delete(&mut self.lock()?.logout_deliveries, &id.to_owned())
    }
    fn due_logout_deliveries(
        &self,
        now: SystemTime,
        limit: usize,
    ) -> StorageResult<Vec<LogoutDelivery>> {
        Ok(earliest_before(
            &self.lock()?.logout_deliveries,
            now,
            limit,
            |d| d.due,
        ))
    }

    fn revoke_access_tokens(&self, revoked: &RevokedAccessTokens) -> StorageResult<()> {
        let mut t = self.lock()?;
        let row = match t.revoked_access_tokens.remove(&revoked.key) {
            Some(existing) => existing.merged(revoked),
            None => revoked.clone(),
        };
        t.revoked_access_tokens.insert(row.key.clone(), row);
        Ok(())
    }
    fn get_revoked_access_tokens(&self, key: &str) -> StorageResult<RevokedAccessTokens> {
        get(&self.lock()?.revoked_access_tokens, key)
    }

    fn create_api_client(&self, client: &ApiClient) -> StorageResult<()> {
        create(&mut self.lock()?.api_clients, client.id.clone(), client)
    }
    fn get_api_client(&self, id: &str) -> StorageResult<ApiClient> {
        get(&self.lock()?.api_clients, id)
    }
    fn update_api_client(
        &self,
        id: &str,
        updater: Updater<'_, ApiClient>,
    ) -> StorageResult<ApiClient> {
        update(&mut self.lock()?.api_clients, &id.to_owned(), updater)
    }
    fn delete_api_client(&self, id: &str) -> StorageResult<()> {
        delete(&mut self.lock()?.api_clients, &id.to_owned())
    }
    fn list_api_clients(&self) -> StorageResult<Vec<ApiClient>> {
        Ok(self.lock()?.api_clients.values().cloned().collect())
    }
    fn create_api_password(&self, password: &ApiPassword) -> StorageResult<()> {
        let email = password.email.to_lowercase();
        let stored = ApiPassword {
            email: email.clone(),
            ..password.clone()
        };
        create(&mut self.lock()?.api_passwords, email, &stored)
    }
    fn get_api_password(&self, email: &str) -> StorageResult<ApiPassword> {
        get(&self.lock()?.api_passwords, email.to_lowercase().as_str())
    }
    fn update_api_password(
        &self,
        email: &str,
        updater: Updater<'_, ApiPassword>,
    ) -> StorageResult<ApiPassword> {
        let email = email.to_lowercase();
        let mut keep_key = |current| {
            let updated = updater(current)?;
            Ok(ApiPassword {
                email: email.clone(),
                ..updated
            })
        };
        update(&mut self.lock()?.api_passwords, &email, &mut keep_key)
    }
    fn delete_api_password(&self, email: &str) -> StorageResult<()> {
        delete(&mut self.lock()?.api_passwords, &email.to_lowercase())
    }
    fn list_api_passwords(&self) -> StorageResult<Vec<ApiPassword>> {
        Ok(self.lock()?.api_passwords.values().cloned().collect())
    }

    fn garbage_collect(&self, now: SystemTime) -> StorageResult<GcCounts> {
        let mut t = self.lock()?;
        Ok(GcCounts {
            auth_requests: expire(&mut t.auth_requests, now, |r| r.expiry),
            auth_codes: expire(&mut t.auth_codes, now, |c| c.expiry)
                + expire(&mut t.redeemed_codes, now, |c| c.expiry),
            device_requests: expire(&mut t.device_requests, now, |r| r.expiry),
            device_tokens: expire(&mut t.device_tokens, now, |d| d.expiry),
            revoked_access_tokens: expire(&mut t.revoked_access_tokens, now, |r| r.expiry),
        })
    }
}

/// Up to `limit` values whose `time` is before `now`, earliest first.
fn earliest_before<V: Clone>(
    map: &BTreeMap<String, V>,
    now: SystemTime,
    limit: usize,
    time: impl Fn(&V) -> SystemTime,
) -> Vec<V> {
    let mut due: Vec<&V> = map.values().filter(|v| time(v) < now).collect();
    due.sort_by_key(|v| time(v));
    due.into_iter().take(limit).cloned().collect()
}
