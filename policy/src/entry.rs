//! Resolution output: the per-endpoint policy and its LPM map entries.

use crate::model::PolicyKind;

/// Verdict of a map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Let the traffic through.
    Allow,
    /// Drop it (or report AUDIT when the entry is audit).
    Deny,
}

/// One policy map entry. Sorted by (identity, proto, port, port_prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Peer identity; 0 = any peer.
    pub identity: u32,
    /// 0 = any protocol (then port and port_prefix are 0); 6 TCP, 17 UDP, 132 SCTP.
    pub proto: u8,
    /// First port of an aligned block.
    pub port: u16,
    /// 0..=16 leading bits of `port` that must match (16 = exact port, 0 = any port).
    pub port_prefix: u8,
    /// Allow or deny.
    pub action: Action,
    /// Deny from an audit-mode policy (or global audit): report AUDIT, let through.
    pub audit: bool,
    /// Hubble policy_match_type: 1 L3-only, 2 L3+L4, 3 L4-only, 4 all, 5 L3+proto, 6 proto-only.
    pub match_type: u8,
    /// Index into [`EndpointPolicy::refs`] of the policy the entry comes from.
    pub policy: usize,
}

/// Hubble match type of an entry key.
pub(crate) fn match_type(identity: u32, proto: u8, port_prefix: u8) -> u8 {
    match (identity != 0, proto != 0, port_prefix != 0) {
        (true, false, _) => 1,
        (true, true, true) => 2,
        (false, true, true) => 3,
        (false, false, _) => 4,
        (true, true, false) => 5,
        (false, true, false) => 6,
    }
}

/// A policy that selects the endpoint, as referenced by entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (empty for cluster-wide policies).
    pub namespace: String,
    /// Kind.
    pub kind: PolicyKind,
    /// Cilium policy labels (see [`crate::Policy::labels`]).
    pub labels: Vec<String>,
    /// Revision of the policy object.
    pub revision: u64,
}

/// The endpoint's policy in one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectionPolicy {
    /// Some policy selects the endpoint in this direction with default deny. When false the
    /// agent should let everything not denied through (e.g. an identity-0 any allow).
    pub enforced: bool,
    /// Every policy making it default-deny is in audit mode (or global audit is on).
    pub default_audit: bool,
    /// Indices into `refs` of the policies that make it default-deny in this direction.
    pub selected_by: Vec<usize>,
    /// Final LPM map entries, conflicts resolved, sorted.
    pub entries: Vec<Entry>,
}

/// The resolved policy of one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    /// Ingress policy.
    pub ingress: DirectionPolicy,
    /// Egress policy.
    pub egress: DirectionPolicy,
    /// Policies that select the endpoint (in policy-set order).
    pub refs: Vec<PolicyRef>,
    /// Resolve-time warnings (e.g. unresolved named ports), each naming the policy.
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_types() {
        assert_eq!(match_type(300, 0, 0), 1);
        assert_eq!(match_type(300, 6, 16), 2);
        assert_eq!(match_type(0, 6, 16), 3);
        assert_eq!(match_type(0, 0, 0), 4);
        assert_eq!(match_type(300, 6, 0), 5);
        assert_eq!(match_type(0, 17, 0), 6);
    }
}
