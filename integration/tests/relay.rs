//! The relay in the lab: two nodes with pods on each, an agent per node, `lumen-relay` in the
//! host namespace discovering the nodes through node1's peer service (unix socket).

mod common;

use common::*;
use lumen_api::{
    flow::{Flow, FlowFilter},
    observer::{
        get_flows_response::ResponseTypes, GetFlowsRequest, GetFlowsResponse, GetNamespacesRequest,
        GetNodesRequest, ServerStatusRequest, ServerStatusResponse,
    },
    relay::NodeState,
};
use lumen_integration::{
    hubble, traffic_bin, AgentOptions, Lab, Node, Pod, Relay, RelayOptions, Spawned,
};
use std::time::{Duration, Instant};

struct NodePods {
    node: Node,
    server: Pod,
    client: Pod,
    _serving: Spawned,
}

struct TwoNodes {
    nodes: Vec<NodePods>,
    relay: Relay,
    rt: tokio::runtime::Runtime,
    // Dropped last: the lab tears down what the fields above use.
    lab: Lab,
}

impl TwoNodes {
    fn new(name: &str) -> TwoNodes {
        let lab = Lab::new(name).expect("lab");
        let mut nodes = vec![];
        for i in 1..=2 {
            let node = lab.add_node(&format!("node{i}")).expect("node");
            node.start_agent(AgentOptions {
                monitor_interval: Duration::from_secs(1),
                ..Default::default()
            })
            .expect("agent");
            let server = node
                .add_pod("demo", &format!("server{i}"), &[("app", "server")])
                .expect("server pod");
            let client = node
                .add_pod("demo", &format!("client{i}"), &[("app", "client")])
                .expect("client pod");
            let mut serving = server
                .spawn(
                    traffic_bin().unwrap(),
                    [
                        "serve",
                        "--tcp",
                        &TCP_PORT.to_string(),
                        "--udp",
                        &UDP_PORT.to_string(),
                    ],
                )
                .expect("server");
            serving
                .wait_for_output("listening", Duration::from_secs(5))
                .expect("server listening");
            nodes.push(NodePods {
                node,
                server,
                client,
                _serving: serving,
            });
        }
        let relay = Relay::start(&lab, RelayOptions::default()).expect("relay");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        TwoNodes {
            nodes,
            relay,
            rt,
            lab,
        }
    }

    /// TCP (and a UDP round trip) from the client to the server pod of node `i` (0-based).
    fn traffic(&self, i: usize) {
        let n = &self.nodes[i];
        let to = n.server.ip().to_string();
        for args in [
            vec!["tcp", "--to", &format!("{to}:{TCP_PORT}")],
            vec!["udp", "--to", &format!("{to}:{UDP_PORT}"), "--count", "1"],
        ] {
            let out = n
                .client
                .exec_ok(traffic_bin().unwrap(), &args)
                .expect("traffic");
            let summary: serde_json::Value =
                serde_json::from_str(out.trim().lines().last().unwrap_or("{}")).expect("JSON");
            assert_eq!(summary["ok"], true, "{args:?}: {out}");
        }
    }

    fn client(&self) -> hubble::Client {
        self.rt
            .block_on(hubble::connect_tcp(&self.relay.addr().to_string()))
            .expect("connect to the relay")
    }

    fn get(&self, req: GetFlowsRequest) -> Vec<GetFlowsResponse> {
        let mut c = self.client();
        self.rt
            .block_on(hubble::collect(
                &mut c,
                req,
                usize::MAX,
                Duration::from_secs(10),
            ))
            .unwrap_or_else(|e| {
                panic!("GetFlows via the relay: {e:#}\n{}", self.relay.log_tail(30))
            })
    }

    fn status(&self) -> ServerStatusResponse {
        let mut c = self.client();
        self.rt
            .block_on(c.server_status(ServerStatusRequest {}))
            .expect("ServerStatus")
            .into_inner()
    }
}

fn time_ns(r: &GetFlowsResponse) -> i64 {
    r.time
        .as_ref()
        .map(|t| t.seconds * 1_000_000_000 + t.nanos as i64)
        .unwrap_or(0)
}

fn flows_of<'a>(rs: &'a [GetFlowsResponse], node: &str) -> Vec<&'a Flow> {
    rs.iter()
        .filter_map(|r| match &r.response_types {
            Some(ResponseTypes::Flow(f)) if f.node_name == node => Some(f),
            _ => None,
        })
        .collect()
}

fn statuses(rs: &[GetFlowsResponse]) -> Vec<(NodeState, Vec<String>)> {
    rs.iter()
        .filter_map(|r| match &r.response_types {
            Some(ResponseTypes::NodeStatus(s)) => Some((s.state_change(), s.node_names.clone())),
            _ => None,
        })
        .collect()
}

fn node_filter(patterns: &[&str]) -> FlowFilter {
    FlowFilter {
        node_name: patterns.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

const N1: &str = "lab/node1";
const N2: &str = "lab/node2";

#[test]
fn relay_merges_nodes_and_aggregates() {
    if !privileged() {
        return;
    }
    let t = TwoNodes::new("relay");
    for _ in 0..2 {
        t.traffic(0);
        t.traffic(1);
    }

    // Both nodes' flows, in time order, in one stream.
    let end = Instant::now() + Duration::from_secs(15);
    let all = loop {
        let all = t.get(GetFlowsRequest::default());
        if flows_of(&all, N1).len() >= 4 && flows_of(&all, N2).len() >= 4 {
            break all;
        }
        assert!(
            Instant::now() < end,
            "flows of both nodes: {:?}",
            statuses(&all)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(
        statuses(&all),
        [(
            NodeState::NodeConnected,
            vec![N1.to_string(), N2.to_string()]
        )]
    );
    let timed: Vec<(i64, &str)> = all
        .iter()
        .filter(|r| !matches!(r.response_types, Some(ResponseTypes::NodeStatus(_))))
        .map(|r| (time_ns(r), r.node_name.as_str()))
        .collect();
    let inversions: Vec<_> = timed.windows(2).filter(|w| w[0].0 > w[1].0).collect();
    assert!(
        inversions.is_empty(),
        "the merged stream is in time order: {inversions:?}"
    );

    // `number` is per node.
    let last3 = t.get(GetFlowsRequest {
        number: 3,
        ..Default::default()
    });
    assert_eq!(flows_of(&last3, N1).len(), 3);
    assert_eq!(flows_of(&last3, N2).len(), 3);

    // A node_name filter asks only the node it names.
    for (pattern, node, other) in [(N2, N2, N1), ("node1", N1, N2), ("lab/*2", N2, N1)] {
        let one = t.get(GetFlowsRequest {
            whitelist: vec![node_filter(&[pattern])],
            ..Default::default()
        });
        assert!(!flows_of(&one, node).is_empty(), "{pattern}");
        assert!(flows_of(&one, other).is_empty(), "{pattern}");
        assert_eq!(
            statuses(&one),
            [(NodeState::NodeConnected, vec![node.to_string()])],
            "{pattern}: only {node} is asked"
        );
    }

    // ServerStatus, GetNodes, GetNamespaces, health.
    let st = t.status();
    assert_eq!(st.num_connected_nodes.unwrap().value, 2);
    assert_eq!(st.num_unavailable_nodes.unwrap().value, 0);
    assert!(st.unavailable_nodes.is_empty());
    assert_eq!(st.max_flows, 2 * 65535);
    assert!(st.num_flows >= 8 && st.seen_flows >= st.num_flows, "{st:?}");
    assert!(st.version.starts_with("lumen-relay-"), "{st:?}");
    let mut c = t.client();
    let nodes =
        t.rt.block_on(c.get_nodes(GetNodesRequest {}))
            .unwrap()
            .into_inner()
            .nodes;
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, [N1, N2]);
    for n in &nodes {
        assert_eq!(n.state(), NodeState::NodeConnected, "{n:?}");
        assert_eq!(n.max_flows, 65535);
        assert!(n.num_flows > 0 && n.version.starts_with("lumen-"), "{n:?}");
        assert!(n.address.starts_with("unix://"), "{n:?}");
    }
    let ns =
        t.rt.block_on(c.get_namespaces(GetNamespacesRequest {}))
            .unwrap()
            .into_inner()
            .namespaces;
    assert!(ns.iter().any(|n| n.namespace == "demo"), "{ns:?}");
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        t.rt.block_on(
            tonic::transport::Endpoint::try_from(format!("http://{}", t.relay.addr()))
                .unwrap()
                .connect(),
        )
        .unwrap(),
    );
    let h =
        t.rt.block_on(health.check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        }))
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // A client this project did not write, pointed at the relay.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/observe.py");
    let out = std::process::Command::new("python3")
        .args([
            script,
            "--server",
            &t.relay.addr().to_string(),
            "--last",
            "2",
        ])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for node in [N1, N2] {
        let n = lines
            .iter()
            .filter(|l| l.get("flow").is_some() && l["node_name"] == node)
            .count();
        assert_eq!(n, 2, "{node}: {stdout}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l["node_status"]["state_change"] == "NODE_CONNECTED"),
        "{stdout}"
    );
    let _ = &t.lab;
}

/// A follow stream through the relay, read in the background.
struct Follow {
    rx: tokio::sync::mpsc::UnboundedReceiver<GetFlowsResponse>,
    seen: Vec<GetFlowsResponse>,
}

impl Follow {
    fn start(t: &TwoNodes) -> Follow {
        let mut c = t.client();
        let mut stream =
            t.rt.block_on(c.get_flows(GetFlowsRequest {
                follow: true,
                ..Default::default()
            }))
            .expect("GetFlows follow")
            .into_inner();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        t.rt.spawn(async move {
            let _c = c;
            while let Ok(Some(r)) = stream.message().await {
                if tx.send(r).is_err() {
                    return;
                }
            }
        });
        Follow { rx, seen: vec![] }
    }

    /// Reads until `pred` holds for one new response; `None` after `timeout`.
    fn try_wait(
        &mut self,
        t: &TwoNodes,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&GetFlowsResponse) -> bool,
    ) -> Option<GetFlowsResponse> {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            let rx = &mut self.rx;
            match t
                .rt
                .block_on(async { tokio::time::timeout_at(end, rx.recv()).await })
            {
                Ok(Some(r)) => {
                    self.seen.push(r.clone());
                    if pred(&r) {
                        return Some(r);
                    }
                }
                Ok(None) => panic!(
                    "the relay ended the stream while waiting for {what}; relay log:\n{}",
                    t.relay.log_tail(40)
                ),
                Err(_) => return None,
            }
        }
    }

    /// As [`Follow::try_wait`], panicking on timeout.
    fn wait(
        &mut self,
        t: &TwoNodes,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&GetFlowsResponse) -> bool,
    ) -> GetFlowsResponse {
        match self.try_wait(t, what, timeout, pred) {
            Some(r) => r,
            None => panic!(
                "timed out waiting for {what}; status events so far: {:?}; relay log:\n{}",
                statuses(&self.seen),
                t.relay.log_tail(40)
            ),
        }
    }

    /// Generates traffic on node `i` until one of its flows arrives after `after_ns`.
    fn wait_flow(&mut self, t: &TwoNodes, i: usize, after_ns: i64) {
        let node = format!("lab/node{}", i + 1);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            t.traffic(i);
            let got = self.try_wait(t, &node, Duration::from_secs(3), |r| {
                matches!(&r.response_types, Some(ResponseTypes::Flow(f)) if f.node_name == node)
                    && time_ns(r) > after_ns
            });
            if got.is_some() {
                return;
            }
            assert!(
                Instant::now() < end,
                "no flow of {node} reached the follow stream"
            );
        }
    }
}

fn is_status(r: &GetFlowsResponse, state: NodeState, node: &str) -> bool {
    matches!(&r.response_types, Some(ResponseTypes::NodeStatus(s))
        if s.state_change() == state && s.node_names.iter().any(|n| n == node))
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

#[test]
fn relay_follow_survives_an_agent_restart() {
    if !privileged() {
        return;
    }
    let t = TwoNodes::new("relay-restart");
    let mut f = Follow::start(&t);
    f.wait(&t, "NODE_CONNECTED for both", Duration::from_secs(5), |r| {
        is_status(r, NodeState::NodeConnected, N1) && is_status(r, NodeState::NodeConnected, N2)
    });
    f.wait_flow(&t, 0, 0);
    f.wait_flow(&t, 1, 0);

    // Kill node2's agent: the stream goes on, says node2 is unavailable, and so does
    // ServerStatus.
    let pid = t.nodes[1].node.agent_pid().expect("agent running");
    // SAFETY: kill(2) on the agent we started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let _ = t.nodes[1].node.stop_agent();
    let down = f.wait(
        &t,
        "NODE_UNAVAILABLE for node2",
        Duration::from_secs(10),
        |r| is_status(r, NodeState::NodeUnavailable, N2),
    );
    let ResponseTypes::NodeStatus(s) = down.response_types.unwrap() else {
        unreachable!()
    };
    assert!(!s.message.is_empty(), "the event says why");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let st = t.status();
        if st.unavailable_nodes == [N2] {
            assert_eq!(st.num_connected_nodes.unwrap().value, 1);
            assert_eq!(st.num_unavailable_nodes.unwrap().value, 1);
            break;
        }
        assert!(
            Instant::now() < end,
            "ServerStatus never reported node2: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let killed_at = now_ns();
    f.wait_flow(&t, 0, killed_at);

    // Restart it: NODE_CONNECTED on the same stream, then its new flows.
    t.nodes[1]
        .node
        .start_agent(AgentOptions {
            monitor_interval: Duration::from_secs(1),
            ..Default::default()
        })
        .expect("agent restart");
    f.wait(
        &t,
        "NODE_CONNECTED for node2",
        Duration::from_secs(10),
        |r| is_status(r, NodeState::NodeConnected, N2),
    );
    f.wait_flow(&t, 1, killed_at);
    let st = t.status();
    assert_eq!(st.num_connected_nodes.unwrap().value, 2, "{st:?}");
    let _ = &t.lab;
}
