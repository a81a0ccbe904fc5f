//! A small synchronous client for the agent's local API ([`crate::protocol`]): one
//! connection per request, one JSON line each way, bounded by timeouts so a stuck agent
//! cannot hang the container runtime.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::protocol::{Request, Response};

/// How long the plugin waits for each of connect-write and read.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest answer line accepted; the agent's answers are a few hundred bytes.
const MAX_ANSWER_BYTES: u64 = 1 << 20;

/// Why a call to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket is absent or refuses connections.
    #[error("is lumen-agent running on this node? socket {}: {source}", socket.display())]
    Unavailable {
        /// The socket path.
        socket: PathBuf,
        /// The connect error.
        #[source]
        source: io::Error,
    },
    /// The agent accepted the connection but did not answer in time.
    #[error("lumen-agent at {} did not answer within {timeout:?}", socket.display())]
    Timeout {
        /// The socket path.
        socket: PathBuf,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The agent hung up without answering (it may have restarted).
    #[error("lumen-agent at {} closed the connection without answering", socket.display())]
    NoAnswer {
        /// The socket path.
        socket: PathBuf,
    },
    /// Reading or writing the socket failed.
    #[error("talking to lumen-agent at {} failed: {source}", socket.display())]
    Io {
        /// The socket path.
        socket: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Encoding the request failed.
    #[error("encoding the request for lumen-agent failed: {source}")]
    Encode {
        /// The serializer's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The answer is not a valid [`Response`] line.
    #[error("lumen-agent at {} sent an answer that is not a valid response: {source}", socket.display())]
    BadAnswer {
        /// The socket path.
        socket: PathBuf,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// Whether trying again later may succeed (agent not up yet, restarting, or busy).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Unavailable { .. }
                | ClientError::Timeout { .. }
                | ClientError::NoAnswer { .. }
        )
    }
}

/// A client bound to one agent socket.
#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
    timeout: Duration,
}

impl AgentClient {
    /// A client for `socket` with [`DEFAULT_TIMEOUT`].
    pub fn new(socket: impl Into<PathBuf>) -> AgentClient {
        AgentClient {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with another read/write timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> AgentClient {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether the agent accepts connections (for CNI `STATUS`); sends nothing.
    pub fn probe(&self) -> Result<(), ClientError> {
        self.connect().map(drop)
    }

    /// Sends `request` and waits for the agent's one-line answer.
    pub fn call(&self, request: &Request) -> Result<Response, ClientError> {
        let mut line =
            serde_json::to_vec(request).map_err(|source| ClientError::Encode { source })?;
        line.push(b'\n');
        let mut stream = self.connect()?;
        stream.write_all(&line).map_err(|e| self.io_error(e))?;
        stream.flush().map_err(|e| self.io_error(e))?;

        let mut answer = Vec::new();
        let mut reader = BufReader::new(stream.take(MAX_ANSWER_BYTES));
        reader
            .read_until(b'\n', &mut answer)
            .map_err(|e| self.io_error(e))?;
        if answer.is_empty() {
            return Err(ClientError::NoAnswer {
                socket: self.socket.clone(),
            });
        }
        serde_json::from_slice(&answer).map_err(|source| ClientError::BadAnswer {
            socket: self.socket.clone(),
            source,
        })
    }

    fn connect(&self) -> Result<UnixStream, ClientError> {
        let stream =
            UnixStream::connect(&self.socket).map_err(|source| ClientError::Unavailable {
                socket: self.socket.clone(),
                source,
            })?;
        let timeout = Some(self.timeout);
        stream
            .set_read_timeout(timeout)
            .and_then(|()| stream.set_write_timeout(timeout))
            .map_err(|e| self.io_error(e))?;
        Ok(stream)
    }

    fn io_error(&self, source: io::Error) -> ClientError {
        match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout {
                socket: self.socket.clone(),
                timeout: self.timeout,
            },
            // The agent dying mid-request looks like this; a retry will reach the new one.
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => ClientError::NoAnswer {
                socket: self.socket.clone(),
            },
            _ => ClientError::Io {
                socket: self.socket.clone(),
                source,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Attachment;
    use std::os::unix::net::UnixListener;

    fn get() -> Request {
        Request::EndpointGet {
            attachment: Attachment {
                container_id: "c1".into(),
                ifname: "eth0".into(),
            },
        }
    }

    #[test]
    fn absent_socket_names_the_agent_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let err = AgentClient::new(&socket).call(&get()).unwrap_err();
        assert!(err.is_retryable());
        let text = err.to_string();
        assert!(
            text.contains("is lumen-agent running on this node?"),
            "{text}"
        );
        assert!(text.contains(&socket.display().to_string()), "{text}");
    }

    /// A one-shot stand-in for the agent that answers with `answer` (test double).
    fn fake_agent(
        answer: &'static [u8],
    ) -> (tempfile::TempDir, PathBuf, std::thread::JoinHandle<String>) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            reader.get_mut().write_all(answer).unwrap();
            line
        });
        (dir, socket, handle)
    }

    #[test]
    fn round_trip_one_line_each_way() {
        let (_dir, socket, agent) =
            fake_agent(b"{\"status\":\"endpoint\",\"spec\":null,\"endpoint_id\":null}\n");
        let answer = AgentClient::new(&socket).call(&get()).unwrap();
        assert_eq!(
            answer,
            Response::Endpoint {
                spec: None,
                endpoint_id: None
            }
        );
        let sent = agent.join().unwrap();
        assert!(sent.ends_with('\n'));
        let parsed: Request = serde_json::from_str(sent.trim_end()).unwrap();
        assert_eq!(parsed, get());
    }

    #[test]
    fn garbage_and_silence_are_distinct_errors() {
        let (_dir, socket, agent) = fake_agent(b"hello\n");
        let err = AgentClient::new(&socket).call(&get()).unwrap_err();
        assert!(matches!(err, ClientError::BadAnswer { .. }), "{err}");
        assert!(!err.is_retryable());
        agent.join().unwrap();

        let (_dir, socket, agent) = fake_agent(b"");
        let err = AgentClient::new(&socket).call(&get()).unwrap_err();
        assert!(matches!(err, ClientError::NoAnswer { .. }), "{err}");
        agent.join().unwrap();
    }

    #[test]
    fn a_silent_agent_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let _listener = UnixListener::bind(&socket).unwrap();
        let err = AgentClient::new(&socket)
            .with_timeout(Duration::from_millis(200))
            .call(&get())
            .unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
        assert!(err.is_retryable());
    }
}
