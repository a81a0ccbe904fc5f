//! Connecting to a Hubble server (agent or relay): `host:port` over TCP or
//! `unix:///path` over a unix socket, optionally through TLS (rustls with ring: CA files,
//! client certificate, server name override, and `--tls-allow-insecure`).

use crate::error::{chain, Error, Result};
use hyper_util::rt::TokioIo;
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider},
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::{path::PathBuf, sync::Arc, time::Duration};
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Channel, Endpoint, Uri};

/// The default `--server`: a relay on this host.
pub const DEFAULT_SERVER: &str = "localhost:4245";

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    /// TCP `host:port` (IPv6 hosts in brackets).
    Tcp {
        /// Host name or address, without brackets.
        host: String,
        /// Port.
        port: u16,
    },
    /// A unix socket path.
    Unix(PathBuf),
}

impl ServerAddr {
    /// Parses `--server`: `unix:///path`, `host:port`, `host` (port 4245),
    /// optionally prefixed by `http://`, `https://` or `tcp://`.
    pub fn parse(s: &str) -> Result<ServerAddr> {
        let bad = |why: &str| Error::InvalidArgument(format!("invalid --server {s:?}: {why}"));
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(bad("empty socket path"));
            }
            return Ok(ServerAddr::Unix(PathBuf::from(path)));
        }
        let rest = ["http://", "https://", "tcp://", "dns:///"]
            .iter()
            .find_map(|p| s.strip_prefix(p))
            .unwrap_or(s)
            .trim_end_matches('/');
        if rest.is_empty() {
            return Err(bad("empty address"));
        }
        let (host, port) = if let Some(after) = rest.strip_prefix('[') {
            let (h, tail) = after.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            match tail.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if tail.is_empty() => (h, None),
                None => return Err(bad("unexpected text after ']'")),
            }
        } else if rest.matches(':').count() > 1 {
            (rest, None)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("invalid port"))?,
            None => 4245,
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        Ok(ServerAddr::Tcp {
            host: host.to_string(),
            port,
        })
    }

    fn authority(&self) -> String {
        match self {
            ServerAddr::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            ServerAddr::Tcp { host, port } => format!("{host}:{port}"),
            ServerAddr::Unix(_) => "localhost".into(),
        }
    }
}

/// The TLS flags.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// `--tls`.
    pub enabled: bool,
    /// `--tls-allow-insecure`: do not verify the server's certificate.
    pub allow_insecure: bool,
    /// `--tls-ca-cert-files`.
    pub ca_cert_files: Vec<PathBuf>,
    /// `--tls-client-cert-file`.
    pub client_cert_file: Option<PathBuf>,
    /// `--tls-client-key-file`.
    pub client_key_file: Option<PathBuf>,
    /// `--tls-server-name`.
    pub server_name: Option<String>,
}

/// Accepts any server certificate (for `--tls-allow-insecure`) while still checking the
/// handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Builds the rustls client configuration for the TLS flags (ALPN `h2`).
pub fn tls_config(o: &TlsOptions) -> Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let builder = if o.allow_insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        let files: Vec<PathBuf> = if o.ca_cert_files.is_empty() {
            vec![PathBuf::from(SYSTEM_CA_BUNDLE)]
        } else {
            o.ca_cert_files.clone()
        };
        for file in &files {
            let certs = CertificateDer::pem_file_iter(file)
                .map_err(|e| Error::Tls(format!("reading CA file {}: {e}", file.display())))?;
            for cert in certs {
                let cert = cert
                    .map_err(|e| Error::Tls(format!("reading CA file {}: {e}", file.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::Tls(format!("CA file {}: {e}", file.display())))?;
            }
        }
        if roots.is_empty() {
            return Err(Error::Tls("no CA certificate found".into()));
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match (&o.client_cert_file, &o.client_key_file) {
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
                .map_err(|e| Error::Tls(format!("reading {}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| Error::Tls(format!("reading {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| Error::Tls(e.to_string()))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(Error::InvalidArgument(
                "--tls-client-cert-file and --tls-client-key-file go together".into(),
            ))
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Connects to `server` (the `--server` text) within `timeout`.
pub async fn connect(server: &str, tls: &TlsOptions, timeout: Duration) -> Result<Channel> {
    let addr = ServerAddr::parse(server)?;
    let tls_on = tls.enabled
        || tls.allow_insecure
        || server.starts_with("https://")
        || !tls.ca_cert_files.is_empty()
        || tls.client_cert_file.is_some();
    let tls_cfg = if tls_on {
        let name = match (&tls.server_name, &addr) {
            (Some(n), _) => n.clone(),
            (None, ServerAddr::Tcp { host, .. }) => host.clone(),
            (None, ServerAddr::Unix(_)) => "localhost".into(),
        };
        let name = ServerName::try_from(name.clone())
            .map_err(|_| Error::InvalidArgument(format!("invalid TLS server name {name:?}")))?;
        Some((
            tokio_rustls::TlsConnector::from(Arc::new(tls_config(tls)?)),
            name,
        ))
    } else {
        None
    };
    let endpoint = Endpoint::from_shared(format!("http://{}", addr.authority()))
        .map_err(|e| Error::InvalidArgument(format!("invalid --server {server:?}: {e}")))?
        .connect_timeout(timeout);
    let connector = tower::service_fn(move |_: Uri| {
        let addr = addr.clone();
        let tls_cfg = tls_cfg.clone();
        async move {
            let io: Box<dyn Io> = match &addr {
                ServerAddr::Tcp { host, port } => {
                    let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                    s.set_nodelay(true)?;
                    Box::new(s)
                }
                ServerAddr::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            };
            let io: Box<dyn Io> = match tls_cfg {
                Some((connector, name)) => Box::new(connector.connect(name, io).await?),
                None => io,
            };
            Ok::<_, std::io::Error>(TokioIo::new(io))
        }
    });
    let connecting = endpoint.connect_with_connector(connector);
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => Err(Error::Connect {
            server: server.to_string(),
            reason: chain(&e),
        }),
        Err(_) => Err(Error::Connect {
            server: server.to_string(),
            reason: format!("timed out after {timeout:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        let tcp = |h: &str, p| ServerAddr::Tcp {
            host: h.into(),
            port: p,
        };
        assert_eq!(
            ServerAddr::parse("localhost:4245").unwrap(),
            tcp("localhost", 4245)
        );
        assert_eq!(
            ServerAddr::parse("10.0.0.1").unwrap(),
            tcp("10.0.0.1", 4245)
        );
        assert_eq!(ServerAddr::parse("[::1]:4244").unwrap(), tcp("::1", 4244));
        assert_eq!(
            ServerAddr::parse("http://relay:80").unwrap(),
            tcp("relay", 80)
        );
        assert_eq!(
            ServerAddr::parse("unix:///var/run/cilium/hubble.sock").unwrap(),
            ServerAddr::Unix("/var/run/cilium/hubble.sock".into())
        );
        for bad in ["", "unix://", "host:port", ":4245", "[::1"] {
            assert!(ServerAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_configs() {
        let insecure = TlsOptions {
            enabled: true,
            allow_insecure: true,
            ..Default::default()
        };
        let c = tls_config(&insecure).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"h2".to_vec()]);
        let missing = TlsOptions {
            enabled: true,
            ca_cert_files: vec!["/nonexistent/ca.pem".into()],
            ..Default::default()
        };
        assert!(tls_config(&missing)
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/ca.pem"));
        let half = TlsOptions {
            enabled: true,
            allow_insecure: true,
            client_cert_file: Some("c.pem".into()),
            ..Default::default()
        };
        assert!(tls_config(&half).is_err());
    }
}
