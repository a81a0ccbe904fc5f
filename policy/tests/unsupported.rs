//! Unsupported constructs: a warning naming the field, and nothing allowed by their rule.

mod common;

use common::*;
use lumen_policy::PolicySet;

#[test]
fn http_rules_warn_and_allow_nothing_while_fqdns_and_dns_rules_are_supported() {
    let pols = parse_all(include_str!("fixtures/unsupported.yaml"));
    assert_eq!(
        pols[0].warnings,
        vec![
            "spec.ingress[0].toPorts[0].rules.http: unsupported (L7 rules); this ingress rule allows nothing",
        ]
    );
    let p = PolicySet::new(pols, false).resolve(&universe(), &endpoint(WEB));
    // Only the plain L4 rule survives.
    assert_eq!(keys(&p.ingress.entries), vec![allow(DB, 6, 81, 16)]);
    assert!(p.ingress.enforced);
    assert!(p.egress.enforced);
    // No name resolved yet and no kube-dns pod: nothing allowed, but DNS goes to the proxy.
    assert!(p.egress.entries.is_empty());
    let set = PolicySet::new(parse_all(include_str!("fixtures/unsupported.yaml")), false);
    let dns = set.dns_policy(&endpoint(WEB));
    assert!(dns.redirect);
    assert!(dns.allows("anything.example"));
}

#[test]
fn unsupported_in_deny_widens_the_deny() {
    let pol = parse_object(
        r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: no-ping, namespace: demo}
spec:
  endpointSelector: {}
  ingress:
  - fromEntities: [all]
  ingressDeny:
  - fromEndpoints:
    - matchLabels: {app: db}
    icmps:
    - fields: [{type: 8, family: IPv4}]
"#,
    )
    .unwrap();
    assert_eq!(
        pol.warnings,
        vec!["spec.ingressDeny[0].icmps: unsupported (ICMP rules); ignored, which widens this ingress deny rule (fail-closed)"]
    );
    let p = PolicySet::new(vec![pol], false).resolve(&universe(), &endpoint(WEB));
    assert_eq!(
        keys(&p.ingress.entries),
        vec![allow(0, 0, 0, 0), deny(DB, 0, 0, 0, false)]
    );
}

#[test]
fn node_selector_rule_is_ignored() {
    let pol = parse_object(
        r#"
apiVersion: cilium.io/v2
kind: CiliumClusterwideNetworkPolicy
metadata: {name: host-fw}
specs:
- nodeSelector: {matchLabels: {role: worker}}
  ingress:
  - fromEntities: [cluster]
- endpointSelector: {}
  egress:
  - toEntities: [kube-apiserver]
    toPorts:
    - ports: [{port: "6443", protocol: TCP}]
  - toEndpoints:
    - matchLabels: {app: db}
    toRequires:
    - matchLabels: {env: prod}
"#,
    )
    .unwrap();
    assert_eq!(
        pol.warnings,
        vec![
            "specs[0].nodeSelector: unsupported (host policies); rule ignored",
            "specs[1].egress[1].toRequires: unsupported (requirements); this egress rule allows nothing",
        ]
    );
    assert_eq!(pol.rule_count(), 1);
    assert!(pol.labels().iter().all(|l| !l.contains("policy.namespace")));
    let p = PolicySet::new(vec![pol], false).resolve(&universe(), &endpoint(WEB));
    assert!(!p.ingress.enforced);
    assert_eq!(keys(&p.egress.entries), vec![allow(7, 6, 6443, 16)]);
}
