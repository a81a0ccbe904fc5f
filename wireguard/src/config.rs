//! What a [`Device`](crate::Device) is asked to be: its interface, key, port and peers,
//! and the checks that reject a configuration before anything is touched.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;

use crate::key::{PresharedKey, PrivateKey, PublicKey};

/// Cilium's WireGuard UDP port.
pub const DEFAULT_LISTEN_PORT: u16 = 51871;
/// Cilium's MTU for the tunnel: 1500 less the 80 bytes of an IPv6 WireGuard header.
pub const DEFAULT_MTU: u32 = 1420;
/// Cilium's interface name.
pub const DEFAULT_INTERFACE: &str = "cilium_wg0";

/// The device: one TUN interface and one UDP socket.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// TUN interface name (at most 15 bytes).
    pub interface: String,
    /// This node's private key.
    pub private_key: PrivateKey,
    /// UDP address to listen on; its family is the family of every peer endpoint.
    pub listen_addr: IpAddr,
    /// UDP port to listen on (0: any free port, see [`Device::listen_port`](crate::Device::listen_port)).
    pub listen_port: u16,
    /// MTU of the TUN interface.
    pub mtu: u32,
    /// An address (with its prefix: the route the kernel adds) for the interface.
    pub address: Option<IpNet>,
    /// The peers to start with.
    pub peers: Vec<PeerConfig>,
}

impl DeviceConfig {
    /// Cilium's defaults: `cilium_wg0`, `0.0.0.0:51871`, MTU 1420, no address, no peers.
    pub fn new(private_key: PrivateKey) -> DeviceConfig {
        DeviceConfig {
            interface: DEFAULT_INTERFACE.to_string(),
            private_key,
            listen_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            listen_port: DEFAULT_LISTEN_PORT,
            mtu: DEFAULT_MTU,
            address: None,
            peers: Vec::new(),
        }
    }

    /// Every check on the interface, then on the peers ([`validate_peers`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = self.interface.as_bytes();
        if name.is_empty()
            || name.len() > 15
            || name
                .iter()
                .any(|b| *b == b'/' || *b == b':' || b.is_ascii_whitespace() || !b.is_ascii())
        {
            return Err(ConfigError::InterfaceName {
                name: self.interface.clone(),
            });
        }
        if !(576..=65_535 - 80).contains(&self.mtu) {
            return Err(ConfigError::Mtu { mtu: self.mtu });
        }
        validate_peers(
            &self.private_key.public_key(),
            self.listen_addr,
            &self.peers,
        )
    }
}

/// One remote node.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Its identity.
    pub public_key: PublicKey,
    /// Where to send to; updated from authenticated packets (roaming). Without one the
    /// peer can only be answered after it initiates.
    pub endpoint: Option<SocketAddr>,
    /// Inner addresses the peer may send from and that are routed to it (its pod CIDR,
    /// its node's tunnel address).
    pub allowed_ips: Vec<IpNet>,
    /// Seconds between keepalives when idle (behind NAT); `None` disables them.
    pub persistent_keepalive: Option<u16>,
    /// An optional pre-shared key mixed into the handshake.
    pub preshared_key: Option<PresharedKey>,
}

impl PeerConfig {
    /// A peer with an endpoint and allowed IPs, no keepalive, no pre-shared key.
    pub fn new(
        public_key: PublicKey,
        endpoint: Option<SocketAddr>,
        allowed_ips: Vec<IpNet>,
    ) -> PeerConfig {
        PeerConfig {
            public_key,
            endpoint,
            allowed_ips,
            persistent_keepalive: None,
            preshared_key: None,
        }
    }
}

/// A configuration that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not a valid Linux interface name.
    #[error("interface name {name:?} must be 1 to 15 ASCII characters without '/', ':' or spaces")]
    InterfaceName {
        /// The rejected name.
        name: String,
    },
    /// Out of range.
    #[error("MTU {mtu} must be between 576 and 65455")]
    Mtu {
        /// The rejected MTU.
        mtu: u32,
    },
    /// Two peers with one key.
    #[error("peer {key} is listed twice")]
    DuplicatePeer {
        /// The key.
        key: PublicKey,
    },
    /// A peer that is this device.
    #[error("peer {key} is this device's own public key")]
    SelfPeer {
        /// The key.
        key: PublicKey,
    },
    /// One prefix given to two peers: which one gets the traffic would be arbitrary.
    #[error("allowed IP {net} is claimed by both {first} and {second}")]
    OverlappingAllowedIp {
        /// The prefix.
        net: IpNet,
        /// One claimant.
        first: PublicKey,
        /// The other.
        second: PublicKey,
    },
    /// The endpoint cannot be reached from the listening socket.
    #[error("peer {key} endpoint {endpoint} is not of the listening address family ({listen})")]
    EndpointFamily {
        /// The peer.
        key: PublicKey,
        /// Its endpoint.
        endpoint: SocketAddr,
        /// The listening address.
        listen: IpAddr,
    },
}

/// Checks a peer list against this device's public key and listening address.
pub fn validate_peers(
    own: &PublicKey,
    listen: IpAddr,
    peers: &[PeerConfig],
) -> Result<(), ConfigError> {
    let mut keys = HashMap::new();
    let mut prefixes: HashMap<IpNet, PublicKey> = HashMap::new();
    for peer in peers {
        let key = peer.public_key;
        if key == *own {
            return Err(ConfigError::SelfPeer { key });
        }
        if keys.insert(key, ()).is_some() {
            return Err(ConfigError::DuplicatePeer { key });
        }
        if let Some(endpoint) = peer.endpoint {
            if endpoint.is_ipv4() != listen.is_ipv4() {
                return Err(ConfigError::EndpointFamily {
                    key,
                    endpoint,
                    listen,
                });
            }
        }
        for net in &peer.allowed_ips {
            let net = net.trunc();
            if let Some(first) = prefixes.insert(net, key) {
                if first != key {
                    return Err(ConfigError::OverlappingAllowedIp {
                        net,
                        first,
                        second: key,
                    });
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PrivateKey {
        PrivateKey::generate().unwrap()
    }

    fn peer(allowed: &[&str]) -> PeerConfig {
        PeerConfig::new(
            key().public_key(),
            Some("192.0.2.1:51871".parse().unwrap()),
            allowed.iter().map(|a| a.parse().unwrap()).collect(),
        )
    }

    #[test]
    fn defaults_are_ciliums_and_valid() {
        let config = DeviceConfig::new(key());
        assert_eq!(config.interface, "cilium_wg0");
        assert_eq!(config.listen_port, 51871);
        assert_eq!(config.mtu, 1420);
        config.validate().unwrap();
    }

    #[test]
    fn bad_interface_names_and_mtus_are_rejected() {
        for name in ["", "a-name-that-is-too-long", "wg/0", "wg 0", "wg:0"] {
            let mut config = DeviceConfig::new(key());
            config.interface = name.to_string();
            assert!(
                matches!(config.validate(), Err(ConfigError::InterfaceName { .. })),
                "{name:?}"
            );
        }
        let mut config = DeviceConfig::new(key());
        config.mtu = 100;
        assert_eq!(config.validate(), Err(ConfigError::Mtu { mtu: 100 }));
    }

    #[test]
    fn duplicate_self_and_overlapping_peers_are_rejected() {
        let own = key();
        let a = peer(&["10.244.1.0/24"]);
        let mut config = DeviceConfig::new(own.clone());
        config.peers = vec![a.clone(), a.clone()];
        assert_eq!(
            config.validate(),
            Err(ConfigError::DuplicatePeer { key: a.public_key })
        );

        config.peers = vec![PeerConfig::new(own.public_key(), None, vec![])];
        assert!(matches!(
            config.validate(),
            Err(ConfigError::SelfPeer { .. })
        ));

        // Host bits differ but the prefix is the same.
        let b = peer(&["10.244.1.7/24"]);
        config.peers = vec![a.clone(), b.clone()];
        let err = config.validate().unwrap_err();
        assert_eq!(
            err,
            ConfigError::OverlappingAllowedIp {
                net: "10.244.1.0/24".parse().unwrap(),
                first: a.public_key,
                second: b.public_key,
            }
        );
        assert!(err.to_string().contains("10.244.1.0/24"));

        // Nested prefixes are fine: the longest wins.
        config.peers = vec![a, peer(&["10.244.1.128/25"])];
        config.validate().unwrap();
    }

    #[test]
    fn endpoint_of_the_other_family_is_rejected() {
        let mut config = DeviceConfig::new(key());
        let mut p = peer(&[]);
        p.endpoint = Some("[2001:db8::1]:51871".parse().unwrap());
        config.peers = vec![p];
        assert!(matches!(
            config.validate(),
            Err(ConfigError::EndpointFamily { .. })
        ));
    }
}
