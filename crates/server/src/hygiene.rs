//! Request hygiene: requests whose headers could mean two different things are refused with
//! `400` before any handler sees them, so nothing is stored.
//!
//! - An upload-control header sent more than once (`Upload-Offset: 0` and `Upload-Offset:
//!   500`): the handlers read the first value, a proxy or a log may read another one. A
//!   client that means one value sends it once.
//! - `Content-Length` together with `Transfer-Encoding` (RFC 9112 §6.1): the classic request
//!   smuggling shape, where a proxy in front frames the body by one header and we by the
//!   other. Over HTTP/1 hyper drops the `Content-Length` before the request reaches axum (and
//!   closes the connection after the answer), so the transport notices the pair in the raw
//!   head and marks the request with [`ConflictingFraming`]; the header check here covers
//!   requests that arrive with both headers by other paths.
//!
//! Everything else passes through untouched.

use crate::error::ApiError;
use axum::extract::Request;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferry_core::codes;

/// Marks a request whose raw head carried both `Content-Length` and `Transfer-Encoding`
/// (set by [`crate::transport`], which sees the head before hyper normalises it).
#[derive(Clone, Copy, Debug)]
pub struct ConflictingFraming;

/// Headers that must appear at most once: (lower-case name, name as written in messages).
const SINGLE: [(&str, &str); 18] = [
    ("upload-offset", "Upload-Offset"),
    ("upload-length", "Upload-Length"),
    ("upload-defer-length", "Upload-Defer-Length"),
    ("upload-metadata", "Upload-Metadata"),
    ("upload-checksum", "Upload-Checksum"),
    ("upload-concat", "Upload-Concat"),
    ("upload-complete", "Upload-Complete"),
    ("upload-incomplete", "Upload-Incomplete"),
    (
        "upload-draft-interop-version",
        "Upload-Draft-Interop-Version",
    ),
    ("tus-resumable", "Tus-Resumable"),
    ("x-http-method-override", "X-HTTP-Method-Override"),
    ("x-file-id", "X-File-Id"),
    ("x-start-byte", "X-Start-Byte"),
    ("x-file-size", "X-File-Size"),
    ("x-file-name", "X-File-Name"),
    ("content-range", "Content-Range"),
    ("content-length", "Content-Length"),
    ("content-type", "Content-Type"),
];

/// The middleware: `.layer(axum::middleware::from_fn(hygiene::check))`.
pub async fn check(req: Request, next: Next) -> Response {
    if let Some(refusal) = refusal(&req) {
        return refusal.into_response();
    }
    next.run(req).await
}

/// Why `req` must be refused, if it must.
fn refusal(req: &Request) -> Option<ApiError> {
    let headers = req.headers();
    if req.extensions().get::<ConflictingFraming>().is_some()
        || (headers.contains_key(header::CONTENT_LENGTH)
            && headers.contains_key(header::TRANSFER_ENCODING))
    {
        return Some(ApiError::bad_request(
            codes::CONFLICTING_LENGTH,
            "the request has both Content-Length and Transfer-Encoding, which frame the body \
             in two different ways; send only one of them",
        ));
    }
    duplicate(headers).map(|name| {
        ApiError::bad_request(
            codes::DUPLICATE_HEADER,
            format!("the {name} header appears more than once; send it once"),
        )
    })
}

/// The first upload-control header that appears more than once.
fn duplicate(headers: &HeaderMap) -> Option<&'static str> {
    SINGLE
        .iter()
        .find(|(name, _)| headers.get_all(*name).iter().nth(1).is_some())
        .map(|(_, shown)| *shown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::HeaderValue;

    fn req(headers: &[(&str, &str)]) -> Request {
        let mut r = Request::new(Body::empty());
        for (k, v) in headers {
            r.headers_mut().append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        r
    }

    #[test]
    fn single_headers_pass() {
        assert!(
            refusal(&req(&[
                ("upload-offset", "0"),
                ("tus-resumable", "1.0.0"),
                ("content-length", "5"),
                ("x-custom", "a"),
                ("x-custom", "b"),
            ]))
            .is_none()
        );
    }

    #[test]
    fn duplicates_are_named() {
        for (name, shown) in SINGLE {
            let e = refusal(&req(&[(name, "1"), (name, "1")])).expect(name);
            assert_eq!(e.code, codes::DUPLICATE_HEADER);
            assert!(e.message.contains(shown), "{}", e.message);
        }
    }

    #[test]
    fn length_with_transfer_encoding_is_refused() {
        let e = refusal(&req(&[
            ("content-length", "5"),
            ("transfer-encoding", "chunked"),
        ]))
        .expect("refused");
        assert_eq!(e.code, codes::CONFLICTING_LENGTH);
        let mut r = req(&[("transfer-encoding", "chunked")]);
        assert!(refusal(&r).is_none());
        r.extensions_mut().insert(ConflictingFraming);
        assert_eq!(
            refusal(&r).expect("refused").code,
            codes::CONFLICTING_LENGTH
        );
    }
}
