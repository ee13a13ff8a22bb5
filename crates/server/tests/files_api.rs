//! The files API (docs/PROTOCOL.md "Files API", SPEC §9): `GET /api/files` lists the caller's
//! uploads of every dialect, newest first, page by page, unfinished ones with what they hold;
//! `DELETE /api/files/<id>` removes one of any dialect. Another tenant sees nothing and
//! deletes nothing; bad `limit` and `cursor` are 400 with their codes.

mod common;

use common::{TestServer, call, md5_hex, test_bytes};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const OCTETS: &str = "application/offset+octet-stream";

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Creates a tus upload named `name` of `len` bytes (`None`: deferred length); returns its
/// `/files/<id>` path.
async fn tus_create(
    srv: &TestServer,
    auth: Option<&str>,
    name: &str,
    len: Option<usize>,
) -> String {
    let meta = format!("filename {}", b64(name));
    let len_s = len.map(|l| l.to_string());
    let mut headers = vec![
        ("tus-resumable", "1.0.0"),
        ("upload-metadata", meta.as_str()),
    ];
    match &len_s {
        Some(l) => headers.push(("upload-length", l)),
        None => headers.push(("upload-defer-length", "1")),
    }
    let r = call(srv, auth, Method::POST, "/files/", &headers, vec![]).await;
    assert_eq!(r.status, 201, "tus creation of {name}: {:?}", r.json());
    let loc = r.header("location").unwrap();
    let path = loc
        .split_once("://")
        .map_or(loc, |(_, rest)| &rest[rest.find('/').unwrap()..]);
    path.split('?').next().unwrap().to_owned()
}

async fn tus_patch(srv: &TestServer, auth: Option<&str>, path: &str, offset: usize, bytes: &[u8]) {
    let off = offset.to_string();
    let r = call(
        srv,
        auth,
        Method::PATCH,
        path,
        &[
            ("tus-resumable", "1.0.0"),
            ("upload-offset", &off),
            ("content-type", OCTETS),
        ],
        bytes.to_vec(),
    )
    .await;
    assert_eq!(r.status, 204, "PATCH {path}: {:?}", r.json());
}

async fn tus_head(srv: &TestServer, auth: Option<&str>, path: &str) -> u16 {
    call(
        srv,
        auth,
        Method::HEAD,
        path,
        &[("tus-resumable", "1.0.0")],
        vec![],
    )
    .await
    .status
    .as_u16()
}

fn id_of(path: &str) -> String {
    path.rsplit('/').next().unwrap().to_owned()
}

/// A byte-offset write (`X-File-Id` = `name`): `data` at `first` of a `total`-byte file,
/// with `Content-Range`.
async fn offset_range(
    srv: &TestServer,
    name: &str,
    data: &[u8],
    first: usize,
    total: usize,
) -> Value {
    let range = format!("bytes {first}-{}/{total}", first + data.len() - 1);
    let r = call(
        srv,
        None,
        Method::POST,
        "/api/upload",
        &[
            ("x-file-id", name),
            ("x-file-name", name),
            ("content-range", &range),
            ("content-type", "application/octet-stream"),
        ],
        data.to_vec(),
    )
    .await;
    assert!(
        r.status.as_u16() < 300,
        "offset write of {name}: {} {:?}",
        r.status,
        r.json()
    );
    r.json()
}

/// A whole byte-offset upload in one request.
async fn offset_whole(srv: &TestServer, name: &str, data: &[u8]) -> Value {
    let size = data.len().to_string();
    let r = call(
        srv,
        None,
        Method::POST,
        "/api/upload",
        &[
            ("x-file-id", name),
            ("x-file-name", name),
            ("x-start-byte", "0"),
            ("x-file-size", &size),
            ("content-type", "application/octet-stream"),
        ],
        data.to_vec(),
    )
    .await;
    assert!(
        r.status.as_u16() < 300,
        "offset upload of {name}: {} {:?}",
        r.status,
        r.json()
    );
    r.json()
}

/// A whole chunk-handshake upload: handshake, then every chunk.
async fn chunk_whole(srv: &TestServer, name: &str, data: &[u8], chunk: usize) {
    let pieces: Vec<(String, Vec<u8>)> = data
        .chunks(chunk)
        .enumerate()
        .map(|(i, c)| (format!("{}{i}", md5_hex(c)), c.to_vec()))
        .collect();
    let file_id = md5_hex(data);
    let ids: Vec<&str> = pieces.iter().map(|(id, _)| id.as_str()).collect();
    let (status, body) = srv
        .handshake(&json!({"fileId": file_id, "ext": ".bin", "chunkIds": ids, "fileName": name}))
        .await;
    assert_eq!(status, 200, "handshake of {name}: {body}");
    let mut last = Value::Null;
    for (id, bytes) in pieces {
        let (status, body) = srv.send_chunk(&file_id, &id, bytes, false).await;
        assert_eq!(status, 200, "chunk of {name}: {body}");
        last = body;
    }
    assert!(last["data"].is_string(), "{name} did not complete: {last}");
}

/// Chunk `n` (1-based) of a simple-uploader file of `total` bytes cut at `chunk`, sent alone.
async fn resumable_chunk(srv: &TestServer, name: &str, data: &[u8], chunk: usize, n: usize) {
    let chunks = (data.len() / chunk).max(1);
    let start = (n - 1) * chunk;
    let end = if n == chunks { data.len() } else { n * chunk };
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in [
        ("chunkNumber", n.to_string()),
        ("chunkSize", chunk.to_string()),
        ("currentChunkSize", (end - start).to_string()),
        ("totalSize", data.len().to_string()),
        ("identifier", format!("{}-{name}", data.len())),
        ("filename", name.to_owned()),
        ("totalChunks", chunks.to_string()),
    ] {
        form = form.text(k, v);
    }
    form = form.part(
        "file",
        reqwest::multipart::Part::bytes(data[start..end].to_vec())
            .file_name("blob")
            .mime_str("application/octet-stream")
            .unwrap(),
    );
    let r = srv
        .client
        .post(srv.url("/api/resumable"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "resumable chunk of {name}");
}

/// One page: (files, next).
async fn page(srv: &TestServer, auth: Option<&str>, query: &str) -> (Vec<Value>, Option<String>) {
    let r = call(
        srv,
        auth,
        Method::GET,
        &format!("/api/files{query}"),
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.status, 200, "GET /api/files{query}: {:?}", r.json());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    let files = v["files"].as_array().expect("files is an array").clone();
    let next = match &v["next"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => panic!("next is neither a string nor null: {other}"),
    };
    (files, next)
}

/// Every page at `limit`, following `next`; panics on an id seen twice.
async fn walk(srv: &TestServer, auth: Option<&str>, limit: usize) -> (Vec<Value>, usize) {
    let mut all = Vec::new();
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &cursor {
            Some(c) => format!("?limit={limit}&cursor={c}"),
            None => format!("?limit={limit}"),
        };
        let (files, next) = page(srv, auth, &q).await;
        pages += 1;
        assert!(
            files.len() <= limit,
            "a page of {} at limit {limit}",
            files.len()
        );
        for f in &files {
            let id = f["id"].as_str().unwrap().to_owned();
            assert!(seen.insert(id.clone()), "{id} listed twice (page {pages})");
        }
        all.extend(files);
        match next {
            Some(c) => cursor = Some(c),
            None => return (all, pages),
        }
        assert!(pages < 100, "the listing never ends");
    }
}

/// Milliseconds since the epoch of an RFC 3339 UTC time as the API writes it
/// (`2025-01-31T09:05:03.042Z`); panics on anything else.
fn parse_created(s: &str) -> i64 {
    let b = s.as_bytes();
    assert!(
        b.len() == 24
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'.'
            && b[23] == b'Z',
        "createdAt {s:?} is not RFC 3339 UTC with milliseconds"
    );
    let n = |r: std::ops::Range<usize>| -> i64 { s[r].parse().unwrap() };
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    assert!((1..=12).contains(&m) && (1..=31).contains(&d), "{s}");
    // Days from the civil date (the inverse of what the server computes).
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    ((days * 24 + n(11..13)) * 60 + n(14..16)) * 60_000 + n(17..19) * 1000 + n(20..23)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What one upload of the listing test must show.
struct Want {
    size: Option<u64>,
    offset: u64,
    complete: bool,
    bytes: Vec<u8>,
}

#[tokio::test]
async fn uploads_of_every_dialect_are_listed_newest_first_page_by_page() {
    let srv = TestServer::start().await;
    let t0 = now_ms();
    let mut order: Vec<&str> = Vec::new();
    let mut want: BTreeMap<&str, Want> = BTreeMap::new();
    // Distinct creation times, so "newest first" is the reverse of the order below.
    let tick = || tokio::time::sleep(Duration::from_millis(5));

    let data = test_bytes(3000, 1);
    let p = tus_create(&srv, None, "tus-done.bin", Some(data.len())).await;
    tus_patch(&srv, None, &p, 0, &data).await;
    order.push("tus-done.bin");
    want.insert(
        "tus-done.bin",
        Want {
            size: Some(3000),
            offset: 3000,
            complete: true,
            bytes: data,
        },
    );
    tick().await;

    let data = test_bytes(4000, 2);
    let p = tus_create(&srv, None, "tus-half.bin", Some(data.len())).await;
    tus_patch(&srv, None, &p, 0, &data[..1500]).await;
    order.push("tus-half.bin");
    want.insert(
        "tus-half.bin",
        Want {
            size: Some(4000),
            offset: 1500,
            complete: false,
            bytes: vec![],
        },
    );
    tick().await;

    let data = test_bytes(1500, 3);
    chunk_whole(&srv, "chunk-done.bin", &data, 1000).await;
    order.push("chunk-done.bin");
    want.insert(
        "chunk-done.bin",
        Want {
            size: Some(1500),
            offset: 1500,
            complete: true,
            bytes: data,
        },
    );
    tick().await;

    // Out of order: bytes 1000..2000 of 3000 held, none of the prefix. `offset` counts every
    // held byte.
    let data = test_bytes(1000, 4);
    offset_range(&srv, "offset-gap.bin", &data, 1000, 3000).await;
    order.push("offset-gap.bin");
    want.insert(
        "offset-gap.bin",
        Want {
            size: Some(3000),
            offset: 1000,
            complete: false,
            bytes: vec![],
        },
    );
    tick().await;

    let data = test_bytes(700, 5);
    let p = tus_create(&srv, None, "deferred.bin", None).await;
    tus_patch(&srv, None, &p, 0, &data).await;
    order.push("deferred.bin");
    want.insert(
        "deferred.bin",
        Want {
            size: None,
            offset: 700,
            complete: false,
            bytes: vec![],
        },
    );
    tick().await;

    // simple-uploader: the last of two chunks (1000..2500) only.
    let data = test_bytes(2500, 6);
    resumable_chunk(&srv, "resumable-gap.bin", &data, 1000, 2).await;
    order.push("resumable-gap.bin");
    want.insert(
        "resumable-gap.bin",
        Want {
            size: Some(2500),
            offset: 1500,
            complete: false,
            bytes: vec![],
        },
    );
    tick().await;

    let data = test_bytes(1200, 7);
    offset_whole(&srv, "offset-done.bin", &data).await;
    order.push("offset-done.bin");
    want.insert(
        "offset-done.bin",
        Want {
            size: Some(1200),
            offset: 1200,
            complete: true,
            bytes: data,
        },
    );
    let t1 = now_ms();

    let newest_first: Vec<&str> = order.iter().rev().copied().collect();
    let n = order.len();

    // Pages of 2: every upload once, newest first, in ⌈n/2⌉ pages.
    let (all, pages) = walk(&srv, None, 2).await;
    let names: Vec<&str> = all.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, newest_first, "not every upload, newest first");
    assert_eq!(pages, n.div_ceil(2));

    // Every field of every upload.
    let mut last_created = i64::MAX;
    for f in &all {
        let name = f["name"].as_str().unwrap();
        let w = &want[name];
        let keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        for k in ["id", "name", "size", "offset", "state", "createdAt", "url"] {
            assert!(keys.contains(&k), "{name}: no {k} in {f}");
        }
        assert_eq!(f["id"].as_str().unwrap().len(), 32, "{f}");
        assert_eq!(f["size"].as_u64(), w.size, "{name}: size in {f}");
        assert_eq!(f["size"].is_null(), w.size.is_none(), "{name}: size in {f}");
        assert_eq!(
            f["offset"].as_u64(),
            Some(w.offset),
            "{name}: offset in {f}"
        );
        let state = if w.complete { "complete" } else { "incomplete" };
        assert_eq!(f["state"], state, "{name}: {f}");
        let created = parse_created(f["createdAt"].as_str().unwrap());
        assert!(
            (t0 - 1000..=t1 + 1000).contains(&created),
            "{name}: createdAt {} is not when the test created it",
            f["createdAt"]
        );
        assert!(created <= last_created, "createdAt not newest first: {f}");
        last_created = created;
        if w.complete {
            let url = f["url"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no url in {f}"));
            assert!(
                url.contains(&format!("/files/{}", f["id"].as_str().unwrap())),
                "{url}"
            );
            let (status, got) = srv.get_bytes(url).await;
            assert_eq!(status, 200, "GET {url}");
            assert!(
                got == w.bytes,
                "{name}: the url does not download the uploaded bytes"
            );
        } else {
            assert!(
                f["url"].is_null(),
                "{name}: an unfinished upload has a url: {f}"
            );
        }
    }

    // `next` is null exactly on the last page: a page of all n has none, a page of n-1 has one.
    let (files, next) = page(&srv, None, &format!("?limit={n}")).await;
    assert_eq!((files.len(), next), (n, None));
    let (files, next) = page(&srv, None, &format!("?limit={}", n - 1)).await;
    assert_eq!(files.len(), n - 1);
    let next = next.expect("a page short of the end has a next");
    let (files, last) = page(&srv, None, &format!("?limit={n}&cursor={next}")).await;
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["name"], newest_first[n - 1]);
    assert_eq!(last, None);
    // Without a limit: the default (50) holds all of them.
    let (files, next) = page(&srv, None, "").await;
    assert_eq!((files.len(), next), (n, None));

    // An upload created in the middle of a walk comes before the cursor: the rest of the walk
    // neither repeats nor skips.
    let (first, next) = page(&srv, None, "?limit=3").await;
    let data = test_bytes(10, 8);
    let p = tus_create(&srv, None, "meanwhile.bin", Some(10)).await;
    tus_patch(&srv, None, &p, 0, &data).await;
    let mut rest = Vec::new();
    let mut cursor = next;
    while let Some(c) = cursor {
        let (files, next) = page(&srv, None, &format!("?limit=3&cursor={c}")).await;
        rest.extend(files);
        cursor = next;
    }
    let walked: Vec<&str> = first
        .iter()
        .chain(&rest)
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(walked, newest_first, "a walk disturbed by a new upload");
    let (files, _) = page(&srv, None, "?limit=1").await;
    assert_eq!(
        files[0]["name"], "meanwhile.bin",
        "the newest upload is not first"
    );

    assert!(
        srv.metric("ferry_http_request_duration_seconds_count{route=\"files\"}")
            .await
            >= 10.0,
        "listings are not counted under route=\"files\""
    );
    srv.stop().await;
}

#[tokio::test]
async fn delete_removes_an_upload_of_any_dialect_finished_or_not() {
    let srv = TestServer::start().await;
    // Unfinished tus.
    let data = test_bytes(4000, 11);
    let tus = tus_create(&srv, None, "tus.bin", Some(data.len())).await;
    tus_patch(&srv, None, &tus, 0, &data[..1000]).await;
    // Finished chunk handshake.
    let chunk_data = test_bytes(2500, 12);
    chunk_whole(&srv, "chunk.bin", &chunk_data, 1000).await;
    // Finished byte-offset, and one that stays.
    let off = offset_whole(&srv, "offset.bin", &test_bytes(100, 13)).await;
    let keep_data = test_bytes(300, 14);
    let keep = tus_create(&srv, None, "keep.bin", Some(keep_data.len())).await;
    tus_patch(&srv, None, &keep, 0, &keep_data).await;

    let (files, _) = page(&srv, None, "").await;
    let id = |name: &str| {
        files
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed"))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (tus_id, chunk_id, off_id, keep_id) = (
        id("tus.bin"),
        id("chunk.bin"),
        id("offset.bin"),
        id("keep.bin"),
    );
    assert_eq!(tus_id, id_of(&tus));
    let chunk_url = format!("/upload/{}.bin", md5_hex(&chunk_data));
    assert_eq!(srv.get_bytes(&srv.url(&chunk_url)).await.0, 200);
    assert_eq!(srv.get_bytes(off["url"].as_str().unwrap()).await.0, 200);

    for id in [&tus_id, &chunk_id, &off_id] {
        let r = call(
            &srv,
            None,
            Method::DELETE,
            &format!("/api/files/{id}"),
            &[],
            vec![],
        )
        .await;
        assert_eq!(r.status, 204, "DELETE {id}: {:?}", r.json());
        assert!(r.body.is_empty());
    }
    // Gone from every address.
    assert_eq!(
        tus_head(&srv, None, &tus).await,
        404,
        "tus HEAD after DELETE"
    );
    assert_eq!(srv.get_bytes(&srv.url(&chunk_url)).await.0, 404);
    assert_eq!(
        srv.get_bytes(&srv.url(&format!("/files/{chunk_id}")))
            .await
            .0,
        404
    );
    assert_eq!(srv.get_bytes(off["url"].as_str().unwrap()).await.0, 404);
    assert_eq!(
        srv.offset_status("offset.bin").await,
        0,
        "the byte-offset key still holds bytes"
    );
    let (files, next) = page(&srv, None, "").await;
    let names: Vec<&str> = files.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!((names, next), (vec!["keep.bin"], None));
    // The survivor is whole.
    assert_eq!(
        srv.get_bytes(&srv.url(&format!("/files/{keep_id}"))).await,
        (200, keep_data)
    );

    // Again, unknown, or not an id: 404 not_found with the JSON error body.
    let unknown = "0123456789abcdef0123456789abcdef";
    for id in [tus_id.as_str(), unknown, "not-an-id", "..%2F..%2Fetc"] {
        let r = call(
            &srv,
            None,
            Method::DELETE,
            &format!("/api/files/{id}"),
            &[],
            vec![],
        )
        .await;
        assert_eq!(r.status, 404, "DELETE {id}");
        assert_eq!(
            r.json()["error"],
            "not_found",
            "DELETE {id}: {:?}",
            r.json()
        );
        assert!(r.json()["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    srv.stop().await;
}

#[tokio::test]
async fn each_tenant_lists_and_deletes_only_its_own() {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), "tok-a alice\ntok-b bob\n").unwrap();
    let path = tokens.into_temp_path().keep().unwrap();
    let srv = TestServer::start_with(|a| a.auth_tokens_file = Some(path)).await;
    let a = Some("tok-a");
    let b = Some("tok-b");

    let done = test_bytes(2000, 21);
    let done_path = tus_create(&srv, a, "alice-done.bin", Some(done.len())).await;
    tus_patch(&srv, a, &done_path, 0, &done).await;
    let open_path = tus_create(&srv, a, "alice-open.bin", Some(5000)).await;
    tus_patch(&srv, a, &open_path, 0, &test_bytes(1200, 22)).await;
    let bob_path = tus_create(&srv, b, "bob.bin", Some(10)).await;

    // Alice sees hers, with a signed link that downloads without credentials.
    let (files, next) = page(&srv, a, "?limit=10").await;
    assert_eq!(next, None);
    let names: Vec<&str> = files.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["alice-open.bin", "alice-done.bin"]);
    let url = files[1]["url"].as_str().unwrap();
    assert!(url.contains("signature="), "not a signed link: {url}");
    assert_eq!(srv.get_bytes(url).await, (200, done.clone()));
    assert_eq!(files[0]["offset"], 1200);

    // Bob sees only his; Alice's ids are not his to delete, exactly like unknown ones.
    let (files, _) = page(&srv, b, "").await;
    let names: Vec<&str> = files.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["bob.bin"]);
    for p in [&done_path, &open_path] {
        let r = call(
            &srv,
            b,
            Method::DELETE,
            &format!("/api/files/{}", id_of(p)),
            &[],
            vec![],
        )
        .await;
        assert_eq!(r.status, 404);
        assert_eq!(r.json()["error"], "not_found");
    }
    // A cursor made from Alice's page lists nothing of hers for Bob.
    let (_, cursor) = page(&srv, a, "?limit=1").await;
    let (files, next) = page(&srv, b, &format!("?cursor={}", cursor.unwrap())).await;
    assert!(files.iter().all(|f| f["name"] == "bob.bin"), "{files:?}");
    assert_eq!(next, None);

    // Alice's uploads survived Bob's attempts.
    assert_eq!(tus_head(&srv, a, &open_path).await, 200);
    assert_eq!(srv.get_bytes(url).await, (200, done));
    assert_eq!(page(&srv, a, "").await.0.len(), 2);

    // Without credentials, or with a wrong token: 401 on both routes, nothing removed.
    for auth in [None, Some("tok-nobody")] {
        let r = call(&srv, auth, Method::GET, "/api/files", &[], vec![]).await;
        assert_eq!(r.status, 401);
        assert!(r.header("www-authenticate").is_some());
        let r = call(
            &srv,
            auth,
            Method::DELETE,
            &format!("/api/files/{}", id_of(&bob_path)),
            &[],
            vec![],
        )
        .await;
        assert_eq!(r.status, 401);
    }
    // Bob deletes his own.
    let r = call(
        &srv,
        b,
        Method::DELETE,
        &format!("/api/files/{}", id_of(&bob_path)),
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(tus_head(&srv, b, &bob_path).await, 404);
    assert!(page(&srv, b, "").await.0.is_empty());
    assert_eq!(page(&srv, a, "").await.0.len(), 2);
    srv.stop().await;
}

#[tokio::test]
async fn a_bad_limit_or_cursor_is_400_with_its_code() {
    let srv = TestServer::start().await;
    let p = tus_create(&srv, None, "one.bin", Some(5)).await;
    tus_patch(&srv, None, &p, 0, b"hello").await;
    use base64::Engine as _;
    let b64url = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let not_ours = b64url("12345.not-an-upload-id");
    let no_dot = b64url("1234567890123");
    for (query, code) in [
        ("?limit=0", "invalid_limit"),
        ("?limit=1001", "invalid_limit"),
        ("?limit=-3", "invalid_limit"),
        ("?limit=abc", "invalid_limit"),
        ("?limit=", "invalid_limit"),
        ("?limit=99999999999999999999999", "invalid_limit"),
        ("?limit=2&limit=3", "invalid_limit"),
        ("?cursor=%%%", "invalid_cursor"),
        ("?cursor=not*base64", "invalid_cursor"),
        (&format!("?cursor={not_ours}"), "invalid_cursor"),
        (&format!("?cursor={no_dot}"), "invalid_cursor"),
    ] {
        let r = call(
            &srv,
            None,
            Method::GET,
            &format!("/api/files{query}"),
            &[],
            vec![],
        )
        .await;
        assert_eq!(r.status, 400, "GET /api/files{query}");
        let v = r.json();
        assert_eq!(v["error"], code, "GET /api/files{query}: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| m.len() > 10),
            "GET /api/files{query}: no sentence in {v}"
        );
    }
    // The bounds themselves are fine, and an empty cursor is the first page.
    assert_eq!(page(&srv, None, "?limit=1").await.0.len(), 1);
    assert_eq!(page(&srv, None, "?limit=1000&cursor=").await.0.len(), 1);
    srv.stop().await;
}

#[tokio::test]
async fn another_origin_lists_and_deletes_only_with_authentication() {
    // Without authentication: a page elsewhere is refused (403, nothing removed); the
    // server's own origin and requests without Origin are served.
    let srv = TestServer::start().await;
    let p = tus_create(&srv, None, "x.bin", Some(3)).await;
    let delete_path = format!("/api/files/{}", id_of(&p));
    let foreign = "https://app.example";
    for (method, path) in [
        (Method::GET, "/api/files"),
        (Method::DELETE, delete_path.as_str()),
    ] {
        let r = call(
            &srv,
            None,
            method.clone(),
            path,
            &[("origin", foreign)],
            vec![],
        )
        .await;
        assert_eq!(r.status, 403, "{method} {path} from {foreign}");
        assert_eq!(
            r.json()["error"],
            "cross_origin_forbidden",
            "{method} {path}"
        );
        assert_eq!(r.header("access-control-allow-origin"), Some(foreign));
    }
    let own = srv.url("");
    let own = own.trim_end_matches('/');
    let r = call(
        &srv,
        None,
        Method::GET,
        "/api/files",
        &[("origin", own)],
        vec![],
    )
    .await;
    assert_eq!(r.status, 200, "from its own origin {own}");
    assert_eq!(
        r.json()["files"].as_array().map(Vec::len),
        Some(1),
        "the refused DELETE removed nothing"
    );
    srv.stop().await;

    // With authentication the token decides: a page on another origin may list and
    // delete (preflight included).
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tokens.path(), "tok-a alice\n").unwrap();
    let path = tokens.into_temp_path().keep().unwrap();
    let srv = TestServer::start_with(|a| a.auth_tokens_file = Some(path)).await;
    let a = Some("tok-a");
    let p = tus_create(&srv, a, "x.bin", Some(3)).await;
    let origin = "https://app.example";
    let r = call(
        &srv,
        None,
        Method::OPTIONS,
        &format!("/api/files/{}", id_of(&p)),
        &[
            ("origin", origin),
            ("access-control-request-method", "DELETE"),
            ("access-control-request-headers", "authorization"),
        ],
        vec![],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    assert!(
        r.header("access-control-allow-methods")
            .unwrap()
            .contains("DELETE")
    );
    assert!(
        r.header("access-control-allow-headers")
            .unwrap()
            .to_ascii_lowercase()
            .contains("authorization")
    );
    let r = call(
        &srv,
        a,
        Method::GET,
        "/api/files",
        &[("origin", origin)],
        vec![],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    let r = call(
        &srv,
        a,
        Method::DELETE,
        &format!("/api/files/{}", id_of(&p)),
        &[("origin", origin)],
        vec![],
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    srv.stop().await;
}
