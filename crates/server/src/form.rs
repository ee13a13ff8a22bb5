//! Reading what form-based fronts receive: query strings and the text fields of a
//! `multipart/form-data` body.

use crate::error::ApiError;
use axum::extract::multipart::Field;
use std::collections::BTreeMap;

/// The pairs of a query string (`+` and percent escapes decoded); `None` when one of them
/// is not UTF-8 once decoded.
pub fn query_pairs(q: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .ok()
                .map(|c| c.into_owned())
        };
        out.insert(decode(k)?, decode(v)?);
    }
    Some(out)
}

/// A text field of a multipart body, trimmed: `malformed_multipart` when it cannot be read
/// or is not UTF-8, `field_too_long` (naming `what`) past `max` bytes.
pub async fn read_text(field: &mut Field<'_>, max: usize, what: &str) -> Result<String, ApiError> {
    let mut buf = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| {
        ApiError::bad_request(
            "malformed_multipart",
            format!("a form field could not be read: {e}"),
        )
    })? {
        buf.extend_from_slice(&chunk);
        if buf.len() > max {
            return Err(ApiError::bad_request(
                "field_too_long",
                format!("{what} must be shorter than {max} bytes"),
            ));
        }
    }
    String::from_utf8(buf)
        .map(|s| s.trim().to_owned())
        .map_err(|_| ApiError::bad_request("malformed_multipart", "form fields must be UTF-8 text"))
}
