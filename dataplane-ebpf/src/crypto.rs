//! WireGuard hand-off (`encryption.enabled`): pod traffic to another node's pods is
//! redirected from the pod's veth straight into the node's WireGuard device, whose
//! userspace side encrypts it to that node; `encryption.strictMode` drops pod-to-pod
//! traffic that would leave on the uplink in clear instead.
//!
//! Failure modes: the redirect **fails closed** — a packet for a peer's prefix goes to the
//! device or nowhere (a missing device drops it), never out in clear. Strict mode fails
//! closed by design. Neither looks at anything but IPv4 (pod CIDRs here are IPv4).

use aya_ebpf::maps::lpm_trie::Key;
use lumen_abi::{cfg_flags, ipver, DatapathConfig, PacketInfo};

use crate::{CONFIG, WG_PEERS};

/// The WireGuard device to hand this packet to, if encryption is on and its destination
/// is inside a peer's allowed IPs.
#[inline(always)]
pub fn peer_device(pkt: &PacketInfo, flags: u8) -> Option<u32> {
    if flags & cfg_flags::ENCRYPTION == 0 || pkt.ip_version != ipver::V4 {
        return None;
    }
    let dst = [pkt.dst_ip[0], pkt.dst_ip[1], pkt.dst_ip[2], pkt.dst_ip[3]];
    WG_PEERS.get(&Key::new(32, dst)).copied()
}

#[inline(always)]
fn inside(addr: &[u8; 16], cidr: [u8; 4], prefix: u8) -> bool {
    if prefix == 0 || prefix > 32 {
        return false;
    }
    let mask = u32::MAX << (32 - prefix as u32);
    let a = u32::from_be_bytes([addr[0], addr[1], addr[2], addr[3]]);
    a & mask == u32::from_be_bytes(cidr) & mask
}

/// Whether strict mode forbids this packet leaving on the uplink: both ends inside
/// `encryption.strictMode.cidr`.
#[inline(always)]
pub fn strict_violation(pkt: &PacketInfo) -> bool {
    let Some(cfg) = CONFIG.get(0) else {
        return false;
    };
    let cfg: &DatapathConfig = cfg;
    cfg.flags & cfg_flags::STRICT_ENCRYPTION != 0
        && pkt.ip_version == ipver::V4
        && inside(&pkt.src_ip, cfg.strict_cidr, cfg.strict_prefix)
        && inside(&pkt.dst_ip, cfg.strict_cidr, cfg.strict_prefix)
}
