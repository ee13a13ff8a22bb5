//! Downloads: [`Downloader`] fetches one URL into `PATH.part`, resumable, over one or several
//! connections, verifies it against the server's digest and renames it to `PATH`.
//!
//! # On disk
//!
//! - `PATH.part`: the file being downloaded, at its full length from the start (sparse), each
//!   range written at its place with positional writes.
//! - `PATH.part.meta` (JSON): the URL, the validator (the strong `ETag`, else
//!   `Last-Modified`), the length, and the segments with the bytes done in each. It is
//!   rewritten about once a second and only ever counts bytes already written, so after a
//!   kill it may undercount (those bytes are fetched again), never overcount.
//!
//! # Resuming and remote changes
//!
//! A second run continues each segment with `Range: bytes=<next>-<end>` and
//! `If-Range: <validator>` (RFC 9110 §13.1.5): if the file changed, the server answers 200
//! with the whole new file instead of 206, and the download starts over cleanly. A
//! different ETag (from `HEAD`, or on a 206) means the same.
//!
//! # Verification
//!
//! ferry's ETag is `"<alg>-<hex digest of the content>"` (md5, sha1, sha256 or blake3),
//! which the client recomputes: while writing when one connection fetches the file in order,
//! otherwise in one pass over the finished `.part`. Every finished file on ferry has one,
//! concatenations included; a mismatch removes the `.part`.

use crate::error::{Error, Result};
use crate::event::{Event, EventSink};
use crate::http::{Http, TlsOptions, check, error_from};
use crate::retry::{Retrier, RetryPolicy};
use bytes::{Bytes, BytesMut};
use ferry_core::hash::{HashAlg, Hasher};
use ferry_core::http_range::parse_content_range;
use futures_util::StreamExt;
use reqwest::header::{
    ACCEPT_RANGES, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, ETAG, HeaderMap, IF_RANGE,
    LAST_MODIFIED, RANGE,
};
use reqwest::{Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Bytes gathered from the connection before one positional write.
const WRITE_BLOCK: usize = 1 << 20;
/// Smallest range worth a connection of its own.
const MIN_SEGMENT: u64 = 1 << 20;
/// How often the `.part.meta` progress is saved.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// How often the hasher looks for newly written bytes when it has caught up.
const FOLLOW_POLL: Duration = Duration::from_millis(5);
/// Restarts after the remote changed before giving up.
const MAX_RESTARTS: u32 = 3;

#[derive(Clone)]
pub struct DownloadOptions {
    pub url: String,
    /// What to do when the destination file exists already (a `.part` being resumed is not
    /// "existing": that is the download itself).
    pub existing: Existing,
    /// A file, or a directory to put the file in; `None` for the current directory. The name
    /// comes from `Content-Disposition`, else from the URL's last segment.
    pub output: Option<PathBuf>,
    pub connections: usize,
    pub retry: RetryPolicy,
    pub token: Option<String>,
    /// Certificates to trust besides the system's, or none checked.
    pub tls: TlsOptions,
}

impl DownloadOptions {
    pub fn new(url: impl Into<String>) -> DownloadOptions {
        DownloadOptions {
            url: url.into(),
            existing: Existing::Refuse,
            output: None,
            connections: 1,
            retry: RetryPolicy::default(),
            token: None,
            tls: TlsOptions::default(),
        }
    }
}

/// What a download does when its destination exists (like `curl -OJ`, which refuses).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Existing {
    /// Stop with an error before anything is fetched.
    #[default]
    Refuse,
    /// Replace the file once the download is complete and verified.
    Overwrite,
    /// Save under the first free name `NAME.1.EXT`, `NAME.2.EXT`, …
    Rename,
}

/// `path`, or when it exists the first of `stem.1.ext`, `stem.2.ext`, … that does not (nor
/// its `.part`, which would be another download in progress).
fn free_name(path: &Path) -> PathBuf {
    if !path.exists() {
        return path.to_owned();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (1u32..)
        .map(|n| path.with_file_name(format!("{stem}.{n}{ext}")))
        .find(|p| !p.exists() && !with_suffix(p, ".part").exists())
        .expect("some name is free")
}

/// How the finished file was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    /// The content digest matched the ETag (`"md5"`, `"sha1"`, `"sha256"` or `"blake3"`).
    Digest(&'static str),
    /// The ETag is not a digest this client knows.
    None,
}

#[derive(Clone, Debug)]
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
    /// Bytes already in the `.part` file when this run started.
    pub resumed_from: u64,
    pub verification: Verification,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Segment {
    start: u64,
    end: u64,
    done: u64,
}

impl Segment {
    fn len(&self) -> u64 {
        self.end - self.start
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PartMeta {
    url: String,
    /// `If-Range` validator: the strong ETag, else Last-Modified; `None` when the server
    /// gave neither (then a partial file cannot be resumed safely).
    validator: Option<String>,
    etag: Option<String>,
    length: u64,
    segments: Vec<Segment>,
}

/// What `HEAD` says about the remote file.
#[derive(Clone, Debug)]
struct Remote {
    length: u64,
    etag: Option<String>,
    last_modified: Option<String>,
    ranges: bool,
    file_name: Option<String>,
}

impl Remote {
    fn validator(&self) -> Option<String> {
        self.etag
            .clone()
            .filter(|e| !e.starts_with("W/"))
            .or_else(|| self.last_modified.clone())
    }
}

/// A positional write on the blocking pool; its result is the number of bytes written.
type PendingWrite = tokio::task::JoinHandle<std::io::Result<u64>>;

async fn written(job: &Job, p: PendingWrite) -> Result<u64, Stop> {
    p.await
        .expect("write task panicked")
        .map_err(|e| Stop::Failed(Error::local(job.label.clone(), e)))
}

/// Why a fetch stopped short.
enum Stop {
    /// The remote is not the file we started on: start over.
    Changed(String),
    Failed(Error),
    /// Another segment stopped the job.
    Cancelled,
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Failed(e)
    }
}

fn header(h: &HeaderMap, name: impl reqwest::header::AsHeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
}

/// A file name from `Content-Disposition` (RFC 6266): `filename*` (RFC 8187, UTF-8) first,
/// else `filename`. Only the last path component survives, like every client should do.
pub fn disposition_file_name(value: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for param in value.split(';').skip(1) {
        let Some((k, v)) = param.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "filename*" {
            if let Some((charset, rest)) = v.split_once('\'')
                && charset.eq_ignore_ascii_case("utf-8")
                && let Some((_, encoded)) = rest.split_once('\'')
            {
                extended = percent_encoding::percent_decode_str(encoded)
                    .decode_utf8()
                    .ok()
                    .map(|s| s.into_owned());
            }
        } else if k == "filename" {
            plain = Some(v.trim_matches('"').replace("\\\"", "\""));
        }
    }
    extended
        .or(plain)
        .and_then(|n| ferry_core::upload::clean_file_name(&n))
}

/// The URL's last path segment, percent-decoded, as a file name.
fn url_file_name(url: &Url) -> Option<String> {
    let last = url.path_segments()?.next_back()?;
    let decoded = percent_encoding::percent_decode_str(last)
        .decode_utf8()
        .ok()?;
    ferry_core::upload::clean_file_name(&decoded)
}

/// `(alg, hex)` when the ETag is ferry's `"<alg>-<hex>"` content digest.
fn etag_digest(etag: &str) -> Option<(HashAlg, String)> {
    let inner = etag.strip_prefix('"')?.strip_suffix('"')?;
    let (alg, hex) = inner.split_once('-')?;
    let alg = match alg {
        "md5" => HashAlg::Md5,
        "sha1" => HashAlg::Sha1,
        "sha256" => HashAlg::Sha256,
        "blake3" => HashAlg::Blake3,
        _ => return None,
    };
    ferry_core::hash::parse_hex(alg, hex)?;
    Some((alg, hex.to_ascii_lowercase()))
}

/// Splits `[0, length)` into `n` segments of nearly equal size.
fn split(length: u64, n: usize) -> Vec<Segment> {
    let n = (n as u64).clamp(1, length.max(1));
    let step = length.div_ceil(n);
    (0..n)
        .map(|i| Segment {
            start: i * step,
            end: ((i + 1) * step).min(length),
            done: 0,
        })
        .filter(|s| s.end > s.start)
        .collect()
}

/// Splits the largest unfinished segments until `n` are unfinished (or they get too small),
/// so a resumed download uses the connections asked for this time.
fn resplit(mut segs: Vec<Segment>, n: usize) -> Vec<Segment> {
    loop {
        let open = segs.iter().filter(|s| s.done < s.len()).count();
        if open >= n {
            return segs;
        }
        let Some((i, _)) = segs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.len() - s.done >= 2 * MIN_SEGMENT)
            .max_by_key(|(_, s)| s.len() - s.done)
        else {
            return segs;
        };
        let s = segs[i].clone();
        let mid = s.start + s.done + (s.len() - s.done) / 2;
        segs[i].end = mid;
        segs.insert(
            i + 1,
            Segment {
                start: mid,
                end: s.end,
                done: 0,
            },
        );
    }
}

pub struct Downloader {
    opts: DownloadOptions,
    url: Url,
    http: Http,
    events: EventSink,
}

/// Everything the segment tasks share.
struct Job {
    file: Arc<File>,
    label: String,
    url: Url,
    validator: Option<String>,
    etag: Option<String>,
    length: u64,
    segments: Vec<Segment>,
    /// Bytes written per segment (a segment's `done`, live).
    done: Vec<AtomicU64>,
    total_done: AtomicU64,
    stop: AtomicBool,
}

impl Job {
    /// Bytes written contiguously from the start of the file.
    fn prefix(&self) -> u64 {
        let mut end = 0;
        for (seg, done) in self.segments.iter().zip(&self.done) {
            let done = done.load(Ordering::Acquire);
            end = seg.start + done;
            if done < seg.len() {
                break;
            }
        }
        end
    }
}

impl Downloader {
    pub fn new(opts: DownloadOptions, events: EventSink) -> Result<Downloader> {
        let url = Url::parse(&opts.url)
            .map_err(|e| Error::Config(format!("{:?} is not a URL: {e}", opts.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "{}: only http:// and https:// URLs are supported",
                opts.url
            )));
        }
        let http = Http::new(opts.token.as_deref(), &opts.tls)?;
        Ok(Downloader {
            opts,
            url,
            http,
            events,
        })
    }

    fn emit(&self, e: Event) {
        (self.events)(e)
    }

    fn note(&self, file: &str, message: impl Into<String>) {
        self.emit(Event::Note {
            file: file.to_owned(),
            message: message.into(),
        })
    }

    /// Downloads the file; ends with a `Finished` or `Failed` event.
    pub async fn run(&self) -> Result<Downloaded> {
        let mut label = self
            .opts
            .output
            .as_ref()
            .map_or_else(|| self.opts.url.clone(), |p| p.display().to_string());
        let res = self.run_inner(&mut label).await;
        match &res {
            Ok(d) => self.emit(Event::Finished {
                file: label,
                url: self.url.to_string(),
                path: Some(d.path.display().to_string()),
            }),
            Err(e) => self.emit(Event::Failed {
                file: label,
                error: e.to_string(),
                hint: e.hint().map(str::to_owned),
            }),
        }
        res
    }

    async fn backoff(&self, label: &str, r: &mut Retrier, e: Error) -> Result<()> {
        let error = e.to_string();
        let delay = r.next_delay(e)?;
        self.emit(Event::Retrying {
            file: label.to_owned(),
            attempt: r.failures(),
            delay,
            error,
        });
        tokio::time::sleep(delay).await;
        Ok(())
    }

    async fn head(&self, label: &str) -> Result<Remote> {
        let mut r = Retrier::new(&self.opts.retry);
        loop {
            let res = async {
                let resp = self
                    .http
                    .send(self.http.request(Method::HEAD, self.url.clone()))
                    .await?;
                let resp = check(resp).await?;
                let h = resp.headers();
                let length = header(h, CONTENT_LENGTH)
                    .and_then(|l| l.parse().ok())
                    .ok_or_else(|| {
                        Error::Protocol("HEAD answered without a Content-Length".into())
                    })?;
                Ok(Remote {
                    length,
                    etag: header(h, ETAG),
                    last_modified: header(h, LAST_MODIFIED),
                    ranges: header(h, ACCEPT_RANGES).is_some_and(|v| v.contains("bytes")),
                    file_name: header(h, CONTENT_DISPOSITION)
                        .and_then(|d| disposition_file_name(&d)),
                })
            }
            .await;
            match res {
                Ok(remote) => return Ok(remote),
                Err(e) => self.backoff(label, &mut r, e).await?,
            }
        }
    }

    async fn run_inner(&self, label: &mut String) -> Result<Downloaded> {
        // Where to write: a given file name, else a name the server or the URL suggests.
        let mut remote = None;
        let path = match &self.opts.output {
            Some(p) if !p.is_dir() => p.clone(),
            dir => {
                let r = self.head(label).await?;
                let name = r
                    .file_name
                    .clone()
                    .or_else(|| url_file_name(&self.url))
                    .unwrap_or_else(|| "download".to_owned());
                remote = Some(r);
                dir.clone().unwrap_or_default().join(name)
            }
        };
        let path = if path.is_file() && !with_suffix(&path, ".part").exists() {
            match self.opts.existing {
                Existing::Refuse => {
                    return Err(Error::Config(format!(
                        "{} exists already; pass --force to overwrite it, or --rename to save \
                         the download under a free name",
                        path.display()
                    )));
                }
                Existing::Overwrite => path,
                Existing::Rename => free_name(&path),
            }
        } else {
            path
        };
        *label = path.display().to_string();
        let label = label.as_str();
        let part = with_suffix(&path, ".part");
        let meta_path = with_suffix(&path, ".part.meta");

        let mut restarts = 0;
        let mut resumed_from = None;
        loop {
            let saved = if part.exists() {
                load_meta(&meta_path).await
            } else {
                None
            };
            let saved = match saved {
                Some(m) if m.url != self.url.as_str() => {
                    self.note(
                        label,
                        "the partial file is from another URL: starting again",
                    );
                    None
                }
                Some(m) if m.validator.is_none() => {
                    self.note(
                        label,
                        "the server gave no ETag for the partial file, so it cannot be resumed safely: starting again",
                    );
                    None
                }
                Some(m)
                    if remote
                        .as_ref()
                        .is_some_and(|r| r.length != m.length || r.validator() != m.validator) =>
                {
                    self.note(
                        label,
                        "the remote file changed since the partial download: starting again",
                    );
                    None
                }
                other => other,
            };
            let meta = match saved {
                Some(mut m) => {
                    m.segments = resplit(m.segments, self.opts.connections.max(1));
                    m
                }
                None => {
                    let r = match remote.take() {
                        Some(r) => r,
                        None => self.head(label).await?,
                    };
                    // Without range support a partial file cannot be continued.
                    let validator = r.validator().filter(|_| r.ranges);
                    let n = if r.ranges && validator.is_some() {
                        self.opts
                            .connections
                            .clamp(1, (r.length / MIN_SEGMENT).max(1) as usize)
                    } else {
                        1
                    };
                    PartMeta {
                        url: self.url.to_string(),
                        validator,
                        etag: r.etag,
                        length: r.length,
                        segments: split(r.length, n),
                    }
                }
            };
            let fresh = meta.segments.iter().all(|s| s.done == 0);
            let file = open_part(&part, meta.length, fresh).await?;
            save_meta(&meta_path, &meta).await?;
            let held: u64 = meta.segments.iter().map(|s| s.done).sum();
            resumed_from.get_or_insert(held);
            self.emit(Event::Started {
                file: label.to_owned(),
                total: meta.length,
                resumed_from: held,
            });
            let job = Arc::new(Job {
                file: Arc::new(file),
                label: label.to_owned(),
                url: self.url.clone(),
                validator: meta.validator.clone(),
                etag: meta.etag.clone(),
                length: meta.length,
                done: meta
                    .segments
                    .iter()
                    .map(|s| AtomicU64::new(s.done))
                    .collect(),
                segments: meta.segments.clone(),
                total_done: AtomicU64::new(held),
                stop: AtomicBool::new(false),
            });
            let check = self.plan_check(&job);
            let follower = match &check {
                Check::Digest(alg, _) => Some(follow(job.clone(), *alg)),
                Check::NotADigest => None,
            };
            let fetched = self.fetch(&job, &meta_path, &meta).await;
            // Whatever happened, the follower stops once no more bytes can come.
            job.stop.store(true, Ordering::Release);
            match fetched {
                Ok(()) => {
                    let verification = self.verify(&job, check, follower).await;
                    if let Err(Error::DigestMismatch { .. }) = &verification {
                        let _ = tokio::fs::remove_file(&part).await;
                        let _ = tokio::fs::remove_file(&meta_path).await;
                    }
                    let verification = verification?;
                    finish(&job.file, &part, &path).await?;
                    let _ = tokio::fs::remove_file(&meta_path).await;
                    return Ok(Downloaded {
                        path,
                        bytes: meta.length,
                        resumed_from: resumed_from.unwrap_or(0),
                        verification,
                    });
                }
                Err(Stop::Changed(why)) => {
                    restarts += 1;
                    if restarts > MAX_RESTARTS {
                        return Err(Error::RemoteChanged(why));
                    }
                    self.note(label, format!("{why}: starting again"));
                    let _ = tokio::fs::remove_file(&meta_path).await;
                    let _ = tokio::fs::remove_file(&part).await;
                }
                Err(Stop::Failed(e)) => return Err(e),
                Err(Stop::Cancelled) => {
                    return Err(Error::Protocol("the download stopped".into()));
                }
            }
        }
    }

    /// Fetches every unfinished segment at once, saving progress as it goes.
    async fn fetch(&self, job: &Arc<Job>, meta_path: &Path, meta: &PartMeta) -> Result<(), Stop> {
        let saver = {
            let (job, meta_path, meta) = (job.clone(), meta_path.to_owned(), meta.clone());
            tokio::spawn(async move {
                let mut last = None;
                loop {
                    tokio::time::sleep(SAVE_EVERY).await;
                    let now = snapshot(&job, &meta);
                    if last.as_ref() != Some(&now) {
                        let _ = save_meta(&meta_path, &now).await;
                        last = Some(now);
                    }
                }
            })
        };
        let results = futures_util::future::join_all(
            (0..job.segments.len()).map(|i| self.fetch_segment(job, i)),
        )
        .await;
        saver.abort();
        let _ = save_meta(meta_path, &snapshot(job, meta)).await;
        let mut failure = None;
        for r in results {
            match r {
                Ok(()) | Err(Stop::Cancelled) => {}
                // A change wins over other failures: it decides what happens next.
                Err(Stop::Changed(why)) => return Err(Stop::Changed(why)),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// One segment: GET its remaining range with `If-Range`, write it in place, retry from
    /// where it stopped.
    async fn fetch_segment(&self, job: &Arc<Job>, i: usize) -> Result<(), Stop> {
        let seg = &job.segments[i];
        let mut r = Retrier::new(&self.opts.retry);
        loop {
            if job.stop.load(Ordering::Relaxed) {
                return Err(Stop::Cancelled);
            }
            let done = job.done[i].load(Ordering::Relaxed);
            if done >= seg.len() {
                return Ok(());
            }
            let from = seg.start + done;
            match self.fetch_range(job, i, from).await {
                Ok(()) => r.progress(),
                Err(Stop::Failed(e)) => {
                    // Bytes written in this attempt count as progress.
                    if job.done[i].load(Ordering::Relaxed) > done {
                        r.progress();
                    }
                    if let Err(e) = self.backoff(&job.label, &mut r, e).await {
                        job.stop.store(true, Ordering::Relaxed);
                        return Err(Stop::Failed(e));
                    }
                }
                Err(other) => {
                    job.stop.store(true, Ordering::Relaxed);
                    return Err(other);
                }
            }
        }
    }

    async fn fetch_range(&self, job: &Arc<Job>, i: usize, from: u64) -> Result<(), Stop> {
        let seg = &job.segments[i];
        let mut req = self
            .http
            .request(Method::GET, job.url.clone())
            .header(RANGE, format!("bytes={}-{}", from, seg.end - 1));
        if let Some(v) = &job.validator {
            req = req.header(IF_RANGE, v);
        }
        let resp = self.http.send(req).await?;
        match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let h = resp.headers();
                if let Some(etag) = header(h, ETAG)
                    && job.etag.as_deref().is_some_and(|e| e != etag)
                {
                    return Err(Stop::Changed(format!(
                        "the remote file changed (ETag {etag}, was {})",
                        job.etag.as_deref().unwrap_or_default()
                    )));
                }
                let cr = header(h, CONTENT_RANGE)
                    .and_then(|v| parse_content_range(&v).ok())
                    .ok_or_else(|| {
                        Stop::Failed(Error::Protocol("206 without a usable Content-Range".into()))
                    })?;
                if cr.total.is_some_and(|t| t != job.length) {
                    return Err(Stop::Changed("the remote file changed its length".into()));
                }
                if cr.first != from {
                    return Err(Stop::Failed(Error::Protocol(format!(
                        "asked for bytes from {from}, the server sent from {}",
                        cr.first
                    ))));
                }
            }
            // The whole file from the start, as asked (a server that ignores Range, or one
            // connection starting afresh): as good as a 206, if it is the same file.
            StatusCode::OK
                if from == 0
                    && seg.start == 0
                    && seg.end == job.length
                    && (job.etag.is_none() || header(resp.headers(), ETAG) == job.etag)
                    && header(resp.headers(), CONTENT_LENGTH)
                        .is_none_or(|l| l == job.length.to_string()) => {}
            // If-Range did not match: the server sends the whole (new) representation.
            StatusCode::OK => {
                return Err(Stop::Changed(
                    "the remote file changed (the server answered the range with the whole file)"
                        .into(),
                ));
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                return Err(Stop::Changed(
                    "the remote file is shorter than it was".into(),
                ));
            }
            _ => return Err(Stop::Failed(error_from(resp).await)),
        }
        let mut stream = resp.bytes_stream();
        let mut buf = BytesMut::with_capacity(WRITE_BLOCK);
        let mut pos = from;
        let limit = seg.end;
        let mut pending: Option<PendingWrite> = None;
        let mut result = Ok(());
        loop {
            let next = stream.next().await;
            let chunk = match next {
                Some(Ok(c)) => Some(c),
                Some(Err(e)) => {
                    result = Err(Stop::Failed(Error::network(&e)));
                    None
                }
                None => None,
            };
            let ended = chunk.is_none();
            if let Some(c) = chunk {
                // Never write past the segment, whatever the server sends.
                let room = (limit - pos - buf.len() as u64) as usize;
                buf.extend_from_slice(&c[..c.len().min(room)]);
            }
            if buf.len() >= WRITE_BLOCK || (ended && !buf.is_empty()) {
                // One write in flight while the next block arrives.
                if let Some(p) = pending.take() {
                    self.advance(job, i, written(job, p).await?);
                }
                let block: Bytes = buf.split().freeze();
                let file = job.file.clone();
                let at = pos;
                pos += block.len() as u64;
                pending = Some(tokio::task::spawn_blocking(move || {
                    file.write_all_at(&block, at).map(|()| block.len() as u64)
                }));
            }
            if ended || pos >= limit {
                break;
            }
        }
        if let Some(p) = pending.take() {
            self.advance(job, i, written(job, p).await?);
        }
        result
    }

    fn advance(&self, job: &Job, i: usize, n: u64) {
        // Release: the follower that sees the new count reads bytes already written.
        job.done[i].fetch_add(n, Ordering::Release);
        let total = job.total_done.fetch_add(n, Ordering::Relaxed) + n;
        self.emit(Event::Progress {
            file: job.label.clone(),
            bytes: total,
            total: job.length,
        });
    }

    /// How the result can be checked, decided before the download so that the digest is
    /// computed while the bytes arrive.
    fn plan_check(&self, job: &Job) -> Check {
        match job.etag.as_deref().and_then(etag_digest) {
            Some((alg, want)) => Check::Digest(alg, want),
            None => Check::NotADigest,
        }
    }

    /// Checks the finished file against the ETag's digest.
    async fn verify(
        &self,
        job: &Arc<Job>,
        check: Check,
        follower: Option<Follower>,
    ) -> Result<Verification> {
        let note = |m: &str| self.note(&job.label, m);
        let (alg, want) = match check {
            Check::NotADigest => {
                note("the server's ETag is not a content digest: the download is not verified");
                return Ok(Verification::None);
            }
            Check::Digest(alg, want) => (alg, want),
        };
        let hasher = match follower {
            Some(f) => f.await.expect("hash task panicked")?,
            None => Hasher::new(alg),
        };
        // The follower covers the file unless it stopped early (it never does when every
        // range arrived); a pass over the file is the fallback.
        let hasher = if hasher.position() == job.length {
            hasher
        } else {
            let (file, len) = (job.file.clone(), job.length);
            tokio::task::spawn_blocking(move || hash_file(&file, alg, len))
                .await
                .expect("hash task panicked")?
        };
        let got = hasher.finalize_hex();
        if got == want {
            note(&format!(
                "verified: the {alg} digest matches the server's ETag"
            ));
            return Ok(Verification::Digest(alg.name()));
        }
        Err(Error::DigestMismatch {
            alg: alg.name(),
            expected: want,
            actual: got,
        })
    }
}

/// How a download will be checked.
enum Check {
    /// The content digest in the ETag: algorithm and hex.
    Digest(HashAlg, String),
    NotADigest,
}

/// The content hasher following the written prefix of the `.part` file.
type Follower = tokio::task::JoinHandle<Result<Hasher>>;

/// Hashes the `.part` file's contiguous written prefix as it grows, on its own thread,
/// reading the bytes back from the page cache. With one connection it follows right behind
/// the writes; with several it follows the first range and catches up on each next one as
/// the ranges before it complete. Either way, verifying costs no pass of its own after the
/// last byte arrives. Returns once it covered the whole file, or when `job.stop` is set and
/// nothing more is written (then possibly short).
fn follow(job: Arc<Job>, alg: HashAlg) -> Follower {
    tokio::task::spawn_blocking(move || {
        let mut h = Hasher::new(alg);
        let mut buf = vec![0u8; WRITE_BLOCK];
        loop {
            let at = h.position();
            if at >= job.length {
                return Ok(h);
            }
            let stopping = job.stop.load(Ordering::Acquire);
            let ready = job.prefix();
            if ready > at {
                let n = (ready - at).min(WRITE_BLOCK as u64) as usize;
                job.file
                    .read_exact_at(&mut buf[..n], at)
                    .map_err(|e| Error::local(&job.label, e))?;
                h.update(&buf[..n]);
            } else if stopping {
                return Ok(h);
            } else {
                std::thread::sleep(FOLLOW_POLL);
            }
        }
    })
}

fn snapshot(job: &Job, meta: &PartMeta) -> PartMeta {
    let mut m = meta.clone();
    for (s, d) in m.segments.iter_mut().zip(&job.done) {
        s.done = d.load(Ordering::Relaxed);
    }
    m
}

fn hash_file(file: &File, alg: HashAlg, len: u64) -> Result<Hasher> {
    let mut h = Hasher::new(alg);
    let mut buf = vec![0u8; WRITE_BLOCK];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(WRITE_BLOCK as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)
            .map_err(|e| Error::local("the .part file", e))?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(h)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

async fn load_meta(path: &Path) -> Option<PartMeta> {
    let bytes = tokio::fs::read(path).await.ok()?;
    let m: PartMeta = serde_json::from_slice(&bytes).ok()?;
    // A meta file that does not describe the whole length is not trusted.
    let covers = m.segments.first().is_none_or(|s| s.start == 0)
        && m.segments.windows(2).all(|w| w[0].end == w[1].start)
        && m.segments
            .last()
            .map_or(m.length == 0, |s| s.end == m.length)
        && m.segments.iter().all(|s| s.done <= s.len());
    covers.then_some(m)
}

async fn save_meta(path: &Path, meta: &PartMeta) -> Result<()> {
    let tmp = with_suffix(path, ".tmp");
    let json = serde_json::to_vec(meta).expect("meta serialises");
    tokio::fs::write(&tmp, json)
        .await
        .map_err(|e| Error::local(&tmp, e))?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|e| Error::local(path, e))
}

/// Opens (or creates, when `fresh`, truncating) the `.part` file at its full length.
async fn open_part(path: &Path, length: u64, fresh: bool) -> Result<File> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::local(dir, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(fresh)
            .open(&path)
            .map_err(|e| Error::local(&path, e))?;
        file.set_len(length).map_err(|e| Error::local(&path, e))?;
        Ok(file)
    })
    .await
    .expect("open task panicked")
}

/// Makes the `.part` file durable and gives it its final name.
async fn finish(file: &Arc<File>, part: &Path, path: &Path) -> Result<()> {
    let (file, part, path) = (file.clone(), part.to_owned(), path.to_owned());
    tokio::task::spawn_blocking(move || {
        file.sync_all().map_err(|e| Error::local(&part, e))?;
        std::fs::rename(&part, &path).map_err(|e| Error::local(&path, e))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    })
    .await
    .expect("finish task panicked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_come_from_content_disposition_safely() {
        assert_eq!(
            disposition_file_name(
                "attachment; filename=\"__ 2026.pdf\"; filename*=UTF-8''%E6%8A%A5%E5%91%8A%202026.pdf"
            )
            .as_deref(),
            Some("报告 2026.pdf")
        );
        assert_eq!(
            disposition_file_name("attachment; filename=\"a.bin\"").as_deref(),
            Some("a.bin")
        );
        assert_eq!(
            disposition_file_name("attachment; filename=\"../../etc/passwd\"").as_deref(),
            Some("passwd")
        );
        assert_eq!(disposition_file_name("attachment").as_deref(), None);
        assert_eq!(
            disposition_file_name("attachment; filename=\"..\"").as_deref(),
            None
        );
        let u = Url::parse("http://h/upload/ab%20c.bin?x=1").unwrap();
        assert_eq!(url_file_name(&u).as_deref(), Some("ab c.bin"));
    }

    #[test]
    fn etags_that_are_digests_are_recognised() {
        let md5 = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            etag_digest(&format!("\"md5-{md5}\"")),
            Some((HashAlg::Md5, md5.to_owned()))
        );
        assert_eq!(etag_digest(&format!("W/\"md5-{md5}\"")), None);
        assert_eq!(etag_digest(&format!("\"md5-{}\"", &md5[1..])), None);
        assert_eq!(etag_digest("\"crc-0\""), None);
        assert_eq!(etag_digest("\"0123\""), None);
    }

    #[test]
    fn segments_cover_the_file_and_resplit_keeps_done_bytes() {
        let segs = split(10 * MIN_SEGMENT + 3, 4);
        assert_eq!(segs.len(), 4);
        assert_eq!(segs[0].start, 0);
        assert_eq!(segs.last().unwrap().end, 10 * MIN_SEGMENT + 3);
        assert!(segs.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(split(0, 4), vec![]);

        let one = vec![Segment {
            start: 0,
            end: 8 * MIN_SEGMENT,
            done: 2 * MIN_SEGMENT,
        }];
        let more = resplit(one, 4);
        assert_eq!(more.iter().filter(|s| s.done < s.len()).count(), 4);
        assert_eq!(more[0].done, 2 * MIN_SEGMENT);
        assert_eq!(more.iter().map(|s| s.done).sum::<u64>(), 2 * MIN_SEGMENT);
        assert!(more.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(more.last().unwrap().end, 8 * MIN_SEGMENT);
    }
}
