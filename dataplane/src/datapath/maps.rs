//! The maps the agent fills from its desired state: `IPCACHE` (address/prefix →
//! identity), `ENDPOINTS` (pod interface → endpoint id, identity, enforcement) and
//! `POLICY` (per-endpoint rules). Each is synchronised by difference against what was
//! last written (read back from the pinned maps at start-up, so a restarted agent also
//! removes entries it no longer wants).
//!
//! Order matters for enforcement: new policy entries are written before endpoints start
//! enforcing, and endpoints stop enforcing before their entries are removed, so a
//! regeneration never briefly denies traffic that both the old and new policy allow.

use super::loader::{Datapath, DatapathError};
use super::services::ServiceMaps;
use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    HashMap as BpfHashMap, MapData,
};
use lumen_abi::{maps, EndpointValue, IpcacheKey, IpcacheValue, PolicyKey, PolicyValue};
use std::collections::BTreeMap;

/// An ipcache prefix: (IPv4-mapped address bytes, prefix length over 128 bits).
pub type IpcachePrefix = ([u8; 16], u32);
/// A policy map key: (prefix length, key data).
pub type PolicyPrefix = (u32, PolicyKey);

/// Everything the maps should hold.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DesiredMaps {
    /// Address/prefix → identity.
    pub ipcache: BTreeMap<IpcachePrefix, u32>,
    /// Pod veth ifindex → endpoint.
    pub endpoints: BTreeMap<u32, EndpointValue>,
    /// Policy entries.
    pub policy: BTreeMap<PolicyPrefix, PolicyValue>,
}

/// How many entries a synchronisation changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    /// Entries written (new or changed).
    pub written: usize,
    /// Entries removed.
    pub removed: usize,
}

/// Handles on the three maps plus what they hold.
pub struct PolicyMaps {
    ipcache: LpmTrie<MapData, IpcacheKey, IpcacheValue>,
    endpoints: BpfHashMap<MapData, u32, EndpointValue>,
    policy: LpmTrie<MapData, PolicyKey, PolicyValue>,
    current: DesiredMaps,
    /// The service maps, synchronised separately ([`ServiceMaps::sync`]).
    pub services: ServiceMaps,
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

impl PolicyMaps {
    /// Takes the maps from the loaded object and reads what they already hold.
    pub fn take(dp: &mut Datapath) -> Result<Self, DatapathError> {
        let ipcache: LpmTrie<MapData, IpcacheKey, IpcacheValue> =
            LpmTrie::try_from(dp.take_map(maps::IPCACHE)?).map_err(map_err(maps::IPCACHE))?;
        let endpoints: BpfHashMap<MapData, u32, EndpointValue> =
            BpfHashMap::try_from(dp.take_map(maps::ENDPOINTS)?)
                .map_err(map_err(maps::ENDPOINTS))?;
        let policy: LpmTrie<MapData, PolicyKey, PolicyValue> =
            LpmTrie::try_from(dp.take_map(maps::POLICY)?).map_err(map_err(maps::POLICY))?;
        let mut current = DesiredMaps::default();
        for (k, v) in ipcache.iter().flatten() {
            current
                .ipcache
                .insert((k.data().addr, k.prefix_len()), v.identity);
        }
        for (k, v) in endpoints.iter().flatten() {
            current.endpoints.insert(k, v);
        }
        for (k, v) in policy.iter().flatten() {
            current.policy.insert((k.prefix_len(), k.data()), v);
        }
        Ok(PolicyMaps {
            ipcache,
            endpoints,
            policy,
            current,
            services: ServiceMaps::take(dp)?,
        })
    }

    /// What the maps hold now.
    pub fn current(&self) -> &DesiredMaps {
        &self.current
    }

    /// Brings the maps to `want`.
    pub fn sync(&mut self, want: &DesiredMaps) -> Result<SyncStats, DatapathError> {
        let mut stats = SyncStats::default();
        // 1. Identities first: rules refer to them.
        for (&(addr, plen), &identity) in &want.ipcache {
            if self.current.ipcache.get(&(addr, plen)) != Some(&identity) {
                self.ipcache
                    .insert(
                        &Key::new(plen, IpcacheKey { addr }),
                        IpcacheValue { identity, _pad: 0 },
                        0,
                    )
                    .map_err(map_err(maps::IPCACHE))?;
                self.current.ipcache.insert((addr, plen), identity);
                stats.written += 1;
            }
        }
        // 2. New and changed rules.
        for (&(plen, key), value) in &want.policy {
            if self.current.policy.get(&(plen, key)) != Some(value) {
                self.policy
                    .insert(&Key::new(plen, key), *value, 0)
                    .map_err(map_err(maps::POLICY))?;
                self.current.policy.insert((plen, key), *value);
                stats.written += 1;
            }
        }
        // 3. Endpoints (enforcement switches on with its rules already present).
        for (&ifindex, value) in &want.endpoints {
            if self.current.endpoints.get(&ifindex) != Some(value) {
                self.endpoints
                    .insert(ifindex, *value, 0)
                    .map_err(map_err(maps::ENDPOINTS))?;
                self.current.endpoints.insert(ifindex, *value);
                stats.written += 1;
            }
        }
        let gone: Vec<u32> = self
            .current
            .endpoints
            .keys()
            .filter(|k| !want.endpoints.contains_key(k))
            .copied()
            .collect();
        for ifindex in gone {
            let _ = self.endpoints.remove(&ifindex);
            self.current.endpoints.remove(&ifindex);
            stats.removed += 1;
        }
        // 4. Stale rules, then stale identities.
        let gone: Vec<PolicyPrefix> = self
            .current
            .policy
            .keys()
            .filter(|k| !want.policy.contains_key(k))
            .copied()
            .collect();
        for (plen, key) in gone {
            let _ = self.policy.remove(&Key::new(plen, key));
            self.current.policy.remove(&(plen, key));
            stats.removed += 1;
        }
        let gone: Vec<IpcachePrefix> = self
            .current
            .ipcache
            .keys()
            .filter(|k| !want.ipcache.contains_key(k))
            .copied()
            .collect();
        for (addr, plen) in gone {
            let _ = self.ipcache.remove(&Key::new(plen, IpcacheKey { addr }));
            self.current.ipcache.remove(&(addr, plen));
            stats.removed += 1;
        }
        Ok(stats)
    }
}

/// The ipcache key of an address or prefix.
pub fn ipcache_prefix(net: &ipnet::IpNet) -> IpcachePrefix {
    match net {
        ipnet::IpNet::V4(n) => {
            let mut a = [0u8; 16];
            a[10] = 0xff;
            a[11] = 0xff;
            a[12..].copy_from_slice(&n.network().octets());
            (a, 96 + n.prefix_len() as u32)
        }
        ipnet::IpNet::V6(n) => (n.network().octets(), n.prefix_len() as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_prefixes_are_mapped_into_the_ipv6_space() {
        let (a, plen) = ipcache_prefix(&"10.1.0.0/16".parse().unwrap());
        assert_eq!(plen, 112);
        assert_eq!(&a[10..14], &[0xff, 0xff, 10, 1]);
        let (a, plen) = ipcache_prefix(&"10.1.2.3/32".parse().unwrap());
        assert_eq!((plen, a[15]), (128, 3));
        let (_, plen) = ipcache_prefix(&"2001:db8::/32".parse().unwrap());
        assert_eq!(plen, 32);
    }
}
