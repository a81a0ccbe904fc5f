//! `cilium.io/v2alpha1 CiliumL2AnnouncementPolicy` and which addresses this node is a
//! candidate to announce: a policy selects services (`spec.serviceSelector`, matched
//! against the service's labels plus `io.kubernetes.service.{namespace,name}`), nodes
//! (`spec.nodeSelector`) and uplinks (`spec.interfaces`, regular expressions, unanchored
//! as in Cilium; empty means every uplink), and says which of the service's addresses to
//! announce (`spec.loadBalancerIPs`: `status.loadBalancer.ingress`; `spec.externalIPs`).
//!
//! Every service has one lease, named like Cilium's (`cilium-l2announce-<ns>-<name>`),
//! so all its addresses move together. Only IPv4 is announced (ARP).

use lumen_lb::{
    LabelSelector, ServiceName, LABEL_SERVICE_NAMESPACE, LABEL_SERVICE_NAME_VIRTUAL,
    LB_CLASS_L2_ANNOUNCER,
};
use regex::Regex;
use serde_yaml::Value;
use std::{collections::BTreeMap, net::Ipv4Addr};

use crate::state::ClusterState;

/// The kind this module reads.
pub const KIND: &str = "CiliumL2AnnouncementPolicy";

/// A policy that cannot be used. `Display` is `"<field path>: <what is wrong>"`.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A field has the wrong shape or value.
    #[error("{path}: {reason}")]
    Field {
        /// Path of the field, e.g. `spec.interfaces[1]`.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A selector does not parse (its message carries the path).
    #[error(transparent)]
    Selector(#[from] lumen_lb::ParseError),
    /// An interface pattern is not a regular expression.
    #[error("{path}: invalid regular expression: {source}")]
    Regex {
        /// Path of the pattern.
        path: String,
        /// What the regex parser said.
        source: Box<regex::Error>,
    },
}

/// A parsed `CiliumL2AnnouncementPolicy`.
#[derive(Debug, Clone)]
pub struct L2Policy {
    /// `metadata.name` (the kind is cluster-scoped).
    pub name: String,
    /// `spec.serviceSelector`; absent selects every service.
    pub service_selector: LabelSelector,
    /// `spec.nodeSelector`; absent selects every node.
    pub node_selector: LabelSelector,
    /// `spec.interfaces`; empty selects every uplink.
    pub interfaces: Vec<Regex>,
    /// `spec.externalIPs`: announce `spec.externalIPs` of selected services.
    pub external_ips: bool,
    /// `spec.loadBalancerIPs`: announce `status.loadBalancer.ingress` of selected services.
    pub load_balancer_ips: bool,
}

fn field(path: &str, reason: impl Into<String>) -> PolicyError {
    PolicyError::Field {
        path: path.into(),
        reason: reason.into(),
    }
}

fn opt_bool(spec: &Value, key: &str) -> Result<bool, PolicyError> {
    match spec.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(field(&format!("spec.{key}"), "expected true or false")),
    }
}

fn selector(spec: &Value, key: &str) -> Result<LabelSelector, PolicyError> {
    match spec.get(key) {
        None | Some(Value::Null) => Ok(LabelSelector::default()),
        Some(v) => Ok(LabelSelector::parse(v, &format!("spec.{key}"))?),
    }
}

impl L2Policy {
    /// Parses a whole object (`kind` must be [`KIND`]).
    pub fn parse(object: &Value) -> Result<Self, PolicyError> {
        match object.get("kind").and_then(Value::as_str) {
            Some(KIND) => {}
            other => {
                return Err(field(
                    "kind",
                    format!("expected {KIND}, got {}", other.unwrap_or("nothing")),
                ))
            }
        }
        let name = object
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| field("metadata.name", "required field is missing"))?
            .to_string();
        let null = Value::Null;
        let spec = object.get("spec").unwrap_or(&null);
        if !(spec.is_mapping() || spec.is_null()) {
            return Err(field("spec", "expected a mapping"));
        }
        let interfaces = match spec.get("interfaces") {
            None | Some(Value::Null) => vec![],
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let path = format!("spec.interfaces[{i}]");
                    let text = v
                        .as_str()
                        .ok_or_else(|| field(&path, "expected a string"))?;
                    Regex::new(text).map_err(|source| PolicyError::Regex {
                        path,
                        source: Box::new(source),
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(field("spec.interfaces", "expected a list")),
        };
        Ok(L2Policy {
            name,
            service_selector: selector(spec, "serviceSelector")?,
            node_selector: selector(spec, "nodeSelector")?,
            interfaces,
            external_ips: opt_bool(spec, "externalIPs")?,
            load_balancer_ips: opt_bool(spec, "loadBalancerIPs")?,
        })
    }

    /// The first of `devices` the policy allows, if any.
    pub fn device<'a>(&self, devices: &'a [String]) -> Option<&'a String> {
        devices
            .iter()
            .find(|d| self.interfaces.is_empty() || self.interfaces.iter().any(|r| r.is_match(d)))
    }
}

/// The lease that elects a service's announcer, named as Cilium names it.
pub fn lease_name(service: &ServiceName) -> String {
    format!("cilium-l2announce-{}-{}", service.namespace, service.name)
}

/// One address this node may announce.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Candidate {
    /// The address.
    pub ip: Ipv4Addr,
    /// The uplink that would answer for it.
    pub device: String,
    /// Its service.
    pub service: ServiceName,
}

/// Addresses this node is a candidate for, grouped by lease name.
pub type Candidates = BTreeMap<String, Vec<Candidate>>;

/// Computes, from the policies and services in `state`, which addresses node `node`
/// (whose uplinks are `devices`) is a candidate to announce. Objects that do not parse
/// are returned as messages (naming the object and the field) and left out.
pub fn candidates(
    state: &ClusterState,
    node: &str,
    devices: &[String],
) -> (Candidates, Vec<String>) {
    let mut problems = vec![];
    let mut policies = vec![];
    let mut services = vec![];
    for (key, obj) in &state.objects {
        let Some(raw) = obj.raw.as_deref() else {
            continue;
        };
        if key.kind == KIND {
            match L2Policy::parse(raw) {
                Ok(p) => policies.push(p),
                Err(e) => problems.push(format!("{key}: {e}")),
            }
        } else if key.kind == "Service" {
            // Service errors are reported by the service maps; skip them quietly here.
            if let Ok(s) = lumen_lb::Service::parse(raw) {
                services.push(s);
            }
        }
    }
    let mut out = Candidates::new();
    let Some(node_obj) = state.nodes.get(node) else {
        return (out, problems);
    };
    // Policies apply in name order: the first that selects a service picks its uplink.
    policies.sort_by(|a, b| a.name.cmp(&b.name));
    let mine: Vec<(&L2Policy, &String)> = policies
        .iter()
        .filter(|p| p.node_selector.matches(&node_obj.labels))
        .filter_map(|p| p.device(devices).map(|d| (p, d)))
        .collect();
    for svc in &services {
        // Another controller's load balancer announces its own addresses.
        if svc
            .load_balancer_class
            .as_deref()
            .is_some_and(|c| c != LB_CLASS_L2_ANNOUNCER)
        {
            continue;
        }
        let mut labels = svc.meta.labels.clone();
        let name = ServiceName::new(svc.meta.namespace_or_default(), svc.meta.name.clone());
        labels.insert(LABEL_SERVICE_NAMESPACE.into(), name.namespace.clone());
        labels.insert(LABEL_SERVICE_NAME_VIRTUAL.into(), name.name.clone());
        let lease = lease_name(&name);
        for (policy, device) in &mine {
            if !policy.service_selector.matches(&labels) {
                continue;
            }
            let lb = policy
                .load_balancer_ips
                .then_some(&svc.ingress_ips)
                .into_iter()
                .flatten();
            let ext = policy
                .external_ips
                .then_some(&svc.external_ips)
                .into_iter()
                .flatten();
            for ip in lb.chain(ext) {
                let std::net::IpAddr::V4(ip) = *ip else {
                    continue;
                };
                let list = out.entry(lease.clone()).or_default();
                if !list.iter().any(|c| c.ip == ip) {
                    list.push(Candidate {
                        ip,
                        device: (*device).clone(),
                        service: name.clone(),
                    });
                }
            }
        }
    }
    (out, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::manifests::parse_objects;
    use std::path::Path;

    const OBJECTS: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node1, labels: {l2: "yes"}}
spec: {podCIDR: 10.100.1.0/24}
---
apiVersion: v1
kind: Node
metadata: {name: node2}
spec: {podCIDR: 10.100.2.0/24}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo, labels: {expose: l2}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  externalIPs: [192.168.77.201]
  ports: [{port: 80, targetPort: 8080, protocol: TCP}]
status:
  loadBalancer:
    ingress: [{ip: 192.168.77.200}, {ip: "fd00::1"}]
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: demo}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.11
  ports: [{port: 80, protocol: TCP}]
status:
  loadBalancer:
    ingress: [{ip: 192.168.77.210}]
---
apiVersion: v1
kind: Service
metadata: {name: bgp, namespace: demo, labels: {expose: l2}}
spec:
  type: LoadBalancer
  loadBalancerClass: io.cilium/bgp-control-plane
  clusterIP: 10.96.0.12
  ports: [{port: 80, protocol: TCP}]
status:
  loadBalancer:
    ingress: [{ip: 192.168.77.220}]
---
apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata: {name: lab}
spec:
  serviceSelector: {matchLabels: {expose: l2}}
  nodeSelector: {matchLabels: {l2: "yes"}}
  interfaces: ["^eth[0-9]+"]
  loadBalancerIPs: true
"#;

    fn state(extra: &str) -> ClusterState {
        let text = format!("{OBJECTS}{extra}");
        let (st, problems) =
            ClusterState::from_objects(parse_objects(Path::new("l2.yaml"), &text).unwrap());
        assert!(problems.is_empty(), "{problems:?}");
        st
    }

    fn ips(c: &Candidates) -> Vec<(String, Ipv4Addr, String)> {
        c.iter()
            .flat_map(|(l, v)| v.iter().map(move |c| (l.clone(), c.ip, c.device.clone())))
            .collect()
    }

    #[test]
    fn selected_services_on_selected_nodes_and_interfaces_are_candidates() {
        let st = state("");
        let devs = vec!["lo0".to_string(), "eth0".to_string()];
        let (c, problems) = candidates(&st, "node1", &devs);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            ips(&c),
            vec![(
                "cilium-l2announce-demo-web".into(),
                Ipv4Addr::new(192, 168, 77, 200),
                "eth0".into()
            )],
            "only the selected service's IPv4 ingress address, on the matching uplink; not the BGP-class one"
        );
        assert!(
            candidates(&st, "node2", &devs).0.is_empty(),
            "node2 is not selected"
        );
        assert!(
            candidates(&st, "node1", &["ens3".to_string()]).0.is_empty(),
            "no uplink matches"
        );
        assert!(candidates(&st, "node9", &devs).0.is_empty(), "unknown node");
    }

    #[test]
    fn external_ips_and_virtual_labels() {
        let st = state(
            r#"
---
apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata: {name: by-name}
spec:
  serviceSelector: {matchLabels: {io.kubernetes.service.name: web}}
  externalIPs: true
"#,
        );
        let (c, _) = candidates(&st, "node2", &["eth0".to_string()]);
        assert_eq!(
            ips(&c),
            vec![(
                "cilium-l2announce-demo-web".into(),
                Ipv4Addr::new(192, 168, 77, 201),
                "eth0".into()
            )]
        );
    }

    #[test]
    fn bad_policies_are_reported_with_their_field() {
        let bad = |spec: &str| {
            let st = state(&format!(
                "\n---\napiVersion: cilium.io/v2alpha1\nkind: CiliumL2AnnouncementPolicy\nmetadata: {{name: bad}}\nspec: {spec}\n"
            ));
            let (_, problems) = candidates(&st, "node1", &["eth0".to_string()]);
            assert_eq!(problems.len(), 1, "{problems:?}");
            problems[0].clone()
        };
        let p = bad("{interfaces: [\"eth(\"]}");
        assert!(
            p.starts_with(
                "CiliumL2AnnouncementPolicy bad: spec.interfaces[0]: invalid regular expression"
            ),
            "{p}"
        );
        let p = bad("{loadBalancerIPs: yes please}");
        assert_eq!(
            p,
            "CiliumL2AnnouncementPolicy bad: spec.loadBalancerIPs: expected true or false"
        );
        let p = bad("{serviceSelector: {matchExpressions: [{key: a, operator: Like}]}}");
        assert!(
            p.contains("spec.serviceSelector.matchExpressions[0].operator"),
            "{p}"
        );
        let p = bad("{interfaces: eth0}");
        assert!(p.ends_with("spec.interfaces: expected a list"), "{p}");
    }
}
