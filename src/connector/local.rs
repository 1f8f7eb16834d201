//! The local password DB (`enablePasswordDB` + `staticPasswords`), connector id `local`.
//!
//! Behaves as Dex's: lookup by e-mail, case-insensitive; bcrypt hashes (`$2a$`/`$2b$`/
//! `$2y$`, or the legacy base64 of one); a hash whose cost is outside 10..=16 makes that
//! user's logins fail with an error (checked at login, as Dex does); refresh re-reads
//! the entry, so a removed user cannot refresh.
//!
//! bcrypt costs ~70 ms of CPU per check at cost 10, so it runs on tokio's blocking pool,
//! never on the async workers, and only through one [`Gate`]: at most one check per core
//! at a time and a bounded queue, so a flood of logins cannot take every core or pile up
//! blocking threads. An unknown e-mail still pays for one bcrypt check, so the
//! response time does not tell which e-mails exist.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;

use super::{
    ConnectorError, Identity, LOCAL_CONNECTOR_ID, LOCAL_CONNECTOR_KIND, PasswordConnector, Scopes,
};
use crate::config::settings::Password;
use crate::throttle::{Gate, GateFull};

/// Dex refuses hashes cheaper than its default cost or dearer than this at login.
pub const MIN_BCRYPT_COST: u32 = 10;
pub const MAX_BCRYPT_COST: u32 = 16;

/// bcrypt only looks at the first 72 bytes; Go's implementation refuses longer
/// passwords outright, so we treat them as wrong instead of truncating.
const MAX_PASSWORD_BYTES: usize = 72;

#[derive(Clone)]
struct Entry {
    /// Normalised to the `$2x$` form.
    hash: String,
    cost: u32,
    user: Password,
}

pub struct PasswordDb {
    by_email: HashMap<String, Entry>,
    /// Every bcrypt check runs through this gate.
    gate: Arc<Gate>,
    /// Checked against when the e-mail is unknown, to spend the same time as a real check.
    decoy_hash: Option<String>,
}

impl std::fmt::Debug for PasswordDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordDb")
            .field("users", &self.by_email.len())
            .finish_non_exhaustive()
    }
}

impl PasswordDb {
    /// Build from the resolved static passwords. A malformed hash is an error naming the
    /// entry; on duplicate e-mails the last entry wins (Dex only logs those).
    pub fn new(passwords: &[Password], gate: Arc<Gate>) -> Result<Self, ConnectorError> {
        let mut by_email = HashMap::with_capacity(passwords.len());
        let mut decoy_hash = None;
        for (index, user) in passwords.iter().enumerate() {
            let bad = |message: String| ConnectorError::Config {
                id: LOCAL_CONNECTOR_ID.to_owned(),
                kind: LOCAL_CONNECTOR_KIND.to_owned(),
                message: format!("staticPasswords[{index}] ({}): {message}", user.email),
            };
            let hash = normalise_hash(&user.hash).map_err(bad)?;
            let cost = bcrypt::HashParts::from_str(&hash)
                .map_err(|e| bad(format!("malformed bcrypt hash: {e}")))?
                .get_cost();
            if decoy_hash.is_none() && (MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
                decoy_hash = Some(hash.clone());
            }
            by_email.insert(
                user.email.to_lowercase(),
                Entry {
                    hash,
                    cost,
                    user: user.clone(),
                },
            );
        }
        Ok(PasswordDb {
            by_email,
            gate,
            decoy_hash,
        })
    }

    fn identity(user: &Password, connector_data: Option<Vec<u8>>) -> Identity {
        Identity {
            user_id: user.user_id.clone(),
            username: display_name(user).to_owned(),
            preferred_username: user.preferred_username.clone(),
            email: user.email.clone(),
            email_verified: user.email_verified,
            groups: user.groups.clone(),
            connector_data,
        }
    }
}

/// The `name` claim: `name`, falling back to `username`, as Dex.
fn display_name(user: &Password) -> &str {
    if user.name.is_empty() {
        &user.username
    } else {
        &user.name
    }
}

/// Accept a bcrypt hash as is, or Dex's legacy base64 encoding of one.
pub(crate) fn normalised_hash(raw: &str) -> Result<String, String> {
    normalise_hash(raw)
}

fn normalise_hash(raw: &str) -> Result<String, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("no password hash provided".to_owned());
    }
    if raw.starts_with('$') {
        return Ok(raw.to_owned());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|_| "malformed bcrypt hash: neither a bcrypt hash nor base64 of one".to_owned())?;
    String::from_utf8(decoded)
        .map_err(|_| "malformed bcrypt hash: base64 does not decode to a bcrypt hash".to_owned())
}

/// One bcrypt check on the blocking pool, through the gate.
async fn verify_off_thread(
    gate: &Gate,
    password: &str,
    hash: String,
) -> Result<bool, ConnectorError> {
    let password = password.to_owned();
    gate.run(move || bcrypt::verify(password.as_bytes(), &hash))
        .await
        .map_err(|GateFull| ConnectorError::Busy)?
        .map_err(|e| ConnectorError::Internal(format!("password check task failed: {e}")))?
        .map_err(|e| ConnectorError::Internal(format!("password check failed: {e}")))
}

#[async_trait]
impl PasswordConnector for PasswordDb {
    fn prompt(&self) -> &str {
        "Email Address"
    }

    async fn login(
        &self,
        _scopes: &Scopes,
        username: &str,
        password: &str,
    ) -> Result<Option<Identity>, ConnectorError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Ok(None);
        }
        match self.by_email.get(&username.to_lowercase()) {
            Some(entry) => {
                if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&entry.cost) {
                    return Err(ConnectorError::Internal(format!(
                        "password hash for {} has bcrypt cost {}, outside the allowed {MIN_BCRYPT_COST}..={MAX_BCRYPT_COST}",
                        entry.user.email, entry.cost
                    )));
                }
                let ok = verify_off_thread(&self.gate, password, entry.hash.clone()).await?;
                Ok(ok.then(|| Self::identity(&entry.user, None)))
            }
            None => {
                if let Some(decoy) = &self.decoy_hash {
                    // The result is irrelevant: an unknown user never logs in.
                    verify_off_thread(&self.gate, password, decoy.clone()).await?;
                }
                Ok(None)
            }
        }
    }

    fn supports_refresh(&self) -> bool {
        true
    }

    async fn refresh(
        &self,
        _scopes: &Scopes,
        identity: Identity,
    ) -> Result<Identity, ConnectorError> {
        let gone = || ConnectorError::Refresh(format!("user {:?} not found", identity.email));
        let entry = self
            .by_email
            .get(&identity.email.to_lowercase())
            .ok_or_else(gone)?;
        // Removed, then re-added under the same e-mail as somebody else.
        if entry.user.user_id != identity.user_id {
            return Err(gone());
        }
        Ok(Identity {
            // E-mail is the key and the user id did not change: keep those as they were.
            user_id: identity.user_id.clone(),
            email: identity.email.clone(),
            ..Self::identity(&entry.user, identity.connector_data.clone())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn test_gate() -> Arc<Gate> {
        Arc::new(Gate::new(2, 16))
    }

    /// bcrypt("password", cost 10).
    const HASH_PASSWORD: &str = "$2a$10$lmjblfX2EhXkR8jR0WMofOtf3Buea/klAEG0pwqul5aaXEsQFNw2q";
    /// bcrypt("hunter2", cost 10).
    const HASH_HUNTER2: &str = "$2b$10$NLJdHybDr3sgJLLDzrkDoegf5WjIVACGC3dc7ByRvqOZTWIsEGIoK";
    /// bcrypt("password", cost 4): Dex refuses this cost at login.
    const HASH_COST_4: &str = "$2y$04$gfz04fBZ3MPz3rIBPYP6OeR1GPXM2OG71m0OCybdmAYlHEC3y3//C";

    fn user(email: &str, hash: &str, user_id: &str) -> Password {
        Password {
            email: email.to_owned(),
            hash: hash.to_owned(),
            username: "admin".to_owned(),
            name: String::new(),
            preferred_username: "boss".to_owned(),
            email_verified: true,
            user_id: user_id.to_owned(),
            groups: vec!["admins".to_owned()],
        }
    }

    fn db() -> PasswordDb {
        let mut second = user("jane@example.com", HASH_HUNTER2, "u-2");
        second.name = "Jane Doe".to_owned();
        second.email_verified = false;
        second.groups = Vec::new();
        PasswordDb::new(
            &[user("admin@example.com", HASH_PASSWORD, "u-1"), second],
            test_gate(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn right_password_gives_dex_identity() {
        let db = db();
        let s = Scopes::default();
        let id = db
            .login(&s, "admin@example.com", "password")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            id,
            Identity {
                user_id: "u-1".into(),
                username: "admin".into(),
                preferred_username: "boss".into(),
                email: "admin@example.com".into(),
                email_verified: true,
                groups: vec!["admins".into()],
                connector_data: None,
            }
        );
        let jane = db
            .login(&s, "jane@example.com", "hunter2")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(jane.username, "Jane Doe", "name wins over username");
        assert!(!jane.email_verified);
        assert_eq!(db.prompt(), "Email Address");
    }

    #[tokio::test]
    async fn wrong_password_and_unknown_user_are_none() {
        let db = db();
        let s = Scopes::default();
        assert_eq!(
            db.login(&s, "admin@example.com", "hunter2").await.unwrap(),
            None
        );
        assert_eq!(db.login(&s, "admin@example.com", "").await.unwrap(), None);
        assert_eq!(
            db.login(&s, "nobody@example.com", "password")
                .await
                .unwrap(),
            None
        );
        let long = "p".repeat(73);
        assert_eq!(
            db.login(&s, "admin@example.com", &long).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn email_lookup_ignores_case() {
        let db = db();
        let id = db
            .login(&Scopes::default(), "Admin@EXAMPLE.com", "password")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(id.user_id, "u-1");
    }

    #[tokio::test]
    async fn legacy_base64_hash_is_accepted() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(HASH_PASSWORD);
        let db = PasswordDb::new(&[user("a@b.c", &encoded, "u")], test_gate()).unwrap();
        assert!(
            db.login(&Scopes::default(), "a@b.c", "password")
                .await
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn malformed_or_missing_hash_names_the_entry() {
        let e = PasswordDb::new(&[user("a@b.c", "not a hash!", "u")], test_gate()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("staticPasswords[0]") && msg.contains("a@b.c"),
            "{msg}"
        );
        assert!(msg.contains("malformed bcrypt hash"), "{msg}");
        let e = PasswordDb::new(&[user("a@b.c", "$2a$10$short", "u")], test_gate()).unwrap_err();
        assert!(e.to_string().contains("malformed bcrypt hash"), "{e}");
        let e = PasswordDb::new(&[user("x@y.z", "", "u")], test_gate()).unwrap_err();
        assert!(e.to_string().contains("no password hash provided"), "{e}");
    }

    #[tokio::test]
    async fn hash_cost_outside_dex_bounds_fails_login() {
        let db = PasswordDb::new(&[user("a@b.c", HASH_COST_4, "u")], test_gate()).unwrap();
        let e = db
            .login(&Scopes::default(), "a@b.c", "password")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("cost 4"), "{e}");
    }

    #[tokio::test]
    async fn refresh_reflects_current_entry_and_refuses_removed_user() {
        let s = Scopes::default();
        let before = db()
            .login(&s, "admin@example.com", "password")
            .await
            .unwrap()
            .unwrap();
        let with_data = Identity {
            connector_data: Some(b"kept".to_vec()),
            ..before.clone()
        };

        let mut changed = user("admin@example.com", HASH_PASSWORD, "u-1");
        changed.name = "Administrator".into();
        changed.groups = vec!["admins".into(), "ops".into()];
        let reloaded = PasswordDb::new(&[changed], test_gate()).unwrap();
        let after = reloaded.refresh(&s, with_data.clone()).await.unwrap();
        assert_eq!(after.username, "Administrator");
        assert_eq!(after.groups, vec!["admins".to_owned(), "ops".to_owned()]);
        assert_eq!(after.user_id, "u-1");
        assert_eq!(after.connector_data.as_deref(), Some(&b"kept"[..]));

        let removed = PasswordDb::new(
            &[user("jane@example.com", HASH_HUNTER2, "u-2")],
            test_gate(),
        )
        .unwrap();
        assert!(matches!(
            removed.refresh(&s, before.clone()).await,
            Err(ConnectorError::Refresh(_))
        ));

        let replaced = PasswordDb::new(
            &[user("admin@example.com", HASH_PASSWORD, "other")],
            test_gate(),
        )
        .unwrap();
        assert!(matches!(
            replaced.refresh(&s, before).await,
            Err(ConnectorError::Refresh(_))
        ));
        assert!(reloaded.supports_refresh());
    }

    /// On a single-threaded runtime a bcrypt check done inline would freeze every other
    /// task until it finished; on the blocking pool the runtime keeps ticking meanwhile.
    #[test]
    fn bcrypt_runs_off_the_async_worker() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let db = db();
            let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let counter = ticks.clone();
            let ticker = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
            let found = db
                .login(&Scopes::default(), "admin@example.com", "password")
                .await
                .unwrap();
            let during = ticks.load(std::sync::atomic::Ordering::Relaxed);
            ticker.abort();
            assert!(found.is_some());
            assert!(during > 0, "the runtime made no progress during bcrypt");
        });
    }
}
