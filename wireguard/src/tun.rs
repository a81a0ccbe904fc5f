//! The TUN interface: opened through `/dev/net/tun` (`TUNSETIFF`, `IFF_TUN | IFF_NO_PI |
//! IFF_VNET_HDR`: every read and write is a `virtio_net_hdr` then one IP packet, which
//! with the checksum and TSO offloads may be a 64 KiB TCP super-packet), then given its MTU, address and `up` state over
//! rtnetlink (nodes like Talos have no `ip` binary).
//!
//! The interface is not persistent: it lives as long as the file descriptor, so closing
//! it (dropping [`Tun`], also when the process dies) removes the interface and its routes.
//! Both are created in the calling thread's network namespace.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::pin::pin;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::LinkUnspec;

/// Why the interface could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// `/dev/net/tun` could not be opened (no `tun` module, or not root / no
    /// `CAP_NET_ADMIN` in a container without the device).
    #[error("opening /dev/net/tun: {0} (needs the tun driver and CAP_NET_ADMIN)")]
    Open(io::Error),
    /// `TUNSETIFF` failed (name taken by a non-TUN link, or no permission).
    #[error("creating TUN interface {name}: {source}")]
    Create {
        /// The interface.
        name: String,
        /// The OS error.
        source: io::Error,
    },
    /// The netlink runtime or socket could not start.
    #[error("netlink socket: {0}")]
    Socket(io::Error),
    /// A netlink request failed.
    #[error("netlink: {op} {name}: {source}")]
    Netlink {
        /// What was asked.
        op: &'static str,
        /// The interface.
        name: String,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
    /// The interface vanished between creation and configuration.
    #[error("TUN interface {name} vanished while being configured")]
    Vanished {
        /// The interface.
        name: String,
    },
}

/// An open TUN interface.
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
    index: u32,
}

impl Tun {
    /// Creates `name` (non-blocking fd), sets its MTU and address and brings it up.
    pub fn create(name: &str, mtu: u32, address: Option<IpNet>) -> Result<Tun, TunError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TunError::Open)?;
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
            *dst = *src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags =
            (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
            return Err(TunError::Create {
                name: name.to_string(),
                source: io::Error::last_os_error(),
            });
        }
        // Checksum and TCP segmentation offload: the kernel may hand over 64 KiB TCP
        // packets ([`crate::tso`] cuts them). Refused on old kernels: then every packet
        // comes whole, with a zero virtio header.
        let offloads = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
        // SAFETY: TUNSETOFFLOAD takes the flags by value.
        if unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                offloads as libc::c_ulong,
            )
        } < 0
        {
            tracing::info!(interface = name, error = %io::Error::last_os_error(), "TUN offloads refused");
        }
        let index = configure(name, mtu, address)?;
        Ok(Tun {
            file,
            name: name.to_string(),
            index,
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interface index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The descriptor: one `read` is a virtio header and one (super-)packet; one `write`
    /// of a header and a packet sends it up the stack.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

fn configure(name: &str, mtu: u32, address: Option<IpNet>) -> Result<u32, TunError> {
    let nl = |op| {
        let name = name.to_string();
        move |source| TunError::Netlink { op, name, source }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(TunError::Socket)?;
    runtime.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(TunError::Socket)?;
        let driver = tokio::spawn(connection);
        let result = async {
            let mut links = pin!(handle.link().get().match_name(name.to_string()).execute());
            let index = links
                .try_next()
                .await
                .map_err(nl("look up"))?
                .ok_or_else(|| TunError::Vanished {
                    name: name.to_string(),
                })?
                .header
                .index;
            handle
                .link()
                .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
                .execute()
                .await
                .map_err(nl("set mtu of"))?;
            if let Some(net) = address {
                handle
                    .address()
                    .add(index, net.addr(), net.prefix_len())
                    .replace()
                    .execute()
                    .await
                    .map_err(nl("add address to"))?;
            }
            handle
                .link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(nl("set up"))?;
            Ok(index)
        }
        .await;
        driver.abort();
        result
    })
}
