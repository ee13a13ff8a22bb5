//! The real `ferry serve` as a child process on a data directory that survives restarts,
//! and a minimal HTTP/1.1 client over `TcpStream` that decides exactly which bytes reach the
//! server (shared by `crash.rs` and `crash_points.rs`).
#![allow(dead_code)]

use super::free_port;
use md5::{Digest, Md5};
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

/// How long the debug binary may take to answer `/healthz` after a (re)start.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// Socket timeouts: a hung server fails the test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Test data
// ---------------------------------------------------------------------------------------

pub fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------

/// One `ferry serve` on a data directory, restartable on the same directory.
pub struct Server {
    pub child: Option<Child>,
    pub port: u16,
    pub root: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub starts: u32,
    /// Extra arguments after `serve --listen … --data-dir …`.
    pub args: Vec<String>,
    /// Extra environment of the next start only (cleared by [`Server::spawn`]).
    pub env: Vec<(String, String)>,
}

impl Server {
    pub fn start(root: &Path) -> Server {
        let mut s = Server::new(root, &[]);
        s.spawn();
        s
    }

    /// A server that is not started yet, with extra `serve` arguments.
    pub fn new(root: &Path, args: &[&str]) -> Server {
        Server {
            child: None,
            port: 0,
            root: root.to_owned(),
            data_dir: root.join("data"),
            log: root.join("server.log"),
            starts: 0,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
        }
    }

    /// Starts the process and waits until it answers `/healthz`; panics if it does not.
    pub fn spawn(&mut self) {
        if let Err(status) = self.try_spawn() {
            panic!(
                "ferry exited during start-up ({status}); log:\n{}",
                self.log_tail()
            );
        }
    }

    /// Starts the process (with [`Server::env`] for this start only) and waits until it
    /// answers `/healthz`. `Err` with the exit status when it ended during start-up.
    pub fn try_spawn(&mut self) -> Result<(), std::process::ExitStatus> {
        assert!(self.child.is_none(), "server already running");
        self.starts += 1;
        self.port = free_port();
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening server log");
        writeln!(
            log,
            "===== start #{} on port {} {:?} =====",
            self.starts, self.port, self.env
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            // No ferry.toml from the developer's working directory.
            .current_dir(&self.root)
            .env("RUST_LOG", "info")
            .envs(std::mem::take(&mut self.env))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawning the ferry binary");
        self.child = Some(child);
        self.wait_healthy()
    }

    fn wait_healthy(&mut self) -> Result<(), std::process::ExitStatus> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(st);
            }
            if self.args.iter().any(|a| a == "--tls-cert") {
                // A TLS listener: plain HTTP cannot ask it; it is up once it accepts.
                if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return Ok(());
                }
            } else if try_request(self.port, "GET", "/healthz", &[], b"")
                .is_ok_and(|r| r.status == 200)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                panic!(
                    "ferry did not answer /healthz with 200 within {START_DEADLINE:?}; log:\n{}",
                    self.log_tail()
                );
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `within` for the process to end by itself; its status, or `None`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + within;
        loop {
            let child = self.child.as_mut()?;
            if let Some(st) = child.try_wait().expect("polling the child") {
                self.child = None;
                return Some(st);
            }
            if Instant::now() > end {
                return None;
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL (`Child::kill` is SIGKILL on Unix), then reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL and start again on the same data directory (on a fresh free port).
    pub fn crash_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Whether the log of the current start says recovery finished an upload (informational:
    /// which window a kill landed in depends on timing).
    pub fn recovered_on_start(&self) -> bool {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let marker = format!("===== start #{} ", self.starts);
        text.rsplit_once(&marker)
            .is_some_and(|(_, tail)| tail.contains("finished uploads that were complete"))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- ferry server log (tail) ---\n{}", self.log_tail());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Minimal HTTP/1.1 over TcpStream
// ---------------------------------------------------------------------------------------

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.text()))
    }
}

pub fn connect(port: u16) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Writes a request line and headers, ending with `Content-Length` and the blank line.
pub fn write_head(
    s: &mut TcpStream,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    content_length: usize,
) -> io::Result<()> {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {content_length}\r\n\r\n"));
    s.write_all(head.as_bytes())
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one response: status line, headers, then the body by `Content-Length` (or chunked,
/// or to EOF).
pub fn read_response(s: &mut TcpStream) -> io::Result<Resp> {
    read_response_to(s, "GET")
}

/// [`read_response`] for a request of `method`: the answer to a `HEAD` has no body, whatever
/// its `Content-Length` says.
pub fn read_response_to(s: &mut TcpStream, method: &str) -> io::Result<Resp> {
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut tmp = vec![0u8; 256 * 1024];
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            let n = s.read(&mut tmp)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the response head",
                ));
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let mut rest = buf.split_off(head_end + 4);
        if (100..200).contains(&status) {
            buf = rest; // interim response: read the next head
            continue;
        }
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let body = if method == "HEAD" || status == 204 || status == 304 {
            Vec::new()
        } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            s.read_to_end(&mut rest)?;
            dechunk(&rest)?
        } else if let Some(len) = get("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| io::Error::other(format!("bad Content-Length {len:?}")))?;
            if rest.len() < len {
                let have = rest.len();
                rest.resize(len, 0);
                s.read_exact(&mut rest[have..])?;
            }
            rest.truncate(len);
            rest
        } else {
            s.read_to_end(&mut rest)?;
            rest
        };
        return Ok(Resp {
            status,
            headers,
            body,
        });
    }
}

pub fn dechunk(mut raw: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let i = find(raw, b"\r\n").ok_or_else(|| io::Error::other("truncated chunked body"))?;
        let size_str = String::from_utf8_lossy(&raw[..i]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| io::Error::other(format!("bad chunk size {size_str:?}")))?;
        raw = &raw[i + 2..];
        if size == 0 {
            return Ok(out);
        }
        if raw.len() < size + 2 {
            return Err(io::Error::other("truncated chunk"));
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> io::Result<Resp> {
    let mut s = connect(port)?;
    write_head(&mut s, port, method, path, headers, body.len())?;
    s.write_all(body)?;
    read_response_to(&mut s, method)
}

#[track_caller]
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Resp {
    try_request(port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Writes `body` in `pieces` writes with `pause` after each, so a kill lands mid-body.
pub fn send_in_pieces(
    s: &mut TcpStream,
    body: &[u8],
    pieces: usize,
    pause: Duration,
) -> io::Result<()> {
    let step = body.len().div_ceil(pieces.max(1)).max(1);
    for part in body.chunks(step) {
        s.write_all(part)?;
        s.flush()?;
        if !pause.is_zero() {
            sleep(pause);
        }
    }
    Ok(())
}

/// The path of a URL the server handed out (the port changes across restarts).
pub fn path_of(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    after_scheme.find('/').map_or("/", |i| &after_scheme[i..])
}

/// GETs a finished file and checks it is served whole: 200 and a Content-Length equal to the
/// body (never a partial file).
#[track_caller]
pub fn download(port: u16, url: &str) -> Vec<u8> {
    let path = path_of(url);
    let r = request(port, "GET", path, &[], b"");
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    if let Some(len) = r.header("content-length") {
        assert_eq!(
            len.parse::<usize>().ok(),
            Some(r.body.len()),
            "GET {path}: Content-Length vs body"
        );
    }
    r.body
}

/// A TCP proxy to `upstream` that passes at most `rate` bytes a second from clients to the
/// server (over all connections), so that an upload lasts long enough to be interrupted.
pub fn throttled_proxy(upstream: u16, rate: usize) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let clock = Arc::new(Mutex::new(Instant::now()));
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let Ok(u) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let _ = (c.set_nodelay(true), u.set_nodelay(true));
            let (c2, u2) = (c.try_clone().unwrap(), u.try_clone().unwrap());
            let clock = clock.clone();
            thread::spawn(move || pump(c, u, Some((clock, rate))));
            thread::spawn(move || pump(u2, c2, None));
        }
    });
    port
}

fn pump(mut from: TcpStream, mut to: TcpStream, limit: Option<(Arc<Mutex<Instant>>, usize)>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((clock, rate)) = &limit {
            let until = {
                let mut t = clock.lock().unwrap();
                *t = (*t).max(Instant::now()) + Duration::from_secs_f64(n as f64 / *rate as f64);
                *t
            };
            sleep(until.saturating_duration_since(Instant::now()));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
