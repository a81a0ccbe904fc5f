//! Transport security of the agent's TCP listener (`hubble.tls.*`): the server
//! certificate, and — when `clientCAFiles` is set — mandatory client certificates verified
//! against those CAs (mutual TLS, as Hubble deploys it). The unix socket never uses TLS.

use crate::config::HubbleTlsConfig;
use lumen_certgen::load::{read_cert_bundle, read_pem};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// Why the TLS settings cannot be used.
pub type TlsError = lumen_certgen::load::PemError;

/// Builds the TCP listener's TLS configuration from `hubble.tls` (whether or not it is
/// enabled: the caller decides). Reads every file now, so a bad path fails at start-up
/// with the key that names it.
pub fn server_tls_config(cfg: &HubbleTlsConfig) -> Result<ServerTlsConfig, TlsError> {
    let cert = read_pem("hubble.tls.certFile", &cfg.cert_file, "CERTIFICATE")?;
    let key = read_pem("hubble.tls.keyFile", &cfg.key_file, "PRIVATE KEY")?;
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if !cfg.client_ca_files.is_empty() {
        let roots = read_cert_bundle("hubble.tls.clientCAFiles", &cfg.client_ca_files)?;
        tls = tls
            .client_ca_root(Certificate::from_pem(roots))
            .client_auth_optional(false);
    }
    Ok(tls)
}
