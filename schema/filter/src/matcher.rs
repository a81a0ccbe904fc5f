//! [`FlowMatcher`]: a `GetFlowsRequest`'s whitelist and blacklist compiled once, then tested
//! against each flow.
//!
//! Semantics, as Hubble's server: a flow passes when (the whitelist is empty OR one of its
//! filters matches) AND none of the blacklist filters matches. Inside one `FlowFilter` every
//! set field must match (AND; a `FlowFilter` with no field set matches every flow); inside
//! one repeated field one value must match (OR). Everything that can be checked or parsed
//! (CIDRs, regular expressions, label selectors, patterns, ports) is done at compile time,
//! so [`FlowMatcher::matches`] does not allocate (except to percent-decode an HTTP path
//! that has escapes).

use lumen_api::flow::{EventTypeFilter, Flow, FlowFilter, NetworkInterface, Workload};
use regex::Regex;

use crate::error::FilterError;
use crate::event;
use crate::ip::{self, IpField, IpFilter};
use crate::k8s::{self, NamedObject, NamespacedNameFilter, Side};
use crate::l4::{self, ProtocolSet};
use crate::l7::{self, StatusCode};
use crate::labels::{LabelFilter, LabelTarget};
use crate::patterns::{FqdnFilter, NodeNameFilter};

/// One compiled, set field of a `FlowFilter`.
#[derive(Debug, Clone)]
enum Criterion {
    Uuid(Vec<String>),
    Ip(IpFilter),
    Name(NamespacedNameFilter),
    Fqdn(FqdnFilter),
    Labels(LabelFilter),
    Workload(Side, Vec<Workload>),
    ClusterName(Side, Vec<String>),
    Identity(Side, Vec<u32>),
    NodeName(NodeNameFilter),
    TrafficDirection(Vec<i32>),
    Verdict(Vec<i32>),
    DropReasonDesc(Vec<i32>),
    Interface(Vec<NetworkInterface>),
    EventType(Vec<EventTypeFilter>),
    Protocol(ProtocolSet),
    Port(Side, Vec<u16>),
    Reply(Vec<bool>),
    TcpFlags(Vec<u16>),
    IpVersion(Vec<i32>),
    Encrypted(Vec<bool>),
    DnsQuery(Vec<Regex>),
    HttpStatusCode(Vec<StatusCode>),
    HttpMethod(Vec<String>),
    HttpPath(Vec<Regex>),
    HttpUrl(Vec<Regex>),
    HttpHeader(Vec<lumen_api::flow::HttpHeader>),
    TraceId(Vec<String>),
    IpTraceId(Vec<u64>),
}

impl Criterion {
    /// A rough cost rank: criteria are tested cheapest first (AND is order-free).
    fn cost(&self) -> u8 {
        match self {
            Self::TrafficDirection(_)
            | Self::Verdict(_)
            | Self::DropReasonDesc(_)
            | Self::EventType(_)
            | Self::Protocol(_)
            | Self::Port(..)
            | Self::Reply(_)
            | Self::TcpFlags(_)
            | Self::IpVersion(_)
            | Self::Encrypted(_)
            | Self::Identity(..)
            | Self::Interface(_)
            | Self::IpTraceId(_) => 0,
            Self::Uuid(_)
            | Self::TraceId(_)
            | Self::ClusterName(..)
            | Self::Workload(..)
            | Self::Name(_)
            | Self::HttpStatusCode(_)
            | Self::HttpMethod(_)
            | Self::HttpHeader(_) => 1,
            Self::Ip(_) | Self::Labels(_) => 2,
            Self::Fqdn(_)
            | Self::NodeName(_)
            | Self::DnsQuery(_)
            | Self::HttpPath(_)
            | Self::HttpUrl(_) => 3,
        }
    }

    fn matches(&self, flow: &Flow) -> bool {
        match self {
            Self::Uuid(v) => event::uuid_matches(v, flow),
            Self::Ip(f) => f.matches(flow),
            Self::Name(f) => f.matches(flow),
            Self::Fqdn(f) => f.matches(flow),
            Self::Labels(f) => f.matches(flow),
            Self::Workload(side, v) => k8s::workload_matches(*side, v, flow),
            Self::ClusterName(side, v) => k8s::cluster_name_matches(*side, v, flow),
            Self::Identity(side, v) => k8s::identity_matches(*side, v, flow),
            Self::NodeName(f) => f.matches(flow),
            Self::TrafficDirection(v) => event::enum_matches(v, flow.traffic_direction),
            Self::Verdict(v) => event::enum_matches(v, flow.verdict),
            Self::DropReasonDesc(v) => event::enum_matches(v, flow.drop_reason_desc),
            Self::Interface(v) => event::interface_matches(v, flow),
            Self::EventType(v) => event::event_type_matches(v, flow),
            Self::Protocol(p) => p.matches(flow),
            Self::Port(side, v) => l4::port_matches(*side, v, flow),
            Self::Reply(v) => event::reply_matches(v, flow),
            Self::TcpFlags(v) => l4::tcp_flags_match(v, flow),
            Self::IpVersion(v) => ip::ip_version_matches(v, flow),
            Self::Encrypted(v) => ip::encrypted_matches(v, flow),
            Self::DnsQuery(v) => l7::dns_query_matches(v, flow),
            Self::HttpStatusCode(v) => l7::status_code_matches(v, flow),
            Self::HttpMethod(v) => l7::method_matches(v, flow),
            Self::HttpPath(v) => l7::path_matches(v, flow),
            Self::HttpUrl(v) => l7::url_matches(v, flow),
            Self::HttpHeader(v) => l7::header_matches(v, flow),
            Self::TraceId(v) => event::trace_id_matches(v, flow),
            Self::IpTraceId(v) => event::ip_trace_id_matches(v, flow),
        }
    }
}

/// Appends the criterion `make` builds when the field is set (`set`).
fn add(
    criteria: &mut Vec<Criterion>,
    set: bool,
    make: impl FnOnce() -> Result<Criterion, FilterError>,
) -> Result<(), FilterError> {
    if set {
        criteria.push(make()?);
    }
    Ok(())
}

/// One compiled `FlowFilter`: ANDed criteria (none: matches every flow).
#[derive(Debug, Clone)]
struct CompiledFilter {
    criteria: Vec<Criterion>,
}

impl CompiledFilter {
    fn matches(&self, flow: &Flow) -> bool {
        self.criteria.iter().all(|c| c.matches(flow))
    }

    fn compile(ff: &FlowFilter) -> Result<Self, FilterError> {
        if let Some(cel) = ff
            .experimental
            .as_ref()
            .and_then(|e| e.cel_expression.first())
        {
            return Err(FilterError::Unsupported {
                field: "experimental.cel_expression",
                value: cel.clone(),
            });
        }

        let mut c = Vec::new();

        add(&mut c, !ff.uuid.is_empty(), || {
            Ok(Criterion::Uuid(ff.uuid.clone()))
        })?;
        for (values, field, name) in [
            (&ff.source_ip, IpField::Source, "source_ip"),
            (&ff.destination_ip, IpField::Destination, "destination_ip"),
            (
                &ff.source_ip_xlated,
                IpField::SourceXlated,
                "source_ip_xlated",
            ),
        ] {
            add(&mut c, !values.is_empty(), || {
                IpFilter::compile(field, name, values).map(Criterion::Ip)
            })?;
        }
        for (values, object, name) in [
            (&ff.source_pod, NamedObject::Pod(Side::Source), "source_pod"),
            (
                &ff.destination_pod,
                NamedObject::Pod(Side::Destination),
                "destination_pod",
            ),
            (
                &ff.source_service,
                NamedObject::Service(Side::Source),
                "source_service",
            ),
            (
                &ff.destination_service,
                NamedObject::Service(Side::Destination),
                "destination_service",
            ),
        ] {
            add(&mut c, !values.is_empty(), || {
                NamespacedNameFilter::compile(object, name, values).map(Criterion::Name)
            })?;
        }
        for (values, side, name) in [
            (&ff.source_fqdn, Side::Source, "source_fqdn"),
            (&ff.destination_fqdn, Side::Destination, "destination_fqdn"),
        ] {
            add(&mut c, !values.is_empty(), || {
                FqdnFilter::compile(side, name, values).map(Criterion::Fqdn)
            })?;
        }
        for (values, target, name) in [
            (
                &ff.source_label,
                LabelTarget::Endpoint(Side::Source),
                "source_label",
            ),
            (
                &ff.destination_label,
                LabelTarget::Endpoint(Side::Destination),
                "destination_label",
            ),
            (&ff.node_labels, LabelTarget::Node, "node_labels"),
        ] {
            add(&mut c, !values.is_empty(), || {
                LabelFilter::compile(target, name, values).map(Criterion::Labels)
            })?;
        }
        for (values, side) in [
            (&ff.source_workload, Side::Source),
            (&ff.destination_workload, Side::Destination),
        ] {
            add(&mut c, !values.is_empty(), || {
                Ok(Criterion::Workload(side, values.clone()))
            })?;
        }
        for (values, side, name) in [
            (&ff.source_cluster_name, Side::Source, "source_cluster_name"),
            (
                &ff.destination_cluster_name,
                Side::Destination,
                "destination_cluster_name",
            ),
        ] {
            add(&mut c, !values.is_empty(), || {
                k8s::validate_cluster_names(name, values)?;
                Ok(Criterion::ClusterName(side, values.clone()))
            })?;
        }
        for (values, side) in [
            (&ff.source_identity, Side::Source),
            (&ff.destination_identity, Side::Destination),
        ] {
            add(&mut c, !values.is_empty(), || {
                Ok(Criterion::Identity(side, values.clone()))
            })?;
        }
        add(&mut c, !ff.node_name.is_empty(), || {
            NodeNameFilter::compile("node_name", &ff.node_name).map(Criterion::NodeName)
        })?;
        add(&mut c, !ff.traffic_direction.is_empty(), || {
            Ok(Criterion::TrafficDirection(ff.traffic_direction.clone()))
        })?;
        add(&mut c, !ff.verdict.is_empty(), || {
            Ok(Criterion::Verdict(ff.verdict.clone()))
        })?;
        add(&mut c, !ff.drop_reason_desc.is_empty(), || {
            Ok(Criterion::DropReasonDesc(ff.drop_reason_desc.clone()))
        })?;
        add(&mut c, !ff.interface.is_empty(), || {
            Ok(Criterion::Interface(ff.interface.clone()))
        })?;
        add(&mut c, !ff.event_type.is_empty(), || {
            Ok(Criterion::EventType(ff.event_type.clone()))
        })?;
        add(&mut c, !ff.protocol.is_empty(), || {
            ProtocolSet::compile("protocol", &ff.protocol).map(Criterion::Protocol)
        })?;
        for (values, side, name) in [
            (&ff.source_port, Side::Source, "source_port"),
            (&ff.destination_port, Side::Destination, "destination_port"),
        ] {
            add(&mut c, !values.is_empty(), || {
                l4::compile_ports(name, values).map(|p| Criterion::Port(side, p))
            })?;
        }
        add(&mut c, !ff.reply.is_empty(), || {
            Ok(Criterion::Reply(ff.reply.clone()))
        })?;
        add(&mut c, !ff.tcp_flags.is_empty(), || {
            Ok(Criterion::TcpFlags(l4::compile_tcp_flags(&ff.tcp_flags)))
        })?;
        add(&mut c, !ff.ip_version.is_empty(), || {
            Ok(Criterion::IpVersion(ff.ip_version.clone()))
        })?;
        add(&mut c, !ff.encrypted.is_empty(), || {
            Ok(Criterion::Encrypted(ff.encrypted.clone()))
        })?;
        add(&mut c, !ff.dns_query.is_empty(), || {
            l7::compile_regexes("dns_query", &ff.dns_query).map(Criterion::DnsQuery)
        })?;

        // HTTP filters: refused next to an event_type filter without L7, as in Hubble.
        let l7_check = |field: &'static str, first: String| {
            l7::check_l7_event_type(field, || first, &ff.event_type)
        };
        add(&mut c, !ff.http_status_code.is_empty(), || {
            l7_check("http_status_code", ff.http_status_code[0].clone())?;
            l7::compile_status_codes("http_status_code", &ff.http_status_code)
                .map(Criterion::HttpStatusCode)
        })?;
        add(&mut c, !ff.http_method.is_empty(), || {
            l7_check("http_method", ff.http_method[0].clone())?;
            Ok(Criterion::HttpMethod(ff.http_method.clone()))
        })?;
        add(&mut c, !ff.http_path.is_empty(), || {
            l7_check("http_path", ff.http_path[0].clone())?;
            l7::compile_regexes("http_path", &ff.http_path).map(Criterion::HttpPath)
        })?;
        add(&mut c, !ff.http_url.is_empty(), || {
            l7_check("http_url", ff.http_url[0].clone())?;
            l7::compile_regexes("http_url", &ff.http_url).map(Criterion::HttpUrl)
        })?;
        add(&mut c, !ff.http_header.is_empty(), || {
            let first = &ff.http_header[0];
            l7_check("http_header", format!("{}: {}", first.key, first.value))?;
            Ok(Criterion::HttpHeader(ff.http_header.clone()))
        })?;

        add(&mut c, !ff.trace_id.is_empty(), || {
            Ok(Criterion::TraceId(ff.trace_id.clone()))
        })?;
        add(&mut c, !ff.ip_trace_id.is_empty(), || {
            Ok(Criterion::IpTraceId(ff.ip_trace_id.clone()))
        })?;

        c.sort_by_key(Criterion::cost);
        Ok(Self { criteria: c })
    }
}

/// A compiled whitelist/blacklist pair, as a `GetFlowsRequest` carries them.
///
/// Cheap to test (no allocation per flow), `Send + Sync`, and cloneable for sharing between
/// streams.
#[derive(Debug, Clone, Default)]
pub struct FlowMatcher {
    whitelist: Vec<CompiledFilter>,
    blacklist: Vec<CompiledFilter>,
}

impl FlowMatcher {
    /// Compiles the filters of a request. Fails on the first value that does not parse or
    /// that this server does not support, naming its `FlowFilter` field (see
    /// [`FilterError::field`]).
    pub fn compile(
        whitelist: &[FlowFilter],
        blacklist: &[FlowFilter],
    ) -> Result<FlowMatcher, FilterError> {
        let compile_all = |filters: &[FlowFilter]| {
            filters
                .iter()
                .map(CompiledFilter::compile)
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(FlowMatcher {
            whitelist: compile_all(whitelist)?,
            blacklist: compile_all(blacklist)?,
        })
    }

    /// Whether `flow` passes: whitelist empty or one whitelist filter matches, and no
    /// blacklist filter matches.
    pub fn matches(&self, flow: &Flow) -> bool {
        (self.whitelist.is_empty() || self.whitelist.iter().any(|f| f.matches(flow)))
            && !self.blacklist.iter().any(|f| f.matches(flow))
    }

    /// Whether the matcher lets every flow through (no whitelist, no blacklist filter).
    pub fn is_match_all(&self) -> bool {
        self.whitelist.is_empty() && self.blacklist.is_empty()
    }
}
