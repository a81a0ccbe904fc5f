//! Service load balancing (kube-proxy replacement) for IPv4 TCP/UDP frontends.
//!
//! Where it runs, like netfilter's DNAT-before-routing and SNAT-after-routing:
//! - Leaving a pod (`from_endpoint`): a packet to any frontend in `SERVICES` is DNATed to
//!   a backend before policy and conntrack see it, so both apply to the backend (Cilium's
//!   semantics).
//! - Arriving on the uplink (`from_network`): a packet to an external frontend (NodePort,
//!   LoadBalancer, external IP: [`svc_flags::EXTERNAL`]) is DNATed the same way; a reply
//!   to a source-NATed connection gets its destination back (`SNAT_REV`).
//! - Leaving on the uplink (`to_network`): a connection from outside to a backend on
//!   another node under `externalTrafficPolicy: Cluster` is source-NATed to this node
//!   (`SNAT_FWD`) so the reply returns here; a reply from a backend to an outside client
//!   gets the frontend back as its source (`REVNAT`); with `bpf.masquerade`, pod traffic
//!   leaving the native routing CIDR is source-NATed to the node the same way.
//! - Entering a pod (`to_endpoint`): a reply to a pod's service connection gets the
//!   frontend back as its source (`REVNAT`).
//!
//! Rewriting only destinations on the way in and only sources on the way out keeps the
//! kernel's routing and source validation between the two halves happy (a packet never
//! enters the stack with this node's address as its source).
//!
//! Backend choice for a new connection (remembered in `LB_CT`, so every packet of the
//! connection goes to the same backend): the client's previous backend under session
//! affinity, else the service's Maglev table at [`five_tuple_hash`] (the same backend on
//! every node), else `bpf_get_prandom_u32() % count`. Each new connection's translation
//! is reported (a trace-sock record, verdict TRANSLATED in Hubble).
//!
//! Failure modes: a frontend without backends **fails closed** (the packet is dropped
//! with `SERVICE_BACKEND_NOT_FOUND`, like Cilium). Anything else that goes wrong (headers
//! that cannot be read, a full LRU, a checksum helper failing) **fails open**: the packet
//! continues untranslated. IPv6 and VLAN-tagged traffic are not translated.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_NOEXIST, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns},
    macros::map,
    maps::PerCpuArray,
    programs::TcContext,
};
use lumen_abi::{
    backend_flags, cfg_flags, five_tuple_hash, ipver, kind, l4_flags, proto, svc_flags, tcp, AffinityKey,
    AffinityValue, BackendKey, DropRecord, L4Addr, LbTupleKey, PacketInfo, PolicyInfo, RecordHeader, ServiceKey,
    ServiceValue, TranslationRecord, DROP_VERSION, MAGLEV_TABLE_SIZE, TRANSLATION_VERSION, xlate_point,
};

use crate::{count_lost, AFFINITY, BACKENDS, EVENTS, LB_CT, MAGLEV, REVNAT, SERVICES, SNAT_FWD, SNAT_REV};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IP_CSUM_OFF: usize = ETH_HLEN + 10;
const IP_SRC_OFF: usize = ETH_HLEN + 12;
const IP_DST_OFF: usize = ETH_HLEN + 16;
/// Offsets of the source and destination port from the L4 header's start.
const SRC_PORT: usize = 0;
const DST_PORT: usize = 2;
/// Source-NAT ports: the kernel's default ephemeral range, a few random tries.
const NAT_PORT_MIN: u32 = 32768;
const NAT_PORT_SPAN: u32 = 61000 - 32768;
const NAT_PORT_TRIES: u32 = 8;

/// Per-CPU working space of [`translate`].
#[repr(C)]
#[derive(Clone, Copy)]
struct LbScratch {
    tuple: LbTupleKey,
    nat_key: LbTupleKey,
    backend: L4Addr,
    frontend: L4Addr,
    nat: L4Addr,
    affinity_key: AffinityKey,
    affinity: AffinityValue,
    svc: ServiceValue,
    skey: ServiceKey,
    /// The frontend of the newest connection (for [`report_translation`]).
    orig: L4Addr,
}

#[map]
static LB_SCRATCH: PerCpuArray<LbScratch> = PerCpuArray::with_max_entries(1, 0);

/// What load balancing did with a packet.
pub enum Lb {
    /// Not a service packet (or not translatable): untouched.
    None,
    /// Translated (destination to a backend, or a reply's source back to the frontend).
    Translated,
    /// A new connection translated to a backend: report it ([`report_translation`]).
    NewConnection,
    /// The destination is a frontend without backends: drop ([`report_drop`]).
    NoBackend,
}

/// The address-translation part of the datapath configuration.
#[derive(Clone, Copy)]
pub struct Nat {
    /// This node's uplink address (zero: unknown).
    pub node_ipv4: [u8; 4],
    /// `ipv4NativeRoutingCIDR` and its prefix length (0: none).
    pub native_cidr: [u8; 4],
    /// Prefix length of `native_cidr`.
    pub native_prefix: u8,
    /// `cfg_flags`.
    pub flags: u8,
}

impl Nat {
    /// Nothing configured: no source NAT, no masquerading.
    pub const NONE: Nat = Nat { node_ipv4: [0; 4], native_cidr: [0; 4], native_prefix: 0, flags: 0 };

    /// Whether IPv4 `addr` is inside the native routing CIDR.
    #[inline(always)]
    fn native(&self, addr: &[u8; 16]) -> bool {
        if self.native_prefix == 0 || self.native_prefix > 32 {
            return false;
        }
        let mask = u32::MAX << (32 - self.native_prefix as u32);
        let a = u32::from_be_bytes([addr[0], addr[1], addr[2], addr[3]]);
        a & mask == u32::from_be_bytes(self.native_cidr) & mask
    }

    /// Whether a packet from `src` to `dst` leaving on the uplink is masqueraded: a pod
    /// (inside the native CIDR) talking to an address outside it.
    #[inline(always)]
    fn masquerades(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        self.flags & cfg_flags::MASQUERADE != 0
            && self.node_ipv4 != [0; 4]
            && self.native(src)
            && !self.native(dst)
    }
}

/// `pkt`'s connection as the client sees it (the client is the source).
#[inline(always)]
fn forward_key(pkt: &PacketInfo) -> LbTupleKey {
    LbTupleKey {
        client_ip: pkt.src_ip,
        server_ip: pkt.dst_ip,
        client_port: pkt.src_port,
        server_port: pkt.dst_port,
        proto: pkt.l4_proto,
        _pad: [0; 3],
    }
}

/// The connection a reply `pkt` belongs to (the client is the destination).
#[inline(always)]
fn reply_key(pkt: &PacketInfo) -> LbTupleKey {
    LbTupleKey {
        client_ip: pkt.dst_ip,
        server_ip: pkt.src_ip,
        client_port: pkt.dst_port,
        server_port: pkt.src_port,
        proto: pkt.l4_proto,
        _pad: [0; 3],
    }
}

/// Rewrites the packet's source to `to` (and `pkt` with it).
#[inline(always)]
fn set_src(ctx: &TcContext, pkt: &mut PacketInfo, to: &L4Addr) -> Lb {
    if rewrite(ctx, pkt.l4_proto, IP_SRC_OFF, SRC_PORT, &pkt.src_ip, pkt.src_port, to).is_err() {
        return Lb::None;
    }
    pkt.src_ip = to.addr;
    pkt.src_port = to.port;
    Lb::Translated
}

/// Rewrites the packet's destination to `to` (and `pkt` with it).
#[inline(always)]
fn set_dst(ctx: &TcContext, pkt: &mut PacketInfo, to: &L4Addr) -> Lb {
    if rewrite(ctx, pkt.l4_proto, IP_DST_OFF, DST_PORT, &pkt.dst_ip, pkt.dst_port, to).is_err() {
        return Lb::None;
    }
    pkt.dst_ip = to.addr;
    pkt.dst_port = to.port;
    Lb::Translated
}

/// Whether `pkt` is something this module translates at all.
#[inline(always)]
fn eligible(pkt: &PacketInfo) -> bool {
    pkt.ip_version == ipver::V4
        && pkt.ethertype == ETH_P_IP
        && pkt.l4_flags & l4_flags::PORTS != 0
        && (pkt.l4_proto == proto::TCP || pkt.l4_proto == proto::UDP)
}

#[inline(always)]
fn scratch() -> Option<&'static mut LbScratch> {
    let p = LB_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot, used by this program run only (tc programs do not nest on
    // a CPU).
    Some(unsafe { &mut *p })
}

/// Packets leaving a pod: DNAT a frontend to a backend, updating `pkt` to match.
// Not inlined (nor the other entry points here): separate stack frames, called one after
// the other, keep each program within the verifier's 512-byte combined stack.
#[inline(never)]
pub fn from_endpoint(ctx: &TcContext, pkt: &mut PacketInfo) -> Lb {
    if !eligible(pkt) {
        return Lb::None;
    }
    translate(ctx, pkt, 0, &[0; 4])
}

/// Packets arriving on the uplink: the reply to a source-NATed connection gets its
/// client back as destination; a packet to an external frontend is DNATed.
#[inline(never)]
pub fn from_network(ctx: &TcContext, pkt: &mut PacketInfo, nat: &Nat) -> Lb {
    if !eligible(pkt) {
        return Lb::None;
    }
    let node_ip = &nat.node_ipv4;
    let to_node = node_ip != &[0; 4] && pkt.dst_ip[..4] == node_ip[..];
    if to_node {
        let Some(sc) = scratch() else {
            return Lb::None;
        };
        sc.nat_key = reply_key(pkt);
        // SAFETY: plain data copied out before any other map operation.
        if let Some(client) = unsafe { SNAT_REV.get(&sc.nat_key) }.copied() {
            return set_dst(ctx, pkt, &client);
        }
    }
    if nat.flags & cfg_flags::SERVICES == 0 {
        return Lb::None;
    }
    translate(ctx, pkt, svc_flags::EXTERNAL, node_ip)
}

/// Packets leaving on the uplink: source NAT of connections to remote backends, the
/// frontend as the source of replies to outside clients, and masquerading (`bpf.masquerade`)
/// of pod traffic leaving the native routing CIDR.
#[inline(never)]
pub fn to_network(ctx: &TcContext, pkt: &mut PacketInfo, nat: &Nat) -> Lb {
    if !eligible(pkt) {
        return Lb::None;
    }
    let Some(sc) = scratch() else {
        return Lb::None;
    };
    sc.tuple = forward_key(pkt);
    // SAFETY: plain data copied out before any other map operation.
    if let Some(nat) = unsafe { SNAT_FWD.get(&sc.tuple) }.copied() {
        return set_src(ctx, pkt, &nat);
    }
    if nat.flags & cfg_flags::SERVICES != 0 {
        if let Some(fe) = reverse(ctx, pkt) {
            pkt.src_ip = fe.addr;
            pkt.src_port = fe.port;
            return Lb::Translated;
        }
    }
    if !nat.masquerades(&pkt.src_ip, &pkt.dst_ip) {
        return Lb::None;
    }
    // A new masqueraded connection: a port on the node's address, found again by the
    // forward lookup above from now on, and by `from_network` for the replies.
    let Some(sc) = scratch() else {
        return Lb::None;
    };
    sc.tuple = forward_key(pkt);
    snat(sc, &nat.node_ipv4);
    // SAFETY: plain data copied out before any other map operation.
    match unsafe { SNAT_FWD.get(&sc.tuple) }.copied() {
        Some(out) => set_src(ctx, pkt, &out),
        None => Lb::None,
    }
}

/// Packets entering a pod: a reply from a backend gets the frontend back as its source.
/// `pkt` keeps the backend (conntrack at this interface knows the connection by it).
#[inline(never)]
pub fn to_endpoint(ctx: &TcContext, pkt: &PacketInfo) -> Lb {
    if !eligible(pkt) {
        return Lb::None;
    }
    match reverse(ctx, pkt) {
        Some(_) => Lb::Translated,
        None => Lb::None,
    }
}

/// Rewrites a reply's source (a backend) back to the frontend its client used; returns
/// the frontend when it did.
#[inline(always)]
fn reverse(ctx: &TcContext, pkt: &PacketInfo) -> Option<L4Addr> {
    let sc = scratch()?;
    sc.tuple = reply_key(pkt);
    // SAFETY: plain data copied out before any other map operation.
    let fe = unsafe { REVNAT.get(&sc.tuple) }.copied()?;
    rewrite(ctx, pkt.l4_proto, IP_SRC_OFF, SRC_PORT, &pkt.src_ip, pkt.src_port, &fe).ok()?;
    Some(fe)
}

/// The header of a record of type `R` about the packet in `ctx`.
#[inline(always)]
fn header<R>(ctx: &TcContext, kind: u8, version: u8, point: u8, now: u64) -> RecordHeader {
    RecordHeader {
        kind,
        version,
        obs_point: point,
        flags: 0,
        // SAFETY: the context's skb pointer is valid for the program's run.
        ifindex: unsafe { (*ctx.skb.skb).ifindex },
        len: core::mem::size_of::<R>() as u16,
        _pad0: 0,
        pkt_len: ctx.len(),
        ktime_ns: now,
    }
}

/// Reports a packet as dropped for `reason` (a drop record without policy information):
/// a frontend without backends (`SERVICE_BACKEND_NOT_FOUND`), unencrypted pod traffic
/// under strict encryption (`UNENCRYPTED_TRAFFIC`).
#[inline(never)]
pub fn report_drop(ctx: &TcContext, pkt: &PacketInfo, point: u8, reason: u16) {
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(mut entry) = EVENTS.reserve::<DropRecord>(0) else {
        count_lost();
        return;
    };
    let p = entry.as_mut_ptr();
    // SAFETY: `p` points at a reserved, writable DropRecord in the ring. Written field by
    // field, in place: a whole record on the stack would not fit.
    unsafe {
        (*p).hdr = header::<DropRecord>(ctx, kind::DROP, DROP_VERSION, point, now);
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
        (*p).drop_reason = reason;
        (*p)._pad = [0; 6];
    }
    // Drops are rare: wake the reader now.
    entry.submit(BPF_RB_FORCE_WAKEUP as u64);
}

/// DNATs a packet to a frontend (with all of `required` in its flags) to a backend.
/// `node_ip` is the source-NAT address (zero: no source NAT).
#[inline(always)]
fn translate(ctx: &TcContext, pkt: &mut PacketInfo, required: u32, node_ip: &[u8; 4]) -> Lb {
    let Some(sc) = scratch() else {
        return Lb::None;
    };
    // Keys and values live in the per-CPU scratch slot rather than on the stack: the
    // caller's frame leaves this one little room under the verifier's 512-byte limit.
    // A TCP SYN opens a connection: whatever an earlier connection with the same
    // addresses and ports left in `REVNAT` must not apply to this one.
    let syn = pkt.l4_proto == proto::TCP && pkt.tcp_flags & (tcp::SYN | tcp::ACK) == tcp::SYN;
    sc.tuple = forward_key(pkt);
    {
        sc.skey = ServiceKey { addr: pkt.dst_ip, port: pkt.dst_port, proto: pkt.l4_proto, _pad: 0 };
        // SAFETY: plain data copied out before any other map operation.
        match unsafe { SERVICES.get(&sc.skey) } {
            Some(v) => sc.svc = *v,
            None => {
                // A direct connection (not to a service): its replies must not be
                // rewritten by a translated connection that used the same ports before.
                if syn {
                    let _ = REVNAT.remove(&sc.tuple);
                }
                return Lb::None;
            }
        }
    }
    if sc.svc.flags & required != required {
        return Lb::None;
    }
    if sc.svc.count == 0 {
        return Lb::NoBackend;
    }
    let mut new = syn;
    // SAFETY: as above.
    match unsafe { LB_CT.get(&sc.tuple) } {
        Some(b) => sc.backend = *b,
        None => {
            new = true;
            if !select(sc) {
                return Lb::NoBackend;
            }
            let _ = LB_CT.insert(&sc.tuple, &sc.backend, 0);
        }
    }
    if new {
        // The same connection after translation, for its replies (rewritten on a reused
        // tuple too: it may have been another frontend of the same backend).
        sc.frontend = L4Addr { addr: pkt.dst_ip, port: pkt.dst_port, flags: 0, _pad: 0 };
        sc.orig = sc.frontend;
        sc.tuple.server_ip = sc.backend.addr;
        sc.tuple.server_port = sc.backend.port;
        let _ = REVNAT.insert(&sc.tuple, &sc.frontend, 0);
        if sc.svc.flags & svc_flags::SNAT_REMOTE != 0
            && sc.backend.flags & backend_flags::REMOTE != 0
            && node_ip != &[0; 4]
        {
            snat(sc, node_ip);
        }
    }
    let backend = sc.backend;
    if rewrite(ctx, pkt.l4_proto, IP_DST_OFF, DST_PORT, &pkt.dst_ip, pkt.dst_port, &backend).is_err() {
        return Lb::None;
    }
    pkt.dst_ip = backend.addr;
    pkt.dst_port = backend.port;
    if new {
        Lb::NewConnection
    } else {
        Lb::Translated
    }
}

/// Reports the translation of a new connection: `pkt` after it, and the frontend.
#[inline(never)]
pub fn report_translation(ctx: &TcContext, pkt: &PacketInfo, point: u8) {
    let Some(sc) = scratch() else {
        return;
    };
    let Some(mut entry) = EVENTS.reserve::<TranslationRecord>(0) else {
        count_lost();
        return;
    };
    let p = entry.as_mut_ptr();
    // SAFETY: `p` points at a reserved, writable record in the ring, written in place.
    unsafe {
        (*p).hdr = header::<TranslationRecord>(
            ctx,
            kind::TRANSLATION,
            TRANSLATION_VERSION,
            point,
            bpf_ktime_get_ns(),
        );
        (*p).pkt = *pkt;
        (*p).frontend = sc.orig;
        (*p).xlate_point = xlate_point::POST_DIRECTION_FWD;
        (*p)._pad = [0; 3];
    }
    // As common as new connections: leave waking to the reader's timer (and the trace
    // record of the same packet).
    entry.submit(BPF_RB_NO_WAKEUP as u64);
}

/// Picks the backend of a new connection (`sc.tuple`, `sc.svc`) into `sc.backend`.
#[inline(always)]
fn select(sc: &mut LbScratch) -> bool {
    let service_id = sc.svc.service_id;
    let affinity = sc.svc.flags & svc_flags::AFFINITY != 0;
    let now = unsafe { bpf_ktime_get_ns() };
    if affinity {
        sc.affinity_key = AffinityKey { service_id, client_ip: sc.tuple.client_ip };
        if let Some(v) = AFFINITY.get_ptr_mut(&sc.affinity_key) {
            // SAFETY: a pointer from a successful lookup, valid for this run.
            let v = unsafe { &mut *v };
            let timeout_ns = sc.svc.affinity_timeout_s as u64 * 1_000_000_000;
            if now.wrapping_sub(v.last_used_ns) <= timeout_ns {
                v.last_used_ns = now;
                sc.backend = v.backend;
                return true;
            }
        }
    }
    let count = sc.svc.count;
    // Checked by the caller; repeated so the division below has no panic path.
    if count == 0 {
        return false;
    }
    let slot = if sc.svc.flags & svc_flags::MAGLEV != 0 {
        let t = &sc.tuple;
        let src = [t.client_ip[0], t.client_ip[1], t.client_ip[2], t.client_ip[3]];
        let dst = [t.server_ip[0], t.server_ip[1], t.server_ip[2], t.server_ip[3]];
        let h = five_tuple_hash(&src, &dst, t.client_port, t.server_port, t.proto);
        let bucket = h % MAGLEV_TABLE_SIZE as u32;
        // The compiler knows `bucket` is in range and would drop the check below; the
        // verifier does not, so launder the value to keep the check in the program.
        // SAFETY: a read of a local.
        let idx = unsafe { core::ptr::read_volatile(&bucket) } as usize;
        // SAFETY: plain data read before any other map operation.
        match unsafe { MAGLEV.get(&service_id) } {
            Some(table) if idx < MAGLEV_TABLE_SIZE => table.slots[idx] as u32,
            // No table (yet): random, rather than failing the connection.
            _ => (unsafe { bpf_get_prandom_u32() }) % count,
        }
    } else {
        (unsafe { bpf_get_prandom_u32() }) % count
    };
    // SAFETY: plain data copied out before any other map operation.
    match unsafe { BACKENDS.get(&BackendKey { service_id, slot }) } {
        Some(b) => sc.backend = *b,
        None => return false,
    }
    if affinity {
        sc.affinity = AffinityValue { backend: sc.backend, _pad: 0, last_used_ns: now };
        let _ = AFFINITY.insert(&sc.affinity_key, &sc.affinity, 0);
    }
    true
}

/// Sets up source NAT for a new external connection to a remote backend (`sc.tuple` is
/// client → backend): a free port on `node_ip` for the forward direction and the way back.
#[inline(always)]
fn snat(sc: &mut LbScratch, node_ip: &[u8; 4]) {
    let mut addr = [0u8; 16];
    addr[0] = node_ip[0];
    addr[1] = node_ip[1];
    addr[2] = node_ip[2];
    addr[3] = node_ip[3];
    // A retransmitted SYN keeps the port its connection already has.
    // SAFETY: only tested for presence.
    if unsafe { SNAT_FWD.get(&sc.tuple) }.is_some() {
        return;
    }
    sc.frontend = L4Addr { addr: sc.tuple.client_ip, port: sc.tuple.client_port, flags: 0, _pad: 0 };
    for _ in 0..NAT_PORT_TRIES {
        let port = (NAT_PORT_MIN + unsafe { bpf_get_prandom_u32() } % NAT_PORT_SPAN) as u16;
        sc.nat_key = LbTupleKey {
            client_ip: addr,
            server_ip: sc.tuple.server_ip,
            client_port: port,
            server_port: sc.tuple.server_port,
            proto: sc.tuple.proto,
            _pad: [0; 3],
        };
        // NOEXIST: two connections to one backend never share a NAT port.
        if SNAT_REV.insert(&sc.nat_key, &sc.frontend, BPF_NOEXIST as u64).is_ok() {
            sc.nat = L4Addr { addr, port, flags: 0, _pad: 0 };
            let _ = SNAT_FWD.insert(&sc.tuple, &sc.nat, 0);
            return;
        }
    }
    // No free port after a few tries: the connection goes out unNATed (fails open).
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
