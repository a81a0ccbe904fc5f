//! Loads the relay's TLS material: the client identity and CAs it uses towards agents
//! (`tls`), and the server identity for its own clients (`listenTls`).

use crate::config::{AgentTls, ListenTls};
use lumen_certgen::load::{read_cert_bundle, read_pem};
use std::path::PathBuf;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Why the TLS settings cannot be used.
pub type TlsError = lumen_certgen::load::PemError;

fn read_cas(key: &'static str, files: &[PathBuf]) -> Result<Certificate, TlsError> {
    Ok(Certificate::from_pem(read_cert_bundle(key, files)?))
}

/// The relay's TLS towards agents, loaded: identity, CAs, optional fixed server name.
#[derive(Debug, Clone)]
pub struct DialTls {
    identity: Identity,
    ca: Certificate,
    server_name: Option<String>,
}

impl DialTls {
    /// Reads the files named by `tls`.
    pub fn load(cfg: &AgentTls) -> Result<DialTls, TlsError> {
        let cert = read_pem("tls.clientCertFile", &cfg.client_cert_file, "CERTIFICATE")?;
        let key = read_pem("tls.clientKeyFile", &cfg.client_key_file, "PRIVATE KEY")?;
        Ok(DialTls {
            identity: Identity::from_pem(cert, key),
            ca: read_cas("tls.caFiles", &cfg.ca_files)?,
            server_name: cfg.server_name.clone().filter(|s| !s.is_empty()),
        })
    }

    /// The name verified for node `node` (`cluster/node`, if known): `serverName` if
    /// configured, else Hubble's `<node>.<cluster>.hubble-grpc.cilium.io`; `None`: the
    /// host of the address.
    pub fn server_name(&self, node: Option<&str>) -> Option<String> {
        self.server_name.clone().or_else(|| {
            node.and_then(|n| n.split_once('/'))
                .map(|(cluster, node)| lumen_certgen::node_server_name(node, cluster))
        })
    }

    /// The client configuration for node `node` (`cluster/node`, if known), verifying
    /// [`DialTls::server_name`].
    pub fn client_config(&self, node: Option<&str>) -> ClientTlsConfig {
        let mut c = ClientTlsConfig::new()
            .identity(self.identity.clone())
            .ca_certificate(self.ca.clone());
        if let Some(n) = self.server_name(node) {
            c = c.domain_name(n);
        }
        c
    }
}

/// The server configuration from `listenTls`.
pub fn server_tls_config(cfg: &ListenTls) -> Result<ServerTlsConfig, TlsError> {
    let cert = read_pem("listenTls.certFile", &cfg.cert_file, "CERTIFICATE")?;
    let key = read_pem("listenTls.keyFile", &cfg.key_file, "PRIVATE KEY")?;
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if !cfg.client_ca_files.is_empty() {
        tls = tls
            .client_ca_root(read_cas("listenTls.clientCAFiles", &cfg.client_ca_files)?)
            .client_auth_optional(false);
    }
    Ok(tls)
}
