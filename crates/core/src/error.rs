//! Engine errors: typed, each with a stable machine-readable code. Only the server maps them
//! to HTTP status codes; infrastructure failures keep their detail for logs, never for clients.

use crate::store::MetaError;
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no such upload")]
    NotFound,
    #[error("the upload is already complete")]
    AlreadyComplete,
    #[error("the upload holds {held} bytes; a write must start there, not at {got}")]
    OffsetMismatch { held: u64, got: u64 },
    #[error(
        "another request is writing the same bytes of this upload right now; retry when it ends"
    )]
    Busy,
    #[error("the write ends at byte {end}, past the declared length of {length} bytes")]
    PastLength { length: u64, end: u64 },
    #[error("the declared size of {size} bytes exceeds this server's limit of {max} bytes")]
    TooLarge { size: u64, max: u64 },
    #[error("the declared length {given} disagrees with the length {known} declared before")]
    LengthMismatch { known: u64, given: u64 },
    #[error("chunk id {0:?} is not part of this upload's handshake")]
    UnknownChunk(String),
    #[error("the chunk's bytes have digest {actual}, but its id says {expected}")]
    ChunkDigestMismatch { expected: String, actual: String },
    #[error("{0}")]
    ChunkSize(String),
    #[error(
        "the assembled file has digest {actual}, but the upload declared {expected}; it was discarded"
    )]
    FileDigestMismatch { expected: String, actual: String },
    #[error(
        "a newer request for this upload took over while this one was streaming; the upload holds {held} bytes, resume from there"
    )]
    Superseded { held: u64 },
    #[error("the request body ended early after {received} bytes: {reason}")]
    BodyInterrupted { received: u64, reason: String },
    #[error(
        "the body's {alg} checksum is {actual}, but the request's checksum header says {expected}; nothing of this request was stored"
    )]
    ChecksumMismatch {
        alg: crate::hash::HashAlg,
        expected: String,
        actual: String,
    },
    #[error("a final upload is assembled from its parts and cannot be written to")]
    FinalUpload,
    #[error("partial upload {0} does not exist")]
    UnknownPart(String),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "you have {max} unfinished uploads, the most this server allows at once; finish or delete one first"
    )]
    TooManyIncomplete { max: u64 },
    #[error(
        "this upload of {size} bytes would take your stored bytes past your quota of {max} (you store {stored}); delete files first"
    )]
    QuotaExceeded { stored: u64, max: u64, size: u64 },
    #[error(
        "the server is out of disk space; what was acknowledged is kept, try again once space is freed"
    )]
    OutOfSpace,
    /// A blocking hook (`--hook-url`) refused: `status` is the 4xx the receiver chose.
    #[error("{message}")]
    HookRejected { status: u16, message: String },
    /// A blocking hook could not be asked; nothing was changed.
    #[error("{}", hook_unavailable_message(.event))]
    HookUnavailable { event: crate::hooks::EventKind },
    #[error("storage failed")]
    Storage(#[from] io::Error),
    #[error("metadata store failed")]
    Meta(#[from] MetaError),
}

impl EngineError {
    /// Stable machine-readable code; clients may branch on it, so never rename one.
    pub fn code(&self) -> &'static str {
        match self {
            EngineError::NotFound => "not_found",
            EngineError::AlreadyComplete => "already_complete",
            EngineError::OffsetMismatch { .. } => "offset_mismatch",
            EngineError::Busy => "upload_busy",
            EngineError::PastLength { .. } => "past_declared_length",
            EngineError::TooLarge { .. } => "too_large",
            EngineError::LengthMismatch { .. } => "length_mismatch",
            EngineError::UnknownChunk(_) => "unknown_chunk",
            EngineError::ChunkDigestMismatch { .. } => "chunk_digest_mismatch",
            EngineError::ChunkSize(_) => "chunk_size_mismatch",
            EngineError::FileDigestMismatch { .. } => "file_digest_mismatch",
            EngineError::BodyInterrupted { .. } => "body_interrupted",
            EngineError::Superseded { .. } => "upload_superseded",
            EngineError::ChecksumMismatch { .. } => "checksum_mismatch",
            EngineError::FinalUpload => "final_upload_immutable",
            EngineError::UnknownPart(_) => "concat_part_unknown",
            EngineError::Invalid(_) => "invalid_request",
            EngineError::TooManyIncomplete { .. } => "too_many_incomplete_uploads",
            EngineError::QuotaExceeded { .. } => "storage_quota_exceeded",
            EngineError::OutOfSpace => "insufficient_storage",
            EngineError::HookRejected { .. } => "hook_rejected",
            EngineError::HookUnavailable { .. } => "hook_unavailable",
            EngineError::Storage(e) if is_out_of_space(e) => "insufficient_storage",
            EngineError::Storage(e) if is_unreachable(e) => "storage_unavailable",
            EngineError::Storage(_) => "storage_error",
            EngineError::Meta(MetaError::Unavailable(_)) => "metadata_unavailable",
            EngineError::Meta(_) => "metadata_error",
        }
    }

    /// True for failures of the server's own parts (not the client's fault).
    pub fn is_internal(&self) -> bool {
        matches!(self, EngineError::Storage(_) | EngineError::Meta(_)) && !self.is_out_of_space()
    }

    /// A backend cannot be reached right now (an object store timing out or refusing
    /// connections, the database restarting): `503` with `Retry-After`, as the same request
    /// may succeed shortly. Nothing unstored was acknowledged.
    pub fn is_unavailable(&self) -> bool {
        match self {
            EngineError::Storage(e) => is_unreachable(e),
            EngineError::Meta(MetaError::Unavailable(_)) => true,
            _ => false,
        }
    }

    /// The disk (or the quota of the filesystem) is full: `507`, not a server fault.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            EngineError::OutOfSpace => true,
            EngineError::Storage(e) => is_out_of_space(e),
            _ => false,
        }
    }
}

fn hook_unavailable_message(event: &crate::hooks::EventKind) -> String {
    match event {
        crate::hooks::EventKind::PreFinish => {
            "the server's upload hook (pre-finish) cannot be reached right now; every byte is kept \
             and the upload is finished once the hook answers; retry shortly"
                .to_owned()
        }
        e => format!(
            "the server's upload hook ({}) cannot be reached right now; nothing was changed, retry shortly",
            e.name()
        ),
    }
}

/// A store that did not answer in time or refused the connection.
fn is_unreachable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
    )
}

/// ENOSPC or EDQUOT, however the error reached us.
fn is_out_of_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}
