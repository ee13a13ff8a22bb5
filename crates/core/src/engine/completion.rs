//! Completion: finishing an upload whose bytes are all held (digest checked, blob published
//! atomically), and final uploads assembled from their parts (tus concatenation).

use super::hashing::load_hasher;
use super::write::record_stored;
use super::{Engine, NewUpload, STALE_RETRIES};
use crate::crash;
use crate::error::EngineError;
use crate::hash::Hasher;
use crate::hooks::EventKind;
use crate::store::BlobKind;
use crate::upload::{Concat, Timestamp, Upload, UploadId, UploadState};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Engine {
    /// After a commit: finish the upload when every byte is held, otherwise let the hasher
    /// catch up with bytes that arrived out of order.
    pub(super) async fn after_commit(&self, u: Upload) -> Result<Upload, EngineError> {
        if let Some(len) = u.length
            && u.held.is_complete(len)
            && !u.is_complete()
        {
            return self.finalize(&u.id).await;
        }
        if !self.0.blobs.capabilities().positional {
            self.settle_soon(&u);
        }
        let hashed = u.hash_progress.as_ref().map_or(0, |p| p.position);
        // Catching up reads unfinished bytes back, which only a positional store can.
        if u.held.prefix_end() > hashed && self.0.blobs.capabilities().positional {
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

    /// On a part store, composes in the background the cells that pieces of several writes
    /// now cover whole, so completion finds them as parts (its time then does not grow with
    /// the upload). One pass per upload at a time on this node; a node that dies mid-pass
    /// leaves the pieces, which completion composes.
    fn settle_soon(&self, u: &Upload) {
        let Some(state) = u.blob.as_ref() else { return };
        if state.cells_in_pieces(u.length).is_empty() {
            return;
        }
        let lock = self.0.locks.entry(&u.id);
        if lock.settling.swap(true, Ordering::AcqRel) {
            return;
        }
        let (engine, id) = (self.clone(), u.id.clone());
        tokio::spawn(async move {
            if let Err(e) = engine.settle(&id).await {
                tracing::debug!(%id, error = %e, "composing cells from pieces deferred");
            }
            lock.settling.store(false, Ordering::Release);
        });
    }

    async fn settle(&self, id: &UploadId) -> Result<(), EngineError> {
        let lock = self.0.locks.entry(id);
        let _composing = lock.composing.lock().await;
        let u = self.get(id).await?;
        if u.is_complete() {
            return Ok(());
        }
        let stored = self.0.blobs.settle(&u).await?;
        if stored.is_empty() {
            return Ok(());
        }
        self.commit(
            id,
            &lock,
            |u| {
                record_stored(u, &stored);
                Ok(())
            },
            None,
        )
        .await?;
        self.drop_spent(&stored.spent).await;
        Ok(())
    }

    /// Completes an upload whose bytes are all held: finishes the whole-file digest, checks
    /// it against the declared one, publishes the blob atomically, and records completion.
    /// Idempotent, so recovery after a crash at any point simply calls it again.
    ///
    /// With a pre-finish hook, the hook is asked after the digest is verified and before
    /// the upload is published; a refusal leaves the upload incomplete with every byte held
    /// (the next request, or a background retry when the hook could not be reached,
    /// asks again).
    pub async fn finalize(&self, id: &UploadId) -> Result<Upload, EngineError> {
        let u = match self.finalize_one(id).await {
            Ok(u) => u,
            Err(e) => {
                if matches!(e, EngineError::HookUnavailable { .. }) {
                    self.finish_later(id, Duration::from_secs(2));
                }
                return Err(e);
            }
        };
        // A completed part may be the last one some final upload was waiting for.
        if let Some(Concat::Partial { finals }) = &u.concat {
            for f in finals {
                if let Err(e) = self.assemble(f).await {
                    if matches!(e, EngineError::HookUnavailable { .. }) {
                        self.finish_later(f, Duration::from_secs(2));
                    }
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
        // After a background settle pass, so the record read below lists the parts it sent.
        let _composing = lock.composing.lock().await;
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
        // A part store cannot read unfinished bytes: it publishes first, and the bytes the
        // hasher has not seen are read once from the published object.
        let positional = self.0.blobs.capabilities().positional;
        if !positional {
            self.0.blobs.publish_for(&u).await?;
        }
        if hasher.position() < len {
            // After a crash between publish and the metadata commit the bytes are already in
            // the complete blob.
            let kind = if positional {
                BlobKind::Partial
            } else {
                BlobKind::Complete
            };
            let blob = match self.0.blobs.open(id, kind).await {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && positional => {
                    self.0.blobs.open(id, BlobKind::Complete).await?
                }
                Err(e) => return Err(e.into()),
            };
            hasher = self.hash_range(blob, hasher, len).await?;
        }
        // Kept for a pre-finish refusal: the next attempt need not hash the file again.
        let kept = self
            .hooks_for(EventKind::PreFinish)
            .is_some()
            .then(|| hasher.clone());
        let digest = hasher.finalize_hex();
        if let Some(declared) = &u.declared
            && declared.hex != digest
        {
            tracing::warn!(%id, expected = %declared.hex, actual = %digest, "whole-file digest mismatch; upload discarded");
            // Forgotten first, removed second: the record never points at removed bytes.
            self.0.meta.delete(id).await?;
            crash::point("engine.discard.forgotten");
            self.0.blobs.delete_for(&u).await?;
            self.0
                .stats
                .dialect(u.dialect)
                .failed
                .fetch_add(1, Ordering::Relaxed);
            self.notify(EventKind::PostTerminate, &u).await;
            return Err(EngineError::FileDigestMismatch {
                expected: declared.hex.clone(),
                actual: digest,
            });
        }
        crash::point("engine.finalize.verified");
        if let Err(e) = self.pre_finish(&u).await {
            *hslot = kept;
            tracing::info!(%id, error = %e, "pre-finish hook did not allow completion; every byte stays held");
            return Err(e);
        }
        if positional {
            self.0.blobs.publish_for(&u).await?;
        }
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
        self.0
            .stats
            .dialect(u.dialect)
            .completed
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(%id, length = len, rehashed = rehash, finalize_ms = started.elapsed().as_millis() as u64, "upload complete");
        drop(_c);
        drop(_composing);
        drop(hslot);
        self.notify(EventKind::PostFinish, &u).await;
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
    pub(super) async fn assemble(&self, id: &UploadId) -> Result<Upload, EngineError> {
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
                let stored = self
                    .0
                    .blobs
                    .copy_complete_for(&part.id, &u, offset, len)
                    .await?;
                // Only this call's publish reads it: a crash before the commit assembles
                // again from the parts.
                record_stored(&mut u, &stored);
            }
            offset += len;
        }
        self.check_size(offset)?;
        crash::point("engine.assemble.copied");
        u.length = Some(offset);
        u.held = Default::default();
        u.held.insert(0..offset);
        // A part store publishes first and hashes the published object; a positional one
        // hashes the assembled partial blob, then publishes.
        let positional = self.0.blobs.capabilities().positional;
        if !positional {
            self.0.blobs.publish_for(&u).await?;
        }
        let kind = if positional {
            BlobKind::Partial
        } else {
            BlobKind::Complete
        };
        let blob = self.0.blobs.open(id, kind).await?;
        let digest = self
            .hash_range(blob, Hasher::new(u.content_alg), offset)
            .await?
            .finalize_hex();
        if let Err(e) = self.pre_finish(&u).await {
            tracing::info!(%id, error = %e, "pre-finish hook did not allow assembling the final upload");
            return Err(e);
        }
        if positional {
            self.0.blobs.publish_for(&u).await?;
        }
        crash::point("engine.assemble.published");
        let now = Timestamp::now();
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
        self.0
            .stats
            .dialect(u.dialect)
            .completed
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(%id, length = offset, parts = loaded.len(), assemble_ms = started.elapsed().as_millis() as u64, "final upload assembled");
        crash::point("engine.assemble.committed");
        drop(_c);
        drop(_h);
        self.notify(EventKind::PostFinish, &u).await;
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
            match self.remove(&part.id, false).await {
                Ok(()) | Err(EngineError::NotFound) => {
                    tracing::debug!(part = %part.id, "part released after concatenation")
                }
                Err(e) => {
                    tracing::warn!(part = %part.id, error = %e, "could not release a part after concatenation")
                }
            }
        }
    }
}
