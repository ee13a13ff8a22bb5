//! Tenants (SPEC §6): tenant B, with a static token or with a JWT, against tenant A's
//! uploads, finished and unfinished, in every dialect and verb and on every download path:
//! every answer is exactly what a missing upload gets, and A's uploads are unchanged after
//! all of it. Also: instant upload without leaks (a digest alone never yields a file),
//! signed links, per-tenant limits.

mod common;

use common::{Reply, TestServer, md5_hex, spark_chunks, test_bytes};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

const JWT_SECRET: &str = "a-jwt-secret-of-more-than-32-bytes-for-tests";
const OCTETS: &str = "application/offset+octet-stream";

/// A server with tokens `tok-a` (tenant alice), `tok-b` (tenant bob) and HS256 JWTs.
async fn server(adjust: impl FnOnce(&mut ferry_server::config::ServeArgs)) -> TestServer {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), "tok-a alice\ntok-b bob # the other tenant\n").unwrap();
    let path = tokens.into_temp_path().keep().unwrap();
    TestServer::start_with(|a| {
        a.auth_tokens_file = Some(path);
        a.auth_jwt_secret = Some(JWT_SECRET.to_owned());
        adjust(a);
    })
    .await
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// One request as `auth`: [`common::call`].
async fn req(
    srv: &TestServer,
    auth: Option<&str>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    common::call(srv, auth, method, url, headers, body).await
}

fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/')
        .map_or("/".to_owned(), |i| rest[i..].to_owned())
}

/// The path without its query (`/files/<id>`).
fn bare(url: &str) -> String {
    path_of(url).split('?').next().unwrap().to_owned()
}

/// A tus upload of `data` by `auth`, the first `sent` bytes sent; returns the `Location`.
async fn tus_upload(srv: &TestServer, auth: &str, data: &[u8], sent: usize) -> String {
    let len = data.len().to_string();
    let r = req(
        srv,
        Some(auth),
        Method::POST,
        "/files/",
        &[("tus-resumable", "1.0.0"), ("upload-length", &len)],
        vec![],
    )
    .await;
    assert_eq!(r.status, 201);
    let loc = r.header("location").unwrap().to_owned();
    let r = req(
        srv,
        Some(auth),
        Method::PATCH,
        &path_of(&loc),
        &[
            ("tus-resumable", "1.0.0"),
            ("upload-offset", "0"),
            ("content-type", OCTETS),
        ],
        data[..sent].to_vec(),
    )
    .await;
    assert_eq!(r.status, 204);
    loc
}

async fn tus_offset(srv: &TestServer, auth: &str, loc: &str) -> Option<u64> {
    let r = req(
        srv,
        Some(auth),
        Method::HEAD,
        &path_of(loc),
        &[("tus-resumable", "1.0.0")],
        vec![],
    )
    .await;
    (r.status == 200).then(|| r.header("upload-offset").unwrap().parse().unwrap())
}

async fn offset_post(
    srv: &TestServer,
    auth: &str,
    client_id: &str,
    start: usize,
    total: usize,
    bytes: &[u8],
) -> Reply {
    let (start, total) = (start.to_string(), total.to_string());
    req(
        srv,
        Some(auth),
        Method::POST,
        "/api/upload",
        &[
            ("x-file-id", client_id),
            ("x-start-byte", &start),
            ("x-file-size", &total),
            ("content-type", "application/octet-stream"),
        ],
        bytes.to_vec(),
    )
    .await
}

async fn offset_status(srv: &TestServer, auth: &str, client_id: &str) -> String {
    let r = req(
        srv,
        Some(auth),
        Method::GET,
        "/api/upload/status",
        &[("x-file-id", client_id)],
        vec![],
    )
    .await;
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

async fn handshake(srv: &TestServer, auth: &str, body: &Value) -> Value {
    let r = req(
        srv,
        Some(auth),
        Method::POST,
        "/api/upload/handshake",
        &[("content-type", "application/json")],
        serde_json::to_vec(body).unwrap(),
    )
    .await;
    let j = r.json();
    assert_eq!(r.status, 200, "{j}");
    j["data"].clone()
}

async fn chunk(srv: &TestServer, auth: &str, file_id: &str, chunk_id: &str, bytes: &[u8]) -> Reply {
    use reqwest::multipart::{Form, Part};
    let form = Form::new()
        .text("chunkId", chunk_id.to_owned())
        .text("fileId", file_id.to_owned())
        .part("file", Part::bytes(bytes.to_vec()).file_name("blob"));
    let resp = srv
        .client
        .post(srv.url("/api/upload"))
        .header("authorization", format!("Bearer {auth}"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    Reply {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.unwrap().to_vec(),
    }
}

/// Everything tenant A owns, and how to tell it is unchanged.
struct Alice {
    tus_done: String,
    tus_done_bytes: Vec<u8>,
    tus_open: String,
    tus_open_held: u64,
    offset_id: &'static str,
    offset_held: String,
    chunk_file_id: String,
    chunk_ids: Vec<(String, Vec<u8>)>,
    chunk_url: String,
    chunk_bytes: Vec<u8>,
}

async fn alice_uploads(srv: &TestServer) -> Alice {
    let done = test_bytes(3000, 1);
    let tus_done = tus_upload(srv, "tok-a", &done, done.len()).await;
    let open = test_bytes(4000, 2);
    let tus_open = tus_upload(srv, "tok-a", &open, 1500).await;

    let offset_id = "report.pdf-9000-1700000000";
    let obytes = test_bytes(9000, 3);
    let r = offset_post(srv, "tok-a", offset_id, 0, obytes.len(), &obytes[..4000]).await;
    assert_eq!(r.status, 200);

    let chunk_bytes = test_bytes(2500, 4);
    let (file_id, pieces) = spark_chunks(&chunk_bytes, 1000);
    let ids: Vec<&String> = pieces.iter().map(|(id, _)| id).collect();
    let hs = json!({"fileId": file_id, "ext": ".bin", "chunkIds": ids});
    handshake(srv, "tok-a", &hs).await;
    let mut url = String::new();
    for (id, bytes) in &pieces {
        let r = chunk(srv, "tok-a", &file_id, id, bytes).await;
        assert_eq!(r.status, 200);
        if let Some(u) = r.json()["data"].as_str() {
            url = u.to_owned();
        }
    }
    assert!(!url.is_empty(), "the chunk upload completed");
    Alice {
        tus_done,
        tus_done_bytes: done,
        tus_open,
        tus_open_held: 1500,
        offset_id,
        offset_held: "4000".to_owned(),
        chunk_file_id: file_id,
        chunk_ids: pieces,
        chunk_url: url,
        chunk_bytes,
    }
}

/// A's uploads, exactly as they were.
async fn assert_alice_unchanged(srv: &TestServer, a: &Alice) {
    assert_eq!(
        tus_offset(srv, "tok-a", &a.tus_open).await,
        Some(a.tus_open_held)
    );
    let r = req(
        srv,
        Some("tok-a"),
        Method::GET,
        &bare(&a.tus_done),
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, a.tus_done_bytes, "A's finished tus file");
    assert_eq!(
        offset_status(srv, "tok-a", a.offset_id).await,
        a.offset_held
    );
    let r = req(srv, None, Method::GET, &a.chunk_url, &[], vec![]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, a.chunk_bytes, "A's finished chunk-dialect file");
}

/// Tenant B (`auth`) against every one of A's uploads, in every dialect and verb.
async fn stranger_sees_nothing(srv: &TestServer, a: &Alice, b: &str) {
    let tus_h = [("tus-resumable", "1.0.0")];
    for loc in [&a.tus_done, &a.tus_open] {
        // The URL exactly as A got it (signed), and bare: for uploads, credentials decide.
        for path in [path_of(loc), bare(loc)] {
            let r = req(srv, Some(b), Method::HEAD, &path, &tus_h, vec![]).await;
            assert_eq!(r.status, 404, "tus HEAD {path}");
            assert!(r.header("upload-offset").is_none());
            let r = req(
                srv,
                Some(b),
                Method::PATCH,
                &path,
                &[
                    ("tus-resumable", "1.0.0"),
                    ("upload-offset", "1500"),
                    ("content-type", OCTETS),
                ],
                b"intruder".to_vec(),
            )
            .await;
            assert_eq!(r.status, 404, "tus PATCH {path}");
            let r = req(srv, Some(b), Method::DELETE, &path, &tus_h, vec![]).await;
            assert_eq!(r.status, 404, "tus DELETE {path}");
            // The same address in the IETF draft's dialect.
            let ietf = [("upload-draft-interop-version", "6")];
            let r = req(srv, Some(b), Method::HEAD, &path, &ietf, vec![]).await;
            assert_eq!(r.status, 404, "IETF HEAD {path}");
            let r = req(
                srv,
                Some(b),
                Method::PATCH,
                &path,
                &[
                    ("upload-draft-interop-version", "6"),
                    ("upload-offset", "1500"),
                    ("upload-complete", "?0"),
                    ("content-type", "application/partial-upload"),
                ],
                b"intruder".to_vec(),
            )
            .await;
            assert_eq!(r.status, 404, "IETF PATCH {path}");
            let r = req(srv, Some(b), Method::DELETE, &path, &ietf, vec![]).await;
            assert_eq!(r.status, 404, "IETF DELETE {path}");
        }
        // Download of the bare id with B's credentials: like a missing file.
        let r = req(srv, Some(b), Method::GET, &bare(loc), &[], vec![]).await;
        assert_eq!(
            r.status,
            404,
            "GET {} with another tenant's token",
            bare(loc)
        );
    }
    // tus concatenation of A's upload: as for a part that does not exist.
    let concat = format!("final;{}", bare(&a.tus_done));
    let r = req(
        srv,
        Some(b),
        Method::POST,
        "/files/",
        &[("tus-resumable", "1.0.0"), ("upload-concat", &concat)],
        vec![],
    )
    .await;
    let missing = req(
        srv,
        Some(b),
        Method::POST,
        "/files/",
        &[
            ("tus-resumable", "1.0.0"),
            (
                "upload-concat",
                "final;/files/0123456789abcdef0123456789abcdef",
            ),
        ],
        vec![],
    )
    .await;
    assert_eq!(r.status, missing.status, "concatenating A's upload");
    assert_eq!(r.json()["error"], missing.json()["error"]);

    // Byte-offset: A's X-File-Id is unknown to B; B's writes go to B's own upload.
    assert_eq!(offset_status(srv, b, a.offset_id).await, "0");
    let r = offset_post(srv, b, a.offset_id, 4000, 9000, b"intruder").await;
    assert_eq!(r.status, 409, "B appending at A's offset: {:?}", r.json());
    assert_eq!(r.json()["offset"], 0, "B holds nothing of this id");
    let r = req(
        srv,
        Some(b),
        Method::POST,
        "/api/upload",
        &[
            ("x-file-id", a.offset_id),
            ("content-range", "bytes 4000-4007/9000"),
            ("content-type", "application/octet-stream"),
        ],
        b"intruder".to_vec(),
    )
    .await;
    assert_eq!(
        r.status, 200,
        "a Content-Range write lands in B's own upload"
    );
    assert_eq!(r.json()["received"], 8);

    // Chunk dialect: A's file digest and correct chunk ids, without the bytes.
    let ids: Vec<&String> = a.chunk_ids.iter().map(|(id, _)| id).collect();
    let data = handshake(
        srv,
        b,
        &json!({"fileId": a.chunk_file_id, "ext": ".bin", "chunkIds": ids}),
    )
    .await;
    assert_eq!(data, json!(ids), "B must send every chunk");
    // Bytes that are not the chunk's: a mismatch, nothing held.
    let (id0, real0) = &a.chunk_ids[0];
    let r = chunk(srv, b, &a.chunk_file_id, id0, &vec![0u8; real0.len()]).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"], "chunk_digest_mismatch");
    // Fake chunk ids or none at all: still no URL. (A third tenant asks, so that the layout
    // these handshakes declare does not stay on B's upload of the file.)
    let mallory = jwt(json!({"sub": format!("mallory-{}", b.len())}));
    for hs in [
        json!({"fileId": a.chunk_file_id, "ext": ".bin", "chunkIds": ["0123456789abcdef0123456789abcdef0"]}),
        json!({"fileId": a.chunk_file_id, "ext": ".bin", "chunkIds": []}),
    ] {
        let data = handshake(srv, &mallory, &hs).await;
        assert!(
            data.as_str().is_none_or(|u| bare(u) != bare(&a.chunk_url)),
            "a handshake with only A's digest answered A's URL: {data}"
        );
    }
    // The content-derived address serves B nothing.
    let r = req(
        srv,
        Some(b),
        Method::GET,
        &format!("/upload/{}.bin", a.chunk_file_id),
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.status, 404, "content-derived path with B's token");
}

#[tokio::test]
async fn another_tenant_sees_exactly_what_a_missing_upload_shows_and_changes_nothing() {
    let srv = server(|_| {}).await;
    let a = alice_uploads(&srv).await;
    stranger_sees_nothing(&srv, &a, "tok-b").await;
    assert_alice_unchanged(&srv, &a).await;
    let bob_jwt = jwt(json!({"sub": "bob", "exp": now() + 600}));
    stranger_sees_nothing(&srv, &a, &bob_jwt).await;
    assert_alice_unchanged(&srv, &a).await;
    // A JWT whose sub is alice is alice: it sees her uploads (same tenant, other credential).
    let alice_jwt = jwt(json!({"sub": "alice", "exp": now() + 600}));
    assert_eq!(tus_offset(&srv, &alice_jwt, &a.tus_open).await, Some(1500));
    srv.stop().await;
}

#[tokio::test]
async fn without_credentials_uploads_and_content_paths_are_refused_but_issued_links_download() {
    let srv = server(|_| {}).await;
    let a = alice_uploads(&srv).await;
    for (method, path) in [
        (Method::HEAD, bare(&a.tus_open)),
        (Method::PATCH, bare(&a.tus_open)),
        (Method::DELETE, bare(&a.tus_open)),
        (Method::GET, bare(&a.tus_done)),
        (Method::GET, format!("/upload/{}.bin", a.chunk_file_id)),
        (Method::GET, "/api/upload/status".to_owned()),
        (Method::POST, "/api/upload/handshake".to_owned()),
    ] {
        let r = req(
            &srv,
            None,
            method.clone(),
            &path,
            &[("tus-resumable", "1.0.0")],
            vec![],
        )
        .await;
        assert_eq!(r.status, 401, "{method} {path} without credentials");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    // The links the server issued to A: anyone holding them downloads, B included.
    for (link, want) in [
        (&a.tus_done, &a.tus_done_bytes),
        (&a.chunk_url, &a.chunk_bytes),
    ] {
        assert!(
            link.contains("signature="),
            "issued URLs are signed: {link}"
        );
        for who in [None, Some("tok-b")] {
            let r = req(&srv, who, Method::GET, link, &[], vec![]).await;
            assert_eq!(r.status, 200, "{link} as {who:?}");
            assert_eq!(&r.body, want);
        }
    }
    // A's own instant upload answers a signed link at once.
    let ids: Vec<&String> = a.chunk_ids.iter().map(|(id, _)| id).collect();
    let data = handshake(
        &srv,
        "tok-a",
        &json!({"fileId": a.chunk_file_id, "ext": ".bin", "chunkIds": ids}),
    )
    .await;
    let url = data.as_str().expect("instant upload for the owner");
    let r = req(&srv, None, Method::GET, url, &[], vec![]).await;
    assert_eq!(r.body, a.chunk_bytes);
    // And the content-derived path with A's own token.
    let r = req(
        &srv,
        Some("tok-a"),
        Method::GET,
        &format!("/upload/{}.bin", a.chunk_file_id),
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, a.chunk_bytes);
    srv.stop().await;
}

/// Proof of possession: whoever has the bytes gets a working URL of their own; whoever has
/// only the digest and the chunk ids never does.
#[tokio::test]
async fn the_same_file_uploaded_by_another_tenant_is_theirs_only_after_sending_every_byte() {
    let srv = server(|_| {}).await;
    let a = alice_uploads(&srv).await;
    let ids: Vec<&String> = a.chunk_ids.iter().map(|(id, _)| id).collect();
    let hs = json!({"fileId": a.chunk_file_id, "ext": ".bin", "chunkIds": ids});
    assert_eq!(handshake(&srv, "tok-b", &hs).await, json!(ids));
    let mut url = None;
    for (i, (id, bytes)) in a.chunk_ids.iter().enumerate() {
        let r = chunk(&srv, "tok-b", &a.chunk_file_id, id, bytes).await;
        assert_eq!(r.status, 200);
        let data = r.json()["data"].clone();
        if i + 1 < a.chunk_ids.len() {
            assert!(data.is_array(), "no URL before the last byte: {data}");
        } else {
            url = data.as_str().map(str::to_owned);
        }
    }
    let url = url.expect("B's own URL after B sent the bytes");
    assert_ne!(bare(&url), bare(&a.chunk_url), "B's file is B's own upload");
    let r = req(&srv, None, Method::GET, &url, &[], vec![]).await;
    assert_eq!(r.body, a.chunk_bytes);
    assert_eq!(md5_hex(&r.body), a.chunk_file_id);
    srv.stop().await;
}

#[tokio::test]
async fn signed_links_valid_expired_tampered_and_for_another_path() {
    let srv = server(|_| {}).await;
    let data = test_bytes(1000, 9);
    let loc = tus_upload(&srv, "tok-a", &data, data.len()).await;
    let other = tus_upload(&srv, "tok-a", &test_bytes(10, 10), 10).await;
    let path = bare(&loc);

    let r = req(&srv, None, Method::GET, &loc, &[], vec![]).await;
    assert_eq!((r.status, r.body), (StatusCode::OK, data.clone()));

    let expired = srv.state.links.sign_until(&path, now() - 5);
    let r = req(&srv, None, Method::GET, &expired, &[], vec![]).await;
    assert_eq!(r.status, 404, "expired link");
    assert_eq!(r.json()["error"], "link_expired");

    let tampered = path_of(&loc).replace("signature=", "signature=00");
    let r = req(&srv, None, Method::GET, &tampered, &[], vec![]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "link_invalid");

    let later = path_of(&loc).replace("expires=", "expires=9");
    let r = req(&srv, None, Method::GET, &later, &[], vec![]).await;
    assert_eq!(r.status, 404, "a longer expiry with the old signature");

    let query = path_of(&loc).split_once('?').unwrap().1.to_owned();
    let moved = format!("{}?{query}", bare(&other));
    let r = req(&srv, None, Method::GET, &moved, &[], vec![]).await;
    assert_eq!(r.status, 404, "a link's signature on another file");
    assert_eq!(r.json()["error"], "link_invalid");

    // Ranges work through a link (downloads resume).
    let r = req(
        &srv,
        None,
        Method::GET,
        &loc,
        &[("range", "bytes=10-19")],
        vec![],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, data[10..20]);
    srv.stop().await;
}

#[tokio::test]
async fn per_tenant_limits_refuse_with_413_429_and_507_and_store_nothing() {
    let srv = server(|a| {
        a.max_incomplete_uploads = Some(2);
        a.max_stored_bytes = Some(10_000);
    })
    .await;
    let create = |auth: String, len: usize| {
        let srv = &srv;
        async move {
            req(
                srv,
                Some(&auth),
                Method::POST,
                "/files/",
                &[
                    ("tus-resumable", "1.0.0"),
                    ("upload-length", &len.to_string()),
                ],
                vec![],
            )
            .await
        }
    };
    assert_eq!(create("tok-a".into(), 100).await.status, 201);
    assert_eq!(create("tok-a".into(), 100).await.status, 201);
    let r = create("tok-a".into(), 100).await;
    assert_eq!(r.status, 429, "third unfinished upload");
    assert_eq!(r.json()["error"], "too_many_incomplete_uploads");
    assert!(r.header("retry-after").is_some());
    // Another tenant has its own count.
    assert_eq!(create("tok-b".into(), 100).await.status, 201);
    // Stored bytes: 9,900 more would pass 10,000 for bob (who holds 100 declared).
    let r = create("tok-b".into(), 9_901).await;
    assert_eq!(r.status, 507);
    assert_eq!(r.json()["error"], "storage_quota_exceeded");
    assert_eq!(create("tok-b".into(), 9_900).await.status, 201);
    // A JWT may lower a limit for its bearer, never raise it.
    let small = jwt(json!({"sub": "carol", "max_upload_size": 50, "max_stored_bytes": 99_999_999}));
    let r = create(small.clone(), 51).await;
    assert_eq!(r.status, 413);
    assert_eq!(create(small.clone(), 50).await.status, 201);
    let r = create(small, 10_001).await;
    assert_eq!(r.status, 413, "still under the server's own limits");
    // A chunk-dialect handshake counts too.
    let r = req(
        &srv,
        Some("tok-a"),
        Method::POST,
        "/api/upload/handshake",
        &[("content-type", "application/json")],
        serde_json::to_vec(&json!({"fileId": "0".repeat(32), "ext": "", "chunkIds": ["0123456789abcdef0123456789abcdef0"], "size": 10})).unwrap(),
    )
    .await;
    assert_eq!(r.status, 429, "{:?}", r.json());
    assert_eq!(r.json()["code"], 429, "the chunk dialect's envelope");
    srv.stop().await;
}

#[tokio::test]
async fn bad_credentials_are_refused_with_a_code_and_never_echoed() {
    let srv = server(|_| {}).await;
    let expired = jwt(json!({"sub": "bob", "exp": now() - 120}));
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "alice"}),
        &jsonwebtoken::EncodingKey::from_secret(b"not the server's secret at all, no"),
    )
    .unwrap();
    for (token, code) in [
        ("tok-c", "invalid_token"),
        (expired.as_str(), "token_expired"),
        (forged.as_str(), "invalid_token"),
    ] {
        let r = req(
            &srv,
            Some(token),
            Method::POST,
            "/files/",
            &[("tus-resumable", "1.0.0"), ("upload-length", "1")],
            vec![],
        )
        .await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["error"], code);
        assert!(!String::from_utf8_lossy(&r.body).contains(token));
    }
    // The scheme is case-insensitive.
    let r = srv
        .client
        .post(srv.url("/files/"))
        .header("authorization", "bearer tok-a")
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    srv.stop().await;
}

/// Routes that need no identity answer whatever the Authorization header says: a signed link
/// beside a stale token still downloads, `/healthz` answers, and `/metrics` takes its own
/// token on a server with upload tokens (and refuses everyone without one).
#[tokio::test]
async fn a_bad_token_voids_nothing_that_needs_no_identity_and_metrics_need_their_own() {
    let srv = server(|_| {}).await;
    let data = test_bytes(300, 31);
    let link = tus_upload(&srv, "tok-a", &data, data.len()).await;
    let stale = jwt(json!({"sub": "alice", "exp": now() - 600}));
    let r = req(&srv, Some(&stale), Method::GET, &link, &[], vec![]).await;
    assert_eq!((r.status, r.body), (StatusCode::OK, data));
    let r = req(
        &srv,
        Some("tok-nobody"),
        Method::GET,
        "/healthz",
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.status, 200);
    // Uploads still refuse it, with the reason.
    let r = req(
        &srv,
        Some(&stale),
        Method::HEAD,
        &bare(&link),
        &[("tus-resumable", "1.0.0")],
        vec![],
    )
    .await;
    assert_eq!(r.status, 401);
    // No metrics token on an authenticating server: nobody reads /metrics there.
    for who in [None, Some("tok-a")] {
        let r = req(&srv, who, Method::GET, "/metrics", &[], vec![]).await;
        assert_eq!(r.status, 401, "/metrics as {who:?}");
    }
    srv.stop().await;

    let srv = server(|a| a.metrics_token = Some("metrics-secret".into())).await;
    let r = req(
        &srv,
        Some("metrics-secret"),
        Method::GET,
        "/metrics",
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.status, 200, "the metrics token beside upload tokens");
    assert!(String::from_utf8_lossy(&r.body).contains("ferry_bytes_received_total"));
    let r = req(&srv, Some("tok-a"), Method::GET, "/metrics", &[], vec![]).await;
    assert_eq!(r.status, 401, "an upload token is not the metrics token");
    srv.stop().await;
}
