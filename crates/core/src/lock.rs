//! Per-upload coordination inside one server process.
//!
//! Parallel chunks of one upload must be able to stream at the same time, so the lock is not
//! one mutex per upload but three parts:
//! - *reservations*: byte ranges a request is writing; a second request whose range overlaps
//!   one in flight is refused ([`crate::EngineError::Busy`]) instead of interleaving bytes;
//! - the *commit* mutex: serialises the read-modify-write of the metadata record, which is
//!   short and never spans a request body;
//! - the *hasher* slot: the whole-file hasher and the right to advance it.
//!
//! Entries live while someone holds them, and the [`RECENT`] most recently used stay alive
//! after that, so memory follows the number of active uploads, not the number ever seen.
//! Keeping recent ones matters for the hasher: a client sends an upload as a series of
//! requests (tus PATCHes, chunks), and each should find the hasher where the last one left
//! it, not rebuild it from the saved state (a BLAKE3 state resumes up to 2 MiB early, and
//! those bytes would be read back from the file).
//!
//! Between processes there is [`lock_file`], the exclusive file lock behind the rules of one
//! server per data directory and one store per SQLite database.

use crate::hash::Hasher;
use crate::upload::UploadId;
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

pub struct UploadLock {
    inflight: Mutex<Vec<InFlight>>,
    /// Serialises metadata read-modify-write for this upload.
    pub commit: tokio::sync::Mutex<()>,
    /// The whole-file hasher, when loaded; whoever holds the guard may advance it.
    pub hasher: tokio::sync::Mutex<Option<Hasher>>,
    /// Told whenever the hasher may have moved, or a write that might move it ended: a
    /// holder let it go, or a reservation was released. Pieces waiting for the hasher to
    /// reach them look again.
    pub hasher_changed: tokio::sync::Notify,
    /// Chunk 0 is streaming before the chunk size is known, reserving the whole data range;
    /// other chunks are staged meanwhile instead of waiting for it.
    pub zero_open: AtomicBool,
    /// Bumped to ask appending writes in flight to stop where they are (a newer request for
    /// the same upload means the client gave up on them); see `Engine::preempt`.
    pub preempt: tokio::sync::watch::Sender<u64>,
    /// A part store is composing cells of this upload from their pieces (one pass at a time
    /// on this node).
    pub settling: AtomicBool,
    /// Held while parts are composed and recorded (a background settle pass) and while an
    /// upload is published: two of them at once would upload the same part numbers, and the
    /// part list one of them completes with would not be what the store holds. Taken before
    /// `commit`, never while holding it.
    pub composing: tokio::sync::Mutex<()>,
}

impl Default for UploadLock {
    fn default() -> Self {
        UploadLock {
            inflight: Mutex::default(),
            commit: tokio::sync::Mutex::default(),
            hasher: tokio::sync::Mutex::default(),
            hasher_changed: tokio::sync::Notify::new(),
            zero_open: AtomicBool::default(),
            preempt: tokio::sync::watch::Sender::new(0),
            settling: AtomicBool::default(),
            composing: tokio::sync::Mutex::default(),
        }
    }
}

/// A reserved range and how far its writer has got.
struct InFlight {
    range: Range<u64>,
    /// Body bytes the writer has received so far (see [`Reservation::written`]).
    written: Arc<AtomicU64>,
}

impl UploadLock {
    /// When writes in flight hold reservations covering every byte of `ranges`: how many of
    /// those bytes their writers have not received yet. `None` when some byte is not being
    /// written at all.
    pub fn missing_in_flight(&self, ranges: &[Range<u64>]) -> Option<u64> {
        let mut inflight: Vec<(Range<u64>, u64)> = self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|f| (f.range.clone(), f.written.load(Ordering::Relaxed)))
            .collect();
        inflight.sort_by_key(|(f, _)| f.start);
        let mut missing = 0;
        for r in ranges {
            let mut at = r.start;
            for (f, written) in &inflight {
                if f.start <= at && at < f.end {
                    let end = f.end.min(r.end);
                    missing += end.saturating_sub(at.max(f.start.saturating_add(*written)));
                    at = f.end;
                }
            }
            if at < r.end {
                return None;
            }
        }
        Some(missing)
    }

    /// True while any write holds a reservation.
    pub fn busy(&self) -> bool {
        !self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

/// How many idle uploads keep their entry (and loaded hasher, a few KiB) in memory.
pub const RECENT: usize = 256;

#[derive(Default)]
pub struct Locks {
    /// Weak handles: an entry dies with the last holder, a request or [`Locks::recent`].
    /// Dead handles are swept as the map grows.
    map: Mutex<HashMap<UploadId, Weak<UploadLock>>>,
    /// Strong handles to the most recently used entries, oldest first.
    recent: Mutex<VecDeque<Arc<UploadLock>>>,
}

impl Locks {
    pub fn entry(&self, id: &UploadId) -> Arc<UploadLock> {
        let lock = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(id).and_then(Weak::upgrade) {
                Some(live) => live,
                None => {
                    if map.len() >= 64 && map.len().is_power_of_two() {
                        map.retain(|_, w| w.strong_count() > 0);
                    }
                    let fresh = Arc::new(UploadLock::default());
                    map.insert(id.clone(), Arc::downgrade(&fresh));
                    fresh
                }
            }
        };
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = recent.iter().rposition(|l| Arc::ptr_eq(l, &lock)) {
            // Most recent last; already there is the common case (the same upload's next
            // request), so this is usually a check of the last element.
            if at + 1 != recent.len() {
                let l = recent.remove(at).expect("index from rposition");
                recent.push_back(l);
            }
        } else {
            recent.push_back(lock.clone());
            if recent.len() > RECENT {
                recent.pop_front();
            }
        }
        drop(recent);
        lock
    }

    /// Reserves `ranges` of `id` for writing; fails when any overlaps a range in flight.
    pub fn reserve(&self, id: &UploadId, ranges: Vec<Range<u64>>) -> Option<Reservation> {
        let lock = self.entry(id);
        let written = Arc::new(AtomicU64::new(0));
        {
            let mut inflight = lock.inflight.lock().unwrap_or_else(|e| e.into_inner());
            let overlaps = ranges.iter().any(|r| {
                inflight
                    .iter()
                    .any(|f| r.start < f.range.end && f.range.start < r.end && r.start < r.end)
            });
            if overlaps {
                return None;
            }
            inflight.extend(ranges.iter().map(|r| InFlight {
                range: r.clone(),
                written: written.clone(),
            }));
        }
        Some(Reservation {
            lock,
            ranges,
            written,
            lease: None,
        })
    }

    /// Number of live entries (for tests and metrics).
    pub fn live(&self) -> usize {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.values().filter(|w| w.strong_count() > 0).count()
    }
}

/// Ranges reserved by one request; released on drop, whatever way the request ends.
pub struct Reservation {
    pub lock: Arc<UploadLock>,
    ranges: Vec<Range<u64>>,
    written: Arc<AtomicU64>,
    /// The same ranges leased from the nodes' coordinator, when there is one.
    lease: Option<crate::coord::LeaseGuard>,
}

impl Reservation {
    pub fn with_lease(mut self, lease: crate::coord::LeaseGuard) -> Reservation {
        self.lease = Some(lease);
        self
    }

    /// Where the writer reports how many body bytes it has received; each reserved range
    /// is taken to be written from its start that far (a body lands at every range of its
    /// reservation alike).
    pub fn written(&self) -> &AtomicU64 {
        &self.written
    }

    /// Whether the ranges are this node's alone, with no lease shared with other nodes.
    pub fn is_local(&self) -> bool {
        self.lease.is_none()
    }

    /// Whether the ranges are still this request's across nodes (always, on one node).
    pub fn lease_held(&self) -> bool {
        self.lease
            .as_ref()
            .is_none_or(crate::coord::LeaseGuard::held)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut inflight = self.lock.inflight.lock().unwrap_or_else(|e| e.into_inner());
        for r in &self.ranges {
            if let Some(pos) = inflight
                .iter()
                .position(|f| f.range == *r && Arc::ptr_eq(&f.written, &self.written))
            {
                inflight.swap_remove(pos);
            }
        }
        drop(inflight);
        self.lock.hasher_changed.notify_waiters();
    }
}

/// Async mutexes by name, each kept only while someone holds or waits for it: for work that
/// must take turns per name where no upload exists to hang a lock on (creating the upload of
/// a key; checking a tenant's limits and recording what they allowed).
#[derive(Default)]
pub(crate) struct KeyedLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// A held [`KeyedLocks`] entry; the entry goes when its last holder or waiter does.
pub(crate) struct KeyedGuard<'a> {
    locks: &'a KeyedLocks,
    pub(crate) key: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// Whether another holder had it first (this one waited for it).
    pub(crate) waited: bool,
}

impl KeyedLocks {
    pub(crate) async fn lock(&self, key: &str) -> KeyedGuard<'_> {
        let m = {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.to_owned()).or_default().clone()
        };
        let (guard, waited) = match m.clone().try_lock_owned() {
            Ok(g) => (g, false),
            Err(_) => (m.lock_owned().await, true),
        };
        KeyedGuard {
            locks: self,
            key: key.to_owned(),
            guard: Some(guard),
            waited,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.0.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map's own reference left: nobody holds or waits for it (clones are made
        // under the map's lock, so none can appear meanwhile).
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}

/// Takes the exclusive lock (`flock`) of the file at `path`, created if needed; the lock
/// lasts until the file closes, however the process ends. `Ok(None)`: another process (or
/// another open file in this one) holds it. For the one-process-at-a-time rules of a data
/// directory and of a SQLite database.
pub fn lock_file(path: &std::path::Path) -> std::io::Result<Option<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keyed_locks_take_turns_per_key_and_forget_unused_keys() {
        let locks = KeyedLocks::default();
        let a = locks.lock("a").await;
        assert!(!a.waited);
        // Another key is free at once.
        let b = locks.lock("b").await;
        assert!(!b.waited);
        drop(b);
        assert_eq!(locks.len(), 1, "a released key is forgotten");
        // The same key waits for the holder.
        let second = locks.lock("a");
        tokio::pin!(second);
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), second.as_mut()).await;
        assert!(early.is_err(), "the second holder did not wait");
        drop(a);
        let again = second.await;
        assert!(again.waited);
        assert_eq!(locks.len(), 1);
        drop(again);
        assert_eq!(locks.len(), 0, "no entry outlives its holders");
    }

    #[test]
    fn overlapping_reservations_are_refused_disjoint_ones_coexist() {
        let locks = Locks::default();
        let id = UploadId::generate();
        let a = locks.reserve(&id, vec![0..10]).expect("first");
        assert!(locks.reserve(&id, vec![5..15]).is_none());
        let b = locks.reserve(&id, vec![10..20]).expect("adjacent is fine");
        drop(a);
        let c = locks.reserve(&id, vec![5..10]).expect("released");
        drop(b);
        drop(c);
        // The idle entry stays among the recent ones until RECENT others were used.
        assert_eq!(locks.live(), 1);
        assert!(
            locks.reserve(&id, vec![0..20]).is_some(),
            "nothing left reserved"
        );
        for _ in 0..RECENT {
            drop(locks.entry(&UploadId::generate()));
        }
        assert_eq!(
            locks.live(),
            RECENT,
            "memory is bounded by RECENT idle entries"
        );
        let first = locks.map.lock().unwrap().get(&id).map(|w| w.strong_count());
        assert_eq!(first, Some(0), "the oldest idle entry was dropped");
    }

    #[test]
    fn missing_in_flight_counts_what_writers_have_not_received() {
        let locks = Locks::default();
        let id = UploadId::generate();
        let lock = locks.entry(&id);
        let a = locks.reserve(&id, vec![10..20]).unwrap();
        let b = locks.reserve(&id, vec![0..10]).unwrap();
        let _c = locks.reserve(&id, vec![30..40]).unwrap();
        assert_eq!(lock.missing_in_flight(&[0..20]), Some(20));
        b.written().store(10, Ordering::Relaxed);
        a.written().store(4, Ordering::Relaxed);
        assert_eq!(lock.missing_in_flight(&[0..20]), Some(6));
        assert_eq!(lock.missing_in_flight(&[5..15, 30..35]), Some(1 + 5));
        assert_eq!(lock.missing_in_flight(&[]), Some(0));
        assert_eq!(
            lock.missing_in_flight(&[0..21]),
            None,
            "byte 20 is not in flight"
        );
        assert_eq!(lock.missing_in_flight(&[15..35]), None);
        drop(a);
        assert_eq!(lock.missing_in_flight(&[0..20]), None, "released");
    }
}
