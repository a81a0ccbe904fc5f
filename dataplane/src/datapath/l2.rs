//! The `L2_RESPONDER` map (L2 announcements): IPv4 address (network order) → the MAC and
//! interface that answer ARP requests for it, and until when (`bpf_ktime_get_ns`). Only
//! the L2 announcer writes it.

use super::loader::{Datapath, DatapathError};
use aya::maps::{HashMap as BpfHashMap, MapData};
use lumen_abi::{maps, L2ResponderValue};
use std::net::Ipv4Addr;

/// A handle on `L2_RESPONDER`.
pub struct L2ResponderMap {
    map: BpfHashMap<MapData, [u8; 4], L2ResponderValue>,
}

fn map_err(source: aya::maps::MapError) -> DatapathError {
    DatapathError::Map {
        name: maps::L2_RESPONDER,
        source,
    }
}

impl L2ResponderMap {
    /// Takes the map out of the loaded object. Fails with [`DatapathError::Missing`] when
    /// the datapath was built without the ARP responder.
    pub fn take(dp: &mut Datapath) -> Result<Self, DatapathError> {
        let map = BpfHashMap::try_from(dp.take_map(maps::L2_RESPONDER)?).map_err(map_err)?;
        Ok(L2ResponderMap { map })
    }

    /// Answers ARP for `ip` with `mac` on `ifindex` until `expires_ns` (CLOCK_MONOTONIC).
    pub fn set(
        &mut self,
        ip: Ipv4Addr,
        mac: [u8; 6],
        ifindex: u32,
        expires_ns: u64,
    ) -> Result<(), DatapathError> {
        let value = L2ResponderValue {
            mac,
            _pad: [0; 2],
            ifindex,
            _pad2: 0,
            expires_ns,
        };
        self.map.insert(ip.octets(), value, 0).map_err(map_err)
    }

    /// Stops answering for `ip`; returns whether there was an entry.
    pub fn remove(&mut self, ip: Ipv4Addr) -> Result<bool, DatapathError> {
        match self.map.remove(&ip.octets()) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(map_err(e)),
        }
    }

    /// Every entry.
    pub fn list(&self) -> Vec<(Ipv4Addr, L2ResponderValue)> {
        self.map
            .iter()
            .flatten()
            .map(|(k, v)| (Ipv4Addr::from(k), v))
            .collect()
    }
}
