//! Lumen network policy: parses Kubernetes NetworkPolicy, CiliumNetworkPolicy and
//! CiliumClusterwideNetworkPolicy objects and resolves them, for one endpoint, into the
//! per-identity entries the node agent writes into the eBPF LPM-trie policy map.
//!
//! Flow: [`parse`] each object into a [`Policy`], build a [`PolicySet`] once per state change,
//! allocate its [`PolicySet::cidr_identities`], then [`PolicySet::resolve`] each local endpoint
//! against the [`Universe`] of identities.

mod cidr;
mod entry;
mod error;
mod fqdn;
mod identity;
mod labels;
mod merge;
mod model;
mod parse;
mod ports;
mod resolve;
mod selector;
mod view;

pub use entry::{Action, DirectionPolicy, EndpointPolicy, Entry, PolicyRef};
pub use error::PolicyError;
pub use fqdn::{
    normalize as normalize_dns_name, DnsPolicy, FqdnIdentity, FqdnSelector, FQDN_IDENTITY_BASE,
};
pub use identity::{
    CIDR_IDENTITY_BASE, CLUSTER_IDENTITY_MAX, CLUSTER_IDENTITY_MIN, IDENTITY_ANY, IDENTITY_HEALTH,
    IDENTITY_HOST, IDENTITY_INGRESS, IDENTITY_INIT, IDENTITY_KUBE_APISERVER, IDENTITY_REMOTE_NODE,
    IDENTITY_UNMANAGED, IDENTITY_WORLD, IDENTITY_WORLD_IPV4, IDENTITY_WORLD_IPV6,
};
pub use model::{Policy, PolicyKind, PolicyMeta, AUDIT_ANNOTATION};
pub use parse::{is_policy_kind, parse};
pub use ports::{port_range_prefixes, PROTO_SCTP, PROTO_TCP, PROTO_UDP};
pub use resolve::PolicySet;
pub use view::{Direction, EndpointView, Universe};
