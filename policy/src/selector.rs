//! Label selectors (matchLabels + matchExpressions) and matching them against identity labels.

use std::collections::BTreeSet;

use crate::labels::{Label, NAMESPACE_KEY, SOURCE_K8S, SOURCE_RESERVED};

/// A `matchExpressions` operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operator {
    /// Key present with one of the values.
    In,
    /// Key absent or with none of the values.
    NotIn,
    /// Key present.
    Exists,
    /// Key absent.
    DoesNotExist,
}

impl Operator {
    /// Parses the operator name exactly as Kubernetes spells it.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            _ => return None,
        })
    }

    /// The operator's name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
        }
    }
}

/// One requirement on one label key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Requirement {
    /// Required label source; `None` matches any source.
    pub source: Option<String>,
    /// Label key.
    pub key: String,
    /// Operator.
    pub op: Operator,
    /// Values for In / NotIn.
    pub values: BTreeSet<String>,
}

impl Requirement {
    /// `source:key In [value]`.
    pub(crate) fn equals(source: Option<&str>, key: &str, value: &str) -> Self {
        Requirement {
            source: source.map(str::to_string),
            key: key.to_string(),
            op: Operator::In,
            values: BTreeSet::from([value.to_string()]),
        }
    }

    /// `source:key Exists`.
    pub(crate) fn exists(source: Option<&str>, key: &str) -> Self {
        Requirement {
            source: source.map(str::to_string),
            key: key.to_string(),
            op: Operator::Exists,
            values: BTreeSet::new(),
        }
    }

    fn matches(&self, labels: &[Label<'_>]) -> bool {
        let mut found = labels
            .iter()
            .filter(|l| l.key == self.key && self.source.as_deref().is_none_or(|s| s == l.source));
        match self.op {
            Operator::In => found.any(|l| self.values.contains(l.value)),
            Operator::NotIn => !found.any(|l| self.values.contains(l.value)),
            Operator::Exists => found.next().is_some(),
            Operator::DoesNotExist => found.next().is_none(),
        }
    }
}

/// A label selector: all requirements must hold. Empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selector {
    /// The AND-ed requirements.
    pub reqs: Vec<Requirement>,
}

impl Selector {
    /// Whether the labels satisfy every requirement.
    pub(crate) fn matches(&self, labels: &[Label<'_>]) -> bool {
        self.reqs.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector constrains the pod namespace (so no implicit namespace is added).
    pub(crate) fn constrains_namespace(&self) -> bool {
        self.reqs
            .iter()
            .any(|r| r.key == NAMESPACE_KEY && r.source.as_deref().is_none_or(|s| s == SOURCE_K8S))
    }

    /// Whether the selector targets reserved labels (Cilium never namespace-restricts those).
    pub(crate) fn targets_reserved(&self) -> bool {
        self.reqs
            .iter()
            .any(|r| r.source.as_deref() == Some(SOURCE_RESERVED))
    }

    /// Adds `k8s:io.kubernetes.pod.namespace=<ns>`.
    pub(crate) fn restrict_to_namespace(&mut self, ns: &str) {
        self.reqs
            .push(Requirement::equals(Some(SOURCE_K8S), NAMESPACE_KEY, ns));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(v: &[&'static str]) -> Vec<Label<'static>> {
        v.iter().map(|s| Label::parse(s)).collect()
    }

    fn req(source: Option<&str>, key: &str, op: Operator, values: &[&str]) -> Requirement {
        Requirement {
            source: source.map(str::to_string),
            key: key.into(),
            op,
            values: values.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn operators() {
        let l = labels(&["k8s:app=web", "k8s:io.kubernetes.pod.namespace=demo"]);
        let m = |r: Requirement| Selector { reqs: vec![r] }.matches(&l);
        assert!(m(req(None, "app", Operator::In, &["web", "db"])));
        assert!(!m(req(None, "app", Operator::In, &["db"])));
        assert!(m(req(None, "app", Operator::NotIn, &["db"])));
        assert!(m(req(None, "tier", Operator::NotIn, &["db"])));
        assert!(!m(req(None, "app", Operator::NotIn, &["web"])));
        assert!(m(req(None, "app", Operator::Exists, &[])));
        assert!(m(req(None, "tier", Operator::DoesNotExist, &[])));
        assert!(m(req(Some("k8s"), "app", Operator::In, &["web"])));
        assert!(!m(req(Some("reserved"), "app", Operator::In, &["web"])));
        assert!(Selector::default().matches(&l));
    }

    #[test]
    fn namespace_detection() {
        let s = Selector {
            reqs: vec![Requirement::equals(Some("k8s"), NAMESPACE_KEY, "a")],
        };
        assert!(s.constrains_namespace());
        let s = Selector {
            reqs: vec![Requirement::equals(Some("reserved"), "host", "")],
        };
        assert!(!s.constrains_namespace());
        assert!(s.targets_reserved());
    }
}
