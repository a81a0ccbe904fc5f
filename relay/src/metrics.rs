//! The relay's `/metrics` (`prometheus.enabled`), in the Prometheus text format: the nodes
//! by connection state, and the flow history's stored and lost counts and its backlog
//! (flows received, not stored yet: non-zero and growing while the store is unavailable).

use crate::{history::History, pool::Pool};
use axum::{http::header, routing::get, Router};
use lumen_api::relay::NodeState;
use std::{fmt::Write as _, net::SocketAddr};

/// What the metrics are read from when scraped.
#[derive(Clone)]
pub struct Sources {
    /// The nodes.
    pub pool: Pool,
    /// The history, when on.
    pub history: Option<History>,
}

/// The flow history's counts at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryCounts {
    /// Flows stored since start.
    pub stored: u64,
    /// Flows received and not stored (queue full, insert failed).
    pub lost: u64,
    /// Flows received and not stored yet.
    pub backlog: u64,
}

impl HistoryCounts {
    /// The counts of `h` now.
    pub fn of(h: &History) -> HistoryCounts {
        HistoryCounts {
            stored: h.stored(),
            lost: h.lost(),
            backlog: h.backlog(),
        }
    }
}

/// The exposition: one line per sample, `# HELP` / `# TYPE` before each family.
pub fn render(nodes: &[NodeState], history: Option<HistoryCounts>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP lumen_relay_nodes Nodes the relay knows, by connection state.\n# TYPE lumen_relay_nodes gauge"
    );
    for state in [
        NodeState::NodeConnected,
        NodeState::NodeUnavailable,
        NodeState::NodeGone,
        NodeState::NodeError,
        NodeState::UnknownNodeState,
    ] {
        let n = nodes.iter().filter(|s| **s == state).count();
        let _ = writeln!(
            out,
            "lumen_relay_nodes{{state=\"{}\"}} {n}",
            state.as_str_name()
        );
    }
    if let Some(HistoryCounts {
        stored,
        lost,
        backlog,
    }) = history
    {
        let _ = writeln!(
            out,
            "# HELP lumen_relay_history_flows_stored_total Flows written to the history store.\n# TYPE lumen_relay_history_flows_stored_total counter\nlumen_relay_history_flows_stored_total {stored}"
        );
        let _ = writeln!(
            out,
            "# HELP lumen_relay_history_flows_lost_total Flows received but not stored (queue full, insert failed).\n# TYPE lumen_relay_history_flows_lost_total counter\nlumen_relay_history_flows_lost_total {lost}"
        );
        let _ = writeln!(
            out,
            "# HELP lumen_relay_history_backlog_flows Flows received and not stored yet (queued, or held while the store is unavailable).\n# TYPE lumen_relay_history_backlog_flows gauge\nlumen_relay_history_backlog_flows {backlog}"
        );
    }
    out
}

/// Why the metrics server could not start.
#[derive(Debug, thiserror::Error)]
#[error("binding the metrics server to {addr}: {source} (prometheus.listenAddress)")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// The cause.
    pub source: std::io::Error,
}

/// Binds `addr` and serves `/metrics` until the task is aborted.
pub async fn serve(
    addr: SocketAddr,
    sources: Sources,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), BindError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| BindError { addr, source })?;
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let s = sources.clone();
            async move {
                let nodes: Vec<NodeState> = s.pool.snapshot().values().map(|n| n.state).collect();
                let history = s.history.as_ref().map(HistoryCounts::of);
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    render(&nodes, history),
                )
            }
        }),
    );
    tracing::info!(addr = %local, "metrics server listening");
    Ok((
        local,
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_counts_nodes_by_state_and_history() {
        let text = render(
            &[
                NodeState::NodeConnected,
                NodeState::NodeConnected,
                NodeState::NodeUnavailable,
            ],
            Some(HistoryCounts {
                stored: 42,
                lost: 3,
                backlog: 7,
            }),
        );
        assert!(
            text.contains("lumen_relay_nodes{state=\"NODE_CONNECTED\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("lumen_relay_nodes{state=\"NODE_UNAVAILABLE\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("lumen_relay_history_flows_stored_total 42\n"),
            "{text}"
        );
        assert!(
            text.contains("lumen_relay_history_flows_lost_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE lumen_relay_history_backlog_flows gauge\nlumen_relay_history_backlog_flows 7\n"),
            "{text}"
        );
        assert!(!render(&[], None).contains("history"));
    }
}
