//! The byte-offset resume dialect (SPEC §2.2), as the seed articles' clients speak it.
//!
//! - `GET /api/upload/status` with `X-File-Id` → `text/plain`: bytes held durably from the
//!   start of the file (0 when unknown), i.e. where an appending client resumes.
//! - `POST /api/upload` with `X-File-Id` and `X-Start-Byte: N` and a raw body: appended at N,
//!   which must equal the held count (else 409 with the held count).
//! - The same with `Content-Range: bytes first-last/total` instead: chunks may arrive out of
//!   order and in parallel; bytes already held are not rewritten.
//!
//! `X-File-Size` (or the `/total` of `Content-Range`) declares the total; when every byte is
//! held the upload completes and the answer carries its URL (`/files/<id>`).
//!
//! ferry's own client uses this dialect for parallel writes into one upload (no partial
//! uploads, no concatenation copy), with two additions any client may use:
//!
//! - `Content-Digest: sha-256=:<base64>:` (RFC 9530) on a POST: the body must have this
//!   SHA-256, else 460 `checksum_mismatch` and nothing of it is kept.
//! - `GET /api/upload/status` with `Accept: application/json`: the same JSON as a POST's
//!   answer (held and missing ranges, size, URL once complete), `"exists": false` for an id
//!   the server does not know.
//!
//! `X-File-Name` (percent-encoded UTF-8) on the first POST names the file for downloads.

use crate::AppState;
use crate::caller::Caller;
use crate::error::ApiError;
use axum::Json;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ferry_core::EngineError;
use ferry_core::codes;
use ferry_core::engine::{BodyCheck, NewUpload, WriteMode};
use ferry_core::hash::HashAlg;
use ferry_core::http_range::{ContentRangeError, parse_content_range};
use ferry_core::tenant::AppendRequest;
use ferry_core::upload::{Dialect, Upload, clean_file_name};
use futures_util::StreamExt;
use serde_json::json;

/// Longest accepted `X-File-Id` (clients use `name-size-mtime`).
const MAX_CLIENT_ID: usize = 1024;

fn key_for(client_id: &str) -> String {
    format!("offset:{client_id}")
}

/// The client's `X-File-Id`: any printable text (UTF-8 names included), bounded in length.
fn client_id(headers: &HeaderMap) -> Result<String, ApiError> {
    let raw = headers.get("x-file-id").ok_or_else(|| {
        ApiError::bad_request(
            codes::FILE_ID_REQUIRED,
            "X-File-Id is missing: send an id for the file, e.g. name-size-lastModified",
        )
    })?;
    let id = std::str::from_utf8(raw.as_bytes())
        .ok()
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= MAX_CLIENT_ID && !s.chars().any(char::is_control))
        .ok_or_else(|| {
            ApiError::bad_request(
                codes::INVALID_FILE_ID,
                format!("X-File-Id must be 1 to {MAX_CLIENT_ID} bytes of printable UTF-8 text"),
            )
        })?;
    Ok(id.to_owned())
}

/// A non-negative decimal below 2^63 (no sign, no spaces, no exponent).
fn header_u64(headers: &HeaderMap, name: &'static str) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").trim();
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(
            codes::INVALID_NUMBER,
            format!("{name} must be a non-negative whole number of bytes below 2^63, not {s:?}"),
        ));
    }
    s.parse::<u64>()
        .ok()
        .filter(|n| *n < 1 << 63)
        .map(Some)
        .ok_or_else(|| ApiError::bad_request(codes::INVALID_NUMBER, format!("{name} is too large")))
}

/// `Content-Digest` (RFC 9530): the `sha-256` member as a body check. Other algorithms are
/// ignored, as the RFC allows; a malformed field or `sha-256` value is refused.
fn content_digest(headers: &HeaderMap) -> Result<Option<BodyCheck>, ApiError> {
    let Some(v) = headers.get("content-digest") else {
        return Ok(None);
    };
    let bad = |why: &str| {
        ApiError::bad_request(
            codes::INVALID_CONTENT_DIGEST,
            format!(
                "Content-Digest must look like \"sha-256=:<base64 of the body's SHA-256>:\" ({why})"
            ),
        )
    };
    let text = v.to_str().map_err(|_| bad("not ASCII"))?;
    for member in text.split(',') {
        let Some((alg, value)) = member.split_once('=') else {
            return Err(bad("a member without '='"));
        };
        if !alg.trim().eq_ignore_ascii_case("sha-256") {
            continue;
        }
        let b64 = value
            .trim()
            .strip_prefix(':')
            .and_then(|v| v.strip_suffix(':'))
            .ok_or_else(|| bad("the value is not a byte sequence between colons"))?;
        let digest = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .filter(|d| d.len() == 32)
            .ok_or_else(|| bad("the value is not 32 bytes of base64"))?;
        return Ok(Some(BodyCheck {
            alg: HashAlg::Sha256,
            digest,
        }));
    }
    Ok(None)
}

/// `X-File-Name`: percent-decoded UTF-8, reduced to a plain file name.
fn file_name(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get("x-file-name")?.as_bytes();
    let decoded = percent_encoding::percent_decode(raw).decode_utf8().ok()?;
    clean_file_name(&decoded)
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// The byte-offset front. Its `POST /api/upload` shares the path with the chunk front (told
/// apart by the body's type, in [`crate::app`]).
pub static FRONT: crate::fronts::Front = crate::fronts::Front {
    dialect: Dialect::OFFSET,
    routes,
    metric_routes: &[
        ("/api/upload/status", "status"),
        ("/status", "status"),
        ("/api/upload", "upload"),
        ("/upload", "upload"),
    ],
    request_headers: &["X-File-Id", "X-Start-Byte", "X-File-Size", "Content-Range"],
    response_headers: &["X-Upload-Offset", "X-Received-Bytes", "X-File-Size"],
};

fn routes(_: AppState) -> axum::Router<AppState> {
    axum::Router::new()
        .route("/api/upload/status", axum::routing::get(status))
        .route("/status", axum::routing::get(status))
        .route_layer(axum::middleware::from_fn(crate::caller::require))
}

/// `GET /api/upload/status`.
pub async fn status(State(state): State<AppState>, caller: Caller, headers: HeaderMap) -> Response {
    let id = match client_id(&headers) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    match state.engine.scoped(&caller.0).find(&key_for(&id)).await {
        Ok(found) if wants_json(&headers) => {
            let mut resp = match &found {
                Some(u) => summary(&state, &headers, &id, u),
                None => Json(json!({"fileId": id, "exists": false, "offset": 0, "received": 0}))
                    .into_response(),
            };
            resp.headers_mut()
                .insert("cache-control", "no-store".parse().expect("static"));
            resp
        }
        Ok(found) => {
            let held = found.as_ref().map_or(0, Upload::offset);
            let mut resp = (
                [(CONTENT_TYPE, "text/plain; charset=utf-8")],
                held.to_string(),
            )
                .into_response();
            let h = resp.headers_mut();
            h.insert("x-upload-offset", held.into());
            if let Some(u) = &found {
                h.insert("x-received-bytes", u.held.covered().into());
                if let Some(len) = u.length {
                    h.insert("x-file-size", len.into());
                }
            }
            h.insert("cache-control", "no-store".parse().expect("static"));
            resp
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn summary(state: &AppState, headers: &HeaderMap, client_id: &str, u: &Upload) -> Response {
    let missing: Vec<[u64; 2]> = u.missing().iter().map(|r| [r.start, r.end - 1]).collect();
    let url = u.is_complete().then(|| state.download_url(headers, u));
    let mut resp = Json(json!({
        "fileId": client_id,
        "exists": true,
        "offset": u.offset(),
        "received": u.held.covered(),
        "size": u.length,
        "complete": u.is_complete(),
        "missing": missing,
        "url": url,
    }))
    .into_response();
    resp.headers_mut()
        .insert("x-upload-offset", u.offset().into());
    resp.extensions_mut()
        .insert(crate::metrics::UploadRef(u.id.clone()));
    resp
}

/// `POST /api/upload` (raw body with `X-File-Id`).
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    req: Request,
) -> Result<Response, ApiError> {
    let engine = state.engine.scoped(&caller.0);
    let headers = req.headers().clone();
    let id = client_id(&headers)?;
    let start_byte = header_u64(&headers, "x-start-byte")?;
    let declared_size = header_u64(&headers, "x-file-size")?;
    let body_len = header_u64(&headers, CONTENT_LENGTH.as_str())?;
    let check = content_digest(&headers)?;
    let range = match headers.get(CONTENT_RANGE) {
        None => None,
        Some(v) => Some(parse_content_range(v.to_str().unwrap_or("")).map_err(|e| match e {
            ContentRangeError::PastTotal => ApiError::bad_request(
                codes::RANGE_PAST_TOTAL,
                "Content-Range ends past its own total; the last byte index must be below the total",
            ),
            _ => ApiError::bad_request(
                codes::INVALID_CONTENT_RANGE,
                format!("Content-Range must look like \"bytes 0-1048575/5000000\": {e}"),
            ),
        })?),
    };
    let total = match (range.and_then(|r| r.total), declared_size) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::bad_request(
                codes::LENGTH_MISMATCH,
                format!("Content-Range says the file has {a} bytes but X-File-Size says {b}"),
            ));
        }
        (a, b) => a.or(b),
    };
    let mode = match (range, start_byte) {
        (Some(r), Some(s)) if s != r.first => {
            return Err(ApiError::bad_request(
                codes::INVALID_REQUEST,
                "X-Start-Byte and Content-Range disagree; send one of them",
            ));
        }
        (Some(r), _) => {
            // `bytes 0-18446744073709551615/*` covers 2^64 bytes: more than any upload.
            let Some(len) = (r.last - r.first).checked_add(1) else {
                let max = state.engine.config().max_upload_size;
                return Err(EngineError::TooLarge {
                    size: u64::MAX,
                    max,
                }
                .into());
            };
            if body_len.is_some_and(|n| n != len) {
                return Err(ApiError::bad_request(
                    codes::LENGTH_MISMATCH,
                    format!(
                        "Content-Range covers {len} bytes but the body has {}",
                        body_len.unwrap_or(0)
                    ),
                ));
            }
            WriteMode::At {
                start: r.first,
                len,
            }
        }
        (None, Some(s)) => WriteMode::Append { offset: s },
        (None, None) => {
            return Err(ApiError::bad_request(
                codes::OFFSET_REQUIRED,
                "send X-Start-Byte (append at the held count from /api/upload/status) or Content-Range",
            ));
        }
    };
    let end = match mode {
        WriteMode::Append { offset } => body_len.map(|n| offset.saturating_add(n)),
        WriteMode::At { start, len } => Some(start.saturating_add(len)),
    };
    if let (Some(end), Some(total)) = (end, total)
        && end > total
    {
        return Err(EngineError::PastLength { length: total, end }.into());
    }
    if let Some(t) = total {
        let max = state.engine.config().max_upload_size;
        if t > max {
            return Err(EngineError::TooLarge { size: t, max }.into());
        }
    }

    let key = key_for(&id);
    let mut u = match engine.find(&key).await? {
        Some(u) => u,
        None => {
            let mut new = NewUpload::new(Dialect::OFFSET);
            new.key = Some(key);
            new.length = total;
            new.file_name = file_name(&headers);
            engine.create(new).await?.0
        }
    };
    if let Some(t) = total
        && u.length != Some(t)
    {
        u = engine.set_length(&u.id, t).await?;
    }
    // Refuse a body that cannot fit before storing any of it (a streamed body without
    // Content-Length is cut at the declared length by the engine instead).
    if let (Some(end), Some(length)) = (end, u.length)
        && end > length
    {
        return Err(EngineError::PastLength { length, end }.into());
    }
    if u.is_complete() {
        // A retry of a request that already completed the file: answer as it would have.
        let fits = match mode {
            WriteMode::Append { offset } => Some(offset) == u.length,
            WriteMode::At { start, len } => u.held.contains(start..start + len),
        };
        if !fits {
            return Err(EngineError::OffsetMismatch {
                held: u.offset(),
                got: match mode {
                    WriteMode::Append { offset } => offset,
                    WriteMode::At { start, .. } => start,
                },
            }
            .into());
        }
        let mut body = req.into_body().into_data_stream();
        while let Some(Ok(_)) = body.next().await {}
        return Ok(summary(&state, &headers, &id, &u));
    }
    let body = req.into_body().into_data_stream();
    let u = match mode {
        // A new append supersedes one still streaming for this file (a client that
        // reconnected): that one keeps what arrived, and a stale X-Start-Byte gets the 409
        // with the held count at once instead of after the dead connection times out.
        WriteMode::Append { offset } => {
            let req = AppendRequest {
                offset,
                length: None,
                body_len,
                check,
            };
            engine.append(&u.id, req, body).await?.into_upload()
        }
        WriteMode::At { .. } => engine.write_checked(&u.id, mode, check, body).await?.upload,
    };
    Ok(summary(&state, &headers, &id, &u))
}
