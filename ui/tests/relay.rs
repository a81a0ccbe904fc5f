//! The UI's routes against an in-process fake relay (a tonic Observer server): the
//! requests each page sends and what it renders, live rows over SSE included.

use axum::{
    body::Body,
    http::{Request, StatusCode},
};
use http_body_util::BodyExt;
use lumen_api::{
    flow::{Endpoint, Flow, Ip, Layer4, Policy, Tcp, Verdict, Workload},
    observer::{
        get_flows_response::ResponseTypes,
        observer_server::{Observer, ObserverServer},
        GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest,
        GetDebugEventsResponse, GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest,
        GetNamespacesResponse, GetNodesRequest, GetNodesResponse, Node, ServerStatusRequest,
        ServerStatusResponse,
    },
    wkt::Timestamp,
};
use lumen_ui::{
    app::{router, App},
    config::Config,
};
use std::sync::{Arc, Mutex};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request as GrpcRequest, Response, Status};
use tower::ServiceExt;

fn flow(uuid: &str, verdict: Verdict, seconds: i64) -> Flow {
    Flow {
        uuid: uuid.into(),
        time: Some(Timestamp { seconds, nanos: 0 }),
        verdict: verdict as i32,
        drop_reason: if verdict == Verdict::Dropped { 133 } else { 0 },
        node_name: "lab/node1".into(),
        ip: Some(Ip {
            source: "10.0.0.1".into(),
            destination: "10.0.0.2".into(),
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(lumen_api::flow::layer4::Protocol::Tcp(Tcp {
                source_port: 40000,
                destination_port: 8080,
                flags: None,
            })),
        }),
        source: Some(Endpoint {
            identity: 1234,
            namespace: "demo".into(),
            pod_name: "client-1".into(),
            labels: vec!["k8s:app=<script>alert(1)</script>".into()],
            workloads: vec![Workload {
                name: "client".into(),
                kind: "Deployment".into(),
            }],
            ..Default::default()
        }),
        destination: Some(Endpoint {
            identity: 5678,
            namespace: "demo".into(),
            pod_name: "server-1".into(),
            ..Default::default()
        }),
        traffic_direction: 1,
        ingress_denied_by: if verdict == Verdict::Dropped {
            vec![Policy {
                name: "deny-all".into(),
                namespace: "demo".into(),
                ..Default::default()
            }]
        } else {
            vec![]
        },
        summary: "TCP Flags: SYN".into(),
        ..Default::default()
    }
}

#[derive(Clone, Default)]
struct Fake {
    requests: Arc<Mutex<Vec<GetFlowsRequest>>>,
}

fn respond(f: Flow) -> Result<GetFlowsResponse, Status> {
    Ok(GetFlowsResponse {
        node_name: f.node_name.clone(),
        time: f.time,
        response_types: Some(ResponseTypes::Flow(f)),
    })
}

#[tonic::async_trait]
impl Observer for Fake {
    type GetFlowsStream = ReceiverStream<Result<GetFlowsResponse, Status>>;
    type GetAgentEventsStream = ReceiverStream<Result<GetAgentEventsResponse, Status>>;
    type GetDebugEventsStream = ReceiverStream<Result<GetDebugEventsResponse, Status>>;

    async fn get_flows(
        &self,
        req: GrpcRequest<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let req = req.into_inner();
        self.requests.lock().unwrap().push(req.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let uuid = req.whitelist.first().and_then(|f| f.uuid.first().cloned());
        let flows = vec![
            flow("u-1", Verdict::Forwarded, 1_795_770_000),
            flow("u-2", Verdict::Dropped, 1_795_770_001),
        ];
        tokio::spawn(async move {
            if req.follow {
                for i in 0..3 {
                    let f = flow(&format!("live-{i}"), Verdict::Forwarded, 1_795_770_010);
                    if tx.send(respond(f)).await.is_err() {
                        return;
                    }
                }
                // Stay open like a relay until the client goes.
                tx.closed().await;
                return;
            }
            for f in flows {
                if uuid.as_ref().is_none_or(|u| *u == f.uuid) {
                    let _ = tx.send(respond(f)).await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
    async fn get_agent_events(
        &self,
        _: GrpcRequest<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_debug_events(
        &self,
        _: GrpcRequest<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_nodes(
        &self,
        _: GrpcRequest<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        Ok(Response::new(GetNodesResponse {
            nodes: vec![Node {
                name: "lab/node1".into(),
                version: "lumen-agent 0.1.0".into(),
                state: 1,
                ..Default::default()
            }],
        }))
    }
    async fn get_namespaces(
        &self,
        _: GrpcRequest<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        Ok(Response::new(GetNamespacesResponse::default()))
    }
    async fn server_status(
        &self,
        _: GrpcRequest<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        Ok(Response::new(ServerStatusResponse {
            num_flows: 2,
            max_flows: 4095,
            seen_flows: 2,
            version: "lumen-relay 0.1.0".into(),
            ..Default::default()
        }))
    }
}

async fn serve() -> (App, Fake) {
    let fake = Fake::default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ObserverServer::new(fake.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    let mut config = Config::default();
    config.relay.address = addr.to_string();
    config.max_rows = 100;
    (App::new(config), fake)
}

async fn get(app: &App, uri: &str) -> (StatusCode, String) {
    let resp = router(app.clone())
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn flows_page() {
    let (app, fake) = serve().await;
    let (status, body) = get(&app, "/?namespace=demo&verdict=DROPPED").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let req = fake.requests.lock().unwrap().pop().unwrap();
    assert_eq!(req.number, 100);
    assert!(!req.follow);
    assert_eq!(req.whitelist[0].verdict, [Verdict::Dropped as i32]);
    assert_eq!(req.whitelist[0].source_pod, ["demo/"]);
    // Newest first.
    let (u2, u1) = (
        body.find("/flow/u-2").unwrap(),
        body.find("/flow/u-1").unwrap(),
    );
    assert!(u2 < u1);
    assert!(body.contains("demo/client-1"));
    assert!(body.contains("Policy denied"));
}

#[tokio::test]
async fn detail_page_and_missing_flow() {
    let (app, fake) = serve().await;
    let (status, body) = get(&app, "/flow/u-2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        fake.requests.lock().unwrap().pop().unwrap().whitelist[0].uuid,
        ["u-2"]
    );
    assert!(body.contains("k8s:app=&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!body.contains("<script>alert(1)"));
    assert!(body.contains("hubble observe --from-pod demo/client-1 --to-pod demo/server-1 --to-port 8080 --protocol tcp"));
    let (status, body) = get(&app, "/flow/0000-dead").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("no flow with UUID 0000-dead"));
}

#[tokio::test]
async fn denied_status_and_map_pages() {
    let (app, fake) = serve().await;
    let (status, body) = get(&app, "/denied?namespace=demo").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let req = fake.requests.lock().unwrap().pop().unwrap();
    assert_eq!(req.number, 2000);
    assert!(req.whitelist.iter().all(|f| f.drop_reason_desc.len() == 2));
    assert!(body.contains("demo/deny-all"));
    assert!(body.contains("1 denied flows among the last 2000 read, in 1 groups"));

    let (status, body) = get(&app, "/status").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("lumen-relay 0.1.0") && body.contains("lumen-agent 0.1.0"));

    let (status, body) = get(&app, "/map?namespace=demo").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("<svg"));
    assert_eq!(fake.requests.lock().unwrap().pop().unwrap().number, 2000);
}

#[tokio::test]
async fn live_rows_over_sse() {
    let (app, fake) = serve().await;
    let resp = router(app)
        .oneshot(
            Request::get("/flows/stream?namespace=demo")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !text.contains("live-2") {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("live rows within 5s")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    let req = fake.requests.lock().unwrap().pop().unwrap();
    assert!(req.follow);
    assert_eq!(req.number, 0);
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .flat_map(|d| serde_json::from_str::<Vec<serde_json::Value>>(d).unwrap())
        .collect::<Vec<_>>();
    let uuids: Vec<&str> = data.iter().filter_map(|r| r["uuid"].as_str()).collect();
    assert_eq!(uuids, ["live-0", "live-1", "live-2"]);
    assert_eq!(data[0]["verdict_class"], "forwarded");
}
