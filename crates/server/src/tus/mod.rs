//! tus 1.0.0 at `/files/` (SPEC §2.3), sharing the endpoint with the IETF resumable-upload
//! draft (SPEC §2.4) and with downloads of finished files (SPEC §3).
//!
//! - [`options`]: `OPTIONS` — version, extensions built from capabilities, limits.
//! - [`post`]: `POST /files/` — creation, creation-with-upload, creation-defer-length,
//!   concatenation (partial and final uploads).
//! - [`head`]: `HEAD /files/<id>` — offset retrieval.
//! - [`patch`]: `PATCH /files/<id>` — append, with the checksum extension.
//! - [`delete`]: `DELETE /files/<id>` — termination.
//! - [`ietf`]: the IETF draft front (owned separately; this module only routes to it).
//!
//! Every handler is a thin translation: headers are parsed with the codecs of
//! [`ferry_core::tus`], and offsets, locking, hashing and durability are the engine's.
//!
//! # Who answers a request to `/files/…`
//!
//! | request                                      | front                                  |
//! |----------------------------------------------|----------------------------------------|
//! | carries `Upload-Draft-Interop-Version`       | [`ietf`] (GET still downloads)         |
//! | `GET /files/<id>`                            | download ([`crate::files::by_id`])      |
//! | `HEAD /files/<id>` without `Tus-Resumable`   | download (HEAD of the finished file)   |
//! | anything else                                | tus                                    |
//!
//! `X-HTTP-Method-Override` replaces the method of a tus request before this choice.
//! A CORS preflight never gets here: [`crate::cors`] answers it first.
//!
//! # Status codes (tus 1.0.0)
//!
//! | status | when |
//! |---|---|
//! | 200 | `HEAD` of an upload ("Core Protocol", HEAD: its example answers `200 OK`) |
//! | 201 | `POST` created an upload (+ `Location`, and `Upload-Offset` with a body) |
//! | 204 | `OPTIONS`; `PATCH` stored the body (+ new `Upload-Offset`); `DELETE` terminated |
//! | 400 | malformed or missing header, unsupported checksum algorithm, both or neither of `Upload-Length`/`Upload-Defer-Length`, unknown or non-partial concat part |
//! | 401 | tokens configured and none or a wrong one presented (SPEC §6) |
//! | 403 | `PATCH` to a final upload ("Concatenation") |
//! | 404 | unknown (or expired, or terminated) upload |
//! | 405 | a method `/files/` or `/files/<id>` does not serve |
//! | 409 | `Upload-Offset` differs from the held offset; a new `Upload-Length` differs from the known one |
//! | 412 | `Tus-Resumable` missing or not `1.0.0` (+ `Tus-Version`) |
//! | 413 | length over `Tus-Max-Size`; body past the upload's length |
//! | 415 | `PATCH` without `Content-Type: application/offset+octet-stream` |
//! | 423 | another request still writes this upload after the engine's wait |
//! | 460 | `Upload-Checksum` does not match the body; nothing of it is kept |
//!
//! Errors carry [`ApiError`]'s JSON body (`{"error": code, "message": …}`); every tus
//! response carries `Tus-Resumable: 1.0.0`.

pub mod delete;
pub mod head;
pub mod ietf;
pub mod options;
pub mod patch;
pub mod post;

use crate::AppState;
use crate::caller::Caller;
use crate::error::ApiError;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use ferry_core::EngineError;
use ferry_core::codes;
use ferry_core::engine::Actor;
use ferry_core::tus::{Checksum, ChecksumError, parse_non_negative};
use ferry_core::upload::{Dialect, Upload, UploadId};
use std::time::Duration;

pub const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
pub const TUS_VERSION: HeaderName = HeaderName::from_static("tus-version");
pub const TUS_EXTENSION: HeaderName = HeaderName::from_static("tus-extension");
pub const TUS_MAX_SIZE: HeaderName = HeaderName::from_static("tus-max-size");
pub const TUS_CHECKSUM_ALGORITHM: HeaderName = HeaderName::from_static("tus-checksum-algorithm");
pub const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
pub const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
pub const UPLOAD_DEFER_LENGTH: HeaderName = HeaderName::from_static("upload-defer-length");
pub const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
pub const UPLOAD_EXPIRES: HeaderName = HeaderName::from_static("upload-expires");
pub const UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");
pub const UPLOAD_CONCAT: HeaderName = HeaderName::from_static("upload-concat");
pub const METHOD_OVERRIDE: HeaderName = HeaderName::from_static("x-http-method-override");
/// Present on every request of the IETF draft, never on a tus one.
pub const IETF_INTEROP_VERSION: HeaderName =
    HeaderName::from_static("upload-draft-interop-version");

/// The media type of tus bodies ("Core Protocol", PATCH; "Creation With Upload").
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// Keys of `Upload::metadata` this front owns: the `Upload-Metadata` and `Upload-Concat`
/// headers exactly as received, because HEAD must answer with them "as received in the
/// upload creation request" ("Creation", "Concatenation").
pub const META_RAW_METADATA: &str = "tus:upload-metadata";
pub const META_RAW_CONCAT: &str = "tus:upload-concat";

/// The `/files` routes: tus, the IETF draft and downloads share them, see the module docs.
/// tus 1.0 and the IETF resumable-upload draft on `/files/` (downloads of finished files
/// share the path). Both count as the `tus` dialect.
pub static FRONT: crate::fronts::Front = crate::fronts::Front {
    dialect: Dialect::TUS,
    routes,
    metric_routes: &[
        ("/files", "tus"),
        ("/files/", "tus"),
        ("/files/{id}", "tus"),
    ],
    request_headers: &[
        "Upload-Offset",
        "Upload-Length",
        "Upload-Metadata",
        "Upload-Defer-Length",
        "Upload-Concat",
        "Upload-Checksum",
        "Tus-Resumable",
        "X-HTTP-Method-Override",
        "Upload-Complete",
        "Upload-Incomplete",
        "Upload-Draft-Interop-Version",
    ],
    response_headers: &[
        "Location",
        "Upload-Offset",
        "Upload-Length",
        "Upload-Metadata",
        "Upload-Expires",
        "Upload-Concat",
        "Tus-Resumable",
        "Tus-Version",
        "Tus-Extension",
        "Tus-Max-Size",
        "Tus-Checksum-Algorithm",
        "Upload-Complete",
        "Upload-Incomplete",
        "Upload-Limit",
        "Upload-Draft-Interop-Version",
    ],
};

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/files", any(collection))
        .route("/files/", any(collection))
        .route("/files/{id}", any(resource))
        .route_layer(middleware::from_fn_with_state(state, guard))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Front {
    Tus,
    Ietf,
    Download,
}

/// Chooses the front and the effective method of a request (see the module docs).
fn classify(method: &Method, headers: &HeaderMap) -> Result<(Front, Method), ApiError> {
    if method == Method::GET {
        return Ok((Front::Download, Method::GET));
    }
    if headers.contains_key(IETF_INTEROP_VERSION) {
        return Ok((Front::Ietf, method.clone()));
    }
    // tus "Core Protocol" / X-HTTP-Method-Override: when present it MUST be taken as the
    // request's method and the actual method ignored (for environments without PATCH or
    // DELETE, such as tus-js-client's `overridePatchMethod`).
    let method = match headers.get(METHOD_OVERRIDE) {
        None => method.clone(),
        Some(v) => Method::from_bytes(v.as_bytes().trim_ascii())
            .ok()
            .filter(|m| m.as_str().bytes().all(|b| b.is_ascii_uppercase()))
            .ok_or_else(|| {
                ApiError::bad_request(
                    codes::INVALID_METHOD_OVERRIDE,
                    "X-HTTP-Method-Override must name a method in capitals, like PATCH or DELETE",
                )
            })?,
    };
    let front = match method {
        Method::GET => Front::Download,
        Method::HEAD if !headers.contains_key(TUS_RESUMABLE) => Front::Download,
        _ => Front::Tus,
    };
    Ok((front, method))
}

/// Authentication and the `Tus-Resumable` stamp, around every `/files` handler.
///
/// Downloads stay as open as they were before this front existed (a finished file's URL is
/// the capability); `OPTIONS` only describes the server. Every other request is an upload
/// request and needs the bearer token when tokens are configured (SPEC §6).
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (front, method) =
        classify(req.method(), req.headers()).unwrap_or((Front::Tus, Method::POST));
    let open = front == Front::Download || method == Method::OPTIONS;
    let _ = state;
    let mut resp = if open {
        next.run(req).await
    } else {
        crate::caller::require(req, next).await
    };
    if front == Front::Tus {
        // tus "Core Protocol" / Tus-Resumable: MUST be included in every response (the
        // OPTIONS example carries it too, so it is not left out there either).
        resp.headers_mut().insert(
            TUS_RESUMABLE,
            HeaderValue::from_static(ferry_core::tus::VERSION),
        );
    }
    resp
}

/// `/files` and `/files/`: creation (POST) and server discovery (OPTIONS).
async fn collection(State(state): State<AppState>, req: Request) -> Response {
    let (front, method) = match classify(req.method(), req.headers()) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    // `guard` let only requests with a caller get here (OPTIONS needs none).
    let caller = parts.extensions.get::<Caller>().cloned();
    let anonymous = Actor::anonymous();
    let actor = caller.as_ref().map_or(&anonymous, |c| &c.0);
    match front {
        Front::Ietf => match method {
            Method::POST => ietf::create(&state, actor, headers, body).await,
            Method::OPTIONS => ietf::options(&state, headers).await,
            _ => method_not_allowed("POST, OPTIONS"),
        },
        Front::Download => method_not_allowed("POST, OPTIONS"),
        Front::Tus => {
            if method == Method::OPTIONS {
                return options::handle(&state);
            }
            if let Some(refusal) = refuse_version(headers) {
                return refusal;
            }
            match method {
                Method::POST => post::handle(&state, actor, headers, body).await,
                _ => method_not_allowed("POST, OPTIONS"),
            }
        }
    }
}

/// `/files/<id>`: download (GET), offset (HEAD), append (PATCH), termination (DELETE).
async fn resource(
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    req: Request,
) -> Response {
    let (front, method) = match classify(req.method(), req.headers()) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let caller = parts.extensions.get::<Caller>().cloned();
    if front == Front::Download {
        let query = parts.uri.query();
        let who = caller.ok_or_else(|| crate::caller::refusal(&parts.extensions));
        return crate::files::by_id(&state, who, &raw_id, query, method, headers).await;
    }
    // `guard` let only requests with a caller get here (OPTIONS needs none).
    let anonymous = Actor::anonymous();
    let actor = caller.as_ref().map_or(&anonymous, |c| &c.0);
    if method == Method::OPTIONS {
        return match front {
            Front::Ietf => ietf::options(&state, &headers).await,
            _ => options::handle(&state),
        };
    }
    if front == Front::Tus
        && let Some(refusal) = refuse_version(&headers)
    {
        return refusal;
    }
    // Ids are generated by the server; anything else cannot name an upload.
    let Some(id) = UploadId::parse(&raw_id) else {
        return TusError::from(EngineError::NotFound).into_response();
    };
    const ALLOWED: &str = "GET, HEAD, PATCH, DELETE, OPTIONS";
    match (front, method) {
        (Front::Ietf, Method::HEAD) => ietf::head(&state, actor, &id, &headers).await,
        (Front::Ietf, Method::PATCH) => ietf::append(&state, actor, &id, &headers, body).await,
        (Front::Ietf, Method::DELETE) => ietf::cancel(&state, actor, &id, &headers).await,
        (Front::Tus, Method::HEAD) => head::handle(&state, actor, &id).await,
        (Front::Tus, Method::PATCH) => patch::handle(&state, actor, &id, &headers, body).await,
        (Front::Tus, Method::DELETE) => delete::handle(&state, actor, &id).await,
        _ => method_not_allowed(ALLOWED),
    }
}

/// tus "Core Protocol" / Tus-Resumable: a version the server does not support gets
/// `412 Precondition Failed` with `Tus-Version`, and the request is not processed.
///
/// A missing header is treated the same way. The spec requires the header on every request
/// but OPTIONS, and a request without it is not tus: it is not IETF either (those carry
/// `Upload-Draft-Interop-Version`), so 412 with `Tus-Version` is the answer that tells the
/// sender what this endpoint speaks. tusd answers the same.
fn refuse_version(headers: &HeaderMap) -> Option<Response> {
    let message = match headers.get(TUS_RESUMABLE) {
        Some(v) if v.as_bytes() == ferry_core::tus::VERSION.as_bytes() => return None,
        Some(v) => format!(
            "tus version {:?} is not supported; this server speaks tus 1.0.0",
            String::from_utf8_lossy(v.as_bytes())
        ),
        None => "send Tus-Resumable: 1.0.0 (tus) or Upload-Draft-Interop-Version (IETF resumable uploads)"
            .to_owned(),
    };
    let mut resp = ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        codes::UNSUPPORTED_VERSION,
        message,
    )
    .into_response();
    resp.headers_mut().insert(
        TUS_VERSION,
        HeaderValue::from_static(ferry_core::tus::VERSION),
    );
    Some(resp)
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut resp = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        format!("this address answers {allow}"),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// An error on its way to a tus client: [`ApiError`]'s status and JSON body, with the one
/// status tus words differently.
pub struct TusError(ApiError);

impl From<EngineError> for TusError {
    fn from(e: EngineError) -> Self {
        let busy = matches!(e, EngineError::Busy);
        let mut api = ApiError::from(e);
        if busy {
            // The engine already waited for the other writer. 423 Locked is what tus
            // servers answer for a locked upload, and tus-js-client retries on 423 (and on
            // 409) by asking HEAD for the offset, so a client whose earlier request is still
            // being committed simply comes back.
            api.status = StatusCode::LOCKED;
        }
        TusError(api)
    }
}

impl From<ApiError> for TusError {
    fn from(e: ApiError) -> Self {
        TusError(e)
    }
}

impl IntoResponse for TusError {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

/// A header's text; a value that is not visible ASCII is refused rather than guessed at.
pub(crate) fn header_text<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a str>, TusError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| {
            ApiError::bad_request(
                codes::INVALID_HEADER,
                format!("{name} must be plain ASCII text"),
            )
            .into()
        }),
    }
}

/// `Upload-Offset` / `Upload-Length`: a non-negative integer ("Core Protocol", Headers).
pub(crate) fn header_number(
    headers: &HeaderMap,
    name: &HeaderName,
) -> Result<Option<u64>, TusError> {
    match header_text(headers, name)? {
        None => Ok(None),
        Some(s) => parse_non_negative(s).map(Some).ok_or_else(|| {
            ApiError::bad_request(
                codes::INVALID_NUMBER,
                format!("{name} must be a non-negative whole number below 2^63, not {s:?}"),
            )
            .into()
        }),
    }
}

/// `Upload-Checksum` ("Checksum"): 400 for an algorithm the server does not support or a
/// malformed value, before any byte is read.
pub(crate) fn header_checksum(headers: &HeaderMap) -> Result<Option<Checksum>, TusError> {
    let Some(text) = header_text(headers, &UPLOAD_CHECKSUM)? else {
        return Ok(None);
    };
    Checksum::parse(text).map(Some).map_err(|e| {
        let code = match e {
            ChecksumError::UnsupportedAlgorithm(_) => codes::CHECKSUM_ALGORITHM_UNSUPPORTED,
            _ => codes::INVALID_CHECKSUM,
        };
        ApiError::bad_request(code, e.to_string()).into()
    })
}

/// Whether the body is declared as `application/offset+octet-stream` (parameters and case
/// of the media type ignored).
pub(crate) fn is_offset_octet_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(OFFSET_OCTET_STREAM))
}

/// The absolute URL of an upload (tus "Creation": `Location`).
pub(crate) fn upload_url(state: &AppState, headers: &HeaderMap, id: &UploadId) -> String {
    state.upload_link(headers, id)
}

/// tus "Expiration" / Upload-Expires: when the janitor may remove this upload if nothing
/// arrives meanwhile — its last change plus `--expire-incomplete`. Only unfinished uploads
/// expire, and only when expiry is on.
pub(crate) fn expires(expire_incomplete: Duration, u: &Upload) -> Option<HeaderValue> {
    if expire_incomplete.is_zero() || u.is_complete() {
        return None;
    }
    let at = u.updated_at.to_system_time() + expire_incomplete;
    HeaderValue::from_str(&httpdate::fmt_http_date(at)).ok()
}

/// Adds `Upload-Expires` when the upload will expire.
pub(crate) fn add_expires(resp: &mut Response, state: &AppState, u: &Upload) {
    if let Some(v) = expires(state.expire_incomplete, u) {
        resp.headers_mut().insert(UPLOAD_EXPIRES, v);
    }
}
