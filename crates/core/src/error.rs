//! Engine errors: typed, each with a stable machine-readable code. Only the server maps them
//! to HTTP status codes; infrastructure failures keep their detail for logs, never for clients.

use crate::codes;
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
            EngineError::NotFound => codes::NOT_FOUND,
            EngineError::AlreadyComplete => codes::ALREADY_COMPLETE,
            EngineError::OffsetMismatch { .. } => codes::OFFSET_MISMATCH,
            EngineError::Busy => codes::UPLOAD_BUSY,
            EngineError::PastLength { .. } => codes::PAST_DECLARED_LENGTH,
            EngineError::TooLarge { .. } => codes::TOO_LARGE,
            EngineError::LengthMismatch { .. } => codes::LENGTH_MISMATCH,
            EngineError::UnknownChunk(_) => codes::UNKNOWN_CHUNK,
            EngineError::ChunkDigestMismatch { .. } => codes::CHUNK_DIGEST_MISMATCH,
            EngineError::ChunkSize(_) => codes::CHUNK_SIZE_MISMATCH,
            EngineError::FileDigestMismatch { .. } => codes::FILE_DIGEST_MISMATCH,
            EngineError::BodyInterrupted { .. } => codes::BODY_INTERRUPTED,
            EngineError::Superseded { .. } => codes::UPLOAD_SUPERSEDED,
            EngineError::ChecksumMismatch { .. } => codes::CHECKSUM_MISMATCH,
            EngineError::FinalUpload => codes::FINAL_UPLOAD_IMMUTABLE,
            EngineError::UnknownPart(_) => codes::CONCAT_PART_UNKNOWN,
            EngineError::Invalid(_) => codes::INVALID_REQUEST,
            EngineError::TooManyIncomplete { .. } => codes::TOO_MANY_INCOMPLETE_UPLOADS,
            EngineError::QuotaExceeded { .. } => codes::STORAGE_QUOTA_EXCEEDED,
            EngineError::OutOfSpace => codes::INSUFFICIENT_STORAGE,
            EngineError::HookRejected { .. } => codes::HOOK_REJECTED,
            EngineError::HookUnavailable { .. } => codes::HOOK_UNAVAILABLE,
            EngineError::Storage(e) if is_out_of_space(e) => codes::INSUFFICIENT_STORAGE,
            EngineError::Storage(e) if is_unreachable(e) => codes::STORAGE_UNAVAILABLE,
            EngineError::Storage(_) => codes::STORAGE_ERROR,
            EngineError::Meta(MetaError::Unavailable(_)) => codes::METADATA_UNAVAILABLE,
            EngineError::Meta(_) => codes::METADATA_ERROR,
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
