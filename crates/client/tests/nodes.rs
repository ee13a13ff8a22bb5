//! Two `ferry serve` processes, node A and node B, on one PostgreSQL database and one shared
//! blob directory (ARCHITECTURE.md, "Many nodes"): racing appends at the same offset on both
//! nodes never both succeed and never interleave; a node killed or abandoned mid-write frees
//! the upload for the other within 5 s; chunks spread over both nodes complete the file once;
//! the CLI rides out a restart of PostgreSQL under it; and an idle upload is expired (and
//! counted) by exactly one node, while one kept busy on the other node stays.

mod support;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex, mpsc};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};
use support::chunked::Chunked;
use support::pg::TestDb;
use support::proc::{
    Resp, Server, connect, download, md5_hex, path_of, read_response_to, request, send_in_pieces,
    throttled_proxy, try_request, write_head,
};
use support::{assert_same_bytes, source};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// How soon the other node must be able to continue an upload whose writer died or stalled.
const TAKEOVER: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// Two nodes
// ---------------------------------------------------------------------------------------

/// Node A and node B: own data directories, one database, one storage directory.
struct Nodes {
    a: Server,
    b: Server,
    _dirs: [tempfile::TempDir; 3],
}

impl Nodes {
    fn start(database_url: &str) -> Nodes {
        Nodes::start_with(database_url, &[])
    }

    /// [`Nodes::start`] with more `serve` arguments, the same on both nodes.
    fn start_with(database_url: &str, extra: &[&str]) -> Nodes {
        let shared = tempfile::tempdir().unwrap();
        let storage = format!("file://{}", shared.path().join("files").display());
        let (ta, tb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut args = vec!["--database", database_url, "--storage", &storage];
        args.extend_from_slice(extra);
        let mut a = Server::new(ta.path(), &args);
        let mut b = Server::new(tb.path(), &args);
        a.spawn();
        b.spawn();
        Nodes {
            a,
            b,
            _dirs: [shared, ta, tb],
        }
    }
}

// ---------------------------------------------------------------------------------------
// tus over raw sockets
// ---------------------------------------------------------------------------------------

fn tus(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut h = vec![("Tus-Resumable", "1.0.0".to_owned())];
    h.extend_from_slice(extra);
    h
}

fn patch_headers(offset: usize) -> Vec<(&'static str, String)> {
    tus(&[
        ("Upload-Offset", offset.to_string()),
        ("Content-Type", "application/offset+octet-stream".to_owned()),
    ])
}

/// `POST /files/` with `Upload-Length: len`; the upload's path.
#[track_caller]
fn create(port: u16, len: usize) -> String {
    let r = request(
        port,
        "POST",
        "/files/",
        &tus(&[("Upload-Length", len.to_string())]),
        b"",
    );
    assert_eq!(r.status, 201, "POST /files/: {}", r.text());
    path_of(r.header("location").expect("Location")).to_owned()
}

fn upload_offset(r: &Resp) -> Option<usize> {
    r.header("upload-offset").and_then(|v| v.parse().ok())
}

/// `HEAD /files/<id>` → `Upload-Offset`, asserting a `200`.
#[track_caller]
fn head_offset(port: u16, path: &str, what: &str) -> usize {
    let r = request(port, "HEAD", path, &tus(&[]), b"");
    assert_eq!(r.status, 200, "{what}: HEAD {path} on port {port}");
    upload_offset(&r).unwrap_or_else(|| panic!("{what}: HEAD {path}: no Upload-Offset"))
}

/// The stable error code of a JSON error answer (`""` when there is none).
fn code(r: &Resp) -> String {
    serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|j| j["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The held offset an answer names (`offset` of the body, else `X-Upload-Offset`).
fn named_offset(r: &Resp) -> Option<usize> {
    serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|j| j["offset"].as_u64().map(|o| o as usize))
        .or_else(|| r.header("x-upload-offset").and_then(|v| v.parse().ok()))
}

fn brief(r: &Resp) -> String {
    format!(
        "{} {} (Upload-Offset {:?})",
        r.status,
        r.text().chars().take(200).collect::<String>(),
        r.header("upload-offset")
    )
}

/// Sends a whole request and reads its answer. A body write that fails because the server
/// answered early (and closed) still yields that answer.
fn exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> io::Result<Resp> {
    let mut s = connect(port)?;
    write_head(&mut s, port, method, path, headers, body.len())?;
    let written = s.write_all(body);
    read_response_to(&mut s, method).map_err(|e| match written {
        Err(w) => io::Error::other(format!("writing the body: {w}; reading the answer: {e}")),
        Ok(()) => e,
    })
}

/// Whether the server already answered (or closed) the request on `s`.
fn answered(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    s.set_nonblocking(true).unwrap();
    let r = s.peek(&mut b);
    s.set_nonblocking(false).unwrap();
    r.is_ok()
}

/// The rest of an upload, PATCHed on `port` from whatever offset `HEAD` on `port` names,
/// following `409` offsets and retrying `409 upload_busy`/`423` until `deadline`. Returns
/// the attempts made (the last one answered `204` at the end of `src`).
#[track_caller]
fn resume_until(
    port: u16,
    path: &str,
    src: &[u8],
    most_held: usize,
    deadline: Instant,
    what: &str,
) -> Vec<String> {
    let mut log = Vec::new();
    // HEAD first, as a client resuming does; it may take a moment for a dead node's request.
    let mut offset = loop {
        match try_request(port, "HEAD", path, &tus(&[]), b"") {
            Ok(r) if r.status == 200 => {
                let o = upload_offset(&r)
                    .unwrap_or_else(|| panic!("{what}: HEAD {path}: no Upload-Offset"));
                log.push(format!("HEAD 200 offset {o}"));
                break o;
            }
            Ok(r) => log.push(format!("HEAD {}", brief(&r))),
            Err(e) => log.push(format!("HEAD: {e}")),
        }
        assert!(
            Instant::now() < deadline,
            "{what}: HEAD never answered 200 in time: {log:?}"
        );
        sleep(Duration::from_millis(50));
    };
    loop {
        assert!(
            offset <= most_held,
            "{what}: the upload claims {offset} bytes, but only {most_held} were ever sent: {log:?}"
        );
        let r = exchange(port, "PATCH", path, &patch_headers(offset), &src[offset..])
            .unwrap_or_else(|e| panic!("{what}: PATCH at {offset}: no answer ({e}); {log:?}"));
        log.push(format!("PATCH at {offset}: {}", brief(&r)));
        match r.status {
            204 => {
                assert_eq!(
                    upload_offset(&r),
                    Some(src.len()),
                    "{what}: the finishing PATCH's Upload-Offset; {log:?}"
                );
                return log;
            }
            409 if code(&r) == "offset_mismatch" || code(&r) == "upload_superseded" => {
                offset = named_offset(&r)
                    .unwrap_or_else(|| panic!("{what}: a 409 without the held offset: {log:?}"));
            }
            409 | 423 => {}
            _ => panic!("{what}: PATCH at {offset} answered {}; {log:?}", brief(&r)),
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no PATCH succeeded within {TAKEOVER:?}: {log:?}"
        );
        sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// 1. Racing appends at the same offset
// ---------------------------------------------------------------------------------------

/// Pause between the two halves of each racing body, so both requests stream at once.
const HALF_PAUSE: Duration = Duration::from_millis(25);

/// One racing PATCH: connects, waits for the other, sends the head and the first half of the
/// body, pauses, then the rest (unless the server has already answered), and reads the answer.
fn racing_patch(
    port: u16,
    path: &str,
    offset: usize,
    body: &[u8],
    start: &Barrier,
) -> io::Result<Resp> {
    let s = connect(port);
    start.wait();
    let s = &mut s?;
    let half = body.len() / 2;
    write_head(s, port, "PATCH", path, &patch_headers(offset), body.len())?;
    s.write_all(&body[..half])?;
    sleep(HALF_PAUSE);
    let written = if answered(s) {
        Ok(())
    } else {
        s.write_all(&body[half..])
    };
    read_response_to(s, "PATCH").map_err(|e| match written {
        Err(w) => io::Error::other(format!("writing the body: {w}; reading the answer: {e}")),
        Ok(()) => e,
    })
}

#[test]
fn same_offset_patches_on_two_nodes_never_both_succeed() {
    const BLOCK: usize = 64 * KIB;
    const ROUNDS: usize = 50;
    const MOST_ATTEMPTS: usize = 40;
    let db = TestDb::create("race");
    let n = Nodes::start(&db.url);
    let (a, b) = (n.a.port, n.b.port);
    let path = create(a, ROUNDS * BLOCK);

    // What the answers acknowledged, byte by byte, and who wrote each block.
    let mut expected = vec![0u8; ROUNDS * BLOCK];
    let mut story: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    let mut held = 0usize;
    let (mut won_a, mut won_b, mut kept_partial, mut retries) = (0, 0, 0, 0);
    let mut refusals: std::collections::BTreeMap<String, usize> = Default::default();
    for i in 0..ROUNDS {
        let x = source(BLOCK, 10_000 + 2 * i as u64);
        let y = source(BLOCK, 10_001 + 2 * i as u64);
        let end = (i + 1) * BLOCK;
        let mut this = Vec::new();
        let mut attempt = 0;
        while held < end {
            attempt += 1;
            assert!(
                attempt <= MOST_ATTEMPTS,
                "round {i}: no PATCH got 204 in {MOST_ATTEMPTS} attempts: {this:?}"
            );
            if attempt > 1 {
                retries += 1;
            }
            let k = held - i * BLOCK;
            let start = Barrier::new(2);
            let (ra, rb) = thread::scope(|sc| {
                let ta = sc.spawn(|| racing_patch(a, &path, held, &x[k..], &start));
                let tb = sc.spawn(|| racing_patch(b, &path, held, &y[k..], &start));
                (ta.join().unwrap(), tb.join().unwrap())
            });
            let ctx = format!("round {i} attempt {attempt} (offset {held})");
            let ra = ra.unwrap_or_else(|e| panic!("{ctx}: PATCH on A got no answer: {e}"));
            let rb = rb.unwrap_or_else(|e| panic!("{ctx}: PATCH on B got no answer: {e}"));
            this.push(format!("A {} | B {}", brief(&ra), brief(&rb)));
            for (node, r) in [("A", &ra), ("B", &rb)] {
                assert!(
                    matches!(r.status, 204 | 409 | 423),
                    "{ctx}: PATCH on {node} answered {} (only 204, 409 or 423 are allowed)",
                    brief(r)
                );
                if r.status != 204 {
                    *refusals
                        .entry(format!("{} {}", r.status, code(r)))
                        .or_default() += 1;
                }
            }
            assert!(
                !(ra.status == 204 && rb.status == 204),
                "{ctx}: both PATCHes at the same offset answered 204: A {}, B {}",
                brief(&ra),
                brief(&rb)
            );
            let winner = match (ra.status, rb.status) {
                (204, _) => Some(("A", &ra, &x[k..])),
                (_, 204) => Some(("B", &rb, &y[k..])),
                _ => None,
            };
            if let Some((node, r, body)) = winner {
                assert_eq!(
                    upload_offset(r),
                    Some(end),
                    "{ctx}: the 204 from {node} must name the end of the block"
                );
                expected[held..end].copy_from_slice(body);
                story.push((held..end, format!("{node} wrote {held}..{end} (204)")));
                if node == "A" {
                    won_a += 1;
                } else {
                    won_b += 1;
                }
                held = end;
            } else {
                // Neither: a preempted append keeps what arrived (and says so with
                // `upload_superseded`); both nodes must agree on the offset.
                let now = head_offset(a, &path, &ctx);
                let now_b = head_offset(b, &path, &ctx);
                assert_eq!(now, now_b, "{ctx}: HEAD on A and on B disagree");
                assert!(
                    (held..=end).contains(&now),
                    "{ctx}: after two refused PATCHes HEAD says {now}: {this:?}"
                );
                if now > held {
                    let keepers: Vec<_> = [("A", &ra, &x[k..]), ("B", &rb, &y[k..])]
                        .into_iter()
                        .filter(|(_, r, _)| {
                            code(r) == "upload_superseded" && named_offset(r) == Some(now)
                        })
                        .collect();
                    assert_eq!(
                        keepers.len(),
                        1,
                        "{ctx}: the offset moved to {now} though neither PATCH succeeded; \
                         exactly one answer must be `upload_superseded` naming {now}: {this:?}"
                    );
                    let (node, _, body) = keepers[0];
                    expected[held..now].copy_from_slice(&body[..now - held]);
                    story.push((held..now, format!("{node} kept {held}..{now} (superseded)")));
                    kept_partial += 1;
                    held = now;
                }
            }
        }
    }

    // The file holds exactly what the answers acknowledged: no interleaving.
    let got = download(b, &path);
    assert_eq!(got.len(), expected.len(), "downloaded length");
    for i in 0..ROUNDS {
        let r = i * BLOCK..(i + 1) * BLOCK;
        if got[r.clone()] != expected[r.clone()] {
            let first = (r.start..r.end).find(|&j| got[j] != expected[j]).unwrap();
            let x = source(BLOCK, 10_000 + 2 * i as u64);
            let y = source(BLOCK, 10_001 + 2 * i as u64);
            let from_x = got[r.clone()]
                .iter()
                .zip(&x)
                .filter(|(g, w)| g == w)
                .count();
            let from_y = got[r.clone()]
                .iter()
                .zip(&y)
                .filter(|(g, w)| g == w)
                .count();
            panic!(
                "block {i} ({r:?}) is not what the answers acknowledged: first difference at \
                 byte {first}; {from_x} bytes match X_{i} (A's body), {from_y} match Y_{i} \
                 (B's body); writes: {:?}",
                story
                    .iter()
                    .filter(|(w, _)| w.start < r.end && r.start < w.end)
                    .map(|(_, s)| s)
                    .collect::<Vec<_>>()
            );
        }
    }
    assert_same_bytes(&download(a, &path), &got, "download from A vs from B");
    eprintln!(
        "{ROUNDS} rounds: A won {won_a}, B won {won_b}, partial keeps by a superseded PATCH \
         {kept_partial}, retried attempts {retries}; refusals {refusals:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 2. A node killed mid-write
// ---------------------------------------------------------------------------------------

#[test]
fn a_node_killed_mid_write_frees_the_upload_within_5s() {
    let db = TestDb::create("killed");
    let mut n = Nodes::start(&db.url);
    let src = source(8 * MIB, 71);
    let path = create(n.a.port, src.len());

    let sent = 3 * MIB;
    let mut s = connect(n.a.port).expect("connect A");
    write_head(
        &mut s,
        n.a.port,
        "PATCH",
        &path,
        &patch_headers(0),
        src.len(),
    )
    .unwrap();
    send_in_pieces(&mut s, &src[..sent], 6, Duration::from_millis(20)).unwrap();
    sleep(Duration::from_millis(200));
    let killed = Instant::now();
    n.a.kill();
    drop(s);

    let log = resume_until(
        n.b.port,
        &path,
        &src,
        sent,
        killed + TAKEOVER,
        "node B after kill -9 of node A",
    );
    let took = killed.elapsed();
    eprintln!("takeover after kill -9 of A: {took:?}; {log:?}");
    assert!(
        took <= TAKEOVER,
        "B finished only {took:?} after the kill: {log:?}"
    );
    assert_same_bytes(&download(n.b.port, &path), &src, "download from B");
}

// ---------------------------------------------------------------------------------------
// 3. An abandoned, hanging PATCH
// ---------------------------------------------------------------------------------------

#[test]
fn an_abandoned_hanging_patch_on_a_is_taken_over_on_b() {
    let db = TestDb::create("hanging");
    let n = Nodes::start(&db.url);
    let src = source(8 * MIB, 72);
    let path = create(n.a.port, src.len());

    let sent = MIB;
    let mut stalled = connect(n.a.port).expect("connect A");
    write_head(
        &mut stalled,
        n.a.port,
        "PATCH",
        &path,
        &patch_headers(0),
        src.len(),
    )
    .unwrap();
    send_in_pieces(&mut stalled, &src[..sent], 4, Duration::from_millis(20)).unwrap();
    sleep(Duration::from_millis(500));

    let gave_up = Instant::now();
    let log = resume_until(
        n.b.port,
        &path,
        &src,
        sent,
        gave_up + TAKEOVER,
        "node B taking over a stalled PATCH on A",
    );
    let took = gave_up.elapsed();
    eprintln!("takeover of a stalled PATCH: {took:?}; {log:?}");
    assert!(
        took <= TAKEOVER,
        "B finished only {took:?} after giving up on A: {log:?}"
    );

    // The abandoned request's client wakes up and sends the rest of its body, as garbage: a
    // writer that was not stopped when B took over would now write it into the finished
    // file. (Errors are expected: a stopped request reads no more.)
    let garbage = source(src.len() - sent, 99);
    stalled
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let wrote = stalled.write_all(&garbage);
    // What the stalled request heard (informational), then close it.
    stalled
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    match read_response_to(&mut stalled, "PATCH") {
        Ok(r) => eprintln!(
            "the stalled PATCH on A answered {} (late garbage written: {wrote:?})",
            brief(&r)
        ),
        Err(e) => eprintln!(
            "the stalled PATCH on A: no answer within 2 s ({e}; late garbage written: {wrote:?})"
        ),
    }
    drop(stalled);
    sleep(Duration::from_millis(300));
    for (node, port) in [("B", n.b.port), ("A", n.a.port)] {
        assert_eq!(
            head_offset(port, &path, "after closing the stalled PATCH"),
            src.len(),
            "HEAD on {node} after the stalled PATCH on A ended"
        );
        assert_same_bytes(
            &download(port, &path),
            &src,
            &format!(
                "download from {node} after the stalled PATCH on A got the rest of its body \
                 (garbage) and was closed"
            ),
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. Chunks spread over both nodes
// ---------------------------------------------------------------------------------------

fn count_in_log(srv: &Server, needle: &str) -> usize {
    std::fs::read_to_string(&srv.log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

#[test]
fn chunks_sent_round_robin_to_both_nodes_complete_once() {
    let db = TestDb::create("roundrobin");
    let n = Nodes::start(&db.url);
    let (a, b) = (n.a.port, n.b.port);
    let src = source(12 * MIB, 73);
    let c = Chunked::new(&src, MIB);
    let count = c.ids.len();
    assert_eq!(count, 12);
    let all: Vec<usize> = (0..count).collect();
    assert_eq!(
        c.handshake(a),
        c.missing(&all),
        "a new upload misses every chunk"
    );

    let next = AtomicUsize::new(0);
    let answers: Mutex<Vec<(usize, serde_json::Value)>> = Mutex::new(Vec::new());
    thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= count {
                        break;
                    }
                    let port = if i.is_multiple_of(2) { a } else { b };
                    let data = c.send(port, &src, i);
                    answers.lock().unwrap().push((i, data));
                }
            });
        }
    });
    let answers = answers.into_inner().unwrap();
    assert_eq!(answers.len(), count);
    let want_path = format!("/upload/{}.bin", c.file_id);
    let mut urls = 0;
    for (i, data) in &answers {
        match data {
            serde_json::Value::String(url) => {
                assert_eq!(path_of(url), want_path, "chunk {i}: the URL");
                urls += 1;
            }
            serde_json::Value::Array(missing) => assert!(
                !missing.contains(&serde_json::json!(c.ids[*i])),
                "chunk {i} was answered 200 but is still listed as missing: {data}"
            ),
            _ => panic!("chunk {i}: unexpected data {data}"),
        }
    }
    assert!(
        urls >= 1,
        "no chunk answer says the file is complete (the last ones must): {answers:?}"
    );
    // Completed exactly once over both nodes.
    let completions = count_in_log(&n.a, "upload complete") + count_in_log(&n.b, "upload complete");
    assert_eq!(
        completions, 1,
        "`upload complete` logged {completions} times over both nodes; answers {answers:?}"
    );
    for (node, port) in [("A", a), ("B", b)] {
        let again = c.handshake(port);
        assert_eq!(
            again.as_str().map(path_of),
            Some(want_path.as_str()),
            "a handshake on {node} after the last chunk: {again}"
        );
        let got = download(port, &want_path);
        assert_same_bytes(&got, &src, &format!("download from {node}"));
        assert_eq!(md5_hex(&got), c.file_id, "MD5 of the download from {node}");
    }
    eprintln!(
        "chunk answers with the URL: {urls} of {count} (order {:?})",
        answers.iter().map(|(i, _)| *i).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------
// 5. PostgreSQL restarted under an upload
// ---------------------------------------------------------------------------------------

fn pg_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg.sh")
}

/// A PostgreSQL cluster of this test's own (`scripts/pg.sh start` with no `FERRY_PG_DIR`),
/// stopped and removed on drop: restarting it disturbs no other test.
struct OwnCluster {
    dir: String,
    url: String,
}

impl OwnCluster {
    fn start() -> OwnCluster {
        let out = Command::new(pg_script())
            .arg("start")
            .env_remove("FERRY_PG_DIR")
            .env_remove("FERRY_TEST_DATABASE_URL")
            .output()
            .expect("running scripts/pg.sh start");
        assert!(
            out.status.success(),
            "scripts/pg.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let var = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(|v| v.trim_matches('\'').trim_matches('"').to_owned())
                .unwrap_or_else(|| panic!("scripts/pg.sh start printed no {name}: {text}"))
        };
        let dir = var("FERRY_PG_DIR");
        let url = var("FERRY_TEST_DATABASE_URL");
        OwnCluster { dir, url }
    }

    fn pg(&self, what: &str) -> std::process::Output {
        Command::new(pg_script())
            .arg(what)
            .env("FERRY_PG_DIR", &self.dir)
            .output()
            .unwrap_or_else(|e| panic!("running scripts/pg.sh {what}: {e}"))
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let out = self.pg("stop");
        if !out.status.success() {
            eprintln!(
                "scripts/pg.sh stop: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn postgresql_restarted_mid_upload_the_cli_rides_it_out() {
    let pg = OwnCluster::start();
    let n = Nodes::start(&pg.url);
    let tmp = tempfile::tempdir().unwrap();
    let src = source(48 * MIB, 74);
    std::fs::write(tmp.path().join("big.bin"), &src).unwrap();
    // 8 MiB/s into node A: the upload takes about 6 s.
    let proxy = throttled_proxy(n.a.port, 8 * MIB);

    let mut child = support::spawn_tus_upload(tmp.path(), proxy, "60s");
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let stdout = child.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let stderr = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let deadline = Instant::now() + Duration::from_secs(150);
    let mut restarted: Option<(Instant, u64, u64)> = None; // (done at, bytes then, total)
    let mut result: Option<(Instant, serde_json::Value)> = None;
    let mut lines = Vec::new();
    let mut retries = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, line) = match rx.recv_timeout(left) {
            Ok(x) => x,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("ferry upload still running after 150 s; output: {lines:?}");
            }
        };
        lines.push(line.clone());
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        match v["event"].as_str() {
            Some("progress") if restarted.is_none() => {
                let (bytes, total) = (v["bytes"].as_u64().unwrap(), v["total"].as_u64().unwrap());
                if bytes * 4 >= total {
                    let out = pg.pg("restart");
                    assert!(
                        out.status.success(),
                        "scripts/pg.sh restart: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    restarted = Some((Instant::now(), bytes, total));
                    eprintln!("PostgreSQL restarted at {bytes} of {total} bytes");
                }
            }
            Some("retry") => retries += 1,
            Some("result") => result = Some((at, v)),
            _ => {}
        }
    }
    let status = child.wait().unwrap();
    let stderr = stderr.join().unwrap();
    assert!(
        status.success(),
        "ferry upload exited {status}; stderr: {stderr}; output: {lines:?}"
    );
    let (restarted_at, bytes_then, total) =
        restarted.unwrap_or_else(|| panic!("the upload never reached 25 %: {lines:?}"));
    assert!(bytes_then < total, "the restart came after the last byte");
    let (result_at, result) = result.unwrap_or_else(|| panic!("no result line: {lines:?}"));
    assert!(
        result_at > restarted_at,
        "the upload finished before PostgreSQL was back: not a test of riding it out"
    );
    assert_eq!(result["status"], "ok", "{result}");
    let url = result["url"].as_str().expect("result url");
    eprintln!(
        "upload finished {:?} after the restart, {retries} retry lines",
        result_at - restarted_at
    );
    assert_same_bytes(&download(n.b.port, url), &src, "download from B");
    assert_same_bytes(&download(n.a.port, url), &src, "download from A");
}

// ---------------------------------------------------------------------------------------
// 6. Expiry of idle uploads, once over both nodes
// ---------------------------------------------------------------------------------------

/// `ferry_uploads_expired_total` of one node's `/metrics`, and the whole exposition (for
/// failure messages).
fn expired_total(port: u16) -> (Option<u64>, String) {
    match try_request(port, "GET", "/metrics", &[], b"") {
        Ok(r) if r.status == 200 => {
            let text = r.text();
            let n = text.lines().find_map(|l| {
                l.strip_prefix("ferry_uploads_expired_total ")
                    .and_then(|v| v.trim().parse().ok())
            });
            (n, text)
        }
        Ok(r) => (None, format!("GET /metrics answered {}", brief(&r))),
        Err(e) => (None, format!("GET /metrics: {e}")),
    }
}

/// Both nodes' counters and, for messages, their `ferry_uploads_*` lines.
fn expired_on_both(a: u16, b: u16) -> (Option<u64>, String) {
    let (na, ta) = expired_total(a);
    let (nb, tb) = expired_total(b);
    let pick = |t: &str| {
        let lines: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("ferry_uploads_") || !l.starts_with("ferry_"))
            .filter(|l| !l.starts_with('#'))
            .collect();
        if lines.is_empty() {
            t.to_owned()
        } else {
            lines.join("\n")
        }
    };
    let report = format!(
        "ferry_uploads_expired_total: A {na:?}, B {nb:?}\n--- /metrics of A ---\n{}\n\
         --- /metrics of B ---\n{}",
        pick(&ta),
        pick(&tb)
    );
    (na.zip(nb).map(|(x, y)| x + y), report)
}

/// The tus `HEAD` status of `path` on `port` (`None`: no answer).
fn head_status(port: u16, path: &str) -> Option<u16> {
    try_request(port, "HEAD", path, &tus(&[]), b"")
        .ok()
        .map(|r| r.status)
}

#[test]
fn an_idle_upload_expires_once_across_nodes() {
    const LIMIT: Duration = Duration::from_secs(2);
    /// How long the idle uploads may take to go, after their last byte.
    const GRACE: Duration = Duration::from_secs(30);
    const KEEP_ALIVE_FOR: Duration = Duration::from_secs(6);
    const EVERY: Duration = Duration::from_millis(500);
    const LEN: usize = MIB;
    const FIRST: usize = 64 * KIB;
    const PIECE: usize = KIB;
    let db = TestDb::create("expiry");
    let n = Nodes::start_with(&db.url, &["--expire-incomplete", "2s"]);
    let (a, b) = (n.a.port, n.b.port);
    let src = source(LEN, 75);

    let started = |port: u16, what: &str| {
        let path = create(port, LEN);
        let r = request(port, "PATCH", &path, &patch_headers(0), &src[..FIRST]);
        assert_eq!(r.status, 204, "{what}: first PATCH: {}", brief(&r));
        assert_eq!(upload_offset(&r), Some(FIRST), "{what}: first PATCH");
        path
    };
    let kept = started(a, "kept-alive upload (A)");
    let idle: Vec<(String, String)> = vec![
        ("idle upload 1 (A)".into(), started(a, "idle upload 1 (A)")),
        ("idle upload 2 (A)".into(), started(a, "idle upload 2 (A)")),
        ("idle upload 3 (B)".into(), started(b, "idle upload 3 (B)")),
    ];
    let idle_since = Instant::now();
    let deadline = idle_since + LIMIT + GRACE;

    // The kept-alive upload is written on B (the other node) every 500 ms, until told to stop
    // and for at least KEEP_ALIVE_FOR.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let keep_log: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let keep_failed = std::sync::atomic::AtomicBool::new(false);
    let kept_offset = thread::scope(|sc| {
        let keeper = sc.spawn(|| {
            let began = Instant::now();
            let mut offset = FIRST;
            while !(stop.load(Ordering::SeqCst) && began.elapsed() >= KEEP_ALIVE_FOR) {
                sleep(EVERY);
                let at = began.elapsed();
                let r = exchange(
                    b,
                    "PATCH",
                    &kept,
                    &patch_headers(offset),
                    &src[offset..offset + PIECE],
                );
                let line = match &r {
                    Ok(r) => format!("{at:.1?}: PATCH at {offset} on B: {}", brief(r)),
                    Err(e) => format!("{at:.1?}: PATCH at {offset} on B: no answer ({e})"),
                };
                keep_log.lock().unwrap().push(line);
                match r {
                    Ok(r) if r.status == 204 && upload_offset(&r) == Some(offset + PIECE) => {
                        offset += PIECE;
                    }
                    _ => {
                        keep_failed.store(true, Ordering::SeqCst);
                        return offset;
                    }
                }
            }
            offset
        });
        let keeper_failed = || {
            keep_failed.load(Ordering::SeqCst).then(|| {
                format!(
                    "keeping {kept} alive with PATCHes on B failed: {:#?}",
                    keep_log.lock().unwrap()
                )
            })
        };

        // The idle ones go, from both nodes' point of view.
        let mut gone_at = Vec::new();
        loop {
            if let Some(m) = keeper_failed() {
                stop.store(true, Ordering::SeqCst);
                panic!("{m}");
            }
            let states: Vec<(&str, Option<u16>, Option<u16>)> = idle
                .iter()
                .map(|(what, p)| (what.as_str(), head_status(a, p), head_status(b, p)))
                .collect();
            if states
                .iter()
                .all(|(_, x, y)| *x == Some(404) && *y == Some(404))
            {
                gone_at.push(idle_since.elapsed());
                break;
            }
            if Instant::now() >= deadline {
                stop.store(true, Ordering::SeqCst);
                panic!(
                    "the idle uploads are not gone on both nodes {:?} after their last byte \
                     (limit {LIMIT:?}): HEAD status (A, B): {states:?}\n{}",
                    idle_since.elapsed(),
                    expired_on_both(a, b).1
                );
            }
            sleep(Duration::from_millis(200));
        }
        let gone = gone_at[0];

        // Counted once: the sum reaches 3 (the counter follows the deletion) and stays there
        // over a few more expiry passes (every second with a 2 s limit) on both nodes.
        let counted = loop {
            let (sum, report) = expired_on_both(a, b);
            match sum {
                Some(s) if s == idle.len() as u64 => break report,
                Some(s) if s > idle.len() as u64 => {
                    stop.store(true, Ordering::SeqCst);
                    panic!(
                        "{s} expiries counted over both nodes for {} idle uploads (each must \
                         be counted once):\n{report}",
                        idle.len()
                    );
                }
                _ if Instant::now() >= deadline => {
                    stop.store(true, Ordering::SeqCst);
                    panic!(
                        "the idle uploads are gone, but the expiry counters do not add up to \
                         {}:\n{report}",
                        idle.len()
                    );
                }
                _ => sleep(Duration::from_millis(100)),
            }
        };
        sleep(Duration::from_millis(2500));
        let (sum, report) = expired_on_both(a, b);
        if sum != Some(idle.len() as u64) {
            stop.store(true, Ordering::SeqCst);
            panic!(
                "the expiry counters moved after the idle uploads were gone (before: \
                 {counted}):\n{report}"
            );
        }
        eprintln!(
            "idle uploads gone on both nodes {gone:?} after their last byte (limit {LIMIT:?}); \
             {report}"
        );

        // The kept-alive one is still there, on both nodes, while it is written.
        if let Some(m) = keeper_failed() {
            stop.store(true, Ordering::SeqCst);
            panic!("{m}");
        }
        for (node, port) in [("A", a), ("B", b)] {
            let r = try_request(port, "HEAD", &kept, &tus(&[]), b"");
            if !matches!(&r, Ok(r) if r.status == 200) {
                stop.store(true, Ordering::SeqCst);
                panic!(
                    "the kept-alive upload {kept} is gone on {node} ({:?}) though it was \
                     written every {EVERY:?}: {:#?}\n{}",
                    r.map(|r| brief(&r)),
                    keep_log.lock().unwrap(),
                    expired_on_both(a, b).1
                );
            }
        }
        stop.store(true, Ordering::SeqCst);
        keeper.join().unwrap()
    });
    if let Some(m) = keep_failed
        .load(Ordering::SeqCst)
        .then(|| format!("{:#?}", keep_log.lock().unwrap()))
    {
        panic!("keeping {kept} alive with PATCHes on B failed: {m}");
    }
    let patches = keep_log.lock().unwrap().len();
    for (node, port) in [("A", a), ("B", b)] {
        assert_eq!(
            head_offset(port, &kept, "the kept-alive upload"),
            kept_offset,
            "HEAD of the kept-alive upload on {node} after {patches} PATCHes on B"
        );
    }

    // Left alone, it expires too, and is counted once more: 4 in all.
    let left = Instant::now();
    let deadline = left + LIMIT + GRACE;
    loop {
        let (sum, report) = expired_on_both(a, b);
        let states = (head_status(a, &kept), head_status(b, &kept));
        if states == (Some(404), Some(404)) && sum == Some(idle.len() as u64 + 1) {
            eprintln!(
                "the kept-alive upload ({patches} PATCHes on B) expired {:?} after its last \
                 PATCH; counted once more",
                left.elapsed()
            );
            break;
        }
        assert!(
            sum.is_none_or(|s| s <= idle.len() as u64 + 1),
            "more expiries counted than uploads existed:\n{report}"
        );
        assert!(
            Instant::now() < deadline,
            "the kept-alive upload, left alone, is not gone and counted once within \
             {:?}: HEAD (A, B) {states:?}\n{report}",
            LIMIT + GRACE
        );
        sleep(Duration::from_millis(200));
    }
}

#[test]
fn postgresql_unreachable_answers_503_with_retry_after_and_the_node_recovers_by_itself() {
    let pg = OwnCluster::start();
    let n = Nodes::start(&pg.url);
    let src = source(2 * MIB, 75);
    let path = create(n.a.port, src.len());
    let r = request(n.a.port, "PATCH", &path, &patch_headers(0), &src[..MIB]);
    assert_eq!(r.status, 204, "first half: {}", brief(&r));

    let out = pg.pg("halt");
    assert!(
        out.status.success(),
        "scripts/pg.sh halt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let down = Instant::now();
    // /healthz turns 503 within 2 s.
    loop {
        let r = request(n.a.port, "GET", "/healthz", &[], b"");
        if r.status == 503 {
            break;
        }
        assert!(
            down.elapsed() < Duration::from_secs(2),
            "/healthz still {} {:?} after the database went away",
            r.status,
            down.elapsed()
        );
        sleep(Duration::from_millis(100));
    }
    // A write answers 503 with Retry-After and a stable code; nothing is acknowledged.
    let r = exchange(n.b.port, "PATCH", &path, &patch_headers(MIB), &src[MIB..])
        .expect("PATCH while the database is down");
    assert_eq!(
        r.status,
        503,
        "PATCH while the database is down: {}",
        brief(&r)
    );
    assert_eq!(r.header("retry-after"), Some("5"), "{}", brief(&r));
    assert_eq!(code(&r), "metadata_unavailable", "{}", brief(&r));

    let out = pg.pg("resume");
    assert!(
        out.status.success(),
        "scripts/pg.sh resume: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = Instant::now();
    // The nodes find the database again by themselves.
    for node in [n.a.port, n.b.port] {
        loop {
            let r = request(node, "GET", "/healthz", &[], b"");
            if r.status == 200 {
                break;
            }
            assert!(
                back.elapsed() < Duration::from_secs(10),
                "/healthz still {} after the database came back",
                r.status
            );
            sleep(Duration::from_millis(100));
        }
    }
    assert_eq!(head_offset(n.b.port, &path, "after the outage"), MIB);
    let r = request(n.b.port, "PATCH", &path, &patch_headers(MIB), &src[MIB..]);
    assert_eq!(r.status, 204, "second half after the outage: {}", brief(&r));
    assert_same_bytes(
        &download(n.a.port, &path),
        &src,
        "download after the outage",
    );
}
