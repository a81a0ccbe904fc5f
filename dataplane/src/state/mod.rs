//! The agent's desired state: the Kubernetes objects it acts on (Namespaces, Pods, Nodes,
//! network policies), whatever delivers them. Today a watched directory of manifests
//! ([`manifests`]); later a Kubernetes watcher feeds the same [`ClusterState`].

pub mod kube;
pub mod lock;
pub mod manifests;
pub mod node_record;
mod objects;

pub use objects::{
    Namespace, Node, NodeAddress, Object, ObjectKey, OwnerRef, Pod, WG_PUB_KEY_ANNOTATION,
};

use std::collections::BTreeMap;

/// A consistent snapshot of every object the agent knows.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ClusterState {
    /// Namespaces by name.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Pods by (namespace, name).
    pub pods: BTreeMap<(String, String), Pod>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Every object as delivered, by (kind, namespace, name), for kinds later features read.
    pub objects: BTreeMap<ObjectKey, Object>,
    /// Sources that currently fail (e.g. a manifest that does not parse: its previous
    /// objects are kept), one message each naming the file.
    pub source_errors: Vec<String>,
}

impl ClusterState {
    /// Builds the typed views from raw objects. Objects of a known kind whose fields do not
    /// fit are reported in the returned list and left out (the rest still applies).
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> (Self, Vec<String>) {
        let mut st = ClusterState::default();
        let mut problems = vec![];
        for obj in objects {
            let key = obj.key();
            match obj.kind.as_str() {
                "Namespace" => match Namespace::from_object(&obj) {
                    Ok(ns) => {
                        st.namespaces.insert(ns.name.clone(), ns);
                    }
                    Err(e) => problems.push(format!("{key}: {e}")),
                },
                "Pod" => match Pod::from_object(&obj) {
                    Ok(p) => {
                        st.pods.insert((p.namespace.clone(), p.name.clone()), p);
                    }
                    Err(e) => problems.push(format!("{key}: {e}")),
                },
                "Node" => match Node::from_object(&obj) {
                    Ok(n) => {
                        st.nodes.insert(n.name.clone(), n);
                    }
                    Err(e) => problems.push(format!("{key}: {e}")),
                },
                _ => {}
            }
            st.objects.insert(key, obj);
        }
        // Cluster-pool IPAM records a node's pod CIDRs in its CiliumNode, which then
        // takes precedence over the Node's spec (as in Cilium).
        for (key, obj) in &st.objects {
            if key.kind != "CiliumNode" {
                continue;
            }
            let cidrs: Vec<ipnet::IpNet> = obj
                .raw
                .as_ref()
                .and_then(|r| r.get("spec")?.get("ipam")?.get("podCIDRs"))
                .and_then(|v| v.as_sequence())
                .map(|a| a.iter().filter_map(|c| c.as_str()?.parse().ok()).collect())
                .unwrap_or_default();
            let key = obj.metadata.annotations.get(objects::WG_PUB_KEY_ANNOTATION);
            if let Some(node) = st.nodes.get_mut(&obj.metadata.name) {
                if !cidrs.is_empty() {
                    node.pod_cidrs = cidrs;
                }
                if let Some(key) = key {
                    node.wg_pub_key = Some(key.clone());
                }
            }
        }
        (st, problems)
    }

    /// The pod `namespace/name`, if known.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.pods.get(&(namespace.to_string(), name.to_string()))
    }
}
