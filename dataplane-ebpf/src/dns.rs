//! DNS redirection to the agent's transparent DNS proxy.
//!
//! - Leaving a pod (`from_endpoint`), **after** policy and conntrack decided on the query as
//!   the pod sent it: a UDP/TCP packet to port 53 from an endpoint flagged
//!   [`ep_flags::DNS_REDIRECT`] gets the proxy (`DNS_PROXY`) as destination; the server the
//!   pod addressed is remembered in `DNS_NAT`, where the proxy reads it.
//! - Entering a pod (`to_endpoint`), **before** conntrack: a packet from the proxy to a
//!   redirected query gets that server back as its source, so conntrack, policy and the pod
//!   see the server answer.
//!
//! Failure modes: **fails open** — without a proxy configured, a full `DNS_NAT` or a
//! checksum helper failing, the query goes to the server it was sent to, untouched.
//! IPv4 only.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use lumen_abi::{ep_flags, ipver, l4_flags, proto, L4Addr, LbTupleKey, PacketInfo};

use crate::{DNS_NAT, DNS_PROXY, ENDPOINTS};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IP_CSUM_OFF: usize = ETH_HLEN + 10;
const IP_SRC_OFF: usize = ETH_HLEN + 12;
const IP_DST_OFF: usize = ETH_HLEN + 16;
const DNS_PORT: u16 = 53;

#[inline(always)]
fn eligible(pkt: &PacketInfo) -> bool {
    pkt.ip_version == ipver::V4
        && pkt.ethertype == ETH_P_IP
        && pkt.l4_flags & l4_flags::PORTS != 0
        && (pkt.l4_proto == proto::TCP || pkt.l4_proto == proto::UDP)
}

#[inline(always)]
fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut o = [0u8; 16];
    o[0] = a[0];
    o[1] = a[1];
    o[2] = a[2];
    o[3] = a[3];
    o
}

/// A pod's DNS query: redirect it to the proxy. `ifindex` is the pod's host-side veth.
#[inline(never)]
pub fn redirect(ctx: &TcContext, pkt: &PacketInfo, ifindex: u32) {
    if pkt.dst_port != DNS_PORT || !eligible(pkt) {
        return;
    }
    // SAFETY: a lookup in a hash map; the value is copied before the program goes on.
    let Some(ep) = (unsafe { ENDPOINTS.get(&ifindex) }) else {
        return;
    };
    if ep.flags & ep_flags::DNS_REDIRECT == 0 {
        return;
    }
    let Some(cfg) = DNS_PROXY.get(0) else {
        return;
    };
    if cfg.port == 0 {
        return;
    }
    let proxy = L4Addr {
        addr: v4(cfg.addr),
        port: cfg.port,
        flags: 0,
        _pad: 0,
    };
    let key = LbTupleKey {
        client_ip: pkt.src_ip,
        server_ip: proxy.addr,
        client_port: pkt.src_port,
        server_port: proxy.port,
        proto: pkt.l4_proto,
        _pad: [0; 3],
    };
    let orig = L4Addr {
        addr: pkt.dst_ip,
        port: pkt.dst_port,
        flags: 0,
        _pad: 0,
    };
    if DNS_NAT.insert(&key, &orig, 0).is_err() {
        return;
    }
    let _ = rewrite(
        ctx,
        pkt.l4_proto,
        IP_DST_OFF,
        2,
        &pkt.dst_ip,
        pkt.dst_port,
        &proxy,
    );
}

/// A packet entering a pod: if it is the proxy's answer to a redirected query, give it the
/// original server as source (and `pkt` with it).
#[inline(never)]
pub fn restore(ctx: &TcContext, pkt: &mut PacketInfo) {
    if !eligible(pkt) {
        return;
    }
    let Some(cfg) = DNS_PROXY.get(0) else {
        return;
    };
    if cfg.port == 0 || pkt.src_port != cfg.port || pkt.src_ip != v4(cfg.addr) {
        return;
    }
    let key = LbTupleKey {
        client_ip: pkt.dst_ip,
        server_ip: pkt.src_ip,
        client_port: pkt.dst_port,
        server_port: pkt.src_port,
        proto: pkt.l4_proto,
        _pad: [0; 3],
    };
    // SAFETY: a lookup in an LRU map; the value is copied at once.
    let Some(orig) = (unsafe { DNS_NAT.get(&key) }).copied() else {
        return;
    };
    if rewrite(
        ctx,
        pkt.l4_proto,
        IP_SRC_OFF,
        0,
        &pkt.src_ip,
        pkt.src_port,
        &orig,
    )
    .is_ok()
    {
        pkt.src_ip = orig.addr;
        pkt.src_port = orig.port;
    }
}

/// Replaces the IPv4 address at `ip_off` and the L4 port at `port_rel`, fixing checksums
/// incrementally (as the load balancer does).
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
    let (csum_off, udp) = if l4_proto == proto::TCP {
        (l4_off + 16, false)
    } else {
        (l4_off + 6, true)
    };
    let old_a = [old_ip[0], old_ip[1], old_ip[2], old_ip[3]];
    let new_a = [new.addr[0], new.addr[1], new.addr[2], new.addr[3]];
    let old_ip32 = u32::from_ne_bytes(old_a) as u64;
    let new_ip32 = u32::from_ne_bytes(new_a) as u64;
    let old_p = u16::from_ne_bytes(old_port.to_be_bytes()) as u64;
    let new_p = u16::from_ne_bytes(new.port.to_be_bytes()) as u64;
    // A UDP checksum of zero means "none" and must stay zero.
    let mangled = if udp { BPF_F_MARK_MANGLED_0 as u64 } else { 0 };
    ctx.l4_csum_replace(
        csum_off,
        old_ip32,
        new_ip32,
        BPF_F_PSEUDO_HDR as u64 | mangled | 4,
    )
    .map_err(|_| ())?;
    ctx.l4_csum_replace(csum_off, old_p, new_p, mangled | 2)
        .map_err(|_| ())?;
    ctx.l3_csum_replace(IP_CSUM_OFF, old_ip32, new_ip32, 4)
        .map_err(|_| ())?;
    ctx.store(ip_off, &new_a, 0).map_err(|_| ())?;
    ctx.store(l4_off + port_rel, &new.port.to_be_bytes(), 0)
        .map_err(|_| ())?;
    Ok(())
}
