//! The chunk-handshake dialect (SPEC §2.1) spoken over [`super::proc`]'s raw HTTP.
#![allow(dead_code)]

use super::proc::{connect, md5_hex, request, send_in_pieces, write_head};
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// Chunk-handshake dialect (SPEC §2.1)
// ---------------------------------------------------------------------------------------

pub const BOUNDARY: &str = "----ferrycrashtestboundary7MA4YWxkTrZu0gW";

pub struct Chunked {
    pub file_id: String,
    pub ids: Vec<String>,
    pub chunks: Vec<std::ops::Range<usize>>,
}

impl Chunked {
    pub fn new(src: &[u8], chunk: usize) -> Chunked {
        let chunks: Vec<_> = (0..src.len().div_ceil(chunk))
            .map(|i| i * chunk..((i + 1) * chunk).min(src.len()))
            .collect();
        let ids = chunks
            .iter()
            .enumerate()
            .map(|(i, r)| format!("{}{i}", md5_hex(&src[r.clone()])))
            .collect();
        Chunked {
            file_id: md5_hex(src),
            ids,
            chunks,
        }
    }

    /// `POST /api/upload/handshake`; returns `data`.
    #[track_caller]
    pub fn handshake(&self, port: u16) -> serde_json::Value {
        let body = serde_json::json!({
            "fileId": self.file_id,
            "ext": ".bin",
            "chunkIds": self.ids,
        })
        .to_string();
        let r = request(
            port,
            "POST",
            "/api/upload/handshake",
            &[("Content-Type", "application/json".to_owned())],
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "handshake: {}", r.text());
        let j = r.json();
        assert_eq!(j["code"], 0, "handshake: {j}");
        j["data"].clone()
    }

    /// The multipart body of chunk `i`, split as (before the bytes, after the bytes).
    pub fn envelope(&self, i: usize) -> (Vec<u8>, Vec<u8>) {
        let pre = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"chunkId\"\r\n\r\n{}\r\n\
             --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"fileId\"\r\n\r\n{}\r\n\
             --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"blob\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n",
            self.ids[i], self.file_id
        );
        let post = format!("\r\n--{BOUNDARY}--\r\n");
        (pre.into_bytes(), post.into_bytes())
    }

    pub fn content_type() -> (&'static str, String) {
        (
            "Content-Type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
    }

    /// Sends chunk `i` whole; returns `data` of the answer.
    #[track_caller]
    pub fn send(&self, port: u16, src: &[u8], i: usize) -> serde_json::Value {
        let (pre, post) = self.envelope(i);
        let mut body = pre;
        body.extend_from_slice(&src[self.chunks[i].clone()]);
        body.extend_from_slice(&post);
        let r = request(port, "POST", "/api/upload", &[Self::content_type()], &body);
        assert_eq!(r.status, 200, "chunk {i}: {}", r.text());
        let j = r.json();
        assert_eq!(j["code"], 0, "chunk {i}: {j}");
        j["data"].clone()
    }

    /// Starts chunk `i` and sends the ids and the first `sent` of its bytes (in a few writes);
    /// the request stays open.
    pub fn send_partial(&self, port: u16, src: &[u8], i: usize, sent: usize) -> TcpStream {
        let (pre, post) = self.envelope(i);
        let bytes = &src[self.chunks[i].clone()];
        let mut s = connect(port).expect("connecting");
        write_head(
            &mut s,
            port,
            "POST",
            "/api/upload",
            &[Self::content_type()],
            pre.len() + bytes.len() + post.len(),
        )
        .unwrap();
        s.write_all(&pre).unwrap();
        send_in_pieces(&mut s, &bytes[..sent], 4, Duration::from_millis(20)).unwrap();
        s
    }

    pub fn missing(&self, from: &[usize]) -> serde_json::Value {
        serde_json::json!(
            from.iter()
                .map(|&i| self.ids[i].clone())
                .collect::<Vec<_>>()
        )
    }
}
