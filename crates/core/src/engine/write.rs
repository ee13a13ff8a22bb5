//! The raw byte write path: a body streamed batch by batch into the partial blob at its final
//! offsets, hashed on the way, made durable, then committed.

use super::commit::CommitHere;
use super::hashing::{HashClaim, KeptBytes, Pace};
use super::{BodyCheck, Engine, WriteMode, WriteOutcome};
use crate::error::EngineError;
use crate::hash::Hasher;
use crate::parts::BlobDelta;
use crate::store::BlobWrite;
use crate::upload::{Concat, Dialect, Upload, UploadId};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::fmt::Display;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::task::{JoinHandle, spawn_blocking};

/// Bytes gathered from the body before one positional write: large enough that the per-write
/// cost (a blocking-pool hop, a syscall) is amortised, small enough to keep memory flat.
/// 256 KiB rather than 512: 32 uploads at once peak at 43 instead of 58 MiB (W3), and one
/// 1 GiB PATCH is no slower (paired runs: 1,015 against 961 MiB/s, 1.08 against 1.19 CPU
/// s/GiB, medians of 6).
const BATCH_BYTES: usize = 256 << 10;
/// Why a preempted write ended.
const SUPERSEDED: &str = "superseded by a newer request for the same upload";

/// Plan for one streamed body.
#[derive(PartialEq)]
pub(super) struct Plan {
    /// Offsets where stream byte 0 lands (several for duplicate chunks).
    pub(super) targets: Vec<u64>,
    /// Most bytes the body may carry.
    pub(super) limit: u64,
    /// Stream-relative parts that may be written (bytes already held are skipped).
    pub(super) writable: Vec<Range<u64>>,
}

pub(super) struct Worker {
    pub(super) writer: Box<dyn BlobWrite>,
    /// The whole-file hasher, when this write holds it.
    pub(super) whole: Option<Hasher>,
    /// The digest of this request's body (a chunk's id, a tus checksum).
    pub(super) chunk: Option<Hasher>,
    /// The body's bytes, kept (not copied) to be hashed once it has all arrived, usually
    /// together with the whole-file hasher (see `Engine::hash_kept`).
    pub(super) kept: Option<Vec<Bytes>>,
}

pub(super) enum PumpEnd {
    Complete,
    Body(String),
    TooLong,
}

/// A request body as the pump reads it.
pub(super) struct Incoming<'a, S> {
    pub(super) body: S,
    /// How many of its bytes have arrived so far (the reservation's counter, read by pieces
    /// waiting for this one).
    pub(super) written: &'a AtomicU64,
    /// Told when a newer request for the same upload arrives (appends only): this one then
    /// ends where it is.
    pub(super) preempt: Option<tokio::sync::watch::Receiver<u64>>,
}

pub(super) struct Pumped {
    pub(super) worker: Worker,
    /// Bytes of the body accepted (written where writable), ≤ plan.limit.
    pub(super) received: u64,
    pub(super) end: PumpEnd,
    /// The durability point, when the blocking task that wrote the last batch made it (see
    /// [`AtEnd`]); `None`: not made yet.
    pub(super) synced: Option<std::io::Result<BlobDelta>>,
    /// The commit, when that task made it too; `None`: not made.
    pub(super) committed: Option<Result<Upload, EngineError>>,
}

/// What the blocking task that writes a body's last batch does besides: each step saves the
/// request a blocking-pool round trip of its own.
pub(super) enum AtEnd {
    /// Nothing; the caller syncs and commits.
    Nothing,
    /// The durability point. Bytes synced become held only at the commit, so syncing before
    /// the caller's checks is harmless; not with a checksum (a refused body syncs nothing),
    /// nor on a part store (its sync uploads objects), nor for a kept body (it syncs after
    /// its hashing).
    Sync,
    /// The durability point, then the commit of the ranges written (raw writes, whose
    /// `targets` are their one start), when it can be made there (see [`CommitHere`]).
    SyncAndCommit(Box<CommitHere>),
}

/// What a batch's blocking task hands back: the worker, the write's result, and the sync's
/// and the commit's when the task also made them.
type BatchDone = (
    Worker,
    std::io::Result<()>,
    Option<std::io::Result<BlobDelta>>,
    Option<Result<Upload, EngineError>>,
);

impl Engine {
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
        let writer = self.0.blobs.writer_for(&u).await?;
        let (mut claim, whole) = if fully_new {
            self.claim_hasher(&ulock, &u, start).await
        } else {
            (HashClaim::none(), None)
        };
        let positional = self.0.blobs.capabilities().positional;
        // A range the whole-file hasher is not at yet (parallel pieces: Content-Range,
        // resumable.js) keeps its body in memory and is hashed once it has all arrived,
        // usually with the hasher, instead of being read back later (see `hash_kept`).
        let kept = match mode {
            WriteMode::At { .. }
                if whole.is_none() && fully_new && check.is_none() && positional =>
            {
                KeptBytes::reserve(self, limit)
            }
            _ => None,
        };
        let body_hasher = check.as_ref().map(|c| Hasher::new(c.alg));
        let started = Instant::now();
        let pumped = self
            .pump(
                u.dialect,
                Worker {
                    writer,
                    whole,
                    chunk: body_hasher,
                    kept: kept.as_ref().map(|_| Vec::new()),
                },
                &plan,
                Incoming {
                    body,
                    written: reservation.written(),
                    preempt,
                },
                if check.is_some() || !positional || kept.is_some() {
                    AtEnd::Nothing
                } else if reservation.is_local() {
                    // One node: no lease to check before committing.
                    AtEnd::SyncAndCommit(Box::new(CommitHere {
                        meta: self.0.meta.clone(),
                        lock: ulock.clone(),
                        base: u.clone(),
                    }))
                } else {
                    AtEnd::Sync
                },
            )
            .await;
        let Pumped {
            mut worker,
            received,
            end,
            synced: mut pre_synced,
            committed: pre_committed,
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
        if let Some(bufs) = worker.kept.take()
            && received > 0
        {
            let synced;
            let pace = Pace {
                bytes: received,
                took: started.elapsed(),
            };
            (claim, worker, synced) = self
                .hash_kept(&ulock, &u, start, pace, worker, bufs)
                .await?;
            pre_synced = Some(synced);
        }
        drop(kept);
        let accepted_ranges = accepted_ranges(&plan.writable, start, received);
        let accepted: u64 = accepted_ranges.iter().map(|r| r.end - r.start).sum();
        if !reservation.lease_held() {
            // Another node may own these bytes by now: acknowledge nothing, free nothing.
            claim.abandon();
            return Err(EngineError::Busy);
        }
        let committed = if received > 0 {
            let synced;
            (worker, synced) = match pre_synced {
                Some(synced) => (worker, synced),
                None => sync_worker(worker).await,
            };
            let stored = synced?;
            let whole = worker.whole.take();
            let u = match pre_committed {
                Some(u) => u,
                None => {
                    self.commit_on(
                        id,
                        &reservation.lock,
                        Some(u.clone()),
                        |u| {
                            for r in &accepted_ranges {
                                u.held.insert(r.clone());
                            }
                            record_stored(u, &stored);
                            Ok(())
                        },
                        whole.as_ref(),
                    )
                    .await
                }
            };
            claim.settle(u.is_ok(), whole);
            let u = u?;
            self.drop_spent(&stored.spent).await;
            self.notify(crate::hooks::EventKind::PostReceive, &u).await;
            Some(u)
        } else {
            claim.abandon();
            None
        };
        drop(reservation);
        let upload = match committed {
            Some(u) => self.after_commit(u).await?,
            // With hooks, an upload whose completion a pre-finish hook held up is finished
            // by its next write, even one with nothing new (a tus PATCH of 0 bytes).
            None if self.has_hooks() => self.after_commit(self.get(id).await?).await?,
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

    /// Removes the pieces a commit stopped listing (their bytes are in a part now).
    pub(super) async fn drop_spent(&self, spent: &[String]) {
        if spent.is_empty() {
            return;
        }
        if let Err(e) = self.0.blobs.drop_pieces(spent).await {
            tracing::warn!(error = %e, pieces = spent.len(), "could not remove pieces already in a part");
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

    /// Moves body bytes into the blob, batch by batch: while one batch is written and
    /// hashed on a blocking thread, the next is read from the socket.
    pub(super) async fn pump<S, E>(
        &self,
        dialect: Dialect,
        worker: Worker,
        plan: &Plan,
        incoming: Incoming<'_, S>,
        at_end: AtEnd,
    ) -> Result<Pumped, EngineError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        let Incoming {
            mut body,
            written,
            mut preempt,
        } = incoming;
        let mut idle = Some(worker);
        let mut pending: Option<JoinHandle<BatchDone>> = None;
        let mut at_end = Some(at_end);
        let (mut synced, mut committed) = (None, None);
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batch_len = 0usize;
        let mut batch_pos = 0u64;
        let mut received = 0u64;
        let mut end = PumpEnd::Complete;
        let targets: Arc<[u64]> = plan.targets.clone().into();
        let writable: Arc<[Range<u64>]> = plan.writable.clone().into();
        let received_counter = self.0.stats.dialect(dialect);

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
                    received_counter
                        .bytes_received
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    let room = plan.limit - received;
                    if bytes.len() as u64 > room {
                        bytes.truncate(room as usize);
                        end = PumpEnd::TooLong;
                        last = true;
                    }
                    received += bytes.len() as u64;
                    written.store(received, Ordering::Relaxed);
                    batch_len += bytes.len();
                    if !bytes.is_empty() {
                        batch.push(bytes);
                    }
                    // A body of known length says when its last byte is in: its last batch
                    // then goes out with the durability point at once, instead of waiting
                    // for the stream's end to be polled and syncing in a round trip of its
                    // own (a 256 KiB PATCH fills its batch exactly on its last frame).
                    if body.size_hint().1 == Some(0) {
                        last = true;
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
                        let (w, r, _, _) =
                            h.await.map_err(|e| std::io::Error::other(e.to_string()))?;
                        r?;
                        w
                    }
                    None => idle.take().expect("worker is idle when nothing is pending"),
                };
                let bufs = std::mem::take(&mut batch);
                let pos = batch_pos;
                batch_pos += batch_len as u64;
                let batch_end = batch_pos;
                batch_len = 0;
                let (targets, writable) = (targets.clone(), writable.clone());
                let end_work = if last { at_end.take() } else { None };
                pending = Some(spawn_blocking(move || {
                    let mut w = worker;
                    let r = write_batch(&mut w, &targets, &writable, pos, &bufs);
                    let (synced, committed) = match end_work {
                        Some(AtEnd::Sync) if r.is_ok() => (Some(sync_here(&mut w)), None),
                        Some(AtEnd::SyncAndCommit(here)) if r.is_ok() => {
                            let synced = sync_here(&mut w);
                            let committed = synced.as_ref().ok().and_then(|stored| {
                                let ranges = accepted_ranges(&writable, targets[0], batch_end);
                                here.run(
                                    |u| {
                                        for r in ranges {
                                            u.held.insert(r);
                                        }
                                        record_stored(u, stored);
                                    },
                                    w.whole.as_ref(),
                                )
                            });
                            (Some(synced), committed)
                        }
                        _ => (None, None),
                    };
                    (w, r, synced, committed)
                }));
            }
            if last {
                break;
            }
        }
        let worker = match pending.take() {
            Some(h) => {
                let (w, r, s, c) = h.await.map_err(|e| std::io::Error::other(e.to_string()))?;
                r?;
                (synced, committed) = (s, c);
                w
            }
            None => idle.take().expect("worker is idle when nothing is pending"),
        };
        Ok(Pumped {
            worker,
            received,
            end,
            synced,
            committed,
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
    hash_into(w, bufs);
    if let Some(kept) = w.kept.as_mut() {
        kept.extend(bufs.iter().cloned());
    }
    Ok(())
}

/// Feeds bytes to the worker's hashers (both at once when it holds two).
pub(super) fn hash_into(w: &mut Worker, bufs: &[Bytes]) {
    match (w.whole.as_mut(), w.chunk.as_mut()) {
        (Some(whole), Some(chunk)) => {
            for b in bufs {
                Hasher::update_both(whole, chunk, b);
            }
        }
        (Some(h), None) | (None, Some(h)) => {
            for b in bufs {
                h.update(b);
            }
        }
        (None, None) => {}
    }
}

/// The durability point of the worker's bytes, and what they added to the blob's state.
fn sync_here(w: &mut Worker) -> std::io::Result<BlobDelta> {
    w.writer.sync().map(|()| w.writer.stored())
}

/// The upload's ranges a raw write starting at `start` filled: its writable parts (relative
/// to the stream) as far as `received` bytes reached.
fn accepted_ranges(writable: &[Range<u64>], start: u64, received: u64) -> Vec<Range<u64>> {
    writable
        .iter()
        .filter(|w| w.start < received)
        .map(|w| start + w.start..start + w.end.min(received))
        .collect()
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

/// Makes the worker's bytes durable; returns what they added to the upload's blob state.
pub(super) async fn sync_worker(mut w: Worker) -> (Worker, std::io::Result<BlobDelta>) {
    match spawn_blocking(move || {
        let r = sync_here(&mut w);
        (w, r)
    })
    .await
    {
        Ok(x) => x,
        Err(e) => panic!("sync task failed: {e}"),
    }
}

/// Adds what a write stored to the upload's blob state (nothing for positional stores).
pub(super) fn record_stored(u: &mut Upload, stored: &BlobDelta) {
    if !stored.is_empty() {
        u.blob.get_or_insert_default().apply(stored);
    }
}
