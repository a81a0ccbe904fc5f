//! Kubernetes object filters: `source_pod` / `destination_pod`, `source_service` /
//! `destination_service`, `source_workload` / `destination_workload`,
//! `source_cluster_name` / `destination_cluster_name` and the security identities.
//!
//! Pods and services use Hubble's `[namespace/][name-prefix]` syntax:
//! - `shop/frontend-` selects the pods of namespace `shop` whose name starts with
//!   `frontend-`;
//! - `shop/` selects every pod of namespace `shop`;
//! - `frontend-` (no slash) means namespace `default`, as in Hubble (`default/frontend-`);
//! - `/name` selects objects that have no namespace;
//! - anything after a second slash is ignored (`a/b/c` is `a/b`), as in Hubble;
//! - `""` and `"/"` are errors.
//!
//! The namespace compares exactly, the name by prefix. An endpoint with neither namespace
//! nor name (e.g. `reserved:world`) never matches.

use lumen_api::flow::{Endpoint, Flow, Service, Workload};

use crate::error::FilterError;

/// The namespace Hubble assumes when a pod or service filter names none.
pub(crate) const DEFAULT_NAMESPACE: &str = "default";

/// Which end of the flow a filter looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// `Flow.source` / `source_service` / `source_names`.
    Source,
    /// `Flow.destination` / `destination_service` / `destination_names`.
    Destination,
}

impl Side {
    pub(crate) fn endpoint(self, flow: &Flow) -> Option<&Endpoint> {
        match self {
            Side::Source => flow.source.as_ref(),
            Side::Destination => flow.destination.as_ref(),
        }
    }

    pub(crate) fn service(self, flow: &Flow) -> Option<&Service> {
        match self {
            Side::Source => flow.source_service.as_ref(),
            Side::Destination => flow.destination_service.as_ref(),
        }
    }
}

/// What a [`NamespacedNameFilter`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NamedObject {
    /// The endpoint's `namespace` and `pod_name`.
    Pod(Side),
    /// The service's `namespace` and `name`.
    Service(Side),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NamePattern {
    namespace: String,
    prefix: String,
}

/// Splits a `[namespace/][name]` value as Hubble does; `None` when both parts are empty.
fn parse_namespaced_name(value: &str) -> Option<NamePattern> {
    let mut parts = value.split('/');
    let first = parts.next().unwrap_or_default();
    let (namespace, prefix) = match parts.next() {
        Some(name) => (first, name),
        None if first.is_empty() => ("", ""),
        None => (DEFAULT_NAMESPACE, first),
    };
    if namespace.is_empty() && prefix.is_empty() {
        return None;
    }
    Some(NamePattern {
        namespace: namespace.to_owned(),
        prefix: prefix.to_owned(),
    })
}

/// A compiled pod or service filter: ORed `[namespace/][name-prefix]` patterns.
#[derive(Debug, Clone)]
pub(crate) struct NamespacedNameFilter {
    object: NamedObject,
    patterns: Vec<NamePattern>,
}

impl NamespacedNameFilter {
    pub(crate) fn compile(
        object: NamedObject,
        field: &'static str,
        values: &[String],
    ) -> Result<Self, FilterError> {
        let patterns = values
            .iter()
            .map(|value| {
                parse_namespaced_name(value).ok_or_else(|| FilterError::InvalidName {
                    field,
                    value: value.clone(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { object, patterns })
    }

    pub(crate) fn matches(&self, flow: &Flow) -> bool {
        let (namespace, name) = match self.object {
            NamedObject::Pod(side) => side
                .endpoint(flow)
                .map_or(("", ""), |ep| (ep.namespace.as_str(), ep.pod_name.as_str())),
            NamedObject::Service(side) => side
                .service(flow)
                .map_or(("", ""), |svc| (svc.namespace.as_str(), svc.name.as_str())),
        };
        if namespace.is_empty() && name.is_empty() {
            return false;
        }
        self.patterns
            .iter()
            .any(|p| p.namespace == namespace && name.starts_with(p.prefix.as_str()))
    }
}

/// `source_workload` / `destination_workload`: one of the endpoint's workloads has the
/// filter's name (when set) and kind (when set). An empty `Workload` filter matches any
/// endpoint that has a workload.
pub(crate) fn workload_matches(side: Side, filters: &[Workload], flow: &Flow) -> bool {
    let Some(ep) = side.endpoint(flow) else {
        return false;
    };
    ep.workloads.iter().any(|w| {
        filters.iter().any(|f| {
            (f.name.is_empty() || f.name == w.name) && (f.kind.is_empty() || f.kind == w.kind)
        })
    })
}

/// Checks that no cluster name is empty (Hubble refuses them).
pub(crate) fn validate_cluster_names(
    field: &'static str,
    names: &[String],
) -> Result<(), FilterError> {
    match names.iter().find(|n| n.is_empty()) {
        Some(n) => Err(FilterError::Empty {
            field,
            value: n.clone(),
        }),
        None => Ok(()),
    }
}

/// `source_cluster_name` / `destination_cluster_name`: the endpoint's `cluster_name` is
/// exactly one of the names.
pub(crate) fn cluster_name_matches(side: Side, names: &[String], flow: &Flow) -> bool {
    side.endpoint(flow)
        .is_some_and(|ep| names.contains(&ep.cluster_name))
}

/// `source_identity` / `destination_identity`: the endpoint exists and its security
/// identity is one of the listed ones.
pub(crate) fn identity_matches(side: Side, identities: &[u32], flow: &Flow) -> bool {
    side.endpoint(flow)
        .is_some_and(|ep| identities.contains(&ep.identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ns: &str, prefix: &str) -> Option<NamePattern> {
        Some(NamePattern {
            namespace: ns.into(),
            prefix: prefix.into(),
        })
    }

    #[test]
    fn namespaced_name_syntax() {
        assert_eq!(parse_namespaced_name("shop/front"), p("shop", "front"));
        assert_eq!(parse_namespaced_name("shop/"), p("shop", ""));
        assert_eq!(parse_namespaced_name("front"), p("default", "front"));
        assert_eq!(parse_namespaced_name("/front"), p("", "front"));
        assert_eq!(parse_namespaced_name("a/b/c"), p("a", "b"));
        assert_eq!(parse_namespaced_name(""), None);
        assert_eq!(parse_namespaced_name("/"), None);
    }
}
