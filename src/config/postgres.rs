//! `storage.config` for `type: postgres`: Dex's keys and defaults
//! (`storage/sql/config.go`), validated offline with key paths.

use std::path::PathBuf;
use std::time::Duration;

use super::Report;
use super::env::Env;
use super::schema::PostgresConfig;
use super::settings::{PostgresHost, PostgresSettings, PostgresSsl, SslMode};

/// Dex's pool defaults (`maxOpenConns`/`maxIdleConns` 0 ⇒ 5).
const DEFAULT_POOL: u32 = 5;
const DEFAULT_PORT: u16 = 5432;
const PATH: &str = "storage.config";

pub(super) fn resolve(config: PostgresConfig, env: &Env, report: &mut Report) -> PostgresSettings {
    let at = |key: &str| format!("{PATH}.{key}");
    let (host, port_in_host) = split_host(&config.host, report);
    let port = match (port_in_host, config.port) {
        // As lib/pq: a port inside `host` wins over `port`.
        (Some(port), _) => port,
        (None, 0) => DEFAULT_PORT,
        (None, port) => u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or_else(|| {
                report.error(at("port"), format!("{port} is not a port (1–65535)"));
                DEFAULT_PORT
            }),
    };
    let user = if config.user.is_empty() {
        // libpq's default is the operating-system user, which is what peer
        // authentication over the Unix socket expects.
        env.get("USER")
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| {
                report.error(
                    at("user"),
                    "postgres storage needs a user name (none given and $USER is not set)",
                );
                String::new()
            })
    } else {
        config.user
    };

    let ssl = &config.ssl;
    let mode = match ssl.mode.as_str() {
        // Dex's default: the strictest mode.
        "" | "verify-full" => SslMode::VerifyFull,
        "verify-ca" => SslMode::VerifyCa,
        "require" => SslMode::Require,
        "disable" => SslMode::Disable,
        other => {
            report.error(
                at("ssl.mode"),
                format!(
                    "{other:?} is not supported; supported values are disable, require, \
                     verify-full, or verify-ca"
                ),
            );
            SslMode::VerifyFull
        }
    };
    let file = |key: &str, value: &str, report: &mut Report| -> Option<PathBuf> {
        if value.is_empty() {
            return None;
        }
        if let Err(e) = std::fs::File::open(value) {
            report.error(at(key), format!("cannot read file {value:?}: {e}"));
        }
        Some(PathBuf::from(value))
    };
    let ca_file = file("ssl.caFile", &ssl.ca_file, report);
    let cert_file = file("ssl.certFile", &ssl.cert_file, report);
    let key_file = file("ssl.keyFile", &ssl.key_file, report);
    if cert_file.is_some() != key_file.is_some() {
        report.error(
            at(if cert_file.is_some() {
                "ssl.keyFile"
            } else {
                "ssl.certFile"
            }),
            "a client certificate needs both ssl.certFile and ssl.keyFile",
        );
    }

    let seconds = |key: &str, value: i64, report: &mut Report| -> Option<Duration> {
        match u64::try_from(value) {
            Ok(0) => None,
            Ok(secs) => Some(Duration::from_secs(secs)),
            Err(_) => {
                report.error(at(key), format!("{value} is negative (seconds expected)"));
                None
            }
        }
    };
    let connect_timeout = seconds("connectionTimeout", config.connection_timeout, report);
    let conn_max_lifetime = seconds("connMaxLifetime", config.conn_max_lifetime, report);

    let max_open_conns = match config.max_open_conns {
        0 => DEFAULT_POOL,
        n => u32::try_from(n)
            .ok()
            .filter(|n| *n <= 10_000)
            .unwrap_or_else(|| {
                // Dex treats a negative value as "unlimited"; oxidex always bounds its
                // pool, since every replica's connections count against the server's
                // max_connections.
                report.error(
                    at("maxOpenConns"),
                    format!("{n} is not a pool size (1–10000; 0 means Dex's default, 5)"),
                );
                DEFAULT_POOL
            }),
    };
    let max_idle_conns = match config.max_idle_conns {
        0 => DEFAULT_POOL,
        // As database/sql: negative keeps no idle connection.
        n if n < 0 => 0,
        n => u32::try_from(n).unwrap_or(u32::MAX),
    }
    .min(max_open_conns);

    PostgresSettings {
        host,
        port,
        database: config.database,
        user,
        password: (!config.password.is_empty()).then_some(config.password),
        ssl: PostgresSsl {
            mode,
            ca_file,
            cert_file,
            key_file,
            server_name: (!ssl.server_name.is_empty()).then(|| ssl.server_name.clone()),
        },
        connect_timeout,
        max_open_conns,
        max_idle_conns,
        conn_max_lifetime,
    }
}

/// `host` as Dex reads it: an absolute path is a socket directory; `h:p` and
/// `[v6]:p` carry a port; a bare IPv6 address has none; empty is `localhost`.
fn split_host(host: &str, report: &mut Report) -> (PostgresHost, Option<u16>) {
    let path = format!("{PATH}.host");
    if host.is_empty() {
        return (PostgresHost::Tcp("localhost".to_owned()), None);
    }
    if host.starts_with('/') {
        return (PostgresHost::Socket(PathBuf::from(host)), None);
    }
    if host.starts_with('@') {
        report.error(
            path,
            "abstract Unix sockets are not supported; give the socket's directory",
        );
        return (PostgresHost::Tcp(host.to_owned()), None);
    }
    let mut port_of = |text: &str| match text.parse::<u16>() {
        Ok(port) if port > 0 => Some(port),
        _ => {
            report.error(
                path.clone(),
                format!("{host:?}: {text:?} is not a port (1–65535)"),
            );
            None
        }
    };
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((address, "")) => (PostgresHost::Tcp(address.to_owned()), None),
            Some((address, tail)) if tail.starts_with(':') => {
                (PostgresHost::Tcp(address.to_owned()), port_of(&tail[1..]))
            }
            _ => {
                report.error(path, format!("{host:?} is not a host or [address]:port"));
                (PostgresHost::Tcp(host.to_owned()), None)
            }
        };
    }
    match host.split_once(':') {
        Some((name, port)) if !port.contains(':') => {
            (PostgresHost::Tcp(name.to_owned()), port_of(port))
        }
        _ => (PostgresHost::Tcp(host.to_owned()), None),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use serde_json::{Value, json};

    use crate::config::{
        ConfigError, Env, LoadOptions, PostgresHost, PostgresSettings, SslMode, StorageSettings,
        load_str,
    };

    fn config(storage: Value) -> Value {
        json!({
            "issuer": "https://auth.example.org/dex",
            "storage": {"type": "postgres", "config": storage},
            "web": {"http": "127.0.0.1:5556"},
            "connectors": [{"type": "mockCallback", "id": "mock", "name": "Mock"}],
            "staticClients": [{"id": "app", "name": "App", "secret": "s",
                               "redirectURIs": ["https://app.example.org/cb"]}]
        })
    }

    fn load_at(
        storage: Value,
        path: &str,
        env: &[(&str, &str)],
    ) -> Result<crate::config::Loaded, ConfigError> {
        let options = LoadOptions {
            env: Env::from_pairs(env.iter().copied()),
            ..LoadOptions::default()
        };
        load_str(&config(storage).to_string(), Path::new(path), &options)
    }

    fn postgres(storage: Value, env: &[(&str, &str)]) -> PostgresSettings {
        match load_at(storage, "/etc/oxidex.json", env) {
            Ok(loaded) => match loaded.settings.storage {
                StorageSettings::Postgres(settings) => *settings,
                other => panic!("not postgres: {other:?}"),
            },
            Err(e) => panic!("rejected:\n{e}"),
        }
    }

    fn problems(storage: Value) -> String {
        match load_at(storage, "/etc/oxidex.json", &[]) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn dex_defaults() {
        let s = postgres(json!({"user": "dex"}), &[]);
        assert_eq!(s.host, PostgresHost::Tcp("localhost".into()));
        assert_eq!(s.port, 5432);
        assert_eq!(
            s.ssl.mode,
            SslMode::VerifyFull,
            "Dex defaults to verify-full"
        );
        assert_eq!((s.max_open_conns, s.max_idle_conns), (5, 5));
        assert_eq!(s.connect_timeout, None, "0 waits as long as the OS does");
        assert_eq!(s.conn_max_lifetime, None);
        assert_eq!(s.password, None);
    }

    #[test]
    fn every_key_in_dex_spelling_and_case() {
        let s = postgres(
            json!({"Host": "db.internal", "PORT": 6543, "database": "oxidex", "user": "ox",
                   "password": "pw", "connectionTimeout": 7, "MaxOpenConns": 20,
                   "maxidleconns": 3, "connMaxLifetime": 600,
                   "ssl": {"mode": "verify-ca", "serverName": "pg.example"}}),
            &[],
        );
        assert_eq!(s.host, PostgresHost::Tcp("db.internal".into()));
        assert_eq!(s.port, 6543);
        assert_eq!(s.password.as_deref(), Some("pw"));
        assert_eq!(s.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!((s.max_open_conns, s.max_idle_conns), (20, 3));
        assert_eq!(s.conn_max_lifetime, Some(Duration::from_secs(600)));
        assert_eq!(s.ssl.mode, SslMode::VerifyCa);
        assert_eq!(s.ssl.server_name.as_deref(), Some("pg.example"));
        assert_eq!(s.describe(), "db.internal:6543/oxidex");
    }

    #[test]
    fn host_forms() {
        let s = postgres(json!({"host": "db:6543", "port": 5432, "user": "u"}), &[]);
        assert_eq!((s.host, s.port), (PostgresHost::Tcp("db".into()), 6543));
        let s = postgres(json!({"host": "[::1]:7000", "user": "u"}), &[]);
        assert_eq!((s.host, s.port), (PostgresHost::Tcp("::1".into()), 7000));
        let s = postgres(json!({"host": "::1", "port": 7001, "user": "u"}), &[]);
        assert_eq!((s.host, s.port), (PostgresHost::Tcp("::1".into()), 7001));
        let s = postgres(json!({"host": "/run/postgresql", "user": "u"}), &[]);
        assert_eq!(s.host, PostgresHost::Socket("/run/postgresql".into()));
        assert_eq!(s.describe(), "/run/postgresql/.s.PGSQL.5432/u");
    }

    #[test]
    fn env_expansion_and_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let s = postgres(
            json!({"host": "$PGHOST", "port": "$PGPORT", "user": "u",
                   "passwordFile": file}),
            &[("PGHOST", "db"), ("PGPORT", "6000")],
        );
        assert_eq!((s.host, s.port), (PostgresHost::Tcp("db".into()), 6000));
        assert_eq!(s.password.as_deref(), Some("from-file"));
        let s = postgres(
            json!({"user": "u", "password": "$PGPASS"}),
            &[("PGPASS", "from-env")],
        );
        assert_eq!(s.password.as_deref(), Some("from-env"));
    }

    /// `caFile`, `certFile` and `keyFile` are paths the backend reads, not
    /// secret file forms to inline.
    #[test]
    fn ssl_files_stay_paths() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "CA PEM").unwrap();
        let s = postgres(
            json!({"user": "u", "ssl": {"mode": "require", "caFile": ca}}),
            &[],
        );
        assert_eq!(s.ssl.ca_file.as_deref(), Some(ca.as_path()));
    }

    #[test]
    fn invalid_values_are_named_by_key_path() {
        let message = problems(json!({
            "user": "u", "port": 70000, "maxOpenConns": -1, "connectionTimeout": -3,
            "ssl": {"mode": "prefer", "caFile": "/nonexistent/ca.pem", "certFile": "/nonexistent/c"}
        }));
        for expected in [
            "storage.config.port: 70000 is not a port",
            "storage.config.maxOpenConns: -1 is not a pool size",
            "storage.config.connectionTimeout: -3 is negative",
            "storage.config.ssl.mode: \"prefer\" is not supported; supported values are disable, require, verify-full, or verify-ca",
            "storage.config.ssl.caFile: cannot read file",
            "storage.config.ssl.keyFile: a client certificate needs both",
        ] {
            assert!(
                message.contains(expected),
                "{expected:?} missing in:\n{message}"
            );
        }
        let message = problems(json!({"user": "u", "port": "fifty"}));
        assert!(
            message.contains("storage.config.port: expected an integer"),
            "{message}"
        );
        let message = problems(json!({"user": "u", "host": "db:x"}));
        assert!(message.contains("storage.config.host"), "{message}");
    }

    #[test]
    fn user_defaults_to_the_os_user_or_is_required() {
        assert_eq!(postgres(json!({}), &[("USER", "oxidex")]).user, "oxidex");
        let message = problems(json!({}));
        assert!(message.contains("storage.config.user"), "{message}");
    }

    #[test]
    fn inline_password_in_the_nix_store_is_refused() {
        let err = load_at(
            json!({"user": "u", "password": "hunter2"}),
            "/nix/store/0c8xyz9bz3ai2k3qh8x8a9fw2p1l6c5y-oxidex.json",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("storage.config.password") && err.contains("passwordFile"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn password_never_shows_in_effective_config_or_debug() {
        let loaded = load_at(
            json!({"user": "u", "password": "hunter2"}),
            "/etc/oxidex.json",
            &[],
        )
        .unwrap();
        let shown = crate::config::redacted_json(&loaded.settings).to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("\"type\":\"postgres\""), "{shown}");
        let debug = format!("{:?}", loaded.settings.storage);
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
