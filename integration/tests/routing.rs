//! Native routing (`routingMode: native`, `autoDirectNodeRoutes: true`): three nodes on one
//! underlay bridge, no routes set up by the lab — the agents route every other node's pod
//! CIDR via its address. Pods reach each other across every pair of nodes, TCP and UDP,
//! both directions, and the receiver sees the sender's pod address. A node that leaves the
//! state source loses its routes on the others; back, traffic resumes.

mod common;

use common::privileged;
use lumen_integration::{manifest, policy, traffic_bin, AgentOptions, Lab, Node, Pod, Spawned};
use std::time::Duration;

const TCP: u16 = 8080;
const UDP: u16 = 5353;

/// The agent's routes on `node` (`ip route show proto 201`), as "cidr via gw" lines.
fn lumen_routes(node: &Node) -> Vec<String> {
    node.exec_ok("ip", ["-4", "route", "show", "proto", "201"])
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect()
}

fn wait_until(what: &str, ok: impl FnMut() -> bool) {
    common::wait_until(what, Duration::from_secs(15), ok)
}

fn tcp_ok(from: &Pod, to: &Pod) -> bool {
    common::tcp_echo_ok(from, to.ip(), 1024)
}

fn udp_ok(from: &Pod, to: &Pod) -> bool {
    common::udp_echo_ok(from, to.ip())
}

#[test]
fn agents_route_pod_cidrs_between_three_nodes() {
    if !privileged() {
        return;
    }
    let lab = Lab::new("route3").expect("lab");
    let nodes: Vec<Node> = (1..=3)
        .map(|i| lab.add_node(&format!("node{i}")).expect("node"))
        .collect();
    for n in &nodes {
        n.start_agent(AgentOptions {
            auto_direct_node_routes: true,
            ..Default::default()
        })
        .expect("agent");
    }
    let mut pods: Vec<(Pod, Spawned)> = vec![];
    for n in &nodes {
        let pod = n
            .add_pod("demo", &format!("p-{}", n.name()), &[("app", "p")])
            .expect("pod");
        let mut s = pod
            .spawn(
                traffic_bin().unwrap(),
                [
                    "serve",
                    "--tcp",
                    &TCP.to_string(),
                    "--udp",
                    &UDP.to_string(),
                ],
            )
            .expect("serve");
        s.wait_for_output("listening", Duration::from_secs(5))
            .expect("listening");
        pods.push((pod, s));
    }
    // Each node routes the other two nodes' pod CIDRs via their addresses.
    for n in &nodes {
        let mut want: Vec<String> = nodes
            .iter()
            .filter(|m| m.name() != n.name())
            .map(|m| format!("{} via {}", m.pod_cidr(), m.ip()))
            .collect();
        want.sort();
        wait_until(&format!("routes on {}", n.name()), || {
            let mut have = lumen_routes(n);
            have.sort();
            have == want
        });
    }
    // `lumen status` lists them.
    let st = policy::status(&nodes[0]).expect("status");
    assert_eq!(st["routing"]["mode"], "native", "{st}");
    assert_eq!(
        st["routing"]["routes"].as_array().map(Vec::len),
        Some(2),
        "{st}"
    );
    let text = policy::lumen_cli(&nodes[0], &["status"]).expect("lumen status");
    assert!(
        text.contains(&format!(
            "route:    {} via {}",
            nodes[1].pod_cidr(),
            nodes[1].ip()
        )),
        "{text}"
    );

    // Every ordered pair, TCP and UDP; the receiver sees the sender's pod address.
    for (i, (a, _)) in pods.iter().enumerate() {
        for (j, (b, server)) in pods.iter().enumerate() {
            if i == j {
                continue;
            }
            assert!(tcp_ok(a, b), "TCP {} → {}", a.name(), b.name());
            assert!(udp_ok(a, b), "UDP {} → {}", a.name(), b.name());
            let peer = format!("\"peer\":\"{}:", a.ip());
            wait_until(&format!("{} logs {}'s address", b.name(), a.name()), || {
                server.log().contains(&peer)
            });
        }
    }

    // node3 leaves the state source: the others drop its route; back: traffic resumes.
    let node3 = &nodes[2];
    let file = lab.manifests_dir().join(manifest::node_file(node3.name()));
    let saved = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    for n in &nodes[..2] {
        wait_until(&format!("node3's route gone from {}", n.name()), || {
            !lumen_routes(n)
                .iter()
                .any(|r| r.starts_with(node3.pod_cidr()))
        });
    }
    assert!(
        !tcp_ok(&pods[0].0, &pods[2].0),
        "no route to node3's pods any more"
    );
    let tmp = lab.manifests_dir().join(".node3.tmp");
    std::fs::write(&tmp, saved).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    wait_until("traffic to node3 resumes", || {
        tcp_ok(&pods[0].0, &pods[2].0)
    });
    // node2 reads the state source on its own schedule: its route back to node3 may come
    // a moment after node1's.
    wait_until("node3 → node2 resumes", || tcp_ok(&pods[2].0, &pods[1].0));
}

#[test]
fn cluster_pool_ipam_gives_each_node_a_stable_block() {
    if !privileged() {
        return;
    }
    let lab = Lab::new("pool3").expect("lab");
    let nodes: Vec<Node> = (1..=3)
        .map(|i| lab.add_node(&format!("node{i}")).expect("node"))
        .collect();
    let options = || AgentOptions {
        auto_direct_node_routes: true,
        cluster_pool: Some("10.200.0.0/16"),
        ..Default::default()
    };
    for n in &nodes {
        n.start_agent(options()).expect("agent");
    }
    let mut pods = vec![];
    for n in &nodes {
        let pod = n
            .add_pod("demo", &format!("p-{}", n.name()), &[("app", "p")])
            .expect("pod");
        let s = pod.serve(&["--tcp", &TCP.to_string()]).expect("serve");
        pods.push((pod, s));
    }
    // Each node's pods come from its own /24 of the pool (not the Node object's CIDR),
    // and every node's block is recorded as a CiliumNode.
    let block = |ip: std::net::IpAddr| {
        let std::net::IpAddr::V4(v4) = ip else {
            panic!("{ip}")
        };
        let o = v4.octets();
        assert_eq!((o[0], o[1]), (10, 200), "{ip} is from the pool");
        o[2]
    };
    let blocks: Vec<u8> = pods.iter().map(|(p, _)| block(p.ip())).collect();
    let mut distinct = blocks.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "one block per node: {blocks:?}");
    for (n, b) in nodes.iter().zip(&blocks) {
        let record = std::fs::read_to_string(
            lab.manifests_dir()
                .join("status")
                .join(format!("ciliumnode.{}.yaml", n.name())),
        )
        .expect("CiliumNode record");
        assert!(record.contains(&format!("10.200.{b}.0/24")), "{record}");
    }
    // Routed natively between the blocks.
    for (i, (a, _)) in pods.iter().enumerate() {
        for (j, (b, _)) in pods.iter().enumerate() {
            if i != j {
                wait_until(&format!("{} → {}", a.name(), b.name()), || tcp_ok(a, b));
            }
        }
    }
    // A restarted agent keeps its block: a new pod on node1 lands in the same one.
    nodes[0].restart_agent().expect("restart");
    let again = nodes[0]
        .add_pod("demo", "p-again", &[("app", "p")])
        .expect("pod after restart");
    assert_eq!(
        block(again.ip()),
        blocks[0],
        "the block survived the restart"
    );
}

#[test]
fn masquerading_applies_only_outside_the_native_routing_cidr_when_enabled() {
    if !privileged() {
        return;
    }
    let world: std::net::Ipv4Addr = "198.51.100.10".parse().unwrap();
    let lab = Lab::new("masq").expect("lab");
    let node1 = lab.add_node("node1").expect("node1");
    let node2 = lab.add_node("node2").expect("node2");
    lab.add_world(&[world]).expect("world");
    // node1 masquerades (bpf.masquerade), node2 routes pod addresses as they are (the
    // homelab's setting).
    for (n, masquerade) in [(&node1, true), (&node2, false)] {
        n.start_agent(AgentOptions {
            auto_direct_node_routes: true,
            native_routing_cidr: Some("10.100.0.0/16"),
            masquerade,
            ..Default::default()
        })
        .expect("agent");
    }
    let mut server = lab
        .spawn_in_underlay(
            traffic_bin().unwrap(),
            [
                "serve",
                "--tcp",
                &TCP.to_string(),
                "--bind",
                &world.to_string(),
            ],
        )
        .expect("world server");
    server
        .wait_for_output("listening", Duration::from_secs(5))
        .expect("listening");
    let p1 = node1.add_pod("demo", "p1", &[("app", "p")]).expect("p1");
    let p2 = node2.add_pod("demo", "p2", &[("app", "p")]).expect("p2");
    let echo = p2.serve(&["--tcp", &TCP.to_string()]).expect("serve");
    let to_world = |p: &Pod| {
        p.exec(
            traffic_bin().unwrap(),
            [
                "tcp",
                "--to",
                &format!("{world}:{TCP}"),
                "--connections",
                "3",
                "--timeout",
                "2s",
            ],
        )
        .is_ok_and(|o| o.status.success())
    };
    assert!(to_world(&p1), "p1 reaches the world (masqueraded)");
    assert!(to_world(&p2), "p2 reaches the world (routed)");
    let peers = |ip: String| {
        let needle = format!("\"peer\":\"{ip}:");
        move |log: &str| log.matches(&needle).count()
    };
    wait_until("the world sees node1's address for p1", || {
        peers(node1.ip().to_string())(&server.log()) >= 3
    });
    wait_until("the world sees p2's own address", || {
        peers(p2.ip().to_string())(&server.log()) >= 3
    });
    assert_eq!(
        peers(p1.ip().to_string())(&server.log()),
        0,
        "p1's address never leaves node1"
    );
    // Inside the native routing CIDR nothing is masqueraded, even on node1.
    assert!(tcp_ok(&p1, &p2));
    wait_until("p2 sees p1's own address", || {
        echo.log().contains(&format!("\"peer\":\"{}:", p1.ip()))
    });
}
