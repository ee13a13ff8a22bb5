//! [`PgMetaStore`]: upload records in a PostgreSQL database, shared by several ferry nodes.
//!
//! tokio-postgres rather than sqlx: an async driver without compile-time query checking (so
//! no database at build time) and without the type conversions we do not use, under a small
//! deadpool pool. Statements are prepared once per pooled connection
//! (`prepare_cached`), so a call after the first on a connection is one round trip.
//!
//! Connections are made without TLS (`NoTls`): use this backend on a trusted network or
//! over a local socket for now. A URL asking for `sslmode=require` is refused rather than
//! silently downgraded; TLS to PostgreSQL can come later.
//!
//! # Schema
//!
//! The same layout as the SQLite store: one table, `uploads`, whose `record` holds the
//! whole [`Upload`] as JSON text and is the source of truth; `key`, `state`, `dialect`,
//! `updated_at`, `owner` and `size` are copies of its fields kept as columns for lookups by
//! key (`UNIQUE`), the sweeps (index on `(state, updated_at)`) and the per-owner usage sums
//! (index on `(owner, state)`). `record` is `TEXT`, not `JSONB`: the record is opaque to
//! the database, `JSONB` would refuse a `\u0000` that a client can put in its metadata, and
//! text stores the bytes serde wrote without a parse on every write. `version` counts the
//! updates of a row (0 on insert), for compare-and-set updates across nodes later.
//! `created_at` (schema 4) is the record's creation time, for an owner's uploads newest
//! first (index on `(owner, created_at, id)`). It is a column rather than an index on an
//! expression of the record because `record::json ->> 'created_at'` fails on a record
//! holding `\u0000` anywhere, and an index expression that fails would refuse the write.
//!
//! The schema version lives in the one row of `ferry_schema`. Migrations run in one
//! transaction that first takes a transaction-scoped advisory lock, so nodes starting at
//! the same time apply them once, one after the other; a database written by a newer build
//! is refused without any change. Versions count independently of the SQLite store's.

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use ferry_core::crash;
use ferry_core::store::{MetaError, MetaStore, Usage};
use ferry_core::upload::{Timestamp, Upload, UploadId, UploadState};
use std::error::Error as _;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Config, NoTls};

pub mod coord;

/// Schema version this code writes and understands; stored in `ferry_schema.version`.
pub const SCHEMA_VERSION: i32 = 4;

/// Key of the advisory lock that serialises migrations ("ferry_mi" in ASCII). Advisory
/// locks are per database, so this only ever contends with other ferry nodes on it.
const MIGRATION_LOCK: i64 = 0x6665_7272_795f_6d69;

/// Migrations in order: entry `n` takes the schema from version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 → 1: the initial schema, equivalent to version 3 of the SQLite store, plus the
    // row version for compare-and-set updates.
    "CREATE TABLE uploads (
        id         TEXT PRIMARY KEY,
        key        TEXT UNIQUE,
        state      TEXT NOT NULL,
        dialect    TEXT NOT NULL,
        updated_at BIGINT NOT NULL,
        record     TEXT NOT NULL,
        owner      TEXT,
        size       BIGINT NOT NULL DEFAULT 0,
        version    BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX uploads_state_updated_at ON uploads (state, updated_at);
    CREATE INDEX uploads_owner_state ON uploads (owner, state);",
    // 1 → 2: leases on byte ranges, for nodes sharing the database (`coord`). A lease is
    // one or more rows with the same token; `ferry_take_lease` takes one in a single round
    // trip under the upload's advisory lock: expired rows go, an overlap refuses (NULL).
    "CREATE TABLE ferry_leases (
        token      BIGINT NOT NULL,
        upload_id  TEXT NOT NULL,
        first_byte BIGINT NOT NULL,
        end_byte   BIGINT NOT NULL,
        node       TEXT NOT NULL,
        append     BOOLEAN NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX ferry_leases_upload ON ferry_leases (upload_id);
    CREATE INDEX ferry_leases_token ON ferry_leases (token);
    CREATE SEQUENCE ferry_lease_tokens;
    CREATE FUNCTION ferry_take_lease(p_upload TEXT, p_firsts BIGINT[], p_ends BIGINT[],
                                     p_node TEXT, p_append BOOLEAN, p_ttl_ms INT)
    RETURNS BIGINT LANGUAGE plpgsql AS $$
    DECLARE t BIGINT;
    BEGIN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_upload, 7));
        DELETE FROM ferry_leases
            WHERE upload_id = p_upload AND expires_at < clock_timestamp();
        IF EXISTS (SELECT 1 FROM ferry_leases l, unnest(p_firsts, p_ends) AS r(f, e)
                   WHERE l.upload_id = p_upload AND l.first_byte < r.e AND r.f < l.end_byte)
        THEN
            RETURN NULL;
        END IF;
        t := nextval('ferry_lease_tokens');
        INSERT INTO ferry_leases
            SELECT t, p_upload, r.f, r.e, p_node, p_append,
                   clock_timestamp() + p_ttl_ms * interval '1 millisecond'
            FROM unnest(p_firsts, p_ends) AS r(f, e);
        RETURN t;
    END $$;",
    // 2 → 3: taking a lease also gives back leases this node released since its last take
    // (`p_released`: a release costs no statement of its own) and returns the upload's
    // record as read under the advisory lock, after the lease is in place (the read a write
    // makes after reserving its ranges rides on the same round trip). One row: the token
    // (NULL when an overlapping lease refuses) and the record and version (NULL when there
    // is no such upload).
    // The six-argument version stays for nodes of the previous build still running during
    // a rolling upgrade.
    "CREATE FUNCTION ferry_take_lease(p_upload TEXT, p_firsts BIGINT[], p_ends BIGINT[],
                                     p_node TEXT, p_append BOOLEAN, p_ttl_ms INT,
                                     p_released BIGINT[])
    RETURNS TABLE (o_token BIGINT, o_record TEXT, o_version BIGINT)
    LANGUAGE plpgsql AS $$
    BEGIN
        IF cardinality(p_released) > 0 THEN
            DELETE FROM ferry_leases WHERE token = ANY(p_released);
        END IF;
        PERFORM pg_advisory_xact_lock(hashtextextended(p_upload, 7));
        DELETE FROM ferry_leases
            WHERE upload_id = p_upload AND expires_at < clock_timestamp();
        IF EXISTS (SELECT 1 FROM ferry_leases l, unnest(p_firsts, p_ends) AS r(f, e)
                   WHERE l.upload_id = p_upload AND l.first_byte < r.e AND r.f < l.end_byte)
        THEN
            RETURN NEXT;
            RETURN;
        END IF;
        o_token := nextval('ferry_lease_tokens');
        INSERT INTO ferry_leases
            SELECT o_token, p_upload, r.f, r.e, p_node, p_append,
                   clock_timestamp() + p_ttl_ms * interval '1 millisecond'
            FROM unnest(p_firsts, p_ends) AS r(f, e);
        SELECT u.record, u.version INTO o_record, o_version FROM uploads u WHERE u.id = p_upload;
        RETURN NEXT;
    END $$;",
    // 3 → 4: the creation time as a column, for an owner's uploads newest first
    // (`MetaStore::list_owned`). Existing rows take it from their record: serde writes the
    // field as `"created_at":<digits>`, and a pattern finds it where `->>` would fail on a
    // `\u0000` elsewhere in the record. Nodes of the previous build still running during a
    // rolling upgrade insert without the column; the default gives their rows the time of
    // the insert, which is the time of creation to within the request.
    r#"ALTER TABLE uploads ADD COLUMN created_at BIGINT;
    UPDATE uploads SET created_at =
        COALESCE((regexp_match(record, '"created_at":(-?[0-9]+)'))[1]::BIGINT, 0);
    ALTER TABLE uploads
        ALTER COLUMN created_at SET DEFAULT (extract(epoch FROM now()) * 1000)::BIGINT,
        ALTER COLUMN created_at SET NOT NULL;
    CREATE INDEX uploads_owner_created ON uploads (owner, created_at, id);"#,
];

/// How long opening a TCP connection may take when the URL sets no `connect_timeout`: an
/// unreachable host then fails start-up (or a request) in seconds, not minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const INSERT: &str = "INSERT INTO uploads
    (id, key, state, dialect, updated_at, record, owner, size, version, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
// One round trip that also tells a stale version (the row exists, the update did not
// apply) from a deleted upload (no row): the `EXISTS` reads the snapshot before the update.
const UPDATE: &str = "WITH changed AS (
        UPDATE uploads
        SET key = $2, state = $3, dialect = $4, updated_at = $5, record = $6, owner = $7,
            size = $8, version = version + 1, created_at = $10
        WHERE id = $1 AND version = $9
        RETURNING 1)
    SELECT (SELECT count(*) FROM changed), EXISTS (SELECT 1 FROM uploads WHERE id = $1)";
const DELETE: &str = "DELETE FROM uploads WHERE id = $1";
const GET: &str = "SELECT record, version FROM uploads WHERE id = $1";
const GET_BY_KEY: &str = "SELECT record, version FROM uploads WHERE key = $1";
const LIST_STALE: &str = "SELECT id FROM uploads WHERE state = $1 AND updated_at < $2
    ORDER BY updated_at, id";
const LIST_INCOMPLETE: &str = "SELECT id FROM uploads WHERE state = $1 ORDER BY updated_at, id";
// Two statements rather than `owner IS NOT DISTINCT FROM $1`, which no index serves.
const USAGE_OF: &str = "SELECT COUNT(*) FILTER (WHERE state = $2), COALESCE(SUM(size), 0)::BIGINT
    FROM uploads WHERE owner = $1";
const USAGE_OF_NOBODY: &str =
    "SELECT COUNT(*) FILTER (WHERE state = $1), COALESCE(SUM(size), 0)::BIGINT
    FROM uploads WHERE owner IS NULL";
// An owner's uploads newest first, from the cursor on: four statements (owner or none,
// first page or a later one) so that each is one index range scan of
// `uploads_owner_created`, backwards.
const LIST_OWNED: &str = "SELECT record, version FROM uploads WHERE owner = $1
    ORDER BY created_at DESC, id DESC LIMIT $2";
const LIST_OWNED_AFTER: &str = "SELECT record, version FROM uploads
    WHERE owner = $1 AND (created_at, id) < ($3, $4)
    ORDER BY created_at DESC, id DESC LIMIT $2";
const LIST_NOBODYS: &str = "SELECT record, version FROM uploads WHERE owner IS NULL
    ORDER BY created_at DESC, id DESC LIMIT $1";
const LIST_NOBODYS_AFTER: &str = "SELECT record, version FROM uploads
    WHERE owner IS NULL AND (created_at, id) < ($2, $3)
    ORDER BY created_at DESC, id DESC LIMIT $1";
const PING: &str = "SELECT version FROM ferry_schema";

/// Metadata store on PostgreSQL. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct PgMetaStore {
    pool: Pool,
    target: Arc<Target>,
    /// For connections of their own (the coordinator's `LISTEN`).
    config: Arc<Config>,
}

/// What error messages say about the server: never the password.
struct Target {
    /// `host:port` (or socket path) of each server the URL names.
    at: String,
    user: String,
    dbname: String,
}

impl PgMetaStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/dbname`, or
    /// `postgresql://`) with a pool of at most `pool_size` connections, checks out one
    /// connection (so a wrong password, an unreachable server or a missing database fail
    /// here, with a sentence saying which) and brings the schema up to date.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self, MetaError> {
        let (config, target) = parse_url(url)?;
        if pool_size == 0 {
            return Err(MetaError::Backend(
                "the PostgreSQL pool size must be at least 1".to_owned(),
            ));
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // A closed connection is dropped; no query on checkout, and no `DISCARD
                // ALL`, which would throw away the prepared statements.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| MetaError::Backend(format!("cannot build the PostgreSQL pool: {e}")))?;
        let store = PgMetaStore {
            pool,
            target: Arc::new(target),
            config: Arc::new(config),
        };
        let mut client = store.client().await?;
        migrate(&mut client).await.map_err(|e| match e {
            Migration::Refused(msg) => MetaError::Backend(msg),
            Migration::Db(e) => MetaError::Backend(format!(
                "migrating the metadata schema at {} failed: {}",
                store.target.at,
                chain(&e)
            )),
        })?;
        Ok(store)
    }

    /// Checks out a pooled connection, opening one if needed.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, MetaError> {
        self.pool.get().await.map_err(|e| match e {
            // The server refused us (password, database): a configuration error.
            PoolError::Backend(e) if e.as_db_error().is_some() => {
                MetaError::Backend(connect_error(&self.target, &e))
            }
            // It could not be reached: that may pass.
            PoolError::Backend(e) => MetaError::Unavailable(connect_error(&self.target, &e)),
            other => MetaError::Unavailable(format!(
                "no connection to PostgreSQL at {}: {other}",
                self.target.at
            )),
        })
    }
}

/// Parses the URL and describes its target for error messages.
fn parse_url(url: &str) -> Result<(Config, Target), MetaError> {
    // Only the URL form: the key=value form would parse too, but its errors could quote
    // the string back, password included.
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(MetaError::Backend(
            "the PostgreSQL URL must start with postgres:// or postgresql://".to_owned(),
        ));
    }
    // tokio-postgres' parse errors name the offending option, never a value.
    let mut config: Config = url
        .parse()
        .map_err(|e| MetaError::Backend(format!("the PostgreSQL URL is invalid: {}", chain(&e))))?;
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        return Err(MetaError::Backend(
            "the PostgreSQL URL names no host".to_owned(),
        ));
    }
    if config.get_ssl_mode() == SslMode::Require {
        return Err(MetaError::Backend(
            "the PostgreSQL URL asks for sslmode=require, but this build connects without TLS"
                .to_owned(),
        ));
    }
    // Prefer (the default) would ask the server for TLS first and fall back; say what we do.
    config.ssl_mode(SslMode::Disable);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("ferry");
    }
    let ports = config.get_ports();
    let port = |i: usize| match ports {
        [] => 5432,
        [one] => *one,
        many => many.get(i).copied().unwrap_or(5432),
    };
    let at: Vec<String> = if config.get_hosts().is_empty() {
        config
            .get_hostaddrs()
            .iter()
            .enumerate()
            .map(|(i, ip)| match ip {
                std::net::IpAddr::V6(v6) => format!("[{v6}]:{}", port(i)),
                v4 => format!("{v4}:{}", port(i)),
            })
            .collect()
    } else {
        config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| match host {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]:{}", port(i)),
                Host::Tcp(name) => format!("{name}:{}", port(i)),
                Host::Unix(dir) => format!("{}/.s.PGSQL.{}", dir.display(), port(i)),
            })
            .collect()
    };
    let user = config
        .get_user()
        .map(str::to_owned)
        .unwrap_or_else(|| "(the login name)".to_owned());
    let dbname = config
        .get_dbname()
        .map(str::to_owned)
        .unwrap_or_else(|| user.clone());
    let target = Target {
        at: at.join(", "),
        user,
        dbname,
    };
    Ok((config, target))
}

/// A sentence for a failure to open a connection: which of server, credentials or
/// database is wrong. Built from the server's answer and the socket error, never the URL.
fn connect_error(target: &Target, e: &tokio_postgres::Error) -> String {
    let Target { at, user, dbname } = target;
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        return if *code == SqlState::INVALID_PASSWORD {
            format!("PostgreSQL at {at}: password authentication failed for user {user:?}")
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            format!("PostgreSQL at {at}: database {dbname:?} does not exist")
        } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            format!("PostgreSQL at {at} refused user {user:?}: {}", db.message())
        } else {
            format!(
                "PostgreSQL at {at} refused the connection: {}",
                db.message()
            )
        };
    }
    let mut source = e.source();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            let why = match io.kind() {
                io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                io::ErrorKind::TimedOut => "timed out".to_owned(),
                io::ErrorKind::NotFound => "no such socket".to_owned(),
                io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
                _ => io.to_string(),
            };
            return format!("could not connect to PostgreSQL at {at}: {why}");
        }
        source = err.source();
    }
    let why = chain(e);
    if why.ends_with("password missing") {
        return format!(
            "PostgreSQL at {at} asks for a password for user {user:?}, and the URL has none"
        );
    }
    // A connection closed during the handshake, an authentication method the driver
    // lacks, ...
    format!("could not connect to PostgreSQL at {at} as user {user:?}: {why}")
}

/// `e` and its causes: tokio-postgres' own `Display` names only the kind of failure ("db
/// error", "invalid connection string") and leaves the server's message to the source.
fn chain(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

enum Migration {
    /// Refused on purpose, with the sentence to show.
    Refused(String),
    Db(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for Migration {
    fn from(e: tokio_postgres::Error) -> Self {
        Migration::Db(e)
    }
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction under the migration lock,
/// refusing a database written by a newer version rather than guessing at its layout.
async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), Migration> {
    let tx = client.transaction().await?;
    // Held until commit or rollback: a second node starting now waits here, then finds
    // the schema current.
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
         CREATE TABLE IF NOT EXISTS ferry_schema (version INT NOT NULL);"
    ))
    .await?;
    let rows = tx.query("SELECT version FROM ferry_schema", &[]).await?;
    let current: i32 = match rows.as_slice() {
        [] => 0,
        [row] => row.try_get(0)?,
        more => {
            return Err(Migration::Refused(format!(
                "the metadata database's ferry_schema table has {} rows instead of one",
                more.len()
            )));
        }
    };
    // Returning drops `tx`, which rolls back: nothing changes in a refused database.
    if current > SCHEMA_VERSION {
        return Err(Migration::Refused(format!(
            "the metadata database has schema version {current}, newer than the {SCHEMA_VERSION} this build understands"
        )));
    }
    if current < 0 {
        return Err(Migration::Refused(format!(
            "the metadata database has an invalid schema version {current}"
        )));
    }
    for sql in MIGRATIONS.iter().skip(current as usize) {
        tx.batch_execute(sql).await?;
    }
    if current < SCHEMA_VERSION {
        let sql = if rows.is_empty() {
            "INSERT INTO ferry_schema (version) VALUES ($1)"
        } else {
            "UPDATE ferry_schema SET version = $1"
        };
        tx.execute(sql, &[&SCHEMA_VERSION]).await?;
    }
    tx.commit().await?;
    if current < SCHEMA_VERSION {
        tracing::info!(
            from = current,
            to = SCHEMA_VERSION,
            "migrated the PostgreSQL metadata schema"
        );
    }
    Ok(())
}

pub(crate) fn backend(e: tokio_postgres::Error) -> MetaError {
    let message = format!("metadata database: {}", chain(&e));
    // A connection lost mid-statement, or a server shutting down or starting up.
    let passing = e.is_closed()
        || e.code().is_some_and(|c| {
            *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
                || *c == SqlState::CRASH_SHUTDOWN
        })
        || (e.as_db_error().is_none()
            && e.source()
                .is_some_and(|s| s.downcast_ref::<io::Error>().is_some()));
    if passing {
        MetaError::Unavailable(message)
    } else {
        MetaError::Backend(message)
    }
}

/// Maps a uniqueness failure (duplicate id or key) to [`MetaError::Conflict`].
fn write_error(e: tokio_postgres::Error) -> MetaError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        MetaError::Conflict
    } else {
        backend(e)
    }
}

fn state_name(state: UploadState) -> &'static str {
    match state {
        UploadState::Receiving => "receiving",
        UploadState::Complete => "complete",
    }
}

/// The column values of one record.
struct Row<'a> {
    id: &'a str,
    record: String,
    state: &'static str,
    dialect: &'static str,
    size: i64,
}

impl<'a> Row<'a> {
    fn of(upload: &'a Upload) -> Result<Self, MetaError> {
        Ok(Row {
            id: upload.id.as_str(),
            record: serde_json::to_string(upload).map_err(|e| {
                MetaError::Backend(format!("cannot encode upload {}: {e}", upload.id))
            })?,
            state: state_name(upload.state),
            dialect: upload.dialect.name(),
            size: i64::try_from(upload.length.unwrap_or_else(|| upload.held.prefix_end()))
                .unwrap_or(i64::MAX),
        })
    }
}

impl Row<'_> {
    /// The parameters of INSERT and UPDATE, `$1`..`$10` (`$9`: the version; stored on
    /// insert, expected on update).
    fn params<'a>(
        &'a self,
        upload: &'a Upload,
        version: &'a i64,
    ) -> [&'a (dyn tokio_postgres::types::ToSql + Sync); 10] {
        [
            &self.id,
            &upload.key,
            &self.state,
            &self.dialect,
            &upload.updated_at.0,
            &self.record,
            &upload.owner,
            &self.size,
            version,
            &upload.created_at.0,
        ]
    }
}

pub(crate) fn decode(json: &str) -> Result<Upload, MetaError> {
    serde_json::from_str(json)
        .map_err(|e| MetaError::Backend(format!("stored upload record is unreadable: {e}")))
}

fn parse_id(s: &str) -> Result<UploadId, MetaError> {
    UploadId::parse(s)
        .ok_or_else(|| MetaError::Backend(format!("stored upload id {s:?} is malformed")))
}

impl PgMetaStore {
    async fn get_where(&self, sql: &str, value: &str) -> Result<Option<Upload>, MetaError> {
        let client = self.client().await?;
        let st = client.prepare_cached(sql).await.map_err(backend)?;
        let row = client.query_opt(&st, &[&value]).await.map_err(backend)?;
        match row {
            Some(row) => {
                let mut u = decode(row.try_get::<_, &str>(0).map_err(backend)?)?;
                u.version = row.try_get::<_, i64>(1).map_err(backend)?.max(0) as u64;
                Ok(Some(u))
            }
            None => Ok(None),
        }
    }

    async fn ids(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<UploadId>, MetaError> {
        let client = self.client().await?;
        let st = client.prepare_cached(sql).await.map_err(backend)?;
        let rows = client.query(&st, params).await.map_err(backend)?;
        rows.iter()
            .map(|row| parse_id(row.try_get::<_, &str>(0).map_err(backend)?))
            .collect()
    }
}

#[async_trait]
impl MetaStore for PgMetaStore {
    async fn insert(&self, upload: &Upload) -> Result<(), MetaError> {
        let row = Row::of(upload)?;
        let client = self.client().await?;
        let st = client.prepare_cached(INSERT).await.map_err(backend)?;
        client
            .execute(&st, &row.params(upload, &0))
            .await
            .map_err(write_error)?;
        crash::event("meta.insert", || upload.id.to_string());
        Ok(())
    }

    async fn get(&self, id: &UploadId) -> Result<Option<Upload>, MetaError> {
        self.get_where(GET, id.as_str()).await
    }

    async fn get_by_key(&self, key: &str) -> Result<Option<Upload>, MetaError> {
        self.get_where(GET_BY_KEY, key).await
    }

    async fn update(&self, upload: &Upload) -> Result<(), MetaError> {
        // A key taken by another upload is a conflict, as on insert; a deleted upload is a
        // no-op; a row at another version is stale.
        let row = Row::of(upload)?;
        let version = i64::try_from(upload.version).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let st = client.prepare_cached(UPDATE).await.map_err(backend)?;
        let answer = client
            .query_one(&st, &row.params(upload, &version))
            .await
            .map_err(write_error)?;
        let changed: i64 = answer.try_get(0).map_err(backend)?;
        let exists: bool = answer.try_get(1).map_err(backend)?;
        if changed == 0 && exists {
            return Err(MetaError::Stale);
        }
        crash::event("meta.update", || upload.id.to_string());
        Ok(())
    }

    async fn delete(&self, id: &UploadId) -> Result<(), MetaError> {
        let client = self.client().await?;
        let st = client.prepare_cached(DELETE).await.map_err(backend)?;
        client
            .execute(&st, &[&id.as_str()])
            .await
            .map_err(backend)?;
        crash::event("meta.delete", || id.to_string());
        Ok(())
    }

    async fn list_stale(&self, before: Timestamp) -> Result<Vec<UploadId>, MetaError> {
        let receiving = state_name(UploadState::Receiving);
        self.ids(LIST_STALE, &[&receiving, &before.0]).await
    }

    async fn list_incomplete(&self) -> Result<Vec<UploadId>, MetaError> {
        let receiving = state_name(UploadState::Receiving);
        self.ids(LIST_INCOMPLETE, &[&receiving]).await
    }

    async fn usage(&self, owner: Option<&str>) -> Result<Usage, MetaError> {
        let receiving = state_name(UploadState::Receiving);
        let client = self.client().await?;
        let row = match owner {
            Some(owner) => {
                let st = client.prepare_cached(USAGE_OF).await.map_err(backend)?;
                client.query_one(&st, &[&owner, &receiving]).await
            }
            None => {
                let st = client
                    .prepare_cached(USAGE_OF_NOBODY)
                    .await
                    .map_err(backend)?;
                client.query_one(&st, &[&receiving]).await
            }
        }
        .map_err(backend)?;
        let incomplete: i64 = row.try_get(0).map_err(backend)?;
        let stored_bytes: i64 = row.try_get(1).map_err(backend)?;
        Ok(Usage {
            incomplete: incomplete.max(0) as u64,
            stored_bytes: stored_bytes.max(0) as u64,
        })
    }

    async fn list_owned(
        &self,
        owner: Option<&str>,
        after: Option<(Timestamp, UploadId)>,
        limit: usize,
    ) -> Result<Vec<Upload>, MetaError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let rows = match (owner, &after) {
            (Some(owner), None) => {
                let st = client.prepare_cached(LIST_OWNED).await.map_err(backend)?;
                client.query(&st, &[&owner, &limit]).await
            }
            (Some(owner), Some((at, id))) => {
                let st = client
                    .prepare_cached(LIST_OWNED_AFTER)
                    .await
                    .map_err(backend)?;
                client
                    .query(&st, &[&owner, &limit, &at.0, &id.as_str()])
                    .await
            }
            (None, None) => {
                let st = client.prepare_cached(LIST_NOBODYS).await.map_err(backend)?;
                client.query(&st, &[&limit]).await
            }
            (None, Some((at, id))) => {
                let st = client
                    .prepare_cached(LIST_NOBODYS_AFTER)
                    .await
                    .map_err(backend)?;
                client.query(&st, &[&limit, &at.0, &id.as_str()]).await
            }
        }
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let mut u = decode(row.try_get::<_, &str>(0).map_err(backend)?)?;
                u.version = row.try_get::<_, i64>(1).map_err(backend)?.max(0) as u64;
                Ok(u)
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), MetaError> {
        // Touches the schema, so a database that lost its tables fails here rather than on
        // the next upload.
        let client = self.client().await?;
        let st = client.prepare_cached(PING).await.map_err(backend)?;
        client.query(&st, &[]).await.map_err(backend)?;
        Ok(())
    }

    fn metrics(&self) -> Vec<ferry_core::store::Metric> {
        use ferry_core::store::Metric;
        let status = self.pool.status();
        let gauge = |name, help, value: usize| Metric {
            name,
            help,
            kind: "gauge",
            value: value as f64,
        };
        vec![
            gauge(
                "ferry_db_pool_max_connections",
                "Most PostgreSQL connections this node keeps (--database-pool-size).",
                status.max_size,
            ),
            gauge(
                "ferry_db_pool_connections",
                "PostgreSQL connections open now.",
                status.size,
            ),
            gauge(
                "ferry_db_pool_idle_connections",
                "Open PostgreSQL connections not in use.",
                status.available,
            ),
            gauge(
                "ferry_db_pool_waiting",
                "Requests waiting for a PostgreSQL connection.",
                status.waiting,
            ),
        ]
    }
}
