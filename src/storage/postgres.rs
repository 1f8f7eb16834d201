//! PostgreSQL storage, for several oxidex replicas sharing one database.
//!
//! Driver: the synchronous `postgres` crate with an `r2d2` pool. The [`Storage`]
//! trait is synchronous and always runs on the blocking pool, so a synchronous
//! driver needs no second runtime and no `block_on` bridge; r2d2 bounds the pool,
//! times out a checkout, tests a connection before handing it out (so a database
//! restart costs no failed request) and retires connections by age. Both crates
//! come from the rust-postgres maintainers.
//!
//! Schema: the SQLite layout (key columns, expiry columns in nanoseconds since the
//! epoch for garbage collection, the entity as JSON text in `data`), versioned in
//! `schema_migrations`. Migrations run in one transaction under a transaction-scoped
//! advisory lock, so replicas starting together apply each version exactly once
//! and the others wait; a schema newer than this build is refused.
//!
//! Concurrency: every read-modify-write is `SELECT … FOR UPDATE`, the updater, then
//! `UPDATE`, in one READ COMMITTED transaction. The row lock makes concurrent
//! updates of one row — from threads or from other replicas — queue, and each sees
//! the previous one's result, so none fails and none is lost (Dex's SERIALIZABLE
//! transactions instead fail with 40001 under contention). The keys row exists from
//! the first migration on (with NULL data), so even the first key creation locks a
//! row. Updaters must not call back into storage: they would wait for a second
//! pooled connection while holding the first (Dex #4209).

// Shared with the integration tests through the test kit (one copy, outside src/).
#[cfg(test)]
#[path = "../../testkit/src/postgres.rs"]
pub mod test_db;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use ::postgres::error::SqlState;
use ::postgres::types::ToSql;
use ::postgres::{GenericClient, NoTls, Statement};

use super::postgres_tls::{MakeTls, client_config};
use super::sqlite::{Row, decode, encode, unix_nanos};
use super::*;
use crate::config::{PostgresHost, PostgresSettings};

/// The schema, one entry per version: `MIGRATIONS[i]` creates version `i + 1`.
/// Append only; never edit an entry that has shipped.
pub const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    "
    CREATE TABLE auth_request (
        id     TEXT   NOT NULL PRIMARY KEY,
        expiry BIGINT NOT NULL,
        data   TEXT   NOT NULL
    );
    CREATE INDEX auth_request_expiry ON auth_request (expiry);

    CREATE TABLE auth_code (
        id     TEXT   NOT NULL PRIMARY KEY,
        expiry BIGINT NOT NULL,
        data   TEXT   NOT NULL
    );
    CREATE INDEX auth_code_expiry ON auth_code (expiry);

    CREATE TABLE refresh_token (
        id   TEXT NOT NULL PRIMARY KEY,
        data TEXT NOT NULL
    );

    CREATE TABLE offline_session (
        user_id      TEXT NOT NULL,
        connector_id TEXT NOT NULL,
        data         TEXT NOT NULL,
        PRIMARY KEY (user_id, connector_id)
    );

    CREATE TABLE signing_keys (
        id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
        data TEXT
    );
    INSERT INTO signing_keys (id, data) VALUES (1, NULL);

    CREATE TABLE device_request (
        user_code TEXT   NOT NULL PRIMARY KEY,
        expiry    BIGINT NOT NULL,
        data      TEXT   NOT NULL
    );
    CREATE INDEX device_request_expiry ON device_request (expiry);

    CREATE TABLE device_token (
        device_code TEXT   NOT NULL PRIMARY KEY,
        expiry      BIGINT NOT NULL,
        data        TEXT   NOT NULL
    );
    CREATE INDEX device_token_expiry ON device_token (expiry);

    CREATE TABLE auth_session (
        id              TEXT   NOT NULL PRIMARY KEY,
        absolute_expiry BIGINT NOT NULL,
        idle_expiry     BIGINT NOT NULL,
        data            TEXT   NOT NULL
    );
    CREATE INDEX auth_session_absolute_expiry ON auth_session (absolute_expiry);
    CREATE INDEX auth_session_idle_expiry ON auth_session (idle_expiry);
    ",
    // 2: tombstones of exchanged authorization codes (replay detection).
    "
    CREATE TABLE redeemed_code (
        id     TEXT   NOT NULL PRIMARY KEY,
        expiry BIGINT NOT NULL,
        data   TEXT   NOT NULL
    );
    CREATE INDEX redeemed_code_expiry ON redeemed_code (expiry);
    ",
    // 3: the browser-session table of version 1 was never written to; browser
    // sessions will be keyed by the browser binding, in a table of their own.
    "
    DROP TABLE auth_session;
    ",
    // 4: browser sessions, consent per user, back-channel logout deliveries.
    "
    CREATE TABLE browser_session (
        id     TEXT   NOT NULL PRIMARY KEY,
        expiry BIGINT NOT NULL,
        data   TEXT   NOT NULL
    );
    CREATE INDEX browser_session_expiry ON browser_session (expiry);

    CREATE TABLE user_identity (
        user_id      TEXT NOT NULL,
        connector_id TEXT NOT NULL,
        data         TEXT NOT NULL,
        PRIMARY KEY (user_id, connector_id)
    );

    CREATE TABLE logout_delivery (
        id   TEXT   NOT NULL PRIMARY KEY,
        due  BIGINT NOT NULL,
        data TEXT   NOT NULL
    );
    CREATE INDEX logout_delivery_due ON logout_delivery (due);
    ",
    // 5: the deny list of revoked access tokens (RFC 7009).
    "
    CREATE TABLE revoked_access_tokens (
        key    TEXT   NOT NULL PRIMARY KEY,
        expiry BIGINT NOT NULL,
        data   TEXT   NOT NULL
    );
    CREATE INDEX revoked_access_tokens_expiry ON revoked_access_tokens (expiry);
    ",
    // 6: clients and passwords created through the gRPC admin API.
    "
    CREATE TABLE api_client (
        id   TEXT NOT NULL PRIMARY KEY,
        data TEXT NOT NULL
    );

    CREATE TABLE api_password (
        email TEXT NOT NULL PRIMARY KEY,
        data  TEXT NOT NULL
    );
    ",
    // 7: offline sessions store their refresh references' times as integer
    // nanoseconds (`entities::compact_time`). Rows in the old form still load, and
    // nothing needs rewriting; the version is recorded so that an older oxidex,
    // which cannot read the new form, refuses the database instead of failing
    // at the user's next refresh.
    "-- no schema change",
];

/// `pg_advisory_xact_lock` key serialising migrations across replicas
/// ("oxidex" in ASCII, then 1).
const MIGRATION_LOCK: i64 = 0x6f78_6964_6578_0001;

/// How long a caller waits for a pooled connection when `connectionTimeout` is
/// unset (Dex waits forever; a dead database should give a prompt 503 instead).
const DEFAULT_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);

/// Idle connections beyond `maxIdleConns` are closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Set on every new connection. Bounds what one stuck statement or one stalled
/// process holding a row lock can cost the others; times are compared as
/// instants, so the zone only affects what an operator sees.
const SESSION_SETUP: &str = "SET statement_timeout = '30s';
     SET lock_timeout = '15s';
     SET idle_in_transaction_session_timeout = '60s';
     SET TIME ZONE 'UTC'";

pub struct PostgresStorage {
    /// Always `Some` until dropped (see the `Drop` impl).
    pool: Option<r2d2::Pool<Manager>>,
    /// `host:port/database`, for errors and logs (never the password).
    target: String,
    /// Set by a failure to reach the database, cleared by the next success.
    down: AtomicBool,
    down_reason: Mutex<String>,
}

struct Manager {
    config: ::postgres::Config,
    tls: Option<MakeTls>,
}

pub struct Connection {
    client: ::postgres::Client,
    /// Statements prepared on this connection, by SQL text.
    statements: HashMap<String, Statement>,
}

/// A connection failure with its causes spelled out: the driver's own message
/// ("error performing TLS handshake") hides why, and the pool keeps only the
/// message for the error a waiting caller finally gets.
#[derive(Debug)]
pub struct ConnectError(String);

impl ConnectError {
    fn from(error: &::postgres::Error) -> Self {
        let mut message = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self(message)
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = ConnectError;

    fn connect(&self) -> Result<Connection, ConnectError> {
        let mut client = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        }
        .map_err(|e| ConnectError::from(&e))?;
        client
            .batch_execute(SESSION_SETUP)
            .map_err(|e| ConnectError::from(&e))?;
        Ok(Connection {
            client,
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut Connection) -> Result<(), ConnectError> {
        conn.client
            .is_valid(Duration::from_secs(5))
            .map_err(|e| ConnectError::from(&e))
    }

    fn has_broken(&self, conn: &mut Connection) -> bool {
        conn.client.is_closed()
    }
}

impl Drop for PostgresStorage {
    /// Closing a connection blocks on the driver's own runtime, which tokio
    /// forbids on an async worker — where the last handle goes at shutdown. The
    /// pool is then closed on a thread of its own; if none can be started the
    /// connections are left to the OS rather than panicking.
    fn drop(&mut self) {
        let Some(pool) = self.pool.take() else { return };
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let pool = std::mem::ManuallyDrop::new(pool);
        let _ = std::thread::Builder::new()
            .name("oxidex-pg-close".to_owned())
            .spawn(move || drop(std::mem::ManuallyDrop::into_inner(pool)));
    }
}

/// Connection failures go to the log with the target, at warn: the pool retries.
#[derive(Debug)]
struct LogErrors(String);

impl r2d2::HandleError<ConnectError> for LogErrors {
    fn handle_error(&self, error: ConnectError) {
        tracing::warn!(database = %self.0, %error, "cannot connect to PostgreSQL");
    }
}

impl PostgresStorage {
    /// Connects (failing within the checkout timeout when the database cannot be
    /// reached) and brings the schema up to date.
    pub fn open(settings: &PostgresSettings) -> StorageResult<Self> {
        Self::open_with(settings, MIGRATIONS)
    }

    fn open_with(settings: &PostgresSettings, migrations: &[&str]) -> StorageResult<Self> {
        let target = settings.describe();
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            StorageError::Backend(format!("postgres {target}: {what}: {e}"))
        };
        let mut config = ::postgres::Config::new();
        config
            .user(&settings.user)
            .port(settings.port)
            .application_name("oxidex");
        if !settings.database.is_empty() {
            config.dbname(&settings.database);
        }
        if let Some(password) = &settings.password {
            config.password(password);
        }
        if let Some(timeout) = settings.connect_timeout {
            config.connect_timeout(timeout);
        }
        let tls = match &settings.host {
            PostgresHost::Socket(dir) => {
                // As libpq and lib/pq: no TLS over a Unix socket.
                config
                    .host_path(dir)
                    .ssl_mode(::postgres::config::SslMode::Disable);
                None
            }
            PostgresHost::Tcp(host) => {
                config.host(host);
                match client_config(&settings.ssl).map_err(|e| fail("TLS", &e))? {
                    Some(tls) => {
                        config.ssl_mode(::postgres::config::SslMode::Require);
                        Some(MakeTls::new(tls, settings.ssl.server_name.clone()))
                    }
                    None => {
                        config.ssl_mode(::postgres::config::SslMode::Disable);
                        None
                    }
                }
            }
        };
        let checkout = settings.connect_timeout.unwrap_or(DEFAULT_CHECKOUT_TIMEOUT);
        let pool = r2d2::Pool::builder()
            .max_size(settings.max_open_conns)
            .min_idle(Some(settings.max_idle_conns))
            .idle_timeout(Some(IDLE_TIMEOUT))
            .max_lifetime(settings.conn_max_lifetime)
            .connection_timeout(checkout)
            .test_on_check_out(true)
            .error_handler(Box::new(LogErrors(target.clone())))
            .build_unchecked(Manager { config, tls });
        let storage = Self {
            pool: Some(pool),
            target,
            down: AtomicBool::new(false),
            down_reason: Mutex::new(String::new()),
        };
        let applied = storage.migrate(migrations)?;
        tracing::info!(
            database = %storage.target,
            pool = settings.max_open_conns,
            applied,
            version = migrations.len(),
            "PostgreSQL storage ready"
        );
        Ok(storage)
    }

    /// Runs `work` on a pooled connection. Failing to get one, or losing it,
    /// marks the database unavailable until the next success.
    fn with_conn<R>(
        &self,
        work: impl FnOnce(&mut Connection) -> StorageResult<R>,
    ) -> StorageResult<R> {
        let Some(pool) = &self.pool else {
            return Err(StorageError::Unavailable("storage closed".to_owned()));
        };
        let mut conn = match pool.get() {
            Ok(conn) => conn,
            Err(e) => {
                let reason = format!("cannot get a connection to {}: {e}", self.target);
                self.mark_down(&reason);
                return Err(StorageError::Unavailable(reason));
            }
        };
        let result = work(&mut conn);
        match &result {
            Err(StorageError::Unavailable(reason)) => self.mark_down(reason),
            _ => self.mark_up(),
        }
        result
    }

    fn mark_down(&self, reason: &str) {
        reason.clone_into(
            &mut self
                .down_reason
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if !self.down.swap(true, Ordering::SeqCst) {
            tracing::error!(database = %self.target, %reason, "PostgreSQL unavailable");
        }
    }

    fn mark_up(&self) {
        if self.down.swap(false, Ordering::SeqCst) {
            tracing::info!(database = %self.target, "PostgreSQL reachable again");
        }
    }

    /// Maps a driver error: lost connections and a server that refuses work
    /// (shutting down, out of connections) are [`StorageError::Unavailable`].
    fn db(
        &self,
        what: &'static str,
        op: &'static str,
    ) -> impl Fn(::postgres::Error) -> StorageError {
        let target = self.target.clone();
        move |e| {
            let message = format!("postgres {target}: {op} {what}: {e}");
            match e.code() {
                None => StorageError::Unavailable(message),
                Some(code) if ["08", "53", "57"].contains(&&code.code()[..2]) => {
                    StorageError::Unavailable(message)
                }
                Some(_) => StorageError::Backend(message),
            }
        }
    }

    fn migrate(&self, migrations: &[&str]) -> StorageResult<usize> {
        let err = self.db("schema", "migrate");
        self.with_conn(|conn| {
            let mut tx = conn.client.transaction().map_err(&err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .map_err(&err)?;
            let dex: bool = tx
                .query_one(
                    "SELECT to_regclass('migrations') IS NOT NULL
                        AND to_regclass('schema_migrations') IS NULL",
                    &[],
                )
                .map_err(&err)?
                .get(0);
            if dex {
                return Err(StorageError::Backend(format!(
                    "postgres {}: the database holds Dex's schema (table migrations); \
                     oxidex keeps its own tables: give it an empty database",
                    self.target
                )));
            }
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    INTEGER     NOT NULL PRIMARY KEY,
                    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                )",
            )
            .map_err(&err)?;
            let current: i32 = tx
                .query_one(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                    &[],
                )
                .map_err(&err)?
                .get(0);
            let known = i32::try_from(migrations.len()).unwrap_or(i32::MAX);
            if current > known {
                return Err(StorageError::Backend(format!(
                    "postgres {}: database schema version {current} is newer than this \
                     oxidex supports (version {known}); it was written by a newer oxidex: \
                     run that version or restore a backup",
                    self.target
                )));
            }
            let mut applied = 0;
            for (version, sql) in (1..).zip(migrations.iter()) {
                if version <= current {
                    continue;
                }
                tx.batch_execute(sql).map_err(|e| {
                    StorageError::Backend(format!(
                        "postgres {}: schema migration to version {version}: {e}",
                        self.target
                    ))
                })?;
                tx.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    &[&version],
                )
                .map_err(&err)?;
                applied += 1;
            }
            tx.commit().map_err(&err)?;
            Ok(applied)
        })
    }

    fn create<T: Row>(&self, value: &T) -> StorageResult<()> {
        let sql = insert_sql::<T>("");
        let err = self.db(T::WHAT, "create");
        self.with_conn(|conn| {
            let stmt = prepare(conn, &sql).map_err(&err)?;
            match insert_row(&mut conn.client, &stmt, value)? {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    Err(StorageError::AlreadyExists)
                }
                Err(e) => Err(err(e)),
            }
        })
    }

    fn get<T: Row>(&self, key: &[&str]) -> StorageResult<T> {
        let sql = format!("SELECT data FROM {} WHERE {}", T::TABLE, key_filter::<T>(1));
        let err = self.db(T::WHAT, "get");
        self.with_conn(|conn| {
            let stmt = prepare(conn, &sql).map_err(&err)?;
            let row = conn
                .client
                .query_opt(&stmt, &key_params(key))
                .map_err(&err)?;
            match row {
                Some(row) => decode(row.get::<_, &str>(0)),
                None => Err(StorageError::NotFound),
            }
        })
    }

    fn update<T: Row>(&self, key: &[&str], updater: Updater<'_, T>) -> StorageResult<T> {
        let (select, update) = (select_for_update_sql::<T>(), update_sql::<T>());
        let err = self.db(T::WHAT, "update");
        self.with_conn(|conn| {
            let select = prepare(conn, &select).map_err(&err)?;
            let update = prepare(conn, &update).map_err(&err)?;
            // Dropping `tx` without commit (updater error or panic) rolls back.
            let mut tx = conn.client.transaction().map_err(&err)?;
            let row = tx.query_opt(&select, &key_params(key)).map_err(&err)?;
            let current: T = match row {
                Some(row) => decode(row.get::<_, &str>(0))?,
                None => return Err(StorageError::NotFound),
            };
            let updated = updater(current)?;
            update_row(&mut tx, &update, &updated)?.map_err(&err)?;
            tx.commit().map_err(&err)?;
            Ok(updated)
        })
    }

    fn delete<T: Row>(&self, key: &[&str]) -> StorageResult<()> {
        let sql = delete_sql::<T>();
        let err = self.db(T::WHAT, "delete");
        self.with_conn(|conn| {
            let stmt = prepare(conn, &sql).map_err(&err)?;
            let deleted = conn.client.execute(&stmt, &key_params(key)).map_err(&err)?;
            if deleted == 0 {
                return Err(StorageError::NotFound);
            }
            Ok(())
        })
    }

    /// Up to `limit` rows whose first time column is before `now`, earliest first.
    fn list_before<T: Row>(&self, now: SystemTime, limit: usize) -> StorageResult<Vec<T>> {
        let column = T::TIMES.first().copied().unwrap_or("expiry");
        let sql = format!(
            "SELECT data FROM {} WHERE {column} < $1 ORDER BY {column} LIMIT $2",
            T::TABLE
        );
        let now = unix_nanos(now);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let err = self.db(T::WHAT, "list due");
        self.with_conn(|conn| {
            let stmt = prepare(conn, &sql).map_err(&err)?;
            let rows = conn.client.query(&stmt, &[&now, &limit]).map_err(&err)?;
            rows.iter()
                .map(|row| decode(row.get::<_, &str>(0)))
                .collect()
        })
    }

    fn list<T: Row>(&self) -> StorageResult<Vec<T>> {
        let sql = format!(
            "SELECT data FROM {} ORDER BY {}",
            T::TABLE,
            T::KEY.join(", ")
        );
        let err = self.db(T::WHAT, "list");
        self.with_conn(|conn| {
            let stmt = prepare(conn, &sql).map_err(&err)?;
            let rows = conn.client.query(&stmt, &[]).map_err(&err)?;
            rows.iter()
                .map(|row| decode(row.get::<_, &str>(0)))
                .collect()
        })
    }
}

/// The statement for `sql` on this connection, prepared once (before any
/// transaction that uses it).
fn prepare(conn: &mut Connection, sql: &str) -> Result<Statement, ::postgres::Error> {
    if let Some(stmt) = conn.statements.get(sql) {
        return Ok(stmt.clone());
    }
    let stmt = conn.client.prepare(sql)?;
    conn.statements.insert(sql.to_owned(), stmt.clone());
    Ok(stmt)
}

/// A unique violation is [`StorageError::AlreadyExists`]; any other error goes
/// through `err`.
fn already_exists_or(
    err: &impl Fn(::postgres::Error) -> StorageError,
    e: ::postgres::Error,
) -> StorageError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        StorageError::AlreadyExists
    } else {
        err(e)
    }
}

/// The statements that create or edit an offline session inside a transaction.
struct OfflineSessionStatements {
    select: Statement,
    insert: Statement,
    update: Statement,
}

impl OfflineSessionStatements {
    fn prepare(conn: &mut Connection) -> Result<Self, ::postgres::Error> {
        Ok(Self {
            select: prepare(conn, &select_for_update_sql::<OfflineSession>())?,
            insert: prepare(
                conn,
                &insert_sql::<OfflineSession>(" ON CONFLICT DO NOTHING"),
            )?,
            update: prepare(conn, &update_sql::<OfflineSession>())?,
        })
    }

    /// Applies `edit` to the offline session `key` (an empty one when missing) and
    /// writes it, locked until the transaction ends. Returns what the last call of
    /// `edit` returned.
    fn upsert(
        &self,
        tx: &mut ::postgres::Transaction<'_>,
        key: [&str; 2],
        err: &impl Fn(::postgres::Error) -> StorageError,
        edit: &mut dyn FnMut(&mut OfflineSession) -> Vec<String>,
    ) -> StorageResult<Vec<String>> {
        // Twice at most: a session created concurrently between our read and our
        // insert is read (and locked) on the second pass.
        for _ in 0..2 {
            let row = tx.query_opt(&self.select, &key_params(&key)).map_err(err)?;
            let stored: Option<OfflineSession> =
                row.map(|row| decode(row.get::<_, &str>(0))).transpose()?;
            let exists = stored.is_some();
            let mut session = stored.unwrap_or_else(|| OfflineSession::empty(key[0], key[1]));
            let returned = edit(&mut session);
            let written = if exists {
                update_row(tx, &self.update, &session)?.map_err(err)?
            } else {
                insert_row(tx, &self.insert, &session)?.map_err(err)?
            };
            if written > 0 {
                return Ok(returned);
            }
        }
        Err(StorageError::Backend(
            "offline session neither found nor created".to_owned(),
        ))
    }
}

/// `INSERT` of a whole row (key columns, time columns, data), then `suffix`.
fn insert_sql<T: Row>(suffix: &str) -> String {
    let mut columns: Vec<&str> = T::KEY.to_vec();
    columns.extend_from_slice(T::TIMES);
    columns.push("data");
    let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({}){suffix}",
        T::TABLE,
        columns.join(", "),
        placeholders.join(", ")
    )
}

fn select_for_update_sql<T: Row>() -> String {
    format!(
        "SELECT data FROM {} WHERE {} FOR UPDATE",
        T::TABLE,
        key_filter::<T>(1)
    )
}

fn update_sql<T: Row>() -> String {
    let mut assignments = vec!["data = $1".to_owned()];
    assignments.extend(
        T::TIMES
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c} = ${}", i + 2)),
    );
    format!(
        "UPDATE {} SET {} WHERE {}",
        T::TABLE,
        assignments.join(", "),
        key_filter::<T>(T::TIMES.len() + 2)
    )
}

fn delete_sql<T: Row>() -> String {
    format!("DELETE FROM {} WHERE {}", T::TABLE, key_filter::<T>(1))
}

/// Runs `insert` (from [`insert_sql`]) for `value`: the outer error is encoding,
/// the inner one the driver's (the caller tells a unique violation apart).
fn insert_row<T: Row>(
    client: &mut impl GenericClient,
    insert: &Statement,
    value: &T,
) -> StorageResult<Result<u64, ::postgres::Error>> {
    let data = encode(value)?;
    let times: Vec<i64> = value.times().into_iter().map(unix_nanos).collect();
    let key = value.key();
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    params.extend(key.iter().map(|k| k as &(dyn ToSql + Sync)));
    params.extend(times.iter().map(|t| t as &(dyn ToSql + Sync)));
    params.push(&data);
    Ok(client.execute(insert, &params))
}

/// Runs `update` (from [`update_sql`]) for `value`, as [`insert_row`].
fn update_row<T: Row>(
    client: &mut impl GenericClient,
    update: &Statement,
    value: &T,
) -> StorageResult<Result<u64, ::postgres::Error>> {
    let data = encode(value)?;
    let times: Vec<i64> = value.times().into_iter().map(unix_nanos).collect();
    let key = value.key();
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&data];
    params.extend(times.iter().map(|t| t as &(dyn ToSql + Sync)));
    params.extend(key.iter().map(|k| k as &(dyn ToSql + Sync)));
    Ok(client.execute(update, &params))
}

/// `k1 = $n AND k2 = $n+1 …` for the key columns, numbered from `first`.
fn key_filter<T: Row>(first: usize) -> String {
    T::KEY
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", first + i))
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn key_params<'a>(key: &'a [&'a str]) -> Vec<&'a (dyn ToSql + Sync)> {
    key.iter().map(|k| k as &(dyn ToSql + Sync)).collect()
}

fn read_keys(
    client: &mut impl GenericClient,
    sql: &Statement,
) -> Result<Option<String>, ::postgres::Error> {
    Ok(client
        .query_opt(sql, &[])?
        .and_then(|row| row.get::<_, Option<String>>(0)))
}

fn decode_keys(json: Option<String>) -> StorageResult<Option<Keys>> {
    json.map(|json| {
        serde_json::from_str(&json)
            .map_err(|e| StorageError::Backend(format!("corrupt signing keys row: {e}")))
    })
    .transpose()
}

impl Storage for PostgresStorage {
    fn create_auth_request(&self, request: &AuthRequest) -> StorageResult<()> {
        self.create(request)
    }
    fn get_auth_request(&self, id: &str) -> StorageResult<AuthRequest> {
        self.get(&[id])
    }
    fn update_auth_request(
        &self,
        id: &str,
        updater: Updater<'_, AuthRequest>,
    ) -> StorageResult<AuthRequest> {
        self.update(&[id], updater)
    }
    fn delete_auth_request(&self, id: &str) -> StorageResult<()> {
        self.delete::<AuthRequest>(&[id])
    }
    fn exchange_auth_request_for_code(
        &self,
        request_id: &str,
        code: &AuthCode,
    ) -> StorageResult<()> {
        let err = self.db("auth code", "issue");
        self.with_conn(|conn| {
            let delete = prepare(conn, &delete_sql::<AuthRequest>()).map_err(&err)?;
            let insert = prepare(conn, &insert_sql::<AuthCode>("")).map_err(&err)?;
            let mut tx = conn.client.transaction().map_err(&err)?;
            if tx.execute(&delete, &[&request_id]).map_err(&err)? == 0 {
                return Err(StorageError::NotFound);
            }
            match insert_row(&mut tx, &insert, code)? {
                Ok(_) => {}
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    return Err(StorageError::AlreadyExists);
                }
                Err(e) => return Err(err(e)),
            }
            tx.commit().map_err(&err)
        })
    }

    fn create_auth_code(&self, code: &AuthCode) -> StorageResult<()> {
        self.create(code)
    }
    fn get_auth_code(&self, id: &str) -> StorageResult<AuthCode> {
        self.get(&[id])
    }
    fn delete_auth_code(&self, id: &str) -> StorageResult<()> {
        self.delete::<AuthCode>(&[id])
    }

    /// One transaction. Deleting the code decides which caller owns it (a second
    /// replica deleting the same row waits on its lock, then deletes nothing); the
    /// offline session is read `FOR UPDATE`, so concurrent links to it queue.
    fn commit_grant(&self, grant: GrantWrite<'_>) -> StorageResult<()> {
        let err = self.db("token grant", "commit");
        let unique = |e| already_exists_or(&err, e);
        let GrantWrite { redeem, refresh } = grant;
        self.with_conn(|conn| {
            let delete_code = prepare(conn, &delete_sql::<AuthCode>()).map_err(&err)?;
            let insert_tombstone = prepare(conn, &insert_sql::<RedeemedCode>("")).map_err(&err)?;
            let insert_token = prepare(conn, &insert_sql::<RefreshToken>("")).map_err(&err)?;
            let delete_token = prepare(conn, &delete_sql::<RefreshToken>()).map_err(&err)?;
            let sessions = OfflineSessionStatements::prepare(conn).map_err(&err)?;
            // Dropping `tx` without commit (any error below) rolls everything back.
            let mut tx = conn.client.transaction().map_err(&err)?;
            if let Some(redeemed) = redeem {
                if tx.execute(&delete_code, &[&redeemed.id]).map_err(&err)? == 0 {
                    return Err(StorageError::NotFound);
                }
                insert_row(&mut tx, &insert_tombstone, redeemed)?.map_err(unique)?;
            }
            if let Some(refresh) = refresh {
                let token = refresh.token;
                insert_row(&mut tx, &insert_token, token)?.map_err(unique)?;
                let key = [token.claims.user_id.as_str(), token.connector_id.as_str()];
                let pruned = sessions.upsert(&mut tx, key, &err, refresh.link)?;
                for id in &pruned {
                    tx.execute(&delete_token, &[id]).map_err(&err)?;
                }
            }
            tx.commit().map_err(&err)
        })
    }
    fn commit_login(&self, login: LoginWrite<'_>) -> StorageResult<Option<BrowserSession>> {
        login.check_replacement()?;
        let err = self.db("login", "commit");
        let unique = |e| already_exists_or(&err, e);
        let LoginWrite {
            request: expected,
            next,
            browser_session,
            offline_session,
        } = login;
        self.with_conn(|conn| {
            let select_request =
                prepare(conn, &select_for_update_sql::<AuthRequest>()).map_err(&err)?;
            let update_request = prepare(conn, &update_sql::<AuthRequest>()).map_err(&err)?;
            let delete_request = prepare(conn, &delete_sql::<AuthRequest>()).map_err(&err)?;
            let insert_code = prepare(conn, &insert_sql::<AuthCode>("")).map_err(&err)?;
            let select_browser =
                prepare(conn, &select_for_update_sql::<BrowserSession>()).map_err(&err)?;
            let insert_browser = prepare(conn, &insert_sql::<BrowserSession>("")).map_err(&err)?;
            let update_browser = prepare(conn, &update_sql::<BrowserSession>()).map_err(&err)?;
            let sessions = OfflineSessionStatements::prepare(conn).map_err(&err)?;
            // Dropping `tx` without commit (any error below) rolls everything back.
            let mut tx = conn.client.transaction().map_err(&err)?;
            let id = expected.id.as_str();
            let row = tx.query_opt(&select_request, &[&id]).map_err(&err)?;
            let stored: AuthRequest = match row {
                Some(row) => decode(row.get::<_, &str>(0))?,
                None => return Err(StorageError::NotFound),
            };
            if &stored != expected {
                return Err(StorageError::Rejected("auth request changed".into()));
            }
            match next {
                RequestNext::Replace(request) => {
                    update_row(&mut tx, &update_request, request)?.map_err(&err)?;
                }
                RequestNext::Exchange(code) => {
                    tx.execute(&delete_request, &[&id]).map_err(&err)?;
                    insert_row(&mut tx, &insert_code, code)?.map_err(unique)?;
                }
                RequestNext::Delete => {
                    tx.execute(&delete_request, &[&id]).map_err(&err)?;
                }
            }
            let written = match browser_session {
                Some(BrowserSessionWrite::Create(session)) => {
                    insert_row(&mut tx, &insert_browser, session)?.map_err(unique)?;
                    Some(session.clone())
                }
                Some(BrowserSessionWrite::Update { id, updater }) => {
                    let row = tx.query_opt(&select_browser, &[&id]).map_err(&err)?;
                    let current: BrowserSession = match row {
                        Some(row) => decode(row.get::<_, &str>(0))?,
                        None => return Err(StorageError::NotFound),
                    };
                    let updated = updater(current)?;
                    update_row(&mut tx, &update_browser, &updated)?.map_err(&err)?;
                    Some(updated)
                }
                None => None,
            };
            if let Some(edit) = offline_session {
                let key = [edit.user_id, edit.connector_id];
                sessions.upsert(&mut tx, key, &err, &mut |session| {
                    (edit.edit)(session);
                    Vec::new()
                })?;
            }
            tx.commit().map_err(&err)?;
            Ok(written)
        })
    }

    fn get_redeemed_code(&self, id: &str) -> StorageResult<RedeemedCode> {
        self.get(&[id])
    }

    fn create_refresh_token(&self, token: &RefreshToken) -> StorageResult<()> {
        self.create(token)
    }
    fn get_refresh_token(&self, id: &str) -> StorageResult<RefreshToken> {
        self.get(&[id])
    }
    fn update_refresh_token(
        &self,
        id: &str,
        updater: Updater<'_, RefreshToken>,
    ) -> StorageResult<RefreshToken> {
        self.update(&[id], updater)
    }
    fn delete_refresh_token(&self, id: &str) -> StorageResult<()> {
        self.delete::<RefreshToken>(&[id])
    }
    fn list_refresh_tokens(&self) -> StorageResult<Vec<RefreshToken>> {
        self.list()
    }

    fn create_offline_session(&self, session: &OfflineSession) -> StorageResult<()> {
        self.create(session)
    }
    fn get_offline_session(
        &self,
        user_id: &str,
        connector_id: &str,
    ) -> StorageResult<OfflineSession> {
        self.get(&[user_id, connector_id])
    }
    fn update_offline_session(
        &self,
        user_id: &str,
        connector_id: &str,
        updater: Updater<'_, OfflineSession>,
    ) -> StorageResult<OfflineSession> {
        self.update(&[user_id, connector_id], updater)
    }
    fn delete_offline_session(&self, user_id: &str, connector_id: &str) -> StorageResult<()> {
        self.delete::<OfflineSession>(&[user_id, connector_id])
    }

    fn get_keys(&self) -> StorageResult<Option<Keys>> {
        let err = self.db("signing keys", "get");
        let json = self.with_conn(|conn| {
            let stmt = prepare(conn, "SELECT data FROM signing_keys WHERE id = 1").map_err(&err)?;
            read_keys(&mut conn.client, &stmt).map_err(&err)
        })?;
        decode_keys(json)
    }

    fn update_keys(&self, updater: KeysUpdater<'_>) -> StorageResult<Keys> {
        let err = self.db("signing keys", "update");
        self.with_conn(|conn| {
            let select = prepare(
                conn,
                "SELECT data FROM signing_keys WHERE id = 1 FOR UPDATE",
            )
            .map_err(&err)?;
            let update =
                prepare(conn, "UPDATE signing_keys SET data = $1 WHERE id = 1").map_err(&err)?;
            let mut tx = conn.client.transaction().map_err(&err)?;
            let current = decode_keys(read_keys(&mut tx, &select).map_err(&err)?)?;
            let updated = updater(current)?;
            let data = serde_json::to_string(&updated)
                .map_err(|e| StorageError::Backend(format!("cannot encode signing keys: {e}")))?;
            let written = tx.execute(&update, &[&data]).map_err(&err)?;
            if written != 1 {
                return Err(StorageError::Backend(format!(
                    "postgres {}: the signing_keys row is missing",
                    self.target
                )));
            }
            tx.commit().map_err(&err)?;
            Ok(updated)
        })
    }

    fn create_device_request(&self, request: &DeviceRequest) -> StorageResult<()> {
        self.create(request)
    }
    fn get_device_request(&self, user_code: &str) -> StorageResult<DeviceRequest> {
        self.get(&[user_code])
    }
    fn create_device_token(&self, token: &DeviceToken) -> StorageResult<()> {
        self.create(token)
    }
    fn get_device_token(&self, device_code: &str) -> StorageResult<DeviceToken> {
        self.get(&[device_code])
    }
    fn update_device_token(
        &self,
        device_code: &str,
        updater: Updater<'_, DeviceToken>,
    ) -> StorageResult<DeviceToken> {
        self.update(&[device_code], updater)
    }

    fn revoke_access_tokens(&self, revoked: &RevokedAccessTokens) -> StorageResult<()> {
        // A concurrent first revocation of the same key makes `create` fail; the
        // update then merges into that row.
        match self.create(revoked) {
            Err(StorageError::AlreadyExists) => self
                .update(&[&revoked.key], &mut |existing: RevokedAccessTokens| {
                    Ok(existing.merged(revoked))
                })
                .map(|_| ()),
            other => other,
        }
    }
    fn get_revoked_access_tokens(&self, key: &str) -> StorageResult<RevokedAccessTokens> {
        self.get(&[key])
    }

    /// One transaction of plain deletes. Replicas collecting at the same time
    /// queue on the row locks; a row goes to whichever deletes it first, so the
    /// counts summed over replicas equal one collector's.
    fn create_browser_session(&self, session: &BrowserSession) -> StorageResult<()> {
        self.create(session)
    }
    fn get_browser_session(&self, id: &str) -> StorageResult<BrowserSession> {
        self.get(&[id])
    }
    fn update_browser_session(
        &self,
        id: &str,
        updater: Updater<'_, BrowserSession>,
    ) -> StorageResult<BrowserSession> {
        self.update(&[id], updater)
    }
    fn delete_browser_session(&self, id: &str) -> StorageResult<()> {
        self.delete::<BrowserSession>(&[id])
    }
    fn expired_browser_sessions(
        &self,
        now: SystemTime,
        limit: usize,
    ) -> StorageResult<Vec<BrowserSession>> {
        self.list_before(now, limit)
    }

    fn create_user_identity(&self, identity: &UserIdentity) -> StorageResult<()> {
        self.create(identity)
    }
    fn get_user_identity(&self, user_id: &str, connector_id: &str) -> StorageResult<UserIdentity> {
        self.get(&[user_id, connector_id])
    }
    fn update_user_identity(
        &self,
        user_id: &str,
        connector_id: &str,
        updater: Updater<'_, UserIdentity>,
    ) -> StorageResult<UserIdentity> {
        self.update(&[user_id, connector_id], updater)
    }

    fn create_logout_delivery(&self, delivery: &LogoutDelivery) -> StorageResult<()> {
        self.create(delivery)
    }
    fn update_logout_delivery(
        &self,
        id: &str,
        updater: Updater<'_, LogoutDelivery>,
    ) -> StorageResult<LogoutDelivery> {
        self.update(&[id], updater)
    }
    fn delete_logout_delivery(&self, id: &str) -> StorageResult<()> {
        self.delete::<LogoutDelivery>(&[id])
    }
    fn due_logout_deliveries(
        &self,
        now: SystemTime,
        limit: usize,
    ) -> StorageResult<Vec<LogoutDelivery>> {
        self.list_before(now, limit)
    }

    fn create_api_client(&self, client: &ApiClient) -> StorageResult<()> {
        self.create(client)
    }
    fn get_api_client(&self, id: &str) -> StorageResult<ApiClient> {
        self.get(&[id])
    }
    fn update_api_client(
        &self,
        id: &str,
        updater: Updater<'_, ApiClient>,
    ) -> StorageResult<ApiClient> {
        self.update(&[id], updater)
    }
    fn delete_api_client(&self, id: &str) -> StorageResult<()> {
        self.delete::<ApiClient>(&[id])
    }
    fn list_api_clients(&self) -> StorageResult<Vec<ApiClient>> {
        self.list()
    }
    fn create_api_password(&self, password: &ApiPassword) -> StorageResult<()> {
        self.create(&ApiPassword {
            email: password.email.to_lowercase(),
            ..password.clone()
        })
    }
    fn get_api_password(&self, email: &str) -> StorageResult<ApiPassword> {
        self.get(&[&email.to_lowercase()])
    }
    fn update_api_password(
        &self,
        email: &str,
        updater: Updater<'_, ApiPassword>,
    ) -> StorageResult<ApiPassword> {
        let email = email.to_lowercase();
        self.update(&[&email], &mut |current| {
            let updated = updater(current)?;
            Ok(ApiPassword {
                email: email.clone(),
                ..updated
            })
        })
    }
    fn delete_api_password(&self, email: &str) -> StorageResult<()> {
        self.delete::<ApiPassword>(&[&email.to_lowercase()])
    }
    fn list_api_passwords(&self) -> StorageResult<Vec<ApiPassword>> {
        self.list()
    }

    fn garbage_collect(&self, now: SystemTime) -> StorageResult<GcCounts> {
        let now = unix_nanos(now);
        let err = self.db("expired objects", "garbage-collect");
        self.with_conn(|conn| {
            let sqls = [
                "DELETE FROM auth_request WHERE expiry < $1",
                "DELETE FROM auth_code WHERE expiry < $1",
                "DELETE FROM redeemed_code WHERE expiry < $1",
                "DELETE FROM device_request WHERE expiry < $1",
                "DELETE FROM device_token WHERE expiry < $1",
                "DELETE FROM revoked_access_tokens WHERE expiry < $1",
            ];
            let mut statements = Vec::with_capacity(sqls.len());
            for sql in sqls {
                statements.push(prepare(conn, sql).map_err(&err)?);
            }
            let mut tx = conn.client.transaction().map_err(&err)?;
            let mut counts = [0u64; 6];
            for (count, stmt) in counts.iter_mut().zip(&statements) {
                *count = tx.execute(stmt, &[&now]).map_err(&err)?;
            }
            tx.commit().map_err(&err)?;
            let [
                auth_requests,
                auth_codes,
                redeemed_codes,
                device_requests,
                device_tokens,
                revoked_access_tokens,
            ] = counts;
            Ok(GcCounts {
                auth_requests,
                // Tombstones count with the codes, as in the other backends.
                auth_codes: auth_codes + redeemed_codes,
                device_requests,
                device_tokens,
                revoked_access_tokens,
            })
        })
    }

    fn unavailable(&self) -> Option<String> {
        self.down.load(Ordering::SeqCst).then(|| {
            self.down_reason
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::conformance::{self, fixtures};

    /// A fresh database (dropped at the end) or, without `OXIDEX_TEST_POSTGRES`,
    /// nothing to test against.
    struct Db {
        base: PostgresSettings,
        settings: PostgresSettings,
    }

    impl Db {
        fn new() -> Option<Self> {
            let Some(base) = test_db::from_env() else {
                eprintln!("{} is not set: no PostgreSQL to test against", test_db::ENV);
                return None;
            };
            let settings = test_db::create(&base).unwrap();
            Some(Self { base, settings })
        }

        fn open(&self) -> PostgresStorage {
            PostgresStorage::open(&self.settings).unwrap()
        }

        fn admin(&self) -> ::postgres::Client {
            let mut config = ::postgres::Config::new();
            config.user(&self.base.user).port(self.base.port);
            match &self.base.host {
                PostgresHost::Tcp(host) => config.host(host),
                PostgresHost::Socket(dir) => config.host_path(dir),
            };
            config.dbname(&self.settings.database);
            if let Some(password) = &self.base.password {
                config.password(password);
            }
            config.connect(NoTls).unwrap()
        }
    }

    impl Drop for Db {
        fn drop(&mut self) {
            let _ = test_db::drop(&self.base, &self.settings.database);
        }
    }

    #[test]
    fn replicas_starting_together_migrate_exactly_once() {
        let Some(db) = Db::new() else { return };
        let start = std::sync::Barrier::new(6);
        let results: Vec<StorageResult<PostgresStorage>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..6)
                .map(|_| {
                    let (start, settings) = (&start, &db.settings);
                    scope.spawn(move || {
                        start.wait();
                        PostgresStorage::open(settings)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for result in results {
            result.unwrap();
        }
        let versions: Vec<i32> = db
            .admin()
            .query(
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
            )
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let all: Vec<i32> = (1..=MIGRATIONS.len())
            .filter_map(|v| i32::try_from(v).ok())
            .collect();
        assert_eq!(versions, all);

        // A later build applies only its new migration, once.
        let mut newer: Vec<&str> = MIGRATIONS.to_vec();
        newer.push("CREATE TABLE added_later (x INTEGER)");
        PostgresStorage::open_with(&db.settings, &newer).unwrap();
        PostgresStorage::open_with(&db.settings, &newer).unwrap();
        let count: i64 = db
            .admin()
            .query_one("SELECT count(*) FROM schema_migrations", &[])
            .unwrap()
            .get(0);
        assert_eq!(usize::try_from(count).unwrap(), newer.len());
    }

    #[test]
    fn database_from_a_newer_version_is_refused() {
        let Some(db) = Db::new() else { return };
        drop(db.open());
        db.admin()
            .execute("INSERT INTO schema_migrations (version) VALUES (99)", &[])
            .unwrap();
        let Err(StorageError::Backend(message)) = PostgresStorage::open(&db.settings) else {
            panic!("a database at schema version 99 was accepted");
        };
        assert!(message.contains("version 99"), "{message}");
        assert!(message.contains("newer"), "{message}");
        assert!(message.contains(&db.settings.describe()), "{message}");
    }

    #[test]
    fn failed_migration_leaves_the_schema_untouched() {
        let Some(db) = Db::new() else { return };
        let broken = [MIGRATIONS[0], "CREATE TABLE ok (x INTEGER); NOT SQL;"];
        let Err(StorageError::Backend(message)) = PostgresStorage::open_with(&db.settings, &broken)
        else {
            panic!("a broken migration was applied");
        };
        assert!(message.contains("version 2"), "{message}");
        let tables: i64 = db
            .admin()
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE tablename IN ('auth_request', 'ok')",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(tables, 0, "partial migration was committed");
    }

    /// Two handles stand for two replicas: only the database keeps their
    /// read-modify-writes apart.
    #[test]
    fn parallel_updates_through_two_replicas_lose_nothing() {
        let Some(db) = Db::new() else { return };
        let a: SharedStorage = Arc::new(db.open());
        let b: SharedStorage = Arc::new(db.open());
        conformance::parallel_increments(&[a, b]);
    }

    /// Key rotation is a compare-and-swap across replicas, including the very
    /// first key (no row to lock yet in a naive schema).
    #[test]
    fn keys_updates_across_replicas_see_each_other() {
        let Some(db) = Db::new() else { return };
        let replicas: Vec<PostgresStorage> = (0..4).map(|_| db.open()).collect();
        let created = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for (i, replica) in replicas.iter().enumerate() {
                let created = &created;
                scope.spawn(move || {
                    replica
                        .update_keys(&mut |current| match current {
                            Some(keys) => Ok(keys),
                            None => {
                                created.fetch_add(1, Ordering::SeqCst);
                                Ok(fixtures::keys(&format!("kid-{i}"), None, &[]))
                            }
                        })
                        .unwrap();
                });
            }
        });
        assert_eq!(created.load(Ordering::SeqCst), 1, "first key made twice");
        let first = replicas[0].get_keys().unwrap().unwrap();
        for replica in &replicas {
            assert_eq!(replica.get_keys().unwrap().unwrap(), first);
        }
    }

    /// Every replica collects garbage on its own schedule; running together they
    /// split the expired rows between them without an error, and the counts add
    /// up to what one collector would report.
    #[test]
    fn garbage_collection_on_several_replicas_at_once() {
        let Some(db) = Db::new() else { return };
        let replicas: Vec<PostgresStorage> = (0..3).map(|_| db.open()).collect();
        let now = fixtures::instant(1_800_000_000);
        for i in 0..200 {
            replicas[0]
                .create_auth_request(&fixtures::auth_request(
                    &format!("old-{i}"),
                    now - Duration::from_secs(60),
                ))
                .unwrap();
            replicas[0]
                .create_auth_code(&fixtures::auth_code(
                    &format!("old-{i}"),
                    now - Duration::from_secs(60),
                ))
                .unwrap();
        }
        replicas[0]
            .create_auth_request(&fixtures::auth_request(
                "fresh",
                now + Duration::from_secs(60),
            ))
            .unwrap();
        let start = std::sync::Barrier::new(replicas.len());
        let counts: Vec<GcCounts> = std::thread::scope(|scope| {
            let handles: Vec<_> = replicas
                .iter()
                .map(|replica| {
                    let start = &start;
                    scope.spawn(move || {
                        start.wait();
                        replica.garbage_collect(now).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let requests: u64 = counts.iter().map(|c| c.auth_requests).sum();
        let codes: u64 = counts.iter().map(|c| c.auth_codes).sum();
        assert_eq!((requests, codes), (200, 200), "{counts:?}");
        assert!(replicas[1].get_auth_request("fresh").is_ok());
        assert_eq!(
            replicas[2].garbage_collect(now).unwrap(),
            GcCounts::default()
        );
    }

    #[test]
    fn lost_connections_are_replaced_without_an_error() {
        let Some(db) = Db::new() else { return };
        let storage = db.open();
        storage
            .create_refresh_token(&fixtures::refresh_token("rt"))
            .unwrap();
        // As a database restart does: every session of this database ends.
        db.admin()
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .unwrap();
        for _ in 0..10 {
            storage.get_refresh_token("rt").unwrap();
        }
        assert_eq!(storage.unavailable(), None);
    }

    #[test]
    fn unreachable_database_fails_fast_and_names_it_without_the_password() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let settings = PostgresSettings {
            host: PostgresHost::Tcp("127.0.0.1".into()),
            port,
            database: "oxidex".into(),
            user: "oxidex".into(),
            password: Some("hunter2".into()),
            ssl: crate::config::PostgresSsl {
                mode: crate::config::SslMode::Disable,
                ca_file: None,
                cert_file: None,
                key_file: None,
                server_name: None,
            },
            connect_timeout: Some(Duration::from_secs(2)),
            max_open_conns: 2,
            max_idle_conns: 1,
            conn_max_lifetime: None,
        };
        let started = std::time::Instant::now();
        let Err(StorageError::Unavailable(message)) = PostgresStorage::open(&settings) else {
            panic!("opened a database nobody listens for");
        };
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            message.contains(&format!("127.0.0.1:{port}/oxidex")),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }
}
