//! Loading, pinning and attaching.
//!
//! Pins live under `<bpfRoot>/<node>/`: `maps/` (ring buffer, conntrack, lost counters,
//! config: reused across agent restarts, so conntrack state and unread records survive) and
//! `links/` (one TCX link per interface and direction). A restarted agent loads fresh
//! programs and atomically swaps them into the pinned links: the packets never see a moment
//! without a program, and established connections keep their conntrack entries.

use aya::{
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        tc::{self, SchedClassifierLink, TcAttachOptions},
        LinkOrder, SchedClassifier, TcAttachType,
    },
    Ebpf, EbpfLoader,
};
use lumen_abi::{aggregation, cfg_flags, maps, programs, DatapathConfig};
use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::config::MonitorAggregation;

/// bpffs' magic number in `statfs.f_type`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The datapath's address-translation settings.
#[derive(Debug, Clone, Default)]
pub struct NatSettings {
    /// This node's uplink address: the source of source-NATed and masqueraded traffic.
    pub node_ipv4: Option<std::net::Ipv4Addr>,
    /// `ipv4NativeRoutingCIDR`.
    pub native_cidr: Option<ipnet::Ipv4Net>,
    /// `bpf.masquerade`.
    pub masquerade: bool,
    /// `kubeProxyReplacement`.
    pub kube_proxy_replacement: bool,
    /// `encryption.enabled` (WireGuard): pod traffic to `WG_PEERS` prefixes is
    /// redirected into the tunnel.
    pub encryption: bool,
    /// `encryption.strictMode.cidr` when strict mode is on.
    pub strict_cidr: Option<ipnet::Ipv4Net>,
}

/// Errors of the datapath boundary.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The pin root is not on a bpf filesystem.
    #[error("{0} is not on a bpf filesystem: mount one with `mount -t bpf bpf /sys/fs/bpf` (the agent needs bpffs to pin its maps and links)")]
    NoBpffs(PathBuf),
    /// Not allowed to load programs.
    #[error("not permitted to load eBPF programs ({0}): run the agent as root or with CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN")]
    NotPermitted(String),
    /// Loading the object failed.
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program could not be loaded (verifier) or attached.
    #[error("program {name}: {source}")]
    Program {
        /// Program name.
        name: &'static str,
        /// Why.
        source: aya::programs::ProgramError,
    },
    /// A map was missing or of the wrong type.
    #[error("map {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// Why.
        source: aya::maps::MapError,
    },
    /// A Maglev table could not be built (too many backends for the table size).
    #[error("Maglev table: {0}")]
    Maglev(#[from] lumen_lb::MaglevError),
    /// The object lacks a program or map this agent expects.
    #[error("the eBPF object has no {0}; rebuild the agent")]
    Missing(&'static str),
    /// Pinning or adopting a link.
    #[error("link pin {path}: {reason}")]
    Pin {
        /// The pin.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// File-system trouble around the pin directory.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Where a program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// tc ingress of a pod's host-side veth (FROM_ENDPOINT).
    EndpointIngress,
    /// tc egress of a pod's host-side veth (TO_ENDPOINT).
    EndpointEgress,
    /// tc ingress of the node uplink (FROM_NETWORK).
    NetworkIngress,
    /// tc egress of the node uplink (TO_NETWORK).
    NetworkEgress,
    /// tc ingress of the WireGuard device (FROM_CRYPTO).
    CryptoIngress,
}

impl Hook {
    fn program(self) -> &'static str {
        match self {
            Hook::EndpointIngress => programs::FROM_ENDPOINT,
            Hook::EndpointEgress => programs::TO_ENDPOINT,
            Hook::NetworkIngress => programs::FROM_NETWORK,
            Hook::NetworkEgress => programs::TO_NETWORK,
            Hook::CryptoIngress => programs::FROM_CRYPTO,
        }
    }
    fn attach_type(self) -> TcAttachType {
        match self {
            Hook::EndpointIngress | Hook::NetworkIngress | Hook::CryptoIngress => {
                TcAttachType::Ingress
            }
            Hook::EndpointEgress | Hook::NetworkEgress => TcAttachType::Egress,
        }
    }
    fn suffix(self) -> &'static str {
        match self.attach_type() {
            TcAttachType::Ingress => "ingress",
            _ => "egress",
        }
    }
    /// Both hooks of a pod's veth.
    pub const ENDPOINT: [Hook; 2] = [Hook::EndpointIngress, Hook::EndpointEgress];
    /// Both hooks of an uplink.
    pub const NETWORK: [Hook; 2] = [Hook::NetworkIngress, Hook::NetworkEgress];
}

/// What `attach` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachOutcome {
    /// A new TCX link was created and pinned.
    Attached,
    /// A pinned link from a previous agent now runs this agent's program.
    Adopted,
    /// TCX was unavailable; attached through a clsact qdisc instead (not pinnable).
    Clsact,
}

/// The loaded datapath.
pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    /// True when the maps already existed (a previous agent's state was adopted).
    pub adopted_maps: bool,
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Capabilities the datapath needs: (bit, name).
const NEEDED_CAPS: [(u32, &str); 3] = [
    (39, "CAP_BPF"),
    (12, "CAP_NET_ADMIN"),
    (21, "CAP_SYS_ADMIN"),
];

/// The needed capabilities this process lacks (from `CapEff` in /proc/self/status).
pub fn missing_capabilities() -> Vec<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    NEEDED_CAPS
        .iter()
        .filter(|(bit, _)| eff & (1u64 << bit) == 0)
        .map(|(_, n)| *n)
        .collect()
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DatapathError + '_ {
    move |source| DatapathError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn permission_hint(e: aya::EbpfError) -> DatapathError {
    let text = e.to_string();
    if text.contains("Operation not permitted") || text.contains("EPERM") {
        DatapathError::NotPermitted(text)
    } else {
        DatapathError::Load(e)
    }
}

impl Datapath {
    /// Loads the object with its maps pinned under `pin_dir/maps` (reusing existing pins),
    /// loads every program into the kernel, and writes the runtime configuration.
    pub fn load(
        pin_dir: &Path,
        ring_bytes: u32,
        ct_max: u32,
        monitor: MonitorAggregation,
        interval: Duration,
    ) -> Result<Self, DatapathError> {
        let missing = missing_capabilities();
        if !missing.is_empty() {
            return Err(DatapathError::NotPermitted(format!(
                "missing {}",
                missing.join(", ")
            )));
        }
        // The closest existing ancestor must be bpffs (the node directory may not exist yet).
        let mut probe = pin_dir.to_path_buf();
        while !probe.exists() {
            if !probe.pop() {
                break;
            }
        }
        if !is_bpffs(&probe) {
            return Err(DatapathError::NoBpffs(probe));
        }
        let maps_dir = pin_dir.join("maps");
        std::fs::create_dir_all(&maps_dir).map_err(io_err(&maps_dir))?;
        std::fs::create_dir_all(pin_dir.join("links")).map_err(io_err(pin_dir))?;
        let adopted_maps = maps_dir.join(maps::EVENTS).exists();

        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .map_max_entries(maps::EVENTS, ring_bytes)
            .map_max_entries(maps::CT, ct_max)
            .load(super::OBJECT)
            .map_err(permission_hint)?;
        for name in [
            programs::FROM_ENDPOINT,
            programs::TO_ENDPOINT,
            programs::FROM_NETWORK,
            programs::TO_NETWORK,
            programs::FROM_CRYPTO,
        ] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(DatapathError::Missing(name))?
                .try_into()
                .map_err(|source| DatapathError::Program { name, source })?;
            prog.load()
                .map_err(|source| DatapathError::Program { name, source })?;
        }
        let mut dp = Datapath {
            ebpf,
            pin_dir: pin_dir.to_path_buf(),
            adopted_maps,
        };
        dp.configure(monitor, interval)?;
        Ok(dp)
    }

    /// Changes the datapath configuration in place (`CONFIG[0]`, read, `change`d, written
    /// back); takes effect on the next packet.
    fn update_config(
        &mut self,
        change: impl FnOnce(&mut DatapathConfig),
    ) -> Result<(), DatapathError> {
        let map = self
            .ebpf
            .map_mut(maps::CONFIG)
            .ok_or(DatapathError::Missing(maps::CONFIG))?;
        let map_err = |source| DatapathError::Map {
            name: maps::CONFIG,
            source,
        };
        let mut cfg: Array<&mut MapData, DatapathConfig> = Array::try_from(map).map_err(map_err)?;
        // A fresh array holds zeros: every setting off.
        let mut value = cfg.get(&0, 0).map_err(map_err)?;
        change(&mut value);
        cfg.set(0, value, 0).map_err(map_err)
    }

    /// Writes the address-translation settings.
    pub fn set_nat(&mut self, nat: &NatSettings) -> Result<(), DatapathError> {
        self.update_config(|c| {
            c.node_ipv4 = nat.node_ipv4.map(|a| a.octets()).unwrap_or([0; 4]);
            c.native_cidr = nat
                .native_cidr
                .map(|n| n.network().octets())
                .unwrap_or([0; 4]);
            c.native_prefix = nat.native_cidr.map(|n| n.prefix_len()).unwrap_or(0);
            c.flags = 0;
            if nat.masquerade {
                c.flags |= cfg_flags::MASQUERADE;
            }
            if nat.kube_proxy_replacement {
                c.flags |= cfg_flags::SERVICES;
            }
            if nat.encryption {
                c.flags |= cfg_flags::ENCRYPTION;
            }
            c.strict_cidr = nat
                .strict_cidr
                .map(|n| n.network().octets())
                .unwrap_or([0; 4]);
            c.strict_prefix = nat.strict_cidr.map(|n| n.prefix_len()).unwrap_or(0);
            if nat.strict_cidr.is_some() {
                c.flags |= cfg_flags::STRICT_ENCRYPTION;
            }
        })
    }

    /// Writes the monitor-aggregation settings.
    pub fn configure(
        &mut self,
        monitor: MonitorAggregation,
        interval: Duration,
    ) -> Result<(), DatapathError> {
        self.update_config(|c| {
            c.aggregation = match monitor {
                MonitorAggregation::None => aggregation::NONE,
                MonitorAggregation::Medium => aggregation::MEDIUM,
            };
            c.aggregation_interval_ns = interval.as_nanos() as u64;
        })
    }

    fn link_pin(&self, ifname: &str, hook: Hook) -> PathBuf {
        self.pin_dir
            .join("links")
            .join(format!("{ifname}-{}", hook.suffix()))
    }

    /// Attaches `hook`'s program to `ifname`, adopting a pinned link if one exists.
    pub fn attach(&mut self, ifname: &str, hook: Hook) -> Result<AttachOutcome, DatapathError> {
        let pin = self.link_pin(ifname, hook);
        let name = hook.program();
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .ok_or(DatapathError::Missing(name))?
            .try_into()
            .map_err(|source| DatapathError::Program { name, source })?;
        let perr = |source| DatapathError::Program { name, source };
        match PinnedLink::from_pin(&pin) {
            Ok(old) => {
                let link: SchedClassifierLink =
                    FdLink::from(old)
                        .try_into()
                        .map_err(|e: LinkError| DatapathError::Pin {
                            path: pin.clone(),
                            reason: e.to_string(),
                        })?;
                let id = prog.attach_to_link(link).map_err(perr)?;
                // The pin keeps the link alive; our handle may go.
                let _ = prog.take_link(id).map_err(perr)?;
                return Ok(AttachOutcome::Adopted);
            }
            Err(LinkError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                // A stale or foreign pin: drop it and attach afresh.
                tracing::warn!(pin = %pin.display(), error = %e, "removing unusable link pin");
                let _ = std::fs::remove_file(&pin);
            }
        }
        match prog.attach_with_options(
            ifname,
            hook.attach_type(),
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        ) {
            Ok(id) => {
                let link = prog.take_link(id).map_err(perr)?;
                let fd: FdLink = link.try_into().map_err(|e: LinkError| DatapathError::Pin {
                    path: pin.clone(),
                    reason: e.to_string(),
                })?;
                fd.pin(&pin).map_err(|e| DatapathError::Pin {
                    path: pin.clone(),
                    reason: e.to_string(),
                })?;
                Ok(AttachOutcome::Attached)
            }
            Err(tcx_err) => {
                // Kernels before 6.6 have no TCX: fall back to a clsact qdisc.
                tracing::warn!(ifname, error = %tcx_err, "TCX attach failed; falling back to clsact");
                let _ = tc::qdisc_add_clsact(ifname);
                let id = prog
                    .attach_with_options(
                        ifname,
                        hook.attach_type(),
                        TcAttachOptions::Netlink(Default::default()),
                    )
                    .map_err(perr)?;
                // Netlink filters outlive the process by themselves.
                std::mem::forget(prog.take_link(id).map_err(perr)?);
                Ok(AttachOutcome::Clsact)
            }
        }
    }

    /// Detaches `hook` from `ifname` by dropping its pinned link. Missing is fine.
    pub fn detach(&mut self, ifname: &str, hook: Hook) -> Result<(), DatapathError> {
        let pin = self.link_pin(ifname, hook);
        match PinnedLink::from_pin(&pin) {
            Ok(link) => {
                let fd = link.unpin().map_err(io_err(&pin))?;
                drop(fd); // last reference: the kernel detaches the program
                Ok(())
            }
            Err(LinkError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => {
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&pin);
                Err(DatapathError::Pin {
                    path: pin,
                    reason: e.to_string(),
                })
            }
        }
    }

    /// Pinned links whose interface name starts with `prefix` (to find stale ones).
    pub fn pinned_links(&self) -> Vec<String> {
        std::fs::read_dir(self.pin_dir.join("links"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Takes the ring buffer for the reader.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        let map = self
            .ebpf
            .take_map(maps::EVENTS)
            .ok_or(DatapathError::Missing(maps::EVENTS))?;
        RingBuf::try_from(map).map_err(|source| DatapathError::Map {
            name: maps::EVENTS,
            source,
        })
    }

    /// Takes a map out of the object (each can be taken once).
    pub fn take_map(&mut self, name: &'static str) -> Result<aya::maps::Map, DatapathError> {
        self.ebpf.take_map(name).ok_or(DatapathError::Missing(name))
    }

    /// Takes the per-CPU lost-record counters for the reader.
    pub fn take_lost(&mut self) -> Result<PerCpuArray<MapData, u64>, DatapathError> {
        let map = self
            .ebpf
            .take_map(maps::LOST)
            .ok_or(DatapathError::Missing(maps::LOST))?;
        PerCpuArray::try_from(map).map_err(|source| DatapathError::Map {
            name: maps::LOST,
            source,
        })
    }
}
