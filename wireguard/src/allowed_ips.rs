//! The cryptokey routing table: which peer owns a destination address (longest prefix
//! wins), and whether a decrypted packet's source belongs to the peer it came from.
//!
//! One hash map per prefix length in use, searched from the longest: a lookup costs at
//! most as many hash probes as there are distinct prefix lengths (a cluster's pod CIDRs
//! usually share one), and nothing is allocated per packet.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// Maps CIDRs to values; lookups return the value of the longest matching prefix.
#[derive(Debug, Clone)]
pub struct AllowedIps<T> {
    v4: Vec<(u8, HashMap<u32, T>)>,
    v6: Vec<(u8, HashMap<u128, T>)>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        AllowedIps {
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }
}

fn mask4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn mask6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

fn slot<K, T>(levels: &mut Vec<(u8, HashMap<K, T>)>, len: u8) -> &mut HashMap<K, T> {
    let at = match levels.binary_search_by(|(l, _)| len.cmp(l)) {
        Ok(at) => at,
        Err(at) => {
            levels.insert(at, (len, HashMap::new()));
            at
        }
    };
    &mut levels[at].1
}

impl<T> AllowedIps<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the owner of `net` (host bits ignored), returning the previous owner of
    /// exactly that prefix.
    pub fn insert(&mut self, net: IpNet, value: T) -> Option<T> {
        match net {
            IpNet::V4(n) => {
                let len = n.prefix_len();
                slot(&mut self.v4, len).insert(u32::from(n.addr()) & mask4(len), value)
            }
            IpNet::V6(n) => {
                let len = n.prefix_len();
                slot(&mut self.v6, len).insert(u128::from(n.addr()) & mask6(len), value)
            }
        }
    }

    /// The owner of the longest prefix containing `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<&T> {
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4
                    .iter()
                    .find_map(|(len, map)| map.get(&(a & mask4(*len))))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6
                    .iter()
                    .find_map(|(len, map)| map.get(&(a & mask6(*len))))
            }
        }
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.v4.iter().all(|(_, m)| m.is_empty()) && self.v6.iter().all(|(_, m)| m.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_whatever_the_insertion_order() {
        let mut t = AllowedIps::new();
        t.insert(net("10.0.0.0/8"), "wide");
        t.insert(net("10.1.2.0/24"), "narrow");
        t.insert(net("10.1.0.0/16"), "middle");
        t.insert(net("10.1.2.3/32"), "host");
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(&"host"));
        assert_eq!(t.lookup(ip("10.1.2.4")), Some(&"narrow"));
        assert_eq!(t.lookup(ip("10.1.9.9")), Some(&"middle"));
        assert_eq!(t.lookup(ip("10.200.0.1")), Some(&"wide"));
        assert_eq!(t.lookup(ip("11.0.0.1")), None);
    }

    #[test]
    fn host_bits_are_ignored_and_families_are_separate() {
        let mut t = AllowedIps::new();
        t.insert(net("10.244.1.77/24"), 1);
        t.insert(net("fd00:1::5/64"), 2);
        assert_eq!(t.lookup(ip("10.244.1.1")), Some(&1));
        assert_eq!(t.lookup(ip("fd00:1::ffff")), Some(&2));
        assert_eq!(t.lookup(ip("fd00:2::1")), None);
        assert_eq!(t.lookup(ip("::ffff:10.244.1.1")), None);
    }

    #[test]
    fn default_routes_match_everything_of_their_family() {
        let mut t = AllowedIps::new();
        assert!(t.is_empty());
        t.insert(net("0.0.0.0/0"), "all4");
        t.insert(net("::/0"), "all6");
        t.insert(net("192.168.0.0/16"), "lan");
        assert!(!t.is_empty());
        assert_eq!(t.lookup(ip("8.8.8.8")), Some(&"all4"));
        assert_eq!(t.lookup(ip("192.168.3.4")), Some(&"lan"));
        assert_eq!(t.lookup(ip("2001:db8::1")), Some(&"all6"));
    }

    #[test]
    fn reinserting_a_prefix_replaces_its_owner() {
        let mut t = AllowedIps::new();
        assert_eq!(t.insert(net("10.0.0.0/24"), 1), None);
        assert_eq!(t.insert(net("10.0.0.9/24"), 2), Some(1));
        assert_eq!(t.lookup(ip("10.0.0.1")), Some(&2));
    }
}
