//! Default-deny policies: enforced directions with no allow entries.

mod common;

use common::*;
use lumen_policy::{PolicyKind, PolicySet};

#[test]
fn cnp_empty_rules_enforce_without_allowing() {
    let set = PolicySet::new(
        parse_all(include_str!("fixtures/default-deny-cnp.yaml")),
        false,
    );
    let p = set.resolve(&universe(), &endpoint(WEB));
    for dir in [&p.ingress, &p.egress] {
        assert!(dir.enforced);
        assert!(!dir.default_audit);
        assert_eq!(dir.selected_by, vec![0]);
        assert!(dir.entries.is_empty());
    }
    assert_eq!(p.refs.len(), 1);
    assert_eq!(p.refs[0].name, "default-deny");
    assert_eq!(p.refs[0].kind, PolicyKind::CiliumNetworkPolicy);
    assert_eq!(p.refs[0].revision, 7);
    assert_eq!(
        p.refs[0].labels,
        vec![
            "k8s:io.cilium.k8s.policy.name=default-deny",
            "k8s:io.cilium.k8s.policy.namespace=demo",
            "k8s:io.cilium.k8s.policy.derived-from=CiliumNetworkPolicy",
        ]
    );

    // Another namespace is not selected.
    let other = set.resolve(&universe(), &endpoint(OTHER_WEB));
    assert!(!other.ingress.enforced && !other.egress.enforced);
    assert!(other.refs.is_empty());
}

#[test]
fn network_policy_pod_selector_all_with_both_types() {
    let set = PolicySet::new(
        parse_all(include_str!("fixtures/default-deny-np.yaml")),
        false,
    );
    for id in [WEB, DB] {
        let p = set.resolve(&universe(), &endpoint(id));
        assert!(p.ingress.enforced && p.egress.enforced);
        assert!(p.ingress.entries.is_empty() && p.egress.entries.is_empty());
        assert_eq!(p.egress.selected_by, vec![0]);
        assert_eq!(p.refs[0].kind, PolicyKind::NetworkPolicy);
    }
    assert!(!set.resolve(&universe(), &endpoint(CLIENT)).ingress.enforced);
}

#[test]
fn network_policy_default_policy_types() {
    let ingress_only = parse_object(
        "kind: NetworkPolicy\nmetadata: {name: x, namespace: demo}\nspec:\n  podSelector: {}\n",
    )
    .unwrap();
    let p = PolicySet::new(vec![ingress_only], false).resolve(&universe(), &endpoint(WEB));
    assert!(p.ingress.enforced);
    assert!(!p.egress.enforced);

    let with_egress = parse_object(
        "kind: NetworkPolicy\nmetadata: {name: x, namespace: demo}\nspec:\n  podSelector: {}\n  egress:\n  - {}\n",
    )
    .unwrap();
    let p = PolicySet::new(vec![with_egress], false).resolve(&universe(), &endpoint(WEB));
    assert!(p.ingress.enforced && p.egress.enforced);
    // `egress: [{}]` in a NetworkPolicy allows everything.
    assert_eq!(keys(&p.egress.entries), vec![allow(0, 0, 0, 0)]);
    assert_eq!(p.egress.entries[0].match_type, 4);
    assert!(p.ingress.entries.is_empty());
}

#[test]
fn cnp_without_sections_does_not_enforce() {
    let pol = parse_object(
        "kind: CiliumNetworkPolicy\nmetadata: {name: x, namespace: demo}\nspec:\n  endpointSelector: {}\n  ingress: []\n",
    )
    .unwrap();
    let p = PolicySet::new(vec![pol], false).resolve(&universe(), &endpoint(WEB));
    assert!(!p.ingress.enforced && !p.egress.enforced);
}
