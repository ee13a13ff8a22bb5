//! Hooks (`--hook-url`, docs/PROTOCOL.md "Hooks") against a real `ferry serve` and a real
//! HTTP receiver started here: events of every dialect, in order and signed; the same `id`
//! on retries; blocking hooks that refuse, amend or cannot be reached; the durable queue
//! across a receiver outage and a server restart; `--hook-events`.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};
use support::chunked::Chunked;
use support::free_port;
use support::proc::{Server, request};

const SECRET: &str = "hook-test-secret-9f2c";

// ---------------------------------------------------------------------------------------
// The receiver
// ---------------------------------------------------------------------------------------

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Hit {
    raw: Vec<u8>,
    json: Value,
    signature: Option<String>,
    event_header: Option<String>,
}

impl Hit {
    fn kind(&self) -> &str {
        self.json["type"].as_str().unwrap_or("?")
    }
    fn upload(&self) -> &str {
        self.json["upload"]["id"].as_str().unwrap_or("?")
    }
    fn id(&self) -> &str {
        self.json["id"].as_str().unwrap_or("?")
    }
}

/// How the receiver answers: given the event and how many times this event `id` arrived
/// before, the status and the JSON body.
type Script = dyn Fn(&Value, usize) -> (u16, String) + Send + Sync;

/// A small HTTP/1.1 server on 127.0.0.1 recording every request.
struct Receiver {
    port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
    script: Arc<Mutex<Arc<Script>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start(script: impl Fn(&Value, usize) -> (u16, String) + Send + Sync + 'static) -> Receiver {
        Receiver::start_on(free_port(), script)
    }

    fn start_on(
        port: u16,
        script: impl Fn(&Value, usize) -> (u16, String) + Send + Sync + 'static,
    ) -> Receiver {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("binding the receiver on {port}: {e}"),
            }
        };
        listener.set_nonblocking(true).unwrap();
        let r = Receiver {
            port,
            hits: Arc::default(),
            script: Arc::new(Mutex::new(Arc::new(script))),
            stop: Arc::default(),
        };
        let (hits, script, stop) = (r.hits.clone(), r.script.clone(), r.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (hits, script) = (hits.clone(), script.clone());
                        std::thread::spawn(move || serve_one(s, &hits, &script));
                    }
                    Err(_) => sleep(Duration::from_millis(5)),
                }
            }
        });
        r
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn set_script(&self, script: impl Fn(&Value, usize) -> (u16, String) + Send + Sync + 'static) {
        *self.script.lock().unwrap() = Arc::new(script);
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Event types of `upload` in arrival order, each event once (retries left out).
    fn kinds_of(&self, upload: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let mut out = Vec::new();
        for h in self.hits() {
            if h.upload() == upload && !seen.contains(&h.id().to_owned()) {
                seen.push(h.id().to_owned());
                out.push(h.kind().to_owned());
            }
        }
        out
    }

    /// Waits until `cond` holds for the hits so far; panics with them after `within`.
    #[track_caller]
    fn wait_for(&self, within: Duration, what: &str, cond: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        let deadline = Instant::now() + within;
        loop {
            let hits = self.hits();
            if cond(&hits) {
                return hits;
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = hits
                    .iter()
                    .map(|h| format!("{} {}", h.kind(), h.upload()))
                    .collect();
                panic!("{what}: not within {within:?}; received {seen:#?}");
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_one(mut s: TcpStream, hits: &Mutex<Vec<Hit>>, script: &Mutex<Arc<Script>>) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    let raw = buf[head_end..head_end + len].to_vec();
    let json: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let before = {
        let mut hits = hits.lock().unwrap();
        let before = hits.iter().filter(|h| h.json["id"] == json["id"]).count();
        hits.push(Hit {
            raw: raw.clone(),
            json: json.clone(),
            signature: header("x-ferry-signature"),
            event_header: header("x-ferry-event"),
        });
        before
    };
    let f = script.lock().unwrap().clone();
    let (status, body) = f(&json, before);
    let resp = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes());
}

fn allow(_: &Value, _: usize) -> (u16, String) {
    (200, "{}".to_owned())
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

fn tus() -> (&'static str, String) {
    ("Tus-Resumable", "1.0.0".to_owned())
}

/// `POST /files/` with a file name; the answer.
fn tus_create(port: u16, len: usize, name: &str) -> support::proc::Resp {
    request(
        port,
        "POST",
        "/files/",
        &[
            tus(),
            ("Upload-Length", len.to_string()),
            ("Upload-Metadata", format!("filename {}", B64.encode(name))),
        ],
        b"",
    )
}

fn id_of(location: &str) -> String {
    location.rsplit('/').next().unwrap().to_owned()
}

fn tus_patch(port: u16, id: &str, offset: usize, bytes: &[u8]) -> support::proc::Resp {
    request(
        port,
        "PATCH",
        &format!("/files/{id}"),
        &[
            tus(),
            ("Upload-Offset", offset.to_string()),
            ("Content-Type", "application/offset+octet-stream".to_owned()),
        ],
        bytes,
    )
}

/// A whole tus upload of `src` in two PATCHes; the upload id.
#[track_caller]
fn tus_upload(port: u16, src: &[u8], name: &str) -> String {
    let r = tus_create(port, src.len(), name);
    assert_eq!(r.status, 201, "tus POST: {}", r.text());
    let id = id_of(r.header("location").expect("Location"));
    let half = src.len() / 2;
    let r = tus_patch(port, &id, 0, &src[..half]);
    assert_eq!(r.status, 204, "first PATCH: {}", r.text());
    let r = tus_patch(port, &id, half, &src[half..]);
    assert_eq!(r.status, 204, "last PATCH: {}", r.text());
    id
}

fn handshake_status(port: u16, c: &Chunked) -> support::proc::Resp {
    let body = json!({ "fileId": c.file_id, "ext": ".bin", "chunkIds": c.ids }).to_string();
    request(
        port,
        "POST",
        "/api/upload/handshake",
        &[("Content-Type", "application/json".to_owned())],
        body.as_bytes(),
    )
}

/// Files under the data directory's blob store (no upload leaves none).
fn blob_count(data: &Path) -> usize {
    fn walk(p: &Path) -> usize {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            walk(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&data.join("files"))
}

fn signature(body: &[u8]) -> String {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// `kinds` with runs of post-receive collapsed to one (their number depends on timing).
fn collapsed(kinds: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in kinds {
        if k == "post-receive" && out.last().is_some_and(|l| l == "post-receive") {
            continue;
        }
        out.push(k.clone());
    }
    out
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn tus_and_chunk_uploads_report_their_events_in_order_signed() {
    let rx = Receiver::start(allow);
    let dir = tempdir();
    let mut server = Server::new(
        dir.path(),
        &["--hook-url", &rx.url(), "--hook-secret", SECRET],
    );
    server.spawn();
    let port = server.port;

    // tus: create, two PATCHes, delete.
    let src = support::source(300_000, 1);
    let id = tus_upload(port, &src, "a.bin");
    let r = request(port, "DELETE", &format!("/files/{id}"), &[tus()], b"");
    assert_eq!(r.status, 204, "DELETE: {}", r.text());
    rx.wait_for(Duration::from_secs(15), "tus post-terminate", |_| {
        rx.kinds_of(&id).contains(&"post-terminate".to_owned())
    });
    let kinds = rx.kinds_of(&id);
    assert_eq!(
        collapsed(&kinds),
        [
            "pre-create",
            "post-create",
            "post-receive",
            "pre-finish",
            "post-finish",
            "post-terminate"
        ],
        "tus events: {kinds:?}"
    );

    // The chunk handshake: the same events, from another dialect.
    let csrc = support::source(200_000, 2);
    let c = Chunked::new(&csrc, 64 * 1024);
    let r = handshake_status(port, &c);
    assert_eq!(r.status, 200, "handshake: {}", r.text());
    for i in 0..c.ids.len() {
        c.send(port, &csrc, i);
    }
    let hits = rx.wait_for(Duration::from_secs(15), "chunk post-finish", |hits| {
        hits.iter()
            .any(|h| h.kind() == "post-finish" && h.upload() != id)
    });
    let cid = hits
        .iter()
        .find(|h| h.kind() == "post-finish" && h.upload() != id)
        .unwrap()
        .upload()
        .to_owned();
    let kinds = rx.kinds_of(&cid);
    assert_eq!(
        collapsed(&kinds),
        [
            "pre-create",
            "post-create",
            "post-receive",
            "pre-finish",
            "post-finish"
        ],
        "chunk events: {kinds:?}"
    );

    // A chunk upload whose file digest is not its fileId is discarded: post-terminate, and
    // no pre-finish or post-finish.
    let bsrc = support::source(100_000, 3);
    let mut bad = Chunked::new(&bsrc, 64 * 1024);
    bad.file_id = Chunked::new(&support::source(100_000, 4), 64 * 1024).file_id;
    let r = handshake_status(port, &bad);
    assert_eq!(r.status, 200, "handshake: {}", r.text());
    let last = bad.ids.len() - 1;
    for i in 0..last {
        bad.send(port, &bsrc, i);
    }
    let (mut body, post) = bad.envelope(last);
    body.extend_from_slice(&bsrc[bad.chunks[last].clone()]);
    body.extend_from_slice(&post);
    let r = request(
        port,
        "POST",
        "/api/upload",
        &[Chunked::content_type()],
        &body,
    );
    assert!(
        r.text().contains("file_digest_mismatch"),
        "the last chunk of a file whose digest is not its fileId: {} {}",
        r.status,
        r.text()
    );
    let hits = rx.wait_for(
        Duration::from_secs(15),
        "post-terminate of the discarded upload",
        |hits| {
            hits.iter()
                .any(|h| h.kind() == "post-terminate" && h.upload() != id && h.upload() != cid)
        },
    );
    let bid = hits
        .iter()
        .find(|h| h.kind() == "post-terminate" && h.upload() != id && h.upload() != cid)
        .unwrap()
        .upload()
        .to_owned();
    let kinds = rx.kinds_of(&bid);
    assert_eq!(
        collapsed(&kinds),
        [
            "pre-create",
            "post-create",
            "post-receive",
            "post-terminate"
        ],
        "events of an upload discarded for its digest: {kinds:?}"
    );

    // Every body is signed, names its event in a header, and says what it should.
    for h in rx.hits() {
        assert_eq!(
            h.signature.as_deref(),
            Some(signature(&h.raw).as_str()),
            "signature of {} {}",
            h.kind(),
            h.upload()
        );
        assert_eq!(h.event_header.as_deref(), Some(h.kind()));
        assert_eq!(h.id().len(), 32, "idempotency key {}", h.id());
        assert!(h.json["upload"]["tenant"].is_null(), "{}", h.json);
    }
    let of = |upload: &str, kind: &str| {
        rx.hits()
            .into_iter()
            .find(|h| h.upload() == upload && h.kind() == kind)
            .unwrap()
            .json
    };
    let pre = of(&id, "pre-create");
    assert_eq!(pre["upload"]["size"], 300_000);
    assert_eq!(pre["upload"]["offset"], 0);
    assert!(pre["upload"]["url"].is_null(), "{pre}");
    assert_eq!(pre["upload"]["metadata"]["filename"], "a.bin", "{pre}");
    let done = of(&id, "post-finish");
    assert_eq!(done["upload"]["offset"], 300_000, "{done}");
    assert_eq!(done["upload"]["url"], format!("/files/{id}"), "{done}");
    let done = of(&cid, "post-finish");
    assert_eq!(done["upload"]["size"], 200_000, "{done}");
    assert_eq!(done["upload"]["url"], format!("/files/{cid}"), "{done}");
    // Delivered events leave nothing queued.
    rx.wait_for(Duration::from_secs(5), "an empty queue", |_| {
        std::fs::read_dir(server.data_dir.join("hooks"))
            .unwrap()
            .flatten()
            .all(|e| e.path().is_dir())
    });
}

#[test]
fn retries_carry_the_same_id_and_body() {
    // Every event is answered 500 twice, then 200.
    let rx = Receiver::start(|_, before| {
        if before < 2 {
            (500, "{}".to_owned())
        } else {
            (200, "{}".to_owned())
        }
    });
    let dir = tempdir();
    let mut server = Server::new(
        dir.path(),
        &[
            "--hook-url",
            &rx.url(),
            "--hook-events",
            "pre-create,post-create",
        ],
    );
    server.spawn();
    // The blocking pre-create succeeds on its third attempt, within the same request.
    let r = tus_create(server.port, 10, "r.bin");
    assert_eq!(r.status, 201, "{}", r.text());
    let id = id_of(r.header("location").unwrap());
    // The queued post-create is retried with backoff until its third delivery.
    let hits = rx.wait_for(Duration::from_secs(20), "post-create 3 times", |hits| {
        hits.iter()
            .filter(|h| h.kind() == "post-create" && h.upload() == id)
            .count()
            >= 3
    });
    for kind in ["pre-create", "post-create"] {
        let of: Vec<&Hit> = hits
            .iter()
            .filter(|h| h.kind() == kind && h.upload() == id)
            .collect();
        assert_eq!(of.len(), 3, "{kind} deliveries");
        for h in &of {
            assert_eq!(h.id(), of[0].id(), "{kind}: the same id on every retry");
            assert_eq!(h.raw, of[0].raw, "{kind}: the same body on every retry");
        }
    }
    sleep(Duration::from_millis(500));
    assert_eq!(
        rx.hits()
            .iter()
            .filter(|h| h.kind() == "post-create")
            .count(),
        3,
        "no delivery after the 2xx"
    );
}

#[test]
fn pre_create_rejection_reaches_the_client_and_creates_nothing() {
    let rx = Receiver::start(|ev, _| {
        if ev["type"] == "pre-create" {
            (
                200,
                json!({"reject": true, "status": 403, "message": "project p-7 is over its quota"})
                    .to_string(),
            )
        } else {
            (200, "{}".to_owned())
        }
    });
    let dir = tempdir();
    let mut server = Server::new(dir.path(), &["--hook-url", &rx.url()]);
    server.spawn();
    let r = tus_create(server.port, 1000, "x.bin");
    assert_eq!(r.status, 403, "{}", r.text());
    let j = r.json();
    assert_eq!(j["error"], "hook_rejected", "{j}");
    assert_eq!(j["message"], "project p-7 is over its quota", "{j}");
    // The chunk dialect: the same refusal in its envelope.
    let src = support::source(1000, 3);
    let r = handshake_status(server.port, &Chunked::new(&src, 512));
    assert_eq!(r.status, 403, "{}", r.text());
    let j = r.json();
    assert_eq!(j["code"], 403, "{j}");
    assert_eq!(j["msg"], "project p-7 is over its quota", "{j}");
    // Nothing was created: no blob, no post-create.
    sleep(Duration::from_millis(500));
    assert_eq!(blob_count(&server.data_dir), 0, "blobs of refused uploads");
    let kinds: Vec<String> = rx.hits().iter().map(|h| h.kind().to_owned()).collect();
    assert_eq!(kinds, ["pre-create", "pre-create"], "{kinds:?}");
}

#[test]
fn pre_create_may_amend_metadata() {
    let rx = Receiver::start(|ev, _| {
        if ev["type"] == "pre-create" {
            (
                200,
                json!({"metadata": {"project": "p-42", "filename": "renamed.bin"}}).to_string(),
            )
        } else {
            (200, "{}".to_owned())
        }
    });
    let dir = tempdir();
    let mut server = Server::new(dir.path(), &["--hook-url", &rx.url()]);
    server.spawn();
    let r = tus_create(server.port, 1000, "original.bin");
    assert_eq!(r.status, 201, "{}", r.text());
    let id = id_of(r.header("location").unwrap());
    let r = request(server.port, "HEAD", &format!("/files/{id}"), &[tus()], b"");
    assert_eq!(r.status, 200);
    let meta: BTreeMap<String, String> = r
        .header("upload-metadata")
        .expect("Upload-Metadata")
        .split(',')
        .map(|pair| {
            let (k, v) = pair.trim().split_once(' ').unwrap_or((pair.trim(), ""));
            (
                k.to_owned(),
                String::from_utf8(B64.decode(v).unwrap()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        meta.get("project").map(String::as_str),
        Some("p-42"),
        "{meta:?}"
    );
    assert_eq!(
        meta.get("filename").map(String::as_str),
        Some("renamed.bin"),
        "{meta:?}"
    );
    let hits = rx.wait_for(Duration::from_secs(10), "post-create", |hits| {
        hits.iter().any(|h| h.kind() == "post-create")
    });
    let created = hits.iter().find(|h| h.kind() == "post-create").unwrap();
    assert_eq!(created.upload(), id);
    assert_eq!(created.json["upload"]["metadata"]["project"], "p-42");
    assert_eq!(
        created.json["upload"]["metadata"]["filename"],
        "renamed.bin"
    );
}

#[test]
fn an_unreachable_receiver_refuses_blocking_events_with_503() {
    // Nobody listens on this port.
    let url = format!("http://127.0.0.1:{}/hook", free_port());
    let dir = tempdir();
    let mut server = Server::new(dir.path(), &["--hook-url", &url]);
    server.spawn();
    let started = Instant::now();
    let r = tus_create(server.port, 1000, "x.bin");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(r.header("retry-after").is_some(), "Retry-After");
    assert_eq!(r.json()["error"], "hook_unavailable", "{}", r.text());
    let src = support::source(1000, 4);
    let r = handshake_status(server.port, &Chunked::new(&src, 512));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "hook_unavailable", "{}", r.text());
    assert_eq!(blob_count(&server.data_dir), 0, "nothing is created");
}

#[test]
fn a_refused_pre_finish_keeps_the_bytes_and_a_later_request_finishes() {
    let rx = Receiver::start(|ev, _| {
        if ev["type"] == "pre-finish" {
            (
                200,
                json!({"reject": true, "status": 409, "message": "scan pending"}).to_string(),
            )
        } else {
            (200, "{}".to_owned())
        }
    });
    let dir = tempdir();
    let mut server = Server::new(dir.path(), &["--hook-url", &rx.url()]);
    server.spawn();
    let port = server.port;
    let src = support::source(100_000, 5);
    let r = tus_create(port, src.len(), "f.bin");
    let id = id_of(r.header("location").unwrap());
    let r = tus_patch(port, &id, 0, &src);
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"], "hook_rejected");
    assert_eq!(r.json()["message"], "scan pending");
    // Every byte is held, the file is not published.
    let head = request(port, "HEAD", &format!("/files/{id}"), &[tus()], b"");
    assert_eq!(head.header("upload-offset"), Some("100000"));
    let get = request(port, "GET", &format!("/files/{id}"), &[], b"");
    assert_eq!(get.status, 404, "an unfinished upload is not served");
    // The receiver changes its mind; an empty PATCH at the end finishes the upload.
    rx.set_script(allow);
    let r = tus_patch(port, &id, src.len(), b"");
    assert_eq!(r.status, 204, "{}", r.text());
    let get = request(port, "GET", &format!("/files/{id}"), &[], b"");
    assert_eq!(get.status, 200);
    support::assert_same_bytes(&get.body, &src, "finished file");
    let hits = rx.wait_for(Duration::from_secs(10), "post-finish", |hits| {
        hits.iter().any(|h| h.kind() == "post-finish")
    });
    assert_eq!(
        hits.iter().filter(|h| h.kind() == "post-finish").count(),
        1,
        "one post-finish"
    );
}

#[test]
fn a_queued_post_finish_survives_a_dead_receiver_and_a_restart() {
    let rx_port = free_port();
    let url = format!("http://127.0.0.1:{rx_port}/hook");
    let dir = tempdir();
    let mut server = Server::new(
        dir.path(),
        &["--hook-url", &url, "--hook-events", "post-finish"],
    );
    server.spawn();
    let src = support::source(50_000, 6);
    let id = tus_upload(server.port, &src, "q.bin");
    let hooks_dir = server.data_dir.join("hooks");
    let queued = || {
        std::fs::read_dir(&hooks_dir)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .ends_with("post-finish.json")
            })
            .count()
    };
    assert_eq!(queued(), 1, "the post-finish is queued on disk");
    server.kill();
    server.spawn();
    // Only now does the receiver come up: the restarted server delivers the event.
    let rx = Receiver::start_on(rx_port, allow);
    let hits = rx.wait_for(
        Duration::from_secs(40),
        "post-finish after restart",
        |hits| hits.iter().any(|h| h.kind() == "post-finish"),
    );
    let h = hits.iter().find(|h| h.kind() == "post-finish").unwrap();
    assert_eq!(h.upload(), id);
    assert_eq!(h.json["upload"]["url"], format!("/files/{id}"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while queued() > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(20));
    }
    assert_eq!(queued(), 0, "a delivered event leaves the queue");
}

#[test]
fn hook_events_sends_only_the_events_named() {
    let rx = Receiver::start(allow);
    let dir = tempdir();
    let mut server = Server::new(
        dir.path(),
        &["--hook-url", &rx.url(), "--hook-events", "post-finish"],
    );
    server.spawn();
    let src = support::source(30_000, 7);
    let id = tus_upload(server.port, &src, "e.bin");
    let r = request(
        server.port,
        "DELETE",
        &format!("/files/{id}"),
        &[tus()],
        b"",
    );
    assert_eq!(r.status, 204);
    rx.wait_for(Duration::from_secs(10), "post-finish", |hits| {
        hits.iter().any(|h| h.kind() == "post-finish")
    });
    sleep(Duration::from_millis(1500));
    let kinds: Vec<String> = rx.hits().iter().map(|h| h.kind().to_owned()).collect();
    assert_eq!(kinds, ["post-finish"]);
}

#[test]
fn bad_hook_flags_stop_the_start_and_the_secret_stays_hidden() {
    let dir = tempdir();
    let mut server = Server::new(
        dir.path(),
        &[
            "--hook-url",
            "http://127.0.0.1:9/hook",
            "--hook-events",
            "post-finish,post-upload",
        ],
    );
    let status = server
        .try_spawn()
        .expect_err("an unknown event must stop the start");
    assert!(!status.success());
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("--hook-events") && log.contains("post-upload"),
        "{log}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--help"])
        .env("FERRY_HOOK_SECRET", "very-secret-value-31337")
        .env("FERRY_HOOK_URL", "http://user:pw-31337@127.0.0.1:9/")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--hook-secret"), "{help}");
    assert!(!help.contains("31337"), "{help}");
}

#[test]
fn with_authentication_events_name_the_tenant_and_post_finish_carries_a_signed_link() {
    let rx = Receiver::start(allow);
    let dir = tempdir();
    let mut server = Server::new(
        dir.path(),
        &["--hook-url", &rx.url(), "--auth-token", "hook-token-1"],
    );
    server.spawn();
    let port = server.port;
    let auth = ("Authorization", "Bearer hook-token-1".to_owned());
    let src = support::source(70_000, 5);
    let r = request(
        port,
        "POST",
        "/files/",
        &[
            tus(),
            auth.clone(),
            ("Upload-Length", src.len().to_string()),
            ("Content-Type", "application/offset+octet-stream".to_owned()),
        ],
        &src,
    );
    assert_eq!(r.status, 201, "tus POST with the body: {}", r.text());
    let location = r.header("location").expect("Location");
    let id = id_of(location.split('?').next().unwrap());
    let hits = rx.wait_for(Duration::from_secs(15), "post-finish", |hits| {
        hits.iter().any(|h| h.kind() == "post-finish")
    });
    let done = &hits
        .iter()
        .find(|h| h.kind() == "post-finish")
        .unwrap()
        .json;
    assert_eq!(done["upload"]["id"], id.as_str(), "{done}");
    assert_eq!(done["upload"]["tenant"], "default", "{done}");
    let url = done["upload"]["url"].as_str().expect("a URL once complete");
    assert!(url.contains("signature="), "not a signed link: {url}");
    // The link downloads without credentials, as the owner's own URL does.
    let r = request(port, "GET", url, &[], b"");
    assert_eq!(r.status, 200, "GET {url} without credentials: {}", r.text());
    assert!(r.body == src, "the link's bytes differ from the upload");
    // Without the signature the same path needs the token.
    let r = request(port, "GET", url.split('?').next().unwrap(), &[], b"");
    assert_eq!(r.status, 401, "GET without the signature or a token");
}
