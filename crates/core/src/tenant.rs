//! Tenants (SPEC §6): who acts on an upload, and the one place where ownership is checked.
//!
//! Every front works through [`Scoped`], the engine seen by one [`Actor`]: it stamps the
//! actor's tenant on every upload it creates, puts client-chosen keys (`X-File-Id`, the chunk
//! dialect's `fileId`) in the tenant's own namespace, answers [`EngineError::NotFound`] for an
//! upload of anybody else (exactly as for a missing one, so existence does not leak), and
//! enforces the tenant's limits when uploads are created or their length declared.
//!
//! Without authentication the actor has no tenant and sees only uploads without one: the
//! single-user default behaves as before tenants existed.

use crate::engine::{BodyCheck, Engine, NewUpload, WriteMode, WriteOutcome};
use crate::error::EngineError;
use crate::lock::KeyedGuard;
use crate::upload::{ChunkLayout, Timestamp, Upload, UploadId, UploadState};
use bytes::Bytes;
use futures_util::Stream;
use std::fmt::Display;

/// Limits of one tenant; `None` is unlimited (the server-wide `max_upload_size` of
/// [`crate::engine::EngineConfig`] always applies as well).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantLimits {
    /// Largest declared size of one upload (413 beyond).
    pub max_upload_size: Option<u64>,
    /// Incomplete uploads at once (429 beyond).
    pub max_incomplete_uploads: Option<u64>,
    /// Bytes of all the tenant's uploads, finished or not, counted by declared length
    /// (507 beyond).
    pub max_stored_bytes: Option<u64>,
}

impl TenantLimits {
    /// Each limit the lower of `self` and `other` (a token's claims can only lower the
    /// server's limits).
    pub fn lowered_by(&self, other: &TenantLimits) -> TenantLimits {
        fn min(a: Option<u64>, b: Option<u64>) -> Option<u64> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        TenantLimits {
            max_upload_size: min(self.max_upload_size, other.max_upload_size),
            max_incomplete_uploads: min(self.max_incomplete_uploads, other.max_incomplete_uploads),
            max_stored_bytes: min(self.max_stored_bytes, other.max_stored_bytes),
        }
    }
}

/// Who a request acts for: a tenant (authentication configured) or nobody (no
/// authentication: the uploads without an owner).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actor {
    pub tenant: Option<String>,
    pub limits: TenantLimits,
}

impl Actor {
    /// The actor of a server without authentication.
    pub fn anonymous() -> Actor {
        Actor::default()
    }

    pub fn tenant(tenant: impl Into<String>, limits: TenantLimits) -> Actor {
        Actor {
            tenant: Some(tenant.into()),
            limits,
        }
    }

    /// Whether this actor may see `u`.
    pub fn owns(&self, u: &Upload) -> bool {
        u.owner == self.tenant
    }

    /// `key` in this actor's namespace. Keys of uploads without an owner are stored as they
    /// are (data written before tenants existed keeps working); a tenant's keys carry the
    /// tenant's name, hex-encoded so that no name can imitate another's prefix.
    pub fn key(&self, key: &str) -> String {
        match &self.tenant {
            None => key.to_owned(),
            Some(t) => format!("t:{}:{key}", hex::encode(t)),
        }
    }
}

/// What an append request says besides its body ([`Scoped::append`]).
#[derive(Clone, Debug, Default)]
pub struct AppendRequest {
    /// Where the body goes: must be the held offset.
    pub offset: u64,
    /// The upload's total length, if the request declares it (tus `Upload-Length` on a
    /// PATCH of a deferred-length upload, byte-offset `X-File-Size`).
    pub length: Option<u64>,
    /// The body's length, when the request says it (`Content-Length`; `Some(0)` for a body
    /// known to be empty).
    pub body_len: Option<u64>,
    /// A digest the whole body must have.
    pub check: Option<BodyCheck>,
}

/// How an append ended.
#[derive(Debug)]
pub enum Appended {
    /// The body was written (and made durable).
    Written(WriteOutcome),
    /// The upload was already complete and the request was an empty append at its end: a
    /// retry of the request that finished it. Nothing was written.
    Finished(Upload),
}

impl Appended {
    /// The upload after the request.
    pub fn upload(&self) -> &Upload {
        match self {
            Appended::Written(out) => &out.upload,
            Appended::Finished(u) => u,
        }
    }

    pub fn into_upload(self) -> Upload {
        match self {
            Appended::Written(out) => out.upload,
            Appended::Finished(u) => u,
        }
    }
}

/// The engine as one actor sees it. Cheap to make: fronts make one per request.
pub struct Scoped<'a> {
    engine: &'a Engine,
    actor: &'a Actor,
}

impl Engine {
    /// The engine as `actor` sees it: its own uploads only, its limits enforced.
    pub fn scoped<'a>(&'a self, actor: &'a Actor) -> Scoped<'a> {
        Scoped {
            engine: self,
            actor,
        }
    }
}

impl<'a> Scoped<'a> {
    pub fn actor(&self) -> &Actor {
        self.actor
    }

    /// The whole engine (configuration, stats); not for acting on uploads.
    pub fn engine(&self) -> &Engine {
        self.engine
    }

    /// The upload, if it exists and belongs to this actor; otherwise `NotFound`.
    pub async fn get(&self, id: &UploadId) -> Result<Upload, EngineError> {
        let u = self.engine.get(id).await?;
        if self.actor.owns(&u) {
            Ok(u)
        } else {
            Err(EngineError::NotFound)
        }
    }

    /// The upload with client key `key` in this actor's namespace.
    pub async fn find(&self, key: &str) -> Result<Option<Upload>, EngineError> {
        Ok(self
            .engine
            .find(&self.actor.key(key))
            .await?
            .filter(|u| self.actor.owns(u)))
    }

    /// Creates an upload owned by this actor, its key in the actor's namespace, within the
    /// actor's limits. When the key names an existing upload of this actor, that one is
    /// returned instead (the boolean says whether it was created now).
    pub async fn create(&self, mut new: NewUpload) -> Result<(Upload, bool), EngineError> {
        new.owner = self.actor.tenant.clone();
        new.key = new.key.map(|k| self.actor.key(&k));
        if let Some(k) = &new.key
            && let Some(existing) = self.engine.find(k).await?
        {
            return Ok((existing, false));
        }
        let _q = self.check_limits(new.length, None).await?;
        self.engine.create(new).await
    }

    /// Creates a final upload (tus concatenation) of parts that all belong to this actor; a
    /// part of anybody else is reported exactly like a missing one.
    pub async fn create_final(
        &self,
        mut new: NewUpload,
        parts: Vec<UploadId>,
    ) -> Result<Upload, EngineError> {
        for p in &parts {
            match self.get(p).await {
                Ok(_) => {}
                Err(EngineError::NotFound) => return Err(EngineError::UnknownPart(p.to_string())),
                Err(e) => return Err(e),
            }
        }
        new.owner = self.actor.tenant.clone();
        new.key = new.key.map(|k| self.actor.key(&k));
        // The parts' bytes are counted already; the final adds as many again only while it
        // is being assembled, so only the count of incomplete uploads is checked here.
        let _q = self.check_limits(None, None).await?;
        self.engine.create_final(new, parts).await
    }

    pub async fn set_length(&self, id: &UploadId, length: u64) -> Result<Upload, EngineError> {
        let u = self.get(id).await?;
        let _q = match u.length {
            None => Some(self.check_limits(Some(length), Some(&u)).await?),
            Some(_) => None,
        };
        self.engine.set_length(id, length).await
    }

    pub async fn set_layout(
        &self,
        id: &UploadId,
        layout: ChunkLayout,
        length: Option<u64>,
    ) -> Result<Upload, EngineError> {
        let u = self.get(id).await?;
        let _q = match (u.length, length) {
            (None, Some(len)) => Some(self.check_limits(Some(len), Some(&u)).await?),
            _ => None,
        };
        self.engine.set_layout(id, layout, length).await
    }

    pub async fn write<S, E>(
        &self,
        id: &UploadId,
        mode: WriteMode,
        body: S,
    ) -> Result<WriteOutcome, EngineError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        self.engine
            .write_checked_as(Some(&self.actor.tenant), id, None, mode, None, body)
            .await
    }

    pub async fn write_checked<S, E>(
        &self,
        id: &UploadId,
        mode: WriteMode,
        check: Option<BodyCheck>,
        body: S,
    ) -> Result<WriteOutcome, EngineError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        self.engine
            .write_checked_as(Some(&self.actor.tenant), id, None, mode, check, body)
            .await
    }

    /// [`Scoped::write_checked`] of an upload the caller has just read (through this
    /// scope, so it is the actor's): the engine plans from that record instead of reading it
    /// again.
    pub async fn write_checked_from<S, E>(
        &self,
        known: Upload,
        mode: WriteMode,
        check: Option<BodyCheck>,
        body: S,
    ) -> Result<WriteOutcome, EngineError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        let id = known.id.clone();
        self.engine
            .write_checked_as(
                Some(&self.actor.tenant),
                &id,
                Some(known),
                mode,
                check,
                body,
            )
            .await
    }

    pub async fn write_chunk<S, E>(
        &self,
        id: &UploadId,
        chunk_id: &str,
        body: S,
    ) -> Result<WriteOutcome, EngineError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        self.engine
            .write_chunk_as(Some(&self.actor.tenant), id, chunk_id, body)
            .await
    }

    /// An append request as the append-only fronts (tus PATCH, byte-offset `X-Start-Byte`)
    /// make it: stops an older append still streaming for the upload (its client
    /// reconnected), refuses a body that cannot fit before storing any of it, applies a
    /// length declared with the request (only when `offset` is the held offset: a refused
    /// append changes nothing), answers a retry of the request that finished the upload
    /// (empty body at its end) without writing, and writes.
    pub async fn append<S, E>(
        &self,
        id: &UploadId,
        req: AppendRequest,
        body: S,
    ) -> Result<Appended, EngineError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: Display,
    {
        self.preempt(id).await;
        let mut u = self.get(id).await?;
        // A final (concatenated) upload takes no bytes; saying it first keeps a declared
        // length from being applied.
        if matches!(u.concat, Some(crate::upload::Concat::Final { .. })) {
            return Err(EngineError::FinalUpload);
        }
        if let (Some(n), Some(length)) = (req.body_len, u.length.or(req.length)) {
            let end = req.offset.saturating_add(n);
            if end > length {
                return Err(EngineError::PastLength { length, end });
            }
        }
        if let Some(len) = req.length
            && req.offset == u.offset()
            && u.length != Some(len)
        {
            u = self.set_length(id, len).await?;
        }
        if u.is_complete() && Some(req.offset) == u.length && req.body_len == Some(0) {
            return Ok(Appended::Finished(u));
        }
        let out = self
            .write_checked_from(u, WriteMode::Append { offset: req.offset }, req.check, body)
            .await?;
        Ok(Appended::Written(out))
    }

    /// Stops appends in flight on an upload of this actor (see [`Engine::preempt`]); does
    /// nothing for anybody else's.
    pub async fn preempt(&self, id: &UploadId) {
        // Nothing streams (the usual case): nothing to check or stop.
        if self.engine.is_streaming(id) && self.get(id).await.is_ok() {
            self.engine.preempt(id).await;
        }
    }

    pub async fn delete(&self, id: &UploadId) -> Result<(), EngineError> {
        self.get(id).await?;
        self.engine.delete(id).await
    }

    /// Up to `limit` of this actor's uploads, finished or not, of every dialect, newest
    /// first (creation time, then id, both descending). With `after` (the creation time and
    /// id of the last upload of the previous page), only uploads strictly older than it: the
    /// pages neither repeat nor skip an upload that exists throughout
    /// ([`crate::store::MetaStore::list_owned`]).
    pub async fn list(
        &self,
        after: Option<(Timestamp, UploadId)>,
        limit: usize,
    ) -> Result<Vec<Upload>, EngineError> {
        let mut found = self
            .engine
            .meta()
            .list_owned(self.actor.tenant.as_deref(), after, limit)
            .await?;
        // The store lists by owner already; checked once more where ownership is decided.
        found.retain(|u| self.actor.owns(u));
        Ok(found)
    }

    /// Refuses a new upload (or a newly declared length) that would break a limit.
    /// `existing` is the upload whose length is being declared, if any. On success returns
    /// the tenant's quota guard: the caller holds it until the upload (or length) is recorded,
    /// so no other creation of the tenant on this node slips in between check and record.
    async fn check_limits(
        &self,
        length: Option<u64>,
        existing: Option<&Upload>,
    ) -> Result<KeyedGuard<'_>, EngineError> {
        // One turn per tenant: the tenant's own key namespace names it uniquely (no tenant:
        // the empty string).
        let guard = self.engine.quota_locks().lock(&self.actor.key("")).await;
        self.within_limits(length, existing).await?;
        Ok(guard)
    }

    async fn within_limits(
        &self,
        length: Option<u64>,
        existing: Option<&Upload>,
    ) -> Result<(), EngineError> {
        let limits = &self.actor.limits;
        if let (Some(len), Some(max)) = (length, limits.max_upload_size)
            && len > max
        {
            return Err(EngineError::TooLarge { size: len, max });
        }
        if limits.max_incomplete_uploads.is_none() && limits.max_stored_bytes.is_none() {
            return Ok(());
        }
        let usage = self
            .engine
            .meta()
            .usage(self.actor.tenant.as_deref())
            .await?;
        if existing.is_none()
            && let Some(max) = limits.max_incomplete_uploads
            && usage.incomplete >= max
        {
            return Err(EngineError::TooManyIncomplete { max });
        }
        if let Some(max) = limits.max_stored_bytes {
            let adding = length.unwrap_or(0);
            // A deferred-length upload counts its held bytes until it declares a length.
            let counted = existing
                .filter(|u| u.state == UploadState::Receiving)
                .map_or(0, |u| u.length.unwrap_or(0));
            let after = usage
                .stored_bytes
                .saturating_sub(counted)
                .saturating_add(adding);
            if after > max {
                return Err(EngineError::QuotaExceeded {
                    stored: usage.stored_bytes,
                    max,
                    size: adding,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_per_tenant_and_no_name_imitates_another() {
        let none = Actor::anonymous();
        let a = Actor::tenant("a", TenantLimits::default());
        let b = Actor::tenant("b", TenantLimits::default());
        // A tenant whose name looks like another's key prefix.
        let tricky = Actor::tenant("a:chunk", TenantLimits::default());
        assert_eq!(
            none.key("chunk:f00"),
            "chunk:f00",
            "owner-less keys as before"
        );
        let keys = [
            none.key("chunk:f00"),
            a.key("chunk:f00"),
            b.key("chunk:f00"),
            tricky.key("f00"),
            a.key("chunk:f00x"),
        ];
        for (i, k) in keys.iter().enumerate() {
            for l in &keys[i + 1..] {
                assert_ne!(k, l);
            }
        }
    }

    #[test]
    fn limits_are_only_ever_lowered() {
        let server = TenantLimits {
            max_upload_size: Some(1000),
            max_incomplete_uploads: None,
            max_stored_bytes: Some(5000),
        };
        let claims = TenantLimits {
            max_upload_size: Some(2000),
            max_incomplete_uploads: Some(3),
            max_stored_bytes: Some(10),
        };
        assert_eq!(
            server.lowered_by(&claims),
            TenantLimits {
                max_upload_size: Some(1000),
                max_incomplete_uploads: Some(3),
                max_stored_bytes: Some(10),
            }
        );
        assert_eq!(server.lowered_by(&TenantLimits::default()), server);
    }
}
