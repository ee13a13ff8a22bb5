//! Every machine-readable error code a client can get (the `"error"` field of an error body,
//! docs/PROTOCOL.md §7), defined once. Clients branch on these: never rename one. A code used
//! only by the server lives here too, so that this is the one list; `ALL` names every one and
//! a test checks it against §7 and that no code is spelt as a literal elsewhere.

// --- Uploads and their state (the engine) -------------------------------------------------

/// No such upload or finished file, or another tenant's; also `/metrics` moved elsewhere.
pub const NOT_FOUND: &str = "not_found";
/// A write to an upload that is already finished.
pub const ALREADY_COMPLETE: &str = "already_complete";
/// An append not at the held offset.
pub const OFFSET_MISMATCH: &str = "offset_mismatch";
/// Another request is writing the same bytes and did not finish within the wait.
pub const UPLOAD_BUSY: &str = "upload_busy";
/// A newer append for the same upload took over while this one streamed.
pub const UPLOAD_SUPERSEDED: &str = "upload_superseded";
/// A write that would end past the upload's declared length.
pub const PAST_DECLARED_LENGTH: &str = "past_declared_length";
/// A declared or reached size over the server's (or the token's) limit.
pub const TOO_LARGE: &str = "too_large";
/// A length other than the one declared before, or length indicators that disagree.
pub const LENGTH_MISMATCH: &str = "length_mismatch";
/// A request the engine refuses as inconsistent with the upload.
pub const INVALID_REQUEST: &str = "invalid_request";
/// The request body broke off before its end.
pub const BODY_INTERRUPTED: &str = "body_interrupted";
/// A write to a tus final (concatenated) upload.
pub const FINAL_UPLOAD_IMMUTABLE: &str = "final_upload_immutable";
/// `Upload-Concat: final` names something that is not one of the caller's uploads.
pub const CONCAT_PART_UNKNOWN: &str = "concat_part_unknown";

// --- Digests and checksums -----------------------------------------------------------------

/// The body does not have the digest its checksum header names; nothing of it was kept.
pub const CHECKSUM_MISMATCH: &str = "checksum_mismatch";
/// A tus `Upload-Checksum` algorithm other than md5, sha1, sha256.
pub const CHECKSUM_ALGORITHM_UNSUPPORTED: &str = "checksum_algorithm_unsupported";
/// A malformed `Upload-Checksum`, bad base64, or a digest of the wrong length.
pub const INVALID_CHECKSUM: &str = "invalid_checksum";
/// A chunk's bytes do not have the digest its id names.
pub const CHUNK_DIGEST_MISMATCH: &str = "chunk_digest_mismatch";
/// The finished chunk-handshake file does not have the digest `fileId` names.
pub const FILE_DIGEST_MISMATCH: &str = "file_digest_mismatch";

// --- Chunk handshake (§1) ------------------------------------------------------------------

/// No `fileId` in a handshake or chunk; no `X-File-Id` on a status request.
pub const FILE_ID_REQUIRED: &str = "file_id_required";
/// A `fileId` or `X-File-Id` of the wrong form.
pub const INVALID_FILE_ID: &str = "invalid_file_id";
/// A handshake body over its size limit.
pub const HANDSHAKE_TOO_LARGE: &str = "handshake_too_large";
/// A handshake body that is not the expected JSON object.
pub const MALFORMED_JSON: &str = "malformed_json";
/// A handshake `hashAlgorithm` other than `md5` or `sha256`.
pub const UNSUPPORTED_HASH: &str = "unsupported_hash";
/// A handshake `ext` not `""` or a dot with 1–16 letters/digits.
pub const INVALID_EXT: &str = "invalid_ext";
/// A handshake without `chunkIds`.
pub const CHUNK_IDS_REQUIRED: &str = "chunk_ids_required";
/// A handshake with more chunk ids, or a resumable file with more chunks, than allowed.
pub const TOO_MANY_CHUNKS: &str = "too_many_chunks";
/// A chunk id that is not a hex digest of the algorithm plus an optional suffix.
pub const INVALID_CHUNK_ID: &str = "invalid_chunk_id";
/// Handshake `size`, `chunkSize` and the number of `chunkIds` disagree.
pub const INCONSISTENT_LAYOUT: &str = "inconsistent_layout";
/// A multipart chunk without `chunkId`.
pub const CHUNK_ID_REQUIRED: &str = "chunk_id_required";
/// A chunk for a `fileId` without a handshake.
pub const HANDSHAKE_REQUIRED: &str = "handshake_required";
/// A chunk id that is not in the upload's handshake.
pub const UNKNOWN_CHUNK: &str = "unknown_chunk";
/// A chunk's length does not fit its position, the chunk size or the declared size.
pub const CHUNK_SIZE_MISMATCH: &str = "chunk_size_mismatch";

// --- Multipart bodies (§1, §8) -------------------------------------------------------------

/// A multipart body that cannot be read, or text fields that are not UTF-8.
pub const MALFORMED_MULTIPART: &str = "malformed_multipart";
/// A multipart text field over its length limit.
pub const FIELD_TOO_LONG: &str = "field_too_long";
/// A multipart chunk without a `file` (or `chunk`) part.
pub const FILE_REQUIRED: &str = "file_required";
/// A multipart `file` part with an unreadable or repeated `Content-Length`.
pub const INVALID_PART_LENGTH: &str = "invalid_part_length";
/// A multipart `file` part carries other than its declared `Content-Length`.
pub const PART_LENGTH_MISMATCH: &str = "part_length_mismatch";
/// `POST /api/upload` that is neither multipart nor has `X-File-Id`.
pub const UNKNOWN_UPLOAD_FORM: &str = "unknown_upload_form";

// --- Byte-offset resume (§2) ---------------------------------------------------------------

/// An offset or length header that is not digits below 2^63.
pub const INVALID_NUMBER: &str = "invalid_number";
/// A byte-offset `Content-Digest` whose `sha-256` member is malformed.
pub const INVALID_CONTENT_DIGEST: &str = "invalid_content_digest";
/// A byte-offset `Content-Range` that does not parse.
pub const INVALID_CONTENT_RANGE: &str = "invalid_content_range";
/// A `Content-Range` whose last byte is at or past its own total.
pub const RANGE_PAST_TOTAL: &str = "range_past_total";
/// A write without an offset (`X-Start-Byte`, `Content-Range`, `Upload-Offset`).
pub const OFFSET_REQUIRED: &str = "offset_required";

// --- tus (§3) and IETF (§4) ----------------------------------------------------------------

/// A tus request with `Tus-Resumable` missing or not `1.0.0`.
pub const UNSUPPORTED_VERSION: &str = "unsupported_version";
/// `Upload-Draft-Interop-Version` outside the supported range.
pub const UNSUPPORTED_INTEROP_VERSION: &str = "unsupported_interop_version";
/// A method `/files/` or `/files/<id>` does not serve.
pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
/// `X-HTTP-Method-Override` is not an upper-case method name.
pub const INVALID_METHOD_OVERRIDE: &str = "invalid_method_override";
/// A tus header that is not plain ASCII; a malformed IETF structured field.
pub const INVALID_HEADER: &str = "invalid_header";
/// An append without the dialect's media type.
pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
/// tus creation with both `Upload-Length` and `Upload-Defer-Length`.
pub const LENGTH_CONFLICT: &str = "length_conflict";
/// tus creation with neither `Upload-Length` nor `Upload-Defer-Length`.
pub const LENGTH_REQUIRED: &str = "length_required";
/// `Upload-Defer-Length` other than `1`.
pub const INVALID_DEFER_LENGTH: &str = "invalid_defer_length";
/// A malformed tus `Upload-Metadata`.
pub const INVALID_METADATA: &str = "invalid_metadata";
/// `Upload-Metadata` over its size limit.
pub const METADATA_TOO_LARGE: &str = "metadata_too_large";
/// `Upload-Concat` is neither `partial` nor `final;` with at least one URL.
pub const INVALID_CONCAT: &str = "invalid_concat";
/// `Upload-Concat` on a server whose storage cannot concatenate.
pub const CONCATENATION_UNSUPPORTED: &str = "concatenation_unsupported";
/// `Upload-Concat: final` together with a length header.
pub const FINAL_LENGTH_GIVEN: &str = "final_length_given";
/// An IETF creation without `Upload-Complete` (`Upload-Incomplete` at interop 3).
pub const COMPLETENESS_REQUIRED: &str = "completeness_required";

// --- resumable.js, flow.js, simple-uploader (§8) -------------------------------------------

/// A chunk field under none of the libraries' names.
pub const CHUNK_FIELD_MISSING: &str = "chunk_field_missing";
/// A chunk field that is not a whole number, or a `chunkSize` of 0.
pub const INVALID_CHUNK_FIELD: &str = "invalid_chunk_field";
/// An identifier too long or with control characters.
pub const INVALID_IDENTIFIER: &str = "invalid_identifier";
/// A file name with a path separator, or too long.
pub const INVALID_FILE_NAME: &str = "invalid_file_name";
/// `totalChunks` fits neither chunking rule.
pub const CHUNK_COUNT_MISMATCH: &str = "chunk_count_mismatch";
/// `chunkNumber` is 0 or past `totalChunks`.
pub const CHUNK_NUMBER_OUT_OF_RANGE: &str = "chunk_number_out_of_range";
/// The identifier is an upload of another size, chunk size or chunk count.
pub const CHUNK_LAYOUT_CONFLICT: &str = "chunk_layout_conflict";
/// The file part ended before `currentChunkSize` bytes.
pub const CHUNK_INCOMPLETE: &str = "chunk_incomplete";

// --- Files API ------------------------------------------------------------------------------

/// A files listing `limit` that is not a whole number in range.
pub const INVALID_LIMIT: &str = "invalid_limit";
/// A files listing `cursor` the server did not hand out.
pub const INVALID_CURSOR: &str = "invalid_cursor";
/// Without authentication, a files-API request from another origin (a web page elsewhere).
pub const CROSS_ORIGIN_FORBIDDEN: &str = "cross_origin_forbidden";

// --- Authentication and signed links -------------------------------------------------------

/// Authentication is on and the request has no bearer token.
pub const UNAUTHORIZED: &str = "unauthorized";
/// A bearer token no configured token or key accepts.
pub const INVALID_TOKEN: &str = "invalid_token";
/// A JWT past its `exp`.
pub const TOKEN_EXPIRED: &str = "token_expired";
/// A signed link past its `expires`.
pub const LINK_EXPIRED: &str = "link_expired";
/// A signed link whose signature does not verify for its path.
pub const LINK_INVALID: &str = "link_invalid";

// --- Request hygiene and connections (§0) --------------------------------------------------

/// Both `Content-Length` and `Transfer-Encoding`.
pub const CONFLICTING_LENGTH: &str = "conflicting_length";
/// An upload-control header sent more than once.
pub const DUPLICATE_HEADER: &str = "duplicate_header";
/// Over `--max-connections`, or out of file descriptors.
pub const SERVER_BUSY: &str = "server_busy";

// --- Limits --------------------------------------------------------------------------------

/// The tenant is at `--max-incomplete-uploads`.
pub const TOO_MANY_INCOMPLETE_UPLOADS: &str = "too_many_incomplete_uploads";
/// The upload would take the tenant past `--max-stored-bytes`.
pub const STORAGE_QUOTA_EXCEEDED: &str = "storage_quota_exceeded";
/// The disk is full, or the store is below `--min-free-space`.
pub const INSUFFICIENT_STORAGE: &str = "insufficient_storage";

// --- Hooks (§10) ---------------------------------------------------------------------------

/// A blocking hook refused the request.
pub const HOOK_REJECTED: &str = "hook_rejected";
/// A blocking hook could not be asked.
pub const HOOK_UNAVAILABLE: &str = "hook_unavailable";

// --- Server failures -----------------------------------------------------------------------

/// The storage failed (detail in the server log).
pub const STORAGE_ERROR: &str = "storage_error";
/// The object store cannot be reached right now.
pub const STORAGE_UNAVAILABLE: &str = "storage_unavailable";
/// The database failed (detail in the server log).
pub const METADATA_ERROR: &str = "metadata_error";
/// The database cannot be reached right now.
pub const METADATA_UNAVAILABLE: &str = "metadata_unavailable";

/// Every code above, once each.
pub const ALL: &[&str] = &[
    NOT_FOUND,
    ALREADY_COMPLETE,
    OFFSET_MISMATCH,
    UPLOAD_BUSY,
    UPLOAD_SUPERSEDED,
    PAST_DECLARED_LENGTH,
    TOO_LARGE,
    LENGTH_MISMATCH,
    INVALID_REQUEST,
    BODY_INTERRUPTED,
    FINAL_UPLOAD_IMMUTABLE,
    CONCAT_PART_UNKNOWN,
    CHECKSUM_MISMATCH,
    CHECKSUM_ALGORITHM_UNSUPPORTED,
    INVALID_CHECKSUM,
    CHUNK_DIGEST_MISMATCH,
    FILE_DIGEST_MISMATCH,
    FILE_ID_REQUIRED,
    INVALID_FILE_ID,
    HANDSHAKE_TOO_LARGE,
    MALFORMED_JSON,
    UNSUPPORTED_HASH,
    INVALID_EXT,
    CHUNK_IDS_REQUIRED,
    TOO_MANY_CHUNKS,
    INVALID_CHUNK_ID,
    INCONSISTENT_LAYOUT,
    CHUNK_ID_REQUIRED,
    HANDSHAKE_REQUIRED,
    UNKNOWN_CHUNK,
    CHUNK_SIZE_MISMATCH,
    MALFORMED_MULTIPART,
    FIELD_TOO_LONG,
    FILE_REQUIRED,
    INVALID_PART_LENGTH,
    PART_LENGTH_MISMATCH,
    UNKNOWN_UPLOAD_FORM,
    INVALID_NUMBER,
    INVALID_CONTENT_DIGEST,
    INVALID_CONTENT_RANGE,
    RANGE_PAST_TOTAL,
    OFFSET_REQUIRED,
    UNSUPPORTED_VERSION,
    UNSUPPORTED_INTEROP_VERSION,
    METHOD_NOT_ALLOWED,
    INVALID_METHOD_OVERRIDE,
    INVALID_HEADER,
    UNSUPPORTED_MEDIA_TYPE,
    LENGTH_CONFLICT,
    LENGTH_REQUIRED,
    INVALID_DEFER_LENGTH,
    INVALID_METADATA,
    METADATA_TOO_LARGE,
    INVALID_CONCAT,
    CONCATENATION_UNSUPPORTED,
    FINAL_LENGTH_GIVEN,
    COMPLETENESS_REQUIRED,
    CHUNK_FIELD_MISSING,
    INVALID_CHUNK_FIELD,
    INVALID_IDENTIFIER,
    INVALID_FILE_NAME,
    CHUNK_COUNT_MISMATCH,
    CHUNK_NUMBER_OUT_OF_RANGE,
    CHUNK_LAYOUT_CONFLICT,
    CHUNK_INCOMPLETE,
    INVALID_LIMIT,
    INVALID_CURSOR,
    CROSS_ORIGIN_FORBIDDEN,
    UNAUTHORIZED,
    INVALID_TOKEN,
    TOKEN_EXPIRED,
    LINK_EXPIRED,
    LINK_INVALID,
    CONFLICTING_LENGTH,
    DUPLICATE_HEADER,
    SERVER_BUSY,
    TOO_MANY_INCOMPLETE_UPLOADS,
    STORAGE_QUOTA_EXCEEDED,
    INSUFFICIENT_STORAGE,
    HOOK_REJECTED,
    HOOK_UNAVAILABLE,
    STORAGE_ERROR,
    STORAGE_UNAVAILABLE,
    METADATA_ERROR,
    METADATA_UNAVAILABLE,
];
