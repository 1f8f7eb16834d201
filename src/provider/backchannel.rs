//! Back-Channel Logout 1.0 deliveries and the end of expired sessions.
//!
//! Ending a session queues one delivery per client that registered a
//! `backchannelLogoutURI` (in storage, so any replica may deliver it and a
//! restart loses nothing). A background task POSTs `logout_token=<JWT>` to each,
//! without following redirects, each attempt bounded by [`ATTEMPT_TIMEOUT`]; a
//! 2xx answer ends it, a 400 (the RP refused the token) drops it, anything else
//! is retried with growing pauses for [`super::session::DELIVERY_PATIENCE`].
//! Beyond Dex HEAD, which tries once and forgets.
//!
//! The same task ends sessions past their expiry as a logout would (back-channel
//! logout, session-bound refresh tokens revoked); Dex HEAD deletes them silently.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use crate::storage::{LogoutDelivery, StorageError};

use super::session::{end_session, logout_token};
use super::{Provider, ProviderError};

/// One delivery attempt, connection included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// While an attempt is in flight its delivery is hidden from other replicas.
const LEASE: Duration = Duration::from_secs(30);
/// Deliveries (and expired sessions) handled per round.
const BATCH: usize = 64;
/// Pauses after the 1st, 2nd, … failed attempt (the last one repeats).
const BACKOFF: [u64; 6] = [2, 10, 30, 120, 600, 1800];

/// Wakes the delivery task early (after a logout) and carries its HTTP client.
pub struct Backchannel {
    notify: Notify,
    /// Built at the first delivery: building it reads and parses the system's
    /// CA certificates (tens of milliseconds), which would otherwise delay every
    /// start, and most deployments never deliver a back-channel logout.
    http: tokio::sync::OnceCell<reqwest::Client>,
}

impl Backchannel {
    pub fn new() -> Self {
        Self {
            notify: Notify::new(),
            http: tokio::sync::OnceCell::new(),
        }
    }

    /// The delivery client; an error (no TLS backend) is retried at the next
    /// delivery rather than replaced by a default client, which would follow
    /// redirects.
    async fn http(&self) -> Result<reqwest::Client, String> {
        let build = || async {
            tokio::task::spawn_blocking(|| {
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(ATTEMPT_TIMEOUT)
                    .user_agent(concat!("oxidex/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|error| error.to_string())
            })
            .await
            .map_err(|error| error.to_string())?
        };
        self.http.get_or_try_init(build).await.cloned()
    }

    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Waits for [`Backchannel::wake`] or `period`, whichever comes first.
    pub async fn idle(&self, period: Duration) {
        let _ = tokio::time::timeout(period, self.notify.notified()).await;
    }
}

impl Default for Backchannel {
    fn default() -> Self {
        Self::new()
    }
}

impl Provider {
    /// The shared wake-up handle of the delivery task.
    pub fn backchannel(&self) -> &Arc<Backchannel> {
        &self.backchannel
    }

    /// Ends up to [`BATCH`] sessions past their expiry; returns how many (a
    /// full batch means more may be waiting).
    pub async fn end_expired_sessions(&self) -> usize {
        if self.session_settings().is_none() {
            return 0;
        }
        let settings = self.settings.clone();
        let now = self.now();
        let ended = self
            .with_storage(move |s| -> Result<usize, ProviderError> {
                let expired = s.expired_browser_sessions(now, BATCH).map_err(db)?;
                for session in &expired {
                    end_session(s, &settings, session, now).map_err(db)?;
                }
                Ok(expired.len())
            })
            .await;
        match ended {
            Ok(n) => {
                if n > 0 {
                    self.backchannel.wake();
                }
                n
            }
            Err(error) => {
                tracing::warn!(?error, "cannot end expired browser sessions");
                0
            }
        }
    }

    /// Makes the back-channel logout attempts that are due, up to [`BATCH`];
    /// returns how many due deliveries it took off the queue: attempted (now
    /// leased or rescheduled), dropped, or found taken by another replica. A
    /// full batch means more may be waiting; a delivery it could not take off
    /// (storage failing) is not counted, so a failing store is not polled in a
    /// tight loop.
    pub async fn deliver_logouts(&self) -> usize {
        let now = self.now();
        let claimed = self
            .with_storage(
                move |s| -> Result<(Vec<LogoutDelivery>, usize), ProviderError> {
                    let mut claimed = Vec::new();
                    // Due at or before `now`.
                    let until = now.checked_add(Duration::from_nanos(1)).unwrap_or(now);
                    let mut off_the_queue = 0;
                    for due in s.due_logout_deliveries(until, BATCH).map_err(db)? {
                        if now > due.give_up_at {
                            tracing::warn!(
                                client_id = due.client_id,
                                attempts = due.attempts,
                                "back-channel logout not delivered in time; dropped"
                            );
                            match s.delete_logout_delivery(&due.id) {
                                Ok(()) | Err(StorageError::NotFound) => off_the_queue += 1,
                                Err(error) => {
                                    tracing::warn!(%error, "cannot drop a back-channel logout");
                                }
                            }
                            continue;
                        }
                        let lease = now.checked_add(LEASE).unwrap_or(now);
                        let taken = s.update_logout_delivery(&due.id, &mut |mut d| {
                            if d.due > now {
                                return Err(StorageError::Rejected(
                                    "taken by another replica".into(),
                                ));
                            }
                            d.due = lease;
                            d.attempts += 1;
                            Ok(d)
                        });
                        match taken {
                            Ok(delivery) => claimed.push(delivery),
                            Err(StorageError::Rejected(_) | StorageError::NotFound) => {}
                            Err(error) => return Err(db(error)),
                        }
                        off_the_queue += 1;
                    }
                    Ok((claimed, off_the_queue))
                },
            )
            .await;
        let (claimed, off_the_queue) = match claimed {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(?error, "cannot read back-channel logout deliveries");
                return 0;
            }
        };
        let mut running = tokio::task::JoinSet::new();
        for delivery in claimed {
            let Some(uri) = self
                .settings
                .client(&delivery.client_id)
                .filter(|c| !c.backchannel_logout_uri.is_empty())
                .map(|c| c.backchannel_logout_uri.clone())
            else {
                self.finish_delivery(delivery.id, None).await;
                continue;
            };
            let token = match self.keys.keyset().await {
                Ok(keyset) => {
                    logout_token(&keyset, &self.settings.issuer.url, &delivery, self.now())
                }
                Err(error) => Err(error.to_string()),
            };
            let http = self.backchannel.http().await;
            running.spawn(async move {
                let outcome = match (token, http) {
                    (Ok(token), Ok(http)) => post_logout_token(&http, &uri, &token).await,
                    (Err(error), _) => {
                        Attempt::Retry(format!("cannot sign the logout token: {error}"))
                    }
                    (_, Err(error)) => {
                        Attempt::Retry(format!("cannot build the HTTP client: {error}"))
                    }
                };
                (delivery, outcome)
            });
        }
        while let Some(joined) = running.join_next().await {
            let Ok((delivery, outcome)) = joined else {
                continue;
            };
            match outcome {
                Attempt::Delivered => {
                    tracing::info!(
                        client_id = delivery.client_id,
                        sid = delivery.session_id,
                        "back-channel logout delivered"
                    );
                    self.finish_delivery(delivery.id, None).await;
                }
                Attempt::Refused(why) => {
                    tracing::warn!(
                        client_id = delivery.client_id,
                        why,
                        "back-channel logout refused by the client; dropped"
                    );
                    self.finish_delivery(delivery.id, None).await;
                }
                Attempt::Retry(why) => {
                    let pause = BACKOFF[(delivery.attempts as usize)
                        .saturating_sub(1)
                        .min(BACKOFF.len() - 1)];
                    tracing::warn!(
                        client_id = delivery.client_id,
                        attempts = delivery.attempts,
                        retry_in_secs = pause,
                        why,
                        "back-channel logout failed; will retry"
                    );
                    let next = self.now().checked_add(Duration::from_secs(pause));
                    self.finish_delivery(delivery.id, next).await;
                }
            }
        }
        off_the_queue
    }

    /// Deletes a delivery (`retry_at: None`) or schedules its next attempt.
    async fn finish_delivery(&self, id: String, retry_at: Option<SystemTime>) {
        let result = self
            .with_storage(
                move |s| -> Result<Result<(), StorageError>, ProviderError> {
                    Ok(match retry_at {
                        None => s.delete_logout_delivery(&id),
                        Some(at) => s
                            .update_logout_delivery(&id, &mut |mut d| {
                                d.due = at;
                                Ok(d)
                            })
                            .map(|_| ()),
                    })
                },
            )
            .await;
        if let Ok(Err(error)) = result
            && error != StorageError::NotFound
        {
            tracing::warn!(%error, "cannot update a back-channel logout delivery");
        }
    }
}

fn db(error: StorageError) -> ProviderError {
    ProviderError::storage(&error)
}

enum Attempt {
    Delivered,
    Refused(String),
    Retry(String),
}

async fn post_logout_token(http: &reqwest::Client, uri: &str, token: &str) -> Attempt {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("logout_token", token)
        .finish();
    let sent = http
        .post(uri)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(reqwest::header::CACHE_CONTROL, "no-cache, no-store")
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => Attempt::Delivered,
        Ok(response) if response.status() == reqwest::StatusCode::BAD_REQUEST => {
            Attempt::Refused("400 Bad Request".to_owned())
        }
        Ok(response) => Attempt::Retry(format!("HTTP {}", response.status())),
        Err(error) => Attempt::Retry(error.without_url().to_string()),
    }
}

/// Runs the delivery task until `stop`: after every wake-up, and at least every
/// second, it makes due deliveries; every `sweep_every` it ends expired sessions.
///
/// Both work in batches of [`BATCH`]. After a full batch the next round starts
/// at once instead of after the pause, until a batch comes back short: more
/// sessions may expire, or more logouts fall due, in one `sweep_every` than a
/// batch holds, and a fixed number per round would let that backlog grow
/// without end (expired rows kept, their logouts ever later).
pub async fn run(
    provider: impl Fn() -> Arc<crate::http::Live> + Send + 'static,
    sweep_every: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut last_sweep: Option<tokio::time::Instant> = None;
    let mut sweep_unfinished = false;
    loop {
        let live = provider();
        if sweep_unfinished || last_sweep.is_none_or(|at| at.elapsed() >= sweep_every) {
            sweep_unfinished = live.provider.end_expired_sessions().await >= BATCH;
            last_sweep = Some(tokio::time::Instant::now());
        }
        let deliveries_waiting = live.provider.deliver_logouts().await >= BATCH;
        let backchannel = live.provider.backchannel().clone();
        drop(live);
        let pause = if sweep_unfinished || deliveries_waiting {
            Duration::ZERO
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            () = &mut stop => return,
            () = backchannel.idle(pause) => {}
        }
    }
}
