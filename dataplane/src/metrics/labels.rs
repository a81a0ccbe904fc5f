//! Label values of Hubble's metrics, computed from a ring event the way Hubble computes
//! them from the `flow.Flow` (without building one), and the `source` / `destination`
//! context labels.

use super::options::{Context, ContextKind};
use crate::{decode::Record, events::FlowEvent, ipcache::EndpointInfo};
use lumen_abi::{direction, hdr_flags, ipver, l4_flags, proto, verdict, PacketInfo};
use lumen_api::flow::{DropReason, Verdict};
use std::net::IpAddr;

/// The flow's verdict, as `flow.Flow.verdict` says it.
pub fn verdict_of(record: &Record) -> Verdict {
    match record {
        Record::Trace(_) => Verdict::Forwarded,
        Record::Drop(_) => Verdict::Dropped,
        Record::PolicyVerdict(p) => match p.policy.verdict {
            verdict::DENIED => Verdict::Dropped,
            verdict::AUDIT => Verdict::Audit,
            _ => Verdict::Forwarded,
        },
        Record::Translation(_) => Verdict::Translated,
    }
}

/// `type` of `hubble_flows_processed_total`: Hubble's name of the monitor event type
/// (`Unknown` for the others, with the number as subtype).
pub fn type_name(record: &Record) -> &'static str {
    match record {
        Record::Trace(_) => "Trace",
        Record::Drop(_) => "Drop",
        Record::PolicyVerdict(_) => "PolicyVerdict",
        Record::Translation(_) => "Unknown",
    }
}

/// `subtype` of `hubble_flows_processed_total`: the observation point of a trace.
pub fn subtype(record: &Record) -> &'static str {
    match record {
        Record::Trace(t) => obs_point_name(t.hdr.obs_point),
        Record::Translation(_) => "7",
        _ => "",
    }
}

/// Cilium's names of the trace observation points.
pub fn obs_point_name(point: u8) -> &'static str {
    match point {
        lumen_abi::obs::TO_ENDPOINT => "to-endpoint",
        lumen_abi::obs::TO_STACK => "to-stack",
        lumen_abi::obs::FROM_ENDPOINT => "from-endpoint",
        lumen_abi::obs::FROM_NETWORK => "from-network",
        lumen_abi::obs::TO_NETWORK => "to-network",
        lumen_abi::obs::FROM_CRYPTO => "from-crypto",
        lumen_abi::obs::TO_CRYPTO => "to-crypto",
        _ => "unknown",
    }
}

/// The L4 protocol as Hubble's metrics name it (`TCP`, `UDP`, `SCTP`, `ICMPv4`, `ICMPv6`,
/// else `Unknown`): present only when the flow has that layer-4 header.
pub fn protocol(p: &PacketInfo) -> &'static str {
    let ports = p.l4_flags & l4_flags::PORTS != 0;
    let icmp = p.l4_flags & l4_flags::ICMP != 0;
    match p.l4_proto {
        proto::TCP if ports => "TCP",
        proto::UDP if ports => "UDP",
        proto::SCTP if ports => "SCTP",
        proto::ICMP if icmp => "ICMPv4",
        proto::ICMPV6 if icmp => "ICMPv6",
        _ => "Unknown",
    }
}

/// `reason` of `hubble_drop_total`: the `flow.DropReason` name.
pub fn drop_reason(code: u16) -> &'static str {
    DropReason::try_from(code as i32)
        .map(|r| r.as_str_name())
        .unwrap_or("DROP_REASON_UNKNOWN")
}

/// `direction` of `hubble_policy_verdicts_total`.
pub fn policy_direction(dir: u8) -> &'static str {
    match dir {
        direction::INGRESS => "ingress",
        direction::EGRESS => "egress",
        _ => "traffic_direction_unknown",
    }
}

/// `match` of `hubble_policy_verdicts_total`: Cilium's names of the policy match types.
pub fn match_name(m: u8) -> &'static str {
    match m {
        1 => "l3-only",
        2 => "l3-l4",
        3 => "l4-only",
        4 => "all",
        5 => "l3-proto",
        6 => "proto-only",
        _ => "none",
    }
}

/// `action` of `hubble_policy_verdicts_total`: the verdict in lower case.
pub fn action(v: Verdict) -> &'static str {
    match v {
        Verdict::Forwarded => "forwarded",
        Verdict::Dropped => "dropped",
        Verdict::Audit => "audit",
        Verdict::Translated => "translated",
        _ => "verdict_unknown",
    }
}

/// `family` of `hubble_tcp_flags_total`.
pub fn family(version: u8) -> &'static str {
    match version {
        ipver::V6 => "IPv6",
        _ => "IPv4",
    }
}

/// True when the record is known to be a reply.
pub fn is_reply(ev: &FlowEvent) -> bool {
    let f = ev.record.header().flags;
    f & hdr_flags::REPLY_KNOWN != 0 && f & hdr_flags::IS_REPLY != 0
}

/// True when the record is known not to be a reply (the datapath's connection tracker
/// said so).
pub fn is_request(ev: &FlowEvent) -> bool {
    let f = ev.record.header().flags;
    f & hdr_flags::REPLY_KNOWN != 0 && f & hdr_flags::IS_REPLY == 0
}

fn ip(bytes: &[u8; 16], version: u8) -> Option<IpAddr> {
    match version {
        ipver::V4 => Some(IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])),
        ipver::V6 => Some(IpAddr::from(*bytes)),
        _ => None,
    }
}

/// The value of a context label for one side of a flow: the first alternative with a
/// value, else empty.
pub fn context(ctx: &Context, ep: &EndpointInfo, addr: &[u8; 16], version: u8) -> String {
    for kind in &ctx.0 {
        let v = match kind {
            ContextKind::Namespace => ep.namespace.clone(),
            ContextKind::Pod if !ep.pod_name.is_empty() => {
                format!("{}/{}", ep.namespace, ep.pod_name)
            }
            ContextKind::Pod => String::new(),
            ContextKind::PodName => ep.pod_name.clone(),
            ContextKind::Identity if ep.identity != 0 => ep.identity.to_string(),
            ContextKind::Identity => String::new(),
            ContextKind::Workload => ep
                .workloads
                .first()
                .map(|(name, _)| format!("{}/{name}", ep.namespace))
                .unwrap_or_default(),
            ContextKind::WorkloadName => ep
                .workloads
                .first()
                .map(|(name, _)| name.clone())
                .unwrap_or_default(),
            ContextKind::Ip => ip(addr, version).map(|a| a.to_string()).unwrap_or_default(),
        };
        if !v.is_empty() {
            return v;
        }
    }
    String::new()
}
