//! L2 announcements: answers ARP requests for the addresses this node announces
//! (LoadBalancer IPs whose lease the agent holds), on the uplink, with the uplink's MAC.
//!
//! An entry of `L2_RESPONDER` counts only until its `expires_ns`, which the agent pushes
//! forward each time it renews the lease: if the agent dies, the node stops answering
//! when its lease would have expired, and the new holder's gratuitous ARP moves clients
//! over. Fails open: anything unexpected leaves the request to the kernel.

use aya_ebpf::{
    bindings::TC_ACT_REDIRECT, helpers::bpf_ktime_get_ns, macros::map, maps::PerCpuArray, programs::TcContext,
};

use crate::L2_RESPONDER;

const ETH_P_ARP: u16 = 0x0806;
/// Ethernet header plus an IPv4-over-Ethernet ARP body.
const FRAME_LEN: usize = 14 + 28;

/// Per-CPU room for the frame being turned into a reply: the caller's frame leaves this
/// one little stack.
#[map]
static ARP_SCRATCH: PerCpuArray<[u8; FRAME_LEN]> = PerCpuArray::with_max_entries(1, 0);

/// Whether `ethertype` is ARP (only then is [`respond`] worth calling).
#[inline(always)]
pub fn is_arp(ethertype: u16) -> bool {
    ethertype == ETH_P_ARP
}

/// Turns an ARP request for an announced address into the reply and sends it back out
/// of the interface it came in on. Returns the tc action when it did.
#[inline(never)]
pub fn respond(ctx: &TcContext) -> Option<i32> {
    let p = ARP_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot, used by this program run only.
    let f = unsafe { &mut *p };
    // The raw helper with a constant length: the frame is all there or the call fails.
    // SAFETY: `f` is FRAME_LEN writable bytes.
    let rc = unsafe {
        aya_ebpf::helpers::bpf_skb_load_bytes(ctx.skb.skb as *const _, 0, f.as_mut_ptr() as *mut _, FRAME_LEN as u32)
    };
    if rc != 0 {
        return None;
    }
    // Ethernet/IPv4, hardware size 6, protocol size 4, request.
    if f[14..22] != [0, 1, 0x08, 0x00, 6, 4, 0, 1] {
        return None;
    }
    let sender_mac = [f[22], f[23], f[24], f[25], f[26], f[27]];
    let sender_ip = [f[28], f[29], f[30], f[31]];
    let target_ip = [f[38], f[39], f[40], f[41]];
    // A gratuitous ARP announces the sender's own address: nothing to answer.
    if sender_ip == target_ip {
        return None;
    }
    // SAFETY: plain data copied out before any other map operation.
    let entry = unsafe { L2_RESPONDER.get(&target_ip) }.copied()?;
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if entry.ifindex != ifindex || unsafe { bpf_ktime_get_ns() } >= entry.expires_ns {
        return None;
    }
    let mac = entry.mac;
    // Ethernet: back to the requester, from us.
    f[0..6].copy_from_slice(&sender_mac);
    f[6..12].copy_from_slice(&mac);
    // ARP reply: we have target_ip at mac; to the requester.
    f[21] = 2;
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&target_ip);
    f[32..38].copy_from_slice(&sender_mac);
    f[38..42].copy_from_slice(&sender_ip);
    ctx.store(0, f, 0).ok()?;
    // SAFETY: a plain helper call; redirects to the egress of the same interface.
    let action = unsafe { aya_ebpf::helpers::bpf_redirect(ifindex, 0) } as i32;
    if action == TC_ACT_REDIRECT as i32 {
        Some(action)
    } else {
        None
    }
}
