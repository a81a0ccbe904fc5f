//! The service maps (`kubeProxyReplacement`): `SERVICES` (frontend → backend count and
//! id) and `BACKENDS` ((id, slot) → backend), computed from the Service and EndpointSlice
//! objects of the state with `lumen-lb` and synchronised by difference like the policy
//! maps (read back at start-up, so a restarted agent keeps ids and removes stale entries).
//!
//! Every IPv4 frontend is programmed: ClusterIPs (translated for traffic leaving pods),
//! and NodePorts on this node's addresses, LoadBalancer IPs and external IPs (flagged
//! `EXTERNAL`, translated on the uplink too). With `loadBalancer.algorithm: maglev` each
//! frontend also gets a `MAGLEV` table, recomputed only when its backends change.
//!
//! When a backend disappears, the connections and affinities pinned to it (`LB_CT`,
//! `AFFINITY`) are removed, so a reused client port cannot land on it.
//!
//! Order matters: a frontend's backend slots are written before the `SERVICES` entry
//! that counts them, and slots beyond a shrunk count are removed after it, so the
//! datapath never picks a slot that is not there.

use super::loader::{Datapath, DatapathError};
use crate::config::LbAlgorithm;
use crate::state::ClusterState;
use aya::maps::{HashMap as BpfHashMap, MapData};
use lumen_abi::{
    backend_flags, maps, svc_flags, AffinityKey, AffinityValue, BackendKey, L4Addr, LbTupleKey,
    MaglevTable, ServiceKey, ServiceValue, MAGLEV_TABLE_SIZE,
};
use lumen_api::flow;
use lumen_lb::{
    frontends, EndpointSlice, Frontend, FrontendKind, Maglev, Service, ServiceName, TrafficPolicy,
};
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
};

/// One programmed frontend: its backends in slot order, and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredFrontend {
    /// Backends, slot 0 first (flagged `REMOTE` when on another node).
    pub backends: Vec<L4Addr>,
    /// The owning service (for flows and the admin CLI).
    pub service: ServiceName,
    /// `svc_flags` bits.
    pub flags: u32,
    /// Session affinity timeout in seconds (with `svc_flags::AFFINITY`).
    pub affinity_timeout_s: u32,
    /// With Maglev: the backends' Maglev names, in slot order (the table's input).
    pub maglev: Option<Vec<String>>,
}

/// What the service maps should hold, by frontend.
pub type DesiredServices = BTreeMap<ServiceKey, DesiredFrontend>;

/// The datapath form of an address: IPv4 in the first four bytes.
pub fn addr_bytes(ip: IpAddr) -> Option<[u8; 16]> {
    match ip {
        IpAddr::V4(v4) => {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&v4.octets());
            Some(a)
        }
        // The datapath translates IPv4 only for now.
        IpAddr::V6(_) => None,
    }
}

/// Every frontend this node serves (as `lumen_lb::frontends` computes it, with the
/// node's addresses from its Node object), sorted by service. Objects that do not parse
/// are returned as messages and left out. The datapath ([`desired`]) and `lumen service
/// list` both start from this.
pub fn node_frontends(state: &ClusterState, node_name: &str) -> (Vec<Frontend>, Vec<String>) {
    let mut problems = vec![];
    let mut services = vec![];
    let mut slices = vec![];
    for (key, obj) in &state.objects {
        let Some(raw) = obj.raw.as_deref() else {
            continue;
        };
        match key.kind.as_str() {
            "Service" => match Service::parse(raw) {
                Ok(s) => services.push(s),
                Err(e) => problems.push(format!("{key}: {e}")),
            },
            "EndpointSlice" => match EndpointSlice::parse(raw) {
                Ok(s) => slices.push(s),
                Err(e) => problems.push(format!("{key}: {e}")),
            },
            _ => {}
        }
    }
    let node_ips: Vec<IpAddr> = state
        .nodes
        .get(node_name)
        .map(|n| n.addresses.iter().map(|a| a.address).collect())
        .unwrap_or_default();
    let out = services
        .iter()
        .flat_map(|svc| frontends(svc, &slices, node_name, &node_ips))
        .collect();
    (out, problems)
}

/// Computes the frontends of every Service in `state` with their active backends, in
/// the form the datapath maps take.
pub fn desired(
    state: &ClusterState,
    node_name: &str,
    algorithm: LbAlgorithm,
) -> (DesiredServices, Vec<String>) {
    let (all, problems) = node_frontends(state, node_name);
    let local_cidrs: Vec<ipnet::IpNet> = state
        .nodes
        .get(node_name)
        .map(|n| n.pod_cidrs.clone())
        .unwrap_or_default();
    let is_local = |b: &lumen_lb::Backend| {
        local_cidrs.iter().any(|c| c.contains(&b.address))
            || b.node_name.as_deref() == Some(node_name)
    };
    let mut out = DesiredServices::new();
    for fe in all {
        // The node-port wildcard is covered by the entries for each node address.
        if fe.is_wildcard() {
            continue;
        }
        let Some(addr) = addr_bytes(fe.address) else {
            continue;
        };
        // `frontends` already chose the ready backends (or the terminating ones).
        let backends: Vec<(L4Addr, String)> = fe
            .backends
            .iter()
            .filter_map(|b| {
                let flags = if is_local(b) {
                    0
                } else {
                    backend_flags::REMOTE
                };
                addr_bytes(b.address).map(|addr| {
                    let a = L4Addr {
                        addr,
                        port: b.port,
                        flags,
                        _pad: 0,
                    };
                    (a, b.maglev_name())
                })
            })
            .collect();
        let mut flags = 0;
        if fe.kind != FrontendKind::ClusterIp {
            flags |= svc_flags::EXTERNAL;
            if fe.traffic_policy == TrafficPolicy::Cluster {
                flags |= svc_flags::SNAT_REMOTE;
            }
        }
        if fe.affinity_timeout.is_some() {
            flags |= svc_flags::AFFINITY;
        }
        let maglev = (algorithm == LbAlgorithm::Maglev).then(|| {
            flags |= svc_flags::MAGLEV;
            backends.iter().map(|(_, n)| n.clone()).collect()
        });
        out.insert(
            ServiceKey {
                addr,
                port: fe.port,
                proto: fe.protocol.number(),
                _pad: 0,
            },
            DesiredFrontend {
                backends: backends.into_iter().map(|(a, _)| a).collect(),
                service: fe.service.clone(),
                flags,
                affinity_timeout_s: fe.affinity_timeout.unwrap_or(0),
                maglev,
            },
        );
    }
    (out, problems)
}

/// (address as in the maps, port, protocol).
type L4Key = ([u8; 16], u16, u8);

/// Which service an address and port stand for, to name services in flows.
#[derive(Debug, Default)]
pub struct ServiceNames {
    frontends: HashMap<L4Key, Arc<flow::Service>>,
    backends: HashMap<L4Key, Arc<flow::Service>>,
}

impl ServiceNames {
    /// Indexes the programmed frontends and their backends.
    pub fn new(want: &DesiredServices) -> Self {
        let mut names = ServiceNames::default();
        for (key, fe) in want {
            let svc = Arc::new(flow::Service {
                name: fe.service.name.clone(),
                namespace: fe.service.namespace.clone(),
            });
            names
                .frontends
                .insert((key.addr, key.port, key.proto), svc.clone());
            for b in &fe.backends {
                // A backend of several services is named after the first.
                names
                    .backends
                    .entry((b.addr, b.port, key.proto))
                    .or_insert_with(|| svc.clone());
            }
        }
        names
    }

    /// The service of a frontend address, or, when the packet was `translated`, of a
    /// backend address too.
    pub fn lookup(
        &self,
        addr: &[u8; 16],
        port: u16,
        proto: u8,
        translated: bool,
    ) -> Option<Arc<flow::Service>> {
        let key = (*addr, port, proto);
        self.frontends
            .get(&key)
            .or_else(|| translated.then(|| self.backends.get(&key)).flatten())
            .cloned()
    }
}

/// Handles on the service maps plus what `SERVICES` and `BACKENDS` hold.
pub struct ServiceMaps {
    services: BpfHashMap<MapData, ServiceKey, ServiceValue>,
    backends: BpfHashMap<MapData, BackendKey, L4Addr>,
    maglev: BpfHashMap<MapData, u32, MaglevTable>,
    lb_ct: BpfHashMap<MapData, LbTupleKey, L4Addr>,
    affinity: BpfHashMap<MapData, AffinityKey, AffinityValue>,
    /// Frontend → (value, backends by slot).
    current: BTreeMap<ServiceKey, (ServiceValue, Vec<L4Addr>)>,
    maglev_builder: Maglev,
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { name, source }
}

/// What a synchronisation did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    /// `SERVICES`, `BACKENDS` and `MAGLEV` entries written.
    pub written: usize,
    /// `SERVICES` and `BACKENDS` entries removed.
    pub removed: usize,
    /// Connections and affinities removed because their backend went away.
    pub evicted: usize,
}

/// A backend as `LB_CT` and `AFFINITY` hold it (flags aside).
fn backend_id(b: &L4Addr) -> ([u8; 16], u16) {
    (b.addr, b.port)
}

impl ServiceMaps {
    /// Takes the maps from the loaded object and reads what they already hold.
    pub fn take(dp: &mut Datapath) -> Result<Self, DatapathError> {
        let services: BpfHashMap<MapData, ServiceKey, ServiceValue> =
            BpfHashMap::try_from(dp.take_map(maps::SERVICES)?).map_err(map_err(maps::SERVICES))?;
        let backends: BpfHashMap<MapData, BackendKey, L4Addr> =
            BpfHashMap::try_from(dp.take_map(maps::BACKENDS)?).map_err(map_err(maps::BACKENDS))?;
        let maglev =
            BpfHashMap::try_from(dp.take_map(maps::MAGLEV)?).map_err(map_err(maps::MAGLEV))?;
        let lb_ct =
            BpfHashMap::try_from(dp.take_map(maps::LB_CT)?).map_err(map_err(maps::LB_CT))?;
        let affinity =
            BpfHashMap::try_from(dp.take_map(maps::AFFINITY)?).map_err(map_err(maps::AFFINITY))?;
        let mut slots: BTreeMap<BackendKey, L4Addr> = BTreeMap::new();
        for (k, v) in backends.iter().flatten() {
            slots.insert(k, v);
        }
        let mut current = BTreeMap::new();
        for (k, v) in services.iter().flatten() {
            let list = (0..v.count)
                .filter_map(|slot| {
                    slots
                        .get(&BackendKey {
                            service_id: v.service_id,
                            slot,
                        })
                        .copied()
                })
                .collect();
            current.insert(k, (v, list));
        }
        let mut maps = ServiceMaps {
            services,
            backends,
            maglev,
            lb_ct,
            affinity,
            current,
            maglev_builder: Maglev::new(MAGLEV_TABLE_SIZE as u32)
                .expect("the ABI's Maglev table size is a supported prime"),
        };
        // Slots and tables no frontend uses (left by an interrupted agent) are removed now.
        let counted: BTreeSet<BackendKey> = maps
            .current
            .values()
            .flat_map(|(v, _)| {
                (0..v.count).map(move |slot| BackendKey {
                    service_id: v.service_id,
                    slot,
                })
            })
            .collect();
        for k in slots.keys().filter(|k| !counted.contains(k)) {
            let _ = maps.backends.remove(k);
        }
        let ids: BTreeSet<u32> = maps.current.values().map(|(v, _)| v.service_id).collect();
        let stale: Vec<u32> = maps
            .maglev
            .keys()
            .flatten()
            .filter(|id| !ids.contains(id))
            .collect();
        for id in stale {
            let _ = maps.maglev.remove(&id);
        }
        Ok(maps)
    }

    /// Number of frontends programmed.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// Whether no frontend is programmed.
    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }

    /// The Maglev table of `names` (backend slots per bucket).
    fn maglev_table(&self, names: &[String]) -> Result<Box<MaglevTable>, DatapathError> {
        let table = self.maglev_builder.table(names)?;
        let mut out = Box::new(MaglevTable {
            slots: [0; MAGLEV_TABLE_SIZE],
            _pad: 0,
        });
        for (bucket, &slot) in table.entries().iter().enumerate() {
            out.slots[bucket] = slot as u16;
        }
        Ok(out)
    }

    /// Brings the maps to `want`.
    pub fn sync(&mut self, want: &DesiredServices) -> Result<SyncStats, DatapathError> {
        let mut stats = SyncStats::default();
        let before: BTreeSet<([u8; 16], u16)> = self
            .current
            .values()
            .flat_map(|(_, l)| l.iter().map(backend_id))
            .collect();
        let mut used: BTreeSet<u32> = self.current.values().map(|(v, _)| v.service_id).collect();
        for (key, fe) in want {
            let (old_value, old_list) = match self.current.get(key) {
                Some((v, l)) => (Some(*v), l.clone()),
                None => (None, vec![]),
            };
            let service_id = match old_value {
                Some(v) => v.service_id,
                None => {
                    // Ids start at 1; the lowest free one keeps them dense.
                    let id = (1..).find(|i| !used.contains(i)).unwrap_or(u32::MAX);
                    used.insert(id);
                    id
                }
            };
            let value = ServiceValue {
                count: fe.backends.len() as u32,
                service_id,
                flags: fe.flags,
                affinity_timeout_s: fe.affinity_timeout_s,
            };
            if old_value == Some(value) && old_list == fe.backends {
                continue;
            }
            for (slot, b) in fe.backends.iter().enumerate() {
                if old_list.get(slot) != Some(b) {
                    self.backends
                        .insert(
                            BackendKey {
                                service_id,
                                slot: slot as u32,
                            },
                            *b,
                            0,
                        )
                        .map_err(map_err(maps::BACKENDS))?;
                    stats.written += 1;
                }
            }
            // The table only names slots that exist by now.
            match &fe.maglev {
                Some(names) if !names.is_empty() => {
                    let table = self.maglev_table(names)?;
                    self.maglev
                        .insert(service_id, *table, 0)
                        .map_err(map_err(maps::MAGLEV))?;
                    stats.written += 1;
                }
                _ => {
                    let _ = self.maglev.remove(&service_id);
                }
            }
            self.services
                .insert(*key, value, 0)
                .map_err(map_err(maps::SERVICES))?;
            stats.written += 1;
            for slot in fe.backends.len()..old_list.len() {
                let _ = self.backends.remove(&BackendKey {
                    service_id,
                    slot: slot as u32,
                });
                stats.removed += 1;
            }
            self.current.insert(*key, (value, fe.backends.clone()));
        }
        let gone: Vec<ServiceKey> = self
            .current
            .keys()
            .filter(|k| !want.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            let _ = self.services.remove(&key);
            if let Some((v, list)) = self.current.remove(&key) {
                for slot in 0..list.len() {
                    let _ = self.backends.remove(&BackendKey {
                        service_id: v.service_id,
                        slot: slot as u32,
                    });
                }
                let _ = self.maglev.remove(&v.service_id);
                stats.removed += 1 + list.len();
            }
        }
        let after: BTreeSet<([u8; 16], u16)> = self
            .current
            .values()
            .flat_map(|(_, l)| l.iter().map(backend_id))
            .collect();
        let vanished: BTreeSet<_> = before.difference(&after).copied().collect();
        if !vanished.is_empty() {
            stats.evicted = self.evict(&vanished);
        }
        Ok(stats)
    }

    /// Removes the connections and affinities pinned to `backends`.
    fn evict(&mut self, backends: &BTreeSet<([u8; 16], u16)>) -> usize {
        let conns: Vec<LbTupleKey> = self
            .lb_ct
            .iter()
            .flatten()
            .filter(|(_, b)| backends.contains(&backend_id(b)))
            .map(|(k, _)| k)
            .collect();
        let clients: Vec<AffinityKey> = self
            .affinity
            .iter()
            .flatten()
            .filter(|(_, v)| backends.contains(&backend_id(&v.backend)))
            .map(|(k, _)| k)
            .collect();
        let n = conns.len() + clients.len();
        for k in conns {
            let _ = self.lb_ct.remove(&k);
        }
        for k in clients {
            let _ = self.affinity.remove(&k);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::manifests::parse_objects;
    use std::path::Path;

    const OBJECTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.1.0.5]
  conditions: {ready: true}
- addresses: [10.2.0.7]
  conditions: {ready: true}
"#;

    #[test]
    fn cluster_ip_frontends_get_their_ready_backends() {
        let (state, problems) =
            ClusterState::from_objects(parse_objects(Path::new("s.yaml"), OBJECTS).unwrap());
        assert!(problems.is_empty(), "{problems:?}");
        let (want, problems) = desired(&state, "node-a", LbAlgorithm::Random);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(want.len(), 1);
        let (key, fe) = want.iter().next().unwrap();
        assert_eq!(
            (&key.addr[..4], key.port, key.proto),
            (&[10, 96, 0, 10][..], 80, 6)
        );
        let got: Vec<_> = fe
            .backends
            .iter()
            .map(|b| (b.addr[..4].to_vec(), b.port))
            .collect();
        assert_eq!(
            got,
            vec![(vec![10, 1, 0, 5], 8080), (vec![10, 2, 0, 7], 8080)]
        );
        assert_eq!(fe.service.name, "web");
    }

    #[test]
    fn flows_name_the_service_of_a_frontend_and_of_a_translated_backend() {
        let (state, _) =
            ClusterState::from_objects(parse_objects(Path::new("s.yaml"), OBJECTS).unwrap());
        let names = ServiceNames::new(&desired(&state, "node-a", LbAlgorithm::Random).0);
        let a = |b: [u8; 4]| addr_bytes(IpAddr::from(b)).unwrap();
        let web = names
            .lookup(&a([10, 96, 0, 10]), 80, 6, false)
            .expect("frontend");
        assert_eq!(
            (web.namespace.as_str(), web.name.as_str()),
            ("default", "web")
        );
        assert!(
            names.lookup(&a([10, 96, 0, 10]), 81, 6, false).is_none(),
            "another port"
        );
        assert!(
            names.lookup(&a([10, 96, 0, 10]), 80, 17, false).is_none(),
            "another protocol"
        );
        assert!(
            names.lookup(&a([10, 1, 0, 5]), 8080, 6, false).is_none(),
            "a backend reached directly"
        );
        assert!(
            names.lookup(&a([10, 1, 0, 5]), 8080, 6, true).is_some(),
            "a backend after translation"
        );
    }

    #[test]
    fn a_service_without_endpoints_has_a_frontend_with_no_backends() {
        let only_service = OBJECTS.split("---").next().unwrap();
        let (state, _) =
            ClusterState::from_objects(parse_objects(Path::new("s.yaml"), only_service).unwrap());
        let (want, _) = desired(&state, "node-a", LbAlgorithm::Random);
        assert_eq!(
            want.values().map(|f| f.backends.len()).collect::<Vec<_>>(),
            vec![0]
        );
    }

    const EXTERNAL: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDR: 10.1.0.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.77.1}]}
---
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: default}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.20
  externalTrafficPolicy: Local
  sessionAffinity: ClientIP
  ports: [{port: 80, targetPort: 8080, nodePort: 30080, protocol: TCP}]
status: {loadBalancer: {ingress: [{ip: 192.168.77.200}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: lb-1
  namespace: default
  labels: {kubernetes.io/service-name: lb}
addressType: IPv4
ports: [{port: 8080, protocol: TCP}]
endpoints:
- addresses: [10.1.0.5]
  nodeName: node-a
  conditions: {ready: true}
- addresses: [10.2.0.7]
  nodeName: node-b
  conditions: {ready: true}
"#;

    #[test]
    fn external_frontends_carry_their_flags_and_backend_locality() {
        let (state, problems) =
            ClusterState::from_objects(parse_objects(Path::new("s.yaml"), EXTERNAL).unwrap());
        assert!(problems.is_empty(), "{problems:?}");
        let (want, problems) = desired(&state, "node-a", LbAlgorithm::Maglev);
        assert!(problems.is_empty(), "{problems:?}");
        let by_addr = |a: [u8; 4], port: u16| {
            want.iter()
                .find(|(k, _)| k.addr[..4] == a && k.port == port)
                .map(|(_, fe)| fe)
                .unwrap_or_else(|| panic!("no frontend {a:?}:{port} in {want:#?}"))
        };
        // ClusterIP: internal traffic policy Cluster, both backends, REMOTE marks node-b's.
        let cip = by_addr([10, 96, 0, 20], 80);
        assert_eq!(cip.flags & svc_flags::EXTERNAL, 0);
        assert_eq!(
            cip.backends.iter().map(|b| b.flags).collect::<Vec<_>>(),
            vec![0, backend_flags::REMOTE]
        );
        assert_ne!(cip.flags & svc_flags::AFFINITY, 0);
        assert_eq!(cip.affinity_timeout_s, 10800, "Kubernetes' default timeout");
        assert_ne!(cip.flags & svc_flags::MAGLEV, 0);
        assert_eq!(
            cip.maglev.as_deref(),
            Some(
                &[
                    "10.1.0.5:8080/TCP".to_string(),
                    "10.2.0.7:8080/TCP".to_string()
                ][..]
            )
        );
        // NodePort on the node's address, and the LoadBalancer IP: external, Local (no
        // source NAT), only the local backend.
        for fe in [
            by_addr([192, 168, 77, 1], 30080),
            by_addr([192, 168, 77, 200], 80),
        ] {
            assert_ne!(fe.flags & svc_flags::EXTERNAL, 0);
            assert_eq!(fe.flags & svc_flags::SNAT_REMOTE, 0);
            assert_eq!(fe.backends.len(), 1);
            assert_eq!(fe.backends[0].addr[..4], [10, 1, 0, 5]);
        }
        // No wildcard entry: the datapath matches node addresses exactly.
        assert!(want.keys().all(|k| k.addr != [0; 16]));
    }

    #[test]
    fn the_datapath_hash_is_the_load_balancers() {
        let cases = [
            ([10, 1, 0, 5], [10, 96, 0, 10], 40000, 80, 6),
            ([192, 168, 77, 254], [192, 168, 77, 200], 1, 65535, 17),
        ];
        for (src, dst, sp, dp, proto) in cases {
            let lb = lumen_lb::FiveTuple {
                src: IpAddr::from(src),
                dst: IpAddr::from(dst),
                src_port: sp,
                dst_port: dp,
                protocol: proto,
            }
            .hash();
            assert_eq!(lumen_abi::five_tuple_hash(&src, &dst, sp, dp, proto), lb);
        }
    }
}
