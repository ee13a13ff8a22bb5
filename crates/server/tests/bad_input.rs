//! The bad-input table (SPEC §6: "bad input gets a clear 4xx and changes nothing").
//!
//! One server holds a chunk-handshake upload and a byte-offset upload half done. Every row
//! sends one malformed request and checks the status, the stable error code and a non-empty
//! message; after every row the observable state (missing chunks, held bytes, upload
//! counters, files on disk) must be exactly what it was before.

mod common;

use common::{TestServer, md5_hex, spark_chunks, test_bytes};
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE};
use serde_json::{Value, json};
use std::path::Path;

/// What a client and an operator can observe; must not change on bad input.
#[derive(Debug, PartialEq)]
struct Snapshot {
    chunk_missing: Value,
    offset_held: u64,
    started: String,
    files: Vec<String>,
}

struct Fixture {
    srv: TestServer,
    file_id: String,
    ids: Vec<String>,
    chunks: Vec<Vec<u8>>,
    offset_id: String,
}

fn list_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = p.strip_prefix(dir).unwrap().display().to_string();
                // SQLite's own files change size on reads (WAL checkpoints); the database's
                // content is covered by the other fields.
                // Sizes are not compared: a refused chunk may leave bytes in an unheld
                // region of the partial file, which is not stored data (only held ranges
                // are, and those are compared through the dialects above).
                if !name.starts_with("ferry.db") {
                    out.push(name);
                }
            }
        }
    }
    out.sort();
    out
}

impl Fixture {
    async fn new() -> Self {
        let srv = TestServer::start_with(|a| a.max_upload_size = 64 << 20).await;
        let data = test_bytes(3 * 65536 + 100, 7);
        let (file_id, pieces) = spark_chunks(&data, 65536);
        let ids: Vec<String> = pieces.iter().map(|(id, _)| id.clone()).collect();
        let chunks: Vec<Vec<u8>> = pieces.into_iter().map(|(_, c)| c).collect();
        let (status, body) = srv
            .handshake(&json!({"fileId": file_id, "ext": ".bin", "chunkIds": ids}))
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, _) = srv
            .send_chunk(&file_id, &ids[0], chunks[0].clone(), false)
            .await;
        assert_eq!(status, 200);
        let offset_id = "report.pdf-1000-1700000000".to_owned();
        let r = srv
            .client
            .post(srv.url("/api/upload"))
            .header("X-File-Id", &offset_id)
            .header("X-Start-Byte", "0")
            .header("X-File-Size", "1000")
            .body(vec![1u8; 400])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        Fixture {
            srv,
            file_id,
            ids,
            chunks,
            offset_id,
        }
    }

    async fn snapshot(&self) -> Snapshot {
        let (_, hs) = self
            .srv
            .handshake(&json!({"fileId": self.file_id, "ext": ".bin", "chunkIds": self.ids}))
            .await;
        Snapshot {
            chunk_missing: hs["data"].clone(),
            offset_held: self.srv.offset_status(&self.offset_id).await,
            started: self
                .srv
                .metrics()
                .await
                .lines()
                .filter(|l| l.starts_with("ferry_uploads_"))
                .collect::<Vec<_>>()
                .join("\n"),
            files: list_files(self.srv.dir.path()),
        }
    }
}

/// One malformed request.
enum Req {
    Handshake(String),
    Chunk {
        file_id: Option<String>,
        chunk_id: Option<String>,
        bytes: Option<Vec<u8>>,
    },
    Offset(Vec<(&'static str, String)>, Vec<u8>),
    Raw(Vec<(&'static str, String)>, Vec<u8>),
}

struct Row {
    name: &'static str,
    req: Req,
    status: u16,
    code: &'static str,
}

async fn send(f: &Fixture, req: Req) -> (u16, Value) {
    let c = &f.srv.client;
    let resp = match req {
        Req::Handshake(body) => c
            .post(f.srv.url("/api/upload/handshake"))
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .unwrap(),
        Req::Chunk {
            file_id,
            chunk_id,
            bytes,
        } => {
            use reqwest::multipart::{Form, Part};
            let mut form = Form::new();
            if let Some(c) = chunk_id {
                form = form.text("chunkId", c);
            }
            if let Some(fid) = file_id {
                form = form.text("fileId", fid);
            }
            if let Some(b) = bytes {
                form = form.part("file", Part::bytes(b).file_name("blob"));
            }
            c.post(f.srv.url("/api/upload"))
                .multipart(form)
                .send()
                .await
                .unwrap()
        }
        Req::Offset(headers, body) => {
            let mut r = c
                .post(f.srv.url("/api/upload"))
                .header("X-File-Id", &f.offset_id)
                .header(CONTENT_TYPE, "application/octet-stream");
            for (k, v) in headers {
                r = r.header(k, v);
            }
            r.body(body).send().await.unwrap()
        }
        Req::Raw(headers, body) => {
            let mut r = c.post(f.srv.url("/api/upload"));
            for (k, v) in headers {
                r = r.header(k, v);
            }
            r.body(body).send().await.unwrap()
        }
    };
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn hs(value: Value) -> Req {
    Req::Handshake(value.to_string())
}

fn rows(f: &Fixture) -> Vec<Row> {
    let fid = f.file_id.clone();
    let ids = f.ids.clone();
    let other_md5 = md5_hex(b"something else");
    let chunk =
        |file_id: Option<&str>, chunk_id: Option<&str>, bytes: Option<Vec<u8>>| Req::Chunk {
            file_id: file_id.map(str::to_owned),
            chunk_id: chunk_id.map(str::to_owned),
            bytes,
        };
    let off = |h: &[(&'static str, &str)], len: usize| {
        Req::Offset(
            h.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            vec![9u8; len],
        )
    };
    vec![
        // --- handshake: malformed JSON and missing fields ---
        Row {
            name: "handshake: malformed JSON",
            req: Req::Handshake("{\"fileId\": ".into()),
            status: 400,
            code: "malformed_json",
        },
        Row {
            name: "handshake: not an object",
            req: Req::Handshake("[1,2,3]".into()),
            status: 400,
            code: "malformed_json",
        },
        Row {
            name: "handshake: wrong field type",
            req: hs(json!({"fileId": 12, "ext": ".bin", "chunkIds": []})),
            status: 400,
            code: "malformed_json",
        },
        Row {
            name: "handshake: missing fileId",
            req: hs(json!({"ext": ".bin", "chunkIds": ids})),
            status: 403,
            code: "file_id_required",
        },
        Row {
            name: "handshake: empty fileId",
            req: hs(json!({"fileId": "", "ext": ".bin", "chunkIds": ids})),
            status: 403,
            code: "file_id_required",
        },
        Row {
            name: "handshake: fileId not hex",
            req: hs(json!({"fileId": "zz".repeat(16), "ext": ".bin", "chunkIds": ids})),
            status: 400,
            code: "invalid_file_id",
        },
        Row {
            name: "handshake: missing chunkIds",
            req: hs(json!({"fileId": other_md5, "ext": ".bin"})),
            status: 400,
            code: "chunk_ids_required",
        },
        Row {
            name: "handshake: chunk id not a digest",
            req: hs(json!({"fileId": other_md5, "ext": ".bin", "chunkIds": ["hello"]})),
            status: 400,
            code: "invalid_chunk_id",
        },
        Row {
            name: "handshake: chunk id with a path",
            req: hs(
                json!({"fileId": other_md5, "ext": ".bin", "chunkIds": [format!("{other_md5}/../../etc")]}),
            ),
            status: 400,
            code: "invalid_chunk_id",
        },
        Row {
            name: "handshake: unsupported hash",
            req: hs(
                json!({"fileId": other_md5, "ext": ".bin", "chunkIds": [other_md5], "hashAlgorithm": "crc32"}),
            ),
            status: 400,
            code: "unsupported_hash",
        },
        // --- handshake: traversal attempts in ext ---
        Row {
            name: "ext: ../../x",
            req: hs(json!({"fileId": other_md5, "ext": "../../x", "chunkIds": [other_md5]})),
            status: 400,
            code: "invalid_ext",
        },
        Row {
            name: "ext: /",
            req: hs(json!({"fileId": other_md5, "ext": "/", "chunkIds": [other_md5]})),
            status: 400,
            code: "invalid_ext",
        },
        Row {
            name: "ext: NUL",
            req: hs(json!({"fileId": other_md5, "ext": ".a\u{0}b", "chunkIds": [other_md5]})),
            status: 400,
            code: "invalid_ext",
        },
        Row {
            name: "ext: 300 characters",
            req: hs(
                json!({"fileId": other_md5, "ext": format!(".{}", "a".repeat(299)), "chunkIds": [other_md5]}),
            ),
            status: 400,
            code: "invalid_ext",
        },
        Row {
            name: "ext: backslash",
            req: hs(json!({"fileId": other_md5, "ext": ".\\..\\x", "chunkIds": [other_md5]})),
            status: 400,
            code: "invalid_ext",
        },
        // --- handshake: sizes ---
        Row {
            name: "handshake: size over the limit",
            req: hs(
                json!({"fileId": other_md5, "ext": ".bin", "chunkIds": [other_md5], "size": 1u64 << 40}),
            ),
            status: 413,
            code: "too_large",
        },
        Row {
            name: "handshake: size overflowing u64",
            req: Req::Handshake(format!(
                "{{\"fileId\":\"{other_md5}\",\"ext\":\".bin\",\"chunkIds\":[\"{other_md5}\"],\"size\":18446744073709551616}}"
            )),
            status: 400,
            code: "malformed_json",
        },
        Row {
            name: "handshake: negative size",
            req: Req::Handshake(format!(
                "{{\"fileId\":\"{other_md5}\",\"ext\":\".bin\",\"chunkIds\":[\"{other_md5}\"],\"size\":-5}}"
            )),
            status: 400,
            code: "malformed_json",
        },
        Row {
            name: "handshake: size and chunkSize disagree with the count",
            req: hs(
                json!({"fileId": other_md5, "ext": ".bin", "chunkIds": [other_md5, other_md5], "size": 100, "chunkSize": 100}),
            ),
            status: 400,
            code: "inconsistent_layout",
        },
        Row {
            name: "handshake: zero chunkSize",
            req: hs(
                json!({"fileId": other_md5, "ext": ".bin", "chunkIds": [other_md5], "size": 100, "chunkSize": 0}),
            ),
            status: 400,
            code: "inconsistent_layout",
        },
        // --- chunk upload ---
        Row {
            name: "chunk: missing fileId",
            req: chunk(None, Some(&ids[1]), Some(f.chunks[1].clone())),
            status: 403,
            code: "file_id_required",
        },
        Row {
            name: "chunk: missing chunkId",
            req: chunk(Some(&fid), None, Some(f.chunks[1].clone())),
            status: 400,
            code: "chunk_id_required",
        },
        Row {
            name: "chunk: missing file field",
            req: chunk(Some(&fid), Some(&ids[1]), None),
            status: 400,
            code: "file_required",
        },
        Row {
            name: "chunk: unknown chunk id",
            req: chunk(
                Some(&fid),
                Some(&format!("{other_md5}1")),
                Some(b"something else".to_vec()),
            ),
            status: 409,
            code: "unknown_chunk",
        },
        Row {
            name: "chunk: malformed chunk id",
            req: chunk(
                Some(&fid),
                Some("../../etc/passwd"),
                Some(f.chunks[1].clone()),
            ),
            status: 400,
            code: "invalid_chunk_id",
        },
        Row {
            name: "chunk: wrong digest",
            req: chunk(Some(&fid), Some(&ids[1]), Some(f.chunks[2].clone())),
            status: 422,
            code: "chunk_digest_mismatch",
        },
        Row {
            name: "chunk: truncated bytes",
            req: chunk(
                Some(&fid),
                Some(&ids[1]),
                Some(f.chunks[1][..1000].to_vec()),
            ),
            status: 422,
            code: "chunk_digest_mismatch",
        },
        Row {
            name: "chunk: oversized body",
            req: chunk(
                Some(&fid),
                Some(&ids[1]),
                Some([f.chunks[1].clone(), vec![0; 10]].concat()),
            ),
            status: 422,
            code: "chunk_size_mismatch",
        },
        Row {
            name: "chunk: no handshake for the fileId",
            req: chunk(Some(&other_md5), Some(&ids[1]), Some(f.chunks[1].clone())),
            status: 409,
            code: "handshake_required",
        },
        Row {
            name: "chunk: fileId not hex",
            req: chunk(Some("../../x"), Some(&ids[1]), Some(f.chunks[1].clone())),
            status: 400,
            code: "invalid_file_id",
        },
        Row {
            name: "chunk: broken multipart",
            req: Req::Raw(
                vec![("content-type", "multipart/form-data; boundary=XYZ".into())],
                b"--XYZ\r\nnot a part".to_vec(),
            ),
            status: 400,
            code: "malformed_multipart",
        },
        // --- byte-offset ---
        Row {
            name: "offset: wrong start",
            req: off(&[("X-Start-Byte", "10")], 10),
            status: 409,
            code: "offset_mismatch",
        },
        Row {
            name: "offset: negative start",
            req: off(&[("X-Start-Byte", "-1")], 10),
            status: 400,
            code: "invalid_number",
        },
        Row {
            name: "offset: overflowing start",
            req: off(&[("X-Start-Byte", "99999999999999999999")], 10),
            status: 400,
            code: "invalid_number",
        },
        Row {
            name: "offset: start not a number",
            req: off(&[("X-Start-Byte", "4e2")], 10),
            status: 400,
            code: "invalid_number",
        },
        Row {
            name: "offset: no start and no range",
            req: off(&[], 10),
            status: 400,
            code: "offset_required",
        },
        Row {
            name: "offset: body past the declared size",
            req: off(&[("X-Start-Byte", "400")], 700),
            status: 413,
            code: "past_declared_length",
        },
        Row {
            name: "offset: Content-Range past the declared total",
            req: off(&[(CONTENT_RANGE.as_str(), "bytes 900-1099/1000")], 200),
            status: 400,
            code: "range_past_total",
        },
        Row {
            name: "offset: Content-Range total differs from the declared size",
            req: off(&[(CONTENT_RANGE.as_str(), "bytes 400-409/5000")], 10),
            status: 409,
            code: "length_mismatch",
        },
        Row {
            name: "offset: Content-Range backwards",
            req: off(&[(CONTENT_RANGE.as_str(), "bytes 500-400/1000")], 10),
            status: 400,
            code: "invalid_content_range",
        },
        Row {
            name: "offset: Content-Range garbage",
            req: off(&[(CONTENT_RANGE.as_str(), "bytes=0-9/1000")], 10),
            status: 400,
            code: "invalid_content_range",
        },
        Row {
            name: "offset: Content-Range overflowing",
            req: off(
                &[(CONTENT_RANGE.as_str(), "bytes 0-99999999999999999999/1000")],
                10,
            ),
            status: 400,
            code: "invalid_content_range",
        },
        Row {
            name: "offset: Content-Range length differs from the body",
            req: off(&[(CONTENT_RANGE.as_str(), "bytes 400-499/1000")], 10),
            status: 400,
            code: "length_mismatch",
        },
        Row {
            name: "offset: X-File-Size disagrees with Content-Range",
            req: off(
                &[
                    (CONTENT_RANGE.as_str(), "bytes 400-409/1000"),
                    ("X-File-Size", "2000"),
                ],
                10,
            ),
            status: 400,
            code: "length_mismatch",
        },
        Row {
            name: "offset: X-File-Size changes",
            req: off(&[("X-Start-Byte", "400"), ("X-File-Size", "999")], 10),
            status: 409,
            code: "length_mismatch",
        },
        Row {
            name: "offset: declared size over the limit",
            req: Req::Raw(
                vec![
                    ("X-File-Id", "huge".into()),
                    ("X-Start-Byte", "0".into()),
                    ("X-File-Size", (1u64 << 40).to_string()),
                ],
                vec![0; 10],
            ),
            status: 413,
            code: "too_large",
        },
        Row {
            name: "offset: control characters in X-File-Id",
            req: Req::Raw(
                vec![("X-File-Id", "a\tb".into()), ("X-Start-Byte", "0".into())],
                vec![0; 10],
            ),
            status: 400,
            code: "invalid_file_id",
        },
        Row {
            name: "raw body without X-File-Id",
            req: Req::Raw(vec![("X-Start-Byte", "0".into())], vec![0; 10]),
            status: 400,
            code: "unknown_upload_form",
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_its_4xx_and_changes_nothing() {
    let f = Fixture::new().await;
    let before = f.snapshot().await;
    let table = rows(&f);
    assert!(
        table.len() >= 40,
        "the table covers every kind of bad input"
    );
    let mut failures = Vec::new();
    for row in table {
        let (status, body) = send(&f, row.req).await;
        let code = body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let msg = body
            .get("msg")
            .or_else(|| body.get("message"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if status != row.status || code != row.code || msg.is_empty() {
            failures.push(format!(
                "{}: got {status} {code:?} ({msg:?}), want {} {:?}",
                row.name, row.status, row.code
            ));
        }
        // The chunk dialect's envelope carries the status in `code`.
        if let Some(c) = body.get("code").and_then(Value::as_u64)
            && c != status as u64
        {
            failures.push(format!("{}: envelope code {c} != HTTP {status}", row.name));
        }
        let after = f.snapshot().await;
        if after != before {
            failures.push(format!(
                "{}: state changed\n before: {before:?}\n after:  {after:?}",
                row.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    f.srv.stop().await;
}
