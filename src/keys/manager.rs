//! [`KeyManager`]: keeps the [`KeySet`] in step with storage, rotates when due,
//! and runs the periodic check.

use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::{KeyError, KeyPolicy, KeySet, generate_key, rotate};
use crate::storage::{Keys, SharedStorage, Storage, StorageError, StoredSigningKey};

/// How often the rotation task checks storage, as in Dex.
pub const ROTATION_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// How long a request that needs the signing key waits for the first one to be
/// generated (a fresh database) before it fails.
pub const FIRST_KEY_WAIT: Duration = Duration::from_secs(10);

/// Pause between attempts when generating or storing the first keys fails.
const FIRST_KEY_RETRY: Duration = Duration::from_secs(1);

/// Storage-backed signing keys for one process.
///
/// Several processes may share one storage: every change goes through
/// [`Storage::update_keys`], whose updater re-applies [`rotate`] to what storage
/// holds at that moment, so racing rotations agree on one result and a process
/// that finds the work already done simply adopts it.
pub struct KeyManager {
    storage: SharedStorage,
    policy: KeyPolicy,
    /// `None` only between the start on an empty storage and the first keys.
    state: RwLock<Option<State>>,
    /// Flips to `true` once `state` holds keys (it never goes back).
    loaded: tokio::sync::watch::Sender<bool>,
    /// Serializes `refresh` so an older result never replaces a newer one.
    refresh_lock: tokio::sync::Mutex<()>,
}

struct State {
    /// The stored row the key set was built from, to notice changes.
    keys: Keys,
    set: Arc<KeySet>,
}

impl KeyManager {
    /// Loads the keys from storage, creating or rotating them first if due.
    pub async fn start(
        storage: SharedStorage,
        policy: KeyPolicy,
        now: SystemTime,
    ) -> Result<Arc<Self>, KeyError> {
        let manager = Self::empty(storage, policy);
        manager.refresh(now).await?;
        Ok(manager)
    }

    /// Like [`KeyManager::start`], but on an empty storage (a first start) it
    /// returns at once and generates the keys in the background (a few tens to
    /// hundreds of milliseconds for RSA), so the server can listen meanwhile:
    /// what needs a key waits for it ([`KeyManager::keyset`]). Stored keys are
    /// loaded (and rotated if due) before it returns, as by `start`.
    pub async fn start_in_background(
        storage: SharedStorage,
        policy: KeyPolicy,
        clock: crate::Clock,
    ) -> Result<Arc<Self>, KeyError> {
        let probe = Arc::clone(&storage);
        let stored = crate::blocking::run(move || probe.get_keys())
            .await
            .map_err(|error| KeyError::Task(error.to_string()))??;
        if stored.is_some() {
            return Self::start(storage, policy, clock()).await;
        }
        let manager = Self::empty(storage, policy);
        let generating = Arc::clone(&manager);
        tokio::spawn(async move {
            while let Err(error) = generating.refresh(clock()).await {
                tracing::error!(%error, "generating the first signing keys failed; retrying");
                tokio::time::sleep(FIRST_KEY_RETRY).await;
            }
        });
        Ok(manager)
    }

    pub(super) fn empty(storage: SharedStorage, policy: KeyPolicy) -> Arc<Self> {
        Arc::new(Self {
            storage,
            policy,
            state: RwLock::new(None),
            loaded: tokio::sync::watch::Sender::new(false),
            refresh_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The current key set, waiting (up to [`FIRST_KEY_WAIT`]) for the first
    /// keys of a fresh start. Otherwise cheap: an `Arc` clone under a briefly
    /// held read lock.
    pub async fn keyset(&self) -> Result<Arc<KeySet>, KeyError> {
        self.keyset_within(FIRST_KEY_WAIT).await
    }

    pub(super) async fn keyset_within(&self, limit: Duration) -> Result<Arc<KeySet>, KeyError> {
        if let Some(set) = self.loaded() {
            return Ok(set);
        }
        let mut loaded = self.loaded.subscribe();
        match tokio::time::timeout(limit, loaded.wait_for(|loaded| *loaded)).await {
            Ok(Ok(_)) => self
                .loaded()
                .ok_or_else(|| KeyError::Task("signing keys vanished".to_owned())),
            _ => Err(KeyError::NotReady),
        }
    }

    /// The current key set, or `None` while the first keys are being generated.
    pub fn loaded(&self) -> Option<Arc<KeySet>> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|state| Arc::clone(&state.set))
    }

    /// The algorithm tokens are signed with: the current key's, or the
    /// configured one before the first key exists.
    pub fn algorithm(&self) -> super::SigningAlgorithm {
        self.loaded()
            .map_or(self.policy.algorithm, |set| set.algorithm())
    }

    pub fn policy(&self) -> &KeyPolicy {
        &self.policy
    }

    /// Rotates if due at `now`; otherwise reloads if storage changed under us
    /// (another process rotated). Returns whether the key set changed. On error
    /// the previous key set stays in use.
    pub async fn refresh(&self, now: SystemTime) -> Result<bool, KeyError> {
        let _serial = self.refresh_lock.lock().await;
        let known = self
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|state| state.keys.clone());
        let old_kid = known.as_ref().map(|keys| keys.signing_key.kid.clone());
        let Some((keys, set)) = sync_off_thread(&self.storage, self.policy, now, known).await?
        else {
            return Ok(false);
        };
        if old_kid.is_none() {
            tracing::info!(
                kid = set.kid(),
                algorithm = %set.algorithm(),
                next_kid = next_kid(&keys),
                "signing keys loaded"
            );
        } else if old_kid.as_deref() != Some(set.kid()) {
            tracing::info!(
                old_kid = old_kid.as_deref().unwrap_or_default(),
                kid = set.kid(),
                algorithm = %set.algorithm(),
                next_kid = next_kid(&keys),
                "signing key rotated"
            );
        } else {
            tracing::debug!(kid = set.kid(), "signing keys reloaded");
        }
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = Some(State {
            keys,
            set: Arc::new(set),
        });
        self.loaded.send_replace(true);
        Ok(true)
    }

    /// Checks every [`ROTATION_CHECK_INTERVAL`] (first check one interval from
    /// now; [`KeyManager::start`] did the initial one). Errors are logged and the
    /// next check tries again. Ends when `shutdown` completes.
    pub fn spawn_rotation_task(
        self: &Arc<Self>,
        clock: crate::Clock,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        self.spawn_rotation_task_every(ROTATION_CHECK_INTERVAL, clock, shutdown)
    }

    /// [`KeyManager::spawn_rotation_task`] with another interval (tests).
    pub fn spawn_rotation_task_every(
        self: &Arc<Self>,
        every: Duration,
        clock: crate::Clock,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let manager = Arc::clone(self);
        tokio::spawn(async move {
            tokio::pin!(shutdown);
            let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = &mut shutdown => break,
                    _ = ticks.tick() => {
                        if let Err(err) = manager.refresh(clock()).await {
                            tracing::error!(error = %err, "signing key rotation check failed");
                        }
                    }
                }
            }
        })
    }
}

fn next_kid(keys: &Keys) -> Option<&str> {
    keys.next_key.as_ref().map(|next| next.kid.as_str())
}

/// Runs [`sync`] through the blocking gate: RSA generation and SQLite are slow.
async fn sync_off_thread(
    storage: &SharedStorage,
    policy: KeyPolicy,
    now: SystemTime,
    known: Option<Keys>,
) -> Result<Option<(Keys, KeySet)>, KeyError> {
    let storage = Arc::clone(storage);
    crate::blocking::run(move || sync(storage.as_ref(), &policy, now, known.as_ref()))
        .await
        .map_err(|error| KeyError::Task(error.to_string()))?
}

/// Brings storage up to date at `now` and returns the stored keys with their
/// parsed set, or `None` if they equal `known`.
///
/// Keys are generated before the storage transaction, from a snapshot, so the
/// slow part never runs while a backend holds its write lock; the updater then
/// re-applies the rule to the row as it is inside the transaction and takes the
/// pre-generated keys it needs (generating only if the row changed in between).
/// If the row no longer needs a rotation (another process did it), the updater
/// writes it back unchanged.
fn sync(
    storage: &dyn Storage,
    policy: &KeyPolicy,
    now: SystemTime,
    known: Option<&Keys>,
) -> Result<Option<(Keys, KeySet)>, KeyError> {
    let snapshot = storage.get_keys()?;
    // First start: the current and the next key are both needed; generating them
    // side by side halves the wait (RSA-2048 generation dominates start-up).
    let mut spare = if snapshot.is_none() {
        generate_two(policy.algorithm)?
    } else {
        Vec::new()
    };
    let mut pool: Vec<StoredSigningKey> = Vec::new();
    let planned = rotate(snapshot.clone(), now, policy, &mut |algorithm| {
        let key = match spare.iter().position(|k| k.algorithm == algorithm.as_str()) {
            Some(index) => spare.swap_remove(index),
            None => generate_key(algorithm)?,
        };
        pool.push(key.clone());
        Ok(key)
    })?;

    let keys = match (planned, snapshot) {
        (None, Some(stored)) => stored,
        _ => {
            let mut failure = None;
            let written = storage.update_keys(&mut |fresh| {
                let mut take = |algorithm: super::SigningAlgorithm| match pool
                    .iter()
                    .position(|k| k.algorithm == algorithm.as_str())
                {
                    Some(index) => Ok(pool.swap_remove(index)),
                    None => generate_key(algorithm),
                };
                match rotate(fresh.clone(), now, policy, &mut take) {
                    Ok(Some(updated)) => Ok(updated),
                    Ok(None) => fresh.ok_or(StorageError::NotFound),
                    Err(err) => {
                        let message = err.to_string();
                        failure = Some(err);
                        Err(StorageError::Rejected(message))
                    }
                }
            });
            match (written, failure) {
                (Ok(keys), _) => keys,
                (Err(_), Some(err)) => return Err(err),
                (Err(err), None) => return Err(err.into()),
            }
        }
    };
    if known == Some(&keys) {
        return Ok(None);
    }
    let set = KeySet::from_keys(&keys)?;
    Ok(Some((keys, set)))
}

/// Two fresh keys of `algorithm`, generated on two threads.
fn generate_two(algorithm: super::SigningAlgorithm) -> Result<Vec<StoredSigningKey>, KeyError> {
    std::thread::scope(|scope| {
        let other = scope.spawn(|| generate_key(algorithm));
        let first = generate_key(algorithm)?;
        let second = other
            .join()
            .map_err(|_| KeyError::Task("key generation thread panicked".to_owned()))??;
        Ok(vec![first, second])
    })
}
