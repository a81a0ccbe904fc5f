//! Shared fixtures for the integration tests: parsing full YAML objects and a small cluster.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use lumen_policy::{parse, Action, EndpointView, Entry, Policy, PolicyError, PolicyMeta, Universe};
use serde_yaml::Value;

/// Identity of `app=web` in `demo`.
pub const WEB: u32 = 1000;
/// Identity of `app=db` in `demo`.
pub const DB: u32 = 1001;
/// Identity of `app=client` in `other` (namespace label team=b).
pub const CLIENT: u32 = 1002;
/// Identity of `app=prometheus` in `monitoring` (namespace label team=ops).
pub const PROM: u32 = 1003;
/// Identity of `app=web` in `other`.
pub const OTHER_WEB: u32 = 1004;

/// Parses one full Kubernetes object (apiVersion, kind, metadata, spec/specs).
pub fn parse_object(yaml: &str) -> Result<Policy, PolicyError> {
    let v: Value = serde_yaml::from_str(yaml).expect("fixture is valid YAML");
    let kind = v["kind"].as_str().unwrap_or_default().to_string();
    let md = &v["metadata"];
    let annotations: BTreeMap<String, String> = md["annotations"]
        .as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap_or_default().into(),
                        v.as_str().unwrap_or_default().into(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let meta = PolicyMeta {
        name: md["name"].as_str().unwrap_or_default().into(),
        namespace: md["namespace"].as_str().unwrap_or_default().into(),
        annotations,
        revision: 7,
    };
    parse(&kind, meta, &v["spec"], &v["specs"])
}

/// Parses every document of a multi-document YAML file; panics on error.
pub fn parse_all(yaml: &str) -> Vec<Policy> {
    yaml.split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| parse_object(d).expect("fixture parses"))
        .collect()
}

fn pod(app: &str, ns: &str, team: &str) -> Vec<String> {
    vec![
        format!("k8s:app={app}"),
        format!("k8s:io.kubernetes.pod.namespace={ns}"),
        format!("k8s:io.cilium.k8s.namespace.labels.team={team}"),
        format!("k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name={ns}"),
        "k8s:io.cilium.k8s.policy.serviceaccount=default".to_string(),
        "k8s:io.cilium.k8s.policy.cluster=lab".to_string(),
    ]
}

/// A cluster with the reserved identities and five pods.
pub fn universe() -> Universe {
    let mut identities = BTreeMap::new();
    for (id, name) in [
        (1, "host"),
        (2, "world"),
        (3, "unmanaged"),
        (4, "health"),
        (5, "init"),
        (6, "remote-node"),
        (7, "kube-apiserver"),
        (8, "ingress"),
        (9, "world-ipv4"),
        (10, "world-ipv6"),
    ] {
        identities.insert(id, vec![format!("reserved:{name}")]);
    }
    identities.insert(WEB, pod("web", "demo", "a"));
    identities.insert(DB, pod("db", "demo", "a"));
    identities.insert(CLIENT, pod("client", "other", "b"));
    identities.insert(PROM, pod("prometheus", "monitoring", "ops"));
    identities.insert(OTHER_WEB, pod("web", "other", "b"));
    let mut named_ports = BTreeMap::new();
    named_ports.insert(
        "http".to_string(),
        BTreeSet::from([(6u8, 8080u16), (6, 8081)]),
    );
    named_ports.insert("dns".to_string(), BTreeSet::from([(17u8, 53u16), (6, 53)]));
    Universe {
        identities,
        named_ports,
    }
}

/// The endpoint view of one of the universe's pods.
pub fn endpoint(id: u32) -> EndpointView {
    let u = universe();
    let labels = u.identities.get(&id).cloned().unwrap_or_default();
    let namespace = labels
        .iter()
        .find_map(|l| l.strip_prefix("k8s:io.kubernetes.pod.namespace="))
        .unwrap_or_default()
        .to_string();
    let mut named_ports = BTreeMap::new();
    named_ports.insert("http".to_string(), (6u8, 8080u16));
    named_ports.insert("metrics".to_string(), (6u8, 9090u16));
    EndpointView {
        identity: id,
        labels,
        namespace,
        named_ports,
    }
}

/// Entries as (identity, proto, port, prefix, action, audit) tuples.
pub fn keys(entries: &[Entry]) -> Vec<(u32, u8, u16, u8, Action, bool)> {
    entries
        .iter()
        .map(|e| {
            (
                e.identity,
                e.proto,
                e.port,
                e.port_prefix,
                e.action,
                e.audit,
            )
        })
        .collect()
}

/// Shorthand for a non-audit allow tuple.
pub fn allow(id: u32, proto: u8, port: u16, prefix: u8) -> (u32, u8, u16, u8, Action, bool) {
    (id, proto, port, prefix, Action::Allow, false)
}

/// Shorthand for a deny tuple.
pub fn deny(
    id: u32,
    proto: u8,
    port: u16,
    prefix: u8,
    audit: bool,
) -> (u32, u8, u16, u8, Action, bool) {
    (id, proto, port, prefix, Action::Deny, audit)
}
