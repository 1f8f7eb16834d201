//! The background task that deletes expired objects (Dex runs it every 5 minutes).

use std::future::Future;
use std::time::Duration;

use super::{SharedStorage, blocking};

/// Runs `garbage_collect(clock())` on the blocking pool once at start and then every
/// `interval` (clamped to at least 1 ms), until `shutdown` completes. Counts are
/// logged at info when something was removed; failures at warn (the next round
/// tries again). A collection in progress when `shutdown` fires is abandoned from
/// the task's point of view: it finishes on the blocking pool (it is one short
/// transaction) but the task returns without waiting for it.
pub fn spawn_garbage_collector(
    storage: SharedStorage,
    interval: Duration,
    clock: crate::Clock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
        // After a stall (suspend, overload) run once, not a burst of catch-up rounds.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                _ = ticker.tick() => {}
            }
            let now = clock();
            let collect = blocking(&storage, move |s| s.garbage_collect(now));
            tokio::select! {
                biased;
                () = &mut shutdown => return,
                result = collect => match result {
                    Ok(counts) if counts.total() > 0 => tracing::info!(
                        auth_requests = counts.auth_requests,
                        auth_codes = counts.auth_codes,
                        device_requests = counts.device_requests,
                        device_tokens = counts.device_tokens,
                        revoked_access_tokens = counts.revoked_access_tokens,
                        "garbage collection removed expired objects"
                    ),
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "garbage collection failed"),
                },
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::Arc;
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::storage::StorageError;
    use crate::storage::conformance::fixtures;
    use crate::storage::memory::MemoryStorage;

    const TEST_TIMEOUT: Duration = Duration::from_secs(10);

    async fn wait_until_gone(storage: &SharedStorage, id: &str) {
        let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
        while storage.get_auth_code(id) != Err(StorageError::NotFound) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "auth code {id} was not collected"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn collects_expired_objects_every_interval_and_stops_on_shutdown() {
        let storage: SharedStorage = Arc::new(MemoryStorage::new());
        let expired = UNIX_EPOCH + Duration::from_secs(1_000);
        storage
            .create_auth_code(&fixtures::auth_code("first", expired))
            .unwrap();
        let live = SystemTime::now() + Duration::from_secs(3_600);
        storage
            .create_auth_code(&fixtures::auth_code("live", live))
            .unwrap();

        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = spawn_garbage_collector(
            Arc::clone(&storage),
            Duration::from_millis(20),
            Arc::new(SystemTime::now),
            async {
                let _ = stopped.await;
            },
        );

        wait_until_gone(&storage, "first").await;
        // A later round collects what expired after the first one.
        storage
            .create_auth_code(&fixtures::auth_code("second", expired))
            .unwrap();
        wait_until_gone(&storage, "second").await;
        assert_eq!(
            storage.get_auth_code("live").unwrap().expiry,
            live,
            "an unexpired code must survive"
        );

        stop.send(()).unwrap();
        tokio::time::timeout(TEST_TIMEOUT, task)
            .await
            .expect("collector did not stop on shutdown")
            .unwrap();
    }

    #[tokio::test]
    async fn shutdown_does_not_wait_for_the_next_interval() {
        let storage: SharedStorage = Arc::new(MemoryStorage::new());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = spawn_garbage_collector(
            storage,
            Duration::from_secs(24 * 3600),
            Arc::new(SystemTime::now),
            async {
                let _ = stopped.await;
            },
        );
        // Let the first round run so the task is parked on the day-long interval.
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.send(()).unwrap();
        tokio::time::timeout(TEST_TIMEOUT, task)
            .await
            .expect("collector slept through shutdown")
            .unwrap();
    }
}
