//! Aggregation of flows into the map's nodes and client → server edges.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use lumen_api::flow::{layer4, DropReason, Flow, Verdict};

use super::node::{classify, Node, NodeKey, MAX_ADDRESSES};

/// Distinct destination ports remembered per edge; past that, [`Edge::more_ports`] is set.
const MAX_PORTS: usize = 32;
/// Distinct drop reasons counted per edge; others are not itemised.
const MAX_DROP_REASONS: usize = 16;

/// Transport protocol of an edge's traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
    /// ICMP for IPv4 (no port).
    Icmpv4,
    /// ICMP for IPv6 (no port).
    Icmpv6,
    /// VRRP (no port).
    Vrrp,
    /// IGMP (no port).
    Igmp,
}

/// A destination port and its protocol (port 0 for protocols without ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    /// Transport protocol.
    pub protocol: Protocol,
    /// Destination port, 0 for ICMP, VRRP and IGMP.
    pub port: u32,
}

impl fmt::Display for Port {
    /// `80/TCP`, `53/UDP`, `ICMPv4`, as in Cilium policies.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.protocol {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
            Protocol::Icmpv4 => return f.write_str("ICMPv4"),
            Protocol::Icmpv6 => return f.write_str("ICMPv6"),
            Protocol::Vrrp => return f.write_str("VRRP"),
            Protocol::Igmp => return f.write_str("IGMP"),
        };
        write!(f, "{}/{}", self.port, name)
    }
}

/// Flow counts of an edge by verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerdictSummary {
    /// Flows with verdict FORWARDED.
    pub forwarded: u64,
    /// Flows with verdict DROPPED, whatever the reason.
    pub dropped: u64,
    /// Dropped flows whose reason is a policy denial (POLICY_DENIED, POLICY_DENY).
    pub denied: u64,
    /// Flows with verdict AUDIT (would have been denied in enforcing mode).
    pub audit: u64,
    /// Flows with any other verdict (ERROR, REDIRECTED, TRACED, TRANSLATED, unknown).
    pub other: u64,
    /// Dropped flows by `drop_reason_desc` value (at most 16 reasons).
    pub drop_reasons: BTreeMap<i32, u64>,
}

impl VerdictSummary {
    /// Adds one flow's verdict.
    fn add(&mut self, f: &Flow) {
        match Verdict::try_from(f.verdict) {
            Ok(Verdict::Forwarded) => self.forwarded += 1,
            Ok(Verdict::Dropped) => {
                self.dropped += 1;
                let reason = f.drop_reason_desc;
                if matches!(
                    DropReason::try_from(reason),
                    Ok(DropReason::PolicyDenied | DropReason::PolicyDeny)
                ) {
                    self.denied += 1;
                }
                if self.drop_reasons.len() < MAX_DROP_REASONS
                    || self.drop_reasons.contains_key(&reason)
                {
                    *self.drop_reasons.entry(reason).or_default() += 1;
                }
            }
            Ok(Verdict::Audit) => self.audit += 1,
            _ => self.other += 1,
        }
    }
}

/// Observed traffic from a client node to a server node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// Index of the client in [`ServiceGraph::nodes`](super::ServiceGraph::nodes).
    pub from: usize,
    /// Index of the server in [`ServiceGraph::nodes`](super::ServiceGraph::nodes).
    pub to: usize,
    /// Flow records (reply packets excluded).
    pub flows: u64,
    /// Distinct connections: distinct (addresses, protocol, ports) tuples; a flow without IP
    /// header counts as one connection.
    pub connections: u64,
    /// Destination ports seen (at most 32, the lowest).
    pub ports: BTreeSet<Port>,
    /// Whether more destination ports were seen than [`Edge::ports`] holds.
    pub more_ports: bool,
    /// Flow counts by verdict.
    pub verdicts: VerdictSummary,
}

/// Connection identity: addresses, protocol and ports.
type ConnKey<'a> = (&'a str, &'a str, Option<Protocol>, u32, u32);

/// An edge being accumulated, with the connections seen so far.
#[derive(Default)]
struct EdgeAcc<'a> {
    edge_flows: u64,
    conns: HashSet<ConnKey<'a>>,
    unkeyed: u64,
    ports: BTreeSet<Port>,
    more_ports: bool,
    verdicts: VerdictSummary,
}

/// Whether the flow is a reply packet (server → client). Unknown direction counts as a
/// request, except a TCP SYN-ACK, which only a server sends.
fn is_reply(f: &Flow) -> bool {
    match &f.is_reply {
        Some(r) => r.value,
        None => {
            f.reply
                || matches!(
                    f.l4.as_ref().and_then(|l| l.protocol.as_ref()),
                    Some(layer4::Protocol::Tcp(t)) if t.flags.is_some_and(|fl| fl.syn && fl.ack)
                )
        }
    }
}

/// Protocol and source/destination ports of the flow.
fn transport(f: &Flow) -> Option<(Protocol, u32, u32)> {
    use layer4::Protocol as P;
    Some(match f.l4.as_ref()?.protocol.as_ref()? {
        P::Tcp(t) => (Protocol::Tcp, t.source_port, t.destination_port),
        P::Udp(u) => (Protocol::Udp, u.source_port, u.destination_port),
        P::Sctp(s) => (Protocol::Sctp, s.source_port, s.destination_port),
        P::IcmPv4(_) => (Protocol::Icmpv4, 0, 0),
        P::IcmPv6(_) => (Protocol::Icmpv6, 0, 0),
        P::Vrrp(_) => (Protocol::Vrrp, 0, 0),
        P::Igmp(_) => (Protocol::Igmp, 0, 0),
    })
}

/// Interns a key, returning its provisional index.
fn intern(
    ids: &mut HashMap<NodeKey, usize>,
    addrs: &mut Vec<BTreeSet<String>>,
    key: NodeKey,
) -> usize {
    let next = ids.len();
    let id = *ids.entry(key).or_insert(next);
    if id == addrs.len() {
        addrs.push(BTreeSet::new());
    }
    id
}

/// Remembers an address for a non-pod node, keeping the lowest ones.
fn remember(addrs: &mut BTreeSet<String>, key_is_pod: bool, ip: &str) {
    if key_is_pod || ip.is_empty() || addrs.contains(ip) {
        return;
    }
    if addrs.len() >= MAX_ADDRESSES {
        match addrs.last() {
            Some(last) if ip < last.as_str() => {
                addrs.pop_last();
            }
            _ => return,
        }
    }
    addrs.insert(ip.to_owned());
}

/// Groups flows into nodes (sorted by key) and edges (sorted by client, then server).
/// With `namespace`, only flows with at least one end in it are kept.
pub(crate) fn aggregate(flows: &[Flow], namespace: Option<&str>) -> (Vec<Node>, Vec<Edge>) {
    let namespace = namespace.filter(|ns| !ns.is_empty());
    let mut ids: HashMap<NodeKey, usize> = HashMap::new();
    let mut addrs: Vec<BTreeSet<String>> = Vec::new();
    let mut edges: HashMap<(usize, usize), EdgeAcc<'_>> = HashMap::new();

    for f in flows {
        if is_reply(f) {
            continue;
        }
        let (Some(src), Some(dst)) = (f.source.as_ref(), f.destination.as_ref()) else {
            continue;
        };
        if let Some(ns) = namespace {
            if src.namespace != ns && dst.namespace != ns {
                continue;
            }
        }
        let (sk, dk) = (
            classify(src, &f.source_names),
            classify(dst, &f.destination_names),
        );
        let (s_pod, d_pod) = (sk.is_pod(), dk.is_pod());
        let s = intern(&mut ids, &mut addrs, sk);
        let d = intern(&mut ids, &mut addrs, dk);
        let ip = f.ip.as_ref();
        if let Some(ip) = ip {
            if let Some(a) = addrs.get_mut(s) {
                remember(a, s_pod, &ip.source);
            }
            if let Some(a) = addrs.get_mut(d) {
                remember(a, d_pod, &ip.destination);
            }
        }

        let acc = edges.entry((s, d)).or_default();
        acc.edge_flows += 1;
        let tp = transport(f);
        match ip {
            Some(ip) => {
                let (proto, sport, dport) = tp.map_or((None, 0, 0), |(p, s, d)| (Some(p), s, d));
                acc.conns.insert((
                    ip.source.as_str(),
                    ip.destination.as_str(),
                    proto,
                    sport,
                    dport,
                ));
            }
            None => acc.unkeyed += 1,
        }
        if let Some((protocol, _, port)) = tp {
            let port = Port { protocol, port };
            if acc.ports.len() < MAX_PORTS || acc.ports.contains(&port) {
                acc.ports.insert(port);
            } else {
                // Keep the lowest ports so the result does not depend on flow order.
                acc.more_ports = true;
                if acc.ports.last().is_some_and(|last| port < *last) {
                    acc.ports.pop_last();
                    acc.ports.insert(port);
                }
            }
        }
        acc.verdicts.add(f);
    }

    // Final indices follow key order, so the output does not depend on flow order.
    let mut keyed: Vec<(NodeKey, usize)> = ids.into_iter().collect();
    keyed.sort();
    let mut remap = vec![0usize; keyed.len()];
    let mut nodes = Vec::with_capacity(keyed.len());
    for (new, (key, old)) in keyed.into_iter().enumerate() {
        if let Some(r) = remap.get_mut(old) {
            *r = new;
        }
        let a = addrs.get_mut(old).map(std::mem::take).unwrap_or_default();
        nodes.push(Node::new(key, a));
    }
    let at = |i: usize| remap.get(i).copied().unwrap_or(0);
    let mut out: Vec<Edge> = edges
        .into_iter()
        .map(|((s, d), acc)| Edge {
            from: at(s),
            to: at(d),
            flows: acc.edge_flows,
            connections: acc.conns.len() as u64 + acc.unkeyed,
            ports: acc.ports,
            more_ports: acc.more_ports,
            verdicts: acc.verdicts,
        })
        .collect();
    out.sort_by_key(|e| (e.from, e.to));
    (nodes, out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lumen_api::flow::{Endpoint, Ip, Layer4, Tcp, Udp, Workload};

    /// A pod endpoint of workload `w` (Deployment) in `ns`.
    pub(crate) fn pod(ns: &str, w: &str) -> Endpoint {
        Endpoint {
            namespace: ns.into(),
            pod_name: format!("{w}-abc12"),
            identity: 1000,
            labels: vec![format!("k8s:app={w}")],
            workloads: vec![Workload {
                name: w.into(),
                kind: "Deployment".into(),
            }],
            ..Default::default()
        }
    }

    /// A TCP flow `src:sport → dst:dport` with a verdict.
    pub(crate) fn flow(
        src: Endpoint,
        dst: Endpoint,
        sport: u32,
        dport: u32,
        verdict: Verdict,
    ) -> Flow {
        Flow {
            verdict: verdict as i32,
            ip: Some(Ip {
                source: "10.0.0.1".into(),
                destination: "10.0.0.2".into(),
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(layer4::Protocol::Tcp(Tcp {
                    source_port: sport,
                    destination_port: dport,
                    flags: None,
                })),
            }),
            source: Some(src),
            destination: Some(dst),
            is_reply: Some(false.into()),
            ..Default::default()
        }
    }

    #[test]
    fn groups_pods_of_a_workload_and_counts_connections() {
        let mut other_replica = pod("shop", "web");
        other_replica.pod_name = "web-zzz99".into();
        let flows = vec![
            flow(
                pod("shop", "web"),
                pod("shop", "db"),
                40000,
                5432,
                Verdict::Forwarded,
            ),
            flow(
                pod("shop", "web"),
                pod("shop", "db"),
                40000,
                5432,
                Verdict::Forwarded,
            ),
            flow(
                other_replica,
                pod("shop", "db"),
                40001,
                5432,
                Verdict::Forwarded,
            ),
        ];
        let (nodes, edges) = aggregate(&flows, None);
        assert_eq!(nodes.len(), 2);
        assert_eq!(edges.len(), 1);
        let e = &edges[0];
        assert_eq!(nodes[e.from].name, "web");
        assert_eq!(nodes[e.to].name, "db");
        assert_eq!((e.flows, e.connections), (3, 2));
        assert_eq!(
            e.ports.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            ["5432/TCP"]
        );
        assert_eq!(e.verdicts.forwarded, 3);
    }

    #[test]
    fn skips_replies() {
        let mut reply = flow(
            pod("shop", "db"),
            pod("shop", "web"),
            5432,
            40000,
            Verdict::Forwarded,
        );
        reply.is_reply = Some(true.into());
        let mut synack = flow(
            pod("shop", "db"),
            pod("shop", "web"),
            5432,
            40001,
            Verdict::Forwarded,
        );
        synack.is_reply = None;
        if let Some(layer4::Protocol::Tcp(t)) = synack.l4.as_mut().and_then(|l| l.protocol.as_mut())
        {
            t.flags = Some(lumen_api::flow::TcpFlags {
                syn: true,
                ack: true,
                ..Default::default()
            });
        }
        let request = flow(
            pod("shop", "web"),
            pod("shop", "db"),
            40000,
            5432,
            Verdict::Forwarded,
        );
        let (nodes, edges) = aggregate(&[reply, synack, request], None);
        assert_eq!(edges.len(), 1);
        assert_eq!(nodes[edges[0].from].name, "web");
        assert_eq!(edges[0].flows, 1);
    }

    #[test]
    fn namespace_filter_keeps_edges_touching_the_namespace() {
        let world = Endpoint {
            identity: 2,
            labels: vec!["reserved:world".into()],
            ..Default::default()
        };
        let flows = vec![
            flow(
                pod("shop", "web"),
                pod("shop", "db"),
                1,
                5432,
                Verdict::Forwarded,
            ),
            flow(
                pod("ops", "prom"),
                pod("shop", "web"),
                1,
                9090,
                Verdict::Forwarded,
            ),
            flow(
                pod("ops", "prom"),
                pod("ops", "grafana"),
                1,
                3000,
                Verdict::Forwarded,
            ),
            flow(world, pod("ops", "grafana"), 1, 3000, Verdict::Forwarded),
        ];
        let (nodes, edges) = aggregate(&flows, Some("shop"));
        let names: Vec<_> = nodes
            .iter()
            .map(|n| (n.namespace.as_str(), n.name.as_str()))
            .collect();
        assert_eq!(names, [("ops", "prom"), ("shop", "db"), ("shop", "web")]);
        assert_eq!(edges.len(), 2);
        assert_eq!(aggregate(&flows, Some("")).1.len(), 4);
    }

    #[test]
    fn denied_edge_is_marked() {
        let mut denied = flow(
            pod("shop", "web"),
            pod("shop", "db"),
            1,
            5432,
            Verdict::Dropped,
        );
        denied.drop_reason_desc = DropReason::PolicyDenied as i32;
        let mut ct = flow(
            pod("shop", "web"),
            pod("shop", "db"),
            2,
            5432,
            Verdict::Dropped,
        );
        ct.drop_reason_desc = DropReason::CtMissingTcpAckFlag as i32;
        let mut audit = flow(
            pod("shop", "web"),
            pod("shop", "db"),
            3,
            5432,
            Verdict::Audit,
        );
        audit.l4 = Some(Layer4 {
            protocol: Some(layer4::Protocol::Udp(Udp {
                source_port: 3,
                destination_port: 53,
            })),
        });
        let ok = flow(
            pod("shop", "web"),
            pod("shop", "db"),
            4,
            5432,
            Verdict::Forwarded,
        );
        let (_, edges) = aggregate(&[denied, ct, audit, ok], None);
        let v = &edges[0].verdicts;
        assert_eq!(
            (v.forwarded, v.dropped, v.denied, v.audit, v.other),
            (1, 2, 1, 1, 0)
        );
        assert_eq!(v.drop_reasons.get(&133), Some(&1));
        assert_eq!(edges[0].ports.len(), 2);
    }

    #[test]
    fn arbitrary_field_values_do_not_panic() {
        let mut seed = 7u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let texts = [
            "",
            "=",
            ":",
            "k8s:app=",
            "cidr:/",
            "cidr:1.2.3.4/99999999999",
            "reserved:",
            "é€𝄞=x",
            "<&>",
        ];
        let mut flows = Vec::new();
        for _ in 0..500 {
            let mut ep = || Endpoint {
                identity: rnd() as u32,
                namespace: texts[rnd() as usize % texts.len()].into(),
                pod_name: texts[rnd() as usize % texts.len()].into(),
                labels: (0..rnd() % 4)
                    .map(|_| texts[rnd() as usize % texts.len()].to_string())
                    .collect(),
                workloads: (0..rnd() % 2)
                    .map(|_| Workload {
                        name: texts[rnd() as usize % texts.len()].into(),
                        kind: String::new(),
                    })
                    .collect(),
                ..Default::default()
            };
            let (s, d) = (ep(), ep());
            let mut f = flow(s, d, rnd() as u32, rnd() as u32, Verdict::Forwarded);
            f.verdict = rnd() as i32;
            f.drop_reason_desc = rnd() as i32;
            if rnd() % 3 == 0 {
                f.ip = None;
                f.l4 = None;
            }
            flows.push(f);
        }
        let g = crate::map::build(&flows, Some(":"));
        let _ = crate::map::render_svg(&g, &|_, _| String::from("\u{0}<"));
        let g = crate::map::build(&flows, None);
        assert!(!g.nodes.is_empty());
        let svg = crate::map::render_svg(&g, &|_, _| String::new());
        assert!(!svg.contains("<&>"));
    }

    #[test]
    fn world_addresses_and_missing_parts_do_not_panic() {
        let world = Endpoint {
            identity: 2,
            ..Default::default()
        };
        let mut f = flow(world, pod("shop", "web"), 1, 443, Verdict::Forwarded);
        f.ip = Some(Ip {
            source: "203.0.113.9".into(),
            destination: "10.0.0.2".into(),
            ..Default::default()
        });
        let bare = Flow {
            source: Some(Endpoint::default()),
            destination: Some(Endpoint::default()),
            ..Default::default()
        };
        let (nodes, edges) = aggregate(&[f, bare, Flow::default()], None);
        assert!(nodes
            .iter()
            .any(|n| n.name == "203.0.113.9" && n.kind == "world"));
        assert!(nodes.iter().any(|n| n.name == "unknown"));
        assert_eq!(edges.len(), 2);
    }
}
