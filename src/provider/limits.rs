//! The rate limits of the login flows, per client IP ([`ClientKey`]):
//! creating auth and device requests (rows an anonymous client makes us store),
//! guessing device user codes, and password attempts. The numbers are documented
//! in the README ("Limits") and `docs/security.md`.

use std::time::{Duration, SystemTime};

use super::ProviderError;
use crate::connector::{ConnectorError, Identity, PasswordConnector, Scopes};
use crate::throttle::{ClientKey, Limiter, Policy};

const MINUTE: Duration = Duration::from_secs(60);

/// Most clients (or users) each limiter remembers; ~100 bytes each.
const TRACKED_KEYS: usize = 16_384;

/// Auth requests (`GET /auth/{connector}`) and device requests (`/device/code`)
/// per client IP: 30 at once, then one every 3 s (20 a minute).
pub const REQUEST_CREATION: Policy = Policy {
    burst: 30,
    interval: Duration::from_secs(3),
    max_wait: Duration::from_secs(3),
    capacity: TRACKED_KEYS,
};

/// User-code submissions (`POST /device/auth/verify_code`) per client IP: 10 at
/// once, then one after 6 s, the wait doubling up to a minute.
pub const USER_CODE_GUESSES: Policy = Policy {
    burst: 10,
    interval: Duration::from_secs(6),
    max_wait: MINUTE,
    capacity: TRACKED_KEYS,
};

/// Password attempts per (user, client IP): 5 at once, then one after a minute,
/// the wait doubling up to 15 minutes. A successful login clears it.
pub const PASSWORD_PER_USER: Policy = Policy {
    burst: 5,
    interval: MINUTE,
    max_wait: Duration::from_secs(15 * 60),
    capacity: TRACKED_KEYS,
};

/// Failed password attempts per client IP, whichever user: 20 at once, then one
/// after 30 s, the wait doubling up to 15 minutes. Successful logins are refunded.
pub const PASSWORD_PER_IP: Policy = Policy {
    burst: 20,
    interval: Duration::from_secs(30),
    max_wait: Duration::from_secs(15 * 60),
    capacity: TRACKED_KEYS,
};

/// The limiters of one running server.
#[derive(Debug)]
pub struct Limits {
    request_creation: Limiter<ClientKey>,
    user_codes: Limiter<ClientKey>,
    password_per_user: Limiter<(ClientKey, [u8; 32])>,
    password_per_ip: Limiter<ClientKey>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            request_creation: Limiter::new(REQUEST_CREATION),
            user_codes: Limiter::new(USER_CODE_GUESSES),
            password_per_user: Limiter::new(PASSWORD_PER_USER),
            password_per_ip: Limiter::new(PASSWORD_PER_IP),
        }
    }
}

impl Limits {
    /// Before storing an auth or device request for `client`.
    pub fn create_request(&self, client: ClientKey, now: SystemTime) -> Result<(), ProviderError> {
        self.request_creation
            .acquire(&client, now)
            .map_err(|retry| {
                refused("request_creation");
                tracing::debug!(%client, "auth request creation rate-limited");
                ProviderError::too_many(retry)
            })
    }

    /// Before looking up a user code typed by `client`.
    pub fn guess_user_code(&self, client: ClientKey, now: SystemTime) -> Result<(), ProviderError> {
        self.user_codes.acquire(&client, now).map_err(|retry| {
            refused("user_code");
            tracing::debug!(%client, "user code guesses rate-limited");
            ProviderError::too_many(retry)
        })
    }

    /// Checks `username`/`password` with `connector`, counted against the
    /// password limits of (user, `client`) and of `client`. Every attempt is
    /// counted before the check runs, so concurrent requests cannot slip past;
    /// a success clears the (user, client) count, never the client's.
    ///
    /// `Ok(None)`: wrong credentials. Errors: 429 (limited), 503 (every password
    /// check slot busy), 500 (connector failure, logged).
    pub async fn password_login(
        &self,
        connector: &dyn PasswordConnector,
        scopes: &Scopes,
        client: ClientKey,
        username: &str,
        password: &str,
        now: SystemTime,
    ) -> Result<Option<Identity>, PasswordLoginError> {
        let user = (client, user_key(username));
        self.password_per_user
            .acquire(&user, now)
            .and_then(|()| self.password_per_ip.acquire(&client, now))
            .map_err(|retry| {
                refused("password");
                tracing::debug!(%client, "password attempts rate-limited");
                PasswordLoginError::Refused(ProviderError::too_many(retry))
            })?;
        match connector.login(scopes, username, password).await {
            Ok(Some(identity)) => {
                self.password_per_user.forget(&user);
                // Many users behind one address (an office NAT) log in freely;
                // only failures use up the address's allowance.
                self.password_per_ip.refund(&client, now);
                Ok(Some(identity))
            }
            Ok(None) => Ok(None),
            Err(ConnectorError::Busy) => {
                refused("password_gate");
                tracing::debug!("password check refused: every slot is busy");
                Err(PasswordLoginError::Refused(ProviderError::busy()))
            }
            Err(error) => Err(PasswordLoginError::Connector(error)),
        }
    }
}

/// Why [`Limits::password_login`] did not get an answer from the connector.
#[derive(Debug)]
pub enum PasswordLoginError {
    /// Rate-limited or busy: render as is (429/503 with `Retry-After`).
    Refused(ProviderError),
    /// The connector failed; the caller logs it and answers as Dex does.
    Connector(ConnectorError),
}

/// Counts a refusal in `oxidex_limited_requests_total{limit}` (a fixed set of
/// labels). Refusals are logged at debug only: a flood of them must not become a
/// flood of log lines.
fn refused(limit: &'static str) {
    metrics::counter!("oxidex_limited_requests_total", "limit" => limit).increment(1);
}

/// Usernames are case-insensitive (e-mails in the password DB) and of any length;
/// the key is a fixed-size digest so a long name costs no more memory.
fn user_key(username: &str) -> [u8; 32] {
    crate::crypto::sha256(username.to_lowercase().as_bytes())
}
