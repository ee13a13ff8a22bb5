//! HTTPS and HTTP/2 on ferry's own listener: TLS with ALPN `h2` and `http/1.1`, h2c with
//! prior knowledge on the plain listener, certificate reload on SIGHUP, start-up errors for
//! unusable `--tls-cert` / `--tls-key`, and the transport's guards (431, framing, connection
//! cap, body idle timeout, idle HTTP/2 connections, shutdown) on the new paths.
//!
//! Certificates are made per test with the `openssl` command line.

mod common;

use common::{TestServer, test_bytes};
use reqwest::{Certificate, Client, Method, Version};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};

const OCTETS: &str = "application/offset+octet-stream";

// ---------------------------------------------------------------------------
// Certificates and servers
// ---------------------------------------------------------------------------

/// A self-signed P-256 certificate for `localhost` and `127.0.0.1`, written to
/// `dir/cert.pem` and `dir/key.pem` (replacing what is there).
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
}

impl CertFiles {
    fn paths(dir: &Path) -> CertFiles {
        CertFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    fn make(dir: &Path, cn: &str) -> CertFiles {
        let files = CertFiles::paths(dir);
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={cn}"),
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                // Not a CA: rustls clients refuse a CA certificate as a server's own.
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-keyout",
            ])
            .arg(&files.key)
            .arg("-out")
            .arg(&files.cert)
            .output()
            .expect("running openssl (is it installed?)");
        assert!(
            out.status.success(),
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        files
    }

    fn pem(&self) -> Vec<u8> {
        std::fs::read(&self.cert).unwrap()
    }
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A server on `127.0.0.1:0` serving HTTPS with `files`.
async fn tls_server(
    files: &CertFiles,
    adjust: impl FnOnce(&mut ferry_server::config::ServeArgs),
) -> (TestServer, String) {
    let (cert, key) = (files.cert.clone(), files.key.clone());
    let srv = TestServer::start_with(move |a| {
        a.tls_cert = Some(cert);
        a.tls_key = Some(key);
        adjust(a);
    })
    .await;
    let base = srv.base.replace("http://", "https://");
    (srv, base)
}

/// A client trusting only the certificate `pem`.
fn client_trusting(pem: &[u8]) -> reqwest::ClientBuilder {
    Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(Certificate::from_pem(pem).unwrap())
        .timeout(Duration::from_secs(60))
}

// ---------------------------------------------------------------------------
// One tus upload, resumed, then downloaded whole and by range
// ---------------------------------------------------------------------------

/// Creates a tus upload of `data` on `base`, sends it in two PATCHes (the second streamed,
/// without Content-Length), checks the offset with HEAD, downloads it whole and by range.
/// Every answer must come over `version`; every URL handed out must be under `base`.
async fn tus_round_trip(client: &Client, base: &str, version: Version, data: &[u8]) {
    let r = client
        .post(format!("{base}/files/"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", data.len().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), version);
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{base}/files/")),
        "Location {location} is not under {base}/files/"
    );

    let half = data.len() / 2;
    let r = client
        .patch(&location)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", "0")
        .header("content-type", OCTETS)
        .body(data[..half].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), version);
    assert_eq!(r.status(), 204, "{:?}", r.text().await);
    assert_eq!(r.headers()["upload-offset"], half.to_string().as_str());

    let r = client
        .head(&location)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["upload-offset"], half.to_string().as_str());

    // The rest as a stream: no Content-Length (HTTP/1.1 sends it chunked).
    let rest = bytes::Bytes::copy_from_slice(&data[half..]);
    let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = rest
        .chunks(256 * 1024)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let r = client
        .patch(&location)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", half.to_string())
        .header("content-type", OCTETS)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            pieces,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{:?}", r.text().await);
    assert_eq!(
        r.headers()["upload-offset"],
        data.len().to_string().as_str()
    );

    let r = client
        .head(&location)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["upload-offset"],
        data.len().to_string().as_str()
    );

    let r = client.get(&location).send().await.unwrap();
    assert_eq!(r.version(), version);
    assert_eq!(r.status(), 200);
    let got = r.bytes().await.unwrap();
    assert!(got[..] == data[..], "the download differs from the upload");

    let r = client
        .get(&location)
        .header("range", "bytes=1000-70999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), version);
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 1000-70999/{}", data.len()).as_str()
    );
    let got = r.bytes().await.unwrap();
    assert!(got[..] == data[1000..71000], "the range differs");
}

// ---------------------------------------------------------------------------
// Protocols
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_alpn_picks_h2_and_a_tus_upload_downloads_whole_and_by_range() {
    let dir = tempfile::tempdir().unwrap();
    let files = CertFiles::make(dir.path(), "ferry-a");
    let (srv, base) = tls_server(&files, |_| {}).await;
    let client = client_trusting(&files.pem())
        .https_only(true)
        .build()
        .unwrap();

    let r = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.version(), Version::HTTP_2);
    assert_eq!(r.status(), 200);

    let data = test_bytes(5 * 1024 * 1024 + 123, 1);
    tus_round_trip(&client, &base, Version::HTTP_2, &data).await;

    // IETF resumable upload: its Location is https too.
    let r = client
        .post(format!("{base}/files/"))
        .header("upload-draft-interop-version", "6")
        .header("upload-complete", "?1")
        .header("content-type", "application/octet-stream")
        .body(data[..4096].to_vec())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let location = r.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with(&format!("{base}/files/")),
        "{location}"
    );

    // Plain HTTP on the TLS port is no way in.
    let plain = Client::new()
        .get(format!("{}/healthz", srv.base))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_http1_only_clients_get_http_1_1_and_the_same_upload_works() {
    let dir = tempfile::tempdir().unwrap();
    let files = CertFiles::make(dir.path(), "ferry-a");
    let (srv, base) = tls_server(&files, |_| {}).await;
    let client = client_trusting(&files.pem()).http1_only().build().unwrap();
    let r = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.version(), Version::HTTP_11);
    let data = test_bytes(3 * 1024 * 1024 + 5, 2);
    tus_round_trip(&client, &base, Version::HTTP_11, &data).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_with_prior_knowledge_works_on_the_plain_listener_beside_http1() {
    let srv = TestServer::start().await;
    let h2c = Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();

    let data = test_bytes(4 * 1024 * 1024 + 77, 3);
    let id = "h2c.bin-4194381-1";
    let r = h2c
        .post(srv.url("/api/upload"))
        .header("content-type", "application/octet-stream")
        .header("x-file-id", id)
        .header("x-start-byte", "0")
        .header("x-file-size", data.len().to_string())
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let j: Value = r.json().await.unwrap();
    assert_eq!(j["complete"], true, "{j}");
    // The URL is built from `:authority` (HTTP/2 sends no Host).
    let url = j["url"].as_str().unwrap();
    assert!(url.starts_with(&srv.url("/files/")), "{url}");

    let r = h2c.get(url).send().await.unwrap();
    assert_eq!(r.version(), Version::HTTP_2);
    assert!(r.bytes().await.unwrap()[..] == data[..]);

    let r = h2c
        .get(srv.url("/api/upload/status"))
        .header("x-file-id", id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap().trim(), data.len().to_string());

    // Both dialects of the chunk protocol's neighbour, tus, over h2c as well.
    tus_round_trip(&h2c, &srv.base, Version::HTTP_2, &data[..1024 * 1024]).await;

    // HTTP/1.1 still works on the same listener.
    let r = srv.client.get(url).send().await.unwrap();
    assert_eq!(r.version(), Version::HTTP_11);
    assert!(r.bytes().await.unwrap()[..] == data[..]);
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// Reload on SIGHUP
// ---------------------------------------------------------------------------

fn sighup() {
    let st = Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_keeping_open_connections_and_a_broken_key_keeps_the_old_one()
 {
    let dir = tempfile::tempdir().unwrap();
    let a = CertFiles::make(dir.path(), "ferry-a");
    let pem_a = a.pem();
    let (srv, base) = tls_server(&a, |_| {}).await;
    let tls = srv.state.tls.clone().expect("TLS is on");
    let healthz = format!("{base}/healthz");

    // A keep-alive HTTP/2 connection made with certificate A.
    let old = client_trusting(&pem_a).build().unwrap();
    let r = old.get(&healthz).send().await.unwrap();
    assert_eq!((r.version(), r.status().as_u16()), (Version::HTTP_2, 200));

    let b = CertFiles::make(dir.path(), "ferry-b");
    let pem_b = b.pem();
    assert_ne!(pem_a, pem_b);
    sighup();
    // New handshakes use B once the reload is done.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = client_trusting(&pem_b).build().unwrap();
        if let Ok(r) = fresh.get(&healthz).send().await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(
            Instant::now() < end,
            "certificate B not served 10 s after SIGHUP"
        );
        sleep(Duration::from_millis(50)).await;
    }
    assert!(tls.reloads().0 >= 1);
    // The connection made with A is still open and works (a new one would fail: this
    // client trusts only A).
    let r = old.get(&healthz).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A new connection trusting only A fails.
    let only_a = client_trusting(&pem_a).build().unwrap();
    assert!(
        only_a.get(&healthz).send().await.is_err(),
        "a new connection still got certificate A"
    );

    // A broken key: the reload fails, B stays.
    std::fs::write(&b.key, "-----BEGIN PRIVATE KEY-----\nnot a key\n").unwrap();
    let failed = tls.reloads().1;
    sighup();
    let end = Instant::now() + Duration::from_secs(10);
    while tls.reloads().1 == failed {
        assert!(Instant::now() < end, "no failed reload 10 s after SIGHUP");
        sleep(Duration::from_millis(20)).await;
    }
    let fresh = client_trusting(&pem_b).build().unwrap();
    let r = fresh.get(&healthz).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A key of another certificate: refused as well, B stays.
    let c = tempfile::tempdir().unwrap();
    let other = CertFiles::make(c.path(), "ferry-c");
    std::fs::copy(&other.key, &b.key).unwrap();
    let failed = tls.reloads().1;
    sighup();
    let end = Instant::now() + Duration::from_secs(10);
    while tls.reloads().1 == failed {
        assert!(Instant::now() < end, "no failed reload 10 s after SIGHUP");
        sleep(Duration::from_millis(20)).await;
    }
    let fresh = client_trusting(&pem_b).build().unwrap();
    assert_eq!(fresh.get(&healthz).send().await.unwrap().status(), 200);
    srv.stop().await;
}

// ---------------------------------------------------------------------------
// Start-up errors and file formats
// ---------------------------------------------------------------------------

/// `ferry serve`'s entry point with `adjust`ed settings: it must fail before listening.
async fn serve_error(
    dir: &Path,
    adjust: impl FnOnce(&mut ferry_server::config::ServeArgs),
) -> String {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let mut args = ferry_server::config::ServeArgs::for_dir(&dir.join("data"));
    args.listen = addr.to_string();
    adjust(&mut args);
    let e = timeout(Duration::from_secs(10), ferry_server::serve(args))
        .await
        .expect("serve returned")
        .expect_err("serve refused to start");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "something listens on {addr}"
    );
    let text = format!("{e:#}");
    eprintln!("ferry serve: {text}");
    assert!(!text.contains('\n'), "one line: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_tls_flags_stop_the_start_with_a_sentence_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let good = CertFiles::make(dir.path(), "ferry-a");

    let e = serve_error(dir.path(), |a| a.tls_cert = Some(good.cert.clone())).await;
    assert!(e.contains("--tls-cert") && e.contains("--tls-key"), "{e}");
    let e = serve_error(dir.path(), |a| a.tls_key = Some(good.key.clone())).await;
    assert!(e.contains("--tls-cert") && e.contains("--tls-key"), "{e}");

    let not_pem = dir.path().join("not-pem.crt");
    std::fs::write(&not_pem, b"\x30\x82\x01\x0a binary DER, not PEM").unwrap();
    let e = serve_error(dir.path(), |a| {
        a.tls_cert = Some(not_pem.clone());
        a.tls_key = Some(good.key.clone());
    })
    .await;
    assert!(
        e.starts_with(&format!("--tls-cert {}: ", not_pem.display())),
        "{e}"
    );
    assert!(e.contains("no certificate found"), "{e}");

    // The certificate given as the key.
    let e = serve_error(dir.path(), |a| {
        a.tls_cert = Some(good.cert.clone());
        a.tls_key = Some(good.cert.clone());
    })
    .await;
    assert!(
        e.starts_with(&format!(
            "--tls-key {}: no private key found",
            good.cert.display()
        )),
        "{e}"
    );

    let missing = dir.path().join("missing.pem");
    let e = serve_error(dir.path(), |a| {
        a.tls_cert = Some(good.cert.clone());
        a.tls_key = Some(missing.clone());
    })
    .await;
    assert!(
        e.starts_with(&format!("--tls-key {}: cannot read", missing.display())),
        "{e}"
    );

    let broken = dir.path().join("broken.pem");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
    let e = serve_error(dir.path(), |a| {
        a.tls_cert = Some(broken.clone());
        a.tls_key = Some(good.key.clone());
    })
    .await;
    assert!(
        e.starts_with(&format!("--tls-cert {}: ", broken.display())),
        "{e}"
    );

    // A key of another certificate.
    let other_dir = tempfile::tempdir().unwrap();
    let other = CertFiles::make(other_dir.path(), "other");
    let e = serve_error(dir.path(), |a| {
        a.tls_cert = Some(good.cert.clone());
        a.tls_key = Some(other.key.clone());
    })
    .await;
    assert!(
        e.starts_with(&format!("--tls-key {}: ", other.key.display()))
            && e.contains("does not belong"),
        "{e}"
    );
}

#[test]
fn keys_in_pkcs8_pkcs1_and_sec1_load_and_the_certificate_file_may_hold_a_chain() {
    use ferry_server::tls::server_config;
    let dir = tempfile::tempdir().unwrap();
    let ec = CertFiles::make(dir.path(), "ec");
    let pkcs8 = std::fs::read_to_string(&ec.key).unwrap();
    assert!(pkcs8.contains("BEGIN PRIVATE KEY"), "{pkcs8}");
    let config = server_config(&ec.cert, &ec.key).unwrap();
    assert_eq!(
        config.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );

    let sec1 = dir.path().join("sec1.pem");
    openssl(&[
        "ec",
        "-in",
        ec.key.to_str().unwrap(),
        "-out",
        sec1.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read_to_string(&sec1)
            .unwrap()
            .contains("BEGIN EC PRIVATE KEY")
    );
    server_config(&ec.cert, &sec1).unwrap();

    let rsa_dir = dir.path().join("rsa");
    std::fs::create_dir(&rsa_dir).unwrap();
    let (rsa_cert, rsa_key) = (rsa_dir.join("cert.pem"), rsa_dir.join("key.pem"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=rsa",
        "-keyout",
        rsa_key.to_str().unwrap(),
        "-out",
        rsa_cert.to_str().unwrap(),
    ]);
    let pkcs1 = rsa_dir.join("pkcs1.pem");
    openssl(&[
        "rsa",
        "-in",
        rsa_key.to_str().unwrap(),
        "-traditional",
        "-out",
        pkcs1.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read_to_string(&pkcs1)
            .unwrap()
            .contains("BEGIN RSA PRIVATE KEY")
    );
    server_config(&rsa_cert, &pkcs1).unwrap();

    // A chain: the server's certificate, then another (an intermediate's place).
    let chain = dir.path().join("chain.pem");
    let mut text = std::fs::read(&ec.cert).unwrap();
    text.extend(std::fs::read(&rsa_cert).unwrap());
    std::fs::write(&chain, text).unwrap();
    server_config(&chain, &ec.key).unwrap();
    // The wrong one first: the key does not belong to it.
    let mut text = std::fs::read(&rsa_cert).unwrap();
    text.extend(std::fs::read(&ec.cert).unwrap());
    std::fs::write(&chain, text).unwrap();
    let e = server_config(&chain, &ec.key).unwrap_err().to_string();
    assert!(e.contains("does not belong"), "{e}");
}

#[test]
fn tls_files_can_come_from_flags_or_ferry_toml() {
    use clap::{CommandFactory, FromArgMatches, Parser};
    use ferry_server::config::ServeArgs;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("ferry.toml");
    std::fs::write(
        &toml,
        "tls_cert = \"/etc/ferry/cert.pem\"\ntls_key = \"/etc/ferry/key.pem\"\n",
    )
    .unwrap();
    let m = Cli::command()
        .try_get_matches_from([
            "x",
            "--config",
            toml.to_str().unwrap(),
            "--tls-key",
            "/k.pem",
        ])
        .unwrap();
    let args = ServeArgs::from_arg_matches(&m)
        .unwrap()
        .with_config_file(&m)
        .unwrap();
    assert_eq!(
        args.tls_cert.as_deref(),
        Some(Path::new("/etc/ferry/cert.pem"))
    );
    // The flag wins over the file.
    assert_eq!(args.tls_key.as_deref(), Some(Path::new("/k.pem")));
    let help = Cli::command().render_long_help().to_string();
    assert!(
        help.contains("--tls-cert") && help.contains("--tls-key"),
        "{help}"
    );
}

// ---------------------------------------------------------------------------
// The transport's guards on the new paths
// ---------------------------------------------------------------------------

/// A raw TLS connection to `srv` trusting `pem`, offering only `http/1.1` by ALPN.
async fn raw_tls(srv: &TestServer, pem: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pem).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(srv.base.trim_start_matches("http://"))
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// Reads until the peer closes (or 10 s pass); returns what arrived.
async fn read_all<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = timeout(Duration::from_secs(10), async {
        let mut tmp = [0u8; 16 * 1024];
        loop {
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&tmp[..n]),
            }
        }
    })
    .await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_http1_an_oversized_head_gets_431_and_length_with_transfer_encoding_400() {
    let dir = tempfile::tempdir().unwrap();
    let files = CertFiles::make(dir.path(), "ferry-a");
    let (srv, _base) = tls_server(&files, |_| {}).await;
    let pem = files.pem();

    let mut s = raw_tls(&srv, &pem).await;
    let big = "b".repeat(100 * 1000);
    let head = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\n\r\n");
    let _ = timeout(Duration::from_secs(5), s.write_all(head.as_bytes())).await;
    let _ = s.flush().await;
    let got = read_all(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");

    let mut s = raw_tls(&srv, &pem).await;
    s.write_all(
        b"POST /api/upload HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n\
          X-File-Id: smuggle-5-1\r\nX-Start-Byte: 0\r\nX-File-Size: 5\r\n\
          Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    let got = read_all(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(text.contains("conflicting_length"), "{text}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_h2_connections_count_against_the_cap_and_get_503_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let files = CertFiles::make(dir.path(), "ferry-a");
    let (srv, base) = tls_server(&files, |a| a.max_connections = Some(2)).await;
    let pem = files.pem();
    let healthz = format!("{base}/healthz");
    // Two clients, one connection each (HTTP/2 keeps one per host).
    let held: Vec<Client> = (0..2)
        .map(|_| client_trusting(&pem).build().unwrap())
        .collect();
    for c in &held {
        let r = c.get(&healthz).send().await.unwrap();
        assert_eq!((r.version(), r.status().as_u16()), (Version::HTTP_2, 200));
    }
    // A third: HTTP/2 and HTTP/1.1 both get the 503, over TLS.
    for (client, version) in [
        (client_trusting(&pem).build().unwrap(), Version::HTTP_2),
        (
            client_trusting(&pem).http1_only().build().unwrap(),
            Version::HTTP_11,
        ),
    ] {
        let r = client.get(&healthz).send().await.unwrap();
        assert_eq!(r.version(), version);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        let j: Value = r.json().await.unwrap();
        assert_eq!(j["error"], "server_busy");
    }
    drop(held);
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let c = client_trusting(&pem).build().unwrap();
        if c.get(&healthz)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok()
            == Some(200)
        {
            break;
        }
        assert!(
            Instant::now() < end,
            "no place after the connections closed"
        );
        sleep(Duration::from_millis(50)).await;
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_body_that_stalls_ends_at_the_idle_timeout_keeping_what_arrived() {
    let srv = TestServer::start_with(|a| a.idle_timeout = Duration::from_secs(1)).await;
    let h2c = Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let id = "stall.bin-1000-1";
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    tx.send(Ok(bytes::Bytes::from(vec![7u8; 300])))
        .await
        .unwrap();
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|item| (item, rx))
    }));
    let started = Instant::now();
    let req = h2c
        .post(srv.url("/api/upload"))
        .header("content-type", "application/octet-stream")
        .header("x-file-id", id)
        .header("x-start-byte", "0")
        .header("x-file-size", "1000")
        .body(body)
        .send();
    // The sender stays open (the stream never ends): only the idle timeout ends it.
    let r = timeout(Duration::from_secs(15), req)
        .await
        .expect("an answer")
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(r.version(), Version::HTTP_2);
    drop(tx);
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(8),
        "{elapsed:?}"
    );
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = h2c
            .get(srv.url("/api/upload/status"))
            .header("x-file-id", id)
            .send()
            .await
            .unwrap();
        if r.text().await.unwrap().trim() == "300" {
            break;
        }
        assert!(Instant::now() < end, "the 300 bytes sent were not kept");
        sleep(Duration::from_millis(50)).await;
    }
    srv.stop().await;
}

/// The frame types in raw HTTP/2 server bytes.
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2_connection_gets_goaway_and_is_closed_after_the_header_timeout() {
    let srv = TestServer::start_with(|a| a.header_timeout = Duration::from_secs(1)).await;
    let mut s = TcpStream::connect(srv.base.trim_start_matches("http://"))
        .await
        .unwrap();
    // The preface and an empty SETTINGS; then nothing, not even the pings' answers.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let started = Instant::now();
    let got = read_all(&mut s).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "closed after {elapsed:?}"
    );
    let types = frame_types(&got);
    assert_eq!(types.first(), Some(&0x4), "SETTINGS first: {types:?}");
    assert!(types.contains(&0x7), "a GOAWAY: {types:?}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_h2_connections_at_once_and_lets_a_streaming_one_finish() {
    let dir = tempfile::tempdir().unwrap();
    let files = CertFiles::make(dir.path(), "ferry-a");
    let (mut srv, base) = tls_server(&files, |a| a.shutdown_grace = Duration::from_secs(30)).await;
    let pem = files.pem();
    let idle = client_trusting(&pem).build().unwrap();
    let r = idle.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.version(), Version::HTTP_2);

    // One upload streaming over HTTP/2 while the shutdown begins.
    let busy = client_trusting(&pem).build().unwrap();
    let data = test_bytes(1024 * 1024, 9);
    let id = "shutdown-h2.bin-1048576-1";
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    tx.send(Ok(bytes::Bytes::copy_from_slice(&data[..4096])))
        .await
        .unwrap();
    let body = reqwest::Body::wrap_stream(futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|item| (item, rx))
    }));
    let upload = tokio::spawn(
        busy.request(Method::POST, format!("{base}/api/upload"))
            .header("content-type", "application/octet-stream")
            .header("x-file-id", id)
            .header("x-start-byte", "0")
            .header("x-file-size", data.len().to_string())
            .body(body)
            .send(),
    );
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = idle
            .get(format!("{base}/api/upload/status"))
            .header("x-file-id", id)
            .send()
            .await
            .unwrap();
        if r.headers().contains_key("x-file-size") {
            break;
        }
        assert!(Instant::now() < end, "the upload never reached its handler");
        sleep(Duration::from_millis(20)).await;
    }
    srv.trigger_shutdown();
    sleep(Duration::from_millis(300)).await;
    assert!(
        !srv.is_finished(),
        "the server waits for the upload in flight"
    );
    tx.send(Ok(bytes::Bytes::copy_from_slice(&data[4096..])))
        .await
        .unwrap();
    drop(tx);
    let r = timeout(Duration::from_secs(10), upload)
        .await
        .expect("the upload is answered")
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), 200);
    let j: Value = r.json().await.unwrap();
    assert_eq!(j["complete"], true, "{j}");
    timeout(Duration::from_secs(5), srv.stop())
        .await
        .expect("the server stops once the upload is done, without waiting for idle connections");
}
