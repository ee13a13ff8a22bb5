//! IETF HTTP resumable uploads (draft-ietf-httpbis-resumable-upload), interop versions 3–8,
//! on the same `/files/` endpoint as tus (SPEC §2.4). The tus front dispatches a request here
//! when it carries `Upload-Draft-Interop-Version`.
//!
//! An IETF upload is a normal engine upload ([`Dialect::TUS`]): every append is
//! [`Engine::write`](ferry_core::Engine::write) at the held offset, so it is durable before it is
//! acknowledged, hashed while it streams, finished by the engine's atomic publish, counted in
//! the metrics and removed by the expiry janitor like any other. This module only translates
//! headers and renders answers; it keeps no offsets, locks or hashes of its own.
//!
//! # Interop versions
//!
//! The interop version is bumped by the draft for breaking changes (draft §"Draft Version
//! Identification"); which draft introduced what is taken from the draft's change log, and
//! cross-checked against tusd and Apple's swift-nio implementation:
//!
//! | interop | drafts   | completeness header                   | append `Content-Type`        | registered problem types                        | `Upload-Limit`           |
//! |---------|----------|---------------------------------------|------------------------------|-------------------------------------------------|--------------------------|
//! | 3       | -01      | `Upload-Incomplete` (`?1` = not done) | any                          | none (problems are `about:blank`)               | —                        |
//! | 4       | -02      | `Upload-Complete` (see below)         | any                          | none                                            | —                        |
//! | 5       | -03      | `Upload-Complete`                     | any                          | none                                            | —                        |
//! | 6       | -04, -05 | `Upload-Complete`                     | `application/partial-upload` | `mismatching-upload-offset`, `completed-upload` | `max-size`, `expires`    |
//! | 7       | -06–-08  | `Upload-Complete`                     | `application/partial-upload` | + `inconsistent-upload-length`                  | `max-size`, `max-age`    |
//! | 8       | -09–     | `Upload-Complete`                     | `application/partial-upload` | same as 7                                       | same; required on `HEAD` |
//!
//! `Upload-Limit` goes on OPTIONS (with `Accept-Patch: application/partial-upload`), creation,
//! HEAD and 413 answers; the lifetime member appears only with `--expire-incomplete` and for
//! uploads still receiving.
//!
//! Draft -02 (interop 4) replaced `Upload-Incomplete` with `Upload-Complete`, and tusd reads
//! interop 4 that way; some implementations still pair 4 with `Upload-Incomplete`. For 4 the
//! server therefore reads either header (`Upload-Complete` first) and sends both, with
//! consistent values, so a client of either reading works. Interop 3 also accepts
//! `Upload-Complete` when `Upload-Incomplete` is absent.
//!
//! Answers, for every version (all carry `Upload-Draft-Interop-Version` with the client's
//! version):
//! - creation (`POST /files/`): `201 Created` with `Location: <base>/files/<id>`,
//!   `Upload-Offset`, the completeness header and, when known, `Upload-Length`; the creation
//!   body (any length, also none) is appended at offset 0. A creation that completes the upload
//!   answers `201` too: the created resource is the finished file at the same `Location`.
//! - offset retrieval (`HEAD /files/<id>`): `204` with `Upload-Offset`, completeness,
//!   `Upload-Length` when known, `Cache-Control: no-store`.
//! - append (`PATCH /files/<id>`): `204` while incomplete; `200` with `Location` of the
//!   finished file when the upload is complete.
//! - cancellation (`DELETE /files/<id>`): `204`. OPTIONS: `200`.
//! - errors: `application/problem+json` (RFC 9457) with `type`, `title`, `status`, `detail`
//!   and ferry's stable `code`; the registered types (with `expected-offset` and
//!   `provided-offset` for a mismatch) where the client's version defines them, `about:blank`
//!   otherwise. Errors about an existing upload carry its `Upload-Offset` and completeness so
//!   the client can re-synchronise.
//!
//! An upload whose declared length (`Upload-Length`) is reached is complete even when the
//! request said `?0`: the engine finishes every upload whose bytes are all held, and answers
//! report that truthfully. A later empty `Upload-Complete: ?1` append at that offset (the
//! draft's way to finish such an upload) is then answered as a completing append.
//!
//! `Upload-Length` is sent whenever the length is known, for every version: earlier drafts do
//! not define it in responses, but unknown fields are ignored, and tus-js-client (interop 5
//! and 6) decides that a resumed upload is already finished by comparing it to the offset.
//!
//! # `104 Upload Resumption Supported` is not sent
//!
//! The draft asks the server to announce the upload resource early in a
//! `104 (Upload Resumption Supported)` interim response (§"Upload Creation", server behaviour).
//! The HTTP stack cannot: axum serves through hyper 1.x, whose service returns exactly one
//! response, and hyper's HTTP/1 encoder refuses a 1xx status from a service ("response with
//! 1xx status code not supported", answered as 500). Server-side informational responses
//! are an open proposal upstream (hyperium/hyper#3815, #4114), not a released API.
//!
//! Everything else works without it, and nothing here depends on it: a client learns the
//! upload URL from the final `201` (the draft's "careful upload creation": send the creation
//! with little or no body, then append). An optimistic creation whose connection dies before
//! the final response still keeps every byte that arrived (below), but that client has no URL
//! to resume with; the partial upload expires with `--expire-incomplete`.
//!
//! # Interrupted bodies
//!
//! A creation or append body cut off mid-way keeps what arrived (draft §"Upload Append",
//! server behaviour: "append as much of the patch document as possible … without
//! discontinuities"), and the upload is not complete then, even with `Upload-Complete: ?1`:
//! the client asks `HEAD` for the offset and appends the rest.

use crate::AppState;
use crate::error::ApiError;
use axum::body::Body;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_core::EngineError;
use ferry_core::codes;
use ferry_core::engine::Actor;
use ferry_core::engine::{NewUpload, WriteMode};
use ferry_core::tus::Metadata;
use ferry_core::upload::{Dialect, Upload, UploadId, clean_file_name, validate_ext};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use std::time::{Duration, SystemTime};

const INTEROP_VERSION: HeaderName = HeaderName::from_static("upload-draft-interop-version");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_COMPLETE: HeaderName = HeaderName::from_static("upload-complete");
const UPLOAD_INCOMPLETE: HeaderName = HeaderName::from_static("upload-incomplete");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_LIMIT: HeaderName = HeaderName::from_static("upload-limit");
const ACCEPT_PATCH: HeaderName = HeaderName::from_static("accept-patch");

/// The media type of an append body (draft §"Media Type application/partial-upload").
const PARTIAL_UPLOAD: &str = "application/partial-upload";
/// Prefix of the problem types the draft registers (draft §"Problem Types").
const PROBLEM_BASE: &str = "https://iana.org/assignments/http-problem-types#";

/// A registered problem type: its slug, its title as the draft spells it, and the first
/// interop version whose draft defines it.
#[derive(Clone, Copy, Debug)]
struct ProblemType {
    slug: &'static str,
    title: &'static str,
    since: u8,
}

/// Draft -04 (interop 6) §"Mismatching Offset".
const MISMATCHING_OFFSET: ProblemType = ProblemType {
    slug: "mismatching-upload-offset",
    title: "offset from request does not match offset of resource",
    since: 6,
};
/// Draft -04 (interop 6) §"Completed Upload".
const COMPLETED_UPLOAD: ProblemType = ProblemType {
    slug: "completed-upload",
    title: "upload is already completed",
    since: 6,
};
/// Draft -06 (interop 7) §"Inconsistent Length".
const INCONSISTENT_LENGTH: ProblemType = ProblemType {
    slug: "inconsistent-upload-length",
    title: "inconsistent length values for upload",
    since: 7,
};

/// The interop version a request speaks (`Upload-Draft-Interop-Version`), 3 to 8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Interop(u8);

impl Interop {
    const OLDEST: u8 = 3;
    const NEWEST: u8 = 8;

    fn of(headers: &HeaderMap) -> Result<Self, Fail> {
        let raw = headers
            .get(&INTEROP_VERSION)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .unwrap_or("");
        match raw.parse::<u8>() {
            Ok(n) if (Self::OLDEST..=Self::NEWEST).contains(&n) => Ok(Interop(n)),
            _ => {
                // The draft has servers check the version so that drafts never interoperate
                // by accident (§"Draft Version Identification"); say which ones we speak.
                Err(Fail::new(
                    StatusCode::BAD_REQUEST,
                    codes::UNSUPPORTED_INTEROP_VERSION,
                    format!(
                        "Upload-Draft-Interop-Version {raw:?} is not supported; this server speaks interop versions {} to {}",
                        Self::OLDEST,
                        Self::NEWEST
                    ),
                ))
            }
        }
    }

    /// Interop 3 (draft -01) signals completeness inversely, in `Upload-Incomplete`; 4 gets it
    /// too (see the module doc).
    fn sends_incomplete(self) -> bool {
        self.0 <= 4
    }

    /// `Upload-Complete` from interop 4 (draft -02) on.
    fn sends_complete(self) -> bool {
        self.0 >= 4
    }

    /// The header a creation request must carry, for error messages.
    fn completeness_header(self) -> &'static str {
        if self.0 == 3 {
            "Upload-Incomplete"
        } else {
            "Upload-Complete"
        }
    }

    /// Draft -04 (interop 6): appends are `application/partial-upload`, and `Upload-Limit`
    /// exists.
    fn partial_upload_media_type(self) -> bool {
        self.0 >= 6
    }

    fn has_limits(self) -> bool {
        self.0 >= 6
    }
}

/// An IETF error on its way to the client: a problem (RFC 9457) plus the upload-state headers
/// that let the client re-synchronise. Boxed: it travels in every `Result` of this module.
struct Fail(Box<Problem>);

struct Problem {
    status: StatusCode,
    registered: Option<ProblemType>,
    code: &'static str,
    detail: String,
    /// Extension members of the registered type (dropped when the version lacks the type).
    members: Map<String, Value>,
    upload: Option<Upload>,
    location: Option<String>,
}

impl Fail {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Fail(Box::new(Problem {
            status,
            registered: None,
            code,
            detail: detail.into(),
            members: Map::new(),
            upload: None,
            location: None,
        }))
    }

    fn bad(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    fn registered(mut self, kind: ProblemType) -> Self {
        self.0.registered = Some(kind);
        self
    }

    /// Draft §"Upload Append": an `Upload-Offset` other than the resource's is refused with
    /// 409, and the response carries the correct offset.
    fn mismatch(expected: u64, provided: u64) -> Self {
        let mut f = Self::new(
            StatusCode::CONFLICT,
            codes::OFFSET_MISMATCH,
            format!(
                "the upload holds {expected} bytes; an append must start there, not at {provided} (ask HEAD for the offset)"
            ),
        )
        .registered(MISMATCHING_OFFSET);
        f.0.members
            .insert("expected-offset".into(), json!(expected));
        f.0.members
            .insert("provided-offset".into(), json!(provided));
        f
    }

    /// Draft §"Upload Append": a completed upload must not be modified; the registered
    /// problem recommends 400.
    fn completed() -> Self {
        Self::bad(
            codes::ALREADY_COMPLETE,
            "the upload is already complete; nothing more can be appended",
        )
        .registered(COMPLETED_UPLOAD)
    }

    /// Draft §"Length": every length indicator of an upload must agree.
    fn inconsistent(detail: impl Into<String>) -> Self {
        Self::bad(codes::LENGTH_MISMATCH, detail).registered(INCONSISTENT_LENGTH)
    }

    fn engine(e: EngineError) -> Self {
        match e {
            EngineError::OffsetMismatch { held, got } => Self::mismatch(held, got),
            EngineError::AlreadyComplete => Self::completed(),
            EngineError::LengthMismatch { known, given } => Self::inconsistent(format!(
                "the upload's length is {known} bytes; this request implies {given}"
            )),
            // A body running past the declared length contradicts it: draft §"Upload Append"
            // has the server reject the request once the offset would exceed the length.
            EngineError::PastLength { length, end } => Self::inconsistent(format!(
                "the upload's length is {length} bytes, but this body reaches byte {end}; bytes past the length were not stored"
            )),
            other => Self::api(ApiError::from(other)),
        }
    }

    fn api(e: ApiError) -> Self {
        Self::new(e.status, e.code, e.message)
    }

    fn with_upload(mut self, u: Upload) -> Self {
        self.0.upload = Some(u);
        self
    }

    fn with_location(mut self, location: &str) -> Self {
        self.0.location = Some(location.to_owned());
        self
    }

    /// Attaches the upload's current state (read fresh: a failed write may still have kept
    /// what arrived).
    async fn with_state(self, state: &AppState, actor: &Actor, id: &UploadId) -> Self {
        match state.engine.scoped(actor).get(id).await {
            Ok(u) => self.with_upload(u),
            Err(_) => self,
        }
    }

    fn render(self, v: Interop, state: Option<&AppState>) -> Response {
        let p = *self.0;
        // A registered type is used only when the client's draft defines it; older clients get
        // `about:blank`, whose title is the status phrase (RFC 9457 §4.2.1).
        let registered = p.registered.filter(|t| v.0 >= t.since);
        let mut body = json!({
            "type": registered.map_or_else(|| "about:blank".to_owned(), |t| format!("{PROBLEM_BASE}{}", t.slug)),
            "title": registered.map_or(p.status.canonical_reason().unwrap_or("Error"), |t| t.title),
            "status": p.status.as_u16(),
            "detail": p.detail,
            "code": p.code,
        });
        if registered.is_some()
            && let Some(obj) = body.as_object_mut()
        {
            obj.extend(p.members);
        }
        let mut resp = (p.status, body.to_string()).into_response();
        let h = resp.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(INTEROP_VERSION, HeaderValue::from(u16::from(v.0)));
        if let Some(u) = &p.upload {
            upload_state(v, h, u);
        }
        if let Some(l) = p.location.as_deref().and_then(|l| l.parse().ok()) {
            h.insert(LOCATION, l);
        }
        // Draft -09 §"Limits": a 413 caused by the upload limits carries `Upload-Limit`.
        if p.status == StatusCode::PAYLOAD_TOO_LARGE
            && let Some(state) = state
        {
            upload_limit(v, state, h, p.upload.as_ref());
        }
        resp
    }
}

/// A successful answer: status, the interop version, nothing else yet.
fn reply(v: Interop, status: StatusCode) -> Response {
    let mut resp = status.into_response();
    resp.headers_mut()
        .insert(INTEROP_VERSION, HeaderValue::from(u16::from(v.0)));
    resp
}

/// Structured-field booleans `?1` / `?0` (RFC 9651 §3.3.6).
fn sf_bool(b: bool) -> HeaderValue {
    HeaderValue::from_static(if b { "?1" } else { "?0" })
}

/// Completeness in the header(s) the client's version reads.
fn set_complete(v: Interop, h: &mut HeaderMap, complete: bool) {
    if v.sends_incomplete() {
        h.insert(UPLOAD_INCOMPLETE, sf_bool(!complete));
    }
    if v.sends_complete() {
        h.insert(UPLOAD_COMPLETE, sf_bool(complete));
    }
}

/// Offset, completeness and (when known) length of an upload: draft §"Offset Retrieval",
/// server behaviour, and the acknowledgement of creation and append responses.
fn upload_state(v: Interop, h: &mut HeaderMap, u: &Upload) {
    h.insert(UPLOAD_OFFSET, HeaderValue::from(u.offset()));
    set_complete(v, h, u.is_complete());
    if let Some(len) = u.length {
        h.insert(UPLOAD_LENGTH, HeaderValue::from(len));
    }
}

/// `Upload-Limit` (draft -04 on, §"Limits"): `max-size` is `--max-upload-size`, and with
/// `--expire-incomplete` the remaining lifetime of an incomplete upload (the whole window for
/// OPTIONS and a new upload) is `max-age`, spelled `expires` in drafts -04 and -05. No
/// minimum and no per-append limit: bodies stream into place whatever their size.
fn upload_limit(v: Interop, state: &AppState, h: &mut HeaderMap, u: Option<&Upload>) {
    if !v.has_limits() {
        return;
    }
    let mut value = format!("max-size={}", state.engine.config().max_upload_size);
    let window = state.expire_incomplete;
    // The janitor removes incomplete uploads idle for longer than the window; finished
    // uploads stay.
    if !window.is_zero() && !u.is_some_and(Upload::is_complete) {
        let idle = u.map_or(Duration::ZERO, |u| {
            SystemTime::now()
                .duration_since(u.updated_at.to_system_time())
                .unwrap_or_default()
        });
        let key = if v.0 >= 7 { "max-age" } else { "expires" };
        value.push_str(&format!(
            ", {key}={}",
            window.saturating_sub(idle).as_secs()
        ));
    }
    if let Ok(value) = HeaderValue::from_str(&value) {
        h.insert(UPLOAD_LIMIT, value);
    }
}

/// An Item header whose bare item is parsed by `parse`; parameters (`;key=value`) are
/// ignored. An absent header is `None`; a malformed one is a 400, not silently ignored as the
/// draft allows, because SPEC §6 promises a clear 4xx for malformed headers and a declared
/// offset or length that cannot be read is a client bug worth reporting.
fn item<T>(
    headers: &HeaderMap,
    name: &HeaderName,
    what: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, Fail> {
    let Some(raw) = headers.get(name) else {
        return Ok(None);
    };
    let text = raw.to_str().unwrap_or("");
    let bare = text.split(';').next().unwrap_or("").trim();
    parse(bare).map(Some).ok_or_else(|| {
        Fail::bad(
            codes::INVALID_HEADER,
            format!("{name} must be {what}, not {text:?}"),
        )
    })
}

/// A non-negative structured-field Integer (RFC 9651 §3.3.1: at most 15 digits).
fn sf_uint(headers: &HeaderMap, name: &HeaderName) -> Result<Option<u64>, Fail> {
    item(
        headers,
        name,
        "a non-negative whole number of at most 15 digits",
        |s| {
            (!s.is_empty() && s.len() <= 15 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        },
    )
}

/// A structured-field Boolean (`?1` or `?0`).
fn sf_boolean(headers: &HeaderMap, name: &HeaderName) -> Result<Option<bool>, Fail> {
    item(headers, name, "?1 or ?0", |s| match s {
        "?1" => Some(true),
        "?0" => Some(false),
        _ => None,
    })
}

/// Whether the request says it carries the end of the representation, in the header its
/// version reads (see the module table). `None` when absent.
fn requested_completion(v: Interop, headers: &HeaderMap) -> Result<Option<bool>, Fail> {
    let complete = sf_boolean(headers, &UPLOAD_COMPLETE)?;
    let incomplete = sf_boolean(headers, &UPLOAD_INCOMPLETE)?.map(|b| !b);
    Ok(match v.0 {
        3 => incomplete.or(complete),
        4 => complete.or(incomplete),
        _ => complete,
    })
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse().ok())
}

/// Combines length indicators that must all agree (draft §"Length": "If multiple requests
/// include indicators, their indicated values MUST match").
fn agree(a: Option<u64>, b: Option<u64>, what: &str) -> Result<Option<u64>, Fail> {
    match (a, b) {
        (Some(x), Some(y)) if x != y => Err(Fail::inconsistent(format!(
            "{what}: {x} and {y} bytes disagree"
        ))),
        (x, y) => Ok(x.or(y)),
    }
}

/// `Content-Disposition` file name (draft §"Upload Creation" suggests it for the name),
/// `filename*` (RFC 6266, UTF-8) preferred. Best effort: the name is display metadata only.
fn disposition_file_name(headers: &HeaderMap) -> Option<String> {
    let value = std::str::from_utf8(headers.get(CONTENT_DISPOSITION)?.as_bytes()).ok()?;
    let mut plain = None;
    let mut extended = None;
    for param in value.split(';').skip(1) {
        let Some((key, val)) = param.split_once('=') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        let val = val.trim();
        if key == "filename*" {
            let mut parts = val.splitn(3, '\'');
            if let (Some(charset), Some(_lang), Some(encoded)) =
                (parts.next(), parts.next(), parts.next())
                && charset.eq_ignore_ascii_case("utf-8")
            {
                extended = percent_encoding::percent_decode_str(encoded)
                    .decode_utf8()
                    .ok()
                    .map(|c| c.into_owned());
            }
        } else if key == "filename" {
            plain = Some(val.trim_matches('"').replace("\\\"", "\""));
        }
    }
    clean_file_name(&extended.or(plain)?)
}

/// Representation metadata of a creation request (draft §"Upload Creation", client
/// behaviour): the file name and media type, used only for downloads. The draft's headers
/// (`Content-Disposition`, `Content-Type`) come first; tus-js-client sends its tus
/// `Upload-Metadata` (`filename`, `filetype`) in IETF mode too, so that is the fallback. It is
/// not an IETF header, so a malformed one is ignored rather than refused.
fn describe(new: &mut NewUpload, headers: &HeaderMap) {
    let tus_metadata = headers
        .get("upload-metadata")
        .and_then(|v| v.to_str().ok())
        .and_then(|text| Metadata::parse(text).ok())
        .unwrap_or_default();
    let name = disposition_file_name(headers).or_else(|| {
        ["filename", "name"]
            .iter()
            .find_map(|k| tus_metadata.get_str(k))
            .and_then(clean_file_name)
    });
    if let Some(name) = name {
        if let Some((_, ext)) = name.rsplit_once('.')
            && let Ok(ext) = validate_ext(&format!(".{ext}"))
        {
            new.ext = ext;
        }
        new.file_name = Some(name);
    }
    // tus-js-client labels a creation body `application/partial-upload` (interop 6); that is
    // the transfer's type, not the file's.
    let declared_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|ct| {
            let essence = ct.split(';').next().unwrap_or("").trim();
            !essence.is_empty()
                && !essence.eq_ignore_ascii_case(PARTIAL_UPLOAD)
                && !essence.eq_ignore_ascii_case("application/offset+octet-stream")
        })
        .or_else(|| {
            ["filetype", "type"]
                .iter()
                .find_map(|k| tus_metadata.get_str(k))
                .map(str::trim)
        })
        .filter(|t| !t.is_empty() && HeaderValue::from_str(t).is_ok());
    if let Some(t) = declared_type {
        new.metadata.insert("content-type".into(), t.to_owned());
    }
}

/// The upload behind `/files/<id>`, if it is one this endpoint serves (created by the tus
/// front or here; ids of the other dialects answer 404 like unknown ones).
async fn load(state: &AppState, actor: &Actor, id: &UploadId) -> Result<Upload, Fail> {
    match state.engine.scoped(actor).get(id).await {
        Ok(u) if u.dialect == Dialect::TUS => Ok(u),
        Ok(_) | Err(EngineError::NotFound) => Err(Fail::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            "no upload at this address; it may have been cancelled or expired",
        )),
        Err(e) => Err(Fail::engine(e)),
    }
}

fn location_of(state: &AppState, headers: &HeaderMap, id: &UploadId) -> String {
    state.upload_link(headers, id)
}

/// Whether a body carries no byte (clients may send an empty body without Content-Length).
/// Reads until the first byte, so a refused body is never read whole.
async fn is_empty(body: Body) -> bool {
    let mut stream = body.into_data_stream();
    while let Some(frame) = stream.next().await {
        if frame.is_ok_and(|b| !b.is_empty()) {
            return false;
        }
    }
    true
}

/// Streams `body` onto the upload at `offset`, then completes the upload if the request said
/// `Upload-Complete: ?1`: with the length unknown it is the final offset (draft §"Length",
/// indicator 1), which [`ferry_core::Engine::set_length`] records and the engine then
/// finishes; with the length known the body must have reached it.
async fn write_and_complete(
    state: &AppState,
    actor: &Actor,
    u: Upload,
    offset: u64,
    complete: bool,
    body: Body,
) -> Result<Upload, Fail> {
    let u = if u.is_complete() {
        // Complete before this body (a zero length, or a length the offset already reached):
        // only an empty body fits.
        if !is_empty(body).await {
            return Err(Fail::inconsistent(format!(
                "the upload is complete at {} bytes; this body would go past its length",
                u.offset()
            ))
            .with_upload(u));
        }
        u
    } else {
        let id = u.id.clone();
        match state
            .engine
            .scoped(actor)
            .write(&id, WriteMode::Append { offset }, body.into_data_stream())
            .await
        {
            Ok(out) => out.upload,
            // Without a declared length the engine stops a body at the size limit; that is
            // the limit speaking (413 with `Upload-Limit`), not a length the client declared.
            Err(EngineError::PastLength { end, .. }) if u.length.is_none() => {
                let max = state.engine.config().max_upload_size;
                let e = EngineError::TooLarge { size: end, max };
                return Err(Fail::engine(e).with_state(state, actor, &id).await);
            }
            // A cut-off body kept what arrived; the headers tell the client where it stands.
            Err(e) => return Err(Fail::engine(e).with_state(state, actor, &id).await),
        }
    };
    if !complete || u.is_complete() {
        return Ok(u);
    }
    match u.length {
        None => {
            let id = u.id.clone();
            match state.engine.scoped(actor).set_length(&id, u.offset()).await {
                Ok(done) => Ok(done),
                Err(e) => Err(Fail::engine(e).with_state(state, actor, &id).await),
            }
        }
        Some(len) => {
            let held = u.offset();
            Err(Fail::inconsistent(format!(
                "the request says the upload ends at byte {held}, but its length is {len} bytes"
            ))
            .with_upload(u))
        }
    }
}

/// `POST /files/`: upload creation (draft §"Upload Creation"), optionally with the start or
/// the whole of the representation in the body.
pub async fn create(state: &AppState, actor: &Actor, headers: &HeaderMap, body: Body) -> Response {
    let v = match Interop::of(headers) {
        Ok(v) => v,
        Err(fail) => return fail.render(Interop(Interop::NEWEST), None),
    };
    match create_upload(state, actor, v, headers, body).await {
        Ok(resp) => resp,
        Err(fail) => fail.render(v, Some(state)),
    }
}

async fn create_upload(
    state: &AppState,
    actor: &Actor,
    v: Interop,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Fail> {
    let complete = requested_completion(v, headers)?.ok_or_else(|| {
        Fail::bad(
            codes::COMPLETENESS_REQUIRED,
            format!(
                "an upload creation carries {}: ?{} when the body is the whole file, ?{} when more will be appended",
                v.completeness_header(),
                u8::from(v.0 != 3),
                u8::from(v.0 == 3),
            ),
        )
    })?;
    // A creation starts at offset 0; a client may say so, but nothing else.
    if let Some(offset) = sf_uint(headers, &UPLOAD_OFFSET)?
        && offset != 0
    {
        return Err(Fail::bad(
            codes::OFFSET_MISMATCH,
            format!("an upload creation starts at offset 0, not {offset}"),
        ));
    }
    // Draft §"Length": `Upload-Length`, or with `Upload-Complete: ?1` the Content-Length
    // (the body is then all of it). `Upload-Length` is read for every version: tus-js-client
    // sends it from interop 5 on, and it means the same in every draft that has it.
    let declared = sf_uint(headers, &UPLOAD_LENGTH)?;
    let body_len = content_length(headers);
    let length = agree(
        declared,
        body_len.filter(|_| complete),
        "Upload-Length and the Content-Length of a completing creation",
    )?;
    if let (Some(len), Some(n)) = (length, body_len)
        && n > len
    {
        return Err(Fail::inconsistent(format!(
            "the body has {n} bytes, more than the upload length of {len}"
        )));
    }
    // Refuse an oversized upload before storing anything (draft §"Limits", `max-size`).
    let max = state.engine.config().max_upload_size;
    if let Some(size) = length.or(body_len)
        && size > max
    {
        return Err(Fail::engine(EngineError::TooLarge { size, max }));
    }

    let mut new = NewUpload::new(Dialect::TUS);
    new.length = length;
    describe(&mut new, headers);
    let (u, _) = state
        .engine
        .scoped(actor)
        .create(new)
        .await
        .map_err(Fail::engine)?;
    let location = location_of(state, headers, &u.id);
    // From here on every answer names the upload, so a client can resume or cancel it even
    // when this request fails.
    let u = write_and_complete(state, actor, u, 0, complete, body)
        .await
        .map_err(|f| f.with_location(&location))?;

    // Draft §"Upload Creation": Location for the upload resource, 201 recommended for an
    // incomplete upload; a completing creation answers as the target resource does, and here
    // that resource is the finished file at the same URL, created now.
    let mut resp = reply(v, StatusCode::CREATED);
    let h = resp.headers_mut();
    if let Ok(l) = location.parse() {
        h.insert(LOCATION, l);
    }
    upload_state(v, h, &u);
    upload_limit(v, state, h, Some(&u));
    Ok(resp)
}

/// `HEAD /files/<id>`: offset retrieval (draft §"Offset Retrieval").
pub async fn head(state: &AppState, actor: &Actor, id: &UploadId, headers: &HeaderMap) -> Response {
    let v = match Interop::of(headers) {
        Ok(v) => v,
        Err(fail) => return fail.render(Interop(Interop::NEWEST), None),
    };
    // Offset retrieval is safe: it never stops an append in flight; a new append does.
    match load(state, actor, id).await {
        Ok(u) => {
            // 204 as in the draft's examples (-01 required it; later drafts allow 200).
            let mut resp = reply(v, StatusCode::NO_CONTENT);
            let h = resp.headers_mut();
            upload_state(v, h, &u);
            // The offset changes with every append: never from a cache.
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            // Draft -09 makes Upload-Limit a MUST here; harmless for 6 and 7.
            upload_limit(v, state, h, Some(&u));
            resp
        }
        Err(fail) => fail.render(v, Some(state)),
    }
}

/// `PATCH /files/<id>`: upload append (draft §"Upload Append").
pub async fn append(
    state: &AppState,
    actor: &Actor,
    id: &UploadId,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let v = match Interop::of(headers) {
        Ok(v) => v,
        Err(fail) => return fail.render(Interop(Interop::NEWEST), None),
    };
    // A new append supersedes an older one still streaming (a client that reconnected).
    state.engine.scoped(actor).preempt(id).await;
    match append_body(state, actor, v, id, headers, body).await {
        Ok(resp) => resp,
        Err(fail) => fail.render(v, Some(state)),
    }
}

async fn append_body(
    state: &AppState,
    actor: &Actor,
    v: Interop,
    id: &UploadId,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Fail> {
    // Draft -04 on: an append is a PATCH whose patch document is `application/partial-upload`;
    // any other document format is "unsupported" in RFC 5789 §2.2 terms, i.e. 415. Earlier
    // drafts name no media type, so any (or none) is accepted.
    if v.partial_upload_media_type() {
        let essence = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.split(';').next())
            .map(str::trim)
            .unwrap_or("");
        if !essence.eq_ignore_ascii_case(PARTIAL_UPLOAD) {
            return Err(Fail::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                codes::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "an append at interop version {} is Content-Type: {PARTIAL_UPLOAD}, not {essence:?}",
                    v.0
                ),
            ));
        }
    }
    let offset = sf_uint(headers, &UPLOAD_OFFSET)?.ok_or_else(|| {
        Fail::bad(
            codes::OFFSET_REQUIRED,
            "an append carries Upload-Offset: the offset from HEAD or from the last response",
        )
    })?;
    // The draft requires the completeness header on appends; a request without it is taken
    // as not completing, which never finishes an upload the client did not mean to finish
    // (the engine still completes one whose declared length is reached).
    let complete = requested_completion(v, headers)?.unwrap_or(false);

    let u = load(state, actor, id).await?;
    if u.is_complete() {
        // An empty completing append at the final offset changes nothing: it is a retry of
        // a completing request whose answer was lost, or the explicit completion of an upload
        // that the engine already finished because its declared length was reached. Answer
        // it as the completing append; anything else modifies a completed upload.
        if complete
            && offset == u.offset()
            && content_length(headers).is_none_or(|n| n == 0)
            && is_empty(body).await
        {
            return Ok(completed_reply(state, v, headers, &u));
        }
        return Err(Fail::completed().with_upload(u));
    }
    if offset != u.offset() {
        let held = u.offset();
        return Err(Fail::mismatch(held, offset).with_upload(u));
    }
    let body_len = content_length(headers);
    let implied = match body_len.filter(|_| complete) {
        Some(n) => Some(
            offset
                .checked_add(n)
                .ok_or_else(|| Fail::bad(codes::INVALID_HEADER, "Content-Length is too large"))?,
        ),
        None => None,
    };
    let length = agree(
        sf_uint(headers, &UPLOAD_LENGTH)?,
        implied,
        "Upload-Length and the end of a completing append",
    )
    .and_then(|l| agree(u.length, l, "the upload's length and this request"))
    .map_err(|f| f.with_upload(u.clone()))?;
    let end = body_len.map_or(offset, |n| offset.saturating_add(n));
    match length {
        Some(len) if end > len => {
            return Err(Fail::inconsistent(format!(
                "the upload's length is {len} bytes, but this append would end at byte {end}"
            ))
            .with_upload(u));
        }
        Some(_) => {}
        // Refuse what cannot fit before storing any of it (draft §"Limits", `max-size`).
        None => {
            let max = state.engine.config().max_upload_size;
            if end > max {
                return Err(Fail::engine(EngineError::TooLarge { size: end, max }).with_upload(u));
            }
        }
    }
    let u = match length {
        Some(len) if u.length.is_none() => state
            .engine
            .scoped(actor)
            .set_length(id, len)
            .await
            .map_err(Fail::engine)?,
        _ => u,
    };

    let u = write_and_complete(state, actor, u, offset, complete, body).await?;
    if u.is_complete() {
        Ok(completed_reply(state, v, headers, &u))
    } else {
        // Draft §"Upload Append" example: 204 acknowledges appended data.
        let mut resp = reply(v, StatusCode::NO_CONTENT);
        upload_state(v, resp.headers_mut(), &u);
        Ok(resp)
    }
}

/// Draft §"Upload Append": the completing append answers as the resource processing the
/// upload would, with completeness true; that resource is the finished file, so `200` and its
/// URL.
fn completed_reply(state: &AppState, v: Interop, headers: &HeaderMap, u: &Upload) -> Response {
    let mut resp = reply(v, StatusCode::OK);
    let h = resp.headers_mut();
    if let Ok(l) = location_of(state, headers, &u.id).parse() {
        h.insert(LOCATION, l);
    }
    upload_state(v, h, u);
    resp
}

/// `DELETE /files/<id>`: upload cancellation (draft §"Upload Cancellation"): bytes and
/// record go, and the URL answers 404 from then on.
pub async fn cancel(
    state: &AppState,
    actor: &Actor,
    id: &UploadId,
    headers: &HeaderMap,
) -> Response {
    let v = match Interop::of(headers) {
        Ok(v) => v,
        Err(fail) => return fail.render(Interop(Interop::NEWEST), None),
    };
    let result = match load(state, actor, id).await {
        Ok(_) => state
            .engine
            .scoped(actor)
            .delete(id)
            .await
            .map_err(Fail::engine),
        Err(fail) => Err(fail),
    };
    match result {
        // 204 as the draft's example (required before draft -09).
        Ok(()) => reply(v, StatusCode::NO_CONTENT),
        Err(fail) => fail.render(v, Some(state)),
    }
}

/// `OPTIONS /files/`: what an upload here may be (draft §"Limits": `Upload-Limit`, and
/// `Accept-Patch` naming `application/partial-upload` for the versions that have it).
pub async fn options(state: &AppState, headers: &HeaderMap) -> Response {
    let v = match Interop::of(headers) {
        Ok(v) => v,
        Err(fail) => return fail.render(Interop(Interop::NEWEST), None),
    };
    let mut resp = reply(v, StatusCode::OK);
    let h = resp.headers_mut();
    upload_limit(v, state, h, None);
    if v.partial_upload_media_type() {
        h.insert(ACCEPT_PATCH, HeaderValue::from_static(PARTIAL_UPLOAD));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn completeness_follows_each_versions_header() {
        let v3 = Interop(3);
        assert_eq!(
            requested_completion(v3, &headers(&[("upload-incomplete", "?1")])).ok(),
            Some(Some(false))
        );
        assert_eq!(
            requested_completion(v3, &headers(&[("upload-incomplete", "?0")])).ok(),
            Some(Some(true))
        );
        // Interop 4 reads Upload-Complete first, Upload-Incomplete as a fallback.
        let v4 = Interop(4);
        assert_eq!(
            requested_completion(v4, &headers(&[("upload-complete", "?1")])).ok(),
            Some(Some(true))
        );
        assert_eq!(
            requested_completion(v4, &headers(&[("upload-incomplete", "?1")])).ok(),
            Some(Some(false))
        );
        // From 5 on only Upload-Complete counts.
        assert_eq!(
            requested_completion(Interop(8), &headers(&[("upload-incomplete", "?0")])).ok(),
            Some(None)
        );
        assert!(requested_completion(Interop(8), &headers(&[("upload-complete", "yes")])).is_err());
    }

    #[test]
    fn structured_integers_are_strict() {
        let ok = headers(&[("upload-offset", "  42;x=1")]);
        assert_eq!(sf_uint(&ok, &UPLOAD_OFFSET).ok(), Some(Some(42)));
        for bad in ["-1", "1.5", "1e3", "", "?1", "1234567890123456"] {
            let mut h = HeaderMap::new();
            h.insert("upload-offset", HeaderValue::from_str(bad).unwrap());
            assert!(sf_uint(&h, &UPLOAD_OFFSET).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn file_names_come_from_content_disposition() {
        let h = headers(&[(
            "content-disposition",
            "inline; filename=\"a b.jpg\"; filename*=UTF-8''%E6%8A%A5%E5%91%8A.pdf",
        )]);
        assert_eq!(disposition_file_name(&h).as_deref(), Some("报告.pdf"));
        let h = headers(&[("content-disposition", "inline; filename=\"../x.png\"")]);
        assert_eq!(disposition_file_name(&h).as_deref(), Some("x.png"));
    }
}
