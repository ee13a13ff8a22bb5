//! End-to-end tests of `ferry upload` and `ferry download` (SPEC §5): the real binary against
//! a real `ferry serve` on a free port with a temporary data directory, both killed and
//! restarted the way people's transfers get interrupted.
//!
//! What the server received is read from its `/metrics` (`ferry_bytes_received_total`),
//! never from the client. Downloads that must be interrupted part-way go through a small
//! proxy in this process that can slow the bytes down (so a kill lands in the middle) and can
//! point one URL at another upload (so "the remote file changed" is a real change of the
//! bytes and the ETag behind one URL, answered by the real server).

mod support;

use support::{assert_same_bytes, free_port, source};

use serde_json::Value;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
const BIN: &str = env!("CARGO_BIN_EXE_ferry");
/// How long the debug server may take to answer `/healthz`.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Longest any one client run may take before the test fails.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------
// Test data
// ---------------------------------------------------------------------------------------

#[track_caller]
fn assert_same_file(got: &Path, want: &[u8]) {
    let bytes = fs::read(got).unwrap_or_else(|e| panic!("reading {}: {e}", got.display()));
    assert_same_bytes(&bytes, want, &got.display().to_string());
}

// ---------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------

/// One `ferry serve` on a data directory; restarts keep the port, as a real server's
/// address does.
struct Server {
    child: Option<Child>,
    port: u16,
    root: PathBuf,
    log: PathBuf,
    starts: u32,
}

impl Server {
    fn start(root: &Path) -> Server {
        let mut s = Server {
            child: None,
            port: free_port(),
            root: root.to_owned(),
            log: root.join("server.log"),
            starts: 0,
        };
        s.spawn();
        s
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the server log");
        writeln!(log, "===== start #{} =====", self.starts).unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(self.root.join("data"))
            .current_dir(&self.root)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawning ferry serve");
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "ferry serve exited during start-up ({st}):\n{}",
                    self.log_tail()
                );
            }
            if get(self.port, "/healthz").is_ok_and(|(status, _)| status == 200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ferry serve did not become healthy:\n{}",
                self.log_tail()
            );
            sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sum of `ferry_bytes_received_total` over every dialect since this start.
    fn bytes_received(&self) -> u64 {
        let (status, body) = get(self.port, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200);
        String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| l.starts_with("ferry_bytes_received_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- server log (tail) ---\n{}", self.log_tail());
        }
    }
}

/// `GET path` over a fresh connection: (status, body).
fn get(port: u16, path: &str) -> io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::other("no response head"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other("bad status line"))?;
    Ok((status, raw[end + 4..].to_vec()))
}

/// Polls `cond` every few milliseconds; false when `within` passed first.
fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        sleep(Duration::from_millis(5));
    }
    cond()
}

// ---------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------

/// A `ferry` client command in `root`, with its own state file and no stray configuration.
fn ferry(root: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(root)
        .env("FERRY_STATE_FILE", root.join("state.json"))
        .env_remove("FERRY_SERVER")
        .env_remove("FERRY_TOKEN")
        .stdin(Stdio::null());
    cmd
}

/// A client started in the background, its output going to files.
struct Running {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

/// What a finished client run printed.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Every stdout line, each of which must be a JSON object.
    fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!(
                        "stdout line is not JSON ({e}): {l:?}\nstderr:\n{}",
                        self.stderr
                    )
                })
            })
            .collect()
    }

    /// The result line of each file, checking there is exactly one per file and that it is
    /// the file's last line.
    fn results(&self) -> HashMap<String, Value> {
        let lines = self.lines();
        let mut out = HashMap::new();
        for (i, l) in lines.iter().enumerate() {
            let file = l["file"]
                .as_str()
                .expect("every line names its file")
                .to_owned();
            if l["event"] == "result" {
                assert!(
                    out.insert(file.clone(), l.clone()).is_none(),
                    "two result lines for {file}"
                );
                assert!(
                    lines[i + 1..].iter().all(|m| m["file"] != l["file"]),
                    "a line for {file} after its result"
                );
            }
        }
        out
    }

    fn events<'a>(&'a self, event: &'a str) -> impl Iterator<Item = Value> + 'a {
        self.lines()
            .into_iter()
            .filter(move |l| l["event"] == event)
    }

    #[track_caller]
    fn assert_ok(&self) {
        assert!(
            self.status.success(),
            "ferry exited with {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
    }

    #[track_caller]
    fn url_of(&self, file: &str) -> String {
        let results = self.results();
        let r = results
            .get(file)
            .unwrap_or_else(|| panic!("no result for {file}:\n{}", self.stdout));
        assert_eq!(r["status"], "ok", "{r}");
        r["url"].as_str().expect("url").to_owned()
    }
}

fn spawn(cmd: &mut Command, root: &Path, name: &str) -> Running {
    let out = root.join(format!("{name}.stdout"));
    let err = root.join(format!("{name}.stderr"));
    let child = cmd
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .expect("spawning ferry");
    Running { child, out, err }
}

impl Running {
    fn wait(mut self) -> Run {
        let end = Instant::now() + RUN_DEADLINE;
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("polling ferry") {
                break st;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "ferry did not finish within {RUN_DEADLINE:?}\nstderr:\n{}",
                    fs::read_to_string(&self.err).unwrap_or_default()
                );
            }
            sleep(Duration::from_millis(10));
        };
        Run {
            status,
            stdout: fs::read_to_string(&self.out).unwrap_or_default(),
            stderr: fs::read_to_string(&self.err).unwrap_or_default(),
        }
    }

    /// SIGKILL, as `kill -9` would.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command, root: &Path, name: &str) -> Run {
    spawn(cmd, root, name).wait()
}

fn write_file(root: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = root.join(name);
    fs::write(&p, data).unwrap();
    p
}

/// `ferry upload FILES --server … --json ARGS`.
fn upload(root: &Path, srv: &Server, files: &[&str], args: &[&str], name: &str) -> Run {
    let run = run(
        ferry(root)
            .arg("upload")
            .args(files)
            .args(["--server", &srv.base(), "--json"])
            .args(args),
        root,
        name,
    );
    run.assert_ok();
    run
}

/// `ferry download URL -o OUT --json ARGS`.
fn download_cmd(root: &Path, url: &str, out: &str, args: &[&str]) -> Command {
    let mut cmd = ferry(root);
    cmd.args(["download", url, "-o", out, "--json"]).args(args);
    cmd
}

/// Bytes the `.part.meta` beside `out` says are written.
fn part_done(out: &Path) -> u64 {
    let mut meta = out.as_os_str().to_owned();
    meta.push(".part.meta");
    let Ok(text) = fs::read(PathBuf::from(meta)) else {
        return 0;
    };
    let Ok(v) = serde_json::from_slice::<Value>(&text) else {
        return 0;
    };
    v["segments"]
        .as_array()
        .map_or(0, |s| s.iter().filter_map(|s| s["done"].as_u64()).sum())
}

fn notes(run: &Run) -> Vec<String> {
    run.events("note")
        .map(|n| n["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------
// A proxy for downloads: slows bytes down and can point `/x` at another path
// ---------------------------------------------------------------------------------------

struct Proxy {
    port: u16,
    /// Upstream path that `/x` stands for.
    target: Arc<Mutex<String>>,
    /// Bytes per second towards the client; 0 for no limit.
    rate: Arc<AtomicU64>,
}

impl Proxy {
    fn start(upstream: u16, target: &str, rate: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(Mutex::new(target.to_owned()));
        let rate = Arc::new(AtomicU64::new(rate));
        let (t, r) = (target.clone(), rate.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (t, r) = (t.clone(), r.clone());
                std::thread::spawn(move || {
                    let _ = relay(conn, upstream, &t, &r);
                });
            }
        });
        Proxy { port, target, rate }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/x", self.port)
    }
}

/// Relays one request (GET or HEAD: no body) with `Connection: close`, rewriting `/x`.
fn relay(
    mut client: TcpStream,
    upstream: u16,
    target: &Mutex<String>,
    rate: &AtomicU64,
) -> io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.splitn(3, ' ');
    let (method, path, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = if path == "/x" {
        target.lock().unwrap().clone()
    } else {
        path.to_owned()
    };
    let mut req = format!("{method} {path} {version}\r\n");
    for l in lines.filter(|l| !l.is_empty()) {
        if !l.to_ascii_lowercase().starts_with("connection:") {
            req.push_str(l);
            req.push_str("\r\n");
        }
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(req.as_bytes())?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = up.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        client.write_all(&buf[..n])?;
        let r = rate.load(Ordering::Relaxed);
        if r > 0 {
            sleep(Duration::from_secs_f64(n as f64 / r as f64));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Uploads
// ---------------------------------------------------------------------------------------

#[test]
fn several_files_upload_in_parallel_and_download_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let srv = Server::start(root);
    let big = source(24 * MIB + 5, 1);
    let small = source(100_000, 2);
    write_file(root, "big.bin", &big);
    write_file(root, "small.txt", &small);
    write_file(root, "empty.dat", b"");

    // Eight requests over three files: two connections each, so the big file goes up as
    // two connections writing slices of one upload (byte ranges).
    let up = upload(
        root,
        &srv,
        &["big.bin", "small.txt", "empty.dat"],
        &["--parallel", "8", "--chunk-size", "4MiB"],
        "upload",
    );
    let results = up.results();
    assert_eq!(results.len(), 3, "one result per file:\n{}", up.stdout);
    for (file, want) in [
        ("big.bin", &big),
        ("small.txt", &small),
        ("empty.dat", &Vec::new()),
    ] {
        let url = up.url_of(file);
        assert!(url.contains("/files/"), "{url}");
        let out = format!("{file}.down");
        let down = run(
            &mut download_cmd(root, &url, &out, &[]),
            root,
            &format!("down-{file}"),
        );
        down.assert_ok();
        assert_same_file(&root.join(&out), want);
        let notes = notes(&down);
        assert!(
            notes.iter().any(|n| n.contains("verified: the blake3")),
            "{file}: {notes:?}"
        );
    }
    // Progress lines count up to the file's size.
    let last_progress = up
        .events("progress")
        .filter(|l| l["file"] == "big.bin")
        .last()
        .expect("progress lines for big.bin");
    assert_eq!(last_progress["bytes"].as_u64(), Some(big.len() as u64));
    assert_eq!(last_progress["total"].as_u64(), Some(big.len() as u64));
}

#[test]
fn sigkill_mid_upload_then_rerun_completes_resending_little() {
    const SIZE: usize = 256 * MIB;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let srv = Server::start(root);
    let data = source(SIZE, 3);
    write_file(root, "big.iso", &data);
    let args = [
        "upload",
        "big.iso",
        "--server",
        &srv.base(),
        "--json",
        "--parallel",
        "4",
        "--chunk-size",
        "4MiB",
    ];

    let first = spawn(ferry(root).args(args), root, "first");
    assert!(
        wait_until(Duration::from_secs(60), || srv.bytes_received()
            >= 96 * MIB as u64),
        "the upload never got a third of the way"
    );
    first.kill();
    let at_kill = srv.bytes_received();
    assert!(
        at_kill < SIZE as u64,
        "the kill landed after the whole file was sent; nothing to resume"
    );

    let second = run(ferry(root).args(args), root, "second");
    second.assert_ok();
    let start = second.events("start").next().expect("a start line");
    let resumed = start["resumed_from"].as_u64().unwrap();
    assert!(
        resumed >= 64 * MIB as u64,
        "the rerun resumes from what the server holds, got {resumed} after {at_kill} received"
    );
    let total = srv.bytes_received();
    assert!(
        (total as f64) < 1.3 * SIZE as f64,
        "the server received {total} bytes in all for a {SIZE}-byte file ({:.2}×)",
        total as f64 / SIZE as f64
    );
    eprintln!(
        "received {at_kill} before the kill, {total} in all ({:.3}× the file)",
        total as f64 / SIZE as f64
    );

    let url = second.url_of("big.iso");
    let down = run(
        &mut download_cmd(root, &url, "big.out", &["--connections", "4"]),
        root,
        "down",
    );
    down.assert_ok();
    assert_same_file(&root.join("big.out"), &data);
}

#[test]
fn server_restart_mid_upload_is_ridden_out_with_retries() {
    const SIZE: usize = 64 * MIB;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut srv = Server::start(root);
    let data = source(SIZE, 4);
    write_file(root, "data.bin", &data);

    let client = spawn(
        ferry(root).args([
            "upload",
            "data.bin",
            "--server",
            &srv.base(),
            "--json",
            "--parallel",
            "2",
            "--chunk-size",
            "2MiB",
        ]),
        root,
        "upload",
    );
    assert!(
        wait_until(Duration::from_secs(60), || srv.bytes_received()
            >= 16 * MIB as u64),
        "the upload never got going"
    );
    srv.kill();
    sleep(Duration::from_millis(500));
    srv.spawn();
    let up = client.wait();
    up.assert_ok();
    assert!(
        up.events("retry").next().is_some(),
        "the client retried while the server was down:\n{}",
        up.stdout
    );
    let url = up.url_of("data.bin");
    let down = run(&mut download_cmd(root, &url, "data.out", &[]), root, "down");
    down.assert_ok();
    assert_same_file(&root.join("data.out"), &data);
}

#[test]
fn a_changed_local_file_is_not_resumed_into_the_old_upload() {
    const SIZE: usize = 32 * MIB;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let srv = Server::start(root);
    let mut data = source(SIZE, 5);
    write_file(root, "doc.bin", &data);
    let args = [
        "upload",
        "doc.bin",
        "--server",
        &srv.base(),
        "--json",
        "--parallel",
        "1",
        "--chunk-size",
        "1MiB",
    ];
    let first = spawn(ferry(root).args(args), root, "first");
    assert!(
        wait_until(Duration::from_secs(60), || srv.bytes_received()
            >= 4 * MIB as u64),
        "the upload never got going"
    );
    first.kill();
    assert!(srv.bytes_received() < SIZE as u64, "the kill came too late");

    // Same size, new bytes in the middle and a new modification time.
    data[SIZE / 2..SIZE / 2 + 1000].fill(0xAB);
    sleep(Duration::from_millis(20));
    write_file(root, "doc.bin", &data);

    let second = run(ferry(root).args(args), root, "second");
    second.assert_ok();
    assert!(
        notes(&second).iter().any(|n| n.contains("changed")),
        "the rerun says the file changed: {:?}",
        notes(&second)
    );
    let start = second.events("start").next().unwrap();
    assert_eq!(
        start["resumed_from"], 0,
        "a changed file starts a new upload"
    );
    let url = second.url_of("doc.bin");
    let down = run(&mut download_cmd(root, &url, "doc.out", &[]), root, "down");
    down.assert_ok();
    assert_same_file(&root.join("doc.out"), &data);
}

#[test]
fn chunk_dialect_uploads_and_a_file_the_server_has_is_an_instant_upload() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let srv = Server::start(root);
    let a = source(12 * MIB + 7, 6);
    let b = source(5 * MIB, 7);
    write_file(root, "a.jpg", &a);
    write_file(root, "b.bin", &b);

    let up = upload(
        root,
        &srv,
        &["a.jpg", "b.bin"],
        &["--protocol", "chunk", "--parallel", "4"],
        "first",
    );
    let received = srv.bytes_received();
    assert!(received >= (a.len() + b.len()) as u64);
    for (file, want) in [("a.jpg", &a), ("b.bin", &b)] {
        let url = up.url_of(file);
        assert!(url.contains("/upload/"), "chunk-dialect URL: {url}");
        let out = format!("{file}.down");
        let down = run(
            &mut download_cmd(root, &url, &out, &[]),
            root,
            &format!("down-{file}"),
        );
        down.assert_ok();
        assert_same_file(&root.join(&out), want);
        assert!(
            notes(&down).iter().any(|n| n.contains("verified: the md5")),
            "{:?}",
            notes(&down)
        );
    }

    // Another client that never saw these files (a fresh state file, a copy under another
    // name): the handshake alone finishes them, and no chunk byte reaches the server.
    fs::copy(root.join("a.jpg"), root.join("copy-of-a.jpg")).unwrap();
    let again = run(
        ferry(root)
            .env("FERRY_STATE_FILE", root.join("other-state.json"))
            .args([
                "upload",
                "copy-of-a.jpg",
                "b.bin",
                "--protocol",
                "chunk",
                "--json",
            ])
            .args(["--server", &srv.base()]),
        root,
        "again",
    );
    again.assert_ok();
    let instant = notes(&again)
        .iter()
        .filter(|n| n.contains("instant upload"))
        .count();
    assert_eq!(instant, 2, "both are instant uploads:\n{}", again.stdout);
    assert_eq!(
        srv.bytes_received(),
        received,
        "an instant upload sends no chunk bytes"
    );
    assert_eq!(again.url_of("copy-of-a.jpg"), up.url_of("a.jpg"));
}

#[test]
fn an_unreachable_server_fails_with_the_next_step_and_a_nonzero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_file(root, "f.bin", b"hello");
    let dead = format!("http://127.0.0.1:{}", free_port());

    let json = run(
        ferry(root).args([
            "upload",
            "f.bin",
            "--server",
            &dead,
            "--retry-for",
            "2s",
            "--json",
        ]),
        root,
        "json",
    );
    assert_eq!(json.status.code(), Some(1), "{}", json.stderr);
    let results = json.results();
    let r = &results["f.bin"];
    assert_eq!(r["status"], "failed", "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("gave up after"),
        "{r}"
    );
    assert!(
        r["hint"]
            .as_str()
            .unwrap()
            .contains("run the same command again"),
        "{r}"
    );
    assert!(
        json.events("retry").next().is_some(),
        "retries are reported"
    );

    // For a person, the summary on stderr names the file, the error and the next step;
    // `--quiet` leaves only the result line on stdout.
    assert!(
        json.stderr.contains("f.bin")
            && json.stderr.contains("next: ")
            && json.stderr.contains("run the same command again"),
        "{}",
        json.stderr
    );
    let quiet = run(
        ferry(root).args([
            "upload",
            "f.bin",
            "--server",
            &dead,
            "--retry-for",
            "1s",
            "--quiet",
            "--json",
        ]),
        root,
        "quiet",
    );
    assert_eq!(quiet.status.code(), Some(1));
    assert_eq!(quiet.lines().len(), 1, "{}", quiet.stdout);
    assert_eq!(quiet.results()["f.bin"]["status"], "failed");
    // Without --json, --quiet prints only URLs: none for a failure, whose summary is on
    // stderr.
    let bare = run(
        ferry(root).args([
            "upload",
            "f.bin",
            "--server",
            &dead,
            "--retry-for",
            "1s",
            "--quiet",
        ]),
        root,
        "quiet-bare",
    );
    assert_eq!(bare.status.code(), Some(1));
    assert_eq!(bare.stdout.trim(), "", "no URL for a failed file");
    assert!(bare.stderr.contains("f.bin"), "{}", bare.stderr);
}

// ---------------------------------------------------------------------------------------
// Downloads
// ---------------------------------------------------------------------------------------

/// Uploads `data` as one plain tus upload (sha256 content ETag) and returns its path.
fn upload_plain(root: &Path, srv: &Server, name: &str, data: &[u8]) -> String {
    write_file(root, name, data);
    let up = upload(
        root,
        srv,
        &[name],
        &["--parallel", "1"],
        &format!("up-{name}"),
    );
    let url = up.url_of(name);
    url[url.find("/files/").unwrap()..].to_owned()
}

/// Starts a throttled download through `proxy` and SIGKILLs it once its `.part.meta` shows
/// at least `at_least` bytes written (and before it finishes).
fn interrupted_download(root: &Path, proxy: &Proxy, out: &str, args: &[&str], at_least: u64) {
    let client = spawn(
        &mut download_cmd(root, &proxy.url(), out, args),
        root,
        "interrupted",
    );
    let out_path = root.join(out);
    assert!(
        wait_until(Duration::from_secs(60), || part_done(&out_path) >= at_least),
        "the download never saved progress"
    );
    client.kill();
    assert!(
        !out_path.exists(),
        "never a partial file under the final name"
    );
    let mut part = out_path.into_os_string();
    part.push(".part");
    assert!(
        Path::new(&part).exists(),
        "the .part file stays for the rerun"
    );
}

#[test]
fn an_interrupted_download_resumes_and_is_identical() {
    const SIZE: usize = 32 * MIB;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let srv = Server::start(root);
    let data = source(SIZE, 8);
    let path = upload_plain(root, &srv, "movie.mkv", &data);
    let proxy = Proxy::start(srv.port, &path, 8 * MIB as u64);

    interrupted_download(root, &proxy, "movie.out", &[], 6 * MIB as u64);
    proxy.rate.store(0, Ordering::Relaxed);
    let again = run(
        &mut download_cmd(root, &proxy.url(), "movie.out", &[]),
        root,
        "again",
    );
    again.assert_ok();
    let start = again.events("start").next().unwrap();
    assert!(
        start["resumed_from"].as_u64().unwrap() >= 6 * MIB as u64,
        "resumed from the .part file: {start}"
    );
    assert_same_file(&root.join("movie.out"), &data);
    assert!(
        notes(&again)
            .iter()
            .any(|n| n.contains("verified: the blake3")),
        "{:?}",
        notes(&again)
    );
    assert!(!root.join("movie.out.part.meta").exists());
}

#[test]
fn four_connections_give_identical_bytes_also_when_resumed() {
    const SIZE: usize = 32 * MIB + 12_345;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let srv = Server::start(root);
    let data = source(SIZE, 9);
    let path = upload_plain(root, &srv, "disk.img", &data);
    let url = format!("{}{path}", srv.base());

    let whole = run(
        &mut download_cmd(root, &url, "fresh.img", &["--connections", "4"]),
        root,
        "fresh",
    );
    whole.assert_ok();
    assert_same_file(&root.join("fresh.img"), &data);
    assert!(notes(&whole).iter().any(|n| n.contains("verified")));

    // Four throttled connections, killed part-way: the rerun continues every range.
    let proxy = Proxy::start(srv.port, &path, 4 * MIB as u64);
    interrupted_download(
        root,
        &proxy,
        "resumed.img",
        &["--connections", "4"],
        8 * MIB as u64,
    );
    proxy.rate.store(0, Ordering::Relaxed);
    let again = run(
        &mut download_cmd(root, &proxy.url(), "resumed.img", &["--connections", "4"]),
        root,
        "again",
    );
    again.assert_ok();
    assert!(
        again.events("start").next().unwrap()["resumed_from"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_same_file(&root.join("resumed.img"), &data);
}

/// The remote file changes between two runs: `/x` on the proxy points at upload A, the
/// download of A is interrupted, then `/x` points at upload B. The rerun's
/// `Range` + `If-Range: <A's ETag>` gets B whole (200) from the real server, which the
/// client must take as "changed" and start over, ending with B's bytes, not a mix.
#[test]
fn a_changed_remote_file_is_detected_and_the_download_starts_over() {
    const SIZE: usize = 16 * MIB;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let srv = Server::start(root);
    let a = source(SIZE, 10);
    let b = source(SIZE, 11);
    let path_a = upload_plain(root, &srv, "a.bin", &a);
    let path_b = upload_plain(root, &srv, "b.bin", &b);
    let proxy = Proxy::start(srv.port, &path_a, 4 * MIB as u64);

    interrupted_download(root, &proxy, "x.bin", &[], 4 * MIB as u64);
    *proxy.target.lock().unwrap() = path_b;
    proxy.rate.store(0, Ordering::Relaxed);
    let again = run(
        &mut download_cmd(root, &proxy.url(), "x.bin", &[]),
        root,
        "again",
    );
    again.assert_ok();
    assert!(
        notes(&again).iter().any(|n| n.contains("changed")),
        "the change is reported: {:?}",
        notes(&again)
    );
    assert_same_file(&root.join("x.bin"), &b);
    assert!(notes(&again).iter().any(|n| n.contains("verified")));
}

/// Secrets set in the environment never show in `--help` (clap prints the values of set
/// variables unless told not to), neither the server's nor the client's.
#[test]
fn help_output_never_shows_secrets_from_the_environment() {
    let secrets = [
        ("FERRY_AUTH_TOKEN", "s3cret-auth-token-value"),
        ("FERRY_AUTH_JWT_SECRET", "s3cret-jwt-secret-value"),
        ("FERRY_LINK_SECRET", "s3cret-link-secret-value"),
        ("FERRY_METRICS_TOKEN", "s3cret-metrics-token-value"),
        ("FERRY_TOKEN", "s3cret-client-token-value"),
    ];
    for args in [
        &["serve", "--help"][..],
        &["upload", "--help"][..],
        &["download", "--help"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(args)
            .envs(secrets)
            .output()
            .expect("running ferry --help");
        assert!(out.status.success(), "{args:?}");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("Usage"), "{args:?}: {text}");
        for (var, value) in secrets {
            assert!(!text.contains(value), "{args:?} printed the value of {var}");
        }
    }
}

/// `ferry download` never overwrites a file silently (like `curl -OJ`): it refuses with a
/// sentence naming the way out, `--force` replaces the file, `--rename` picks a free name.
#[test]
fn download_refuses_to_overwrite_unless_forced_or_renaming() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let srv = Server::start(root);
    let data = source(300_000, 41);
    write_file(root, "doc.bin", &data);
    let url = upload(root, &srv, &["doc.bin"], &[], "upload").url_of("doc.bin");
    let mine = b"my own file, not to be lost".to_vec();
    write_file(root, "out.bin", &mine);

    let refused = run(
        &mut download_cmd(root, &url, "out.bin", &[]),
        root,
        "refused",
    );
    assert!(
        !refused.status.success(),
        "an existing file was overwritten"
    );
    assert!(
        refused.stderr.contains("--force") && refused.stderr.contains("--rename"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        fs::read(root.join("out.bin")).unwrap(),
        mine,
        "left untouched"
    );

    run(
        &mut download_cmd(root, &url, "out.bin", &["--rename"]),
        root,
        "renamed",
    )
    .assert_ok();
    assert_eq!(fs::read(root.join("out.bin")).unwrap(), mine);
    assert_same_file(&root.join("out.1.bin"), &data);
    run(
        &mut download_cmd(root, &url, "out.bin", &["--rename"]),
        root,
        "renamed2",
    )
    .assert_ok();
    assert_same_file(&root.join("out.2.bin"), &data);

    run(
        &mut download_cmd(root, &url, "out.bin", &["--force"]),
        root,
        "forced",
    )
    .assert_ok();
    assert_same_file(&root.join("out.bin"), &data);
}

/// `ferry upload -q` into a pipe prints just the URL (for `URL=$(ferry upload -q …)`), and
/// `ferry download -q` just the path.
#[test]
fn quiet_into_a_pipe_prints_only_the_url() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let srv = Server::start(root);
    let data = source(70_000, 43);
    write_file(root, "q.bin", &data);
    let up = run(
        ferry(root)
            .args(["upload", "q.bin", "-q", "--server"])
            .arg(srv.base()),
        root,
        "quiet-up",
    );
    up.assert_ok();
    let url = up.stdout.trim();
    assert_eq!(up.stdout.lines().count(), 1, "{}", up.stdout);
    assert!(
        url.starts_with("http://") && url.contains("/files/"),
        "{url:?}"
    );
    let down = run(
        ferry(root).args(["download", url, "-o", "q.out", "-q"]),
        root,
        "quiet-down",
    );
    down.assert_ok();
    assert_eq!(down.stdout.trim(), "q.out", "{}", down.stdout);
    assert_same_file(&root.join("q.out"), &data);
}
