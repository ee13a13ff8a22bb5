//! `OPTIONS /files/`: tus "Core Protocol" server discovery.

use super::{TUS_CHECKSUM_ALGORITHM, TUS_EXTENSION, TUS_MAX_SIZE, TUS_VERSION};
use crate::AppState;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ferry_core::tus::CHECKSUM_ALGORITHMS;
use std::time::Duration;

/// What the configured server can do, as far as tus extensions depend on it.
#[derive(Clone, Copy, Debug)]
pub struct Capabilities {
    /// `--expire-incomplete`; zero means uploads never expire.
    pub expire_incomplete: Duration,
    /// [`ferry_core::store::BlobStore::can_concatenate`].
    pub can_concatenate: bool,
}

impl Capabilities {
    pub fn of(state: &AppState) -> Self {
        Capabilities {
            expire_incomplete: state.expire_incomplete,
            can_concatenate: state.engine.blobs().can_concatenate(),
        }
    }

    /// The `Tus-Extension` list, from what this server can do (never a fixed list, like
    /// tusd's composer): the engine always offers creation (with upload and deferred
    /// length), per-request checksums and termination; expiration exists only when the
    /// janitor runs; concatenation only when the store can copy complete uploads, and then
    /// also for unfinished parts, since the engine assembles a final when its last part
    /// completes.
    pub fn extensions(self) -> Vec<&'static str> {
        let concat = self.can_concatenate;
        [
            ("creation", true),
            ("creation-with-upload", true),
            ("creation-defer-length", true),
            ("expiration", !self.expire_incomplete.is_zero()),
            ("checksum", true),
            ("termination", true),
            ("concatenation", concat),
            ("concatenation-unfinished", concat),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect()
    }
}

/// tus "Core Protocol" / OPTIONS: 204 with `Tus-Version`, plus `Tus-Extension` and
/// `Tus-Max-Size`; "Checksum" adds `Tus-Checksum-Algorithm`. `Tus-Resumable` in the request
/// is ignored, as the spec requires.
pub fn handle(state: &AppState) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(
        TUS_VERSION,
        HeaderValue::from_static(ferry_core::tus::VERSION),
    );
    let extensions = Capabilities::of(state).extensions().join(",");
    // "If no extensions are supported, the Tus-Extension header MUST be omitted."
    if let Ok(v) = HeaderValue::from_str(&extensions)
        && !extensions.is_empty()
    {
        h.insert(TUS_EXTENSION, v);
    }
    h.insert(TUS_MAX_SIZE, state.engine.config().max_upload_size.into());
    let algorithms: Vec<&str> = CHECKSUM_ALGORITHMS.iter().map(|a| a.name()).collect();
    if let Ok(v) = HeaderValue::from_str(&algorithms.join(",")) {
        h.insert(TUS_CHECKSUM_ALGORITHM, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_follow_expiry_and_the_store() {
        let all = Capabilities {
            expire_incomplete: Duration::from_secs(3600),
            can_concatenate: true,
        };
        assert_eq!(
            all.extensions(),
            [
                "creation",
                "creation-with-upload",
                "creation-defer-length",
                "expiration",
                "checksum",
                "termination",
                "concatenation",
                "concatenation-unfinished"
            ]
        );
        let plain = Capabilities {
            expire_incomplete: Duration::ZERO,
            can_concatenate: false,
        };
        let ext = plain.extensions();
        assert!(!ext.contains(&"expiration"), "{ext:?}");
        assert!(
            !ext.iter().any(|e| e.starts_with("concatenation")),
            "{ext:?}"
        );
        assert!(ext.contains(&"creation") && ext.contains(&"checksum"));
    }
}
