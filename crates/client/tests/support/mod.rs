//! Helpers shared by the binary's end-to-end tests (`cli.rs`, `crash.rs`,
//! `crash_points.rs`).
#![allow(dead_code)]

pub mod chunked;
pub mod pg;
pub mod proc;
pub mod s3;

use std::net::TcpListener;
use std::sync::Mutex;

/// `len` deterministic pseudo-random bytes (splitmix64 stream seeded by `seed`).
pub fn source(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut chunks = out.chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&next().to_le_bytes());
    }
    let rest = chunks.into_remainder();
    let last = next().to_le_bytes();
    let n = rest.len();
    rest.copy_from_slice(&last[..n]);
    out
}

/// Byte equality with a readable failure (lengths and first differing offset, not 64 MiB of
/// debug output).
#[track_caller]
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: downloaded {} bytes, source has {}; first difference at byte {first}",
        got.len(),
        want.len()
    );
}

/// A port nobody listens on: bind `127.0.0.1:0`, take the port, drop the listener. Ports are
/// never handed out twice in this process, so concurrent tests cannot pick the same one.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The URL of `ferry upload --json`'s result line.
#[track_caller]
pub fn result_url(stdout: &str) -> String {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "result")
        .and_then(|v| v["url"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no result URL in:\n{stdout}"))
}

/// Bytes allocated under `dir` (st_blocks × 512), every file and directory, recursively.
pub fn allocated(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += meta.blocks() * 512;
        if meta.is_dir() {
            total += allocated(&entry.path());
        }
    }
    total
}

/// `ferry upload FILE --server http://127.0.0.1:PORT -q` run in `root` with its own state
/// file and `extra` arguments, retrying for `retry_for`; asserts success and returns stdout
/// (the file's URL).
#[track_caller]
pub fn cli_upload(
    root: &std::path::Path,
    port: u16,
    file: &str,
    retry_for: &str,
    extra: &[&str],
) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "upload",
            file,
            "--server",
            &format!("http://127.0.0.1:{port}"),
        ])
        .args(["-q", "--retry-for", retry_for, "--state-file"])
        .arg(root.join(format!("{file}.state.json")))
        .args(extra)
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "upload of {file}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `ferry upload big.bin --protocol tus --chunk-size 1MiB --json` in `dir` against
/// `127.0.0.1:port`, retrying for `retry_for`, its JSON lines on a piped stdout: the CLI
/// riding out an outage under it.
pub fn spawn_tus_upload(dir: &std::path::Path, port: u16, retry_for: &str) -> std::process::Child {
    use std::process::Stdio;
    std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["upload", "big.bin", "--server"])
        .arg(format!("http://127.0.0.1:{port}"))
        .args([
            "--protocol",
            "tus",
            "--chunk-size",
            "1MiB",
            "--retry-for",
            retry_for,
        ])
        .args(["--json", "--state-file"])
        .arg(dir.join("state.json"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning ferry upload")
}
