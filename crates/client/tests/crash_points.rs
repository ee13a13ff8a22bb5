//! Every crash point of every multi-step sequence that touches both files and metadata
//! (SPEC §4): chunk staging and placement, publishing, concatenation, delete, expiry and
//! recovery itself.
//!
//! The tests' build of the `ferry` binary has named crash points (`ferry_core::crash`). For
//! each scenario a dry run with `FERRY_CRASH_TRACE` lists the points and file-system
//! operations the sequence passes (after the server is up); then the scenario runs once per
//! point with `FERRY_CRASH_AT=<point>#<n>`, so the process aborts exactly there, as `kill -9`
//! would. The server is then started again with the same crash point (recovery passes many
//! of the same points: a crash during recovery), and finally without one, and the checks are:
//!
//! - the server starts;
//! - everything acknowledged is reported held by the dialect that wrote it;
//! - nothing finished is torn: a file served is the whole source, never a prefix;
//! - the upload completes from what the server reports, with identical bytes;
//! - no file of an upload is left behind once the upload is finished or deleted.
//!
//! The dry run's trace is also checked for the order of file-system operations: a new or
//! renamed directory entry is made durable (its directory fsynced) before the metadata
//! refers to it, and a file is removed only after the metadata stopped needing it.

mod support;

use support::chunked::Chunked;
use support::proc::{Resp, Server, download, path_of, try_request};
use support::{assert_same_bytes, source};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------

/// A client-side sequence, with what the server acknowledged so far.
trait Scenario {
    /// Extra `serve` arguments while the sequence runs.
    fn args(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Runs the client steps, recording each acknowledgement; `Err` once the server is gone.
    fn drive(&mut self, port: u16) -> io::Result<()>;
    /// On a restarted server (no crash point): checks that everything acknowledged is held
    /// and nothing is torn, then finishes the sequence and compares the bytes.
    fn check(&mut self, srv: &Server);
}

/// One crash target: a point and at which of its hits (1-based, counted from process start).
type Target = (String, u64);

/// Runs `make()`'s scenario once with a trace, checks the trace's order of operations, then
/// once per crash point it passed. Returns the points it crashed at.
fn crash_everywhere(make: impl Fn() -> Box<dyn Scenario>) -> Vec<Target> {
    let targets = dry_run(&make);
    assert!(
        !targets.is_empty(),
        "the dry run passed no crash point: is the binary built with crash points?"
    );
    let mut report = Vec::new();
    for t in &targets {
        let during_recovery = crash_at(&make, t);
        report.push(format!(
            "{}#{}{}",
            t.0,
            t.1,
            if during_recovery { " (+recovery)" } else { "" }
        ));
    }
    eprintln!("crashed at {} points: {}", report.len(), report.join(", "));
    targets
}

/// The dry run: the sequence without a crash, traced; returns the crash targets it passed.
fn dry_run(make: &impl Fn() -> Box<dyn Scenario>) -> Vec<Target> {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("trace");
    let mut sc = make();
    let mut srv = Server::new(tmp.path(), &sc.args());
    srv.env = vec![("FERRY_CRASH_TRACE".into(), trace.display().to_string())];
    srv.spawn();
    let up = read_trace(&trace).len();
    sc.drive(srv.port)
        .expect("the dry run (no crash point) failed");
    // Work that follows the last answer (removing a deleted upload's files, say) belongs to
    // the sequence too: wait until the trace is quiet.
    let mut lines = read_trace(&trace);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = read_trace(&trace);
        if now.len() == lines.len() {
            break;
        }
        lines = now;
    }
    let driven = lines.len();
    sc.check(&srv);
    srv.kill();
    check_order(&read_trace(&trace));

    let mut seen: HashMap<&str, u64> = HashMap::new();
    let mut targets = Vec::new();
    for (i, line) in lines[..driven].iter().enumerate() {
        let name = line.split(' ').next().unwrap_or_default();
        let n = seen.entry(name).or_default();
        *n += 1;
        if i >= up {
            targets.push((name.to_owned(), *n));
        }
    }
    targets
}

/// Runs the scenario with the process aborting at `target`, restarts with the same point
/// (a crash during recovery when recovery passes it), then restarts cleanly and checks.
/// Tells whether recovery crashed too.
fn crash_at(make: &impl Fn() -> Box<dyn Scenario>, target: &Target) -> bool {
    let (name, n) = target;
    let at = format!("{name}#{n}");
    eprintln!("-- crash at {at}");
    let tmp = tempfile::tempdir().unwrap();
    let mut sc = make();
    let mut srv = Server::new(tmp.path(), &sc.args());
    srv.env = vec![("FERRY_CRASH_AT".into(), at.clone())];
    srv.spawn();
    let driven = sc.drive(srv.port);
    let status = srv.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some(),
        "crash point {at} was never reached (the sequence ended {}); log:\n{}",
        if driven.is_ok() {
            "normally"
        } else {
            "with an error"
        },
        srv.log_tail()
    );
    // Again with the same point: recovery may pass it.
    srv.args.clear();
    srv.env = vec![("FERRY_CRASH_AT".into(), format!("{name}#1"))];
    let recovery_crashed = srv.try_spawn().is_err();
    srv.kill();
    srv.spawn();
    sc.check(&srv);
    recovery_crashed
}

fn read_trace(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The order rules, on one trace:
/// - at every metadata write, no entry of that upload created or renamed since its
///   directory's last fsync (the record would point at a name a power cut can take away);
/// - a partial or complete blob is removed only after its record was deleted, and a staging
///   blob only after a metadata commit that followed its placement.
fn check_order(lines: &[String]) {
    let mut dirty: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    let mut deleted: HashSet<String> = HashSet::new();
    let mut inserted: HashSet<String> = HashSet::new();
    // staging name → whether a commit of its upload followed its placement.
    let mut placed: HashMap<String, bool> = HashMap::new();
    for (i, line) in lines.iter().enumerate() {
        let mut words = line.split(' ');
        let op = words.next().unwrap_or_default();
        let args: Vec<&str> = words.collect();
        let split = |p: &str| -> (String, String) {
            let (d, n) = p.split_once('/').unwrap_or(("", p));
            (d.to_owned(), n.to_owned())
        };
        match op {
            "fs.create" => {
                let (d, n) = split(args[0]);
                dirty.entry(d).or_default().insert(n);
            }
            "fs.rename" => {
                for a in &args {
                    let (d, n) = split(a);
                    dirty.entry(d).or_default().insert(n);
                }
            }
            "fs.sync_dir" => {
                dirty.remove(args[0]);
            }
            "fs.place_staged.synced" => {
                placed.insert(split(args[0]).1, false);
            }
            "meta.insert" | "meta.update" | "meta.delete" => {
                let id = args[0];
                if op != "meta.delete"
                    && let Some((d, n)) = dirty.iter().find_map(|(d, names)| {
                        names.iter().find(|n| n.starts_with(id)).map(|n| (d, n))
                    })
                {
                    panic!(
                        "trace line {i}: {op} {id} while the entry {d}/{n} is not durable \
                         (its directory was not fsynced since it changed)\n{}",
                        lines.join("\n")
                    );
                }
                if op == "meta.delete" {
                    deleted.insert(id.to_owned());
                } else if op == "meta.insert" {
                    inserted.insert(id.to_owned());
                }
                for (name, committed) in placed.iter_mut() {
                    if name.starts_with(id) {
                        *committed = true;
                    }
                }
            }
            "fs.unlink" => {
                let (d, n) = split(args[0]);
                let id = n.split('.').next().unwrap_or_default();
                let ok = if d == "staging" {
                    placed.get(&n).copied().unwrap_or(true) || deleted.contains(id)
                } else {
                    deleted.contains(id) || !inserted.contains(id)
                };
                assert!(
                    ok,
                    "trace line {i}: {d}/{n} removed while the metadata still needs it\n{}",
                    lines.join("\n")
                );
            }
            _ => {}
        }
    }
}

/// Names of the files under the blob store's directories that belong to upload `id`.
fn files_of(srv: &Server, id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["partial", "complete", "staging"] {
        let Ok(rd) = std::fs::read_dir(srv.data_dir.join("files").join(dir)) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(id) {
                out.push(format!("{dir}/{name}"));
            }
        }
    }
    out
}

/// Every file under `files/<dir>`.
fn files_in(srv: &Server, dir: &str) -> Vec<String> {
    std::fs::read_dir(srv.data_dir.join("files").join(dir))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn ok(r: io::Result<Resp>, what: &str) -> io::Result<Resp> {
    let r = r?;
    if r.status >= 500 {
        return Err(io::Error::other(format!(
            "{what}: {} {}",
            r.status,
            r.text()
        )));
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------------
// tus helpers
// ---------------------------------------------------------------------------------------

fn tus(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut h = vec![("Tus-Resumable", "1.0.0".to_owned())];
    h.extend_from_slice(extra);
    h
}

/// `POST /files/`; the upload's path.
fn tus_create(port: u16, extra: &[(&'static str, String)]) -> io::Result<String> {
    let r = ok(
        try_request(port, "POST", "/files/", &tus(extra), b""),
        "POST",
    )?;
    assert_eq!(r.status, 201, "POST /files/: {}", r.text());
    Ok(path_of(r.header("location").expect("Location")).to_owned())
}

fn tus_patch(port: u16, path: &str, offset: usize, body: &[u8]) -> io::Result<Resp> {
    ok(
        try_request(
            port,
            "PATCH",
            path,
            &tus(&[
                ("Upload-Offset", offset.to_string()),
                ("Content-Type", "application/offset+octet-stream".to_owned()),
            ]),
            body,
        ),
        "PATCH",
    )
}

/// `HEAD`: `Some(offset)`, or `None` for 404.
#[track_caller]
fn tus_head(port: u16, path: &str) -> Option<usize> {
    let r = try_request(port, "HEAD", path, &tus(&[]), b"").expect("HEAD");
    if r.status == 404 {
        return None;
    }
    assert_eq!(r.status, 200, "HEAD {path}");
    Some(
        r.header("upload-offset")
            .and_then(|v| v.parse().ok())
            .expect("Upload-Offset"),
    )
}

/// Sends the rest of `src` from where the server stands; the upload ends complete.
#[track_caller]
fn tus_finish(port: u16, path: &str, src: &[u8]) {
    let at = tus_head(port, path).expect("the upload exists");
    assert!(at <= src.len(), "offset {at} past the length {}", src.len());
    if at < src.len() {
        let r = tus_patch(port, path, at, &src[at..]).expect("PATCH the rest");
        assert_eq!(r.status, 204, "PATCH at {at}: {}", r.text());
    }
    assert_eq!(tus_head(port, path), Some(src.len()));
}

fn id_of(path: &str) -> String {
    path.rsplit('/').next().unwrap_or_default().to_owned()
}

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

/// Chunk dialect without `size`/`chunkSize`: the last chunk and chunk 2 arrive first and are
/// staged; chunk 0 fixes the chunk size, which places both; chunk 1 completes the file.
struct ChunkStaging {
    src: Vec<u8>,
    c: Chunked,
    acked: Vec<usize>,
    url: Option<String>,
}

impl ChunkStaging {
    const ORDER: [usize; 4] = [3, 2, 0, 1];

    fn boxed() -> Box<dyn Scenario> {
        let src = source(3 * MIB + 300 * KIB, 16);
        let c = Chunked::new(&src, MIB);
        Box::new(ChunkStaging {
            src,
            c,
            acked: Vec::new(),
            url: None,
        })
    }

    fn handshake(&self, port: u16) -> io::Result<serde_json::Value> {
        let body = serde_json::json!({
            "fileId": self.c.file_id, "ext": ".bin", "chunkIds": self.c.ids,
        })
        .to_string();
        let r = ok(
            try_request(
                port,
                "POST",
                "/api/upload/handshake",
                &[("Content-Type", "application/json".to_owned())],
                body.as_bytes(),
            ),
            "handshake",
        )?;
        assert_eq!(r.status, 200, "handshake: {}", r.text());
        Ok(r.json()["data"].clone())
    }

    fn send(&self, port: u16, i: usize) -> io::Result<serde_json::Value> {
        let (pre, post) = self.c.envelope(i);
        let mut body = pre;
        body.extend_from_slice(&self.src[self.c.chunks[i].clone()]);
        body.extend_from_slice(&post);
        let r = ok(
            try_request(
                port,
                "POST",
                "/api/upload",
                &[Chunked::content_type()],
                &body,
            ),
            "chunk",
        )?;
        assert_eq!(r.status, 200, "chunk {i}: {}", r.text());
        Ok(r.json()["data"].clone())
    }
}

impl Scenario for ChunkStaging {
    fn drive(&mut self, port: u16) -> io::Result<()> {
        self.handshake(port)?;
        for i in Self::ORDER {
            let data = self.send(port, i)?;
            self.acked.push(i);
            if let Some(url) = data.as_str() {
                self.url = Some(url.to_owned());
            }
        }
        assert!(self.url.is_some(), "the last chunk answered no URL");
        Ok(())
    }

    fn check(&mut self, srv: &Server) {
        let data = self.handshake(srv.port).expect("handshake after restart");
        if let Some(missing) = data.as_array() {
            assert!(
                self.url.is_none(),
                "the file was acknowledged complete, the handshake lists {data}"
            );
            for &i in &self.acked {
                assert!(
                    !missing.contains(&serde_json::json!(self.c.ids[i])),
                    "chunk {i} was acknowledged, but after the crash the handshake lists it \
                     as missing: {data}\nlog:\n{}",
                    srv.log_tail()
                );
            }
            let mut last = serde_json::Value::Null;
            for id in missing {
                let i = self.c.ids.iter().position(|x| x == id).expect("known id");
                last = self.send(srv.port, i).expect("sending a missing chunk");
            }
            assert!(last.is_string(), "the last chunk answered {last}");
        }
        let data = self.handshake(srv.port).expect("handshake");
        let url = data
            .as_str()
            .unwrap_or_else(|| panic!("not complete: {data}"));
        assert_same_bytes(&download(srv.port, url), &self.src, "chunk upload");
        for dir in ["partial", "staging"] {
            assert_eq!(
                files_in(srv, dir),
                Vec::<String>::new(),
                "files left in {dir}/ after completion"
            );
        }
    }
}

/// tus: creation, a PATCH of two thirds, the PATCH that completes (publish).
#[derive(Default)]
struct TusPublish {
    src: Vec<u8>,
    path: Option<String>,
    acked: usize,
    done: bool,
}

impl TusPublish {
    fn boxed() -> Box<dyn Scenario> {
        Box::new(TusPublish {
            src: source(3 * MIB, 17),
            ..Default::default()
        })
    }
}

impl Scenario for TusPublish {
    fn drive(&mut self, port: u16) -> io::Result<()> {
        let len = self.src.len();
        let path = tus_create(port, &[("Upload-Length", len.to_string())])?;
        self.path = Some(path.clone());
        for (from, to) in [(0, 2 * MIB), (2 * MIB, len)] {
            let r = tus_patch(port, &path, from, &self.src[from..to])?;
            assert_eq!(r.status, 204, "PATCH: {}", r.text());
            self.acked = to;
        }
        self.done = true;
        Ok(())
    }

    fn check(&mut self, srv: &Server) {
        let Some(path) = self.path.clone() else {
            // Creation was never acknowledged: the client starts over.
            self.path = Some(
                tus_create(srv.port, &[("Upload-Length", self.src.len().to_string())]).unwrap(),
            );
            return self.check(srv);
        };
        let held = tus_head(srv.port, &path).expect("an acknowledged upload exists");
        assert!(
            held >= self.acked,
            "HEAD says {held}, {} were acknowledged",
            self.acked
        );
        if self.done {
            assert_eq!(held, self.src.len());
        }
        tus_finish(srv.port, &path, &self.src);
        assert_same_bytes(&download(srv.port, &path), &self.src, "tus upload");
        assert_eq!(
            files_of(srv, &id_of(&path)),
            vec![format!("complete/{}", id_of(&path))]
        );
    }
}

/// tus concatenation: two partial uploads, then the final that assembles them.
#[derive(Default)]
struct TusConcat {
    parts: Vec<Vec<u8>>,
    paths: Vec<String>,
    part_done: Vec<bool>,
    final_path: Option<String>,
}

impl TusConcat {
    fn boxed() -> Box<dyn Scenario> {
        Box::new(TusConcat {
            parts: vec![source(MIB + 5, 18), source(MIB + MIB / 2, 19)],
            ..Default::default()
        })
    }

    fn create_final(&self, port: u16) -> io::Result<String> {
        let concat = format!("final;{}", self.paths.join(" "));
        tus_create(port, &[("Upload-Concat", concat)])
    }
}

impl Scenario for TusConcat {
    fn drive(&mut self, port: u16) -> io::Result<()> {
        for i in 0..self.parts.len() {
            let len = self.parts[i].len();
            let path = tus_create(
                port,
                &[
                    ("Upload-Length", len.to_string()),
                    ("Upload-Concat", "partial".to_owned()),
                ],
            )?;
            self.paths.push(path.clone());
            self.part_done.push(false);
            let r = tus_patch(port, &path, 0, &self.parts[i])?;
            assert_eq!(r.status, 204, "PATCH part {i}: {}", r.text());
            self.part_done[i] = true;
        }
        self.final_path = Some(self.create_final(port)?);
        Ok(())
    }

    fn check(&mut self, srv: &Server) {
        let port = srv.port;
        let whole: Vec<u8> = self.parts.concat();
        if let Some(f) = &self.final_path {
            assert_eq!(
                tus_head(port, f),
                Some(whole.len()),
                "the acknowledged final"
            );
            assert_same_bytes(&download(port, f), &whole, "acknowledged final");
            self.check_released(srv, f);
            return;
        }
        // A final whose creation was not acknowledged may still have been assembled, and
        // its parts released: their bytes then live in that final.
        let assembled = files_in(srv, "complete").iter().any(|name| {
            std::fs::read(srv.data_dir.join("files/complete").join(name)).is_ok_and(|b| b == whole)
        });
        for i in 0..self.parts.len() {
            if self.part_done.get(i).copied().unwrap_or(false) {
                let held = tus_head(port, &self.paths[i]);
                assert!(
                    held == Some(self.parts[i].len()) || (held.is_none() && assembled),
                    "part {i} was acknowledged complete, HEAD says {held:?} and no final holds it"
                );
            }
        }
        // The client goes on: unfinished parts are finished, missing or released ones sent
        // again, then the final.
        for i in 0..self.parts.len() {
            let existing = self
                .paths
                .get(i)
                .filter(|p| tus_head(port, p).is_some())
                .cloned();
            let path = match existing {
                Some(p) => p,
                None => tus_create(
                    port,
                    &[
                        ("Upload-Length", self.parts[i].len().to_string()),
                        ("Upload-Concat", "partial".to_owned()),
                    ],
                )
                .unwrap(),
            };
            tus_finish(port, &path, &self.parts[i]);
            if i < self.paths.len() {
                self.paths[i] = path;
            } else {
                self.paths.push(path);
            }
        }
        let f = self.create_final(port).expect("final");
        assert_same_bytes(&download(port, &f), &whole, "final after the crash");
        self.check_released(srv, &f);
    }
}

impl TusConcat {
    /// The final keeps only its complete file; its parts are released, or (a crash between
    /// the final's commit and the release) still complete, never half there.
    fn check_released(&self, srv: &Server, fin: &str) {
        let id = id_of(fin);
        assert_eq!(files_of(srv, &id), vec![format!("complete/{id}")]);
        for p in &self.paths {
            let pid = id_of(p);
            let left = files_of(srv, &pid);
            assert!(
                left.is_empty() || left == vec![format!("complete/{pid}")],
                "part {pid}: {left:?}"
            );
        }
    }
}

/// tus termination of an upload holding half its bytes.
#[derive(Default)]
struct TusDelete {
    src: Vec<u8>,
    path: Option<String>,
    acked: usize,
    deleted: bool,
}

impl TusDelete {
    fn boxed() -> Box<dyn Scenario> {
        Box::new(TusDelete {
            src: source(2 * MIB, 20),
            ..Default::default()
        })
    }
}

impl Scenario for TusDelete {
    fn drive(&mut self, port: u16) -> io::Result<()> {
        let path = tus_create(port, &[("Upload-Length", self.src.len().to_string())])?;
        self.path = Some(path.clone());
        let r = tus_patch(port, &path, 0, &self.src[..MIB])?;
        assert_eq!(r.status, 204);
        self.acked = MIB;
        let r = ok(try_request(port, "DELETE", &path, &tus(&[]), b""), "DELETE")?;
        assert_eq!(r.status, 204, "DELETE: {}", r.text());
        self.deleted = true;
        Ok(())
    }

    fn check(&mut self, srv: &Server) {
        let Some(path) = self.path.clone() else {
            return;
        };
        match tus_head(srv.port, &path) {
            None => assert_eq!(
                files_of(srv, &id_of(&path)),
                Vec::<String>::new(),
                "a deleted upload's files are gone after the restart"
            ),
            Some(held) => {
                assert!(
                    !self.deleted,
                    "the DELETE was acknowledged, HEAD says {held}"
                );
                assert!(
                    held >= self.acked,
                    "HEAD {held} < acknowledged {}",
                    self.acked
                );
                tus_finish(srv.port, &path, &self.src);
                assert_same_bytes(&download(srv.port, &path), &self.src, "undeleted upload");
            }
        }
    }
}

/// Expiry: a byte-offset upload left idle is removed by the janitor (`--expire-incomplete`).
#[derive(Default)]
struct Expiry {
    src: Vec<u8>,
    acked: usize,
    expired: bool,
}

impl Expiry {
    const FILE_ID: &'static str = "expiry-scenario";

    fn boxed() -> Box<dyn Scenario> {
        Box::new(Expiry {
            src: source(MIB + 77, 21),
            ..Default::default()
        })
    }

    fn status(port: u16) -> io::Result<Resp> {
        try_request(
            port,
            "GET",
            "/api/upload/status",
            &[("X-File-Id", Self::FILE_ID.to_owned())],
            b"",
        )
    }

    fn post(&self, port: u16, from: usize, to: usize) -> io::Result<Resp> {
        ok(
            try_request(
                port,
                "POST",
                "/api/upload",
                &[
                    ("X-File-Id", Self::FILE_ID.to_owned()),
                    ("X-Start-Byte", from.to_string()),
                    ("X-File-Size", self.src.len().to_string()),
                    ("Content-Type", "application/octet-stream".to_owned()),
                ],
                &self.src[from..to],
            ),
            "POST",
        )
    }
}

impl Scenario for Expiry {
    fn args(&self) -> Vec<&'static str> {
        vec!["--expire-incomplete", "1s"]
    }

    fn drive(&mut self, port: u16) -> io::Result<()> {
        let r = self.post(port, 0, MIB / 2)?;
        assert_eq!(r.status, 200, "{}", r.text());
        self.acked = MIB / 2;
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            let r = ok(Self::status(port), "status")?;
            // Expired: the status no longer knows the upload (0, no declared size).
            if r.text().trim() == "0" && r.header("x-file-size").is_none() {
                self.expired = true;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the upload did not expire within 20 s");
    }

    fn check(&mut self, srv: &Server) {
        let r = Self::status(srv.port).expect("status");
        let held: usize = r.text().trim().parse().expect("a number");
        if r.header("x-file-size").is_none() {
            // Gone: no file of it may remain (the sweep at start-up removes leftovers).
            assert_eq!(held, 0);
            assert_eq!(
                files_in(srv, "partial"),
                Vec::<String>::new(),
                "left in partial/"
            );
        } else {
            assert!(
                !self.expired,
                "expiry was observed, the upload is back ({held})"
            );
            assert!(
                held >= self.acked,
                "status {held} < acknowledged {}",
                self.acked
            );
        }
        let r = self
            .post(srv.port, held, self.src.len())
            .expect("finishing");
        assert_eq!(r.status, 200, "{}", r.text());
        let url = r.json()["url"].as_str().expect("url").to_owned();
        assert_same_bytes(&download(srv.port, &url), &self.src, "offset upload");
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn chunk_staging_and_placement_survive_a_crash_at_every_point() {
    let targets = crash_everywhere(ChunkStaging::boxed);
    for must in [
        "fs.place_staged.synced",
        "engine.place_staged.committed",
        "fs.unlink",
        "engine.finalize.published",
    ] {
        assert!(
            targets.iter().any(|(n, _)| n == must),
            "the sequence never passed {must}"
        );
    }
}

#[test]
fn tus_publish_survives_a_crash_at_every_point() {
    let targets = crash_everywhere(TusPublish::boxed);
    for must in [
        "fs.publish.synced",
        "fs.rename",
        "engine.finalize.published",
    ] {
        assert!(
            targets.iter().any(|(n, _)| n == must),
            "never passed {must}"
        );
    }
}

#[test]
fn tus_concatenation_survives_a_crash_at_every_point() {
    let targets = crash_everywhere(TusConcat::boxed);
    for must in [
        "fs.copy_complete.synced",
        "engine.assemble.copied",
        "engine.assemble.published",
    ] {
        assert!(
            targets.iter().any(|(n, _)| n == must),
            "never passed {must}"
        );
    }
}

#[test]
fn tus_delete_survives_a_crash_at_every_point() {
    let targets = crash_everywhere(TusDelete::boxed);
    assert!(targets.iter().any(|(n, _)| n == "engine.delete.forgotten"));
}

#[test]
fn expiry_survives_a_crash_at_every_point() {
    let targets = crash_everywhere(Expiry::boxed);
    assert!(targets.iter().any(|(n, _)| n == "engine.delete.forgotten"));
}

/// The data directory's lock: a second server on the same directory refuses to start with a
/// sentence; a server killed while holding it leaves no stale lock behind.
#[test]
fn a_second_server_on_the_same_data_dir_is_refused_and_a_crash_leaves_no_stale_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let mut first = Server::start(tmp.path());
    let mut second = Server::new(tmp.path(), &[]);
    second.log = tmp.path().join("second.log");
    let status = second
        .try_spawn()
        .expect_err("a second server on the same data dir started");
    assert!(!status.success());
    let log = std::fs::read_to_string(&second.log).unwrap();
    let pid = first.child.as_ref().expect("running").id();
    assert!(
        log.contains("in use by another ferry server") && log.contains(&format!("process {pid}")),
        "the refusal says why and names the holder ({pid}): {log}"
    );
    first.kill();
    // The lock went with the killed process.
    second.spawn();
    second.kill();
    // A crash right after taking the lock, then a normal start.
    second.env = vec![("FERRY_CRASH_AT".into(), "server.data_dir.locked".into())];
    assert!(
        second.try_spawn().is_err(),
        "the crash point aborts start-up"
    );
    second.spawn();
}
