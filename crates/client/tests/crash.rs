//! Crash tests (SPEC §4): the real `ferry serve` binary is killed with SIGKILL in the middle
//! of uploads and restarted on the same data directory.
//!
//! Every test owns a temporary data directory and a free port, and speaks HTTP/1.1 over a raw
//! `TcpStream` (`Connection: close`) so that it decides exactly which bytes have reached the
//! server when the kill lands. The rules checked after every restart:
//!
//! - acknowledged bytes are never lost: the held count is at least what a 2xx reported;
//! - nothing is invented: the held count is at most what the client wrote;
//! - resuming from the held count finishes the upload, and the download equals the source,
//!   never a partial file.

mod support;

use support::chunked::Chunked;
use support::proc::*;
use support::{assert_same_bytes, free_port, source};

use std::fs::OpenOptions;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------------------
// Byte-offset dialect (SPEC §2.2)
// ---------------------------------------------------------------------------------------

fn offset_headers(file_id: &str, start: usize, size: usize) -> Vec<(&'static str, String)> {
    vec![
        ("X-File-Id", file_id.to_owned()),
        ("X-Start-Byte", start.to_string()),
        ("X-File-Size", size.to_string()),
        ("Content-Type", "application/octet-stream".to_owned()),
    ]
}

/// `GET /api/upload/status`: the bytes the server holds.
#[track_caller]
fn held(port: u16, file_id: &str) -> usize {
    let r = request(
        port,
        "GET",
        "/api/upload/status",
        &[("X-File-Id", file_id.to_owned())],
        b"",
    );
    assert_eq!(r.status, 200, "status: {}", r.text());
    r.text()
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("status body is not a number: {:?}", r.text()))
}

/// A complete byte-offset write of `body` at `start`.
#[track_caller]
fn post_offset(port: u16, file_id: &str, start: usize, size: usize, body: &[u8]) -> Resp {
    request(
        port,
        "POST",
        "/api/upload",
        &offset_headers(file_id, start, size),
        body,
    )
}

/// Starts a byte-offset write at `start` declaring `content_length` bytes; the caller sends
/// (some of) the body.
fn open_offset(
    port: u16,
    file_id: &str,
    start: usize,
    size: usize,
    content_length: usize,
) -> TcpStream {
    let mut s = connect(port).expect("connecting");
    write_head(
        &mut s,
        port,
        "POST",
        "/api/upload",
        &offset_headers(file_id, start, size),
        content_length,
    )
    .expect("writing the request head");
    s
}

/// Resumes from the held count with the rest of `src` and returns the finished file's URL.
#[track_caller]
fn finish_offset(port: u16, file_id: &str, src: &[u8]) -> String {
    let h = held(port, file_id);
    assert!(
        h <= src.len(),
        "held {h} is past the file size {}",
        src.len()
    );
    let r = post_offset(port, file_id, h, src.len(), &src[h..]);
    assert_eq!(r.status, 200, "resuming at {h}: {}", r.text());
    let j = r.json();
    assert_eq!(j["complete"], true, "resume at {h} did not complete: {j}");
    assert_eq!(j["offset"].as_u64(), Some(src.len() as u64), "{j}");
    let url = j["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no url in {j}"))
        .to_owned();
    assert!(path_of(&url).starts_with("/files/"), "url {url}");
    url
}

#[test]
fn offset_kill_mid_body_never_reports_more_than_sent_and_resume_gives_identical_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::start(tmp.path());
    let src = source(32 * MIB, 1);
    let id = "mid-body.bin-33554432-1700000000";

    let mut s = open_offset(srv.port, id, 0, src.len(), src.len());
    let sent = src.len() * 4 / 10;
    send_in_pieces(&mut s, &src[..sent], 8, Duration::from_millis(25)).expect("sending 40%");
    sleep(Duration::from_millis(300));
    // The kill lands while the request is still open (the body is unfinished).
    srv.crash_and_restart();
    drop(s);

    let h = held(srv.port, id);
    assert!(
        h <= sent,
        "after the crash the server reports {h} bytes, but only {sent} were sent"
    );

    let url = finish_offset(srv.port, id, &src);
    assert_same_bytes(
        &download(srv.port, &url),
        &src,
        "download after mid-body crash",
    );
}

#[test]
fn offset_acknowledged_bytes_survive_sigkill_right_after_the_response() {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::start(tmp.path());
    let src = source(24 * MIB + 777, 2);
    let id = "acked.bin-25166601-1700000000";

    let part = 10 * MIB + 12_345;
    let r = post_offset(srv.port, id, 0, src.len(), &src[..part]);
    assert_eq!(r.status, 200, "{}", r.text());
    let acked = r.json()["offset"].as_u64().expect("offset in the answer") as usize;
    assert_eq!(
        acked, part,
        "a complete request of {part} bytes is acknowledged whole"
    );
    srv.crash_and_restart();

    let h = held(srv.port, id);
    assert_eq!(
        h, acked,
        "status after SIGKILL must equal the acknowledged offset"
    );

    let url = finish_offset(srv.port, id, &src);
    assert_same_bytes(
        &download(srv.port, &url),
        &src,
        "download after crash post-ack",
    );
}

#[test]
fn offset_body_cut_off_by_the_client_keeps_what_arrived_across_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::start(tmp.path());
    let src = source(16 * MIB + 3, 3);
    let id = "cut-off.bin-16777219-1700000000";

    let mut s = open_offset(srv.port, id, 0, src.len(), src.len());
    let sent = 6 * MIB + 4321;
    send_in_pieces(&mut s, &src[..sent], 4, Duration::from_millis(20)).expect("sending");
    // The client goes away mid-body: the server keeps what arrived (like tusd).
    s.shutdown(Shutdown::Write).expect("shutdown");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = read_response(&mut s); // a 4xx, a reset or nothing; any is fine
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut h = held(srv.port, id);
    while h != sent && Instant::now() < deadline {
        sleep(Duration::from_millis(20));
        h = held(srv.port, id);
    }
    assert_eq!(
        h, sent,
        "every byte that arrived before the cut-off is kept"
    );

    srv.crash_and_restart();
    assert_eq!(
        held(srv.port, id),
        sent,
        "kept bytes are reported again after SIGKILL"
    );

    let url = finish_offset(srv.port, id, &src);
    assert_same_bytes(
        &download(srv.port, &url),
        &src,
        "download after cut-off and crash",
    );
}

#[test]
fn offset_repeated_kills_keep_status_between_acknowledged_and_sent_then_finish_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::start(tmp.path());
    let src = source(48 * MIB + 101, 4);
    let id = "repeated.bin-50331749-1700000000";
    let mut acked = 0usize; // highest offset a 2xx reported
    let mut sent = 0usize; // highest offset the client wrote on the wire

    // Checks the invariant after a crash and returns where to resume.
    let check = |srv: &Server, acked: usize, sent: usize, cycle: &str| -> usize {
        let h = held(srv.port, id);
        assert!(
            acked <= h && h <= sent,
            "{cycle}: status {h} must lie between acknowledged {acked} and sent {sent}"
        );
        h
    };

    // Cycle 1: killed mid-body after the server had time to write what arrived.
    let mut h = 0;
    let mut s = open_offset(srv.port, id, h, src.len(), src.len() - h);
    let n = (src.len() - h) * 3 / 10;
    send_in_pieces(&mut s, &src[h..h + n], 6, Duration::from_millis(20)).unwrap();
    sent = sent.max(h + n);
    sleep(Duration::from_millis(300));
    srv.crash_and_restart();
    drop(s);
    h = check(&srv, acked, sent, "cycle 1 (mid-body, after a pause)");

    // Cycle 2: an acknowledged write, then killed at once while a second write streams in.
    let part = 8 * MIB + 5;
    let r = post_offset(srv.port, id, h, src.len(), &src[h..h + part]);
    assert_eq!(r.status, 200, "{}", r.text());
    acked = r.json()["offset"].as_u64().unwrap() as usize;
    assert_eq!(acked, h + part);
    sent = sent.max(acked);
    h = acked;
    let mut s = open_offset(srv.port, id, h, src.len(), src.len() - h);
    let n = MIB + 17;
    s.write_all(&src[h..h + n]).unwrap();
    sent = sent.max(h + n);
    srv.crash_and_restart();
    drop(s);
    h = check(
        &srv,
        acked,
        sent,
        "cycle 2 (right after an ack, next body just started)",
    );

    // Cycle 3: killed immediately after the last write of a streamed half, no pause.
    let mut s = open_offset(srv.port, id, h, src.len(), src.len() - h);
    let n = (src.len() - h) / 2;
    send_in_pieces(&mut s, &src[h..h + n], 8, Duration::from_millis(15)).unwrap();
    sent = sent.max(h + n);
    srv.crash_and_restart();
    drop(s);
    h = check(&srv, acked, sent, "cycle 3 (mid-body, no pause)");
    let _ = h;

    let url = finish_offset(srv.port, id, &src);
    assert_same_bytes(
        &download(srv.port, &url),
        &src,
        "download after three crashes",
    );
}

/// Streams the completing request (`src[from..]`) and returns with it still open, right after
/// its last byte was written.
fn send_tail(port: u16, file_id: &str, src: &[u8], from: usize) -> TcpStream {
    let mut s = open_offset(port, file_id, from, src.len(), src.len() - from);
    send_in_pieces(&mut s, &src[from..], 4, Duration::from_millis(5)).expect("sending the tail");
    s
}

/// Polls `probe` until it says yes; false when `deadline` passed first.
fn poll_until(deadline: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if probe() {
            return true;
        }
        sleep(Duration::from_millis(1));
    }
    false
}

#[test]
fn offset_kill_during_completion_is_complete_or_resumable_and_never_serves_partial_content() {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::start(tmp.path());
    let src = source(64 * MIB, 5);
    let size = src.len();
    let id = "completion.bin-67108864-1700000000";

    // Everything but the tail, acknowledged.
    let tail = 8 * MIB;
    let head = size - tail;
    let r = post_offset(srv.port, id, 0, size, &src[..head]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["offset"].as_u64(), Some(head as u64));

    // Crash 1: SIGKILL right after the last byte of the completing request was written,
    // without waiting for the answer (the server is receiving, syncing, hashing, publishing
    // or answering).
    let s = send_tail(srv.port, id, &src, head);
    srv.crash_and_restart();
    drop(s);
    let h1 = held(srv.port, id);
    assert!(
        (head..=size).contains(&h1),
        "after crash 1 status is {h1}: below the acknowledged {head} or past the size {size}"
    );

    // Crash 2: resend the missing tail and SIGKILL the moment the server reports every byte
    // held, i.e. between the metadata commit and the end of completion (hash finish, rename,
    // completion record) or while it answers. On restart recovery must finish the upload.
    let mut h2 = h1;
    if h1 < size {
        let s = send_tail(srv.port, id, &src, h1);
        let all_held = poll_until(Duration::from_secs(20), || held(srv.port, id) == size);
        srv.crash_and_restart();
        drop(s);
        assert!(
            all_held,
            "the completing request never made every byte held"
        );
        h2 = held(srv.port, id);
        assert_eq!(
            h2, size,
            "bytes reported held before SIGKILL are held after it"
        );
    }
    eprintln!(
        "completion crashes: status after crash 1 = {h1}, after crash 2 = {h2}, size {size}; \
         recovery finished it on the last start: {}",
        srv.recovered_on_start()
    );

    // Complete now (recovery finished it: an empty resume at the size returns the URL), or
    // resumable from the held count; the download is the whole source either way.
    let url = finish_offset(srv.port, id, &src);
    assert_same_bytes(
        &download(srv.port, &url),
        &src,
        "download after crashes during completion",
    );

    // A finished file stays finished and whole across a further crash.
    srv.crash_and_restart();
    assert_eq!(held(srv.port, id), size);
    assert_same_bytes(
        &download(srv.port, &url),
        &src,
        "download after a further restart",
    );
}

#[test]
fn chunk_handshake_after_sigkill_lists_exactly_the_unacknowledged_chunks_and_finishes_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::start(tmp.path());
    let src = source(16 * MIB + 123_456, 6);
    let c = Chunked::new(&src, MIB);
    let n = c.ids.len();
    assert_eq!(n, 17);
    let all: Vec<usize> = (0..n).collect();

    assert_eq!(
        c.handshake(srv.port),
        c.missing(&all),
        "a new upload misses every chunk"
    );

    // Chunks 0..6 acknowledged, each answer listing the rest.
    for i in 0..6 {
        assert_eq!(
            c.send(srv.port, &src, i),
            c.missing(&all[i + 1..]),
            "after chunk {i}"
        );
    }
    // Chunk 6 cut off by the kill, halfway through its bytes.
    let s = c.send_partial(srv.port, &src, 6, MIB / 2);
    sleep(Duration::from_millis(300));
    srv.crash_and_restart();
    drop(s);
    assert_eq!(
        c.handshake(srv.port),
        c.missing(&all[6..]),
        "after a kill mid-chunk 6: acknowledged chunks are not listed, the cut one is"
    );

    // The last chunk out of order (its place is known only from the chunk size), then
    // chunks 6..10, killed right after the last acknowledgement.
    let last = n - 1;
    let want: Vec<usize> = (6..last).collect();
    assert_eq!(
        c.send(srv.port, &src, last),
        c.missing(&want),
        "after the last chunk"
    );
    for i in 6..10 {
        let want: Vec<usize> = (i + 1..last).collect();
        assert_eq!(
            c.send(srv.port, &src, i),
            c.missing(&want),
            "after chunk {i}"
        );
    }
    srv.crash_and_restart();
    let want: Vec<usize> = (10..last).collect();
    assert_eq!(
        c.handshake(srv.port),
        c.missing(&want),
        "after a kill right after acknowledgements: exactly chunks 10..{last} are missing"
    );

    // One more cut-off chunk, killed without a pause.
    let s = c.send_partial(srv.port, &src, 10, MIB - 1);
    srv.crash_and_restart();
    drop(s);
    assert_eq!(
        c.handshake(srv.port),
        c.missing(&want),
        "a cut-off chunk is never held"
    );

    // All but the completing chunk.
    let final_chunk = last - 1;
    for i in 10..final_chunk {
        let want: Vec<usize> = (i + 1..=final_chunk).collect();
        assert_eq!(
            c.send(srv.port, &src, i),
            c.missing(&want),
            "after chunk {i}"
        );
    }
    // The completing chunk, whole; SIGKILL as soon as the handshake no longer lists it (its
    // bytes are committed), i.e. while the server verifies the file digest, publishes the file
    // or answers. On restart recovery must finish the upload: the handshake answers the URL.
    let mut s = c.send_partial(srv.port, &src, final_chunk, c.chunks[final_chunk].len());
    s.write_all(&c.envelope(final_chunk).1)
        .expect("closing the multipart body");
    let committed = poll_until(Duration::from_secs(20), || {
        c.handshake(srv.port) != c.missing(&[final_chunk])
    });
    srv.crash_and_restart();
    drop(s);
    assert!(committed, "the completing chunk was never taken");
    eprintln!(
        "chunk completion crash: recovery finished it on restart: {}",
        srv.recovered_on_start()
    );
    let data = c.handshake(srv.port);
    let url = data
        .as_str()
        .unwrap_or_else(|| {
            panic!("after a crash during completion the handshake must answer the URL, got {data}")
        })
        .to_owned();
    let want_path = format!("/upload/{}.bin", c.file_id);
    assert_eq!(path_of(&url), want_path);
    assert_same_bytes(&download(srv.port, &url), &src, "chunk-dialect download");

    // Finished files survive a crash too, and a new handshake is an instant upload.
    srv.crash_and_restart();
    let again = c.handshake(srv.port);
    assert_eq!(
        again.as_str().map(path_of),
        Some(want_path.as_str()),
        "instant upload: {again}"
    );
    assert_same_bytes(
        &download(srv.port, &want_path),
        &src,
        "download after a further restart",
    );
}

// ---------------------------------------------------------------------------------------
// Graceful shutdown and configuration (SPEC §1, §6, §7)
// ---------------------------------------------------------------------------------------

/// Polls `child` until it exits; `None` when `within` passed first.
fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().expect("polling the child") {
            return Some(st);
        }
        if Instant::now() > end {
            return None;
        }
        sleep(Duration::from_millis(10));
    }
}

/// Whether the server has taken the byte-offset request for `file_id`: the handler records
/// the upload (and the status answer then carries its declared size) before it reads the body.
fn upload_recorded(port: u16, file_id: &str) -> bool {
    try_request(
        port,
        "GET",
        "/api/upload/status",
        &[("X-File-Id", file_id.to_owned())],
        b"",
    )
    .is_ok_and(|r| r.status == 200 && r.header("x-file-size").is_some())
}

#[test]
fn sigterm_lets_an_in_flight_body_finish_then_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::start(tmp.path());
    let src = source(8 * MIB + 3, 7);
    let id = "sigterm.bin-8388611-1700000000";
    let half = src.len() / 2;

    let mut s = open_offset(srv.port, id, 0, src.len(), src.len());
    send_in_pieces(&mut s, &src[..half], 4, Duration::from_millis(5)).expect("sending half");
    assert!(
        poll_until(Duration::from_secs(10), || upload_recorded(srv.port, id)),
        "the upload request never reached its handler"
    );
    sleep(Duration::from_millis(100));

    let pid = srv.child.as_ref().expect("running").id();
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(kill.success(), "kill -TERM {pid}: {kill}");
    // The signal was handled once the listener is gone: new connections are refused while
    // the request in flight goes on.
    assert!(
        poll_until(Duration::from_secs(5), || connect(srv.port).is_err()),
        "still accepting connections 5 s after SIGTERM"
    );
    assert!(
        srv.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "ferry exited with a request in flight"
    );

    send_in_pieces(&mut s, &src[half..], 4, Duration::from_millis(5)).expect("sending the rest");
    let r = read_response(&mut s).expect("an answer to the request in flight");
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["complete"], true, "{j}");
    assert_eq!(j["offset"].as_u64(), Some(src.len() as u64), "{j}");
    let url = j["url"].as_str().expect("url").to_owned();
    drop(s);

    let mut child = srv.child.take().expect("running");
    let status = wait_exit(&mut child, Duration::from_secs(10)).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "ferry did not exit within 10 s of SIGTERM; log:\n{}",
            srv.log_tail()
        )
    });
    assert!(
        status.success(),
        "ferry exits cleanly after SIGTERM, got {status}; log:\n{}",
        srv.log_tail()
    );

    srv.spawn();
    assert_eq!(held(srv.port, id), src.len());
    assert_same_bytes(
        &download(srv.port, &url),
        &src,
        "download after a graceful stop and restart",
    );
}

/// A `ferry serve` started with explicit arguments and environment; killed on drop.
struct Ferry {
    child: Child,
    log: PathBuf,
}

impl Ferry {
    /// Spawns `ferry serve ARGS` in `cwd` with `env` on top of an environment cleared of
    /// every `FERRY_*` variable, output appended to `log`.
    fn spawn(cwd: &Path, args: &[&str], env: &[(&str, &str)], log: &Path) -> Ferry {
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("opening the log");
        writeln!(
            out,
            "===== ferry serve {} (env {env:?}) =====",
            args.join(" ")
        )
        .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.arg("serve")
            .args(args)
            .current_dir(cwd)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("FERRY_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Ferry {
            child: cmd.spawn().expect("spawning the ferry binary"),
            log: log.to_owned(),
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `/healthz` on `127.0.0.1:port`.
    #[track_caller]
    fn wait_healthy(&mut self, port: u16) {
        let ok = poll_until(START_DEADLINE, || {
            if let Some(st) = self.child.try_wait().ok().flatten() {
                panic!(
                    "ferry exited during start-up ({st}); log:\n{}",
                    self.log_text()
                );
            }
            try_request(port, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
        });
        assert!(
            ok,
            "ferry did not answer /healthz on port {port}; log:\n{}",
            self.log_text()
        );
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `POST /api/upload` declaring a 2048-byte file with an empty body: only the size rule
/// decides the answer.
fn declare_2048(port: u16, file_id: &str) -> Resp {
    request(
        port,
        "POST",
        "/api/upload",
        &offset_headers(file_id, 0, 2048),
        b"",
    )
}

#[test]
fn config_file_and_environment_are_applied_with_flags_winning() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = root.join("data");
    let data_arg = data.to_str().unwrap();
    let log = root.join("server.log");
    let port1 = free_port();
    let port2 = free_port();
    let config = root.join("conf").join("ferry.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{port1}\"\nmax-upload-size = \"1KiB\"\n"),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let src = source(2048, 8);

    // The file alone: listen address and size limit come from it.
    {
        let mut f = Ferry::spawn(
            root,
            &["--config", config_arg, "--data-dir", data_arg],
            &[],
            &log,
        );
        f.wait_healthy(port1);
        let r = declare_2048(port1, "config-1.bin-2048-1");
        assert_eq!(
            r.status,
            413,
            "max-upload-size = 1KiB from the file: {}",
            r.text()
        );
        assert_eq!(
            held(port1, "config-1.bin-2048-1"),
            0,
            "a refused upload stores nothing"
        );
    }

    // The environment wins over the file.
    {
        let mut f = Ferry::spawn(
            root,
            &["--config", config_arg, "--data-dir", data_arg],
            &[("FERRY_MAX_UPLOAD_SIZE", "1MiB")],
            &log,
        );
        f.wait_healthy(port1);
        let r = post_offset(port1, "config-2.bin-2048-1", 0, src.len(), &src);
        assert_eq!(
            r.status,
            200,
            "FERRY_MAX_UPLOAD_SIZE=1MiB beats the file: {}",
            r.text()
        );
        assert_eq!(r.json()["complete"], true);
    }

    // A flag wins over the file; the file's other settings still apply.
    {
        let listen2 = format!("127.0.0.1:{port2}");
        let mut f = Ferry::spawn(
            root,
            &[
                "--config",
                config_arg,
                "--data-dir",
                data_arg,
                "--listen",
                &listen2,
            ],
            &[],
            &log,
        );
        f.wait_healthy(port2);
        assert!(
            connect(port1).is_err(),
            "--listen {listen2} beats the file's listen = 127.0.0.1:{port1}"
        );
        let r = declare_2048(port2, "config-3.bin-2048-1");
        assert_eq!(
            r.status,
            413,
            "the file's size limit still applies: {}",
            r.text()
        );
    }
}

#[test]
fn non_loopback_listen_without_tokens_is_refused_unless_insecure_no_auth() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = root.join("data");
    let data_arg = data.to_str().unwrap();
    let log = root.join("server.log");
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");

    let mut f = Ferry::spawn(
        root,
        &["--listen", &listen, "--data-dir", data_arg],
        &[],
        &log,
    );
    let status = wait_exit(&mut f.child, START_DEADLINE)
        .unwrap_or_else(|| panic!("ferry serve --listen {listen} without tokens kept running"));
    assert!(
        !status.success(),
        "refusing must exit non-zero, got {status}"
    );
    let text = f.log_text();
    assert!(
        text.contains("--auth-token"),
        "the refusal names --auth-token:\n{text}"
    );
    drop(f);

    let mut f = Ferry::spawn(
        root,
        &[
            "--listen",
            &listen,
            "--data-dir",
            data_arg,
            "--insecure-no-auth",
        ],
        &[],
        &log,
    );
    f.wait_healthy(port);
}

// ---------------------------------------------------------------------------------------
// tus 1.0 (SPEC §2.3)
// ---------------------------------------------------------------------------------------

fn tus_headers(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut h = vec![("Tus-Resumable", "1.0.0".to_owned())];
    h.extend_from_slice(extra);
    h
}

/// `HEAD /files/<id>` → `Upload-Offset`.
#[track_caller]
fn tus_offset(port: u16, path: &str) -> usize {
    let r = request(port, "HEAD", path, &tus_headers(&[]), b"");
    assert_eq!(r.status, 200, "HEAD {path}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "HEAD {path}");
    r.header("upload-offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("HEAD {path}: no Upload-Offset"))
}

#[track_caller]
fn tus_patch(port: u16, path: &str, offset: usize, body: &[u8]) -> Resp {
    request(
        port,
        "PATCH",
        path,
        &tus_headers(&[
            ("Upload-Offset", offset.to_string()),
            ("Content-Type", "application/offset+octet-stream".to_owned()),
        ]),
        body,
    )
}

#[test]
fn tus_kill_mid_patch_head_reports_only_durable_bytes_and_the_client_resumes_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::start(tmp.path());
    let src = source(48 * MIB, 9);
    let created = request(
        srv.port,
        "POST",
        "/files/",
        &tus_headers(&[
            ("Upload-Length", src.len().to_string()),
            ("Upload-Metadata", "filename Y3Jhc2guYmlu".to_owned()),
        ]),
        b"",
    );
    assert_eq!(created.status, 201, "POST /files/: {}", created.text());
    let path = path_of(created.header("location").expect("Location")).to_owned();

    // An acknowledged first PATCH.
    let acked = 8 * MIB;
    let r = tus_patch(srv.port, &path, 0, &src[..acked]);
    assert_eq!(r.status, 204, "first PATCH: {}", r.text());

    // A second PATCH for the rest, killed while its body streams.
    let mut s = connect(srv.port).expect("connect");
    write_head(
        &mut s,
        srv.port,
        "PATCH",
        &path,
        &tus_headers(&[
            ("Upload-Offset", acked.to_string()),
            ("Content-Type", "application/offset+octet-stream".to_owned()),
        ]),
        src.len() - acked,
    )
    .expect("PATCH head");
    let sent = acked + 16 * MIB;
    send_in_pieces(&mut s, &src[acked..sent], 8, Duration::from_millis(20)).expect("PATCH body");
    sleep(Duration::from_millis(300));
    srv.crash_and_restart();
    drop(s);

    // HEAD: never less than acknowledged, never more than sent.
    let held = tus_offset(srv.port, &path);
    assert!(
        (acked..=sent).contains(&held),
        "after kill -9 HEAD reports {held}; acknowledged {acked}, sent {sent}"
    );

    // The client resumes from HEAD, as tus clients do, and finishes.
    let r = tus_patch(srv.port, &path, held, &src[held..]);
    assert_eq!(r.status, 204, "resuming PATCH: {}", r.text());
    assert_eq!(
        r.header("upload-offset").and_then(|v| v.parse().ok()),
        Some(src.len())
    );
    assert_same_bytes(
        &download(srv.port, &path),
        &src,
        "tus download after a crash mid-PATCH",
    );
}
