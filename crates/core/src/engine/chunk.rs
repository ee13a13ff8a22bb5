//! The chunk dialect's layout and writes: where a chunk goes (its spans, offset 0 while the
//! chunk size is unknown, or a staging blob), the all-or-nothing chunk write, staged chunks
//! placed once their offset is known, and the layout learnt from the chunks themselves.

use super::hashing::{HashClaim, KeptBytes, Pace};
use super::write::{AtEnd, Incoming, Plan, PumpEnd, Pumped, Worker, record_stored, sync_worker};
use super::{Engine, READ_BLOCK, STAGING_BASE, WriteOutcome};
use crate::crash;
use crate::error::EngineError;
use crate::hash::{HashAlg, Hasher};
use crate::lock::UploadLock;
use crate::ranges::RangeSet;
use crate::store::BlobKind;
use crate::upload::{ChunkLayout, Upload, UploadId};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::fmt::Display;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::task::spawn_blocking;

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

impl Engine {
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
            Some(i) => self.0.blobs.staging_writer_for(&u, i).await?,
            None => self.0.blobs.writer_for(&u).await?,
        };
        // A chunk with a known place is hashed once it has all arrived, when the whole-file
        // hasher has usually reached it (chunks sent in file order finish in file order):
        // both digests then come from one pass over bytes still in memory, with nothing
        // read back. Too large a chunk, or too many bytes kept already, is hashed as it
        // streams, and the file digest reads it back later unless it streams at the
        // hasher's position.
        let start = plan.targets.first().copied();
        let kept = match (&dest, start) {
            (ChunkDest::Spans(_), Some(_)) if self.0.blobs.capabilities().positional => {
                KeptBytes::reserve(self, plan.limit)
            }
            _ => None,
        };
        let (mut claim, whole) = match (&dest, start) {
            _ if kept.is_some() => (HashClaim::none(), None),
            (ChunkDest::Staged(_), _) | (_, None) => (HashClaim::none(), None),
            (_, Some(t)) => self.claim_hasher(&ulock, &u, t).await,
        };
        let started = Instant::now();
        let pumped = self
            .pump(
                u.dialect,
                Worker {
                    writer,
                    whole,
                    chunk: kept.is_none().then(|| Hasher::new(layout.alg)),
                    kept: kept.as_ref().map(|_| Vec::new()),
                },
                &plan,
                Incoming {
                    body,
                    written: reservation.written(),
                    preempt: None,
                },
                AtEnd::Nothing,
            )
            .await;
        let Pumped {
            mut worker,
            received,
            end,
            ..
        } = match pumped {
            Ok(p) => p,
            Err(e) => {
                claim.abandon();
                return Err(e);
            }
        };
        let mut pre_synced = None;
        if let Some(bufs) = worker.kept.take()
            && matches!(end, PumpEnd::Complete)
            && let Some(t) = start
        {
            worker.chunk = Some(Hasher::new(layout.alg));
            let synced;
            let pace = Pace {
                bytes: received,
                took: started.elapsed(),
            };
            (claim, worker, synced) = self.hash_kept(&ulock, &u, t, pace, worker, bufs).await?;
            pre_synced = Some(synced);
        }
        drop(kept);
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
        (worker, synced) = match pre_synced {
            Some(synced) => (worker, synced),
            None => sync_worker(worker).await,
        };
        let stored = match synced {
            Ok(stored) => stored,
            Err(e) => {
                claim.abandon();
                return Err(e.into());
            }
        };
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
                |u| {
                    match &dest {
                        ChunkDest::Spans(spans) => {
                            for s in spans {
                                u.held.insert(s.clone());
                            }
                        }
                        ChunkDest::OpenAtZero => {
                            learn_chunk(u, 0, received, n, self.0.cfg.max_upload_size)?;
                            u.held.insert(0..received);
                        }
                        ChunkDest::Staged(i) => {
                            learn_chunk(u, *i, received, n, self.0.cfg.max_upload_size)?;
                            if let Some(c) = u.chunks.as_mut() {
                                c.staged.insert(*i, received);
                            }
                        }
                    }
                    record_stored(u, &stored);
                    Ok(())
                },
                whole.as_ref(),
            )
            .await;
        claim.settle(result.is_ok(), whole);
        drop(reservation);
        let u = result?;
        self.drop_spent(&stored.spent).await;
        let u = self.place_staged(u).await?;
        let u = self.fill_duplicates(u, chunk_id).await?;
        self.notify(crate::hooks::EventKind::PostReceive, &u).await;
        let accepted = match &dest {
            ChunkDest::Spans(spans) => spans.iter().map(|s| s.end - s.start).sum(),
            _ => received,
        };
        let upload = self.after_commit(u).await?;
        Ok(WriteOutcome { upload, accepted })
    }

    /// Equal chunks share an id (plain digests without a suffix), and one upload of the id
    /// must fill every position. Positions whose offset only became known after the bytes
    /// landed (the chunk size was inferred from this very chunk) are filled here by copying
    /// the chunk from a held position.
    async fn fill_duplicates(&self, u: Upload, chunk_id: &str) -> Result<Upload, EngineError> {
        let Some(layout) = u.chunks.as_ref() else {
            return Ok(u);
        };
        // Copying from a held position reads unfinished bytes back; a part store cannot, and
        // such a position stays missing until the client sends it.
        if !self.0.blobs.capabilities().positional {
            return Ok(u);
        }
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
    pub(super) async fn place_staged(&self, u: Upload) -> Result<Upload, EngineError> {
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
            // Another request may have placed this chunk (and removed its staging blob)
            // since `ready` was read: with the span reserved, the record decides.
            let current = self.get(&id).await?;
            let still_staged = current
                .chunks
                .as_ref()
                .is_some_and(|c| c.staged.get(&i) == Some(&len));
            last = current;
            if !still_staged {
                continue;
            }
            let mut stored = crate::parts::BlobDelta::default();
            let placed = match self
                .0
                .blobs
                .place_staged_for(&last, i, span.start, len)
                .await
            {
                Ok(delta) => {
                    stored = delta;
                    true
                }
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
                        record_stored(u, &stored);
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

/// Refuses a chunk layout that contradicts a known length or the bytes already held (a
/// second handshake for the same file with other chunks): the number of chunks must be
/// what the length and chunk size give, and no held byte may lie past the length.
pub(super) fn check_layout_fits(
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
