//! The upload record: everything the metadata store keeps about one upload.
//!
//! An upload is created by a protocol front, receives bytes at offsets (in order or not),
//! and becomes `Complete` when every byte of its declared length is held. Its bytes live in
//! the blob store under its id; nothing a client sends (names, extensions) is ever part of
//! a storage path.

use crate::hash::HashAlg;
use crate::ranges::RangeSet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Server-chosen upload id: 32 lowercase hex characters (128 random bits).
///
/// Ids are generated here, never taken from a client, which is what lets the blob store use
/// them as file names without any escaping.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UploadId(String);

impl UploadId {
    pub fn generate() -> Self {
        let bytes: [u8; 16] = rand::random();
        UploadId(hex::encode(bytes))
    }

    /// Accepts only the shape [`UploadId::generate`] produces, so an id taken from a URL can
    /// be used as a file name safely.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| UploadId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which front created an upload: a short lowercase name, kept in the record and used as the
/// `dialect` label of metrics.
///
/// The set is open: a front defines its own with [`Dialect::new`] (a constant in its module)
/// and nothing in the core changes. The built-in fronts' names are [`Dialect::CHUNK`],
/// [`Dialect::OFFSET`] and [`Dialect::TUS`] (the IETF draft counts as `tus`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dialect(&'static str);

impl Dialect {
    /// The hash-addressed chunk handshake (SPEC §2.1).
    pub const CHUNK: Dialect = Dialect("chunk");
    /// The byte-offset resume protocol (SPEC §2.2).
    pub const OFFSET: Dialect = Dialect("offset");
    /// tus 1.0 / IETF resumable uploads (SPEC §2.3–2.4).
    pub const TUS: Dialect = Dialect("tus");

    /// A dialect named `name`: 1–32 characters of `a-z`, `0-9`, `-` and `_` (checked when
    /// the constant is evaluated, so a bad name fails the build).
    pub const fn new(name: &'static str) -> Dialect {
        let b = name.as_bytes();
        assert!(
            !b.is_empty() && b.len() <= 32,
            "a dialect name has 1-32 characters"
        );
        let mut i = 0;
        while i < b.len() {
            assert!(
                matches!(b[i], b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'),
                "a dialect name is lowercase ASCII letters, digits, '-' and '_'"
            );
            i += 1;
        }
        Dialect(name)
    }

    pub fn name(self) -> &'static str {
        self.0
    }

    /// The dialect a stored record names. Names are few (one per front that ever wrote to
    /// the store), so each distinct one is kept for the life of the process.
    fn interned(name: &str) -> Dialect {
        use std::sync::{Mutex, OnceLock};
        for d in [Dialect::CHUNK, Dialect::OFFSET, Dialect::TUS] {
            if d.0 == name {
                return d;
            }
        }
        static NAMES: OnceLock<Mutex<Vec<&'static str>>> = OnceLock::new();
        let mut names = NAMES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = names.iter().find(|n| **n == name) {
            return Dialect(n);
        }
        let n: &'static str = Box::leak(name.to_owned().into_boxed_str());
        names.push(n);
        Dialect(n)
    }
}

impl fmt::Debug for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for Dialect {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Dialect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dialect, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Dialect::interned(&name))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadState {
    Receiving,
    Complete,
}

/// A digest a client declared for the whole file, verified at completion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredDigest {
    pub alg: HashAlg,
    /// Lowercase hex.
    pub hex: String,
}

/// How a chunk-handshake upload is cut into chunks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkLayout {
    /// Chunk ids in file order, as the client sent them (digest prefix + optional suffix).
    pub ids: Vec<String>,
    /// Size of every chunk but the last; `None` until declared or inferred from a chunk.
    pub chunk_size: Option<u64>,
    /// Digest algorithm of the chunk ids.
    pub alg: HashAlg,
    /// Chunks received before their offset could be known (only the last chunk, arriving
    /// before any other when neither `size` nor `chunkSize` was declared), kept in a staging
    /// blob until the layout is known: index → staged length.
    #[serde(default)]
    pub staged: BTreeMap<usize, u64>,
}

impl ChunkLayout {
    /// Byte range of chunk `index` once the chunk size (and, for the last chunk, the total
    /// length) is known.
    pub fn span(&self, index: usize, length: Option<u64>) -> Option<std::ops::Range<u64>> {
        let n = self.ids.len();
        if index >= n {
            return None;
        }
        if n == 1 {
            return length.map(|l| 0..l);
        }
        let cs = self.chunk_size?;
        let start = cs.checked_mul(index as u64)?;
        if index + 1 < n {
            Some(start..start.checked_add(cs)?)
        } else {
            // A length that ends before the last chunk starts contradicts the layout: no span
            // rather than a backwards range.
            length.filter(|&l| l > start).map(|l| start..l)
        }
    }
}

/// An upload's part in a concatenation: a partial upload is one piece of later finals; a
/// final upload is the concatenation of its parts, assembled by the storage backend (a
/// kernel copy) once every part is complete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Concat {
    Partial {
        /// Finals waiting for this part to complete.
        #[serde(default)]
        finals: Vec<UploadId>,
    },
    Final {
        parts: Vec<UploadId>,
    },
}

/// Durable progress of the whole-file hasher: bytes `0..position` have been hashed, and
/// `state_hex` lets a restart continue instead of re-reading the file. A BLAKE3 state
/// resumes a little earlier (at [`crate::hash::Hasher::durable_position`], at most 2 MiB
/// before `position`); the engine reads the gap back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashProgress {
    pub position: u64,
    /// [`crate::hash::Hasher::save`] output, hex-encoded for portable storage.
    pub state_hex: String,
}

/// Everything stored about one upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    pub id: UploadId,
    /// The tenant that owns the upload (SPEC §6); `None` on a server without
    /// authentication. Only its owner sees it ([`crate::tenant::Scoped`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Client-facing lookup key, unique when present: `chunk:<fileId>`, `offset:<X-File-Id>`,
    /// in the owner's namespace ([`crate::tenant::Actor::key`]).
    pub key: Option<String>,
    pub dialect: Dialect,
    /// Declared total length; `None` while deferred (tus creation-defer-length, a byte-offset
    /// upload that has not said its size yet).
    pub length: Option<u64>,
    pub state: UploadState,
    /// Bytes held durably.
    pub held: RangeSet,
    /// Whole-file digest declared by the client, verified at completion.
    pub declared: Option<DeclaredDigest>,
    /// Algorithm of the content digest computed as bytes land (declared one if any).
    pub content_alg: HashAlg,
    /// Saved hasher progress over the contiguous prefix.
    pub hash_progress: Option<HashProgress>,
    /// Content digest (lowercase hex of `content_alg`) once complete; the ETag derives from it.
    pub content_digest: Option<String>,
    /// Original file name (display and Content-Disposition only).
    pub file_name: Option<String>,
    /// Validated extension including the dot (".jpg"), or empty.
    pub ext: String,
    /// Chunk layout, for the chunk-handshake dialect.
    pub chunks: Option<ChunkLayout>,
    /// Free-form metadata (tus `Upload-Metadata`, content type…).
    pub metadata: BTreeMap<String, String>,
    /// Role in a concatenation (tus `Upload-Concat`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concat: Option<Concat>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    /// Where a part-based blob store keeps the acknowledged bytes (`None` on the filesystem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<crate::parts::BlobState>,
    /// How many times the stored record was updated, as read. An update applies only to the
    /// version it was read at ([`crate::store::MetaStore::update`]), so two nodes changing
    /// one upload never lose each other's change. Kept by the store beside the record.
    #[serde(skip)]
    pub version: u64,
}

impl Upload {
    pub fn is_complete(&self) -> bool {
        self.state == UploadState::Complete
    }

    /// Bytes held as a contiguous prefix (what append-only clients resume from).
    pub fn offset(&self) -> u64 {
        self.held.prefix_end()
    }

    /// The strong ETag for the finished file, derived from its content digest.
    pub fn etag(&self) -> Option<String> {
        self.content_digest
            .as_ref()
            .map(|d| format!("\"{}-{}\"", self.content_alg.name(), d))
    }

    /// Missing ranges of the declared length (empty when the length is still unknown).
    pub fn missing(&self) -> Vec<std::ops::Range<u64>> {
        match self.length {
            Some(len) => self.held.gaps_in(0..len),
            None => Vec::new(),
        }
    }
}

/// Milliseconds since the Unix epoch: portable across SQLite and PostgreSQL columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0.max(0) as u64)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        Timestamp(
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        )
    }
}

/// Validates a client-supplied extension: empty, or a dot followed by 1–16 ASCII
/// alphanumerics (".jpg", ".tar", ".mp4"). Multi-dot extensions like ".tar.gz" are accepted
/// as their last part only by the client; anything else is refused rather than cleaned, so a
/// traversal attempt never turns into a plausible name.
pub fn validate_ext(ext: &str) -> Result<String, &'static str> {
    if ext.is_empty() {
        return Ok(String::new());
    }
    let Some(rest) = ext.strip_prefix('.') else {
        return Err("the extension must start with a dot, like \".jpg\"");
    };
    if rest.is_empty() || rest.len() > 16 {
        return Err("the extension must have 1 to 16 characters after the dot");
    }
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("the extension may contain only letters and digits after the dot");
    }
    Ok(ext.to_ascii_lowercase())
}

/// Keeps a client-supplied display name usable in headers and logs: control characters and
/// path separators are dropped and the length is capped. The result is never used as a path.
pub fn clean_file_name(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let cleaned: String = base.chars().filter(|c| !c.is_control()).take(255).collect();
    let cleaned = cleaned.trim().to_owned();
    (!cleaned.is_empty() && cleaned != "." && cleaned != "..").then_some(cleaned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_validation_refuses_traversal_and_oddities() {
        assert_eq!(validate_ext(".JPG").unwrap(), ".jpg");
        assert_eq!(validate_ext("").unwrap(), "");
        for bad in [
            "../../x",
            "/",
            ".a/b",
            ".\0",
            "jpg",
            ".",
            ".tar.gz",
            &".x".repeat(150),
        ] {
            assert!(validate_ext(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn file_names_lose_paths_and_controls() {
        assert_eq!(
            clean_file_name("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(
            clean_file_name("C:\\x\\报告.pdf").as_deref(),
            Some("报告.pdf")
        );
        assert_eq!(clean_file_name("a\u{0}b\nc").as_deref(), Some("abc"));
        assert_eq!(clean_file_name(".."), None);
        assert_eq!(clean_file_name(""), None);
    }

    #[test]
    fn upload_ids_round_trip_and_reject_paths() {
        let id = UploadId::generate();
        assert_eq!(UploadId::parse(id.as_str()), Some(id));
        assert!(UploadId::parse("../../etc/passwd").is_none());
        assert!(UploadId::parse(&"A".repeat(32)).is_none());
    }

    #[test]
    fn chunk_spans_follow_the_layout() {
        let layout = ChunkLayout {
            ids: vec!["a".into(), "b".into(), "c".into()],
            chunk_size: Some(10),
            alg: HashAlg::Md5,
            staged: BTreeMap::new(),
        };
        assert_eq!(layout.span(0, None), Some(0..10));
        assert_eq!(layout.span(1, None), Some(10..20));
        assert_eq!(layout.span(2, None), None);
        assert_eq!(layout.span(2, Some(25)), Some(20..25));
        assert_eq!(layout.span(3, Some(25)), None);
    }
}
