//! The `hubble` binary against an in-process fake Hubble server (TCP and unix socket):
//! requests it sends, what it prints, and its one-line errors.

use lumen_api::{
    flow::{Flow, FlowFilter, Ip, Verdict},
    observer::{
        get_flows_response::ResponseTypes,
        observer_server::{Observer, ObserverServer},
        GetAgentEventsRequest, GetAgentEventsResponse, GetDebugEventsRequest,
        GetDebugEventsResponse, GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest,
        GetNamespacesResponse, GetNodesRequest, GetNodesResponse, Namespace, Node,
        ServerStatusRequest, ServerStatusResponse,
    },
    wkt::Timestamp,
};
use std::{
    path::PathBuf,
    process::Output,
    sync::{Arc, Mutex},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
struct Fake {
    requests: Arc<Mutex<Vec<GetFlowsRequest>>>,
}

fn flow(ms: i32, src: &str) -> GetFlowsResponse {
    let t = Timestamp {
        seconds: 1_795_770_000,
        nanos: ms * 1_000_000,
    };
    GetFlowsResponse {
        node_name: "lab/node1".into(),
        time: Some(t),
        response_types: Some(ResponseTypes::Flow(Flow {
            time: Some(t),
            verdict: Verdict::Forwarded as i32,
            ip: Some(Ip {
                source: src.into(),
                destination: "10.0.0.2".into(),
                ..Default::default()
            }),
            node_name: "lab/node1".into(),
            summary: "UDP".into(),
            ..Default::default()
        })),
    }
}

#[tonic::async_trait]
impl Observer for Fake {
    type GetFlowsStream = ReceiverStream<Result<GetFlowsResponse, Status>>;
    type GetAgentEventsStream = ReceiverStream<Result<GetAgentEventsResponse, Status>>;
    type GetDebugEventsStream = ReceiverStream<Result<GetDebugEventsResponse, Status>>;

    async fn get_flows(
        &self,
        req: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let req = req.into_inner();
        if req.whitelist.iter().any(|f| f.source_ip == ["bad"]) {
            return Err(Status::invalid_argument(
                "invalid source_ip \"bad\":\nnot an IP",
            ));
        }
        self.requests.lock().unwrap().push(req);
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.send(Ok(flow(1, "10.0.0.1"))).await.unwrap();
        tx.send(Ok(flow(2, "10.0.0.3"))).await.unwrap();
        Ok(Response::new(ReceiverStream::new(rx)))
    }
    async fn get_agent_events(
        &self,
        _: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_debug_events(
        &self,
        _: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Err(Status::unimplemented(""))
    }
    async fn get_nodes(
        &self,
        _: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        Ok(Response::new(GetNodesResponse {
            nodes: vec![
                Node {
                    name: "lab/node2".into(),
                    state: 2,
                    ..Default::default()
                },
                Node {
                    name: "lab/node1".into(),
                    state: 1,
                    uptime_ns: 3_723_000_000_000,
                    num_flows: 1234,
                    max_flows: 4095,
                    seen_flows: 7446,
                    ..Default::default()
                },
            ],
        }))
    }
    async fn get_namespaces(
        &self,
        _: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        Ok(Response::new(GetNamespacesResponse {
            namespaces: vec![
                Namespace {
                    cluster: "lab".into(),
                    namespace: "kube-system".into(),
                },
                Namespace {
                    cluster: "lab".into(),
                    namespace: "demo".into(),
                },
            ],
        }))
    }
    async fn server_status(
        &self,
        _: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        Ok(Response::new(ServerStatusResponse {
            num_flows: 8190,
            max_flows: 8190,
            seen_flows: 100_000,
            uptime_ns: 1_000_000_000,
            num_connected_nodes: Some(pbjson_types::UInt32Value { value: 1 }),
            num_unavailable_nodes: Some(pbjson_types::UInt32Value { value: 1 }),
            unavailable_nodes: vec!["lab/node2".into()],
            version: "lumen".into(),
            flows_rate: 12.345,
        }))
    }
}

struct Server {
    dir: PathBuf,
    fake: Fake,
    tcp: String,
    unix: PathBuf,
    /// Runs the server; dropped with it.
    _rt: tokio::runtime::Runtime,
}

fn serve(health: bool) -> Server {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fake = Fake::default();
    let dir = std::env::temp_dir().join(format!(
        "hubble-cli-e2e-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let unix = dir.join("hubble.sock");
    let tcp = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let u = tokio::net::UnixListener::bind(&unix).unwrap();
        let router = |health: bool| {
            let (reporter, health_svc) = tonic_health::server::health_reporter();
            tokio::spawn(async move {
                reporter
                    .set_service_status("", tonic_health::ServingStatus::Serving)
                    .await
            });
            tonic::transport::Server::builder()
                .add_optional_service(health.then_some(health_svc))
                .add_service(ObserverServer::new(fake.clone()))
        };
        tokio::spawn(
            router(health).serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
        );
        tokio::spawn(
            router(health).serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(u)),
        );
        addr.to_string()
    });
    Server {
        dir,
        fake,
        tcp,
        unix,
        _rt: rt,
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn hubble(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hubble"))
        .args(args)
        .env("TZ", "UTC")
        .env_remove("HUBBLE_SERVER")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = hubble(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Fails with exactly one line on stderr; returns it.
fn fails(args: &[&str]) -> String {
    let out = hubble(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{args:?}: one line, got {err:?}");
    assert!(err.starts_with("Error: "), "{err}");
    err
}

#[test]
fn observe_over_tcp_and_unix() {
    let s = serve(true);
    let unix = format!("unix://{}", s.unix.display());
    for server in [s.tcp.as_str(), unix.as_str()] {
        let out = ok(&["observe", "--server", server, "--protocol", "udp"]);
        assert_eq!(
            out,
            "Nov 27 09:00:00.001: 10.0.0.1 (unknown) <> 10.0.0.2 (unknown) UNKNOWN FORWARDED (UDP)\n\
             Nov 27 09:00:00.002: 10.0.0.3 (unknown) <> 10.0.0.2 (unknown) UNKNOWN FORWARDED (UDP)\n"
        );
        let req = s.fake.requests.lock().unwrap().pop().unwrap();
        assert_eq!(req.number, 20);
        assert_eq!(
            req.whitelist,
            vec![FlowFilter {
                protocol: vec!["udp".into()],
                ..Default::default()
            }]
        );
    }
    let json = ok(&["observe", "--server", &s.tcp, "-o", "json", "--last", "2"]);
    let lines: Vec<GetFlowsResponse> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, vec![flow(1, "10.0.0.1"), flow(2, "10.0.0.3")]);
    assert_eq!(s.fake.requests.lock().unwrap().pop().unwrap().number, 2);
    // Via the environment.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hubble"))
        .args([
            "observe",
            "--verdict",
            "policy_denied",
            "--not",
            "--pod",
            "kube-system/",
        ])
        .env("HUBBLE_SERVER", &s.tcp)
        .output()
        .unwrap();
    assert!(out.status.success());
    let req = s.fake.requests.lock().unwrap().pop().unwrap();
    assert_eq!(req.whitelist[0].drop_reason_desc, vec![133, 181]);
    assert_eq!(req.blacklist.len(), 2);
}

#[test]
fn status_and_lists() {
    let s = serve(true);
    assert_eq!(
        ok(&["status", "--server", &s.tcp]),
        format!(
            "Healthcheck (via {}): Ok\nCurrent/Max Flows: 8,190/8,190 (100.00%)\nFlows/s: 12.35\nConnected Nodes: 1/2\nUnavailable Nodes: 1\n  - lab/node2\n",
            s.tcp
        )
    );
    assert_eq!(
        ok(&["list", "nodes", "--server", &s.tcp]),
        "NAME        STATUS        AGE      FLOWS/S   CURRENT/MAX-FLOWS\n\
         lab/node1   Connected     1h2m3s   2.00      1234/4095 ( 30.13%)\n\
         lab/node2   Unavailable   N/A      N/A       N/A\n"
    );
    assert_eq!(
        ok(&[
            "list",
            "namespaces",
            "--server",
            &format!("unix://{}", s.unix.display())
        ]),
        "CLUSTER   NAMESPACE\nlab       demo\nlab       kube-system\n"
    );
}

#[test]
fn one_line_errors() {
    let s = serve(false);
    // No health service: status fails like upstream (Unimplemented).
    let e = fails(&["status", "--server", &s.tcp]);
    assert!(e.contains("Unimplemented"), "{e}");
    // The server refuses a filter.
    let e = fails(&["observe", "--server", &s.tcp, "--from-ip", "bad"]);
    assert!(
        e.contains("InvalidArgument") && e.contains("not an IP"),
        "{e}"
    );
    // Nothing listens.
    let e = fails(&["observe", "--server", "127.0.0.1:1", "--timeout", "2s"]);
    assert!(e.contains("failed to connect to '127.0.0.1:1'"), "{e}");
    let e = fails(&["status", "--server", "unix:///nonexistent/hubble.sock"]);
    assert!(e.contains("No such file"), "{e}");
    // Bad flags, before connecting.
    let e = fails(&["observe", "--server", &s.tcp, "--verdict", "maybe"]);
    assert!(e.contains("invalid --verdict value: maybe"), "{e}");
    let e = fails(&["observe", "--server", &s.tcp, "--since", "last tuesday"]);
    assert!(e.contains("failed to parse the since time"), "{e}");
    let e = fails(&["observe", "--server", "host:port"]);
    assert!(e.contains("invalid --server"), "{e}");
    // TLS against a plaintext server: a handshake error, one line.
    let e = fails(&[
        "status",
        "--server",
        &s.tcp,
        "--tls",
        "--tls-allow-insecure",
    ]);
    assert!(e.contains("failed to connect"), "{e}");
}
