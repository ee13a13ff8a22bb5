//! Runs the shared conformance suites against the filesystem and SQLite backends, plus the
//! checks only these backends can make (on-disk layout, reopening the database file).

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
        dialect: Dialect::Offset,
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

#[tokio::test]
async fn fs_writer_of_a_missing_upload_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobStore::open(dir.path().to_owned()).unwrap();
    let err = store.writer(&UploadId::generate()).await.err().unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
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
    {
        let store = SqliteMetaStore::open(&path).unwrap();
        store.insert(&fin).await.unwrap();
        store.insert(&plain).await.unwrap();
    }
    // Back to version 2, as a database written by the previous release.
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 2)
        .unwrap();
    let store = SqliteMetaStore::open(&path).unwrap();
    let got = store.get(&fin.id).await.unwrap().unwrap();
    assert_eq!(got.content_digest, None, "the composite digest survived");
    assert_eq!(got.etag(), None);
    let kept = store.get(&plain.id).await.unwrap().unwrap();
    assert_eq!(kept.content_digest, plain.content_digest);
}
