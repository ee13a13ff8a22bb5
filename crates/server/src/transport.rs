//! The server's own accept loop: HTTP/1.1 and HTTP/2 over hyper, in cleartext or TLS, made
//! to hold up on the open internet (SPEC §7). [`serve`] replaces `axum::serve` so that every
//! limit below is ours to set.
//!
//! **Protocols.** With a [`Tls`] configuration every connection starts with a TLS handshake
//! (bounded by `--header-timeout`), and ALPN picks HTTP/2 (`h2`) or HTTP/1.1. In cleartext,
//! and over TLS when ALPN chose nothing, the first bytes decide: the HTTP/2 connection
//! preface is h2c with prior knowledge (how nginx `grpc_pass`, Envoy and HAProxy speak
//! HTTP/2 to a backend), anything else HTTP/1.1. Both protocols serve the same router with
//! the same per-request guards (peer address, body idle timeout, shutdown cut-off,
//! descriptor budget); HTTP/2 requests get a `Host` header from `:authority` when they have
//! none, so handlers building URLs find the authority where HTTP/1.1 puts it.
//!
//! - **Head timeout** (`--header-timeout`): a request head (line and headers) must arrive
//!   within this long, counted from when the connection is ready for it; a client dribbling
//!   its head, or a keep-alive connection left idle, is disconnected (hyper's
//!   `header_read_timeout`).
//! - **Head size**: at most [`MAX_HEADER_BYTES`]; a larger head gets hyper's own
//!   `431 Request Header Fields Too Large`, then the connection is closed.
//! - **Body idle timeout** (`--idle-timeout`): a request body that delivers no data for this
//!   long ends with an error ([`GuardedBody`], whose timer restarts with every frame), which
//!   the engine treats like a dropped connection: it keeps what arrived.
//! - **Connection cap** (`--max-connections`, default from `RLIMIT_NOFILE`, see
//!   [`descriptor_budget`]) and **descriptor budget**: connections are counted against the
//!   cap, and descriptors against the budget, one per open connection and one more per
//!   request in flight (its upload file, its download, its database work). Past either a
//!   connection is accepted and answered at once with `503` and `Retry-After: 1` (a request
//!   on an open connection that finds no descriptor gets the same answer without reaching a
//!   handler), so clients learn to back off instead of waiting in the listen backlog, and
//!   the descriptors left (the reserve) stay free for the database and the listener. Should
//!   the process run out of descriptors anyway, a spare one is closed to take the waiting
//!   connection and answer it the same way.
//! - **Shutdown grace** (`--shutdown-grace`): when the shutdown future resolves, the listener
//!   closes, connections without a request in flight (idle, or a head still arriving)
//!   close, and requests in flight may finish. When the grace
//!   period is over, request bodies still streaming end with an error, so their handlers
//!   commit what arrived and answer, like after a dropped connection; whatever is still open
//!   [`AFTER_CUTOFF`] later is aborted.
//! - **Ambiguous framing**: when `Transfer-Encoding` is present hyper silently drops
//!   `Content-Length`, frames the body as chunked and closes the connection after the
//!   answer. The raw bytes are followed here (the same framing rules as hyper's, see
//!   `Tracker`) so such a request reaches the router marked with
//!   [`hygiene::ConflictingFraming`] and is refused with `400` before anything is stored.
//!
//! - **HTTP/2 limits**: [`H2_MAX_STREAMS`] streams at once per connection, a
//!   [`MAX_HEADER_BYTES`] header list, flow-control windows of [`H2_STREAM_WINDOW`] per
//!   stream and [`H2_CONNECTION_WINDOW`] per connection (room for fast uploads), a ping every
//!   [`H2_KEEP_ALIVE`] that must be answered within as long, and a connection with no stream
//!   open for `--header-timeout` is closed (`GOAWAY`), as an idle HTTP/1.1 one is. The head
//!   timeout and the framing checks are HTTP/1 matters: HTTP/2 frames every body itself.
//!
//! The connection cap, the descriptor budget and the shutdown grace count every connection,
//! whatever its protocol; past the cap a TLS connection gets its `503` after the handshake.
//!
//! Handlers can extract `ConnectInfo<SocketAddr>`: the peer address is a request extension.

use crate::config::ServeArgs;
use crate::hygiene;
use crate::tls::Tls;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::response::Response;
use bytes::{Buf, Bytes};
use ferry_core::codes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Largest request head (request line and headers) read; larger ones get `431`.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// After the grace period, how long cut-off requests get to commit and answer before their
/// connections are aborted.
pub const AFTER_CUTOFF: Duration = Duration::from_secs(5);

/// Connections answered `503` at once, at most (each holds a descriptor of the reserve for up
/// to [`REFUSAL_LINGER`]); past this, connections over the cap are closed unanswered.
const REFUSING_AT_ONCE: usize = 32;

/// Connections taken from the listen backlog in one go.
const ACCEPT_BATCH: usize = 256;

/// The listen backlog of [`bind`] (the kernel caps it at `net.core.somaxconn`); the 128 of
/// `TcpListener::bind` overflows in a burst of connections, and a dropped SYN costs the
/// client a one-second retransmission.
pub const LISTEN_BACKLOG: u32 = 4096;

/// How long a refused connection is kept to read what the client sent, so that closing it
/// does not reset the connection under the `503` before the client read it.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// HTTP/2 streams open at once on one connection (`SETTINGS_MAX_CONCURRENT_STREAMS`).
pub const H2_MAX_STREAMS: u32 = 256;

/// HTTP/2 flow-control window of each request body: how much a client may send ahead of the
/// handler reading it, which bounds one upload to a window per round trip. Measured with one
/// upload stream through a 40 ms round trip: the protocol's default 64 KiB gives 1.5 MB/s,
/// 4 MiB about 70 MB/s, 8 MiB about 125 MB/s (and 55 MB/s at 100 ms); hyper's adaptive
/// window, which starts at 64 KiB, about 115 MB/s.
pub const H2_STREAM_WINDOW: u32 = 8 << 20;

/// HTTP/2 flow-control window of a whole connection, shared by its streams: the most request
/// body data one connection can have buffered in the server, unread (two streams' worth, so
/// one stalled upload cannot starve the others on its connection).
pub const H2_CONNECTION_WINDOW: u32 = 16 << 20;

/// Largest HTTP/2 frame the server accepts (`SETTINGS_MAX_FRAME_SIZE`): fewer, larger DATA
/// frames (with 16 KiB frames a local h2c upload ran about a third slower than HTTP/1.1;
/// with 256 KiB ones as fast).
pub const H2_MAX_FRAME: u32 = 256 << 10;

/// HTTP/2 keep-alive: a ping this often, and the connection is closed when its answer takes
/// longer than this.
pub const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// The HTTP/2 connection preface (RFC 9113 §3.4), how h2c with prior knowledge begins.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The transport's settings, from `ferry serve`'s flags.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// `--header-timeout` (zero: none).
    pub header_timeout: Duration,
    /// `--idle-timeout` (zero: none).
    pub idle_timeout: Duration,
    /// `--shutdown-grace`.
    pub shutdown_grace: Duration,
    /// `--max-connections`; `None`: as many as the [`descriptor_budget`].
    pub max_connections: Option<usize>,
}

impl Settings {
    pub fn from_args(args: &ServeArgs) -> Self {
        Settings {
            header_timeout: args.header_timeout,
            idle_timeout: args.idle_timeout,
            shutdown_grace: args.shutdown_grace,
            max_connections: args.max_connections,
        }
    }

    /// Connections served at once.
    pub fn connection_cap(&self) -> usize {
        self.max_connections
            .unwrap_or_else(descriptor_budget)
            .clamp(1, Semaphore::MAX_PERMITS)
    }
}

/// The descriptors connections and requests may use: the soft `RLIMIT_NOFILE` minus a
/// reserve of `max(64, limit / 8)` for SQLite, the listener, logging and the `503` answers.
/// An open connection counts one, a request in flight one more (an upload streaming in
/// holds its file as well as its socket). Also the default connection cap.
pub fn descriptor_budget() -> usize {
    let soft = open_file_limit().unwrap_or(1024);
    let soft = usize::try_from(soft).unwrap_or(usize::MAX).min(1 << 24);
    soft.saturating_sub((soft / 8).max(64))
        .clamp(1, Semaphore::MAX_PERMITS)
}

/// The soft `RLIMIT_NOFILE`.
fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rlimit::getrlimit(rlimit::Resource::NOFILE)
            .ok()
            .map(|(soft, _)| soft)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raises the soft open-file limit to the hard limit, as nginx's `worker_rlimit_nofile`
/// would: the default soft limit (often 1024) is far below what a server with thousands of
/// connections needs, and the hard limit is what the administrator allowed. Logged.
pub fn raise_open_file_limit() {
    #[cfg(unix)]
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, hard)) if soft < hard => match rlimit::increase_nofile_limit(hard) {
            Ok(now) => tracing::info!(
                from = soft,
                to = now,
                "raised the open-file limit (RLIMIT_NOFILE) to its hard limit"
            ),
            Err(e) => tracing::warn!(
                soft,
                hard,
                error = %e,
                "could not raise the open-file limit (RLIMIT_NOFILE)"
            ),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not read the open-file limit"),
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then shuts down gracefully
/// within `settings.shutdown_grace` (see the module documentation). With `tls`, every
/// connection is HTTPS (its configuration is read per handshake, so a reload applies to new
/// connections). Returns when every connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: Settings,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let cap = settings.connection_cap();
    let descriptors = descriptor_budget();
    if cap > descriptors {
        tracing::warn!(
            max_connections = cap,
            descriptors,
            "--max-connections is more than the open-file limit leaves for connections"
        );
    }
    let connections = Arc::new(Semaphore::new(cap));
    // One permit per open connection, one more per request in flight.
    let budget = Arc::new(Semaphore::new(descriptors));
    let refusals = Arc::new(Semaphore::new(REFUSING_AT_ONCE));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (cutoff_tx, cutoff_rx) = watch::channel(false);
    let protocols = if tls.is_some() {
        "HTTPS connections (HTTP/2 and HTTP/1.1)"
    } else {
        "HTTP/1.1 and h2c connections"
    };
    let shared = Arc::new(Shared {
        router,
        budget: budget.clone(),
        http1: http1_builder(&settings),
        http2: http2_builder(),
        tls,
        opening: nonzero(settings.header_timeout),
        idle: nonzero(settings.idle_timeout),
        stop: stop_rx,
        cutoff: cutoff_rx,
    });
    let mut tasks = JoinSet::new();
    tracing::info!(
        listen = ?listener.local_addr().ok(),
        max_connections = cap,
        descriptors,
        header_timeout = ?settings.header_timeout,
        idle_timeout = ?settings.idle_timeout,
        "accepting {protocols}"
    );
    tokio::pin!(shutdown);
    let mut refused = 0u64;
    let mut out_of_files = 0u64;
    let mut spare = spare_descriptor();
    loop {
        let first = tokio::select! {
            () = &mut shutdown => break,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!(error = %e, "a connection task panicked");
                }
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        // Take every connection already waiting (up to a batch) before looking at anything
        // else: a burst of connections must not overflow the listen backlog.
        let mut accepted = Some(first);
        let mut batch = 0;
        while let Some(result) = accepted.take() {
            match result {
                Ok((stream, peer)) => match admit(&connections, &budget) {
                    Some(permits) => {
                        tasks.spawn(connection(stream, peer, shared.clone(), permits));
                    }
                    None => {
                        refused += 1;
                        if refused.is_power_of_two() {
                            tracing::warn!(
                                max_connections = cap,
                                descriptors,
                                refused,
                                "at the connection cap or out of descriptors: answering 503"
                            );
                        }
                        match (refusals.clone().try_acquire_owned(), &shared.tls) {
                            (Ok(permit), None) => {
                                tasks.spawn(refuse(stream, permit));
                            }
                            (Ok(permit), Some(tls)) => {
                                tasks.spawn(refuse_tls(stream, tls.clone(), permit));
                            }
                            (Err(_), None) => shed(stream),
                            // No answer without a handshake: just close.
                            (Err(_), Some(_)) => drop(stream),
                        }
                    }
                },
                Err(e) if is_connection_error(&e) => {}
                Err(e) if is_out_of_files(&e) && spare.is_some() => {
                    // Out of descriptors (uploads hold files too): free the spare one, take the
                    // oldest waiting connection and turn it away, so clients get an answer
                    // instead of waiting in the backlog.
                    out_of_files += 1;
                    if out_of_files.is_power_of_two() {
                        tracing::warn!(
                            error = %e,
                            times = out_of_files,
                            "out of file descriptors: answering 503"
                        );
                    }
                    drop(spare.take());
                    let next = std::future::poll_fn(|cx| {
                        Poll::Ready(match listener.poll_accept(cx) {
                            Poll::Ready(r) => Some(r),
                            Poll::Pending => None,
                        })
                    })
                    .await;
                    // Over TLS there is no answer without a handshake: it is just closed.
                    if let Some(Ok((stream, _))) = next
                        && shared.tls.is_none()
                    {
                        shed(stream);
                    }
                    spare = spare_descriptor();
                }
                Err(e) => {
                    // The next accept would likely fail the same way at once.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    spare = spare.or_else(spare_descriptor);
                    break;
                }
            }
            batch += 1;
            if batch < ACCEPT_BATCH {
                accepted = std::future::poll_fn(|cx| {
                    Poll::Ready(match listener.poll_accept(cx) {
                        Poll::Ready(r) => Some(r),
                        Poll::Pending => None,
                    })
                })
                .await;
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    if tasks.is_empty() {
        return;
    }
    tracing::info!(
        connections = tasks.len(),
        grace = ?settings.shutdown_grace,
        "stopped accepting; letting requests in flight finish"
    );
    if tokio::time::timeout(settings.shutdown_grace, drain(&mut tasks))
        .await
        .is_ok()
    {
        return;
    }
    tracing::warn!(
        connections = tasks.len(),
        "shutdown grace period over: ending the requests still running (they keep what arrived)"
    );
    let _ = cutoff_tx.send(true);
    if tokio::time::timeout(AFTER_CUTOFF, drain(&mut tasks))
        .await
        .is_err()
    {
        tracing::warn!(
            connections = tasks.len(),
            "aborting the connections still open"
        );
        tasks.abort_all();
        drain(&mut tasks).await;
    }
}

/// A connection's place: under the cap and in the descriptor budget.
fn admit(
    connections: &Arc<Semaphore>,
    budget: &Arc<Semaphore>,
) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
    let connection = connections.clone().try_acquire_owned().ok()?;
    let descriptor = budget.clone().try_acquire_owned().ok()?;
    Some((connection, descriptor))
}

async fn drain(tasks: &mut JoinSet<()>) {
    while tasks.join_next().await.is_some() {}
}

/// A descriptor kept open to be closed when `accept` runs out of descriptors, so that the
/// server can still take one connection and answer it (libev's "spare fd" technique).
fn spare_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// `EMFILE` or `ENFILE` (the same numbers on Linux, the BSDs and macOS).
fn is_out_of_files(e: &io::Error) -> bool {
    cfg!(unix) && matches!(e.raw_os_error(), Some(23 | 24))
}

/// Answers `503` and closes at once, without waiting for anything: reads what already
/// arrived (so the close is not a reset), writes the answer if the socket takes it, closes.
fn shed(stream: TcpStream) {
    use std::io::{Read, Write};
    let Ok(mut s) = stream.into_std() else {
        return;
    };
    let mut sink = [0u8; 2048];
    for _ in 0..32 {
        match s.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    let _ = s.write(busy_response().as_bytes());
    let _ = s.shutdown(std::net::Shutdown::Write);
}

/// Errors of one connection that `accept` reports; the listener itself is fine.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Binds a listener for [`serve`], with [`LISTEN_BACKLOG`].
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

fn http1_builder(settings: &Settings) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(nonzero(settings.header_timeout))
        .max_header_size(MAX_HEADER_BYTES);
    b
}

fn http2_builder() -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_frame_size(H2_MAX_FRAME)
        .keep_alive_interval(H2_KEEP_ALIVE)
        .keep_alive_timeout(H2_KEEP_ALIVE);
    b
}

/// What every connection of one listener shares.
struct Shared {
    router: Router,
    budget: Arc<Semaphore>,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    tls: Option<Arc<Tls>>,
    /// `--header-timeout`: for the TLS handshake and the first bytes (the protocol choice),
    /// and for how long an HTTP/2 connection may stay without a stream.
    opening: Option<Duration>,
    idle: Option<Duration>,
    /// Becomes true when the server stops accepting.
    stop: watch::Receiver<bool>,
    /// Becomes true when the grace period is over.
    cutoff: watch::Receiver<bool>,
}

/// The protocol of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Http1,
    Http2,
}

/// A connection ready for HTTP: its bytes (what was read to choose the protocol comes
/// first) and its protocol.
enum Opened {
    Plain(Prefixed<TcpStream>, Proto),
    Tls(
        Prefixed<Box<tokio_rustls::server::TlsStream<TcpStream>>>,
        Proto,
    ),
}

/// Serves one connection; `_permits` are its place under the cap and its descriptor.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
) {
    let _ = stream.set_nodelay(true);
    let mut stop = shared.stop.clone();
    let opening = async {
        match shared.opening {
            Some(limit) => tokio::time::timeout(limit, open(stream, shared.tls.as_deref()))
                .await
                .unwrap_or_else(|_| {
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no TLS handshake or request within the header timeout",
                    ))
                }),
            None => open(stream, shared.tls.as_deref()).await,
        }
    };
    let opened = tokio::select! {
        r = opening => r,
        // Nothing asked yet: nothing to finish.
        _ = stop.wait_for(|s| *s) => return,
    };
    let result = match opened {
        Ok(Opened::Plain(io, proto)) => serve_connection(io, proto, peer, &shared).await,
        Ok(Opened::Tls(io, proto)) => serve_connection(io, proto, peer, &shared).await,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "connection closed before its first request");
            return;
        }
    };
    if let Some(Err(e)) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The TLS handshake, if any, and the protocol: ALPN's choice, else the first bytes.
async fn open(stream: TcpStream, tls: Option<&Tls>) -> io::Result<Opened> {
    let Some(tls) = tls else {
        let mut stream = stream;
        let (prefix, proto) = sniff(&mut stream).await?;
        return Ok(Opened::Plain(Prefixed::new(prefix, stream), proto));
    };
    let mut stream = Box::new(
        tokio_rustls::TlsAcceptor::from(tls.config())
            .accept(stream)
            .await?,
    );
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        return Ok(Opened::Tls(
            Prefixed::new(Bytes::new(), stream),
            Proto::Http2,
        ));
    }
    let (prefix, proto) = sniff(&mut stream).await?;
    Ok(Opened::Tls(Prefixed::new(prefix, stream), proto))
}

/// Reads the first bytes of a connection, as many as it takes to tell the HTTP/2 preface
/// from anything else (usually one read), and returns them with the protocol they begin.
async fn sniff<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<(Bytes, Proto)> {
    let mut buf = Vec::with_capacity(8 * 1024);
    loop {
        let n = io.read_buf(&mut buf).await?;
        let common = buf.len().min(H2_PREFACE.len());
        if buf[..common] != H2_PREFACE[..common] {
            return Ok((buf.into(), Proto::Http1));
        }
        if common == H2_PREFACE.len() {
            return Ok((buf.into(), Proto::Http2));
        }
        if n == 0 {
            // Closed before a request: hyper sees the end.
            return Ok((buf.into(), Proto::Http1));
        }
    }
}

/// Serves HTTP on an opened connection until it ends; `None` if it was closed idle at
/// shutdown.
async fn serve_connection<I>(
    io: I,
    proto: Proto,
    peer: SocketAddr,
    shared: &Shared,
) -> Option<Result<(), hyper::Error>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::default());
    let service = TowerToHyperService::new(ConnService {
        router: shared.router.clone(),
        budget: shared.budget.clone(),
        peer,
        idle: shared.idle,
        cutoff: shared.cutoff.clone(),
        state: state.clone(),
        proto,
    });
    let stop = shared.stop.clone();
    match proto {
        Proto::Http1 => {
            let io = TokioIo::new(Tracked::new(io, Tracker::new(state.clone())));
            let conn = shared.http1.serve_connection(io, service);
            drive(conn, |c| c.graceful_shutdown(), &state, stop, None).await
        }
        Proto::Http2 => {
            let conn = shared.http2.serve_connection(TokioIo::new(io), service);
            drive(
                conn,
                |c| c.graceful_shutdown(),
                &state,
                stop,
                Some(shared.opening),
            )
            .await
        }
    }
}

/// Runs a hyper connection to its end, shutting it down gracefully when the server stops
/// (an HTTP/1 connection without a request in flight is closed at once instead). With
/// `idle` (HTTP/2: `Some`), a connection that has had no stream open for that long is shut
/// down gracefully too (`GOAWAY`), and dropped if it is still open and idle as long again
/// (a client that does not answer the shutdown's ping). `None` if it was closed idle.
async fn drive<C>(
    conn: C,
    graceful_shutdown: impl Fn(Pin<&mut C>),
    state: &ConnState,
    mut stop: watch::Receiver<bool>,
    idle: Option<Option<Duration>>,
) -> Option<Result<(), hyper::Error>>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    let h2 = idle.is_some();
    let idle = idle.flatten();
    tokio::pin!(conn);
    let mut stopping = false;
    // When an idle shutdown began.
    let mut idle_closing: Option<Instant> = None;
    loop {
        let idle_check = match (idle, idle_closing) {
            (Some(limit), Some(since)) => Some((since + limit).max(state.idle_deadline(limit))),
            (Some(limit), None) if !stopping => Some(state.idle_deadline(limit)),
            _ => None,
        };
        let idle_wait = async {
            match idle_check {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = conn.as_mut() => return Some(r),
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                if !h2 && state.quiet() {
                    // No request in flight: an idle keep-alive connection, or a head still
                    // arriving. Close it now rather than wait for its head timeout.
                    return None;
                }
                // HTTP/2: GOAWAY, then the streams open may finish.
                if idle_closing.is_none() {
                    graceful_shutdown(conn.as_mut());
                }
            }
            () = idle_wait => {
                let Some(limit) = idle else { continue };
                if state.idle_deadline(limit) > Instant::now() {
                    continue;
                }
                match idle_closing {
                    None => {
                        idle_closing = Some(Instant::now());
                        graceful_shutdown(conn.as_mut());
                    }
                    Some(_) => return None,
                }
            }
        }
    }
}

/// Answers a connection over the cap: `503`, `Retry-After: 1`, close.
async fn refuse(mut stream: TcpStream, _permit: OwnedSemaphorePermit) {
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(busy_response().as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent (its request) until it closes: closing a socket with
        // unread data resets the connection, and a reset can destroy the 503 in transit.
        let mut sink = [0u8; 2048];
        let mut seen = 0;
        while seen < MAX_HEADER_BYTES {
            match stream.read(&mut sink).await? {
                0 => break,
                n => seen += n,
            }
        }
        Ok::<_, io::Error>(())
    })
    .await;
}

/// Answers a TLS connection over the cap: the handshake, then `503` and `Retry-After: 1` to
/// whatever it asks (HTTP/2 or HTTP/1.1) for [`REFUSAL_LINGER`].
async fn refuse_tls(stream: TcpStream, tls: Arc<Tls>, _permit: OwnedSemaphorePermit) {
    let _ = tokio::time::timeout(REFUSAL_LINGER * 3, async {
        let _ = stream.set_nodelay(true);
        let stream = tokio_rustls::TlsAcceptor::from(tls.config())
            .accept(stream)
            .await?;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let service = hyper::service::service_fn(move |_req: Request<Incoming>| async move {
            Ok::<_, Infallible>(busy(!h2))
        });
        let io = TokioIo::new(stream);
        let served = if h2 {
            let conn = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .serve_connection(io, service);
            tokio::time::timeout(REFUSAL_LINGER, conn).await
        } else {
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(false)
                .serve_connection(io, service);
            tokio::time::timeout(REFUSAL_LINGER, conn).await
        };
        if let Ok(Err(e)) = served {
            tracing::debug!(error = %e, "refused TLS connection ended with an error");
        }
        Ok::<_, io::Error>(())
    })
    .await;
}

/// The body of [`busy_response`] and [`busy`], built once.
static BUSY_BODY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        r#"{{"error":"{}","message":"the server is serving as many connections as it can; retry in a second"}}"#,
        codes::SERVER_BUSY
    )
});

fn busy_response() -> String {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{}",
        BUSY_BODY.len(),
        BUSY_BODY.as_str()
    )
}

/// [`busy_response`] for a request on an open connection; with `close` (HTTP/1) the
/// connection is then closed (HTTP/2 has no `Connection` header: its other streams go on).
fn busy(close: bool) -> Response {
    use axum::http::{HeaderValue, StatusCode, header};
    let mut resp = Response::new(Body::from(BUSY_BODY.as_str()));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = resp.headers_mut();
    h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

// ---------------------------------------------------------------------------------------
// The per-connection service
// ---------------------------------------------------------------------------------------

/// What one connection knows about its requests.
struct ConnState {
    /// Complete request heads the [`Tracker`] has seen.
    heads: AtomicU64,
    /// The tracker lost track of the framing (or stopped after a conflict).
    lost: AtomicBool,
    /// 1 + the index of the head that had both `Content-Length` and `Transfer-Encoding`.
    conflict: AtomicU64,
    /// Requests handed to the router.
    served: AtomicU64,
    /// Responses not fully sent yet.
    in_flight: AtomicUsize,
    /// When the connection opened.
    born: Instant,
    /// Milliseconds from `born` to when `in_flight` last fell to zero.
    idle_since: AtomicU64,
}

impl Default for ConnState {
    fn default() -> Self {
        ConnState {
            heads: AtomicU64::new(0),
            lost: AtomicBool::new(false),
            conflict: AtomicU64::new(0),
            served: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            born: Instant::now(),
            idle_since: AtomicU64::new(0),
        }
    }
}

impl ConnState {
    /// When the connection will have had no request in flight for `limit` (if none starts
    /// before); while requests are in flight, `limit` from now (a time to look again).
    fn idle_deadline(&self, limit: Duration) -> Instant {
        if self.in_flight.load(Relaxed) > 0 {
            return Instant::now() + limit;
        }
        self.born + Duration::from_millis(self.idle_since.load(Relaxed)) + limit
    }

    fn finished_one(&self) {
        if self.in_flight.fetch_sub(1, Relaxed) == 1 {
            let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.idle_since.store(ms, Relaxed);
        }
    }

    /// No request is in flight: every head seen was served and every answer sent.
    fn quiet(&self) -> bool {
        !self.lost.load(Relaxed)
            && self.in_flight.load(Relaxed) == 0
            && self.heads.load(Relaxed) == self.served.load(Relaxed)
    }
}

/// The router as hyper sees it on one connection: adds the peer address, the framing
/// verdict, the body idle timeout and the shutdown cut-off to each request.
#[derive(Clone)]
struct ConnService {
    router: Router,
    budget: Arc<Semaphore>,
    peer: SocketAddr,
    idle: Option<Duration>,
    cutoff: watch::Receiver<bool>,
    state: Arc<ConnState>,
    proto: Proto,
}

impl tower::Service<Request<Incoming>> for ConnService {
    type Response = Response<CountedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(ConnectInfo(self.peer));
        match self.proto {
            Proto::Http1 => {
                // Requests are served in the order their heads arrived.
                let index = self.state.served.fetch_add(1, Relaxed);
                if self.state.conflict.load(Relaxed) == index + 1 {
                    parts.extensions.insert(hygiene::ConflictingFraming);
                }
            }
            Proto::Http2 => {
                // `:authority` is HTTP/2's `Host` (RFC 9113 §8.3.1); handlers read `Host`.
                if !parts.headers.contains_key(axum::http::header::HOST)
                    && let Some(authority) = parts.uri.authority()
                    && let Ok(value) = axum::http::HeaderValue::from_str(authority.as_str())
                {
                    parts.headers.insert(axum::http::header::HOST, value);
                }
            }
        }
        self.state.in_flight.fetch_add(1, Relaxed);
        let Ok(permit) = self.budget.clone().try_acquire_owned() else {
            // No descriptor for this request: answer without running a handler.
            let counted = InFlight {
                state: self.state.clone(),
                _permit: None,
            };
            let close = self.proto == Proto::Http1;
            return Box::pin(async move {
                Ok(busy(close).map(|inner| CountedBody {
                    inner,
                    _in_flight: counted,
                }))
            });
        };
        let counted = InFlight {
            state: self.state.clone(),
            _permit: Some(permit),
        };
        let body = Body::new(GuardedBody::new(body, self.idle, self.cutoff.clone()));
        let fut = tower::Service::call(&mut self.router, Request::from_parts(parts, body));
        Box::pin(async move {
            let Ok(resp) = fut.await;
            Ok(resp.map(|inner| CountedBody {
                inner,
                _in_flight: counted,
            }))
        })
    }
}

/// Counts a request as in flight, and holds its descriptor permit, until its response body
/// is dropped (sent, or the connection gone).
struct InFlight {
    state: Arc<ConnState>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.finished_one();
    }
}

/// A response body that keeps its request counted in flight.
struct CountedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a request body ended early, as the engine sees it (a body error, like a dropped
/// connection: what arrived is kept).
#[derive(Debug)]
pub enum BodyCut {
    /// No data for the idle timeout.
    Idle(Duration),
    /// The shutdown grace period is over.
    ShuttingDown,
}

impl std::fmt::Display for BodyCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyCut::Idle(d) => write!(f, "the request body sent nothing for {d:?}"),
            BodyCut::ShuttingDown => {
                f.write_str("the server is shutting down and its grace period is over")
            }
        }
    }
}

impl std::error::Error for BodyCut {}

/// A request body that ends with a [`BodyCut`] error when no frame arrives for `idle` (the
/// timer restarts with every frame, like `tower_http`'s `TimeoutBody`), or once `cutoff`
/// becomes true (checked before every frame, so a body streaming fast is cut off too).
///
/// Unlike `TimeoutBody` it passes the inner body's `size_hint` and `is_end_stream` through:
/// the tus fronts tell an empty body from a streamed one by them.
pub struct GuardedBody<B> {
    inner: B,
    idle: Option<Duration>,
    /// The idle deadline, armed while the inner body has nothing.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    armed: bool,
    cutoff: watch::Receiver<bool>,
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<B> GuardedBody<B> {
    pub fn new(inner: B, idle: Option<Duration>, cutoff: watch::Receiver<bool>) -> Self {
        GuardedBody {
            inner,
            idle,
            timer: None,
            armed: false,
            cutoff,
            wait: None,
        }
    }
}

impl<B> hyper::body::Body for GuardedBody<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if *this.cutoff.borrow() {
            return Poll::Ready(Some(Err(Box::new(BodyCut::ShuttingDown))));
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if let Some(idle) = this.idle {
            let deadline = tokio::time::Instant::now() + idle;
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if !this.armed {
                timer.as_mut().reset(deadline);
                this.armed = true;
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(Box::new(BodyCut::Idle(idle)))));
            }
        }
        let wait = this.wait.get_or_insert_with(|| {
            let mut rx = this.cutoff.clone();
            Box::pin(async move {
                if rx.wait_for(|cut| *cut).await.is_err() {
                    // The server is gone without a cut-off: nothing will ever cut.
                    std::future::pending::<()>().await;
                }
            })
        });
        ready!(wait.as_mut().poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyCut::ShuttingDown))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection whose first bytes were read already (to choose the protocol): they are read
/// again first.
struct Prefixed<I> {
    prefix: Bytes,
    io: I,
}

impl<I> Prefixed<I> {
    fn new(prefix: Bytes, io: I) -> Self {
        Prefixed { prefix, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

/// `AsyncWrite` for a read-side wrapper: writes go straight to its `io` field, and so does
/// the shutdown unless the wrapper names its own (`write_through!(W: [bounds], shutdown = f)`,
/// `f` an inherent method with `poll_shutdown`'s signature).
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<I: AsyncWrite + Unpin> AsyncWrite for $wrapper<I> {
            write_through!(@writes);

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
            }
        }
    };
    ($wrapper:ident: [$($bound:tt)+], shutdown = $shutdown:ident) => {
        impl<I: $($bound)+> AsyncWrite for $wrapper<I> {
            write_through!(@writes);

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.$shutdown(cx)
            }
        }
    };
    (@writes) => {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.io.is_write_vectored()
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().io).poll_flush(cx)
        }
    };
}

write_through!(Prefixed);

// ---------------------------------------------------------------------------------------
// Following the framing hyper reads
// ---------------------------------------------------------------------------------------

/// The connection's socket, with every byte read shown to a [`Tracker`] on its way to hyper.
struct Tracked<I> {
    io: I,
    tracker: Tracker,
    /// Closing with a request body still arriving: until when what arrives is read and
    /// dropped (see `poll_linger_shutdown`).
    linger: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> Tracked<I> {
    fn new(io: I, tracker: Tracker) -> Self {
        Tracked {
            io,
            tracker,
            linger: None,
        }
    }
}

/// How long a connection closed while its request body is still arriving (a request answered
/// without reading its body: a refusal, an error) keeps reading and dropping that body, as
/// nginx's lingering close does. Closing a socket with unread data resets the connection,
/// and the reset reaches the client while it is still sending: it fails with a broken pipe
/// and never reads the answer.
const BODY_LINGER: Duration = Duration::from_secs(2);

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        this.tracker.feed(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

write_through!(Tracked: [AsyncRead + AsyncWrite + Unpin], shutdown = poll_linger_shutdown);

impl<I: AsyncRead + AsyncWrite + Unpin> Tracked<I> {
    /// Shuts the writing side (the answer is complete), then, when the request's body was
    /// not all read, reads and drops what still arrives until the client closes or
    /// [`BODY_LINGER`] passes.
    fn poll_linger_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            if !this.tracker.mid_body() {
                return Poll::Ready(Ok(()));
            }
            this.linger = Some(Box::pin(tokio::time::sleep(BODY_LINGER)));
        }
        let until = this.linger.as_mut().expect("set above");
        let mut sink = [0u8; 16 * 1024];
        loop {
            if until.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut sink);
            match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
                // The client closed, or the connection failed: nothing more to wait for.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// Follows the HTTP/1 message framing of the bytes a connection reads, with the rules hyper
/// applies (request heads end at an empty line; a body is framed by `Transfer-Encoding:
/// chunked`, else by `Content-Length`, else empty; hyper's chunked syntax), to find the
/// heads that carry both `Content-Length` and `Transfer-Encoding`: hyper removes the
/// `Content-Length` of those before the request reaches the router.
///
/// Anything it does not follow exactly as hyper would (a malformed head, `CONNECT`, an odd
/// chunk line; hyper rejects most of these and closes the connection) makes it stop for the
/// rest of the connection, so it can only miss a conflict, never invent one.
struct Tracker {
    phase: Phase,
    /// The head being received (leading empty lines skipped).
    head: Vec<u8>,
    /// Line ends seen at the end of `head`: 0 none, 1 `\n`, 2 `\n\r`.
    eol: u8,
    /// The chunk size being read.
    chunk_size: u64,
    state: Arc<ConnState>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Head,
    /// Body bytes left of a `Content-Length` body.
    Fixed(u64),
    Chunked(Chunk),
    Off,
}

/// hyper's chunked-body states (`proto::h1::decode::ChunkedState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    Start,
    Size,
    Lws,
    Ext(usize),
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    EndCr,
    Trailer(usize),
    TrailerLf,
    EndLf,
}

/// Longest chunk extension and trailer section followed (hyper's limits are 16 KiB and the
/// head size).
const MAX_CHUNK_EXT: usize = 16 * 1024;

/// What a request head says about its body.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Both `Content-Length` and `Transfer-Encoding`.
    Conflict,
    /// Something hyper rejects or treats specially.
    Unknown,
}

impl Tracker {
    fn new(state: Arc<ConnState>) -> Self {
        Tracker {
            phase: Phase::Head,
            head: Vec::new(),
            eol: 0,
            chunk_size: 0,
            state,
        }
    }

    /// Whether the bytes read so far end inside a request body.
    fn mid_body(&self) -> bool {
        matches!(self.phase, Phase::Fixed(_) | Phase::Chunked(_))
    }

    fn stop(&mut self) {
        self.phase = Phase::Off;
        self.head = Vec::new();
        self.state.lost.store(true, Relaxed);
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.phase {
                Phase::Off => return,
                Phase::Fixed(left) | Phase::Chunked(Chunk::Data(left)) => {
                    let take = left.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    let left = left - take;
                    self.phase = match (self.phase, left) {
                        (Phase::Fixed(_), 0) => Phase::Head,
                        (Phase::Fixed(_), n) => Phase::Fixed(n),
                        (_, 0) => Phase::Chunked(Chunk::DataCr),
                        (_, n) => Phase::Chunked(Chunk::Data(n)),
                    };
                }
                Phase::Chunked(c) => {
                    self.phase = self.chunk_step(c, bytes[0]);
                    bytes = &bytes[1..];
                    if self.phase == Phase::Off {
                        self.stop();
                    }
                }
                Phase::Head => {
                    let used = self.head_bytes(bytes);
                    bytes = &bytes[used..];
                }
            }
        }
    }

    /// Takes head bytes from `bytes` up to the end of the head; returns how many it took.
    fn head_bytes(&mut self, bytes: &[u8]) -> usize {
        let mut i = 0;
        if self.head.is_empty() {
            // Empty lines before a request line are skipped (httparse does the same).
            while i < bytes.len() && matches!(bytes[i], b'\r' | b'\n') {
                i += 1;
            }
        }
        let start = i;
        while i < bytes.len() {
            let b = bytes[i];
            i += 1;
            match (b, self.eol) {
                (b'\n', 1 | 2) => {
                    self.head.extend_from_slice(&bytes[start..i]);
                    self.end_of_head();
                    return i;
                }
                (b'\n', _) => self.eol = 1,
                (b'\r', 1) => self.eol = 2,
                _ => self.eol = 0,
            }
        }
        self.head.extend_from_slice(&bytes[start..]);
        if self.head.len() > MAX_HEADER_BYTES + 1024 {
            // hyper answers 431 and closes.
            self.stop();
        }
        i
    }

    fn end_of_head(&mut self) {
        let index = self.state.heads.fetch_add(1, Relaxed);
        let framing = framing(&self.head);
        self.head.clear();
        if self.head.capacity() > 8 * 1024 {
            self.head.shrink_to(1024);
        }
        self.eol = 0;
        self.phase = match framing {
            Framing::None | Framing::Length(0) => Phase::Head,
            Framing::Length(n) => Phase::Fixed(n),
            Framing::Chunked => Phase::Chunked(Chunk::Start),
            Framing::Conflict => {
                self.state.conflict.store(index + 1, Relaxed);
                // hyper closes the connection after answering this request.
                Phase::Off
            }
            Framing::Unknown => Phase::Off,
        };
        if self.phase == Phase::Off {
            self.stop();
        }
    }

    fn chunk_step(&mut self, state: Chunk, b: u8) -> Phase {
        use Chunk::*;
        let next = match (state, b) {
            (Start, _) => match hex(b) {
                Some(d) => {
                    self.chunk_size = d;
                    Size
                }
                None => return Phase::Off,
            },
            (Size, _) if hex(b).is_some() => {
                match self
                    .chunk_size
                    .checked_mul(16)
                    .and_then(|v| v.checked_add(hex(b).unwrap_or(0)))
                {
                    Some(v) => {
                        self.chunk_size = v;
                        Size
                    }
                    None => return Phase::Off,
                }
            }
            (Size | Lws, b' ' | b'\t') => Lws,
            (Size | Lws, b';') => Ext(0),
            (Size | Lws | Ext(_), b'\r') => SizeLf,
            (Ext(n), _) if b != b'\n' && n < MAX_CHUNK_EXT => Ext(n + 1),
            (SizeLf, b'\n') if self.chunk_size == 0 => EndCr,
            (SizeLf, b'\n') => Data(self.chunk_size),
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Start,
            (EndCr, b'\r') => EndLf,
            (EndCr, _) => Trailer(1),
            (Trailer(_), b'\r') => TrailerLf,
            (Trailer(n), _) if n < MAX_HEADER_BYTES => Trailer(n + 1),
            (TrailerLf, b'\n') => EndCr,
            (EndLf, b'\n') => return Phase::Head,
            _ => return Phase::Off,
        };
        Phase::Chunked(next)
    }
}

fn hex(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

/// How a complete request head frames its body, by hyper's rules
/// (`proto::h1::role::Server::parse`).
fn framing(head: &[u8]) -> Framing {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let Some(request_line) = lines.next() else {
        return Framing::Unknown;
    };
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Framing::Unknown;
    };
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        _ => return Framing::Unknown,
    };
    if method.is_empty() || target.is_empty() || method == b"CONNECT" {
        return Framing::Unknown;
    }
    let mut length: Option<u64> = None;
    let mut length_valid = true;
    let mut saw_length = false;
    // Whether the last Transfer-Encoding line ends with `chunked`.
    let mut chunked: Option<bool> = None;
    for line in lines {
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Framing::Unknown;
        };
        let (name, value) = (&line[..colon], trim_ows(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = Some(
                value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| trim_ows(last).eq_ignore_ascii_case(b"chunked")),
            );
        } else if name.eq_ignore_ascii_case(b"content-length") {
            saw_length = true;
            if chunked.is_none() {
                match decimal(value) {
                    Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                    _ => length_valid = false,
                }
            }
        }
    }
    match chunked {
        Some(_) if saw_length => Framing::Conflict,
        Some(true) if http11 => Framing::Chunked,
        Some(_) => Framing::Unknown,
        None if !length_valid => Framing::Unknown,
        None => length.map_or(Framing::None, Framing::Length),
    }
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `1*DIGIT` as a u64 (no sign, no overflow).
fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> (Tracker, Arc<ConnState>) {
        let state = Arc::new(ConnState::default());
        (Tracker::new(state.clone()), state)
    }

    /// Feeds `bytes` in pieces of every size from 1 to 7 and to the whole, and checks each
    /// way gives the same heads count and conflict.
    fn run(bytes: &[u8]) -> (u64, u64, bool) {
        let mut seen = None;
        for step in (1..8).chain([bytes.len().max(1)]) {
            let (mut t, s) = tracker();
            for piece in bytes.chunks(step) {
                t.feed(piece);
            }
            let got = (
                s.heads.load(Relaxed),
                s.conflict.load(Relaxed),
                s.lost.load(Relaxed),
            );
            if let Some(prev) = seen {
                assert_eq!(prev, got, "step {step}");
            }
            seen = Some(got);
        }
        seen.unwrap()
    }

    #[test]
    fn follows_pipelined_requests_and_bodies() {
        let stream = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /b HTTP/1.1\r\nContent-Length: 26\r\n\r\nPOST /c HTTP/1.1\r\n\r\n012345\
            POST /d HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            1a;ext=1\r\nGET /e HTTP/1.1\r\nXY: 1\r\n\r\n\r\n0\r\nTrailer: x\r\n\r\n\
            \r\nHEAD /f HTTP/1.0\nHost: y\n\n";
        assert_eq!(run(stream), (4, 0, false));
    }

    #[test]
    fn finds_length_with_transfer_encoding_in_either_order() {
        for head in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\n",
        ] {
            let stream = format!(
                "GET / HTTP/1.1\r\n\r\nPUT / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc{head}5\r\nhello\r\n0\r\n\r\n"
            );
            assert_eq!(run(stream.as_bytes()), (3, 3, true), "{head}");
        }
    }

    #[test]
    fn stops_on_what_hyper_rejects() {
        for stream in [
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello",
            "CONNECT x:1 HTTP/1.1\r\n\r\n",
            "GET /  HTTP/1.1\r\n\r\n",
        ] {
            let (heads, conflict, lost) = run(stream.as_bytes());
            assert_eq!((heads, conflict, lost), (1, 0, true), "{stream:?}");
        }
    }

    #[test]
    fn framing_rules() {
        assert_eq!(framing(b"GET / HTTP/1.1\r\n\r\n"), Framing::None);
        assert_eq!(
            framing(b"POST / HTTP/1.1\r\ncontent-length:  7 \r\ncontent-length: 7\r\n\r\n"),
            Framing::Length(7)
        );
        assert_eq!(
            framing(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Framing::Chunked
        );
        assert_eq!(
            framing(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            Framing::Unknown
        );
        assert_eq!(decimal(b"18446744073709551616"), None);
        assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
    }

    /// A body fed through a channel, one frame per message.
    struct Chan(tokio::sync::mpsc::Receiver<bytes::Bytes>);

    impl hyper::body::Body for Chan {
        type Data = bytes::Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    async fn next(body: &mut GuardedBody<Chan>) -> Option<Result<Frame<bytes::Bytes>, BoxError>> {
        std::future::poll_fn(|cx| hyper::body::Body::poll_frame(Pin::new(&mut *body), cx)).await
    }

    #[tokio::test]
    async fn guarded_body_idle_timer_restarts_with_every_frame() {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let (_cut_tx, cut_rx) = watch::channel(false);
        let mut body = GuardedBody::new(Chan(rx), Some(Duration::from_millis(500)), cut_rx);
        let started = std::time::Instant::now();
        let feeder = tokio::spawn(async move {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                tx.send(bytes::Bytes::from_static(b"x")).await.unwrap();
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(tx);
        });
        for i in 0..6 {
            let frame = next(&mut body).await.expect("a frame");
            assert!(frame.is_ok(), "frame {i}: idle timeout between frames");
        }
        let err = next(&mut body)
            .await
            .expect("an end")
            .expect_err("a timeout");
        let elapsed = started.elapsed();
        assert!(matches!(
            err.downcast_ref::<BodyCut>(),
            Some(BodyCut::Idle(_))
        ));
        // Six frames 100 ms apart, then 500 ms of nothing: longer than one idle period, so
        // the timer restarted with the frames.
        assert!(elapsed >= Duration::from_millis(1050), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        feeder.abort();
    }

    #[tokio::test]
    async fn guarded_body_ends_at_the_cutoff_even_with_data_waiting() {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let (cut_tx, cut_rx) = watch::channel(false);
        let mut body = GuardedBody::new(Chan(rx), None, cut_rx);
        tx.send(bytes::Bytes::from_static(b"a")).await.unwrap();
        assert!(next(&mut body).await.unwrap().is_ok());
        // Waiting for data: the cut-off wakes it.
        let waiting = tokio::spawn(async move {
            let r = next(&mut body).await;
            (r.map(|r| r.map(|_| ())), body)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        cut_tx.send(true).unwrap();
        let (r, mut body) = waiting.await.unwrap();
        let err = r.unwrap().expect_err("cut off");
        assert!(matches!(
            err.downcast_ref::<BodyCut>(),
            Some(BodyCut::ShuttingDown)
        ));
        // Data waiting does not postpone it.
        tx.send(bytes::Bytes::from_static(b"b")).await.unwrap();
        assert!(next(&mut body).await.unwrap().is_err());
    }

    #[test]
    fn guarded_body_passes_size_hints_through() {
        use hyper::body::Body as _;
        let (_tx, rx) = watch::channel(false);
        let full = GuardedBody::new(
            http_body_util::Full::new(bytes::Bytes::from_static(b"12345")),
            Some(Duration::from_secs(1)),
            rx.clone(),
        );
        assert_eq!(full.size_hint().exact(), Some(5));
        let empty = GuardedBody::new(
            http_body_util::Empty::<bytes::Bytes>::new(),
            Some(Duration::from_secs(1)),
            rx,
        );
        assert_eq!(empty.size_hint().exact(), Some(0));
        assert!(empty.is_end_stream());
    }

    #[tokio::test]
    async fn sniff_tells_the_h2_preface_from_http1_and_replays_what_it_read() {
        for (pieces, want) in [
            (
                vec![&H2_PREFACE[..5], &H2_PREFACE[5..], b"\0\0\0\x04"],
                Proto::Http2,
            ),
            (vec![b"P", b"RI * HTTP/2.0\r\n\r\nSM\r\n\r\n"], Proto::Http2),
            (vec![b"PRI", b" / HTTP/1.1\r\n\r\n"], Proto::Http1),
            (vec![b"GET / HTTP/1.1\r\n\r\n"], Proto::Http1),
            (vec![b"PR"], Proto::Http1),
            (vec![], Proto::Http1),
        ] {
            let sent: Vec<u8> = pieces.concat();
            let (mut client, mut server) = tokio::io::duplex(1024);
            let writer = tokio::spawn(async move {
                for p in pieces {
                    client.write_all(p).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            let (prefix, proto) = sniff(&mut server).await.unwrap();
            assert_eq!(proto, want, "{sent:?}");
            writer.await.unwrap();
            let mut replayed = Vec::new();
            Prefixed::new(prefix, server)
                .read_to_end(&mut replayed)
                .await
                .unwrap();
            assert_eq!(replayed, sent);
        }
    }

    #[test]
    fn quiet_only_without_requests_in_flight() {
        let (mut t, s) = tracker();
        assert!(s.quiet());
        t.feed(b"GET / HTTP/1.1\r\n");
        assert!(s.quiet(), "a head still arriving is not a request");
        t.feed(b"\r\n");
        assert!(!s.quiet(), "a complete head not yet served is");
        s.served.fetch_add(1, Relaxed);
        assert!(s.quiet());
    }
}
