//! The Kubernetes object shapes the agent reads, parsed leniently (real manifests carry many
//! fields the agent does not need) but strictly where it matters (names, addresses, CIDRs).

use serde::Deserialize;
use std::{collections::BTreeMap, fmt, net::IpAddr};

/// (kind, namespace, name) of an object; namespace empty for cluster-scoped kinds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// `kind`.
    pub kind: String,
    /// `metadata.namespace`, empty when cluster-scoped.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Any Kubernetes object as delivered.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Object {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata`.
    pub metadata: Metadata,
    /// `spec`, kept raw.
    #[serde(default)]
    pub spec: serde_yaml::Value,
    /// `status`, kept raw.
    #[serde(default)]
    pub status: serde_yaml::Value,
    /// `items` of a `List`.
    #[serde(default)]
    pub items: Vec<serde_yaml::Value>,
    /// `specs` (CiliumNetworkPolicy's list form), kept raw.
    #[serde(default)]
    pub specs: serde_yaml::Value,
    /// Where the object came from (a manifest file), for error messages.
    #[serde(skip)]
    pub source: Option<std::sync::Arc<str>>,
    /// The whole object as delivered, for kinds parsed elsewhere (Service, EndpointSlice:
    /// their top-level fields are not kept above).
    #[serde(skip)]
    pub raw: Option<std::sync::Arc<serde_yaml::Value>>,
}

/// `metadata`.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// `name`.
    #[serde(default)]
    pub name: String,
    /// `namespace`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// `labels`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `ownerReferences`.
    #[serde(default)]
    pub owner_references: Vec<OwnerRef>,
    /// `annotations`.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// `generation`, when the source keeps one.
    #[serde(default)]
    pub generation: Option<u64>,
}

/// One `ownerReferences` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerRef {
    /// Owner kind, e.g. `ReplicaSet`.
    pub kind: String,
    /// Owner name.
    pub name: String,
}

impl Object {
    /// Its key.
    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            kind: self.kind.clone(),
            namespace: self.metadata.namespace.clone().unwrap_or_default(),
            name: self.metadata.name.clone(),
        }
    }
}

/// Why a typed view of an object could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// A required field is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A field has the wrong shape or value.
    #[error("invalid {field}: {source}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What serde said.
        source: serde_yaml::Error,
    },
    /// An address or CIDR that does not parse.
    #[error("invalid {field} {value:?}")]
    BadValue {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
    },
}

fn sub<T: for<'de> Deserialize<'de> + Default>(
    v: &serde_yaml::Value,
    field: &'static str,
) -> Result<T, ObjectError> {
    if v.is_null() {
        return Ok(T::default());
    }
    serde_yaml::from_value(v.clone()).map_err(|source| ObjectError::Invalid { field, source })
}

/// A Namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

impl Namespace {
    /// From a `v1 Namespace`.
    pub fn from_object(o: &Object) -> Result<Self, ObjectError> {
        if o.metadata.name.is_empty() {
            return Err(ObjectError::Missing("metadata.name"));
        }
        Ok(Namespace {
            name: o.metadata.name.clone(),
            labels: o.metadata.labels.clone(),
        })
    }
}

/// A Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `spec.nodeName`.
    pub node_name: String,
    /// `spec.serviceAccountName` (default `default`).
    pub service_account: String,
    /// `status.podIPs` / `status.podIP`.
    pub ips: Vec<IpAddr>,
    /// `spec.hostNetwork`.
    pub host_network: bool,
    /// Controller owner, if any.
    pub owner: Option<OwnerRef>,
    /// Named container ports: name → (IP protocol number, port).
    pub named_ports: BTreeMap<String, (u8, u16)>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    #[serde(default)]
    node_name: String,
    #[serde(default)]
    service_account_name: String,
    #[serde(default)]
    host_network: bool,
    #[serde(default)]
    containers: Vec<Container>,
}

#[derive(Deserialize, Default)]
struct Container {
    #[serde(default)]
    ports: Vec<ContainerPort>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ContainerPort {
    #[serde(default)]
    name: String,
    container_port: u16,
    #[serde(default)]
    protocol: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodStatus {
    #[serde(default, rename = "podIP")]
    pod_ip: String,
    #[serde(default, rename = "podIPs")]
    pod_ips: Vec<PodIp>,
}

#[derive(Deserialize, Default)]
struct PodIp {
    ip: String,
}

fn parse_ip(field: &'static str, s: &str) -> Result<IpAddr, ObjectError> {
    s.parse().map_err(|_| ObjectError::BadValue {
        field,
        value: s.to_string(),
    })
}

impl Pod {
    /// From a `v1 Pod`.
    pub fn from_object(o: &Object) -> Result<Self, ObjectError> {
        if o.metadata.name.is_empty() {
            return Err(ObjectError::Missing("metadata.name"));
        }
        let spec: PodSpec = sub(&o.spec, "spec")?;
        let status: PodStatus = sub(&o.status, "status")?;
        let mut ips = vec![];
        for p in &status.pod_ips {
            ips.push(parse_ip("status.podIPs", &p.ip)?);
        }
        if ips.is_empty() && !status.pod_ip.is_empty() {
            ips.push(parse_ip("status.podIP", &status.pod_ip)?);
        }
        Ok(Pod {
            namespace: o
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: o.metadata.name.clone(),
            labels: o.metadata.labels.clone(),
            node_name: spec.node_name,
            service_account: if spec.service_account_name.is_empty() {
                "default".into()
            } else {
                spec.service_account_name
            },
            ips,
            host_network: spec.host_network,
            owner: o.metadata.owner_references.first().cloned(),
            named_ports: spec
                .containers
                .iter()
                .flat_map(|c| &c.ports)
                .filter(|p| !p.name.is_empty())
                .map(|p| {
                    let proto = match p.protocol.as_str() {
                        "UDP" => 17,
                        "SCTP" => 132,
                        _ => 6,
                    };
                    (p.name.clone(), (proto, p.container_port))
                })
                .collect(),
        })
    }
}

/// One `status.addresses` entry of a Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    /// `InternalIP`, `ExternalIP`, `Hostname`...
    pub kind: String,
    /// The address (Hostname entries are skipped).
    pub address: IpAddr,
}

/// A Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `spec.podCIDRs` / `spec.podCIDR`.
    pub pod_cidrs: Vec<ipnet::IpNet>,
    /// IP addresses from `status.addresses`.
    pub addresses: Vec<NodeAddress>,
    /// Its WireGuard public key (base64), from the [`WG_PUB_KEY_ANNOTATION`] annotation of
    /// the Node or, taking precedence, of its CiliumNode.
    pub wg_pub_key: Option<String>,
}

/// The annotation a node publishes its WireGuard public key in (Cilium's name).
pub const WG_PUB_KEY_ANNOTATION: &str = "network.cilium.io/wg-pub-key";

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct NodeSpec {
    #[serde(default, rename = "podCIDR")]
    pod_cidr: String,
    #[serde(default, rename = "podCIDRs")]
    pod_cidrs: Vec<String>,
}

#[derive(Deserialize, Default)]
struct NodeStatus {
    #[serde(default)]
    addresses: Vec<RawAddress>,
}

#[derive(Deserialize, Default)]
struct RawAddress {
    #[serde(rename = "type")]
    kind: String,
    address: String,
}

impl Node {
    /// From a `v1 Node`.
    pub fn from_object(o: &Object) -> Result<Self, ObjectError> {
        if o.metadata.name.is_empty() {
            return Err(ObjectError::Missing("metadata.name"));
        }
        let spec: NodeSpec = sub(&o.spec, "spec")?;
        let status: NodeStatus = sub(&o.status, "status")?;
        let mut cidrs: Vec<String> = spec.pod_cidrs;
        if cidrs.is_empty() && !spec.pod_cidr.is_empty() {
            cidrs.push(spec.pod_cidr);
        }
        let pod_cidrs = cidrs
            .iter()
            .map(|c| {
                c.parse().map_err(|_| ObjectError::BadValue {
                    field: "spec.podCIDRs",
                    value: c.clone(),
                })
            })
            .collect::<Result<_, _>>()?;
        let mut addresses = vec![];
        for a in status.addresses {
            if a.kind == "Hostname" {
                continue;
            }
            addresses.push(NodeAddress {
                address: parse_ip("status.addresses", &a.address)?,
                kind: a.kind,
            });
        }
        Ok(Node {
            name: o.metadata.name.clone(),
            labels: o.metadata.labels.clone(),
            pod_cidrs,
            addresses,
            wg_pub_key: o.metadata.annotations.get(WG_PUB_KEY_ANNOTATION).cloned(),
        })
    }

    /// The first InternalIP, else any address.
    pub fn internal_ip(&self) -> Option<IpAddr> {
        self.addresses
            .iter()
            .find(|a| a.kind == "InternalIP")
            .or_else(|| self.addresses.first())
            .map(|a| a.address)
    }
}
