//! The resumable.js / flow.js / simple-uploader protocol at `/api/resumable`, against a real
//! server on `127.0.0.1:0`: each library's field names, both last-chunk rules, chunks in any
//! order and in parallel, the test `GET` (204 "send it", 200 "have it" with the held list),
//! instant completion of a file the tenant has, tenants kept apart, and bad input refused
//! with nothing changed. (The libraries themselves run in Chromium: web/tests/browser.)

mod common;

use common::{TestServer, test_bytes};
use ferry_core::engine::DialectStats;
use ferry_server::resumable::RESUMABLE;
use futures_util::StreamExt;
use futures_util::stream;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};

const MIB: usize = 1 << 20;

/// How a library names its fields.
#[derive(Clone, Copy, Debug)]
enum Lib {
    Resumable,
    Flow,
    Simple,
}

impl Lib {
    fn name(self, field: &str) -> String {
        let mut upper = field.to_owned();
        upper[..1].make_ascii_uppercase();
        match self {
            Lib::Resumable => format!("resumable{upper}"),
            Lib::Flow => format!("flow{upper}"),
            Lib::Simple => field.to_owned(),
        }
    }
}

/// A file as a library cuts it.
struct File {
    lib: Lib,
    data: Vec<u8>,
    chunk_size: usize,
    force: bool,
    identifier: String,
    token: Option<&'static str>,
}

impl File {
    fn new(lib: Lib, len: usize, chunk_size: usize, force: bool, seed: u64) -> File {
        File {
            lib,
            data: test_bytes(len, seed),
            chunk_size,
            force,
            identifier: format!("{len}-file{seed}bin"),
            token: None,
        }
    }

    fn total_chunks(&self) -> usize {
        let n = if self.force {
            self.data.len().div_ceil(self.chunk_size)
        } else {
            self.data.len() / self.chunk_size
        };
        n.max(1)
    }

    /// Chunk `n` (1-based): the last one runs to the end.
    fn chunk(&self, n: usize) -> &[u8] {
        let start = (n - 1) * self.chunk_size;
        let end = if n == self.total_chunks() {
            self.data.len()
        } else {
            n * self.chunk_size
        };
        &self.data[start..end]
    }

    fn fields(&self, n: usize) -> Vec<(String, String)> {
        [
            ("chunkNumber", n.to_string()),
            ("chunkSize", self.chunk_size.to_string()),
            ("currentChunkSize", self.chunk(n).len().to_string()),
            ("totalSize", self.data.len().to_string()),
            ("identifier", self.identifier.clone()),
            ("filename", "file.bin".to_owned()),
            ("relativePath", "file.bin".to_owned()),
            ("totalChunks", self.total_chunks().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (self.lib.name(k), v))
        .collect()
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// The test `GET` for chunk `n`: (status, JSON body or Null).
    async fn test(&self, srv: &TestServer, n: usize) -> (u16, Value) {
        self.test_with(srv, self.fields(n)).await
    }

    async fn test_with(&self, srv: &TestServer, fields: Vec<(String, String)>) -> (u16, Value) {
        let r = self
            .auth(srv.client.get(srv.url("/api/resumable")).query(&fields))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        (status, body)
    }

    /// The chunk `POST` of chunk `n`, fields first as the libraries send them.
    async fn send(&self, srv: &TestServer, n: usize) -> (u16, Value) {
        self.send_with(srv, self.fields(n), self.chunk(n).to_vec())
            .await
    }

    async fn send_with(
        &self,
        srv: &TestServer,
        fields: Vec<(String, String)>,
        bytes: Vec<u8>,
    ) -> (u16, Value) {
        let mut form = reqwest::multipart::Form::new();
        for (k, v) in fields {
            form = form.text(k, v);
        }
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(bytes)
                .file_name("blob")
                .mime_str("application/octet-stream")
                .unwrap(),
        );
        let r = self
            .auth(srv.client.post(srv.url("/api/resumable")).multipart(form))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }
}

/// One of the resumable dialect's counters (the `/metrics` figures, read in-process).
fn counter(srv: &TestServer, which: fn(&DialectStats) -> &AtomicU64) -> f64 {
    let stats = srv.state.engine.stats().dialect(RESUMABLE);
    which(&stats).load(Ordering::Relaxed) as f64
}

fn uploaded(body: &Value) -> Vec<u64> {
    body["uploaded"]
        .as_array()
        .unwrap_or_else(|| panic!("no uploaded list in {body}"))
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

async fn download(srv: &TestServer, body: &Value, token: Option<&str>) -> Vec<u8> {
    let url = body["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no url in {body}"));
    let mut r = srv.client.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    assert_eq!(resp.status(), 200, "GET {url}");
    resp.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_librarys_fields_in_any_order_and_in_parallel_complete_without_a_merge() {
    let srv = TestServer::start().await;
    // resumable.js with the default rule (last chunk up to 2·C−1), flow.js with
    // forceChunkSize (last chunk up to C), simple-uploader with a size that divides evenly.
    let files = [
        File::new(Lib::Resumable, 5 * MIB + 12_345, MIB, false, 1),
        File::new(Lib::Flow, 5 * MIB + 12_345, MIB, true, 2),
        File::new(Lib::Simple, 4 * MIB, MIB, false, 3),
    ];
    assert_eq!(files[0].total_chunks(), 5);
    assert_eq!(files[0].chunk(5).len(), MIB + 12_345);
    assert_eq!(files[1].total_chunks(), 6);
    assert_eq!(files[1].chunk(6).len(), 12_345);
    for f in &files {
        // Not held yet: 204, which every library reads as "send it".
        for n in 1..=f.total_chunks() {
            let (status, body) = f.test(&srv, n).await;
            assert_eq!(status, 204, "{:?} test of chunk {n}: {body}", f.lib);
        }
        // Last chunk first, then the rest three at a time.
        let last = f.total_chunks();
        let (status, body) = f.send(&srv, last).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(uploaded(&body), [last as u64]);
        assert_eq!(body["skipUpload"], false);
        assert!(body["url"].is_null());
        let answers: Vec<(u16, Value)> = stream::iter(1..last)
            .map(|n| f.send(&srv, n))
            .buffer_unordered(3)
            .collect()
            .await;
        assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
        let done: Vec<&Value> = answers
            .iter()
            .map(|(_, b)| b)
            .filter(|b| b["skipUpload"] == true)
            .collect();
        assert_eq!(done.len(), 1, "exactly one chunk completed the file");
        assert!(
            download(&srv, done[0], None).await == f.data,
            "{:?}: the file is the source",
            f.lib
        );
        // Now every test is "have it", and chunk 1's answer lists every chunk.
        let (status, body) = f.test(&srv, 1).await;
        assert_eq!(status, 200);
        assert_eq!(body["skipUpload"], true);
        assert_eq!(uploaded(&body), (1..=last as u64).collect::<Vec<_>>());
    }
    assert_eq!(counter(&srv, |d| &d.completed), 3.0);
    // One upload each: racing chunks shared the upload their identifier names.
    assert_eq!(counter(&srv, |d| &d.started), 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_learns_every_held_chunk_from_one_test_and_a_finished_file_is_instant() {
    let srv = TestServer::start().await;
    let f = File::new(Lib::Simple, 10 * MIB + 7, MIB, false, 4);
    let last = f.total_chunks();
    for n in [1, 2, 3, 5, 8] {
        assert_eq!(f.send(&srv, n).await.0, 200);
    }
    // simple-uploader's checkChunkUploadedByResponse reads chunk 1's answer.
    let (status, body) = f.test(&srv, 1).await;
    assert_eq!(status, 200);
    assert_eq!(uploaded(&body), [1, 2, 3, 5, 8]);
    assert_eq!(body["skipUpload"], false);
    // Other chunks' answers are short: that chunk only, or 204.
    let (status, body) = f.test(&srv, 5).await;
    assert_eq!((status, uploaded(&body)), (200, vec![5]));
    assert_eq!(f.test(&srv, 4).await.0, 204);
    // A chunk sent again is answered without rewriting it.
    let before = counter(&srv, |d| &d.bytes_received);
    assert_eq!(f.send(&srv, 2).await.0, 200);
    for n in (1..=last).filter(|n| ![1, 2, 3, 5, 8].contains(n)) {
        assert_eq!(f.send(&srv, n).await.0, 200);
    }
    let received = counter(&srv, |d| &d.bytes_received);
    assert!(
        received - before < (f.data.len() - 5 * MIB + MIB) as f64 + 1.0,
        "the held chunk's body was not stored again: {} bytes read",
        received - before
    );
    // The same file again (same identifier and size): every test says "have it".
    let again = File::new(Lib::Simple, 10 * MIB + 7, MIB, false, 4);
    for n in 1..=last {
        let (status, body) = again.test(&srv, n).await;
        assert_eq!(status, 200, "test of chunk {n} of a finished file");
        assert_eq!(body["skipUpload"], true);
        assert!(body["url"].as_str().is_some());
    }
    let (_, body) = again.test(&srv, 1).await;
    assert!(download(&srv, &body, None).await == f.data);
    // An empty file is one empty chunk.
    let empty = File::new(Lib::Resumable, 0, MIB, false, 5);
    assert_eq!(empty.total_chunks(), 1);
    let (status, body) = empty.send(&srv, 1).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["skipUpload"], true);
    assert!(download(&srv, &body, None).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_neither_sees_nor_reuses_a_file() {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), "tok-a alice\ntok-b bob\n").unwrap();
    let path = tokens.into_temp_path().keep().unwrap();
    let srv = TestServer::start_with(|a| a.auth_tokens_file = Some(path)).await;
    let mut a = File::new(Lib::Resumable, 2 * MIB + 1, MIB, false, 6);
    a.token = Some("tok-a");
    let mut b = File::new(Lib::Resumable, 2 * MIB + 1, MIB, false, 6);
    b.token = Some("tok-b");
    // Without a token: 401.
    let mut anon = File::new(Lib::Resumable, 2 * MIB + 1, MIB, false, 6);
    anon.token = None;
    assert_eq!(anon.test(&srv, 1).await.0, 401);
    for n in 1..=a.total_chunks() {
        assert_eq!(a.send(&srv, n).await.0, 200);
    }
    assert_eq!(a.test(&srv, 1).await.0, 200);
    // Bob, with the same file and identifier, has nothing: he sends every byte himself.
    for n in 1..=b.total_chunks() {
        assert_eq!(b.test(&srv, n).await.0, 204, "bob's test of chunk {n}");
    }
    let before = counter(&srv, |d| &d.bytes_received);
    let mut last = Value::Null;
    for n in 1..=b.total_chunks() {
        let (status, body) = b.send(&srv, n).await;
        assert_eq!(status, 200);
        last = body;
    }
    let after = counter(&srv, |d| &d.bytes_received);
    assert_eq!(after - before, b.data.len() as f64);
    assert!(download(&srv, &last, Some("tok-b")).await == b.data);
    assert_eq!(counter(&srv, |d| &d.started), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_contradictory_fields_are_refused_and_change_nothing() {
    let srv = TestServer::start_with(|a| a.max_upload_size = 64 * MIB as u64).await;
    let f = File::new(Lib::Flow, 3 * MIB + 10, MIB, false, 7);
    assert_eq!(f.send(&srv, 1).await.0, 200);
    async fn held(f: &File, srv: &TestServer) -> Vec<u64> {
        let (status, body) = f.test(srv, 1).await;
        assert_eq!(status, 200);
        uploaded(&body)
    }
    assert_eq!(held(&f, &srv).await, [1]);
    let set = |n: usize, field: &str, value: &str| {
        let mut fields = f.fields(n);
        let name = f.lib.name(field);
        fields.retain(|(k, _)| *k != name);
        fields.push((name, value.to_owned()));
        fields
    };
    let without = |n: usize, field: &str| {
        let mut fields = f.fields(n);
        let name = f.lib.name(field);
        fields.retain(|(k, _)| *k != name);
        fields
    };
    type Fields = Vec<(String, String)>;
    let cases: Vec<(&str, Fields, u16, &str)> = vec![
        (
            "no chunk number",
            without(2, "chunkNumber"),
            400,
            "chunk_field_missing",
        ),
        (
            "no identifier",
            without(2, "identifier"),
            400,
            "chunk_field_missing",
        ),
        (
            "a number that is not one",
            set(2, "chunkNumber", "two"),
            400,
            "invalid_chunk_field",
        ),
        (
            "chunk number past the total",
            set(2, "chunkNumber", "4"),
            400,
            "chunk_number_out_of_range",
        ),
        (
            "chunk number 0",
            set(2, "chunkNumber", "0"),
            400,
            "chunk_number_out_of_range",
        ),
        (
            "a chunk count no rule gives",
            set(2, "totalChunks", "7"),
            400,
            "chunk_count_mismatch",
        ),
        (
            "a current size that does not fit the total",
            set(2, "currentChunkSize", "1000"),
            400,
            "chunk_size_mismatch",
        ),
        (
            "a file name with a path",
            set(2, "filename", "../etc/passwd"),
            400,
            "invalid_file_name",
        ),
        (
            "a chunk size of 0",
            set(2, "chunkSize", "0"),
            400,
            "invalid_chunk_field",
        ),
    ];
    for (what, fields, status, code) in cases {
        for (verb, (got, body)) in [
            ("GET", f.test_with(&srv, fields.clone()).await),
            ("POST", f.send_with(&srv, fields, vec![7u8; MIB]).await),
        ] {
            assert_eq!(got, status, "{what} ({verb}): {body}");
            assert_eq!(body["error"], code, "{what} ({verb}): {body}");
            assert!(
                body["message"].as_str().is_some_and(|m| m.len() > 20),
                "{what}: a sentence"
            );
        }
    }
    // The same identifier with another layout contradicts the earlier chunk: 400 (resumable.js retries a 409).
    let mut other = File::new(Lib::Flow, 3 * MIB + 10, 2 * MIB, true, 7);
    other.identifier = f.identifier.clone();
    let (status, body) = other.send(&srv, 1).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "chunk_layout_conflict");
    let mut longer = File::new(Lib::Flow, 4 * MIB, MIB, false, 7);
    longer.identifier = f.identifier.clone();
    let (status, body) = longer.test(&srv, 2).await;
    assert_eq!(status, 400, "{body}");
    // Over the size limit: 400 (resumable.js retries a 413), nothing created.
    let big = File {
        data: Vec::new(),
        ..File::new(Lib::Resumable, 0, MIB, false, 8)
    };
    let mut fields = big.fields(1);
    for (k, v) in fields.iter_mut() {
        match k.as_str() {
            "resumableTotalSize" => *v = (65 * MIB).to_string(),
            "resumableTotalChunks" => *v = "65".to_owned(),
            "resumableCurrentChunkSize" => *v = MIB.to_string(),
            _ => {}
        }
    }
    let (status, body) = big.send_with(&srv, fields, vec![1u8; MIB]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "too_large");
    // A body shorter than the chunk: refused, the chunk not held.
    let (status, body) = f
        .send_with(&srv, f.fields(2), f.chunk(2)[..1000].to_vec())
        .await;
    assert_eq!(status, 400, "{body}");
    // Nothing of that moved the file: chunk 1 only, and it still completes intact.
    assert_eq!(held(&f, &srv).await, [1]);
    assert_eq!(counter(&srv, |d| &d.started), 1.0);
    let mut last = Value::Null;
    for n in 2..=f.total_chunks() {
        let (status, body) = f.send(&srv, n).await;
        assert_eq!(status, 200, "{body}");
        last = body;
    }
    assert!(download(&srv, &last, None).await == f.data);
}
