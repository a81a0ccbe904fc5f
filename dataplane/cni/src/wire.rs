//! Wiring a pod interface with rtnetlink (no `ip` binary: nodes like Talos have no
//! iproute2): a veth pair whose host end (`lxc…`) stays in the node's namespace and whose
//! other end becomes the pod's `CNI_IFNAME`, a `/32` address on it, and point-to-point
//! routes both ways through the pair.
//!
//! Host-side work happens in the calling thread's network namespace (the plugin runs in
//! the node's). Pod-side work runs on a short-lived thread that `setns(2)`s into the
//! pod's namespace and opens its own netlink socket there, so the caller's namespace is
//! never changed. Every public function blocks (each builds its own current-thread
//! runtime): do not call them from inside an async runtime.

use std::fs::File;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::pin;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope,
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// What to wire: one pod interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireSpec {
    /// `CNI_CONTAINERID` (names the host veth, with `ifname`).
    pub container_id: String,
    /// `CNI_IFNAME`: the interface name inside the pod.
    pub ifname: String,
    /// `CNI_NETNS`: path of the pod's network namespace.
    pub netns: PathBuf,
    /// The pod's address (set as a host route: `/32` or `/128`).
    pub ip: IpAddr,
    /// The pod's default gateway (reached through the veth, scope link).
    pub gateway: IpAddr,
    /// MTU of both veth ends.
    pub mtu: u32,
}

impl WireSpec {
    /// The host-side veth name for this spec ([`host_veth_name`]).
    pub fn host_ifname(&self) -> String {
        host_veth_name(&self.container_id, &self.ifname)
    }
}

/// What [`setup`] (or [`verify`]) found wired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wired {
    /// Host-side veth name.
    pub host_ifname: String,
    /// Host-side veth index in the node's namespace.
    pub host_ifindex: u32,
    /// Host-side veth MAC, `aa:bb:cc:dd:ee:ff`.
    pub host_mac: String,
    /// Pod-side interface index in the pod's namespace.
    pub pod_ifindex: u32,
    /// Pod-side MAC, `aa:bb:cc:dd:ee:ff`.
    pub pod_mac: String,
    /// Whether an existing, correct pair was reused rather than created.
    pub reused: bool,
}

/// A live state that differs from what [`setup`] would have made (CNI `CHECK`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckFailure {
    /// The host veth is gone.
    #[error("host veth {name} does not exist in the node namespace")]
    HostVethMissing {
        /// Its name.
        name: String,
    },
    /// An interface with the expected name is not a veth.
    #[error("interface {name} is not a veth")]
    NotVeth {
        /// Its name.
        name: String,
    },
    /// An interface is administratively down.
    #[error("interface {name} is down")]
    LinkDown {
        /// Its name.
        name: String,
    },
    /// The pod interface is gone.
    #[error("interface {ifname} does not exist in {}", netns.display())]
    PodIfMissing {
        /// `CNI_IFNAME`.
        ifname: String,
        /// `CNI_NETNS`.
        netns: PathBuf,
    },
    /// Both ends exist but are not each other's peer.
    #[error("pod interface {ifname} is not the peer of host veth {host}")]
    NotPeers {
        /// The host veth.
        host: String,
        /// The pod interface.
        ifname: String,
    },
    /// The pod interface lacks its address.
    #[error("pod interface {ifname} does not have address {address}")]
    AddressMissing {
        /// The pod interface.
        ifname: String,
        /// The expected address.
        address: IpNet,
    },
    /// A route is missing.
    #[error("route {route} is missing in the {side} namespace")]
    RouteMissing {
        /// The route, `ip route` style.
        route: String,
        /// `"pod"` or `"node"`.
        side: &'static str,
    },
}

/// Why wiring failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The netns path does not exist.
    #[error("network namespace {} does not exist", path.display())]
    NetnsMissing {
        /// The path.
        path: PathBuf,
    },
    /// The netns path exists but cannot be opened.
    #[error("cannot open network namespace {}: {source}", path.display())]
    NetnsOpen {
        /// The path.
        path: PathBuf,
        /// The open error.
        #[source]
        source: io::Error,
    },
    /// The path is not a network namespace.
    #[error("{} is not a network namespace: {why}", path.display())]
    NotANetns {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        why: &'static str,
    },
    /// The path is the node's own namespace: wiring a "pod" there would hijack the node.
    #[error("{} is the node's own network namespace, not a pod's", path.display())]
    NodeNetns {
        /// The path.
        path: PathBuf,
    },
    /// `setns(2)` into the namespace failed.
    #[error("entering network namespace {} failed: {source}", path.display())]
    Setns {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The pod address and gateway are of different families.
    #[error("pod address {ip} and gateway {gateway} are not of the same IP family")]
    FamilyMismatch {
        /// The pod address.
        ip: IpAddr,
        /// The gateway.
        gateway: IpAddr,
    },
    /// The pod address equals the gateway.
    #[error("pod address {ip} is the gateway address")]
    AddressIsGateway {
        /// The address.
        ip: IpAddr,
    },
    /// Building the netlink runtime failed.
    #[error("starting the netlink runtime failed: {0}")]
    Runtime(#[source] io::Error),
    /// Opening the netlink socket failed.
    #[error("opening a netlink socket failed: {0}")]
    Socket(#[source] io::Error),
    /// A netlink request failed.
    #[error("netlink: {op} {target} failed: {source}")]
    Netlink {
        /// What was being done.
        op: &'static str,
        /// To what.
        target: String,
        /// The kernel's (or the library's) answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// Creating the pair failed because a name is taken.
    #[error("cannot create veth {host}: interface {ifname} already exists in {}", netns.display())]
    PodIfnameTaken {
        /// The host veth.
        host: String,
        /// `CNI_IFNAME`.
        ifname: String,
        /// `CNI_NETNS`.
        netns: PathBuf,
    },
    /// A link disappeared while being configured.
    #[error("interface {name} disappeared while being configured")]
    LinkVanished {
        /// Its name.
        name: String,
    },
    /// A link with the host veth's name exists but is not a veth; not ours to delete.
    #[error("interface {name} exists but is not a veth; refusing to touch it")]
    NotOurs {
        /// Its name.
        name: String,
    },
    /// Writing a per-interface sysctl failed.
    #[error("writing {}: {source}", path.display())]
    Sysctl {
        /// The sysctl file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// `CHECK` found a difference.
    #[error("{0}")]
    Check(#[from] CheckFailure),
}

/// The host-side veth name: `lxc` + 11 hex digits of a stable hash (FNV-1a, 64 bit)
/// of `(container_id, ifname)` — 14 characters, within the kernel's 15.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    // Spelled out rather than std's hasher: the name must not change between builds,
    // or DEL after an upgrade would miss the veth made by the old binary.
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in container_id.bytes().chain([0u8]).chain(ifname.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    format!("lxc{:011x}", hash >> 20)
}

/// An open network namespace, checked to be a real one that is not the caller's own.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    /// Opens and checks `path` (e.g. `/run/netns/x` or `/proc/<pid>/ns/net`).
    pub fn open(path: &Path) -> Result<Netns, WireError> {
        let file = File::open(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => WireError::NetnsMissing {
                path: path.to_path_buf(),
            },
            _ => WireError::NetnsOpen {
                path: path.to_path_buf(),
                source,
            },
        })?;
        let fd = file.as_raw_fd();
        // SAFETY: fstatfs writes into the zeroed struct we own; fd is open for the call.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstatfs(fd, &mut fs) } != 0 {
            return Err(WireError::NetnsOpen {
                path: path.to_path_buf(),
                source: io::Error::last_os_error(),
            });
        }
        if fs.f_type != libc::NSFS_MAGIC {
            // A leftover mount point of a deleted namespace looks exactly like this.
            return Err(WireError::NotANetns {
                path: path.to_path_buf(),
                why: "not a namespace file (stale path of a deleted namespace?)",
            });
        }
        const NS_GET_NSTYPE: libc::c_ulong = 0xb703; // _IO(0xb7, 0x3)
                                                     // SAFETY: NS_GET_NSTYPE takes no argument and only returns a value.
        let kind = unsafe { libc::ioctl(fd, NS_GET_NSTYPE as _) };
        if kind != libc::CLONE_NEWNET {
            return Err(WireError::NotANetns {
                path: path.to_path_buf(),
                why: "it is a namespace of another kind",
            });
        }
        let target = file.metadata().map_err(|source| WireError::NetnsOpen {
            path: path.to_path_buf(),
            source,
        })?;
        if let Ok(own) = std::fs::metadata("/proc/thread-self/ns/net") {
            if own.dev() == target.dev() && own.ino() == target.ino() {
                return Err(WireError::NodeNetns {
                    path: path.to_path_buf(),
                });
            }
        }
        Ok(Netns {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a new thread inside this namespace and returns its result; a panic in
    /// `f` is resumed on the caller. The caller's own namespace is untouched.
    pub fn run<T, F>(&self, f: F) -> Result<T, WireError>
    where
        T: Send,
        F: FnOnce() -> Result<T, WireError> + Send,
    {
        std::thread::scope(|scope| {
            let worker = scope.spawn(|| {
                // SAFETY: setns on an fd we hold open; it only affects this thread,
                // which ends when `f` returns.
                if unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(WireError::Setns {
                        path: self.path.clone(),
                        source: io::Error::last_os_error(),
                    });
                }
                f()
            });
            match worker.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

/// Creates (or reuses) the veth pair for `spec` and configures both ends.
///
/// Idempotent: when the host veth already exists and its peer is `spec.ifname` in the
/// pod's namespace, the pair is reused and its configuration re-applied (same MACs);
/// a host veth with a wrong or missing peer is deleted and the pair recreated. When this
/// call created the pair and a later step fails, the pair is deleted again.
pub fn setup(spec: &WireSpec) -> Result<Wired, WireError> {
    check_families(spec)?;
    let netns = Netns::open(&spec.netns)?;
    let host = spec.host_ifname();
    let host = host.as_str();

    let mut reused = false;
    if let Some(existing) = netlink(|h| async move { find_link(&h, host).await })? {
        if !existing.is_veth {
            return Err(WireError::NotOurs {
                name: host.to_string(),
            });
        }
        let pod = netns.run(|| netlink(|h| async move { find_link(&h, &spec.ifname).await }))?;
        reused = pod.is_some_and(|pod| is_pair(&existing, &pod));
        if !reused {
            teardown(host)?;
        }
    }
    if !reused {
        create_pair(host, spec, &netns)?;
    }
    let configured = (|| {
        let (pod_ifindex, pod_mac) = netns.run(|| configure_pod(spec))?;
        let host_link = configure_host(host, spec)?;
        Ok(Wired {
            host_ifname: host.to_string(),
            host_ifindex: host_link.index,
            host_mac: host_link.mac,
            pod_ifindex,
            pod_mac,
            reused,
        })
    })();
    if configured.is_err() && !reused {
        let _ = teardown(host);
    }
    configured
}

/// Deletes the host veth `host_ifname` (the kernel removes its peer with it). Returns
/// whether a link was deleted; a missing link is not an error.
pub fn teardown(host_ifname: &str) -> Result<bool, WireError> {
    netlink(|h| async move {
        let Some(link) = find_link(&h, host_ifname).await? else {
            return Ok(false);
        };
        if !link.is_veth {
            return Err(WireError::NotOurs {
                name: host_ifname.to_string(),
            });
        }
        match h.link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
            Err(source) => Err(WireError::Netlink {
                op: "delete link",
                target: host_ifname.to_string(),
                source,
            }),
        }
    })
}

/// Checks that `spec` is wired as [`setup`] makes it: host veth up with its `/32` route,
/// pod interface its peer, up, with the address, the gateway route and the default
/// route. A difference is [`WireError::Check`].
pub fn verify(spec: &WireSpec) -> Result<Wired, WireError> {
    check_families(spec)?;
    let netns = Netns::open(&spec.netns)?;
    let host = spec.host_ifname();
    let pod_addr = host_net(spec.ip);
    let gw_net = host_net(spec.gateway);

    let host_link = netlink(|h| async move {
        let link = find_link(&h, &host)
            .await?
            .ok_or_else(|| CheckFailure::HostVethMissing { name: host.clone() })?;
        expect_veth_up(&link)?;
        let routes = main_routes(&h, spec.ip).await?;
        if !has_route(&routes, pod_addr, link.index, None) {
            return Err(CheckFailure::RouteMissing {
                route: format!("{pod_addr} dev {host} scope link"),
                side: "node",
            }
            .into());
        }
        Ok(link)
    })?;

    let pod_link = netns.run(|| {
        netlink(|h| async move {
            let link =
                find_link(&h, &spec.ifname)
                    .await?
                    .ok_or_else(|| CheckFailure::PodIfMissing {
                        ifname: spec.ifname.clone(),
                        netns: spec.netns.clone(),
                    })?;
            expect_veth_up(&link)?;
            let addrs = addresses(&h, link.index).await?;
            if !addrs.contains(&pod_addr) {
                return Err(CheckFailure::AddressMissing {
                    ifname: spec.ifname.clone(),
                    address: pod_addr,
                }
                .into());
            }
            let routes = main_routes(&h, spec.ip).await?;
            let default = IpNet::new(unspecified_like(spec.gateway), 0)
                .expect("prefix 0 is valid for any family");
            for (dst, gw, text) in [
                (
                    gw_net,
                    None,
                    format!("{gw_net} dev {} scope link", spec.ifname),
                ),
                (
                    default,
                    Some(spec.gateway),
                    format!("default via {}", spec.gateway),
                ),
            ] {
                if !has_route(&routes, dst, link.index, gw) {
                    return Err(CheckFailure::RouteMissing {
                        route: text,
                        side: "pod",
                    }
                    .into());
                }
            }
            Ok(link)
        })
    })?;

    if !is_pair(&host_link, &pod_link) {
        return Err(CheckFailure::NotPeers {
            host: host_link.name,
            ifname: pod_link.name,
        }
        .into());
    }
    Ok(Wired {
        host_ifname: host_link.name,
        host_ifindex: host_link.index,
        host_mac: host_link.mac,
        pod_ifindex: pod_link.index,
        pod_mac: pod_link.mac,
        reused: true,
    })
}

fn check_families(spec: &WireSpec) -> Result<(), WireError> {
    if spec.ip.is_ipv4() != spec.gateway.is_ipv4() {
        return Err(WireError::FamilyMismatch {
            ip: spec.ip,
            gateway: spec.gateway,
        });
    }
    if spec.ip == spec.gateway {
        return Err(WireError::AddressIsGateway { ip: spec.ip });
    }
    Ok(())
}

/// What we need to know of a link.
#[derive(Debug, Clone)]
struct Link {
    index: u32,
    name: String,
    mac: String,
    /// For a veth: the peer's index (in the peer's namespace).
    peer_index: Option<u32>,
    is_veth: bool,
    up: bool,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mac: String::new(),
            peer_index: None,
            is_veth: false,
            up: msg.header.flags.contains(LinkFlags::Up),
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::Address(mac) => link.mac = format_mac(mac),
                LinkAttribute::Link(peer) => link.peer_index = Some(*peer),
                LinkAttribute::LinkInfo(infos) => {
                    link.is_veth = infos
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
                }
                _ => {}
            }
        }
        link
    }
}

fn is_pair(host: &Link, pod: &Link) -> bool {
    host.is_veth
        && pod.is_veth
        && host.peer_index == Some(pod.index)
        && pod.peer_index == Some(host.index)
}

fn expect_veth_up(link: &Link) -> Result<(), CheckFailure> {
    if !link.is_veth {
        return Err(CheckFailure::NotVeth {
            name: link.name.clone(),
        });
    }
    if !link.up {
        return Err(CheckFailure::LinkDown {
            name: link.name.clone(),
        });
    }
    Ok(())
}

fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// The errno of a netlink error answer, positive.
fn errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()).filter(|c| *c != 0),
        _ => None,
    }
}

/// Runs `f` with a fresh netlink connection opened in the calling thread's namespace.
fn netlink<T, F, Fut>(f: F) -> Result<T, WireError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, WireError>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(WireError::Runtime)?;
    runtime.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(WireError::Socket)?;
        let driver = tokio::spawn(connection);
        let result = f(handle).await;
        driver.abort();
        result
    })
}

fn nl_err(
    op: &'static str,
    target: impl Into<String>,
) -> impl FnOnce(rtnetlink::Error) -> WireError {
    let target = target.into();
    move |source| WireError::Netlink { op, target, source }
}

async fn find_link(h: &Handle, name: &str) -> Result<Option<Link>, WireError> {
    let mut links = pin!(h.link().get().match_name(name).execute());
    match links.try_next().await {
        Ok(found) => Ok(found.as_ref().map(Link::from_message)),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(source) => Err(WireError::Netlink {
            op: "look up link",
            target: name.to_string(),
            source,
        }),
    }
}

async fn require_link(h: &Handle, name: &str) -> Result<Link, WireError> {
    find_link(h, name)
        .await?
        .ok_or_else(|| WireError::LinkVanished {
            name: name.to_string(),
        })
}

async fn set_link(
    h: &Handle,
    msg: LinkMessage,
    op: &'static str,
    name: &str,
) -> Result<(), WireError> {
    h.link().set(msg).execute().await.map_err(nl_err(op, name))
}

async fn addresses(h: &Handle, index: u32) -> Result<Vec<IpNet>, WireError> {
    Ok(address_messages(h, index)
        .await?
        .iter()
        .filter_map(address_of)
        .collect())
}

async fn address_messages(h: &Handle, index: u32) -> Result<Vec<AddressMessage>, WireError> {
    h.address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl_err("list addresses of link", index.to_string()))
}

fn address_of(msg: &AddressMessage) -> Option<IpNet> {
    msg.attributes.iter().find_map(|attr| match attr {
        AddressAttribute::Address(ip) => IpNet::new(*ip, msg.header.prefix_len).ok(),
        _ => None,
    })
}

async fn main_routes(h: &Handle, family_of: IpAddr) -> Result<Vec<RouteMessage>, WireError> {
    let query = match family_of {
        IpAddr::V4(_) => RouteMessageBuilder::<Ipv4Addr>::new().build(),
        IpAddr::V6(_) => RouteMessageBuilder::<Ipv6Addr>::new().build(),
    };
    let routes: Vec<RouteMessage> = h
        .route()
        .get(query)
        .execute()
        .try_collect()
        .await
        .map_err(nl_err("list routes", "main table"))?;
    Ok(routes
        .into_iter()
        .filter(|r| r.header.table == RouteHeader::RT_TABLE_MAIN)
        .collect())
}

/// A main-table static route to `dst` (no destination attribute when the prefix is 0,
/// i.e. the default route) out of `oif`, optionally via `gateway`.
fn route_message(dst: IpNet, gateway: Option<IpAddr>, oif: u32, scope: RouteScope) -> RouteMessage {
    match dst {
        IpNet::V4(net) => {
            let mut b = RouteMessageBuilder::<Ipv4Addr>::new();
            if net.prefix_len() > 0 {
                b = b.destination_prefix(net.addr(), net.prefix_len());
            }
            if let Some(IpAddr::V4(g)) = gateway {
                b = b.gateway(g);
            }
            b.output_interface(oif).scope(scope).build()
        }
        IpNet::V6(net) => {
            let mut b = RouteMessageBuilder::<Ipv6Addr>::new();
            if net.prefix_len() > 0 {
                b = b.destination_prefix(net.addr(), net.prefix_len());
            }
            if let Some(IpAddr::V6(g)) = gateway {
                b = b.gateway(g);
            }
            b.output_interface(oif).scope(scope).build()
        }
    }
}

fn route_ip(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn has_route(routes: &[RouteMessage], dst: IpNet, oif: u32, gateway: Option<IpAddr>) -> bool {
    routes.iter().any(|route| {
        let mut r_dst = unspecified_like(dst.addr());
        let mut r_oif = None;
        let mut r_gw = None;
        for attr in &route.attributes {
            match attr {
                RouteAttribute::Destination(a) => r_dst = route_ip(a).unwrap_or(r_dst),
                RouteAttribute::Oif(i) => r_oif = Some(*i),
                RouteAttribute::Gateway(a) => r_gw = route_ip(a),
                _ => {}
            }
        }
        route.header.destination_prefix_length == dst.prefix_len()
            && r_dst == dst.addr()
            && r_oif == Some(oif)
            && r_gw == gateway
    })
}

/// Creates the pair with the peer born inside the pod namespace under its final name.
///
/// One RTM_NEWLINK carrying the peer's IFLA_NET_NS_FD does the "create, move, rename"
/// at once: no moment where the peer sits in the node namespace (where a name like
/// `eth0` would collide with the node's own NIC) and nothing half-done to clean up.
fn create_pair(host: &str, spec: &WireSpec, netns: &Netns) -> Result<(), WireError> {
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(spec.ifname.clone())
        .mtu(spec.mtu)
        .setns_by_fd(netns.file.as_raw_fd())
        .build();
    let pair = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host.to_string())
        .mtu(spec.mtu)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    netlink(|h| async move {
        match h.link().add(pair).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(libc::EEXIST) => Err(WireError::PodIfnameTaken {
                host: host.to_string(),
                ifname: spec.ifname.clone(),
                netns: spec.netns.clone(),
            }),
            Err(source) => Err(WireError::Netlink {
                op: "create veth pair",
                target: format!("{host} <-> {}", spec.ifname),
                source,
            }),
        }
    })
}

/// Pod side, run inside the pod namespace: `lo` up, MTU, `ip/32` (and no other address
/// of that family), link up, `gateway/32 dev ifname scope link`, `default via gateway`.
fn configure_pod(spec: &WireSpec) -> Result<(u32, String), WireError> {
    netlink(|h| async move {
        let lo = require_link(&h, "lo").await?;
        set_link(
            &h,
            LinkUnspec::new_with_index(lo.index).up().build(),
            "set up",
            "lo",
        )
        .await?;

        let link = require_link(&h, &spec.ifname).await?;
        let ifname = spec.ifname.as_str();
        set_link(
            &h,
            LinkUnspec::new_with_index(link.index).mtu(spec.mtu).build(),
            "set mtu",
            ifname,
        )
        .await?;

        let want = host_net(spec.ip);
        for msg in address_messages(&h, link.index).await? {
            // Only stale addresses of our family go; IPv6 link-locals are the kernel's.
            let stale = address_of(&msg).is_some_and(|a| {
                a != want
                    && a.addr().is_ipv4() == want.addr().is_ipv4()
                    && !matches!(a.addr(), IpAddr::V6(v6) if v6.is_unicast_link_local())
            });
            if stale {
                h.address()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(nl_err("remove stale address from", ifname))?;
            }
        }
        h.address()
            .add(link.index, want.addr(), want.prefix_len())
            .replace()
            .execute()
            .await
            .map_err(nl_err("add address to", ifname))?;

        set_link(
            &h,
            LinkUnspec::new_with_index(link.index).up().build(),
            "set up",
            ifname,
        )
        .await?;

        let gw_route = route_message(host_net(spec.gateway), None, link.index, RouteScope::Link);
        h.route()
            .add(gw_route)
            .replace()
            .execute()
            .await
            .map_err(nl_err("add gateway route via", ifname))?;
        let any = IpNet::new(unspecified_like(spec.gateway), 0).expect("prefix 0 fits any family");
        let default = route_message(any, Some(spec.gateway), link.index, RouteScope::Universe);
        h.route()
            .add(default)
            .replace()
            .execute()
            .await
            .map_err(nl_err("add default route via", ifname))?;
        Ok((link.index, link.mac))
    })
}

/// Node side: host veth MTU and up, `ip/32 dev host scope link`, per-interface sysctls.
fn configure_host(host: &str, spec: &WireSpec) -> Result<Link, WireError> {
    let link = netlink(|h| async move {
        let link = require_link(&h, host).await?;
        set_link(
            &h,
            LinkUnspec::new_with_index(link.index)
                .mtu(spec.mtu)
                .up()
                .build(),
            "set up",
            host,
        )
        .await?;
        let route = route_message(host_net(spec.ip), None, link.index, RouteScope::Link);
        h.route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(nl_err("add pod route via", host))?;
        Ok(link)
    })?;
    // Pod traffic arrives on a /32 point-to-point link: strict reverse-path filtering
    // would drop replies the agent's datapath redirects; forwarding lets the node route.
    let mut sysctls = vec![
        (format!("/proc/sys/net/ipv4/conf/{host}/rp_filter"), "0"),
        (format!("/proc/sys/net/ipv4/conf/{host}/forwarding"), "1"),
    ];
    if spec.ip.is_ipv6() {
        sysctls.push((format!("/proc/sys/net/ipv6/conf/{host}/forwarding"), "1"));
    }
    for (path, value) in sysctls {
        std::fs::write(&path, value).map_err(|source| WireError::Sysctl {
            path: PathBuf::from(path),
            source,
        })?;
    }
    Ok(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_stable_short_and_distinct() {
        let a = host_veth_name("0123456789abcdef", "eth0");
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("lxc"));
        assert!(a[3..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, host_veth_name("0123456789abcdef", "eth0"));
        assert_ne!(a, host_veth_name("0123456789abcdef", "eth1"));
        assert_ne!(a, host_veth_name("0123456789abcdee", "eth0"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(host_veth_name("ab", "c"), host_veth_name("a", "bc"));
        // Pinned: a change here breaks DEL of pods wired by an older binary.
        assert_eq!(
            host_veth_name("", ""),
            format!("lxc{:011x}", 0xaf63_bd4c_8601_b7df_u64 >> 20)
        );
    }

    #[test]
    fn missing_and_bogus_netns_paths_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone");
        assert!(matches!(
            Netns::open(&missing),
            Err(WireError::NetnsMissing { .. })
        ));
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"").unwrap();
        assert!(matches!(
            Netns::open(&plain),
            Err(WireError::NotANetns { .. })
        ));
        assert!(matches!(
            Netns::open(Path::new("/proc/self/ns/net")),
            Err(WireError::NodeNetns { .. })
        ));
        if Path::new("/proc/self/ns/uts").exists() {
            assert!(matches!(
                Netns::open(Path::new("/proc/self/ns/uts")),
                Err(WireError::NotANetns { .. })
            ));
        }
    }

    #[test]
    fn family_mismatch_is_rejected_before_touching_anything() {
        let spec = WireSpec {
            container_id: "c".into(),
            ifname: "eth0".into(),
            netns: PathBuf::from("/nonexistent"),
            ip: "10.0.0.5".parse().unwrap(),
            gateway: "fd00::1".parse().unwrap(),
            mtu: 1500,
        };
        assert!(matches!(
            setup(&spec),
            Err(WireError::FamilyMismatch { .. })
        ));
    }
}
