//! Finished files: `GET|HEAD /files/<id>` for any upload, `GET|HEAD /upload/<fileId><ext>` for
//! chunk-handshake uploads (SPEC §2.1, §3). Range semantics live in [`crate::download`].

use crate::AppState;
use crate::caller::Caller;
use crate::download::{Downloadable, content_type_for_ext, respond};
use crate::error::ApiError;
use crate::links::LinkCheck;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_core::codes;
use ferry_core::upload::{Upload, UploadId, validate_ext};

fn not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        codes::NOT_FOUND,
        "no finished file at this address; check the URL the upload returned",
    )
    .into_response()
}

/// `GET|HEAD /files/<id>`: with a valid signed link (`?expires=…&signature=…`) for anyone;
/// otherwise for the upload's owner only (without authentication configured, everyone is).
/// Another tenant's file, an expired or tampered link: exactly as a missing file (404).
pub async fn by_id(
    state: &AppState,
    caller: Result<Caller, Response>,
    raw_id: &str,
    query: Option<&str>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let Some(id) = UploadId::parse(raw_id) else {
        return not_found();
    };
    let found = match state.links.verify(&format!("/files/{id}"), query) {
        // What a link is for: whoever holds it downloads the file, credentials or not.
        LinkCheck::Valid => state.engine.get(&id).await,
        LinkCheck::Absent => match caller {
            Ok(c) => state.engine.scoped(&c.0).get(&id).await,
            Err(refused) => return refused,
        },
        LinkCheck::Expired => {
            return link_refused(
                codes::LINK_EXPIRED,
                "this download link has expired; ask its owner for a new one",
            );
        }
        LinkCheck::Invalid => {
            return link_refused(
                codes::LINK_INVALID,
                "this download link is not valid (altered, or for another file)",
            );
        }
    };
    match found {
        Ok(u) if u.is_complete() => serve_upload(state, u, &method, &headers).await,
        Ok(_) | Err(ferry_core::EngineError::NotFound) => not_found(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// A refused link answers 404 like a missing file (a guessed signature learns nothing), with
/// a code that tells the holder of a genuine but stale link what happened.
fn link_refused(code: &'static str, message: &'static str) -> Response {
    ApiError::new(StatusCode::NOT_FOUND, code, message).into_response()
}

/// `<fileId><ext>`: the hex digest, then an optional validated extension. The address is
/// derived from the content, so it serves only the caller's own file (SPEC §6): with
/// authentication configured it needs the owner's credentials.
pub async fn by_file_id(
    State(state): State<AppState>,
    caller: Result<Caller, Response>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let caller = match caller {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let (file_id, ext) = match name.find('.') {
        Some(dot) => name.split_at(dot),
        None => (name.as_str(), ""),
    };
    if file_id.is_empty() || !file_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return not_found();
    }
    let Ok(ext) = validate_ext(ext) else {
        return not_found();
    };
    let key = crate::chunked::key_for(&file_id.to_ascii_lowercase());
    match state.engine.scoped(&caller.0).find(&key).await {
        Ok(Some(u)) if u.is_complete() && u.ext == ext => {
            serve_upload(&state, u, &method, &headers).await
        }
        Ok(_) => not_found(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// How long a download's presigned URL works (`--s3-redirect-downloads`).
const REDIRECT_TTL: std::time::Duration = std::time::Duration::from_secs(300);

async fn serve_upload(
    state: &AppState,
    u: Upload,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    let content_type = u
        .metadata
        .get("content-type")
        .map(String::as_str)
        .filter(|t| t.parse::<axum::http::HeaderValue>().is_ok())
        .unwrap_or_else(|| content_type_for_ext(&u.ext))
        .to_owned();
    // With --s3-redirect-downloads, a plain GET (a Range included: the store serves it) goes
    // to the object itself; HEAD and conditional requests are answered here, with ferry's
    // validators.
    if state.redirect_downloads
        && method == Method::GET
        && !headers.contains_key(axum::http::header::IF_NONE_MATCH)
        && !headers.contains_key(axum::http::header::IF_MODIFIED_SINCE)
        && !headers.contains_key(axum::http::header::IF_RANGE)
        && u.is_complete()
    {
        let disposition = ferry_core::http_range::content_disposition(
            "attachment",
            u.file_name.as_deref().unwrap_or(""),
        );
        if let Some(url) =
            state
                .engine
                .blobs()
                .presign(&u.id, REDIRECT_TTL, &content_type, &disposition)
            && let Ok(location) = axum::http::HeaderValue::from_str(&url)
        {
            let mut resp = StatusCode::TEMPORARY_REDIRECT.into_response();
            let h = resp.headers_mut();
            h.insert(axum::http::header::LOCATION, location);
            h.insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("private, no-store"),
            );
            return resp;
        }
    }
    let (blob, modified) = match state.engine.open_complete(&u).await {
        Ok(x) => x,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let len = blob.len();
    let d = Downloadable {
        blob,
        len,
        etag: u.etag().unwrap_or_else(|| format!("\"{}\"", u.id)),
        last_modified: modified,
        content_type,
        file_name: u.file_name.clone(),
    };
    respond(method, headers, d)
}
