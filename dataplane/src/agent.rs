//! The agent's shared core: datapath, endpoints, IPAM, ipcache and the flow ring, with the
//! operations the local API and the background tasks perform on them.

use crate::{
    config::AgentConfig,
    datapath::{maps::PolicyMaps, Datapath, DatapathError, Hook},
    endpoints::{EndpointStore, EndpointStoreError},
    events::Event,
    ipcache::{IpCache, NodeView},
    node_setup,
    policy::{regen, PolicyEngine, PolicyStatus, RuleRefs},
    ring::Ring,
    state::{manifests::Refresher, ClusterState},
};
use lumen_cni::{
    ipam::Ipam,
    protocol::{Attachment, EndpointSpec, IpamResult, Request, Response},
};
use parking_lot::{Mutex, RwLock};
use std::{
    net::IpAddr,
    sync::Arc,
    time::{Instant, SystemTime},
};
use tokio::sync::watch;

/// Errors the local API reports back to the CNI plugin.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// This node has no pod CIDR yet.
    #[error("node {node} has no pod CIDR yet: {hint}")]
    NoPodCidr {
        /// This node.
        node: String,
        /// Where the agent looks and what to do.
        hint: String,
    },
    /// IPAM failed.
    #[error("IPAM: {0}")]
    Ipam(#[from] lumen_cni::ipam::IpamError),
    /// Endpoint bookkeeping failed.
    #[error(transparent)]
    Endpoints(#[from] EndpointStoreError),
    /// Attaching or detaching programs failed.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// Preparing the node failed.
    #[error(transparent)]
    NodeSetup(#[from] node_setup::NodeSetupError),
    /// Claiming this node's block of the cluster pool failed.
    #[error("cluster-pool IPAM: {0}")]
    PodCidr(#[from] crate::podcidr::PodCidrError),
}

/// What the last regeneration produced, for the admin CLI.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PolicyReport {
    /// Local endpoints with their effective policies.
    pub endpoints: Vec<regen::EndpointReport>,
    /// Identities with their labels.
    pub identities: std::collections::BTreeMap<u32, Vec<String>>,
    /// Every policy object and its status.
    pub policies: Vec<PolicyStatus>,
    /// State-source problems (files that do not parse).
    pub source_errors: Vec<String>,
    /// Entries in the kernel maps: (ipcache, endpoints, policy).
    pub map_entries: (usize, usize, usize),
    /// The last time the maps could not be written, if it failed.
    pub datapath_error: Option<String>,
    /// How long the last regeneration took, µs.
    pub regeneration_us: u64,
    /// How many regenerations ran.
    pub regenerations: u64,
}

struct PolicyState {
    engine: PolicyEngine,
    refs: RuleRefs,
    maps: Option<PolicyMaps>,
    report: Arc<PolicyReport>,
}

struct IpamState {
    cidr: ipnet::IpNet,
    gateway: IpAddr,
    ipam: Ipam,
}

/// The running agent.
pub struct Agent {
    /// Configuration.
    pub cfg: AgentConfig,
    /// `<cluster>/<node>`.
    pub node_name: Arc<str>,
    /// The flow ring.
    pub ring: Arc<Ring<Arc<Event>>>,
    /// When the agent started.
    pub started: Instant,
    /// Wall-clock start.
    pub started_at: SystemTime,
    /// Addresses this node announces (L2 announcements), for `lumen status`.
    pub l2_status: crate::l2::Status,
    /// Node routes in place (`autoDirectNodeRoutes`), for `lumen status`.
    pub routes: crate::routing::Installed,
    /// WireGuard encryption, once started (`encryption.enabled`).
    pub encryption: std::sync::OnceLock<Arc<crate::encryption::Encryption>>,
    /// DNS awareness: the FQDN cache and what the DNS proxy knows of endpoints.
    pub dns: Arc<crate::dns::Dns>,
    datapath: Mutex<Datapath>,
    endpoints: Mutex<EndpointStore>,
    ipam: tokio::sync::Mutex<Option<IpamState>>,
    ipcache: RwLock<Arc<IpCache>>,
    state: watch::Receiver<Arc<ClusterState>>,
    refresher: Option<Refresher>,
    uplinks: Vec<(u32, String)>,
    host_ips: RwLock<Vec<IpAddr>>,
    policy: Mutex<PolicyState>,
}

impl Agent {
    /// Assembles the agent from its loaded parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: AgentConfig,
        datapath: Datapath,
        maps: Option<PolicyMaps>,
        endpoints: EndpointStore,
        state: watch::Receiver<Arc<ClusterState>>,
        refresher: Option<Refresher>,
        uplinks: Vec<(u32, String)>,
        host_ips: Vec<IpAddr>,
    ) -> Arc<Self> {
        let agent = Arc::new(Agent {
            node_name: cfg.hubble_node_name().into(),
            ring: Arc::new(Ring::new(cfg.ring_capacity())),
            started: Instant::now(),
            started_at: SystemTime::now(),
            l2_status: Default::default(),
            routes: Default::default(),
            encryption: Default::default(),
            dns: Arc::new(crate::dns::Dns::new(cfg.dns_proxy.clone())),
            datapath: Mutex::new(datapath),
            endpoints: Mutex::new(endpoints),
            ipam: tokio::sync::Mutex::new(None),
            ipcache: RwLock::new(Arc::new(IpCache::default())),
            state,
            refresher,
            uplinks,
            host_ips: RwLock::new(host_ips),
            policy: Mutex::new(PolicyState {
                engine: PolicyEngine::default(),
                refs: RuleRefs::default(),
                maps,
                report: Arc::default(),
            }),
            cfg,
        });
        agent.regenerate();
        // With Kubernetes, LB-IPAM and cluster-pool IPAM are the operator's (it writes
        // Service status and CiliumNodes through the API server).
        if agent.cfg.state_source == crate::config::StateSource::Manifests {
            agent.start_lbipam();
        }
        agent
    }

    /// Runs LB-IPAM ([`crate::lbipam::reconcile`]) now and after every state change, in the
    /// background. Needs a Tokio runtime (without one it does not run).
    fn start_lbipam(&self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut rx = self.state.clone();
        let dir = self.cfg.manifests_dir.clone();
        rt.spawn(async move {
            loop {
                let (d, state) = (dir.clone(), rx.borrow_and_update().clone());
                match tokio::task::spawn_blocking(move || crate::lbipam::reconcile(&d, &state))
                    .await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "LB-IPAM reconcile failed; retried on the next change")
                    }
                    Err(e) => tracing::error!(error = %e, "LB-IPAM reconcile panicked"),
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// What the last regeneration produced.
    pub fn policy_report(&self) -> Arc<PolicyReport> {
        self.policy.lock().report.clone()
    }

    /// How full the kernel maps the agent fills are, as of the last regeneration:
    /// (map, entries, capacity).
    pub fn map_fill(&self) -> Vec<crate::metrics::health::MapFill> {
        let (ipcache, endpoints, policy) = self.policy_report().map_entries;
        vec![
            (
                lumen_abi::maps::IPCACHE,
                ipcache as u64,
                lumen_abi::map_capacity::IPCACHE,
            ),
            (
                lumen_abi::maps::ENDPOINTS,
                endpoints as u64,
                lumen_abi::map_capacity::ENDPOINTS,
            ),
            (
                lumen_abi::maps::POLICY,
                policy as u64,
                lumen_abi::map_capacity::POLICY,
            ),
        ]
    }

    /// The current ipcache snapshot.
    pub fn ipcache(&self) -> Arc<IpCache> {
        self.ipcache.read().clone()
    }

    /// The state source's snapshots (for the Peer service).
    pub fn state(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.state.clone()
    }

    /// Recomputes identities, the ipcache and every local endpoint's policy from the state
    /// and the local endpoints, and brings the kernel maps in line. Serialised: concurrent
    /// callers wait for each other, so the maps always end at the newest state.
    pub fn regenerate(&self) {
        let started = Instant::now();
        let mut pol = self.policy.lock();
        let state = self.state.borrow().clone();
        let locals: Vec<_> = self.endpoints.lock().all().cloned().collect();
        let host_ips = self.host_ips.read().clone();
        let mut cache = IpCache::build(
            &state,
            &locals,
            &NodeView {
                node_name: &self.cfg.node_name,
                cluster: &self.cfg.cluster.name,
                host_ips: &host_ips,
                uplinks: &self.uplinks,
            },
        );
        pol.engine.update(&state);
        let set = self
            .dns
            .apply(pol.engine.policy_set(self.cfg.policy_audit_mode));
        let PolicyState { refs, maps, .. } = &mut *pol;
        let mut regen = regen::regenerate(&cache, &state, &set, refs);
        self.dns.set_endpoints(std::mem::take(&mut regen.dns));
        cache.set_fqdn(self.dns.addresses(), &regen.identities);
        let mut datapath_error = None;
        if let Some(maps) = maps.as_mut() {
            match maps.sync(&regen.maps) {
                Ok(stats) if stats.written + stats.removed > 0 => {
                    tracing::info!(
                        written = stats.written,
                        removed = stats.removed,
                        "datapath maps updated"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "writing the datapath maps failed; the previous entries stay");
                    datapath_error = Some(e.to_string());
                }
            }
        }
        let mut source_errors = state.source_errors.clone();
        // With kube-proxy replacement off the maps are kept empty (and emptied).
        let want = if self.cfg.kube_proxy_replacement {
            let (want, problems) = crate::datapath::services::desired(
                &state,
                &self.cfg.node_name,
                self.cfg.load_balancer.algorithm,
            );
            source_errors.extend(problems);
            want
        } else {
            Default::default()
        };
        cache.services = Arc::new(crate::datapath::services::ServiceNames::new(&want));
        if let Some(maps) = maps.as_mut() {
            match maps.services.sync(&want) {
                Ok(st) if st.written + st.removed + st.evicted > 0 => {
                    tracing::info!(
                        written = st.written,
                        removed = st.removed,
                        evicted = st.evicted,
                        frontends = want.len(),
                        "service maps updated"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "writing the service maps failed; the previous entries stay");
                    datapath_error = Some(e.to_string());
                }
            }
        }
        cache.attribution = Arc::new(regen.attribution);
        *self.ipcache.write() = Arc::new(cache);
        let prev = pol.report.regenerations;
        pol.report = Arc::new(PolicyReport {
            endpoints: regen.endpoints,
            identities: regen.identities,
            policies: pol.engine.statuses(),
            source_errors,
            map_entries: (
                regen.maps.ipcache.len(),
                regen.maps.endpoints.len(),
                regen.maps.policy.len(),
            ),
            datapath_error,
            regeneration_us: started.elapsed().as_micros() as u64,
            regenerations: prev + 1,
        });
    }

    /// Re-attaches to every known endpoint and uplink (adopting pinned links), and drops
    /// pinned links of endpoints that no longer exist.
    pub fn reconcile_datapath(&self) -> Result<(), AgentError> {
        let mut dp = self.datapath.lock();
        let mut wanted = std::collections::BTreeSet::new();
        for (_, dev) in &self.uplinks {
            for hook in Hook::NETWORK {
                let outcome = dp.attach(dev, hook)?;
                tracing::info!(device = %dev, ?hook, ?outcome, "uplink observed");
            }
            wanted.insert(dev.clone());
        }
        if self.encryption.get().is_some() {
            let dev = crate::encryption::INTERFACE;
            // The device is new with every agent: a link pinned on its predecessor
            // would be adopted, yet attached to nothing.
            let _ = dp.detach(dev, Hook::CryptoIngress);
            let outcome = dp.attach(dev, Hook::CryptoIngress)?;
            tracing::info!(device = dev, ?outcome, "WireGuard device observed");
            wanted.insert(dev.to_string());
        }
        let eps: Vec<_> = self.endpoints.lock().all().cloned().collect();
        for ep in eps {
            let ifname = &ep.spec.host_ifname;
            if node_setup::ifindex(ifname).is_none() {
                tracing::warn!(ifname, pod = %ep.spec.pod_name, "endpoint interface is gone; waiting for CNI DEL");
                continue;
            }
            for hook in Hook::ENDPOINT {
                let outcome = dp.attach(ifname, hook)?;
                tracing::info!(ifname, ?hook, ?outcome, pod = %ep.spec.pod_name, "endpoint observed");
            }
            wanted.insert(ifname.clone());
        }
        for pin in dp.pinned_links() {
            let Some((ifname, _)) = pin.rsplit_once('-') else {
                continue;
            };
            if !wanted.contains(ifname) {
                tracing::info!(ifname, "dropping link of a vanished interface");
                for hook in Hook::ENDPOINT.into_iter().chain(Hook::NETWORK) {
                    let _ = dp.detach(ifname, hook);
                }
            }
        }
        Ok(())
    }

    /// Where a missing pod CIDR should come from, for [`AgentError::NoPodCidr`].
    fn no_pod_cidr_hint(&self) -> String {
        use crate::config::{IpamMode, StateSource};
        match (self.cfg.state_source, self.cfg.ipam.mode()) {
            (StateSource::Kubernetes, IpamMode::ClusterPool) => {
                "the operator has not written spec.ipam.podCIDRs on this node's CiliumNode; \
                 check that lumen-operator runs and has a leader (kubectl -n kube-system logs \
                 deploy/lumen-operator), then retry"
                    .into()
            }
            (StateSource::Kubernetes, IpamMode::Kubernetes) => {
                "the Node object has no spec.podCIDR; run kube-controller-manager with \
                 --allocate-node-cidrs, or use ipam.mode cluster-pool, then retry"
                    .into()
            }
            (StateSource::Manifests, _) => format!(
                "no spec.podCIDR on the Node object in the state source ({}); add the Node \
                 object and retry",
                self.cfg.manifests_dir.display()
            ),
        }
    }

    /// Opens IPAM once this node's pod CIDR is known, preparing the node's router.
    async fn ipam(&self) -> Result<tokio::sync::MutexGuard<'_, Option<IpamState>>, AgentError> {
        let mut guard = self.ipam.lock().await;
        if guard.is_none() {
            let cidr = if self.cfg.ipam.mode() == crate::config::IpamMode::ClusterPool
                && self.cfg.state_source == crate::config::StateSource::Manifests
            {
                let op = &self.cfg.ipam.operator;
                let (dir, me) = (self.cfg.manifests_dir.clone(), self.cfg.node_name.clone());
                let (pools, mask) = (
                    op.cluster_pool_ipv4_pod_cidr_list.clone(),
                    op.cluster_pool_ipv4_mask_size,
                );
                let claimed = tokio::task::spawn_blocking(move || {
                    crate::podcidr::claim(&dir, &me, &pools, mask)
                })
                .await
                .expect("pod CIDR claim task")?;
                // The other agents (and this one's routes) learn it from the state source.
                if let Some(r) = &self.refresher {
                    r.refresh().await;
                }
                ipnet::IpNet::V4(claimed)
            } else {
                self.state
                    .borrow()
                    .nodes
                    .get(&self.cfg.node_name)
                    .and_then(|n| {
                        n.pod_cidrs
                            .iter()
                            .find(|c| matches!(c, ipnet::IpNet::V4(_)))
                            .copied()
                    })
                    .ok_or_else(|| AgentError::NoPodCidr {
                        node: self.cfg.node_name.clone(),
                        hint: self.no_pod_cidr_hint(),
                    })?
            };
            let gateway = router_ip(&cidr);
            node_setup::ensure(gateway).await?;
            self.host_ips.write().push(gateway);
            let ipam = Ipam::open(&self.cfg.state_dir.join("ipam.json"), cidr, gateway)?;
            tracing::info!(%cidr, %gateway, "IPAM ready");
            *guard = Some(IpamState {
                cidr,
                gateway,
                ipam,
            });
            drop(guard);
            self.regenerate();
            guard = self.ipam.lock().await;
        }
        Ok(guard)
    }

    /// The pods' gateway on this node, once IPAM is ready: where the DNS proxy listens.
    pub async fn gateway(&self) -> Result<IpAddr, AgentError> {
        let guard = self.ipam().await?;
        guard
            .as_ref()
            .map(|s| s.gateway)
            .ok_or_else(|| AgentError::NoPodCidr {
                node: self.cfg.node_name.clone(),
                hint: self.no_pod_cidr_hint(),
            })
    }

    /// Prepares the node if its pod CIDR is already known (at start-up).
    pub async fn prepare_node(&self) {
        if let Err(e) = self.ipam().await {
            tracing::warn!(error = %e, "node not prepared yet; will retry on the first pod");
        }
    }

    /// Handles one local-API request.
    pub async fn handle(&self, req: Request) -> Response {
        let result = match req {
            Request::IpamAllocate {
                attachment,
                pod_namespace,
                pod_name,
            } => self
                .allocate(&attachment, &pod_namespace, &pod_name)
                .await
                .map(Response::Allocated),
            Request::EndpointAdd(spec) => self
                .endpoint_add(spec)
                .await
                .map(|endpoint_id| Response::EndpointAdded { endpoint_id }),
            Request::EndpointDel { attachment } => self
                .endpoint_del(&attachment)
                .await
                .map(|spec| Response::EndpointDeleted { spec }),
            Request::EndpointGet { attachment } => {
                let eps = self.endpoints.lock();
                let ep = eps.get(&attachment);
                Ok(Response::Endpoint {
                    spec: ep.map(|e| e.spec.clone()),
                    endpoint_id: ep.map(|e| e.id),
                })
            }
        };
        result.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "local API request failed");
            Response::Error {
                message: e.to_string(),
            }
        })
    }

    async fn allocate(
        &self,
        a: &Attachment,
        ns: &str,
        pod: &str,
    ) -> Result<IpamResult, AgentError> {
        let mut guard = self.ipam().await?;
        let st = guard.as_mut().expect("ipam() initialised it");
        let ip = st.ipam.allocate(a, &format!("{ns}/{pod}"))?;
        tracing::info!(%ip, namespace = ns, pod, "address allocated");
        Ok(IpamResult {
            ip,
            prefix_len: st.cidr.prefix_len(),
            gateway: st.gateway,
            mtu: self.cfg.encryption.enabled.then(|| self.cfg.pod_mtu()),
        })
    }

    async fn endpoint_add(&self, spec: EndpointSpec) -> Result<u32, AgentError> {
        // The runtime writes the Pod before calling CNI ADD: if the state source has not
        // shown it yet, look now, so the pod's first flows already carry its labels.
        if self
            .state
            .borrow()
            .pod(&spec.pod_namespace, &spec.pod_name)
            .is_none()
        {
            if let Some(r) = &self.refresher {
                r.refresh().await;
            }
        }
        let (ns, pod, ifname, attachment) = (
            spec.pod_namespace.clone(),
            spec.pod_name.clone(),
            spec.host_ifname.clone(),
            spec.attachment.clone(),
        );
        // Register and write its policy first, so the programs enforce from the first packet.
        let id = self.endpoints.lock().add(spec)?;
        self.regenerate();
        let attached = {
            let mut dp = self.datapath.lock();
            Hook::ENDPOINT
                .into_iter()
                .try_for_each(|hook| dp.attach(&ifname, hook).map(|_| ()))
        };
        if let Err(e) = attached {
            let _ = self.endpoints.lock().remove(&attachment);
            self.regenerate();
            return Err(e.into());
        }
        tracing::info!(endpoint_id = id, namespace = %ns, pod = %pod, %ifname, "endpoint added");
        Ok(id)
    }

    async fn endpoint_del(&self, a: &Attachment) -> Result<Option<EndpointSpec>, AgentError> {
        let removed = self.endpoints.lock().remove(a)?;
        if let Some(ep) = &removed {
            let mut dp = self.datapath.lock();
            for hook in Hook::ENDPOINT {
                // The address must still be released below; a stale pin is retried at start-up.
                if let Err(e) = dp.detach(&ep.spec.host_ifname, hook) {
                    tracing::warn!(error = %e, ifname = %ep.spec.host_ifname, "detach failed");
                }
            }
            tracing::info!(endpoint_id = ep.id, pod = %ep.spec.pod_name, "endpoint removed");
        }
        if let Ok(mut guard) = self.ipam().await {
            if let Some(st) = guard.as_mut() {
                st.ipam.release(a)?;
            }
        }
        self.regenerate();
        Ok(removed.map(|e| e.spec))
    }
}

/// The router (gateway) address of a pod CIDR: its first host address.
pub fn router_ip(cidr: &ipnet::IpNet) -> IpAddr {
    match cidr {
        ipnet::IpNet::V4(n) => IpAddr::V4((u32::from(n.network()) + 1).into()),
        ipnet::IpNet::V6(n) => IpAddr::V6((u128::from(n.network()) + 1).into()),
    }
}
