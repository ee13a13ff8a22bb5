//! Engine errors → HTTP. This is the only place that chooses status codes; each dialect then
//! renders the error in its own body format (the chunk dialect's `{code,msg,data}` envelope,
//! JSON problem objects elsewhere).

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_core::EngineError;
use ferry_core::handshake::Envelope;
use serde_json::json;

/// An error on its way to a client: a status, a stable code and a sentence.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Bytes the upload holds, for offset errors (sent as `X-Upload-Offset` and in the body).
    pub offset: Option<u64>,
    /// Seconds to wait before retrying (`Retry-After`), for limits that pass with time.
    pub retry_after: Option<u64>,
}

/// `Retry-After` for a tenant at its limit of unfinished uploads: long enough that a client
/// does not hammer, short enough that one finishing upload frees the slot soon.
const RETRY_AFTER_LIMIT: u64 = 30;
/// `Retry-After` when a backend (object store, database) cannot be reached: clients come
/// back about when a restart or a network blip is over.
const RETRY_AFTER_UNAVAILABLE: u64 = 5;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            offset: None,
            retry_after: None,
        }
    }

    /// Adds the status-specific headers (`X-Upload-Offset`, `Retry-After`) to a rendering.
    fn decorate(&self, resp: &mut Response) {
        if self.status.as_u16() == 460 {
            // Not a registered status: without this hyper writes no reason phrase at all.
            resp.extensions_mut()
                .insert(hyper::ext::ReasonPhrase::from_static(b"Checksum Mismatch"));
        }
        if let Some(o) = self.offset {
            resp.headers_mut()
                .insert("x-upload-offset", HeaderValue::from(o));
        }
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(s));
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Renders as the chunk dialect's envelope: `code` is the HTTP status (SPEC §2.1).
    pub fn into_envelope(self) -> Response {
        let status = self.status;
        let body = Envelope::<Option<()>> {
            code: status.as_u16(),
            msg: self.message.clone(),
            data: None,
            error: Some(self.code.to_owned()),
        };
        let mut resp = (status, Json(body)).into_response();
        self.decorate(&mut resp);
        resp
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::NotFound => StatusCode::NOT_FOUND,
            EngineError::AlreadyComplete => StatusCode::CONFLICT,
            EngineError::OffsetMismatch { .. } => StatusCode::CONFLICT,
            EngineError::Busy => StatusCode::CONFLICT,
            EngineError::PastLength { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            EngineError::LengthMismatch { .. } => StatusCode::CONFLICT,
            EngineError::UnknownChunk(_) => StatusCode::CONFLICT,
            EngineError::ChunkDigestMismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            EngineError::ChunkSize(_) => StatusCode::UNPROCESSABLE_ENTITY,
            EngineError::FileDigestMismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            EngineError::BodyInterrupted { .. } => StatusCode::BAD_REQUEST,
            EngineError::Superseded { .. } => StatusCode::CONFLICT,
            // tus checksum extension: 460 Checksum Mismatch.
            EngineError::ChecksumMismatch { .. } => {
                StatusCode::from_u16(460).expect("460 is a valid status code")
            }
            EngineError::FinalUpload => StatusCode::FORBIDDEN,
            EngineError::UnknownPart(_) => StatusCode::BAD_REQUEST,
            EngineError::Invalid(_) => StatusCode::BAD_REQUEST,
            EngineError::TooManyIncomplete { .. } => StatusCode::TOO_MANY_REQUESTS,
            EngineError::QuotaExceeded { .. } => StatusCode::INSUFFICIENT_STORAGE,
            EngineError::OutOfSpace => StatusCode::INSUFFICIENT_STORAGE,
            // The receiver chose the status; only a client error makes sense for a refusal.
            EngineError::HookRejected { status, .. } => StatusCode::from_u16(*status)
                .ok()
                .filter(StatusCode::is_client_error)
                .unwrap_or(StatusCode::FORBIDDEN),
            EngineError::HookUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ if e.is_out_of_space() => StatusCode::INSUFFICIENT_STORAGE,
            _ if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Storage(_) | EngineError::Meta(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        // Infrastructure details go to the log, never to the client.
        let message = if e.is_out_of_space() {
            tracing::warn!(error = %DisplayChain(&e), "out of disk space");
            EngineError::OutOfSpace.to_string()
        } else if e.is_unavailable() {
            tracing::warn!(error = %DisplayChain(&e), "a backend is unreachable");
            "a storage backend cannot be reached right now; what was acknowledged is kept, retry shortly".to_owned()
        } else if e.is_internal() {
            tracing::error!(error = %DisplayChain(&e), "internal error");
            "the server could not store the data; please retry later".to_owned()
        } else {
            e.to_string()
        };
        let offset = match &e {
            EngineError::OffsetMismatch { held, .. } | EngineError::Superseded { held } => {
                Some(*held)
            }
            _ => None,
        };
        let retry_after = if matches!(e, EngineError::TooManyIncomplete { .. }) {
            Some(RETRY_AFTER_LIMIT)
        } else if e.is_unavailable() || matches!(e, EngineError::HookUnavailable { .. }) {
            Some(RETRY_AFTER_UNAVAILABLE)
        } else {
            None
        };
        ApiError {
            status,
            code: e.code(),
            message,
            offset,
            retry_after,
        }
    }
}

/// Plain JSON rendering for the non-envelope fronts:
/// `{"error": "<code>", "message": "<sentence>"[, "offset": N]}`.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let Some(o) = self.offset {
            body["offset"] = json!(o);
        }
        let mut resp = (self.status, Json(body)).into_response();
        self.decorate(&mut resp);
        resp
    }
}

/// An error and its sources as one line (`storage failed: No space left on device (os error
/// 28)`), for logs: plain text in JSON logs rather than a `Debug` dump.
struct DisplayChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
