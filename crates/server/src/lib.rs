//! ferry-server: the HTTP server. One engine, several thin protocol fronts:
//!
//! - [`chunked`]: the chunk-handshake dialect (SPEC §2.1),
//! - [`offset`]: the byte-offset resume dialect (SPEC §2.2),
//! - [`tus`]: tus 1.0.0 and the IETF resumable-upload draft at `/files/` (SPEC §2.3, §2.4),
//! - [`files`]: finished files by id and by `fileId` + extension, through [`download`] (SPEC §3),
//! - [`cors`]: CORS for every route, so browsers can use every dialect,
//! - [`web`]: the upload page at `/` and the browser SDK at `/sdk/` (SPEC §5),
//! - [`metrics`], `/healthz`: operations (SPEC §7).
//!
//! [`app`] builds the router from a state, [`run`] serves it on a listener until a shutdown
//! future resolves, and [`serve`] is the `ferry serve` entry point. Tests use the first two
//! on `127.0.0.1:0`.

pub mod auth;
pub mod caller;
pub mod chunked;
pub mod config;
pub mod cors;
pub mod download;
pub mod error;
pub mod files;
pub mod files_api;
pub mod form;
pub mod fronts;
pub mod hooks;
pub mod hygiene;
pub mod links;
pub mod metrics;
pub mod offset;
pub mod resumable;
pub mod tls;
pub mod transport;
pub mod tus;
pub mod web;

use crate::config::ServeArgs;
use crate::error::ApiError;
use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ferry_core::Engine;
use ferry_core::codes;
use ferry_core::engine::EngineConfig;
use ferry_core::store::{Blobs, Meta};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Shared state of every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub metrics: Arc<metrics::Metrics>,
    /// Fixed base for URLs handed out (`--public-url`), else derived from each request.
    pub public_url: Option<Arc<str>>,
    /// Where multipart chunks are spooled when their ids arrive after their bytes.
    pub spool_dir: Arc<PathBuf>,
    /// The configured identities (tokens, JWT keys); none means no authentication.
    pub auth: Arc<auth::Auth>,
    /// Signs and checks download links.
    pub links: Arc<links::LinkSigner>,
    /// `--expire-incomplete`: idle incomplete uploads are removed after this long (zero:
    /// never). Fronts announce it (tus `Upload-Expires`).
    pub expire_incomplete: Duration,
    /// `--web-dir`: serve the page and SDK from here instead of the embedded copy.
    pub web_dir: Option<Arc<PathBuf>>,
    /// The data directory's lock, held as long as any handle on this state lives.
    pub data_lock: Arc<std::fs::File>,
    /// Timeouts, connection cap and shutdown grace of [`run`]'s accept loop.
    pub transport: transport::Settings,
    /// Who may read `/metrics`, and on which listener.
    pub metrics_access: Arc<metrics::Access>,
    /// `--tls-cert` and `--tls-key`: the main listener speaks HTTPS (reloaded on SIGHUP).
    pub tls: Option<Arc<tls::Tls>>,
    /// `--s3-redirect-downloads`: downloads are redirected to presigned URLs when the store
    /// can make them.
    pub redirect_downloads: bool,
}

impl AppState {
    /// Base URL for links in responses: `--public-url`, or the request's own `Host` (over
    /// HTTP/2 the transport copies `:authority` there), with `https` on a TLS listener or
    /// behind a proxy that says `X-Forwarded-Proto: https`.
    pub fn base_url(&self, headers: &HeaderMap) -> String {
        if let Some(base) = &self.public_url {
            return base.trim_end_matches('/').to_owned();
        }
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            })
            .unwrap_or("localhost");
        let forwarded_https = headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            == Some("https");
        let proto = if self.tls.is_some() || forwarded_https {
            "https"
        } else {
            "http"
        };
        format!("{proto}://{host}")
    }

    /// The URL that downloads a finished upload, as reported to its owner (SPEC §6): with
    /// authentication configured, a signed, expiring link to `/files/<id>` that works
    /// without credentials; without authentication, the plain `/files/<id>`.
    pub fn download_url(&self, headers: &HeaderMap, u: &ferry_core::upload::Upload) -> String {
        self.upload_link(headers, &u.id)
    }

    /// `/files/<id>` as handed to the upload's owner (tus and IETF `Location`, byte-offset
    /// `url`, the chunk dialect's `data`): signed when authentication is configured, so the
    /// same URL that the owner's client resumes with (credentials decide there; the query is
    /// ignored) downloads the finished file for whoever the owner shares it with.
    pub fn upload_link(&self, headers: &HeaderMap, id: &ferry_core::upload::UploadId) -> String {
        let path = format!("/files/{id}");
        let base = self.base_url(headers);
        if self.auth.enabled() {
            format!("{base}{}", self.links.sign(&path))
        } else {
            format!("{base}{path}")
        }
    }
}

/// The metadata store `--database` names: SQLite (the default, one node) or PostgreSQL
/// (shared by several nodes). Errors name the flag and never the password.
async fn open_meta(
    db: &config::Database,
    pool_size: usize,
) -> anyhow::Result<(Meta, Option<Arc<dyn ferry_core::coord::Coordinator>>)> {
    Ok(match db {
        config::Database::Sqlite(path) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let store = ferry_store::sqlite::SqliteMetaStore::open(path)
                .map_err(|e| anyhow::anyhow!("--database {}: {e}", path.display()))?;
            (Meta(Arc::new(store)), None)
        }
        config::Database::Postgres(url) => {
            let store = ferry_store::postgres::PgMetaStore::connect(url, pool_size)
                .await
                .map_err(|e| {
                    let why = match e {
                        ferry_core::store::MetaError::Backend(m)
                        | ferry_core::store::MetaError::Unavailable(m) => m,
                        other => other.to_string(),
                    };
                    anyhow::anyhow!("--database {}: {why}", config::redact_url(url))
                })?;
            // Several nodes may share this database: writes lease their ranges in it.
            let coord = ferry_store::postgres::coord::PgCoordinator::start(&store)
                .await
                .map_err(|e| anyhow::anyhow!("--database {}: {e}", config::redact_url(url)))?;
            (
                Meta(Arc::new(store)),
                Some(coord as Arc<dyn ferry_core::coord::Coordinator>),
            )
        }
    })
}

/// The blob store `--storage` names: a directory, or a bucket whose existence and
/// credentials are checked here, so a wrong one stops the start with a sentence naming the
/// flag. Its writes spool under `spool/s3` of the data directory.
async fn open_blobs(storage: &config::Storage, spool: &std::path::Path) -> anyhow::Result<Blobs> {
    Ok(match storage {
        config::Storage::Dir(dir) => Blobs(Arc::new(
            ferry_store::fs::FsBlobStore::open(dir.clone())
                .with_context(|| format!("opening storage {}", dir.display()))?,
        )),
        config::Storage::S3(s3) => {
            let client = s3
                .client(|name| std::env::var(name).ok())
                .map_err(anyhow::Error::msg)?;
            s3.check(&client).await.map_err(anyhow::Error::msg)?;
            let limits = ferry_core::parts::PartLimits {
                equal_parts: s3.equal_parts,
                ..ferry_core::parts::PartLimits::S3
            };
            let store = ferry_store::s3::S3BlobStore::new(
                client,
                s3.prefix.clone(),
                limits,
                spool.join("s3"),
            )
            .with_context(|| format!("creating the spool directory in {}", spool.display()))?;
            Blobs(Arc::new(store))
        }
    })
}

/// Opens the backends (filesystem or S3, and SQLite or PostgreSQL) and builds the engine
/// and state.
pub async fn state_from_args(args: &ServeArgs) -> anyhow::Result<AppState> {
    // First: a certificate that cannot be used stops the start before anything is created.
    let tls = tls::Tls::from_args(args.tls_cert.as_deref(), args.tls_key.as_deref())?;
    let storage = args.storage()?;
    let db = args.database_url()?;
    let hooks = hooks::HookConfig::from_args(args)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let data_lock = lock_data_dir(&args.data_dir)?;
    if let Some(dir) = &args.web_dir
        && !dir.join("app").is_dir()
    {
        anyhow::bail!(
            "--web-dir {}: no app/ directory there; give the directory that holds app/ and \
             sdk/ (the repository's web/), or leave --web-dir out to serve the embedded page",
            dir.display()
        );
    }
    let spool_dir = args.data_dir.join("spool");
    // Spooled chunks of requests that died with the last process are garbage.
    let _ = std::fs::remove_dir_all(&spool_dir);
    std::fs::create_dir_all(&spool_dir)?;
    let blobs = open_blobs(&storage, &spool_dir).await?;
    let (meta, coord) = open_meta(&db, args.database_pool_size).await?;
    let engine = Engine::with_coordinator(
        meta,
        blobs,
        EngineConfig {
            max_upload_size: args.max_upload_size,
            min_free_space: args.min_free_space.unwrap_or(0),
        },
        coord,
    );
    engine.follow_preemptions();
    let auth = Arc::new(auth::Auth::from_args(args)?);
    let links = Arc::new(links::LinkSigner::from_args(args)?);
    if let Some(mut cfg) = hooks {
        if auth.enabled() {
            cfg = cfg.signing_links(links.clone());
        }
        engine.set_hooks(Arc::new(hooks::HttpHooks::start(cfg, &args.data_dir)?));
    }
    Ok(AppState {
        engine,
        metrics: Arc::default(),
        public_url: args.public_url.as_deref().map(Arc::from),
        spool_dir: Arc::new(spool_dir),
        auth,
        links,
        expire_incomplete: args.expire_incomplete,
        web_dir: args.web_dir.clone().map(Arc::new),
        data_lock: Arc::new(data_lock),
        transport: transport::Settings::from_args(args),
        metrics_access: Arc::new(metrics::Access::from_args(args)?),
        tls,
        redirect_downloads: args.s3_redirect_downloads,
    })
}

/// Takes the exclusive lock of the data directory (`<data-dir>/ferry.lock`), so a second
/// `ferry serve` on the same directory refuses to start instead of writing beside the first
/// (its recovery would remove the first one's uploads in flight). The kernel drops the lock
/// when the process ends, however it ends: a crashed server never leaves a stale lock.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("ferry.lock");
    match ferry_core::lock::lock_file(&path)
        .with_context(|| format!("locking {}", path.display()))?
    {
        Some(mut file) => {
            ferry_core::crash::point("server.data_dir.locked");
            // The holder's PID, for the sentence a second server prints (informational: the
            // lock is the flock, not the file's content).
            use std::io::{Seek, Write};
            file.set_len(0)?;
            file.seek(std::io::SeekFrom::Start(0))?;
            writeln!(file, "{}", std::process::id())?;
            Ok(file)
        }
        None => {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .map_or_else(
                    || "another process".to_owned(),
                    |pid| format!("process {pid}"),
                );
            anyhow::bail!(
                "the data directory {} is in use by another ferry server ({holder}); stop it \
                 first, or give this one its own --data-dir",
                dir.display()
            )
        }
    }
}

/// The router: every dialect and download route over one state.
pub fn app(state: AppState) -> Router {
    // The chunk and byte-offset fronts share their upload path.
    let shared = Router::new()
        .route("/api/upload", post(upload_dispatch))
        .route("/upload", post(upload_dispatch))
        .route_layer(middleware::from_fn(caller::require));
    let mut router = Router::new().merge(shared).route(
        "/upload/{name}",
        get(files::by_file_id).head(files::by_file_id),
    );
    for front in fronts::all() {
        state.engine.stats().register(front.dialect);
        router = router.merge((front.routes)(state.clone()));
    }
    router
        .merge(files_api::routes())
        .merge(web::routes())
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::handler))
        // Upload bodies are streamed and bounded by the engine's size rules, not by a
        // blanket body limit (axum's default is 2 MB).
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            caller::identify,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(middleware::from_fn(hygiene::check))
        // Outermost, so preflights are answered before anything else and every response,
        // errors included, carries the CORS headers.
        .layer(middleware::from_fn(cors::layer))
        .with_state(state)
}

/// `POST /api/upload` (and `/upload`) carries two dialects: `multipart/form-data` is a chunk
/// of the handshake dialect, a raw body with `X-File-Id` is a byte-offset write (SPEC §2.2).
async fn upload_dispatch(state: State<AppState>, caller: caller::Caller, req: Request) -> Response {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if is_multipart {
        chunked::upload_chunk(state, caller, req).await
    } else if req.headers().contains_key("x-file-id") {
        offset::upload(state, caller, req).await.into_response()
    } else {
        ApiError::bad_request(
            codes::UNKNOWN_UPLOAD_FORM,
            "send either multipart/form-data with file, chunkId and fileId (chunk handshake), \
             or a raw body with X-File-Id and X-Start-Byte or Content-Range (byte-offset resume)",
        )
        .into_response()
    }
}

/// `GET /healthz`: 200 when the store and the database answer (SPEC §7).
async fn healthz(State(state): State<AppState>) -> Response {
    // A backend that does not answer within this is as good as down: /healthz answers in
    // about 2 s whatever happens to the network (a load balancer's check times out too).
    const WAIT: std::time::Duration = std::time::Duration::from_millis(1500);
    let timed_out = || "no answer within 1.5 s".to_owned();
    let (meta, blobs) = tokio::join!(
        tokio::time::timeout(WAIT, state.engine.meta().ping()),
        tokio::time::timeout(WAIT, state.engine.blobs().ping()),
    );
    let meta = meta
        .map_err(|_| timed_out())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let blobs = blobs
        .map_err(|_| timed_out())
        .and_then(|r| r.map_err(|e| e.to_string()));
    // Degraded while the store is below its reserve of free space (with no reserve set:
    // below 1 MiB, when nothing more can be stored anyway).
    if let Some((free, reserve)) = state.engine.free_space()
        && free < reserve.max(1 << 20)
    {
        tracing::warn!(free, reserve, "health check: out of disk space");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("degraded: out of disk space ({free} bytes free, {reserve} reserved)\n"),
        )
            .into_response();
    }
    match (meta, blobs) {
        (Ok(()), Ok(())) => (StatusCode::OK, "ok\n").into_response(),
        (m, b) => {
            tracing::error!(meta = ?m.err(), blobs = ?b.err(), "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable\n").into_response()
        }
    }
}

/// Serves `app(state)` on `listener` until `shutdown` resolves, through the hardened accept
/// loop of [`transport`]: head timeout, head size limit (431), body idle timeout, connection
/// cap (503 `Retry-After: 1` past it) and ambiguous framing refused, all set by
/// `state.transport`. On shutdown it stops accepting and lets requests in flight (a chunk
/// streaming in) finish for the grace period; bodies still streaming then end like dropped
/// connections, keeping what arrived, and their answers are sent before it returns. With
/// `state.tls` the listener speaks HTTPS (HTTP/2 or HTTP/1.1 by ALPN) and SIGHUP reloads the
/// certificate; without, plain HTTP/1.1 and h2c (HTTP/2 with prior knowledge). With
/// `--metrics-listen`, `/metrics` is served on its own listener, bound here. Recovery runs
/// first; background tasks (expiry) stop with it.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    expire_incomplete: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use futures_util::FutureExt;
    match state.engine.recover().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            completed = n,
            "finished uploads that were complete at the last stop"
        ),
        Err(e) => tracing::warn!(error = %e, "recovery scan failed"),
    }
    let metrics_listener = match state.metrics_access.listen {
        Some(addr) => {
            let l = transport::bind(addr)
                .with_context(|| format!("binding --metrics-listen {addr}"))?;
            let bound = l.local_addr()?;
            state.metrics_access.set_bound(bound);
            tracing::info!(listen = %bound, "serving /metrics on its own listener");
            Some(l)
        }
        None => None,
    };
    let janitor = (!expire_incomplete.is_zero()).then(|| {
        let engine = state.engine.clone();
        let every =
            (expire_incomplete / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = engine.expire(expire_incomplete).await {
                    tracing::warn!(error = %e, "expiry pass failed");
                }
            }
        })
    });
    // Installed before serving, so an early SIGHUP reloads rather than ends the process.
    #[cfg(unix)]
    let reloader = match &state.tls {
        Some(t) => Some(tokio::spawn(
            tls::reload_on_sighup(t.clone()).context("installing the SIGHUP handler")?,
        )),
        None => None,
    };
    let settings = state.transport;
    let shutdown = shutdown.shared();
    let metrics = async {
        if let Some(l) = metrics_listener {
            let settings = transport::Settings {
                max_connections: Some(64),
                ..settings
            };
            transport::serve(
                l,
                metrics::router(state.clone()),
                settings,
                None,
                shutdown.clone(),
            )
            .await;
        }
    };
    let main = transport::serve(
        listener,
        app(state.clone()),
        settings,
        state.tls.clone(),
        shutdown.clone(),
    );
    tokio::join!(main, metrics);
    if let Some(j) = janitor {
        j.abort();
    }
    #[cfg(unix)]
    if let Some(r) = reloader {
        r.abort();
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// Sets up logging from `RUST_LOG` (default `info`), as text or JSON lines.
pub fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal: a redirected log (a file, journald, a pipe
    // into grep) gets plain text, like nginx's and curl's.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if format == "json" {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// `ferry serve`.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args.log_format);
    // Before anything opens files: the connection cap is computed from this limit.
    transport::raise_open_file_limit();
    let addr = args.listen_addr()?;
    let state = state_from_args(&args).await?;
    if !addr.ip().is_loopback() && !state.auth.enabled() && !args.insecure_no_auth {
        anyhow::bail!(
            "refusing to listen on {addr} without authentication: set --auth-token or \
             --auth-tokens-file, or pass --insecure-no-auth if this network is trusted"
        );
    }
    let listener = transport::bind(addr).with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    // A URL a person can click: the page is at `/`. An unspecified address is shown as the
    // loopback one, which reaches it from this machine.
    let shown = match local.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, local.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, local.port()))
        }
        _ => local,
    };
    let scheme = if state.tls.is_some() { "https" } else { "http" };
    let page = match &args.public_url {
        Some(base) => format!("{}/", base.trim_end_matches('/')),
        None => format!("{scheme}://{shown}/"),
    };
    tracing::info!(
        listen = %local,
        data_dir = %args.data_dir.display(),
        "ferry is serving: the upload page is at {page}"
    );
    run(listener, state, args.expire_incomplete, shutdown_signal()).await
}
