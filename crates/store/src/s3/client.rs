//! The S3 requests ferry makes, signed by rusty-s3 and sent with reqwest, with retries.
//!
//! rusty-s3 only builds and signs requests (SigV4 presigned URLs, the payload unsigned), so
//! bodies stream from wherever the bytes are (a spool file, a ranged GET) without being held
//! in memory; object_store's multipart API takes each part as one in-memory buffer, which at
//! 5–105 MiB per part and dozens of concurrent uploads would be most of the node's memory.
//!
//! Every request is retried with exponential backoff when the failure may be transient
//! (connection errors, timeouts, 5xx, 429, `SlowDown`) for up to [`RETRY_BUDGET`]; bodies
//! are [`Body`] values that can be sent again. What is left after that is an [`S3Error`] whose
//! [`S3Error::transient`] tells the engine to answer 503 with `Retry-After`.

use bytes::Bytes;
use futures_util::TryStreamExt;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use url::Url;

/// How long a signed URL stays valid: longer than any request we send with it.
const SIGNED_FOR: Duration = Duration::from_secs(3600);
/// How long failures that may pass are retried before the request fails.
pub const RETRY_BUDGET: Duration = Duration::from_secs(15);
/// First backoff; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Opening a connection to the store.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Silence on an open request (no byte sent or received) before it counts as failed.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the bytes of a request come from; each attempt opens them anew.
#[derive(Clone, Debug)]
pub enum Body {
    Empty,
    Bytes(Bytes),
    /// Buffers sent one after another, as received (a cell held in memory).
    Chunks(Arc<[Bytes]>),
    /// `len` bytes of a local file from `offset` (a spool file), streamed.
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::Chunks(c) => c.iter().map(|b| b.len() as u64).sum(),
            Body::File { len, .. } => *len,
        }
    }

    async fn open(&self) -> std::io::Result<reqwest::Body> {
        Ok(match self {
            Body::Empty => reqwest::Body::from(Bytes::new()),
            Body::Bytes(b) => reqwest::Body::from(b.clone()),
            Body::Chunks(c) => {
                let chunks = c.clone();
                let iter =
                    (0..chunks.len()).map(move |i| Ok::<_, std::io::Error>(chunks[i].clone()));
                reqwest::Body::wrap_stream(futures_util::stream::iter(iter))
            }
            Body::File { path, offset, len } => {
                use tokio::io::{AsyncReadExt, AsyncSeekExt};
                let mut file = tokio::fs::File::open(path).await?;
                file.seek(std::io::SeekFrom::Start(*offset)).await?;
                let reader = file.take(*len);
                // Small reads: dozens of parts may be in flight at once on a busy node.
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
                    reader,
                    256 << 10,
                ))
            }
        })
    }
}

/// What went wrong with a request, in a sentence, and whether waiting may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    pub kind: S3ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3ErrorKind {
    /// The store could not be reached or answered 5xx/429 for longer than the retry budget.
    Unavailable,
    /// The bucket does not exist.
    NoSuchBucket,
    /// The object or multipart upload does not exist.
    NotFound,
    /// The credentials were refused (403, a bad signature, an unknown key).
    Denied,
    /// A range outside the object.
    InvalidRange,
    /// The store does not implement the request (501); callers that can do without it do.
    Unsupported,
    /// Anything else the store refused (a 4xx we do not expect).
    Refused,
}

impl S3Error {
    fn new(kind: S3ErrorKind, message: impl Into<String>) -> S3Error {
        S3Error {
            kind,
            message: message.into(),
        }
    }

    /// Whether the same request may succeed later (the store was unreachable or busy).
    pub fn transient(&self) -> bool {
        self.kind == S3ErrorKind::Unavailable
    }
}

impl fmt::Display for S3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for S3Error {}

impl From<S3Error> for std::io::Error {
    fn from(e: S3Error) -> std::io::Error {
        let kind = match e.kind {
            S3ErrorKind::NotFound | S3ErrorKind::NoSuchBucket => std::io::ErrorKind::NotFound,
            S3ErrorKind::Denied => std::io::ErrorKind::PermissionDenied,
            S3ErrorKind::Unavailable => std::io::ErrorKind::TimedOut,
            S3ErrorKind::Unsupported => std::io::ErrorKind::Unsupported,
            S3ErrorKind::InvalidRange | S3ErrorKind::Refused => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}

/// Request counters for `/metrics`.
#[derive(Debug, Default)]
pub struct S3Stats {
    /// Requests sent, attempts included.
    pub requests: AtomicU64,
    /// Attempts that failed (and were retried or given up).
    pub errors: AtomicU64,
    /// Sum of the attempts' durations to the response head, in microseconds.
    pub latency_us: AtomicU64,
}

/// One object listed under a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    /// As the store wrote it (RFC 3339).
    pub last_modified: Option<String>,
}

/// A multipart upload still open under a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenUpload {
    pub key: String,
    pub upload_id: String,
    /// When it was started, as the store wrote it (RFC 3339).
    pub initiated: Option<String>,
}

/// A bucket and the credentials to use it.
#[derive(Clone)]
pub struct S3Client {
    http: reqwest::Client,
    bucket: Arc<Bucket>,
    credentials: Option<Arc<Credentials>>,
    stats: Arc<S3Stats>,
    /// How long failures that may pass are retried ([`RETRY_BUDGET`] unless changed).
    retry_budget: Duration,
}

impl fmt::Debug for S3Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.debug_struct("S3Client")
            .field("bucket", &self.bucket.name())
            .field("endpoint", &self.bucket.base_url().as_str())
            .finish()
    }
}

impl S3Client {
    /// A client for `bucket` at `endpoint` (path-style URLs unless `virtual_hosted`).
    pub fn new(
        endpoint: Url,
        virtual_hosted: bool,
        bucket: &str,
        region: &str,
        credentials: Option<Credentials>,
    ) -> Result<S3Client, String> {
        let style = if virtual_hosted {
            UrlStyle::VirtualHost
        } else {
            UrlStyle::Path
        };
        let bucket = Bucket::new(endpoint, style, bucket.to_owned(), region.to_owned())
            .map_err(|e| format!("cannot address bucket {bucket:?}: {e}"))?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build the HTTP client for S3: {e}"))?;
        Ok(S3Client {
            http,
            bucket: Arc::new(bucket),
            credentials: credentials.map(Arc::new),
            stats: Arc::default(),
            retry_budget: RETRY_BUDGET,
        })
    }

    /// This client with another retry budget (zero: one attempt, for health checks that
    /// must answer at once).
    pub fn with_retry_budget(&self, budget: Duration) -> S3Client {
        S3Client {
            retry_budget: budget,
            ..self.clone()
        }
    }

    pub fn stats(&self) -> &Arc<S3Stats> {
        &self.stats
    }

    fn creds(&self) -> Option<&Credentials> {
        self.credentials.as_deref()
    }

    /// Sends one request, retrying what may pass; `what` names it in errors.
    async fn send(
        &self,
        what: &str,
        method: reqwest::Method,
        url: impl Fn() -> Url,
        headers: &[(&str, String)],
        body: &Body,
    ) -> Result<reqwest::Response, S3Error> {
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let attempt = Instant::now();
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let result = async {
                let mut req = self.http.request(method.clone(), url());
                for (name, value) in headers {
                    req = req.header(*name, value);
                }
                if method == reqwest::Method::PUT || method == reqwest::Method::POST {
                    req = req
                        .header(reqwest::header::CONTENT_LENGTH, body.len())
                        .body(body.open().await.map_err(|e| {
                            S3Error::new(
                                S3ErrorKind::Refused,
                                format!("{what}: cannot read the bytes to send: {e}"),
                            )
                        })?);
                }
                Ok::<_, S3Error>(req.send().await)
            }
            .await?;
            self.stats
                .latency_us
                .fetch_add(attempt.elapsed().as_micros() as u64, Ordering::Relaxed);
            let failure = match result {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    let code = xml_field(&text, "Code").unwrap_or_default();
                    let error = classify(what, status, &code, &text);
                    if !error.transient() {
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                        return Err(error);
                    }
                    error
                }
                Err(e) => S3Error::new(
                    S3ErrorKind::Unavailable,
                    format!(
                        "{what}: the object store did not answer: {}",
                        chain(&e.without_url())
                    ),
                ),
            };
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            if started.elapsed() + backoff > self.retry_budget {
                return Err(failure);
            }
            tracing::debug!(error = %failure, "retrying an S3 request");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Checks that the bucket exists and the credentials may use it (start-up and
    /// `/healthz`): a one-key listing under `prefix`, which needs the read permission that
    /// every later request needs too.
    pub async fn check(&self, prefix: &str) -> Result<(), S3Error> {
        self.list_page(prefix, None, Some(1)).await.map(|_| ())
    }

    /// Stores `body` as object `key`; returns its ETag.
    pub async fn put(&self, key: &str, body: Body) -> Result<String, S3Error> {
        let resp = self
            .send(
                "storing an object",
                reqwest::Method::PUT,
                || self.bucket.put_object(self.creds(), key).sign(SIGNED_FOR),
                &[],
                &body,
            )
            .await?;
        Ok(etag(&resp))
    }

    /// Object `key`, or bytes `range` of it; the body streams from the response.
    pub async fn get(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<reqwest::Response, S3Error> {
        let headers: Vec<(&str, String)> = match &range {
            Some(r) if r.is_empty() => {
                return Err(S3Error::new(S3ErrorKind::InvalidRange, "an empty range"));
            }
            Some(r) => vec![("range", format!("bytes={}-{}", r.start, r.end - 1))],
            None => Vec::new(),
        };
        self.send(
            "reading an object",
            reqwest::Method::GET,
            || self.bucket.get_object(self.creds(), key).sign(SIGNED_FOR),
            &headers,
            &Body::Empty,
        )
        .await
    }

    /// Object `key`'s bytes, whole (small objects: pieces, test reads).
    pub async fn get_bytes(&self, key: &str, range: Option<Range<u64>>) -> Result<Bytes, S3Error> {
        let resp = self.get(key, range).await?;
        resp.bytes().await.map_err(|e| {
            S3Error::new(
                S3ErrorKind::Unavailable,
                format!("reading an object: {}", chain(&e.without_url())),
            )
        })
    }

    /// A URL that GETs object `key` for `ttl` without credentials, the answer carrying
    /// `content_type` and `content_disposition` (S3's `response-*` parameters).
    pub fn presigned_get(
        &self,
        key: &str,
        ttl: Duration,
        content_type: &str,
        content_disposition: &str,
    ) -> Url {
        let mut action = self.bucket.get_object(self.creds(), key);
        action.query_mut().insert(
            "response-content-disposition",
            content_disposition.to_owned(),
        );
        action
            .query_mut()
            .insert("response-content-type", content_type.to_owned());
        action.sign(ttl)
    }

    /// The body of `resp` as a stream of `io::Result<Bytes>`.
    pub fn stream(
        resp: reqwest::Response,
    ) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        // Without the URL: a signed URL in a log line would be a capability for an hour.
        resp.bytes_stream()
            .map_err(|e| std::io::Error::other(e.without_url()))
    }

    /// Removes object `key` (a missing one is fine).
    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        match self
            .send(
                "removing an object",
                reqwest::Method::DELETE,
                || {
                    self.bucket
                        .delete_object(self.creds(), key)
                        .sign(SIGNED_FOR)
                },
                &[],
                &Body::Empty,
            )
            .await
        {
            Err(e) if e.kind == S3ErrorKind::NotFound => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Starts a multipart upload for `key`; returns its id.
    pub async fn create_multipart(&self, key: &str) -> Result<String, S3Error> {
        let resp = self
            .send(
                "starting a multipart upload",
                reqwest::Method::POST,
                || {
                    self.bucket
                        .create_multipart_upload(self.creds(), key)
                        .sign(SIGNED_FOR)
                },
                &[],
                &Body::Empty,
            )
            .await?;
        let text = body_text(resp, "starting a multipart upload").await?;
        xml_field(&text, "UploadId").ok_or_else(|| {
            S3Error::new(
                S3ErrorKind::Refused,
                "starting a multipart upload: the answer names no upload id",
            )
        })
    }

    /// Sends part `number` (1-based) of multipart upload `upload_id`; returns its ETag.
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        body: Body,
    ) -> Result<String, S3Error> {
        let resp = self
            .send(
                "sending a part",
                reqwest::Method::PUT,
                || {
                    self.bucket
                        .upload_part(self.creds(), key, number, upload_id)
                        .sign(SIGNED_FOR)
                },
                &[],
                &body,
            )
            .await?;
        Ok(etag(&resp))
    }

    /// Completes multipart upload `upload_id` with the parts' ETags in part order; the
    /// object appears at `key` atomically. Returns the object's ETag.
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        etags: &[String],
    ) -> Result<String, S3Error> {
        let action = self.bucket.complete_multipart_upload(
            self.creds(),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let xml = action.clone().body();
        let resp = self
            .send(
                "completing a multipart upload",
                reqwest::Method::POST,
                || action.sign(SIGNED_FOR),
                &[],
                &Body::Bytes(Bytes::from(xml)),
            )
            .await?;
        // S3 may answer 200 and put the error in the body.
        let text = body_text(resp, "completing a multipart upload").await?;
        if let Some(code) = xml_field(&text, "Code").filter(|_| text.contains("<Error")) {
            let error = classify(
                "completing a multipart upload",
                reqwest::StatusCode::OK,
                &code,
                &text,
            );
            return Err(error);
        }
        Ok(xml_field(&text, "ETag").unwrap_or_default())
    }

    /// Abandons multipart upload `upload_id` and frees its parts (a missing one is fine).
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        match self
            .send(
                "aborting a multipart upload",
                reqwest::Method::DELETE,
                || {
                    self.bucket
                        .abort_multipart_upload(self.creds(), key, upload_id)
                        .sign(SIGNED_FOR)
                },
                &[],
                &Body::Empty,
            )
            .await
        {
            Err(e) if e.kind == S3ErrorKind::NotFound => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn list_page(
        &self,
        prefix: &str,
        token: Option<&str>,
        max: Option<usize>,
    ) -> Result<(Vec<Listed>, Option<String>), S3Error> {
        let resp = self
            .send(
                "listing objects",
                reqwest::Method::GET,
                || {
                    let mut action = self.bucket.list_objects_v2(self.creds());
                    action.with_prefix(prefix);
                    if let Some(t) = token {
                        action.with_continuation_token(t);
                    }
                    if let Some(m) = max {
                        action.with_max_keys(m);
                    }
                    action.sign(SIGNED_FOR)
                },
                &[],
                &Body::Empty,
            )
            .await?;
        let text = body_text(resp, "listing objects").await?;
        let parsed = rusty_s3::actions::ListObjectsV2::parse_response(&text).map_err(|e| {
            S3Error::new(
                S3ErrorKind::Refused,
                format!("listing objects: an answer that is not a listing ({e})"),
            )
        })?;
        let listed = parsed
            .contents
            .into_iter()
            .map(|c| Listed {
                key: c.key,
                size: c.size.unwrap_or(0),
                last_modified: c.last_modified,
            })
            .collect();
        Ok((listed, parsed.next_continuation_token))
    }

    /// Every object whose key starts with `prefix`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, S3Error> {
        let mut all = Vec::new();
        let mut token = None;
        loop {
            let (page, next) = self.list_page(prefix, token.as_deref(), None).await?;
            all.extend(page);
            match next {
                Some(t) => token = Some(t),
                None => return Ok(all),
            }
        }
    }

    /// Multipart uploads still open for keys starting with `prefix` (the first 1,000).
    /// [`S3ErrorKind::Unsupported`] from stores without the call (s3s-fs).
    pub async fn list_multipart(&self, prefix: &str) -> Result<Vec<OpenUpload>, S3Error> {
        let resp = self
            .send(
                "listing multipart uploads",
                reqwest::Method::GET,
                || {
                    let creds = self.creds();
                    let mut url = self.bucket.base_url().clone();
                    url.set_query(None);
                    match creds {
                        Some(c) => rusty_s3::signing::sign(
                            &jiff::Timestamp::now(),
                            rusty_s3::Method::Get,
                            url,
                            c.key(),
                            c.secret(),
                            c.token(),
                            self.bucket.region(),
                            SIGNED_FOR.as_secs(),
                            [("prefix", prefix), ("uploads", "")].into_iter(),
                            std::iter::empty(),
                        ),
                        None => {
                            url.query_pairs_mut()
                                .append_pair("prefix", prefix)
                                .append_pair("uploads", "");
                            url
                        }
                    }
                },
                &[],
                &Body::Empty,
            )
            .await?;
        let text = body_text(resp, "listing multipart uploads").await?;
        Ok(xml_elements(&text, "Upload")
            .filter_map(|upload| {
                Some(OpenUpload {
                    key: xml_field(upload, "Key")?,
                    upload_id: xml_field(upload, "UploadId")?,
                    initiated: xml_field(upload, "Initiated"),
                })
            })
            .collect())
    }
}

/// The whole body of an answer, as text; a body cut off is a failure that may pass.
async fn body_text(resp: reqwest::Response, what: &str) -> Result<String, S3Error> {
    resp.text().await.map_err(|e| {
        S3Error::new(
            S3ErrorKind::Unavailable,
            format!("{what}: {}", chain(&e.without_url())),
        )
    })
}

fn etag(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// What a refusal means; 5xx, 429 and throttling codes are transient.
fn classify(what: &str, status: reqwest::StatusCode, code: &str, text: &str) -> S3Error {
    use S3ErrorKind::*;
    let detail = xml_field(text, "Message").unwrap_or_default();
    let said = if code.is_empty() {
        format!("HTTP {}", status.as_u16())
    } else if detail.is_empty() {
        format!("{code} (HTTP {})", status.as_u16())
    } else {
        format!("{code}: {detail} (HTTP {})", status.as_u16())
    };
    let kind = match (status.as_u16(), code) {
        (_, "NoSuchBucket") => NoSuchBucket,
        (_, "NoSuchKey" | "NoSuchUpload") | (404, _) => NotFound,
        (_, "AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch") | (401 | 403, _) => {
            Denied
        }
        (_, "InvalidRange") | (416, _) => InvalidRange,
        (_, "NotImplemented") | (501, _) => Unsupported,
        (_, "SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout")
        | (429 | 500..=599, _) => Unavailable,
        _ => Refused,
    };
    S3Error::new(kind, format!("{what}: the object store answered {said}"))
}

/// The text of the first `<name>…</name>` in `xml`, entities decoded.
fn xml_field(xml: &str, name: &str) -> Option<String> {
    xml_elements(xml, name).next().map(unescape)
}

/// The contents of every `<name>…</name>` in `xml`, in order (no nesting of `name`).
fn xml_elements<'a>(xml: &'a str, name: &str) -> impl Iterator<Item = &'a str> + 'a {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let mut rest = xml;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let len = rest[start..].find(&close)?;
        let found = &rest[start..start + len];
        rest = &rest[start + len + close.len()..];
        Some(found)
    })
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#34;", "\"")
        .replace("&amp;", "&")
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_classified() {
        let err = |status: u16, code: &str| {
            classify(
                "x",
                reqwest::StatusCode::from_u16(status).unwrap(),
                code,
                "",
            )
            .kind
        };
        assert_eq!(err(404, "NoSuchBucket"), S3ErrorKind::NoSuchBucket);
        assert_eq!(err(404, "NoSuchKey"), S3ErrorKind::NotFound);
        assert_eq!(err(403, "InvalidAccessKeyId"), S3ErrorKind::Denied);
        assert_eq!(err(403, ""), S3ErrorKind::Denied);
        assert_eq!(err(503, "SlowDown"), S3ErrorKind::Unavailable);
        assert_eq!(err(500, ""), S3ErrorKind::Unavailable);
        assert_eq!(err(429, ""), S3ErrorKind::Unavailable);
        assert_eq!(err(416, ""), S3ErrorKind::InvalidRange);
        assert_eq!(err(400, "EntityTooSmall"), S3ErrorKind::Refused);
        assert_eq!(err(501, "NotImplemented"), S3ErrorKind::Unsupported);
    }

    #[test]
    fn xml_fields_are_found_and_decoded() {
        let xml = "<ListMultipartUploadsResult><Upload><Key>a&amp;b</Key><UploadId>1</UploadId></Upload>\
                   <Upload><Key>c</Key><UploadId>2</UploadId></Upload></ListMultipartUploadsResult>";
        let uploads: Vec<_> = xml_elements(xml, "Upload")
            .map(|u| {
                (
                    xml_field(u, "Key").unwrap(),
                    xml_field(u, "UploadId").unwrap(),
                )
            })
            .collect();
        assert_eq!(
            uploads,
            [("a&b".into(), "1".into()), ("c".into(), "2".into())]
        );
        assert_eq!(xml_field(xml, "Missing"), None);
    }
}
