//! Loading tests: Dex's own development config, bad configs with their key paths,
//! env and file secret forms, the Nix-store rule, redaction.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;

const HASH: &str = "$2b$10$/pAc8w62tetWzHVVQQLOFuLUYQ.yvPnMCWcI5oLJkhqqf5GWAi.Wi";
const STORE_DIR: &str = "/nix/store/0c8xyz9bz3ai2k3qh8x8a9fw2p1l6c5y-oxidex-config";

fn options(env: &[(&str, &str)]) -> LoadOptions {
    LoadOptions {
        env: Env::from_pairs(env.iter().copied()),
        ..LoadOptions::default()
    }
}

fn base() -> Value {
    json!({
        "issuer": "https://auth.example.org/dex",
        "storage": {"type": "memory"},
        "web": {"http": "127.0.0.1:5556"},
        "connectors": [{"type": "mockCallback", "id": "mock", "name": "Mock"}],
        "staticClients": [{
            "id": "app",
            "name": "App",
            "secret": "app-secret",
            "redirectURIs": ["https://app.example.org/callback"]
        }]
    })
}

fn load_json_at(value: &Value, path: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    load_str(&value.to_string(), Path::new(path), &options(env))
}

fn load_json(value: &Value, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    load_json_at(value, "/etc/oxidex/config.json", env)
}

fn loads(value: &Value) -> Loaded {
    match load_json(value, &[]) {
        Ok(loaded) => loaded,
        Err(e) => panic!("expected the config to load, got:\n{e}"),
    }
}

fn fails(value: &Value, env: &[(&str, &str)]) -> ConfigError {
    match load_json(value, env) {
        Ok(_) => panic!("expected the config to be rejected: {value}"),
        Err(e) => e,
    }
}

/// Asserts one problem has exactly this key path and a message containing `gist`.
#[track_caller]
fn assert_has(problems: &[Problem], path: &str, gist: &str) {
    assert!(
        problems
            .iter()
            .any(|p| p.path == path && p.message.contains(gist)),
        "no problem at {path:?} containing {gist:?}; got:\n{}",
        problems
            .iter()
            .map(|p| format!("  {p}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[track_caller]
fn rejects(mutate: impl FnOnce(&mut Value), path: &str, gist: &str) {
    let mut config = base();
    mutate(&mut config);
    assert_has(&fails(&config, &[]).problems, path, gist);
}

fn set(config: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = config.pointer_mut(parent).unwrap();
    match target {
        Value::Object(map) => {
            map.insert(key.to_owned(), value);
        }
        Value::Array(items) => {
            let index = key.parse::<usize>().unwrap();
            if index == items.len() {
                items.push(value);
            } else {
                items[index] = value;
            }
        }
        _ => panic!("cannot set {pointer}"),
    }
}

fn remove(config: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    config
        .pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(key);
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

// ---- Dex's development config ----------------------------------------------------

#[test]
fn dex_dev_config_yaml_is_accepted() {
    let loaded = load_file(&fixture("dex-dev-config.yaml"), &options(&[])).unwrap();
    let s = &loaded.settings;
    assert_eq!(s.issuer.path_prefix, "/oxidex");
    assert_eq!(
        s.storage,
        StorageSettings::Sqlite3 {
            file: "target/dev/oxidex.db".into()
        }
    );
    assert_eq!(s.web.http.as_deref(), Some("127.0.0.1:5556"));
    assert_eq!(s.telemetry_http.as_deref(), Some("127.0.0.1:5558"));
    assert_eq!(s.clients.len(), 1);
    assert_eq!(s.clients[0].secret, "ZGV2LWFwcC1ub3QtYS1yZWFsLXNlY3JldA");
    assert_eq!(s.connectors[0].kind, "mockCallback");
    assert_eq!(s.connectors[0].config, json!({}));
    assert!(s.enable_password_db);
    let p = &s.passwords[0];
    assert_eq!(p.email, "dev@example.org");
    assert_eq!(p.hash, HASH);
    assert_eq!(
        (p.name.as_str(), p.preferred_username.as_str()),
        ("Dev Person", "devp")
    );
    assert_eq!(p.groups, ["devs", "devs/leads"]);
    assert!(p.email_verified);
    assert_eq!(p.user_id, "5f0c3a7e-9d1b-4c61-a2f4-3b8e6d0c9a15");
    // Dex's gRPC API is served, plaintext as in Dex without a certificate.
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let grpc = s.grpc.as_ref().expect("grpc block");
    assert_eq!(grpc.addr, "127.0.0.1:5557");
    assert_eq!(grpc.tls, None);
}

#[test]
fn grpc_block_is_checked_with_dex_texts() {
    let refused = |grpc: Value, path: &str, text: &str| {
        rejects(|config| set(config, "/grpc", grpc), path, text);
    };
    refused(
        json!({"addr": "127.0.0.1:5557", "tlsCert": "c.pem"}),
        "grpc",
        "must specific both a gRPC TLS cert and key",
    );
    refused(
        json!({"addr": "127.0.0.1:5557", "tlsClientCA": "ca.pem"}),
        "grpc.tlsClientCA",
        "cannot specify gRPC TLS client CA without a gRPC TLS cert",
    );
    refused(
        json!({"tlsCert": "c.pem", "tlsKey": "k.pem"}),
        "grpc.addr",
        "no address specified for gRPC",
    );
    refused(
        json!({"addr": "127.0.0.1:5557", "tlsMinVersion": "1.1"}),
        "grpc.tlsMinVersion",
        "supported TLS versions are: 1.2, 1.3",
    );

    let mut config = base();
    set(
        &mut config,
        "/grpc",
        json!({"addr": "127.0.0.1:5557", "tlsCert": "c.pem", "tlsKey": "k.pem", "tlsClientCA": "ca.pem"}),
    );
    let grpc = loads(&config).settings.grpc.expect("grpc");
    let tls = grpc.tls.expect("tls");
    assert_eq!(tls.client_ca, Some("ca.pem".into()));
    let mut config = base();
    set(&mut config, "/grpc", json!({}));
    assert_eq!(loads(&config).settings.grpc, None, "no addr: no API");
}

#[test]
fn dex_dev_config_json_twin_is_accepted_and_equal() {
    let yaml = load_file(&fixture("dex-dev-config.yaml"), &options(&[])).unwrap();
    let json = load_file(&fixture("dex-dev-config.json"), &options(&[])).unwrap();
    assert_eq!(redacted_json(&yaml.settings), redacted_json(&json.settings));
    assert_eq!(yaml.warnings, json.warnings);
}

// ---- Bad configs, each named by its key path ------------------------------------

#[test]
fn rejects_missing_issuer() {
    rejects(|c| remove(c, "/issuer"), "issuer", "no issuer specified");
}

#[test]
fn rejects_bad_issuer_urls() {
    rejects(
        |c| set(c, "/issuer", json!("/dex")),
        "issuer",
        "not an absolute URL",
    );
    rejects(
        |c| set(c, "/issuer", json!("ftp://auth.example.org")),
        "issuer",
        "http or https",
    );
    rejects(
        |c| set(c, "/issuer", json!("https://auth.example.org/?x=1")),
        "issuer",
        "query",
    );
    rejects(
        |c| set(c, "/issuer", json!("https://auth.example.org/#top")),
        "issuer",
        "fragment",
    );
}

#[test]
fn rejects_missing_storage() {
    rejects(|c| remove(c, "/storage"), "storage", "no storage supplied");
}

#[test]
fn rejects_unsupported_and_unknown_storage() {
    rejects(
        |c| set(c, "/storage/type", json!("mysql")),
        "storage.type",
        "not supported by oxidex",
    );
    rejects(
        |c| set(c, "/storage/type", json!("redis")),
        "storage.type",
        "unknown storage type \"redis\"",
    );
    rejects(
        |c| set(c, "/storage/type", json!("sqlite3")),
        "storage.config.file",
        "database file",
    );
}

#[test]
fn rejects_web_without_listener_or_tls_files() {
    rejects(|c| set(c, "/web", json!({})), "web", "HTTP/HTTPS address");
    let https = json!({"https": "0.0.0.0:5554"});
    rejects(
        |c| set(c, "/web", https.clone()),
        "web.tlsCert",
        "no cert specified for HTTPS",
    );
    rejects(
        |c| set(c, "/web", https),
        "web.tlsKey",
        "no private key specified for HTTPS",
    );
    let mut config = base();
    set(
        &mut config,
        "/web",
        json!({"http": "127.0.0.1:5556", "https": "0.0.0.0:5554",
            "tlsCert": "/etc/oxidex/tls.crt", "tlsKey": "/etc/oxidex/tls.key",
            "tlsMinVersion": "1.3"}),
    );
    let web = loads(&config).settings.web;
    assert_eq!(
        (web.http.as_deref(), web.https.as_deref()),
        (Some("127.0.0.1:5556"), Some("0.0.0.0:5554"))
    );
    assert_eq!(web.tls_min_version.as_deref(), Some("1.3"));
}

#[test]
fn listen_addresses_are_checked_at_load() {
    for (pointer, key) in [
        ("/web/http", "web.http"),
        ("/web/https", "web.https"),
        ("/telemetry", "telemetry.http"),
    ] {
        for (addr, gist) in [
            ("localhost", "missing port"),
            ("::1:80", "too many colons"),
            ("localhost:http", "port must be a number"),
            ("localhost:70000", "port must be a number"),
        ] {
            rejects(
                |c| {
                    set(c, "/web/tlsCert", json!("/tls.crt"));
                    set(c, "/web/tlsKey", json!("/tls.key"));
                    if pointer == "/telemetry" {
                        set(c, pointer, json!({"http": addr}));
                    } else {
                        set(c, pointer, json!(addr));
                    }
                },
                key,
                gist,
            );
        }
    }
    for addr in [":5556", "[::1]:5556", "localhost:5556", "0.0.0.0:0"] {
        let mut config = base();
        set(&mut config, "/web/http", json!(addr));
        set(&mut config, "/telemetry", json!({"http": addr}));
        loads(&config);
    }
}

#[test]
fn rejects_bad_tls_versions() {
    rejects(
        |c| set(c, "/web/tlsMinVersion", json!("1.1")),
        "web.tlsMinVersion",
        "supported TLS versions are: 1.2, 1.3",
    );
    rejects(
        |c| {
            set(c, "/web/tlsMinVersion", json!("1.3"));
            set(c, "/web/tlsMaxVersion", json!("1.2"));
        },
        "web.tlsMinVersion",
        "greater than",
    );
}

#[test]
fn rejects_day_durations_with_a_hint() {
    rejects(
        |c| set(c, "/expiry", json!({"idTokens": "1d"})),
        "expiry.idTokens",
        "Go durations have no d",
    );
    rejects(
        |c| {
            set(
                c,
                "/expiry",
                json!({"refreshTokens": {"absoluteLifetime": "90days"}}),
            )
        },
        "expiry.refreshTokens.absoluteLifetime",
        "invalid config value \"90days\"",
    );
    rejects(
        |c| set(c, "/expiry", json!({"authRequests": "0s"})),
        "expiry.authRequests",
        "greater than zero",
    );
}

#[test]
fn rejects_bad_local_signer() {
    rejects(
        |c| set(c, "/signer", json!({"type": "local", "config": {}})),
        "signer.config.keysRotationPeriod",
        "must be specified",
    );
    rejects(
        |c| {
            set(
                c,
                "/signer",
                json!({"type": "local", "config": {"keysRotationPeriod": "6h", "algorithm": "HS256"}}),
            )
        },
        "signer.config.algorithm",
        "unsupported local signer algorithm \"HS256\"",
    );
    rejects(
        |c| set(c, "/signer", json!({"type": "vault"})),
        "signer.type",
        "not supported by oxidex",
    );
}

#[test]
fn rejects_bad_logger() {
    rejects(
        |c| set(c, "/logger", json!({"format": "xml"})),
        "logger.format",
        "log format is not one of the supported values",
    );
    rejects(
        |c| set(c, "/logger", json!({"level": "loud"})),
        "logger.level",
        "invalid log level",
    );
}

#[test]
fn rejects_bad_response_types_and_pkce_methods() {
    rejects(
        |c| {
            set(
                c,
                "/oauth2",
                json!({"responseTypes": ["code", "code_token"]}),
            )
        },
        "oauth2.responseTypes[1]",
        "unsupported response_type \"code_token\"",
    );
    rejects(
        |c| {
            set(
                c,
                "/oauth2",
                json!({"pkce": {"codeChallengeMethodsSupported": ["S512"]}}),
            )
        },
        "oauth2.pkce.codeChallengeMethodsSupported[0]",
        "unsupported PKCE challenge method",
    );
}

#[test]
fn rejects_client_without_name_or_id() {
    rejects(
        |c| remove(c, "/staticClients/0/name"),
        "staticClients[0].name",
        "Name field is required",
    );
    rejects(
        |c| remove(c, "/staticClients/0/id"),
        "staticClients[0].id",
        "ID or IDEnv field is required",
    );
    rejects(
        |c| set(c, "/staticClients/0/idEnv", json!("APP_ID")),
        "staticClients[0].idEnv",
        "ID and IDEnv fields are exclusive",
    );
}

#[test]
fn rejects_client_without_secret_unless_public() {
    rejects(
        |c| remove(c, "/staticClients/0/secret"),
        "staticClients[0].secret",
        "Secret or SecretEnv field is required",
    );
    let mut public = base();
    remove(&mut public, "/staticClients/0/secret");
    set(&mut public, "/staticClients/0/public", json!(true));
    assert!(loads(&public).settings.clients[0].public);
}

#[test]
fn rejects_two_secret_forms_naming_both() {
    rejects(
        |c| set(c, "/staticClients/0/secretFile", json!("/run/secrets/app")),
        "staticClients[0].secretFile",
        "both staticClients[0].secret and staticClients[0].secretFile are set",
    );
}

#[test]
fn rejects_relative_redirect_uri() {
    rejects(
        |c| {
            set(
                c,
                "/staticClients/0/redirectURIs",
                json!(["https://ok.example/cb", "/callback"]),
            )
        },
        "staticClients[0].redirectURIs[1]",
        "not an absolute URL",
    );
}

#[test]
fn accepts_the_device_callback_path_as_a_redirect_uri() {
    // Dex HEAD makes confidential clients register `<issuer path>/device/callback`.
    let mut config = base();
    set(
        &mut config,
        "/staticClients/0/redirectURIs",
        json!([
            "https://ok.example/cb",
            "/dex/device/callback",
            "/device/callback"
        ]),
    );
    let s = loads(&config).settings;
    assert_eq!(s.clients[0].redirect_uris.len(), 3);
}

#[test]
fn rejects_duplicate_client_ids() {
    rejects(
        |c| {
            let client = c["staticClients"][0].clone();
            c["staticClients"].as_array_mut().unwrap().push(client);
        },
        "staticClients[1].id",
        "duplicate client id \"app\" (also staticClients[0])",
    );
}

#[test]
fn rejects_unknown_allowed_connector() {
    rejects(
        |c| {
            set(
                c,
                "/staticClients/0/allowedConnectors",
                json!(["mock", "forgejo"]),
            )
        },
        "staticClients[0].allowedConnectors[1]",
        "no connector with id \"forgejo\"",
    );
}

#[test]
fn rejects_incomplete_connectors() {
    rejects(
        |c| remove(c, "/connectors/0/name"),
        "connectors[0].name",
        "ID, Type and Name fields are required",
    );
    rejects(
        |c| remove(c, "/connectors/0/type"),
        "connectors[0].type",
        "ID, Type and Name fields are required",
    );
}

#[test]
fn rejects_unimplemented_unknown_and_reserved_connector_types() {
    rejects(
        |c| set(c, "/connectors/0/type", json!("gitlab")),
        "connectors[0].type",
        "\"gitlab\" is not supported by oxidex yet",
    );
    rejects(
        |c| set(c, "/connectors/0/type", json!("forgejo")),
        "connectors[0].type",
        "unknown connector type \"forgejo\"",
    );
    rejects(
        |c| set(c, "/connectors/0/type", json!("local")),
        "connectors[0].type",
        "enablePasswordDB",
    );
    rejects(
        |c| set(c, "/connectors/0/id", json!("local")),
        "connectors[0].id",
        "reserved",
    );
}

#[test]
fn rejects_duplicate_connector_ids_and_bad_grant_types() {
    rejects(
        |c| {
            let connector = c["connectors"][0].clone();
            c["connectors"].as_array_mut().unwrap().push(connector);
        },
        "connectors[1].id",
        "duplicate connector id \"mock\"",
    );
    rejects(
        |c| {
            set(
                c,
                "/connectors/0/grantTypes",
                json!(["authorization_code", "magic"]),
            )
        },
        "connectors[0].grantTypes[1]",
        "unknown grant type \"magic\" for connector \"mock\"",
    );
}

#[test]
fn rejects_static_passwords_without_password_db() {
    rejects(
        |c| {
            set(
                c,
                "/staticPasswords",
                json!([{"email": "a@example.org", "hash": HASH}]),
            )
        },
        "staticPasswords",
        "cannot specify static passwords without enabling password db",
    );
}

#[test]
fn rejects_bad_password_hashes() {
    let with = |entry: Value| {
        move |c: &mut Value| {
            set(c, "/enablePasswordDB", json!(true));
            set(c, "/staticPasswords", json!([entry]));
        }
    };
    rejects(
        with(json!({"email": "a@example.org"})),
        "staticPasswords[0].hash",
        "no password hash provided",
    );
    rejects(
        with(json!({"email": "a@example.org", "hash": "hunter2"})),
        "staticPasswords[0].hash",
        "malformed bcrypt hash",
    );
    let cheap = HASH.replacen("$10$", "$04$", 1);
    rejects(
        with(json!({"email": "a@example.org", "hash": cheap})),
        "staticPasswords[0].hash",
        "bcrypt cost 4 is outside 10–16",
    );
}

#[test]
fn rejects_duplicate_emails_case_insensitively() {
    rejects(
        |c| {
            set(c, "/enablePasswordDB", json!(true));
            set(
                c,
                "/staticPasswords",
                json!([{"email": "A@example.org", "hash": HASH}, {"email": "a@EXAMPLE.org", "hash": HASH}]),
            );
        },
        "staticPasswords[1].email",
        "duplicate email \"a@example.org\"",
    );
}

#[test]
fn rejects_bad_password_connector() {
    rejects(
        |c| set(c, "/oauth2", json!({"passwordConnector": "ldap"})),
        "oauth2.passwordConnector",
        "no connector with id \"ldap\"",
    );
    rejects(
        |c| set(c, "/oauth2", json!({"passwordConnector": "local"})),
        "oauth2.passwordConnector",
        "enablePasswordDB",
    );
    rejects(
        |c| set(c, "/oauth2", json!({"passwordConnector": "mock"})),
        "oauth2.passwordConnector",
        "cannot check passwords",
    );
}

#[test]
fn rejects_no_login_method() {
    rejects(
        |c| set(c, "/connectors", json!([])),
        "connectors",
        "no connectors specified",
    );
}

#[test]
fn rejects_type_errors_with_their_path() {
    rejects(
        |c| set(c, "/web/http", json!(5556)),
        "web.http",
        "expected a string",
    );
    rejects(
        |c| set(c, "/enablePasswordDB", json!("true")),
        "enablePasswordDB",
        "expected a boolean",
    );
    rejects(
        |c| set(c, "/staticClients/0/redirectURIs", json!("https://a/cb")),
        "staticClients[0].redirectURIs",
        "expected a list of strings",
    );
    rejects(
        |c| set(c, "/connectors/0/config", json!("x")),
        "connectors[0].config",
        "expected an object",
    );
}

#[test]
fn rejects_mfa_and_reports_syntax_errors() {
    rejects(
        |c| set(c, "/mfa", json!({"authenticators": []})),
        "mfa",
        "not supported by oxidex",
    );
    let err = load_str("issuer: [unclosed", Path::new("c.yaml"), &options(&[])).unwrap_err();
    assert!(err.problems[0].message.contains("invalid YAML"), "{err}");
    let err = load_str("{\"issuer\": }", Path::new("c.json"), &options(&[])).unwrap_err();
    assert!(err.problems[0].message.contains("invalid JSON"), "{err}");
}

#[test]
fn refuses_unset_secret_env_for_confidential_clients() {
    let mut config = base();
    remove(&mut config, "/staticClients/0/secret");
    set(
        &mut config,
        "/staticClients/0/secretEnv",
        json!("APP_SECRET"),
    );
    let err = fails(&config, &[]);
    assert_has(
        &err.problems,
        "staticClients[0].secretEnv",
        "Dex would silently give client \"app\" an empty secret",
    );
    // A public client may have no secret.
    set(&mut config, "/staticClients/0/public", json!(true));
    assert_eq!(loads(&config).settings.clients[0].secret, "");
}

// ---- All at once --------------------------------------------------------------

#[test]
fn collects_every_problem_at_once() {
    let config = json!({
        "issuer": "",
        "storage": {"type": "etcd"},
        "web": {},
        "expiry": {"idTokens": "1d"},
        "logger": {"format": "xml"},
        "staticClients": [{"id": "a"}],
        "connectors": [{"type": "gitlab", "id": "gl", "name": "GitLab"}],
        "staticPasswords": [{"email": "x@example.org"}]
    });
    let err = fails(&config, &[]);
    for (path, gist) in [
        ("issuer", "no issuer"),
        ("storage.type", "not supported"),
        ("web", "address"),
        ("expiry.idTokens", "no d"),
        ("logger.format", "xml"),
        ("staticClients[0].name", "Name"),
        ("staticClients[0].secret", "Secret"),
        ("connectors[0].type", "gitlab"),
        ("staticPasswords", "password db"),
        ("staticPasswords[0].hash", "no password hash"),
    ] {
        assert_has(&err.problems, path, gist);
    }
    let text = err.to_string();
    assert_eq!(
        text.lines().count(),
        err.problems.len() + err.warnings.len()
    );
    assert!(text.starts_with("issuer: no issuer specified"), "{text}");
}

// ---- Keys: unknown, strict, case-insensitive ---------------------------------

#[test]
fn unknown_keys_warn_with_path_and_fail_when_strict() {
    let mut config = base();
    set(
        &mut config,
        "/staticClients/0/redirect_uris",
        json!(["https://x/cb"]),
    );
    set(&mut config, "/colour", json!("blue"));
    set(
        &mut config,
        "/connectors/0/config",
        json!({"anything": {"goes": 1}}),
    );
    let loaded = loads(&config);
    assert_has(
        &loaded.warnings,
        "staticClients[0].redirect_uris",
        "unknown key (did you mean \"redirectURIs\"?)",
    );
    assert_has(&loaded.warnings, "colour", "unknown key");
    // Connector configs are decoded by their type in the same pass: their unknown
    // keys are reported the same way.
    assert_has(
        &loaded.warnings,
        "connectors[0].config.anything",
        "unknown key",
    );

    let strict = LoadOptions {
        strict: true,
        ..options(&[])
    };
    let err = load_str(&config.to_string(), Path::new("c.json"), &strict).unwrap_err();
    assert_has(
        &err.problems,
        "staticClients[0].redirect_uris",
        "unknown key",
    );
    assert_has(&err.problems, "colour", "unknown key");
    assert_has(
        &err.problems,
        "connectors[0].config.anything",
        "unknown key",
    );

    let err = fails(&config, &[("DEX_CONFIG_DISALLOW_UNKNOWN_FIELDS", "true")]);
    assert_has(&err.problems, "colour", "unknown key");
    assert!(load_json(&config, &[("DEX_CONFIG_DISALLOW_UNKNOWN_FIELDS", "0")]).is_ok());
}

#[test]
fn keys_match_case_insensitively_like_go() {
    let yaml = r#"
Issuer: https://auth.example.org
STORAGE: {Type: memory}
web: {HTTP: "127.0.0.1:5556"}
Connectors: [{TYPE: mockCallback, Id: mock, name: Mock}]
staticclients:
- id: app
  name: App
  Secret: s
  redirectUris: [https://app.example.org/cb]
  Public: yes
"#;
    let loaded = load_str(yaml, Path::new("c.yaml"), &options(&[])).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let s = loaded.settings;
    assert_eq!(s.issuer.url, "https://auth.example.org");
    assert_eq!(s.clients[0].redirect_uris, ["https://app.example.org/cb"]);
    assert!(
        s.clients[0].public,
        "YAML 1.1 `yes` is a boolean, as in Dex"
    );

    let mut config = base();
    set(&mut config, "/Issuer", json!("https://other.example.org"));
    assert_has(
        &fails(&config, &[]).problems,
        "Issuer",
        "also given as \"issuer\"",
    );
}

#[test]
fn yaml_scalars_become_strings_where_strings_are_expected() {
    let yaml = "issuer: https://a.example.org\nstorage: {type: memory}\nweb: {http: ':5556'}\n\
                connectors: [{type: mockCallback, id: 1234, name: Mock}]\n";
    let loaded = load_str(yaml, Path::new("c.yaml"), &options(&[])).unwrap();
    assert_eq!(loaded.settings.connectors[0].id, "1234");
}

// ---- Env forms ----------------------------------------------------------------

#[test]
fn env_forms_for_ids_secrets_and_hashes() {
    let mut config = base();
    remove(&mut config, "/staticClients/0/id");
    remove(&mut config, "/staticClients/0/secret");
    set(&mut config, "/staticClients/0/idEnv", json!("APP_ID"));
    set(
        &mut config,
        "/staticClients/0/secretEnv",
        json!("APP_SECRET"),
    );
    set(&mut config, "/enablePasswordDB", json!(true));
    set(
        &mut config,
        "/staticPasswords",
        json!([{"email": "a@example.org", "hashFromEnv": "ADMIN_HASH", "username": "admin"}]),
    );
    let env = [
        ("APP_ID", "grafana"),
        ("APP_SECRET", "pa$$word"),
        ("ADMIN_HASH", HASH),
    ];
    let s = load_json(&config, &env).unwrap().settings;
    assert_eq!(s.clients[0].id, "grafana");
    assert_eq!(
        s.clients[0].secret, "pa$$word",
        "secretEnv values are not expanded"
    );
    assert_eq!(s.passwords[0].hash, HASH);
    assert_eq!(s.passwords[0].name, "admin", "name defaults to username");

    let err = fails(&config, &[("APP_SECRET", "x"), ("ADMIN_HASH", HASH)]);
    assert_has(
        &err.problems,
        "staticClients[0].idEnv",
        "\"APP_ID\" is unset or empty",
    );
    let err = fails(&config, &[("APP_ID", "x"), ("APP_SECRET", "x")]);
    assert_has(
        &err.problems,
        "staticPasswords[0].hashFromEnv",
        "\"ADMIN_HASH\" is unset or empty",
    );
}

#[test]
fn var_expansion_only_in_config_blocks() {
    let mut config = base();
    set(&mut config, "/issuer", json!("https://$HOST/dex"));
    set(
        &mut config,
        "/staticClients/0/secret",
        json!("$NOT_EXPANDED"),
    );
    set(
        &mut config,
        "/storage",
        json!({"type": "sqlite3", "config": {"file": "${STATE}/oxidex.db"}}),
    );
    set(
        &mut config,
        "/signer",
        json!({"type": "local", "config": {"keysRotationPeriod": "$ROTATE"}}),
    );
    set(
        &mut config,
        "/connectors/0",
        // mockCallback keeps its (unknown) keys as written, for any type to see.
        json!({"type": "mockCallback", "id": "up", "name": "Up", "config": {
            "issuer": "https://$HOST",
            "clientSecret": "pa$$word",
            "scopes": ["$SCOPE", ["$SCOPE"]],
            "claimMapping": {"email": "${EMAIL_CLAIM}"},
            "port": 5,
            "trailing": "cost$",
            "unset": "[$UNSET]"
        }}),
    );
    let env = [
        ("HOST", "id.example.org"),
        ("STATE", "/var/lib/oxidex"),
        ("ROTATE", "12h"),
        ("SCOPE", "groups"),
        ("EMAIL_CLAIM", "mail"),
    ];
    let s = load_json(&config, &env).unwrap().settings;
    assert_eq!(s.issuer.url, "https://$HOST/dex");
    assert_eq!(s.clients[0].secret, "$NOT_EXPANDED");
    assert_eq!(
        s.storage,
        StorageSettings::Sqlite3 {
            file: "/var/lib/oxidex/oxidex.db".into()
        }
    );
    assert_eq!(s.signer.rotation_period, Duration::from_secs(12 * 3600));
    assert_eq!(
        s.connectors[0].config,
        json!({
            "issuer": "https://id.example.org",
            "clientSecret": "paword",
            "scopes": ["groups", ["$SCOPE"]],
            "claimMapping": {"email": "mail"},
            "port": 5,
            "trailing": "cost$",
            "unset": "[]"
        })
    );

    // DEX_EXPAND_ENV=false keeps every `$` (the only way to write `pa$$word` in Dex).
    let mut env_off = env.to_vec();
    env_off.push(("DEX_EXPAND_ENV", "false"));
    set(
        &mut config,
        "/signer/config/keysRotationPeriod",
        json!("6h"),
    );
    set(&mut config, "/storage/config/file", json!("/tmp/x.db"));
    let s = load_json(&config, &env_off).unwrap().settings;
    assert_eq!(s.connectors[0].config["clientSecret"], "pa$$word");
    assert_eq!(s.connectors[0].config["issuer"], "https://$HOST");
}

// ---- File forms ---------------------------------------------------------------

fn secret_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("client"), "client-from-file\n").unwrap();
    std::fs::write(dir.path().join("upstream"), "upstream-from-file\r\n").unwrap();
    std::fs::write(dir.path().join("hash"), format!("{HASH}\n")).unwrap();
    std::fs::write(dir.path().join("empty"), "").unwrap();
    dir
}

#[test]
fn file_forms_are_read_and_trimmed() {
    let dir = secret_dir();
    let d = dir.path().to_str().unwrap();
    let mut config = base();
    remove(&mut config, "/staticClients/0/secret");
    set(
        &mut config,
        "/staticClients/0/secretFile",
        json!("$CREDENTIALS_DIRECTORY/client"),
    );
    set(&mut config, "/enablePasswordDB", json!(true));
    set(
        &mut config,
        "/staticPasswords",
        json!([{"email": "a@example.org", "hashFile": format!("{d}/hash")}]),
    );
    set(
        &mut config,
        "/connectors/0",
        json!({"type": "gitea", "id": "forgejo", "name": "Forgejo", "config": {
            "baseURL": "https://git.example.org",
            "clientID": "oxidex",
            "redirectURI": "https://auth.example.org/dex/callback",
            "clientSecretFile": "$CREDENTIALS_DIRECTORY/upstream",
            "nested": {"tokenFile": format!("{d}/client")}
        }}),
    );
    let s = load_json(&config, &[("CREDENTIALS_DIRECTORY", d)])
        .unwrap()
        .settings;
    assert_eq!(s.clients[0].secret, "client-from-file");
    assert_eq!(s.passwords[0].hash, HASH);
    assert_eq!(
        s.connectors[0].config,
        json!({"baseURL": "https://git.example.org", "clientID": "oxidex",
               "redirectURI": "https://auth.example.org/dex/callback",
               "clientSecret": "upstream-from-file", "nested": {"token": "client-from-file"}})
    );
}

#[test]
fn file_form_problems_name_key_and_file_never_content() {
    let dir = secret_dir();
    let d = dir.path().to_str().unwrap();
    let mut config = base();
    remove(&mut config, "/staticClients/0/secret");
    set(
        &mut config,
        "/staticClients/0/secretFile",
        json!(format!("{d}/missing")),
    );
    set(&mut config, "/enablePasswordDB", json!(true));
    set(
        &mut config,
        "/staticPasswords",
        json!([{"email": "a@example.org", "hashFile": format!("{d}/empty")}]),
    );
    set(
        &mut config,
        "/connectors/0",
        json!({"type": "gitea", "id": "forgejo", "name": "Forgejo", "config": {
            "clientSecret": "inline-upstream",
            "clientSecretFile": format!("{d}/upstream")
        }}),
    );
    let err = fails(&config, &[]);
    assert_has(
        &err.problems,
        "staticClients[0].secretFile",
        &format!("{d}/missing"),
    );
    assert_has(&err.problems, "staticPasswords[0].hashFile", "is empty");
    assert_has(
        &err.problems,
        "connectors[0].config.clientSecretFile",
        "both connectors[0].config.clientSecret and connectors[0].config.clientSecretFile are set",
    );
    let text = err.to_string();
    assert!(
        !text.contains("upstream-from-file") && !text.contains("inline-upstream"),
        "{text}"
    );
}

// ---- The Nix-store rule -------------------------------------------------------

#[test]
fn nix_store_refuses_inline_client_secret_and_accepts_secret_file() {
    let in_store = format!("{STORE_DIR}/config.json");
    let err = load_json_at(&base(), &in_store, &[]).unwrap_err();
    assert_has(
        &err.problems,
        "staticClients[0].secret",
        "inline secret in a world-readable Nix store file",
    );
    assert_has(
        &err.problems,
        "staticClients[0].secret",
        "use staticClients[0].secretFile or secretEnv",
    );
    assert!(!err.to_string().contains("app-secret"));

    let dir = secret_dir();
    let mut config = base();
    remove(&mut config, "/staticClients/0/secret");
    set(
        &mut config,
        "/staticClients/0/secretFile",
        json!(dir.path().join("client")),
    );
    let loaded = load_json_at(&config, &in_store, &[]).unwrap();
    assert_eq!(loaded.settings.clients[0].secret, "client-from-file");

    // Outside the store the inline secret is fine.
    assert!(load_json_at(&base(), "/etc/oxidex/config.json", &[]).is_ok());
}

#[test]
fn nix_store_refuses_inline_connector_and_password_secrets() {
    let mut config = base();
    set(&mut config, "/enablePasswordDB", json!(true));
    set(
        &mut config,
        "/staticPasswords",
        json!([{"email": "a@example.org", "hash": HASH}]),
    );
    remove(&mut config, "/staticClients/0/secret");
    set(
        &mut config,
        "/staticClients/0/secretEnv",
        json!("APP_SECRET"),
    );
    set(
        &mut config,
        "/connectors/0",
        json!({"type": "oidc", "id": "up", "name": "Up", "config": {
            "issuer": "https://id.example.org",
            "clientID": "oxidex",
            "redirectURI": "https://auth.example.org/dex/callback",
            "clientSecret": "inline!",
            "extra": {"bindPW": "also-inline"}
        }}),
    );
    let path = format!("{STORE_DIR}/etc/oxidex.yaml");
    let env = [("APP_SECRET", "s"), ("UP_SECRET", "t")];
    let err = load_str(&config.to_string(), Path::new(&path), &options(&env)).unwrap_err();
    assert_has(
        &err.problems,
        "staticPasswords[0].hash",
        "use staticPasswords[0].hashFile or hashFromEnv",
    );
    assert_has(
        &err.problems,
        "connectors[0].config.clientSecret",
        "use connectors[0].config.clientSecretFile",
    );
    assert_has(
        &err.problems,
        "connectors[0].config.extra.bindPW",
        "Nix store",
    );
    assert_eq!(err.problems.len(), 3, "{err}");

    // `$VAR` references carry no secret.
    set(
        &mut config,
        "/connectors/0/config/clientSecret",
        json!("$UP_SECRET"),
    );
    set(
        &mut config,
        "/connectors/0/config/extra/bindPW",
        json!("${UP_SECRET}"),
    );
    remove(&mut config, "/staticPasswords/0/hash");
    let dir = secret_dir();
    set(
        &mut config,
        "/staticPasswords/0/hashFile",
        json!(dir.path().join("hash")),
    );
    let s = load_str(&config.to_string(), Path::new(&path), &options(&env))
        .unwrap()
        .settings;
    assert_eq!(s.connectors[0].config["clientSecret"], "t");
}

// ---- Resolution ---------------------------------------------------------------

#[test]
fn defaults_match_dex() {
    let loaded = loads(&base());
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let s = loaded.settings;
    assert_eq!(s.issuer.path_prefix, "/dex");
    assert_eq!(s.expiry.id_tokens, Duration::from_secs(24 * 3600));
    assert_eq!(s.expiry.auth_requests, Duration::from_secs(24 * 3600));
    assert_eq!(s.expiry.device_requests, Duration::from_secs(300));
    assert_eq!(s.expiry.refresh_tokens.reuse_interval, Duration::ZERO);
    assert_eq!(s.expiry.refresh_tokens.absolute_lifetime, None);
    assert_eq!(s.signer.rotation_period, Duration::from_secs(6 * 3600));
    assert_eq!(s.signer.algorithm, crate::keys::SigningAlgorithm::RS256);
    assert_eq!(s.gc_interval, Duration::from_secs(300));
    assert_eq!(s.logger.level, "info");
    assert_eq!(s.logger.format, LogFormat::Text);
    assert_eq!(s.oauth2.response_types, ["code"]);
    assert_eq!(s.oauth2.pkce_methods, ["S256", "plain"]);
    assert_eq!(
        s.oauth2.grant_types,
        [
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code",
            "urn:ietf:params:oauth:grant-type:token-exchange"
        ]
    );
    assert_eq!(s.frontend.theme, "light");
    assert_eq!(s.frontend.issuer_display_name, "oxidex");
    assert_eq!(s.frontend.dir, None);
    assert_eq!(s.web.allowed_headers, ["Authorization"]);
    assert_eq!(s.telemetry_http, None);
}

#[test]
fn grant_types_are_intersected_and_sorted() {
    let mut config = base();
    set(&mut config, "/enablePasswordDB", json!(true));
    set(
        &mut config,
        "/staticPasswords",
        json!([{"email": "a@example.org", "hash": HASH}]),
    );
    set(
        &mut config,
        "/oauth2",
        json!({"responseTypes": ["code", "id_token", "token"], "passwordConnector": "local"}),
    );
    let s = loads(&config).settings;
    assert_eq!(
        s.oauth2.grant_types,
        [
            "authorization_code",
            "implicit",
            "password",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code",
            "urn:ietf:params:oauth:grant-type:token-exchange"
        ]
    );
    assert_eq!(s.oauth2.response_types, ["code", "id_token", "token"]);

    set(
        &mut config,
        "/oauth2/grantTypes",
        json!([
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:token-exchange",
            "bogus",
            "authorization_code"
        ]),
    );
    let loaded = loads(&config);
    assert_eq!(
        loaded.settings.oauth2.grant_types,
        [
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:token-exchange"
        ]
    );
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert_has(
        &loaded.warnings,
        "oauth2.grantTypes[2]",
        "unknown grant type \"bogus\"",
    );
}

#[test]
fn client_credentials_is_opt_in_as_dex_head() {
    let config = base();
    let default = loads(&config).settings.oauth2.grant_types;
    assert!(!default.iter().any(|g| g == "client_credentials"));

    let flagged = load_json(
        &config,
        &[("DEX_CLIENT_CREDENTIAL_GRANT_ENABLED_BY_DEFAULT", "true")],
    )
    .unwrap()
    .settings
    .oauth2
    .grant_types;
    assert!(flagged.iter().any(|g| g == "client_credentials"));

    // A configured list replaces the defaults, flag or not.
    let mut listed = config.clone();
    set(
        &mut listed,
        "/oauth2",
        json!({"grantTypes": ["client_credentials", "authorization_code"]}),
    );
    let loaded = loads(&listed);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(
        loaded.settings.oauth2.grant_types,
        ["authorization_code", "client_credentials"]
    );
    let flagged = load_json(
        &listed,
        &[("DEX_CLIENT_CREDENTIAL_GRANT_ENABLED_BY_DEFAULT", "false")],
    )
    .unwrap()
    .settings
    .oauth2
    .grant_types;
    assert_eq!(flagged, ["authorization_code", "client_credentials"]);
}

#[test]
fn client_credentials_claims_are_read() {
    let mut config = base();
    set(
        &mut config,
        "/staticClients/0/clientCredentialsClaims",
        json!({"groups": ["robots", "ci"]}),
    );
    let loaded = loads(&config);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(
        loaded.settings.clients[0].client_credentials_groups,
        ["robots", "ci"]
    );
    set(
        &mut config,
        "/staticClients/0/clientCredentialsClaims",
        json!({"groups": "robots"}),
    );
    let problems = fails(&config, &[]).to_string();
    assert!(
        problems.contains("staticClients[0].clientCredentialsClaims.groups"),
        "{problems}"
    );
}

#[test]
fn deprecated_signing_keys_and_signer_settings() {
    let mut config = base();
    set(&mut config, "/expiry", json!({"signingKeys": "3h"}));
    let loaded = loads(&config);
    assert_eq!(
        loaded.settings.signer.rotation_period,
        Duration::from_secs(3 * 3600)
    );
    assert_has(&loaded.warnings, "expiry.signingKeys", "deprecated");

    set(
        &mut config,
        "/signer",
        json!({"type": "local", "config": {"keysRotationPeriod": "1h30m", "algorithm": "EdDSA"}}),
    );
    let loaded = loads(&config);
    assert_eq!(
        loaded.settings.signer.rotation_period,
        Duration::from_secs(5400)
    );
    assert_eq!(
        loaded.settings.signer.algorithm,
        crate::keys::SigningAlgorithm::EdDSA
    );
    assert_has(
        &loaded.warnings,
        "expiry.signingKeys",
        "keysRotationPeriod takes precedence",
    );
}

#[test]
fn frontend_dir_falls_back_to_env_and_issuer_prefix_drops_slash() {
    let mut config = base();
    set(
        &mut config,
        "/issuer",
        json!("https://auth.example.org/sso/"),
    );
    set(
        &mut config,
        "/logger",
        json!({"level": "DEBUG", "format": "JSON"}),
    );
    let web = tempfile::tempdir().unwrap();
    let web = web.path().to_str().unwrap();
    let s = load_json(&config, &[("DEX_FRONTEND_DIR", web)])
        .unwrap()
        .settings;
    assert_eq!(s.frontend.dir, Some(PathBuf::from(web)));
    assert_eq!(s.issuer.path_prefix, "/sso");
    assert_eq!(s.issuer.url, "https://auth.example.org/sso/");
    assert_eq!(
        (s.logger.level.as_str(), s.logger.format),
        ("debug", LogFormat::Json)
    );
    set(&mut config, "/issuer", json!("https://auth.example.org"));
    assert_eq!(loads(&config).settings.issuer.path_prefix, "");
}

#[test]
fn cli_overrides_apply_before_validation() {
    let mut config = base();
    set(&mut config, "/web", json!({}));
    let overrides = Overrides {
        web_http: Some("0.0.0.0:8080".into()),
        web_https: None,
        telemetry_http: Some("127.0.0.1:9090".into()),
    };
    let options = LoadOptions {
        overrides,
        ..options(&[])
    };
    let s = load_str(&config.to_string(), Path::new("c.json"), &options)
        .unwrap()
        .settings;
    assert_eq!(s.web.http.as_deref(), Some("0.0.0.0:8080"));
    assert_eq!(s.web.https, None);
    assert_eq!(s.telemetry_http.as_deref(), Some("127.0.0.1:9090"));

    // --web-https-addr sets web.https, which then needs its certificate files.
    let https = Overrides {
        web_https: Some(":8443".into()),
        ..Overrides::default()
    };
    let https_options = LoadOptions {
        overrides: https,
        ..self::options(&[])
    };
    let error = load_str(&base().to_string(), Path::new("c.json"), &https_options).unwrap_err();
    assert_has(
        &error.problems,
        "web.tlsCert",
        "no cert specified for HTTPS",
    );
}

#[test]
fn trusted_peers_naming_unknown_clients_warn() {
    let mut config = base();
    set(
        &mut config,
        "/staticClients/0/trustedPeers",
        json!(["app", "kubectl"]),
    );
    let loaded = loads(&config);
    assert_has(
        &loaded.warnings,
        "staticClients[0].trustedPeers[1]",
        "no static client with id \"kubectl\"",
    );
}

// ---- Redaction ----------------------------------------------------------------

#[test]
fn redacted_json_holds_no_secret() {
    let dir = secret_dir();
    let mut config = base();
    set(
        &mut config,
        "/staticClients/0/secret",
        json!("KNOWN-inline-client-secret"),
    );
    set(
        &mut config,
        "/staticClients/1",
        json!({"id": "b", "name": "B", "secretFile": dir.path().join("client"), "redirectURIs": ["https://b/cb"]}),
    );
    set(&mut config, "/enablePasswordDB", json!(true));
    set(
        &mut config,
        "/staticPasswords",
        json!([{"email": "a@example.org", "hash": HASH}]),
    );
    set(
        &mut config,
        "/connectors/1",
        json!({"type": "oidc", "id": "up", "name": "Up", "config": {
            "issuer": "https://id.example.org",
            "redirectURI": "https://auth.example.org/dex/callback",
            "clientID": "oxidex",
            "clientSecret": "$UP_SECRET",
            "bindPW": "KNOWN-bind-password",
            "nested": {"password": "KNOWN-nested-password"}
        }}),
    );
    set(
        &mut config,
        "/connectors/2",
        json!({"type": "gitea", "id": "forgejo", "name": "Forgejo",
               "config": {"clientID": "oxidex", "redirectURI": "https://auth.example.org/dex/callback",
                          "clientSecretFile": dir.path().join("upstream")}}),
    );
    let loaded = load_json(&config, &[("UP_SECRET", "KNOWN-env-secret")]).unwrap();
    let text = redacted_json(&loaded.settings).to_string();
    for secret in [
        "KNOWN-inline-client-secret",
        "client-from-file",
        HASH,
        "KNOWN-env-secret",
        "KNOWN-bind-password",
        "KNOWN-nested-password",
        "upstream-from-file",
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(text.contains(REDACTED));
    assert!(
        text.contains("\"clientID\":\"oxidex\""),
        "non-secrets stay: {text}"
    );
    let debug = format!("{:?}", loaded.settings);
    assert!(
        !debug.contains("KNOWN") && !debug.contains("from-file"),
        "{debug}"
    );
}

#[test]
fn problem_display() {
    let problem = Problem {
        path: "web.http".into(),
        message: "expected a string, got a number".into(),
    };
    assert_eq!(
        problem.to_string(),
        "web.http: expected a string, got a number"
    );
    let bare = Problem {
        path: String::new(),
        message: "invalid YAML".into(),
    };
    assert_eq!(bare.to_string(), "invalid YAML");
    let err = ConfigError {
        problems: vec![problem.clone(), bare],
        warnings: vec![problem],
    };
    assert_eq!(
        err.to_string(),
        "web.http: expected a string, got a number\ninvalid YAML\nwarning: web.http: expected a string, got a number"
    );
}

#[test]
fn rejects_redirect_uris_a_browser_reads_differently() {
    for (uri, gist) in [
        ("http://evil.example\\@127.0.0.1/cb", "backslash"),
        ("https://app.example/c\tb", "control"),
        ("https://evil.example@app.example/cb", "user information"),
        ("https://app.example/cb#x", "fragment"),
        ("https:/app.example/cb", "scheme://host"),
        ("//evil.example/device/callback", "not an absolute URL"),
    ] {
        rejects(
            |c| {
                set(
                    c,
                    "/staticClients/0/redirectURIs",
                    json!(["https://ok.example/cb", uri]),
                )
            },
            "staticClients[0].redirectURIs[1]",
            gist,
        );
    }
}

#[test]
fn client_remote_ip_is_parsed_for_the_rate_limits() {
    let mut config = base();
    set(
        &mut config,
        "/web/clientRemoteIP",
        json!({"header": "X-Forwarded-For", "trustedProxies": ["10.0.0.0/8", "fd00::/8"]}),
    );
    let client_ip = loads(&config).settings.web.client_ip;
    assert_eq!(
        client_ip.header.as_ref().map(|h| h.as_str()),
        Some("x-forwarded-for")
    );
    assert_eq!(client_ip.trusted_proxies.len(), 2);
    // Without trusted proxies the header would be anyone's claim: ignored.
    set(
        &mut config,
        "/web/clientRemoteIP",
        json!({"header": "X-Forwarded-For"}),
    );
    assert!(loads(&config).settings.web.client_ip.header.is_none());
    rejects(
        |c| {
            set(
                c,
                "/web/clientRemoteIP",
                json!({"header": "X Forwarded", "trustedProxies": ["10.0.0.0/8"]}),
            )
        },
        "web.clientRemoteIP.header",
        "not a valid header name",
    );
}

#[test]
fn sessions_are_on_with_dex_head_defaults_and_off_with_the_flag() {
    let loaded = loads(&base());
    let sessions = loaded.settings.sessions.expect("sessions on by default");
    assert_eq!(sessions.cookie_name, "dex_session");
    assert_eq!(sessions.absolute_lifetime, Duration::from_secs(24 * 3600));
    assert_eq!(sessions.valid_if_not_used_for, Duration::from_secs(3600));
    assert!(sessions.remember_me_checked_by_default);
    assert!(sessions.cookie_encryption_key.is_none());
    assert!(!sessions.sso_shared_with_all_by_default);
    let client = &loaded.settings.clients[0];
    assert_eq!(
        client.refresh_token_lifetime,
        RefreshTokenLifetime::Standalone
    );
    assert_eq!(client.sso_shared_with, None);

    let mut config = base();
    set(
        &mut config,
        "/sessions",
        json!({"cookieName": "sid", "absoluteLifetime": "8h",
        "validIfNotUsedFor": "30m", "rememberMeCheckedByDefault": false,
        "cookieEncryptionKey": "0123456789abcdef0123456789abcdef", "ssoSharedWithDefault": "all"}),
    );
    set(&mut config, "/staticClients/0/ssoSharedWith", json!([]));
    set(
        &mut config,
        "/staticClients/0/refreshTokenLifetime",
        json!("session"),
    );
    set(
        &mut config,
        "/staticClients/0/postLogoutRedirectURIs",
        json!(["https://app.example.org/bye"]),
    );
    let loaded = loads(&config);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let sessions = loaded.settings.sessions.unwrap();
    assert_eq!(sessions.cookie_name, "sid");
    assert_eq!(sessions.valid_if_not_used_for, Duration::from_secs(1800));
    assert!(!sessions.remember_me_checked_by_default);
    assert_eq!(
        sessions.cookie_encryption_key.as_deref().map(<[u8]>::len),
        Some(32)
    );
    assert!(sessions.sso_shared_with_all_by_default);
    let client = &loaded.settings.clients[0];
    assert_eq!(client.sso_shared_with, Some(vec![]));
    assert_eq!(client.refresh_token_lifetime, RefreshTokenLifetime::Session);
    assert!(
        !format!("{sessions:?}").contains("0123456789abcdef"),
        "key redacted"
    );

    let off = load_json(&config, &[("DEX_SESSIONS_ENABLED", "false")]).unwrap();
    assert!(off.settings.sessions.is_none());
    assert_has(&off.warnings, "sessions", "DEX_SESSIONS_ENABLED is false");
}

#[test]
fn rejects_bad_session_settings_with_dex_head_texts() {
    let cases: [(&str, Value, &str, &str); 7] = [
        (
            "/sessions",
            json!({"absoluteLifetime": "0s"}),
            "sessions.absoluteLifetime",
            "invalid session config: absoluteLifetime must be positive",
        ),
        (
            "/sessions",
            json!({"validIfNotUsedFor": "soon"}),
            "sessions.validIfNotUsedFor",
            "invalid session config: invalid validIfNotUsedFor \"soon\"",
        ),
        (
            "/sessions",
            json!({"absoluteLifetime": "1h", "validIfNotUsedFor": "2h"}),
            "sessions.validIfNotUsedFor",
            "invalid session config: validIfNotUsedFor (2h) must not exceed absoluteLifetime (1h)",
        ),
        (
            "/sessions",
            json!({"cookieEncryptionKey": "short"}),
            "sessions.cookieEncryptionKey",
            "must be 16, 24 or 32 bytes long",
        ),
        (
            "/sessions",
            json!({"ssoSharedWithDefault": "some"}),
            "sessions.ssoSharedWithDefault",
            "ssoSharedWithDefault must be \"none\" or \"all\", got \"some\"",
        ),
        (
            "/staticClients/0/refreshTokenLifetime",
            json!("forever"),
            "staticClients[0].refreshTokenLifetime",
            "staticClients: client \"app\": invalid refresh token lifetime \"forever\": want \"standalone\" or \"session\"",
        ),
        (
            "/staticClients/0/backchannelLogoutURI",
            json!("https://app.example.org/bc#x"),
            "staticClients[0].backchannelLogoutURI",
            "not an absolute http or https URL without a fragment",
        ),
    ];
    for (pointer, value, path, gist) in cases {
        rejects(|c| set(c, pointer, value.clone()), path, gist);
    }
    rejects(
        |c| set(c, "/sessions", json!({"cookieName": "a b"})),
        "sessions.cookieName",
        "not a valid cookie name",
    );
    rejects(
        |c| {
            set(
                c,
                "/staticClients/0/postLogoutRedirectURIs",
                json!(["https://app.example.org/#frag"]),
            )
        },
        "staticClients[0].postLogoutRedirectURIs[0]",
        "",
    );
}

#[test]
fn a_cookie_key_in_a_store_path_config_is_refused() {
    let mut config = base();
    set(
        &mut config,
        "/sessions",
        json!({"cookieEncryptionKey": "0123456789abcdef"}),
    );
    let error = load_json_at(&config, &format!("{STORE_DIR}/config.json"), &[]).unwrap_err();
    assert_has(&error.problems, "sessions.cookieEncryptionKey", "");
}

#[test]
fn check_config_output_is_a_dex_config_that_loads_to_the_same_settings() {
    let mut config = base();
    set(
        &mut config,
        "/expiry",
        json!({"idTokens": "90m", "refreshTokens": {"reuseInterval": "3s", "absoluteLifetime": "720h"}}),
    );
    set(
        &mut config,
        "/sessions",
        json!({"validIfNotUsedFor": "30m"}),
    );
    set(
        &mut config,
        "/logger",
        json!({"level": "debug", "format": "json", "excludeFields": ["email"]}),
    );
    set(
        &mut config,
        "/web/headers",
        json!({"X-Frame-Options": "DENY"}),
    );
    set(&mut config, "/enablePasswordDB", json!(true));
    set(
        &mut config,
        "/staticPasswords",
        json!([{"email": "a@example.org", "hash": HASH, "username": "a", "userID": "1"}]),
    );
    let printed = redacted_json(&loads(&config).settings);
    assert_eq!(printed["expiry"]["idTokens"], "1h30m");
    assert_eq!(
        printed["expiry"]["refreshTokens"]["absoluteLifetime"],
        "720h"
    );
    assert_eq!(printed["sessions"]["validIfNotUsedFor"], "30m");
    assert_eq!(
        printed["staticClients"][0]["redirectURIs"][0],
        "https://app.example.org/callback"
    );
    assert_eq!(printed["oauth2"]["responseTypes"], json!(["code"]));
    assert!(printed.get("issuer").unwrap().is_string());
    // Put the redacted secrets back, load it again: the same document.
    let mut again = printed.clone();
    set(&mut again, "/staticClients/0/secret", json!("app-secret"));
    set(&mut again, "/staticPasswords/0/hash", json!(HASH));
    let reloaded = loads(&again);
    assert!(reloaded.warnings.is_empty(), "{:?}", reloaded.warnings);
    assert_eq!(redacted_json(&reloaded.settings), printed);
}
