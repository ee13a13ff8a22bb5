//! Storage traits: bytes ([`BlobStore`]) and metadata ([`MetaStore`]) are separate concerns,
//! each with a small required surface, so a backend for one never has to know the other.
//!
//! Both are used through cheap-clone handles ([`Blobs`], [`Meta`]) wrapping an `Arc<dyn _>`,
//! so the engine and the HTTP state stay non-generic.

use crate::parts::{BlobDelta, BlobState, PartLimits};
use crate::upload::{Timestamp, Upload, UploadId};
use async_trait::async_trait;
use bytes::Bytes;
use std::io;
use std::ops::Deref;
use std::sync::Arc;
use std::time::SystemTime;

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// `insert` found another upload with the same id or key.
    #[error("an upload with this key already exists")]
    Conflict,
    /// `update` found the record changed since it was read (another request, maybe on
    /// another node, updated it first): read it again and re-apply the change.
    #[error("the upload record changed since it was read")]
    Stale,
    #[error("metadata backend failed: {0}")]
    Backend(String),
    /// The backend cannot be reached right now (connection refused or lost, the server
    /// restarting): the same request may succeed in a few seconds.
    #[error("metadata backend unreachable: {0}")]
    Unavailable(String),
}

/// What one owner holds (for tenant limits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Uploads still receiving.
    pub incomplete: u64,
    /// Declared lengths of all uploads, finished or not (held bytes where no length is
    /// declared yet).
    pub stored_bytes: u64,
}

/// A figure a backend reports for `/metrics` (Prometheus text: `name value`).
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    pub value: f64,
}

/// Upload metadata persistence. Every write is durable (committed) when it returns.
#[async_trait]
pub trait MetaStore: Send + Sync + 'static {
    /// Inserts a new upload; [`MetaError::Conflict`] when its id or key exists already.
    async fn insert(&self, upload: &Upload) -> Result<(), MetaError>;
    async fn get(&self, id: &UploadId) -> Result<Option<Upload>, MetaError>;
    async fn get_by_key(&self, key: &str) -> Result<Option<Upload>, MetaError>;
    /// Replaces the stored record of `upload.id` if it is still at `upload.version`, and
    /// moves it to `upload.version + 1`; [`MetaError::Stale`] when another update came
    /// first; a no-op if the upload was deleted meanwhile. (Compare-and-set: the only way
    /// several nodes can share one database without losing each other's changes.)
    async fn update(&self, upload: &Upload) -> Result<(), MetaError>;
    /// [`MetaStore::update`] made on the calling thread, which must be one that may block
    /// (a blocking-pool thread that has just written and synced a request's last bytes):
    /// the commit then costs no thread hand-off of its own. `None` where an update is no
    /// local call (a database server), and by default: the caller then uses `update`.
    fn update_here(&self, upload: &Upload) -> Option<Result<(), MetaError>> {
        let _ = upload;
        None
    }
    async fn delete(&self, id: &UploadId) -> Result<(), MetaError>;
    /// Incomplete uploads not updated since `before`.
    async fn list_stale(&self, before: Timestamp) -> Result<Vec<UploadId>, MetaError>;
    /// Incomplete uploads, for recovery at start-up.
    async fn list_incomplete(&self) -> Result<Vec<UploadId>, MetaError>;
    /// What the uploads of `owner` (`None`: uploads without an owner) hold.
    async fn usage(&self, owner: Option<&str>) -> Result<Usage, MetaError>;
    /// Up to `limit` uploads of `owner` (`None`: uploads without an owner), finished or not,
    /// newest first: by `created_at` descending, ties by id descending. With `after`, only
    /// uploads strictly older than that `(created_at, id)` position, so the last upload of
    /// one page is the cursor of the next: pages neither repeat nor skip an upload that
    /// existed throughout, whatever is created or deleted in between.
    async fn list_owned(
        &self,
        owner: Option<&str>,
        after: Option<(Timestamp, UploadId)>,
        limit: usize,
    ) -> Result<Vec<Upload>, MetaError>;
    /// Answers when the backend is reachable (for `/healthz`).
    async fn ping(&self) -> Result<(), MetaError>;
    /// Figures for `/metrics` (a connection pool's, say); none by default.
    fn metrics(&self) -> Vec<Metric> {
        Vec::new()
    }
}

/// Blocking positional reads of a stored blob. Called from blocking threads.
pub trait BlobRead: Send + Sync + 'static {
    /// Length in bytes.
    fn len(&self) -> u64;
    /// Positional read; returns bytes read, 0 at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes `offset..offset + len` as shared read-only memory, when the backend can map
    /// them and they can never change under the mapping (a complete blob). Downloads hand
    /// such windows to the socket: no read copy, no blocking-pool round trip per block.
    /// `None` (backends without it, partial blobs, a range past the end) means: read with
    /// [`BlobRead::read_at`].
    fn map(&self, offset: u64, len: usize) -> Option<Bytes> {
        let _ = (offset, len);
        None
    }
    /// Up to `len` bytes at `offset`, read at once without blocking because they are in
    /// memory already (the page cache): a download serves them on its own thread instead of
    /// a blocking-pool round trip per block. Returns at least one byte, or `None` (the
    /// default; nothing cached, or the backend cannot tell), which means: read with
    /// [`BlobRead::read_at`] on a blocking thread. Errors are `None` too: the blocking read
    /// reports them.
    fn read_cached(&self, offset: u64, len: usize) -> Option<Bytes> {
        let _ = (offset, len);
        None
    }
    /// Bytes `offset..offset + len` as an async stream, for stores read over the network:
    /// one ranged request streamed to the client, with no blocking read per block. `None`
    /// (the default) means: read with [`BlobRead::map`] or [`BlobRead::read_at`]. The stream
    /// must yield exactly `len` bytes or end with an error.
    fn stream(&self, offset: u64, len: u64) -> Option<ByteStream> {
        let _ = (offset, len);
        None
    }
    /// Whether [`BlobRead::stream`] answers (downloads then use it for every range).
    fn streams(&self) -> bool {
        false
    }
    /// When the blob was last modified, when opening it told (an object store's answer
    /// carries it): spares [`BlobStore::modified`] a request of its own.
    fn modified(&self) -> Option<SystemTime> {
        None
    }
}

/// A stream of a blob's bytes ([`BlobRead::stream`]).
pub type ByteStream = futures_util::stream::BoxStream<'static, io::Result<Bytes>>;

/// Blocking positional writes into an upload's partial blob. Called from blocking threads:
/// the engine moves a writer into `spawn_blocking` together with the hashing work.
pub trait BlobWrite: Send + 'static {
    /// Writes all of `bufs`, in order, starting at `offset`.
    fn write_at(&mut self, offset: u64, bufs: &[Bytes]) -> io::Result<()>;
    /// Makes everything written so far durable (fdatasync or equivalent).
    fn sync(&mut self) -> io::Result<()>;
    /// Reads back bytes already written (used to catch up the whole-file hasher). Only
    /// called when the store's [`Capabilities::positional`] says unfinished bytes can be read.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// What the bytes made durable by the last [`BlobWrite::sync`] added to the upload's
    /// [`BlobState`] (parts sent, pieces stored); the engine commits it with the ranges it
    /// acknowledges. Positional stores keep no such state.
    fn stored(&mut self) -> BlobDelta {
        BlobDelta::default()
    }
}

/// What a blob store can do, so the engine takes only paths the store supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Writes at any offset and of any size land in place, and unfinished bytes can be read
    /// back (a local file system). Without it the store is part-based ([`Capabilities::parts`]).
    pub positional: bool,
    /// The part rules of a part-based store.
    pub parts: Option<PartLimits>,
}

impl Capabilities {
    /// A local file system.
    pub const POSITIONAL: Capabilities = Capabilities {
        positional: true,
        parts: None,
    };
}

/// Where a blob lives: the partial object being written, a staging object for a chunk whose
/// offset is not known yet, or the finished file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobKind {
    Partial,
    Complete,
}

/// A blob found by [`BlobStore::list`]: the upload it belongs to, and for a staging blob
/// the chunk index it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    pub id: UploadId,
    pub staging: Option<usize>,
}

/// Upload bytes.
///
/// Layout is the backend's business; the contract is: a partial blob is written in place at
/// final offsets, [`BlobStore::publish`] turns it into the complete blob atomically (no copy
/// of the bytes), and staging blobs hold single chunks until their offset is known.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// What the engine may ask of this store.
    fn capabilities(&self) -> Capabilities {
        Capabilities::POSITIONAL
    }
    /// Creates the empty partial blob (idempotent).
    async fn create(&self, id: &UploadId) -> io::Result<()>;
    /// Creates the blobs of a new upload and returns the state to keep in its record (a
    /// part store's multipart upload and part plan). The engine calls this; the default
    /// is [`BlobStore::create`] and no state.
    async fn begin(&self, upload: &Upload) -> io::Result<Option<BlobState>> {
        self.create(&upload.id).await.map(|()| None)
    }
    /// Opens the partial blob for writing. A partial blob that does not exist (the upload
    /// was deleted meanwhile) is `NotFound`, here or at the writer's first use: a store may
    /// open lazily, on the blocking thread of the first write.
    async fn writer(&self, id: &UploadId) -> io::Result<Box<dyn BlobWrite>>;
    /// Opens the partial blob for a write planned from `upload` (read after the write's
    /// ranges were reserved), so a part store knows the parts and pieces already stored.
    /// The default is [`BlobStore::writer`].
    async fn writer_for(&self, upload: &Upload) -> io::Result<Box<dyn BlobWrite>> {
        self.writer(&upload.id).await
    }
    /// Opens a staging blob for one chunk (created empty, truncating an earlier attempt).
    async fn staging_writer(&self, id: &UploadId, index: usize) -> io::Result<Box<dyn BlobWrite>>;
    /// [`BlobStore::staging_writer`] for a write planned from `upload`.
    async fn staging_writer_for(
        &self,
        upload: &Upload,
        index: usize,
    ) -> io::Result<Box<dyn BlobWrite>> {
        self.staging_writer(&upload.id, index).await
    }
    /// Copies staging chunk `index` into the partial blob at `offset` (the kernel copies
    /// where it can) and makes it durable. The staging blob stays: the engine removes it with
    /// [`BlobStore::remove_staged`] only after the metadata stopped listing it, so a crash
    /// at any point leaves the chunk's bytes where the metadata says they are.
    async fn place_staged(
        &self,
        id: &UploadId,
        index: usize,
        offset: u64,
        len: u64,
    ) -> io::Result<()>;
    /// [`BlobStore::place_staged`] for a part store, which may place a staged chunk by
    /// recording where its piece belongs rather than copying it: returns what the commit
    /// that marks the chunk held must record. The default copies and records nothing.
    async fn place_staged_for(
        &self,
        upload: &Upload,
        index: usize,
        offset: u64,
        len: u64,
    ) -> io::Result<BlobDelta> {
        self.place_staged(&upload.id, index, offset, len)
            .await
            .map(|()| BlobDelta::default())
    }
    /// Composes the parts of a part store whose cells the recorded pieces now cover whole
    /// (several writes each filled part of a cell): returns the parts made and the pieces
    /// spent, for a commit. Positional stores have nothing to do.
    async fn settle(&self, upload: &Upload) -> io::Result<BlobDelta> {
        let _ = upload;
        Ok(BlobDelta::default())
    }
    /// Removes pieces that a commit stopped listing ([`BlobDelta::spent`]): their bytes are
    /// in a part now. Missing ones are fine; a failure leaves leftovers for the end of the
    /// upload. Positional stores have none.
    async fn drop_pieces(&self, keys: &[String]) -> io::Result<()> {
        let _ = keys;
        Ok(())
    }
    /// Removes staging chunk `index` (missing is fine). Need not be durable: a staging blob
    /// that comes back after a crash is a leftover that [`BlobStore::list`] lets the engine
    /// find and remove.
    async fn remove_staged(&self, id: &UploadId, index: usize) -> io::Result<()>;
    /// Gives back the space of `ranges` of the partial blob: bytes a refused request wrote
    /// that the metadata never acknowledged (a full disk, a checksum mismatch). The caller
    /// owns these ranges (its reservation), so nobody else writes them meanwhile. Best
    /// effort: backends that cannot free part of a blob do nothing.
    async fn discard(&self, id: &UploadId, ranges: Vec<std::ops::Range<u64>>) -> io::Result<()> {
        let _ = (id, ranges);
        Ok(())
    }
    /// Copies the first `len` bytes of complete blob `src` into the partial blob of `dst` at
    /// `offset`, durably (tus concatenation). The kernel copies where it can. Optional: a
    /// backend that cannot returns `Unsupported` and says so in [`BlobStore::can_concatenate`].
    async fn copy_complete(
        &self,
        _src: &UploadId,
        _dst: &UploadId,
        _offset: u64,
        _len: u64,
    ) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this storage backend cannot concatenate uploads",
        ))
    }
    /// [`BlobStore::copy_complete`] into the final upload `dst` (its record at hand): a part
    /// store may record the source object as a piece of `dst` instead of copying, and returns
    /// what `dst`'s record must say for [`BlobStore::publish_for`] to find it. The default
    /// copies and records nothing.
    async fn copy_complete_for(
        &self,
        src: &UploadId,
        dst: &Upload,
        offset: u64,
        len: u64,
    ) -> io::Result<BlobDelta> {
        self.copy_complete(src, &dst.id, offset, len)
            .await
            .map(|()| BlobDelta::default())
    }
    /// Whether [`BlobStore::copy_complete`] works; drives the advertised tus extensions.
    fn can_concatenate(&self) -> bool {
        false
    }
    /// Atomically turns the partial blob into the complete one, durably. Idempotent: calling
    /// it again after it succeeded (e.g. after a crash before the metadata commit) is fine.
    async fn publish(&self, id: &UploadId) -> io::Result<()>;
    /// [`BlobStore::publish`] of `upload` (all its bytes held), for stores that need the
    /// record: a part store completes the multipart upload with the recorded parts.
    async fn publish_for(&self, upload: &Upload) -> io::Result<()> {
        self.publish(&upload.id).await
    }
    /// Opens a blob for reading.
    async fn open(&self, id: &UploadId, kind: BlobKind) -> io::Result<Arc<dyn BlobRead>>;
    /// A URL from which a client may GET the complete blob directly for `ttl` (honouring
    /// `Range`), answering with `content_type` and `content_disposition` headers: a
    /// presigned URL of an object store. `None` (the default): downloads go through ferry.
    fn presign(
        &self,
        id: &UploadId,
        ttl: std::time::Duration,
        content_type: &str,
        content_disposition: &str,
    ) -> Option<String> {
        let _ = (id, ttl, content_type, content_disposition);
        None
    }
    /// Last modification time of the complete blob (for `Last-Modified`).
    async fn modified(&self, id: &UploadId) -> io::Result<SystemTime>;
    /// Removes every blob of the upload (missing ones are fine).
    async fn delete(&self, id: &UploadId) -> io::Result<()>;
    /// [`BlobStore::delete`] with the record at hand (a part store aborts the recorded
    /// multipart upload, which it may not be able to find by listing).
    async fn delete_for(&self, upload: &Upload) -> io::Result<()> {
        self.delete(&upload.id).await
    }
    /// Every blob the store holds, for the sweep at start-up that removes blobs no metadata
    /// record needs (left by a crash between creating a blob and recording it, or between
    /// forgetting an upload and removing its bytes). A backend that cannot list returns an
    /// empty list and keeps such leftovers.
    async fn list(&self) -> io::Result<Vec<StoredBlob>> {
        Ok(Vec::new())
    }
    /// Answers when the backend is usable (for `/healthz`).
    async fn ping(&self) -> io::Result<()>;
    /// Figures for `/metrics` (an object store's requests, errors, latency); none by default.
    fn metrics(&self) -> Vec<Metric> {
        Vec::new()
    }
    /// Bytes still free for new data, when the backend can tell (a local file system);
    /// `None` for stores without such a limit.
    fn free_space(&self) -> io::Result<Option<u64>> {
        Ok(None)
    }
}

/// Cheap-clone handle to the metadata store.
#[derive(Clone)]
pub struct Meta(pub Arc<dyn MetaStore>);

impl Deref for Meta {
    type Target = dyn MetaStore;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

/// Cheap-clone handle to the blob store.
#[derive(Clone)]
pub struct Blobs(pub Arc<dyn BlobStore>);

impl Deref for Blobs {
    type Target = dyn BlobStore;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}
