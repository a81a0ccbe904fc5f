//! The one error type of the `hubble` library: every failure a command can report, each
//! rendered as a single line for stderr.

/// Everything that can go wrong in a `hubble` command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag value or combination the CLI refuses (bad verdict, malformed time, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// The server could not be reached.
    #[error("failed to connect to '{server}': {reason}")]
    Connect {
        /// The `--server` value.
        server: String,
        /// Why, flattened to one line.
        reason: String,
    },
    /// The TLS settings could not be turned into a client configuration.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server answered an RPC with an error status.
    #[error("rpc error: code = {code} desc = {message}")]
    Rpc {
        /// The gRPC code name, e.g. `InvalidArgument`.
        code: String,
        /// The status message.
        message: String,
    },
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        Error::Rpc {
            code: format!("{:?}", s.code()),
            message: one_line(s.message()),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its chain of sources as one line (`a: b: c`), without repeats.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    one_line(&parts.join(": "))
}

/// Replaces line breaks so a message stays on one line.
pub fn one_line(s: &str) -> String {
    s.split(['\n', '\r'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
