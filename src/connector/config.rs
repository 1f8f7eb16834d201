//! Reading a connector's `config` block: keys matched to the known names as Go's
//! `encoding/json` does (case-insensitively), every problem named by its key path
//! (`connectors[0].config.clientID`), unknown keys collected at any depth, and the
//! checks several connector kinds share (the OAuth2 client, scopes, orgs, URLs,
//! root CAs). [`super::kinds`] runs each kind's decoder from `config::load`.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{Map, Value};

use super::upstream::read_root_ca;
use crate::config::decode::kind;

/// A connector's `config` object (or an object inside it) with its keys renamed
/// to the known spellings.
pub struct ConfigReader {
    path: String,
    map: Map<String, Value>,
    /// Keys matching no known name, shared by a reader and the readers of its
    /// nested objects, so no decoder can forget to pass them on.
    unknown: Rc<RefCell<Vec<String>>>,
}

impl ConfigReader {
    /// `known`: the canonical key names. An exact match wins over a
    /// case-insensitive one; unknown keys are collected, not rejected (Dex ignores
    /// them unless told to be strict).
    pub fn new(path: &str, value: &Value, known: &[&str]) -> Result<Self, String> {
        Self::nested(path, value, known, Rc::default())
    }

    fn nested(
        path: &str,
        value: &Value,
        known: &[&str],
        unknown: Rc<RefCell<Vec<String>>>,
    ) -> Result<Self, String> {
        let input = match value {
            Value::Null => Map::new(),
            Value::Object(map) => map.clone(),
            other => return Err(format!("{path}: expected an object, found {}", kind(other))),
        };
        let mut map = Map::new();
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
                None => unknown.borrow_mut().push(format!("{path}.{key}")),
            }
        }
        Ok(ConfigReader {
            path: path.to_owned(),
            map,
            unknown,
        })
    }

    /// The paths of the unknown keys met so far, here and in nested objects.
    pub fn unknown(&self) -> Vec<String> {
        self.unknown.borrow().clone()
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

    /// A string that must not be empty; `why` is appended to "required".
    pub fn required(&self, p: &mut Problems, key: &str, why: &str) -> String {
        match self.string(key) {
            Ok(value) if value.is_empty() => {
                p.push(format!("{}: required{why}", self.key_path(key)));
                value
            }
            result => p.take(result),
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
                    let path = format!("{}[{i}]", self.key_path(key));
                    ConfigReader::nested(&path, item, known, Rc::clone(&self.unknown))
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
        ConfigReader::nested(
            &self.key_path(key),
            self.raw(key).unwrap_or(&Value::Null),
            known,
            Rc::clone(&self.unknown),
        )
    }

    /// A list of OAuth2 scopes, one per entry.
    pub fn scopes(&self, p: &mut Problems, key: &str) -> Vec<String> {
        let scopes = p.take(self.strings(key));
        if let Some(bad) = scopes.iter().find(|s| s.is_empty() || s.contains(' ')) {
            p.push(format!(
                "{}: {bad:?} is not a scope (one scope per list entry)",
                self.key_path(key)
            ));
        }
        scopes
    }

    /// `orgs`: a list of `{name, teams}`, `name` required.
    pub fn orgs(&self, p: &mut Problems) -> Vec<Org> {
        let mut orgs = Vec::new();
        for org in p.take(self.objects("orgs", &["name", "teams"])) {
            let name = org.required(p, "name", "");
            let teams = p.take(org.strings("teams"));
            orgs.push(Org { name, teams });
        }
        orgs
    }

    /// The PEM of a root CA entry (a file, PEM text or base64 of PEM), if set.
    pub fn root_ca(&self, p: &mut Problems, key: &str) -> Option<Vec<u8>> {
        let entry = p.take(self.string(key));
        if entry.is_empty() {
            return None;
        }
        p.take(read_root_ca(&self.key_path(key), &entry).map(Some))
    }

    /// `clientID`, `clientSecret` (required when `secret_required`) and
    /// `redirectURI`, which must be `callback` (unknown when the issuer is bad).
    pub fn oauth_client(
        &self,
        p: &mut Problems,
        callback: Option<&str>,
        secret_required: bool,
    ) -> OAuthClient {
        let client_id = self.required(p, "clientID", " (the OAuth2 application's client ID)");
        let client_secret = if secret_required {
            self.required(
                p,
                "clientSecret",
                " (or clientSecretFile, or a $VAR reference)",
            )
        } else {
            p.take(self.string("clientSecret"))
        };
        let redirect_uri = p.take(self.string("redirectURI"));
        p.take(check_redirect_uri(
            &self.key_path("redirectURI"),
            &redirect_uri,
            callback,
        ));
        OAuthClient {
            client_id,
            client_secret,
            redirect_uri,
        }
    }
}

/// An OAuth2 client registration at an upstream.
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
}

/// An `orgs` entry (`gitea`, `github`): login requires membership in one of the
/// listed orgs; `teams` narrows which teams count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    pub name: String,
    pub teams: Vec<String>,
}

/// The problems found in one connector's config.
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
}

/// A connector type's decoded `config`.
pub trait DecodeConfig: Sized {
    /// Its keys, spelled as in Dex's config.
    const KEYS: &'static [&'static str];

    /// Reads the block through `r`, every problem recorded in `p`. `callback` is
    /// `<issuer>/callback`, which an OAuth2 connector's `redirectURI` must equal
    /// (`None`: the issuer is invalid, and reported).
    fn decode(r: &ConfigReader, p: &mut Problems, callback: Option<&str>) -> Self;

    /// Reads and validates `value`, the `connectors[i].config` at `path`. Reads the
    /// files it names; makes no network call. Returns the config and the unknown
    /// keys, or every problem, each naming its key path.
    fn parse(
        path: &str,
        value: &Value,
        callback: &str,
    ) -> Result<(Self, Vec<String>), Vec<String>> {
        parse(path, value, Self::KEYS, |r, p| {
            Self::decode(r, p, Some(callback))
        })
    }
}

/// Reads the `config` block `value` (found at `path`) with `known` keys through
/// `decode`, which records every problem it meets. Returns the config and the
/// unknown keys (at any depth), or every problem, each naming its key path.
pub fn parse<T>(
    path: &str,
    value: &Value,
    known: &[&str],
    decode: impl FnOnce(&ConfigReader, &mut Problems) -> T,
) -> Result<(T, Vec<String>), Vec<String>> {
    let reader = ConfigReader::new(path, value, known).map_err(|e| vec![e])?;
    let mut problems = Problems::default();
    let config = decode(&reader, &mut problems);
    if problems.0.is_empty() {
        Ok((config, reader.unknown()))
    } else {
        Err(problems.0)
    }
}

/// `redirectURI` must be exactly oxidex's callback, `<issuer>/callback` (the
/// per-connector `/callback/<id>` form is not accepted, as in Dex). Without a
/// callback (the issuer itself is wrong, and reported) only presence is checked.
pub fn check_redirect_uri(
    path: &str,
    configured: &str,
    callback: Option<&str>,
) -> Result<(), String> {
    match (configured.is_empty(), callback) {
        (true, Some(callback)) => Err(format!("{path}: required; set it to {callback:?}")),
        (true, None) => Err(format!("{path}: required; set it to <issuer>/callback")),
        (false, Some(callback)) if configured != callback => Err(format!(
            "{path}: {configured:?} is not this issuer's callback URL; it must be {callback:?}"
        )),
        (false, _) => Ok(()),
    }
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
        assert_eq!(r.unknown(), ["connectors[0].config.extra"]);
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
        assert!(check_redirect_uri("p", cb, Some(cb)).is_ok());
        let e = check_redirect_uri(
            "p.redirectURI",
            "https://idp.example/dex/callback/gitea",
            Some(cb),
        )
        .unwrap_err();
        assert!(e.starts_with("p.redirectURI: ") && e.contains(cb), "{e}");
        assert!(
            check_redirect_uri("p", "", Some(cb))
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
}
