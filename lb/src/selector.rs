//! Kubernetes label selectors (`matchLabels` + `matchExpressions`), as used by an IP pool's
//! `spec.serviceSelector`.

use std::collections::BTreeMap;

use serde_yaml::Value;

use crate::error::ParseError;
use crate::field::{join, mapping, opt_str, seq, string_map, wrong};

/// A `matchExpressions` operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// The label's value is one of `values`.
    In,
    /// The label is absent or its value is none of `values`.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub operator: Operator,
    /// Values for `In`/`NotIn`.
    pub values: Vec<String>,
}

/// A label selector; the empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    /// `matchLabels`.
    pub match_labels: BTreeMap<String, String>,
    /// `matchExpressions`.
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses a selector mapping found at `path`.
    pub fn parse(v: &Value, path: &str) -> Result<Self, ParseError> {
        mapping(v, path)?;
        let match_labels = string_map(v, "matchLabels", path)?;
        let mut match_expressions = Vec::new();
        let exprs_path = join(path, "matchExpressions");
        for (i, e) in seq(v, "matchExpressions", path)?.iter().enumerate() {
            let p = format!("{exprs_path}[{i}]");
            mapping(e, &p)?;
            let key = opt_str(e, "key", &p)?
                .filter(|k| !k.is_empty())
                .ok_or_else(|| ParseError::MissingField {
                    path: join(&p, "key"),
                })?;
            let op_path = join(&p, "operator");
            let operator = match opt_str(e, "operator", &p)? {
                Some("In") => Operator::In,
                Some("NotIn") => Operator::NotIn,
                Some("Exists") => Operator::Exists,
                Some("DoesNotExist") => Operator::DoesNotExist,
                Some(other) => {
                    return Err(ParseError::UnknownValue {
                        path: op_path,
                        what: "operator",
                        value: other.to_string(),
                    })
                }
                None => return Err(ParseError::MissingField { path: op_path }),
            };
            let values_path = join(&p, "values");
            let mut values = Vec::new();
            for (j, val) in seq(e, "values", &p)?.iter().enumerate() {
                match val {
                    Value::String(s) => values.push(s.clone()),
                    _ => return Err(wrong(&format!("{values_path}[{j}]"), "a string")),
                }
            }
            let needs_values = matches!(operator, Operator::In | Operator::NotIn);
            if needs_values == values.is_empty() {
                return Err(ParseError::InvalidValue {
                    path: values_path,
                    reason: if needs_values {
                        "operator In/NotIn needs at least one value".into()
                    } else {
                        "operator Exists/DoesNotExist takes no values".into()
                    },
                });
            }
            match_expressions.push(Requirement {
                key: key.to_string(),
                operator,
                values,
            });
        }
        Ok(Self {
            match_labels,
            match_expressions,
        })
    }

    /// Whether `labels` satisfy every term.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let got = labels.get(&r.key);
                match r.operator {
                    Operator::In => got.is_some_and(|g| r.values.contains(g)),
                    Operator::NotIn => got.is_none_or(|g| !r.values.contains(g)),
                    Operator::Exists => got.is_some(),
                    Operator::DoesNotExist => got.is_none(),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(s: &str) -> Result<LabelSelector, ParseError> {
        LabelSelector::parse(&serde_yaml::from_str(s).unwrap(), "spec.serviceSelector")
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matches_labels_and_expressions() {
        let s = sel("{matchLabels: {color: blue}, matchExpressions: [{key: tier, operator: NotIn, values: [db]}]}").unwrap();
        assert!(s.matches(&labels(&[("color", "blue")])));
        assert!(s.matches(&labels(&[("color", "blue"), ("tier", "web")])));
        assert!(!s.matches(&labels(&[("color", "blue"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[])));
        assert!(sel("{}").unwrap().matches(&labels(&[])));
    }

    #[test]
    fn bad_operator_names_path() {
        let e = sel("{matchExpressions: [{key: a, operator: Like}]}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.serviceSelector.matchExpressions[0].operator: unknown operator \"Like\""
        );
        let e = sel("{matchExpressions: [{key: a, operator: In}]}").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("spec.serviceSelector.matchExpressions[0].values:"));
    }
}
