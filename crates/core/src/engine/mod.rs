//! The upload engine: one state machine, one durability rule and one integrity rule for every
//! protocol front.
//!
//! A write streams a request body into the upload's partial blob at its final offsets (never
//! buffering it whole), hashes it on the way, makes it durable (`fdatasync`) and only then
//! commits the new held ranges to the metadata store. A caller acknowledges a write only
//! after [`Engine::write`] or [`Engine::write_chunk`] returned, so an acknowledged byte is
//! always both on disk and recorded.
//!
//! Integrity: the whole-file digest is computed while bytes land in order; the hasher's
//! state is committed together with the ranges it covers, so a restart resumes hashing where
//! it stopped. Bytes that land out of order are hashed later by a catch-up pass that reads
//! them back (from the page cache, as they were just written), and completion hashes what is
//! still missing. A finished upload is published by an atomic rename: no merge copy.
//!
//! Architecture Invariant: nothing here knows about HTTP, SQL or S3.
//!
//! The engine is one type, [`Engine`], whose methods are spread over one file per concern:
//!
//! - `mod.rs`: configuration, the request and result types, construction, and the record
//!   operations that take no body (`create`, `set_length`, `set_layout`, `delete`, ...).
//! - `write`: the raw byte write path, streaming a body into the partial blob.
//! - `chunk`: the chunk dialect: planning a chunk's place, staging, verifying, learning the
//!   layout from the chunks themselves.
//! - `reserve`: reservations of byte ranges, leases across nodes, preemption of stale appends.
//! - `commit`: writing the record back under the commit lock.
//! - `hashing`: the whole-file hasher and its catch-up passes.
//! - `completion`: finishing, publishing and assembling (tus concatenation) uploads.
//! - `janitor`: expiry, start-up recovery and the sweep of unrecorded blobs.

mod chunk;
mod commit;
mod completion;
mod hashing;
mod janitor;
mod reserve;
mod write;

use crate::coord::Coordinator;
use crate::crash;
use crate::error::EngineError;
use crate::hash::HashAlg;
use crate::hooks::{EventKind, HookError, Hooks};
use crate::lock::{KeyedLocks, Locks};
use crate::store::{BlobKind, BlobRead, Blobs, Meta, MetaError};
pub use crate::tenant::{Actor, Scoped, TenantLimits};
use crate::upload::{
    ChunkLayout, Concat, DeclaredDigest, Dialect, Timestamp, Upload, UploadId, UploadState,
};
use chunk::check_layout_fits;
pub use chunk::verify_chunk;
use std::collections::BTreeMap;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// Block size of read-back hashing passes.
const READ_BLOCK: usize = 1 << 20;
/// Reservations for staging chunks live far above any real offset, so they never collide
/// with data ranges (uploads are capped well below this).
const STAGING_BASE: u64 = 1 << 62;
/// Largest upload the engine accepts at all, whatever the configuration says.
pub const MAX_SUPPORTED_SIZE: u64 = STAGING_BASE - 1;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Declared sizes above this are refused before any byte is stored.
    pub max_upload_size: u64,
    /// `--min-free-space`: below this many free bytes in the blob store, new uploads and
    /// writes answer "out of space" (507) before storing anything. 0: no reserve (a full
    /// disk still answers 507, when the write fails).
    pub min_free_space: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            min_free_space: 0,
            max_upload_size: 1 << 40,
        }
    }
}

/// Counters of one dialect, exported as metrics with its name as the `dialect` label.
#[derive(Default)]
pub struct DialectStats {
    pub bytes_received: AtomicU64,
    pub started: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
}

/// Counters the server exports as metrics.
#[derive(Default)]
pub struct Stats {
    /// Per dialect, in name order: the fronts' dialects are registered at start (so their
    /// counters show as 0 before any upload), any other appears with its first upload.
    dialects: std::sync::RwLock<BTreeMap<Dialect, Arc<DialectStats>>>,
    /// Bytes re-read to finish the whole-file digest (out-of-order arrival).
    pub rehashed_bytes: AtomicU64,
    /// Incomplete uploads this node removed for being idle (each is removed by one node).
    pub expired: AtomicU64,
    /// Writes that found their ranges taken (here or on another node) and waited.
    pub lock_waits: AtomicU64,
    /// Microseconds those writes waited, in all.
    pub lock_wait_us: AtomicU64,
}

impl Stats {
    /// The counters of `d`, made on first use.
    pub fn dialect(&self, d: Dialect) -> Arc<DialectStats> {
        if let Some(s) = self
            .dialects
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&d)
        {
            return s.clone();
        }
        self.dialects
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(d)
            .or_default()
            .clone()
    }

    /// Makes `d`'s counters exist (at 0), so they are exported before its first upload.
    pub fn register(&self, d: Dialect) {
        self.dialect(d);
    }

    /// Every dialect with counters, in name order.
    pub fn dialects(&self) -> Vec<(Dialect, Arc<DialectStats>)> {
        self.dialects
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(d, s)| (*d, s.clone()))
            .collect()
    }
}

/// How often a commit re-reads a record another node changed meanwhile before giving up
/// with [`EngineError::Busy`].
const STALE_RETRIES: u32 = 16;

/// What a front asks for when it creates an upload.
#[derive(Clone, Debug)]
pub struct NewUpload {
    /// Set by [`crate::tenant::Scoped::create`], never by a front.
    pub owner: Option<String>,
    pub key: Option<String>,
    pub dialect: Dialect,
    pub length: Option<u64>,
    pub declared: Option<DeclaredDigest>,
    pub file_name: Option<String>,
    pub ext: String,
    pub chunks: Option<ChunkLayout>,
    pub metadata: BTreeMap<String, String>,
    /// `Concat::Partial` for a tus partial upload; finals are created by [`Engine::create_final`].
    pub concat: Option<Concat>,
}

/// A digest the whole request body must have (tus `Upload-Checksum`). A checked write is all
/// or nothing: a mismatch or a cut-off body stores none of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyCheck {
    pub alg: HashAlg,
    pub digest: Vec<u8>,
}

impl NewUpload {
    pub fn new(dialect: Dialect) -> Self {
        Self {
            owner: None,
            key: None,
            dialect,
            length: None,
            declared: None,
            file_name: None,
            ext: String::new(),
            chunks: None,
            metadata: BTreeMap::new(),
            concat: None,
        }
    }
}

/// How a raw (non-chunk) write places its bytes.
#[derive(Clone, Copy, Debug)]
pub enum WriteMode {
    /// Append at `offset`, which must equal the held prefix (tus PATCH, `X-Start-Byte`).
    Append { offset: u64 },
    /// Write `len` bytes at `start` (a `Content-Range`); bytes already held are not rewritten.
    At { start: u64, len: u64 },
}

/// Result of a write that was made durable.
#[derive(Debug)]
pub struct WriteOutcome {
    pub upload: Upload,
    /// New bytes made durable by this request.
    pub accepted: u64,
}

struct Inner {
    meta: Meta,
    blobs: Blobs,
    locks: Locks,
    cfg: EngineConfig,
    stats: Stats,
    /// Tenants whose limits are being checked (see `quota_locks`).
    quota: KeyedLocks,
    /// Keys whose upload is being created (see `create`).
    creating: KeyedLocks,
    coord: Option<Arc<dyn Coordinator>>,
    /// `--hook-url`: who is told about (and asked before) uploads' events; unset, no hook
    /// call is made at all.
    hooks: OnceLock<Arc<dyn Hooks>>,
    /// Uploads whose completion waits for a pre-finish hook that could not be reached, with a
    /// retry scheduled ([`Engine::finish_later`]).
    finishing: Mutex<HashSet<UploadId>>,
    /// Bytes of bodies kept in memory until their hashing (see `hashing::KeptBytes`).
    kept_bytes: AtomicU64,
}

/// How long the engine keeps retrying a completion whose pre-finish hook could not be
/// reached, before leaving it to the next request, restart or expiry pass.
const FINISH_RETRY_FOR: Duration = Duration::from_secs(3600);

/// The upload engine; cheap to clone.
#[derive(Clone)]
pub struct Engine(Arc<Inner>);

impl Engine {
    pub fn new(meta: Meta, blobs: Blobs, cfg: EngineConfig) -> Self {
        Self::with_coordinator(meta, blobs, cfg, None)
    }

    /// An engine for one of several nodes sharing `meta` and `blobs`: writes also lease
    /// their ranges from `coord` ([`crate::coord`]).
    pub fn with_coordinator(
        meta: Meta,
        blobs: Blobs,
        mut cfg: EngineConfig,
        coord: Option<Arc<dyn Coordinator>>,
    ) -> Self {
        cfg.max_upload_size = cfg.max_upload_size.min(MAX_SUPPORTED_SIZE);
        Engine(Arc::new(Inner {
            meta,
            blobs,
            locks: Locks::default(),
            cfg,
            stats: Stats::default(),
            quota: KeyedLocks::default(),
            creating: KeyedLocks::default(),
            coord,
            hooks: OnceLock::new(),
            finishing: Mutex::new(HashSet::new()),
            kept_bytes: AtomicU64::new(0),
        }))
    }

    /// Installs the hooks ([`crate::hooks`]) every dialect's uploads report to; once, before
    /// requests are served. `false` when hooks were installed already.
    pub fn set_hooks(&self, hooks: Arc<dyn Hooks>) -> bool {
        self.0.hooks.set(hooks).is_ok()
    }

    /// The hooks, when installed and interested in `kind`.
    pub(crate) fn hooks_for(&self, kind: EventKind) -> Option<&Arc<dyn Hooks>> {
        self.0.hooks.get().filter(|h| h.wants(kind))
    }

    pub(crate) fn has_hooks(&self) -> bool {
        self.0.hooks.get().is_some()
    }

    /// Queues a non-blocking event (a no-op without hooks).
    pub(crate) async fn notify(&self, kind: EventKind, u: &Upload) {
        if let Some(h) = self.hooks_for(kind) {
            h.notify(kind, u).await;
        }
    }

    /// Asks the pre-finish hook (if any) whether `u`, every byte held and verified, may be
    /// published and marked complete.
    pub(crate) async fn pre_finish(&self, u: &Upload) -> Result<(), EngineError> {
        match self.hooks_for(EventKind::PreFinish) {
            Some(h) => h
                .pre_finish(u)
                .await
                .map_err(|e| hook_error(EventKind::PreFinish, e)),
            None => Ok(()),
        }
    }

    /// Retries, in the background with growing pauses, the completion of an upload whose
    /// pre-finish hook could not be reached (first after `first`). One retry loop per upload;
    /// after [`FINISH_RETRY_FOR`] the next request, a restart ([`Engine::recover`]) or the
    /// expiry pass finishes it.
    pub(crate) fn finish_later(&self, id: &UploadId, first: Duration) {
        if !self
            .0
            .finishing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone())
        {
            return;
        }
        let (engine, id) = (self.clone(), id.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut pause = first;
            loop {
                tokio::time::sleep(pause).await;
                match engine.finish(&id).await {
                    Err(EngineError::HookUnavailable { .. })
                        if started.elapsed() < FINISH_RETRY_FOR =>
                    {
                        pause = (pause * 2).clamp(Duration::from_secs(2), Duration::from_secs(300));
                    }
                    Err(EngineError::HookUnavailable { .. }) => {
                        tracing::warn!(%id, "the pre-finish hook stayed unreachable; the upload is finished by its next request, a restart or the expiry pass");
                        break;
                    }
                    Ok(_) => break,
                    Err(e) => {
                        tracing::info!(%id, error = %e, "completion retry ended");
                        break;
                    }
                }
            }
            engine
                .0
                .finishing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        });
    }

    /// Completes an upload whose bytes are all held: a final upload is assembled, any other
    /// finalized.
    pub(crate) async fn finish(&self, id: &UploadId) -> Result<Upload, EngineError> {
        let u = self.get(id).await?;
        if matches!(u.concat, Some(Concat::Final { .. })) {
            self.assemble(id).await
        } else {
            self.finalize(id).await
        }
    }

    /// Stops local appends other nodes ask to preempt (a client that gave up on a request
    /// hanging here and resumed there). Runs until the coordinator goes away.
    pub fn follow_preemptions(&self) {
        let Some(coord) = self.0.coord.clone() else {
            return;
        };
        let engine = self.clone();
        tokio::spawn(async move {
            let mut asks = coord.preemptions();
            loop {
                match asks.recv().await {
                    Ok(id) => engine.preempt_here(&id).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// One mutex per tenant, so that the limit check and the insert of a new upload are not
    /// interleaved with another creation of the same tenant on this node.
    pub(crate) fn quota_locks(&self) -> &KeyedLocks {
        &self.0.quota
    }

    /// The blob store's free bytes and the reserve it must keep (`--min-free-space`), when
    /// the store can tell.
    pub fn free_space(&self) -> Option<(u64, u64)> {
        match self.0.blobs.free_space() {
            Ok(Some(free)) => Some((free, self.0.cfg.min_free_space)),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %e, "free space unknown");
                None
            }
        }
    }

    /// Refuses new bytes while the store is below its reserve of free space.
    pub(crate) fn check_space(&self) -> Result<(), EngineError> {
        if self.0.cfg.min_free_space == 0 {
            return Ok(());
        }
        match self.free_space() {
            Some((free, reserve)) if free < reserve => Err(EngineError::OutOfSpace),
            _ => Ok(()),
        }
    }

    pub fn meta(&self) -> &Meta {
        &self.0.meta
    }

    pub fn blobs(&self) -> &Blobs {
        &self.0.blobs
    }

    pub fn stats(&self) -> &Stats {
        &self.0.stats
    }

    pub fn config(&self) -> &EngineConfig {
        &self.0.cfg
    }

    fn check_size(&self, size: u64) -> Result<(), EngineError> {
        let max = self.0.cfg.max_upload_size;
        if size > max {
            return Err(EngineError::TooLarge { size, max });
        }
        Ok(())
    }

    /// Creates an upload. When `key` names an existing upload, that one is returned instead
    /// (the boolean says whether it was created now).
    pub async fn create(&self, mut new: NewUpload) -> Result<(Upload, bool), EngineError> {
        if let Some(len) = new.length {
            self.check_size(len)?;
        }
        self.check_space()?;
        // Creations of one key take turns on this node (racing first chunks of one
        // resumable.js file, two handshakes of one file): one that waited for another then
        // finds that one's upload, instead of asking the pre-create hook about an upload
        // that would never exist. (Across nodes the insert's conflict still decides.)
        let creating = match &new.key {
            Some(key) => Some(self.0.creating.lock(key).await),
            None => None,
        };
        if let Some(c) = &creating
            && c.waited
            && let Some(existing) = self.0.meta.get_by_key(&c.key).await?
        {
            return Ok((existing, false));
        }
        let id = UploadId::generate();
        // The pre-create hook decides before anything is stored, on the record as it would
        // be (its id included).
        if let Some(h) = self.hooks_for(EventKind::PreCreate) {
            let draft = new_record(id.clone(), new.clone());
            match h.pre_create(&draft).await {
                Ok(Some(changes)) => crate::hooks::apply_metadata(&mut new, &changes),
                Ok(None) => {}
                Err(e) => return Err(hook_error(EventKind::PreCreate, e)),
            }
        }
        let mut upload = new_record(id, new);
        upload.blob = self.0.blobs.begin(&upload).await?;
        match self.0.meta.insert(&upload).await {
            Ok(()) => {}
            Err(MetaError::Conflict) => {
                self.0.blobs.delete(&upload.id).await?;
                let key = upload.key.as_deref().unwrap_or_default();
                return match self.0.meta.get_by_key(key).await? {
                    Some(existing) => Ok((existing, false)),
                    None => Err(EngineError::Meta(MetaError::Conflict)),
                };
            }
            Err(e) => {
                self.0.blobs.delete(&upload.id).await?;
                return Err(e.into());
            }
        }
        self.0
            .stats
            .dialect(upload.dialect)
            .started
            .fetch_add(1, Ordering::Relaxed);
        // Plain values only (JSON logs): a deferred length is left out rather than `None`.
        match upload.length {
            Some(length) => {
                tracing::info!(id = %upload.id, dialect = upload.dialect.name(), length, "upload created")
            }
            None => {
                tracing::info!(id = %upload.id, dialect = upload.dialect.name(), "upload created, length deferred")
            }
        }
        self.notify(EventKind::PostCreate, &upload).await;
        // A zero-length upload is complete the moment it exists.
        if upload.length == Some(0) {
            return Ok((self.finalize(&upload.id).await?, true));
        }
        Ok((upload, true))
    }

    pub async fn get(&self, id: &UploadId) -> Result<Upload, EngineError> {
        self.0.meta.get(id).await?.ok_or(EngineError::NotFound)
    }

    pub async fn find(&self, key: &str) -> Result<Option<Upload>, EngineError> {
        Ok(self.0.meta.get_by_key(key).await?)
    }

    /// Declares the total length of an upload created without one; re-declaring the same
    /// length is a no-op, a different one is refused.
    pub async fn set_length(&self, id: &UploadId, length: u64) -> Result<Upload, EngineError> {
        self.check_size(length)?;
        let lock = self.0.locks.entry(id);
        let upload = {
            let _c = lock.commit.lock().await;
            let mut u = self.get(id).await?;
            match u.length {
                Some(known) if known == length => return Ok(u),
                Some(known) => {
                    return Err(EngineError::LengthMismatch {
                        known,
                        given: length,
                    });
                }
                None => {}
            }
            let held_end = u.held.iter().last().map(|r| r.end).unwrap_or(0);
            if held_end > length {
                return Err(EngineError::Invalid(format!(
                    "the upload already holds bytes up to {held_end}, past the declared length {length}"
                )));
            }
            u.length = Some(length);
            u.updated_at = Timestamp::now();
            self.save(&mut u).await?;
            u
        };
        drop(lock);
        self.after_commit(upload).await
    }

    /// Replaces the chunk layout of a receiving upload (a client that handshakes again with a
    /// different chunking). Held bytes stay held: they are byte ranges, not chunks.
    pub async fn set_layout(
        &self,
        id: &UploadId,
        layout: ChunkLayout,
        length: Option<u64>,
    ) -> Result<Upload, EngineError> {
        let lock = self.0.locks.entry(id);
        let _c = lock.commit.lock().await;
        let mut u = self.get(id).await?;
        if u.is_complete() {
            return Ok(u);
        }
        if let (Some(known), Some(given)) = (u.length, length)
            && known != given
        {
            return Err(EngineError::LengthMismatch { known, given });
        }
        if let Some(given) = length {
            self.check_size(given)?;
        }
        check_layout_fits(&layout, length.or(u.length), &u.held)?;
        if let Some(given) = length {
            u.length = Some(given);
        }
        let stale_staging = u.chunks.as_ref().is_some_and(|c| !c.staged.is_empty());
        u.chunks = Some(layout);
        u.updated_at = Timestamp::now();
        self.save(&mut u).await?;
        if stale_staging {
            tracing::debug!(id = %u.id, "layout replaced; staged chunks of the old layout are dropped");
        }
        Ok(u)
    }

    /// Deletes an upload: metadata first, then bytes. The record never points at bytes a
    /// crash can have removed; a crash in between leaves bytes no record needs, which the
    /// start-up sweep removes ([`Engine::recover`]).
    pub async fn delete(&self, id: &UploadId) -> Result<(), EngineError> {
        self.remove(id, true).await
    }

    /// [`Engine::delete`]; `notify`: whether a post-terminate event reports it (not for the
    /// parts of a final upload, released once it is assembled).
    pub(crate) async fn remove(&self, id: &UploadId, notify: bool) -> Result<(), EngineError> {
        let (waiting, removed) = {
            let lock = self.0.locks.entry(id);
            let _h = lock.hasher.lock().await;
            let _c = lock.commit.lock().await;
            let u = self.get(id).await?;
            self.0.meta.delete(id).await?;
            crash::point("engine.delete.forgotten");
            self.0.blobs.delete_for(&u).await?;
            let finals = match &u.concat {
                Some(Concat::Partial { finals }) => finals.clone(),
                _ => Vec::new(),
            };
            (finals, u)
        };
        if notify {
            self.notify(EventKind::PostTerminate, &removed).await;
        }
        // A final still waiting for this part can never be assembled now: it goes too
        // (tus termination of one part of a parallel upload ends the whole upload).
        for f in waiting {
            match self.get(&f).await {
                Ok(fin) if !fin.is_complete() => {
                    tracing::info!(final_id = %f, part = %id, "final upload removed with its deleted part");
                    Box::pin(self.remove(&f, notify)).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Opens the finished file of a complete upload.
    pub async fn open_complete(
        &self,
        u: &Upload,
    ) -> Result<(Arc<dyn BlobRead>, SystemTime), EngineError> {
        if !u.is_complete() {
            return Err(EngineError::NotFound);
        }
        let blob = self.0.blobs.open(&u.id, BlobKind::Complete).await?;
        let modified = match blob.modified() {
            Some(t) => t,
            None => self
                .0
                .blobs
                .modified(&u.id)
                .await
                .unwrap_or_else(|_| u.completed_at.unwrap_or(u.created_at).to_system_time()),
        };
        Ok((blob, modified))
    }
}

/// The record of a new upload, as [`Engine::create`] inserts it.
fn new_record(id: UploadId, new: NewUpload) -> Upload {
    let content_alg = new
        .declared
        .as_ref()
        .map(|d| d.alg)
        .unwrap_or(HashAlg::Blake3);
    let now = Timestamp::now();
    Upload {
        id,
        owner: new.owner,
        key: new.key,
        dialect: new.dialect,
        length: new.length,
        state: UploadState::Receiving,
        held: Default::default(),
        declared: new.declared,
        content_alg,
        hash_progress: None,
        content_digest: None,
        file_name: new.file_name,
        ext: new.ext,
        chunks: new.chunks,
        metadata: new.metadata,
        concat: new.concat,
        created_at: now,
        updated_at: now,
        completed_at: None,
        blob: None,
        version: 0,
    }
}

/// A blocking hook's refusal as the engine's error.
pub(crate) fn hook_error(event: EventKind, e: HookError) -> EngineError {
    match e {
        HookError::Rejected { status, message } => EngineError::HookRejected { status, message },
        HookError::Unavailable => EngineError::HookUnavailable { event },
    }
}
