//! The whole-file hasher: claimed by a write that lands where it stands, caught up by reading
//! held bytes back, and restored from the state committed with the record.

use super::write::{Worker, hash_into};
use super::{Engine, READ_BLOCK};
use crate::error::EngineError;
use crate::hash::Hasher;
use crate::lock::UploadLock;
use crate::parts::BlobDelta;
use crate::store::{BlobKind, BlobRead};
use crate::upload::{Upload, UploadId};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::task::spawn_blocking;

/// The most a write catches the hasher up by reading held bytes back before it streams: a
/// restored BLAKE3 state lags by at most 2 MiB.
const INLINE_CATCH_UP: u64 = 4 << 20;
/// How long a chunk whose bytes have all arrived waits for the whole-file hasher another
/// request holds before hashing its bytes alone (the file digest then reads them back).
const CLAIM_PATIENCE: Duration = Duration::from_secs(1);

impl Engine {
    /// Takes the whole-file hasher when `offset` is exactly where it stands (or a few MiB
    /// past it, over held bytes it reads back first); otherwise the bytes will be hashed
    /// later by a catch-up pass.
    pub(super) async fn claim_hasher<'a>(
        &self,
        lock: &'a Arc<UploadLock>,
        u: &Upload,
        offset: u64,
    ) -> (HashClaim<'a>, Option<Hasher>) {
        match lock.hasher.try_lock() {
            Ok(guard) => self.claim_from(lock, guard, u, offset).await,
            Err(_) => (HashClaim::none(), None),
        }
    }

    /// [`Engine::claim_hasher`] for a chunk whose bytes have all arrived. With chunks sent in
    /// file order, the hasher is usually held by the chunk just before this one, finishing,
    /// or stands before bytes other requests are still writing: this waits (up to
    /// [`CLAIM_PATIENCE`] in all) for it to be let go, and for those writes to move it here.
    pub(super) async fn claim_hasher_waiting<'a>(
        &self,
        lock: &'a Arc<UploadLock>,
        u: &Upload,
        offset: u64,
    ) -> (HashClaim<'a>, Option<Hasher>) {
        let deadline = tokio::time::Instant::now() + CLAIM_PATIENCE;
        loop {
            let Ok(mut guard) = tokio::time::timeout_at(deadline, lock.hasher.lock()).await else {
                return (HashClaim::none(), None);
            };
            // Registered before anything is checked, so no change after the check is missed.
            let changed = lock.hasher_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if guard.is_none() {
                match load_hasher(u) {
                    Ok(h) => *guard = Some(h),
                    Err(_) => return (HashClaim::none(), None),
                }
            }
            let at = guard.as_ref().map_or(offset, Hasher::position);
            // Wait only when every byte between the hasher and this chunk is held or being
            // written: those writes, or the catch-up after them, move the hasher here. With
            // a gap nobody writes (chunks sent out of order), waiting would gain nothing.
            let arriving = at < offset
                && match self.get(&u.id).await {
                    Ok(now) => lock.writing_all_of(&now.held.gaps_in(at..offset)),
                    Err(_) => false,
                };
            if !arriving {
                return self.claim_from(lock, guard, u, offset).await;
            }
            drop(guard);
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return (HashClaim::none(), None);
            }
        }
    }

    async fn claim_from<'a>(
        &self,
        lock: &'a UploadLock,
        mut guard: tokio::sync::MutexGuard<'a, Option<Hasher>>,
        u: &Upload,
        offset: u64,
    ) -> (HashClaim<'a>, Option<Hasher>) {
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
                    released: Some(&lock.hasher_changed),
                },
                Some(hasher),
            )
        } else {
            // The inline catch-up may have moved it: tell whoever waits for it.
            *guard = Some(hasher);
            drop(guard);
            lock.hasher_changed.notify_waiters();
            (HashClaim::none(), None)
        }
    }

    /// Hashes a body kept in memory (see [`KeptBytes`]) now that it has all arrived, with the
    /// whole-file hasher when it can be claimed at `start` (both digests in one pass), and
    /// makes the worker's bytes durable in the same blocking task: bytes synced become held
    /// only at the commit, so syncing a body that then fails its check is harmless.
    pub(super) async fn hash_kept<'a>(
        &self,
        lock: &'a Arc<UploadLock>,
        u: &Upload,
        start: u64,
        mut worker: Worker,
        bufs: Vec<Bytes>,
    ) -> Result<(HashClaim<'a>, Worker, std::io::Result<BlobDelta>), EngineError> {
        let (claim, whole) = self.claim_hasher_waiting(lock, u, start).await;
        worker.whole = whole;
        let (worker, synced) = spawn_blocking(move || {
            hash_into(&mut worker, &bufs);
            drop(bufs);
            let r = worker.writer.sync().map(|()| worker.writer.stored());
            (worker, r)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok((claim, worker, synced))
    }

    /// Advances the whole-file hasher over the held prefix by reading the bytes back.
    pub(super) async fn catch_up(&self, id: &UploadId) -> Result<(), EngineError> {
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
        drop(guard);
        lock.hasher_changed.notify_waiters();
        Ok(())
    }

    /// Feeds `hasher` with the blob's bytes from its position up to `end`.
    pub(super) async fn hash_range(
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
}

/// Most bytes of one body kept in memory until it has all arrived.
const KEEP_CHUNK_MAX: u64 = 16 << 20;
/// Most bytes of all bodies in flight kept in memory at once; past it, bodies are hashed as
/// they stream.
const KEEP_BUDGET: u64 = 64 << 20;

/// A body's share of [`KEEP_BUDGET`], given back when dropped.
pub(super) struct KeptBytes {
    engine: Engine,
    bytes: u64,
}

impl KeptBytes {
    pub(super) fn reserve(engine: &Engine, bytes: u64) -> Option<Self> {
        if bytes > KEEP_CHUNK_MAX {
            return None;
        }
        engine
            .0
            .kept_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held + bytes <= KEEP_BUDGET).then_some(held + bytes)
            })
            .ok()?;
        Some(KeptBytes {
            engine: engine.clone(),
            bytes,
        })
    }
}

impl Drop for KeptBytes {
    fn drop(&mut self) {
        self.engine
            .0
            .kept_bytes
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The whole-file hasher taken by one write, with a copy of its state before the write.
/// Letting it go (by any path) tells the chunks waiting for it.
pub(super) struct HashClaim<'a> {
    guard: Option<tokio::sync::MutexGuard<'a, Option<Hasher>>>,
    backup: Option<Hasher>,
    released: Option<&'a tokio::sync::Notify>,
}

impl HashClaim<'_> {
    pub(super) fn none() -> Self {
        HashClaim {
            guard: None,
            backup: None,
            released: None,
        }
    }

    /// The write kept nothing: the hasher goes back to where it stood before.
    pub(super) fn abandon(mut self) {
        if let Some(g) = self.guard.as_mut() {
            **g = self.backup.take();
        }
    }

    /// The write was committed (or not): keep the advanced hasher, or forget it so the next
    /// claim reloads the committed state from the record.
    pub(super) fn settle(mut self, committed: bool, hasher: Option<Hasher>) {
        if let Some(g) = self.guard.as_mut() {
            **g = if committed { hasher } else { None };
        }
    }
}

impl Drop for HashClaim<'_> {
    fn drop(&mut self) {
        if self.guard.take().is_some()
            && let Some(released) = self.released
        {
            released.notify_waiters();
        }
    }
}

pub(super) fn load_hasher(u: &Upload) -> Result<Hasher, EngineError> {
    match &u.hash_progress {
        None => Ok(Hasher::new(u.content_alg)),
        Some(p) => {
            let raw = hex::decode(&p.state_hex)
                .map_err(|e| EngineError::Invalid(format!("stored hash state: {e}")))?;
            Hasher::restore(&raw).map_err(|e| EngineError::Invalid(e.to_string()))
        }
    }
}
