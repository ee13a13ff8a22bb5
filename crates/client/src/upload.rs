//! Uploads: [`Uploader`] sends files to a ferry server (or any tus 1.0.0 server), several at
//! once and several requests per file at once, resuming whatever an earlier run left.
//!
//! # Protocols
//!
//! - **auto** (default): **ranges** on a ferry server, **tus** on any other.
//! - **ranges**: ferry's byte-range dialect ([`crate::ranges`]). One upload per file; `N`
//!   connections each send their own slices of it (`Content-Range`), so the server writes
//!   every byte once, in place: no partial uploads, no concatenation copy. Every body
//!   carries `Content-Digest: sha-256=:…:`.
//! - **tus**: one upload per file, or — when a file is large enough to be worth several
//!   connections and the server offers concatenation — `N` partial uploads over equal
//!   slices of the file, sent in parallel and concatenated by a final upload at the end (tus
//!   "Concatenation"; ferry then releases the parts). Every PATCH carries
//!   `Upload-Checksum: sha256 …` computed while reading its bytes, so the server stores
//!   nothing that was corrupted on the way.
//! - **chunk**: the chunk-handshake dialect. The whole file's MD5 (the `fileId`) must be
//!   known before the handshake, so the file is read once up front, hashing the file and its
//!   chunks together; a file the server already has is then an instant upload. Chunk ids
//!   are `<md5 of chunk><index>`.
//!
//! # Resuming
//!
//! A [`StateStore`] record maps the file's [`Fingerprint`] and the server to the upload's
//! URLs (tus) or the file's digests (chunk). A second run asks the server what it holds
//! (tus `HEAD`, or the handshake) and sends only the rest. A file whose fingerprint changed
//! starts a new upload; a tus upload the server no longer has (expired) starts again.
//!
//! # Failures
//!
//! Every request is retried with backoff ([`crate::retry`]) until [`RetryPolicy`] gives up;
//! after a failed PATCH the offset is asked again (`HEAD`), since the server is the truth.

use crate::error::{Error, Result};
use crate::event::{Event, EventSink};
use crate::http::{Http, TlsOptions, check};
use crate::ranges::{Held, RangeFile, Ranges};
use crate::retry::{Retrier, RetryPolicy};
use crate::source::{Fingerprint, ReadAhead, Source};
use crate::state::{ChunkState, RangeState, Record, StateStore, TusPart, TusState};
use crate::tus::{Capabilities, Tus, is_gone};
use bytes::Bytes;
use ferry_core::handshake::{Envelope, HandshakeData, HandshakeRequest};
use ferry_core::hash::HashAlg;
use ferry_core::tus::{Checksum, Metadata};
use futures_util::StreamExt;
use futures_util::future::try_join_all;
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{OnceCell, Semaphore};

/// The chunk dialect's default chunk size (what the browser clients of that dialect use).
pub const DEFAULT_CHUNK_SIZE: u64 = 5 << 20;
/// The default PATCH size for tus: larger, since each PATCH costs the server an fsync and
/// a metadata commit, and its checksum a buffer of this size in memory per connection.
pub const DEFAULT_TUS_CHUNK_SIZE: u64 = 16 << 20;
/// The default number of requests in flight.
pub const DEFAULT_PARALLEL: usize = 4;
/// How many times one body is resent after the server found its checksum wrong.
const CHECKSUM_RETRIES: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// ferry's byte ranges on a ferry server, tus on any other (never stored in a record).
    Auto,
    Tus,
    Chunk,
    Ranges,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Auto => "auto",
            Protocol::Tus => "tus",
            Protocol::Chunk => "chunk",
            Protocol::Ranges => "ranges",
        }
    }
}

#[derive(Clone)]
pub struct UploadOptions {
    /// The server's base URL, e.g. `http://127.0.0.1:8080`.
    pub server: String,
    pub protocol: Protocol,
    /// Requests in flight at once, over all files.
    pub parallel: usize,
    /// Bytes per request; `None` for the protocol's default.
    pub chunk_size: Option<u64>,
    pub token: Option<String>,
    /// Certificates to trust besides the system's, or none checked.
    pub tls: TlsOptions,
    pub retry: RetryPolicy,
    /// Where uploads are remembered for resuming; [`StateStore::disabled`] by default (the
    /// `ferry` command uses [`StateStore::default_path`]).
    pub state: StateStore,
}

impl UploadOptions {
    pub fn new(server: impl Into<String>) -> UploadOptions {
        UploadOptions {
            server: server.into(),
            protocol: Protocol::Auto,
            parallel: DEFAULT_PARALLEL,
            chunk_size: None,
            token: None,
            tls: TlsOptions::default(),
            retry: RetryPolicy::default(),
            state: StateStore::disabled(),
        }
    }
}

/// A finished upload.
#[derive(Clone, Debug)]
pub struct Uploaded {
    pub file: String,
    pub url: String,
    /// Bytes the server already held before this run (all of them for an instant upload).
    pub resumed_from: u64,
}

pub struct Uploader {
    opts: UploadOptions,
    http: Http,
    server: Url,
    /// The server's key in the state file: its URL without a trailing slash.
    server_key: String,
    tus: Tus,
    caps: OnceCell<Capabilities>,
    ranges: Ranges,
    /// Whether the server speaks ferry's byte ranges (asked once, for `Protocol::Auto`).
    has_ranges: OnceCell<bool>,
    events: EventSink,
    /// Requests in flight, over all files.
    requests: Arc<Semaphore>,
}

/// Where a part's bytes go.
enum Target {
    /// A tus upload of its own (the whole file, or a partial upload).
    Tus(Url),
    /// A slice of the file's one upload in the byte-range dialect.
    Range(RangeFile),
}

/// A slice of the file sent in order over one connection, and how much of it the server
/// holds.
struct Part {
    target: Target,
    start: u64,
    len: u64,
    held: u64,
}

impl Part {
    fn tus_url(&self) -> &Url {
        match &self.target {
            Target::Tus(url) => url,
            Target::Range(_) => unreachable!("a byte-range part has no tus URL"),
        }
    }
}

fn tus_state(parts: &[Part]) -> TusState {
    TusState {
        parts: parts
            .iter()
            .map(|p| TusPart {
                url: p.tus_url().to_string(),
                start: p.start,
                len: p.len,
            })
            .collect(),
    }
}

/// What an earlier run left.
enum Earlier {
    Nothing,
    /// Uploads in progress, with what the server holds of each.
    Parts(Vec<Part>),
    /// The finished upload, still on the server.
    Finished(Url),
}

/// What every part of one file's tus upload shares.
struct PartSender<'a> {
    src: &'a Source,
    chunk: u64,
    /// `Upload-Checksum` algorithm, when the server verifies checksums.
    checksum: Option<HashAlg>,
    meter: &'a Arc<Meter>,
}

/// Size of a part's first PATCH: small enough that a slow link learns its pace in seconds.
const FIRST_PATCH: u64 = 4 << 20;
/// The smallest PATCH the adaptation goes down to.
const MIN_PATCH: u64 = 256 << 10;
/// How long one PATCH should take: long enough that request overhead is noise, short enough
/// that a cut connection (a checksummed PATCH is kept only whole) loses little.
const PATCH_SECONDS: f64 = 4.0;

/// The next PATCH size after one of `size` bytes (`sent` of them in the body) took `took`:
/// aimed at [`PATCH_SECONDS`] at the measured rate, at most doubling per step, halved after a
/// failure, within [`MIN_PATCH`]..=`max`.
fn next_patch_size(size: u64, sent: u64, took: std::time::Duration, ok: bool, max: u64) -> u64 {
    let floor = MIN_PATCH.min(max);
    if !ok {
        return (size / 2).clamp(floor, max);
    }
    let secs = took.as_secs_f64().max(0.001);
    let rate = sent as f64 / secs;
    let aimed = (rate * PATCH_SECONDS) as u64;
    aimed.min(size.saturating_mul(2)).clamp(floor, max)
}

/// Per-file progress: bytes the server holds plus bytes of bodies on their way.
struct Meter {
    file: String,
    total: u64,
    bytes: AtomicU64,
    events: EventSink,
}

impl Meter {
    fn add(&self, n: u64) {
        let now = self.bytes.fetch_add(n, Ordering::Relaxed).wrapping_add(n);
        self.emit(now);
    }

    fn sub(&self, n: u64) {
        let now = self.bytes.fetch_sub(n, Ordering::Relaxed).wrapping_sub(n);
        self.emit(now);
    }

    fn set(&self, n: u64) {
        self.bytes.store(n, Ordering::Relaxed);
        self.emit(n);
    }

    fn emit(&self, bytes: u64) {
        (self.events)(Event::Progress {
            file: self.file.clone(),
            bytes: bytes.min(self.total),
            total: self.total,
        });
    }

    /// A callback for request bodies that counts into this meter and remembers how much it
    /// counted, so a failed request can take its bytes back.
    fn counter(self: &Arc<Self>) -> (Arc<AtomicU64>, impl Fn(u64) + Send + 'static) {
        let counted = Arc::new(AtomicU64::new(0));
        let (c, m) = (counted.clone(), self.clone());
        (counted, move |n| {
            c.fetch_add(n, Ordering::Relaxed);
            m.add(n);
        })
    }
}

impl Uploader {
    pub fn new(opts: UploadOptions, events: EventSink) -> Result<Uploader> {
        let mut base = opts.server.trim().trim_end_matches('/').to_owned();
        if !base.contains("://") {
            base = format!("http://{base}");
        }
        let server_key = base.clone();
        let server = Url::parse(&format!("{base}/"))
            .map_err(|e| Error::Config(format!("--server {:?} is not a URL: {e}", opts.server)))?;
        if !matches!(server.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "--server {:?}: only http:// and https:// URLs are supported",
                opts.server
            )));
        }
        let http = Http::new(opts.token.as_deref(), &opts.tls)?;
        let tus = Tus::new(http.clone(), &server)?;
        let ranges = Ranges::new(http.clone(), &server)?;
        let requests = Arc::new(Semaphore::new(opts.parallel.max(1)));
        Ok(Uploader {
            opts,
            http,
            server,
            server_key,
            tus,
            caps: OnceCell::new(),
            ranges,
            has_ranges: OnceCell::new(),
            events,
            requests,
        })
    }

    fn emit(&self, e: Event) {
        (self.events)(e)
    }

    fn note(&self, file: &str, message: impl Into<String>) {
        self.emit(Event::Note {
            file: file.to_owned(),
            message: message.into(),
        });
    }

    /// Uploads every file, several at once; one result per file, in the order given. Each
    /// file ends with a `Finished` or `Failed` event.
    pub async fn upload_files(&self, files: &[PathBuf]) -> Vec<(String, Result<Uploaded>)> {
        let parallel = self.opts.parallel.max(1);
        // Share the connections: one file gets them all, many files one each.
        let streams = (parallel / files.len().clamp(1, parallel)).max(1);
        let slots = Semaphore::new(parallel);
        let jobs = files.iter().map(|f| async {
            let _slot = slots.acquire().await.expect("never closed");
            let name = f.display().to_string();
            (name, self.upload_file(f, streams).await)
        });
        futures_util::future::join_all(jobs).await
    }

    /// Uploads one file with up to `streams` requests of its own in flight.
    pub async fn upload_file(&self, path: &std::path::Path, streams: usize) -> Result<Uploaded> {
        let file = path.display().to_string();
        let out = async {
            let src = Source::open(path).await?;
            let protocol = match self.opts.protocol {
                // Content-Range cannot say "0 bytes": an empty file goes by tus.
                Protocol::Auto if src.size > 0 && self.has_ranges(&src.display).await? => {
                    Protocol::Ranges
                }
                Protocol::Auto => Protocol::Tus,
                p => p,
            };
            match protocol {
                Protocol::Ranges => self.upload_ranges(&src, streams.max(1)).await,
                Protocol::Chunk => self.upload_chunked(&src, streams.max(1)).await,
                Protocol::Tus | Protocol::Auto => self.upload_tus(&src, streams.max(1)).await,
            }
        }
        .await;
        match &out {
            Ok(u) => self.emit(Event::Finished {
                file,
                url: u.url.clone(),
                path: None,
            }),
            Err(e) => self.emit(Event::Failed {
                file,
                error: e.to_string(),
                hint: e.hint().map(str::to_owned),
            }),
        }
        out
    }

    /// A file an earlier run finished: said, counted as all there, nothing sent.
    fn already_uploaded(&self, src: &Source, url: String) -> Uploaded {
        let file = src.display.as_str();
        self.note(file, "already uploaded: the server has the whole file");
        self.emit(Event::Started {
            file: file.to_owned(),
            total: src.size,
            resumed_from: src.size,
        });
        self.meter(src).set(src.size);
        Uploaded {
            file: file.to_owned(),
            url,
            resumed_from: src.size,
        }
    }

    fn meter(&self, src: &Source) -> Arc<Meter> {
        Arc::new(Meter {
            file: src.display.clone(),
            total: src.size,
            bytes: AtomicU64::new(0),
            events: self.events.clone(),
        })
    }

    /// After a failure: the delay before the next try (announced as a `Retrying` event), or
    /// the error to give up with.
    fn backoff(&self, file: &str, r: &mut Retrier, e: Error) -> Result<Duration> {
        let error = e.to_string();
        let delay = r.next_delay(e)?;
        self.emit(Event::Retrying {
            file: file.to_owned(),
            attempt: r.failures(),
            delay,
            error,
        });
        Ok(delay)
    }

    /// Runs `op` until it succeeds, retrying what is worth retrying.
    async fn retrying<T, F, Fut>(&self, file: &str, r: &mut Retrier, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        loop {
            match op().await {
                Ok(v) => {
                    r.progress();
                    return Ok(v);
                }
                Err(e) => {
                    let delay = self.backoff(file, r, e)?;
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn state_put(&self, file: &str, record: Record) {
        if let Err(e) = self.opts.state.put(record).await {
            self.note(
                file,
                format!(
                    "could not save the resume state ({e}); an interrupted upload will start over"
                ),
            );
        }
    }

    /// What the state file remembers of this file on this server for `protocol`; a state
    /// file that cannot be read is said, and counts as remembering nothing.
    async fn saved_record(
        &self,
        file: &str,
        protocol: Protocol,
        fp: &Fingerprint,
    ) -> Option<Record> {
        self.opts
            .state
            .find(&self.server_key, protocol, &fp.path)
            .await
            .unwrap_or_else(|e| {
                self.note(file, format!("could not read the resume state: {e}"));
                None
            })
    }

    fn record(&self, protocol: Protocol, fp: &Fingerprint) -> Record {
        Record {
            server: self.server_key.clone(),
            protocol,
            file: fp.clone(),
            updated: 0,
            url: None,
            tus: None,
            chunk: None,
            ranges: None,
        }
    }

    // -----------------------------------------------------------------------------------
    // tus
    // -----------------------------------------------------------------------------------

    async fn caps(&self, file: &str) -> Result<&Capabilities> {
        self.caps
            .get_or_try_init(|| async {
                let mut r = Retrier::new(&self.opts.retry);
                self.retrying(file, &mut r, || self.tus.options()).await
            })
            .await
    }

    async fn upload_tus(&self, src: &Source, streams: usize) -> Result<Uploaded> {
        let file = src.display.as_str();
        let caps = self.caps(file).await?.clone();
        if let Some(max) = caps.max_size.filter(|m| src.size > *m) {
            return Err(Error::Server {
                status: 413,
                code: None,
                message: format!(
                    "the file has {} bytes, more than the {max} this server accepts (Tus-Max-Size)",
                    src.size
                ),
                retry_after: None,
            });
        }
        let fp = src.fingerprint().await?;
        let mut r = Retrier::new(&self.opts.retry);
        let chunk = self
            .opts
            .chunk_size
            .unwrap_or(DEFAULT_TUS_CHUNK_SIZE)
            .max(1);
        let mut metadata = Metadata::default();
        let _ = metadata.insert("filename", src.name());

        let parts = match self.tus_earlier(src, &fp, &caps, &mut r).await? {
            Earlier::Finished(url) => return Ok(self.already_uploaded(src, url.to_string())),
            Earlier::Parts(parts) => parts,
            Earlier::Nothing => {
                // Several connections for one file: partial uploads over equal slices,
                // concatenated at the end (tus "Concatenation"); else one plain upload.
                let n = if caps.has("concatenation") && streams > 1 {
                    (streams as u64).min(src.size.div_ceil(chunk)).max(1)
                } else {
                    1
                };
                let parts = self
                    .tus_create(file, src.size, n, &metadata, &mut r)
                    .await?;
                let mut rec = self.record(Protocol::Tus, &fp);
                rec.tus = Some(tus_state(&parts));
                self.state_put(file, rec).await;
                parts
            }
        };

        let held: u64 = parts.iter().map(|p| p.held).sum();
        self.emit(Event::Started {
            file: file.to_owned(),
            total: src.size,
            resumed_from: held,
        });
        let meter = self.meter(src);
        meter.set(held);
        let sender = PartSender {
            src,
            chunk,
            checksum: caps.sha256_checksums().then_some(HashAlg::Sha256),
            meter: &meter,
        };
        try_join_all(parts.iter().map(|p| self.upload_part(&sender, p))).await?;
        src.check_unchanged().await?;

        let url = match parts.as_slice() {
            [one] => one.tus_url().clone(),
            _ => {
                let urls: Vec<Url> = parts.iter().map(|p| p.tus_url().clone()).collect();
                self.retrying(file, &mut r, || self.tus.concat(&urls, &metadata))
                    .await?
            }
        };
        let mut rec = self.record(Protocol::Tus, &fp);
        rec.tus = Some(tus_state(&parts));
        rec.url = Some(url.to_string());
        self.state_put(file, rec).await;
        Ok(Uploaded {
            file: file.to_owned(),
            url: url.to_string(),
            resumed_from: held,
        })
    }

    /// What an earlier run left for this file on this server, as the server sees it now.
    async fn tus_earlier(
        &self,
        src: &Source,
        fp: &Fingerprint,
        caps: &Capabilities,
        r: &mut Retrier,
    ) -> Result<Earlier> {
        let file = src.display.as_str();
        let Some(rec) = self.saved_record(file, Protocol::Tus, fp).await else {
            return Ok(Earlier::Nothing);
        };
        let saved = rec.tus.map(|t| t.parts).unwrap_or_default();
        if rec.file != *fp {
            self.note(
                file,
                "the file changed since the last attempt: starting a new upload",
            );
            // The old bytes are of no use to anyone; free them now rather than at expiry.
            if caps.has("termination") && rec.url.is_none() {
                for p in &saved {
                    if let Ok(url) = Url::parse(&p.url) {
                        let _ = self.tus.delete(&url).await;
                    }
                }
            }
            return Ok(Earlier::Nothing);
        }
        if let Some(url) = rec.url {
            // Finished earlier: is it still there?
            let url = Url::parse(&url).map_err(|e| Error::Protocol(e.to_string()))?;
            return match self.retrying(file, r, || self.tus.head(&url)).await {
                Ok(h) if h.offset.is_some() && h.offset == h.length => Ok(Earlier::Finished(url)),
                Ok(_) => Ok(Earlier::Nothing),
                Err(e) if is_gone(&e) => Ok(Earlier::Nothing),
                Err(e) => Err(e),
            };
        }
        let mut parts = Vec::with_capacity(saved.len());
        for p in saved {
            let url = Url::parse(&p.url).map_err(|e| Error::Protocol(e.to_string()))?;
            match self.retrying(file, r, || self.tus.head(&url)).await {
                Ok(h) if h.length == Some(p.len) => parts.push(Part {
                    target: Target::Tus(url),
                    start: p.start,
                    len: p.len,
                    held: h.offset.unwrap_or(0).min(p.len),
                }),
                Ok(_) => return Ok(self.earlier_gone(file)),
                Err(e) if is_gone(&e) => return Ok(self.earlier_gone(file)),
                Err(e) => return Err(e),
            }
        }
        Ok(if parts.is_empty() {
            Earlier::Nothing
        } else {
            Earlier::Parts(parts)
        })
    }

    fn earlier_gone(&self, file: &str) -> Earlier {
        self.note(
            file,
            "the server no longer has the earlier upload (expired?): starting again",
        );
        Earlier::Nothing
    }

    /// Creates `n` uploads over equal slices of a file of `size` bytes (partial uploads
    /// when `n > 1`).
    async fn tus_create(
        &self,
        file: &str,
        size: u64,
        n: u64,
        metadata: &Metadata,
        r: &mut Retrier,
    ) -> Result<Vec<Part>> {
        let part_len = size.div_ceil(n).max(1);
        let mut parts = Vec::new();
        let mut start = 0;
        loop {
            let len = part_len.min(size - start);
            let url = self
                .retrying(file, r, || self.tus.create(len, metadata, n > 1))
                .await?;
            parts.push(Part {
                target: Target::Tus(url),
                start,
                len,
                held: 0,
            });
            start += len;
            if start >= size {
                return Ok(parts);
            }
        }
    }

    /// Sends `body` at `offset` of `part`; answers how much of the part the server holds
    /// from its start without a gap.
    async fn send_piece(
        &self,
        part: &Part,
        offset: u64,
        body: Bytes,
        digest: Option<&[u8]>,
        on_sent: impl Fn(u64) + Send + 'static,
    ) -> Result<u64> {
        match &part.target {
            Target::Tus(url) => {
                let checksum = digest.map(|d| Checksum {
                    alg: HashAlg::Sha256,
                    digest: d.to_vec(),
                });
                self.tus
                    .patch(url, offset, body, checksum.as_ref(), on_sent)
                    .await
            }
            Target::Range(file) => {
                let held = self
                    .ranges
                    .put(file, part.start + offset, body, digest, on_sent)
                    .await?;
                Ok(held.held_from(part.start, part.start + part.len))
            }
        }
    }

    /// How much of `part` the server holds from its start without a gap.
    async fn part_held(&self, part: &Part) -> Result<u64> {
        match &part.target {
            Target::Tus(url) => Ok(self.tus.head(url).await?.offset.unwrap_or(0)),
            Target::Range(file) => match self.ranges.status(&file.id).await? {
                Some(h) if h.exists => Ok(h.held_from(part.start, part.start + part.len)),
                Some(_) => Ok(0),
                None => Err(Error::Protocol(
                    "the server stopped answering byte-range status requests".into(),
                )),
            },
        }
    }

    /// Sends the rest of one part, in requests of up to `chunk` bytes, each read and hashed
    /// while the one before is on the wire.
    async fn upload_part(&self, s: &PartSender<'_>, part: &Part) -> Result<()> {
        let (src, meter) = (s.src, s.meter);
        let file = src.display.as_str();
        let mut r = Retrier::new(&self.opts.retry);
        let mut bad_checksums = 0;
        // The PATCH size adapts to the link (see `next_patch_size`): a cut request on a slow
        // link then loses seconds of work, not minutes; on a fast one it grows to `s.chunk`.
        let size = AtomicU64::new(s.chunk.min(FIRST_PATCH));
        let body_len = |offset: u64| size.load(Ordering::Relaxed).min(part.len - offset) as usize;
        let read = |offset: u64| src.read_ahead(part.start + offset, body_len(offset), s.checksum);
        let mut offset = part.held;
        let mut ahead: Option<(u64, ReadAhead)> = None;
        'next: while offset < part.len {
            let _permit = self.requests.acquire().await.expect("never closed");
            let body = match ahead.take() {
                Some((at, body)) if at == offset => body,
                _ => read(offset),
            };
            let (body, digest) = body.await.expect("file read task panicked")?;
            let next = offset + body.len() as u64;
            if next < part.len {
                ahead = Some((next, read(next)));
            }
            loop {
                let (counted, on_sent) = meter.counter();
                let started = std::time::Instant::now();
                let res = self
                    .send_piece(part, offset, body.clone(), digest.as_deref(), on_sent)
                    .await;
                let counted = counted.load(Ordering::Relaxed);
                let sent = body.len() as u64;
                let now = size.load(Ordering::Relaxed);
                let adapted = next_patch_size(now, sent, started.elapsed(), res.is_ok(), s.chunk);
                size.store(adapted, Ordering::Relaxed);
                let err = match res {
                    Ok(new) => {
                        r.progress();
                        // Whatever was counted on the way, the server's offset is the truth.
                        let acked = new.saturating_sub(offset);
                        if acked >= counted {
                            meter.add(acked - counted);
                        } else {
                            meter.sub(counted - acked);
                        }
                        offset = new;
                        continue 'next;
                    }
                    Err(e) => e,
                };
                meter.sub(counted);
                let conflict = match err.status() {
                    // Another offset than ours, or another request on it: ask, and go on
                    // from what the server holds.
                    Some(409) => Some(err),
                    // Damaged on the way (or the file changed under us): read it again.
                    Some(460) if bad_checksums < CHECKSUM_RETRIES => {
                        bad_checksums += 1;
                        continue 'next;
                    }
                    _ => {
                        let delay = self.backoff(file, &mut r, err)?;
                        tokio::time::sleep(delay).await;
                        None
                    }
                };
                let held = self.retrying(file, &mut r, || self.part_held(part)).await?;
                if held != offset {
                    meter.add(held.wrapping_sub(offset));
                    offset = held;
                    continue 'next;
                }
                if let Some(err) = conflict {
                    // Refused, yet the offset is ours: a request of an earlier run may still
                    // hold the upload. Wait before trying again rather than spin.
                    let error = err.to_string();
                    let delay = r.backoff(err)?;
                    self.emit(Event::Retrying {
                        file: file.to_owned(),
                        attempt: r.failures(),
                        delay,
                        error,
                    });
                    tokio::time::sleep(delay).await;
                }
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // byte ranges
    // -----------------------------------------------------------------------------------

    /// Whether the server speaks ferry's byte ranges: a JSON status for an id it does not
    /// know. Asked once per run.
    async fn has_ranges(&self, file: &str) -> Result<bool> {
        self.has_ranges
            .get_or_try_init(|| async {
                let mut r = Retrier::new(&self.opts.retry);
                let probe = new_file_id();
                let found = self
                    .retrying(file, &mut r, || self.ranges.status(&probe))
                    .await?;
                Ok(found.is_some_and(|h| !h.exists))
            })
            .await
            .copied()
    }

    /// One upload written over `streams` connections, each sending its own slices of what
    /// the server is missing.
    async fn upload_ranges(&self, src: &Source, streams: usize) -> Result<Uploaded> {
        let file = src.display.as_str();
        let fp = src.fingerprint().await?;
        let mut r = Retrier::new(&self.opts.retry);
        let chunk = self
            .opts
            .chunk_size
            .unwrap_or(DEFAULT_TUS_CHUNK_SIZE)
            .max(1);
        let earlier = self.saved_record(file, Protocol::Ranges, &fp).await;
        let mut held = Held::default();
        let file_id = match earlier {
            Some(rec) if rec.file == fp => match rec.ranges {
                Some(st) => {
                    let h = self
                        .retrying(file, &mut r, || self.ranges.status(&st.file_id))
                        .await?
                        .unwrap_or_default();
                    if h.exists && h.size == Some(src.size) {
                        held = h;
                    } else {
                        self.earlier_gone(file);
                    }
                    st.file_id
                }
                None => new_file_id(),
            },
            Some(_) => {
                self.note(
                    file,
                    "the file changed since the last attempt: starting a new upload",
                );
                new_file_id()
            }
            None => new_file_id(),
        };
        let file_id: Arc<str> = Arc::from(file_id);
        let mut rec = self.record(Protocol::Ranges, &fp);
        rec.ranges = Some(RangeState {
            file_id: file_id.to_string(),
        });
        if held.complete
            && let Some(url) = held.url.clone()
        {
            return Ok(self.already_uploaded(src, url));
        }
        self.state_put(file, rec.clone()).await;

        let missing: Vec<std::ops::Range<u64>> = if held.exists {
            held.missing().collect()
        } else {
            vec![0..src.size]
        };
        let target = RangeFile {
            id: file_id.clone(),
            name: Arc::from(src.name()),
            total: src.size,
        };
        let parts: Vec<Part> = slices(&missing, streams as u64, chunk)
            .into_iter()
            .map(|range| Part {
                target: Target::Range(target.clone()),
                start: range.start,
                len: range.end - range.start,
                held: 0,
            })
            .collect();
        let resumed_from = src.size - missing.iter().map(|m| m.end - m.start).sum::<u64>();
        self.emit(Event::Started {
            file: file.to_owned(),
            total: src.size,
            resumed_from,
        });
        let meter = self.meter(src);
        meter.set(resumed_from);
        let sender = PartSender {
            src,
            chunk,
            checksum: Some(HashAlg::Sha256),
            meter: &meter,
        };
        try_join_all(parts.iter().map(|p| self.upload_part(&sender, p))).await?;
        src.check_unchanged().await?;
        let done = self
            .retrying(file, &mut r, || self.ranges.status(&file_id))
            .await?
            .unwrap_or_default();
        let url = match (done.complete, done.url) {
            (true, Some(url)) => url,
            _ => {
                return Err(Error::Protocol(format!(
                    "every byte was acknowledged, yet the server reports the upload incomplete (missing {:?})",
                    done.missing
                )));
            }
        };
        rec.url = Some(url.clone());
        self.state_put(file, rec).await;
        Ok(Uploaded {
            file: file.to_owned(),
            url,
            resumed_from,
        })
    }

    // -----------------------------------------------------------------------------------
    // chunk handshake
    // -----------------------------------------------------------------------------------

    fn url(&self, path: &str) -> Url {
        self.server
            .join(path)
            .expect("static path joins a base URL")
    }

    async fn handshake(&self, req: &HandshakeRequest) -> Result<HandshakeData> {
        let resp = self
            .http
            .send(
                self.http
                    .request(Method::POST, self.url("api/upload/handshake"))
                    .json(req),
            )
            .await?;
        envelope(check(resp).await?).await
    }

    async fn upload_chunked(&self, src: &Source, streams: usize) -> Result<Uploaded> {
        let file = src.display.as_str();
        let chunk = self.opts.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE).max(1);
        let fp = src.fingerprint().await?;
        let found = self
            .opts
            .state
            .find(&self.server_key, Protocol::Chunk, &fp.path)
            .await
            .unwrap_or(None);
        let saved = found
            .filter(|r| r.file == fp)
            .and_then(|r| r.chunk)
            .filter(|c| c.chunk_size == chunk);
        let digests = match saved {
            Some(c) => c,
            None => {
                let events = self.events.clone();
                let (name, total) = (file.to_owned(), src.size);
                let (file_id, chunk_digests) = src
                    .digest_chunks(HashAlg::Md5, chunk, move |bytes| {
                        events(Event::Hashing {
                            file: name.clone(),
                            bytes,
                            total,
                        })
                    })
                    .await?;
                let c = ChunkState {
                    chunk_size: chunk,
                    file_id,
                    chunk_digests,
                };
                let mut rec = self.record(Protocol::Chunk, &fp);
                rec.chunk = Some(c.clone());
                self.state_put(file, rec).await;
                c
            }
        };
        let ids: Vec<String> = digests
            .chunk_digests
            .iter()
            .enumerate()
            .map(|(i, d)| format!("{d}{i}"))
            .collect();
        let index: HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let name = src.name();
        let ext = name
            .rsplit_once('.')
            .map(|(_, e)| format!(".{e}"))
            .filter(|e| ferry_core::upload::validate_ext(e).is_ok())
            .map(|e| e.to_ascii_lowercase())
            .unwrap_or_default();
        let req = HandshakeRequest {
            file_id: Some(digests.file_id.clone()),
            ext: Some(ext),
            chunk_ids: Some(ids.clone()),
            size: Some(src.size),
            chunk_size: Some(chunk),
            file_name: Some(name),
            hash_algorithm: None,
        };
        let span = |i: usize| {
            let start = i as u64 * chunk;
            (start, chunk.min(src.size - start))
        };

        let meter = self.meter(src);
        let mut r = Retrier::new(&self.opts.retry);
        // Bytes the server held when this run began.
        let mut resumed_from = None;
        // A handshake, then the chunks it asks for; the chunk that completes the file
        // answers its URL. A second round covers a server that lost the upload meanwhile.
        for round in 0..3 {
            let missing = match self.retrying(file, &mut r, || self.handshake(&req)).await? {
                HandshakeData::Url(url) => {
                    if round == 0 {
                        if src.size > 0 {
                            self.note(file, "instant upload: the server already has this file");
                        }
                        self.emit(Event::Started {
                            file: file.to_owned(),
                            total: src.size,
                            resumed_from: src.size,
                        });
                    }
                    meter.set(src.size);
                    let held = *resumed_from.get_or_insert(src.size);
                    return self.chunked_done(src, &fp, &digests, url, held).await;
                }
                HandshakeData::Missing(m) => m,
            };
            let todo: Vec<usize> = missing
                .iter()
                .filter_map(|id| index.get(id.as_str()).copied())
                .collect();
            let held = src.size - todo.iter().map(|&i| span(i).1).sum::<u64>();
            resumed_from.get_or_insert(held);
            if round == 0 {
                self.emit(Event::Started {
                    file: file.to_owned(),
                    total: src.size,
                    resumed_from: held,
                });
            }
            meter.set(held);
            let mut sends = futures_util::stream::iter(todo.into_iter().map(|i| {
                let (offset, len) = span(i);
                let chunk = ChunkToSend {
                    file_id: &digests.file_id,
                    id: &ids[i],
                    offset,
                    len,
                };
                self.send_chunk(src, chunk, &meter)
            }))
            .buffer_unordered(streams);
            let mut url = None;
            let mut rehandshake = false;
            while let Some(res) = sends.next().await {
                match res {
                    Ok(HandshakeData::Url(u)) => url = Some(u),
                    Ok(HandshakeData::Missing(_)) => {}
                    Err(e) if server_code(&e) == Some("handshake_required") => rehandshake = true,
                    Err(e) => return Err(e),
                }
            }
            if let Some(url) = url {
                let held = resumed_from.unwrap_or(0);
                return self.chunked_done(src, &fp, &digests, url, held).await;
            }
            if rehandshake {
                self.note(
                    file,
                    "the server lost the upload (expired?): handshaking again",
                );
            }
        }
        Err(Error::Protocol(
            "every chunk was sent, but the server never reported the file complete".into(),
        ))
    }

    async fn chunked_done(
        &self,
        src: &Source,
        fp: &Fingerprint,
        digests: &ChunkState,
        url: String,
        resumed_from: u64,
    ) -> Result<Uploaded> {
        // Bytes were read from the file in this run: they must still be the file's.
        if resumed_from < src.size {
            src.check_unchanged().await?;
        }
        let mut rec = self.record(Protocol::Chunk, fp);
        rec.chunk = Some(digests.clone());
        rec.url = Some(url.clone());
        self.state_put(&src.display, rec).await;
        Ok(Uploaded {
            file: src.display.clone(),
            url,
            resumed_from,
        })
    }

    /// `POST /api/upload` of one chunk as `multipart/form-data`, ids first so that the server
    /// streams the bytes straight to their place.
    async fn send_chunk(
        &self,
        src: &Source,
        chunk: ChunkToSend<'_>,
        meter: &Arc<Meter>,
    ) -> Result<HandshakeData> {
        let ChunkToSend {
            file_id,
            id: chunk_id,
            offset,
            len,
        } = chunk;
        let file = src.display.as_str();
        let _permit = self.requests.acquire().await.expect("never closed");
        // Not hashed again here: the server checks every chunk against its id, and a file
        // that changed since it was hashed fails that check (`chunk_digest_mismatch`).
        let (body, _) = src.read(offset, len as usize, None).await?;
        let mut r = Retrier::new(&self.opts.retry);
        loop {
            let (counted, on_sent) = meter.counter();
            let part = reqwest::multipart::Part::stream_with_length(
                crate::http::counting_body(body.clone(), 256 * 1024, on_sent),
                len,
            )
            .file_name("blob")
            .mime_str("application/octet-stream")
            .expect("static mime type");
            let form = reqwest::multipart::Form::new()
                .text("chunkId", chunk_id.to_owned())
                .text("fileId", file_id.to_owned())
                .part("file", part);
            let res = async {
                let resp = self
                    .http
                    .send(
                        self.http
                            .request(Method::POST, self.url("api/upload"))
                            .multipart(form),
                    )
                    .await?;
                envelope(check(resp).await?).await
            }
            .await;
            match res {
                Ok(data) => return Ok(data),
                Err(e) => {
                    meter.sub(counted.load(Ordering::Relaxed));
                    let delay = self.backoff(file, &mut r, e)?;
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// One chunk of the chunk dialect: its place in the file and its ids.
struct ChunkToSend<'a> {
    file_id: &'a str,
    /// `<md5><index>`.
    id: &'a str,
    offset: u64,
    len: u64,
}

/// The stable error code the server sent with an error (`error` in its JSON).
/// A fresh id for a byte-range upload: 128 random bits.
fn new_file_id() -> String {
    format!("ferry-{:032x}", rand::random::<u128>())
}

/// `missing` cut into at most `n` slices of about equal size, each sent in order over one
/// connection; no slice is smaller than `min` unless a missing range is.
fn slices(missing: &[std::ops::Range<u64>], n: u64, min: u64) -> Vec<std::ops::Range<u64>> {
    let total: u64 = missing.iter().map(|m| m.end - m.start).sum();
    let each = total.div_ceil(n.max(1)).max(min.max(1));
    let mut out = Vec::new();
    for m in missing {
        let mut at = m.start;
        while at < m.end {
            let end = m.end.min(at.saturating_add(each));
            out.push(at..end);
            at = end;
        }
    }
    out
}

fn server_code(e: &Error) -> Option<&str> {
    match e {
        Error::Server { code, .. } => code.as_deref(),
        _ => None,
    }
}

/// The `data` of a chunk-dialect envelope; a non-zero `code` is an error even under 200.
async fn envelope(resp: reqwest::Response) -> Result<HandshakeData> {
    let body = resp.bytes().await.map_err(|e| Error::network(&e))?;
    let env: Envelope<Option<HandshakeData>> = serde_json::from_slice(&body).map_err(|e| {
        Error::Protocol(format!(
            "the chunk-handshake answer is not the {{code, msg, data}} envelope: {e}"
        ))
    })?;
    match (env.code, env.data) {
        (0, Some(data)) => Ok(data),
        (0, None) => Err(Error::Protocol("the envelope has no data".into())),
        (code, _) => Err(Error::Server {
            status: code,
            code: env.error,
            message: env.msg,
            retry_after: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: u64 = 1 << 20;

    #[test]
    fn missing_bytes_are_cut_into_slices_per_connection() {
        assert_eq!(
            slices(&[0..100], 4, 1),
            vec![0..25, 25..50, 50..75, 75..100]
        );
        assert_eq!(slices(&[0..100], 4, 40), vec![0..40, 40..80, 80..100]);
        assert_eq!(
            slices(&[0..10, 50..60], 4, 1),
            vec![0..5, 5..10, 50..55, 55..60]
        );
        assert_eq!(slices(&[0..3], 8, 1), vec![0..1, 1..2, 2..3]);
        assert!(slices(&[], 4, 1).is_empty());
    }

    #[test]
    fn patch_size_grows_on_a_fast_link_and_shrinks_on_a_slow_one() {
        // Loopback: 4 MiB in 10 ms doubles up to the configured 16 MiB.
        let mut s = FIRST_PATCH;
        for _ in 0..4 {
            s = next_patch_size(s, s, Duration::from_millis(10), true, 16 * MIB);
        }
        assert_eq!(s, 16 * MIB);
        // 256 KiB/s: 4 MiB took 16 s; the next aims at ~4 s (1 MiB).
        let s = next_patch_size(4 * MIB, 4 * MIB, Duration::from_secs(16), true, 16 * MIB);
        assert_eq!(s, MIB);
        // A failure halves it, never below the floor or above the maximum.
        assert_eq!(
            next_patch_size(MIB, 0, Duration::ZERO, false, 16 * MIB),
            MIB / 2
        );
        assert_eq!(
            next_patch_size(MIN_PATCH, 0, Duration::ZERO, false, 16 * MIB),
            MIN_PATCH
        );
        assert_eq!(
            next_patch_size(MIB, MIB, Duration::from_secs(600), true, 16 * MIB),
            MIN_PATCH
        );
        // A configured size below the floor is respected.
        assert_eq!(
            next_patch_size(64 << 10, 64 << 10, Duration::from_millis(1), true, 64 << 10),
            64 << 10
        );
    }
}
