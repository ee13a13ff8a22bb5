//! Finished files: `GET|HEAD /files/<id>` for any upload, `GET|HEAD /upload/<fileId><ext>` for
//! chunk-handshake uploads (SPEC §2.1, §3). Range semantics live in [`crate::download`].

use crate::AppState;
use crate::download::{Downloadable, content_type_for_ext, respond};
use crate::error::ApiError;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_core::upload::{Upload, UploadId, validate_ext};

fn not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no finished file at this address; check the URL the upload returned",
    )
    .into_response()
}

pub async fn by_id(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let Some(id) = UploadId::parse(&id) else {
        return not_found();
    };
    match state.engine.get(&id).await {
        Ok(u) if u.is_complete() => serve_upload(&state, u, &method, &headers).await,
        Ok(_) | Err(ferry_core::EngineError::NotFound) => not_found(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `<fileId><ext>`: the hex digest, then an optional validated extension.
pub async fn by_file_id(
    State(state): State<AppState>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
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
    match state.engine.find(&key).await {
        Ok(Some(u)) if u.is_complete() && u.ext == ext => {
            serve_upload(&state, u, &method, &headers).await
        }
        Ok(_) => not_found(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn serve_upload(
    state: &AppState,
    u: Upload,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    let (blob, modified) = match state.engine.open_complete(&u).await {
        Ok(x) => x,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let content_type = u
        .metadata
        .get("content-type")
        .map(String::as_str)
        .filter(|t| t.parse::<axum::http::HeaderValue>().is_ok())
        .unwrap_or_else(|| content_type_for_ext(&u.ext))
        .to_owned();
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
