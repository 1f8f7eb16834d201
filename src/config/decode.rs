//! From text to a JSON value shaped like [`super::schema::Config`], with Go
//! `encoding/json` key matching (case-insensitive), unknown keys reported with
//! their path, and type errors named by path before serde sees the value.

use std::path::Path;

use serde_json::{Map, Value};

use super::Report;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// `.json` is JSON, anything else YAML (as Dex reads every file as YAML).
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Self::Json,
            _ => Self::Yaml,
        }
    }
}

/// Parses the text; an error message names the position.
pub fn parse(text: &str, format: Format) -> Result<Value, String> {
    match format {
        Format::Json => serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}")),
        Format::Yaml => {
            let mut yaml: serde_yaml_ng::Value =
                serde_yaml_ng::from_str(text).map_err(|e| format!("invalid YAML: {e}"))?;
            yaml.apply_merge()
                .map_err(|e| format!("invalid YAML: {e}"))?;
            serde_json::to_value(yaml)
                .map_err(|e| format!("invalid YAML: cannot be represented as JSON: {e}"))
        }
    }
}

/// The expected shape of a value.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    Str,
    Bool,
    /// An integer. A string of digits is accepted too, so `port: $PGPORT` works
    /// after `$VAR` expansion (Dex refuses it).
    Int,
    StrList,
    /// A map of strings to strings (`frontend.extra`).
    StrMap,
    /// Kept as written: type-specific blocks parsed by their owner.
    Any,
    Object(&'static [Field]),
    List(&'static Shape),
}

#[derive(Debug, Clone, Copy)]
pub enum Support {
    Yes,
    /// A Dex key oxidex ignores: warning.
    Ignored(&'static str),
    /// A Dex key whose silent omission would weaken security: error.
    Refused(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub shape: Shape,
    pub support: Support,
}

const fn f(name: &'static str, shape: Shape) -> Field {
    Field {
        name,
        shape,
        support: Support::Yes,
    }
}

const fn ignored(name: &'static str, shape: Shape, why: &'static str) -> Field {
    Field {
        name,
        shape,
        support: Support::Ignored(why),
    }
}

const STORAGE: &[Field] = &[f("type", Shape::Str), f("config", Shape::Any)];

const HEADERS: &[Field] = &[
    f("Content-Security-Policy", Shape::Str),
    f("X-Frame-Options", Shape::Str),
    f("X-Content-Type-Options", Shape::Str),
    f("X-XSS-Protection", Shape::Str),
    f("Strict-Transport-Security", Shape::Str),
];

const CLIENT_REMOTE_IP: &[Field] = &[f("header", Shape::Str), f("trustedProxies", Shape::StrList)];

const WEB: &[Field] = &[
    f("http", Shape::Str),
    f("https", Shape::Str),
    f("tlsCert", Shape::Str),
    f("tlsKey", Shape::Str),
    f("tlsMinVersion", Shape::Str),
    f("tlsMaxVersion", Shape::Str),
    f("headers", Shape::Object(HEADERS)),
    f("allowedOrigins", Shape::StrList),
    f("allowedHeaders", Shape::StrList),
    f("clientRemoteIP", Shape::Object(CLIENT_REMOTE_IP)),
    f("drainTimeout", Shape::Str),
];

const TELEMETRY: &[Field] = &[
    f("http", Shape::Str),
    ignored(
        "enableProfiling",
        Shape::Bool,
        "pprof profiling endpoints are Go-specific; oxidex ignores this key",
    ),
];

const FRONTEND: &[Field] = &[
    f("dir", Shape::Str),
    f("theme", Shape::Str),
    f("issuer", Shape::Str),
    f("logoURL", Shape::Str),
    f("extra", Shape::StrMap),
];

const PKCE: &[Field] = &[
    f("enforce", Shape::Bool),
    f("codeChallengeMethodsSupported", Shape::StrList),
];

const OAUTH2: &[Field] = &[
    f("grantTypes", Shape::StrList),
    f("responseTypes", Shape::StrList),
    f("skipApprovalScreen", Shape::Bool),
    f("alwaysShowLoginScreen", Shape::Bool),
    f("passwordConnector", Shape::Str),
    f("pkce", Shape::Object(PKCE)),
];

const REFRESH_TOKENS: &[Field] = &[
    f("disableRotation", Shape::Bool),
    f("reuseInterval", Shape::Str),
    f("validIfNotUsedFor", Shape::Str),
    f("absoluteLifetime", Shape::Str),
];

const EXPIRY: &[Field] = &[
    f("idTokens", Shape::Str),
    f("authRequests", Shape::Str),
    f("deviceRequests", Shape::Str),
    f("signingKeys", Shape::Str),
    f("refreshTokens", Shape::Object(REFRESH_TOKENS)),
];

const LOGGER: &[Field] = &[
    f("level", Shape::Str),
    f("format", Shape::Str),
    f("excludeFields", Shape::StrList),
];

const SIGNER: &[Field] = &[f("type", Shape::Str), f("config", Shape::Any)];

const CLIENT: &[Field] = &[
    f("id", Shape::Str),
    f("idEnv", Shape::Str),
    f("secret", Shape::Str),
    f("secretEnv", Shape::Str),
    f("secretFile", Shape::Str),
    f("redirectURIs", Shape::StrList),
    f("trustedPeers", Shape::StrList),
    f("public", Shape::Bool),
    f("name", Shape::Str),
    f("logoURL", Shape::Str),
    f("allowedConnectors", Shape::StrList),
    f("requirePKCE", Shape::Bool),
    f("postLogoutRedirectURIs", Shape::StrList),
    f("backchannelLogoutURI", Shape::Str),
    f("refreshTokenLifetime", Shape::Str),
    f("ssoSharedWith", Shape::StrList),
    Field {
        name: "mfaChain",
        shape: Shape::StrList,
        support: Support::Refused("multi-factor authentication is not supported by oxidex"),
    },
    f(
        "clientCredentialsClaims",
        Shape::Object(CLIENT_CREDENTIALS_CLAIMS),
    ),
];

const CLIENT_CREDENTIALS_CLAIMS: &[Field] = &[f("groups", Shape::StrList)];

const CONNECTOR: &[Field] = &[
    f("type", Shape::Str),
    f("id", Shape::Str),
    f("name", Shape::Str),
    f("config", Shape::Any),
    f("grantTypes", Shape::StrList),
];

const PASSWORD: &[Field] = &[
    f("email", Shape::Str),
    f("hash", Shape::Str),
    f("hashFromEnv", Shape::Str),
    f("hashFile", Shape::Str),
    f("username", Shape::Str),
    f("name", Shape::Str),
    f("preferredUsername", Shape::Str),
    f("emailVerified", Shape::Bool),
    f("userID", Shape::Str),
    f("groups", Shape::StrList),
];

const GC: &[Field] = &[f("interval", Shape::Str)];

const SESSIONS: &[Field] = &[
    f("cookieName", Shape::Str),
    f("absoluteLifetime", Shape::Str),
    f("validIfNotUsedFor", Shape::Str),
    f("rememberMeCheckedByDefault", Shape::Bool),
    f("cookieEncryptionKey", Shape::Str),
    f("ssoSharedWithDefault", Shape::Str),
];

/// The top level of the config file.
pub const CONFIG: &[Field] = &[
    f("issuer", Shape::Str),
    f("storage", Shape::Object(STORAGE)),
    f("web", Shape::Object(WEB)),
    f("telemetry", Shape::Object(TELEMETRY)),
    ignored(
        "grpc",
        Shape::Any,
        "the gRPC admin API is not supported by oxidex; oxidex ignores this key",
    ),
    f("frontend", Shape::Object(FRONTEND)),
    f("oauth2", Shape::Object(OAUTH2)),
    f("expiry", Shape::Object(EXPIRY)),
    f("logger", Shape::Object(LOGGER)),
    f("signer", Shape::Object(SIGNER)),
    f("staticClients", Shape::List(&Shape::Object(CLIENT))),
    f("connectors", Shape::List(&Shape::Object(CONNECTOR))),
    f("enablePasswordDB", Shape::Bool),
    f("staticPasswords", Shape::List(&Shape::Object(PASSWORD))),
    f("gc", Shape::Object(GC)),
    f("sessions", Shape::Object(SESSIONS)),
    Field {
        name: "mfa",
        shape: Shape::Any,
        support: Support::Refused("multi-factor authentication is not supported by oxidex"),
    },
];

/// `signer.config` for the local signer.
pub const LOCAL_SIGNER: &[Field] = &[
    f("keysRotationPeriod", Shape::Str),
    f("algorithm", Shape::Str),
];

/// `storage.config` for sqlite3.
pub const SQLITE: &[Field] = &[f("file", Shape::Str)];

const POSTGRES_SSL: &[Field] = &[
    f("mode", Shape::Str),
    f("caFile", Shape::Str),
    f("certFile", Shape::Str),
    f("keyFile", Shape::Str),
    f("serverName", Shape::Str),
];

/// `storage.config` for postgres (Dex's `NetworkDB` and `SSL`, matched by Go
/// field name).
pub const POSTGRES: &[Field] = &[
    f("host", Shape::Str),
    f("port", Shape::Int),
    f("database", Shape::Str),
    f("user", Shape::Str),
    f("password", Shape::Str),
    f("ssl", Shape::Object(POSTGRES_SSL)),
    f("connectionTimeout", Shape::Int),
    f("maxOpenConns", Shape::Int),
    f("maxIdleConns", Shape::Int),
    f("connMaxLifetime", Shape::Int),
];

/// Walks a decoded value against its shape.
pub struct Normalizer<'a> {
    pub report: &'a mut Report,
    /// Unknown keys are errors rather than warnings.
    pub strict: bool,
    /// YAML input: scalars are accepted where a string is expected (as ghodss/yaml
    /// converts them for string fields), and YAML 1.1 words (`yes`, `off`) as booleans.
    pub yaml: bool,
}

pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn yaml11_bool(text: &str) -> Option<bool> {
    match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
            Some(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => {
            Some(false)
        }
        _ => None,
    }
}

/// Lower-cased with `_` and `-` removed: `redirect_uris` and `redirectURIs` meet.
fn loose(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The known key an unknown one was probably meant to be.
pub fn suggest(key: &str, fields: &[Field]) -> Option<&'static str> {
    let wanted = loose(key);
    fields
        .iter()
        .map(|field| (edit_distance(&wanted, &loose(field.name)), field.name))
        .filter(|(distance, name)| *distance <= 2.min(name.len() / 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

impl Normalizer<'_> {
    fn type_error(&mut self, path: &str, expected: &str, value: &Value) {
        self.report
            .error(path, format!("expected {expected}, got {}", kind(value)));
    }

    /// Returns the normalised value, or `None` when it is absent (null) or
    /// unusable (a problem was recorded).
    pub fn value(&mut self, path: &str, shape: Shape, value: Value) -> Option<Value> {
        if value.is_null() {
            // Go leaves the field at its zero value; so do we.
            return None;
        }
        match shape {
            Shape::Any => Some(value),
            Shape::Str => match value {
                Value::String(_) => Some(value),
                Value::Number(n) if self.yaml => Some(Value::String(n.to_string())),
                Value::Bool(b) if self.yaml => Some(Value::String(b.to_string())),
                other => {
                    self.type_error(path, "a string", &other);
                    None
                }
            },
            Shape::Int => match value {
                Value::Number(ref n) if n.is_i64() => Some(value),
                Value::String(ref s) => match s.trim().parse::<i64>() {
                    Ok(n) => Some(Value::from(n)),
                    Err(_) => {
                        self.type_error(path, "an integer", &value);
                        None
                    }
                },
                other => {
                    self.type_error(path, "an integer", &other);
                    None
                }
            },
            Shape::Bool => match value {
                Value::Bool(_) => Some(value),
                Value::String(ref s) if self.yaml => match yaml11_bool(s) {
                    Some(b) => Some(Value::Bool(b)),
                    None => {
                        self.type_error(path, "a boolean (true or false)", &value);
                        None
                    }
                },
                other => {
                    self.type_error(path, "a boolean (true or false)", &other);
                    None
                }
            },
            Shape::StrList => match value {
                Value::Array(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (i, item) in items.into_iter().enumerate() {
                        if let Some(v) = self.value(&format!("{path}[{i}]"), Shape::Str, item) {
                            out.push(v);
                        } else {
                            return None;
                        }
                    }
                    Some(Value::Array(out))
                }
                other => {
                    self.type_error(path, "a list of strings", &other);
                    None
                }
            },
            Shape::StrMap => match value {
                Value::Object(map) => {
                    let mut out = Map::new();
                    for (key, item) in map {
                        let v = self.value(&join(path, &key), Shape::Str, item)?;
                        out.insert(key, v);
                    }
                    Some(Value::Object(out))
                }
                other => {
                    self.type_error(path, "an object of strings", &other);
                    None
                }
            },
            Shape::List(item_shape) => match value {
                Value::Array(items) => Some(Value::Array(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(i, item)| {
                            self.value(&format!("{path}[{i}]"), *item_shape, item)
                                .unwrap_or(Value::Object(Map::new()))
                        })
                        .collect(),
                )),
                other => {
                    self.type_error(path, "a list", &other);
                    None
                }
            },
            Shape::Object(fields) => match value {
                Value::Object(map) => Some(Value::Object(self.object(path, fields, map))),
                other => {
                    self.type_error(path, "an object", &other);
                    None
                }
            },
        }
    }

    /// Matches keys to fields exactly, then case-insensitively (Go's rule), renames
    /// them to the canonical spelling, and reports unknown and unsupported keys.
    pub fn object(
        &mut self,
        path: &str,
        fields: &[Field],
        map: Map<String, Value>,
    ) -> Map<String, Value> {
        let mut out = Map::new();
        let mut spelled: Vec<(&'static str, String)> = Vec::new();
        for (key, value) in map {
            let key_path = join(path, &key);
            let field = fields.iter().find(|field| field.name == key).or_else(|| {
                fields
                    .iter()
                    .find(|field| field.name.eq_ignore_ascii_case(&key))
            });
            let Some(field) = field else {
                let message = match suggest(&key, fields) {
                    Some(name) => format!("unknown key (did you mean {name:?}?)"),
                    None => "unknown key".to_owned(),
                };
                if self.strict {
                    self.report.error(&key_path, message);
                } else {
                    self.report.warn(&key_path, message);
                }
                continue;
            };
            if let Some((_, earlier)) = spelled.iter().find(|(name, _)| *name == field.name) {
                self.report.error(
                    &key_path,
                    format!("the same key is also given as {earlier:?}; keep only one"),
                );
                continue;
            }
            spelled.push((field.name, key.clone()));
            match field.support {
                Support::Yes => {}
                Support::Ignored(why) => {
                    if !value.is_null() {
                        self.report.warn(&key_path, why);
                    }
                    continue;
                }
                Support::Refused(why) => {
                    if !value.is_null() {
                        self.report.error(&key_path, why);
                    }
                    continue;
                }
            }
            if let Some(v) = self.value(&key_path, field.shape, value) {
                out.insert(field.name.to_owned(), v);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_not_strangers() {
        assert_eq!(
            suggest("redirect_uris", super::CLIENT),
            Some("redirectURIs")
        );
        assert_eq!(suggest("redirectURI", super::CLIENT), Some("redirectURIs"));
        assert_eq!(suggest("secrt", super::CLIENT), Some("secret"));
        assert_eq!(suggest("colour", super::CLIENT), None);
        assert_eq!(
            suggest("enablePasswordDb", CONFIG),
            Some("enablePasswordDB")
        );
    }

    #[test]
    fn format_follows_the_extension() {
        assert_eq!(Format::of(Path::new("/etc/oxidex.json")), Format::Json);
        assert_eq!(Format::of(Path::new("/etc/oxidex.JSON")), Format::Json);
        assert_eq!(Format::of(Path::new("/etc/oxidex.yaml")), Format::Yaml);
        assert_eq!(Format::of(Path::new("/etc/oxidex")), Format::Yaml);
    }

    #[test]
    fn yaml_merge_keys_work() {
        let value = parse(
            "base: &b {a: 1}\nderived:\n  <<: *b\n  c: 2\n",
            Format::Yaml,
        )
        .unwrap();
        assert_eq!(value["derived"], serde_json::json!({"a": 1, "c": 2}));
    }
}
