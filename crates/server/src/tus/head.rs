//! `HEAD /files/<id>`: tus "Core Protocol" offset retrieval, with what "Creation",
//! "creation-defer-length", "Expiration" and "Concatenation" add to it.

use super::{
    META_RAW_CONCAT, META_RAW_METADATA, TusError, UPLOAD_CONCAT, UPLOAD_DEFER_LENGTH,
    UPLOAD_LENGTH, UPLOAD_METADATA, UPLOAD_OFFSET, add_expires,
};
use crate::AppState;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_core::engine::Actor;
use ferry_core::tus::UploadConcat;
use ferry_core::upload::{Concat, UploadId};

pub async fn handle(state: &AppState, actor: &Actor, id: &UploadId) -> Response {
    match head(state, actor, id).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn head(state: &AppState, actor: &Actor, id: &UploadId) -> Result<Response, TusError> {
    // An unknown, terminated or expired upload is 404 without Upload-Offset ("Core
    // Protocol", HEAD). Expired ids are not remembered, so 410 is never answered.
    // HEAD is safe: it reports the durable offset and never stops a PATCH in flight (a
    // progress monitor may ask while the client uploads). A client that resumes sends a new
    // PATCH, and that is what preempts a stale one (see patch.rs).
    let u = state.engine.scoped(actor).get(id).await?;
    // The spec's HEAD example answers 200 OK, as tusd does; tus clients accept any 2xx.
    let mut resp = StatusCode::OK.into_response();
    let h = resp.headers_mut();
    // "The Server MUST prevent the client and/or proxies from caching the response."
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let is_final = matches!(u.concat, Some(Concat::Final { .. }));
    // "Concatenation": a final upload's HEAD SHOULD NOT carry Upload-Offset until the
    // concatenation has finished; then offset and length are equal. Every other upload
    // always reports its offset, even 0 or complete ("Core Protocol", HEAD).
    if !is_final || u.is_complete() {
        h.insert(UPLOAD_OFFSET, u.offset().into());
    }
    match u.length {
        Some(len) => {
            h.insert(UPLOAD_LENGTH, len.into());
        }
        // "creation-defer-length": as long as the length is not known, every HEAD says so.
        // A final whose parts have deferred lengths has no length to calculate yet, which
        // is not a deferral the client could resolve, so it gets neither header.
        None if !is_final => {
            h.insert(UPLOAD_DEFER_LENGTH, HeaderValue::from_static("1"));
        }
        None => {}
    }
    // "Creation": Upload-Metadata as the client specified it at creation.
    if let Some(v) = u
        .metadata
        .get(META_RAW_METADATA)
        .and_then(|m| HeaderValue::from_str(m).ok())
    {
        h.insert(UPLOAD_METADATA, v);
    }
    // "Concatenation": HEAD of a partial or final upload includes Upload-Concat as received.
    let concat = match &u.concat {
        Some(Concat::Partial { .. }) => Some(UploadConcat::Partial.to_string()),
        Some(Concat::Final { parts }) => {
            Some(u.metadata.get(META_RAW_CONCAT).cloned().unwrap_or_else(|| {
                UploadConcat::Final(parts.iter().map(|p| format!("/files/{p}")).collect())
                    .to_string()
            }))
        }
        None => None,
    };
    if let Some(v) = concat.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(UPLOAD_CONCAT, v);
    }
    add_expires(&mut resp, state, &u);
    Ok(resp)
}
