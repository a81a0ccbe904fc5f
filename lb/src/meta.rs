//! Object metadata shared by every parsed kind, and the namespaced name of a Service.

use std::collections::BTreeMap;
use std::fmt;

use serde_yaml::Value;

use crate::error::ParseError;
use crate::field::{child, mapping, opt_str, string_map};

/// The parts of `metadata` this crate uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectMeta {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`; `None` for cluster-scoped objects or when absent.
    pub namespace: Option<String>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `metadata.creationTimestamp` as RFC 3339 text (the API server always writes
    /// `YYYY-MM-DDTHH:MM:SSZ`, so the text sorts chronologically).
    pub creation_timestamp: Option<String>,
}

impl ObjectMeta {
    /// Parses the `metadata` of a full object; `name` is required.
    pub fn parse(object: &Value) -> Result<Self, ParseError> {
        let md = child(object, "metadata").ok_or_else(|| ParseError::MissingField {
            path: "metadata".into(),
        })?;
        mapping(md, "metadata")?;
        let name = opt_str(md, "name", "metadata")?
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ParseError::MissingField {
                path: "metadata.name".into(),
            })?;
        Ok(Self {
            name: name.to_string(),
            namespace: opt_str(md, "namespace", "metadata")?.map(str::to_string),
            labels: string_map(md, "labels", "metadata")?,
            annotations: string_map(md, "annotations", "metadata")?,
            creation_timestamp: match child(md, "creationTimestamp") {
                None => None,
                Some(Value::String(s)) => Some(s.clone()),
                // serde_yaml never produces timestamps, but be lenient with other scalars.
                Some(other) => serde_yaml::to_string(other)
                    .ok()
                    .map(|s| s.trim().to_string()),
            },
        })
    }

    /// The namespace, defaulting to `default` as the API server does for namespaced objects.
    pub fn namespace_or_default(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

/// The namespaced name of a Service (`namespace/name`), as carried by frontends for flows'
/// `destination_service`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ServiceName {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ServiceName {
    /// Builds a name from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Checks `kind` when present: objects from a mixed YAML stream must not be misread.
pub(crate) fn expect_kind(object: &Value, kinds: &[&str]) -> Result<(), ParseError> {
    match opt_str(object, "kind", "")? {
        Some(k) if !kinds.contains(&k) => Err(ParseError::UnknownValue {
            path: "kind".into(),
            what: "kind",
            value: k.to_string(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_required() {
        let v: Value = serde_yaml::from_str("metadata: {namespace: x}").unwrap();
        assert_eq!(
            ObjectMeta::parse(&v).unwrap_err().to_string(),
            "metadata.name: required field is missing"
        );
    }

    #[test]
    fn namespace_defaults() {
        let v: Value = serde_yaml::from_str("metadata: {name: a}").unwrap();
        let m = ObjectMeta::parse(&v).unwrap();
        assert_eq!(m.namespace_or_default(), "default");
        assert_eq!(ServiceName::new("ns", "a").to_string(), "ns/a");
    }
}
