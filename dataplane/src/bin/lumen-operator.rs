//! `lumen-operator`: the cluster-wide allocator. Leader-elected over a Lease; the leader
//! hands out pod CIDRs from the cluster pool (CiliumNodes) and LoadBalancer addresses
//! (LB-IPAM). Serves `GET /healthz` on `healthPort`.

use anyhow::{Context, Result};
use clap::Parser;
use lumen_dataplane::operator::{self, health, OperatorConfig};
use std::path::PathBuf;

/// Lumen operator.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (YAML, Cilium Helm-value key names).
    #[arg(
        long,
        short,
        env = "LUMEN_OPERATOR_CONFIG",
        default_value = "/etc/lumen/operator.yaml"
    )]
    config: PathBuf,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let result = rt
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(args)));
    if let Err(e) = result {
        eprintln!("lumen-operator: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    let cfg = OperatorConfig::load(&args.config)?;
    let client = operator::client(&cfg).await?;
    let identity = operator::identity();
    let health_port = cfg.health_port();
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", health_port))
        .await
        .with_context(|| format!("healthPort {health_port}"))?;
    let health = tokio::spawn(async move { axum::serve(listener, health::router()).await });
    tracing::info!(%identity, mode = ?cfg.ipam.mode(), health_port, "lumen-operator starting");
    operator::run(client, cfg, identity, shutdown()).await;
    health.abort();
    Ok(())
}

/// SIGTERM (the kubelet stopping the pod) or Ctrl-C.
async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
