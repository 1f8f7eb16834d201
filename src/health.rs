//! The health checker: a storage round trip and a usable signing key, checked in
//! the background so probes never wait on the database.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::keys::{KeyManager, ROTATION_CHECK_INTERVAL};
use crate::storage::{self, AuthRequest, Claims, Pkce, SharedStorage, StorageError};

/// How often the background check runs (Dex: 15 s).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub healthy: bool,
    /// A shutdown has begun: the server finishes the requests it has and must
    /// get no new ones (readiness fails first, so load balancers stop sending).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    pub storage: CheckResult,
    pub signing_key: CheckResult,
    /// Seconds since the Unix epoch of the check.
    pub checked_at: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CheckResult {
    fn from_result(result: Result<(), String>) -> Self {
        match result {
            Ok(()) => Self {
                ok: true,
                error: None,
            },
            Err(error) => Self {
                ok: false,
                error: Some(error),
            },
        }
    }
}

pub struct HealthChecker {
    storage: SharedStorage,
    keys: Arc<KeyManager>,
    latest: RwLock<HealthReport>,
    draining: AtomicBool,
}

impl HealthChecker {
    pub fn new(storage: SharedStorage, keys: Arc<KeyManager>) -> Self {
        let unknown = CheckResult {
            ok: false,
            error: Some("not checked yet".to_owned()),
        };
        Self {
            storage,
            keys,
            draining: AtomicBool::new(false),
            latest: RwLock::new(HealthReport {
                healthy: false,
                draining: false,
                storage: unknown.clone(),
                signing_key: unknown,
                checked_at: 0,
            }),
        }
    }

    /// The last check's report — unless storage has since found the database
    /// unreachable, which readiness must report at once, not at the next check.
    pub fn latest(&self) -> HealthReport {
        let mut report = match self.latest.read() {
            Ok(report) => report.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        if let Some(reason) = self.storage.unavailable() {
            report.healthy = false;
            report.storage = CheckResult {
                ok: false,
                error: Some(format!("storage unavailable: {reason}")),
            };
        }
        if self.draining.load(Ordering::SeqCst) {
            report.healthy = false;
            report.draining = true;
        }
        report
    }

    /// From now on readiness fails: a shutdown has begun.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Runs every check once and records the result.
    pub async fn check(&self, now: SystemTime) -> HealthReport {
        let storage = CheckResult::from_result(self.check_storage(now).await);
        let signing_key = CheckResult::from_result(self.check_signing_key(now).await);
        let report = HealthReport {
            healthy: storage.ok && signing_key.ok,
            draining: false,
            storage,
            signing_key,
            checked_at: now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        match self.latest.write() {
            Ok(mut latest) => *latest = report.clone(),
            Err(poisoned) => *poisoned.into_inner() = report.clone(),
        }
        report
    }

    /// Creates and deletes a short-lived auth request, like Dex's storage check.
    async fn check_storage(&self, now: SystemTime) -> Result<(), String> {
        let id = format!("healthcheck-{}", crate::crypto::random_token(12));
        let probe = AuthRequest {
            id: id.clone(),
            client_id: String::new(),
            response_types: Vec::new(),
            scopes: Vec::new(),
            redirect_uri: String::new(),
            nonce: String::new(),
            state: String::new(),
            force_approval_prompt: false,
            logged_in: false,
            claims: Claims::default(),
            connector_id: String::new(),
            connector_data: None,
            expiry: now + Duration::from_secs(60),
            pkce: Pkce::default(),
            hmac_key: Vec::new(),
            auth_time: None,
            browser_binding: String::new(),
            session_id: String::new(),
        };
        storage::blocking(&self.storage, move |s| {
            s.create_auth_request(&probe)?;
            s.delete_auth_request(&id)
        })
        .await
        .map_err(|e: StorageError| format!("storage round trip failed: {e}"))
    }

    async fn check_signing_key(&self, now: SystemTime) -> Result<(), String> {
        // A key whose rotation is overdue by more than a few check intervals means
        // the rotation task is stuck.
        // Before the first keys of a fresh start exist, there is nothing overdue.
        let overdue = |keys: &KeyManager| {
            keys.loaded()
                .is_some_and(|set| set.next_rotation() + 4 * ROTATION_CHECK_INTERVAL < now)
        };
        if !overdue(&self.keys) {
            return Ok(());
        }
        // Or the wall clock stepped forward past the rotation time since the last
        // rotation check: rotate now (once; it is the same serialized check the
        // rotation task runs) rather than report a healthy process as broken.
        if let Err(error) = self.keys.refresh(now).await {
            return Err(format!("signing key rotation failed: {error}"));
        }
        if overdue(&self.keys) {
            return Err("signing key rotation is overdue".to_owned());
        }
        Ok(())
    }

    /// Re-checks every [`CHECK_INTERVAL`] until `shutdown` completes.
    pub fn spawn(
        self: Arc<Self>,
        clock: crate::Clock,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            tokio::pin!(shutdown);
            let mut ticker = tokio::time::interval(CHECK_INTERVAL);
            loop {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = ticker.tick() => {
                        let report = self.check(clock()).await;
                        if !report.healthy {
                            tracing::warn!(?report, "health check failed");
                        }
                    }
                }
            }
        })
    }
}
