//! WireGuard node-to-node encryption (`encryption.enabled: true`, `encryption.type:
//! wireguard`): the agent runs this node's tunnel device (`lumen_wg0`, userspace
//! WireGuard from `lumen-wireguard`: this kernel has no WireGuard module), publishes its
//! public key on the node's CiliumNode record (annotation `network.cilium.io/wg-pub-key`,
//! as Cilium does), and keeps one peer per other node that has published a key: endpoint
//! its `InternalIP`:51871, allowed IPs its pod CIDRs.
//!
//! The same prefixes go into the datapath's `WG_PEERS` map: the `from_endpoint` program
//! redirects pod traffic for them into the device (trace point TO_CRYPTO), and what the
//! device decrypts enters the node through its tc ingress (FROM_CRYPTO). A node without
//! a published key gets no peer: its pods are reached natively, in clear, unless strict
//! mode drops that traffic.
//!
//! The private key lives in `<stateDir>/wireguard.key` (mode 0600), so a restarted agent
//! keeps its identity and its peers need no update. [`Encryption::rotate_key`] replaces it
//! without dropping connections: sessions re-handshake with the new key as soon as the
//! peers have read it, and TCP rides over the gap on retransmission.

use crate::{
    config::AgentConfig,
    datapath::{wg::WgPeersMap, DatapathError},
    state::{
        lock::FileLock, manifests::ManifestDir, node_record, ClusterState, WG_PUB_KEY_ANNOTATION,
    },
};
use ipnet::{IpNet, Ipv4Net};
use lumen_wireguard::{
    Device, DeviceConfig, DeviceError, KeyError, PeerConfig, PrivateKey, PublicKey,
};
use parking_lot::Mutex;
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};
use tokio::sync::watch;

/// The tunnel interface.
pub const INTERFACE: &str = "lumen_wg0";
/// The private key's file in `stateDir`.
pub const KEY_FILE: &str = "wireguard.key";
/// The UDP port every node listens on (Cilium's).
pub const PORT: u16 = lumen_wireguard::DEFAULT_LISTEN_PORT;
/// Bytes the tunnel adds to a packet, reserved from the pods' MTU (Cilium's figure: the
/// outer IPv6 header, UDP and WireGuard's header and tag, rounded up).
pub const OVERHEAD: u32 = 80;

/// Errors of node-to-node encryption.
#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    /// The private key could not be read, created or replaced.
    #[error("WireGuard key: {0}")]
    Key(#[from] KeyError),
    /// The tunnel device could not be created or configured.
    #[error("WireGuard device {INTERFACE}: {0}")]
    Device(#[from] DeviceError),
    /// Publishing the public key on the CiliumNode record failed.
    #[error("publishing the WireGuard public key in {path}: {source}")]
    Publish {
        /// The record or its lock.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing `WG_PEERS` failed.
    #[error(transparent)]
    Map(#[from] DatapathError),
}

/// One peer this node wants: another node with a published key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedPeer {
    /// The node's name.
    pub node: String,
    /// Its public key.
    pub public_key: PublicKey,
    /// `InternalIP`:51871.
    pub endpoint: SocketAddr,
    /// Its IPv4 pod CIDRs.
    pub allowed_ips: Vec<Ipv4Net>,
}

/// The peers of node `me` in `state`, by node name, and a problem line for each node
/// whose key does not parse (that node gets no peer).
pub fn wanted_peers(state: &ClusterState, me: &str) -> (Vec<WantedPeer>, Vec<String>) {
    let (mut peers, mut problems) = (vec![], vec![]);
    for (name, node) in &state.nodes {
        if name == me {
            continue;
        }
        let Some(key) = node.wg_pub_key.as_deref() else {
            continue;
        };
        let public_key = match key.parse::<PublicKey>() {
            Ok(k) => k,
            Err(e) => {
                problems.push(format!("Node {name}: {WG_PUB_KEY_ANNOTATION}: {e}"));
                continue;
            }
        };
        let Some(IpAddr::V4(ip)) = node.internal_ip() else {
            continue;
        };
        let allowed_ips: Vec<Ipv4Net> = node
            .pod_cidrs
            .iter()
            .filter_map(|c| match c {
                IpNet::V4(v4) => Some(v4.trunc()),
                IpNet::V6(_) => None,
            })
            .collect();
        if allowed_ips.is_empty() {
            continue;
        }
        peers.push(WantedPeer {
            node: name.clone(),
            public_key,
            endpoint: SocketAddr::new(ip.into(), PORT),
            allowed_ips,
        });
    }
    (peers, problems)
}

/// What `WG_PEERS` should hold for `peers`: every allowed prefix → the device.
pub fn map_entries(peers: &[WantedPeer], ifindex: u32) -> BTreeMap<Ipv4Net, u32> {
    peers
        .iter()
        .flat_map(|p| p.allowed_ips.iter().map(move |n| (*n, ifindex)))
        .collect()
}

/// The encryption part of `lumen status`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EncryptionStatus {
    /// `wireguard`.
    pub mode: String,
    /// The tunnel interface.
    pub interface: String,
    /// This node's public key.
    pub public_key: String,
    /// UDP port.
    pub listen_port: u16,
    /// `encryption.strictMode.cidr` when strict mode is on.
    pub strict_cidr: Option<String>,
    /// The peers.
    pub peers: Vec<PeerStatus>,
}

/// One peer in `lumen status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerStatus {
    /// Its node.
    pub node: String,
    /// Its public key.
    pub public_key: String,
    /// Where its packets go.
    pub endpoint: Option<String>,
    /// Its allowed IPs.
    pub allowed_ips: Vec<String>,
    /// Seconds since the last completed handshake (none yet: `None`).
    pub last_handshake_seconds_ago: Option<u64>,
    /// Inner bytes received from it / sent to it.
    pub rx_bytes: u64,
    /// Inner bytes sent to it.
    pub tx_bytes: u64,
}

/// This node's running encryption.
pub struct Encryption {
    device: Device,
    node: String,
    key_path: PathBuf,
    manifests_dir: PathBuf,
    strict_cidr: Option<Ipv4Net>,
    keepalive: Option<u16>,
    map: Mutex<WgPeersMap>,
    /// What the last successful [`Encryption::apply`] set (none yet: `None`, so the
    /// first one also clears what a previous agent left in `WG_PEERS`).
    peers: Mutex<Option<Vec<WantedPeer>>>,
    /// With `stateSource: kubernetes`, the API client the key is published through (on
    /// the node's CiliumNode); otherwise the key goes into the manifest source's record.
    kube: Option<kube::Client>,
    /// The task publishing the latest key through the API (retried until it lands).
    publishing: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Encryption {
    /// Loads (or creates) the key, brings the device up with the pods' MTU and publishes
    /// the public key. Peers come with the first [`Encryption::apply`].
    /// With `kube`, the key is published on the node's CiliumNode through the API server
    /// (in the background, retried until it lands).
    pub fn start(
        cfg: &AgentConfig,
        map: WgPeersMap,
        kube: Option<kube::Client>,
    ) -> Result<Arc<Encryption>, EncryptionError> {
        let key_path = cfg.state_dir.join(KEY_FILE);
        let key = PrivateKey::load_or_create(&key_path)?;
        let mut dc = DeviceConfig::new(key.clone());
        dc.interface = INTERFACE.into();
        dc.mtu = cfg.pod_mtu();
        let device = Device::new(dc)?;
        // Decrypted packets arrive with pod sources whose route points at the uplink:
        // strict reverse-path filtering would drop them.
        for dev in [INTERFACE, "all"] {
            let path = format!("/proc/sys/net/ipv4/conf/{dev}/rp_filter");
            if let Err(e) = std::fs::write(&path, "0") {
                tracing::warn!(path, error = %e, "cannot turn off reverse-path filtering; decrypted traffic may be dropped");
            }
        }
        let enc = Arc::new(Encryption {
            device,
            node: cfg.node_name.clone(),
            key_path,
            manifests_dir: cfg.manifests_dir.clone(),
            strict_cidr: cfg.strict_cidr(),
            keepalive: match cfg.encryption.wireguard.persistent_keepalive.as_secs() {
                0 => None,
                s => Some(s.min(u16::MAX as u64) as u16),
            },
            map: Mutex::new(map),
            peers: Mutex::default(),
            kube,
            publishing: Mutex::default(),
        });
        enc.publish(&key.public_key())?;
        Ok(enc)
    }

    /// The tunnel's ifindex.
    pub fn ifindex(&self) -> u32 {
        self.device.ifindex()
    }

    /// Publishes `key` for the peers: on the CiliumNode through the API server, or in the
    /// manifest source's CiliumNode record.
    fn publish(&self, key: &PublicKey) -> Result<(), EncryptionError> {
        match &self.kube {
            Some(client) => {
                self.publish_through_api(client.clone(), key.to_base64());
                Ok(())
            }
            None => self.publish_to_record(key),
        }
    }

    /// Sets the annotation on this node's CiliumNode, retrying with backoff until the API
    /// server takes it; a newer key replaces a pending one.
    fn publish_through_api(&self, client: kube::Client, key: String) {
        let node = self.node.clone();
        let task = tokio::spawn(async move {
            let mut backoff = std::time::Duration::from_millis(200);
            loop {
                match crate::state::kube::write_node_annotation(
                    client.clone(),
                    &node,
                    WG_PUB_KEY_ANNOTATION,
                    Some(&key),
                )
                .await
                {
                    Ok(()) => {
                        tracing::info!(node, public_key = %key, "WireGuard public key published on the CiliumNode");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(node, error = %e, retry_in = ?backoff, "publishing the WireGuard public key failed; check the agent's RBAC (patch/create ciliumnodes)");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
                    }
                }
            }
        });
        if let Some(old) = self.publishing.lock().replace(task) {
            old.abort();
        }
    }

    /// Writes `key` into this node's CiliumNode record, under the status lock.
    fn publish_to_record(&self, key: &PublicKey) -> Result<(), EncryptionError> {
        let dir = ManifestDir::status_dir(&self.manifests_dir);
        let err = |path: PathBuf| move |source| EncryptionError::Publish { path, source };
        std::fs::create_dir_all(&dir).map_err(err(dir.clone()))?;
        let lock = dir.join(".lock");
        let _held = FileLock::exclusive(&lock).map_err(err(lock.clone()))?;
        let key = key.to_base64();
        let changed = node_record::modify(&dir, &self.node, |doc| {
            node_record::set_annotation(doc, WG_PUB_KEY_ANNOTATION, Some(&key))
        })
        .map_err(err(node_record::path(&dir, &self.node)))?;
        if changed {
            tracing::info!(node = %self.node, public_key = %key, "WireGuard public key published");
        }
        Ok(())
    }

    /// Brings the device's peers and `WG_PEERS` in line with `state`. Returns problems
    /// with other nodes' keys (those nodes get no peer).
    pub fn apply(&self, state: &ClusterState) -> Result<Vec<String>, EncryptionError> {
        let (wanted, problems) = wanted_peers(state, &self.node);
        let mut current = self.peers.lock();
        if current.as_ref() == Some(&wanted) {
            return Ok(problems);
        }
        let configs = wanted
            .iter()
            .map(|p| PeerConfig {
                persistent_keepalive: self.keepalive,
                ..PeerConfig::new(
                    p.public_key,
                    Some(p.endpoint),
                    p.allowed_ips.iter().map(|n| IpNet::V4(*n)).collect(),
                )
            })
            .collect();
        // Device first: a prefix is redirected only once its peer exists.
        self.device.set_peers(configs)?;
        let (written, removed) = self
            .map
            .lock()
            .sync(&map_entries(&wanted, self.ifindex()))?;
        tracing::info!(
            peers = wanted.len(),
            written,
            removed,
            "WireGuard peers updated"
        );
        *current = Some(wanted);
        Ok(problems)
    }

    /// Applies every state change until the channel closes. A failed update is logged
    /// and retried on the next change.
    pub async fn run(self: Arc<Self>, mut rx: watch::Receiver<Arc<ClusterState>>) {
        loop {
            let state = rx.borrow_and_update().clone();
            match self.apply(&state) {
                Ok(problems) => {
                    for p in problems {
                        tracing::warn!(problem = %p, "WireGuard peer skipped");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "WireGuard update failed; retried on the next change")
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Replaces the private key: stored first (a crash keeps one valid key), then used,
    /// then published for the peers. Returns the new public key.
    pub fn rotate_key(&self) -> Result<PublicKey, EncryptionError> {
        let key = PrivateKey::generate()?;
        key.store(&self.key_path)?;
        self.device.set_private_key(key.clone());
        let public = key.public_key();
        self.publish(&public)?;
        Ok(public)
    }

    /// Device, key and per-peer state for `lumen status`.
    pub fn status(&self) -> EncryptionStatus {
        let names: BTreeMap<PublicKey, String> = self
            .peers
            .lock()
            .iter()
            .flatten()
            .map(|p| (p.public_key, p.node.clone()))
            .collect();
        let now = SystemTime::now();
        EncryptionStatus {
            mode: "wireguard".into(),
            interface: self.device.interface().to_string(),
            public_key: self.device.public_key().to_base64(),
            listen_port: self.device.listen_port(),
            strict_cidr: self.strict_cidr.map(|c| c.to_string()),
            peers: self
                .device
                .stats()
                .into_iter()
                .map(|s| PeerStatus {
                    node: names.get(&s.public_key).cloned().unwrap_or_default(),
                    public_key: s.public_key.to_base64(),
                    endpoint: s.endpoint.map(|e| e.to_string()),
                    allowed_ips: s.allowed_ips.iter().map(ToString::to_string).collect(),
                    last_handshake_seconds_ago: s
                        .last_handshake
                        .map(|t| now.duration_since(t).unwrap_or(Duration::ZERO).as_secs()),
                    rx_bytes: s.rx_bytes,
                    tx_bytes: s.tx_bytes,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Node, NodeAddress};

    fn node(name: &str, ip: &str, cidr: &str, key: Option<&str>) -> Node {
        Node {
            name: name.into(),
            labels: Default::default(),
            pod_cidrs: vec![cidr.parse().unwrap()],
            addresses: vec![NodeAddress {
                kind: "InternalIP".into(),
                address: ip.parse().unwrap(),
            }],
            wg_pub_key: key.map(Into::into),
        }
    }

    #[test]
    fn peers_are_the_other_nodes_with_keys() {
        let k2 = PrivateKey::from_bytes([2; 32]).public_key().to_base64();
        let k3 = PrivateKey::from_bytes([3; 32]).public_key().to_base64();
        let mut state = ClusterState::default();
        for n in [
            node("n1", "192.168.77.1", "10.100.1.0/24", Some(&k2)),
            node("n2", "192.168.77.2", "10.100.2.0/24", Some(&k2)),
            node("n3", "192.168.77.3", "10.100.3.0/24", Some(&k3)),
            node("n4", "192.168.77.4", "10.100.4.0/24", None),
            node("n5", "192.168.77.5", "10.100.5.0/24", Some("not-a-key")),
        ] {
            state.nodes.insert(n.name.clone(), n);
        }
        let (peers, problems) = wanted_peers(&state, "n1");
        let names: Vec<_> = peers.iter().map(|p| p.node.as_str()).collect();
        assert_eq!(names, ["n2", "n3"]);
        assert_eq!(peers[0].endpoint, "192.168.77.2:51871".parse().unwrap());
        assert_eq!(
            peers[1].allowed_ips,
            ["10.100.3.0/24".parse::<Ipv4Net>().unwrap()]
        );
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("n5"), "{problems:?}");
        let entries = map_entries(&peers, 7);
        assert_eq!(entries.len(), 2);
        assert!(entries.values().all(|i| *i == 7));
    }
}
