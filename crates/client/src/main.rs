//! The `ferry` command: `serve` runs the server; `upload` and `download` are thin layers over
//! the `ferry_client` library; `ls` and `rm` use the server's files API.

/// Modules of the binary only (the library is `ferry_client`, `lib.rs`).
mod cli {
    pub mod files;
    pub mod output;
}

use clap::builder::TypedValueParser as _;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use cli::output::{self, Output};
use ferry_client::{
    DownloadOptions, Downloader, Existing, Protocol, RetryPolicy, StateStore, TlsOptions,
    UploadOptions, Uploader,
};
use ferry_server::config::{ServeArgs, parse_duration, parse_size};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Resumable large-file transfers: server and clients"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (filesystem + SQLite by default; nothing else to install).
    Serve(Box<ServeArgs>),
    /// Upload files; run the same command again after any interruption to resume.
    Upload(UploadArgs),
    /// Download a file with resume (`FILE.part`), optionally over several connections.
    Download(DownloadArgs),
    /// List your uploads on the server, newest first, unfinished ones included.
    Ls(LsArgs),
    /// Delete uploads from the server (finished or not), without asking.
    Rm(RmArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtocolArg {
    /// ranges on a ferry server, tus on any other.
    Auto,
    /// ferry's byte ranges: one upload written over several connections, no copy at the end.
    Ranges,
    /// tus 1.0.0 at /files/ (parallel parts via concatenation, sha256 checksums).
    Tus,
    /// The chunk-handshake dialect (MD5 ids, instant upload of files the server has).
    Chunk,
}

#[derive(Args)]
struct OutputArgs {
    /// Print JSON lines (progress and one result per file), also the default when stdout is
    /// not a terminal.
    #[arg(long)]
    json: bool,
    /// No progress output: only results (URLs) and errors.
    #[arg(long, short)]
    quiet: bool,
}

/// HTTPS: the system's trust store, plus these.
#[derive(Args)]
struct TlsArgs {
    /// Also trust the certificates in this PEM file (a self-signed server's, a private CA's).
    #[arg(long, env = "FERRY_CACERT", value_name = "FILE")]
    cacert: Vec<PathBuf>,
    /// Do not check the server's certificate (encrypted but not authenticated: tests only).
    #[arg(long, short = 'k')]
    insecure: bool,
}

impl TlsArgs {
    fn options(&self) -> TlsOptions {
        TlsOptions {
            ca_certs: self.cacert.clone(),
            insecure: self.insecure,
        }
    }
}

#[derive(Args)]
struct UploadArgs {
    /// Files to upload.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The server's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "FERRY_SERVER", value_name = "URL")]
    server: String,
    /// Requests in flight at once, over all files (several files at once, several parts of a
    /// large file at once).
    #[arg(long, default_value_t = ferry_client::upload::DEFAULT_PARALLEL, value_parser = clap::value_parser!(u16).range(1..=256).map(usize::from))]
    parallel: usize,
    /// Bytes per request, e.g. 8MiB [default: 16MiB for tus, 5MiB for chunk].
    #[arg(long, value_name = "SIZE", value_parser = parse_chunk_size)]
    chunk_size: Option<u64>,
    /// Upload dialect.
    #[arg(long, value_enum, default_value = "auto")]
    protocol: ProtocolArg,
    /// Bearer token for servers started with --auth-token.
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Give up after this long without any request succeeding (e.g. 30s, 5m, 1h).
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_duration)]
    retry_for: Duration,
    /// Where to remember uploads for resuming [default: $XDG_STATE_HOME/ferry/uploads.json
    /// or ~/.local/state/ferry/uploads.json].
    #[arg(long, env = "FERRY_STATE_FILE", value_name = "PATH")]
    state_file: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Args)]
struct DownloadArgs {
    /// The file's URL, as `ferry upload` printed it.
    url: String,
    /// Where to save it (a file, or a directory) [default: the name the server suggests,
    /// in the current directory].
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// Ranges fetched in parallel over separate connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64).map(usize::from))]
    connections: usize,
    /// Overwrite the destination if it exists (by default an existing file is never touched).
    #[arg(long, conflicts_with = "rename")]
    force: bool,
    /// If the destination exists, save as NAME.1.EXT, NAME.2.EXT, … instead.
    #[arg(long)]
    rename: bool,
    /// Give up after this long without any request succeeding (e.g. 30s, 5m, 1h).
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_duration)]
    retry_for: Duration,
    /// Bearer token, sent with every request (finished files download without one on a
    /// ferry server; it lets the client tell a concatenation when the server has tokens).
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    output_args: OutputArgs,
}

/// The server and credentials of `ls` and `rm`, as `upload` and `download` take them.
#[derive(Args)]
struct ServerArgs {
    /// The server's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "FERRY_SERVER", value_name = "URL")]
    server: String,
    /// Bearer token for servers with tokens: lists and deletes that tenant's uploads.
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Args)]
struct LsArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// One JSON object per upload and line (the files API's fields) instead of text.
    #[arg(long)]
    json: bool,
    /// Uploads asked for per request (the listing follows the pages to the end).
    #[arg(long, hide = true, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=1000).map(usize::from))]
    page_size: usize,
}

#[derive(Args)]
struct RmArgs {
    /// Ids of the uploads to delete (as `ferry ls` prints them).
    #[arg(required = true, value_name = "ID")]
    ids: Vec<String>,
    #[command(flatten)]
    server: ServerArgs,
}

impl ServerArgs {
    fn http(&self) -> Result<ferry_client::http::Http, ExitCode> {
        ferry_client::http::Http::new(self.token.as_deref(), &self.tls.options()).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(2)
        })
    }
}

fn parse_chunk_size(s: &str) -> Result<u64, String> {
    match parse_size(s)? {
        0 => Err("the chunk size must be at least 1 byte".into()),
        n if n > 1 << 30 => {
            Err("chunks larger than 1GiB are not supported (each is held in memory)".into())
        }
        n => Ok(n),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn main() -> anyhow::Result<ExitCode> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    match cli.command {
        Command::Serve(args) => {
            let sub = matches
                .subcommand_matches("serve")
                .expect("clap matched the serve subcommand");
            let args = (*args).with_config_file(sub)?;
            runtime()?.block_on(ferry_server::serve(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Upload(args) => Ok(runtime()?.block_on(upload(args))),
        Command::Download(args) => Ok(runtime()?.block_on(download(args))),
        Command::Ls(args) => Ok(match args.server.http() {
            Ok(http) => runtime()?.block_on(cli::files::ls(
                &http,
                &args.server.server,
                args.json,
                args.page_size,
            )),
            Err(code) => code,
        }),
        Command::Rm(args) => Ok(match args.server.http() {
            Ok(http) => runtime()?.block_on(cli::files::rm(&http, &args.server.server, &args.ids)),
            Err(code) => code,
        }),
    }
}

/// JSON lines with `--json`, or when stdout is not a terminal — unless `--quiet` asks for
/// just the results (bare URLs or paths, one per line, for `$(ferry upload -q …)`).
fn json_mode(args: &OutputArgs) -> bool {
    args.json || (!args.quiet && !std::io::stdout().is_terminal())
}

/// Runs `work`, or stops at Ctrl-C saying how to resume (everything needed is already on
/// the server and in the state file or `.part.meta`).
async fn interruptible(out: &Output, work: impl Future<Output = ExitCode>) -> ExitCode {
    tokio::select! {
        code = work => code,
        _ = tokio::signal::ctrl_c() => {
            out.interrupted();
            ExitCode::from(130)
        }
    }
}

async fn upload(args: UploadArgs) -> ExitCode {
    let out = Output::new(
        json_mode(&args.output),
        args.output.quiet,
        output::Kind::Upload,
    );
    let state = match args.state_file.clone().or_else(StateStore::default_path) {
        Some(p) => StateStore::at(p),
        None => {
            out.warn("no state directory (HOME is not set): an interrupted upload will start over; pass --state-file to resume");
            StateStore::disabled()
        }
    };
    let opts = UploadOptions {
        server: args.server.clone(),
        protocol: match args.protocol {
            ProtocolArg::Auto => Protocol::Auto,
            ProtocolArg::Ranges => Protocol::Ranges,
            ProtocolArg::Tus => Protocol::Tus,
            ProtocolArg::Chunk => Protocol::Chunk,
        },
        parallel: args.parallel,
        chunk_size: args.chunk_size,
        token: args.token.clone(),
        tls: args.tls.options(),
        retry: RetryPolicy {
            give_up_after: args.retry_for,
            ..RetryPolicy::default()
        },
        state,
    };
    let uploader = match Uploader::new(opts, out.sink()) {
        Ok(u) => u,
        Err(e) => {
            out.warn(&format!("error: {e}"));
            return ExitCode::from(2);
        }
    };
    interruptible(&out, async {
        let results = uploader.upload_files(&args.files).await;
        out.finish(results.iter().map(|(f, r)| (f.as_str(), r.as_ref().err())))
    })
    .await
}

async fn download(args: DownloadArgs) -> ExitCode {
    let out = Output::new(
        json_mode(&args.output_args),
        args.output_args.quiet,
        output::Kind::Download,
    );
    let opts = DownloadOptions {
        existing: if args.force {
            Existing::Overwrite
        } else if args.rename {
            Existing::Rename
        } else {
            Existing::Refuse
        },
        url: args.url.clone(),
        output: args.output.clone(),
        connections: args.connections,
        retry: RetryPolicy {
            give_up_after: args.retry_for,
            ..RetryPolicy::default()
        },
        token: args.token.clone(),
        tls: args.tls.options(),
    };
    let downloader = match Downloader::new(opts, out.sink()) {
        Ok(d) => d,
        Err(e) => {
            out.warn(&format!("error: {e}"));
            return ExitCode::from(2);
        }
    };
    interruptible(&out, async {
        let res = downloader.run().await;
        out.finish([(args.url.as_str(), res.as_ref().err())])
    })
    .await
}
