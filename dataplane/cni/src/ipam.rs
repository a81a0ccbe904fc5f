//! The node-local address allocator the agent runs for `IpamAllocate`: hands out the
//! addresses of the node's pod CIDR one per attachment, persisting every change to a
//! JSON state file (write to temp, fsync, rename) so an agent restart keeps every
//! running pod's address. Pure bookkeeping: no netlink, no locking (the agent owns the
//! single instance).

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use crate::protocol::Attachment;

/// The state file format version written by this code.
const STATE_VERSION: u32 = 1;

/// Why an IPAM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// The pod CIDR cannot be used (IPv6 for now, or too small to have hosts).
    #[error("pod CIDR {cidr} is not usable: {why}")]
    UnsupportedCidr {
        /// The configured CIDR.
        cidr: IpNet,
        /// Why.
        why: &'static str,
    },
    /// The gateway is not an address of the pod CIDR's family.
    #[error("gateway {gateway} is not an IPv4 address like pod CIDR {cidr}")]
    GatewayFamily {
        /// The configured gateway.
        gateway: IpAddr,
        /// The configured CIDR.
        cidr: IpNet,
    },
    /// Reading the state file failed.
    #[error("cannot read IPAM state file {}: {source}", path.display())]
    Read {
        /// The state file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The state file is not valid JSON of the expected shape.
    #[error(
        "IPAM state file {} is corrupt ({source}). It records which addresses running pods use: \
         restore it from a backup or fix it by hand; only if no pods run on this node, delete it \
         and restart lumen-agent",
        path.display()
    )]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The state file parses but contradicts itself or the configuration.
    #[error(
        "IPAM state file {} is inconsistent: {problem}. Fix it by hand, or — only if no pods run \
         on this node — delete it and restart lumen-agent",
        path.display()
    )]
    Inconsistent {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The state file was written for another pod CIDR.
    #[error(
        "IPAM state file {} belongs to pod CIDR {recorded}, but this node's pod CIDR is now \
         {configured}. Drain the node, delete the file and restart lumen-agent",
        path.display()
    )]
    CidrChanged {
        /// The state file.
        path: PathBuf,
        /// The CIDR in the file.
        recorded: IpNet,
        /// The CIDR configured now.
        configured: IpNet,
    },
    /// Every address of the pool is in use.
    #[error("pod CIDR {cidr} is exhausted: all {in_use} usable addresses are allocated")]
    Exhausted {
        /// The pod CIDR.
        cidr: IpNet,
        /// Addresses in use.
        in_use: usize,
    },
    /// Writing the state file failed (the change was not made).
    #[error("cannot write IPAM state file {}: {source}", path.display())]
    Persist {
        /// The state file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// One allocated address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The pod interface it belongs to.
    pub attachment: Attachment,
    /// `namespace/pod`, for humans reading the state.
    pub owner: String,
    /// The address.
    pub ip: IpAddr,
}

/// The file's shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    pod_cidr: IpNet,
    gateway: IpAddr,
    /// The last address handed out; the next search starts after it.
    last: Option<Ipv4Addr>,
    allocations: Vec<StoredAllocation>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredAllocation {
    container_id: String,
    ifname: String,
    owner: String,
    ip: Ipv4Addr,
}

/// The allocator for one node's pod CIDR.
#[derive(Debug)]
pub struct Ipam {
    path: PathBuf,
    cidr: Ipv4Net,
    gateway: IpAddr,
    last: Option<Ipv4Addr>,
    /// Keyed by `(container_id, ifname)`; ordered so the file is stable and diffable.
    by_attachment: BTreeMap<(String, String), (String, Ipv4Addr)>,
    in_use: HashSet<Ipv4Addr>,
}

impl Ipam {
    /// Opens the allocator, loading `state_file` if it exists (creating its directory and
    /// an empty state otherwise, so an unwritable location fails at startup, not at the
    /// first pod).
    ///
    /// The network address, the broadcast address and `gateway` are never handed out.
    /// IPv4 only for now; the CIDR must leave at least two host addresses (`/30` or
    /// larger).
    pub fn open(state_file: &Path, pod_cidr: IpNet, gateway: IpAddr) -> Result<Ipam, IpamError> {
        let cidr = match pod_cidr.trunc() {
            IpNet::V4(net) if net.prefix_len() <= 30 => net,
            IpNet::V4(_) => {
                return Err(IpamError::UnsupportedCidr {
                    cidr: pod_cidr,
                    why: "prefixes longer than /30 leave no usable pod addresses",
                })
            }
            IpNet::V6(_) => {
                return Err(IpamError::UnsupportedCidr {
                    cidr: pod_cidr,
                    why: "IPv6 pod CIDRs are not supported yet",
                })
            }
        };
        if !gateway.is_ipv4() {
            return Err(IpamError::GatewayFamily {
                gateway,
                cidr: pod_cidr,
            });
        }
        let mut ipam = Ipam {
            path: state_file.to_path_buf(),
            cidr,
            gateway,
            last: None,
            by_attachment: BTreeMap::new(),
            in_use: HashSet::new(),
        };
        match fs::read(state_file) {
            Ok(bytes) => ipam.load(&bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = state_file.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs::create_dir_all(dir).map_err(|source| IpamError::Persist {
                        path: state_file.to_path_buf(),
                        source,
                    })?;
                }
                ipam.persist()?;
            }
            Err(source) => {
                return Err(IpamError::Read {
                    path: state_file.to_path_buf(),
                    source,
                })
            }
        }
        Ok(ipam)
    }

    fn load(&mut self, bytes: &[u8]) -> Result<(), IpamError> {
        let state: StateFile =
            serde_json::from_slice(bytes).map_err(|source| IpamError::Corrupt {
                path: self.path.clone(),
                source,
            })?;
        let inconsistent = |problem: String| IpamError::Inconsistent {
            path: self.path.clone(),
            problem,
        };
        if state.version != STATE_VERSION {
            return Err(inconsistent(format!(
                "format version {} is not the supported {STATE_VERSION}",
                state.version
            )));
        }
        if state.pod_cidr.trunc() != IpNet::V4(self.cidr) {
            return Err(IpamError::CidrChanged {
                path: self.path.clone(),
                recorded: state.pod_cidr,
                configured: IpNet::V4(self.cidr),
            });
        }
        for stored in state.allocations {
            let ip = stored.ip;
            if !self.usable(ip) {
                return Err(inconsistent(format!(
                    "{}/{} ({}) holds {ip}, which is not a usable pod address of {} with gateway {}",
                    stored.container_id, stored.ifname, stored.owner, self.cidr, self.gateway
                )));
            }
            if !self.in_use.insert(ip) {
                return Err(inconsistent(format!("{ip} is allocated twice")));
            }
            let key = (stored.container_id, stored.ifname);
            if self.by_attachment.contains_key(&key) {
                return Err(inconsistent(format!(
                    "attachment {}/{} has two addresses",
                    key.0, key.1
                )));
            }
            self.by_attachment.insert(key, (stored.owner, ip));
        }
        self.last = state.last.filter(|ip| self.cidr.contains(ip));
        if state.gateway != self.gateway {
            // A new gateway only matters if it is free; record it so the file tells the truth.
            self.persist()?;
        }
        Ok(())
    }

    /// The address of `attachment`, allocating one if it has none (idempotent).
    ///
    /// Allocation walks the pool from just after the last address handed out, so a
    /// released address is reused as late as possible (stale flows and caches of the
    /// old pod are unlikely to be attributed to the new one).
    pub fn allocate(&mut self, attachment: &Attachment, owner: &str) -> Result<IpAddr, IpamError> {
        if let Some(ip) = self.get(attachment) {
            return Ok(ip);
        }
        let ip = self.next_free().ok_or(IpamError::Exhausted {
            cidr: IpNet::V4(self.cidr),
            in_use: self.in_use.len(),
        })?;
        let key = key(attachment);
        let previous_last = self.last.replace(ip);
        self.by_attachment
            .insert(key.clone(), (owner.to_string(), ip));
        self.in_use.insert(ip);
        if let Err(e) = self.persist() {
            self.by_attachment.remove(&key);
            self.in_use.remove(&ip);
            self.last = previous_last;
            return Err(e);
        }
        Ok(IpAddr::V4(ip))
    }

    /// Frees the address of `attachment`; `None` if it had none.
    pub fn release(&mut self, attachment: &Attachment) -> Result<Option<IpAddr>, IpamError> {
        let key = key(attachment);
        let Some((owner, ip)) = self.by_attachment.remove(&key) else {
            return Ok(None);
        };
        self.in_use.remove(&ip);
        if let Err(e) = self.persist() {
            self.by_attachment.insert(key, (owner, ip));
            self.in_use.insert(ip);
            return Err(e);
        }
        Ok(Some(IpAddr::V4(ip)))
    }

    /// The address of `attachment`, if allocated.
    pub fn get(&self, attachment: &Attachment) -> Option<IpAddr> {
        self.by_attachment
            .get(&key(attachment))
            .map(|(_, ip)| IpAddr::V4(*ip))
    }

    /// Every allocation, ordered by attachment.
    pub fn allocations(&self) -> Vec<Allocation> {
        self.by_attachment
            .iter()
            .map(|((container_id, ifname), (owner, ip))| Allocation {
                attachment: Attachment {
                    container_id: container_id.clone(),
                    ifname: ifname.clone(),
                },
                owner: owner.clone(),
                ip: IpAddr::V4(*ip),
            })
            .collect()
    }

    /// The pod CIDR.
    pub fn pod_cidr(&self) -> IpNet {
        IpNet::V4(self.cidr)
    }

    /// The gateway (never allocated).
    pub fn gateway(&self) -> IpAddr {
        self.gateway
    }

    /// How many addresses the pool can hand out in total.
    pub fn capacity(&self) -> usize {
        self.cidr.hosts().filter(|ip| self.usable(*ip)).count()
    }

    /// The state file path.
    pub fn state_file(&self) -> &Path {
        &self.path
    }

    fn usable(&self, ip: Ipv4Addr) -> bool {
        self.cidr.contains(&ip)
            && ip != self.cidr.network()
            && ip != self.cidr.broadcast()
            && IpAddr::V4(ip) != self.gateway
    }

    fn next_free(&self) -> Option<Ipv4Addr> {
        let first = u32::from(self.cidr.network()) + 1;
        let last = u32::from(self.cidr.broadcast()) - 1;
        let size = last - first + 1;
        let start = match self.last {
            Some(ip) if (first..=last).contains(&u32::from(ip)) => u32::from(ip) - first + 1,
            _ => 0,
        };
        (0..size)
            .map(|step| Ipv4Addr::from(first + (start + step) % size))
            .find(|ip| self.usable(*ip) && !self.in_use.contains(ip))
    }

    fn persist(&self) -> Result<(), IpamError> {
        let state = StateFile {
            version: STATE_VERSION,
            pod_cidr: IpNet::V4(self.cidr),
            gateway: self.gateway,
            last: self.last,
            allocations: self
                .by_attachment
                .iter()
                .map(|((container_id, ifname), (owner, ip))| StoredAllocation {
                    container_id: container_id.clone(),
                    ifname: ifname.clone(),
                    owner: owner.clone(),
                    ip: *ip,
                })
                .collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&state).map_err(|e| IpamError::Persist {
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        bytes.push(b'\n');
        write_atomically(&self.path, &bytes).map_err(|source| IpamError::Persist {
            path: self.path.clone(),
            source,
        })
    }
}

fn key(attachment: &Attachment) -> (String, String) {
    (attachment.container_id.clone(), attachment.ifname.clone())
}

/// Replaces `path` with `bytes` so a crash leaves either the old or the new content.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    // The rename is durable only once the directory entry is on disk.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(id: &str) -> Attachment {
        Attachment {
            container_id: id.to_string(),
            ifname: "eth0".to_string(),
        }
    }

    fn open(dir: &Path, cidr: &str, gw: &str) -> Result<Ipam, IpamError> {
        Ipam::open(
            &dir.join("ipam.json"),
            cidr.parse().unwrap(),
            gw.parse().unwrap(),
        )
    }

    #[test]
    fn allocates_idempotently_and_skips_reserved_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = open(dir.path(), "10.1.0.0/29", "10.1.0.1").unwrap();
        assert_eq!(ipam.capacity(), 5); // .2 to .6
        let a = ipam.allocate(&att("a"), "demo/a").unwrap();
        assert_eq!(a, "10.1.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(ipam.allocate(&att("a"), "demo/a").unwrap(), a);
        assert_eq!(ipam.get(&att("a")), Some(a));
        let mut all = vec![a];
        for id in ["b", "c", "d", "e"] {
            all.push(ipam.allocate(&att(id), &format!("demo/{id}")).unwrap());
        }
        let expected: Vec<IpAddr> = (2..=6)
            .map(|i| format!("10.1.0.{i}").parse().unwrap())
            .collect();
        assert_eq!(all, expected);
        let err = ipam.allocate(&att("f"), "demo/f").unwrap_err();
        assert!(
            matches!(err, IpamError::Exhausted { in_use: 5, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("10.1.0.0/29"));
    }

    #[test]
    fn same_container_other_interface_gets_another_address() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = open(dir.path(), "10.1.0.0/24", "10.1.0.1").unwrap();
        let eth0 = ipam.allocate(&att("a"), "demo/a").unwrap();
        let net1 = Attachment {
            container_id: "a".into(),
            ifname: "net1".into(),
        };
        assert_ne!(ipam.allocate(&net1, "demo/a").unwrap(), eth0);
    }

    #[test]
    fn release_frees_and_reuse_comes_last() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = open(dir.path(), "10.1.0.0/29", "10.1.0.6").unwrap();
        let a = ipam.allocate(&att("a"), "demo/a").unwrap();
        assert_eq!(ipam.release(&att("a")).unwrap(), Some(a));
        assert_eq!(ipam.release(&att("a")).unwrap(), None);
        assert_eq!(ipam.get(&att("a")), None);
        // Next-fit: the released .1 comes back only after .2 .. .5 (gateway .6 skipped).
        let got: Vec<String> = ["b", "c", "d", "e", "f"]
            .iter()
            .map(|id| ipam.allocate(&att(id), "demo/x").unwrap().to_string())
            .collect();
        assert_eq!(
            got,
            ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.1"]
        );
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = {
            let mut ipam = open(dir.path(), "10.2.0.0/24", "10.2.0.1").unwrap();
            let a = ipam.allocate(&att("a"), "demo/a").unwrap();
            let b = ipam.allocate(&att("b"), "demo/b").unwrap();
            ipam.release(&att("a")).unwrap();
            (a, b)
        };
        let mut ipam = open(dir.path(), "10.2.0.0/24", "10.2.0.1").unwrap();
        assert_eq!(ipam.get(&att("a")), None);
        assert_eq!(ipam.get(&att("b")), Some(b));
        assert_eq!(ipam.allocate(&att("b"), "demo/b").unwrap(), b);
        let c = ipam.allocate(&att("c"), "demo/c").unwrap();
        assert_ne!(
            c, a,
            "the cursor survives too: no early reuse after restart"
        );
        assert_eq!(ipam.allocations().len(), 2);
        assert_eq!(ipam.allocations()[0].owner, "demo/b");
        assert!(!dir.path().join("ipam.json.tmp").exists());
    }

    #[test]
    fn creates_missing_directory_and_writes_state_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("var/lib/lumen/ipam.json");
        Ipam::open(
            &path,
            "10.3.0.0/24".parse().unwrap(),
            "10.3.0.1".parse().unwrap(),
        )
        .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("10.3.0.0/24"), "{text}");
    }

    #[test]
    fn corrupt_state_names_the_file_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        fs::write(&path, b"{\"version\":1,\"pod_cidr\":").unwrap();
        let err = open(dir.path(), "10.1.0.0/24", "10.1.0.1").unwrap_err();
        assert!(matches!(err, IpamError::Corrupt { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("restart lumen-agent"), "{text}");
        // The corrupt file is left alone for a human to look at.
        assert_eq!(fs::read(&path).unwrap(), b"{\"version\":1,\"pod_cidr\":");
    }

    #[test]
    fn inconsistent_state_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        let write = |allocs: &str| {
            fs::write(
                &path,
                format!(
                    r#"{{"version":1,"pod_cidr":"10.1.0.0/24","gateway":"10.1.0.1","last":null,"allocations":[{allocs}]}}"#
                ),
            )
            .unwrap()
        };
        write(r#"{"container_id":"a","ifname":"eth0","owner":"d/a","ip":"10.1.0.1"}"#);
        let err = open(dir.path(), "10.1.0.0/24", "10.1.0.1").unwrap_err();
        assert!(matches!(err, IpamError::Inconsistent { .. }), "{err}");
        write(
            r#"{"container_id":"a","ifname":"eth0","owner":"d/a","ip":"10.1.0.5"},
               {"container_id":"b","ifname":"eth0","owner":"d/b","ip":"10.1.0.5"}"#,
        );
        let err = open(dir.path(), "10.1.0.0/24", "10.1.0.1").unwrap_err();
        assert!(err.to_string().contains("allocated twice"), "{err}");
        write("");
        let err = open(dir.path(), "10.9.0.0/24", "10.9.0.1").unwrap_err();
        assert!(matches!(err, IpamError::CidrChanged { .. }), "{err}");
    }

    #[test]
    fn unusable_configuration_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for (cidr, gw) in [
            ("10.0.0.0/31", "10.0.0.1"),
            ("fd00::/64", "fd00::1"),
            ("10.0.0.0/24", "fd00::1"),
        ] {
            let err = open(dir.path(), cidr, gw).unwrap_err();
            assert!(
                matches!(
                    err,
                    IpamError::UnsupportedCidr { .. } | IpamError::GatewayFamily { .. }
                ),
                "{cidr}: {err}"
            );
        }
    }

    #[test]
    fn failed_persist_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = open(dir.path(), "10.1.0.0/24", "10.1.0.1").unwrap();
        // Occupy the temp file's name with a directory so the write fails.
        fs::create_dir(dir.path().join("ipam.json.tmp")).unwrap();
        let err = ipam.allocate(&att("a"), "demo/a").unwrap_err();
        assert!(matches!(err, IpamError::Persist { .. }), "{err}");
        assert_eq!(ipam.get(&att("a")), None);
        fs::remove_dir(dir.path().join("ipam.json.tmp")).unwrap();
        assert_eq!(
            ipam.allocate(&att("a"), "demo/a").unwrap().to_string(),
            "10.1.0.2"
        );
    }
}
