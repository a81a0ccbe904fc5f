//! Reserved identity numbers and the Cilium entities that map onto them.

/// Identity 0: any peer (wildcard in the policy map).
pub const IDENTITY_ANY: u32 = 0;
/// Reserved identity of the local host.
pub const IDENTITY_HOST: u32 = 1;
/// Reserved identity of everything outside the cluster.
pub const IDENTITY_WORLD: u32 = 2;
/// Reserved identity of pods not managed by Cilium/Lumen.
pub const IDENTITY_UNMANAGED: u32 = 3;
/// Reserved identity of health-check endpoints.
pub const IDENTITY_HEALTH: u32 = 4;
/// Reserved identity of endpoints whose labels are not known yet.
pub const IDENTITY_INIT: u32 = 5;
/// Reserved identity of other nodes.
pub const IDENTITY_REMOTE_NODE: u32 = 6;
/// Reserved identity of the Kubernetes API server.
pub const IDENTITY_KUBE_APISERVER: u32 = 7;
/// Reserved identity of the ingress proxy.
pub const IDENTITY_INGRESS: u32 = 8;
/// Reserved identity of IPv4 world (dual-stack).
pub const IDENTITY_WORLD_IPV4: u32 = 9;
/// Reserved identity of IPv6 world (dual-stack).
pub const IDENTITY_WORLD_IPV6: u32 = 10;
/// First cluster identity.
pub const CLUSTER_IDENTITY_MIN: u32 = 256;
/// Last cluster identity.
pub const CLUSTER_IDENTITY_MAX: u32 = 65535;
/// First node-local CIDR identity.
pub const CIDR_IDENTITY_BASE: u32 = 1 << 24;

/// A Cilium entity usable in `fromEntities` / `toEntities`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Entity {
    /// Outside the cluster: world identities and every CIDR identity.
    World,
    /// Every cluster identity plus the in-cluster reserved ones.
    Cluster,
    /// The local host.
    Host,
    /// Other nodes.
    RemoteNode,
    /// Anything (wildcard).
    All,
    /// Health endpoints.
    Health,
    /// Endpoints being initialised.
    Init,
    /// Unmanaged pods.
    Unmanaged,
    /// The API server.
    KubeApiserver,
    /// The ingress proxy.
    Ingress,
}

impl Entity {
    /// Parses an entity name as written in a policy.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "world" => Entity::World,
            "cluster" => Entity::Cluster,
            "host" => Entity::Host,
            "remote-node" => Entity::RemoteNode,
            "all" => Entity::All,
            "health" => Entity::Health,
            "init" => Entity::Init,
            "unmanaged" => Entity::Unmanaged,
            "kube-apiserver" => Entity::KubeApiserver,
            "ingress" => Entity::Ingress,
            _ => return None,
        })
    }

    /// The single reserved identity of entities that are exactly one identity.
    pub(crate) fn reserved_identity(self) -> Option<u32> {
        Some(match self {
            Entity::Host => IDENTITY_HOST,
            Entity::RemoteNode => IDENTITY_REMOTE_NODE,
            Entity::All => IDENTITY_ANY,
            Entity::Health => IDENTITY_HEALTH,
            Entity::Init => IDENTITY_INIT,
            Entity::Unmanaged => IDENTITY_UNMANAGED,
            Entity::KubeApiserver => IDENTITY_KUBE_APISERVER,
            Entity::Ingress => IDENTITY_INGRESS,
            Entity::World | Entity::Cluster => return None,
        })
    }
}

/// Reserved identities that belong to the `cluster` entity besides 256..=65535.
pub(crate) const CLUSTER_RESERVED: [u32; 6] = [
    IDENTITY_HOST,
    IDENTITY_UNMANAGED,
    IDENTITY_HEALTH,
    IDENTITY_INIT,
    IDENTITY_REMOTE_NODE,
    IDENTITY_KUBE_APISERVER,
];
