//! WireGuard node-to-node encryption (`encryption.enabled: true`, `type: wireguard`) with
//! native routing, on three lab nodes sharing one underlay bridge:
//! - pods reach each other across every pair of nodes, TCP and UDP, both directions, and
//!   the receiver sees the sender's pod address; a capture on the bridge meanwhile holds
//!   only WireGuard UDP between node addresses: no pod address, no payload in clear;
//! - flows say so: TO_CRYPTO at the sender, FROM_CRYPTO at the receiver, `IP.encrypted`;
//! - `lumen status` lists each peer with its handshake and bytes; a node that leaves
//!   loses its peer and routes on the others, and traffic resumes when it is back;
//! - a node's tunnel interoperates with the reference `wireguard-go` + `wg`;
//! - strict mode drops pod traffic that would cross in clear (UNENCRYPTED_TRAFFIC);
//! - an established cross-node connection survives an agent restart and a key rotation.

mod common;

use common::{privileged, tcp_echo_ok as tcp_ok, udp_echo_ok, wait_until};
use lumen_api::flow::{FlowFilter, TraceObservationPoint};
use lumen_integration::{manifest, policy, traffic_bin, AgentOptions, Lab, Node, Pod, Spawned};
use serde_json::Value;
use std::time::Duration;

const TCP: u16 = common::TCP_PORT;
const UDP: u16 = common::UDP_PORT;
/// A payload the capture must never show in clear.
const MARKER: &str = "lumen-cleartext-marker";

fn encrypted_agent() -> AgentOptions {
    AgentOptions {
        auto_direct_node_routes: true,
        encryption: true,
        ..Default::default()
    }
}

/// `lumen status` → `encryption` as JSON (null when disabled).
fn encryption_status(node: &Node) -> Value {
    policy::status(node).expect("status")["encryption"].clone()
}

fn peer_nodes(node: &Node) -> Vec<String> {
    let mut v: Vec<String> = encryption_status(node)["peers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["node"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Pods `demo/p-<node>` serving TCP and UDP echo on each node.
fn serving_pods(nodes: &[Node]) -> Vec<(Pod, Spawned)> {
    nodes
        .iter()
        .map(|n| {
            let pod = n
                .add_pod("demo", &format!("p-{}", n.name()), &[("app", "p")])
                .expect("pod");
            let s = pod
                .serve(&["--tcp", &TCP.to_string(), "--udp", &UDP.to_string()])
                .expect("serve");
            (pod, s)
        })
        .collect()
}

/// `tcpdump` on the underlay bridge, writing IP packets to a pcap file.
struct Capture {
    proc: Spawned,
    file: std::path::PathBuf,
}

impl Capture {
    fn start(lab: &Lab) -> Capture {
        let file = lab.dir().join("underlay.pcap");
        let mut proc = lab
            .spawn_in_underlay(
                "tcpdump",
                [
                    "-i",
                    lumen_integration::BRIDGE,
                    "-nn",
                    // Keep root: the lab directory is not the tcpdump user's to write.
                    "-Z",
                    "root",
                    "-U",
                    "--immediate-mode",
                    "-s",
                    "0",
                    "-w",
                    file.to_str().unwrap(),
                ],
            )
            .expect("tcpdump");
        proc.wait_for_output("listening on", Duration::from_secs(5))
            .expect("tcpdump listening");
        Capture { proc, file }
    }

    /// Stops the capture; returns its packets as `tcpdump -nn` lines and its raw bytes.
    fn finish(self) -> (Vec<String>, Vec<u8>) {
        std::thread::sleep(Duration::from_millis(300));
        let log = self.proc.stop().unwrap_or_default();
        let out = std::process::Command::new("tcpdump")
            .args(["-nn", "-r"])
            .arg(&self.file)
            .output()
            .expect("tcpdump -r");
        let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        assert!(
            !lines.is_empty(),
            "empty capture: tcpdump said {log}; reading it: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (lines, std::fs::read(&self.file).expect("pcap"))
    }
}

#[test]
fn wireguard_encrypts_pod_traffic_between_three_nodes() {
    if !privileged() {
        return;
    }
    let lab = Lab::new("wg3").expect("lab");
    let nodes: Vec<Node> = (1..=3)
        .map(|i| lab.add_node(&format!("node{i}")).expect("node"))
        .collect();
    for n in &nodes {
        n.start_agent(encrypted_agent()).expect("agent");
    }
    // Every agent publishes its key and peers with the two others.
    for n in &nodes {
        let mut want: Vec<String> = nodes
            .iter()
            .filter(|m| m.name() != n.name())
            .map(|m| m.name().to_string())
            .collect();
        want.sort();
        wait_until(
            &format!("{}'s peers", n.name()),
            Duration::from_secs(15),
            || peer_nodes(n) == want,
        );
    }
    let pods = serving_pods(&nodes);
    // The pods' MTU leaves room for the tunnel's overhead.
    let link = pods[0].0.exec_ok("ip", ["link", "show", "eth0"]).unwrap();
    assert!(link.contains("mtu 1420"), "{link}");

    let capture = Capture::start(&lab);
    for (i, (a, _)) in pods.iter().enumerate() {
        for (j, (b, server)) in pods.iter().enumerate() {
            if i == j {
                continue;
            }
            let to = b.ip().to_string();
            let sent = a
                .exec(
                    traffic_bin().unwrap(),
                    [
                        "tcp",
                        "--to",
                        &format!("{to}:{TCP}"),
                        "--payload",
                        MARKER,
                        "--timeout",
                        "2s",
                    ],
                )
                .expect("tcp");
            assert!(
                sent.status.success(),
                "TCP {} → {}: {}",
                a.name(),
                b.name(),
                String::from_utf8_lossy(&sent.stderr)
            );
            assert!(udp_echo_ok(a, b.ip()), "UDP {} → {}", a.name(), b.name());
            let peer = format!("\"peer\":\"{}:", a.ip());
            wait_until(
                &format!("{} logs {}'s address", b.name(), a.name()),
                Duration::from_secs(5),
                || server.log().contains(&peer),
            );
        }
    }
    let (lines, raw) = capture.finish();
    let node_ips: Vec<String> = nodes.iter().map(|n| n.ip().to_string()).collect();
    let wg_lines: Vec<&String> = lines
        .iter()
        .filter(|l| {
            // "IP 192.168.77.1.51871 > 192.168.77.2.51871: UDP, length 148"
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 4
                && f[1] == "IP"
                && node_ips.iter().any(|ip| f[2] == format!("{ip}.51871"))
                && node_ips
                    .iter()
                    .any(|ip| f[4].trim_end_matches(':') == format!("{ip}.51871"))
                && l.contains(" UDP")
        })
        .collect();
    assert!(
        wg_lines.len() >= 12,
        "expected WireGuard packets on the bridge, got {} lines: {:#?}",
        lines.len(),
        &lines[..lines.len().min(30)]
    );
    // Besides WireGuard: ARP between the nodes, IPv6 link-local housekeeping.
    let other: Vec<&String> = lines
        .iter()
        .filter(|l| !wg_lines.contains(l) && !l.contains(" ARP,") && !l.contains(" IP6 fe80:"))
        .collect();
    assert!(
        other.is_empty(),
        "only WireGuard UDP between node addresses may cross the underlay: {other:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("10.100.")),
        "a pod address crossed in clear"
    );
    assert!(
        !raw.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
        "the payload crossed the underlay in clear"
    );

    // Flows: handed to the tunnel at the sender, out of it at the receiver, encrypted.
    let (p1, p2) = (&pods[0].0, &pods[1].0);
    let filter = FlowFilter {
        source_ip: vec![p1.ip().to_string()],
        destination_ip: vec![p2.ip().to_string()],
        ..Default::default()
    };
    let to_crypto = policy::wait_flow(&nodes[0], filter.clone(), "a TO_CRYPTO flow", |f| {
        f.trace_observation_point == TraceObservationPoint::ToCrypto as i32
    })
    .unwrap();
    assert!(to_crypto.ip.as_ref().unwrap().encrypted, "{to_crypto:#?}");
    assert_eq!(to_crypto.source.as_ref().unwrap().pod_name, p1.name());
    let from_crypto = policy::wait_flow(&nodes[1], filter, "a FROM_CRYPTO flow", |f| {
        f.trace_observation_point == TraceObservationPoint::FromCrypto as i32
    })
    .unwrap();
    assert!(
        from_crypto.ip.as_ref().unwrap().encrypted,
        "{from_crypto:#?}"
    );
    assert_eq!(
        from_crypto.destination.as_ref().unwrap().pod_name,
        p2.name()
    );

    // `lumen status`: every peer has completed a handshake and moved bytes both ways.
    let st = encryption_status(&nodes[0]);
    assert_eq!(st["mode"], "wireguard", "{st}");
    for p in st["peers"].as_array().unwrap() {
        assert!(p["last_handshake_seconds_ago"].is_u64(), "{st}");
        assert!(p["rx_bytes"].as_u64().unwrap() > 0, "{st}");
        assert!(p["tx_bytes"].as_u64().unwrap() > 0, "{st}");
    }
    let text = policy::lumen_cli(&nodes[0], &["status"]).expect("lumen status");
    assert!(text.contains("Encryption:            Wireguard"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("peer:") && l.contains("node2") && l.contains("s ago")),
        "{text}"
    );

    // node3 leaves: the others drop its peer and route; back: traffic resumes.
    let node3 = &nodes[2];
    let file = lab.manifests_dir().join(manifest::node_file(node3.name()));
    let saved = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    for n in &nodes[..2] {
        let other = if n.name() == "node1" {
            "node2"
        } else {
            "node1"
        };
        wait_until(
            &format!("node3's peer gone from {}", n.name()),
            Duration::from_secs(15),
            || peer_nodes(n) == [other],
        );
        let routes = n
            .exec_ok("ip", ["-4", "route", "show", "proto", "201"])
            .unwrap();
        assert!(!routes.contains(node3.pod_cidr()), "{routes}");
    }
    assert!(
        !tcp_ok(&pods[0].0, pods[2].0.ip(), 64),
        "no way to node3's pods any more"
    );
    manifest::write_atomic(
        &lab.manifests_dir(),
        &manifest::node_file(node3.name()),
        &saved,
    )
    .unwrap();
    wait_until("traffic to node3 resumes", Duration::from_secs(20), || {
        tcp_ok(&pods[0].0, pods[2].0.ip(), 64)
    });
    // node2 reads the state source on its own schedule: its peer for node3 may come a
    // moment later than node1's.
    wait_until("node3 → node2 resumes", Duration::from_secs(20), || {
        tcp_ok(&pods[2].0, pods[1].0.ip(), 64)
    });
}

/// Adds the WireGuard public key annotation to a lab node's Node manifest.
fn publish_key(lab: &Lab, node: &str, key: &str) {
    let file = manifest::node_file(node);
    let text = std::fs::read_to_string(lab.manifests_dir().join(&file)).unwrap();
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    doc["metadata"]["annotations"] = serde_yaml::to_value(
        [("network.cilium.io/wg-pub-key", key)]
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
    )
    .unwrap();
    manifest::write_atomic(
        &lab.manifests_dir(),
        &file,
        &serde_yaml::to_string(&doc).unwrap(),
    )
    .unwrap();
}

/// Runs `wireguard-go` in a node's namespace; stopped (and its interface gone) on drop.
struct WireguardGo {
    node: Node,
    iface: String,
}

impl WireguardGo {
    /// Its interface (and control socket in /var/run/wireguard) gets a name of its own.
    fn start(node: &Node) -> WireguardGo {
        let iface = format!("wgref{}", std::process::id() % 100_000);
        node.exec_ok("wireguard-go", [iface.as_str()])
            .expect("wireguard-go (apt install wireguard-go; `cargo xtask setup` does)");
        WireguardGo {
            node: node.clone(),
            iface,
        }
    }
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        // Deleting the interface makes wireguard-go exit.
        let _ = self.node.exec("ip", ["link", "del", self.iface.as_str()]);
    }
}

#[test]
fn a_node_tunnel_interoperates_with_wireguard_go() {
    if !privileged() {
        return;
    }
    let lab = Lab::new("wgref").expect("lab");
    let node1 = lab.add_node("node1").expect("node1");
    // node2 runs no agent: its side of the tunnel is the reference implementation.
    let reference = lab.add_node("node2").expect("node2");
    node1.start_agent(encrypted_agent()).expect("agent");
    let (pod, _server) = {
        let p = node1
            .add_pod("demo", "client", &[("app", "c")])
            .expect("pod");
        let s = p.serve(&["--tcp", &TCP.to_string()]).expect("serve");
        (p, s)
    };
    let node1_key = {
        let mut key = String::new();
        wait_until("node1's public key", Duration::from_secs(10), || {
            key = encryption_status(&node1)["public_key"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            !key.is_empty()
        });
        key
    };
    let wg = WireguardGo::start(&reference);
    let wg0 = wg.iface.as_str();
    let private = std::process::Command::new("wg")
        .arg("genkey")
        .output()
        .expect("wg genkey");
    let private = String::from_utf8(private.stdout).unwrap();
    let key_file = lab.dir().join("reference.key");
    std::fs::write(&key_file, &private).unwrap();
    let public = {
        use std::io::Write;
        let mut c = std::process::Command::new("wg")
            .arg("pubkey")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(private.as_bytes())
            .unwrap();
        String::from_utf8(c.wait_with_output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string()
    };
    // The reference node: its tunnel address is the first of its pod CIDR.
    let ref_ip = reference.pod_cidr().replace(".0/24", ".1");
    let endpoint = format!("{}:51871", node1.ip());
    reference
        .exec_ok(
            "wg",
            [
                "set",
                wg0,
                "listen-port",
                "51871",
                "private-key",
                key_file.to_str().unwrap(),
                "peer",
                &node1_key,
                "endpoint",
                &endpoint,
                "allowed-ips",
                node1.pod_cidr(),
            ],
        )
        .expect("wg set");
    for args in [
        vec!["addr", "add", &format!("{ref_ip}/32"), "dev", wg0],
        vec!["link", "set", wg0, "mtu", "1420", "up"],
        vec!["route", "add", node1.pod_cidr(), "dev", wg0],
    ] {
        reference.exec_ok("ip", args).expect("ip");
    }
    publish_key(&lab, reference.name(), &public);
    wait_until(
        "node1 peers with the reference",
        Duration::from_secs(10),
        || peer_nodes(&node1) == ["node2"],
    );

    // Pod → a server behind the reference tunnel, and the reference node → the pod.
    let mut ref_server = reference
        .spawn(
            traffic_bin().unwrap(),
            ["serve", "--tcp", &TCP.to_string(), "--bind", &ref_ip],
        )
        .expect("serve on the reference node");
    ref_server
        .wait_for_output("listening", Duration::from_secs(5))
        .expect("listening");
    assert!(
        tcp_ok(&pod, &ref_ip, 4096),
        "pod → wireguard-go through the tunnel"
    );
    let out = reference
        .exec(
            traffic_bin().unwrap(),
            [
                "tcp",
                "--to",
                &format!("{}:{TCP}", pod.ip()),
                "--timeout",
                "3s",
            ],
        )
        .expect("tcp");
    assert!(
        out.status.success(),
        "wireguard-go → pod: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The reference saw a handshake and traffic both ways.
    let shown = reference.exec_ok("wg", ["show", wg0, "dump"]).unwrap();
    let peer_line = shown
        .lines()
        .find(|l| l.starts_with(&node1_key))
        .unwrap_or_else(|| panic!("{shown}"));
    let f: Vec<&str> = peer_line.split('\t').collect();
    // public-key psk endpoint allowed-ips latest-handshake rx tx keepalive
    assert_ne!(f[4], "0", "no handshake: {shown}");
    assert!(
        f[5].parse::<u64>().unwrap() > 0 && f[6].parse::<u64>().unwrap() > 0,
        "{shown}"
    );
    let st = encryption_status(&node1);
    assert!(
        st["peers"][0]["last_handshake_seconds_ago"].is_u64(),
        "{st}"
    );
}

#[test]
fn strict_mode_drops_pod_traffic_that_would_cross_in_clear() {
    if !privileged() {
        return;
    }
    let lab = Lab::new("wgstrict").expect("lab");
    let node1 = lab.add_node("node1").expect("node1");
    let node2 = lab.add_node("node2").expect("node2");
    node1
        .start_agent(AgentOptions {
            encryption_strict_cidr: Some("10.100.0.0/16"),
            ..encrypted_agent()
        })
        .expect("agent1");
    // node2 does not encrypt: it publishes no key, so node1 has no peer for its pods.
    node2
        .start_agent(AgentOptions {
            auto_direct_node_routes: true,
            ..Default::default()
        })
        .expect("agent2");
    let pods = serving_pods(&[node1.clone(), node2.clone()]);
    let (p1, p2) = (&pods[0].0, &pods[1].0);
    assert!(
        !tcp_ok(p1, p2.ip(), 64),
        "strict mode lets nothing through in clear"
    );
    let filter = FlowFilter {
        source_ip: vec![p1.ip().to_string()],
        destination_ip: vec![p2.ip().to_string()],
        ..Default::default()
    };
    let drop = policy::wait_flow(&node1, filter, "an UNENCRYPTED_TRAFFIC drop", |f| {
        f.drop_reason_desc == lumen_api::flow::DropReason::UnencryptedTraffic as i32
    })
    .unwrap();
    assert_eq!(drop.verdict, lumen_api::flow::Verdict::Dropped as i32);
    let text = policy::lumen_cli(&node1, &["status"]).unwrap();
    assert!(text.contains("strict mode 10.100.0.0/16"), "{text}");

    // node2 turns encryption on: its key appears, node1 peers with it, traffic flows.
    node2.stop_agent().unwrap();
    node2.start_agent(encrypted_agent()).expect("agent2 again");
    wait_until(
        "encrypted traffic to node2",
        Duration::from_secs(20),
        || tcp_ok(p1, p2.ip(), 64),
    );
    assert!(tcp_ok(p2, p1.ip(), 64));
}

#[test]
fn connections_survive_agent_restart_and_key_rotation() {
    if !privileged() {
        return;
    }
    let lab = Lab::new("wgkeep").expect("lab");
    let node1 = lab.add_node("node1").expect("node1");
    let node2 = lab.add_node("node2").expect("node2");
    for n in [&node1, &node2] {
        n.start_agent(encrypted_agent()).expect("agent");
    }
    let client = node1
        .add_pod("demo", "client", &[("app", "c")])
        .expect("client");
    let server = node2
        .add_pod("demo", "server", &[("app", "s")])
        .expect("server");
    let mut iperf_server = server
        .spawn("iperf3", ["-s", "-p", "5201", "--forceflush"])
        .expect("iperf3 -s");
    iperf_server
        .wait_for_output("listening", Duration::from_secs(5))
        .expect("iperf3 listening");
    wait_until("peers", Duration::from_secs(10), || {
        peer_nodes(&node1) == ["node2"] && peer_nodes(&node2) == ["node1"]
    });
    // One TCP connection for 16 s, rate-limited so it is not the CPU's only job.
    let seconds = 16;
    let iperf = client
        .spawn(
            "iperf3",
            [
                "-c",
                &server.ip().to_string(),
                "-p",
                "5201",
                "-t",
                &seconds.to_string(),
                "-b",
                "50M",
                "-J",
            ],
        )
        .expect("iperf3 -c");
    std::thread::sleep(Duration::from_secs(3));
    node1.restart_agent().expect("restart node1's agent");
    let old_key = encryption_status(&node2)["public_key"].clone();
    std::thread::sleep(Duration::from_secs(2));
    let out = policy::lumen_cli(&node2, &["encrypt", "rotate-key"]).expect("rotate-key");
    assert!(out.contains("New public key"), "{out}");
    assert_ne!(encryption_status(&node2)["public_key"], old_key);
    let (status, log) = iperf
        .wait(Duration::from_secs(seconds + 15))
        .expect("iperf3 ends");
    let json_start = log.find('{').unwrap_or(0);
    let report: Value = serde_json::from_str(&log[json_start..])
        .unwrap_or_else(|e| panic!("iperf3 JSON: {e}\n{log}"));
    assert!(status.success(), "the connection broke: {log}");
    let intervals = report["intervals"].as_array().expect("intervals");
    assert!(intervals.len() >= seconds as usize - 1, "{log}");
    // Bytes kept flowing after both the restart (s 3) and the rotation (s 5).
    let late: u64 = intervals[intervals.len() - 5..]
        .iter()
        .map(|i| i["sum"]["bytes"].as_u64().unwrap_or(0))
        .sum();
    assert!(late > 10_000_000, "the connection stalled: {log}");
    // After the rotation node1 knows node2's new key and they have handshaken again.
    wait_until("a fresh handshake", Duration::from_secs(10), || {
        let st = encryption_status(&node1);
        st["peers"][0]["public_key"] == encryption_status(&node2)["public_key"]
            && st["peers"][0]["last_handshake_seconds_ago"].as_u64() < Some(15)
    });
}
