//! Property-based fuzzing of the real router, in-process (`tower::ServiceExt::oneshot`, no
//! socket): for every route and method the dialects use, arbitrary values in every header
//! the fronts read, arbitrary handshake JSON and bytes, arbitrary multipart bodies. The
//! property is the one SPEC §6 promises for bad input: never a panic (a dropped connection
//! for a client), never a 5xx, and a body that streams to its end.
//!
//! Each test builds one server state with a few uploads in known states (a chunk-handshake
//! file half sent, finished files, tus and IETF uploads receiving, a deferred length, a
//! partial, a byte-offset upload) and then sends ~256 generated requests to it, so cases
//! also meet the state earlier cases left. Header values are always valid `HeaderValue`s:
//! visible ASCII, spaces and tabs, and opaque bytes 0x80–0xFF. Now and then a body ends
//! with an error part-way, as when a client drops the connection.
//!
//! A failure prints the minimal request (method, path, headers as byte strings, body) and
//! the status or the panic message. `PROPTEST_CASES=N` runs longer hunts;
//! `FERRY_FUZZ_STATS=1` prints the answers by method and status after each property, and
//! `FERRY_FUZZ_TRACE=1` every request and answer.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use bytes::Bytes;
use ferry_core::hash::{HashAlg, digest};
use ferry_core::http_range::parse_content_range;
use ferry_core::tus::Checksum;
use ferry_server::config::ServeArgs;
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::strategy::{BoxedStrategy, Strategy};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::fmt;
use std::time::Duration;
use tower::ServiceExt;

/// Generated requests per property.
const CASES: u32 = 256;
/// A request that has not been answered (body included) by then counts as a hang.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

const UNBUILDABLE: &str = "request not buildable";
const OCTETS: &str = "application/offset+octet-stream";
const PARTIAL_UPLOAD: &str = "application/partial-upload";

// ---------------------------------------------------------------------------------------
// Requests and the harness that answers them
// ---------------------------------------------------------------------------------------

/// One generated request. `path` may contain `@fresh-<kind>`, replaced at run time by the
/// id of an upload created just for this case (see [`Harness::fresh`]).
#[derive(Clone)]
struct Req {
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    /// Send `Content-Length` (true, as hyper would for a sized body) or not (chunked).
    content_length: bool,
    /// End the body with an error after this many bytes: the client went away mid-way.
    cut: Option<usize>,
}

impl fmt::Debug for Req {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} {}", self.method, self.path)?;
        for (k, v) in &self.headers {
            writeln!(f, "  {k}: {:?}", Bytes::copy_from_slice(v))?;
        }
        if self.content_length {
            writeln!(f, "  content-length: {}", self.body.len())?;
        }
        write!(f, "  body: {:?}", Bytes::copy_from_slice(&self.body))?;
        match self.cut {
            Some(n) => write!(f, "\n  (the connection drops after {n} bytes of it)"),
            None => Ok(()),
        }
    }
}

impl Req {
    fn new(method: &str, path: impl Into<String>) -> Req {
        Req {
            method: method.to_owned(),
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
            content_length: true,
            cut: None,
        }
    }

    fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Req {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Req {
        self.body = body.into();
        self
    }
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the setup created, for generators and checks to refer to.
#[derive(Clone, Debug, Default)]
struct Fixtures {
    /// Chunk handshake, MD5 ids, some chunks still missing: (fileId, chunk ids, chunks).
    md5_file: (String, Vec<String>, Vec<Vec<u8>>),
    /// Chunk handshake, SHA-256 ids, nothing sent yet.
    sha_file: (String, Vec<String>, Vec<Vec<u8>>),
    /// A finished chunk-handshake file served at `/upload/<fileId>.txt`.
    done_file_id: String,
    done_data: Vec<u8>,
    /// A finished tus upload with a name and a type, and its validators.
    tus_done: String,
    tus_done_data: Vec<u8>,
    etag: String,
    last_modified: String,
    /// A finished empty upload.
    empty: String,
    /// Receiving tus uploads: 10 of 100 bytes held; deferred length; a partial.
    tus_receiving: String,
    tus_deferred: String,
    tus_partial: Option<String>,
    /// An IETF upload holding 10 bytes, length unknown.
    ietf_receiving: String,
    /// A byte-offset upload holding 10 of 100 bytes, by its client id.
    offset_client: String,
}

impl Fixtures {
    /// Ids of every upload under `/files/`, finished or not.
    fn upload_ids(&self) -> Vec<String> {
        let mut ids = vec![
            self.tus_done.clone(),
            self.empty.clone(),
            self.tus_receiving.clone(),
            self.tus_deferred.clone(),
            self.ietf_receiving.clone(),
        ];
        ids.extend(self.tus_partial.clone());
        ids
    }
}

struct Harness {
    rt: tokio::runtime::Runtime,
    app: Router,
    fx: Fixtures,
    /// Answers by method and status, printed after a property with `FERRY_FUZZ_STATS=1`
    /// (to see that generated requests get past the first checks; `FERRY_FUZZ_TRACE=1`
    /// prints every request and answer).
    stats: std::sync::Mutex<std::collections::BTreeMap<String, u32>>,
    _dir: tempfile::TempDir,
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(31) ^ (i / 251) as u8)
        .collect()
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(digest(HashAlg::Md5, data))
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest(HashAlg::Sha256, data))
}

/// The id at the end of a `Location` URL.
fn id_of(location: Option<&str>) -> String {
    let l = location.expect("Location");
    l.rsplit('/').next().unwrap().to_owned()
}

impl Harness {
    fn new() -> Harness {
        Self::with(|_| {})
    }

    fn with(adjust: impl FnOnce(&mut ServeArgs)) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = ServeArgs::for_dir(dir.path());
        adjust(&mut args);
        let state = rt
            .block_on(ferry_server::state_from_args(&args))
            .expect("state");
        let app = ferry_server::app(state);
        let mut h = Harness {
            rt,
            app,
            fx: Fixtures::default(),
            stats: Default::default(),
            _dir: dir,
        };
        if args.auth_token.is_none() {
            h.fx = h.setup();
        }
        h
    }

    /// Sends one request and reads the whole answer. `Err` for a panic in a handler, a body
    /// that fails mid-way or no answer: what a client sees as a dropped connection.
    fn send(&self, r: &Req) -> Result<Resp, String> {
        let method = Method::from_bytes(r.method.as_bytes()).map_err(|e| e.to_string())?;
        let mut b = Request::builder().method(method).uri(r.path.as_str());
        for (k, v) in &r.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
            let value = HeaderValue::from_bytes(v).map_err(|e| format!("{k}: {e}"))?;
            b = b.header(name, value);
        }
        if r.content_length {
            b = b.header(axum::http::header::CONTENT_LENGTH, r.body.len());
        }
        let body = match r.cut {
            None => Body::from(r.body.clone()),
            Some(n) => {
                let sent = Bytes::copy_from_slice(&r.body[..n.min(r.body.len())]);
                let dropped =
                    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "client went away");
                Body::from_stream(futures_util::stream::iter([Ok(sent), Err(dropped)]))
            }
        };
        let req = b.body(body).map_err(|e| format!("{UNBUILDABLE}: {e}"))?;
        let app = self.app.clone();
        self.rt.block_on(async move {
            let task = tokio::spawn(async move {
                let resp = app.oneshot(req).await.expect("infallible");
                let (parts, body) = resp.into_parts();
                (parts, body.collect().await.map(|c| c.to_bytes()))
            });
            match tokio::time::timeout(ANSWER_WITHIN, task).await {
                Err(_) => Err(format!("no answer within {ANSWER_WITHIN:?}")),
                Ok(Err(e)) if e.is_panic() => Err(format!(
                    "the handler panicked: {}",
                    panic_message(e.into_panic())
                )),
                Ok(Err(e)) => Err(format!("the handler task failed: {e}")),
                Ok(Ok((parts, Err(e)))) => Err(format!(
                    "{} answered, then the body failed mid-way: {e}",
                    parts.status
                )),
                Ok(Ok((parts, Ok(body)))) => Ok(Resp {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                }),
            }
        })
    }

    /// [`Harness::send`] for setup steps: must answer, with a status below 400.
    fn ok(&self, r: Req) -> Resp {
        let resp = self
            .send(&r)
            .unwrap_or_else(|e| panic!("setup request {r:?}: {e}"));
        assert!(
            resp.status.as_u16() < 400,
            "setup request {r:?}: {} {}",
            resp.status,
            resp.text()
        );
        resp
    }

    /// The property: an answer below 500. Returns it for further checks.
    fn check(&self, r: &Req) -> Result<Resp, TestCaseError> {
        let r = self.resolve(r)?;
        let resp = self.send(&r).map_err(|e| {
            // A URI the `http` crate refuses is not a request hyper would ever hand over.
            if e.starts_with(UNBUILDABLE) {
                TestCaseError::reject(e)
            } else {
                TestCaseError::fail(e)
            }
        })?;
        if std::env::var_os("FERRY_FUZZ_TRACE").is_some() {
            eprintln!("{r:?}\n=> {} {:.200}", resp.status, resp.text());
        }
        *self
            .stats
            .lock()
            .unwrap()
            .entry(format!("{} {}", r.method, resp.status.as_u16()))
            .or_default() += 1;
        if resp.status.is_server_error() {
            return Err(TestCaseError::fail(format!(
                "{} {}",
                resp.status,
                resp.text()
            )));
        }
        Ok(resp)
    }

    /// Replaces `@fresh-<kind>` in the path by a new upload of that kind.
    fn resolve(&self, r: &Req) -> Result<Req, TestCaseError> {
        let Some(at) = r.path.find("@fresh-") else {
            return Ok(r.clone());
        };
        let kind = &r.path[at + "@fresh-".len()..];
        let kind = kind.split(['/', '?']).next().unwrap_or_default();
        let id = self.fresh(kind);
        let mut out = r.clone();
        out.path = r.path.replacen(&format!("@fresh-{kind}"), &id, 1);
        Ok(out)
    }

    /// A new upload: `receiving` (10 of 100 bytes), `deferred`, `done` (5 bytes), `partial`,
    /// `ietf` (IETF, 10 bytes, length unknown).
    fn fresh(&self, kind: &str) -> String {
        let tus = |r: Req| r.header("tus-resumable", "1.0.0");
        let resp = match kind {
            "receiving" => self.ok(tus(Req::new("POST", "/files/"))
                .header("upload-length", "100")
                .header("content-type", OCTETS)
                .body(pattern(10, 1))),
            "deferred" => {
                self.ok(tus(Req::new("POST", "/files/")).header("upload-defer-length", "1"))
            }
            "done" => self.ok(tus(Req::new("POST", "/files/"))
                .header("upload-length", "5")
                .header(
                    "upload-metadata",
                    "filename YS50eHQ=,filetype dGV4dC9wbGFpbg==",
                )
                .header("content-type", OCTETS)
                .body(b"hello".to_vec())),
            "partial" => self.ok(tus(Req::new("POST", "/files/"))
                .header("upload-concat", "partial")
                .header("upload-length", "4")),
            "ietf" => self.ok(Req::new("POST", "/files/")
                .header("upload-draft-interop-version", "6")
                .header("upload-complete", "?0")
                .body(pattern(10, 2))),
            other => panic!("unknown fresh upload kind {other:?}"),
        };
        id_of(resp.header("location"))
    }

    fn handshake(&self, body: serde_json::Value) -> Resp {
        self.ok(Req::new("POST", "/api/upload/handshake")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap()))
    }

    fn send_chunk(&self, file_id: &str, chunk_id: &str, bytes: &[u8]) -> Resp {
        self.ok(chunk_req(file_id, chunk_id, bytes))
    }

    fn setup(&self) -> Fixtures {
        let mut fx = Fixtures::default();

        // Chunk handshake, MD5: four chunks, the first sent.
        let data = pattern(3 * 1024 + 100, 3);
        let chunks: Vec<Vec<u8>> = data.chunks(1024).map(<[u8]>::to_vec).collect();
        let ids: Vec<String> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{}{i}", md5_hex(c)))
            .collect();
        let file_id = md5_hex(&data);
        let r = self.handshake(serde_json::json!({
            "fileId": file_id, "ext": ".bin", "chunkIds": ids,
            "size": data.len(), "chunkSize": 1024, "fileName": "data.bin",
        }));
        assert!(r.text().contains(&ids[0]), "{}", r.text());
        self.send_chunk(&file_id, &ids[0], &chunks[0]);
        fx.md5_file = (file_id, ids, chunks);

        // Chunk handshake, SHA-256: two chunks, none sent, no declared sizes.
        let data = pattern(1500, 4);
        let chunks: Vec<Vec<u8>> = data.chunks(1000).map(<[u8]>::to_vec).collect();
        let ids: Vec<String> = chunks.iter().map(|c| sha256_hex(c)).collect();
        let file_id = sha256_hex(&data);
        self.handshake(serde_json::json!({
            "fileId": file_id, "chunkIds": ids, "hashAlgorithm": "sha256",
        }));
        fx.sha_file = (file_id, ids, chunks);

        // A finished chunk-handshake file.
        let data = pattern(777, 5);
        let id = md5_hex(&data);
        self.handshake(serde_json::json!({"fileId": id, "ext": ".txt", "chunkIds": [id]}));
        let r = self.send_chunk(&id, &id, &data);
        assert!(r.text().contains("/upload/"), "{}", r.text());
        fx.done_file_id = id;
        fx.done_data = data;

        // A finished tus upload with a name and a type.
        let data = pattern(5000, 6);
        let r = self.ok(Req::new("POST", "/files/")
            .header("tus-resumable", "1.0.0")
            .header("upload-length", data.len().to_string())
            // filename "report 2026.pdf", filetype "application/pdf"
            .header(
                "upload-metadata",
                "filename cmVwb3J0IDIwMjYucGRm,filetype YXBwbGljYXRpb24vcGRm",
            )
            .header("content-type", OCTETS)
            .body(data.clone()));
        fx.tus_done = id_of(r.header("location"));
        fx.tus_done_data = data;
        let r = self.ok(Req::new("GET", format!("/files/{}", fx.tus_done)));
        assert_eq!(&r.body[..], &fx.tus_done_data[..]);
        fx.etag = r.header("etag").expect("ETag").to_owned();
        fx.last_modified = r.header("last-modified").expect("Last-Modified").to_owned();

        let r = self.ok(Req::new("POST", "/files/")
            .header("tus-resumable", "1.0.0")
            .header("upload-length", "0"));
        fx.empty = id_of(r.header("location"));

        fx.tus_receiving = self.fresh("receiving");
        fx.tus_deferred = self.fresh("deferred");
        let partial = Req::new("POST", "/files/")
            .header("tus-resumable", "1.0.0")
            .header("upload-concat", "partial")
            .header("upload-length", "4");
        fx.tus_partial = self
            .send(&partial)
            .ok()
            .filter(|r| r.status == StatusCode::CREATED)
            .map(|r| id_of(r.header("location")));
        fx.ietf_receiving = self.fresh("ietf");

        fx.offset_client = "fixture.bin-100-1700000000".to_owned();
        self.ok(Req::new("POST", "/api/upload")
            .header("x-file-id", &fx.offset_client)
            .header("x-start-byte", "0")
            .header("x-file-size", "100")
            .body(pattern(10, 7)));
        fx
    }

    /// Runs `test` on `cases` requests drawn from `strategy`; a failure panics with the
    /// minimal failing request.
    fn run<S>(
        &self,
        cases: u32,
        strategy: S,
        test: impl Fn(&Harness, S::Value) -> Result<(), TestCaseError>,
    ) where
        S: Strategy,
        S::Value: fmt::Debug,
    {
        // `PROPTEST_CASES` overrides the count, for longer hunts.
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(cases);
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&strategy, |v| test(self, v));
        if std::env::var_os("FERRY_FUZZ_STATS").is_some() {
            eprintln!("answers: {:?}", self.stats.lock().unwrap());
        }
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}

/// A chunk upload as the browser SDK sends it: `fileId`, `chunkId`, then the bytes.
fn chunk_req(file_id: &str, chunk_id: &str, bytes: &[u8]) -> Req {
    let boundary = "XfuzzBoundaryX";
    let mut body = Vec::new();
    for (name, value) in [("fileId", file_id), ("chunkId", chunk_id)] {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"blob\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Req::new("POST", "/api/upload")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(not a string)".to_owned())
}

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

/// Any valid header value: visible ASCII, spaces, tabs and opaque bytes, often UTF-8 text
/// (some fronts decode values as UTF-8), sometimes with surrounding whitespace.
fn header_bytes() -> BoxedStrategy<Vec<u8>> {
    let byte = prop_oneof![
        6 => 0x20u8..=0x7e,
        1 => Just(b'\t'),
        2 => 0x80u8..=0xff,
    ];
    prop_oneof![
        3 => proptest::collection::vec(byte, 0..48),
        2 => "[ -~]{0,48}".prop_map(String::into_bytes),
        1 => any::<String>().prop_map(|s| {
            s.chars()
                .filter(|c| !c.is_control() || *c == '\t')
                .collect::<String>()
                .into_bytes()
        }),
    ]
    .boxed()
}

/// Decimal spellings around the limits every numeric header has: 2^63, u64::MAX, one past
/// it, signs, spaces, other notations.
fn number_text() -> BoxedStrategy<String> {
    prop_oneof![
        (0u64..=200).prop_map(|n| n.to_string()),
        proptest::sample::select(vec![
            "0",
            "1",
            "10",
            "100",
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999999",
            "999999999999999",
            "1000000000000000",
            "-1",
            "-0",
            "+5",
            " 5",
            "5 ",
            "0x10",
            "1e3",
            "1.5",
            "",
            "00000000000000000000010",
        ])
        .prop_map(str::to_owned),
        any::<u64>().prop_map(|n| n.to_string()),
    ]
    .boxed()
}

/// An optional header: absent, one of `values` (the interesting ones), or anything, with
/// these weights.
fn weighted(
    values: Vec<String>,
    absent: u32,
    interesting: u32,
    junk: u32,
) -> BoxedStrategy<Option<Vec<u8>>> {
    let mut options: Vec<(u32, BoxedStrategy<Option<Vec<u8>>>)> = vec![
        (absent, Just(None).boxed()),
        (junk, header_bytes().prop_map(Some).boxed()),
    ];
    if !values.is_empty() && interesting > 0 {
        options.push((
            interesting,
            proptest::sample::select(values)
                .prop_map(|v| Some(v.into_bytes()))
                .boxed(),
        ));
    }
    options.retain(|(w, _)| *w > 0);
    proptest::strategy::Union::new_weighted(options).boxed()
}

/// A header that matters to the request at hand: present more often than not.
fn field(values: Vec<String>) -> BoxedStrategy<Option<Vec<u8>>> {
    weighted(values, 4, 4, 2)
}

/// A header that changes the meaning of a request (method override, conditionals): rarely
/// present, so that most cases still reach the code behind it.
fn rare(values: Vec<String>) -> BoxedStrategy<Option<Vec<u8>>> {
    weighted(values, 12, 3, 1)
}

fn numeric_field() -> BoxedStrategy<Option<Vec<u8>>> {
    prop_oneof![
        4 => Just(None),
        4 => number_text().prop_map(|s| Some(s.into_bytes())),
        2 => header_bytes().prop_map(Some),
    ]
    .boxed()
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| (*s).to_owned()).collect()
}

/// One generated header line: name and value bytes.
type Header = (String, Vec<u8>);

/// A set of optional headers, each generated by its own strategy.
fn headers(
    spec: Vec<(&'static str, BoxedStrategy<Option<Vec<u8>>>)>,
) -> BoxedStrategy<Vec<Header>> {
    let parts: Vec<BoxedStrategy<Option<Header>>> = spec
        .into_iter()
        .map(|(name, s)| s.prop_map(move |v| v.map(|v| (name.to_owned(), v))).boxed())
        .collect();
    parts
        .prop_map(|v| v.into_iter().flatten().collect())
        .boxed()
}

fn body() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => Just(Vec::new()),
        5 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => proptest::collection::vec(any::<u8>(), 64..300),
    ]
    .boxed()
}

/// A `Range` value: well-formed lists with numbers near `len`, extreme numbers, and junk.
fn range_value(len: u64) -> BoxedStrategy<String> {
    let n = prop_oneof![
        0..len + 2,
        (0u64..3).prop_map(move |d| len.saturating_sub(d)),
        proptest::sample::select(vec![
            "0".to_owned(),
            "18446744073709551615".to_owned(),
            "18446744073709551616".to_owned(),
            "9223372036854775808".to_owned(),
        ])
        .prop_map(|s| s.parse::<u64>().unwrap_or(u64::MAX)),
    ];
    let spec = prop_oneof![
        4 => (n.clone(), n.clone()).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
        2 => n.clone().prop_map(|a| format!("{a}-")),
        2 => n.clone().prop_map(|a| format!("-{a}")),
        1 => (n.clone(), n).prop_map(|(a, b)| format!("{a}-{b}")),
        1 => proptest::sample::select(vec![
            "-0".to_owned(),
            "18446744073709551616-".to_owned(),
            "0-18446744073709551616".to_owned(),
            "-18446744073709551616".to_owned(),
            "".to_owned(),
        ]),
    ];
    let unit = prop_oneof![
        6 => Just("bytes="),
        1 => proptest::sample::select(vec!["BYTES=", " bytes=", "items=", "bytes ="]),
    ];
    prop_oneof![
        5 => (
            prop_oneof![3 => proptest::collection::vec(spec.clone(), 1..3), 1 => proptest::collection::vec(spec, 3..10)],
            unit,
            proptest::sample::select(vec![",", ", ", " ,\t"]),
        )
            .prop_map(|(specs, unit, sep)| format!("{unit}{}", specs.join(sep))),
        1 => (1usize..150).prop_map(|k| {
            let specs: Vec<String> = (0..k).map(|i| format!("{}-{}", i * 2, i * 2)).collect();
            format!("bytes={}", specs.join(","))
        }),
        2 => "[ -~]{0,40}",
    ]
    .boxed()
}

/// Paths under `/files/`: the fixtures, fresh uploads, unknown and malformed ids.
fn files_path(fx: &Fixtures, fresh: &[&str]) -> BoxedStrategy<String> {
    let mut known: Vec<String> = fx
        .upload_ids()
        .into_iter()
        .map(|id| format!("/files/{id}"))
        .collect();
    known.extend(fresh.iter().map(|k| format!("/files/@fresh-{k}")));
    prop_oneof![
        2 => proptest::sample::select(vec!["/files".to_owned(), "/files/".to_owned()]),
        6 => proptest::sample::select(known),
        1 => "[0-9a-f]{32}".prop_map(|id| format!("/files/{id}")),
        1 => proptest::sample::select(vec![
            "/files/../../etc/passwd".to_owned(),
            "/files/%2e%2e%2fetc".to_owned(),
            "/files/%ff%fe".to_owned(),
            "/files/%".to_owned(),
            format!("/files/{}", "a".repeat(5000)),
            "/files/0123456789ABCDEF0123456789ABCDEF".to_owned(),
            "/files/x/y".to_owned(),
        ]),
        1 => "[A-Za-z0-9._~!$&'()*+,;=:@%-]{0,40}".prop_map(|s| format!("/files/{s}")),
    ]
    .boxed()
}

fn method(common: &[&str]) -> BoxedStrategy<String> {
    prop_oneof![
        8 => proptest::sample::select(strings(common)),
        1 => proptest::sample::select(strings(&["PUT", "TRACE", "patch", "FOO", "M-SEARCH"])),
    ]
    .boxed()
}

/// Now and then, the client drops the connection part-way through the body.
fn with_cuts(s: impl Strategy<Value = Req> + 'static) -> BoxedStrategy<Req> {
    (s, proptest::option::weighted(0.15, any::<usize>()))
        .prop_map(|(mut r, cut)| {
            r.cut = cut.map(|c| c % (r.body.len() + 1));
            r
        })
        .boxed()
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

/// Handshake-shaped JSON with each field right, wrong in type, or wrong in value.
fn handshake_fields(fx: &Fixtures) -> BoxedStrategy<serde_json::Value> {
    use serde_json::{Value, json};
    let (md5_id, md5_chunks, _) = fx.md5_file.clone();
    let (sha_id, sha_chunks, _) = fx.sha_file.clone();
    let anything = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        Just(json!([])),
        Just(json!({})),
        Just(json!([[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]])),
    ];
    let file_id = prop_oneof![
        proptest::sample::select(vec![
            md5_id.clone(),
            md5_id.to_ascii_uppercase(),
            sha_id.clone(),
            fx.done_file_id.clone(),
            String::new(),
        ])
        .prop_map(Value::String),
        "[0-9a-f]{32}".prop_map(Value::String),
        "[0-9a-fA-Fg]{0,70}".prop_map(Value::String),
        anything.clone(),
    ];
    let ext = prop_oneof![
        proptest::sample::select(strings(&[
            ".bin", ".txt", "", ".JPG", "../x", ".a/b", ".tar.gz"
        ]))
        .prop_map(Value::from),
        "\\.?[ -~]{0,20}".prop_map(Value::String),
        anything.clone(),
    ];
    let id_pool: Vec<String> = md5_chunks
        .iter()
        .chain(sha_chunks.iter())
        .cloned()
        .chain(["".to_owned(), "z".repeat(32), "0".repeat(32) + "/../x"])
        .collect();
    let chunk_id = prop_oneof![
        proptest::sample::select(id_pool).prop_map(Value::String),
        "[0-9a-f]{32}[a-zA-Z0-9_-]{0,4}".prop_map(Value::String),
        "[0-9a-f]{64}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
        anything.clone(),
    ];
    let chunk_ids = prop_oneof![
        3 => proptest::collection::vec(chunk_id, 0..6).prop_map(Value::Array),
        1 => Just(Value::Array(md5_chunks.iter().cloned().map(Value::from).collect())),
        1 => Just(Value::Array(sha_chunks.iter().cloned().map(Value::from).collect())),
        1 => anything.clone(),
    ];
    let size = prop_oneof![
        (0u64..5000).prop_map(Value::from),
        proptest::sample::select(vec![
            json!(0),
            json!(1),
            json!(3172),
            json!(1024),
            json!(u64::MAX),
            json!(u64::MAX - 1),
            json!(1u64 << 62),
            json!(1u64 << 63),
            json!(-1),
            json!(-9_223_372_036_854_775_808i64),
            json!(1.5),
            json!(1e300),
            json!("100"),
        ]),
        any::<u64>().prop_map(Value::from),
        anything.clone(),
    ];
    let alg = prop_oneof![
        proptest::sample::select(strings(&[
            "md5", "MD5", "sha256", "sha-256", "sha1", "blake3", ""
        ]))
        .prop_map(Value::from),
        anything.clone(),
    ];
    let name = prop_oneof![any::<String>().prop_map(Value::String), anything];
    let fields = (
        proptest::option::of(file_id),
        proptest::option::of(ext),
        proptest::option::of(chunk_ids),
        proptest::option::of(size.clone()),
        proptest::option::of(size),
        proptest::option::of(name),
        proptest::option::of(alg),
    );
    fields
        .prop_map(|(f, e, c, s, cs, n, a)| {
            let mut m = serde_json::Map::new();
            for (k, v) in [
                ("fileId", f),
                ("ext", e),
                ("chunkIds", c),
                ("size", s),
                ("chunkSize", cs),
                ("fileName", n),
                ("hashAlgorithm", a),
            ] {
                if let Some(v) = v {
                    m.insert(k.to_owned(), v);
                }
            }
            Value::Object(m)
        })
        .boxed()
}

/// Values of the wrong type or out of range, for any handshake field.
fn json_junk() -> BoxedStrategy<serde_json::Value> {
    use serde_json::{Value, json};
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        proptest::sample::select(vec![
            json!(u64::MAX),
            json!(0),
            json!(-1),
            json!(1.5),
            json!(""),
            json!([]),
            json!({}),
            json!([null]),
            json!(["x"]),
            json!([[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]),
        ]),
    ]
    .boxed()
}

/// Handshakes a client could send: the fixture files again (same layout, or without sizes),
/// and new files with layouts of any shape; then the same with one field spoiled; then
/// every field independently arbitrary.
fn handshake_json(fx: &Fixtures) -> BoxedStrategy<serde_json::Value> {
    use serde_json::json;
    let (md5_id, md5_chunks, _) = fx.md5_file.clone();
    let (sha_id, sha_chunks, _) = fx.sha_file.clone();
    let again = proptest::sample::select(vec![
        json!({"fileId": md5_id, "ext": ".bin", "chunkIds": md5_chunks, "size": 3172, "chunkSize": 1024}),
        json!({"fileId": md5_id, "ext": ".bin", "chunkIds": md5_chunks}),
        json!({"fileId": md5_id, "ext": ".bin", "chunkIds": md5_chunks, "chunkSize": 1000}),
        json!({"fileId": sha_id, "chunkIds": sha_chunks, "hashAlgorithm": "sha256"}),
        json!({"fileId": sha_id, "chunkIds": sha_chunks, "hashAlgorithm": "SHA-256", "size": 1500}),
        json!({"fileId": fx.done_file_id, "ext": ".txt", "chunkIds": [fx.done_file_id]}),
        json!({"fileId": fx.done_file_id, "ext": ".bin", "chunkIds": []}),
    ]);
    let new_file = (
        "[0-9a-f]{32}",
        proptest::collection::vec("[0-9a-f]{32}[0-9]{0,2}", 0..6),
        proptest::option::of(0u64..5000),
        proptest::option::of(prop_oneof![1u64..2000, Just(u64::MAX), Just(1u64 << 62)]),
        proptest::sample::select(strings(&[".bin", "", ".JPG", ".mp4"])),
        proptest::option::of(any::<String>()),
    )
        .prop_map(|(id, ids, size, cs, ext, name)| {
            let mut v = json!({"fileId": id, "ext": ext, "chunkIds": ids});
            if let Some(size) = size {
                v["size"] = json!(size);
            }
            if let Some(cs) = cs {
                v["chunkSize"] = json!(cs);
            }
            if let Some(name) = name {
                v["fileName"] = json!(name);
            }
            v
        });
    let coherent = prop_oneof![again, new_file].boxed();
    let keys = strings(&[
        "fileId",
        "ext",
        "chunkIds",
        "size",
        "chunkSize",
        "fileName",
        "hashAlgorithm",
    ]);
    let spoiled = (
        coherent.clone(),
        proptest::sample::select(keys),
        proptest::option::of(json_junk()),
    )
        .prop_map(|(mut v, key, junk)| {
            let obj = v.as_object_mut().expect("object");
            match junk {
                Some(j) => obj.insert(key, j),
                None => obj.remove(&key),
            };
            v
        });
    prop_oneof![
        4 => coherent,
        3 => spoiled,
        2 => handshake_fields(fx),
    ]
    .boxed()
}

/// `POST /api/upload/handshake` with arbitrary bytes, arbitrary text near JSON, and
/// handshake-shaped JSON with every field wrong in every way.
#[test]
fn handshake_bodies_never_5xx() {
    let h = Harness::new();
    let body = prop_oneof![
        4 => handshake_json(&h.fx).prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => proptest::collection::vec(any::<u8>(), 0..200),
        1 => "[{}\\[\\]\":,0-9a-f.eE truefalsnl-]{0,80}".prop_map(String::into_bytes),
    ];
    let strategy = (
        body,
        headers(vec![
            (
                "content-type",
                field(strings(&["application/json", "text/plain", "application/json; charset=utf-16"])),
            ),
            ("origin", rare(strings(&["https://app.example"]))),
        ]),
        prop_oneof![
            8 => Just("/api/upload/handshake"),
            1 => proptest::sample::select(vec!["/api/upload/handshake/", "/api/upload/handshake?x=1"]),
        ],
        prop_oneof![8 => Just("POST"), 1 => proptest::sample::select(vec!["GET", "PUT"])],
    )
        .prop_map(|(body, headers, path, m)| Req {
            method: m.to_owned(),
            path: path.to_owned(),
            headers,
            body,
            content_length: true,
            cut: None,
        });
    let strategy = with_cuts(strategy);
    h.run(CASES, strategy, |h, r| {
        let resp = h.check(&r)?;
        // The dialect answers in its envelope, errors included.
        if r.method == "POST" && r.path == "/api/upload/handshake" {
            let v: serde_json::Value = serde_json::from_slice(&resp.body).map_err(|e| {
                TestCaseError::fail(format!("{}: not JSON ({e}): {}", resp.status, resp.text()))
            })?;
            prop_assert_eq!(
                v["code"].as_u64().unwrap_or(0) as u16 == 0,
                resp.status == StatusCode::OK,
                "{}",
                v
            );
        }
        Ok(())
    });
}

/// One part of a generated multipart body.
#[derive(Clone, Debug)]
struct Part {
    head: Vec<u8>,
    body: Vec<u8>,
}

fn multipart_part(fx: &Fixtures) -> BoxedStrategy<Part> {
    let (md5_id, md5_ids, md5_chunks) = fx.md5_file.clone();
    let (sha_id, sha_ids, sha_chunks) = fx.sha_file.clone();
    let file_ids = vec![
        md5_id.clone(),
        md5_id.to_ascii_uppercase(),
        sha_id,
        fx.done_file_id.clone(),
        "0".repeat(32),
        String::new(),
        " ".to_owned(),
    ];
    let chunk_ids: Vec<String> = md5_ids
        .iter()
        .chain(sha_ids.iter())
        .cloned()
        .chain([fx.done_file_id.clone(), String::new(), "x".repeat(2000)])
        .collect();
    let chunk_bytes: Vec<Vec<u8>> = md5_chunks
        .into_iter()
        .chain(sha_chunks)
        .chain([fx.done_data.clone(), Vec::new()])
        .collect();
    let name = proptest::sample::select(strings(&[
        "fileId", "chunkId", "file", "chunk", "other", "",
    ]));
    let disposition = (
        name,
        0usize..6,
        header_bytes(),
    )
        .prop_map(|(name, form, junk)| match form {
            0 | 1 => format!("Content-Disposition: form-data; name=\"{name}\"\r\n").into_bytes(),
            2 => format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"blob\"\r\nContent-Type: application/octet-stream\r\n").into_bytes(),
            3 => format!("Content-Disposition: form-data; name={name}; filename*=UTF-8''%E6%8A%A5%ZZ\r\n").into_bytes(),
            4 => [b"Content-Disposition: ".as_slice(), &junk, b"\r\n"].concat(),
            _ => [b"X-Junk: ".as_slice(), &junk, b"\r\n"].concat(),
        });
    let value = prop_oneof![
        3 => proptest::sample::select(file_ids).prop_map(String::into_bytes),
        3 => proptest::sample::select(chunk_ids).prop_map(String::into_bytes),
        3 => proptest::sample::select(chunk_bytes),
        2 => proptest::collection::vec(any::<u8>(), 0..80),
    ];
    (disposition, value)
        .prop_map(|(head, body)| Part { head, body })
        .boxed()
}

/// The three parts of a real chunk upload (`fileId`, `chunkId`, `file`) in any order, for
/// the fixture files: the right bytes, bytes of another chunk, or the right ones spoiled.
fn chunk_parts(fx: &Fixtures) -> BoxedStrategy<Vec<Part>> {
    let (md5_id, md5_ids, md5_chunks) = fx.md5_file.clone();
    let (sha_id, sha_ids, sha_chunks) = fx.sha_file.clone();
    // (fileId, chunk id, chunk bytes)
    let mut pool: Vec<(String, String, Vec<u8>)> = Vec::new();
    for (id, c) in md5_ids.iter().zip(&md5_chunks) {
        pool.push((md5_id.clone(), id.clone(), c.clone()));
    }
    for (id, c) in sha_ids.iter().zip(&sha_chunks) {
        pool.push((sha_id.clone(), id.clone(), c.clone()));
    }
    pool.push((
        fx.done_file_id.clone(),
        fx.done_file_id.clone(),
        fx.done_data.clone(),
    ));
    let n = pool.len();
    (
        0..n,
        prop_oneof![3 => Just(None), 1 => (0..n).prop_map(Some)],
        0usize..6,
        0usize..4,
        any::<usize>(),
        any::<u8>(),
        any::<bool>(),
    )
        .prop_map(move |(i, bytes_of, order, spoil, at, x, filename)| {
            let (file_id, chunk_id, mut bytes) = pool[i].clone();
            if let Some(j) = bytes_of {
                bytes = pool[j].2.clone();
            }
            match spoil {
                0 if !bytes.is_empty() => {
                    let k = at % bytes.len();
                    bytes[k] ^= x | 1;
                }
                1 => bytes.truncate(at % (bytes.len() + 1)),
                _ => {}
            }
            let text = |name: &str, value: &str| Part {
                head: format!("Content-Disposition: form-data; name=\"{name}\"\r\n").into_bytes(),
                body: value.as_bytes().to_vec(),
            };
            let file = Part {
                head: if filename {
                    b"Content-Disposition: form-data; name=\"file\"; filename=\"blob\"\r\nContent-Type: application/octet-stream\r\n".to_vec()
                } else {
                    b"Content-Disposition: form-data; name=\"chunk\"\r\n".to_vec()
                },
                body: bytes,
            };
            let mut parts = vec![text("fileId", &file_id), text("chunkId", &chunk_id), file];
            // The six orders of three parts.
            match order {
                0 => {}
                1 => parts.swap(1, 2),
                2 => parts.swap(0, 1),
                3 => parts.rotate_left(1),
                4 => parts.rotate_right(1),
                _ => parts.swap(0, 2),
            }
            parts
        })
        .boxed()
}

/// `POST /api/upload` (and `/upload`) with `multipart/form-data`: boundaries that match,
/// do not, are quoted, empty or absurd; parts in any order with any disposition; bodies
/// truncated anywhere; ids in the query string; and plain garbage.
#[test]
fn multipart_chunk_uploads_never_5xx() {
    let h = Harness::new();
    let boundary = prop_oneof![
        3 => Just("XfuzzBoundaryX".to_owned()),
        2 => "[A-Za-z0-9'()+_,./:=?-]{1,70}",
        1 => "[ -~]{0,90}",
    ];
    let ct_kind = 0usize..10;
    let parts = prop_oneof![
        1 => proptest::collection::vec(multipart_part(&h.fx), 0..5),
        1 => chunk_parts(&h.fx),
    ];
    let (md5_id, md5_ids, _) = h.fx.md5_file.clone();
    let query = prop_oneof![
        4 => Just(String::new()),
        2 => (
            proptest::sample::select(md5_ids),
            proptest::sample::select(vec![md5_id, "zz".to_owned(), "%ff".to_owned()]),
        )
            .prop_map(|(c, f)| format!("?chunkId={c}&fileId={f}")),
        1 => "[A-Za-z0-9=&%+._-]{0,30}".prop_map(|q| format!("?{q}")),
    ];
    let body_shape = (
        0usize..8,
        any::<usize>(),
        proptest::collection::vec(any::<u8>(), 0..100),
    );
    let strategy = (
        boundary,
        ct_kind,
        parts,
        query,
        body_shape,
        proptest::sample::select(vec!["/api/upload", "/upload"]),
        any::<bool>(),
    )
        .prop_map(|(b, ct_kind, parts, query, (shape, cut, junk), path, cl)| {
            let ct = match ct_kind {
                0 | 1 | 7 | 8 | 9 => format!("multipart/form-data; boundary={b}"),
                2 => format!("multipart/form-data; boundary=\"{b}\""),
                3 => "multipart/form-data".to_owned(),
                4 => format!("MULTIPART/FORM-DATA;boundary={b};charset=utf-8"),
                5 => format!("multipart/form-data; boundary={b}x"),
                _ => format!("multipart/form-data; boundary={b}; boundary=other"),
            };
            let mut body = Vec::new();
            for p in &parts {
                body.extend_from_slice(format!("--{b}\r\n").as_bytes());
                body.extend_from_slice(&p.head);
                body.extend_from_slice(b"\r\n");
                body.extend_from_slice(&p.body);
                body.extend_from_slice(b"\r\n");
            }
            match shape {
                0 | 1 | 5 | 6 | 7 => body.extend_from_slice(format!("--{b}--\r\n").as_bytes()),
                2 => body.truncate(cut % (body.len() + 1)),
                3 => body = junk,
                _ => {
                    body.extend_from_slice(format!("--{b}--").as_bytes());
                    body.extend_from_slice(&junk);
                }
            }
            Req {
                method: "POST".to_owned(),
                path: format!("{path}{query}"),
                headers: vec![("content-type".to_owned(), ct.into_bytes())],
                body,
                content_length: cl,
                cut: None,
            }
        });
    let strategy = with_cuts(strategy);
    h.run(CASES, strategy, |h, r| {
        // Header bytes of the multipart content type may be invalid (`[ -~]` boundaries are
        // not, but quotes and spaces inside make odd ones); skip unbuildable requests.
        if HeaderValue::from_bytes(&r.headers[0].1).is_err() {
            return Err(TestCaseError::reject("not a header value"));
        }
        let resp = h.check(&r)?;
        let v: Result<serde_json::Value, _> = serde_json::from_slice(&resp.body);
        prop_assert!(v.is_ok(), "{} not JSON: {}", resp.status, resp.text());
        Ok(())
    });
}

/// One step of a chunk-handshake session.
#[derive(Clone, Debug)]
enum Step {
    /// A handshake with these chunk ids (indices into the file's chunks), chunk size and size.
    Handshake {
        ids: Vec<usize>,
        chunk_size: Option<u64>,
        size: Option<u64>,
    },
    /// Chunk `id`'s upload carrying chunk `bytes_of`'s bytes, cut to `keep` bytes if set.
    Chunk {
        id: usize,
        bytes_of: usize,
        keep: Option<usize>,
    },
}

/// Sessions of the chunk dialect as clients run them, retries and changes of mind included:
/// handshakes that re-declare the layout (other ids, other sizes, no ids at all) mixed with
/// chunk uploads, right or wrong, against one file. Each case is a new file.
#[test]
fn chunk_dialect_sessions_never_5xx() {
    let h = Harness::new();
    let step = prop_oneof![
        (
            prop_oneof![
                3 => Just(vec![0, 1, 2]),
                1 => Just(vec![]),
                1 => Just(vec![0, 1]),
                1 => Just(vec![2, 1, 0]),
                1 => proptest::collection::vec(0usize..3, 0..5),
            ],
            proptest::option::of(proptest::sample::select(vec![10u64, 5, 1, 25, 1000])),
            proptest::option::of(proptest::sample::select(vec![
                25u64, 0, 5, 10, 24, 26, 1000
            ])),
        )
            .prop_map(|(ids, chunk_size, size)| Step::Handshake {
                ids,
                chunk_size,
                size
            }),
        (
            0usize..3,
            prop_oneof![3 => Just(None), 1 => (0usize..3).prop_map(Some)],
            proptest::option::of(0usize..12),
        )
            .prop_map(|(id, other, keep)| Step::Chunk {
                id,
                bytes_of: other.unwrap_or(id),
                keep,
            }),
    ];
    let strategy = (
        proptest::bool::weighted(0.8),
        proptest::collection::vec(step, 1..8),
    );
    // Every run of a case (shrinking included) gets a file of its own, so a failure
    // reproduces from its printed input alone.
    let files = std::sync::atomic::AtomicU64::new(0);
    h.run(CASES, strategy, |h, (real, steps)| {
        // Chunks of 10, 10 and 5 bytes, ids `<md5><index>` as spark-md5 clients send them,
        // and the file's MD5 as fileId (or a fileId it will never match).
        let n = files.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let data: Vec<u8> = n
            .to_le_bytes()
            .iter()
            .cycle()
            .zip(pattern(25, 11))
            .map(|(s, p)| s ^ p)
            .collect();
        let chunks: Vec<Vec<u8>> = data.chunks(10).map(<[u8]>::to_vec).collect();
        let ids: Vec<String> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{}{i}", md5_hex(c)))
            .collect();
        let file_id = if real {
            md5_hex(&data)
        } else {
            md5_hex(format!("not the file {n}").as_bytes())
        };
        for step in steps {
            let r = match step {
                Step::Handshake {
                    ids: which,
                    chunk_size,
                    size,
                } => {
                    let mut v = serde_json::json!({
                        "fileId": file_id,
                        "chunkIds": which.iter().map(|&i| ids[i].clone()).collect::<Vec<_>>(),
                    });
                    if let Some(cs) = chunk_size {
                        v["chunkSize"] = cs.into();
                    }
                    if let Some(size) = size {
                        v["size"] = size.into();
                    }
                    Req::new("POST", "/api/upload/handshake")
                        .header("content-type", "application/json")
                        .body(serde_json::to_vec(&v).unwrap())
                }
                Step::Chunk { id, bytes_of, keep } => {
                    let bytes = &chunks[bytes_of];
                    let bytes = &bytes[..keep.unwrap_or(bytes.len()).min(bytes.len())];
                    chunk_req(&file_id, &ids[id], bytes)
                }
            };
            h.check(&r)?;
        }
        Ok(())
    });
}

/// The byte-offset dialect: `POST /api/upload` with a raw body and `GET /api/upload/status`,
/// with arbitrary `X-File-Id`, `X-Start-Byte`, `X-File-Size`, `Content-Range`,
/// `Content-Type`.
#[test]
fn byte_offset_requests_never_5xx() {
    let h = Harness::new();
    let n = || {
        prop_oneof![
            1 => 0u64..120,
            2 => proptest::sample::select(vec![
                0,
                9,
                10,
                99,
                100,
                (1u64 << 63) - 1,
                1u64 << 63,
                u64::MAX - 1,
                u64::MAX,
            ]),
        ]
    };
    let content_range = prop_oneof![
        3 => Just(None),
        4 => (n(), n(), prop_oneof![n().prop_map(|t| t.to_string()), Just("*".to_owned())])
            .prop_map(|(a, b, t)| Some(format!("bytes {}-{}/{t}", a.min(b), a.max(b)).into_bytes())),
        1 => (number_text(), number_text(), number_text())
            .prop_map(|(a, b, t)| Some(format!("bytes {a}-{b}/{t}").into_bytes())),
        1 => header_bytes().prop_map(Some),
    ];
    let fx = h.fx.clone();
    let strategy = (
        proptest::sample::select(vec![
            ("POST", "/api/upload"),
            ("POST", "/api/upload"),
            ("POST", "/upload"),
            ("GET", "/api/upload/status"),
            ("GET", "/status"),
        ]),
        headers(vec![
            (
                "x-file-id",
                prop_oneof![
                    1 => field(Vec::new()),
                    4 => proptest::sample::select(vec![
                        fx.offset_client.clone(),
                        "another-file-1".to_owned(),
                        " padded ".to_owned(),
                        "x".repeat(1025),
                    ])
                    .prop_map(|v| Some(v.into_bytes())),
                ]
                .boxed(),
            ),
            ("x-start-byte", numeric_field()),
            ("x-file-size", numeric_field()),
            (
                "content-type",
                field(strings(&[
                    "application/octet-stream",
                    "text/plain",
                    "multipart/form-data",
                ])),
            ),
        ]),
        content_range,
        body(),
        any::<bool>(),
    )
        .prop_map(|((m, p), mut headers, cr, body, cl)| {
            if let Some(cr) = cr {
                headers.push(("content-range".to_owned(), cr));
            }
            Req {
                method: m.to_owned(),
                path: p.to_owned(),
                headers,
                body,
                content_length: cl,
                cut: None,
            }
        });
    // Requests a client could send: appends at plausible offsets, ranges whose length is the
    // body's, declared sizes that fit or not, to a handful of files that fill up over the run.
    let coherent = (
        proptest::sample::select(vec![
            fx.offset_client.clone(),
            "coherent-0".to_owned(),
            "coherent-1".to_owned(),
            "coherent-2".to_owned(),
        ]),
        any::<bool>(),
        prop_oneof![0u64..20, (0u64..10).prop_map(|k| k * 10)],
        proptest::collection::vec(any::<u8>(), 1..30),
        prop_oneof![
            Just(None),
            Just(Some("100".to_owned())),
            Just(Some("*".to_owned())),
            (0u64..200).prop_map(|t| Some(t.to_string())),
        ],
        any::<bool>(),
    )
        .prop_map(|(id, append, start, body, total, cl)| {
            let mut r = Req::new("POST", "/api/upload").header("x-file-id", id);
            let end = start + body.len() as u64 - 1;
            match (append, total) {
                (true, total) => {
                    r = r.header("x-start-byte", start.to_string());
                    if let Some(t) = total.filter(|t| t != "*") {
                        r = r.header("x-file-size", t);
                    }
                }
                (false, Some(t)) => {
                    r = r.header("content-range", format!("bytes {start}-{end}/{t}"))
                }
                (false, None) => r = r.header("content-range", format!("bytes {start}-{end}/*")),
            }
            r.content_length = cl;
            r.body(body)
        });
    // Boundary values only: every pair of first and last byte among the numbers where u64
    // arithmetic breaks, with a known, huge or open total.
    let edge = || {
        proptest::sample::select(vec![
            0,
            1,
            (1u64 << 63) - 1,
            1u64 << 63,
            u64::MAX - 1,
            u64::MAX,
        ])
    };
    let extremes = (
        edge(),
        edge(),
        proptest::sample::select(strings(&["*", "*", "18446744073709551615", "100"])),
        proptest::collection::vec(any::<u8>(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(a, b, total, body, cl)| {
            let mut r = Req::new("POST", "/api/upload")
                .header("x-file-id", "extremes")
                .header(
                    "content-range",
                    format!("bytes {}-{}/{total}", a.min(b), a.max(b)),
                )
                .body(body);
            r.content_length = cl;
            r
        });
    let strategy = prop_oneof![4 => strategy, 2 => coherent, 1 => extremes];
    let strategy = with_cuts(strategy);
    h.run(CASES, strategy, |h, r| h.check(&r).map(drop));
}

/// Headers every tus request may carry, with their interesting values.
fn tus_headers(fx: &Fixtures) -> BoxedStrategy<Vec<(String, Vec<u8>)>> {
    let part_urls: Vec<String> = fx
        .tus_partial
        .iter()
        .map(|id| format!("final;/files/{id}"))
        .chain([
            format!(
                "final;/files/{} http://h/files/{}",
                fx.tus_done, fx.tus_receiving
            ),
            "final;".to_owned(),
            "final; /files/../../x".to_owned(),
            "partial".to_owned(),
            format!(
                "final;{}",
                "/files/00000000000000000000000000000000 ".repeat(300)
            ),
        ])
        .collect();
    let sha1_hello = Checksum {
        alg: HashAlg::Sha1,
        digest: digest(HashAlg::Sha1, b"hello"),
    }
    .to_string();
    headers(vec![
        (
            "tus-resumable",
            prop_oneof![
                6 => Just(Some(b"1.0.0".to_vec())),
                1 => Just(None),
                1 => header_bytes().prop_map(Some),
            ]
            .boxed(),
        ),
        (
            "upload-offset",
            prop_oneof![2 => field(strings(&["0", "10", "5", "100"])), 1 => numeric_field()].boxed(),
        ),
        (
            "upload-length",
            prop_oneof![
                3 => proptest::sample::select(strings(&["100", "5", "0", "4"])).prop_map(|v| Some(v.into_bytes())),
                1 => Just(None),
                1 => numeric_field(),
            ]
            .boxed(),
        ),
        ("upload-defer-length", rare(strings(&["1", "0", "true", " 1"]))),
        (
            "upload-metadata",
            field(strings(&[
                "filename YS50eHQ=,filetype dGV4dC9wbGFpbg==",
                "filename",
                "filename ,name",
                "a YQ==,a YQ==",
                "filetype dGV4dC9odG1sDQpYLUluamVjdGVkOiAx",
                "name Li4vLi4vZXRjL3Bhc3N3ZA==",
                "k !!!",
                ",",
            ])),
        ),
        (
            "upload-checksum",
            rare(vec![
                sha1_hello,
                "md5 1B2M2Y8AsgTpgAmY7PhCfg==".to_owned(),
                "sha256 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU".to_owned(),
                "crc32 AAAAAA==".to_owned(),
                "sha1 ===".to_owned(),
                "sha1".to_owned(),
            ]),
        ),
        ("upload-concat", rare(part_urls)),
        (
            "x-http-method-override",
            weighted(
                strings(&["PATCH", "DELETE", "HEAD", "GET", "POST", "OPTIONS", "patch", " PATCH ", "PUT"]),
                20,
                3,
                1,
            ),
        ),
        (
            "content-type",
            field(strings(&[OCTETS, "APPLICATION/OFFSET+OCTET-STREAM; x=1", PARTIAL_UPLOAD, "text/plain"])),
        ),
        ("origin", rare(strings(&["https://app.example"]))),
        (
            "access-control-request-method",
            rare(strings(&["PATCH"])),
        ),
    ])
}

/// tus 1.0.0 at `/files/`: every method on the collection, on fixtures in every state, on
/// fresh uploads, on unknown and malformed ids; with and without `Tus-Resumable: 1.0.0`;
/// arbitrary values for every header the front reads.
#[test]
fn tus_requests_never_5xx() {
    // Expiry on, so answers carry `Upload-Expires` (the janitor itself only runs in `run`).
    let h = Harness::with(|a| a.expire_incomplete = Duration::from_secs(3600));
    let strategy = (
        (
            method(&["POST", "HEAD", "PATCH", "DELETE", "OPTIONS", "GET"]),
            files_path(&h.fx, &["receiving", "deferred", "done", "partial"]),
            tus_headers(&h.fx),
            prop_oneof![
                body(),
                Just(b"hello".to_vec()),
                Just(b"abcd".to_vec()),
                Just(pattern(90, 1)),
            ],
            any::<bool>(),
        ),
        proptest::bool::weighted(0.8),
    )
        .prop_map(|((method, path, headers, body, cl), create)| {
            // Creation is what POST is for: send most of them to the collection.
            let path = if method == "POST" && create {
                "/files/".to_owned()
            } else {
                path
            };
            Req {
                method,
                path,
                headers,
                body,
                content_length: cl,
                cut: None,
            }
        });
    let strategy = with_cuts(strategy);
    h.run(CASES, strategy, |h, r| h.check(&r).map(drop));
}

/// How an upload of a session is created.
#[derive(Clone, Debug)]
enum Create {
    /// tus: `Upload-Length` (or deferred), a partial or not, a creation body or not.
    Tus {
        length: Option<u64>,
        partial: bool,
        body: Option<usize>,
    },
    /// IETF, this interop version: `Upload-Complete`, `Upload-Length`, a body.
    Ietf {
        version: u8,
        complete: bool,
        length: Option<u64>,
        body: usize,
    },
}

/// Where an append says it starts, relative to what the upload holds.
#[derive(Clone, Copy, Debug)]
enum At {
    Held,
    HeldPlus(u64),
    HeldMinus(u64),
    Zero,
    Huge,
}

/// One step of an upload session on `/files/<id>`.
#[derive(Clone, Debug)]
enum Act {
    /// tus PATCH: `len` bytes at `at`, maybe declaring `Upload-Length` (relative to the end
    /// of this body, so -1, 0 or +1 and absolute 0), maybe with a checksum (right or not).
    TusPatch {
        at: At,
        len: usize,
        length: Option<i64>,
        checksum: Option<bool>,
    },
    /// IETF append, interop 6: `len` bytes at `at`, `Upload-Complete` as given.
    IetfPatch {
        at: At,
        len: usize,
        complete: Option<bool>,
        length: Option<i64>,
    },
    Head {
        ietf: bool,
    },
    Get {
        range: Option<String>,
    },
    Delete {
        ietf: bool,
    },
    /// A final upload made of this upload, `times` times over.
    Final {
        times: usize,
    },
}

fn create() -> BoxedStrategy<Create> {
    let length = || {
        prop_oneof![
            2 => proptest::sample::select(vec![0u64, 1, 5, 20, 100]).prop_map(Some),
            1 => Just(None),
        ]
    };
    prop_oneof![
        3 => (length(), proptest::bool::weighted(0.25), proptest::option::of(0usize..30))
            .prop_map(|(length, partial, body)| Create::Tus { length, partial, body }),
        2 => (3u8..=8, any::<bool>(), length(), 0usize..30)
            .prop_map(|(version, complete, length, body)| Create::Ietf { version, complete, length, body }),
    ]
    .boxed()
}

fn act() -> BoxedStrategy<Act> {
    let at = prop_oneof![
        6 => Just(At::Held),
        1 => (1u64..4).prop_map(At::HeldPlus),
        1 => (1u64..4).prop_map(At::HeldMinus),
        1 => Just(At::Zero),
        1 => Just(At::Huge),
    ];
    let length = || {
        prop_oneof![
            3 => Just(None),
            2 => Just(Some(0i64)),
            1 => Just(Some(-1i64)),
            1 => Just(Some(1i64)),
            1 => Just(Some(i64::MIN)),
        ]
    };
    prop_oneof![
        5 => (at.clone(), 0usize..30, length(), proptest::option::of(any::<bool>()))
            .prop_map(|(at, len, length, checksum)| Act::TusPatch { at, len, length, checksum }),
        3 => (at, 0usize..30, proptest::option::of(any::<bool>()), length())
            .prop_map(|(at, len, complete, length)| Act::IetfPatch { at, len, complete, length }),
        1 => any::<bool>().prop_map(|ietf| Act::Head { ietf }),
        1 => proptest::option::of(prop_oneof![
            Just("bytes=0-".to_owned()),
            Just("bytes=-1".to_owned()),
            Just("bytes=2-3,0-0".to_owned()),
        ])
        .prop_map(|range| Act::Get { range }),
        1 => any::<bool>().prop_map(|ietf| Act::Delete { ietf }),
        1 => (1usize..4).prop_map(|times| Act::Final { times }),
    ]
    .boxed()
}

/// Upload sessions as tus and IETF clients run them, mistakes included: a creation (tus or
/// IETF, known, deferred or partial, with or without a body), then appends at the held
/// offset or off it, length declarations that fit or not, checksums right or wrong,
/// completion flags, HEAD, downloads, termination, and finals assembled from the upload.
#[test]
fn upload_sessions_never_5xx() {
    let h = Harness::with(|a| a.expire_incomplete = Duration::from_secs(3600));
    let strategy = (create(), proptest::collection::vec(act(), 1..7));
    h.run(CASES, strategy, |h, (create, acts)| {
        let created = match create {
            Create::Tus {
                length,
                partial,
                body,
            } => {
                let mut r = tus_req("POST", "/files/");
                r = match length {
                    Some(l) => r.header("upload-length", l.to_string()),
                    None => r.header("upload-defer-length", "1"),
                };
                if partial {
                    r = r.header("upload-concat", "partial");
                }
                if let Some(n) = body {
                    r = r.header("content-type", OCTETS).body(pattern(n, 31));
                }
                r
            }
            Create::Ietf {
                version,
                complete,
                length,
                body,
            } => {
                let mut r = Req::new("POST", "/files/")
                    .header("upload-draft-interop-version", version.to_string())
                    .header("upload-complete", if complete { "?1" } else { "?0" })
                    .header("upload-incomplete", if complete { "?0" } else { "?1" })
                    .body(pattern(body, 32));
                if let Some(l) = length {
                    r = r.header("upload-length", l.to_string());
                }
                r
            }
        };
        let resp = h.check(&created)?;
        let Some(location) = resp.header("location") else {
            return Ok(());
        };
        let path = format!("/files/{}", location.rsplit('/').next().unwrap_or_default());
        let held = |h: &Harness| -> Result<u64, TestCaseError> {
            let r = h.check(&tus_req("HEAD", &path))?;
            Ok(r.header("upload-offset")
                .and_then(|o| o.parse().ok())
                .unwrap_or(0))
        };
        let offset = |h: &Harness, at: At| -> Result<String, TestCaseError> {
            Ok(match at {
                At::Held => held(h)?.to_string(),
                At::HeldPlus(d) => (held(h)? + d).to_string(),
                At::HeldMinus(d) => held(h)?.saturating_sub(d).to_string(),
                At::Zero => "0".to_owned(),
                At::Huge => "999999999999999".to_owned(),
            })
        };
        let declared = |start: &str, len: usize, rel: i64| -> String {
            let end = start.parse::<i64>().unwrap_or(0) + len as i64;
            if rel == i64::MIN {
                "0".to_owned()
            } else {
                (end + rel).max(0).to_string()
            }
        };
        for act in acts {
            let r = match act {
                Act::TusPatch {
                    at,
                    len,
                    length,
                    checksum,
                } => {
                    let start = offset(h, at)?;
                    let body = pattern(len, 33);
                    let mut r = tus_req("PATCH", &path)
                        .header("upload-offset", &start)
                        .header("content-type", OCTETS);
                    if let Some(rel) = length {
                        r = r.header("upload-length", declared(&start, len, rel));
                    }
                    if let Some(right) = checksum {
                        let digest =
                            digest(HashAlg::Sha1, if right { &body[..] } else { b"other" });
                        r = r.header(
                            "upload-checksum",
                            Checksum {
                                alg: HashAlg::Sha1,
                                digest,
                            }
                            .to_string(),
                        );
                    }
                    r.body(body)
                }
                Act::IetfPatch {
                    at,
                    len,
                    complete,
                    length,
                } => {
                    let start = offset(h, at)?;
                    let mut r = Req::new("PATCH", &path)
                        .header("upload-draft-interop-version", "6")
                        .header("upload-offset", &start)
                        .header("content-type", PARTIAL_UPLOAD)
                        .body(pattern(len, 34));
                    if let Some(c) = complete {
                        r = r.header("upload-complete", if c { "?1" } else { "?0" });
                    }
                    if let Some(rel) = length {
                        r = r.header("upload-length", declared(&start, len, rel));
                    }
                    r
                }
                Act::Head { ietf: false } => tus_req("HEAD", &path),
                Act::Head { ietf: true } => {
                    Req::new("HEAD", &path).header("upload-draft-interop-version", "6")
                }
                Act::Get { range } => {
                    let mut r = Req::new("GET", &path);
                    if let Some(range) = range {
                        r = r.header("range", range);
                    }
                    r
                }
                Act::Delete { ietf: false } => tus_req("DELETE", &path),
                Act::Delete { ietf: true } => {
                    Req::new("DELETE", &path).header("upload-draft-interop-version", "6")
                }
                Act::Final { times } => tus_req("POST", "/files/").header(
                    "upload-concat",
                    format!("final;{}", vec![path.clone(); times].join(" ")),
                ),
            };
            let resp = h.check(&r)?;
            // A final that was created is asked about and downloaded too.
            if let (Some(l), true) = (resp.header("location"), r.path == "/files/") {
                let fin = format!("/files/{}", l.rsplit('/').next().unwrap_or_default());
                h.check(&tus_req("HEAD", &fin))?;
                h.check(&Req::new("GET", &fin))?;
            }
        }
        Ok(())
    });
}

/// The IETF resumable-upload front: `Upload-Draft-Interop-Version` 3–8 and junk, with
/// arbitrary `Upload-Complete`, `Upload-Incomplete`, `Upload-Offset`, `Upload-Length`,
/// `Content-Type`, `Content-Disposition`, `Upload-Metadata`.
#[test]
fn ietf_requests_never_5xx() {
    // Expiry on, so answers carry the lifetime in `Upload-Limit`.
    let h = Harness::with(|a| a.expire_incomplete = Duration::from_secs(3600));
    let sf_bool = |absent| {
        weighted(
            strings(&["?0", "?1", "?1;x=2", "?2", "true", "1"]),
            absent,
            6,
            1,
        )
    };
    let strategy = ((
        method(&["POST", "HEAD", "PATCH", "DELETE", "OPTIONS"]),
        files_path(&h.fx, &["ietf", "done", "receiving"]),
        headers(vec![
            (
                "upload-draft-interop-version",
                prop_oneof![
                    6 => Just(Some(b"6".to_vec())),
                    3 => proptest::sample::select(strings(&["3", "4", "5", "7", "8", "2", "9", "256", "-6", " 6 "]))
                        .prop_map(|v| Some(v.into_bytes())),
                    1 => header_bytes().prop_map(Some),
                ]
                .boxed(),
            ),
            ("upload-complete", sf_bool(2)),
            ("upload-incomplete", sf_bool(8)),
            (
                "upload-offset",
                prop_oneof![2 => weighted(strings(&["0", "10"]), 3, 4, 0), 1 => numeric_field()].boxed(),
            ),
            (
                "upload-length",
                prop_oneof![2 => weighted(strings(&["100", "10", "0"]), 4, 3, 0), 1 => numeric_field()].boxed(),
            ),
            (
                "content-type",
                field(strings(&[PARTIAL_UPLOAD, "Application/Partial-Upload; x=1", OCTETS, "image/png"])),
            ),
            (
                "content-disposition",
                weighted(strings(&[
                    "attachment; filename=\"a.png\"",
                    "inline; filename*=UTF-8''%E6%8A%A5%E5%91%8A.pdf",
                    "inline; filename*=UTF-8''%ff%fe.pdf",
                    "inline; filename*=latin1''%E9.txt",
                    "inline; filename=\"../../etc/passwd\"",
                    "inline; filename=\"\\\"\"",
                    "inline; filename*=UTF-8'",
                    "attachment; filename=\".\"",
                    "attachment; filename=x.",
                    ";;;=;=",
                ]), 4, 4, 2),
            ),
            ("upload-metadata", rare(strings(&["filename YS50eHQ=", "filetype dGV4dC9wbGFpbg==", "x"]))),
            ("tus-resumable", rare(strings(&["1.0.0"]))),
        ]),
        prop_oneof![body(), Just(pattern(90, 2))],
        any::<bool>(),
    ), proptest::bool::weighted(0.8))
        .prop_map(|((method, path, headers, body, cl), create)| {
            // Creation is what POST is for: send most of them to the collection.
            let path = if method == "POST" && create { "/files/".to_owned() } else { path };
            Req {
                method,
                path,
                headers,
                body,
                content_length: cl,
                cut: None,
            }
        });
    let strategy = with_cuts(strategy);
    h.run(CASES, strategy, |h, r| h.check(&r).map(drop));
}

/// Downloads of finished files (`GET|HEAD /files/<id>`, `GET|HEAD /upload/<fileId><ext>`)
/// with arbitrary `Range`, `If-Range`, `If-None-Match`, `If-Match`, `If-Modified-Since`,
/// `If-Unmodified-Since`, repeated or not. Besides "no 5xx": the body has the announced
/// length, and a single-range 206 carries exactly the bytes its `Content-Range` names.
#[test]
fn downloads_never_5xx() {
    let h = Harness::new();
    let fx = h.fx.clone();
    let weak = format!("W/{}", fx.etag);
    let dates = vec![
        fx.last_modified.clone(),
        "Thu, 01 Jan 1970 00:00:00 GMT".to_owned(),
        "Fri, 31 Dec 9999 23:59:59 GMT".to_owned(),
        "Sunday, 06-Nov-94 08:49:37 GMT".to_owned(),
        "Sun Nov  6 08:49:37 1994".to_owned(),
        "Mon, 32 Feb 2024 25:61:61 GMT".to_owned(),
        "Sat, 01 Jan 0000 00:00:00 GMT".to_owned(),
    ];
    let mut validators = vec![
        fx.etag.clone(),
        weak.clone(),
        "*".to_owned(),
        "\"x\"".to_owned(),
    ];
    validators.extend(dates.iter().cloned());
    let paths = vec![
        format!("/files/{}", fx.tus_done),
        format!("/files/{}", fx.tus_done),
        format!("/files/{}", fx.tus_done),
        format!("/files/{}", fx.tus_done),
        format!("/files/{}", fx.empty),
        format!("/upload/{}.txt", fx.done_file_id),
        format!("/upload/{}.txt", fx.done_file_id),
        format!("/upload/{}.TXT", fx.done_file_id.to_ascii_uppercase()),
        format!("/upload/{}", fx.done_file_id),
        format!("/upload/{}.txt.gz", fx.done_file_id),
        format!("/files/{}", fx.tus_receiving),
        "/upload/..%2f..%2fetc%2fpasswd".to_owned(),
        "/upload/.txt".to_owned(),
    ];
    let len = fx.tus_done_data.len() as u64;
    let range = |absent| {
        prop_oneof![
            absent => Just(None),
            6 => range_value(len).prop_map(|r| Some(r.into_bytes())),
            1 => header_bytes().prop_map(Some),
        ]
    };
    let strategy = (
        proptest::sample::select(vec!["GET", "GET", "GET", "HEAD"]),
        proptest::sample::select(paths),
        range(2),
        // A second `Range` field line makes the header invalid: now and then.
        range(40),
        headers(vec![
            ("if-range", weighted(validators.clone(), 8, 4, 1)),
            (
                "if-none-match",
                rare(vec![
                    fx.etag.clone(),
                    weak.clone(),
                    "*".to_owned(),
                    format!("\"a\", {}", fx.etag),
                    "W/".to_owned(),
                ]),
            ),
            (
                "if-match",
                rare(vec![
                    fx.etag.clone(),
                    weak,
                    "*".to_owned(),
                    "\"nope\"".to_owned(),
                ]),
            ),
            ("if-modified-since", rare(dates.clone())),
            ("if-unmodified-since", rare(dates)),
            ("tus-resumable", rare(strings(&["1.0.0"]))),
        ]),
    )
        .prop_map(|(m, path, r1, r2, mut headers)| {
            // Range once, twice, or not at all.
            for r in [r1, r2].into_iter().flatten() {
                headers.push(("range".to_owned(), r));
            }
            Req {
                method: m.to_owned(),
                path,
                headers,
                body: Vec::new(),
                content_length: false,
                cut: None,
            }
        });
    h.run(CASES, strategy, |h, r| {
        let resp = h.check(&r)?;
        if r.method == "GET" {
            if let Some(n) = resp.header("content-length") {
                prop_assert_eq!(n.parse::<usize>().ok(), Some(resp.body.len()));
            }
            let data = if r.path.contains(&h.fx.tus_done) {
                Some(&h.fx.tus_done_data)
            } else if r.path.ends_with(".txt") || r.path.ends_with(".TXT") {
                Some(&h.fx.done_data)
            } else {
                None
            };
            let single = !resp
                .header("content-type")
                .is_some_and(|t| t.starts_with("multipart/"));
            match (resp.status, data) {
                (StatusCode::OK, Some(data)) => prop_assert_eq!(&resp.body[..], &data[..]),
                (StatusCode::PARTIAL_CONTENT, Some(data)) if single => {
                    let cr = parse_content_range(resp.header("content-range").unwrap_or(""))
                        .map_err(|e| {
                            TestCaseError::fail(format!("206 with a bad Content-Range: {e}"))
                        })?;
                    prop_assert_eq!(cr.total, Some(data.len() as u64));
                    prop_assert!(cr.last < data.len() as u64);
                    let want = &data[cr.first as usize..=cr.last as usize];
                    prop_assert_eq!(&resp.body[..], want);
                }
                _ => {}
            }
        }
        Ok(())
    });
}

/// With a bearer token configured: arbitrary `Authorization` values on the upload routes
/// never get past authentication (401) and never cause a 5xx.
#[test]
fn authorization_never_5xx_and_never_lets_a_wrong_token_in() {
    const TOKEN: &str = "s3cret-token";
    let h = Harness::with(|a| a.auth_token = Some(TOKEN.to_owned()));
    let strategy = (
        proptest::sample::select(vec![
            ("POST", "/api/upload/handshake", true),
            ("GET", "/api/upload/status", true),
            ("POST", "/api/upload", true),
            ("POST", "/files/", true),
            ("PATCH", "/files/00000000000000000000000000000000", true),
            ("GET", "/files/00000000000000000000000000000000", false),
            ("OPTIONS", "/files/", false),
            ("GET", "/healthz", false),
        ]),
        prop_oneof![
            1 => Just(None),
            3 => proptest::sample::select(vec![
                format!("Bearer {TOKEN}"),
                format!("bearer {TOKEN}"),
                format!("Bearer  {TOKEN} "),
                format!("Bearer {TOKEN}x"),
                format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
                "Bearer ".to_owned(),
                "Bearer".to_owned(),
                "Basic czNjcmV0LXRva2Vu".to_owned(),
                format!("Bearer {}", "a".repeat(10_000)),
                "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.".to_owned(),
            ])
            .prop_map(|v| Some(v.into_bytes())),
            3 => header_bytes().prop_map(Some),
        ],
        any::<bool>(),
    )
        .prop_map(|((m, p, protected), auth, tus)| {
            let mut r = Req::new(m, p);
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            if tus {
                r = r
                    .header("tus-resumable", "1.0.0")
                    .header("upload-length", "1");
            }
            r = r.header("x-file-id", "f").header("x-start-byte", "0");
            (r, protected)
        });
    h.run(CASES, strategy, |h, (r, protected)| {
        let resp = h.check(&r)?;
        // RFC 7235 §2.1 as the server documents it: the scheme `Bearer` in any case, one or
        // more spaces, the token (surrounding whitespace ignored).
        let right = r
            .headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .and_then(|(_, v)| v.split_at_checked(7))
            .is_some_and(|(scheme, token)| {
                scheme.eq_ignore_ascii_case(b"bearer ") && token.trim_ascii() == TOKEN.as_bytes()
            });
        if protected && !right {
            prop_assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text());
        }
        Ok(())
    });
}

/// Everything at once: any route of the app, any method, any of the headers any front
/// reads, any body.
#[test]
fn any_request_never_5xx() {
    let h = Harness::new();
    let fx = h.fx.clone();
    let mut paths = strings(&[
        "/",
        "/api/upload/handshake",
        "/api/upload",
        "/upload",
        "/api/upload/status",
        "/status",
        "/files",
        "/files/",
        "/healthz",
        "/metrics",
        "/sdk/",
        "/sdk/ferry.js",
        "/nope",
        "//files//",
        "/files/?a=%zz",
        "/app/index.html",
        "/app/../../etc/passwd",
        "/sdk/.hidden",
        "/sdk/a//b",
        "/upload/",
        "/upload/%00",
    ]);
    paths.extend(fx.upload_ids().into_iter().map(|id| format!("/files/{id}")));
    paths.push(format!("/upload/{}.txt", fx.done_file_id));
    let any_field = || field(Vec::new());
    let names = [
        "upload-offset",
        "upload-length",
        "upload-metadata",
        "upload-checksum",
        "upload-concat",
        "upload-complete",
        "upload-incomplete",
        "upload-defer-length",
        "upload-draft-interop-version",
        "tus-resumable",
        "x-http-method-override",
        "x-file-id",
        "x-start-byte",
        "x-file-size",
        "content-range",
        "content-type",
        "content-disposition",
        "range",
        "if-range",
        "if-none-match",
        "authorization",
        "host",
        "x-forwarded-proto",
        "origin",
    ];
    let strategy = (
        method(&["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"]),
        prop_oneof![
            5 => proptest::sample::select(paths),
            1 => "/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,40}",
        ],
        headers(names.iter().map(|n| (*n, any_field())).collect()),
        body(),
        any::<bool>(),
    )
        .prop_map(|(method, path, headers, body, cl)| Req {
            method,
            path,
            headers,
            body,
            content_length: cl,
            cut: None,
        });
    let strategy = with_cuts(strategy);
    h.run(CASES, strategy, |h, r| h.check(&r).map(drop));
}

// ---------------------------------------------------------------------------------------
// Targeted edge cases
// ---------------------------------------------------------------------------------------

/// Sends `r` and asserts the exact status (and, implicitly, no panic).
fn expect(h: &Harness, r: Req, want: u16) -> Resp {
    let resp = h.send(&r).unwrap_or_else(|e| panic!("{r:?}\n=> {e}"));
    assert_eq!(resp.status.as_u16(), want, "{r:?}\n=> {}", resp.text());
    resp
}

/// Sends `r` and asserts only that it was answered below 500.
fn expect_any(h: &Harness, r: Req) -> Resp {
    let resp = h.send(&r).unwrap_or_else(|e| panic!("{r:?}\n=> {e}"));
    assert!(
        !resp.status.is_server_error(),
        "{r:?}\n=> {} {}",
        resp.status,
        resp.text()
    );
    resp
}

/// Sends `r` and asserts a 4xx (the exact one depends on which check comes first).
fn expect_4xx(h: &Harness, r: Req) -> Resp {
    let resp = h.send(&r).unwrap_or_else(|e| panic!("{r:?}\n=> {e}"));
    assert!(
        resp.status.is_client_error(),
        "{r:?}\n=> {} {}",
        resp.status,
        resp.text()
    );
    resp
}

fn tus_req(method: &str, path: impl Into<String>) -> Req {
    Req::new(method, path).header("tus-resumable", "1.0.0")
}

#[test]
fn numbers_past_the_limits_are_refused_with_400() {
    let h = Harness::new();
    let fx = h.fx.clone();
    let receiving = format!("/files/{}", fx.tus_receiving);
    for n in [
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775808",
        "-1",
        "-0",
        "+1",
        "1e3",
        "",
    ] {
        // tus creation and append.
        expect(
            &h,
            tus_req("POST", "/files/").header("upload-length", n),
            400,
        );
        expect(
            &h,
            tus_req("PATCH", &receiving)
                .header("upload-offset", n)
                .header("content-type", OCTETS)
                .body(b"x".to_vec()),
            400,
        );
        expect(
            &h,
            tus_req("PATCH", &receiving)
                .header("upload-offset", "10")
                .header("upload-length", n)
                .header("content-type", OCTETS),
            400,
        );
        // IETF creation and append.
        expect(
            &h,
            Req::new("POST", "/files/")
                .header("upload-draft-interop-version", "6")
                .header("upload-complete", "?0")
                .header("upload-length", n),
            400,
        );
        expect(
            &h,
            Req::new("PATCH", format!("/files/{}", fx.ietf_receiving))
                .header("upload-draft-interop-version", "6")
                .header("upload-offset", n)
                .header("content-type", PARTIAL_UPLOAD),
            400,
        );
        // Byte-offset start and size.
        for name in ["x-start-byte", "x-file-size"] {
            let mut r = Req::new("POST", "/api/upload")
                .header("x-file-id", &fx.offset_client)
                .header(name, n);
            if name == "x-file-size" {
                r = r.header("x-start-byte", "10");
            }
            expect(&h, r, 400);
        }
    }
    // The largest value each front accepts is still refused by the size limit, not a crash.
    expect(
        &h,
        tus_req("POST", "/files/").header("upload-length", "9223372036854775807"),
        413,
    );
    expect_4xx(
        &h,
        Req::new("POST", "/api/upload")
            .header("x-file-id", "big")
            .header("x-start-byte", "9223372036854775807")
            .body(b"x".to_vec()),
    );
    expect(
        &h,
        Req::new("POST", "/files/")
            .header("upload-draft-interop-version", "6")
            .header("upload-complete", "?0")
            .header("upload-length", "999999999999999"),
        413,
    );
    expect_4xx(
        &h,
        tus_req("PATCH", &receiving)
            .header("upload-offset", "9223372036854775807")
            .header("content-type", OCTETS)
            .body(b"x".to_vec()),
    );
}

#[test]
fn content_range_extremes_on_the_byte_offset_dialect() {
    let h = Harness::new();
    let post = |cr: &str| {
        Req::new("POST", "/api/upload")
            .header("x-file-id", "extremes")
            .header("content-range", cr)
            .body(b"x".to_vec())
    };
    // Totals past the limit: 413 before anything is stored.
    expect(&h, post("bytes 0-0/18446744073709551615"), 413);
    expect_4xx(
        &h,
        post("bytes 0-18446744073709551614/18446744073709551615"),
    );
    // Numbers that do not fit in 64 bits, reversed ranges, past the total.
    expect(&h, post("bytes 0-0/18446744073709551616"), 400);
    expect(&h, post("bytes 5-4/10"), 400);
    expect(&h, post("bytes 0-10/10"), 400);
    // Open total with ranges ending at the top of u64: a refusal, not arithmetic overflow
    // (`last - first + 1` in offset.rs).
    for cr in [
        "bytes 0-18446744073709551615/*",
        "bytes 1-18446744073709551615/*",
        "bytes 18446744073709551615-18446744073709551615/*",
    ] {
        expect_4xx(&h, post(cr));
        let mut chunked = post(cr);
        chunked.content_length = false;
        expect_4xx(&h, chunked);
    }
}

#[test]
fn writes_at_the_far_end_of_the_size_limit() {
    // One byte at the last offset the default limit (1 TiB) allows: a sparse file, or a
    // refusal, never a storage error surfacing as a 5xx.
    let h = Harness::new();
    let last = (1u64 << 40) - 1;
    expect_any(
        &h,
        Req::new("POST", "/api/upload")
            .header("x-file-id", "far-end")
            .header("content-range", format!("bytes {last}-{last}/{}", last + 1))
            .body(b"x".to_vec()),
    );
    expect_any(
        &h,
        Req::new("POST", "/api/upload")
            .header("x-file-id", "far-end-open")
            .header("content-range", format!("bytes {last}-{last}/*"))
            .body(b"x".to_vec()),
    );
    // The chunk dialect: two chunks of half a TiB, the second one sent first.
    let half = 1u64 << 39;
    let chunk = b"tail".to_vec();
    let second = format!("{}1", md5_hex(&chunk));
    let file_id = "abcdef0123456789abcdef0123456789";
    h.handshake(serde_json::json!({
        "fileId": file_id,
        "chunkIds": [format!("{}0", "0".repeat(32)), second],
        "chunkSize": half,
        "size": half + chunk.len() as u64,
    }));
    let resp = h
        .send(&{
            let boundary = "b";
            let body = format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"fileId\"\r\n\r\n{file_id}\r\n\
                 --{boundary}\r\nContent-Disposition: form-data; name=\"chunkId\"\r\n\r\n{second}\r\n\
                 --{boundary}\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\ntail\r\n--{boundary}--\r\n"
            );
            Req::new("POST", "/api/upload")
                .header("content-type", format!("multipart/form-data; boundary={boundary}"))
                .body(body)
        })
        .unwrap();
    assert!(
        !resp.status.is_server_error(),
        "{} {}",
        resp.status,
        resp.text()
    );
}

#[test]
fn range_edge_cases_on_downloads() {
    let h = Harness::new();
    let fx = h.fx.clone();
    let file = format!("/files/{}", fx.tus_done);
    let len = fx.tus_done_data.len();
    let get = |range: &str| Req::new("GET", &file).header("range", range);
    let r = expect(&h, get("bytes=-0"), 416);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );
    expect(&h, get("bytes=-0,-0"), 416);
    expect(&h, get(&format!("bytes={len}-")), 416);
    expect(&h, get("bytes=18446744073709551615-"), 416);
    expect(&h, get("bytes=0-18446744073709551615"), 206);
    expect(&h, get("bytes=-18446744073709551615"), 206);
    // Numbers past u64::MAX: ignored (200) or read as past any end, never a crash.
    let r = expect_any(&h, get("bytes=18446744073709551616-"));
    assert!(matches!(r.status.as_u16(), 200 | 416), "{}", r.status);
    let r = expect_any(&h, get("bytes=-18446744073709551616"));
    assert!(matches!(r.status.as_u16(), 200 | 206), "{}", r.status);
    expect(
        &h,
        get("bytes=18446744073709551617-18446744073709551616"),
        200,
    );
    expect(&h, get("bytes=5-1"), 200);
    expect(&h, get("bytes="), 200);
    let many: Vec<String> = (0..10_000).map(|i| format!("{i}-{i}")).collect();
    expect(&h, get(&format!("bytes={}", many.join(","))), 200);
    // The empty file: nothing is satisfiable, a suffix gets the (empty) whole.
    let empty = format!("/files/{}", fx.empty);
    expect(&h, Req::new("GET", &empty).header("range", "bytes=0-"), 416);
    expect(&h, Req::new("GET", &empty).header("range", "bytes=-0"), 416);
    expect(&h, Req::new("GET", &empty).header("range", "bytes=-5"), 200);
    // If-Range with the validators: a match honours the range, anything else is 200.
    let etag = fx.etag.clone();
    for (if_range, want) in [
        (etag.as_str(), 206),
        (&format!("W/{etag}"), 200),
        (fx.last_modified.as_str(), 206),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 200),
        ("garbage", 200),
    ] {
        expect(&h, get("bytes=0-0").header("if-range", if_range), want);
    }
    expect(
        &h,
        Req::new("GET", &file).header("if-none-match", &etag),
        304,
    );
    expect(&h, Req::new("GET", &file).header("if-none-match", "*"), 304);
    expect(
        &h,
        Req::new("GET", &file).header("if-match", "\"other\""),
        412,
    );
}

#[test]
fn handshake_edge_cases() {
    let h = Harness::new();
    let hs = |body: Vec<u8>| {
        Req::new("POST", "/api/upload/handshake")
            .header("content-type", "application/json")
            .body(body)
    };
    let json = |v: serde_json::Value| hs(serde_json::to_vec(&v).unwrap());
    let some_id = "0123456789abcdef0123456789abcdef";
    // Negative and fractional numbers are not the expected JSON: 400.
    for bad in [
        serde_json::json!({"fileId": some_id, "chunkIds": [], "size": -1}),
        serde_json::json!({"fileId": some_id, "chunkIds": [], "chunkSize": -1}),
        serde_json::json!({"fileId": some_id, "chunkIds": [], "size": 1.5}),
        serde_json::json!({"fileId": some_id, "chunkIds": "abc"}),
    ] {
        expect(&h, json(bad), 400);
    }
    expect(&h, hs(b"{\"size\": 18446744073709551616}".to_vec()), 400);
    // A declared size of u64::MAX is over the limit: 413 in the envelope.
    expect(
        &h,
        json(serde_json::json!({"fileId": some_id, "chunkIds": [some_id], "size": u64::MAX})),
        413,
    );
    expect(
        &h,
        json(
            serde_json::json!({"fileId": some_id, "chunkIds": [some_id, some_id], "chunkSize": u64::MAX}),
        ),
        200,
    );
    // Deeply nested JSON: serde_json's recursion limit, a 400, no stack overflow.
    for depth in [1_000, 100_000] {
        expect(
            &h,
            hs(format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()),
            400,
        );
        expect(&h, hs(r#"{"chunkIds":"#.repeat(depth).into_bytes()), 400);
    }
    // The empty chunk-id list: an empty file. With the MD5 of nothing it is finished at
    // once; with any other fileId the digest cannot match, which is the client's error.
    let empty_md5 = md5_hex(b"");
    let r = expect(
        &h,
        json(serde_json::json!({"fileId": empty_md5, "chunkIds": []})),
        200,
    );
    assert!(
        r.text().contains(&format!("/upload/{empty_md5}")),
        "{}",
        r.text()
    );
    expect_4xx(
        &h,
        json(serde_json::json!({"fileId": "1".repeat(32), "chunkIds": []})),
    );
    expect_4xx(
        &h,
        json(serde_json::json!({"fileId": "2".repeat(32), "chunkIds": [], "size": 0})),
    );
    // 10,000 chunk ids: accepted, every one reported missing.
    let ids: Vec<String> = (0..10_000).map(|i| format!("{some_id}{i}")).collect();
    let r = expect(
        &h,
        json(serde_json::json!({"fileId": "f".repeat(32), "chunkIds": ids, "chunkSize": 1024})),
        200,
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["data"].as_array().map(Vec::len), Some(10_000));
}

/// A second handshake may re-declare the layout of an unfinished file. When the new layout
/// does not fit the length the first one declared, the next chunk must be refused, not crash
/// the handler (found by `chunk_dialect_sessions_never_5xx`).
#[test]
fn a_redeclared_layout_that_contradicts_the_length_is_no_crash() {
    let h = Harness::new();
    let chunks = [pattern(10, 21), pattern(10, 22), pattern(5, 23)];
    let ids: Vec<String> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{}{i}", md5_hex(c)))
        .collect();
    let hs = |v: serde_json::Value| {
        Req::new("POST", "/api/upload/handshake")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&v).unwrap())
    };
    // 1. Length 5 from the first handshake, then three chunks of 10 bytes: the last chunk's
    //    place is 20..5.
    let f1 = "1".repeat(32);
    expect(
        &h,
        hs(serde_json::json!({"fileId": f1, "chunkIds": [ids[0], ids[1]], "size": 5})),
        200,
    );
    // The contradicting layout is refused (three chunks of 10 bytes cannot make 5 bytes).
    expect(
        &h,
        hs(
            serde_json::json!({"fileId": f1, "chunkIds": [ids[2], ids[1], ids[0]], "chunkSize": 10}),
        ),
        400,
    );
    let first = h.send(&chunk_req(&f1, &ids[0], &chunks[0]));
    // 2. No chunk ids at all sets the length to 0; then two chunks of 10 bytes again: the
    //    second chunk's place is 10..0.
    let f2 = "2".repeat(32);
    let two = serde_json::json!({"fileId": f2, "chunkIds": [ids[0], ids[1]], "chunkSize": 10});
    expect(&h, hs(two.clone()), 200);
    expect(
        &h,
        hs(serde_json::json!({"fileId": f2, "chunkIds": []})),
        200,
    );
    // Two chunks of 10 bytes cannot make the empty file declared since: refused.
    expect(&h, hs(two), 400);
    let second = h.send(&chunk_req(&f2, &ids[1], &chunks[1]));
    for (case, r) in [
        ("size 5, then 3 chunks of 10", first),
        ("[], then 2 chunks of 10", second),
    ] {
        match r {
            Ok(r) => assert!(
                !r.status.is_server_error(),
                "{case}: {} {}",
                r.status,
                r.text()
            ),
            Err(e) => panic!("{case}: the chunk upload => {e}"),
        }
    }
}

#[test]
fn concat_and_metadata_edge_cases() {
    let h = Harness::new();
    let fx = h.fx.clone();
    // A final naming an upload that is not a partial, an unfinished one, itself-like ids.
    for concat in [
        format!("final;/files/{}", fx.tus_done),
        format!(
            "final;/files/{} /files/{}",
            fx.tus_receiving, fx.tus_receiving
        ),
        "final;/files/00000000000000000000000000000000".to_owned(),
        format!(
            "final;{}",
            "/files/00000000000000000000000000000000 ".repeat(10_000)
        ),
        "final;".to_owned(),
    ] {
        let resp = h
            .send(&tus_req("POST", "/files/").header("upload-concat", &concat))
            .unwrap_or_else(|e| panic!("Upload-Concat {concat:.80}: {e}"));
        assert!(
            resp.status.is_client_error(),
            "Upload-Concat {concat:.80}: {} {}",
            resp.status,
            resp.text()
        );
    }
    // Partials as large as allowed: their final would be twice the limit. Refused or
    // accepted, never a 5xx; and the same partial twice.
    let max = (1u64 << 40).to_string();
    let mut parts = Vec::new();
    for _ in 0..2 {
        let r = expect(
            &h,
            tus_req("POST", "/files/")
                .header("upload-concat", "partial")
                .header("upload-length", &max),
            201,
        );
        parts.push(id_of(r.header("location")));
    }
    for concat in [
        format!("final;/files/{} /files/{}", parts[0], parts[1]),
        format!("final;/files/{} /files/{}", parts[0], parts[0]),
        format!("final;{}", format!("/files/{} ", parts[0]).repeat(1000)),
    ] {
        let r = expect_any(
            &h,
            tus_req("POST", "/files/").header("upload-concat", &concat),
        );
        if r.status == StatusCode::CREATED {
            expect_any(
                &h,
                tus_req("HEAD", format!("/files/{}", id_of(r.header("location")))),
            );
        }
    }
    // Metadata over the limit, and a type that tries to smuggle a header.
    expect(
        &h,
        tus_req("POST", "/files/")
            .header("upload-length", "1")
            .header("upload-metadata", format!("k {}", "QUFB".repeat(5000))),
        400,
    );
    let r = expect(
        &h,
        tus_req("POST", "/files/")
            .header("upload-length", "1")
            // filetype "text/html\r\nX-Injected: 1"
            .header(
                "upload-metadata",
                "filetype dGV4dC9odG1sDQpYLUluamVjdGVkOiAx",
            )
            .header("content-type", OCTETS)
            .body(b"x".to_vec()),
        201,
    );
    let id = id_of(r.header("location"));
    let r = expect(&h, Req::new("GET", format!("/files/{id}")), 200);
    assert!(r.headers.get("x-injected").is_none());
}
