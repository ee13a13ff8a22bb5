//! `PATCH /files/<id>`: tus "Core Protocol" append, with "Checksum", "creation-defer-length"
//! (`Upload-Length` on PATCH), "Expiration" and the "Concatenation" rule for finals.

use super::{
    TusError, UPLOAD_LENGTH, UPLOAD_OFFSET, add_expires, header_checksum, header_number,
    is_offset_octet_stream,
};
use crate::AppState;
use crate::error::ApiError;
use axum::body::{Body, HttpBody};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_core::codes;
use ferry_core::engine::Actor;
use ferry_core::engine::BodyCheck;
use ferry_core::tenant::AppendRequest;
use ferry_core::upload::{Upload, UploadId};

pub async fn handle(
    state: &AppState,
    actor: &Actor,
    id: &UploadId,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    match append(state, actor, id, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn append(
    state: &AppState,
    actor: &Actor,
    id: &UploadId,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, TusError> {
    // "All PATCH requests MUST use Content-Type: application/offset+octet-stream, otherwise
    // the server SHOULD return a 415 Unsupported Media Type status."
    if !is_offset_octet_stream(headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::UNSUPPORTED_MEDIA_TYPE,
            "a tus PATCH body must be sent as Content-Type: application/offset+octet-stream",
        )
        .into());
    }
    let offset = header_number(headers, &UPLOAD_OFFSET)?.ok_or_else(|| {
        ApiError::bad_request(
            codes::OFFSET_REQUIRED,
            "send Upload-Offset: the offset HEAD reports for this upload",
        )
    })?;
    let new_length = header_number(headers, &UPLOAD_LENGTH)?;
    // "Checksum": an unsupported algorithm is 400, known before any byte is read.
    let check = header_checksum(headers)?.map(|c| BodyCheck {
        alg: c.alg,
        digest: c.digest,
    });
    let body_len = header_number(headers, &header::CONTENT_LENGTH)?;

    // A new PATCH supersedes one still streaming (tus-js-client re-sends after a network
    // error): the old one stops and keeps what arrived; if that moves the offset past this
    // request's Upload-Offset, the write's 409 sends the client to HEAD for the new one.
    // "Concatenation": PATCH to a final upload is 403 and changes nothing.
    // "creation-defer-length": once the length is known, the client sets Upload-Length on
    // the next PATCH, and it must never change (409); it is applied only when the offset
    // matches, since a PATCH answered 409 must not modify the upload ("Core Protocol").
    // An empty PATCH at the end of a finished upload (a retry of the request that finished
    // it) changes nothing and is answered as it would have been the first time.
    let out = state
        .engine
        .scoped(actor)
        .append(
            id,
            AppendRequest {
                offset,
                length: new_length,
                body_len: body_len.or(body.size_hint().exact()),
                check,
            },
            body.into_data_stream(),
        )
        .await?;
    Ok(no_content(state, out.upload()))
}

/// "The Server MUST acknowledge successful PATCH requests with the 204 No Content status"
/// and the new `Upload-Offset`; "Expiration": `Upload-Expires` in every PATCH response of an
/// upload that is going to expire.
fn no_content(state: &AppState, u: &Upload) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(UPLOAD_OFFSET, u.offset().into());
    add_expires(&mut resp, state, u);
    resp
}
