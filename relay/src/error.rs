//! The relay's errors, and the one place they become gRPC statuses.

use tonic::Status;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The request is invalid (bad filter, bad time range...).
    #[error("{0}")]
    InvalidRequest(String),
    /// A node refused the request; its status is passed on.
    #[error("node {node}: {status}")]
    Node {
        /// The node.
        node: String,
        /// What it said.
        status: Status,
    },
    /// No node could answer.
    #[error("no node is available{}", if .0.is_empty() { String::new() } else { format!(": {}", .0) })]
    NoNodes(String),
}

impl From<RelayError> for Status {
    fn from(e: RelayError) -> Status {
        match e {
            RelayError::InvalidRequest(m) => Status::invalid_argument(m),
            RelayError::Node { node, status } => {
                Status::new(status.code(), format!("node {node}: {}", status.message()))
            }
            e @ RelayError::NoNodes(_) => Status::unavailable(e.to_string()),
        }
    }
}
