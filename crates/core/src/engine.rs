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

use crate::coord::{Coordinator, LeaseGuard};
use crate::crash;
use crate::error::EngineError;
use crate::hash::{HashAlg, Hasher};
use crate::lock::{Locks, Reservation, UploadLock};
use crate::ranges::RangeSet;
use crate::store::{BlobKind, BlobRead, BlobWrite, Blobs, Meta, MetaError};
use crate::tenant::QuotaLocks;
pub use crate::tenant::{Actor, Scoped, TenantLimits};
use crate::upload::{
    ChunkLayout, Concat, DeclaredDigest, Dialect, HashProgress, Timestamp, Upload, UploadId,
    UploadState,
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::task::{JoinHandle, spawn_blocking};

/// Bytes gathered from the body before one positional write: large enough that the per-write
/// cost (a blocking-pool hop, a syscall) is amortised, small enough to keep memory flat.
const BATCH_BYTES: usize = 512 << 10;
/// Block size of read-back hashing passes.
const READ_BLOCK: usize = 1 << 20;
/// The most a write catches the hasher up by reading held bytes back before it streams: a
/// restored BLAKE3 state lags by at most 2 MiB.
const INLINE_CATCH_UP: u64 = 4 << 20;
/// Reservations for staging chunks live far above any real offset, so they never collide
/// with data ranges (uploads are capped well below this).
const STAGING_BASE: u64 = 1 << 62;
/// Largest upload the engine accepts at all, whatever the configuration says.
pub const MAX_SUPPORTED_SIZE: u64 = STAGING_BASE - 1;
/// Why a preempted write ended.
const SUPERSEDED: &str = "superseded by a newer request for the same upload";
/// How long [`Engine::preempt`] waits for preempted writes to commit what they received.
const PREEMPT_WAIT: Duration = Duration::from_secs(3);
/// How long a write waits for an overlapping write of the same upload to end.
const RESERVE_WAIT: Duration = Duration::from_secs(5);

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

/// Counters the server exports as metrics, per dialect.
#[derive(Default)]
pub struct Stats {
    pub bytes_received: [AtomicU64; 3],
    pub started: [AtomicU64; 3],
    pub completed: [AtomicU64; 3],
    pub failed: [AtomicU64; 3],
    /// Bytes re-read to finish the whole-file digest (out-of-order arrival).
    pub rehashed_bytes: AtomicU64,
    /// Incomplete uploads this node removed for being idle (each is removed by one node).
    pub expired: AtomicU64,
}

fn slot(d: Dialect) -> usize {
    match d {
        Dialect::Chunk => 0,
        Dialect::Offset => 1,
        Dialect::Tus => 2,
    }
}

impl Stats {
    pub fn get(counter: &[AtomicU64; 3], d: Dialect) -> u64 {
        counter[slot(d)].load(Ordering::Relaxed)
    }
    fn add(counter: &[AtomicU64; 3], d: Dialect, n: u64) {
        counter[slot(d)].fetch_add(n, Ordering::Relaxed);
    }
}

/// With several nodes on one store, the start-up sweep leaves blobs younger than this alone.
const SHARED_SWEEP_GRACE: Duration = Duration::from_secs(600);

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

/// Where the bytes of one chunk go.
#[derive(PartialEq)]
enum ChunkDest {
    /// Known spans (several when equal chunks share an id).
    Spans(Vec<Range<u64>>),
    /// Chunk 0 before the chunk size is known: offset 0, length learnt from the body.
    OpenAtZero,
    /// Offset unknown: staging blob for chunk `index`.
    Staged(usize),
}

/// Plan for one streamed body.
#[derive(PartialEq)]
struct Plan {
    /// Offsets where stream byte 0 lands (several for duplicate chunks).
    targets: Vec<u64>,
    /// Most bytes the body may carry.
    limit: u64,
    /// Stream-relative parts that may be written (bytes already held are skipped).
    writable: Vec<Range<u64>>,
}

struct Worker {
    writer: Box<dyn BlobWrite>,
    whole: Option<Hasher>,
    chunk: Option<Hasher>,
}

enum PumpEnd {
    Complete,
    Body(String),
    TooLong,
}

struct Pumped {
    worker: Worker,
    /// Bytes of the body accepted (written where writable), ≤ plan.limit.
    received: u64,
    end: PumpEnd,
}

struct Inner {
    meta: Meta,
    blobs: Blobs,
    locks: Locks,
    cfg: EngineConfig,
    stats: Stats,
    quota: QuotaLocks,
    coord: Option<Arc<dyn Coordinator>>,
}

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
            quota: QuotaLocks::default(),
            coord,
        }))
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

    pub(crate) fn quota_locks(&self) -> &QuotaLocks {
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
    pub async fn create(&self, new: NewUpload) -> Result<(Upload, bool), EngineError> {
        if let Some(len) = new.length {
            self.check_size(len)?;
        }
        self.check_space()?;
        let content_alg = new
            .declared
            .as_ref()
            .map(|d| d.alg)
            .unwrap_or(HashAlg::Blake3);
        let now = Timestamp::now();
        let upload = Upload {
            id: UploadId::generate(),
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
            version: 0,
        };
        self.0.blobs.create(&upload.id).await?;
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
        Stats::add(&self.0.stats.started, upload.dialect, 1);
        // Plain values only (JSON logs): a deferred length is left out rather than `None`.
        match upload.length {
            Some(length) => {
                tracing::info!(id = %upload.id, dialect = upload.dialect.name(), length, "upload created")
            }
            None => {
                tracing::info!(id = %upload.id, dialect = upload.dialect.name(), "upload created, length deferred")
            }
        }
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

    /// Streams a raw body into an upload (byte-offset dialect, tus PATCH).
    ///
    /// Whatever part of the body arrived before it was cut off is kept durably and reported
    /// in [`EngineError::BodyInterrupted`], like tusd does: the client resumes from there.
    pub async fn write<S, E>(
        &self,
        id: &UploadId,
        mode: WriteMode,
        body: S,
    ) -> Result<WriteOutcome, EngineError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        self.write_checked(id, mode, None, body).await
    }

    /// [`Engine::write`] with an optional digest the whole body must have. With a check the
    /// write is all or nothing (tus checksum extension: a mismatch keeps nothing of the
    /// request); without one, a body cut off mid-way keeps what arrived.
    pub async fn write_checked<S, E>(
        &self,
        id: &UploadId,
        mode: WriteMode,
        check: Option<BodyCheck>,
        body: S,
    ) -> Result<WriteOutcome, EngineError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        self.write_checked_as(None, id, None, mode, check, body)
            .await
    }

    /// [`Engine::write_checked`] that first checks, on the record it reads anyway, that the
    /// upload belongs to `owner` (`NotFound` otherwise); `None` checks nothing.
    ///
    /// `known` is the record as the caller just read it, if it did: the plan starts from it
    /// instead of reading it again (it is read afresh after the ranges are reserved anyway).
    pub(crate) async fn write_checked_as<S, E>(
        &self,
        owner: Option<&Option<String>>,
        id: &UploadId,
        known: Option<Upload>,
        mode: WriteMode,
        check: Option<BodyCheck>,
        body: S,
    ) -> Result<WriteOutcome, EngineError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        self.check_space()?;
        let max = self.0.cfg.max_upload_size;
        let (u, planned) = self
            .reserve_fresh(
                owner,
                id,
                known,
                matches!(mode, WriteMode::Append { .. }),
                |u| {
                    let (start, limit) = plan_raw(u, mode, max)?;
                    Ok(Some((
                        (start, limit),
                        vec![start..start.saturating_add(limit)],
                    )))
                },
            )
            .await?;
        let ((start, limit), reservation) = planned.expect("raw writes always plan a range");
        let range = start..start.saturating_add(limit);
        let bound = u.length.unwrap_or(max);
        let writable: Vec<Range<u64>> = u
            .held
            .gaps_in(range.clone())
            .into_iter()
            .map(|g| g.start - start..g.end - start)
            .collect();
        let fully_new = !u.held.intersects(range.clone());
        let ulock = reservation.lock.clone();
        // An append is the upload's only writer by definition (it must start at the held
        // offset), so a newer request may preempt it; range and chunk writes run in parallel
        // legitimately and are never preempted.
        let preempt = matches!(mode, WriteMode::Append { .. }).then(|| ulock.preempt.subscribe());
        let plan = Plan {
            targets: vec![start],
            limit,
            writable,
        };
        let writer = self.0.blobs.writer(id).await?;
        let (claim, whole) = if fully_new {
            self.claim_hasher(&ulock, &u, start).await
        } else {
            (HashClaim::none(), None)
        };
        let body_hasher = check.as_ref().map(|c| Hasher::new(c.alg));
        let pumped = self
            .pump(
                u.dialect,
                Worker {
                    writer,
                    whole,
                    chunk: body_hasher,
                },
                &plan,
                preempt,
                body,
            )
            .await;
        let Pumped {
            mut worker,
            received,
            end,
        } = match pumped {
            Ok(p) => p,
            Err(e) => {
                claim.abandon();
                // Nothing of this request was acknowledged: give its bytes' space back (a
                // full disk must not stay full of a refused body).
                self.discard(id, &plan, start).await;
                return Err(e);
            }
        };
        if let Some(check) = &check {
            // All or nothing: verify before anything becomes held.
            let verdict = match &end {
                PumpEnd::Complete => {
                    let actual = worker
                        .chunk
                        .take()
                        .map(Hasher::finalize)
                        .unwrap_or_default();
                    if actual == check.digest {
                        Ok(())
                    } else {
                        Err(EngineError::ChecksumMismatch {
                            alg: check.alg,
                            expected: hex::encode(&check.digest),
                            actual: hex::encode(actual),
                        })
                    }
                }
                PumpEnd::Body(reason) if reason == SUPERSEDED => {
                    Err(EngineError::Superseded { held: u.offset() })
                }
                PumpEnd::Body(reason) => Err(EngineError::BodyInterrupted {
                    received: 0,
                    reason: format!("{reason} (a checksummed body is kept only whole)"),
                }),
                PumpEnd::TooLong => match mode {
                    WriteMode::Append { .. } => Err(EngineError::PastLength {
                        length: u.length.unwrap_or(max),
                        end: start + limit + 1,
                    }),
                    WriteMode::At { len, .. } => Err(EngineError::Invalid(format!(
                        "the body is longer than the {len} bytes of its range; nothing was stored"
                    ))),
                },
            };
            if let Err(e) = verdict {
                claim.abandon();
                self.discard(id, &plan, start).await;
                return Err(e);
            }
        }
        let accepted_ranges: Vec<Range<u64>> = plan
            .writable
            .iter()
            .filter(|w| w.start < received)
            .map(|w| start + w.start..start + w.end.min(received))
            .collect();
        let accepted: u64 = accepted_ranges.iter().map(|r| r.end - r.start).sum();
        if !reservation.lease_held() {
            // Another node may own these bytes by now: acknowledge nothing, free nothing.
            claim.abandon();
            return Err(EngineError::Busy);
        }
        let committed = if received > 0 {
            let synced;
            (worker, synced) = sync_worker(worker).await;
            synced?;
            let whole = worker.whole.take();
            let u = self
                .commit_on(
                    id,
                    &reservation.lock,
                    Some(u.clone()),
                    |u| {
                        for r in &accepted_ranges {
                            u.held.insert(r.clone());
                        }
                        Ok(())
                    },
                    whole.as_ref(),
                )
                .await;
            claim.settle(u.is_ok(), whole);
            Some(u?)
        } else {
            claim.abandon();
            None
        };
        drop(reservation);
        let upload = match committed {
            Some(u) => self.after_commit(u).await?,
            None => self.get(id).await?,
        };
        match end {
            PumpEnd::Complete => Ok(WriteOutcome { upload, accepted }),
            PumpEnd::Body(reason) if reason == SUPERSEDED => {
                tracing::info!(%id, received, "write superseded by a newer request; kept what arrived");
                Err(EngineError::Superseded {
                    held: upload.offset(),
                })
            }
            PumpEnd::Body(reason) => {
                tracing::info!(%id, received, %reason, "body cut off; kept what arrived");
                Err(EngineError::BodyInterrupted { received, reason })
            }
            PumpEnd::TooLong => match mode {
                WriteMode::Append { .. } => Err(EngineError::PastLength {
                    length: upload.length.unwrap_or(bound),
                    end: start + limit + 1,
                }),
                WriteMode::At { len, .. } => Err(EngineError::Invalid(format!(
                    "the body is longer than the {len} bytes of its range; bytes past the range were not stored"
                ))),
            },
        }
    }

    /// Frees the space of the bytes a refused raw write may have stored: its writable ranges
    /// (the bytes it did not hold before), while its reservation still keeps others away.
    async fn discard(&self, id: &UploadId, plan: &Plan, start: u64) {
        let ranges = plan
            .writable
            .iter()
            .map(|w| start + w.start..start + w.end.min(plan.limit))
            .collect();
        if let Err(e) = self.0.blobs.discard(id, ranges).await {
            tracing::warn!(%id, error = %e, "could not free the space of a refused write");
        }
    }

    /// Streams one verified chunk of a chunk-handshake upload. The chunk is all or nothing: a
    /// body that is cut off, too long, too short or whose digest differs from its id stores
    /// nothing.
    pub async fn write_chunk<S, E>(
        &self,
        id: &UploadId,
        chunk_id: &str,
        body: S,
    ) -> Result<WriteOutcome, EngineError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        self.write_chunk_as(None, id, chunk_id, body).await
    }

    /// [`Engine::write_chunk`] with the ownership check of [`Engine::write_checked_as`].
    pub(crate) async fn write_chunk_as<S, E>(
        &self,
        owner: Option<&Option<String>>,
        id: &UploadId,
        chunk_id: &str,
        body: S,
    ) -> Result<WriteOutcome, EngineError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        self.check_space()?;
        let max = self.0.cfg.max_upload_size;
        let ulock = self.0.locks.entry(id);
        let (u, planned) = self
            .reserve_fresh(owner, id, None, false, |u| {
                let zero_open = ulock.zero_open.load(Ordering::Acquire);
                Ok(plan_chunk(u, chunk_id, max, zero_open)?.map(|p| {
                    let ranges = p.reserve.clone();
                    (p, ranges)
                }))
            })
            .await?;
        let Some((planned, reservation)) = planned else {
            // Every position of this id is held already: nothing to write. The bytes are
            // still checked against the id, so a client re-sending different bytes under a
            // held id hears about the mismatch instead of a success. A staged chunk whose
            // placement failed earlier (a crash, a disk error) is placed now, so a retry
            // always moves the upload forward.
            verify_chunk(&u, chunk_id, body).await?;
            let u = self.place_staged(u).await?;
            return Ok(WriteOutcome {
                upload: self.after_commit(u).await?,
                accepted: 0,
            });
        };
        let ChunkPlan {
            layout,
            expected,
            dest,
            plan,
            staged_index,
            ..
        } = planned;
        let _zero_open = matches!(dest, ChunkDest::OpenAtZero).then(|| ZeroOpen::set(&ulock));
        let writer = match staged_index {
            Some(i) => self.0.blobs.staging_writer(id, i).await?,
            None => self.0.blobs.writer(id).await?,
        };
        let (claim, whole) = match (&dest, plan.targets.first()) {
            (ChunkDest::Staged(_), _) | (_, None) => (HashClaim::none(), None),
            (_, Some(&t)) => self.claim_hasher(&ulock, &u, t).await,
        };
        let chunk_hasher = Some(Hasher::new(layout.alg));
        let pumped = self
            .pump(
                u.dialect,
                Worker {
                    writer,
                    whole,
                    chunk: chunk_hasher,
                },
                &plan,
                None,
                body,
            )
            .await;
        let Pumped {
            mut worker,
            received,
            end,
        } = match pumped {
            Ok(p) => p,
            Err(e) => {
                claim.abandon();
                return Err(e);
            }
        };
        let verdict = match end {
            PumpEnd::Body(reason) => Err(EngineError::BodyInterrupted { received, reason }),
            PumpEnd::TooLong => Err(EngineError::ChunkSize(format!(
                "chunk {chunk_id} is longer than its place in the file ({} bytes)",
                plan.limit
            ))),
            PumpEnd::Complete => {
                let actual = worker
                    .chunk
                    .take()
                    .map(Hasher::finalize_hex)
                    .unwrap_or_default();
                if actual != expected {
                    Err(EngineError::ChunkDigestMismatch { expected, actual })
                } else if matches!(dest, ChunkDest::Spans(_)) && received != plan.limit {
                    Err(EngineError::ChunkSize(format!(
                        "chunk {chunk_id} has {received} bytes, but its place in the file has {}",
                        plan.limit
                    )))
                } else if received == 0 && layout.ids.len() > 1 {
                    Err(EngineError::ChunkSize(format!("chunk {chunk_id} is empty")))
                } else {
                    Ok(())
                }
            }
        };
        if let Err(e) = verdict {
            claim.abandon();
            return Err(e);
        }
        let synced;
        (worker, synced) = sync_worker(worker).await;
        if let Err(e) = synced {
            claim.abandon();
            return Err(e.into());
        }
        if !reservation.lease_held() {
            claim.abandon();
            return Err(EngineError::Busy);
        }
        let whole = worker.whole.take();
        let n = layout.ids.len();
        let result = self
            .commit_on(
                id,
                &reservation.lock,
                Some(u.clone()),
                |u| match &dest {
                    ChunkDest::Spans(spans) => {
                        for s in spans {
                            u.held.insert(s.clone());
                        }
                        Ok(())
                    }
                    ChunkDest::OpenAtZero => {
                        learn_chunk(u, 0, received, n, self.0.cfg.max_upload_size)
                            .map(|()| u.held.insert(0..received))
                    }
                    ChunkDest::Staged(i) => {
                        learn_chunk(u, *i, received, n, self.0.cfg.max_upload_size)?;
                        if let Some(c) = u.chunks.as_mut() {
                            c.staged.insert(*i, received);
                        }
                        Ok(())
                    }
                },
                whole.as_ref(),
            )
            .await;
        claim.settle(result.is_ok(), whole);
        drop(reservation);
        let u = result?;
        let u = self.place_staged(u).await?;
        let u = self.fill_duplicates(u, chunk_id).await?;
        let accepted = match &dest {
            ChunkDest::Spans(spans) => spans.iter().map(|s| s.end - s.start).sum(),
            _ => received,
        };
        let upload = self.after_commit(u).await?;
        Ok(WriteOutcome { upload, accepted })
    }

    /// Asks appending writes in flight on `id` to stop and commit what they received, and
    /// waits (briefly) until they have. Fronts call it when a client sends a new append (tus
    /// PATCH, IETF append, `X-Start-Byte`): a request still streaming at that point belongs
    /// to a connection the client has given up on, and waiting for the server to notice the
    /// dead connection could take minutes. Reads (HEAD, status) never preempt.
    pub async fn preempt(&self, id: &UploadId) {
        self.preempt_here(id).await;
    }

    /// [`Engine::preempt`] on this node only.
    async fn preempt_here(&self, id: &UploadId) {
        if !self.is_streaming(id) {
            return;
        }
        let lock = self.0.locks.entry(id);
        // Receivers are the appending writes still streaming; nothing to stop without one.
        if lock.preempt.receiver_count() == 0 {
            return;
        }
        lock.preempt.send_modify(|g| *g = g.wrapping_add(1));
        let deadline = Instant::now() + PREEMPT_WAIT;
        while lock.busy() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Plans a write from a fresh record and reserves its ranges. When another request holds
    /// an overlapping range (a retry racing the request it retries, a body still being
    /// committed after its client went away), waits up to [`RESERVE_WAIT`] for it to end
    /// rather than failing at once. The plan is recomputed from the record read *after* the
    /// reservation, so it never rests on state another writer changed meanwhile.
    ///
    /// With a coordinator the ranges are also leased across nodes; an `append` that finds
    /// them leased elsewhere asks the holder to stop once, then waits like for a local one.
    async fn reserve_fresh<P: PartialEq>(
        &self,
        owner: Option<&Option<String>>,
        id: &UploadId,
        mut first: Option<Upload>,
        append: bool,
        plan: impl Fn(&Upload) -> Result<Option<(P, Vec<Range<u64>>)>, EngineError>,
    ) -> Result<(Upload, Option<(P, Reservation)>), EngineError> {
        let deadline = Instant::now() + RESERVE_WAIT;
        let mut asked = false;
        loop {
            let u = match first.take() {
                Some(u) => u,
                None => self.get(id).await?,
            };
            // The owner never changes, so checking the first read covers the second.
            if owner.is_some_and(|o| u.owner != *o) {
                return Err(EngineError::NotFound);
            }
            let Some((p, ranges)) = plan(&u)? else {
                return Ok((u, None));
            };
            // The record as read once the ranges are ours, when the lease brought it.
            let mut leased_record = None;
            let reserved = match self.0.locks.reserve(id, ranges.clone()) {
                Some(res) => match &self.0.coord {
                    Some(coord) if !ranges.is_empty() => {
                        match coord.acquire(id, &ranges, append).await? {
                            Some(mut lease) => {
                                leased_record = lease.take_record();
                                Some(res.with_lease(LeaseGuard::new(coord.clone(), lease)))
                            }
                            None => {
                                drop(res);
                                if append && !asked {
                                    asked = true;
                                    coord.preempt(id).await?;
                                }
                                None
                            }
                        }
                    }
                    _ => Some(res),
                },
                None => None,
            };
            match reserved {
                Some(res) => {
                    let fresh = match leased_record {
                        Some(u) => u,
                        None => self.get(id).await?,
                    };
                    match plan(&fresh)? {
                        Some((p2, r2)) if p2 == p && r2 == ranges => {
                            return Ok((fresh, Some((p, res))));
                        }
                        _ => continue,
                    }
                }
                None if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                None => return Err(EngineError::Busy),
            }
        }
    }

    /// Whether an append of `id` is streaming on this node (something [`Engine::preempt`]
    /// would stop).
    pub fn is_streaming(&self, id: &UploadId) -> bool {
        self.0.locks.entry(id).preempt.receiver_count() > 0
    }

    /// Equal chunks share an id (plain digests without a suffix), and one upload of the id
    /// must fill every position. Positions whose offset only became known after the bytes
    /// landed (the chunk size was inferred from this very chunk) are filled here by copying
    /// the chunk from a held position.
    async fn fill_duplicates(&self, u: Upload, chunk_id: &str) -> Result<Upload, EngineError> {
        let Some(layout) = u.chunks.as_ref() else {
            return Ok(u);
        };
        let spans: Vec<Range<u64>> = (0..layout.ids.len())
            .filter(|&i| layout.ids[i] == chunk_id)
            .filter_map(|i| layout.span(i, u.length))
            .collect();
        let Some(source) = spans
            .iter()
            .find(|s| u.held.contains((*s).clone()))
            .cloned()
        else {
            return Ok(u);
        };
        let todo: Vec<Range<u64>> = spans
            .into_iter()
            .filter(|s| s.end - s.start == source.end - source.start && !u.held.contains(s.clone()))
            .collect();
        if todo.is_empty() {
            return Ok(u);
        }
        let id = u.id.clone();
        let Some(res) = self.0.locks.reserve(&id, todo.clone()) else {
            // Someone is writing one of these positions right now; the handshake will keep
            // listing the id until every position is held.
            return Ok(u);
        };
        let mut writer = self.0.blobs.writer(&id).await?;
        let targets = todo.clone();
        spawn_blocking(move || -> std::io::Result<()> {
            let mut buf = vec![0u8; READ_BLOCK];
            let mut pos = source.start;
            while pos < source.end {
                let want = ((source.end - pos) as usize).min(READ_BLOCK);
                let n = writer.read_at(&mut buf[..want], pos)?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "held chunk shorter than its span",
                    ));
                }
                let piece = [Bytes::copy_from_slice(&buf[..n])];
                for t in &targets {
                    writer.write_at(t.start + (pos - source.start), &piece)?;
                }
                pos += n as u64;
            }
            writer.sync()
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        let u = self
            .commit(
                &id,
                &res.lock,
                |u| {
                    for t in &todo {
                        u.held.insert(t.clone());
                    }
                    Ok(())
                },
                None,
            )
            .await?;
        drop(res);
        Ok(u)
    }

    /// Moves staged chunks whose offset is now known into the partial blob (a kernel copy
    /// of one chunk each), and marks them held.
    ///
    /// The order is what makes a crash at any step harmless: copy and sync the bytes into
    /// the partial blob, commit "held, no longer staged", and only then remove the staging
    /// blob. Until the commit the record points at the staging blob, which still exists;
    /// after it the record points at the partial blob, which holds the bytes durably; a
    /// staging blob left behind by a crash after the commit is removed by the start-up sweep.
    async fn place_staged(&self, u: Upload) -> Result<Upload, EngineError> {
        let Some(layout) = u.chunks.as_ref() else {
            return Ok(u);
        };
        let ready: Vec<(usize, u64, Range<u64>)> = layout
            .staged
            .iter()
            .filter_map(|(&i, &len)| layout.span(i, u.length).map(|s| (i, len, s)))
            .collect();
        if ready.is_empty() {
            return Ok(u);
        }
        let id = u.id.clone();
        let mut last = u;
        for (i, len, span) in ready {
            if span.end - span.start != len {
                // The staged chunk does not fit the layout learnt since; drop it so the
                // client sends it again.
                last = self
                    .commit(
                        &id,
                        &self.0.locks.entry(&id),
                        |u| {
                            if let Some(c) = u.chunks.as_mut() {
                                c.staged.remove(&i);
                            }
                            Ok(())
                        },
                        None,
                    )
                    .await?;
                continue;
            }
            // Another request may be writing this span directly; leave the staged copy for a
            // later commit rather than racing it.
            let Some(res) = self.0.locks.reserve(&id, vec![span.clone()]) else {
                continue;
            };
            let placed = match self.0.blobs.place_staged(&id, i, span.start, len).await {
                Ok(()) => true,
                // The record lists a staging blob that is gone. This order never leaves that
                // state, but data written by a version that removed the staging blob before
                // its commit can: the bytes were then placed durably before the removal, so
                // the chunk is held if the partial blob has them. Otherwise the record
                // forgets the chunk and the client sends it again.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let layout = last.chunks.as_ref().expect("checked above");
                    let held = self
                        .span_matches(&id, span.clone(), layout.alg, &layout.ids[i])
                        .await;
                    tracing::warn!(%id, chunk = i, held, "staged chunk without its staging blob");
                    held
                }
                Err(e) => return Err(e.into()),
            };
            last = self
                .commit(
                    &id,
                    &res.lock,
                    |u| {
                        if let Some(c) = u.chunks.as_mut() {
                            c.staged.remove(&i);
                        }
                        if placed {
                            u.held.insert(span.clone());
                        }
                        Ok(())
                    },
                    None,
                )
                .await?;
            crash::point("engine.place_staged.committed");
            if let Err(e) = self.0.blobs.remove_staged(&id, i).await {
                // Harmless: the record no longer needs it, and the start-up sweep removes it.
                tracing::warn!(%id, chunk = i, error = %e, "could not remove a placed staging blob");
            }
        }
        Ok(last)
    }

    /// Whether bytes `span` of the partial blob digest to the hex prefix of `chunk_id`.
    async fn span_matches(
        &self,
        id: &UploadId,
        span: Range<u64>,
        alg: HashAlg,
        chunk_id: &str,
    ) -> bool {
        let Some(expected) = chunk_id.get(..alg.hex_len()).map(str::to_ascii_lowercase) else {
            return false;
        };
        let Ok(blob) = self.0.blobs.open(id, BlobKind::Partial).await else {
            return false;
        };
        let digest = spawn_blocking(move || -> std::io::Result<String> {
            let mut h = Hasher::new(alg);
            let mut buf = vec![0u8; READ_BLOCK];
            let mut pos = span.start;
            while pos < span.end {
                let want = ((span.end - pos) as usize).min(READ_BLOCK);
                let n = blob.read_at(&mut buf[..want], pos)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                h.update(&buf[..n]);
                pos += n as u64;
            }
            Ok(h.finalize_hex())
        })
        .await;
        matches!(digest, Ok(Ok(d)) if d == expected)
    }

    /// Reads the metadata record fresh, applies `change`, records hasher progress, and writes
    /// it back, all under the upload's commit lock.
    async fn commit(
        &self,
        id: &UploadId,
        lock: &Arc<UploadLock>,
        change: impl FnMut(&mut Upload) -> Result<(), EngineError>,
        hasher: Option<&Hasher>,
    ) -> Result<Upload, EngineError> {
        self.commit_on(id, lock, None, change, hasher).await
    }

    /// [`Engine::commit`] that first tries the change on `base`, the record the write read
    /// when it reserved its ranges, saving a read per request; when anything updated the
    /// record since, the compare-and-set refuses it and the loop reads it afresh.
    async fn commit_on(
        &self,
        id: &UploadId,
        lock: &Arc<UploadLock>,
        mut base: Option<Upload>,
        mut change: impl FnMut(&mut Upload) -> Result<(), EngineError>,
        hasher: Option<&Hasher>,
    ) -> Result<Upload, EngineError> {
        crash::point("engine.commit");
        let _c = lock.commit.lock().await;
        // The commit mutex serialises this process; the record's version serialises
        // processes sharing the database: a stale read is read again and the change
        // re-applied (changes are range insertions and state steps, safe to re-apply).
        let mut tries = 0;
        loop {
            let (mut u, from_base) = match base.take() {
                Some(u) => (u, true),
                None => (self.get(id).await?, false),
            };
            if let Err(e) = change(&mut u) {
                if from_base {
                    // Maybe only the older copy refuses the change: ask the stored record.
                    continue;
                }
                return Err(e);
            }
            if let Some(h) = hasher {
                let stored = u.hash_progress.as_ref().map_or(0, |p| p.position);
                if h.position() > stored || u.hash_progress.is_none() {
                    u.hash_progress = Some(HashProgress {
                        position: h.position(),
                        state_hex: hex::encode(h.save()),
                    });
                }
            }
            u.updated_at = Timestamp::now();
            match self.0.meta.update(&u).await {
                Ok(()) => {
                    u.version += 1;
                    return Ok(u);
                }
                Err(MetaError::Stale) if tries < STALE_RETRIES => tries += 1,
                Err(MetaError::Stale) => return Err(EngineError::Busy),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Writes a record read under the commit mutex; a record another node changed since
    /// is [`EngineError::Busy`] (the client's retry finds the new state).
    async fn save(&self, u: &mut Upload) -> Result<(), EngineError> {
        match self.0.meta.update(u).await {
            Ok(()) => {
                u.version += 1;
                Ok(())
            }
            Err(MetaError::Stale) => Err(EngineError::Busy),
            Err(e) => Err(e.into()),
        }
    }

    /// After a commit: finish the upload when every byte is held, otherwise let the hasher
    /// catch up with bytes that arrived out of order.
    async fn after_commit(&self, u: Upload) -> Result<Upload, EngineError> {
        if let Some(len) = u.length
            && u.held.is_complete(len)
            && !u.is_complete()
        {
            return self.finalize(&u.id).await;
        }
        let hashed = u.hash_progress.as_ref().map_or(0, |p| p.position);
        if u.held.prefix_end() > hashed {
            let engine = self.clone();
            let id = u.id.clone();
            tokio::spawn(async move {
                if let Err(e) = engine.catch_up(&id).await {
                    tracing::debug!(%id, error = %e, "hash catch-up deferred");
                }
            });
        }
        Ok(u)
    }

    /// Takes the whole-file hasher when `offset` is exactly where it stands (or a few MiB
    /// past it, over held bytes it reads back first); otherwise the bytes will be hashed
    /// later by a catch-up pass.
    async fn claim_hasher<'a>(
        &self,
        lock: &'a Arc<UploadLock>,
        u: &Upload,
        offset: u64,
    ) -> (HashClaim<'a>, Option<Hasher>) {
        let Ok(mut guard) = lock.hasher.try_lock() else {
            return (HashClaim::none(), None);
        };
        let mut hasher = match guard.take() {
            Some(h) => h,
            None => match load_hasher(u) {
                Ok(h) => h,
                Err(_) => return (HashClaim::none(), None),
            },
        };
        // A hasher restored from a BLAKE3 state stands up to 2 MiB before where hashing had
        // got (see `Hasher::durable_position`): read that gap back now, so this write is
        // hashed as it streams instead of the whole of it being read back later.
        let gap = offset.saturating_sub(hasher.position());
        if gap > 0 && gap <= INLINE_CATCH_UP && u.held.prefix_end() >= offset {
            let caught = match self.0.blobs.open(&u.id, BlobKind::Partial).await {
                Ok(blob) => self.hash_range(blob, hasher, offset).await,
                Err(e) => Err(e.into()),
            };
            hasher = match caught {
                Ok(h) => h,
                Err(_) => return (HashClaim::none(), None),
            };
        }
        if hasher.position() == offset {
            let backup = Some(hasher.clone());
            (
                HashClaim {
                    guard: Some(guard),
                    backup,
                },
                Some(hasher),
            )
        } else {
            *guard = Some(hasher);
            (HashClaim::none(), None)
        }
    }

    /// Advances the whole-file hasher over the held prefix by reading the bytes back.
    async fn catch_up(&self, id: &UploadId) -> Result<(), EngineError> {
        let lock = self.0.locks.entry(id);
        let mut guard = lock.hasher.lock().await;
        let u = self.get(id).await?;
        if u.is_complete() {
            return Ok(());
        }
        let mut hasher = match guard.take() {
            Some(h) => h,
            None => load_hasher(&u)?,
        };
        let target = u.held.prefix_end();
        if hasher.position() < target {
            let blob = self.0.blobs.open(id, BlobKind::Partial).await?;
            hasher = self.hash_range(blob, hasher, target).await?;
            let h = hasher.clone();
            let res = self.commit(id, &lock, |_| Ok(()), Some(&h)).await;
            if res.is_err() {
                return res.map(|_| ());
            }
        }
        *guard = Some(hasher);
        Ok(())
    }

    /// Feeds `hasher` with the blob's bytes from its position up to `end`.
    async fn hash_range(
        &self,
        blob: Arc<dyn BlobRead>,
        mut hasher: Hasher,
        end: u64,
    ) -> Result<Hasher, EngineError> {
        let start = hasher.position();
        let hasher = spawn_blocking(move || -> std::io::Result<Hasher> {
            let mut buf = vec![0u8; READ_BLOCK];
            while hasher.position() < end {
                let want = ((end - hasher.position()) as usize).min(READ_BLOCK);
                let n = blob.read_at(&mut buf[..want], hasher.position())?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "blob shorter than its held ranges",
                    ));
                }
                hasher.update(&buf[..n]);
            }
            Ok(hasher)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        self.0
            .stats
            .rehashed_bytes
            .fetch_add(end - start, Ordering::Relaxed);
        Ok(hasher)
    }

    /// Completes an upload whose bytes are all held: finishes the whole-file digest, checks
    /// it against the declared one, publishes the blob atomically, and records completion.
    /// Idempotent, so recovery after a crash at any point simply calls it again.
    pub async fn finalize(&self, id: &UploadId) -> Result<Upload, EngineError> {
        let u = self.finalize_one(id).await?;
        // A completed part may be the last one some final upload was waiting for.
        if let Some(Concat::Partial { finals }) = &u.concat {
            for f in finals {
                if let Err(e) = self.assemble(f).await {
                    tracing::warn!(final_id = %f, error = %e, "could not assemble a final upload");
                }
            }
        }
        Ok(u)
    }

    async fn finalize_one(&self, id: &UploadId) -> Result<Upload, EngineError> {
        let started = Instant::now();
        let lock = self.0.locks.entry(id);
        let mut hslot = lock.hasher.lock().await;
        let _c = lock.commit.lock().await;
        let mut u = self.get(id).await?;
        if u.is_complete() {
            return Ok(u);
        }
        let len = u
            .length
            .ok_or_else(|| EngineError::Invalid("length unknown".into()))?;
        if !u.held.is_complete(len) {
            return Ok(u);
        }
        let mut hasher = match hslot.take() {
            Some(h) => h,
            None => load_hasher(&u)?,
        };
        let rehash = len - hasher.position().min(len);
        if hasher.position() < len {
            // After a crash between publish and the metadata commit the bytes are already in
            // the complete blob.
            let blob = match self.0.blobs.open(id, BlobKind::Partial).await {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.0.blobs.open(id, BlobKind::Complete).await?
                }
                Err(e) => return Err(e.into()),
            };
            hasher = self.hash_range(blob, hasher, len).await?;
        }
        let digest = hasher.finalize_hex();
        if let Some(declared) = &u.declared
            && declared.hex != digest
        {
            tracing::warn!(%id, expected = %declared.hex, actual = %digest, "whole-file digest mismatch; upload discarded");
            // Forgotten first, removed second: the record never points at removed bytes.
            self.0.meta.delete(id).await?;
            crash::point("engine.discard.forgotten");
            self.0.blobs.delete(id).await?;
            Stats::add(&self.0.stats.failed, u.dialect, 1);
            return Err(EngineError::FileDigestMismatch {
                expected: declared.hex.clone(),
                actual: digest,
            });
        }
        crash::point("engine.finalize.verified");
        self.0.blobs.publish(id).await?;
        crash::point("engine.finalize.published");
        let mut tries = 0;
        loop {
            let now = Timestamp::now();
            u.state = UploadState::Complete;
            u.content_digest = Some(digest.clone());
            u.hash_progress = None;
            u.completed_at = Some(now);
            u.updated_at = now;
            if let Some(c) = u.chunks.as_mut() {
                c.staged.clear();
            }
            match self.save(&mut u).await {
                Ok(()) => break,
                // A late commit (a catch-up pass, a duplicate chunk, another node) updated
                // the record after it was read: completion is re-applied on the fresh one,
                // unless someone completed it meanwhile, which is what we wanted.
                Err(EngineError::Busy) if tries < STALE_RETRIES => {
                    tries += 1;
                    u = self.get(id).await?;
                    if u.is_complete() {
                        return Ok(u);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Stats::add(&self.0.stats.completed, u.dialect, 1);
        tracing::info!(%id, length = len, rehashed = rehash, finalize_ms = started.elapsed().as_millis() as u64, "upload complete");
        Ok(u)
    }

    /// Creates a final upload: the concatenation of `parts`, in order (tus concatenation).
    /// Every part must be a partial upload. When all parts are complete the final is
    /// assembled at once; otherwise ("unfinished concatenation") it is assembled when the
    /// last part completes.
    pub async fn create_final(
        &self,
        mut new: NewUpload,
        parts: Vec<UploadId>,
    ) -> Result<Upload, EngineError> {
        if parts.is_empty() {
            return Err(EngineError::Invalid(
                "a final upload needs at least one partial upload".into(),
            ));
        }
        let mut length = Some(0u64);
        for p in &parts {
            let part = match self.get(p).await {
                Ok(u) => u,
                Err(EngineError::NotFound) => return Err(EngineError::UnknownPart(p.to_string())),
                Err(e) => return Err(e),
            };
            if !matches!(part.concat, Some(Concat::Partial { .. })) {
                return Err(EngineError::Invalid(format!(
                    "upload {p} was not created as a partial upload (Upload-Concat: partial)"
                )));
            }
            length = match (length, part.length) {
                (Some(a), Some(b)) => a.checked_add(b),
                _ => None,
            };
        }
        if let Some(len) = length {
            self.check_size(len)?;
        }
        new.length = length;
        new.concat = Some(Concat::Final {
            parts: parts.clone(),
        });
        let (u, _) = self.create(new).await?;
        // Register the final with every part still receiving, so its completion triggers
        // the assembly.
        for p in &parts {
            let lock = self.0.locks.entry(p);
            let final_id = u.id.clone();
            self.commit(
                p,
                &lock,
                |part| {
                    if let Some(Concat::Partial { finals }) = part.concat.as_mut()
                        && !finals.contains(&final_id)
                    {
                        finals.push(final_id.clone());
                    }
                    Ok(())
                },
                None,
            )
            .await?;
        }
        self.assemble(&u.id).await
    }

    /// Assembles a final upload whose parts are all complete: the backend copies each part
    /// into place (a kernel copy, which shares extents on file systems that reflink), the
    /// assembled bytes are hashed (one read: the parts' digests cannot be combined into the
    /// content's), then the final is published like any upload, with a content digest a
    /// client can check.
    async fn assemble(&self, id: &UploadId) -> Result<Upload, EngineError> {
        let lock = self.0.locks.entry(id);
        let _h = lock.hasher.lock().await;
        let _c = lock.commit.lock().await;
        let mut u = self.get(id).await?;
        let Some(Concat::Final { parts }) = u.concat.clone() else {
            return Ok(u);
        };
        if u.is_complete() {
            return Ok(u);
        }
        let mut loaded = Vec::with_capacity(parts.len());
        for p in &parts {
            let part = self.get(p).await?;
            if !part.is_complete() {
                return Ok(u);
            }
            loaded.push(part);
        }
        let started = Instant::now();
        let mut offset = 0u64;
        for part in &loaded {
            let len = part.length.unwrap_or(0);
            if len > 0 {
                self.0
                    .blobs
                    .copy_complete(&part.id, id, offset, len)
                    .await?;
            }
            offset += len;
        }
        self.check_size(offset)?;
        crash::point("engine.assemble.copied");
        let blob = self.0.blobs.open(id, BlobKind::Partial).await?;
        let digest = self
            .hash_range(blob, Hasher::new(u.content_alg), offset)
            .await?
            .finalize_hex();
        self.0.blobs.publish(id).await?;
        crash::point("engine.assemble.published");
        let now = Timestamp::now();
        u.length = Some(offset);
        u.held = Default::default();
        u.held.insert(0..offset);
        u.state = UploadState::Complete;
        u.content_digest = Some(digest);
        u.completed_at = Some(now);
        u.updated_at = now;
        if let Err(e) = self.save(&mut u).await {
            return match self.get(id).await {
                Ok(done) if done.is_complete() => Ok(done),
                _ => Err(e),
            };
        }
        Stats::add(&self.0.stats.completed, u.dialect, 1);
        tracing::info!(%id, length = offset, parts = loaded.len(), assemble_ms = started.elapsed().as_millis() as u64, "final upload assembled");
        crash::point("engine.assemble.committed");
        self.release_parts(&loaded).await;
        Ok(u)
    }

    /// Removes the parts of a final upload once it is assembled (tus "Concatenation" lets a
    /// server do so), so a file uploaded in parallel costs its size once, not twice. A part
    /// some other final still waits for is kept. Failures only cost space: the file is
    /// complete either way.
    async fn release_parts(&self, parts: &[Upload]) {
        for part in parts {
            let finals = match &part.concat {
                Some(Concat::Partial { finals }) => finals.clone(),
                _ => continue,
            };
            let mut needed = false;
            for f in &finals {
                if !matches!(self.get(f).await, Ok(fin) if fin.is_complete()) {
                    needed = true;
                }
            }
            if needed {
                continue;
            }
            match self.delete(&part.id).await {
                Ok(()) | Err(EngineError::NotFound) => {
                    tracing::debug!(part = %part.id, "part released after concatenation")
                }
                Err(e) => {
                    tracing::warn!(part = %part.id, error = %e, "could not release a part after concatenation")
                }
            }
        }
    }

    /// Deletes an upload: metadata first, then bytes. The record never points at bytes a
    /// crash can have removed; a crash in between leaves bytes no record needs, which the
    /// start-up sweep removes ([`Engine::recover`]).
    pub async fn delete(&self, id: &UploadId) -> Result<(), EngineError> {
        let waiting = {
            let lock = self.0.locks.entry(id);
            let _h = lock.hasher.lock().await;
            let _c = lock.commit.lock().await;
            let u = self.get(id).await?;
            self.0.meta.delete(id).await?;
            crash::point("engine.delete.forgotten");
            self.0.blobs.delete(id).await?;
            match u.concat {
                Some(Concat::Partial { finals }) => finals,
                _ => Vec::new(),
            }
        };
        // A final still waiting for this part can never be assembled now: it goes too
        // (tus termination of one part of a parallel upload ends the whole upload).
        for f in waiting {
            match self.get(&f).await {
                Ok(fin) if !fin.is_complete() => {
                    tracing::info!(final_id = %f, part = %id, "final upload removed with its deleted part");
                    Box::pin(self.delete(&f)).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes incomplete uploads idle for longer than `idle`; returns how many went.
    pub async fn expire(&self, idle: Duration) -> Result<usize, EngineError> {
        let before = Timestamp::from(SystemTime::now() - idle);
        let mut removed = 0;
        for id in self.0.meta.list_stale(before).await? {
            // An upload with a request in flight is not idle, whatever its record says; with
            // several nodes, the whole upload is leased so that no node starts writing it
            // meanwhile and only one node removes (and counts) it.
            let Some(res) = self.0.locks.reserve(&id, vec![0..u64::MAX]) else {
                continue;
            };
            let res = match &self.0.coord {
                Some(coord) => match coord.acquire(&id, &[0..u64::MAX], false).await? {
                    Some(lease) => res.with_lease(LeaseGuard::new(coord.clone(), lease)),
                    None => continue,
                },
                None => res,
            };
            let u = self.get(&id).await;
            if let Ok(u) = u
                && u.updated_at < before
                && !u.is_complete()
                && !self.parts_active(&u, before).await
            {
                self.delete(&id).await?;
                Stats::add(&self.0.stats.failed, u.dialect, 1);
                self.0.stats.expired.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%id, "expired incomplete upload removed");
                removed += 1;
            }
            drop(res);
        }
        Ok(removed)
    }

    /// A final upload is idle only when its parts are: its own record does not move while
    /// the parts are written.
    async fn parts_active(&self, u: &Upload, before: Timestamp) -> bool {
        let Some(Concat::Final { parts }) = &u.concat else {
            return false;
        };
        for p in parts {
            if let Ok(part) = self.get(p).await
                && part.updated_at >= before
            {
                return true;
            }
        }
        false
    }

    /// Start-up recovery: removes blobs no record needs ([`Engine::sweep`]), places staged
    /// chunks whose offset became known before the stop, and finishes uploads that were fully
    /// held (a crash between the last commit and completion). Returns how many were
    /// completed. Runs before the server takes requests.
    pub async fn recover(&self) -> Result<usize, EngineError> {
        match self.sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed blobs that no upload record needs"),
            Err(e) => tracing::warn!(error = %e, "sweep of unrecorded blobs failed"),
        }
        let mut done = 0;
        for id in self.0.meta.list_incomplete().await? {
            let Ok(u) = self.get(&id).await else { continue };
            // Staged chunks whose offset was known before the stop but were not placed yet.
            let u = match self.place_staged(u).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(%id, error = %e, "recovery could not place staged chunks");
                    continue;
                }
            };
            if matches!(u.concat, Some(Concat::Final { .. })) {
                match self.assemble(&id).await {
                    Ok(f) if f.is_complete() => done += 1,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(%id, error = %e, "recovery could not assemble final upload")
                    }
                }
                continue;
            }
            if let Some(len) = u.length
                && u.held.is_complete(len)
            {
                match self.finalize(&id).await {
                    Ok(_) => done += 1,
                    Err(e) => tracing::warn!(%id, error = %e, "recovery could not finish upload"),
                }
            }
        }
        Ok(done)
    }

    /// Removes the blobs that no metadata record needs: every blob of an upload without a
    /// record (a crash between creating a blob and recording it, or between forgetting an
    /// upload and removing its bytes), and staging blobs the record no longer lists (a crash
    /// between placing a chunk and removing its staging copy). Returns how many went.
    ///
    /// Only safe while nobody creates uploads (a blob exists briefly before its record):
    /// recovery calls it before the server takes requests, and the data directory's lock
    /// keeps a second process away. With nodes sharing the store (a coordinator), blobs
    /// touched within `SHARED_SWEEP_GRACE` (10 minutes) are left alone for that reason.
    pub async fn sweep(&self) -> Result<usize, EngineError> {
        let mut records: BTreeMap<UploadId, Option<Upload>> = BTreeMap::new();
        let mut removed = 0;
        for blob in self.0.blobs.list().await? {
            // Nodes sharing the store: another one may be between creating a blob and
            // recording it right now, so only blobs idle for a while are anyone's leftovers.
            if self.0.coord.is_some() {
                let recent = match self.0.blobs.modified(&blob.id).await {
                    Ok(t) => t.elapsed().map_or(true, |age| age < SHARED_SWEEP_GRACE),
                    Err(_) => true,
                };
                if recent {
                    continue;
                }
            }
            let record = match records.get(&blob.id) {
                Some(r) => r.clone(),
                None => {
                    let r = self.0.meta.get(&blob.id).await?;
                    records.insert(blob.id.clone(), r.clone());
                    if r.is_none() {
                        crash::point("engine.sweep.orphan");
                        self.0.blobs.delete(&blob.id).await?;
                        tracing::info!(id = %blob.id, "removed the blobs of an upload without a record");
                        removed += 1;
                    }
                    r
                }
            };
            if let (Some(u), Some(i)) = (record, blob.staging)
                && !u.chunks.as_ref().is_some_and(|c| c.staged.contains_key(&i))
            {
                self.0.blobs.remove_staged(&blob.id, i).await?;
                removed += 1;
            }
        }
        Ok(removed)
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
        let modified = self
            .0
            .blobs
            .modified(&u.id)
            .await
            .unwrap_or_else(|_| u.completed_at.unwrap_or(u.created_at).to_system_time());
        Ok((blob, modified))
    }

    /// Moves body bytes into the blob, batch by batch: while one batch is written and
    /// hashed on a blocking thread, the next is read from the socket.
    async fn pump<S, E>(
        &self,
        dialect: Dialect,
        worker: Worker,
        plan: &Plan,
        mut preempt: Option<tokio::sync::watch::Receiver<u64>>,
        mut body: S,
    ) -> Result<Pumped, EngineError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        let mut idle = Some(worker);
        let mut pending: Option<JoinHandle<(Worker, std::io::Result<()>)>> = None;
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batch_len = 0usize;
        let mut batch_pos = 0u64;
        let mut received = 0u64;
        let mut end = PumpEnd::Complete;
        let targets: Arc<[u64]> = plan.targets.clone().into();
        let writable: Arc<[Range<u64>]> = plan.writable.clone().into();

        loop {
            let next: Option<Result<Bytes, String>> = match preempt.as_mut() {
                None => body.next().await.map(|r| r.map_err(|e| e.to_string())),
                Some(rx) => tokio::select! {
                    biased;
                    // A newer request for this upload arrived: this one is stale (its client
                    // reconnected). End it like a cut-off body: what arrived is kept, and the
                    // newer request takes over from there.
                    _ = rx.changed() => Some(Err(SUPERSEDED.to_owned())),
                    n = body.next() => n.map(|r| r.map_err(|e| e.to_string())),
                },
            };
            let mut last = false;
            match next {
                Some(Ok(mut bytes)) => {
                    Stats::add(&self.0.stats.bytes_received, dialect, bytes.len() as u64);
                    let room = plan.limit - received;
                    if bytes.len() as u64 > room {
                        bytes.truncate(room as usize);
                        end = PumpEnd::TooLong;
                        last = true;
                    }
                    received += bytes.len() as u64;
                    batch_len += bytes.len();
                    if !bytes.is_empty() {
                        batch.push(bytes);
                    }
                }
                Some(Err(e)) => {
                    end = PumpEnd::Body(e.to_string());
                    last = true;
                }
                None => last = true,
            }
            if batch_len >= BATCH_BYTES || (last && batch_len > 0) {
                let worker = match pending.take() {
                    Some(h) => {
                        let (w, r) = h.await.map_err(|e| std::io::Error::other(e.to_string()))?;
                        r?;
                        w
                    }
                    None => idle.take().expect("worker is idle when nothing is pending"),
                };
                let bufs = std::mem::take(&mut batch);
                let pos = batch_pos;
                batch_pos += batch_len as u64;
                batch_len = 0;
                let (targets, writable) = (targets.clone(), writable.clone());
                pending = Some(spawn_blocking(move || {
                    let mut w = worker;
                    let r = write_batch(&mut w, &targets, &writable, pos, &bufs);
                    (w, r)
                }));
            }
            if last {
                break;
            }
        }
        let worker = match pending.take() {
            Some(h) => {
                let (w, r) = h.await.map_err(|e| std::io::Error::other(e.to_string()))?;
                r?;
                w
            }
            None => idle.take().expect("worker is idle when nothing is pending"),
        };
        Ok(Pumped {
            worker,
            received,
            end,
        })
    }
}

/// Where a raw write starts and how many bytes it may carry.
fn plan_raw(u: &Upload, mode: WriteMode, max: u64) -> Result<(u64, u64), EngineError> {
    if matches!(u.concat, Some(Concat::Final { .. })) {
        return Err(EngineError::FinalUpload);
    }
    if u.is_complete() {
        return Err(EngineError::AlreadyComplete);
    }
    let bound = u.length.unwrap_or(max);
    match mode {
        WriteMode::Append { offset } => {
            let held = u.offset();
            if offset != held {
                return Err(EngineError::OffsetMismatch { held, got: offset });
            }
            Ok((offset, bound.saturating_sub(offset)))
        }
        WriteMode::At { start, len } => {
            let end = start
                .checked_add(len)
                .ok_or_else(|| EngineError::Invalid("the range overflows".into()))?;
            if end > bound {
                return match u.length {
                    Some(length) => Err(EngineError::PastLength { length, end }),
                    None => Err(EngineError::TooLarge {
                        size: end,
                        max: bound,
                    }),
                };
            }
            Ok((start, len))
        }
    }
}

/// Marks chunk 0 as streaming with an unknown length while it lives.
struct ZeroOpen(Arc<UploadLock>);

impl ZeroOpen {
    fn set(lock: &Arc<UploadLock>) -> Self {
        lock.zero_open.store(true, Ordering::Release);
        ZeroOpen(lock.clone())
    }
}

impl Drop for ZeroOpen {
    fn drop(&mut self) {
        self.0.zero_open.store(false, Ordering::Release);
    }
}

/// Everything a chunk write needs to know before streaming.
#[derive(PartialEq)]
struct ChunkPlan {
    layout: ChunkLayout,
    /// Lowercase hex digest the chunk's bytes must have.
    expected: String,
    dest: ChunkDest,
    reserve: Vec<Range<u64>>,
    plan: Plan,
    staged_index: Option<usize>,
}

/// Decides where the bytes of chunk `chunk_id` go: known spans not yet held, chunk 0 at
/// offset 0 while the chunk size is still unknown, or a staging blob. `None` when every
/// position of the id is held already.
fn plan_chunk(
    u: &Upload,
    chunk_id: &str,
    max: u64,
    zero_open: bool,
) -> Result<Option<ChunkPlan>, EngineError> {
    if u.is_complete() {
        return Err(EngineError::AlreadyComplete);
    }
    let layout = u
        .chunks
        .clone()
        .ok_or_else(|| EngineError::Invalid("this upload has no chunk layout".into()))?;
    let indices: Vec<usize> = (0..layout.ids.len())
        .filter(|&i| layout.ids[i] == chunk_id)
        .collect();
    if indices.is_empty() {
        return Err(EngineError::UnknownChunk(chunk_id.to_owned()));
    }
    let expected = chunk_id
        .get(..layout.alg.hex_len())
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| EngineError::UnknownChunk(chunk_id.to_owned()))?;
    let mut spans = Vec::new();
    let mut unknown = Vec::new();
    for &i in &indices {
        match layout.span(i, u.length) {
            Some(span) if u.held.contains(span.clone()) => {}
            Some(span) => spans.push((i, span)),
            None if layout.staged.contains_key(&i) => {}
            None => unknown.push(i),
        }
    }
    if let Some((_, first)) = spans.first().cloned() {
        let len = first.end - first.start;
        spans.retain(|(_, s)| s.end - s.start == len);
    }
    let dest = if let Some(&(i, _)) = spans.first() {
        if zero_open {
            // Chunk 0 is still streaming with its length unknown and holds the whole data
            // range; rather than wait for it, stage this chunk and place it afterwards.
            ChunkDest::Staged(i)
        } else {
            ChunkDest::Spans(spans.into_iter().map(|(_, s)| s).collect())
        }
    } else if unknown.first() == Some(&0) {
        ChunkDest::OpenAtZero
    } else if let Some(&i) = unknown.first() {
        ChunkDest::Staged(i)
    } else {
        return Ok(None);
    };
    let bound = u.length.unwrap_or(max);
    let (reserve, plan, staged_index) = match &dest {
        ChunkDest::Spans(spans) => {
            let len = spans[0].end - spans[0].start;
            (
                spans.clone(),
                Plan {
                    targets: spans.iter().map(|s| s.start).collect(),
                    limit: len,
                    writable: vec![0..len],
                },
                None,
            )
        }
        ChunkDest::OpenAtZero => (
            vec![0..STAGING_BASE],
            Plan {
                targets: vec![0],
                limit: bound,
                writable: vec![0..bound],
            },
            None,
        ),
        ChunkDest::Staged(i) => (
            vec![STAGING_BASE + *i as u64..STAGING_BASE + *i as u64 + 1],
            Plan {
                targets: vec![0],
                limit: bound,
                writable: vec![0..bound],
            },
            Some(*i),
        ),
    };
    Ok(Some(ChunkPlan {
        layout,
        expected,
        dest,
        reserve,
        plan,
        staged_index,
    }))
}

/// Writes one batch (stream offset `pos`) at every target, skipping non-writable parts, and
/// feeds the hashers.
fn write_batch(
    w: &mut Worker,
    targets: &[u64],
    writable: &[Range<u64>],
    pos: u64,
    bufs: &[Bytes],
) -> std::io::Result<()> {
    let len: u64 = bufs.iter().map(|b| b.len() as u64).sum();
    let span = pos..pos + len;
    for part in writable {
        let s = part.start.max(span.start);
        let e = part.end.min(span.end);
        if s >= e {
            continue;
        }
        let slices = slice_bufs(bufs, s - pos, e - pos);
        for &t in targets {
            w.writer.write_at(t + s, &slices)?;
        }
    }
    for b in bufs {
        if let Some(h) = w.whole.as_mut() {
            h.update(b);
        }
        if let Some(h) = w.chunk.as_mut() {
            h.update(b);
        }
    }
    Ok(())
}

/// The bytes `from..to` (relative to the batch start) of a batch, without copying.
fn slice_bufs(bufs: &[Bytes], from: u64, to: u64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for b in bufs {
        let (bs, be) = (at, at + b.len() as u64);
        at = be;
        let s = from.max(bs);
        let e = to.min(be);
        if s < e {
            out.push(b.slice((s - bs) as usize..(e - bs) as usize));
        }
    }
    out
}

/// Refuses a chunk layout that contradicts a known length or the bytes already held (a
/// second handshake for the same file with other chunks): the number of chunks must be
/// what the length and chunk size give, and no held byte may lie past the length.
fn check_layout_fits(
    layout: &ChunkLayout,
    length: Option<u64>,
    held: &RangeSet,
) -> Result<(), EngineError> {
    let Some(len) = length else {
        return Ok(());
    };
    let n = layout.ids.len() as u64;
    let fits = match layout.chunk_size {
        _ if len == 0 => n == 0,
        Some(cs) if cs > 0 => len.div_ceil(cs) == n,
        _ => n > 0 && n <= len,
    };
    if !fits {
        return Err(EngineError::Invalid(format!(
            "{n} chunks do not make a file of {len} bytes{}; send the handshake with this file's own chunk ids",
            layout
                .chunk_size
                .map(|cs| format!(" in chunks of {cs} bytes"))
                .unwrap_or_default()
        )));
    }
    if held.iter().any(|r| r.end > len) {
        return Err(EngineError::LengthMismatch {
            known: held.iter().map(|r| r.end).max().unwrap_or(0),
            given: len,
        });
    }
    Ok(())
}

/// Reads the body of a chunk whose every position is held already (or whose file is
/// complete) and checks that its bytes have the digest its id names; nothing is written. An id
/// the layout does not have is [`EngineError::UnknownChunk`], a body longer than the chunk's
/// place [`EngineError::ChunkSize`]: a retry is answered as the first time, other bytes never.
pub async fn verify_chunk<S, E>(u: &Upload, chunk_id: &str, mut body: S) -> Result<(), EngineError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: Display,
{
    let Some(layout) = u.chunks.as_ref() else {
        return Ok(());
    };
    if !layout.ids.iter().any(|i| i == chunk_id) {
        return Err(EngineError::UnknownChunk(chunk_id.to_owned()));
    }
    let Some(expected) = chunk_id
        .get(..layout.alg.hex_len())
        .map(str::to_ascii_lowercase)
    else {
        return Err(EngineError::UnknownChunk(chunk_id.to_owned()));
    };
    let longest = (0..layout.ids.len())
        .filter(|&i| layout.ids[i] == chunk_id)
        .filter_map(|i| layout.span(i, u.length))
        .map(|s| s.end.saturating_sub(s.start))
        .max()
        .or(layout.staged.values().copied().max())
        .unwrap_or(u64::MAX);
    let mut hasher = Hasher::new(layout.alg);
    let mut received = 0u64;
    while let Some(frame) = body.next().await {
        let frame = frame.map_err(|e| EngineError::BodyInterrupted {
            received,
            reason: e.to_string(),
        })?;
        received += frame.len() as u64;
        if received > longest {
            return Err(EngineError::ChunkSize(format!(
                "chunk {chunk_id} is longer than its place in the file ({longest} bytes)"
            )));
        }
        // A rare path (a retry of a chunk already held), on body frames of a few KiB:
        // hashing them inline costs microseconds per frame.
        hasher.update(&frame);
    }
    let actual = hasher.finalize_hex();
    if actual != expected {
        return Err(EngineError::ChunkDigestMismatch { expected, actual });
    }
    Ok(())
}

async fn sync_worker(mut w: Worker) -> (Worker, std::io::Result<()>) {
    match spawn_blocking(move || {
        let r = w.writer.sync();
        (w, r)
    })
    .await
    {
        Ok(x) => x,
        Err(e) => panic!("sync task failed: {e}"),
    }
}

/// The whole-file hasher taken by one write, with a copy of its state before the write.
struct HashClaim<'a> {
    guard: Option<tokio::sync::MutexGuard<'a, Option<Hasher>>>,
    backup: Option<Hasher>,
}

impl HashClaim<'_> {
    fn none() -> Self {
        HashClaim {
            guard: None,
            backup: None,
        }
    }

    /// The write kept nothing: the hasher goes back to where it stood before.
    fn abandon(self) {
        if let Some(mut g) = self.guard {
            *g = self.backup;
        }
    }

    /// The write was committed (or not): keep the advanced hasher, or forget it so the next
    /// claim reloads the committed state from the record.
    fn settle(self, committed: bool, hasher: Option<Hasher>) {
        if let Some(mut g) = self.guard {
            *g = if committed { hasher } else { None };
        }
    }
}

fn load_hasher(u: &Upload) -> Result<Hasher, EngineError> {
    match &u.hash_progress {
        None => Ok(Hasher::new(u.content_alg)),
        Some(p) => {
            let raw = hex::decode(&p.state_hex)
                .map_err(|e| EngineError::Invalid(format!("stored hash state: {e}")))?;
            Hasher::restore(&raw).map_err(|e| EngineError::Invalid(e.to_string()))
        }
    }
}

/// Learns the layout from a chunk whose offset was not known: a non-last chunk fixes the
/// chunk size, the last one (once the size is known) fixes the total length.
fn learn_chunk(
    u: &mut Upload,
    index: usize,
    len: u64,
    n: usize,
    max: u64,
) -> Result<(), EngineError> {
    let length = u.length;
    let Some(layout) = u.chunks.as_mut() else {
        return Ok(());
    };
    if n == 1 {
        return match length {
            Some(l) if l != len => Err(EngineError::ChunkSize(format!(
                "the only chunk has {len} bytes, but the file was declared with {l}"
            ))),
            _ => {
                u.length = Some(len);
                Ok(())
            }
        };
    }
    if index + 1 < n {
        match layout.chunk_size {
            Some(cs) if cs != len => {
                return Err(EngineError::ChunkSize(format!(
                    "chunk {index} has {len} bytes but the other chunks have {cs}; every chunk but the last must have the same size (send size and chunkSize in the handshake)"
                )));
            }
            Some(_) => {}
            None => {
                if let Some(l) = length {
                    let lo = len.saturating_mul(n as u64 - 1);
                    let hi = len.saturating_mul(n as u64);
                    if l <= lo || l > hi {
                        return Err(EngineError::ChunkSize(format!(
                            "{n} chunks of {len} bytes cannot make a file of {l} bytes"
                        )));
                    }
                }
                layout.chunk_size = Some(len);
            }
        }
    }
    if index + 1 == n
        && let Some(cs) = layout.chunk_size
    {
        let start = cs.saturating_mul(n as u64 - 1);
        let total = start.saturating_add(len);
        match length {
            Some(l) if l != total => {
                return Err(EngineError::ChunkSize(format!(
                    "the last chunk has {len} bytes; with chunks of {cs} bytes it should have {}",
                    l.saturating_sub(start)
                )));
            }
            Some(_) => {}
            None => {
                if total > max {
                    return Err(EngineError::TooLarge { size: total, max });
                }
                u.length = Some(total);
            }
        }
    }
    // A non-last chunk may also pin the length of a staged last chunk.
    if u.length.is_none()
        && let (Some(cs), Some(&last_len)) = (
            u.chunks.as_ref().and_then(|c| c.chunk_size),
            u.chunks.as_ref().and_then(|c| c.staged.get(&(n - 1))),
        )
    {
        u.length = Some(cs.saturating_mul(n as u64 - 1).saturating_add(last_len));
    }
    Ok(())
}
