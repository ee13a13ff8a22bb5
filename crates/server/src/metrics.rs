//! `GET /metrics` in the Prometheus text exposition format, and the middleware that times
//! requests. With `--metrics-token` the exposition needs `Authorization: Bearer <token>`;
//! with `--metrics-listen` it is served on that address only (see [`router`]) and the main
//! listener answers 404. Counters of uploads and bytes come from the engine; latency
//! histograms are kept here with fixed buckets and atomics, so recording a request costs no
//! allocation or lock.

use crate::AppState;
use crate::config::ServeArgs;
use crate::error::ApiError;
use anyhow::Context as _;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ferry_core::codes;
use ferry_core::engine::{DialectStats, Stats};
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds (atomics have no f64 add).
    sum_us: AtomicU64,
}

/// Request latency and status classes by route group. The groups are the fronts' (see
/// [`crate::fronts`]) and the server's own, fixed at start, so label cardinality is fixed.
pub struct Metrics {
    groups: Vec<&'static str>,
    latency: Vec<Histogram>,
    /// Responses by status class: 2xx, 3xx, 4xx, 5xx.
    status: Vec<[AtomicU64; 4]>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut groups = crate::fronts::metric_groups();
        // The files API (`files_api`) is no front; its group goes before `other`, kept last.
        groups.insert(groups.len() - 1, "files");
        Metrics {
            latency: groups.iter().map(|_| Histogram::default()).collect(),
            status: groups.iter().map(|_| Default::default()).collect(),
            groups,
        }
    }
}

/// The group name of a request: `/files/{id}` serves tus and the IETF draft as well as
/// downloads (a GET, or a HEAD without either protocol's header, is a download); other
/// routes belong to the front that registered them, or to the server.
fn route_group_name(method: &Method, path: &str, headers: &HeaderMap) -> &'static str {
    let download = method == Method::GET
        || (method == Method::HEAD
            && !headers.contains_key("tus-resumable")
            && !headers.contains_key("upload-draft-interop-version"));
    match path {
        "/healthz" | "/metrics" => "ops",
        "/api/files" | "/api/files/{id}" => "files",
        "/files/{id}" | "/upload/{name}" if download => "download",
        p => crate::fronts::metric_group_of(p).unwrap_or(
            if p.starts_with("/upload/") || p.starts_with("/files/") {
                "download"
            } else {
                "other"
            },
        ),
    }
}

impl Metrics {
    fn group(&self, method: &Method, path: &str, headers: &HeaderMap) -> usize {
        let name = route_group_name(method, path, headers);
        self.groups
            .iter()
            .position(|g| *g == name)
            .unwrap_or(self.groups.len() - 1)
    }

    fn record(&self, group: usize, status: u16, secs: f64) {
        let h = &self.latency[group];
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        h.sum_us.fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        let class = (status / 100).clamp(2, 5) as usize - 2;
        self.status[group][class].fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every metric in the Prometheus text format, the backends' own included.
    pub fn render(&self, stats: &Stats, backends: &[ferry_core::store::Metric]) -> String {
        let mut out = String::with_capacity(4096);
        for m in backends {
            let _ = writeln!(
                out,
                "# HELP {} {}\n# TYPE {} {}\n{} {}",
                m.name, m.help, m.name, m.kind, m.name, m.value
            );
        }
        let _ = writeln!(
            out,
            "# HELP ferry_lock_waits_total Writes that waited for ranges another request held (on this or another node).\n# TYPE ferry_lock_waits_total counter\nferry_lock_waits_total {}",
            stats.lock_waits.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ferry_lock_wait_seconds_total Time those writes waited, in all.\n# TYPE ferry_lock_wait_seconds_total counter\nferry_lock_wait_seconds_total {}",
            stats.lock_wait_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        type Counter = fn(&DialectStats) -> &AtomicU64;
        let counters: [(&str, &str, Counter); 4] = [
            (
                "ferry_bytes_received_total",
                "Request body bytes read for uploads.",
                |d| &d.bytes_received,
            ),
            ("ferry_uploads_started_total", "Uploads created.", |d| {
                &d.started
            }),
            (
                "ferry_uploads_completed_total",
                "Uploads completed and published.",
                |d| &d.completed,
            ),
            (
                "ferry_uploads_failed_total",
                "Uploads discarded (digest mismatch, expiry).",
                |d| &d.failed,
            ),
        ];
        let dialects = stats.dialects();
        for (name, help, counter) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (d, values) in &dialects {
                let _ = writeln!(
                    out,
                    "{name}{{dialect=\"{d}\"}} {}",
                    counter(values).load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP ferry_rehashed_bytes_total Bytes read back to finish whole-file digests.\n# TYPE ferry_rehashed_bytes_total counter\nferry_rehashed_bytes_total {}",
            stats.rehashed_bytes.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP ferry_uploads_expired_total Incomplete uploads this node removed after --expire-incomplete idle.\n# TYPE ferry_uploads_expired_total counter\nferry_uploads_expired_total {}",
            stats.expired.load(Ordering::Relaxed)
        );
        let name = "ferry_http_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer HTTP requests, by route group.\n# TYPE {name} histogram"
        );
        for (g, route) in self.groups.iter().enumerate() {
            let h = &self.latency[g];
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{route=\"{route}\",le=\"{le}\"}} {}",
                    h.buckets[i].load(Ordering::Relaxed)
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "{name}_sum{{route=\"{route}\"}} {}",
                h.sum_us.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {count}");
        }
        let name = "ferry_http_responses_total";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP responses by route group and status class.\n# TYPE {name} counter"
        );
        for (g, route) in self.groups.iter().enumerate() {
            for (c, class) in ["2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}{{route=\"{route}\",class=\"{class}\"}} {}",
                    self.status[g][c].load(Ordering::Relaxed)
                );
            }
        }
        out
    }
}

/// Times every request and logs it at debug level.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    let method = req.method().clone();
    let http = match req.version() {
        axum::http::Version::HTTP_2 => "2",
        axum::http::Version::HTTP_10 => "1.0",
        _ => "1.1",
    };
    let group = state.metrics.group(&method, &route, req.headers());
    // The access line: the path without its query (a signed link's signature is a
    // capability and stays out of logs), the request's declared body size, the peer.
    let path = req.uri().path().to_owned();
    let bytes = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let resp = next.run(req).await;
    let secs = started.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    state.metrics.record(group, status, secs);
    let upload = resp
        .extensions()
        .get::<UploadRef>()
        .map(|u| u.0.to_string())
        .or_else(|| {
            path.strip_prefix("/files/")
                .and_then(ferry_core::upload::UploadId::parse)
                .map(|id| id.to_string())
        })
        .unwrap_or_default();
    let ms = (secs * 1e6).round() / 1e3;
    if state.metrics.groups[group] == "ops" {
        tracing::debug!(%method, %path, status, ms, %peer, "request");
    } else {
        tracing::info!(%method, %path, %upload, status, bytes, ms, %peer, %http, "request");
    }
    resp
}

/// The upload a response is about, for the access log line, when its path does not name it
/// (the chunk and byte-offset dialects find uploads by client keys).
#[derive(Clone, Debug)]
pub struct UploadRef(pub ferry_core::upload::UploadId);

/// Who may read `/metrics`, and where (`--metrics-token`, `--metrics-listen`).
pub struct Access {
    /// BLAKE3 of the token `/metrics` requires as `Authorization: Bearer`.
    token: Option<blake3::Hash>,
    /// `--metrics-listen`: `/metrics` is served there only.
    pub listen: Option<SocketAddr>,
    /// The address the metrics listener is bound to (known once [`crate::run`] bound it).
    bound: OnceLock<SocketAddr>,
}

impl Access {
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Self> {
        let listen = match &args.metrics_listen {
            None => None,
            Some(a) => Some(listen_addr(a)?),
        };
        let token = match args.metrics_token.as_deref() {
            None => None,
            Some("") => anyhow::bail!("--metrics-token is empty"),
            Some(t) => Some(blake3::hash(t.as_bytes())),
        };
        Ok(Access {
            token,
            listen,
            bound: OnceLock::new(),
        })
    }

    /// Records the metrics listener's address (see [`Access::bound_addr`]).
    pub fn set_bound(&self, addr: SocketAddr) {
        let _ = self.bound.set(addr);
    }

    /// Where the separate metrics listener accepts connections, once it does.
    pub fn bound_addr(&self) -> Option<SocketAddr> {
        self.bound.get().copied()
    }

    /// Whether the request may read the metrics: no token configured, or
    /// `Authorization: Bearer <token>` (scheme in any case). The presented token is hashed
    /// and the hashes compared in constant time (`blake3::Hash`'s `==`), so the time taken
    /// says nothing about how much of the token was right.
    /// Whether `--metrics-token` is set.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(want) = &self.token else {
            return true;
        };
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        match presented {
            Some(token) => blake3::hash(token.as_bytes()) == *want,
            None => false,
        }
    }
}

/// `--metrics-listen`: an address (`127.0.0.1:9090`, `[::1]:9090`) or a host name and port
/// (`localhost:9090`, its IPv4 address first), like `--listen`.
fn listen_addr(a: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = a.parse() {
        return Ok(addr);
    }
    let bad = || format!("--metrics-listen {a:?} is not an address like 127.0.0.1:9090");
    let (host, port) = a.rsplit_once(':').with_context(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        anyhow::bail!(bad());
    }
    let mut addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(a)
        .with_context(|| format!("--metrics-listen {a:?}: the host name does not resolve"))?
        .collect();
    addrs.sort_by_key(SocketAddr::is_ipv6);
    addrs.into_iter().next().with_context(bad)
}

/// `GET /metrics` on the main listener: 404 when `--metrics-listen` moved it elsewhere.
pub async fn handler(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.metrics_access.listen.is_some() {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            "no such resource; metrics are served on their own address",
        )
        .into_response();
    }
    // A server that authenticates its users does not publish its counters to anyone on the
    // main address: the operator gives /metrics its own token or its own address.
    if state.auth.enabled() && !state.metrics_access.has_token() {
        let mut resp = ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "this server authenticates its users, so /metrics needs its own token or address: \
             start it with --metrics-token or --metrics-listen",
        )
        .into_response();
        resp.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            "Bearer".parse().expect("static"),
        );
        return resp;
    }
    exposition(&state, &headers)
}

/// `GET /metrics` on the `--metrics-listen` listener.
async fn separate_handler(State(state): State<AppState>, headers: HeaderMap) -> Response {
    exposition(&state, &headers)
}

/// The router of the `--metrics-listen` listener: `/metrics` and nothing else.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(separate_handler))
        .with_state(state)
}

fn exposition(state: &AppState, headers: &HeaderMap) -> Response {
    if !state.metrics_access.allows(headers) {
        let mut resp = ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "/metrics needs Authorization: Bearer with the metrics token",
        )
        .into_response();
        resp.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"metrics\""),
        );
        return resp;
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        {
            let mut backends = state.engine.meta().metrics();
            backends.extend(state.engine.blobs().metrics());
            state.metrics.render(state.engine.stats(), &backends)
        },
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(token: Option<&str>) -> Access {
        let mut args = ServeArgs::for_dir(std::path::Path::new("/nonexistent"));
        args.metrics_token = token.map(str::to_owned);
        Access::from_args(&args).unwrap()
    }

    fn with_auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn metrics_listen_takes_addresses_and_host_names() {
        assert_eq!(
            listen_addr("127.0.0.1:9090").unwrap(),
            "127.0.0.1:9090".parse().unwrap()
        );
        assert_eq!(listen_addr("[::1]:9090").unwrap().port(), 9090);
        assert!(listen_addr("localhost:9090").unwrap().ip().is_loopback());
        for bad in ["9090", "localhost", ":9090", "localhost:99999"] {
            let e = listen_addr(bad).unwrap_err().to_string();
            assert!(e.contains("--metrics-listen"), "{bad}: {e}");
        }
    }

    #[test]
    fn bearer_token_is_required_when_configured() {
        assert!(access(None).allows(&HeaderMap::new()));
        let a = access(Some("s3cret"));
        assert!(!a.allows(&HeaderMap::new()));
        assert!(a.allows(&with_auth("Bearer s3cret")));
        assert!(a.allows(&with_auth("bearer s3cret")));
        assert!(a.allows(&with_auth("BEARER  s3cret ")));
        assert!(!a.allows(&with_auth("Bearer s3cre")));
        assert!(!a.allows(&with_auth("Bearer s3cret2")));
        assert!(!a.allows(&with_auth("Basic s3cret")));
        assert!(!a.allows(&with_auth("s3cret")));
    }
}
