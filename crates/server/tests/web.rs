//! The upload page and the browser SDK as the server serves them (SPEC §5): embedded in the
//! binary, right content types, revalidation by ETag, a strict CSP on the page, no way out
//! of the asset tree, and `--web-dir` serving a directory instead. What the page and SDK
//! *do* is tested in a real browser (`web/tests/browser`) and in Node (`web/tests/sdk`).

mod common;

use common::TestServer;

#[tokio::test]
async fn the_page_is_served_at_root_with_a_strict_csp() {
    let srv = TestServer::start().await;
    let r = srv.client.get(srv.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(h["cache-control"], "no-cache");
    let body = r.text().await.unwrap();
    assert!(
        body.contains("/sdk/ferry.js") || body.contains("/app/"),
        "{body}"
    );
    // The page's own modules load from /app/ and import the SDK from /sdk/.
    let on_disk = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../web/app/index.html"
    ))
    .unwrap();
    assert_eq!(
        body.as_bytes(),
        on_disk,
        "embedded page differs from web/app/index.html"
    );
}

#[tokio::test]
async fn sdk_modules_are_javascript_revalidate_by_etag_and_allow_cross_origin_import() {
    let srv = TestServer::start().await;
    let r = srv
        .client
        .get(srv.url("/sdk/ferry.js"))
        .header("origin", "http://example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(h["x-content-type-options"], "nosniff");
    // A module script from another origin needs CORS (`import … from 'http://ferry/sdk/…'`).
    assert!(h.contains_key("access-control-allow-origin"), "{h:?}");
    let etag = h["etag"].to_str().unwrap().to_owned();
    let body = r.bytes().await.unwrap();
    let on_disk = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../web/sdk/ferry.js"
    ))
    .unwrap();
    assert_eq!(body.as_ref(), on_disk.as_slice());

    let again = srv
        .client
        .get(srv.url("/sdk/ferry.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());
    // If-None-Match compares weakly and takes a list (RFC 9110 §13.1.2), like downloads.
    let listed = srv
        .client
        .get(srv.url("/sdk/ferry.js"))
        .header("if-none-match", format!("\"other\", W/{etag}"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 304);
    let other = srv
        .client
        .get(srv.url("/sdk/ferry.js"))
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);

    let head = srv
        .client
        .head(srv.url("/sdk/ferry.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], on_disk.len().to_string());
}

#[tokio::test]
async fn unknown_hidden_and_traversal_paths_are_404() {
    let srv = TestServer::start().await;
    for path in [
        "/sdk/nope.js",
        "/sdk/../Cargo.toml",
        "/sdk/%2e%2e/%2e%2e/Cargo.toml",
        "/app/..%2fsdk%2fferry.js",
        "/sdk/.gitignore",
        "/app/",
        "/sdk//ferry.js",
    ] {
        let r = srv.client.get(srv.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn web_dir_serves_from_disk_and_never_outside_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sdk")).unwrap();
    std::fs::create_dir_all(dir.path().join("app")).unwrap();
    std::fs::write(
        dir.path().join("sdk/ferry.js"),
        "export const edited = 1;\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("app/index.html"),
        "<!doctype html><p>dev</p>\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("secret.txt"), "no").unwrap();
    let root = dir.path().to_owned();
    let srv = TestServer::start_with(move |a| a.web_dir = Some(root)).await;
    let js = srv
        .client
        .get(srv.url("/sdk/ferry.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.text().await.unwrap(), "export const edited = 1;\n");
    let page = srv.client.get(srv.url("/")).send().await.unwrap();
    assert_eq!(page.text().await.unwrap(), "<!doctype html><p>dev</p>\n");
    for path in [
        "/sdk/../secret.txt",
        "/sdk/%2e%2e/secret.txt",
        "/app/%2e%2e%2fsecret.txt",
    ] {
        let r = srv.client.get(srv.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn a_web_dir_without_the_page_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    for web in [dir.path().join("missing"), dir.path().to_owned()] {
        let mut args = ferry_server::config::ServeArgs::for_dir(&dir.path().join("data"));
        args.web_dir = Some(web.clone());
        let e = match ferry_server::state_from_args(&args).await {
            Ok(_) => panic!("--web-dir {} was accepted", web.display()),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("--web-dir") && e.contains("app/"), "{e}");
    }
}
