//! Hubble's flow-filter and field-mask semantics over the [`lumen_api`] types.
//!
//! - [`FlowMatcher`] compiles the `whitelist` and `blacklist` of a `GetFlowsRequest`
//!   (lists of [`FlowFilter`](lumen_api::flow::FlowFilter)) once and tests flows with
//!   [`FlowMatcher::matches`]: a flow passes when the whitelist is empty or one of its
//!   filters matches, and no blacklist filter matches; the fields set in one filter are
//!   ANDed, the values of one field ORed. Invalid values are refused at compile time with a
//!   [`FilterError`] that names the `FlowFilter` field (a server answers `InvalidArgument`).
//! - [`FlowMask`] compiles the paths of `GetFlowsRequest.field_mask` against the `flow.Flow`
//!   descriptor and prunes flows with [`FlowMask::apply`].
//!
//! ```
//! use lumen_api::flow::{Flow, FlowFilter};
//! use lumen_filter::FlowMatcher;
//!
//! let whitelist = [FlowFilter { source_pod: vec!["shop/".into()], ..Default::default() }];
//! let matcher = FlowMatcher::compile(&whitelist, &[]).unwrap();
//! assert!(!matcher.matches(&Flow::default()));
//!
//! let bad = [FlowFilter { source_ip: vec!["10.0.0/8".into()], ..Default::default() }];
//! let err = FlowMatcher::compile(&bad, &[]).unwrap_err();
//! assert_eq!(err.field(), "source_ip");
//! assert_eq!(err.to_string(), r#"invalid source_ip "10.0.0/8": not an IP address or CIDR"#);
//! ```

#![warn(missing_docs)]

mod error;
mod event;
pub mod fieldmask;
mod ip;
mod k8s;
mod l4;
mod l7;
mod labels;
mod matcher;
mod patterns;

pub use error::FilterError;
pub use fieldmask::{FieldMaskError, FlowMask};
pub use matcher::FlowMatcher;
