//! L2 announcements: a LoadBalancer IP on the underlay subnet, selected by a
//! `CiliumL2AnnouncementPolicy`, is answered for by exactly one node (the holder of the
//! service's lease); a client on the underlay reaches the service through it; when the
//! holder's agent is killed, the other node takes the lease over, announces itself with a
//! gratuitous ARP, and the service is reachable again through it within 3 s.

mod common;

use common::{privileged, TCP_PORT};
use lumen_integration::{netns, policy, traffic_bin, AgentOptions, Lab, Node, Pod, Spawned};
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

/// An unused address of the underlay subnet (nodes are .1, .2, …; the client is .254).
const LB_IP: &str = "192.168.77.200";
const LEASE: &str = "cilium-l2announce-demo-web";

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo, labels: {announce: l2}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.20
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, protocol: TCP}]
status:
  loadBalancer:
    ingress: [{ip: 192.168.77.200}]
";

const POLICY: &str = "apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata: {name: underlay}
spec:
  serviceSelector: {matchLabels: {announce: l2}}
  interfaces: ['^eth[0-9]+']
  loadBalancerIPs: true
";

fn slice(ips: &[String]) -> String {
    let endpoints: String = ips
        .iter()
        .map(|ip| format!("- addresses: [{ip}]\n  conditions: {{ready: true}}\n"))
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: demo
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{{port: 8080, protocol: TCP}}]
endpoints:
{endpoints}"
    )
}

/// Two announcing nodes with a backend each; the underlay namespace is the client.
struct Cluster {
    nodes: Vec<Node>,
    _web: Vec<(Pod, Spawned)>,
    // Dropped last: the lab tears down what the fields above use.
    lab: Lab,
}

impl Cluster {
    fn new(name: &str) -> Cluster {
        let lab = Lab::new(name).expect("lab");
        let nodes = vec![
            lab.add_node("node1").expect("node1"),
            lab.add_node("node2").expect("node2"),
        ];
        lab.route_pod_cidrs().expect("routes");
        lab.add_world(&[]).expect("client address on the underlay");
        for n in &nodes {
            n.start_agent(AgentOptions {
                kube_proxy_replacement: true,
                l2_announcements: true,
                ..Default::default()
            })
            .expect("agent");
        }
        let mut web = vec![];
        for (node, name) in nodes.iter().zip(["web-a", "web-b"]) {
            let pod = node
                .add_pod("demo", name, &[("app", "web")])
                .expect("web pod");
            let mut serving = pod
                .spawn(
                    traffic_bin().unwrap(),
                    ["serve", "--tcp", &TCP_PORT.to_string()],
                )
                .expect("serve");
            serving
                .wait_for_output("listening", Duration::from_secs(5))
                .expect("listening");
            web.push((pod, serving));
        }
        let ips: Vec<String> = web.iter().map(|(p, _)| p.ip().to_string()).collect();
        policy::write(&lab, "web-svc.yaml", SERVICE).unwrap();
        policy::write(&lab, "web-slice.yaml", &slice(&ips)).unwrap();
        policy::write(&lab, "l2-policy.yaml", POLICY).unwrap();
        Cluster {
            nodes,
            _web: web,
            lab,
        }
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name() == name).unwrap()
    }

    /// Output of a command in the client's (underlay) namespace.
    fn client_run(&self, program: &str, args: &[&str]) -> String {
        let out = netns::netns_command(self.lab.underlay_netns(), program)
            .unwrap()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The MACs that answer one ARP request for the LB IP from the client, one per reply.
    fn arp_replies(&self) -> Vec<String> {
        let out = self.client_run("arping", &["-c", "1", "-I", "br0", LB_IP]);
        out.lines()
            .filter(|l| l.contains("reply from"))
            .filter_map(|l| {
                let start = l.find('[')? + 1;
                let end = l.find(']')?;
                Some(l[start..end].to_ascii_lowercase())
            })
            .collect()
    }

    /// The client's neighbour entry for the LB IP: its MAC, if it has one.
    fn neighbour(&self) -> Option<String> {
        let out = self.client_run("ip", &["neigh", "show", LB_IP, "dev", "br0"]);
        let mut words = out.split_whitespace();
        words.find(|w| *w == "lladdr")?;
        words.next().map(str::to_ascii_lowercase)
    }

    /// The holder written in the service's Lease.
    fn lease_holder(&self) -> Option<String> {
        let path = self
            .lab
            .manifests_dir()
            .join("leases")
            .join(format!("{LEASE}.yaml"));
        let text = std::fs::read_to_string(path).ok()?;
        let v: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
        v["spec"]["holderIdentity"].as_str().map(str::to_string)
    }

    /// A TCP exchange from the client with the service's LB IP (connect, echo, close).
    fn tcp_ok(&self) -> bool {
        netns::in_netns(self.lab.underlay_netns(), || {
            let to: SocketAddr = format!("{LB_IP}:80").parse()?;
            let mut s = TcpStream::connect_timeout(&to, Duration::from_millis(300))?;
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            s.write_all(b"l2-announce!")?;
            let mut buf = [0u8; 12];
            s.read_exact(&mut buf)?;
            anyhow::ensure!(&buf == b"l2-announce!", "echo mismatch");
            Ok(())
        })
        .is_ok()
    }
}

fn uplink_mac(node: &Node) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", node.netns(), "-br", "link", "show", "eth0"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)
        .expect("ip -br link output")
        .to_ascii_lowercase()
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn one_node_answers_and_another_takes_over_when_it_dies() {
    if !privileged() {
        return;
    }
    let c = Cluster::new("l2");
    let macs: Vec<(String, String)> = c
        .nodes
        .iter()
        .map(|n| (n.name().to_string(), uplink_mac(n)))
        .collect();
    let mac_of = |node: &str| macs.iter().find(|(n, _)| n == node).unwrap().1.clone();

    // (a) One node holds the lease, and only its uplink answers the client's ARP.
    let holder = wait_until("a lease holder", Duration::from_secs(10), || {
        c.lease_holder()
    });
    let replies = wait_until(
        "an ARP reply for the LB IP",
        Duration::from_secs(10),
        || Some(c.arp_replies()).filter(|r| !r.is_empty()),
    );
    assert_eq!(
        replies,
        vec![mac_of(&holder)],
        "exactly one reply, from the holder {holder}'s uplink (MACs: {macs:?})"
    );
    let status = policy::status(c.node(&holder)).unwrap();
    assert_eq!(
        status["l2_announcements"][0]["ip"], LB_IP,
        "the holder's status lists the announcement: {status}"
    );
    let other = c.nodes.iter().find(|n| n.name() != holder).unwrap();
    let other_status = policy::status(other).unwrap();
    assert_eq!(
        other_status["l2_announcements"],
        serde_json::json!([]),
        "{other_status}"
    );

    // (b) The client reaches the service through the LB IP.
    wait_until(
        "a TCP exchange with the LB IP",
        Duration::from_secs(10),
        || c.tcp_ok().then_some(()),
    );
    assert_eq!(
        c.neighbour(),
        Some(mac_of(&holder)),
        "the client resolved the holder"
    );

    // (c) The holder's agent dies; the other node takes over.
    let pid = c.node(&holder).agent_pid().expect("holder's agent runs");
    let killed = Instant::now();
    // SAFETY: pid is our child (the lab's agent), still running.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    let new_holder = wait_until("the lease to move", Duration::from_secs(5), || {
        c.lease_holder().filter(|h| *h != holder)
    });
    let took_lease = killed.elapsed();
    assert_eq!(new_holder, other.name());
    let new_mac = mac_of(&new_holder);
    // The client sent nothing since the kill and its entry is still fresh: only a
    // gratuitous ARP from the new holder changes it.
    wait_until(
        "the client's neighbour entry to show the new holder",
        Duration::from_secs(2),
        || (c.neighbour() == Some(new_mac.clone())).then_some(()),
    );
    let garp_seen = killed.elapsed();
    wait_until(
        "a TCP exchange after the failover",
        Duration::from_secs(5),
        || c.tcp_ok().then_some(()),
    );
    let failover = killed.elapsed();
    eprintln!(
        "l2 failover: lease taken over after {:.0} ms, gratuitous ARP seen after {:.0} ms, service reachable after {:.0} ms",
        took_lease.as_secs_f64() * 1e3,
        garp_seen.as_secs_f64() * 1e3,
        failover.as_secs_f64() * 1e3
    );
    assert!(
        failover <= Duration::from_secs(3),
        "failover took {failover:?} (target <= 3 s)"
    );
    // The dead agent's node stopped answering once its entry expired.
    let replies = wait_until(
        "ARP replies from the new holder only",
        Duration::from_secs(3),
        || Some(c.arp_replies()).filter(|r| !r.is_empty()),
    );
    assert_eq!(replies, vec![new_mac], "only the new holder answers");
    let _ = c.node(&holder).stop_agent();
}
