//! `ferry serve --storage s3://…` with the real binary and a real S3 server we did not write
//! (`scripts/s3.sh`: Garage or s3s-fs): every dialect end to end through the CLI and raw
//! requests, the bucket holding the source byte for byte and the node's disk no file bytes;
//! two nodes on PostgreSQL and S3 where one is killed with `kill -9` mid-write and the other
//! finishes the upload; and start-up refusals that name `--storage`.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};
use support::pg::TestDb;
use support::proc::{
    Server, connect, download, path_of, request, send_in_pieces, throttled_proxy, write_head,
};
use support::s3::{Bucket, OwnS3, file_bytes_on_node, need};
use support::{assert_same_bytes, source};

const MIB: usize = 1 << 20;

fn upload(root: &Path, port: u16, file: &str, extra: &[&str]) -> String {
    support::cli_upload(root, port, file, "30s", extra)
}

/// The upload id at the end of a file URL.
fn id_of(url: &str) -> String {
    let last = path_of(url).rsplit('/').next().unwrap();
    // File URLs may carry the file's extension after the id.
    last.split('.').next().unwrap().to_owned()
}

#[track_caller]
fn assert_no_file_bytes(node: &Server, what: &str) {
    let found = file_bytes_on_node(&node.data_dir);
    assert!(
        found.is_empty(),
        "{what}: the node's data directory holds file bytes: {found:?}"
    );
}

fn tus_headers(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut h = vec![("Tus-Resumable", "1.0.0".to_owned())];
    h.extend_from_slice(extra);
    h
}

#[test]
fn every_dialect_round_trips_through_the_bucket_and_the_node_keeps_no_file_bytes() {
    let bucket = Bucket::new("dialects");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut srv = Server::new(root, &bucket.args());
    srv.spawn();
    // Not a multiple of the 5 MiB part: the last part is short.
    let data = source(13 * MIB + 4321, 93);
    for (name, extra) in [
        ("ranges", vec!["--parallel", "3"]),
        ("tus", vec!["--protocol", "tus", "--chunk-size", "1MiB"]),
        ("chunk", vec!["--protocol", "chunk", "--chunk-size", "2MiB"]),
    ] {
        let file = format!("{name}.bin");
        std::fs::write(root.join(&file), &data).unwrap();
        let before = bucket.finished();
        let url = upload(root, srv.port, &file, &extra);
        assert_same_bytes(&download(srv.port, &url), &data, name);
        // One new object in the bucket, the source byte for byte.
        let new: Vec<_> = bucket
            .finished()
            .into_iter()
            .filter(|k| !before.contains(k))
            .collect();
        assert_eq!(new.len(), 1, "{name}: new objects {new:?}");
        assert_same_bytes(
            &bucket.object(&new[0]),
            &data,
            &format!("{name}: the object"),
        );
        // A range from the middle, across a part boundary.
        let r = request(
            srv.port,
            "GET",
            path_of(&url),
            &[("Range", format!("bytes={}-{}", 5 * MIB - 7, 5 * MIB + 6))],
            b"",
        );
        assert_eq!(r.status, 206, "{name}: ranged GET");
        assert_eq!(
            r.body,
            &data[5 * MIB - 7..5 * MIB + 7],
            "{name}: ranged GET"
        );
    }
    // The rest of RFC 9110's Range behaviour on an object: a suffix, several ranges, past
    // the end, HEAD.
    let url = format!("/files/{}", bucket.finished()[0]);
    let r = request(
        srv.port,
        "GET",
        &url,
        &[("Range", "bytes=-100".into())],
        b"",
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[data.len() - 100..], "suffix range");
    let r = request(
        srv.port,
        "GET",
        &url,
        &[("Range", format!("bytes=0-9,{}-{}", 9 * MIB, 9 * MIB + 9))],
        b"",
    );
    assert_eq!(r.status, 206);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("multipart/byteranges"),
        "two ranges make a multipart answer"
    );
    assert!(
        support::proc::find(&r.body, &data[..10]).is_some(),
        "first range"
    );
    assert!(
        support::proc::find(&r.body, &data[9 * MIB..9 * MIB + 10]).is_some(),
        "second range"
    );
    let r = request(
        srv.port,
        "GET",
        &url,
        &[("Range", format!("bytes={}-", data.len() + 1))],
        b"",
    );
    assert_eq!(r.status, 416, "a range past the end");
    let r = request(srv.port, "HEAD", &url, &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some(data.len().to_string().as_str())
    );
    // The IETF draft: created with the first half, appended with the rest.
    let half = data.len() / 2;
    let ietf = [("Upload-Draft-Interop-Version", "6".to_owned())];
    let mut h = ietf.to_vec();
    h.push(("Upload-Complete", "?0".into()));
    let r = request(srv.port, "POST", "/files/", &h, &data[..half]);
    assert_eq!(r.status, 201, "IETF creation: {}", r.text());
    let loc = path_of(r.header("location").unwrap()).to_owned();
    let mut h = ietf.to_vec();
    h.extend([
        ("Upload-Offset", half.to_string()),
        ("Upload-Complete", "?1".into()),
        ("Content-Type", "application/partial-upload".into()),
    ]);
    let r = request(srv.port, "PATCH", &loc, &h, &data[half..]);
    assert!(
        r.status / 100 == 2,
        "IETF append: {} {}",
        r.status,
        r.text()
    );
    assert_same_bytes(&download(srv.port, &loc), &data, "IETF upload");
    // An unfinished tus upload survives kill -9: its bytes are in the bucket, not the node.
    let r = request(
        srv.port,
        "POST",
        "/files/",
        &tus_headers(&[
            ("Upload-Length", "10".into()),
            ("Content-Type", "application/offset+octet-stream".into()),
        ]),
        b"01234",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let unfinished = path_of(r.header("location").unwrap()).to_owned();
    srv.crash_and_restart();
    let h = request(srv.port, "HEAD", &unfinished, &tus_headers(&[]), b"");
    assert_eq!(
        h.header("upload-offset"),
        Some("5"),
        "held bytes after kill -9"
    );
    let r = request(
        srv.port,
        "PATCH",
        &unfinished,
        &tus_headers(&[
            ("Upload-Offset", "5".into()),
            ("Content-Type", "application/offset+octet-stream".into()),
        ]),
        b"56789",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(download(srv.port, &unfinished), b"0123456789");
    // The store's figures are on /metrics.
    let metrics = request(srv.port, "GET", "/metrics", &[], b"").text();
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
    };
    assert!(value("ferry_store_requests_total") > 10.0);
    assert!(value("ferry_store_request_seconds_total") > 0.0);
    value("ferry_store_errors_total");
    srv.kill();
    assert_no_file_bytes(&srv, "after every dialect");
}

#[test]
fn a_node_killed_mid_write_is_finished_by_the_other_and_the_bucket_holds_the_source() {
    let db = TestDb::create("s3nodes");
    let bucket = Bucket::new("nodes");
    let mut args = vec!["--database", db.url.as_str()];
    args.extend(bucket.args());
    let (ta, tb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Server::new(ta.path(), &args);
    let mut b = Server::new(tb.path(), &args);
    a.spawn();
    b.spawn();
    let src = source(24 * MIB + 99, 94);
    let r = request(
        a.port,
        "POST",
        "/files/",
        &tus_headers(&[("Upload-Length", src.len().to_string())]),
        b"",
    );
    assert_eq!(r.status, 201, "POST on A: {}", r.text());
    let path = path_of(r.header("location").unwrap()).to_owned();

    // About 40 % into one PATCH on A (two parts sent while it streams), A dies.
    let sent = 10 * MIB;
    let mut s = connect(a.port).expect("connect A");
    let patch = tus_headers(&[
        ("Upload-Offset", "0".into()),
        ("Content-Type", "application/offset+octet-stream".into()),
    ]);
    write_head(&mut s, a.port, "PATCH", &path, &patch, src.len()).unwrap();
    send_in_pieces(&mut s, &src[..sent], 10, Duration::from_millis(30)).unwrap();
    sleep(Duration::from_millis(300));
    let killed = Instant::now();
    a.kill();
    drop(s);

    // B answers with what is durable within 5 s, then takes the rest.
    let offset = loop {
        let r = request(b.port, "HEAD", &path, &tus_headers(&[]), b"");
        if r.status == 200 {
            break r.header("upload-offset").unwrap().parse::<usize>().unwrap();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "HEAD on B: {}",
            r.status
        );
        sleep(Duration::from_millis(50));
    };
    assert!(offset <= sent, "B claims {offset} of the {sent} bytes sent");
    let finish = |offset: usize| {
        let mut h = patch.clone();
        h[1].1 = offset.to_string();
        request(b.port, "PATCH", &path, &h, &src[offset..])
    };
    let mut r = finish(offset);
    while r.status == 409 || r.status == 423 {
        // A's lease is still running out (at most 3 s after the kill).
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "B still busy: {}",
            r.text()
        );
        sleep(Duration::from_millis(100));
        r = finish(offset);
    }
    assert_eq!(r.status, 204, "PATCH on B: {}", r.text());
    assert!(killed.elapsed() < Duration::from_secs(10));
    assert_same_bytes(&download(b.port, &path), &src, "download from B");
    assert_same_bytes(
        &bucket.object(&id_of(&path)),
        &src,
        "the object in the bucket",
    );
    a.spawn();
    assert_same_bytes(
        &download(a.port, &path),
        &src,
        "download from A after its restart",
    );
    a.kill();
    b.kill();
    assert_no_file_bytes(&a, "node A");
    assert_no_file_bytes(&b, "node B");
}

/// `ferry serve` with `args`: exits non-zero before listening; its log.
fn refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::new(tmp.path(), args);
    srv.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let status = srv
        .try_spawn()
        .expect_err("the server started with storage it cannot use");
    assert!(!status.success());
    // The harness's own first line names the environment it set; ferry's output follows.
    let log = std::fs::read_to_string(&srv.log).unwrap();
    log.split_once('\n')
        .map(|(_, rest)| rest.to_owned())
        .unwrap_or_default()
}

#[test]
fn unusable_buckets_stop_the_start_with_a_sentence_naming_the_flag() {
    let endpoint = need("FERRY_TEST_S3_ENDPOINT");
    let bucket = need("FERRY_TEST_S3_BUCKET");
    let log = refused(
        &[
            "--storage",
            "s3://no-such-bucket-here/x",
            "--s3-endpoint",
            &endpoint,
        ],
        &[],
    );
    assert!(log.contains("--storage s3://no-such-bucket-here"), "{log}");
    assert!(log.contains("does not exist"), "{log}");
    let secret = "f".repeat(64);
    let storage = format!("s3://{bucket}/x");
    let log = refused(
        &["--storage", &storage, "--s3-endpoint", &endpoint],
        &[("AWS_SECRET_ACCESS_KEY", &secret)],
    );
    assert!(log.contains("--storage"), "{log}");
    assert!(log.contains("refused the credentials"), "{log}");
    assert!(!log.contains(&secret), "the secret leaked: {log}");
    let log = refused(&["--storage", "s3://Bad_Name/x"], &[]);
    assert!(log.contains("not a valid bucket name"), "{log}");
}

#[test]
fn an_object_store_down_for_10_s_mid_upload_is_ridden_out() {
    let s3 = OwnS3::start();
    let tmp = tempfile::tempdir().unwrap();
    let args = s3.args("outage");
    let mut srv = Server::new(
        tmp.path(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    srv.spawn();
    let src = source(40 * MIB + 5, 95);
    std::fs::write(tmp.path().join("big.bin"), &src).unwrap();
    // 8 MiB/s into the node: the upload takes about 5 s without the outage.
    let proxy = throttled_proxy(srv.port, 8 * MIB);
    let mut child = support::spawn_tus_upload(tmp.path(), proxy, "90s");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut halted: Option<Instant> = None;
    let mut health_during = None;
    let mut result = None;
    let mut lines = Vec::new();
    for line in stdout.lines() {
        let Ok(line) = line else { break };
        lines.push(line.clone());
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        match v["event"].as_str() {
            Some("progress") if halted.is_none() => {
                let (bytes, total) = (v["bytes"].as_u64().unwrap(), v["total"].as_u64().unwrap());
                if bytes * 4 >= total {
                    s3.ctl("halt");
                    let at = Instant::now();
                    halted = Some(at);
                    eprintln!("object store halted at {bytes} of {total} bytes");
                    // /healthz notices within 2 s, while the store is down.
                    sleep(Duration::from_millis(2000));
                    let started = Instant::now();
                    let h = request(srv.port, "GET", "/healthz", &[], b"");
                    health_during = Some((h.status, started.elapsed()));
                    let resume = s3.dir.clone();
                    std::thread::spawn(move || {
                        sleep(Duration::from_secs(10).saturating_sub(at.elapsed()));
                        let out = Command::new(concat!(
                            env!("CARGO_MANIFEST_DIR"),
                            "/../../scripts/s3.sh"
                        ))
                        .args(["resume", &resume])
                        .output()
                        .unwrap();
                        assert!(out.status.success(), "resume failed");
                        eprintln!("object store back after {:?}", at.elapsed());
                    });
                }
            }
            Some("result") => result = Some((Instant::now(), v)),
            _ => {}
        }
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    assert!(
        status.success(),
        "ferry upload: {status}; {stderr}; {lines:?}"
    );
    let halted = halted.unwrap_or_else(|| panic!("the upload never reached 25 %: {lines:?}"));
    let (done, result) = result.unwrap_or_else(|| panic!("no result: {lines:?}"));
    assert!(
        done.duration_since(halted) >= Duration::from_secs(9),
        "the upload finished while the store was down: not a test of riding it out"
    );
    assert_eq!(result["status"], "ok", "{result}");
    let (health, took) = health_during.unwrap();
    assert_eq!(health, 503, "/healthz while the store was down");
    assert!(took < Duration::from_secs(2), "/healthz took {took:?}");
    assert_eq!(request(srv.port, "GET", "/healthz", &[], b"").status, 200);
    let url = result["url"].as_str().unwrap();
    assert_same_bytes(&download(srv.port, url), &src, "download after the outage");
    srv.kill();
    assert_no_file_bytes(&srv, "after the outage");
}

#[test]
fn downloads_can_be_redirected_to_presigned_urls() {
    let bucket = Bucket::new("redirect");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut args = bucket.args();
    args.push("--s3-redirect-downloads");
    let mut srv = Server::new(root, &args);
    srv.spawn();
    let data = source(7 * MIB + 11, 96);
    std::fs::write(root.join("photo.jpg"), &data).unwrap();
    let url = upload(root, srv.port, "photo.jpg", &[]);
    let path = path_of(&url).to_owned();

    // A GET is sent to the object, signed for a few minutes; HEAD stays with ferry.
    let r = request(srv.port, "GET", &path, &[], b"");
    assert_eq!(r.status, 307, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("private, no-store"));
    let location = r.header("location").expect("Location").to_owned();
    assert!(location.contains("X-Amz-Signature="), "{location}");
    assert!(location.contains("X-Amz-Expires=300"), "{location}");
    let h = request(srv.port, "HEAD", &path, &[], b"");
    assert_eq!(h.status, 200);
    assert_eq!(
        h.header("content-length"),
        Some(data.len().to_string().as_str())
    );

    // The presigned URL serves the bytes, ranges and the file's name without credentials.
    let rest = location
        .strip_prefix("http://127.0.0.1:")
        .expect("a loopback store");
    let slash = rest.find('/').unwrap();
    let (port, target) = (rest[..slash].parse::<u16>().unwrap(), &rest[slash..]);
    let direct = request(port, "GET", target, &[], b"");
    assert_eq!(direct.status, 200, "{}", direct.text());
    assert_same_bytes(&direct.body, &data, "the object through its presigned URL");
    assert!(
        direct
            .header("content-disposition")
            .is_some_and(|d| d.contains("photo.jpg")),
        "the object answers with the file's name: {:?}",
        direct.header("content-disposition")
    );
    let part = request(
        port,
        "GET",
        target,
        &[("Range", "bytes=100-199".into())],
        b"",
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.body, &data[100..200]);
    srv.kill();
}
