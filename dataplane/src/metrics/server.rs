//! The HTTP server of `/metrics` (Prometheus' scrape endpoint).

use super::Exporter;
use axum::{http::header, routing::get, Router};
use std::{net::SocketAddr, sync::Arc};

/// Why the metrics server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address could not be bound.
    #[error("binding the metrics server to {addr}: {source}")]
    Bind {
        /// The address (`hubble.metrics.listenAddress`, `hubble.metrics.port`).
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// Content type of the OpenMetrics text format Prometheus negotiates.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `addr` and serves `/metrics` from `exporter` until the task is dropped.
pub async fn serve(
    addr: SocketAddr,
    exporter: Arc<Exporter>,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let exporter = exporter.clone();
            async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], exporter.encode()) }
        }),
    );
    tracing::info!(%addr, "metrics server listening");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    }))
}
