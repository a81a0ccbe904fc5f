//! Transport-layer filters: `protocol`, `source_port` / `destination_port` and `tcp_flags`.
//!
//! `protocol` names are case-insensitive: `tcp`, `udp`, `sctp`, `icmp` (ICMPv4 or ICMPv6),
//! `icmpv4`, `icmpv6`, `vrrp`, `igmp` look at `l4`; `http`, `dns`, `kafka` at the `l7`
//! record. Ports are decimal strings (0-65535) compared with the TCP, UDP or SCTP port of
//! the flow; flows of other protocols never match a port filter.

use lumen_api::flow::{layer4, layer7, Flow, TcpFlags};

use crate::error::FilterError;
use crate::k8s::Side;

/// A set of protocols, one bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ProtocolSet(u16);

const TCP: u16 = 1 << 0;
const UDP: u16 = 1 << 1;
const SCTP: u16 = 1 << 2;
const ICMPV4: u16 = 1 << 3;
const ICMPV6: u16 = 1 << 4;
const VRRP: u16 = 1 << 5;
const IGMP: u16 = 1 << 6;
const HTTP: u16 = 1 << 7;
const DNS: u16 = 1 << 8;
const KAFKA: u16 = 1 << 9;

impl ProtocolSet {
    pub(crate) fn compile(field: &'static str, values: &[String]) -> Result<Self, FilterError> {
        let mut bits = 0;
        for value in values {
            bits |= match value.to_ascii_lowercase().as_str() {
                "tcp" => TCP,
                "udp" => UDP,
                "sctp" => SCTP,
                "icmp" => ICMPV4 | ICMPV6,
                "icmpv4" => ICMPV4,
                "icmpv6" => ICMPV6,
                "vrrp" => VRRP,
                "igmp" => IGMP,
                "http" => HTTP,
                "dns" => DNS,
                "kafka" => KAFKA,
                _ => {
                    return Err(FilterError::UnknownProtocol {
                        field,
                        value: value.clone(),
                    })
                }
            };
        }
        Ok(Self(bits))
    }

    pub(crate) fn matches(self, flow: &Flow) -> bool {
        let l4 = match flow.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) {
            Some(layer4::Protocol::Tcp(_)) => TCP,
            Some(layer4::Protocol::Udp(_)) => UDP,
            Some(layer4::Protocol::Sctp(_)) => SCTP,
            Some(layer4::Protocol::IcmPv4(_)) => ICMPV4,
            Some(layer4::Protocol::IcmPv6(_)) => ICMPV6,
            Some(layer4::Protocol::Vrrp(_)) => VRRP,
            Some(layer4::Protocol::Igmp(_)) => IGMP,
            None => 0,
        };
        let l7 = match flow.l7.as_ref().and_then(|l7| l7.record.as_ref()) {
            Some(layer7::Record::Http(_)) => HTTP,
            Some(layer7::Record::Dns(_)) => DNS,
            Some(layer7::Record::Kafka(_)) => KAFKA,
            None => 0,
        };
        self.0 & (l4 | l7) != 0
    }
}

/// Parses port filter values (decimal digits only, 0-65535).
pub(crate) fn compile_ports(
    field: &'static str,
    values: &[String],
) -> Result<Vec<u16>, FilterError> {
    values
        .iter()
        .map(|value| {
            let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
            digits
                .then(|| value.parse::<u16>().ok())
                .flatten()
                .ok_or_else(|| FilterError::InvalidPort {
                    field,
                    value: value.clone(),
                })
        })
        .collect()
}

/// The flow's TCP, UDP or SCTP port on `side`.
fn port(side: Side, flow: &Flow) -> Option<u32> {
    let (src, dst) = match flow.l4.as_ref()?.protocol.as_ref()? {
        layer4::Protocol::Tcp(t) => (t.source_port, t.destination_port),
        layer4::Protocol::Udp(u) => (u.source_port, u.destination_port),
        layer4::Protocol::Sctp(s) => (s.source_port, s.destination_port),
        _ => return None,
    };
    Some(match side {
        Side::Source => src,
        Side::Destination => dst,
    })
}

/// `source_port` / `destination_port`: the flow's port is one of `ports`.
pub(crate) fn port_matches(side: Side, ports: &[u16], flow: &Flow) -> bool {
    port(side, flow).is_some_and(|p| ports.iter().any(|&want| u32::from(want) == p))
}

fn flag_bits(f: &TcpFlags) -> u16 {
    [f.fin, f.syn, f.rst, f.psh, f.ack, f.urg, f.ece, f.cwr, f.ns]
        .iter()
        .enumerate()
        .fold(0, |acc, (i, &set)| if set { acc | (1 << i) } else { acc })
}

/// Compiles `tcp_flags` into one bit set per listed `TCPFlags` message.
pub(crate) fn compile_tcp_flags(filters: &[TcpFlags]) -> Vec<u16> {
    filters.iter().map(flag_bits).collect()
}

/// `tcp_flags`: the flow has TCP flags and, for at least one listed set, every flag of the
/// set is set on the flow (other flags may be set too).
pub(crate) fn tcp_flags_match(wanted: &[u16], flow: &Flow) -> bool {
    let flags = match flow.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) {
        Some(layer4::Protocol::Tcp(tcp)) => match tcp.flags.as_ref() {
            Some(f) => flag_bits(f),
            None => return false,
        },
        _ => return false,
    };
    // Every wanted flag is set: no bit of `w` outside `flags`.
    wanted.iter().any(|&w| w & !flags == 0)
}
