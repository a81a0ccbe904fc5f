//! The agent runs from the homelab's Helm values files, unchanged (the files the chart's
//! tests render: `docker/helm/lumen/ci/{talos,edge}-values.yaml`), with only node-local
//! settings layered on top, as the demo lab does:
//! - Talos values: cluster-pool IPAM from `10.100.0.0/16` (Cilium's default mode when a
//!   pool is given), native routing with `autoDirectNodeRoutes`, WireGuard between the
//!   nodes, kube-proxy replacement; pods reach each other across nodes; `/healthz` answers
//!   on 127.0.0.1:9879 for the chart's probes; `lumen status` says the bandwidth manager
//!   is not enforced rather than pretending;
//! - Edge values: `ipam.mode: kubernetes`, so pods come from the Node object's pod CIDR
//!   and the cluster pool (`10.10.0.0/16`) is not used.

mod common;

use common::{privileged, tcp_echo_ok, wait_until};
use lumen_integration::{policy, AgentOptions, Lab, Node};
use std::{io::Read, io::Write, path::PathBuf, time::Duration};

fn values(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docker/helm/lumen/ci")
        .join(name)
}

fn from_values(name: &str) -> AgentOptions {
    let path = values(name);
    assert!(path.exists(), "{} is missing", path.display());
    AgentOptions {
        values: Some(path),
        ..Default::default()
    }
}

/// `GET /healthz` on the node's 127.0.0.1:9879: (status line, body).
fn healthz(node: &Node) -> (String, String) {
    let fwd = node.forward_tcp("127.0.0.1:0", 9879).expect("forward");
    let mut s = std::net::TcpStream::connect(fwd.local_addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

#[test]
fn talos_values_run_the_cluster_like_the_seed() {
    if !privileged() {
        return;
    }
    let lab = Lab::new("valtalos").expect("lab");
    let nodes: Vec<Node> = (1..=2)
        .map(|i| lab.add_node(&format!("node{i}")).expect("node"))
        .collect();
    for n in &nodes {
        n.start_agent(from_values("talos-values.yaml"))
            .expect("agent");
    }
    let pods: Vec<_> = nodes
        .iter()
        .map(|n| {
            let pod = n
                .add_pod("demo", &format!("p-{}", n.name()), &[("app", "p")])
                .expect("pod");
            let s = pod
                .serve(&["--tcp", &common::TCP_PORT.to_string()])
                .expect("serve");
            (pod, s)
        })
        .collect();
    for (n, (pod, _)) in nodes.iter().zip(&pods) {
        // Cluster-pool IPAM: the pod's block is recorded on the node's CiliumNode.
        let record = std::fs::read_to_string(
            lab.manifests_dir()
                .join("status")
                .join(format!("ciliumnode.{}.yaml", n.name())),
        )
        .expect("CiliumNode record (cluster-pool IPAM)");
        let std::net::IpAddr::V4(ip) = pod.ip() else {
            panic!("{}", pod.ip())
        };
        let o = ip.octets();
        assert_eq!((o[0], o[1]), (10, 100), "{ip} is from the pool");
        assert!(
            record.contains(&format!("10.100.{}.0/24", o[2])),
            "{ip}'s block is in the record:\n{record}"
        );
        let st = policy::status(n).expect("status");
        let routing = &st["routing"];
        assert_eq!(routing["mode"], "native", "{routing}");
        assert_eq!(routing["auto_direct_node_routes"], true, "{routing}");
        assert_eq!(routing["native_routing_cidr"], "10.100.0.0/16", "{routing}");
        assert_eq!(routing["masquerade"], false, "{routing}");
        assert!(
            st["bandwidth_manager"]
                .as_str()
                .is_some_and(|b| b.contains("does not enforce")),
            "{}",
            st["bandwidth_manager"]
        );
        let (status, body) = healthz(n);
        assert!(status.contains(" 200 "), "{status}\n{body}");
        assert!(body.contains("agent: serving"), "{body}");
    }
    // WireGuard peers and native routes: pods talk across the nodes, encrypted.
    for n in &nodes {
        wait_until(
            &format!("{} has its WireGuard peer", n.name()),
            Duration::from_secs(20),
            || {
                policy::status(n).expect("status")["encryption"]["peers"]
                    .as_array()
                    .is_some_and(|p| p.len() == 1)
            },
        );
    }
    let (a, b) = (&pods[0].0, &pods[1].0);
    wait_until(
        "node1's pod → node2's pod",
        Duration::from_secs(20),
        || tcp_echo_ok(a, b.ip(), 1000),
    );
    wait_until(
        "node2's pod → node1's pod",
        Duration::from_secs(20),
        || tcp_echo_ok(b, a.ip(), 1000),
    );
}

#[test]
fn edge_values_take_pod_cidrs_from_the_node_object() {
    if !privileged() {
        return;
    }
    let lab = Lab::new("valedge").expect("lab");
    let node = lab.add_node("node1").expect("node");
    node.start_agent(from_values("edge-values.yaml"))
        .expect("agent");
    let pod = node.add_pod("demo", "p", &[("app", "p")]).expect("pod");
    let cidr = node.pod_cidr();
    let std::net::IpAddr::V4(ip) = pod.ip() else {
        panic!("{}", pod.ip())
    };
    // The lab's Node CIDRs are /24s.
    let net: std::net::Ipv4Addr = cidr.trim_end_matches("/24").parse().unwrap();
    assert!(
        cidr.ends_with("/24") && ip.octets()[..3] == net.octets()[..3],
        "ipam.mode kubernetes: {ip} is from the Node's {cidr}, not the 10.10.0.0/16 pool"
    );
    let st = policy::status(&node).expect("status");
    assert!(st["encryption"].is_object(), "encryption on: {st}");
    let (status, _) = healthz(&node);
    assert!(status.contains(" 200 "), "{status}");
}
