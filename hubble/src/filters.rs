//! Translation of `hubble observe` filter flags into `FlowFilter`s, with the upstream CLI's
//! semantics: flags are applied in command-line order; `--from-*`/`--to-*` and other
//! one-sided flags go into one filter, two-sided flags (`--pod`, `--ip`, `--label`, ...) split
//! it into a "source" and a "destination" filter (ORed); namespaces are applied when the
//! filters are materialized; `--not` sends the next filter flag to the blacklist.
//! `--verdict policy_denied` (not in upstream) means DROPPED with drop reason POLICY_DENIED
//! or POLICY_DENY.

use crate::error::{Error, Result};
use lumen_api::flow::{
    DropReason, EventTypeFilter, FlowFilter, IpVersion, TcpFlags, TrafficDirection, Verdict,
};

/// Filter flags that cannot be combined (within the whitelist, or within the blacklist).
const CONFLICTS: &[&[&str]] = &[
    &[
        "from-fqdn",
        "from-ip",
        "ip",
        "fqdn",
        "from-namespace",
        "namespace",
        "from-all-namespaces",
        "all-namespaces",
    ],
    &["from-fqdn", "from-ip", "ip", "fqdn", "from-pod", "pod"],
    &[
        "to-fqdn",
        "to-ip",
        "ip",
        "fqdn",
        "to-namespace",
        "namespace",
        "to-all-namespaces",
        "all-namespaces",
    ],
    &["to-fqdn", "to-ip", "ip", "fqdn", "to-pod", "pod"],
    &["to-pod", "namespace", "all-namespaces"],
    &["from-pod", "namespace", "all-namespaces"],
    &["to-service", "namespace", "all-namespaces"],
    &["from-service", "namespace", "all-namespaces"],
    &["label", "from-label"],
    &["label", "to-label"],
    &["service", "from-service"],
    &["service", "to-service"],
    &["port", "to-port"],
    &["port", "from-port"],
    &["identity", "to-identity"],
    &["identity", "from-identity"],
];

/// Every filter flag name [`FilterBuilder::set`] understands (long names, without `--`).
pub const FILTER_FLAGS: &[&str] = &[
    "not",
    "uuid",
    "fqdn",
    "from-fqdn",
    "to-fqdn",
    "pod",
    "from-pod",
    "to-pod",
    "ip",
    "from-ip",
    "to-ip",
    "ipv4",
    "ipv6",
    "ip-version",
    "label",
    "from-label",
    "to-label",
    "namespace",
    "from-namespace",
    "to-namespace",
    "all-namespaces",
    "from-all-namespaces",
    "to-all-namespaces",
    "service",
    "from-service",
    "to-service",
    "port",
    "from-port",
    "to-port",
    "identity",
    "from-identity",
    "to-identity",
    "verdict",
    "drop-reason-desc",
    "type",
    "protocol",
    "node-name",
    "tcp-flags",
    "traffic-direction",
    "http-status",
    "http-method",
    "http-path",
    "http-url",
];

/// Cilium monitor message types by name, for `-t/--type`.
pub const EVENT_TYPES: &[(&str, i32)] = &[
    ("drop", 1),
    ("debug", 2),
    ("capture", 3),
    ("trace", 4),
    ("policy-verdict", 5),
    ("recorder", 6),
    ("trace-sock", 7),
    ("l7", 129),
    ("agent", 130),
];

/// Cilium trace observation points by sub-type number (`trace:to-endpoint` is sub-type 0).
pub const TRACE_POINTS: &[&str] = &[
    "to-endpoint",
    "to-proxy",
    "to-host",
    "to-stack",
    "to-overlay",
    "from-endpoint",
    "from-proxy",
    "from-host",
    "from-stack",
    "from-overlay",
    "from-network",
    "to-network",
    "from-crypto",
    "to-crypto",
];

const AGENT_SUBTYPES: &[&str] = &[
    "unspecified",
    "message",
    "agent-started",
    "policy-updated",
    "policy-deleted",
    "endpoint-regenerate-success",
    "endpoint-regenerate-failure",
    "endpoint-created",
    "endpoint-deleted",
    "ipcache-upserted",
    "ipcache-deleted",
    "service-upserted",
    "service-deleted",
];

/// Reserved security identities by name, for `--identity` and friends.
pub const RESERVED_IDENTITIES: &[(&str, u32)] = &[
    ("unknown", 0),
    ("host", 1),
    ("world", 2),
    ("unmanaged", 3),
    ("health", 4),
    ("init", 5),
    ("remote-node", 6),
    ("kube-apiserver", 7),
    ("ingress", 8),
    ("world-ipv4", 9),
    ("world-ipv6", 10),
];

#[derive(Debug, Default, Clone)]
struct Tracker {
    left: Option<FlowFilter>,
    right: Option<FlowFilter>,
    ns: Vec<String>,
    src_ns: Vec<String>,
    dst_ns: Vec<String>,
    changed: Vec<String>,
    policy_denied: bool,
}

impl Tracker {
    fn apply(&mut self, f: impl Fn(&mut FlowFilter)) {
        f(self.left.get_or_insert_with(Default::default));
        f(self.right.get_or_insert_with(Default::default));
    }
    fn apply_left(&mut self, f: impl FnOnce(&mut FlowFilter)) {
        f(self.left.get_or_insert_with(Default::default));
    }
    fn apply_right(&mut self, f: impl FnOnce(&mut FlowFilter)) {
        f(self.right.get_or_insert_with(Default::default));
    }

    fn check_conflicts(&self) -> Result<()> {
        for group in CONFLICTS {
            for a in group
                .iter()
                .filter(|a| self.changed.iter().any(|c| c == *a))
            {
                if let Some(b) = group
                    .iter()
                    .find(|b| *b != a && self.changed.iter().any(|c| c == *b))
                {
                    return Err(Error::InvalidArgument(format!(
                        "filters --{a} and --{b} cannot be combined"
                    )));
                }
            }
        }
        Ok(())
    }

    fn filters(&self) -> Vec<FlowFilter> {
        let ns_set = |v: &[String]| v.iter().any(|n| !n.is_empty());
        // `-A`/`--all-namespaces` (an empty namespace) restricts nothing.
        let ns: Vec<String> = self.ns.iter().filter(|n| !n.is_empty()).cloned().collect();
        let src_ns: Vec<String> = self
            .src_ns
            .iter()
            .filter(|n| !n.is_empty())
            .cloned()
            .collect();
        let dst_ns: Vec<String> = self
            .dst_ns
            .iter()
            .filter(|n| !n.is_empty())
            .cloned()
            .collect();
        if self.left.is_none()
            && self.right.is_none()
            && !ns_set(&ns)
            && !ns_set(&src_ns)
            && !ns_set(&dst_ns)
            && !self.policy_denied
        {
            return vec![];
        }
        let mut left = self.left.clone().unwrap_or_default();
        let mut right = self.right.clone().unwrap_or_default();
        if !dst_ns.is_empty() {
            apply_dst_ns(&mut left, &dst_ns);
            apply_dst_ns(&mut right, &dst_ns);
        }
        if !src_ns.is_empty() {
            apply_src_ns(&mut left, &src_ns);
            apply_src_ns(&mut right, &src_ns);
        }
        if !ns.is_empty() {
            apply_src_ns(&mut left, &ns);
            apply_dst_ns(&mut right, &ns);
        }
        let base = if left == right {
            vec![left]
        } else {
            vec![left, right]
        };
        if !self.policy_denied {
            return base;
        }
        let mut out = vec![];
        for f in base {
            let denied = FlowFilter {
                verdict: vec![Verdict::Dropped as i32],
                drop_reason_desc: vec![
                    DropReason::PolicyDenied as i32,
                    DropReason::PolicyDeny as i32,
                ],
                ..f.clone()
            };
            if f.verdict.is_empty() {
                out.push(denied);
            } else if f.verdict.contains(&(Verdict::Dropped as i32)) {
                out.push(f);
            } else {
                out.push(f);
                out.push(denied);
            }
        }
        out
    }
}

fn add_namespaces(names: &[String], ns: &[String]) -> Vec<String> {
    if ns.is_empty() || names.is_empty() {
        return names.to_vec();
    }
    let mut out = vec![];
    for name in names {
        if name.contains('/') {
            out.push(name.clone());
        } else {
            out.extend(ns.iter().map(|n| format!("{n}/{name}")));
        }
    }
    out
}

fn apply_src_ns(f: &mut FlowFilter, ns: &[String]) {
    if f.source_pod.is_empty() && f.source_service.is_empty() {
        f.source_pod = vec![String::new()];
    }
    f.source_pod = add_namespaces(&f.source_pod, ns);
    f.source_service = add_namespaces(&f.source_service, ns);
}

fn apply_dst_ns(f: &mut FlowFilter, ns: &[String]) {
    if f.destination_pod.is_empty() && f.destination_service.is_empty() {
        f.destination_pod = vec![String::new()];
    }
    f.destination_pod = add_namespaces(&f.destination_pod, ns);
    f.destination_service = add_namespaces(&f.destination_service, ns);
}

fn parse_identity(v: &str) -> Result<u32> {
    if let Some((_, id)) = RESERVED_IDENTITIES.iter().find(|(n, _)| *n == v) {
        return Ok(*id);
    }
    v.parse().map_err(|_| {
        let names: Vec<&str> = RESERVED_IDENTITIES.iter().map(|(n, _)| *n).collect();
        Error::InvalidArgument(format!(
            "invalid security identity {v:?}, expected one of [{}] or a numeric value",
            names.join(" ")
        ))
    })
}

/// Parses a `--tcp-flags` value: a comma list such as `SYN,ACK` (all must be set).
pub fn parse_tcp_flags(v: &str) -> Result<TcpFlags> {
    let mut f = TcpFlags::default();
    for name in v.split(',') {
        match name.trim().to_ascii_uppercase().as_str() {
            "SYN" => f.syn = true,
            "FIN" => f.fin = true,
            "RST" => f.rst = true,
            "PSH" => f.psh = true,
            "ACK" => f.ack = true,
            "URG" => f.urg = true,
            "ECE" => f.ece = true,
            "CWR" => f.cwr = true,
            "NS" => f.ns = true,
            _ => return Err(Error::InvalidArgument(format!("unknown tcp flag: {name}"))),
        }
    }
    Ok(f)
}

/// Parses a `-t/--type` value: a type name or number, optionally `:sub-type` (a trace
/// observation point, an agent event name, or a number).
pub fn parse_event_type(v: &str) -> Result<EventTypeFilter> {
    let (ty, sub) = match v.split_once(':') {
        Some((t, s)) => (t, Some(s)),
        None => (v, None),
    };
    let t = match EVENT_TYPES.iter().find(|(n, _)| *n == ty) {
        Some((_, t)) => *t,
        None => ty.parse::<u32>().map(|t| t as i32).map_err(|_| {
            let names: Vec<&str> = EVENT_TYPES.iter().map(|(n, _)| *n).collect();
            Error::InvalidArgument(format!(
                "unable to parse type {ty:?}: not a known type name ({}) nor a number",
                names.join(", ")
            ))
        })?,
    };
    let mut f = EventTypeFilter {
        r#type: t,
        ..Default::default()
    };
    if let Some(sub) = sub {
        let named = match t {
            4 => TRACE_POINTS.iter().position(|p| *p == sub),
            130 => AGENT_SUBTYPES.iter().position(|p| *p == sub),
            _ => None,
        };
        f.match_sub_type = true;
        f.sub_type = match named {
            Some(i) => i as i32,
            None => sub.parse::<u32>().map(|s| s as i32).map_err(|_| {
                Error::InvalidArgument(format!(
                    "unable to parse event sub-type {sub:?}: not a known sub-type name nor a number"
                ))
            })?,
        };
    }
    Ok(f)
}

fn parse_verdict(v: &str) -> Result<Option<Verdict>> {
    let up = v.to_ascii_uppercase();
    if up == "POLICY_DENIED" {
        return Ok(None);
    }
    match Verdict::from_str_name(&up) {
        Some(Verdict::Unknown) | None => Err(Error::InvalidArgument(format!(
            "invalid --verdict value: {v} (expected FORWARDED, DROPPED, ERROR, AUDIT, REDIRECTED, TRACED, TRANSLATED or policy_denied)"
        ))),
        Some(verdict) => Ok(Some(verdict)),
    }
}

fn ip_version(v: &str) -> Result<IpVersion> {
    match v.to_ascii_lowercase().as_str() {
        "4" | "v4" | "ipv4" | "ip4" => Ok(IpVersion::IPv4),
        "6" | "v6" | "ipv6" | "ip6" => Ok(IpVersion::IPv6),
        _ => Err(Error::InvalidArgument(format!(
            "invalid --ip-version value: {v} (expected 4 or 6)"
        ))),
    }
}

/// Accumulates filter flags in command-line order and yields the request's whitelist and
/// blacklist.
#[derive(Debug, Default, Clone)]
pub struct FilterBuilder {
    whitelist: Tracker,
    blacklist: Tracker,
    blacklisting: bool,
}

impl FilterBuilder {
    /// A builder with no filters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one filter flag (`name` without `--`, e.g. `from-pod`) with its value
    /// (ignored for `not`, `ipv4`, `ipv6` and the `*all-namespaces` flags).
    pub fn set(&mut self, name: &str, val: &str) -> Result<()> {
        if name == "not" {
            if self.blacklisting {
                return Err(Error::InvalidArgument(
                    "consecutive --not statements".into(),
                ));
            }
            self.blacklisting = true;
            return Ok(());
        }
        let t = if std::mem::take(&mut self.blacklisting) {
            &mut self.blacklist
        } else {
            &mut self.whitelist
        };
        if !t.changed.iter().any(|c| c == name) {
            t.changed.push(name.to_string());
        }
        t.check_conflicts()?;
        let v = val.to_string();
        match name {
            "uuid" => t.apply(|f| f.uuid.push(v.clone())),
            "fqdn" => {
                t.apply_left(|f| f.source_fqdn.push(v.clone()));
                t.apply_right(|f| f.destination_fqdn.push(v));
            }
            "from-fqdn" => t.apply(|f| f.source_fqdn.push(v.clone())),
            "to-fqdn" => t.apply(|f| f.destination_fqdn.push(v.clone())),
            "pod" => {
                t.apply_left(|f| f.source_pod.push(v.clone()));
                t.apply_right(|f| f.destination_pod.push(v));
            }
            "from-pod" => t.apply(|f| f.source_pod.push(v.clone())),
            "to-pod" => t.apply(|f| f.destination_pod.push(v.clone())),
            "ip" => {
                t.apply_left(|f| f.source_ip.push(v.clone()));
                t.apply_right(|f| f.destination_ip.push(v));
            }
            "from-ip" => t.apply(|f| f.source_ip.push(v.clone())),
            "to-ip" => t.apply(|f| f.destination_ip.push(v.clone())),
            "ipv4" => t.apply(|f| f.ip_version.push(IpVersion::IPv4 as i32)),
            "ipv6" => t.apply(|f| f.ip_version.push(IpVersion::IPv6 as i32)),
            "ip-version" => {
                let ipv = ip_version(val)? as i32;
                t.apply(|f| f.ip_version.push(ipv));
            }
            "label" => {
                t.apply_left(|f| f.source_label.push(v.clone()));
                t.apply_right(|f| f.destination_label.push(v));
            }
            "from-label" => t.apply(|f| f.source_label.push(v.clone())),
            "to-label" => t.apply(|f| f.destination_label.push(v.clone())),
            "namespace" => t.ns.push(v),
            "from-namespace" => t.src_ns.push(v),
            "to-namespace" => t.dst_ns.push(v),
            "all-namespaces" => t.ns.push(String::new()),
            "from-all-namespaces" => t.src_ns.push(String::new()),
            "to-all-namespaces" => t.dst_ns.push(String::new()),
            "service" => {
                t.apply_left(|f| f.source_service.push(v.clone()));
                t.apply_right(|f| f.destination_service.push(v));
            }
            "from-service" => t.apply(|f| f.source_service.push(v.clone())),
            "to-service" => t.apply(|f| f.destination_service.push(v.clone())),
            "port" => {
                t.apply_left(|f| f.source_port.push(v.clone()));
                t.apply_right(|f| f.destination_port.push(v));
            }
            "from-port" => t.apply(|f| f.source_port.push(v.clone())),
            "to-port" => t.apply(|f| f.destination_port.push(v.clone())),
            "identity" => {
                let id = parse_identity(val)?;
                t.apply_left(|f| f.source_identity.push(id));
                t.apply_right(|f| f.destination_identity.push(id));
            }
            "from-identity" => {
                let id = parse_identity(val)?;
                t.apply(|f| f.source_identity.push(id));
            }
            "to-identity" => {
                let id = parse_identity(val)?;
                t.apply(|f| f.destination_identity.push(id));
            }
            "verdict" => match parse_verdict(val)? {
                Some(verdict) => t.apply(|f| f.verdict.push(verdict as i32)),
                None => {
                    if t.changed.iter().any(|c| c == "drop-reason-desc") {
                        return Err(Error::InvalidArgument(
                            "--verdict policy_denied cannot be combined with --drop-reason-desc"
                                .into(),
                        ));
                    }
                    t.policy_denied = true;
                }
            },
            "drop-reason-desc" => {
                if t.policy_denied {
                    return Err(Error::InvalidArgument(
                        "--verdict policy_denied cannot be combined with --drop-reason-desc".into(),
                    ));
                }
                let r = DropReason::from_str_name(&val.to_ascii_uppercase()).ok_or_else(|| {
                    Error::InvalidArgument(format!("invalid --drop-reason-desc value: {val}"))
                })?;
                t.apply(|f| f.drop_reason_desc.push(r as i32));
            }
            "type" => {
                let et = parse_event_type(val)?;
                t.apply(|f| f.event_type.push(et));
            }
            "protocol" => t.apply(|f| f.protocol.push(v.clone())),
            "node-name" => t.apply(|f| f.node_name.push(v.clone())),
            "tcp-flags" => {
                let flags = parse_tcp_flags(val)?;
                t.apply(|f| f.tcp_flags.push(flags));
            }
            "traffic-direction" => {
                let d = match val.to_ascii_lowercase().as_str() {
                    "ingress" => TrafficDirection::Ingress,
                    "egress" => TrafficDirection::Egress,
                    other => {
                        return Err(Error::InvalidArgument(format!(
                            "{other}: invalid traffic direction, expected ingress or egress"
                        )))
                    }
                };
                t.apply(|f| f.traffic_direction.push(d as i32));
            }
            "http-status" => t.apply(|f| f.http_status_code.push(v.clone())),
            "http-method" => t.apply(|f| f.http_method.push(v.clone())),
            "http-path" => t.apply(|f| f.http_path.push(v.clone())),
            "http-url" => t.apply(|f| f.http_url.push(v.clone())),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown filter flag --{other}"
                )))
            }
        }
        Ok(())
    }

    /// Applies `(flag, value)` pairs in order.
    pub fn from_flags<'a>(flags: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut b = Self::new();
        for (name, val) in flags {
            b.set(name, val)?;
        }
        b.finish()?;
        Ok(b)
    }

    fn finish(&self) -> Result<()> {
        if self.blacklisting {
            return Err(Error::InvalidArgument(
                "--not must be followed by a filter flag".into(),
            ));
        }
        Ok(())
    }

    /// The whitelist (ORed filters; empty means everything).
    pub fn whitelist(&self) -> Vec<FlowFilter> {
        self.whitelist.filters()
    }

    /// The blacklist (flows matching any of these are removed).
    pub fn blacklist(&self) -> Vec<FlowFilter> {
        self.blacklist.filters()
    }
}
