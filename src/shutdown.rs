//! A shutdown signal that any number of tasks can wait for.

use tokio::sync::watch;

/// Fires the shutdown; dropping it fires it too.
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Completes when the trigger fires. Clone it for every task that must stop.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (sender, receiver) = watch::channel(false);
    (ShutdownTrigger(sender), Shutdown(receiver))
}

impl ShutdownTrigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

impl Drop for ShutdownTrigger {
    fn drop(&mut self) {
        self.fire();
    }
}

impl Shutdown {
    pub async fn wait(mut self) {
        // An error means the trigger is gone, which also means shut down.
        let _ = self.0.wait_for(|fired| *fired).await;
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn os_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {},
                    _ = terminate.recv() => {},
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
