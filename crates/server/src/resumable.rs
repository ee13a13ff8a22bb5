//! The resumable.js / flow.js / simple-uploader.js protocol at `/api/resumable`.
//!
//! The three libraries share one protocol: a "test chunk" `GET` before each chunk, and the
//! chunk itself as a `multipart/form-data` `POST`, both carrying the same fields. Each
//! library's default field names are accepted (`resumableChunkNumber`, `flowChunkNumber`,
//! `chunkNumber`, …), so pointing a library's `target` at this path is all the set-up.
//!
//! - Chunk *n* (1-based) of a file of *T* bytes cut at *C* bytes covers
//!   `(n−1)·C .. n·C`, the last chunk running to *T*: with `forceChunkSize` off (every
//!   library's default) there are `max(1, ⌊T/C⌋)` chunks and the last one is up to 2·C−1
//!   bytes; with it on, `⌈T/C⌉` chunks and the last one is up to C. Both counts are
//!   accepted; the fields must agree with each other and with earlier chunks of the file.
//! - A chunk is written at its place in the file as it streams in: no part files, no merge.
//!   The file is complete when its last missing byte is durable, whatever the order.
//! - Test `GET`: `200` with `{"uploaded", "skipUpload", "url"}` when the chunk is held (or
//!   the file is complete), `204` when it is not: every library reads 200 as "have it" and
//!   a 204 as "send it" (a 404 would be fatal for flow.js and simple-uploader). The answer
//!   about chunk 1 lists every chunk held, so simple-uploader's
//!   `checkChunkUploadedByResponse` resumes a file with one request; answers about other
//!   chunks list only that chunk (resumable.js and flow.js test every chunk and read only
//!   the status).
//! - "The same file" is the same identifier within a tenant (the libraries derive it from
//!   the size and name): a completed file answers every test with 200 and `skipUpload`, so
//!   no chunk body is sent again.
//! - Refusals are 400, for bad fields and for fields contradicting the file's earlier
//!   chunks alike: the one client-error status resumable.js gives up on (it retries a 409
//!   or a 413 a hundred times), and flow.js and simple-uploader retry no failed chunk
//!   (`maxChunkRetries` 0). A size over the server's limit is a 400 too here.

use crate::AppState;
use crate::caller::Caller;
use crate::error::ApiError;
use axum::Json;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ferry_core::EngineError;
use ferry_core::codes;
use ferry_core::engine::{NewUpload, Scoped, WriteMode};
use ferry_core::upload::{Dialect, Upload, clean_file_name};
use futures_util::{Stream, StreamExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::ops::Range;

/// The dialect of uploads made through this front.
pub const RESUMABLE: Dialect = Dialect::new("resumable");

/// The front: `GET` (test chunk) and `POST` (chunk) on `/api/resumable`.
pub static FRONT: crate::fronts::Front = crate::fronts::Front {
    dialect: RESUMABLE,
    routes,
    metric_routes: &[("/api/resumable", "resumable")],
    request_headers: &[],
    response_headers: &[],
};

fn routes(_: AppState) -> axum::Router<AppState> {
    axum::Router::new()
        .route(
            "/api/resumable",
            axum::routing::get(test_chunk).post(upload_chunk),
        )
        .route_layer(axum::middleware::from_fn(crate::caller::require))
}

/// Longest identifier and file name accepted.
const MAX_TEXT: usize = 1024;
/// Most chunks a file may have.
const MAX_CHUNKS: u64 = 1 << 24;
/// Longest form field other than the file.
const MAX_FIELD: usize = 4096;

/// The upload of `identifier`, in the caller's namespace.
fn key_for(identifier: &str) -> String {
    format!("resumable:{identifier}")
}

/// Where an upload keeps the layout its first chunk declared.
const META_CHUNK_SIZE: &str = "chunkSize";
const META_TOTAL_CHUNKS: &str = "totalChunks";

/// The fields every request carries, under any of the three libraries' names.
#[derive(Debug)]
struct Fields {
    number: u64,
    chunk_size: u64,
    current_size: u64,
    total_size: u64,
    total_chunks: u64,
    identifier: String,
    file_name: Option<String>,
}

impl Fields {
    /// Reads the fields from `raw` (query string and form fields together).
    fn parse(raw: &BTreeMap<String, String>) -> Result<Fields, ApiError> {
        let find = |name: &str| -> Option<&String> {
            // `chunkNumber` → `resumableChunkNumber`, `flowChunkNumber`, `chunkNumber`.
            let mut upper = name.to_owned();
            upper[..1].make_ascii_uppercase();
            raw.get(&format!("resumable{upper}"))
                .or_else(|| raw.get(&format!("flow{upper}")))
                .or_else(|| raw.get(name))
        };
        let number = |name: &'static str| -> Result<u64, ApiError> {
            let v = find(name).ok_or_else(|| {
                ApiError::bad_request(
                    codes::CHUNK_FIELD_MISSING,
                    format!(
                        "{name} is missing: send the chunk fields of resumable.js, flow.js or \
                         simple-uploader (e.g. resumable{0}, flow{0} or {name})",
                        upper_first(name)
                    ),
                )
            })?;
            let v = v.trim();
            (!v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| v.parse::<u64>().ok())
                .flatten()
                .filter(|n| *n < 1 << 62)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        codes::INVALID_CHUNK_FIELD,
                        format!("{name} must be a whole number, not {v:?}"),
                    )
                })
        };
        let identifier = find("identifier")
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request(
                    codes::CHUNK_FIELD_MISSING,
                    "identifier is missing: send the file's identifier (resumableIdentifier, \
                     flowIdentifier or identifier)",
                )
            })?;
        if identifier.len() > MAX_TEXT || identifier.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                codes::INVALID_IDENTIFIER,
                format!("the identifier must be 1 to {MAX_TEXT} bytes of printable text"),
            ));
        }
        let file_name = match find("filename") {
            None => None,
            Some(name) => {
                if name.contains(['/', '\\']) || name.len() > MAX_TEXT {
                    return Err(ApiError::bad_request(
                        codes::INVALID_FILE_NAME,
                        "the file name must be a plain name without '/' or '\\' (the folder \
                         goes in relativePath)",
                    ));
                }
                clean_file_name(name)
            }
        };
        let f = Fields {
            number: number("chunkNumber")?,
            chunk_size: number("chunkSize")?,
            current_size: number("currentChunkSize")?,
            total_size: number("totalSize")?,
            total_chunks: number("totalChunks")?,
            identifier,
            file_name,
        };
        f.check()?;
        Ok(f)
    }

    /// The fields agree with each other under one of the libraries' two chunking rules.
    fn check(&self) -> Result<(), ApiError> {
        let (t, c) = (self.total_size, self.chunk_size);
        if c == 0 {
            return Err(ApiError::bad_request(
                codes::INVALID_CHUNK_FIELD,
                "chunkSize must be at least 1",
            ));
        }
        let floor = (t / c).max(1);
        let ceil = t.div_ceil(c).max(1);
        if self.total_chunks != floor && self.total_chunks != ceil {
            return Err(ApiError::bad_request(
                codes::CHUNK_COUNT_MISMATCH,
                format!(
                    "totalChunks is {} but a file of {t} bytes in chunks of {c} has {floor} \
                     (or {ceil} with forceChunkSize)",
                    self.total_chunks
                ),
            ));
        }
        if self.total_chunks > MAX_CHUNKS {
            return Err(ApiError::bad_request(
                codes::TOO_MANY_CHUNKS,
                format!("a file may have at most {MAX_CHUNKS} chunks: use larger chunks"),
            ));
        }
        if self.number == 0 || self.number > self.total_chunks {
            return Err(ApiError::bad_request(
                codes::CHUNK_NUMBER_OUT_OF_RANGE,
                format!(
                    "chunkNumber must be 1 to {} (totalChunks), not {}",
                    self.total_chunks, self.number
                ),
            ));
        }
        let span = self.span();
        if span.end - span.start != self.current_size {
            return Err(ApiError::bad_request(
                codes::CHUNK_SIZE_MISMATCH,
                format!(
                    "chunk {} of a {t}-byte file in chunks of {c} has {} bytes, but \
                     currentChunkSize says {}",
                    self.number,
                    span.end - span.start,
                    self.current_size
                ),
            ));
        }
        Ok(())
    }

    /// The byte range of chunk `number`.
    fn span_of(&self, number: u64) -> Range<u64> {
        let start = (number - 1) * self.chunk_size;
        let end = if number == self.total_chunks {
            self.total_size
        } else {
            number * self.chunk_size
        };
        start..end
    }

    fn span(&self) -> Range<u64> {
        self.span_of(self.number)
    }

    /// Refuses fields that contradict the upload made by the file's earlier chunks.
    fn matches(&self, u: &Upload) -> Result<(), ApiError> {
        let recorded = |k: &str| u.metadata.get(k).and_then(|v| v.parse::<u64>().ok());
        let same = u.length == Some(self.total_size)
            && recorded(META_CHUNK_SIZE).is_none_or(|c| c == self.chunk_size)
            && recorded(META_TOTAL_CHUNKS).is_none_or(|n| n == self.total_chunks);
        if same {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::CHUNK_LAYOUT_CONFLICT,
            format!(
                "identifier {:?} is already a file of {} bytes in {} chunks of {}; this request \
                 says {} bytes in {} chunks of {}. Finish or delete that upload, or give this \
                 file another identifier",
                self.identifier,
                u.length.map_or_else(|| "?".to_owned(), |l| l.to_string()),
                recorded(META_TOTAL_CHUNKS).map_or_else(|| "?".to_owned(), |l| l.to_string()),
                recorded(META_CHUNK_SIZE).map_or_else(|| "?".to_owned(), |l| l.to_string()),
                self.total_size,
                self.total_chunks,
                self.chunk_size
            ),
        ))
    }

    /// The chunk numbers `u` holds: all of them when this is chunk 1 (the request a
    /// resuming client makes first), else just this one if held.
    fn uploaded(&self, u: &Upload) -> Vec<u64> {
        if u.is_complete() {
            return if self.number == 1 {
                (1..=self.total_chunks).collect()
            } else {
                vec![self.number]
            };
        }
        if self.number != 1 {
            return if u.held.contains(self.span()) {
                vec![self.number]
            } else {
                Vec::new()
            };
        }
        // Walk the held ranges, not every chunk: a resumed file lists what it has.
        let mut out = Vec::new();
        for r in u.held.iter() {
            let mut n = r.start.div_ceil(self.chunk_size) + 1;
            while n <= self.total_chunks {
                let span = self.span_of(n);
                if span.start >= r.end {
                    break;
                }
                if span.end <= r.end {
                    out.push(n);
                }
                n += 1;
            }
        }
        out
    }
}

fn upper_first(s: &str) -> String {
    let mut out = s.to_owned();
    out[..1].make_ascii_uppercase();
    out
}

/// The answer the libraries parse: held chunks, whether the file is done, its URL.
fn answer(state: &AppState, headers: &HeaderMap, f: &Fields, u: &Upload) -> Response {
    let url = u.is_complete().then(|| state.download_url(headers, u));
    let mut resp = Json(json!({
        "uploaded": f.uploaded(u),
        "skipUpload": u.is_complete(),
        "url": url,
    }))
    .into_response();
    resp.extensions_mut()
        .insert(crate::metrics::UploadRef(u.id.clone()));
    resp
}

/// Errors in statuses the libraries give up on (see the module docs).
fn refusal(e: impl Into<ApiError>) -> Response {
    let mut e: ApiError = e.into();
    if matches!(
        e.status,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNPROCESSABLE_ENTITY | StatusCode::CONFLICT
    ) {
        e.status = StatusCode::BAD_REQUEST;
    }
    e.into_response()
}

/// The query string's pairs; one that is not UTF-8 is a refusal.
fn query(q: Option<&str>) -> Result<BTreeMap<String, String>, ApiError> {
    crate::form::query_pairs(q.unwrap_or("")).ok_or_else(|| {
        ApiError::bad_request(
            codes::INVALID_CHUNK_FIELD,
            "the query string is not UTF-8 once percent-decoded",
        )
    })
}

/// `GET /api/resumable`: is this chunk held?
async fn test_chunk(state: State<AppState>, caller: Caller, req: Request) -> Response {
    let headers = req.headers().clone();
    let query = query(req.uri().query());
    let engine = state.engine.scoped(&caller.0);
    let result = async {
        let f = Fields::parse(&query?)?;
        let Some(u) = engine.find(&key_for(&f.identifier)).await? else {
            return Ok(StatusCode::NO_CONTENT.into_response());
        };
        f.matches(&u)?;
        if u.is_complete() || u.held.contains(f.span()) {
            Ok(answer(&state, &headers, &f, &u))
        } else {
            Ok(StatusCode::NO_CONTENT.into_response())
        }
    }
    .await;
    result.unwrap_or_else(|e: ApiError| refusal(e))
}

/// `POST /api/resumable`: one chunk, written at its place in the file.
async fn upload_chunk(state: State<AppState>, caller: Caller, req: Request) -> Response {
    let headers = req.headers().clone();
    let engine = state.engine.scoped(&caller.0);
    let (req, rest) = crate::form::Rest::split(req);
    let resp = match store_chunk(&state, &engine, &headers, req).await {
        Ok(resp) => resp,
        Err(e) => refusal(e),
    };
    rest.discard().await;
    resp
}

async fn store_chunk(
    state: &AppState,
    engine: &Scoped<'_>,
    headers: &HeaderMap,
    req: Request,
) -> Result<Response, ApiError> {
    let mut raw = query(req.uri().query())?;
    let mut multipart = Multipart::from_request(req, state).await.map_err(|e| {
        ApiError::bad_request(
            codes::MALFORMED_MULTIPART,
            format!(
                "send the chunk as multipart/form-data, fields first, then the file part: {}",
                e.body_text()
            ),
        )
    })?;
    loop {
        let field = multipart.next_field().await.map_err(|e| {
            ApiError::bad_request(
                codes::MALFORMED_MULTIPART,
                format!("the multipart body could not be read: {e}"),
            )
        })?;
        let Some(mut field) = field else {
            return Err(ApiError::bad_request(
                codes::FILE_REQUIRED,
                "the multipart body has no file part (named \"file\") with the chunk's bytes",
            ));
        };
        let name = field.name().unwrap_or("").to_owned();
        if field.file_name().is_some() || name == "file" {
            let f = Fields::parse(&raw)?;
            return write_chunk(state, engine, headers, &f, field_stream(field)).await;
        }
        let text =
            crate::form::read_text(&mut field, MAX_FIELD, &format!("form field {name}")).await?;
        raw.insert(name, text);
    }
}

fn field_stream(
    field: axum::extract::multipart::Field<'_>,
) -> impl Stream<Item = Result<Bytes, String>> + Send + Unpin + '_ {
    field.map(|r| r.map_err(|e| e.to_string()))
}

async fn write_chunk<S>(
    state: &AppState,
    engine: &Scoped<'_>,
    headers: &HeaderMap,
    f: &Fields,
    body: S,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<Bytes, String>> + Send + Unpin,
{
    let max = state.engine.config().max_upload_size;
    if f.total_size > max {
        return Err(EngineError::TooLarge {
            size: f.total_size,
            max,
        }
        .into());
    }
    let key = key_for(&f.identifier);
    let u = match engine.find(&key).await? {
        Some(u) => u,
        None => {
            let mut new = NewUpload::new(RESUMABLE);
            new.key = Some(key);
            new.length = Some(f.total_size);
            new.file_name = f.file_name.clone();
            new.metadata
                .insert(META_CHUNK_SIZE.to_owned(), f.chunk_size.to_string());
            new.metadata
                .insert(META_TOTAL_CHUNKS.to_owned(), f.total_chunks.to_string());
            if let Some(name) = &f.file_name {
                new.metadata.insert("filename".to_owned(), name.clone());
            }
            // Several chunks may race to create it: the key makes them share one upload.
            engine.create(new).await?.0
        }
    };
    f.matches(&u)?;
    let span = f.span();
    if u.is_complete() || span.is_empty() || u.held.contains(span.clone()) {
        // Held already (a retry, or the file is complete): the body is not needed.
        return Ok(answer(state, headers, f, &u));
    }
    let outcome = engine
        .write(
            &u.id,
            WriteMode::At {
                start: span.start,
                len: span.end - span.start,
            },
            body,
        )
        .await?;
    let u = outcome.upload;
    if !u.is_complete() && !u.held.contains(span.clone()) {
        return Err(ApiError::bad_request(
            codes::CHUNK_INCOMPLETE,
            format!(
                "the file part ended before the chunk's {} bytes (currentChunkSize); send the \
                 chunk again",
                span.end - span.start
            ),
        ));
    }
    Ok(answer(state, headers, f, &u))
}
