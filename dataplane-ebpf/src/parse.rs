//! Bounds-checked packet parsing: Ethernet (one VLAN tag), IPv4, IPv6 (up to four
//! extension headers), TCP, UDP, SCTP, ICMPv4, ICMPv6.
//!
//! Headers in the skb's linear data are read directly (bounds-checked against `data_end`,
//! which the verifier enforces); anything beyond it goes through `bpf_skb_load_bytes`,
//! which fails instead of reading past the packet. Direct reads matter: the helper calls
//! cost more than the rest of the parse. Parsing stops at the first header that is not all
//! there and returns `Err`: what was filled in so far stays valid, so a truncated packet is
//! still traced as L2/L3.

use aya_ebpf::programs::TcContext;
use lumen_abi::{ipver, l4_flags, proto, PacketInfo};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_HLEN: usize = 14;
const MAX_EXT_HEADERS: usize = 4;

/// Marker for "the packet ended early".
pub struct Truncated;

#[inline(always)]
fn load<T: Copy>(ctx: &TcContext, off: usize) -> Result<T, Truncated> {
    let start = ctx.data();
    let end = ctx.data_end();
    let size = core::mem::size_of::<T>();
    // Bound the offset so the verifier can track the pointer's range.
    if off < 2048 && start + off + size <= end {
        // SAFETY: [start + off, start + off + size) lies inside the linear packet data.
        return Ok(unsafe { core::ptr::read_unaligned((start + off) as *const T) });
    }
    ctx.load::<T>(off).map_err(|_| Truncated)
}

/// Fills `pkt` from the packet in `ctx`. `l3`: the device has no link-layer header (a
/// TUN such as the WireGuard device): the packet starts at the IP header and its
/// protocol comes from the skb.
// Not inlined: its header buffers get a frame of their own, a sibling of the later
// stages' frames rather than part of them.
#[inline(never)]
pub fn packet(ctx: &TcContext, pkt: &mut PacketInfo, l3: bool) -> Result<(), Truncated> {
    if l3 {
        let ethertype = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
        pkt.ethertype = ethertype;
        return match ethertype {
            ETH_P_IP => ipv4(ctx, 0, pkt),
            ETH_P_IPV6 => ipv6(ctx, 0, pkt),
            _ => Ok(()),
        };
    }
    let eth: [u8; ETH_HLEN] = load(ctx, 0)?;
    pkt.dst_mac.copy_from_slice(&eth[0..6]);
    pkt.src_mac.copy_from_slice(&eth[6..12]);
    let mut ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    let mut off = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let tag: [u8; 4] = load(ctx, off)?;
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        off += 4;
    }
    pkt.ethertype = ethertype;
    match ethertype {
        ETH_P_IP => ipv4(ctx, off, pkt),
        ETH_P_IPV6 => ipv6(ctx, off, pkt),
        _ => Ok(()),
    }
}

#[inline(always)]
fn ipv4(ctx: &TcContext, off: usize, pkt: &mut PacketInfo) -> Result<(), Truncated> {
    let h: [u8; 20] = load(ctx, off)?;
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    pkt.ip_version = ipver::V4;
    pkt.l4_proto = h[9];
    pkt.src_ip[..4].copy_from_slice(&h[12..16]);
    pkt.dst_ip[..4].copy_from_slice(&h[16..20]);
    if ihl < 20 {
        return Err(Truncated);
    }
    let frag_off = u16::from_be_bytes([h[6] & 0x1f, h[7]]);
    if frag_off != 0 {
        // A later fragment carries no L4 header.
        return Ok(());
    }
    l4(ctx, off + ihl, pkt)
}

#[inline(always)]
fn ipv6(ctx: &TcContext, off: usize, pkt: &mut PacketInfo) -> Result<(), Truncated> {
    let h: [u8; 40] = load(ctx, off)?;
    pkt.ip_version = ipver::V6;
    pkt.src_ip.copy_from_slice(&h[8..24]);
    pkt.dst_ip.copy_from_slice(&h[24..40]);
    let mut next = h[6];
    let mut off = off + 40;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
            0 | 43 | 60 => {
                let e: [u8; 2] = load(ctx, off)?;
                next = e[0];
                off += (e[1] as usize + 1) * 8;
            }
            // Fragment header: 8 bytes; only the first fragment has the L4 header.
            44 => {
                let e: [u8; 8] = load(ctx, off)?;
                next = e[0];
                off += 8;
                if u16::from_be_bytes([e[2], e[3]]) & 0xfff8 != 0 {
                    pkt.l4_proto = next;
                    return Ok(());
                }
            }
            // Authentication header: (len + 2) * 4 bytes.
            51 => {
                let e: [u8; 2] = load(ctx, off)?;
                next = e[0];
                off += (e[1] as usize + 2) * 4;
            }
            _ => break,
        }
    }
    pkt.l4_proto = next;
    l4(ctx, off, pkt)
}

#[inline(always)]
fn l4(ctx: &TcContext, off: usize, pkt: &mut PacketInfo) -> Result<(), Truncated> {
    match pkt.l4_proto {
        proto::TCP => {
            let h: [u8; 14] = load(ctx, off)?;
            pkt.src_port = u16::from_be_bytes([h[0], h[1]]);
            pkt.dst_port = u16::from_be_bytes([h[2], h[3]]);
            pkt.tcp_flags = h[13] as u16 | (((h[12] & 1) as u16) << 8);
            pkt.l4_flags = l4_flags::PORTS | l4_flags::TCP_FLAGS;
        }
        proto::UDP | proto::SCTP => {
            let h: [u8; 4] = load(ctx, off)?;
            pkt.src_port = u16::from_be_bytes([h[0], h[1]]);
            pkt.dst_port = u16::from_be_bytes([h[2], h[3]]);
            pkt.l4_flags = l4_flags::PORTS;
        }
        proto::ICMP | proto::ICMPV6 => {
            let h: [u8; 8] = load(ctx, off)?;
            pkt.icmp_type = h[0];
            pkt.icmp_code = h[1];
            pkt.l4_flags = l4_flags::ICMP;
            let echo = if pkt.l4_proto == proto::ICMP {
                h[0] == 8 || h[0] == 0
            } else {
                h[0] == 128 || h[0] == 129
            };
            if echo {
                // Request and reply share the identifier: conntrack pairs them by it.
                let id = u16::from_be_bytes([h[4], h[5]]);
                pkt.src_port = id;
                pkt.dst_port = id;
            }
        }
        _ => {}
    }
    Ok(())
}
