//! Gratuitous ARP: when a node takes over an address it tells the segment at once, so
//! neighbours that cached the previous holder's MAC switch without waiting for their
//! entry to go stale. Sent through an `AF_PACKET` raw socket in the agent's network
//! namespace (the node's), in both forms Linux' `arping` knows: a request (`-U`) and a
//! reply (`-A`), each with sender and target address the announced one.

use std::{io, net::Ipv4Addr, os::fd::AsRawFd, os::fd::FromRawFd, os::fd::OwnedFd};

/// Ethernet header plus an IPv4-over-Ethernet ARP packet.
pub const FRAME_LEN: usize = 42;
const ETH_P_ARP: u16 = 0x0806;

/// Errors sending gratuitous ARPs or reading an interface's address.
#[derive(Debug, thiserror::Error)]
pub enum GarpError {
    /// The raw socket could not be opened (needs CAP_NET_RAW).
    #[error("opening an AF_PACKET socket: {0}")]
    Socket(io::Error),
    /// Sending on the interface failed.
    #[error("sending a gratuitous ARP on ifindex {ifindex}: {source}")]
    Send {
        /// The interface.
        ifindex: u32,
        /// Why.
        source: io::Error,
    },
    /// The interface's MAC could not be read.
    #[error("reading the MAC address of {device}: {source}")]
    Mac {
        /// The interface.
        device: String,
        /// Why.
        source: io::Error,
    },
}

/// Which ARP operation the announcement uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// ARP request (operation 1), target hardware address zero.
    Request,
    /// ARP reply (operation 2), target hardware address the sender's.
    Reply,
}

/// The broadcast frame announcing that `ip` is at `mac`.
pub fn frame(form: Form, mac: [u8; 6], ip: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f[18] = 6;
    f[19] = 4;
    let (op, tha) = match form {
        Form::Request => (1u16, [0u8; 6]),
        Form::Reply => (2u16, mac),
    };
    f[20..22].copy_from_slice(&op.to_be_bytes());
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    f[32..38].copy_from_slice(&tha);
    f[38..42].copy_from_slice(&ip.octets());
    f
}

fn packet_socket() -> Result<OwnedFd, GarpError> {
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ARP.to_be()),
        )
    };
    if fd < 0 {
        return Err(GarpError::Socket(io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn link_addr(ifindex: u32) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain data; zero is a valid starting point.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_ARP.to_be();
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    sll
}

/// Announces `ip` at `mac` on interface `ifindex`: one request and one reply.
pub fn announce(ifindex: u32, mac: [u8; 6], ip: Ipv4Addr) -> Result<(), GarpError> {
    let sock = packet_socket()?;
    let sll = link_addr(ifindex);
    for form in [Form::Request, Form::Reply] {
        let f = frame(form, mac, ip);
        // SAFETY: buffer and address are valid for the stated lengths.
        let n = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                f.as_ptr().cast(),
                f.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(GarpError::Send {
                ifindex,
                source: io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

/// The MAC address of `device` in this network namespace (`SIOCGIFHWADDR`).
pub fn interface_mac(device: &str) -> Result<[u8; 6], GarpError> {
    let err = |source| GarpError::Mac {
        device: device.into(),
        source,
    };
    if device.len() >= libc::IFNAMSIZ {
        return Err(err(io::Error::from(io::ErrorKind::InvalidInput)));
    }
    // SAFETY: plain socket(2); owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptor.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(device.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: the ioctl reads ifr_name and writes ifr_hwaddr within `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn frames_follow_rfc_5227_announcements() {
        let mac = [0x02, 0, 0, 0, 0, 0x11];
        let ip = Ipv4Addr::new(192, 168, 77, 200);
        let req = frame(Form::Request, mac, ip);
        assert_eq!(&req[0..6], &[0xff; 6], "broadcast");
        assert_eq!(&req[6..12], &mac);
        assert_eq!(&req[12..14], &[0x08, 0x06]);
        assert_eq!(&req[14..22], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&req[22..28], &mac, "sender MAC");
        assert_eq!(&req[28..32], &ip.octets(), "sender IP");
        assert_eq!(&req[32..38], &[0; 6]);
        assert_eq!(&req[38..42], &ip.octets(), "target IP = sender IP");
        let rep = frame(Form::Reply, mac, ip);
        assert_eq!(&rep[20..22], &[0, 2]);
        assert_eq!(&rep[32..38], &mac);
    }

    fn ip(args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("ip");
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    }

    /// Sends on one end of a veth pair in a private network namespace and captures on the
    /// other. Needs root (skipped otherwise, unless LUMEN_REQUIRE_PRIVILEGED=1).
    #[test]
    fn announcements_leave_the_interface_as_broadcast_frames() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert_ne!(
                std::env::var("LUMEN_REQUIRE_PRIVILEGED").as_deref(),
                Ok("1"),
                "needs root"
            );
            eprintln!("skipped: needs root");
            return;
        }
        // A thread of its own enters a new network namespace: it (and the `ip` commands it
        // forks) sees only its veth pair, which vanishes with the namespace at its end.
        std::thread::spawn(|| {
            // SAFETY: unshare affects only this thread.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
            ip(&[
                "link", "add", "garp0", "type", "veth", "peer", "name", "garp1",
            ]);
            ip(&["link", "set", "garp0", "address", "02:00:00:00:00:11", "up"]);
            ip(&["link", "set", "garp1", "up"]);
            let index = |n: &str| {
                let c = std::ffi::CString::new(n).unwrap();
                // SAFETY: valid C string.
                unsafe { libc::if_nametoindex(c.as_ptr()) }
            };
            let (tx, rx) = (index("garp0"), index("garp1"));
            let mac = interface_mac("garp0").unwrap();
            assert_eq!(mac, [0x02, 0, 0, 0, 0, 0x11]);
            assert!(interface_mac("nope0").is_err());

            let cap = packet_socket().unwrap();
            let sll = link_addr(rx);
            // SAFETY: valid address of the stated length.
            let rc = unsafe {
                libc::bind(
                    cap.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(rc, 0);
            let tv = libc::timeval {
                tv_sec: 2,
                tv_usec: 0,
            };
            // SAFETY: setting a timeval option.
            unsafe {
                libc::setsockopt(
                    cap.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            let addr = Ipv4Addr::new(192, 168, 77, 200);
            announce(tx, mac, addr).unwrap();
            let mut got = vec![];
            while got.len() < 2 {
                let mut buf = [0u8; 128];
                // SAFETY: buffer valid for its length.
                let n = unsafe { libc::recv(cap.as_raw_fd(), buf.as_mut_ptr().cast(), 128, 0) };
                assert!(n > 0, "no frame captured: {}", io::Error::last_os_error());
                got.push(buf[..n as usize].to_vec());
            }
            assert_eq!(got[0][..FRAME_LEN], frame(Form::Request, mac, addr));
            assert_eq!(got[1][..FRAME_LEN], frame(Form::Reply, mac, addr));
        })
        .join()
        .unwrap();
    }
}
