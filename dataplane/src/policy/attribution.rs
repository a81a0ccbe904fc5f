//! From a kernel record's rule reference to the policies a flow names
//! (`ingress_allowed_by`, `egress_denied_by`, ...). Rule references are small numbers the
//! agent hands out per (policy, revision) and never reuses while it runs, so a record
//! written just before a policy change is still attributed to the revision that decided it.

use lumen_api::flow;
use lumen_policy::PolicyRef;
use std::{collections::HashMap, sync::Arc};

/// Hands out rule references.
#[derive(Default)]
pub struct RuleRefs {
    ids: HashMap<(String, String, String, u64), u32>,
    names: HashMap<u32, Arc<flow::Policy>>,
}

/// The API form of a policy reference.
pub fn api_policy(r: &PolicyRef) -> flow::Policy {
    flow::Policy {
        name: r.name.clone(),
        namespace: r.namespace.clone(),
        labels: r.labels.clone(),
        revision: r.revision,
        kind: r.kind.to_string(),
    }
}

impl RuleRefs {
    /// The reference of a policy revision (allocated on first use).
    pub fn id(&mut self, r: &PolicyRef) -> u32 {
        let key = (
            r.kind.to_string(),
            r.namespace.clone(),
            r.name.clone(),
            r.revision,
        );
        if let Some(id) = self.ids.get(&key) {
            return *id;
        }
        let id = self.ids.len() as u32;
        self.ids.insert(key, id);
        self.names.insert(id, Arc::new(api_policy(r)));
        id
    }

    /// Every reference handed out so far.
    pub fn snapshot(&self) -> HashMap<u32, Arc<flow::Policy>> {
        self.names.clone()
    }
}

/// What the flow pipeline needs to name policies.
#[derive(Debug, Default)]
pub struct Attribution {
    /// Rule reference → policy.
    pub rules: HashMap<u32, Arc<flow::Policy>>,
    /// (endpoint id, direction) → the policies that make it default-deny there.
    pub default_deny: HashMap<(u32, u8), Arc<Vec<flow::Policy>>>,
    /// CIDR identity → its labels (`cidr:10.0.0.0/8`, `reserved:world`).
    pub cidr_labels: HashMap<u32, Arc<Vec<String>>>,
}

impl Attribution {
    /// The policies behind a decision: the matched rule's, or for a default decision
    /// (no rule matched) those that made the endpoint default-deny.
    pub fn policies(&self, info: &lumen_abi::PolicyInfo) -> Vec<flow::Policy> {
        if info.rule_ref != lumen_abi::RULE_REF_NONE {
            return self
                .rules
                .get(&info.rule_ref)
                .map(|p| vec![(**p).clone()])
                .unwrap_or_default();
        }
        self.default_deny
            .get(&(info.endpoint_id, info.direction))
            .map(|v| (**v).clone())
            .unwrap_or_default()
    }
}
