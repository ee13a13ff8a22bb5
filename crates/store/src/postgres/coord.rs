//! [`PgCoordinator`]: leases and preemption for nodes sharing one PostgreSQL database
//! ([`ferry_core::coord`]).
//!
//! - A lease is rows of `ferry_leases` under one token, taken by `ferry_take_lease` (one
//!   round trip, under the upload's advisory lock), which also returns the upload's record
//!   as read once the lease is in place, so the write needs no read of its own.
//! - A released lease is deleted by this node's next `ferry_take_lease` (it passes the
//!   tokens along), or by a batched `DELETE` at most [`RELEASE_DELAY`] later: a request
//!   costs two statements of ours (the take and the commit), not three. Until then another
//!   node's take finds the range busy and retries, as it would while the write ran.
//! - Leases last [`TTL`]; a task renews this node's every [`RENEW_EVERY`] in one statement.
//!   A lease the renewal did not find (expired, taken over), or every lease when renewals
//!   have failed for longer than [`TTL`] minus a margin, is marked lost, and the engine
//!   then acknowledges nothing under it. A node killed with `kill -9` stops renewing, so its
//!   leases are free [`TTL`] after the last renewal: within 4 s.
//! - Preemption is `NOTIFY ferry_preempt, '<upload id>'`; every node `LISTEN`s on a
//!   connection of its own (reconnecting after a failure) and forwards the ids.

use super::{PgMetaStore, backend};
use async_trait::async_trait;
use ferry_core::coord::{Coordinator, Lease};
use ferry_core::store::MetaError;
use ferry_core::upload::UploadId;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls};

/// How long a lease lives without renewal.
pub const TTL: Duration = Duration::from_secs(3);
/// How often this node renews its leases.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// A lease counts as lost locally this long before it could expire in the database.
const MARGIN: Duration = Duration::from_millis(700);
/// A released lease waits at most this long for a take to carry its deletion.
pub const RELEASE_DELAY: Duration = Duration::from_millis(25);

const TAKE: &str =
    "SELECT o_token, o_record, o_version FROM ferry_take_lease($1, $2, $3, $4, $5, $6, $7)";
const RELEASE: &str = "DELETE FROM ferry_leases WHERE token = ANY($1)";
const RENEW: &str = "UPDATE ferry_leases
    SET expires_at = clock_timestamp() + $2::int4 * interval '1 millisecond'
    WHERE token = ANY($1) AND expires_at >= clock_timestamp()
    RETURNING token";
const LEASED: &str = "SELECT EXISTS (SELECT 1 FROM ferry_leases WHERE upload_id = $1 AND expires_at >= clock_timestamp())";
const NOTIFY: &str = "SELECT pg_notify('ferry_preempt', $1)";

/// Leases held by this node: token → the flag its [`Lease`] reads.
type Held = Mutex<HashMap<i64, Arc<AtomicBool>>>;

pub struct PgCoordinator {
    store: PgMetaStore,
    /// This process, in `ferry_leases.node` (for operators looking at the table).
    node: String,
    held: Arc<Held>,
    /// Released leases whose rows are not deleted yet.
    released: Mutex<Vec<i64>>,
    /// Wakes the task that deletes released leases no take carried.
    release_soon: Arc<tokio::sync::Notify>,
    asks: broadcast::Sender<UploadId>,
}

impl PgCoordinator {
    /// Starts the renewal and `LISTEN` tasks (they end when the coordinator is dropped).
    pub async fn start(store: &PgMetaStore) -> Result<Arc<PgCoordinator>, MetaError> {
        let (asks, _) = broadcast::channel(256);
        let coord = Arc::new(PgCoordinator {
            store: store.clone(),
            node: format!(
                "{}-{}",
                std::process::id(),
                &UploadId::generate().as_str()[..8]
            ),
            held: Arc::default(),
            released: Mutex::default(),
            release_soon: Arc::default(),
            asks,
        });
        tokio::spawn(renew(Arc::downgrade(&coord)));
        tokio::spawn(flush_releases(
            Arc::downgrade(&coord),
            coord.release_soon.clone(),
        ));
        tokio::spawn(listen(
            store.config.clone(),
            coord.asks.clone(),
            Arc::downgrade(&coord),
        ));
        Ok(coord)
    }
}

fn ttl_ms() -> i32 {
    TTL.as_millis() as i32
}

/// Keeps this node's leases alive; marks the ones it could not keep as lost.
async fn renew(coord: std::sync::Weak<PgCoordinator>) {
    let mut last_ok = Instant::now();
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(coord) = coord.upgrade() else { return };
        let tokens: Vec<i64> = coord.held.lock().unwrap().keys().copied().collect();
        if tokens.is_empty() {
            last_ok = Instant::now();
            continue;
        }
        let started = Instant::now();
        let renewed = async {
            let client = coord.store.client().await?;
            let st = client.prepare_cached(RENEW).await.map_err(backend)?;
            let rows = client
                .query(&st, &[&tokens, &ttl_ms()])
                .await
                .map_err(backend)?;
            Ok::<_, MetaError>(rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>())
        };
        match tokio::time::timeout(TTL - MARGIN, renewed).await {
            Ok(Ok(alive)) => {
                last_ok = started;
                let held = coord.held.lock().unwrap();
                for (token, valid) in held.iter() {
                    if !alive.contains(token) && tokens.contains(token) {
                        valid.store(false, Ordering::Release);
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "could not renew write leases"),
            Err(_) => tracing::warn!("renewing write leases timed out"),
        }
        if last_ok.elapsed() > TTL - MARGIN {
            for valid in coord.held.lock().unwrap().values() {
                valid.store(false, Ordering::Release);
            }
        }
    }
}

/// Deletes released leases that no take carried within [`RELEASE_DELAY`].
async fn flush_releases(coord: std::sync::Weak<PgCoordinator>, wake: Arc<tokio::sync::Notify>) {
    loop {
        // Waiting with only a weak reference lets the coordinator go.
        if tokio::time::timeout(Duration::from_secs(1), wake.notified())
            .await
            .is_err()
        {
            if coord.strong_count() == 0 {
                return;
            }
            continue;
        }
        tokio::time::sleep(RELEASE_DELAY).await;
        let Some(coord) = coord.upgrade() else { return };
        let tokens = std::mem::take(&mut *coord.released.lock().unwrap());
        if tokens.is_empty() {
            continue;
        }
        let done = async {
            let client = coord.store.client().await?;
            let st = client.prepare_cached(RELEASE).await.map_err(backend)?;
            client.execute(&st, &[&tokens]).await.map_err(backend)
        };
        if let Err(e) = done.await {
            // They expire on their own.
            tracing::debug!(error = %e, "could not release write leases");
        }
    }
}

/// Forwards `NOTIFY ferry_preempt` payloads; reconnects after a failure.
async fn listen(
    config: Arc<tokio_postgres::Config>,
    asks: broadcast::Sender<UploadId>,
    alive: std::sync::Weak<PgCoordinator>,
) {
    loop {
        if alive.strong_count() == 0 {
            return;
        }
        match config.connect(NoTls).await {
            Ok((client, mut conn)) => {
                let forward = asks.clone();
                let driver = tokio::spawn(async move {
                    loop {
                        match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                            Some(Ok(AsyncMessage::Notification(n))) => {
                                if let Some(id) = UploadId::parse(n.payload()) {
                                    let _ = forward.send(id);
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "the preemption listener lost its connection");
                                return;
                            }
                            None => return,
                        }
                    }
                });
                if let Err(e) = client.batch_execute("LISTEN ferry_preempt").await {
                    tracing::warn!(error = %e, "LISTEN ferry_preempt failed");
                }
                // Holds the client (and so the connection) until the driver ends.
                let _ = driver.await;
                drop(client);
            }
            Err(e) => tracing::warn!(error = %e, "the preemption listener cannot connect"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn bigint(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl Coordinator for PgCoordinator {
    async fn acquire(
        &self,
        id: &UploadId,
        ranges: &[Range<u64>],
        append: bool,
    ) -> Result<Option<Lease>, MetaError> {
        let firsts: Vec<i64> = ranges.iter().map(|r| bigint(r.start)).collect();
        let ends: Vec<i64> = ranges.iter().map(|r| bigint(r.end)).collect();
        let released = std::mem::take(&mut *self.released.lock().unwrap());
        let taken = async {
            let client = self.store.client().await?;
            let st = client.prepare_cached(TAKE).await.map_err(backend)?;
            client
                .query_one(
                    &st,
                    &[
                        &id.as_str(),
                        &firsts,
                        &ends,
                        &self.node,
                        &append,
                        &ttl_ms(),
                        &released,
                    ],
                )
                .await
                .map_err(backend)
        };
        let row = match taken.await {
            Ok(row) => row,
            Err(e) => {
                // Not deleted: the next take or the flush tries again.
                self.released.lock().unwrap().extend(released);
                self.release_soon.notify_one();
                return Err(e);
            }
        };
        let Some(token) = row.try_get::<_, Option<i64>>(0).map_err(backend)? else {
            return Ok(None);
        };
        let valid = Arc::new(AtomicBool::new(true));
        self.held.lock().unwrap().insert(token, valid.clone());
        let mut lease = Lease::new(token, valid);
        if let Some(json) = row.try_get::<_, Option<&str>>(1).map_err(backend)? {
            let mut record = super::decode(json)?;
            record.version = row
                .try_get::<_, Option<i64>>(2)
                .map_err(backend)?
                .unwrap_or(0)
                .max(0) as u64;
            lease = lease.with_record(record);
        }
        Ok(Some(lease))
    }

    fn release(&self, lease: &Lease) {
        self.held.lock().unwrap().remove(&lease.token);
        self.released.lock().unwrap().push(lease.token);
        self.release_soon.notify_one();
    }

    async fn is_leased(&self, id: &UploadId) -> Result<bool, MetaError> {
        let client = self.store.client().await?;
        let st = client.prepare_cached(LEASED).await.map_err(backend)?;
        let row = client
            .query_one(&st, &[&id.as_str()])
            .await
            .map_err(backend)?;
        Ok(row.get(0))
    }

    async fn preempt(&self, id: &UploadId) -> Result<(), MetaError> {
        let client = self.store.client().await?;
        let st = client.prepare_cached(NOTIFY).await.map_err(backend)?;
        client
            .execute(&st, &[&id.as_str()])
            .await
            .map_err(backend)?;
        Ok(())
    }

    fn preemptions(&self) -> broadcast::Receiver<UploadId> {
        self.asks.subscribe()
    }
}
