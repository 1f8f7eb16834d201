//! The one way onto tokio's blocking pool: storage calls (SQLite behind one
//! connection, PostgreSQL through a synchronous pool), signatures, key generation
//! and password hashing all go through [`run`], at most a few at a time.
//!
//! Without the gate, 64 concurrent `/token` requests become 64 blocking threads
//! convoying on the storage mutex: each hand-off is a context switch, and `/token`
//! reached only ~0.1 × the ES256 signature ceiling.

use std::sync::{Arc, OnceLock};

use tokio::sync::Semaphore;

/// Why [`run`] did not return the call's value.
#[derive(Debug, thiserror::Error)]
pub enum BlockingError {
    /// The gate is closed: the call was not run, rather than run ungated.
    #[error("the blocking-work gate is closed; the call was not run")]
    GateClosed,
    #[error("blocking task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Runs `call` on the blocking pool once one of 2 × cores permits is free.
pub async fn run<T, F>(call: F) -> Result<T, BlockingError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    static GATE: OnceLock<Arc<Semaphore>> = OnceLock::new();
    let gate = GATE.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Arc::new(Semaphore::new(2 * cores))
    });
    run_gated(gate, call).await
}

async fn run_gated<T, F>(gate: &Arc<Semaphore>, call: F) -> Result<T, BlockingError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let permit = Arc::clone(gate).acquire_owned().await.map_err(|_| {
        tracing::error!("the blocking-work gate is closed; refusing to run without it");
        BlockingError::GateClosed
    })?;
    // The permit moves into the task: a caller that gives up (a client that
    // disconnects) cannot free it while the call still runs.
    Ok(tokio::task::spawn_blocking(move || {
        let _permit = permit;
        call()
    })
    .await?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_closed_gate_fails_closed_without_running_the_call() {
        let gate = Arc::new(Semaphore::new(1));
        gate.close();
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let result = run_gated(&gate, move || flag.store(true, Ordering::SeqCst)).await;
        assert!(matches!(result, Err(BlockingError::GateClosed)));
        assert!(!ran.load(Ordering::SeqCst));

        let open = Arc::new(Semaphore::new(1));
        assert_eq!(run_gated(&open, || 7).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_keeps_the_permit_taken_until_the_call_ends() {
        let gate = Arc::new(Semaphore::new(1));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (finish_tx, finish_rx) = std::sync::mpsc::channel::<()>();
        let call = run_gated(&gate, move || {
            started_tx.send(()).unwrap();
            finish_rx.recv().unwrap();
        });
        // Poll the call until it runs, then drop the caller.
        tokio::select! {
            _ = call => panic!("the call cannot finish before it is told to"),
            _ = tokio::task::spawn_blocking(move || started_rx.recv().unwrap()) => {}
        }
        assert_eq!(gate.available_permits(), 0, "still running: permit held");
        finish_tx.send(()).unwrap();
        for _ in 0..200 {
            if gate.available_permits() == 1 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        panic!("the permit was never given back");
    }
}
