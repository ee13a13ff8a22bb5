//! `ferry ls` and `ferry rm`: the caller's uploads through the server's files API
//! (`GET /api/files`, `DELETE /api/files/<id>`, docs/PROTOCOL.md "Files API").
//!
//! - `ls` follows `next` until the last page and prints one line per upload: id, name, size,
//!   state and URL, tab-separated (`-` where there is none); with `--json`, the API's object
//!   of each upload as one JSON line.
//! - `rm` deletes each id in turn without asking, prints `removed <id>` for each, and names
//!   the id and the reason of each failure on stderr; the exit code is 1 if any failed.

use ferry_client::Error;
use ferry_client::http::{self, Http};
use indicatif::BinaryBytes;
use reqwest::{Method, Url};
use serde_json::Value;
use std::io::Write;
use std::process::ExitCode;

/// The server's files API at `server` (a base URL as `--server` takes it; `http://` is
/// assumed without a scheme), with `segments` appended.
fn api_url(server: &str, segments: &[&str]) -> Result<Url, Error> {
    let mut base = server.trim().trim_end_matches('/').to_owned();
    if !base.contains("://") {
        base = format!("http://{base}");
    }
    let mut url = Url::parse(&format!("{base}/"))
        .map_err(|e| Error::Config(format!("--server {server:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::Config(format!(
            "--server {server:?}: only http:// and https:// URLs are supported"
        )));
    }
    url.path_segments_mut()
        .map_err(|()| Error::Config(format!("--server {server:?} cannot be a base URL")))?
        .pop_if_empty()
        .extend(["api", "files"])
        .extend(segments);
    Ok(url)
}

/// Every upload of the caller, newest first, following `next` page by page.
async fn list_all(http: &Http, server: &str, page_size: usize) -> Result<Vec<Value>, Error> {
    let base = api_url(server, &[])?;
    let mut files = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = base.clone();
        url.query_pairs_mut()
            .append_pair("limit", &page_size.to_string());
        if let Some(c) = &cursor {
            url.query_pairs_mut().append_pair("cursor", c);
        }
        let resp = http::check(http.send(http.request(Method::GET, url)).await?).await?;
        let body: Value = resp.json().await.map_err(|e| {
            Error::Protocol(format!("the file list is not the JSON ferry sends: {e}"))
        })?;
        let Some(page) = body["files"].as_array() else {
            return Err(Error::Protocol(
                "the file list has no \"files\" array (is this a ferry server?)".into(),
            ));
        };
        files.extend(page.iter().cloned());
        match body["next"].as_str() {
            // A server that hands back the same cursor would keep this loop going forever.
            Some(next) if cursor.as_deref() != Some(next) && !page.is_empty() => {
                cursor = Some(next.to_owned());
            }
            Some(_) => {
                return Err(Error::Protocol(
                    "the server's file list does not advance (same cursor again)".into(),
                ));
            }
            None => return Ok(files),
        }
    }
}

/// One upload as a line of `ferry ls`: id, name, size, state, URL, tab-separated.
fn text_line(f: &Value) -> String {
    let dash = |v: &Value| v.as_str().map(clean).unwrap_or_else(|| "-".to_owned());
    let size = f["size"].as_u64();
    let held = f["offset"].as_u64().unwrap_or(0);
    let state = match f["state"].as_str() {
        Some("complete") => "complete".to_owned(),
        Some("incomplete") => match size {
            Some(s) if s > 0 => format!("incomplete ({}%)", held.saturating_mul(100) / s),
            _ => format!("incomplete ({} held)", BinaryBytes(held)),
        },
        other => other.map(clean).unwrap_or_else(|| "-".to_owned()),
    };
    format!(
        "{}\t{}\t{}\t{state}\t{}",
        dash(&f["id"]),
        dash(&f["name"]),
        size.map_or_else(|| "?".to_owned(), |s| BinaryBytes(s).to_string()),
        dash(&f["url"]),
    )
}

/// A name as one field of a line: control characters (tabs, newlines, terminal escapes)
/// shown as `?`, so a file name can neither break the columns nor drive the terminal.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `ferry ls`.
pub async fn ls(http: &Http, server: &str, json: bool, page_size: usize) -> ExitCode {
    let files = match list_all(http, server, page_size).await {
        Ok(f) => f,
        Err(e) => return fail(&format!("could not list the uploads: {e}"), &e),
    };
    let mut out = std::io::stdout().lock();
    for f in &files {
        let line = if json { f.to_string() } else { text_line(f) };
        if writeln!(out, "{line}").is_err() {
            // stdout closed (`ferry ls | head`): nothing more to say.
            return ExitCode::SUCCESS;
        }
    }
    if files.is_empty() && !json {
        eprintln!("no uploads");
    }
    ExitCode::SUCCESS
}

/// `ferry rm`.
pub async fn rm(http: &Http, server: &str, ids: &[String]) -> ExitCode {
    let mut failed = 0;
    for id in ids {
        let res = async {
            let url = api_url(server, &[id])?;
            http::check(http.send(http.request(Method::DELETE, url)).await?).await
        }
        .await;
        match res {
            Ok(_) => println!("removed {id}"),
            Err(e) => {
                failed += 1;
                let why = match &e {
                    Error::Server { status: 404, .. } => {
                        "no such upload (unknown, already removed, or someone else's)".to_owned()
                    }
                    other => other.to_string(),
                };
                eprintln!("could not remove {}: {why}", clean(id));
                if let Some(hint) = e.hint().filter(|_| e.status() != Some(404)) {
                    eprintln!("  {hint}");
                }
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} not removed", ids.len());
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn fail(what: &str, e: &Error) -> ExitCode {
    eprintln!("error: {what}");
    if let Some(hint) = e.hint() {
        eprintln!("  {hint}");
    }
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_keep_a_path_prefix_and_escape_ids() {
        assert_eq!(
            api_url("127.0.0.1:8080", &[]).unwrap().as_str(),
            "http://127.0.0.1:8080/api/files"
        );
        assert_eq!(
            api_url("https://h/ferry/", &["ab/../c?d"])
                .unwrap()
                .as_str(),
            "https://h/ferry/api/files/ab%2F..%2Fc%3Fd"
        );
        assert!(api_url("ftp://h", &[]).is_err());
    }

    #[test]
    fn lines_say_id_name_size_state_url() {
        let done = json!({"id": "a1", "name": "x\ty.bin", "size": 2048, "offset": 2048,
            "state": "complete", "createdAt": "2025-01-01T00:00:00.000Z", "url": "http://h/files/a1"});
        assert_eq!(
            text_line(&done),
            "a1\tx?y.bin\t2.00 KiB\tcomplete\thttp://h/files/a1"
        );
        let part = json!({"id": "b2", "name": null, "size": 400, "offset": 100,
            "state": "incomplete", "createdAt": "2025-01-01T00:00:00.000Z", "url": null});
        assert_eq!(text_line(&part), "b2\t-\t400 B\tincomplete (25%)\t-");
        let deferred = json!({"id": "c3", "name": "n", "size": null, "offset": 5,
            "state": "incomplete", "url": null});
        assert_eq!(text_line(&deferred), "c3\tn\t?\tincomplete (5 B held)\t-");
    }
}
