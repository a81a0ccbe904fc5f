//! Typed, path-aware access to fields of a `serde_yaml::Value`, so every parse error names
//! the field it is about.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_yaml::{Mapping, Value};

use crate::error::ParseError;

/// Joins a parent path and a key (`"spec"` + `"ports"` → `"spec.ports"`).
pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `v` as a mapping; `Null` counts as an empty mapping.
pub(crate) fn mapping<'a>(v: &'a Value, path: &str) -> Result<Option<&'a Mapping>, ParseError> {
    match v {
        Value::Null => Ok(None),
        Value::Mapping(m) => Ok(Some(m)),
        _ => Err(wrong(path, "a mapping")),
    }
}

/// The child `key` of mapping `v`, or `None` when absent or null.
pub(crate) fn child<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v.get(key) {
        None | Some(Value::Null) => None,
        some => some,
    }
}

/// An optional string field.
pub(crate) fn opt_str<'a>(
    v: &'a Value,
    key: &str,
    parent: &str,
) -> Result<Option<&'a str>, ParseError> {
    match child(v, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(wrong(&join(parent, key), "a string")),
    }
}

/// An optional boolean field.
pub(crate) fn opt_bool(v: &Value, key: &str, parent: &str) -> Result<Option<bool>, ParseError> {
    match child(v, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(wrong(&join(parent, key), "a boolean")),
    }
}

/// An optional integer field within `min..=max`.
pub(crate) fn opt_int(
    v: &Value,
    key: &str,
    parent: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, ParseError> {
    let path = join(parent, key);
    match child(v, key) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) if (min..=max).contains(&i) => Ok(Some(i)),
            _ => Err(ParseError::InvalidValue {
                path,
                reason: format!("{n} is out of range {min}..={max}"),
            }),
        },
        Some(_) => Err(wrong(&path, "an integer")),
    }
}

/// An optional port number (1..=65535).
pub(crate) fn opt_port(v: &Value, key: &str, parent: &str) -> Result<Option<u16>, ParseError> {
    // The range check guarantees the conversion succeeds.
    Ok(opt_int(v, key, parent, 1, 65535)?.and_then(|p| u16::try_from(p).ok()))
}

/// An optional sequence field; absent and null give an empty slice.
pub(crate) fn seq<'a>(v: &'a Value, key: &str, parent: &str) -> Result<&'a [Value], ParseError> {
    match child(v, key) {
        None => Ok(&[]),
        Some(Value::Sequence(s)) => Ok(s),
        Some(_) => Err(wrong(&join(parent, key), "a list")),
    }
}

/// An optional `map[string]string` field (labels, annotations, matchLabels).
pub(crate) fn string_map(
    v: &Value,
    key: &str,
    parent: &str,
) -> Result<BTreeMap<String, String>, ParseError> {
    let path = join(parent, key);
    let mut out = BTreeMap::new();
    let Some(m) = child(v, key) else {
        return Ok(out);
    };
    let Some(m) = mapping(m, &path)? else {
        return Ok(out);
    };
    for (k, val) in m {
        let Value::String(k) = k else {
            return Err(wrong(&path, "string keys"));
        };
        let val = match val {
            Value::String(s) => s.clone(),
            // YAML turns `true`/`8080` into non-strings; Kubernetes would reject them, but
            // their text is unambiguous, so accept it.
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Null => String::new(),
            _ => return Err(wrong(&format!("{path}[\"{k}\"]"), "a string")),
        };
        out.insert(k.clone(), val);
    }
    Ok(out)
}

/// Parses an IP address string, naming `path` on failure.
pub(crate) fn ip(s: &str, path: &str) -> Result<IpAddr, ParseError> {
    s.trim().parse().map_err(|_| ParseError::InvalidValue {
        path: path.to_string(),
        reason: format!("invalid IP address \"{s}\""),
    })
}

/// A [`ParseError::WrongType`] for `path`.
pub(crate) fn wrong(path: &str, expected: &'static str) -> ParseError {
    ParseError::WrongType {
        path: path.to_string(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Value {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn ports_are_range_checked_with_path() {
        let v = y("port: 70000");
        let e = opt_port(&v, "port", "spec.ports[0]").unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.ports[0].port: 70000 is out of range 1..=65535"
        );
        assert_eq!(opt_port(&y("port: 80"), "port", "").unwrap(), Some(80));
        assert_eq!(opt_port(&y("{}"), "port", "").unwrap(), None);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e = seq(&y("ports: 3"), "ports", "spec").unwrap_err();
        assert_eq!(e.to_string(), "spec.ports: expected a list");
        let e = opt_str(&y("name: [a]"), "name", "metadata").unwrap_err();
        assert_eq!(e.to_string(), "metadata.name: expected a string");
    }

    #[test]
    fn string_maps_accept_scalar_values() {
        let m = string_map(&y("labels: {a: b, c: true, d: 3}"), "labels", "metadata").unwrap();
        assert_eq!(m["a"], "b");
        assert_eq!(m["c"], "true");
        assert_eq!(m["d"], "3");
    }
}
