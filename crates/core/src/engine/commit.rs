//! Commits: the metadata record read fresh, changed and written back under the upload's
//! commit lock, retried when another node changed it meanwhile.

use super::{Engine, STALE_RETRIES};
use crate::crash;
use crate::error::EngineError;
use crate::hash::Hasher;
use crate::lock::UploadLock;
use crate::store::{Meta, MetaError};
use crate::upload::{HashProgress, Timestamp, Upload, UploadId};
use std::sync::Arc;

impl Engine {
    /// Reads the metadata record fresh, applies `change`, records hasher progress, and writes
    /// it back, all under the upload's commit lock.
    pub(super) async fn commit(
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
    pub(super) async fn commit_on(
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
            note_progress(&mut u, hasher);
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
    pub(super) async fn save(&self, u: &mut Upload) -> Result<(), EngineError> {
        match self.0.meta.update(u).await {
            Ok(()) => {
                u.version += 1;
                Ok(())
            }
            Err(MetaError::Stale) => Err(EngineError::Busy),
            Err(e) => Err(e.into()),
        }
    }
}

/// Records the whole-file hasher's progress in the record (never moving it backwards).
fn note_progress(u: &mut Upload, hasher: Option<&Hasher>) {
    if let Some(h) = hasher {
        let stored = u.hash_progress.as_ref().map_or(0, |p| p.position);
        if h.position() > stored || u.hash_progress.is_none() {
            u.hash_progress = Some(HashProgress {
                position: h.position(),
                state_hex: hex::encode(h.save()),
            });
        }
    }
}

/// A commit made by the blocking task that wrote and synced a request's last bytes, right
/// after its durability point: one blocking-pool round trip per request instead of two.
/// It is what [`Engine::commit_on`] does with the record the write started from, on the
/// calling thread; whenever that cannot be (the metadata store is a server, another commit
/// of the upload is under way, the record changed meanwhile), it does nothing and the
/// request commits as before.
pub(super) struct CommitHere {
    pub(super) meta: Meta,
    pub(super) lock: Arc<UploadLock>,
    /// The record the write planned from.
    pub(super) base: Upload,
}

impl CommitHere {
    /// Commits `change` applied to the base record, with the hasher's progress; `None`
    /// when this must be left to [`Engine::commit_on`].
    pub(super) fn run(
        self: Box<Self>,
        change: impl FnOnce(&mut Upload),
        hasher: Option<&Hasher>,
    ) -> Option<Result<Upload, EngineError>> {
        let CommitHere {
            meta,
            lock,
            base: mut u,
        } = *self;
        // Blocking threads never wait for the async commit lock: a commit under way
        // elsewhere is left to the async path, which queues behind it.
        let _c = lock.commit.try_lock().ok()?;
        crash::point("engine.commit");
        change(&mut u);
        note_progress(&mut u, hasher);
        u.updated_at = Timestamp::now();
        match meta.update_here(&u)? {
            Ok(()) => {
                u.version += 1;
                Some(Ok(u))
            }
            // Changed since the write read it: the async path reads it afresh.
            Err(MetaError::Stale) => None,
            Err(e) => Some(Err(e.into())),
        }
    }
}
