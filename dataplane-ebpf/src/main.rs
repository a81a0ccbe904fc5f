//! Lumen's tc programs: parse every packet (bounds-checked, L2 to L4), keep per-interface
//! conntrack with counters, enforce identity-aware policy on pod interfaces, and emit
//! trace, policy-verdict and drop records into the `EVENTS` ring buffer.
//!
//! Failure modes:
//! - Observation **fails open**: whatever goes wrong (truncated packet, full ring, full
//!   conntrack) the packet continues (`TC_ACT_UNSPEC`, "next program / default action").
//! - Policy **fails closed** where it is enforced: on a pod interface whose direction is
//!   default-deny (`ENDPOINTS` flags), the first packet of a connection passes only if a
//!   `POLICY` entry allows it (a peer missing from `IPCACHE` is the world). Interfaces the
//!   agent has not configured are not enforced. Established connections and replies pass
//!   on their conntrack entry, so a policy change applies to new connections.
//! - Service load balancing (see [`lb`]) fails closed for a frontend without backends and
//!   open otherwise. The L2 announcement ARP responder ([`l2`]) fails open.
//! - Encryption ([`crypto`]) fails closed: pod traffic for a WireGuard peer goes into the
//!   tunnel or nowhere, and strict mode drops pod-to-pod traffic leaving in clear.
#![no_std]
#![no_main]

mod crypto;
mod dns;
mod l2;
mod lb;
mod parse;
mod policy;

use aya_ebpf::{
    bindings::{
        BPF_F_NO_COMMON_LRU, BPF_F_NO_PREALLOC, BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, TC_ACT_SHOT,
        TC_ACT_UNSPEC,
    },
    helpers::{bpf_ktime_get_ns, bpf_redirect},
    macros::{classifier, map},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    programs::TcContext,
};
use lumen_abi::{
    aggregation, cfg_flags, AffinityKey, AffinityValue, L2ResponderValue, MaglevTable, ct_flags, drop_reason, hdr_flags, kind, obs, reason, tcp, verdict, BackendKey, CtKey, CtValue,
    DatapathConfig, DropRecord, EndpointValue, IpcacheKey, IpcacheValue, L4Addr, LbTupleKey, PacketInfo, PolicyInfo,
    PolicyKey, PolicyValue, PolicyVerdictRecord, RecordHeader, ServiceKey, ServiceValue, TraceRecord, DROP_VERSION,
    POLICY_VERDICT_VERSION, TRACE_VERSION,
};

/// Default ring size; the agent may resize it before the first load.
const EVENTS_BYTES: u32 = 8 << 20;
/// Above this much unread data a submit wakes the reader; below it the reader's short
/// timer drains the ring, which avoids an inter-processor interrupt per record.
const WAKEUP_THRESHOLD: u64 = 512 << 10;

#[map]
static EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

// Per-CPU LRU lists: the CPUs sending and receiving one stream never share an LRU lock.
#[map]
static CT: LruHashMap<CtKey, CtValue> = LruHashMap::pinned(262_144, BPF_F_NO_COMMON_LRU);

#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::pinned(1, 0);

#[map]
static CONFIG: Array<DatapathConfig> = Array::pinned(1, 0);

/// Address or prefix → identity (IPv4 as IPv4-mapped IPv6). Filled by the agent.
#[map]
static IPCACHE: LpmTrie<IpcacheKey, IpcacheValue> = LpmTrie::pinned(lumen_abi::map_capacity::IPCACHE as u32, 0);

/// Host-side veth ifindex → endpoint id, identity and enforcement. Filled by the agent.
#[map]
static ENDPOINTS: HashMap<u32, EndpointValue> = HashMap::pinned(lumen_abi::map_capacity::ENDPOINTS as u32, 0);

/// (endpoint, peer identity, direction, proto, port prefix) → allow/deny. Filled by the agent.
#[map]
static POLICY: LpmTrie<PolicyKey, PolicyValue> = LpmTrie::pinned(lumen_abi::map_capacity::POLICY as u32, 0);

/// Service frontends (address, port, protocol) → backend count and id. Filled by the agent.
#[map]
static SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::pinned(65_536, 0);

/// (service id, slot) → backend address and port. Filled by the agent.
#[map]
static BACKENDS: HashMap<BackendKey, L4Addr> = HashMap::pinned(262_144, 0);

/// Service connection (client → frontend) → chosen backend: keeps a connection sticky.
#[map]
static LB_CT: LruHashMap<LbTupleKey, L4Addr> = LruHashMap::pinned(262_144, 0);

/// Translated connection (client → backend) → frontend, for replies.
#[map]
static REVNAT: LruHashMap<LbTupleKey, L4Addr> = LruHashMap::pinned(262_144, 0);

/// Service id → Maglev table (`loadBalancer.algorithm: maglev`). Filled by the agent;
/// allocated per entry, not up front (a table is 32 KiB).
#[map]
static MAGLEV: HashMap<u32, MaglevTable> = HashMap::pinned(65_536, BPF_F_NO_PREALLOC);

/// (service id, client address) → backend and last use (`sessionAffinity: ClientIP`).
#[map]
static AFFINITY: LruHashMap<AffinityKey, AffinityValue> = LruHashMap::pinned(262_144, 0);

/// External connection to a remote backend (client → backend) → node address and NAT port.
#[map]
static SNAT_FWD: LruHashMap<LbTupleKey, L4Addr> = LruHashMap::pinned(262_144, 0);

/// Source-NATed connection as its replies see it (node address and NAT port → backend)
/// → the original client.
#[map]
static SNAT_REV: LruHashMap<LbTupleKey, L4Addr> = LruHashMap::pinned(262_144, 0);

/// IPv4 address (network order) → announcing interface and lease expiry (L2 announcements).
/// WireGuard peers' allowed IPv4 prefixes → the WireGuard device's ifindex.
#[map]
static WG_PEERS: LpmTrie<[u8; 4], u32> = LpmTrie::pinned(16_384, 0);

/// The DNS proxy's address and port (one entry). Filled by the agent.
#[map]
static DNS_PROXY: Array<lumen_abi::DnsProxyConfig> = Array::pinned(1, 0);

/// Redirected DNS query (pod → proxy) → the server the pod addressed.
#[map]
static DNS_NAT: LruHashMap<LbTupleKey, L4Addr> = LruHashMap::pinned(lumen_abi::DNS_NAT_CAPACITY, 0);

#[map]
static L2_RESPONDER: HashMap<[u8; 4], L2ResponderValue> = HashMap::pinned(65_536, 0);

/// tc ingress on a pod's host-side veth: packets leaving the pod.
#[classifier]
pub fn from_endpoint(ctx: TcContext) -> i32 {
    observe(&ctx, obs::FROM_ENDPOINT)
}

/// tc egress on a pod's host-side veth: packets entering the pod.
#[classifier]
pub fn to_endpoint(ctx: TcContext) -> i32 {
    observe(&ctx, obs::TO_ENDPOINT)
}

/// tc ingress on the node uplink: packets from the network.
#[classifier]
pub fn from_network(ctx: TcContext) -> i32 {
    observe(&ctx, obs::FROM_NETWORK)
}

/// tc egress on the node uplink: packets to the network.
#[classifier]
pub fn to_network(ctx: TcContext) -> i32 {
    observe(&ctx, obs::TO_NETWORK)
}

/// tc ingress on the WireGuard device: packets other nodes sent through the tunnel,
/// decrypted (an L3 device: no Ethernet header).
#[classifier]
pub fn from_crypto(ctx: TcContext) -> i32 {
    observe(&ctx, obs::FROM_CRYPTO)
}

// Parsing and load balancing happen here, conntrack, policy and records in
// `try_observe`: two sibling calls, so their stack frames never add up beyond the
// verifier's 512 bytes.
#[inline(always)]
fn observe(ctx: &TcContext, point: u8) -> i32 {
    let mut pkt = PacketInfo::zeroed();
    let mut flags = 0u8;
    if parse::packet(ctx, &mut pkt, point == obs::FROM_CRYPTO).is_err() {
        flags |= hdr_flags::TRUNCATED;
    }
    let nat = CONFIG.get(0).map(|c| lb::Nat {
        node_ipv4: c.node_ipv4,
        native_cidr: c.native_cidr,
        native_prefix: c.native_prefix,
        flags: c.flags,
    });
    let nat = nat.unwrap_or(lb::Nat::NONE);
    // Before policy and conntrack, so both see the backend. Nothing to translate (no
    // services, no masquerading): no lookups at all.
    let services = nat.flags & cfg_flags::SERVICES != 0;
    let any_nat = nat.flags & (cfg_flags::SERVICES | cfg_flags::MASQUERADE) != 0;
    let translated = match point {
        obs::FROM_ENDPOINT if services => lb::from_endpoint(ctx, &mut pkt),
        obs::TO_ENDPOINT => {
            // The proxy's answer gets the server back as source before anything sees it.
            dns::restore(ctx, &mut pkt);
            if services {
                lb::to_endpoint(ctx, &pkt)
            } else {
                lb::Lb::None
            }
        }
        obs::FROM_NETWORK => {
            if l2::is_arp(pkt.ethertype) {
                if let Some(action) = l2::respond(ctx) {
                    return action;
                }
            }
            if any_nat {
                lb::from_network(ctx, &mut pkt, &nat)
            } else {
                lb::Lb::None
            }
        }
        obs::TO_NETWORK if any_nat => lb::to_network(ctx, &mut pkt, &nat),
        _ => lb::Lb::None,
    };
    match translated {
        lb::Lb::None => {}
        lb::Lb::Translated => flags |= hdr_flags::TRANSLATED,
        lb::Lb::NewConnection => {
            flags |= hdr_flags::TRANSLATED;
            lb::report_translation(ctx, &pkt, point);
        }
        lb::Lb::NoBackend => {
            lb::report_drop(ctx, &pkt, point, drop_reason::SERVICE_BACKEND_NOT_FOUND);
            return TC_ACT_SHOT as i32;
        }
    }
    // After translation: a service's backend on another node is a peer's address.
    match point {
        obs::FROM_ENDPOINT => {
            if let Some(wg) = crypto::peer_device(&pkt, nat.flags) {
                let action = track(ctx, point, &pkt, flags | hdr_flags::ENCRYPTED);
                if action == TC_ACT_SHOT as i32 {
                    return action;
                }
                // SAFETY: a helper call; an ifindex that no longer exists drops the packet.
                return unsafe { bpf_redirect(wg, 0) } as i32;
            }
        }
        obs::FROM_CRYPTO => flags |= hdr_flags::ENCRYPTED,
        obs::TO_NETWORK if nat.flags & cfg_flags::STRICT_ENCRYPTION != 0 => {
            if crypto::strict_violation(&pkt) {
                lb::report_drop(ctx, &pkt, point, drop_reason::UNENCRYPTED_TRAFFIC);
                return TC_ACT_SHOT as i32;
            }
        }
        _ => {}
    }
    let action = track(ctx, point, &pkt, flags);
    if point == obs::FROM_ENDPOINT && action != TC_ACT_SHOT as i32 {
        // After policy and conntrack decided on the query as the pod sent it.
        // SAFETY: the context's skb pointer is valid for the program's run.
        dns::redirect(ctx, &pkt, unsafe { (*ctx.skb.skb).ifindex });
    }
    action
}

#[inline(never)]
fn track(ctx: &TcContext, point: u8, pkt: &PacketInfo, flags: u8) -> i32 {
    match try_observe(ctx, point, pkt, flags) {
        Ok(action) => action,
        // Observation failed (e.g. full ring): fail open.
        Err(()) => TC_ACT_UNSPEC,
    }
}

/// What conntrack says about one packet.
struct CtResult {
    reason: u8,
    flags: u8,
    report: bool,
    packets: u64,
    bytes: u64,
}

#[inline(always)]
fn try_observe(ctx: &TcContext, point: u8, pkt: &PacketInfo, flags: u8) -> Result<i32, ()> {
    let now = unsafe { bpf_ktime_get_ns() };
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let pkt_len = ctx.len();
    let pkt = *pkt;
    let cfg = CONFIG.get(0).copied().unwrap_or(DatapathConfig {
        aggregation: aggregation::MEDIUM,
        node_ipv4: [0; 4],
        aggregation_interval_ns: 5_000_000_000,
        native_cidr: [0; 4],
        native_prefix: 0,
        flags: 0,
        _pad: [0; 2],
        strict_cidr: [0; 4],
        strict_prefix: 0,
        _pad2: [0; 3],
    });

    let hdr = |kind: u8, version: u8, len: usize, flags: u8| RecordHeader {
        kind,
        version,
        obs_point: point,
        flags,
        ifindex,
        len: len as u16,
        _pad0: 0,
        pkt_len,
        ktime_ns: now,
    };
    let ct = if pkt.ip_version != 0 {
        match conntrack(&pkt, ifindex, pkt_len, now, &cfg, point) {
            Tracked::Pass(ct) => ct,
            Tracked::Denied(pol) => {
                let rsn = if pol.rule_ref == lumen_abi::RULE_REF_NONE {
                    drop_reason::POLICY_DENIED
                } else {
                    drop_reason::POLICY_DENY
                };
                let _ = emit(&PolicyVerdictRecord {
                    hdr: hdr(kind::POLICY_VERDICT, POLICY_VERDICT_VERSION, core::mem::size_of::<PolicyVerdictRecord>(), flags | hdr_flags::REPLY_KNOWN),
                    pkt,
                    policy: pol,
                });
                let _ = emit(&DropRecord {
                    hdr: hdr(kind::DROP, DROP_VERSION, core::mem::size_of::<DropRecord>(), flags | hdr_flags::REPLY_KNOWN),
                    pkt,
                    policy: pol,
                    drop_reason: rsn,
                    _pad: [0; 6],
                });
                return Ok(TC_ACT_SHOT as i32);
            }
            Tracked::Decided(pol, ct) => {
                let _ = emit(&PolicyVerdictRecord {
                    hdr: hdr(kind::POLICY_VERDICT, POLICY_VERDICT_VERSION, core::mem::size_of::<PolicyVerdictRecord>(), flags | hdr_flags::REPLY_KNOWN),
                    pkt,
                    policy: pol,
                });
                ct
            }
        }
    } else {
        // Not IP: nothing to track or enforce; rare enough to always report.
        CtResult { reason: reason::UNKNOWN, flags: 0, report: true, packets: 0, bytes: 0 }
    };
    if !ct.report {
        return Ok(TC_ACT_UNSPEC);
    }
    // Traffic handed to the tunnel is reported where it goes, not where it came from.
    let trace_point = if point == obs::FROM_ENDPOINT && flags & hdr_flags::ENCRYPTED != 0 { obs::TO_CRYPTO } else { point };
    emit(&TraceRecord {
        hdr: RecordHeader {
            kind: kind::TRACE,
            version: TRACE_VERSION,
            obs_point: trace_point,
            flags: flags | ct.flags,
            ifindex,
            len: core::mem::size_of::<TraceRecord>() as u16,
            _pad0: 0,
            pkt_len,
            ktime_ns: now,
        },
        pkt,
        reason: ct.reason,
        _pad: [0; 7],
        ct_packets: ct.packets,
        ct_bytes: ct.bytes,
    })?;
    Ok(TC_ACT_UNSPEC)
}

/// Writes a record, counting it as lost (per CPU) when the ring is full.
#[inline(always)]
fn emit<T: Copy + 'static>(rec: &T) -> Result<(), ()> {
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(*rec);
            let avail = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
            let wake = if avail >= WAKEUP_THRESHOLD { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
            entry.submit(wake as u64);
            Ok(())
        }
        None => {
            count_lost();
            Err(())
        }
    }
}

/// Counts a record the ring had no room for (per CPU).
#[inline(always)]
pub(crate) fn count_lost() {
    if let Some(lost) = LOST.get_ptr_mut(0) {
        // Per-CPU slot: no other CPU writes it.
        unsafe { *lost += 1 };
    }
}

/// What conntrack and, for a new connection at an enforcing endpoint, policy decided.
enum Tracked {
    /// No policy evaluated (tracked connection, or nothing enforced here).
    Pass(CtResult),
    /// Policy evaluated for a new connection, and the packet passes (allowed or audited).
    Decided(PolicyInfo, CtResult),
    /// Policy denied a new connection: drop it, track nothing.
    Denied(PolicyInfo),
}

#[inline(always)]
fn conntrack(pkt: &PacketInfo, ifindex: u32, pkt_len: u32, now: u64, cfg: &DatapathConfig, point: u8) -> Tracked {
    // One lookup serves both directions: the key puts the lower (address, port) first.
    // Any total order does; native byte order avoids byte swaps.
    let lower_first =
        (u128::from_ne_bytes(pkt.src_ip), pkt.src_port) <= (u128::from_ne_bytes(pkt.dst_ip), pkt.dst_port);
    let key = if lower_first {
        CtKey {
            src_ip: pkt.src_ip,
            dst_ip: pkt.dst_ip,
            src_port: pkt.src_port,
            dst_port: pkt.dst_port,
            ifindex,
            proto: pkt.l4_proto,
            _pad: [0; 3],
        }
    } else {
        CtKey {
            src_ip: pkt.dst_ip,
            dst_ip: pkt.src_ip,
            src_port: pkt.dst_port,
            dst_port: pkt.src_port,
            ifindex,
            proto: pkt.l4_proto,
            _pad: [0; 3],
        }
    };
    let known = hdr_flags::REPLY_KNOWN;
    let Some(entry) = CT.get_ptr_mut(&key) else {
        // A new connection: the endpoint's policy decides before anything is tracked, so
        // a denied one is evaluated (and reported) again on every retry.
        let decision = policy::decide(pkt, ifindex, point);
        if let Some(pol) = &decision {
            if pol.verdict == verdict::DENIED {
                return Tracked::Denied(*pol);
            }
        }
        let fresh = CtValue {
            packets: [1, 0],
            bytes: [pkt_len as u64, 0],
            first_seen_ns: now,
            last_seen_ns: now,
            last_report_ns: [now, 0],
            tcp_flags_seen: [pkt.tcp_flags, 0],
            flags: if lower_first { ct_flags::OPENED_BY_LOWER } else { 0 },
            _pad: [0; 3],
        };
        // Another CPU may have created it a moment ago: then this packet is merely
        // not counted in the new entry, and is still reported as the first one.
        let _ = CT.insert(&key, &fresh, BPF_NOEXIST as u64);
        let ct = CtResult { reason: reason::NEW, flags: known, report: true, packets: 1, bytes: pkt_len as u64 };
        return match decision {
            Some(pol) => Tracked::Decided(pol, ct),
            None => Tracked::Pass(ct),
        };
    };

    // SAFETY: the pointer comes from a successful lookup of this LRU map and stays valid
    // for the program's run.
    let v = unsafe { &mut *entry };
    let opened_by_lower = v.flags & ct_flags::OPENED_BY_LOWER != 0;
    let dir = if lower_first == opened_by_lower { 0usize } else { 1usize };
    // Plain increments: one connection's packets at one interface are processed on one
    // CPU at a time in practice (veth and RSS keep a flow on a queue), and the BPF target
    // offers no 64-bit fetch-add to Rust; a rare lost increment only skews a counter.
    v.packets[dir] += 1;
    v.bytes[dir] += pkt_len as u64;
    v.last_seen_ns = now;
    let seen = v.tcp_flags_seen[dir];
    let new_flags = pkt.tcp_flags & !seen;
    let mut rsn = if dir == 0 { reason::ESTABLISHED } else { reason::REPLY };
    let syn_only = pkt.tcp_flags & (tcp::SYN | tcp::ACK) == tcp::SYN;
    if dir == 0 && syn_only && (seen | v.tcp_flags_seen[1]) & (tcp::FIN | tcp::RST) != 0 {
        // A fresh SYN on a closed connection: the 5-tuple is being reused by a new
        // connection, which policy decides like any other.
        let decision = policy::decide(pkt, ifindex, point);
        if let Some(pol) = &decision {
            if pol.verdict == verdict::DENIED {
                let _ = CT.remove(&key);
                return Tracked::Denied(*pol);
            }
        }
        rsn = reason::REOPENED;
        v.tcp_flags_seen = [pkt.tcp_flags, 0];
        v.last_report_ns = [now, 0];
        v.first_seen_ns = now;
        v.packets = [1, 0];
        v.bytes = [pkt_len as u64, 0];
        let ct = CtResult { reason: rsn, flags: known, report: true, packets: 1, bytes: pkt_len as u64 };
        return match decision {
            Some(pol) => Tracked::Decided(pol, ct),
            None => Tracked::Pass(ct),
        };
    }
    v.tcp_flags_seen[dir] = seen | pkt.tcp_flags;
    let report = cfg.aggregation == aggregation::NONE
        || new_flags != 0
        || now.wrapping_sub(v.last_report_ns[dir]) >= cfg.aggregation_interval_ns;
    if report {
        v.last_report_ns[dir] = now;
    }
    let flags = if dir == 1 { known | hdr_flags::IS_REPLY } else { known };
    Tracked::Pass(CtResult {
        reason: rsn,
        flags,
        report,
        packets: v.packets[0] + v.packets[1],
        bytes: v.bytes[0] + v.bytes[1],
    })
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual BSD/GPL\0";
