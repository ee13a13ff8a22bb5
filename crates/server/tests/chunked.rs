//! The chunk-handshake dialect end to end (SPEC §2.1), against a real server on
//! `127.0.0.1:0`: `POST /api/upload/handshake`, `POST /api/upload` (multipart chunks) and the
//! finished file at `GET /upload/<fileId><ext>` (SPEC §3).
//!
//! Sections follow the verbs: handshake, chunk upload (flows, field orders, parallelism,
//! duplicate content), handshake errors, chunk-upload errors, download.
//!
//! Every error test checks the envelope (`code` equal to the HTTP status, a `msg` a person
//! can act on, a stable `error` code) and then that the upload's state did not move: a
//! handshake sent again lists exactly the chunks it listed before (SPEC §6: bad input
//! changes nothing).

mod common;

use common::{TestServer, md5_hex, sha256_hex, spark_chunks, test_bytes};
use futures_util::StreamExt;
use futures_util::stream;
use serde_json::{Value, json};
use std::collections::HashSet;

const EXT: &str = ".bin";
const BYTES_RECEIVED_CHUNK: &str = "ferry_bytes_received_total{dialect=\"chunk\"}";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// How a client names its chunks.
#[derive(Clone, Copy)]
enum Ids {
    /// The chunk's MD5, nothing else: equal chunks share one id.
    Md5,
    /// spark-md5 style: MD5 followed by the chunk index, so equal chunks stay distinct.
    Spark,
    /// SHA-256 ids with `hashAlgorithm: "sha256"` (fileId is the SHA-256 too).
    Sha256,
}

/// A file cut into chunks the way a client cuts it, with the ids it would send.
struct Plan {
    data: Vec<u8>,
    file_id: String,
    ids: Vec<String>,
    chunks: Vec<Vec<u8>>,
    chunk_size: usize,
    alg: Option<&'static str>,
}

fn plan(data: Vec<u8>, chunk_size: usize, ids: Ids) -> Plan {
    let (file_id, ids_and_chunks, alg) = match ids {
        Ids::Spark => {
            let (fid, pieces) = spark_chunks(&data, chunk_size);
            (fid, pieces, None)
        }
        Ids::Md5 => (
            md5_hex(&data),
            data.chunks(chunk_size)
                .map(|c| (md5_hex(c), c.to_vec()))
                .collect(),
            None,
        ),
        Ids::Sha256 => (
            sha256_hex(&data),
            data.chunks(chunk_size)
                .map(|c| (sha256_hex(c), c.to_vec()))
                .collect(),
            Some("sha256"),
        ),
    };
    let (ids, chunks) = ids_and_chunks.into_iter().unzip();
    Plan {
        data,
        file_id,
        ids,
        chunks,
        chunk_size,
        alg,
    }
}

impl Plan {
    /// The handshake the seed articles' clients send: fileId, ext, chunkIds.
    fn handshake(&self) -> Value {
        let mut v = json!({ "fileId": self.file_id, "ext": EXT, "chunkIds": self.ids });
        if let Some(alg) = self.alg {
            v["hashAlgorithm"] = json!(alg);
        }
        v
    }

    /// The handshake with `size` and `chunkSize` declared as well.
    fn handshake_sized(&self) -> Value {
        let mut v = self.handshake();
        v["size"] = json!(self.data.len());
        v["chunkSize"] = json!(self.chunk_size);
        v
    }

    /// The URL the server hands out for the finished file.
    fn url(&self, srv: &TestServer) -> String {
        srv.url(&format!("/upload/{}{}", self.file_id, EXT))
    }

    /// Ids of the chunks not in `held`, in file order, each once.
    fn missing_except(&self, held: &HashSet<usize>) -> Vec<String> {
        let mut seen = HashSet::new();
        (0..self.ids.len())
            .filter(|i| !held.contains(i))
            .map(|i| self.ids[i].clone())
            .filter(|id| seen.insert(id.clone()))
            .collect()
    }

    async fn send(&self, srv: &TestServer, i: usize, file_first: bool) -> (u16, Value) {
        srv.send_chunk(
            &self.file_id,
            &self.ids[i],
            self.chunks[i].clone(),
            file_first,
        )
        .await
    }
}

/// The `data` of a successful answer that lists missing chunk ids.
#[track_caller]
fn missing_of(resp: &(u16, Value)) -> Vec<String> {
    let (status, body) = resp;
    assert_eq!(*status, 200, "expected success, got {body}");
    assert_eq!(body["code"], 0, "{body}");
    assert_eq!(body["msg"], "", "{body}");
    body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("data should be the missing chunk ids: {body}"))
        .iter()
        .map(|v| v.as_str().expect("chunk ids are strings").to_owned())
        .collect()
}

/// The `data` of a successful answer that carries the file's URL.
#[track_caller]
fn url_of(resp: &(u16, Value)) -> String {
    let (status, body) = resp;
    assert_eq!(*status, 200, "expected success, got {body}");
    assert_eq!(body["code"], 0, "{body}");
    body["data"]
        .as_str()
        .unwrap_or_else(|| panic!("data should be the file's URL: {body}"))
        .to_owned()
}

/// An error envelope: HTTP status, `code` equal to it, a non-empty `msg`, the `error` code.
#[track_caller]
fn assert_error(resp: &(u16, Value), status: u16, error: &str) {
    let (got, body) = resp;
    assert_eq!(*got, status, "HTTP status; body {body}");
    assert_eq!(
        body["code"], status,
        "envelope code equals the HTTP status: {body}"
    );
    assert!(
        body["msg"].as_str().is_some_and(|m| !m.trim().is_empty()),
        "msg must say what went wrong: {body}"
    );
    assert_eq!(body["error"], error, "machine-readable error code: {body}");
}

/// POSTs a raw handshake body (for JSON that `TestServer::handshake` cannot produce).
async fn handshake_raw(srv: &TestServer, body: &str) -> (u16, Value) {
    let r = srv
        .client
        .post(srv.url("/api/upload/handshake"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// POSTs a hand-built multipart form to `/api/upload`.
async fn post_form(srv: &TestServer, form: reqwest::multipart::Form) -> (u16, Value) {
    let r = srv
        .client
        .post(srv.url("/api/upload"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn bytes_part(bytes: Vec<u8>) -> reqwest::multipart::Part {
    reqwest::multipart::Part::bytes(bytes)
        .file_name("blob")
        .mime_str("application/octet-stream")
        .unwrap()
}

/// A deterministic shuffle (Fisher–Yates over xorshift), so failures reproduce.
fn shuffled(mut v: Vec<usize>, seed: u64) -> Vec<usize> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

/// Sends `order`'s chunks with at most `parallel` requests in flight; returns the answers in
/// completion order.
async fn send_parallel(
    srv: &TestServer,
    p: &Plan,
    order: &[usize],
    parallel: usize,
) -> Vec<(usize, (u16, Value))> {
    stream::iter(order.iter().copied())
        .map(|i| async move { (i, p.send(srv, i, i % 2 == 0).await) })
        .buffer_unordered(parallel)
        .collect()
        .await
}

/// Downloads the finished file and checks it is byte for byte the source.
async fn assert_served(srv: &TestServer, p: &Plan) {
    let (status, body) = srv.get_bytes(&p.url(srv)).await;
    assert_eq!(status, 200, "GET {}", p.url(srv));
    assert_eq!(body.len(), p.data.len(), "downloaded length");
    assert!(body == p.data, "downloaded bytes differ from the source");
}

/// A file mid-upload for the error tests: handshaken with size and chunkSize, chunks 0 and
/// 2 held. Returns the plan and the missing list the server reports.
async fn seeded(srv: &TestServer) -> (Plan, Vec<String>) {
    let p = plan(test_bytes(200_000, 77), 32 << 10, Ids::Spark);
    missing_of(&srv.handshake(&p.handshake_sized()).await);
    missing_of(&p.send(srv, 0, true).await);
    let missing = missing_of(&p.send(srv, 2, false).await);
    assert_eq!(missing, p.missing_except(&HashSet::from([0, 2])));
    (p, missing)
}

/// State did not move: handshaking again lists exactly what it listed before.
async fn assert_unchanged(srv: &TestServer, p: &Plan, before: &[String]) {
    let again = missing_of(&srv.handshake(&p.handshake_sized()).await);
    assert_eq!(
        again, before,
        "the missing list changed after a refused request"
    );
}

// ---------------------------------------------------------------------------
// POST /api/upload/handshake
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_for_a_new_file_lists_every_chunk_in_file_order() {
    let srv = TestServer::start().await;
    let p = plan(test_bytes(5 * (256 << 10) + 999, 1), 256 << 10, Ids::Spark);
    let missing = missing_of(&srv.handshake(&p.handshake()).await);
    assert_eq!(missing, p.ids);
    // Asking again before any chunk arrived changes nothing.
    assert_eq!(missing_of(&srv.handshake(&p.handshake()).await), p.ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_again_lists_exactly_the_missing_chunks_and_the_rest_completes_the_file() {
    let srv = TestServer::start().await;
    let p = plan(test_bytes((3 << 20) + 12_345, 2), 256 << 10, Ids::Spark);
    let n = p.ids.len();
    assert_eq!(n, 13);
    assert_eq!(missing_of(&srv.handshake(&p.handshake()).await), p.ids);

    // Some chunks arrive (not a prefix), then the client goes away.
    let first = [0usize, 1, 4, 7, 8, 11];
    let mut held = HashSet::new();
    for &i in &first {
        let resp = p.send(&srv, i, true).await;
        held.insert(i);
        assert_eq!(
            missing_of(&resp),
            p.missing_except(&held),
            "after chunk {i}"
        );
    }

    // A new session asks again: exactly the chunks not yet held, in file order.
    let missing = missing_of(&srv.handshake(&p.handshake()).await);
    assert_eq!(missing, p.missing_except(&held));
    assert_eq!(missing.len(), n - first.len());

    // It sends the rest; the last one to arrive completes the file and answers its URL.
    let rest: Vec<usize> = (0..n).filter(|i| !held.contains(i)).collect();
    let (last, before_last) = rest.split_last().unwrap();
    for &i in before_last {
        let resp = p.send(&srv, i, false).await;
        held.insert(i);
        assert_eq!(
            missing_of(&resp),
            p.missing_except(&held),
            "after chunk {i}"
        );
    }
    let url = url_of(&p.send(&srv, *last, true).await);
    assert_eq!(url, p.url(&srv));
    assert!(url.ends_with(&format!("/upload/{}{EXT}", p.file_id)));
    assert_served(&srv, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_of_a_complete_file_returns_its_url_without_receiving_bytes() {
    let srv = TestServer::start().await;
    let p = plan(test_bytes((2 << 20) + 77, 3), 512 << 10, Ids::Spark);
    missing_of(&srv.handshake(&p.handshake()).await);
    for i in 0..p.ids.len() - 1 {
        missing_of(&p.send(&srv, i, true).await);
    }
    let url = url_of(&p.send(&srv, p.ids.len() - 1, true).await);
    let received = srv.metric(BYTES_RECEIVED_CHUNK).await;
    assert!(received >= p.data.len() as f64, "{received} bytes counted");

    // Instant upload: the next handshake (another client, the same file) gets the URL at once,
    // with or without size and chunkSize.
    assert_eq!(url_of(&srv.handshake(&p.handshake()).await), url);
    assert_eq!(url_of(&srv.handshake(&p.handshake_sized()).await), url);
    assert_eq!(
        srv.metric(BYTES_RECEIVED_CHUNK).await,
        received,
        "an instant upload must not receive the file's bytes again"
    );
    assert_served(&srv, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_file_completes_at_the_handshake() {
    let srv = TestServer::start().await;
    let file_id = md5_hex(b"");
    assert_eq!(file_id, "d41d8cd98f00b204e9800998ecf8427e");
    let hs = json!({ "fileId": file_id, "ext": ".txt", "chunkIds": [] });
    let url = url_of(&srv.handshake(&hs).await);
    assert_eq!(url, srv.url(&format!("/upload/{file_id}.txt")));
    let (status, body) = srv.get_bytes(&url).await;
    assert_eq!(status, 200);
    assert!(body.is_empty());
    // And it stays complete.
    assert_eq!(url_of(&srv.handshake(&hs).await), url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha256_ids_are_verified_and_complete_the_file() {
    let srv = TestServer::start().await;
    let p = plan(test_bytes((1 << 20) + 4321, 4), 256 << 10, Ids::Sha256);
    assert!(p.file_id.len() == 64 && p.ids.iter().all(|id| id.len() == 64));
    assert_eq!(missing_of(&srv.handshake(&p.handshake()).await), p.ids);

    // A chunk whose bytes do not match its SHA-256 id is refused.
    let wrong = srv
        .send_chunk(&p.file_id, &p.ids[1], p.chunks[2].clone(), true)
        .await;
    assert_error(&wrong, 422, "chunk_digest_mismatch");

    let mut held = HashSet::new();
    for i in 0..p.ids.len() - 1 {
        held.insert(i);
        assert_eq!(
            missing_of(&p.send(&srv, i, i % 2 == 0).await),
            p.missing_except(&held)
        );
    }
    assert_eq!(
        url_of(&p.send(&srv, p.ids.len() - 1, true).await),
        p.url(&srv)
    );
    assert_served(&srv, &p).await;
}

// ---------------------------------------------------------------------------
// POST /api/upload (multipart chunks): field order, parallelism, duplicate content
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_first_and_ids_first_field_orders_give_identical_results() {
    // The same file through two fresh servers: one client appends `file` before the ids
    // (the server spools it), the other sends the ids first (streamed straight into place).
    let p = plan(test_bytes((2 << 20) + 3333, 5), 256 << 10, Ids::Spark);
    let order = shuffled((0..p.ids.len()).collect(), 5);
    let mut transcripts = Vec::new();
    let mut etags = Vec::new();
    for file_first in [true, false] {
        let srv = TestServer::start().await;
        let mut transcript = vec![srv.handshake(&p.handshake()).await];
        for &i in &order {
            transcript.push(p.send(&srv, i, file_first).await);
        }
        transcript.push(srv.handshake(&p.handshake()).await);
        // Compare answers with the server's own address taken out.
        let text = serde_json::to_string(&transcript)
            .unwrap()
            .replace(&srv.base, "BASE");
        transcripts.push(text);
        let resp = srv.client.get(p.url(&srv)).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        etags.push(resp.headers()["etag"].to_str().unwrap().to_owned());
        assert!(resp.bytes().await.unwrap() == p.data);
    }
    assert_eq!(
        transcripts[0], transcripts[1],
        "both field orders answer alike"
    );
    assert_eq!(etags[0], etags[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_shuffled_chunks_with_the_last_first_and_inferred_chunk_size_complete_the_file() {
    let srv = TestServer::start().await;
    let p = plan(test_bytes((4 << 20) + 54_321, 6), 256 << 10, Ids::Spark);
    let n = p.ids.len();
    // No size, no chunkSize: the server learns the chunk size from the chunks themselves.
    assert_eq!(missing_of(&srv.handshake(&p.handshake()).await), p.ids);

    // The last chunk first: its offset cannot be known yet, so it is staged, and the server
    // still counts it as received.
    let resp = p.send(&srv, n - 1, true).await;
    assert_eq!(missing_of(&resp), p.missing_except(&HashSet::from([n - 1])));

    // Then the others four at a time, shuffled, with chunk 0 in the first wave as clients
    // that start at the beginning of the file have it: while it streams in, the chunk size
    // is still unknown and the other chunks of the wave are staged.
    let mut order = shuffled((1..n - 1).collect(), 6);
    order.insert(1, 0);
    let answers = send_parallel(&srv, &p, &order, 4).await;
    let mut urls = 0;
    for (i, resp) in &answers {
        assert_eq!(resp.0, 200, "chunk {i}: {}", resp.1);
        if resp.1["data"].is_string() {
            assert_eq!(url_of(resp), p.url(&srv));
            urls += 1;
        } else {
            missing_of(resp);
        }
    }
    assert!(
        urls >= 1,
        "the chunk that completed the file must answer its URL"
    );
    assert_eq!(url_of(&srv.handshake(&p.handshake()).await), p.url(&srv));
    assert_served(&srv, &p).await;
}

/// A multipart chunk (ids first) whose file part sends `first`, then waits for `gate`
/// before sending `rest`: a client on a slow link, still streaming while others arrive.
fn gated_chunk_form(
    file_id: &str,
    chunk_id: &str,
    first: Vec<u8>,
    rest: Vec<u8>,
    gate: tokio::sync::oneshot::Receiver<()>,
) -> reqwest::multipart::Form {
    let body = stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(stream::once(
        async move {
            let _ = gate.await;
            Ok(rest)
        },
    ));
    reqwest::multipart::Form::new()
        .text("chunkId", chunk_id.to_owned())
        .text("fileId", file_id.to_owned())
        .part(
            "file",
            reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(body))
                .file_name("blob")
                .mime_str("application/octet-stream")
                .unwrap(),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_sent_while_chunk_zero_is_still_streaming_with_an_unknown_chunk_size_are_accepted() {
    // Deterministic version of the race in the parallel test above: chunk 0 is mid-body when
    // chunk 1 (whose offset is not known yet, so it is staged and teaches the server the
    // chunk size) and then chunk 2 (whose place is now known) arrive. Chunk 2 touches no
    // byte chunk 0 writes, so it must be stored (or wait for chunk 0), not refused.
    let srv = TestServer::start().await;
    let p = plan(test_bytes((1 << 20) + 777, 16), 256 << 10, Ids::Spark);
    let n = p.ids.len();
    assert_eq!(missing_of(&srv.handshake(&p.handshake()).await), p.ids);

    let half = p.chunks[0].len() / 2;
    let (release, gate) = tokio::sync::oneshot::channel();
    let form = gated_chunk_form(
        &p.file_id,
        &p.ids[0],
        p.chunks[0][..half].to_vec(),
        p.chunks[0][half..].to_vec(),
        gate,
    );
    let request = srv.client.post(srv.url("/api/upload")).multipart(form);
    let slow = tokio::spawn(async move {
        let r = request.send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    });
    // Wait until the server is reading chunk 0's body.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while srv.metric(BYTES_RECEIVED_CHUNK).await < half as f64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "chunk 0 never reached the server"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let one = p.send(&srv, 1, true).await;
    assert_eq!(one.0, 200, "chunk 1 while chunk 0 streams: {}", one.1);
    // Chunk 2 may be written at once or wait for chunk 0; release chunk 0 shortly either way.
    let two = async { p.send(&srv, 2, false).await };
    let release_later = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let _ = release.send(());
    };
    let (two, ()) = tokio::join!(two, release_later);
    assert_eq!(two.0, 200, "chunk 2 while chunk 0 streams: {}", two.1);
    let zero = slow.await.unwrap();
    assert_eq!(zero.0, 200, "chunk 0: {}", zero.1);

    assert_eq!(
        missing_of(&srv.handshake(&p.handshake()).await),
        p.missing_except(&HashSet::from([0, 1, 2]))
    );
    for i in 3..n - 1 {
        missing_of(&p.send(&srv, i, true).await);
    }
    assert_eq!(url_of(&p.send(&srv, n - 1, true).await), p.url(&srv));
    assert_served(&srv, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_shuffled_chunks_with_declared_size_complete_the_file() {
    let srv = TestServer::start().await;
    let p = plan(test_bytes((4 << 20) + 1, 7), 256 << 10, Ids::Spark);
    let n = p.ids.len();
    assert_eq!(
        missing_of(&srv.handshake(&p.handshake_sized()).await),
        p.ids
    );

    // The last chunk (one byte) first, then everything else four at a time, shuffled.
    assert_eq!(
        missing_of(&p.send(&srv, n - 1, false).await),
        p.missing_except(&HashSet::from([n - 1]))
    );
    let order = shuffled((0..n - 1).collect(), 7);
    let answers = send_parallel(&srv, &p, &order, 4).await;
    for (i, resp) in &answers {
        assert_eq!(resp.0, 200, "chunk {i}: {}", resp.1);
        assert_eq!(resp.1["code"], 0);
    }
    assert_eq!(
        url_of(&srv.handshake(&p.handshake_sized()).await),
        p.url(&srv)
    );
    assert_served(&srv, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resending_a_held_chunk_changes_nothing() {
    let srv = TestServer::start().await;
    let p = plan(test_bytes(1 << 20, 8), 256 << 10, Ids::Spark);
    missing_of(&srv.handshake(&p.handshake()).await);
    let once = missing_of(&p.send(&srv, 1, true).await);
    // A client retrying after a lost answer sends the same chunk again, both field orders.
    assert_eq!(missing_of(&p.send(&srv, 1, true).await), once);
    assert_eq!(missing_of(&p.send(&srv, 1, false).await), once);
    for i in [0, 2] {
        missing_of(&p.send(&srv, i, true).await);
    }
    let url = url_of(&p.send(&srv, 3, true).await);
    // A chunk of a file already complete answers the URL.
    assert_eq!(url_of(&p.send(&srv, 2, false).await), url);
    assert_served(&srv, &p).await;
}

/// A file of repeated identical blocks: A B A A C B A, then a short tail D.
fn repeated_blocks(block: usize) -> Vec<u8> {
    let a = test_bytes(block, 101);
    let b = test_bytes(block, 102);
    let c = test_bytes(block, 103);
    let d = test_bytes(block / 3, 104);
    [&a, &b, &a, &a, &c, &b, &a, &d]
        .into_iter()
        .flat_map(|x| x.iter().copied())
        .collect()
}

/// Plain-MD5 ids: the missing list names each distinct chunk once, and one upload of a
/// chunk fills every position it occupies.
async fn check_equal_chunks_share_one_upload(sized: bool) {
    let srv = TestServer::start().await;
    let block = 256 << 10;
    let p = plan(repeated_blocks(block), block, Ids::Md5);
    let hs = if sized {
        p.handshake_sized()
    } else {
        p.handshake()
    };
    let (a, b, c, d) = (
        p.ids[0].as_str(),
        p.ids[1].as_str(),
        p.ids[4].as_str(),
        p.ids[7].as_str(),
    );
    assert_eq!(p.ids.len(), 8);
    assert_eq!(
        p.ids.iter().collect::<HashSet<_>>().len(),
        4,
        "four distinct chunks"
    );
    assert_eq!(missing_of(&srv.handshake(&hs).await), [a, b, c, d]);

    // A (positions 0, 2, 3, 6) once.
    let resp = p.send(&srv, 0, true).await;
    assert_eq!(missing_of(&resp), [b, c, d], "A fills all of its positions");
    assert_eq!(missing_of(&srv.handshake(&hs).await), [b, c, d]);
    // B (positions 1 and 5) once, sent as its second occurrence.
    assert_eq!(missing_of(&p.send(&srv, 5, false).await), [c, d]);
    assert_eq!(missing_of(&p.send(&srv, 7, true).await), [c]);
    assert_eq!(url_of(&p.send(&srv, 4, false).await), p.url(&srv));
    assert_served(&srv, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_chunks_with_plain_md5_ids_are_listed_once_and_one_upload_fills_every_position() {
    check_equal_chunks_share_one_upload(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_chunks_with_plain_md5_ids_fill_every_position_when_the_chunk_size_is_inferred() {
    check_equal_chunks_share_one_upload(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_chunks_with_index_suffixed_ids_are_uploaded_one_by_one() {
    let srv = TestServer::start().await;
    let block = 256 << 10;
    let p = plan(repeated_blocks(block), block, Ids::Spark);
    // Same digests, distinct ids: every position is asked for.
    assert_eq!(p.ids[0][..32], p.ids[2][..32]);
    assert_ne!(p.ids[0], p.ids[2]);
    assert_eq!(missing_of(&srv.handshake(&p.handshake()).await), p.ids);

    let mut held = HashSet::new();
    for i in [2usize, 0, 6, 5, 1, 3, 7] {
        held.insert(i);
        assert_eq!(
            missing_of(&p.send(&srv, i, i % 2 == 0).await),
            p.missing_except(&held),
            "after chunk {i}"
        );
    }
    assert_eq!(url_of(&p.send(&srv, 4, true).await), p.url(&srv));
    assert_served(&srv, &p).await;
}

// ---------------------------------------------------------------------------
// POST /api/upload/handshake — errors
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_without_file_id_is_403() {
    let srv = TestServer::start().await;
    let (p, before) = seeded(&srv).await;
    for hs in [
        json!({ "ext": EXT, "chunkIds": p.ids }),
        json!({ "fileId": "", "ext": EXT, "chunkIds": p.ids }),
        json!({ "fileId": null, "ext": EXT, "chunkIds": p.ids }),
    ] {
        assert_error(&srv.handshake(&hs).await, 403, "file_id_required");
    }
    assert_unchanged(&srv, &p, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_handshake_is_400() {
    let srv = TestServer::start().await;
    let (p, before) = seeded(&srv).await;
    let truncated = p.handshake_sized().to_string();
    let truncated = &truncated[..truncated.len() / 2];
    for body in [
        truncated,
        "not json",
        "",
        "[1, 2, 3]",
        &format!(
            r#"{{"fileId": "{}", "ext": ".bin", "chunkIds": "{}"}}"#,
            p.file_id, p.ids[0]
        ),
        &format!(
            r#"{{"fileId": "{}", "ext": ".bin", "chunkIds": [], "size": -5}}"#,
            p.file_id
        ),
    ] {
        let resp = handshake_raw(&srv, body).await;
        assert_error(&resp, 400, "malformed_json");
    }
    assert_unchanged(&srv, &p, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_without_chunk_ids_is_400() {
    let srv = TestServer::start().await;
    let (p, before) = seeded(&srv).await;
    let mut hs = p.handshake_sized();
    hs.as_object_mut().unwrap().remove("chunkIds");
    assert_error(&srv.handshake(&hs).await, 400, "chunk_ids_required");
    assert_unchanged(&srv, &p, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_with_an_invalid_chunk_id_is_400() {
    let srv = TestServer::start().await;
    let (p, before) = seeded(&srv).await;
    let md5 = &p.ids[1][..32];
    for bad in [
        format!("z{}", &md5[1..]),          // not hex
        md5[..31].to_owned(),               // too short
        format!("{md5}{}", "7".repeat(65)), // suffix too long
        format!("{md5}/../../etc/passwd"),  // path characters
        format!("{md5}\\x"),                // path characters
        format!("{md5} 1"),                 // space
        String::new(),                      // empty
    ] {
        let mut hs = p.handshake_sized();
        hs["chunkIds"][1] = json!(bad);
        let resp = srv.handshake(&hs).await;
        assert_error(&resp, 400, "invalid_chunk_id");
    }
    assert_unchanged(&srv, &p, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_with_an_unsupported_hash_algorithm_is_400() {
    let srv = TestServer::start().await;
    let (p, before) = seeded(&srv).await;
    for alg in ["sha1", "crc32", "", "md5; drop table"] {
        let mut hs = p.handshake_sized();
        hs["hashAlgorithm"] = json!(alg);
        assert_error(&srv.handshake(&hs).await, 400, "unsupported_hash");
    }
    assert_unchanged(&srv, &p, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_with_an_invalid_ext_is_400() {
    let srv = TestServer::start().await;
    let (p, before) = seeded(&srv).await;
    let long = format!(".{}", "a".repeat(299));
    for ext in [
        "../../x",
        "/",
        ".a\u{0}",
        long.as_str(),
        ".a/b",
        "jpg",
        ".tar.gz",
    ] {
        let mut hs = p.handshake_sized();
        hs["ext"] = json!(ext);
        let resp = srv.handshake(&hs).await;
        assert_error(&resp, 400, "invalid_ext");
    }
    assert_unchanged(&srv, &p, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_declaring_more_than_max_upload_size_is_413() {
    let srv = TestServer::start_with(|a| a.max_upload_size = 1 << 20).await;
    let (p, before) = seeded(&srv).await;
    // The same file claiming to be larger, and a new file that is too large.
    let mut hs = p.handshake();
    hs["size"] = json!((1u64 << 20) + 1);
    assert_error(&srv.handshake(&hs).await, 413, "too_large");

    let big = plan(test_bytes(64, 9), 16, Ids::Spark);
    let mut hs = big.handshake();
    hs["size"] = json!(2u64 << 20);
    hs["chunkSize"] = json!(1u64 << 19);
    hs["chunkIds"] = json!(big.ids);
    assert_error(&srv.handshake(&hs).await, 413, "too_large");
    assert_unchanged(&srv, &p, &before).await;
    // Nothing was created for the refused file either.
    assert_eq!(
        srv.metric("ferry_uploads_started_total{dialect=\"chunk\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_with_inconsistent_size_chunk_size_and_count_is_400() {
    let srv = TestServer::start().await;
    let (p, before) = seeded(&srv).await;
    let n = p.ids.len();
    let cases = [
        // 200 000 bytes in 64 KiB chunks is 4 chunks, not 7.
        json!({ "size": p.data.len(), "chunkSize": 64 << 10 }),
        // 7 chunks of 1 000 bytes cannot make 200 000 bytes.
        json!({ "size": p.data.len(), "chunkSize": 1000 }),
        json!({ "size": p.data.len(), "chunkSize": 0 }),
        json!({ "size": 0 }),
    ];
    for extra in cases {
        let mut hs = p.handshake();
        for (k, v) in extra.as_object().unwrap() {
            hs[k] = v.clone();
        }
        assert_error(&srv.handshake(&hs).await, 400, "inconsistent_layout");
    }
    let mut hs = p.handshake_sized();
    hs["chunkIds"] = json!(Vec::<String>::new());
    assert_error(&srv.handshake(&hs).await, 400, "inconsistent_layout");
    assert_eq!(p.ids.len(), n);
    assert_unchanged(&srv, &p, &before).await;
}

// ---------------------------------------------------------------------------
// POST /api/upload (multipart chunks) — errors
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_without_a_prior_handshake_is_409_handshake_required() {
    let srv = TestServer::start().await;
    let p = plan(test_bytes(100_000, 10), 32 << 10, Ids::Spark);
    for file_first in [true, false] {
        let resp = p.send(&srv, 0, file_first).await;
        assert_error(&resp, 409, "handshake_required");
    }
    // Nothing was created: the handshake starts from scratch.
    assert_eq!(missing_of(&srv.handshake(&p.handshake()).await), p.ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_id_not_in_the_handshake_is_409_unknown_chunk() {
    let srv = TestServer::start().await;
    let (p, before) = seeded(&srv).await;
    let stranger = test_bytes(32 << 10, 999);
    let stranger_id = format!("{}3", md5_hex(&stranger));
    for file_first in [true, false] {
        let resp = srv
            .send_chunk(&p.file_id, &stranger_id, stranger.clone(), file_first)
            .await;
        assert_error(&resp, 409, "unknown_chunk");
        // A real digest with another chunk's suffix is not in the handshake either.
        let resp = srv
            .send_chunk(
                &p.file_id,
                &format!("{}9", &p.ids[1][..32]),
                p.chunks[1].clone(),
                file_first,
            )
            .await;
        assert_error(&resp, 409, "unknown_chunk");
    }
    assert_unchanged(&srv, &p, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_with_an_invalid_chunk_id_is_400() {
    let srv = TestServer::start().await;
    let (p, before) = seeded(&srv).await;
    let md5 = &p.ids[1][..32];
    for bad in [
        format!("{md5}/../../x"),
        format!("q{}", &md5[1..]),
        format!("{md5}{}", "1".repeat(65)),
    ] {
        for file_first in [true, false] {
            let resp = srv
                .send_chunk(&p.file_id, &bad, p.chunks[1].clone(), file_first)
                .await;
            assert_error(&resp, 400, "invalid_chunk_id");
        }
    }
    assert_unchanged(&srv, &p, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_whose_bytes_do_not_match_its_id_is_422_and_stores_nothing() {
    let srv = TestServer::start().await;
    let (p, before) = seeded(&srv).await;
    let mut garbage = p.chunks[1].clone();
    garbage[100] ^= 0xff;
    for file_first in [true, false] {
        let resp = srv
            .send_chunk(&p.file_id, &p.ids[1], garbage.clone(), file_first)
            .await;
        assert_error(&resp, 422, "chunk_digest_mismatch");
    }
    assert_unchanged(&srv, &p, &before).await;
    // The refused bytes left no trace: the real chunks complete the file intact.
    for i in 1..p.ids.len() {
        if i != 2 {
            p.send(&srv, i, i % 2 == 0).await;
        }
    }
    assert_eq!(url_of(&srv.handshake(&p.handshake()).await), p.url(&srv));
    assert_served(&srv, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_file_id_fails_the_completing_chunk_with_422_and_the_next_handshake_starts_over() {
    let srv = TestServer::start().await;
    let mut p = plan(test_bytes((1 << 20) + 10, 11), 256 << 10, Ids::Spark);
    // Correct chunk ids, but the fileId of some other content.
    p.file_id = md5_hex(b"not this file");
    let n = p.ids.len();
    assert_eq!(missing_of(&srv.handshake(&p.handshake()).await), p.ids);
    for i in 0..n - 1 {
        missing_of(&p.send(&srv, i, i % 2 == 1).await);
    }
    let resp = p.send(&srv, n - 1, true).await;
    assert_error(&resp, 422, "file_digest_mismatch");

    // Never served, not even partially.
    let (status, _) = srv.get_bytes(&p.url(&srv)).await;
    assert_eq!(status, 404);
    // The next handshake starts over: every chunk is missing again.
    assert_eq!(missing_of(&srv.handshake(&p.handshake()).await), p.ids);
    assert_eq!(
        srv.metric("ferry_uploads_failed_total{dialect=\"chunk\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_last_chunk_of_another_size_than_the_inferred_chunk_size_is_422() {
    let srv = TestServer::start().await;
    // A client that cut the file unevenly: 64 KiB, 32 KiB, 64 KiB, 10 000 bytes.
    let data = test_bytes((64 << 10) + (32 << 10) + (64 << 10) + 10_000, 12);
    let cuts = [0, 64 << 10, 96 << 10, 160 << 10, data.len()];
    let chunks: Vec<Vec<u8>> = cuts.windows(2).map(|w| data[w[0]..w[1]].to_vec()).collect();
    let ids: Vec<String> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{}{i}", md5_hex(c)))
        .collect();
    let file_id = md5_hex(&data);
    let hs = json!({ "fileId": file_id, "ext": EXT, "chunkIds": ids });
    assert_eq!(missing_of(&srv.handshake(&hs).await), ids);

    // Chunk 0 fixes the chunk size at 64 KiB.
    assert_eq!(
        missing_of(
            &srv.send_chunk(&file_id, &ids[0], chunks[0].clone(), true)
                .await
        ),
        ids[1..]
    );
    for file_first in [true, false] {
        let resp = srv
            .send_chunk(&file_id, &ids[1], chunks[1].clone(), file_first)
            .await;
        assert_error(&resp, 422, "chunk_size_mismatch");
    }
    assert_eq!(missing_of(&srv.handshake(&hs).await), ids[1..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_without_a_file_field_is_400() {
    let srv = TestServer::start().await;
    let (p, before) = seeded(&srv).await;
    let form = reqwest::multipart::Form::new()
        .text("chunkId", p.ids[1].clone())
        .text("fileId", p.file_id.clone());
    assert_error(&post_form(&srv, form).await, 400, "file_required");
    // Bytes under an unrelated field name are not the chunk either.
    let form = reqwest::multipart::Form::new()
        .text("chunkId", p.ids[1].clone())
        .text("fileId", p.file_id.clone())
        .part("attachment", bytes_part(p.chunks[1].clone()));
    assert_error(&post_form(&srv, form).await, 400, "file_required");
    assert_unchanged(&srv, &p, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_without_file_id_is_403() {
    let srv = TestServer::start().await;
    let (p, before) = seeded(&srv).await;
    let forms = [
        reqwest::multipart::Form::new()
            .part("file", bytes_part(p.chunks[1].clone()))
            .text("chunkId", p.ids[1].clone()),
        reqwest::multipart::Form::new()
            .text("chunkId", p.ids[1].clone())
            .part("file", bytes_part(p.chunks[1].clone())),
        reqwest::multipart::Form::new()
            .text("chunkId", p.ids[1].clone())
            .text("fileId", "")
            .part("file", bytes_part(p.chunks[1].clone())),
    ];
    for form in forms {
        assert_error(&post_form(&srv, form).await, 403, "file_id_required");
    }
    assert_unchanged(&srv, &p, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_without_chunk_id_is_400() {
    let srv = TestServer::start().await;
    let (p, before) = seeded(&srv).await;
    let forms = [
        reqwest::multipart::Form::new()
            .part("file", bytes_part(p.chunks[1].clone()))
            .text("fileId", p.file_id.clone()),
        reqwest::multipart::Form::new()
            .text("fileId", p.file_id.clone())
            .part("file", bytes_part(p.chunks[1].clone())),
    ];
    for form in forms {
        assert_error(&post_form(&srv, form).await, 400, "chunk_id_required");
    }
    assert_unchanged(&srv, &p, &before).await;
}

// ---------------------------------------------------------------------------
// GET /upload/<fileId><ext>
// ---------------------------------------------------------------------------

/// Uploads `p` completely (ids first, in order) and returns its URL.
async fn upload_all(srv: &TestServer, p: &Plan) -> String {
    missing_of(&srv.handshake(&p.handshake()).await);
    for i in 0..p.ids.len() - 1 {
        missing_of(&p.send(srv, i, false).await);
    }
    url_of(&p.send(srv, p.ids.len() - 1, false).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_file_serves_ranges_with_a_strong_etag() {
    let srv = TestServer::start().await;
    let p = plan(test_bytes((1 << 20) + 500, 13), 256 << 10, Ids::Spark);
    let url = upload_all(&srv, &p).await;
    let len = p.data.len();

    let full = srv.client.get(&url).send().await.unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    let etag = full.headers()["etag"].to_str().unwrap().to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "a strong ETag, not {etag:?}"
    );
    assert!(full.bytes().await.unwrap() == p.data);

    for (range, from, to) in [
        ("bytes=1000-1999", 1000, 1999),
        (&format!("bytes={}-", len - 300) as &str, len - 300, len - 1),
        ("bytes=-100", len - 100, len - 1),
        ("bytes=262140-262150", 262_140, 262_150), // across a chunk boundary
    ] {
        let r = srv
            .client
            .get(&url)
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(
            r.headers()["content-range"].to_str().unwrap(),
            format!("bytes {from}-{to}/{len}"),
            "{range}"
        );
        assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
        let body = r.bytes().await.unwrap();
        assert!(body[..] == p.data[from..=to], "bytes of {range}");
    }

    // If-Range with the ETag keeps the range; HEAD has the length and no body.
    let r = srv
        .client
        .get(&url)
        .header("range", "bytes=0-9")
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    let r = srv.client.head(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"].to_str().unwrap(),
        len.to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_file_under_a_wrong_ext_or_unknown_id_is_404() {
    let srv = TestServer::start().await;
    let p = plan(test_bytes(300_000, 14), 128 << 10, Ids::Spark);
    let url = upload_all(&srv, &p).await;
    assert_eq!(srv.get_bytes(&url).await.0, 200);
    for path in [
        format!("/upload/{}.jpg", p.file_id),
        format!("/upload/{}", p.file_id),
        format!("/upload/{}.bin.bin", p.file_id),
        format!("/upload/{}{EXT}", md5_hex(b"other")),
        format!("/upload/{}{EXT}", &p.file_id[..31]),
    ] {
        assert_eq!(srv.get_bytes(&srv.url(&path)).await.0, 404, "{path}");
    }
    // An incomplete upload is not served either.
    let q = plan(test_bytes(300_000, 15), 128 << 10, Ids::Spark);
    missing_of(&srv.handshake(&q.handshake()).await);
    missing_of(&q.send(&srv, 0, true).await);
    assert_eq!(srv.get_bytes(&q.url(&srv)).await.0, 404);
}

// ---------------------------------------------------------------------------
// Hostile chunks (SPEC §6)
// ---------------------------------------------------------------------------

/// A chunk re-sent under an id the upload already holds, but with other bytes: the server
/// still reads and checks it, and says the bytes do not match instead of answering success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_chunk_id_with_other_bytes_is_a_digest_mismatch_and_changes_nothing() {
    let srv = TestServer::start().await;
    let (p, before) = seeded(&srv).await;
    let mut other = p.chunks[0].clone();
    other[7] ^= 0xFF;
    let form = reqwest::multipart::Form::new()
        .text("chunkId", p.ids[0].clone())
        .text("fileId", p.file_id.clone())
        .part("file", bytes_part(other));
    assert_error(&post_form(&srv, form).await, 422, "chunk_digest_mismatch");
    // The same bytes again are fine: the answer lists what is still missing.
    let again = missing_of(&p.send(&srv, 0, false).await);
    assert_eq!(again, before);
    assert_unchanged(&srv, &p, &before).await;
    srv.stop().await;
}

/// A file part that declares its own Content-Length and carries fewer or more bytes is
/// refused whole, in both field orders (streamed and spooled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_longer_or_shorter_than_its_declared_length_stores_nothing() {
    let srv = TestServer::start().await;
    let (p, before) = seeded(&srv).await;
    let real = p.chunks[1].len();
    for declared in [real - 1, real + 1] {
        for file_first in [false, true] {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert("content-length", declared.to_string().parse().unwrap());
            let part = bytes_part(p.chunks[1].clone()).headers(headers);
            let form = if file_first {
                reqwest::multipart::Form::new()
                    .part("file", part)
                    .text("chunkId", p.ids[1].clone())
                    .text("fileId", p.file_id.clone())
            } else {
                reqwest::multipart::Form::new()
                    .text("chunkId", p.ids[1].clone())
                    .text("fileId", p.file_id.clone())
                    .part("file", part)
            };
            let (status, body) = post_form(&srv, form).await;
            assert!(
                status == 400 || status == 422,
                "declared {declared} of {real} (file first: {file_first}): {status} {body}"
            );
            assert_unchanged(&srv, &p, &before).await;
        }
    }
    // Declared right, it is taken.
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("content-length", real.to_string().parse().unwrap());
    let form = reqwest::multipart::Form::new()
        .text("chunkId", p.ids[1].clone())
        .text("fileId", p.file_id.clone())
        .part("file", bytes_part(p.chunks[1].clone()).headers(headers));
    assert!(!missing_of(&post_form(&srv, form).await).contains(&p.ids[1]));
    srv.stop().await;
}

/// After the file is complete, a chunk re-sent with its own bytes still answers the URL (a
/// retry), but other bytes under its id, or an id the file does not have, never succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_sent_after_completion_are_still_checked() {
    let srv = TestServer::start().await;
    let p = plan(test_bytes(100_000, 78), 32 << 10, Ids::Spark);
    missing_of(&srv.handshake(&p.handshake_sized()).await);
    let mut last = (0, Value::Null);
    for i in 0..p.chunks.len() {
        last = p.send(&srv, i, false).await;
    }
    assert!(last.1["data"].is_string(), "complete: {}", last.1);
    let again = p.send(&srv, 1, false).await;
    assert_eq!(again.0, 200);
    assert!(
        again.1["data"].is_string(),
        "a retry answers the URL: {}",
        again.1
    );
    let mut other = p.chunks[1].clone();
    other[0] ^= 1;
    let form = reqwest::multipart::Form::new()
        .text("chunkId", p.ids[1].clone())
        .text("fileId", p.file_id.clone())
        .part("file", bytes_part(other));
    assert_error(&post_form(&srv, form).await, 422, "chunk_digest_mismatch");
    let form = reqwest::multipart::Form::new()
        .text("chunkId", format!("{}99", "ab".repeat(16)))
        .text("fileId", p.file_id.clone())
        .part("file", bytes_part(vec![1, 2, 3]));
    assert_error(&post_form(&srv, form).await, 409, "unknown_chunk");
    assert_served(&srv, &p).await;
    srv.stop().await;
}
