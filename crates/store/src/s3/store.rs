//! [`S3BlobStore`]: upload bytes as parts of one multipart upload per upload, and pieces.
//!
//! - Created: a multipart upload for `<prefix>files/<id>` and the cell plan, both kept in
//!   the record ([`BlobState`]).
//! - A write holds a cell it fills from the cell's start in memory, as received, and sends
//!   it as the cell's part once whole (within a node-wide memory budget); other bytes spool
//!   to a temporary file under the node's spool directory. Each cell the write completes
//!   (with pieces already recorded in it) is sent as that cell's part while the body
//!   streams, several at a time; at the durability point
//!   ([`BlobWrite::sync`]) the rest becomes one piece object per contiguous range, and the
//!   parts and pieces go to the engine as a [`BlobDelta`] it commits with the bytes.
//! - Published: cells still in pieces are composed into parts, then
//!   `CompleteMultipartUpload`: the object appears whole, no byte copied through the node
//!   for cells that were already parts.
//! - Read: ranged GETs, streamed; sequential reads continue one response.

use super::client::{Body, S3Client, S3Error, S3ErrorKind};
use async_trait::async_trait;
use bytes::Bytes;
use ferry_core::parts::{BlobDelta, BlobState, CellPlan, Part, PartLimits, Piece};
use ferry_core::ranges::RangeSet;
use ferry_core::store::{BlobKind, BlobRead, BlobStore, BlobWrite, Capabilities, StoredBlob};
use ferry_core::upload::{Upload, UploadId};
use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Parts one write keeps in flight while its body streams.
const PARTS_IN_FLIGHT: usize = 4;
/// Parts the whole node sends at once: many concurrent uploads share these, so memory and
/// the store's load stay bounded however many clients there are.
const NODE_PARTS_IN_FLIGHT: usize = 16;
/// Bytes of cells the whole node holds in memory (being filled or on their way as parts).
/// A write whose cell finds no room spools it instead, so this bounds memory, not speed.
const MEMORY_BUDGET: u64 = 48 << 20;
/// Cells are held in memory only while at most this many writes are open on the node: a
/// few uploads gain most from skipping the spool, and many at once keep memory flat (the
/// node is then bound by the store, not by its own copies).
const MEMORY_WRITERS: usize = 4;
/// The unit of [`MEMORY_BUDGET`]'s permits.
const MEMORY_UNIT: u64 = 64 << 10;

/// Upload bytes in an S3-compatible bucket.
#[derive(Clone)]
pub struct S3BlobStore(Arc<Shared>);

struct Shared {
    client: S3Client,
    /// Key prefix, empty or ending in `/`.
    prefix: String,
    limits: PartLimits,
    /// Where writes spool their bytes until they are stored (`<data-dir>/spool`).
    spool: PathBuf,
    /// [`NODE_PARTS_IN_FLIGHT`] permits for part uploads.
    sending: Arc<tokio::sync::Semaphore>,
    /// [`MEMORY_BUDGET`] in [`MEMORY_UNIT`]s, for cells held in memory.
    memory: Arc<tokio::sync::Semaphore>,
    /// Writes open on this node.
    writers: std::sync::atomic::AtomicUsize,
    /// Bytes written to spool files (not held in memory), for `/metrics`.
    spooled: std::sync::atomic::AtomicU64,
}

impl S3BlobStore {
    /// A store in the bucket of `client`, under `prefix`, spooling writes in `spool` (made
    /// here, and emptied: a spool file outlives no process).
    pub fn new(
        client: S3Client,
        prefix: String,
        limits: PartLimits,
        spool: PathBuf,
    ) -> io::Result<S3BlobStore> {
        std::fs::create_dir_all(&spool)?;
        for entry in std::fs::read_dir(&spool)? {
            let path = entry?.path();
            if path.is_file() {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(S3BlobStore(Arc::new(Shared {
            client,
            prefix,
            limits,
            spool,
            sending: Arc::new(tokio::sync::Semaphore::new(NODE_PARTS_IN_FLIGHT)),
            memory: Arc::new(tokio::sync::Semaphore::new(
                (MEMORY_BUDGET / MEMORY_UNIT) as usize,
            )),
            writers: std::sync::atomic::AtomicUsize::new(0),
            spooled: std::sync::atomic::AtomicU64::new(0),
        })))
    }
}

impl Shared {
    fn object_key(&self, id: &UploadId) -> String {
        format!("{}files/{id}", self.prefix)
    }

    fn pieces_prefix(&self, id: &UploadId) -> String {
        format!("{}pieces/{id}/", self.prefix)
    }

    fn piece_key(&self, id: &UploadId, tag: &str) -> String {
        let nonce: u32 = rand::random();
        format!("{}{tag}-{nonce:08x}", self.pieces_prefix(id))
    }

    /// Aborts open multipart uploads of `id` found by listing (stores that cannot list
    /// them keep them until their own lifecycle rules remove them).
    async fn abort_listed(&self, id: &UploadId) -> Result<(), S3Error> {
        let key = self.object_key(id);
        match self.client.list_multipart(&key).await {
            Ok(open) => {
                for u in open.into_iter().filter(|u| u.key == key) {
                    self.client.abort_multipart(&u.key, &u.upload_id).await?;
                }
                Ok(())
            }
            Err(e) if e.kind == S3ErrorKind::Unsupported => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn delete_pieces(&self, id: &UploadId) -> Result<(), S3Error> {
        for piece in self.client.list(&self.pieces_prefix(id)).await? {
            self.client.delete(&piece.key).await?;
        }
        Ok(())
    }

    /// Sends cell `index` of `upload` as its part, composed from the recorded pieces that
    /// cover it (read back through a spool file).
    async fn compose_cell(
        &self,
        upload: &Upload,
        mp: &str,
        index: u32,
        cell: std::ops::Range<u64>,
    ) -> io::Result<Part> {
        let state = upload.blob.as_ref().expect("checked by the caller");
        let spool = tempfile::NamedTempFile::new_in(&self.spool)?;
        let mut covered = RangeSet::new();
        for piece in &state.pieces {
            let Some(span) = piece.span() else { continue };
            let start = span.start;
            let want = span.start.max(cell.start)..span.end.min(cell.end);
            if want.is_empty() || covered.contains(want.clone()) {
                continue;
            }
            let bytes = self
                .client
                .get_bytes(&piece.key, Some(want.start - start..want.end - start))
                .await?;
            if bytes.len() as u64 != want.end - want.start {
                return Err(io::Error::other(format!(
                    "piece {} is shorter than its record",
                    piece.key
                )));
            }
            spool
                .as_file()
                .write_all_at(&bytes, want.start - cell.start)?;
            covered.insert(want);
        }
        if !covered.contains(cell.clone()) {
            return Err(io::Error::other(format!(
                "cell {index} of upload {} is not covered by its pieces",
                upload.id
            )));
        }
        let len = cell.end - cell.start;
        let etag = self
            .client
            .upload_part(
                &self.object_key(&upload.id),
                mp,
                part_number(index)?,
                Body::File {
                    path: spool.path().to_owned(),
                    offset: 0,
                    len,
                },
            )
            .await?;
        Ok(Part { etag, len })
    }
}

fn part_number(index: u32) -> io::Result<u16> {
    u16::try_from(index + 1)
        .ok()
        .filter(|&n| n <= 10_000)
        .ok_or_else(|| io::Error::other(format!("cell {index} is past the part cap")))
}

fn unsupported(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("the object store cannot {what}"),
    )
}

#[async_trait]
impl BlobStore for S3BlobStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            positional: false,
            parts: Some(self.0.limits),
        }
    }

    async fn create(&self, _id: &UploadId) -> io::Result<()> {
        // Everything is made by `begin`, which has the record.
        Ok(())
    }

    async fn begin(&self, upload: &Upload) -> io::Result<Option<BlobState>> {
        let chunk = upload.chunks.as_ref().and_then(|c| c.chunk_size);
        let cells = CellPlan::new(&self.0.limits, upload.length, chunk)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let multipart = self
            .0
            .client
            .create_multipart(&self.0.object_key(&upload.id))
            .await?;
        Ok(Some(BlobState {
            multipart: Some(multipart),
            cells: Some(cells),
            ..BlobState::default()
        }))
    }

    async fn writer(&self, _id: &UploadId) -> io::Result<Box<dyn BlobWrite>> {
        Err(unsupported("write without the upload's record"))
    }

    async fn writer_for(&self, upload: &Upload) -> io::Result<Box<dyn BlobWrite>> {
        Ok(Box::new(S3Writer::new(self.0.clone(), upload, None)?))
    }

    async fn staging_writer(
        &self,
        _id: &UploadId,
        _index: usize,
    ) -> io::Result<Box<dyn BlobWrite>> {
        Err(unsupported("stage a chunk without the upload's record"))
    }

    async fn staging_writer_for(
        &self,
        upload: &Upload,
        index: usize,
    ) -> io::Result<Box<dyn BlobWrite>> {
        Ok(Box::new(S3Writer::new(
            self.0.clone(),
            upload,
            Some(index),
        )?))
    }

    async fn place_staged(&self, _id: &UploadId, _i: usize, _o: u64, _l: u64) -> io::Result<()> {
        Err(unsupported(
            "place a staged chunk without the upload's record",
        ))
    }

    async fn place_staged_for(
        &self,
        upload: &Upload,
        index: usize,
        offset: u64,
        len: u64,
    ) -> io::Result<BlobDelta> {
        // The staged piece simply becomes the piece at `offset`: no byte moves.
        let piece = upload
            .blob
            .as_ref()
            .and_then(|s| s.pieces.iter().find(|p| p.index == Some(index)))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("staged chunk {index} has no piece"),
                )
            })?;
        if piece.len != len {
            return Err(io::Error::other(format!(
                "staged chunk {index} holds {} bytes, not {len}",
                piece.len
            )));
        }
        Ok(BlobDelta {
            pieces: vec![Piece {
                key: piece.key.clone(),
                start: Some(offset),
                index: None,
                len,
            }],
            ..BlobDelta::default()
        })
    }

    async fn settle(&self, upload: &Upload) -> io::Result<BlobDelta> {
        let s = &self.0;
        let Some(state) = upload.blob.as_ref() else {
            return Ok(BlobDelta::default());
        };
        let (Some(mp), Some(cells)) = (state.multipart.as_deref(), state.cells) else {
            return Ok(BlobDelta::default());
        };
        let mut delta = BlobDelta::default();
        let mut parted: BTreeSet<u32> = state.parts.keys().copied().collect();
        for (index, cell) in state.cells_in_pieces(upload.length) {
            let part = s.compose_cell(upload, mp, index, cell).await?;
            delta.parts.push((index, part));
            parted.insert(index);
        }
        for p in &state.pieces {
            let Some(span) = p.span() else { continue };
            if cells.cells_of(&span).all(|i| parted.contains(&i)) {
                delta.spent.push(p.key.clone());
            }
        }
        Ok(delta)
    }

    async fn drop_pieces(&self, keys: &[String]) -> io::Result<()> {
        let pieces = format!("{}pieces/", self.0.prefix);
        // Only pieces: a final upload's pieces may be other uploads' finished objects.
        for key in keys.iter().filter(|k| k.starts_with(&pieces)) {
            self.0.client.delete(key).await?;
        }
        Ok(())
    }

    async fn copy_complete(&self, _: &UploadId, _: &UploadId, _: u64, _: u64) -> io::Result<()> {
        Err(unsupported("concatenate without the final upload's record"))
    }

    async fn copy_complete_for(
        &self,
        src: &UploadId,
        _dst: &Upload,
        offset: u64,
        len: u64,
    ) -> io::Result<BlobDelta> {
        // The part's finished object is a piece of the final: publishing composes the final's
        // parts from it.
        Ok(BlobDelta {
            pieces: vec![Piece {
                key: self.0.object_key(src),
                start: Some(offset),
                index: None,
                len,
            }],
            ..BlobDelta::default()
        })
    }

    fn can_concatenate(&self) -> bool {
        true
    }

    async fn remove_staged(&self, _id: &UploadId, _index: usize) -> io::Result<()> {
        // A placed staged chunk's piece is the upload's piece at its offset now.
        Ok(())
    }

    async fn publish(&self, _id: &UploadId) -> io::Result<()> {
        Err(unsupported("publish without the upload's record"))
    }

    async fn publish_for(&self, upload: &Upload) -> io::Result<()> {
        let s = &self.0;
        let key = s.object_key(&upload.id);
        let len = upload
            .length
            .ok_or_else(|| io::Error::other("publishing an upload of unknown length"))?;
        let mut state = upload.blob.clone().unwrap_or_default();
        if state.parts.is_empty() {
            // Nothing sent yet (a final upload, whose length was unknown when it was made):
            // cut it as its length now says.
            state.cells = Some(
                CellPlan::new(&s.limits, Some(len), None)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?,
            );
        }
        let (Some(mp), Some(cells)) = (state.multipart.as_deref(), state.cells) else {
            return Err(io::Error::other(format!(
                "upload {} has no multipart upload recorded",
                upload.id
            )));
        };
        if len == 0 {
            // S3 completes no multipart upload without parts.
            s.client.put(&key, Body::Empty).await?;
            s.client.abort_multipart(&key, mp).await?;
            return Ok(());
        }
        let mut etags = Vec::new();
        for (index, cell) in cells.cells(len) {
            let want = cell.end - cell.start;
            let part = match state.parts.get(&index) {
                Some(p) if p.len == want => p.clone(),
                _ => s.compose_cell(upload, mp, index, cell).await?,
            };
            etags.push(part.etag);
        }
        match s.client.complete_multipart(&key, mp, &etags).await {
            Ok(_) => {}
            // Completed already (a crash before the commit that records it): the object is
            // there, whole.
            Err(e) if matches!(e.kind, S3ErrorKind::NotFound | S3ErrorKind::Denied) => {
                match self.open(&upload.id, BlobKind::Complete).await {
                    Ok(blob) if blob.len() == len => {}
                    _ => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
        if let Err(e) = s.delete_pieces(&upload.id).await {
            tracing::warn!(id = %upload.id, error = %e, "could not remove the pieces of a published upload");
        }
        Ok(())
    }

    async fn open(&self, id: &UploadId, kind: BlobKind) -> io::Result<Arc<dyn BlobRead>> {
        if kind == BlobKind::Partial {
            return Err(unsupported("read an unfinished upload"));
        }
        let key = self.0.object_key(id);
        let (len, modified) = head(&self.0.client, &key).await?;
        Ok(Arc::new(S3Read {
            client: self.0.client.clone(),
            key,
            len,
            modified,
            rt: Handle::current(),
            cursor: Mutex::new(None),
        }))
    }

    fn presign(
        &self,
        id: &UploadId,
        ttl: std::time::Duration,
        content_type: &str,
        content_disposition: &str,
    ) -> Option<String> {
        Some(
            self.0
                .client
                .presigned_get(
                    &self.0.object_key(id),
                    ttl,
                    content_type,
                    content_disposition,
                )
                .to_string(),
        )
    }

    async fn modified(&self, id: &UploadId) -> io::Result<SystemTime> {
        let s = &self.0;
        match head(&s.client, &s.object_key(id)).await {
            Ok((_, Some(t))) => return Ok(t),
            Ok((_, None)) => return Err(io::Error::other("the object has no Last-Modified")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // Unfinished: its newest piece, else when its multipart upload began (the start-up
        // sweep of nodes sharing the bucket leaves young leftovers alone).
        let newest = s
            .client
            .list(&s.pieces_prefix(id))
            .await?
            .into_iter()
            .filter_map(|l| l.last_modified.as_deref().and_then(rfc3339))
            .max();
        if let Some(t) = newest {
            return Ok(t);
        }
        let key = s.object_key(id);
        match s.client.list_multipart(&key).await {
            Ok(open) => open
                .iter()
                .filter(|u| u.key == key)
                .filter_map(|u| u.initiated.as_deref().and_then(rfc3339))
                .max()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no blob of this upload")),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, id: &UploadId) -> io::Result<()> {
        self.0.abort_listed(id).await?;
        self.0.delete_pieces(id).await?;
        self.0.client.delete(&self.0.object_key(id)).await?;
        Ok(())
    }

    async fn delete_for(&self, upload: &Upload) -> io::Result<()> {
        // A finished upload's multipart upload was completed (or, when empty, aborted).
        if let Some(mp) = upload
            .blob
            .as_ref()
            .and_then(|s| s.multipart.as_deref())
            .filter(|_| !upload.is_complete())
        {
            self.0
                .client
                .abort_multipart(&self.0.object_key(&upload.id), mp)
                .await?;
        }
        self.delete(&upload.id).await
    }

    async fn list(&self) -> io::Result<Vec<StoredBlob>> {
        let s = &self.0;
        let mut ids = BTreeSet::new();
        for obj in s.client.list(&s.prefix).await? {
            let rest = &obj.key[s.prefix.len()..];
            let id = rest.strip_prefix("files/").or_else(|| {
                rest.strip_prefix("pieces/")
                    .and_then(|r| r.split('/').next())
            });
            if let Some(id) = id.and_then(UploadId::parse) {
                ids.insert(id);
            }
        }
        match s
            .client
            .list_multipart(&format!("{}files/", s.prefix))
            .await
        {
            Ok(open) => {
                for u in open {
                    if let Some(id) = u
                        .key
                        .strip_prefix(&format!("{}files/", s.prefix))
                        .and_then(UploadId::parse)
                    {
                        ids.insert(id);
                    }
                }
            }
            Err(e) if e.kind == S3ErrorKind::Unsupported => {}
            Err(e) => return Err(e.into()),
        }
        Ok(ids
            .into_iter()
            .map(|id| StoredBlob { id, staging: None })
            .collect())
    }

    fn metrics(&self) -> Vec<ferry_core::store::Metric> {
        use ferry_core::store::Metric;
        use std::sync::atomic::Ordering::Relaxed;
        let stats = self.0.client.stats();
        vec![
            Metric {
                name: "ferry_store_requests_total",
                help: "Requests sent to the object store, retries included.",
                kind: "counter",
                value: stats.requests.load(Relaxed) as f64,
            },
            Metric {
                name: "ferry_store_errors_total",
                help: "Object store requests that failed (retried or not).",
                kind: "counter",
                value: stats.errors.load(Relaxed) as f64,
            },
            Metric {
                name: "ferry_store_request_seconds_total",
                help: "Time object store requests took to their answer's head, in all.",
                kind: "counter",
                value: stats.latency_us.load(Relaxed) as f64 / 1e6,
            },
            Metric {
                name: "ferry_store_spooled_bytes_total",
                help: "Upload bytes written to the node's spool on their way to the object store (the rest went from memory).",
                kind: "counter",
                value: self.0.spooled.load(Relaxed) as f64,
            },
        ]
    }

    async fn ping(&self) -> io::Result<()> {
        // One attempt: a health check says how the store is now.
        self.0
            .client
            .with_retry_budget(std::time::Duration::ZERO)
            .check(&self.0.prefix)
            .await?;
        Ok(())
    }
}

/// Size and modification time of object `key`, from a one-byte ranged GET (HEAD answers
/// carry no error body, and every store serves ranges).
async fn head(client: &S3Client, key: &str) -> io::Result<(u64, Option<SystemTime>)> {
    let resp = match client.get(key, Some(0..1)).await {
        Ok(r) => r,
        // An empty object has no byte 0.
        Err(e) if e.kind == S3ErrorKind::InvalidRange => {
            let resp = client.get(key, None).await?;
            return Ok((0, last_modified(&resp)));
        }
        Err(e) => return Err(e.into()),
    };
    let total = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit('/').next())
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| io::Error::other("the object store sent no Content-Range"))?;
    Ok((total, last_modified(&resp)))
}

/// An RFC 3339 time as S3 listings write it (`2026-12-02T17:45:01.000Z`).
fn rfc3339(s: &str) -> Option<SystemTime> {
    let t: jiff::Timestamp = s.parse().ok()?;
    Some(SystemTime::from(t))
}

fn last_modified(resp: &reqwest::Response) -> Option<SystemTime> {
    resp.headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
}

/// The first ranged GET of a read asks for this much; each one that is read to its end and
/// continued doubles it, up to [`MAX_WINDOW`]. A small range (a Range request, a video
/// player seeking) costs the store little; a whole-file download soon streams large windows.
const FIRST_WINDOW: u64 = 4 << 20;
const MAX_WINDOW: u64 = 256 << 20;

/// A finished object, read with ranged GETs on blocking threads; reads that continue where
/// the last one ended continue its response.
struct S3Read {
    client: S3Client,
    key: String,
    len: u64,
    modified: Option<SystemTime>,
    rt: Handle,
    cursor: Mutex<Option<Cursor>>,
}

/// An open ranged GET: where its next byte is, the bytes of it not yet handed out, where it
/// ends, and how large it was.
struct Cursor {
    at: u64,
    left: Bytes,
    resp: reqwest::Response,
    end: u64,
    window: u64,
}

impl S3Read {
    fn open_window(&self, offset: u64, window: u64) -> io::Result<Cursor> {
        let end = offset.saturating_add(window).min(self.len);
        let resp = self
            .rt
            .block_on(self.client.get(&self.key, Some(offset..end)))?;
        Ok(Cursor {
            at: offset,
            left: Bytes::new(),
            resp,
            end,
            window,
        })
    }
}

impl BlobRead for S3Read {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let mut slot = self.cursor.lock().unwrap();
        let mut c = match slot.take() {
            Some(c) if c.at == offset && c.at < c.end => c,
            // The last window ended exactly here: the next one, twice as large.
            Some(c) if c.at == offset => {
                self.open_window(offset, (c.window * 2).min(MAX_WINDOW))?
            }
            _ => self.open_window(offset, FIRST_WINDOW)?,
        };
        while c.left.is_empty() {
            match self.rt.block_on(c.resp.chunk()) {
                Ok(Some(b)) => c.left = b,
                Ok(None) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the object store ended a ranged read early",
                    ));
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        }
        let n = c.left.len().min(buf.len());
        buf[..n].copy_from_slice(&c.left[..n]);
        c.left = c.left.slice(n..);
        c.at += n as u64;
        *slot = Some(c);
        Ok(n)
    }

    fn streams(&self) -> bool {
        true
    }

    fn modified(&self) -> Option<SystemTime> {
        self.modified
    }

    fn stream(&self, offset: u64, len: u64) -> Option<ferry_core::store::ByteStream> {
        use futures_util::{StreamExt, TryStreamExt};
        let (client, key) = (self.client.clone(), self.key.clone());
        let end = offset.saturating_add(len).min(self.len);
        if offset >= end {
            return Some(futures_util::stream::empty().boxed());
        }
        // One ranged GET, its body passed on as it arrives: no blocking read, no copy.
        let body = async move {
            let resp = client.get(&key, Some(offset..end)).await?;
            Ok::<_, io::Error>(S3Client::stream(resp))
        };
        Some(futures_util::stream::once(body).try_flatten().boxed())
    }
}

/// A part upload in flight: its cell, its length, the request (answering the ETag).
type PartInFlight = (u32, u64, JoinHandle<Result<String, S3Error>>);

/// A cell whose bytes arrive in order from its start, held as received (no copy, no spool)
/// until it is whole and sent as its part.
struct Filling {
    index: u32,
    cell: std::ops::Range<u64>,
    bufs: Vec<Bytes>,
    /// The next byte's offset.
    at: u64,
    /// Its share of [`MEMORY_BUDGET`], released once its part is stored.
    budget: tokio::sync::OwnedSemaphorePermit,
}

/// One write's bytes on their way into the bucket.
struct S3Writer {
    s: Arc<Shared>,
    rt: Handle,
    id: UploadId,
    key: String,
    multipart: Option<String>,
    cells: Option<CellPlan>,
    length: Option<u64>,
    /// Cells with a part: recorded ones, and those this write sent.
    parts: BTreeSet<u32>,
    /// Recorded pieces at known offsets.
    pieces: Vec<Piece>,
    /// A staged chunk's index (its bytes become one piece, whatever their offset).
    staging: Option<usize>,
    /// Staged pieces of the same index already recorded (replaced by this write's).
    superseded: Vec<String>,
    spool: tempfile::NamedTempFile,
    /// Bytes written to the spool and not yet stored (absolute offsets; the spool is sparse).
    written: RangeSet,
    /// The cell this write is filling in memory, from its first byte.
    filling: Option<Filling>,
    /// Part uploads in flight: cell, length, the request.
    sending: VecDeque<PartInFlight>,
    delta: BlobDelta,
}

impl S3Writer {
    fn new(s: Arc<Shared>, upload: &Upload, staging: Option<usize>) -> io::Result<S3Writer> {
        let state = upload.blob.clone().unwrap_or_default();
        let spool = tempfile::NamedTempFile::new_in(&s.spool)?;
        s.writers.fetch_add(1, Ordering::Relaxed);
        let superseded = match staging {
            Some(i) => state
                .pieces
                .iter()
                .filter(|p| p.index == Some(i))
                .map(|p| p.key.clone())
                .collect(),
            None => Vec::new(),
        };
        Ok(S3Writer {
            key: s.object_key(&upload.id),
            rt: Handle::current(),
            id: upload.id.clone(),
            multipart: state.multipart,
            cells: state.cells,
            length: upload.length,
            parts: state.parts.keys().copied().collect(),
            pieces: state
                .pieces
                .into_iter()
                .filter(|p| p.start.is_some())
                .collect(),
            staging,
            superseded,
            spool,
            written: RangeSet::new(),
            filling: None,
            sending: VecDeque::new(),
            delta: BlobDelta::default(),
            s,
        })
    }

    /// Sends every cell `range` touched that is now whole (this write's bytes and recorded
    /// pieces) and has no part yet.
    fn send_whole_cells(&mut self, range: std::ops::Range<u64>) -> io::Result<()> {
        let (Some(cells), true) = (self.cells, self.multipart.is_some()) else {
            return Ok(());
        };
        if self.staging.is_some() || range.is_empty() {
            return Ok(());
        }
        for index in cells.cells_of(&range) {
            let cell = cells.clipped(index, self.length);
            if cell.is_empty() || self.parts.contains(&index) {
                continue;
            }
            let mut have = self.written.clone();
            let mut from_pieces = Vec::new();
            for p in &self.pieces {
                let Some(span) = p.span() else { continue };
                if span.start < cell.end && cell.start < span.end {
                    have.insert(span.clone());
                    from_pieces.push((p.key.clone(), span));
                }
            }
            if !have.contains(cell.clone()) {
                continue;
            }
            // Recorded bytes of this cell that this write did not send: read them into the
            // spool beside the new ones.
            for (key, span) in from_pieces {
                let want = span.start.max(cell.start)..span.end.min(cell.end);
                for gap in self.written.gaps_in(want) {
                    let bytes = self.rt.block_on(
                        self.s
                            .client
                            .get_bytes(&key, Some(gap.start - span.start..gap.end - span.start)),
                    )?;
                    self.spool.as_file().write_all_at(&bytes, gap.start)?;
                }
            }
            let body = Body::File {
                path: self.spool.path().to_owned(),
                offset: cell.start,
                len: cell.end - cell.start,
            };
            self.send_part(index, cell.end - cell.start, body, None)?;
        }
        Ok(())
    }

    /// Starts filling the cell that begins at `at` in memory, if it has no part yet and the
    /// node's memory budget has room for it.
    fn start_filling(&mut self, at: u64) -> bool {
        let (Some(cells), Some(_)) = (self.cells, self.multipart.as_ref()) else {
            return false;
        };
        if self.staging.is_some() {
            return false;
        }
        let index = cells.cell_of(at);
        let cell = cells.clipped(index, self.length);
        if cell.start != at || cell.is_empty() || self.parts.contains(&index) {
            return false;
        }
        if self.s.writers.load(Ordering::Relaxed) > MEMORY_WRITERS {
            return false;
        }
        let units = (cell.end - cell.start).div_ceil(MEMORY_UNIT);
        if units * MEMORY_UNIT > MEMORY_BUDGET / 4 {
            return false;
        }
        let Ok(budget) = self.s.memory.clone().try_acquire_many_owned(units as u32) else {
            return false;
        };
        self.filling = Some(Filling {
            index,
            cell,
            bufs: Vec::new(),
            at,
            budget,
        });
        true
    }

    /// Sends the whole cell held in memory as its part.
    fn send_filled(&mut self) -> io::Result<()> {
        let Some(f) = self.filling.take() else {
            return Ok(());
        };
        let body = Body::Chunks(f.bufs.into());
        self.send_part(f.index, f.cell.end - f.cell.start, body, Some(f.budget))
    }

    /// Moves the cell held in memory to the spool (its bytes stopped arriving in order, or
    /// the write reached its durability point before the cell was whole).
    fn spill(&mut self) -> io::Result<()> {
        let Some(f) = self.filling.take() else {
            return Ok(());
        };
        let mut at = f.cell.start;
        for b in &f.bufs {
            self.spool.as_file().write_all_at(b, at)?;
            at += b.len() as u64;
        }
        self.s
            .spooled
            .fetch_add(at - f.cell.start, Ordering::Relaxed);
        drop(f.budget);
        if at > f.cell.start {
            self.written.insert(f.cell.start..at);
            self.send_whole_cells(f.cell.start..at)?;
        }
        Ok(())
    }

    /// Spools `b` at `at` (bytes not held in memory).
    fn spool_at(&mut self, at: u64, b: &[u8]) -> io::Result<()> {
        self.spool.as_file().write_all_at(b, at)?;
        self.s.spooled.fetch_add(b.len() as u64, Ordering::Relaxed);
        let range = at..at + b.len() as u64;
        self.written.insert(range.clone());
        self.send_whole_cells(range)
    }

    /// Sends `body` as cell `index`'s part in the background, once fewer than
    /// [`PARTS_IN_FLIGHT`] of this write's are in flight.
    fn send_part(
        &mut self,
        index: u32,
        len: u64,
        body: Body,
        budget: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> io::Result<()> {
        let Some(mp) = self.multipart.clone() else {
            return Ok(());
        };
        while self.sending.len() >= PARTS_IN_FLIGHT {
            self.settle_oldest()?;
        }
        let client = self.s.client.clone();
        let key = self.key.clone();
        let number = part_number(index)?;
        let permits = self.s.sending.clone();
        let task = self.rt.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let etag = client.upload_part(&key, &mp, number, body).await;
            drop(budget);
            etag
        });
        self.sending.push_back((index, len, task));
        self.parts.insert(index);
        Ok(())
    }

    /// Waits for the oldest part in flight and records it.
    fn settle_oldest(&mut self) -> io::Result<()> {
        let Some((index, len, task)) = self.sending.pop_front() else {
            return Ok(());
        };
        let etag = self
            .rt
            .block_on(task)
            .map_err(|e| io::Error::other(format!("a part upload failed: {e}")))??;
        self.delta.parts.push((index, Part { etag, len }));
        Ok(())
    }
}

impl BlobWrite for S3Writer {
    fn write_at(&mut self, offset: u64, bufs: &[Bytes]) -> io::Result<()> {
        let mut at = offset;
        for b in bufs {
            let mut b = b.clone();
            while !b.is_empty() {
                if let Some(f) = &mut self.filling {
                    if f.at == at {
                        let take = b.len().min((f.cell.end - at) as usize);
                        f.bufs.push(b.split_to(take));
                        f.at += take as u64;
                        at += take as u64;
                        if f.at == f.cell.end {
                            self.send_filled()?;
                        }
                        continue;
                    }
                    self.spill()?;
                }
                if self.start_filling(at) {
                    continue;
                }
                // To the spool, up to the next cell's start (which may fill in memory).
                let take = match self.cells {
                    Some(c) => b.len().min((c.cell(c.cell_of(at)).end - at) as usize),
                    None => b.len(),
                };
                let part = b.split_to(take);
                self.spool_at(at, &part)?;
                at += take as u64;
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.spill()?;
        while !self.sending.is_empty() {
            self.settle_oldest()?;
        }
        let cells = self.cells;
        let in_parts = |r: &std::ops::Range<u64>, parts: &BTreeSet<u32>| {
            cells.is_some_and(|c| !r.is_empty() && c.cells_of(r).all(|i| parts.contains(&i)))
        };
        // What is left becomes pieces: one per contiguous range outside the parts.
        let written: Vec<_> = self.written.iter().collect();
        for range in written {
            let mut rest = RangeSet::new();
            match (self.staging, cells) {
                (None, Some(c)) => {
                    let mut at = range.start;
                    while at < range.end {
                        let index = c.cell_of(at);
                        let cell_end = c.cell(index).end.min(range.end);
                        if !self.parts.contains(&index) {
                            rest.insert(at..cell_end);
                        }
                        at = cell_end;
                    }
                }
                _ => rest.insert(range.clone()),
            }
            for r in rest.iter() {
                let tag = match self.staging {
                    Some(i) => format!("s{i}"),
                    None => r.start.to_string(),
                };
                let key = self.s.piece_key(&self.id, &tag);
                let body = Body::File {
                    path: self.spool.path().to_owned(),
                    offset: r.start,
                    len: r.end - r.start,
                };
                self.rt.block_on(self.s.client.put(&key, body))?;
                let piece = Piece {
                    key,
                    start: self.staging.is_none().then_some(r.start),
                    index: self.staging,
                    len: r.end - r.start,
                };
                if self.staging.is_none() {
                    self.pieces.push(piece.clone());
                }
                self.delta.pieces.push(piece);
            }
        }
        self.written = RangeSet::new();
        // Pieces whose bytes are all in parts now are spent; so are staged pieces this
        // write replaced.
        let parts = self.parts.clone();
        for p in &self.pieces {
            let Some(span) = p.span() else { continue };
            if in_parts(&span, &parts) && !self.delta.spent.contains(&p.key) {
                self.delta.spent.push(p.key.clone());
            }
        }
        self.delta.spent.append(&mut self.superseded);
        Ok(())
    }

    fn read_at(&self, _buf: &mut [u8], _offset: u64) -> io::Result<usize> {
        Err(unsupported("read an unfinished upload"))
    }

    fn stored(&mut self) -> BlobDelta {
        std::mem::take(&mut self.delta)
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        self.s.writers.fetch_sub(1, Ordering::Relaxed);
        // A write that ended without its durability point: nothing it sent is recorded, so
        // its parts in flight are not needed (a later write of the cell sends it again).
        for (_, _, task) in self.sending.drain(..) {
            task.abort();
        }
    }
}
