//! Content digests whose progress survives a restart.
//!
//! The server hashes upload bytes as they land on disk. Uploads can be large and
//! the process can die at any moment, so re-reading everything already stored
//! just to rebuild a digest would be slow. Instead, the engine periodically
//! persists [`Hasher::save`] next to the upload record, and after a restart it
//! calls [`Hasher::restore`] and keeps feeding bytes from where it stopped.
//!
//! The state comes from RustCrypto's `SerializableState` (the `hazmat` API of
//! `digest` 0.11), implemented on the buffered hashers. It holds both the
//! chaining values and the not-yet-compressed tail of the current block, so a
//! restored hasher continues byte-for-byte as if it had never been interrupted.
//!
//! BLAKE3, the default content digest (it runs at several GB/s on one core where SHA-256
//! manages under 2), has no serializable incremental state. It is a tree hash, though, so
//! [`Hasher`] builds it from 1 MiB subtrees with the crate's `hazmat` API and saves the
//! chaining values of the complete ones; a restored BLAKE3 hasher resumes at the end of the
//! last saved subtree ([`Hasher::durable_position`]), up to 2 MiB before where it stood, and
//! the engine reads those bytes back.
//!
//! # Saved layout (format version 1)
//!
//! All integers are little-endian.
//!
//! | offset | size | content                                               |
//! |-------:|-----:|-------------------------------------------------------|
//! | 0      | 1    | format version, currently `1`                         |
//! | 1      | 1    | algorithm tag: `1` MD5, `2` SHA-1, `3` SHA-256        |
//! | 2      | 8    | position: total bytes fed so far (`u64`)              |
//! | 10     | N    | RustCrypto serialized state of the buffered hasher    |
//!
//! For BLAKE3 (tag `4`) the position is the end of the saved subtrees and `N` is a `u8`
//! count followed by that many `(u64 subtree length in bytes, 32-byte chaining value)`
//! pairs, largest (leftmost) first; the lengths must be powers of two times 1 MiB, strictly
//! decreasing, and add up to the position.
//!
//! `N` is 88 for MD5, 92 for SHA-1 and 104 for SHA-256, so a saved state is
//! 98, 102 or 114 bytes long. The RustCrypto state is itself two parts:
//!
//! - the core: the chaining words (4, 5 or 8 `u32`s), then the number of
//!   compressed 64-byte blocks (`u64`);
//! - the block buffer (64 bytes): the number of buffered bytes (0..=63), then
//!   those bytes, then zero padding.
//!
//! On restore the position is cross-checked against `blocks * 64 + buffered`,
//! which catches most corruption and any mix-up between rows, because the core
//! state alone would happily accept arbitrary bytes.
//!
//! RustCrypto only promises that this state stays readable within one `0.x`
//! release line. The exact sizes are therefore pinned by compile-time
//! assertions below: a dependency upgrade that changes them fails to build
//! instead of silently misreading states already stored in a database, and
//! whoever upgrades must bump `FORMAT_VERSION` and decide how to migrate.

use std::fmt;

use digest::Digest;
use digest::common::hazmat::{SerializableState, SerializedState};
use digest::typenum::Unsigned;

/// A digest algorithm the server can compute for uploads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlg {
    Md5,
    Sha1,
    Sha256,
    Blake3,
}

impl HashAlg {
    /// Parses an algorithm name as clients tend to spell it, ignoring case:
    /// `md5`, `sha1`, `sha-1`, `sha256`, `sha-256` or `blake3`.
    pub fn parse(s: &str) -> Option<HashAlg> {
        const NAMES: [(&str, HashAlg); 6] = [
            ("md5", HashAlg::Md5),
            ("sha1", HashAlg::Sha1),
            ("sha-1", HashAlg::Sha1),
            ("sha256", HashAlg::Sha256),
            ("sha-256", HashAlg::Sha256),
            ("blake3", HashAlg::Blake3),
        ];
        NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(s))
            .map(|&(_, alg)| alg)
    }

    /// The canonical lowercase name, identical to the serde representation.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Md5 => "md5",
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Blake3 => "blake3",
        }
    }

    /// Length of the digest in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlg::Md5 => 16,
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 | HashAlg::Blake3 => 32,
        }
    }

    /// Length of the digest in hex characters.
    pub fn hex_len(self) -> usize {
        self.digest_len() * 2
    }

    /// The tag stored in saved states. These numbers are part of the persisted
    /// format, so they are spelled out rather than derived from declaration order.
    fn tag(self) -> u8 {
        match self {
            HashAlg::Md5 => 1,
            HashAlg::Sha1 => 2,
            HashAlg::Sha256 => 3,
            HashAlg::Blake3 => 4,
        }
    }

    fn from_tag(tag: u8) -> Option<HashAlg> {
        match tag {
            1 => Some(HashAlg::Md5),
            2 => Some(HashAlg::Sha1),
            3 => Some(HashAlg::Sha256),
            4 => Some(HashAlg::Blake3),
            _ => None,
        }
    }

    /// Size of the RustCrypto serialized state for this algorithm. BLAKE3 has none: its
    /// state is saved and restored by `Blake3Tree`, before any caller gets here.
    fn state_len(self) -> usize {
        match self {
            HashAlg::Md5 => MD5_STATE_LEN,
            HashAlg::Sha1 => SHA1_STATE_LEN,
            HashAlg::Sha256 => SHA256_STATE_LEN,
            HashAlg::Blake3 => unreachable!("BLAKE3 states are laid out by Blake3Tree"),
        }
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Version byte written at the start of every saved state.
const FORMAT_VERSION: u8 = 1;
/// Version byte, algorithm tag and position.
const HEADER_LEN: usize = 1 + 1 + 8;
/// All three algorithms compress 64-byte blocks.
const BLOCK_LEN: usize = 64;
/// The serialized block buffer is exactly one block long: a fill byte followed
/// by at most 63 data bytes (an eager buffer never holds a full block).
const BUFFER_LEN: usize = BLOCK_LEN;

const MD5_STATE_LEN: usize = 88;
const SHA1_STATE_LEN: usize = 92;
const SHA256_STATE_LEN: usize = 104;

// These sizes are part of the persisted format (see the module docs). If a
// dependency upgrade changes them, the build must fail so that nobody reads old
// states with a new layout.
const _: () = {
    assert!(MD5_STATE_LEN == <<md5::Md5 as SerializableState>::SerializedStateSize>::USIZE);
    assert!(SHA1_STATE_LEN == <<sha1::Sha1 as SerializableState>::SerializedStateSize>::USIZE);
    assert!(SHA256_STATE_LEN == <<sha2::Sha256 as SerializableState>::SerializedStateSize>::USIZE);
};

/// The concrete hasher. An enum rather than a boxed trait object so that
/// `update` is a plain match with no allocation and no dynamic dispatch.
#[derive(Clone)]
enum Inner {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Blake3(Box<Blake3Tree>),
}

/// A running digest that knows how many bytes it has consumed and whose state can be saved.
#[derive(Clone)]
pub struct Hasher {
    inner: Inner,
    position: u64,
}

impl fmt::Debug for Hasher {
    // The internal state is deliberately left out: it is noise in logs and is
    // effectively a copy of (part of) the uploaded content.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("alg", &self.alg())
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl Hasher {
    /// A hasher that has not seen any bytes yet.
    pub fn new(alg: HashAlg) -> Self {
        let inner = match alg {
            HashAlg::Md5 => Inner::Md5(md5::Md5::new()),
            HashAlg::Sha1 => Inner::Sha1(sha1::Sha1::new()),
            HashAlg::Sha256 => Inner::Sha256(sha2::Sha256::new()),
            HashAlg::Blake3 => Inner::Blake3(Box::default()),
        };
        Hasher { inner, position: 0 }
    }

    pub fn alg(&self) -> HashAlg {
        match self.inner {
            Inner::Md5(_) => HashAlg::Md5,
            Inner::Sha1(_) => HashAlg::Sha1,
            Inner::Sha256(_) => HashAlg::Sha256,
            Inner::Blake3(_) => HashAlg::Blake3,
        }
    }

    /// Total number of bytes fed so far, i.e. the offset in the upload up to
    /// which the content has been hashed.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Where a hasher rebuilt from [`Hasher::save`] stands: [`Hasher::position`] for the
    /// RustCrypto algorithms, the end of the last complete 1 MiB subtree saved for BLAKE3.
    pub fn durable_position(&self) -> u64 {
        match &self.inner {
            Inner::Blake3(t) => t.saved_len(),
            _ => self.position,
        }
    }

    /// Feeds more bytes. The hashers buffer at most one partial block
    /// internally, so large slices are compressed in place without copying.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.inner {
            Inner::Md5(h) => Digest::update(h, data),
            Inner::Sha1(h) => Digest::update(h, data),
            Inner::Sha256(h) => Digest::update(h, data),
            Inner::Blake3(t) => t.update(data),
        }
        // usize is at most 64 bits on every target Rust supports, so this is lossless.
        self.position += data.len() as u64;
    }

    /// Feeds the same bytes to two hashers. Two MD5 hashers whose positions agree modulo the
    /// block size (a chunk's and the whole file's, at a chunk boundary) run their compression
    /// loops together, about 1.6× as fast as one after the other; any other pair is fed one
    /// after the other.
    pub fn update_both(a: &mut Hasher, b: &mut Hasher, data: &[u8]) {
        let aligned = a.position % BLOCK_LEN as u64 == b.position % BLOCK_LEN as u64;
        match (&mut a.inner, &mut b.inner) {
            (Inner::Md5(x), Inner::Md5(y)) if aligned => {
                ferry_md5_pair::update_same(x, y, a.position, data);
                a.position += data.len() as u64;
                b.position += data.len() as u64;
            }
            _ => {
                a.update(data);
                b.update(data);
            }
        }
    }

    /// Finishes the digest and returns its bytes.
    pub fn finalize(self) -> Vec<u8> {
        match self.inner {
            Inner::Md5(h) => h.finalize().to_vec(),
            Inner::Sha1(h) => h.finalize().to_vec(),
            Inner::Sha256(h) => h.finalize().to_vec(),
            Inner::Blake3(t) => t.finalize().as_bytes().to_vec(),
        }
    }

    /// Finishes the digest and returns it as lowercase hex.
    pub fn finalize_hex(self) -> String {
        hex::encode(self.finalize())
    }

    /// Opaque, versioned bytes (first byte a format version) holding alg,
    /// position and the full state including the buffered tail (for BLAKE3: the state at
    /// [`Hasher::durable_position`]).
    ///
    /// See the module documentation for the layout.
    pub fn save(&self) -> Vec<u8> {
        let alg = self.alg();
        if let Inner::Blake3(t) = &self.inner {
            return t.save();
        }
        let mut out = Vec::with_capacity(HEADER_LEN + alg.state_len());
        out.push(FORMAT_VERSION);
        out.push(alg.tag());
        out.extend_from_slice(&self.position.to_le_bytes());
        match &self.inner {
            Inner::Md5(h) => out.extend_from_slice(&h.serialize()),
            Inner::Sha1(h) => out.extend_from_slice(&h.serialize()),
            Inner::Sha256(h) => out.extend_from_slice(&h.serialize()),
            Inner::Blake3(_) => unreachable!("saved above"),
        }
        debug_assert_eq!(out.len(), HEADER_LEN + alg.state_len());
        out
    }

    /// Rebuilds a hasher from [`Hasher::save`] output.
    ///
    /// Rejects anything that is not exactly a version-1 state of a known
    /// algorithm whose recorded position agrees with the hasher state, because
    /// continuing from a bad state would produce a wrong digest that is only
    /// noticed (if ever) much later.
    pub fn restore(saved: &[u8]) -> Result<Self, HashStateError> {
        let (&version, rest) = saved
            .split_first()
            .ok_or_else(|| HashStateError("empty".into()))?;
        if version != FORMAT_VERSION {
            return Err(HashStateError(format!(
                "unsupported format version {version} (expected {FORMAT_VERSION})"
            )));
        }
        let (&tag, rest) = rest
            .split_first()
            .ok_or_else(|| HashStateError("missing algorithm tag".into()))?;
        let alg = HashAlg::from_tag(tag)
            .ok_or_else(|| HashStateError(format!("unknown algorithm tag {tag}")))?;
        if alg == HashAlg::Blake3 {
            let tree = Blake3Tree::restore(rest)?;
            let position = tree.saved_len();
            check_restored_position(position)?;
            return Ok(Hasher {
                inner: Inner::Blake3(Box::new(tree)),
                position,
            });
        }

        let expected_len = HEADER_LEN + alg.state_len();
        if saved.len() != expected_len {
            return Err(HashStateError(format!(
                "{} bytes for {alg}, expected {expected_len}",
                saved.len()
            )));
        }
        let (position, state) = rest.split_at(8);
        let position = u64::from_le_bytes(position.try_into().expect("length checked above"));

        let stated =
            state_position(state).ok_or_else(|| HashStateError("block count overflows".into()))?;
        if stated != position {
            return Err(HashStateError(format!(
                "position {position} disagrees with hasher state ({stated} bytes)"
            )));
        }

        check_restored_position(position)?;
        let inner = match alg {
            HashAlg::Md5 => Inner::Md5(deserialize(state)?),
            HashAlg::Sha1 => Inner::Sha1(deserialize(state)?),
            HashAlg::Sha256 => Inner::Sha256(deserialize(state)?),
            HashAlg::Blake3 => unreachable!("restored above"),
        };
        Ok(Hasher { inner, position })
    }
}

/// Largest position a saved state may claim: no upload is longer (the engine caps sizes well
/// below 2^62), and a state past it could overflow on the next update.
const MAX_RESTORED_POSITION: u64 = 1 << 62;

/// Refuses a (corrupted or forged) saved state whose position no genuine upload reaches.
fn check_restored_position(position: u64) -> Result<(), HashStateError> {
    if position > MAX_RESTORED_POSITION {
        return Err(HashStateError(format!(
            "position {position} is past any upload's length"
        )));
    }
    Ok(())
}

/// Number of bytes a RustCrypto state says it has consumed: compressed blocks
/// times the block size plus the buffered bytes. `None` if that overflows,
/// which no genuine state can do.
fn state_position(state: &[u8]) -> Option<u64> {
    let (core, buffer) = state.split_at(state.len() - BUFFER_LEN);
    let blocks = u64::from_le_bytes(core[core.len() - 8..].try_into().ok()?);
    let buffered = u64::from(buffer[0]);
    blocks.checked_mul(BLOCK_LEN as u64)?.checked_add(buffered)
}

/// Deserializes one concrete hasher; `state` must already have the right length.
fn deserialize<H: SerializableState>(state: &[u8]) -> Result<H, HashStateError> {
    let state = SerializedState::<H>::try_from(state)
        .map_err(|_| HashStateError("wrong state length".into()))?;
    // The only thing RustCrypto validates here is the block buffer: its fill
    // count must be below the block size and the padding after it all zeros.
    H::deserialize(&state).map_err(|_| HashStateError("malformed block buffer".into()))
}

/// Why [`Hasher::restore`] refused its input.
#[derive(Debug, thiserror::Error)]
#[error("saved hash state is invalid: {0}")]
pub struct HashStateError(pub String);

/// One-shot digest.
pub fn digest(alg: HashAlg, data: &[u8]) -> Vec<u8> {
    match alg {
        HashAlg::Md5 => md5::Md5::digest(data).to_vec(),
        HashAlg::Sha1 => sha1::Sha1::digest(data).to_vec(),
        HashAlg::Sha256 => sha2::Sha256::digest(data).to_vec(),
        HashAlg::Blake3 => blake3::hash(data).as_bytes().to_vec(),
    }
}

/// Bytes per BLAKE3 subtree whose chaining value is kept (and saved). A power of two
/// multiple of BLAKE3's 1 KiB chunk, and large enough for the SIMD paths to run wide.
const SUBTREE: u64 = 1 << 20;

/// BLAKE3 built from [`SUBTREE`]-sized subtrees (BLAKE3 paper §2.1). Complete subtrees are
/// merged like a binary counter into a stack of strictly decreasing power-of-two sizes;
/// the most recently completed one stays `pending` until a later byte proves it is not the
/// last, because only the root may be finalized as a root.
#[derive(Clone, Default)]
struct Blake3Tree {
    /// Complete, merged subtrees, leftmost (largest) first: `(length, chaining value)`.
    stack: Vec<(u64, blake3::hazmat::ChainingValue)>,
    /// The last complete subtree, not yet known to be followed by more input.
    pending: Option<blake3::Hasher>,
    /// The subtree being filled, and how many bytes it has.
    current: blake3::Hasher,
    current_len: u64,
}

impl Blake3Tree {
    fn saved_len(&self) -> u64 {
        self.stack.iter().map(|(len, _)| len).sum()
    }

    fn start(&self) -> u64 {
        self.saved_len() + if self.pending.is_some() { SUBTREE } else { 0 }
    }

    fn update(&mut self, mut data: &[u8]) {
        use blake3::hazmat::HasherExt;
        while !data.is_empty() {
            if let Some(done) = self.pending.take() {
                // More input follows, so the pending subtree is an interior node.
                self.push(SUBTREE, done.finalize_non_root());
            }
            let room = (SUBTREE - self.current_len) as usize;
            let (now, rest) = data.split_at(room.min(data.len()));
            self.current.update(now);
            self.current_len += now.len() as u64;
            data = rest;
            if self.current_len == SUBTREE {
                let next = self.start() + SUBTREE;
                let mut fresh = blake3::Hasher::new();
                fresh.set_input_offset(next);
                self.pending = Some(std::mem::replace(&mut self.current, fresh));
                self.current_len = 0;
            }
        }
    }

    fn push(&mut self, len: u64, cv: blake3::hazmat::ChainingValue) {
        use blake3::hazmat::{Mode, merge_subtrees_non_root};
        let (mut len, mut cv) = (len, cv);
        while let Some(&(left_len, left)) = self.stack.last() {
            if left_len != len {
                break;
            }
            self.stack.pop();
            cv = merge_subtrees_non_root(&left, &cv, Mode::Hash);
            len *= 2;
        }
        self.stack.push((len, cv));
    }

    fn finalize(&self) -> blake3::Hash {
        use blake3::hazmat::{HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};
        let mut stack = self.stack.clone();
        let last = if self.current_len > 0 {
            if let Some(done) = &self.pending {
                stack.push((SUBTREE, done.finalize_non_root()));
            }
            &self.current
        } else {
            match &self.pending {
                Some(done) => done,
                None if stack.is_empty() => return self.current.finalize(),
                // A restored tree with nothing fed since: its last saved subtree was
                // followed by input that is gone. Never reached: finalize needs every byte.
                None => unreachable!("BLAKE3 tree finalized right after a restore"),
            }
        };
        let Some((_, first)) = stack.first().copied() else {
            return last.finalize();
        };
        let mut right = last.finalize_non_root();
        for &(_, left) in stack[1..].iter().rev() {
            right = merge_subtrees_non_root(&left, &right, Mode::Hash);
        }
        merge_subtrees_root(&first, &right, Mode::Hash)
    }

    fn save(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 1 + self.stack.len() * 40);
        out.push(FORMAT_VERSION);
        out.push(HashAlg::Blake3.tag());
        out.extend_from_slice(&self.saved_len().to_le_bytes());
        // At most 64 entries: lengths strictly decrease through powers of two of a u64.
        out.push(self.stack.len() as u8);
        for (len, cv) in &self.stack {
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(cv);
        }
        out
    }

    /// `rest` is the saved bytes after the version and tag.
    fn restore(rest: &[u8]) -> Result<Self, HashStateError> {
        use blake3::hazmat::HasherExt;
        let bad = |why: &str| HashStateError(format!("BLAKE3 state: {why}"));
        let (position, rest) = rest.split_at_checked(8).ok_or_else(|| bad("truncated"))?;
        let position = u64::from_le_bytes(position.try_into().expect("8 bytes"));
        let (&count, mut rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
        if rest.len() != usize::from(count) * 40 {
            return Err(bad("length disagrees with the subtree count"));
        }
        let mut stack = Vec::with_capacity(count.into());
        let mut total = 0u64;
        while let Some((entry, tail)) = rest.split_at_checked(40) {
            let len = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
            let cv: blake3::hazmat::ChainingValue = entry[8..].try_into().expect("32 bytes");
            let ok = len >= SUBTREE
                && len.is_power_of_two()
                && stack.last().is_none_or(|&(prev, _)| prev > len);
            if !ok {
                return Err(bad("subtree lengths are not decreasing powers of two"));
            }
            total = total.checked_add(len).ok_or_else(|| bad("overflow"))?;
            stack.push((len, cv));
            rest = tail;
        }
        if total != position {
            return Err(bad("position disagrees with the subtrees"));
        }
        let mut current = blake3::Hasher::new();
        current.set_input_offset(position);
        Ok(Blake3Tree {
            stack,
            pending: None,
            current,
            current_len: 0,
        })
    }
}

/// Parse a hex digest of the given algorithm (case-insensitive); None if wrong length or not hex.
pub fn parse_hex(alg: HashAlg, s: &str) -> Option<Vec<u8>> {
    if s.len() != alg.hex_len() {
        return None;
    }
    hex::decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [HashAlg; 3] = [HashAlg::Md5, HashAlg::Sha1, HashAlg::Sha256];

    /// Deterministic, non-periodic-at-block-size test data, so that a state
    /// restored at the wrong offset cannot accidentally produce the right digest.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i / 251) as u8)
            .collect()
    }

    fn hex_of(alg: HashAlg, data: &[u8]) -> String {
        let mut h = Hasher::new(alg);
        h.update(data);
        h.finalize_hex()
    }

    #[test]
    fn known_vectors() {
        let cases = [
            (HashAlg::Md5, "", "d41d8cd98f00b204e9800998ecf8427e"),
            (HashAlg::Md5, "abc", "900150983cd24fb0d6963f7d28e17f72"),
            (
                HashAlg::Sha1,
                "",
                "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            ),
            (
                HashAlg::Sha1,
                "abc",
                "a9993e364706816aba3e25717850c26c9cd0d89d",
            ),
            (
                HashAlg::Sha256,
                "",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
            (
                HashAlg::Sha256,
                "abc",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
        ];
        for (alg, input, expected) in cases {
            assert_eq!(hex_of(alg, input.as_bytes()), expected, "{alg} {input:?}");
            assert_eq!(hex::encode(digest(alg, input.as_bytes())), expected);
            assert_eq!(digest(alg, input.as_bytes()).len(), alg.digest_len());
            assert_eq!(expected.len(), alg.hex_len());
        }
    }

    #[test]
    fn million_a_in_uneven_chunks() {
        let cases = [
            (HashAlg::Md5, "7707d6ae4e027c70eea2a935c2296f21"),
            (HashAlg::Sha1, "34aa973cd4c4daa4f61eeb2bdbad27316534016f"),
            (
                HashAlg::Sha256,
                "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
            ),
        ];
        let data = vec![b'a'; 1_000_000];
        for (alg, expected) in cases {
            let mut h = Hasher::new(alg);
            for chunk in data.chunks(777) {
                h.update(chunk);
            }
            assert_eq!(h.position(), 1_000_000);
            assert_eq!(h.finalize_hex(), expected, "{alg}");
        }
    }

    #[test]
    fn one_mib_pattern_matches_one_shot() {
        let data = pattern(1 << 20);
        for alg in ALL {
            let expected = digest(alg, &data);
            // Whole slice, block-aligned chunks and odd chunks must all agree.
            for chunk_len in [data.len(), 64 * 1024, 4096, 1000, 63, 1] {
                let mut h = Hasher::new(alg);
                for chunk in data.chunks(chunk_len) {
                    h.update(chunk);
                }
                assert_eq!(h.position(), data.len() as u64);
                assert_eq!(h.finalize(), expected, "{alg} chunk {chunk_len}");
            }
        }
    }

    #[test]
    fn save_restore_at_split_points_continues_exactly() {
        let data = pattern(70_000);
        let splits = [
            0, 1, 2, 3, 55, 56, 57, 63, 64, 65, 119, 127, 128, 129, 1000, 1001, 4095, 4096, 4097,
            65_535, 65_536, 65_537, 69_999, 70_000,
        ];
        for alg in ALL {
            let expected = digest(alg, &data);
            for split in splits {
                let mut h = Hasher::new(alg);
                h.update(&data[..split]);
                let saved = h.save();
                assert_eq!(saved[0], FORMAT_VERSION);
                assert_eq!(saved.len(), HEADER_LEN + alg.state_len());
                drop(h);

                let mut r =
                    Hasher::restore(&saved).unwrap_or_else(|e| panic!("{alg} {split}: {e}"));
                assert_eq!(r.alg(), alg);
                assert_eq!(r.position(), split as u64);
                // Saving again straight away must reproduce the same bytes.
                assert_eq!(r.save(), saved);
                r.update(&data[split..]);
                assert_eq!(r.position(), data.len() as u64);
                assert_eq!(r.finalize(), expected, "{alg} split at {split}");
            }
        }
    }

    #[test]
    fn repeated_save_restore_cycles() {
        // Simulates several crashes during one upload, at odd offsets.
        let data = pattern(50_000);
        for alg in ALL {
            let mut saved = Hasher::new(alg).save();
            let mut at = 0;
            for step in [1, 62, 3, 4099, 64, 127, 9_001, 33, 36_610] {
                let mut h = Hasher::restore(&saved).unwrap();
                assert_eq!(h.position(), at as u64);
                h.update(&data[at..at + step]);
                at += step;
                saved = h.save();
            }
            assert_eq!(at, data.len());
            let h = Hasher::restore(&saved).unwrap();
            assert_eq!(h.finalize(), digest(alg, &data), "{alg}");
        }
    }

    #[test]
    fn saved_layout_is_pinned() {
        // MD5 of "abc" compresses nothing yet: the core holds the initial
        // chaining words and a zero block count, and the buffer holds the 3 bytes.
        let mut h = Hasher::new(HashAlg::Md5);
        h.update(b"abc");
        let mut expected = vec![1, 1, 3, 0, 0, 0, 0, 0, 0, 0];
        expected.extend_from_slice(&hex::decode("0123456789abcdeffedcba9876543210").unwrap());
        expected.extend_from_slice(&[0; 8]);
        expected.extend_from_slice(&[3, b'a', b'b', b'c']);
        expected.resize(HEADER_LEN + MD5_STATE_LEN, 0);
        assert_eq!(h.save(), expected);

        // After 65 bytes one block is compressed and one byte is buffered.
        for alg in ALL {
            let mut h = Hasher::new(alg);
            h.update(&[7; 65]);
            let saved = h.save();
            let state = &saved[HEADER_LEN..];
            let core_len = alg.state_len() - BUFFER_LEN;
            assert_eq!(state[core_len - 8..core_len], 1u64.to_le_bytes(), "{alg}");
            assert_eq!(state[core_len..core_len + 2], [1, 7], "{alg}");
        }
    }

    fn valid_saved(alg: HashAlg, len: usize) -> Vec<u8> {
        let mut h = Hasher::new(alg);
        h.update(&pattern(len));
        h.save()
    }

    #[test]
    fn restore_rejects_bad_header_and_length() {
        assert!(Hasher::restore(&[]).is_err());
        assert!(Hasher::restore(&[FORMAT_VERSION]).is_err());
        for alg in ALL {
            let good = valid_saved(alg, 1000);
            assert!(Hasher::restore(&good).is_ok());

            for version in [0, 2, 255] {
                let mut bad = good.clone();
                bad[0] = version;
                let err = Hasher::restore(&bad).unwrap_err();
                assert!(err.to_string().contains("version"), "{err}");
            }
            for tag in [0, 4, 255] {
                let mut bad = good.clone();
                bad[1] = tag;
                assert!(Hasher::restore(&bad).is_err(), "{alg} tag {tag}");
            }
            for len in 0..good.len() {
                assert!(
                    Hasher::restore(&good[..len]).is_err(),
                    "{alg} truncated to {len}"
                );
            }
            let mut longer = good.clone();
            longer.push(0);
            assert!(Hasher::restore(&longer).is_err());
        }
        // A state labelled with another algorithm has the wrong length.
        let mut md5_as_sha1 = valid_saved(HashAlg::Md5, 10);
        md5_as_sha1[1] = HashAlg::Sha1.tag();
        assert!(Hasher::restore(&md5_as_sha1).is_err());
    }

    #[test]
    fn restore_rejects_inconsistent_state() {
        for alg in ALL {
            let good = valid_saved(alg, 1000);
            let core_len = alg.state_len() - BUFFER_LEN;
            let buf_at = HEADER_LEN + core_len;

            // Position that does not match what the state has consumed.
            let mut bad = good.clone();
            bad[2..10].copy_from_slice(&999u64.to_le_bytes());
            assert!(Hasher::restore(&bad).is_err(), "{alg} position");

            // Block count that does not match the position.
            let mut bad = good.clone();
            bad[buf_at - 8] ^= 1;
            assert!(Hasher::restore(&bad).is_err(), "{alg} block count");

            // A full or overfull buffer, with the position adjusted so that only
            // the buffer check can catch it.
            for fill in [64u8, 200] {
                let mut bad = good.clone();
                bad[buf_at] = fill;
                let pos = (1000 / 64) * 64 + u64::from(fill);
                bad[2..10].copy_from_slice(&pos.to_le_bytes());
                assert!(Hasher::restore(&bad).is_err(), "{alg} fill {fill}");
            }

            // Non-zero bytes in the buffer padding.
            let mut bad = good.clone();
            *bad.last_mut().unwrap() = 1;
            assert!(Hasher::restore(&bad).is_err(), "{alg} padding");

            // Block count so large that the byte count overflows.
            let mut bad = good.clone();
            bad[buf_at - 8..buf_at].copy_from_slice(&u64::MAX.to_le_bytes());
            assert!(Hasher::restore(&bad).is_err(), "{alg} overflow");
        }
    }

    #[test]
    fn restore_rejects_garbage() {
        // A simple xorshift, to avoid needing an RNG in tests.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in [1, 5, 10, 50, 98, 102, 114, 200] {
            for _ in 0..50 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                assert!(Hasher::restore(&bytes).is_err(), "{bytes:?}");
            }
        }
        // Plausible header with garbage state.
        for alg in ALL {
            let mut bad = vec![FORMAT_VERSION, alg.tag()];
            bad.resize(HEADER_LEN + alg.state_len(), 0xAB);
            assert!(Hasher::restore(&bad).is_err(), "{alg}");
        }
    }

    #[test]
    fn alg_parse_and_names() {
        for (s, alg) in [
            ("md5", HashAlg::Md5),
            ("MD5", HashAlg::Md5),
            ("sha1", HashAlg::Sha1),
            ("SHA-1", HashAlg::Sha1),
            ("Sha1", HashAlg::Sha1),
            ("sha256", HashAlg::Sha256),
            ("SHA-256", HashAlg::Sha256),
            ("sHa-256", HashAlg::Sha256),
        ] {
            assert_eq!(HashAlg::parse(s), Some(alg), "{s}");
        }
        for s in [
            "", "md-5", "sha", "sha-2", "sha512", " md5", "md5 ", "sha_256", "sha--1",
        ] {
            assert_eq!(HashAlg::parse(s), None, "{s:?}");
        }
        for alg in ALL {
            assert_eq!(HashAlg::parse(alg.name()), Some(alg));
            assert_eq!(alg.to_string(), alg.name());
            assert_eq!(alg.hex_len(), alg.digest_len() * 2);
            let json = serde_json::to_string(&alg).unwrap();
            assert_eq!(json, format!("\"{}\"", alg.name()));
            assert_eq!(serde_json::from_str::<HashAlg>(&json).unwrap(), alg);
        }
        assert_eq!(
            [HashAlg::Md5, HashAlg::Sha1, HashAlg::Sha256].map(HashAlg::digest_len),
            [16, 20, 32]
        );
    }

    #[test]
    fn parse_hex_cases() {
        let md5_abc = "900150983cd24fb0d6963f7d28e17f72";
        let bytes = parse_hex(HashAlg::Md5, md5_abc).unwrap();
        assert_eq!(bytes, digest(HashAlg::Md5, b"abc"));
        assert_eq!(
            parse_hex(HashAlg::Md5, &md5_abc.to_uppercase()),
            Some(bytes)
        );

        // Right hex, wrong algorithm.
        assert_eq!(parse_hex(HashAlg::Sha1, md5_abc), None);
        assert_eq!(parse_hex(HashAlg::Sha256, md5_abc), None);
        // Wrong lengths.
        assert_eq!(parse_hex(HashAlg::Md5, ""), None);
        assert_eq!(parse_hex(HashAlg::Md5, &md5_abc[..31]), None);
        assert_eq!(parse_hex(HashAlg::Md5, &format!("{md5_abc}0")), None);
        assert_eq!(parse_hex(HashAlg::Md5, &format!("{md5_abc}00")), None);
        // Not hex, or padded.
        assert_eq!(
            parse_hex(HashAlg::Md5, &format!("{}g", &md5_abc[..31])),
            None
        );
        assert_eq!(
            parse_hex(HashAlg::Md5, &format!(" {}", &md5_abc[..31])),
            None
        );
        assert_eq!(
            parse_hex(HashAlg::Md5, &format!("0x{}", &md5_abc[..30])),
            None
        );
        // 32 bytes of UTF-8 that are not 32 characters must not panic.
        assert_eq!(parse_hex(HashAlg::Md5, &"é".repeat(16)), None);

        for alg in ALL {
            let d = digest(alg, b"xyz");
            assert_eq!(parse_hex(alg, &hex::encode(&d)), Some(d));
        }
    }

    #[test]
    fn clone_forks_the_state() {
        for alg in ALL {
            let mut a = Hasher::new(alg);
            a.update(b"hello ");
            let mut b = a.clone();
            a.update(b"world");
            b.update(b"there");
            assert_eq!(a.finalize(), digest(alg, b"hello world"));
            assert_eq!(b.finalize(), digest(alg, b"hello there"));
        }
    }

    #[test]
    fn debug_shows_alg_and_position_only() {
        let mut h = Hasher::new(HashAlg::Sha256);
        h.update(b"secret");
        let s = format!("{h:?}");
        assert!(s.contains("Sha256") && s.contains("position: 6"), "{s}");
    }

    /// Lengths around BLAKE3's 1 KiB chunks and our 1 MiB subtrees, where the tree's shape
    /// changes: the digest must equal the reference one-shot hash whatever the shape.
    const BLAKE3_LENGTHS: [usize; 14] = [
        0,
        1,
        1023,
        1024,
        1025,
        (1 << 20) - 1,
        1 << 20,
        (1 << 20) + 1,
        2 << 20,
        (2 << 20) + 1024,
        (3 << 20) + 5,
        4 << 20,
        (5 << 20) + 300_000,
        (8 << 20) + 1,
    ];

    #[test]
    fn blake3_tree_equals_the_reference_at_every_shape() {
        let data = pattern(9 << 20);
        for len in BLAKE3_LENGTHS {
            let want = blake3::hash(&data[..len]).to_hex().to_string();
            let mut h = Hasher::new(HashAlg::Blake3);
            // Uneven pieces, so subtree boundaries fall inside updates.
            for piece in data[..len].chunks(333_333) {
                h.update(piece);
            }
            assert_eq!(h.position(), len as u64);
            assert_eq!(h.finalize_hex(), want, "len {len}");
            assert_eq!(hex::encode(digest(HashAlg::Blake3, &data[..len])), want);
        }
    }

    #[test]
    fn blake3_restores_at_its_durable_position_and_continues_exactly() {
        let data = pattern(9 << 20);
        for len in BLAKE3_LENGTHS {
            let want = blake3::hash(&data[..len]).to_hex().to_string();
            for cut in [0, len / 3, len / 2, len.saturating_sub(1), len] {
                let mut h = Hasher::new(HashAlg::Blake3);
                h.update(&data[..cut]);
                let durable = h.durable_position();
                assert!(durable <= cut as u64 && cut as u64 - durable <= 2 << 20);
                assert_eq!(durable % SUBTREE, 0);
                let saved = h.save();
                let mut r = Hasher::restore(&saved).unwrap();
                assert_eq!(r.alg(), HashAlg::Blake3);
                assert_eq!(r.position(), durable);
                r.update(&data[durable as usize..len]);
                assert_eq!(r.finalize_hex(), want, "len {len} cut {cut}");
            }
        }
    }

    #[test]
    fn blake3_restore_rejects_inconsistent_trees() {
        let mut h = Hasher::new(HashAlg::Blake3);
        h.update(&pattern((3 << 20) + 1));
        let good = h.save();
        assert_eq!(
            good.len(),
            HEADER_LEN + 1 + 2 * 40,
            "two subtrees: 2 MiB + 1 MiB"
        );
        assert!(Hasher::restore(&good).is_ok());
        // Position off by one subtree.
        let mut bad = good.clone();
        bad[2..10].copy_from_slice(&(4u64 << 20).to_le_bytes());
        assert!(Hasher::restore(&bad).is_err());
        // Subtrees not decreasing (swap the two lengths).
        let mut bad = good.clone();
        let (a, b) = (HEADER_LEN + 1, HEADER_LEN + 1 + 40);
        let first: [u8; 8] = bad[a..a + 8].try_into().unwrap();
        let second: [u8; 8] = bad[b..b + 8].try_into().unwrap();
        bad[a..a + 8].copy_from_slice(&second);
        bad[b..b + 8].copy_from_slice(&first);
        assert!(Hasher::restore(&bad).is_err());
        // A length that is not a power of two, and truncation.
        let mut bad = good.clone();
        bad[b..b + 8].copy_from_slice(&((1u64 << 20) + 1).to_le_bytes());
        assert!(Hasher::restore(&bad).is_err());
        assert!(Hasher::restore(&good[..good.len() - 1]).is_err());
        assert!(Hasher::restore(&good[..HEADER_LEN]).is_err());
    }

    /// `update_both` gives each hasher exactly what `update` would, whether the pair runs
    /// together (two MD5s at the same alignment) or not (misaligned, other algorithms), and
    /// leaves states that save, restore and go on.
    #[test]
    fn update_both_equals_two_updates() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let cases = [
            (HashAlg::Md5, 0, HashAlg::Md5, 0),
            (HashAlg::Md5, 5 << 20, HashAlg::Md5, 0),
            (HashAlg::Md5, 70, HashAlg::Md5, 6),
            (HashAlg::Md5, 3, HashAlg::Md5, 10),
            (HashAlg::Md5, 0, HashAlg::Sha256, 0),
            (HashAlg::Blake3, 0, HashAlg::Md5, 0),
        ];
        for (alg_a, pre_a, alg_b, pre_b) in cases {
            let feed = |alg, pre: usize| {
                let mut h = Hasher::new(alg);
                h.update(&vec![0x5a; pre]);
                h
            };
            let (mut a, mut b) = (feed(alg_a, pre_a), feed(alg_b, pre_b));
            let (mut want_a, mut want_b) = (a.clone(), b.clone());
            for piece in data.chunks(65_537) {
                Hasher::update_both(&mut a, &mut b, piece);
                want_a.update(piece);
                want_b.update(piece);
            }
            assert_eq!(a.position(), want_a.position());
            assert_eq!(b.position(), want_b.position());
            // (A restored BLAKE3 hasher stands at its last saved subtree: not compared here.)
            if alg_a != HashAlg::Blake3 {
                a = Hasher::restore(&a.save()).unwrap();
            }
            a.update(b"tail");
            want_a.update(b"tail");
            assert_eq!(a.finalize_hex(), want_a.finalize_hex(), "{alg_a} {pre_a}");
            assert_eq!(b.finalize_hex(), want_b.finalize_hex(), "{alg_b} {pre_b}");
        }
    }
}
