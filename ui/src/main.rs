//! `lumen-ui`: serves Lumen's web UI over the relay's Observer API.
//!
//! `lumen-ui [--config ui.yaml] [--listen-address ADDR] [--relay ADDR]`; the flags override
//! the file, the file overrides the defaults (see `lumen_ui::config`).

use anyhow::Context;
use clap::Parser;
use lumen_ui::{app, config::Config};
use std::path::PathBuf;

/// Lumen's web UI.
#[derive(Debug, Parser)]
#[command(name = "lumen-ui", version, about)]
struct Args {
    /// YAML configuration file (defaults apply without one).
    #[arg(long, env = "LUMEN_UI_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides `listenAddress`, e.g. 127.0.0.1:12000.
    #[arg(long)]
    listen_address: Option<String>,
    /// Overrides `relay.address`: host:port or unix:///path.
    #[arg(long)]
    relay: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(a) = args.listen_address {
        config.listen_address = a;
    }
    if let Some(r) = args.relay {
        config.relay.address = r;
    }
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(&config.listen_address)
        .await
        .with_context(|| format!("listening on {}", config.listen_address))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        relay = %config.relay.address,
        max_rows = config.max_rows,
        map_flows = config.map_flows,
        "lumen-ui listening on http://{}",
        listener.local_addr()?
    );
    let router = app::router(app::App::new(config));
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")?;
    Ok(())
}
