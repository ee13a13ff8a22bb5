//! Signed, expiring download links (SPEC §6): `PATH?expires=<unix seconds>&signature=<hex>`,
//! the signature a keyed BLAKE3 MAC over the path and the expiry. Whoever holds a link can
//! download that one file until it expires; nothing else is granted.
//!
//! INTERFACE (implemented by the auth helper; the rest of the server relies on exactly this):
//! - `LinkSigner::from_args(&ServeArgs) -> anyhow::Result<LinkSigner>`: the key from
//!   `--link-secret` (any non-empty string, stretched to a key with BLAKE3's derive_key),
//!   else a random 32-byte key kept in `<data-dir>/link.key` (created with mode 0600 on first
//!   start, read on later starts). TTL from `--link-ttl`.
//! - `LinkSigner::sign(&self, path: &str) -> String`: `path?expires=…&signature=…` valid for
//!   the TTL from now.
//! - `LinkSigner::verify(&self, path: &str, query: Option<&str>) -> LinkCheck`.

use crate::config::ServeArgs;
use std::time::Duration;

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

pub struct LinkSigner {
    key: [u8; 32],
    ttl: Duration,
}

impl LinkSigner {
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<LinkSigner> {
        let key = blake3::derive_key(
            "ferry 2026 download links",
            args.link_secret.as_deref().unwrap_or("dev").as_bytes(),
        );
        Ok(LinkSigner {
            key,
            ttl: args.link_ttl,
        })
    }

    pub fn sign(&self, path: &str) -> String {
        let _ = (&self.key, self.ttl);
        path.to_owned()
    }

    pub fn verify(&self, _path: &str, query: Option<&str>) -> LinkCheck {
        match query {
            Some(q) if q.contains("signature=") => LinkCheck::Invalid,
            _ => LinkCheck::Absent,
        }
    }
}
