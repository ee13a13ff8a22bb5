//! Progress events. Uploads and downloads report what they do through an [`EventSink`], a
//! callback the caller chooses: the `ferry` command draws progress bars or prints JSON lines
//! from it, another program can forward events into a channel.
//!
//! Events of one file arrive in order (`Started`, then `Progress`…, then `Finished` or
//! `Failed`), possibly from several threads; events of different files interleave.

use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Reading the file to compute its digest before uploading (the chunk dialect needs the
    /// whole file's MD5 before the handshake).
    Hashing {
        file: String,
        bytes: u64,
        total: u64,
    },
    /// The transfer begins; `resumed_from` bytes were already held (on the server for an
    /// upload, in the `.part` file for a download).
    Started {
        file: String,
        total: u64,
        resumed_from: u64,
    },
    /// Bytes transferred so far, counting those held before. May go back when a request
    /// fails after sending part of its body.
    Progress {
        file: String,
        bytes: u64,
        total: u64,
    },
    /// A request failed and is retried after `delay`.
    Retrying {
        file: String,
        attempt: u32,
        delay: Duration,
        error: String,
    },
    /// Something worth telling the person: an instant upload, a restart because the remote
    /// changed, a digest that could not be verified.
    Note { file: String, message: String },
    /// Done: the file's URL (uploads) or the path written (downloads).
    Finished {
        file: String,
        url: String,
        path: Option<String>,
    },
    /// The file failed; `hint` says what to do next.
    Failed {
        file: String,
        error: String,
        hint: Option<String>,
    },
}

impl Event {
    pub fn file(&self) -> &str {
        match self {
            Event::Hashing { file, .. }
            | Event::Started { file, .. }
            | Event::Progress { file, .. }
            | Event::Retrying { file, .. }
            | Event::Note { file, .. }
            | Event::Finished { file, .. }
            | Event::Failed { file, .. } => file,
        }
    }
}

/// Where events go. Called synchronously from the transfer tasks: keep it quick.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// A sink that drops everything.
pub fn discard() -> EventSink {
    Arc::new(|_| {})
}
