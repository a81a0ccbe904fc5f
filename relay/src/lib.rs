//! The Lumen relay: discovers the nodes (an agent's `peer.Peer` service or a static list),
//! keeps one connection per node, and serves `observer.Observer` for the whole cluster:
//! GetFlows merged in time order across nodes, ServerStatus/GetNodes/GetNamespaces
//! aggregated, `grpc.health.v1` alongside.
//!
//! - [`config`]: the YAML configuration;
//! - [`dial`]: addresses and connections (TLS towards agents); [`tls`]: TLS material;
//! - [`pool`]: per-node connections with backoff and health watching;
//! - [`peers`]: discovery feeding the pool;
//! - [`merge`]: the sort buffer; [`select`]: node selection by `node_name` filters;
//! - [`flows`]: the GetFlows fan-out; [`service`]: the gRPC handlers;
//! - [`history`]: flow history (recording, answering old ranges); [`store`]: its backends;
//! - [`error`]: errors and their gRPC statuses.

#![warn(missing_docs)]

pub mod config;
pub mod dial;
pub mod error;
pub mod flows;
pub mod history;
pub mod merge;
pub mod metrics;
pub mod peers;
pub mod pool;
pub mod select;
pub mod service;
pub mod store;
pub mod tls;

use config::RelayConfig;
use std::sync::Arc;

/// Starts discovery and serves on `listener` until `shutdown` resolves.
pub async fn serve(
    cfg: RelayConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let cfg = Arc::new(cfg);
    let dial_tls = cfg.tls.as_ref().map(tls::DialTls::load).transpose()?;
    let listen_tls = cfg
        .listen_tls
        .as_ref()
        .map(tls::server_tls_config)
        .transpose()?;
    let pool = pool::Pool::new(
        dial::Dialer {
            timeout: cfg.dial_timeout,
            tls: dial_tls,
        },
        cfg.retry_backoff,
    );
    let discovery = peers::start(cfg.clone(), pool.clone());
    let merge = flows::MergeConfig {
        max_len: cfg.sort_buffer_max_len,
        drain_timeout: cfg.sort_buffer_drain_timeout,
        open_timeout: cfg.dial_timeout,
    };
    let history = match cfg.history_enabled() {
        Some(h) => Some(history::History::start(h, pool.clone(), merge).await?),
        None => None,
    };
    let metrics = if cfg.prometheus.enabled {
        let addr = cfg.prometheus_socket_addr()?;
        let sources = metrics::Sources {
            pool: pool.clone(),
            history: history.clone(),
        };
        Some(metrics::serve(addr, sources).await?.1)
    } else {
        None
    };
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<lumen_api::observer::observer_server::ObserverServer<service::RelayService>>(
        )
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    // On shutdown, the recorder stops first and the writer stores what it has queued
    // (the process may not outlive the server's graceful shutdown long enough otherwise).
    let flush = history.clone();
    let shutdown = async move {
        shutdown.await;
        if let Some(h) = flush {
            h.shutdown(std::time::Duration::from_secs(2)).await;
        }
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(t) = listen_tls {
        builder = builder.tls_config(t).map_err(ServeError::ListenTls)?;
    }
    let result = builder
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .add_service(health)
        .add_service(service::RelayService::new(pool, merge, history.clone()).into_server())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await;
    if let Some(d) = discovery {
        d.abort();
    }
    if let Some(m) = metrics {
        m.abort();
    }
    if let Some(h) = history {
        // Already done unless serving failed.
        h.shutdown(std::time::Duration::from_secs(2)).await;
    }
    Ok(result?)
}

/// Why the relay could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A TLS file named in the configuration is unusable.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// `listenTls` was refused (certificate and key do not match, or a bad CA).
    #[error("listenTls: {0} (check certFile, keyFile and clientCAFiles)")]
    ListenTls(tonic::transport::Error),
    /// The history store cannot be opened.
    #[error(transparent)]
    History(#[from] store::StoreError),
    /// A setting is unusable (e.g. `prometheus.listenAddress`).
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The metrics server could not bind.
    #[error(transparent)]
    Metrics(#[from] metrics::BindError),
    /// Serving failed.
    #[error("serving: {0}")]
    Transport(#[from] tonic::transport::Error),
}
