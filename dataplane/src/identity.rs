//! Security labels and identities, as Cilium derives them: a pod's identity is a number for
//! its set of security-relevant labels (pod labels, namespace, namespace labels, service
//! account, cluster), the same on every node because every node derives it from the same
//! cluster state. Reserved identities keep Cilium's numbers.

use crate::state::{Namespace, Pod};
use std::collections::{BTreeSet, HashMap};

/// Reserved identities (Cilium's numbering, also in the API contract).
pub mod reserved {
    /// Unknown.
    pub const UNKNOWN: u32 = 0;
    /// The local host.
    pub const HOST: u32 = 1;
    /// Outside the cluster.
    pub const WORLD: u32 = 2;
    /// A pod not managed by the agent.
    pub const UNMANAGED: u32 = 3;
    /// Health endpoints.
    pub const HEALTH: u32 = 4;
    /// Endpoints whose identity is not resolved yet.
    pub const INIT: u32 = 5;
    /// Another node of the cluster.
    pub const REMOTE_NODE: u32 = 6;
}

/// First identity number for label sets.
pub const MIN_CLUSTER_IDENTITY: u32 = 256;
/// Last identity number for label sets (16-bit cluster-local range).
pub const MAX_CLUSTER_IDENTITY: u32 = 65535;

/// Label keys that change per rollout and would split one workload into many identities.
const IGNORED_LABELS: &[&str] = &[
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "batch.kubernetes.io/controller-uid",
    "controller-uid",
];

/// The security labels of a pod, sorted, with Cilium's source prefixes.
pub fn pod_labels(pod: &Pod, ns: Option<&Namespace>, cluster: &str) -> Vec<String> {
    let mut out = BTreeSet::new();
    for (k, v) in &pod.labels {
        if !IGNORED_LABELS.contains(&k.as_str()) {
            out.insert(format!("k8s:{k}={v}"));
        }
    }
    out.insert(format!("k8s:io.kubernetes.pod.namespace={}", pod.namespace));
    out.insert(format!(
        "k8s:io.cilium.k8s.policy.serviceaccount={}",
        pod.service_account
    ));
    out.insert(format!("k8s:io.cilium.k8s.policy.cluster={cluster}"));
    if let Some(ns) = ns {
        for (k, v) in &ns.labels {
            out.insert(format!("k8s:io.cilium.k8s.namespace.labels.{k}={v}"));
        }
    }
    // Kubernetes labels every namespace with its name; policies select namespaces by it.
    out.insert(format!(
        "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name={}",
        pod.namespace
    ));
    out.into_iter().collect()
}

/// Labels of a reserved identity.
pub fn reserved_labels(id: u32) -> Vec<String> {
    let name = match id {
        reserved::HOST => "host",
        7 => "kube-apiserver",
        8 => "ingress",
        9 => "world-ipv4",
        10 => "world-ipv6",
        reserved::WORLD => "world",
        reserved::UNMANAGED => "unmanaged",
        reserved::HEALTH => "health",
        reserved::INIT => "init",
        reserved::REMOTE_NODE => "remote-node",
        _ => return vec![],
    };
    vec![format!("reserved:{name}")]
}

fn fnv1a(labels: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for l in labels {
        for b in l.bytes().chain(std::iter::once(0)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Assigns identities to label sets. The result depends only on the set of label sets, so
/// every node that sees the same cluster state computes the same numbers; a label set's
/// number is stable as long as no new set collides with it and sorts before it.
pub fn assign(label_sets: &BTreeSet<Vec<String>>) -> HashMap<Vec<String>, u32> {
    let span = (MAX_CLUSTER_IDENTITY - MIN_CLUSTER_IDENTITY + 1) as u64;
    let mut taken = std::collections::HashSet::new();
    let mut out = HashMap::with_capacity(label_sets.len());
    for set in label_sets {
        let mut id = MIN_CLUSTER_IDENTITY + (fnv1a(set) % span) as u32;
        while !taken.insert(id) {
            id = if id == MAX_CLUSTER_IDENTITY {
                MIN_CLUSTER_IDENTITY
            } else {
                id + 1
            };
        }
        out.insert(set.clone(), id);
    }
    out
}

/// The workload a pod belongs to, from its controller owner: `(name, kind)`.
pub fn workload(pod: &Pod) -> Option<(String, String)> {
    let owner = pod.owner.as_ref()?;
    if owner.kind == "ReplicaSet" {
        // Deployments name their ReplicaSets `<deployment>-<hash>`.
        if let Some((dep, hash)) = owner.name.rsplit_once('-') {
            if !dep.is_empty()
                && !hash.is_empty()
                && hash.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return Some((dep.to_string(), "Deployment".into()));
            }
        }
    }
    Some((owner.name.clone(), owner.kind.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::OwnerRef;

    fn pod(ns: &str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            namespace: ns.into(),
            name: "p".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            node_name: "n1".into(),
            service_account: "default".into(),
            ips: vec![],
            host_network: false,
            owner: None,
            named_ports: Default::default(),
        }
    }

    #[test]
    fn labels_carry_cilium_prefixes_and_skip_rollout_hashes() {
        let l = pod_labels(
            &pod("demo", &[("app", "web"), ("pod-template-hash", "abc")]),
            None,
            "lab",
        );
        assert!(l.contains(&"k8s:app=web".to_string()));
        assert!(l.contains(&"k8s:io.kubernetes.pod.namespace=demo".to_string()));
        assert!(l.contains(&"k8s:io.cilium.k8s.policy.cluster=lab".to_string()));
        assert!(!l.iter().any(|s| s.contains("pod-template-hash")));
        let mut sorted = l.clone();
        sorted.sort();
        assert_eq!(l, sorted);
    }

    #[test]
    fn same_labels_same_identity_regardless_of_order_seen() {
        let a = pod_labels(&pod("demo", &[("app", "web")]), None, "lab");
        let b = pod_labels(&pod("demo", &[("app", "db")]), None, "lab");
        let s1: BTreeSet<_> = [a.clone(), b.clone()].into_iter().collect();
        let s2: BTreeSet<_> = [b.clone(), a.clone()].into_iter().collect();
        let (i1, i2) = (assign(&s1), assign(&s2));
        assert_eq!(i1[&a], i2[&a]);
        assert_ne!(i1[&a], i1[&b]);
        assert!((MIN_CLUSTER_IDENTITY..=MAX_CLUSTER_IDENTITY).contains(&i1[&a]));
    }

    #[test]
    fn collisions_are_resolved_deterministically() {
        let sets: BTreeSet<Vec<String>> =
            (0..5000).map(|i| vec![format!("k8s:app=a{i}")]).collect();
        let ids = assign(&sets);
        let unique: BTreeSet<_> = ids.values().collect();
        assert_eq!(unique.len(), 5000);
        assert_eq!(ids, assign(&sets));
    }

    #[test]
    fn deployments_are_found_through_their_replicaset() {
        let mut p = pod("shop", &[]);
        p.owner = Some(OwnerRef {
            kind: "ReplicaSet".into(),
            name: "frontend-7d9f8b".into(),
        });
        assert_eq!(workload(&p), Some(("frontend".into(), "Deployment".into())));
        p.owner = Some(OwnerRef {
            kind: "StatefulSet".into(),
            name: "postgres".into(),
        });
        assert_eq!(
            workload(&p),
            Some(("postgres".into(), "StatefulSet".into()))
        );
    }
}
