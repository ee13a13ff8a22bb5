//! HTTPS end to end with real parts: a self-signed certificate made by the `openssl` command
//! (exactly as README's "With TLS" section says), `ferry serve --tls-cert/--tls-key`, and
//! nginx terminating TLS (HTTP/2 towards clients) in front of a plain ferry. `ferry upload`
//! and `ferry download` go through both with `--cacert`, byte for byte and digest-checked;
//! without the certificate they stop at once with a sentence that names `--cacert`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::proc::Server;
use support::{assert_same_bytes, free_port, result_url, source};

/// `cert.pem` and `key.pem` for `localhost` and 127.0.0.1 in `dir`.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("running openssl (the test command installs it)");
    assert!(st.success(), "openssl could not make a certificate");
    (cert, key)
}

struct Nginx(Child);

impl Drop for Nginx {
    /// SIGTERM, nginx's fast shutdown: the master stops its worker before it exits. A SIGKILL
    /// of the master alone would leave the worker running, holding the port.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx on `port` terminating TLS (h2 and http/1.1) in front of ferry on `upstream`, set up
/// as README's "Behind nginx" section says.
fn nginx(dir: &Path, port: u16, upstream: u16, cert: &Path, key: &Path) -> Nginx {
    let conf = dir.join("nginx.conf");
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::write(
        &conf,
        format!(
            r#"
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            client_max_body_size 0;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }}
    }}
}}
"#,
            dir = dir.display(),
            cert = cert.display(),
            key = key.display(),
        ),
    )
    .unwrap();
    // Debian puts it in /usr/sbin, which an unprivileged PATH may lack.
    let bin = if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    };
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting nginx (the test command installs it)");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not start: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx(child)
}

fn ferry(root: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(args)
        .current_dir(root)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Uploads `data` to `base` with `extra` flags, downloads it back over 3 connections, and
/// checks bytes and digest. Returns the file's URL.
fn round_trip(root: &Path, base: &str, cert: &Path, name: &str, data: &[u8], extra: &[&str]) {
    let file = root.join(name);
    std::fs::write(&file, data).unwrap();
    let state = root.join(format!("{name}.state.json"));
    let cacert = cert.to_str().unwrap();
    let mut args = vec![
        "upload",
        name,
        "--server",
        base,
        "--cacert",
        cacert,
        "--json",
        "--retry-for",
        "20s",
        "--state-file",
        state.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = ferry(root, &args);
    assert!(ok, "upload to {base} failed:\n{stdout}\n{stderr}");
    let url = result_url(&stdout);
    assert!(url.starts_with("https://"), "the file's URL is {url}");
    let out = format!("{name}.down");
    let (ok, stdout, stderr) = ferry(
        root,
        &[
            "download",
            &url,
            "-o",
            &out,
            "--connections",
            "3",
            "--cacert",
            cacert,
            "--json",
        ],
    );
    assert!(ok, "download of {url} failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("verified: the") && stdout.contains("digest matches"),
        "{stdout}"
    );
    assert_same_bytes(&std::fs::read(root.join(&out)).unwrap(), data, &url);
}

/// [`round_trip`] with the default protocol (byte ranges, 3 connections) and with tus
/// (3 partial uploads in 1 MiB PATCHes).
fn ranges_and_tus(root: &Path, base: &str, cert: &Path, data: &[u8]) {
    round_trip(root, base, cert, "ranges.bin", data, &["--parallel", "3"]);
    let tus = [
        "--protocol",
        "tus",
        "--parallel",
        "3",
        "--chunk-size",
        "1MiB",
    ];
    round_trip(root, base, cert, "tus.bin", data, &tus);
}

#[test]
fn the_cli_uploads_and_downloads_over_ferrys_own_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (cert, key) = self_signed(root);
    let mut srv = Server::new(
        root,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    srv.spawn();
    let base = format!("https://localhost:{}", srv.port);
    let data = source(9 << 20, 81);
    ranges_and_tus(root, &base, &cert, &data);
    round_trip(
        root,
        &base,
        &cert,
        "chunk.bin",
        &data,
        &["--protocol", "chunk"],
    );

    // Without the certificate: no retrying for minutes, a sentence that says what to do.
    std::fs::write(root.join("x.bin"), b"x").unwrap();
    let started = Instant::now();
    let (ok, stdout, stderr) = ferry(
        root,
        &["upload", "x.bin", "--server", &base, "--retry-for", "60s"],
    );
    assert!(!ok, "an untrusted certificate was accepted:\n{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a certificate error is not worth retrying ({:?})",
        started.elapsed()
    );
    let said = format!("{stdout}{stderr}");
    assert!(
        said.contains("certificate") && said.contains("--cacert"),
        "{said}"
    );
    // --insecure: encrypted, not authenticated, works.
    let (ok, stdout, stderr) = ferry(
        root,
        &[
            "upload",
            "x.bin",
            "--server",
            &base,
            "--insecure",
            "-q",
            "--state-file",
            root.join("insecure.json").to_str().unwrap(),
        ],
    );
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.trim().starts_with("https://"), "{stdout}");
}

#[test]
fn the_cli_uploads_and_downloads_through_nginx_terminating_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (cert, key) = self_signed(root);
    let srv = Server::start(root);
    let port = free_port();
    let _nginx = nginx(&root.join("nginx"), port, srv.port, &cert, &key);
    let base = format!("https://localhost:{port}");
    let data = source(9 << 20, 82);
    ranges_and_tus(root, &base, &cert, &data);
}
