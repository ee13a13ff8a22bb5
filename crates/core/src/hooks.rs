//! Hooks: the points in an upload's life where something outside ferry is told, or asked.
//!
//! The engine calls a [`Hooks`] implementation at the same points for every dialect, because
//! every dialect creates, writes, finishes and deletes through the engine:
//!
//! - *blocking* ([`Hooks::pre_create`], [`Hooks::pre_finish`]): asked before anything is
//!   changed; a refusal ([`HookError`]) becomes the request's error and nothing is created,
//!   published or marked complete;
//! - *non-blocking* ([`Hooks::notify`]): told after the fact (`post-create`, `post-receive`,
//!   `post-finish`, `post-terminate`); an implementation queues the event and returns, it
//!   never waits for whoever receives it.
//!
//! An engine without hooks makes none of these calls (an `Option` that is `None`), so it
//! behaves and costs exactly as before. The HTTP delivery, signatures and the durable queue
//! live in the server (`ferry_server::hooks`); core knows nothing about HTTP.

use crate::engine::NewUpload;
use crate::upload::{Upload, clean_file_name, validate_ext};
use async_trait::async_trait;
use std::collections::BTreeMap;

/// The stored key under which the tus front keeps `Upload-Metadata` as the client sent it
/// (the server's `tus::META_RAW_METADATA`): HEAD answers with it, so an amendment by a
/// pre-create hook is written into it too.
const TUS_RAW_METADATA: &str = "tus:upload-metadata";

/// What happened, or is about to happen, to an upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    PreCreate,
    PostCreate,
    PostReceive,
    PreFinish,
    PostFinish,
    PostTerminate,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::PreCreate,
        EventKind::PreFinish,
        EventKind::PostCreate,
        EventKind::PostReceive,
        EventKind::PostFinish,
        EventKind::PostTerminate,
    ];

    /// The name on the wire (`"type"`) and in `--hook-events`.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::PreCreate => "pre-create",
            EventKind::PostCreate => "post-create",
            EventKind::PostReceive => "post-receive",
            EventKind::PreFinish => "pre-finish",
            EventKind::PostFinish => "post-finish",
            EventKind::PostTerminate => "post-terminate",
        }
    }

    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the request waits for the receiver's answer.
    pub fn is_blocking(self) -> bool {
        matches!(self, EventKind::PreCreate | EventKind::PreFinish)
    }
}

/// Why a blocking hook said no.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The receiver answered and refused: the request fails with `status` (a 4xx) and
    /// `message`.
    #[error("{message}")]
    Rejected { status: u16, message: String },
    /// The receiver could not be asked (unreachable, a non-2xx answer, no answer in time,
    /// after quick retries): the request fails with 503 and nothing changes.
    #[error("the upload hook cannot be reached")]
    Unavailable,
}

/// Changes a pre-create hook asks for: each key set to a value, or removed (`None`).
pub type MetadataChanges = BTreeMap<String, Option<String>>;

/// What an upload's events report and its blocking hooks decide on.
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// Whether events of `kind` are wanted at all; the engine skips the work of those that
    /// are not (building the snapshot, waiting for the answer).
    fn wants(&self, kind: EventKind) -> bool;

    /// Before an upload is created (its id is already chosen, nothing is stored yet). `Ok`
    /// with changes amends the upload's metadata.
    async fn pre_create(&self, upload: &Upload) -> Result<Option<MetadataChanges>, HookError>;

    /// After the last byte is durable and the whole-file digest verified, before the upload
    /// is published and marked complete.
    async fn pre_finish(&self, upload: &Upload) -> Result<(), HookError>;

    /// A non-blocking event: queued (durably, if the implementation promises it) before this
    /// returns, delivered later. Never waits for the receiver.
    async fn notify(&self, kind: EventKind, upload: &Upload);
}

/// The metadata an event reports: the client's metadata (for tus, every `Upload-Metadata`
/// pair, decoded) plus the file name when one is known, without the keys fronts keep for
/// themselves (those with a `:`).
pub fn event_metadata(u: &Upload) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(raw) = u.metadata.get(TUS_RAW_METADATA)
        && let Ok(m) = crate::tus::Metadata::parse(raw)
    {
        for (k, v) in m.iter() {
            out.insert(k.to_owned(), String::from_utf8_lossy(v).into_owned());
        }
    }
    for (k, v) in &u.metadata {
        if !k.contains(':') {
            out.insert(k.clone(), v.clone());
        }
    }
    if let Some(name) = &u.file_name
        && !out.contains_key("filename")
    {
        out.insert("filename".to_owned(), name.clone());
    }
    out
}

/// Applies a pre-create hook's metadata changes to the upload about to be created: the
/// stored metadata, the file name (`filename` or `name`: display and `Content-Disposition`
/// only, cleaned as a client's would be) and, for tus, the `Upload-Metadata` HEAD reports.
pub fn apply_metadata(new: &mut NewUpload, changes: &MetadataChanges) {
    let is_tus = new.dialect == crate::upload::Dialect::TUS;
    // The tus header's pairs, in the client's order, amended in place.
    let mut raw: Option<Vec<(String, Vec<u8>)>> = match new.metadata.get(TUS_RAW_METADATA) {
        Some(r) => crate::tus::Metadata::parse(r)
            .ok()
            .map(|m| m.iter().map(|(k, v)| (k.to_owned(), v.to_vec())).collect()),
        None => is_tus.then(Vec::new),
    };
    for (k, v) in changes {
        // Keys with a `:` are the fronts' own bookkeeping; a receiver cannot reach them.
        if k.is_empty() || k.contains(':') || k.contains([' ', ',']) {
            continue;
        }
        let is_name = k == "filename" || k == "name";
        if is_name {
            new.file_name = v.as_deref().and_then(clean_file_name);
            if let Some(ext) = new
                .file_name
                .as_deref()
                .and_then(|n| n.rfind('.').map(|i| &n[i..]))
                .and_then(|e| validate_ext(e).ok())
            {
                new.ext = ext;
            }
        } else {
            match v {
                Some(v) => {
                    new.metadata.insert(k.clone(), v.clone());
                }
                None => {
                    new.metadata.remove(k);
                }
            }
        }
        if let Some(pairs) = raw.as_mut() {
            pairs.retain(|(key, _)| key != k);
            if let Some(v) = v {
                pairs.push((k.clone(), v.as_bytes().to_vec()));
            }
        }
    }
    if let Some(pairs) = raw {
        let mut m = crate::tus::Metadata::default();
        for (k, v) in pairs {
            let _ = m.insert(&k, v);
        }
        if m.is_empty() {
            new.metadata.remove(TUS_RAW_METADATA);
        } else {
            new.metadata
                .insert(TUS_RAW_METADATA.to_owned(), m.to_string());
        }
    }
}

/// A fresh idempotency key for one event: 128 random bits, hex.
pub fn new_event_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
