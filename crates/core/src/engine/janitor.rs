//! Housekeeping: expiry of idle uploads, start-up recovery, and the sweep of blobs no record
//! needs.

use super::Engine;
use crate::coord::LeaseGuard;
use crate::crash;
use crate::error::EngineError;
use crate::hooks::EventKind;
use crate::upload::{Concat, Timestamp, Upload, UploadId};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

/// With several nodes on one store, the start-up sweep leaves blobs younger than this alone.
const SHARED_SWEEP_GRACE: Duration = Duration::from_secs(600);

impl Engine {
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
                && !self.finished_instead(&u).await
            {
                self.delete(&id).await?;
                self.0
                    .stats
                    .dialect(u.dialect)
                    .failed
                    .fetch_add(1, Ordering::Relaxed);
                self.0.stats.expired.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%id, "expired incomplete upload removed");
                removed += 1;
            }
            drop(res);
        }
        Ok(removed)
    }

    /// With a pre-finish hook, an upload whose bytes are all held may be idle only because
    /// the hook was not reachable when it was finished: it is finished now rather than
    /// removed. True when it was, or when the hook still cannot be reached (it is kept);
    /// false when it should expire (the hook refused it, or it is not fully held).
    async fn finished_instead(&self, u: &Upload) -> bool {
        if self.hooks_for(EventKind::PreFinish).is_none() {
            return false;
        }
        let held = match (&u.concat, u.length) {
            (Some(Concat::Final { .. }), _) => true,
            (_, Some(len)) => u.held.is_complete(len),
            _ => false,
        };
        if !held {
            return false;
        }
        match self.finish(&u.id).await {
            Ok(done) => done.is_complete(),
            Err(EngineError::HookUnavailable { .. }) => true,
            Err(_) => false,
        }
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
            // A pre-finish hook is asked in the background: a slow or unreachable receiver
            // must not hold up the start.
            let held = matches!(u.concat, Some(Concat::Final { .. }))
                || u.length.is_some_and(|len| u.held.is_complete(len));
            if held && self.hooks_for(EventKind::PreFinish).is_some() {
                self.finish_later(&id, std::time::Duration::ZERO);
                continue;
            }
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
}
