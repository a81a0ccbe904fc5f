//! The relay's `observer.Observer`: thin handlers over the [`Pool`], [`FanOut`] and the
//! aggregations below. GetFlows is served through [`ObserverRoutes`], so that the nodes'
//! encoded responses are written to the client unchanged.

use crate::{
    error::RelayError,
    flows::{FanOut, MergeConfig, CLIENT_QUEUE},
    history::History,
    pool::{NodeInfo, Pool},
};
use lumen_api::encoded::{BatchStream, EncodedFlows, ObserverRoutes};
use lumen_api::{
    observer::{
        observer_client::ObserverClient, observer_server::Observer, GetAgentEventsRequest,
        GetAgentEventsResponse, GetDebugEventsRequest, GetDebugEventsResponse, GetFlowsRequest,
        GetFlowsResponse, GetNamespacesRequest, GetNamespacesResponse, GetNodesRequest,
        GetNodesResponse, Namespace, Node, ServerStatusRequest, ServerStatusResponse, Tls,
    },
    relay::NodeState,
};
use std::{collections::BTreeSet, time::Duration};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{codegen::BoxStream, Request, Response, Status};

/// Largest request accepted (Hubble's limit).
const MAX_REQUEST: usize = 4 << 20;

/// Version string reported in ServerStatus and GetNodes.
pub const VERSION: &str = concat!("lumen-relay-", env!("CARGO_PKG_VERSION"));

/// The relay's Observer service.
#[derive(Clone)]
pub struct RelayService {
    pool: Pool,
    history: Option<History>,
    merge: MergeConfig,
    started: std::time::Instant,
}

impl RelayService {
    /// A service over `pool`, answering from `history` what reaches back before the
    /// nodes' live data.
    pub fn new(pool: Pool, merge: MergeConfig, history: Option<History>) -> Self {
        RelayService {
            pool,
            history,
            merge,
            started: std::time::Instant::now(),
        }
    }

    /// As a tonic service (Hubble's message size limits), GetFlows forwarding encoded
    /// responses.
    pub fn into_server(self) -> ObserverRoutes<Self> {
        ObserverRoutes::new(self, MAX_REQUEST)
    }

    /// Calls `f` on every connected node at once (each bounded by the open timeout);
    /// returns, per known node, its info and the answer (or why there is none).
    async fn ask_all<T, F, Fut>(&self, f: F) -> Vec<(NodeInfo, Result<T, String>)>
    where
        T: Send + 'static,
        F: Fn(ObserverClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<T>, Status>> + Send + 'static,
    {
        let timeout = self.merge.open_timeout;
        let mut set = tokio::task::JoinSet::new();
        let snapshot = self.pool.snapshot();
        let mut out = vec![];
        for (i, node) in snapshot.values().enumerate() {
            match &node.channel {
                Some(ch) if node.state == NodeState::NodeConnected => {
                    let fut = f(ObserverClient::new(ch.clone()));
                    set.spawn(async move {
                        let r = match tokio::time::timeout(timeout, fut).await {
                            Ok(Ok(r)) => Ok(r.into_inner()),
                            Ok(Err(s)) => Err(s.message().to_string()),
                            Err(_) => Err("timed out".to_string()),
                        };
                        (i, r)
                    });
                }
                _ => out.push((i, Err(node.message.clone()))),
            }
        }
        while let Some(r) = set.join_next().await {
            if let Ok(r) = r {
                out.push(r);
            }
        }
        out.sort_by_key(|(i, _)| *i);
        let nodes: Vec<NodeInfo> = snapshot.values().cloned().collect();
        out.into_iter()
            .map(|(i, r)| (nodes[i].clone(), r))
            .collect()
    }
}

/// Sums the nodes' statuses (`None`: unavailable).
pub fn aggregate_status(
    nodes: &[(String, Option<ServerStatusResponse>)],
    uptime: Duration,
) -> ServerStatusResponse {
    let mut out = ServerStatusResponse {
        uptime_ns: uptime.as_nanos() as u64,
        version: VERSION.into(),
        ..Default::default()
    };
    let (mut connected, mut unavailable) = (0u32, 0u32);
    for (name, s) in nodes {
        match s {
            Some(s) => {
                connected += 1;
                out.num_flows += s.num_flows;
                out.max_flows += s.max_flows;
                out.seen_flows += s.seen_flows;
                out.flows_rate += s.flows_rate;
            }
            None => {
                unavailable += 1;
                out.unavailable_nodes.push(name.clone());
            }
        }
    }
    out.num_connected_nodes = Some(pbjson_types::UInt32Value { value: connected });
    out.num_unavailable_nodes = Some(pbjson_types::UInt32Value { value: unavailable });
    out
}

impl EncodedFlows for RelayService {
    type Stream = BatchStream;

    /// Starts a fan-out for `req`; its encoded responses arrive on the stream.
    async fn encoded_flows(&self, req: GetFlowsRequest) -> Result<BatchStream, Status> {
        if let Some(h) = &self.history {
            if let Some(stream) = h.answer(&req)? {
                return Ok(stream);
            }
        }
        let fan = FanOut::start(req, self.pool.subscribe(), self.merge).await?;
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        tokio::spawn(fan.run(tx));
        Ok(BatchStream::new(rx))
    }
}

#[tonic::async_trait]
impl Observer for RelayService {
    type GetFlowsStream = BoxStream<GetFlowsResponse>;
    type GetAgentEventsStream = ReceiverStream<Result<GetAgentEventsResponse, Status>>;
    type GetDebugEventsStream = ReceiverStream<Result<GetDebugEventsResponse, Status>>;

    // Served, GetFlows goes through `ObserverRoutes` to `encoded_flows`: this is for
    // callers of the trait only.
    async fn get_flows(
        &self,
        req: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        Ok(Response::new(
            self.encoded_flows(req.into_inner()).await?.decoded(),
        ))
    }

    async fn get_agent_events(
        &self,
        _req: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Err(Status::unimplemented("agent events are not relayed"))
    }

    async fn get_debug_events(
        &self,
        _req: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Err(Status::unimplemented("debug events are not relayed"))
    }

    async fn get_nodes(
        &self,
        _req: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        let answers = self
            .ask_all(|mut c| async move { c.get_nodes(GetNodesRequest {}).await })
            .await;
        let dialer = self.pool.dialer();
        let nodes = answers
            .into_iter()
            .map(|(info, r)| {
                let own = r.ok().and_then(|r| r.nodes.into_iter().next());
                let state = if own.is_some() {
                    NodeState::NodeConnected
                } else {
                    NodeState::NodeUnavailable
                };
                let own = own.unwrap_or_default();
                let tls = dialer.tls_of(&info.address, &info.name);
                Node {
                    name: info.name,
                    version: own.version,
                    address: info.address,
                    state: state as i32,
                    // As Hubble's relay: how it reaches the node.
                    tls: Some(Tls {
                        enabled: tls.is_some(),
                        server_name: tls.unwrap_or_default(),
                    }),
                    uptime_ns: own.uptime_ns,
                    num_flows: own.num_flows,
                    max_flows: own.max_flows,
                    seen_flows: own.seen_flows,
                }
            })
            .collect();
        Ok(Response::new(GetNodesResponse { nodes }))
    }

    async fn get_namespaces(
        &self,
        _req: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        let answers = self
            .ask_all(|mut c| async move { c.get_namespaces(GetNamespacesRequest {}).await })
            .await;
        let set: BTreeSet<(String, String)> = answers
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .flat_map(|r| r.namespaces)
            .map(|n| (n.cluster, n.namespace))
            .collect();
        if set.is_empty() && self.pool.snapshot().is_empty() {
            return Err(RelayError::NoNodes(String::new()).into());
        }
        Ok(Response::new(GetNamespacesResponse {
            namespaces: set
                .into_iter()
                .map(|(cluster, namespace)| Namespace { cluster, namespace })
                .collect(),
        }))
    }

    async fn server_status(
        &self,
        _req: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let answers = self
            .ask_all(|mut c| async move { c.server_status(ServerStatusRequest {}).await })
            .await;
        let nodes: Vec<(String, Option<ServerStatusResponse>)> = answers
            .into_iter()
            .map(|(info, r)| (info.name, r.ok()))
            .collect();
        Ok(Response::new(aggregate_status(
            &nodes,
            self.started.elapsed(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sums_and_lists_unavailable_nodes() {
        let s = |n, m, seen, rate| ServerStatusResponse {
            num_flows: n,
            max_flows: m,
            seen_flows: seen,
            flows_rate: rate,
            ..Default::default()
        };
        let agg = aggregate_status(
            &[
                ("c/a".into(), Some(s(10, 100, 50, 1.5))),
                ("c/b".into(), None),
                ("c/c".into(), Some(s(5, 100, 7, 0.5))),
            ],
            Duration::from_secs(2),
        );
        assert_eq!(
            (agg.num_flows, agg.max_flows, agg.seen_flows),
            (15, 200, 57)
        );
        assert_eq!(agg.flows_rate, 2.0);
        assert_eq!(agg.num_connected_nodes.unwrap().value, 2);
        assert_eq!(agg.num_unavailable_nodes.unwrap().value, 1);
        assert_eq!(agg.unavailable_nodes, ["c/b"]);
        assert_eq!(agg.uptime_ns, 2_000_000_000);
        assert_eq!(agg.version, VERSION);
    }
}
