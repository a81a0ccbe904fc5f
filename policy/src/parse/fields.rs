//! Path-tracking access to YAML mappings: unknown-field checks and typed getters.

use serde_yaml::{Mapping, Value};

use crate::error::PolicyError;

/// A YAML mapping at a known field path, whose keys have been checked against a schema.
pub(crate) struct Obj<'a> {
    /// Path of the mapping itself (e.g. `spec.ingress[0]`).
    pub path: String,
    map: Option<&'a Mapping>,
}

/// A list element with its path.
pub(crate) type Elem<'a> = (String, &'a Value);

impl<'a> Obj<'a> {
    /// Views `value` as a mapping whose keys must all be in `allowed`. Null is an empty mapping.
    pub(crate) fn new(path: &str, value: &'a Value, allowed: &[&str]) -> Result<Self, PolicyError> {
        let map = match value {
            Value::Null => None,
            Value::Mapping(m) => Some(m),
            _ => return Err(wrong_type(path, "a mapping")),
        };
        for k in map.into_iter().flat_map(|m| m.keys()) {
            let Some(k) = k.as_str() else {
                return Err(wrong_type(path, "string keys"));
            };
            if !allowed.contains(&k) {
                return Err(PolicyError::UnknownField {
                    path: join(path, k),
                });
            }
        }
        Ok(Obj {
            path: path.to_string(),
            map,
        })
    }

    /// Views `value` as a mapping with arbitrary keys (e.g. `matchLabels`). Null is empty.
    pub(crate) fn new_open(path: &str, value: &'a Value) -> Result<Self, PolicyError> {
        match value {
            Value::Null => Ok(Obj {
                path: path.to_string(),
                map: None,
            }),
            Value::Mapping(m) => Ok(Obj {
                path: path.to_string(),
                map: Some(m),
            }),
            _ => Err(wrong_type(path, "a mapping")),
        }
    }

    /// Path of a field of this mapping.
    pub(crate) fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The field's value; `None` when absent or null.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(key)).filter(|v| !v.is_null())
    }

    /// Whether the field is set (not absent, not null).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The field as a list of elements with paths; `None` when absent or null.
    pub(crate) fn list(&self, key: &str) -> Result<Option<Vec<Elem<'a>>>, PolicyError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let path = self.path_of(key);
        let Value::Sequence(seq) = v else {
            return Err(wrong_type(&path, "a list"));
        };
        Ok(Some(
            seq.iter()
                .enumerate()
                .map(|(i, v)| (format!("{path}[{i}]"), v))
                .collect(),
        ))
    }

    /// The field as a list, empty when absent.
    pub(crate) fn list_or_empty(&self, key: &str) -> Result<Vec<Elem<'a>>, PolicyError> {
        Ok(self.list(key)?.unwrap_or_default())
    }

    /// The field as a string (numbers and booleans are spelled out).
    pub(crate) fn string(&self, key: &str) -> Result<Option<String>, PolicyError> {
        self.get(key)
            .map(|v| scalar_string(&self.path_of(key), v))
            .transpose()
    }

    /// The field as a boolean.
    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, PolicyError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(wrong_type(&self.path_of(key), "true or false")),
        }
    }

    /// The mapping's entries as (key, scalar string value) pairs; used for `matchLabels`.
    pub(crate) fn string_map(&self) -> Result<Vec<(String, String)>, PolicyError> {
        let mut out = Vec::new();
        for (k, v) in self.map.into_iter().flat_map(|m| m.iter()) {
            let Some(k) = k.as_str() else {
                return Err(wrong_type(&self.path, "string keys"));
            };
            let v = if v.is_null() {
                String::new()
            } else {
                scalar_string(&join(&self.path, k), v)?
            };
            out.push((k.to_string(), v));
        }
        Ok(out)
    }
}

/// A scalar as a string; lists and mappings are a type error.
pub(crate) fn scalar_string(path: &str, v: &Value) -> Result<String, PolicyError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(wrong_type(path, "a string")),
    }
}

/// A `WrongType` error.
pub(crate) fn wrong_type(path: &str, expected: &'static str) -> PolicyError {
    PolicyError::WrongType {
        path: path.to_string(),
        expected,
    }
}

fn join(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_is_named() {
        let v: Value = serde_yaml::from_str("{a: 1, b: 2}").unwrap();
        let err = Obj::new("spec.x[0]", &v, &["a"]).err().unwrap();
        assert_eq!(err.to_string(), "spec.x[0].b: unknown field");
    }

    #[test]
    fn typed_getters() {
        let v: Value = serde_yaml::from_str("{a: [1, 2], s: 5, b: true, n: null}").unwrap();
        let o = Obj::new("p", &v, &["a", "s", "b", "n"]).unwrap();
        let l = o.list("a").unwrap().unwrap();
        assert_eq!(l[1].0, "p.a[1]");
        assert_eq!(o.string("s").unwrap().as_deref(), Some("5"));
        assert_eq!(o.bool("b").unwrap(), Some(true));
        assert!(!o.has("n"));
        assert_eq!(
            o.list("s").err().unwrap().to_string(),
            "p.s: expected a list"
        );
        assert_eq!(
            o.string("a").err().unwrap().to_string(),
            "p.a: expected a string"
        );
    }
}
