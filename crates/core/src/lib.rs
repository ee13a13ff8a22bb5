//! ferry-core: the upload engine and everything it needs that is not HTTP, SQL or S3.
//!
//! - [`ranges`]: sets of held byte ranges.
//! - [`hash`]: digests whose progress can be saved and restored across restarts.
//! - [`http_range`]: RFC 9110 `Range` / `Content-Range` codecs shared by server and client.
//! - [`upload`]: the upload record the metadata store persists.
//! - [`store`]: the storage traits (`BlobStore`, `MetaStore`) backends implement.
//! - [`parts`]: how a part-based store (S3 multipart) cuts an upload into parts.
//! - [`coord`]: leases and preemption across nodes sharing one database.
//! - [`tus`]: tus 1.0.0 header codecs (`Upload-Metadata`, `Upload-Checksum`, `Upload-Concat`).
//! - [`engine`]: the upload engine every protocol front drives.
//! - [`codes`]: every machine-readable error code clients see, defined once.

pub mod codes;
pub mod coord;
pub mod crash;
pub mod engine;
pub mod error;
pub mod handshake;
pub mod hash;
pub mod hooks;
pub mod http_range;
pub mod lock;
pub mod parts;
pub mod ranges;
pub mod store;
pub mod tenant;
pub mod tus;
pub mod upload;

pub use engine::Engine;
pub use error::EngineError;
