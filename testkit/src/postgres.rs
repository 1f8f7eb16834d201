//! Throwaway databases for tests against a real PostgreSQL.
//!
//! `OXIDEX_TEST_POSTGRES` holds a libpq connection string (`host=… port=… user=…
//! password=… dbname=…`) of a role that may create databases. When it is unset
//! the PostgreSQL tests have nothing to run against and return early; when it is
//! set (CI sets it), any failure to use the database fails the test.

use std::str::FromStr;

use crate::config::{PostgresHost, PostgresSettings, PostgresSsl, SslMode};

pub const ENV: &str = "OXIDEX_TEST_POSTGRES";

/// The settings `OXIDEX_TEST_POSTGRES` describes, or `None` when it is unset.
///
/// # Panics
/// When it is set but unusable: a test that was promised a database must fail.
#[allow(clippy::panic)]
pub fn from_env() -> Option<PostgresSettings> {
    let dsn = std::env::var(ENV).ok().filter(|v| !v.trim().is_empty())?;
    match parse(&dsn) {
        Ok(settings) => Some(settings),
        Err(e) => panic!("{ENV} is set but unusable: {e}"),
    }
}

/// Reads a libpq key/value string or `postgresql://` URL.
pub fn parse(dsn: &str) -> Result<PostgresSettings, String> {
    let config = ::postgres::Config::from_str(dsn).map_err(|e| e.to_string())?;
    let host = match config.get_hosts().first() {
        Some(::postgres::config::Host::Tcp(host)) => PostgresHost::Tcp(host.clone()),
        #[cfg(unix)]
        Some(::postgres::config::Host::Unix(dir)) => PostgresHost::Socket(dir.clone()),
        None => PostgresHost::Tcp("localhost".to_owned()),
    };
    let mode = match config.get_ssl_mode() {
        ::postgres::config::SslMode::Disable | ::postgres::config::SslMode::Prefer => {
            SslMode::Disable
        }
        _ => SslMode::Require,
    };
    Ok(PostgresSettings {
        host,
        port: config.get_ports().first().copied().unwrap_or(5432),
        database: config.get_dbname().unwrap_or_default().to_owned(),
        user: config
            .get_user()
            .ok_or("the connection string names no user")?
            .to_owned(),
        password: config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        ssl: PostgresSsl {
            mode,
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
        },
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        max_open_conns: 5,
        max_idle_conns: 1,
        conn_max_lifetime: None,
    })
}

fn admin(base: &PostgresSettings) -> Result<::postgres::Client, String> {
    let mut config = ::postgres::Config::new();
    config.user(&base.user).port(base.port);
    match &base.host {
        PostgresHost::Tcp(host) => config.host(host),
        PostgresHost::Socket(dir) => config.host_path(dir),
    };
    if !base.database.is_empty() {
        config.dbname(&base.database);
    }
    if let Some(password) = &base.password {
        config.password(password);
    }
    config
        .connect(::postgres::NoTls)
        .map_err(|e| format!("cannot connect to {}: {e}", base.describe()))
}

/// Creates an empty database with a fresh name and returns settings for it.
pub fn create(base: &PostgresSettings) -> Result<PostgresSettings, String> {
    let name = format!("oxidex_test_{}", uuid::Uuid::new_v4().simple());
    admin(base)?
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .map_err(|e| format!("cannot create database {name}: {e}"))?;
    Ok(PostgresSettings {
        database: name,
        ..base.clone()
    })
}

/// Drops a database made by [`create`], closing any connection still open.
pub fn drop(base: &PostgresSettings, database: &str) -> Result<(), String> {
    admin(base)?
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
        ))
        .map_err(|e| format!("cannot drop database {database}: {e}"))
}
