//! Flows → what the pages show: a table row ([`FlowRow`], also the live rows' JSON), the
//! endpoints as workloads with the filter that selects them ([`Peer`]), and the policies a
//! flow is attributed to. Text comes from the `hubble` CLI's formatters where they exist.

use hubble_cli::format::{
    drop_reason_text, format_identity, format_timestamp, host_names, summary_text, verdict_text,
};
use lumen_api::flow::{layer4::Protocol, Endpoint, Flow, Policy, TrafficDirection, Verdict};
use serde::Serialize;

/// One row of the flows table (and one element of a live SSE batch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowRow {
    /// The flow's UUID (links to its detail page; may be empty).
    pub uuid: String,
    /// Local time, `Mon _D HH:MM:SS.mmm`.
    pub time: String,
    /// The node that observed it.
    pub node: String,
    /// `namespace/pod`, service, DNS name or IP.
    pub source: String,
    /// `(ID:n)` or a reserved identity name.
    pub source_identity: String,
    /// As `source`.
    pub destination: String,
    /// As `source_identity`.
    pub destination_identity: String,
    /// Destination port, empty for port-less protocols.
    pub dst_port: String,
    /// The L4/L7 summary.
    pub summary: String,
    /// The verdict as the CLI prints it (ALLOWED/DENIED for policy verdicts).
    pub verdict: String,
    /// CSS class for the verdict colour: `forwarded`, `dropped`, `audit` or `other`.
    pub verdict_class: &'static str,
    /// The drop reason's description for drops, else empty.
    pub drop_reason: String,
    /// Names of the policies the flow is attributed to, comma separated.
    pub policy: String,
}

impl FlowRow {
    /// The row for a flow.
    pub fn new(f: &Flow) -> FlowRow {
        let (source, destination) = endpoint_names(f);
        let id = |e: Option<&Endpoint>| format_identity(e.map_or(0, |e| e.identity), false);
        FlowRow {
            uuid: f.uuid.clone(),
            time: format_timestamp(f.time.as_ref()),
            node: f.node_name.clone(),
            source,
            source_identity: id(f.source.as_ref()),
            destination,
            destination_identity: id(f.destination.as_ref()),
            dst_port: hubble_cli::format::ports(f)
                .1
                .map_or(String::new(), |p| p.to_string()),
            summary: summary_text(f),
            verdict: verdict_text(f, false),
            verdict_class: verdict_class(f.verdict),
            drop_reason: drop_reason(f),
            policy: attributed_policies(f)
                .iter()
                .map(|p| policy_name(p))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// The CSS class of a verdict.
pub fn verdict_class(v: i32) -> &'static str {
    match Verdict::try_from(v) {
        Ok(Verdict::Forwarded | Verdict::Redirected) => "forwarded",
        Ok(Verdict::Dropped | Verdict::Error) => "dropped",
        Ok(Verdict::Audit) => "audit",
        _ => "other",
    }
}

/// The drop reason's description for dropped flows (empty otherwise).
pub fn drop_reason(f: &Flow) -> String {
    if !matches!(Verdict::try_from(f.verdict), Ok(Verdict::Dropped)) {
        return String::new();
    }
    let code = if f.drop_reason != 0 {
        f.drop_reason
    } else {
        u32::try_from(f.drop_reason_desc).unwrap_or(0)
    };
    if code == 0 {
        String::new()
    } else {
        drop_reason_text(code)
    }
}

/// Whether the flow was dropped by policy (the CLI's `--verdict policy_denied`).
pub fn is_policy_denied(f: &Flow) -> bool {
    let code = if f.drop_reason != 0 {
        f.drop_reason
    } else {
        u32::try_from(f.drop_reason_desc).unwrap_or(0)
    };
    f.verdict == Verdict::Dropped as i32 && matches!(code, 133 | 181)
}

/// Source and destination names without ports (the CLI's, for a flow stripped of L4).
pub fn endpoint_names(f: &Flow) -> (String, String) {
    let bare = Flow {
        ip: f.ip.clone(),
        ethernet: f.ethernet.clone(),
        source: f.source.clone(),
        destination: f.destination.clone(),
        source_service: f.source_service.clone(),
        destination_service: f.destination_service.clone(),
        source_names: f.source_names.clone(),
        destination_names: f.destination_names.clone(),
        ..Default::default()
    };
    host_names(&bare, false)
}

/// The policies a flow is attributed to: those that allowed it (forwarded) or denied it
/// (dropped), on its traffic direction's side (both sides when unknown).
pub fn attributed_policies<'a>(f: &'a Flow) -> Vec<&'a Policy> {
    let dir = TrafficDirection::try_from(f.traffic_direction).ok();
    let pick = |ingress: &'a [Policy], egress: &'a [Policy]| -> Vec<&'a Policy> {
        match dir {
            Some(TrafficDirection::Ingress) => ingress.iter().collect(),
            Some(TrafficDirection::Egress) => egress.iter().collect(),
            _ => ingress.iter().chain(egress).collect(),
        }
    };
    match Verdict::try_from(f.verdict) {
        Ok(Verdict::Dropped | Verdict::Error) => pick(&f.ingress_denied_by, &f.egress_denied_by),
        Ok(Verdict::Forwarded | Verdict::Redirected | Verdict::Audit) => {
            pick(&f.ingress_allowed_by, &f.egress_allowed_by)
        }
        _ => vec![],
    }
}

/// `namespace/name` of a policy (just `name` when cluster-wide).
pub fn policy_name(p: &Policy) -> String {
    if p.namespace.is_empty() {
        p.name.clone()
    } else {
        format!("{}/{}", p.namespace, p.name)
    }
}

/// The protocol name the `protocol` filter takes, if the flow has one.
pub fn protocol_name(f: &Flow) -> Option<&'static str> {
    Some(match f.l4.as_ref()?.protocol.as_ref()? {
        Protocol::Tcp(_) => "tcp",
        Protocol::Udp(_) => "udp",
        Protocol::Sctp(_) => "sctp",
        Protocol::IcmPv4(_) => "icmpv4",
        Protocol::IcmPv6(_) => "icmpv6",
        Protocol::Vrrp(_) => "vrrp",
        Protocol::Igmp(_) => "igmp",
    })
}

/// One side of a flow as a workload, with the filter that selects it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    /// What the page shows: `namespace/workload`, a reserved identity, a name or an IP.
    pub label: String,
    /// The filter kind: `pod`, `identity` or `ip` (prefixed by `from_`/`to_` when used).
    pub kind: &'static str,
    /// The filter value.
    pub value: String,
}

impl Peer {
    /// The flow's source or destination.
    pub fn of(f: &Flow, source: bool) -> Peer {
        let (ep, ip) = if source {
            (f.source.as_ref(), f.ip.as_ref().map(|i| i.source.as_str()))
        } else {
            (
                f.destination.as_ref(),
                f.ip.as_ref().map(|i| i.destination.as_str()),
            )
        };
        if let Some(e) = ep.filter(|e| !e.pod_name.is_empty()) {
            // The controller's name is the pod names' prefix, and pod filters match prefixes.
            let name = e
                .workloads
                .first()
                .filter(|w| !w.name.is_empty())
                .map_or(e.pod_name.as_str(), |w| w.name.as_str());
            let value = if e.namespace.is_empty() {
                name.to_string()
            } else {
                format!("{}/{name}", e.namespace)
            };
            return Peer {
                label: value.clone(),
                kind: "pod",
                value,
            };
        }
        let id = ep.map_or(0, |e| e.identity);
        if let Some((name, _)) = hubble_cli::filters::RESERVED_IDENTITIES
            .iter()
            .find(|(_, n)| *n == id && id != 0)
        {
            return Peer {
                label: format!("({name})"),
                kind: "identity",
                value: name.to_string(),
            };
        }
        let ip = ip.unwrap_or_default().to_string();
        Peer {
            label: if ip.is_empty() {
                "(unknown)".into()
            } else {
                ip.clone()
            },
            kind: "ip",
            value: ip,
        }
    }

    /// The URL parameter selecting this peer on one side: `from_pod`, `to_ip`, ...
    pub fn param(&self, source: bool) -> String {
        format!("{}_{}", if source { "from" } else { "to" }, self.kind)
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Hand-built flows for the tests of every page.
    use lumen_api::{
        flow::{Endpoint, Flow, Ip, Layer4, Policy, Tcp, Verdict, Workload},
        wkt::Timestamp,
    };

    /// A TCP flow `demo/client-<n>` → `demo/server-xyz:8080`, with labels.
    pub fn flow(uuid: &str, verdict: Verdict) -> Flow {
        Flow {
            uuid: uuid.into(),
            time: Some(Timestamp {
                seconds: 1_795_770_000,
                nanos: 0,
            }),
            verdict: verdict as i32,
            node_name: "lab/node1".into(),
            ip: Some(Ip {
                source: "10.0.0.1".into(),
                destination: "10.0.0.2".into(),
                ..Default::default()
            }),
            l4: Some(Layer4 {
                protocol: Some(lumen_api::flow::layer4::Protocol::Tcp(Tcp {
                    source_port: 40000,
                    destination_port: 8080,
                    flags: None,
                })),
            }),
            source: Some(Endpoint {
                identity: 1234,
                namespace: "demo".into(),
                pod_name: "client-7d9f-abc".into(),
                labels: vec!["k8s:app=client".into()],
                workloads: vec![Workload {
                    name: "client".into(),
                    kind: "Deployment".into(),
                }],
                ..Default::default()
            }),
            destination: Some(Endpoint {
                identity: 5678,
                namespace: "demo".into(),
                pod_name: "server-xyz".into(),
                labels: vec!["k8s:app=server".into()],
                ..Default::default()
            }),
            traffic_direction: 1,
            summary: "TCP Flags: SYN".into(),
            ..Default::default()
        }
    }

    /// A policy-denied drop (reason 133) of [`flow`], denied by `demo/deny-all` on ingress.
    pub fn denied(uuid: &str, seconds: i64) -> Flow {
        let mut f = flow(uuid, Verdict::Dropped);
        f.drop_reason = 133;
        f.drop_reason_desc = 133;
        f.time = Some(Timestamp { seconds, nanos: 0 });
        f.ingress_denied_by = vec![Policy {
            name: "deny-all".into(),
            namespace: "demo".into(),
            kind: "CiliumNetworkPolicy".into(),
            ..Default::default()
        }];
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fixtures::*;

    #[test]
    fn row_of_a_forwarded_flow() {
        let mut f = flow("u1", Verdict::Forwarded);
        f.ingress_allowed_by = vec![Policy {
            name: "allow-web".into(),
            namespace: "demo".into(),
            ..Default::default()
        }];
        let r = FlowRow::new(&f);
        assert_eq!(r.source, "demo/client-7d9f-abc");
        assert_eq!(r.destination, "demo/server-xyz");
        assert_eq!(r.source_identity, "(ID:1234)");
        assert_eq!(r.dst_port, "8080");
        assert_eq!(r.verdict, "FORWARDED");
        assert_eq!(r.verdict_class, "forwarded");
        assert_eq!(r.drop_reason, "");
        assert_eq!(r.policy, "demo/allow-web");
        assert_eq!(r.summary, "TCP Flags: SYN");
    }

    #[test]
    fn row_of_a_denied_flow() {
        let f = denied("u2", 1);
        let r = FlowRow::new(&f);
        assert_eq!(r.verdict_class, "dropped");
        assert_eq!(r.drop_reason, "Policy denied");
        assert_eq!(r.policy, "demo/deny-all");
        assert!(is_policy_denied(&f));
        assert!(!is_policy_denied(&flow("u3", Verdict::Dropped)));
        assert_eq!(verdict_class(Verdict::Audit as i32), "audit");
    }

    #[test]
    fn peers() {
        let mut f = flow("u", Verdict::Forwarded);
        assert_eq!(
            Peer::of(&f, true),
            Peer {
                label: "demo/client".into(),
                kind: "pod",
                value: "demo/client".into()
            }
        );
        assert_eq!(Peer::of(&f, false).value, "demo/server-xyz");
        f.destination = Some(Endpoint {
            identity: 2,
            ..Default::default()
        });
        assert_eq!(Peer::of(&f, false).param(false), "to_identity");
        assert_eq!(Peer::of(&f, false).label, "(world)");
        f.destination = None;
        assert_eq!(Peer::of(&f, false).value, "10.0.0.2");
        assert_eq!(protocol_name(&f), Some("tcp"));
    }
}
