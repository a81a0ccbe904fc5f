//! The crate's error types, one per boundary: [`ParseError`] for turning Kubernetes objects
//! (Service, EndpointSlice, CiliumLoadBalancerIPPool) into the model, [`MaglevError`] for
//! building Maglev lookup tables.
//!
//! LB-IPAM has no error type on purpose: conflicts and exhausted pools are per-service
//! conditions in its result, never a failure of the whole allocation.

use thiserror::Error;

/// An object that cannot be turned into the model. `Display` is always
/// `"<field path>: <what is wrong>"`, e.g. `spec.ports[1].protocol: unknown protocol "HTTP"`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
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
    /// A string value that is not one of the allowed words.
    #[error("{path}: unknown {what} \"{value}\"")]
    UnknownValue {
        /// Path of the value.
        path: String,
        /// What the value names (e.g. "protocol").
        what: &'static str,
        /// The value that was given.
        value: String,
    },
    /// A value of the right type whose content is invalid (an IP that does not parse, a port
    /// out of range, ...).
    #[error("{path}: {reason}")]
    InvalidValue {
        /// Path of the value.
        path: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A valid Kubernetes construct that Lumen does not implement.
    #[error("{path}: unsupported {what}")]
    Unsupported {
        /// Path of the field selecting the construct.
        path: String,
        /// What is unsupported (e.g. "service type ExternalName").
        what: String,
    },
}

/// A Maglev table that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MaglevError {
    /// The table size must be a prime so every skip value yields a full permutation.
    #[error("maglev table size {size} is not a prime")]
    NotPrime {
        /// The requested size.
        size: u32,
    },
    /// More backends than table slots: some backends could never be selected.
    #[error("{backends} backends do not fit in a maglev table of size {size}")]
    TooManyBackends {
        /// Number of backends with a non-zero weight.
        backends: usize,
        /// The table size.
        size: u32,
    },
}
