//! tus 1.0.0 at `/files/` end to end (SPEC §2.3), against a real server on `127.0.0.1:0`.
//!
//! One section per verb (OPTIONS, POST, HEAD, PATCH, DELETE) and per extension (creation-
//! with-upload, creation-defer-length, checksum, concatenation, expiration), then the
//! protocol version, X-HTTP-Method-Override, CORS, downloads and metrics, authentication.
//! Every status row of the tus 1.0.0 text has a test here; error tests also check that the
//! refused request changed nothing (SPEC §6).

mod common;

use common::{TestServer, test_bytes};
use ferry_core::hash::{HashAlg, Hasher};
use ferry_core::tus::{Checksum, Metadata};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const OCTETS: &str = "application/offset+octet-stream";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// One answer: status, headers and body text.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn number(&self, name: &str) -> Option<u64> {
        self.header(name).map(|v| v.parse().unwrap())
    }

    /// The stable `error` code of a JSON error body.
    fn error(&self) -> String {
        let j: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("error body is not JSON: {:?}", self.body));
        assert!(
            j["message"].as_str().is_some_and(|m| !m.is_empty()),
            "an error says what to do: {j}"
        );
        j["error"].as_str().unwrap_or_default().to_owned()
    }
}

/// Sends a tus request (with `Tus-Resumable: 1.0.0`) plus `headers` and `body`.
async fn tus(
    srv: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let mut h = vec![("tus-resumable", "1.0.0")];
    h.extend_from_slice(headers);
    send(srv, method, path, &h, body).await
}

/// Sends a request exactly as given.
async fn send(
    srv: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let url = if path.starts_with("http") {
        path.to_owned()
    } else {
        srv.url(path)
    };
    let mut req = srv.client.request(method, url).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

/// `POST /files/` with `Upload-Length: len`; returns the upload's path.
async fn create(srv: &TestServer, len: usize, extra: &[(&str, &str)]) -> String {
    let len = len.to_string();
    let mut h = vec![("upload-length", len.as_str())];
    h.extend_from_slice(extra);
    let r = tus(srv, Method::POST, "/files/", &h, vec![]).await;
    assert_eq!(r.status, 201, "{r:?}");
    path_of(srv, r.header("location").expect("Location"))
}

/// The path of an absolute upload URL of this server.
fn path_of(srv: &TestServer, url: &str) -> String {
    assert!(
        url.starts_with(&srv.url("/files/")),
        "Location {url} is an absolute URL under /files/"
    );
    url[srv.base.len()..].to_owned()
}

async fn patch(srv: &TestServer, path: &str, offset: u64, body: &[u8]) -> Reply {
    let offset = offset.to_string();
    tus(
        srv,
        Method::PATCH,
        path,
        &[("content-type", OCTETS), ("upload-offset", &offset)],
        body.to_vec(),
    )
    .await
}

async fn head(srv: &TestServer, path: &str) -> Reply {
    tus(srv, Method::HEAD, path, &[], vec![]).await
}

async fn offset_of(srv: &TestServer, path: &str) -> u64 {
    let r = head(srv, path).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.number("upload-offset").expect("Upload-Offset")
}

/// Uploads `data` with tus in one POST and one PATCH; returns the upload's path.
async fn tus_upload(srv: &TestServer, data: &[u8], extra: &[(&str, &str)]) -> String {
    let path = create(srv, data.len(), extra).await;
    let r = patch(srv, &path, 0, data).await;
    assert_eq!(r.status, 204, "{r:?}");
    path
}

fn checksum(alg: HashAlg, data: &[u8]) -> String {
    let mut h = Hasher::new(alg);
    h.update(data);
    Checksum {
        alg,
        digest: h.finalize(),
    }
    .to_string()
}

fn assert_tus(r: &Reply) {
    assert_eq!(
        r.header("tus-resumable"),
        Some("1.0.0"),
        "every tus response carries Tus-Resumable: {r:?}"
    );
}

/// Writes a request head (and no body) on a raw socket.
async fn write_head(s: &mut TcpStream, method: &str, path: &str, headers: &[(&str, String)]) {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
}

async fn poll<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// OPTIONS (Core Protocol)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_answers_204_with_version_extensions_max_size_and_checksum_algorithms() {
    let srv = TestServer::start_with(|a| a.max_upload_size = 5_000_000).await;
    let r = send(&srv, Method::OPTIONS, "/files/", &[], vec![]).await;
    assert_eq!(r.status, 204);
    assert_tus(&r);
    assert_eq!(r.header("tus-version"), Some("1.0.0"));
    assert_eq!(r.number("tus-max-size"), Some(5_000_000));
    assert_eq!(r.header("tus-checksum-algorithm"), Some("md5,sha1,sha256"));
    let ext: Vec<&str> = r.header("tus-extension").unwrap().split(',').collect();
    for e in [
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "checksum",
        "termination",
        // The filesystem store can copy complete uploads into a final one.
        "concatenation",
        "concatenation-unfinished",
    ] {
        assert!(ext.contains(&e), "{e} in {ext:?}");
    }
    assert!(
        !ext.contains(&"expiration"),
        "the test server keeps incomplete uploads (--expire-incomplete 0): {ext:?}"
    );
    // The same answer at an upload's URL and without the trailing slash.
    for path in ["/files", "/files/0123456789abcdef0123456789abcdef"] {
        let r = send(&srv, Method::OPTIONS, path, &[], vec![]).await;
        assert_eq!(r.status, 204, "{path}");
        assert_eq!(r.header("tus-version"), Some("1.0.0"), "{path}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_advertises_expiration_only_when_uploads_expire() {
    let srv = TestServer::start_with(|a| a.expire_incomplete = Duration::from_secs(3600)).await;
    let r = send(&srv, Method::OPTIONS, "/files/", &[], vec![]).await;
    let ext: Vec<&str> = r.header("tus-extension").unwrap().split(',').collect();
    assert!(ext.contains(&"expiration"), "{ext:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_ignores_the_tus_resumable_header() {
    let srv = TestServer::start().await;
    // "The Server MUST ignore the header" on OPTIONS, whatever version it names.
    let r = send(
        &srv,
        Method::OPTIONS,
        "/files/",
        &[("tus-resumable", "0.2.2")],
        vec![],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("tus-version"), Some("1.0.0"));
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// Tus-Resumable (Core Protocol): 412
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_version_is_412_with_tus_version_and_is_not_processed() {
    let srv = TestServer::start().await;
    let path = create(&srv, 10, &[]).await;
    let old = [("tus-resumable", "0.2.2")];
    let r = send(
        &srv,
        Method::POST,
        "/files/",
        &[old[0], ("upload-length", "10")],
        vec![],
    )
    .await;
    assert_eq!(r.status, 412, "{r:?}");
    assert_eq!(r.header("tus-version"), Some("1.0.0"));
    assert_tus(&r);
    assert_eq!(r.error(), "unsupported_version");
    assert!(r.header("location").is_none());

    let r = send(
        &srv,
        Method::PATCH,
        &path,
        &[old[0], ("content-type", OCTETS), ("upload-offset", "0")],
        b"0123456789".to_vec(),
    )
    .await;
    assert_eq!(r.status, 412);
    assert_eq!(
        offset_of(&srv, &path).await,
        0,
        "the PATCH was not processed"
    );
    for method in [Method::HEAD, Method::DELETE] {
        let r = send(&srv, method.clone(), &path, &old, vec![]).await;
        assert_eq!(r.status, 412, "{method}");
        assert_eq!(r.header("tus-version"), Some("1.0.0"), "{method}");
    }
    assert_eq!(
        offset_of(&srv, &path).await,
        0,
        "the DELETE was not processed"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_without_tus_resumable_is_412() {
    let srv = TestServer::start().await;
    let r = send(
        &srv,
        Method::POST,
        "/files/",
        &[("upload-length", "10")],
        vec![],
    )
    .await;
    assert_eq!(r.status, 412, "{r:?}");
    assert_eq!(r.header("tus-version"), Some("1.0.0"));
    assert!(r.header("location").is_none());
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// POST (Creation)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_creates_an_upload_with_201_and_an_absolute_location() {
    let srv = TestServer::start().await;
    for endpoint in ["/files/", "/files"] {
        let r = tus(
            &srv,
            Method::POST,
            endpoint,
            &[("upload-length", "100")],
            vec![],
        )
        .await;
        assert_eq!(r.status, 201, "{endpoint}: {r:?}");
        assert_tus(&r);
        let path = path_of(&srv, r.header("location").unwrap());
        let h = head(&srv, &path).await;
        assert_eq!(h.number("upload-offset"), Some(0));
        assert_eq!(h.number("upload-length"), Some(100));
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_location_follows_public_url() {
    let srv = TestServer::start_with(|a| a.public_url = Some("https://up.example/".into())).await;
    let r = tus(
        &srv,
        Method::POST,
        "/files/",
        &[("upload-length", "1")],
        vec![],
    )
    .await;
    assert_eq!(r.status, 201);
    assert!(
        r.header("location")
            .unwrap()
            .starts_with("https://up.example/files/"),
        "{r:?}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_without_a_valid_length_is_400() {
    let srv = TestServer::start().await;
    for (headers, code) in [
        (vec![], "length_required"),
        (
            vec![("upload-length", "10"), ("upload-defer-length", "1")],
            "length_conflict",
        ),
        (vec![("upload-defer-length", "2")], "invalid_defer_length"),
        (vec![("upload-length", "-1")], "invalid_number"),
        (vec![("upload-length", "ten")], "invalid_number"),
        (
            vec![("upload-length", "99999999999999999999")],
            "invalid_number",
        ),
    ] {
        let r = tus(&srv, Method::POST, "/files/", &headers, vec![]).await;
        assert_eq!(r.status, 400, "{headers:?}: {r:?}");
        assert_eq!(r.error(), code, "{headers:?}");
        assert_tus(&r);
        assert!(r.header("location").is_none());
    }
    assert_eq!(
        srv.metric("ferry_uploads_started_total{dialect=\"tus\"}")
            .await,
        0.0,
        "no refused creation created anything"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_over_tus_max_size_is_413() {
    let srv = TestServer::start_with(|a| a.max_upload_size = 1000).await;
    let r = tus(
        &srv,
        Method::POST,
        "/files/",
        &[("upload-length", "1001")],
        vec![],
    )
    .await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.error(), "too_large");
    assert_tus(&r);
    create(&srv, 1000, &[]).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_round_trips_through_head_and_names_the_download() {
    let srv = TestServer::start().await;
    let mut meta = Metadata::default();
    meta.insert("filename", "报告 2026.pdf").unwrap();
    meta.insert("filetype", "application/pdf").unwrap();
    meta.insert("is_confidential", "").unwrap();
    // tus-js-client's spelling of an empty value: the key and a space.
    let sent = format!("{meta},relativePath ");
    let data = test_bytes(3_000, 1);
    let path = tus_upload(&srv, &data, &[("upload-metadata", &sent)]).await;
    let h = head(&srv, &path).await;
    assert_eq!(h.header("upload-metadata"), Some(sent.trim_end()));

    let r = srv.client.get(srv.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/pdf");
    let cd = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cd.contains("filename*=UTF-8''%E6%8A%A5%E5%91%8A%202026.pdf"),
        "{cd}"
    );
    assert!(r.bytes().await.unwrap() == data);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_that_could_smuggle_headers_is_not_served_back() {
    let srv = TestServer::start().await;
    let mut meta = Metadata::default();
    meta.insert("filename", "../../etc/passwd").unwrap();
    meta.insert("filetype", "text/html\r\nSet-Cookie: a=b")
        .unwrap();
    let data = test_bytes(10, 2);
    let path = tus_upload(&srv, &data, &[("upload-metadata", &meta.to_string())]).await;
    let r = srv.client.get(srv.url(&path)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_none());
    assert_ne!(r.headers()["content-type"], "text/html");
    let cd = r.headers()["content-disposition"].to_str().unwrap();
    assert!(cd.contains("passwd") && !cd.contains(".."), "{cd}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_with_malformed_metadata_is_400() {
    let srv = TestServer::start().await;
    for bad in ["name not*base64", "a YQ==,a YQ==", "a YQ==,,b"] {
        let r = tus(
            &srv,
            Method::POST,
            "/files/",
            &[("upload-length", "1"), ("upload-metadata", bad)],
            vec![],
        )
        .await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(r.error(), "invalid_metadata", "{bad}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_length_upload_is_complete_at_once() {
    let srv = TestServer::start().await;
    let path = create(&srv, 0, &[]).await;
    let h = head(&srv, &path).await;
    assert_eq!(h.number("upload-offset"), Some(0));
    assert_eq!(h.number("upload-length"), Some(0));
    assert_eq!(srv.get_bytes(&srv.url(&path)).await, (200, vec![]));
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// Creation With Upload
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_with_upload_stores_the_body_and_returns_its_offset() {
    let srv = TestServer::start().await;
    let data = test_bytes(200_000, 3);
    let r = tus(
        &srv,
        Method::POST,
        "/files/",
        &[("upload-length", "200000"), ("content-type", OCTETS)],
        data[..70_000].to_vec(),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.number("upload-offset"), Some(70_000));
    let path = path_of(&srv, r.header("location").unwrap());
    assert_eq!(offset_of(&srv, &path).await, 70_000);
    let r = patch(&srv, &path, 70_000, &data[70_000..]).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.number("upload-offset"), Some(200_000));
    assert!(srv.get_bytes(&srv.url(&path)).await == (200, data));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_with_the_whole_body_finishes_the_upload_with_a_checksum() {
    let srv = TestServer::start().await;
    let data = test_bytes(5_000, 4);
    let sum = checksum(HashAlg::Sha1, &data);
    let r = tus(
        &srv,
        Method::POST,
        "/files/",
        &[
            ("upload-length", "5000"),
            ("content-type", OCTETS),
            ("upload-checksum", &sum),
        ],
        data.clone(),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.number("upload-offset"), Some(5_000));
    let path = path_of(&srv, r.header("location").unwrap());
    assert!(srv.get_bytes(&srv.url(&path)).await == (200, data));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_with_a_body_longer_than_the_length_is_413_and_creates_nothing() {
    let srv = TestServer::start().await;
    let r = tus(
        &srv,
        Method::POST,
        "/files/",
        &[("upload-length", "10"), ("content-type", OCTETS)],
        vec![7; 11],
    )
    .await;
    assert_eq!(r.status, 413, "{r:?}");
    assert!(r.header("location").is_none());
    assert_eq!(
        srv.metric("ferry_uploads_started_total{dialect=\"tus\"}")
            .await,
        0.0
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_with_upload_of_an_empty_file_is_201_and_complete() {
    let srv = TestServer::start().await;
    let r = tus(
        &srv,
        Method::POST,
        "/files/",
        &[("upload-length", "0"), ("content-type", OCTETS)],
        vec![],
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.number("upload-offset"), Some(0));
    let path = path_of(&srv, r.header("location").unwrap());
    assert_eq!(srv.get_bytes(&srv.url(&path)).await, (200, vec![]));
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// creation-defer-length
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_length_is_reported_by_head_and_set_by_a_later_patch() {
    let srv = TestServer::start().await;
    let data = test_bytes(30_000, 5);
    let r = tus(
        &srv,
        Method::POST,
        "/files/",
        &[("upload-defer-length", "1")],
        vec![],
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let path = path_of(&srv, r.header("location").unwrap());
    let h = head(&srv, &path).await;
    assert_eq!(h.header("upload-defer-length"), Some("1"));
    assert!(h.header("upload-length").is_none());

    let r = patch(&srv, &path, 0, &data[..10_000]).await;
    assert_eq!(r.status, 204);
    assert_eq!(
        head(&srv, &path).await.header("upload-defer-length"),
        Some("1")
    );

    // The length arrives with the next PATCH, together with the rest of the bytes.
    let r = tus(
        &srv,
        Method::PATCH,
        &path,
        &[
            ("content-type", OCTETS),
            ("upload-offset", "10000"),
            ("upload-length", "30000"),
        ],
        data[10_000..].to_vec(),
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.number("upload-offset"), Some(30_000));
    let h = head(&srv, &path).await;
    assert_eq!(h.number("upload-length"), Some(30_000));
    assert!(h.header("upload-defer-length").is_none());
    assert!(srv.get_bytes(&srv.url(&path)).await == (200, data));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_cannot_change() {
    let srv = TestServer::start().await;
    let path = create(&srv, 100, &[]).await;
    let r = tus(
        &srv,
        Method::PATCH,
        &path,
        &[
            ("content-type", OCTETS),
            ("upload-offset", "0"),
            ("upload-length", "50"),
        ],
        vec![1; 10],
    )
    .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.error(), "length_mismatch");
    let h = head(&srv, &path).await;
    assert_eq!(h.number("upload-length"), Some(100));
    assert_eq!(h.number("upload-offset"), Some(0));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_length_is_not_set_by_a_patch_that_gets_409() {
    let srv = TestServer::start().await;
    let r = tus(
        &srv,
        Method::POST,
        "/files/",
        &[("upload-defer-length", "1")],
        vec![],
    )
    .await;
    let path = path_of(&srv, r.header("location").unwrap());
    let r = tus(
        &srv,
        Method::PATCH,
        &path,
        &[
            ("content-type", OCTETS),
            ("upload-offset", "5"),
            ("upload-length", "10"),
        ],
        vec![1; 5],
    )
    .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(
        head(&srv, &path).await.header("upload-defer-length"),
        Some("1"),
        "the refused PATCH did not modify the upload"
    );
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// HEAD (Core Protocol)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_reports_offset_and_length_and_forbids_caching() {
    let srv = TestServer::start().await;
    let data = test_bytes(1_000, 6);
    let path = create(&srv, 1_000, &[]).await;
    let h = head(&srv, &path).await;
    assert_eq!(h.status, 200);
    assert_tus(&h);
    assert_eq!(h.header("cache-control"), Some("no-store"));
    assert_eq!(h.number("upload-offset"), Some(0), "even when it is 0");
    assert_eq!(h.number("upload-length"), Some(1_000));
    assert!(h.header("upload-expires").is_none(), "expiry is off");
    assert!(h.header("upload-concat").is_none());
    assert!(h.body.is_empty());

    patch(&srv, &path, 0, &data[..400]).await;
    assert_eq!(offset_of(&srv, &path).await, 400);
    patch(&srv, &path, 400, &data[400..]).await;
    let h = head(&srv, &path).await;
    assert_eq!(h.number("upload-offset"), Some(1_000), "also when complete");
    assert_eq!(h.number("upload-length"), Some(1_000));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_of_an_unknown_upload_is_404_without_an_offset() {
    let srv = TestServer::start().await;
    for path in [
        "/files/0123456789abcdef0123456789abcdef",
        "/files/not-an-id",
    ] {
        let h = head(&srv, path).await;
        assert_eq!(h.status, 404, "{path}");
        assert_tus(&h);
        assert!(h.header("upload-offset").is_none(), "{path}");
    }
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// PATCH (Core Protocol)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_appends_and_answers_204_with_the_new_offset() {
    let srv = TestServer::start().await;
    let data = test_bytes(3 * 1024 * 1024 + 11, 7);
    let path = create(&srv, data.len(), &[]).await;
    let mut offset = 0;
    for piece in data.chunks(1024 * 1024) {
        let r = patch(&srv, &path, offset as u64, piece).await;
        assert_eq!(r.status, 204, "{r:?}");
        assert_tus(&r);
        offset += piece.len();
        assert_eq!(r.number("upload-offset"), Some(offset as u64));
        assert!(r.body.is_empty());
    }
    assert!(srv.get_bytes(&srv.url(&path)).await == (200, data));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_at_a_wrong_offset_is_409_and_changes_nothing() {
    let srv = TestServer::start().await;
    let data = test_bytes(100, 8);
    let path = create(&srv, 100, &[]).await;
    patch(&srv, &path, 0, &data[..40]).await;
    for wrong in [0, 39, 41, 100] {
        let r = patch(&srv, &path, wrong, &data[wrong as usize..]).await;
        assert_eq!(r.status, 409, "at {wrong}: {r:?}");
        assert_eq!(r.error(), "offset_mismatch");
        assert_tus(&r);
    }
    assert_eq!(offset_of(&srv, &path).await, 40);
    assert_eq!(patch(&srv, &path, 40, &data[40..]).await.status, 204);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_without_the_offset_octet_stream_type_is_415() {
    let srv = TestServer::start().await;
    let path = create(&srv, 10, &[]).await;
    for ct in [Some("application/octet-stream"), Some("text/plain"), None] {
        let mut h = vec![("upload-offset", "0")];
        if let Some(ct) = ct {
            h.push(("content-type", ct));
        }
        let r = tus(&srv, Method::PATCH, &path, &h, vec![1; 10]).await;
        assert_eq!(r.status, 415, "{ct:?}: {r:?}");
        assert_eq!(r.error(), "unsupported_media_type");
    }
    assert_eq!(offset_of(&srv, &path).await, 0);
    // Media type parameters and case do not matter.
    let r = tus(
        &srv,
        Method::PATCH,
        &path,
        &[
            ("upload-offset", "0"),
            (
                "content-type",
                "Application/Offset+Octet-Stream; charset=binary",
            ),
        ],
        vec![1; 10],
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_without_a_valid_upload_offset_is_400() {
    let srv = TestServer::start().await;
    let path = create(&srv, 10, &[]).await;
    for offset in [None, Some("-1"), Some("0x0"), Some("")] {
        let mut h = vec![("content-type", OCTETS)];
        if let Some(o) = offset {
            h.push(("upload-offset", o));
        }
        let r = tus(&srv, Method::PATCH, &path, &h, vec![1; 10]).await;
        assert_eq!(r.status, 400, "{offset:?}: {r:?}");
    }
    assert_eq!(offset_of(&srv, &path).await, 0);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_past_the_length_is_413_and_stores_nothing() {
    let srv = TestServer::start().await;
    let path = create(&srv, 100, &[]).await;
    patch(&srv, &path, 0, &[1; 60]).await;
    let r = patch(&srv, &path, 60, &[2; 41]).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.error(), "past_declared_length");
    assert_eq!(offset_of(&srv, &path).await, 60);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_to_an_unknown_upload_is_404() {
    let srv = TestServer::start().await;
    let r = patch(&srv, "/files/0123456789abcdef0123456789abcdef", 0, b"x").await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.error(), "not_found");
    assert_tus(&r);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeating_the_empty_last_patch_of_a_finished_upload_is_answered_as_before() {
    let srv = TestServer::start().await;
    let data = test_bytes(64, 9);
    let path = tus_upload(&srv, &data, &[]).await;
    let r = patch(&srv, &path, 64, &[]).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.number("upload-offset"), Some(64));
    // A stale offset is still a conflict: the client asks HEAD and sees it is done.
    assert_eq!(patch(&srv, &path, 0, &data).await.status, 409);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_cut_off_mid_body_keeps_what_arrived() {
    let srv = TestServer::start().await;
    let data = test_bytes(100_000, 10);
    let path = create(&srv, data.len(), &[]).await;
    let addr = srv.base.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    write_head(
        &mut s,
        "PATCH",
        &path,
        &[
            ("Tus-Resumable", "1.0.0".into()),
            ("Content-Type", OCTETS.into()),
            ("Upload-Offset", "0".into()),
            ("Content-Length", data.len().to_string()),
        ],
    )
    .await;
    s.write_all(&data[..30_000]).await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
    // tus "Core Protocol": "The Server SHOULD always attempt to store as much of the received
    // data as possible."
    poll(
        "the cut-off PATCH to be committed",
        Duration::from_secs(10),
        || async { offset_of(&srv, &path).await == 30_000 },
    )
    .await;
    let r = patch(&srv, &path, 30_000, &data[30_000..]).await;
    assert_eq!(r.status, 204);
    assert!(srv.get_bytes(&srv.url(&path)).await == (200, data));
    srv.stop().await;
}

/// Opens a PATCH whose body stalls after `sent` bytes: a client that lost its connection
/// without the server noticing.
async fn stale_patch(srv: &TestServer, path: &str, data: &[u8], sent: usize) -> TcpStream {
    let addr = srv.base.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    write_head(
        &mut s,
        "PATCH",
        path,
        &[
            ("Tus-Resumable", "1.0.0".into()),
            ("Content-Type", OCTETS.into()),
            ("Upload-Offset", "0".into()),
            ("Content-Length", data.len().to_string()),
        ],
    )
    .await;
    s.write_all(&data[..sent]).await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_patch_preempts_a_stale_one_which_keeps_what_arrived() {
    let srv = TestServer::start().await;
    let data = test_bytes(1_000, 11);
    let path = create(&srv, data.len(), &[]).await;
    let mut stale = stale_patch(&srv, &path, &data, 500).await;

    // tus-js-client re-sends after a network error. The stale request stops and keeps its
    // 500 bytes at once, so the new PATCH at the old offset is a 409 (not a wait for the dead
    // connection to time out), and HEAD gives the offset to continue from.
    let started = Instant::now();
    let r = patch(&srv, &path, 0, &data).await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_tus(&r);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the new request did not wait for the stale one: {:?}",
        started.elapsed()
    );
    assert_eq!(offset_of(&srv, &path).await, 500);
    // The stale request, if its client still listens, hears why it stopped: 409 with the
    // held offset (not a 400 as for a broken body).
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("}") {
        let n = stale.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 409"), "{answer}");
    assert!(answer.contains("x-upload-offset: 500"), "{answer}");
    assert!(answer.contains("upload_superseded"), "{answer}");
    let r = patch(&srv, &path, 500, &data[500..]).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert!(srv.get_bytes(&srv.url(&path)).await == (200, data));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_reports_the_durable_offset_and_never_stops_a_patch_in_flight() {
    let srv = TestServer::start().await;
    let data = test_bytes(100_000, 12);
    let path = create(&srv, data.len(), &[]).await;
    let mut s = stale_patch(&srv, &path, &data, 40_000).await;
    // Nothing of the streaming PATCH is acknowledged yet, so nothing is reported.
    assert_eq!(offset_of(&srv, &path).await, 0);
    // The PATCH goes on and completes: HEAD is safe.
    s.write_all(&data[40_000..]).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed early");
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 204"), "{answer}");
    assert!(srv.get_bytes(&srv.url(&path)).await == (200, data));
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// X-HTTP-Method-Override (Core Protocol)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_override_turns_a_post_into_patch_head_and_delete() {
    let srv = TestServer::start().await;
    let data = test_bytes(50, 12);
    let path = create(&srv, 50, &[]).await;
    let r = tus(
        &srv,
        Method::POST,
        &path,
        &[
            ("x-http-method-override", "PATCH"),
            ("content-type", OCTETS),
            ("upload-offset", "0"),
        ],
        data[..20].to_vec(),
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.number("upload-offset"), Some(20));

    let r = tus(
        &srv,
        Method::POST,
        &path,
        &[("x-http-method-override", "HEAD")],
        vec![],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.number("upload-offset"), Some(20));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    let r = tus(
        &srv,
        Method::POST,
        &path,
        &[("x-http-method-override", "DELETE")],
        vec![],
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(head(&srv, &path).await.status, 404);

    // Without an override, POST to an upload is not a tus request.
    let path = create(&srv, 50, &[]).await;
    let r = tus(&srv, Method::POST, &path, &[], vec![]).await;
    assert_eq!(r.status, 405, "{r:?}");
    assert!(r.header("allow").is_some());
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// Checksum
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_with_matching_md5_sha1_and_sha256_checksums_are_stored() {
    let srv = TestServer::start().await;
    let data = test_bytes(300_000, 13);
    let path = create(&srv, data.len(), &[]).await;
    let algs = [HashAlg::Md5, HashAlg::Sha1, HashAlg::Sha256];
    for (i, alg) in algs.into_iter().enumerate() {
        let piece = &data[i * 100_000..(i + 1) * 100_000];
        let sum = checksum(alg, piece);
        let offset = (i * 100_000).to_string();
        let r = tus(
            &srv,
            Method::PATCH,
            &path,
            &[
                ("content-type", OCTETS),
                ("upload-offset", &offset),
                ("upload-checksum", &sum),
            ],
            piece.to_vec(),
        )
        .await;
        assert_eq!(r.status, 204, "{alg}: {r:?}");
        assert_eq!(r.number("upload-offset"), Some((i as u64 + 1) * 100_000));
    }
    assert!(srv.get_bytes(&srv.url(&path)).await == (200, data));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_mismatch_is_460_and_stores_nothing_of_the_request() {
    let srv = TestServer::start().await;
    let data = test_bytes(2_000_000, 14);
    let path = create(&srv, data.len(), &[]).await;
    patch(&srv, &path, 0, &data[..1_000]).await;
    let wrong = checksum(HashAlg::Sha1, b"something else");
    let r = tus(
        &srv,
        Method::PATCH,
        &path,
        &[
            ("content-type", OCTETS),
            ("upload-offset", "1000"),
            ("upload-checksum", &wrong),
        ],
        data[1_000..].to_vec(),
    )
    .await;
    assert_eq!(r.status, 460, "{r:?}");
    assert_eq!(r.error(), "checksum_mismatch");
    assert_tus(&r);
    assert_eq!(
        offset_of(&srv, &path).await,
        1_000,
        "the upload and its offset MUST NOT be updated"
    );
    // The same bytes with the right checksum go through.
    let right = checksum(HashAlg::Sha1, &data[1_000..]);
    let r = tus(
        &srv,
        Method::PATCH,
        &path,
        &[
            ("content-type", OCTETS),
            ("upload-offset", "1000"),
            ("upload-checksum", &right),
        ],
        data[1_000..].to_vec(),
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    assert!(srv.get_bytes(&srv.url(&path)).await == (200, data));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_checksum_algorithm_is_400_and_stores_nothing() {
    let srv = TestServer::start().await;
    let path = create(&srv, 11, &[]).await;
    for (sum, code) in [
        ("crc32 DUoRhQ==", "checksum_algorithm_unsupported"),
        (
            "sha512 Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
            "checksum_algorithm_unsupported",
        ),
        ("sha1", "invalid_checksum"),
        ("sha1 !!!", "invalid_checksum"),
        ("sha256 Kq5sNclPz7QV2+lfQIuc6R7oRu0=", "invalid_checksum"),
    ] {
        let r = tus(
            &srv,
            Method::PATCH,
            &path,
            &[
                ("content-type", OCTETS),
                ("upload-offset", "0"),
                ("upload-checksum", sum),
            ],
            b"hello world".to_vec(),
        )
        .await;
        assert_eq!(r.status, 400, "{sum}: {r:?}");
        assert_eq!(r.error(), code, "{sum}");
    }
    assert_eq!(offset_of(&srv, &path).await, 0);
    // The spec's own example.
    let r = tus(
        &srv,
        Method::PATCH,
        &path,
        &[
            ("content-type", OCTETS),
            ("upload-offset", "0"),
            ("upload-checksum", "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="),
        ],
        b"hello world".to_vec(),
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// DELETE (Termination)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_answers_204_and_the_upload_is_gone() {
    let srv = TestServer::start().await;
    let path = create(&srv, 100, &[]).await;
    patch(&srv, &path, 0, &[1; 10]).await;
    let r = tus(&srv, Method::DELETE, &path, &[], vec![]).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_tus(&r);
    assert_eq!(head(&srv, &path).await.status, 404);
    assert_eq!(patch(&srv, &path, 10, &[1; 10]).await.status, 404);
    let r = tus(&srv, Method::DELETE, &path, &[], vec![]).await;
    assert_eq!(r.status, 404, "a later request to the URL is 404");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_of_a_finished_upload_removes_its_download() {
    let srv = TestServer::start().await;
    let path = tus_upload(&srv, &test_bytes(10, 15), &[]).await;
    assert_eq!(srv.get_bytes(&srv.url(&path)).await.0, 200);
    let r = tus(&srv, Method::DELETE, &path, &[], vec![]).await;
    assert_eq!(r.status, 204);
    assert_eq!(srv.get_bytes(&srv.url(&path)).await.0, 404);
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// Concatenation
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_of_two_partials_downloads_as_their_concatenation() {
    let srv = TestServer::start().await;
    let a = test_bytes(70_000, 16);
    let b = test_bytes(50_001, 17);
    let pa = tus_upload(&srv, &a, &[("upload-concat", "partial")]).await;
    let pb = tus_upload(&srv, &b, &[("upload-concat", "partial")]).await;
    let h = head(&srv, &pa).await;
    assert_eq!(h.header("upload-concat"), Some("partial"));
    assert_eq!(h.number("upload-offset"), Some(70_000));

    // One part as a path, one as an absolute URL: both are allowed.
    let concat = format!("final;{pa} {}", srv.url(&pb));
    let r = tus(
        &srv,
        Method::POST,
        "/files/",
        &[("upload-concat", &concat)],
        vec![],
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let fin = path_of(&srv, r.header("location").unwrap());
    let h = head(&srv, &fin).await;
    assert_eq!(h.header("upload-concat"), Some(concat.as_str()));
    assert_eq!(h.number("upload-length"), Some(120_001));
    assert_eq!(h.number("upload-offset"), Some(120_001));
    let mut whole = a.clone();
    whole.extend_from_slice(&b);
    assert!(srv.get_bytes(&srv.url(&fin)).await == (200, whole));
    // The parts are released once the final is assembled (tus "Concatenation" allows it):
    // the file costs its size once, and its parts' addresses answer like any removed upload.
    assert_eq!(head(&srv, &pa).await.status, 404);
    assert_eq!(head(&srv, &pb).await.status, 404);
    let files = srv.dir.path().join("files");
    for dir in ["partial", "complete"] {
        let n = std::fs::read_dir(files.join(dir)).unwrap().count();
        assert_eq!(n, usize::from(dir == "complete"), "files left in {dir}/");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_concatenation_is_assembled_when_its_parts_complete() {
    let srv = TestServer::start().await;
    let a = test_bytes(40_000, 18);
    let b = test_bytes(25_000, 19);
    let pa = create(&srv, a.len(), &[("upload-concat", "partial")]).await;
    let pb = create(&srv, b.len(), &[("upload-concat", "partial")]).await;
    patch(&srv, &pa, 0, &a[..10_000]).await;

    let r = tus(
        &srv,
        Method::POST,
        "/files/",
        &[("upload-concat", &format!("final;{pa} {pb}"))],
        vec![],
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let fin = path_of(&srv, r.header("location").unwrap());
    let h = head(&srv, &fin).await;
    assert_eq!(h.status, 200);
    assert!(
        h.header("upload-offset").is_none(),
        "no Upload-Offset before the concatenation finished"
    );
    assert_eq!(h.number("upload-length"), Some(65_000));
    assert_eq!(srv.get_bytes(&srv.url(&fin)).await.0, 404);

    assert_eq!(patch(&srv, &pb, 0, &b).await.status, 204);
    assert_eq!(srv.get_bytes(&srv.url(&fin)).await.0, 404, "a is not done");
    assert_eq!(patch(&srv, &pa, 10_000, &a[10_000..]).await.status, 204);
    let mut whole = a.clone();
    whole.extend_from_slice(&b);
    assert!(srv.get_bytes(&srv.url(&fin)).await == (200, whole));
    assert_eq!(head(&srv, &fin).await.number("upload-offset"), Some(65_000));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_to_a_final_upload_is_403_and_changes_nothing() {
    let srv = TestServer::start().await;
    let pa = create(&srv, 10, &[("upload-concat", "partial")]).await;
    let r = tus(
        &srv,
        Method::POST,
        "/files/",
        &[("upload-concat", &format!("final;{pa}"))],
        vec![],
    )
    .await;
    let fin = path_of(&srv, r.header("location").unwrap());
    let r = tus(
        &srv,
        Method::PATCH,
        &fin,
        &[
            ("content-type", OCTETS),
            ("upload-offset", "0"),
            ("upload-length", "10"),
        ],
        vec![1; 10],
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.error(), "final_upload_immutable");
    assert_eq!(offset_of(&srv, &pa).await, 0, "nor its partial uploads");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_naming_unknown_or_non_partial_uploads_or_with_a_length_is_400() {
    let srv = TestServer::start().await;
    let plain = create(&srv, 10, &[]).await;
    let part = create(&srv, 10, &[("upload-concat", "partial")]).await;
    for (concat, length, code) in [
        (
            "final;/files/0123456789abcdef0123456789abcdef".to_owned(),
            None,
            "concat_part_unknown",
        ),
        ("final;/files/nope".to_owned(), None, "concat_part_unknown"),
        (format!("final;{plain}"), None, "invalid_request"),
        (format!("final;{part}"), Some("10"), "final_length_given"),
        ("final;".to_owned(), None, "invalid_concat"),
        ("parts".to_owned(), None, "invalid_concat"),
    ] {
        let mut h = vec![("upload-concat", concat.as_str())];
        if let Some(l) = length {
            h.push(("upload-length", l));
        }
        let r = tus(&srv, Method::POST, "/files/", &h, vec![]).await;
        assert_eq!(r.status, 400, "{concat}: {r:?}");
        assert_eq!(r.error(), code, "{concat}");
        assert!(r.header("location").is_none());
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_creation_carrying_a_body_is_403_and_creates_nothing() {
    let srv = TestServer::start().await;
    let part = tus_upload(&srv, b"abc", &[("upload-concat", "partial")]).await;
    let concat = format!("final;{part}");
    let r = tus(
        &srv,
        Method::POST,
        "/files/",
        &[("upload-concat", &concat), ("content-type", OCTETS)],
        b"more".to_vec(),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.header("location").is_none());
    // The same creation without a body works.
    let r = tus(
        &srv,
        Method::POST,
        "/files/",
        &[("upload-concat", &concat), ("content-type", OCTETS)],
        vec![],
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let fin = path_of(&srv, r.header("location").unwrap());
    assert!(srv.get_bytes(&srv.url(&fin)).await == (200, b"abc".to_vec()));
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// Expiration
// ---------------------------------------------------------------------------

fn expires_at(r: &Reply) -> SystemTime {
    httpdate::parse_http_date(r.header("upload-expires").expect("Upload-Expires")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_expires_is_announced_in_the_future_until_the_upload_completes() {
    let srv = TestServer::start_with(|a| a.expire_incomplete = Duration::from_secs(3600)).await;
    let r = tus(
        &srv,
        Method::POST,
        "/files/",
        &[("upload-length", "20")],
        vec![],
    )
    .await;
    let now = SystemTime::now();
    let at = expires_at(&r);
    assert!(at > now + Duration::from_secs(3500), "{at:?}");
    assert!(at <= now + Duration::from_secs(3601), "{at:?}");
    let path = path_of(&srv, r.header("location").unwrap());
    assert!(expires_at(&head(&srv, &path).await) > now);
    let r = patch(&srv, &path, 0, &[1; 10]).await;
    assert!(
        expires_at(&r) >= at,
        "each PATCH announces it, and it moves on"
    );
    let r = patch(&srv, &path, 10, &[1; 10]).await;
    assert!(
        r.header("upload-expires").is_none(),
        "a finished upload does not expire"
    );
    assert!(head(&srv, &path).await.header("upload-expires").is_none());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_expiry_no_upload_expires_is_sent() {
    let srv = TestServer::start().await;
    let r = tus(
        &srv,
        Method::POST,
        "/files/",
        &[("upload-length", "20")],
        vec![],
    )
    .await;
    assert!(r.header("upload-expires").is_none());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_upload_is_removed_by_the_janitor_and_then_answers_404() {
    let srv = TestServer::start_with(|a| a.expire_incomplete = Duration::from_secs(1)).await;
    let path = create(&srv, 100, &[]).await;
    patch(&srv, &path, 0, &[1; 10]).await;
    poll(
        "the janitor to remove the idle upload",
        Duration::from_secs(15),
        || async { head(&srv, &path).await.status == 404 },
    )
    .await;
    assert_eq!(patch(&srv, &path, 10, &[1; 10]).await.status, 404);
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// CORS
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_for_a_tus_patch_is_answered_with_the_cors_headers() {
    let srv = TestServer::start().await;
    let path = create(&srv, 10, &[]).await;
    let r = send(
        &srv,
        Method::OPTIONS,
        &path,
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "PATCH"),
            (
                "access-control-request-headers",
                "tus-resumable,upload-offset,content-type,upload-checksum",
            ),
        ],
        vec![],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let methods = r.header("access-control-allow-methods").unwrap();
    for m in ["POST", "GET", "HEAD", "PATCH", "DELETE", "OPTIONS"] {
        assert!(methods.contains(m), "{m} in {methods}");
    }
    let allowed = r
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    for h in [
        "authorization",
        "content-type",
        "upload-offset",
        "upload-length",
        "upload-metadata",
        "upload-defer-length",
        "upload-concat",
        "upload-checksum",
        "tus-resumable",
        "x-http-method-override",
        "upload-draft-interop-version",
        "upload-complete",
        "x-file-id",
        "range",
    ] {
        assert!(allowed.split(", ").any(|a| a == h), "{h} in {allowed}");
    }
    assert_eq!(r.header("access-control-max-age"), Some("86400"));
    assert!(
        r.header("tus-version").is_none(),
        "a preflight is not a tus OPTIONS request"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_to_a_browser_expose_the_protocol_headers() {
    let srv = TestServer::start().await;
    let origin = ("origin", "https://app.example");
    let r = tus(
        &srv,
        Method::POST,
        "/files/",
        &[origin, ("upload-length", "5")],
        vec![],
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap()
        .to_owned();
    for h in [
        "Location",
        "Upload-Offset",
        "Upload-Length",
        "Upload-Metadata",
        "Upload-Expires",
        "Tus-Resumable",
        "Tus-Version",
        "Tus-Extension",
        "Tus-Max-Size",
        "ETag",
        // The browser SDK waits out 429/503 as the server asks, cross-origin too.
        "Retry-After",
        "Content-Range",
        "Content-Disposition",
        "X-Upload-Offset",
        "Upload-Complete",
        "Upload-Limit",
    ] {
        assert!(exposed.split(", ").any(|e| e == h), "{h} in {exposed}");
    }
    // Errors too, so the page can show what went wrong.
    let path = path_of(&srv, r.header("location").unwrap());
    let r = tus(
        &srv,
        Method::PATCH,
        &path,
        &[origin, ("content-type", OCTETS), ("upload-offset", "3")],
        vec![1; 2],
    )
    .await;
    assert_eq!(r.status, 409);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    // A tus OPTIONS from a page (no Access-Control-Request-Method) is tus discovery.
    let r = send(&srv, Method::OPTIONS, "/files/", &[origin], vec![]).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("tus-version"), Some("1.0.0"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    // No Origin, no CORS headers.
    let r = head(&srv, &path).await;
    assert!(r.header("access-control-allow-origin").is_none());
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// Downloads and metrics
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_tus_upload_downloads_with_ranges_and_counts_in_metrics() {
    let srv = TestServer::start().await;
    let data = test_bytes(100_000, 20);
    let path = tus_upload(&srv, &data, &[]).await;
    assert!(srv.get_bytes(&srv.url(&path)).await == (200, data.clone()));
    let r = srv
        .client
        .get(srv.url(&path))
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 1000-1999/100000");
    assert!(r.bytes().await.unwrap() == data[1000..2000]);

    // HEAD without Tus-Resumable is the download's HEAD.
    let r = send(&srv, Method::HEAD, &path, &[], vec![]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.number("content-length"), Some(100_000));
    assert!(r.header("etag").is_some());
    assert!(r.header("upload-offset").is_none());

    assert_eq!(
        srv.metric("ferry_uploads_completed_total{dialect=\"tus\"}")
            .await,
        1.0
    );
    assert_eq!(
        srv.metric("ferry_uploads_started_total{dialect=\"tus\"}")
            .await,
        1.0
    );
    assert!(
        srv.metric("ferry_bytes_received_total{dialect=\"tus\"}")
            .await
            >= 100_000.0
    );
    assert!(
        srv.metric("ferry_http_request_duration_seconds_count{route=\"tus\"}")
            .await
            >= 2.0,
        "POST and PATCH are counted under the tus route group"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_upload_is_not_downloadable() {
    let srv = TestServer::start().await;
    let path = create(&srv, 100, &[]).await;
    patch(&srv, &path, 0, &[1; 50]).await;
    assert_eq!(srv.get_bytes(&srv.url(&path)).await.0, 404);
    assert_eq!(
        send(&srv, Method::HEAD, &path, &[], vec![]).await.status,
        404
    );
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// Authentication (SPEC §6)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_tus_requests_need_the_bearer_but_downloads_and_options_do_not() {
    let srv = TestServer::start_with(|a| a.auth_token = Some("s3cret".into())).await;
    let bearer = ("authorization", "Bearer s3cret");
    let r = tus(
        &srv,
        Method::POST,
        "/files/",
        &[("upload-length", "10")],
        vec![],
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_tus(&r);
    assert_eq!(r.error(), "unauthorized");

    let r = send(&srv, Method::OPTIONS, "/files/", &[], vec![]).await;
    assert_eq!(r.status, 204, "discovery needs no token");

    let data = test_bytes(10, 21);
    let path = create(&srv, data.len(), &[bearer]).await;
    for method in [Method::HEAD, Method::PATCH, Method::DELETE] {
        let r = tus(
            &srv,
            method.clone(),
            &path,
            &[("content-type", OCTETS), ("upload-offset", "0")],
            data.clone(),
        )
        .await;
        assert_eq!(r.status, 401, "{method} without the token");
    }
    let r = tus(
        &srv,
        Method::PATCH,
        &path,
        &[bearer, ("content-type", OCTETS), ("upload-offset", "0")],
        data.clone(),
    )
    .await;
    assert_eq!(r.status, 204, "{r:?}");
    // The finished file's URL downloads without a token, as every dialect's does.
    assert!(srv.get_bytes(&srv.url(&path)).await == (200, data));
    srv.stop().await;
}
