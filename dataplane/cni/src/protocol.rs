//! The agent's local API, spoken by the CNI plugin over a unix socket: one JSON request per
//! line, one JSON response per line. Kept deliberately small so the plugin needs no async
//! runtime to talk to the agent.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Identifies one pod interface, as CNI does: container id plus interface name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME` (the interface inside the pod, usually `eth0`).
    pub ifname: String,
}

/// A request from the CNI plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Allocate (or return the already allocated) address for an attachment.
    IpamAllocate {
        /// Which pod interface.
        attachment: Attachment,
        /// `K8S_POD_NAMESPACE`.
        pod_namespace: String,
        /// `K8S_POD_NAME`.
        pod_name: String,
    },
    /// The veth is wired: start observing it and register the endpoint.
    EndpointAdd(EndpointSpec),
    /// The pod is gone: stop observing, forget the endpoint, release its address.
    /// Succeeds when nothing is known about the attachment (CNI DEL is idempotent).
    EndpointDel {
        /// Which pod interface.
        attachment: Attachment,
    },
    /// What the agent knows of an attachment (for CNI CHECK).
    EndpointGet {
        /// Which pod interface.
        attachment: Attachment,
    },
}

/// Everything the agent needs to know about a wired pod interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Which pod interface.
    pub attachment: Attachment,
    /// `CNI_NETNS` path.
    pub netns: String,
    /// Name of the host-side veth.
    pub host_ifname: String,
    /// Index of the host-side veth in the node's namespace.
    pub host_ifindex: u32,
    /// The pod's address.
    pub ip: IpAddr,
    /// MAC of the pod-side interface.
    pub mac: String,
    /// `K8S_POD_NAMESPACE`.
    pub pod_namespace: String,
    /// `K8S_POD_NAME`.
    pub pod_name: String,
}

/// An allocated address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpamResult {
    /// The pod's address.
    pub ip: IpAddr,
    /// Prefix length of the node's pod CIDR.
    pub prefix_len: u8,
    /// The pod's gateway (the agent's router address on `lumen_host`).
    pub gateway: IpAddr,
    /// The pod interface's MTU when the agent decides it (WireGuard reserves room for
    /// its overhead); otherwise the network configuration's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// Answer to `IpamAllocate`.
    Allocated(IpamResult),
    /// Answer to `EndpointAdd`.
    EndpointAdded {
        /// The endpoint id the agent assigned (Hubble's `Endpoint.ID`).
        endpoint_id: u32,
    },
    /// Answer to `EndpointDel`; `spec` is what was removed, if anything was known.
    EndpointDeleted {
        /// The removed endpoint, so the plugin can delete its veth.
        spec: Option<EndpointSpec>,
    },
    /// Answer to `EndpointGet`.
    Endpoint {
        /// The endpoint, if known.
        spec: Option<EndpointSpec>,
        /// Its id, if known.
        endpoint_id: Option<u32>,
    },
    /// The request failed; `message` says why and what to do.
    Error {
        /// Human-readable reason.
        message: String,
    },
}
