//! The whole-file hasher: claimed by a write that lands where it stands, caught up by reading
//! held bytes back, and restored from the state committed with the record.

use super::{Engine, READ_BLOCK};
use crate::error::EngineError;
use crate::hash::Hasher;
use crate::lock::UploadLock;
use crate::store::{BlobKind, BlobRead};
use crate::upload::{Upload, UploadId};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::task::spawn_blocking;

/// The most a write catches the hasher up by reading held bytes back before it streams: a
/// restored BLAKE3 state lags by at most 2 MiB.
const INLINE_CATCH_UP: u64 = 4 << 20;

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

/// The whole-file hasher taken by one write, with a copy of its state before the write.
pub(super) struct HashClaim<'a> {
    guard: Option<tokio::sync::MutexGuard<'a, Option<Hasher>>>,
    backup: Option<Hasher>,
}

impl HashClaim<'_> {
    pub(super) fn none() -> Self {
        HashClaim {
            guard: None,
            backup: None,
        }
    }

    /// The write kept nothing: the hasher goes back to where it stood before.
    pub(super) fn abandon(self) {
        if let Some(mut g) = self.guard {
            *g = self.backup;
        }
    }

    /// The write was committed (or not): keep the advanced hasher, or forget it so the next
    /// claim reloads the committed state from the record.
    pub(super) fn settle(self, committed: bool, hasher: Option<Hasher>) {
        if let Some(mut g) = self.guard {
            *g = if committed { hasher } else { None };
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
