//! Kubernetes `networking.k8s.io/v1` NetworkPolicy spec.

use serde_yaml::Value;

use super::common::{cidr_peer, namespace_requirements, port_spec, selector};
use super::fields::{scalar_string, Obj};
use super::Ctx;
use crate::error::PolicyError;
use crate::labels::{NAMESPACE_KEY, SOURCE_K8S};
use crate::model::{Item, Peer, Rule, Section};
use crate::ports::{Proto, PROTO_TCP};
use crate::selector::Requirement;

/// Parses a NetworkPolicy spec into one rule.
pub(crate) fn rules(ctx: &mut Ctx, spec: &Value) -> Result<Vec<Rule>, PolicyError> {
    let o = Obj::new(
        "spec",
        spec,
        &["podSelector", "policyTypes", "ingress", "egress"],
    )?;
    let subject = match o.get("podSelector") {
        Some(v) => selector(&o.path_of("podSelector"), v)?,
        None => {
            return Err(PolicyError::MissingField {
                path: o.path_of("podSelector"),
            })
        }
    };
    let ingress_items = o.list_or_empty("ingress")?;
    let egress_items = o.list_or_empty("egress")?;
    let (mut types_in, mut types_eg) = (true, !egress_items.is_empty());
    if let Some(types) = o.list("policyTypes")? {
        (types_in, types_eg) = (false, false);
        for (p, t) in types {
            match scalar_string(&p, t)?.as_str() {
                "Ingress" => types_in = true,
                "Egress" => types_eg = true,
                other => {
                    return Err(PolicyError::UnknownPolicyType {
                        path: p,
                        value: other.to_string(),
                    })
                }
            }
        }
    }
    let mut ingress = Section {
        selects: types_in,
        default_deny: true,
        ..Section::default()
    };
    for (p, v) in ingress_items {
        let it = item(ctx, "from", &p, v)?;
        // Rules of a direction not in policyTypes are ignored, as in Kubernetes.
        if types_in {
            ingress.allow.push(it);
        }
    }
    let mut egress = Section {
        selects: types_eg,
        default_deny: true,
        ..Section::default()
    };
    for (p, v) in egress_items {
        let it = item(ctx, "to", &p, v)?;
        if types_eg {
            egress.allow.push(it);
        }
    }
    Ok(vec![Rule {
        subject,
        namespace: ctx.namespace.clone(),
        ingress,
        egress,
    }])
}

fn item(ctx: &Ctx, peers_key: &str, path: &str, v: &Value) -> Result<Item, PolicyError> {
    let o = Obj::new(path, v, &[peers_key, "ports"])?;
    let mut peers = Vec::new();
    for (p, pv) in o.list_or_empty(peers_key)? {
        peers.push(peer(ctx, &p, pv)?);
    }
    let mut ports = Vec::new();
    for (p, pv) in o.list_or_empty("ports")? {
        let po = Obj::new(&p, pv, &["port", "endPort", "protocol"])?;
        ports.push(port_spec(&po, Proto::One(PROTO_TCP), false)?);
    }
    Ok(Item {
        peers: if peers.is_empty() { None } else { Some(peers) },
        ports: if ports.is_empty() { None } else { Some(ports) },
        dns: None,
    })
}

fn peer(ctx: &Ctx, path: &str, v: &Value) -> Result<Peer, PolicyError> {
    let o = Obj::new(path, v, &["podSelector", "namespaceSelector", "ipBlock"])?;
    if let Some(ib) = o.get("ipBlock") {
        if o.has("podSelector") || o.has("namespaceSelector") {
            return Err(PolicyError::InvalidPeer {
                path: path.to_string(),
            });
        }
        let ibo = Obj::new(&o.path_of("ipBlock"), ib, &["cidr", "except"])?;
        let c = ibo.get("cidr").ok_or_else(|| PolicyError::MissingField {
            path: ibo.path_of("cidr"),
        })?;
        return cidr_peer(&ibo.path_of("cidr"), c, ibo.list_or_empty("except")?);
    }
    let pod = o
        .get("podSelector")
        .map(|v| selector(&o.path_of("podSelector"), v))
        .transpose()?;
    let ns = o
        .get("namespaceSelector")
        .map(|v| selector(&o.path_of("namespaceSelector"), v))
        .transpose()?;
    let sel = match (pod, ns) {
        (None, None) => {
            return Err(PolicyError::InvalidPeer {
                path: path.to_string(),
            })
        }
        (Some(mut pod), None) => {
            if let Some(policy_ns) = &ctx.namespace {
                pod.restrict_to_namespace(policy_ns);
            }
            pod
        }
        (pod, Some(ns)) => {
            let mut sel = pod.unwrap_or_default();
            sel.reqs.extend(namespace_requirements(ns));
            // Only pods have a namespace: keeps reserved identities out of `namespaceSelector: {}`.
            sel.reqs
                .push(Requirement::exists(Some(SOURCE_K8S), NAMESPACE_KEY));
            sel
        }
    };
    Ok(Peer::Selector(sel))
}
