//! `ferry serve` configuration (SPEC §1): flags, `FERRY_<FLAG>` environment variables and an
//! optional `ferry.toml`, in that order of precedence (flag > environment > file > default).

use anyhow::{Context, bail};
use clap::builder::TypedValueParser as _;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, parser::ValueSource};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// Address to bind.
    #[arg(long, env = "FERRY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Where the default store and database live.
    #[arg(long, env = "FERRY_DATA_DIR", default_value = "./ferry-data")]
    pub data_dir: PathBuf,
    /// Upload metadata: `sqlite://PATH` (default `sqlite://<data-dir>/ferry.db`), or
    /// `postgres://USER:PASSWORD@HOST:PORT/DB` for several nodes sharing one database.
    #[arg(long, env = "FERRY_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
    /// Most connections to PostgreSQL this node keeps open.
    #[arg(long, env = "FERRY_DATABASE_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1000).map(usize::from))]
    pub database_pool_size: usize,
    /// File bytes: `file://PATH` (default `file://<data-dir>/files`) or `s3://BUCKET/PREFIX`
    /// (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "FERRY_STORAGE")]
    pub storage: Option<String>,
    /// S3-compatible endpoint for `s3://` storage (e.g. `http://127.0.0.1:3900`); path-style
    /// addressing unless --s3-virtual-hosted. Default: AWS (from the region).
    #[arg(long, env = "FERRY_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Region of the bucket (default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1).
    #[arg(long, env = "FERRY_S3_REGION")]
    pub s3_region: Option<String>,
    /// Address the bucket as `BUCKET.host` rather than `host/BUCKET` with --s3-endpoint.
    #[arg(long, env = "FERRY_S3_VIRTUAL_HOSTED")]
    pub s3_virtual_hosted: bool,
    /// Every part but the last of one size (stores that require it, e.g. Cloudflare R2).
    #[arg(long, env = "FERRY_S3_EQUAL_PARTS")]
    pub s3_equal_parts: bool,
    /// Answer a download's GET with a redirect (307) to a presigned URL of the object, valid
    /// 5 minutes, so the bytes come straight from the store.
    #[arg(long, env = "FERRY_S3_REDIRECT_DOWNLOADS")]
    pub s3_redirect_downloads: bool,
    /// Larger declared sizes are refused before any byte is stored (e.g. `1TiB`, `500MB`).
    #[arg(long, env = "FERRY_MAX_UPLOAD_SIZE", default_value = "1TiB", value_parser = parse_size)]
    pub max_upload_size: u64,
    /// Keep this much disk free: below it, new uploads and writes answer 507 and /healthz 503
    /// (e.g. `1GiB`; default: no reserve).
    #[arg(long, env = "FERRY_MIN_FREE_SPACE", value_parser = parse_size)]
    pub min_free_space: Option<u64>,
    /// Incomplete uploads idle longer than this are removed (e.g. `24h`, `30m`; `0` keeps them).
    #[arg(long, env = "FERRY_EXPIRE_INCOMPLETE", default_value = "24h", value_parser = parse_duration)]
    pub expire_incomplete: Duration,
    /// Base for URLs the server hands out, when behind a proxy (default: from the request).
    #[arg(long, env = "FERRY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// A bearer token of tenant `default` (see docs/SECURITY.md).
    #[arg(long, env = "FERRY_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// A file of `TOKEN TENANT` lines (`#` comments; a token alone is its own tenant).
    #[arg(long, env = "FERRY_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,
    /// Accept JWT bearer tokens signed with this HS256 secret; `sub` names the tenant.
    #[arg(long, env = "FERRY_AUTH_JWT_SECRET", hide_env_values = true)]
    pub auth_jwt_secret: Option<String>,
    /// Accept JWT bearer tokens signed with this PEM public key (RS256 or ES256).
    #[arg(long, env = "FERRY_AUTH_JWT_PUBLIC_KEY")]
    pub auth_jwt_public_key: Option<PathBuf>,
    /// Per tenant: incomplete uploads at once (more: 429).
    #[arg(long, env = "FERRY_MAX_INCOMPLETE_UPLOADS")]
    pub max_incomplete_uploads: Option<u64>,
    /// Per tenant: bytes stored, finished and unfinished (more: 507), e.g. `100GiB`.
    #[arg(long, env = "FERRY_MAX_STORED_BYTES", value_parser = parse_size)]
    pub max_stored_bytes: Option<u64>,
    /// Key for signing download links (default: a random key kept in `<data-dir>/link.key`;
    /// give every node the same value when several serve one store).
    #[arg(long, env = "FERRY_LINK_SECRET", hide_env_values = true)]
    pub link_secret: Option<String>,
    /// How long a signed download link is valid (e.g. `7d`, `12h`).
    #[arg(long, env = "FERRY_LINK_TTL", default_value = "7d", value_parser = parse_duration)]
    pub link_ttl: Duration,
    /// A request whose head has not arrived within this long is dropped (e.g. `30s`).
    #[arg(long, env = "FERRY_HEADER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// A request body that sends nothing for this long ends like a dropped connection,
    /// keeping what arrived (e.g. `60s`).
    #[arg(long, env = "FERRY_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// On SIGTERM, requests still running after this long end like dropped connections.
    #[arg(long, env = "FERRY_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Connections served at once (default: the open-file limit minus a reserve for files
    /// and the database).
    #[arg(long, env = "FERRY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// `/metrics` needs `Authorization: Bearer <this token>`.
    #[arg(long, env = "FERRY_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Serve `/metrics` on this address only (e.g. `127.0.0.1:9090`), not on `--listen`.
    #[arg(long, env = "FERRY_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Allow listening on a non-loopback address without tokens.
    #[arg(long, env = "FERRY_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Log format: `text` or `json` (filter with RUST_LOG).
    #[arg(long, env = "FERRY_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Serve the upload page and browser SDK from this directory (holding `app/` and `sdk/`)
    /// instead of the copy embedded in the binary; for front-end development.
    #[arg(long, env = "FERRY_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) with this PEM certificate chain, server certificate
    /// first; needs --tls-key. Both files are read again on SIGHUP.
    #[arg(long, env = "FERRY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of the --tls-cert certificate.
    #[arg(long, env = "FERRY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// POST upload events (hooks) as JSON to this URL; `pre-create` and `pre-finish` may
    /// refuse or amend (see docs/PROTOCOL.md, Hooks).
    #[arg(long, env = "FERRY_HOOK_URL", hide_env_values = true)]
    pub hook_url: Option<String>,
    /// Sign each hook body: `X-Ferry-Signature` is the hex HMAC-SHA256 of the body with this key.
    #[arg(long, env = "FERRY_HOOK_SECRET", hide_env_values = true)]
    pub hook_secret: Option<String>,
    /// Comma-separated hook events to send (default: all): pre-create, pre-finish,
    /// post-create, post-receive, post-finish, post-terminate.
    #[arg(long, env = "FERRY_HOOK_EVENTS")]
    pub hook_events: Option<String>,
    /// Configuration file (default: `./ferry.toml` when it exists).
    #[arg(long, env = "FERRY_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Standalone parser used to apply `ferry.toml` underneath flags and environment.
#[derive(Parser, Debug)]
#[command(name = "ferry serve")]
struct ServeCli {
    #[command(flatten)]
    args: ServeArgs,
}

impl ServeArgs {
    /// Fills every option still at its default from `ferry.toml` (or `--config`).
    pub fn with_config_file(self, matches: &ArgMatches) -> anyhow::Result<Self> {
        let explicit = self.config.is_some();
        let path = self
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from("ferry.toml"));
        if !explicit && !path.exists() {
            return Ok(self);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let table: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let mut argv = vec!["ferry-serve".to_owned()];
        for (key, value) in &table {
            let flag = key.replace('_', "-");
            let id = flag.replace('-', "_");
            if ServeCli::command()
                .get_arguments()
                .all(|a| a.get_id().as_str() != id)
            {
                bail!("{}: unknown setting {key:?}", path.display());
            }
            // Flags and environment win over the file.
            if matches!(
                matches.value_source(&id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                continue;
            }
            match value {
                toml::Value::Boolean(true) => argv.push(format!("--{flag}")),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => argv.push(format!("--{flag}={s}")),
                toml::Value::Integer(i) => argv.push(format!("--{flag}={i}")),
                other => bail!("{}: {key} has an unsupported value {other}", path.display()),
            }
        }
        let file_matches = ServeCli::command()
            .try_get_matches_from(&argv)
            .with_context(|| format!("in {}", path.display()))?;
        let mut merged = ServeArgs::from_arg_matches(&file_matches)?;
        // Re-apply what came from flags or the environment.
        let own = ServeArgs::from_arg_matches(matches)?;
        macro_rules! keep {
            ($($f:ident),*) => {$(
                if matches!(matches.value_source(stringify!($f)), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
                    merged.$f = own.$f.clone();
                }
            )*};
        }
        keep!(
            listen,
            data_dir,
            database,
            database_pool_size,
            storage,
            s3_endpoint,
            s3_region,
            s3_virtual_hosted,
            s3_equal_parts,
            s3_redirect_downloads,
            max_upload_size,
            min_free_space,
            expire_incomplete,
            public_url,
            auth_token,
            auth_tokens_file,
            auth_jwt_secret,
            auth_jwt_public_key,
            max_incomplete_uploads,
            max_stored_bytes,
            link_secret,
            link_ttl,
            header_timeout,
            idle_timeout,
            shutdown_grace,
            max_connections,
            metrics_token,
            metrics_listen,
            insecure_no_auth,
            log_format,
            web_dir,
            tls_cert,
            tls_key,
            hook_url,
            hook_secret,
            hook_events
        );
        merged.config = Some(path);
        Ok(merged)
    }

    /// The address of `--listen`: an IP address with a port, or a host name with a port
    /// (`localhost:8080`), resolved once at start-up (the first address the resolver gives,
    /// IPv4 first, as `curl` and `nginx` do for a name that resolves to both).
    pub fn listen_addr(&self) -> anyhow::Result<SocketAddr> {
        if let Ok(addr) = self.listen.parse() {
            return Ok(addr);
        }
        let bad = || {
            format!(
                "--listen {:?} is not an address like 127.0.0.1:8080, [::1]:8080 or localhost:8080",
                self.listen
            )
        };
        let (host, port) = self.listen.rsplit_once(':').with_context(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            bail!(bad());
        }
        let mut addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&self.listen)
            .with_context(|| format!("--listen {:?}: the host name does not resolve", self.listen))?
            .collect();
        addrs.sort_by_key(|a| a.is_ipv6());
        addrs
            .into_iter()
            .next()
            .with_context(|| format!("--listen {:?}: the host name has no address", self.listen))
    }

    /// What `--database` names.
    pub fn database_url(&self) -> anyhow::Result<Database> {
        match &self.database {
            None => Ok(Database::Sqlite(self.data_dir.join("ferry.db"))),
            Some(url) => match url.strip_prefix("sqlite://") {
                Some(p) => Ok(Database::Sqlite(PathBuf::from(p))),
                None if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                    Ok(Database::Postgres(url.clone()))
                }
                None => bail!(
                    "--database {}: expected sqlite://PATH or postgres://USER:PASSWORD@HOST:PORT/DB",
                    redact_url(url)
                ),
            },
        }
    }

    /// Where `--storage` puts file bytes.
    pub fn storage(&self) -> anyhow::Result<Storage> {
        match &self.storage {
            None => Ok(Storage::Dir(self.data_dir.join("files"))),
            Some(url) => match url.strip_prefix("file://") {
                Some(p) => Ok(Storage::Dir(PathBuf::from(p))),
                None if ferry_store::s3::is_s3_url(url) => {
                    let opts = ferry_store::s3::S3Options {
                        endpoint: self.s3_endpoint.clone(),
                        region: self.s3_region.clone(),
                        virtual_hosted: self.s3_virtual_hosted,
                        equal_parts: self.s3_equal_parts,
                    };
                    let config =
                        ferry_store::s3::S3Config::new(url, &opts, |name| std::env::var(name).ok())
                            .map_err(anyhow::Error::msg)?;
                    Ok(Storage::S3(config))
                }
                None => bail!("--storage {url}: expected file://PATH or s3://BUCKET/PREFIX"),
            },
        }
    }

    /// Settings suitable for tests: everything under `dir`, no expiry.
    pub fn for_dir(dir: &Path) -> Self {
        let cli = ServeCli::parse_from(["ferry-serve"]);
        ServeArgs {
            data_dir: dir.to_owned(),
            expire_incomplete: Duration::ZERO,
            ..cli.args
        }
    }
}

/// Parses sizes like `1073741824`, `500MB`, `5MiB`, `1TiB` (binary and decimal units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 500MB or 1TiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit (use B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses durations like `24h`, `30m`, `90s`, `7d`, `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 24h or 30m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => return Ok(Duration::from_millis(n)),
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("{s:?}: unknown unit (use ms, s, m, h, d)")),
    };
    Ok(Duration::from_secs(secs))
}

/// Where file bytes live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    Dir(PathBuf),
    S3(ferry_store::s3::S3Config),
}

/// Where upload metadata lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    /// A `postgres://` URL (it may hold a password: print it with [`redact_url`]).
    Postgres(String),
}

/// A URL with the password of its user-info part replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_addresses_and_host_names() {
        let with = |l: &str| ServeArgs {
            listen: l.to_owned(),
            ..ServeArgs::for_dir(Path::new("/tmp"))
        };
        assert_eq!(
            with("127.0.0.1:8080").listen_addr().unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            with("[::1]:9").listen_addr().unwrap(),
            "[::1]:9".parse().unwrap()
        );
        let local = with("localhost:8080").listen_addr().unwrap();
        assert!(local.ip().is_loopback() && local.port() == 8080, "{local}");
        for bad in [
            "localhost",
            "localhost:",
            ":8080",
            "localhost:99999",
            "no such host.invalid:1",
        ] {
            let e = with(bad).listen_addr().unwrap_err().to_string();
            assert!(e.contains("--listen"), "{bad}: {e}");
        }
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("1TiB").unwrap(), 1 << 40);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("42").unwrap(), 42);
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999TiB").is_err());
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("1y").is_err());
    }

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://ferry:s3cret@db:5432/ferry"),
            "postgres://ferry:***@db:5432/ferry"
        );
        assert_eq!(
            redact_url("postgres://ferry:p@ss@db/x?sslmode=disable"),
            "postgres://ferry:***@db/x?sslmode=disable"
        );
        assert_eq!(redact_url("postgres://ferry@db/x"), "postgres://ferry@db/x");
        assert_eq!(redact_url("sqlite:///var/x.db"), "sqlite:///var/x.db");
    }
}
