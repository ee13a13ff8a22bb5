//! ferry's byte-range dialect (`POST /api/upload` with `X-File-Id` and `Content-Range`), the
//! requests [`crate::upload`] uses to write one upload over several connections at once:
//! each connection sends its own slices of the file, in any order, and the file is complete
//! when its last byte is durable. Unlike tus concatenation there are no partial uploads, so
//! no copy is made at the end and the server holds the file's size once.
//!
//! Every body carries `Content-Digest: sha-256=:…:` (RFC 9530), so the server keeps nothing
//! that was damaged on the way. What the server holds is asked with `GET /api/upload/status`
//! and `Accept: application/json` (held and missing ranges, the URL once complete).

use crate::error::{Error, Result};
use crate::http::{Http, check, counting_body, error_from};
use base64::Engine as _;
use bytes::Bytes;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{ACCEPT, CONTENT_RANGE};
use reqwest::{Method, Url};
use serde::Deserialize;

/// Piece size for progress reporting within one body.
const PROGRESS_PIECE: usize = 256 * 1024;

/// What the server holds of one upload (the JSON of a status request or of a write).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    /// False for an id the server does not know (nothing held).
    #[serde(default = "yes")]
    pub exists: bool,
    /// Missing byte ranges, first and last byte inclusive.
    #[serde(default)]
    pub missing: Vec<[u64; 2]>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub complete: bool,
    #[serde(default)]
    pub url: Option<String>,
}

fn yes() -> bool {
    true
}

impl Held {
    /// Missing ranges, end exclusive.
    pub fn missing(&self) -> impl Iterator<Item = std::ops::Range<u64>> + '_ {
        self.missing.iter().map(|[a, b]| *a..b.saturating_add(1))
    }

    /// How many bytes from `start` on (up to `end`) the server holds without a gap.
    pub fn held_from(&self, start: u64, end: u64) -> u64 {
        let gap = self
            .missing()
            .filter(|m| m.end > start && m.start < end)
            .map(|m| m.start.max(start))
            .min()
            .unwrap_or(end);
        gap - start
    }
}

/// One file's upload in this dialect: its `X-File-Id`, name and size.
#[derive(Clone, Debug)]
pub struct RangeFile {
    pub id: std::sync::Arc<str>,
    /// The file's name, for downloads.
    pub name: std::sync::Arc<str>,
    pub total: u64,
}

/// The byte-range dialect of one ferry server.
#[derive(Clone)]
pub struct Ranges {
    http: Http,
    upload: Url,
    status: Url,
}

impl Ranges {
    pub fn new(http: Http, server: &Url) -> Result<Ranges> {
        let join = |p: &str| {
            server
                .join(p)
                .map_err(|e| Error::Config(format!("bad server URL {server}: {e}")))
        };
        Ok(Ranges {
            http,
            upload: join("api/upload")?,
            status: join("api/upload/status")?,
        })
    }

    /// What the server holds of `file_id`. `Ok(None)` when the server does not speak this
    /// dialect (not a ferry server: no JSON status).
    pub async fn status(&self, file_id: &str) -> Result<Option<Held>> {
        let resp = self
            .http
            .send(
                self.http
                    .request(Method::GET, self.status.clone())
                    .header("X-File-Id", file_id)
                    .header(ACCEPT, "application/json"),
            )
            .await?;
        let status = resp.status().as_u16();
        let json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        match status {
            200 if json => {}
            // Not ours to guess about: no token, a busy or failing server.
            401 | 403 | 408 | 423 | 429 | 500.. => {
                return Err(error_from(resp).await);
            }
            _ => return Ok(None),
        }
        let body = resp.bytes().await.map_err(|e| Error::network(&e))?;
        let held: Held = serde_json::from_slice(&body)
            .map_err(|e| Error::Protocol(format!("unreadable upload status: {e}")))?;
        Ok(Some(held))
    }

    /// Writes `body` at byte `start` of `file`; `sha256` is the body's digest. Answers what
    /// the server holds afterwards.
    pub async fn put(
        &self,
        file: &RangeFile,
        start: u64,
        body: Bytes,
        sha256: Option<&[u8]>,
        on_sent: impl Fn(u64) + Send + 'static,
    ) -> Result<Held> {
        let last = start + body.len() as u64 - 1;
        let mut req = self
            .http
            .request(Method::POST, self.upload.clone())
            .header("X-File-Id", &*file.id)
            .header(
                "X-File-Name",
                utf8_percent_encode(&file.name, NON_ALPHANUMERIC).to_string(),
            )
            .header(
                CONTENT_RANGE,
                format!("bytes {start}-{last}/{}", file.total),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
        if let Some(d) = sha256 {
            let b64 = base64::engine::general_purpose::STANDARD.encode(d);
            req = req.header("Content-Digest", format!("sha-256=:{b64}:"));
        }
        let req = req.body(counting_body(body, PROGRESS_PIECE, on_sent));
        let resp = check(self.http.send(req).await?).await?;
        let body = resp.bytes().await.map_err(|e| Error::network(&e))?;
        serde_json::from_slice(&body)
            .map_err(|e| Error::Protocol(format!("unreadable answer to a write: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_prefix_of_a_slice_stops_at_the_first_gap() {
        let h = Held {
            missing: vec![[10, 19], [40, 49]],
            ..Held::default()
        };
        assert_eq!(h.held_from(0, 30), 10);
        assert_eq!(h.held_from(20, 40), 20);
        assert_eq!(h.held_from(20, 45), 20);
        assert_eq!(h.held_from(15, 30), 0);
        assert_eq!(h.held_from(50, 60), 10);
        let none = Held::default();
        assert_eq!(none.held_from(5, 9), 4);
    }
}
