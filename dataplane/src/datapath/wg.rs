//! The `WG_PEERS` map (WireGuard encryption): each peer's allowed IPv4 prefixes → the
//! ifindex of the WireGuard device. Pod traffic to one of them is redirected into the
//! device by the `from_endpoint` program; anything else keeps its native route. Only the
//! encryption controller writes it.

use super::loader::{Datapath, DatapathError};
use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    MapData,
};
use ipnet::Ipv4Net;
use lumen_abi::maps;
use std::collections::BTreeMap;

/// A handle on `WG_PEERS`.
pub struct WgPeersMap {
    map: LpmTrie<MapData, [u8; 4], u32>,
}

fn map_err(source: aya::maps::MapError) -> DatapathError {
    DatapathError::Map {
        name: maps::WG_PEERS,
        source,
    }
}

fn key(net: &Ipv4Net) -> Key<[u8; 4]> {
    Key::new(net.prefix_len() as u32, net.network().octets())
}

impl WgPeersMap {
    /// Takes the map out of the loaded object.
    pub fn take(dp: &mut Datapath) -> Result<Self, DatapathError> {
        let map = LpmTrie::try_from(dp.take_map(maps::WG_PEERS)?).map_err(map_err)?;
        Ok(WgPeersMap { map })
    }

    /// Every entry: prefix → device ifindex.
    pub fn entries(&self) -> BTreeMap<Ipv4Net, u32> {
        self.map
            .iter()
            .flatten()
            .filter_map(|(k, v)| {
                Some((Ipv4Net::new(k.data().into(), k.prefix_len() as u8).ok()?, v))
            })
            .collect()
    }

    /// Brings the map to `want`: writes missing or changed entries, then removes the
    /// rest. Returns (written, removed).
    pub fn sync(&mut self, want: &BTreeMap<Ipv4Net, u32>) -> Result<(usize, usize), DatapathError> {
        let have = self.entries();
        let mut written = 0;
        for (net, ifindex) in want {
            if have.get(net) != Some(ifindex) {
                self.map.insert(&key(net), ifindex, 0).map_err(map_err)?;
                written += 1;
            }
        }
        let mut removed = 0;
        for net in have.keys().filter(|n| !want.contains_key(n)) {
            match self.map.remove(&key(net)) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => removed += 1,
                Err(e) => return Err(map_err(e)),
            }
        }
        Ok((written, removed))
    }
}
