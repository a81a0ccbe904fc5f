//! The generated tonic server and client talk to each other over loopback TCP, on the
//! Hubble method paths (`/observer.Observer/GetFlows`, `/peer.Peer/Notify`).

use std::pin::Pin;

use lumen_api::observer::observer_client::ObserverClient;
use lumen_api::observer::observer_server::{Observer, ObserverServer};
use lumen_api::observer::{
    get_flows_response::ResponseTypes, GetAgentEventsRequest, GetAgentEventsResponse,
    GetDebugEventsRequest, GetDebugEventsResponse, GetFlowsRequest, GetFlowsResponse,
    GetNamespacesRequest, GetNamespacesResponse, GetNodesRequest, GetNodesResponse,
    ServerStatusRequest, ServerStatusResponse,
};
use lumen_api::peer::peer_client::PeerClient;
use lumen_api::peer::peer_server::{Peer, PeerServer};
use lumen_api::peer::{ChangeNotification, ChangeNotificationType, NotifyRequest};
use lumen_api::{flow, wkt::Timestamp};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Serves `number` flows numbered by `drop_reason`, and a fixed status.
struct TestObserver;

#[tonic::async_trait]
impl Observer for TestObserver {
    type GetFlowsStream = BoxStream<GetFlowsResponse>;
    type GetAgentEventsStream = BoxStream<GetAgentEventsResponse>;
    type GetDebugEventsStream = BoxStream<GetDebugEventsResponse>;

    async fn get_flows(
        &self,
        req: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let n = req.into_inner().number as u32;
        let items = (0..n).map(|i| {
            Ok(GetFlowsResponse {
                node_name: "test/node".into(),
                time: Some(Timestamp {
                    seconds: i64::from(i),
                    nanos: 0,
                }),
                response_types: Some(ResponseTypes::Flow(flow::Flow {
                    drop_reason: i,
                    verdict: flow::Verdict::Dropped.into(),
                    ..Default::default()
                })),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn get_agent_events(
        &self,
        _: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn get_debug_events(
        &self,
        _: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn get_nodes(
        &self,
        _: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        Ok(Response::new(GetNodesResponse::default()))
    }

    async fn get_namespaces(
        &self,
        _: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        Ok(Response::new(GetNamespacesResponse::default()))
    }

    async fn server_status(
        &self,
        _: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        Ok(Response::new(ServerStatusResponse {
            num_flows: 3,
            max_flows: 4095,
            num_connected_nodes: Some(1u32.into()),
            version: "test".into(),
            ..Default::default()
        }))
    }
}

struct TestPeer;

#[tonic::async_trait]
impl Peer for TestPeer {
    type NotifyStream = BoxStream<ChangeNotification>;

    async fn notify(
        &self,
        _: Request<NotifyRequest>,
    ) -> Result<Response<Self::NotifyStream>, Status> {
        let added = ChangeNotification {
            name: "test/node".into(),
            address: "127.0.0.1:4244".into(),
            r#type: ChangeNotificationType::PeerAdded.into(),
            tls: None,
        };
        Ok(Response::new(Box::pin(tokio_stream::once(Ok(added)))))
    }
}

#[tokio::test]
async fn observer_and_peer_over_loopback() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ObserverServer::new(TestObserver))
            .add_service(PeerServer::new(TestPeer))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let url = format!("http://{addr}");

    let mut observer = ObserverClient::connect(url.clone()).await.unwrap();
    let status = observer
        .server_status(ServerStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((status.num_flows, status.max_flows), (3, 4095));
    assert_eq!(status.num_connected_nodes.map(|n| n.value), Some(1));

    let flows: Vec<GetFlowsResponse> = observer
        .get_flows(GetFlowsRequest {
            number: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(flows.len(), 3);
    let Some(ResponseTypes::Flow(last)) = &flows[2].response_types else {
        panic!("not a flow");
    };
    assert_eq!(last.drop_reason, 2);
    assert_eq!(last.verdict(), flow::Verdict::Dropped);

    let err = observer
        .get_agent_events(GetAgentEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    let mut peers = PeerClient::connect(url)
        .await
        .unwrap()
        .notify(NotifyRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = peers.next().await.unwrap().unwrap();
    assert_eq!(first.r#type(), ChangeNotificationType::PeerAdded);
    assert_eq!(first.address, "127.0.0.1:4244");

    server.abort();
}
