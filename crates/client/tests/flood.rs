//! The real `ferry serve` under a flood of hostile connections (SPEC §7), with the open-file
//! limit of a default Linux account (1024): hundreds of clients sending their heads at one
//! byte a second and hundreds sending their bodies at one byte a second must not keep
//! `/healthz` from answering quickly nor a normal upload from going through. And a SIGTERM
//! with a client gone silent mid-body: the server exits after its grace period, keeping the
//! bytes that arrived.

mod support;

use support::proc::*;
use support::{assert_same_bytes, free_port, source};

use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// Clients sending their request head at one byte a second.
const SLOW_HEADS: usize = 450;
/// Clients sending a byte-offset body at one byte a second. Each holds an upload file open
/// in the server as well as its socket: the server counts it two descriptors of the 896
/// (1024 minus the reserve of 128) it lets connections and requests use, so heads + 2 ×
/// bodies leave room for `/healthz` and the normal upload.
const SLOW_BODIES: usize = 200;
/// Connections opened on top once the flood was measured, each asking for `/healthz`: the
/// server has room for 896 − (450 + 2 × 200) = 46 of them and must answer the rest `503`
/// at once.
const EXTRA: usize = 300;
/// How long the flood lasts once every slow client is connected (under the 30 s default
/// head timeout, so none of them is dropped meanwhile).
const FLOOD: Duration = Duration::from_secs(12);

/// `ferry serve` started through `sh -c 'ulimit -n 1024 && exec ferry serve …'`, killed on
/// drop.
struct Limited {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Limited {
    fn start(root: &Path, nofile: u32) -> Limited {
        let port = free_port();
        let log = root.join("server.log");
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_ferry"))
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(root.join("data"))
            .current_dir(root)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawning sh -c 'ulimit … && exec ferry serve'");
        let mut s = Limited { child, port, log };
        let deadline = Instant::now() + START_DEADLINE;
        while !try_request(port, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200) {
            if let Some(st) = s.child.try_wait().unwrap() {
                panic!(
                    "ferry exited during start-up ({st}); log:\n{}",
                    s.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no /healthz within {START_DEADLINE:?}; log:\n{}",
                s.log_tail()
            );
            sleep(Duration::from_millis(20));
        }
        s
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The server's open descriptors (Linux `/proc`).
    fn open_fds(&self) -> Option<usize> {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .ok()
            .map(|d| d.count())
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("--- ferry server log (tail) ---\n{}", self.log_tail());
        }
    }
}

fn offset_headers(id: &str, start: usize, size: usize) -> Vec<(&'static str, String)> {
    vec![
        ("X-File-Id", id.to_owned()),
        ("X-Start-Byte", start.to_string()),
        ("X-File-Size", size.to_string()),
        ("Content-Type", "application/octet-stream".to_owned()),
    ]
}

/// `GET /api/upload/status`: (held bytes, whether the server has a record of the upload).
fn status(port: u16, id: &str) -> (usize, bool) {
    let r = request(
        port,
        "GET",
        "/api/upload/status",
        &[("X-File-Id", id.to_owned())],
        b"",
    );
    assert_eq!(r.status, 200, "status: {}", r.text());
    (
        r.text().trim().parse().expect("a number"),
        r.header("x-file-size").is_some(),
    )
}

fn median(sorted: &[Duration]) -> Duration {
    sorted[sorted.len() / 2]
}

#[test]
fn a_flood_of_slow_clients_leaves_healthz_and_uploads_working_at_1024_files() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = Limited::start(tmp.path(), 1024);
    let port = srv.port;
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", srv.child.id())).unwrap_or_default();
    if let Some(line) = limits.lines().find(|l| l.starts_with("Max open files")) {
        let soft: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(soft.get(3), Some(&"1024"), "{line}");
    }
    let idle_fds = srv.open_fds();

    // /healthz every 100 ms, from before the flood to its end.
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = try_request(port, "GET", "/healthz", &[], b"");
                let took = t.elapsed();
                match r {
                    Ok(r) => lat.push((r.status, took)),
                    Err(e) => panic!("/healthz failed after {took:?}: {e}"),
                }
                sleep(Duration::from_millis(100).saturating_sub(took));
            }
            lat
        })
    };

    // The slow clients, all under one thread writing a byte to each every second.
    let started = Instant::now();
    let mut slow: Vec<(TcpStream, Vec<u8>, usize)> = Vec::new();
    for i in 0..SLOW_HEADS {
        let s = connect(port).unwrap_or_else(|e| panic!("slow head {i}: {e}"));
        let head = format!(
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: {}\r\n\r\n",
            "a".repeat(200)
        );
        slow.push((s, head.into_bytes(), 0));
    }
    let heads_connected = started.elapsed();
    for i in 0..SLOW_BODIES {
        let mut s = connect(port).unwrap_or_else(|e| panic!("slow body {i}: {e}"));
        let id = format!("slow{i}.bin-1000-1700000000");
        write_head(
            &mut s,
            port,
            "POST",
            "/api/upload",
            &offset_headers(&id, 0, 1000),
            1000,
        )
        .unwrap();
        slow.push((s, source(1000, i as u64), 0));
    }
    let connected = started.elapsed();
    let dribbler = {
        let stop = stop.clone();
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (s, bytes, sent) in slow.iter_mut() {
                    if *sent < bytes.len() && s.write_all(&bytes[*sent..*sent + 1]).is_ok() {
                        *sent += 1;
                    }
                }
                sleep(Duration::from_secs(1));
            }
            slow
        })
    };

    // A normal client uploads 8 MiB meanwhile and gets it back.
    sleep(Duration::from_secs(1));
    let src = source(8 * MIB, 42);
    let id = "normal.bin-8388608-1700000000";
    let t = Instant::now();
    let r = request(
        port,
        "POST",
        "/api/upload",
        &offset_headers(id, 0, src.len()),
        &src,
    );
    let upload_took = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    let url = r.json()["url"].as_str().expect("url").to_owned();
    let t = Instant::now();
    assert_same_bytes(
        &download(port, &url),
        &src,
        "the upload made during the flood",
    );
    let download_took = t.elapsed();

    let peak_fds = srv.open_fds();
    sleep(FLOOD.saturating_sub(started.elapsed()));
    stop.store(true, Ordering::Relaxed);
    let lat = poller.join().expect("poller");
    let mut slow = dribbler.join().expect("dribbler");

    // Every slow client is still connected and being served: nothing was refused or dropped.
    let mut open = 0;
    for (s, _, _) in slow.iter_mut() {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        match std::io::Read::read(s, &mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => open += 1,
            _ => {}
        }
    }
    let (held, _) = status(port, "slow0.bin-1000-1700000000");

    let mut times: Vec<Duration> = lat.iter().map(|(_, d)| *d).collect();
    times.sort();
    let max = *times.last().expect("some polls");
    eprintln!(
        "flood: {SLOW_HEADS} slow heads connected in {heads_connected:?}, {SLOW_BODIES} slow \
         bodies by {connected:?}; \
         {} /healthz polls: median {:?}, max {max:?}; 8 MiB upload {upload_took:?}, download \
         {download_took:?}; server descriptors {idle_fds:?} idle, {peak_fds:?} in the flood \
         (limit 1024); {open}/{} slow clients still connected; a slow body had {held} bytes \
         committed (none until it ends)",
        lat.len(),
        median(&times),
        slow.len(),
    );
    assert!(lat.len() >= 50, "only {} polls", lat.len());
    for (i, (st, took)) in lat.iter().enumerate() {
        assert_eq!(*st, 200, "poll {i}");
        assert!(
            *took < Duration::from_secs(1),
            "poll {i} took {took:?} (max {max:?})"
        );
    }
    assert_eq!(
        open,
        slow.len(),
        "slow clients were disconnected under the cap"
    );

    // Past the cap: every connection is answered at once, 200 while there is room, then
    // 503 with Retry-After: 1; nobody is left waiting in the backlog.
    let mut extras = Vec::new();
    let (mut served, mut busy) = (0, 0);
    let mut slowest = Duration::ZERO;
    for i in 0..EXTRA {
        let t = Instant::now();
        let mut s = connect(port).unwrap_or_else(|e| panic!("extra {i}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let answer = s
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .and_then(|()| read_response(&mut s))
            .unwrap_or_else(|e| {
                panic!("extra connection {i} ({served} served, {busy} busy): no answer ({e})")
            });
        slowest = slowest.max(t.elapsed());
        match answer.status {
            200 => served += 1,
            503 => {
                assert_eq!(answer.header("retry-after"), Some("1"), "extra {i}");
                assert_eq!(answer.json()["error"], "server_busy", "extra {i}");
                busy += 1;
            }
            other => panic!("extra {i}: {other} {}", answer.text()),
        }
        extras.push(s);
    }
    let fds_at_cap = srv.open_fds();
    eprintln!(
        "past the cap: {EXTRA} more connections: {served} served, {busy} answered 503 \
         Retry-After: 1, slowest answer {slowest:?}; server descriptors {fds_at_cap:?}"
    );
    assert!(
        (40..=46).contains(&served),
        "{served} extra connections served, want the 46 the budget has room for"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "an answer took {slowest:?}"
    );
    assert!(
        fds_at_cap.is_none_or(|n| n < 1024 - 64),
        "{fds_at_cap:?} descriptors open"
    );
    // And once they leave, the server is all there again.
    drop(extras);
    let end = Instant::now() + Duration::from_secs(2);
    loop {
        let r = try_request(port, "GET", "/healthz", &[], b"");
        if r.as_ref().is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(
            Instant::now() < end,
            "/healthz after the extra connections left: {:?}",
            r.map(|r| r.status)
        );
        sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_with_a_silent_client_exits_after_the_grace_and_keeps_what_arrived() {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::new(tmp.path(), &["--shutdown-grace", "2s"]);
    srv.spawn();
    let src = source(MIB, 9);
    let id = "silent.bin-1048576-1700000000";
    let arrived = 300 * 1024;

    let mut s = connect(srv.port).unwrap();
    write_head(
        &mut s,
        srv.port,
        "POST",
        "/api/upload",
        &offset_headers(id, 0, src.len()),
        src.len(),
    )
    .unwrap();
    s.write_all(&src[..arrived]).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while !status(srv.port, id).1 {
        assert!(
            Instant::now() < end,
            "the request never reached its handler"
        );
        sleep(Duration::from_millis(10));
    }
    // The bytes are in the server's hands (nothing is committed before the body ends).
    sleep(Duration::from_millis(300));

    let pid = srv.child.as_ref().expect("running").id();
    let t = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let exit = srv.wait_exit(Duration::from_secs(10));
    let took = t.elapsed();
    let exit = exit.unwrap_or_else(|| panic!("ferry still runs 10 s after SIGTERM"));
    assert!(exit.success(), "{exit}; log:\n{}", srv.log_tail());
    eprintln!("SIGTERM with a silent client: exited after {took:?} (grace 2 s)");
    assert!(
        took >= Duration::from_millis(1900),
        "exited after {took:?}, before the 2 s grace was over"
    );
    assert!(
        took < Duration::from_secs(5),
        "exited after {took:?}, want the 2 s grace plus a little"
    );
    // The silent client was answered before the server went away.
    let r = read_response(&mut s).expect("an answer to the cut-off request");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "body_interrupted", "{}", r.text());
    drop(s);

    srv.spawn();
    assert_eq!(status(srv.port, id), (arrived, true));
    // And the upload resumes from there.
    let r = request(
        srv.port,
        "POST",
        "/api/upload",
        &offset_headers(id, arrived, src.len()),
        &src[arrived..],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let url = r.json()["url"].as_str().unwrap().to_owned();
    assert_same_bytes(
        &download(srv.port, &url),
        &src,
        "resumed after the shutdown",
    );
}
