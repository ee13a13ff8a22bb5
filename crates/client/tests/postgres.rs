//! `ferry serve --database postgres://…` with the real binary and a real PostgreSQL (the
//! throwaway cluster of `scripts/test.sh`): every dialect end to end through the CLI, the
//! records surviving a `kill -9`, a second node sharing the database and the blob directory
//! serving a file it never saw, and start-up refusals that name `--database` and never the
//! password.

mod support;

use std::path::Path;
use std::process::Command;
use support::pg::{TestDb, admin_url, with_db};
use support::proc::{Server, request};
use support::{assert_same_bytes, source};

fn upload(root: &Path, port: u16, file: &str, extra: &[&str]) -> String {
    support::cli_upload(root, port, file, "20s", extra)
}

fn download_path(port: u16, url: &str) -> Vec<u8> {
    let path = support::proc::path_of(url);
    let r = request(port, "GET", path, &[], b"");
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.body
}

#[test]
fn every_dialect_works_on_postgresql_and_survives_a_kill() {
    let db = TestDb::create("e2e");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut srv = Server::new(root, &["--database", &db.url]);
    srv.spawn();
    let data = source(6 << 20, 91);
    std::fs::write(root.join("f.bin"), &data).unwrap();
    let mut urls = Vec::new();
    for (name, extra) in [
        ("ranges", vec!["--parallel", "3"]),
        (
            "tus",
            vec![
                "--protocol",
                "tus",
                "--parallel",
                "3",
                "--chunk-size",
                "1MiB",
            ],
        ),
        ("chunk", vec!["--protocol", "chunk", "--chunk-size", "1MiB"]),
    ] {
        let file = format!("{name}.bin");
        std::fs::write(root.join(&file), &data).unwrap();
        let url = upload(root, srv.port, &file, &extra);
        assert_same_bytes(&download_path(srv.port, &url), &data, name);
        urls.push(url);
    }
    // An unfinished tus upload, then kill -9: the record is in PostgreSQL, not in the process.
    let r = request(
        srv.port,
        "POST",
        "/files/",
        &[
            ("Tus-Resumable", "1.0.0".into()),
            ("Upload-Length", "10".into()),
            ("Content-Type", "application/offset+octet-stream".into()),
        ],
        b"01234",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let loc = support::proc::path_of(r.header("location").unwrap()).to_owned();
    srv.crash_and_restart();
    let h = request(
        srv.port,
        "HEAD",
        &loc,
        &[("Tus-Resumable", "1.0.0".into())],
        b"",
    );
    assert_eq!(
        h.header("upload-offset"),
        Some("5"),
        "held bytes after kill -9"
    );
    for url in &urls {
        assert_same_bytes(&download_path(srv.port, url), &data, url);
    }
    // The pool's figures are on /metrics.
    let metrics = request(srv.port, "GET", "/metrics", &[], b"").text();
    for name in [
        "ferry_db_pool_max_connections 16",
        "ferry_db_pool_waiting 0",
        "ferry_lock_waits_total",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(name)),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    srv.kill();
}

#[test]
fn a_second_node_on_the_same_database_and_storage_serves_what_the_first_stored() {
    let db = TestDb::create("nodes");
    let shared = tempfile::tempdir().unwrap();
    let storage = format!("file://{}", shared.path().join("files").display());
    let (ta, tb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Server::new(ta.path(), &["--database", &db.url, "--storage", &storage]);
    let mut b = Server::new(tb.path(), &["--database", &db.url, "--storage", &storage]);
    a.spawn();
    b.spawn();
    let data = source(3 << 20, 92);
    std::fs::write(ta.path().join("x.bin"), &data).unwrap();
    let url = upload(ta.path(), a.port, "x.bin", &[]);
    assert_same_bytes(&download_path(b.port, &url), &data, "download from node B");
    // And the other way round, with tus.
    std::fs::write(tb.path().join("y.bin"), &data).unwrap();
    let url = upload(tb.path(), b.port, "y.bin", &["--protocol", "tus"]);
    assert_same_bytes(&download_path(a.port, &url), &data, "download from node A");
    // Instant upload across nodes: the chunk dialect's file stored through A is known to B.
    std::fs::write(ta.path().join("z.bin"), &data).unwrap();
    std::fs::write(tb.path().join("z.bin"), &data).unwrap();
    let first = upload(ta.path(), a.port, "z.bin", &["--protocol", "chunk"]);
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "upload",
            "z.bin",
            "--protocol",
            "chunk",
            "--json",
            "--server",
        ])
        .arg(format!("http://127.0.0.1:{}", b.port))
        .arg("--state-file")
        .arg(tb.path().join("fresh.json"))
        .current_dir(tb.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("\"resumed_from\":{}", data.len())),
        "node B did not answer the known file as an instant upload:\n{stdout}"
    );
    assert_eq!(
        support::proc::path_of(&support::result_url(&stdout)),
        support::proc::path_of(&first),
        "the instant upload names the same file"
    );
    // The IETF draft: created on A with the first half, finished on B, read from A.
    let half = data.len() / 2;
    let ietf = [("Upload-Draft-Interop-Version", "6".to_owned())];
    let mut h = ietf.to_vec();
    h.push(("Upload-Complete", "?0".into()));
    let r = request(a.port, "POST", "/files/", &h, &data[..half]);
    assert_eq!(r.status, 201, "IETF creation on A: {}", r.text());
    let loc = support::proc::path_of(r.header("location").unwrap()).to_owned();
    let r = request(b.port, "HEAD", &loc, &ietf, b"");
    assert_eq!(
        r.header("upload-offset"),
        Some(half.to_string().as_str()),
        "offset on B"
    );
    let mut h = ietf.to_vec();
    h.extend([
        ("Upload-Offset", half.to_string()),
        ("Upload-Complete", "?1".into()),
        ("Content-Type", "application/partial-upload".into()),
    ]);
    let r = request(b.port, "PATCH", &loc, &h, &data[half..]);
    assert!(
        r.status / 100 == 2,
        "IETF append on B: {} {}",
        r.status,
        r.text()
    );
    assert_same_bytes(
        &download_path(a.port, &loc),
        &data,
        "IETF upload read from A",
    );
    a.kill();
    b.kill();
}

/// `ferry serve` with `database`: exits non-zero before listening; its output.
fn refused(database: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::new(tmp.path(), &["--database", database]);
    let status = srv
        .try_spawn()
        .expect_err("the server started with a database it cannot use");
    assert!(!status.success());
    std::fs::read_to_string(&srv.log).unwrap()
}

#[test]
fn unusable_databases_stop_the_start_with_a_sentence_naming_the_flag() {
    let admin = admin_url();
    let db = TestDb::create("bad");
    let secret = "not-the-password-8d1f";
    let start = admin.find("://").unwrap() + 3;
    let at = admin.find('@').unwrap();
    let user = admin[start..at].split(':').next().unwrap();
    let wrong = format!("postgres://{user}:{secret}@{}", &db.url[at + 1..]);
    let cases = [
        (wrong, "password authentication failed"),
        (with_db(&admin, "no_such_database_here"), "does not exist"),
        (
            format!("postgres://{user}:{secret}@127.0.0.1:1/x"),
            "connection refused",
        ),
        (
            format!("postgres://{user}:{secret}@127.0.0.1:notaport/x"),
            "invalid",
        ),
    ];
    for (url, why) in cases {
        let log = refused(&url);
        assert!(log.contains("--database"), "{url}: {log}");
        assert!(log.contains(why), "{url}: expected {why:?} in {log}");
        assert!(!log.contains(secret), "the password leaked: {log}");
    }
    // A schema newer than this build: refused, untouched.
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::new(tmp.path(), &["--database", &db.url]);
    srv.spawn();
    srv.kill();
    db.exec("UPDATE ferry_schema SET version = version + 100");
    let log = refused(&db.url);
    assert!(log.contains("newer than"), "{log}");
}

/// A PATCH that streams for longer than a lease lives (3 s) keeps its lease renewed and is
/// acknowledged whole.
#[test]
fn a_patch_longer_than_a_lease_is_acknowledged() {
    let db = TestDb::create("longpatch");
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::new(tmp.path(), &["--database", &db.url]);
    srv.spawn();
    let data = source(4 << 20, 93);
    let r = request(
        srv.port,
        "POST",
        "/files/",
        &[
            ("Tus-Resumable", "1.0.0".into()),
            ("Upload-Length", data.len().to_string()),
        ],
        b"",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let path = support::proc::path_of(r.header("location").unwrap()).to_owned();
    let mut s = support::proc::connect(srv.port).unwrap();
    support::proc::write_head(
        &mut s,
        srv.port,
        "PATCH",
        &path,
        &[
            ("Tus-Resumable", "1.0.0".into()),
            ("Upload-Offset", "0".into()),
            ("Content-Type", "application/offset+octet-stream".into()),
        ],
        data.len(),
    )
    .unwrap();
    // About 6 s of body: two lease lifetimes.
    support::proc::send_in_pieces(&mut s, &data, 8, std::time::Duration::from_millis(750)).unwrap();
    let r = support::proc::read_response(&mut s).unwrap();
    assert_eq!(r.status, 204, "a long PATCH: {}", r.text());
    assert_eq!(r.header("upload-offset"), Some("4194304"));
    assert_same_bytes(&download_path(srv.port, &path), &data, "long PATCH");
    srv.kill();
}
