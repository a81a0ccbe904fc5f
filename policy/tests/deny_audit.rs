//! Deny precedence, audit mode (annotation and global), enableDefaultDeny.

mod common;

use common::*;
use lumen_policy::{Action, PolicySet};

const EXTRA_ALLOW: &str = r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web-extra, namespace: demo}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - fromEndpoints:
    - matchLabels: {k8s:io.kubernetes.pod.namespace: other, app: client}
    toPorts:
    - ports: [{port: "8080", protocol: TCP}]
  - fromEntities: [world]
    toPorts:
    - ports: [{protocol: TCP}]
"#;

#[test]
fn ingress_deny_overrides_allow() {
    let mut pols = parse_all(include_str!("fixtures/deny.yaml"));
    pols.push(parse_object(EXTRA_ALLOW).unwrap());
    let set = PolicySet::new(pols, false);
    let p = set.resolve(&universe(), &endpoint(WEB));
    assert!(p.ingress.enforced);
    assert_eq!(
        keys(&p.ingress.entries),
        vec![
            allow(0, 0, 0, 0),
            // Same key as the world TCP allow: deny wins.
            deny(2, 6, 0, 0, false),
            deny(9, 6, 0, 0, false),
            deny(10, 6, 0, 0, false),
            allow(WEB, 6, 80, 16),
            allow(DB, 6, 80, 16),
            // CLIENT's TCP 8080 allow is removed: the broader deny must be found by the LPM lookup.
            deny(CLIENT, 0, 0, 0, false),
            deny(OTHER_WEB, 0, 0, 0, false),
        ]
    );
    // refs are in (kind, namespace, name) order: CNPs before the CCNP.
    let names: Vec<_> = p.refs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["allow-all-in-demo", "web-extra", "deny-other-ns"]
    );
    let deny_client = p
        .ingress
        .entries
        .iter()
        .find(|e| e.identity == CLIENT)
        .unwrap();
    assert_eq!(p.refs[deny_client.policy].name, "deny-other-ns");
    assert_eq!(deny_client.match_type, 1);
    assert_eq!(p.ingress.selected_by, vec![0, 1, 2]);
}

#[test]
fn audit_annotation_marks_denies_and_default_deny() {
    let set = PolicySet::new(parse_all(include_str!("fixtures/audit.yaml")), false);
    assert!(set.policies()[0].audit);
    let p = set.resolve(&universe(), &endpoint(DB));
    assert!(p.ingress.enforced);
    assert!(p.ingress.default_audit);
    assert_eq!(
        keys(&p.ingress.entries),
        vec![
            deny(2, 0, 0, 0, true),
            deny(9, 0, 0, 0, true),
            deny(10, 0, 0, 0, true),
            allow(WEB, 0, 0, 0)
        ]
    );

    // A non-audit policy also making it default-deny: the default deny is enforced for real.
    let mut pols = parse_all(include_str!("fixtures/audit.yaml"));
    pols.extend(parse_all(include_str!("fixtures/default-deny-np.yaml")));
    let p = PolicySet::new(pols, false).resolve(&universe(), &endpoint(DB));
    assert!(p.ingress.enforced && !p.ingress.default_audit);
    assert!(p.egress.enforced && !p.egress.default_audit);
}

#[test]
fn non_audit_deny_beats_audit_deny() {
    let mut pols = parse_all(include_str!("fixtures/audit.yaml"));
    pols.push(
        parse_object(
            "kind: CiliumNetworkPolicy\nmetadata: {name: zz, namespace: demo}\nspec:\n  endpointSelector: {}\n  ingressDeny:\n  - fromEntities: [world]\n",
        )
        .unwrap(),
    );
    let p = PolicySet::new(pols, false).resolve(&universe(), &endpoint(DB));
    let w = p.ingress.entries.iter().find(|e| e.identity == 2).unwrap();
    assert_eq!((w.action, w.audit), (Action::Deny, false));
    assert_eq!(p.refs[w.policy].name, "zz");
}

#[test]
fn global_audit() {
    let set = PolicySet::new(parse_all(include_str!("fixtures/deny.yaml")), true);
    let p = set.resolve(&universe(), &endpoint(WEB));
    assert!(p.ingress.default_audit);
    assert!(p
        .ingress
        .entries
        .iter()
        .filter(|e| e.action == Action::Deny)
        .all(|e| e.audit));
    assert!(p
        .ingress
        .entries
        .iter()
        .filter(|e| e.action == Action::Allow)
        .all(|e| !e.audit));
}

#[test]
fn enable_default_deny_false() {
    let set = PolicySet::new(
        parse_all(include_str!("fixtures/no-default-deny.yaml")),
        false,
    );
    let p = set.resolve(&universe(), &endpoint(WEB));
    assert!(!p.ingress.enforced);
    assert!(p.ingress.selected_by.is_empty());
    assert_eq!(keys(&p.ingress.entries), vec![allow(DB, 0, 0, 0)]);
    assert!(p.egress.enforced);
    assert_eq!(keys(&p.egress.entries), vec![allow(DB, 0, 0, 0)]);

    let mut pols = parse_all(include_str!("fixtures/no-default-deny.yaml"));
    pols.extend(parse_all(include_str!("fixtures/default-deny-cnp.yaml")));
    let p = PolicySet::new(pols, false).resolve(&universe(), &endpoint(WEB));
    assert!(p.ingress.enforced);
    let by: Vec<_> = p
        .ingress
        .selected_by
        .iter()
        .map(|&i| p.refs[i].name.as_str())
        .collect();
    assert_eq!(by, vec!["default-deny"]);
    assert_eq!(keys(&p.ingress.entries), vec![allow(DB, 0, 0, 0)]);
}
