//! `lumen-relay`: serves the Observer API for the whole cluster (see the library docs and
//! [`lumen_relay::config`] for the configuration file).

use anyhow::{Context, Result};
use clap::Parser;
use lumen_relay::config::RelayConfig;
use std::{path::PathBuf, time::Duration};

/// Lumen relay.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (YAML, Hubble relay's Helm-values key names).
    #[arg(
        long,
        short,
        env = "LUMEN_RELAY_CONFIG",
        default_value = "/etc/lumen/relay.yaml"
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
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(args)));
    if let Err(e) = result {
        eprintln!("lumen-relay: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    let cfg = RelayConfig::load(&args.config)
        .with_context(|| format!("configuration {}", args.config.display()))?;
    let addr = cfg.listen_socket_addr()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(
        %addr,
        peer_service = %cfg.peer_service,
        static_peers = cfg.peers.len(),
        agent_mtls = cfg.tls.is_some(),
        listen_tls = cfg.listen_tls.is_some(),
        "relay listening"
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(lumen_relay::serve(cfg, listener, async {
        let _ = stop_rx.await;
    }));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        r = server => return Ok(r.context("server task")??),
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(());
    // Follow streams never finish by themselves: give the others a moment, then exit.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}
