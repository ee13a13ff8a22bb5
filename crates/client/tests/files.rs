//! `ferry ls` and `ferry rm` (README "ferry ls / ferry rm") against a real `ferry serve`:
//! the text and JSON lines of every upload, finished or not, across pages; removing
//! several at once; an unknown id named in the failure and the exit code; tokens.

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use support::proc::{Server, request};
use support::{cli_upload, source};

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

/// `ferry ARGS --server <srv>` with `env`, no FERRY_* from the caller's environment.
fn ferry(srv: &Server, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .arg("--server")
        .arg(format!("http://127.0.0.1:{}", srv.port));
    for v in ["FERRY_SERVER", "FERRY_TOKEN", "FERRY_CACERT"] {
        cmd.env_remove(v);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("running ferry")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn write(root: &Path, name: &str, len: usize, seed: u64) -> Vec<u8> {
    let data = source(len, seed);
    std::fs::write(root.join(name), &data).unwrap();
    data
}

/// A tus upload of `len` bytes named `name` with only `sent` bytes sent; its id.
fn unfinished_tus(
    srv: &Server,
    token: Option<&str>,
    name: &str,
    len: usize,
    sent: usize,
) -> String {
    use base64::Engine as _;
    let meta = format!(
        "filename {}",
        base64::engine::general_purpose::STANDARD.encode(name)
    );
    let mut headers = vec![
        ("Tus-Resumable", "1.0.0".to_owned()),
        ("Upload-Length", len.to_string()),
        ("Upload-Metadata", meta),
    ];
    if let Some(t) = token {
        headers.push(("Authorization", format!("Bearer {t}")));
    }
    let r = request(srv.port, "POST", "/files/", &headers, b"");
    assert_eq!(r.status, 201, "tus creation: {}", r.text());
    let loc = r.header("location").unwrap().to_owned();
    let path = &loc[loc.find("/files/").unwrap()..];
    let path = path.split('?').next().unwrap().to_owned();
    let mut headers = vec![
        ("Tus-Resumable", "1.0.0".to_owned()),
        ("Upload-Offset", "0".to_owned()),
        ("Content-Type", "application/offset+octet-stream".to_owned()),
    ];
    if let Some(t) = token {
        headers.push(("Authorization", format!("Bearer {t}")));
    }
    let r = request(srv.port, "PATCH", &path, &headers, &source(sent, 99));
    assert_eq!(r.status, 204, "tus PATCH: {}", r.text());
    path.rsplit('/').next().unwrap().to_owned()
}

/// The id at the end of a `/files/<id>` URL.
fn id_in(url: &str) -> String {
    url.split('?')
        .next()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned()
}

/// `ferry ls --json` as parsed objects, one per line.
fn ls_json(srv: &Server, extra: &[&str], env: &[(&str, &str)]) -> Vec<Value> {
    let mut args = vec!["ls", "--json"];
    args.extend(extra);
    ok(&ferry(srv, &args, env), "ferry ls --json")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

#[test]
fn ls_lists_every_upload_and_rm_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let srv = Server::start(root);
    // Three finished uploads, one after the other, then an unfinished one: newest first is
    // the reverse.
    let mut urls = Vec::new();
    let mut datas = Vec::new();
    for (i, name) in ["one.bin", "two.bin", "three.bin"].iter().enumerate() {
        datas.push(write(root, name, 3000 + i * 1000, i as u64));
        urls.push(cli_upload(root, srv.port, name, "30s", &[]));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let open = unfinished_tus(&srv, None, "open part.bin", 8192, 2048);

    // Text: id, name, size, state, URL per line, tab-separated.
    let out = ok(&ferry(&srv, &["ls"], &[]), "ferry ls");
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 4, "ferry ls printed:\n{out}");
    assert!(lines.iter().all(|l| l.len() == 5), "not 5 columns:\n{out}");
    assert_eq!(
        lines[0],
        vec![
            open.as_str(),
            "open part.bin",
            "8.00 KiB",
            "incomplete (25%)",
            "-"
        ],
        "the unfinished upload's line"
    );
    for (line, i) in lines[1..].iter().zip([2usize, 1, 0]) {
        let name = ["one.bin", "two.bin", "three.bin"][i];
        assert_eq!(line[0], id_in(&urls[i]), "{out}");
        assert_eq!(line[1], name, "{out}");
        assert!(line[2].ends_with("KiB"), "size column {:?}", line[2]);
        assert_eq!(line[3], "complete", "{out}");
        assert_eq!(line[4], urls[i], "{out}");
    }

    // JSON lines: the API's fields; the same uploads, also when read one page at a time.
    let json = ls_json(&srv, &[], &[]);
    assert_eq!(json.len(), 4);
    for (v, line) in json.iter().zip(&lines) {
        assert_eq!(v["id"], line[0]);
        assert_eq!(v["name"], line[1]);
        for k in ["size", "offset", "state", "createdAt", "url"] {
            assert!(v.get(k).is_some(), "no {k} in {v}");
        }
    }
    assert_eq!(json[0]["state"], "incomplete");
    assert_eq!(json[0]["offset"], 2048);
    assert_eq!(json[0]["size"], 8192);
    assert!(json[0]["url"].is_null());
    assert_eq!(json[3]["size"], datas[0].len());
    assert_eq!(json[3]["url"], urls[0].as_str());
    let paged = ls_json(&srv, &["--page-size", "1"], &[]);
    assert_eq!(paged, json, "a listing one page at a time differs");

    // rm two ids: both reported, then gone from ls and from their URLs.
    let (a, b) = (id_in(&urls[0]), open.clone());
    let out = ok(&ferry(&srv, &["rm", &a, &b], &[]), "ferry rm");
    assert_eq!(out, format!("removed {a}\nremoved {b}\n"));
    let left: Vec<String> = ls_json(&srv, &[], &[])
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, vec![id_in(&urls[2]), id_in(&urls[1])]);
    let r = request(srv.port, "GET", &format!("/files/{a}"), &[], b"");
    assert_eq!(r.status, 404, "the removed file still downloads");
    let r = request(
        srv.port,
        "HEAD",
        &format!("/files/{b}"),
        &[("Tus-Resumable", "1.0.0".to_owned())],
        b"",
    );
    assert_eq!(r.status, 404, "the removed tus upload still answers HEAD");

    // An unknown id (and one removed already) fails, named, with a non-zero exit; the
    // known one in the same command is still removed.
    let unknown = "0123456789abcdef0123456789abcdef";
    let keep = id_in(&urls[1]);
    let out = ferry(&srv, &["rm", unknown, &keep, &a], &[]);
    assert!(!out.status.success(), "rm of unknown ids succeeded");
    let err = text(&out.stderr);
    for id in [unknown, a.as_str()] {
        assert!(
            err.contains(&format!("could not remove {id}: no such upload")),
            "stderr does not name {id} and why:\n{err}"
        );
    }
    assert_eq!(text(&out.stdout), format!("removed {keep}\n"));
    let left = ls_json(&srv, &[], &[]);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], id_in(&urls[2]));
}

#[test]
fn ls_and_rm_act_for_the_token_s_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let tokens = root.join("tokens");
    std::fs::write(&tokens, "tok-a alice\ntok-b bob\n").unwrap();
    let mut srv = Server::new(root, &["--auth-tokens-file", tokens.to_str().unwrap()]);
    srv.spawn();
    write(root, "alice.bin", 5000, 7);
    let url = cli_upload(root, srv.port, "alice.bin", "30s", &["--token", "tok-a"]);
    let bob = unfinished_tus(&srv, Some("tok-b"), "bob.bin", 100, 10);

    // No token: refused, said so, non-zero.
    let out = ferry(&srv, &["ls"], &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("401") && err.contains("--token"), "{err}");

    // --token and FERRY_TOKEN: each tenant its own.
    let alice = ls_json(&srv, &["--token", "tok-a"], &[]);
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0]["id"], id_in(&url));
    assert!(alice[0]["url"].as_str().unwrap().contains("signature="));
    let bobs = ls_json(&srv, &[], &[("FERRY_TOKEN", "tok-b")]);
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0]["id"], bob.as_str());

    // Bob cannot remove Alice's upload; it is still there for her.
    let out = ferry(&srv, &["rm", &id_in(&url), "--token", "tok-b"], &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(&format!("could not remove {}", id_in(&url))));
    assert_eq!(ls_json(&srv, &["--token", "tok-a"], &[]).len(), 1);
    let out = ferry(&srv, &["rm", &bob], &[("FERRY_TOKEN", "tok-b")]);
    ok(&out, "ferry rm with FERRY_TOKEN");
    assert!(ls_json(&srv, &["--token", "tok-b"], &[]).is_empty());
}
