//! The gRPC client of the relay's Observer API: connects lazily (short timeout), keeps the
//! channel while it works and forgets it when the relay becomes unreachable, so the next
//! request connects again. Lost events met in any flow stream are counted per node for the
//! status page.

use hubble_cli::conn::TlsOptions;
use lumen_api::{
    flow::Flow,
    observer::{
        get_flows_response::ResponseTypes, observer_client::ObserverClient, GetFlowsRequest,
        GetFlowsResponse, GetNodesRequest, Node, ServerStatusRequest, ServerStatusResponse,
    },
};
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use tonic::{transport::Channel, Code, Status, Streaming};

/// How much longer than the connect timeout reading a bounded flow list may take.
const READ_FACTOR: u32 = 5;

/// Why a relay request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RelayError {
    /// The relay could not be reached (connect failed, unavailable, timed out).
    #[error("relay unreachable at {address}: {reason}")]
    Unreachable {
        /// The configured address.
        address: String,
        /// Why, on one line.
        reason: String,
    },
    /// The relay refused the request's arguments (e.g. a malformed IP filter).
    #[error("the relay refused the request: {0}")]
    InvalidArgument(String),
    /// Any other error status.
    #[error("relay error: {code:?}: {message}")]
    Rpc {
        /// The gRPC code.
        code: Code,
        /// The status message.
        message: String,
    },
}

/// A lazily connected relay client, shared by all requests.
#[derive(Debug)]
pub struct Relay {
    address: String,
    timeout: Duration,
    channel: tokio::sync::Mutex<Option<Channel>>,
    lost: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Relay {
    /// A client for `address` (hubble `--server` syntax); nothing is connected yet.
    pub fn new(address: &str, timeout: Duration) -> Relay {
        Relay {
            address: address.to_string(),
            timeout,
            channel: tokio::sync::Mutex::new(None),
            lost: Arc::default(),
        }
    }

    /// The configured address.
    pub fn address(&self) -> &str {
        &self.address
    }

    async fn client(&self) -> Result<ObserverClient<Channel>, RelayError> {
        let mut slot = self.channel.lock().await;
        if let Some(ch) = slot.as_ref() {
            return Ok(ObserverClient::new(ch.clone()));
        }
        let ch = hubble_cli::conn::connect(&self.address, &TlsOptions::default(), self.timeout)
            .await
            .map_err(|e| {
                tracing::warn!(relay = %self.address, error = %e, "connecting to the relay failed");
                self.unreachable(match e {
                    hubble_cli::Error::Connect { reason, .. } => reason,
                    other => other.to_string(),
                })
            })?;
        tracing::info!(relay = %self.address, "connected to the relay");
        *slot = Some(ch.clone());
        Ok(ObserverClient::new(ch))
    }

    fn unreachable(&self, reason: String) -> RelayError {
        RelayError::Unreachable {
            address: self.address.clone(),
            reason,
        }
    }

    /// Maps a status, forgetting the channel when the relay looks gone.
    async fn status_error(&self, s: Status) -> RelayError {
        let message = hubble_cli::error::one_line(s.message());
        match s.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                *self.channel.lock().await = None;
                self.unreachable(format!("{:?}: {message}", s.code()))
            }
            Code::InvalidArgument => RelayError::InvalidArgument(message),
            code => RelayError::Rpc { code, message },
        }
    }

    fn request<T>(&self, msg: T, timeout: Duration) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(timeout);
        req
    }

    /// Reads a bounded (non-follow) GetFlows answer: the flows, oldest first.
    pub async fn flows(&self, req: GetFlowsRequest) -> Result<Vec<Flow>, RelayError> {
        let limit = self.timeout * READ_FACTOR;
        let read = async {
            let mut client = self.client().await?;
            let mut stream = match client.get_flows(self.request(req, limit)).await {
                Ok(r) => r.into_inner(),
                Err(s) => return Err(self.status_error(s).await),
            };
            let mut flows = vec![];
            loop {
                match stream.message().await {
                    Ok(Some(r)) => flows.extend(self.take_flow(r)),
                    Ok(None) => return Ok(flows),
                    Err(s) => return Err(self.status_error(s).await),
                }
            }
        };
        match tokio::time::timeout(limit, read).await {
            Ok(r) => r,
            Err(_) => Err(self.unreachable(format!("no complete answer within {limit:?}"))),
        }
    }

    /// Opens a `follow` GetFlows stream.
    pub async fn follow(
        &self,
        req: GetFlowsRequest,
    ) -> Result<Streaming<GetFlowsResponse>, RelayError> {
        let mut client = self.client().await?;
        let opening = client.get_flows(tonic::Request::new(req));
        match tokio::time::timeout(self.timeout, opening).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(self.status_error(s).await),
            Err(_) => Err(self.unreachable(format!("no answer within {:?}", self.timeout))),
        }
    }

    /// The flow in a response, counting lost events on the way.
    pub fn take_flow(&self, r: GetFlowsResponse) -> Option<Flow> {
        match r.response_types {
            Some(ResponseTypes::Flow(f)) => Some(f),
            Some(ResponseTypes::LostEvents(l)) => {
                let node = if r.node_name.is_empty() {
                    "(relay)".to_string()
                } else {
                    r.node_name
                };
                if let Ok(mut lost) = self.lost.lock() {
                    *lost.entry(node).or_default() += l.num_events_lost;
                }
                None
            }
            _ => None,
        }
    }

    /// Lost events reported in the flow streams this UI read, per node.
    pub fn lost_events(&self) -> Vec<(String, u64)> {
        self.lost
            .lock()
            .map(|l| l.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default()
    }

    /// The relay's ServerStatus.
    pub async fn server_status(&self) -> Result<ServerStatusResponse, RelayError> {
        let mut client = self.client().await?;
        match client
            .server_status(self.request(ServerStatusRequest {}, self.timeout))
            .await
        {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.status_error(s).await),
        }
    }

    /// The relay's nodes.
    pub async fn nodes(&self) -> Result<Vec<Node>, RelayError> {
        let mut client = self.client().await?;
        match client
            .get_nodes(self.request(GetNodesRequest {}, self.timeout))
            .await
        {
            Ok(r) => Ok(r.into_inner().nodes),
            Err(s) => Err(self.status_error(s).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lumen_api::flow::LostEvent;

    #[tokio::test]
    async fn unreachable_relay() {
        // A port that was just free: nothing listens there.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let relay = Relay::new(&format!("127.0.0.1:{port}"), Duration::from_millis(500));
        let err = relay.server_status().await.unwrap_err();
        assert!(
            matches!(&err, RelayError::Unreachable { address, .. } if address.ends_with(&port.to_string())),
            "{err}"
        );
        // Still unreachable on the next request, which tries again.
        assert!(relay.flows(GetFlowsRequest::default()).await.is_err());
    }

    #[test]
    fn lost_events_are_counted_per_node() {
        let relay = Relay::new("localhost:4245", Duration::from_secs(1));
        let lost = |node: &str, n| GetFlowsResponse {
            node_name: node.into(),
            response_types: Some(ResponseTypes::LostEvents(LostEvent {
                num_events_lost: n,
                ..Default::default()
            })),
            ..Default::default()
        };
        assert!(relay.take_flow(lost("a", 3)).is_none());
        assert!(relay.take_flow(lost("a", 2)).is_none());
        assert!(relay.take_flow(lost("", 1)).is_none());
        assert_eq!(
            relay.lost_events(),
            vec![("(relay)".to_string(), 1), ("a".to_string(), 5)]
        );
    }
}
