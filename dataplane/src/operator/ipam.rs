//! Cluster-pool IPAM in the API server: every Node gets a CiliumNode (`cilium.io/v2`) of
//! the same name whose `spec.ipam.podCIDRs` holds one block of
//! `ipam.operator.clusterPoolIPv4PodCIDRList`, chosen by [`crate::podcidr::choose`] (the
//! algorithm the manifest-directory agents use). The leader's in-memory table is seeded
//! from the CiliumNodes when it takes over and is authoritative from then on, so the
//! watch cache lagging behind our own writes never hands a block out twice; existing
//! allocations are kept; a deleted Node's CiliumNode is deleted and its block reused.

use crate::podcidr::{choose, PodCidrError};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::{
    api::{
        Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
        PostParams,
    },
    runtime::events::{Event, EventType, Recorder},
    Client, Resource,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

/// The `CiliumNode` resource (`cilium.io/v2`, cluster-scoped).
pub fn cilium_node_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cilium.io", "v2", "CiliumNode"),
        "ciliumnodes",
    )
}

/// A CiliumNode's `spec.ipam.podCIDRs` (entries that are not IPv4 CIDRs are skipped).
pub fn pod_cidrs(cn: &DynamicObject) -> Vec<Ipv4Net> {
    cn.data
        .pointer("/spec/ipam/podCIDRs")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|c| c.as_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

/// One write the allocator wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Give node `node` the block `cidr` (create its CiliumNode, or patch the existing one).
    Assign {
        /// The Node's name.
        node: String,
        /// The block.
        cidr: Ipv4Net,
        /// Whether a CiliumNode of that name is known to exist.
        exists: bool,
    },
    /// The Node is gone: delete its CiliumNode, releasing its block.
    Release {
        /// The Node's name.
        node: String,
    },
    /// No block is left for `node` (reported once until that changes).
    Exhausted {
        /// The Node's name.
        node: String,
        /// The error naming the pools.
        message: String,
    },
}

/// The leader's allocation table.
#[derive(Debug)]
pub struct PodCidrAllocator {
    pools: Vec<Ipv4Net>,
    mask: u8,
    held: BTreeMap<String, Vec<Ipv4Net>>,
    reported: BTreeSet<String>,
}

impl PodCidrAllocator {
    /// A table seeded from the blocks the CiliumNodes hold (`cilium_nodes`: name → blocks).
    pub fn new(
        pools: Vec<Ipv4Net>,
        mask: u8,
        cilium_nodes: BTreeMap<String, Vec<Ipv4Net>>,
    ) -> Self {
        PodCidrAllocator {
            pools,
            mask,
            held: cilium_nodes,
            reported: BTreeSet::new(),
        }
    }

    /// The writes that bring the cluster to one block per node in `nodes`, given the
    /// CiliumNodes the cache shows (`seen`: name → blocks). Updates the table as if they
    /// succeed (a failed write is retried because the cache still disagrees).
    pub fn plan(
        &mut self,
        nodes: &BTreeSet<String>,
        seen: &BTreeMap<String, Vec<Ipv4Net>>,
    ) -> Vec<Action> {
        let mut out = vec![];
        let gone: BTreeSet<String> = self
            .held
            .keys()
            .chain(seen.keys())
            .filter(|n| !nodes.contains(*n))
            .cloned()
            .collect();
        for node in gone {
            self.held.remove(&node);
            self.reported.remove(&node);
            out.push(Action::Release { node });
        }
        for node in nodes {
            match choose(&self.pools, self.mask, &self.held, node) {
                Ok(cidr) => {
                    self.reported.remove(node);
                    self.held.insert(node.clone(), vec![cidr]);
                    if seen.get(node).map(Vec::as_slice) != Some(&[cidr][..]) {
                        out.push(Action::Assign {
                            node: node.clone(),
                            cidr,
                            exists: seen.contains_key(node),
                        });
                    }
                }
                Err(e @ PodCidrError::Exhausted { .. }) => {
                    self.held.remove(node);
                    if self.reported.insert(node.clone()) {
                        out.push(Action::Exhausted {
                            node: node.clone(),
                            message: e.to_string(),
                        });
                    }
                }
                Err(e) => {
                    // A configuration error: the same for every node, report it once.
                    if self.reported.insert(String::new()) {
                        out.push(Action::Exhausted {
                            node: node.clone(),
                            message: e.to_string(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Records that node `node` holds `cidrs` after all (found when a create collided).
    pub fn adopt(&mut self, node: &str, cidrs: Vec<Ipv4Net>) {
        self.held.insert(node.to_string(), cidrs);
    }
}

/// Carries out `actions`; returns how many failed (they are retried).
pub async fn apply(
    client: &Client,
    recorder: &Recorder,
    alloc: &mut PodCidrAllocator,
    nodes: &BTreeMap<String, Node>,
    actions: Vec<Action>,
) -> usize {
    let ar = cilium_node_resource();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let mut failed = 0;
    for action in actions {
        let result = match &action {
            Action::Assign { node, cidr, exists } => {
                assign(&api, &ar, alloc, nodes.get(node), node, *cidr, *exists).await
            }
            Action::Release { node } => match api.delete(node, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(
                        node,
                        "pod CIDR released: the Node is gone, CiliumNode deleted"
                    );
                    Ok(())
                }
                Err(kube::Error::Api(st)) if st.is_not_found() => Ok(()),
                Err(e) => Err(e),
            },
            Action::Exhausted { node, message } => {
                tracing::error!(node, error = %message, "cluster-pool IPAM: no pod CIDR for the node");
                match nodes.get(node) {
                    Some(n) => {
                        recorder
                            .publish(
                                &Event {
                                    type_: EventType::Warning,
                                    reason: "PodCIDRAllocationFailed".into(),
                                    note: Some(message.clone()),
                                    action: "AllocatePodCIDR".into(),
                                    secondary: None,
                                },
                                &n.object_ref(&()),
                            )
                            .await
                    }
                    None => Ok(()),
                }
            }
        };
        if let Err(e) = result {
            failed += 1;
            tracing::warn!(?action, error = %e, "cluster-pool IPAM: write failed, will retry");
        }
    }
    failed
}

async fn assign(
    api: &Api<DynamicObject>,
    ar: &ApiResource,
    alloc: &mut PodCidrAllocator,
    node_obj: Option<&Node>,
    node: &str,
    cidr: Ipv4Net,
    exists: bool,
) -> Result<(), kube::Error> {
    let spec = json!({"spec": {"ipam": {"podCIDRs": [cidr.to_string()]}}});
    if exists {
        match api
            .patch(node, &PatchParams::default(), &Patch::Merge(&spec))
            .await
        {
            Ok(_) => {
                tracing::info!(node, %cidr, "pod CIDR allocated from the cluster pool");
                return Ok(());
            }
            // Deleted meanwhile (by its agent, say): create it again below.
            Err(kube::Error::Api(st)) if st.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    let mut obj = DynamicObject::new(node, ar).data(spec.clone());
    // Owned by the Node, so deleting the Node garbage-collects it even without us.
    if let Some(uid) = node_obj.and_then(|n| n.metadata.uid.clone()) {
        obj.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.into(),
                uid,
                ..Default::default()
            },
        ]);
    }
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => {
            tracing::info!(node, %cidr, "pod CIDR allocated from the cluster pool (CiliumNode created)");
            Ok(())
        }
        Err(kube::Error::Api(st)) if st.is_already_exists() || st.is_conflict() => {
            // Our cache had not seen it yet. Keep a block it already holds (the next round
            // checks it); fill in an empty one.
            let current = api.get(node).await?;
            let held = pod_cidrs(&current);
            if held.is_empty() {
                api.patch(node, &PatchParams::default(), &Patch::Merge(&spec))
                    .await?;
                tracing::info!(node, %cidr, "pod CIDR allocated from the cluster pool");
            } else {
                alloc.adopt(node, held);
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn names(n: &[&str]) -> BTreeSet<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn assigns_keeps_releases_and_reports_exhaustion_once() {
        let seen: BTreeMap<String, Vec<Ipv4Net>> =
            [("b".to_string(), vec![net("10.100.0.0/24")])].into();
        let mut a = PodCidrAllocator::new(vec![net("10.100.0.0/23")], 24, seen.clone());
        let acts = a.plan(&names(&["a", "b", "c"]), &seen);
        assert_eq!(
            acts,
            [
                Action::Assign { node: "a".into(), cidr: net("10.100.1.0/24"), exists: false },
                Action::Exhausted {
                    node: "c".into(),
                    message: "no free /24 left in 10.100.0.0/23: add a range to ipam.operator.clusterPoolIPv4PodCIDRList".into()
                },
            ]
        );
        // The cache has not caught up with our write yet: nothing new is handed out twice.
        let acts = a.plan(&names(&["a", "b", "c"]), &seen);
        assert_eq!(
            acts,
            [Action::Assign {
                node: "a".into(),
                cidr: net("10.100.1.0/24"),
                exists: false
            }]
        );
        let seen: BTreeMap<String, Vec<Ipv4Net>> = [
            ("a".to_string(), vec![net("10.100.1.0/24")]),
            ("b".to_string(), vec![net("10.100.0.0/24")]),
        ]
        .into();
        assert_eq!(a.plan(&names(&["a", "b", "c"]), &seen), []);
        // `b` leaves: its CiliumNode goes, and `c` gets its block.
        assert_eq!(
            a.plan(&names(&["a", "c"]), &seen),
            [
                Action::Release { node: "b".into() },
                Action::Assign {
                    node: "c".into(),
                    cidr: net("10.100.0.0/24"),
                    exists: false
                },
            ]
        );
    }
}
