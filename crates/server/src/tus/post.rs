//! `POST /files/`: tus "Creation", "Creation With Upload", "creation-defer-length" and the
//! creation side of "Concatenation".

use super::{
    META_RAW_CONCAT, META_RAW_METADATA, TusError, UPLOAD_CONCAT, UPLOAD_DEFER_LENGTH,
    UPLOAD_LENGTH, UPLOAD_METADATA, UPLOAD_OFFSET, add_expires, header_checksum, header_number,
    header_text, is_offset_octet_stream, upload_url,
};
use crate::AppState;
use crate::error::ApiError;
use axum::body::{Body, HttpBody};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_core::EngineError;
use ferry_core::codes;
use ferry_core::engine::Actor;
use ferry_core::engine::{BodyCheck, NewUpload, WriteMode};
use ferry_core::tus::{Metadata, UploadConcat, upload_id_from_url};
use ferry_core::upload::{Concat, Dialect, UploadId, clean_file_name, validate_ext};

/// Longest `Upload-Metadata` accepted. It is stored with the upload and echoed by every HEAD,
/// so it is bounded like any other client input (SPEC §6); names and types fit many times.
const MAX_METADATA: usize = 16 * 1024;

pub async fn handle(state: &AppState, actor: &Actor, headers: &HeaderMap, body: Body) -> Response {
    match create(state, actor, headers, body).await {
        Ok(r) | Err(r) => r,
    }
}

/// The length a creation request declares.
enum Length {
    Known(u64),
    Deferred,
    /// A final upload: the sum of its parts ("Concatenation").
    OfParts(Vec<UploadId>),
}

async fn create(
    state: &AppState,
    actor: &Actor,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Response> {
    let fail = |e: TusError| e.into_response();
    let concat = parse_concat(state, headers).map_err(fail)?;
    let length = parse_length(headers, concat.as_ref()).map_err(fail)?;
    let new = new_upload(headers, concat.as_ref(), &length).map_err(fail)?;

    // tus "Creation With Upload": a body is part of the request only with this media type;
    // then the rules of PATCH apply to it (including "Checksum"). Everything that can be
    // refused is refused before the upload exists. A final upload is assembled from its
    // parts, so a body for it is refused like a PATCH to it would be ("Concatenation", 403).
    let with_upload = is_offset_octet_stream(headers);
    let has_body = body.size_hint().exact() != Some(0);
    if with_upload && has_body && matches!(length, Length::OfParts(_)) {
        return Err(fail(EngineError::FinalUpload.into()));
    }
    let with_upload = with_upload && !matches!(length, Length::OfParts(_));
    let check = if with_upload {
        header_checksum(headers).map_err(fail)?
    } else {
        None
    };
    let body_len = header_number(headers, &header::CONTENT_LENGTH).map_err(fail)?;
    if let (true, Some(n), Length::Known(l)) = (with_upload, body_len, &length)
        && n > *l
    {
        return Err(fail(EngineError::PastLength { length: *l, end: n }.into()));
    }

    let mut upload = match length {
        Length::OfParts(parts) => state.engine.scoped(actor).create_final(new, parts).await,
        _ => state.engine.scoped(actor).create(new).await.map(|(u, _)| u),
    }
    .map_err(|e| fail(e.into()))?;
    let location = upload_url(state, headers, &upload.id);

    // An empty file is complete the moment it is created; its empty body has nothing to add
    // (tus-js-client sends one with `uploadDataDuringCreation`).
    if with_upload && (has_body || !upload.is_complete()) {
        let check = check.map(|c| BodyCheck {
            alg: c.alg,
            digest: c.digest,
        });
        let written = state
            .engine
            .scoped(actor)
            .write_checked(
                &upload.id,
                WriteMode::Append { offset: 0 },
                check,
                body.into_data_stream(),
            )
            .await;
        upload = match written {
            Ok(out) => out.upload,
            // The upload exists and keeps what arrived: answer as a creation, so a client
            // still listening learns the URL and resumes from the offset it is told.
            Err(EngineError::BodyInterrupted { .. }) => state
                .engine
                .scoped(actor)
                .get(&upload.id)
                .await
                .map_err(|e| fail(e.into()))?,
            Err(e) => {
                // The upload exists but the body was refused (checksum mismatch, …): the
                // error says why, and Location still tells where to resume or terminate.
                let mut resp = fail(e.into());
                insert_location(&mut resp, &location);
                return Err(resp);
            }
        };
    }

    let mut resp = StatusCode::CREATED.into_response();
    insert_location(&mut resp, &location);
    if with_upload {
        resp.headers_mut()
            .insert(UPLOAD_OFFSET, upload.offset().into());
    }
    add_expires(&mut resp, state, &upload);
    Ok(resp)
}

fn insert_location(resp: &mut Response, location: &str) {
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(id) = upload_id_from_url(location) {
        resp.extensions_mut().insert(crate::metrics::UploadRef(id));
    }
}

/// tus "Concatenation" / Upload-Concat. Refused (400) when the store cannot concatenate,
/// since the extension is then not advertised.
fn parse_concat(state: &AppState, headers: &HeaderMap) -> Result<Option<UploadConcat>, TusError> {
    let Some(text) = header_text(headers, &UPLOAD_CONCAT)? else {
        return Ok(None);
    };
    if !state.engine.blobs().can_concatenate() {
        return Err(ApiError::bad_request(
            codes::CONCATENATION_UNSUPPORTED,
            "this server's storage cannot concatenate uploads; send the file as one upload",
        )
        .into());
    }
    UploadConcat::parse(text)
        .map(Some)
        .map_err(|e| ApiError::bad_request(codes::INVALID_CONCAT, e.to_string()).into())
}

/// tus "Creation" / POST: the request MUST include `Upload-Length` or `Upload-Defer-Length: 1`
/// (one of them: both is a contradiction, so it is refused too), and any other defer value
/// gets 400. A final upload MUST NOT include `Upload-Length` ("Concatenation"): its length
/// is the sum of its parts.
fn parse_length(headers: &HeaderMap, concat: Option<&UploadConcat>) -> Result<Length, TusError> {
    let length = header_number(headers, &UPLOAD_LENGTH)?;
    let deferred = match header_text(headers, &UPLOAD_DEFER_LENGTH)? {
        None => false,
        Some("1") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                codes::INVALID_DEFER_LENGTH,
                format!("Upload-Defer-Length must be 1, not {other:?}"),
            )
            .into());
        }
    };
    if let Some(UploadConcat::Final(urls)) = concat {
        if length.is_some() || deferred {
            return Err(ApiError::bad_request(
                codes::FINAL_LENGTH_GIVEN,
                "a final upload's length is the sum of its parts: send no Upload-Length or Upload-Defer-Length with Upload-Concat: final",
            )
            .into());
        }
        let ids = urls
            .iter()
            .map(|url| {
                upload_id_from_url(url).ok_or_else(|| {
                    TusError::from(ApiError::bad_request(
                        codes::CONCAT_PART_UNKNOWN,
                        format!(
                            "Upload-Concat names {url:?}, which is not an upload URL of this server"
                        ),
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Length::OfParts(ids));
    }
    match (length, deferred) {
        (Some(l), false) => Ok(Length::Known(l)),
        (None, true) => Ok(Length::Deferred),
        (Some(_), true) => Err(ApiError::bad_request(
            codes::LENGTH_CONFLICT,
            "send either Upload-Length or Upload-Defer-Length: 1, not both",
        )
        .into()),
        (None, false) => Err(ApiError::bad_request(
            codes::LENGTH_REQUIRED,
            "send Upload-Length with the file's size in bytes, or Upload-Defer-Length: 1 if it is not known yet",
        )
        .into()),
    }
}

/// The engine's creation request: length, role in a concatenation, and what the metadata
/// says about the file.
fn new_upload(
    headers: &HeaderMap,
    concat: Option<&UploadConcat>,
    length: &Length,
) -> Result<NewUpload, TusError> {
    let mut new = NewUpload::new(Dialect::TUS);
    new.length = match length {
        Length::Known(l) => Some(*l),
        _ => None,
    };
    match concat {
        Some(UploadConcat::Partial) => new.concat = Some(Concat::Partial { finals: vec![] }),
        Some(UploadConcat::Final(_)) => {
            // HEAD answers with Upload-Concat "as received in the upload creation request".
            if let Some(text) = header_text(headers, &UPLOAD_CONCAT)? {
                new.metadata
                    .insert(META_RAW_CONCAT.to_owned(), text.to_owned());
            }
        }
        None => {}
    }
    if let Some(text) = header_text(headers, &UPLOAD_METADATA)?
        && !text.is_empty()
    {
        if text.len() > MAX_METADATA {
            return Err(ApiError::bad_request(
                codes::METADATA_TOO_LARGE,
                format!("Upload-Metadata is limited to {MAX_METADATA} bytes"),
            )
            .into());
        }
        let meta = Metadata::parse(text)
            .map_err(|e| ApiError::bad_request(codes::INVALID_METADATA, e.to_string()))?;
        // tus-js-client and Uppy send `filename`/`filetype`; other clients `name`/`type`.
        // The name is for display and Content-Disposition only; it never becomes a path.
        new.file_name = meta
            .get_str("filename")
            .or_else(|| meta.get_str("name"))
            .and_then(clean_file_name);
        new.ext = new
            .file_name
            .as_deref()
            .and_then(|n| n.rfind('.').map(|i| &n[i..]))
            .and_then(|e| validate_ext(e).ok())
            .unwrap_or_default();
        // The type is served back as Content-Type on download, so only a value that is a
        // valid header value is kept (tus "Creation": sanitize metadata before using it in
        // headers, to avoid header smuggling).
        if let Some(t) = meta
            .get_str("filetype")
            .or_else(|| meta.get_str("type"))
            .map(str::trim)
            .filter(|t| !t.is_empty() && HeaderValue::from_str(t).is_ok())
        {
            new.metadata.insert("content-type".to_owned(), t.to_owned());
        }
        // HEAD answers with the header "as specified by the Client during the creation".
        new.metadata
            .insert(META_RAW_METADATA.to_owned(), text.to_owned());
    }
    Ok(new)
}
