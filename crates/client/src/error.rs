//! The client's one error type. Every variant says what went wrong in a sentence a person
//! can act on; [`Error::hint`] adds the next step, and [`Error::is_retryable`] tells the
//! retry loop whether waiting can help.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The server answered with an error status; `message` is its own sentence (the JSON
    /// `message` / `msg`), or the status text when it sent none.
    #[error("the server answered {status}: {message}")]
    Server {
        status: u16,
        /// The server's stable machine-readable code (`error` in its JSON), when given.
        code: Option<String>,
        message: String,
        /// `Retry-After`, when the server sent one.
        retry_after: Option<Duration>,
    },
    /// The request never got an answer: connection refused or reset, timeout, cut body.
    #[error("could not reach the server: {0}")]
    Network(String),
    /// The server answered, but not in a way this client understands.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// Retries did not help within the time allowed.
    #[error("gave up after retrying for {}: {last}", crate::retry::human_duration(*waited))]
    GaveUp { waited: Duration, last: Box<Error> },
    /// The local file changed while it was being uploaded.
    #[error("{} changed while it was being uploaded", path.display())]
    FileChanged { path: PathBuf },
    /// A download's bytes do not match the digest the server announced in its ETag.
    #[error(
        "the downloaded bytes do not match the server's {alg} digest (expected {expected}, got {actual})"
    )]
    DigestMismatch {
        alg: &'static str,
        expected: String,
        actual: String,
    },
    /// The remote file changed while it was being downloaded, more often than makes sense
    /// to keep restarting.
    #[error("the remote file keeps changing while it is downloaded: {0}")]
    RemoteChanged(String),
    /// The server's TLS certificate was refused (unknown issuer, wrong name, expired).
    /// Waiting does not change a certificate, so this is not retried.
    #[error("the server's certificate is not trusted: {0}")]
    Certificate(String),
    /// Bad options (e.g. an unparsable server URL).
    #[error("{0}")]
    Config(String),
}

impl Error {
    pub(crate) fn local(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Local {
            path: path.into(),
            source,
        }
    }

    /// A transport error, said with its root cause ("Connection refused", "connection reset
    /// by peer", "operation timed out"), which reqwest keeps at the end of its `source()`
    /// chain rather than in its own message.
    pub(crate) fn network(e: &reqwest::Error) -> Error {
        let mut cause: &dyn std::error::Error = e;
        while let Some(c) = cause.source() {
            cause = c;
        }
        let what = if e.is_timeout() {
            "the server did not answer in time".to_owned()
        } else {
            cause.to_string()
        };
        let what = match e.url() {
            Some(url) => format!("{url}: {what}"),
            None => what,
        };
        // rustls says "invalid peer certificate: UnknownIssuer" (and the like) somewhere in
        // the chain; reqwest does not expose the TLS error as a type of its own.
        let mut link: Option<&dyn std::error::Error> = Some(e);
        while let Some(l) = link {
            if l.to_string().contains("invalid peer certificate") {
                return Error::Certificate(what);
            }
            link = l.source();
        }
        Error::Network(what)
    }

    /// The HTTP status, for server errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Server { status, .. } => Some(*status),
            Error::GaveUp { last, .. } => last.status(),
            _ => None,
        }
    }

    /// Whether trying again later can succeed: network failures, overload and server-side
    /// faults, and the statuses that mean "not now" (408, 423, 425, 429, 5xx).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Network(_) => true,
            // 507: the server's disk is full. Retrying at once only sends bytes it cannot
            // keep; the person has to free space first.
            Error::Server { status: 507, .. } => false,
            Error::Server { status, .. } => {
                matches!(status, 408 | 423 | 425 | 429) || (500..600).contains(status)
            }
            _ => false,
        }
    }

    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// What the user can do next, when there is something useful to say.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::GaveUp { .. } | Error::Network(_) => Some(
                "check that the server is up, then run the same command again: it resumes from what the server holds",
            ),
            Error::Certificate(_) => Some(
                "for a self-signed or private CA certificate pass it with --cacert FILE (PEM); --insecure skips the check (tests only)",
            ),
            Error::Server { status: 401, .. } => {
                Some("pass a valid token with --token (or FERRY_TOKEN)")
            }
            Error::Server { status: 404, .. } => Some("check the URL"),
            Error::Server {
                code: Some(code), ..
            } if code.ends_with("digest_mismatch") => Some(
                "the file may have changed since it was hashed: run the same command again once it no longer changes",
            ),
            Error::Server { status: 413, .. } => {
                Some("the server refuses files this large (its --max-upload-size)")
            }
            Error::Server { status: 507, .. } => Some(
                "the server is out of disk space: once its operator has freed space, run the same command again; it resumes from what the server holds",
            ),
            Error::Server { status, .. } if *status >= 500 => {
                Some("run the same command again later: it resumes from what the server holds")
            }
            Error::FileChanged { .. } => {
                Some("run the command again once the file no longer changes: a new upload starts")
            }
            Error::DigestMismatch { .. } => Some(
                "the partial file was removed; run the same command again to download it afresh",
            ),
            Error::RemoteChanged(_) => Some("run the same command again later"),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
