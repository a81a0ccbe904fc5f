//! The crate's single error type: every variant names the field path it is about.

use thiserror::Error;

/// A policy that cannot be parsed. `Display` is always `"<field path>: <what is wrong>"`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    /// The object kind is not one of the supported policy kinds.
    #[error("kind: unsupported policy kind \"{kind}\" (expected NetworkPolicy, CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy)")]
    UnknownKind {
        /// The kind that was given.
        kind: String,
    },
    /// A Cilium policy has neither `spec` nor `specs`.
    #[error("spec: neither spec nor specs is set")]
    MissingSpec,
    /// A field the schema does not know.
    #[error("{path}: unknown field")]
    UnknownField {
        /// Path of the unknown field.
        path: String,
    },
    /// A required field is absent.
    #[error("{path}: required field is missing")]
    MissingField {
        /// Path of the missing field.
        path: String,
    },
    /// A value has the wrong YAML type.
    #[error("{path}: expected {expected}")]
    WrongType {
        /// Path of the value.
        path: String,
        /// What was expected (e.g. "a list").
        expected: &'static str,
    },
    /// A `matchExpressions` operator that is not In, NotIn, Exists or DoesNotExist.
    #[error("{path}: unknown operator \"{operator}\" (expected In, NotIn, Exists, DoesNotExist)")]
    UnknownOperator {
        /// Path of the `operator` field.
        path: String,
        /// The operator that was given.
        operator: String,
    },
    /// `values` is inconsistent with the operator (In/NotIn need values, Exists/DoesNotExist take none).
    #[error("{path}: operator {operator} {requirement}")]
    OperatorValues {
        /// Path of the `values` field.
        path: String,
        /// The operator.
        operator: &'static str,
        /// What the operator requires.
        requirement: &'static str,
    },
    /// A label key that is empty.
    #[error("{path}: empty label key")]
    EmptyLabelKey {
        /// Path of the selector holding the key.
        path: String,
    },
    /// A CIDR that does not parse.
    #[error("{path}: invalid CIDR \"{value}\"")]
    InvalidCidr {
        /// Path of the CIDR value.
        path: String,
        /// The value given.
        value: String,
    },
    /// An `except` prefix that is not inside its `cidr`.
    #[error("{path}: except \"{except}\" is not within cidr \"{cidr}\"")]
    ExceptOutsideCidr {
        /// Path of the except entry.
        path: String,
        /// The except prefix.
        except: String,
        /// The enclosing cidr.
        cidr: String,
    },
    /// A numeric port outside 1..=65535.
    #[error("{path}: port {value} out of range (expected 1-65535)")]
    PortOutOfRange {
        /// Path of the port field.
        path: String,
        /// The value given.
        value: i64,
    },
    /// A port string that is neither a number nor a valid port name.
    #[error("{path}: invalid port \"{value}\" (expected a number 1-65535 or a port name)")]
    InvalidPort {
        /// Path of the port field.
        path: String,
        /// The value given.
        value: String,
    },
    /// `endPort` smaller than `port`.
    #[error("{path}: endPort {end_port} is smaller than port {port}")]
    EndPortBeforePort {
        /// Path of the endPort field.
        path: String,
        /// The start port.
        port: u16,
        /// The end port.
        end_port: u16,
    },
    /// `endPort` used without a numeric `port`.
    #[error("{path}: endPort requires a numeric port")]
    EndPortWithoutNumericPort {
        /// Path of the endPort field.
        path: String,
    },
    /// A protocol that is not supported for this policy kind.
    #[error("{path}: unknown protocol \"{value}\" (expected {expected})")]
    UnknownProtocol {
        /// Path of the protocol field.
        path: String,
        /// The value given.
        value: String,
        /// The accepted values.
        expected: &'static str,
    },
    /// An entity name Cilium does not define.
    #[error("{path}: unknown entity \"{value}\" (expected world, cluster, host, remote-node, all, health, init, unmanaged, kube-apiserver, ingress)")]
    UnknownEntity {
        /// Path of the entity.
        path: String,
        /// The value given.
        value: String,
    },
    /// A NetworkPolicy `policyTypes` entry other than Ingress/Egress.
    #[error("{path}: unknown policy type \"{value}\" (expected Ingress or Egress)")]
    UnknownPolicyType {
        /// Path of the entry.
        path: String,
        /// The value given.
        value: String,
    },
    /// A NetworkPolicy peer that is empty or mixes `ipBlock` with selectors.
    #[error("{path}: a peer must set exactly one of ipBlock or podSelector/namespaceSelector")]
    InvalidPeer {
        /// Path of the peer.
        path: String,
    },
}
