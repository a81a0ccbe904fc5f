//! A stand-in Hubble agent with synthetic flows of a small shop, to try the UI without a
//! cluster: `cargo run -p lumen-ui --example demo_agent -- 127.0.0.1:4244`, then point
//! `lumen-relay` at it as a static peer (or `lumen-ui --relay 127.0.0.1:4244` directly).
//! It serves `observer.Observer` (GetFlows with filters, `number`, `follow`, `since`;
//! ServerStatus; GetNodes) and `grpc.health.v1`, and makes a flow every 200 ms.

use lumen_api::{
    flow::{layer4::Protocol, Endpoint, Flow, Ip, Layer4, Policy, Tcp, Udp, Verdict, Workload},
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
use lumen_filter::FlowMatcher;
use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio::sync::broadcast;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

const NODE: &str = "demo/node1";
const CAPACITY: usize = 4095;

struct Pod {
    ns: &'static str,
    workload: &'static str,
    kind: &'static str,
    pod: &'static str,
    ip: &'static str,
    identity: u32,
}

const FRONTEND: Pod = Pod {
    ns: "shop",
    workload: "frontend",
    kind: "Deployment",
    pod: "frontend-6f7c9-abcde",
    ip: "10.0.1.10",
    identity: 41001,
};
const CART: Pod = Pod {
    ns: "shop",
    workload: "cart",
    kind: "Deployment",
    pod: "cart-5d8b7-fghij",
    ip: "10.0.1.11",
    identity: 41002,
};
const PAYMENTS: Pod = Pod {
    ns: "shop",
    workload: "payments",
    kind: "Deployment",
    pod: "payments-7c6d5-klmno",
    ip: "10.0.1.12",
    identity: 41003,
};
const REDIS: Pod = Pod {
    ns: "shop",
    workload: "redis",
    kind: "StatefulSet",
    pod: "redis-0",
    ip: "10.0.1.13",
    identity: 41004,
};
const DNS: Pod = Pod {
    ns: "kube-system",
    workload: "coredns",
    kind: "Deployment",
    pod: "coredns-5d78c-pqrst",
    ip: "10.0.0.53",
    identity: 102,
};

fn endpoint(p: &Pod) -> Endpoint {
    Endpoint {
        identity: p.identity,
        namespace: p.ns.into(),
        pod_name: p.pod.into(),
        cluster_name: "demo".into(),
        labels: vec![
            format!("k8s:app={}", p.workload),
            format!("k8s:io.kubernetes.pod.namespace={}", p.ns),
        ],
        workloads: vec![Workload {
            name: p.workload.into(),
            kind: p.kind.into(),
        }],
        ..Default::default()
    }
}

fn policy(name: &str, kind: &str) -> Policy {
    Policy {
        name: name.into(),
        namespace: "shop".into(),
        kind: kind.into(),
        revision: 7,
        ..Default::default()
    }
}

/// The `n`th synthetic flow at `t`.
fn synth(n: u64, t: SystemTime) -> Flow {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let world = Endpoint {
        identity: 2,
        labels: vec!["reserved:world".into()],
        ..Default::default()
    };
    let (src, src_ip, dst, dst_ip, port, udp, verdict, reason, dir) = match n % 8 {
        0 | 1 => (
            world,
            "203.0.113.7".to_string(),
            endpoint(&FRONTEND),
            FRONTEND.ip,
            80,
            false,
            Verdict::Forwarded,
            0,
            1,
        ),
        2 | 3 => (
            endpoint(&FRONTEND),
            FRONTEND.ip.into(),
            endpoint(&CART),
            CART.ip,
            8080,
            false,
            Verdict::Forwarded,
            0,
            1,
        ),
        4 => (
            endpoint(&FRONTEND),
            FRONTEND.ip.into(),
            endpoint(&PAYMENTS),
            PAYMENTS.ip,
            443,
            false,
            Verdict::Dropped,
            133,
            1,
        ),
        5 => (
            endpoint(&CART),
            CART.ip.into(),
            endpoint(&REDIS),
            REDIS.ip,
            6379,
            false,
            Verdict::Forwarded,
            0,
            2,
        ),
        6 => (
            endpoint(&CART),
            CART.ip.into(),
            endpoint(&PAYMENTS),
            PAYMENTS.ip,
            8443,
            false,
            Verdict::Dropped,
            181,
            1,
        ),
        _ => (
            endpoint(&FRONTEND),
            FRONTEND.ip.into(),
            endpoint(&DNS),
            DNS.ip,
            53,
            true,
            if n % 16 == 7 {
                Verdict::Audit
            } else {
                Verdict::Forwarded
            },
            0,
            2,
        ),
    };
    let sport = 32768 + (n % 28000) as u32;
    let protocol = if udp {
        Protocol::Udp(Udp {
            source_port: sport,
            destination_port: port,
        })
    } else {
        Protocol::Tcp(Tcp {
            source_port: sport,
            destination_port: port,
            flags: None,
        })
    };
    let mut f = Flow {
        uuid: format!("{:08x}-0000-4000-8000-{:012x}", n, n),
        time: Some(Timestamp {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }),
        verdict: verdict as i32,
        drop_reason: reason,
        drop_reason_desc: reason as i32,
        ip: Some(Ip {
            source: src_ip,
            destination: dst_ip.into(),
            ip_version: 1,
            ..Default::default()
        }),
        l4: Some(Layer4 {
            protocol: Some(protocol),
        }),
        source: Some(src),
        destination: Some(dst),
        r#type: 1,
        node_name: NODE.into(),
        traffic_direction: dir,
        is_reply: Some(pbjson_types::BoolValue { value: false }),
        summary: if udp {
            "UDP".into()
        } else {
            "TCP Flags: SYN".into()
        },
        ..Default::default()
    };
    match (verdict, dir) {
        (Verdict::Forwarded | Verdict::Audit, 1) => {
            f.ingress_allowed_by = vec![policy("allow-shop-ingress", "CiliumNetworkPolicy")]
        }
        (Verdict::Forwarded | Verdict::Audit, _) => {
            f.egress_allowed_by = vec![policy("allow-shop-egress", "CiliumNetworkPolicy")]
        }
        (Verdict::Dropped, _) if reason == 181 => {
            f.ingress_denied_by = vec![policy("deny-cart-to-payments", "CiliumNetworkPolicy")]
        }
        _ => {}
    }
    f
}

#[derive(Clone)]
struct Agent {
    ring: Arc<Mutex<VecDeque<Flow>>>,
    seen: Arc<Mutex<u64>>,
    live: broadcast::Sender<Flow>,
    started: SystemTime,
}

impl Agent {
    fn push(&self, f: Flow) {
        let mut ring = self.ring.lock().unwrap();
        if ring.len() == CAPACITY {
            ring.pop_front();
        }
        ring.push_back(f.clone());
        *self.seen.lock().unwrap() += 1;
        let _ = self.live.send(f);
    }
}

fn response(f: Flow) -> Result<GetFlowsResponse, Status> {
    Ok(GetFlowsResponse {
        node_name: f.node_name.clone(),
        time: f.time,
        response_types: Some(ResponseTypes::Flow(f)),
    })
}

fn after(f: &Flow, t: Option<&Timestamp>) -> bool {
    match (f.time.as_ref(), t) {
        (Some(a), Some(b)) => (a.seconds, a.nanos) >= (b.seconds, b.nanos),
        _ => true,
    }
}

#[tonic::async_trait]
impl Observer for Agent {
    type GetFlowsStream = ReceiverStream<Result<GetFlowsResponse, Status>>;
    type GetAgentEventsStream = ReceiverStream<Result<GetAgentEventsResponse, Status>>;
    type GetDebugEventsStream = ReceiverStream<Result<GetDebugEventsResponse, Status>>;

    async fn get_flows(
        &self,
        req: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let req = req.into_inner();
        let m = FlowMatcher::compile(&req.whitelist, &req.blacklist)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let keep = |f: &Flow| {
            m.matches(f)
                && after(f, req.since.as_ref())
                && (req.follow
                    || req
                        .until
                        .as_ref()
                        .is_none_or(|u| !after(f, Some(u)) || f.time == Some(*u)))
        };
        let mut live = self.live.subscribe();
        let matching: Vec<Flow> = self
            .ring
            .lock()
            .unwrap()
            .iter()
            .filter(|f| keep(f))
            .cloned()
            .collect();
        let n = match (req.number, req.follow) {
            (0, true) => 0,
            (0, false) => matching.len(),
            (n, _) => usize::try_from(n).unwrap_or(usize::MAX).min(matching.len()),
        };
        let first: Vec<Flow> = if req.first {
            matching[..n].to_vec()
        } else {
            matching[matching.len() - n..].to_vec()
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let follow = req.follow;
        tokio::spawn(async move {
            for f in first {
                if tx.send(response(f)).await.is_err() {
                    return;
                }
            }
            if !follow {
                return;
            }
            loop {
                tokio::select! {
                    f = live.recv() => match f {
                        Ok(f) if m.matches(&f) => if tx.send(response(f)).await.is_err() { return },
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return,
                    },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
    async fn get_agent_events(
        &self,
        _: Request<GetAgentEventsRequest>,
    ) -> Result<Response<Self::GetAgentEventsStream>, Status> {
        Err(Status::unimplemented("no agent events in the demo"))
    }
    async fn get_debug_events(
        &self,
        _: Request<GetDebugEventsRequest>,
    ) -> Result<Response<Self::GetDebugEventsStream>, Status> {
        Err(Status::unimplemented("no debug events in the demo"))
    }
    async fn get_nodes(
        &self,
        _: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        let (num, seen) = (
            self.ring.lock().unwrap().len() as u64,
            *self.seen.lock().unwrap(),
        );
        Ok(Response::new(GetNodesResponse {
            nodes: vec![Node {
                name: NODE.into(),
                version: "demo-agent".into(),
                address: "127.0.0.1:4244".into(),
                state: 1,
                uptime_ns: self.started.elapsed().unwrap_or_default().as_nanos() as u64,
                num_flows: num,
                max_flows: CAPACITY as u64,
                seen_flows: seen,
                ..Default::default()
            }],
        }))
    }
    async fn get_namespaces(
        &self,
        _: Request<GetNamespacesRequest>,
    ) -> Result<Response<GetNamespacesResponse>, Status> {
        Ok(Response::new(GetNamespacesResponse {
            namespaces: ["kube-system", "shop"]
                .iter()
                .map(|n| Namespace {
                    cluster: "demo".into(),
                    namespace: (*n).into(),
                })
                .collect(),
        }))
    }
    async fn server_status(
        &self,
        _: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let (num, seen) = (
            self.ring.lock().unwrap().len() as u64,
            *self.seen.lock().unwrap(),
        );
        Ok(Response::new(ServerStatusResponse {
            num_flows: num,
            max_flows: CAPACITY as u64,
            seen_flows: seen,
            uptime_ns: self.started.elapsed().unwrap_or_default().as_nanos() as u64,
            version: "demo-agent".into(),
            flows_rate: 5.0,
            ..Default::default()
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: std::net::SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4244".into())
        .parse()?;
    let agent = Agent {
        ring: Arc::default(),
        seen: Arc::default(),
        live: broadcast::channel(1024).0,
        started: SystemTime::now(),
    };
    // Five minutes of history, then a flow every 200 ms.
    let now = SystemTime::now();
    for n in 0..300u64 {
        agent.push(synth(
            n,
            now - Duration::from_secs(300) + Duration::from_secs(n),
        ));
    }
    let gen = agent.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        for n in 300u64.. {
            tick.tick().await;
            gen.push(synth(n, SystemTime::now()));
        }
    });
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    println!("demo agent serving on {addr}");
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(ObserverServer::new(agent))
        .serve(addr)
        .await?;
    Ok(())
}
