//! A full disk (SPEC §7): below `--min-free-space` every dialect answers 507 with a stable
//! code and a sentence before storing anything, and `/healthz` reports degraded (503).
//! (`crates/client/tests/disk_full.rs` fills a real, small tmpfs.)

mod common;

use common::TestServer;
use serde_json::{Value, json};

#[tokio::test]
async fn below_the_reserve_every_dialect_answers_507_and_healthz_503() {
    let srv = TestServer::start_with(|a| a.min_free_space = Some(u64::MAX)).await;
    let c = &srv.client;
    let check = |status: u16, body: &Value, what: &str| {
        assert_eq!(status, 507, "{what}: {body}");
        assert_eq!(body["error"], "insufficient_storage", "{what}: {body}");
        let msg = body["message"]
            .as_str()
            .or(body["msg"].as_str())
            .unwrap_or("");
        assert!(msg.contains("out of disk space"), "{what}: {body}");
    };
    let r = c
        .post(srv.url("/files/"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "10")
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    check(s, &r.json().await.unwrap(), "tus creation");
    let r = c
        .post(srv.url("/api/upload"))
        .header("x-file-id", "full.bin")
        .header("x-start-byte", "0")
        .header("x-file-size", "3")
        .body("abc")
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    check(s, &r.json().await.unwrap(), "byte-offset write");
    let (s, body) = srv
        .handshake(&json!({"fileId": "0".repeat(32), "ext": ".bin", "chunkIds": ["0123456789abcdef0123456789abcdef0"]}))
        .await;
    check(s, &body, "chunk handshake");
    assert_eq!(body["code"], 507, "the envelope's code is the status");
    let r = c
        .post(srv.url("/files/"))
        .header("upload-draft-interop-version", "6")
        .header("upload-complete", "?1")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 507, "IETF creation");
    // Nothing was stored: no upload file exists.
    let partial = srv.dir.path().join("files/partial");
    assert_eq!(std::fs::read_dir(partial).unwrap().count(), 0);
    let r = c.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.text().await.unwrap().contains("out of disk space"));
    srv.stop().await;
}
