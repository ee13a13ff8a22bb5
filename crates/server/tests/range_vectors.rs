//! Range request vectors (SPEC §3): `ferry_core::http_range::parse_range` against a
//! table, then whole responses from `ferry_server::download::respond`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use ferry_core::http_range::{ByteRange, MAX_RANGES, RangeRequest, parse_range};
use ferry_core::store::BlobRead;
use ferry_server::download::{Downloadable, READ_BLOCK, respond};
use http_body_util::BodyExt;

// ---------------------------------------------------------------------------
// parse_range vectors
// ---------------------------------------------------------------------------

/// Expected outcome of one vector.
#[derive(Debug)]
enum Want {
    Full,
    Unsat,
    Ranges(&'static [(u64, u64)]),
}

use Want::{Full, Ranges, Unsat};

/// (Range header, representation length, expected outcome, why).
const VECTORS: &[(&str, u64, Want, &str)] = &[
    ("bytes=0-0", 100, Ranges(&[(0, 0)]), "first byte only"),
    (
        "bytes=0-99",
        100,
        Ranges(&[(0, 99)]),
        "exactly the whole file",
    ),
    ("bytes=10-19", 100, Ranges(&[(10, 19)]), "closed range"),
    (
        "bytes=10-",
        100,
        Ranges(&[(10, 99)]),
        "open-ended runs to the end",
    ),
    (
        "bytes=99-",
        100,
        Ranges(&[(99, 99)]),
        "open-ended at last byte",
    ),
    ("bytes=-1", 100, Ranges(&[(99, 99)]), "suffix of one byte"),
    ("bytes=-10", 100, Ranges(&[(90, 99)]), "suffix"),
    (
        "bytes=-100",
        100,
        Ranges(&[(0, 99)]),
        "suffix equal to length",
    ),
    (
        "bytes=-1000",
        100,
        Ranges(&[(0, 99)]),
        "suffix longer than the file is all of it",
    ),
    ("bytes=-0", 100, Unsat, "zero-length suffix"),
    (
        "bytes=90-1000",
        100,
        Ranges(&[(90, 99)]),
        "last-pos past the end is clamped",
    ),
    ("bytes=100-", 100, Unsat, "start at the end"),
    ("bytes=100-200", 100, Unsat, "start past the end"),
    ("bytes=200-300,150-", 100, Unsat, "all ranges past the end"),
    (
        "bytes=200-300,0-1",
        100,
        Ranges(&[(0, 1)]),
        "unsatisfiable spec dropped",
    ),
    ("bytes=5-2", 100, Full, "last < first is invalid: ignored"),
    (
        "bytes=0-5,3-10",
        100,
        Ranges(&[(0, 10)]),
        "overlapping ranges coalesce",
    ),
    (
        "bytes=0-4,5-9",
        100,
        Ranges(&[(0, 9)]),
        "adjacent ranges coalesce",
    ),
    (
        "bytes=0-1,0-1,0-1",
        100,
        Ranges(&[(0, 1)]),
        "duplicates coalesce",
    ),
    (
        "bytes=0-9,20-29",
        100,
        Ranges(&[(0, 9), (20, 29)]),
        "disjoint multi-range",
    ),
    (
        "bytes=50-59,0-9,-5",
        100,
        Ranges(&[(0, 9), (50, 59), (95, 99)]),
        "sorted by start",
    ),
    (
        "bytes=0-9, 20-29",
        100,
        Ranges(&[(0, 9), (20, 29)]),
        "OWS after comma",
    ),
    (
        "bytes=0-9 ,\t20-29",
        100,
        Ranges(&[(0, 9), (20, 29)]),
        "OWS around comma",
    ),
    (
        "bytes=0-9,,20-29",
        100,
        Ranges(&[(0, 9), (20, 29)]),
        "empty list element",
    ),
    ("bytes=0 -9", 100, Full, "whitespace inside a range-spec"),
    ("bytes=1 0-20", 100, Full, "whitespace inside a number"),
    ("bytes=+1-2", 100, Full, "signed number"),
    ("bytes=-+2", 100, Full, "signed suffix"),
    (
        "Bytes=0-1",
        100,
        Ranges(&[(0, 1)]),
        "unit is case-insensitive",
    ),
    ("items=0-1", 100, Full, "unknown unit"),
    ("bytes 0-1", 100, Full, "missing ="),
    ("", 100, Full, "empty header"),
    ("bytes=", 100, Full, "empty range set"),
    ("bytes=-", 100, Full, "dash alone"),
    ("bytes=abc", 100, Full, "garbage"),
    // RFC 9110 §14.1.2: a last position at or past the end means "to the end", however
    // many digits it has; a first position no file reaches is unsatisfiable (416), like any
    // other first position past the end.
    (
        "bytes=0-99999999999999999999999",
        100,
        Ranges(&[(0, 99)]),
        "last-pos overflows u64",
    ),
    (
        "bytes=99999999999999999999999-",
        100,
        Unsat,
        "first-pos overflows u64",
    ),
    (
        "bytes=0-18446744073709551615",
        100,
        Ranges(&[(0, 99)]),
        "u64::MAX last-pos clamps",
    ),
    ("bytes=0-0", 0, Unsat, "zero-length file: int range"),
    ("bytes=0-", 0, Unsat, "zero-length file: open range"),
    ("bytes=-0", 0, Unsat, "zero-length file: zero suffix"),
    (
        "bytes=-5",
        0,
        Full,
        "zero-length file: suffix is satisfiable but empty",
    ),
    ("bytes=0-0", 1, Ranges(&[(0, 0)]), "one-byte file"),
    ("bytes=-1", 1, Ranges(&[(0, 0)]), "one-byte file suffix"),
];

#[test]
fn parse_range_vectors() {
    assert!(VECTORS.len() >= 30);
    for (header, len, want, why) in VECTORS {
        let expected = match want {
            Full => RangeRequest::Full,
            Unsat => RangeRequest::Unsatisfiable,
            Ranges(r) => RangeRequest::Partial(
                r.iter()
                    .map(|&(start, end)| ByteRange { start, end })
                    .collect(),
            ),
        };
        assert_eq!(
            parse_range(header, *len),
            expected,
            "{why}: {header:?} len={len}"
        );
    }
}

#[test]
fn too_many_ranges_are_ignored() {
    let specs: Vec<String> = (0..=MAX_RANGES as u64)
        .map(|i| format!("{}-{}", i * 2, i * 2))
        .collect();
    assert_eq!(
        parse_range(&format!("bytes={}", specs.join(",")), 10_000),
        RangeRequest::Full
    );
    let specs = &specs[..MAX_RANGES];
    assert!(matches!(
        parse_range(&format!("bytes={}", specs.join(",")), 10_000),
        RangeRequest::Partial(r) if r.len() == MAX_RANGES
    ));
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

struct MemBlob(Vec<u8>);

impl BlobRead for MemBlob {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }
}

const ETAG: &str = "\"md5-0123456789abcdef\"";
/// 1_700_000_000 s after the epoch; the stored time has a fraction of a second that
/// HTTP-dates cannot carry.
const LAST_MODIFIED: &str = "Tue, 14 Nov 2023 22:13:20 GMT";

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn file(data: Vec<u8>) -> Downloadable {
    Downloadable {
        len: data.len() as u64,
        blob: Arc::new(MemBlob(data)),
        etag: ETAG.to_owned(),
        last_modified: UNIX_EPOCH + Duration::from_millis(1_700_000_000_500),
        content_type: "image/jpeg".to_owned(),
        file_name: Some("photo.jpg".to_owned()),
    }
}

fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.append(
            name.clone(),
            HeaderValue::from_str(value).expect("test header"),
        );
    }
    h
}

async fn get(pairs: &[(header::HeaderName, &str)]) -> (Response, Vec<u8>) {
    send(Method::GET, pairs, file(content(1000))).await
}

async fn send(
    method: Method,
    pairs: &[(header::HeaderName, &str)],
    d: Downloadable,
) -> (Response, Vec<u8>) {
    let res = respond(&method, &headers(pairs), d);
    let (parts, body) = res.into_parts();
    let bytes = body
        .collect()
        .await
        .expect("body streams")
        .to_bytes()
        .to_vec();
    (
        Response::from_parts(parts, axum::body::Body::empty()),
        bytes,
    )
}

fn hdr(res: &Response, name: header::HeaderName) -> &str {
    res.headers()
        .get(&name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .expect("ASCII header")
}

#[tokio::test]
async fn full_get_serves_whole_file_with_all_headers() {
    let (res, body) = get(&[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body, content(1000));
    assert_eq!(hdr(&res, header::CONTENT_LENGTH), "1000");
    assert_eq!(hdr(&res, header::ACCEPT_RANGES), "bytes");
    assert_eq!(hdr(&res, header::ETAG), ETAG);
    assert_eq!(hdr(&res, header::LAST_MODIFIED), LAST_MODIFIED);
    assert_eq!(hdr(&res, header::CONTENT_TYPE), "image/jpeg");
    assert_eq!(hdr(&res, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert_eq!(
        hdr(&res, header::CONTENT_DISPOSITION),
        "attachment; filename=\"photo.jpg\""
    );
    assert!(res.headers().get(header::CONTENT_RANGE).is_none());
}

#[tokio::test]
async fn single_range_is_206_with_exact_bytes() {
    let (res, body) = get(&[(header::RANGE, "bytes=100-199")]).await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &content(1000)[100..200]);
    assert_eq!(hdr(&res, header::CONTENT_RANGE), "bytes 100-199/1000");
    assert_eq!(hdr(&res, header::CONTENT_LENGTH), "100");
    assert_eq!(hdr(&res, header::CONTENT_TYPE), "image/jpeg");
    assert_eq!(hdr(&res, header::ETAG), ETAG);
}

#[tokio::test]
async fn suffix_and_clamped_ranges_serve_the_tail() {
    let (res, body) = get(&[(header::RANGE, "bytes=-10")]).await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &content(1000)[990..]);
    assert_eq!(hdr(&res, header::CONTENT_RANGE), "bytes 990-999/1000");

    let (res, body) = get(&[(header::RANGE, "bytes=995-5000")]).await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &content(1000)[995..]);
    assert_eq!(hdr(&res, header::CONTENT_RANGE), "bytes 995-999/1000");
}

/// Parse a multipart/byteranges body strictly: every delimiter, part header and
/// CRLF must be exactly where RFC 9110 §14.6 / RFC 2046 put them.
fn parse_multipart(body: &[u8], boundary: &str) -> Vec<(String, String, Vec<u8>)> {
    let mut parts = Vec::new();
    let mut rest = body
        .strip_prefix(format!("--{boundary}\r\n").as_bytes())
        .expect("body starts with the first delimiter");
    loop {
        let head_end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("part header end");
        let head = std::str::from_utf8(&rest[..head_end]).expect("ASCII part header");
        rest = &rest[head_end + 4..];
        let mut content_type = None;
        let mut content_range = None;
        for line in head.split("\r\n") {
            let (name, value) = line.split_once(": ").expect("part header line");
            match name {
                "Content-Type" => content_type = Some(value.to_owned()),
                "Content-Range" => content_range = Some(value.to_owned()),
                other => panic!("unexpected part header {other}"),
            }
        }
        let content_range = content_range.expect("part Content-Range");
        let range = ferry_core::http_range::parse_content_range(&content_range).expect("valid");
        let n = usize::try_from(range.last - range.first + 1).expect("small");
        parts.push((
            content_type.expect("part Content-Type"),
            content_range,
            rest[..n].to_vec(),
        ));
        rest = rest[n..]
            .strip_prefix(format!("\r\n--{boundary}").as_bytes())
            .expect("delimiter after part");
        if rest == b"--\r\n" {
            return parts;
        }
        rest = rest.strip_prefix(b"\r\n").expect("CRLF after delimiter");
    }
}

#[tokio::test]
async fn multiple_ranges_are_multipart_byteranges() {
    let data = content(1000);
    let (res, body) = get(&[(header::RANGE, "bytes=900-, 0-9,100-109")]).await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert!(res.headers().get(header::CONTENT_RANGE).is_none());
    let content_type = hdr(&res, header::CONTENT_TYPE);
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .expect("multipart content type");
    assert_eq!(hdr(&res, header::CONTENT_LENGTH), body.len().to_string());

    let parts = parse_multipart(&body, boundary);
    let expected = [(0, 9), (100, 109), (900, 999)];
    assert_eq!(parts.len(), expected.len());
    for ((ct, cr, bytes), (first, last)) in parts.iter().zip(expected) {
        assert_eq!(ct, "image/jpeg");
        assert_eq!(cr, &format!("bytes {first}-{last}/1000"));
        assert_eq!(bytes.as_slice(), &data[first..=last]);
    }
}

#[tokio::test]
async fn overlapping_ranges_coalesce_into_a_single_part() {
    let (res, body) = get(&[(header::RANGE, "bytes=0-5,3-10")]).await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(hdr(&res, header::CONTENT_RANGE), "bytes 0-10/1000");
    assert_eq!(hdr(&res, header::CONTENT_TYPE), "image/jpeg");
    assert_eq!(body, &content(1000)[..=10]);
}

#[tokio::test]
async fn unsatisfiable_range_is_416_with_current_length() {
    for range in ["bytes=1000-", "bytes=-0", "bytes=5000-6000,2000-"] {
        let (res, body) = get(&[(header::RANGE, range)]).await;
        assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(hdr(&res, header::CONTENT_RANGE), "bytes */1000");
        assert_eq!(hdr(&res, header::CONTENT_LENGTH), "0");
        assert!(body.is_empty());
    }
}

#[tokio::test]
async fn invalid_range_header_is_ignored() {
    for range in ["bytes=5-2", "items=0-1", "bytes=x"] {
        let (res, body) = get(&[(header::RANGE, range)]).await;
        assert_eq!(res.status(), StatusCode::OK, "{range}");
        assert_eq!(body.len(), 1000);
    }
}

#[tokio::test]
async fn repeated_range_header_is_ignored() {
    let (res, _) = get(&[(header::RANGE, "bytes=0-1"), (header::RANGE, "bytes=2-3")]).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn if_range_with_matching_etag_serves_partial() {
    let (res, body) = get(&[(header::RANGE, "bytes=0-9"), (header::IF_RANGE, ETAG)]).await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(body.len(), 10);
}

#[tokio::test]
async fn if_range_with_stale_etag_serves_full() {
    let (res, body) = get(&[
        (header::RANGE, "bytes=0-9"),
        (header::IF_RANGE, "\"md5-old\""),
    ])
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body.len(), 1000);
}

#[tokio::test]
async fn if_range_with_weak_etag_serves_full() {
    let weak = format!("W/{ETAG}");
    let (res, body) = get(&[(header::RANGE, "bytes=0-9"), (header::IF_RANGE, &weak)]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body.len(), 1000);
}

#[tokio::test]
async fn if_range_with_matching_date_serves_partial() {
    let (res, body) = get(&[
        (header::RANGE, "bytes=0-9"),
        (header::IF_RANGE, LAST_MODIFIED),
    ])
    .await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(body.len(), 10);
}

#[tokio::test]
async fn if_range_with_other_date_serves_full() {
    for date in [
        "Tue, 14 Nov 2023 22:13:21 GMT",
        "Tue, 14 Nov 2023 22:13:19 GMT",
        "garbage",
    ] {
        let (res, _) = get(&[(header::RANGE, "bytes=0-9"), (header::IF_RANGE, date)]).await;
        assert_eq!(res.status(), StatusCode::OK, "{date}");
    }
}

fn assert_not_modified(res: &Response, body: &[u8]) {
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(hdr(res, header::ETAG), ETAG);
    assert_eq!(hdr(res, header::LAST_MODIFIED), LAST_MODIFIED);
    assert!(res.headers().get(header::CONTENT_LENGTH).is_none());
}

#[tokio::test]
async fn if_none_match_matching_is_304() {
    let (res, body) = get(&[(header::IF_NONE_MATCH, ETAG)]).await;
    assert_not_modified(&res, &body);
    // Weak comparison (RFC 9110 §13.1.2): a weak form of our tag matches too, and
    // so does our tag anywhere in a list.
    let list = format!("\"other\", W/{ETAG}");
    let (res, body) = get(&[(header::IF_NONE_MATCH, &list)]).await;
    assert_not_modified(&res, &body);
}

#[tokio::test]
async fn if_none_match_star_is_304() {
    let (res, body) = get(&[(header::IF_NONE_MATCH, "*")]).await;
    assert_not_modified(&res, &body);
}

#[tokio::test]
async fn if_none_match_other_is_200() {
    let (res, body) = get(&[(header::IF_NONE_MATCH, "\"md5-old\", \"x\"")]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body.len(), 1000);
}

#[tokio::test]
async fn if_modified_since_not_before_last_modified_is_304() {
    for date in [LAST_MODIFIED, "Wed, 15 Nov 2023 00:00:00 GMT"] {
        let (res, body) = get(&[(header::IF_MODIFIED_SINCE, date)]).await;
        assert_not_modified(&res, &body);
    }
}

#[tokio::test]
async fn if_modified_since_before_last_modified_is_200() {
    for date in ["Tue, 14 Nov 2023 22:13:19 GMT", "not a date"] {
        let (res, _) = get(&[(header::IF_MODIFIED_SINCE, date)]).await;
        assert_eq!(res.status(), StatusCode::OK, "{date}");
    }
}

#[tokio::test]
async fn if_none_match_overrides_if_modified_since() {
    let (res, _) = get(&[
        (header::IF_NONE_MATCH, "\"md5-old\""),
        (header::IF_MODIFIED_SINCE, LAST_MODIFIED),
    ])
    .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn if_match_mismatch_is_412() {
    let (res, body) = get(&[(header::IF_MATCH, "\"md5-old\"")]).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    assert!(body.is_empty());
    // If-Match uses strong comparison: a weak form of our tag does not match.
    let weak = format!("W/{ETAG}");
    let (res, _) = get(&[(header::IF_MATCH, &weak)]).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn if_match_matching_or_star_proceeds() {
    for value in [ETAG, "*"] {
        let (res, _) = get(&[(header::IF_MATCH, value), (header::RANGE, "bytes=0-0")]).await;
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{value}");
    }
}

#[tokio::test]
async fn if_unmodified_since_before_last_modified_is_412() {
    let (res, _) = get(&[(header::IF_UNMODIFIED_SINCE, "Tue, 14 Nov 2023 22:13:19 GMT")]).await;
    assert_eq!(res.status(), StatusCode::PRECONDITION_FAILED);
    let (res, _) = get(&[(header::IF_UNMODIFIED_SINCE, LAST_MODIFIED)]).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn head_has_headers_and_empty_body() {
    let (res, body) = send(Method::HEAD, &[], file(content(1000))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(hdr(&res, header::CONTENT_LENGTH), "1000");
    assert_eq!(hdr(&res, header::ACCEPT_RANGES), "bytes");
    assert_eq!(hdr(&res, header::ETAG), ETAG);
    assert_eq!(hdr(&res, header::LAST_MODIFIED), LAST_MODIFIED);
    assert_eq!(hdr(&res, header::CONTENT_TYPE), "image/jpeg");
    assert!(res.headers().get(header::CONTENT_DISPOSITION).is_some());
}

#[tokio::test]
async fn head_ignores_range() {
    // RFC 9110 §14.2: range handling is defined only for GET.
    let (res, body) = send(
        Method::HEAD,
        &[(header::RANGE, "bytes=0-9")],
        file(content(1000)),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(hdr(&res, header::CONTENT_LENGTH), "1000");
    assert!(body.is_empty());
}

#[tokio::test]
async fn head_honours_if_none_match() {
    let (res, body) = send(
        Method::HEAD,
        &[(header::IF_NONE_MATCH, ETAG)],
        file(content(10)),
    )
    .await;
    assert_not_modified(&res, &body);
}

#[tokio::test]
async fn content_disposition_carries_non_ascii_name() {
    let mut d = file(content(10));
    d.file_name = Some("报告 2026.pdf".to_owned());
    let (res, _) = send(Method::GET, &[], d).await;
    let cd = hdr(&res, header::CONTENT_DISPOSITION);
    assert!(cd.starts_with("attachment; filename=\""), "{cd}");
    assert!(
        cd.contains("filename*=UTF-8''%E6%8A%A5%E5%91%8A%202026.pdf"),
        "{cd}"
    );
    assert!(cd.contains("filename=\"__ 2026.pdf\""), "{cd}");
}

#[tokio::test]
async fn unnamed_file_is_still_an_attachment() {
    let mut d = file(content(10));
    d.file_name = None;
    let (res, _) = send(Method::GET, &[], d).await;
    assert_eq!(hdr(&res, header::CONTENT_DISPOSITION), "attachment");
}

#[tokio::test]
async fn invalid_content_type_falls_back_to_octet_stream() {
    let mut d = file(content(10));
    d.content_type = "text/html\r\nX-Evil: 1".to_owned();
    let (res, _) = send(Method::GET, &[], d).await;
    assert_eq!(hdr(&res, header::CONTENT_TYPE), "application/octet-stream");
}

#[tokio::test]
async fn zero_length_file() {
    let (res, body) = send(Method::GET, &[], file(Vec::new())).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(hdr(&res, header::CONTENT_LENGTH), "0");
    assert!(body.is_empty());

    let (res, _) = send(
        Method::GET,
        &[(header::RANGE, "bytes=0-0")],
        file(Vec::new()),
    )
    .await;
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(hdr(&res, header::CONTENT_RANGE), "bytes */0");

    let (res, _) = send(
        Method::GET,
        &[(header::RANGE, "bytes=-5")],
        file(Vec::new()),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn large_bodies_stream_in_blocks() {
    let data = content(READ_BLOCK * 2 + 12_345);
    let res = respond(&Method::GET, &HeaderMap::new(), file(data.clone()));
    let mut body = res.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(bytes) = frame.expect("frame").into_data() {
            frames.push(bytes);
        }
    }
    assert_eq!(frames.len(), 3);
    assert!(frames.iter().all(|f| f.len() <= READ_BLOCK));
    assert_eq!(frames.concat(), data);

    // A range crossing a block boundary.
    let start = READ_BLOCK - 7;
    let range = format!("bytes={start}-{}", READ_BLOCK * 2 + 3);
    let (res, body) = send(Method::GET, &[(header::RANGE, &range)], file(data.clone())).await;
    assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &data[start..=READ_BLOCK * 2 + 3]);
}

#[tokio::test]
async fn blob_shorter_than_promised_fails_the_body() {
    let mut d = file(content(100));
    d.len = 200;
    let res = respond(&Method::GET, &HeaderMap::new(), d);
    assert_eq!(res.headers()[header::CONTENT_LENGTH], "200");
    assert!(res.into_body().collect().await.is_err());
}

#[test]
fn last_modified_is_truncated_to_seconds() {
    let mut d = file(content(1));
    d.last_modified = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_999);
    let res = respond(&Method::GET, &HeaderMap::new(), d);
    assert_eq!(res.headers()[header::LAST_MODIFIED], LAST_MODIFIED);
}

// ---------------------------------------------------------------------------
// Through a server on the filesystem store: mapped windows and page-cache reads
// ---------------------------------------------------------------------------

mod common;

/// Ranges of a complete file on the filesystem store at unaligned offsets, each way a span
/// is served: 1 MiB and longer from a mapped window, shorter ones copied from the page
/// cache, several ranges in one multipart answer, and the whole file.
#[tokio::test]
async fn ranges_of_a_stored_file_are_exact_whichever_way_they_are_read() {
    let srv = common::TestServer::start().await;
    let data = common::test_bytes((3 << 20) + 12_345, 41);
    let created = srv
        .client
        .post(srv.url("/files/"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", data.len().to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap();
    let url = if location.starts_with("http") {
        location.to_owned()
    } else {
        srv.url(location)
    };
    for (first, len) in [
        (4_097u64, (1 << 20) + 7),
        (1, 1 << 20),
        (123_457, 300_000),
        (3 << 20, 12_345),
        (0, 1),
    ] {
        let last = first + len - 1;
        let r = srv
            .client
            .get(&url)
            .header("Range", format!("bytes={first}-{last}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206, "bytes={first}-{last}");
        let got = r.bytes().await.unwrap();
        assert!(
            got[..] == data[first as usize..=last as usize],
            "bytes={first}-{last}: {} bytes, not the file's",
            got.len()
        );
    }
    let r = srv
        .client
        .get(&url)
        .header("Range", "bytes=10-1048600,2000000-2000010")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    let boundary = r.headers()["content-type"]
        .to_str()
        .unwrap()
        .split("boundary=")
        .nth(1)
        .unwrap()
        .to_owned();
    let parts = parse_multipart(&r.bytes().await.unwrap(), &boundary);
    assert_eq!(parts.len(), 2);
    assert!(parts[0].2[..] == data[10..=1_048_600], "first part");
    assert!(parts[1].2[..] == data[2_000_000..=2_000_010], "second part");
    let (status, whole) = srv.get_bytes(&url).await;
    assert_eq!(status, 200);
    assert!(whole == data, "the whole file");
    srv.stop().await;
}
