//! The `discovery.k8s.io/v1 EndpointSlice` model and the merge of a service's slices.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_yaml::Value;

use crate::error::ParseError;
use crate::field::{child, ip, join, mapping, opt_bool, opt_port, opt_str, seq, wrong};
use crate::meta::{expect_kind, ObjectMeta, ServiceName};
use crate::protocol::Protocol;
use crate::service::IpFamily;

/// Label linking a slice to its Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// `conditions` of an endpoint, with the API's defaults for absent values applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointConditions {
    /// `ready`; absent means true.
    pub ready: bool,
    /// `serving`; absent means true.
    pub serving: bool,
    /// `terminating`; absent means false.
    pub terminating: bool,
}

impl Default for EndpointConditions {
    fn default() -> Self {
        Self {
            ready: true,
            serving: true,
            terminating: false,
        }
    }
}

/// An endpoint's `targetRef` (usually the backing pod).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TargetRef {
    /// `kind` (e.g. `Pod`).
    pub kind: Option<String>,
    /// `namespace`.
    pub namespace: Option<String>,
    /// `name`.
    pub name: Option<String>,
}

/// One entry of a slice's `ports`. The EndpointSlice controller names it after the
/// *service* port and sets `port` to the resolved target port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointPort {
    /// `name` (empty string and absent are the same: the unnamed port).
    pub name: Option<String>,
    /// `protocol`, default TCP.
    pub protocol: Protocol,
    /// `port`; absent means "all ports" in the API, which no frontend can use.
    pub port: Option<u16>,
}

/// One entry of a slice's `endpoints`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `addresses`; consumers use the first one (the others are fungible per the API).
    pub addresses: Vec<IpAddr>,
    /// `conditions`.
    pub conditions: EndpointConditions,
    /// `nodeName`.
    pub node_name: Option<String>,
    /// `zone`.
    pub zone: Option<String>,
    /// `targetRef`.
    pub target_ref: Option<TargetRef>,
}

/// A parsed EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSlice {
    /// Metadata.
    pub meta: ObjectMeta,
    /// `addressType` (FQDN slices are rejected as unsupported).
    pub family: IpFamily,
    /// `endpoints`.
    pub endpoints: Vec<Endpoint>,
    /// `ports`; they apply to every endpoint of this slice.
    pub ports: Vec<EndpointPort>,
}

impl EndpointSlice {
    /// Parses a full EndpointSlice object (`kind`, when present, must be `EndpointSlice`).
    pub fn parse(object: &Value) -> Result<Self, ParseError> {
        expect_kind(object, &["EndpointSlice"])?;
        mapping(object, "")?;
        let meta = ObjectMeta::parse(object)?;
        let family = match opt_str(object, "addressType", "")? {
            Some("IPv4") => IpFamily::V4,
            Some("IPv6") => IpFamily::V6,
            Some("FQDN") => {
                return Err(ParseError::Unsupported {
                    path: "addressType".into(),
                    what: "address type FQDN (deprecated, ignored by kube-proxy)".into(),
                })
            }
            Some(other) => {
                return Err(ParseError::UnknownValue {
                    path: "addressType".into(),
                    what: "address type",
                    value: other.to_string(),
                })
            }
            None => {
                return Err(ParseError::MissingField {
                    path: "addressType".into(),
                })
            }
        };
        let endpoints = seq(object, "endpoints", "")?
            .iter()
            .enumerate()
            .map(|(i, e)| parse_endpoint(e, &format!("endpoints[{i}]"), family))
            .collect::<Result<Vec<_>, _>>()?;
        let ports = seq(object, "ports", "")?
            .iter()
            .enumerate()
            .map(|(i, p)| parse_port(p, &format!("ports[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            meta,
            family,
            endpoints,
            ports,
        })
    }

    /// The Service this slice belongs to: its namespace and the `kubernetes.io/service-name`
    /// label. `None` for slices without the label.
    pub fn service(&self) -> Option<ServiceName> {
        self.meta
            .labels
            .get(LABEL_SERVICE_NAME)
            .map(|n| ServiceName::new(self.meta.namespace_or_default(), n.clone()))
    }
}

fn parse_endpoint(v: &Value, path: &str, family: IpFamily) -> Result<Endpoint, ParseError> {
    mapping(v, path)?;
    let addr_path = join(path, "addresses");
    let mut addresses = Vec::new();
    for (i, a) in seq(v, "addresses", path)?.iter().enumerate() {
        let p = format!("{addr_path}[{i}]");
        let Value::String(s) = a else {
            return Err(wrong(&p, "a string"));
        };
        let a = ip(s, &p)?;
        if IpFamily::of(&a) != family {
            return Err(ParseError::InvalidValue {
                path: p,
                reason: format!("address {a} does not match the slice's addressType"),
            });
        }
        addresses.push(a);
    }
    if addresses.is_empty() {
        return Err(ParseError::MissingField { path: addr_path });
    }
    let conditions = match child(v, "conditions") {
        None => EndpointConditions::default(),
        Some(c) => {
            let p = join(path, "conditions");
            mapping(c, &p)?;
            EndpointConditions {
                ready: opt_bool(c, "ready", &p)?.unwrap_or(true),
                serving: opt_bool(c, "serving", &p)?.unwrap_or(true),
                terminating: opt_bool(c, "terminating", &p)?.unwrap_or(false),
            }
        }
    };
    let target_ref = match child(v, "targetRef") {
        None => None,
        Some(t) => {
            let p = join(path, "targetRef");
            mapping(t, &p)?;
            Some(TargetRef {
                kind: opt_str(t, "kind", &p)?.map(str::to_string),
                namespace: opt_str(t, "namespace", &p)?.map(str::to_string),
                name: opt_str(t, "name", &p)?.map(str::to_string),
            })
        }
    };
    Ok(Endpoint {
        addresses,
        conditions,
        node_name: opt_str(v, "nodeName", path)?.map(str::to_string),
        zone: opt_str(v, "zone", path)?.map(str::to_string),
        target_ref,
    })
}

fn parse_port(v: &Value, path: &str) -> Result<EndpointPort, ParseError> {
    mapping(v, path)?;
    Ok(EndpointPort {
        name: opt_str(v, "name", path)?
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        protocol: match opt_str(v, "protocol", path)? {
            None => Protocol::Tcp,
            Some(s) => Protocol::parse(s, &join(path, "protocol"))?,
        },
        port: opt_port(v, "port", path)?,
    })
}

/// An endpoint after merging all slices of a service, keyed by its first address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedEndpoint {
    /// The endpoint's address (the first of its `addresses`).
    pub address: IpAddr,
    /// Conditions.
    pub conditions: EndpointConditions,
    /// `nodeName`.
    pub node_name: Option<String>,
    /// `targetRef`.
    pub target_ref: Option<TargetRef>,
    /// The ports of the slice(s) the endpoint appeared in.
    pub ports: Vec<EndpointPort>,
}

/// Merges every slice that belongs to `service` (by namespace and
/// `kubernetes.io/service-name`), sorted by address.
///
/// An address can appear in two slices while the controller moves it; the copy from the
/// slice whose name sorts first wins, except that a ready copy beats a non-ready one (the
/// newer state is usually the ready one during a rollout). Ports of both copies are kept.
pub fn merge_slices(service: &ServiceName, slices: &[EndpointSlice]) -> Vec<MergedEndpoint> {
    let mut ordered: Vec<&EndpointSlice> = slices
        .iter()
        .filter(|s| s.service().as_ref() == Some(service))
        .collect();
    ordered.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
    let mut out: BTreeMap<IpAddr, MergedEndpoint> = BTreeMap::new();
    for slice in ordered {
        for ep in &slice.endpoints {
            let Some(&address) = ep.addresses.first() else {
                continue;
            };
            match out.get_mut(&address) {
                Some(existing) => {
                    if ep.conditions.ready && !existing.conditions.ready {
                        existing.conditions = ep.conditions;
                        existing.node_name.clone_from(&ep.node_name);
                        existing.target_ref.clone_from(&ep.target_ref);
                    }
                    for p in &slice.ports {
                        if !existing.ports.contains(p) {
                            existing.ports.push(p.clone());
                        }
                    }
                }
                None => {
                    out.insert(
                        address,
                        MergedEndpoint {
                            address,
                            conditions: ep.conditions,
                            node_name: ep.node_name.clone(),
                            target_ref: ep.target_ref.clone(),
                            ports: slice.ports.clone(),
                        },
                    );
                }
            }
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(s: &str) -> Result<EndpointSlice, ParseError> {
        EndpointSlice::parse(&serde_yaml::from_str(s).unwrap())
    }

    #[test]
    fn condition_defaults_follow_the_api() {
        let s = slice("metadata: {name: s, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}, {addresses: [10.0.0.2], conditions: {ready: false, terminating: true}}]").unwrap();
        assert_eq!(
            s.endpoints[0].conditions,
            EndpointConditions {
                ready: true,
                serving: true,
                terminating: false
            }
        );
        assert_eq!(
            s.endpoints[1].conditions,
            EndpointConditions {
                ready: false,
                serving: true,
                terminating: true
            }
        );
        assert_eq!(s.service(), Some(ServiceName::new("default", "web")));
    }

    #[test]
    fn errors_name_field_paths() {
        let e =
            slice("metadata: {name: s}\naddressType: IPv6\nendpoints: [{addresses: [10.0.0.1]}]")
                .unwrap_err();
        assert_eq!(
            e.to_string(),
            "endpoints[0].addresses[0]: address 10.0.0.1 does not match the slice's addressType"
        );
        let e = slice("metadata: {name: s}\naddressType: FQDN").unwrap_err();
        assert!(matches!(e, ParseError::Unsupported { .. }));
        let e =
            slice("metadata: {name: s}\naddressType: IPv4\nports: [{port: 80, protocol: ICMP}]")
                .unwrap_err();
        assert_eq!(
            e.to_string(),
            "ports[0].protocol: unknown protocol \"ICMP\""
        );
    }

    #[test]
    fn merge_dedups_and_filters_by_service() {
        let a = slice("metadata: {name: a, namespace: n, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.2], conditions: {ready: false}}, {addresses: [10.0.0.1]}]\nports: [{name: http, port: 8080}]").unwrap();
        let b = slice("metadata: {name: b, namespace: n, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.2]}]\nports: [{name: http, port: 8080}]").unwrap();
        let other = slice("metadata: {name: c, namespace: other, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nendpoints: [{addresses: [10.9.9.9]}]").unwrap();
        let m = merge_slices(&ServiceName::new("n", "web"), &[b, other, a]);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].address.to_string(), "10.0.0.1");
        assert!(m[1].conditions.ready);
        assert_eq!(m[1].ports.len(), 1);
    }
}
