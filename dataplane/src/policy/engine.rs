//! The policies in force: every NetworkPolicy, CiliumNetworkPolicy and
//! CiliumClusterwideNetworkPolicy of the state source, parsed once per change. A policy
//! whose new version is invalid is rejected with the reason (naming its file and field)
//! and its previous valid version stays in force; a policy that was never valid enforces
//! nothing. Warnings (unsupported fields, which then allow nothing) are kept with it.

use crate::state::{ClusterState, Object, ObjectKey};
use lumen_policy::{Policy, PolicyMeta, PolicySet};
use std::collections::BTreeMap;

/// What happened to one policy object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyStatus {
    /// Kind.
    pub kind: String,
    /// Namespace (empty for cluster-wide policies).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The manifest it came from.
    pub source: String,
    /// Revision in force (increases with every accepted change), 0 when none.
    pub revision: u64,
    /// Why the latest version was rejected, if it was.
    pub error: Option<String>,
    /// Warnings of the version in force.
    pub warnings: Vec<String>,
}

struct Known {
    object: Object,
    revision: u64,
    good: Option<Policy>,
    error: Option<String>,
}

/// Parses policy objects and remembers the last valid version of each.
#[derive(Default)]
pub struct PolicyEngine {
    known: BTreeMap<ObjectKey, Known>,
    next_revision: u64,
}

impl PolicyEngine {
    /// Takes in the state's policy objects; returns whether the policies in force changed.
    pub fn update(&mut self, state: &ClusterState) -> bool {
        let mut changed = false;
        let before = self.known.len();
        self.known
            .retain(|k, _| state.objects.contains_key(k) || !lumen_policy::is_policy_kind(&k.kind));
        changed |= self.known.len() != before;
        for (key, obj) in &state.objects {
            if !lumen_policy::is_policy_kind(&obj.kind) {
                continue;
            }
            if self.known.get(key).is_some_and(|k| &k.object == obj) {
                continue;
            }
            self.next_revision += 1;
            let revision = obj.metadata.generation.unwrap_or(self.next_revision);
            let meta = PolicyMeta {
                name: obj.metadata.name.clone(),
                namespace: obj.metadata.namespace.clone().unwrap_or_default(),
                annotations: obj.metadata.annotations.clone(),
                revision,
            };
            let parsed = lumen_policy::parse(&obj.kind, meta, &obj.spec, &obj.specs);
            let source = obj.source.as_deref().unwrap_or("(state source)");
            let prev = self.known.remove(key);
            let entry = match parsed {
                Ok(p) => {
                    for w in &p.warnings {
                        tracing::warn!(policy = %key, file = source, warning = %w, "policy accepted with a warning");
                    }
                    tracing::info!(policy = %key, file = source, revision, "policy in force");
                    changed = true;
                    Known {
                        object: obj.clone(),
                        revision,
                        good: Some(p),
                        error: None,
                    }
                }
                Err(e) => {
                    let message = format!("{source}: {key}: {e}");
                    let kept = prev.as_ref().and_then(|k| k.good.clone());
                    tracing::error!(
                        error = %message,
                        kept_revision = prev.as_ref().map(|k| k.revision).unwrap_or(0),
                        "policy rejected; the previous version stays in force"
                    );
                    Known {
                        object: obj.clone(),
                        revision: prev.as_ref().map(|k| k.revision).unwrap_or(0),
                        good: kept,
                        error: Some(message),
                    }
                }
            };
            self.known.insert(key.clone(), entry);
        }
        changed
    }

    /// The policies in force.
    pub fn policy_set(&self, global_audit: bool) -> PolicySet {
        PolicySet::new(
            self.known.values().filter_map(|k| k.good.clone()).collect(),
            global_audit,
        )
    }

    /// Every policy object with its status.
    pub fn statuses(&self) -> Vec<PolicyStatus> {
        self.known
            .iter()
            .map(|(key, k)| PolicyStatus {
                kind: key.kind.clone(),
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                source: k.object.source.as_deref().unwrap_or_default().to_string(),
                revision: if k.good.is_some() { k.revision } else { 0 },
                error: k.error.clone(),
                warnings: k
                    .good
                    .as_ref()
                    .map(|p| p.warnings.clone())
                    .unwrap_or_default(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::manifests::parse_objects;
    use std::path::Path;

    fn state(text: &str) -> ClusterState {
        ClusterState::from_objects(parse_objects(Path::new("/m/policy.yaml"), text).unwrap()).0
    }

    const GOOD: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: allow-web, namespace: demo}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {app: client}}]\n";
    const BAD: &str = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: allow-web, namespace: demo}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n  ingress:\n  - fromEndpoints: [{matchExpressions: [{key: app, operator: Inn, values: [client]}]}]\n";

    #[test]
    fn an_invalid_update_is_rejected_and_the_previous_version_stays() {
        let mut e = PolicyEngine::default();
        assert!(e.update(&state(GOOD)));
        let st = e.statuses();
        assert_eq!(st[0].error, None);
        let rev = st[0].revision;
        assert!(rev > 0);
        assert!(!e.update(&state(BAD)), "nothing in force changed");
        let st = e.statuses();
        let err = st[0].error.as_deref().unwrap();
        assert!(err.contains("/m/policy.yaml"), "{err}");
        assert!(err.contains("operator"), "{err}");
        assert_eq!(st[0].revision, rev);
        assert_eq!(e.policy_set(false).policies().len(), 1);
        // Removing the object removes the policy.
        assert!(e.update(&ClusterState::default()));
        assert!(e.policy_set(false).policies().is_empty());
    }

    #[test]
    fn a_policy_that_was_never_valid_enforces_nothing() {
        let mut e = PolicyEngine::default();
        e.update(&state(BAD));
        assert!(e.policy_set(false).policies().is_empty());
        assert_eq!(e.statuses()[0].revision, 0);
    }
}
