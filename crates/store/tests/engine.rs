//! The real [`Engine`] over [`FsBlobStore`] and [`SqliteMetaStore`] in a temporary directory:
//! completion, offsets and lengths, cut-off bodies, durable hasher progress across a restart,
//! verified chunks (staged, duplicated, mismatching), concurrent writers, recovery after a
//! failed completion commit, expiry and deletion.
//!
//! Bodies are streams of `Bytes` frames, like the server hands them over; a body cut off
//! mid-way ends with an `Err`.

#![cfg(all(feature = "fs", feature = "sqlite"))]

use async_trait::async_trait;
use bytes::Bytes;
use ferry_core::engine::{EngineConfig, NewUpload, WriteMode, WriteOutcome};
use ferry_core::hash::{self, HashAlg};
use ferry_core::store::{
    BlobKind, BlobRead, BlobStore, BlobWrite, Blobs, Meta, MetaError, MetaStore,
};
use ferry_core::upload::{
    ChunkLayout, DeclaredDigest, Dialect, Timestamp, Upload, UploadId, UploadState,
};
use ferry_core::{Engine, EngineError};
use ferry_store::fs::FsBlobStore;
use ferry_store::sqlite::SqliteMetaStore;
use futures_util::stream::{self, BoxStream, StreamExt};
use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// Small enough that tests can exceed it cheaply.
const MAX_UPLOAD: u64 = 64 * MIB as u64;

type Frame = Result<Bytes, io::Error>;
type Body = BoxStream<'static, Frame>;

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

fn meta_at(dir: &Path) -> SqliteMetaStore {
    SqliteMetaStore::open(&dir.join("meta.db")).unwrap()
}

fn engine_on(dir: &Path, meta: Arc<dyn MetaStore>) -> Engine {
    let blobs = FsBlobStore::open(dir.join("blobs")).unwrap();
    Engine::new(
        Meta(meta),
        Blobs(Arc::new(blobs)),
        EngineConfig {
            max_upload_size: MAX_UPLOAD,
            ..Default::default()
        },
    )
}

/// A fresh engine on the stores under `dir` (opening them again: a restart).
fn open_engine(dir: &Path) -> Engine {
    engine_on(dir, Arc::new(meta_at(dir)))
}

fn partial_path(dir: &Path, id: &UploadId) -> PathBuf {
    dir.join("blobs").join("partial").join(id.as_str())
}

fn complete_path(dir: &Path, id: &UploadId) -> PathBuf {
    dir.join("blobs").join("complete").join(id.as_str())
}

fn staging_path(dir: &Path, id: &UploadId, index: usize) -> PathBuf {
    dir.join("blobs")
        .join("staging")
        .join(format!("{id}.{index}"))
}

fn staging_entries(dir: &Path, id: &UploadId) -> Vec<String> {
    let prefix = format!("{id}.");
    std::fs::read_dir(dir.join("blobs").join("staging"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift), different per seed.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The default content digest (BLAKE3), computed one-shot by the reference implementation,
/// so the engine's incremental, resumable tree hashing is checked against it.
fn blake3_hex(bytes: &[u8]) -> String {
    hex(&hash::digest(HashAlg::Blake3, bytes))
}

fn md5_hex(bytes: &[u8]) -> String {
    hex(&hash::digest(HashAlg::Md5, bytes))
}

fn frames(bytes: &[u8], frame: usize) -> Vec<Frame> {
    bytes
        .chunks(frame)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect()
}

/// A whole body in 64 KiB frames.
fn body(bytes: &[u8]) -> Body {
    stream::iter(frames(bytes, 64 * KIB)).boxed()
}

/// A body that delivers `bytes` in 16 KiB frames and then fails, like a dropped connection.
fn cut_body(bytes: &[u8]) -> Body {
    let mut items = frames(bytes, 16 * KIB);
    items.push(Err(io::Error::new(
        io::ErrorKind::ConnectionReset,
        "client went away",
    )));
    stream::iter(items).boxed()
}

/// A body whose frames trickle in, so that concurrent requests really overlap.
fn slow_body(bytes: &[u8], frame: usize, pause: Duration) -> Body {
    stream::iter(frames(bytes, frame))
        .then(move |f| async move {
            tokio::time::sleep(pause).await;
            f
        })
        .boxed()
}

/// A body the test feeds frame by frame; it ends when the sender is dropped.
fn channel_body() -> (mpsc::UnboundedSender<Frame>, Body) {
    let (tx, rx) = mpsc::unbounded_channel();
    let body = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed();
    (tx, body)
}

async fn create_offset(engine: &Engine, length: Option<u64>) -> Upload {
    let mut new = NewUpload::new(Dialect::OFFSET);
    new.length = length;
    let (u, created) = engine.create(new).await.unwrap();
    assert!(created);
    u
}

fn md5_layout(ids: Vec<String>, chunk_size: Option<u64>) -> ChunkLayout {
    ChunkLayout {
        ids,
        chunk_size,
        alg: HashAlg::Md5,
        staged: BTreeMap::new(),
    }
}

/// Chunk ids as the seed clients make them: the chunk's md5, optionally followed by its index.
fn chunk_ids(src: &[u8], chunk_size: usize, suffix: bool) -> Vec<String> {
    src.chunks(chunk_size)
        .enumerate()
        .map(|(i, c)| {
            if suffix {
                format!("{}-{i}", md5_hex(c))
            } else {
                md5_hex(c)
            }
        })
        .collect()
}

async fn create_chunked(
    engine: &Engine,
    layout: ChunkLayout,
    length: Option<u64>,
    declared: Option<DeclaredDigest>,
) -> Upload {
    let mut new = NewUpload::new(Dialect::CHUNK);
    new.chunks = Some(layout);
    new.length = length;
    new.declared = declared;
    let (u, created) = engine.create(new).await.unwrap();
    assert!(created);
    u
}

async fn append(
    engine: &Engine,
    id: &UploadId,
    offset: usize,
    bytes: &[u8],
) -> Result<WriteOutcome, EngineError> {
    engine
        .write(
            id,
            WriteMode::Append {
                offset: offset as u64,
            },
            body(bytes),
        )
        .await
}

async fn write_at(
    engine: &Engine,
    id: &UploadId,
    start: usize,
    bytes: &[u8],
) -> Result<WriteOutcome, EngineError> {
    engine
        .write(
            id,
            WriteMode::At {
                start: start as u64,
                len: bytes.len() as u64,
            },
            body(bytes),
        )
        .await
}

async fn chunk(
    engine: &Engine,
    id: &UploadId,
    chunk_id: &str,
    bytes: &[u8],
) -> Result<WriteOutcome, EngineError> {
    engine.write_chunk(id, chunk_id, body(bytes)).await
}

fn read_all(blob: &dyn BlobRead) -> Vec<u8> {
    let mut out = vec![0u8; blob.len() as usize];
    let mut at = 0;
    while at < out.len() {
        let n = blob.read_at(&mut out[at..], at as u64).unwrap();
        assert!(n > 0, "blob ended at {at} of {}", out.len());
        at += n;
    }
    out
}

/// The published blob of a complete upload.
async fn read_complete(engine: &Engine, u: &Upload) -> Vec<u8> {
    let (blob, _) = engine.open_complete(u).await.unwrap();
    tokio::task::spawn_blocking(move || read_all(&*blob))
        .await
        .unwrap()
}

fn held(u: &Upload) -> Vec<Range<u64>> {
    u.held.iter().collect()
}

fn r(start: usize, end: usize) -> Range<u64> {
    start as u64..end as u64
}

/// The upload is complete, its published blob equals `src`, and its digest is the BLAKE3
/// of `src`.
async fn assert_complete_with(engine: &Engine, dir: &Path, id: &UploadId, src: &[u8]) -> Upload {
    let u = engine.get(id).await.unwrap();
    assert_eq!(u.state, UploadState::Complete, "upload is not complete");
    assert!(u.completed_at.is_some());
    assert_eq!(u.length, Some(src.len() as u64));
    assert!(u.held.is_complete(src.len() as u64));
    assert_eq!(u.content_alg, HashAlg::Blake3);
    assert_eq!(
        u.content_digest.as_deref(),
        Some(blake3_hex(src).as_str()),
        "content digest is not the BLAKE3 of the content"
    );
    let content = read_complete(engine, &u).await;
    assert!(content == src, "the published blob differs from the source");
    assert!(complete_path(dir, id).is_file());
    assert!(!partial_path(dir, id).exists(), "partial blob left behind");
    u
}

async fn wait_for(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Forwards to SQLite, counting the updates made each way, and with faults on demand.
#[derive(Default)]
struct Watched {
    inner: Option<SqliteMetaStore>,
    /// Fail the first `update` that marks an upload complete: the process "dies" between
    /// publishing the blob and committing completion.
    fail_completion: AtomicBool,
    /// Whether `update_here` forwards (SQLite can) or declines (a database server).
    here: bool,
    /// Make the next `update_here` find the record changed, as if another node wrote it.
    stale_here: AtomicBool,
    updates: AtomicU64,
    updates_here: AtomicU64,
}

impl Watched {
    fn new(inner: SqliteMetaStore) -> Self {
        Watched {
            inner: Some(inner),
            ..Watched::default()
        }
    }

    fn inner(&self) -> &SqliteMetaStore {
        self.inner.as_ref().expect("a store to forward to")
    }
}

#[async_trait]
impl MetaStore for Watched {
    async fn insert(&self, upload: &Upload) -> Result<(), MetaError> {
        self.inner().insert(upload).await
    }
    async fn get(&self, id: &UploadId) -> Result<Option<Upload>, MetaError> {
        self.inner().get(id).await
    }
    async fn get_by_key(&self, key: &str) -> Result<Option<Upload>, MetaError> {
        self.inner().get_by_key(key).await
    }
    async fn update(&self, upload: &Upload) -> Result<(), MetaError> {
        self.updates.fetch_add(1, Ordering::SeqCst);
        if upload.state == UploadState::Complete
            && self.fail_completion.swap(false, Ordering::SeqCst)
        {
            return Err(MetaError::Backend(
                "injected: crashed before the completion commit".into(),
            ));
        }
        self.inner().update(upload).await
    }
    fn update_here(&self, upload: &Upload) -> Option<Result<(), MetaError>> {
        if !self.here {
            return None;
        }
        self.updates_here.fetch_add(1, Ordering::SeqCst);
        if self.stale_here.swap(false, Ordering::SeqCst) {
            return Some(Err(MetaError::Stale));
        }
        self.inner().update_here(upload)
    }
    async fn delete(&self, id: &UploadId) -> Result<(), MetaError> {
        self.inner().delete(id).await
    }
    async fn list_stale(&self, before: Timestamp) -> Result<Vec<UploadId>, MetaError> {
        self.inner().list_stale(before).await
    }
    async fn list_incomplete(&self) -> Result<Vec<UploadId>, MetaError> {
        self.inner().list_incomplete().await
    }
    async fn usage(&self, owner: Option<&str>) -> Result<ferry_core::store::Usage, MetaError> {
        self.inner().usage(owner).await
    }
    async fn list_owned(
        &self,
        owner: Option<&str>,
        after: Option<(Timestamp, UploadId)>,
        limit: usize,
    ) -> Result<Vec<Upload>, MetaError> {
        self.inner().list_owned(owner, after, limit).await
    }
    async fn ping(&self) -> Result<(), MetaError> {
        self.inner().ping().await
    }
}

/// Forwards to the filesystem store, but fails the first `place_staged` before copying
/// anything: the process "dies" after the commit that made a staged chunk's offset known and
/// before the chunk was placed.
struct FailPlacementOnce {
    inner: FsBlobStore,
    armed: AtomicBool,
}

#[async_trait]
impl BlobStore for FailPlacementOnce {
    async fn create(&self, id: &UploadId) -> io::Result<()> {
        self.inner.create(id).await
    }
    async fn writer(&self, id: &UploadId) -> io::Result<Box<dyn BlobWrite>> {
        self.inner.writer(id).await
    }
    async fn staging_writer(&self, id: &UploadId, index: usize) -> io::Result<Box<dyn BlobWrite>> {
        self.inner.staging_writer(id, index).await
    }
    async fn place_staged(
        &self,
        id: &UploadId,
        index: usize,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        if self.armed.swap(false, Ordering::SeqCst) {
            return Err(io::Error::other(
                "injected: crashed before placing the chunk",
            ));
        }
        self.inner.place_staged(id, index, offset, len).await
    }
    async fn remove_staged(&self, id: &UploadId, index: usize) -> io::Result<()> {
        self.inner.remove_staged(id, index).await
    }
    async fn copy_complete(
        &self,
        src: &UploadId,
        dst: &UploadId,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        self.inner.copy_complete(src, dst, offset, len).await
    }
    fn can_concatenate(&self) -> bool {
        self.inner.can_concatenate()
    }
    async fn publish(&self, id: &UploadId) -> io::Result<()> {
        self.inner.publish(id).await
    }
    async fn open(&self, id: &UploadId, kind: BlobKind) -> io::Result<Arc<dyn BlobRead>> {
        self.inner.open(id, kind).await
    }
    async fn modified(&self, id: &UploadId) -> io::Result<SystemTime> {
        self.inner.modified(id).await
    }
    async fn delete(&self, id: &UploadId) -> io::Result<()> {
        self.inner.delete(id).await
    }
    async fn ping(&self) -> io::Result<()> {
        self.inner.ping().await
    }
}

// ---------------------------------------------------------------------------------------
// Completion, raw writes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn appends_complete_exactly_when_the_last_byte_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    // Crosses the engine's 1 MiB batch boundary inside one request.
    let src = data(MIB + 500 * KIB + 123, 1);
    let len = src.len();
    let u = create_offset(&engine, Some(len as u64)).await;
    let cuts = [0, 100 * KIB + 7, 1200 * KIB, len - 1, len];
    for w in cuts.windows(2) {
        let (from, to) = (w[0], w[1]);
        let out = append(&engine, &u.id, from, &src[from..to]).await.unwrap();
        assert_eq!(out.accepted, (to - from) as u64);
        assert_eq!(out.upload.offset(), to as u64);
        let last = to == len;
        assert_eq!(out.upload.is_complete(), last, "after writing up to {to}");
        let stored = engine.get(&u.id).await.unwrap();
        assert_eq!(stored.is_complete(), last);
        assert_eq!(stored.offset(), to as u64);
        if !last {
            assert!(stored.content_digest.is_none());
            assert!(matches!(
                engine.open_complete(&stored).await,
                Err(EngineError::NotFound)
            ));
            assert!(!complete_path(dir.path(), &u.id).exists());
        }
    }
    let done = assert_complete_with(&engine, dir.path(), &u.id, &src).await;
    assert_eq!(
        done.etag(),
        Some(format!("\"blake3-{}\"", blake3_hex(&src))),
        "the ETag derives from the content digest"
    );
    assert_eq!(engine.stats().rehashed_bytes.load(Ordering::Relaxed), 0);
    assert_eq!(
        engine
            .stats()
            .dialect(Dialect::OFFSET)
            .completed
            .load(Ordering::Relaxed),
        1
    );
    assert!(matches!(
        append(&engine, &u.id, len, b"x").await,
        Err(EngineError::AlreadyComplete)
    ));
}

#[tokio::test]
async fn a_declared_digest_sets_the_content_algorithm_and_etag() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let src = data(300 * KIB, 2);
    let mut new = NewUpload::new(Dialect::OFFSET);
    new.length = Some(src.len() as u64);
    new.declared = Some(DeclaredDigest {
        alg: HashAlg::Md5,
        hex: md5_hex(&src),
    });
    let (u, _) = engine.create(new).await.unwrap();
    assert_eq!(u.content_alg, HashAlg::Md5);
    let out = append(&engine, &u.id, 0, &src).await.unwrap();
    assert!(out.upload.is_complete());
    assert_eq!(out.upload.content_digest, Some(md5_hex(&src)));
    assert_eq!(
        out.upload.etag(),
        Some(format!("\"md5-{}\"", md5_hex(&src)))
    );
    assert!(read_complete(&engine, &out.upload).await == src);
}

#[tokio::test]
async fn a_zero_length_upload_is_complete_when_created() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let u = create_offset(&engine, Some(0)).await;
    assert!(u.is_complete());
    assert_complete_with(&engine, dir.path(), &u.id, &[]).await;
}

#[tokio::test]
async fn out_of_order_and_overlapping_at_writes_complete_with_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let src = data(MIB + 333, 3);
    let len = src.len();
    let u = create_offset(&engine, Some(len as u64)).await;
    // (start, end, newly accepted bytes)
    let plan = [
        (600 * KIB, 900 * KIB, 300 * KIB),
        (0, 300 * KIB, 300 * KIB),
        // Re-sends parts of both held ranges around the gap.
        (200 * KIB, 700 * KIB, 300 * KIB),
        // Entirely held already.
        (100 * KIB, 800 * KIB, 0),
        (850 * KIB, len, len - 900 * KIB),
    ];
    for (i, &(start, end, accepted)) in plan.iter().enumerate() {
        let out = write_at(&engine, &u.id, start, &src[start..end])
            .await
            .unwrap();
        assert_eq!(out.accepted, accepted as u64, "write {i} ({start}..{end})");
        assert_eq!(out.upload.is_complete(), i == plan.len() - 1, "write {i}");
    }
    assert_complete_with(&engine, dir.path(), &u.id, &src).await;
}

#[tokio::test]
async fn an_at_write_never_rewrites_bytes_already_held() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let src = data(200 * KIB, 4);
    let len = src.len();
    let u = create_offset(&engine, Some(len as u64)).await;
    write_at(&engine, &u.id, 0, &src[..100 * KIB])
        .await
        .unwrap();

    // 50K..150K: the held half carries different bytes, the new half the real ones.
    let mut resend = data(50 * KIB, 99);
    resend.extend_from_slice(&src[100 * KIB..150 * KIB]);
    let out = write_at(&engine, &u.id, 50 * KIB, &resend).await.unwrap();
    assert_eq!(out.accepted, 50 * KIB as u64);
    assert_eq!(held(&out.upload), vec![r(0, 150 * KIB)]);
    let partial = std::fs::read(partial_path(dir.path(), &u.id)).unwrap();
    assert!(
        partial[..150 * KIB] == src[..150 * KIB],
        "held bytes were overwritten by a re-sent range"
    );

    write_at(&engine, &u.id, 150 * KIB, &src[150 * KIB..])
        .await
        .unwrap();
    assert_complete_with(&engine, dir.path(), &u.id, &src).await;
}

#[tokio::test]
async fn append_at_a_wrong_offset_is_offset_mismatch_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let src = data(100 * KIB, 5);
    let u = create_offset(&engine, Some(src.len() as u64)).await;
    assert!(matches!(
        append(&engine, &u.id, 7, &src[7..20]).await,
        Err(EngineError::OffsetMismatch { held: 0, got: 7 })
    ));
    append(&engine, &u.id, 0, &src[..40 * KIB]).await.unwrap();
    let before = engine.get(&u.id).await.unwrap();
    for got in [0, 30 * KIB, 50 * KIB] {
        match append(&engine, &u.id, got, &data(10 * KIB, 77)).await {
            Err(EngineError::OffsetMismatch { held, got: g }) => {
                assert_eq!(held, 40 * KIB as u64);
                assert_eq!(g, got as u64);
            }
            other => panic!("append at {got}: expected OffsetMismatch, got {other:?}"),
        }
    }
    assert_eq!(
        engine.get(&u.id).await.unwrap(),
        before,
        "the record changed"
    );
    let partial = std::fs::read(partial_path(dir.path(), &u.id)).unwrap();
    assert!(partial == src[..40 * KIB], "the partial blob changed");
    append(&engine, &u.id, 40 * KIB, &src[40 * KIB..])
        .await
        .unwrap();
    assert_complete_with(&engine, dir.path(), &u.id, &src).await;
}

#[tokio::test]
async fn writes_past_the_declared_length_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let src = data(100 * KIB, 6);
    let len = src.len();
    let u = create_offset(&engine, Some(len as u64)).await;

    // A range past the end is refused before a byte is stored.
    match write_at(&engine, &u.id, 90 * KIB, &data(20 * KIB, 60)).await {
        Err(EngineError::PastLength { length, end }) => {
            assert_eq!(length, len as u64);
            assert_eq!(end, 110 * KIB as u64);
        }
        other => panic!("expected PastLength, got {other:?}"),
    }
    let after = engine.get(&u.id).await.unwrap();
    assert!(after.held.is_empty());
    assert_eq!(
        std::fs::metadata(partial_path(dir.path(), &u.id))
            .unwrap()
            .len(),
        0
    );

    // An append whose body runs past the end: refused, and nothing past the end is stored.
    let mut long = src.clone();
    long.extend_from_slice(&data(10 * KIB, 61));
    match append(&engine, &u.id, 0, &long).await {
        Err(EngineError::PastLength { length, .. }) => assert_eq!(length, len as u64),
        other => panic!("expected PastLength, got {other:?}"),
    }
    let after = engine.get(&u.id).await.unwrap();
    assert!(
        held(&after).iter().all(|h| h.end <= len as u64),
        "held past the length: {:?}",
        held(&after)
    );
    for path in [
        partial_path(dir.path(), &u.id),
        complete_path(dir.path(), &u.id),
    ] {
        if let Ok(m) = std::fs::metadata(&path) {
            assert!(
                m.len() <= len as u64,
                "{} grew past the length",
                path.display()
            );
        }
    }
    if after.is_complete() {
        assert_complete_with(&engine, dir.path(), &u.id, &src).await;
    } else {
        let partial = std::fs::read(partial_path(dir.path(), &u.id)).unwrap();
        for h in held(&after) {
            let h = h.start as usize..h.end as usize;
            assert!(
                partial[h.clone()] == src[h],
                "held bytes differ from the source"
            );
        }
    }
}

#[tokio::test]
async fn an_at_body_longer_than_its_range_stores_nothing_outside_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let src = data(100 * KIB, 62);
    let len = src.len();
    let u = create_offset(&engine, Some(len as u64)).await;
    // A Content-Range of 10K..30K whose (chunked, unsized) body carries 25K bytes.
    let (start, range_len) = (10 * KIB, 20 * KIB);
    let res = engine
        .write(
            &u.id,
            WriteMode::At {
                start: start as u64,
                len: range_len as u64,
            },
            body(&src[start..start + 25 * KIB]),
        )
        .await;
    let after = engine.get(&u.id).await.unwrap();
    assert!(
        held(&after)
            .iter()
            .all(|h| h.start >= start as u64 && h.end <= (start + range_len) as u64),
        "held outside the range: {:?}",
        held(&after)
    );
    let partial = std::fs::read(partial_path(dir.path(), &u.id)).unwrap();
    assert!(
        partial.len() <= start + range_len,
        "bytes past the range were written"
    );
    // Checked last: the bytes are right, only the error is not.
    match &res {
        Err(EngineError::PastLength { length, end }) => assert!(
            end > length,
            "PastLength {{ length: {length}, end: {end} }} reports a write ending inside the \
             declared length: {}",
            res.as_ref().unwrap_err()
        ),
        Err(_) => {}
        Ok(out) => panic!("a body longer than its range was accepted: {out:?}"),
    }
}

#[tokio::test]
async fn set_length_conflicts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let src = data(30 * KIB, 7);
    let u = create_offset(&engine, None).await;
    append(&engine, &u.id, 0, &src[..10 * KIB]).await.unwrap();

    // Shorter than what is held already.
    assert!(matches!(
        engine.set_length(&u.id, 5 * KIB as u64).await,
        Err(EngineError::Invalid(_))
    ));
    assert_eq!(engine.get(&u.id).await.unwrap().length, None);
    // Above the server's limit.
    assert!(matches!(
        engine.set_length(&u.id, MAX_UPLOAD + 1).await,
        Err(EngineError::TooLarge { .. })
    ));

    let set = engine.set_length(&u.id, 30 * KIB as u64).await.unwrap();
    assert_eq!(set.length, Some(30 * KIB as u64));
    // The same length again is a no-op; another one is a conflict.
    let again = engine.set_length(&u.id, 30 * KIB as u64).await.unwrap();
    assert_eq!(again, engine.get(&u.id).await.unwrap());
    match engine.set_length(&u.id, 40 * KIB as u64).await {
        Err(EngineError::LengthMismatch { known, given }) => {
            assert_eq!((known, given), (30 * KIB as u64, 40 * KIB as u64));
        }
        other => panic!("expected LengthMismatch, got {other:?}"),
    }
    assert_eq!(
        engine.get(&u.id).await.unwrap().length,
        Some(30 * KIB as u64)
    );

    // A length given at creation conflicts the same way.
    let fixed = create_offset(&engine, Some(1000)).await;
    assert!(matches!(
        engine.set_length(&fixed.id, 999).await,
        Err(EngineError::LengthMismatch {
            known: 1000,
            given: 999
        })
    ));

    append(&engine, &u.id, 10 * KIB, &src[10 * KIB..])
        .await
        .unwrap();
    assert_complete_with(&engine, dir.path(), &u.id, &src).await;
}

#[tokio::test]
async fn declaring_the_length_of_bytes_already_held_completes_the_upload() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let src = data(50 * KIB, 8);
    let u = create_offset(&engine, None).await;
    let out = append(&engine, &u.id, 0, &src).await.unwrap();
    assert!(!out.upload.is_complete());
    let done = engine.set_length(&u.id, src.len() as u64).await.unwrap();
    assert!(done.is_complete());
    assert_complete_with(&engine, dir.path(), &u.id, &src).await;
}

#[tokio::test]
async fn a_cut_off_body_keeps_exactly_the_bytes_that_arrived() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let src = data(2 * MIB, 9);
    let len = src.len();
    let u = create_offset(&engine, Some(len as u64)).await;

    // Append cut after 1.25 MiB (more than one engine batch).
    let cut = MIB + 256 * KIB;
    let res = engine
        .write(
            &u.id,
            WriteMode::Append { offset: 0 },
            cut_body(&src[..cut]),
        )
        .await;
    match res {
        Err(EngineError::BodyInterrupted { received, .. }) => assert_eq!(received, cut as u64),
        other => panic!("expected BodyInterrupted, got {other:?}"),
    }
    let stored = engine.get(&u.id).await.unwrap();
    assert_eq!(stored.offset(), cut as u64);
    assert_eq!(held(&stored), vec![r(0, cut)]);
    assert_eq!(
        stored.hash_progress.as_ref().map(|p| p.position),
        Some(cut as u64),
        "the hasher state of the bytes that arrived is committed with them"
    );
    let partial = std::fs::read(partial_path(dir.path(), &u.id)).unwrap();
    assert!(partial[..cut] == src[..cut]);

    // A cut-off At write keeps its prefix too.
    let (start, arrived) = (cut + 200 * KIB, 60 * KIB);
    let res = engine
        .write(
            &u.id,
            WriteMode::At {
                start: start as u64,
                len: 100 * KIB as u64,
            },
            cut_body(&src[start..start + arrived]),
        )
        .await;
    assert!(
        matches!(res, Err(EngineError::BodyInterrupted { received, .. }) if received == arrived as u64),
        "{res:?}"
    );
    let stored = engine.get(&u.id).await.unwrap();
    assert_eq!(held(&stored), vec![r(0, cut), r(start, start + arrived)]);

    // The client resumes from the reported offset.
    append(&engine, &u.id, cut, &src[cut..]).await.unwrap();
    assert_complete_with(&engine, dir.path(), &u.id, &src).await;
    // The bytes of the cut-off append were hashed as they landed; only what the resumed
    // append wrote around the held island is read back.
    let rehashed = engine.stats().rehashed_bytes.load(Ordering::Relaxed);
    assert!(
        rehashed <= (len - cut) as u64,
        "the cut-off prefix was re-read ({rehashed} bytes rehashed)"
    );
}

// ---------------------------------------------------------------------------------------
// Durable hasher progress
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn hasher_progress_survives_a_restart_without_rereading_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let src = data(8 * MIB + 512 * KIB, 10);
    let len = src.len();
    let half = len / 2;
    let id = {
        let engine = open_engine(dir.path());
        let u = create_offset(&engine, Some(len as u64)).await;
        append(&engine, &u.id, 0, &src[..half / 3]).await.unwrap();
        let out = append(&engine, &u.id, half / 3, &src[half / 3..half])
            .await
            .unwrap();
        let progress = out.upload.hash_progress.expect("hasher progress recorded");
        assert_eq!(progress.position, half as u64);
        assert_eq!(engine.stats().rehashed_bytes.load(Ordering::Relaxed), 0);
        u.id
    };
    // Restart: new stores, new engine, same directories.
    let engine = open_engine(dir.path());
    let stored = engine.get(&id).await.unwrap();
    assert_eq!(stored.offset(), half as u64);
    assert_eq!(
        stored.hash_progress.as_ref().map(|p| p.position),
        Some(half as u64)
    );
    let out = append(&engine, &id, half, &src[half..]).await.unwrap();
    assert!(out.upload.is_complete());
    // A BLAKE3 state resumes at its last saved 1 MiB subtree, at most 2 MiB early: those
    // bytes are read back, the 4 MiB before them are not.
    let rehashed = engine.stats().rehashed_bytes.load(Ordering::Relaxed);
    assert!(
        rehashed <= 2 * MIB as u64,
        "completion after a restart re-read the prefix ({rehashed} bytes)"
    );
    assert_complete_with(&engine, dir.path(), &id, &src).await;
}

#[tokio::test]
async fn out_of_order_bytes_are_caught_up_and_the_digest_stays_right() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let third = 300 * KIB;
    let src = data(3 * third + 17, 11);
    let len = src.len();
    let u = create_offset(&engine, Some(len as u64)).await;

    // The middle first: nothing to hash yet (no prefix).
    write_at(&engine, &u.id, third, &src[third..2 * third])
        .await
        .unwrap();
    assert_eq!(engine.stats().rehashed_bytes.load(Ordering::Relaxed), 0);
    // The first third streams through the hasher; the middle is then read back.
    write_at(&engine, &u.id, 0, &src[..third]).await.unwrap();
    let (e, id) = (engine.clone(), u.id.clone());
    wait_for("the catch-up pass", async || {
        e.get(&id)
            .await
            .unwrap()
            .hash_progress
            .is_some_and(|p| p.position == 2 * third as u64)
    })
    .await;
    assert_eq!(
        engine.stats().rehashed_bytes.load(Ordering::Relaxed),
        third as u64
    );
    // The rest lands where the hasher stands. It streams through the hasher unless the
    // catch-up task still holds the hasher slot (it releases it just after its commit, and
    // claiming the hasher never waits), in which case completion reads the rest back; the
    // first third, which streamed, is never read back either way.
    let out = write_at(&engine, &u.id, 2 * third, &src[2 * third..])
        .await
        .unwrap();
    assert!(out.upload.is_complete());
    let rehashed = engine.stats().rehashed_bytes.load(Ordering::Relaxed);
    assert!(
        rehashed == third as u64 || rehashed == (len - third) as u64,
        "{rehashed} bytes rehashed"
    );
    assert_complete_with(&engine, dir.path(), &u.id, &src).await;
}

#[tokio::test]
async fn reverse_order_arrival_rehashes_at_completion_and_the_digest_stays_right() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let part = 200 * KIB;
    let src = data(4 * part, 12);
    let u = create_offset(&engine, Some(src.len() as u64)).await;
    for i in (0..4).rev() {
        write_at(&engine, &u.id, i * part, &src[i * part..(i + 1) * part])
            .await
            .unwrap();
    }
    assert!(engine.stats().rehashed_bytes.load(Ordering::Relaxed) > 0);
    assert_complete_with(&engine, dir.path(), &u.id, &src).await;
}

// ---------------------------------------------------------------------------------------
// Chunk uploads
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn chunks_with_md5_ids_complete_in_any_order() {
    for suffix in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let engine = open_engine(dir.path());
        let cs = 256 * KIB;
        let src = data(4 * cs + 5, 13);
        let ids = chunk_ids(&src, cs, suffix);
        let u = create_chunked(
            &engine,
            md5_layout(ids.clone(), Some(cs as u64)),
            Some(src.len() as u64),
            None,
        )
        .await;
        let order = [2, 0, 4, 1, 3];
        for (n, &i) in order.iter().enumerate() {
            let bytes = &src[i * cs..((i + 1) * cs).min(src.len())];
            let out = chunk(&engine, &u.id, &ids[i], bytes).await.unwrap();
            assert_eq!(out.accepted, bytes.len() as u64);
            assert_eq!(out.upload.is_complete(), n == order.len() - 1);
        }
        // A chunk sent again after completion: the upload is done.
        assert!(matches!(
            chunk(&engine, &u.id, &ids[0], &src[..cs]).await,
            Err(EngineError::AlreadyComplete)
        ));
        assert_complete_with(&engine, dir.path(), &u.id, &src).await;
    }
}

#[tokio::test]
async fn a_chunk_whose_digest_differs_from_its_id_is_refused_and_nothing_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let cs = 64 * KIB;
    let src = data(3 * cs + 8 * KIB, 14);
    let ids = chunk_ids(&src, cs, true);
    let u = create_chunked(
        &engine,
        md5_layout(ids.clone(), Some(cs as u64)),
        Some(src.len() as u64),
        None,
    )
    .await;
    let before = engine.get(&u.id).await.unwrap();

    // Chunk 0's id with chunk 1's bytes (it would feed the whole-file hasher).
    match chunk(&engine, &u.id, &ids[0], &src[cs..2 * cs]).await {
        Err(EngineError::ChunkDigestMismatch { expected, actual }) => {
            assert_eq!(expected, md5_hex(&src[..cs]));
            assert_eq!(actual, md5_hex(&src[cs..2 * cs]));
        }
        other => panic!("expected ChunkDigestMismatch, got {other:?}"),
    }
    // Chunk 2 with one flipped byte.
    let mut bad = src[2 * cs..3 * cs].to_vec();
    bad[1234] ^= 0x40;
    assert!(matches!(
        chunk(&engine, &u.id, &ids[2], &bad).await,
        Err(EngineError::ChunkDigestMismatch { .. })
    ));
    let after = engine.get(&u.id).await.unwrap();
    assert!(after.held.is_empty());
    assert_eq!(after, before, "a refused chunk changed the record");

    for (i, id) in ids.iter().enumerate() {
        chunk(
            &engine,
            &u.id,
            id,
            &src[i * cs..((i + 1) * cs).min(src.len())],
        )
        .await
        .unwrap();
    }
    assert_complete_with(&engine, dir.path(), &u.id, &src).await;
}

#[tokio::test]
async fn a_chunk_of_the_wrong_length_is_chunk_size_and_nothing_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let cs = 64 * KIB;
    let src = data(3 * cs + 8 * KIB, 15);
    let short = &src[cs..cs + 60 * KIB];
    let long = &src[2 * cs..2 * cs + 70 * KIB];
    let long_last = data(8 * KIB + 2, 16);
    // A client whose ids describe bytes that do not fit the declared layout.
    let ids = vec![
        md5_hex(&src[..cs]),
        md5_hex(short),
        md5_hex(long),
        md5_hex(&long_last),
    ];
    let u = create_chunked(
        &engine,
        md5_layout(ids.clone(), Some(cs as u64)),
        Some(src.len() as u64),
        None,
    )
    .await;
    let before = engine.get(&u.id).await.unwrap();
    for (i, bytes) in [(1, short), (2, long), (3, &long_last[..])] {
        let res = chunk(&engine, &u.id, &ids[i], bytes).await;
        assert!(
            matches!(res, Err(EngineError::ChunkSize(_))),
            "chunk {i}: {res:?}"
        );
    }
    assert_eq!(engine.get(&u.id).await.unwrap(), before);
    // The one chunk that fits is accepted.
    let out = chunk(&engine, &u.id, &ids[0], &src[..cs]).await.unwrap();
    assert_eq!(held(&out.upload), vec![r(0, cs)]);
}

#[tokio::test]
async fn a_cut_off_chunk_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let cs = 128 * KIB;
    let src = data(2 * cs + 3, 17);
    let ids = chunk_ids(&src, cs, false);
    let u = create_chunked(
        &engine,
        md5_layout(ids.clone(), Some(cs as u64)),
        Some(src.len() as u64),
        None,
    )
    .await;
    let before = engine.get(&u.id).await.unwrap();
    let res = engine
        .write_chunk(&u.id, &ids[0], cut_body(&src[..cs / 2]))
        .await;
    assert!(
        matches!(res, Err(EngineError::BodyInterrupted { received, .. }) if received == cs as u64 / 2),
        "{res:?}"
    );
    assert_eq!(engine.get(&u.id).await.unwrap(), before);
    for (i, id) in ids.iter().enumerate() {
        chunk(
            &engine,
            &u.id,
            id,
            &src[i * cs..((i + 1) * cs).min(src.len())],
        )
        .await
        .unwrap();
    }
    assert_complete_with(&engine, dir.path(), &u.id, &src).await;
}

#[tokio::test]
async fn the_last_chunk_first_without_a_chunk_size_is_staged_then_placed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let cs = 100 * KIB;
    let src = data(3 * cs + 37 * KIB, 18);
    let len = src.len();
    let ids = chunk_ids(&src, cs, true);
    // A handshake without size and chunkSize.
    let u = create_chunked(&engine, md5_layout(ids.clone(), None), None, None).await;

    let out = chunk(&engine, &u.id, &ids[3], &src[3 * cs..])
        .await
        .unwrap();
    assert_eq!(out.accepted, 37 * KIB as u64);
    let layout = out.upload.chunks.clone().unwrap();
    assert_eq!(
        layout.staged,
        BTreeMap::from([(3, 37 * KIB as u64)]),
        "the last chunk is staged"
    );
    assert!(out.upload.held.is_empty());
    assert_eq!(out.upload.length, None);
    assert!(staging_path(dir.path(), &u.id, 3).is_file());

    // Chunk 0 fixes the chunk size, so the staged chunk's offset is known and it is placed.
    let out = chunk(&engine, &u.id, &ids[0], &src[..cs]).await.unwrap();
    let stored = engine.get(&u.id).await.unwrap();
    assert_eq!(out.upload, stored);
    assert_eq!(stored.length, Some(len as u64));
    assert_eq!(stored.chunks.as_ref().unwrap().chunk_size, Some(cs as u64));
    assert!(stored.chunks.as_ref().unwrap().staged.is_empty());
    assert_eq!(held(&stored), vec![r(0, cs), r(3 * cs, len)]);
    assert!(staging_entries(dir.path(), &u.id).is_empty());

    chunk(&engine, &u.id, &ids[2], &src[2 * cs..3 * cs])
        .await
        .unwrap();
    let out = chunk(&engine, &u.id, &ids[1], &src[cs..2 * cs])
        .await
        .unwrap();
    assert!(out.upload.is_complete());
    assert_complete_with(&engine, dir.path(), &u.id, &src).await;
}

#[tokio::test]
async fn a_middle_chunk_before_chunk_zero_fixes_the_layout_of_a_staged_last_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let cs = 100 * KIB;
    let src = data(3 * cs + 37 * KIB, 19);
    let len = src.len();
    let ids = chunk_ids(&src, cs, false);
    let u = create_chunked(&engine, md5_layout(ids.clone(), None), None, None).await;

    chunk(&engine, &u.id, &ids[3], &src[3 * cs..])
        .await
        .unwrap();
    // Chunk 1 is staged too, and its size fixes the chunk size and so the total length:
    // both staged chunks can be placed.
    let out = chunk(&engine, &u.id, &ids[1], &src[cs..2 * cs])
        .await
        .unwrap();
    let stored = engine.get(&u.id).await.unwrap();
    assert_eq!(out.upload, stored);
    assert_eq!(stored.length, Some(len as u64));
    assert!(stored.chunks.as_ref().unwrap().staged.is_empty());
    assert_eq!(held(&stored), vec![r(cs, 2 * cs), r(3 * cs, len)]);
    assert!(staging_entries(dir.path(), &u.id).is_empty());

    chunk(&engine, &u.id, &ids[0], &src[..cs]).await.unwrap();
    chunk(&engine, &u.id, &ids[2], &src[2 * cs..3 * cs])
        .await
        .unwrap();
    assert_complete_with(&engine, dir.path(), &u.id, &src).await;
}

#[tokio::test]
async fn a_declared_file_digest_mismatch_discards_the_upload() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let cs = 64 * KIB;
    let src = data(2 * cs + 100, 20);
    let ids = chunk_ids(&src, cs, true);
    let wrong = md5_hex(b"some other file");
    let u = create_chunked(
        &engine,
        md5_layout(ids.clone(), Some(cs as u64)),
        Some(src.len() as u64),
        Some(DeclaredDigest {
            alg: HashAlg::Md5,
            hex: wrong.clone(),
        }),
    )
    .await;
    chunk(&engine, &u.id, &ids[0], &src[..cs]).await.unwrap();
    chunk(&engine, &u.id, &ids[1], &src[cs..2 * cs])
        .await
        .unwrap();
    match chunk(&engine, &u.id, &ids[2], &src[2 * cs..]).await {
        Err(EngineError::FileDigestMismatch { expected, actual }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, md5_hex(&src));
        }
        other => panic!("expected FileDigestMismatch, got {other:?}"),
    }
    assert!(matches!(
        engine.get(&u.id).await,
        Err(EngineError::NotFound)
    ));
    assert!(!partial_path(dir.path(), &u.id).exists());
    assert!(!complete_path(dir.path(), &u.id).exists());
    assert!(staging_entries(dir.path(), &u.id).is_empty());
    assert_eq!(
        engine
            .stats()
            .dialect(Dialect::CHUNK)
            .failed
            .load(Ordering::Relaxed),
        1
    );
    assert_eq!(
        engine
            .stats()
            .dialect(Dialect::CHUNK)
            .completed
            .load(Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn one_upload_of_a_duplicate_chunk_id_fills_every_position() {
    // With the layout declared, and with the chunk size learnt from the duplicate itself.
    for declared in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let engine = open_engine(dir.path());
        let cs = 64 * KIB;
        let (a, b, c) = (data(cs, 21), data(cs, 22), data(10 * KIB, 23));
        let src: Vec<u8> = [&a[..], &b[..], &a[..], &a[..], &c[..]].concat();
        let len = src.len();
        let ids = vec![
            md5_hex(&a),
            md5_hex(&b),
            md5_hex(&a),
            md5_hex(&a),
            md5_hex(&c),
        ];
        let (chunk_size, length) = if declared {
            (Some(cs as u64), Some(len as u64))
        } else {
            (None, None)
        };
        let u = create_chunked(&engine, md5_layout(ids.clone(), chunk_size), length, None).await;

        let out = chunk(&engine, &u.id, &ids[0], &a).await.unwrap();
        if declared {
            assert_eq!(out.accepted, 3 * cs as u64);
        }
        let stored = engine.get(&u.id).await.unwrap();
        assert_eq!(
            held(&stored),
            vec![r(0, cs), r(2 * cs, 4 * cs)],
            "declared layout: {declared}"
        );
        // Sending the id again has nothing left to write.
        let again = chunk(&engine, &u.id, &ids[2], &a).await.unwrap();
        assert_eq!(again.accepted, 0);

        chunk(&engine, &u.id, &ids[4], &c).await.unwrap();
        let out = chunk(&engine, &u.id, &ids[1], &b).await.unwrap();
        assert!(out.upload.is_complete(), "declared layout: {declared}");
        assert_complete_with(&engine, dir.path(), &u.id, &src).await;
    }
}

/// A chunked upload whose whole file is declared by its MD5 (the seeds' `fileId`), with
/// `n` chunks of `cs` bytes and the chunk size known.
async fn create_md5_file(engine: &Engine, src: &[u8], cs: usize) -> (Upload, Vec<String>) {
    let ids = chunk_ids(src, cs, true);
    let declared = DeclaredDigest {
        alg: HashAlg::Md5,
        hex: md5_hex(src),
    };
    let layout = md5_layout(ids.clone(), Some(cs as u64));
    let u = create_chunked(engine, layout, Some(src.len() as u64), Some(declared)).await;
    (u, ids)
}

fn assert_md5_file(u: &Upload, src: &[u8]) {
    assert!(u.is_complete());
    assert_eq!(u.content_alg, HashAlg::Md5);
    assert_eq!(u.content_digest.as_deref(), Some(md5_hex(src).as_str()));
}

type Piece = tokio::task::JoinHandle<Result<WriteOutcome, EngineError>>;

/// Two pieces of one upload in flight, the second finishing first: piece 0 (`src[..size]`)
/// gets all but its last 64 KiB, piece 1 (`src[size..2 * size]`) all of its own; then piece
/// 0's last bytes come in slowly, and piece 1 must not be answered meanwhile (it waits for
/// the whole-file hasher while the bytes ahead of it keep coming); then piece 0 ends and
/// both must succeed. `start(i)` starts piece `i` on a channel body.
async fn second_piece_finishes_first(
    engine: &Engine,
    dialect: Dialect,
    start: impl Fn(usize) -> (mpsc::UnboundedSender<Frame>, Piece),
    src: &[u8],
    size: usize,
) {
    let (tx0, t0) = start(0);
    let nearly = size - 64 * KIB;
    for f in frames(&src[..nearly], 16 * KIB) {
        tx0.send(f).unwrap();
    }
    // Piece 0 must be under way (its range reserved) before piece 1 ends: on a busy
    // machine a task spawned first can still start last, and piece 1 would then rightly
    // find nobody writing the bytes ahead of it and hash alone.
    wait_for("piece 0 to take its frames", async || {
        engine
            .stats()
            .dialect(dialect)
            .bytes_received
            .load(Ordering::Relaxed)
            >= nearly as u64
    })
    .await;
    let (tx1, t1) = start(1);
    for f in frames(&src[size..2 * size], 16 * KIB) {
        tx1.send(f).unwrap();
    }
    drop(tx1);
    for f in frames(&src[nearly..size], 16 * KIB) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !t1.is_finished(),
            "piece 1 answered while piece 0 was still arriving"
        );
        tx0.send(f).unwrap();
    }
    drop(tx0);
    t0.await.unwrap().unwrap();
    t1.await.unwrap().unwrap();
}

/// Chunks sent in file order but finishing out of it (the next one's body ends first): the
/// later chunk waits for the whole-file hasher instead of hashing alone, so both digests
/// come from one pass and nothing is read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chunks_finishing_just_out_of_order_hash_the_file_without_reading_back() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let cs = 256 * KIB;
    let src = data(4 * cs - 1000, 61);
    let (u, ids) = create_md5_file(&engine, &src, cs).await;
    let start = |i: usize| {
        let (engine, id, chunk_id) = (engine.clone(), u.id.clone(), ids[i].clone());
        let (tx, body) = channel_body();
        let task = tokio::spawn(async move { engine.write_chunk(&id, &chunk_id, body).await });
        (tx, task)
    };
    second_piece_finishes_first(&engine, Dialect::CHUNK, start, &src, cs).await;
    chunk(&engine, &u.id, &ids[2], &src[2 * cs..3 * cs])
        .await
        .unwrap();
    let out = chunk(&engine, &u.id, &ids[3], &src[3 * cs..])
        .await
        .unwrap();
    assert_md5_file(&out.upload, &src);
    assert_eq!(engine.stats().rehashed_bytes.load(Ordering::Relaxed), 0);
    assert!(read_complete(&engine, &out.upload).await == src);
}

/// The same for range writes (Content-Range, resumable.js): a range that finishes before the
/// one just ahead of it waits for the content hasher, and nothing is read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ranges_finishing_just_out_of_order_hash_the_file_without_reading_back() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let part = 512 * KIB;
    let src = data(3 * part, 64);
    let u = create_offset(&engine, Some(src.len() as u64)).await;
    let start = |i: usize| {
        let (engine, id) = (engine.clone(), u.id.clone());
        let (tx, body) = channel_body();
        let mode = WriteMode::At {
            start: (i * part) as u64,
            len: part as u64,
        };
        let task = tokio::spawn(async move { engine.write(&id, mode, body).await });
        (tx, task)
    };
    second_piece_finishes_first(&engine, Dialect::OFFSET, start, &src, part).await;
    write_at(&engine, &u.id, 2 * part, &src[2 * part..])
        .await
        .unwrap();
    assert_complete_with(&engine, dir.path(), &u.id, &src).await;
    assert_eq!(engine.stats().rehashed_bytes.load(Ordering::Relaxed), 0);
}

/// Chunks too large to keep in memory (over 16 MiB) are hashed as they stream; sent one after
/// the other, each streams at the hasher's place and feeds both digests, nothing read back.
#[tokio::test]
async fn large_chunks_in_order_hash_as_they_stream() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let cs = 17 * MIB;
    let src = data(2 * cs - 4321, 65);
    let (u, ids) = create_md5_file(&engine, &src, cs).await;
    chunk(&engine, &u.id, &ids[0], &src[..cs]).await.unwrap();
    let out = chunk(&engine, &u.id, &ids[1], &src[cs..]).await.unwrap();
    assert_md5_file(&out.upload, &src);
    assert_eq!(engine.stats().rehashed_bytes.load(Ordering::Relaxed), 0);
    assert!(read_complete(&engine, &out.upload).await == src);
}

/// A piece whose bytes have all arrived does not wait for a request ahead of it that has
/// most of its bytes still to come (a slow or stalled client): it is answered at once, and
/// the file digest reads its bytes back later.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_piece_does_not_wait_for_a_request_ahead_that_has_barely_started() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let cs = 256 * KIB;
    let src = data(2 * cs, 66);
    let (u, ids) = create_md5_file(&engine, &src, cs).await;
    let (tx0, body0) = channel_body();
    let t0 = {
        let (engine, id, chunk_id) = (engine.clone(), u.id.clone(), ids[0].clone());
        tokio::spawn(async move { engine.write_chunk(&id, &chunk_id, body0).await })
    };
    tx0.send(Ok(Bytes::copy_from_slice(&src[..16 * KIB])))
        .unwrap();
    wait_for("chunk 0 to start", async || {
        engine.get(&u.id).await.is_ok() && !t0.is_finished()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Chunk 1 arrives whole and is answered while chunk 0 has 240 KiB still to come.
    chunk(&engine, &u.id, &ids[1], &src[cs..]).await.unwrap();
    assert!(!t0.is_finished());
    for f in frames(&src[16 * KIB..cs], 16 * KIB) {
        tx0.send(f).unwrap();
    }
    drop(tx0);
    let out = t0.await.unwrap().unwrap();
    let u = if out.upload.is_complete() {
        out.upload
    } else {
        engine.get(&u.id).await.unwrap()
    };
    assert_md5_file(&u, &src);
    assert_eq!(
        engine.stats().rehashed_bytes.load(Ordering::Relaxed),
        cs as u64
    );
}

/// A chunk after a gap nobody is writing is hashed alone (waiting would gain nothing); the
/// file digest reads it back once the gap is filled, and comes out right.
#[tokio::test]
async fn a_chunk_after_a_gap_is_hashed_alone_and_read_back_later() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let cs = 128 * KIB;
    let src = data(3 * cs, 62);
    let (u, ids) = create_md5_file(&engine, &src, cs).await;
    chunk(&engine, &u.id, &ids[2], &src[2 * cs..])
        .await
        .unwrap();
    assert_eq!(engine.stats().rehashed_bytes.load(Ordering::Relaxed), 0);
    chunk(&engine, &u.id, &ids[0], &src[..cs]).await.unwrap();
    let out = chunk(&engine, &u.id, &ids[1], &src[cs..2 * cs])
        .await
        .unwrap();
    assert_md5_file(&out.upload, &src);
    assert_eq!(
        engine.stats().rehashed_bytes.load(Ordering::Relaxed),
        cs as u64
    );
}

/// A chunk whose bytes do not match its id stores nothing and leaves the whole-file hasher
/// where it stood, though both digests ran over its bytes together.
#[tokio::test]
async fn a_mismatching_chunk_leaves_the_file_hasher_where_it_stood() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let cs = 128 * KIB;
    let src = data(3 * cs, 63);
    let (u, ids) = create_md5_file(&engine, &src, cs).await;
    chunk(&engine, &u.id, &ids[0], &src[..cs]).await.unwrap();
    let mut wrong = src[cs..2 * cs].to_vec();
    wrong[1000] ^= 1;
    assert!(matches!(
        chunk(&engine, &u.id, &ids[1], &wrong).await,
        Err(EngineError::ChunkDigestMismatch { .. })
    ));
    assert_eq!(held(&engine.get(&u.id).await.unwrap()), vec![r(0, cs)]);
    chunk(&engine, &u.id, &ids[1], &src[cs..2 * cs])
        .await
        .unwrap();
    let out = chunk(&engine, &u.id, &ids[2], &src[2 * cs..])
        .await
        .unwrap();
    assert_md5_file(&out.upload, &src);
    assert_eq!(engine.stats().rehashed_bytes.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_chunks_without_a_chunk_size_complete() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let cs = 96 * KIB;
    let src = data(5 * cs + 1000, 24);
    let ids = chunk_ids(&src, cs, true);
    let u = create_chunked(&engine, md5_layout(ids.clone(), None), None, None).await;
    let tasks: Vec<_> = (0..ids.len())
        .rev()
        .map(|i| {
            let (engine, id, chunk_id) = (engine.clone(), u.id.clone(), ids[i].clone());
            let bytes = src[i * cs..((i + 1) * cs).min(src.len())].to_vec();
            tokio::spawn(async move {
                let body = slow_body(&bytes, 16 * KIB, Duration::from_millis(2));
                engine.write_chunk(&id, &chunk_id, body).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_complete_with(&engine, dir.path(), &u.id, &src).await;
}

// ---------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_at_the_same_offset_never_interleave() {
    for (round, stagger) in [(0u64, 0u64), (1, 30), (2, 5)] {
        let dir = tempfile::tempdir().unwrap();
        let engine = open_engine(dir.path());
        let part = 100 * KIB;
        let u = create_offset(&engine, Some(4 * part as u64)).await;
        let bodies = [data(part, 100 + round), data(part, 200 + round)];
        let mut tasks = Vec::new();
        for (n, bytes) in bodies.iter().enumerate() {
            if n == 1 {
                tokio::time::sleep(Duration::from_millis(stagger)).await;
            }
            let (engine, id) = (engine.clone(), u.id.clone());
            let body = slow_body(bytes, 10 * KIB, Duration::from_millis(10));
            tasks.push(tokio::spawn(async move {
                engine
                    .write(&id, WriteMode::Append { offset: 0 }, body)
                    .await
            }));
        }
        let mut winners = Vec::new();
        for (n, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(out) => {
                    assert_eq!(out.accepted, part as u64);
                    winners.push(n);
                }
                Err(EngineError::OffsetMismatch { held, got: 0 }) => {
                    assert_eq!(held, part as u64)
                }
                Err(EngineError::Busy) => {}
                Err(e) => panic!("round {round}: writer {n} failed with {e:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one append wins");
        // The later append found the range taken and waited (or preempted, then waited):
        // /metrics counts it.
        assert!(
            engine.stats().lock_waits.load(Ordering::Relaxed) >= 1,
            "round {round}: the wait for the range was not counted"
        );
        let winner = &bodies[winners[0]];
        let stored = engine.get(&u.id).await.unwrap();
        assert_eq!(held(&stored), vec![r(0, part)], "round {round}");
        let partial = std::fs::read(partial_path(dir.path(), &u.id)).unwrap();
        assert!(
            &partial == winner,
            "round {round}: the partial blob mixes both bodies"
        );
        // The winner's upload continues normally.
        let mut src = winner.clone();
        src.extend_from_slice(&data(3 * part, 300 + round));
        append(&engine, &u.id, part, &src[part..]).await.unwrap();
        assert_complete_with(&engine, dir.path(), &u.id, &src).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_disjoint_at_writes_complete_with_identical_bytes() {
    for round in 0..2u64 {
        let dir = tempfile::tempdir().unwrap();
        let engine = open_engine(dir.path());
        let part = 256 * KIB;
        let src = data(8 * part, 400 + round);
        let u = create_offset(&engine, Some(src.len() as u64)).await;
        let order: Vec<usize> = if round == 0 {
            (0..8).collect()
        } else {
            vec![5, 2, 7, 0, 3, 6, 1, 4]
        };
        let tasks: Vec<_> = order
            .iter()
            .map(|&i| {
                let (engine, id) = (engine.clone(), u.id.clone());
                let bytes = src[i * part..(i + 1) * part].to_vec();
                tokio::spawn(async move {
                    let body = slow_body(&bytes, 32 * KIB, Duration::from_millis(2));
                    engine
                        .write(
                            &id,
                            WriteMode::At {
                                start: (i * part) as u64,
                                len: part as u64,
                            },
                            body,
                        )
                        .await
                })
            })
            .collect();
        let mut accepted = 0;
        let mut completions = 0;
        for t in tasks {
            let out = t.await.unwrap().unwrap();
            accepted += out.accepted;
            completions += usize::from(out.upload.is_complete());
        }
        assert_eq!(accepted, src.len() as u64);
        assert_eq!(completions, 1, "round {round}: exactly one write completes");
        assert_complete_with(&engine, dir.path(), &u.id, &src).await;
    }
}

// ---------------------------------------------------------------------------------------
// Recovery, expiry, deletion
// ---------------------------------------------------------------------------------------

/// Counts the pre-create questions, answering each after a pause (long enough for a second
/// creation of the same key to arrive meanwhile).
#[derive(Default)]
struct CountPreCreate(AtomicU64);

#[async_trait]
impl ferry_core::hooks::Hooks for CountPreCreate {
    fn wants(&self, kind: ferry_core::hooks::EventKind) -> bool {
        kind == ferry_core::hooks::EventKind::PreCreate
    }
    async fn pre_create(
        &self,
        _: &Upload,
    ) -> Result<Option<ferry_core::hooks::MetadataChanges>, ferry_core::hooks::HookError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(None)
    }
    async fn pre_finish(&self, _: &Upload) -> Result<(), ferry_core::hooks::HookError> {
        Ok(())
    }
    async fn notify(&self, _: ferry_core::hooks::EventKind, _: &Upload) {}
}

/// Two creations of one key at once (racing first chunks of one resumable.js file) make one
/// upload and ask the pre-create hook once; another key is not held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creations_of_one_key_ask_the_pre_create_hook_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let hooks = Arc::new(CountPreCreate::default());
    assert!(engine.set_hooks(hooks.clone()));
    let keyed = |key: &str| {
        let mut new = NewUpload::new(Dialect::OFFSET);
        new.key = Some(key.to_owned());
        new.length = Some(10);
        new
    };
    let (a, b, other) = tokio::join!(
        engine.create(keyed("resumable:one")),
        engine.create(keyed("resumable:one")),
        engine.create(keyed("resumable:two")),
    );
    let ((a, a_new), (b, b_new), (other, _)) = (a.unwrap(), b.unwrap(), other.unwrap());
    assert_eq!(a.id, b.id, "one key, two uploads");
    assert!(a_new != b_new, "exactly one of the two created it");
    assert_ne!(other.id, a.id);
    assert_eq!(
        hooks.0.load(Ordering::SeqCst),
        2,
        "the hook was asked once per key"
    );
}

/// Creations of one tenant take turns through the limit check and the insert: six at once
/// against a limit of two incomplete uploads make exactly two, and another tenant's are not
/// counted against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_creations_at_once_stay_within_its_limit() {
    use ferry_core::tenant::{Actor, TenantLimits};
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let actor = |name: &str| Actor {
        tenant: Some(name.to_owned()),
        limits: TenantLimits {
            max_incomplete_uploads: Some(2),
            ..TenantLimits::default()
        },
    };
    let (alice, bob) = (actor("alice"), actor("bob"));
    async fn create(engine: &Engine, who: &Actor) -> Result<(Upload, bool), EngineError> {
        let mut new = NewUpload::new(Dialect::OFFSET);
        new.length = Some(10);
        engine.scoped(who).create(new).await
    }
    let results = futures_util::future::join_all(
        (0..6)
            .map(|_| create(&engine, &alice))
            .chain((0..2).map(|_| create(&engine, &bob))),
    )
    .await;
    let (ok, refused): (Vec<_>, Vec<_>) = results[..6].iter().partition(|r| r.is_ok());
    assert_eq!(ok.len(), 2, "{results:?}");
    assert!(
        refused
            .iter()
            .all(|r| matches!(r, Err(EngineError::TooManyIncomplete { max: 2 }))),
        "{results:?}"
    );
    assert!(results[6..].iter().all(Result::is_ok), "{results:?}");
}

/// A write's commit is made by the blocking task that synced its last bytes, when the
/// metadata store can update from there; otherwise, and when the record changed since the
/// write read it, the write commits as before. Either way the upload holds exactly the
/// bytes written, and its record moves one version per write.
#[tokio::test]
async fn a_write_commits_where_its_last_bytes_were_synced_or_else_as_before() {
    for (here, stale) in [(true, false), (true, true), (false, false)] {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(Watched {
            here,
            stale_here: AtomicBool::new(stale),
            ..Watched::new(meta_at(dir.path()))
        });
        let engine = engine_on(dir.path(), meta.clone());
        let src = data(3 * 256 * KIB, 70);
        let u = create_offset(&engine, Some(src.len() as u64)).await;
        let case = format!("update_here {here}, stale {stale}");
        let out = append(&engine, &u.id, 0, &src[..256 * KIB]).await.unwrap();
        assert_eq!(out.upload.offset(), 256 * KIB as u64, "{case}");
        assert_eq!(out.upload.version, u.version + 1, "{case}");
        let (updates, here_updates) = (
            meta.updates.load(Ordering::SeqCst),
            meta.updates_here.load(Ordering::SeqCst),
        );
        match (here, stale) {
            (true, false) => assert_eq!((updates, here_updates), (0, 1), "{case}"),
            (true, true) => assert_eq!((updates, here_updates), (1, 1), "{case}"),
            _ => assert_eq!((updates, here_updates), (1, 0), "{case}"),
        }
        // The stored record is the one the write answered with.
        let stored = meta.inner().get(&u.id).await.unwrap().unwrap();
        assert_eq!(stored, out.upload, "{case}");
        // A range write the same way, then the rest, which completes the upload.
        write_at(&engine, &u.id, 512 * KIB, &src[512 * KIB..])
            .await
            .unwrap();
        let out = append(&engine, &u.id, 256 * KIB, &src[256 * KIB..512 * KIB])
            .await
            .unwrap();
        assert!(out.upload.is_complete(), "{case}");
        assert_complete_with(&engine, dir.path(), &u.id, &src).await;
    }
}

/// All bytes held, but the completion commit failed (a crash right after publishing).
async fn recover_after_a_failed_completion_commit(in_order: bool) {
    let dir = tempfile::tempdir().unwrap();
    let src = data(5 * MIB + 11, 25 + u64::from(in_order));
    let len = src.len();
    let half = len / 2;
    let (id, other) = {
        let meta = Arc::new(Watched {
            fail_completion: AtomicBool::new(true),
            ..Watched::new(meta_at(dir.path()))
        });
        let engine = engine_on(dir.path(), meta.clone());
        let u = create_offset(&engine, Some(len as u64)).await;
        // An unfinished upload that recovery must leave alone.
        let other = create_offset(&engine, Some(1000)).await;
        append(&engine, &other.id, 0, &[7; 100]).await.unwrap();

        let last = if in_order {
            append(&engine, &u.id, 0, &src[..half]).await.unwrap();
            append(&engine, &u.id, half, &src[half..]).await
        } else {
            write_at(&engine, &u.id, half, &src[half..]).await.unwrap();
            write_at(&engine, &u.id, 0, &src[..half]).await
        };
        assert!(
            matches!(last, Err(EngineError::Meta(MetaError::Backend(_)))),
            "{last:?}"
        );
        assert!(
            !meta.fail_completion.load(Ordering::SeqCst),
            "the fault never fired"
        );
        let stuck = engine.get(&u.id).await.unwrap();
        assert_eq!(stuck.state, UploadState::Receiving);
        assert!(stuck.held.is_complete(len as u64));
        (u.id, other.id)
    };

    // Restart on the same directories.
    let engine = open_engine(dir.path());
    assert_eq!(engine.recover().await.unwrap(), 1);
    let done = assert_complete_with(&engine, dir.path(), &id, &src).await;
    assert_eq!(
        done.etag(),
        Some(format!("\"blake3-{}\"", blake3_hex(&src)))
    );
    if in_order {
        // The committed state covered every byte but the last (at most 2 MiB) that a BLAKE3
        // state cannot hold (see `Hasher::durable_position`).
        let rehashed = engine.stats().rehashed_bytes.load(Ordering::Relaxed);
        assert!(
            rehashed <= 2 * MIB as u64,
            "recovery re-read {rehashed} bytes of a hashed prefix"
        );
    }
    let other = engine.get(&other).await.unwrap();
    assert!(!other.is_complete());
    assert_eq!(other.offset(), 100);
    // Recovery is idempotent.
    assert_eq!(engine.recover().await.unwrap(), 0);
}

#[tokio::test]
async fn recover_completes_an_in_order_upload_whose_completion_commit_failed() {
    recover_after_a_failed_completion_commit(true).await;
}

#[tokio::test]
async fn recover_completes_an_out_of_order_upload_whose_completion_commit_failed() {
    recover_after_a_failed_completion_commit(false).await;
}

/// A two-chunk upload whose last chunk was staged, then chunk 0 committed (fixing the
/// layout), and the process "died" before the staged chunk was placed: the record lists
/// chunk 1 as staged at a known offset, its staging blob exists. Returns the source, the
/// chunk size and the upload id.
async fn staged_chunk_left_unplaced(dir: &Path, seed: u64) -> (Vec<u8>, usize, UploadId) {
    let cs = 64 * KIB;
    let src = data(cs + 10 * KIB, seed);
    let len = src.len();
    let ids = chunk_ids(&src, cs, true);
    let blobs = Arc::new(FailPlacementOnce {
        inner: FsBlobStore::open(dir.join("blobs")).unwrap(),
        armed: AtomicBool::new(true),
    });
    let engine = Engine::new(
        Meta(Arc::new(meta_at(dir))),
        Blobs(blobs.clone()),
        EngineConfig {
            max_upload_size: MAX_UPLOAD,
            ..Default::default()
        },
    );
    let u = create_chunked(&engine, md5_layout(ids.clone(), None), None, None).await;
    // The last chunk first: staged, its offset unknown.
    chunk(&engine, &u.id, &ids[1], &src[cs..]).await.unwrap();
    // Chunk 0 is committed (it fixes the layout); placing the staged chunk then fails.
    let res = chunk(&engine, &u.id, &ids[0], &src[..cs]).await;
    assert!(res.is_err(), "{res:?}");
    assert!(!blobs.armed.load(Ordering::SeqCst), "the fault never fired");
    let stuck = engine.get(&u.id).await.unwrap();
    assert_eq!(stuck.length, Some(len as u64));
    assert_eq!(held(&stuck), vec![r(0, cs)]);
    assert_eq!(
        stuck.chunks.as_ref().unwrap().staged,
        BTreeMap::from([(1, 10 * KIB as u64)])
    );
    assert!(staging_path(dir, &u.id, 1).is_file());
    (src, cs, u.id)
}

#[tokio::test]
async fn recover_places_a_staged_chunk_whose_offset_was_known_before_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (src, _, id) = staged_chunk_left_unplaced(dir.path(), 33).await;
    // Every byte is durable (held, or staged at a known offset): the chunk dialect's
    // handshake reports no chunk missing, so no client will send one again. Recovery must
    // finish the upload.
    let engine = open_engine(dir.path());
    let recovered = engine.recover().await.unwrap();
    let stored = engine.get(&id).await.unwrap();
    assert!(
        stored.is_complete(),
        "recover() returned {recovered} and left the upload incomplete: held {:?}, staged {:?}",
        held(&stored),
        stored.chunks.as_ref().map(|c| &c.staged)
    );
    assert_eq!(recovered, 1);
    assert_complete_with(&engine, dir.path(), &id, &src).await;
    assert!(staging_entries(dir.path(), &id).is_empty());
}

/// A data directory written by a version that removed the staging blob before committing
/// the placement: the record lists the chunk as staged, its staging blob is gone, and its
/// bytes are in the partial blob. Recovery verifies them against the chunk's digest and
/// keeps the chunk held.
#[tokio::test]
async fn recover_keeps_a_staged_chunk_whose_blob_is_gone_when_the_partial_holds_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (src, cs, id) = staged_chunk_left_unplaced(dir.path(), 35).await;
    {
        use std::os::unix::fs::FileExt;
        let partial = std::fs::OpenOptions::new()
            .write(true)
            .open(partial_path(dir.path(), &id))
            .unwrap();
        partial.write_all_at(&src[cs..], cs as u64).unwrap();
        partial.sync_all().unwrap();
    }
    std::fs::remove_file(staging_path(dir.path(), &id, 1)).unwrap();
    let engine = open_engine(dir.path());
    assert_eq!(engine.recover().await.unwrap(), 1);
    assert_complete_with(&engine, dir.path(), &id, &src).await;
}

/// The same, but the partial blob does not hold the chunk's bytes: the chunk is forgotten
/// (the handshake lists it again), never reported held with wrong bytes.
#[tokio::test]
async fn recover_forgets_a_staged_chunk_whose_blob_is_gone_and_whose_bytes_are_not_placed() {
    let dir = tempfile::tempdir().unwrap();
    let (src, cs, id) = staged_chunk_left_unplaced(dir.path(), 36).await;
    std::fs::remove_file(staging_path(dir.path(), &id, 1)).unwrap();
    let engine = open_engine(dir.path());
    assert_eq!(engine.recover().await.unwrap(), 0);
    let stored = engine.get(&id).await.unwrap();
    assert!(!stored.is_complete());
    assert_eq!(held(&stored), vec![r(0, cs)]);
    assert!(stored.chunks.as_ref().unwrap().staged.is_empty());
    // The client sends it again and the upload completes.
    let ids = chunk_ids(&src, cs, true);
    chunk(&engine, &id, &ids[1], &src[cs..]).await.unwrap();
    assert_complete_with(&engine, dir.path(), &id, &src).await;
}

/// The start-up sweep removes blobs no record needs (an upload without a record, a staging
/// blob its record no longer lists) and nothing else.
#[tokio::test]
async fn recover_sweeps_blobs_without_a_record_and_keeps_every_recorded_one() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let kept = create_offset(&engine, Some(100)).await;
    append(&engine, &kept.id, 0, &[1; 40]).await.unwrap();
    let cs = 32 * KIB;
    let staged_src = data(2 * cs + 5, 37);
    let staged_ids = chunk_ids(&staged_src, cs, true);
    let staged = create_chunked(&engine, md5_layout(staged_ids.clone(), None), None, None).await;
    chunk(&engine, &staged.id, &staged_ids[2], &staged_src[2 * cs..])
        .await
        .unwrap();
    // Leftovers of crashes: bytes of an upload that was never recorded (or was forgotten),
    // and a staging blob of a recorded upload that no longer lists it.
    let orphan = UploadId::generate();
    std::fs::write(partial_path(dir.path(), &orphan), b"orphan").unwrap();
    std::fs::write(staging_path(dir.path(), &orphan, 0), b"orphan").unwrap();
    std::fs::write(complete_path(dir.path(), &orphan), b"orphan").unwrap();
    std::fs::write(staging_path(dir.path(), &kept.id, 3), b"stale").unwrap();
    drop(engine);

    let engine = open_engine(dir.path());
    assert_eq!(engine.recover().await.unwrap(), 0);
    assert!(!partial_path(dir.path(), &orphan).exists());
    assert!(!complete_path(dir.path(), &orphan).exists());
    assert!(staging_entries(dir.path(), &orphan).is_empty());
    assert!(staging_entries(dir.path(), &kept.id).is_empty());
    // Recorded blobs stay: the partial of the byte-offset upload, and the staged chunk.
    assert!(partial_path(dir.path(), &kept.id).is_file());
    assert!(staging_path(dir.path(), &staged.id, 2).is_file());
    assert_eq!(engine.get(&kept.id).await.unwrap().offset(), 40);
}

#[tokio::test]
async fn retrying_a_chunk_whose_staged_neighbour_was_not_placed_finishes_the_upload() {
    let dir = tempfile::tempdir().unwrap();
    let cs = 64 * KIB;
    let src = data(cs + 10 * KIB, 34);
    let ids = chunk_ids(&src, cs, true);
    let blobs = Arc::new(FailPlacementOnce {
        inner: FsBlobStore::open(dir.path().join("blobs")).unwrap(),
        armed: AtomicBool::new(true),
    });
    let engine = Engine::new(
        Meta(Arc::new(meta_at(dir.path()))),
        Blobs(blobs.clone()),
        EngineConfig {
            max_upload_size: MAX_UPLOAD,
            ..Default::default()
        },
    );
    let u = create_chunked(&engine, md5_layout(ids.clone(), None), None, None).await;
    chunk(&engine, &u.id, &ids[1], &src[cs..]).await.unwrap();
    // Chunk 0 is committed, then placing the staged last chunk fails (a transient disk
    // error): the client sees an error for chunk 0 and sends it again.
    assert!(chunk(&engine, &u.id, &ids[0], &src[..cs]).await.is_err());
    let out = chunk(&engine, &u.id, &ids[0], &src[..cs]).await.unwrap();
    let stored = engine.get(&u.id).await.unwrap();
    assert!(
        out.upload.is_complete() && stored.is_complete(),
        "the retry answered success but left the upload incomplete: held {:?}, staged {:?}",
        held(&stored),
        stored.chunks.as_ref().map(|c| &c.staged)
    );
    assert_complete_with(&engine, dir.path(), &u.id, &src).await;
}

#[tokio::test]
async fn expire_removes_idle_incomplete_uploads_and_keeps_complete_ones() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let cs = 32 * KIB;
    let idle = create_offset(&engine, Some(100 * KIB as u64)).await;
    append(&engine, &idle.id, 0, &data(10 * KIB, 26))
        .await
        .unwrap();
    // An idle chunk upload with a staged chunk: its staging blob goes too.
    let staged_src = data(2 * cs + 5, 27);
    let staged_ids = chunk_ids(&staged_src, cs, true);
    let staged = create_chunked(&engine, md5_layout(staged_ids.clone(), None), None, None).await;
    chunk(&engine, &staged.id, &staged_ids[2], &staged_src[2 * cs..])
        .await
        .unwrap();
    assert!(staging_path(dir.path(), &staged.id, 2).is_file());
    let src = data(20 * KIB, 28);
    let done = create_offset(&engine, Some(src.len() as u64)).await;
    append(&engine, &done.id, 0, &src).await.unwrap();

    tokio::time::sleep(Duration::from_millis(150)).await;
    let fresh = create_offset(&engine, Some(100)).await;

    assert_eq!(engine.expire(Duration::from_millis(100)).await.unwrap(), 2);
    for id in [&idle.id, &staged.id] {
        assert!(matches!(engine.get(id).await, Err(EngineError::NotFound)));
        assert!(!partial_path(dir.path(), id).exists());
        assert!(staging_entries(dir.path(), id).is_empty());
        assert!(engine.meta().get(id).await.unwrap().is_none());
    }
    assert_complete_with(&engine, dir.path(), &done.id, &src).await;
    let fresh = engine.get(&fresh.id).await.unwrap();
    assert!(!fresh.is_complete());
    assert!(partial_path(dir.path(), &fresh.id).is_file());
    assert_eq!(
        engine
            .stats()
            .dialect(Dialect::OFFSET)
            .failed
            .load(Ordering::Relaxed),
        1
    );
    assert_eq!(
        engine
            .stats()
            .dialect(Dialect::CHUNK)
            .failed
            .load(Ordering::Relaxed),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_spares_an_upload_with_a_write_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());
    let src = data(100 * KIB, 29);
    let u = create_offset(&engine, Some(src.len() as u64)).await;
    append(&engine, &u.id, 0, &src[..10 * KIB]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;

    let (tx, body) = channel_body();
    let (e, id) = (engine.clone(), u.id.clone());
    let writer = tokio::spawn(async move {
        e.write(
            &id,
            WriteMode::Append {
                offset: 10 * KIB as u64,
            },
            body,
        )
        .await
    });
    tx.send(Ok(Bytes::copy_from_slice(&src[10 * KIB..20 * KIB])))
        .unwrap();
    let e = engine.clone();
    wait_for("the write to start streaming", async || {
        e.stats()
            .dialect(Dialect::OFFSET)
            .bytes_received
            .load(Ordering::Relaxed)
            >= 20 * KIB as u64
    })
    .await;
    assert_eq!(engine.expire(Duration::from_millis(100)).await.unwrap(), 0);
    engine.get(&u.id).await.unwrap();

    for f in frames(&src[20 * KIB..], 16 * KIB) {
        tx.send(f).unwrap();
    }
    drop(tx);
    let out = writer.await.unwrap().unwrap();
    assert!(out.upload.is_complete());
    assert_complete_with(&engine, dir.path(), &u.id, &src).await;
}

#[tokio::test]
async fn delete_removes_bytes_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(dir.path());

    let partial = create_offset(&engine, Some(100 * KIB as u64)).await;
    append(&engine, &partial.id, 0, &data(30 * KIB, 30))
        .await
        .unwrap();
    assert!(partial_path(dir.path(), &partial.id).is_file());
    engine.delete(&partial.id).await.unwrap();
    assert!(matches!(
        engine.get(&partial.id).await,
        Err(EngineError::NotFound)
    ));
    assert!(engine.meta().get(&partial.id).await.unwrap().is_none());
    assert!(!partial_path(dir.path(), &partial.id).exists());
    assert!(matches!(
        engine.delete(&partial.id).await,
        Err(EngineError::NotFound)
    ));
    assert!(matches!(
        append(&engine, &partial.id, 30 * KIB, b"more").await,
        Err(EngineError::NotFound)
    ));

    let src = data(40 * KIB, 31);
    let done = create_offset(&engine, Some(src.len() as u64)).await;
    append(&engine, &done.id, 0, &src).await.unwrap();
    let record = assert_complete_with(&engine, dir.path(), &done.id, &src).await;
    engine.delete(&done.id).await.unwrap();
    assert!(matches!(
        engine.get(&done.id).await,
        Err(EngineError::NotFound)
    ));
    assert!(!complete_path(dir.path(), &done.id).exists());
    assert!(engine.open_complete(&record).await.is_err());

    let cs = 32 * KIB;
    let chunked_src = data(2 * cs + 9, 32);
    let ids = chunk_ids(&chunked_src, cs, false);
    let chunked = create_chunked(&engine, md5_layout(ids.clone(), None), None, None).await;
    chunk(&engine, &chunked.id, &ids[2], &chunked_src[2 * cs..])
        .await
        .unwrap();
    assert!(staging_path(dir.path(), &chunked.id, 2).is_file());
    engine.delete(&chunked.id).await.unwrap();
    assert!(staging_entries(dir.path(), &chunked.id).is_empty());
    assert!(!partial_path(dir.path(), &chunked.id).exists());
    assert!(engine.meta().get(&chunked.id).await.unwrap().is_none());
}
