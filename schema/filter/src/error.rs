//! The error of compiling a [`FlowFilter`](lumen_api::flow::FlowFilter): every variant names
//! the filter field at fault (by its proto name, e.g. `source_ip`) and carries the offending
//! value, so that a server can answer `InvalidArgument` with a message the user can act on.

/// Why a [`FlowFilter`](lumen_api::flow::FlowFilter) could not be compiled.
///
/// `field` is the proto name of the offending `FlowFilter` field (`source_ip`,
/// `destination_label`, `experimental.cel_expression`, ...), `value` the offending value as
/// the client sent it. The message reads like
/// `invalid source_ip "10.0.0/8": not an IP address or CIDR`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// An IP filter value that is neither an IP address nor a CIDR.
    #[error("invalid {field} {value:?}: not an IP address or CIDR")]
    InvalidIp {
        /// The `FlowFilter` field.
        field: &'static str,
        /// The offending value.
        value: String,
    },
    /// A pod or service filter that names neither a namespace nor a name.
    #[error("invalid {field} {value:?}: must be [namespace/][name-prefix]")]
    InvalidName {
        /// The `FlowFilter` field.
        field: &'static str,
        /// The offending value.
        value: String,
    },
    /// A value that must not be empty (a cluster name).
    #[error("invalid {field} {value:?}: must not be empty")]
    Empty {
        /// The `FlowFilter` field.
        field: &'static str,
        /// The offending value.
        value: String,
    },
    /// A label selector that does not parse.
    #[error("invalid {field} {value:?}: bad label selector: {reason}")]
    InvalidSelector {
        /// The `FlowFilter` field.
        field: &'static str,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An FQDN or node-name pattern with characters or a shape Hubble refuses.
    #[error("invalid {field} {value:?}: bad pattern: {reason}")]
    InvalidPattern {
        /// The `FlowFilter` field.
        field: &'static str,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A port that is not a decimal number in 0..=65535.
    #[error("invalid {field} {value:?}: not a port number (0-65535)")]
    InvalidPort {
        /// The `FlowFilter` field.
        field: &'static str,
        /// The offending value.
        value: String,
    },
    /// A protocol name this server does not know.
    #[error(
        "invalid {field} {value:?}: unknown protocol (known: tcp, udp, sctp, icmp, icmpv4, \
         icmpv6, vrrp, igmp, http, dns, kafka)"
    )]
    UnknownProtocol {
        /// The `FlowFilter` field.
        field: &'static str,
        /// The offending value.
        value: String,
    },
    /// A regular expression that does not compile.
    #[error("invalid {field} {value:?}: bad regular expression: {reason}")]
    InvalidRegex {
        /// The `FlowFilter` field.
        field: &'static str,
        /// The offending value.
        value: String,
        /// The regular-expression engine's complaint.
        reason: String,
    },
    /// An HTTP status code filter that is neither `NNN` (100-599) nor a prefix like `5+`.
    #[error(
        "invalid {field} {value:?}: expected a status code like \"200\" or a prefix like \
         \"5+\" or \"40+\""
    )]
    InvalidStatusCode {
        /// The `FlowFilter` field.
        field: &'static str,
        /// The offending value.
        value: String,
    },
    /// An HTTP filter in a `FlowFilter` whose `event_type` filter excludes L7 events
    /// (Hubble refuses the combination, as it could never match).
    #[error(
        "invalid {field} {value:?}: filtering by {field} requires the event_type filter to \
         include L7 events (type 129)"
    )]
    RequiresL7EventType {
        /// The `FlowFilter` field.
        field: &'static str,
        /// The first value of that field.
        value: String,
    },
    /// A filter field this server does not implement.
    #[error("{field} {value:?} is not supported by this server")]
    Unsupported {
        /// The `FlowFilter` field.
        field: &'static str,
        /// The offending value.
        value: String,
    },
}

impl FilterError {
    /// The proto name of the `FlowFilter` field at fault, e.g. `source_ip` or
    /// `experimental.cel_expression`.
    pub fn field(&self) -> &str {
        match self {
            Self::InvalidIp { field, .. }
            | Self::InvalidName { field, .. }
            | Self::Empty { field, .. }
            | Self::InvalidSelector { field, .. }
            | Self::InvalidPattern { field, .. }
            | Self::InvalidPort { field, .. }
            | Self::UnknownProtocol { field, .. }
            | Self::InvalidRegex { field, .. }
            | Self::InvalidStatusCode { field, .. }
            | Self::RequiresL7EventType { field, .. }
            | Self::Unsupported { field, .. } => field,
        }
    }

    /// The offending value, as the client sent it.
    pub fn value(&self) -> &str {
        match self {
            Self::InvalidIp { value, .. }
            | Self::InvalidName { value, .. }
            | Self::Empty { value, .. }
            | Self::InvalidSelector { value, .. }
            | Self::InvalidPattern { value, .. }
            | Self::InvalidPort { value, .. }
            | Self::UnknownProtocol { value, .. }
            | Self::InvalidRegex { value, .. }
            | Self::InvalidStatusCode { value, .. }
            | Self::RequiresL7EventType { value, .. }
            | Self::Unsupported { value, .. } => value,
        }
    }
}
