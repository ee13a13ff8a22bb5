//! HTTPS on ferry's own listener (`--tls-cert`, `--tls-key`): rustls on the ring provider,
//! TLS 1.2 and 1.3, ALPN `h2` and `http/1.1` (the transport serves HTTP/2 or HTTP/1.1 by
//! what the handshake chose).
//!
//! The certificate file is PEM and may hold a chain (the server's certificate first, then
//! intermediates); the key file is a PEM private key, PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
//! Either file unreadable, empty of what it should hold, or a key that does not belong to
//! the certificate stops `ferry serve` before it listens, with a sentence naming the flag.
//!
//! On SIGHUP ([`reload_on_sighup`]) both files are read again, so a renewed certificate
//! (certbot, cert-manager) is picked up without a restart: new handshakes use it, open
//! connections keep theirs. A reload that fails is logged and the current certificate kept.

use anyhow::bail;
use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

/// ALPN protocols offered, in the server's order of preference.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The TLS configuration of a listener, re-read from its files on [`Tls::reload`].
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
    reloaded: AtomicU64,
    failed: AtomicU64,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// The configuration of `--tls-cert` and `--tls-key`: `None` without either, an error
    /// naming both flags with only one, or a sentence naming the flag and the problem when a
    /// file cannot be used.
    pub fn from_args(cert: Option<&Path>, key: Option<&Path>) -> anyhow::Result<Option<Arc<Tls>>> {
        match (cert, key) {
            (None, None) => Ok(None),
            (Some(_), None) => bail!(
                "--tls-cert is set but --tls-key is not: give both --tls-cert and --tls-key \
                 to serve HTTPS, or neither to serve plain HTTP"
            ),
            (None, Some(_)) => bail!(
                "--tls-key is set but --tls-cert is not: give both --tls-cert and --tls-key \
                 to serve HTTPS, or neither to serve plain HTTP"
            ),
            (Some(cert), Some(key)) => Ok(Some(Arc::new(Tls::load(cert, key)?))),
        }
    }

    /// Reads `cert` and `key` into a configuration.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Tls> {
        let config = server_config(cert, key)?;
        Ok(Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(config)),
            reloaded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    /// The configuration new handshakes use.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Reads both files again; on success new handshakes use them, on failure the current
    /// configuration stays. Logs either way.
    pub fn reload(&self) -> anyhow::Result<()> {
        match server_config(&self.cert, &self.key) {
            Ok(config) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(config);
                self.reloaded.fetch_add(1, Relaxed);
                tracing::info!(
                    cert = %self.cert.display(),
                    key = %self.key.display(),
                    "reloaded the TLS certificate and key: new connections use them"
                );
                Ok(())
            }
            Err(e) => {
                self.failed.fetch_add(1, Relaxed);
                tracing::warn!(
                    error = %e,
                    "reloading the TLS certificate failed: still serving the previous one"
                );
                Err(e)
            }
        }
    }

    /// Reloads done so far: (succeeded, failed).
    pub fn reloads(&self) -> (u64, u64) {
        (self.reloaded.load(Relaxed), self.failed.load(Relaxed))
    }

    /// The certificate file (`--tls-cert`).
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }
}

/// Reloads `tls` on every SIGHUP, until dropped. The handler is installed by this call, not
/// when the future is first polled, so a SIGHUP right after it returns is not fatal.
#[cfg(unix)]
pub fn reload_on_sighup(
    tls: Arc<Tls>,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(async move {
        while hangup.recv().await.is_some() {
            tracing::info!(cert = %tls.cert.display(), "SIGHUP: reloading the TLS certificate");
            let tls = tls.clone();
            // Small files, but still blocking reads.
            let _ = tokio::task::spawn_blocking(move || tls.reload()).await;
        }
    })
}

/// A rustls server configuration (ring provider, TLS 1.2 and 1.3, ALPN `h2`, `http/1.1`)
/// with the chain in `cert` and the key in `key`.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<ServerConfig> {
    let chain = read_chain(cert)?;
    let private = read_key(key)?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("setting up TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => anyhow::anyhow!(
                    "--tls-key {}: the key does not belong to the certificate in --tls-cert {}",
                    key.display(),
                    cert.display()
                ),
                rustls::Error::InvalidCertificate(e) => anyhow::anyhow!(
                    "--tls-cert {}: the first certificate in the file is not usable ({e})",
                    cert.display()
                ),
                e => anyhow::anyhow!("--tls-key {}: the key is not usable ({e})", key.display()),
            })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let flag = "--tls-cert";
    let bytes = read(flag, path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(flag, path, &e))?;
    if chain.is_empty() {
        bail!(
            "{flag} {}: no certificate found in the file (expected PEM \"BEGIN CERTIFICATE\" \
             blocks, the server's certificate first)",
            path.display()
        );
    }
    Ok(chain)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let flag = "--tls-key";
    let bytes = read(flag, path)?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => bail!(
            "{flag} {}: no private key found in the file (expected an unencrypted PEM key: \
             PKCS#8, PKCS#1 or SEC1)",
            path.display()
        ),
        Err(e) => Err(pem_error(flag, path, &e)),
    }
}

fn read(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("{flag} {}: cannot read the file ({e})", path.display()))
}

fn pem_error(flag: &str, path: &Path, e: &pem::Error) -> anyhow::Error {
    let why = match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "a \"BEGIN {}\" block has no END line",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => {
            format!("malformed BEGIN line {:?}", String::from_utf8_lossy(line))
        }
        pem::Error::Base64Decode(e) => format!("a block is not valid base64: {e}"),
        e => e.to_string(),
    };
    anyhow::anyhow!("{flag} {}: not a valid PEM file ({why})", path.display())
}
