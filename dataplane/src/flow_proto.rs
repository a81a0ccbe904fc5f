//! Ring events → Hubble's protobuf messages, filling every field the upstream CLI and UI
//! read (including the `Summary` text printed at the end of a compact line).

use crate::{
    decode::Record,
    events::{Event, FlowEvent, LostInfo, LostSource},
    ipcache::EndpointInfo,
};
use lumen_abi::{
    direction, drop_reason, hdr_flags, ipver, kind, l4_flags, obs, proto, tcp, verdict, PacketInfo,
    PolicyInfo,
};
use lumen_api::{
    flow::{
        self, layer4::Protocol, CiliumEventType, Endpoint, Ethernet, Flow, Ip, Layer4,
        NetworkInterface, Workload,
    },
    observer::{get_flows_response::ResponseTypes, GetFlowsResponse},
    wkt::Timestamp,
};
use std::net::IpAddr;

/// A wall-clock time in ns since the epoch as a protobuf Timestamp.
pub fn timestamp(ns: i64) -> Timestamp {
    Timestamp {
        seconds: ns.div_euclid(1_000_000_000),
        nanos: ns.rem_euclid(1_000_000_000) as i32,
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Formats 128 random bits as an RFC 4122 version-4 UUID.
pub fn uuid_string(bits: u128) -> String {
    let b = (bits & !(0xf000u128 << 64) | (0x4000u128 << 64)) & !(0xc000u128 << 48)
        | (0x8000u128 << 48);
    let mut s = String::with_capacity(36);
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            s.push('-');
        }
        s.push(HEX[((b >> (124 - 4 * i)) & 0xf) as usize] as char);
    }
    s
}

fn mac(m: &[u8; 6]) -> String {
    let mut s = String::with_capacity(17);
    for (i, b) in m.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0xf) as usize] as char);
    }
    s
}

fn ip(bytes: &[u8; 16], version: u8) -> String {
    match version {
        ipver::V4 => IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]]).to_string(),
        _ => IpAddr::from(*bytes).to_string(),
    }
}

fn endpoint(e: &EndpointInfo) -> Option<Endpoint> {
    if e.identity == 0 && e.labels.is_empty() && e.pod_name.is_empty() {
        return None;
    }
    Some(Endpoint {
        id: e.id,
        identity: e.identity,
        cluster_name: e.cluster_name.clone(),
        namespace: e.namespace.clone(),
        labels: e.labels.clone(),
        pod_name: e.pod_name.clone(),
        workloads: e
            .workloads
            .iter()
            .map(|(name, kind)| Workload {
                name: name.clone(),
                kind: kind.clone(),
            })
            .collect(),
    })
}

fn tcp_flags(f: u16) -> flow::TcpFlags {
    flow::TcpFlags {
        fin: f & tcp::FIN != 0,
        syn: f & tcp::SYN != 0,
        rst: f & tcp::RST != 0,
        psh: f & tcp::PSH != 0,
        ack: f & tcp::ACK != 0,
        urg: f & tcp::URG != 0,
        ece: f & tcp::ECE != 0,
        cwr: f & tcp::CWR != 0,
        ns: f & tcp::NS != 0,
    }
}

/// The summary of a TCP packet: its flags in the order Hubble prints them.
fn tcp_summary(f: u16) -> String {
    const ORDER: [(u16, &str); 9] = [
        (tcp::SYN, "SYN"),
        (tcp::ACK, "ACK"),
        (tcp::RST, "RST"),
        (tcp::FIN, "FIN"),
        (tcp::PSH, "PSH"),
        (tcp::URG, "URG"),
        (tcp::ECE, "ECE"),
        (tcp::CWR, "CWR"),
        (tcp::NS, "NS"),
    ];
    let mut s = String::from("TCP Flags: ");
    for (_, name) in ORDER.iter().filter(|(b, _)| f & b != 0) {
        if s.len() > "TCP Flags: ".len() {
            s.push_str(", ");
        }
        s.push_str(name);
    }
    s
}

fn icmpv4_name(t: u8, c: u8) -> String {
    match t {
        0 => "EchoReply".into(),
        3 => {
            let code = match c {
                0 => "Net",
                1 => "Host",
                2 => "Protocol",
                3 => "Port",
                4 => "FragmentationNeeded",
                13 => "CommAdminProhibited",
                _ => return format!("DestinationUnreachable(Code: {c})"),
            };
            format!("DestinationUnreachable({code})")
        }
        5 => "Redirect".into(),
        8 => "EchoRequest".into(),
        11 => "TimeExceeded".into(),
        12 => "ParameterProblem".into(),
        _ => format!("Type {t} Code {c}"),
    }
}

fn icmpv6_name(t: u8, c: u8) -> String {
    match t {
        1 => "DestinationUnreachable".into(),
        2 => "PacketTooBig".into(),
        3 => "TimeExceeded".into(),
        4 => "ParameterProblem".into(),
        128 => "EchoRequest".into(),
        129 => "EchoReply".into(),
        133 => "RouterSolicitation".into(),
        134 => "RouterAdvertisement".into(),
        135 => "NeighborSolicitation".into(),
        136 => "NeighborAdvertisement".into(),
        143 => "MLDv2MulticastListenerReport".into(),
        _ => format!("Type {t} Code {c}"),
    }
}

fn l4(p: &PacketInfo) -> (Option<Layer4>, String) {
    let ports = p.l4_flags & l4_flags::PORTS != 0;
    let (protocol, summary) = match p.l4_proto {
        proto::TCP if ports => (
            Protocol::Tcp(flow::Tcp {
                source_port: p.src_port as u32,
                destination_port: p.dst_port as u32,
                flags: Some(tcp_flags(p.tcp_flags)),
            }),
            tcp_summary(p.tcp_flags),
        ),
        proto::UDP if ports => (
            Protocol::Udp(flow::Udp {
                source_port: p.src_port as u32,
                destination_port: p.dst_port as u32,
            }),
            "UDP".into(),
        ),
        proto::SCTP if ports => (
            Protocol::Sctp(flow::Sctp {
                source_port: p.src_port as u32,
                destination_port: p.dst_port as u32,
            }),
            "SCTP".into(),
        ),
        proto::ICMP if p.l4_flags & l4_flags::ICMP != 0 => (
            Protocol::IcmPv4(flow::IcmPv4 {
                r#type: p.icmp_type as u32,
                code: p.icmp_code as u32,
            }),
            format!("ICMPv4 {}", icmpv4_name(p.icmp_type, p.icmp_code)),
        ),
        proto::ICMPV6 if p.l4_flags & l4_flags::ICMP != 0 => (
            Protocol::IcmPv6(flow::IcmPv6 {
                r#type: p.icmp_type as u32,
                code: p.icmp_code as u32,
            }),
            format!("ICMPv6 {}", icmpv6_name(p.icmp_type, p.icmp_code)),
        ),
        _ => {
            let s = match (p.ip_version, p.ethertype) {
                (0, 0x0806) => "ARP".to_string(),
                (0, et) => format!("Ethertype 0x{et:04x}"),
                (_, _) => format!("IP protocol {}", p.l4_proto),
            };
            return (None, s);
        }
    };
    (
        Some(Layer4 {
            protocol: Some(protocol),
        }),
        summary,
    )
}

/// Direction from the point of view of the endpoint the event belongs to.
fn direction(point: u8, reply: Option<bool>) -> flow::TrafficDirection {
    use flow::TrafficDirection::*;
    let Some(reply) = reply else { return Unknown };
    let leaving = match point {
        obs::FROM_ENDPOINT | obs::TO_NETWORK | obs::TO_CRYPTO => true,
        obs::TO_ENDPOINT | obs::FROM_NETWORK | obs::FROM_CRYPTO => false,
        _ => return Unknown,
    };
    if leaving != reply {
        Egress
    } else {
        Ingress
    }
}

/// The observation point in Cilium's monitor numbering, which `event_type.sub_type`
/// carries and clients print from: it differs from `flow.TraceObservationPoint` only for
/// TO_ENDPOINT (monitor 0, protobuf 101, since 0 is UNKNOWN_POINT there).
fn monitor_obs_point(point: u8) -> i32 {
    if point == obs::TO_ENDPOINT {
        0
    } else {
        point as i32
    }
}

/// Builds the full `flow.Flow` of a flow event.
pub fn flow(ev: &FlowEvent) -> Flow {
    let (hdr, pkt) = (ev.record.header(), ev.record.packet());
    let reply =
        (hdr.flags & hdr_flags::REPLY_KNOWN != 0).then_some(hdr.flags & hdr_flags::IS_REPLY != 0);
    let (l4, summary) = l4(pkt);
    let mut f = Flow {
        time: Some(timestamp(ev.time_ns)),
        uuid: uuid_string(ev.uuid),
        // The WireGuard device is L3: what it decrypts has no Ethernet header.
        ethernet: (hdr.obs_point != obs::FROM_CRYPTO).then(|| Ethernet {
            source: mac(&pkt.src_mac),
            destination: mac(&pkt.dst_mac),
        }),
        ip: (pkt.ip_version != 0).then(|| Ip {
            source: ip(&pkt.src_ip, pkt.ip_version),
            destination: ip(&pkt.dst_ip, pkt.ip_version),
            ip_version: if pkt.ip_version == ipver::V4 {
                flow::IpVersion::IPv4
            } else {
                flow::IpVersion::IPv6
            } as i32,
            encrypted: hdr.flags & hdr_flags::ENCRYPTED != 0,
            ..Default::default()
        }),
        l4,
        source: endpoint(&ev.source),
        destination: endpoint(&ev.destination),
        r#type: flow::FlowType::L3L4 as i32,
        node_name: ev.node_name.to_string(),
        reply: reply.unwrap_or(false),
        is_reply: reply.map(|value| pbjson_types::BoolValue { value }),
        traffic_direction: direction(hdr.obs_point, reply) as i32,
        interface: Some(NetworkInterface {
            index: hdr.ifindex,
            name: ev.ifname.as_deref().unwrap_or_default().to_string(),
        }),
        summary,
        source_service: ev.source_service.as_deref().cloned(),
        destination_service: ev.destination_service.as_deref().cloned(),
        source_names: ev.source.names.clone(),
        destination_names: ev.destination.names.clone(),
        ..Default::default()
    };
    match &ev.record {
        Record::Trace(t) => {
            f.verdict = flow::Verdict::Forwarded as i32;
            f.event_type = Some(CiliumEventType {
                r#type: kind::TRACE as i32,
                sub_type: monitor_obs_point(hdr.obs_point),
            });
            f.trace_observation_point = hdr.obs_point as i32;
            f.trace_reason = t.reason as i32;
        }
        Record::Drop(d) => {
            f.verdict = flow::Verdict::Dropped as i32;
            f.drop_reason = d.drop_reason as u32;
            f.drop_reason_desc = d.drop_reason as i32;
            f.event_type = Some(CiliumEventType {
                r#type: kind::DROP as i32,
                sub_type: d.drop_reason as i32,
            });
            if d.policy.direction != 0 {
                apply_policy(&mut f, &d.policy, ev);
            }
        }
        Record::PolicyVerdict(p) => {
            f.event_type = Some(CiliumEventType {
                r#type: kind::POLICY_VERDICT as i32,
                sub_type: 0,
            });
            f.verdict = match p.policy.verdict {
                verdict::DENIED => {
                    let reason = policy_drop_reason(&p.policy);
                    f.drop_reason = reason as u32;
                    f.drop_reason_desc = reason as i32;
                    flow::Verdict::Dropped
                }
                verdict::AUDIT => flow::Verdict::Audit,
                _ => flow::Verdict::Forwarded,
            } as i32;
            apply_policy(&mut f, &p.policy, ev);
        }
        Record::Translation(t) => {
            // Hubble's service-translation event: the packet after translation, to the
            // backend, with the service it was addressed to.
            f.verdict = flow::Verdict::Translated as i32;
            f.event_type = Some(CiliumEventType {
                r#type: kind::TRANSLATION as i32,
                sub_type: 0,
            });
            f.sock_xlate_point = t.xlate_point as i32;
        }
    }
    if let Some(l7) = &ev.l7 {
        // An access-log record (the DNS proxy's): no observation point, the endpoint's egress.
        f.r#type = flow::FlowType::L7 as i32;
        f.event_type = Some(CiliumEventType {
            r#type: ACCESS_LOG,
            sub_type: 0,
        });
        f.trace_observation_point = 0;
        f.trace_reason = 0;
        f.traffic_direction = flow::TrafficDirection::Egress as i32;
        f.summary = l7_summary(l7);
        f.l7 = Some((**l7).clone());
    }
    f
}

/// Cilium's monitor type of L7 access-log records.
const ACCESS_LOG: i32 = 129;

/// Hubble's summary of a DNS record: `DNS Query api.example.com. A`, `DNS Answer
/// "192.0.2.1" TTL: 30 (Proxy api.example.com. A)`, `DNS Answer RCode: Refused ...`.
fn l7_summary(l7: &flow::Layer7) -> String {
    let Some(flow::layer7::Record::Dns(d)) = &l7.record else {
        return String::new();
    };
    let q = format!("{} {}", d.query, d.qtypes.join(","));
    if l7.r#type == flow::L7FlowType::Request as i32 {
        return format!("DNS Query {q}");
    }
    if d.rcode != 0 {
        let code = match d.rcode {
            1 => "FormErr".to_string(),
            2 => "ServFail".to_string(),
            3 => "NXDomain".to_string(),
            4 => "NotImp".to_string(),
            5 => "Refused".to_string(),
            n => n.to_string(),
        };
        return format!("DNS Answer RCode: {code} (Proxy {q})");
    }
    format!(
        "DNS Answer \"{}\" TTL: {} (Proxy {q})",
        d.ips.join(","),
        d.ttl
    )
}

/// The drop reason of a policy denial: an explicit deny rule, or no allow rule.
fn policy_drop_reason(p: &PolicyInfo) -> u16 {
    if p.rule_ref == lumen_abi::RULE_REF_NONE {
        drop_reason::POLICY_DENIED
    } else {
        drop_reason::POLICY_DENY
    }
}

/// Direction, match type and the policies that decided, from a kernel policy block.
fn apply_policy(f: &mut Flow, p: &PolicyInfo, ev: &FlowEvent) {
    let ingress = p.direction == direction::INGRESS;
    f.traffic_direction = if ingress {
        flow::TrafficDirection::Ingress
    } else {
        flow::TrafficDirection::Egress
    } as i32;
    f.policy_match_type = p.match_type as u32;
    let Some(named) = &ev.policies else { return };
    let named = (**named).clone();
    let allowed = p.verdict == verdict::ALLOWED;
    match (ingress, allowed) {
        (true, true) => f.ingress_allowed_by = named,
        (false, true) => f.egress_allowed_by = named,
        (true, false) => f.ingress_denied_by = named,
        (false, false) => f.egress_denied_by = named,
    }
}

/// Builds the `flow.LostEvent` of a loss report.
pub fn lost(l: &LostInfo) -> flow::LostEvent {
    let source = match l.source {
        LostSource::Unknown => flow::LostEventSource::UnknownLostEventSource,
        LostSource::KernelRing => flow::LostEventSource::PerfEventRingBuffer,
        LostSource::FlowRing => flow::LostEventSource::HubbleRingBuffer,
    };
    flow::LostEvent {
        source: source as i32,
        num_events_lost: l.count,
        cpu: l.cpu.map(|value| pbjson_types::Int32Value { value }),
        first: Some(timestamp(l.time_ns)),
        last: Some(timestamp(l.time_ns)),
    }
}

/// Wraps a flow in a GetFlows response.
pub fn flow_response(f: Flow) -> GetFlowsResponse {
    GetFlowsResponse {
        node_name: f.node_name.clone(),
        time: f.time,
        response_types: Some(ResponseTypes::Flow(f)),
    }
}

/// The GetFlows response of any event (no filtering or masking).
pub fn response(ev: &Event) -> GetFlowsResponse {
    match ev {
        Event::Flow(f) => flow_response(flow(f)),
        Event::Lost(l) => GetFlowsResponse {
            node_name: l.node_name.to_string(),
            time: Some(timestamp(l.time_ns)),
            response_types: Some(ResponseTypes::LostEvents(lost(l))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::fixtures::tcp_syn;
    use std::sync::Arc;

    fn ev(rec: lumen_abi::TraceRecord) -> FlowEvent {
        FlowEvent {
            time_ns: 1_795_770_000_223_456_789,
            uuid: 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
            record: Record::Trace(rec),
            source: Arc::new(EndpointInfo {
                id: 3,
                identity: 31002,
                cluster_name: "lab".into(),
                namespace: "shop".into(),
                pod_name: "frontend".into(),
                labels: vec!["k8s:app=frontend".into()],
                workloads: vec![],
                names: vec![],
            }),
            destination: Arc::new(EndpointInfo::default()),
            endpoint_id: 3,
            ifname: Some("lxc1".into()),
            node_name: "lab/node1".into(),
            policies: None,
            source_service: None,
            destination_service: None,
            l7: None,
        }
    }

    fn policy_record(v: u8, rule_ref: u32) -> Record {
        let t = tcp_syn();
        Record::PolicyVerdict(lumen_abi::PolicyVerdictRecord {
            hdr: lumen_abi::RecordHeader {
                kind: kind::POLICY_VERDICT,
                len: 112,
                ..t.hdr
            },
            pkt: t.pkt,
            policy: PolicyInfo {
                endpoint_id: 3,
                local_identity: 31002,
                remote_identity: 40211,
                rule_ref,
                direction: direction::EGRESS,
                match_type: if rule_ref == lumen_abi::RULE_REF_NONE {
                    0
                } else {
                    2
                },
                verdict: v,
                _pad: [0; 5],
            },
        })
    }

    fn named(name: &str) -> Option<Arc<Vec<flow::Policy>>> {
        Some(Arc::new(vec![flow::Policy {
            name: name.into(),
            namespace: "shop".into(),
            kind: "CiliumNetworkPolicy".into(),
            ..Default::default()
        }]))
    }

    #[test]
    fn policy_verdicts_carry_verdict_reason_direction_and_policy() {
        let mut e = ev(tcp_syn());
        e.record = policy_record(verdict::DENIED, lumen_abi::RULE_REF_NONE);
        e.policies = named("default-deny");
        let f = flow(&e);
        assert_eq!(f.event_type.as_ref().unwrap().r#type, 5);
        assert_eq!(f.verdict, flow::Verdict::Dropped as i32);
        assert_eq!(f.drop_reason_desc, flow::DropReason::PolicyDenied as i32);
        assert_eq!(f.traffic_direction, flow::TrafficDirection::Egress as i32);
        assert_eq!(f.policy_match_type, 0);
        assert_eq!(f.egress_denied_by[0].name, "default-deny");
        assert!(f.egress_allowed_by.is_empty() && f.ingress_denied_by.is_empty());

        e.record = policy_record(verdict::DENIED, 4);
        e.policies = named("deny-db");
        let f = flow(&e);
        assert_eq!(f.drop_reason_desc, flow::DropReason::PolicyDeny as i32);

        e.record = policy_record(verdict::ALLOWED, 4);
        e.policies = named("allow-db");
        let f = flow(&e);
        assert_eq!(f.verdict, flow::Verdict::Forwarded as i32);
        assert_eq!(f.drop_reason_desc, 0);
        assert_eq!(f.policy_match_type, 2);
        assert_eq!(f.egress_allowed_by[0].name, "allow-db");

        e.record = policy_record(verdict::AUDIT, lumen_abi::RULE_REF_NONE);
        let f = flow(&e);
        assert_eq!(f.verdict, flow::Verdict::Audit as i32);
    }

    #[test]
    fn dns_access_log_flows_are_l7_with_hubble_summaries() {
        let dns = |rcode: u32, ips: Vec<String>| flow::Dns {
            query: "api.example.test.".into(),
            qtypes: vec!["A".into()],
            rcode,
            ips,
            ttl: 30,
            ..Default::default()
        };
        let mut e = ev(tcp_syn());
        e.l7 = Some(Arc::new(flow::Layer7 {
            r#type: flow::L7FlowType::Request as i32,
            latency_ns: 0,
            record: Some(flow::layer7::Record::Dns(dns(0, vec![]))),
        }));
        let f = flow(&e);
        assert_eq!(f.r#type, flow::FlowType::L7 as i32);
        assert_eq!(f.event_type.as_ref().map(|t| t.r#type), Some(129));
        assert_eq!(f.summary, "DNS Query api.example.test. A");
        assert_eq!(f.traffic_direction, flow::TrafficDirection::Egress as i32);
        e.l7 = Some(Arc::new(flow::Layer7 {
            r#type: flow::L7FlowType::Response as i32,
            latency_ns: 1_000,
            record: Some(flow::layer7::Record::Dns(dns(0, vec!["192.0.2.1".into()]))),
        }));
        assert_eq!(
            flow(&e).summary,
            "DNS Answer \"192.0.2.1\" TTL: 30 (Proxy api.example.test. A)"
        );
        e.l7 = Some(Arc::new(flow::Layer7 {
            r#type: flow::L7FlowType::Response as i32,
            latency_ns: 1_000,
            record: Some(flow::layer7::Record::Dns(dns(5, vec![]))),
        }));
        assert_eq!(
            flow(&e).summary,
            "DNS Answer RCode: Refused (Proxy api.example.test. A)"
        );
    }

    #[test]
    fn a_syn_becomes_the_flow_hubble_prints() {
        let f = flow(&ev(tcp_syn()));
        assert_eq!(f.verdict, flow::Verdict::Forwarded as i32);
        assert_eq!(f.summary, "TCP Flags: SYN");
        let ip = f.ip.as_ref().unwrap();
        assert_eq!(
            (ip.source.as_str(), ip.destination.as_str()),
            ("10.100.1.2", "10.100.1.3")
        );
        let Some(Protocol::Tcp(t)) = f.l4.unwrap().protocol else {
            panic!("not tcp")
        };
        assert_eq!((t.source_port, t.destination_port), (40000, 8080));
        assert!(t.flags.unwrap().syn);
        assert_eq!(f.source.unwrap().pod_name, "frontend");
        assert_eq!(f.destination, None);
        assert_eq!(f.is_reply, Some(pbjson_types::BoolValue { value: false }));
        assert_eq!(f.traffic_direction, flow::TrafficDirection::Egress as i32);
        assert_eq!(
            f.trace_observation_point,
            flow::TraceObservationPoint::FromEndpoint as i32
        );
        assert_eq!(f.trace_reason, flow::TraceReason::New as i32);
        assert_eq!(
            f.event_type,
            Some(CiliumEventType {
                r#type: 4,
                sub_type: 5
            })
        );
        assert_eq!(f.interface.unwrap().name, "lxc1");
        assert_eq!(f.ethernet.unwrap().source, "02:00:00:00:00:02");
        assert_eq!(f.time.unwrap().nanos, 223_456_789);
    }

    #[test]
    fn traffic_through_the_tunnel_is_encrypted_at_the_crypto_points() {
        let mut r = tcp_syn();
        r.hdr.flags |= hdr_flags::ENCRYPTED;
        r.hdr.obs_point = obs::TO_CRYPTO;
        let f = flow(&ev(r));
        assert!(f.ip.as_ref().unwrap().encrypted);
        assert_eq!(
            f.trace_observation_point,
            flow::TraceObservationPoint::ToCrypto as i32
        );
        assert_eq!(f.event_type.unwrap().sub_type, 13);
        assert_eq!(f.traffic_direction, flow::TrafficDirection::Egress as i32);
        // Decrypted: an L3 packet (no Ethernet), entering the node.
        r.hdr.obs_point = obs::FROM_CRYPTO;
        let f = flow(&ev(r));
        assert!(f.ip.as_ref().unwrap().encrypted);
        assert_eq!(f.ethernet, None);
        assert_eq!(f.event_type.unwrap().sub_type, 12);
        assert_eq!(f.traffic_direction, flow::TrafficDirection::Ingress as i32);
        // Everything else is not.
        assert!(!flow(&ev(tcp_syn())).ip.unwrap().encrypted);
    }

    #[test]
    fn replies_and_unknown_reply_state_set_direction() {
        let mut r = tcp_syn();
        r.hdr.flags = hdr_flags::REPLY_KNOWN | hdr_flags::IS_REPLY;
        r.hdr.obs_point = obs::TO_ENDPOINT;
        let f = flow(&ev(r));
        assert_eq!(
            f.event_type,
            Some(CiliumEventType {
                r#type: 4,
                sub_type: 0
            }),
            "monitor numbering"
        );
        assert_eq!(
            f.trace_observation_point,
            flow::TraceObservationPoint::ToEndpoint as i32
        );
        assert_eq!(f.traffic_direction, flow::TrafficDirection::Egress as i32);
        assert!(f.reply);
        r.hdr.flags = 0;
        let f = flow(&ev(r));
        assert_eq!(f.is_reply, None);
        assert_eq!(f.traffic_direction, flow::TrafficDirection::Unknown as i32);
    }

    #[test]
    fn summaries_follow_hubble_wording() {
        assert_eq!(tcp_summary(tcp::FIN | tcp::ACK), "TCP Flags: ACK, FIN");
        let mut r = tcp_syn();
        r.pkt.l4_proto = proto::ICMP;
        r.pkt.l4_flags = l4_flags::ICMP;
        r.pkt.icmp_type = 8;
        assert_eq!(flow(&ev(r)).summary, "ICMPv4 EchoRequest");
        r.pkt.l4_proto = proto::UDP;
        r.pkt.l4_flags = l4_flags::PORTS;
        assert_eq!(flow(&ev(r)).summary, "UDP");
    }

    #[test]
    fn uuids_are_version_4() {
        let u = uuid_string(u128::MAX);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
    }
}
