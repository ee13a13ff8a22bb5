//! Reservations, leases and preemption: a write reserves its byte ranges (and, with several
//! nodes, leases them) before it streams, and a newer append may stop a stale one.

use super::Engine;
use crate::coord::LeaseGuard;
use crate::error::EngineError;
use crate::lock::Reservation;
use crate::upload::{Upload, UploadId};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long [`Engine::preempt`] waits for preempted writes to commit what they received.
const PREEMPT_WAIT: Duration = Duration::from_secs(3);
/// How long a write waits for an overlapping write of the same upload to end.
const RESERVE_WAIT: Duration = Duration::from_secs(5);

impl Engine {
    /// Asks appending writes in flight on `id` to stop and commit what they received, and
    /// waits (briefly) until they have. Fronts call it when a client sends a new append (tus
    /// PATCH, IETF append, `X-Start-Byte`): a request still streaming at that point belongs
    /// to a connection the client has given up on, and waiting for the server to notice the
    /// dead connection could take minutes. Reads (HEAD, status) never preempt.
    pub async fn preempt(&self, id: &UploadId) {
        self.preempt_here(id).await;
    }

    /// [`Engine::preempt`] on this node only.
    pub(super) async fn preempt_here(&self, id: &UploadId) {
        if !self.is_streaming(id) {
            return;
        }
        let lock = self.0.locks.entry(id);
        // Receivers are the appending writes still streaming; nothing to stop without one.
        if lock.preempt.receiver_count() == 0 {
            return;
        }
        lock.preempt.send_modify(|g| *g = g.wrapping_add(1));
        let started = Instant::now();
        let deadline = started + PREEMPT_WAIT;
        // Waiting for the preempted write to commit is a wait for the upload's ranges too.
        let waited = lock.busy();
        while lock.busy() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if waited {
            let stats = &self.0.stats;
            stats.lock_waits.fetch_add(1, Ordering::Relaxed);
            stats
                .lock_wait_us
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
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
    pub(super) async fn reserve_fresh<P: PartialEq>(
        &self,
        owner: Option<&Option<String>>,
        id: &UploadId,
        first: Option<Upload>,
        append: bool,
        plan: impl Fn(&Upload) -> Result<Option<(P, Vec<Range<u64>>)>, EngineError>,
    ) -> Result<(Upload, Option<(P, Reservation)>), EngineError> {
        let started = Instant::now();
        let mut waited = false;
        let result = self
            .reserve_waiting(owner, id, first, append, plan, &mut waited)
            .await;
        // A wait is counted once it ends, however it ends.
        if waited {
            let stats = &self.0.stats;
            stats.lock_waits.fetch_add(1, Ordering::Relaxed);
            stats
                .lock_wait_us
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        result
    }

    /// [`Engine::reserve_fresh`]; sets `waited` when it had to wait for another request.
    async fn reserve_waiting<P: PartialEq>(
        &self,
        owner: Option<&Option<String>>,
        id: &UploadId,
        mut first: Option<Upload>,
        append: bool,
        plan: impl Fn(&Upload) -> Result<Option<(P, Vec<Range<u64>>)>, EngineError>,
        waited: &mut bool,
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
                    *waited = true;
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
}
