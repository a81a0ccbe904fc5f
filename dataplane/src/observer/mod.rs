//! The `observer.Observer` gRPC service of one node, plus `grpc.health.v1`, served on a
//! unix socket and on TCP. Handlers are thin; the semantics live in [`getflows`] and in
//! plain functions here. GetFlows is served through [`ObserverRoutes`], which writes the
//! responses [`getflows`] has encoded.

pub mod getflows;
pub mod tls;

use crate::{agent::Agent, events::Event, ring::Ring};
use getflows::{Query, QueryError};
use lumen_api::{
    encoded::{BatchStream, EncodedFlows, ObserverRoutes},
    observer::{
        observer_server::{Observer, ObserverServer},
        GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest,
        GetDebugEventsResponse, GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest,
        GetNamespacesResponse, GetNodesRequest, GetNodesResponse, Namespace, Node,
        ServerStatusRequest, ServerStatusResponse, Tls,
    },
    relay::NodeState,
};
use std::{collections::BTreeSet, sync::Arc, time::Duration};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{codegen::BoxStream, Request, Response, Status};

/// Version string reported in ServerStatus and GetNodes.
pub const VERSION: &str = concat!("lumen-", env!("CARGO_PKG_VERSION"));

/// The one place where the agent's errors become gRPC statuses.
impl From<QueryError> for Status {
    fn from(e: QueryError) -> Status {
        Status::invalid_argument(e.to_string())
    }
}

/// The Observer service over the agent's ring.
#[derive(Clone)]
pub struct ObserverService {
    agent: Arc<Agent>,
}

impl ObserverService {
    /// A service over `agent`.
    pub fn new(agent: Arc<Agent>) -> Self {
        ObserverService { agent }
    }

    /// As a tonic service, with Hubble's message size limits.
    pub fn into_server(self) -> ObserverRoutes<Self> {
        ObserverRoutes::new(self, 4 << 20)
    }
}

/// Flows per second over the last minute.
pub fn flows_rate(ring: &Ring<Arc<Event>>, now_ns: i64) -> f64 {
    let window = 60_000_000_000i64;
    let (oldest, mut before) = ring.bounds();
    let mut buf = Vec::with_capacity(1024);
    let mut n = 0u64;
    while before > oldest {
        buf.clear();
        before = ring.read_back(before, 1024, &mut buf);
        for ev in &buf {
            if ev.time_ns() < now_ns - window {
                return n as f64 / 60.0;
            }
            n += matches!(**ev, Event::Flow(_)) as u64;
        }
        if buf.is_empty() {
            break;
        }
    }
    n as f64 / 60.0
}

/// Namespaces of the endpoints in the ring's flows.
pub fn namespaces(ring: &Ring<Arc<Event>>) -> Vec<Namespace> {
    let mut set = BTreeSet::new();
    let (mut cursor, tail) = ring.bounds();
    let mut buf = Vec::with_capacity(1024);
    while cursor < tail {
        buf.clear();
        cursor = ring.read_from(cursor, 1024, &mut buf).next;
        for ev in &buf {
            if let Event::Flow(f) = &**ev {
                for ep in [&f.source, &f.destination] {
                    if !ep.namespace.is_empty() {
                        set.insert((ep.cluster_name.clone(), ep.namespace.clone()));
                    }
                }
            }
        }
        if buf.is_empty() {
            break;
        }
    }
    set.into_iter()
        .map(|(cluster, namespace)| Namespace { cluster, namespace })
        .collect()
}

impl EncodedFlows for ObserverService {
    type Stream = BatchStream;

    async fn encoded_flows(&self, req: GetFlowsRequest) -> Result<BatchStream, Status> {
        let query = Query::from_request(&req)?;
        // Batches of up to a ring read (1024 responses) each.
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(query.run(self.agent.ring.clone(), self.agent.node_name.clone(), tx));
        Ok(BatchStream::new(rx))
    }
}

#[tonic::async_trait]
impl Observer for ObserverService {
    type GetFlowsStream = BoxStream<GetFlowsResponse>;
    type GetAgentEventsStream = ReceiverStream<Result<GetAgentEventsResponse, Status>>;
    type GetDebugEventsStream = ReceiverStream<Result<GetDebugEventsResponse, Status>>;

    async fn get_flows(
        &self,
        req: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        // Served, GetFlows goes through `ObserverRoutes` to `encoded_flows`: this is for
        // callers of the trait only.
        Ok(Response::new(
            self.encoded_flows(req.into_inner()).await?.decoded(),
        ))
    }

    async fn get_agent_events(
        &self,
        _req: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Err(Status::unimplemented(
            "agent events are not recorded by this agent yet",
        ))
    }

    async fn get_debug_events(
        &self,
        _req: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Err(Status::unimplemented("the datapath emits no debug events"))
    }

    async fn get_nodes(
        &self,
        _req: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        let a = &self.agent;
        Ok(Response::new(GetNodesResponse {
            nodes: vec![Node {
                name: a.node_name.to_string(),
                version: VERSION.into(),
                address: a.cfg.hubble.listen_address.clone(),
                state: NodeState::NodeConnected as i32,
                tls: Some(Tls {
                    enabled: a.cfg.hubble.tls.enabled,
                    server_name: if a.cfg.hubble.tls.enabled {
                        lumen_certgen::node_server_name(&a.cfg.node_name, &a.cfg.cluster.name)
                    } else {
                        String::new()
                    },
                }),
                uptime_ns: a.started.elapsed().as_nanos() as u64,
                num_flows: a.ring.len() as u64,
                max_flows: a.ring.capacity() as u64,
                seen_flows: a.ring.seen(),
            }],
        }))
    }

    async fn get_namespaces(
        &self,
        _req: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        Ok(Response::new(GetNamespacesResponse {
            namespaces: namespaces(&self.agent.ring),
        }))
    }

    async fn server_status(
        &self,
        _req: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let a = &self.agent;
        Ok(Response::new(ServerStatusResponse {
            num_flows: a.ring.len() as u64,
            max_flows: a.ring.capacity() as u64,
            seen_flows: a.ring.seen(),
            uptime_ns: a.started.elapsed().as_nanos() as u64,
            version: VERSION.into(),
            flows_rate: flows_rate(&a.ring, getflows::now_ns()),
            ..Default::default()
        }))
    }
}

/// Serves the Observer and health services on a unix socket and, if configured, on TCP,
/// until `shutdown` resolves.
pub async fn serve(
    agent: Arc<Agent>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ObserverServer<ObserverService>>()
        .await;
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let observer = ObserverService::new(agent.clone()).into_server();
    let peer = crate::peer::PeerService::new(
        agent.cfg.cluster.name.clone(),
        agent.cfg.listen_socket_addr().ok().map(|a| a.port()),
        agent.cfg.hubble_tcp_enabled() && agent.cfg.hubble.tls.enabled,
        agent.state(),
    )
    .into_server();

    let sock = &agent.cfg.hubble.socket_path;
    if let Some(dir) = sock.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(sock);
    let uds = tokio::net::UnixListener::bind(sock)
        .with_context(|| format!("binding {}", sock.display()))?;
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut stop_uds = stop_tx.subscribe();
    let uds_server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(health.clone())
        .add_service(observer.clone())
        .add_service(peer.clone())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::UnixListenerStream::new(uds),
            async move {
                let _ = stop_uds.recv().await;
            },
        );
    let tcp_server = if !agent.cfg.hubble_tcp_enabled() {
        None
    } else {
        let addr = agent.cfg.listen_socket_addr()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(%addr, socket = %sock.display(), "Hubble Observer API listening");
        let mut stop_tcp = stop_tx.subscribe();
        let mut builder = tonic::transport::Server::builder();
        if agent.cfg.hubble.tls.enabled {
            let tls = tls::server_tls_config(&agent.cfg.hubble.tls)?;
            builder = builder.tls_config(tls).with_context(|| {
                format!(
                    "hubble.tls: certFile {} / keyFile {} / clientCAFiles {:?} are not a usable \
                     certificate, key and CAs",
                    agent.cfg.hubble.tls.cert_file.display(),
                    agent.cfg.hubble.tls.key_file.display(),
                    agent.cfg.hubble.tls.client_ca_files
                )
            })?;
            tracing::info!(
                mutual = !agent.cfg.hubble.tls.client_ca_files.is_empty(),
                "TLS on the TCP listener"
            );
        }
        Some(
            builder
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .add_service(health)
                .add_service(observer)
                .add_service(peer)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async move {
                        let _ = stop_tcp.recv().await;
                    },
                ),
        )
    };
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(());
    });
    match tcp_server {
        Some(tcp) => {
            let (a, b) = tokio::join!(uds_server, tcp);
            a?;
            b?;
        }
        None => uds_server.await?,
    }
    Ok(())
}
