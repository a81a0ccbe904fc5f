//! Allow rules: pod labels, other namespaces, port ranges.

mod common;

use common::*;
use lumen_policy::PolicySet;

#[test]
fn network_policy_pod_label_same_namespace_only() {
    let set = PolicySet::new(parse_all(include_str!("fixtures/web-allow.yaml")), false);
    let p = set.resolve(&universe(), &endpoint(DB));
    assert!(p.ingress.enforced);
    assert!(!p.egress.enforced);
    // OTHER_WEB is also app=web, but in another namespace.
    assert_eq!(keys(&p.ingress.entries), vec![allow(WEB, 6, 5432, 16)]);
    assert_eq!(p.ingress.entries[0].match_type, 2);
    assert_eq!(p.refs[p.ingress.entries[0].policy].name, "db-from-web");
}

#[test]
fn network_policy_namespace_selector_and_end_port() {
    let set = PolicySet::new(parse_all(include_str!("fixtures/web-allow.yaml")), false);
    let p = set.resolve(&universe(), &endpoint(WEB));
    assert_eq!(
        keys(&p.ingress.entries),
        vec![
            allow(CLIENT, 6, 8000, 13),
            allow(CLIENT, 6, 8008, 15),
            allow(CLIENT, 6, 8010, 16),
            allow(CLIENT, 17, 53, 16),
            // kubernetes.io/metadata.name selects the namespace by name.
            allow(PROM, 0, 0, 0),
        ]
    );
    assert_eq!(p.ingress.entries[4].match_type, 1);
}

#[test]
fn network_policy_namespace_selector_all_namespaces() {
    let pol = parse_object(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-any-ns, namespace: demo}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - namespaceSelector: {}
      podSelector: {matchLabels: {app: web}}
"#,
    )
    .unwrap();
    let p = PolicySet::new(vec![pol], false).resolve(&universe(), &endpoint(DB));
    assert_eq!(
        keys(&p.ingress.entries),
        vec![allow(WEB, 0, 0, 0), allow(OTHER_WEB, 0, 0, 0)]
    );
}

#[test]
fn cnp_from_endpoints_other_namespace() {
    let set = PolicySet::new(parse_all(include_str!("fixtures/cnp-cross-ns.yaml")), false);
    let p = set.resolve(&universe(), &endpoint(WEB));
    assert_eq!(
        keys(&p.ingress.entries),
        vec![
            allow(WEB, 0, 0, 0),
            allow(DB, 0, 0, 0),
            allow(CLIENT, 6, 8000, 14),
            allow(CLIENT, 17, 8000, 14),
            allow(CLIENT, 132, 8000, 14),
            allow(PROM, 6, 9090, 16),
        ]
    );
    assert!(!p.egress.enforced);
    assert!(set
        .resolve(&universe(), &endpoint(OTHER_WEB))
        .refs
        .is_empty());
}

#[test]
fn cnp_l4_only_rule_matches_any_peer() {
    let pol = parse_object(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: l4, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - toPorts:
    - ports:
      - {port: "1", endPort: 65535, protocol: TCP}
      - {port: "8080"}
"#,
    )
    .unwrap();
    let p = PolicySet::new(vec![pol], false).resolve(&universe(), &endpoint(WEB));
    let e = &p.ingress.entries;
    assert!(e.iter().all(|e| e.identity == 0 && e.match_type == 3));
    // 16 TCP blocks for 1-65535 (8080 TCP falls inside one of them but is its own key) + UDP/SCTP 8080.
    assert_eq!(e.len(), 16 + 3);
    assert!(keys(e).contains(&allow(0, 6, 32768, 1)));
    assert!(keys(e).contains(&allow(0, 17, 8080, 16)));
}

#[test]
fn reserved_selector_is_not_namespace_restricted() {
    let pol = parse_object(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: from-host, namespace: demo}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints:
    - matchLabels: {"reserved:host": ""}
"#,
    )
    .unwrap();
    let p = PolicySet::new(vec![pol], false).resolve(&universe(), &endpoint(DB));
    assert_eq!(keys(&p.ingress.entries), vec![allow(1, 0, 0, 0)]);
}
