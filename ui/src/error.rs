//! The HTTP boundary's error: what a page handler can fail with, the status code each
//! gets, and the one-line message the error page shows.

use crate::{query::QueryError, relay::RelayError};
use axum::http::StatusCode;

/// Why a page could not be served.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The URL's filters are invalid (400).
    #[error(transparent)]
    BadQuery(#[from] QueryError),
    /// The relay failed or is unreachable (503, or 400 when it refused the filters).
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// What the URL names does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// A template failed to render (500; a bug).
    #[error("rendering the page: {0}")]
    Render(#[from] askama::Error),
}

impl PageError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            PageError::BadQuery(_) => StatusCode::BAD_REQUEST,
            PageError::Relay(RelayError::InvalidArgument(_)) => StatusCode::BAD_REQUEST,
            PageError::Relay(RelayError::Unreachable { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            PageError::Relay(RelayError::Rpc { .. }) => StatusCode::BAD_GATEWAY,
            PageError::NotFound(_) => StatusCode::NOT_FOUND,
            PageError::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message shown to the user.
    pub fn message(&self) -> String {
        match self {
            PageError::Relay(e @ RelayError::Unreachable { .. }) => {
                format!("{e}; is lumen-relay running?")
            }
            other => other.to_string(),
        }
    }

    /// A short heading for the error page.
    pub fn heading(&self) -> &'static str {
        match self {
            PageError::BadQuery(_) | PageError::Relay(RelayError::InvalidArgument(_)) => {
                "Invalid filter"
            }
            PageError::Relay(RelayError::Unreachable { .. }) => "Relay unreachable",
            PageError::Relay(RelayError::Rpc { .. }) => "Relay error",
            PageError::NotFound(_) => "Not found",
            PageError::Render(_) => "Internal error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_messages() {
        let e = PageError::from(RelayError::Unreachable {
            address: "127.0.0.1:1".into(),
            reason: "connection refused".into(),
        });
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            e.message(),
            "relay unreachable at 127.0.0.1:1: connection refused; is lumen-relay running?"
        );
        assert_eq!(
            PageError::from(QueryError::Unknown("x".into())).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            PageError::from(RelayError::InvalidArgument("bad ip".into())).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            PageError::NotFound("no".into()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
