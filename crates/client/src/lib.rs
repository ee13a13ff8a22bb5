//! ferry_client: resumable, parallel uploads to and downloads from a ferry server, as a
//! library. The `ferry upload` and `ferry download` commands are thin layers over it.
//!
//! ```no_run
//! use ferry_client::{Event, UploadOptions, Uploader};
//! use std::sync::Arc;
//!
//! # async fn run() -> Result<(), ferry_client::Error> {
//! let mut opts = UploadOptions::new("http://127.0.0.1:8080");
//! opts.parallel = 4;
//! let events = Arc::new(|e: Event| eprintln!("{e:?}"));
//! let uploader = Uploader::new(opts, events)?;
//! let done = uploader.upload_file("big.iso".as_ref(), 4).await?;
//! println!("{}", done.url);
//! # Ok(()) }
//! ```
//!
//! Map of the crate:
//! - [`upload`]: [`Uploader`] — tus (parallel via concatenation) or the chunk-handshake
//!   dialect, resuming from a [`state`] file and what the server holds.
//! - [`download`]: [`Downloader`] — `.part` file, `Range` + `If-Range` resume, several
//!   connections, digest verification against the ETag.
//! - [`event`]: progress events through a callback.
//! - [`retry`]: backoff with jitter, `Retry-After`, a time bound.
//! - [`tus`]: the tus 1.0.0 requests; [`source`]: reading and fingerprinting local files;
//!   [`http`]: the shared HTTP client and server error messages.

pub mod download;
pub mod error;
pub mod event;
pub mod http;
pub mod ranges;
pub mod retry;
pub mod source;
pub mod state;
pub mod tus;
pub mod upload;

pub use download::{DownloadOptions, Downloaded, Downloader, Existing};
pub use error::{Error, Result};
pub use event::{Event, EventSink};
pub use http::TlsOptions;
pub use retry::RetryPolicy;
pub use state::StateStore;
pub use upload::{Protocol, UploadOptions, Uploaded, Uploader};
