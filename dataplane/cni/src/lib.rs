//! The pod-wiring side of the dataplane: the CNI plugin (`lumen-cni`), the local API it
//! speaks with the agent, and the IPAM allocator the agent runs for it.
//!
//! - [`spec`]: CNI configuration, environment, result and error formats.
//! - [`client`]: the plugin's synchronous client for the agent's local API.
//! - [`protocol`]: that API's messages.
//! - [`wire`]: veth pair creation and configuration over rtnetlink.
//! - [`plugin`]: the ADD / DEL / CHECK / VERSION / STATUS / GC dispatch.
//! - [`ipam`]: the agent-side address allocator.

#![warn(missing_docs)]

pub mod client;
pub mod ipam;
pub mod plugin;
pub mod protocol;
pub mod spec;
pub mod wire;
