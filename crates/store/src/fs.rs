//! [`FsBlobStore`]: upload bytes as plain files in a local directory.
//!
//! # Layout
//!
//! Everything lives under the root directory given to [`FsBlobStore::open`], in three
//! sub-directories created (and fsynced) at open time:
//!
//! ```text
//! <root>/partial/<id>            the upload being written, bytes at their final offsets
//! <root>/complete/<id>           the finished file, renamed from partial/ by publish()
//! <root>/staging/<id>.<index>    one chunk whose offset is not known yet
//! ```
//!
//! `<id>` is an [`UploadId`]: 32 lowercase hex characters, validated when the id is built,
//! so it can be used as a file name as it is. Nothing a client sends (file names,
//! extensions) ever becomes part of a path; those stay in the metadata record.
//!
//! Partial and complete blobs are kept in separate directories, rather than told apart by a
//! suffix, so that publishing is a single `rename(2)` within one file system (atomic, no
//! byte is copied) and so that an operator can see at a glance what is finished. Staging
//! blobs sit beside them on the same file system so that `copy_file_range(2)` can place
//! them into the partial without the bytes passing through user space.
//!
//! # Durability
//!
//! A write is durable once [`BlobWrite::sync`] returned (`fdatasync`). Creating a file or
//! renaming it is durable once the directory that holds the entry has been fsynced, which
//! this store does after every create, rename and staging creation; see
//! [`FsBlobStore::publish`] for the reasoning.
//!
//! Every blocking system call made from an async method runs on tokio's blocking pool, so
//! a slow disk never stalls the reactor.

use async_trait::async_trait;
use bytes::Bytes;
use ferry_core::crash;
use ferry_core::store::{BlobKind, BlobRead, BlobStore, BlobWrite, StoredBlob};
use ferry_core::upload::UploadId;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

/// Size of the user-space buffer used when the kernel cannot copy between files itself.
const COPY_BUF: usize = 1 << 20;

/// A blob store on a local file system. Cheap to clone.
#[derive(Clone, Debug)]
pub struct FsBlobStore {
    dirs: Arc<Dirs>,
}

/// The root and its three sub-directories, computed once.
#[derive(Debug)]
struct Dirs {
    root: PathBuf,
    partial: PathBuf,
    complete: PathBuf,
    staging: PathBuf,
}

impl Dirs {
    fn partial(&self, id: &UploadId) -> PathBuf {
        self.partial.join(id.as_str())
    }

    fn complete(&self, id: &UploadId) -> PathBuf {
        self.complete.join(id.as_str())
    }

    fn staging(&self, id: &UploadId, index: usize) -> PathBuf {
        self.staging.join(format!("{id}.{index}"))
    }

    fn blob(&self, id: &UploadId, kind: BlobKind) -> PathBuf {
        match kind {
            BlobKind::Partial => self.partial(id),
            BlobKind::Complete => self.complete(id),
        }
    }
}

impl FsBlobStore {
    /// Opens (creating if needed) a store rooted at `root`.
    ///
    /// The sub-directories are fsynced, and so is the parent of any directory this call
    /// created, so that a blob created right after start-up cannot lose its directory in a
    /// crash. This blocks; call it at start-up, not from a busy runtime thread.
    pub fn open(root: PathBuf) -> io::Result<Self> {
        let dirs = Dirs {
            partial: root.join("partial"),
            complete: root.join("complete"),
            staging: root.join("staging"),
            root,
        };
        let root_created = create_dir(&dirs.root)?;
        let mut sub_created = false;
        for dir in [&dirs.partial, &dirs.complete, &dirs.staging] {
            sub_created |= create_dir(dir)?;
            sync_dir(dir)?;
        }
        if sub_created || root_created {
            sync_dir(&dirs.root)?;
        }
        if let Some(parent) = dirs.root.parent().filter(|_| root_created) {
            // The root's own entry lives in its parent. Best effort: the parent may be
            // unreadable (e.g. a mount point owned by someone else), and the entry of a
            // directory we just created is then made durable by the next journal commit.
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            if let Err(e) = sync_dir(parent) {
                tracing::debug!(dir = %parent.display(), error = %e, "could not fsync the parent of the blob root");
            }
        }
        Ok(FsBlobStore {
            dirs: Arc::new(dirs),
        })
    }

    /// The root directory this store was opened on.
    pub fn root(&self) -> &Path {
        &self.dirs.root
    }

    /// Runs `f` on the blocking pool with this store's directories.
    async fn blocking<T, F>(&self, f: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Dirs) -> io::Result<T> + Send + 'static,
    {
        let dirs = Arc::clone(&self.dirs);
        tokio::task::spawn_blocking(move || f(&dirs))
            .await
            .map_err(io::Error::other)?
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn create(&self, id: &UploadId) -> io::Result<()> {
        let id = id.clone();
        self.blocking(move |dirs| {
            let path = dirs.partial(&id);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                // A new directory entry is only durable once its directory is fsynced;
                // without this a crash could lose the empty file the metadata already
                // points at, and the first write would then fail with NotFound.
                Ok(_) => {
                    crash::event("fs.create", || rel(&path));
                    sync_dir(&dirs.partial)
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn writer(&self, id: &UploadId) -> io::Result<Box<dyn BlobWrite>> {
        // Opened by the first write, on the blocking thread that makes it: a round trip to
        // the blocking pool less per request (writers are used on blocking threads only).
        Ok(Box::new(FsBlobWrite {
            file: OnceLock::new(),
            path: self.dirs.partial(id),
        }))
    }

    async fn staging_writer(&self, id: &UploadId, index: usize) -> io::Result<Box<dyn BlobWrite>> {
        let id = id.clone();
        self.blocking(move |dirs| {
            let path = dirs.staging(&id, index);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?;
            crash::event("fs.create", || rel(&path));
            // The metadata records a staged chunk as soon as its bytes are synced, and it may
            // be placed only after a restart; the entry must survive a crash as well as the
            // bytes, so the directory is synced here (staging is rare: one chunk at most).
            sync_dir(&dirs.staging)?;
            Ok(Box::new(FsBlobWrite {
                file: OnceLock::from(file),
                path,
            }) as Box<dyn BlobWrite>)
        })
        .await
    }

    async fn place_staged(
        &self,
        id: &UploadId,
        index: usize,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let id = id.clone();
        self.blocking(move |dirs| {
            let staging_path = dirs.staging(&id, index);
            let src = File::open(&staging_path)?;
            let staged = src.metadata()?.len();
            if staged < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("staging blob {id}.{index} holds {staged} bytes, {len} expected"),
                ));
            }
            let dst = OpenOptions::new().write(true).open(dirs.partial(&id))?;
            copy_range(&src, 0, &dst, offset, len)?;
            dst.sync_data()?;
            crash::event("fs.place_staged.synced", || rel(&staging_path));
            Ok(())
        })
        .await
    }

    async fn remove_staged(&self, id: &UploadId, index: usize) -> io::Result<()> {
        let id = id.clone();
        self.blocking(move |dirs| {
            let path = dirs.staging(&id, index);
            // Not made durable: a staging blob that comes back after a crash is listed by
            // `list` and removed by the sweep at start-up.
            if remove_if_exists(&path)? {
                crash::event("fs.unlink", || rel(&path));
            }
            Ok(())
        })
        .await
    }

    async fn discard(&self, id: &UploadId, ranges: Vec<std::ops::Range<u64>>) -> io::Result<()> {
        let id = id.clone();
        self.blocking(move |dirs| {
            let file = match OpenOptions::new().write(true).open(dirs.partial(&id)) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            for r in ranges.iter().filter(|r| r.end > r.start) {
                punch_hole(&file, r.start, r.end - r.start)?;
            }
            Ok(())
        })
        .await
    }

    fn can_concatenate(&self) -> bool {
        true
    }

    async fn copy_complete(
        &self,
        src: &UploadId,
        dst: &UploadId,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let (src, dst) = (src.clone(), dst.clone());
        self.blocking(move |dirs| {
            let from = File::open(dirs.complete(&src))?;
            let have = from.metadata()?.len();
            if have < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("complete blob {src} holds {have} bytes, {len} expected"),
                ));
            }
            let to = OpenOptions::new().write(true).open(dirs.partial(&dst))?;
            // The kernel copies (and may share extents on file systems that reflink); the
            // bytes never pass through user-space buffers.
            copy_range(&from, 0, &to, offset, len)?;
            to.sync_data()?;
            crash::event("fs.copy_complete.synced", || rel(&dirs.partial(&dst)));
            Ok(())
        })
        .await
    }

    /// Renames `partial/<id>` to `complete/<id>`, durably.
    ///
    /// The discipline is the usual one for atomic replacement on POSIX file systems: make
    /// the file's bytes durable (fsync the file) *before* the rename, so that the new name
    /// can never point at data that is not on disk yet; then fsync the directories whose
    /// entries changed, because `rename(2)` only changes them in memory, and only an fsync of
    /// a directory makes its entries durable. `complete/` is synced so that the new name
    /// survives a crash; `partial/` is synced so that the old one does not come back beside
    /// it (and get treated as an unfinished upload at recovery).
    async fn publish(&self, id: &UploadId) -> io::Result<()> {
        let id = id.clone();
        self.blocking(move |dirs| {
            let partial = dirs.partial(&id);
            let complete = dirs.complete(&id);
            match File::open(&partial) {
                Ok(file) => {
                    file.sync_all()?;
                    drop(file);
                    crash::event("fs.publish.synced", || rel(&partial));
                    std::fs::rename(&partial, &complete)?;
                    crash::event("fs.rename", || {
                        format!("{} {}", rel(&partial), rel(&complete))
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Already published (say the process died before the metadata commit).
                    // The syncs below still run: the earlier call may have failed between
                    // its rename and its directory syncs, and "published" means durably.
                    File::open(&complete)?.sync_all()?;
                }
                Err(e) => return Err(e),
            }
            sync_dir(&dirs.complete)?;
            sync_dir(&dirs.partial)
        })
        .await
    }

    async fn open(&self, id: &UploadId, kind: BlobKind) -> io::Result<Arc<dyn BlobRead>> {
        let id = id.clone();
        self.blocking(move |dirs| {
            let file = File::open(dirs.blob(&id, kind))?;
            let len = file.metadata()?.len();
            let immutable = kind == BlobKind::Complete;
            Ok(Arc::new(FsBlobRead {
                file,
                len,
                immutable,
            }) as Arc<dyn BlobRead>)
        })
        .await
    }

    async fn modified(&self, id: &UploadId) -> io::Result<SystemTime> {
        let id = id.clone();
        self.blocking(move |dirs| std::fs::metadata(dirs.complete(&id))?.modified())
            .await
    }

    async fn delete(&self, id: &UploadId) -> io::Result<()> {
        let id = id.clone();
        self.blocking(move |dirs| {
            let mut removed = false;
            let mut remove = |path: &Path| -> io::Result<()> {
                if remove_if_exists(path)? {
                    crash::event("fs.unlink", || rel(path));
                    removed = true;
                }
                Ok(())
            };
            for path in [dirs.partial(&id), dirs.complete(&id)] {
                remove(&path)?;
            }
            let prefix = format!("{id}.");
            for entry in std::fs::read_dir(&dirs.staging)? {
                let entry = entry?;
                if entry.file_name().as_bytes().starts_with(prefix.as_bytes()) {
                    remove(&entry.path())?;
                }
            }
            // The metadata row is gone already (the engine forgets an upload before it
            // removes its bytes). Syncing the directories keeps a crash from bringing the
            // files back; the start-up sweep would remove them, but only at the next start.
            if removed {
                for dir in [&dirs.partial, &dirs.complete, &dirs.staging] {
                    sync_dir(dir)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn list(&self) -> io::Result<Vec<StoredBlob>> {
        self.blocking(|dirs| {
            let mut found = Vec::new();
            for dir in [&dirs.partial, &dirs.complete, &dirs.staging] {
                let staging = dir == &dirs.staging;
                for entry in std::fs::read_dir(dir)? {
                    let name = entry?.file_name();
                    let Some(name) = name.to_str() else { continue };
                    // Only names this store creates; anything else is not ours to judge.
                    let blob = if staging {
                        name.split_once('.').and_then(|(id, i)| {
                            Some(StoredBlob {
                                id: UploadId::parse(id)?,
                                staging: Some(i.parse().ok()?),
                            })
                        })
                    } else {
                        UploadId::parse(name).map(|id| StoredBlob { id, staging: None })
                    };
                    found.extend(blob);
                }
            }
            Ok(found)
        })
        .await
    }

    fn free_space(&self) -> io::Result<Option<u64>> {
        // One statvfs(2) of the root: a few microseconds, no blocking-pool hop needed.
        let c_path = CString::new(self.dirs.root.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `c_path` is a valid NUL-terminated string and `st` points to writable
        // memory of the size statvfs(2) fills; it is read only after the call succeeded.
        #[allow(unsafe_code)]
        let st = unsafe {
            if libc::statvfs(c_path.as_ptr(), st.as_mut_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            st.assume_init()
        };
        // Blocks available to an unprivileged writer, as `df` reports them.
        Ok(Some(
            (st.f_bavail as u64).saturating_mul(st.f_frsize as u64),
        ))
    }

    async fn ping(&self) -> io::Result<()> {
        self.blocking(|dirs| {
            for dir in [&dirs.root, &dirs.partial, &dirs.complete, &dirs.staging] {
                if !std::fs::metadata(dir)?.is_dir() {
                    return Err(io::Error::other(format!(
                        "{} is not a directory",
                        dir.display()
                    )));
                }
                check_writable(dir)?;
            }
            Ok(())
        })
        .await
    }
}

/// A writable partial or staging blob, opened by its first use.
struct FsBlobWrite {
    file: OnceLock<File>,
    path: PathBuf,
}

impl FsBlobWrite {
    fn file(&self) -> io::Result<&File> {
        if let Some(f) = self.file.get() {
            return Ok(f);
        }
        // No `create`: writing into an upload whose partial blob is gone (expired and
        // deleted meanwhile) must fail, not silently start a new sparse file. No `truncate`:
        // earlier bytes of the upload are kept.
        let file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        Ok(self.file.get_or_init(|| file))
    }
}

impl BlobWrite for FsBlobWrite {
    fn write_at(&mut self, offset: u64, bufs: &[Bytes]) -> io::Result<()> {
        write_all_vectored_at(self.file()?, offset, bufs)
    }

    fn sync(&mut self) -> io::Result<()> {
        // fdatasync also flushes the size when writes extended the file, which is all the
        // metadata a reader needs; timestamps are not worth the extra journal write.
        self.file()?.sync_data()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file()?.read_at(buf, offset)
    }
}

/// A read-only shared mapping of a whole file, unmapped on drop. Only complete blobs are
/// mapped: they are never truncated or rewritten (a new upload gets a new file, deletion
/// unlinks, and an unlinked file stays mapped intact), so the bytes under it cannot change
/// and no access can fault with SIGBUS.
struct Mapping {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only memory owned by this value alone; sharing `&[u8]` views
// of it across threads is as safe as sharing any immutable byte slice.
unsafe impl Send for Mapping {}
// SAFETY: as above; nothing mutates it.
unsafe impl Sync for Mapping {}

impl Mapping {
    #[allow(unsafe_code)]
    fn new(file: &File, offset: u64, len: usize) -> io::Result<Mapping> {
        let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        // SAFETY: a fresh mapping of `len` (> 0) bytes of an open file from a page-aligned
        // `offset`, read-only and shared; the kernel chooses the address. Failure is
        // MAP_FAILED, checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(file),
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `ptr` is the mapping just created; the advice only tunes readahead.
        unsafe { libc::madvise(ptr, len, libc::MADV_SEQUENTIAL) };
        let ptr = std::ptr::NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Mapping { ptr, len })
    }
}

impl AsRef<[u8]> for Mapping {
    #[allow(unsafe_code)]
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` is mapped readable for as long as `self` lives, and the
        // file's bytes under it never change (see the type's docs).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`; no slice of it outlives
        // `self` (Bytes keeps the owner alive while any view exists).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A readable blob, with its length fixed when it was opened (a partial blob can grow
/// afterwards; callers read what existed then).
struct FsBlobRead {
    file: File,
    len: u64,
    /// A complete blob: published by rename and never written again, so it may be mapped.
    immutable: bool,
}

impl BlobRead for FsBlobRead {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn read_cached(&self, offset: u64, len: usize) -> Option<Bytes> {
        let left = usize::try_from(self.len.checked_sub(offset)?).unwrap_or(usize::MAX);
        let want = len.min(left);
        if want == 0 {
            return None;
        }
        let mut buf = bytes::BytesMut::with_capacity(want);
        let n = read_nowait(&self.file, &mut buf.spare_capacity_mut()[..want], offset).ok()?;
        if n == 0 {
            return None;
        }
        // SAFETY: the kernel wrote the first `n` bytes of the spare capacity.
        #[allow(unsafe_code)]
        unsafe {
            buf.set_len(n)
        };
        Some(buf.freeze())
    }

    fn map(&self, offset: u64, len: usize) -> Option<Bytes> {
        let end = offset.checked_add(len as u64)?;
        if !self.immutable || len == 0 || end > self.len {
            return None;
        }
        // mmap offsets must be page-aligned: map from the page holding `offset`.
        let page = page_size();
        let start = offset - offset % page;
        let lead = usize::try_from(offset - start).ok()?;
        match Mapping::new(&self.file, start, lead + len) {
            Ok(m) => Some(Bytes::from_owner(m).slice(lead..)),
            Err(e) => {
                tracing::debug!(error = %e, "mmap failed; reading instead");
                None
            }
        }
    }
}

/// `preadv2(RWF_NOWAIT)`: reads into `buf` only what the page cache holds, failing with
/// `EAGAIN` rather than waiting for the disk (`EOPNOTSUPP` on file systems without it).
/// Fills `buf` from its start and returns the number of bytes written there.
#[allow(unsafe_code)]
fn read_nowait(
    file: &File,
    buf: &mut [std::mem::MaybeUninit<u8>],
    offset: u64,
) -> io::Result<usize> {
    let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: one iovec over `buf`, valid and writable for `buf.len()` bytes for the whole
    // call; the kernel writes at most that many and returns how many (or -1).
    let n = unsafe {
        libc::preadv2(
            std::os::fd::AsRawFd::as_raw_fd(file),
            &iov,
            1,
            offset,
            libc::RWF_NOWAIT,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    #[allow(unsafe_code)]
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Creates `dir` if it is missing; tells whether it did.
fn create_dir(dir: &Path) -> io::Result<bool> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A missing ancestor: create the whole chain, then report it as new.
            std::fs::create_dir_all(dir)?;
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

/// Makes the entries of a directory durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()?;
    crash::event("fs.sync_dir", || {
        dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    });
    Ok(())
}

/// `dir/name` of a blob path, as the crash trace names it.
fn rel(path: &Path) -> String {
    let mut parts = path.iter().rev().take(2).collect::<Vec<_>>();
    parts.reverse();
    parts
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Removes a file, telling whether it existed.
fn remove_if_exists(path: &Path) -> io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Fails unless the current process may create and remove entries in `dir`.
fn check_writable(dir: &Path) -> io::Result<()> {
    let c_path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call, and
    // access(2) only reads it.
    let rc = unsafe { libc::access(c_path.as_ptr(), libc::W_OK | libc::X_OK) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Writes every buffer of `bufs`, back to back, starting at `offset`.
///
/// On Linux this is `pwritev(2)`: one system call for a whole batch of network buffers
/// instead of one per buffer, without first copying them into a single allocation.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn write_all_vectored_at(file: &File, offset: u64, bufs: &[Bytes]) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    // The kernel refuses more than UIO_MAXIOV (1024) iovecs in one call with EINVAL.
    const IOV_MAX: usize = libc::UIO_MAXIOV as usize;

    let total: u64 = bufs.iter().map(|b| b.len() as u64).sum();
    if offset
        .checked_add(total)
        .is_none_or(|end| end > i64::MAX as u64)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "write extends past the largest file offset",
        ));
    }

    let fd = file.as_raw_fd();
    let mut pos = offset;
    // Next buffer to write, and how much of it is already written.
    let mut next = 0;
    let mut skip = 0;
    let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(bufs.len().min(IOV_MAX));
    while next < bufs.len() {
        // Empty buffers would only waste iovec slots; skipping them here also keeps the
        // "wrote 0 bytes" check below meaningful.
        if bufs[next].len() == skip {
            next += 1;
            skip = 0;
            continue;
        }
        let Ok(off) = libc::off_t::try_from(pos) else {
            // Only on 32-bit targets without large-file offsets: let std's pwrite64 do it.
            return write_each_at(file, pos, &bufs[next..], skip);
        };
        iovecs.clear();
        for (i, buf) in bufs[next..].iter().take(IOV_MAX).enumerate() {
            let from = if i == 0 { skip } else { 0 };
            let part = &buf[from..];
            iovecs.push(libc::iovec {
                iov_base: part.as_ptr() as *mut libc::c_void,
                iov_len: part.len(),
            });
        }
        // SAFETY: every iovec points into a `Bytes` in `bufs`, borrowed for the whole call,
        // and describes exactly the initialised bytes of it; pwritev only reads through
        // them. `iovecs.len()` is at most IOV_MAX, which fits a c_int.
        let n = unsafe { libc::pwritev(fd, iovecs.as_ptr(), iovecs.len() as libc::c_int, off) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwritev wrote no bytes",
            ));
        }
        // A short write (a signal, a full disk on the way to ENOSPC) ends anywhere in the
        // batch: walk the buffers forward by the count actually written.
        let mut written = n as usize;
        pos += written as u64;
        while written > 0 {
            let left = bufs[next].len() - skip;
            if written >= left {
                written -= left;
                next += 1;
                skip = 0;
            } else {
                skip += written;
                written = 0;
            }
        }
    }
    Ok(())
}

/// Portable version: one positional write per buffer.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn write_all_vectored_at(file: &File, offset: u64, bufs: &[Bytes]) -> io::Result<()> {
    write_each_at(file, offset, bufs, 0)
}

/// Writes `bufs` (the first one from byte `skip`) back to back from `offset`, one
/// `write_all_at` per buffer.
fn write_each_at(file: &File, mut offset: u64, bufs: &[Bytes], mut skip: usize) -> io::Result<()> {
    for buf in bufs {
        let part = &buf[skip..];
        skip = 0;
        file.write_all_at(part, offset)?;
        offset += part.len() as u64;
    }
    Ok(())
}

/// Copies `len` bytes of `src` from `src_off` into `dst` at `dst_off`.
///
/// On Linux `copy_file_range(2)` lets the kernel do it (and file systems that support
/// reflinks share the extents instead of copying them); where it is not available for these
/// two files, a plain read/write loop takes over from wherever the kernel copy stopped.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn copy_range(src: &File, src_off: u64, dst: &File, dst_off: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    let too_far = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "offset past the largest file offset",
        )
    };
    let mut in_off = src_off.try_into().map_err(|_| too_far())?;
    let mut out_off = dst_off.try_into().map_err(|_| too_far())?;
    let mut done: u64 = 0;
    while done < len {
        // Capped so a single call stays interruptible and the count fits ssize_t.
        let chunk = (len - done).min(1 << 30) as usize;
        // SAFETY: both descriptors are open for the duration of the call (borrowed Files),
        // and the offset pointers refer to live locals of the type the binding expects; the
        // kernel updates them by the number of bytes copied.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut in_off,
                dst.as_raw_fd(),
                &mut out_off,
                chunk,
                0,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                // EXDEV: different file systems (before Linux 5.19, or between unlike
                // ones); ENOSYS: a kernel before 4.5 or a seccomp filter; EOPNOTSUPP: the
                // file system has no such operation. EINVAL and EPERM come back from some
                // file systems (overlay, FUSE, NFS) for the same reasons; std's own
                // `io::copy` falls back on the same set.
                Some(
                    libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL | libc::EPERM,
                ) => {
                    return copy_with_buffer(src, src_off + done, dst, dst_off + done, len - done);
                }
                _ => return Err(err),
            }
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("source ended after {done} of {len} bytes"),
            ));
        }
        done += n as u64;
    }
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn copy_range(src: &File, src_off: u64, dst: &File, dst_off: u64, len: u64) -> io::Result<()> {
    copy_with_buffer(src, src_off, dst, dst_off, len)
}

/// Copies through a 1 MiB user-space buffer: the fallback when the kernel cannot copy.
fn copy_with_buffer(
    src: &File,
    mut src_off: u64,
    dst: &File,
    mut dst_off: u64,
    len: u64,
) -> io::Result<()> {
    let mut buf = vec![0u8; COPY_BUF.min(usize::try_from(len).unwrap_or(COPY_BUF))];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = match src.read_at(&mut buf[..want], src_off) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("source ended after {} of {len} bytes", len - left),
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all_at(&buf[..n], dst_off)?;
        src_off += n as u64;
        dst_off += n as u64;
        left -= n as u64;
    }
    Ok(())
}

/// Deallocates `len` bytes at `offset` (they read as zeros afterwards; the size stays). A file
/// system without hole punching (EOPNOTSUPP) keeps the bytes: only space is at stake.
fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let Ok(off) = libc::off_t::try_from(offset) else {
        return Ok(());
    };
    // A range "to the end" may be given as huge: nothing lies past off_t's maximum anyway.
    let n = libc::off_t::try_from(len)
        .unwrap_or(libc::off_t::MAX)
        .min(libc::off_t::MAX - off);
    // SAFETY: fallocate(2) on a descriptor this function borrows for the call's duration; it
    // reads no memory of ours.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            n,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(()),
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Downloads serve complete blobs as slices of a mapping: it must hold exactly the
    /// file's bytes, and a partial blob (still written) or an empty one is never mapped.
    #[tokio::test]
    async fn complete_blobs_map_to_their_bytes_and_partial_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path().to_owned()).unwrap();
        let id = UploadId::generate();
        store.create(&id).await.unwrap();
        let data = Bytes::from(pattern(3 * 4096 + 17, 9));
        let mut w = store.writer(&id).await.unwrap();
        w.write_at(0, std::slice::from_ref(&data)).unwrap();
        w.sync().unwrap();
        drop(w);
        let len = data.len();
        let partial = store.open(&id, BlobKind::Partial).await.unwrap();
        assert!(
            partial.map(0, len).is_none(),
            "a partial blob can still change"
        );
        store.publish(&id).await.unwrap();
        let complete = store.open(&id, BlobKind::Complete).await.unwrap();
        let map = complete.map(0, len).expect("a complete blob maps");
        assert_eq!(map, data);
        // Windows from unaligned offsets, up to the last byte; past the end is refused.
        for (at, n) in [
            (1, 10),
            (4095, 2),
            (4096, 4096),
            (5000, len - 5000),
            (len - 1, 1),
        ] {
            let w = complete.map(at as u64, n).expect("a window maps");
            assert_eq!(w, data.slice(at..at + n), "window {at}+{n}");
        }
        assert!(complete.map(len as u64 - 1, 2).is_none());
        assert!(complete.map(0, 0).is_none());
        // The mapping outlives the store's handle and an unlink of the file.
        drop(complete);
        store.delete(&id).await.unwrap();
        assert_eq!(map, data);

        let empty = UploadId::generate();
        store.create(&empty).await.unwrap();
        store.publish(&empty).await.unwrap();
        let blob = store.open(&empty, BlobKind::Complete).await.unwrap();
        assert!(blob.map(0, 1).is_none(), "nothing to map");
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
            .collect()
    }

    #[test]
    fn buffered_copy_places_bytes_at_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        let dst_path = dir.path().join("dst");
        // Larger than the buffer, and not a multiple of it, to cross several rounds.
        let data = pattern(COPY_BUF * 2 + 12_345, 7);
        std::fs::write(&src_path, &data).unwrap();
        std::fs::write(&dst_path, vec![0xAA; 100]).unwrap();
        let src = File::open(&src_path).unwrap();
        let dst = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dst_path)
            .unwrap();

        copy_with_buffer(&src, 10, &dst, 50, data.len() as u64 - 10).unwrap();

        let got = std::fs::read(&dst_path).unwrap();
        assert_eq!(got.len(), 50 + data.len() - 10);
        assert!(
            got[..50].iter().all(|&b| b == 0xAA),
            "bytes before the offset changed"
        );
        assert_eq!(&got[50..], &data[10..]);
    }

    #[test]
    fn copies_fail_when_the_source_is_short() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        std::fs::write(&src_path, b"short").unwrap();
        let src = File::open(&src_path).unwrap();
        let dst = File::create(dir.path().join("dst")).unwrap();
        let err = copy_with_buffer(&src, 0, &dst, 0, 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = copy_range(&src, 0, &dst, 0, 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn vectored_writes_cover_many_and_empty_buffers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        // 3000 buffers (three pwritev batches), with empty ones sprinkled in.
        let data = pattern(3000 * 5, 3);
        let bufs: Vec<Bytes> = data
            .chunks(5)
            .enumerate()
            .flat_map(|(i, c)| {
                let empty = (i % 7 == 0).then(Bytes::new);
                empty.into_iter().chain([Bytes::copy_from_slice(c)])
            })
            .collect();
        write_all_vectored_at(&file, 1000, &bufs).unwrap();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), 1000 + data.len());
        assert!(
            got[..1000].iter().all(|&b| b == 0),
            "a hole should read as zeros"
        );
        assert_eq!(&got[1000..], &data[..]);

        // Nothing to write is fine and leaves the file alone.
        write_all_vectored_at(&file, 0, &[]).unwrap();
        write_all_vectored_at(&file, 0, &[Bytes::new()]).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            1000 + data.len() as u64
        );
    }

    #[test]
    fn per_buffer_writes_honour_the_skip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let bufs = [Bytes::from_static(b"xxabc"), Bytes::from_static(b"def")];
        write_each_at(&file, 2, &bufs, 2).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"\0\0abcdef");
    }
}
