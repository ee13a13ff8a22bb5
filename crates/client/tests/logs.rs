//! The server's log as an operator reads it (issue: conventions of nginx and curl): one line
//! per request with method, path, upload id, status, bytes, duration and client address; no
//! ANSI colours when the log is not a terminal; a start-up line with the page's URL; no
//! secret (a token, a link's signature) ever written.

mod support;

use support::proc::{Server, path_of, request};

fn log_of(srv: &Server) -> String {
    std::fs::read_to_string(&srv.log).unwrap()
}

#[test]
fn request_lines_name_the_upload_and_the_peer_without_colours_or_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let mut srv = Server::new(tmp.path(), &["--auth-token", "tok-secret-value"]);
    srv.spawn();
    let port = srv.port;
    let auth = ("Authorization", "Bearer tok-secret-value".to_owned());
    let r = request(
        port,
        "POST",
        "/files/",
        &[
            auth.clone(),
            ("Tus-Resumable", "1.0.0".to_owned()),
            ("Upload-Length", "5".to_owned()),
        ],
        b"",
    );
    assert_eq!(r.status, 201);
    let link = r.header("location").unwrap().to_owned();
    let id = path_of(&link)
        .trim_start_matches("/files/")
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let r = request(
        port,
        "PATCH",
        path_of(&link),
        &[
            auth,
            ("Tus-Resumable", "1.0.0".to_owned()),
            ("Upload-Offset", "0".to_owned()),
            ("Content-Type", "application/offset+octet-stream".to_owned()),
        ],
        b"hello",
    );
    assert_eq!(r.status, 204);
    // The signed link downloads without the token; its signature must not reach the log.
    assert_eq!(
        request(port, "GET", path_of(&link), &[], b"").body,
        b"hello"
    );
    srv.kill();

    let log = log_of(&srv);
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a redirected log:\n{log}"
    );
    assert!(
        log.contains(&format!("the upload page is at http://127.0.0.1:{port}/")),
        "start-up line:\n{log}"
    );
    let patch = log
        .lines()
        .find(|l| l.contains("request") && l.contains("method=PATCH"))
        .unwrap_or_else(|| panic!("no request line for the PATCH:\n{log}"));
    for want in [
        format!("path=/files/{id}"),
        format!("upload={id}"),
        "status=204".to_owned(),
        "bytes=5".to_owned(),
        "ms=".to_owned(),
        "peer=127.0.0.1:".to_owned(),
        "http=1.1".to_owned(),
    ] {
        assert!(patch.contains(&want), "{want} missing in {patch}");
    }
    assert!(
        log.contains(&format!("upload={id} status=201")),
        "the creation's line names the new upload:\n{log}"
    );
    for secret in ["tok-secret-value", "signature="] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}
