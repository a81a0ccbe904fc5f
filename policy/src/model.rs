//! Parsed policies: the public policy types and the internal rule tree resolution walks.

use std::collections::BTreeMap;
use std::fmt;

use crate::cidr::Cidr;
use crate::fqdn::FqdnSelector;
use crate::identity::Entity;
use crate::ports::PortSpec;
use crate::selector::Selector;

/// Annotation that puts one policy in audit mode.
pub const AUDIT_ANNOTATION: &str = "lumen.io/audit-mode";

/// The kind of a policy object. Orders NetworkPolicy < CiliumNetworkPolicy < CiliumClusterwideNetworkPolicy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyKind {
    /// `networking.k8s.io/v1` NetworkPolicy.
    NetworkPolicy,
    /// `cilium.io/v2` CiliumNetworkPolicy.
    CiliumNetworkPolicy,
    /// `cilium.io/v2` CiliumClusterwideNetworkPolicy.
    CiliumClusterwideNetworkPolicy,
}

impl PolicyKind {
    /// The kind string, as in an object's `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::NetworkPolicy => "NetworkPolicy",
            PolicyKind::CiliumNetworkPolicy => "CiliumNetworkPolicy",
            PolicyKind::CiliumClusterwideNetworkPolicy => "CiliumClusterwideNetworkPolicy",
        }
    }

    /// Parses a kind string; `None` for anything that is not a policy kind.
    pub fn from_kind(kind: &str) -> Option<Self> {
        Some(match kind {
            "NetworkPolicy" => PolicyKind::NetworkPolicy,
            "CiliumNetworkPolicy" => PolicyKind::CiliumNetworkPolicy,
            "CiliumClusterwideNetworkPolicy" => PolicyKind::CiliumClusterwideNetworkPolicy,
            _ => return None,
        })
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Object metadata the crate needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyMeta {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`; empty for cluster-wide policies.
    pub namespace: String,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// Revision the agent assigned to this version of the object.
    pub revision: u64,
}

/// A parsed policy object.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Kind.
    pub kind: PolicyKind,
    /// Metadata.
    pub meta: PolicyMeta,
    /// Whether the `lumen.io/audit-mode: "true"` annotation is set.
    pub audit: bool,
    /// Unsupported constructs, each naming its field path and what was done instead.
    pub warnings: Vec<String>,
    pub(crate) rules: Vec<Rule>,
}

impl Policy {
    /// Cilium's policy labels: name, namespace (omitted for cluster-wide policies), derived-from.
    pub fn labels(&self) -> Vec<String> {
        let mut out = vec![format!("k8s:io.cilium.k8s.policy.name={}", self.meta.name)];
        if self.kind != PolicyKind::CiliumClusterwideNetworkPolicy {
            out.push(format!(
                "k8s:io.cilium.k8s.policy.namespace={}",
                self.meta.namespace
            ));
        }
        out.push(format!(
            "k8s:io.cilium.k8s.policy.derived-from={}",
            self.kind
        ));
        out
    }

    /// Number of rules kept after parsing (rules ignored with a warning are not counted).
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }
}

/// One rule: a subject and what it says about each direction.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    /// Which endpoints the rule applies to.
    pub subject: Selector,
    /// Namespace the subject must be in (namespaced policies).
    pub namespace: Option<String>,
    /// Ingress part.
    pub ingress: Section,
    /// Egress part.
    pub egress: Section,
}

/// What a rule says about one direction.
#[derive(Debug, Clone, Default)]
pub(crate) struct Section {
    /// Whether the rule selects its subject in this direction at all.
    pub selects: bool,
    /// Whether selecting makes the subject default-deny in this direction.
    pub default_deny: bool,
    /// Allow items (items made void by unsupported fields are already dropped).
    pub allow: Vec<Item>,
    /// Deny items.
    pub deny: Vec<Item>,
}

/// One ingress/egress item: peers OR-ed, restricted to ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    /// `None` = any peer (identity 0).
    pub peers: Option<Vec<Peer>>,
    /// `None` = any protocol and port.
    pub ports: Option<Vec<PortSpec>>,
    /// `toPorts.rules.dns` of an egress allow item: names the subject may resolve through
    /// these ports; `None` when the item has no DNS rules.
    pub dns: Option<Vec<FqdnSelector>>,
}

/// One L3 peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Peer {
    /// Endpoints whose identity labels match (implicit namespace already added).
    Selector(Selector),
    /// A prefix minus exceptions.
    Cidr {
        /// The prefix.
        cidr: Cidr,
        /// Carved-out prefixes.
        except: Vec<Cidr>,
    },
    /// A Cilium entity.
    Entity(Entity),
    /// `toFQDNs`: the addresses names it selects resolved to.
    Fqdn(FqdnSelector),
}

impl Rule {
    /// Every prefix mentioned anywhere in the rule (cidrs and excepts).
    pub(crate) fn cidrs(&self) -> impl Iterator<Item = Cidr> + '_ {
        [&self.ingress, &self.egress]
            .into_iter()
            .flat_map(|s| s.allow.iter().chain(s.deny.iter()))
            .flat_map(|i| i.peers.iter().flatten())
            .flat_map(|p| match p {
                Peer::Cidr { cidr, except } => std::iter::once(*cidr)
                    .chain(except.iter().copied())
                    .collect(),
                _ => Vec::new(),
            })
    }
}
