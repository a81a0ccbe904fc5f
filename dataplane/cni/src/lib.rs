//! The pod-wiring side of the dataplane: the CNI plugin (`lumen-cni`), the local API it
//! speaks with the agent, and the IPAM allocator the agent runs for it.

pub mod protocol;
