//! Lumen service load balancing: the model and algorithms behind kube-proxy replacement,
//! which the node agent turns into eBPF service, backend and Maglev maps.
//!
//! Flow: [`Service::parse`] and [`EndpointSlice::parse`] the API objects;
//! [`allocate`] LoadBalancer IPs from [`IpPool`]s and put the result into
//! [`Service::ingress_ips`]; compute each node's [`frontends`]; per frontend build a selector
//! ([`Random`] or a [`Maglev`] table, per [`Algorithm`]) that the datapath feeds with a
//! random number or a [`FiveTuple::hash`]; summarise with [`ServiceTable`].

mod error;
mod field;
mod frontend;
mod hash;
mod ipam;
mod maglev;
mod meta;
mod pool;
mod protocol;
mod select;
mod selector;
mod service;
mod slice;
mod table;

pub use error::{MaglevError, ParseError};
pub use frontend::{frontends, Backend, BackendState, Frontend, FrontendKind};
pub use hash::{
    fnv1a_32, fnv1a_64, FiveTuple, FNV32_OFFSET, FNV32_PRIME, FNV64_OFFSET, FNV64_PRIME,
};
pub use ipam::{
    allocate, is_lbipam_managed, AssignedIp, ConditionReason, IpamCondition, IpamResult, PoolUsage,
    ServiceAllocation, LB_CLASS_BGP, LB_CLASS_L2_ANNOUNCER,
};
pub use maglev::{Maglev, MaglevTable, DEFAULT_TABLE_SIZE, SUPPORTED_TABLE_SIZES};
pub use meta::{ObjectMeta, ServiceName};
pub use pool::{IpPool, IpRange, PoolBlock, LABEL_SERVICE_NAMESPACE, LABEL_SERVICE_NAME_VIRTUAL};
pub use protocol::Protocol;
pub use select::{Algorithm, Random, Selector};
pub use selector::{LabelSelector, Operator, Requirement};
pub use service::{
    IpFamily, IpFamilyPolicy, Service, ServicePort, ServiceType, TargetPort, TrafficPolicy,
    ANNOTATION_LBIPAM_IPS, ANNOTATION_LBIPAM_SHARING_KEY, DEFAULT_AFFINITY_TIMEOUT_SECONDS,
    MAX_AFFINITY_TIMEOUT_SECONDS,
};
pub use slice::{
    merge_slices, Endpoint, EndpointConditions, EndpointPort, EndpointSlice, MergedEndpoint,
    TargetRef, LABEL_SERVICE_NAME,
};
pub use table::{ServiceRow, ServiceTable, TableBackend};
