//! Services reached from outside the cluster (`kubeProxyReplacement: true`): a client in
//! the underlay namespace (on the nodes' L2) connects to a NodePort and to LoadBalancer
//! IPs. With `externalTrafficPolicy: Cluster` both nodes' backends serve, the remote one
//! through source NAT; with `Local` only the node's own backend serves and sees the
//! client's real address. With `loadBalancer.algorithm: maglev` one connection (5-tuple)
//! lands on the same backend whichever node it enters.

mod common;

use common::{privileged, TCP_PORT};
use lumen_api::flow::{FlowFilter, Verdict};
use lumen_integration::{manifest, policy, traffic_bin, AgentOptions, Lab, Node, Pod, Spawned};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

/// The client's address (the lab's "world" gateway on the underlay bridge).
const CLIENT: Ipv4Addr = Lab::WORLD_GATEWAY;
const LB_CLUSTER: &str = "192.168.77.200";
const LB_LOCAL: &str = "192.168.77.201";
const NODE_PORT: u16 = 30080;

/// A Service `name` of `type` on port 80 → 8080 (NodePort 30080 for the NodePort one),
/// with `extra` spec lines and, for LoadBalancers, `status.loadBalancer.ingress` `lb_ip`.
fn service(name: &str, kind: &str, extra: &str, lb_ip: Option<&str>) -> String {
    let node_port = if kind == "NodePort" {
        format!(", nodePort: {NODE_PORT}")
    } else {
        String::new()
    };
    let status = lb_ip
        .map(|ip| format!("status: {{loadBalancer: {{ingress: [{{ip: {ip}}}]}}}}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: demo}}
spec:
  type: {kind}
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080, protocol: TCP{node_port}}}]
{extra}{status}"
    )
}

/// The EndpointSlice of service `name`: `backends` as (address, node) pairs, ready.
fn slice(name: &str, backends: &[(String, String)]) -> String {
    let endpoints: Vec<(String, Option<String>)> = backends
        .iter()
        .map(|(ip, node)| (ip.clone(), Some(node.clone())))
        .collect();
    manifest::endpoint_slice("demo", name, TCP_PORT, "TCP", &endpoints)
}

/// Two nodes, `web-a` on node1 and `web-b` on node2 serving TCP 8080, and the underlay
/// namespace as the outside client.
struct Cluster {
    nodes: Vec<Node>,
    web: Vec<(Pod, Spawned)>,
    // Dropped last: the lab tears down what the fields above use.
    lab: Lab,
}

impl Cluster {
    fn new(name: &str, algorithm: Option<&'static str>) -> Cluster {
        let lab = Lab::new(name).expect("lab");
        let node1 = lab.add_node("node1").expect("node1");
        let node2 = lab.add_node("node2").expect("node2");
        lab.route_pod_cidrs().expect("routes");
        lab.add_world(&[]).expect("world");
        for n in [&node1, &node2] {
            n.start_agent(AgentOptions {
                kube_proxy_replacement: true,
                load_balancer_algorithm: algorithm,
                ..Default::default()
            })
            .expect("agent");
        }
        let mut web = vec![];
        for (node, name) in [(&node1, "web-a"), (&node2, "web-b")] {
            let pod = node
                .add_pod("demo", name, &[("app", "web")])
                .expect("web pod");
            let serving = pod.serve(&["--tcp", &TCP_PORT.to_string()]).expect("serve");
            web.push((pod, serving));
        }
        // The client reuses source ports at once (the Maglev test).
        underlay(&lab, &["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"]);
        Cluster {
            nodes: vec![node1, node2],
            web,
            lab,
        }
    }

    /// Both backends with their nodes.
    fn backends(&self) -> Vec<(String, String)> {
        self.web
            .iter()
            .map(|(p, _)| (p.ip().to_string(), p.node().name().to_string()))
            .collect()
    }

    /// Sends the client's traffic for `ip` through node `n` (index into `nodes`).
    fn route_via(&self, ip: &str, n: usize) {
        let via = self.nodes[n].ip().to_string();
        underlay(
            &self.lab,
            &["ip", "route", "replace", &format!("{ip}/32"), "via", &via],
        );
    }

    /// The peers each backend saw so far (one per closed connection).
    fn peers(&self) -> Vec<Vec<String>> {
        self.web
            .iter()
            .map(|(_, s)| {
                s.log()
                    .lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter(|v| v["event"] == "tcp_closed")
                    .filter_map(|v| {
                        v["peer"]
                            .as_str()
                            .map(|p| p.rsplit_once(':').unwrap().0.to_string())
                    })
                    .collect()
            })
            .collect()
    }

    /// Runs `n` connections from the client to `to` (optionally from `src_port`) and
    /// returns, per backend, the peer addresses of the connections it served.
    fn connect(&self, to: &str, n: u32, src_port: Option<u16>) -> Vec<Vec<String>> {
        let before: Vec<usize> = self.peers().iter().map(Vec::len).collect();
        let mut args = vec![
            traffic_bin().unwrap().display().to_string(),
            "tcp".into(),
            "--to".into(),
            to.into(),
            "--connections".into(),
            n.to_string(),
            "--timeout".into(),
            "2s".into(),
        ];
        if let Some(p) = src_port {
            args.extend(["--src-port".into(), p.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = underlay(&self.lab, &args);
        let report: serde_json::Value = serde_json::from_str(&out).expect("lab-traffic JSON");
        assert_eq!(
            report["ok"], true,
            "every connection to {to} succeeds: {report}"
        );
        // The servers log a connection when it closes: give the last ones a moment.
        let start = Instant::now();
        loop {
            let now = self.peers();
            let new: Vec<Vec<String>> = now
                .iter()
                .zip(&before)
                .map(|(p, b)| p[*b..].to_vec())
                .collect();
            if new.iter().map(Vec::len).sum::<usize>() >= n as usize
                || start.elapsed() > Duration::from_secs(3)
            {
                return new;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs `args` in the lab's underlay namespace; returns its stdout.
fn underlay(lab: &Lab, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", lab.underlay_netns()])
        .args(args)
        .output()
        .expect("ip netns exec");
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until a connection from the client to `to` succeeds.
fn wait_reachable(lab: &Lab, to: &str) {
    let start = Instant::now();
    loop {
        let ok = Command::new("ip")
            .args(["netns", "exec", lab.underlay_netns()])
            .arg(traffic_bin().unwrap())
            .args(["tcp", "--to", to, "--timeout", "1s"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{to} never became reachable"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn node_port_and_load_balancer_from_outside_with_both_traffic_policies() {
    if !privileged() {
        return;
    }
    let c = Cluster::new("svc-ext", None);
    let all = c.backends();
    policy::write(&c.lab, "np.yaml", &service("web-np", "NodePort", "", None)).unwrap();
    policy::write(&c.lab, "np-slice.yaml", &slice("web-np", &all)).unwrap();
    policy::write(
        &c.lab,
        "lb.yaml",
        &service("web-lb", "LoadBalancer", "", Some(LB_CLUSTER)),
    )
    .unwrap();
    policy::write(&c.lab, "lb-slice.yaml", &slice("web-lb", &all)).unwrap();
    let local = "  externalTrafficPolicy: Local\n";
    policy::write(
        &c.lab,
        "local.yaml",
        &service("web-local", "LoadBalancer", local, Some(LB_LOCAL)),
    )
    .unwrap();
    policy::write(&c.lab, "local-slice.yaml", &slice("web-local", &all)).unwrap();
    c.route_via(LB_CLUSTER, 0);
    c.route_via(LB_LOCAL, 0);
    let node1 = c.nodes[0].ip().to_string();
    let node2 = c.nodes[1].ip().to_string();
    let client = CLIENT.to_string();

    // NodePort on each node, externalTrafficPolicy Cluster: both backends serve; the
    // node's own backend sees the client, the other node's sees the node (source NAT,
    // so the reply comes back the same way).
    for (entry, other) in [(&node1, &node2), (&node2, &node1)] {
        let to = format!("{entry}:{NODE_PORT}");
        wait_reachable(&c.lab, &to);
        let served = c.connect(&to, 30, None);
        let (local_peers, remote_peers) = if entry == &node1 {
            (&served[0], &served[1])
        } else {
            (&served[1], &served[0])
        };
        assert!(
            !local_peers.is_empty() && !remote_peers.is_empty(),
            "both backends serve NodePort {to}: {served:?}"
        );
        assert!(
            local_peers.iter().all(|p| p == &client),
            "{to}: local backend sees the client: {served:?}"
        );
        assert!(
            remote_peers.iter().all(|p| p == entry),
            "{to}: remote backend sees node {entry}, not {other}: {served:?}"
        );
    }

    // A LoadBalancer IP (routed to node1 here; ARP announcement has its own test).
    let to = format!("{LB_CLUSTER}:80");
    wait_reachable(&c.lab, &to);
    let served = c.connect(&to, 20, None);
    assert!(
        served.iter().all(|p| !p.is_empty()),
        "both backends serve {to}: {served:?}"
    );

    // externalTrafficPolicy Local: only the entry node's backend, with the client's address.
    let to = format!("{LB_LOCAL}:80");
    for n in [0, 1] {
        c.route_via(LB_LOCAL, n);
        wait_reachable(&c.lab, &to);
        let served = c.connect(&to, 15, None);
        assert_eq!(
            served[n].len(),
            15,
            "via node{}: all to its own backend: {served:?}",
            n + 1
        );
        assert!(served[1 - n].is_empty(), "via node{}: {served:?}", n + 1);
        assert!(
            served[n].iter().all(|p| p == &client),
            "the client's address is kept: {served:?}"
        );
    }

    // The entry node reports each translation (verdict TRANSLATED) with the service the
    // client addressed and the backend it got.
    let filter = FlowFilter {
        verdict: vec![Verdict::Translated as i32],
        source_ip: vec![client.clone()],
        ..Default::default()
    };
    let flow = policy::wait_flow(&c.nodes[0], filter, "a translation from outside", |f| {
        f.destination_service
            .as_ref()
            .is_some_and(|s| s.name == "web-local")
    })
    .unwrap();
    assert_eq!(
        flow.destination.as_ref().map(|d| d.pod_name.as_str()),
        Some("web-a"),
        "{flow:#?}"
    );
    assert_eq!(
        flow.event_type.as_ref().map(|e| e.r#type),
        Some(7),
        "{flow:#?}"
    );
}

#[test]
fn maglev_sends_a_connection_to_the_same_backend_through_either_node() {
    if !privileged() {
        return;
    }
    let c = Cluster::new("svc-maglev", Some("maglev"));
    policy::write(
        &c.lab,
        "lb.yaml",
        &service("web-lb", "LoadBalancer", "", Some(LB_CLUSTER)),
    )
    .unwrap();
    policy::write(&c.lab, "lb-slice.yaml", &slice("web-lb", &c.backends())).unwrap();
    let to = format!("{LB_CLUSTER}:80");
    let mut chosen = vec![];
    for n in [0, 1] {
        c.route_via(LB_CLUSTER, n);
        wait_reachable(&c.lab, &to);
        let mut row = vec![];
        for port in 40000..40012u16 {
            let served = c.connect(&to, 1, Some(port));
            let backend = served
                .iter()
                .position(|p| p.len() == 1)
                .expect("one backend served");
            row.push(backend);
        }
        chosen.push(row);
    }
    assert_eq!(
        chosen[0], chosen[1],
        "each 5-tuple gets one backend on both nodes"
    );
    assert!(
        chosen[0].contains(&0) && chosen[0].contains(&1),
        "different tuples spread over both backends: {chosen:?}"
    );
}
