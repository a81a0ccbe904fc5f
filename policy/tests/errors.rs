//! Invalid policies: each error names the exact field path.

mod common;

use common::parse_object;

fn err(yaml: &str) -> String {
    match parse_object(yaml) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_operator() {
    let e = err(r#"
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: x, namespace: demo}
spec:
  endpointSelector: {}
  ingress:
  - fromEndpoints:
    - matchLabels: {app: a}
    - matchExpressions:
      - {key: app, operator: Inn, values: [b]}
"#);
    assert_eq!(
        e,
        "spec.ingress[0].fromEndpoints[1].matchExpressions[0].operator: unknown operator \"Inn\" (expected In, NotIn, Exists, DoesNotExist)"
    );
}

#[test]
fn unknown_fields() {
    let cnp = |body: &str| {
        err(&format!("kind: CiliumNetworkPolicy\nmetadata: {{name: x, namespace: demo}}\nspec:\n  endpointSelector: {{}}\n{body}"))
    };
    assert_eq!(
        cnp("  ingress:\n  - fromEndpoint: [{}]\n"),
        "spec.ingress[0].fromEndpoint: unknown field"
    );
    assert_eq!(cnp("  ingres: []\n"), "spec.ingres: unknown field");
    assert_eq!(
        cnp("  egress:\n  - fromEndpoints: [{}]\n"),
        "spec.egress[0].fromEndpoints: unknown field"
    );
    assert_eq!(
        cnp("  ingressDeny:\n  - toPorts:\n    - ports: [{port: '80'}]\n      rules: {http: [{}]}\n"),
        "spec.ingressDeny[0].toPorts[0].rules: unknown field"
    );
    assert_eq!(
        cnp("  enableDefaultDeny: {ingres: false}\n"),
        "spec.enableDefaultDeny.ingres: unknown field"
    );
    assert_eq!(
        err("kind: CiliumClusterwideNetworkPolicy\nmetadata: {name: x}\nspecs:\n- endpointSelector: {}\n- endpointSelector: {}\n  ingress:\n  - toPorts:\n    - ports:\n      - {port: '80', protocl: TCP}\n"),
        "specs[1].ingress[0].toPorts[0].ports[0].protocl: unknown field"
    );
    assert_eq!(
        err("kind: NetworkPolicy\nmetadata: {name: x, namespace: demo}\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - podSelector: {}\n      namespaceSelectr: {}\n"),
        "spec.ingress[0].from[0].namespaceSelectr: unknown field"
    );
}

#[test]
fn bad_cidrs() {
    let cnp = |body: &str| {
        err(&format!("kind: CiliumNetworkPolicy\nmetadata: {{name: x, namespace: demo}}\nspec:\n  endpointSelector: {{}}\n{body}"))
    };
    assert_eq!(
        cnp("  egress:\n  - toCIDR: [10.0.0.0/8, 10.0.0.0/33]\n"),
        "spec.egress[0].toCIDR[1]: invalid CIDR \"10.0.0.0/33\""
    );
    assert_eq!(
        cnp("  egress:\n  - toCIDRSet:\n    - cidr: 10.0.0.0/8\n      except: [10.1.0.0.0/16]\n"),
        "spec.egress[0].toCIDRSet[0].except[0]: invalid CIDR \"10.1.0.0.0/16\""
    );
    assert_eq!(
        cnp("  egress:\n  - toCIDRSet:\n    - cidr: 10.0.0.0/8\n      except: [192.168.0.0/16]\n"),
        "spec.egress[0].toCIDRSet[0].except[0]: except \"192.168.0.0/16\" is not within cidr \"10.0.0.0/8\""
    );
    assert_eq!(
        err("kind: NetworkPolicy\nmetadata: {name: x, namespace: demo}\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 300.0.0.0/8}\n"),
        "spec.ingress[0].from[0].ipBlock.cidr: invalid CIDR \"300.0.0.0/8\""
    );
}

#[test]
fn bad_ports_protocols_entities() {
    let cnp = |body: &str| {
        err(&format!("kind: CiliumNetworkPolicy\nmetadata: {{name: x, namespace: demo}}\nspec:\n  endpointSelector: {{}}\n{body}"))
    };
    assert_eq!(
        cnp("  ingress:\n  - toPorts:\n    - ports: [{port: '70000'}]\n"),
        "spec.ingress[0].toPorts[0].ports[0].port: port 70000 out of range (expected 1-65535)"
    );
    assert_eq!(
        cnp("  ingress:\n  - toPorts:\n    - ports: [{port: '80', protocol: TCPP}]\n"),
        "spec.ingress[0].toPorts[0].ports[0].protocol: unknown protocol \"TCPP\" (expected TCP, UDP, SCTP or ANY)"
    );
    assert_eq!(
        cnp("  egress:\n  - toEntities: [world, internet]\n"),
        "spec.egress[0].toEntities[1]: unknown entity \"internet\" (expected world, cluster, host, remote-node, all, health, init, unmanaged, kube-apiserver, ingress)"
    );
    let np = |body: &str| {
        err(&format!("kind: NetworkPolicy\nmetadata: {{name: x, namespace: demo}}\nspec:\n  podSelector: {{}}\n{body}"))
    };
    assert_eq!(
        np("  egress:\n  - ports: [{port: 90, endPort: 80}]\n"),
        "spec.egress[0].ports[0].endPort: endPort 80 is smaller than port 90"
    );
    assert_eq!(
        np("  ingress:\n  - ports: [{protocol: ANY, port: 80}]\n"),
        "spec.ingress[0].ports[0].protocol: unknown protocol \"ANY\" (expected TCP, UDP or SCTP)"
    );
    assert_eq!(
        np("  policyTypes: [Ingress, Egres]\n"),
        "spec.policyTypes[1]: unknown policy type \"Egres\" (expected Ingress or Egress)"
    );
    assert_eq!(
        np("  ingress:\n  - from: [{}]\n"),
        "spec.ingress[0].from[0]: a peer must set exactly one of ipBlock or podSelector/namespaceSelector"
    );
}

#[test]
fn missing_parts() {
    assert_eq!(
        err("kind: CiliumNetworkPolicy\nmetadata: {name: x, namespace: demo}\nspec:\n  ingress: [{}]\n"),
        "spec.endpointSelector: required field is missing"
    );
    assert_eq!(
        err("kind: CiliumNetworkPolicy\nmetadata: {name: x, namespace: demo}\n"),
        "spec: neither spec nor specs is set"
    );
    assert_eq!(
        err("kind: NetworkPolicy\nmetadata: {name: x, namespace: demo}\nspec:\n  policyTypes: [Ingress]\n"),
        "spec.podSelector: required field is missing"
    );
    assert_eq!(
        err("kind: Pod\nmetadata: {name: x}\nspec: {}\n"),
        "kind: unsupported policy kind \"Pod\" (expected NetworkPolicy, CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy)"
    );
    assert_eq!(
        err("kind: CiliumNetworkPolicy\nmetadata: {name: x, namespace: demo}\nspec:\n  endpointSelector: {}\n  ingress: {fromEndpoints: []}\n"),
        "spec.ingress: expected a list"
    );
}
