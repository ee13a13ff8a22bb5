//! The local file being uploaded: positional reads that hash while they read, the
//! fingerprint that tells whether a file is the one an earlier run started uploading, and
//! the one-pass digest of a whole file and its chunks that the chunk dialect needs.

use crate::error::{Error, Result};
use bytes::Bytes;
use ferry_core::hash::{HashAlg, Hasher};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes read per `pread`: large enough to amortise the call, small enough to hash while the
/// data is still in the CPU cache.
const READ_BLOCK: usize = 1 << 20;
/// Bytes of the start, middle and end of a file that go into its fingerprint.
const SAMPLE: u64 = 64 * 1024;

/// A read in progress: the bytes and their digest.
pub type ReadAhead = tokio::task::JoinHandle<Result<(Bytes, Option<Vec<u8>>)>>;

/// What identifies "the same file" across runs: where it is, how big, when it was last
/// modified, and a digest of three 64 KiB samples (start, middle, end) that catches edits
/// which keep size and modification time (`touch -r`, some sync tools).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub path: String,
    pub size: u64,
    pub mtime_secs: i64,
    pub mtime_nanos: u32,
    /// SHA-256 (hex) of the size and the three samples.
    pub sample: String,
}

/// An open file to upload.
#[derive(Clone)]
pub struct Source {
    /// As the user named it; what events and messages show.
    pub display: String,
    pub abs: PathBuf,
    pub size: u64,
    modified: SystemTime,
    file: Arc<File>,
}

fn mtime_parts(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => (
            -(e.duration().as_secs() as i64),
            e.duration().subsec_nanos(),
        ),
    }
}

impl Source {
    pub async fn open(path: &Path) -> Result<Source> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || {
            let err = |e| Error::local(&path, e);
            let abs = std::fs::canonicalize(&path).map_err(err)?;
            let file = File::open(&abs).map_err(err)?;
            let meta = file.metadata().map_err(err)?;
            if !meta.is_file() {
                return Err(Error::local(
                    &path,
                    std::io::Error::other("not a regular file"),
                ));
            }
            Ok(Source {
                display: path.display().to_string(),
                abs,
                size: meta.len(),
                modified: meta.modified().map_err(err)?,
                file: Arc::new(file),
            })
        })
        .await
        .expect("file open task panicked")
    }

    /// The file's name (last path component), for the server's metadata.
    pub fn name(&self) -> String {
        self.abs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Reads `len` bytes at `offset`, hashing them with `alg` as they are read.
    pub async fn read(
        &self,
        offset: u64,
        len: usize,
        alg: Option<HashAlg>,
    ) -> Result<(Bytes, Option<Vec<u8>>)> {
        self.read_ahead(offset, len, alg)
            .await
            .expect("file read task panicked")
    }

    /// [`Source::read`] started now on the blocking pool, to be awaited later: the next
    /// request body is read and hashed while the current one is on the wire.
    pub fn read_ahead(&self, offset: u64, len: usize, alg: Option<HashAlg>) -> ReadAhead {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            let mut hasher = alg.map(Hasher::new);
            for (i, block) in buf.chunks_mut(READ_BLOCK).enumerate() {
                let at = offset + (i * READ_BLOCK) as u64;
                this.file
                    .read_exact_at(block, at)
                    .map_err(|e| this.read_error(e))?;
                if let Some(h) = hasher.as_mut() {
                    h.update(block);
                }
            }
            Ok((Bytes::from(buf), hasher.map(Hasher::finalize)))
        })
    }

    fn read_error(&self, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::FileChanged {
                path: self.display.clone().into(),
            }
        } else {
            Error::local(&self.display, e)
        }
    }

    pub async fn fingerprint(&self) -> Result<Fingerprint> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let size = this.size;
            let mut h = Hasher::new(HashAlg::Sha256);
            h.update(&size.to_le_bytes());
            let mut buf = vec![0u8; SAMPLE as usize];
            let mid = (size / 2).saturating_sub(SAMPLE / 2);
            let last = size.saturating_sub(SAMPLE);
            for at in [0, mid, last] {
                let n = SAMPLE.min(size - at) as usize;
                this.file
                    .read_exact_at(&mut buf[..n], at)
                    .map_err(|e| this.read_error(e))?;
                h.update(&buf[..n]);
            }
            let (mtime_secs, mtime_nanos) = mtime_parts(this.modified);
            Ok(Fingerprint {
                path: this.abs.to_string_lossy().into_owned(),
                size,
                mtime_secs,
                mtime_nanos,
                sample: h.finalize_hex(),
            })
        })
        .await
        .expect("fingerprint task panicked")
    }

    /// Fails when the file's size or modification time differ from when it was opened.
    pub async fn check_unchanged(&self) -> Result<()> {
        let meta = tokio::fs::metadata(&self.abs)
            .await
            .map_err(|e| Error::local(&self.display, e))?;
        if meta.len() != self.size || meta.modified().ok() != Some(self.modified) {
            return Err(Error::FileChanged {
                path: self.display.clone().into(),
            });
        }
        Ok(())
    }

    /// One pass over the file computing the whole file's digest and every chunk's, with
    /// `progress(bytes read)` along the way. An empty file has no chunks.
    ///
    /// MD5 chunks that start on MD5 block boundaries (a chunk size that is a multiple of 64,
    /// as any real one is) take one thread: [`Hasher::update_both`] runs the chunk's and the
    /// file's states in one loop, both digests for little more than one's CPU. Otherwise
    /// the two digests run on two threads (the reader hashes chunks, a second thread the
    /// whole file), the pass's time about one digest's on two cores.
    pub async fn digest_chunks(
        &self,
        alg: HashAlg,
        chunk_size: u64,
        progress: impl Fn(u64) + Send + 'static,
    ) -> Result<(String, Vec<String>)> {
        let this = self.clone();
        if alg == HashAlg::Md5 && chunk_size.is_multiple_of(64) {
            return tokio::task::spawn_blocking(move || {
                this.digest_paired(alg, chunk_size, progress)
            })
            .await
            .expect("hash task panicked");
        }
        tokio::task::spawn_blocking(move || {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(4);
            std::thread::scope(|s| {
                let whole = s.spawn(move || {
                    let mut h = Hasher::new(alg);
                    for block in rx {
                        h.update(&block);
                    }
                    h.finalize_hex()
                });
                let chunks = this.walk_chunks(alg, chunk_size, progress, |h, block| {
                    h.update(&block);
                    // The whole-file thread only stops early if it panicked, which `join`
                    // reports below.
                    let _ = tx.send(Bytes::from(block));
                    None
                });
                drop(tx);
                let whole = whole.join().expect("whole-file hash thread panicked");
                Ok((whole, chunks?))
            })
        })
        .await
        .expect("hash task panicked")
    }

    /// [`Source::digest_chunks`] on this thread, feeding each block to the chunk's and the
    /// file's hashers together.
    fn digest_paired(
        &self,
        alg: HashAlg,
        chunk_size: u64,
        progress: impl Fn(u64),
    ) -> Result<(String, Vec<String>)> {
        let mut whole = Hasher::new(alg);
        let chunks = self.walk_chunks(alg, chunk_size, progress, |h, block| {
            Hasher::update_both(&mut whole, h, &block);
            Some(block)
        })?;
        Ok((whole.finalize_hex(), chunks))
    }

    /// Reads the file in blocks of at most [`READ_BLOCK`] that never straddle a chunk
    /// boundary, handing each to `feed` with its chunk's hasher, and `progress(bytes read)`
    /// after it; returns the chunks' digests. `feed` may hand the block's buffer back to be
    /// read into again.
    fn walk_chunks(
        &self,
        alg: HashAlg,
        chunk_size: u64,
        progress: impl Fn(u64),
        mut feed: impl FnMut(&mut Hasher, Vec<u8>) -> Option<Vec<u8>>,
    ) -> Result<Vec<String>> {
        let mut chunks = Vec::new();
        let mut spare = None;
        let mut at = 0u64;
        while at < self.size {
            let end = (at + chunk_size).min(self.size);
            let mut h = Hasher::new(alg);
            while at < end {
                let n = (end - at).min(READ_BLOCK as u64) as usize;
                let mut block: Vec<u8> = spare.take().unwrap_or_default();
                block.resize(n, 0);
                self.file
                    .read_exact_at(&mut block, at)
                    .map_err(|e| self.read_error(e))?;
                at += n as u64;
                spare = feed(&mut h, block);
                progress(at);
            }
            chunks.push(h.finalize_hex());
        }
        Ok(chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::hash::digest;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i / 4093) as u8)
            .collect()
    }

    #[tokio::test]
    async fn one_pass_digests_match_one_shot_digests() {
        let dir = tempfile::tempdir().unwrap();
        for len in [0usize, 1, 1000, 3 * READ_BLOCK + 17] {
            let data = pattern(len);
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &data).unwrap();
            let src = Source::open(&path).await.unwrap();
            // Chunks on MD5 block boundaries (one thread, paired states) and off them (two
            // threads); chunks larger and smaller than a read block.
            for chunk in [1_000_003u64, 1 << 20, 3 * 64 * 1024 + 64] {
                let (whole, chunks) = src
                    .digest_chunks(HashAlg::Md5, chunk, |_| {})
                    .await
                    .unwrap();
                assert_eq!(
                    whole,
                    hex::encode(digest(HashAlg::Md5, &data)),
                    "{len} {chunk}"
                );
                // An empty file has no chunks.
                let want: Vec<String> = data
                    .chunks(chunk as usize)
                    .map(|c| hex::encode(digest(HashAlg::Md5, c)))
                    .collect();
                assert_eq!(chunks, want, "{len} {chunk}");
            }

            let (bytes, d) = src
                .read(len as u64 / 3, len / 2, Some(HashAlg::Sha256))
                .await
                .unwrap();
            let slice = &data[len / 3..len / 3 + len / 2];
            assert_eq!(&bytes[..], slice);
            assert_eq!(d.unwrap(), digest(HashAlg::Sha256, slice));
        }
    }

    #[tokio::test]
    async fn fingerprint_changes_with_content_of_the_same_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut data = pattern(1 << 20);
        std::fs::write(&path, &data).unwrap();
        let a = Source::open(&path)
            .await
            .unwrap()
            .fingerprint()
            .await
            .unwrap();
        assert_eq!(
            a,
            Source::open(&path)
                .await
                .unwrap()
                .fingerprint()
                .await
                .unwrap()
        );
        data[(1 << 19) + 5] ^= 1; // the middle sample
        std::fs::write(&path, &data).unwrap();
        let b = Source::open(&path)
            .await
            .unwrap()
            .fingerprint()
            .await
            .unwrap();
        assert_ne!(a.sample, b.sample);
        assert_eq!(a.path, b.path);
    }
}
