//! Shared fixture: a real ferry server (filesystem + SQLite in a temp dir) on 127.0.0.1:0,
//! served in-process, and small helpers for the chunk-handshake and byte-offset dialects.
#![allow(dead_code)]

use ferry_server::config::ServeArgs;
use ferry_server::{AppState, run, state_from_args};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after letting the caller adjust its settings.
    pub async fn start_with(adjust: impl FnOnce(&mut ServeArgs)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = ServeArgs::for_dir(dir.path());
        adjust(&mut args);
        let state = state_from_args(&args).await.expect("state");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let st = state.clone();
        let expire = args.expire_incomplete;
        let task = tokio::spawn(async move {
            run(listener, st, expire, async {
                let _ = rx.await;
            })
            .await
            .expect("server");
        });
        TestServer {
            base,
            // No idle connection reuse: an error answered before the body was read closes
            // the connection, and a pooled client would race that close on its next request.
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            state,
            dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// POST a handshake JSON value; returns (HTTP status, envelope JSON).
    pub async fn handshake(&self, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let r = self
            .client
            .post(self.url("/api/upload/handshake"))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// POST one chunk as multipart/form-data with the given field order
    /// (`file_first` mirrors `formData.append('file', …)` before the ids).
    pub async fn send_chunk(
        &self,
        file_id: &str,
        chunk_id: &str,
        bytes: Vec<u8>,
        file_first: bool,
    ) -> (u16, serde_json::Value) {
        use reqwest::multipart::{Form, Part};
        let part = Part::bytes(bytes)
            .file_name("blob")
            .mime_str("application/octet-stream")
            .unwrap();
        let form = if file_first {
            Form::new()
                .part("file", part)
                .text("chunkId", chunk_id.to_owned())
                .text("fileId", file_id.to_owned())
        } else {
            Form::new()
                .text("chunkId", chunk_id.to_owned())
                .text("fileId", file_id.to_owned())
                .part("file", part)
        };
        let r = self
            .client
            .post(self.url("/api/upload"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// `GET /api/upload/status` for a byte-offset client id.
    pub async fn offset_status(&self, client_id: &str) -> u64 {
        let r = self
            .client
            .get(self.url("/api/upload/status"))
            .header("X-File-Id", client_id)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap().trim().parse().unwrap()
    }

    pub async fn get_bytes(&self, url: &str) -> (u16, Vec<u8>) {
        let r = self.client.get(url).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.bytes().await.unwrap().to_vec())
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Value of one metric line, e.g. `ferry_bytes_received_total{dialect="chunk"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .map(|v| v.trim().parse::<f64>().unwrap())
            })
            .unwrap_or_else(|| panic!("metric {series} missing in:\n{text}"))
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn test_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    hex_encode(&md5::Md5::digest(data))
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex_encode(&sha2::Sha256::digest(data))
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Splits `data` into `chunk` sized pieces with spark-md5 style ids (`<md5><index>`).
pub fn spark_chunks(data: &[u8], chunk: usize) -> (String, Vec<(String, Vec<u8>)>) {
    let pieces: Vec<(String, Vec<u8>)> = data
        .chunks(chunk)
        .enumerate()
        .map(|(i, c)| (format!("{}{}", md5_hex(c), i), c.to_vec()))
        .collect();
    (md5_hex(data), pieces)
}

impl TestServer {
    /// Starts a graceful shutdown without waiting for it: the server stops accepting, lets
    /// requests in flight finish, then its task ends ([`TestServer::stop`] awaits that).
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Whether the server task has ended (after [`TestServer::trigger_shutdown`]).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }
}

/// A whole answer: status, headers and body.
pub struct Reply {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One request as `auth` (a bearer token; `None`: no credentials), with `headers` and
/// `body`, to a path of `srv` or an absolute URL.
pub async fn call(
    srv: &TestServer,
    auth: Option<&str>,
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let url = if url.starts_with("http") {
        url.to_owned()
    } else {
        srv.url(url)
    };
    let mut r = srv.client.request(method, url).body(body);
    if let Some(t) = auth {
        r = r.bearer_auth(t);
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.unwrap();
    Reply {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.unwrap().to_vec(),
    }
}
