//! The HTTP client shared by uploads and downloads, and the turning of error responses into
//! [`Error::Server`] with the server's own sentence.

use crate::error::{Error, Result};
use crate::retry::parse_retry_after;
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, Url};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How the client checks the servers' TLS certificates. The system's trust store is always
/// used; `ca_certs` adds certificates (a self-signed server's, a private CA's).
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// PEM files, each holding one or more certificates to trust besides the system's.
    pub ca_certs: Vec<PathBuf>,
    /// Accept any certificate, so connections are encrypted but not authenticated: for
    /// test set-ups only.
    pub insecure: bool,
}

/// Longest piece of an error body quoted in a message.
const MAX_QUOTED: usize = 300;

/// A cheap-clone HTTP client that adds the bearer token to every request.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    token: Option<Arc<str>>,
}

impl Http {
    pub fn new(token: Option<&str>, tls: &TlsOptions) -> Result<Http> {
        let mut builder = reqwest::Client::builder();
        for path in &tls.ca_certs {
            let pem = std::fs::read(path).map_err(|e| {
                Error::Config(format!(
                    "--cacert {}: could not read it: {e}",
                    path.display()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "--cacert {}: no PEM certificate found in the file (expected -----BEGIN CERTIFICATE-----)",
                        path.display()
                    ))
                })?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder
            .danger_accept_invalid_certs(tls.insecure)
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            // A server that stops answering mid-transfer is a network failure to retry,
            // not a hang. One read may legitimately wait for an fsync of a large body.
            .read_timeout(Duration::from_secs(120))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::Config(format!("could not set up the HTTP client: {e}")))?;
        Ok(Http {
            client,
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
        })
    }

    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let req = self.client.request(method, url);
        match &self.token {
            Some(t) => req.header(AUTHORIZATION, format!("Bearer {t}")),
            None => req,
        }
    }

    /// Sends and turns transport failures into [`Error::Network`].
    pub async fn send(&self, req: RequestBuilder) -> Result<Response> {
        req.send().await.map_err(|e| Error::network(&e))
    }
}

/// Passes a success through; turns anything else into [`Error::Server`].
pub async fn check(resp: Response) -> Result<Response> {
    if resp.status().is_success() {
        Ok(resp)
    } else {
        Err(error_from(resp).await)
    }
}

/// An error status as an [`Error::Server`]: the message is the server's own sentence, read
/// from the JSON `message` (ferry's JSON errors, tus) or `msg` (the chunk dialect's
/// envelope), else the body text, else the status' reason phrase.
pub async fn error_from(resp: Response) -> Error {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = resp.bytes().await.unwrap_or_default();
    let (code, message) = server_message(&body);
    Error::Server {
        status: status.as_u16(),
        code,
        message: message.unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("no explanation given")
                .to_owned()
        }),
        retry_after,
    }
}

/// `(error code, sentence)` from an error body.
pub fn server_message(body: &[u8]) -> (Option<String>, Option<String>) {
    if let Ok(serde_json::Value::Object(o)) = serde_json::from_slice(body) {
        let text = |k: &str| o.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let message = text("message")
            .or_else(|| text("msg"))
            .filter(|m| !m.is_empty());
        return (text("error"), message);
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return (None, None);
    }
    let mut quoted: String = text.chars().take(MAX_QUOTED).collect();
    if quoted.len() < text.len() {
        quoted.push('…');
    }
    (None, Some(quoted))
}

/// A request body over `data`, handed to the connection in `piece`-sized slices (no copy);
/// `on_sent` is called with each slice's length as it goes, for progress.
pub fn counting_body(
    data: Bytes,
    piece: usize,
    on_sent: impl Fn(u64) + Send + 'static,
) -> reqwest::Body {
    let piece = piece.max(1);
    let mut at = 0;
    let pieces = std::iter::from_fn(move || {
        if at >= data.len() {
            return None;
        }
        let end = (at + piece).min(data.len());
        let slice = data.slice(at..end);
        at = end;
        on_sent(slice.len() as u64);
        Some(Ok::<_, std::io::Error>(slice))
    });
    reqwest::Body::wrap_stream(futures_util::stream::iter(pieces))
}

/// Resolves a `Location` (absolute or relative) against the request's URL.
pub fn resolve(base: &Url, location: &str) -> Result<Url> {
    base.join(location)
        .map_err(|e| Error::Protocol(format!("the server sent an unusable URL {location:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_messages_come_from_json_envelopes_or_text() {
        assert_eq!(
            server_message(br#"{"error":"offset_mismatch","message":"held 5"}"#),
            (Some("offset_mismatch".into()), Some("held 5".into()))
        );
        assert_eq!(
            server_message(br#"{"code":413,"msg":"too large","data":null,"error":"too_large"}"#),
            (Some("too_large".into()), Some("too large".into()))
        );
        assert_eq!(
            server_message(b"  plain words \n"),
            (None, Some("plain words".into()))
        );
        assert_eq!(server_message(b""), (None, None));
        let long = "x".repeat(1000);
        let (_, m) = server_message(long.as_bytes());
        assert!(m.unwrap().chars().count() <= MAX_QUOTED + 1);
    }

    #[test]
    fn locations_resolve_against_the_request() {
        let base = Url::parse("http://h:1/files/").unwrap();
        assert_eq!(
            resolve(&base, "/files/ab").unwrap().as_str(),
            "http://h:1/files/ab"
        );
        assert_eq!(
            resolve(&base, "ab").unwrap().as_str(),
            "http://h:1/files/ab"
        );
        assert_eq!(
            resolve(&base, "http://other/files/ab").unwrap().as_str(),
            "http://other/files/ab"
        );
    }
}
