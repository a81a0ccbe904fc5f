//! Addresses and connections to nodes (and to the peer service).
//!
//! One [`Dialer`] makes every upstream connection. With `tls` set (the relay's `tls`
//! configuration), TCP targets are dialed over mutual TLS (`https`, client certificate,
//! CA, server name per node); unix sockets stay plaintext, as in Hubble.

use hyper_util::rt::TokioIo;
use std::{path::PathBuf, time::Duration};
use tonic::transport::{Channel, Endpoint, Uri};

/// Hubble's default Observer port, for addresses without one.
pub const DEFAULT_PORT: u16 = 4244;

/// Where a node (or peer service) listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `unix:///path`.
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

/// Why an address or a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The address does not parse.
    #[error("invalid address {0:?}")]
    Address(String),
    /// Connecting failed or timed out.
    #[error("connecting to {target}: {source}")]
    Connect {
        /// The address.
        target: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The TLS client configuration was refused.
    #[error("TLS settings for {target}: {source} (check tls.clientCertFile, tls.clientKeyFile, tls.caFiles)")]
    Tls {
        /// The address.
        target: String,
        /// Why.
        source: tonic::transport::Error,
    },
}

impl Target {
    /// Parses `unix:///path`, `unix:/path`, `host:port`, `[v6]:port` or a bare host/IP.
    pub fn parse(s: &str) -> Result<Target, DialError> {
        let s = s.trim();
        if let Some(path) = s
            .strip_prefix("unix://")
            .or_else(|| s.strip_prefix("unix:"))
        {
            if path.is_empty() {
                return Err(DialError::Address(s.into()));
            }
            return Ok(Target::Unix(path.into()));
        }
        let s = s.strip_prefix("http://").unwrap_or(s);
        if s.is_empty() || s.contains('/') {
            return Err(DialError::Address(s.into()));
        }
        if let Ok(ip) = s.parse::<std::net::IpAddr>() {
            return Ok(Target::Tcp(
                std::net::SocketAddr::new(ip, DEFAULT_PORT).to_string(),
            ));
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Target::Tcp(s.into()))
            }
            Some(_) => Err(DialError::Address(s.into())),
            None => Ok(Target::Tcp(format!("{s}:{DEFAULT_PORT}"))),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "unix://{}", p.display()),
            Target::Tcp(a) => f.write_str(a),
        }
    }
}

/// Makes connections.
#[derive(Debug, Clone)]
pub struct Dialer {
    /// Connect timeout.
    pub timeout: Duration,
    /// Mutual TLS for TCP targets; `None`: plaintext.
    pub tls: Option<crate::tls::DialTls>,
}

impl Dialer {
    /// Whether node `node` at `address` is dialled over TLS, and the server name verified
    /// (empty: the address's host).
    pub fn tls_of(&self, address: &str, node: &str) -> Option<String> {
        match (Target::parse(address), &self.tls) {
            (Ok(Target::Tcp(_)), Some(tls)) => {
                Some(tls.server_name(Some(node)).unwrap_or_default())
            }
            _ => None,
        }
    }

    /// Connects (eagerly, within the timeout), with HTTP/2 keepalives so a dead peer is
    /// noticed within seconds even when idle.
    pub async fn dial(&self, target: &Target) -> Result<Channel, DialError> {
        self.dial_node(target, None).await
    }

    /// As [`Dialer::dial`], for node `node` (`cluster/node`): over TLS its certificate is
    /// verified against that node's Hubble server name unless `tls.serverName` is set.
    pub async fn dial_node(
        &self,
        target: &Target,
        node: Option<&str>,
    ) -> Result<Channel, DialError> {
        let err = |source| DialError::Connect {
            target: target.to_string(),
            source,
        };
        let base = |uri: String| -> Result<Endpoint, DialError> {
            Ok(Endpoint::from_shared(uri)
                .map_err(|_| DialError::Address(target.to_string()))?
                .connect_timeout(self.timeout)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true)
                .tcp_nodelay(true))
        };
        match target {
            Target::Tcp(addr) => match &self.tls {
                None => base(format!("http://{addr}"))?.connect().await.map_err(err),
                Some(tls) => base(format!("https://{addr}"))?
                    .tls_config(tls.client_config(node))
                    .map_err(|source| DialError::Tls {
                        target: target.to_string(),
                        source,
                    })?
                    .connect()
                    .await
                    .map_err(err),
            },
            Target::Unix(path) => {
                let path = path.clone();
                let timeout = self.timeout;
                base("http://[::1]:4244".into())?
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            let s = tokio::time::timeout(
                                timeout,
                                tokio::net::UnixStream::connect(path),
                            )
                            .await
                            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
                            Ok::<_, std::io::Error>(TokioIo::new(s))
                        }
                    }))
                    .await
                    .map_err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_applies_to_tcp_nodes_with_hubbles_server_name() {
        let plain = Dialer {
            timeout: Duration::from_secs(1),
            tls: None,
        };
        assert_eq!(plain.tls_of("10.0.0.1:4244", "lab/n1"), None);
        let dir = std::env::temp_dir().join(format!("lumen-dial-test-{}", std::process::id()));
        let b = lumen_certgen::generate(&lumen_certgen::Spec {
            cluster: "lab".into(),
            nodes: vec![],
            days: 1,
        })
        .unwrap();
        b.write(&dir, true).unwrap();
        let tls = crate::tls::DialTls::load(&crate::config::AgentTls {
            client_cert_file: dir.join("relay-client.crt"),
            client_key_file: dir.join("relay-client.key"),
            ca_files: vec![dir.join("ca.crt")],
            server_name: None,
        })
        .unwrap();
        std::fs::remove_dir_all(&dir).ok();
        let d = Dialer {
            timeout: Duration::from_secs(1),
            tls: Some(tls),
        };
        assert_eq!(
            d.tls_of("10.0.0.1:4244", "lab/node.a"),
            Some("node-a.lab.hubble-grpc.cilium.io".into())
        );
        assert_eq!(
            d.tls_of("unix:///run/h.sock", "lab/n1"),
            None,
            "sockets stay plaintext"
        );
    }

    #[test]
    fn parses_addresses() {
        assert_eq!(
            Target::parse("unix:///run/h.sock").unwrap(),
            Target::Unix("/run/h.sock".into())
        );
        assert_eq!(
            Target::parse("10.0.0.1:4244").unwrap(),
            Target::Tcp("10.0.0.1:4244".into())
        );
        assert_eq!(
            Target::parse("10.0.0.1").unwrap(),
            Target::Tcp("10.0.0.1:4244".into())
        );
        assert_eq!(
            Target::parse("fd00::1").unwrap(),
            Target::Tcp("[fd00::1]:4244".into())
        );
        assert_eq!(
            Target::parse("[fd00::1]:5").unwrap(),
            Target::Tcp("[fd00::1]:5".into())
        );
        assert_eq!(
            Target::parse("node1").unwrap(),
            Target::Tcp("node1:4244".into())
        );
        for bad in ["", "unix://", "a/b:1", "host:port"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
