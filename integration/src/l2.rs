//! The L2 announcement lab, shared by the `l2` test and `l2-bench`: two nodes announcing
//! (`kubeProxyReplacement`, `l2announcements`), a backend on each, a `type: LoadBalancer`
//! Service whose ingress IP ([`LB_IP`]) sits on the underlay subnet, its EndpointSlice, a
//! `CiliumL2AnnouncementPolicy` selecting it; the underlay namespace (`br0`,
//! `192.168.77.254`) is the client. Plus what a client and an operator can observe: ARP
//! replies (`arping`), the client's neighbour entry, the Lease, TCP through the LB IP,
//! and a timed failover.

use crate::{netns, policy, AgentOptions, Lab, Node, Pod, Spawned};
use anyhow::{bail, Context, Result};
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

/// An unused address of the underlay subnet (nodes are .1, .2, …; the client is .254).
pub const LB_IP: &str = "192.168.77.200";
/// The Service's lease, named as Cilium names it.
pub const LEASE: &str = "cilium-l2announce-demo-web";
/// The port the backends serve (TCP echo).
pub const BACKEND_PORT: u16 = 8080;

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

/// How long each step of one failover took, from the SIGKILL of the holder's agent.
#[derive(Debug, Clone, Copy)]
pub struct Failover {
    /// The other node holds the lease.
    pub lease: Duration,
    /// The client's neighbour entry shows the new holder's MAC (its gratuitous ARP).
    pub garp: Duration,
    /// A TCP exchange through the LB IP succeeded again.
    pub reachable: Duration,
}

/// The lab described in the module docs.
pub struct L2Lab {
    /// The announcing nodes.
    pub nodes: Vec<Node>,
    _web: Vec<(Pod, Spawned)>,
    // Dropped last: the lab tears down what the fields above use.
    /// The lab.
    pub lab: Lab,
}

impl L2Lab {
    /// Builds it; the announcement starts as soon as the agents read the manifests.
    pub fn new(name: &str) -> Result<L2Lab> {
        let lab = Lab::new(name)?;
        let nodes = vec![lab.add_node("node1")?, lab.add_node("node2")?];
        lab.route_pod_cidrs()?;
        lab.add_world(&[])?;
        for n in &nodes {
            n.start_agent(AgentOptions {
                kube_proxy_replacement: true,
                l2_announcements: true,
                ..Default::default()
            })?;
        }
        let mut web = vec![];
        for (node, name) in nodes.iter().zip(["web-a", "web-b"]) {
            let pod = node.add_pod("demo", name, &[("app", "web")])?;
            let serving = pod.serve(&["--tcp", &BACKEND_PORT.to_string()])?;
            web.push((pod, serving));
        }
        let endpoints: Vec<(String, Option<String>)> = web
            .iter()
            .map(|(p, _)| (p.ip().to_string(), None))
            .collect();
        let slice = crate::manifest::endpoint_slice("demo", "web", BACKEND_PORT, "TCP", &endpoints);
        policy::write(&lab, "web-svc.yaml", SERVICE)?;
        policy::write(&lab, "web-slice.yaml", &slice)?;
        policy::write(&lab, "l2-policy.yaml", POLICY)?;
        Ok(L2Lab {
            nodes,
            _web: web,
            lab,
        })
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name() == name)
            .expect("a node of this lab")
    }

    /// Stdout of `program args…` in the client's (underlay) namespace.
    fn client_run(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = netns::netns_command(self.lab.underlay_netns(), program)?
            .args(args)
            .output()
            .with_context(|| format!("running {program}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The MACs (lower case) that answer one ARP request for the LB IP from the client,
    /// one per reply (`arping` waits a second for them).
    pub fn arp_replies(&self) -> Result<Vec<String>> {
        let out = self.client_run("arping", &["-c", "1", "-I", "br0", LB_IP])?;
        Ok(out
            .lines()
            .filter(|l| l.contains("reply from"))
            .filter_map(|l| {
                let start = l.find('[')? + 1;
                let end = l.find(']')?;
                Some(l[start..end].to_ascii_lowercase())
            })
            .collect())
    }

    /// The MAC in the client's neighbour entry for the LB IP, if it has one.
    pub fn neighbour(&self) -> Result<Option<String>> {
        let out = self.client_run("ip", &["neigh", "show", LB_IP, "dev", "br0"])?;
        let mut words = out.split_whitespace();
        Ok(words
            .find(|w| *w == "lladdr")
            .and_then(|_| words.next())
            .map(str::to_ascii_lowercase))
    }

    /// The holder written in the Service's Lease (`leases/<name>.yaml` in the state source).
    pub fn lease_holder(&self) -> Option<String> {
        let path = self
            .lab
            .manifests_dir()
            .join("leases")
            .join(format!("{LEASE}.yaml"));
        let text = std::fs::read_to_string(path).ok()?;
        let v: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
        v["spec"]["holderIdentity"].as_str().map(str::to_string)
    }

    /// Whether a TCP exchange from the client with `LB_IP:80` works (connect, echo).
    pub fn tcp_ok(&self) -> bool {
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

    /// Kills the agent of `holder` with SIGKILL and times the failover: the lease moving,
    /// the client's neighbour entry switching to `new_mac` (nothing but a gratuitous ARP
    /// changes a fresh entry while the client sends nothing), a TCP exchange succeeding.
    /// Gives up after `timeout` for each step.
    pub fn kill_and_time_failover(
        &self,
        holder: &str,
        new_mac: &str,
        timeout: Duration,
    ) -> Result<(String, Failover)> {
        let pid = self
            .node(holder)
            .agent_pid()
            .context("the holder's agent is not running")?;
        let killed = Instant::now();
        // SAFETY: pid is the lab's agent child, still running.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        let new_holder = wait_for("the lease to move", timeout, || {
            Ok(self.lease_holder().filter(|h| h != holder))
        })?;
        let lease = killed.elapsed();
        wait_for("the gratuitous ARP", timeout, || {
            Ok((self.neighbour()?.as_deref() == Some(new_mac)).then_some(()))
        })?;
        let garp = killed.elapsed();
        wait_for("TCP through the LB IP", timeout, || {
            Ok(self.tcp_ok().then_some(()))
        })?;
        let reachable = killed.elapsed();
        Ok((
            new_holder,
            Failover {
                lease,
                garp,
                reachable,
            },
        ))
    }
}

/// The MAC (lower case) of `node`'s uplink `eth0`.
pub fn uplink_mac(node: &Node) -> Result<String> {
    let out = std::process::Command::new("ip")
        .args(["-n", node.netns(), "-br", "link", "show", "eth0"])
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)
        .map(str::to_ascii_lowercase)
        .context("no MAC in `ip -br link` output")
}

/// Polls `f` every 50 ms until it gives a value, or fails after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= end {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
