//! The browser SDK (`/sdk/…`) and the upload page (`GET /`, `/app/…`), SPEC §5.
//!
//! The files under `web/sdk` and `web/app` are embedded at build time (see `build.rs`), so
//! the binary serves them with no web build step and nothing beside it. `--web-dir`
//! (`FERRY_WEB_DIR`) serves them from a directory instead, read on every request, so that a
//! front-end edit shows on reload without rebuilding the server.
//!
//! Responses revalidate (`Cache-Control: no-cache` + a strong `ETag` over the bytes): the
//! files are small, and a page must never run a stale SDK after the server was upgraded.

use crate::AppState;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// The page's Content-Security-Policy: everything from this origin only (no CDN, font or
/// third-party call can sneak in), workers from this origin, no framing.
const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; worker-src 'self'; \
    connect-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Routes for the page and the SDK.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/app/{*path}", get(app_file))
        .route("/sdk/{*path}", get(sdk_file))
}

async fn index(state: State<AppState>, method: Method, headers: HeaderMap) -> Response {
    serve(&state, "app/index.html", &method, &headers)
}

async fn app_file(
    state: State<AppState>,
    Path(path): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    serve(&state, &format!("app/{path}"), &method, &headers)
}

async fn sdk_file(
    state: State<AppState>,
    Path(path): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    serve(&state, &format!("sdk/{path}"), &method, &headers)
}

/// One asset: its bytes and a strong ETag over them.
struct Asset {
    bytes: Bytes,
    etag: Cow<'static, str>,
}

/// A strong validator over the bytes; stable for one binary, which is all a cache needs.
fn etag_of(bytes: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    format!("\"{:016x}-{:x}\"", h.finish(), bytes.len())
}

/// `path` (`sdk/ferry.js`): from `--web-dir` when set, read per request; else embedded,
/// served without a copy and with the ETags computed once.
fn lookup(state: &AppState, path: &str) -> Option<Asset> {
    // Plain relative names only: no `..`, no hidden files, no absolute or odd paths. The
    // embedded table could not be escaped anyway; a directory on disk could.
    let safe = path.split('/').all(|seg| {
        !seg.is_empty()
            && !seg.starts_with('.')
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    });
    if !safe {
        return None;
    }
    if let Some(dir) = &state.web_dir {
        let bytes = std::fs::read(dir.join(path)).ok()?;
        let etag = Cow::Owned(etag_of(&bytes));
        return Some(Asset {
            bytes: bytes.into(),
            etag,
        });
    }
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    let etags = ETAGS.get_or_init(|| embedded::ASSETS.iter().map(|(_, b)| etag_of(b)).collect());
    let i = embedded::ASSETS
        .iter()
        .position(|(name, _)| *name == path)?;
    Some(Asset {
        bytes: Bytes::from_static(embedded::ASSETS[i].1),
        etag: Cow::Borrowed(etags[i].as_str()),
    })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map_or("", |(_, ext)| ext) {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn serve(state: &AppState, path: &str, method: &Method, headers: &HeaderMap) -> Response {
    let Some(Asset { bytes, etag }) = lookup(state, path) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let mut response = if crate::download::none_match(headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else if method == Method::HEAD {
        let mut r = StatusCode::OK.into_response();
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        r
    } else {
        (StatusCode::OK, bytes).into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if path.ends_with(".html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CSP),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    response
}
