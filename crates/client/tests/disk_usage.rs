//! One copy of every file: after a parallel `ferry upload` of a 300 MiB file the server's data
//! directory holds at most 1.05 × 300 MiB (counted in allocated blocks, so sparse files and
//! leftovers both count), with the default protocol (byte ranges into one upload), after an
//! interrupted and resumed run, and with tus concatenation (whose parts are released once
//! the final is assembled). The downloads are checked byte for byte and against the ETag.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use support::proc::Server;
use support::{allocated, assert_same_bytes, result_url, source};

const SIZE: usize = 300 << 20;

fn upload_cmd(root: &Path, srv: &Server, file: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.arg("upload")
        .arg(file)
        .args(["--server", &format!("http://127.0.0.1:{}", srv.port)])
        .args(["--parallel", "4", "--json", "--retry-for", "60s"])
        .arg("--state-file")
        .arg(root.join("state.json"))
        .args(extra)
        .current_dir(root);
    cmd
}

/// Runs an upload to the end; `(URL, bytes the server held when it started)`.
fn run_upload(root: &Path, srv: &Server, file: &Path, extra: &[&str]) -> (String, u64) {
    let out = upload_cmd(root, srv, file, extra).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "upload failed: {}\n{stdout}\n{}\nserver:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        srv.log_tail()
    );
    let resumed = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "start")
        .and_then(|v| v["resumed_from"].as_u64())
        .unwrap_or_else(|| panic!("no start event in:\n{stdout}"));
    (result_url(&stdout), resumed)
}

/// Downloads `url` with `ferry download` (which checks the ETag digest) and compares.
fn assert_downloads(root: &Path, url: &str, want: &[u8]) {
    let dest = root.join("down.bin");
    let _ = std::fs::remove_file(&dest);
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["download", url, "--json", "-o"])
        .arg(&dest)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "download failed:\n{stdout}");
    assert!(
        stdout.contains("verified: the blake3 digest matches"),
        "the download was not verified against a content digest:\n{stdout}"
    );
    assert_same_bytes(&std::fs::read(&dest).unwrap(), want, url);
}

#[track_caller]
fn assert_one_copy(srv: &Server, what: &str) {
    let used = allocated(&srv.data_dir);
    let limit = SIZE as f64 * 1.05;
    assert!(
        (used as f64) <= limit,
        "{what}: the data directory holds {used} bytes, more than 1.05 × {SIZE}"
    );
    assert!(
        used >= SIZE as u64,
        "{what}: the data directory holds only {used} bytes"
    );
}

#[test]
fn a_default_parallel_upload_costs_the_file_size_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let srv = Server::start(root);
    let data = source(SIZE, 71);
    let file = root.join("big.bin");
    std::fs::write(&file, &data).unwrap();
    let (url, _) = run_upload(root, &srv, &file, &[]);
    assert_one_copy(&srv, "after a default upload");
    assert_downloads(root, &url, &data);
}

#[test]
fn an_interrupted_and_resumed_upload_costs_the_file_size_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let srv = Server::start(root);
    let data = source(SIZE, 72);
    let file = root.join("big.bin");
    std::fs::write(&file, &data).unwrap();

    // Kill the client once the server holds about a third of the file.
    let mut child = upload_cmd(root, &srv, &file, &["--chunk-size", "4MiB"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut reached = false;
    for line in lines {
        let v: serde_json::Value = match serde_json::from_str(&line.unwrap()) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if v["event"] == "progress" && v["bytes"].as_u64().unwrap_or(0) > SIZE as u64 / 3 {
            reached = true;
            break;
        }
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        reached,
        "the upload ended ({status}) before a third was sent"
    );

    let (url, resumed) = run_upload(root, &srv, &file, &[]);
    assert!(
        resumed >= SIZE as u64 / 4,
        "the second run started from {resumed} bytes, not from what the first one sent"
    );
    assert_one_copy(&srv, "after an interrupted and resumed upload");
    assert_downloads(root, &url, &data);
}

#[test]
fn a_tus_concatenation_releases_its_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let srv = Server::start(root);
    let data = source(SIZE, 73);
    let file = root.join("big.bin");
    std::fs::write(&file, &data).unwrap();
    let (url, _) = run_upload(root, &srv, &file, &["--protocol", "tus"]);
    assert_one_copy(&srv, "after a tus upload in 4 concatenated parts");
    assert_downloads(root, &url, &data);
}
