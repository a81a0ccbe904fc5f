//! Network policy on the node: which policy objects are in force ([`engine`]), what the
//! kernel maps must hold for the local endpoints ([`regen`]), and how a kernel record's
//! rule reference becomes the policy names a flow carries ([`attribution`]).

pub mod attribution;
pub mod engine;
pub mod regen;

pub use attribution::{Attribution, RuleRefs};
pub use engine::{PolicyEngine, PolicyStatus};
pub use regen::{EndpointReport, Regenerated};
