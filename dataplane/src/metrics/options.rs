//! `hubble.metrics.enabled` entries, written as in Cilium's Helm values:
//! `name[:option=value;option=value]`, e.g. `drop:sourceContext=namespace;destinationContext=pod`.
//!
//! Unknown metric names and options are refused with an error that lists what is supported.

use serde::Deserialize;
use std::fmt;

/// Why an entry of `hubble.metrics.enabled` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// A metric name Lumen does not serve.
    #[error("unknown metric {name:?} (supported: flow, drop, policy, tcp, port-distribution, flow-volume)")]
    UnknownMetric {
        /// The name as written.
        name: String,
    },
    /// An option the metric does not take.
    #[error("metric {metric:?}: unknown option {option:?} (supported: sourceContext, destinationContext)")]
    UnknownOption {
        /// The metric.
        metric: String,
        /// The option as written.
        option: String,
    },
    /// An option without `=value`.
    #[error("metric {metric:?}: option {option:?} needs a value (option=value)")]
    MissingValue {
        /// The metric.
        metric: String,
        /// The option as written.
        option: String,
    },
    /// A context that is not one of the supported ones.
    #[error("metric {metric:?}: unknown context {value:?} for {option} (supported: namespace, pod, pod-name, identity, workload, workload-name, ip; alternatives joined with |)")]
    UnknownContext {
        /// The metric.
        metric: String,
        /// `sourceContext` or `destinationContext`.
        option: &'static str,
        /// The value as written.
        value: String,
    },
    /// The same metric twice.
    #[error("metric {0:?} is enabled twice")]
    Duplicate(String),
}

/// The metrics Lumen serves (Hubble's where Hubble has one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// `hubble_flows_processed_total{type, subtype, verdict}`.
    Flow,
    /// `hubble_drop_total{reason, protocol}`.
    Drop,
    /// `hubble_policy_verdicts_total{direction, match, action}`.
    Policy,
    /// `hubble_tcp_flags_total{flag, family}`.
    Tcp,
    /// `hubble_port_distribution_total{protocol, port}`.
    PortDistribution,
    /// Lumen's `lumen_flow_bytes_total` / `lumen_flow_packets_total{protocol}` from the
    /// connection tracker's counters.
    FlowVolume,
}

impl MetricKind {
    /// The name used in `hubble.metrics.enabled`.
    pub fn name(self) -> &'static str {
        match self {
            MetricKind::Flow => "flow",
            MetricKind::Drop => "drop",
            MetricKind::Policy => "policy",
            MetricKind::Tcp => "tcp",
            MetricKind::PortDistribution => "port-distribution",
            MetricKind::FlowVolume => "flow-volume",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "flow" => MetricKind::Flow,
            "drop" => MetricKind::Drop,
            "policy" => MetricKind::Policy,
            "tcp" => MetricKind::Tcp,
            "port-distribution" => MetricKind::PortDistribution,
            "flow-volume" => MetricKind::FlowVolume,
            _ => return None,
        })
    }
}

/// What identifies one side of a flow in the `source` / `destination` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContextKind {
    /// The pod's namespace.
    Namespace,
    /// `namespace/pod`.
    Pod,
    /// The pod name alone.
    PodName,
    /// The numeric security identity.
    Identity,
    /// `namespace/workload` (the pod's owner).
    Workload,
    /// The workload name alone.
    WorkloadName,
    /// The IP address.
    Ip,
}

impl ContextKind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "namespace" => ContextKind::Namespace,
            "pod" => ContextKind::Pod,
            "pod-name" => ContextKind::PodName,
            "identity" => ContextKind::Identity,
            "workload" => ContextKind::Workload,
            "workload-name" => ContextKind::WorkloadName,
            "ip" => ContextKind::Ip,
            _ => return None,
        })
    }
}

/// A context option: alternatives tried in order, the first that yields a value wins
/// (`pod|ip`: the pod, else the address), as in Hubble.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Context(pub Vec<ContextKind>);

impl Context {
    /// True when the option was not given (no label).
    pub fn is_none(&self) -> bool {
        self.0.is_empty()
    }
}

/// One parsed entry of `hubble.metrics.enabled`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct MetricSpec {
    /// Which metric.
    pub kind: MetricKind,
    /// `sourceContext`: adds a `source` label.
    pub source: Context,
    /// `destinationContext`: adds a `destination` label.
    pub destination: Context,
}

impl fmt::Display for MetricSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.name())
    }
}

fn context(metric: &str, option: &'static str, value: &str) -> Result<Context, OptionsError> {
    value
        .split('|')
        .map(|v| {
            ContextKind::parse(v.trim()).ok_or_else(|| OptionsError::UnknownContext {
                metric: metric.into(),
                option,
                value: value.into(),
            })
        })
        .collect::<Result<_, _>>()
        .map(Context)
}

impl TryFrom<String> for MetricSpec {
    type Error = OptionsError;

    fn try_from(s: String) -> Result<Self, OptionsError> {
        let (name, opts) = s.split_once(':').unwrap_or((&s, ""));
        let name = name.trim();
        let kind = MetricKind::parse(name)
            .ok_or_else(|| OptionsError::UnknownMetric { name: name.into() })?;
        let mut spec = MetricSpec {
            kind,
            source: Context::default(),
            destination: Context::default(),
        };
        for opt in opts.split(';').map(str::trim).filter(|o| !o.is_empty()) {
            let Some((key, value)) = opt.split_once('=') else {
                return Err(OptionsError::MissingValue {
                    metric: name.into(),
                    option: opt.into(),
                });
            };
            match key.trim() {
                "sourceContext" => spec.source = context(name, "sourceContext", value)?,
                "destinationContext" => {
                    spec.destination = context(name, "destinationContext", value)?
                }
                other => {
                    return Err(OptionsError::UnknownOption {
                        metric: name.into(),
                        option: other.into(),
                    })
                }
            }
        }
        Ok(spec)
    }
}

/// Refuses a list that enables the same metric twice.
pub fn check_unique(specs: &[MetricSpec]) -> Result<(), OptionsError> {
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.kind == s.kind) {
            return Err(OptionsError::Duplicate(s.kind.name().into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<MetricSpec, OptionsError> {
        MetricSpec::try_from(s.to_string())
    }

    #[test]
    fn plain_names_and_helm_style_options() {
        let d = parse("drop:sourceContext=namespace;destinationContext=pod|ip").unwrap();
        assert_eq!(d.kind, MetricKind::Drop);
        assert_eq!(d.source, Context(vec![ContextKind::Namespace]));
        assert_eq!(
            d.destination,
            Context(vec![ContextKind::Pod, ContextKind::Ip])
        );
        let p = parse("port-distribution").unwrap();
        assert_eq!(p.kind, MetricKind::PortDistribution);
        assert!(p.source.is_none() && p.destination.is_none());
        assert_eq!(parse("tcp:").unwrap().kind, MetricKind::Tcp);
    }

    #[test]
    fn unknown_metrics_options_and_contexts_are_refused_by_name() {
        let e = parse("dns").unwrap_err();
        assert!(e.to_string().contains("unknown metric \"dns\""), "{e}");
        let e = parse("drop:labelsContext=source_namespace").unwrap_err();
        assert!(
            e.to_string().contains("unknown option \"labelsContext\""),
            "{e}"
        );
        let e = parse("flow:sourceContext=pod|cluster").unwrap_err();
        assert!(
            e.to_string().contains("unknown context \"pod|cluster\""),
            "{e}"
        );
        let e = parse("flow:sourceContext").unwrap_err();
        assert!(matches!(e, OptionsError::MissingValue { .. }), "{e}");
        let specs = vec![
            parse("drop").unwrap(),
            parse("drop:sourceContext=pod").unwrap(),
        ];
        assert_eq!(
            check_unique(&specs).unwrap_err(),
            OptionsError::Duplicate("drop".into())
        );
    }
}
