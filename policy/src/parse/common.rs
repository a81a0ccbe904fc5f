//! Parsing shared by both policy dialects: label selectors, CIDRs and port entries.

use std::collections::BTreeSet;

use serde_yaml::Value;

use super::fields::{scalar_string, wrong_type, Elem, Obj};
use crate::cidr::Cidr;
use crate::error::PolicyError;
use crate::labels::{parse_selector_key, NAMESPACE_KEY, NAMESPACE_LABELS_PREFIX, SOURCE_K8S};
use crate::model::Peer;
use crate::ports::{PortSel, PortSpec, Proto, PROTO_SCTP, PROTO_TCP, PROTO_UDP};
use crate::selector::{Operator, Requirement, Selector};

/// The namespace label Kubernetes puts on every namespace: equivalent to the pod namespace.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Parses a Kubernetes label selector (`matchLabels`, `matchExpressions`).
pub(crate) fn selector(path: &str, v: &Value) -> Result<Selector, PolicyError> {
    let o = Obj::new(path, v, &["matchLabels", "matchExpressions"])?;
    let mut reqs = Vec::new();
    if let Some(ml) = o.get("matchLabels") {
        let ml_path = o.path_of("matchLabels");
        let labels = Obj::new_open(&ml_path, ml)?;
        for (k, v) in labels.string_map()? {
            let (source, key) = checked_key(&ml_path, &k)?;
            reqs.push(Requirement {
                source,
                key,
                op: Operator::In,
                values: BTreeSet::from([v]),
            });
        }
    }
    for (p, e) in o.list_or_empty("matchExpressions")? {
        reqs.push(expression(&p, e)?);
    }
    Ok(Selector { reqs })
}

fn checked_key(path: &str, k: &str) -> Result<(Option<String>, String), PolicyError> {
    let (source, key) = parse_selector_key(k);
    if key.is_empty() {
        return Err(PolicyError::EmptyLabelKey {
            path: path.to_string(),
        });
    }
    Ok((source, key))
}

fn expression(path: &str, v: &Value) -> Result<Requirement, PolicyError> {
    let o = Obj::new(path, v, &["key", "operator", "values"])?;
    let k = o.string("key")?.ok_or_else(|| PolicyError::MissingField {
        path: o.path_of("key"),
    })?;
    let (source, key) = checked_key(&o.path_of("key"), &k)?;
    let op_str = o
        .string("operator")?
        .ok_or_else(|| PolicyError::MissingField {
            path: o.path_of("operator"),
        })?;
    let op = Operator::parse(&op_str).ok_or_else(|| PolicyError::UnknownOperator {
        path: o.path_of("operator"),
        operator: op_str.clone(),
    })?;
    let mut values = BTreeSet::new();
    for (p, v) in o.list_or_empty("values")? {
        values.insert(scalar_string(&p, v)?);
    }
    let bad = |requirement| PolicyError::OperatorValues {
        path: o.path_of("values"),
        operator: op.name(),
        requirement,
    };
    match op {
        Operator::In | Operator::NotIn if values.is_empty() => {
            return Err(bad("requires at least one value"))
        }
        Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
            return Err(bad("takes no values"))
        }
        _ => {}
    }
    Ok(Requirement {
        source,
        key,
        op,
        values,
    })
}

/// Turns a namespace selector into requirements on the namespace labels every pod identity carries.
pub(crate) fn namespace_requirements(ns: Selector) -> Vec<Requirement> {
    ns.reqs
        .into_iter()
        .map(|r| {
            let key = if r.key == NAMESPACE_NAME_LABEL {
                NAMESPACE_KEY.to_string()
            } else {
                format!("{NAMESPACE_LABELS_PREFIX}{}", r.key)
            };
            Requirement {
                source: Some(SOURCE_K8S.to_string()),
                key,
                ..r
            }
        })
        .collect()
}

/// Parses one CIDR string.
pub(crate) fn cidr(path: &str, s: &str) -> Result<Cidr, PolicyError> {
    Cidr::parse(s).ok_or_else(|| PolicyError::InvalidCidr {
        path: path.to_string(),
        value: s.to_string(),
    })
}

/// Parses a CIDR value at `path` plus its `except` list into a peer.
pub(crate) fn cidr_peer(
    path: &str,
    v: &Value,
    excepts: Vec<Elem<'_>>,
) -> Result<Peer, PolicyError> {
    let s = scalar_string(path, v)?;
    let c = cidr(path, &s)?;
    let mut except = Vec::new();
    for (p, e) in excepts {
        let es = scalar_string(&p, e)?;
        let ec = cidr(&p, &es)?;
        if !c.contains(&ec) {
            return Err(PolicyError::ExceptOutsideCidr {
                path: p,
                except: es,
                cidr: s,
            });
        }
        except.push(ec);
    }
    Ok(Peer::Cidr { cidr: c, except })
}

/// Parses the `port` / `endPort` / `protocol` fields of a port entry.
/// `default_proto` applies when `protocol` is absent; `any_allowed` accepts `ANY` (Cilium).
pub(crate) fn port_spec(
    o: &Obj<'_>,
    default_proto: Proto,
    any_allowed: bool,
) -> Result<PortSpec, PolicyError> {
    let port = match o.get("port") {
        None => PortSel::Any,
        Some(v) => port_value(&o.path_of("port"), v)?,
    };
    let end = match o.get("endPort") {
        None => None,
        Some(v) => match port_value(&o.path_of("endPort"), v)? {
            PortSel::Any => None,
            PortSel::Range(e, _) => Some(e),
            PortSel::Named(n) => {
                return Err(PolicyError::InvalidPort {
                    path: o.path_of("endPort"),
                    value: n,
                })
            }
        },
    };
    let port = match (port, end) {
        (p, None) => p,
        (PortSel::Range(lo, _), Some(hi)) if hi < lo => {
            return Err(PolicyError::EndPortBeforePort {
                path: o.path_of("endPort"),
                port: lo,
                end_port: hi,
            })
        }
        (PortSel::Range(lo, _), Some(hi)) => PortSel::Range(lo, hi),
        (_, Some(_)) => {
            return Err(PolicyError::EndPortWithoutNumericPort {
                path: o.path_of("endPort"),
            })
        }
    };
    let proto = match o.string("protocol")? {
        None => default_proto,
        Some(s) => protocol(&o.path_of("protocol"), &s, any_allowed)?,
    };
    Ok(PortSpec { port, proto })
}

fn protocol(path: &str, s: &str, any_allowed: bool) -> Result<Proto, PolicyError> {
    Ok(match s.to_ascii_uppercase().as_str() {
        "TCP" => Proto::One(PROTO_TCP),
        "UDP" => Proto::One(PROTO_UDP),
        "SCTP" => Proto::One(PROTO_SCTP),
        "ANY" if any_allowed => Proto::Any,
        _ => {
            let expected = if any_allowed {
                "TCP, UDP, SCTP or ANY"
            } else {
                "TCP, UDP or SCTP"
            };
            return Err(PolicyError::UnknownProtocol {
                path: path.to_string(),
                value: s.to_string(),
                expected,
            });
        }
    })
}

/// A port as a number, numeric string or port name. Explicit 0 (or "") means any port.
fn port_value(path: &str, v: &Value) -> Result<PortSel, PolicyError> {
    let n = match v {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| wrong_type(path, "an integer port"))?,
        Value::String(s) if s.is_empty() => return Ok(PortSel::Any),
        Value::String(s) if s.bytes().all(|b| b.is_ascii_digit()) => match s.parse::<i64>() {
            Ok(n) => n,
            Err(_) => {
                return Err(PolicyError::InvalidPort {
                    path: path.to_string(),
                    value: s.clone(),
                })
            }
        },
        Value::String(s) if is_port_name(s) => return Ok(PortSel::Named(s.clone())),
        Value::String(s) => {
            return Err(PolicyError::InvalidPort {
                path: path.to_string(),
                value: s.clone(),
            })
        }
        _ => return Err(wrong_type(path, "a port number or name")),
    };
    match n {
        0 => Ok(PortSel::Any),
        1..=65535 => {
            // The match arm bounds the value to u16.
            let p = n as u16;
            Ok(PortSel::Range(p, p))
        }
        _ => Err(PolicyError::PortOutOfRange {
            path: path.to_string(),
            value: n,
        }),
    }
}

/// IANA service name: 1-15 of `[a-z0-9-]`, at least one letter, no leading/trailing/double hyphen.
fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Value {
        serde_yaml::from_str(s).unwrap()
    }

    fn spec(s: &str) -> Result<PortSpec, PolicyError> {
        let v = y(s);
        let o = Obj::new("p", &v, &["port", "endPort", "protocol"])?;
        port_spec(&o, Proto::Any, true)
    }

    #[test]
    fn selector_parsing() {
        let s = selector("s", &y("{matchLabels: {app: web, 'k8s:tier': db}, matchExpressions: [{key: env, operator: NotIn, values: [prod]}]}")).unwrap();
        assert_eq!(s.reqs.len(), 3);
        let e = selector(
            "s",
            &y("{matchExpressions: [{key: env, operator: Inn, values: [a]}]}"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "s.matchExpressions[0].operator: unknown operator \"Inn\" (expected In, NotIn, Exists, DoesNotExist)"
        );
        let e = selector("s", &y("{matchExpressions: [{key: env, operator: In}]}")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "s.matchExpressions[0].values: operator In requires at least one value"
        );
        let e = selector(
            "s",
            &y("{matchExpressions: [{key: env, operator: Exists, values: [x]}]}"),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "s.matchExpressions[0].values: operator Exists takes no values"
        );
        let e = selector("s", &y("{matchLabel: {a: b}}")).unwrap_err();
        assert_eq!(e.to_string(), "s.matchLabel: unknown field");
        assert!(selector("s", &y("{}")).unwrap().reqs.is_empty());
    }

    #[test]
    fn ports() {
        assert_eq!(spec("{port: '80'}").unwrap().port, PortSel::Range(80, 80));
        assert_eq!(
            spec("{port: 80, endPort: 90}").unwrap().port,
            PortSel::Range(80, 90)
        );
        assert_eq!(
            spec("{port: http}").unwrap().port,
            PortSel::Named("http".into())
        );
        assert_eq!(spec("{port: '0'}").unwrap().port, PortSel::Any);
        assert_eq!(
            spec("{protocol: UDP}").unwrap(),
            PortSpec {
                port: PortSel::Any,
                proto: Proto::One(17)
            }
        );
        assert_eq!(
            spec("{port: 70000}").unwrap_err().to_string(),
            "p.port: port 70000 out of range (expected 1-65535)"
        );
        assert_eq!(
            spec("{port: -1}").unwrap_err().to_string(),
            "p.port: port -1 out of range (expected 1-65535)"
        );
        assert_eq!(
            spec("{port: 90, endPort: 80}").unwrap_err().to_string(),
            "p.endPort: endPort 80 is smaller than port 90"
        );
        assert_eq!(
            spec("{port: http, endPort: 80}").unwrap_err().to_string(),
            "p.endPort: endPort requires a numeric port"
        );
        assert_eq!(
            spec("{port: 80, protocol: ICMP}").unwrap_err().to_string(),
            "p.protocol: unknown protocol \"ICMP\" (expected TCP, UDP, SCTP or ANY)"
        );
        assert!(spec("{port: 'Web_Port'}").is_err());
    }

    #[test]
    fn cidrs() {
        let p = cidr_peer(
            "c",
            &y("10.0.0.0/8"),
            vec![("e[0]".into(), &y("10.1.0.0/16"))],
        )
        .unwrap();
        assert!(matches!(p, Peer::Cidr { ref except, .. } if except.len() == 1));
        let e = cidr_peer(
            "c",
            &y("10.0.0.0/8"),
            vec![("e[0]".into(), &y("11.0.0.0/16"))],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "e[0]: except \"11.0.0.0/16\" is not within cidr \"10.0.0.0/8\""
        );
        let e = cidr_peer("c", &y("10.0.0.0/33"), vec![]).unwrap_err();
        assert_eq!(e.to_string(), "c: invalid CIDR \"10.0.0.0/33\"");
    }
}
