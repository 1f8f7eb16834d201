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
        env.get("USER").filter(|u| !u.is_empty()).unwrap_or_else(|| {
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
        n => u32::try_from(n).ok().filter(|n| *n <= 10_000).unwrap_or_else(|| {
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
