//! Coalescing decrypted TCP segments into super-packets for the TUN (the receive side of
//! [`crate::tso`]).
//!
//! Consecutive IPv4 TCP segments of one flow that arrive in one batch — in sequence,
//! same headers but for the sequence number and checksums, only ACK (and PSH on the last)
//! set — are joined into one packet written with a `virtio_net_hdr` asking for GSO: the
//! local stack then handles one 64 KiB packet instead of forty segments, as the kernel's
//! own GRO would have done on a NIC. Anything else (IPv6, other protocols, SYN/FIN/RST,
//! IP options or fragments, a gap) is written as it came, after whatever was being built,
//! so the order of packets is kept.

use std::io;

use crate::tso::VNET_HDR_LEN;

const F_NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
/// Largest IP packet the built one may become.
const MAX_LEN: usize = 65_535;

/// Joins segments as they come; [`Coalescer::flush`] writes what is held.
pub struct Coalescer {
    /// Virtio header, then the packet being built.
    buf: Vec<u8>,
    /// Bytes of packet in `buf` after the header.
    len: usize,
    segments: usize,
    /// IP + TCP header length of the held packet.
    hlen: usize,
    gso_size: usize,
    next_seq: u32,
    /// A shorter or PSH segment ended it: nothing may be appended.
    closed: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer {
            buf: vec![0u8; VNET_HDR_LEN + MAX_LEN],
            len: 0,
            segments: 0,
            hlen: 0,
            gso_size: 0,
            next_seq: 0,
            closed: false,
        }
    }
}

/// IPv4 TCP with a payload, no IP options, not a fragment, flags ACK or ACK|PSH:
/// returns (IP+TCP header length, payload length).
fn eligible(p: &[u8]) -> Option<(usize, usize)> {
    if p.len() < 40 || p[0] != 0x45 || p[9] != 6 {
        return None;
    }
    // MF or a fragment offset.
    if u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    let tcp_len = usize::from(p[32] >> 4) * 4;
    let hlen = 20 + tcp_len;
    if total != p.len() || tcp_len < 20 || total <= hlen {
        return None;
    }
    if p[33] & !TCP_PSH != TCP_ACK {
        return None;
    }
    Some((hlen, total - hlen))
}

fn seq(p: &[u8]) -> u32 {
    u32::from_be_bytes([p[24], p[25], p[26], p[27]])
}

impl Coalescer {
    fn held(&self) -> &[u8] {
        &self.buf[VNET_HDR_LEN..VNET_HDR_LEN + self.len]
    }

    /// Whether `p` (eligible, header length `hlen`) continues the held packet.
    fn continues(&self, p: &[u8], hlen: usize, payload: usize) -> bool {
        if self.segments == 0 || self.closed || hlen != self.hlen || payload > self.gso_size {
            return false;
        }
        if self.len + payload > MAX_LEN || seq(p) != self.next_seq {
            return false;
        }
        let h = self.held();
        // Same TOS, DF, TTL, protocol, addresses; same ports, ack, window, urgent
        // pointer and options. (Length, id, checksums, sequence and PSH may differ.)
        h[1] == p[1]
            && h[6..10] == p[6..10]
            && h[12..24] == p[12..24]
            && h[28..33] == p[28..33]
            && h[34..36] == p[34..36]
            && h[38..hlen] == p[38..hlen]
    }

    /// Takes one decrypted packet: joins it to the held one, or writes what is held and
    /// holds (or, if it cannot be joined to anything, writes) this one.
    pub fn push(&mut self, tun: i32, p: &[u8]) {
        match eligible(p) {
            Some((hlen, payload)) if self.continues(p, hlen, payload) => {
                let at = VNET_HDR_LEN + self.len;
                self.buf[at..at + payload].copy_from_slice(&p[hlen..]);
                self.len += payload;
                self.segments += 1;
                self.next_seq = self.next_seq.wrapping_add(payload as u32);
                let psh = p[33] & TCP_PSH;
                self.buf[VNET_HDR_LEN + 33] |= psh;
                self.closed = payload < self.gso_size || psh != 0;
            }
            Some((hlen, payload)) => {
                self.flush(tun);
                self.buf[VNET_HDR_LEN..VNET_HDR_LEN + p.len()].copy_from_slice(p);
                self.len = p.len();
                self.segments = 1;
                self.hlen = hlen;
                self.gso_size = payload;
                self.next_seq = seq(p).wrapping_add(payload as u32);
                self.closed = p[33] & TCP_PSH != 0;
            }
            None => {
                self.flush(tun);
                write(tun, &[0u8; VNET_HDR_LEN], p);
            }
        }
    }

    /// Writes the held packet, as a GSO super-packet when it joined several segments.
    pub fn flush(&mut self, tun: i32) {
        if self.segments == 0 {
            return;
        }
        let mut hdr = [0u8; VNET_HDR_LEN];
        if self.segments > 1 {
            let len = self.len;
            let hlen = self.hlen;
            let p = &mut self.buf[VNET_HDR_LEN..VNET_HDR_LEN + len];
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[10..12].fill(0);
            let ip_sum = !fold(sum(&p[..20], 0));
            p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
            // Partial checksum: the pseudo-header sum, the kernel finishes it (or trusts
            // it: the segments' own checksums were verified by decryption's integrity).
            let pseudo = fold(sum(&p[12..20], 6 + (len - 20) as u64));
            p[36..38].copy_from_slice(&pseudo.to_be_bytes());
            hdr[0] = F_NEEDS_CSUM;
            hdr[1] = GSO_TCPV4;
            hdr[2..4].copy_from_slice(&(hlen as u16).to_ne_bytes());
            hdr[4..6].copy_from_slice(&(self.gso_size as u16).to_ne_bytes());
            hdr[6..8].copy_from_slice(&20u16.to_ne_bytes());
            hdr[8..10].copy_from_slice(&16u16.to_ne_bytes());
        }
        let (_, rest) = self.buf.split_at(VNET_HDR_LEN);
        write(tun, &hdr, &rest[..self.len]);
        self.segments = 0;
        self.len = 0;
    }
}

fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut pairs = data.chunks_exact(2);
    for c in &mut pairs {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

fn write(tun: i32, hdr: &[u8], packet: &[u8]) {
    let iov = [
        libc::iovec {
            iov_base: hdr.as_ptr() as *mut libc::c_void,
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: packet.as_ptr() as *mut libc::c_void,
            iov_len: packet.len(),
        },
    ];
    // SAFETY: both iovecs describe live buffers the kernel only reads.
    let n = unsafe { libc::writev(tun, iov.as_ptr(), 2) };
    if n < 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "writing to the TUN failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// An IPv4 TCP segment 10.0.0.1:1000 -> 10.0.0.2:2000.
    fn segment(seq: u32, payload: &[u8], flags: u8) -> Vec<u8> {
        let total = 40 + payload.len();
        let mut p = vec![
            0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&1000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&2000u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&77u32.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&500u16.to_be_bytes());
        p.extend(tcp);
        p.extend(payload);
        p
    }

    /// Reads back what was written, through a pipe standing in for the TUN.
    fn written(run: impl FnOnce(&mut Coalescer, i32)) -> Vec<Vec<u8>> {
        let (r, w) = {
            let mut fds = [0; 2];
            // SAFETY: pipe2 fills two fds.
            assert_eq!(
                unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) },
                0
            );
            // SAFETY: fresh fds we own.
            unsafe {
                use std::os::fd::FromRawFd;
                (
                    std::fs::File::from_raw_fd(fds[0]),
                    std::fs::File::from_raw_fd(fds[1]),
                )
            }
        };
        let mut c = Coalescer::default();
        run(&mut c, w.as_raw_fd());
        drop(w);
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut &r, &mut all).unwrap();
        // Split writes: header, then an IP packet whose length field says how long.
        let mut out = Vec::new();
        let mut rest = &all[..];
        while !rest.is_empty() {
            let p = &rest[VNET_HDR_LEN..];
            let len = usize::from(u16::from_be_bytes([p[2], p[3]]));
            out.push(rest[..VNET_HDR_LEN + len].to_vec());
            rest = &rest[VNET_HDR_LEN + len..];
        }
        out
    }

    #[test]
    fn consecutive_segments_become_one_gso_packet() {
        let out = written(|c, fd| {
            c.push(fd, &segment(100, &[1; 1000], TCP_ACK));
            c.push(fd, &segment(1100, &[2; 1000], TCP_ACK));
            c.push(fd, &segment(2100, &[3; 300], TCP_ACK | TCP_PSH));
            c.flush(fd);
        });
        assert_eq!(out.len(), 1);
        let (hdr, p) = out[0].split_at(VNET_HDR_LEN);
        assert_eq!(hdr[1], GSO_TCPV4);
        assert_eq!(u16::from_ne_bytes([hdr[4], hdr[5]]), 1000);
        assert_eq!(p.len(), 40 + 2300);
        assert_eq!(fold(sum(&p[..20], 0)), 0xffff, "IP checksum");
        assert_eq!(seq(p), 100);
        assert_eq!(p[33], TCP_ACK | TCP_PSH);
        assert_eq!(&p[40..1040], &[1; 1000][..]);
        assert_eq!(&p[2040..], &[3; 300][..]);
    }

    #[test]
    fn gaps_other_flows_and_control_segments_are_written_apart_in_order() {
        let mut other_port = segment(1100, &[2; 1000], TCP_ACK);
        other_port[20..22].copy_from_slice(&1001u16.to_be_bytes());
        let out = written(|c, fd| {
            c.push(fd, &segment(100, &[1; 1000], TCP_ACK));
            c.push(fd, &segment(5000, &[2; 1000], TCP_ACK)); // gap
            c.push(fd, &other_port); // other flow
            c.push(fd, &segment(6000, &[], TCP_ACK | 0x01)); // FIN
            c.push(fd, &segment(6000, &[4; 10], TCP_ACK));
            c.flush(fd);
        });
        let seqs: Vec<u32> = out.iter().map(|w| seq(&w[VNET_HDR_LEN..])).collect();
        assert_eq!(seqs, vec![100, 5000, 1100, 6000, 6000]);
        assert!(out.iter().all(|w| w[1] == 0), "no GSO for single segments");
    }
}
