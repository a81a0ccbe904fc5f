//! Prepares the node's network namespace for pods: the router address pods use as their
//! gateway sits on `lumen_host`, one end of a veth pair with `lumen_net` (the shape of
//! Cilium's `cilium_host`/`cilium_net`; a veth pair also works on kernels without the dummy
//! driver), so the host side of every pod veth answers ARP for it; IPv4 forwarding is on.
//! Idempotent.

use futures::TryStreamExt;
use rtnetlink::{LinkUnspec, LinkVeth};
use std::net::IpAddr;

/// Name of the device holding the router address.
pub const HOST_DEVICE: &str = "lumen_host";
/// Its veth peer.
pub const NET_DEVICE: &str = "lumen_net";

/// Errors preparing the node.
#[derive(Debug, thiserror::Error)]
pub enum NodeSetupError {
    /// A netlink request failed.
    #[error("netlink {what}: {source}")]
    Netlink {
        /// What was attempted.
        what: &'static str,
        /// Why.
        source: rtnetlink::Error,
    },
    /// Opening the netlink socket failed.
    #[error("netlink socket: {0}")]
    Socket(std::io::Error),
    /// Writing a sysctl failed.
    #[error("sysctl {path}: {source}")]
    Sysctl {
        /// The file under /proc/sys.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

fn exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::EEXIST)
}

/// Index of a link by name, if it exists.
pub async fn link_index(handle: &rtnetlink::Handle, name: &str) -> Option<u32> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Some(msg.header.index),
        _ => None,
    }
}

/// Ensures `lumen_host` exists, is up and carries `router/32`, and forwarding is on.
pub async fn ensure(router: IpAddr) -> Result<(), NodeSetupError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(NodeSetupError::Socket)?;
    let task = tokio::spawn(conn);
    let result = async {
        let index = match link_index(&handle, HOST_DEVICE).await {
            Some(i) => i,
            None => {
                match handle
                    .link()
                    .add(LinkVeth::new(HOST_DEVICE, NET_DEVICE).build())
                    .execute()
                    .await
                {
                    Ok(()) => {}
                    Err(e) if exists(&e) => {}
                    Err(source) => {
                        return Err(NodeSetupError::Netlink {
                            what: "create lumen_host",
                            source,
                        })
                    }
                }
                link_index(&handle, HOST_DEVICE)
                    .await
                    .ok_or(NodeSetupError::Netlink {
                        what: "find lumen_host",
                        source: rtnetlink::Error::RequestFailed,
                    })?
            }
        };
        let prefix = if router.is_ipv4() { 32 } else { 128 };
        match handle.address().add(index, router, prefix).execute().await {
            Ok(()) => {}
            Err(e) if exists(&e) => {}
            Err(source) => {
                return Err(NodeSetupError::Netlink {
                    what: "address lumen_host",
                    source,
                })
            }
        }
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|source| NodeSetupError::Netlink {
                what: "set lumen_host up",
                source,
            })?;
        Ok(())
    }
    .await;
    task.abort();
    result?;
    for path in [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv4/conf/all/forwarding",
    ] {
        std::fs::write(path, "1").map_err(|source| NodeSetupError::Sysctl {
            path: path.into(),
            source,
        })?;
    }
    Ok(())
}

/// Index of an interface by name in this network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// The MTU of an interface in this network namespace (`SIOCGIFMTU`; sysfs would show
/// the namespace it was mounted in).
pub fn mtu(name: &str) -> Option<u32> {
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: plain socket call; the descriptor is owned (and closed) below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads the name and writes `ifru_mtu` of a valid ifreq.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SIOCGIFMTU,
            &mut req,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: on success the kernel filled the union's MTU member.
    Some(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

/// IPv4 addresses of an interface (the uplink's are the node's own).
pub async fn addresses(name: &str) -> Vec<IpAddr> {
    let Ok((conn, handle, _)) = rtnetlink::new_connection() else {
        return vec![];
    };
    let task = tokio::spawn(conn);
    let mut out = vec![];
    if let Some(index) = link_index(&handle, name).await {
        let mut addrs = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Ok(Some(msg)) = addrs.try_next().await {
            for attr in msg.attributes {
                if let rtnetlink::packet_route::address::AddressAttribute::Address(ip) = attr {
                    out.push(ip);
                }
            }
        }
    }
    task.abort();
    out
}
