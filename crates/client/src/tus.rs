//! A tus 1.0.0 client for one endpoint (`<server>/files/`): the requests of the core
//! protocol (HEAD, PATCH) and of the extensions ferry uses — creation (POST), checksum
//! (`Upload-Checksum` on PATCH), concatenation (partial uploads and a final one) and
//! termination (DELETE). Each function is one request; retrying and resuming are the
//! caller's ([`crate::upload`]). Header syntax comes from [`ferry_core::tus`], the codec the
//! server parses with.

use crate::error::{Error, Result};
use crate::http::{Http, check, counting_body, resolve};
use bytes::Bytes;
use ferry_core::tus::{Checksum, Metadata, UploadConcat, VERSION, parse_non_negative};
use reqwest::header::{CONTENT_TYPE, HeaderMap, LOCATION};
use reqwest::{Method, Response, Url};

/// Piece size for progress reporting within one PATCH body.
const PROGRESS_PIECE: usize = 256 * 1024;

/// What `OPTIONS` told about the server (tus "Core Protocol" / OPTIONS).
#[derive(Clone, Debug, Default)]
pub struct Capabilities {
    pub extensions: Vec<String>,
    pub checksum_algorithms: Vec<String>,
    /// `Tus-Max-Size`.
    pub max_size: Option<u64>,
}

impl Capabilities {
    pub fn has(&self, extension: &str) -> bool {
        self.extensions.iter().any(|e| e == extension)
    }

    /// Whether PATCH bodies can carry `Upload-Checksum: sha256 …`.
    pub fn sha256_checksums(&self) -> bool {
        self.has("checksum") && self.checksum_algorithms.iter().any(|a| a == "sha256")
    }
}

/// An upload's state as `HEAD` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub offset: Option<u64>,
    pub length: Option<u64>,
    /// `Upload-Concat: final;…` — a concatenation of partial uploads.
    pub is_final: bool,
}

#[derive(Clone)]
pub struct Tus {
    http: Http,
    endpoint: Url,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn number(h: &HeaderMap, name: &str) -> Result<Option<u64>> {
    match header(h, name) {
        None => Ok(None),
        Some(v) => parse_non_negative(v)
            .map(Some)
            .ok_or_else(|| Error::Protocol(format!("{name}: {v:?} is not a byte count"))),
    }
}

impl Tus {
    /// `server` is the server's base URL; uploads are created at `<server>/files/`.
    pub fn new(http: Http, server: &Url) -> Result<Tus> {
        let endpoint = server
            .join("files/")
            .map_err(|e| Error::Config(format!("bad server URL {server}: {e}")))?;
        Ok(Tus { http, endpoint })
    }

    fn request(&self, method: Method, url: &Url) -> reqwest::RequestBuilder {
        self.http
            .request(method, url.clone())
            .header("Tus-Resumable", VERSION)
    }

    /// `OPTIONS /files/`: the extensions, checksum algorithms and size limit.
    pub async fn options(&self) -> Result<Capabilities> {
        let resp = self
            .http
            .send(self.http.request(Method::OPTIONS, self.endpoint.clone()))
            .await?;
        let not_tus = |why: String| {
            Error::Protocol(format!(
                "{} does not speak tus ({why}); check that --server is the server's base URL (e.g. http://host:8080, without /files/)",
                self.endpoint
            ))
        };
        if !resp.status().is_success() {
            return Err(match check(resp).await {
                Err(e @ Error::Server { status: 401, .. }) => e,
                Err(e) if e.is_retryable() => e,
                Err(e) => not_tus(e.to_string()),
                Ok(_) => unreachable!("checked above"),
            });
        }
        let h = resp.headers();
        let versions = header(h, "Tus-Version").unwrap_or_default();
        if !versions.split(',').any(|v| v.trim() == VERSION) {
            return Err(not_tus(format!("Tus-Version is {versions:?}")));
        }
        let list = |name| {
            header(h, name)
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        };
        Ok(Capabilities {
            extensions: list("Tus-Extension"),
            checksum_algorithms: list("Tus-Checksum-Algorithm"),
            max_size: number(h, "Tus-Max-Size")?,
        })
    }

    fn location(&self, resp: &Response) -> Result<Url> {
        let loc = header(resp.headers(), LOCATION.as_str())
            .ok_or_else(|| Error::Protocol("201 Created without a Location header".into()))?;
        resolve(&self.endpoint, loc)
    }

    /// `POST /files/` (creation): a new upload of `length` bytes; `partial` makes it a part
    /// of a later concatenation (`Upload-Concat: partial`).
    pub async fn create(&self, length: u64, metadata: &Metadata, partial: bool) -> Result<Url> {
        let mut req = self
            .request(Method::POST, &self.endpoint)
            .header("Upload-Length", length);
        if !metadata.is_empty() {
            req = req.header("Upload-Metadata", metadata.to_string());
        }
        if partial {
            req = req.header("Upload-Concat", UploadConcat::Partial.to_string());
        }
        let resp = check(self.http.send(req).await?).await?;
        self.location(&resp)
    }

    /// `POST /files/` with `Upload-Concat: final;…` (concatenation): the parts, in order, as
    /// one upload.
    pub async fn concat(&self, parts: &[Url], metadata: &Metadata) -> Result<Url> {
        // The spec's examples list parts by path; a path is also what survives a proxy that
        // rewrites the host.
        let concat = UploadConcat::Final(parts.iter().map(|u| u.path().to_owned()).collect());
        let mut req = self
            .request(Method::POST, &self.endpoint)
            .header("Upload-Concat", concat.to_string());
        if !metadata.is_empty() {
            req = req.header("Upload-Metadata", metadata.to_string());
        }
        let resp = check(self.http.send(req).await?).await?;
        self.location(&resp)
    }

    /// `HEAD <upload>`: how many bytes the server holds.
    pub async fn head(&self, url: &Url) -> Result<Head> {
        let resp = check(self.http.send(self.request(Method::HEAD, url)).await?).await?;
        let h = resp.headers();
        Ok(Head {
            offset: number(h, "Upload-Offset")?,
            length: number(h, "Upload-Length")?,
            is_final: header(h, "Upload-Concat").is_some_and(|c| c.starts_with("final")),
        })
    }

    /// `PATCH <upload>` of `body` at `offset`, with its checksum when given. Returns the new
    /// offset. `on_sent` is called as pieces of the body go out.
    pub async fn patch(
        &self,
        url: &Url,
        offset: u64,
        body: Bytes,
        checksum: Option<&Checksum>,
        on_sent: impl Fn(u64) + Send + 'static,
    ) -> Result<u64> {
        let len = body.len();
        let mut req = self
            .request(Method::PATCH, url)
            .header(CONTENT_TYPE, "application/offset+octet-stream")
            .header("Upload-Offset", offset)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(counting_body(body, PROGRESS_PIECE, on_sent));
        if let Some(c) = checksum {
            req = req.header("Upload-Checksum", c.to_string());
        }
        let resp = check(self.http.send(req).await?).await?;
        number(resp.headers(), "Upload-Offset")?
            .ok_or_else(|| Error::Protocol("PATCH answered without Upload-Offset".into()))
    }

    /// `DELETE <upload>` (termination).
    pub async fn delete(&self, url: &Url) -> Result<()> {
        check(self.http.send(self.request(Method::DELETE, url)).await?).await?;
        Ok(())
    }
}

/// Whether an error means the upload no longer exists on the server (expired, deleted, or
/// another token's): tus "Core Protocol" answers 404 or 410, and 403 is how some servers
/// refuse an upload that is not yours.
pub fn is_gone(e: &Error) -> bool {
    matches!(e.status(), Some(403 | 404 | 410))
}
