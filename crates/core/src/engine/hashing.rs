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
/// The longest a piece whose bytes have all arrived waits for the whole-file hasher before
/// hashing its bytes alone (the file digest then reads them back).
const CLAIM_PATIENCE: Duration = Duration::from_secs(1);
/// A piece waits for the bytes still arriving ahead of it only when, at the pace its own body
/// came in, they should all be there within this: with fast clients (where hashing once
/// instead of twice matters) that is the common case, and a slow or stalled request ahead
/// does not hold a finished piece's answer back.
const WAIT_FOR_BYTES_WITHIN: Duration = Duration::from_millis(100);

/// A waiting piece looks again this long (plus twice the time the bytes it waits for should
/// take) after its last news; bytes ahead that have not moved by then are not waited for.
const LOOK_AGAIN: Duration = Duration::from_millis(200);

/// How fast a piece's own body arrived: `bytes` in `took`.
#[derive(Clone, Copy)]
pub(super) struct Pace {
    pub(super) bytes: u64,
    pub(super) took: Duration,
}

impl Pace {
    /// How long `bytes` take at this pace.
    fn time_for(self, bytes: u64) -> Duration {
        let nanos = (bytes as u128 * self.took.as_nanos()) / (self.bytes.max(1) as u128);
        Duration::from_nanos(nanos.min(u64::MAX as u128) as u64)
    }

    /// Whether `missing` bytes should arrive within [`WAIT_FOR_BYTES_WITHIN`] at this pace.
    fn soon(self, missing: u64) -> bool {
        missing == 0 || self.time_for(missing) <= WAIT_FOR_BYTES_WITHIN
    }
}

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

    /// [`Engine::claim_hasher`] for a piece whose bytes have all arrived (at `pace`). With
    /// pieces sent in file order, the hasher is usually held by the piece just before this
    /// one, finishing, or stands before bytes other requests are still writing: this waits
    /// (up to [`CLAIM_PATIENCE`] in all) for it to be let go, and for those writes to move it
    /// here when they are nearly done.
    pub(super) async fn claim_hasher_waiting<'a>(
        &self,
        lock: &'a Arc<UploadLock>,
        u: &Upload,
        offset: u64,
        pace: Pace,
    ) -> (HashClaim<'a>, Option<Hasher>) {
        let deadline = tokio::time::Instant::now() + CLAIM_PATIENCE;
        // Bytes still missing ahead when the last wait ran out without news: waiting on
        // needs them to have moved since (a stalled request ahead is not waited for).
        let mut stuck_at: Option<u64> = None;
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
            // Wait only when every byte between the hasher and this piece is held or being
            // written, and those still arriving should be here soon and are coming in:
            // those writes, or the catch-up after them, move the hasher here. With a gap
            // nobody writes (pieces sent out of order), waiting would gain nothing.
            let missing = if at < offset {
                match self.get(&u.id).await {
                    Ok(now) => lock.missing_in_flight(&now.held.gaps_in(at..offset)),
                    Err(_) => None,
                }
            } else {
                None
            };
            let Some(missing) = missing
                .filter(|&m| pace.soon(m) && (m == 0 || stuck_at.is_none_or(|before| m < before)))
            else {
                return self.claim_from(lock, guard, u, offset).await;
            };
            drop(guard);
            let look_again = tokio::time::Instant::now() + 2 * pace.time_for(missing) + LOOK_AGAIN;
            match tokio::time::timeout_at(look_again.min(deadline), changed).await {
                Ok(()) => stuck_at = None,
                Err(_) if look_again >= deadline => return (HashClaim::none(), None),
                Err(_) => stuck_at = Some(missing),
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
        pace: Pace,
        mut worker: Worker,
        bufs: Vec<Bytes>,
    ) -> Result<(HashClaim<'a>, Worker, std::io::Result<BlobDelta>), EngineError> {
        let (claim, whole) = self.claim_hasher_waiting(lock, u, start, pace).await;
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
