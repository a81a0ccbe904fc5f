//! What resolution is given about the cluster and the endpoint: [`Universe`], [`EndpointView`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A traffic direction, seen from the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Towards the endpoint.
    Ingress,
    /// From the endpoint.
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// Everything resolution needs to know about the cluster.
#[derive(Debug, Clone, Default)]
pub struct Universe {
    /// Every identity that exists and its labels (cluster identities, reserved ones 1..=10 with
    /// `reserved:<name>` labels; CIDR identities are NOT here: resolve allocates them).
    pub identities: BTreeMap<u32, Vec<String>>,
    /// Cluster-wide named ports: name -> set of (protocol number, port) of any pod (used for egress named ports).
    pub named_ports: BTreeMap<String, BTreeSet<(u8, u16)>>,
}

/// One local endpoint to compute the policy of.
#[derive(Debug, Clone, Default)]
pub struct EndpointView {
    /// Its security identity.
    pub identity: u32,
    /// Its identity labels (`source:key=value`).
    pub labels: Vec<String>,
    /// Its namespace (empty for the host and other namespace-less endpoints).
    pub namespace: String,
    /// Its own container ports by name (protocol number, port), for ingress named ports.
    pub named_ports: BTreeMap<String, (u8, u16)>,
}
