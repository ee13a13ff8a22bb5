//! [`SqliteMetaStore`]: upload records in one SQLite file.
//!
//! rusqlite rather than sqlx: SQLite is a synchronous library, and rusqlite is a thin,
//! synchronous binding to it that bundles a known SQLite version, needs no compile-time
//! query checking (so no database at build time), and sets every pragma explicitly on the
//! one connection it opens. Calls go through tokio's blocking pool, which is all the
//! asynchrony a single local file needs.
//!
//! # Schema
//!
//! One table, `uploads`. The whole [`Upload`] is kept as JSON in `record`, which is the
//! source of truth; `key`, `state`, `dialect` and `updated_at` are copies of its fields kept
//! as columns so that lookups by key (`UNIQUE`) and the sweeps for stale and unfinished
//! uploads (index on `(state, updated_at)`) do not have to parse JSON. New fields of the
//! record therefore need no migration as long as serde can default them; the schema
//! version (`PRAGMA user_version`) moves only when the columns or indexes change.
//!
//! A tenant's files, newest first (`list_owned`), come from an index on `(owner,
//! created_at, id)`, `created_at` being one more copy of the record. Schema 5 indexed the
//! expression `json_extract(record, '$.created_at')` instead; since every update rewrites
//! `record`, SQLite then parsed the JSON twice and rewrote an index page on every commit,
//! a 256 KiB tus PATCH included. A copied column that never changes costs nothing after
//! the insert.
//!
//! An update names in its `SET` only what a write usually changes (`record`,
//! `updated_at`, `version`) when the record kept in memory agrees with the new one on the
//! other columns: SQLite rewrites the entries of every index on a column an `UPDATE` sets,
//! changed or not, and each such index page is one more page in the write-ahead log.
//!
//! # Records kept in memory
//!
//! The database has one writer, this process: [`SqliteMetaStore::open`] takes an exclusive
//! lock on `<database>.lock` for as long as the store lives, so a second ferry server (or a
//! second store in this one) cannot open the same file. Every record this store writes or
//! reads is therefore also kept in memory (the last [`CACHE_GENERATION`] to 2 ×
//! [`CACHE_GENERATION`] ids used), and [`MetaStore::get`] of a kept id answers on the
//! caller's thread, without a blocking-pool round trip (two of the four a 256 KiB tus PATCH
//! used to make). The copy is changed under the connection's mutex, in the same critical
//! section as the statement that changed the row, so it is never older than the row once a
//! write has returned. Other processes may still read the file (an operator's `sqlite3`
//! shell, a backup); one that writes to it while ferry runs is not supported (ferry would
//! not see the change until restarted).

use async_trait::async_trait;
use ferry_core::crash;
use ferry_core::store::{MetaError, MetaStore, Usage};
use ferry_core::upload::{Timestamp, Upload, UploadId, UploadState};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Schema version this code writes and understands; stored in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 6;

/// Migrations in order: entry `n` takes the schema from version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 → 1: the initial schema.
    "CREATE TABLE uploads (
        id         TEXT PRIMARY KEY NOT NULL,
        key        TEXT UNIQUE,
        state      TEXT NOT NULL,
        dialect    TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        record     TEXT NOT NULL
    );
    CREATE INDEX uploads_state_updated_at ON uploads (state, updated_at);",
    // 1 → 2: tenants. `owner` and `size` (declared length, else held prefix) are copies of
    // the record, for the per-tenant usage sums; existing rows have no owner.
    "ALTER TABLE uploads ADD COLUMN owner TEXT;
    ALTER TABLE uploads ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
    UPDATE uploads SET size = COALESCE(json_extract(record, '$.length'), 0);
    CREATE INDEX uploads_owner_state ON uploads (owner, state);",
    // 2 → 3: finished tus concatenations used to carry a digest of their parts' digests,
    // which no client can check against the content. It is dropped (such files get an
    // ETag of their id); files assembled from now on carry a digest of their bytes.
    "UPDATE uploads SET record = json_remove(record, '$.content_digest')
     WHERE state = 'complete' AND json_extract(record, '$.concat.final') IS NOT NULL;",
    // 3 → 4: the record's version, for compare-and-set updates (`MetaStore::update`).
    "ALTER TABLE uploads ADD COLUMN version INTEGER NOT NULL DEFAULT 0;",
    // 4 → 5: an owner's uploads newest first, page by page (`MetaStore::list_owned`).
    "CREATE INDEX IF NOT EXISTS uploads_owner_created
        ON uploads (owner, json_extract(record, '$.created_at'), id);",
    // 5 → 6: the creation time as a column of its own (see the module docs), so that an
    // update, which rewrites `record`, no longer has an index on it to keep up.
    "ALTER TABLE uploads ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
    UPDATE uploads SET created_at = COALESCE(json_extract(record, '$.created_at'), 0);
    DROP INDEX uploads_owner_created;
    CREATE INDEX uploads_owner_created_at ON uploads (owner, created_at, id);",
];

/// How long a statement waits for a lock held by another connection (an operator's
/// `sqlite3` shell, a backup) before giving up with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Ids whose records one generation of the in-memory copy holds (see the module docs): at
/// most twice as many are kept. A record is a few hundred bytes to a few KiB, so this is at
/// most a few MiB, and it covers every upload a busy node is receiving at once.
pub const CACHE_GENERATION: usize = 1024;

/// Metadata store on SQLite. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct SqliteMetaStore {
    /// One connection: SQLite serialises writers anyway, and a single connection keeps
    /// every read consistent with the last write without any pool to tune.
    conn: Arc<Mutex<Connection>>,
    /// Records as stored, changed only while `conn` is locked (see the module docs).
    cache: Arc<Mutex<Cache>>,
    hits: Arc<AtomicU64>,
    misses: Arc<AtomicU64>,
    /// The exclusive lock on `<database>.lock`, held while any clone lives.
    _lock: Arc<std::fs::File>,
}

/// The records of recently used ids in two generations: a lookup that finds an id in the
/// older one moves it to the newer; when the newer fills up, the older is dropped and the
/// newer takes its place. A bounded map with no per-entry bookkeeping.
#[derive(Default)]
struct Cache {
    current: HashMap<UploadId, Upload>,
    previous: HashMap<UploadId, Upload>,
}

impl Cache {
    fn get(&mut self, id: &UploadId) -> Option<Upload> {
        if let Some(u) = self.current.get(id) {
            return Some(u.clone());
        }
        let u = self.previous.remove(id)?;
        self.put(u.clone());
        Some(u)
    }

    /// The kept record of `id`, without moving it to the newer generation.
    fn peek(&self, id: &UploadId) -> Option<&Upload> {
        self.current.get(id).or_else(|| self.previous.get(id))
    }

    fn put(&mut self, u: Upload) {
        if self.current.len() >= CACHE_GENERATION && !self.current.contains_key(&u.id) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.previous.remove(&u.id);
        self.current.insert(u.id.clone(), u);
    }

    fn remove(&mut self, id: &UploadId) {
        self.current.remove(id);
        self.previous.remove(id);
    }
}

impl SqliteMetaStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    ///
    /// This blocks; call it at start-up, not from a busy runtime thread.
    ///
    /// Refuses a database another store holds open (in this process or another): the
    /// records this store keeps in memory are right only while it is the file's one writer.
    pub fn open(path: &Path) -> Result<Self, MetaError> {
        let lock = lock_database(path)?;
        let mut conn = Connection::open(path).map_err(backend)?;
        configure(&conn)?;
        migrate(&mut conn)?;
        Ok(SqliteMetaStore {
            conn: Arc::new(Mutex::new(conn)),
            cache: Arc::default(),
            hits: Arc::default(),
            misses: Arc::default(),
            _lock: Arc::new(lock),
        })
    }

    /// Runs `f` with the connection and the in-memory records on the blocking pool; a
    /// change to the records made in `f` is in the same critical section as the statement
    /// (the connection's). `f` locks the records only for as long as it reads or changes
    /// them, never across a statement: [`MetaStore::get`] locks them on a runtime thread,
    /// which must not wait for a commit's fsync.
    async fn with_cache<T, F>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Mutex<Cache>) -> Result<T, MetaError> + Send + 'static,
    {
        let cache = Arc::clone(&self.cache);
        self.with_conn(move |conn| f(conn, &cache)).await
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, MetaError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || f(&mut lock(&conn)))
            .await
            .map_err(|e| MetaError::Backend(format!("metadata task failed: {e}")))?
    }
}

/// Locks the connection (or the records), recovering from a panic in an earlier holder: a
/// statement or transaction interrupted by a panic is finalised or rolled back when its
/// guard drops, so the connection itself is still in a usable state; the records are changed
/// only after their statement succeeded.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes the exclusive lock on `<path>.lock` (created if needed), released when the file
/// closes, however the process ends. A lock file beside the database rather than a lock on
/// the database itself: SQLite locks byte ranges of its files with `fcntl`, which some file
/// systems (NFS) implement together with `flock`.
fn lock_database(path: &Path) -> Result<std::fs::File, MetaError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = std::path::PathBuf::from(name);
    ferry_core::lock::lock_file(&lock_path)
        .map_err(|e| MetaError::Backend(format!("cannot lock {}: {e}", lock_path.display())))?
        .ok_or_else(|| {
            MetaError::Backend(format!(
                "the metadata database {} is in use by another ferry server; stop it first, \
                 or give this one its own --database",
                path.display()
            ))
        })
}

/// Sets the per-connection and per-file pragmas.
fn configure(conn: &Connection) -> Result<(), MetaError> {
    // WAL lets readers (an operator's shell, a backup) run while we write, and makes a
    // commit a single append to the log instead of a rewrite of the pages.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(backend)?;
    if !mode.eq_ignore_ascii_case("wal") {
        // In-memory databases answer "memory"; anything else on a file (a read-only
        // medium, a VFS without shared memory) still works, only with less concurrency.
        tracing::warn!(journal_mode = %mode, "SQLite did not switch to WAL");
    }
    // FULL, not NORMAL: in WAL mode NORMAL fsyncs the log only at checkpoints, so the last
    // transactions before a power cut can vanish even though COMMIT returned. The engine
    // acknowledges bytes to clients right after committing their held ranges, and the
    // MetaStore contract promises a write is durable when it returns, so every commit
    // must fsync the log. The cost is one fsync per commit, which is small next to the
    // fdatasync of the bytes the commit records.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(backend)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
    // No foreign keys today, but turning them on now means a later table that references
    // uploads gets its constraints enforced without anyone remembering this pragma.
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(backend)?;
    Ok(())
}

/// Brings the schema to [`SCHEMA_VERSION`], one transaction per step, refusing a database
/// written by a newer version rather than guessing at its layout.
pub fn migrate(conn: &mut Connection) -> Result<(), MetaError> {
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(backend)?;
    if current > SCHEMA_VERSION {
        return Err(MetaError::Backend(format!(
            "the metadata database has schema version {current}, newer than the {SCHEMA_VERSION} this build understands"
        )));
    }
    if current < 0 {
        return Err(MetaError::Backend(format!(
            "the metadata database has an invalid schema version {current}"
        )));
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let to = from as i64 + 1;
        // `user_version` is stored in the database header, which SQLite updates inside the
        // transaction, so a crash never leaves a step applied without its version or
        // the other way round.
        let tx = conn.transaction().map_err(backend)?;
        tx.execute_batch(sql).map_err(backend)?;
        tx.pragma_update(None, "user_version", to)
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
        tracing::info!(from, to, "migrated the metadata schema");
    }
    Ok(())
}

fn backend(e: impl std::fmt::Display) -> MetaError {
    MetaError::Backend(e.to_string())
}

/// Maps a uniqueness failure (duplicate id or key) to [`MetaError::Conflict`].
fn write_error(e: rusqlite::Error) -> MetaError {
    match e.sqlite_error() {
        Some(err)
            if err.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || err.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
        {
            MetaError::Conflict
        }
        _ => backend(e),
    }
}

fn state_name(state: UploadState) -> &'static str {
    match state {
        UploadState::Receiving => "receiving",
        UploadState::Complete => "complete",
    }
}

/// The column values of one record.
struct Row {
    record: String,
    state: &'static str,
    dialect: &'static str,
    owner: Option<String>,
    size: i64,
}

impl Row {
    fn of(upload: &Upload) -> Result<Self, MetaError> {
        Ok(Row {
            record: serde_json::to_string(upload).map_err(|e| {
                MetaError::Backend(format!("cannot encode upload {}: {e}", upload.id))
            })?,
            state: state_name(upload.state),
            dialect: upload.dialect.name(),
            owner: upload.owner.clone(),
            size: size_of(upload),
        })
    }
}

/// Whether a row holding `stored` has the values `new` would give every column but
/// `record`, `updated_at` and `version` (`created_at` never changes).
fn same_columns(new: &Upload, stored: &Upload) -> bool {
    new.key == stored.key
        && new.state == stored.state
        && new.dialect == stored.dialect
        && new.owner == stored.owner
        && size_of(new) == size_of(stored)
}

/// The `size` column: the declared length, else the held prefix.
fn size_of(upload: &Upload) -> i64 {
    i64::try_from(upload.length.unwrap_or_else(|| upload.held.prefix_end())).unwrap_or(i64::MAX)
}

fn decode(json: &str) -> Result<Upload, MetaError> {
    serde_json::from_str(json)
        .map_err(|e| MetaError::Backend(format!("stored upload record is unreadable: {e}")))
}

fn get_where(conn: &Connection, column: &str, value: &str) -> Result<Option<Upload>, MetaError> {
    let sql = format!("SELECT record, version FROM uploads WHERE {column} = ?1");
    let found: Option<(String, i64)> = conn
        .prepare_cached(&sql)
        .and_then(|mut st| {
            st.query_row([value], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(backend)?;
    found
        .map(|(json, version)| {
            let mut u = decode(&json)?;
            u.version = version.max(0) as u64;
            Ok(u)
        })
        .transpose()
}

/// [`get_where`], keeping the record found in memory.
fn get_kept(
    conn: &Connection,
    cache: &Mutex<Cache>,
    column: &str,
    value: &str,
) -> Result<Option<Upload>, MetaError> {
    let found = get_where(conn, column, value)?;
    if let Some(u) = &found {
        lock(cache).put(u.clone());
    }
    Ok(found)
}

/// [`MetaStore::update`] on the connection (locked by the caller).
fn update_row(
    conn: &mut Connection,
    cache: &Mutex<Cache>,
    upload: &Upload,
) -> Result<(), MetaError> {
    let row = Row::of(upload)?;
    let id = upload.id.as_str();
    let version = i64::try_from(upload.version).unwrap_or(i64::MAX);
    // Zero rows changed means the upload was deleted meanwhile, which the contract makes a
    // no-op. A key taken by another upload is a conflict, as on insert.
    let slim = lock(cache)
        .peek(&upload.id)
        .is_some_and(|old| same_columns(upload, old));
    let changed = if slim {
        conn.prepare_cached(
            "UPDATE uploads SET updated_at = ?2, record = ?3, version = version + 1
             WHERE id = ?1 AND version = ?4",
        )
        .and_then(|mut st| st.execute(params![id, upload.updated_at.0, row.record, version]))
    } else {
        conn.prepare_cached(
            "UPDATE uploads
             SET key = ?2, state = ?3, dialect = ?4, updated_at = ?5, record = ?6,
                 owner = ?7, size = ?8, version = version + 1
             WHERE id = ?1 AND version = ?9",
        )
        .and_then(|mut st| {
            st.execute(params![
                id,
                upload.key,
                row.state,
                row.dialect,
                upload.updated_at.0,
                row.record,
                row.owner,
                row.size,
                version
            ])
        })
    }
    .map_err(write_error)?;
    if changed == 0 {
        let exists = conn
            .prepare_cached("SELECT 1 FROM uploads WHERE id = ?1")
            .and_then(|mut st| st.exists([id]))
            .map_err(backend)?;
        if exists {
            return Err(MetaError::Stale);
        }
        lock(cache).remove(&upload.id);
    } else {
        let mut kept = upload.clone();
        kept.version = upload.version.saturating_add(1);
        lock(cache).put(kept);
    }
    crash::event("meta.update", || id.to_owned());
    Ok(())
}

fn ids(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<UploadId>, MetaError> {
    let mut st = conn.prepare_cached(sql).map_err(backend)?;
    let rows = st
        .query_map(params, |row| row.get::<_, String>(0))
        .map_err(backend)?;
    rows.map(|r| {
        let s = r.map_err(backend)?;
        UploadId::parse(&s)
            .ok_or_else(|| MetaError::Backend(format!("stored upload id {s:?} is malformed")))
    })
    .collect()
}

#[async_trait]
impl MetaStore for SqliteMetaStore {
    async fn insert(&self, upload: &Upload) -> Result<(), MetaError> {
        let row = Row::of(upload)?;
        let (id, key, updated_at) = (upload.id.clone(), upload.key.clone(), upload.updated_at.0);
        let created_at = upload.created_at.0;
        // As stored: a new row is at version 0.
        let mut kept = upload.clone();
        kept.version = 0;
        self.with_cache(move |conn, cache| {
            conn.prepare_cached(
                "INSERT INTO uploads
                 (id, key, state, dialect, updated_at, record, owner, size, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id.as_str(),
                    key,
                    row.state,
                    row.dialect,
                    updated_at,
                    row.record,
                    row.owner,
                    row.size,
                    created_at
                ])
            })
            .map_err(write_error)?;
            lock(cache).put(kept);
            crash::event("meta.insert", || id.to_string());
            Ok(())
        })
        .await
    }

    async fn get(&self, id: &UploadId) -> Result<Option<Upload>, MetaError> {
        if let Some(u) = lock(&self.cache).get(id) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(u));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let id = id.clone();
        self.with_cache(move |conn, cache| get_kept(conn, cache, "id", id.as_str()))
            .await
    }

    async fn get_by_key(&self, key: &str) -> Result<Option<Upload>, MetaError> {
        let key = key.to_owned();
        self.with_cache(move |conn, cache| get_kept(conn, cache, "key", &key))
            .await
    }

    async fn update(&self, upload: &Upload) -> Result<(), MetaError> {
        let upload = upload.clone();
        self.with_cache(move |conn, cache| update_row(conn, cache, &upload))
            .await
    }

    fn update_here(&self, upload: &Upload) -> Option<Result<(), MetaError>> {
        Some(update_row(&mut lock(&self.conn), &self.cache, upload))
    }

    async fn delete(&self, id: &UploadId) -> Result<(), MetaError> {
        let id = id.clone();
        self.with_cache(move |conn, cache| {
            conn.prepare_cached("DELETE FROM uploads WHERE id = ?1")
                .and_then(|mut st| st.execute([id.as_str()]))
                .map_err(backend)?;
            lock(cache).remove(&id);
            crash::event("meta.delete", || id.to_string());
            Ok(())
        })
        .await
    }

    async fn usage(&self, owner: Option<&str>) -> Result<Usage, MetaError> {
        let owner = owner.map(str::to_owned);
        let receiving = state_name(UploadState::Receiving);
        self.with_conn(move |conn| {
            conn.prepare_cached(
                "SELECT COUNT(*) FILTER (WHERE state = ?2), COALESCE(SUM(size), 0)
                 FROM uploads WHERE owner IS ?1",
            )
            .and_then(|mut st| {
                st.query_row(params![owner, receiving], |row| {
                    Ok(Usage {
                        incomplete: row.get::<_, i64>(0)?.max(0) as u64,
                        stored_bytes: row.get::<_, i64>(1)?.max(0) as u64,
                    })
                })
            })
            .map_err(backend)
        })
        .await
    }

    async fn list_stale(&self, before: Timestamp) -> Result<Vec<UploadId>, MetaError> {
        let receiving = state_name(UploadState::Receiving);
        self.with_conn(move |conn| {
            ids(
                conn,
                "SELECT id FROM uploads WHERE state = ?1 AND updated_at < ?2
                 ORDER BY updated_at, id",
                params![receiving, before.0],
            )
        })
        .await
    }

    async fn list_incomplete(&self) -> Result<Vec<UploadId>, MetaError> {
        let receiving = state_name(UploadState::Receiving);
        self.with_conn(move |conn| {
            ids(
                conn,
                "SELECT id FROM uploads WHERE state = ?1 ORDER BY updated_at, id",
                [receiving],
            )
        })
        .await
    }

    async fn list_owned(
        &self,
        owner: Option<&str>,
        after: Option<(Timestamp, UploadId)>,
        limit: usize,
    ) -> Result<Vec<Upload>, MetaError> {
        let owner = owner.map(str::to_owned);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(move |conn| {
            // `c <= t AND (c < t OR id < i)` rather than the row value `(c, id) < (t, i)`:
            // SQLite seeks the index to the cursor with the first form and scans from the
            // owner's newest entry with the second.
            let sql = if after.is_some() {
                "SELECT record, version FROM uploads WHERE owner IS ?1
                 AND created_at <= ?2 AND (created_at < ?2 OR id < ?3)
                 ORDER BY created_at DESC, id DESC LIMIT ?4"
            } else {
                "SELECT record, version FROM uploads WHERE owner IS ?1
                 ORDER BY created_at DESC, id DESC LIMIT ?4"
            };
            let mut st = conn.prepare_cached(sql).map_err(backend)?;
            let (at, id) = after.map_or((None, None), |(t, id)| (Some(t.0), Some(id)));
            // Unused parameters are bound too (as NULL): the statement names ?1 to ?4.
            let rows = st
                .query_map(
                    params![owner, at, id.as_ref().map(UploadId::as_str), limit],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)),
                )
                .map_err(backend)?;
            rows.map(|r| {
                let (json, version) = r.map_err(backend)?;
                let mut u = decode(&json)?;
                u.version = version.max(0) as u64;
                Ok(u)
            })
            .collect()
        })
        .await
    }

    fn metrics(&self) -> Vec<ferry_core::store::Metric> {
        use ferry_core::store::Metric;
        vec![
            Metric {
                name: "ferry_meta_cache_hits_total",
                help: "Upload records read from the SQLite store's in-memory copy.",
                kind: "counter",
                value: self.hits.load(Ordering::Relaxed) as f64,
            },
            Metric {
                name: "ferry_meta_cache_misses_total",
                help: "Upload records the SQLite store read from the database file.",
                kind: "counter",
                value: self.misses.load(Ordering::Relaxed) as f64,
            },
        ]
    }

    async fn ping(&self) -> Result<(), MetaError> {
        self.with_conn(|conn| {
            // Touches the schema, so a database file that vanished or got corrupted fails
            // here rather than on the next upload.
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
                .map_err(backend)
        })
        .await
    }
}
