//! Pieces the upstream OAuth2 connectors (`gitea`, `oidc`) share: the
//! HTTP client (timeouts, extra root CAs, no redirects), OAuth2 error bodies, and
//! the single-flight cache that keeps a rotated upstream refresh token from being
//! lost when two downstream refreshes use the same upstream token at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde_json::Value;

use super::ConnectorError;
use crate::config::read_bounded;

/// Upper bound for one upstream HTTP exchange (connect, send, read the body).
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(15);
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest certificate or key file a connector config names (a CA bundle such as
/// the system's is a few hundred KiB).
pub const MAX_CERTIFICATE_FILE: u64 = 1024 * 1024;
/// Error bodies quoted in messages are cut to this many characters.
const MAX_QUOTED_BODY: usize = 200;

/// TLS options of an upstream connection.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM certificates (already read) trusted in addition to the system's CA store.
    pub root_cas: Vec<Vec<u8>>,
    pub insecure_skip_verify: bool,
}

/// Reads one root CA entry like Dex: a file path, else base64 of PEM, else PEM text.
pub fn read_root_ca(path: &str, entry: &str) -> Result<Vec<u8>, String> {
    let pem = match read_bounded(entry, MAX_CERTIFICATE_FILE) {
        Ok(bytes) => bytes,
        Err(file_err) => {
            if entry.contains("-----BEGIN") {
                entry.as_bytes().to_vec()
            } else if let Ok(decoded) =
                base64::engine::general_purpose::STANDARD.decode(entry.trim())
            {
                decoded
            } else {
                return Err(format!("{path}: {file_err}"));
            }
        }
    };
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(pem),
        _ => Err(format!(
            "{path}: not a PEM certificate (give a path to a PEM file, PEM text, or base64 of PEM)"
        )),
    }
}

/// The client for upstream calls: bounded by [`UPSTREAM_TIMEOUT`], never follows
/// redirects (a token or API endpoint that redirects is misconfigured, and
/// following could leak credentials).
///
/// It trusts the system's CA store, like Dex (Go's crypto/x509) and OpenSSL:
/// `SSL_CERT_FILE` and/or `SSL_CERT_DIR` when set, otherwise the distribution's
/// bundle (`/etc/ssl/certs/ca-certificates.crt` and friends; on NixOS that is
/// `security.pki`), plus the connector's own `rootCA`s. No compiled-in roots:
/// an operator who narrows the store must not be overruled.
pub fn http_client(tls: &TlsOptions) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .tls_built_in_native_certs(true)
        .timeout(UPSTREAM_TIMEOUT)
        .connect_timeout(UPSTREAM_CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("oxidex/", env!("CARGO_PKG_VERSION")));
    for pem in &tls.root_cas {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("root CA is not valid PEM: {e}"))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if tls.insecure_skip_verify {
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// `error: description` from an OAuth2 error (callback query or token endpoint).
/// The first value of `key` in an upstream's callback query, or `""`.
pub fn query_value<'a>(query: &'a [(String, String)], key: &str) -> &'a str {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// A connector only hands out logins for the callback URL it was configured with.
pub fn check_callback_url(
    id: &str,
    kind: &str,
    callback_url: &str,
    configured: &str,
) -> Result<(), ConnectorError> {
    if callback_url == configured {
        return Ok(());
    }
    Err(ConnectorError::Config {
        id: id.to_owned(),
        kind: kind.to_owned(),
        message: format!(
            "expected callback URL {callback_url:?} did not match the URL in the config {configured:?}"
        ),
    })
}

pub fn oauth_error_text(error: &str, description: &str) -> String {
    if description.is_empty() {
        error.to_owned()
    } else {
        format!("{error}: {description}")
    }
}

/// A short, single-line quote of an upstream response body for error messages.
/// Only used for error bodies, which carry no tokens.
pub fn quote_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > MAX_QUOTED_BODY {
        line = line.chars().take(MAX_QUOTED_BODY).collect::<String>() + "…";
    }
    line
}

/// The `{"error", "error_description"}` of a failed token request, if the body
/// is one (JSON or form-encoded).
pub fn parse_oauth_error(body: &[u8]) -> Option<(String, String)> {
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
        let error = map.get("error")?.as_str()?.to_owned();
        let description = map
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        return Some((error, description));
    }
    let pairs: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let error = pairs.get("error")?.clone();
    Some((
        error,
        pairs.get("error_description").cloned().unwrap_or_default(),
    ))
}

/// Seconds since the epoch (0 for times before it).
pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How long a finished upstream refresh is remembered for callers that present
/// the same (now used up) upstream refresh token.
pub const REFRESH_RESULT_TTL: Duration = Duration::from_secs(120);

type Slot<T> = Arc<tokio::sync::OnceCell<T>>;
/// Digest of an upstream refresh token → (first seen, its refresh).
type Slots<T> = HashMap<[u8; 32], (SystemTime, Slot<T>)>;

/// One upstream refresh per upstream refresh token.
///
/// Upstreams that rotate refresh tokens (Forgejo ≥ 9) accept each one once. Two
/// downstream refreshes of the same user (two clients, or a retried request) read
/// the same upstream token from the offline session; without this, the second
/// call would be refused upstream and its refresh token rejected. Here the first
/// caller refreshes, concurrent callers wait for it, and callers within
/// [`REFRESH_RESULT_TTL`] get the same result (the same rotated token), which they
/// then store too. Failures are not remembered: the next caller tries again.
///
/// Keys are SHA-256 digests of the upstream token, never the token itself.
pub struct SingleFlight<T> {
    slots: Mutex<Slots<T>>,
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        SingleFlight {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> SingleFlight<T> {
    pub async fn run<F, Fut>(
        &self,
        token: &str,
        now: SystemTime,
        refresh: F,
    ) -> Result<T, ConnectorError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, ConnectorError>>,
    {
        let key = crate::crypto::sha256(token.as_bytes());
        let slot = {
            let mut slots = self
                .slots
                .lock()
                .map_err(|_| ConnectorError::Internal("refresh cache lock poisoned".into()))?;
            slots.retain(|_, (created, slot)| {
                // Keep entries in flight (not yet set) however old they are.
                slot.get().is_none()
                    || created
                        .checked_add(REFRESH_RESULT_TTL)
                        .is_some_and(|end| end > now)
            });
            slots
                .entry(key)
                .or_insert_with(|| (now, Arc::new(tokio::sync::OnceCell::new())))
                .1
                .clone()
        };
        slot.get_or_try_init(refresh).await.cloned()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.lock().map(|s| s.len()).unwrap_or(0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn oauth_errors_parse_from_json_and_form() {
        assert_eq!(
            parse_oauth_error(
                br#"{"error":"unauthorized_client","error_description":"token was already used"}"#
            ),
            Some((
                "unauthorized_client".into(),
                "token was already used".into()
            ))
        );
        assert_eq!(
            parse_oauth_error(b"error=invalid_grant&error_description=gone"),
            Some(("invalid_grant".into(), "gone".into()))
        );
        assert_eq!(parse_oauth_error(b"<html>oops</html>"), None);
        assert_eq!(quote_body(b"a\n  b"), "a b");
        assert!(quote_body(&[b'x'; 500]).ends_with('…'));
    }

    #[test]
    fn root_ca_entries_must_be_pem() {
        let e = read_root_ca("p.rootCA", "/nonexistent/ca.pem").unwrap_err();
        assert!(e.starts_with("p.rootCA: cannot read"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "not a certificate").unwrap();
        let e = read_root_ca("p.rootCA", file.to_str().unwrap()).unwrap_err();
        assert!(e.contains("not a PEM certificate"), "{e}");
    }

    #[tokio::test]
    async fn single_flight_shares_one_result_and_forgets_failures() {
        let flight: SingleFlight<u32> = SingleFlight::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let calls = std::sync::atomic::AtomicU32::new(0);
        let work = || async {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            tokio::task::yield_now().await;
            Ok::<u32, ConnectorError>(n)
        };
        let (a, b) = tokio::join!(flight.run("rt", t0, work), flight.run("rt", t0, work));
        assert_eq!((a.unwrap(), b.unwrap()), (1, 1));
        // Within the TTL the stored result is returned without calling again.
        assert_eq!(
            flight
                .run("rt", t0 + Duration::from_secs(60), work)
                .await
                .unwrap(),
            1
        );
        // After the TTL the entry is gone; another token is its own flight.
        assert_eq!(
            flight
                .run("rt", t0 + REFRESH_RESULT_TTL * 2, work)
                .await
                .unwrap(),
            2
        );
        assert_eq!(flight.len(), 1);

        let failing = || async { Err::<u32, _>(ConnectorError::Refresh("no".into())) };
        assert!(flight.run("other", t0, failing).await.is_err());
        assert_eq!(flight.run("other", t0, work).await.unwrap(), 3);
    }
}
