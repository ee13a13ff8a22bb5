//! Signed, expiring download links (SPEC §6): `PATH?expires=<unix seconds>&signature=<hex>`,
//! the signature a keyed BLAKE3 MAC over the path and the expiry. Whoever holds a link can
//! download that one file until it expires; nothing else is granted.
//!
//! The MAC is `blake3::keyed_hash(key, "GET\n{path}\n{expires}")`, `path` being the URL path
//! alone (`/files/<id>`), `expires` in decimal. The key is `--link-secret` stretched with
//! BLAKE3's `derive_key` (give every node the same secret when several serve one store), or
//! else 32 random bytes kept in `<data-dir>/link.key` (mode 0600), made on the first start
//! and read on later ones, so that links handed out survive a restart. `--link-ttl` is how
//! long a new link stays valid.

use crate::config::ServeArgs;
use anyhow::{Context, bail};
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Context of `derive_key`: a secret used for something else as well (say, also as a JWT
/// secret) still gives an unrelated key here.
const KEY_CONTEXT: &str = "ferry 2026-12 download links";

/// The key file's name inside `--data-dir`.
const KEY_FILE: &str = "link.key";

/// What a request's query says about a signed link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkCheck {
    /// No `signature` parameter: not a link, use the request's credentials.
    Absent,
    /// A valid, unexpired signature for this path.
    Valid,
    /// Signed for this path, but past its expiry.
    Expired,
    /// A signature that does not verify (tampered, another path, malformed).
    Invalid,
}

/// Signs and checks download links with one key.
pub struct LinkSigner {
    key: [u8; 32],
    ttl: Duration,
}

// Written by hand so that the key can never be printed.
impl fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkSigner")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl LinkSigner {
    /// The signer configured by `--link-secret` (or `<data-dir>/link.key`) and `--link-ttl`.
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<LinkSigner> {
        let key = match &args.link_secret {
            Some(s) if s.is_empty() => {
                bail!("--link-secret is empty: give a long random secret, or leave it unset")
            }
            Some(s) => blake3::derive_key(KEY_CONTEXT, s.as_bytes()),
            None => key_file(&args.data_dir.join(KEY_FILE))?,
        };
        Ok(LinkSigner::new(key, args.link_ttl))
    }

    /// A signer with an explicit key.
    pub fn new(key: [u8; 32], ttl: Duration) -> LinkSigner {
        LinkSigner { key, ttl }
    }

    /// `path?expires=…&signature=…`, valid for the TTL from now. `path` is the URL path
    /// alone, without a query.
    pub fn sign(&self, path: &str) -> String {
        let expires = unix_now().saturating_add(self.ttl.as_secs());
        self.sign_until(path, expires)
    }

    /// `path?expires=…&signature=…`, valid until `expires` (Unix seconds).
    pub fn sign_until(&self, path: &str, expires: u64) -> String {
        let signature = self.mac(path, expires);
        format!("{path}?expires={expires}&signature={}", signature.to_hex())
    }

    /// What the query of a request for `path` says: no `signature` parameter is
    /// [`LinkCheck::Absent`]; otherwise the link must carry exactly one `expires` and one
    /// `signature` that verify for this path, and is [`LinkCheck::Expired`] once `expires`
    /// has passed.
    pub fn verify(&self, path: &str, query: Option<&str>) -> LinkCheck {
        self.verify_at(path, query, unix_now())
    }

    fn verify_at(&self, path: &str, query: Option<&str>, now: u64) -> LinkCheck {
        let mut expires = None;
        let mut signature = None;
        for pair in query.unwrap_or_default().split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "expires" => &mut expires,
                "signature" => &mut signature,
                _ => continue,
            };
            // A second value would leave it to each reader which one counts.
            if slot.replace(value).is_some() {
                return LinkCheck::Invalid;
            }
        }
        let Some(signature) = signature else {
            return LinkCheck::Absent;
        };
        let Some(expires) = expires.and_then(parse_expires) else {
            return LinkCheck::Invalid;
        };
        let Ok(signature) = blake3::Hash::from_hex(signature) else {
            return LinkCheck::Invalid;
        };
        // `blake3::Hash`'s `==` is constant-time: a forger learns nothing from the timing.
        if self.mac(path, expires) != signature {
            return LinkCheck::Invalid;
        }
        if expires < now {
            LinkCheck::Expired
        } else {
            LinkCheck::Valid
        }
    }

    fn mac(&self, path: &str, expires: u64) -> blake3::Hash {
        blake3::keyed_hash(&self.key, format!("GET\n{path}\n{expires}").as_bytes())
    }
}

/// `expires` in its one canonical spelling (decimal digits, no sign, no leading zero), so
/// that one signed link has exactly one URL.
fn parse_expires(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = s.parse().ok()?;
    (n.to_string() == s).then_some(n)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The key kept in `path`, made now if there is none yet.
fn key_file(path: &Path) -> anyhow::Result<[u8; 32]> {
    match read_key(path) {
        Ok(key) => return Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            bail!(
                "{}: not a link key ({e}); remove it to make a new one \
                 (links handed out so far stop working)",
                path.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .context("reading 32 random bytes from /dev/urandom for the link key")?;
    publish_key(path, &key).with_context(|| format!("creating {}", path.display()))?;
    // Another process may have published its key first; whichever is in the file counts.
    read_key(path).with_context(|| format!("reading {}", path.display()))
}

fn read_key(path: &Path) -> std::io::Result<[u8; 32]> {
    let bytes = std::fs::read(path)?;
    let key = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} bytes where a key has 32", bytes.len()),
        )
    })?;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            "{}: readable by other users (mode {:o}), who can then sign download links; \
             chmod 600 it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    Ok(key)
}

/// Writes `key` to `path` unless a key is there already. The key is written and synced
/// under a temporary name and then hard-linked into place: the link fails if `path` exists
/// (so two starts cannot end with different keys), and a reader never sees half a key, as
/// it could between a `create_new` and its write.
fn publish_key(path: &Path, key: &[u8; 32]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // Unique among the processes and threads that could be starting at once.
    static ATTEMPT: AtomicU64 = AtomicU64::new(0);
    let n = ATTEMPT.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{KEY_FILE}.{}.{n}.tmp", std::process::id()));
    // A leftover of a crashed process that had the same id would keep its own mode.
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(key)?;
        f.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(e),
        }
        // The new name is durable only once the directory is.
        std::fs::File::open(dir)?.sync_all()
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/files/0123456789abcdef";

    fn signer() -> LinkSigner {
        LinkSigner::new([7; 32], Duration::from_secs(3600))
    }

    fn split(link: &str) -> (&str, &str) {
        link.split_once('?').unwrap()
    }

    #[test]
    fn signed_link_verifies_for_its_path() {
        let s = signer();
        let link = s.sign(PATH);
        let (path, query) = split(&link);
        assert_eq!(path, PATH);
        assert!(query.starts_with("expires="), "{query}");
        assert_eq!(s.verify(path, Some(query)), LinkCheck::Valid);
        // Other parameters do not matter, nor does the order.
        let (e, sig) = query.split_once('&').unwrap();
        assert_eq!(
            s.verify(PATH, Some(&format!("x=1&{sig}&download=1&{e}"))),
            LinkCheck::Valid
        );
    }

    #[test]
    fn link_expires_after_its_ttl() {
        let s = signer();
        let now = unix_now();
        let link = s.sign_until(PATH, now - 1);
        assert_eq!(s.verify(PATH, Some(split(&link).1)), LinkCheck::Expired);
        // Valid up to and including the second it names.
        let link = s.sign_until(PATH, now + 10);
        let query = split(&link).1;
        assert_eq!(s.verify_at(PATH, Some(query), now + 10), LinkCheck::Valid);
        assert_eq!(s.verify_at(PATH, Some(query), now + 11), LinkCheck::Expired);

        let zero = LinkSigner::new([7; 32], Duration::ZERO);
        let link = zero.sign(PATH);
        assert_eq!(
            zero.verify_at(PATH, Some(split(&link).1), unix_now() + 1),
            LinkCheck::Expired
        );
    }

    #[test]
    fn tampered_signature_or_expiry_is_invalid() {
        let s = signer();
        let expires = unix_now() + 100;
        let link = s.sign_until(PATH, expires);
        let query = split(&link).1;
        let sig = query.split_once("signature=").unwrap().1;

        let mut flipped = sig.to_owned().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        let q = format!("expires={expires}&signature={flipped}");
        assert_eq!(s.verify(PATH, Some(&q)), LinkCheck::Invalid);

        let q = format!("expires={}&signature={sig}", expires + 1);
        assert_eq!(s.verify(PATH, Some(&q)), LinkCheck::Invalid);
        // An expired link made to look fresh is invalid, not merely expired.
        let old = s.sign_until(PATH, 1000);
        let old_sig = split(&old).1.split_once("signature=").unwrap().1;
        let q = format!("expires={expires}&signature={old_sig}");
        assert_eq!(s.verify(PATH, Some(&q)), LinkCheck::Invalid);

        let other_key = LinkSigner::new([8; 32], Duration::from_secs(3600));
        assert_eq!(other_key.verify(PATH, Some(query)), LinkCheck::Invalid);
    }

    #[test]
    fn link_for_another_path_is_invalid() {
        let s = signer();
        let link = s.sign(PATH);
        let query = split(&link).1;
        assert_eq!(
            s.verify("/files/fedcba9876543210", Some(query)),
            LinkCheck::Invalid
        );
        assert_eq!(
            s.verify(&format!("{PATH}/"), Some(query)),
            LinkCheck::Invalid
        );
    }

    #[test]
    fn query_without_signature_is_absent() {
        let s = signer();
        assert_eq!(s.verify(PATH, None), LinkCheck::Absent);
        assert_eq!(s.verify(PATH, Some("")), LinkCheck::Absent);
        assert_eq!(
            s.verify(PATH, Some("expires=99999999999&download=1")),
            LinkCheck::Absent
        );
    }

    #[test]
    fn malformed_or_duplicated_parameters_are_invalid() {
        let s = signer();
        let expires = unix_now() + 100;
        let link = s.sign_until(PATH, expires);
        let query = split(&link).1;
        let sig = query.split_once("signature=").unwrap().1;
        for q in [
            format!("signature={sig}"),
            format!("expires=&signature={sig}"),
            format!("expires=+{expires}&signature={sig}"),
            format!("expires=0{expires}&signature={sig}"),
            format!("expires={expires}x&signature={sig}"),
            format!("expires={expires}&signature="),
            format!("expires={expires}&signature"),
            format!("expires={expires}&signature={}", &sig[..60]),
            format!("expires={expires}&signature={sig}00"),
            format!("{query}&signature={sig}"),
            format!("{query}&expires={expires}"),
        ] {
            assert_eq!(s.verify(PATH, Some(&q)), LinkCheck::Invalid, "{q}");
        }
    }

    #[test]
    fn link_secret_gives_the_same_key_on_every_node() {
        let dir = tempfile::tempdir().unwrap();
        let mut args = ServeArgs::for_dir(dir.path());
        args.link_secret = Some("shared by the nodes".into());
        let a = LinkSigner::from_args(&args).unwrap();
        let b = LinkSigner::from_args(&args).unwrap();
        assert_eq!(a.key, b.key);
        assert_eq!(
            a.key,
            blake3::derive_key(KEY_CONTEXT, b"shared by the nodes")
        );
        assert!(!dir.path().join(KEY_FILE).exists());

        args.link_secret = Some(String::new());
        let e = LinkSigner::from_args(&args).unwrap_err().to_string();
        assert!(e.contains("--link-secret is empty"), "{e}");
    }

    #[test]
    fn key_file_is_made_once_with_mode_0600_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let args = ServeArgs::for_dir(dir.path());
        let first = LinkSigner::from_args(&args).unwrap();
        let path = dir.path().join(KEY_FILE);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), first.key);
        assert_ne!(first.key, [0; 32]);

        let second = LinkSigner::from_args(&args).unwrap();
        assert_eq!(first.key, second.key);
        let link = first.sign(PATH);
        assert_eq!(second.verify(PATH, Some(split(&link).1)), LinkCheck::Valid);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let other = tempfile::tempdir().unwrap();
        let third = LinkSigner::from_args(&ServeArgs::for_dir(other.path())).unwrap();
        assert_ne!(first.key, third.key);
    }

    #[test]
    fn key_file_of_the_wrong_length_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::write(&path, b"short").unwrap();
        let e = LinkSigner::from_args(&ServeArgs::for_dir(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("5 bytes"),
            "{e}"
        );
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let debug = format!("{:?}", LinkSigner::new([0xab; 32], Duration::from_secs(5)));
        assert!(!debug.contains("171") && !debug.contains("ab"), "{debug}");
    }
}
