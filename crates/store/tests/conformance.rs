//! Runs the shared conformance suites against the filesystem, SQLite and PostgreSQL
//! backends, plus the checks only these backends can make (on-disk layout, reopening the
//! database, migrations, connection errors). The PostgreSQL tests need a server: see
//! `scripts/pg.sh`.

#![cfg(all(feature = "fs", feature = "sqlite"))]

use bytes::Bytes;
use ferry_core::store::{BlobStore, Blobs, Meta, MetaError, MetaStore, StoredBlob};
use ferry_core::upload::{Dialect, Timestamp, Upload, UploadId, UploadState};
use ferry_store::fs::FsBlobStore;
use ferry_store::sqlite::{SCHEMA_VERSION, SqliteMetaStore};
use std::path::Path;
use std::sync::Arc;

fn sample(key: Option<&str>) -> Upload {
    Upload {
        owner: None,
        id: UploadId::generate(),
        key: key.map(str::to_owned),
        dialect: Dialect::OFFSET,
        length: Some(10),
        state: UploadState::Receiving,
        held: ferry_core::ranges::RangeSet::from_pairs([(0, 4)]),
        declared: None,
        content_alg: ferry_core::hash::HashAlg::Sha256,
        hash_progress: None,
        content_digest: None,
        file_name: Some("文件.bin".to_owned()),
        ext: ".bin".to_owned(),
        chunks: None,
        metadata: Default::default(),
        concat: None,
        created_at: Timestamp(1),
        updated_at: Timestamp(2),
        completed_at: None,
        blob: None,
        version: 0,
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn fs_blob_store_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobStore::open(dir.path().join("blobs")).unwrap();
    ferry_store::blob_store_suite(Blobs(Arc::new(store.clone()))).await;
    // Twice on the same store: the suite must not depend on a fresh directory.
    ferry_store::blob_store_suite(Blobs(Arc::new(store))).await;
}

#[tokio::test]
async fn sqlite_meta_store_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteMetaStore::open(&dir.path().join("meta.db")).unwrap();
    ferry_store::meta_store_suite(Meta(Arc::new(store.clone()))).await;
    ferry_store::meta_store_suite(Meta(Arc::new(store))).await;
}

#[tokio::test]
async fn fs_layout_is_the_documented_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("nested/blobs");
    let store = FsBlobStore::open(root.clone()).unwrap();
    assert_eq!(names(&root), ["complete", "partial", "staging"]);
    // Opening an existing root again is fine.
    let store2 = FsBlobStore::open(root.clone()).unwrap();
    store2.ping().await.unwrap();

    let (a, b) = (UploadId::generate(), UploadId::generate());
    store.create(&a).await.unwrap();
    store.create(&b).await.unwrap();
    assert_eq!(names(&root.join("partial")).len(), 2);
    assert!(root.join("partial").join(a.as_str()).is_file());

    for (id, index) in [(&a, 0), (&a, 12), (&b, 0)] {
        let mut w = store.staging_writer(id, index).await.unwrap();
        tokio::task::spawn_blocking(move || {
            w.write_at(0, &[Bytes::from_static(b"0123456789")]).unwrap();
            w.sync().unwrap();
        })
        .await
        .unwrap();
    }
    let mut staging = vec![format!("{a}.0"), format!("{a}.12"), format!("{b}.0")];
    staging.sort();
    assert_eq!(names(&root.join("staging")), staging);

    // place_staged copies and keeps the staging file (the engine removes it after its
    // commit); remove_staged removes exactly that one, and again is fine.
    store.place_staged(&a, 12, 5, 10).await.unwrap();
    assert!(root.join("staging").join(format!("{a}.12")).exists());
    assert_eq!(
        std::fs::read(root.join("partial").join(a.as_str())).unwrap(),
        b"\0\0\0\0\x000123456789"
    );
    store.remove_staged(&a, 12).await.unwrap();
    store.remove_staged(&a, 12).await.unwrap();
    assert!(!root.join("staging").join(format!("{a}.12")).exists());
    assert_eq!(names(&root.join("staging")).len(), 2);

    // list names every blob: partials and staging chunks, with their upload and index.
    let mut listed = store.list().await.unwrap();
    listed.sort_by_key(|b| (b.id.clone(), b.staging));
    let mut want = vec![
        StoredBlob {
            id: a.clone(),
            staging: None,
        },
        StoredBlob {
            id: a.clone(),
            staging: Some(0),
        },
        StoredBlob {
            id: b.clone(),
            staging: None,
        },
        StoredBlob {
            id: b.clone(),
            staging: Some(0),
        },
    ];
    want.sort_by_key(|b| (b.id.clone(), b.staging));
    assert_eq!(listed, want);

    // publish moves the file between directories.
    store.publish(&a).await.unwrap();
    assert!(!root.join("partial").join(a.as_str()).exists());
    assert_eq!(
        std::fs::read(root.join("complete").join(a.as_str()))
            .unwrap()
            .len(),
        15
    );

    // delete removes a's files, including its remaining staging chunk, and nothing of b's.
    store.delete(&a).await.unwrap();
    assert!(!root.join("complete").join(a.as_str()).exists());
    assert_eq!(names(&root.join("staging")), [format!("{b}.0")]);
    assert_eq!(names(&root.join("partial")), [b.to_string()]);
}

#[tokio::test]
async fn fs_ping_fails_when_the_root_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("blobs");
    let store = FsBlobStore::open(root.clone()).unwrap();
    store.ping().await.unwrap();
    std::fs::remove_dir_all(&root).unwrap();
    assert!(store.ping().await.is_err());
}

/// `read_cached` of a file the page cache holds (just written) gives its bytes without a
/// blocking read: the whole span asked for, clipped at the end, nothing past it.
#[tokio::test]
async fn fs_read_cached_serves_what_the_page_cache_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobStore::open(dir.path().to_owned()).unwrap();
    let id = UploadId::generate();
    store.create(&id).await.unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut w = store.writer(&id).await.unwrap();
    let bufs = [Bytes::copy_from_slice(&data)];
    tokio::task::spawn_blocking(move || {
        w.write_at(0, &bufs).unwrap();
        w.sync().unwrap();
    })
    .await
    .unwrap();
    let blob = store
        .open(&id, ferry_core::store::BlobKind::Partial)
        .await
        .unwrap();
    let got = blob
        .read_cached(1_000, 1 << 20)
        .expect("a file just written is in the page cache");
    assert_eq!(&got[..], &data[1_000..1_000 + (1 << 20)]);
    let tail = blob.read_cached(2_999_000, 1 << 20).expect("the tail");
    assert_eq!(&tail[..], &data[2_999_000..], "clipped at the end");
    assert!(
        blob.read_cached(3_000_000, 10).is_none(),
        "nothing at the end"
    );
    assert!(
        blob.read_cached(4_000_000, 10).is_none(),
        "nothing past the end"
    );
}

#[tokio::test]
async fn fs_writer_of_a_missing_upload_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobStore::open(dir.path().to_owned()).unwrap();
    // The file is opened by the writer's first use: that is where it fails, and no file is
    // created.
    let id = UploadId::generate();
    let mut w = store.writer(&id).await.unwrap();
    let err = tokio::task::spawn_blocking(move || w.write_at(0, &[Bytes::from_static(b"x")]))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    let mut w = store.writer(&id).await.unwrap();
    let err = tokio::task::spawn_blocking(move || w.sync())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .all(|e| e.path().is_dir()),
        "a write to a missing upload created a file"
    );
}

#[tokio::test]
async fn sqlite_data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let upload = sample(Some("offset:abc"));
    {
        let store = SqliteMetaStore::open(&path).unwrap();
        store.insert(&upload).await.unwrap();
    }
    let store = SqliteMetaStore::open(&path).unwrap();
    assert_eq!(store.get(&upload.id).await.unwrap(), Some(upload.clone()));
    assert_eq!(
        store.get_by_key("offset:abc").await.unwrap(),
        Some(upload.clone())
    );
    assert_eq!(
        store.list_incomplete().await.unwrap(),
        vec![upload.id.clone()]
    );
    // Constraints survive too.
    let dup = sample(Some("offset:abc"));
    assert!(matches!(store.insert(&dup).await, Err(MetaError::Conflict)));
}

#[tokio::test]
async fn sqlite_database_has_one_store_at_a_time_and_reads_come_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let store = SqliteMetaStore::open(&path).unwrap();
    let mut upload = sample(Some("offset:one"));
    store.insert(&upload).await.unwrap();

    // A second store on the same file (a second server given the same --database) is
    // refused with a sentence that says what to do, and the first keeps working.
    match SqliteMetaStore::open(&path) {
        Err(MetaError::Backend(msg)) => assert!(
            msg.contains("in use by another ferry server") && msg.contains("meta.db"),
            "unexpected refusal: {msg}"
        ),
        Err(e) => panic!("a second store on the same database failed oddly: {e}"),
        Ok(_) => panic!("a second store opened a database another store holds"),
    }
    upload.updated_at = Timestamp(upload.updated_at.0 + 1);
    upload.metadata.insert("k".to_owned(), "v".to_owned());
    store.update(&upload).await.unwrap();
    upload.version += 1;

    // Reads of a record this store wrote come from memory, and match the row byte for byte
    // as another reader of the file (an operator's shell) sees it.
    let hits = |s: &SqliteMetaStore| {
        s.metrics()
            .iter()
            .find(|m| m.name == "ferry_meta_cache_hits_total")
            .map(|m| m.value)
            .unwrap()
    };
    let before = hits(&store);
    let got = store.get(&upload.id).await.unwrap().unwrap();
    assert_eq!(got, upload);
    assert_eq!(
        hits(&store),
        before + 1.0,
        "the read did not come from memory"
    );
    let shell = rusqlite::Connection::open(&path).unwrap();
    let (json, version): (String, i64) = shell
        .query_row(
            "SELECT record, version FROM uploads WHERE id = ?1",
            [upload.id.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let mut on_disk: Upload = serde_json::from_str(&json).unwrap();
    on_disk.version = version as u64;
    assert_eq!(
        on_disk, got,
        "the copy in memory differs from the stored row"
    );

    // A stale copy is still refused (the memory holds the stored version, not the caller's).
    let mut late = upload.clone();
    late.version -= 1;
    assert!(matches!(store.update(&late).await, Err(MetaError::Stale)));
    store.delete(&upload.id).await.unwrap();
    assert_eq!(store.get(&upload.id).await.unwrap(), None);

    // Once the first store is gone, the file opens again.
    drop(store);
    let again = SqliteMetaStore::open(&path).unwrap();
    assert_eq!(again.get(&upload.id).await.unwrap(), None);
}

#[tokio::test]
async fn sqlite_file_is_in_wal_mode_at_the_current_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    drop(SqliteMetaStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let index: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'uploads'
             AND sql LIKE '%(state, updated_at)%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(index, 1, "the (state, updated_at) index is missing");
    let index: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'uploads'
             AND sql LIKE '%(owner, created_at, id)%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        index, 1,
        "the index of an owner's uploads by creation is missing"
    );
    // No index on an expression of the record: each update would parse it again.
    let on_record: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND sql LIKE '%record%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(on_record, 0, "an index still reads the record");
}

/// The ids of the first uploads without an owner, newest first (`list_owned`).
async fn owner_less_ids(store: &impl MetaStore) -> Vec<UploadId> {
    store
        .list_owned(None, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect()
}

/// Stores `uploads` in a database at `path` of the current schema, then runs `rollback` on
/// it: SQL that takes the schema back to what an older release wrote.
async fn stored_at_an_older_schema(path: &Path, uploads: &[&Upload], rollback: &str) {
    {
        let store = SqliteMetaStore::open(path).unwrap();
        for u in uploads {
            store.insert(u).await.unwrap();
        }
    }
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(rollback).unwrap();
}

/// Schema 6 copies the creation time into a column: rows written before it take theirs
/// from the record, and an owner's uploads still list newest first.
#[tokio::test]
async fn sqlite_v6_takes_created_at_from_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let mut older = sample(None);
    older.created_at = Timestamp(1_000);
    let mut newer = sample(None);
    newer.created_at = Timestamp(2_000);
    // Back to version 5, as a database written by that release.
    stored_at_an_older_schema(
        &path,
        &[&older, &newer],
        "DROP INDEX uploads_owner_created_at;
         ALTER TABLE uploads DROP COLUMN created_at;
         CREATE INDEX uploads_owner_created
             ON uploads (owner, json_extract(record, '$.created_at'), id);
         PRAGMA user_version = 5;",
    )
    .await;
    let store = SqliteMetaStore::open(&path).unwrap();
    assert_eq!(
        owner_less_ids(&store).await,
        [newer.id.clone(), older.id.clone()]
    );
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let created = |id: &UploadId| -> i64 {
        conn.query_row(
            "SELECT created_at FROM uploads WHERE id = ?1",
            [id.as_str()],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(created(&older.id), 1_000);
    assert_eq!(created(&newer.id), 2_000);
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[tokio::test]
async fn sqlite_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    drop(SqliteMetaStore::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    match SqliteMetaStore::open(&path) {
        Err(MetaError::Backend(msg)) => assert!(msg.contains("newer"), "{msg}"),
        Err(other) => panic!("expected a Backend error, got {other:?}"),
        Ok(_) => panic!("a database from a newer schema was opened"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_handles_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteMetaStore::open(&dir.path().join("meta.db")).unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut u = sample(Some(&format!("offset:{i}")));
                store.insert(&u).await.unwrap();
                u.state = UploadState::Complete;
                store.update(&u).await.unwrap();
                u.id
            })
        })
        .collect();
    for t in tasks {
        let id = t.await.unwrap();
        assert!(store.get(&id).await.unwrap().unwrap().is_complete());
    }
    assert!(store.list_incomplete().await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_v3_drops_the_parts_digest_of_finished_concatenations_only() {
    use ferry_core::upload::Concat;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.db");
    let mut fin = sample(None);
    fin.state = UploadState::Complete;
    fin.concat = Some(Concat::Final { parts: vec![] });
    fin.content_digest = Some("ab".repeat(32));
    let mut plain = sample(None);
    plain.state = UploadState::Complete;
    plain.content_digest = Some("cd".repeat(32));
    // Back to version 2, as a database written by that release.
    stored_at_an_older_schema(
        &path,
        &[&fin, &plain],
        "DROP INDEX uploads_owner_created_at;
         ALTER TABLE uploads DROP COLUMN created_at;
         ALTER TABLE uploads DROP COLUMN version;
         PRAGMA user_version = 2;",
    )
    .await;
    let store = SqliteMetaStore::open(&path).unwrap();
    let got = store.get(&fin.id).await.unwrap().unwrap();
    assert_eq!(got.content_digest, None, "the composite digest survived");
    assert_eq!(got.etag(), None);
    let kept = store.get(&plain.id).await.unwrap().unwrap();
    assert_eq!(kept.content_digest, plain.content_digest);
}

/// The PostgreSQL store, against the throwaway cluster of `scripts/pg.sh` (or any server
/// whose admin URL is in `FERRY_TEST_DATABASE_URL`). Each test works in a database of its
/// own, created here and dropped afterwards, so the tests can run in parallel.
#[cfg(feature = "postgres")]
mod postgres {
    use super::sample;
    use ferry_core::store::{Meta, MetaError, MetaStore};
    use ferry_core::upload::{UploadId, UploadState};
    use ferry_store::postgres::{PgMetaStore, SCHEMA_VERSION};
    use std::sync::Arc;
    use tokio_postgres::NoTls;

    const URL_VAR: &str = "FERRY_TEST_DATABASE_URL";

    /// The admin URL. Missing is a failure, not a skip: a skipped test in CI is a missing one.
    fn admin_url() -> String {
        match std::env::var(URL_VAR) {
            Ok(url) if !url.is_empty() => url,
            _ => panic!(
                "{URL_VAR} is not set: the PostgreSQL tests need a server. Start a throwaway \
                 one with `eval \"$(scripts/pg.sh start)\"` (and `scripts/pg.sh stop` after); \
                 scripts/test.sh does this itself"
            ),
        }
    }

    /// `url` (`postgres://[creds@]host[:port][/db][?params]`) with its path set to `db`.
    fn with_db(url: &str, db: &str) -> String {
        let start = url.find("://").expect("the test URL has no scheme") + 3;
        let (head, rest) = url.split_at(start);
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let query = rest.find('?').map(|i| &rest[i..]).unwrap_or("");
        format!("{head}{}/{db}{query}", &rest[..authority_end])
    }

    /// `url` with its credentials replaced by `creds` (`user:password`).
    fn with_credentials(url: &str, creds: &str) -> String {
        let start = url.find("://").expect("the test URL has no scheme") + 3;
        let (head, rest) = url.split_at(start);
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let host_start = rest[..authority_end].rfind('@').map_or(0, |i| i + 1);
        format!("{head}{creds}@{}", &rest[host_start..])
    }

    /// The user named in `url`.
    fn user_of(url: &str) -> String {
        let rest = &url[url.find("://").unwrap() + 3..];
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        let creds = &authority[..authority.rfind('@').expect("the test URL names no user")];
        creds.split(':').next().unwrap().to_owned()
    }

    async fn admin_client(url: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {URL_VAR}: {e}"));
        tokio::spawn(conn);
        client
    }

    /// A database of one test's own; dropped (best effort) when this goes out of scope,
    /// panics included.
    struct TestDb {
        name: String,
        url: String,
        admin: String,
    }

    impl TestDb {
        async fn create() -> TestDb {
            let admin = admin_url();
            let name = format!("ferry_test_{}", UploadId::generate());
            admin_client(&admin)
                .await
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e}"));
            TestDb {
                url: with_db(&admin, &name),
                name,
                admin,
            }
        }

        /// A direct connection to the test database, for looking behind the store.
        async fn client(&self) -> tokio_postgres::Client {
            admin_client(&self.url).await
        }

        async fn connect(&self) -> PgMetaStore {
            PgMetaStore::connect(&self.url, 4)
                .await
                .unwrap_or_else(|e| panic!("connect to a test database failed: {e}"))
        }
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            let (admin, name) = (self.admin.clone(), self.name.clone());
            // Its own thread and runtime: Drop cannot await, and the test's runtime may be
            // a current-thread one that is blocked right here.
            let dropped = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok((client, conn)) = tokio_postgres::connect(&admin, NoTls).await {
                        tokio::spawn(conn);
                        // FORCE ends the store's pooled connections still open.
                        let _ = client
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .await;
                    }
                });
            });
            let _ = dropped.join();
        }
    }

    fn message(result: Result<PgMetaStore, MetaError>) -> String {
        match result {
            Err(MetaError::Backend(msg) | MetaError::Unavailable(msg)) => msg,
            Err(other) => panic!("expected a Backend error, got {other:?}"),
            Ok(_) => panic!("connect succeeded where it should have failed"),
        }
    }

    async fn schema_versions(client: &tokio_postgres::Client) -> Vec<i32> {
        client
            .query("SELECT version FROM ferry_schema", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    #[tokio::test]
    async fn pg_meta_store_passes_the_suite() {
        let db = TestDb::create().await;
        let store = db.connect().await;
        ferry_store::meta_store_suite(Meta(Arc::new(store.clone()))).await;
        ferry_store::meta_store_suite(Meta(Arc::new(store))).await;
    }

    #[tokio::test]
    async fn pg_fresh_database_migrates_to_the_current_schema() {
        let db = TestDb::create().await;
        drop(db.connect().await);
        let client = db.client().await;
        assert_eq!(schema_versions(&client).await, [SCHEMA_VERSION]);
        let columns: Vec<(String, String, String)> = client
            .query(
                "SELECT column_name::text, data_type::text, is_nullable::text
                 FROM information_schema.columns WHERE table_name = 'uploads'
                 ORDER BY ordinal_position",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let want = [
            ("id", "text", "NO"),
            ("key", "text", "YES"),
            ("state", "text", "NO"),
            ("dialect", "text", "NO"),
            ("updated_at", "bigint", "NO"),
            ("record", "text", "NO"),
            ("owner", "text", "YES"),
            ("size", "bigint", "NO"),
            ("version", "bigint", "NO"),
            ("created_at", "bigint", "NO"),
        ];
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        assert_eq!(columns, want);
        let indexes: Vec<String> = client
            .query(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'uploads'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        for cols in [
            "(state, updated_at)",
            "(owner, state)",
            "(owner, created_at, id)",
            "(id)",
            "(key)",
        ] {
            assert!(
                indexes.iter().any(|def| def.ends_with(cols)),
                "no index on {cols}: {indexes:?}"
            );
        }
    }

    #[tokio::test]
    async fn pg_data_survives_reconnecting() {
        let db = TestDb::create().await;
        let mut upload = sample(Some("offset:abc"));
        // A NUL in client metadata: fine in the JSON text of `record`.
        upload.metadata.insert("nul".to_owned(), "a\0b".to_owned());
        {
            let store = db.connect().await;
            store.insert(&upload).await.unwrap();
        }
        // A second connect on a migrated database: nothing to do, data still there.
        let store = db.connect().await;
        let again = db.connect().await;
        assert_eq!(store.get(&upload.id).await.unwrap(), Some(upload.clone()));
        assert_eq!(
            again.get_by_key("offset:abc").await.unwrap(),
            Some(upload.clone())
        );
        assert_eq!(
            store.list_incomplete().await.unwrap(),
            vec![upload.id.clone()]
        );
        let dup = sample(Some("offset:abc"));
        assert!(matches!(again.insert(&dup).await, Err(MetaError::Conflict)));
        assert_eq!(schema_versions(&db.client().await).await, [SCHEMA_VERSION]);
    }

    /// Schema 4 adds `created_at`: rows written before it take theirs from the record (also
    /// a record with a NUL, which `->>` could not read), and rows a node of the previous
    /// build inserts during a rolling upgrade get the time of the insert.
    #[tokio::test]
    async fn pg_v4_takes_created_at_from_the_record_and_defaults_old_nodes_inserts() {
        let db = TestDb::create().await;
        let mut older = sample(None);
        older.created_at = ferry_core::upload::Timestamp(1_000);
        older.metadata.insert("nul".to_owned(), "a\0b".to_owned());
        older
            .metadata
            .insert("created_at".to_owned(), "9".to_owned());
        let mut newer = sample(None);
        newer.created_at = ferry_core::upload::Timestamp(2_000);
        {
            let store = db.connect().await;
            store.insert(&older).await.unwrap();
            store.insert(&newer).await.unwrap();
        }
        // Back to version 3, as a database written by that release.
        let client = db.client().await;
        client
            .batch_execute(
                "DROP INDEX uploads_owner_created;
                 ALTER TABLE uploads DROP COLUMN created_at;
                 UPDATE ferry_schema SET version = 3;",
            )
            .await
            .unwrap();
        let store = db.connect().await;
        assert_eq!(schema_versions(&client).await, [SCHEMA_VERSION]);
        let created = |id: UploadId| {
            let client = &client;
            async move {
                client
                    .query_one(
                        "SELECT created_at FROM uploads WHERE id = $1",
                        &[&id.as_str()],
                    )
                    .await
                    .unwrap()
                    .get::<_, i64>(0)
            }
        };
        assert_eq!(created(older.id.clone()).await, 1_000);
        assert_eq!(created(newer.id.clone()).await, 2_000);
        assert_eq!(
            super::owner_less_ids(&store).await,
            [newer.id.clone(), older.id.clone()]
        );

        // A previous build's insert names no created_at.
        let old_node = sample(None);
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        client
            .execute(
                "INSERT INTO uploads (id, key, state, dialect, updated_at, record, owner, size)
                 VALUES ($1, NULL, 'receiving', 'offset', 2, $2, NULL, 10)",
                &[
                    &old_node.id.as_str(),
                    &serde_json::to_string(&old_node).unwrap(),
                ],
            )
            .await
            .unwrap();
        let at = created(old_node.id.clone()).await;
        assert!(
            (before - 5_000..before + 60_000).contains(&at),
            "an insert without created_at got {at}, not about now ({before})"
        );
    }

    #[tokio::test]
    async fn pg_row_version_counts_updates() {
        let db = TestDb::create().await;
        let store = db.connect().await;
        let mut upload = sample(None);
        store.insert(&upload).await.unwrap();
        let client = db.client().await;
        let version = || async {
            client
                .query_one(
                    "SELECT version FROM uploads WHERE id = $1",
                    &[&upload.id.as_str()],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        };
        assert_eq!(version().await, 0);
        upload.state = UploadState::Complete;
        store.update(&upload).await.unwrap();
        upload.version += 1;
        store.update(&upload).await.unwrap();
        assert_eq!(version().await, 2);
    }

    #[tokio::test]
    #[allow(clippy::single_range_in_vec_init)] // one leased range is spelled &[a..b]
    async fn pg_leases_bring_the_record_and_releases_ride_on_the_next_take() {
        use ferry_core::coord::Coordinator;
        use ferry_store::postgres::coord::{PgCoordinator, RELEASE_DELAY};
        let db = TestDb::create().await;
        let store = db.connect().await;
        let (a, b) = (
            PgCoordinator::start(&store).await.unwrap(),
            PgCoordinator::start(&store).await.unwrap(),
        );
        let mut upload = sample(None);
        store.insert(&upload).await.unwrap();
        upload.state = UploadState::Complete;
        store.update(&upload).await.unwrap();
        let client = db.client().await;
        let rows = |token: i64| {
            let client = &client;
            async move {
                client
                    .query_one(
                        "SELECT count(*) FROM ferry_leases WHERE token = $1",
                        &[&token],
                    )
                    .await
                    .unwrap()
                    .get::<_, i64>(0)
            }
        };

        let mut first = a
            .acquire(&upload.id, &[0..100], true)
            .await
            .unwrap()
            .unwrap();
        let record = first.take_record().expect("the take read the record");
        assert_eq!(record.id, upload.id);
        assert_eq!(record.state, UploadState::Complete);
        assert_eq!(record.version, 1, "the row version comes with the record");
        assert!(
            first.take_record().is_none(),
            "the record is handed out once"
        );
        assert!(
            b.acquire(&upload.id, &[50..150], false)
                .await
                .unwrap()
                .is_none()
        );
        let second = b
            .acquire(&upload.id, &[100..200], false)
            .await
            .unwrap()
            .unwrap();
        assert!(first.held() && second.held());

        // A's release is carried by A's next take, of any upload.
        a.release(&first);
        let missing = UploadId::generate();
        let mut other = a.acquire(&missing, &[0..1], false).await.unwrap().unwrap();
        assert!(
            other.take_record().is_none(),
            "no record for an unknown upload"
        );
        assert_eq!(
            rows(first.token).await,
            0,
            "the next take deleted the released lease"
        );
        assert!(
            b.acquire(&upload.id, &[0..100], false)
                .await
                .unwrap()
                .is_some()
        );

        // With no take to carry it, a release is flushed shortly after.
        b.release(&second);
        let deadline = std::time::Instant::now() + RELEASE_DELAY * 40;
        while rows(second.token).await != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "a released lease was still there after {:?}",
                RELEASE_DELAY * 40
            );
            tokio::time::sleep(RELEASE_DELAY).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pg_racing_connects_both_succeed_and_migrate_once() {
        let db = TestDb::create().await;
        let url = db.url.clone();
        let racers: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { PgMetaStore::connect(&url, 2).await })
            })
            .collect();
        for racer in racers {
            let store = racer
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("a racing connect failed: {e}"));
            store.ping().await.unwrap();
        }
        assert_eq!(schema_versions(&db.client().await).await, [SCHEMA_VERSION]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pg_handles_concurrent_writers() {
        let db = TestDb::create().await;
        let store = db.connect().await;
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut u = sample(Some(&format!("offset:{i}")));
                    store.insert(&u).await.unwrap();
                    u.state = UploadState::Complete;
                    store.update(&u).await.unwrap();
                    u.id
                })
            })
            .collect();
        for t in tasks {
            let id = t.await.unwrap();
            assert!(store.get(&id).await.unwrap().unwrap().is_complete());
        }
        assert!(store.list_incomplete().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn pg_refuses_a_newer_schema_and_leaves_it_alone() {
        let db = TestDb::create().await;
        let upload = sample(Some("offset:kept"));
        db.connect().await.insert(&upload).await.unwrap();
        let client = db.client().await;
        client
            .execute(
                "UPDATE ferry_schema SET version = $1",
                &[&(SCHEMA_VERSION + 1)],
            )
            .await
            .unwrap();
        let msg = message(PgMetaStore::connect(&db.url, 2).await);
        assert!(
            msg.contains(&format!(
                "schema version {}, newer than the {SCHEMA_VERSION} this build understands",
                SCHEMA_VERSION + 1
            )),
            "{msg}"
        );
        assert_eq!(schema_versions(&client).await, [SCHEMA_VERSION + 1]);
        let rows: i64 = client
            .query_one("SELECT count(*) FROM uploads", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 1, "the refused database lost its data");
    }

    #[tokio::test]
    async fn pg_wrong_password_is_named_and_not_echoed() {
        let db = TestDb::create().await;
        let secret = "not-the-Password-42";
        let user = user_of(&db.url);
        let url = with_credentials(&db.url, &format!("{user}:{secret}"));
        let msg = message(PgMetaStore::connect(&url, 2).await);
        assert!(
            msg.contains("password authentication failed") && msg.contains(&user),
            "the message should name authentication and the user (is the server asking for \
             passwords over TCP, as scripts/pg.sh sets it up?): {msg}"
        );
        assert!(!msg.contains(secret), "the password leaked: {msg}");
        // No password at all, where the server asks for one.
        let msg = message(PgMetaStore::connect(&with_credentials(&db.url, &user), 2).await);
        assert!(msg.contains("asks for a password"), "{msg}");
    }

    #[tokio::test]
    async fn pg_unreachable_server_is_an_error() {
        // A port nobody listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let secret = "hunter2-secret";
        let url = format!("postgres://ferry:{secret}@127.0.0.1:{port}/ferry");
        let msg = message(PgMetaStore::connect(&url, 2).await);
        assert_eq!(
            msg,
            format!("could not connect to PostgreSQL at 127.0.0.1:{port}: connection refused")
        );
    }

    #[tokio::test]
    async fn pg_missing_database_is_named() {
        let admin = admin_url();
        let name = format!("ferry_missing_{}", UploadId::generate());
        let msg = message(PgMetaStore::connect(&with_db(&admin, &name), 2).await);
        assert!(
            msg.contains(&format!("database \"{name}\" does not exist")),
            "{msg}"
        );
        assert!(
            !msg.contains("ferry-test-password"),
            "the password leaked: {msg}"
        );
    }

    #[tokio::test]
    async fn pg_bad_urls_are_refused_without_echoing_them() {
        let secret = "s3cr3t-value";
        for url in [
            format!("mysql://ferry:{secret}@127.0.0.1/db"),
            format!("host=127.0.0.1 password={secret}"),
            format!("postgres://ferry:{secret}@127.0.0.1:notaport/db"),
            format!("postgres://ferry:{secret}@/db"),
            format!("postgres://ferry:{secret}@127.0.0.1/db?sslmode=require"),
            format!("postgres://ferry:{secret}@127.0.0.1/db?bogus=1"),
        ] {
            let msg = message(PgMetaStore::connect(&url, 2).await);
            assert!(!msg.contains(secret), "the password leaked: {msg}");
            assert!(msg.contains("PostgreSQL URL"), "{msg}");
        }
        let msg = message(PgMetaStore::connect("postgres://ferry@127.0.0.1/db", 0).await);
        assert!(msg.contains("pool size"), "{msg}");
    }
}
