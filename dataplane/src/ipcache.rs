//! The agent's view of who is behind an address: local endpoints (by veth ifindex and by
//! IP), pods elsewhere in the cluster (from the state source), nodes (host / remote-node),
//! and the world. Rebuilt whenever the state or the local endpoints change; the flow
//! pipeline reads an immutable snapshot.

use crate::{
    endpoints::LocalEndpoint,
    identity::{self, reserved},
    state::ClusterState,
};
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
};

/// What a flow says about one side.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointInfo {
    /// Node-local endpoint id (0 when not local).
    pub id: u32,
    /// Security identity.
    pub identity: u32,
    /// `cluster.name`.
    pub cluster_name: String,
    /// Pod namespace (empty for non-pods).
    pub namespace: String,
    /// Pod name (empty for non-pods).
    pub pod_name: String,
    /// Security labels, sorted.
    pub labels: Vec<String>,
    /// Controller workloads `(name, kind)`.
    pub workloads: Vec<(String, String)>,
    /// DNS names the address is known by (the DNS proxy's FQDN cache), for Hubble's
    /// `source_names` / `destination_names`.
    pub names: Vec<String>,
}

/// A local pod interface.
#[derive(Debug, Clone)]
pub struct LocalInterface {
    /// Who is behind it.
    pub endpoint: Arc<EndpointInfo>,
    /// Host-side interface name.
    pub ifname: Arc<str>,
}

/// Lookup tables for enriching flows.
#[derive(Debug, Default)]
pub struct IpCache {
    by_ip: HashMap<IpAddr, Arc<EndpointInfo>>,
    by_ifindex: HashMap<u32, LocalInterface>,
    uplinks: HashMap<u32, Arc<str>>,
    world: Arc<EndpointInfo>,
    identities: BTreeMap<u32, Vec<String>>,
    /// Addresses with DNS names (and maybe an FQDN identity), behind `by_ip`.
    fqdn: HashMap<IpAddr, Arc<EndpointInfo>>,
    /// Names policies in flows; set after the policy regeneration.
    pub attribution: Arc<crate::policy::Attribution>,
    /// Names services in flows; set after the service maps are computed.
    pub services: Arc<crate::datapath::services::ServiceNames>,
}

/// Inputs besides the cluster state.
pub struct NodeView<'a> {
    /// This node's name.
    pub node_name: &'a str,
    /// `cluster.name`.
    pub cluster: &'a str,
    /// Addresses of this node (uplink, router): identity host.
    pub host_ips: &'a [IpAddr],
    /// Uplink interfaces observed: (ifindex, name).
    pub uplinks: &'a [(u32, String)],
}

fn reserved_info(id: u32, cluster: &str) -> Arc<EndpointInfo> {
    Arc::new(EndpointInfo {
        identity: id,
        cluster_name: cluster.into(),
        labels: identity::reserved_labels(id),
        ..Default::default()
    })
}

impl IpCache {
    /// Builds the tables.
    pub fn build(state: &ClusterState, locals: &[LocalEndpoint], node: &NodeView<'_>) -> Self {
        let labels_of = |ns: &str, name: &str| {
            state
                .pod(ns, name)
                .map(|p| identity::pod_labels(p, state.namespaces.get(&p.namespace), node.cluster))
        };
        let sets: BTreeSet<Vec<String>> = state
            .pods
            .values()
            .filter(|p| !p.host_network)
            .map(|p| identity::pod_labels(p, state.namespaces.get(&p.namespace), node.cluster))
            .collect();
        let ids = identity::assign(&sets);

        let mut cache = IpCache {
            world: reserved_info(reserved::WORLD, node.cluster),
            ..Default::default()
        };
        for id in 1..=10 {
            cache.identities.insert(id, identity::reserved_labels(id));
        }
        for (labels, id) in &ids {
            cache.identities.insert(*id, labels.clone());
        }
        let remote = reserved_info(reserved::REMOTE_NODE, node.cluster);
        let host = reserved_info(reserved::HOST, node.cluster);
        for n in state.nodes.values() {
            let info = if n.name == node.node_name {
                &host
            } else {
                &remote
            };
            for a in &n.addresses {
                cache.by_ip.insert(a.address, info.clone());
            }
        }
        for ip in node.host_ips {
            cache.by_ip.insert(*ip, host.clone());
        }
        for p in state.pods.values().filter(|p| !p.host_network) {
            let labels = identity::pod_labels(p, state.namespaces.get(&p.namespace), node.cluster);
            let info = Arc::new(EndpointInfo {
                id: 0,
                identity: ids[&labels],
                cluster_name: node.cluster.into(),
                namespace: p.namespace.clone(),
                pod_name: p.name.clone(),
                workloads: identity::workload(p).into_iter().collect(),
                labels,
                names: Vec::new(),
            });
            for ip in &p.ips {
                cache.by_ip.insert(*ip, info.clone());
            }
        }
        for ep in locals {
            let s = &ep.spec;
            let (identity, labels, workloads) = match labels_of(&s.pod_namespace, &s.pod_name) {
                Some(l) => {
                    let p = state
                        .pod(&s.pod_namespace, &s.pod_name)
                        .expect("labels came from it");
                    (ids[&l], l, identity::workload(p).into_iter().collect())
                }
                // No Pod object yet: Cilium's "init" identity until labels are known.
                None => (
                    reserved::INIT,
                    identity::reserved_labels(reserved::INIT),
                    vec![],
                ),
            };
            let info = Arc::new(EndpointInfo {
                id: ep.id,
                identity,
                cluster_name: node.cluster.into(),
                namespace: s.pod_namespace.clone(),
                pod_name: s.pod_name.clone(),
                labels,
                workloads,
                names: Vec::new(),
            });
            cache.by_ip.insert(s.ip, info.clone());
            cache.by_ifindex.insert(
                s.host_ifindex,
                LocalInterface {
                    endpoint: info,
                    ifname: s.host_ifname.as_str().into(),
                },
            );
        }
        for (idx, name) in node.uplinks {
            cache.uplinks.insert(*idx, name.as_str().into());
        }
        cache
    }

    /// Who is behind `ip` (the world when nobody known).
    pub fn lookup(&self, ip: &IpAddr) -> Arc<EndpointInfo> {
        self.by_ip
            .get(ip)
            .or_else(|| self.fqdn.get(ip))
            .cloned()
            .unwrap_or_else(|| self.world.clone())
    }

    /// Makes addresses the DNS proxy learnt names for known by those names: (address,
    /// names, FQDN identity if a `toFQDNs` selector selects one of them); the identity's
    /// labels come from `identities`, the world's otherwise.
    pub fn set_fqdn(
        &mut self,
        addrs: impl IntoIterator<Item = (IpAddr, Vec<String>, Option<u32>)>,
        identities: &BTreeMap<u32, Vec<String>>,
    ) {
        self.fqdn = addrs
            .into_iter()
            .map(|(ip, names, id)| {
                let (identity, labels) = match id.and_then(|i| identities.get(&i).map(|l| (i, l))) {
                    Some((i, l)) => (i, l.clone()),
                    None => (self.world.identity, self.world.labels.clone()),
                };
                let info = EndpointInfo {
                    identity,
                    cluster_name: self.world.cluster_name.clone(),
                    labels,
                    names,
                    ..Default::default()
                };
                (ip, Arc::new(info))
            })
            .collect();
    }

    /// Every identity in use with its labels (reserved ones included).
    pub fn identities(&self) -> &BTreeMap<u32, Vec<String>> {
        &self.identities
    }

    /// Every known address with its identity.
    pub fn addresses(&self) -> impl Iterator<Item = (IpAddr, u32)> + '_ {
        self.by_ip.iter().map(|(ip, info)| (*ip, info.identity))
    }

    /// Every local pod interface by ifindex.
    pub fn locals(&self) -> impl Iterator<Item = (&u32, &LocalInterface)> {
        self.by_ifindex.iter()
    }

    /// The addresses of a local endpoint.
    pub fn ips_of_endpoint(&self, id: u32) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .by_ip
            .iter()
            .filter(|(_, i)| i.id == id && id != 0)
            .map(|(ip, _)| *ip)
            .collect();
        v.sort();
        v
    }

    /// Who a kernel-reported identity is when the ipcache knows it only as the world:
    /// a CIDR identity from policy.
    pub fn cidr_endpoint(&self, identity: u32) -> Option<Arc<EndpointInfo>> {
        let labels = self.attribution.cidr_labels.get(&identity)?;
        Some(Arc::new(EndpointInfo {
            identity,
            cluster_name: self.world.cluster_name.clone(),
            labels: (**labels).clone(),
            ..Default::default()
        }))
    }

    /// The local pod interface with this ifindex.
    pub fn local(&self, ifindex: u32) -> Option<&LocalInterface> {
        self.by_ifindex.get(&ifindex)
    }

    /// The name of the interface with this ifindex, pod veth or uplink.
    pub fn ifname(&self, ifindex: u32) -> Option<Arc<str>> {
        self.by_ifindex
            .get(&ifindex)
            .map(|l| l.ifname.clone())
            .or_else(|| self.uplinks.get(&ifindex).cloned())
    }
}
