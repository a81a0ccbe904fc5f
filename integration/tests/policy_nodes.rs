//! Network policy across nodes: a server's ingress policy enforced on its own node for
//! clients on another node, and the denied flows of the whole cluster through the relay
//! (`hubble observe --verdict policy_denied`).

mod common;

use common::{privileged, ALLOW_CLIENT, TCP_PORT};
use lumen_api::flow::{EventTypeFilter, Flow, FlowFilter, Verdict};
use lumen_api::observer::{get_flows_response::ResponseTypes, GetFlowsResponse};
use lumen_integration::{
    find_binary, policy, traffic_bin, AgentOptions, Lab, Node, Pod, Relay, RelayOptions, Spawned,
};
use std::time::{Duration, SystemTime};

/// Two nodes with pod CIDRs routed between them: `server` (app=server, TCP echo on 8080) on
/// node2; `client` (app=client) and `intruder` (app=intruder) on node1.
struct TwoNodes {
    node1: Node,
    node2: Node,
    server: Pod,
    client: Pod,
    intruder: Pod,
    _serving: Spawned,
    // Dropped last: the lab tears down what the fields above use.
    lab: Lab,
}

impl TwoNodes {
    fn new(name: &str) -> TwoNodes {
        let lab = Lab::new(name).expect("lab");
        let node1 = lab.add_node("node1").expect("node1");
        let node2 = lab.add_node("node2").expect("node2");
        lab.route_pod_cidrs().expect("routes");
        for n in [&node1, &node2] {
            n.start_agent(AgentOptions::default()).expect("agent");
        }
        let server = node2
            .add_pod("demo", "server", &[("app", "server")])
            .expect("server");
        let client = node1
            .add_pod("demo", "client", &[("app", "client")])
            .expect("client");
        let intruder = node1
            .add_pod("demo", "intruder", &[("app", "intruder")])
            .expect("intruder");
        let mut serving = server
            .spawn(
                traffic_bin().unwrap(),
                ["serve", "--tcp", &TCP_PORT.to_string()],
            )
            .expect("serve");
        serving
            .wait_for_output("listening", Duration::from_secs(5))
            .expect("listening");
        TwoNodes {
            node1,
            node2,
            server,
            client,
            intruder,
            _serving: serving,
            lab,
        }
    }

    fn connects(&self, from: &Pod) -> bool {
        policy::tcp_connects(from, self.server.ip(), TCP_PORT)
    }
}

fn events(kind: i32, src: &str, dst: &str) -> FlowFilter {
    FlowFilter {
        event_type: vec![EventTypeFilter {
            r#type: kind,
            ..Default::default()
        }],
        source_pod: vec![src.into()],
        destination_pod: vec![dst.into()],
        ..Default::default()
    }
}

fn after(since: SystemTime, f: &Flow) -> bool {
    let t = f.time.as_ref().expect("flow time");
    SystemTime::UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos as u32) >= since
}

#[test]
fn server_ingress_policy_enforced_for_clients_on_another_node() {
    if !privileged() {
        return;
    }
    let t = TwoNodes::new("pol-xnode");
    assert!(t.connects(&t.client), "no policy: node1 → node2 works");
    assert!(t.connects(&t.intruder), "no policy: node1 → node2 works");
    policy::apply(&t.lab, "allow.yaml", ALLOW_CLIENT, "demo", "allow-client").unwrap();
    let client_identity = policy::wait_endpoint(&t.node1, "demo", "client").unwrap()["identity"]
        .as_u64()
        .unwrap();

    let since = SystemTime::now();
    assert!(
        t.connects(&t.client),
        "app=client on node1 is allowed into node2's server"
    );
    let pv = policy::wait_flow(
        &t.node2,
        events(5, "demo/client", "demo/server"),
        "node2's allowed verdict",
        |f| after(since, f) && f.verdict == Verdict::Forwarded as i32,
    )
    .unwrap();
    assert_eq!(pv.traffic_direction, 1, "INGRESS: {pv:#?}");
    assert_eq!(pv.policy_match_type, 2, "L3-L4: {pv:#?}");
    assert_eq!(pv.ingress_allowed_by[0].name, "allow-client", "{pv:#?}");
    // node2 knows the remote client's identity from the shared state, not from the packet.
    assert_eq!(
        pv.source.as_ref().unwrap().identity as u64,
        client_identity,
        "{pv:#?}"
    );

    let since = SystemTime::now();
    assert!(
        !t.connects(&t.intruder),
        "app=intruder on node1 is denied at node2"
    );
    let drop = policy::wait_flow(
        &t.node2,
        events(1, "demo/intruder", "demo/server"),
        "node2's policy drop",
        |f| after(since, f),
    )
    .unwrap();
    assert_eq!(drop.verdict, Verdict::Dropped as i32, "{drop:#?}");
    assert_eq!(drop.drop_reason_desc, 133, "POLICY_DENIED: {drop:#?}");
    assert_eq!(drop.traffic_direction, 1, "INGRESS: {drop:#?}");
    assert_eq!(drop.ingress_denied_by[0].name, "allow-client", "{drop:#?}");
    assert_eq!(drop.node_name, "lab/node2", "{drop:#?}");
    // node1 enforces nothing for the intruder's egress: nothing dropped there.
    let on_node1 = policy::flows(&t.node1, events(1, "demo/intruder", "demo/server")).unwrap();
    assert!(on_node1.iter().all(|f| !after(since, f)), "{on_node1:#?}");
}

#[test]
fn relay_shows_only_policy_denied_flows() {
    if !privileged() {
        return;
    }
    let t = TwoNodes::new("pol-relay");
    let fenced = t
        .node1
        .add_pod("demo", "fenced", &[("app", "fenced")])
        .unwrap();
    policy::apply(&t.lab, "allow.yaml", ALLOW_CLIENT, "demo", "allow-client").unwrap();
    policy::apply(
        &t.lab,
        "fence.yaml",
        "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: fence, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: fenced}}
  egressDeny:
  - toEntities: [cluster]
    toPorts:
    - ports: [{port: \"8080\", protocol: TCP}]
",
        "demo",
        "fence",
    )
    .unwrap();
    let relay = Relay::start(&t.lab, RelayOptions::default()).expect("relay");

    assert!(t.connects(&t.client), "allowed");
    assert!(
        !t.connects(&t.intruder),
        "denied by default deny (133) at node2"
    );
    assert!(!t.connects(&fenced), "denied by a deny rule (181) at node1");
    for (node, src, reason) in [
        (&t.node2, "demo/intruder", 133),
        (&t.node1, "demo/fenced", 181),
    ] {
        policy::wait_flow(node, events(1, src, "demo/server"), "the drop", |f| {
            f.drop_reason_desc == reason
        })
        .unwrap();
    }

    let observe_with = |filter: &[&str]| {
        let out = std::process::Command::new(find_binary("hubble").expect("hubble binary"))
            .args([
                "observe",
                "--server",
                &relay.addr().to_string(),
                "--all",
                "-o",
                "json",
            ])
            .args(filter)
            .env_remove("HUBBLE_SERVER")
            .output()
            .expect("run hubble");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "hubble observe: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines()
            .map(|l| {
                serde_json::from_str::<GetFlowsResponse>(l).unwrap_or_else(|e| panic!("{e}: {l}"))
            })
            .filter_map(|r| match r.response_types {
                Some(ResponseTypes::Flow(f)) => Some(f),
                _ => None,
            })
            .collect::<Vec<Flow>>()
    };
    let observe = || observe_with(&["--verdict", "policy_denied"]);
    // The relay may need a moment to reach both agents.
    let start = std::time::Instant::now();
    let flows = loop {
        let flows = observe();
        let from = |pod: &str| {
            flows
                .iter()
                .any(|f| f.source.as_ref().is_some_and(|s| s.pod_name == pod))
        };
        if from("intruder") && from("fenced") {
            break flows;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "both denied connections through the relay: {flows:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for f in &flows {
        assert_eq!(f.verdict, Verdict::Dropped as i32, "only drops: {f:#?}");
        assert!(
            [133, 181].contains(&f.drop_reason_desc),
            "only policy drops: {f:#?}"
        );
        // Other denied packets may show up (e.g. IPv6 multicast from the node into a
        // policed pod); the allowed client's connection never does.
        let src = f
            .source
            .as_ref()
            .map(|s| s.pod_name.as_str())
            .unwrap_or_default();
        assert_ne!(src, "client", "no allowed connection: {f:#?}");
    }
    // Without the verdict filter the relay does have the allowed connection's flows.
    let client = observe_with(&["--from-pod", "demo/client"]);
    assert!(
        client
            .iter()
            .any(|f| f.verdict == Verdict::Forwarded as i32),
        "{client:#?}"
    );
    let nodes: std::collections::BTreeSet<&str> =
        flows.iter().map(|f| f.node_name.as_str()).collect();
    assert_eq!(
        nodes,
        ["lab/node1", "lab/node2"].into(),
        "denials of both nodes"
    );
    assert!(
        flows
            .iter()
            .any(|f| f.drop_reason_desc == 181
                && f.egress_denied_by.iter().any(|p| p.name == "fence"))
    );
    assert!(flows.iter().any(|f| f.drop_reason_desc == 133
        && f.ingress_denied_by.iter().any(|p| p.name == "allow-client")));
}
