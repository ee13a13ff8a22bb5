//! The chunk-handshake dialect (SPEC §2.1): the protocol of the seed articles.
//!
//! 1. `POST /api/upload/handshake` `{fileId, ext, chunkIds[, size, chunkSize, fileName,
//!    hashAlgorithm]}` → the file's URL when it is already complete ("instant upload"),
//!    otherwise the chunk ids still missing, in file order.
//! 2. `POST /api/upload` `multipart/form-data` with `file`, `chunkId`, `fileId` → the ids still
//!    missing, or the URL once the chunk that completes the file arrived and the whole-file
//!    digest matched `fileId`.
//!
//! Every answer uses the `{code, msg, data}` envelope; errors put the HTTP status in `code`.
//! A chunk id is a hex digest optionally followed by a suffix (spark-md5 clients append the
//! chunk index); the digest prefix is verified against the bytes. Chunks are written at their
//! final offsets, so completion is a rename, never a merge.

use crate::AppState;
use crate::caller::Caller;
use crate::error::ApiError;
use crate::form::read_text;
use axum::Json;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ferry_core::EngineError;
use ferry_core::codes;
use ferry_core::engine::{NewUpload, Scoped};
use ferry_core::handshake::{Envelope, HandshakeData, HandshakeRequest, valid_chunk_id};
use ferry_core::hash::{HashAlg, parse_hex};
use ferry_core::upload::{
    ChunkLayout, DeclaredDigest, Dialect, Upload, clean_file_name, validate_ext,
};
use futures_util::{Stream, StreamExt};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

/// Largest handshake body: a 1 TiB file in 1 MiB chunks has a million ids of ~35 bytes.
const MAX_HANDSHAKE_BYTES: usize = 64 << 20;
/// Most chunks one file may have.
const MAX_CHUNKS: usize = 1 << 21;
/// Longest text field (`chunkId`, `fileId`) in a chunk upload.
const MAX_TEXT_FIELD: usize = 1024;
/// The text fields of a chunk upload, as error messages name them.
const FIELDS: &str = "form fields chunkId and fileId";

/// The chunk-handshake front. Its chunk `POST /api/upload` shares the path with the
/// byte-offset front (told apart by the body's type, in [`crate::app`]).
pub static FRONT: crate::fronts::Front = crate::fronts::Front {
    dialect: Dialect::CHUNK,
    routes,
    metric_routes: &[
        ("/api/upload/handshake", "handshake"),
        ("/api/upload", "upload"),
        ("/upload", "upload"),
    ],
    request_headers: &[],
    response_headers: &[],
};

fn routes(_: AppState) -> axum::Router<AppState> {
    axum::Router::new()
        .route("/api/upload/handshake", axum::routing::post(handshake))
        .route_layer(axum::middleware::from_fn(crate::caller::require))
}

/// Metadata key under which a handshake upload is found again by its `fileId`.
pub fn key_for(file_id: &str) -> String {
    format!("chunk:{file_id}")
}

fn ok(data: HandshakeData) -> Response {
    Json(Envelope {
        code: 0,
        msg: String::new(),
        data,
        error: None,
    })
    .into_response()
}

/// The finished file's URL: the seeds' `/upload/<fileId><ext>` on an open server; with
/// authentication, the signed link (a content-derived path must not be the capability).
fn url_of(state: &AppState, headers: &HeaderMap, u: &Upload) -> String {
    if state.auth.enabled() {
        return state.download_url(headers, u);
    }
    let file_id = u
        .key
        .as_deref()
        .and_then(|k| k.strip_prefix("chunk:"))
        .unwrap_or(u.id.as_str());
    format!("{}/upload/{}{}", state.base_url(headers), file_id, u.ext)
}

/// Chunk ids not yet held, in file order, each once.
pub fn missing_ids(u: &Upload) -> Vec<String> {
    let Some(layout) = &u.chunks else {
        return Vec::new();
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, id) in layout.ids.iter().enumerate() {
        let held = match layout.span(i, u.length) {
            Some(span) => u.held.contains(span),
            None => false,
        } || layout.staged.contains_key(&i);
        if !held && seen.insert(id.as_str()) {
            out.push(id.clone());
        }
    }
    out
}

fn answer(state: &AppState, headers: &HeaderMap, u: &Upload) -> Response {
    let mut resp = if u.is_complete() {
        ok(HandshakeData::Url(url_of(state, headers, u)))
    } else {
        ok(HandshakeData::Missing(missing_ids(u)))
    };
    resp.extensions_mut()
        .insert(crate::metrics::UploadRef(u.id.clone()));
    resp
}

fn missing_file_id() -> ApiError {
    // 403 as in the original design (请携带文件编号: "please send the file id").
    ApiError::new(
        StatusCode::FORBIDDEN,
        codes::FILE_ID_REQUIRED,
        "fileId is missing (请携带文件编号): send the hex MD5 of the whole file as fileId",
    )
}

fn parse_file_id(raw: &str, alg: HashAlg) -> Result<String, ApiError> {
    if raw.is_empty() {
        return Err(missing_file_id());
    }
    if parse_hex(alg, raw).is_none() {
        return Err(ApiError::bad_request(
            codes::INVALID_FILE_ID,
            format!(
                "fileId must be the {} hex characters of the file's {} digest",
                alg.hex_len(),
                alg
            ),
        ));
    }
    Ok(raw.to_ascii_lowercase())
}

/// `POST /api/upload/handshake`.
pub async fn handshake(State(state): State<AppState>, caller: Caller, req: Request) -> Response {
    let headers = req.headers().clone();
    let engine = state.engine.scoped(&caller.0);
    match handshake_inner(&state, &engine, &headers, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_envelope(),
    }
}

async fn handshake_inner(
    state: &AppState,
    engine: &Scoped<'_>,
    headers: &HeaderMap,
    req: Request,
) -> Result<Response, ApiError> {
    let body = axum::body::to_bytes(req.into_body(), MAX_HANDSHAKE_BYTES)
        .await
        .map_err(|e| {
            // Over the limit, or the body broke off (a dropped connection, a timeout).
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if !too_large {
                return ApiError::bad_request(
                    codes::BODY_INTERRUPTED,
                    format!("the handshake body could not be read to its end: {e}"),
                );
            }
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::HANDSHAKE_TOO_LARGE,
                format!("the handshake body is larger than {MAX_HANDSHAKE_BYTES} bytes; use larger chunks"),
            )
        })?;
    let hs: HandshakeRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            codes::MALFORMED_JSON,
            format!("the handshake body is not the expected JSON object: {e}"),
        )
    })?;
    let alg = match hs.hash_algorithm.as_deref() {
        None => HashAlg::Md5,
        Some(a) => match HashAlg::parse(a) {
            Some(alg @ (HashAlg::Md5 | HashAlg::Sha256)) => alg,
            _ => {
                return Err(ApiError::bad_request(
                    codes::UNSUPPORTED_HASH,
                    format!("hashAlgorithm {a:?} is not supported; use \"md5\" or \"sha256\""),
                ));
            }
        },
    };
    let file_id = parse_file_id(hs.file_id.as_deref().unwrap_or(""), alg)?;
    let ext = validate_ext(hs.ext.as_deref().unwrap_or(""))
        .map_err(|m| ApiError::bad_request(codes::INVALID_EXT, format!("ext: {m}")))?;
    let ids = hs.chunk_ids.ok_or_else(|| {
        ApiError::bad_request(
            codes::CHUNK_IDS_REQUIRED,
            "chunkIds is missing: send the array of chunk digests in file order",
        )
    })?;
    if ids.len() > MAX_CHUNKS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::TOO_MANY_CHUNKS,
            format!(
                "{} chunks is more than the {MAX_CHUNKS} allowed; use larger chunks",
                ids.len()
            ),
        ));
    }
    if let Some(bad) = ids.iter().find(|id| !valid_chunk_id(id, alg.hex_len())) {
        return Err(ApiError::bad_request(
            codes::INVALID_CHUNK_ID,
            format!(
                "chunk id {bad:?} is not a {}-character hex {} digest with an optional suffix of letters, digits, - or _",
                alg.hex_len(),
                alg
            ),
        ));
    }
    let max = state.engine.config().max_upload_size;
    if let Some(size) = hs.size.filter(|&size| size > max) {
        return Err(EngineError::TooLarge { size, max }.into());
    }
    check_layout(ids.len(), hs.size, hs.chunk_size)?;
    let chunk_size = match (hs.chunk_size, hs.size, ids.len()) {
        (Some(cs), _, _) => Some(cs),
        // One chunk: its size is the file's.
        (None, Some(size), 1) => Some(size),
        _ => None,
    };
    let length = hs.size.or(if ids.is_empty() { Some(0) } else { None });
    let layout = ChunkLayout {
        ids,
        chunk_size,
        alg,
        staged: BTreeMap::new(),
    };

    // Keys are per tenant (SPEC §6): another tenant's copy of the same file is not found
    // here, so a client that knows only the digest uploads the bytes like anyone else.
    let key = key_for(&file_id);
    if let Some(existing) = engine.find(&key).await? {
        if existing.is_complete() {
            tracing::info!(id = %existing.id, "instant upload: file already complete");
            return Ok(answer(state, headers, &existing));
        }
        let same_layout = existing.chunks.as_ref().is_some_and(|c| {
            c.ids == layout.ids
                && (layout.chunk_size.is_none() || c.chunk_size == layout.chunk_size)
        });
        let u = if same_layout && (length.is_none() || existing.length == length) {
            existing
        } else {
            engine.set_layout(&existing.id, layout, length).await?
        };
        return Ok(answer(state, headers, &u));
    }
    let mut new = NewUpload::new(Dialect::CHUNK);
    new.key = Some(key);
    new.length = length;
    new.declared = Some(DeclaredDigest {
        alg,
        hex: file_id.clone(),
    });
    new.file_name = hs.file_name.as_deref().and_then(clean_file_name);
    new.ext = ext;
    new.chunks = Some(layout);
    let (u, _) = engine.create(new).await?;
    Ok(answer(state, headers, &u))
}

/// Checks that declared `size` and `chunkSize` agree with the number of chunk ids.
fn check_layout(n: usize, size: Option<u64>, chunk_size: Option<u64>) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::bad_request(codes::INCONSISTENT_LAYOUT, m));
    if chunk_size == Some(0) {
        return bad("chunkSize must be at least 1 byte".into());
    }
    match (size, chunk_size) {
        (Some(0), _) if n > 1 => bad(format!("an empty file cannot have {n} chunks")),
        (Some(size), Some(cs)) if size > 0 => {
            let expected = size.div_ceil(cs);
            if expected != n as u64 {
                return bad(format!(
                    "a file of {size} bytes in chunks of {cs} bytes has {expected} chunks, but chunkIds lists {n}"
                ));
            }
            Ok(())
        }
        (Some(size), None) if size > 0 && n == 0 => bad(format!(
            "a file of {size} bytes needs at least one chunk id"
        )),
        _ => Ok(()),
    }
}

/// `POST /api/upload` with `multipart/form-data`: one chunk.
pub async fn upload_chunk(state: State<AppState>, caller: Caller, req: Request) -> Response {
    let headers = req.headers().clone();
    let engine = state.engine.scoped(&caller.0);
    let (req, rest) = crate::form::Rest::split(req);
    let resp = match upload_chunk_inner(&state, &engine, &headers, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_envelope(),
    };
    rest.discard().await;
    resp
}

/// Deletes a spooled chunk when the request ends, however it ends.
struct Spool(PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn upload_chunk_inner(
    state: &AppState,
    engine: &Scoped<'_>,
    headers: &HeaderMap,
    req: Request,
) -> Result<Response, ApiError> {
    // Ids may also come in the query string, which lets a client stream the file part first
    // without the server spooling it.
    let query: BTreeMap<String, String> = req
        .uri()
        .query()
        .and_then(crate::form::query_pairs)
        .unwrap_or_default();
    let mut chunk_id = query.get("chunkId").cloned();
    let mut file_id = query.get("fileId").cloned();
    let mut multipart = Multipart::from_request(req, state)
        .await
        .map_err(|e| ApiError::bad_request(codes::MALFORMED_MULTIPART, e.body_text()))?;
    let mut spooled: Option<(Spool, u64)> = None;
    loop {
        let field = multipart.next_field().await.map_err(|e| {
            ApiError::bad_request(
                codes::MALFORMED_MULTIPART,
                format!("the multipart body could not be read: {e}"),
            )
        })?;
        let Some(mut field) = field else { break };
        match field.name().unwrap_or("") {
            "chunkId" => chunk_id = Some(read_text(&mut field, MAX_TEXT_FIELD, FIELDS).await?),
            "fileId" => file_id = Some(read_text(&mut field, MAX_TEXT_FIELD, FIELDS).await?),
            "file" | "chunk" => {
                if let (Some(f), Some(c)) = (
                    file_id.as_ref().filter(|f| !f.is_empty()),
                    chunk_id.as_ref().filter(|c| !c.is_empty()),
                ) {
                    // The ids came first: stream straight to the chunk's place in the file.
                    let declared = part_length(field.headers())?;
                    let body = Box::pin(exact_length(field, declared));
                    return store_chunk(state, engine, headers, f, c, body).await;
                }
                // The bytes came before the ids (common: `formData.append('file', …)` first).
                // Spool them; they are verified and placed once the ids arrive.
                let declared = part_length(field.headers())?;
                let spooled_now = spool(state, &mut field).await?;
                if let Some(want) = declared
                    && want != spooled_now.1
                {
                    return Err(part_length_mismatch(want, spooled_now.1));
                }
                spooled = Some(spooled_now);
            }
            _ => while field.chunk().await.ok().flatten().is_some() {},
        }
    }
    let file_id = file_id
        .filter(|f| !f.is_empty())
        .ok_or_else(missing_file_id)?;
    let chunk_id = chunk_id.filter(|c| !c.is_empty()).ok_or_else(|| {
        ApiError::bad_request(
            codes::CHUNK_ID_REQUIRED,
            "chunkId is missing: send the chunk's id from the handshake",
        )
    })?;
    let (spool, _len) = spooled.ok_or_else(|| {
        ApiError::bad_request(
            codes::FILE_REQUIRED,
            "the multipart body has no file field with the chunk's bytes",
        )
    })?;
    let file = tokio::fs::File::open(&spool.0)
        .await
        .map_err(EngineError::from)?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20);
    let resp = store_chunk(
        state,
        engine,
        headers,
        &file_id,
        &chunk_id,
        Box::pin(stream),
    )
    .await;
    drop(spool);
    resp
}

async fn spool(
    state: &AppState,
    field: &mut axum::extract::multipart::Field<'_>,
) -> Result<(Spool, u64), ApiError> {
    let path = state
        .spool_dir
        .join(ferry_core::upload::UploadId::generate().as_str());
    let guard = Spool(path.clone());
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(EngineError::from)?;
    let max = state.engine.config().max_upload_size;
    let mut len = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(|e| {
        ApiError::from(EngineError::BodyInterrupted {
            received: len,
            reason: e.to_string(),
        })
    })? {
        len += chunk.len() as u64;
        if len > max {
            return Err(EngineError::TooLarge { size: len, max }.into());
        }
        file.write_all(&chunk).await.map_err(EngineError::from)?;
    }
    file.flush().await.map_err(EngineError::from)?;
    Ok((guard, len))
}

async fn store_chunk<S, E>(
    state: &AppState,
    engine: &Scoped<'_>,
    headers: &HeaderMap,
    file_id: &str,
    chunk_id: &str,
    body: S,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    let file_id = file_id.to_ascii_lowercase();
    if !file_id.bytes().all(|b| b.is_ascii_hexdigit()) || !matches!(file_id.len(), 32 | 64) {
        return Err(ApiError::bad_request(
            codes::INVALID_FILE_ID,
            "fileId must be the hex digest of the whole file, as sent in the handshake",
        ));
    }
    let Some(u) = engine.find(&key_for(&file_id)).await? else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            codes::HANDSHAKE_REQUIRED,
            "no handshake for this fileId: POST /api/upload/handshake first, then send the chunks it asks for",
        ));
    };
    let alg = u.chunks.as_ref().map_or(HashAlg::Md5, |c| c.alg);
    if !valid_chunk_id(chunk_id, alg.hex_len()) {
        return Err(ApiError::bad_request(
            codes::INVALID_CHUNK_ID,
            format!("chunkId {chunk_id:?} is not a hex {alg} digest with an optional suffix"),
        ));
    }
    if u.is_complete() {
        // A retry of a chunk of a finished file: answered with the URL as the first time,
        // but only for the chunk's own bytes (never a success for bytes the file lacks).
        ferry_core::engine::verify_chunk(&u, chunk_id, body).await?;
        return Ok(answer(state, headers, &u));
    }
    match engine.write_chunk(&u.id, chunk_id, body).await {
        Ok(out) => Ok(answer(state, headers, &out.upload)),
        Err(EngineError::AlreadyComplete) => {
            let u = engine.get(&u.id).await?;
            Ok(answer(state, headers, &u))
        }
        Err(e) => Err(e.into()),
    }
}

/// The `Content-Length` a multipart part declares for itself, if any.
fn part_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let mut values = headers.get_all(axum::http::header::CONTENT_LENGTH).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    let parsed = v
        .to_str()
        .ok()
        .and_then(|s| ferry_core::tus::parse_non_negative(s.trim()));
    match (parsed, values.next()) {
        (Some(n), None) => Ok(Some(n)),
        _ => Err(ApiError::bad_request(
            codes::INVALID_PART_LENGTH,
            "the file part's Content-Length must be one non-negative number of bytes",
        )),
    }
}

fn part_length_mismatch(declared: u64, got: u64) -> ApiError {
    ApiError::bad_request(
        codes::PART_LENGTH_MISMATCH,
        format!(
            "the file part declares Content-Length {declared} but carries {got} bytes; nothing was stored, send the chunk again"
        ),
    )
}

/// The part's bytes, ending in an error (so the engine stores nothing of the chunk) when
/// they run past or stop short of the length the part declared.
fn exact_length<S, E>(
    body: S,
    declared: Option<u64>,
) -> impl Stream<Item = Result<Bytes, String>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    let body = body.map(|r| r.map_err(|e| e.to_string()));
    // State: the body, bytes seen so far, whether the stream has ended.
    futures_util::stream::unfold(
        (Box::pin(body), 0u64, false),
        move |(mut body, seen, done)| async move {
            if done {
                return None;
            }
            match body.next().await {
                Some(Ok(b)) => {
                    let seen = seen + b.len() as u64;
                    match declared.filter(|&d| seen > d) {
                        Some(d) => Some((
                            Err(format!(
                                "the file part is longer than its declared Content-Length {d}"
                            )),
                            (body, seen, true),
                        )),
                        None => Some((Ok(b), (body, seen, false))),
                    }
                }
                Some(Err(e)) => Some((Err(e), (body, seen, true))),
                None => declared.filter(|&d| d != seen).map(|d| {
                    (
                        Err(format!(
                            "the file part carries {seen} bytes but declares Content-Length {d}"
                        )),
                        (body, seen, true),
                    )
                }),
            }
        },
    )
}
