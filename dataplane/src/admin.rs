//! The admin side of the local API, what `lumen status`, `lumen endpoint list`,
//! `lumen policy get`, `lumen identity list`, `lumen service list` and `lumen encrypt
//! rotate-key` ask the agent (the operator's `cilium status` / `cilium endpoint list` habit). Same socket and framing as the CNI
//! requests: one JSON object per line, told apart by `op`.

use crate::{
    agent::{Agent, PolicyReport},
    policy::{regen::EndpointReport, PolicyStatus},
};
use serde::{Deserialize, Serialize};

/// An admin request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdminRequest {
    /// Agent health and summary.
    Status {},
    /// Local endpoints.
    EndpointList {},
    /// Effective policy per endpoint (optionally one endpoint), and every policy's status.
    PolicyGet {
        /// Only this endpoint id.
        #[serde(default)]
        endpoint: Option<u32>,
    },
    /// Identities in use.
    IdentityList {},
    /// Service frontends on this node with their backends, and LB-IPAM status.
    ServiceList {},
    /// Replace this node's WireGuard key (connections stay up).
    EncryptRotateKey {},
    /// The FQDN cache: names, addresses and expiry per endpoint.
    FqdnCacheList {},
}

impl AdminRequest {
    /// The `op` values admin requests use (everything else is a CNI request).
    pub const OPS: [&'static str; 7] = [
        "status",
        "endpoint_list",
        "policy_get",
        "identity_list",
        "service_list",
        "encrypt_rotate_key",
        "fqdn_cache_list",
    ];
}

/// `lumen status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// `<cluster>/<node>`.
    pub node: String,
    /// Agent version.
    pub version: String,
    /// Seconds since the agent started.
    pub uptime_seconds: u64,
    /// Kernel release.
    pub kernel: String,
    /// Local endpoints.
    pub endpoints: usize,
    /// Endpoints default-deny on ingress / egress.
    pub enforced: (usize, usize),
    /// Identities in use.
    pub identities: usize,
    /// Policies in force.
    pub policies: usize,
    /// Policy objects whose latest version was rejected (message each).
    pub rejected: Vec<String>,
    /// Policy warnings (message each).
    pub warnings: Vec<String>,
    /// State-source problems.
    pub source_errors: Vec<String>,
    /// Kernel map entries: ipcache, endpoints, policy.
    pub map_entries: (usize, usize, usize),
    /// A failed map update, if the last one failed.
    pub datapath_error: Option<String>,
    /// `policyAuditMode`.
    pub policy_audit_mode: bool,
    /// Last regeneration time, µs, and how many ran.
    pub regeneration: (u64, u64),
    /// Hubble: flows in the ring, its capacity, flows seen.
    pub flows: (usize, usize, u64),
    /// `hubble.listenAddress`.
    pub hubble_listen_address: String,
    /// Addresses this node announces on its uplink, with their leases (L2 announcements).
    #[serde(default)]
    pub l2_announcements: Vec<crate::l2::Announcement>,
    /// Routing: mode, settings and the node routes in place.
    #[serde(default)]
    pub routing: RoutingStatus,
    /// Node-to-node encryption (none: disabled).
    #[serde(default)]
    pub encryption: Option<crate::encryption::EncryptionStatus>,
    /// `bandwidthManager`, as `lumen status` prints it.
    #[serde(default)]
    pub bandwidth_manager: String,
    /// `stateSource`: `manifests` or `kubernetes`.
    #[serde(default)]
    pub state_source: String,
}

/// The routing part of `lumen status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoutingStatus {
    /// `routingMode`.
    pub mode: String,
    /// `autoDirectNodeRoutes`.
    pub auto_direct_node_routes: bool,
    /// `ipv4NativeRoutingCIDR`.
    pub native_routing_cidr: Option<String>,
    /// `bpf.masquerade`.
    pub masquerade: bool,
    /// Node routes in place: (pod CIDR, via node address).
    pub routes: Vec<(String, String)>,
}

/// One identity and its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRow {
    /// The number.
    pub id: u32,
    /// Its labels.
    pub labels: Vec<String>,
}

/// One backend of a [`ServiceEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendEntry {
    /// `address:port/PROTO`.
    pub address: String,
    /// `active` or `terminating`.
    pub state: String,
}

/// One frontend as `lumen service list` shows it (a row of [`lumen_lb::ServiceTable`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// 1-based position in the table.
    pub id: u32,
    /// `address:port/PROTO`.
    pub frontend: String,
    /// `ClusterIP`, `NodePort`, `LoadBalancer` or `ExternalIPs`.
    pub service_type: String,
    /// `namespace/name` of the service.
    pub service: String,
    /// Backends in selection order.
    pub backends: Vec<BackendEntry>,
}

/// An admin answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum AdminResponse {
    /// `status`.
    Status(Box<StatusReport>),
    /// `endpoint_list`.
    Endpoints {
        /// Local endpoints.
        endpoints: Vec<EndpointReport>,
    },
    /// `policy_get`.
    Policy {
        /// Endpoints with their rules.
        endpoints: Vec<EndpointReport>,
        /// Every policy object.
        policies: Vec<PolicyStatus>,
    },
    /// `identity_list`.
    Identities {
        /// Identities with their labels, by number.
        identities: Vec<IdentityRow>,
    },
    /// `service_list`.
    Services {
        /// Frontends, sorted like `cilium service list`.
        services: Vec<ServiceEntry>,
        /// LB-IPAM status of every LoadBalancer service.
        lbipam: Vec<crate::lbipam::ServiceIpam>,
        /// Services or EndpointSlices that do not parse.
        problems: Vec<String>,
    },
    /// `fqdn_cache_list`.
    FqdnCache {
        /// (endpoint, name, address, expiry, identity), sorted by endpoint then name.
        entries: Vec<crate::dns::cache::CacheEntry>,
    },
    /// `encrypt_rotate_key`.
    KeyRotated {
        /// The node's new public key.
        public_key: String,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Builds the status from a policy report and agent facts (a plain function for tests).
pub fn status(agent: &Agent, r: &PolicyReport) -> StatusReport {
    StatusReport {
        node: agent.node_name.to_string(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: agent.started.elapsed().as_secs(),
        kernel: kernel_release(),
        endpoints: r.endpoints.len(),
        enforced: (
            r.endpoints.iter().filter(|e| e.ingress.enforced).count(),
            r.endpoints.iter().filter(|e| e.egress.enforced).count(),
        ),
        identities: r.identities.len(),
        policies: r.policies.iter().filter(|p| p.revision > 0).count(),
        rejected: r.policies.iter().filter_map(|p| p.error.clone()).collect(),
        warnings: r
            .policies
            .iter()
            .flat_map(|p| {
                p.warnings
                    .iter()
                    .map(move |w| format!("{} {}/{}: {w}", p.kind, p.namespace, p.name))
            })
            .collect(),
        source_errors: r.source_errors.clone(),
        map_entries: r.map_entries,
        datapath_error: r.datapath_error.clone(),
        policy_audit_mode: agent.cfg.policy_audit_mode,
        regeneration: (r.regeneration_us, r.regenerations),
        flows: (agent.ring.len(), agent.ring.capacity(), agent.ring.seen()),
        hubble_listen_address: agent.cfg.hubble.listen_address.clone(),
        bandwidth_manager: bandwidth_manager_status(&agent.cfg.bandwidth_manager),
        state_source: format!("{:?}", agent.cfg.state_source).to_lowercase(),
        l2_announcements: agent.l2_status.read().clone(),
        routing: RoutingStatus {
            mode: "native".into(),
            auto_direct_node_routes: agent.cfg.auto_direct_node_routes,
            native_routing_cidr: agent.cfg.ipv4_native_routing_cidr.map(|c| c.to_string()),
            masquerade: agent.cfg.bpf.masquerade,
            routes: agent
                .routes
                .read()
                .iter()
                .map(|(c, g)| (c.to_string(), g.to_string()))
                .collect(),
        },
        encryption: agent.encryption.get().map(|e| e.status()),
    }
}

/// The frontends of this node and the LB-IPAM status of the agent's current state.
pub fn service_list(agent: &Agent) -> AdminResponse {
    let state = agent.state().borrow().clone();
    let (frontends, problems) =
        crate::datapath::services::node_frontends(&state, &agent.cfg.node_name);
    let table = lumen_lb::ServiceTable::new(&frontends);
    AdminResponse::Services {
        services: table
            .rows
            .into_iter()
            .map(|r| ServiceEntry {
                id: r.id,
                frontend: r.frontend,
                service_type: r.service_type.as_str().into(),
                service: r.service.to_string(),
                backends: r
                    .backends
                    .into_iter()
                    .map(|b| BackendEntry {
                        address: b.address,
                        state: b.state.as_str().into(),
                    })
                    .collect(),
            })
            .collect(),
        lbipam: crate::lbipam::service_status(&state),
        problems,
    }
}

/// Answers one admin request.
pub fn handle(agent: &Agent, req: AdminRequest) -> AdminResponse {
    let r = agent.policy_report();
    match req {
        AdminRequest::ServiceList {} => service_list(agent),
        AdminRequest::FqdnCacheList {} => AdminResponse::FqdnCache {
            entries: agent.dns.list(),
        },
        AdminRequest::EncryptRotateKey {} => match agent.encryption.get() {
            None => AdminResponse::Error {
                message: "encryption is not enabled on this node (encryption.enabled: true)".into(),
            },
            Some(enc) => match enc.rotate_key() {
                Ok(key) => AdminResponse::KeyRotated {
                    public_key: key.to_base64(),
                },
                Err(e) => AdminResponse::Error {
                    message: e.to_string(),
                },
            },
        },
        AdminRequest::Status {} => AdminResponse::Status(Box::new(status(agent, &r))),
        AdminRequest::EndpointList {} => AdminResponse::Endpoints {
            endpoints: r.endpoints.clone(),
        },
        AdminRequest::PolicyGet { endpoint } => {
            let endpoints: Vec<_> = r
                .endpoints
                .iter()
                .filter(|e| endpoint.is_none_or(|id| e.id == id))
                .cloned()
                .collect();
            if let (Some(id), true) = (endpoint, endpoints.is_empty()) {
                return AdminResponse::Error {
                    message: format!(
                        "no endpoint {id} on this node; `lumen endpoint list` shows them"
                    ),
                };
            }
            AdminResponse::Policy {
                endpoints,
                policies: r.policies.clone(),
            }
        }
        AdminRequest::IdentityList {} => AdminResponse::Identities {
            identities: r
                .identities
                .iter()
                .map(|(id, labels)| IdentityRow {
                    id: *id,
                    labels: labels.clone(),
                })
                .collect(),
        },
    }
}

/// Whether a request line is an admin request (by its `op`).
pub fn is_admin(line: &str) -> bool {
    #[derive(Deserialize)]
    struct Op {
        op: String,
    }
    serde_json::from_str::<Op>(line).is_ok_and(|o| AdminRequest::OPS.contains(&o.op.as_str()))
}

/// `bandwidthManager` in `lumen status`: accepted but not enforced, and it says so.
fn bandwidth_manager_status(b: &crate::config::BandwidthManagerConfig) -> String {
    if b.enabled {
        "Disabled (bandwidthManager.enabled is set, but Lumen does not enforce \
         kubernetes.io/egress-bandwidth yet)"
            .into()
    } else {
        "Disabled".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_are_told_apart_from_cni_requests() {
        let line = serde_json::to_string(&AdminRequest::PolicyGet { endpoint: Some(3) }).unwrap();
        assert_eq!(line, r#"{"op":"policy_get","endpoint":3}"#);
        assert!(is_admin(&line));
        assert!(is_admin(r#"{"op":"status"}"#));
        assert!(!is_admin(r#"{"op":"ipam_allocate","attachment":{}}"#));
        assert!(!is_admin("not json"));
        let back: AdminRequest = serde_json::from_str(r#"{"op":"policy_get"}"#).unwrap();
        assert_eq!(back, AdminRequest::PolicyGet { endpoint: None });
        assert!(serde_json::from_str::<AdminRequest>(r#"{"op":"status","x":1}"#).is_err());
    }

    #[test]
    fn answers_round_trip_through_json() {
        let a = AdminResponse::Identities {
            identities: vec![IdentityRow {
                id: 1,
                labels: vec!["reserved:host".into()],
            }],
        };
        let back: AdminResponse =
            serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(back, a);
    }
}
