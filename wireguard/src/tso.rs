//! TCP segmentation of the TUN's super-packets.
//!
//! With `IFF_VNET_HDR` and `TUNSETOFFLOAD(CSUM | TSO4 | TSO6)` the kernel hands the TUN
//! TCP packets of up to 64 KiB with a `virtio_net_hdr` in front, and leaves checksums
//! partial: the local TCP stack does one trip per 64 KiB instead of one per segment, and
//! so does our `read`. [`segments`] cuts such a packet into MTU-sized TCP segments (IP
//! length, IPv4 id and header checksum, TCP sequence, flags and checksum redone per
//! segment), which are then encrypted one by one as WireGuard requires. Packets without
//! GSO but with a partial checksum get it completed in place.

/// `struct virtio_net_hdr`, as the TUN prepends it (host byte order).
pub const VNET_HDR_LEN: usize = 10;
const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Why a packet from the TUN cannot be segmented (it is dropped; TCP retransmits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TsoError {
    /// Shorter than its headers say, or a header field out of range.
    #[error("malformed offloaded packet")]
    Malformed,
    /// A GSO type this device did not enable (UDP, or unknown).
    #[error("unsupported GSO type {0}")]
    Unsupported(u8),
}

fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(rest[i]) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The Internet checksum of `data` added to `acc` (a partial sum), complemented.
fn checksum(data: &[u8], acc: u64) -> u16 {
    !fold(sum(data, acc))
}

/// Calls `emit` with each IP packet that `buf` (virtio header + packet, as read from the
/// TUN) stands for, using `scratch` (at least 64 KiB + headers) to build segments.
pub fn segments(
    buf: &mut [u8],
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<(), TsoError> {
    if buf.len() < VNET_HDR_LEN {
        return Err(TsoError::Malformed);
    }
    let (hdr, packet) = buf.split_at_mut(VNET_HDR_LEN);
    let flags = hdr[0];
    let gso_type = hdr[1] & !GSO_ECN;
    let gso_size = usize::from(u16::from_ne_bytes([hdr[4], hdr[5]]));
    let csum_start = usize::from(u16::from_ne_bytes([hdr[6], hdr[7]]));
    let csum_offset = usize::from(u16::from_ne_bytes([hdr[8], hdr[9]]));
    match gso_type {
        GSO_NONE => {
            if flags & F_NEEDS_CSUM != 0 {
                let at = csum_start + csum_offset;
                if at + 2 > packet.len() || csum_start > packet.len() {
                    return Err(TsoError::Malformed);
                }
                // The field holds the pseudo-header sum: summing over it finishes the job.
                let c = checksum(&packet[csum_start..], 0);
                packet[at..at + 2].copy_from_slice(&c.to_be_bytes());
            }
            emit(packet);
            Ok(())
        }
        GSO_TCPV4 | GSO_TCPV6 => split_tcp(packet, gso_type == GSO_TCPV4, gso_size, scratch, emit),
        other => Err(TsoError::Unsupported(other)),
    }
}

fn split_tcp(
    packet: &[u8],
    v4: bool,
    gso_size: usize,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<(), TsoError> {
    let ip_len = if v4 {
        usize::from(packet.first().ok_or(TsoError::Malformed)? & 0x0f) * 4
    } else {
        40
    };
    if packet.len() < ip_len + 20 || ip_len < 20 || gso_size == 0 {
        return Err(TsoError::Malformed);
    }
    // TCP right after the IP header (no IPv6 extension headers: the kernel does not
    // offload those to a TUN).
    let protocol = if v4 { packet[9] } else { packet[6] };
    if protocol != 6 {
        return Err(TsoError::Malformed);
    }
    let tcp_len = usize::from(packet[ip_len + 12] >> 4) * 4;
    let hlen = ip_len + tcp_len;
    if tcp_len < 20 || packet.len() < hlen || scratch.len() < hlen + gso_size {
        return Err(TsoError::Malformed);
    }
    let payload = &packet[hlen..];
    let seq0 = u32::from_be_bytes(packet[ip_len + 4..ip_len + 8].try_into().unwrap());
    let id0 = u16::from_be_bytes([packet[4], packet[5]]);
    let flags0 = packet[ip_len + 13];
    let count = payload.len().div_ceil(gso_size).max(1);
    // Pseudo-header addresses, the same for every segment.
    let addrs = if v4 { &packet[12..20] } else { &packet[8..40] };
    let addr_sum = sum(addrs, 0) + 6; // + protocol TCP
    for (i, chunk) in payload.chunks(gso_size).enumerate() {
        let len = hlen + chunk.len();
        let seg = &mut scratch[..len];
        seg[..hlen].copy_from_slice(&packet[..hlen]);
        seg[hlen..].copy_from_slice(chunk);
        if v4 {
            seg[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            seg[4..6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            seg[10..12].fill(0);
            let c = checksum(&seg[..ip_len], 0);
            seg[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            seg[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
        }
        let tcp = ip_len;
        let seq = seq0.wrapping_add((i * gso_size) as u32);
        seg[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = flags0;
        if i + 1 < count {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            flags &= !TCP_CWR;
        }
        seg[tcp + 13] = flags;
        seg[tcp + 16..tcp + 18].fill(0);
        let tcp_segment_len = (len - ip_len) as u64;
        let c = checksum(&seg[tcp..], addr_sum + tcp_segment_len);
        seg[tcp + 16..tcp + 18].copy_from_slice(&c.to_be_bytes());
        emit(seg);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 TCP packet 10.0.0.1:1000 -> 10.0.0.2:2000 with `payload`, its checksum
    /// left partial (pseudo-header sum) as the kernel leaves it for offload.
    fn super_packet(payload: &[u8], gso_size: u16, flags: u8) -> Vec<u8> {
        let mut hdr = vec![0u8; VNET_HDR_LEN];
        hdr[0] = F_NEEDS_CSUM;
        hdr[1] = GSO_TCPV4;
        hdr[2..4].copy_from_slice(&40u16.to_ne_bytes());
        hdr[4..6].copy_from_slice(&gso_size.to_ne_bytes());
        hdr[6..8].copy_from_slice(&20u16.to_ne_bytes());
        hdr[8..10].copy_from_slice(&16u16.to_ne_bytes());
        let total = 40 + payload.len();
        let mut ip = vec![
            0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&1000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&2000u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        let mut out = hdr;
        out.extend(ip);
        out.extend(tcp);
        out.extend(payload);
        out
    }

    fn valid_ipv4_and_tcp(seg: &[u8]) -> bool {
        let ip_ok = fold(sum(&seg[..20], 0)) == 0xffff;
        let pseudo = sum(&seg[12..20], 0) + 6 + (seg.len() - 20) as u64;
        ip_ok && fold(sum(&seg[20..], pseudo)) == 0xffff
    }

    #[test]
    fn a_super_packet_becomes_valid_segments_with_advancing_sequence_numbers() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let mut buf = super_packet(&payload, 1400, 0x18 | TCP_FIN); // ACK PSH FIN
        let mut scratch = vec![0u8; 70_000];
        let mut got = Vec::new();
        segments(&mut buf, &mut scratch, |s| got.push(s.to_vec())).unwrap();
        assert_eq!(got.len(), 3);
        let mut rebuilt = Vec::new();
        for (i, seg) in got.iter().enumerate() {
            assert!(valid_ipv4_and_tcp(seg), "segment {i} checksums");
            assert_eq!(usize::from(u16::from_be_bytes([seg[2], seg[3]])), seg.len());
            assert_eq!(u16::from_be_bytes([seg[4], seg[5]]), 0x1234 + i as u16);
            let seq = u32::from_be_bytes(seg[24..28].try_into().unwrap());
            assert_eq!(seq, 0xffff_fff0u32.wrapping_add(1400 * i as u32));
            let last = i == 2;
            assert_eq!(seg[33] & (TCP_FIN | TCP_PSH) != 0, last, "flags of {i}");
            assert_eq!(seg[33] & 0x10, 0x10, "ACK kept on {i}");
            rebuilt.extend_from_slice(&seg[40..]);
        }
        assert_eq!(got[2].len(), 40 + 200);
        assert_eq!(rebuilt, payload);
    }

    #[test]
    fn a_plain_packet_gets_its_partial_checksum_completed() {
        let payload = b"hello";
        let mut buf = super_packet(payload, 0, 0x18);
        buf[1] = GSO_NONE;
        // The kernel leaves the pseudo-header sum in the checksum field.
        let pseudo = !checksum(&[10, 0, 0, 1, 10, 0, 0, 2], 6 + 25);
        buf[VNET_HDR_LEN + 36..VNET_HDR_LEN + 38].copy_from_slice(&pseudo.to_be_bytes());
        let ip_sum = checksum(&buf[VNET_HDR_LEN..VNET_HDR_LEN + 20], 0);
        buf[VNET_HDR_LEN + 10..VNET_HDR_LEN + 12].copy_from_slice(&ip_sum.to_be_bytes());
        let mut scratch = vec![0u8; 100];
        let mut got = Vec::new();
        segments(&mut buf, &mut scratch, |s| got.push(s.to_vec())).unwrap();
        assert_eq!(got.len(), 1);
        assert!(valid_ipv4_and_tcp(&got[0]));
    }

    #[test]
    fn truncated_and_udp_offloads_are_refused() {
        let mut scratch = vec![0u8; 70_000];
        assert_eq!(
            segments(&mut [0u8; 4], &mut scratch, |_| {}),
            Err(TsoError::Malformed)
        );
        let mut buf = super_packet(&[0u8; 100], 50, 0x10);
        buf.truncate(VNET_HDR_LEN + 30);
        assert_eq!(
            segments(&mut buf, &mut scratch, |_| {}),
            Err(TsoError::Malformed)
        );
        let mut buf = super_packet(&[0u8; 100], 50, 0x10);
        buf[1] = 5; // UDP_L4
        assert_eq!(
            segments(&mut buf, &mut scratch, |_| {}),
            Err(TsoError::Unsupported(5))
        );
    }
}
