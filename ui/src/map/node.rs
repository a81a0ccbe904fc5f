//! Which map node a flow endpoint belongs to: pods are grouped into workloads, other peers
//! into reserved entities (`host`, `remote-node`, `world`...).

use std::collections::BTreeSet;

use lumen_api::flow::Endpoint;

/// Local CIDR identities start here (Cilium's `IdentityScopeLocal`); they stand for `world`.
const CIDR_IDENTITY_BASE: u32 = 1 << 24;

/// Distinct addresses remembered per non-pod node (for the display name and tooltip).
pub(crate) const MAX_ADDRESSES: usize = 16;

/// What endpoints are grouped by: one map node per distinct key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeKey {
    /// Pods owned by one workload: the pod's first `workloads` entry.
    Workload {
        /// Namespace of the pods.
        namespace: String,
        /// Owner kind, e.g. `Deployment`.
        kind: String,
        /// Owner name.
        name: String,
    },
    /// Pods without workload information, grouped by their `app` label.
    App {
        /// Namespace of the pods.
        namespace: String,
        /// Value of the `app` (or `app.kubernetes.io/name`) label.
        app: String,
    },
    /// A pod with neither workload information nor `app` label.
    Pod {
        /// Namespace of the pod.
        namespace: String,
        /// Pod name.
        name: String,
    },
    /// Outside the cluster: identity `world` or a CIDR identity.
    World {
        /// A DNS name or the most specific `cidr:` label seen; empty for the whole world.
        scope: String,
    },
    /// A reserved entity other than world: `host`, `remote-node`, `kube-apiserver`,
    /// `health`, `init`, `ingress`, `unmanaged`.
    Entity {
        /// Entity name, as in the `reserved:` label.
        name: String,
    },
    /// Anything else: a security identity with nothing better to group by.
    Identity {
        /// Namespace of the endpoint, often empty.
        namespace: String,
        /// Numeric security identity (0 when unknown).
        id: u32,
    },
}

/// One box of the service map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// What the node groups.
    pub key: NodeKey,
    /// Display name: workload, app, pod or entity name, or the address of a lone world peer.
    pub name: String,
    /// Namespace, empty for nodes outside the cluster or not namespaced.
    pub namespace: String,
    /// Small kind label: the workload kind, `app`, `Pod`, `world`, `reserved`, `identity`.
    pub kind: String,
    /// Addresses seen for non-pod nodes (at most 16, the lowest ones).
    pub addresses: BTreeSet<String>,
}

impl Node {
    /// A node for `key`, named from the key and the addresses seen for it.
    pub(crate) fn new(key: NodeKey, addresses: BTreeSet<String>) -> Node {
        let (name, namespace, kind) = match &key {
            NodeKey::Workload {
                namespace,
                kind,
                name,
            } => (name.clone(), namespace.clone(), kind.clone()),
            NodeKey::App { namespace, app } => (app.clone(), namespace.clone(), "app".to_owned()),
            NodeKey::Pod { namespace, name } => (name.clone(), namespace.clone(), "Pod".to_owned()),
            NodeKey::World { scope } => {
                let name = match (scope.is_empty(), addresses.len()) {
                    (false, _) => scope.clone(),
                    (true, 1) => addresses.iter().next().cloned().unwrap_or_default(),
                    _ => "world".to_owned(),
                };
                (name, String::new(), "world".to_owned())
            }
            NodeKey::Entity { name } => (name.clone(), String::new(), "reserved".to_owned()),
            NodeKey::Identity { namespace, id } => {
                let name = if *id == 0 {
                    "unknown".to_owned()
                } else {
                    format!("identity {id}")
                };
                (name, namespace.clone(), "identity".to_owned())
            }
        };
        Node {
            key,
            name,
            namespace,
            kind,
            addresses,
        }
    }

    /// Whether the node stands for pods (as opposed to hosts, world or bare identities).
    pub fn is_pod(&self) -> bool {
        self.key.is_pod()
    }
}

impl NodeKey {
    /// Whether the key groups pods (as opposed to hosts, world or bare identities).
    pub fn is_pod(&self) -> bool {
        matches!(
            self,
            NodeKey::Workload { .. } | NodeKey::App { .. } | NodeKey::Pod { .. }
        )
    }
}

/// The node key of one side of a flow; `names` are the DNS names Hubble knows for its address.
pub(crate) fn classify(ep: &Endpoint, names: &[String]) -> NodeKey {
    if let Some(w) = ep.workloads.first().filter(|w| !w.name.is_empty()) {
        return NodeKey::Workload {
            namespace: ep.namespace.clone(),
            kind: w.kind.clone(),
            name: w.name.clone(),
        };
    }
    if !ep.pod_name.is_empty() {
        return match app_label(&ep.labels) {
            Some(app) => NodeKey::App {
                namespace: ep.namespace.clone(),
                app: app.to_owned(),
            },
            None => NodeKey::Pod {
                namespace: ep.namespace.clone(),
                name: ep.pod_name.clone(),
            },
        };
    }
    if let Some(entity) = reserved_entity(&ep.labels, ep.identity) {
        if entity == "world" {
            return NodeKey::World {
                scope: world_scope(&ep.labels, names),
            };
        }
        return NodeKey::Entity {
            name: entity.to_owned(),
        };
    }
    if let Some(app) = app_label(&ep.labels) {
        return NodeKey::App {
            namespace: ep.namespace.clone(),
            app: app.to_owned(),
        };
    }
    NodeKey::Identity {
        namespace: ep.namespace.clone(),
        id: ep.identity,
    }
}

/// Splits a `source:key=value` label into key (without its source) and value.
fn label_kv(label: &str) -> (&str, &str) {
    let (key, value) = label.split_once('=').unwrap_or((label, ""));
    let key = key.split_once(':').map_or(key, |(_, k)| k);
    (key, value)
}

/// The `app` label's value, else `app.kubernetes.io/name`'s.
fn app_label(labels: &[String]) -> Option<&str> {
    let find = |wanted: &str| {
        labels
            .iter()
            .map(|l| label_kv(l))
            .find(|(k, v)| *k == wanted && !v.is_empty())
            .map(|(_, v)| v)
    };
    find("app").or_else(|| find("app.kubernetes.io/name"))
}

/// The reserved entity named by `reserved:` labels, else by the numeric identity.
fn reserved_entity(labels: &[String], identity: u32) -> Option<&'static str> {
    // Most specific first: the API server endpoint also carries `reserved:host` or
    // `reserved:remote-node`.
    const BY_LABEL: [(&str, &str); 10] = [
        ("reserved:kube-apiserver", "kube-apiserver"),
        ("reserved:host", "host"),
        ("reserved:remote-node", "remote-node"),
        ("reserved:health", "health"),
        ("reserved:init", "init"),
        ("reserved:ingress", "ingress"),
        ("reserved:unmanaged", "unmanaged"),
        ("reserved:world", "world"),
        ("reserved:world-ipv4", "world"),
        ("reserved:world-ipv6", "world"),
    ];
    for (label, entity) in BY_LABEL {
        if labels.iter().any(|l| l == label) {
            return Some(entity);
        }
    }
    match identity {
        1 => Some("host"),
        2 | 9 | 10 => Some("world"),
        3 => Some("unmanaged"),
        4 => Some("health"),
        5 => Some("init"),
        6 => Some("remote-node"),
        7 => Some("kube-apiserver"),
        8 => Some("ingress"),
        id if id >= CIDR_IDENTITY_BASE => Some("world"),
        _ => None,
    }
}

/// What a world peer is grouped by: its lowest DNS name, else its most specific CIDR label
/// (other than the default route), else nothing.
fn world_scope(labels: &[String], names: &[String]) -> String {
    if let Some(name) = names.iter().filter(|n| !n.is_empty()).min() {
        return name.clone();
    }
    let mut best: Option<(u32, &str)> = None;
    for label in labels {
        let Some(cidr) = label.strip_prefix("cidr:") else {
            continue;
        };
        let Some(len) = cidr
            .rsplit_once('/')
            .and_then(|(_, l)| l.parse::<u32>().ok())
        else {
            continue;
        };
        if len == 0 {
            continue;
        }
        // Longest prefix wins; on a tie the lowest text, so the result does not depend on
        // label order.
        let better = match best {
            None => true,
            Some((bl, bc)) => len > bl || (len == bl && cidr < bc),
        };
        if better {
            best = Some((len, cidr));
        }
    }
    best.map(|(_, c)| c.to_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lumen_api::flow::Workload;

    fn ep(ns: &str, pod: &str, labels: &[&str], identity: u32) -> Endpoint {
        Endpoint {
            namespace: ns.into(),
            pod_name: pod.into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            identity,
            ..Default::default()
        }
    }

    #[test]
    fn workload_wins_over_app_label_and_pod() {
        let mut e = ep("shop", "web-7d9f-abcde", &["k8s:app=frontend"], 1234);
        e.workloads = vec![Workload {
            name: "web".into(),
            kind: "Deployment".into(),
        }];
        assert_eq!(
            classify(&e, &[]),
            NodeKey::Workload {
                namespace: "shop".into(),
                kind: "Deployment".into(),
                name: "web".into()
            }
        );
    }

    #[test]
    fn app_label_then_pod_name() {
        let e = ep(
            "shop",
            "web-1",
            &["k8s:io.kubernetes.pod.namespace=shop", "k8s:app=frontend"],
            1234,
        );
        assert_eq!(
            classify(&e, &[]),
            NodeKey::App {
                namespace: "shop".into(),
                app: "frontend".into()
            }
        );
        let e = ep("shop", "web-1", &["app=frontend"], 1234);
        assert_eq!(
            classify(&e, &[]),
            NodeKey::App {
                namespace: "shop".into(),
                app: "frontend".into()
            }
        );
        let e = ep("shop", "web-1", &["k8s:tier=db"], 1234);
        assert_eq!(
            classify(&e, &[]),
            NodeKey::Pod {
                namespace: "shop".into(),
                name: "web-1".into()
            }
        );
    }

    #[test]
    fn reserved_entities_by_label_and_identity() {
        assert_eq!(
            classify(&ep("", "", &["reserved:host"], 0), &[]),
            NodeKey::Entity {
                name: "host".into()
            }
        );
        assert_eq!(
            classify(&ep("", "", &[], 6), &[]),
            NodeKey::Entity {
                name: "remote-node".into()
            }
        );
        assert_eq!(
            classify(
                &ep(
                    "",
                    "",
                    &["reserved:remote-node", "reserved:kube-apiserver"],
                    7
                ),
                &[]
            ),
            NodeKey::Entity {
                name: "kube-apiserver".into()
            }
        );
        assert_eq!(
            classify(&ep("", "", &["reserved:world"], 2), &[]),
            NodeKey::World {
                scope: String::new()
            }
        );
        assert_eq!(
            classify(&ep("", "", &[], 0), &[]),
            NodeKey::Identity {
                namespace: String::new(),
                id: 0
            }
        );
    }

    #[test]
    fn cidr_identity_is_world_with_most_specific_cidr() {
        let e = ep(
            "",
            "",
            &[
                "cidr:0.0.0.0/0",
                "cidr:10.0.0.0/8",
                "cidr:10.1.0.0/16",
                "reserved:world",
            ],
            16777217,
        );
        assert_eq!(
            classify(&e, &[]),
            NodeKey::World {
                scope: "10.1.0.0/16".into()
            }
        );
        let e = ep("", "", &["cidr:10.0.0.0/x"], 16777300);
        assert_eq!(
            classify(&e, &[]),
            NodeKey::World {
                scope: String::new()
            }
        );
        let names = ["b.example.com".to_string(), "a.example.com".to_string()];
        assert_eq!(
            classify(&e, &names),
            NodeKey::World {
                scope: "a.example.com".into()
            }
        );
    }

    #[test]
    fn world_node_named_after_its_only_address() {
        let one: BTreeSet<String> = ["1.2.3.4".to_string()].into();
        assert_eq!(
            Node::new(
                NodeKey::World {
                    scope: String::new()
                },
                one
            )
            .name,
            "1.2.3.4"
        );
        let two: BTreeSet<String> = ["1.2.3.4".to_string(), "5.6.7.8".to_string()].into();
        assert_eq!(
            Node::new(
                NodeKey::World {
                    scope: String::new()
                },
                two
            )
            .name,
            "world"
        );
    }
}
