//! Name patterns: `source_fqdn` / `destination_fqdn` and `node_name`.
//!
//! An FQDN pattern is a DNS name in which `*` stands for any run (possibly empty) of
//! letters, digits, `-`, `_` and `.`, so `*.example.com` matches `api.example.com` and
//! `a.b.example.com` (Hubble's `*` also crosses dots). Patterns are trimmed, one trailing dot
//! is dropped, and matching is ASCII case-insensitive; names in the flow
//! (`source_names` / `destination_names`) may carry a trailing dot too. Letters, digits,
//! `-`, `_`, `.` and `*` are the only characters allowed.
//!
//! A node-name pattern is `[cluster-pattern/]node-pattern`, each part an FQDN pattern, an
//! empty part meaning "any": `lab/node-*` matches node `node-1` of cluster `lab`, `node-1`
//! (no slash) matches `node-1` in any cluster, `lab/` every node of cluster `lab`. A flow
//! whose `node_name` carries no cluster (`node-1`) belongs to cluster `default`, as in
//! Hubble. More than one slash is an error.

use lumen_api::flow::Flow;
use regex::Regex;

use crate::error::FilterError;
use crate::k8s::Side;

/// The cluster of a node name that names none (Cilium's default cluster name).
pub(crate) const DEFAULT_CLUSTER: &str = "default";

/// Appends the regular expression of one FQDN pattern to `out`; the error is a reason.
fn push_fqdn_pattern(out: &mut String, pattern: &str) -> Result<(), String> {
    let pattern = pattern.trim();
    let pattern = pattern.strip_suffix('.').unwrap_or(pattern);
    if pattern.is_empty() {
        return Err("empty pattern".into());
    }
    if pattern.ends_with('.') {
        return Err("more than one trailing dot".into());
    }
    for c in pattern.chars() {
        match c {
            '.' => out.push_str(r"\."),
            '*' => out.push_str("[-._0-9a-z]*"),
            '-' | '_' => out.push(c),
            c if c.is_ascii_alphanumeric() => out.push(c.to_ascii_lowercase()),
            c => {
                return Err(format!(
                    "invalid character {c:?} (only letters, digits, '-', '_', '.' and '*')"
                ))
            }
        }
    }
    Ok(())
}

/// Compiles ORed FQDN patterns into one anchored, ASCII case-insensitive regex.
fn compile_alternatives<'a>(
    patterns: impl IntoIterator<Item = &'a str>,
) -> Result<Regex, (String, String)> {
    let mut re = String::from(r"(?i-u)\A(?:");
    for (i, p) in patterns.into_iter().enumerate() {
        if i > 0 {
            re.push('|');
        }
        push_fqdn_pattern(&mut re, p).map_err(|reason| (p.to_owned(), reason))?;
    }
    re.push_str(r")\z");
    Regex::new(&re).map_err(|e| (String::new(), e.to_string()))
}

/// Drops one trailing dot of a DNS name.
fn strip_root(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

/// A compiled `source_fqdn` / `destination_fqdn` filter.
#[derive(Debug, Clone)]
pub(crate) struct FqdnFilter {
    side: Side,
    regex: Regex,
}

impl FqdnFilter {
    pub(crate) fn compile(
        side: Side,
        field: &'static str,
        values: &[String],
    ) -> Result<Self, FilterError> {
        let regex = compile_alternatives(values.iter().map(String::as_str)).map_err(
            |(value, reason)| FilterError::InvalidPattern {
                field,
                value,
                reason,
            },
        )?;
        Ok(Self { side, regex })
    }

    pub(crate) fn matches(&self, flow: &Flow) -> bool {
        let names = match self.side {
            Side::Source => &flow.source_names,
            Side::Destination => &flow.destination_names,
        };
        names.iter().any(|n| self.regex.is_match(strip_root(n)))
    }
}

/// Whether `s` looks like a DNS name (what an empty node-name pattern part matches).
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// One `[cluster/]node` pattern; `None` parts match any DNS name.
#[derive(Debug, Clone)]
struct NodeNamePattern {
    cluster: Option<Regex>,
    node: Option<Regex>,
}

fn part_matches(re: &Option<Regex>, s: &str) -> bool {
    match re {
        Some(re) => re.is_match(s),
        None => is_dns_name(s),
    }
}

/// A compiled `node_name` filter: ORed `[cluster/]node` patterns.
#[derive(Debug, Clone)]
pub(crate) struct NodeNameFilter {
    patterns: Vec<NodeNamePattern>,
}

impl NodeNameFilter {
    pub(crate) fn compile(field: &'static str, values: &[String]) -> Result<Self, FilterError> {
        let invalid = |value: &String, reason: String| FilterError::InvalidPattern {
            field,
            value: value.clone(),
            reason,
        };
        let part = |value: &String, p: &str| -> Result<Option<Regex>, FilterError> {
            if p.is_empty() {
                return Ok(None);
            }
            compile_alternatives([p])
                .map(Some)
                .map_err(|(_, reason)| invalid(value, reason))
        };
        let mut patterns = Vec::with_capacity(values.len());
        for value in values {
            if value.is_empty() {
                return Err(invalid(value, "empty pattern".into()));
            }
            let parts: Vec<&str> = value.split('/').collect();
            let (cluster, node) = match parts.as_slice() {
                [node] => ("", *node),
                [cluster, node] => (*cluster, *node),
                _ => return Err(invalid(value, "more than one '/'".into())),
            };
            patterns.push(NodeNamePattern {
                cluster: part(value, cluster)?,
                node: part(value, node)?,
            });
        }
        Ok(Self { patterns })
    }

    pub(crate) fn matches(&self, flow: &Flow) -> bool {
        let name = flow.node_name.as_str();
        if name.is_empty() {
            return false;
        }
        let (cluster, node) = name.split_once('/').unwrap_or((DEFAULT_CLUSTER, name));
        self.patterns
            .iter()
            .any(|p| part_matches(&p.cluster, cluster) && part_matches(&p.node, node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fqdn(patterns: &[&str], name: &str) -> bool {
        let values: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        let f = FqdnFilter::compile(Side::Destination, "destination_fqdn", &values).unwrap();
        let flow = Flow {
            destination_names: vec![name.into()],
            ..Default::default()
        };
        f.matches(&flow)
    }

    fn node(patterns: &[&str], name: &str) -> bool {
        let values: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        let f = NodeNameFilter::compile("node_name", &values).unwrap();
        let flow = Flow {
            node_name: name.into(),
            ..Default::default()
        };
        f.matches(&flow)
    }

    #[test]
    fn fqdn_patterns() {
        assert!(fqdn(&["api.example.com"], "api.example.com"));
        assert!(fqdn(&["api.example.com."], "api.example.com"));
        assert!(fqdn(&["API.Example.com"], "api.example.com."));
        assert!(fqdn(&["api.example.com"], "API.EXAMPLE.COM"));
        assert!(fqdn(&["*.example.com"], "api.example.com"));
        assert!(fqdn(&["*.example.com"], "a.b.example.com"));
        assert!(!fqdn(&["*.example.com"], "example.com"));
        assert!(!fqdn(&["*.example.com"], "api.example.org"));
        assert!(fqdn(&["nope.org", "*.example.*"], "www.example.net"));
        assert!(!fqdn(&["api.example.com"], "xapi.example.com"));
        assert!(!fqdn(&["api.example.com"], "apixexample.com"));
        for bad in ["", ".", "a..", "a b.com", "a/b", "ex(ample)"] {
            let values = vec![bad.to_string()];
            let err = FqdnFilter::compile(Side::Source, "source_fqdn", &values).unwrap_err();
            assert_eq!(err.field(), "source_fqdn");
            assert_eq!(err.value(), bad);
        }
    }

    #[test]
    fn node_name_patterns() {
        assert!(node(&["lab/node-*"], "lab/node-1"));
        assert!(!node(&["lab/node-*"], "prod/node-1"));
        assert!(!node(&["lab/node-*"], "node-1"));
        assert!(node(&["node-1"], "lab/node-1"));
        assert!(node(&["node-1"], "node-1"));
        assert!(!node(&["node-1"], "lab/node-10"));
        assert!(node(&["default/node-1"], "node-1"));
        assert!(node(&["lab/"], "lab/anything.example"));
        assert!(node(&["/node-2"], "x/node-2"));
        assert!(node(&["*/node-2"], "x/node-2"));
        assert!(node(&["LAB/Node-*"], "lab/node-3"));
        assert!(!node(&["node-*"], ""));
        for bad in ["", "a/b/c", "lab/no de", "a..//"] {
            let values = vec![bad.to_string()];
            let err = NodeNameFilter::compile("node_name", &values).unwrap_err();
            assert_eq!(err.field(), "node_name");
            assert_eq!(err.value(), bad);
        }
    }
}
