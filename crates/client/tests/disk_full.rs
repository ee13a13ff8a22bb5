//! A real full disk: the data directory on an 8 MiB tmpfs (the test mounts it, as root — the
//! test command runs as root on a fresh machine), a 16 MiB upload. The server answers 507
//! with the out-of-space sentence, `/healthz` turns 503, `ferry upload` stops at once (well
//! inside `--retry-for`) saying the server is out of space and exits non-zero; after the
//! file system grows, the same command resumes and the download is identical.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::proc::{Server, request};
use support::source;

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, size: &str) -> Mount {
    std::fs::create_dir_all(dir).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .expect("running mount");
    assert!(
        st.success(),
        "mounting a tmpfs failed: this test needs root (the test command runs as root)"
    );
    Mount(dir.to_owned())
}

#[test]
fn a_full_disk_answers_507_the_cli_stops_and_resumes_once_space_is_freed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::new(tmp.path(), &[]);
    let _mount = mount_tmpfs(&srv.data_dir, "8m");
    srv.spawn();
    let base = format!("http://127.0.0.1:{}", srv.port);
    let data = source(16 << 20, 51);
    let file = tmp.path().join("big.bin");
    std::fs::write(&file, &data).unwrap();
    let state = tmp.path().join("state.json");
    let upload = || {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["upload"])
            .arg(&file)
            .args([
                "--server",
                &base,
                "--retry-for",
                "60s",
                "--json",
                "--parallel",
                "1",
            ])
            .arg("--state-file")
            .arg(&state)
            .output()
            .expect("running ferry upload")
    };
    let started = Instant::now();
    let out = upload();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "the upload cannot fit: {stdout}");
    assert!(
        took < Duration::from_secs(30),
        "507 is not retried blindly: the CLI took {took:?}"
    );
    assert!(
        stderr.contains("out of disk space"),
        "the CLI says why: {stderr}\n{stdout}"
    );
    let h = request(srv.port, "GET", "/healthz", &[], b"");
    assert_eq!(h.status, 503, "{}", h.text());
    assert!(h.text().contains("out of disk space"));

    // More space: the same command resumes and finishes.
    let st = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&srv.data_dir)
        .status()
        .unwrap();
    assert!(st.success());
    let out = upload();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(request(srv.port, "GET", "/healthz", &[], b"").status, 200);
    let url = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "result")
        .and_then(|v| v["url"].as_str().map(str::to_owned))
        .expect("a result line with the URL");
    let path = support::proc::path_of(&url).to_owned();
    let got = request(srv.port, "GET", &path, &[], b"");
    assert_eq!(got.status, 200);
    support::assert_same_bytes(&got.body, &data, "download after the disk was full");
    srv.kill();
}
