//! IETF resumable uploads (draft-ietf-httpbis-resumable-upload, interop versions 3–8) over
//! HTTP against a real server on 127.0.0.1:0 (SPEC §2.4): creation, offset retrieval, append,
//! cancellation, limits, problem details, and resumption after a cut-off body.
//!
//! Interop 3 signals completeness with `Upload-Incomplete` (inverted), 4 and later with
//! `Upload-Complete`; 6 and later append `application/partial-upload` and get registered
//! problem types. The `104 Upload Resumption Supported` interim response is not sent (hyper
//! cannot), so nothing here waits for one.

mod common;

use common::{TestServer, sha256_hex, test_bytes};
use reqwest::{Method, Response, StatusCode};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

const PROBLEM_BASE: &str = "https://iana.org/assignments/http-problem-types#";

/// The completeness header a version uses and its value for `complete`.
fn completeness(v: u8, complete: bool) -> (&'static str, &'static str) {
    match (v, complete) {
        (3, true) => ("Upload-Incomplete", "?0"),
        (3, false) => ("Upload-Incomplete", "?1"),
        (_, true) => ("Upload-Complete", "?1"),
        (_, false) => ("Upload-Complete", "?0"),
    }
}

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

fn offset_of(r: &Response) -> u64 {
    header(r, "upload-offset")
        .expect("Upload-Offset")
        .parse()
        .unwrap()
}

/// Checks the completeness a response reports, in the header(s) of its version.
fn assert_complete(r: &Response, v: u8, complete: bool) {
    let (name, value) = completeness(v, complete);
    assert_eq!(header(r, name), Some(value), "{name} at interop {v}");
    if v == 3 {
        assert_eq!(
            header(r, "upload-complete"),
            None,
            "interop 3 has no Upload-Complete"
        );
    }
    if v >= 5 {
        assert_eq!(
            header(r, "upload-incomplete"),
            None,
            "interop {v} has no Upload-Incomplete"
        );
    }
}

/// `POST /files/` with the version's completeness header, extra headers and a body.
async fn create(
    s: &TestServer,
    v: u8,
    complete: bool,
    extra: &[(&str, String)],
    body: Vec<u8>,
) -> Response {
    let (name, value) = completeness(v, complete);
    let mut req = s
        .client
        .post(s.url("/files/"))
        .header("Upload-Draft-Interop-Version", v.to_string())
        .header(name, value);
    for (k, val) in extra {
        req = req.header(*k, val);
    }
    req.body(body).send().await.unwrap()
}

/// `PATCH <url>` as the version sends it (`application/partial-upload` from 6 on).
async fn append(
    s: &TestServer,
    url: &str,
    v: u8,
    offset: u64,
    complete: bool,
    body: Vec<u8>,
) -> Response {
    let (name, value) = completeness(v, complete);
    let mut req = s
        .client
        .patch(url)
        .header("Upload-Draft-Interop-Version", v.to_string())
        .header("Upload-Offset", offset.to_string())
        .header(name, value);
    if v >= 6 {
        req = req.header("Content-Type", "application/partial-upload");
    }
    req.body(body).send().await.unwrap()
}

async fn head(s: &TestServer, url: &str, v: u8) -> Response {
    s.client
        .head(url)
        .header("Upload-Draft-Interop-Version", v.to_string())
        .send()
        .await
        .unwrap()
}

fn location(r: &Response) -> String {
    header(r, "location").expect("Location").to_owned()
}

/// The problem details of an error response, after checking its media type.
async fn problem(r: Response) -> serde_json::Value {
    assert_eq!(
        header(&r, "content-type"),
        Some("application/problem+json"),
        "errors are problem details"
    );
    r.json().await.unwrap()
}

/// The server's durable offset, waiting (bounded) until it reaches `want`: a cut-off body is
/// committed after the connection dropped, so the HEAD may briefly see less.
async fn wait_for_offset(s: &TestServer, url: &str, v: u8, want: u64) -> Response {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = head(s, url, v).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        if offset_of(&r) == want || tokio::time::Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends the request head and only `sent` bytes of a body announced with `Content-Length`,
/// then drops the connection: a client whose network died mid-request.
async fn send_cut_off(s: &TestServer, head_lines: &str, body: &[u8], sent: usize) {
    let addr = s.base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{head_lines}Host: {addr}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp.write_all(&body[..sent]).await.unwrap();
    tcp.flush().await.unwrap();
    drop(tcp);
}

/// The one upload still receiving. The `104 Upload Resumption Supported` interim response
/// would have told a client this URL before its creation request was cut off; hyper cannot
/// send it, so the test reads it from the server as the stand-in.
async fn only_incomplete_upload(s: &TestServer) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ids = s.state.engine.meta().list_incomplete().await.unwrap();
        if ids.len() == 1 {
            return s.url(&format!("/files/{}", ids[0]));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected one incomplete upload, found {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- creation

#[tokio::test]
async fn v3_incomplete_creation_answers_201_with_location_offset_and_upload_incomplete() {
    let s = TestServer::start().await;
    let r = create(&s, 3, false, &[], b"hello".to_vec()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "upload-draft-interop-version"), Some("3"));
    let loc = location(&r);
    let id = loc.rsplit('/').next().unwrap();
    assert!(loc.starts_with(&s.url("/files/")), "{loc}");
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{loc}"
    );
    assert_eq!(offset_of(&r), 5);
    assert_complete(&r, 3, false);
    // Not finished, so not downloadable yet.
    assert_eq!(s.get_bytes(&loc).await.0, 404);
    s.stop().await;
}

#[tokio::test]
async fn v3_complete_creation_with_upload_incomplete_false_stores_the_whole_file() {
    let s = TestServer::start().await;
    let data = test_bytes(100_003, 3);
    let r = create(&s, 3, true, &[], data.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_complete(&r, 3, true);
    assert_eq!(offset_of(&r), data.len() as u64);
    assert_eq!(header(&r, "upload-length"), Some("100003"));
    let (status, got) = s.get_bytes(&location(&r)).await;
    assert_eq!(status, 200);
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    s.stop().await;
}

#[tokio::test]
async fn v4_reads_upload_complete_and_answers_in_both_completeness_headers() {
    let s = TestServer::start().await;
    let r = create(&s, 4, false, &[], b"abc".to_vec()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "upload-complete"), Some("?0"));
    assert_eq!(header(&r, "upload-incomplete"), Some("?1"));
    let r = append(&s, &location(&r), 4, 3, true, b"def".to_vec()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "upload-complete"), Some("?1"));
    assert_eq!(header(&r, "upload-incomplete"), Some("?0"));
    assert_eq!(s.get_bytes(&location(&r)).await.1, b"abcdef");
    s.stop().await;
}

#[tokio::test]
async fn v6_incomplete_creation_answers_201_with_upload_complete_false_and_upload_limit() {
    let s = TestServer::start().await;
    let r = create(
        &s,
        6,
        false,
        &[
            ("Upload-Length", "10".into()),
            ("Content-Type", "application/partial-upload".into()),
        ],
        b"0123".to_vec(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "upload-draft-interop-version"), Some("6"));
    assert_complete(&r, 6, false);
    assert_eq!(offset_of(&r), 4);
    assert_eq!(header(&r, "upload-length"), Some("10"));
    assert!(header(&r, "location").is_some());
    let limit = header(&r, "upload-limit").expect("Upload-Limit");
    assert!(limit.starts_with("max-size="), "{limit}");
    s.stop().await;
}

#[tokio::test]
async fn v6_creation_without_a_body_returns_the_url_before_any_byte() {
    let s = TestServer::start().await;
    let r = create(&s, 6, false, &[], Vec::new()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(offset_of(&r), 0);
    assert_complete(&r, 6, false);
    assert_eq!(header(&r, "upload-length"), None, "no length declared yet");
    let h = head(&s, &location(&r), 6).await;
    assert_eq!(offset_of(&h), 0);
    s.stop().await;
}

#[tokio::test]
async fn v8_complete_creation_finishes_the_upload_and_the_file_downloads_identically() {
    let s = TestServer::start().await;
    let data = test_bytes(3 * 1024 * 1024 + 17, 8);
    let r = create(
        &s,
        8,
        true,
        &[(
            "Content-Disposition",
            "inline; filename=\"report 2024.pdf\"".into(),
        )],
        data.clone(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_complete(&r, 8, true);
    assert_eq!(offset_of(&r), data.len() as u64);
    assert_eq!(
        header(&r, "upload-length"),
        Some(data.len().to_string().as_str())
    );
    let loc = location(&r);
    let got = s.client.get(&loc).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    let disposition = header(&got, "content-disposition").unwrap_or("").to_owned();
    assert!(disposition.contains("report 2024.pdf"), "{disposition}");
    assert_eq!(sha256_hex(&got.bytes().await.unwrap()), sha256_hex(&data));
    // An IETF upload is a normal engine upload: counted under the tus dialect.
    assert!(
        s.metric("ferry_uploads_completed_total{dialect=\"tus\"}")
            .await
            >= 1.0
    );
    s.stop().await;
}

#[tokio::test]
async fn v8_complete_creation_whose_content_length_contradicts_upload_length_is_refused() {
    let s = TestServer::start().await;
    let r = create(
        &s,
        8,
        true,
        &[("Upload-Length", "100".into())],
        b"short".to_vec(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let p = problem(r).await;
    assert_eq!(
        p["type"],
        format!("{PROBLEM_BASE}inconsistent-upload-length")
    );
    assert!(
        s.state
            .engine
            .meta()
            .list_incomplete()
            .await
            .unwrap()
            .is_empty(),
        "nothing was created"
    );
    s.stop().await;
}

#[tokio::test]
async fn creation_without_the_completeness_header_is_a_400_naming_it() {
    let s = TestServer::start().await;
    for (v, name) in [(3, "Upload-Incomplete"), (8, "Upload-Complete")] {
        let r = s
            .client
            .post(s.url("/files/"))
            .header("Upload-Draft-Interop-Version", v.to_string())
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let p = problem(r).await;
        assert!(p["detail"].as_str().unwrap().contains(name), "{p}");
    }
    s.stop().await;
}

#[tokio::test]
async fn an_unsupported_interop_version_is_a_400_problem_listing_the_supported_ones() {
    let s = TestServer::start().await;
    for bad in ["2", "9", "x"] {
        let r = s
            .client
            .post(s.url("/files/"))
            .header("Upload-Draft-Interop-Version", bad)
            .header("Upload-Complete", "?1")
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "version {bad}");
        let p = problem(r).await;
        assert!(p["detail"].as_str().unwrap().contains("3 to 8"), "{p}");
    }
    s.stop().await;
}

// ---------------------------------------------------------------- offset retrieval

#[tokio::test]
async fn head_reports_offset_completeness_length_and_no_store_for_every_version() {
    let s = TestServer::start().await;
    for v in 3..=8u8 {
        let r = create(&s, v, false, &[("Upload-Length", "20".into())], vec![7; 5]).await;
        assert_eq!(r.status(), StatusCode::CREATED, "v{v}");
        let h = head(&s, &location(&r), v).await;
        assert_eq!(h.status(), StatusCode::NO_CONTENT, "v{v}");
        assert_eq!(
            header(&h, "upload-draft-interop-version"),
            Some(v.to_string().as_str())
        );
        assert_eq!(offset_of(&h), 5, "v{v}");
        assert_complete(&h, v, false);
        assert_eq!(header(&h, "upload-length"), Some("20"), "v{v}");
        assert_eq!(header(&h, "cache-control"), Some("no-store"), "v{v}");
        assert_eq!(header(&h, "upload-limit").is_some(), v >= 6, "v{v}");
    }
    s.stop().await;
}

#[tokio::test]
async fn head_of_a_finished_upload_reports_it_complete() {
    let s = TestServer::start().await;
    let r = create(&s, 5, true, &[], b"done".to_vec()).await;
    let h = head(&s, &location(&r), 5).await;
    assert_eq!(h.status(), StatusCode::NO_CONTENT);
    assert_complete(&h, 5, true);
    assert_eq!(offset_of(&h), 4);
    assert_eq!(header(&h, "upload-length"), Some("4"));
    s.stop().await;
}

#[tokio::test]
async fn head_of_an_unknown_upload_is_404() {
    let s = TestServer::start().await;
    let h = head(&s, &s.url(&format!("/files/{}", "0".repeat(32))), 8).await;
    assert_eq!(h.status(), StatusCode::NOT_FOUND);
    s.stop().await;
}

// ---------------------------------------------------------------- append

#[tokio::test]
async fn appends_advance_the_offset_and_the_completing_append_infers_the_length() {
    let s = TestServer::start().await;
    let data = test_bytes(2 * 1024 * 1024 + 5, 11);
    let r = create(&s, 8, false, &[], Vec::new()).await;
    let url = location(&r);
    let (a, b) = data.split_at(1024 * 1024 + 1);
    let r = append(&s, &url, 8, 0, false, a.to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset_of(&r), a.len() as u64);
    assert_complete(&r, 8, false);
    // No Upload-Length anywhere: `Upload-Complete: ?1` with the final offset fixes it.
    let r = append(&s, &url, 8, a.len() as u64, true, b.to_vec()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_complete(&r, 8, true);
    assert_eq!(offset_of(&r), data.len() as u64);
    assert_eq!(
        header(&r, "upload-length"),
        Some(data.len().to_string().as_str())
    );
    assert_eq!(location(&r), url);
    let (status, got) = s.get_bytes(&url).await;
    assert_eq!(status, 200);
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    s.stop().await;
}

#[tokio::test]
async fn an_empty_completing_append_finishes_an_upload_whose_bytes_all_arrived() {
    let s = TestServer::start().await;
    let r = create(&s, 7, false, &[], b"all of it".to_vec()).await;
    let url = location(&r);
    let r = append(&s, &url, 7, 9, true, Vec::new()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_complete(&r, 7, true);
    assert_eq!(s.get_bytes(&url).await.1, b"all of it");
    s.stop().await;
}

#[tokio::test]
async fn v6_append_needs_partial_upload_content_type_but_v5_takes_any() {
    let s = TestServer::start().await;
    let r = create(&s, 6, false, &[], Vec::new()).await;
    let url = location(&r);
    let r = s
        .client
        .patch(&url)
        .header("Upload-Draft-Interop-Version", "6")
        .header("Upload-Offset", "0")
        .header("Upload-Complete", "?0")
        .header("Content-Type", "application/offset+octet-stream")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(offset_of(&head(&s, &url, 6).await), 0, "nothing stored");

    // tus-js-client's `ietf-draft-03` mode (interop 5) sends no Content-Type.
    let r = create(&s, 5, false, &[], Vec::new()).await;
    let url = location(&r);
    let r = append(&s, &url, 5, 0, false, b"abc".to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset_of(&r), 3);
    s.stop().await;
}

#[tokio::test]
async fn append_without_upload_offset_is_a_400() {
    let s = TestServer::start().await;
    let url = location(&create(&s, 8, false, &[], Vec::new()).await);
    for bad in [None, Some("-1"), Some("ten")] {
        let mut req = s
            .client
            .patch(&url)
            .header("Upload-Draft-Interop-Version", "8")
            .header("Upload-Complete", "?0")
            .header("Content-Type", "application/partial-upload");
        if let Some(b) = bad {
            req = req.header("Upload-Offset", b);
        }
        let r = req.body("abc").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        problem(r).await;
    }
    assert_eq!(offset_of(&head(&s, &url, 8).await), 0);
    s.stop().await;
}

#[tokio::test]
async fn mismatching_offset_is_a_409_problem_with_expected_and_provided_offsets() {
    let s = TestServer::start().await;
    let url = location(&create(&s, 6, false, &[], b"12345".to_vec()).await);
    let r = append(&s, &url, 6, 2, false, b"XY".to_vec()).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(offset_of(&r), 5, "the correct offset comes with the 409");
    assert_complete(&r, 6, false);
    let p = problem(r).await;
    assert_eq!(
        p["type"],
        format!("{PROBLEM_BASE}mismatching-upload-offset")
    );
    assert_eq!(
        p["title"],
        "offset from request does not match offset of resource"
    );
    assert_eq!(p["expected-offset"], 5);
    assert_eq!(p["provided-offset"], 2);
    assert!(p["detail"].as_str().is_some());
    assert_eq!(offset_of(&head(&s, &url, 6).await), 5, "nothing stored");
    s.stop().await;
}

#[tokio::test]
async fn mismatching_offset_before_interop_6_is_a_plain_409_with_the_offset() {
    let s = TestServer::start().await;
    for v in [3u8, 5] {
        let url = location(&create(&s, v, false, &[], b"12345".to_vec()).await);
        let r = append(&s, &url, v, 9, false, b"XY".to_vec()).await;
        assert_eq!(r.status(), StatusCode::CONFLICT, "v{v}");
        assert_eq!(offset_of(&r), 5);
        assert_complete(&r, v, false);
        // Those drafts register no problem types: a generic problem, no extension members.
        let p = problem(r).await;
        assert_eq!(p["type"], "about:blank");
        assert_eq!(p["title"], "Conflict");
        assert!(p.get("expected-offset").is_none());
    }
    s.stop().await;
}

#[tokio::test]
async fn appending_to_a_completed_upload_is_a_400_completed_upload_problem() {
    let s = TestServer::start().await;
    let url = location(&create(&s, 8, true, &[], b"final".to_vec()).await);
    let r = append(&s, &url, 8, 5, false, b"more".to_vec()).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_complete(&r, 8, true);
    let p = problem(r).await;
    assert_eq!(p["type"], format!("{PROBLEM_BASE}completed-upload"));
    assert_eq!(p["title"], "upload is already completed");
    assert_eq!(s.get_bytes(&url).await.1, b"final", "the file is unchanged");
    s.stop().await;
}

#[tokio::test]
async fn a_completing_append_short_of_the_declared_length_is_inconsistent() {
    let s = TestServer::start().await;
    let url = location(&create(&s, 7, false, &[("Upload-Length", "10".into())], Vec::new()).await);
    let r = append(&s, &url, 7, 0, true, b"only6b".to_vec()).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let p = problem(r).await;
    assert_eq!(
        p["type"],
        format!("{PROBLEM_BASE}inconsistent-upload-length")
    );
    let h = head(&s, &url, 7).await;
    assert_complete(&h, 7, false);
    assert_eq!(header(&h, "upload-length"), Some("10"));
    s.stop().await;
}

// ---------------------------------------------------------------- cancellation

#[tokio::test]
async fn cancellation_answers_204_and_the_upload_is_gone() {
    let s = TestServer::start().await;
    let url = location(&create(&s, 8, false, &[], b"partial".to_vec()).await);
    let r = s
        .client
        .delete(&url)
        .header("Upload-Draft-Interop-Version", "8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "upload-draft-interop-version"), Some("8"));
    assert_eq!(head(&s, &url, 8).await.status(), StatusCode::NOT_FOUND);
    let r = append(&s, &url, 8, 7, true, b"x".to_vec()).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(
        s.state
            .engine
            .meta()
            .list_incomplete()
            .await
            .unwrap()
            .is_empty(),
        "no record left"
    );
    s.stop().await;
}

// ---------------------------------------------------------------- limits

#[tokio::test]
async fn options_and_creation_announce_the_upload_limit_and_oversize_is_413() {
    let s = TestServer::start_with(|a| a.max_upload_size = 1 << 20).await;
    let r = s
        .client
        .request(Method::OPTIONS, s.url("/files/"))
        .header("Upload-Draft-Interop-Version", "8")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(header(&r, "upload-limit"), Some("max-size=1048576"));
    assert!(
        header(&r, "accept-patch")
            .unwrap_or("")
            .contains("application/partial-upload")
    );
    // Interop 5 predates Upload-Limit.
    let r = s
        .client
        .request(Method::OPTIONS, s.url("/files/"))
        .header("Upload-Draft-Interop-Version", "5")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(header(&r, "upload-limit"), None);

    let r = create(
        &s,
        7,
        false,
        &[("Upload-Length", "2097152".into())],
        Vec::new(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(header(&r, "upload-limit"), Some("max-size=1048576"));
    problem(r).await;
    let r = create(&s, 8, true, &[], vec![0; (1 << 20) + 1]).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        s.state
            .engine
            .meta()
            .list_incomplete()
            .await
            .unwrap()
            .is_empty(),
        "refused before anything was stored"
    );
    s.stop().await;
}

// ---------------------------------------------------------------- interruption and resumption

#[tokio::test]
async fn cut_off_creation_body_keeps_what_arrived_and_head_then_patch_completes_identical_bytes() {
    let s = TestServer::start().await;
    let data = test_bytes(3 * 1024 * 1024 + 333, 21);
    let sent = 1024 * 1024 + 7;
    send_cut_off(
        &s,
        "POST /files/ HTTP/1.1\r\nUpload-Draft-Interop-Version: 6\r\nUpload-Complete: ?1\r\n\
         Content-Type: application/partial-upload\r\n",
        &data,
        sent,
    )
    .await;
    let url = only_incomplete_upload(&s).await;
    let h = wait_for_offset(&s, &url, 6, sent as u64).await;
    assert_eq!(
        offset_of(&h),
        sent as u64,
        "every byte that arrived is held"
    );
    assert_complete(&h, 6, false);
    // `Upload-Complete: ?1` with Content-Length declared the length (draft §Length).
    assert_eq!(
        header(&h, "upload-length"),
        Some(data.len().to_string().as_str())
    );
    assert_eq!(s.get_bytes(&url).await.0, 404, "not visible while partial");

    let r = append(&s, &url, 6, sent as u64, true, data[sent..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_complete(&r, 6, true);
    let (status, got) = s.get_bytes(&url).await;
    assert_eq!(status, 200);
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    s.stop().await;
}

#[tokio::test]
async fn cut_off_append_keeps_what_arrived_and_the_client_resumes_from_head() {
    let s = TestServer::start().await;
    let data = test_bytes(2 * 1024 * 1024 + 99, 31);
    let url = location(&create(&s, 3, false, &[], data[..1000].to_vec()).await);
    let path = url.trim_start_matches(&s.base).to_owned();
    let rest = &data[1000..];
    let sent = 777_777;
    send_cut_off(
        &s,
        &format!(
            "PATCH {path} HTTP/1.1\r\nUpload-Draft-Interop-Version: 3\r\nUpload-Offset: 1000\r\n\
             Upload-Incomplete: ?0\r\n"
        ),
        rest,
        sent,
    )
    .await;
    let h = wait_for_offset(&s, &url, 3, 1000 + sent as u64).await;
    assert_eq!(offset_of(&h), 1000 + sent as u64);
    assert_complete(&h, 3, false);

    let at = offset_of(&h);
    let r = append(&s, &url, 3, at, true, data[at as usize..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_complete(&r, 3, true);
    let (status, got) = s.get_bytes(&url).await;
    assert_eq!(status, 200);
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    s.stop().await;
}

// ---------------------------------------------------------------- downloads

#[tokio::test]
async fn get_files_id_serves_an_appended_upload_equal_to_the_source_with_ranges() {
    let s = TestServer::start().await;
    let data = test_bytes(5 * 1024 * 1024 + 3, 41);
    let url = location(
        &create(
            &s,
            8,
            false,
            &[("Upload-Length", data.len().to_string())],
            data[..1 << 20].to_vec(),
        )
        .await,
    );
    let mut at = 1usize << 20;
    for piece in data[at..].chunks(3 * 512 * 1024) {
        let last = at + piece.len() == data.len();
        let r = append(&s, &url, 8, at as u64, last, piece.to_vec()).await;
        assert!(r.status().is_success(), "{}", r.status());
        at += piece.len();
        assert_eq!(offset_of(&r), at as u64);
    }
    let (status, got) = s.get_bytes(&url).await;
    assert_eq!(status, 200);
    assert_eq!(got.len(), data.len());
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    let r = s
        .client
        .get(&url)
        .header("Range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[100..200]);
    s.stop().await;
}

#[tokio::test]
async fn reaching_the_declared_length_completes_and_a_final_empty_completing_append_is_accepted() {
    let s = TestServer::start().await;
    // `?0`, but the declared length is all there: the upload is complete, and says so.
    let r = create(
        &s,
        8,
        false,
        &[("Upload-Length", "4".into())],
        b"full".to_vec(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_complete(&r, 8, true);
    let url = location(&r);
    // The draft's explicit completion (or a retry of it) is answered, not refused...
    let r = append(&s, &url, 8, 4, true, Vec::new()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_complete(&r, 8, true);
    assert_eq!(offset_of(&r), 4);
    // ...but bytes past the end still are.
    let r = append(&s, &url, 8, 4, true, b"more".to_vec()).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(s.get_bytes(&url).await.1, b"full");
    s.stop().await;
}

#[tokio::test]
async fn appends_past_the_size_limit_without_a_declared_length_are_413_with_upload_limit() {
    let s = TestServer::start_with(|a| a.max_upload_size = 1 << 20).await;
    let url = location(&create(&s, 8, false, &[], vec![1; 1000]).await);
    // With Content-Length: refused before a byte is stored.
    let r = append(&s, &url, 8, 1000, false, vec![2; 1 << 20]).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(header(&r, "upload-limit"), Some("max-size=1048576"));
    assert_eq!(offset_of(&r), 1000);
    problem(r).await;
    // Streamed without a length: the engine stops it at the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..5).map(|_| Ok(vec![3; 256 * 1024])).collect();
    let r = s
        .client
        .patch(&url)
        .header("Upload-Draft-Interop-Version", "8")
        .header("Upload-Offset", "1000")
        .header("Upload-Complete", "?0")
        .header("Content-Type", "application/partial-upload")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(header(&r, "upload-limit"), Some("max-size=1048576"));
    let p = problem(r).await;
    assert_eq!(p["code"], "too_large");
    s.stop().await;
}

#[tokio::test]
async fn upload_limit_carries_the_remaining_lifetime_under_expire_incomplete() {
    let s = TestServer::start_with(|a| {
        a.max_upload_size = 1 << 30;
        a.expire_incomplete = Duration::from_secs(3600);
    })
    .await;
    let r = s
        .client
        .request(Method::OPTIONS, s.url("/files/"))
        .header("Upload-Draft-Interop-Version", "8")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "upload-limit"),
        Some("max-size=1073741824, max-age=3600")
    );
    let url = location(&create(&s, 7, false, &[], b"x".to_vec()).await);
    let h = head(&s, &url, 7).await;
    let limit = header(&h, "upload-limit").unwrap().to_owned();
    let age: u64 = limit
        .split("max-age=")
        .nth(1)
        .expect("max-age")
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&age), "{limit}");
    // Drafts -04 and -05 (interop 6) called it `expires`.
    let h = head(&s, &url, 6).await;
    assert!(
        header(&h, "upload-limit").unwrap().contains(", expires="),
        "{:?}",
        header(&h, "upload-limit")
    );
    // A finished upload does not expire.
    let done = location(&create(&s, 8, true, &[], b"y".to_vec()).await);
    let h = head(&s, &done, 8).await;
    assert_eq!(header(&h, "upload-limit"), Some("max-size=1073741824"));
    s.stop().await;
}

#[tokio::test]
async fn file_name_and_type_come_from_the_draft_headers_or_tus_js_client_metadata() {
    let s = TestServer::start().await;
    // tus-js-client in IETF mode: `Upload-Metadata` (base64 "photo.png", "image/png") and a
    // transfer Content-Type that is not the file's.
    let r = create(
        &s,
        6,
        true,
        &[
            (
                "Upload-Metadata",
                "filename cGhvdG8ucG5n,filetype aW1hZ2UvcG5n".into(),
            ),
            ("Content-Type", "application/partial-upload".into()),
        ],
        b"png bytes".to_vec(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = s.client.get(location(&r)).send().await.unwrap();
    assert_eq!(header(&got, "content-type"), Some("image/png"));
    assert!(
        header(&got, "content-disposition")
            .unwrap_or("")
            .contains("photo.png")
    );
    // The draft's own headers.
    let r = create(
        &s,
        8,
        true,
        &[
            (
                "Content-Disposition",
                "inline; filename*=UTF-8''%E6%8A%A5%E5%91%8A.txt".into(),
            ),
            ("Content-Type", "text/plain; charset=utf-8".into()),
        ],
        "你好".as_bytes().to_vec(),
    )
    .await;
    let got = s.client.get(location(&r)).send().await.unwrap();
    assert_eq!(
        header(&got, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(
        header(&got, "content-disposition")
            .unwrap_or("")
            .contains("%E6%8A%A5%E5%91%8A.txt")
    );
    s.stop().await;
}
