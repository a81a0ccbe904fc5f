//! The agent's health endpoint for Kubernetes probes: `GET /healthz` on
//! `127.0.0.1:<healthPort>` (Cilium's port 9879). It answers `200 OK` once the agent
//! serves, with one line per check, and `503` while the state source has not synced or
//! reports errors, so a readiness probe keeps traffic away from an agent that cannot see
//! the cluster.

use axum::{http::StatusCode, routing::get, Router};
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

/// Why the health server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The address could not be bound.
    #[error("binding the health endpoint to {addr} (healthPort): {source}")]
    Bind {
        /// `127.0.0.1:<healthPort>`.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// What the probe reports: set by the agent as it comes up.
#[derive(Debug, Default)]
pub struct Health {
    serving: AtomicBool,
}

/// A probe's answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    /// 200 or 503.
    pub status: StatusCode,
    /// One line per check.
    pub body: String,
}

impl Health {
    /// Marks the agent as serving (datapath loaded, APIs bound).
    pub fn set_serving(&self) {
        self.serving.store(true, Ordering::Release);
    }

    /// The verdict given the state source's current errors.
    pub fn verdict(&self, source_errors: &[String]) -> Verdict {
        let serving = self.serving.load(Ordering::Acquire);
        let mut body = format!("agent: {}\n", if serving { "serving" } else { "starting" });
        if source_errors.is_empty() {
            body.push_str("state source: ok\n");
        } else {
            for e in source_errors {
                body.push_str(&format!("state source: {e}\n"));
            }
        }
        let ok = serving && source_errors.is_empty();
        Verdict {
            status: if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            body,
        }
    }
}

/// Source of the state source's current errors (from the latest snapshot).
pub type ErrorsSource = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// Binds `127.0.0.1:<port>` and serves `/healthz` until the task is dropped.
pub async fn serve(
    port: u16,
    health: Arc<Health>,
    errors: ErrorsSource,
) -> Result<tokio::task::JoinHandle<()>, HealthError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HealthError::Bind { addr, source })?;
    let app = Router::new().route(
        "/healthz",
        get(move || {
            let v = health.verdict(&errors());
            async move { (v.status, v.body) }
        }),
    );
    tracing::info!(%addr, "health endpoint listening (/healthz)");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "health endpoint failed");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_until_serving_and_while_the_source_fails() {
        let h = Health::default();
        assert_eq!(h.verdict(&[]).status, StatusCode::SERVICE_UNAVAILABLE);
        h.set_serving();
        assert_eq!(h.verdict(&[]).status, StatusCode::OK);
        let v = h.verdict(&["Pod: not synced".into()]);
        assert_eq!(v.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(v.body.contains("Pod: not synced"), "{}", v.body);
    }

    #[tokio::test]
    async fn serves_healthz_over_http() {
        let h = Arc::new(Health::default());
        h.set_serving();
        // Port 0 is not allowed by the config; bind a free port first.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let _task = serve(port, h, Arc::new(Vec::new)).await.unwrap();
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("agent: serving"), "{out}");
    }
}
