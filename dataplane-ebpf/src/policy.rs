//! Policy decisions for the first packet of a connection at a pod interface.
//!
//! The endpoint is found by ifindex in `ENDPOINTS`; if the packet's direction is not
//! default-deny there, nothing is decided (no verdict, the packet passes). Otherwise the
//! peer's identity comes from `IPCACHE` (longest prefix; world when absent) and `POLICY`
//! is looked up twice, for the peer's identity and for "any peer" (identity 0): a deny
//! from either wins, then an allow (the peer-specific one preferred, it is the more
//! precise attribution); no entry at all is a default deny, or AUDIT in audit mode.
//! IPv6 neighbour/router discovery and MLD are never subject to policy.

use aya_ebpf::maps::lpm_trie::Key;
use lumen_abi::{
    action, direction, ep_flags, ipver, l4_flags, obs, policy_flags, proto, verdict, IpcacheKey, PacketInfo,
    PolicyInfo, PolicyKey, PolicyValue, POLICY_PREFIX_FULL, RULE_REF_NONE,
};

use crate::{ENDPOINTS, IPCACHE, POLICY};

/// Reserved identity of addresses nobody claimed.
const WORLD: u32 = 2;

/// The peer's identity: the ipcache's longest matching prefix, the world otherwise.
#[inline(always)]
fn identity_of(ip_version: u8, addr: &[u8; 16]) -> u32 {
    let key = if ip_version == ipver::V4 {
        let mut a = [0u8; 16];
        a[10] = 0xff;
        a[11] = 0xff;
        a[12] = addr[0];
        a[13] = addr[1];
        a[14] = addr[2];
        a[15] = addr[3];
        Key::new(128, IpcacheKey { addr: a })
    } else {
        Key::new(128, IpcacheKey { addr: *addr })
    };
    match IPCACHE.get(&key) {
        Some(v) => v.identity,
        None => WORLD,
    }
}

/// Strength of an entry when both lookups match: enforced deny, audited deny, allow.
#[inline(always)]
fn rank(v: &PolicyValue) -> u8 {
    if v.action == action::DENY {
        if v.flags & policy_flags::AUDIT != 0 {
            2
        } else {
            3
        }
    } else {
        1
    }
}

/// Decides a new connection's packet at `point`; `None` when nothing is enforced there.
#[inline(always)]
pub fn decide(pkt: &PacketInfo, ifindex: u32, point: u8) -> Option<PolicyInfo> {
    let (dir, enforced, audit, peer) = match point {
        obs::FROM_ENDPOINT => (direction::EGRESS, ep_flags::EGRESS_ENFORCED, ep_flags::EGRESS_AUDIT, &pkt.dst_ip),
        obs::TO_ENDPOINT => (direction::INGRESS, ep_flags::INGRESS_ENFORCED, ep_flags::INGRESS_AUDIT, &pkt.src_ip),
        _ => return None,
    };
    if pkt.l4_proto == proto::ICMPV6 && matches!(pkt.icmp_type, 130..=137 | 143) {
        // Neighbour/router discovery and multicast listener reports keep IPv6 working at
        // all: never subject to policy (as in Cilium).
        return None;
    }
    // SAFETY: the value is plain data copied out before any other map operation.
    let ep = unsafe { ENDPOINTS.get(&ifindex) }.copied()?;
    if ep.flags & enforced == 0 {
        return None;
    }
    let remote = identity_of(pkt.ip_version, peer);
    let has_port = pkt.l4_flags & l4_flags::PORTS != 0
        && matches!(pkt.l4_proto, proto::TCP | proto::UDP | proto::SCTP);
    let port = if has_port { pkt.dst_port } else { 0 };
    let specific = POLICY
        .get(Key::new(
            POLICY_PREFIX_FULL,
            PolicyKey { endpoint_id: ep.endpoint_id, identity: remote, direction: dir, proto: pkt.l4_proto, port_be: port.to_be_bytes() },
        ))
        .copied();
    let any = POLICY
        .get(Key::new(
            POLICY_PREFIX_FULL,
            PolicyKey { endpoint_id: ep.endpoint_id, identity: 0, direction: dir, proto: pkt.l4_proto, port_be: port.to_be_bytes() },
        ))
        .copied();
    let chosen = match (specific, any) {
        (Some(s), Some(a)) => Some(if rank(&a) > rank(&s) { a } else { s }),
        (s, a) => s.or(a),
    };
    let (v, rule_ref, match_type) = match chosen {
        Some(p) if p.action == action::ALLOW => (verdict::ALLOWED, p.rule_ref, p.match_type),
        Some(p) if p.flags & policy_flags::AUDIT != 0 => (verdict::AUDIT, p.rule_ref, p.match_type),
        Some(p) => (verdict::DENIED, p.rule_ref, p.match_type),
        None if ep.flags & audit != 0 => (verdict::AUDIT, RULE_REF_NONE, 0),
        None => (verdict::DENIED, RULE_REF_NONE, 0),
    };
    Some(PolicyInfo {
        endpoint_id: ep.endpoint_id,
        local_identity: ep.identity,
        remote_identity: remote,
        rule_ref,
        direction: dir,
        match_type,
        verdict: v,
        _pad: [0; 5],
    })
}
