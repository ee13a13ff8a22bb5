//! Hostile clients (SPEC §7), against a real server on `127.0.0.1:0` and raw sockets where a
//! well-behaved HTTP client would not misbehave on purpose: a head sent too slowly or too
//! large, duplicated upload headers, `Content-Length` with `Transfer-Encoding`, a body that
//! stalls, more connections than the cap, a shutdown with a silent client, `/metrics` behind
//! a token or on its own listener, and a `Range` past `u64`.

mod common;

use common::{TestServer, test_bytes};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};

// ---------------------------------------------------------------------------
// Raw HTTP/1.1
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// A connection reading responses one after the other (keep-alive, pipelining).
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(srv: &TestServer) -> Conn {
        let addr = srv.base.trim_start_matches("http://");
        Conn {
            s: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write");
    }

    /// Reads one response (its body by `Content-Length`); `None` if the connection closed
    /// first. Panics after 10 s.
    async fn response(&mut self) -> Option<Raw> {
        timeout(Duration::from_secs(10), self.read_response())
            .await
            .expect("no response within 10 s")
    }

    async fn read_response(&mut self) -> Option<Raw> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if !self.fill().await {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        while self.buf.len() < len {
            assert!(self.fill().await, "connection closed mid-body");
        }
        let body = self.buf.drain(..len).collect();
        Some(Raw {
            status: status.parse().unwrap(),
            headers,
            body,
        })
    }

    /// Reads more; false at EOF or on a reset.
    async fn fill(&mut self) -> bool {
        let mut tmp = [0u8; 16 * 1024];
        match self.s.read(&mut tmp).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
        }
    }

    /// Waits until the server closes the connection (EOF or reset), reading and keeping what
    /// it sends; panics after `within`.
    async fn closed_within(&mut self, within: Duration) {
        timeout(within, async { while self.fill().await {} })
            .await
            .unwrap_or_else(|_| panic!("the connection was still open after {within:?}"));
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A byte-offset request head (`Content-Length: len`) for `id` at `start`.
fn offset_head(id: &str, start: u64, size: u64, len: usize) -> String {
    format!(
        "POST /api/upload HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n\
         X-File-Id: {id}\r\nX-Start-Byte: {start}\r\nX-File-Size: {size}\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// `GET /api/upload/status`: (held bytes, whether the server has a record of the upload).
async fn status(srv: &TestServer, id: &str) -> (u64, bool) {
    let r = srv
        .client
        .get(srv.url("/api/upload/status"))
        .header("x-file-id", id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let known = r.headers().contains_key("x-file-size");
    (r.text().await.unwrap().trim().parse().unwrap(), known)
}

/// Polls until the byte-offset request for `id` reached its handler (which records the
/// upload before reading the body).
async fn wait_recorded(srv: &TestServer, id: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    while !status(srv, id).await.1 {
        assert!(
            Instant::now() < end,
            "the request for {id} never reached its handler"
        );
        sleep(Duration::from_millis(10)).await;
    }
}

/// Creates an upload of `size` bytes with the byte-offset dialect and writes `data` at 0.
async fn offset_write(srv: &TestServer, id: &str, size: u64, data: &[u8]) -> Value {
    let r = srv
        .client
        .post(srv.url("/api/upload"))
        .header("content-type", "application/octet-stream")
        .header("x-file-id", id)
        .header("x-start-byte", "0")
        .header("x-file-size", size.to_string())
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

// ---------------------------------------------------------------------------
// The request head
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_sent_too_slowly_is_dropped_at_the_header_timeout() {
    let srv = TestServer::start_with(|a| a.header_timeout = Duration::from_secs(1)).await;
    let mut c = Conn::open(&srv).await;
    let started = Instant::now();
    c.send(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await;
    // One byte every 100 ms, never the end of the head.
    let (mut rd, mut wr) = c.s.into_split();
    let dribble = tokio::spawn(async move {
        for _ in 0..100 {
            if wr.write_all(b"a").await.is_err() {
                return;
            }
            sleep(Duration::from_millis(100)).await;
        }
    });
    let mut got = Vec::new();
    let closed = timeout(Duration::from_secs(5), async {
        let mut tmp = [0u8; 1024];
        loop {
            match rd.read(&mut tmp).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&tmp[..n]),
            }
        }
    })
    .await;
    let elapsed = started.elapsed();
    dribble.abort();
    assert!(closed.is_ok(), "a dribbling head still connected after 5 s");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "dropped after {elapsed:?}, want about the 1 s header timeout"
    );
    assert!(
        !String::from_utf8_lossy(&got).contains(" 200 "),
        "the dribbled request was answered: {:?}",
        String::from_utf8_lossy(&got)
    );
    eprintln!("slow head dropped after {elapsed:?}");
    // Everyone else is served.
    let r = srv.client.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_64_kib_gets_431() {
    let srv = TestServer::start().await;
    // Just under the limit: served.
    let mut c = Conn::open(&srv).await;
    let filler = "a".repeat(60 * 1024);
    c.send(
        format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Filler: {filler}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    let r = c.response().await.expect("an answer");
    assert_eq!(r.status, 200);

    // A 100 KB header: 431, then the connection is closed.
    let mut c = Conn::open(&srv).await;
    let big = "b".repeat(100 * 1000);
    let head = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\n\r\n");
    // The server may stop reading before the end: write what it takes.
    let _ = timeout(Duration::from_secs(5), c.s.write_all(head.as_bytes())).await;
    let r = c.response().await.expect("an answer to the oversized head");
    assert_eq!(r.status, 431, "{r:?}");
    c.closed_within(Duration::from_secs(5)).await;
    srv.stop().await;
}

/// A request answered without its body being read (here a PATCH of an upload that does not
/// exist) while the client is still sending 16 MiB of body: the server reads and drops the
/// rest before closing (lingering close), so the client's send completes and it reads the
/// answer, instead of a reset failing its send with a broken pipe and destroying the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_body_still_arriving_is_drained_so_the_client_reads_the_answer() {
    let srv = TestServer::start().await;
    let mut c = Conn::open(&srv).await;
    let len = 16 << 20;
    c.send(
        format!(
            "PATCH /files/0123456789abcdef0123456789abcdef HTTP/1.1\r\nHost: localhost\r\n\
             Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
             Content-Type: application/offset+octet-stream\r\nContent-Length: {len}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    // Give the server time to answer and close while most of the body is still to come.
    sleep(Duration::from_millis(200)).await;
    let body = test_bytes(len, 7);
    timeout(Duration::from_secs(10), c.s.write_all(&body))
        .await
        .expect("the body was not taken within 10 s")
        .expect("sending the rest of the body failed: the server reset the connection");
    let r = c.response().await.expect("an answer");
    assert_eq!(r.status, 404, "{r:?}");
    c.closed_within(Duration::from_secs(5)).await;
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// Duplicated headers, Content-Length with Transfer-Encoding
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_upload_offset_is_400_and_the_offset_stays() {
    let srv = TestServer::start().await;
    let r = srv
        .client
        .post(srv.url("/files/"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "100")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let patch = |offsets: &[&str], body: Vec<u8>| {
        let mut req = srv
            .client
            .patch(&location)
            .header("tus-resumable", "1.0.0")
            .header("content-type", "application/offset+octet-stream");
        for o in offsets {
            req = req.header("upload-offset", *o);
        }
        req.body(body).send()
    };
    let r = patch(&["0"], test_bytes(10, 1)).await.unwrap();
    assert_eq!(r.status(), 204);
    for offsets in [["10", "10"], ["10", "0"], ["0", "10"]] {
        let r = patch(&offsets, test_bytes(10, 2)).await.unwrap();
        assert_eq!(r.status(), 400, "{offsets:?}");
        let j: Value = r.json().await.unwrap();
        assert_eq!(j["error"], "duplicate_header", "{j}");
        assert!(
            j["message"].as_str().unwrap().contains("Upload-Offset"),
            "{j}"
        );
    }
    let r = srv
        .client
        .head(&location)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["upload-offset"], "10");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_x_start_byte_is_400_and_the_offset_stays() {
    let srv = TestServer::start().await;
    let id = "dup-start.bin-100-1700000000";
    let j = offset_write(&srv, id, 100, &test_bytes(10, 3)).await;
    assert_eq!(j["offset"], 10);
    for starts in [["10", "10"], ["10", "0"]] {
        let r = srv
            .client
            .post(srv.url("/api/upload"))
            .header("content-type", "application/octet-stream")
            .header("x-file-id", id)
            .header("x-start-byte", starts[0])
            .header("x-start-byte", starts[1])
            .header("x-file-size", "100")
            .body(test_bytes(10, 4))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{starts:?}");
        let j: Value = r.json().await.unwrap();
        assert_eq!(j["error"], "duplicate_header", "{j}");
        assert!(
            j["message"].as_str().unwrap().contains("X-Start-Byte"),
            "{j}"
        );
    }
    assert_eq!(status(&srv, id).await, (10, true));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_400_and_stores_nothing() {
    let srv = TestServer::start().await;
    let body = "a\r\n0123456789\r\n0\r\n\r\n";
    for (i, framing) in [
        "Content-Length: 10\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 10",
        "Content-Length: 21\r\nTransfer-Encoding: chunked",
    ]
    .iter()
    .enumerate()
    {
        let id = format!("smuggle{i}.bin-10-1700000000");
        let mut c = Conn::open(&srv).await;
        // After a plain request on the same connection, so the head is found mid-stream.
        c.send(
            format!(
                "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n\
                 POST /api/upload HTTP/1.1\r\nHost: localhost\r\nX-File-Id: {id}\r\n\
                 X-Start-Byte: 0\r\nX-File-Size: 10\r\nContent-Type: application/octet-stream\r\n\
                 {framing}\r\n\r\n{body}"
            )
            .as_bytes(),
        )
        .await;
        let r = c.response().await.expect("the healthz answer");
        assert_eq!(r.status, 200, "{framing:?}");
        let r = c
            .response()
            .await
            .expect("an answer to the smuggling request");
        assert_eq!(r.status, 400, "{framing:?}: {r:?}");
        assert_eq!(r.json()["error"], "conflicting_length", "{framing:?}");
        c.closed_within(Duration::from_secs(5)).await;
        assert_eq!(status(&srv, &id).await, (0, false), "{framing:?}");
    }

    // A chunked body alone is fine, and the connection goes on.
    let id = "chunked.bin-10-1700000000";
    let mut c = Conn::open(&srv).await;
    c.send(
        format!(
            "POST /api/upload HTTP/1.1\r\nHost: localhost\r\nX-File-Id: {id}\r\n\
             X-Start-Byte: 0\r\nX-File-Size: 10\r\nContent-Type: application/octet-stream\r\n\
             Transfer-Encoding: chunked\r\n\r\n4;x=y\r\n0123\r\n6\r\n456789\r\n0\r\nX-T: 1\r\n\r\n\
             GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let r = c.response().await.expect("an answer to the chunked upload");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["offset"], 10);
    let r = c.response().await.expect("the healthz answer");
    assert_eq!(r.status, 200);
    assert_eq!(status(&srv, id).await, (10, true));
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// Bodies: idle timeout, shutdown grace
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_ends_at_the_idle_timeout_and_keeps_what_arrived() {
    let srv = TestServer::start_with(|a| a.idle_timeout = Duration::from_secs(1)).await;
    let id = "stall.bin-1000-1700000000";
    let mut c = Conn::open(&srv).await;
    c.send(offset_head(id, 0, 1000, 1000).as_bytes()).await;
    c.send(&test_bytes(400, 5)).await;
    wait_recorded(&srv, id).await;
    let started = Instant::now();
    let r = c
        .response()
        .await
        .expect("an answer to the stalled request");
    let elapsed = started.elapsed();
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["error"], "body_interrupted");
    assert!(
        elapsed < Duration::from_secs(4),
        "answered after {elapsed:?}, want about the 1 s idle timeout"
    );
    assert_eq!(status(&srv, id).await, (400, true));
    eprintln!("stalled body answered after {elapsed:?}");

    // A body that keeps trickling is not idle.
    let id = "trickle.bin-30-1700000000";
    let mut c = Conn::open(&srv).await;
    c.send(offset_head(id, 0, 30, 30).as_bytes()).await;
    for piece in test_bytes(30, 6).chunks(5) {
        c.send(piece).await;
        sleep(Duration::from_millis(400)).await;
    }
    let r = c.response().await.expect("an answer");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["complete"], true);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_ends_a_silent_body_keeping_what_arrived() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_owned();
    let mut srv = TestServer::start_with(|a| {
        a.data_dir = dir.clone();
        a.shutdown_grace = Duration::from_secs(1);
    })
    .await;
    let id = "silent.bin-1000-1700000000";
    let mut c = Conn::open(&srv).await;
    c.send(offset_head(id, 0, 1000, 1000).as_bytes()).await;
    c.send(&test_bytes(300, 7)).await;
    wait_recorded(&srv, id).await;
    // An idle keep-alive connection and a head still arriving do not hold the shutdown.
    let mut idle = Conn::open(&srv).await;
    idle.send(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    assert_eq!(idle.response().await.unwrap().status, 200);
    let mut partial = Conn::open(&srv).await;
    partial.send(b"GET /healthz HTTP/1.1\r\nHost: loc").await;
    sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    srv.trigger_shutdown();
    idle.closed_within(Duration::from_millis(500)).await;
    partial.closed_within(Duration::from_millis(500)).await;
    let r = c
        .response()
        .await
        .expect("an answer to the cut-off request");
    let answered = started.elapsed();
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["error"], "body_interrupted");
    while !srv.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the server still runs 4 s after a shutdown with a 1 s grace"
        );
        sleep(Duration::from_millis(10)).await;
    }
    let stopped = started.elapsed();
    assert!(
        answered >= Duration::from_millis(900),
        "cut after {answered:?}"
    );
    eprintln!("silent body cut after {answered:?}, server stopped after {stopped:?}");
    srv.stop().await;

    let srv = TestServer::start_with(|a| a.data_dir = dir.clone()).await;
    assert_eq!(status(&srv, id).await, (300, true));
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// Connection cap
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_the_answer_is_503_retry_after_1() {
    let srv = TestServer::start_with(|a| a.max_connections = Some(3)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = Conn::open(&srv).await;
        c.send(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await;
        assert_eq!(c.response().await.unwrap().status, 200);
        held.push(c);
    }
    let started = Instant::now();
    let mut c = Conn::open(&srv).await;
    c.send(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let r = c.response().await.expect("an answer past the cap");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"], "server_busy");
    assert!(started.elapsed() < Duration::from_secs(1));
    c.closed_within(Duration::from_secs(2)).await;

    // A place frees up when a connection closes.
    drop(held.pop());
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = Conn::open(&srv).await;
        c.send(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await;
        let status = c.response().await.map(|r| r.status);
        if status == Some(200) {
            break;
        }
        assert!(
            Instant::now() < end,
            "still {status:?} after a connection closed"
        );
        sleep(Duration::from_millis(20)).await;
    }
    drop(held);
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// /metrics
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_token_when_one_is_set() {
    let srv = TestServer::start_with(|a| a.metrics_token = Some("s3cret-token".into())).await;
    let get = |auth: Option<&str>| {
        let mut req = srv.client.get(srv.url("/metrics"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let r = get(None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    for wrong in [
        "Bearer s3cret-toke",
        "Bearer s3cret-token2",
        "Basic s3cret-token",
    ] {
        assert_eq!(get(Some(wrong)).await.unwrap().status(), 401, "{wrong}");
    }
    for right in ["Bearer s3cret-token", "bearer s3cret-token"] {
        let r = get(Some(right)).await.unwrap();
        assert_eq!(r.status(), 200, "{right}");
        let text = r.text().await.unwrap();
        assert!(
            text.contains("ferry_http_request_duration_seconds"),
            "{text}"
        );
    }
    // The rest of the server needs no metrics token.
    assert_eq!(
        srv.client
            .get(srv.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_metrics_there_only() {
    let srv = TestServer::start_with(|a| a.metrics_listen = Some("127.0.0.1:0".into())).await;
    let r = srv.client.get(srv.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let end = Instant::now() + Duration::from_secs(5);
    let addr = loop {
        if let Some(a) = srv.state.metrics_access.bound_addr() {
            break a;
        }
        assert!(Instant::now() < end, "the metrics listener was never bound");
        sleep(Duration::from_millis(10)).await;
    };
    let r = srv
        .client
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("ferry_http_request_duration_seconds"),
        "{text}"
    );
    let r = srv
        .client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "only /metrics on the metrics listener");
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// Range
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_past_u64_is_416() {
    let srv = TestServer::start().await;
    let data = test_bytes(1000, 8);
    let j = offset_write(&srv, "range.bin-1000-1700000000", 1000, &data).await;
    let url = j["url"].as_str().expect("url").to_owned();
    for range in [
        "bytes=99999999999999999999999-",
        "bytes=18446744073709551616-18446744073709551617",
    ] {
        let r = srv
            .client
            .get(&url)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 416, "{range}");
        assert_eq!(r.headers()["content-range"], "bytes */1000", "{range}");
    }
    let r = srv
        .client
        .get(&url)
        .header("range", "bytes=990-99999999999999999999999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 990-999/1000");
    assert_eq!(r.bytes().await.unwrap(), &data[990..]);
    srv.stop().await;
}
