//! Operations and downloads end to end (SPEC §3, §6, §7), against a real server on
//! `127.0.0.1:0`: `/healthz`, `/metrics` as Prometheus text, downloads of finished files
//! (HEAD, conditionals, If-Range, multi-range, `Content-Disposition` with a non-ASCII name),
//! 404s for unknown ids and traversal paths, bearer tokens, and graceful shutdown with a
//! request in flight.
//!
//! Configuration (`ferry.toml`, `FERRY_*`, flags) is tested through the `ferry` binary in
//! `crates/client/tests/crash.rs`: clap's environment parsing is process-global.

mod common;

use common::{TestServer, spark_chunks, test_bytes};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// One byte-offset POST of all of `data`; returns the JSON answer (asserting 200).
async fn offset_upload(srv: &TestServer, id: &str, data: &[u8]) -> Value {
    let r = srv
        .client
        .post(srv.url("/api/upload"))
        .header("content-type", "application/octet-stream")
        .header("x-file-id", id)
        .header("x-start-byte", "0")
        .header("x-file-size", data.len().to_string())
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "byte-offset upload: {text}");
    let j: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(j["complete"], true, "{j}");
    j
}

/// The path of a URL the server handed out.
fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("/".into(), |i| rest[i..].to_owned())
}

/// A raw HTTP/1.1 answer.
#[derive(Debug)]
struct RawResp {
    status: u16,
    headers: Vec<(String, String)>,
    /// Everything after the head, as sent (the connection is `Connection: close`).
    body: Vec<u8>,
}

impl RawResp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Writes a request head (with `Connection: close` and `Content-Length`) on `s`.
async fn write_head(
    s: &mut TcpStream,
    method: &str,
    target: &str,
    headers: &[(&str, String)],
    content_length: usize,
) {
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {content_length}\r\n\r\n"));
    s.write_all(head.as_bytes()).await.unwrap();
}

/// Reads a whole `Connection: close` answer (to EOF) and splits head from body.
async fn read_to_close(s: &mut TcpStream) -> RawResp {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .expect("the server answered within 30 s")
        .expect("reading the answer");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    RawResp {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// One raw request with an empty body; the target is sent exactly as given (no URL
/// normalisation, unlike reqwest).
async fn raw_request(srv: &TestServer, method: &str, target: &str) -> RawResp {
    let addr = srv.base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.unwrap();
    write_head(&mut s, method, target, &[], 0).await;
    read_to_close(&mut s).await
}

// --- Prometheus text format -------------------------------------------------

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    help: HashMap<String, String>,
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the one sample `name{labels}` (labels given as pairs, all must match
    /// exactly).
    #[track_caller]
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == want)
            .collect();
        assert_eq!(found.len(), 1, "exactly one sample {name}{want:?}");
        found[0].value
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// `{k="v",…}`: returns the labels and what follows the closing brace.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("labels must start with {")?;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = rest[..eq].trim();
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut chars = rest[eq + 1..].trim_start().char_indices();
        let body = rest[eq + 1..].trim_start();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label {name} value is not quoted"));
        }
        let mut value = String::new();
        let mut close = None;
        let mut escaped = false;
        for (i, c) in chars {
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false;
                }
                (true, '\\' | '"') => {
                    value.push(c);
                    escaped = false;
                }
                (true, _) => return Err(format!("bad escape in label {name}")),
                (false, '\\') => escaped = true,
                (false, '"') => {
                    close = Some(i);
                    break;
                }
                (false, _) => value.push(c),
            }
        }
        let close = close.ok_or_else(|| format!("label {name} value is not closed"))?;
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} repeated"));
        }
        rest = body[close + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("labels must be separated by commas".into());
        }
    }
}

/// Parses the Prometheus text exposition format (0.0.4) strictly enough to catch a broken
/// line: every sample is `name[{labels}] value [timestamp]`, every family has one HELP and one
/// TYPE before its samples, and every sample belongs to a declared family.
fn parse_exposition(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    for (n, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), help) => {
                    if !is_metric_name(name) {
                        return Err(err("bad metric name in HELP".into()));
                    }
                    if e.help
                        .insert(name.into(), help.unwrap_or("").into())
                        .is_some()
                    {
                        return Err(err("second HELP".into()));
                    }
                }
                (Some("TYPE"), Some(name), Some(ty)) => {
                    if !is_metric_name(name) {
                        return Err(err("bad metric name in TYPE".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty) {
                        return Err(err(format!("unknown type {ty}")));
                    }
                    if e.samples
                        .iter()
                        .any(|s| family_of(&s.name, &e.types) == name)
                    {
                        return Err(err("TYPE after samples of the family".into()));
                    }
                    if e.types.insert(name.into(), ty.into()).is_some() {
                        return Err(err("second TYPE".into()));
                    }
                }
                _ => {} // any other comment is allowed
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(err(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(err)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        if !rest.starts_with(' ') {
            return Err(err("no space before the value".into()));
        }
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .and_then(parse_value)
            .ok_or_else(|| err("value is not a number".into()))?;
        if let Some(ts) = fields.next()
            && ts.parse::<i64>().is_err()
        {
            return Err(err("timestamp is not an integer".into()));
        }
        if fields.next().is_some() {
            return Err(err("trailing fields".into()));
        }
        let family = family_of(name, &e.types);
        if !e.types.contains_key(family) || !e.help.contains_key(family) {
            return Err(err(format!("sample of {family} before its HELP and TYPE")));
        }
        e.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(e)
}

/// The family a sample name belongs to (`x_bucket`, `x_sum`, `x_count` of histogram `x`).
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types
                .get(base)
                .is_some_and(|t| t == "histogram" || t == "summary")
        {
            return base;
        }
    }
    name
}

async fn scrape(srv: &TestServer) -> Exposition {
    let r = srv.client.get(srv.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain"), "content-type {ct}");
    let text = r.text().await.unwrap();
    parse_exposition(&text).unwrap_or_else(|e| panic!("invalid Prometheus text: {e}\n{text}"))
}

const HISTOGRAM: &str = "ferry_http_request_duration_seconds";

/// The checker itself: it must accept well-formed text and reject each kind of broken line,
/// or the validity test below proves nothing.
#[test]
fn the_exposition_checker_rejects_malformed_lines() {
    let head = "# HELP x_total X.\n# TYPE x_total counter\n";
    let good = format!("{head}x_total{{a=\"1\",b=\"q\\\"\"}} 3\nx_total 4 1700000000\n");
    let e = parse_exposition(&good).unwrap();
    assert_eq!(e.value("x_total", &[("a", "1"), ("b", "q\"")]), 3.0);
    for bad in [
        "x_total 1\n".to_owned(),                  // no HELP/TYPE
        format!("{head}x_total{{a=1}} 1\n"),       // unquoted label
        format!("{head}x_total{{a=\"1\"}}1\n"),    // no space
        format!("{head}x_total{{a=\"1\"}} one\n"), // not a number
        format!("{head}x_total{{a=\"1\" 1\n"),     // unclosed labels
        format!("{head}x_total 1 2 3\n"),          // trailing fields
        format!("{head}2x 1\n"),                   // bad name
        format!("{head}# TYPE x_total gauge\n"),   // second TYPE
    ] {
        assert!(parse_exposition(&bad).is_err(), "accepted {bad:?}");
    }
}

// ---------------------------------------------------------------------------
// /healthz
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_ok_and_turns_503_when_the_storage_directory_is_gone() {
    let srv = TestServer::start().await;
    let r = srv.client.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap().trim(), "ok");

    std::fs::remove_dir_all(srv.dir.path().join("files")).unwrap();
    let r = srv.client.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 503, "{:?}", r.text().await);
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// /metrics
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_prometheus_text_with_counters_and_a_latency_histogram() {
    let srv = TestServer::start().await;
    // Some traffic first, so the histogram has non-zero buckets.
    let _ = srv.client.get(srv.url("/healthz")).send().await.unwrap();
    let e = scrape(&srv).await;

    for name in [
        "ferry_bytes_received_total",
        "ferry_uploads_started_total",
        "ferry_uploads_completed_total",
        "ferry_uploads_failed_total",
    ] {
        assert!(e.help.contains_key(name), "HELP for {name}");
        assert_eq!(
            e.types.get(name).map(String::as_str),
            Some("counter"),
            "{name}"
        );
        for dialect in ["chunk", "offset"] {
            assert_eq!(
                e.value(name, &[("dialect", dialect)]),
                0.0,
                "{name} {dialect}"
            );
        }
    }
    assert!(e.help.contains_key(HISTOGRAM));
    assert_eq!(
        e.types.get(HISTOGRAM).map(String::as_str),
        Some("histogram")
    );

    // Per route: buckets cumulative in increasing `le`, the +Inf bucket equals _count,
    // and a _sum exists.
    let routes: Vec<String> = e
        .samples
        .iter()
        .filter(|s| s.name == format!("{HISTOGRAM}_count"))
        .map(|s| s.labels["route"].clone())
        .collect();
    for route in ["upload", "handshake", "status", "download", "ops"] {
        assert!(
            routes.iter().any(|r| r == route),
            "route {route} in {routes:?}"
        );
    }
    for route in &routes {
        let mut buckets: Vec<(f64, f64)> = e
            .samples
            .iter()
            .filter(|s| s.name == format!("{HISTOGRAM}_bucket") && &s.labels["route"] == route)
            .map(|s| {
                let le = parse_value(&s.labels["le"]).expect("le is a number");
                (le, s.value)
            })
            .collect();
        assert!(buckets.len() >= 2, "buckets for {route}");
        let unsorted = buckets.clone();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(
            unsorted, buckets,
            "buckets of {route} are listed by increasing le"
        );
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "buckets of {route} are cumulative: {buckets:?}"
        );
        let (le, inf) = *buckets.last().unwrap();
        assert_eq!(le, f64::INFINITY, "the last bucket of {route} is +Inf");
        let count = e.value(&format!("{HISTOGRAM}_count"), &[("route", route)]);
        assert_eq!(inf, count, "+Inf bucket equals _count for {route}");
        let sum = e.value(&format!("{HISTOGRAM}_sum"), &[("route", route)]);
        assert!(sum >= 0.0 && sum.is_finite(), "_sum of {route} is {sum}");
    }
    assert!(
        e.value(&format!("{HISTOGRAM}_count"), &[("route", "ops")]) >= 1.0,
        "the /healthz request was timed"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_bytes_and_the_upload_of_one_byte_offset_transfer() {
    let srv = TestServer::start().await;
    let before = scrape(&srv).await;
    let data = test_bytes(100_003, 31);
    offset_upload(&srv, "metrics.bin-100003-1", &data).await;
    let after = scrape(&srv).await;

    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    let offset = [("dialect", "offset")];
    assert_eq!(
        delta("ferry_bytes_received_total", &offset),
        data.len() as f64,
        "bytes received grow by exactly the body"
    );
    assert_eq!(delta("ferry_uploads_started_total", &offset), 1.0);
    assert_eq!(delta("ferry_uploads_completed_total", &offset), 1.0);
    assert_eq!(delta("ferry_uploads_failed_total", &offset), 0.0);
    assert_eq!(
        delta("ferry_bytes_received_total", &[("dialect", "chunk")]),
        0.0,
        "other dialects do not move"
    );
    let upload = [("route", "upload")];
    assert!(
        delta(&format!("{HISTOGRAM}_count"), &upload) >= 1.0,
        "the upload request is in the latency histogram"
    );
    assert_eq!(
        after.value(
            &format!("{HISTOGRAM}_bucket"),
            &[("route", "upload"), ("le", "+Inf")]
        ),
        after.value(&format!("{HISTOGRAM}_count"), &upload)
    );
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// Downloads (SPEC §3)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_of_a_finished_file_has_its_length_and_range_support_and_no_body() {
    let srv = TestServer::start().await;
    let data = test_bytes(70_001, 32);
    let j = offset_upload(&srv, "head.bin-70001-1", &data).await;
    let path = path_of(j["url"].as_str().expect("url"));
    assert!(path.starts_with("/files/"), "{path}");

    // Raw socket: the bytes after the head are exactly what the server sent.
    let r = raw_request(&srv, "HEAD", &path).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("70001"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(
        r.header("etag").is_some_and(|t| t.starts_with('"')),
        "{r:?}"
    );
    assert!(r.header("last-modified").is_some());
    assert!(r.body.is_empty(), "HEAD sent {} body bytes", r.body.len());

    let (status, body) = srv.get_bytes(&srv.url(&path)).await;
    assert_eq!(status, 200);
    assert!(body == data, "GET returns the uploaded bytes");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_downloads_answer_304_for_a_matching_etag_and_200_for_a_stale_if_range() {
    let srv = TestServer::start().await;
    let data = test_bytes(50_000, 33);
    let j = offset_upload(&srv, "cond.bin-50000-1", &data).await;
    let url = srv.url(&path_of(j["url"].as_str().unwrap()));
    let r = srv.client.get(&url).send().await.unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();

    let r = srv
        .client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert!(r.bytes().await.unwrap().is_empty());

    // A stale If-Range: the Range is ignored and the whole file comes back.
    let r = srv
        .client
        .get(&url)
        .header("range", "bytes=0-99")
        .header("if-range", "\"stale-etag\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-range").is_none());
    assert!(
        r.bytes().await.unwrap() == data,
        "full body for a stale If-Range"
    );

    // The current ETag in If-Range: the range is served.
    let r = srv
        .client
        .get(&url)
        .header("range", "bytes=100-199")
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"].to_str().unwrap(),
        "bytes 100-199/50000"
    );
    assert_eq!(r.bytes().await.unwrap(), &data[100..200]);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_ranges_come_back_as_multipart_byteranges() {
    let srv = TestServer::start().await;
    let data = test_bytes(20_000, 34);
    let j = offset_upload(&srv, "multi.bin-20000-1", &data).await;
    let url = srv.url(&path_of(j["url"].as_str().unwrap()));
    let r = srv
        .client
        .get(&url)
        .header("range", "bytes=0-9,1000-1999,-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("content-type {ct}"))
        .trim_matches('"')
        .to_owned();
    let declared: usize = r.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), declared, "Content-Length is exact");

    // Parse the parts: delimiter, headers, blank line, bytes.
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest: &[u8] = &body;
    let find = |hay: &[u8], n: &[u8]| hay.windows(n.len()).position(|w| w == n);
    loop {
        let at = find(rest, delim.as_bytes()).expect("a delimiter");
        rest = &rest[at + delim.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let head_end = find(rest, b"\r\n\r\n").expect("part head");
        let head = String::from_utf8_lossy(&rest[..head_end]).to_ascii_lowercase();
        let range = head
            .lines()
            .find_map(|l| l.strip_prefix("content-range: bytes "))
            .expect("part Content-Range")
            .to_owned();
        rest = &rest[head_end + 4..];
        let end = find(rest, format!("\r\n{delim}").as_bytes()).expect("part end");
        parts.push((range, rest[..end].to_vec()));
        rest = &rest[end..];
    }
    let want = [
        ("0-9/20000", &data[0..10]),
        ("1000-1999/20000", &data[1000..2000]),
        ("19995-19999/20000", &data[19995..]),
    ];
    assert_eq!(
        parts.len(),
        want.len(),
        "{:?}",
        parts.iter().map(|p| &p.0).collect::<Vec<_>>()
    );
    for ((range, bytes), (want_range, want_bytes)) in parts.iter().zip(want) {
        assert_eq!(range, want_range);
        assert_eq!(bytes.as_slice(), want_bytes, "part {range}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_upload_named_in_chinese_downloads_with_an_rfc_6266_filename_and_its_type() {
    let srv = TestServer::start().await;
    let data = test_bytes(5_000, 35);
    let (file_id, chunks) = spark_chunks(&data, 2_048);
    let ids: Vec<&str> = chunks.iter().map(|(id, _)| id.as_str()).collect();
    let (status, env) = srv
        .handshake(&json!({
            "fileId": file_id,
            "ext": ".pdf",
            "chunkIds": ids,
            "size": data.len(),
            "chunkSize": 2_048,
            "fileName": "报告 2026.pdf",
        }))
        .await;
    assert_eq!(status, 200, "{env}");
    let mut last = Value::Null;
    for (id, bytes) in &chunks {
        let (status, env) = srv.send_chunk(&file_id, id, bytes.clone(), false).await;
        assert_eq!(status, 200, "{env}");
        last = env["data"].clone();
    }
    let url = last
        .as_str()
        .unwrap_or_else(|| panic!("no URL after the last chunk: {last}"));
    let path = path_of(url);
    assert_eq!(path, format!("/upload/{file_id}.pdf"));

    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let r = srv
            .client
            .request(method.clone(), srv.url(&path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method}");
        let cd = r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            cd.contains("filename*=UTF-8''%E6%8A%A5%E5%91%8A%202026.pdf"),
            "{method}: Content-Disposition {cd}"
        );
        assert!(cd.starts_with("attachment"), "{cd}");
        assert_eq!(r.headers()["content-type"], "application/pdf", "{method}");
        if method == reqwest::Method::GET {
            assert!(r.bytes().await.unwrap() == data);
        }
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_answer_404_with_a_json_error_code() {
    let srv = TestServer::start().await;
    let unknown = [
        "/files/0123456789abcdef0123456789abcdef".to_owned(),
        "/files/not-an-id".to_owned(),
        format!("/upload/{}.pdf", "ab".repeat(16)),
        format!("/upload/{}", "cd".repeat(16)),
        "/upload/not-hex.bin".to_owned(),
    ];
    for path in unknown {
        let r = srv.client.get(srv.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let j: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{path}: body is not JSON: {e}"));
        assert!(
            j["error"].as_str().is_some_and(|c| !c.is_empty()),
            "{path}: {j}"
        );
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_paths_never_reach_the_filesystem_and_answer_404() {
    let srv = TestServer::start().await;
    // A finished file exists, so a traversal that resolves would have something to find.
    let data = test_bytes(1_000, 36);
    offset_upload(&srv, "traversal.bin-1000-1", &data).await;
    let targets = [
        "/files/../../etc/passwd",
        "/files/..%2F..%2Fetc%2Fpasswd",
        "/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/files/..",
        "/upload/../../etc/passwd",
        "/upload/..%2F..%2Fetc%2Fpasswd",
        "/upload/00000000000000000000000000000000..%2F..%2Fetc%2Fpasswd",
        "/upload/00000000000000000000000000000000.%2F..%2Fferry.db",
    ];
    for target in targets {
        // Raw: reqwest would normalise the dot segments away before sending.
        let r = raw_request(&srv, "GET", target).await;
        assert_eq!(r.status, 404, "{target}: {r:?}");
        let body = String::from_utf8_lossy(&r.body);
        assert!(!body.contains("root:"), "{target} served /etc/passwd");
        assert!(!body.contains("SQLite"), "{target} served the database");
    }
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// Authentication (SPEC §6)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_configured_uploads_need_the_bearer() {
    let srv = TestServer::start_with(|a| a.auth_token = Some("s3cret".into())).await;
    let data = test_bytes(4_096, 37);
    let upload = |auth: Option<&str>| {
        let mut req = srv
            .client
            .post(srv.url("/api/upload"))
            .header("content-type", "application/octet-stream")
            .header("x-file-id", "auth.bin-4096-1")
            .header("x-start-byte", "0")
            .header("x-file-size", "4096")
            .body(data.clone());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };

    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic czNjcmV0"),
        Some("s3cret"),
    ] {
        let r = upload(auth).await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert_eq!(
            r.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer"),
            "{auth:?}"
        );
        let j: Value = r.json().await.unwrap();
        // No bearer credentials at all, or a bearer token nobody issued.
        let want = if auth.is_some_and(|a| a.starts_with("Bearer ")) {
            "invalid_token"
        } else {
            "unauthorized"
        };
        assert_eq!(j["error"], want, "{auth:?}: {j}");
    }
    // Nothing was stored by the refused requests; the status endpoint needs the token too.
    let r = srv
        .client
        .get(srv.url("/api/upload/status"))
        .header("x-file-id", "auth.bin-4096-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (status, _) = srv
        .handshake(&json!({"fileId": "0".repeat(32), "ext": ".bin", "chunkIds": []}))
        .await;
    assert_eq!(status, 401, "the handshake needs the token");

    let r = srv
        .client
        .get(srv.url("/api/upload/status"))
        .header("x-file-id", "auth.bin-4096-1")
        .header("authorization", "Bearer s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap().trim(),
        "0",
        "refused requests stored nothing"
    );

    let r = upload(Some("Bearer s3cret")).await.unwrap();
    assert_eq!(r.status(), 200);
    let j: Value = r.json().await.unwrap();
    assert_eq!(j["complete"], true, "{j}");
    let (status, body) = srv
        .get_bytes(&srv.url(&path_of(j["url"].as_str().unwrap())))
        .await;
    assert_eq!(status, 200);
    assert!(body == data);
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// Graceful shutdown (SPEC §7)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_in_flight_upload_finish_then_refuses_new_connections() {
    let mut srv = TestServer::start().await;
    let addr = srv.base.trim_start_matches("http://").to_owned();
    let data = test_bytes(2 * 1024 * 1024 + 7, 38);
    let half = data.len() / 2;

    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    write_head(
        &mut s,
        "POST",
        "/api/upload",
        &[
            ("Content-Type", "application/octet-stream".into()),
            ("X-File-Id", "shutdown.bin-2097159-1".into()),
            ("X-Start-Byte", "0".into()),
            ("X-File-Size", data.len().to_string()),
        ],
        data.len(),
    )
    .await;
    s.write_all(&data[..half]).await.unwrap();
    s.flush().await.unwrap();
    // Wait until the handler has taken the request: it records the upload (whose declared
    // size the status answer then carries) before it streams the body.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = srv
            .client
            .get(srv.url("/api/upload/status"))
            .header("x-file-id", "shutdown.bin-2097159-1")
            .send()
            .await
            .unwrap();
        if r.headers().contains_key("x-file-size") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the upload request never reached its handler"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    srv.trigger_shutdown();
    // New connections are refused while the request is still in flight.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(&addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections 5 s after shutdown began"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !srv.is_finished(),
        "the server waits for the request in flight"
    );

    s.write_all(&data[half..]).await.unwrap();
    s.flush().await.unwrap();
    let r = read_to_close(&mut s).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let j: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(j["complete"], true, "{j}");
    assert_eq!(j["offset"].as_u64(), Some(data.len() as u64), "{j}");

    let state = srv.state.clone();
    tokio::time::timeout(Duration::from_secs(10), srv.stop())
        .await
        .expect("the server task ends once the request in flight is done");
    assert!(
        TcpStream::connect(&addr).await.is_err(),
        "a connection after shutdown is refused"
    );
    // The upload was published before the answer: the engine has it complete.
    let u = state
        .engine
        .find("offset:shutdown.bin-2097159-1")
        .await
        .unwrap()
        .expect("the upload is recorded");
    assert!(u.is_complete());
}
