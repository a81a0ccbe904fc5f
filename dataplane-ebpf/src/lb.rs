//! Service load balancing (kube-proxy replacement) for IPv4 TCP/UDP frontends, applied on
//! pod interfaces only (ClusterIP from pods).
//!
//! Leaving a pod (`from_endpoint`), a packet whose destination (address, port, protocol)
//! is in `SERVICES` is DNATed to a backend before policy and conntrack see it, so both
//! apply to the backend (Cilium's semantics). The backend of a new connection is picked
//! at random (`bpf_get_prandom_u32() % count`; Maglev can come later) and remembered in
//! `LB_CT` so every packet of the connection goes to the same backend; `REVNAT` maps the
//! translated connection back to its frontend. Entering the client pod
//! (`to_endpoint`), a reply matching `REVNAT` gets its source rewritten back to the
//! frontend.
//!
//! Failure modes: a frontend without backends **fails closed** (the packet is dropped
//! with `SERVICE_BACKEND_NOT_FOUND`, like Cilium). Anything else that goes wrong (headers
//! that cannot be read, a full LRU, a checksum helper failing) **fails open**: the packet
//! continues untranslated. Frontends are IPv4 only for now; IPv6 and
//! VLAN-tagged pod traffic are not translated.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_RB_FORCE_WAKEUP},
    helpers::bpf_get_prandom_u32,
    macros::map,
    maps::PerCpuArray,
    programs::TcContext,
};
use lumen_abi::{
    drop_reason, ipver, kind, l4_flags, obs, proto, BackendKey, DropRecord, L4Addr, LbTupleKey, PacketInfo,
    PolicyInfo, RecordHeader, ServiceKey, DROP_VERSION,
};

use crate::{count_lost, BACKENDS, EVENTS, LB_CT, REVNAT, SERVICES};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IP_CSUM_OFF: usize = ETH_HLEN + 10;
const IP_SRC_OFF: usize = ETH_HLEN + 12;
const IP_DST_OFF: usize = ETH_HLEN + 16;

/// Per-CPU working space of [`from_endpoint`].
#[repr(C)]
#[derive(Clone, Copy)]
struct LbScratch {
    tuple: LbTupleKey,
    backend: L4Addr,
    frontend: L4Addr,
}

#[map]
static LB_SCRATCH: PerCpuArray<LbScratch> = PerCpuArray::with_max_entries(1, 0);

/// What load balancing did with a packet.
pub enum Lb {
    /// Not a service packet (or not translatable): untouched.
    None,
    /// Translated (destination to a backend, or a reply's source back to the frontend).
    Translated,
    /// The destination is a frontend without backends: drop ([`report_no_backend`]).
    NoBackend,
}

/// Whether `pkt` is something this module translates at all.
#[inline(always)]
fn eligible(pkt: &PacketInfo) -> bool {
    pkt.ip_version == ipver::V4
        && pkt.ethertype == ETH_P_IP
        && pkt.l4_flags & l4_flags::PORTS != 0
        && (pkt.l4_proto == proto::TCP || pkt.l4_proto == proto::UDP)
}

/// Packets leaving a pod: DNAT a frontend to a backend, updating `pkt` to match.
// Not inlined (nor `to_endpoint`, `report_no_backend`): separate stack frames, called one
// after the other, keep the program within the verifier's 512-byte combined stack.
#[inline(never)]
pub fn from_endpoint(ctx: &TcContext, pkt: &mut PacketInfo) -> Lb {
    translate(ctx, pkt)
}

/// Reports a packet to a frontend without backends as dropped (a drop record with
/// `SERVICE_BACKEND_NOT_FOUND` and no policy information).
#[inline(never)]
pub fn report_no_backend(ctx: &TcContext, pkt: &PacketInfo, now: u64) {
    let Some(mut entry) = EVENTS.reserve::<DropRecord>(0) else {
        count_lost();
        return;
    };
    let p = entry.as_mut_ptr();
    // SAFETY: `p` points at a reserved, writable DropRecord in the ring. Written field by
    // field, in place: a whole record on the stack would not fit.
    unsafe {
        (*p).hdr = RecordHeader {
            kind: kind::DROP,
            version: DROP_VERSION,
            obs_point: obs::FROM_ENDPOINT,
            flags: 0,
            ifindex: (*ctx.skb.skb).ifindex,
            len: core::mem::size_of::<DropRecord>() as u16,
            _pad0: 0,
            pkt_len: ctx.len(),
            ktime_ns: now,
        };
        (*p).pkt = *pkt;
        (*p).policy = PolicyInfo {
            endpoint_id: 0,
            local_identity: 0,
            remote_identity: 0,
            rule_ref: 0,
            direction: 0,
            match_type: 0,
            verdict: 0,
            _pad: [0; 5],
        };
        (*p).drop_reason = drop_reason::SERVICE_BACKEND_NOT_FOUND;
        (*p)._pad = [0; 6];
    }
    // Drops are rare: wake the reader now.
    entry.submit(BPF_RB_FORCE_WAKEUP as u64);
}

#[inline(always)]
fn translate(ctx: &TcContext, pkt: &mut PacketInfo) -> Lb {
    if !eligible(pkt) {
        return Lb::None;
    }
    // Keys and values live in a per-CPU scratch slot rather than on the stack: the
    // caller's frame leaves this one little room under the verifier's 512-byte limit.
    let (count, service_id) = {
        let skey = ServiceKey { addr: pkt.dst_ip, port: pkt.dst_port, proto: pkt.l4_proto, _pad: 0 };
        // SAFETY: plain data copied out before any other map operation.
        match unsafe { SERVICES.get(&skey) } {
            Some(v) => (v.count, v.service_id),
            None => return Lb::None,
        }
    };
    if count == 0 {
        return Lb::NoBackend;
    }
    let Some(scratch) = LB_SCRATCH.get_ptr_mut(0) else {
        return Lb::None;
    };
    // SAFETY: this CPU's slot, used by this program run only (tc programs do not nest
    // on a CPU).
    let sc = unsafe { &mut *scratch };
    sc.tuple = LbTupleKey {
        client_ip: pkt.src_ip,
        server_ip: pkt.dst_ip,
        client_port: pkt.src_port,
        server_port: pkt.dst_port,
        proto: pkt.l4_proto,
        _pad: [0; 3],
    };
    // SAFETY: as above.
    match unsafe { LB_CT.get(&sc.tuple) } {
        Some(b) => sc.backend = *b,
        None => {
            let slot = unsafe { bpf_get_prandom_u32() } % count;
            // SAFETY: as above.
            match unsafe { BACKENDS.get(&BackendKey { service_id, slot }) } {
                Some(b) => sc.backend = *b,
                None => return Lb::NoBackend,
            }
            let _ = LB_CT.insert(&sc.tuple, &sc.backend, 0);
            // The same connection after translation, for its replies.
            sc.tuple.server_ip = sc.backend.addr;
            sc.tuple.server_port = sc.backend.port;
            sc.frontend = L4Addr { addr: pkt.dst_ip, port: pkt.dst_port, flags: 0, _pad: 0 };
            let _ = REVNAT.insert(&sc.tuple, &sc.frontend, 0);
        }
    }
    let backend = &sc.backend;
    if rewrite(ctx, pkt.l4_proto, IP_DST_OFF, 2, &pkt.dst_ip, pkt.dst_port, backend).is_err() {
        return Lb::None;
    }
    pkt.dst_ip = backend.addr;
    pkt.dst_port = backend.port;
    Lb::Translated
}

/// Packets entering a pod: a reply from a backend gets the frontend back as its source.
/// `pkt` keeps the backend (conntrack at this interface knows the connection by it).
#[inline(never)]
pub fn to_endpoint(ctx: &TcContext, pkt: &PacketInfo) -> Lb {
    if !eligible(pkt) {
        return Lb::None;
    }
    let rkey = LbTupleKey {
        client_ip: pkt.dst_ip,
        server_ip: pkt.src_ip,
        client_port: pkt.dst_port,
        server_port: pkt.src_port,
        proto: pkt.l4_proto,
        _pad: [0; 3],
    };
    // SAFETY: plain data copied out before any other map operation.
    let Some(fe) = (unsafe { REVNAT.get(&rkey) }).copied() else {
        return Lb::None;
    };
    match rewrite(ctx, pkt.l4_proto, IP_SRC_OFF, 0, &pkt.src_ip, pkt.src_port, &fe) {
        Ok(()) => Lb::Translated,
        Err(()) => Lb::None,
    }
}

/// Replaces the IPv4 address at `ip_off` and the L4 port at `port_rel` (from the L4
/// header's start), fixing the IP and L4 checksums incrementally.
#[inline(always)]
fn rewrite(
    ctx: &TcContext,
    l4_proto: u8,
    ip_off: usize,
    port_rel: usize,
    old_ip: &[u8; 16],
    old_port: u16,
    new: &L4Addr,
) -> Result<(), ()> {
    // The offsets below assume an untagged frame.
    let ethertype: [u8; 2] = ctx.load(12).map_err(|_| ())?;
    if ethertype != ETH_P_IP.to_be_bytes() {
        return Err(());
    }
    let vihl: u8 = ctx.load(ETH_HLEN).map_err(|_| ())?;
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(());
    }
    let l4_off = ETH_HLEN + ihl;
    let (csum_off, udp) = if l4_proto == proto::TCP { (l4_off + 16, false) } else { (l4_off + 6, true) };
    let old_a = [old_ip[0], old_ip[1], old_ip[2], old_ip[3]];
    let new_a = [new.addr[0], new.addr[1], new.addr[2], new.addr[3]];
    // The helpers take the old and new values as they lie in the packet (network order).
    let old_ip32 = u32::from_ne_bytes(old_a) as u64;
    let new_ip32 = u32::from_ne_bytes(new_a) as u64;
    let old_p = u16::from_ne_bytes(old_port.to_be_bytes()) as u64;
    let new_p = u16::from_ne_bytes(new.port.to_be_bytes()) as u64;
    // A UDP checksum of zero means "none" and must stay zero.
    let mangled = if udp { BPF_F_MARK_MANGLED_0 as u64 } else { 0 };
    ctx.l4_csum_replace(csum_off, old_ip32, new_ip32, BPF_F_PSEUDO_HDR as u64 | mangled | 4)
        .map_err(|_| ())?;
    ctx.l4_csum_replace(csum_off, old_p, new_p, mangled | 2).map_err(|_| ())?;
    ctx.l3_csum_replace(IP_CSUM_OFF, old_ip32, new_ip32, 4).map_err(|_| ())?;
    ctx.store(ip_off, &new_a, 0).map_err(|_| ())?;
    ctx.store(l4_off + port_rel, &new.port.to_be_bytes(), 0).map_err(|_| ())?;
    Ok(())
}
