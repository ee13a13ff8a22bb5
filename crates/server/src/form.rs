//! Reading what form-based fronts receive: query strings and the text fields of a
//! `multipart/form-data` body.

use crate::error::ApiError;
use axum::body::{Body, BodyDataStream};
use axum::extract::Request;
use axum::extract::multipart::Field;
use bytes::Bytes;
use ferry_core::codes;
use futures_util::{Stream, StreamExt};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Most of a body's rest [`Rest::discard`] reads: a chunk the libraries send is far smaller.
const DISCARD_MAX: u64 = 256 << 20;
/// How long [`Rest::discard`] waits for the rest of a body.
const DISCARD_WITHIN: Duration = Duration::from_secs(30);

/// What a multipart handler leaves of its request body, still readable after the parser
/// that consumed the body has been dropped.
///
/// A chunk refused from its fields, or one held already, is answered without reading the
/// file part. Answering while the client still sends makes the server close the connection
/// with bytes unread, and the client then sees a reset instead of the answer: a browser
/// reports a network error, which the chunk libraries retry rather than read the refusal.
/// Reading the rest first (bounded) lets every client see the status.
#[derive(Clone)]
pub struct Rest(Arc<Mutex<BodyDataStream>>);

impl Rest {
    /// The request with a body that reads through the returned [`Rest`].
    pub fn split(req: Request) -> (Request, Rest) {
        let (parts, body) = req.into_parts();
        let rest = Rest(Arc::new(Mutex::new(body.into_data_stream())));
        (
            Request::from_parts(parts, Body::from_stream(rest.clone())),
            rest,
        )
    }

    /// Reads and drops what is left of the body, up to 256 MiB and 30 s; past either the
    /// connection is closed as before.
    pub async fn discard(mut self) {
        let mut left = DISCARD_MAX;
        let _ = tokio::time::timeout(DISCARD_WITHIN, async {
            while let Some(Ok(b)) = self.next().await {
                match left.checked_sub(b.len() as u64) {
                    Some(l) => left = l,
                    None => break,
                }
            }
        })
        .await;
    }
}

impl Stream for Rest {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut body = self.0.lock().unwrap_or_else(|e| e.into_inner());
        body.poll_next_unpin(cx)
    }
}

/// The pairs of a query string (`+` and percent escapes decoded); `None` when one of them
/// is not UTF-8 once decoded.
pub fn query_pairs(q: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode_component(k)?, decode_component(v)?);
    }
    Some(out)
}

/// One key or value of a query string, `+` and percent escapes decoded; `None` when it is
/// not UTF-8 once decoded.
pub fn decode_component(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// A text field of a multipart body, trimmed: `malformed_multipart` when it cannot be read
/// or is not UTF-8, `field_too_long` (naming `what`) past `max` bytes.
pub async fn read_text(field: &mut Field<'_>, max: usize, what: &str) -> Result<String, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| {
        ApiError::bad_request(
            codes::MALFORMED_MULTIPART,
            format!("a form field could not be read: {e}"),
        )
    })? {
        buf.extend_from_slice(&chunk);
        if buf.len() > max {
            return Err(ApiError::bad_request(
                codes::FIELD_TOO_LONG,
                format!("{what} must be shorter than {max} bytes"),
            ));
        }
    }
    String::from_utf8(buf)
        .map(|s| s.trim().to_owned())
        .map_err(|_| {
            ApiError::bad_request(codes::MALFORMED_MULTIPART, "form fields must be UTF-8 text")
        })
}
