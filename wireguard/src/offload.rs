//! UDP segmentation offloads for the data path: many WireGuard datagrams per syscall.
//!
//! Sending, [`SendBatch`] collects consecutive encrypted packets bound to one endpoint
//! into one buffer and hands them to the kernel with a single `sendmsg` carrying
//! `UDP_SEGMENT` (all segments of one size, the last possibly shorter): one trip through
//! the UDP/IP stack instead of one per packet. Receiving, `UDP_GRO` lets the kernel
//! coalesce datagrams of one flow, and [`recv`] reports the segment size to split them
//! by. Where the kernel refuses segmentation (`EIO`/`EINVAL`: no checksum offload on the
//! route, or a kernel older than 4.18) the batch falls back to one `sendto` per packet
//! and stops trying; GRO simply never coalesces where unsupported.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// `<linux/udp.h>`: not exported by `libc` for glibc targets.
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// The kernel's limit on segments per GSO send.
const MAX_SEGMENTS: usize = 64;
/// A GSO send must fit one IP datagram's 16-bit length.
const MAX_BYTES: usize = 65_000;

/// Whether segmentation offload still works here (cleared on the first refusal).
static GSO: AtomicBool = AtomicBool::new(true);

/// Asks the kernel to coalesce received datagrams (`UDP_GRO`); harmless if refused.
pub fn enable_gro(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: passes one c_int option value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            UDP_GRO,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Encrypted datagrams waiting to leave together.
pub struct SendBatch {
    buf: Vec<u8>,
    used: usize,
    count: usize,
    segment: usize,
    /// A shorter segment ended the run: nothing may follow it.
    closed: bool,
    to: Option<SocketAddr>,
}

impl SendBatch {
    /// An empty batch able to hold `MAX_BYTES` plus one largest packet of `packet_room`.
    pub fn new(packet_room: usize) -> SendBatch {
        SendBatch {
            buf: vec![0u8; MAX_BYTES + packet_room],
            used: 0,
            count: 0,
            segment: 0,
            closed: false,
            to: None,
        }
    }

    /// Space to encrypt the next packet into; flush first if it might not fit.
    pub fn tail(&mut self) -> &mut [u8] {
        &mut self.buf[self.used..]
    }

    /// Whether a packet of `len` plaintext bytes may not fit after what is held.
    pub fn needs_flush_for(&self, len: usize) -> bool {
        self.used + len + 32 > MAX_BYTES || self.count >= MAX_SEGMENTS
    }

    /// Takes the `len` bytes just written at [`SendBatch::tail`] as a datagram to `to`,
    /// sending what was held first when the two cannot go in one segmented send.
    pub fn commit(&mut self, fd: RawFd, len: usize, to: SocketAddr) {
        let fits = self.count > 0
            && self.to == Some(to)
            && !self.closed
            && len <= self.segment
            && self.count < MAX_SEGMENTS
            && self.used + len <= MAX_BYTES;
        if fits {
            self.used += len;
            self.count += 1;
            self.closed = len < self.segment;
            return;
        }
        if self.count > 0 {
            let start = self.used;
            self.flush(fd);
            self.buf.copy_within(start..start + len, 0);
        }
        self.used = len;
        self.count = 1;
        self.segment = len;
        self.closed = false;
        self.to = Some(to);
    }

    /// Sends what is held.
    pub fn flush(&mut self, fd: RawFd) {
        let Some(to) = self.to.filter(|_| self.count > 0) else {
            return;
        };
        let data = &self.buf[..self.used];
        let result = if self.count > 1 && GSO.load(Ordering::Relaxed) {
            match send(fd, data, to, Some(self.segment as u16)) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EINVAL)) => {
                    tracing::info!(error = %e, "UDP segmentation offload refused; sending datagrams one by one");
                    GSO.store(false, Ordering::Relaxed);
                    send_each(fd, data, self.segment, to)
                }
                other => other,
            }
        } else {
            send_each(fd, data, self.segment, to)
        };
        if let Err(e) = result {
            tracing::debug!(%to, error = %e, "WireGuard send failed");
        }
        self.used = 0;
        self.count = 0;
        self.closed = false;
        self.to = None;
    }
}

fn send_each(fd: RawFd, data: &[u8], segment: usize, to: SocketAddr) -> io::Result<()> {
    for chunk in data.chunks(segment) {
        send(fd, chunk, to, None)?;
    }
    Ok(())
}

/// One `sendmsg`, optionally segmented, waiting for socket space rather than dropping.
pub fn send(fd: RawFd, data: &[u8], to: SocketAddr, segment: Option<u16>) -> io::Result<()> {
    let (mut addr, addr_len) = sockaddr(to);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // Room for one cmsg carrying a u16, 8-byte aligned.
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = addr_len;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(segment) = segment {
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure size computations.
        let (space, len) = unsafe {
            (
                libc::CMSG_SPACE(size_of::<u16>() as u32),
                libc::CMSG_LEN(size_of::<u16>() as u32),
            )
        };
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as usize;
        // SAFETY: the control buffer is large enough for one cmsg of a u16 (space <= 32).
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = UDP_SEGMENT;
            (*cmsg).cmsg_len = len as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
        }
    }
    loop {
        // SAFETY: `msg` points at live buffers for the duration of the call.
        let n = unsafe { libc::sendmsg(fd, &msg, 0) };
        if n >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, 100) };
            }
            _ => return Err(err),
        }
    }
}

/// One `recvmsg`: bytes, sender, and the size of the coalesced segments (the whole
/// length when the kernel did not coalesce).
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, usize)> {
    // SAFETY: sockaddr_storage and msghdr are plain data; all-zero is valid.
    let mut addr: libc::sockaddr_storage = unsafe { zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 8]>();
    // SAFETY: `msg` points at live buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    let mut segment = n;
    // SAFETY: walks the control messages the kernel wrote within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                if size > 0 {
                    segment = size as usize;
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let from = socket_addr(&addr).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
    Ok((n, from, segment))
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage; we then fill one variant that fits.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_round_trip_through_sockaddr() {
        for text in ["192.0.2.7:51871", "[2001:db8::9]:443"] {
            let addr: SocketAddr = text.parse().unwrap();
            let (storage, _) = sockaddr(addr);
            assert_eq!(socket_addr(&storage), Some(addr));
        }
    }

    #[test]
    fn a_segmented_batch_arrives_as_separate_datagrams_in_order() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&tx);
        let mut batch = SendBatch::new(2048);
        // Three full segments, one short one (closes the run), then a full one that must
        // start a new send.
        for (i, len) in [100usize, 100, 100, 40, 100].into_iter().enumerate() {
            batch.tail()[..len].fill(i as u8);
            batch.commit(fd, len, to);
        }
        batch.flush(fd);
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 2048];
        for (i, len) in [100usize, 100, 100, 40, 100].into_iter().enumerate() {
            let (n, _) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(n, len, "datagram {i}");
            assert!(buf[..n].iter().all(|b| *b == i as u8), "datagram {i}");
        }
    }
}
