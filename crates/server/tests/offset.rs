//! The byte-offset resume dialect end to end (SPEC §2.2), against a real server on
//! `127.0.0.1:0`: `GET /api/upload/status` and raw-body `POST /api/upload` (and its alias
//! `POST /upload`) with `X-File-Id` plus `X-Start-Byte` or `Content-Range`.
//!
//! Sections follow the verbs: status, appends (`X-Start-Byte`), positional writes
//! (`Content-Range`), the `/upload` alias, a body cut off mid-way (a raw socket that closes
//! early), and errors. Every error test checks the status, the stable `error` code and a
//! message, then that the held count did not move (SPEC §6: bad input changes nothing) and
//! that the upload still completes with the source's bytes.

mod common;

use common::{TestServer, test_bytes};
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// One answer of the byte-offset endpoint: status, headers and the JSON body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

/// POSTs a raw body with the given headers. Owned arguments, so it can run in a spawned task.
async fn post_raw(
    client: reqwest::Client,
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
) -> Reply {
    let mut req = client
        .post(url)
        .header("content-type", "application/octet-stream")
        .body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = r.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("answer is not JSON: {:?}", String::from_utf8_lossy(&bytes)));
    Reply {
        status,
        headers,
        body,
    }
}

/// `X-Start-Byte: start` append of `body`, declaring `size` when given.
async fn append(srv: &TestServer, id: &str, start: u64, size: Option<usize>, body: &[u8]) -> Reply {
    let mut headers = vec![
        ("x-file-id", id.to_owned()),
        ("x-start-byte", start.to_string()),
    ];
    if let Some(size) = size {
        headers.push(("x-file-size", size.to_string()));
    }
    post_raw(
        srv.client.clone(),
        srv.url("/api/upload"),
        headers,
        body.to_vec(),
    )
    .await
}

/// `Content-Range: bytes first-last/total` write of `data[first..=last]`.
async fn put_range(
    client: reqwest::Client,
    url: String,
    id: String,
    data: &[u8],
    first: usize,
    last: usize,
) -> Reply {
    let headers = vec![
        ("x-file-id", id),
        (
            "content-range",
            format!("bytes {first}-{last}/{}", data.len()),
        ),
    ];
    post_raw(client, url, headers, data[first..=last].to_vec()).await
}

/// A 2xx progress answer: checks its shape and returns it.
#[track_caller]
fn ok(r: &Reply) -> &Value {
    assert_eq!(r.status, 200, "expected success, got {r:?}");
    assert_eq!(
        r.headers["x-upload-offset"].to_str().unwrap(),
        r.body["offset"].to_string(),
        "X-Upload-Offset header and body agree"
    );
    &r.body
}

/// An error answer: status, `error` code, a message a person can act on.
#[track_caller]
fn assert_error(r: &Reply, status: u16, error: &str) {
    assert_eq!(r.status, status, "HTTP status; answer {r:?}");
    assert_eq!(
        r.body["error"], error,
        "machine-readable error code: {:?}",
        r.body
    );
    assert!(
        r.body["message"]
            .as_str()
            .is_some_and(|m| !m.trim().is_empty()),
        "message must say what went wrong: {:?}",
        r.body
    );
}

/// Inclusive missing ranges of `0..total` given the inclusive ranges held.
fn missing_of(total: usize, held: &[(usize, usize)]) -> Vec<[usize; 2]> {
    let mut covered = vec![false; total];
    for &(a, b) in held {
        covered[a..=b].iter_mut().for_each(|c| *c = true);
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < total {
        if covered[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < total && !covered[i] {
            i += 1;
        }
        out.push([start, i - 1]);
    }
    out
}

#[track_caller]
fn missing_field(body: &Value) -> Vec<[usize; 2]> {
    serde_json::from_value(body["missing"].clone())
        .unwrap_or_else(|e| panic!("missing must be [[first, last], …]: {e}; {body}"))
}

/// The URL of a completed upload: `<base>/files/<32 hex>`.
#[track_caller]
fn completed_url(srv: &TestServer, body: &Value) -> String {
    assert_eq!(body["complete"], true, "{body}");
    let url = body["url"]
        .as_str()
        .unwrap_or_else(|| panic!("url: {body}"))
        .to_owned();
    let id = url
        .strip_prefix(&srv.url("/files/"))
        .unwrap_or_else(|| panic!("url {url} is not under /files/"));
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "upload id in {url}"
    );
    url
}

/// Downloads `url` and checks it is byte for byte `data`.
async fn assert_served(srv: &TestServer, url: &str, data: &[u8]) {
    let (status, body) = srv.get_bytes(url).await;
    assert_eq!(status, 200, "GET {url}");
    assert_eq!(body.len(), data.len(), "downloaded length");
    assert!(body == data, "downloaded bytes differ from the source");
}

/// A deterministic shuffle (Fisher–Yates over xorshift), so failures reproduce.
fn shuffled(mut v: Vec<usize>, seed: u64) -> Vec<usize> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

/// An upload half done for the error tests: 100 000 bytes declared, the first 40 000 held.
const SEED_ID: &str = "report.pdf-100000-1700000000000";
const SEED_TOTAL: usize = 100_000;
const SEED_HELD: usize = 40_000;

async fn seeded(srv: &TestServer) -> Vec<u8> {
    let data = test_bytes(SEED_TOTAL, 40);
    let r = append(srv, SEED_ID, 0, Some(SEED_TOTAL), &data[..SEED_HELD]).await;
    assert_eq!(ok(&r)["offset"], SEED_HELD);
    assert_eq!(srv.offset_status(SEED_ID).await, SEED_HELD as u64);
    data
}

/// Nothing moved: the held count is what it was, and resuming there completes the file with
/// exactly the source's bytes.
async fn assert_unchanged_then_complete(srv: &TestServer, data: &[u8]) {
    assert_eq!(
        srv.offset_status(SEED_ID).await,
        SEED_HELD as u64,
        "the held count changed after a refused request"
    );
    let r = append(srv, SEED_ID, SEED_HELD as u64, None, &data[SEED_HELD..]).await;
    let url = completed_url(srv, ok(&r));
    assert_served(srv, &url, data).await;
}

// ---------------------------------------------------------------------------
// GET /api/upload/status
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_an_unknown_id_is_zero_as_text_plain() {
    let srv = TestServer::start().await;
    let r = srv
        .client
        .get(srv.url("/api/upload/status"))
        .header("x-file-id", "never-seen-123-456")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain"), "content-type {ct}");
    assert_eq!(r.text().await.unwrap().trim(), "0");
    // Asking about an id creates nothing.
    assert_eq!(
        srv.metric("ferry_uploads_started_total{dialect=\"offset\"}")
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_without_a_file_id_is_400() {
    let srv = TestServer::start().await;
    let r = srv
        .client
        .get(srv.url("/api/upload/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

// ---------------------------------------------------------------------------
// POST /api/upload with X-Start-Byte (append)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_exactly_the_bytes_sent_and_appending_the_rest_completes_the_file() {
    let srv = TestServer::start().await;
    let data = test_bytes((3 << 20) + 4_321, 41);
    let id = "movie.mp4-3150049-1700000000000";

    // Part of the file, then the client goes away.
    let sent = 1_234_567;
    let r = append(&srv, id, 0, Some(data.len()), &data[..sent]).await;
    let body = ok(&r);
    assert_eq!(body["offset"], sent);
    assert_eq!(body["complete"], false);
    assert_eq!(body["size"], data.len());

    // A new session asks where to resume: exactly the bytes sent.
    assert_eq!(srv.offset_status(id).await, sent as u64);

    // It appends the rest (in two requests) at the reported offset.
    let mid = sent + (1 << 20);
    let r = append(&srv, id, sent as u64, None, &data[sent..mid]).await;
    assert_eq!(ok(&r)["offset"], mid);
    assert_eq!(srv.offset_status(id).await, mid as u64);
    let r = append(&srv, id, mid as u64, None, &data[mid..]).await;
    let body = ok(&r);
    assert_eq!(body["offset"], data.len());
    let url = completed_url(&srv, body);
    assert_eq!(srv.offset_status(id).await, data.len() as u64);
    assert_served(&srv, &url, &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_start_byte_is_409_with_the_held_count_and_changes_nothing() {
    let srv = TestServer::start().await;
    let data = seeded(&srv).await;
    for wrong in [0u64, 30_000, SEED_HELD as u64 + 1, 90_000] {
        let end = (wrong as usize + 5_000).min(SEED_TOTAL);
        let r = append(&srv, SEED_ID, wrong, None, &data[wrong as usize..end]).await;
        assert_error(&r, 409, "offset_mismatch");
        assert_eq!(r.body["offset"], SEED_HELD, "{:?}", r.body);
        assert_eq!(
            r.headers["x-upload-offset"].to_str().unwrap(),
            SEED_HELD.to_string()
        );
    }
    assert_unchanged_then_complete(&srv, &data).await;
}

// ---------------------------------------------------------------------------
// POST /api/upload with Content-Range (out of order, parallel)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_range_chunks_out_of_order_report_the_missing_ranges_and_complete() {
    let srv = TestServer::start().await;
    let data = test_bytes((1 << 20) + 100, 42);
    let id = "photos.zip-1048676-1700000000000".to_owned();
    let part = 256 << 10;
    let parts: Vec<(usize, usize)> = (0..data.len())
        .step_by(part)
        .map(|a| (a, (a + part).min(data.len()) - 1))
        .collect();
    assert_eq!(parts.len(), 5);

    let mut held = Vec::new();
    let order = [2usize, 4, 0, 3, 1];
    for (k, &p) in order.iter().enumerate() {
        let (first, last) = parts[p];
        let r = put_range(
            srv.client.clone(),
            srv.url("/api/upload"),
            id.clone(),
            &data,
            first,
            last,
        )
        .await;
        held.push((first, last));
        let body = ok(&r);
        assert_eq!(body["size"], data.len());
        assert_eq!(
            missing_field(body),
            missing_of(data.len(), &held),
            "after part {p}"
        );
        if k + 1 < order.len() {
            assert_eq!(body["complete"], false);
            assert!(body["url"].is_null(), "no URL before completion: {body}");
        }
        // Status is the contiguous prefix, where an appending client would resume.
        let prefix = missing_of(data.len(), &held)
            .first()
            .map_or(data.len(), |m| m[0]);
        assert_eq!(body["offset"], prefix);
        assert_eq!(srv.offset_status(&id).await, prefix as u64);
    }
    let r = put_range(
        srv.client.clone(),
        srv.url("/api/upload"),
        id.clone(),
        &data,
        0,
        9,
    )
    .await;
    // A late retry of a part already held is answered like the completion was.
    let url = completed_url(&srv, ok(&r));
    assert_served(&srv, &url, &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_range_chunks_in_parallel_complete_with_identical_bytes() {
    let srv = TestServer::start().await;
    let data = std::sync::Arc::new(test_bytes((4 << 20) + 999, 43));
    let id = "disk.img-4195303-1700000000000";
    let part = 256 << 10;
    let parts: Vec<(usize, usize)> = (0..data.len())
        .step_by(part)
        .map(|a| (a, (a + part).min(data.len()) - 1))
        .collect();
    assert_eq!(parts.len(), 17);

    // Every part at once, shuffled, each its own task on its own connection.
    let tasks: Vec<_> = shuffled((0..parts.len()).collect(), 43)
        .into_iter()
        .map(|p| {
            let (first, last) = parts[p];
            let (client, url, id, data) = (
                srv.client.clone(),
                srv.url("/api/upload"),
                id.to_owned(),
                data.clone(),
            );
            tokio::spawn(async move { (p, put_range(client, url, id, &data, first, last).await) })
        })
        .collect();
    let mut urls = Vec::new();
    for t in tasks {
        let (p, r) = t.await.unwrap();
        assert_eq!(r.status, 200, "part {p}: {r:?}");
        let body = ok(&r);
        if body["complete"] == true {
            urls.push(completed_url(&srv, body));
            assert_eq!(missing_field(body), Vec::<[usize; 2]>::new());
        } else {
            assert!(
                !missing_field(body).is_empty(),
                "incomplete yet nothing missing: {body}"
            );
        }
    }
    assert!(
        !urls.is_empty(),
        "the part that completed the upload must say so"
    );
    assert!(
        urls.windows(2).all(|w| w[0] == w[1]),
        "one upload, one URL: {urls:?}"
    );
    assert_eq!(srv.offset_status(id).await, data.len() as u64);
    assert_served(&srv, &urls[0], &data).await;
    assert_eq!(
        srv.metric("ferry_uploads_started_total{dialect=\"offset\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_range_is_accepted_and_held_bytes_are_not_rewritten() {
    let srv = TestServer::start().await;
    let data = test_bytes(600_000, 44);
    let id = "overlap-600000".to_owned();
    let url = srv.url("/api/upload");
    let r = put_range(
        srv.client.clone(),
        url.clone(),
        id.clone(),
        &data,
        0,
        199_999,
    )
    .await;
    assert_eq!(ok(&r)["offset"], 200_000);

    // A retry that overlaps what is held: the held part carries different bytes (a buggy or
    // malicious client); only the new part may be stored.
    let mut resend = data.clone();
    resend[100_000..200_000].iter_mut().for_each(|b| *b = !*b);
    let r = put_range(
        srv.client.clone(),
        url.clone(),
        id.clone(),
        &resend,
        100_000,
        299_999,
    )
    .await;
    let body = ok(&r);
    assert_eq!(body["offset"], 300_000);
    assert_eq!(missing_field(body), vec![[300_000, 599_999]]);

    // The exact same range again: accepted, nothing changes.
    let r = put_range(
        srv.client.clone(),
        url.clone(),
        id.clone(),
        &data,
        0,
        99_999,
    )
    .await;
    assert_eq!(ok(&r)["offset"], 300_000);
    assert_eq!(srv.offset_status(&id).await, 300_000);

    // The rest by append, mixing the two forms on one upload.
    let r = append(&srv, &id, 300_000, None, &data[300_000..]).await;
    let url = completed_url(&srv, ok(&r));
    assert_served(&srv, &url, &data).await;
}

// ---------------------------------------------------------------------------
// POST /upload (alias)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_alias_accepts_both_forms_on_the_same_upload() {
    let srv = TestServer::start().await;
    let data = test_bytes(700_000, 45);
    let id = "alias-700000".to_owned();
    let r = post_raw(
        srv.client.clone(),
        srv.url("/upload"),
        vec![
            ("x-file-id", id.clone()),
            ("x-start-byte", "0".into()),
            ("x-file-size", data.len().to_string()),
        ],
        data[..300_000].to_vec(),
    )
    .await;
    assert_eq!(ok(&r)["offset"], 300_000);
    assert_eq!(srv.offset_status(&id).await, 300_000);
    let r = put_range(
        srv.client.clone(),
        srv.url("/upload"),
        id.clone(),
        &data,
        500_000,
        699_999,
    )
    .await;
    assert_eq!(missing_field(ok(&r)), vec![[300_000, 499_999]]);
    let r = put_range(
        srv.client.clone(),
        srv.url("/api/upload"),
        id.clone(),
        &data,
        300_000,
        499_999,
    )
    .await;
    let url = completed_url(&srv, ok(&r));
    assert_served(&srv, &url, &data).await;
}

// ---------------------------------------------------------------------------
// A body cut off mid-way
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_cut_off_midway_keeps_what_arrived_and_resumes_from_there() {
    let srv = TestServer::start().await;
    let n = 2 << 20;
    let data = test_bytes(n, 46);
    let id = "cut.bin-2097152-1700000000000";

    // Announce the whole file, send half of it, and drop the connection.
    let addr = srv.base.strip_prefix("http://").unwrap().to_owned();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/upload HTTP/1.1\r\nHost: {addr}\r\nX-File-Id: {id}\r\nX-Start-Byte: 0\r\n\
         X-File-Size: {n}\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&data[..n / 2]).await.unwrap();
    sock.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(sock);

    // The server keeps what reached it durably; wait for it to notice the cut.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let held = loop {
        let held = srv.offset_status(id).await;
        if held > 0 {
            break held;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing of the cut body was kept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        (1..=(n / 2) as u64).contains(&held),
        "held {held} bytes of the {} sent",
        n / 2
    );
    // The count is settled: asking again gives the same answer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(srv.offset_status(id).await, held);

    // Resuming exactly there completes the file with the source's bytes.
    let r = append(&srv, id, held, None, &data[held as usize..]).await;
    let url = completed_url(&srv, ok(&r));
    assert_served(&srv, &url, &data).await;
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_body_without_file_id_is_400_unknown_upload_form() {
    let srv = TestServer::start().await;
    let data = seeded(&srv).await;
    for path in ["/api/upload", "/upload"] {
        let r = post_raw(
            srv.client.clone(),
            srv.url(path),
            vec![
                ("x-start-byte", SEED_HELD.to_string()),
                ("x-file-size", SEED_TOTAL.to_string()),
            ],
            data[SEED_HELD..].to_vec(),
        )
        .await;
        assert_error(&r, 400, "unknown_upload_form");
    }
    assert_unchanged_then_complete(&srv, &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_start_byte_is_400_invalid_number() {
    let srv = TestServer::start().await;
    let data = seeded(&srv).await;
    for bad in [
        "-1",
        "abc",
        "99999999999999999999",
        "9223372036854775808",
        "+40000",
        "4e4",
        "40000.0",
        "0x9c40",
        "",
    ] {
        let r = post_raw(
            srv.client.clone(),
            srv.url("/api/upload"),
            vec![("x-file-id", SEED_ID.into()), ("x-start-byte", bad.into())],
            data[SEED_HELD..SEED_HELD + 1000].to_vec(),
        )
        .await;
        assert_error(&r, 400, "invalid_number");
    }
    // The declared size is a number too.
    let r = post_raw(
        srv.client.clone(),
        srv.url("/api/upload"),
        vec![
            ("x-file-id", SEED_ID.into()),
            ("x-start-byte", SEED_HELD.to_string()),
            ("x-file-size", "-100000".into()),
        ],
        data[SEED_HELD..SEED_HELD + 1000].to_vec(),
    )
    .await;
    assert_error(&r, 400, "invalid_number");
    assert_unchanged_then_complete(&srv, &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_content_range_is_400() {
    let srv = TestServer::start().await;
    let data = seeded(&srv).await;
    let body = data[SEED_HELD..SEED_HELD + 10_000].to_vec();
    for bad in [
        "bytes 40000-49999",
        "bytes=40000-49999/100000",
        "items 40000-49999/100000",
        "bytes 49999-40000/100000",
        "bytes a-b/100000",
        "bytes 40000-/100000",
        "bytes -1-9998/100000",
        "bytes 40000-49999/abc",
        "40000-49999/100000",
    ] {
        let r = post_raw(
            srv.client.clone(),
            srv.url("/api/upload"),
            vec![("x-file-id", SEED_ID.into()), ("content-range", bad.into())],
            body.clone(),
        )
        .await;
        assert_error(&r, 400, "invalid_content_range");
    }
    assert_unchanged_then_complete(&srv, &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_range_past_its_own_total_is_400() {
    let srv = TestServer::start().await;
    let data = seeded(&srv).await;
    for bad in ["bytes 40000-49999/45000", "bytes 40000-49999/49999"] {
        let r = post_raw(
            srv.client.clone(),
            srv.url("/api/upload"),
            vec![("x-file-id", SEED_ID.into()), ("content-range", bad.into())],
            data[SEED_HELD..50_000].to_vec(),
        )
        .await;
        assert_error(&r, 400, "range_past_total");
    }
    assert_unchanged_then_complete(&srv, &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_disagreeing_with_the_declared_size_is_409() {
    let srv = TestServer::start().await;
    let data = seeded(&srv).await;
    // Content-Range's total against the X-File-Size of the first request…
    let r = post_raw(
        srv.client.clone(),
        srv.url("/api/upload"),
        vec![
            ("x-file-id", SEED_ID.into()),
            (
                "content-range",
                format!("bytes 40000-49999/{}", SEED_TOTAL * 2),
            ),
        ],
        data[SEED_HELD..50_000].to_vec(),
    )
    .await;
    assert_error(&r, 409, "length_mismatch");
    // …and a later X-File-Size against it.
    let r = post_raw(
        srv.client.clone(),
        srv.url("/api/upload"),
        vec![
            ("x-file-id", SEED_ID.into()),
            ("x-start-byte", SEED_HELD.to_string()),
            ("x-file-size", (SEED_TOTAL + 1).to_string()),
        ],
        data[SEED_HELD..50_000].to_vec(),
    )
    .await;
    assert_error(&r, 409, "length_mismatch");
    assert_unchanged_then_complete(&srv, &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_longer_than_the_total_declared_in_the_same_request_is_413() {
    let srv = TestServer::start().await;
    let data = seeded(&srv).await;
    let mut long = data[SEED_HELD..].to_vec();
    long.extend_from_slice(&[7u8; 10_000]);
    let r = append(&srv, SEED_ID, SEED_HELD as u64, Some(SEED_TOTAL), &long).await;
    assert_error(&r, 413, "past_declared_length");
    assert_unchanged_then_complete(&srv, &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_longer_than_a_total_declared_earlier_is_413_and_stores_nothing() {
    let srv = TestServer::start().await;
    let data = seeded(&srv).await;
    // The real rest of the file plus extra bytes: storing the fitting part would complete the
    // upload behind a 413.
    let mut long = data[SEED_HELD..].to_vec();
    long.extend_from_slice(&[7u8; 10_000]);
    let r = append(&srv, SEED_ID, SEED_HELD as u64, None, &long).await;
    assert_error(&r, 413, "past_declared_length");
    assert_unchanged_then_complete(&srv, &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_start_byte_nor_content_range_is_400() {
    let srv = TestServer::start().await;
    let data = seeded(&srv).await;
    let r = post_raw(
        srv.client.clone(),
        srv.url("/api/upload"),
        vec![
            ("x-file-id", SEED_ID.into()),
            ("x-file-size", SEED_TOTAL.to_string()),
        ],
        data[SEED_HELD..].to_vec(),
    )
    .await;
    assert_error(&r, 400, "offset_required");
    assert_unchanged_then_complete(&srv, &data).await;
}
