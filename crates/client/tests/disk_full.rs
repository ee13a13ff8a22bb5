//! A real full disk: the data directory on an 8 MiB tmpfs (the test mounts it, as root — the
//! test command runs as root on a fresh machine), a 16 MiB upload. The server answers 507
//! with the out-of-space sentence, `ferry upload` stops at once (well
//! inside `--retry-for`) saying the server is out of space and exits non-zero; after the
//! file system grows, the same command resumes and the download is identical.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::proc::{Server, request};
use support::{allocated, source};

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
    let url = support::result_url(&String::from_utf8_lossy(&out.stdout));
    let path = support::proc::path_of(&url).to_owned();
    let got = request(srv.port, "GET", &path, &[], b"");
    assert_eq!(got.status, 200);
    support::assert_same_bytes(&got.body, &data, "download after the disk was full");
    srv.kill();
}

#[test]
fn a_request_refused_for_lack_of_space_gives_its_bytes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::new(tmp.path(), &[]);
    let _mount = mount_tmpfs(&srv.data_dir, "8m");
    srv.spawn();
    let body = source(16 << 20, 52);
    // One raw append of 16 MiB, and one range write with a body digest, as ferry upload
    // sends them: neither fits.
    for (id, extra) in [
        ("append.bin", ("X-Start-Byte", "0".to_owned())),
        (
            "range.bin",
            (
                "Content-Range",
                format!("bytes 0-{}/{}", body.len() - 1, body.len()),
            ),
        ),
    ] {
        let h = [
            ("X-File-Id", id.to_owned()),
            ("X-File-Size", body.len().to_string()),
            extra,
        ];
        // The server answers before the body is all sent: write it from another thread and
        // read the answer meanwhile (the write then fails with a broken pipe, as it should).
        let mut s = support::proc::connect(srv.port).unwrap();
        support::proc::write_head(&mut s, srv.port, "POST", "/api/upload", &h, body.len()).unwrap();
        let mut w = s.try_clone().unwrap();
        let sending = body.clone();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let _ = w.write_all(&sending);
        });
        let r = support::proc::read_response(&mut s).unwrap();
        drop(s);
        writer.join().unwrap();
        assert_eq!(r.status, 507, "{id}: {}", r.text());
        let partial = srv.data_dir.join("files/partial");
        let used = allocated(&partial);
        assert!(
            used <= 64 << 10,
            "{id}: the refused request left {used} bytes allocated in {}",
            partial.display()
        );
        let s = request(
            srv.port,
            "GET",
            "/api/upload/status",
            &[("X-File-Id", id.to_owned())],
            b"",
        );
        assert_eq!(
            s.text(),
            "0",
            "{id}: nothing was acknowledged, nothing is held"
        );
    }
    // Below 1 MiB free (no --min-free-space): degraded, with the reason, until space is
    // freed.
    let filler = srv.data_dir.join("filler");
    let free = || {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&srv.data_dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().nth(1).unwrap().trim().parse::<u64>().unwrap()
    };
    std::fs::write(&filler, vec![1u8; (free() - (256 << 10)) as usize]).unwrap();
    let h = request(srv.port, "GET", "/healthz", &[], b"");
    assert_eq!(h.status, 503, "{}", h.text());
    assert!(h.text().contains("out of disk space"), "{}", h.text());
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(request(srv.port, "GET", "/healthz", &[], b"").status, 200);
    srv.kill();
}
