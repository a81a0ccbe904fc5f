//! `GET /healthz` on `healthPort` for the Deployment's liveness and readiness probes.

use axum::{routing::get, Router};

/// The health router: `GET /healthz` answers `ok` while the process runs.
pub fn router() -> Router {
    Router::new().route("/healthz", get(|| async { "ok" }))
}
