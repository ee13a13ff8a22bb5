//! Coordination between nodes that share one metadata database and one blob store.
//!
//! Inside one process [`crate::lock::Locks`] keeps two writers of the same bytes apart. With
//! several nodes a write also takes a *lease* on its byte ranges from a [`Coordinator`]
//! shared by all nodes (the database), so a request on node B that overlaps one streaming on
//! node A is refused like a local one. Leases expire unless their node renews them, so a
//! node killed mid-write frees its ranges within seconds; a node that could not renew in
//! time stops acknowledging (the engine checks [`Lease::held`] before it commits), so it
//! never acknowledges bytes another node may own by then.
//!
//! An append that finds the upload leased elsewhere asks the holder to stop
//! ([`Coordinator::preempt`]): the holder's process hears it on [`Coordinator::preemptions`]
//! and stops its append like a cut connection, which commits what arrived and frees the
//! lease.
//!
//! One node alone needs none of this: the engine runs without a coordinator.

use crate::store::MetaError;
use crate::upload::{Upload, UploadId};
use async_trait::async_trait;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A lease on byte ranges of one upload, held by this node.
#[derive(Debug)]
pub struct Lease {
    /// The coordinator's handle for it.
    pub token: i64,
    /// False once the coordinator could not renew it in time (it may have expired).
    valid: Arc<AtomicBool>,
    /// The upload's record as it stood once the lease was in place, when the coordinator
    /// read it in the same round trip ([`Lease::with_record`]).
    record: Option<Upload>,
}

impl Lease {
    pub fn new(token: i64, valid: Arc<AtomicBool>) -> Lease {
        Lease {
            token,
            valid,
            record: None,
        }
    }

    /// A lease that carries the upload's record, read after the lease was taken: no write
    /// by another node can have changed the leased ranges since, so the engine plans from it
    /// instead of reading the record again.
    pub fn with_record(mut self, record: Upload) -> Lease {
        self.record = Some(record);
        self
    }

    /// The record read with the lease, once.
    pub fn take_record(&mut self) -> Option<Upload> {
        self.record.take()
    }

    /// Whether this node still holds the lease, as far as it knows: renewed in time.
    pub fn held(&self) -> bool {
        self.valid.load(Ordering::Acquire)
    }
}

/// Cross-node leases and preemption, shared by every node of a deployment.
#[async_trait]
pub trait Coordinator: Send + Sync + 'static {
    /// Leases `ranges` of `id` to this node (`append`: the write is an append, which a newer
    /// append may preempt). `Ok(None)` when another node holds an overlapping live lease.
    async fn acquire(
        &self,
        id: &UploadId,
        ranges: &[Range<u64>],
        append: bool,
    ) -> Result<Option<Lease>, MetaError>;
    /// Gives a lease back. Never waits: the coordinator may send it with its next statement
    /// or shortly after. Best effort: a lease that is never released expires.
    fn release(&self, lease: &Lease);
    /// Whether any node holds a live lease on `id` (expiry leaves such uploads alone).
    async fn is_leased(&self, id: &UploadId) -> Result<bool, MetaError>;
    /// Asks whichever node holds an append lease on `id` to stop that append.
    async fn preempt(&self, id: &UploadId) -> Result<(), MetaError>;
    /// Uploads other nodes asked this node to stop appending to.
    fn preemptions(&self) -> tokio::sync::broadcast::Receiver<UploadId>;
}

/// A lease that goes back to the coordinator when dropped (the request ended).
pub struct LeaseGuard {
    coord: Arc<dyn Coordinator>,
    lease: Option<Lease>,
}

impl LeaseGuard {
    pub fn new(coord: Arc<dyn Coordinator>, lease: Lease) -> LeaseGuard {
        LeaseGuard {
            coord,
            lease: Some(lease),
        }
    }

    pub fn held(&self) -> bool {
        self.lease.as_ref().is_some_and(Lease::held)
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.coord.release(&lease);
        }
    }
}
