//! The part of a request's whitelist a backend can evaluate on its indexed columns.
//!
//! Hubble's whitelist is an OR of filters, each an AND of fields, each an OR of values. A
//! [`Prefilter`] keeps that shape with only the fields expressible on columns (pods,
//! exact IPs, verdicts, identities). Dropping a field widens a filter, and a filter left
//! with no field matches everything, so the prefilter always selects a superset of the
//! matching flows: the relay applies the exact semantics (`lumen-filter`, blacklist
//! included) to what it returns.

use lumen_api::flow::FlowFilter;

/// Which end of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `src_*` columns.
    Source,
    /// `dst_*` columns.
    Destination,
}

/// One value test on columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// `namespace` equal and the pod name starting with `prefix` (Hubble's `ns/prefix`).
    Pod {
        /// Which end.
        side: Side,
        /// Exact namespace.
        namespace: String,
        /// Pod name prefix (may be empty).
        prefix: String,
    },
    /// The IP equal to this text.
    Ip(Side, String),
    /// The security identity.
    Identity(Side, u32),
    /// The verdict.
    Verdict(i32),
}

/// Values of one field, ORed.
pub type AnyOf = Vec<Cond>;

/// A whitelist pre-selection: rows matching one of `filters` (each a list of fields ANDed);
/// no filter: every row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefilter {
    /// ORed filters, each the AND of its fields.
    pub filters: Vec<Vec<AnyOf>>,
}

/// Namespace used by Hubble for a pod value without one.
const DEFAULT_NAMESPACE: &str = "default";

fn pods(side: Side, values: &[String]) -> Option<AnyOf> {
    values
        .iter()
        .map(|v| {
            let (namespace, prefix) = match v.split_once('/') {
                Some((ns, p)) if !ns.is_empty() && !p.contains('/') => (ns, p),
                Some(_) => return None,
                None if v.is_empty() => return None,
                None => (DEFAULT_NAMESPACE, v.as_str()),
            };
            Some(Cond::Pod {
                side,
                namespace: namespace.into(),
                prefix: prefix.into(),
            })
        })
        .collect()
}

fn ips(side: Side, values: &[String]) -> Option<AnyOf> {
    values
        .iter()
        .map(|v| {
            // Only the canonical text can be compared as text with the stored column.
            v.parse::<std::net::IpAddr>()
                .ok()
                .filter(|ip| ip.to_string() == *v)
                .map(|_| Cond::Ip(side, v.clone()))
        })
        .collect()
}

impl Prefilter {
    /// The pre-selection for a request's `whitelist` (the blacklist is left to the exact
    /// filter: excluding rows needs every value understood exactly).
    pub fn from_whitelist(whitelist: &[FlowFilter]) -> Prefilter {
        let mut filters = vec![];
        for f in whitelist {
            let mut fields: Vec<AnyOf> = vec![];
            let mut add = |field: Option<AnyOf>| {
                if let Some(any) = field.filter(|a| !a.is_empty()) {
                    fields.push(any);
                }
            };
            if !f.source_pod.is_empty() {
                add(pods(Side::Source, &f.source_pod));
            }
            if !f.destination_pod.is_empty() {
                add(pods(Side::Destination, &f.destination_pod));
            }
            add(ips(Side::Source, &f.source_ip));
            add(ips(Side::Destination, &f.destination_ip));
            add(Some(
                f.source_identity
                    .iter()
                    .map(|i| Cond::Identity(Side::Source, *i))
                    .collect(),
            ));
            add(Some(
                f.destination_identity
                    .iter()
                    .map(|i| Cond::Identity(Side::Destination, *i))
                    .collect(),
            ));
            add(Some(f.verdict.iter().map(|v| Cond::Verdict(*v)).collect()));
            if fields.is_empty() {
                // This filter may match any row: so does the whitelist.
                return Prefilter::default();
            }
            filters.push(fields);
        }
        Prefilter { filters }
    }
}

/// A value bound to a `?` placeholder of a built statement.
pub enum SqlValue {
    /// An integer.
    Int(i64),
    /// A string.
    Text(String),
}

/// The SQL the backends differ in for a prefilter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `substr`, counting characters.
    Sqlite,
    /// `substring`, counting bytes.
    ClickHouse,
}

fn side_cols(side: Side) -> (&'static str, &'static str, &'static str, &'static str) {
    match side {
        Side::Source => ("src_namespace", "src_pod", "src_ip", "src_identity"),
        Side::Destination => ("dst_namespace", "dst_pod", "dst_ip", "dst_identity"),
    }
}

impl Prefilter {
    /// `(… OR …)` over the indexed columns, its values pushed to `binds` in placeholder
    /// order; `None` when the prefilter selects everything.
    pub fn to_sql(&self, dialect: Dialect, binds: &mut Vec<SqlValue>) -> Option<String> {
        if self.filters.is_empty() {
            return None;
        }
        let mut ors = vec![];
        for filter in &self.filters {
            let mut ands = vec![];
            for any in filter {
                let mut alts = vec![];
                for c in any {
                    match c {
                        Cond::Pod {
                            side,
                            namespace,
                            prefix,
                        } => {
                            let (ns, pod, _, _) = side_cols(*side);
                            binds.push(SqlValue::Text(namespace.clone()));
                            if prefix.is_empty() {
                                alts.push(format!("{ns} = ?"));
                            } else {
                                let (substr, len) = match dialect {
                                    Dialect::Sqlite => ("substr", prefix.chars().count()),
                                    // Byte prefix: equal to the UTF-8 prefix for a whole string.
                                    Dialect::ClickHouse => ("substring", prefix.len()),
                                };
                                binds.push(SqlValue::Int(len as i64));
                                binds.push(SqlValue::Text(prefix.clone()));
                                alts.push(format!("({ns} = ? AND {substr}({pod}, 1, ?) = ?)"));
                            }
                        }
                        Cond::Ip(side, ip) => {
                            binds.push(SqlValue::Text(ip.clone()));
                            alts.push(format!("{} = ?", side_cols(*side).2));
                        }
                        Cond::Identity(side, id) => {
                            binds.push(SqlValue::Int(i64::from(*id)));
                            alts.push(format!("{} = ?", side_cols(*side).3));
                        }
                        Cond::Verdict(v) => {
                            binds.push(SqlValue::Int(i64::from(*v)));
                            alts.push("verdict = ?".into());
                        }
                    }
                }
                ands.push(format!("({})", alts.join(" OR ")));
            }
            ors.push(format!("({})", ands.join(" AND ")));
        }
        Some(format!("({})", ors.join(" OR ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_expressible_fields_in_hubble_shape() {
        let wl = [
            FlowFilter {
                source_pod: vec!["shop/web".into(), "api".into()],
                verdict: vec![2],
                // Not expressible: dropped, the filter only widens.
                source_label: vec!["k8s:app=web".into()],
                ..Default::default()
            },
            FlowFilter {
                destination_ip: vec!["10.0.0.1".into()],
                destination_identity: vec![7],
                ..Default::default()
            },
        ];
        let p = Prefilter::from_whitelist(&wl);
        assert_eq!(
            p.filters,
            vec![
                vec![
                    vec![
                        Cond::Pod {
                            side: Side::Source,
                            namespace: "shop".into(),
                            prefix: "web".into()
                        },
                        Cond::Pod {
                            side: Side::Source,
                            namespace: "default".into(),
                            prefix: "api".into()
                        },
                    ],
                    vec![Cond::Verdict(2)],
                ],
                vec![
                    vec![Cond::Ip(Side::Destination, "10.0.0.1".into())],
                    vec![Cond::Identity(Side::Destination, 7)],
                ],
            ]
        );
    }

    #[test]
    fn a_filter_without_expressible_field_selects_everything() {
        let wl = [
            FlowFilter {
                verdict: vec![1],
                ..Default::default()
            },
            FlowFilter {
                // A CIDR is not an exact IP: the whole field is left to the exact filter.
                source_ip: vec!["10.0.0.1".into(), "10.0.0.0/8".into()],
                ..Default::default()
            },
        ];
        assert_eq!(Prefilter::from_whitelist(&wl), Prefilter::default());
        assert_eq!(Prefilter::from_whitelist(&[]), Prefilter::default());
    }
}
