//! The local API server: one JSON request per line from the CNI plugin (see
//! `lumen_cni::protocol`) or the `lumen` admin CLI (see [`crate::admin`]), one JSON
//! response per line back. Only reachable through a unix socket.

use crate::agent::Agent;
use lumen_cni::protocol::{Request, Response};
use std::{path::Path, sync::Arc};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

/// Longest request line accepted; anything longer is refused, not buffered.
const MAX_LINE: usize = 64 * 1024;

/// Binds the socket (replacing a stale one) and serves until the task is dropped.
pub fn serve(path: &Path, agent: Arc<Agent>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let agent = agent.clone();
                    tokio::spawn(async move {
                        if let Err(e) = connection(stream, agent).await {
                            tracing::debug!(error = %e, "local API connection ended");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "local API accept failed"),
            }
        }
    }))
}

async fn connection(stream: UnixStream, agent: Arc<Agent>) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd.take(MAX_LINE as u64 * 16)).lines();
    while let Some(line) = lines.next_line().await? {
        let resp = if line.len() > MAX_LINE {
            Response::Error {
                message: format!(
                    "request of {} bytes exceeds the {MAX_LINE}-byte limit",
                    line.len()
                ),
            }
        } else if crate::admin::is_admin(&line) {
            let resp = match serde_json::from_str::<crate::admin::AdminRequest>(&line) {
                Ok(req) => crate::admin::handle(&agent, req),
                Err(e) => crate::admin::AdminResponse::Error {
                    message: format!("malformed request: {e}"),
                },
            };
            let mut out = serde_json::to_vec(&resp).expect("serializable");
            out.push(b'\n');
            wr.write_all(&out).await?;
            continue;
        } else {
            match serde_json::from_str::<Request>(&line) {
                Ok(req) => agent.handle(req).await,
                Err(e) => Response::Error {
                    message: format!("malformed request: {e}"),
                },
            }
        };
        let mut out = serde_json::to_vec(&resp).expect("serializable");
        out.push(b'\n');
        wr.write_all(&out).await?;
    }
    Ok(())
}
