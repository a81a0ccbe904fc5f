//! The kinds the agent watches and where the API server serves them.

use kube::core::ApiResource;

/// One watched kind: its group, version, kind and plural (the URL segment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedKind {
    /// API group, empty for the core group.
    pub group: &'static str,
    /// Version, e.g. `v1`, `v2alpha1`.
    pub version: &'static str,
    /// Kind, as in the manifests (`CiliumNode`).
    pub kind: &'static str,
    /// Resource name in URLs (`ciliumnodes`).
    pub plural: &'static str,
}

impl WatchedKind {
    /// What kube-rs needs to address it.
    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.into(),
            version: self.version.into(),
            api_version: self.api_version(),
            kind: self.kind.into(),
            plural: self.plural.into(),
        }
    }

    /// `apiVersion` (`v1`, `cilium.io/v2`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.into()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group`, the name of its CustomResourceDefinition.
    pub fn crd_name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }
}

const fn k(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
) -> WatchedKind {
    WatchedKind {
        group,
        version,
        kind,
        plural,
    }
}

/// Everything the agent reads: the kinds [`ClusterState`](crate::state::ClusterState)
/// types (Namespace, Pod, Node), the load balancer's (Service, EndpointSlice), the
/// policy engine's, and Cilium's CRDs at the versions the manifest source accepts
/// (`CiliumLoadBalancerIPPool` and `CiliumL2AnnouncementPolicy` at `v2alpha1`, which every
/// Cilium release with them serves).
pub const DEFAULT_KINDS: &[WatchedKind] = &[
    k("", "v1", "Namespace", "namespaces"),
    k("", "v1", "Pod", "pods"),
    k("", "v1", "Node", "nodes"),
    k("", "v1", "Service", "services"),
    k("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    k(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
    ),
    k(
        "cilium.io",
        "v2",
        "CiliumNetworkPolicy",
        "ciliumnetworkpolicies",
    ),
    k(
        "cilium.io",
        "v2",
        "CiliumClusterwideNetworkPolicy",
        "ciliumclusterwidenetworkpolicies",
    ),
    k("cilium.io", "v2", "CiliumNode", "ciliumnodes"),
    k(
        "cilium.io",
        "v2alpha1",
        "CiliumLoadBalancerIPPool",
        "ciliumloadbalancerippools",
    ),
    k(
        "cilium.io",
        "v2alpha1",
        "CiliumL2AnnouncementPolicy",
        "ciliuml2announcementpolicies",
    ),
];
