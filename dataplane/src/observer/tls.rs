//! Transport security of the agent's TCP listener (`hubble.tls.*`): the server
//! certificate, and — when `clientCAFiles` is set — mandatory client certificates verified
//! against those CAs (mutual TLS, as Hubble deploys it). The unix socket never uses TLS.

use crate::config::HubbleTlsConfig;
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{key} {path}: cannot read: {source} (check the path and the agent's permissions)")]
    Read {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no PEM block of the expected kind.
    #[error("{key} {path}: no PEM {expected} found (expected a file like lumen-certgen writes)")]
    NotPem {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What was looked for.
        expected: &'static str,
    },
}

fn read_pem(key: &'static str, path: &Path, marker: &'static str) -> Result<Vec<u8>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.into(),
        source,
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let found = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.contains(marker));
    if !found {
        return Err(TlsError::NotPem {
            key,
            path: path.into(),
            expected: marker,
        });
    }
    Ok(bytes)
}

/// Builds the TCP listener's TLS configuration from `hubble.tls` (whether or not it is
/// enabled: the caller decides). Reads every file now, so a bad path fails at start-up
/// with the key that names it.
pub fn server_tls_config(cfg: &HubbleTlsConfig) -> Result<ServerTlsConfig, TlsError> {
    let cert = read_pem("hubble.tls.certFile", &cfg.cert_file, "CERTIFICATE")?;
    let key = read_pem("hubble.tls.keyFile", &cfg.key_file, "PRIVATE KEY")?;
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if !cfg.client_ca_files.is_empty() {
        let mut roots = Vec::new();
        for f in &cfg.client_ca_files {
            roots.extend(read_pem("hubble.tls.clientCAFiles", f, "CERTIFICATE")?);
            roots.push(b'\n');
        }
        tls = tls
            .client_ca_root(Certificate::from_pem(roots))
            .client_auth_optional(false);
    }
    Ok(tls)
}
