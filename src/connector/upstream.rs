//! Pieces the upstream OAuth2 connectors (`gitea`, `oidc`) share: reading their
//! `config` blocks with Go's case-insensitive key matching and key-path errors, the
//! HTTP client (timeouts, extra root CAs, no redirects), OAuth2 error bodies, and
//! the single-flight cache that keeps a rotated upstream refresh token from being
//! lost when two downstream refreshes use the same upstream token at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde_json::{Map, Value};

use super::ConnectorError;

/// Upper bound for one upstream HTTP exchange (connect, send, read the body).
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(15);
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Error bodies quoted in messages are cut to this many characters.
const MAX_QUOTED_BODY: usize = 200;

/// A connector's `config` object with keys matched case-insensitively to the
/// known names (as Go's `encoding/json` does), and errors that name the full key
/// path, e.g. `connectors[0].config.clientID`.
pub struct ConfigReader {
    path: String,
    map: Map<String, Value>,
    /// Keys present in the input that match no known key.
    pub unknown: Vec<String>,
}

impl ConfigReader {
    /// `known`: the canonical key names. An exact match wins over a
    /// case-insensitive one; unknown keys are collected, not rejected (Dex ignores
    /// them unless told to be strict).
    pub fn new(path: &str, value: &Value, known: &[&str]) -> Result<Self, String> {
        let input = match value {
            Value::Null => Map::new(),
            Value::Object(map) => map.clone(),
            other => return Err(format!("{path}: expected an object, found {}", kind(other))),
        };
        let mut map = Map::new();
        let mut unknown = Vec::new();
        // Exact names first, so `clientID` beats a stray `clientid`.
        for (key, item) in &input {
            if known.contains(&key.as_str()) {
                map.insert(key.clone(), item.clone());
            }
        }
        for (key, item) in input {
            if known.contains(&key.as_str()) {
                continue;
            }
            match known.iter().find(|k| k.eq_ignore_ascii_case(&key)) {
                Some(canonical) if !map.contains_key(*canonical) => {
                    map.insert((*canonical).to_owned(), item);
                }
                Some(_) => {}
                None => unknown.push(format!("{path}.{key}")),
            }
        }
        Ok(ConfigReader {
            path: path.to_owned(),
            map,
            unknown,
        })
    }

    pub fn key_path(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    pub fn raw(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A string; absent or null is `""`.
    pub fn string(&self, key: &str) -> Result<String, String> {
        match self.raw(key) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!(
                "{}: expected a string, found {}",
                self.key_path(key),
                kind(other)
            )),
        }
    }

    /// A boolean; absent or null is `false`. YAML-ish `"true"`/`"false"` strings
    /// are accepted as the config loader does elsewhere.
    pub fn bool(&self, key: &str) -> Result<bool, String> {
        match self.raw(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
            Some(other) => Err(format!(
                "{}: expected true or false, found {}",
                self.key_path(key),
                kind(other)
            )),
        }
    }

    /// A list of strings; absent or null is empty.
    pub fn strings(&self, key: &str) -> Result<Vec<String>, String> {
        match self.raw(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(format!(
                        "{}[{i}]: expected a string, found {}",
                        self.key_path(key),
                        kind(other)
                    )),
                })
                .collect(),
            Some(other) => Err(format!(
                "{}: expected a list of strings, found {}",
                self.key_path(key),
                kind(other)
            )),
        }
    }

    /// A list of objects, each read with `known` keys.
    pub fn objects(&self, key: &str, known: &[&str]) -> Result<Vec<ConfigReader>, String> {
        match self.raw(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    ConfigReader::new(&format!("{}[{i}]", self.key_path(key)), item, known)
                })
                .collect(),
            Some(other) => Err(format!(
                "{}: expected a list, found {}",
                self.key_path(key),
                kind(other)
            )),
        }
    }

    /// A nested object read with `known` keys (absent is an empty object).
    pub fn object(&self, key: &str, known: &[&str]) -> Result<ConfigReader, String> {
        ConfigReader::new(
            &self.key_path(key),
            self.raw(key).unwrap_or(&Value::Null),
            known,
        )
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The `connectors[i].config` path prefix.
pub fn config_path(index: usize) -> String {
    format!("connectors[{index}].config")
}

/// Accumulates the problems of one connector's config.
#[derive(Default)]
pub struct Problems(pub Vec<String>);

impl Problems {
    pub fn take<T: Default>(&mut self, result: Result<T, String>) -> T {
        match result {
            Ok(value) => value,
            Err(message) => {
                self.0.push(message);
                T::default()
            }
        }
    }

    pub fn push(&mut self, message: impl Into<String>) {
        self.0.push(message.into());
    }

    pub fn into_result(self, id: &str, kind: &str) -> Result<(), ConnectorError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConnectorError::Config {
                id: id.to_owned(),
                kind: kind.to_owned(),
                message: self.0.join("; "),
            })
        }
    }
}

/// `redirectURI` must be exactly oxidex's callback, `<issuer>/callback` (the
/// per-connector `/callback/<id>` form is not accepted, as in Dex).
pub fn check_redirect_uri(path: &str, configured: &str, callback: &str) -> Result<(), String> {
    if configured.is_empty() {
        return Err(format!("{path}: required; set it to {callback:?}"));
    }
    if configured != callback {
        return Err(format!(
            "{path}: {configured:?} is not this issuer's callback URL; it must be {callback:?}"
        ));
    }
    Ok(())
}

/// An absolute http(s) URL without query or fragment, returned without a trailing
/// slash.
pub fn check_base_url(path: &str, value: &str) -> Result<String, String> {
    let url = url::Url::parse(value).map_err(|e| format!("{path}: {value:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{path}: {value:?} must be an http(s) URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{path}: {value:?} must not have a query or fragment"
        ));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// TLS options of an upstream connection.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM certificates (already read) trusted in addition to the system's CA store.
    pub root_cas: Vec<Vec<u8>>,
    pub insecure_skip_verify: bool,
}

/// Reads one root CA entry like Dex: a file path, else base64 of PEM, else PEM text.
pub fn read_root_ca(path: &str, entry: &str) -> Result<Vec<u8>, String> {
    let pem = match std::fs::read(entry) {
        Ok(bytes) => bytes,
        Err(file_err) => {
            if entry.contains("-----BEGIN") {
                entry.as_bytes().to_vec()
            } else if let Ok(decoded) =
                base64::engine::general_purpose::STANDARD.decode(entry.trim())
            {
                decoded
            } else {
                return Err(format!("{path}: cannot read {entry:?}: {file_err}"));
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
    use serde_json::json;

    #[test]
    fn config_reader_matches_keys_case_insensitively_exact_first() {
        let r = ConfigReader::new(
            "connectors[0].config",
            &json!({"clientid": "lower", "clientID": "exact", "BASEURL": "b", "extra": 1}),
            &["clientID", "baseURL"],
        )
        .unwrap();
        assert_eq!(r.string("clientID").unwrap(), "exact");
        assert_eq!(r.string("baseURL").unwrap(), "b");
        assert_eq!(r.unknown, ["connectors[0].config.extra"]);
    }

    #[test]
    fn config_reader_type_errors_name_the_key_path() {
        let r = ConfigReader::new(
            "connectors[2].config",
            &json!({"loadAllGroups": 3, "scopes": ["a", 1], "orgs": [{"name": 5}]}),
            &["loadAllGroups", "scopes", "orgs"],
        )
        .unwrap();
        assert_eq!(
            r.bool("loadAllGroups").unwrap_err(),
            "connectors[2].config.loadAllGroups: expected true or false, found a number"
        );
        assert_eq!(
            r.strings("scopes").unwrap_err(),
            "connectors[2].config.scopes[1]: expected a string, found a number"
        );
        let orgs = r.objects("orgs", &["name"]).unwrap();
        assert_eq!(
            orgs[0].string("name").unwrap_err(),
            "connectors[2].config.orgs[0].name: expected a string, found a number"
        );
        assert!(ConfigReader::new("p", &json!([1]), &[]).is_err());
    }

    #[test]
    fn redirect_uri_and_base_url_checks() {
        let cb = "https://idp.example/dex/callback";
        assert!(check_redirect_uri("p", cb, cb).is_ok());
        let e = check_redirect_uri(
            "p.redirectURI",
            "https://idp.example/dex/callback/gitea",
            cb,
        )
        .unwrap_err();
        assert!(e.starts_with("p.redirectURI: ") && e.contains(cb), "{e}");
        assert!(
            check_redirect_uri("p", "", cb)
                .unwrap_err()
                .contains("required")
        );
        assert_eq!(
            check_base_url("p", "https://git.example.com/").unwrap(),
            "https://git.example.com"
        );
        assert!(check_base_url("p", "git.example.com").is_err());
        assert!(check_base_url("p", "ftp://git.example.com").is_err());
        assert!(check_base_url("p", "https://git.example.com/?x=1").is_err());
    }

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
