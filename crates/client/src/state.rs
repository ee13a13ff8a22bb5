//! The local state file: which upload on which server holds which local file, so that a
//! second run after any interruption continues the same upload (like tus-js-client's URL
//! storage). The server stays the truth about *how much* is held; this file only remembers
//! *where* to ask.
//!
//! Layout (`uploads.json`, JSON):
//!
//! ```json
//! {"version": 1, "uploads": [
//!   {"server": "http://127.0.0.1:8080", "protocol": "tus",
//!    "file": {"path": "/abs/x.iso", "size": 5, "mtime_secs": 1, "mtime_nanos": 0, "sample": "…"},
//!    "updated": 1700000000, "url": null,
//!    "tus": {"parts": [{"url": "http://…/files/ab…", "start": 0, "len": 5}]}}
//! ]}
//! ```
//!
//! A record is found by server, protocol and absolute path; it is used only when the whole
//! fingerprint still matches, so a changed file is never resumed into the old upload.
//! Writes replace the file atomically (write a temporary file, rename); each write re-reads
//! the file first, so concurrent `ferry` processes lose at most a record to a race, which
//! costs a fresh upload, never a wrong one. Records untouched for [`KEEP_FOR`] are dropped.

use crate::error::{Error, Result};
use crate::source::Fingerprint;
use crate::upload::Protocol;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Records older than this are pruned: the server expires incomplete uploads long before.
pub const KEEP_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub server: String,
    pub protocol: Protocol,
    pub file: Fingerprint,
    /// Unix seconds of the last write.
    pub updated: u64,
    /// The finished file's URL, once complete.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tus: Option<TusState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<ChunkState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<RangeState>,
}

/// A byte-range upload: the `X-File-Id` it was written under.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RangeState {
    pub file_id: String,
}

/// A tus upload: one part (a plain upload), or several partial uploads concatenated into a
/// final one at the end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TusState {
    pub parts: Vec<TusPart>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TusPart {
    pub url: String,
    /// Where the part starts in the file, and its length.
    pub start: u64,
    pub len: u64,
}

/// The chunk dialect's digests, kept so that a second run need not hash the file again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChunkState {
    pub chunk_size: u64,
    pub file_id: String,
    pub chunk_digests: Vec<String>,
}

#[derive(Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    uploads: Vec<Record>,
}

/// Where records live; a cheap-clone handle. [`StateStore::disabled`] remembers nothing.
#[derive(Clone)]
pub struct StateStore {
    path: Option<Arc<PathBuf>>,
    lock: Arc<Mutex<()>>,
}

impl StateStore {
    pub fn at(path: impl Into<PathBuf>) -> StateStore {
        StateStore {
            path: Some(Arc::new(path.into())),
            lock: Arc::default(),
        }
    }

    pub fn disabled() -> StateStore {
        StateStore {
            path: None,
            lock: Arc::default(),
        }
    }

    /// `$XDG_STATE_HOME/ferry/uploads.json`, else `~/.local/state/ferry/uploads.json`
    /// (the XDG base directory specification's default for state data).
    pub fn default_path() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|h| !h.is_empty())
                    .map(|h| PathBuf::from(h).join(".local/state"))
            })?;
        Some(base.join("ferry").join("uploads.json"))
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref().map(PathBuf::as_path)
    }

    /// The record for this file on this server, if any (whatever its fingerprint).
    pub async fn find(
        &self,
        server: &str,
        protocol: Protocol,
        abs_path: &str,
    ) -> Result<Option<Record>> {
        let (server, abs_path) = (server.to_owned(), abs_path.to_owned());
        self.with_file(move |f| {
            Ok((
                f.uploads
                    .iter()
                    .find(|r| {
                        r.server == server && r.protocol == protocol && r.file.path == abs_path
                    })
                    .cloned(),
                false,
            ))
        })
        .await
    }

    /// Inserts or replaces the record of its (server, protocol, path).
    pub async fn put(&self, mut record: Record) -> Result<()> {
        record.updated = now_secs();
        self.with_file(move |f| {
            f.uploads.retain(|r| !same_slot(r, &record));
            f.uploads.push(record);
            Ok(((), true))
        })
        .await
    }

    pub async fn remove(&self, server: &str, protocol: Protocol, abs_path: &str) -> Result<()> {
        let (server, abs_path) = (server.to_owned(), abs_path.to_owned());
        self.with_file(move |f| {
            let before = f.uploads.len();
            f.uploads.retain(|r| {
                !(r.server == server && r.protocol == protocol && r.file.path == abs_path)
            });
            Ok(((), f.uploads.len() != before))
        })
        .await
    }

    /// Reads the file, applies `op`, and writes it back when `op` says it changed something.
    async fn with_file<T>(
        &self,
        op: impl FnOnce(&mut StateFile) -> Result<(T, bool)> + Send + 'static,
    ) -> Result<T>
    where
        T: Default + Send + 'static,
    {
        let Some(path) = self.path.clone() else {
            return Ok(T::default());
        };
        let lock = self.lock.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            let mut file = read(&path)?;
            let (out, changed) = op(&mut file)?;
            if changed {
                let cutoff = now_secs().saturating_sub(KEEP_FOR.as_secs());
                file.uploads.retain(|r| r.updated >= cutoff);
                write(&path, &file)?;
            }
            Ok(out)
        })
        .await
        .expect("state file task panicked")
    }
}

fn same_slot(a: &Record, b: &Record) -> bool {
    a.server == b.server && a.protocol == b.protocol && a.file.path == b.file.path
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn read(path: &Path) -> Result<StateFile> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
            Ok(f) if f.version == VERSION => Ok(f),
            // An unreadable or future-format file is not worth failing an upload over: the
            // cost of starting afresh is one re-upload.
            _ => Ok(StateFile {
                version: VERSION,
                uploads: Vec::new(),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateFile {
            version: VERSION,
            uploads: Vec::new(),
        }),
        Err(e) => Err(Error::local(path, e)),
    }
}

fn write(path: &Path, file: &StateFile) -> Result<()> {
    let err = |e| Error::local(path, e);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    let json = serde_json::to_vec_pretty(file).expect("state serialises");
    std::fs::write(&tmp, json).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, server: &str) -> Record {
        Record {
            server: server.into(),
            protocol: Protocol::Tus,
            file: Fingerprint {
                path: path.into(),
                size: 5,
                mtime_secs: 1,
                mtime_nanos: 2,
                sample: "ab".into(),
            },
            updated: 0,
            url: None,
            tus: Some(TusState {
                parts: vec![TusPart {
                    url: "http://h/files/1".into(),
                    start: 0,
                    len: 5,
                }],
            }),
            chunk: None,
            ranges: None,
        }
    }

    #[tokio::test]
    async fn records_are_found_by_server_protocol_and_path_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::at(dir.path().join("sub/uploads.json"));
        assert_eq!(store.find("s", Protocol::Tus, "/a").await.unwrap(), None);
        store.put(record("/a", "s")).await.unwrap();
        store.put(record("/b", "s")).await.unwrap();
        let mut r = record("/a", "s");
        r.url = Some("http://done".into());
        store.put(r).await.unwrap();
        let found = store.find("s", Protocol::Tus, "/a").await.unwrap().unwrap();
        assert_eq!(found.url.as_deref(), Some("http://done"));
        assert!(found.updated > 0);
        assert_eq!(
            store.find("other", Protocol::Tus, "/a").await.unwrap(),
            None
        );
        assert_eq!(store.find("s", Protocol::Chunk, "/a").await.unwrap(), None);
        store.remove("s", Protocol::Tus, "/a").await.unwrap();
        assert_eq!(store.find("s", Protocol::Tus, "/a").await.unwrap(), None);
        assert!(
            store
                .find("s", Protocol::Tus, "/b")
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_corrupt_file_is_treated_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uploads.json");
        std::fs::write(&path, b"{not json").unwrap();
        let store = StateStore::at(&path);
        assert_eq!(store.find("s", Protocol::Tus, "/a").await.unwrap(), None);
        store.put(record("/a", "s")).await.unwrap();
        assert!(
            store
                .find("s", Protocol::Tus, "/a")
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_disabled_store_remembers_nothing() {
        let store = StateStore::disabled();
        store.put(record("/a", "s")).await.unwrap();
        assert_eq!(store.find("s", Protocol::Tus, "/a").await.unwrap(), None);
    }
}
