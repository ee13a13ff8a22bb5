//! CORS for the whole app, so the browser SDK and browser tus clients (tus-js-client, Uppy)
//! can use every dialect from another origin.
//!
//! - A preflight — `OPTIONS` with `Origin` and `Access-Control-Request-Method` (Fetch
//!   standard, "CORS-preflight request") — is answered here with 204 and never reaches a
//!   handler. This is what keeps it apart from a tus `OPTIONS` discovery request, which has
//!   no `Access-Control-Request-Method`.
//! - Any other request with `Origin` gets `Access-Control-Allow-Origin` and
//!   `Access-Control-Expose-Headers` on its response, whatever the handler answered, so a
//!   script can read error bodies and the protocol headers (`Location`, `Upload-Offset`…).
//!
//! The origin is echoed rather than `*`, with `Vary: Origin` so caches keep answers apart.
//! Credentials (cookies) are not allowed: uploads authenticate with `Authorization: Bearer`,
//! which a preflight permits as a request header.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;

pub const ALLOW_METHODS: &str = "POST, GET, HEAD, PATCH, DELETE, OPTIONS";

/// Request headers of every dialect and of downloads; each front adds its own
/// ([`crate::fronts::Front::request_headers`]).
const BASE_REQUEST_HEADERS: &[&str] = &[
    "Authorization",
    "Content-Type",
    "Content-Range",
    "X-Requested-With",
    "If-Range",
    "Range",
    "If-None-Match",
    "If-Match",
    "If-Modified-Since",
    "If-Unmodified-Since",
    "Content-Disposition",
];

/// Response headers scripts may read, whatever the dialect; each front adds its own
/// ([`crate::fronts::Front::response_headers`]).
const BASE_RESPONSE_HEADERS: &[&str] = &[
    "ETag",
    "Content-Range",
    "Content-Disposition",
    "Retry-After",
];

/// `Access-Control-Allow-Headers`: the base list and every front's, computed once.
pub fn allow_headers() -> &'static HeaderValue {
    static V: OnceLock<HeaderValue> = OnceLock::new();
    V.get_or_init(|| {
        let list = crate::fronts::header_list(BASE_REQUEST_HEADERS, |f| f.request_headers);
        HeaderValue::from_str(&list).expect("header names are visible ASCII")
    })
}

/// `Access-Control-Expose-Headers`: the base list and every front's, computed once.
pub fn expose_headers() -> &'static HeaderValue {
    static V: OnceLock<HeaderValue> = OnceLock::new();
    V.get_or_init(|| {
        let list = crate::fronts::header_list(BASE_RESPONSE_HEADERS, |f| f.response_headers);
        HeaderValue::from_str(&list).expect("header names are visible ASCII")
    })
}

/// A day: browsers cap it lower anyway (Chromium at 2 hours), so this means "as long as the
/// browser allows".
pub const MAX_AGE_SECS: u32 = 86_400;

/// The middleware: `.layer(axum::middleware::from_fn(cors::layer))`.
pub async fn layer(req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let Some(origin) = origin else {
        return next.run(req).await;
    };
    if is_preflight(req.method(), req.headers()) {
        return preflight(origin);
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        expose_headers().clone(),
    );
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    resp
}

fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

fn preflight(origin: HeaderValue) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        allow_headers().clone(),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE_SECS.into());
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    resp
}
