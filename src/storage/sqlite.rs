//! SQLite storage (rusqlite, bundled SQLite).
//!
//! Schema: one table per entity. Key columns and the expiry columns that garbage
//! collection scans are real (indexed) columns; the whole entity is also stored as a
//! JSON document in `data`, which is what reads return. Expiry columns hold integer
//! **nanoseconds since the Unix epoch** (saturating outside 1677–2262), so the GC
//! comparison `expiry < now` is as exact as the in-memory backend's; the JSON
//! document keeps every instant to the nanosecond, so times round-trip exactly.
//!
//! The schema evolves only through [`MIGRATIONS`], applied in order inside one
//! `BEGIN IMMEDIATE` transaction at open and recorded in `schema_migrations`. A
//! database written by a newer oxidex (a higher version than this build knows) is
//! refused rather than silently misread. Because rows are serde JSON, a field added
//! to an entity later needs `#[serde(default)]` or a migration rewriting `data`.
//!
//! Connection handling: each handle owns one connection behind a mutex. SQLite
//! serialises writers anyway, and at WAL/NORMAL one commit costs ~0.05 ms
//! (measured on the 2-core bench machine), far below what a login costs elsewhere, so a pool
//! would add retry logic without buying throughput. Every read-modify-write runs in
//! a `BEGIN IMMEDIATE` transaction, which takes SQLite's write lock *before* reading;
//! that is what keeps updates atomic between several handles or processes sharing
//! one file, with the busy timeout making a contending writer wait instead of fail.
//!
//! Updaters run while the handle's mutex is held: an updater must not call back into
//! the same storage handle (that would deadlock, as with the memory backend).
//!
//! Checkpoints: SQLite's automatic checkpoint runs inside the commit that takes the
//! WAL past 1,000 frames, so one request in ~100 held the connection (and every
//! request queued behind it) while ~4 MB were copied and two fsyncs made. A file
//! database instead gets a [`Checkpointer`] thread with a connection of its own: it
//! copies the WAL while commits go on, then takes the handle's mutex only to copy
//! the frames committed meanwhile, which completes the checkpoint so the next commit
//! starts the WAL over. Durability is SQLite's own either way (the same
//! `synchronous=NORMAL` syncs around each checkpoint).

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::Value;
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params_from_iter,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::*;

/// How long a writer waits for another connection's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, one entry per version: `MIGRATIONS[i]` creates version `i + 1`.
/// Append only; never edit an entry that has shipped.
pub const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    "
    CREATE TABLE auth_request (
        id     TEXT    NOT NULL PRIMARY KEY,
        expiry INTEGER NOT NULL,
        data   TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX auth_request_expiry ON auth_request (expiry);

    CREATE TABLE auth_code (
        id     TEXT    NOT NULL PRIMARY KEY,
        expiry INTEGER NOT NULL,
        data   TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX auth_code_expiry ON auth_code (expiry);

    CREATE TABLE refresh_token (
        id   TEXT NOT NULL PRIMARY KEY,
        data TEXT NOT NULL
    ) STRICT;

    CREATE TABLE offline_session (
        user_id      TEXT NOT NULL,
        connector_id TEXT NOT NULL,
        data         TEXT NOT NULL,
        PRIMARY KEY (user_id, connector_id)
    ) STRICT;

    CREATE TABLE signing_keys (
        id   INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
        data TEXT    NOT NULL
    ) STRICT;

    CREATE TABLE device_request (
        user_code TEXT    NOT NULL PRIMARY KEY,
        expiry    INTEGER NOT NULL,
        data      TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX device_request_expiry ON device_request (expiry);

    CREATE TABLE device_token (
        device_code TEXT    NOT NULL PRIMARY KEY,
        expiry      INTEGER NOT NULL,
        data        TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX device_token_expiry ON device_token (expiry);

    CREATE TABLE auth_session (
        id              TEXT    NOT NULL PRIMARY KEY,
        absolute_expiry INTEGER NOT NULL,
        idle_expiry     INTEGER NOT NULL,
        data            TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX auth_session_absolute_expiry ON auth_session (absolute_expiry);
    CREATE INDEX auth_session_idle_expiry ON auth_session (idle_expiry);
    ",
    // 2: tombstones of exchanged authorization codes (replay detection).
    "
    CREATE TABLE redeemed_code (
        id     TEXT    NOT NULL PRIMARY KEY,
        expiry INTEGER NOT NULL,
        data   TEXT    NOT NULL
    ) STRICT;
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
        id     TEXT    NOT NULL PRIMARY KEY,
        expiry INTEGER NOT NULL,
        data   TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX browser_session_expiry ON browser_session (expiry);

    CREATE TABLE user_identity (
        user_id      TEXT NOT NULL,
        connector_id TEXT NOT NULL,
        data         TEXT NOT NULL,
        PRIMARY KEY (user_id, connector_id)
    ) STRICT;

    CREATE TABLE logout_delivery (
        id   TEXT    NOT NULL PRIMARY KEY,
        due  INTEGER NOT NULL,
        data TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX logout_delivery_due ON logout_delivery (due);
    ",
    // 5: the deny list of revoked access tokens (RFC 7009).
    "
    CREATE TABLE revoked_access_tokens (
        key    TEXT    NOT NULL PRIMARY KEY,
        expiry INTEGER NOT NULL,
        data   TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX revoked_access_tokens_expiry ON revoked_access_tokens (expiry);
    ",
    // 6: clients and passwords created through the gRPC admin API.
    "
    CREATE TABLE api_client (
        id   TEXT NOT NULL PRIMARY KEY,
        data TEXT NOT NULL
    ) STRICT;

    CREATE TABLE api_password (
        email TEXT NOT NULL PRIMARY KEY,
        data  TEXT NOT NULL
    ) STRICT;
    ",
    // 7: a redeemed code's tombstone replaces the code in its own row (`redeemed`
    // = 1, same id and expiry), so an exchange updates one row instead of
    // deleting it from three B-trees and inserting into three more.
    "
    ALTER TABLE auth_code ADD COLUMN redeemed INTEGER NOT NULL DEFAULT 0;
    INSERT OR IGNORE INTO auth_code (id, expiry, data, redeemed)
        SELECT id, expiry, data, 1 FROM redeemed_code;
    DROP TABLE redeemed_code;
    ",
    // 8: offline sessions store their refresh references' times as integer
    // nanoseconds (`entities::compact_time`). Rows in the old form still load, and
    // nothing needs rewriting; the version is recorded so that an older oxidex,
    // which cannot read the new form, refuses the database instead of failing
    // at the user's next refresh.
    "-- no schema change",
];

/// WAL frames (pages) at which the [`Checkpointer`] is woken: SQLite's default
/// for its automatic checkpoint.
const CHECKPOINT_FRAMES: i32 = 1000;
/// WAL frames (~40 MB at 4 KiB pages) beyond which a commit checkpoints itself, as
/// SQLite's automatic checkpoint would, should the checkpointer fall behind.
const WAL_LIMIT_FRAMES: i32 = 10_000;
/// The pause after a failed checkpoint (a full disk, an I/O error).
const CHECKPOINT_RETRY: Duration = Duration::from_secs(1);

/// Storage in one SQLite database file (or an in-memory database).
pub struct SqliteStorage {
    conn: Arc<Mutex<Connection>>,
    /// The database file, for error messages (`:memory:` for a private one).
    path: String,
    /// File databases only; stopped when the handle is dropped.
    checkpointer: Option<Checkpointer>,
}

impl SqliteStorage {
    /// Opens (creating if missing) the database at `path` and brings its schema up to
    /// date. The parent directory must exist. A new file is created readable by its
    /// owner only: it holds private keys and refresh tokens.
    pub fn open(path: &Path) -> StorageResult<Self> {
        if path.as_os_str() == ":memory:" {
            return Self::open_in_memory();
        }
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            StorageError::Backend(format!(
                "cannot open SQLite database {}: {what}: {e}",
                path.display()
            ))
        };
        create_private_file(path).map_err(|e| fail("create file", &e))?;
        // No SQLITE_OPEN_URI: the configured file is always a path, never a URI.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).map_err(|e| fail("open", &e))?;
        configure(&conn, true).map_err(|e| fail("configure", &e))?;
        migrate(&mut conn, MIGRATIONS).map_err(|e| match e {
            StorageError::Backend(msg) => fail("migrate", &msg),
            other => other,
        })?;
        let own = Connection::open_with_flags(path, flags).map_err(|e| fail("open", &e))?;
        configure(&own, true).map_err(|e| fail("configure", &e))?;
        let conn = Arc::new(Mutex::new(conn));
        let checkpointer = Checkpointer::start(own, Arc::clone(&conn), path.display().to_string())
            .map_err(|e| fail("start the checkpointer", &e))?;
        Ok(Self {
            conn,
            path: path.display().to_string(),
            checkpointer: Some(checkpointer),
        })
    }

    /// A private, empty in-memory database (gone when the handle is dropped).
    pub fn open_in_memory() -> StorageResult<Self> {
        let fail = |e: &dyn std::fmt::Display| {
            StorageError::Backend(format!("cannot open in-memory SQLite database: {e}"))
        };
        let mut conn = Connection::open_in_memory().map_err(|e| fail(&e))?;
        configure(&conn, false).map_err(|e| fail(&e))?;
        migrate(&mut conn, MIGRATIONS)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: ":memory:".to_owned(),
            checkpointer: None,
        })
    }

    /// A poisoned mutex only means an updater panicked; its transaction was rolled
    /// back when the guard unwound, so the connection is still consistent.
    fn lock(&self) -> MutexGuard<'_, Connection> {
        lock(&self.conn)
    }

    /// Counts the transactions this handle commits from now on (each autocommitted
    /// statement is one), so tests can hold a flow to its number of commits.
    #[cfg(test)]
    pub(crate) fn count_commits(&self) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let count = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&count);
        let hooked = self.lock().commit_hook(Some(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            false
        }));
        assert!(hooked.is_ok(), "cannot set a commit hook: {hooked:?}");
        count
    }

    /// The JSON of the code `id` (`redeemed`: of its tombstone).
    fn code_row(&self, id: &str, redeemed: bool) -> StorageResult<Option<String>> {
        let (sql, what) = if redeemed {
            (
                "SELECT data FROM auth_code WHERE id = ?1 AND redeemed = 1",
                "redeemed auth code",
            )
        } else {
            (
                "SELECT data FROM auth_code WHERE id = ?1 AND redeemed = 0",
                "auth code",
            )
        };
        self.lock()
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.query_row([id], |row| row.get(0)).optional())
            .map_err(db(&self.path, what, "get"))
    }

    // Rows are encoded and decoded outside the connection's mutex: every request
    // that touches storage queues for it.
    fn create<T: Row>(&self, value: &T) -> StorageResult<()> {
        let data = encode(value)?;
        insert_encoded(&self.lock(), &self.path, value, data)
    }

    fn get<T: Row>(&self, key: &[&str]) -> StorageResult<T> {
        let json = select_encoded::<T>(&self.lock(), &self.path, key)?;
        decode(&json.ok_or(StorageError::NotFound)?)
    }

    fn update<T: Row>(&self, key: &[&str], updater: Updater<'_, T>) -> StorageResult<T> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db(&self.path, T::WHAT, "begin update"))?;
        let current = select::<T>(&tx, &self.path, key)?.ok_or(StorageError::NotFound)?;
        // On an updater error `tx` is dropped, which rolls back: nothing is written.
        let updated = updater(current)?;
        overwrite(&tx, &self.path, &updated)?;
        tx.commit()
            .map_err(db(&self.path, T::WHAT, "commit update"))?;
        Ok(updated)
    }

    fn delete<T: Row>(&self, key: &[&str]) -> StorageResult<()> {
        if remove::<T>(&self.lock(), &self.path, key)? {
            Ok(())
        } else {
            Err(StorageError::NotFound)
        }
    }

    /// Up to `limit` rows whose first time column is before `now`, earliest first.
    fn list_before<T: Row>(&self, now: SystemTime, limit: usize) -> StorageResult<Vec<T>> {
        let column = T::TIMES.first().copied().unwrap_or("expiry");
        let sql = format!(
            "SELECT data FROM {} WHERE {column} < ?1 ORDER BY {column} LIMIT ?2",
            T::TABLE
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(&sql)
            .map_err(db(&self.path, T::WHAT, "list due"))?;
        let rows = stmt
            .query_map(rusqlite::params![unix_nanos(now), limit], |row| {
                row.get::<_, String>(0)
            })
            .map_err(db(&self.path, T::WHAT, "list due"))?;
        rows.map(|row| decode::<T>(&row.map_err(db(&self.path, T::WHAT, "list due"))?))
            .collect()
    }

    fn list<T: Row>(&self) -> StorageResult<Vec<T>> {
        let sql = format!(
            "SELECT data FROM {} ORDER BY {}",
            T::TABLE,
            T::KEY.join(", ")
        );
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(&sql)
            .map_err(db(&self.path, T::WHAT, "list"))?;
        let rows = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(db(&self.path, T::WHAT, "list"))?;
        rows.map(|row| decode::<T>(&row.map_err(db(&self.path, T::WHAT, "list"))?))
            .collect()
    }
}

/// Writes a consistent copy of the database at `source` to the new file `dest`
/// while other connections (a running oxidex) keep reading and writing it.
///
/// `VACUUM INTO` copies inside one read transaction, so the copy is the database
/// as of one instant, with every committed transaction (also those still in the
/// WAL) and none half-applied; writers are not blocked. `dest` must not exist: it
/// is created owner-only, since it holds private keys and refresh tokens.
pub fn backup(source: &Path, dest: &Path) -> StorageResult<()> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        StorageError::Backend(format!(
            "cannot back up SQLite database {} to {}: {what}: {e}",
            source.display(),
            dest.display()
        ))
    };
    if !source.is_file() {
        return Err(fail("source", &"no such database file"));
    }
    let Some(dest_str) = dest.to_str() else {
        return Err(fail("destination", &"path is not valid UTF-8"));
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(dest)
        .map_err(|e| fail("create destination", &e))?;
    // Read-write (not read-only) so a WAL left by a crashed process can be read.
    let conn = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|conn| conn.busy_timeout(BUSY_TIMEOUT).map(|()| conn))
    .map_err(|e| fail("open", &e))?;
    let copied = conn
        .execute("VACUUM INTO ?1", [dest_str])
        .map_err(|e| fail("copy", &e));
    if let Err(err) = copied {
        let _ = std::fs::remove_file(dest);
        return Err(err);
    }
    let check: String = Connection::open_with_flags(dest, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|copy| copy.query_row("PRAGMA integrity_check", [], |row| row.get(0)))
        .map_err(|e| fail("check the copy", &e))?;
    if check != "ok" {
        return Err(fail("check the copy", &check));
    }
    Ok(())
}

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for SqliteStorage {
    fn drop(&mut self) {
        if let Some(checkpointer) = self.checkpointer.take() {
            checkpointer.stop();
        }
    }
}

/// The thread that checkpoints a file database (see the module documentation).
struct Checkpointer {
    signal: Arc<CheckpointSignal>,
    thread: std::thread::JoinHandle<()>,
}

#[derive(Default)]
struct CheckpointSignal {
    state: Mutex<CheckpointState>,
    wake: Condvar,
}

#[derive(Default)]
struct CheckpointState {
    due: bool,
    stop: bool,
}

impl CheckpointSignal {
    fn set(&self, change: impl FnOnce(&mut CheckpointState)) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut state);
        self.wake.notify_one();
    }

    /// Waits for `period`, or less when the handle is dropped meanwhile.
    fn pause(&self, period: Duration) {
        let state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = self
            .wake
            .wait_timeout_while(state, period, |state| !state.stop)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }

    /// Waits until a checkpoint is due (`true`) or the handle is dropped (`false`).
    fn wait(&self) -> bool {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while !state.due && !state.stop {
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.due = false;
        !state.stop
    }
}

impl Checkpointer {
    /// Replaces SQLite's automatic checkpoint on `shared` (the handle's connection)
    /// with a thread that checkpoints through `own`.
    fn start(
        own: Connection,
        shared: Arc<Mutex<Connection>>,
        path: String,
    ) -> std::io::Result<Self> {
        let signal = Arc::new(CheckpointSignal::default());
        let hook_signal = Arc::clone(&signal);
        // Registering a WAL hook turns SQLite's automatic checkpoint off.
        lock(&shared)
            .wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, frames| {
                if frames >= WAL_LIMIT_FRAMES {
                    wal.checkpoint()?;
                } else if frames >= CHECKPOINT_FRAMES {
                    hook_signal.set(|state| state.due = true);
                }
                Ok(())
            }))
            .map_err(std::io::Error::other)?;
        let thread_signal = Arc::clone(&signal);
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while thread_signal.wait() {
                    if !checkpoint(&own, &shared, &path) {
                        // Every commit past the threshold asks again: at most one
                        // attempt (and one warning) per second while it fails.
                        thread_signal.pause(CHECKPOINT_RETRY);
                    }
                }
            })?;
        Ok(Self { signal, thread })
    }

    fn stop(self) {
        self.signal.set(|state| state.stop = true);
        let _ = self.thread.join();
    }
}

/// Copies the WAL into the database: first while commits go on, then, holding the
/// handle's connection, the frames committed meanwhile. A checkpoint that is
/// complete lets the next commit write the WAL from its start again.
/// `false` when it failed (logged).
fn checkpoint(own: &Connection, shared: &Mutex<Connection>, path: &str) -> bool {
    let run = |conn: &Connection| conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    let outcome = run(own).and_then(|()| run(&lock(shared)));
    if let Err(error) = &outcome {
        // The next commit past the threshold tries again; past the limit commits
        // checkpoint themselves.
        tracing::warn!(%error, database = path, "SQLite checkpoint failed");
    }
    outcome.is_ok()
}

/// Creates `path` with owner-only permissions if it does not exist yet, so SQLite
/// (which gives its `-wal`/`-shm` files the database file's mode) never makes the
/// key material world-readable.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn configure(conn: &Connection, file: bool) -> rusqlite::Result<()> {
    // The busy timeout first: switching to WAL needs a lock another process may hold.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if file {
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                journal_mode = %mode,
                "SQLite refused WAL mode (unsupported file system?); writes will be much slower"
            );
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

/// Brings the schema to `migrations.len()`, returning how many migrations ran.
fn migrate(conn: &mut Connection, migrations: &[&str]) -> StorageResult<usize> {
    let err = |what: &'static str| {
        move |e: rusqlite::Error| StorageError::Backend(format!("schema migration: {what}: {e}"))
    };
    // IMMEDIATE so two processes opening a fresh file cannot both apply version 1.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err("begin"))?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INTEGER PRIMARY KEY,
            applied_at INTEGER NOT NULL
        )",
    )
    .map_err(err("create schema_migrations"))?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |row| row.get(0),
        )
        .map_err(err("read schema version"))?;
    let known = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    if current > known {
        return Err(StorageError::Backend(format!(
            "database schema version {current} is newer than this oxidex supports \
             (version {known}); it was written by a newer oxidex: run that version \
             or restore a backup"
        )));
    }
    let mut applied = 0;
    for (index, sql) in migrations.iter().enumerate() {
        let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
        if version <= current {
            continue;
        }
        tx.execute_batch(sql).map_err(|e| {
            StorageError::Backend(format!("schema migration to version {version}: {e}"))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, unixepoch())",
            [version],
        )
        .map_err(err("record version"))?;
        applied += 1;
    }
    tx.commit().map_err(err("commit"))?;
    if applied > 0 {
        tracing::info!(applied, version = known, "applied SQLite schema migrations");
    }
    Ok(applied)
}

/// How an entity maps onto its table (shared with the PostgreSQL backend).
pub(super) trait Row: Serialize + DeserializeOwned {
    const TABLE: &'static str;
    /// For error messages.
    const WHAT: &'static str;
    const KEY: &'static [&'static str];
    /// Instant columns, in this order, as returned by [`Row::times`].
    const TIMES: &'static [&'static str] = &[];
    fn key(&self) -> Vec<&str>;
    fn times(&self) -> Vec<SystemTime> {
        Vec::new()
    }
}

impl Row for AuthRequest {
    const TABLE: &'static str = "auth_request";
    const WHAT: &'static str = "auth request";
    const KEY: &'static [&'static str] = &["id"];
    const TIMES: &'static [&'static str] = &["expiry"];
    fn key(&self) -> Vec<&str> {
        vec![&self.id]
    }
    fn times(&self) -> Vec<SystemTime> {
        vec![self.expiry]
    }
}

impl Row for AuthCode {
    const TABLE: &'static str = "auth_code";
    const WHAT: &'static str = "auth code";
    const KEY: &'static [&'static str] = &["id"];
    const TIMES: &'static [&'static str] = &["expiry"];
    fn key(&self) -> Vec<&str> {
        vec![&self.id]
    }
    fn times(&self) -> Vec<SystemTime> {
        vec![self.expiry]
    }
}

impl Row for RedeemedCode {
    const TABLE: &'static str = "redeemed_code";
    const WHAT: &'static str = "redeemed auth code";
    const KEY: &'static [&'static str] = &["id"];
    const TIMES: &'static [&'static str] = &["expiry"];
    fn key(&self) -> Vec<&str> {
        vec![&self.id]
    }
    fn times(&self) -> Vec<SystemTime> {
        vec![self.expiry]
    }
}

impl Row for RefreshToken {
    const TABLE: &'static str = "refresh_token";
    const WHAT: &'static str = "refresh token";
    const KEY: &'static [&'static str] = &["id"];
    fn key(&self) -> Vec<&str> {
        vec![&self.id]
    }
}

impl Row for OfflineSession {
    const TABLE: &'static str = "offline_session";
    const WHAT: &'static str = "offline session";
    const KEY: &'static [&'static str] = &["user_id", "connector_id"];
    fn key(&self) -> Vec<&str> {
        vec![&self.user_id, &self.connector_id]
    }
}

impl Row for DeviceRequest {
    const TABLE: &'static str = "device_request";
    const WHAT: &'static str = "device request";
    const KEY: &'static [&'static str] = &["user_code"];
    const TIMES: &'static [&'static str] = &["expiry"];
    fn key(&self) -> Vec<&str> {
        vec![&self.user_code]
    }
    fn times(&self) -> Vec<SystemTime> {
        vec![self.expiry]
    }
}

impl Row for DeviceToken {
    const TABLE: &'static str = "device_token";
    const WHAT: &'static str = "device token";
    const KEY: &'static [&'static str] = &["device_code"];
    const TIMES: &'static [&'static str] = &["expiry"];
    fn key(&self) -> Vec<&str> {
        vec![&self.device_code]
    }
    fn times(&self) -> Vec<SystemTime> {
        vec![self.expiry]
    }
}

impl Row for BrowserSession {
    const TABLE: &'static str = "browser_session";
    const WHAT: &'static str = "browser session";
    const KEY: &'static [&'static str] = &["id"];
    const TIMES: &'static [&'static str] = &["expiry"];
    fn key(&self) -> Vec<&str> {
        vec![&self.id]
    }
    fn times(&self) -> Vec<SystemTime> {
        vec![self.expiry()]
    }
}

impl Row for ApiClient {
    const TABLE: &'static str = "api_client";
    const WHAT: &'static str = "client";
    const KEY: &'static [&'static str] = &["id"];
    fn key(&self) -> Vec<&str> {
        vec![&self.id]
    }
}

impl Row for ApiPassword {
    const TABLE: &'static str = "api_password";
    const WHAT: &'static str = "password";
    const KEY: &'static [&'static str] = &["email"];
    fn key(&self) -> Vec<&str> {
        vec![&self.email]
    }
}

impl Row for UserIdentity {
    const TABLE: &'static str = "user_identity";
    const WHAT: &'static str = "user identity";
    const KEY: &'static [&'static str] = &["user_id", "connector_id"];
    fn key(&self) -> Vec<&str> {
        vec![&self.user_id, &self.connector_id]
    }
}

impl Row for LogoutDelivery {
    const TABLE: &'static str = "logout_delivery";
    const WHAT: &'static str = "logout delivery";
    const KEY: &'static [&'static str] = &["id"];
    const TIMES: &'static [&'static str] = &["due"];
    fn key(&self) -> Vec<&str> {
        vec![&self.id]
    }
    fn times(&self) -> Vec<SystemTime> {
        vec![self.due]
    }
}

impl Row for RevokedAccessTokens {
    const TABLE: &'static str = "revoked_access_tokens";
    const WHAT: &'static str = "revoked access tokens";
    const KEY: &'static [&'static str] = &["key"];
    const TIMES: &'static [&'static str] = &["expiry"];
    fn key(&self) -> Vec<&str> {
        vec![&self.key]
    }
    fn times(&self) -> Vec<SystemTime> {
        vec![self.expiry]
    }
}

fn key_filter<T: Row>() -> String {
    T::KEY
        .iter()
        .map(|c| format!("{c} = ?"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn select<T: Row>(conn: &Connection, path: &str, key: &[&str]) -> StorageResult<Option<T>> {
    select_encoded::<T>(conn, path, key)?
        .map(|json| decode(&json))
        .transpose()
}

/// The stored JSON of the row with `key`, for callers that decode it after
/// giving the connection back.
fn select_encoded<T: Row>(
    conn: &Connection,
    path: &str,
    key: &[&str],
) -> StorageResult<Option<String>> {
    let sql = format!("SELECT data FROM {} WHERE {}", T::TABLE, key_filter::<T>());
    conn.prepare_cached(&sql)
        .and_then(|mut stmt| {
            stmt.query_row(params_from_iter(key), |row| row.get(0))
                .optional()
        })
        .map_err(db(path, T::WHAT, "get"))
}

fn insert<T: Row>(conn: &Connection, path: &str, value: &T) -> StorageResult<()> {
    insert_encoded(conn, path, value, encode(value)?)
}

/// [`insert`] with `value` already encoded as `data`, so callers can encode before
/// taking the connection.
fn insert_encoded<T: Row>(
    conn: &Connection,
    path: &str,
    value: &T,
    data: String,
) -> StorageResult<()> {
    let mut columns: Vec<&str> = T::KEY.to_vec();
    columns.extend_from_slice(T::TIMES);
    columns.push("data");
    let placeholders = vec!["?"; columns.len()].join(", ");
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({placeholders})",
        T::TABLE,
        columns.join(", ")
    );
    let mut params: Vec<Value> = value
        .key()
        .into_iter()
        .map(|k| Value::Text(k.to_owned()))
        .collect();
    params.extend(time_values(value));
    params.push(Value::Text(data));
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(db(path, T::WHAT, "create"))?;
    match stmt.execute(params_from_iter(params)) {
        Ok(_) => Ok(()),
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
            Err(StorageError::AlreadyExists)
        }
        Err(e) => Err(db(path, T::WHAT, "create")(e)),
    }
}

/// Replaces the row with `value`'s key (which must exist).
fn overwrite<T: Row>(conn: &Connection, path: &str, value: &T) -> StorageResult<()> {
    let mut assignments = vec!["data = ?".to_owned()];
    assignments.extend(T::TIMES.iter().map(|c| format!("{c} = ?")));
    let sql = format!(
        "UPDATE {} SET {} WHERE {}",
        T::TABLE,
        assignments.join(", "),
        key_filter::<T>()
    );
    let mut params = vec![Value::Text(encode(value)?)];
    params.extend(time_values(value));
    params.extend(value.key().into_iter().map(|k| Value::Text(k.to_owned())));
    conn.prepare_cached(&sql)
        .and_then(|mut stmt| stmt.execute(params_from_iter(params)))
        .map_err(db(path, T::WHAT, "update"))?;
    Ok(())
}

/// Whether a row was deleted.
fn remove<T: Row>(conn: &Connection, path: &str, key: &[&str]) -> StorageResult<bool> {
    let sql = format!("DELETE FROM {} WHERE {}", T::TABLE, key_filter::<T>());
    let deleted = conn
        .prepare_cached(&sql)
        .and_then(|mut stmt| stmt.execute(params_from_iter(key)))
        .map_err(db(path, T::WHAT, "delete"))?;
    Ok(deleted > 0)
}

fn time_values<T: Row>(value: &T) -> impl Iterator<Item = Value> {
    value
        .times()
        .into_iter()
        .map(|t| Value::Integer(unix_nanos(t)))
}

/// Nanoseconds since the Unix epoch, saturating at the ends of `i64` (years 1677
/// and 2262) so ordering is preserved for any instant a caller can produce.
pub(crate) fn unix_nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos())
            .map(|n| -n)
            .unwrap_or(i64::MIN),
    }
}

pub(super) fn encode<T: Row>(value: &T) -> StorageResult<String> {
    serde_json::to_string(value)
        .map_err(|e| StorageError::Backend(format!("cannot encode {}: {e}", T::WHAT)))
}

pub(super) fn decode<T: Row>(json: &str) -> StorageResult<T> {
    serde_json::from_str(json)
        .map_err(|e| StorageError::Backend(format!("corrupt {} row: {e}", T::WHAT)))
}

/// Maps a SQLite error to a storage error naming the database, the entity and the
/// operation. Failures of the file or its file system (full, read-only, I/O,
/// permissions, a lock held beyond the busy timeout) are
/// [`StorageError::Unavailable`], classified by SQLite's result code: they are the
/// operator's to fix and clear by themselves, so clients get 503, not 500.
fn db<'a>(
    path: &'a str,
    what: &'static str,
    op: &'static str,
) -> impl Fn(rusqlite::Error) -> StorageError + 'a {
    move |e| {
        let cause = match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => Some("SQLITE_FULL (the disk is full)"),
            Some(ErrorCode::ReadOnly) => Some("SQLITE_READONLY (the database is read-only)"),
            Some(ErrorCode::SystemIoFailure) => Some("SQLITE_IOERR (disk I/O error)"),
            Some(ErrorCode::CannotOpen) => Some("SQLITE_CANTOPEN (cannot open a database file)"),
            Some(ErrorCode::PermissionDenied) => Some("SQLITE_PERM (permission denied)"),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                Some("SQLITE_BUSY (locked by another connection beyond the busy timeout)")
            }
            _ => None,
        };
        match cause {
            Some(cause) => StorageError::Unavailable(format!(
                "SQLite database {path}: {op} {what}: {cause}: {e}"
            )),
            None => StorageError::Backend(format!("SQLite database {path}: {op} {what}: {e}")),
        }
    }
}

impl Storage for SqliteStorage {
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
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db(&self.path, "auth code", "begin issuing"))?;
        if !remove::<AuthRequest>(&tx, &self.path, &[request_id])? {
            return Err(StorageError::NotFound);
        }
        insert(&tx, &self.path, code)?;
        tx.commit()
            .map_err(db(&self.path, "auth code", "commit issuing"))
    }

    // Codes and the tombstones of redeemed ones share `auth_code` (migration 7):
    // a code is a row with `redeemed` = 0, its tombstone the same row with 1.
    fn create_auth_code(&self, code: &AuthCode) -> StorageResult<()> {
        self.create(code)
    }
    fn get_auth_code(&self, id: &str) -> StorageResult<AuthCode> {
        let json = self.code_row(id, false)?;
        decode(&json.ok_or(StorageError::NotFound)?)
    }
    fn delete_auth_code(&self, id: &str) -> StorageResult<()> {
        let deleted = self
            .lock()
            .prepare_cached("DELETE FROM auth_code WHERE id = ?1 AND redeemed = 0")
            .and_then(|mut stmt| stmt.execute([id]))
            .map_err(db(&self.path, "auth code", "delete"))?;
        if deleted > 0 {
            Ok(())
        } else {
            Err(StorageError::NotFound)
        }
    }

    fn commit_grant(&self, grant: GrantWrite<'_>) -> StorageResult<()> {
        let what = "token grant";
        let redeemed = grant
            .redeem
            .map(|redeemed| Ok::<_, StorageError>((redeemed, encode(redeemed)?)))
            .transpose()?;
        let token = grant
            .refresh
            .as_ref()
            .map(|refresh| encode(refresh.token))
            .transpose()?;
        let mut conn = self.lock();
        // Dropping `tx` before the commit (any error below) rolls everything back.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db(&self.path, what, "begin"))?;
        if let Some((redeemed, data)) = redeemed {
            // The tombstone keeps the code's expiry (see `RedeemedCode::expiry`).
            let spent = tx
                .prepare_cached(
                    "UPDATE auth_code SET redeemed = 1, data = ?1 WHERE id = ?2 AND redeemed = 0",
                )
                .and_then(|mut stmt| stmt.execute(rusqlite::params![data, redeemed.id]))
                .map_err(db(&self.path, "auth code", "redeem"))?;
            if spent == 0 {
                return Err(StorageError::NotFound);
            }
        }
        if let (Some(refresh), Some(data)) = (grant.refresh, token) {
            let token = refresh.token;
            insert_encoded(&tx, &self.path, token, data)?;
            let key = [token.claims.user_id.as_str(), token.connector_id.as_str()];
            let stored = select::<OfflineSession>(&tx, &self.path, &key)?;
            let exists = stored.is_some();
            let mut session = stored.unwrap_or_else(|| OfflineSession::empty(key[0], key[1]));
            let pruned = (refresh.link)(&mut session);
            for id in &pruned {
                remove::<RefreshToken>(&tx, &self.path, &[id])?;
            }
            if exists {
                overwrite(&tx, &self.path, &session)?;
            } else {
                insert(&tx, &self.path, &session)?;
            }
        }
        tx.commit().map_err(db(&self.path, what, "commit"))
    }

    fn commit_login(&self, login: LoginWrite<'_>) -> StorageResult<Option<BrowserSession>> {
        login.check_replacement()?;
        let what = "login";
        let id = login.request.id.as_str();
        let mut conn = self.lock();
        // Dropping `tx` before the commit (any error below) rolls everything back.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db(&self.path, what, "begin"))?;
        match select::<AuthRequest>(&tx, &self.path, &[id])? {
            None => return Err(StorageError::NotFound),
            Some(stored) if &stored != login.request => {
                return Err(StorageError::Rejected("auth request changed".into()));
            }
            Some(_) => {}
        }
        match login.next {
            RequestNext::Replace(request) => overwrite(&tx, &self.path, request)?,
            RequestNext::Exchange(code) => {
                remove::<AuthRequest>(&tx, &self.path, &[id])?;
                insert(&tx, &self.path, code)?;
            }
            RequestNext::Delete => {
                remove::<AuthRequest>(&tx, &self.path, &[id])?;
            }
        }
        let browser_session = match login.browser_session {
            Some(BrowserSessionWrite::Create(session)) => {
                insert(&tx, &self.path, session)?;
                Some(session.clone())
            }
            Some(BrowserSessionWrite::Update { id, updater }) => {
                let current = select::<BrowserSession>(&tx, &self.path, &[id])?
                    .ok_or(StorageError::NotFound)?;
                let updated = updater(current)?;
                overwrite(&tx, &self.path, &updated)?;
                Some(updated)
            }
            None => None,
        };
        if let Some(edit) = login.offline_session {
            let key = [edit.user_id, edit.connector_id];
            match select::<OfflineSession>(&tx, &self.path, &key)? {
                Some(mut session) => {
                    (edit.edit)(&mut session);
                    overwrite(&tx, &self.path, &session)?;
                }
                None => {
                    let mut session = OfflineSession::empty(key[0], key[1]);
                    (edit.edit)(&mut session);
                    insert(&tx, &self.path, &session)?;
                }
            }
        }
        tx.commit().map_err(db(&self.path, what, "commit"))?;
        Ok(browser_session)
    }

    fn get_redeemed_code(&self, id: &str) -> StorageResult<RedeemedCode> {
        let json = self.code_row(id, true)?;
        decode(&json.ok_or(StorageError::NotFound)?)
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
        let conn = self.lock();
        read_keys(&conn, &self.path)
    }
    fn update_keys(&self, updater: KeysUpdater<'_>) -> StorageResult<Keys> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db(&self.path, "signing keys", "begin update"))?;
        let current = read_keys(&tx, &self.path)?;
        let updated = updater(current)?;
        let data = serde_json::to_string(&updated)
            .map_err(|e| StorageError::Backend(format!("cannot encode signing keys: {e}")))?;
        tx.execute(
            "INSERT INTO signing_keys (id, data) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            [data],
        )
        .map_err(db(&self.path, "signing keys", "update"))?;
        tx.commit()
            .map_err(db(&self.path, "signing keys", "commit update"))?;
        Ok(updated)
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
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db(
                &self.path,
                "expired objects",
                "begin garbage collection of",
            ))?;
        let purge = |sql: &str| -> StorageResult<u64> {
            tx.prepare_cached(sql)
                .and_then(|mut stmt| stmt.execute([now]))
                .map(|n| n as u64)
                .map_err(db(&self.path, "expired objects", "garbage-collect"))
        };
        let counts = GcCounts {
            auth_requests: purge("DELETE FROM auth_request WHERE expiry < ?1")?,
            // Tombstones of redeemed codes included.
            auth_codes: purge("DELETE FROM auth_code WHERE expiry < ?1")?,
            device_requests: purge("DELETE FROM device_request WHERE expiry < ?1")?,
            device_tokens: purge("DELETE FROM device_token WHERE expiry < ?1")?,
            revoked_access_tokens: purge("DELETE FROM revoked_access_tokens WHERE expiry < ?1")?,
        };
        tx.commit().map_err(db(
            &self.path,
            "expired objects",
            "commit garbage collection of",
        ))?;
        Ok(counts)
    }
}

fn read_keys(conn: &Connection, path: &str) -> StorageResult<Option<Keys>> {
    let data: Option<String> = conn
        .query_row("SELECT data FROM signing_keys WHERE id = 1", [], |row| {
            row.get(0)
        })
        .optional()
        .map_err(db(path, "signing keys", "get"))?;
    data.map(|json| {
        serde_json::from_str(&json)
            .map_err(|e| StorageError::Backend(format!("corrupt signing keys row: {e}")))
    })
    .transpose()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::StorageSettings;
    use crate::storage::conformance::{self, fixtures};

    fn versions(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn
            .prepare("SELECT version FROM schema_migrations ORDER BY version")
            .unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn migrations_apply_once_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxidex.db");
        drop(SqliteStorage::open(&path).unwrap());

        let mut conn = Connection::open(&path).unwrap();
        let all: Vec<i64> = (1..=MIGRATIONS.len() as i64).collect();
        assert_eq!(versions(&conn), all);
        assert_eq!(
            migrate(&mut conn, MIGRATIONS).unwrap(),
            0,
            "re-open applied"
        );

        // A later build with one more migration applies only that one.
        let mut newer: Vec<&str> = MIGRATIONS.to_vec();
        newer.push("CREATE TABLE added_later (x INTEGER) STRICT;");
        assert_eq!(migrate(&mut conn, &newer).unwrap(), 1);
        assert_eq!(migrate(&mut conn, &newer).unwrap(), 0);
        let all: Vec<i64> = (1..=newer.len() as i64).collect();
        assert_eq!(versions(&conn), all);
        conn.execute("INSERT INTO added_later (x) VALUES (1)", [])
            .unwrap();
    }

    #[test]
    fn failed_migration_leaves_the_schema_untouched() {
        let mut conn = Connection::open_in_memory().unwrap();
        let broken = [MIGRATIONS[0], "CREATE TABLE ok (x INTEGER); NOT SQL;"];
        let err = migrate(&mut conn, &broken).unwrap_err();
        assert!(
            matches!(&err, StorageError::Backend(m) if m.contains("version 2")),
            "{err}"
        );
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name IN ('auth_request', 'ok')",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0, "partial migration was committed");
    }

    #[test]
    fn database_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxidex.db");
        drop(SqliteStorage::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)",
                [],
            )
            .unwrap();

        let Err(StorageError::Backend(message)) = SqliteStorage::open(&path) else {
            panic!("a database at schema version 99 was accepted");
        };
        assert!(message.contains("version 99"), "{message}");
        assert!(message.contains("newer"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    /// Commits past the checkpoint threshold are copied into the database by the
    /// checkpointer thread, so the WAL starts over instead of growing until a
    /// commit has to checkpoint it inline; dropping the handle stops the thread
    /// and closes both connections (SQLite then removes the WAL).
    #[test]
    fn the_checkpointer_keeps_the_wal_short_and_stops_with_the_handle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxidex.db");
        let wal = dir.path().join("oxidex.db-wal");
        let s = SqliteStorage::open(&path).unwrap();
        let mut token = fixtures::refresh_token("rt");
        // ~6 KB of connector data: each commit writes three or more pages.
        token.connector_data = Some(vec![7; 6000]);
        let commits = 4000;
        for i in 0..commits {
            token.id = format!("rt-{i}");
            s.create_refresh_token(&token).unwrap();
        }
        // Without checkpoints the WAL would hold 3 × 4,000 frames, past the
        // limit at which commits checkpoint themselves.
        assert!(3 * commits > WAL_LIMIT_FRAMES as usize);
        let frame = 4096 + 24;
        let frames = std::fs::metadata(&wal).unwrap().len() as usize / frame;
        assert!(
            frames < WAL_LIMIT_FRAMES as usize / 2,
            "the WAL grew to {frames} frames"
        );
        assert_eq!(s.get_refresh_token("rt-0").unwrap().id, "rt-0");
        drop(s);
        assert!(!wal.exists(), "a connection stayed open after the drop");
        let reopened = SqliteStorage::open(&path).unwrap();
        assert_eq!(reopened.list_refresh_tokens().unwrap().len(), commits);
    }

    /// Migration 7 moves the tombstones of redeemed codes into the codes' table:
    /// codes and tombstones of a version-6 database read back as before.
    #[test]
    fn tombstones_and_codes_survive_the_migration_to_one_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxidex.db");
        let t = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let code = fixtures::auth_code("live-code", t);
        let tombstone = RedeemedCode {
            id: "spent-code".to_owned(),
            client_id: "argocd".to_owned(),
            refresh_token_id: Some("rt-1".to_owned()),
            user_id: "carol".to_owned(),
            connector_id: "forgejo".to_owned(),
            expiry: t,
        };
        {
            let mut conn = Connection::open(&path).unwrap();
            assert_eq!(migrate(&mut conn, &MIGRATIONS[..6]).unwrap(), 6);
            insert(&conn, "test", &code).unwrap();
            insert(&conn, "test", &tombstone).unwrap();
        }
        let s = SqliteStorage::open(&path).unwrap();
        assert_eq!(s.get_auth_code("live-code").unwrap(), code);
        assert_eq!(s.get_redeemed_code("spent-code").unwrap(), tombstone);
        assert_eq!(s.get_auth_code("spent-code"), Err(StorageError::NotFound));
        assert_eq!(
            s.get_redeemed_code("live-code"),
            Err(StorageError::NotFound)
        );
        assert_eq!(
            s.garbage_collect(t + Duration::from_secs(1))
                .unwrap()
                .auth_codes,
            2
        );
    }

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxidex.db");
        let token = fixtures::refresh_token("rt");
        let keys = fixtures::keys("kid-a", Some("kid-b"), &["kid-old"]);
        {
            let s = SqliteStorage::open(&path).unwrap();
            s.create_refresh_token(&token).unwrap();
            s.update_keys(&mut |_| Ok(keys.clone())).unwrap();
        }
        let s = SqliteStorage::open(&path).unwrap();
        assert_eq!(s.get_refresh_token("rt").unwrap(), token);
        assert_eq!(s.get_keys().unwrap(), Some(keys));
    }

    #[test]
    fn file_database_uses_wal_normal_sync_and_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStorage::open(&dir.path().join("oxidex.db")).unwrap();
        let conn = s.lock();
        let pragma = |name: &str| -> String {
            conn.query_row(&format!("PRAGMA {name}"), [], |row| {
                row.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| format!("{v:?}"))
            .unwrap()
        };
        assert_eq!(pragma("journal_mode"), r#"Text("wal")"#);
        assert_eq!(pragma("synchronous"), "Integer(1)", "NORMAL is 1");
        assert_eq!(pragma("foreign_keys"), "Integer(1)");
        assert_eq!(pragma("busy_timeout"), "Integer(5000)");
    }

    #[cfg(unix)]
    #[test]
    fn new_database_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxidex.db");
        let s = SqliteStorage::open(&path).unwrap();
        s.create_auth_code(&fixtures::auth_code("c", fixtures::instant(1)))
            .unwrap();
        for file in ["oxidex.db", "oxidex.db-wal"] {
            let mode = std::fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{file} is accessible to others: {mode:o}");
        }
    }

    /// Two handles on one file stand for two processes: each has its own connection,
    /// so only SQLite's file locking keeps their read-modify-writes apart.
    #[test]
    fn parallel_updates_through_two_handles_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxidex.db");
        let a: SharedStorage = Arc::new(SqliteStorage::open(&path).unwrap());
        let b: SharedStorage = Arc::new(SqliteStorage::open(&path).unwrap());
        conformance::parallel_increments(&[a, b]);
    }

    /// Key rotation is a compare-and-swap across replicas: the second handle's
    /// updater must see what the first one wrote.
    #[test]
    fn keys_update_sees_other_handles_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxidex.db");
        let a = SqliteStorage::open(&path).unwrap();
        let b = SqliteStorage::open(&path).unwrap();
        let first = fixtures::keys("kid-a", Some("kid-b"), &[]);
        a.update_keys(&mut |current| {
            assert_eq!(current, None);
            Ok(first.clone())
        })
        .unwrap();
        let mut seen = None;
        b.update_keys(&mut |current| {
            seen = current.clone();
            Ok(fixtures::keys("kid-b", Some("kid-c"), &["kid-a"]))
        })
        .unwrap();
        assert_eq!(seen, Some(first));
        assert_eq!(
            a.get_keys().unwrap().unwrap().signing_key.kid,
            "kid-b",
            "first handle does not see the rotation"
        );
    }

    #[test]
    fn open_from_settings_creates_the_parent_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state/oxidex/oxidex.db");
        let storage =
            crate::storage::open(&StorageSettings::Sqlite3 { file: file.clone() }).unwrap();
        storage
            .create_refresh_token(&fixtures::refresh_token("rt"))
            .unwrap();
        drop(storage);
        assert!(file.is_file());
        let reopened = crate::storage::open(&StorageSettings::Sqlite3 { file }).unwrap();
        assert!(reopened.get_refresh_token("rt").is_ok());
    }

    #[test]
    fn open_from_settings_names_the_path_it_cannot_open() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"").unwrap();
        let file = blocker.join("oxidex.db");
        let Err(StorageError::Backend(message)) =
            crate::storage::open(&StorageSettings::Sqlite3 { file: file.clone() })
        else {
            panic!("opening a database below a regular file succeeded");
        };
        assert!(message.contains(&file.display().to_string()), "{message}");

        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, vec![0x42; 8192]).unwrap();
        let Err(StorageError::Backend(message)) = crate::storage::open(&StorageSettings::Sqlite3 {
            file: garbage.clone(),
        }) else {
            panic!("a file that is not a database was accepted");
        };
        assert!(
            message.contains(&garbage.display().to_string()),
            "{message}"
        );
    }

    #[test]
    fn open_from_settings_supports_memory_backends() {
        for settings in [
            StorageSettings::Memory,
            StorageSettings::Sqlite3 {
                file: ":memory:".into(),
            },
        ] {
            let storage = crate::storage::open(&settings).unwrap();
            storage
                .create_auth_code(&fixtures::auth_code("c", fixtures::instant(1)))
                .unwrap();
            assert!(storage.get_auth_code("c").is_ok(), "{settings:?}");
        }
        assert!(
            !std::path::Path::new(":memory:").exists(),
            "created a file named :memory:"
        );
    }

    #[test]
    fn panicking_updater_rolls_back_and_leaves_the_handle_usable() {
        let s = SqliteStorage::open_in_memory().unwrap();
        let token = fixtures::refresh_token("rt");
        s.create_refresh_token(&token).unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = s.update_refresh_token("rt", &mut |_| panic!("updater bug"));
        }));
        assert!(outcome.is_err());
        assert_eq!(s.get_refresh_token("rt").unwrap(), token);
        s.update_refresh_token("rt", &mut |mut t| {
            t.token = "after".to_owned();
            Ok(t)
        })
        .unwrap();
        assert_eq!(s.get_refresh_token("rt").unwrap().token, "after");
    }

    /// A full disk and a read-only database are `Unavailable` (503 upstream),
    /// named by path and SQLite cause, and nothing is half-written; once the cause
    /// is gone the same handle writes again.
    #[test]
    fn full_or_read_only_database_is_unavailable_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oxidex.db");
        let s = SqliteStorage::open(&path).unwrap();
        let fill = |s: &SqliteStorage, from: usize| -> StorageError {
            for i in from..from + 10_000 {
                let mut token = fixtures::refresh_token(&format!("rt-{i}"));
                token.token = "x".repeat(2_000);
                if let Err(err) = s.create_refresh_token(&token) {
                    return err;
                }
            }
            panic!("the database never filled up");
        };

        // Disk full: SQLite's page limit answers SQLITE_FULL as a full disk does.
        let pages: i64 = s
            .lock()
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        s.lock()
            .pragma_update(None, "max_page_count", pages + 2)
            .unwrap();
        let err = fill(&s, 0);
        let StorageError::Unavailable(message) = &err else {
            panic!("disk full is not Unavailable: {err:?}");
        };
        assert!(message.contains("SQLITE_FULL"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        let stored = s.list_refresh_tokens().unwrap().len();
        s.lock()
            .pragma_update(None, "max_page_count", 1_000_000)
            .unwrap();
        s.create_refresh_token(&fixtures::refresh_token("after-full"))
            .unwrap();
        assert_eq!(s.list_refresh_tokens().unwrap().len(), stored + 1);

        // Read-only: every kind of write is Unavailable with SQLITE_READONLY.
        s.lock().pragma_update(None, "query_only", true).unwrap();
        let errors = [
            s.create_refresh_token(&fixtures::refresh_token("ro"))
                .unwrap_err(),
            s.update_refresh_token("after-full", &mut Ok).unwrap_err(),
            s.delete_refresh_token("after-full").unwrap_err(),
            s.garbage_collect(fixtures::instant(1)).unwrap_err(),
        ];
        for err in errors {
            let StorageError::Unavailable(message) = &err else {
                panic!("read-only write is not Unavailable: {err:?}");
            };
            assert!(message.contains("SQLITE_READONLY"), "{message}");
        }
        // Reads keep working.
        assert!(s.get_refresh_token("after-full").is_ok());
        s.lock().pragma_update(None, "query_only", false).unwrap();
        s.delete_refresh_token("after-full").unwrap();

        let integrity: String = s
            .lock()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
    }

    #[test]
    fn expiry_columns_are_nanoseconds_since_the_epoch() {
        assert_eq!(unix_nanos(UNIX_EPOCH), 0);
        assert_eq!(
            unix_nanos(UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789)),
            1_700_000_000_123_456_789
        );
        assert_eq!(unix_nanos(UNIX_EPOCH - Duration::from_nanos(5)), -5);
        assert_eq!(
            unix_nanos(UNIX_EPOCH + Duration::from_secs(400 * 365 * 24 * 3600)),
            i64::MAX
        );
    }
}
