//! `GET /metrics` in the Prometheus text exposition format, and the middleware that times
//! requests. Counters of uploads and bytes come from the engine; latency histograms are kept
//! here with fixed buckets and atomics, so recording a request costs no allocation or lock.

use crate::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferry_core::engine::Stats;
use ferry_core::upload::Dialect;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// Route groups requests are counted under (a closed set keeps label cardinality fixed).
const ROUTES: [&str; 7] = [
    "handshake",
    "upload",
    "status",
    "download",
    "tus",
    "ops",
    "other",
];

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds (atomics have no f64 add).
    sum_us: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    latency: [Histogram; ROUTES.len()],
    /// Responses by status class: 2xx, 3xx, 4xx, 5xx.
    status: [[AtomicU64; 4]; ROUTES.len()],
}

/// `/files` serves tus and the IETF draft ("tus") as well as downloads: a GET, or a HEAD
/// without either protocol's header, is a download.
fn route_group(method: &Method, path: &str, headers: &HeaderMap) -> usize {
    let download = method == Method::GET
        || (method == Method::HEAD
            && !headers.contains_key("tus-resumable")
            && !headers.contains_key("upload-draft-interop-version"));
    let name = match path {
        "/api/upload/handshake" => "handshake",
        "/api/upload" | "/upload" => "upload",
        "/api/upload/status" | "/status" => "status",
        "/healthz" | "/metrics" => "ops",
        "/files" | "/files/" => "tus",
        "/files/{id}" if !download => "tus",
        p if p.starts_with("/upload/") || p.starts_with("/files/") => "download",
        _ => "other",
    };
    ROUTES
        .iter()
        .position(|r| *r == name)
        .unwrap_or(ROUTES.len() - 1)
}

impl Metrics {
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

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self, stats: &Stats) -> String {
        let mut out = String::with_capacity(4096);
        let counters: [(&str, &str, &[AtomicU64; 3]); 4] = [
            (
                "ferry_bytes_received_total",
                "Request body bytes read for uploads.",
                &stats.bytes_received,
            ),
            (
                "ferry_uploads_started_total",
                "Uploads created.",
                &stats.started,
            ),
            (
                "ferry_uploads_completed_total",
                "Uploads completed and published.",
                &stats.completed,
            ),
            (
                "ferry_uploads_failed_total",
                "Uploads discarded (digest mismatch, expiry).",
                &stats.failed,
            ),
        ];
        for (name, help, values) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for d in Dialect::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{dialect=\"{}\"}} {}",
                    d.name(),
                    Stats::get(values, d)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP ferry_rehashed_bytes_total Bytes read back to finish whole-file digests.\n# TYPE ferry_rehashed_bytes_total counter\nferry_rehashed_bytes_total {}",
            stats.rehashed_bytes.load(Ordering::Relaxed)
        );
        let name = "ferry_http_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer HTTP requests, by route group.\n# TYPE {name} histogram"
        );
        for (g, route) in ROUTES.iter().enumerate() {
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
        for (g, route) in ROUTES.iter().enumerate() {
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
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    let method = req.method().clone();
    let group = route_group(&method, &path, req.headers());
    let resp = next.run(req).await;
    let secs = started.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    state.metrics.record(group, status, secs);
    tracing::debug!(%method, %path, status, ms = secs * 1e3, "request");
    resp
}

pub async fn handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(state.engine.stats()),
    )
}
