//! Turning policy objects (kind, metadata, `spec`/`specs` YAML) into [`Policy`] values.

mod cilium;
mod common;
mod fields;
mod k8s;

use serde_yaml::Value;

use crate::error::PolicyError;
use crate::model::{Policy, PolicyKind, PolicyMeta, AUDIT_ANNOTATION};

/// Parsing state shared by a policy's rules.
pub(crate) struct Ctx {
    /// Namespace of a namespaced policy, `None` for cluster-wide ones.
    pub namespace: Option<String>,
    /// Warnings collected so far.
    pub warnings: Vec<String>,
}

/// Whether `kind` is a policy kind this crate parses.
pub fn is_policy_kind(kind: &str) -> bool {
    PolicyKind::from_kind(kind).is_some()
}

/// Parses one policy object. `spec` is the object's `spec` value; for Cilium kinds `specs` is its
/// `specs` value (`Null` when absent). A namespaced policy with an empty namespace is taken to be
/// in `default`.
pub fn parse(
    kind: &str,
    meta: PolicyMeta,
    spec: &Value,
    specs: &Value,
) -> Result<Policy, PolicyError> {
    let kind = PolicyKind::from_kind(kind).ok_or_else(|| PolicyError::UnknownKind {
        kind: kind.to_string(),
    })?;
    let namespace = match kind {
        PolicyKind::CiliumClusterwideNetworkPolicy => None,
        _ if meta.namespace.is_empty() => Some("default".to_string()),
        _ => Some(meta.namespace.clone()),
    };
    let mut ctx = Ctx {
        namespace,
        warnings: Vec::new(),
    };
    let rules = match kind {
        PolicyKind::NetworkPolicy => {
            if !specs.is_null() {
                return Err(PolicyError::UnknownField {
                    path: "specs".to_string(),
                });
            }
            k8s::rules(&mut ctx, spec)?
        }
        _ => cilium::rules(&mut ctx, spec, specs)?,
    };
    let audit = meta
        .annotations
        .get(AUDIT_ANNOTATION)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    Ok(Policy {
        kind,
        meta,
        audit,
        warnings: ctx.warnings,
        rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Malformed input of every shape must produce an error or a policy, never a panic.
    #[test]
    fn odd_inputs_do_not_panic() {
        let docs = [
            "42",
            "[1, 2]",
            "{endpointSelector: 5}",
            "{endpointSelector: {matchLabels: [a]}}",
            "{endpointSelector: {matchLabels: {a: [b]}}}",
            "{endpointSelector: {matchExpressions: {key: a}}}",
            "{endpointSelector: {matchExpressions: [{operator: In, values: [a]}]}}",
            "{endpointSelector: {}, ingress: [5]}",
            "{endpointSelector: {}, ingress: [{toPorts: 5}]}",
            "{endpointSelector: {}, ingress: [{toPorts: [{ports: [{port: 1.5}]}]}]}",
            "{endpointSelector: {}, ingress: [{toPorts: [{ports: [{port: '99999999999999999999999'}]}]}]}",
            "{endpointSelector: {}, ingress: [{toPorts: [{ports: [{port: '80', endPort: -5}]}]}]}",
            "{endpointSelector: {}, egress: [{toCIDRSet: [{except: [10.0.0.0/8]}]}]}",
            "{endpointSelector: {}, egress: [{toCIDR: [{a: b}]}]}",
            "{endpointSelector: {}, enableDefaultDeny: {ingress: 'yes'}}",
            "{endpointSelector: {}, ingress: [{fromEntities: [[world]]}]}",
            "{? [a] : b}",
            "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]}",
            "{podSelector: {}, policyTypes: Ingress}",
        ];
        for d in docs {
            let v: Value = serde_yaml::from_str(d).unwrap();
            for kind in [
                "CiliumNetworkPolicy",
                "CiliumClusterwideNetworkPolicy",
                "NetworkPolicy",
            ] {
                let _ = parse(kind, PolicyMeta::default(), &v, &Value::Null);
                let _ = parse(kind, PolicyMeta::default(), &Value::Null, &v);
            }
        }
    }

    #[test]
    fn kinds_and_audit_annotation() {
        assert!(is_policy_kind("CiliumClusterwideNetworkPolicy"));
        assert!(!is_policy_kind("Service"));
        let mut meta = PolicyMeta {
            name: "n".into(),
            namespace: "ns".into(),
            ..PolicyMeta::default()
        };
        meta.annotations
            .insert(AUDIT_ANNOTATION.into(), "true".into());
        let spec: Value = serde_yaml::from_str("{podSelector: {}}").unwrap();
        let p = parse("NetworkPolicy", meta, &spec, &Value::Null).unwrap();
        assert!(p.audit);
        assert_eq!(p.kind.to_string(), "NetworkPolicy");
        assert_eq!(
            p.labels(),
            vec![
                "k8s:io.cilium.k8s.policy.name=n",
                "k8s:io.cilium.k8s.policy.namespace=ns",
                "k8s:io.cilium.k8s.policy.derived-from=NetworkPolicy"
            ]
        );
        let spec: Value = serde_yaml::from_str("{podSelector: {}}").unwrap();
        let e = parse("NetworkPolicy", PolicyMeta::default(), &spec, &spec).unwrap_err();
        assert_eq!(e.to_string(), "specs: unknown field");
    }
}
